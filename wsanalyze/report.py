"""Reports: JSON (schema ``wsanalyze/1``, see docs/json.md), Markdown, HTML and the
terminal summary.

Reports render only: they read an :class:`~wsanalyze.api.Analysis` and never open a
capture. Credentials are redacted by default (:mod:`wsanalyze.redact`); HTML is
rendered by jinja2 with autoescaping, so every string from a capture is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import markupsafe

from . import __version__
from .catalogue import CATALOGUE
from .closing import describe_pair, story_of
from .model import Direction, Opcode, Severity
from .redact import Redactor
from .timing import handshake_timing

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
SCHEMA = "wsanalyze/1"
_FRAME_KEYS = ("text", "binary", "continuation", "ping", "pong", "close")
_MESSAGE_KEYS = ("text", "binary", "ping", "pong", "close")
TRANSCRIPT_ENTRIES = 200
"""Sub-protocol transcript entries per connection in the JSON report (the first ones)."""


def iso(ts_ns: int | None) -> str | None:
    """ISO 8601 UTC with microseconds (``2026-11-21T12:00:00.123456Z``)."""
    if ts_ns is None:
        return None
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % 1_000_000_000:09d}"[:7] + "Z"


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode("latin-1")


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linear interpolation between
    closest ranks (numpy's default method)."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    v = sorted(values)
    return {
        "count": len(v),
        "p50": round(percentile(v, 50), 3),
        "p95": round(percentile(v, 95), 3),
        "max": round(v[-1], 3),
    }


def _headers(r: Redactor, headers) -> list[list[str | None]]:
    return [[_s(n), r.header(_s(n) or "", _s(v))] for n, v in headers]


def _h2_json(h2) -> dict[str, Any] | None:
    """An HTTP/2 connection's SETTINGS, frame counts and GOAWAYs (RFC 9113 §6), by
    sender ("client": the side that opened the TCP connection, the proxy on a
    server leg)."""
    if h2 is None:
        return None
    from .http2 import FRAME_TYPES, SETTINGS_NAMES, error_name

    who = ("client", "server")
    return {
        "mode": h2.mode,
        "settings": {
            who[d]: {SETTINGS_NAMES.get(k, f"0x{k:x}"): v for k, v in h2.settings[d]}
            for d in (0, 1)
        },
        "enable_connect_protocol": dict(zip(who, h2.enable_connect_protocol, strict=True)),
        "frames": {
            Direction(d).label: {FRAME_TYPES.get(t, f"0x{t:x}"): n for t, n in h2.frame_counts[d]}
            for d in (0, 1)
        },
        "goaway": [
            {"from": who[d], "last_stream_id": last, "error": error_name(code), "packet": pk}
            for d, last, code, pk in h2.goaways
        ],
        "flow_control_stalls": h2.stalls,
    }


def _connection_json(a, r: Redactor) -> dict[str, Any]:
    t = a.tcp
    hs = a.handshake
    req, resp = a.exchange
    frames = {d.label: dict.fromkeys(_FRAME_KEYS, 0) for d in Direction}
    for (d, op), n in a.frame_counts.items():
        name = Opcode.name_of(op)
        if name in frames[Direction(d).label]:
            frames[Direction(d).label][name] += n
    messages = {d.label: dict.fromkeys(_MESSAGE_KEYS, 0) for d in Direction}
    for (d, op), n in a.message_counts().items():
        name = Opcode.name_of(op)
        if name in messages[Direction(d).label]:
            messages[Direction(d).label][name] += n
    close: dict[str, Any] = {d.label: None for d in Direction}
    close_op = int(Opcode.CLOSE)
    for m in [m for m in a.messages if m.opcode == close_op]:
        if close[m.direction.label] is None:
            close[m.direction.label] = {
                "code": m.close_code,
                "reason": r.text(m.close_reason.decode("utf-8", "replace"))
                if m.close_reason is not None
                else None,
                "ts": iso(m.ts_ns),
            }
    ends = (t.client, t.server)
    fins = [(ts, d) for d, ts in enumerate(t.fin_ts_ns) if ts is not None]
    out = {
        "id": a.id,
        "capture": a.role,
        "protocol": a.protocol,
        "stream_id": a.stream_id,
        "parent": a.parent,
        "streams": [st.id for st in a.streams],
        "http2": _h2_json(a.h2),
        "src": str(t.client),
        "dst": str(t.server),
        "websocket": a.websocket,
        "request": None
        if req is None
        else {
            "method": _s(req.method),
            "target": r.target(_s(req.target)),
            "version": _s(req.version),
            "headers": _headers(r, req.headers),
        },
        "response": None
        if resp is None
        else {
            "status": resp.status,
            "reason": _s(resp.reason),
            "headers": _headers(r, resp.headers),
        },
        "subprotocol": hs.subprotocol if hs else None,
        "extensions": [n for n, _ in hs.extensions] if hs and hs.extensions else None,
        "frames": frames,
        "messages": messages,
        "messages_not_kept": sum((a.messages_not_kept or {}).values()),
        "close": close,
        "close_story": story_of(a).as_json(ts=iso, text=lambda t: r.text(t) or ""),
        "tcp": {
            "first_fin_from": str(ends[min(fins)[1]]) if fins else None,
            "rst_from": [str(ends[d]) for d, ts in enumerate(t.rst_ts_ns) if ts is not None],
            "gaps": t.gaps[0] + t.gaps[1],
            "gap_bytes": t.gap_bytes[0] + t.gap_bytes[1],
            "syn_seen": t.syn_seen,
        },
        "first_ts": iso(t.first_ts_ns),
        "last_ts": iso(t.last_ts_ns),
        "bytes": {
            d.label: {
                "decoded": a.bytes[d].decoded,
                "gap": a.bytes[d].gap,
                "undecodable": a.bytes[d].undecodable,
            }
            for d in Direction
        },
    }
    if a.transcript:
        out["transcript"] = [
            {
                "ts": iso(ts_ns),
                "direction": Direction(d).label,
                "channel": channel,
                "kind": kind,
                "text": r.text(text),
            }
            for ts_ns, d, channel, kind, text in a.transcript[:TRANSCRIPT_ENTRIES]
        ]
        out["transcript_omitted"] = len(a.transcript) - len(out["transcript"])
    return out


def _filters_text(analysis) -> str | None:
    f = getattr(analysis, "filters", None)
    return f.describe() if f is not None else None


def to_json(analysis, *, redact: bool = True) -> dict[str, Any]:
    """The JSON report as a dict (schema ``wsanalyze/1``, documented in docs/json.md)."""
    r = Redactor(redact)
    corr = analysis.correlation
    theta = corr.clock_offset if corr else None
    theta_ns = theta.estimate_ns if theta else 0
    offset = theta or 0  # delays use θ at each message's time when drift was fitted
    pairs = []
    for p in corr.pairs if corr else []:
        delays: list[list[float]] = [[], []]
        for m in p.matches:
            delays[m.direction].append(m.delay_ns(offset) / 1e6)
        pairs.append(
            {
                "id": p.id,
                "client": p.client.id,
                "server": p.server.id,
                "confidence": p.confidence,
                "evidence": list(p.evidence),
                "header_changes": [
                    {
                        "message": h.message,
                        "change": h.change,
                        "name": h.name,
                        "client_value": r.header(h.name, h.client_value),
                        "server_value": r.header(h.name, h.server_value),
                    }
                    for h in p.header_changes
                ],
                "messages_matched": len(p.matches),
                "handshake_timing_ms": handshake_timing(p, theta_ns).as_ms(),
                "close": describe_pair(
                    story_of(p.client),
                    story_of(p.server),
                    theta_ns,
                    text=lambda t: r.text(t) or "",
                ),
                "proxy_delay_ms": {d.label: _stats(delays[d]) for d in Direction},
            }
        )
    return {
        "schema": SCHEMA,
        "tool": {"name": "wsanalyze", "version": __version__},
        "redacted": redact,
        # The filters that selected these connections (command-line form), or null.
        "filters": _filters_text(analysis),
        "captures": [
            {
                "role": c.role,
                "path": c.path,
                "packets": c.packets,
                "first_ts": iso(c.first_ts_ns),
                "last_ts": iso(c.last_ts_ns),
            }
            for c in analysis.captures
        ],
        "connections": [_connection_json(a, r) for c in analysis.captures for a in c.connections],
        "pairs": pairs,
        "clock_offset_ms": None
        if theta is None
        else {
            "estimate": round(theta.estimate_ns / 1e6, 3),
            "low": None if theta.low_ns is None else round(theta.low_ns / 1e6, 3),
            "high": None if theta.high_ns is None else round(theta.high_ns / 1e6, 3),
            "imposed": theta.imposed,
        },
        "findings": [
            {
                "code": f.code,
                "severity": Severity(f.severity).label,
                "detail": r.text(f.detail),
                "connections": list(f.connections),
                "packets": list(f.packets),
                "capture": f.capture,
                "reference": CATALOGUE[f.code].reference,
            }
            for f in sorted(analysis.finding_list, key=lambda f: (-f.severity, f.ts_ns or 0))
        ],
    }


# --- sections shared by Markdown, HTML and the terminal -------------------------


def _evidence(findings: list, limit: int = 4) -> str:
    """Where to look, per finding: its first connection and that capture's packets."""
    parts: list[str] = []
    for f in findings:
        where = f.connections[0] if f.connections else f"{f.capture or 'the'} capture"
        pk = ", ".join(map(str, f.packets[:6])) + (" …" if len(f.packets) > 6 else "")
        part = f"{where} packets {pk}" if pk else where
        if part not in parts:
            parts.append(part)
    if len(parts) > limit:
        parts[limit:] = [f"and {len(parts) - limit} more"]
    return "; ".join(parts)


