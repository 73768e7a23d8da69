"""End to end on the committed real nginx captures (captures/<scenario>/*.pcap).

The truth is captures/expected.json, regenerated with the captures by
captures/derive_expected.py (tshark): every assertion here reads it, nothing about
ports or counts is hard-coded. Each fact is checked twice: through the Python API
(DataFrames) and through the JSON report (``wsanalyze.report.to_json``), which must
also follow docs/json.md. Proxy delays are recomputed independently from the pcaps
with dpkt (own TCP reassembly and RFC 6455 frame parsing).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pandas as pd
import pytest
from conftest import capture_paths, scenario_names

from wsanalyze import report, tables

SCENARIOS = scenario_names()
DIRS = ("client_to_server", "server_to_client")
OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
MSG_KEYS = ("text", "binary", "ping", "pong", "close")


def _na(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def _conn_by_src(df: pd.DataFrame, capture: str) -> dict[str, pd.Series]:
    part = df[df["capture"] == capture]
    return {row["client"]: row for _, row in part.iterrows()}


def _json_conn_by_src(doc: dict, capture: str) -> dict[str, dict]:
    return {c["src"]: c for c in doc["connections"] if c["capture"] == capture}


def _fin_endpoint(conn: dict, who: str | None) -> str | None:
    """expected.json names the first FIN's sender "client"/"server" (per leg)."""
    return {"client": conn["src"], "server": conn["dst"], None: None}[who]


# --- connections ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_connections_through_the_api(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    conns, msgs, frames = a.connections, a.messages, a.frames
    for role in ("client", "server"):
        want = expected["scenarios"][scenario]["captures"][role]["connections"]
        got = _conn_by_src(conns, role)
        assert sorted(got) == sorted(c["src"] for c in want), f"{role} connections"
        for w in want:
            row = got[w["src"]]
            cid = row["connection_id"]
            assert row["server"] == w["dst"]
            assert bool(row["websocket"]) is w["websocket"]
            assert row["target"] == w["request_target"]
            assert row["http_version"] == w["request_version"]
            assert row["status"] == w["status"]
            assert _na(row["subprotocol"]) == w["subprotocol"]
            assert bool(row["syn_seen"]) is w["tcp"]["syn_seen"]
            assert _na(row["first_fin_from"]) == _fin_endpoint(w, w["tcp"]["first_fin_from"])
            want_rst = {_fin_endpoint(w, who) for who in w["tcp"]["rst_from"]}
            got_rst = _na(row["rst_from"])
            assert (set(got_rst.split(", ")) if got_rst else set()) == want_rst
            assert row["client_to_server_bytes"] == w["tcp"]["payload_bytes"]["client_to_server"]
            assert row["server_to_client_bytes"] == w["tcp"]["payload_bytes"]["server_to_client"]
            assert row["gaps"] == 0 and row["undecodable_bytes"] == 0
            mine = msgs[msgs["connection_id"] == cid]
            for d in DIRS:
                counts = mine[mine["direction"] == d]["opcode"].astype(str).value_counts()
                assert {k: int(counts.get(k, 0)) for k in MSG_KEYS} == w["messages"][d], (cid, d)
                closes = mine[(mine["direction"] == d) & (mine["opcode"] == "close")]
                assert [int(x) for x in closes["close_code"]] == w["close_codes"][d]
                first = w["close_codes"][d][0] if w["close_codes"][d] else None
                assert _na(row[f"close_code_{d}"]) == first
                fr = frames[(frames["connection_id"] == cid) & (frames["direction"] == d)]
                assert int((fr["opcode"] == "continuation").sum()) == w["continuation_frames"][d]
            total = sum(sum(w["messages"][d].values()) for d in DIRS)
            assert row["client_to_server_messages"] + row["server_to_client_messages"] == total


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_connections_through_the_json_report(scenario, expected, analysis_of, check_report):
    doc = report.to_json(analysis_of(scenario))
    check_report(doc)
    exp = expected["scenarios"][scenario]["captures"]
    assert [(c["role"], c["packets"]) for c in doc["captures"]] == [
        ("client", exp["client"]["packets"]),
        ("server", exp["server"]["packets"]),
    ]
    for role in ("client", "server"):
        got = _json_conn_by_src(doc, role)
        want = exp[role]["connections"]
        assert sorted(got) == sorted(c["src"] for c in want)
        for w in want:
            c = got[w["src"]]
            assert c["dst"] == w["dst"]
            assert c["websocket"] is w["websocket"]
            assert c["request"]["target"] == w["request_target"]
            assert c["request"]["version"] == w["request_version"]
            assert c["response"]["status"] == w["status"]
            assert c["response"]["reason"] == w["reason"]
            assert c["subprotocol"] == w["subprotocol"]
            keys = [v for n, v in c["request"]["headers"] if n.lower() == "sec-websocket-key"]
            assert keys == [w["sec_websocket_key"]]
            assert c["messages"] == w["messages"]
            for d in DIRS:
                assert c["frames"][d]["continuation"] == w["continuation_frames"][d]
                codes = w["close_codes"][d]
                if codes:
                    assert c["close"][d]["code"] == codes[0]
                else:
                    assert c["close"][d] is None
                b = c["bytes"][d]
                assert b["decoded"] + b["gap"] + b["undecodable"] == w["tcp"]["payload_bytes"][d]
                assert b["gap"] == 0 and b["undecodable"] == 0
            assert c["tcp"]["syn_seen"] is w["tcp"]["syn_seen"]
            assert c["tcp"]["first_fin_from"] == _fin_endpoint(w, w["tcp"]["first_fin_from"])
            want_rst = sorted(_fin_endpoint(w, who) for who in w["tcp"]["rst_from"])
            assert sorted(c["tcp"]["rst_from"]) == want_rst


# --- pairs and header changes ----------------------------------------------------------------------


