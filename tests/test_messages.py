"""Tests for wsanalyze.messages: fragmentation (RFC 6455 §5.4), control frames
(§5.5), close codes (§7.4) and UTF-8 (§8.1)."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsanalyze.catalogue import CATALOGUE
from wsanalyze.deflate import DeflateParams
from wsanalyze.frames import FrameDecoder, PayloadChunk
from wsanalyze.messages import MessageAssembler, close_code_valid
from wsanalyze.model import PREVIEW_BYTES, Direction, Finding, Frame, Message, Opcode

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
TEXT, BINARY, CONT = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CONTINUATION)
CLOSE, PING, PONG = int(Opcode.CLOSE), int(Opcode.PING), int(Opcode.PONG)


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def encode(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    key: bytes | None = None,
) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if key is not None else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def pipe(
    direction: Direction,
    pieces: list[bytes],
    *,
    keep_payloads: bool = False,
    max_buffer: int = 16 * 1024 * 1024,
    rsv_allowed: int = 0,
    gaps: dict[int, int] | None = None,
    **asm_kwargs,
) -> tuple[list[Message], list[Finding], MessageAssembler]:
    """Decoder -> assembler, the wiring documented in wsanalyze.messages. Piece k is
    packet k+1; ``gaps`` maps a piece index to a gap length inserted before it;
    ``asm_kwargs`` go to the assembler (``deflate=...``)."""
    dec = FrameDecoder(
        direction, max_buffer=max_buffer, rsv_allowed=rsv_allowed, stream_payloads=True
    )
    asm = MessageAssembler(direction, keep_payloads=keep_payloads, **asm_kwargs)
    out: list = []

    def route(items: list) -> None:
        for item in items:
            if isinstance(item, Frame):
                out.extend(asm.frame(item))
            elif isinstance(item, PayloadChunk):
                out.extend(asm.chunk(item))
            else:
                out.append(item)

    for k, piece in enumerate(pieces):
        if gaps and k in gaps:
            route(dec.gap(gaps[k], 1000 * k, k))
        route(dec.feed(piece, 1000 * (k + 1), k + 1))
    route(dec.eof(10**9))
    out.extend(asm.eof(10**9))
    messages = [x for x in out if isinstance(x, Message)]
    findings = [x for x in out if isinstance(x, Finding)]
    assert len(messages) + len(findings) == len(out)
    assert all(f.code in CATALOGUE for f in findings)
    return messages, findings, asm


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# -- single frames and fragmentation ----------------------------------------------


def test_single_text_message():
    (m,), findings, _ = pipe(S2C, [encode(TEXT, b"Hello")])
    assert findings == []
    assert (m.opcode, m.frame_count, m.payload_len) == (TEXT, 1, 5)
    assert m.digest == digest(b"Hello")
    assert m.preview == b"Hello"
    assert m.utf8_valid is True and m.complete is True
    assert m.payload is None
    assert (m.first_packet, m.last_packet, m.offset) == (1, 1, 0)


def test_rfc_fragmented_hello_with_interleaved_ping():
    wire = [
        encode(TEXT, b"Hel", fin=False, key=KEY),
        encode(PING, b"ping!", key=KEY),
        encode(CONT, b"lo", key=KEY),
    ]
    messages, findings, _ = pipe(C2S, wire, keep_payloads=True)
    assert findings == []
    ping, text = messages
    assert (ping.opcode, ping.payload, ping.offset) == (PING, b"ping!", len(wire[0]))
    assert ping.utf8_valid is None
    assert (text.opcode, text.frame_count, text.payload_len) == (TEXT, 2, 5)
    assert text.payload == b"Hello"
    assert text.digest == digest(b"Hello")
    assert (text.first_packet, text.last_packet) == (1, 3)
    assert (text.first_ts_ns, text.ts_ns) == (1000, 3000)
    assert text.offset == 0
    assert text.utf8_valid is True


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=3000),
    st.lists(st.integers(0, 3000), max_size=8),
    st.sampled_from([C2S, S2C]),
    st.sampled_from([100, 16 * 1024 * 1024]),
)
def test_digest_is_blake2b_of_the_concatenation(payload, cuts, direction, max_buffer):
    points = sorted({c % (len(payload) + 1) for c in cuts})
    parts = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    key = KEY if direction == C2S else None
    wire = b"".join(
        encode(BINARY if i == 0 else CONT, p, fin=i == len(parts) - 1, key=key)
        for i, p in enumerate(parts)
    )
    # several frames per piece and frames across pieces
    pieces = [wire[i : i + 700] for i in range(0, len(wire), 700)] or [b""]
    (m,), findings, _ = pipe(direction, pieces, keep_payloads=True, max_buffer=max_buffer)
    assert set(codes(findings)) <= {"ws_frame_not_buffered"}
    assert m.digest == digest(payload)
    assert m.preview == payload[:PREVIEW_BYTES]
    assert m.payload_len == len(payload)
    assert m.frame_count == len(parts)
    assert m.payload == payload


def test_streamed_unbuffered_frames_are_digested():
    """Frames over max_buffer reach the digest through PayloadChunk values."""
    big1, small, big2 = os.urandom(5000), os.urandom(50), os.urandom(7000)
    wire = (
        encode(BINARY, big1, fin=False, key=KEY)
        + encode(PING, b"p", key=KEY)
        + encode(CONT, small, fin=False, key=KEY)
        + encode(CONT, big2, key=KEY)
    )
    pieces = [wire[i : i + 1460] for i in range(0, len(wire), 1460)]
    messages, findings, _ = pipe(C2S, pieces, max_buffer=1000, keep_payloads=True)
    assert codes(findings) == ["ws_frame_not_buffered"] * 2
    ping, m = messages
    assert ping.opcode == PING
    assert m.digest == digest(big1 + small + big2)
    assert m.preview == (big1 + small + big2)[:PREVIEW_BYTES]
    assert m.payload == big1 + small + big2
    assert m.frame_count == 3 and m.complete


def test_streamed_text_is_utf8_checked():
    text = ("héllo wörld " * 500).encode()
    (m,), _, _ = pipe(S2C, [encode(TEXT, text)], max_buffer=100)
    assert m.utf8_valid is True
    assert m.digest == digest(text)


def test_keep_payloads_off_keeps_nothing():
    (m,), _, _ = pipe(S2C, [encode(BINARY, b"abc", fin=False), encode(CONT, b"def")])
    assert m.payload is None
    assert m.digest == digest(b"abcdef")


def test_preview_is_bounded():
    payload = os.urandom(1000)
    (m,), _, _ = pipe(S2C, [encode(BINARY, payload[:300], fin=False), encode(CONT, payload[300:])])
    assert m.preview == payload[:PREVIEW_BYTES]
    assert len(m.preview) == PREVIEW_BYTES == 256


# -- fragmentation violations ---------------------------------------------------------


def test_unexpected_continuation():
    messages, findings, _ = pipe(S2C, [encode(CONT, b"orphan"), encode(TEXT, b"ok")])
    assert codes(findings) == ["ws_unexpected_continuation"]
    assert findings[0].offset == 0
    assert findings[0].direction == S2C
    assert [m.preview for m in messages] == [b"ok"]


def test_fragmented_message_interrupted():
    wire = [encode(TEXT, b"first", fin=False), encode(BINARY, b"second")]
    messages, findings, _ = pipe(S2C, wire)
    assert codes(findings) == ["ws_fragmented_message_interrupted"]
    old, new = messages
    assert (old.opcode, old.complete, old.preview, old.frame_count) == (TEXT, False, b"first", 1)
    assert (new.opcode, new.complete, new.preview) == (BINARY, True, b"second")


def test_incomplete_message_at_eof():
    messages, findings, _ = pipe(
        S2C, [encode(BINARY, b"abc", fin=False), encode(CONT, b"d", fin=False)]
    )
    assert codes(findings) == ["ws_incomplete_message"]
    (m,) = messages
    assert m.complete is False
    assert m.frame_count == 2
    assert m.digest == digest(b"abcd")


def test_gap_cuts_a_message():
    a = encode(TEXT, "ünïcode text ".encode() * 20, fin=False)
    b = encode(CONT, b"end")
    messages, findings, _ = pipe(S2C, [a[:40], a[60:] + b], gaps={1: 20})
    assert codes(findings) == ["ws_frame_truncated"]
    (m,) = messages
    assert m.complete is False
    assert m.utf8_valid is None  # unknown: bytes are missing
    assert m.frame_count == 2


# -- control frames and close ------------------------------------------------------------


def test_close_with_code_and_reason():
    (m,), findings, asm = pipe(C2S, [encode(CLOSE, (1000).to_bytes(2, "big") + b"bye", key=KEY)])
    assert findings == []
    assert (m.opcode, m.close_code, m.close_reason, m.utf8_valid) == (CLOSE, 1000, b"bye", True)
    assert asm.closed


def test_close_empty():
    (m,), findings, _ = pipe(S2C, [encode(CLOSE)])
    assert findings == []
    assert (m.close_code, m.close_reason, m.utf8_valid) == (None, None, None)


def test_close_one_byte():
    (m,), findings, _ = pipe(S2C, [encode(CLOSE, b"\x03")])
    assert codes(findings) == ["ws_close_payload_one_byte"]
    assert m.close_code is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_bad_close_codes(code):
    (m,), findings, _ = pipe(S2C, [encode(CLOSE, code.to_bytes(2, "big"))])
    assert codes(findings) == ["ws_bad_close_code"]
    assert m.close_code == code
    assert not close_code_valid(code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1010, 1014, 3000, 4000, 4999])
def test_valid_close_codes(code):
    (m,), findings, _ = pipe(S2C, [encode(CLOSE, code.to_bytes(2, "big"))])
    assert findings == []
    assert m.close_code == code
    assert m.close_reason == b""
    assert close_code_valid(code)


def test_close_reason_invalid_utf8():
    (m,), findings, _ = pipe(S2C, [encode(CLOSE, (1001).to_bytes(2, "big") + b"\xff\xfe")])
    assert codes(findings) == ["ws_invalid_utf8"]
    assert m.utf8_valid is False
    assert m.close_reason == b"\xff\xfe"


def test_data_after_close_reported_once():
    wire = [encode(CLOSE, (1000).to_bytes(2, "big")), encode(TEXT, b"late"), encode(PING, b"x")]
    messages, findings, _ = pipe(S2C, wire)
    assert codes(findings) == ["ws_data_after_close"]
    assert findings[0].offset == len(wire[0])
    assert [m.opcode for m in messages] == [CLOSE, TEXT, PING]


def test_ping_pong_are_messages():
    messages, findings, _ = pipe(S2C, [encode(PING, b"a"), encode(PONG, b"b")])
    assert findings == []
    assert [(m.opcode, m.preview, m.digest) for m in messages] == [
        (PING, b"a", digest(b"a")),
        (PONG, b"b", digest(b"b")),
    ]


# -- UTF-8 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "€", "𝄞"])
def test_utf8_character_split_across_fragments_is_valid(char):
    text = ("ab" + char + "cd").encode()
    start = 2
    for cut in range(start + 1, start + len(char.encode())):
        wire = [encode(TEXT, text[:cut], fin=False), encode(CONT, text[cut:])]
        (m,), findings, _ = pipe(S2C, wire)
        assert findings == []
        assert m.utf8_valid is True


def test_utf8_split_across_three_fragments_and_segments():
    text = "𝄞".encode()  # 4 bytes: one per fragment, one byte per feed
    wire = b"".join(encode(TEXT if i == 0 else CONT, text[i : i + 1], fin=i == 3) for i in range(4))
    (m,), findings, _ = pipe(S2C, [wire[i : i + 1] for i in range(len(wire))])
    assert findings == []
    assert m.utf8_valid is True


@pytest.mark.parametrize(
    "parts",
    [
        [b"\x80"],  # lone continuation byte
        [b"ok\xc3"],  # truncated at the end of the message
        [b"ok\xc3", b""],  # truncated, with an empty final fragment
        [b"\xed\xa0\x80"],  # UTF-16 surrogate
        [b"\xc0\xaf"],  # overlong
        [b"\xf4\x90\x80\x80"],  # above U+10FFFF
        [b"abc\xe2\x82", b"x"],  # cut sequence continued by ASCII
        [b"x" * 300, b"\xff"],
    ],
)
def test_invalid_utf8(parts):
    wire = [
        encode(TEXT if i == 0 else CONT, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)
    ]
    (m,), findings, _ = pipe(S2C, wire)
    assert codes(findings) == ["ws_invalid_utf8"]
    assert m.utf8_valid is False


def test_binary_is_not_utf8_checked():
    (m,), findings, _ = pipe(S2C, [encode(BINARY, b"\xff\xfe")])
    assert findings == []
    assert m.utf8_valid is None


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(0, 800), max_size=5))
def test_valid_text_any_fragmentation(text, cuts):
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    wire = [
        encode(TEXT if i == 0 else CONT, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)
    ]
    (m,), findings, _ = pipe(S2C, [b"".join(wire)])
    assert findings == []
    assert m.utf8_valid is True
    assert m.digest == digest(data)


# -- compression (RSV1) ----------------------------------------------------------------------


def test_compressed_without_parameters_is_not_decompressed():
    """RSV1 with no permessage-deflate parameters given: counted, not decompressed:
    digest over the wire bytes, no preview (never compressed bytes shown as text)."""
    wire = [encode(TEXT, b"\xff\x00compressed?", fin=False, rsv1=True), encode(CONT, b"\xfe")]
    (m,), findings, asm = pipe(S2C, wire, rsv_allowed=0x4, keep_payloads=True)
    assert findings == []
    assert m.utf8_valid is None
    assert m.digest == digest(b"\xff\x00compressed?\xfe")
    assert (m.compressed, m.wire_len, m.payload_len) == (True, 14, 14)
    assert m.preview == b"" and m.payload is None
    assert asm.compressed_offsets == {0}


def test_compressed_text_is_decompressed_and_utf8_checked():
    """permessage-deflate (RFC 7692 §7.2.2): digest, preview, payload and the UTF-8
    check are about the decompressed payload."""
    c = zlib.compressobj(wbits=-15)
    text = "ünïcode, compressed ".encode() * 10
    data = (c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire = [encode(TEXT, data[:5], fin=False, rsv1=True, key=KEY), encode(CONT, data[5:], key=KEY)]
    (m,), findings, _ = pipe(
        C2S, wire, keep_payloads=True, rsv_allowed=0x4, deflate=DeflateParams()
    )
    assert findings == []
    assert (m.compressed, m.wire_len, m.payload_len) == (True, len(data), len(text))
    assert m.digest == digest(text) and m.preview == text[:PREVIEW_BYTES]
    assert m.payload == text and m.utf8_valid is True


def test_uncompressed_messages_not_marked_compressed():
    (m,), _, asm = pipe(S2C, [encode(TEXT, b"a")], rsv_allowed=0x4, deflate=DeflateParams())
    assert asm.compressed_offsets == set()
    assert (m.compressed, m.wire_len) == (False, None)


# -- limits and robustness ----------------------------------------------------------------------


def test_message_findings_are_aggregated():
    wire = [encode(CONT, b"x")] * 25
    messages, findings, _ = pipe(S2C, wire)
    assert messages == []
    assert codes(findings).count("ws_unexpected_continuation") == 10
    (summary,) = [f for f in findings if f.code == "ws_findings_suppressed"]
    assert "suppressed=15" in summary.detail


def test_assembler_eof_is_idempotent():
    asm = MessageAssembler(S2C)
    assert asm.eof(1) == []
    assert asm.eof(2) == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.sampled_from([C2S, S2C]), st.sampled_from([8, 1000]))
def test_arbitrary_bytes_never_raise(data, direction, max_buffer):
    pieces = [data[i : i + 37] for i in range(0, len(data), 37)]
    messages, findings, _ = pipe(direction, pieces, max_buffer=max_buffer, gaps={2: 5})
    for m in messages:
        assert m.opcode in (TEXT, BINARY, CLOSE, PING, PONG)
        assert len(m.digest) == 16
        assert len(m.preview) <= PREVIEW_BYTES