def _verdict(
    analysis, pair_of: dict[str, str] | None = None, theta_ns: int = 0
) -> list[dict[str, Any]]:
    """Findings grouped by code, worst first: what the report opens with.

    Each group also gives ``first_ts``/``last_ts``, the first and last occurrence
    (ISO UTC, on the client capture's clock: server-capture times minus the clock
    offset ``theta_ns``), and ``targets``: what it concerns, in the order found, as
    ``{"kind": "pair" | "connection", "id": ...}`` (a connection of a pair in
    ``pair_of`` is named by its pair)."""
    pair_of = pair_of or {}
    groups: dict[str, list] = {}
    for f in analysis.finding_list:
        groups.setdefault(f.code, []).append(f)
    out = []

    # Worst first; at equal severity the diagnosis of the proxy (both legs) leads.
    def rank(kv: tuple[str, list]) -> tuple[int, bool, str]:
        return (-kv[1][0].severity, not kv[0].startswith("proxy_"), kv[0])

    for code, fs in sorted(groups.items(), key=rank):
        entry = CATALOGUE[code]
        times = [
            f.ts_ns - (theta_ns if f.capture == "server" else 0) for f in fs if f.ts_ns is not None
        ]
        targets: dict[tuple[str, str], None] = {}
        for f in fs:
            for c in f.connections:
                pid = pair_of.get(c)
                targets.setdefault(("pair", pid) if pid else ("connection", c), None)
        out.append(
            {
                "code": code,
                "severity": Severity(fs[0].severity).label,
                "count": len(fs),
                "detail": fs[0].detail,
                "connections": sorted({c for f in fs for c in f.connections}),
                "evidence": _evidence(fs),
                "reference": entry.reference,
                "check": entry.check,
                "first_ts": iso(min(times)) if times else None,
                "last_ts": iso(max(times)) if times else None,
                "targets": [{"kind": k, "id": i} for k, i in targets],
            }
        )
    return out


_SEVERITY_RANK = {s.label: int(s) for s in Severity}


def _delay_percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)
    return {
        "count": len(v),
        "p50": round(percentile(v, 50), 3),
        "p95": round(percentile(v, 95), 3),
        "p99": round(percentile(v, 99), 3),
        "max": round(v[-1], 3),
    }


def _is_upgrade(c: dict[str, Any]) -> bool:
    """A WebSocket handshake attempt: an HTTP/1.1 Upgrade (RFC 6455 §4.1) or an
    extended CONNECT with ``:protocol`` websocket (RFC 8441 §4)."""
    req = c["request"]
    return req is not None and any(
        (n or "").lower() in ("upgrade", ":protocol") and "websocket" in (v or "").lower()
        for n, v in req["headers"]
    )


