"""Tests for permessage-deflate (RFC 7692): wsanalyze.deflate (parameters, the bounded
Inflater), its use by wsanalyze.messages.MessageAssembler, and the whole analysis on a
crafted proxy that decompresses and on a public capture compared with tshark."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from craft import (
    CLOSE,
    TEXT,
    TcpFlow,
    close_payload,
    http_request,
    http_response,
    switching_headers,
    t_us,
    upgrade_headers,
    write_pcap,
    ws_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from test_messages import pipe as messages_pipe

import wsanalyze
from wsanalyze.deflate import TAIL, DeflateParams, Inflater, deflate_params
from wsanalyze.handshake import check_handshake
from wsanalyze.messages import MessageAssembler
from wsanalyze.model import (
    PREVIEW_BYTES,
    Direction,
    Finding,
    Message,
    RequestHead,
    ResponseHead,
)

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
BINARY, CONT, PING = 0x2, 0x0, 0x9
MiB = 1024 * 1024
DEFAULT = DeflateParams()  # 15 bits, context takeover

PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "public-captures"
SURICATA_DEFLATE = PUBLIC / "suricata-verify" / "websocket-compressed" / "example_websocket.pcap"


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class Compressor:
    """A permessage-deflate sender (RFC 7692 §7.2.1) on Python's zlib: compress,
    sync-flush, strip the 0x00 0x00 0xff 0xff tail; a fresh context per message with
    ``no_context_takeover``."""

    def __init__(self, wbits: int = 15, *, no_context_takeover: bool = False) -> None:
        self.wbits = wbits
        self.nct = no_context_takeover
        self.c = zlib.compressobj(wbits=-wbits)

    def __call__(self, data: bytes) -> bytes:
        if self.nct:
            self.c = zlib.compressobj(wbits=-self.wbits)
        out = self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]


def encode(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    key: bytes | None = None,
) -> bytes:
    """One RFC 6455 §5.2 frame, RSV1 as asked (masked when ``key``)."""
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


def compressed_message(
    wire: bytes,
    *,
    opcode: int = TEXT,
    cuts: tuple[int, ...] = (),
    key: bytes | None = None,
) -> bytes:
    """The frames of one compressed message, fragmented at ``cuts`` (RSV1 on the first
    frame only, RFC 7692 §6)."""
    points = [0, *sorted(cuts), len(wire)]
    parts = [wire[a:b] for a, b in zip(points, points[1:], strict=False)]
    return b"".join(
        encode(opcode if i == 0 else CONT, p, fin=i == len(parts) - 1, rsv1=i == 0, key=key)
        for i, p in enumerate(parts)
    )


def pipe(
    direction: Direction,
    pieces: list[bytes],
    *,
    deflate: DeflateParams | None = DEFAULT,
    gaps: dict[int, int] | None = None,
    max_buffer: int = 16 * MiB,
    rsv_allowed: int = 0x4,
    **asm_kwargs,
) -> tuple[list[Message], list[Finding], MessageAssembler]:
    """The messages-test wiring (FrameDecoder -> MessageAssembler) with permessage-
    deflate negotiated by default (RSV1 allowed, ``deflate=DEFAULT``)."""
    return messages_pipe(
        direction,
        pieces,
        max_buffer=max_buffer,
        rsv_allowed=rsv_allowed,
        gaps=gaps,
        deflate=deflate,
        **asm_kwargs,
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- deflate_params (RFC 7692 §7.1) ----------------------------------------------------------


def handshake(response_extensions: str | None, offer: str = "permessage-deflate"):
    key = ws_key(1)
    req = RequestHead(
        b"GET",
        b"/ws",
        b"HTTP/1.1",
        (
            (b"Host", b"h"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key.encode()),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Extensions", offer.encode()),
        ),
        ts_ns=1,
        packets=(4,),
        offset=0,
        length=100,
    )
    headers = [(n.encode(), v.encode()) for n, v in switching_headers(key)]
    if response_extensions is not None:
        headers.append((b"Sec-WebSocket-Extensions", response_extensions.encode()))
    resp = ResponseHead(b"HTTP/1.1", 101, b"Switching Protocols", tuple(headers), 2, (6,), 0, 100)
    return check_handshake(req, resp)


def test_params_none_without_permessage_deflate():
    assert deflate_params(None, C2S) is None
    assert deflate_params(handshake(None), C2S) is None
    assert deflate_params(handshake(None), S2C) is None


def test_params_defaults():
    hs = handshake("permessage-deflate")
    assert hs.deflate
    assert deflate_params(hs, C2S) == DeflateParams(15, False)
    assert deflate_params(hs, S2C) == DeflateParams(15, False)


def test_params_per_direction():
    hs = handshake(
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=10; "
        'server_max_window_bits="12"',
        "permessage-deflate; client_max_window_bits; server_max_window_bits=12",
    )
    assert deflate_params(hs, C2S) == DeflateParams(window_bits=10, no_context_takeover=False)
    assert deflate_params(hs, S2C) == DeflateParams(window_bits=12, no_context_takeover=True)


def test_params_client_no_context_takeover_and_case():
    hs = handshake("Permessage-Deflate; Client_No_Context_Takeover; SERVER_MAX_WINDOW_BITS=8")
    assert deflate_params(hs, C2S) == DeflateParams(15, True)
    assert deflate_params(hs, S2C) == DeflateParams(8, False)


@pytest.mark.parametrize("value", ["7", "16", "010x", "", "nine", "٩"])
def test_params_invalid_window_bits_count_as_15(value):
    hs = handshake(f"permessage-deflate; client_max_window_bits={value}")
    assert deflate_params(hs, C2S) == DeflateParams(15, False)


def test_params_first_permessage_deflate_wins():
    hs = handshake(
        "permessage-deflate; client_max_window_bits=9, permessage-deflate",
        "permessage-deflate, permessage-deflate",
    )
    assert deflate_params(hs, C2S) == DeflateParams(9, False)


# -- Inflater (RFC 7692 §7.2.2) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "f248cdc9c90700",  # §7.2.3.1: one compressed block
        "000500faff48656c6c6f00",  # §7.2.3.3: a block with no compression
        "f348cdc9c9070000",  # §7.2.3.4: a block with BFINAL set
        "f24805000000ffffcac9c90700",  # §7.2.3.5: two blocks
    ],
)
def test_rfc7692_examples(payload):
    inf = Inflater(DeflateParams())
    assert inf.decompress(bytes.fromhex(payload)) == b"Hello"
    assert inf.error is None and not inf.exceeded and inf.produced == 5


def test_rfc7692_shared_window():
    """§7.2.3.2: the second "Hello" refers to the first through the shared window."""
    inf = Inflater(DeflateParams())
    assert inf.decompress(bytes.fromhex("f248cdc9c90700")) == b"Hello"
    assert inf.decompress(bytes.fromhex("f200110000")) == b"Hello"
    fresh = Inflater(DeflateParams(no_context_takeover=True))
    fresh.decompress(bytes.fromhex("f248cdc9c90700"))
    assert fresh.decompress(bytes.fromhex("f200110000")) == b""
    assert fresh.error is not None  # "invalid distance too far back"


def test_empty_message():
    """An empty message compresses to one 0x00 (§7.2.3.6) or to nothing at all."""
    inf = Inflater(DeflateParams())
    assert inf.decompress(b"\x00") == b""
    assert inf.decompress(b"") == b""
    assert inf.error is None


def test_context_takeover_survives_a_bfinal_block():
    """After a message ending with BFINAL (§7.2.3.4) the window still serves the next
    message (a new decompressor primed with the last window)."""
    inf = Inflater(DeflateParams())
    first = os.urandom(3000)
    c = zlib.compressobj(wbits=-15)
    assert inf.decompress(c.compress(first) + c.flush(zlib.Z_FINISH)) == first
    c2 = zlib.compressobj(wbits=-15, zdict=first)
    wire = c2.compress(first[1000:2000]) + c2.flush(zlib.Z_SYNC_FLUSH)
    assert len(wire) < 100  # it refers to the first message
    assert inf.decompress(wire[:-4]) == first[1000:2000]
    assert inf.error is None


def test_data_after_bfinal_block_is_an_error():
    inf = Inflater(DeflateParams())
    c = zlib.compressobj(wbits=-15)
    inf.decompress(c.compress(b"x") + c.flush(zlib.Z_FINISH) + b"garbage after it")
    assert inf.error is not None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=3000) | st.text(max_size=500).map(str.encode), max_size=6),
    st.integers(9, 15),
    st.booleans(),
    st.integers(1, 700),
)
def test_inflater_round_trip(messages, wbits, nct, step):
    comp = Compressor(wbits, no_context_takeover=nct)
    inf = Inflater(DeflateParams(wbits, nct))
    for msg in messages:
        wire = comp(msg + msg[:100])  # repetition: back-references
        assert inf.begin()
        got = b"".join(
            piece for i in range(0, len(wire), step) for piece in inf.feed(wire[i : i + step])
        )
        got += b"".join(inf.end())
        assert got == msg + msg[:100]
        assert inf.error is None and inf.produced == len(got)


def test_window_bits_8_inflates_as_9():
    comp = Compressor(9)
    inf = Inflater(DeflateParams(window_bits=8))
    data = os.urandom(300) * 3
    assert inf.decompress(comp(data)) == data


def test_window_larger_than_negotiated_is_an_error():
    """The sender uses a 32 KiB window where 512 bytes were negotiated: the second
    message refers 1000 bytes back, beyond the negotiated window."""
    data = os.urandom(1000)
    comp = Compressor(15)
    inf = Inflater(DeflateParams(window_bits=9))
    assert inf.decompress(comp(data)) == data
    inf.decompress(comp(data))
    assert inf.error is not None and "distance" in inf.error
    assert not inf.context_ok
    assert inf.begin() is False  # context takeover: lost for the rest of the direction


def test_corrupt_data_loses_the_context_only_with_takeover():
    inf = Inflater(DeflateParams())
    inf.decompress(b"\xff\xff\xff\xff")
    assert inf.error is not None and not inf.context_ok
    assert inf.begin() is False and inf.feed(b"abc") == [] and inf.end() == []
    nct = Inflater(DeflateParams(no_context_takeover=True))
    nct.decompress(b"\xff\xff\xff\xff")
    assert nct.error is not None and nct.context_ok
    assert nct.decompress(Compressor(no_context_takeover=True)(b"ok")) == b"ok"


def bomb(total: int = 100 * MiB) -> bytes:
    """``total`` zero bytes compressed (about 1000:1), built without allocating them."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MiB)
    out = [c.compress(zeros) for _ in range(total // MiB)]
    out.append(c.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)[:-4]


@pytest.fixture(scope="module")
def bomb_100mb() -> bytes:
    return bomb()


def test_decompression_bomb_is_bounded(bomb_100mb):
    assert len(bomb_100mb) < 200 * 1024
    inf = Inflater(DeflateParams(), limit=4 * MiB)
    assert inf.begin()
    tracemalloc.start()
    try:
        total = 0
        for i in range(0, len(bomb_100mb), 1460):
            for piece in inf.feed(bomb_100mb[i : i + 1460]):
                total += len(piece)
        for piece in inf.end():
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inf.exceeded and total == inf.produced == 4 * MiB
    assert peak < 2 * MiB  # pieces of at most 64 KiB, dropped as they are digested
    assert not inf.context_ok


def test_exactly_the_limit_is_not_exceeded():
    data = os.urandom(5000)
    inf = Inflater(DeflateParams(), limit=5000)
    assert inf.decompress(Compressor()(data)) == data
    assert not inf.exceeded
    assert inf.decompress(Compressor()(data + b"!")) == data  # cut at the limit
    assert inf.exceeded and inf.produced == 5000


def test_lose_context_and_abandon():
    inf = Inflater(DeflateParams())
    assert inf.begin()
    inf.abandon()
    assert not inf.context_ok and inf.begin() is False
    nct = Inflater(DeflateParams(no_context_takeover=True))
    nct.lose_context()
    assert nct.context_ok and nct.begin()


# -- MessageAssembler with permessage-deflate ------------------------------------------------------


def test_single_compressed_text_message():
    text = "héllo wörld, " * 20
    wire = Compressor()(text.encode())
    frame = compressed_message(wire)
    (m,), findings, asm = pipe(S2C, [frame], keep_payloads=True)
    assert findings == []
    assert m.compressed is True
    assert m.wire_len == len(wire) < m.payload_len == len(text.encode())
    assert m.digest == digest(text.encode())
    assert m.preview == text.encode()[:PREVIEW_BYTES]
    assert m.payload == text.encode()
    assert m.utf8_valid is True and m.complete
    assert asm.compressed_offsets == {0}


def test_uncompressed_message_in_a_deflate_session():
    (m,), findings, asm = pipe(S2C, [encode(TEXT, b"plain")])
    assert findings == []
    assert (m.compressed, m.wire_len, m.payload_len, m.preview) == (False, None, 5, b"plain")
    assert asm.compressed_offsets == set()


@pytest.mark.parametrize("direction", [C2S, S2C])
def test_fragmented_compressed_message_one_byte_at_a_time(direction):
    """RSV1 on the first frame only; a ping between the fragments; fed byte by byte."""
    text = ("fragmented ✓ " * 40).encode()
    wire = Compressor()(text)
    key = KEY if direction == C2S else None
    a, b = len(wire) // 3, 2 * len(wire) // 3
    frames = (
        encode(TEXT, wire[:a], fin=False, rsv1=True, key=key)
        + encode(PING, b"p", key=key)
        + encode(CONT, wire[a:b], fin=False, key=key)
        + encode(CONT, wire[b:], key=key)
    )
    messages, findings, _ = pipe(direction, bytewise(frames), keep_payloads=True)
    assert findings == []
    ping, m = messages
    assert ping.opcode == PING and not ping.compressed
    assert (m.frame_count, m.compressed, m.wire_len) == (3, True, len(wire))
    assert m.payload == text and m.digest == digest(text) and m.utf8_valid is True


def test_streamed_compressed_frames_are_decompressed_incrementally():
    """Frames over max_buffer reach the assembler as PayloadChunk values."""
    data = os.urandom(20_000) + bytes(50_000)
    wire = Compressor()(data)
    frames = compressed_message(wire, opcode=BINARY, cuts=(5000,), key=KEY)
    pieces = [frames[i : i + 1460] for i in range(0, len(frames), 1460)]
    (m,), findings, _ = pipe(C2S, pieces, max_buffer=1000)
    assert set(codes(findings)) == {"ws_frame_not_buffered"}
    assert m.digest == digest(data) and m.payload_len == len(data)
    assert m.preview == data[:PREVIEW_BYTES]
    assert m.utf8_valid is None  # binary


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text(max_size=300), min_size=1, max_size=5),
    st.integers(9, 15),
    st.booleans(),
    st.lists(st.integers(1, 400), max_size=3),
    st.integers(1, 500),
)
def test_assembler_round_trip(texts, wbits, nct, cuts, step):
    comp = Compressor(wbits, no_context_takeover=nct)
    stream = b""
    for t in texts:
        wire = comp(t.encode())
        stream += compressed_message(wire, cuts=tuple(sorted({c % (len(wire) + 1) for c in cuts})))
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
    messages, findings, _ = pipe(S2C, pieces, deflate=DeflateParams(wbits, nct))
    assert findings == []
    assert [m.digest for m in messages] == [digest(t.encode()) for t in texts]
    assert [m.payload_len for m in messages] == [len(t.encode()) for t in texts]
    assert all(m.compressed and m.utf8_valid for m in messages)


