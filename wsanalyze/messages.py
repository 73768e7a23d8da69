"""WebSocket message assembly, RFC 6455 §5.4 (fragmentation), §5.5 (control frames),
§7.4 (close codes) and §8.1 (UTF-8): one :class:`MessageAssembler` per direction.

The assembler is fed, in stream order, what a :class:`~wsanalyze.frames.FrameDecoder`
of the same direction returns: :class:`~wsanalyze.model.Frame` values through
:meth:`~MessageAssembler.frame` and, from a decoder made with
``stream_payloads=True``, :class:`~wsanalyze.frames.PayloadChunk` values through
:meth:`~MessageAssembler.chunk` (the payload bytes of frames too large to keep,
see :mod:`wsanalyze.frames`). Findings returned by the decoder are not for the
assembler. Wiring::

    dec = FrameDecoder(d, rsv_allowed=..., start_offset=..., stream_payloads=True)
    asm = MessageAssembler(d, deflate=deflate_params(handshake, d))  # None: no RFC 7692
    for item in dec.feed(data, ts_ns, packet):          # likewise gap() and eof()
        if isinstance(item, Frame):
            out = asm.frame(item)
        elif isinstance(item, PayloadChunk):
            out = asm.chunk(item)
        else:
            out = [item]                                  # a decoder finding
    ...
    asm.eof(ts_ns)

Each call returns ``list[Message | Finding]`` in stream order: a data message when
its final fragment arrives, a control frame (ping, pong, close) as a message of its
own at once, even between the fragments of a data message (§5.4: "Control frames
MAY be injected in the middle of a fragmented message").

What a :class:`~wsanalyze.model.Message` holds: ``payload_len`` is the sum of the
lengths its frames declare; ``digest`` (BLAKE2b, 16 bytes) and ``preview`` (first
:data:`~wsanalyze.model.PREVIEW_BYTES` bytes) cover the payload bytes seen, updated
incrementally across fragments, so they equal those of the concatenation when
nothing was lost; ``payload`` is the reassembled payload when ``keep_payloads`` and
it is at most ``max_kept`` bytes. ``complete`` is False when a frame of it was cut
or it never finished (interrupted, or the stream ended).

Compression (RFC 7692 permessage-deflate): a data message whose first frame has
RSV1 set is compressed (``Message.compressed``; §6: RSV1 on the first frame only). With
the negotiated parameters (``deflate``, see :func:`wsanalyze.deflate.deflate_params`)
it is decompressed incrementally as its frames and chunks arrive (never buffered
whole): ``payload_len``, ``digest``, ``preview``, ``payload`` and the UTF-8 check are
then about the DECOMPRESSED payload, so a message matches its copy on the other leg
of a proxy that decompresses or re-compresses, and ``wire_len`` is the sum of the
frames' payload lengths on the wire. A message that cannot be decompressed (a gap
inside it; the compression context lost with context takeover, by a gap or an earlier
undecodable message; ``deflate_unknown``: the handshake was not captured; RSV1 without
permessage-deflate) is still emitted with ``compressed=True``, ``utf8_valid`` None,
``payload_len == wire_len`` (bytes on the wire), ``digest`` over the wire bytes, an
empty ``preview`` and no ``payload`` (compressed bytes are never shown as text).
:attr:`MessageAssembler.compressed_offsets` holds the ``offset`` of every compressed
message emitted.

Context loss is detected from the frames alone: a frame cut by a gap
(``Frame.complete`` False), or a frame that does not start where the previous one
ended (bytes lost to a gap or skipped while resynchronising).

Security limits: ``max_kept`` (default 16 MiB) bounds a kept payload;
``max_decompressed`` (default 16 MiB) the decompressed bytes of one message (beyond
it the message is cut: ``complete`` False, digest and preview of the first
``max_decompressed`` bytes, ``ws_deflate_limit_exceeded``; memory stays bounded);
:data:`CONTROL_KEEP` bounds the bytes of a control frame kept for close parsing;
findings of one code are emitted at most :data:`~wsanalyze.frames.FINDING_LIMIT`
times, then counted in one ``ws_findings_suppressed`` finding at :meth:`~MessageAssembler.eof`.
"""