def _switched(c: dict[str, Any]) -> bool:
    """The handshake response opened the WebSocket: a 101, or a 2xx over HTTP/2."""
    resp, req = c["response"], c["request"]
    if resp is None:
        return False
    if req is not None and req["version"] == "HTTP/2":
        return 200 <= resp["status"] < 300
    return resp["status"] == 101


def _transport_only(c: dict[str, Any]) -> bool:
    """An HTTP/2 connection whose WebSocket streams are listed (and paired) on their own."""
    return bool(c.get("streams"))


def _ended(c: dict[str, Any]) -> str:
    """How one connection ended, in a few words (its close story's first event)."""
    story = c["close_story"]
    first = story["events"][0] if story["events"] else None
    if first is None:
        return "no close seen (still open at end of capture)"
    how = "a close frame" if first["kind"] == "close" else first["kind"].upper()
    return f"closed by {story['closed_by']} with {how}" + (", clean" if story["clean"] else "")


def _top(counter: Counter, n: int) -> list[list[Any]]:
    """The ``n`` most common entries as ``[value, count]``, the rest as one ``other``."""
    top = [[k, v] for k, v in counter.most_common(n)]
    rest = sum(counter.values()) - sum(v for _, v in top)
    if rest:
        top.append(["other", rest])
    return top


def _summary(analysis, doc: dict[str, Any], theta_ns: int) -> dict[str, Any]:
    corr = analysis.correlation
    offset = corr.clock_offset if corr is not None and corr.clock_offset else theta_ns
    """The numbers a large capture is read by: connections, pairs, WebSockets,
    refused upgrades, proxy delay percentiles per direction, how connections ended
    (close codes, close story kinds) and findings per severity."""
    conns = doc["connections"]
    roles = [c["role"] for c in doc["captures"]]
    by_role = Counter(c["capture"] for c in conns)
    ws = Counter(c["capture"] for c in conns if c["websocket"])
    upgrades = Counter(c["capture"] for c in conns if _is_upgrade(c))
    refused = Counter(
        c["capture"]
        for c in conns
        if _is_upgrade(c) and c["response"] is not None and not _switched(c)
    )
    unanswered = Counter(c["capture"] for c in conns if _is_upgrade(c) and c["response"] is None)
    delays: list[list[float]] = [[], []]
    for p in analysis.correlation.pairs if analysis.correlation else []:
        for m in p.matches:
            delays[m.direction].append(m.delay_ns(offset) / 1e6)
    codes: Counter = Counter()
    ended: Counter = Counter()
    for c in conns:
        ended[(c["capture"], _ended(c))] += 1
        if not c["websocket"]:
            continue
        frames = [e for e in c["close_story"]["events"] if e["kind"] == "close"]
        if not frames:
            codes["no close frame"] += 1
        else:
            codes[str(frames[0]["code"]) if frames[0]["code"] is not None else "no code"] += 1
    paired = len(doc["pairs"])
    listed = [c for c in conns if not _transport_only(c)]
    return {
        "roles": roles,
        "connections": {role: by_role.get(role, 0) for role in roles},
        "connections_total": len(conns),
        "websocket": {role: ws.get(role, 0) for role in roles},
        "upgrades": {role: upgrades.get(role, 0) for role in roles},
        "refused": {role: refused.get(role, 0) for role in roles},
        "unanswered": {role: unanswered.get(role, 0) for role in roles},
        "pairs": paired,
        "unpaired": len(listed) - 2 * paired if analysis.correlation is not None else None,
        "delay_ms": {d.label: _delay_percentiles(delays[d]) for d in Direction},
        "close_codes": _top(codes, 8),
        "ended": [[role, how, n] for (role, how), n in ended.most_common(12)],
        "ended_other": sum(ended.values()) - sum(n for _, n in ended.most_common(12)),
        "findings": {
            s.label: sum(1 for f in analysis.finding_list if f.severity == s)
            for s in sorted(Severity, reverse=True)
        },
    }