def test_context_takeover_across_messages_and_uncompressed_ones_between():
    comp = Compressor()
    first = b"the same sentence, again and again"
    frames = [
        compressed_message(comp(first)),
        encode(TEXT, b"uncompressed: no effect on the window"),
        compressed_message(comp(first)),  # refers to the first message
    ]
    messages, findings, _ = pipe(S2C, frames)
    assert findings == []
    assert [m.digest for m in messages] == [
        digest(first),
        digest(b"uncompressed: no effect on the window"),
        digest(first),
    ]
    assert messages[2].wire_len < 10


def test_decompressed_text_is_utf8_checked():
    (m,), findings, _ = pipe(S2C, [compressed_message(Compressor()(b"ok \xff\xfe"))])
    assert codes(findings) == ["ws_invalid_utf8"]
    assert m.utf8_valid is False


def test_rsv1_on_continuation_is_reported_and_ignored():
    wire = Compressor()(b"hello")
    frames = [encode(TEXT, wire[:3], fin=False, rsv1=True), encode(CONT, wire[3:], rsv1=True)]
    (m,), findings, _ = pipe(S2C, frames)
    assert codes(findings) == ["ws_rsv1_on_continuation_or_control"]
    assert findings[0].offset == len(frames[0])
    assert m.digest == digest(b"hello") and m.frame_count == 2