def _pairs_by_client(a) -> dict[str, pd.Series]:
    return {row["client"]: row for _, row in a.pairs.iterrows()}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pairs_through_the_api(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    want = expected["scenarios"][scenario]["pairs"]
    got = _pairs_by_client(a)
    assert {c: row["proxy_source"] for c, row in got.items()} == {
        p["client"]: p["server"] for p in want
    }
    for p in want:
        row = got[p["client"]]
        assert row["client_status"] == p["response_status"]["client_received"]
        assert row["server_status"] == p["response_status"]["server_sent"]
        assert 0 < row["confidence"] <= 1
        ev = row["evidence"]
        if "Sec-WebSocket-Key" in p["matched_by"]:
            assert "sec_websocket_key" in ev
        if "unique text token" in p["matched_by"]:
            assert "message_digests" in ev
    # Every connection of both captures is paired: nothing left over.
    assert len(a.pairs) == len(a.connections[a.connections["capture"] == "client"])
    assert not (a.findings["code"] == "pair_ambiguous").any()


def _changes_api(a, pair_id: str, message: str) -> list[dict]:
    hc = a.header_changes
    part = hc[(hc["pair_id"] == pair_id) & (hc["message"] == message)]
    return [
        {
            "name": r["name"],
            "change": r["change"],
            "client_value": _na(r["client_value"]),
            "server_value": _na(r["server_value"]),
        }
        for _, r in part.iterrows()
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_header_changes_through_the_api(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    got = _pairs_by_client(a)
    for p in expected["scenarios"][scenario]["pairs"]:
        pid = got[p["client"]]["pair_id"]
        assert _changes_api(a, pid, "request") == p["request_header_changes"]
        assert _changes_api(a, pid, "response") == p["response_header_changes"]
        assert got[p["client"]]["header_changes"] == len(p["request_header_changes"]) + len(
            p["response_header_changes"]
        )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pairs_and_header_changes_through_the_json_report(scenario, expected, analysis_of):
    doc = report.to_json(analysis_of(scenario))
    conns = {c["id"]: c for c in doc["connections"]}
    got = {conns[p["client"]]["src"]: p for p in doc["pairs"]}
    want = expected["scenarios"][scenario]["pairs"]
    assert {c: conns[p["server"]]["src"] for c, p in got.items()} == {
        p["client"]: p["server"] for p in want
    }
    for p in want:
        jp = got[p["client"]]
        cc, sc = conns[jp["client"]], conns[jp["server"]]
        assert cc["response"]["status"] == p["response_status"]["client_received"]
        assert sc["response"]["status"] == p["response_status"]["server_sent"]
        for msg, key in (
            ("request", "request_header_changes"),
            ("response", "response_header_changes"),
        ):
            mine = [
                {k: h[k] for k in ("name", "change", "client_value", "server_value")}
                for h in jp["header_changes"]
                if h["message"] == msg
            ]
            assert mine == p[key], (p["client"], msg)
        # Header order as sent on each leg is kept in the report.
        assert [n for n, _ in cc["request"]["headers"]] == p["request_header_order"]["client"]
        assert [n for n, _ in sc["request"]["headers"]] == p["request_header_order"]["server"]
        if "response_header_order" in p:
            names = [n for n, _ in cc["response"]["headers"]]
            assert names == p["response_header_order"]["client"]
            assert [n for n, _ in sc["response"]["headers"]] == p["response_header_order"]["server"]
        # Request-line changes (nginx-no-upgrade: HTTP/1.1 -> HTTP/1.0).
        line = p["request_line_changes"]
        for field in ("method", "target", "version"):
            cv, sv = cc["request"][field], sc["request"][field]
            if field in line:
                assert (cv, sv) == (line[field]["client_value"], line[field]["server_value"])
            else:
                assert cv == sv


# --- diagnosis ------------------------------------------------------------------------------------


def _upgrade_dropped(p: dict) -> bool:
    return any(
        h["name"].lower() == "upgrade" and h["change"] == "removed"
        for h in p["request_header_changes"]
    )


def _server_conn(expected, scenario, src):
    conns = expected["scenarios"][scenario]["captures"]["server"]["connections"]
    return next(c for c in conns if c["src"] == src)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_dropped_upgrade_diagnosis(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    doc = report.to_json(a)
    by_src = {(c["capture"], c["src"]): c["id"] for c in doc["connections"]}
    for p in expected["scenarios"][scenario]["pairs"]:
        ids = {by_src[("client", p["client"])], by_src[("server", p["server"])]}
        server = _server_conn(expected, scenario, p["server"])
        status = str(p["response_status"]["server_sent"])
        for source in ("api", "json"):
            if source == "api":
                rows = [
                    {"code": r["code"], "detail": r["detail"], "connections": r["connections"]}
                    for _, r in a.findings.iterrows()
                ]
                rows = [
                    dict(r, connections=[x.strip() for x in r["connections"].split(",") if x])
                    for r in rows
                ]
            else:
                rows = doc["findings"]
            mine = [f for f in rows if ids <= set(f["connections"])]
            dropped = [f for f in mine if f["code"] == "proxy_upgrade_header_dropped"]
            http10 = [f for f in mine if f["code"] == "proxy_http10_to_backend"]
            if _upgrade_dropped(p):
                assert len(dropped) == 1, (source, mine)
                assert "Upgrade" in dropped[0]["detail"]
                assert status in dropped[0]["detail"]
            else:
                assert dropped == []
            if server["request_version"] == "HTTP/1.0":
                assert len(http10) == 1, (source, mine)
                assert status in http10[0]["detail"]
            else:
                assert http10 == []
        if _upgrade_dropped(p):
            f = next(f for f in doc["findings"] if f["code"] == "proxy_upgrade_header_dropped")
            assert f["severity"] == "error" and f["packets"]
            most = max(c["packets"] for c in doc["captures"])
            assert all(1 <= n <= most for n in f["packets"])


def _scenarios_where(pred) -> list[str]:
    from conftest import _expected

    return sorted(n for n, s in _expected()["scenarios"].items() if pred(s))


def _all_conns(s: dict) -> list[dict]:
    return [c for r in s["captures"].values() for c in r["connections"]]


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(lambda s: all(c["status"] == 101 for c in _all_conns(s))),
)
def test_no_error_when_every_handshake_succeeded(scenario, expected, analysis_of):
    caps = expected["scenarios"][scenario]["captures"]
    sev = analysis_of(scenario).findings["severity"].astype(str)
    assert not (sev == "error").any()
    # A clean close on every connection (close frames both ways): nothing to warn about.
    if all(all(c["close_codes"][d] for d in DIRS) for r in caps.values() for c in r["connections"]):
        assert not (sev == "warning").any()


# --- the idle timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(
        lambda s: (
            bool(_all_conns(s))
            and all((c["tcp"]["idle_before_first_fin_s"] or 0) > 1 for c in _all_conns(s))
        )
    ),
)
def test_idle_timeout_close(scenario, expected, analysis_of):
    """nginx closes both legs itself: first FIN from the proxy on each leg, no close
    frame either way, after the idle time; its FIN to the server precedes its FIN to
    the client by the amount the manifest states (both captures share one clock)."""
    a = analysis_of(scenario, 0.0)
    doc = report.to_json(a)
    exp = expected["scenarios"][scenario]
    for role in ("client", "server"):
        for w in exp["captures"][role]["connections"]:
            c = _json_conn_by_src(doc, role)[w["src"]]
            assert c["websocket"] is True
            assert c["close"] == {"client_to_server": None, "server_to_client": None}
            assert c["messages"]["client_to_server"]["close"] == 0
            assert c["messages"]["server_to_client"]["close"] == 0
            proxy = c["dst"] if role == "client" else c["src"]
            assert c["tcp"]["first_fin_from"] == proxy
            assert c["tcp"]["first_fin_from"] == _fin_endpoint(w, w["tcp"]["first_fin_from"])
            row = _conn_by_src(a.connections, role)[w["src"]]
            assert _na(row["first_close_from"]) is None
            assert _na(row["close_code_client_to_server"]) is None
            assert _na(row["close_code_server_to_client"]) is None
    for _, pr in a.pairs.iterrows():
        ev = tables.ladder_table(a.correlation, pr["pair_id"])
        fins = ev[ev["kind"] == "fin"]
        proxy_fin_client_leg = fins[
            (fins["leg"] == "client") & (fins["direction"] == "server_to_client")
        ]["ts"]
        proxy_fin_server_leg = fins[
            (fins["leg"] == "server") & (fins["direction"] == "client_to_server")
        ]["ts"]
        assert len(proxy_fin_client_leg) == 1 and len(proxy_fin_server_leg) == 1
        t_client_leg = proxy_fin_client_leg.iloc[0]
        t_server_leg = proxy_fin_server_leg.iloc[0]
        # The ladder's FINs are the first events of the close: every FIN comes after
        # the last message, by the idle time tshark measured (rounded to 1 ms).
        msgs = a.messages[a.messages["connection_id"] == pr["client_connection_id"]]
        idle_s = (t_client_leg - msgs["ts"].max()).total_seconds()
        w = next(c for c in exp["captures"]["client"]["connections"] if c["src"] == pr["client"])
        assert abs(idle_s - w["tcp"]["idle_before_first_fin_s"]) <= 0.0005 + 1e-6
        gap_ms = (t_client_leg - t_server_leg).total_seconds() * 1e3
        assert gap_ms > 0, "nginx (and Apache) close the upstream first, then the client"
        note = next((n for n in exp["notes"] if "FIN" in n), None)
        m = re.search(r"([+-]\d+\.\d+) ms after", note or "")
        if m:
            assert abs(gap_ms - float(m.group(1))) <= 0.0005 + 1e-6
        # And independently from the pcaps.
        cpath, spath = capture_paths(scenario)
        cfin = _read(cpath).fins[(pr["client"], pr["proxy_listener"])]["server_to_client"]
        sfin = _read(spath).fins[(pr["proxy_source"], pr["server"])]["client_to_server"]
        assert gap_ms == pytest.approx((cfin - sfin) / 1e6, abs=1e-6)


# --- clock offset and proxy delays, independently from the pcaps ----------------------------------


@dataclass
class _Leg:
    frames: dict[tuple[str, str], dict[str, list[tuple[int, bytes, int]]]]
    fins: dict[tuple[str, str], dict[str, int]]
    rsts: dict[tuple[str, str], dict[str, int]]
    # (opcode, payload, ts_ns of the last byte, bytes on the wire, compressed): data
    # messages reassembled from their fragments (RFC 6455 §5.4) and decompressed
    # (RFC 7692), control frames where they stand, in stream order
    messages: dict[tuple[str, str], dict[str, list[tuple[int, bytes, int, int, bool]]]]


_READ: dict[Path, _Leg] = {}


def _read(path: Path) -> _Leg:
    """Own decoding with dpkt: per TCP connection (keyed by SYN sender and receiver)
    and direction, the WebSocket frames after the HTTP head as (opcode, unmasked
    payload, ts_ns of the first packet carrying the frame's last byte), the messages
    they make (see :class:`_Leg`), and the time of the first FIN and RST each way."""
    if path in _READ:
        return _READ[path]
    segs: dict[tuple[str, str], dict[str, list[tuple[int, bytes, int]]]] = {}
    isn: dict[tuple[str, str], dict[str, int]] = {}
    fins: dict[tuple[str, str], dict[str, int]] = {}
    rsts: dict[tuple[str, str], dict[str, int]] = {}
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            ts_ns = round(ts * 1e6) * 1000
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            src = f"{dpkt.utils.inet_to_str(ip.src)}:{tcp.sport}"
            dst = f"{dpkt.utils.inet_to_str(ip.dst)}:{tcp.dport}"
            syn, ack = tcp.flags & dpkt.tcp.TH_SYN, tcp.flags & dpkt.tcp.TH_ACK
            if syn and not ack:
                key = (src, dst)
                isn[key] = {"client_to_server": tcp.seq + 1}
                segs[key] = {d: [] for d in DIRS}
                fins[key] = {}
                rsts[key] = {}
                continue
            if (src, dst) in isn:
                key, d = (src, dst), "client_to_server"
            elif (dst, src) in isn:
                key, d = (dst, src), "server_to_client"
            else:
                continue
            if syn:
                isn[key]["server_to_client"] = tcp.seq + 1
                continue
            if tcp.data:
                off = (tcp.seq - isn[key][d]) % 2**32
                segs[key][d].append((off, bytes(tcp.data), ts_ns))
            if tcp.flags & dpkt.tcp.TH_FIN and d not in fins[key]:
                fins[key][d] = ts_ns
            if tcp.flags & dpkt.tcp.TH_RST and d not in rsts[key]:
                rsts[key][d] = ts_ns
    frames: dict[tuple[str, str], dict[str, list[tuple[int, bytes, int]]]] = {}
    messages: dict[tuple[str, str], dict[str, list[tuple[int, bytes, int, int, bool]]]] = {}
    for key, per_dir in segs.items():
        streams = {}
        for d, lst in per_dir.items():
            size = max((o + len(b) for o, b, _ in lst), default=0)
            stream = bytearray(size)
            when = [None] * size  # first packet (file order) carrying each byte
            for o, b, t in lst:
                for i in range(len(b)):
                    if when[o + i] is None:
                        stream[o + i] = b[i]
                        when[o + i] = t
            streams[d] = (bytes(stream), when)
        deflate = _deflate_params(streams["server_to_client"][0])
        frames[key], messages[key] = {}, {}
        for d, (stream, when) in streams.items():
            full = _ws_frames_full(stream, when)
            frames[key][d] = [(op, p, t) for _, _, op, p, t in full]
            messages[key][d] = _ws_messages(full, deflate[d] if deflate else None)
    _READ[path] = _Leg(frames, fins, rsts, messages)
    return _READ[path]


def _ws_frames_full(stream: bytes, when: list) -> list[tuple[bool, bool, int, bytes, int]]:
    """(fin, rsv1, opcode, unmasked payload, ts of the last byte) of every frame."""
    end = stream.find(b"\r\n\r\n")
    if end < 0 or not stream.startswith((b"GET ", b"HTTP/1.1 101")):
        return []
    if stream.startswith(b"HTTP/") and b" 101 " not in stream[: stream.find(b"\r\n")]:
        return []
    pos, out = end + 4, []
    while pos + 2 <= len(stream):
        b0, b1 = stream[pos], stream[pos + 1]
        n, p = b1 & 0x7F, pos + 2
        if n == 126:
            (n,) = struct.unpack_from("!H", stream, p)
            p += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", stream, p)
            p += 8
        key = b""
        if b1 & 0x80:
            key, p = stream[p : p + 4], p + 4
        payload = stream[p : p + n]
        if key and n:
            mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
        last = p + n - 1
        out.append((bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload, when[last]))
        pos = p + n
    return out


def _ws_frames(stream: bytes, when: list) -> list[tuple[int, bytes, int]]:
    return [(op, p, t) for _, _, op, p, t in _ws_frames_full(stream, when)]


def _deflate_params(response: bytes) -> dict[str, tuple[int, bool]] | None:
    """permessage-deflate as accepted in a 101 (RFC 7692 §7.1): per direction the
    sender's (window bits, context takeover); None when not negotiated."""
    head = response[: response.find(b"\r\n\r\n")].decode("latin-1")
    if not head.startswith("HTTP/1.1 101"):
        return None
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() != "sec-websocket-extensions":
            continue
        for ext in value.split(","):
            parts = [x.strip() for x in ext.split(";")]
            if parts[0] != "permessage-deflate":
                continue
            params = dict((kv.split("=", 1) + [""])[:2] for kv in parts[1:] if kv)
            bits = {
                k: int(params[k].strip('"')) if params.get(k) else 15
                for k in ("client_max_window_bits", "server_max_window_bits")
            }
            return {
                "client_to_server": (
                    bits["client_max_window_bits"],
                    "client_no_context_takeover" not in params,
                ),
                "server_to_client": (
                    bits["server_max_window_bits"],
                    "server_no_context_takeover" not in params,
                ),
            }
    return None


def _ws_messages(
    frames: list[tuple[bool, bool, int, bytes, int]], deflate: tuple[int, bool] | None
) -> list[tuple[int, bytes, int, int, bool]]:
    """Messages in stream order (see :class:`_Leg`), decompressed with zlib."""
    out: list[tuple[int, bytes, int, int, bool]] = []
    z = None
    cur: list | None = None  # [opcode, parts, compressed]
    for fin, rsv1, op, payload, t in frames:
        if op >= 0x8:
            out.append((op, payload, t, len(payload), False))
            continue
        if op in (0x1, 0x2):
            cur = [op, [], rsv1]
        if cur is None:
            continue
        cur[1].append(payload)
        if not fin:
            continue
        op0, parts, compressed = cur
        wire = b"".join(parts)
        data = wire
        if compressed:
            assert deflate is not None, "RSV1 without permessage-deflate"
            bits, takeover = deflate
            if z is None or not takeover:
                z = zlib.decompressobj(wbits=-bits)
            data = z.decompress(wire + b"\x00\x00\xff\xff")
        out.append((op0, data, t, len(wire), compressed))
        cur = None
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_clock_offset_bounds_contain_the_shared_clock(scenario, analysis_of):
    """Both captures were taken in the proxy namespace on one clock: θ = 0 must lie
    within the bounds; the estimate is their middle."""
    a = analysis_of(scenario)
    co = a.correlation.clock_offset
    assert co is not None and not co.imposed
    assert co.low_ns is not None and co.high_ns is not None
    assert co.low_ns <= 0 <= co.high_ns
    assert co.estimate_ns == (co.low_ns + co.high_ns) // 2
    doc = report.to_json(a)
    assert doc["clock_offset_ms"]["imposed"] is False
    assert doc["clock_offset_ms"]["estimate"] == pytest.approx(
        co.estimate_ns / 1e6, abs=0.0005 + 1e-9
    )


def _indices(messages: pd.DataFrame, conn_id: str, direction: str) -> list[int]:
    """message_index of each message of one connection and direction, in order."""
    part = messages[(messages["connection_id"] == conn_id) & (messages["direction"] == direction)]
    return [int(i) for i in part.sort_values("message_index")["message_index"]]


def _decompressed_flags(a, conn_id: str) -> dict[int, bool]:
    """message_index -> whether the analysis decompressed the message (its
    ``decompressed`` column, where the messages table has one; else nothing)."""
    m = a.messages[a.messages["connection_id"] == conn_id]
    if "decompressed" not in m.columns:
        return {}
    return {
        int(i): bool(_na(v)) for i, v in zip(m["message_index"], m["decompressed"], strict=True)
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_proxy_delays_match_an_independent_decoding(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    mm = a.message_matches
    assert (mm["proxy_delay_ms"] >= 0).all(), mm[mm["proxy_delay_ms"] < 0]
    theta = a.correlation.clock_offset.estimate_ns
    cpath, spath = capture_paths(scenario)
    cleg, sleg = _read(cpath), _read(spath)
    checked = 0
    for _, pr in a.pairs.iterrows():
        cf = cleg.frames[(pr["client"], pr["proxy_listener"])]
        sf = sleg.frames[(pr["proxy_source"], pr["server"])]
        mine = mm[mm["pair_id"] == pr["pair_id"]]
        assert len(mine) == pr["messages_matched"]
        cm = cleg.messages[(pr["client"], pr["proxy_listener"])]
        sm = sleg.messages[(pr["proxy_source"], pr["server"])]
        decompressed = _decompressed_flags(a, pr["client_connection_id"])
        n_messages = 0
        for d in DIRS:
            # These proxies forward frame for frame: the k-th frame each way is the same
            # frame, so the k-th message (fragments reassembled, decompressed) too.
            assert [(op, p) for op, p, _ in cf[d]] == [(op, p) for op, p, _ in sf[d]]
            assert [(m[0], m[1]) for m in cm[d]] == [(m[0], m[1]) for m in sm[d]]
            n_messages += len(cm[d])
            part = mine[mine["direction"] == d]
            by_index = {int(r["client_message_index"]): r for _, r in part.iterrows()}
            c_idx = _indices(a.messages, pr["client_connection_id"], d)
            s_idx = _indices(a.messages, pr["server_connection_id"], d)
            assert len(c_idx) == len(cm[d]) and len(s_idx) == len(sm[d])
            for k, (cmsg, smsg) in enumerate(zip(cm[d], sm[d], strict=True)):
                op, payload, ct, wire, compressed = cmsg
                st = smsg[2]
                row = by_index.get(c_idx[k])
                assert row is not None, f"{pr['pair_id']} {d} {OPCODES[op]} #{k} not matched"
                assert int(row["server_message_index"]) == s_idx[k]
                assert row["opcode"] == OPCODES[op]
                # A compressed message's size is the decompressed one once the analysis
                # decompresses it (RFC 7692), its size on the wire until then.
                want = len(payload) if decompressed.get(c_idx[k], not compressed) else wire
                assert row["payload_bytes"] == want
                assert int(row["client_ts"].value) == ct
                assert int(row["server_ts"].value) == st
                # delay = last byte out − last byte in, corrected by θ
                raw = (st - ct) if d == "client_to_server" else (ct - st)
                corr = raw - theta if d == "client_to_server" else raw + theta
                assert row["proxy_delay_ms"] == pytest.approx(corr / 1e6, abs=1e-3)
                # With the true offset (0: one clock), within 1 µs + |estimate|.
                assert abs(row["proxy_delay_ms"] - raw / 1e6) <= 1e-3 + abs(theta) / 1e6
                checked += 1
        # Every message was matched.
        assert len(mine) == n_messages
    total = sum(
        sum(c["messages"][d].values())
        for c in expected["scenarios"][scenario]["captures"]["client"]["connections"]
        for d in DIRS
    )
    assert checked == total


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_json_delay_statistics_agree_with_the_table(scenario, analysis_of):
    a = analysis_of(scenario)
    doc = report.to_json(a)
    mm = a.message_matches
    for p in doc["pairs"]:
        part = mm[mm["pair_id"] == p["id"]]
        assert p["messages_matched"] == len(part)
        for d in DIRS:
            s = p["proxy_delay_ms"][d]
            vals = part[part["direction"] == d]["proxy_delay_ms"]
            assert s["count"] == len(vals)
            if len(vals):
                assert s["max"] == pytest.approx(vals.max(), abs=0.0005 + 1e-9)
                assert s["p50"] == pytest.approx(vals.median(), abs=0.0005 + 1e-9)
                assert s["max"] >= 0


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(
        lambda s: any(
            p.get("websocket_bytes_identical", {}).get(d) for p in s["pairs"] for d in DIRS
        )
    ),
)
def test_frames_forwarded_byte_for_byte(scenario, expected, analysis_of):
    """Where tshark found the bytes after the heads identical on both legs, the
    frames (boundaries, flags, masking keys, lengths) are identical in the tables."""
    a = analysis_of(scenario)
    pairs = _pairs_by_client(a)
    cols = ["opcode", "fin", "rsv1", "masked", "masking_key", "header_bytes", "payload_bytes"]
    for p in expected["scenarios"][scenario]["pairs"]:
        row = pairs[p["client"]]
        for d in DIRS:
            if not p["websocket_bytes_identical"].get(d):
                continue
            legs = []
            for cid in (row["client_connection_id"], row["server_connection_id"]):
                f = a.frames[(a.frames["connection_id"] == cid) & (a.frames["direction"] == d)]
                legs.append(f.sort_values("offset")[cols].reset_index(drop=True))
            assert len(legs[0]) > 0
            assert legs[0].equals(legs[1]), (p["client"], d)


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(
        # the backend's RST (HAProxy's own RST to the backend on an idle timeout is in
        # test_idle_timeout_close_events)
        lambda s: any(
            "server" in c["tcp"]["rst_from"] for c in s["captures"]["server"]["connections"]
        )
    ),
)
def test_server_reset_relayed_as_fin(scenario, expected, analysis_of):
    """The backend resets the server leg; the proxy ends the client leg with a FIN
    (no close frame either way, no RST on the client leg), the delay the manifest
    states later (one clock)."""
    a = analysis_of(scenario, 0.0)
    doc = report.to_json(a)
    exp = expected["scenarios"][scenario]
    for p in exp["pairs"]:
        cw = next(c for c in exp["captures"]["client"]["connections"] if c["src"] == p["client"])
        sw = _server_conn(expected, scenario, p["server"])
        cj = _json_conn_by_src(doc, "client")[p["client"]]
        sj = _json_conn_by_src(doc, "server")[p["server"]]
        assert sj["tcp"]["rst_from"] == [_fin_endpoint(sw, w) for w in sw["tcp"]["rst_from"]]
        assert cj["tcp"]["rst_from"] == []
        assert cj["tcp"]["first_fin_from"] == _fin_endpoint(cw, cw["tcp"]["first_fin_from"])
        assert sj["tcp"]["first_fin_from"] == _fin_endpoint(sw, sw["tcp"]["first_fin_from"])
        for c, w in ((cj, cw), (sj, sw)):
            for d in DIRS:
                assert (c["close"][d] is None) == (not w["close_codes"][d])
        rst = a.findings[a.findings["code"] == "tcp_rst"]
        assert any(sj["id"] in cs.split(", ") for cs in rst["connections"])
        pr = _pairs_by_client(a)[p["client"]]
        ev = tables.ladder_table(a.correlation, pr["pair_id"])
        t_rst = ev[(ev["kind"] == "rst") & (ev["leg"] == "server")]["ts"]
        t_fin = ev[
            (ev["kind"] == "fin")
            & (ev["leg"] == "client")
            & (ev["direction"] == "server_to_client")
        ]["ts"]
        assert len(t_rst) == 1 and len(t_fin) == 1
        gap_ms = (t_fin.iloc[0] - t_rst.iloc[0]).total_seconds() * 1e3
        assert gap_ms > 0, "the proxy's FIN follows the backend's RST"
        note = next((n for n in exp["notes"] if "RST" in n), "")
        m = re.search(r"(\d+\.\d+) ms later", note)
        if m:
            assert abs(gap_ms - float(m.group(1))) <= 0.0005 + 1e-6
        cpath, spath = capture_paths(scenario)
        cfin = _read(cpath).fins[(pr["client"], pr["proxy_listener"])]["server_to_client"]
        srst = _read(spath).rsts[(pr["proxy_source"], pr["server"])]["server_to_client"]
        assert gap_ms == pytest.approx((cfin - srst) / 1e6, abs=1e-6)


# --- protocol depth: frames, RSV1, extensions, per-message facts -----------------------------------
#
# expected.json (captures/derive_expected.py) holds, per connection, the frames by opcode
# and RSV1 as tshark dissects them, the negotiated extensions and close events, and for
# the deflate / fragmented / k8s scenarios every message (opcode, frames, sizes on the
# wire and decompressed, BLAKE2b-128 digest and preview of the decompressed payload,
# k8s channel); per scenario "must_find" states the facts in words and values.

FRAME_KEYS = ("text", "binary", "continuation", "ping", "pong", "close")


def _conns_of(expected, scenario):
    caps = expected["scenarios"][scenario]["captures"]
    return [(role, w) for role in ("client", "server") for w in caps[role]["connections"]]


def _facts(expected, scenario, name: str) -> list[dict]:
    return [f for f in expected["scenarios"][scenario]["must_find"] if f["fact"] == name]


def _with_fact(name: str) -> list[str]:
    return _scenarios_where(lambda s: any(f["fact"] == name for f in s.get("must_find", [])))


def _ext_names(header: str | None) -> list[str]:
    return [e.split(";")[0].strip() for e in header.split(",")] if header else []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_frames_by_opcode_and_rsv1(scenario, expected, analysis_of):
    """Frames per direction and opcode (continuation frames included) and frames with
    RSV1, through the API and the JSON report; a data message is compressed when its
    first frame has RSV1 (RFC 7692 §6)."""
    a = analysis_of(scenario)
    doc = report.to_json(a)
    for role, w in _conns_of(expected, scenario):
        cid = _conn_by_src(a.connections, role)[w["src"]]["connection_id"]
        jc = _json_conn_by_src(doc, role)[w["src"]]
        for d in DIRS:
            fr = a.frames[(a.frames["connection_id"] == cid) & (a.frames["direction"] == d)]
            counts = fr["opcode"].astype(str).value_counts()
            assert {k: int(counts.get(k, 0)) for k in FRAME_KEYS} == w["frames"][d], (cid, d)
            assert {k: jc["frames"][d][k] for k in FRAME_KEYS} == w["frames"][d], (cid, d)
            assert int(fr["rsv1"].sum()) == w["rsv1_frames"][d], (cid, d)
            assert not fr["rsv2"].any() and not fr["rsv3"].any()
            first = fr["opcode"].astype(str).isin(["text", "binary"])
            assert int((first & fr["rsv1"]).sum()) == w["compressed_messages"][d], (cid, d)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_extensions_negotiated(scenario, expected, analysis_of):
    a = analysis_of(scenario)
    doc = report.to_json(a)
    for role, w in _conns_of(expected, scenario):
        row = _conn_by_src(a.connections, role)[w["src"]]
        want = _ext_names(w["extensions"])
        got = _na(row["extensions"])
        assert (got.split(", ") if got else []) == want, (row["connection_id"], got)
        assert (_json_conn_by_src(doc, role)[w["src"]]["extensions"] or []) == want


def _messages_of(a, cid: str, d: str) -> pd.DataFrame:
    m = a.messages
    part = m[(m["connection_id"] == cid) & (m["direction"] == d)]
    return part.sort_values("message_index").reset_index(drop=True)


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(
        lambda s: any("message_list" in c for r in s["captures"].values() for c in r["connections"])
    ),
)
def test_messages_one_by_one(scenario, expected, analysis_of):
    """Every message in stream order: opcode, frames, and for the uncompressed ones
    size, digest and preview; control frames sent between the fragments of a message
    come before it (a data message is complete at its last fragment) and inside its
    time span."""
    a = analysis_of(scenario)
    for role, w in _conns_of(expected, scenario):
        cid = _conn_by_src(a.connections, role)[w["src"]]["connection_id"]
        for d in DIRS:
            mine = _messages_of(a, cid, d)
            want = w["message_list"][d]
            assert list(mine["opcode"].astype(str)) == [m["opcode"] for m in want], (cid, d)
            assert list(mine["frame_count"]) == [m["frames"] for m in want], (cid, d)
            assert mine["complete"].all()
            for (_, row), m in zip(mine.iterrows(), want, strict=True):
                if m["frames"] > 1:
                    inside = mine[
                        (mine["opcode"].astype(str).isin(["ping", "pong", "close"]))
                        & (mine["ts"] > row["first_ts"])
                        & (mine["ts"] < row["ts"])
                    ]
                    assert len(inside) == m["controls_between_fragments"], (cid, d)
                if m["compressed"]:
                    continue  # test_deflate_decompressed_payloads
                assert row["payload_bytes"] == m["payload_bytes"] == m["wire_bytes"]
                assert row["digest"] == m["digest"], (cid, d, m["preview"][:40])
                assert row["preview"] == m["preview"], (cid, d)