def sections(analysis, *, redact: bool = True, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's content as plain values: verdict, captures, pairs (with header
    changes and delay statistics), connections and the finding legend. Markdown,
    HTML and the terminal summary all render this one structure.

    For large captures it also gives ``summary`` (see :func:`_summary`), the pairs
    worst first (``pairs_ranked``: pairs with findings first, by severity, then by
    the largest p95 proxy delay), the connections worst first
    (``connections_ranked``) and ``conn_info`` per connection id (its pair, worst
    finding severity, finding count and codes). Each pair gains ``severity`` (its
    worst finding's, None without findings), ``finding_count``, ``finding_codes``
    and ``delay_p95_ms`` (the larger of both directions' p95, None without matched
    messages).

    ``doc``, when given, is ``to_json(analysis, redact=redact)`` already built (the
    command line builds it once for ``--json`` and the summary); its pairs gain the
    keys above."""
    if doc is None:
        doc = to_json(analysis, redact=redact)
    r = Redactor(redact)
    corr = analysis.correlation
    theta_ns = corr.clock_offset.estimate_ns if corr and corr.clock_offset else 0
    pair_of: dict[str, str] = {}
    for p in doc["pairs"]:
        pair_of[p["client"]] = p["id"]
        pair_of[p["server"]] = p["id"]
    verdict = _verdict(analysis, pair_of, theta_ns)
    for v in verdict:
        v["detail"] = r.text(v["detail"])
    conns = {c["id"]: c for c in doc["connections"]}

    # Findings per connection and per pair (a finding naming both legs counts once).
    conn_worst: dict[str, int] = {}
    conn_codes: dict[str, dict[str, None]] = {}
    conn_count: Counter = Counter()
    pair_worst: dict[str, int] = {}
    pair_codes: dict[str, dict[str, None]] = {}
    pair_count: Counter = Counter()
    for f in analysis.finding_list:
        sev = int(f.severity)
        for c in f.connections:
            conn_worst[c] = max(conn_worst.get(c, sev), sev)
            conn_codes.setdefault(c, {})[f.code] = None
            conn_count[c] += 1
        for pid in {pair_of[c] for c in f.connections if c in pair_of}:
            pair_worst[pid] = max(pair_worst.get(pid, sev), sev)
            pair_codes.setdefault(pid, {})[f.code] = None
            pair_count[pid] += 1
    for p in doc["pairs"]:
        p["client_conn"] = conns[p["client"]]
        p["server_conn"] = conns[p["server"]]
        worst = pair_worst.get(p["id"])
        p["severity"] = Severity(worst).label if worst is not None else None
        p["finding_count"] = pair_count.get(p["id"], 0)
        p["finding_codes"] = list(pair_codes.get(p["id"], {}))
        p95 = [s["p95"] for s in p["proxy_delay_ms"].values() if s["p95"] is not None]
        p["delay_p95_ms"] = max(p95) if p95 else None

    def pair_rank(ip: tuple[int, dict[str, Any]]) -> tuple[int, bool, float, int]:
        i, p = ip
        d = p["delay_p95_ms"]
        return (-pair_worst.get(p["id"], -1), d is None, -(d or 0.0), i)

    def conn_rank(ic: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        i, c = ic
        return (-conn_worst.get(c["id"], -1), i)

    conn_info = {
        c["id"]: {
            "pair": pair_of.get(c["id"]),
            "severity": Severity(conn_worst[c["id"]]).label if c["id"] in conn_worst else None,
            "finding_count": conn_count.get(c["id"], 0),
            "finding_codes": list(conn_codes.get(c["id"], {})),
        }
        for c in doc["connections"]
    }
    used = {v["code"] for v in verdict}
    legend = [
        {
            "code": e.code,
            "severity": e.severity.label,
            "reference": e.reference,
            "explanation": e.explanation,
            "check": e.check,
        }
        for e in CATALOGUE.values()
        if e.code in used
    ]
    return {
        "transcripts": _transcripts(analysis, doc, r),
        "doc": doc,
        "verdict": verdict,
        "pairs": doc["pairs"],
        "pairs_ranked": [p for _, p in sorted(enumerate(doc["pairs"]), key=pair_rank)],
        "connections_ranked": [c for _, c in sorted(enumerate(doc["connections"]), key=conn_rank)],
        "conn_info": conn_info,
        "summary": _summary(analysis, doc, theta_ns),
        "unpaired": [
            c for c in doc["connections"] if c["id"] not in pair_of and not _transport_only(c)
        ],
        "legend": legend,
        "two_captures": analysis.server is not None,
        # Pairs come from two captures, or from one holding both legs.
        "show_pairs": analysis.correlation is not None,
    }


def _target(c: dict[str, Any]) -> str:
    req = c["request"]
    if req:
        return f"{req['method']} {req['target']}"
    if c.get("streams"):
        return f"HTTP/2, WebSocket stream(s): {', '.join(c['streams'])}"
    if c.get("protocol") != "h2":
        return "(no request)"
    ecp = (c.get("http2") or {}).get("enable_connect_protocol", {}).get("server")
    return "HTTP/2, no WebSocket stream" + (
        ""
        if ecp == 1
        else f" (server SETTINGS_ENABLE_CONNECT_PROTOCOL: {ecp if ecp is not None else 'not sent'})"
    )


def _status(c: dict[str, Any]) -> str:
    resp = c["response"]
    if resp:
        return f"{resp['status']} {resp['reason']}".rstrip()
    return "" if c.get("protocol") == "h2" and c.get("stream_id") is None else "no response"


def _close(c: dict[str, Any]) -> str:
    """The close story of one connection in one line (see :mod:`wsanalyze.closing`)."""
    return str(c["close_story"]["summary"])


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else repr(value)


def _delay(p: dict[str, Any], d: str) -> str:
    s = p["proxy_delay_ms"][d]
    if not s["count"]:
        return "-"
    return f"n={s['count']} p50={s['p50']:.3f} p95={s['p95']:.3f} max={s['max']:.3f}"


# C0/C1 control characters (but tab) from a capture would drive the terminal
# (ANSI escapes in a close reason, a header value): shown as \xNN instead.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape_control(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


# --- sub-protocol transcripts ("kubectl exec" style) -------------------------------

_STREAM_KINDS = frozenset({"stdin", "stdout", "stderr"})
# Terminal escape sequences (CSI, OSC) in a tty session's output: dropped from the
# transcript (other control characters are shown as \xNN by each renderer).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_LINE_WIDTH = 300


def _transcript_entries(a, r: Redactor) -> tuple[list[dict[str, Any]], int]:
    """The first :data:`TRANSCRIPT_ENTRIES` transcript entries of connection ``a``
    (redacted), plus its last Kubernetes status entries when they come later (the
    exit status closes a ``kubectl exec`` transcript); and how many were left out."""
    rest = a.transcript[TRANSCRIPT_ENTRIES:]
    late = [e for e in rest if e[2] is not None and e[3] == "status"]
    shown = a.transcript[:TRANSCRIPT_ENTRIES] + late[-5:]
    return [
        {
            "ts": iso(ts_ns),
            "direction": Direction(d).label,
            "channel": channel,
            "kind": kind,
            "text": r.text(text),
        }
        for ts_ns, d, channel, kind, text in shown
    ], len(a.transcript) - len(shown)


def _transcripts(analysis, doc: dict[str, Any], r: Redactor) -> list[dict[str, Any]]:
    """The connections that have a sub-protocol transcript, each with its entries;
    a server leg whose transcript equals its client leg's is folded into the client
    leg (``same_as``)."""
    conns = {a.id: a for c in analysis.captures for a in c.connections}
    folded: dict[str, str] = {}
    for p in doc["pairs"]:
        cc, sc = conns.get(p["client"]), conns.get(p["server"])
        if cc is None or sc is None or not cc.transcript:
            continue
        if [e[3:] for e in cc.transcript] == [e[3:] for e in sc.transcript]:
            folded[sc.id] = cc.id
    same = {v: k for k, v in folded.items()}
    out = []
    for a in conns.values():
        if not a.transcript or a.id in folded:
            continue
        entries, omitted = _transcript_entries(a, r)
        hs = a.handshake
        out.append(
            {
                "id": a.id,
                "subprotocol": hs.subprotocol if hs else None,
                "entries": entries,
                "omitted": omitted,
                "same_as": same.get(a.id),
            }
        )
    return out


def _split_lines(text: str) -> list[str]:
    text = _ANSI.sub("", text)
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the text ended with a newline
    return [ln if len(ln) <= _LINE_WIDTH else ln[:_LINE_WIDTH] + "…" for ln in lines]


def transcript_lines(t: dict[str, Any], max_lines: int = 200) -> list[str]:
    """A transcript as lines, ``kubectl exec`` style: stdin prefixed ``$ ``, stdout
    and stderr as they are (consecutive messages of one stream joined, so a tty's
    byte-by-byte echo reads as lines), ``[resize 80x24]``, ``[close stdin]``, the
    exit status ``[status] exit code 2: ...``; other sub-protocols ``> [kind] text``
    (client to server) and ``< [kind] text``. At most ``max_lines`` lines; the status
    lines are always kept at the end. Control characters are left to the renderer."""
    # Channel kinds (stdin, stdout, ...) belong to a channelled sub-protocol
    # (Kubernetes); other sub-protocols' kinds are message types, one line each.
    groups: list[tuple[str, bool, str | None, list[str]]] = []
    for e in t["entries"]:
        key = (e["direction"], e["channel"] is not None, e["kind"])
        if groups and key[1] and key[2] in _STREAM_KINDS and groups[-1][:3] == key:
            groups[-1][3].append(e["text"] or "")
        else:
            groups.append((*key, [e["text"] or ""]))
    body: list[str] = []
    status: list[str] = []
    for direction, channelled, kind, texts in groups:
        lines = _split_lines("".join(texts))
        if channelled and kind == "stdin":
            body.extend("$ " + ln for ln in lines)
        elif channelled and kind in ("stdout", "stderr"):
            body.extend(lines)
        elif channelled and kind == "status":
            status.extend("[status] " + ln for ln in lines)
        elif channelled and kind in ("resize", "close_stream"):
            body.append(f"[{' '.join(lines)}]")
        else:
            arrow = ">" if direction == "client_to_server" else "<"
            body.append(f"{arrow} [{kind or '?'}] {lines[0] if lines else ''}")
            body.extend("    " + ln for ln in lines[1:])
    status = status[:5]
    room = max(1, max_lines - len(status))
    more = len(body) - room
    if more > 0:
        body = body[: room - 1] + [f"… {more + 1} more lines"]
    if t["omitted"]:
        body.append(f"… {t['omitted']} more messages not shown (see the transcript table)")
    return body + status


def _transcript_title(t: dict[str, Any]) -> str:
    title = f"{t['id']} ({t['subprotocol'] or 'sub-protocol'})"
    if t["same_as"]:
        title += f"; server leg {t['same_as']}: same transcript"
    return title


def _summary_in_detail(sec: dict[str, Any], out: Callable[[str], None], max_rows: int) -> None:
    """Connections and pairs one by one: for a few connections."""
    doc = sec["doc"]
    out(f"Connections carrying HTTP/WebSocket: {len(doc['connections'])}")
    for c in doc["connections"][:max_rows]:
        ws = "websocket" if c["websocket"] else c["protocol"]
        status = f"  -> {_status(c)}" if _status(c) else ""
        out(f"  {c['id']:<10} {c['src']} -> {c['dst']}  {_target(c)}{status}  [{ws}]")
    if len(doc["connections"]) > max_rows:
        out(f"  ... {len(doc['connections']) - max_rows} more (see --json or the tables)")
    if sec["show_pairs"]:
        out("")
        theta = doc["clock_offset_ms"] if sec["two_captures"] else None
        if not sec["two_captures"]:
            out(
                "Both legs are in this one capture (paired by F5 trailer ids or a Sec-WebSocket-Key seen on two connections)."
            )
        if theta:
            out(
                f"Clock offset (server capture - client capture): {theta['estimate']:.3f} ms "
                f"(bounds {theta['low']} .. {theta['high']} ms"
                + (", imposed" if theta["imposed"] else "")
                + ")"
            )
        out(f"Pairs (client side <-> server side): {len(sec['pairs'])}")
        for p in sec["pairs"][:max_rows]:
            cc, sc = p["client_conn"], p["server_conn"]
            out(
                f"  {p['id']}: {cc['id']} {cc['src']} -> {cc['dst']}  <=>  "
                f"{sc['id']} {sc['src']} -> {sc['dst']}  confidence={p['confidence']:.2f} "
                f"({', '.join(p['evidence'])})"
            )
            out(f"    {_target(cc)}: client leg {_status(cc)}, server leg {_status(sc)}")
            for h in p["header_changes"]:
                out(
                    f"    {h['message']} header {h['change']}: {h['name']}  client leg: "
                    f"{_shown(h['client_value'])}  server leg: {_shown(h['server_value'])}"
                )
            out(
                f"    proxy delay ms c->s: {_delay(p, 'client_to_server')}; "
                f"s->c: {_delay(p, 'server_to_client')}"
            )
            out(f"    close: {p['close']}")
        if len(sec["pairs"]) > max_rows:
            out(f"  ... {len(sec['pairs']) - max_rows} more pairs")
        unpaired = [c["id"] for c in sec["unpaired"]]
        if unpaired:
            out(
                f"  unpaired: {', '.join(unpaired[:max_rows])}"
                + (" ..." if len(unpaired) > max_rows else "")
            )


def _summary_at_scale(sec: dict[str, Any], out: Callable[[str], None], max_rows: int) -> None:
    """Connections and pairs as distributions, with the worst pairs: for thousands."""
    doc, summ = sec["doc"], sec["summary"]
    out(f"Connections carrying HTTP/WebSocket: {summ['connections_total']}")
    for role in summ["roles"]:
        out(
            f"  {role:<6} {summ['connections'][role]} connections: "
            f"{summ['websocket'][role]} WebSocket, {summ['upgrades'][role]} upgrades requested, "
            f"{summ['refused'][role]} refused, {summ['unanswered'][role]} unanswered"
        )
    if not sec["show_pairs"]:
        return
    out("")
    theta = doc["clock_offset_ms"] if sec["two_captures"] else None
    if theta:
        out(
            f"Clock offset (server capture - client capture): {theta['estimate']:.3f} ms "
            f"(bounds {theta['low']} .. {theta['high']} ms)"
        )
    out(f"Pairs (client side <-> server side): {summ['pairs']} ({summ['unpaired']} unpaired)")
    for d, label in (("client_to_server", "c->s"), ("server_to_client", "s->c")):
        st = summ["delay_ms"][d]
        if st["count"]:
            out(
                f"  proxy delay ms {label} over all pairs: n={st['count']} p50={st['p50']:.3f} "
                f"p95={st['p95']:.3f} p99={st['p99']:.3f} max={st['max']:.3f}"
            )
    if summ["close_codes"]:
        out("  close codes: " + ", ".join(f"{c} x{n}" for c, n in summ["close_codes"][:8]))
    for role, how, n in summ["ended"][:6]:
        out(f"  {role} leg {how}: {n}")
    changes: Counter[tuple[str, str, str]] = Counter()
    for p in sec["pairs"]:
        for h in p["header_changes"]:
            changes[(h["message"], h["change"], h["name"].lower())] += 1
    if changes:
        out("  header changes across pairs:")
        for (msg, change, name), n in changes.most_common(10):
            out(f"    {msg} {change} {name}: {n} pairs")
    worst = sec["pairs_ranked"][: min(10, max_rows)]
    out(f"  worst pairs (findings first, then p95 delay), {len(worst)} of {summ['pairs']}:")
    for p in worst:
        cc, sc = p["client_conn"], p["server_conn"]
        codes = ", ".join(p["finding_codes"][:3]) or "no findings"
        p95 = p["delay_p95_ms"]
        out(
            f"    {p['id']}: {cc['src']} <=> {sc['src']}  {_target(cc)} -> {_status(sc)}; "
            f"{codes}; p95 delay {'-' if p95 is None else f'{p95:.3f} ms'}"
        )
    out("  every pair and message: --json FILE, --html FILE, or focus with --port/--connection")


def summary_text(
    analysis,
    *,
    redact: bool = True,
    max_rows: int = 20,
    color: bool = False,
    doc: dict[str, Any] | None = None,
) -> str:
    """The terminal summary: captures, connections, pairs, header changes, proxy delay,
    findings. Plain text; long lists are cut with a note. ``color`` marks each
    finding's ``[severity]`` with an ANSI colour (error red, warning yellow, info
    cyan) for a terminal; never use it for a file. ``doc``: see :func:`sections`."""
    sec = sections(analysis, redact=redact, doc=doc)
    doc = sec["doc"]
    lines: list[str] = []
    out = lines.append
    severity_at: dict[int, str] = {}  # line index -> severity, coloured at the end
    out("Captures")
    for c in doc["captures"]:
        out(
            f"  {c['role']:<6} {c['path']}  packets={c['packets']}  "
            f"{c['first_ts'] or '-'} .. {c['last_ts'] or '-'}"
        )
    out("")
    if len(sec["pairs"]) > max_rows or len(doc["connections"]) > 2 * max_rows:
        # Thousands of connections: distributions and the worst cases, not lists.
        _summary_at_scale(sec, out, max_rows)
    else:
        _summary_in_detail(sec, out, max_rows)
    if sec["transcripts"]:
        out("")
        out("Transcripts (sub-protocol messages):")
        for t in sec["transcripts"][:max_rows]:
            out(f"  {_transcript_title(t)}")
            for line in transcript_lines(t, max_lines=40):
                out(f"    {line}")
        if len(sec["transcripts"]) > max_rows:
            out(f"  ... {len(sec['transcripts']) - max_rows} more transcripts (see --json)")
    out("")
    out(f"Findings: {len(doc['findings'])}")
    for v in sec["verdict"][:max_rows]:
        severity_at[len(lines)] = v["severity"]
        out(
            f"  [{v['severity']}] {v['code']} x{v['count']}: {v['detail']}"
            + (f"  [{v['evidence']}]" if v["evidence"] else "")
        )
        if v["check"] and v["severity"] != "info":
            out(f"      check: {v['check']}")
    if not redact:
        out("")
        out("NOTE: credentials are NOT redacted (--no-redact).")
    # Control characters from the capture are escaped first; the only escape
    # sequences in the result are the colours added here.
    shown = [_CONTROL.sub(_escape_control, line) for line in lines]
    if color:
        sgr = {"error": "1;31", "warning": "33", "info": "36"}
        for i, sev in severity_at.items():
            tag = f"[{sev}]"
            shown[i] = shown[i].replace(tag, f"\x1b[{sgr.get(sev, '0')}m{tag}\x1b[0m", 1)
    return "\n".join(shown) + "\n"


# --- Markdown ----------------------------------------------------------------------


def _md(text: Any) -> str:
    """A Markdown table cell: pipes and newlines escaped, backticks neutralised, and
    no markup from a capture: ``&``, ``<``, ``>`` become HTML entities (no raw HTML
    tag reaches the renderer) and brackets are backslash-escaped (no link)."""
    s = "" if text is None else str(text)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("[", "\\[").replace("]", "\\]").replace("`", "'")


def render_markdown(analysis, *, redact: bool = True, doc: dict[str, Any] | None = None) -> str:
    """The Markdown report: verdict, pairs with header changes and delays,
    connections, findings legend. Pastes into GitHub, GitLab and Jira tickets.
    ``doc``: see :func:`sections`."""
    sec = sections(analysis, redact=redact, doc=doc)
    doc = sec["doc"]
    L: list[str] = []
    L.append("# wsanalyze report")
    L.append("")
    L.append("| capture | path | packets | first | last |")
    L.append("|---|---|---|---|---|")
    for c in doc["captures"]:
        L.append(
            f"| {c['role']} | {_md(c['path'])} | {c['packets']} | {c['first_ts']} | "
            f"{c['last_ts']} |"
        )
    L.append("")
    L.append("## Verdict")
    L.append("")
    if not sec["verdict"]:
        L.append("No findings.")
    else:
        L.append("| severity | finding | count | detail | evidence |")
        L.append("|---|---|---|---|---|")
        for v in sec["verdict"]:
            L.append(
                f"| {v['severity']} | `{v['code']}` | {v['count']} | {_md(v['detail'])} | "
                f"{_md(v['evidence'])} |"
            )
    if sec["show_pairs"]:
        L.append("")
        L.append("## Pairs")
        theta = doc["clock_offset_ms"] if sec["two_captures"] else None
        if not sec["two_captures"]:
            L.append("")
            L.append(
                "Both legs are in this one capture (paired by F5 trailer ids or a Sec-WebSocket-Key seen on two connections)."
            )
        if theta:
            L.append("")
            L.append(
                f"Clock offset (server capture − client capture): **{theta['estimate']} ms** "
                f"(bounds {theta['low']} … {theta['high']} ms)."
            )
        for p in sec["pairs"]:
            cc, sc = p["client_conn"], p["server_conn"]
            L.append("")
            L.append(f"### {p['id']}: {_md(_target(cc))}")
            L.append("")
            L.append("| leg | connection | src → dst | status | close |")
            L.append("|---|---|---|---|---|")
            L.append(
                f"| client | {cc['id']} | {cc['src']} → {cc['dst']} | {_md(_status(cc))} | "
                f"{_md(_close(cc))} |"
            )
            L.append(
                f"| server | {sc['id']} | {sc['src']} → {sc['dst']} | {_md(_status(sc))} | "
                f"{_md(_close(sc))} |"
            )
            L.append("")
            L.append(
                f"Confidence {p['confidence']:.2f} — evidence: {_md(', '.join(p['evidence']))}"
            )
            L.append("")
            L.append(
                f"Proxy delay (ms): client→server {_delay(p, 'client_to_server')}; "
                f"server→client {_delay(p, 'server_to_client')}"
            )
            if p["header_changes"]:
                L.append("")
                L.append("| message | change | header | client leg | server leg |")
                L.append("|---|---|---|---|---|")
                for h in p["header_changes"]:
                    L.append(
                        f"| {h['message']} | {h['change']} | {_md(h['name'])} | "
                        f"{_md(h['client_value'])} | {_md(h['server_value'])} |"
                    )
        if sec["unpaired"]:
            L.append("")
            L.append("Unpaired connections: " + ", ".join(c["id"] for c in sec["unpaired"]))
    L.append("")
    L.append("## Connections")
    L.append("")
    L.append("| id | src → dst | request | status | websocket | subprotocol | close |")
    L.append("|---|---|---|---|---|---|---|")
    for c in doc["connections"]:
        L.append(
            f"| {c['id']} | {c['src']} → {c['dst']} | {_md(_target(c))} | "
            f"{_md(_status(c))} | {'yes' if c['websocket'] else 'no'} | "
            f"{_md(c['subprotocol'] or '')} | {_md(_close(c))} |"
        )
    if sec["transcripts"]:
        L.append("")
        L.append("## Transcripts")
        for t in sec["transcripts"]:
            L.append("")
            L.append(f"### {_md(_transcript_title(t))}")
            L.append("")
            L.append("```text")
            for line in transcript_lines(t, max_lines=100):
                # No backtick can close the fence; control characters shown as \xNN.
                L.append(_CONTROL.sub(_escape_control, line).replace("`", "'"))
            L.append("```")
    if sec["legend"]:
        L.append("")
        L.append("## Finding codes")
        L.append("")
        L.append("| code | severity | reference | meaning | what to check |")
        L.append("|---|---|---|---|---|")
        for e in sec["legend"]:
            L.append(
                f"| `{e['code']}` | {e['severity']} | {_md(e['reference'])} | "
                f"{_md(e['explanation'])} | {_md(e['check'])} |"
            )
    L.append("")
    L.append("Credentials redacted." if redact else "**Credentials NOT redacted (--no-redact).**")
    return "\n".join(L) + "\n"


# --- HTML --------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STRIP_W, _STRIP_H, _STRIP_POINTS = 360, 60, 400


_TIMING_STEPS = (
    ("client_connect_ms", "client leg TCP connect"),
    ("proxy_request_ms", "proxy: request in → request out (incl. server connect)"),
    ("server_connect_ms", "server leg TCP connect"),
    ("server_response_ms", "server: request → response"),
    ("response_forward_ms", "proxy: response in → response out"),
)


def _timing_rows(timings) -> list[dict[str, Any]]:
    """Percentiles of each handshake step over all pairs (ms), for the report."""
    rows = []
    for col, label in _TIMING_STEPS:
        values = sorted(float(v) for v in timings[col].dropna())
        if values:
            rows.append(
                {
                    "step": label,
                    "pairs": len(values),
                    "p50": percentile(values, 50),
                    "p95": percentile(values, 95),
                    "max": values[-1],
                }
            )
    return rows


def _delay_strip(pair, offset: Any) -> dict[str, Any] | None:
    """A small inline-SVG strip of one pair's proxy delay per matched message: x the
    time since its first matched message, y the delay; numbers only (no markup), at
    most :data:`_STRIP_POINTS` points (evenly thinned). None without matches.
    ``offset`` is the ClockOffset (drift-aware) or θ in ns."""
    pts = sorted((m.client_ts_ns, m.delay_ns(offset) / 1e6, m.direction) for m in pair.matches)
    if not pts:
        return None
    if len(pts) > _STRIP_POINTS:
        step = len(pts) / _STRIP_POINTS
        pts = [pts[int(k * step)] for k in range(_STRIP_POINTS)] + [pts[-1]]
    t0, t1 = pts[0][0], pts[-1][0]
    lo = min(0.0, min(p[1] for p in pts))
    hi = max(0.0, max(p[1] for p in pts)) * 1.15
    span_y = (hi - lo) or 1.0
    span_t = (t1 - t0) or 1
    pad = 4
    w, h = _STRIP_W - 2 * pad, _STRIP_H - 2 * pad

    def y_of(v: float) -> float:
        return round(pad + h - (v - lo) / span_y * h, 1)

    return {
        "width": _STRIP_W,
        "height": _STRIP_H,
        "zero": y_of(0.0),
        "points": [
            (round(pad + (t - t0) / span_t * w, 1), y_of(v), "c2s" if d == C2S else "s2c")
            for t, v, d in pts
        ],
        "max_ms": round(max(p[1] for p in pts), 3),
        "min_ms": round(lo, 3),
        "span_s": round((t1 - t0) / 1e9, 3),
        "count": len(pair.matches),
    }


def _html_id(kind: str, ident: str) -> str:
    """The element id of a pair (``pair-3``) or a connection (``conn-client-7``)."""
    return ident if kind == "pair" else f"conn-{ident}"


_SCRIPT = (Path(__file__).parent / "templates" / "report.js").read_text(encoding="utf-8")
"""The report's inline script (sorting and filtering tables), embedded verbatim."""


