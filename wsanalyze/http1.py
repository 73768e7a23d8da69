"""HTTP/1.x message heads, sans-IO (RFC 9112), one parser per direction of a connection.

An :class:`Http1Parser` is fed the bytes of ONE direction in stream order and returns
the heads it completes: :class:`~wsanalyze.model.RequestHead` on the client-to-server
direction, :class:`~wsanalyze.model.ResponseHead` on the server-to-client direction,
plus :class:`~wsanalyze.model.Finding` for what it could not parse. Bodies are
delimited by RFC 9112 §6.3 and skipped (never kept). Traffic never raises.

Typical use by the analysis (one parser per direction)::

    client = Http1Parser(Direction.CLIENT_TO_SERVER)
    server = Http1Parser(Direction.SERVER_TO_CLIENT)

    # client bytes
    for ev in client.feed(data, ts_ns, packet):
        if isinstance(ev, RequestHead):
            server.expect_response_to(ev.method)      # FIFO: HEAD/CONNECT change the response
    # After a request for which ``pause_on`` is true (by default
    # :func:`upgrade_requested`: a WebSocket handshake attempt), the client parser
    # pauses by itself once that request (and its body) is complete, even in the
    # middle of a ``feed``: later client bytes are held, not parsed, because they are
    # HTTP only if the server refuses (RFC 9110 §7.8). Calling ``client.pause()``
    # again on seeing the request is harmless.

    # server bytes
    for ev in server.feed(data, ts_ns, packet):
        if isinstance(ev, ResponseHead):
            if server.switched:                        # 101, or 2xx to CONNECT
                c_off, c_rest = client.take_rest(); client.stop()
                s_off, s_rest = server.take_rest(); server.stop()
                # ... feed c_rest / s_rest (and later bytes) to the WebSocket decoders
            elif ev.status >= 200 and client.paused:  # refused: the client is still HTTP
                events += client.resume()              # (never resume on 100 Continue)

Stream accounting: every byte of the direction (fed or gap) ends up in exactly one
counter, so that at any time::

    decoded_bytes + undecodable_bytes + gap_bytes + taken_bytes + buffered == position

``decoded_bytes`` are bytes of heads, of empty lines before a head and of skipped
bodies (chunk framing included); ``undecodable_bytes`` are bytes that could not be
parsed (after a fatal finding, discarded while resynchronising after a gap, dropped
from a full hold buffer, left at the end); ``gap_bytes`` were never captured;
``taken_bytes`` were handed back by :meth:`Http1Parser.take_rest`; ``buffered`` are
held right now. After :meth:`Http1Parser.stop` nothing is counted any more.

Limits (security limits, documented): a head, a chunk-size line and a trailer section
are each at most ``max_head`` bytes (64 KiB by default); while paused or switched at
most ``max_head`` bytes are held (the bytes that arrived in the same ``feed`` as the
head that started the hold are always kept).

Leniency, as an observer rather than an endpoint: a bare LF ends a line (RFC 9112 §2.2
"a recipient MAY recognize a single LF as a line terminator and ignore any preceding
CR"); empty lines before a head are skipped (§2.2 "SHOULD ignore at least one empty
line (CRLF) received prior to the request-line"); obsolete line folding is replaced by
one SP (§5.2 "replace each received obs-fold with one or more SP octets"); whitespace
between a field name and its colon is removed. Each such head gets one
``http_lenient_parse`` finding (info) naming what was tolerated.
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

from .catalogue import finding
from .model import (
    Direction,
    Finding,
    Headers,
    RequestHead,
    ResponseHead,
    header_value,
    header_values,
)

Event = RequestHead | ResponseHead | Finding
"""What :meth:`Http1Parser.feed` and friends return, in stream order."""

MAX_HEAD = 65536
"""Default limit on a head (and on a chunk-size line, a trailer section, a hold buffer)."""

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
# RFC 9112 §3.2: request-target has no whitespace; controls are rejected, obs-text kept.
_TARGET = re.compile(rb"[^\x00-\x20\x7f]*")
_HEX = re.compile(rb"[0-9A-Fa-f]*")
_OWS = b" \t"

_LF, _CR, _SP, _HTAB, _SEMI = 0x0A, 0x0D, 0x20, 0x09, 0x3B
_DIGIT_SLOT = 0x23  # "#" in a template matches one DIGIT
_VERSION_TPL = b"HTTP/#.#"
_STATUS_TPL = b"HTTP/#.# ###"

# Results of the start-line / chunk-line scanners.
_MORE = 0  # the bytes so far are a valid prefix; need more
_BAD = 1  # (_BAD, position, what was expected)
_OK = 2  # (_OK, parts...)


class _S(enum.Enum):
    """Parser states."""

    HEAD = "head"  # expecting a head (or empty lines before one)
    BODY = "body"  # Content-Length body, ``_remaining`` bytes left
    CHUNK_SIZE = "chunk-size"  # expecting a chunk-size line (RFC 9112 §7.1)
    CHUNK_DATA = "chunk-data"  # ``_remaining`` bytes of chunk-data left
    CHUNK_END = "chunk-end"  # expecting the CRLF after chunk-data
    TRAILERS = "trailers"  # expecting the trailer section and its empty line (§7.1.2)
    UNTIL_CLOSE = "until-close"  # response body delimited by the end of the connection
    SWITCHED = "switched"  # after 101 / 2xx to CONNECT: not HTTP any more, bytes held
    RESYNC = "resync"  # after a gap: looking for a start line
    FAILED = "failed"  # after a fatal finding: everything is undecodable


_BODY_STATES = (_S.BODY, _S.CHUNK_DATA)


def upgrade_requested(head: RequestHead) -> bool:
    """Whether ``head`` attempts a WebSocket opening handshake (RFC 6455 §4.1).

    True when an ``Upgrade`` field lists the protocol ``websocket`` (case-insensitive,
    comma lists and ``name/version`` forms allowed, RFC 9110 §7.8), or when the request
    carries ``Sec-WebSocket-Key`` (a handshake whose Upgrade field a proxy dropped still
    counts as attempted). This is the default ``pause_on`` of :class:`Http1Parser` and
    the definition behind :func:`wsanalyze.handshake.is_upgrade_request`.
    """
    if header_value(head.headers, b"sec-websocket-key") is not None:
        return True
    return any(
        p.split(b"/", 1)[0].strip().lower() == b"websocket"
        for p in header_values(head.headers, b"upgrade")
    )


def _template(b: bytearray, pos: int, end: int, tpl: bytes) -> int:
    """Match ``b[pos:end]`` against ``tpl`` (``#`` = one DIGIT). Return the index of the
    first mismatching byte, ``end`` when the bytes ran out first, ``pos + len(tpl)`` when
    the whole template matched."""
    for k, t in enumerate(tpl):
        q = pos + k
        if q >= end:
            return q
        c = b[q]
        if not (0x30 <= c <= 0x39 if t == _DIGIT_SLOT else c == t):
            return q
    return pos + len(tpl)


def _scan_request_line(b: bytearray, s: int, e: int, complete: bool) -> tuple:
    """RFC 9112 §3: ``request-line = method SP request-target SP HTTP-version``.

    Scans ``b[s:e]`` (the line without its CRLF; ``complete`` False when the line end
    has not arrived). Returns ``(_MORE,)``, ``(_BAD, index, expected)`` for the first
    offending byte (the same whatever prefix is available) or
    ``(_OK, method_end, target_end)``.
    """
    me = _TOKEN.match(b, s, e).end()  # type: ignore[union-attr]
    if me == e and not complete:
        return (_MORE,)
    if me == s:
        return (_BAD, s, "method (a token)")
    if me == e or b[me] != _SP:
        return (_BAD, me, "SP after the method")
    ts = me + 1
    te = _TARGET.match(b, ts, e).end()  # type: ignore[union-attr]
    if te == e and not complete:
        return (_MORE,)
    if te == ts:
        return (_BAD, ts, "request-target")
    if te == e or b[te] != _SP:
        return (_BAD, te, "SP after the request-target")
    vs = te + 1
    q = _template(b, vs, e, _VERSION_TPL)
    if q < vs + len(_VERSION_TPL):
        if q == e and not complete:
            return (_MORE,)
        return (_BAD, q, "HTTP-version (HTTP/DIGIT.DIGIT)")
    if q < e:
        return (_BAD, q, "end of the request-line")
    if not complete:
        return (_MORE,)
    return (_OK, me, te)


def _scan_status_line(b: bytearray, s: int, e: int, complete: bool) -> tuple:
    """RFC 9112 §4: ``status-line = HTTP-version SP status-code SP [ reason-phrase ]``.

    Same contract as :func:`_scan_request_line`; also accepts a status line that ends
    right after the status code (a missing SP before an empty reason, seen in the wild).
    Returns ``(_OK, reason_start)`` on success.
    """
    q = _template(b, s, e, _STATUS_TPL)
    end_tpl = s + len(_STATUS_TPL)
    if q < end_tpl:
        if q == e and not complete:
            return (_MORE,)
        what = "HTTP-version (HTTP/DIGIT.DIGIT)" if q < s + 8 else "SP status-code (3DIGIT)"
        return (_BAD, q, what)
    if q == e:
        return (_OK, e) if complete else (_MORE,)
    if b[q] != _SP:
        return (_BAD, q, "SP after the status-code")
    return (_OK, q + 1) if complete else (_MORE,)


def _scan_chunk_line(b: bytearray, s: int, e: int, complete: bool) -> tuple:
    """RFC 9112 §7.1: ``chunk-size [ chunk-ext ] CRLF`` with ``chunk-size = 1*HEXDIG``
    and ``chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )``.

    Extensions are accepted without further checks. At most 16 hex digits (a size
    beyond 2^64 cannot be meant). Returns ``(_OK, size)`` on success.
    """
    h = _HEX.match(b, s, e).end()  # type: ignore[union-attr]
    if h - s > 16:
        return (_BAD, s + 16, "chunk-size of at most 16 HEXDIG")
    if h == e and not complete:
        return (_MORE,)
    if h == s:
        return (_BAD, s, "chunk-size (HEXDIG)")
    p = h
    while p < e and b[p] in (_SP, _HTAB):
        p += 1
    if p < e and b[p] != _SEMI:
        return (_BAD, p, "';' or the end of the chunk-size line")
    if not complete:
        return (_MORE,)
    return (_OK, int(bytes(b[s:h]), 16))


def _find_section_end(b: bytearray, start: int, limit: int) -> int:
    """Index just past the first empty line after ``start`` in ``b[start:limit]``: the
    first LF followed by LF or CRLF. -1 when there is none yet."""
    a = b.find(b"\n\n", start, limit)
    c = b.find(b"\n\r\n", start, limit)
    if a < 0:
        return -1 if c < 0 else c + 3
    if c < 0 or a < c:
        return a + 2
    return c + 3


class Http1Parser:
    """Sans-IO HTTP/1.x head parser for one direction of one connection (RFC 9112).

    ``direction`` CLIENT_TO_SERVER parses requests, SERVER_TO_CLIENT responses.
    ``max_head`` bounds a head (bytes, final empty line included), a chunk-size line, a
    trailer section and the hold buffer. ``pause_on`` (requests only) is called with
    each request head; when it returns True the parser pauses after that request's
    body (see :meth:`pause`). Pass None to never pause by itself.

    Public counters (bytes, see the module docstring): ``decoded_bytes``,
    ``undecodable_bytes``, ``gap_bytes``, ``taken_bytes``.
    """

    def __init__(
        self,
        direction: Direction,
        *,
        max_head: int = MAX_HEAD,
        pause_on: Callable[[RequestHead], bool] | None = upgrade_requested,
    ) -> None:
        if max_head < 16:
            raise ValueError("max_head must be at least 16 bytes")
        self.direction = direction
        self.max_head = max_head
        self._requests = direction == Direction.CLIENT_TO_SERVER
        self._pause_on = pause_on if self._requests else None
        self.decoded_bytes = 0
        self.undecodable_bytes = 0
        self.gap_bytes = 0
        self.taken_bytes = 0
        self._buf = bytearray()
        self._i = 0  # parse position in _buf (reset to 0 by _compact)
        self._buf_off = 0  # stream offset of _buf[0]
        self._pos = 0  # stream offset of the next byte to arrive
        self._hole = 0  # bytes lost (gap / dropped) after _buf while holding
        # one mark per feed: stream offset where its bytes start, packet, ts_ns
        self._m_off: list[int] = []
        self._m_pkt: list[int] = []
        self._m_ts: list[int] = []
        self._state = _S.HEAD
        self._remaining = 0
        self._scan_hint = 0  # stream offset up to which the current search found nothing
        self._paused = False
        self._overflow_reported = False
        self._stopped = False
        self._ended = False
        self._methods: deque[bytes] = deque()
        self._resync_need_lf = False
        self._resync_discarded = 0
        self._resync_from: int | None = None
        self._resync_packets: list[int] = []
        self._pending_findings: list[Finding] = []
        # start-line memo: [start offset, LF searched, prefix validated, valid line]
        self._line_memo: list = [-1, 0, 0, None]
        self._last_packet = 0
        self._last_ts = 0

    # --- public API -------------------------------------------------------------

    @property
    def position(self) -> int:
        """Stream offset of the next byte of this direction (bytes fed + gap lengths)."""
        return self._pos

    @property
    def buffered(self) -> int:
        """Bytes held right now (a partial head, or bytes held while paused/switched)."""
        return len(self._buf) - self._i

    @property
    def paused(self) -> bool:
        """True once a pause was requested (by ``pause_on`` or :meth:`pause`) and until
        :meth:`resume`; it takes effect at the next message boundary."""
        return self._paused

    @property
    def switched(self) -> bool:
        """True after a 101 (Switching Protocols) or a 2xx to CONNECT: HTTP is over on
        this connection (RFC 9110 §7.8, §9.3.6); later bytes are held for
        :meth:`take_rest`."""
        return self._state is _S.SWITCHED

    @property
    def failed(self) -> bool:
        """True after a fatal finding: the rest of the direction is undecodable."""
        return self._state is _S.FAILED

    def expect_response_to(self, method: bytes) -> None:
        """Record, in order, the method of each request sent on this connection.

        Responses are matched FIFO (RFC 9112 §9.3: responses come in request order).
        A response to HEAD has no body, a 2xx to CONNECT starts a tunnel (RFC 9112
        §6.3 rules 1 and 2). Without a recorded method a response is taken to answer
        a GET. Only meaningful on the server-to-client parser.
        """
        self._methods.append(bytes(method))

    def feed(self, data: bytes, ts_ns: int, packet: int) -> list[Event]:
        """Parse the next bytes of the stream.

        ``data`` must follow the previous bytes (or gap) directly; ``ts_ns`` and
        ``packet`` are those of the packet that carried it. Returns the heads completed
        and the findings raised, in stream order. A no-op (``[]``) after :meth:`stop`
        or :meth:`eof`.
        """
        n = len(data)
        if self._stopped or self._ended or not n:
            return []
        start = self._pos
        self._pos += n
        self._last_packet = packet
        self._last_ts = ts_ns
        st = self._state
        if st is _S.FAILED:
            self.undecodable_bytes += n
            self._buf_off += n
            return []
        if self._holding():
            return self._hold(data, start, ts_ns, packet)
        if self._i == len(self._buf):
            # Fast path: skip body bytes without copying them into the buffer.
            if st is _S.UNTIL_CLOSE:
                self.decoded_bytes += n
                self._buf_off += n
                return []
            if st in _BODY_STATES:
                k = min(self._remaining, n)
                self.decoded_bytes += k
                self._remaining -= k
                self._buf_off += k
                if not self._remaining:
                    self._state = _S.HEAD if st is _S.BODY else _S.CHUNK_END
                    self._message_done_if_head()
                if k == n:
                    return []
                data = memoryview(data)[k:]
                start += k
                if self._holding():
                    return self._hold(data, start, ts_ns, packet)
        self._m_off.append(start)
        self._m_pkt.append(packet)
        self._m_ts.append(ts_ns)
        self._buf += data
        events: list[Event] = []
        self._run(events)
        return events

    def gap(self, length: int, ts_ns: int, packet: int) -> list[Event]:
        """``length`` bytes of the stream were never captured (RFC 9293 retransmission
        never seen, capture loss).

        Inside a body of known length the gap is skipped. Anywhere else the partial
        head or chunk line is discarded (undecodable) and the parser resynchronises on
        the next line that is a valid start line (``METHOD SP target SP HTTP/x.y`` or
        ``HTTP/x.y SP 3DIGIT``), possibly the very first bytes after the gap; an
        ``http_resync`` finding reports bytes discarded on the way. While paused or
        switched the gap is remembered: bytes after it are dropped (undecodable).
        """
        if self._stopped or self._ended or length <= 0:
            return []
        self._pos += length
        self.gap_bytes += length
        if self._holding():
            self._hole += length
            return []
        events: list[Event] = []
        self._apply_gap(length)
        self._run(events)
        return events

    def eof(self, ts_ns: int) -> list[Event]:
        """The direction ended (FIN, RST or end of capture) at ``ts_ns``.

        A partial head gives ``http_truncated_head``, an unfinished Content-Length or
        chunked body ``http_truncated_body``; leftover bytes count as undecodable. A
        paused parser first resumes (no 101 was seen, so the bytes were HTTP). Bytes
        held after a 101 stay available to :meth:`take_rest`. Later calls are no-ops.
        """
        if self._stopped or self._ended:
            return []
        events: list[Event] = []
        if self._paused and self._state is not _S.SWITCHED:
            self._pause_on = None
            events += self.resume()
        self._ended = True
        st = self._state
        b, i, n = self._buf, self._i, len(self._buf)
        left = n - i
        if st is _S.HEAD:
            if left and bytes(b[i:]).strip(b"\r\n"):
                off = self._buf_off + i
                events.append(
                    finding(
                        "http_truncated_head",
                        f"expected=end of head (empty line), found={left} bytes of an "
                        f"unfinished head starting {self._excerpt(i, i + 40)}",
                        packets=(self._packet_at(off), self._last_packet),
                        direction=self.direction,
                        offset=off,
                        ts_ns=ts_ns,
                    )
                )
            self._undecodable(left)
        elif st is _S.RESYNC:
            self._discard(left)
            self._resync_finish(events, None, ts_ns)
        elif st in (_S.BODY, _S.CHUNK_SIZE, _S.CHUNK_DATA, _S.CHUNK_END, _S.TRAILERS):
            what = (
                f"{self._remaining} more body bytes (Content-Length)"
                if st is _S.BODY
                else "the last chunk and trailer section (chunked)"
            )
            events.append(
                finding(
                    "http_truncated_body",
                    f"expected={what}, found=end of stream",
                    packets=(self._last_packet,) if self._last_packet else (),
                    direction=self.direction,
                    offset=self._pos,
                    ts_ns=ts_ns,
                )
            )
            self._undecodable(left)
        # SWITCHED: keep the bytes for take_rest(); UNTIL_CLOSE/FAILED: nothing left.
        self._compact()
        return events

    def pause(self) -> None:
        """Stop parsing at the next message boundary and hold later bytes unparsed.

        Called by the parser itself after a request for which ``pause_on`` is True (the
        analysis rarely needs to call it). While the pause is in effect, :meth:`feed`
        appends to a hold buffer of at most ``max_head`` bytes (excess bytes are
        dropped as undecodable, with one ``http_upgrade_buffer_overflow`` finding)
        and returns ``[]``. Then either :meth:`resume` (the server refused: parse the
        held bytes as HTTP) or :meth:`take_rest` + :meth:`stop` (the server switched).
        """
        if not self._paused:
            self._paused = True
            self._overflow_reported = False

    def resume(self) -> list[Event]:
        """Undo :meth:`pause` and parse the held bytes; returns their events. A gap or
        dropped bytes during the pause then count as a gap (resynchronisation). May
        pause again if a held request asks for an upgrade. ``[]`` when not paused."""
        if not self._paused or self._stopped:
            self._paused = False
            return []
        self._paused = False
        events: list[Event] = []
        self._run(events)
        if self._hole and not self._holding():
            hole, self._hole = self._hole, 0
            # the lost bytes are already counted (gap_bytes / undecodable_bytes)
            self._apply_gap(hole)
            self._run(events)
        return events

    def take_rest(self) -> tuple[int, bytes]:
        """Hand over the bytes held after the last parsed message: ``(stream offset of
        the first byte, bytes)``; the buffer is cleared (``taken_bytes`` counts them).

        Meant for a parser that is :attr:`switched` or :attr:`paused`. If
        ``position > offset + len(bytes)`` afterwards, the bytes in between were lost
        while holding (a gap, or dropped beyond ``max_head``): report a gap of that
        length to the next decoder.
        """
        self._compact()
        off = self._buf_off
        data = bytes(self._buf)
        self.taken_bytes += len(data)
        self._buf_off += len(data)
        self._buf.clear()
        self._prune_marks()
        return off, data

    def stop(self) -> None:
        """Turn the parser off: later :meth:`feed`, :meth:`gap`, :meth:`eof` and
        :meth:`resume` return ``[]`` and count nothing. :meth:`take_rest` still works."""
        self._stopped = True

    # --- internals: bookkeeping -------------------------------------------------

    def _holding(self) -> bool:
        return self._state is _S.SWITCHED or (self._paused and self._state is _S.HEAD)

    def _hold(self, data: bytes, start: int, ts_ns: int, packet: int) -> list[Event]:
        n = len(data)
        room = 0 if self._hole else max(0, self.max_head - self.buffered)
        keep = min(room, n)
        events: list[Event] = []
        if keep:
            self._m_off.append(start)
            self._m_pkt.append(packet)
            self._m_ts.append(ts_ns)
            self._buf += memoryview(data)[:keep]
        dropped = n - keep
        if dropped:
            self._hole += dropped
            self.undecodable_bytes += dropped
            if not self._overflow_reported and not (self._hole - dropped):
                self._overflow_reported = True
                why = "switched protocols" if self._state is _S.SWITCHED else "paused"
                events.append(
                    finding(
                        "http_upgrade_buffer_overflow",
                        f"expected=at most {self.max_head} bytes held while {why}, "
                        f"found={self.buffered + dropped}; {dropped} bytes dropped",
                        packets=(packet,),
                        direction=self.direction,
                        offset=start + keep,
                        ts_ns=ts_ns,
                    )
                )
        return events

    def _mark_index(self, off: int) -> int:
        return max(0, bisect_right(self._m_off, off) - 1)

    def _packet_at(self, off: int) -> int:
        if not self._m_pkt:
            return 0
        return self._m_pkt[self._mark_index(off)]

    def _ts_at(self, off: int) -> int:
        if not self._m_ts:
            return 0
        return self._m_ts[self._mark_index(off)]

    def _prune_marks(self) -> None:
        k = bisect_right(self._m_off, self._buf_off) - 1
        if k > 0:
            del self._m_off[:k], self._m_pkt[:k], self._m_ts[:k]

    def _compact(self) -> None:
        if self._i:
            del self._buf[: self._i]
            self._buf_off += self._i
            self._i = 0
        self._prune_marks()

    def _undecodable(self, k: int) -> None:
        self.undecodable_bytes += k
        self._i += k

    def _decoded(self, k: int) -> None:
        self.decoded_bytes += k
        self._i += k

    def _excerpt(self, a: int, b: int) -> str:
        """repr of buffer bytes [a, b) (indices), at most 40 bytes."""
        return repr(bytes(self._buf[a : min(b, a + 40)]))

    def _fail(self, code: str, expected: str, start: int, bad: int, events: list[Event]) -> None:
        """Fatal finding at buffer index ``bad`` of the construct starting at ``start``;
        the rest of the direction is undecodable."""
        s_off = self._buf_off + start
        b_off = self._buf_off + min(bad, len(self._buf) - 1)
        # Quote from the start of the offending line only: the line before may be a
        # credential (Cookie, Authorization) that no report could then redact.
        line_start = self._buf.rfind(b"\n", start, bad) + 1
        seg_from = max(start, line_start, bad - 24)
        events.append(
            finding(
                code,
                f"expected={expected} at byte {bad - start}, "
                f"found={self._excerpt(seg_from, bad + 1)}",
                packets=(self._packet_at(s_off), self._packet_at(b_off)),
                direction=self.direction,
                offset=s_off,
                ts_ns=self._ts_at(b_off),
            )
        )
        self._enter_failed()

    def _fail_at_head(self, code: str, detail: str, head: RequestHead | ResponseHead) -> None:
        """Fatal finding about a head already emitted (its body cannot be delimited)."""
        self._pending_findings.append(
            finding(
                code,
                detail,
                packets=head.packets,
                direction=self.direction,
                offset=head.offset,
                ts_ns=head.ts_ns,
            )
        )
        self._enter_failed()

    def _enter_failed(self) -> None:
        self._undecodable(len(self._buf) - self._i)
        self._state = _S.FAILED
        self._paused = False

    def _message_done_if_head(self) -> None:
        if self._state is _S.HEAD:
            self._scan_hint = 0

    # --- internals: the state machine -------------------------------------------

    def _run(self, events: list[Event]) -> None:
        while True:
            st = self._state
            if st is _S.HEAD:
                if self._paused or not self._step_head(events):
                    break
            elif st in _BODY_STATES:
                if not self._step_body():
                    break
            elif st is _S.CHUNK_SIZE:
                if not self._step_chunk_size(events):
                    break
            elif st is _S.CHUNK_END:
                if not self._step_chunk_end(events):
                    break
            elif st is _S.TRAILERS:
                if not self._step_trailers(events):
                    break
            elif st is _S.RESYNC:
                if not self._step_resync(events):
                    break
            elif st is _S.UNTIL_CLOSE:
                self._decoded(len(self._buf) - self._i)
                break
            else:  # SWITCHED holds, FAILED has counted everything already
                break
        self._compact()

    def _apply_gap(self, length: int) -> None:
        """Effect of ``length`` lost bytes right after the buffer (already counted)."""
        self._compact()
        st = self._state
        if st in (_S.FAILED, _S.UNTIL_CLOSE):
            self._buf_off += length
            return
        if st in _BODY_STATES and not self._buf and length <= self._remaining:
            self._remaining -= length
            self._buf_off += length
            if not self._remaining:
                self._state = _S.HEAD if st is _S.BODY else _S.CHUNK_END
                self._message_done_if_head()
            return
        # Lost framing: discard what is buffered and look for a start line. A gap
        # during a resynchronisation continues the same episode (one finding).
        left = len(self._buf)
        if left:
            self._discard(left)
            self._compact()
        self._buf_off += length
        self._state = _S.RESYNC
        self._resync_need_lf = False
        self._remaining = 0

    def _discard(self, k: int) -> None:
        """Discard ``k`` bytes at the parse position while resynchronising."""
        if not k:
            return
        if self._resync_from is None:
            self._resync_from = self._buf_off + self._i
            self._resync_packets = [self._packet_at(self._resync_from)]
        self._resync_discarded += k
        self._undecodable(k)

    def _resync_finish(self, events: list[Event], at: int | None, ts_ns: int) -> None:
        if self._resync_discarded:
            if at is None:
                detail = (
                    f"expected=a start line after the gap, found=none before the end "
                    f"({self._resync_discarded} bytes discarded)"
                )
                packets = self._resync_packets
            else:
                detail = (
                    f"discarded={self._resync_discarded} bytes after a gap, resumed at offset {at}"
                )
                packets = [*self._resync_packets, self._packet_at(at)]
            events.append(
                finding(
                    "http_resync",
                    detail,
                    packets=packets,
                    direction=self.direction,
                    offset=self._resync_from,
                    ts_ns=ts_ns,
                )
            )
        self._resync_discarded = 0
        self._resync_from = None
        self._resync_packets = []

    def _scan_start(self, s: int) -> tuple:
        """Scan the start line at buffer index ``s``; returns the scanner result and
        the index of its LF (-1 when not arrived within ``max_head``).

        Memoised per start offset so that a line arriving in many small pieces costs
        linear time: the LF search resumes where it stopped, an unfinished prefix is
        re-validated only once it has doubled (or reached ``max_head``), and a valid
        complete line is remembered. The scanners report a failure by its position
        only, so checking later never changes the finding.
        """
        b = self._buf
        n = len(b)
        bo = self._buf_off
        s_off = bo + s
        memo = self._line_memo
        if memo[0] != s_off:
            memo = self._line_memo = [s_off, 0, 0, None]
        if memo[3] is not None:  # a valid complete line: (LF offset, result in offsets)
            j_off, res_off = memo[3]
            return (res_off[0], *(x - bo for x in res_off[1:])), j_off - bo
        lim = s + self.max_head
        j = b.find(b"\n", s + memo[1], lim)
        if j >= 0:
            le, complete = j, True
        else:
            le, complete = min(n, lim), False
            avail = le - s
            memo[1] = avail
            if 256 < avail < self.max_head and avail < 2 * memo[2]:
                return (_MORE,), -1
            memo[2] = avail
        if le > s and b[le - 1] == _CR:
            le -= 1
        scan = _scan_request_line if self._requests else _scan_status_line
        res = scan(b, s, le, complete)
        if complete and res[0] == _OK:
            memo[3] = (j + bo, (_OK, *(x + bo for x in res[1:])))
        return res, j

    def _step_head(self, events: list[Event]) -> bool:
        b = self._buf
        n = len(b)
        i = self._i
        # RFC 9112 §2.2: ignore empty lines received prior to the start line.
        while i < n:
            c = b[i]
            if c == _LF:
                i += 1
            elif c == _CR and i + 1 < n and b[i + 1] == _LF:
                i += 2
            else:
                break
        self._decoded(i - self._i)
        if i == n or (i + 1 == n and b[i] == _CR):
            return False
        s = i
        res, j = self._scan_start(s)
        if res[0] == _BAD:
            what = "request-line: " if self._requests else "status-line: "
            self._fail("http_malformed_head", what + res[2], s, res[1], events)
            return True
        if res[0] == _MORE:
            if n - s >= self.max_head:
                self._too_large(s, events)
                return True
            return False
        # The start line is complete and valid: find the empty line ending the head.
        s_off = self._buf_off + s
        if self._scan_hint <= s_off:
            self._scan_hint = s_off
        frm = max(j, self._scan_hint - self._buf_off - 2)
        e = _find_section_end(b, frm, s + self.max_head)
        if e < 0:
            if n - s >= self.max_head:
                self._too_large(s, events)
                return True
            self._scan_hint = self._buf_off + n
            return False
        self._scan_hint = 0
        self._emit_head(s, j, e, res, events)
        return True

    def _too_large(self, s: int, events: list[Event]) -> None:
        s_off = self._buf_off + s
        last = s_off + self.max_head - 1
        events.append(
            finding(
                "http_head_too_large",
                f"expected=a head of at most {self.max_head} bytes, found=no end of head "
                f"within {self.max_head} bytes starting {self._excerpt(s, s + 40)}",
                packets=(self._packet_at(s_off), self._packet_at(last)),
                direction=self.direction,
                offset=s_off,
                ts_ns=self._ts_at(last),
            )
        )
        self._enter_failed()

    def _emit_head(self, s: int, j: int, e: int, res: tuple, events: list[Event]) -> None:
        """Parse the complete head ``b[s:e]`` (start line ends at LF index ``j``)."""
        b = self._buf
        notes: list[str] = []
        if j == s or b[j - 1] != _CR:
            notes.append("bare LF line ending")
        headers: list[tuple[bytes, bytes]] = []
        pos = j + 1
        while True:
            lf = b.find(b"\n", pos, e)
            le = lf
            if le > pos and b[le - 1] == _CR:
                le -= 1
            elif "bare LF line ending" not in notes:
                notes.append("bare LF line ending")
            if le == pos:
                break  # the empty line ending the head
            c = b[pos]
            if c in (_SP, _HTAB):
                # RFC 9112 §5.2: obs-fold = OWS CRLF RWS; replace with SP.
                extra = bytes(b[pos:le]).strip(_OWS)
                if headers:
                    name, value = headers[-1]
                    headers[-1] = (
                        name,
                        value + b" " + extra if value and extra else value or extra,
                    )
                    notes.append(f"obs-fold in {name.decode('latin-1')}")
                else:
                    # RFC 9112 §2.2: whitespace-preceded line before the first field:
                    # "consume each whitespace-preceded line without further processing".
                    notes.append("whitespace-preceded line after the start line ignored")
                pos = lf + 1
                continue
            colon = b.find(b":", pos, le)
            if colon < 0:
                self._fail("http_malformed_head", "field-line (name ':' value)", s, le, events)
                return
            ne = colon
            while ne > pos and b[ne - 1] in (_SP, _HTAB):
                ne -= 1
            if ne < colon:
                notes.append(
                    "whitespace between field-name and colon in "
                    + bytes(b[pos:ne]).decode("latin-1")
                )
            te = _TOKEN.match(b, pos, ne).end()  # type: ignore[union-attr]
            if te == pos or te < ne:
                self._fail("http_malformed_head", "field-name (a token)", s, te, events)
                return
            headers.append((bytes(b[pos:ne]), bytes(b[colon + 1 : le]).strip(_OWS)))
            pos = lf + 1
        s_off = self._buf_off + s
        last = self._buf_off + e - 1
        packets = (self._packet_at(s_off), self._packet_at(last))
        ts = self._ts_at(last)
        hdrs: Headers = tuple(headers)
        head: RequestHead | ResponseHead
        le = j - 1 if j > s and b[j - 1] == _CR else j
        if self._requests:
            me, te = res[1], res[2]
            head = RequestHead(
                method=bytes(b[s:me]),
                target=bytes(b[me + 1 : te]),
                version=bytes(b[te + 1 : le]),
                headers=hdrs,
                ts_ns=ts,
                packets=packets,
                offset=s_off,
                length=e - s,
            )
        else:
            head = ResponseHead(
                version=bytes(b[s : s + 8]),
                status=int(bytes(b[s + 9 : s + 12])),
                reason=bytes(b[res[1] : le]),
                headers=hdrs,
                ts_ns=ts,
                packets=packets,
                offset=s_off,
                length=e - s,
            )
        self._decoded(e - s)
        events.append(head)
        if notes:
            events.append(
                finding(
                    "http_lenient_parse",
                    "; ".join(dict.fromkeys(notes)),
                    packets=packets,
                    direction=self.direction,
                    offset=s_off,
                    ts_ns=ts,
                )
            )
        self._pending_findings = []
        if isinstance(head, RequestHead):
            self._request_body(head)
            if self._pause_on is not None and self._state is not _S.FAILED and self._pause_on(head):
                self.pause()
        else:
            self._response_body(head)
        events.extend(self._pending_findings)
        self._pending_findings = []

    # RFC 9112 §6.3, message body length ------------------------------------------

    def _request_body(self, head: RequestHead) -> None:
        """RFC 9112 §6.3 for requests: chunked (final coding), else Content-Length,
        else no body (rule 6: "If this is a request message and none of the above are
        true, then the message body length is zero")."""
        if self._transfer_encoding(head, request=True):
            return
        self._content_length(head, default_until_close=False)

    def _response_body(self, head: ResponseHead) -> None:
        """RFC 9112 §6.3 for responses, rules 1, 2, then as for requests, else the body
        lasts until the connection closes (rule 8)."""
        status = head.status
        informational = 100 <= status < 200 and status != 101
        method = self._methods.popleft() if not informational and self._methods else None
        if status == 101:
            # RFC 9110 §15.2.2: the server switches "immediately after the empty line
            # that terminates the 101 response".
            self._state = _S.SWITCHED
        elif method == b"CONNECT" and 200 <= status < 300:
            # Rule 2: "Any 2xx (Successful) response to a CONNECT request implies that
            # the connection will become a tunnel immediately after the empty line".
            self._state = _S.SWITCHED
        elif informational or status in (204, 304) or method == b"HEAD":
            # Rule 1: "Any response to a HEAD request and any response with a 1xx
            # (Informational), 204 (No Content), or 304 (Not Modified) status code is
            # always terminated by the first empty line after the header fields".
            self._state = _S.HEAD
        elif not self._transfer_encoding(head, request=False):
            self._content_length(head, default_until_close=True)
        if self._state is _S.HEAD:
            self._scan_hint = 0

    def _transfer_encoding(self, head: RequestHead | ResponseHead, *, request: bool) -> bool:
        """Rules 3 and 4. Returns True when Transfer-Encoding decided the body."""
        te = [
            p.split(b";", 1)[0].strip().lower()
            for n, v in head.headers
            if n.lower() == b"transfer-encoding"
            for p in v.split(b",")
            if p.strip()
        ]
        if not te:
            return False
        cl = header_value(head.headers, b"content-length")
        if cl is not None:
            # Rule 3: "Transfer-Encoding overrides the Content-Length. Such a message
            # might indicate an attempt to perform request smuggling".
            self._pending_findings.append(
                finding(
                    "http_transfer_encoding_and_length",
                    f"Transfer-Encoding={b', '.join(te)!r} with Content-Length={cl!r}; "
                    "Transfer-Encoding used",
                    packets=head.packets,
                    direction=self.direction,
                    offset=head.offset,
                    ts_ns=head.ts_ns,
                )
            )
        if te[-1] == b"chunked":
            self._state = _S.CHUNK_SIZE
        elif request:
            # Rule 4: "If a Transfer-Encoding header field is present in a request and
            # the chunked transfer coding is not the final encoding, the message body
            # length cannot be determined reliably".
            self._fail_at_head(
                "http_body_undecodable",
                f"expected=chunked as the final transfer coding of a request, "
                f"found=Transfer-Encoding {b', '.join(te)!r}",
                head,
            )
        else:
            self._state = _S.UNTIL_CLOSE
        return True

    def _content_length(
        self, head: RequestHead | ResponseHead, *, default_until_close: bool
    ) -> None:
        """Rules 5-8. RFC 9110 §8.6 allows a list of identical values ("42, 42")."""
        values = [
            p.strip()
            for n, v in head.headers
            if n.lower() == b"content-length"
            for p in v.split(b",")
        ]
        if not values:
            self._state = _S.UNTIL_CLOSE if default_until_close else _S.HEAD
            return
        if (
            not all(v.isdigit() and len(v) <= 19 for v in values)
            or len({int(v) for v in values}) > 1
        ):
            # Rule 5: "If a message is received without Transfer-Encoding and with an
            # invalid Content-Length header field, then the message framing is invalid".
            self._fail_at_head(
                "http_body_undecodable",
                f"expected=Content-Length 1*DIGIT (one value), found={b', '.join(values)!r}",
                head,
            )
            return
        length = int(values[0])
        if length:
            self._state = _S.BODY
            self._remaining = length
        else:
            self._state = _S.HEAD

    def _step_body(self) -> bool:
        avail = len(self._buf) - self._i
        if not avail:
            return False
        k = min(avail, self._remaining)
        self._decoded(k)
        self._remaining -= k
        if self._remaining:
            return False
        self._state = _S.HEAD if self._state is _S.BODY else _S.CHUNK_END
        self._message_done_if_head()
        return True

    def _step_chunk_size(self, events: list[Event]) -> bool:
        b = self._buf
        s = self._i
        n = len(b)
        if s == n:
            return False
        lim = s + self.max_head
        j = b.find(b"\n", s, lim)
        le = j if j >= 0 else min(n, lim)
        if le > s and b[le - 1] == _CR:
            le -= 1
        res = _scan_chunk_line(b, s, le, j >= 0)
        if res[0] == _BAD:
            self._fail("http_body_undecodable", res[2], s, res[1], events)
            return True
        if res[0] == _MORE:
            if n - s >= self.max_head:
                self._fail(
                    "http_body_undecodable", "a chunk-size line ending (LF)", s, lim - 1, events
                )
                return True
            return False
        self._decoded(j + 1 - s)
        size = res[1]
        if size:
            self._state = _S.CHUNK_DATA
            self._remaining = size
        else:
            self._state = _S.TRAILERS  # last-chunk: trailer section follows (§7.1.2)
        return True

    def _step_chunk_end(self, events: list[Event]) -> bool:
        b = self._buf
        i = self._i
        n = len(b)
        if i == n:
            return False
        if b[i] == _LF:
            k = 1
        elif b[i] == _CR:
            if i + 1 == n:
                return False
            if b[i + 1] != _LF:
                self._fail("http_body_undecodable", "CRLF after chunk-data", i, i + 1, events)
                return True
            k = 2
        else:
            self._fail("http_body_undecodable", "CRLF after chunk-data", i, i, events)
            return True
        self._decoded(k)
        self._state = _S.CHUNK_SIZE
        return True

    def _step_trailers(self, events: list[Event]) -> bool:
        """RFC 9112 §7.1.2: ``trailer-section = *( field-line CRLF )`` then CRLF.
        Trailer fields are skipped without checks."""
        b = self._buf
        s = self._i
        n = len(b)
        if s == n:
            return False
        if b[s] == _LF:
            e = s + 1
        elif b[s] == _CR and s + 1 < n and b[s + 1] == _LF:
            e = s + 2
        elif b[s] == _CR and s + 1 == n:
            return False
        else:
            s_off = self._buf_off + s
            if self._scan_hint <= s_off:
                self._scan_hint = s_off
            frm = max(s, self._scan_hint - self._buf_off - 2)
            e = _find_section_end(b, frm, s + self.max_head)
            if e < 0:
                if n - s >= self.max_head:
                    self._fail(
                        "http_body_undecodable",
                        f"a trailer section of at most {self.max_head} bytes",
                        s,
                        s + self.max_head - 1,
                        events,
                    )
                    return True
                self._scan_hint = self._buf_off + n
                return False
        self._decoded(e - s)
        self._state = _S.HEAD
        self._scan_hint = 0
        return True

    def _step_resync(self, events: list[Event]) -> bool:
        """Discard bytes until a line (or the first bytes after the gap) is a complete,
        valid start line. A candidate line longer than ``max_head`` is rejected."""
        b = self._buf
        n = len(b)
        while True:
            i = self._i
            if self._resync_need_lf:
                j = b.find(b"\n", i)
                if j < 0:
                    self._discard(n - i)
                    return False
                self._discard(j + 1 - i)
                self._resync_need_lf = False
                continue
            if i == n:
                return False
            res, _ = self._scan_start(i)
            if res[0] == _MORE:
                if n - i >= self.max_head:
                    self._resync_need_lf = True
                    continue
                return False
            if res[0] == _BAD:
                self._resync_need_lf = True
                continue
            at = self._buf_off + i
            self._resync_finish(events, at, self._ts_at(at))
            self._state = _S.HEAD
            self._scan_hint = 0
            return True