@pytest.mark.parametrize("scenario", _with_fact("fragmented_messages"))
def test_fragmented_and_large_frames(scenario, expected, analysis_of):
    """The fragments of each fragmented message, frame by frame (payload length, FIN),
    and the 64-bit length of the large single-frame message."""
    a = analysis_of(scenario)
    (frag,) = _facts(expected, scenario, "fragmented_messages")
    (large,) = _facts(expected, scenario, "large_messages")
    for role, w in _conns_of(expected, scenario):
        cid = _conn_by_src(a.connections, role)[w["src"]]["connection_id"]
        for d in DIRS:
            fr = a.frames[(a.frames["connection_id"] == cid) & (a.frames["direction"] == d)]
            data = fr[~fr["opcode"].astype(str).isin(["ping", "pong", "close"])]
            data = data.sort_values("offset")
            for m in frag["fragmented"][d]:
                sizes = list(m["frame_payload_bytes"])
                seq = list(zip(data["payload_bytes"], data["fin"], strict=True))
                want = [(n, i == len(sizes) - 1) for i, n in enumerate(sizes)]
                assert any(seq[i : i + len(want)] == want for i in range(len(seq))), (cid, d)
            big = large["largest_single_frame_message"][d]
            single = fr[fr["fin"] & fr["opcode"].astype(str).isin(["text", "binary"])]
            assert int(single["payload_bytes"].max()) == big
            # RFC 6455 §5.2: 2 + 8 (64-bit length) + 4 (masking key) header bytes
            hb = single[single["payload_bytes"] == big]["header_bytes"].iloc[0]
            assert hb == (2 + (8 if big > 65535 else 2 if big > 125 else 0)) + (
                4 if d == "client_to_server" else 0
            )


