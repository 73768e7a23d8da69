"""Compose the stages for one capture: capture → TCP → HTTP/1.1 → handshake → frames → messages.

:func:`analyze_capture` reads one capture file and returns a :class:`CaptureAnalysis`
holding one :class:`ConnectionAnalysis` per TCP connection that carries HTTP/1.x or
WebSocket (other TCP connections are counted, not listed), the frames of every
WebSocket connection in columnar form, and the findings.

Every connection is wrapped once: an unexpected exception inside a decoder becomes
an ``internal_error`` finding on that connection and the others go on
(``strict=True``, used by the tests, re-raises instead).
"""

from __future__ import annotations

import gc
import inspect
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from operator import attrgetter

from . import catalogue
from .capture import open_capture
from .closing import CloseStory, close_findings, close_story
from .deflate import deflate_params
from .detect import DETECT_SCORE, MAX_RUN, SCAN_LIMIT, Detection, Run, detect
from .frames import FrameDecoder, PayloadChunk
from .handshake import Handshake, check_handshake, is_upgrade_request
from .http1 import Http1Parser, upgrade_requested
from .http2 import (
    H2Data,
    H2DataGap,
    H2GoAway,
    H2Headers,
    H2RstStream,
    H2Stall,
    Http2Connection,
    error_name,
    looks_like_h2,
)
from .messages import MessageAssembler
from .model import (
    Direction,
    Finding,
    Frame,
    Message,
    Opcode,
    RequestHead,
    ResponseHead,
    header_value,
    header_values,
)
from .subprotocols import SubprotocolDecoder, decoder_for
from .tcp import TcpConnection, TcpReassembler

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

_HTTP_METHODS = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI ",
)

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4

TRANSCRIPT_LIMIT = 256 * 1024
"""Characters of sub-protocol transcript text kept per connection (a memory bound)."""

# Mode of one direction of a connection.
_UNKNOWN, _HTTP, _WS, _OTHER = range(4)
_PROBE = 4  # no handshake captured: first bytes held until detect.py decides
_H2 = 5  # HTTP/2 (RFC 9113): prior knowledge, h2c upgrade, or recognised mid-connection

PROBE_LIMIT = SCAN_LIMIT
"""Bytes of each direction held while deciding whether a connection whose handshake
was not captured carries WebSocket frames (a memory bound, per connection; random
or encrypted bytes are given up after about 70 KiB, when no chain of frame headers
can cover them any more)."""

# messages.py gains ``deflate_unknown`` (RSV1 set, parameters unknown) with
# permessage-deflate support; pass it only when the assembler takes it.
_ASSEMBLER_TAKES_DEFLATE_UNKNOWN = (
    "deflate_unknown" in inspect.signature(MessageAssembler).parameters
)


class _Probe:
    """The first bytes of a connection whose opening handshake was not captured,
    held until :func:`wsanalyze.detect.detect` decides (at most
    :data:`PROBE_LIMIT` bytes per direction).

    Per direction (indexed by :class:`~wsanalyze.model.Direction`): ``pieces`` in
    stream order, ``(offset, data, length, ts_ns, packet)`` with ``data`` None for a
    gap; ``first`` the stream offset of the first data byte; ``start`` that of the
    first piece; ``held`` data bytes held; ``contiguous`` the data bytes from the
    first one up to the first gap after it (what the detector looks at).
    ``forced`` is the decode_as port that matched, or None.
    """

    __slots__ = ("forced", "pieces", "contiguous", "gapped", "first", "start", "held", "next_scan")

    def __init__(self, forced: int | None) -> None:
        self.forced = forced
        self.pieces: list[list[tuple[int, bytes | None, int, int, int]]] = [[], []]
        self.contiguous = [0, 0]
        self.gapped = [False, False]  # a gap followed the first data byte
        self.first: list[int | None] = [None, None]
        self.start: list[int | None] = [None, None]
        self.held = [0, 0]
        self.next_scan = 0  # contiguous bytes (both directions) at which to ask again

    def scan_bytes(self, d: Direction) -> bytes:
        """The contiguous bytes of direction ``d`` (at most SCAN_LIMIT) for the detector."""
        parts: list[bytes] = []
        size = 0
        for _, data, _, _, _ in self.pieces[d]:
            if data is None:
                if parts:
                    break
                continue
            parts.append(data)
            size += len(data)
            if size >= SCAN_LIMIT:
                break
        return b"".join(parts)[:SCAN_LIMIT]

    def swap(self) -> None:
        """Relabel the directions (the TCP roles were swapped)."""
        for name in ("pieces", "contiguous", "gapped", "first", "start", "held"):
            getattr(self, name).reverse()


class FrameColumns:
    """Frames of one capture in columnar arrays (cheap to build, cheap to turn into a
    DataFrame, about 75 bytes per frame). One entry per frame: ``connection`` the
    connection id (a shared ``str``); ``array.array`` columns ``direction``, ``fin``,
    ``rsv1``-``rsv3``, ``masked``, ``complete`` (0/1), ``opcode``, ``header_len`` and
    ``payload_len`` (bytes, as declared: RFC 6455 §5.2 allows up to 2^64-1),
    ``offset`` (stream offset, bytes), ``first_packet``/``last_packet``,
    ``first_ts_ns``/``ts_ns`` (ns since the epoch) and ``masking_key`` (the 32-bit
    key as an integer, -1 for an unmasked frame)."""

    __slots__ = (
        "connection",
        "direction",
        "offset",
        "header_len",
        "fin",
        "rsv1",
        "rsv2",
        "rsv3",
        "opcode",
        "masked",
        "masking_key",
        "payload_len",
        "first_packet",
        "last_packet",
        "first_ts_ns",
        "ts_ns",
        "complete",
    )
    # array typecode per column ("" for the list of connection ids)
    TYPECODES = {
        "connection": "",
        "direction": "b",
        "offset": "q",
        "header_len": "B",
        "fin": "b",
        "rsv1": "b",
        "rsv2": "b",
        "rsv3": "b",
        "opcode": "B",
        "masked": "b",
        "masking_key": "q",
        "payload_len": "Q",
        "first_packet": "q",
        "last_packet": "q",
        "first_ts_ns": "q",
        "ts_ns": "q",
        "complete": "b",
    }

    def __init__(self) -> None:
        for name, code in self.TYPECODES.items():
            setattr(self, name, array(code) if code else [])

    def append(self, conn_id: str, f: Frame) -> None:
        self.connection.append(conn_id)
        self.direction.append(f.direction)
        self.offset.append(f.offset)
        self.header_len.append(f.header_len)
        self.fin.append(f.fin)
        self.rsv1.append(f.rsv1)
        self.rsv2.append(f.rsv2)
        self.rsv3.append(f.rsv3)
        self.opcode.append(f.opcode)
        self.masked.append(f.masked)
        key = f.masking_key
        self.masking_key.append(int.from_bytes(key, "big") if key else -1)
        self.payload_len.append(f.payload_len)
        self.first_packet.append(f.first_packet)
        self.last_packet.append(f.last_packet)
        self.first_ts_ns.append(f.first_ts_ns)
        self.ts_ns.append(f.ts_ns)
        self.complete.append(f.complete)

    def select(self, rows: list[int]) -> FrameColumns:
        """A new FrameColumns holding the frames at ``rows`` (indexes), in that order."""
        out = FrameColumns()
        for name, code in self.TYPECODES.items():
            column = getattr(self, name)
            picked = [column[i] for i in rows]
            setattr(out, name, array(code, picked) if code else picked)
        return out

    def __len__(self) -> int:
        return len(self.connection)


MAX_MESSAGES = 1_000_000
"""Default ``max_messages`` of :func:`analyze_capture`: WebSocket messages (and as
many frame rows) kept per capture. A kept message costs about 0.3-1 KB (the object,
its digest and preview, its frame rows), so the default bounds them to about 1 GB
however large the capture."""


class _Budget:
    """How many more messages and frame rows one capture keeps, and what was decoded
    and counted but not kept (the first packet of the first message not kept)."""

    __slots__ = ("limit", "messages", "frames", "not_kept", "frames_not_kept", "first_packet")

    def __init__(self, max_messages: int | None) -> None:
        self.limit = max_messages or None
        self.messages = self.frames = max_messages if max_messages else 1 << 62
        self.not_kept = self.frames_not_kept = 0
        self.first_packet: int | None = None


@dataclass(slots=True)
class ByteAccount:
    """Where every byte of one direction went, in bytes: decoded (HTTP heads and
    bodies, WebSocket frames), gap (never captured), undecodable (seen but not
    decodable), other (a protocol wsanalyze does not decode)."""

    decoded: int = 0
    gap: int = 0
    undecodable: int = 0
    other: int = 0


