"""Cross-check of the committed real-proxy corpus (captures/<scenario>/{client,server}.pcap)
against tshark's WebSocket dissector.

1. For every capture of every scenario in captures/expected.json, our WebSocket frames
   are the multiset of tshark's, keyed by (connection, direction, opcode, payload
   length, FIN, RSV1, MASK): fragmentation (continuation frames, control frames
   between fragments), 16- and 64-bit lengths, RSV1 of permessage-deflate.
2. Where permessage-deflate was negotiated, tshark decompresses (Wireshark's
   dissector keeps the LZ77 window across messages unless *_no_context_takeover was
   negotiated): its text of each unfragmented text message and its payload
   (``data.data``) of each unfragmented binary message equal our message previews
   (the first 256 bytes; text as UTF-8, binary as hex of the first 64 bytes).

tshark field notes (verified with ``tshark -V`` on captures/nginx-deflate/client.pcap,
Wireshark 4.0.17): ``websocket.rsv`` is the 3-bit RSV field in hex (``0x04`` = RSV1,
shown as "Per-Message Compressed: True"); ``websocket.payload.text`` of a compressed
text frame is the decompressed text ("Payload / Text: ..."), the decompressed binary
payload goes to the data dissector ("Decompressed payload (4096 bytes)" / ``data.data``);
``websocket.payload_length`` is only the 7-bit field (126/127 announce
``websocket.payload_length_ext_16`` / ``_ext_64``); several frames in one packet print
their values comma-separated in frame order. The helpers for all this come from
tests/test_public_captures.py. Texts are read with ``-T json`` (a text may hold commas).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import CAPTURES, _expected, capture_paths, scenario_names
from test_public_captures import (
    TSHARK,
    WS_FIELDS,
    _endpoints,
    _flag,
    _server_ports,
    _split,
    _tshark,
    needs_tshark,
)

import wsanalyze
from wsanalyze.api import Analysis

# The public-captures fields plus RSV, in the same order (mask last).
FIELDS = (*WS_FIELDS[:-1], "websocket.rsv", WS_FIELDS[-1])
OPCODE_NAMES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


def _capture_params() -> list:
    out = []
    for scenario in scenario_names():
        for role, path in zip(("client", "server"), capture_paths(scenario), strict=True):
            out.append(pytest.param(path, id=f"{scenario}/{role}"))
    return out


def _deflate_params() -> list:
    out = []
    for scenario, s in sorted(_expected()["scenarios"].items()):
        if any(f["fact"] == "deflate" for f in s.get("must_find", [])):
            for role, path in zip(("client", "server"), capture_paths(scenario), strict=True):
                out.append(pytest.param(path, id=f"{scenario}/{role}"))
    return out


_ANALYSES: dict[Path, Analysis] = {}


def _analysis(path: Path) -> Analysis:
    if path not in _ANALYSES:
        _ANALYSES[path] = wsanalyze.analyze(path, strict=True)
    return _ANALYSES[path]


def _labels(a: Analysis) -> dict[frozenset[str], tuple[str, str]]:
    out: dict[frozenset[str], tuple[str, str]] = {}
    for r in a.connections[["client", "server"]].itertuples():
        ends = frozenset((r.client, r.server))
        assert ends not in out, f"two connections between {r.client} and {r.server}"
        out[ends] = (r.client, r.server)
    return out


def _tshark_frames(path: Path, a: Analysis) -> Counter:
    """tshark's frames keyed like ours: (connection, direction, opcode, payload
    length, fin, rsv1, mask)."""
    by_ends = _labels(a)
    out: Counter = Counter()
    for line in _tshark(path, "websocket", FIELDS, _server_ports(a)).splitlines():
        cols = line.split("\t")
        assert len(cols) == len(FIELDS), line
        src, dst = _endpoints(cols)
        ops, lens, ext16, ext64, fins, rsvs, masks = (_split(c) for c in cols[7:14])
        assert len(ops) == len(lens) == len(fins) == len(rsvs) == len(masks), line
        assert len(ext16) == lens.count("126") and len(ext64) == lens.count("127"), line
        e16, e64 = iter(ext16), iter(ext64)
        client, server = by_ends[frozenset((src, dst))]
        direction = "client_to_server" if src == client else "server_to_client"
        for op, ln, fin, rsv, mask in zip(ops, lens, fins, rsvs, masks, strict=True):
            n = int(ln)
            if n == 126:
                n = int(next(e16))
            elif n == 127:
                n = int(next(e64))
            key = (
                f"{client} > {server}",
                direction,
                OPCODE_NAMES.get(int(op), f"reserved_{int(op):#x}"),
                n,
                _flag(fin),
                bool(int(rsv, 16) & 0x4),
                _flag(mask),
            )
            out[key] += 1
    return out


def _our_frames(a: Analysis) -> Counter:
    labels = {
        r.connection_id: f"{r.client} > {r.server}"
        for r in a.connections[["connection_id", "client", "server"]].itertuples()
    }
    f = a.frames
    return Counter(
        zip(
            (labels[c] for c in f["connection_id"]),
            f["direction"].astype(str),
            f["opcode"].astype(str),
            f["payload_bytes"].astype(int),
            f["fin"].astype(bool),
            f["rsv1"].astype(bool),
            f["masked"].astype(bool),
            strict=True,
        )
    )


@needs_tshark
@pytest.mark.parametrize("path", _capture_params())
def test_frames_match_tshark(path: Path) -> None:
    a = _analysis(path)
    ours, theirs = _our_frames(a), _tshark_frames(path, a)
    only_ours, only_tshark = ours - theirs, theirs - ours
    assert only_ours == Counter() and only_tshark == Counter(), (
        f"frames only we decode: {dict(only_ours)}; only tshark: {dict(only_tshark)}"
    )
    assert sum(ours.values()) == len(a.frames)
    # refused handshakes (nginx-no-upgrade*) carry no frame; every WebSocket here does
    assert (len(a.frames) > 0) == bool(a.connections["websocket"].any())


def test_every_scenario_directory_is_in_expected_json() -> None:
    """No capture in captures/ escapes the cross-check."""
    dirs = {p.parent.name for p in CAPTURES.glob("*/client.pcap")}
    assert dirs == set(scenario_names())


# --- decompressed payloads ----------------------------------------------------------


def _tshark_payloads(path: Path, a: Analysis) -> dict[tuple[str, str], dict[str, list]]:
    """Per (connection label, direction): tshark's texts of unfragmented text messages
    and payloads of unfragmented binary messages, in stream order (decompressed when
    permessage-deflate was negotiated)."""
    by_ends = _labels(a)
    assert TSHARK is not None
    cmd = [TSHARK, "-r", str(path), "-o", "tcp.reassemble_out_of_order:TRUE"]
    for port in sorted(_server_ports(a)):
        cmd += ["-d", f"tcp.port=={port},http"]
    cmd += ["-Y", "websocket", "-T", "json"]
    for field in (
        "ip.src",
        "tcp.srcport",
        "ip.dst",
        "tcp.dstport",
        "websocket.payload.text",
        "data.data",
    ):
        cmd += ["-e", field]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[tuple[str, str], dict[str, list]] = {}
    for row in json.loads(proc.stdout or "[]"):
        layer = row["_source"]["layers"]
        src = f"{layer['ip.src'][0]}:{layer['tcp.srcport'][0]}"
        dst = f"{layer['ip.dst'][0]}:{layer['tcp.dstport'][0]}"
        client, server = by_ends[frozenset((src, dst))]
        d = "client_to_server" if src == client else "server_to_client"
        slot = out.setdefault((f"{client} > {server}", d), {"text": [], "binary": []})
        slot["text"] += layer.get("websocket.payload.text", [])
        slot["binary"] += [bytes.fromhex(h.replace(":", "")) for h in layer.get("data.data", [])]
    return out


@needs_tshark
@pytest.mark.parametrize("path", _deflate_params())
def test_decompressed_payloads_match_tshark(path: Path) -> None:
    a = _analysis(path)
    theirs = _tshark_payloads(path, a)
    labels = {
        r.connection_id: f"{r.client} > {r.server}"
        for r in a.connections[["connection_id", "client", "server"]].itertuples()
    }
    m = a.messages
    compared = 0
    for cid, label in labels.items():
        for d in ("client_to_server", "server_to_client"):
            mine = m[(m["connection_id"] == cid) & (m["direction"] == d) & (m["frame_count"] == 1)]
            mine = mine.sort_values("message_index")
            got = theirs.get((label, d), {"text": [], "binary": []})
            texts = mine[mine["opcode"] == "text"]["preview"].tolist()
            assert texts == [
                t.encode("utf-8")[:256].decode("utf-8", "replace") for t in got["text"]
            ], (cid, d)
            binaries = mine[mine["opcode"] == "binary"]["preview"].tolist()
            assert binaries == [b[:64].hex() for b in got["binary"]], (cid, d)
            compared += len(texts) + len(binaries)
            # and the sizes: tshark's payloads are the decompressed ones
            sizes = mine[mine["opcode"] == "text"]["payload_bytes"].tolist()
            assert sizes == [len(t.encode("utf-8")) for t in got["text"]], (cid, d)
    assert compared > 0