@pytest.mark.parametrize("scenario", _with_fact("k8s_exec"))
def test_k8s_channels(scenario, expected, analysis_of):
    """Kubernetes exec: the negotiated channel sub-protocol, every message's channel
    (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize), counts per channel, the exit
    code in the status channel's transcript."""
    a = analysis_of(scenario)
    (fact,) = _facts(expected, scenario, "k8s_exec")
    for role, w in _conns_of(expected, scenario):
        row = _conn_by_src(a.connections, role)[w["src"]]
        cid = row["connection_id"]
        assert row["subprotocol"] == fact["subprotocol"]
        for d in DIRS:
            mine = _messages_of(a, cid, d)
            data = mine[mine["opcode"].astype(str).isin(["text", "binary"])]
            want = [m for m in w["message_list"][d] if m["opcode"] in ("text", "binary")]
            assert [int(c) for c in data["channel"]] == [m["channel"] for m in want], (cid, d)
            assert list(data["kind"]) == [m["kind"] for m in want], (cid, d)
            counts = data["channel"].astype(int).astype(str).value_counts()
            assert dict(counts) == fact["k8s_channels"][d], (cid, d)
        tr = a.transcript[a.transcript["connection_id"] == cid]
        status = tr[tr["kind"] == "status"]["text"]
        assert len(status) == 1
        codes = re.findall(r"exit code (\d+)", status.iloc[0])
        assert codes and all(int(c) == fact["exit_code"] for c in codes), status.iloc[0]