@pytest.mark.parametrize("control", [PING, CLOSE])
def test_rsv1_on_control_frame(control):
    wire = Compressor()(b"hello")
    frames = [compressed_message(wire), encode(control, close_payload(1000), rsv1=True)]
    (first, ctl), findings, _ = pipe(S2C, frames)
    assert codes(findings) == ["ws_rsv1_on_continuation_or_control"]
    assert first.digest == digest(b"hello")
    assert not ctl.compressed and ctl.digest == digest(close_payload(1000))


def test_rsv1_on_continuation_not_reported_without_permessage_deflate():
    """Without permessage-deflate the decoder reports the bit (ws_reserved_bits)."""
    frames = [encode(TEXT, b"ab", fin=False), encode(CONT, b"cd", rsv1=True)]
    (m,), findings, _ = pipe(S2C, frames, deflate=None, rsv_allowed=0)
    assert codes(findings) == ["ws_reserved_bits"]
    assert m.preview == b"abcd" and not m.compressed


def test_rsv1_without_permessage_deflate_is_not_decompressed():
    """No deflate negotiated: the decoder reports ws_reserved_bits; the message is
    counted with the digest of its wire bytes and no preview."""
    wire = Compressor()(b"hello")
    (m,), findings, _ = pipe(S2C, [compressed_message(wire)], deflate=None, rsv_allowed=0)
    assert codes(findings) == ["ws_reserved_bits"]
    assert (m.compressed, m.digest, m.preview, m.utf8_valid) == (True, digest(wire), b"", None)
    assert m.payload_len == m.wire_len == len(wire)