from __future__ import annotations

import codecs
from hashlib import blake2b

from .catalogue import FindingLimiter, finding
from .deflate import DEFAULT_MAX_DECOMPRESSED, DeflateParams, Inflater
from .frames import DEFAULT_MAX_BUFFER, PayloadChunk, fast_constructor
from .model import PREVIEW_BYTES, Direction, Finding, Frame, Message, Opcode

CONTROL_KEEP = 4096
"""Most bytes of a control frame payload kept to parse a close frame (security
limit; a valid control frame has at most 125, RFC 6455 §5.5)."""

_TEXT, _BINARY, _CLOSE = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CLOSE)
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_new_message = fast_constructor(Message)

# RFC 6455 §7.4.1/§7.4.2 and the IANA registry (§11.7): codes that may be sent.
_VALID_CLOSE_1000_2999 = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


def close_code_valid(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 §7.4): 1000-1003 and
    1007-1014 (1004 reserved; 1005, 1006, 1015 "MUST NOT be set as a status code";
    1016-2999 unassigned in the IANA registry), and 3000-4999 (libraries,
    applications); below 1000 and above 4999 are invalid."""
    if 3000 <= code <= 4999:
        return True
    return code in _VALID_CLOSE_1000_2999


class _Msg:
    """A message (or control frame) being assembled."""

    __slots__ = (
        "opcode",
        "frames",
        "length",
        "seen",
        "hasher",
        "preview",
        "parts",
        "kept",
        "ctl",
        "check_utf8",
        "utf8",
        "utf8_bad_at",
        "compressed",
        "wire_hasher",
        "inflating",
        "undecodable",
        "lost",
        "error",
        "exceeded",
        "first_packet",
        "first_ts",
        "last_packet",
        "last_ts",
        "offset",
        "complete",
    )

    def __init__(self, opcode: int, compressed: bool, keep: bool) -> None:
        self.opcode = opcode
        self.frames = 0
        self.length = 0  # declared
        self.seen = 0  # bytes digested
        self.hasher = blake2b(digest_size=16)
        self.preview = bytearray()
        self.parts: list[bytes] | None = [] if keep else None
        self.kept = 0
        self.ctl: bytearray | None = bytearray() if opcode >= 0x8 else None
        # §8.1: text must be UTF-8 (checked on the decompressed bytes when compressed).
        self.check_utf8 = opcode == _TEXT
        self.utf8 = None  # incremental decoder, created at the first non-ASCII byte
        self.utf8_bad_at: int | None = None
        self.compressed = compressed
        # Compressed messages (RFC 7692): digest of the wire bytes, used when the
        # message cannot be decompressed; decompression state of the message.
        self.wire_hasher = blake2b(digest_size=16) if compressed else None
        self.inflating = False  # its bytes go through the Inflater
        self.undecodable = False  # digest over the wire bytes, no preview
        self.lost: str | None = None  # why the context was lost (deflate_context_lost)
        self.error: str | None = None  # invalid DEFLATE data (ws_deflate_error)
        self.exceeded = False  # beyond max_decompressed (ws_deflate_limit_exceeded)
        self.first_packet = 0
        self.first_ts = 0
        self.last_packet = 0
        self.last_ts = 0
        self.offset = 0
        self.complete = True


class MessageAssembler:
    """Assembles the messages of one direction of one connection (RFC 6455 §5.4).

    ``keep_payloads`` keeps each reassembled payload in ``Message.payload`` when it
    is at most ``max_kept`` bytes (security limit). Findings: ``ws_unexpected_continuation``
    (the frame is dropped), ``ws_fragmented_message_interrupted`` (the unfinished
    message is emitted with ``complete=False``, the new one starts),
    ``ws_incomplete_message`` (at eof), ``ws_invalid_utf8``, ``ws_bad_close_code``,
    ``ws_close_payload_one_byte``, ``ws_data_after_close`` (once). Frames with a
    reserved opcode (reported by the decoder) are dropped.

    permessage-deflate (RFC 7692): ``deflate`` holds this direction's negotiated
    parameters (:func:`wsanalyze.deflate.deflate_params`), None when it was not
    negotiated; ``deflate_unknown`` says it may be in use but the handshake was not
    captured (its parameters, and the context of earlier messages, are unknown: no
    compressed message is decompressed). ``max_decompressed`` bounds the decompressed
    bytes of one message (security limit). Findings, when permessage-deflate is in use
    (``deflate`` given or ``deflate_unknown``): ``ws_rsv1_on_continuation_or_control``
    (§6, the bit is ignored), ``ws_deflate_error`` (invalid DEFLATE data; the message
    counts as not decompressed), ``ws_deflate_limit_exceeded`` (the message is cut at
    the limit, ``complete`` False), ``deflate_context_lost`` (once per direction, at the
    first message that cannot be decompressed because of a gap or lost context).
    """

    def __init__(
        self,
        direction: Direction,
        *,
        keep_payloads: bool = False,
        max_kept: int = DEFAULT_MAX_BUFFER,
        deflate: DeflateParams | None = None,
        deflate_unknown: bool = False,
        max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    ) -> None:
        self.direction = direction
        self.keep_payloads = keep_payloads
        self.max_kept = max_kept
        self.deflate = deflate
        self.deflate_unknown = deflate_unknown and deflate is None
        self.max_decompressed = max_decompressed
        self.compressed_offsets: set[int] = set()
        # permessage-deflate in use: RSV1 means "compressed" (RFC 7692 §6).
        self._pmd = deflate is not None or deflate_unknown
        self._inflater = Inflater(deflate, limit=max_decompressed) if deflate is not None else None
        # Why later compressed messages cannot be decompressed (context takeover).
        self._lost_why: str | None = (
            "no opening handshake captured: the permessage-deflate parameters and the "
            "context of earlier messages are unknown"
            if self.deflate_unknown
            else None
        )
        self._lost_reported = False
        self._next_offset: int | None = None  # where the next frame should start
        self.closed = False  # this direction sent a close frame
        self._after_close_reported = False
        self._msg: _Msg | None = None  # data message in progress
        self._stream_offset: int | None = None  # frame whose chunks are arriving
        self._stream_target: _Msg | None = None
        self._limiter = FindingLimiter(direction)
        self._done = False

    # -- public API -------------------------------------------------------------

    def frame(self, f: Frame) -> list[Message | Finding]:
        """Take the next frame of the direction; returns the messages it completes
        and the findings it causes."""
        out: list = []
        inflater = self._inflater
        if self._stream_offset is not None and self._stream_offset == f.offset:
            m = self._stream_target
            self._stream_offset = self._stream_target = None
            if inflater is not None:
                self._next_offset = f.offset + f.header_len + f.payload_len
        else:
            self._stream_offset = self._stream_target = None
            if inflater is not None:
                nxt = self._next_offset
                if nxt is not None and f.offset != nxt:
                    self._bytes_lost(nxt, f.offset)
                self._next_offset = f.offset + f.header_len + f.payload_len
            opcode = f.opcode
            payload = f.payload
            if (
                f.fin
                and f.complete
                and payload is not None
                and self._msg is None
                and not self.closed
                and not f.rsv1
                and opcode in (_TEXT, _BINARY, 0x9, 0xA)
            ):
                # Common path: a whole message (or ping/pong) in one complete frame.
                self._single(f, payload, out)
                return out
            m = self._begin(opcode, f.rsv1, f.offset, (f.first_packet, f.last_packet), f.ts_ns, out)
            if m is not None and payload:
                if m.compressed:
                    self._compressed(m, payload)
                else:
                    self._update(m, payload)
        if m is not None:
            self._end(m, f, out)
        return out

    def chunk(self, c: PayloadChunk) -> list[Message | Finding]:
        """Take payload bytes of a frame whose ``Frame.payload`` will be None (from a
        decoder with ``stream_payloads=True``); the frame itself follows."""
        out: list = []
        if self._stream_offset != c.frame_offset:
            if self._inflater is not None:
                nxt = self._next_offset
                if nxt is not None and c.frame_offset != nxt:
                    self._bytes_lost(nxt, c.frame_offset)
                self._next_offset = None  # set by the Frame that follows
            self._stream_offset = c.frame_offset
            self._stream_target = self._begin(
                c.opcode, c.rsv1, c.frame_offset, (c.first_packet, c.packet), c.ts_ns, out
            )
        m = self._stream_target
        if m is not None:
            if m.compressed:
                self._compressed(m, c.data)
            else:
                self._update(m, c.data)
        return out

    def eof(self, ts_ns: int) -> list[Message | Finding]:
        """The direction ended: an unfinished message is emitted with ``complete=False``
        after ``ws_incomplete_message``; then the suppressed-finding summaries."""
        out: list = []
        if self._done:
            return out
        self._done = True
        target = self._stream_target
        if target is not None and target is not self._msg and target.frames == 0:
            # A control frame whose chunks came but whose Frame never did.
            target.complete = False
            out.append(self._finish(target, out))
        self._stream_offset = self._stream_target = None
        m = self._msg
        if m is not None:
            self._msg = None
            self._limiter.emit(
                out,
                "ws_incomplete_message",
                f"expected=a final fragment (FIN), found=end of stream after "
                f"{m.frames} frames of a {Opcode.name_of(m.opcode)} message",
                (m.first_packet, m.last_packet),
                m.offset,
                ts_ns,
            )
            m.complete = False
            out.append(self._finish(m, out))
        out.extend(self._limiter.summary(ts_ns))
        return out

    # -- assembly -----------------------------------------------------------------

    def _single(self, f: Frame, payload: bytes, out: list) -> None:
        """Emit a complete, uncompressed single-frame data message, ping or pong
        (no assembly state involved)."""
        opcode = f.opcode
        utf8_valid = None
        if opcode == _TEXT:
            utf8_valid = True
            if not payload.isascii():
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    utf8_valid = False
                    self._bad_utf8(
                        exc.start, (f.first_packet, f.last_packet), f.offset, f.ts_ns, out
                    )
        keep = self.keep_payloads and len(payload) <= self.max_kept
        out.append(
            _new_message(
                self.direction,
                opcode,
                1,
                f.payload_len,
                blake2b(payload, digest_size=16).digest(),
                payload[:PREVIEW_BYTES],
                f.first_packet,
                f.last_packet,
                f.first_ts_ns,
                f.ts_ns,
                f.offset,
                None,
                None,
                utf8_valid,
                True,
                payload if keep else None,
                False,
                None,
                None,
                None,
                None,
            )
        )

    def _begin(
        self,
        opcode: int,
        rsv1: bool,
        offset: int,
        packets: tuple[int, int],
        ts_ns: int,
        out: list,
    ) -> _Msg | None:
        """Start processing a frame: returns the message its payload goes to, or
        None when the frame is dropped."""
        emit = self._limiter.emit
        if self.closed and not self._after_close_reported:
            # §5.5.1: after sending a Close frame, an endpoint "MUST NOT send any
            # more data frames"; wsanalyze reports any frame.
            self._after_close_reported = True
            emit(
                out,
                "ws_data_after_close",
                f"expected=nothing after the close frame, found={Opcode.name_of(opcode)} frame",
                packets,
                offset,
                ts_ns,
            )
        if rsv1 and self._pmd and (opcode == 0 or 0x8 <= opcode <= 0xA):
            # RFC 7692 §6: "An endpoint MUST NOT set the "Per-Message Compressed" bit
            # of control frames and non-first fragments of a data message."
            emit(
                out,
                "ws_rsv1_on_continuation_or_control",
                f"expected=RSV1 clear, found=RSV1 set on a {Opcode.name_of(opcode)} frame",
                packets,
                offset,
                ts_ns,
            )
        if opcode >= 0x8:
            if opcode > 0xA:
                return None
            return _Msg(opcode, False, self.keep_payloads)
        if opcode == 0:
            m = self._msg
            if m is None:
                # §5.4: a fragmented message starts with a text/binary frame with
                # FIN clear and continues with continuation frames.
                emit(
                    out,
                    "ws_unexpected_continuation",
                    "expected=text or binary frame, found=continuation frame "
                    "with no fragmented message in progress",
                    packets,
                    offset,
                    ts_ns,
                )
            return m
        if opcode in (_TEXT, _BINARY):
            m = self._msg
            if m is not None:
                # §5.4: "the fragments of one message MUST NOT be interleaved
                # between the fragments of another message".
                emit(
                    out,
                    "ws_fragmented_message_interrupted",
                    f"expected=continuation frame, found={Opcode.name_of(opcode)} frame "
                    f"after {m.frames} frames of an unfinished {Opcode.name_of(m.opcode)} "
                    "message",
                    packets,
                    offset,
                    ts_ns,
                )
                self._msg = None
                m.complete = False
                out.append(self._finish(m, out))
            m = _Msg(opcode, bool(rsv1), self.keep_payloads)
            if rsv1:
                self._start_compressed(m)
            self._msg = m
            return m
        return None  # reserved data opcode (reported by the decoder)

    # -- permessage-deflate (RFC 7692) ------------------------------------------------

    def _start_compressed(self, m: _Msg) -> None:
        """A compressed message starts: decompress it if the context allows."""
        inflater = self._inflater
        if inflater is not None and inflater.begin():
            m.inflating = True
            return
        m.undecodable = True
        if inflater is not None:
            m.lost = self._lost_why or "the compression context of an earlier message"
        elif self._pmd:
            m.lost = self._lost_why
        # else RSV1 without permessage-deflate (the decoder reported ws_reserved_bits).

    def _compressed(self, m: _Msg, data: bytes) -> None:
        """Wire bytes of a compressed message: digest them, decompress them, and pass
        the decompressed pieces on to :meth:`_update`."""
        wire_hasher = m.wire_hasher
        assert wire_hasher is not None
        wire_hasher.update(data)
        if not m.inflating:
            return
        inflater = self._inflater
        assert inflater is not None
        for piece in inflater.feed(data):
            self._update(m, piece)
        if not inflater.active:
            self._inflate_stopped(m)

    def _inflate_end(self, m: _Msg) -> None:
        """The last frame of a compressed message arrived (RFC 7692 §7.2.2)."""
        inflater = self._inflater
        assert inflater is not None
        for piece in inflater.end():
            self._update(m, piece)
        self._inflate_stopped(m)

    def _inflate_stopped(self, m: _Msg) -> None:
        """The Inflater stopped on ``m``: finished, invalid data or the limit."""
        inflater = self._inflater
        assert inflater is not None
        m.inflating = False
        if inflater.error is not None:
            m.error = inflater.error
            m.undecodable = True
            self._lost_why = self._lost_why or (
                f"the message at offset {m.offset} could not be decompressed (ws_deflate_error)"
            )
        elif inflater.exceeded:
            m.exceeded = True
            m.complete = False
            self._lost_why = self._lost_why or (
                f"the message at offset {m.offset} was not decompressed beyond "
                f"{self.max_decompressed} bytes (ws_deflate_limit_exceeded)"
            )

    def _cannot_decompress(self, m: _Msg, why: str) -> None:
        """``m`` lost bytes (a gap inside it): it cannot be decompressed."""
        if m.inflating:
            inflater = self._inflater
            assert inflater is not None
            inflater.abandon()
            m.inflating = False
        if not m.undecodable:
            m.undecodable = True
            m.lost = why
        if self._inflater is not None and not self._inflater.params.no_context_takeover:
            self._lost_why = self._lost_why or f"the message at offset {m.offset} lost bytes"

    def _bytes_lost(self, expected: int, found: int) -> None:
        """A frame does not start where the previous one ended: bytes of the direction
        were lost (gap) or skipped (resynchronisation)."""
        m = self._msg
        why = f"bytes lost between stream offsets {expected} and {found}"
        if m is not None and m.compressed:
            self._cannot_decompress(m, why)
        inflater = self._inflater
        assert inflater is not None
        inflater.lose_context()
        if not inflater.params.no_context_takeover:
            self._lost_why = self._lost_why or why

    def _update(self, m: _Msg, data: bytes) -> None:
        """Digest, preview, keep and UTF-8-check the next payload bytes of ``m``."""
        n = len(data)
        if not n:
            return
        start = m.seen
        m.seen = start + n
        m.hasher.update(data)
        if len(m.preview) < PREVIEW_BYTES:
            m.preview += data[: PREVIEW_BYTES - len(m.preview)]
        if m.parts is not None:
            if m.kept + n > self.max_kept:
                m.parts = None
            else:
                m.parts.append(data)
                m.kept += n
        if m.ctl is not None and len(m.ctl) < CONTROL_KEEP:
            m.ctl += data[: CONTROL_KEEP - len(m.ctl)]
        if m.check_utf8:
            dec = m.utf8
            if dec is None:
                if data.isascii():
                    return
                dec = m.utf8 = _Utf8Decoder()
            try:
                dec.decode(data, False)
            except UnicodeDecodeError as exc:
                m.check_utf8 = False
                m.utf8_bad_at = max(0, start + exc.start - len(dec.getstate()[0]))

    def _end(self, m: _Msg, f: Frame, out: list) -> None:
        """Finish processing a frame of ``m``; emits ``m`` when it is complete."""
        m.frames += 1
        if m.frames == 1:
            m.first_packet, m.first_ts, m.offset = f.first_packet, f.first_ts_ns, f.offset
        m.last_packet, m.last_ts = f.last_packet, f.ts_ns
        m.length += f.payload_len
        if not f.complete:
            m.complete = False
            if m.compressed:
                self._cannot_decompress(m, f"a gap inside the message at offset {m.offset}")
        if m.opcode >= 0x8:
            # §5.5: control frames stand alone (a fragmented one was reported by the
            # decoder and is still taken as a whole).
            out.append(self._finish(m, out))
            if m.opcode == _CLOSE:
                self.closed = True
        elif f.fin:
            if self._msg is m:
                self._msg = None
            if m.inflating:
                self._inflate_end(m)
            out.append(self._finish(m, out))

    def _finish(self, m: _Msg, out: list) -> Message:
        """Build the Message for ``m`` (findings about its content go to ``out`` first)."""
        packets = (m.first_packet, m.last_packet)
        utf8_valid: bool | None = None
        close_code: int | None = None
        close_reason: bytes | None = None
        if m.compressed:
            self._finish_compressed(m, packets, out)
        if m.opcode == _TEXT and not m.undecodable:
            if m.utf8_bad_at is None and m.check_utf8 and m.complete and m.utf8 is not None:
                try:
                    m.utf8.decode(b"", True)  # a sequence cut at the end is invalid
                except UnicodeDecodeError:
                    m.utf8_bad_at = max(0, m.seen - len(m.utf8.getstate()[0]))
            if m.utf8_bad_at is not None:
                utf8_valid = False
                self._bad_utf8(m.utf8_bad_at, packets, m.offset, m.last_ts, out)
            elif m.complete:
                utf8_valid = True
        elif m.opcode == _CLOSE:
            close_code, close_reason, utf8_valid = self._close(m, packets, out)
        payload = None
        if m.parts is not None and not m.exceeded:
            payload = b"".join(m.parts)
        if not m.compressed:
            payload_len, digest, preview, wire_len = m.length, m.hasher.digest(), m.preview, None
        elif m.undecodable:
            # Never show compressed bytes as if they were the payload.
            payload_len, digest, preview, wire_len = m.length, m.wire_hasher.digest(), b"", m.length
            utf8_valid = payload = None
        else:
            payload_len, digest, preview, wire_len = m.seen, m.hasher.digest(), m.preview, m.length
        return _new_message(
            self.direction,
            m.opcode,
            m.frames,
            payload_len,
            digest,
            bytes(preview),
            m.first_packet,
            m.last_packet,
            m.first_ts,
            m.last_ts,
            m.offset,
            close_code,
            close_reason,
            utf8_valid,
            m.complete,
            payload,
            m.compressed,
            wire_len,
            None,
            None,
            (not m.undecodable) if m.compressed else None,
        )

    def _finish_compressed(self, m: _Msg, packets: tuple[int, int], out: list) -> None:
        """Decompression findings of a compressed message about to be emitted."""
        self.compressed_offsets.add(m.offset)
        if m.inflating:  # never finished (interrupted, end of stream)
            inflater = self._inflater
            assert inflater is not None
            inflater.abandon()
            m.inflating = False
            if not inflater.params.no_context_takeover:
                self._lost_why = self._lost_why or (
                    f"the message at offset {m.offset} never finished"
                )
        if m.error is not None:
            # RFC 7692 §7.2.2: the payload must decompress as DEFLATE data (RFC 1951).
            self._limiter.emit(
                out,
                "ws_deflate_error",
                f"expected=valid DEFLATE data, found={m.error} "
                f"({m.length} bytes on the wire, {m.seen} decompressed)",
                packets,
                m.offset,
                m.last_ts,
            )
        elif m.exceeded:
            self._limiter.emit(
                out,
                "ws_deflate_limit_exceeded",
                f"expected<={self.max_decompressed} decompressed bytes, found=more from "
                f"{m.length} bytes on the wire (kept the first {m.seen})",
                packets,
                m.offset,
                m.last_ts,
            )
        elif m.undecodable and m.lost is not None and not self._lost_reported:
            self._lost_reported = True
            out.append(
                finding(
                    "deflate_context_lost",
                    f"expected=every compressed message decompressible, found={m.lost}; "
                    "this and later undecodable messages of the direction are counted "
                    "with digests of their wire bytes",
                    packets=packets,
                    direction=self.direction,
                    offset=m.offset,
                    ts_ns=m.last_ts,
                )
            )

    def _close(
        self, m: _Msg, packets: tuple[int, int], out: list
    ) -> tuple[int | None, bytes | None, bool | None]:
        """Parse a close payload (RFC 6455 §5.5.1): "the first two bytes of the body
        MUST be a 2-byte unsigned integer (in network byte order) representing a
        status code", then a UTF-8 reason. Returns (code, reason, reason UTF-8 valid)."""
        body = bytes(m.ctl or b"")
        emit = self._limiter.emit
        if m.seen == 0:
            return None, None, None
        if m.seen == 1:
            emit(
                out,
                "ws_close_payload_one_byte",
                f"expected=0 or >=2 bytes, found=1 byte ({body.hex()})",
                packets,
                m.offset,
                m.last_ts,
            )
            return None, None, None
        code = int.from_bytes(body[:2], "big")
        if not close_code_valid(code):
            emit(
                out,
                "ws_bad_close_code",
                f"expected=1000-1003, 1007-1014 or 3000-4999, found={code}",
                packets,
                m.offset,
                m.last_ts,
            )
        reason = body[2:]
        # A reason cut by CONTROL_KEEP or by a gap may end inside a character.
        final = m.complete and m.seen <= CONTROL_KEEP
        try:
            _Utf8Decoder().decode(reason, final)
            valid = True
        except UnicodeDecodeError as exc:
            valid = False
            self._bad_utf8(exc.start, packets, m.offset, m.last_ts, out, what="close reason")
        return code, reason, valid

    def _bad_utf8(
        self,
        at: int,
        packets: tuple[int, int],
        offset: int,
        ts_ns: int,
        out: list,
        what: str = "text message",
    ) -> None:
        # §8.1: "a text frame ... whose payload is not valid UTF-8" fails the connection.
        self._limiter.emit(
            out,
            "ws_invalid_utf8",
            f"expected=UTF-8, found=invalid sequence near byte {at} of the {what}",
            packets,
            offset,
            ts_ns,
        )