@pytest.mark.parametrize("scenario", _with_fact("deflate"))
def test_deflate_decompressed_payloads(scenario, expected, analysis_of):
    """permessage-deflate: every compressed message decompressed (context takeover or
    not, the negotiated window), its size on the wire and decompressed, digest and
    preview of the decompressed payload as derive_expected.py's zlib (checked against
    tshark) found them; the compressed counts of must_find; decompressed payloads equal
    on both legs (so every message is matched)."""
    a = analysis_of(scenario)
    (fact,) = _facts(expected, scenario, "deflate")
    for role, w in _conns_of(expected, scenario):
        cid = _conn_by_src(a.connections, role)[w["src"]]["connection_id"]
        for d in DIRS:
            mine = _messages_of(a, cid, d)
            want = w["message_list"][d]
            assert int(mine["compressed"].fillna(False).sum()) == fact["deflate"][d]
            for (_, row), m in zip(mine.iterrows(), want, strict=True):
                assert bool(_na(row["compressed"])) is m["compressed"]
                assert row["payload_bytes"] == m["payload_bytes"], (cid, d, m["preview"][:40])
                if m["compressed"]:
                    assert row["wire_bytes"] == m["wire_bytes"]
                    assert bool(row["decompressed"]) is True
                assert row["digest"] == m["digest"], (cid, d, m["preview"][:40])
                assert row["preview"] == m["preview"], (cid, d)
    assert fact["deflate"]["decompressed_payload_equal_on_both_legs"]
    total = sum(
        sum(c["messages"][d].values())
        for c in expected["scenarios"][scenario]["captures"]["client"]["connections"]
        for d in DIRS
    )
    assert len(a.message_matches) == total
    assert not a.findings["code"].str.startswith(("ws_rsv", "ws_deflate", "deflate")).any()