def test_corrupt_message_then_context_lost():
    comp = Compressor()
    good = comp(b"first")
    frames = [
        compressed_message(good),
        compressed_message(b"\xff\xff\xff\xff\xff"),
        compressed_message(comp(b"third")),
        compressed_message(comp(b"fourth")),
    ]
    messages, findings, _ = pipe(S2C, frames)
    assert codes(findings) == ["ws_deflate_error", "deflate_context_lost"]
    assert findings[0].offset == len(frames[0])
    assert findings[1].offset == len(frames[0]) + len(frames[1])
    first, bad, third, fourth = messages
    assert first.digest == digest(b"first")
    assert (bad.compressed, bad.digest, bad.preview, bad.utf8_valid) == (
        True,
        digest(b"\xff" * 5),
        b"",
        None,
    )
    assert third.preview == fourth.preview == b""
    assert fourth.digest == digest(frames[3][2:])  # the wire bytes


def test_corrupt_message_with_no_context_takeover_loses_nothing_else():
    comp = Compressor(no_context_takeover=True)
    frames = [compressed_message(b"\xff\xff\xff"), compressed_message(comp(b"next"))]
    messages, findings, _ = pipe(S2C, frames, deflate=DeflateParams(no_context_takeover=True))
    assert codes(findings) == ["ws_deflate_error"]
    assert messages[1].digest == digest(b"next")


