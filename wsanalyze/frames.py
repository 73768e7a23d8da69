"""Sans-IO WebSocket frame decoder, RFC 6455 §5: one per direction of one connection.

A :class:`FrameDecoder` is fed the in-order bytes of one direction (after the HTTP
101 head) with :meth:`~FrameDecoder.feed`, told about bytes that were never
captured with :meth:`~FrameDecoder.gap`, and finished with :meth:`~FrameDecoder.eof`.
Each call returns the :class:`~wsanalyze.model.Frame` values completed by it and
the :class:`~wsanalyze.model.Finding` values it produced, in stream order; with
``stream_payloads=True`` it also returns :class:`PayloadChunk` values (below).
Traffic never raises.

Wire format (RFC 6455 §5.2)::

    byte 0: FIN RSV1 RSV2 RSV3 opcode(4)
    byte 1: MASK payload-len(7)          126 -> 16-bit length follows,
                                         127 -> 64-bit length follows (MSB 0)
    [2 or 8 bytes extended length, network order] [4 bytes masking key if MASK]
    payload (masked with key[i % 4] when MASK, §5.3)

Streamed payloads
-----------------
The payload of a frame is kept (``Frame.payload``) only when the declared length is
at most ``max_buffer``; larger frames are *streamed*: their bytes are consumed as
they arrive and never accumulated, so a declared length of 2^63-1 allocates
nothing. So that the message stage can still digest and preview such payloads,
a decoder made with ``stream_payloads=True`` returns, in the same list and in
stream order, :class:`PayloadChunk` values carrying the unmasked bytes of every
frame whose ``Frame.payload`` will be None (frames over ``max_buffer``, and the
part seen of a frame cut by a gap or by the end of the stream). The invariant is:

    every payload byte seen reaches the consumer exactly once, either in
    ``Frame.payload`` or, when that is None, in the ``PayloadChunk`` values
    returned *before* that ``Frame`` (same ``frame_offset``).

Pass both kinds to :class:`wsanalyze.messages.MessageAssembler`
(``asm.chunk(c)`` / ``asm.frame(f)``). Returning chunks in the output list, rather
than through a callback, keeps them ordered with the frames before them: a
callback fired while decoding would reach the assembler before the frames
completed earlier in the same ``feed`` call. With the default
``stream_payloads=False`` the output is only frames and findings, as documented
in ``docs/architecture.md``, and the bytes of unbuffered frames are dropped.

Security limits
---------------
- ``max_buffer`` (default 16 MiB): largest payload kept per frame.
- :data:`RESYNC_WINDOW` (64 KiB): most bytes held while looking for a frame
  boundary after a gap; frames longer than that cannot serve to resynchronise.
- :data:`FINDING_LIMIT` (10): findings of one code per decoder; later ones are
  counted and reported once at :meth:`~FrameDecoder.eof` as one
  ``ws_findings_suppressed`` finding per code (detail ``code=..., suppressed=N``).

Byte accounting: at every moment ``decoded_bytes + undecodable_bytes +
buffered_bytes == fed_bytes`` (bytes of frames whose header was parsed, payload
bytes skipped after a gap included, are decoded; bytes skipped while
resynchronising and a partial header cut by a gap or the end are undecodable);
after :meth:`~FrameDecoder.eof`, ``buffered_bytes == 0``. ``gap_bytes`` sums the
lengths passed to :meth:`~FrameDecoder.gap`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from .catalogue import FindingLimiter
from .model import Direction, Frame, Opcode, drop_pieces, fast_constructor

DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
"""Largest frame payload kept in ``Frame.payload``, bytes (security limit)."""

RESYNC_WINDOW = 64 * 1024
"""Most bytes buffered while resynchronising after a gap (security limit)."""

RESYNC_CONFIRM = 3
"""Plausible frame headers in a row needed to accept a resynchronisation point
(fewer when the stream ends exactly at the end of the last one)."""

FINDING_LIMIT = 10
"""Findings of one code emitted per decoder/assembler before they are only counted."""

_NUMPY_MIN = 2048  # below this the int XOR is faster than numpy
_SMALL = 256  # payloads up to this use precomputed tables (64 KiB in all)
_REPEAT = tuple(sum(1 << (32 * i) for i in range((n + 3) // 4)) for n in range(_SMALL + 1))
_ONES = tuple((1 << (8 * n)) - 1 for n in range(_SMALL + 1))
_from_bytes = int.from_bytes
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from

_HEADER, _PAYLOAD, _RESYNC, _DONE = 0, 1, 2, 3

# Header length for each value of byte 1 (MASK bit and 7-bit length).
_HLEN = tuple(2 + (4 if b1 & 0x80 else 0) + {126: 2, 127: 8}.get(b1 & 0x7F, 0) for b1 in range(256))
# Opcodes defined by RFC 6455 §5.2 (others are reserved, §11.8).
_KNOWN_OPCODE = tuple(op in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA) for op in range(16))
# (FIN, RSV1, RSV2, RSV3, opcode) for each value of byte 0.
_B0_FIELDS = tuple(
    (b0 >= 0x80, bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F) for b0 in range(256)
)
_MAX_HEADER = 14


_new_frame = fast_constructor(Frame)


def unmask(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """Apply the RFC 6455 §5.3 masking transform (its own inverse): "octet i of the
    transformed data is the XOR of octet i of the original data with octet at index
    i modulo 4 of the masking key". ``phase`` is the index within the payload of
    ``data[0]`` (for chunks of a streamed payload). Linear time, no per-byte Python
    loop: big-integer XOR for small inputs, numpy on 64-bit words for large ones."""
    n = len(data)
    if n == 0:
        return b""
    phase &= 3
    if phase:
        key = key[phase:] + key[:phase]
    if n <= _SMALL:
        # The key repeated n/4 times, as an integer: key * 0x...000100000001.
        return (
            (_from_bytes(data, "little") ^ (_from_bytes(key, "little") * _REPEAT[n])) & _ONES[n]
        ).to_bytes(n, "little")
    if n < _NUMPY_MIN:
        k = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")
    n8 = n >> 3
    words = np.frombuffer(data, dtype=np.uint64, count=n8)
    out = np.bitwise_xor(words, np.frombuffer(key * 2, dtype=np.uint64)[0]).tobytes()
    tail = n8 << 3
    if tail < n:
        out += unmask(data[tail:], key)
    return out


@dataclass(frozen=True, slots=True)
class PayloadChunk:
    """Unmasked payload bytes of a frame whose ``Frame.payload`` will be None
    (returned only by a decoder made with ``stream_payloads=True``).

    ``frame_offset`` is the stream offset of the frame's first header byte (the
    ``Frame.offset`` of the frame that follows); ``position`` the index of
    ``data[0]`` within the frame's payload; ``first_packet``/``first_ts_ns`` those
    of the frame's first header byte; ``packet``/``ts_ns`` those of the last byte
    of ``data``.
    """

    direction: Direction
    frame_offset: int
    opcode: int
    fin: bool
    rsv1: bool
    position: int
    data: bytes
    first_packet: int
    first_ts_ns: int
    packet: int
    ts_ns: int


class _Partial:
    """A frame whose header was parsed and whose payload is still arriving."""

    __slots__ = (
        "offset",
        "hlen",
        "b0",
        "key",
        "plen",
        "remaining",
        "pos",
        "first_packet",
        "first_ts",
        "last_packet",
        "last_ts",
        "buffered",
        "chunks",
        "cut",
    )

    def __init__(self, offset, hlen, b0, key, plen, first_packet, first_ts, buffered):
        self.offset = offset
        self.hlen = hlen
        self.b0 = b0
        self.key = key
        self.plen = plen
        self.remaining = plen
        self.pos = 0  # payload bytes consumed (or skipped by a gap)
        self.first_packet = first_packet
        self.first_ts = first_ts
        self.last_packet = first_packet
        self.last_ts = first_ts
        self.buffered = buffered
        self.chunks: list[bytes] = []  # masked, only when buffered
        self.cut = False


class FrameDecoder:
    """Decodes the WebSocket frames of one direction of one connection (RFC 6455 §5).

    ``direction`` decides the masking rule (§5.1: client frames masked, server
    frames not). ``rsv_allowed`` is a bitmask of the RSV bits an extension gave a
    meaning to (0x4 = RSV1, 0x2 = RSV2, 0x1 = RSV3; 0x4 for permessage-deflate).
    ``max_buffer`` is the largest payload kept per frame (bytes, security limit);
    ``start_offset`` the stream offset of the first byte fed (usually the byte
    after the HTTP 101 head). ``stream_payloads``: see the module docstring.

    Findings for header violations (``ws_unmasked_client_frame``,
    ``ws_masked_server_frame``, ``ws_reserved_opcode``, ``ws_reserved_bits``,
    ``ws_control_frame_too_long``, ``ws_control_frame_fragmented``,
    ``ws_non_minimal_length``, ``ws_length_msb_set``) are emitted when the header
    is parsed (packets: first and last of the header), before the frame; the
    frame is still decoded with the length it declares.
    """

    def __init__(
        self,
        direction: Direction,
        *,
        rsv_allowed: int = 0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        start_offset: int = 0,
        stream_payloads: bool = False,
    ) -> None:
        self.direction = direction
        self.rsv_allowed = rsv_allowed & 0x7
        self.max_buffer = max_buffer
        self.stream_payloads = stream_payloads
        self.fed_bytes = 0
        self.decoded_bytes = 0
        self.undecodable_bytes = 0
        self.gap_bytes = 0
        self._limiter = FindingLimiter(direction, FINDING_LIMIT)
        self._offset = start_offset  # stream offset of the next byte fed or gapped
        self._state = _HEADER
        self._want_mask = direction == Direction.CLIENT_TO_SERVER  # §5.1
        self._rsv_forbidden = ((~self.rsv_allowed) & 0x7) << 4
        # _HEADER: bytes of an incomplete header and the packet of its first byte.
        self._pending = b""
        self._pend_packet = 0
        self._pend_ts = 0
        # _PAYLOAD: the frame in progress.
        self._cur: _Partial | None = None
        # _RESYNC: held bytes, their pieces (length, ts_ns, packet) in feed order,
        # the stream offset of _rbuf[0], and what was skipped so far.
        self._rbuf = bytearray()
        self._rpieces: list[tuple[int, int, int]] = []
        self._rbase = 0
        self._rskipped = 0
        self._rstart_offset = 0
        self._rfirst_packet = 0
        self._rpending_finding = False
        self._rskipped_carry = 0  # partial header bytes lost in the gap that began it
        b0_ok = bytes(
            b0
            for b0 in range(256)
            if not (b0 & self._rsv_forbidden)
            and _KNOWN_OPCODE[b0 & 0xF]
            and not (b0 & 0x08 and not b0 & 0x80)  # control frames must have FIN
        )
        # Byte-0 values that break a rule by themselves (RSV, opcode, control FIN).
        self._b0_bad = tuple(b0 not in b0_ok for b0 in range(256))
        b1_ok = bytes(b1 for b1 in range(256) if (b1 >= 0x80) is self._want_mask)
        self._b0_ok = frozenset(b0_ok)
        self._candidate_rx = re.compile(
            b"(?=[" + re.escape(b0_ok) + b"][" + re.escape(b1_ok) + b"])", re.DOTALL
        )

    # -- public API -------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet classified as decoded or undecodable (an incomplete
        header, or bytes held while resynchronising): at most :data:`RESYNC_WINDOW`
        plus one ``feed``."""
        return len(self._pending) + len(self._rbuf)

    def feed(self, data: bytes, ts_ns: int, packet: int) -> list:
        """Decode the next ``data`` of the stream, all carried by ``packet`` (1-based)
        captured at ``ts_ns``. Returns ``list[Frame | Finding | PayloadChunk]``."""
        out: list = []
        n = len(data)
        if n == 0:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        self.fed_bytes += n
        base = self._offset
        self._offset = base + n
        state = self._state
        if state == _RESYNC:
            self._rbuf += data
            self._rpieces.append((n, ts_ns, packet))
            self._resync(out, ts_ns, final=False)
        elif state == _DONE:
            self.undecodable_bytes += n
        else:
            self._run(data, base, ts_ns, packet, out)
        return out

    def gap(self, length: int, ts_ns: int, packet: int) -> list:
        """``length`` bytes of the stream were never captured (detected at ``packet``).

        In a payload of known length the frame is cut (``complete=False``, payload
        None, ``ws_frame_truncated``) and decoding goes on at the next frame
        boundary, whose position is known. A gap in or before a header, or running
        past the end of the current frame, loses the alignment: the decoder then
        resynchronises (see :meth:`_resync`) and reports it with one ``ws_resync``
        finding (``skipped=N`` bytes, 0 when the first bytes after the gap already
        start a plausible run of frames)."""
        out: list = []
        if length <= 0:
            return out
        self.gap_bytes += length
        base = self._offset
        self._offset = base + length
        state = self._state
        if state == _PAYLOAD:
            f = self._cur
            assert f is not None
            self._cut(f, "gap", ts_ns, packet, out)
            if length < f.remaining:
                f.remaining -= length
                f.pos += length
            else:
                over = length - f.remaining
                f.pos += f.remaining
                f.remaining = 0
                self._emit_partial(f, out)
                self._cur = None
                if over:
                    self._start_resync(base + length, packet)
                else:
                    self._state = _HEADER
        elif state == _HEADER:
            if self._pending:
                self._limiter.emit(
                    out,
                    "ws_frame_truncated",
                    f"gap of {length} bytes inside a frame header "
                    f"({len(self._pending)} header bytes seen)",
                    (self._pend_packet, packet),
                    base - len(self._pending),
                    ts_ns,
                )
                self.undecodable_bytes += len(self._pending)
                self._rskipped_carry = len(self._pending)
                first = self._pend_packet
                self._pending = b""
            else:
                first = packet
            self._start_resync(base + length, first)
        elif state == _RESYNC:
            # Bytes held before the gap cannot be confirmed across it: skip them.
            held = len(self._rbuf)
            self.undecodable_bytes += held
            self._rskipped += held
            self._rbuf.clear()
            self._rpieces.clear()
            self._rbase = base + length
        return out

    def eof(self, ts_ns: int) -> list:
        """The stream ended (FIN, RST or end of capture). A frame in progress is
        returned with ``complete=False`` after a ``ws_frame_truncated`` finding; an
        incomplete header is counted undecodable. Ends with the suppressed-finding
        summaries. Later calls return nothing."""
        out: list = []
        if self._state == _DONE:
            return out
        if self._state == _RESYNC:
            self._resync(out, ts_ns, final=True)
        if self._state == _PAYLOAD:
            f = self._cur
            assert f is not None
            self._cut(f, "end of stream", ts_ns, f.last_packet, out)
            self._emit_partial(f, out)
            self._cur = None
        elif self._state == _HEADER and self._pending:
            self._limiter.emit(
                out,
                "ws_frame_truncated",
                f"stream ended inside a frame header ({len(self._pending)} header bytes seen)",
                (self._pend_packet,),
                self._offset - len(self._pending),
                ts_ns,
            )
            self.undecodable_bytes += len(self._pending)
            self._pending = b""
        self._state = _DONE
        out.extend(self._limiter.summary(ts_ns))
        return out

    # -- decoding -----------------------------------------------------------------

    def _run(self, data: bytes, base: int, ts_ns: int, packet: int, out: list) -> None:
        """Decode ``data`` (stream offset ``base``) in the _HEADER or _PAYLOAD state."""
        i = 0
        n = len(data)
        if self._state == _PAYLOAD:
            i = self._payload(data, 0, ts_ns, packet, out)
            if i >= n:
                return
        if self._pending:  # only in _HEADER with i == 0
            pend = self._pending
            self._pending = b""
            data = pend + data
            base -= len(pend)
            n = len(data)
            first_packet, first_ts = self._pend_packet, self._pend_ts
        else:
            first_packet, first_ts = packet, ts_ns
        direction = self.direction
        want_mask = self._want_mask
        b0_bad = self._b0_bad
        max_buffer = self.max_buffer
        hlens = _HLEN
        fields = _B0_FIELDS
        new_frame = _new_frame
        append = out.append
        start = i
        while True:
            avail = n - i
            if avail < 2:
                break
            b0 = data[i]
            b1 = data[i + 1]
            hlen = hlens[b1]
            if avail < hlen:
                break
            len7 = b1 & 0x7F
            if len7 < 126:
                plen = len7
            elif len7 == 126:
                plen = (data[i + 2] << 8) | data[i + 3]
            else:
                plen = _U64(data, i + 2)[0]
            fin, rsv1, rsv2, rsv3, opcode = fields[b0]
            masked = b1 >= 0x80
            if (
                b0_bad[b0]
                or masked is not want_mask
                or (
                    len7 > 125
                    and (opcode >= 8 or plen < (126 if len7 == 126 else 0x10000) or plen >> 63)
                )
            ):
                self._violations(b0, b1, plen, (first_packet, packet), base + i, ts_ns, out)
            j = i + hlen
            key = data[j - 4 : j] if masked else None
            end = j + plen
            if end <= n and plen <= max_buffer:
                # Common path: the whole frame is in ``data``.
                payload = data[j:end]
                if key is not None and plen:
                    payload = unmask(payload, key)
                append(
                    new_frame(
                        direction,
                        base + i,
                        hlen,
                        fin,
                        rsv1,
                        rsv2,
                        rsv3,
                        opcode,
                        masked,
                        key,
                        plen,
                        payload,
                        first_packet,
                        packet,
                        first_ts,
                        ts_ns,
                        True,
                    )
                )
                i = end
                first_packet = packet
                first_ts = ts_ns
                continue
            # The payload continues past ``data``, or is too large to keep.
            buffered = plen <= max_buffer
            if not buffered:
                self._limiter.emit(
                    out,
                    "ws_frame_not_buffered",
                    f"payload_len={plen}, max_buffer={max_buffer}",
                    (first_packet, packet),
                    base + i,
                    ts_ns,
                )
            f = _Partial(base + i, hlen, b0, key, plen, first_packet, first_ts, buffered)
            f.last_packet, f.last_ts = packet, ts_ns
            self.decoded_bytes += j - start
            self._cur = f
            self._state = _PAYLOAD
            i = self._payload(data, j, ts_ns, packet, out) if j < n else j
            if i >= n:
                return
            # The frame ended inside ``data``: back in _HEADER.
            start = i
            first_packet, first_ts = packet, ts_ns
        self.decoded_bytes += i - start
        if i < n:
            self._pending = data[i:]
            self._pend_packet, self._pend_ts = first_packet, first_ts

    def _violations(
        self,
        b0: int,
        b1: int,
        plen: int,
        packets: tuple[int, int],
        offset: int,
        ts_ns: int,
        out: list,
    ) -> None:
        """Emit the findings for a header that breaks a rule of RFC 6455 §5."""
        emit = self._limiter.emit
        opcode = b0 & 0x0F
        name = Opcode.name_of(opcode)
        masked = bool(b1 & 0x80)
        if self.direction == Direction.CLIENT_TO_SERVER and not masked:
            # §5.1: "a client MUST mask all frames that it sends to the server".
            emit(
                out,
                "ws_unmasked_client_frame",
                f"expected=masked, found=unmasked {name} frame",
                packets,
                offset,
                ts_ns,
            )
        elif self.direction == Direction.SERVER_TO_CLIENT and masked:
            # §5.1: "A server MUST NOT mask any frames that it sends to the client".
            emit(
                out,
                "ws_masked_server_frame",
                f"expected=unmasked, found=masked {name} frame",
                packets,
                offset,
                ts_ns,
            )
        rsv = b0 & 0x70
        if rsv & self._rsv_forbidden:
            # §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines
            # meanings for non-zero values".
            found = ",".join(
                n for bit, n in ((0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")) if rsv & bit
            )
            allowed = (
                ",".join(
                    n
                    for bit, n in ((4, "RSV1"), (2, "RSV2"), (1, "RSV3"))
                    if self.rsv_allowed & bit
                )
                or "none"
            )
            emit(
                out,
                "ws_reserved_bits",
                f"expected={allowed}, found={found}",
                packets,
                offset,
                ts_ns,
            )
        if not _KNOWN_OPCODE[opcode]:
            # §5.2: opcodes %x3-7 and %xB-F "are reserved".
            emit(out, "ws_reserved_opcode", f"found={opcode:#x}", packets, offset, ts_ns)
        if opcode & 0x08:
            # §5.5: "All control frames MUST have a payload length of 125 bytes or
            # less and MUST NOT be fragmented."
            if plen > 125:
                emit(
                    out,
                    "ws_control_frame_too_long",
                    f"expected<=125, found={plen} ({name})",
                    packets,
                    offset,
                    ts_ns,
                )
            if not b0 & 0x80:
                emit(
                    out,
                    "ws_control_frame_fragmented",
                    f"expected=FIN set, found=FIN clear ({name})",
                    packets,
                    offset,
                    ts_ns,
                )
        len7 = b1 & 0x7F
        if len7 == 127 and plen >> 63:
            # §5.2: "the most significant bit MUST be 0".
            emit(out, "ws_length_msb_set", f"found={plen:#018x}", packets, offset, ts_ns)
        # §5.2: "the minimal number of bytes MUST be used to encode the length".
        if len7 == 126 and plen < 126:
            emit(
                out,
                "ws_non_minimal_length",
                f"expected=7-bit length, found=16-bit length {plen}",
                packets,
                offset,
                ts_ns,
            )
        elif len7 == 127 and plen < 0x10000:
            need = "7-bit" if plen < 126 else "16-bit"
            emit(
                out,
                "ws_non_minimal_length",
                f"expected={need} length, found=64-bit length {plen}",
                packets,
                offset,
                ts_ns,
            )

    def _payload(self, data: bytes, i: int, ts_ns: int, packet: int, out: list) -> int:
        """Consume payload bytes of the frame in progress from ``data[i:]``; returns
        the index after them (the frame is emitted when its last byte is consumed)."""
        f = self._cur
        assert f is not None
        n = len(data)
        take = f.remaining if f.remaining < n - i else n - i
        if take:
            if not f.cut:
                chunk = data if (i == 0 and take == n) else data[i : i + take]
                if f.buffered:
                    f.chunks.append(chunk)
                elif self.stream_payloads:
                    if f.key is not None:
                        chunk = unmask(chunk, f.key, f.pos)
                    out.append(self._chunk(f, f.pos, chunk, ts_ns, packet))
            f.pos += take
            f.remaining -= take
            self.decoded_bytes += take
            f.last_packet, f.last_ts = packet, ts_ns
        if f.remaining == 0:
            self._emit_partial(f, out)
            self._cur = None
            self._state = _HEADER
        return i + take

    def _chunk(
        self, f: _Partial, position: int, data: bytes, ts_ns: int, packet: int
    ) -> PayloadChunk:
        b0 = f.b0
        return PayloadChunk(
            self.direction,
            f.offset,
            b0 & 0x0F,
            b0 >= 0x80,
            bool(b0 & 0x40),
            position,
            data,
            f.first_packet,
            f.first_ts,
            packet,
            ts_ns,
        )

    def _cut(self, f: _Partial, why: str, ts_ns: int, packet: int, out: list) -> None:
        """Mark the frame in progress as cut (by a gap or the end of the stream):
        one ``ws_frame_truncated`` finding; the part of a buffered payload seen so
        far goes out as a PayloadChunk (when streaming) and is released."""
        if f.cut:
            return
        f.cut = True
        seen = f.pos
        self._limiter.emit(
            out,
            "ws_frame_truncated",
            f"{why} after {seen} of {f.plen} payload bytes ({Opcode.name_of(f.b0 & 0x0F)})",
            (f.first_packet, packet),
            f.offset,
            ts_ns,
        )
        if f.buffered:
            if self.stream_payloads and f.chunks:
                data = b"".join(f.chunks)
                if f.key is not None:
                    data = unmask(data, f.key)
                out.append(self._chunk(f, 0, data, f.last_ts, f.last_packet))
            f.chunks = []

    def _emit_partial(self, f: _Partial, out: list) -> None:
        """Emit the frame in progress (its payload fully consumed, skipped or cut)."""
        payload = None
        if f.buffered and not f.cut:
            payload = b"".join(f.chunks)
            if f.key is not None:
                payload = unmask(payload, f.key)
            f.chunks = []
        b0 = f.b0
        out.append(
            _new_frame(
                self.direction,
                f.offset,
                f.hlen,
                b0 >= 0x80,
                bool(b0 & 0x40),
                bool(b0 & 0x20),
                bool(b0 & 0x10),
                b0 & 0x0F,
                f.key is not None,
                f.key,
                f.plen,
                payload,
                f.first_packet,
                f.last_packet,
                f.first_ts,
                f.last_ts,
                not f.cut,
            )
        )

    # -- resynchronisation --------------------------------------------------------

    def _start_resync(self, offset: int, first_packet: int) -> None:
        self._state = _RESYNC
        self._rbuf.clear()
        self._rpieces.clear()
        self._rbase = offset
        self._rstart_offset = offset
        self._rskipped = self._rskipped_carry
        self._rskipped_carry = 0
        self._rfirst_packet = first_packet
        self._rpending_finding = True

    def _plausible(self, buf: bytearray, p: int, n: int) -> int:
        """Length (header + payload) of a frame whose header at ``buf[p:]`` keeps
        every rule of §5.2/§5.5 checked by the decoder and is not an empty non-final
        fragment (legal, but so rare that runs of zero bytes would otherwise look
        like frames); -1 when more bytes are needed to tell; -2 when implausible."""
        if n - p < 2:
            return -1 if (n == p or buf[p] in self._b0_ok) else -2
        b0 = buf[p]
        b1 = buf[p + 1]
        if b0 not in self._b0_ok or (b1 >= 0x80) is not self._want_mask:
            return -2
        len7 = b1 & 0x7F
        if (b0 & 0x08 and len7 > 125) or (len7 == 0 and not b0 & 0x80):
            return -2
        hlen = _HLEN[b1]
        if n - p < hlen:
            return -1
        if len7 < 126:
            plen = len7
        elif len7 == 126:
            plen = _U16(buf, p + 2)[0]
            if plen < 126:
                return -2
        else:
            plen = _U64(buf, p + 2)[0]
            if plen < 0x10000 or plen >> 63:
                return -2
        return hlen + plen

    def _candidate(self, buf: bytearray, p: int, n: int, final: bool) -> int:
        """Verdict on ``p`` as a frame boundary: 1 accept, 0 wait for more bytes,
        -1 reject. Accepted: :data:`RESYNC_CONFIRM` plausible headers in a row that
        also fragment consistently (§5.4: no continuation after a final fragment, no
        new text/binary frame inside a fragmented message), or at the end of the
        stream such a run ending exactly at the end (or, with at least two headers,
        inside the last frame)."""
        q = p
        count = 0
        in_message = None  # unknown before the first data frame of the run
        while True:
            r = self._plausible(buf, q, n)
            if r == -2:
                return -1
            if r == -1:
                if final:
                    return 1 if (q == n and count) or count >= 2 else -1
                return 0 if q + _MAX_HEADER - p <= RESYNC_WINDOW else -1
            b0 = buf[q]
            if not b0 & 0x08:  # a data frame
                if in_message is (b0 & 0x0F != 0):
                    return -1  # continuation outside, or text/binary inside, a message
                in_message = not b0 & 0x80
            count += 1
            if count >= RESYNC_CONFIRM:
                return 1
            q += r
            if q > n:
                if final:
                    return 1 if count >= 2 else -1
                return 0 if q + 2 - p <= RESYNC_WINDOW else -1

    def _resync(self, out: list, ts_ns: int, *, final: bool) -> None:
        """Look in the held bytes for a plausible frame boundary (bounded: positions
        are pre-filtered with a regular expression on the first two header bytes,
        each is examined once, at most :data:`RESYNC_WINDOW` bytes are held). On
        success, emit ``ws_resync`` and decode the held bytes from there."""
        buf = self._rbuf
        n = len(buf)
        p = 0
        verdict = -1
        search = self._candidate_rx.search
        while p < n:
            m = search(buf, p)
            if m is None:
                # No two-byte header start; the last byte may begin one.
                if not final and buf[n - 1] in self._b0_ok:
                    p = max(p, n - 1)
                    verdict = 0
                else:
                    p = n
                break
            p = m.start()
            verdict = self._candidate(buf, p, n, final)
            if verdict >= 0:
                break
            p += 1
        if p:
            self.undecodable_bytes += p
            self._rskipped += p
            del buf[:p]
            self._rbase += p
            drop_pieces(self._rpieces, p)
        if verdict == 1:
            pieces = self._rpieces
            resume_packet = pieces[0][2] if pieces else self._rfirst_packet
            self._limiter.emit(
                out,
                "ws_resync",
                f"skipped={self._rskipped} bytes, resumed_at_offset={self._rbase}",
                (self._rfirst_packet, resume_packet),
                self._rstart_offset,
                ts_ns,
            )
            self._rpending_finding = False
            data = bytes(buf)
            base = self._rbase
            buf.clear()
            self._rpieces = []
            self._state = _HEADER
            start = 0
            for length, pts, ppk in pieces:
                self._run(data[start : start + length], base + start, pts, ppk, out)
                start += length
        elif final:
            held = len(buf)
            self.undecodable_bytes += held
            self._rskipped += held
            buf.clear()
            self._rpieces.clear()
            if self._rpending_finding and self._rskipped:
                self._limiter.emit(
                    out,
                    "ws_resync",
                    f"skipped={self._rskipped} bytes, no frame boundary found before the end",
                    (self._rfirst_packet,),
                    self._rstart_offset,
                    ts_ns,
                )
            self._rpending_finding = False
            self._state = _HEADER