@pytest.mark.parametrize("scenario", _with_fact("idle_timeout"))
def test_idle_timeout_close_events(scenario, expected, analysis_of):
    """The proxy's idle timeout as the current tables show it: on each leg the first
    FIN or RST is the proxy's, after the silence expected.json measured, no close
    frame; which leg the proxy closed first and by how much (one clock)."""
    a = analysis_of(scenario, 0.0)
    doc = report.to_json(a)
    (fact,) = _facts(expected, scenario, "idle_timeout")
    exp = expected["scenarios"][scenario]
    for role, w in _conns_of(expected, scenario):
        c = _json_conn_by_src(doc, role)[w["src"]]
        proxy = c["dst"] if role == "client" else c["src"]
        end = fact["client_leg_end" if role == "client" else "server_leg_end"]
        assert w["tcp"]["first_end"] == {
            "kind": end,
            "from": "server" if role == "client" else "client",
        }
        assert c["close"] == {"client_to_server": None, "server_to_client": None}
        if end == "fin":
            assert c["tcp"]["first_fin_from"] == proxy
        else:
            assert c["tcp"]["rst_from"] == [proxy]
            assert c["tcp"]["first_fin_from"] == _fin_endpoint(w, w["tcp"]["first_fin_from"])
    for p in exp["pairs"]:
        pr = _pairs_by_client(a)[p["client"]]
        ev = tables.ladder_table(a.correlation, pr["pair_id"])
        t_end = {}
        for leg, direction, kind in (
            ("client", "server_to_client", fact["client_leg_end"]),
            ("server", "client_to_server", fact["server_leg_end"]),
        ):
            hit = ev[(ev["leg"] == leg) & (ev["direction"] == direction) & (ev["kind"] == kind)]
            assert len(hit) == 1, (leg, kind)
            t_end[leg] = hit["ts"].iloc[0]
            cid = pr[f"{leg}_connection_id"]
            last = a.messages[a.messages["connection_id"] == cid]["ts"].max()
            idle = (t_end[leg] - last).total_seconds()
            assert abs(idle - fact["idle_before_end_s"][f"{leg}_leg"]) <= 0.0005 + 1e-6, leg
            assert abs(idle - fact["idle_timeout_s"]) < 0.5
        gap_ms = (t_end["client"] - t_end["server"]).total_seconds() * 1e3
        assert ("server" if gap_ms > 0 else "client") == fact["first_leg_closed"]
        assert abs(abs(gap_ms) - fact["gap_ms"]) <= 0.0005 + 1e-6