@dataclass(frozen=True, slots=True)
class H2ConnectionInfo:
    """What an HTTP/2 connection's control frames said (RFC 9113 §6), per direction
    (indexed by :class:`~wsanalyze.model.Direction`, the sender): ``settings`` the
    last value of each SETTINGS parameter sent, ``(id, value)`` sorted (names in
    :data:`wsanalyze.http2.SETTINGS_NAMES`); ``enable_connect_protocol`` the
    SETTINGS_ENABLE_CONNECT_PROTOCOL value (RFC 8441 §3) or None when never sent;
    ``frame_counts`` ``(type, count)`` sorted (names in
    :data:`wsanalyze.http2.FRAME_TYPES`); ``goaways`` ``(direction, last_stream_id,
    error_code, packet)`` in order; ``stalls`` the number of flow-control stalls."""

    mode: str  # "prior_knowledge" | "upgrade" | "mid_stream"
    settings: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]
    enable_connect_protocol: tuple[int | None, int | None]
    frame_counts: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]
    goaways: tuple[tuple[int, int, int, int], ...]
    stalls: int


_direction_opcode = attrgetter("direction", "opcode")


@dataclass(slots=True)
class ConnectionAnalysis:
    """Everything known about one TCP connection of one capture.

    ``id`` is unique across both captures (``"client-3"``: role and TCP index).
    ``requests``/``responses`` are the HTTP/1.x heads in order; ``handshake`` is the
    WebSocket opening handshake (the first Upgrade request and its response) or
    None; ``messages`` the WebSocket messages in stream order per direction
    (interleaved by time); frame counts per ``(direction, opcode)`` in
    ``frame_counts``.
    """

    id: str
    role: str
    tcp: TcpConnection
    requests: list[RequestHead] = field(default_factory=list)
    responses: list[ResponseHead] = field(default_factory=list)
    handshake: Handshake | None = None
    messages: list[Message] = field(default_factory=list)
    frame_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    bytes: tuple[ByteAccount, ByteAccount] = field(
        default_factory=lambda: (ByteAccount(), ByteAccount())
    )
    close: CloseStory | None = None
    """How this connection ended (:func:`wsanalyze.closing.close_story`), computed once
    when the capture has been read."""
    proxied_client: str | None = None
    """``ip:port`` of the client named by a PROXY protocol header, when one was sent."""
    transcript: list[tuple[int, int, int | None, str | None, str]] = field(default_factory=list)
    """Sub-protocol transcript: (ts_ns, direction, channel, kind, text), bounded to
    :data:`TRANSCRIPT_LIMIT` characters of text per connection."""
    http: bool = False  # carries HTTP/1.x, HTTP/2 or WebSocket: listed in the analysis
    protocol: str = "unknown"
    """``"http"`` (HTTP/1.x), ``"websocket"`` (frames without a captured handshake),
    ``"h2"`` (an HTTP/2 connection, or one RFC 8441 stream of it), ``"tls"``, ``"unknown"``."""
    stream_id: int | None = None
    """For an RFC 8441 WebSocket session: its HTTP/2 stream id (``tcp`` is then an
    :class:`H2StreamTransport`); None for a TCP connection."""
    parent: str | None = None
    """For an HTTP/2 stream session: the id of its HTTP/2 TCP connection."""
    streams: list[ConnectionAnalysis] = field(default_factory=list)
    """For an HTTP/2 connection: its extended-CONNECT stream sessions, by stream id."""
    h2: H2ConnectionInfo | None = None
    """For an HTTP/2 connection: its SETTINGS, frame counts and GOAWAYs."""
    h2_stalls: list[H2Stall] = field(default_factory=list)
    """For an HTTP/2 stream session: the flow-control stalls (RFC 9113 §5.2) of its
    stream, and of the connection window while it was open."""
    messages_not_kept: dict[tuple[int, int], int] | None = None
    """Messages decoded and counted but not kept in ``messages`` because the capture
    reached ``max_messages`` (see :func:`analyze_capture`), per ``(direction,
    opcode)``; None when every message was kept."""
    last_not_kept: tuple[int, int] | None = None
    """``(ts_ns, packet)`` of the last data or ping/pong message not kept before any
    close frame: the activity that the idle time before the close starts from."""

    def message_counts(self) -> Counter[tuple[int, int]]:
        """Messages decoded per ``(direction, opcode)``: those in ``messages`` and
        those counted beyond ``max_messages`` (``messages_not_kept``)."""
        counts = Counter(map(_direction_opcode, self.messages))
        counts.update(self.messages_not_kept or {})
        return counts

    @property
    def exchange(self) -> tuple[RequestHead | None, ResponseHead | None]:
        """The request and response that characterise the connection: the WebSocket
        handshake when there is one, else the first request and the first final
        (non-1xx, RFC 9110 §15.2) response."""
        if self.handshake is not None:
            return self.handshake.request, self.handshake.response
        req = self.requests[0] if self.requests else None
        resp = next((r for r in self.responses if r.status >= 200), None)
        return req, resp

    @property
    def websocket(self) -> bool:
        """True when the connection carries WebSocket frames: the opening handshake
        succeeded (RFC 6455 §4.2.2: a 101 with Upgrade: websocket), or frames were
        recognised without a captured handshake (``protocol == "websocket"``)."""
        if self.handshake is not None and self.handshake.websocket:
            return True
        return self.protocol == "websocket"


@dataclass(slots=True)
class CaptureAnalysis:
    """The analysis of one capture file.

    ``role`` is ``"client"`` (client ↔ proxy) or ``"server"`` (proxy ↔ server);
    ``connections`` lists the TCP connections carrying HTTP/1.x or WebSocket in
    order of their first packet; ``other_connections`` counts the rest.
    Timestamps are int ns since the epoch.
    """

    role: str
    path: str
    packets: int
    tcp_packets: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    link_types: tuple[int, ...]
    connections: list[ConnectionAnalysis]
    other_connections: int
    frames: FrameColumns
    findings: list[Finding]

    def connection(self, conn_id: str) -> ConnectionAnalysis:
        """The connection with id ``conn_id``; raises KeyError if there is none."""
        for c in self.connections:
            if c.id == conn_id:
                return c
        raise KeyError(conn_id)


