"""Tests for wsanalyze.frames: the sans-IO RFC 6455 §5 frame decoder."""

from __future__ import annotations

import dataclasses
import os
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsanalyze.catalogue import CATALOGUE
from wsanalyze.frames import (
    FINDING_LIMIT,
    RESYNC_WINDOW,
    FrameDecoder,
    PayloadChunk,
    fast_constructor,
    unmask,
)
from wsanalyze.model import Direction, Finding, Frame, Message

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def xor_ref(data: bytes, key: bytes) -> bytes:
    """Reference masking, byte by byte (RFC 6455 §5.3)."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def encode(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    form: int | None = None,
    declared: int | None = None,
) -> bytes:
    """One frame; ``form`` forces the length encoding (0: 7-bit, 2: 16-bit, 8: 64-bit);
    ``declared`` overrides the length written in the header."""
    n = len(payload) if declared is None else declared
    if form is None:
        form = 0 if n < 126 else 2 if n < 65536 else 8
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if key is not None else 0
    if form == 0:
        head = bytes([b0, mbit | n])
    elif form == 2:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if key is not None:
        return head + key + xor_ref(payload, key)
    return head + payload


def split(items: list) -> tuple[list[Frame], list[Finding], list[PayloadChunk]]:
    frames = [x for x in items if isinstance(x, Frame)]
    findings = [x for x in items if isinstance(x, Finding)]
    chunks = [x for x in items if isinstance(x, PayloadChunk)]
    assert len(frames) + len(findings) + len(chunks) == len(items)
    return frames, findings, chunks


def run(
    direction: Direction,
    pieces: list[bytes],
    *,
    eof: bool = True,
    **kwargs,
) -> tuple[list, FrameDecoder]:
    """Feed ``pieces`` (piece k as packet k+1, ts 1000*(k+1)) then eof."""
    dec = FrameDecoder(direction, **kwargs)
    out: list = []
    for k, piece in enumerate(pieces):
        out += dec.feed(piece, 1000 * (k + 1), k + 1)
        assert dec.decoded_bytes + dec.undecodable_bytes + dec.buffered_bytes == dec.fed_bytes
    if eof:
        out += dec.eof(10**9)
        assert dec.buffered_bytes == 0
        assert dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes
    return out, dec


def codes(items: list) -> list[str]:
    return [x.code for x in items if isinstance(x, Finding)]


def shape(f: Frame) -> tuple:
    """A frame without its packet numbers and times (which depend on the chunking)."""
    return (
        f.direction,
        f.offset,
        f.header_len,
        f.fin,
        f.rsv1,
        f.rsv2,
        f.rsv3,
        f.opcode,
        f.masked,
        f.masking_key,
        f.payload_len,
        f.payload,
        f.complete,
    )


# -- RFC 6455 §5.7 examples ------------------------------------------------------


RFC_EXAMPLES = [
    # (direction, bytes, [(fin, opcode, masked, payload)])
    (S2C, bytes.fromhex("810548656c6c6f"), [(True, 1, False, b"Hello")]),
    (C2S, bytes.fromhex("818537fa213d7f9f4d5158"), [(True, 1, True, b"Hello")]),
    (
        S2C,
        bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"),
        [(False, 1, False, b"Hel"), (True, 0, False, b"lo")],
    ),
    (S2C, bytes.fromhex("890548656c6c6f"), [(True, 9, False, b"Hello")]),
    (C2S, bytes.fromhex("8a8537fa213d7f9f4d5158"), [(True, 10, True, b"Hello")]),
    (S2C, bytes.fromhex("827e0100") + bytes(range(256)), [(True, 2, False, bytes(range(256)))]),
    (
        S2C,
        bytes.fromhex("827f0000000000010000") + bytes(65536),
        [(True, 2, False, bytes(65536))],
    ),
]


@pytest.mark.parametrize(("direction", "wire", "expected"), RFC_EXAMPLES)
def test_rfc6455_examples(direction, wire, expected):
    out, dec = run(direction, [wire])
    frames, findings, _ = split(out)
    assert findings == []
    assert [(f.fin, f.opcode, f.masked, f.payload) for f in frames] == expected
    assert all(f.complete for f in frames)
    assert frames[0].offset == 0
    # offsets chain: each frame starts where the previous ended
    for a, b in zip(frames, frames[1:], strict=False):
        assert b.offset == a.offset + a.header_len + a.payload_len
    assert dec.decoded_bytes == len(wire)


def test_rfc_masked_hello_fields():
    out, _ = run(C2S, [bytes.fromhex("818537fa213d7f9f4d5158")])
    (f,) = out
    assert f.header_len == 6
    assert f.masking_key == KEY
    assert f.payload_len == 5
    assert (f.rsv1, f.rsv2, f.rsv3) == (False, False, False)


# -- length encodings ------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_length_encodings(n, masked):
    direction = C2S if masked else S2C
    payload = os.urandom(n)
    wire = encode(2, payload, key=KEY if masked else None)
    out, _ = run(direction, [wire])
    (f,) = out
    expected_hlen = (2 if n < 126 else 4 if n < 65536 else 10) + (4 if masked else 0)
    assert f.header_len == expected_hlen
    assert f.payload_len == n
    assert f.payload == payload


def test_frames_from_websockets_library():
    """An independent encoder (the websockets library, random masks) round-trips."""
    from websockets.frames import Frame as WsFrame
    from websockets.frames import Opcode as WsOpcode

    rng = random.Random(7)
    sent = []
    wire = b""
    for _ in range(50):
        n = rng.choice([0, 3, 125, 126, 300, 65535, 65536, 70000])
        data = rng.randbytes(n)
        op = rng.choice([WsOpcode.TEXT, WsOpcode.BINARY])
        fin = rng.random() < 0.5
        sent.append((int(op), fin, data))
        wire += WsFrame(op, data, fin=fin).serialize(mask=True)
    pieces = []
    i = 0
    while i < len(wire):
        k = rng.randint(1, 3000)
        pieces.append(wire[i : i + k])
        i += k
    out, dec = run(C2S, pieces)
    frames, findings, _ = split(out)
    assert findings == []
    assert [(f.opcode, f.fin, f.payload) for f in frames] == sent
    assert dec.decoded_bytes == len(wire)


# -- violations ------------------------------------------------------------------


VIOLATIONS = [
    ("ws_unmasked_client_frame", C2S, encode(1, b"hi"), {}),
    ("ws_masked_server_frame", S2C, encode(1, b"hi", key=KEY), {}),
    ("ws_reserved_opcode", S2C, encode(0x3, b"x"), {}),
    ("ws_reserved_opcode", S2C, encode(0xB, b"x"), {}),
    ("ws_reserved_bits", S2C, encode(1, b"x", rsv=0x4), {}),
    ("ws_reserved_bits", S2C, encode(1, b"x", rsv=0x2), {"rsv_allowed": 0x4}),
    ("ws_reserved_bits", S2C, encode(1, b"x", rsv=0x1), {}),
    ("ws_control_frame_too_long", S2C, encode(9, bytes(126)), {}),
    ("ws_control_frame_fragmented", S2C, encode(9, b"p", fin=False), {}),
    ("ws_non_minimal_length", S2C, encode(2, b"abc", form=2), {}),
    ("ws_non_minimal_length", S2C, encode(2, bytes(200), form=8), {}),
    ("ws_non_minimal_length", S2C, encode(2, b"abc", form=8), {}),
]


@pytest.mark.parametrize(("code", "direction", "wire", "kwargs"), VIOLATIONS)
def test_violation_is_reported_and_frame_still_decoded(code, direction, wire, kwargs):
    trailer = encode(2, b"next", key=KEY if direction == C2S else None)
    out, dec = run(direction, [wire + trailer], **kwargs)
    frames, findings, _ = split(out)
    assert codes(findings) == [code]
    assert findings[0].direction == direction
    assert findings[0].offset == 0
    assert findings[0].packets == (1,)
    assert CATALOGUE[code].severity == findings[0].severity
    assert len(frames) == 2
    assert frames[1].payload == b"next"
    assert dec.decoded_bytes == len(wire) + len(trailer)
    # the finding comes before its frame
    assert out.index(findings[0]) < out.index(frames[0])


def test_rsv1_allowed_with_permessage_deflate():
    out, _ = run(S2C, [encode(1, b"x", rsv=0x4)], rsv_allowed=0x4)
    frames, findings, _ = split(out)
    assert findings == []
    assert frames[0].rsv1 is True


def test_length_msb_set():
    wire = bytes([0x82, 0x7F]) + (1 << 63 | 5).to_bytes(8, "big") + b"abcde"
    out, dec = run(S2C, [wire])
    frames, findings, _ = split(out)
    assert "ws_length_msb_set" in codes(findings)
    assert "ws_frame_truncated" in codes(findings)
    assert frames[0].payload_len == 1 << 63 | 5
    assert frames[0].complete is False
    assert frames[0].payload is None
    assert dec.decoded_bytes == len(wire)


def test_several_violations_on_one_frame():
    # masked server ping, fragmented, RSV3, too long
    wire = encode(9, bytes(130), fin=False, rsv=1, key=KEY)
    out, _ = run(S2C, [wire])
    assert sorted(codes(out)) == sorted(
        [
            "ws_masked_server_frame",
            "ws_reserved_bits",
            "ws_control_frame_too_long",
            "ws_control_frame_fragmented",
        ]
    )
    assert len(split(out)[0]) == 1


def test_findings_of_one_code_are_aggregated():
    n = FINDING_LIMIT + 15
    wire = encode(1, b"x") * n  # unmasked client frames
    out, _ = run(C2S, [wire])
    frames, findings, _ = split(out)
    assert len(frames) == n
    assert codes(findings).count("ws_unmasked_client_frame") == FINDING_LIMIT
    summary = [f for f in findings if f.code == "ws_findings_suppressed"]
    assert len(summary) == 1
    assert "ws_unmasked_client_frame" in summary[0].detail
    assert "suppressed=15" in summary[0].detail
    assert out[-1] is summary[0]


# -- packets, offsets, times ------------------------------------------------------


def test_packets_and_offsets_across_feeds():
    a = encode(1, b"A" * 10)
    b = encode(2, b"B" * 300)
    c = encode(9, b"")
    wire = a + b + c
    # packet 1: a + first 3 bytes of b's header; packet 2: rest of header and 100
    # payload bytes; packet 3: the rest
    p1, p2, p3 = wire[: len(a) + 3], wire[len(a) + 3 : len(a) + 104], wire[len(a) + 104 :]
    out, _ = run(S2C, [p1, p2, p3], start_offset=129)
    fa, fb, fc = out
    assert (fa.offset, fa.first_packet, fa.last_packet) == (129, 1, 1)
    assert (fb.offset, fb.first_packet, fb.last_packet) == (129 + len(a), 1, 3)
    assert (fb.first_ts_ns, fb.ts_ns) == (1000, 3000)
    assert fb.payload == b"B" * 300
    assert (fc.offset, fc.first_packet, fc.last_packet) == (129 + len(a) + len(b), 3, 3)


def test_header_split_in_every_position():
    wire = encode(2, os.urandom(70000), key=KEY)
    for cut in range(1, 15):
        out, _ = run(C2S, [wire[:cut], wire[cut:]])
        (f,) = out
        assert f.first_packet == 1
        assert f.last_packet == 2
        assert f.payload == xor_ref(wire[14:], KEY)


# -- streaming and memory ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_huge_declared_length_allocates_nothing(stream):
    header = bytes([0x82, 0xFF]) + (2**63 - 1).to_bytes(8, "big") + KEY
    dec = FrameDecoder(C2S, stream_payloads=stream)
    out = dec.feed(header, 1, 1)
    assert codes(out) == ["ws_frame_not_buffered"]
    piece = os.urandom(64 * 1024)
    tracemalloc.start()
    try:
        for k in range(64):  # 4 MiB
            for item in dec.feed(piece, k, k + 2):
                assert isinstance(item, PayloadChunk)
                assert item.position == k * len(piece)
                assert len(item.data) == len(piece)
            assert dec.buffered_bytes == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(piece)  # nothing retained beyond one piece in flight
    end = dec.eof(99)
    frames, findings, _ = split(end)
    assert codes(findings) == ["ws_frame_truncated"]
    (f,) = frames
    assert f.payload is None and f.complete is False
    assert f.payload_len == 2**63 - 1
    assert dec.decoded_bytes == len(header) + 64 * len(piece)


def test_unbuffered_frame_streams_unmasked_chunks_before_the_frame():
    payload = os.urandom(5000)
    wire = encode(2, payload, key=KEY) + encode(1, b"after", key=KEY)
    pieces = [wire[i : i + 777] for i in range(0, len(wire), 777)]
    out, _ = run(C2S, pieces, max_buffer=1000, stream_payloads=True)
    frames, findings, chunks = split(out)
    assert codes(findings) == ["ws_frame_not_buffered"]
    assert b"".join(c.data for c in chunks) == payload
    assert [c.position for c in chunks] == sorted(c.position for c in chunks)
    assert all(c.frame_offset == 0 and c.opcode == 2 and c.fin for c in chunks)
    assert frames[0].payload is None and frames[0].complete
    assert out.index(chunks[-1]) < out.index(frames[0])
    assert frames[1].payload == b"after"


def test_no_chunks_without_stream_payloads():
    wire = encode(2, bytes(5000))
    out, _ = run(S2C, [wire], max_buffer=1000)
    frames, findings, chunks = split(out)
    assert chunks == []
    assert codes(findings) == ["ws_frame_not_buffered"]
    assert frames[0].payload is None and frames[0].complete


def test_big_frame_in_many_segments():
    payload = os.urandom(2 * 1024 * 1024)
    wire = encode(2, payload, key=KEY)
    pieces = [wire[i : i + 1460] for i in range(0, len(wire), 1460)]
    out, dec = run(C2S, pieces)
    (f,) = out
    assert f.payload == payload
    assert (f.first_packet, f.last_packet) == (1, len(pieces))
    assert dec.buffered_bytes == 0


# -- gaps and resynchronisation ----------------------------------------------------


def test_gap_inside_payload_then_next_frame():
    a = encode(2, bytes(range(100)))
    b = encode(1, b"next")
    dec = FrameDecoder(S2C)
    out = dec.feed(a[:50], 1, 1)
    out += dec.gap(30, 2, 2)
    out += dec.feed(a[80:] + b, 3, 3)
    out += dec.eof(4)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_frame_truncated"]
    fa, fb = frames
    assert (fa.complete, fa.payload, fa.payload_len) == (False, None, 100)
    assert (fa.first_packet, fa.last_packet) == (1, 3)
    assert fb.payload == b"next" and fb.complete and fb.offset == len(a)
    assert dec.gap_bytes == 30
    assert dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes == len(a) + len(b) - 30


def test_gap_covering_the_rest_of_a_payload_exactly():
    a = encode(2, bytes(100))
    b = encode(1, b"next")
    dec = FrameDecoder(S2C)
    out = dec.feed(a[:10], 1, 1) + dec.gap(len(a) - 10, 2, 2) + dec.feed(b, 3, 3) + dec.eof(4)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_frame_truncated"]
    assert [f.complete for f in frames] == [False, True]
    assert frames[1].payload == b"next"


def test_gap_inside_a_buffered_frame_streams_what_was_seen():
    a = encode(1, b"0123456789" * 10, key=KEY)
    dec = FrameDecoder(C2S, stream_payloads=True)
    out = dec.feed(a[:26], 1, 1) + dec.gap(10, 2, 2) + dec.feed(a[36:], 3, 3)
    frames, findings, chunks = split(out)
    assert [c.data for c in chunks] == [b"0123456789" * 2]
    assert frames[0].payload is None and not frames[0].complete
    assert codes(findings) == ["ws_frame_truncated"]


def good_frames(n: int, direction: Direction = S2C) -> bytes:
    key = KEY if direction == C2S else None
    return b"".join(encode(2, bytes([i]) * (i % 40), key=key) for i in range(n))


def test_resync_after_gap_in_header():
    before = encode(1, b"before")
    cut = encode(2, bytes(50))
    after = good_frames(5)
    garbage = b"\xff" * 37  # reserved opcode 0xF: never a plausible header
    dec = FrameDecoder(S2C)
    out = dec.feed(before + cut[:1], 1, 1)
    out += dec.gap(20, 2, 2)
    out += dec.feed(garbage + after, 3, 3)
    out += dec.eof(4)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_frame_truncated", "ws_resync"]
    resync = findings[1]
    assert "skipped=38" in resync.detail  # 1 header byte + 37 garbage bytes
    assert [f.payload for f in frames[1:]] == [bytes([i]) * (i % 40) for i in range(5)]
    assert frames[0].payload == b"before"
    assert frames[1].offset == len(before) + 1 + 20 + len(garbage)
    assert dec.undecodable_bytes == 38
    assert dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes


def test_resync_after_gap_at_frame_boundary_skips_nothing():
    dec = FrameDecoder(C2S)
    frames_wire = good_frames(4, C2S)
    out = dec.feed(encode(1, b"x", key=KEY), 1, 1) + dec.gap(100, 2, 2)
    out += dec.feed(frames_wire, 3, 3) + dec.eof(4)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_resync"]
    assert "skipped=0" in findings[0].detail
    assert len(frames) == 5
    assert dec.undecodable_bytes == 0


def test_gap_past_end_of_payload_resyncs():
    a = encode(2, bytes(100))
    dec = FrameDecoder(S2C)
    out = dec.feed(a[:50], 1, 1) + dec.gap(80, 2, 2)  # runs 28 bytes past a
    out += dec.feed(b"\xff" * 5 + good_frames(4), 3, 3) + dec.eof(4)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_frame_truncated", "ws_resync"]
    assert frames[0].complete is False
    assert len(frames) == 5
    assert dec.undecodable_bytes == 5


def test_resync_at_eof_accepts_a_run_ending_exactly_at_the_end():
    dec = FrameDecoder(S2C)
    out = dec.gap(10, 1, 1) + dec.feed(b"\xff\xff" + encode(8, b"\x03\xe8"), 2, 2) + dec.eof(3)
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_resync"]
    assert [f.opcode for f in frames] == [8]


def test_resync_finds_nothing_in_garbage():
    dec = FrameDecoder(S2C)
    out = dec.gap(10, 1, 1) + dec.feed(b"\xff" * 1000, 2, 2) + dec.eof(3)
    frames, findings, _ = split(out)
    assert frames == []
    assert codes(findings) == ["ws_resync"]
    assert dec.undecodable_bytes == 1000


def test_resync_buffer_is_bounded():
    """A long frame after a gap cannot be confirmed; held bytes stay bounded."""
    dec = FrameDecoder(S2C)
    dec.gap(10, 1, 1)
    dec.feed(encode(2, b"", declared=10**6), 2, 2)
    for k in range(40):
        dec.feed(b"\xff" * 4096, 3 + k, 3 + k)
        assert dec.buffered_bytes <= RESYNC_WINDOW + 4096
    out = dec.eof(99)
    assert dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes
    assert codes(out) == ["ws_resync"]


def test_gap_while_resyncing_discards_held_bytes():
    dec = FrameDecoder(S2C)
    out = dec.gap(5, 1, 1)
    out += dec.feed(encode(2, b"", declared=100)[:2], 2, 2)  # plausible start, held
    assert dec.buffered_bytes == 2
    out += dec.gap(5, 3, 3)
    assert dec.buffered_bytes == 0
    out += dec.feed(good_frames(4), 4, 4) + dec.eof(5)
    frames, findings, _ = split(out)
    assert len(frames) == 4
    assert codes(findings) == ["ws_resync"]
    assert "skipped=2" in findings[0].detail


# -- end of stream --------------------------------------------------------------------


def test_eof_mid_payload():
    wire = encode(1, b"hello world", key=KEY)
    out, dec = run(C2S, [wire[:10]])
    frames, findings, _ = split(out)
    assert codes(findings) == ["ws_frame_truncated"]
    (f,) = frames
    assert f.complete is False and f.payload is None and f.payload_len == 11
    assert dec.decoded_bytes == 10


def test_eof_mid_header():
    wire = encode(1, b"hello") + encode(2, bytes(300))[:3]
    out, dec = run(S2C, [wire])
    frames, findings, _ = split(out)
    assert [f.payload for f in frames] == [b"hello"]
    assert codes(findings) == ["ws_frame_truncated"]
    assert dec.undecodable_bytes == 3


def test_eof_twice_and_feed_after_eof():
    dec = FrameDecoder(S2C)
    dec.feed(encode(1, b"x"), 1, 1)
    dec.eof(2)
    assert dec.eof(3) == []
    assert dec.feed(b"more", 4, 4) == []
    assert dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes


# -- unmasking --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 7, 8, 9, 255, 256, 257, 2047, 2048, 5000, 70001])
@pytest.mark.parametrize("phase", [0, 1, 2, 3, 6])
def test_unmask_matches_reference(n, phase):
    data = os.urandom(n)
    key = os.urandom(4)
    rotated = key[phase % 4 :] + key[: phase % 4]
    assert unmask(data, key, phase) == xor_ref(data, rotated)


def test_fast_constructor_equals_dataclass_constructor():
    frame_args = (S2C, 7, 6, True, False, True, False, 2, True, KEY, 3, b"abc", 1, 2, 10, 20, False)
    fast = fast_constructor(Frame)(*frame_args)
    assert fast == Frame(*frame_args)
    assert hash(fast) == hash(Frame(*frame_args))
    with pytest.raises(AttributeError):
        fast.offset = 8  # still frozen
    msg_args = (C2S, 1, 2, 5, b"d" * 16, b"hello", 1, 2, 3, 4, 0, None, None, True, True, None)
    msg_args += (True, 3, 1, "stdout", True)  # compressed, wire_len, channel, kind, decompressed
    assert fast_constructor(Message)(*msg_args) == Message(*msg_args)


def test_fast_constructor_falls_back_for_post_init():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError

    assert fast_constructor(Checked) is Checked


# -- chunking invariance and robustness -------------------------------------------------


frame_spec = st.tuples(
    st.sampled_from([0, 1, 2, 8, 9, 10]),
    st.booleans(),
    st.one_of(
        st.binary(max_size=130),
        st.integers(min_value=126, max_value=70000).map(lambda n: bytes(n)),
    ),
)


@st.composite
def streams(draw):
    direction = draw(st.sampled_from([C2S, S2C]))
    specs = draw(st.lists(frame_spec, max_size=12))
    wire = b""
    for op, fin, payload in specs:
        if op >= 8:
            fin, payload = True, payload[:125]
        key = draw(st.binary(min_size=4, max_size=4)) if direction == C2S else None
        wire += encode(op, payload, fin=fin, key=key)
    garbage = draw(st.binary(max_size=40))
    return direction, wire, garbage, len(specs)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        if p > prev:
            out.append(data[prev:p])
            prev = p
    return out


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    streams(),
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=30),
    st.sampled_from([64, 16 * 1024 * 1024]),
)
def test_chunking_does_not_change_frames(stream, cuts, max_buffer):
    direction, wire, garbage, count = stream
    data = wire + garbage
    kwargs = {"max_buffer": max_buffer, "stream_payloads": True}
    whole, _ = run(direction, [data], **kwargs)
    bytewise, _ = run(direction, [data[i : i + 1] for i in range(len(data))], **kwargs)
    random_, dec = run(direction, chunked(data, cuts), **kwargs)

    def view(items):
        frames, findings, chunks = split(items)
        streamed = {}
        for c in chunks:
            streamed.setdefault(c.frame_offset, []).append(c.data)
        return (
            [shape(f) for f in frames],
            sorted(codes(findings)),
            {k: b"".join(v) for k, v in streamed.items()},
        )

    assert view(whole) == view(bytewise) == view(random_)
    frames = split(whole)[0]
    assert len(frames) >= count
    assert all(f.complete for f in frames[:count])
    assert dec.decoded_bytes + dec.undecodable_bytes == len(data)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=600),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    st.sampled_from([C2S, S2C]),
    st.sampled_from([0, 4, 7]),
    st.lists(st.integers(min_value=1, max_value=300), max_size=3),
)
def test_arbitrary_bytes_never_raise(data, cuts, direction, rsv, gaps):
    dec = FrameDecoder(direction, rsv_allowed=rsv, max_buffer=50, stream_payloads=True)
    out: list = []
    pieces = chunked(data, cuts)
    for k, piece in enumerate(pieces):
        out += dec.feed(piece, k, k + 1)
        if gaps and k % 2:
            out += dec.gap(gaps.pop(), k, k + 1)
        assert dec.decoded_bytes + dec.undecodable_bytes + dec.buffered_bytes == dec.fed_bytes
    out += dec.eof(10**6)
    assert dec.fed_bytes == len(data)
    assert dec.decoded_bytes + dec.undecodable_bytes == len(data)
    for item in out:
        assert isinstance(item, Frame | Finding | PayloadChunk)
        if isinstance(item, Finding):
            assert item.code in CATALOGUE
