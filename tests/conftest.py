"""Shared fixtures: the committed real captures and their truth, cached analyses,
and a structural validator of the JSON report (docs/json.md, schema wsanalyze/1)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"


@lru_cache(maxsize=1)
def _expected() -> dict[str, Any]:
    return json.loads((CAPTURES / "expected.json").read_text(encoding="utf-8"))


def scenario_names() -> list[str]:
    """The scenarios of captures/expected.json (read at collection time)."""
    return sorted(_expected()["scenarios"])


def capture_paths(scenario: str) -> tuple[Path, Path]:
    """client.pcap and server.pcap of ``scenario``, as expected.json names them."""
    caps = _expected()["scenarios"][scenario]["captures"]
    return CAPTURES / caps["client"]["file"], CAPTURES / caps["server"]["file"]


@cache
def _analysis(scenario: str, clock_offset_ms: float | None):
    import wsanalyze

    client, server = capture_paths(scenario)
    return wsanalyze.analyze(client, server, clock_offset_ms=clock_offset_ms, strict=True)


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    """captures/expected.json (regenerated with the captures: never hard-code it)."""
    return _expected()


@pytest.fixture(scope="session")
def analysis_of() -> Callable[..., Any]:
    """``analysis_of(scenario, clock_offset_ms=None)``: the (cached) Analysis of a
    committed scenario. Treat the result as read-only."""

    def get(scenario: str, clock_offset_ms: float | None = None):
        return _analysis(scenario, clock_offset_ms)

    return get


# --- the JSON report's structure (docs/json.md) --------------------------------------------

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ENDPOINT = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}$")
DIRS = ("client_to_server", "server_to_client")
FRAME_KEYS = ("text", "binary", "continuation", "ping", "pong", "close")
MESSAGE_KEYS = ("text", "binary", "ping", "pong", "close")
SEVERITIES = ("info", "warning", "error")


class _Check:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, cond: bool, path: str, what: str) -> bool:
        if not cond:
            self.errors.append(f"{path}: {what}")
        return cond

    def keys(self, obj: Any, path: str, required: tuple[str, ...]) -> bool:
        if not self(isinstance(obj, dict), path, f"expected an object, found {type(obj)}"):
            return False
        missing = [k for k in required if k not in obj]
        return self(not missing, path, f"missing keys {missing}")

    def int(self, v: Any, path: str, minimum: int | None = 0) -> None:
        ok = isinstance(v, int) and not isinstance(v, bool)
        self(ok and (minimum is None or v >= minimum), path, f"expected int >= {minimum}: {v!r}")

    def num(self, v: Any, path: str, nullable: bool = False) -> None:
        if nullable and v is None:
            return
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        self(ok, path, f"expected a finite number: {v!r}")

    def str(self, v: Any, path: str, nullable: bool = False) -> None:
        self(isinstance(v, str) or (nullable and v is None), path, f"expected a string: {v!r}")

    def bool(self, v: Any, path: str) -> None:
        self(isinstance(v, bool), path, f"expected a bool: {v!r}")

    def iso(self, v: Any, path: str, nullable: bool = True) -> None:
        ok = (isinstance(v, str) and ISO.match(v) is not None) or (nullable and v is None)
        self(ok, path, f"expected ISO 8601 UTC with µs: {v!r}")

    def endpoint(self, v: Any, path: str) -> None:
        self(isinstance(v, str) and ENDPOINT.match(v) is not None, path, f"bad endpoint {v!r}")

    def enum(self, v: Any, path: str, values: tuple[str, ...]) -> None:
        self(v in values, path, f"{v!r} not in {values}")


def _headers(ck: _Check, hs: Any, path: str) -> None:
    if not ck(isinstance(hs, list), path, "headers must be a list"):
        return
    for i, h in enumerate(hs):
        ok = isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
        ck(ok, f"{path}[{i}]", f"a header is [name, value] strings: {h!r}")


def validate_report(doc: dict[str, Any]) -> list[str]:
    """Check ``doc`` against docs/json.md; returns the list of violations (empty when
    valid). Fields may be added within wsanalyze/1, so unknown keys are allowed;
    documented keys, types, enumerations and cross-references are checked."""
    from wsanalyze.catalogue import CATALOGUE

    ck = _Check()
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        ck(False, "$", f"not serialisable as strict JSON: {exc}")
    top = (
        "schema",
        "tool",
        "redacted",
        "captures",
        "connections",
        "pairs",
        "clock_offset_ms",
        "findings",
    )
    if not ck.keys(doc, "$", top):
        return ck.errors
    ck(doc["schema"] == "wsanalyze/1", "$.schema", f"{doc['schema']!r}")
    if ck.keys(doc["tool"], "$.tool", ("name", "version")):
        ck(doc["tool"]["name"] == "wsanalyze", "$.tool.name", "must be wsanalyze")
        ck.str(doc["tool"]["version"], "$.tool.version")
    ck.bool(doc["redacted"], "$.redacted")

    roles = []
    for i, c in enumerate(doc["captures"]):
        p = f"$.captures[{i}]"
        if ck.keys(c, p, ("role", "path", "packets", "first_ts", "last_ts")):
            ck.enum(c["role"], p + ".role", ("client", "server"))
            roles.append(c["role"])
            ck.str(c["path"], p + ".path")
            ck.int(c["packets"], p + ".packets")
            ck.iso(c["first_ts"], p + ".first_ts")
            ck.iso(c["last_ts"], p + ".last_ts")
    ck(len(roles) == len(set(roles)) and roles[:1] == ["client"], "$.captures", f"roles {roles}")

    conns: dict[str, dict[str, Any]] = {}
    ckeys = (
        "id",
        "capture",
        "src",
        "dst",
        "websocket",
        "request",
        "response",
        "subprotocol",
        "extensions",
        "frames",
        "messages",
        "messages_not_kept",
        "close",
        "tcp",
        "first_ts",
        "last_ts",
        "bytes",
    )
    for i, c in enumerate(doc["connections"]):
        p = f"$.connections[{i}]"
        if not ck.keys(c, p, ckeys):
            continue
        ck(isinstance(c["id"], str) and c["id"] not in conns, p + ".id", f"not unique: {c['id']}")
        conns[c["id"]] = c
        ck.enum(c["capture"], p + ".capture", tuple(roles))
        ck(
            isinstance(c["id"], str) and re.fullmatch(rf"{c['capture']}-\d+", c["id"]) is not None,
            p + ".id",
            f"id is role-TCP index: {c['id']!r}",
        )
        ck.endpoint(c["src"], p + ".src")
        ck.endpoint(c["dst"], p + ".dst")
        ck.bool(c["websocket"], p + ".websocket")
        req = c["request"]
        if req is not None and ck.keys(
            req, p + ".request", ("method", "target", "version", "headers")
        ):
            for k in ("method", "target", "version"):
                ck.str(req[k], f"{p}.request.{k}")
            _headers(ck, req["headers"], p + ".request.headers")
        resp = c["response"]
        if resp is not None and ck.keys(resp, p + ".response", ("status", "reason", "headers")):
            ck.int(resp["status"], p + ".response.status", 100)
            ck.str(resp["reason"], p + ".response.reason")
            _headers(ck, resp["headers"], p + ".response.headers")
        # websocket: a 101, or frames recognised without a captured handshake
        # (then request and response are both null).
        ck(
            not c["websocket"]
            or (resp is not None and resp["status"] == 101)
            or (resp is None and c["request"] is None),
            p,
            "websocket needs 101 or a handshake not captured",
        )
        ck.str(c["subprotocol"], p + ".subprotocol", nullable=True)
        ext = c["extensions"]
        ck(
            ext is None or (isinstance(ext, list) and all(isinstance(e, str) for e in ext)),
            p + ".extensions",
            f"list of names or null: {ext!r}",
        )
        for block, keys in (("frames", FRAME_KEYS), ("messages", MESSAGE_KEYS)):
            if ck.keys(c[block], f"{p}.{block}", DIRS):
                for d in DIRS:
                    if ck.keys(c[block][d], f"{p}.{block}.{d}", keys):
                        for k in keys:
                            ck.int(c[block][d][k], f"{p}.{block}.{d}.{k}")
        ck.int(c["messages_not_kept"], p + ".messages_not_kept", 0)
        if isinstance(c["messages_not_kept"], int) and isinstance(c["messages"], dict):
            counted = sum(
                n for v in c["messages"].values() if isinstance(v, dict) for n in v.values()
            )
            ck(c["messages_not_kept"] <= counted, p, "more messages not kept than counted")
        if ck.keys(c["close"], p + ".close", DIRS):
            for d in DIRS:
                cl = c["close"][d]
                q = f"{p}.close.{d}"
                if cl is None:
                    if isinstance(c["messages"], dict) and isinstance(c["messages"].get(d), dict):
                        ck(c["messages"][d].get("close") == 0, q, "null but close frames counted")
                    continue
                if ck.keys(cl, q, ("code", "reason")):
                    if cl["code"] is not None:
                        ck.int(cl["code"], q + ".code", 0)
                    ck.str(cl["reason"], q + ".reason", nullable=True)
                    if "ts" in cl:
                        ck.iso(cl["ts"], q + ".ts", nullable=False)
        tcp = c["tcp"]
        if ck.keys(
            tcp, p + ".tcp", ("first_fin_from", "rst_from", "gaps", "gap_bytes", "syn_seen")
        ):
            ff = tcp["first_fin_from"]
            ck(ff is None or ff in (c["src"], c["dst"]), p + ".tcp.first_fin_from", f"{ff!r}")
            ck(
                isinstance(tcp["rst_from"], list)
                and all(r in (c["src"], c["dst"]) for r in tcp["rst_from"]),
                p + ".tcp.rst_from",
                f"{tcp['rst_from']!r}",
            )
            ck.int(tcp["gaps"], p + ".tcp.gaps")
            ck.int(tcp["gap_bytes"], p + ".tcp.gap_bytes")
            ck.bool(tcp["syn_seen"], p + ".tcp.syn_seen")
        ck.iso(c["first_ts"], p + ".first_ts", nullable=False)
        ck.iso(c["last_ts"], p + ".last_ts", nullable=False)
        ck(str(c["first_ts"]) <= str(c["last_ts"]), p, "first_ts after last_ts")
        if ck.keys(c["bytes"], p + ".bytes", DIRS):
            for d in DIRS:
                if ck.keys(c["bytes"][d], f"{p}.bytes.{d}", ("decoded", "gap", "undecodable")):
                    for k in ("decoded", "gap", "undecodable"):
                        ck.int(c["bytes"][d][k], f"{p}.bytes.{d}.{k}")

    seen_pair_conns: set[str] = set()
    pair_ids: set[str] = set()
    pkeys = (
        "id",
        "client",
        "server",
        "confidence",
        "evidence",
        "header_changes",
        "messages_matched",
        "proxy_delay_ms",
    )
    for i, pr in enumerate(doc["pairs"]):
        p = f"$.pairs[{i}]"
        if not ck.keys(pr, p, pkeys):
            continue
        ck(
            isinstance(pr["id"], str) and re.fullmatch(r"pair-\d+", pr["id"]) is not None,
            p + ".id",
            f"pair ids are pair-N: {pr['id']!r}",
        )
        ck(pr["id"] not in pair_ids, p + ".id", f"not unique: {pr['id']!r}")
        pair_ids.add(pr["id"])
        for side in ("client", "server"):
            cid = pr[side]
            ok = cid in conns and conns[cid]["capture"] == side
            ck(ok, f"{p}.{side}", f"{cid!r} is not a {side}-capture connection id")
            ck(cid not in seen_pair_conns, f"{p}.{side}", f"{cid!r} in two pairs")
            seen_pair_conns.add(cid)
        ck.num(pr["confidence"], p + ".confidence")
        ck(
            isinstance(pr["confidence"], int | float) and 0 <= pr["confidence"] <= 1,
            p + ".confidence",
            "in 0..1",
        )
        ck(
            isinstance(pr["evidence"], list) and all(isinstance(e, str) for e in pr["evidence"]),
            p + ".evidence",
            "list of strings",
        )
        for j, h in enumerate(pr["header_changes"]):
            q = f"{p}.header_changes[{j}]"
            if not ck.keys(h, q, ("message", "change", "name", "client_value", "server_value")):
                continue
            ck.enum(h["message"], q + ".message", ("request", "response"))
            ck.enum(h["change"], q + ".change", ("added", "removed", "modified"))
            ck.str(h["name"], q + ".name")
            ck.str(h["client_value"], q + ".client_value", nullable=True)
            ck.str(h["server_value"], q + ".server_value", nullable=True)
            # docs/json.md: in the direction of travel.
            cv, sv = h["client_value"], h["server_value"]
            if h["change"] == "modified":
                ck(cv is not None and sv is not None and cv != sv, q, "modified: both, differing")
            else:
                only_server = (h["message"] == "request") == (h["change"] == "added")
                want = (
                    (cv is None and sv is not None)
                    if only_server
                    else (cv is not None and sv is None)
                )
                ck(want, q, f"{h['message']} {h['change']}: wrong side has the value")
        ck.int(pr["messages_matched"], p + ".messages_matched")
        total = 0
        if ck.keys(pr["proxy_delay_ms"], p + ".proxy_delay_ms", DIRS):
            for d in DIRS:
                s = pr["proxy_delay_ms"][d]
                q = f"{p}.proxy_delay_ms.{d}"
                if not ck.keys(s, q, ("count", "p50", "p95", "max")):
                    continue
                ck.int(s["count"], q + ".count")
                for k in ("p50", "p95", "max"):
                    if s["count"] == 0:
                        ck(s[k] is None, f"{q}.{k}", "null when count is 0")
                    else:
                        ck.num(s[k], f"{q}.{k}")
                if isinstance(s["count"], int):
                    total += s["count"]
            ck(total == pr["messages_matched"], p, "delay counts must sum to messages_matched")

    co = doc["clock_offset_ms"]
    if co is not None and ck.keys(co, "$.clock_offset_ms", ("estimate", "low", "high", "imposed")):
        ck.num(co["estimate"], "$.clock_offset_ms.estimate")
        ck.num(co["low"], "$.clock_offset_ms.low", nullable=True)
        ck.num(co["high"], "$.clock_offset_ms.high", nullable=True)
        ck.bool(co["imposed"], "$.clock_offset_ms.imposed")
    ck(co is None or "server" in roles, "$.clock_offset_ms", "an offset needs two captures")

    last = 3
    for i, f in enumerate(doc["findings"]):
        p = f"$.findings[{i}]"
        if not ck.keys(f, p, ("code", "severity", "detail", "connections", "packets", "reference")):
            continue
        entry = CATALOGUE.get(f["code"])
        if ck(entry is not None, p + ".code", f"{f['code']!r} not in the catalogue"):
            ck(f["severity"] == entry.severity.label, p + ".severity", "catalogue severity")
            ck(f["reference"] == entry.reference, p + ".reference", "catalogue reference")
        ck.enum(f["severity"], p + ".severity", SEVERITIES)
        ck.str(f["detail"], p + ".detail")
        ck(
            isinstance(f["connections"], list) and all(c in conns for c in f["connections"]),
            p + ".connections",
            f"unknown connection ids {f['connections']!r}",
        )
        ck(
            isinstance(f["packets"], list)
            and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in f["packets"]
            ),
            p + ".packets",
            "1-based packet numbers",
        )
        if f["severity"] in SEVERITIES:
            rank = SEVERITIES.index(f["severity"])
            ck(rank <= last, p, "findings must be sorted worst first")
            last = rank
    return ck.errors


@pytest.fixture(scope="session")
def check_report() -> Callable[[dict[str, Any]], None]:
    """``check_report(doc)`` fails the test with every docs/json.md violation."""

    def check(doc: dict[str, Any]) -> None:
        errors = validate_report(doc)
        assert not errors, "JSON report violates docs/json.md:\n" + "\n".join(errors)

    return check