def test_decompression_bomb_in_the_assembler(bomb_100mb):
    """100 MB of zeros in about 100 KB: cut at max_decompressed, one finding, memory
    bounded (nothing near 100 MB is ever allocated), later messages still counted."""
    comp_later = Compressor()
    frames = [
        compressed_message(bomb_100mb, opcode=BINARY),
        compressed_message(comp_later(b"after")),
        encode(TEXT, b"plain after"),
    ]
    pieces = [b"".join(frames)[i : i + 1448] for i in range(0, len(b"".join(frames)), 1448)]
    tracemalloc.start()
    try:
        messages, findings, _ = pipe(S2C, pieces, max_decompressed=2 * MiB, keep_payloads=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB  # the compressed frame (~100 KB buffered) + pieces + the kept limit
    assert codes(findings) == ["ws_deflate_limit_exceeded", "deflate_context_lost"]
    big, after, plain = messages
    assert big.complete is False and big.compressed
    assert big.payload_len == 2 * MiB and big.wire_len == len(bomb_100mb)
    assert big.digest == digest(bytes(2 * MiB)) and big.preview == bytes(PREVIEW_BYTES)
    assert big.payload is None
    assert after.compressed and after.preview == b""
    assert plain.preview == b"plain after"


def test_bomb_with_no_context_takeover_keeps_decompressing_later_messages(bomb_100mb):
    nct = DeflateParams(no_context_takeover=True)
    frames = [
        compressed_message(bomb_100mb, opcode=BINARY),
        compressed_message(Compressor(no_context_takeover=True)(b"after")),
    ]
    messages, findings, _ = pipe(S2C, frames, deflate=nct, max_decompressed=MiB)
    assert codes(findings) == ["ws_deflate_limit_exceeded"]
    assert messages[1].digest == digest(b"after")


def test_gap_inside_a_compressed_message():
    """A gap inside a compressed message: that message and (context takeover) the
    later ones cannot be decompressed: ONE deflate_context_lost; they are all still
    counted, and uncompressed messages still decoded."""
    comp = Compressor()
    first = compressed_message(comp(os.urandom(600)), opcode=BINARY)
    later = [compressed_message(comp(f"later {i}".encode())) for i in range(3)]
    plain = encode(TEXT, b"plain")
    stream = [first[:100], first[150:], *later, plain]
    messages, findings, asm = pipe(S2C, stream, gaps={1: 50})
    assert codes(findings) == ["ws_frame_truncated", "deflate_context_lost"]
    assert len(messages) == 5
    cut, *rest, last = messages
    assert cut.complete is False and cut.compressed and cut.preview == b""
    assert all(m.compressed and m.complete and m.preview == b"" for m in rest)
    assert [m.digest for m in rest] == [digest(f[2:]) for f in later]
    assert last.preview == b"plain" and last.utf8_valid
    assert len(asm.compressed_offsets) == 4


def test_gap_inside_a_message_with_no_context_takeover():
    comp = Compressor(no_context_takeover=True)
    first = compressed_message(comp(os.urandom(600)), opcode=BINARY)
    second = compressed_message(comp(b"second"))
    nct = DeflateParams(no_context_takeover=True)
    messages, findings, _ = pipe(S2C, [first[:100], first[150:], second], gaps={1: 50}, deflate=nct)
    assert codes(findings) == ["ws_frame_truncated", "deflate_context_lost"]
    assert messages[1].digest == digest(b"second")


def test_gap_between_messages_loses_the_context():
    """A gap that swallows a whole frame: the decoder resynchronises, the assembler
    sees the next frame start past where the previous one ended."""
    comp = Compressor()
    frames = [compressed_message(comp(f"message {i} ".encode() * 5)) for i in range(6)]
    lost = len(frames[2])
    stream = [frames[0], frames[1], *frames[3:]]
    messages, findings, _ = pipe(S2C, stream, gaps={2: lost})
    assert codes(findings) == ["ws_resync", "deflate_context_lost"]
    assert [m.preview[:9] for m in messages[:2]] == [b"message 0", b"message 1"]
    assert all(m.preview == b"" and m.compressed for m in messages[2:])
    assert len(messages) == 5


def test_gap_between_messages_with_no_context_takeover_loses_nothing():
    comp = Compressor(no_context_takeover=True)
    frames = [compressed_message(comp(f"message {i} ".encode() * 5)) for i in range(5)]
    stream = [frames[0], frames[1], *frames[3:]]
    nct = DeflateParams(no_context_takeover=True)
    messages, findings, _ = pipe(S2C, stream, gaps={2: len(frames[2])}, deflate=nct)
    assert codes(findings) == ["ws_resync"]
    assert [m.preview[:9] for m in messages] == [
        b"message 0",
        b"message 1",
        b"message 3",
        b"message 4",
    ]


def test_deflate_unknown():
    """The handshake was not captured: RSV1 messages are counted, not decompressed;
    one deflate_context_lost for the direction."""
    comp = Compressor()
    frames = [
        compressed_message(comp(b"one")),
        encode(TEXT, b"two"),
        compressed_message(comp(b"3")),
    ]
    messages, findings, _ = pipe(S2C, frames, deflate=None, deflate_unknown=True)
    assert codes(findings) == ["deflate_context_lost"]
    one, two, three = messages
    assert (one.compressed, one.preview, one.utf8_valid) == (True, b"", None)
    assert one.digest == digest(frames[0][2:])
    assert two.preview == b"two" and two.utf8_valid
    assert three.compressed and three.preview == b""


def test_deflate_unknown_still_reports_rsv1_on_continuation():
    frames = [encode(TEXT, b"ab", fin=False, rsv1=True), encode(CONT, b"cd", rsv1=True)]
    _, findings, _ = pipe(S2C, frames, deflate=None, deflate_unknown=True)
    assert codes(findings) == ["ws_rsv1_on_continuation_or_control", "deflate_context_lost"]


def test_interrupted_compressed_message_loses_the_context():
    comp = Compressor()
    wire = comp(b"unfinished message " * 10)
    frames = [
        encode(TEXT, wire[:10], fin=False, rsv1=True),
        compressed_message(comp(b"next")),
    ]
    messages, findings, _ = pipe(S2C, frames)
    assert codes(findings) == ["ws_fragmented_message_interrupted", "deflate_context_lost"]
    cut, nxt = messages
    assert cut.complete is False and cut.compressed
    assert nxt.compressed and nxt.preview == b""


def test_compressed_empty_messages():
    """An empty message compresses to 0x00 (RFC 7692 §7.2.3.6); an empty payload with
    RSV1 also counts as empty and leaves the context as it was."""
    comp = Compressor()
    frames = [
        compressed_message(comp(b"")),
        compressed_message(b""),
        compressed_message(comp(b"after")),
        compressed_message(comp(b"after")),
    ]
    assert frames[0][2:] == b"\x00"
    messages, findings, _ = pipe(S2C, frames)
    assert findings == []
    assert [(m.payload_len, m.digest, m.utf8_valid) for m in messages] == [
        (0, digest(b""), True),
        (0, digest(b""), True),
        (5, digest(b"after"), True),
        (5, digest(b"after"), True),
    ]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([C2S, S2C]), st.booleans(), st.booleans())