@pytest.mark.parametrize("scenario", _with_fact("idle_timeout"))
def test_idle_timeout_finding(scenario, expected, analysis_of):
    """must_find idle_timeout as a finding: proxy_idle_timeout on the pair, with the
    silence the captures show."""
    a = analysis_of(scenario)
    (fact,) = _facts(expected, scenario, "idle_timeout")
    f = a.findings[a.findings["code"] == "proxy_idle_timeout"]
    assert len(f) == len(a.pairs) == 1
    pr = a.pairs.iloc[0]
    assert set(f["connections"].iloc[0].split(", ")) == {
        pr["client_connection_id"],
        pr["server_connection_id"],
    }
    m = re.search(r"after (\d+(?:\.\d+)?) s of silence", f["detail"].iloc[0])
    assert m, f["detail"].iloc[0]
    assert abs(float(m.group(1)) - fact["idle_before_end_s"]["client_leg"]) <= 0.0015


@pytest.mark.parametrize(
    "scenario",
    _scenarios_where(lambda s: all(c["status"] == 101 for c in _all_conns(s))),
)
def test_close_story_events(scenario, expected, analysis_of):
    """The close story of each leg (JSON connections[].close_story): its events
    (close frames with their code, FIN and RST each way, in time order) are
    expected.json's close_events; the idle time before the first one."""
    doc = report.to_json(analysis_of(scenario))
    for role, w in _conns_of(expected, scenario):
        story = _json_conn_by_src(doc, role)[w["src"]]["close_story"]
        got = [(e["kind"], e["from"], e.get("code")) for e in story["events"]]
        assert got == [(e["kind"], e["from"], e["code"]) for e in w["close_events"]], w["src"]
        if w["tcp"]["idle_before_end_s"] and w["tcp"]["idle_before_end_s"] > 1:
            assert (
                abs(story["idle_before_close_ms"] / 1e3 - w["tcp"]["idle_before_end_s"]) <= 0.0015
            )


