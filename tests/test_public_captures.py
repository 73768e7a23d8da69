"""Cross-check against real captures nobody on this project wrote.

The captures come from the Zeek and Suricata test suites and Malcolm; they live in
``shared/public-captures/`` beside the repository (never copied into it; see its
SOURCES.md) or wherever ``WSANALYZE_PUBLIC_CAPTURES`` points. For every file:

1. the analysis runs with ``strict=True`` and, without it, makes no
   ``internal_error`` finding;
2. our WebSocket frames, per connection and direction, are the multiset of
   (opcode, payload length, FIN, MASK) that tshark's WebSocket dissector finds,
   except for the explicit entries of :data:`KNOWN_DIFFERENCES`;
3. a few facts that SOURCES.md states about the file hold;
4. every byte TCP delivered is accounted for (decoded, undecodable or other; gaps
   separately), and TCP's per-direction extent agrees with tshark's sequence numbers.

tshark notes (checked with ``tshark -V`` on zeek/oversized-close-frame.pcapng and
zeek/jupyter-websocket.pcap): ``websocket.payload_length`` is the 7-bit field
(126 / 127 announce an extended length), the length itself is
``websocket.payload_length_ext_16`` / ``_ext_64``, present only for the frames that
have one; with several frames in one packet every field prints its values
comma-separated in frame order, so the i-th frame announcing 126 takes the i-th
``ext_16`` value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import wsanalyze
from wsanalyze.api import Analysis

ENV_VAR = "WSANALYZE_PUBLIC_CAPTURES"
CAPTURES = Path(
    os.environ.get(ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "public-captures"
)
TSHARK = shutil.which("tshark")

OPCODES = {"continuation": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}
OPCODES |= {f"reserved_{v:#x}": v for v in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)}

# filename (relative to CAPTURES) -> (why, verified how; frames only we decode;
# frames only tshark decodes). Frames are keyed as in _our_frames/_as_ours:
# ("client ip:port > server ip:port", direction, opcode, payload length, fin, mask).
# Every file currently matches tshark 4.0 exactly, so the table is empty; an entry
# asserts the exact difference, it never skips the comparison.
KNOWN_DIFFERENCES: dict[str, tuple[str, Counter, Counter]] = {}


def _capture_files() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    files = {p for pattern in ("*.pcap", "*.pcapng") for p in CAPTURES.rglob(pattern)}
    return sorted(files)


FILES = _capture_files()


def _rel(path: Path) -> str:
    return path.relative_to(CAPTURES).as_posix()


def _file_params() -> list:
    if not FILES:
        return [
            pytest.param(
                None,
                id="no-public-captures",
                marks=pytest.mark.skip(
                    reason=f"public captures not found at {CAPTURES} (clone shared/ beside "
                    f"the repository or set {ENV_VAR})"
                ),
            )
        ]
    return [pytest.param(p, id=_rel(p)) for p in FILES]


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


# --- cached analyses and tshark output ------------------------------------------


@pytest.fixture(scope="module")
def analysis() -> Callable[[Path], Analysis]:
    cache: dict[Path, Analysis] = {}

    def get(path: Path) -> Analysis:
        if path not in cache:
            cache[path] = wsanalyze.analyze(path)
        return cache[path]

    return get


def _tshark(path: Path, display_filter: str, fields: tuple[str, ...], ports: set[int]) -> str:
    assert TSHARK is not None
    cmd = [TSHARK, "-r", str(path), "-o", "tcp.reassemble_out_of_order:TRUE"]
    # tshark dissects WebSocket only after an HTTP Upgrade on a port it decodes as
    # HTTP; its TCP heuristics find most, "decode as" makes it independent of them.
    for port in sorted(ports):
        cmd += ["-d", f"tcp.port=={port},http"]
    cmd += ["-Y", display_filter, "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}"
    return proc.stdout


def _server_ports(a: Analysis) -> set[int]:
    return {int(s.rsplit(":", 1)[1]) for s in a.connections["server"]}


def _last(value: str) -> str:
    """The innermost of several comma-separated values (IP in IP: the inner header)."""
    return value.rsplit(",", 1)[-1]


WS_FIELDS = (
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "websocket.opcode",
    "websocket.payload_length",
    "websocket.payload_length_ext_16",
    "websocket.payload_length_ext_64",
    "websocket.fin",
    "websocket.mask",
)

TCP_FIELDS = (
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "tcp.seq",
    "tcp.len",
)


def _flag(v: str) -> bool:
    assert v in ("0", "1", "True", "False"), v
    return v in ("1", "True")


def _split(v: str) -> list[str]:
    return v.split(",") if v else []


def _endpoints(cols: list[str]) -> tuple[str, str]:
    src = f"{_last(cols[1] or cols[2])}:{cols[3]}"
    dst = f"{_last(cols[4] or cols[5])}:{cols[6]}"
    return src, dst


def _tshark_ws_frames(path: Path, a: Analysis) -> list[tuple[int, str, str, int, int, bool, bool]]:
    """One tuple per WebSocket frame tshark dissects: (stream, src, dst, opcode,
    payload length, fin, mask)."""
    out = []
    for line in _tshark(path, "websocket", WS_FIELDS, _server_ports(a)).splitlines():
        cols = line.split("\t")
        assert len(cols) == len(WS_FIELDS), line
        src, dst = _endpoints(cols)
        ops, lens, ext16, ext64, fins, masks = (_split(c) for c in cols[7:13])
        assert len(ops) == len(lens) == len(fins) == len(masks), line
        assert len(ext16) == lens.count("126") and len(ext64) == lens.count("127"), line
        e16, e64 = iter(ext16), iter(ext64)
        for op, ln, fin, mask in zip(ops, lens, fins, masks, strict=True):
            n = int(ln)
            if n == 126:
                n = int(next(e16))
            elif n == 127:
                n = int(next(e64))
            out.append((int(cols[0]), src, dst, int(op), n, _flag(fin), _flag(mask)))
    return out


def _tshark_tcp_extent(path: Path, a: Analysis) -> dict[tuple[str, str], int]:
    """Per (src, dst): bytes between the first and the last payload byte tshark saw
    (relative sequence numbers, retransmissions and reordering absorbed)."""
    lo: dict[tuple[str, str], int] = {}
    hi: dict[tuple[str, str], int] = {}
    for line in _tshark(path, "tcp.len > 0", TCP_FIELDS, set()).splitlines():
        cols = line.split("\t")
        key = _endpoints(cols)
        seq, length = int(cols[7]), int(cols[8])
        lo[key] = min(lo.get(key, seq), seq)
        hi[key] = max(hi.get(key, 0), seq + length)
    return {k: hi[k] - lo[k] for k in lo}


@pytest.fixture(scope="module")
def tshark_frames(analysis) -> Callable[[Path], list]:
    cache: dict[Path, list] = {}

    def get(path: Path) -> list:
        if path not in cache:
            cache[path] = _tshark_ws_frames(path, analysis(path))
        return cache[path]

    return get


# --- 1. no exception, no internal_error ------------------------------------------


@pytest.mark.parametrize("path", _file_params())
def test_analyses_without_internal_error(path: Path, analysis) -> None:
    strict = wsanalyze.analyze(path, strict=True)
    assert strict.client.packets > 0
    a = analysis(path)
    codes = set(a.findings["code"])
    assert "internal_error" not in codes, a.findings[a.findings["code"] == "internal_error"]
    assert len(a.connections) > 0  # every file here carries HTTP/WebSocket
    assert len(strict.frames) == len(a.frames)


# --- 2./3. frames equal tshark's ---------------------------------------------------


def _connection_labels(a: Analysis) -> dict[str, str]:
    return {
        r.connection_id: f"{r.client} > {r.server}"
        for r in a.connections[["connection_id", "client", "server"]].itertuples()
    }


def _our_frames(a: Analysis) -> Counter:
    labels = _connection_labels(a)
    f = a.frames
    return Counter(
        zip(
            (labels[c] for c in f["connection_id"]),
            f["direction"].astype(str),
            (OPCODES[o] for o in f["opcode"].astype(str)),
            f["payload_bytes"].astype(int),
            f["fin"].astype(bool),
            f["masked"].astype(bool),
            strict=True,
        )
    )


def _as_ours(a: Analysis, frames: list) -> Counter:
    """tshark's frames keyed like ours: each tshark stream is mapped to our
    connection by its endpoints, the direction by which endpoint is our client."""
    by_endpoints: dict[frozenset[str], list[tuple[str, str]]] = {}
    for r in a.connections[["client", "server"]].itertuples():
        by_endpoints.setdefault(frozenset((r.client, r.server)), []).append((r.client, r.server))
    streams: dict[int, frozenset[str]] = {}
    out: Counter = Counter()
    for stream, src, dst, op, n, fin, mask in frames:
        ends = frozenset((src, dst))
        assert streams.setdefault(stream, ends) == ends
        assert len(by_endpoints.get(ends, [])) == 1, (
            f"tshark stream {stream} ({src} > {dst}) is not exactly one of our connections"
        )
        client, server = by_endpoints[ends][0]
        direction = "client_to_server" if src == client else "server_to_client"
        out[(f"{client} > {server}", direction, op, n, fin, mask)] += 1
    return out


@needs_tshark
@pytest.mark.parametrize("path", _file_params())
def test_frames_match_tshark(path: Path, analysis, tshark_frames) -> None:
    a = analysis(path)
    ours = _our_frames(a)
    theirs = _as_ours(a, tshark_frames(path))
    only_ours, only_tshark = ours - theirs, theirs - ours
    known = KNOWN_DIFFERENCES.get(_rel(path))
    if known is None:
        assert only_ours == Counter() and only_tshark == Counter(), (
            f"frames only we decode: {dict(only_ours)}; only tshark: {dict(only_tshark)}"
        )
        assert sum(ours.values()) == len(a.frames)
    else:
        why, expect_ours, expect_tshark = known
        assert (only_ours, only_tshark) == (expect_ours, expect_tshark), why


def test_known_differences_name_existing_files() -> None:
    assert all(isinstance(v[0], str) and v[0] for v in KNOWN_DIFFERENCES.values())
    if FILES:
        names = {_rel(p) for p in FILES}
        assert set(KNOWN_DIFFERENCES) <= names


# --- 4. facts from SOURCES.md -----------------------------------------------------


def _codes(a: Analysis) -> Counter:
    return Counter(a.findings["code"])


def _only_connection(a: Analysis):
    assert len(a.client.connections) == 1
    return a.client.connections[0]


def _opcodes(a: Analysis, direction: str | None = None) -> list[str]:
    f = a.frames if direction is None else a.frames[a.frames["direction"] == direction]
    return list(f["opcode"].astype(str))


def _close_codes(a: Analysis) -> list[tuple[str, int]]:
    m = a.messages[a.messages["opcode"] == "close"]
    return list(zip(m["direction"].astype(str), m["close_code"], strict=True))


def _wrong_accept(a: Analysis) -> None:
    assert _codes(a)["handshake_wrong_accept"] == 1
    assert _opcodes(a) == ["ping"]  # decoding goes on: "ping only"


def _oversized_close(a: Analysis) -> None:
    assert _codes(a)["ws_control_frame_too_long"] == 1
    close = a.messages[a.messages["opcode"] == "close"]
    assert list(close["payload_bytes"]) == [258] and list(close["close_code"]) == [1000]


def _no_response(a: Analysis) -> None:
    c = _only_connection(a)
    assert a.client.packets == 5
    assert len(c.requests) == 1 and c.requests[0].target == b"/s/ws" and not c.responses
    assert not c.websocket and len(a.frames) == 0
    assert _codes(a)["http_no_response"] == 1


def _sll_ping(a: Analysis) -> None:
    assert a.client.link_types == (113,)  # LINKTYPE_LINUX_SLL
    assert a.connections["server"].tolist() == ["127.0.0.1:10301"]
    assert set(_opcodes(a)) == {"text", "ping", "pong"}


def _deflate(a: Analysis) -> None:
    assert a.connections["extensions"].tolist() == ["permessage-deflate"]
    f = a.frames
    assert len(f) == 10 and f["rsv1"].all() and (f["opcode"] == "text").all()
    assert not any(code.startswith("ws_rsv") for code in _codes(a))  # RSV1 negotiated


def _fragmented_reply(a: Analysis) -> None:
    # SOURCES.md says "101 reply split across TCP segments"; the bytes say otherwise
    # (tshark -x: packet 6 carries the whole 101 head, CRLFCRLF included). The Zeek
    # test (websocket/fragmented-http-reply.zeek) means the HTTP reply tunnelled
    # inside WebSocket, sent as a binary message in five fragments (2,0,0,0,0).
    c = _only_connection(a)
    assert c.websocket and c.handshake.response.status == 101
    assert c.handshake.response.packets == (6, 6)
    assert a.connections["subprotocol"].tolist() == ["v1"]
    binary = a.messages[a.messages["opcode"] == "binary"]
    assert list(binary["frame_count"]) == [1, 5]
    reply = binary[binary["direction"] == "server_to_client"]
    assert reply["preview"].iloc[0].startswith(b"HTTP/1.1 200 OK".hex())
    assert _opcodes(a, "server_to_client") == [
        "ping", "binary", "continuation", "continuation", "continuation", "continuation", "close",
    ]  # fmt: skip
    assert sorted(_close_codes(a)) == [("client_to_server", 1000), ("server_to_client", 1000)]


def _synchrophasor(a: Analysis) -> None:
    ws = a.connections[a.connections["websocket"]]
    assert len(ws) == 93 and set(ws["server"]) == {"192.168.0.21:8765"}
    assert len(a.frames) == 277
    upgrade = {c.handshake.request.get(b"Upgrade") for c in a.client.connections if c.websocket}
    assert upgrade == {b"WebSocket"}  # capitalised as sent, still accepted


def _broker(a: Analysis) -> None:
    assert a.connections["target"].tolist() == ["/v1/messages/json"]
    assert a.connections["extensions"].isna().all()  # offered, not accepted
    assert Counter(_opcodes(a)) == {"text": 8, "close": 1}
    assert _close_codes(a) == [("client_to_server", 1000)]


def _jupyter(a: Analysis) -> None:
    assert a.connections["subprotocol"].tolist() == ["v1.kernel.websocket.jupyter.org"]
    assert Counter(_opcodes(a)) == {"binary": 12, "close": 2}
    # nine binary frames arrive coalesced in one segment
    s2c = a.frames[(a.frames["direction"] == "server_to_client") & (a.frames["opcode"] == "binary")]
    assert s2c["last_packet"].value_counts().max() >= 9


def _too_big(a: Analysis) -> None:
    assert _close_codes(a) == [("client_to_server", 1009), ("server_to_client", 1000)]
    close = a.messages[a.messages["opcode"] == "close"]
    assert close["close_reason"].iloc[0] == "over size limit (4 > 2 bytes)"
    assert "ping" in _opcodes(a)


def _reply_ping(a: Analysis) -> None:
    assert Counter(_opcodes(a)) == {"text": 2, "ping": 1, "pong": 1, "close": 2}
    assert sorted(_close_codes(a)) == [("client_to_server", 1000), ("server_to_client", 1000)]


def _two_fragments(a: Analysis) -> None:
    binary = a.messages[a.messages["opcode"] == "binary"]
    assert 2 in set(binary["frame_count"])
    assert {"ping", "pong", "continuation"} <= set(_opcodes(a))
    assert sorted(_close_codes(a)) == [("client_to_server", 1000), ("server_to_client", 1000)]


def _wstunnel(binary: int, pings: int, connections: int) -> Callable[[Analysis], None]:
    def check(a: Analysis) -> None:
        assert a.connections["websocket"].sum() == connections
        ops = Counter(_opcodes(a))
        assert ops["binary"] == binary and ops["ping"] == pings
        assert set(a.connections["subprotocol"]) == {"v1"}

    return check


def _basic(a: Analysis) -> None:
    assert a.connections["target"].tolist() == ["/service"]
    assert a.connections["server"].str.endswith(":80").all()
    assert a.connections["extensions"].isna().all()  # offered, not accepted
    assert Counter(_opcodes(a)) == {"text": 17}
    assert a.frames.loc[a.frames["direction"] == "client_to_server", "masked"].all()


def _control_frag(a: Analysis) -> None:
    assert _opcodes(a, "client_to_server") == ["text", "ping", "continuation"]
    assert _opcodes(a, "server_to_client") == ["pong"]
    text = a.messages[a.messages["opcode"] == "text"]
    assert list(text["frame_count"]) == [2] and text["complete"].all()
    assert not any(code.startswith("ws_fragment") for code in _codes(a))  # legal interleave


def _malcolm_single(a: Analysis) -> None:
    assert a.connections["server"].tolist() == ["192.168.0.21:8765"]
    assert _opcodes(a) == ["text"]


FACTS: dict[str, Callable[[Analysis], None]] = {
    "zeek/wrong-accept-header.pcap": _wrong_accept,
    "zeek/oversized-close-frame.pcapng": _oversized_close,
    "suricata-verify/http-request-header-multi/input.pcap": _no_response,
    "suricata-verify/websocket-ping/input.pcap": _sll_ping,
    "suricata-verify/websocket-compressed/example_websocket.pcap": _deflate,
    "zeek/fragmented-http-reply.pcap": _fragmented_reply,
    "Malcolm-Test-Artifacts/Synchrophasor.pcap": _synchrophasor,
    "zeek/broker-websocket.pcap": _broker,
    "zeek/jupyter-websocket.pcap": _jupyter,
    "zeek/message-too-big-status.pcap": _too_big,
    "zeek/reply-ping-coalesced.pcap": _reply_ping,
    "zeek/reply-ping-separate.pcap": _reply_ping,
    "zeek/two-binary-fragments.pcap": _two_fragments,
    "zeek/wstunnel-http.pcap": _wstunnel(binary=2, pings=0, connections=1),
    "zeek/wstunnel-https.pcap": _wstunnel(binary=36, pings=0, connections=1),
    "zeek/wstunnel-ssh.pcap": _wstunnel(binary=144, pings=7, connections=2),
    "suricata-verify/websocket/basic_websockets.pcap": _basic,
    "suricata-verify/websocket-control-frag/input.pcap": _control_frag,
    "Malcolm-Test-Artifacts/HTTP_websocket.pcap": _malcolm_single,
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_facts_from_sources(name: str, analysis) -> None:
    path = CAPTURES / name
    if not path.is_file():
        pytest.skip(f"{path} not found (public captures absent; see {ENV_VAR})")
    FACTS[name](analysis(path))


def test_every_capture_has_facts() -> None:
    if not FILES:
        pytest.skip(f"public captures not found at {CAPTURES}")
    assert {_rel(p) for p in FILES} <= set(FACTS)


# --- 5. every byte accounted ------------------------------------------------------


@pytest.mark.parametrize("path", _file_params())
def test_every_byte_accounted(path: Path, analysis) -> None:
    a = analysis(path)
    for c in a.client.connections:
        for d in (0, 1):
            acct = c.bytes[d]
            assert acct.decoded + acct.undecodable + acct.other == c.tcp.bytes[d], (c.id, d, acct)
            assert acct.gap == c.tcp.gap_bytes[d], (c.id, d, acct)


@needs_tshark
@pytest.mark.parametrize("path", _file_params())
def test_tcp_bytes_match_tshark(path: Path, analysis) -> None:
    """What TCP delivered (plus gaps) spans exactly tshark's sequence-number extent."""
    a = analysis(path)
    extent = _tshark_tcp_extent(path, a)
    for c in a.client.connections:
        client, server = str(c.tcp.client), str(c.tcp.server)
        for d, key in enumerate(((client, server), (server, client))):
            ours = c.tcp.bytes[d] + c.tcp.gap_bytes[d]
            assert ours == extent.get(key, 0), (c.id, d)
