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
    asm = MessageAssembler(d)
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

Compression (RFC 7692): a data message whose first frame has RSV1 set is
compressed. It is not decompressed; its digest and preview are of the compressed
bytes and ``utf8_valid`` is None for compressed text. :attr:`MessageAssembler.compressed_offsets`
holds the ``offset`` of every compressed message emitted (``Message`` has no field
for it).

Security limits: ``max_kept`` (default 16 MiB) bounds a kept payload;
:data:`CONTROL_KEEP` bounds the bytes of a control frame kept for close parsing;
findings of one code are emitted at most :data:`~wsanalyze.frames.FINDING_LIMIT`
times, then counted in one ``ws_findings_suppressed`` finding at :meth:`~MessageAssembler.eof`.
"""

from __future__ import annotations

import codecs
from hashlib import blake2b

from .frames import DEFAULT_MAX_BUFFER, FindingLimiter, PayloadChunk, fast_constructor
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
        # §8.1: text must be UTF-8; not checkable on compressed payloads.
        self.check_utf8 = opcode == _TEXT and not compressed
        self.utf8 = None  # incremental decoder, created at the first non-ASCII byte
        self.utf8_bad_at: int | None = None
        self.compressed = compressed
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
    """

    def __init__(
        self,
        direction: Direction,
        *,
        keep_payloads: bool = False,
        max_kept: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.direction = direction
        self.keep_payloads = keep_payloads
        self.max_kept = max_kept
        self.compressed_offsets: set[int] = set()
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
        if self._stream_offset is not None and self._stream_offset == f.offset:
            m = self._stream_target
            self._stream_offset = self._stream_target = None
        else:
            self._stream_offset = self._stream_target = None
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
                self._update(m, payload)
        if m is not None:
            self._end(m, f, out)
        return out

    def chunk(self, c: PayloadChunk) -> list[Message | Finding]:
        """Take payload bytes of a frame whose ``Frame.payload`` will be None (from a
        decoder with ``stream_payloads=True``); the frame itself follows."""
        out: list = []
        if self._stream_offset != c.frame_offset:
            self._stream_offset = c.frame_offset
            self._stream_target = self._begin(
                c.opcode, c.rsv1, c.frame_offset, (c.first_packet, c.packet), c.ts_ns, out
            )
        m = self._stream_target
        if m is not None:
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
            self._msg = m
            return m
        return None  # reserved data opcode (reported by the decoder)

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
        if m.opcode >= 0x8:
            # §5.5: control frames stand alone (a fragmented one was reported by the
            # decoder and is still taken as a whole).
            out.append(self._finish(m, out))
            if m.opcode == _CLOSE:
                self.closed = True
        elif f.fin:
            if self._msg is m:
                self._msg = None
            out.append(self._finish(m, out))

    def _finish(self, m: _Msg, out: list) -> Message:
        """Build the Message for ``m`` (findings about its content go to ``out`` first)."""
        packets = (m.first_packet, m.last_packet)
        utf8_valid: bool | None = None
        close_code: int | None = None
        close_reason: bytes | None = None
        if m.opcode == _TEXT and not m.compressed:
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
        if m.compressed:
            self.compressed_offsets.add(m.offset)
        payload = None
        if m.parts is not None:
            payload = b"".join(m.parts)
        return _new_message(
            self.direction,
            m.opcode,
            m.frames,
            m.length,
            m.hasher.digest(),
            bytes(m.preview),
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
            False,
            None,
            None,
            None,
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