KNOWN_FACTS = {
    "pairs",
    "request_header_changes",
    "handshake_refused",
    "idle_timeout",
    "backend_reset",
    "deflate",
    "fragmented_messages",
    "large_messages",
    "k8s_exec",
    "close_handshake",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_must_find_facts(scenario, expected, analysis_of):
    """Every must_find fact is a known one; the generic ones hold here (the others have
    their tests above: idle_timeout, deflate, fragmented_messages, large_messages,
    k8s_exec; backend_reset and handshake_refused: test_server_reset_relayed_as_fin and
    test_dropped_upgrade_diagnosis)."""
    a = analysis_of(scenario)
    facts = expected["scenarios"][scenario]["must_find"]
    assert {f["fact"] for f in facts} <= KNOWN_FACTS
    assert all(isinstance(f["text"], str) and f["text"] for f in facts)
    for f in facts:
        if f["fact"] == "pairs":
            assert len(a.pairs) == f["pairs"]
            with_tokens = a.pairs["evidence"].str.contains("message_digests").sum()
            assert with_tokens >= f["matched_by_unique_token"]
        elif f["fact"] == "request_header_changes":
            hc = a.header_changes[a.header_changes["message"] == "request"]
            for change in ("added", "removed", "modified"):
                names = hc[hc["change"] == change]
                for _, pr in a.pairs.iterrows():
                    mine = names[names["pair_id"] == pr["pair_id"]]["name"].tolist()
                    assert mine == f[change], (pr["pair_id"], change)
        elif f["fact"] == "close_handshake":
            for role in ("client", "server"):
                for w in expected["scenarios"][scenario]["captures"][role]["connections"]:
                    row = _conn_by_src(a.connections, role)[w["src"]]
                    assert row["first_close_from"] == f"{f['first_close_from']}_to_" + (
                        "server" if f["first_close_from"] == "client" else "client"
                    )
                    for d in DIRS:
                        assert _na(row[f"close_code_{d}"]) == f["codes"][d][0]