def test_arbitrary_compressed_bytes_never_raise(data, direction, nct, unknown):
    key = KEY if direction == C2S else None
    stream = compressed_message(data, cuts=(len(data) // 2,), key=key) + data
    pieces = [stream[i : i + 61] for i in range(0, len(stream), 61)]
    messages, _, _ = pipe(
        direction,
        pieces,
        deflate=None if unknown else DeflateParams(9, nct),
        deflate_unknown=unknown,
        gaps={3: 7},
        max_decompressed=4096,
    )
    for m in messages:
        assert len(m.digest) == 16 and len(m.preview) <= PREVIEW_BYTES
        if m.compressed:
            assert m.wire_len is not None
            assert m.payload_len <= max(4096, m.wire_len)


# -- end to end --------------------------------------------------------------------------------------


def _proxy_that_decompresses(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, bytes]]]:
    """A proxy that accepts permessage-deflate from the client and speaks plain
    WebSocket to the server: client-leg messages are compressed (context takeover,
    fragmented too), server-leg ones are not."""
    ckey, skey = ws_key(7), ws_key(8)
    cf = TcpFlow(("192.0.2.10", 41007), ("192.0.2.1", 80), isn_c=10_000, isn_s=20_000)
    sf = TcpFlow(("198.51.100.1", 52007), ("198.51.100.10", 8080), isn_c=30_000, isn_s=40_000)
    offer = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
    accepted = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=12")
    cf.open(t_us(0))
    cf.send("c", http_request("/ws", upgrade_headers("192.0.2.1", ckey, offer)), t_us(100))
    sf.open(t_us(200))
    sf.send("c", http_request("/ws", upgrade_headers("192.0.2.1", skey)), t_us(250))
    sf.send("s", http_response(101, "Switching Protocols", switching_headers(skey)), t_us(400))
    cf.send(
        "s",
        http_response(101, "Switching Protocols", switching_headers(ckey, accepted)),
        t_us(500),
    )
    c2s_comp, s2c_comp = Compressor(12), Compressor(15)
    mask = b"\x11\x22\x33\x44"
    messages = [
        ("c2s", b'{"subscribe": "prices", "depth": 10}'),
        ("s2c", b'{"price": 101.5, "qty": 3}' * 3),
        ("c2s", b'{"subscribe": "prices", "depth": 20}'),  # shares the window
        ("s2c", ("naïve café " * 200).encode()),  # fragmented on the client leg
        ("c2s", os.urandom(3000).hex().encode()),
    ]
    t = 1_000
    for direction, payload in messages:
        t += 10_000
        if direction == "c2s":
            wire = c2s_comp(payload)
            cf.send("c", compressed_message(wire, key=mask), t_us(t))
            sf.send("c", encode(TEXT, payload, key=mask), t_us(t + 150))
        else:
            sf.send("s", encode(TEXT, payload), t_us(t))
            wire = s2c_comp(payload)
            cuts = (len(wire) // 3, len(wire) // 2) if len(payload) > 1000 else ()
            cf.send("s", compressed_message(wire, cuts=cuts), t_us(t + 150))
    t += 10_000
    cf.send("c", encode(CLOSE, close_payload(1000), key=mask), t_us(t))
    sf.send("c", encode(CLOSE, close_payload(1000), key=mask), t_us(t + 150))
    sf.send("s", encode(CLOSE, close_payload(1000)), t_us(t + 300))
    cf.send("s", encode(CLOSE, close_payload(1000)), t_us(t + 450))
    sf.fin("s", t_us(t + 600))
    sf.fin("c", t_us(t + 650))
    cf.fin("s", t_us(t + 700))
    cf.fin("c", t_us(t + 750))
    return (
        write_pcap(tmp_path / "client.pcap", cf.packets),
        write_pcap(tmp_path / "server.pcap", sf.packets),
        messages,
    )


def test_proxy_that_decompresses_messages_still_match(tmp_path):
    client, server, sent = _proxy_that_decompresses(tmp_path)
    a = wsanalyze.analyze(client, server, strict=True)
    (cconn,) = a.client.connections
    (sconn,) = a.server.connections
    assert cconn.handshake.deflate and not sconn.handshake.deflate
    data = lambda conn: [m for m in conn.messages if m.opcode == TEXT]  # noqa: E731
    cmsgs, smsgs = data(cconn), data(sconn)
    assert all(m.compressed for m in cmsgs) and not any(m.compressed for m in smsgs)
    assert [m.digest for m in cmsgs] == [m.digest for m in smsgs] == [digest(p) for _, p in sent]
    assert [m.payload_len for m in cmsgs] == [len(p) for _, p in sent]
    assert sum(m.wire_len for m in cmsgs) < sum(m.payload_len for m in cmsgs)
    assert cmsgs[3].frame_count == 3 and cmsgs[3].utf8_valid is True
    assert len(a.pairs) == 1
    matches = a.message_matches
    assert (matches["opcode"] == "text").sum() == len(sent)
    assert not [f for f in a.findings["code"] if f.startswith(("ws_", "deflate_"))]
    assert "proxy_message_not_forwarded" not in set(a.findings["code"])


def _tshark_texts(path: Path) -> list[str]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "websocket",
            "-T",
            "fields",
            "-e",
            "websocket.payload.text",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.mark.skipif(
    not SURICATA_DEFLATE.exists(), reason=f"public capture absent: {SURICATA_DEFLATE}"
)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_public_capture_decompressed_like_tshark():
    """suricata-verify websocket-compressed: permessage-deflate negotiated
    (client_max_window_bits=15), 10 compressed server-to-client text messages with
    context takeover. Wireshark decompresses them itself (websocket.payload.text)."""
    a = wsanalyze.analyze(SURICATA_DEFLATE, strict=True, keep_payloads=True)
    (conn,) = a.client.connections
    texts = [m for m in conn.messages if m.opcode == TEXT]
    assert len(texts) == 10 and all(m.compressed and m.utf8_valid for m in texts)
    assert all(m.wire_len is not None for m in texts)
    assert [m.payload.decode() for m in texts] == _tshark_texts(SURICATA_DEFLATE)
    assert [m.preview for m in texts] == [m.payload for m in texts]
    assert not [f for f in conn.findings if f.code.startswith(("ws_", "deflate_"))]


def test_lost_packet_in_a_compressed_stream(tmp_path):
    """A capture that lost one TCP segment inside a compressed message (context
    takeover): one deflate_context_lost for that direction, every later message still
    counted (compressed, not decompressed), the other direction unaffected."""
    key = ws_key(9)
    f = TcpFlow(("192.0.2.10", 41009), ("192.0.2.1", 80), mss=100)
    ext = ("Sec-WebSocket-Extensions", "permessage-deflate")
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", key, ext)), t_us(100))
    f.send("s", http_response(101, "Switching Protocols", switching_headers(key, ext)), t_us(200))
    s2c, c2s = Compressor(), Compressor()
    t = 1_000
    for i in range(4):
        t += 1_000
        f.send("c", compressed_message(c2s(b"ask %d" % i), key=b"\x01\x02\x03\x04"), t_us(t))
        t += 1_000
        if i == 1:
            t_big = t
        f.send("s", compressed_message(s2c(os.urandom(300) if i == 1 else b"ok %d" % i)), t_us(t))
    f.fin("s", t_us(t + 1_000))
    f.fin("c", t_us(t + 1_100))
    # Drop the second segment of the server's big (random, 300+ bytes) message: its
    # header survives, so the decoder knows the frame and the gap falls inside it.
    second = t_us(t_big + 1)
    packets = [p for p in f.packets if not (p.sport == 80 and float(p.time) == second)]
    assert len(packets) == len(f.packets) - 1
    a = wsanalyze.analyze(write_pcap(tmp_path / "lost.pcap", packets), strict=True)
    (conn,) = a.client.connections
    lost = [x for x in conn.findings if x.code == "deflate_context_lost"]
    assert len(lost) == 1 and lost[0].direction == S2C
    server = [m for m in conn.messages if m.direction == S2C and m.opcode == TEXT]
    client = [m for m in conn.messages if m.direction == C2S and m.opcode == TEXT]
    assert [m.digest for m in client] == [digest(b"ask %d" % i) for i in range(4)]
    assert server[0].digest == digest(b"ok 0")
    assert len(server) == 4 and all(m.compressed for m in server)
    assert all(m.preview == b"" for m in server[1:])
    assert server[1].complete is False and server[2].complete and server[3].complete


def test_decompressed_flag_tells_decompressed_from_undecodable():
    """Message.decompressed: True when the payload fields are over the decompressed
    bytes, False when the context was lost (fields over the wire bytes), None when
    the message was not compressed."""
    comp = Compressor()
    frames = [
        compressed_message(comp(b"first")),
        compressed_message(b"\xff\xff\xff\xff\xff"),
        compressed_message(comp(b"third")),
        encode(0x1, b"plain"),
    ]
    messages, _findings, _ = pipe(S2C, frames)
    assert [m.decompressed for m in messages] == [True, False, False, None]
