"""WebSocket without a captured handshake: the structural detector
(wsanalyze.detect) and its use by the pipeline for connections whose start was not
captured, or whose port is in ``decode_as`` (``--decode-as PORT``)."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import dpkt
import pytest
from conftest import capture_paths
from craft import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    TcpFlow,
    close_payload,
    http_request,
    http_response,
    t_us,
    write_pcap,
    ws_frame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsanalyze
from wsanalyze import detect as det
from wsanalyze import pipeline
from wsanalyze.cli import main
from wsanalyze.detect import ALIGN_WINDOW, DETECT_SCORE, MAX_RUN, MIN_RUN, Run, detect, scan
from wsanalyze.model import Direction
from wsanalyze.pipeline import analyze_capture

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
KEY = b"\x37\xfa\x21\x3d"


def masked(opcode: int, payload: bytes, **kw) -> bytes:
    return ws_frame(opcode, payload, mask_key=KEY, **kw)


def raw_frame(b0: int, payload: bytes, *, mask: bool = False, form: int | None = None) -> bytes:
    """A frame with byte 0 as given (any FIN/RSV/opcode) and the length encoded in
    ``form`` (0: 7-bit, 2: 16-bit, 8: 64-bit; minimal by default)."""
    n = len(payload)
    if form is None:
        form = 0 if n < 126 else 2 if n < 65536 else 8
    mbit = 0x80 if mask else 0
    if form == 0:
        head = bytes([b0, mbit | n])
    elif form == 2:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return head + payload


CLIENT_STREAM = (
    masked(TEXT, b"hello")
    + masked(TEXT, b"x" * 300)
    + masked(PING, b"p")
    + masked(BINARY, bytes(range(256)) * 3)
)
SERVER_STREAM = (
    ws_frame(TEXT, b"hello")
    + ws_frame(TEXT, b"y" * 300)
    + ws_frame(PONG, b"p")
    + ws_frame(BINARY, bytes(range(256)) * 3)
)


# --- the detector: one direction --------------------------------------------------------


def test_masked_and_unmasked_runs() -> None:
    run, alive = scan(CLIENT_STREAM)
    assert alive and run == Run(offset=0, frames=4, masked=True, exact=True)
    run, _ = scan(SERVER_STREAM)
    assert run == Run(offset=0, frames=4, masked=False, exact=True)


def test_run_of_three_needs_no_exact_end_but_shorter_runs_do() -> None:
    three = ws_frame(TEXT, b"a") + ws_frame(TEXT, b"b") + ws_frame(TEXT, b"c" * 50)
    run, _ = scan(three[:-10])  # the data ends inside the third frame
    assert run is not None and run.frames == MIN_RUN and not run.exact
    run, _ = scan(three[:7])  # two frames and the first byte of the third header
    assert run is None
    run, _ = scan(three[:3] + ws_frame(TEXT, b"b" * 50)[:20])  # the second frame cut
    assert run is None
    one = ws_frame(TEXT, b"just one")
    run, _ = scan(one)
    assert run == Run(0, 1, False, True)


def test_mixed_masking_in_one_direction_breaks_the_run() -> None:
    data = ws_frame(TEXT, b"a") + masked(TEXT, b"b") + ws_frame(TEXT, b"c")
    run, _ = scan(data)
    assert run is None or run.offset != 0


@pytest.mark.parametrize(
    "bad",
    [
        raw_frame(0x09, b"ping"),  # control frame with FIN clear (§5.5)
        raw_frame(0x89, b"p" * 126, form=2),  # control frame longer than 125 (§5.5)
        raw_frame(0xA1, b"rsv2"),  # RSV2 (§5.2)
        raw_frame(0x91, b"rsv3"),  # RSV3
        raw_frame(0xC0, b"rsv1 on a continuation"),  # RFC 7692 §6
        raw_frame(0xC9, b"rsv1 on a ping"),
        raw_frame(0x83, b"reserved opcode"),
        raw_frame(0x8B, b"reserved control opcode"),
        raw_frame(0x81, b"short", form=2),  # non-minimal 16-bit length
        raw_frame(0x81, b"short", form=8),  # non-minimal 64-bit length
        bytes([0x01, 0x00]),  # an empty non-final fragment
    ],
)
def test_implausible_headers_break_a_run(bad: bytes) -> None:
    good = ws_frame(TEXT, b"one") + ws_frame(TEXT, b"two")
    run, _ = scan(good + bad + good)
    assert run is None or run.offset >= len(good) + 2  # never a run through ``bad``
    assert scan(good)[0] == Run(0, 2, False, True)


def test_rsv1_on_a_data_frame_is_plausible() -> None:
    data = raw_frame(0xC1, b"deflated?") + raw_frame(0xC2, b"\x00" * 10) + ws_frame(TEXT, b"t")
    assert scan(data)[0] == Run(0, 3, False, True)


def test_fragmentation_must_be_consistent() -> None:
    frag = raw_frame(0x01, b"part1") + raw_frame(0x00, b"part2") + raw_frame(0x80, b"end")
    assert scan(frag)[0] == Run(0, 3, False, True)
    # A control frame may interleave; a run may begin inside a message.
    mid = raw_frame(0x00, b"tail") + raw_frame(0x89, b"") + raw_frame(0x80, b"end")
    assert scan(mid)[0] == Run(0, 3, False, True)
    # A new text frame inside a fragmented message, a continuation after a final one.
    for bad in (
        raw_frame(0x01, b"part1") + raw_frame(0x81, b"new") + raw_frame(0x81, b"x"),
        raw_frame(0x81, b"done") + raw_frame(0x80, b"cont") + raw_frame(0x81, b"x"),
    ):
        run, _ = scan(bad)
        assert run is None or run.offset > 0


def test_capture_starting_mid_frame_is_aligned_on_the_next_frame() -> None:
    rng = random.Random(6455)
    tails = [b"ly the end of a JSON document", b"}" * 200, rng.randbytes(1500), rng.randbytes(3000)]
    for tail in tails:
        run, _ = scan(tail + SERVER_STREAM)
        assert run is not None and run.offset == len(tail), tail[:20]
        run, _ = scan(tail + CLIENT_STREAM)
        assert run is not None and run.offset == len(tail) and run.masked


def test_alignment_is_only_tried_in_the_window() -> None:
    filler = b"." * ALIGN_WINDOW
    run, alive = scan(filler + SERVER_STREAM)
    assert run is None and not alive


def test_a_long_run_qualifies_whatever_follows() -> None:
    data = ws_frame(TEXT, b"m") * (MAX_RUN + 5) + b"\xff\xff garbage"
    assert scan(data)[0] == Run(0, MAX_RUN, False, False)


def test_work_is_bounded_on_hostile_input() -> None:
    # Every even offset starts a chain of plausible headers that breaks just before
    # MAX_RUN: the scan is ALIGN_WINDOW x MAX_RUN header checks, not quadratic.
    unit = ws_frame(BINARY, b"") * (MAX_RUN - 2) + b"\xff\xff"
    data = unit * (det.SCAN_LIMIT // len(unit) + 1)
    run, _ = scan(data)
    assert run is None or run.frames >= MIN_RUN


# --- the detector: the connection ---------------------------------------------------------


def test_masking_asymmetry_names_the_client() -> None:
    d = detect(CLIENT_STREAM, SERVER_STREAM)
    assert d.websocket is True and d.client == 0 and d.score >= DETECT_SCORE
    d = detect(SERVER_STREAM, CLIENT_STREAM)  # the roles were guessed the wrong way
    assert d.websocket is True and d.client == 1


def test_one_direction_alone_needs_more_frames() -> None:
    few = ws_frame(TEXT, b"a") * 4
    assert detect(few, b"").websocket is None
    assert detect(few, b"", final=True).websocket is False
    many = ws_frame(TEXT, b"a") * 8
    d = detect(b"", many)
    assert d.websocket is True and d.client == 0  # unmasked frames: the other side is the client


def test_same_masking_both_ways_names_no_client() -> None:
    d = detect(SERVER_STREAM * 2, SERVER_STREAM * 2)
    assert d.websocket is True and d.client is None


def test_undecided_until_final() -> None:
    d = detect(masked(TEXT, b"hi"), ws_frame(TEXT, b"hi"))
    assert d.websocket is None and d.client == 0
    assert detect(masked(TEXT, b"hi"), ws_frame(TEXT, b"hi"), final=True).websocket is False


def test_nothing_left_to_try_is_a_no_before_final() -> None:
    text = b"The quick brown fox jumps over the lazy dog. " * 200
    assert detect(text, text).websocket is False
    # A silent direction keeps nothing open: a download of random bytes is given up.
    noise = random.Random(443).randbytes(80_000)
    assert detect(b"", noise).websocket is False
    assert detect(b"", ws_frame(TEXT, b"a")).websocket is None


def _tls_records(rng: random.Random, n: int) -> bytes:
    out = b""
    for _ in range(n):
        body = rng.randbytes(rng.randint(20, 16 * 1024))
        out += bytes([0x17, 0x03, 0x03]) + struct.pack("!H", len(body)) + body
    return out


def _h2_frames(rng: random.Random, n: int) -> bytes:
    out = b""
    for _ in range(n):
        ftype = rng.choice((0x0, 0x1, 0x4, 0x6, 0x8))
        body = rng.randbytes(rng.choice((0, 4, 8, rng.randint(1, 3000))))
        out += struct.pack("!I", len(body))[1:] + bytes([ftype, rng.randint(0, 0x25)])
        out += struct.pack("!I", rng.choice((0, 1, 3, 5)))
        out += body
    return out


def test_tls_and_http2_are_not_frames() -> None:
    rng = random.Random(8446)
    for _ in range(300):
        a, b = _tls_records(rng, 6), _tls_records(rng, 6)
        for cut in (0, rng.randint(1, 2000)):
            assert not detect(a[cut:], b[cut:], final=True).websocket
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        a, b = preface + _h2_frames(rng, 20), _h2_frames(rng, 20)
        for cut in (0, rng.randint(1, 500)):
            assert not detect(a[cut:], b[cut:], final=True).websocket


def test_text_protocols_are_not_frames() -> None:
    rng = random.Random(7)
    words = ["*3", "$3", "SET", "GET", "key", "A", "B~x", "AB", '{"a": 1}', "\r\n"]
    for _ in range(200):
        a = "".join(rng.choice(words) for _ in range(rng.randint(1, 600))).encode()
        b = "".join(rng.choice(words) for _ in range(rng.randint(1, 600))).encode()
        assert not detect(a, b, final=True).websocket


def test_random_binary_is_not_detected() -> None:
    """10,000 pairs of random byte strings of 1-2,000 bytes: no detection (the module
    docstring gives the reasoning; 20,000 were measured)."""
    rng = random.Random(20240601)
    hits = 0
    for _ in range(10_000):
        a = rng.randbytes(rng.randint(1, 2000))
        b = rng.randbytes(rng.randint(1, 2000))
        hits += bool(detect(a, b, final=True).websocket)
        hits += bool(detect(a, b"", final=True).websocket)
    assert hits == 0


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=2000), st.binary(max_size=2000))
def test_random_binary_is_not_detected_property(a: bytes, b: bytes) -> None:
    assert not detect(a, b, final=True).websocket


# --- the pipeline: crafted connections ---------------------------------------------------

CLI = ("192.0.2.10", 40000)
SRV = ("192.0.2.1", 8080)


def _accounted(conn) -> None:
    for d in Direction:
        acct = conn.bytes[d]
        assert acct.decoded + acct.undecodable + acct.other == conn.tcp.bytes[d], (d, acct)


def _codes(conn) -> list[str]:
    return [f.code for f in conn.findings]


def _exchange(f: TcpFlow, t: int, n: int = 3) -> int:
    for i in range(n):
        f.send("c", masked(TEXT, f"question {i}".encode()), t_us(t))
        f.send("s", ws_frame(TEXT, f"answer {i}".encode()), t_us(t + 100))
        t += 1000
    f.send("c", masked(CLOSE, close_payload(1000)), t_us(t))
    f.send("s", ws_frame(CLOSE, close_payload(1000)), t_us(t + 100))
    f.fin("s", t_us(t + 200))
    f.fin("c", t_us(t + 300))
    return t + 300


def test_mid_stream_websocket_is_decoded(tmp_path: Path) -> None:
    f = TcpFlow(CLI, SRV)  # no open(): the capture starts after the upgrade
    _exchange(f, 100)
    cap = analyze_capture(write_pcap(tmp_path / "m.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert conn.protocol == "websocket" and conn.handshake is None
    assert _codes(conn).count("handshake_not_captured") == 1
    assert "tcp_connection_mid_stream" in _codes(conn)
    assert str(conn.tcp.client) == "192.0.2.10:40000"
    texts = [(m.direction, m.preview) for m in conn.messages if m.opcode == TEXT]
    assert texts[:2] == [(C2S, b"question 0"), (S2C, b"answer 0")]
    assert len(conn.messages) == 8 and len(cap.frames) == 8
    assert all(conn.bytes[d].undecodable == 0 for d in Direction)
    _accounted(conn)
    # Only the frame findings of a clean stream: no masking or RSV complaints.
    assert set(_codes(conn)) == {"tcp_connection_mid_stream", "handshake_not_captured"}


def test_masking_fixes_roles_guessed_wrongly(tmp_path: Path) -> None:
    """The client uses the lower port, so the port guess calls it the server: the
    side that masks its frames is the client (RFC 6455 §5.1)."""
    f = TcpFlow(("192.0.2.10", 1000), ("192.0.2.1", 50000))
    _exchange(f, 100)
    cap = analyze_capture(write_pcap(tmp_path / "r.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert str(conn.tcp.client) == "192.0.2.10:1000"
    assert conn.frame_counts[(int(C2S), TEXT)] == 3
    assert all(
        m.direction == (C2S if m.preview.startswith(b"question") else S2C)
        for m in conn.messages
        if m.opcode == TEXT
    )
    codes = _codes(conn)
    assert "ws_unmasked_client_frame" not in codes and "ws_masked_server_frame" not in codes
    assert codes.count("handshake_not_captured") == 1
    _accounted(conn)


def test_capture_starting_mid_frame(tmp_path: Path) -> None:
    """The first captured client segment is the middle of a 3000-byte frame: its
    bytes are undecodable, every frame after it is decoded."""
    big = masked(BINARY, random.Random(3).randbytes(3000))
    f = TcpFlow(CLI, SRV)
    f.send("c", big + masked(TEXT, b"after the big one"), t_us(100))
    f.send("s", ws_frame(TEXT, b"ack"), t_us(200))
    _exchange(f, 1000)
    packets = f.packets[1:]  # the segment with the big frame's header was not captured
    cap = analyze_capture(write_pcap(tmp_path / "f.pcap", packets), strict=True)
    (conn,) = cap.connections
    assert conn.protocol == "websocket"
    first_c2s = next(m for m in conn.messages if m.direction == C2S)
    assert first_c2s.preview == b"after the big one"
    assert conn.bytes[C2S].undecodable == len(big) - f.mss
    _accounted(conn)


def test_rsv1_frames_without_handshake_are_accepted(tmp_path: Path) -> None:
    """permessage-deflate may be on (the handshake is unknown): RSV1 on data frames is
    no violation, the messages are marked compressed."""

    def rsv1(frame: bytes) -> bytes:
        return bytes([frame[0] | 0x40]) + frame[1:]

    f = TcpFlow(CLI, SRV)
    for i in range(3):
        t = 1000 * i
        f.send("c", rsv1(masked(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00" + bytes([i]))), t_us(t))
        f.send("s", rsv1(ws_frame(TEXT, b"\xf2\xc8\x07\x00" + bytes([i]))), t_us(t + 500))
    cap = analyze_capture(write_pcap(tmp_path / "z.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert conn.protocol == "websocket" and len(conn.messages) == 6
    assert all(m.compressed for m in conn.messages)
    assert "ws_reserved_bits" not in _codes(conn)
    _accounted(conn)


def test_gap_while_deciding_is_resynchronised(tmp_path: Path, monkeypatch) -> None:
    """The server's second frame is lost while the evidence is still short of a
    decision: the detector looks at the bytes before the gap, the decoder
    resynchronises after it, every other frame is decoded."""
    verdicts: list[bool | None] = []

    def spy(a: bytes, b: bytes, *, final: bool = False):
        r = detect(a, b, final=final)
        verdicts.append(r.websocket)
        return r

    monkeypatch.setattr(pipeline, "detect", spy)
    f = TcpFlow(CLI, SRV)
    _exchange(f, 100, n=6)
    assert bytes(f.packets[3]["TCP"].payload) == ws_frame(TEXT, b"answer 1")
    cap = analyze_capture(write_pcap(tmp_path / "g.pcap", f.packets[:3] + f.packets[4:]))
    (conn,) = cap.connections
    assert verdicts[-1] is True and verdicts.count(True) == 1
    assert conn.bytes[S2C].gap == len(ws_frame(TEXT, b"answer 1"))
    answers = [m.preview for m in conn.messages if m.direction == S2C and m.opcode == TEXT]
    assert answers == [f"answer {i}".encode() for i in (0, 2, 3, 4, 5)]
    assert len(conn.messages) == 13
    assert "ws_resync" in _codes(conn) and "tcp_gap" in _codes(conn)
    _accounted(conn)


def _other_bytes(monkeypatch) -> list:
    """Spy on the sinks: every connection analysed, to read its byte account."""
    seen: list = []
    real = pipeline._ConnectionSink.__init__

    def init(self, analysis, *args, **kw) -> None:
        seen.append(analysis)
        real(self, analysis, *args, **kw)

    monkeypatch.setattr(pipeline._ConnectionSink, "__init__", init)
    return seen


def test_mid_stream_other_protocol_stays_other(tmp_path: Path, monkeypatch) -> None:
    seen = _other_bytes(monkeypatch)
    rng = random.Random(22)
    f = TcpFlow(CLI, ("192.0.2.1", 5432))
    for i in range(40):  # 40 x 3000 random bytes each way
        f.send("c", rng.randbytes(3000), t_us(100 + 1000 * i))
        f.send("s", rng.randbytes(3000), t_us(600 + 1000 * i))
    cap = analyze_capture(write_pcap(tmp_path / "o.pcap", f.packets), strict=True)
    assert cap.connections == [] and cap.other_connections == 1
    (conn,) = seen
    assert [conn.bytes[d].other for d in Direction] == [120_000, 120_000]
    _accounted(conn)


def test_probe_gives_up_at_its_limit(tmp_path: Path, monkeypatch) -> None:
    """One frame announcing 10 MB keeps a run possible; at the hold limit the
    evidence (one frame) is not enough: the bytes are another protocol's."""
    seen = _other_bytes(monkeypatch)
    monkeypatch.setattr(pipeline, "PROBE_LIMIT", 16 * 1024)
    calls: list[tuple[int, bool]] = []

    def spy(a: bytes, b: bytes, *, final: bool = False):
        calls.append((len(a) + len(b), final))
        return detect(a, b, final=final)

    monkeypatch.setattr(pipeline, "detect", spy)
    f = TcpFlow(CLI, SRV)
    f.send("s", bytes([0x82, 127]) + struct.pack("!Q", 10**7), t_us(0))
    f.send("s", random.Random(1).randbytes(40_000), t_us(100))
    cap = analyze_capture(write_pcap(tmp_path / "l.pcap", f.packets), strict=True)
    assert cap.connections == []
    assert calls[-1][1] and 16 * 1024 <= calls[-1][0] < 40_010  # decided at the limit
    (conn,) = seen
    assert conn.bytes[S2C].other == conn.tcp.bytes[S2C] == 40_010
    _accounted(conn)