class _WsState:
    """The WebSocket half of a session: per direction a frame decoder and a message
    assembler, the negotiated sub-protocol's decoder, pings awaiting their pong.
    Shared by a TCP connection after its Upgrade (:class:`_ConnectionSink`) and by
    each RFC 8441 stream of an HTTP/2 connection (:class:`_H2Stream`)."""

    def __init__(
        self,
        analysis: ConnectionAnalysis,
        frames: FrameColumns,
        keep_payloads: bool,
        budget: _Budget,
    ):
        self.a = analysis
        self.frames = frames
        self.keep_payloads = keep_payloads
        self.budget = budget
        self.closes_kept = [0, 0]  # close messages kept per direction
        self.ws: list[FrameDecoder | None] = [None, None]
        self.asm: list[MessageAssembler | None] = [None, None]
        self.sub: SubprotocolDecoder | None = None
        # Pings awaiting their Pong, per direction: (digest, packet), bounded; made
        # on the first ping or pong (most connections never carry one).
        self.pings: tuple[deque[tuple[bytes, int]], deque[tuple[bytes, int]]] | None = None
        self.transcript_chars = 0

    def _ws_start(self, hs: Handshake, d: Direction, offset: int) -> FrameDecoder:
        """Start decoding direction ``d`` as WebSocket frames from stream offset
        ``offset``, with the extensions (RFC 7692) the handshake negotiated."""
        dec = FrameDecoder(
            d, rsv_allowed=0x4 if hs.deflate else 0, start_offset=offset, stream_payloads=True
        )
        self.ws[d] = dec
        self.asm[d] = MessageAssembler(
            d,
            keep_payloads=self.keep_payloads or self.sub is not None,
            deflate=deflate_params(hs, d),
        )
        return dec

    def _ws_end(self, d: Direction, ts_ns: int) -> None:
        """End of direction ``d``: flush the decoder and assembler, count the bytes."""
        dec, asm = self.ws[d], self.asm[d]
        assert dec is not None and asm is not None
        self._ws_events(d, dec.eof(ts_ns))
        self._assembled(asm.eof(ts_ns))
        self.a.bytes[d].decoded += dec.decoded_bytes
        self.a.bytes[d].undecodable += dec.undecodable_bytes

    def _ws_feed(self, d: Direction, data: bytes, ts_ns: int, packet: int) -> None:
        dec = self.ws[d]
        assert dec is not None
        self._ws_events(d, dec.feed(data, ts_ns, packet))

    def _ws_events(self, d: Direction, events: list) -> None:
        asm = self.asm[d]
        assert asm is not None
        counts = self.a.frame_counts
        for ev in events:
            if isinstance(ev, Frame):
                if self.budget.frames:
                    self.budget.frames -= 1
                    self.frames.append(self.a.id, ev)
                else:
                    self.budget.frames_not_kept += 1
                key = (int(d), ev.opcode)
                counts[key] = counts.get(key, 0) + 1
                self._assembled(asm.frame(ev))
            elif isinstance(ev, PayloadChunk):
                self._assembled(asm.chunk(ev))
            else:
                self.a.findings.append(ev)

    def _assembled(self, events: list) -> None:
        for out in events:
            if isinstance(out, Message):
                if self.sub is not None:
                    out = self._decode_subprotocol(out)
                if out.opcode == Opcode.PING or out.opcode == Opcode.PONG:
                    self._ping_pong(out)
                if self.budget.messages:
                    self.budget.messages -= 1
                    if out.opcode == Opcode.CLOSE:
                        self.closes_kept[out.direction] += 1
                    self.a.messages.append(out)
                elif out.opcode == Opcode.CLOSE and self.closes_kept[out.direction] < 2:
                    # Beyond the limit the close story still needs the close frames.
                    self.closes_kept[out.direction] += 1
                    self.a.messages.append(out)
                else:
                    self._not_kept(out)
            else:
                self.a.findings.append(out)

    def _not_kept(self, msg: Message) -> None:
        """Count a message the capture's ``max_messages`` leaves out of ``messages``."""
        budget = self.budget
        budget.not_kept += 1
        if budget.first_packet is None:
            budget.first_packet = msg.first_packet
        counts = self.a.messages_not_kept
        if counts is None:
            counts = self.a.messages_not_kept = {}
        key = (int(msg.direction), msg.opcode)
        counts[key] = counts.get(key, 0) + 1
        if msg.opcode != Opcode.CLOSE and not any(self.closes_kept):
            self.a.last_not_kept = (msg.ts_ns, msg.last_packet)

    def _ping_pong(self, msg: Message) -> None:
        """RFC 6455 §5.5.3: a Pong answering a Ping carries the Ping's application
        data. A Pong with no Ping outstanding is an unsolicited heartbeat (allowed);
        one answering may skip older Pings (only the latest must be answered)."""
        if self.pings is None:
            self.pings = (deque(maxlen=16), deque(maxlen=16))
        mine = self.pings[msg.direction]
        if msg.opcode == Opcode.PING:
            mine.append((msg.digest, msg.last_packet))
            return
        waiting = self.pings[msg.direction.reverse]
        if not waiting:
            return
        digests = [dg for dg, _ in waiting]
        if msg.digest in digests:
            for _ in range(digests.index(msg.digest) + 1):
                waiting.popleft()
            return
        self.a.findings.append(
            catalogue.finding(
                "ws_pong_mismatch",
                f"expected=the application data of the ping at packet {waiting[-1][1]}, "
                f"found={msg.payload_len} bytes that match no outstanding ping",
                packets=(waiting[-1][1], msg.last_packet),
                direction=msg.direction,
                offset=msg.offset,
                ts_ns=msg.ts_ns,
            )
        )
        waiting.clear()

    def _decode_subprotocol(self, msg: Message) -> Message:
        """Let the negotiated sub-protocol's decoder read the message, keep its
        channel and kind, and drop the payload unless the user keeps payloads."""
        assert self.sub is not None
        dec = self.sub.decode(msg, msg.payload or b"")
        self.a.findings.extend(dec.findings)
        if dec.text and self.transcript_chars < TRANSCRIPT_LIMIT:
            text = dec.text[: TRANSCRIPT_LIMIT - self.transcript_chars]
            self.transcript_chars += len(text)
            self.a.transcript.append((msg.ts_ns, int(msg.direction), dec.channel, dec.kind, text))
        return replace(
            msg,
            channel=dec.channel,
            kind=dec.kind,
            payload=msg.payload if self.keep_payloads else None,
        )