def render_html(
    analysis,
    *,
    redact: bool = True,
    max_ladders: int = 10,
    max_pairs: int = 50,
    max_rows: int = 2000,
    scatter_limit: int = 5000,
    max_links: int = 5,
    doc: dict[str, Any] | None = None,
) -> str:
    """One self-contained HTML file (charts embedded as PNG data URIs, no network
    fetch), rendered by jinja2 with autoescaping.

    It stays usable for a capture with tens of thousands of connections: summaries
    and the worst cases first, details collapsed. Detail sections (both handshakes
    side by side, header changes, delay strip, close story) only for the
    ``max_pairs`` worst pairs (pairs with findings first, by severity, then by the
    largest p95 proxy delay), ladder diagrams for the first ``max_ladders`` of those;
    the pair, connection and finding tables hold at most ``max_rows`` rows (worst
    first) with a note of how many are not shown (the JSON report has them all);
    the delay chart is a scatter plot up to ``scatter_limit`` matched messages, else
    percentile bands over time. Each verdict row links to up to ``max_links`` of
    the pairs or connections it concerns. ``doc``: see :func:`sections`."""
    import jinja2

    from . import charts, tables

    sec = sections(analysis, redact=redact, doc=doc)
    doc = sec["doc"]
    corr = analysis.correlation
    theta_ns = corr.clock_offset.estimate_ns if corr and corr.clock_offset else 0
    ranked = sec["pairs_ranked"]
    detailed = ranked[:max_pairs]
    pair_rows = ranked[:max_rows]
    conn_rows = sec["connections_ranked"][:max_rows]
    finding_rows = doc["findings"][:max_rows]
    transcripts = sec["transcripts"][:max_pairs]
    in_detail = {p["id"] for p in detailed}
    anchors = in_detail | {p["id"] for p in pair_rows} | {f"conn-{c['id']}" for c in conn_rows}

    def link(kind: str, ident: str) -> str | None:
        """The in-page link of a pair or connection, None when not in the page; a
        connection of a pair shown in the page links to its pair."""
        if kind == "connection":
            pid = sec["conn_info"].get(ident, {}).get("pair")
            if pid in in_detail:
                return f"#{pid}"
        html_id = _html_id(kind, ident)
        return f"#{html_id}" if html_id in anchors else None

    verdict_links: dict[str, dict[str, Any]] = {}
    for v in sec["verdict"]:
        shown = []
        for t in v["targets"]:
            href = link(t["kind"], t["id"])
            if href is not None:
                shown.append({"href": href, "label": t["id"]})
                if len(shown) == max_links:
                    break
        verdict_links[v["code"]] = {"links": shown, "more": len(v["targets"]) - len(shown)}

    images: dict[str, str] = {}
    r = Redactor(redact)
    for p in detailed[:max_ladders]:
        ev = tables.ladder_table(corr, p["id"])
        if redact:  # request labels carry the target: query-string credentials
            ev["label"] = ev["label"].map(r.text).astype("string")
        images[p["id"]] = _png(charts.plot_ladder(ev, title=p["id"]))
    by_id = {p.id: p for p in corr.pairs} if corr else {}
    offset = corr.clock_offset if corr is not None and corr.clock_offset else theta_ns
    strips = {p["id"]: _delay_strip(by_id[p["id"]], offset) for p in detailed}
    delay_chart = None
    delay_kind = None
    matches = analysis.message_matches
    if len(matches):
        if len(matches) < scatter_limit:
            delay_chart = _png(charts.plot_proxy_delay(matches))
            delay_kind = "scatter"
        else:
            delay_chart = _png(charts.plot_proxy_delay_distribution(matches))
            delay_kind = "bands"
    # Overview charts: aggregated past a few hundred connections (readable at 10,000).
    overview: list[tuple[str, str]] = []
    if len(analysis.connections):
        overview.append(
            (
                "Connection timeline (pairs linked)",
                _png(charts.plot_timeline(analysis.connections, analysis.pairs if corr else None)),
            )
        )
    if len(analysis.frames):
        overview.append(("Throughput per leg", _png(charts.plot_throughput(analysis.frames))))
    if len(analysis.header_changes):
        overview.append(
            (
                "Header changes across pairs",
                _png(charts.plot_header_changes(analysis.header_changes)),
            )
        )
    timing_rows = _timing_rows(analysis.handshake_timings) if corr else []
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("wsanalyze", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["target"] = _target
    env.filters["status"] = _status
    env.filters["close"] = _close
    env.filters["delay"] = _delay
    env.filters["transcript_lines"] = lambda t: [
        _CONTROL.sub(_escape_control, ln) for ln in transcript_lines(t)
    ]
    env.filters["transcript_title"] = _transcript_title
    env.filters["num"] = lambda n: f"{n:,}"
    env.globals["link"] = link
    env.globals["severity_rank"] = lambda s: _SEVERITY_RANK.get(s, -1) if s else -1
    n_pairs, n_conns, n_findings = len(sec["pairs"]), len(doc["connections"]), len(doc["findings"])
    # The page's one script, allowed by its hash (CSP3 script-src 'sha256-…'): an
    # inline script or handler that an escaping slip let through would not run.
    script = _SCRIPT
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return env.get_template("report.html.j2").render(
        script=markupsafe.Markup(script),
        overview=overview,
        timing_rows=timing_rows,
        script_hash=script_hash,
        sec=sec,
        doc=doc,
        summary=sec["summary"],
        images=images,
        strips=strips,
        delay_chart=delay_chart,
        delay_kind=delay_kind,
        scatter_limit=scatter_limit,
        redact=redact,
        version=__version__,
        detailed=detailed,
        pair_rows=pair_rows,
        conn_rows=conn_rows,
        finding_rows=finding_rows,
        transcripts=transcripts,
        in_detail=in_detail,
        verdict_links=verdict_links,
        hidden={
            "details": n_pairs - len(detailed),
            "pairs": n_pairs - len(pair_rows),
            "connections": n_conns - len(conn_rows),
            "findings": n_findings - len(finding_rows),
            "transcripts": len(sec["transcripts"]) - len(transcripts),
            "ladders": n_pairs - len(images),
        },
        unpaired_shown=sec["unpaired"][:max_rows],
    )