def test_mid_stream_plain_http_is_still_http(tmp_path: Path) -> None:
    f = TcpFlow(CLI, SRV)
    f.send("c", http_request("/x", [("Host", "y")]), t_us(100))
    f.send("s", http_response(200, "OK", [("Content-Length", "2")], b"ok"), t_us(200))
    cap = analyze_capture(write_pcap(tmp_path / "h.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert conn.protocol == "http" and [r.status for r in conn.responses] == [200]
    assert "handshake_not_captured" not in _codes(conn)


def _syn_then_frames(tmp_path: Path, name: str, prefix: bytes = b"") -> Path:
    f = TcpFlow(CLI, ("192.0.2.1", 9000))
    f.open(t_us(0))
    if prefix:
        f.send("c", prefix, t_us(50))
    f.send("c", masked(TEXT, b"no handshake"), t_us(100))
    f.send("s", ws_frame(TEXT, b"none at all"), t_us(200))
    f.send("c", masked(CLOSE, close_payload(1000)), t_us(300))
    f.send("s", ws_frame(CLOSE, close_payload(1000)), t_us(400))
    return write_pcap(tmp_path / name, f.packets)


def test_decode_as_forces_websocket_on_a_connection_with_a_syn(tmp_path: Path) -> None:
    path = _syn_then_frames(tmp_path, "d.pcap")
    plain = analyze_capture(path, strict=True)
    assert plain.connections == [] and plain.other_connections == 1  # as before
    cap = analyze_capture(path, strict=True, decode_as=frozenset({9000}))
    (conn,) = cap.connections
    assert _codes(conn) == ["handshake_not_captured"]
    assert "decode_as port 9000" in conn.findings[0].detail
    assert [m.preview for m in conn.messages if m.opcode == TEXT] == [
        b"no handshake",
        b"none at all",
    ]
    _accounted(conn)


def test_decode_as_skips_a_garbled_handshake(tmp_path: Path) -> None:
    garbled = b"\x00\x13GXT /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    path = _syn_then_frames(tmp_path, "g.pcap", prefix=garbled)
    cap = analyze_capture(path, strict=True, decode_as=frozenset({9000}))
    (conn,) = cap.connections
    assert conn.bytes[C2S].undecodable == len(garbled)
    assert [m.preview for m in conn.messages if m.opcode == TEXT] == [
        b"no handshake",
        b"none at all",
    ]
    assert _codes(conn) == ["handshake_not_captured"]
    _accounted(conn)


def test_decode_as_leaves_a_captured_handshake_alone(tmp_path: Path) -> None:
    client, server = capture_paths("nginx-ok")
    plain = wsanalyze.analyze(client, server, strict=True)
    forced = wsanalyze.analyze(client, server, strict=True, decode_as=[80, 8080])
    assert len(forced.frames) == len(plain.frames)
    assert sorted(forced.findings["code"]) == sorted(plain.findings["code"])
    assert len(forced.pairs) == len(plain.pairs) == 3


# --- end to end: the real nginx capture without its handshakes ---------------------------


def _records(data: bytes):
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos, n = 24, 0
    while pos + 16 <= len(data):
        incl = struct.unpack_from(order + "I", data, pos + 8)[0]
        n += 1
        yield n, data[pos : pos + 16 + incl], data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl


def _key(conn) -> frozenset:
    t = conn.tcp
    return frozenset(((t.client.ip, t.client.port), (t.server.ip, t.server.port)))


def _drop_before_first_frame(src: Path, dst: Path, capture) -> int:
    """Copy the classic pcap ``src`` to ``dst`` without the packets of each WebSocket
    connection that precede the one carrying its first frame."""
    first: dict[str, int] = {}
    for cid, pk in zip(capture.frames.connection, capture.frames.first_packet, strict=True):
        first[cid] = min(first.get(cid, pk), pk)
    cut = {_key(c): first[c.id] for c in capture.connections if c.id in first}
    return _drop_before(src, dst, cut)


def _drop_before(src: Path, dst: Path, cut: dict[frozenset, int]) -> int:
    """Copy the classic pcap ``src`` to ``dst`` (records byte for byte, timestamps
    kept) without the packets numbered below ``cut[connection]`` of the connections
    in ``cut`` (keyed by their two endpoints); returns how many were dropped."""
    data = src.read_bytes()
    out = bytearray(data[:24])
    dropped = 0
    for n, record, frame in _records(data):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
            tcp = ip.data
            key = frozenset(((bytes(ip.src), tcp.sport), (bytes(ip.dst), tcp.dport)))
            if n < cut.get(key, 0):
                dropped += 1
                continue
        out += record
    dst.write_bytes(bytes(out))
    return dropped


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """nginx-ok with every packet before each connection's first frame dropped,
    analysed, and the full analysis."""
    tmp = tmp_path_factory.mktemp("truncated")
    client, server = capture_paths("nginx-ok")
    full = wsanalyze.analyze(client, server, strict=True)
    c, s = tmp / "client.pcap", tmp / "server.pcap"
    assert _drop_before_first_frame(client, c, full.client) > 0
    assert _drop_before_first_frame(server, s, full.server) > 0
    return full, wsanalyze.analyze(c, s, strict=True), (c, s)


def test_truncated_real_capture_decodes_every_frame(truncated) -> None:
    full, cut, _ = truncated
    for whole, part in ((full.client, cut.client), (full.server, cut.server)):
        assert len(part.connections) == len(whole.connections) == 3
        for a, b in zip(whole.connections, part.connections, strict=True):
            assert b.handshake is None and b.protocol == "websocket"
            # Nothing before the first frame was dropped: every frame is still there.
            assert b.frame_counts == a.frame_counts
            assert [(m.direction, m.opcode, m.digest) for m in b.messages] == [
                (m.direction, m.opcode, m.digest) for m in a.messages
            ]
            assert [f.code for f in b.findings].count("handshake_not_captured") == 1
            assert str(b.tcp.client) == str(a.tcp.client)
            for d in Direction:
                acct = b.bytes[d]
                assert acct.undecodable == 0 and acct.other == 0
                assert acct.decoded == b.tcp.bytes[d]
        assert len(part.frames) == len(whole.frames)


def test_truncated_real_capture_reports(truncated, check_report) -> None:
    from wsanalyze import report

    _, cut, _ = truncated
    doc = report.to_json(cut)
    check_report(doc)
    assert sum(f["code"] == "handshake_not_captured" for f in doc["findings"]) == 6
    assert report.render_html(cut) and report.render_markdown(cut)
    assert "handshake_not_captured" in report.summary_text(cut)


def test_real_capture_starting_inside_a_large_frame(tmp_path: Path) -> None:
    """nginx-ok's client leg, the connection of the 70,000-byte message cut a few
    packets before that frame ends: the rest of the frame is undecodable, every later
    frame is decoded, the other connections are untouched."""
    client, _ = capture_paths("nginx-ok")
    full = wsanalyze.analyze(client, strict=True)
    f = full.frames
    big = f[(f["payload_bytes"] == 70000) & (f["direction"] == "client_to_server")].iloc[0]
    conn = full.client.connection(big["connection_id"])
    cut_at = int(big["last_packet"]) - 2
    path = tmp_path / "mid.pcap"
    assert _drop_before(client, path, {_key(conn): cut_at}) > 0
    a = wsanalyze.analyze(path, strict=True)
    (mid,) = [c for c in a.client.connections if c.handshake is None]
    assert _key(mid) == _key(conn) and str(mid.tcp.client) == str(conn.tcp.client)
    assert [x.code for x in mid.findings].count("handshake_not_captured") == 1
    assert 0 < mid.bytes[C2S].undecodable < ALIGN_WINDOW
    _accounted(mid)
    g = a.frames
    ours = g[g["connection_id"] == mid.id]
    theirs = f[(f["connection_id"] == conn.id) & (f["first_packet"] >= cut_at)]
    cols = ["direction", "opcode", "payload_bytes", "masked"]
    assert sorted(map(tuple, ours[cols].astype(str).values)) == sorted(
        map(tuple, theirs[cols].astype(str).values)
    )
    assert len(g) == len(f) - len(f[f["connection_id"] == conn.id]) + len(theirs)
    # The connection found without its handshake carries WebSocket too.
    assert sum(c.websocket for c in a.client.connections) == 3


def test_truncated_real_capture_still_pairs(truncated) -> None:
    full, cut, _ = truncated
    assert len(cut.pairs) == 3
    want = set(zip(full.pairs["client"], full.pairs["server"], strict=True))
    assert set(zip(cut.pairs["client"], cut.pairs["server"], strict=True)) == want


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "65536", "http", "80.5", ""])
def test_cli_rejects_a_bad_port(capsys, bad: str) -> None:
    client, _ = capture_paths("nginx-ok")
    code = main(["pcap", str(client), "--decode-as", bad])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("wsanalyze:")
    assert "Traceback" not in err + out


def test_cli_help_documents_decode_as(capsys) -> None:
    assert main(["pcap", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--decode-as PORT" in out and "--decode-as 8080" in out


def test_cli_decode_as(tmp_path: Path, capsys) -> None:
    path = _syn_then_frames(tmp_path, "d.pcap")
    out_json = tmp_path / "r.json"
    code = main(["pcap", str(path), "--decode-as", "9000", "--decode-as", "9001", "-q"])
    assert code == 0
    code = main(["pcap", str(path), "--decode-as", "9000", "--json", str(out_json), "-q"])
    assert code == 0
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert [f["code"] for f in doc["findings"]] == ["handshake_not_captured"]
    code = main(["pcap", str(path), "--json", str(out_json), "-q"])
    assert code == 0
    assert json.loads(out_json.read_text(encoding="utf-8"))["findings"] == []
    capsys.readouterr()


def test_api_rejects_a_bad_port() -> None:
    client, _ = capture_paths("nginx-ok")
    with pytest.raises(ValueError):
        wsanalyze.analyze(client, decode_as=[0])