class _ConnectionSink(_WsState):
    """Routes one TCP connection's in-order bytes through HTTP/1.x and, after a
    successful upgrade, the WebSocket frame decoder and message assembler."""

    def __init__(
        self,
        analysis: ConnectionAnalysis,
        frames: FrameColumns,
        strict: bool,
        keep_payloads: bool,
        decode_as: frozenset[int] = frozenset(),
        budget: _Budget | None = None,
    ) -> None:
        super().__init__(analysis, frames, keep_payloads, budget or _Budget(MAX_MESSAGES))
        self.decode_as = decode_as
        self.strict = strict
        self.mode = [_UNKNOWN, _UNKNOWN]
        self.http: list[Http1Parser | None] = [None, None]
        self.pending: list[RequestHead] = []  # requests awaiting a response
        self.upgrade_pending: RequestHead | None = None
        self.probe: _Probe | None = None  # mode _PROBE: bytes held for detect.py
        self.failed = False

    # -- StreamSink -----------------------------------------------------------

    def data(self, direction: Direction, offset: int, data: bytes, ts_ns: int, packet: int) -> None:
        if self.failed:
            return
        try:
            self._data(direction, offset, data, ts_ns, packet)
        except Exception as exc:  # noqa: BLE001 - one connection must not stop the rest
            self._internal_error(exc, packet)

    def gap(self, direction: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        self.a.bytes[direction].gap += length
        if self.failed:
            return
        try:
            self._gap(direction, offset, length, ts_ns, packet)
        except Exception as exc:  # noqa: BLE001
            self._internal_error(exc, packet)

    def fin(self, direction: Direction, ts_ns: int, packet: int) -> None:
        return

    def rst(self, direction: Direction, ts_ns: int, packet: int) -> None:
        return

    def end(self, ts_ns: int) -> None:
        if self.failed:
            return
        try:
            self._end(ts_ns)
        except Exception as exc:  # noqa: BLE001
            self._internal_error(exc, 0)

    # -- routing ----------------------------------------------------------------

    def _internal_error(self, exc: Exception, packet: int) -> None:
        if self.strict:
            raise exc
        self.failed = True
        self.a.findings.append(
            catalogue.finding(
                "internal_error",
                f"{type(exc).__name__}: {exc}"[:300],
                packets=(packet,) if packet else (),
            )
        )

    def _data(self, d: Direction, offset: int, data: bytes, ts_ns: int, packet: int) -> None:
        mode = self.mode[d]
        if mode == _WS:
            self._ws_feed(d, data, ts_ns, packet)
            return
        if mode == _UNKNOWN and d == C2S and data.startswith((b"PROXY ", _PROXY_V2_SIG)):
            data = self._proxy_protocol(data, ts_ns, packet)
            if not data:
                return
        if mode == _UNKNOWN:
            d = self._detect(d, data)
            mode = self.mode[d]
        if mode == _PROBE:
            self._probe_data(d, offset, data, ts_ns, packet)
            return
        if mode == _H2:
            self._h2_events(self.h2.feed(d, data, ts_ns, packet))
            return
        if mode == _OTHER:
            self.a.bytes[d].other += len(data)
            return
        parser = self.http[d]
        assert parser is not None
        self._http_events(d, parser.feed(data, ts_ns, packet), ts_ns, packet)

    def _proxy_protocol(self, data: bytes, ts_ns: int, packet: int) -> bytes:
        """Strip a PROXY protocol header (HAProxy ``send-proxy``, v1 text or v2
        binary) that a proxy sends before the request, record the client it names,
        and return the bytes after it. A header split over segments is left alone
        (then the connection is not decoded as HTTP)."""
        parsed = parse_proxy_header(data)
        if parsed is None:
            return data
        length, version, source = parsed
        self.a.bytes[C2S].decoded += length
        self.a.proxied_client = source
        self.a.findings.append(
            catalogue.finding(
                "proxy_protocol_header",
                f"found=PROXY protocol v{version} naming the client {source or 'unknown'}",
                packets=(packet,),
                direction=C2S,
                offset=0,
                ts_ns=ts_ns,
            )
        )
        return data[length:]

    def _detect(self, d: Direction, data: bytes) -> Direction:
        """Decide on the first bytes of a connection whether it carries HTTP/1.x;
        returns the direction of ``data`` (changed when the roles were swapped).

        Other bytes on a connection whose start was not captured (no SYN), or whose
        port is in ``decode_as``, may be WebSocket frames after a handshake the
        capture missed: they are held (mode _PROBE) until :mod:`wsanalyze.detect`
        decides; TLS and HTTP/2 are recognised first and never held."""
        if d == C2S and len(data) >= 4 and _H2_PREFACE.startswith(data[:24]):
            self._start_h2("prior_knowledge")  # RFC 9113 §3.4 (also a preface split over segments)
        elif data.startswith(_HTTP_METHODS):
            if d == S2C and self.a.tcp.mid_stream:
                # No SYN was seen and the roles were guessed from the ports wrongly:
                # the side that sends a request is the client.
                self.a.tcp.swap_roles()
                d = C2S
            self._start_http()
        elif data.startswith(b"HTTP/1."):
            if d == C2S and self.a.tcp.mid_stream:  # roles guessed wrongly
                self.a.tcp.swap_roles()
                d = S2C
            self._start_http()
        elif d == S2C and not self.a.tcp.mid_stream and _h2_settings_first(data):
            # The server of a prior-knowledge connection may send its SETTINGS
            # before the client's preface arrives (RFC 9113 §3.4).
            self._start_h2("prior_knowledge")
        elif self.a.tcp.mid_stream and looks_like_h2(data) == 0:
            self._start_h2("mid_stream")  # frames of an HTTP/2 connection seen mid-way
        else:
            tls = len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04
            forced = self._decode_as_port()
            if not tls and (self.a.tcp.mid_stream or forced is not None):
                self.mode = [_PROBE, _PROBE]
                self.probe = _Probe(forced)
                return d
            self.mode = [_OTHER, _OTHER]
            if tls:
                self.a.protocol = "tls"  # a TLS handshake record (RFC 8446 §5.1)
        return d

    # -- WebSocket without a captured handshake -----------------------------------

    def _decode_as_port(self) -> int | None:
        """The ``decode_as`` port this connection uses: its server port, or either
        port when the roles were guessed (like tshark's ``tcp.port==N``)."""
        tcp = self.a.tcp
        if tcp.server.port in self.decode_as:
            return tcp.server.port
        if tcp.mid_stream and tcp.client.port in self.decode_as:
            return tcp.client.port
        return None

    def _probe_data(self, d: Direction, offset: int, data: bytes, ts_ns: int, packet: int) -> None:
        pr = self.probe
        assert pr is not None
        pr.pieces[d].append((offset, data, len(data), ts_ns, packet))
        if pr.first[d] is None:
            pr.first[d] = offset
        if pr.start[d] is None:
            pr.start[d] = offset
        pr.held[d] += len(data)
        if not pr.gapped[d]:
            pr.contiguous[d] += len(data)
        if pr.held[d] >= PROBE_LIMIT:
            self._probe_decide(final=True)
            return
        # Ask again each time the contiguous bytes grew by a quarter (at least 64
        # bytes): the work stays linear in the bytes held.
        scanned = pr.contiguous[0] + pr.contiguous[1]
        if scanned >= pr.next_scan:
            pr.next_scan = scanned + max(64, scanned // 4)
            self._probe_decide(final=False)

    def _probe_gap(self, d: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        pr = self.probe
        assert pr is not None
        pr.pieces[d].append((offset, None, length, ts_ns, packet))
        if pr.start[d] is None:
            pr.start[d] = offset
        if pr.first[d] is not None:
            pr.gapped[d] = True  # the detector sees the bytes before the gap only

    def _probe_decide(self, *, final: bool) -> None:
        """Ask the detector; on a verdict (or when ``final``) start WebSocket
        decoding or give the held bytes up as another protocol's."""
        pr = self.probe
        assert pr is not None
        det = detect(pr.scan_bytes(C2S), pr.scan_bytes(S2C), final=final)
        if det.websocket is None:
            return
        if det.websocket or pr.forced is not None:
            self._start_websocket_unannounced(det)
            return
        self.probe = None
        self.mode = [_OTHER, _OTHER]
        for d in (C2S, S2C):
            self.a.bytes[d].other += pr.held[d]

    def _start_websocket_unannounced(self, det: Detection) -> None:
        """Decode the held bytes, and all that follow, as WebSocket frames although
        no handshake was captured (RFC 6455 §4 unseen, so extensions are unknown:
        RSV1 is allowed, and the sub-protocol is unknown).

        Roles: when they were guessed (no SYN) and the masked frames come from the
        side labelled server, the roles are swapped (RFC 6455 §5.1: only a client
        masks). Per direction, decoding starts: at the detector's run (the bytes
        before it, the end of a frame whose start was not captured or a garbled
        handshake, are undecodable); with no run, at the first byte when
        ``decode_as`` forced it on a stream whose first byte was captured (SYN seen,
        no gap before it), like tshark's Decode As; with no data held yet, at the
        next byte; otherwise the decoder looks for a frame boundary as after a gap
        (the bytes before the capture are one). One ``handshake_not_captured``
        finding names the evidence."""
        pr = self.probe
        assert pr is not None
        self.probe = None
        tcp = self.a.tcp
        runs = list(det.runs)
        swapped = False
        if tcp.mid_stream and det.client == S2C:
            tcp.swap_roles()
            self.a.bytes = (self.a.bytes[1], self.a.bytes[0])
            pr.swap()
            runs.reverse()
            swapped = True
        self.a.http = True
        self.a.protocol = "websocket"
        self.sub = None
        self.mode = [_WS, _WS]
        plan: list[tuple[int | None, int]] = []  # per direction: (aligned offset, skipped)
        for d in (C2S, S2C):
            run, first = runs[d], pr.first[d]
            if first is None:
                align: int | None = pr.start[d] if pr.start[d] is not None else 0
            elif run is not None:
                align = first + run.offset
            elif pr.forced is not None and tcp.syn_seen and first == 0:
                align = 0
            else:
                align = None
            plan.append((align, align - first if align is not None and first is not None else 0))
        packets, times = [], []
        for d in (C2S, S2C):
            align = plan[d][0]
            fed = next(
                (
                    p
                    for p in pr.pieces[d]
                    if p[1] is not None and (align is None or p[0] + p[2] > align)
                ),
                None,
            )
            if fed is not None:
                packets.append(fed[4])
                times.append(fed[3])
        how = (
            f"forced by decode_as port {pr.forced} (detector score {det.score})"
            if pr.forced is not None
            else f"detected by frame structure (score {det.score} >= {DETECT_SCORE})"
        )
        sides = "; ".join(
            _describe_side(d, runs[d], pr.first[d], plan[d][0], plan[d][1]) for d in (C2S, S2C)
        )
        roles = "; roles swapped: the masked side is the client (RFC 6455 §5.1)" if swapped else ""
        self.a.findings.append(
            catalogue.finding(
                "handshake_not_captured",
                f"expected=an HTTP Upgrade handshake before the frames (RFC 6455 §4), "
                f"found=none captured; {how}: {sides}{roles}",
                packets=packets,
                ts_ns=min(times) if times else None,
            )
        )
        for d in (C2S, S2C):
            align, skipped = plan[d]
            pieces = pr.pieces[d]
            self.a.bytes[d].undecodable += skipped
            events: list = []
            if align is None:
                off0, data0, _, ts0, pk0 = pieces[0]
                # Alignment unknown: the bytes before the capture are a gap, after
                # which the decoder looks for a run of frame headers (frames.py).
                dec = FrameDecoder(
                    d,
                    rsv_allowed=0x4,
                    start_offset=off0 - 1 if data0 is not None else off0,
                    stream_payloads=True,
                )
                if data0 is not None:
                    events += dec.gap(1, ts0, pk0)
            else:
                dec = FrameDecoder(d, rsv_allowed=0x4, start_offset=align, stream_payloads=True)
            self.ws[d] = dec
            kwargs = {"deflate_unknown": True} if _ASSEMBLER_TAKES_DEFLATE_UNKNOWN else {}
            self.asm[d] = MessageAssembler(d, keep_payloads=self.keep_payloads, **kwargs)
            self._ws_events(d, events)
            for off, data, length, ts, pk in pieces:
                if align is not None and off + length <= align:
                    continue  # before the first frame: counted (undecodable or gap)
                if data is None:
                    self._ws_events(d, dec.gap(length, ts, pk))
                    continue
                if align is not None and off < align:
                    data = data[align - off :]
                self._ws_events(d, dec.feed(data, ts, pk))

    def _start_http(self) -> None:
        self.a.http = True
        self.a.protocol = "http"
        self.mode = [_HTTP, _HTTP]
        self.http = [Http1Parser(C2S, pause_on=_upgrade_or_h2c), Http1Parser(S2C)]

    def _http_events(self, d: Direction, events: list, ts_ns: int, packet: int) -> None:
        for ev in events:
            if isinstance(ev, RequestHead):
                self._on_request(ev)
            elif isinstance(ev, ResponseHead):
                self._on_response(ev, ts_ns, packet)
            else:
                self.a.findings.append(ev)

    def _on_request(self, req: RequestHead) -> None:
        self.a.requests.append(req)
        self.pending.append(req)
        resp_parser = self.http[S2C]
        assert resp_parser is not None
        resp_parser.expect_response_to(req.method)
        if _upgrade_or_h2c(req) and self.upgrade_pending is None:
            # RFC 6455 §4.1: the client sends no data until it has the 101; hold
            # the bytes that follow until the response says what they are.
            self.upgrade_pending = req
            parser = self.http[C2S]
            assert parser is not None
            parser.pause()

    def _on_response(self, resp: ResponseHead, ts_ns: int, packet: int) -> None:
        self.a.responses.append(resp)
        if 100 <= resp.status < 200 and resp.status != 101:
            return  # interim response (RFC 9110 §15.2): the final one follows
        req = self.pending.pop(0) if self.pending else None
        if req is None:
            return
        if req is self.upgrade_pending:
            self.upgrade_pending = None
            if not is_upgrade_request(req):  # h2c (RFC 7540 §3.2)
                if resp.status == 101:
                    self._start_h2_upgrade(req)
                    return
                parser = self.http[C2S]
                assert parser is not None
                self._http_events(C2S, parser.resume(), ts_ns, packet)
                return
            hs = check_handshake(req, resp)
            if self.a.handshake is None:
                self.a.handshake = hs
                self.a.findings.extend(hs.findings)
            if hs.websocket:
                self._start_websocket(hs)
                return
            if resp.status == 101:  # some other protocol (h2c, ...): not decoded here
                self.mode = [_OTHER, _OTHER]
                for d in (C2S, S2C):
                    parser = self.http[d]
                    if parser is not None:
                        self.a.bytes[d].other += len(parser.take_rest()[1])
                        parser.stop()
                        self._count_http(d, parser)
                return
            parser = self.http[C2S]
            assert parser is not None
            self._http_events(C2S, parser.resume(), ts_ns, packet)

    def _start_websocket(self, hs: Handshake) -> None:
        self.sub = decoder_for(hs.subprotocol)
        for d in (C2S, S2C):
            parser = self.http[d]
            assert parser is not None
            offset, rest = parser.take_rest()
            lost = parser.position - offset - len(rest)  # held bytes lost (gap, overflow)
            parser.stop()
            self._count_http(d, parser)
            self.http[d] = None
            self.mode[d] = _WS
            dec = self._ws_start(hs, d, offset)
            last = self.a.responses[-1] if d == S2C else self.a.requests[-1]
            if rest and d == C2S:
                # Held while the Upgrade request awaited its response.
                resp = self.a.responses[-1]
                self.a.findings.append(
                    catalogue.finding(
                        "ws_client_data_before_101",
                        f"expected=no client data before the 101 (packet {resp.packets[0]}), "
                        f"found={len(rest)} bytes",
                        packets=(last.packets[-1], resp.packets[0]),
                        direction=C2S,
                        offset=offset,
                        ts_ns=resp.ts_ns,
                    )
                )
            if rest:
                self._ws_events(d, dec.feed(rest, last.ts_ns, last.packets[-1]))
            if lost > 0:
                self._ws_events(d, dec.gap(lost, last.ts_ns, last.packets[-1]))

    def _count_http(self, d: Direction, parser: Http1Parser) -> None:
        acct = self.a.bytes[d]
        acct.decoded += parser.decoded_bytes
        # bytes still held (after a 101 nothing took them over) are undecodable
        acct.undecodable += parser.undecodable_bytes + parser.buffered

    # -- HTTP/2 (RFC 9113) and WebSocket over HTTP/2 (RFC 8441) ------------------------

    def _start_h2(
        self, mode: str, offsets: tuple[int, int] = (0, 0), settings: bytes | None = None
    ) -> None:
        """Decode this connection as HTTP/2 from here on; each extended CONNECT
        stream becomes a session of its own (:class:`_H2Stream`)."""
        self.a.http = True
        self.a.protocol = "h2"
        self.mode = [_H2, _H2]
        self.h2 = Http2Connection(mode=mode, start_offsets=offsets, upgrade_settings=settings)
        self.h2_streams: dict[int, _H2Stream] = {}
        self.h2_plain: dict[int, RequestHead] = {}  # other requests awaiting a response
        self.h2_headless_resets: list[H2RstStream] = []  # streams reset before any HEADERS
        self.h2_mode = mode
        self.h2_goaways: list[tuple[int, int, int, int]] = []

    def _start_h2_upgrade(self, req: RequestHead) -> None:
        """The server accepted ``Upgrade: h2c`` (RFC 7540 §3.2): HTTP/2 follows the
        101 in both directions; the upgraded request is stream 1."""
        offsets = [0, 0]
        rest = [b"", b""]
        for d in (C2S, S2C):
            parser = self.http[d]
            assert parser is not None
            offsets[d], rest[d] = parser.take_rest()
            parser.stop()
            self._count_http(d, parser)
            self.http[d] = None
        self._start_h2("upgrade", (offsets[0], offsets[1]), _h2c_settings(req))
        self.h2_plain[1] = req
        last = (req, self.a.responses[-1])
        for d in (C2S, S2C):
            if rest[d]:
                self._h2_events(self.h2.feed(d, rest[d], last[d].ts_ns, last[d].packets[-1]))

    def _h2_events(self, events: list) -> None:
        streams = self.h2_streams
        for ev in events:
            kind = type(ev)
            if kind is H2Data:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.data(ev)
            elif kind is H2Headers:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.headers(ev)
                else:
                    self._h2_new_headers(ev)
            elif kind is H2DataGap:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.data_gap(ev)
            elif kind is H2RstStream:
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.reset(ev)
                elif ev.stream_id in self.h2_plain:
                    del self.h2_plain[ev.stream_id]
                elif ev.direction == C2S and ev.stream_id % 2 == 1:
                    self.h2_headless_resets.append(ev)
            elif kind is H2GoAway:
                self.h2_goaways.append(
                    (int(ev.direction), ev.last_stream_id, ev.error_code, ev.packet)
                )
            elif isinstance(ev, Finding):
                self.a.findings.append(ev)

    def _h2_new_headers(self, ev: H2Headers) -> None:
        """A header block on a stream without a session: an extended CONNECT (RFC
        8441 §4) opens one; other requests and their responses are recorded on the
        HTTP/2 connection itself."""
        hd = ev.headers
        if ev.direction == C2S:
            method = header_value(hd, b":method") or b""
            if method == b"CONNECT" and header_value(hd, b":protocol") is not None:
                st = _H2Stream(self, ev)
                self.h2_streams[ev.stream_id] = st
                self.a.streams.append(st.a)
                st.headers(ev)
            elif ev.stream_id not in self.h2_plain and header_value(hd, b":method") is not None:
                req = _h2_request(ev)
                self.a.requests.append(req)
                self.h2_plain[ev.stream_id] = req
            return
        req = self.h2_plain.get(ev.stream_id)
        resp = _h2_response(ev)
        if resp is None or req is None:
            return  # trailers, or a push / response whose request was not seen
        self.a.responses.append(resp)
        if resp.status >= 200:
            del self.h2_plain[ev.stream_id]

    def _h2_end(self, ts_ns: int) -> None:
        h2 = self.h2
        self._h2_events(h2.eof(ts_ns))
        for d in (C2S, S2C):
            self.a.bytes[d].decoded += h2.decoded_bytes[d]
            self.a.bytes[d].undecodable += h2.undecodable_bytes[d]
        ecp = [None if v is None else int(v) for v in h2.enable_connect_protocol]
        counts = [sorted((t, n) for (d, t), n in h2.frame_counts.items() if d == x) for x in (0, 1)]
        self.a.h2 = H2ConnectionInfo(
            mode=self.h2_mode,
            settings=(tuple(sorted(h2.settings[0].items())), tuple(sorted(h2.settings[1].items()))),
            enable_connect_protocol=(ecp[0], ecp[1]),
            frame_counts=(tuple(counts[0]), tuple(counts[1])),
            goaways=tuple(self.h2_goaways),
            stalls=len(h2.stalls),
        )
        for st in self.h2_streams.values():
            st.end(ts_ns)
            t = st.transport
            st.a.h2_stalls = [
                x
                for x in h2.stalls
                if x.stream_id == st.a.stream_id
                or (
                    x.stream_id == 0
                    and x.start_ts_ns <= t.last_ts_ns
                    and (x.end_ts_ns is None or x.end_ts_ns >= t.first_ts_ns)
                )
            ]
        if h2.enable_connect_protocol[S2C] is not True:
            # RFC 8441 §3: "A sender MUST NOT send a SETTINGS_ENABLE_CONNECT_PROTOCOL
            # parameter with the value of 0 after previously sending a value of 1";
            # a client "MUST NOT" use :protocol unless the server sent 1.
            tried = [st.a.requests[0] for st in self.h2_streams.values() if st.a.requests]
            resets = self.h2_headless_resets
            if tried or resets:
                pk = [r.packets[0] for r in tried[:5]] + [r.packet for r in resets[:5]]
                what = (
                    f"{len(tried)} extended CONNECT request(s) sent anyway"
                    if tried
                    else f"the client reset {len(resets)} stream(s) before sending any "
                    f"request ({error_name(resets[0].error_code)}): a proxy giving up on "
                    "the WebSocket it had to forward"
                )
                self.a.findings.append(
                    catalogue.finding(
                        "h2_connect_protocol_not_enabled",
                        "expected=SETTINGS_ENABLE_CONNECT_PROTOCOL=1 from the server, "
                        f"found={'not advertised' if h2.enable_connect_protocol[S2C] is None else 0}; "
                        + what,
                        packets=pk,
                        direction=S2C,
                        ts_ns=(tried[0].ts_ns if tried else resets[0].ts_ns),
                    )
                )

    def _gap(self, d: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        if self.mode[d] == _H2:
            self._h2_events(self.h2.gap(d, length, ts_ns, packet))
        elif self.mode[d] == _PROBE:
            self._probe_gap(d, offset, length, ts_ns, packet)
        elif self.mode[d] == _WS:
            dec = self.ws[d]
            assert dec is not None
            self._ws_events(d, dec.gap(length, ts_ns, packet))
        elif self.mode[d] == _HTTP:
            parser = self.http[d]
            assert parser is not None
            self._http_events(d, parser.gap(length, ts_ns, packet), ts_ns, packet)

    def _end(self, ts_ns: int) -> None:
        if self.probe is not None:
            self._probe_decide(final=True)
        if self.mode[C2S] == _H2:
            self._h2_end(ts_ns)
        for d in (C2S, S2C):
            if self.mode[d] == _WS:
                self._ws_end(d, ts_ns)
            elif self.mode[d] == _HTTP:
                parser = self.http[d]
                assert parser is not None
                if d == C2S and self.upgrade_pending is not None:
                    self._http_events(d, parser.resume(), ts_ns, 0)
                self._http_events(d, parser.eof(ts_ns), ts_ns, 0)
                self._count_http(d, parser)
        if self.upgrade_pending is not None and self.a.handshake is None:
            hs = check_handshake(self.upgrade_pending, None)
            self.a.handshake = hs
            self.a.findings.extend(hs.findings)
        for req in self.pending:
            waited_ms = (self.a.tcp.last_ts_ns - req.ts_ns) / 1e6
            self.a.findings.append(
                catalogue.finding(
                    "http_no_response",
                    f"expected=a response to {_show(req.method)} {_show(req.target)}, "
                    f"found=none in {waited_ms:.1f} ms until the connection's last packet",
                    packets=req.packets,
                    direction=C2S,
                    offset=req.offset,
                    ts_ns=req.ts_ns,
                )
            )
        self.pending.clear()
        self.a.messages.sort(key=lambda m: (m.ts_ns, m.direction, m.offset))


def _upgrade_or_h2c(req: RequestHead) -> bool:
    """The request parser pauses after a WebSocket Upgrade request (RFC 6455 §4.1)
    and after an ``Upgrade: h2c`` request (RFC 7540 §3.2): what follows depends on
    the response."""
    if upgrade_requested(req):
        return True
    return any(p.strip().lower() == b"h2c" for p in header_values(req.headers, b"upgrade"))


def _h2c_settings(req: RequestHead) -> bytes | None:
    """The SETTINGS payload of an ``Upgrade: h2c`` request's ``HTTP2-Settings`` field
    (base64url without padding, RFC 7540 §3.2.1), or None when absent or invalid."""
    import base64
    import binascii

    value = header_value(req.headers, b"http2-settings")
    if value is None:
        return None
    v = value.strip()
    try:
        return base64.urlsafe_b64decode(v + b"=" * (-len(v) % 4))
    except (binascii.Error, ValueError):
        return None


def _h2_settings_first(data: bytes) -> bool:
    """Whether ``data`` starts with a SETTINGS frame on stream 0 (RFC 9113 §6.5),
    a whole number of 6-byte parameters: the server's connection preface."""
    return (
        len(data) >= 9
        and data[3] == 0x4
        and data[5:9] == b"\0\0\0\0"
        and int.from_bytes(data[0:3], "big") % 6 == 0
        and not data[4] & 0xFE
    )


def _h2_request(ev: H2Headers) -> RequestHead:
    """An HTTP/2 request header block as a :class:`RequestHead`: the ``:method``,
    the ``:path`` (``:authority`` for a plain CONNECT, RFC 9113 §8.5) as the target,
    version ``HTTP/2``, and every field as decoded, pseudo-header fields first."""
    hd = ev.headers
    method = header_value(hd, b":method") or b""
    target = header_value(hd, b":path") or header_value(hd, b":authority") or b""
    return RequestHead(method, target, b"HTTP/2", hd, ev.ts_ns, ev.packets, ev.offset, ev.length)


def _h2_response(ev: H2Headers) -> ResponseHead | None:
    """An HTTP/2 response header block as a :class:`ResponseHead` (version
    ``HTTP/2``, no reason phrase, RFC 9113 §8.3.2), or None without a valid
    ``:status`` (a trailer section)."""
    status = header_value(ev.headers, b":status")
    if status is None or not status.isdigit() or len(status) != 3:
        return None
    return ResponseHead(
        b"HTTP/2", int(status), b"", ev.headers, ev.ts_ns, ev.packets, ev.offset, ev.length
    )


class H2StreamTransport:
    """One HTTP/2 stream seen as the transport of an RFC 8441 WebSocket session, with
    the attributes of a :class:`~wsanalyze.tcp.TcpConnection` so that the close
    story, tables and reports treat the session like a connection.

    The endpoints, TCP handshake times, RTT and ``index`` are those of the HTTP/2
    TCP connection (``parent``); per stream: ``stream_id``, ``first_ts_ns`` /
    ``last_ts_ns`` (ns, its first and last frame), ``first_packet``, and per
    direction (indexed by :class:`~wsanalyze.model.Direction`) ``packets`` (packets
    carrying its frames), ``bytes`` (DATA payload bytes, padding excluded),
    ``gaps``/``gap_bytes`` (DATA bytes never captured), ``fin_ts_ns``/``fin_packet``
    (END_STREAM, RFC 9113 §8.1; or the TCP FIN that ended the connection while the
    stream was open) and ``rst_ts_ns``/``rst_packet``/``rst_error`` (RST_STREAM, §6.4,
    its error code; or the TCP RST), ``tcp_end`` (True where that end was the TCP
    connection's own FIN or RST). ``findings`` are the stream's own (the TCP
    connection's stay with it).
    """

    __slots__ = (
        "parent",
        "stream_id",
        "first_ts_ns",
        "last_ts_ns",
        "first_packet",
        "packets",
        "bytes",
        "gaps",
        "gap_bytes",
        "fin_ts_ns",
        "fin_packet",
        "rst_ts_ns",
        "rst_packet",
        "rst_error",
        "tcp_end",
        "findings",
        "_last_packet",
    )

    def __init__(self, parent: TcpConnection, stream_id: int, ts_ns: int, packet: int) -> None:
        self.parent = parent
        self.stream_id = stream_id
        self.first_ts_ns = self.last_ts_ns = ts_ns
        self.first_packet = packet
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.gaps = [0, 0]
        self.gap_bytes = [0, 0]
        self.fin_ts_ns: list[int | None] = [None, None]
        self.fin_packet: list[int | None] = [None, None]
        self.rst_ts_ns: list[int | None] = [None, None]
        self.rst_packet: list[int | None] = [None, None]
        self.rst_error: list[int | None] = [None, None]
        self.tcp_end = [False, False]  # that direction ended with the TCP FIN/RST itself
        self.findings: list[Finding] = []
        self._last_packet = [0, 0]

    def __getattr__(self, name: str):  # the rest is the TCP connection's
        if name == "parent" or name.startswith("__"):  # unpickling probes before slots are set
            raise AttributeError(name)
        return getattr(self.parent, name)

    def __repr__(self) -> str:
        return f"<H2StreamTransport #{self.parent.index} stream {self.stream_id}>"

    def touch(self, d: Direction, ts_ns: int, packet: int) -> None:
        """A frame of this stream in direction ``d``."""
        if ts_ns > self.last_ts_ns:
            self.last_ts_ns = ts_ns
        if packet != self._last_packet[d]:
            self._last_packet[d] = packet
            self.packets[d] += 1

    @property
    def ended(self) -> bool:
        """Both directions ended (END_STREAM each way) or the stream was reset."""
        return self.rst_ts_ns != [None, None] or None not in self.fin_ts_ns


class _H2Stream(_WsState):
    """One extended CONNECT stream (RFC 8441 §4) of an HTTP/2 connection: its request
    and response heads, the handshake check, then the RFC 6455 frames carried in its
    DATA frames, decoded like a TCP connection's bytes after a 101 (stream offsets
    count the stream's DATA payload bytes per direction)."""

    HOLD_LIMIT = PROBE_LIMIT
    """Client DATA bytes held while the request awaits its response (a memory bound)."""

    def __init__(self, conn: _ConnectionSink, ev: H2Headers) -> None:
        parent = conn.a
        self.transport = H2StreamTransport(parent.tcp, ev.stream_id, ev.ts_ns, ev.packets[0])
        a = ConnectionAnalysis(
            id=f"{parent.id}-s{ev.stream_id}",
            role=parent.role,
            tcp=self.transport,  # type: ignore[arg-type]  # duck-typed TcpConnection
            http=True,
            protocol="h2",
            stream_id=ev.stream_id,
            parent=parent.id,
        )
        super().__init__(a, conn.frames, conn.keep_payloads, conn.budget)
        self.conn = conn
        self.started = False  # WebSocket decoding started (a 2xx answered)
        self.decided = False  # the response said whether it is a WebSocket
        self.held: list[H2Data | H2DataGap] = []
        self.held_bytes = 0
        self.offset = [0, 0]  # DATA payload bytes per direction: the session's stream offsets

    # -- events -------------------------------------------------------------------

    def headers(self, ev: H2Headers) -> None:
        a, t = self.a, self.transport
        t.touch(ev.direction, ev.ts_ns, ev.packets[-1])
        if ev.direction == C2S:
            if not a.requests:  # a later block: trailers, nothing to decode
                req = _h2_request(ev)
                a.requests.append(req)
                self._check_request(req)
        else:
            resp = _h2_response(ev)
            if resp is not None and a.requests and not self.decided:
                a.responses.append(resp)
                if resp.status >= 200:  # 1xx are interim (RFC 9110 §15.2)
                    self._decide(resp)
        if ev.end_stream:
            self._end_stream(ev.direction, ev.ts_ns, ev.packets[-1])

    def _check_request(self, req: RequestHead) -> None:
        scheme = header_value(req.headers, b":scheme")
        if scheme is not None and scheme.lower() != b"http":
            # The stream is on a cleartext TCP connection (this capture decodes it).
            self.a.findings.append(
                catalogue.finding(
                    "h2_scheme_mismatch",
                    f"expected=:scheme http on a cleartext connection (RFC 8441 §5), "
                    f"found={_show(scheme)}",
                    packets=req.packets,
                    direction=C2S,
                    offset=req.offset,
                    ts_ns=req.ts_ns,
                )
            )

    def _decide(self, resp: ResponseHead | None) -> None:
        """The response (None: none will come) says whether the stream is a WebSocket;
        the request is checked either way (RFC 8441 §4-5)."""
        self.decided = True
        a = self.a
        hs = check_handshake(a.requests[0], resp)
        a.handshake = hs
        a.findings.extend(hs.findings)
        held, self.held = self.held, []
        if hs.websocket:
            self.started = True
            self.sub = decoder_for(hs.subprotocol)
            for d in (C2S, S2C):
                self._ws_start(hs, d, 0)
        for ev in held:
            self._deliver(ev)

    def data(self, ev: H2Data) -> None:
        t = self.transport
        d = ev.direction
        t.touch(d, ev.ts_ns, ev.packet)
        n = len(ev.data)
        t.bytes[d] += n
        if self.started:
            if n:
                self._ws_events(d, self.ws[d].feed(ev.data, ev.ts_ns, ev.packet))  # type: ignore[union-attr]
        elif not self.decided:
            self._hold(ev, n)
        else:
            self.a.bytes[d].decoded += n  # the body of a refusal
        self.offset[d] += n
        if ev.end_stream:
            self._end_stream(d, ev.ts_ns, ev.packet)

    def data_gap(self, ev: H2DataGap) -> None:
        t = self.transport
        d = ev.direction
        t.touch(d, ev.ts_ns, ev.packet)
        t.gaps[d] += 1
        t.gap_bytes[d] += ev.length
        self.a.bytes[d].gap += ev.length
        if self.started:
            self._ws_events(d, self.ws[d].gap(ev.length, ev.ts_ns, ev.packet))  # type: ignore[union-attr]
        elif not self.decided:
            self._hold(ev, 0)
        self.offset[d] += ev.length

    def _hold(self, ev: H2Data | H2DataGap, n: int) -> None:
        """Client data before the response: RFC 8441 §5 has the client wait for the
        2xx; held (bounded) until the response says what it is."""
        if self.held_bytes + n > self.HOLD_LIMIT:
            self.a.bytes[ev.direction].undecodable += n
            return
        self.held.append(ev)
        self.held_bytes += n

    def _deliver(self, ev: H2Data | H2DataGap) -> None:
        d = ev.direction
        if not self.started:
            if isinstance(ev, H2Data):
                self.a.bytes[d].undecodable += len(ev.data)
            return
        dec = self.ws[d]
        assert dec is not None
        if isinstance(ev, H2Data):
            if ev.data:
                self._ws_events(d, dec.feed(ev.data, ev.ts_ns, ev.packet))
        else:
            self._ws_events(d, dec.gap(ev.length, ev.ts_ns, ev.packet))

    def _end_stream(self, d: Direction, ts_ns: int, packet: int) -> None:
        t = self.transport
        if t.fin_ts_ns[d] is None:
            t.fin_ts_ns[d], t.fin_packet[d] = ts_ns, packet

    def reset(self, ev: H2RstStream) -> None:
        t = self.transport
        d = ev.direction
        t.touch(d, ev.ts_ns, ev.packet)
        if t.rst_ts_ns[d] is None:
            t.rst_ts_ns[d], t.rst_packet[d], t.rst_error[d] = ev.ts_ns, ev.packet, ev.error_code
        a = self.a
        name = error_name(ev.error_code)
        who = "server" if d == S2C else "client"
        if not self.decided and a.requests:
            self._decide(None)
            req = a.requests[0]
            a.findings.append(
                catalogue.finding(
                    "h2_extended_connect_reset",
                    f"expected=a response to the extended CONNECT (RFC 8441 §5), "
                    f"found=RST_STREAM {name} from the {who}",
                    packets=(req.packets[0], ev.packet),
                    direction=d,
                    ts_ns=ev.ts_ns,
                )
            )
        elif self.started and ev.error_code != 0:
            a.findings.append(
                catalogue.finding(
                    "h2_websocket_stream_reset",
                    f"expected=a WebSocket close and END_STREAM (RFC 8441 §5), "
                    f"found=RST_STREAM {name} from the {who}",
                    packets=(ev.packet,),
                    direction=d,
                    ts_ns=ev.ts_ns,
                )
            )

    def end(self, ts_ns: int) -> None:
        """The HTTP/2 connection ended (or the capture did): an open stream ended with
        the TCP connection's FIN or RST; flush the WebSocket decoders."""
        t, tcp = self.transport, self.transport.parent
        if not self.decided and self.a.requests:
            self._decide(None)  # no response in the capture
        if not t.ended:
            for d in (C2S, S2C):
                if t.fin_ts_ns[d] is None and t.rst_ts_ns[d] is None:
                    if tcp.rst_ts_ns[d] is not None:
                        t.rst_ts_ns[d], t.rst_packet[d] = tcp.rst_ts_ns[d], tcp.rst_packet[d]
                        t.tcp_end[d] = True
                    elif tcp.fin_ts_ns[d] is not None:
                        t.fin_ts_ns[d], t.fin_packet[d] = tcp.fin_ts_ns[d], tcp.fin_packet[d]
                        t.tcp_end[d] = True
        if self.started:
            for d in (C2S, S2C):
                self._ws_end(d, ts_ns)
        elif self.held:
            for ev in self.held:
                if isinstance(ev, H2Data):
                    self.a.bytes[ev.direction].undecodable += len(ev.data)
            self.held = []
        self.a.messages.sort(key=lambda m: (m.ts_ns, m.direction, m.offset))


def _describe_side(
    d: Direction, run: Run | None, first: int | None, align: int | None, skipped: int
) -> str:
    """One direction's evidence for the ``handshake_not_captured`` detail."""
    if first is None:
        return f"{d.label}: no data before the decision"
    if run is None:
        where = f"decoded from offset {align}" if align is not None else "resynchronising"
        return f"{d.label}: no run of frame headers found, {where}"
    more = "+" if run.frames >= MAX_RUN else ""
    text = (
        f"{d.label}: {run.frames}{more} {'masked' if run.masked else 'unmasked'} frames"
        f"{' ending at a frame boundary' if run.exact else ''}, decoded from offset {align}"
    )
    return text + (f" ({skipped} bytes before it undecodable)" if skipped else "")


def _show(b: bytes, limit: int = 120) -> str:
    s = b.decode("latin-1")
    return s if len(s) <= limit else s[:limit] + "…"


def analyze_capture(
    path: str | os.PathLike[str],
    role: str = "client",
    *,
    strict: bool = False,
    keep_payloads: bool = False,
    decode_as: frozenset[int] = frozenset(),
    progress: Callable[[int, int | None], None] | None = None,
    max_messages: int | None = MAX_MESSAGES,
) -> CaptureAnalysis:
    """Analyse one capture file.

    ``role`` names the capture point (``"client"``: client ↔ proxy, ``"server"``:
    proxy ↔ server) and prefixes connection ids. ``strict`` re-raises unexpected
    exceptions instead of recording ``internal_error`` findings (tests use it).
    ``keep_payloads`` keeps every message payload in memory (notebook work).
    ``decode_as`` lists TCP ports whose connections are decoded as WebSocket even
    without a captured handshake (like tshark's Decode As).
    ``progress(bytes_read, total_bytes)`` is called every :data:`PROGRESS_EVERY`
    TCP segments (``total_bytes`` None when the size is unknown, e.g. stdin).
    ``max_messages`` bounds the WebSocket messages kept in ``messages`` (and the
    rows of ``frames``) over the whole capture, default :data:`MAX_MESSAGES`, 0 or
    None for no limit. Messages after it are decoded and counted
    (``ConnectionAnalysis.messages_not_kept``) but not kept, except each connection's
    first two close messages per direction, and one ``analysis_messages_not_kept``
    finding says so.

    Raises :class:`wsanalyze.errors.CaptureError` when the file cannot be used.
    """
    frames = FrameColumns()
    budget = _Budget(max_messages)
    by_index: dict[int, ConnectionAnalysis] = {}

    def on_connection(conn: TcpConnection) -> _ConnectionSink:
        a = ConnectionAnalysis(id=f"{role}-{conn.index}", role=role, tcp=conn)
        by_index[conn.index] = a
        return _ConnectionSink(a, frames, strict, keep_payloads, decode_as, budget)

    def on_release(conn: TcpConnection) -> None:
        # Ended without a payload byte: never listed, only counted.
        by_index.pop(conn.index, None)

    reader = open_capture(path)
    with reader, fewer_collections():
        reassembler = TcpReassembler(on_connection, on_release=on_release)
        feed = reassembler.feed
        if progress is None:
            for seg in reader:
                feed(seg)
        else:
            total = _file_size(path)
            segments = iter(reader)
            while chunk := list(islice(segments, PROGRESS_EVERY)):
                for seg in chunk:
                    feed(seg)
                progress(reader.bytes_read, total)
        reassembler.finish()

    # HTTP/2 stream sessions follow their TCP connection.
    analyses = [s for a in by_index.values() for s in (a, *a.streams)]
    for a in analyses:
        if not a.http:
            continue  # counted, not listed: no story to tell
        # TCP-level findings belong to the connection; give every finding its id.
        a.findings[:0] = a.tcp.findings
        a.close = close_story(a)
        if a.websocket:
            a.findings.extend(close_findings(a, a.close))  # RFC 6455 §7: how this leg ended
        a.findings = [_located(f, a.id, role) for f in a.findings]
    listed = [a for a in analyses if a.http]
    findings = [replace(f, capture=role) for f in reader.findings]
    findings.extend(_undecoded_protocols(analyses, role))
    if reassembler.evicted:
        findings.append(
            catalogue.finding(
                "tcp_empty_connections_evicted",
                f"max_empty={reassembler.max_empty}: {reassembler.evicted} connections "
                "without a payload byte ended early (counted as not HTTP)",
                capture=role,
            )
        )
    if budget.not_kept or budget.frames_not_kept:
        findings.append(_not_kept_finding(budget, len(frames), listed, role))
    return CaptureAnalysis(
        role=role,
        path=str(path),
        packets=reader.packets,
        tcp_packets=reader.tcp_packets,
        first_ts_ns=reader.first_ts_ns,
        last_ts_ns=reader.last_ts_ns,
        link_types=tuple(sorted(reader.link_types)),
        connections=listed,
        other_connections=len(analyses) - len(listed) + reassembler.released,
        frames=frames,
        findings=findings,
    )


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector's youngest generation every 20,000 container
    allocations instead of 700 inside the block (restored after): while a capture is
    read, and while two are correlated and diagnosed. Both allocate many objects and
    keep most of them, so the default made the collector walk the same live objects
    again and again: 100,000 open connections took about 7 s of CPU instead of
    about 4.5 s, and correlating and diagnosing two 100 MB captures 1.7 s instead of
    1.0-1.4 s. Released connections break their own reference cycles (tcp.py), so
    memory does not wait for the collector."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 20_000), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _not_kept_finding(
    budget: _Budget, frames_kept: int, listed: list[ConnectionAnalysis], role: str
) -> Finding:
    """The one ``analysis_messages_not_kept`` finding of a capture that reached
    ``max_messages``: how many messages and frames were counted but not kept, from
    which packet, on which connections."""
    conns = [a.id for a in listed if a.messages_not_kept]
    kept = sum(len(a.messages) for a in listed)
    return catalogue.finding(
        "analysis_messages_not_kept",
        f"max_messages={budget.limit}: kept={kept} messages and {frames_kept} frame rows, "
        f"not_kept={budget.not_kept} messages and {budget.frames_not_kept} frame rows "
        f"(decoded and counted) from packet {budget.first_packet} on, "
        f"on {len(conns)} connection(s)",
        packets=() if budget.first_packet is None else (budget.first_packet,),
        capture=role,  # capture-wide: connections filtered out were limited too
    )


def _undecoded_protocols(analyses: list[ConnectionAnalysis], role: str) -> list[Finding]:
    """One finding per protocol that hides WebSocket from this analysis (TLS),
    naming how many connections and which server ports."""
    out = []
    for proto, code in (("tls", "capture_tls_not_decoded"),):
        conns = [a for a in analyses if a.protocol == proto]
        if not conns:
            continue
        ports = sorted({a.tcp.server.port for a in conns})
        out.append(
            catalogue.finding(
                code,
                f"expected=cleartext HTTP/1.1, found={len(conns)} {proto.upper()} connection(s) "
                f"to port(s) {', '.join(map(str, ports[:10]))}",
                packets=[a.tcp.first_packet for a in conns[:10]],
                ts_ns=conns[0].tcp.first_ts_ns,
                capture=role,
            )
        )
    return out


_PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def parse_proxy_header(data: bytes) -> tuple[int, int, str | None] | None:
    """Parse a PROXY protocol header at the start of ``data`` (HAProxy's PROXY
    protocol spec, versions 1 and 2): returns (header length in bytes, version,
    ``"ip:port"`` of the source it names or None for UNKNOWN/LOCAL), or None when
    ``data`` does not start with a complete, valid header."""
    import ipaddress
    import struct

    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n", 0, 108)  # v1: at most 107 bytes
        if end < 0:
            return None
        parts = data[:end].split(b" ")
        if len(parts) == 6 and parts[1] in (b"TCP4", b"TCP6"):
            try:
                ip = ipaddress.ip_address(parts[2].decode("ascii"))
                port = int(parts[4])
            except (ValueError, UnicodeDecodeError):
                return None
            host = f"[{ip}]" if ip.version == 6 else str(ip)
            return end + 2, 1, f"{host}:{port}"
        return (end + 2, 1, None) if parts[1:2] == [b"UNKNOWN"] else None
    if data.startswith(_PROXY_V2_SIG) and len(data) >= 16:
        ver_cmd, fam, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
        if ver_cmd >> 4 != 2 or len(data) < 16 + length:
            return None
        source = None
        if ver_cmd & 0xF == 1 and fam >> 4 == 1 and length >= 12:  # PROXY, AF_INET
            source = f"{ipaddress.ip_address(data[16:20])}:{struct.unpack_from('!H', data, 24)[0]}"
        elif ver_cmd & 0xF == 1 and fam >> 4 == 2 and length >= 36:  # AF_INET6
            ip6 = ipaddress.ip_address(data[16:32])
            source = f"[{ip6}]:{struct.unpack_from('!H', data, 48)[0]}"
        return 16 + length, 2, source
    return None


PROGRESS_EVERY = 8192
"""TCP segments between two calls of the progress callback."""


def _file_size(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_size if str(path) != "-" else None
    except OSError:
        return None


def _located(f: Finding, conn_id: str, role: str) -> Finding:
    """``f`` with its connection id and capture role filled in."""
    return replace(f, connections=f.connections or (conn_id,), capture=f.capture or role)
