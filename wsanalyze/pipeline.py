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

import inspect
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice

from . import catalogue
from .capture import open_capture
from .closing import CloseStory, close_findings, close_story
from .deflate import deflate_params
from .detect import DETECT_SCORE, MAX_RUN, SCAN_LIMIT, Detection, Run, detect
from .frames import FrameDecoder, PayloadChunk
from .handshake import Handshake, check_handshake, is_upgrade_request
from .http1 import Http1Parser
from .messages import MessageAssembler
from .model import (
    Direction,
    Finding,
    Frame,
    Message,
    Opcode,
    RequestHead,
    ResponseHead,
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
    """Frames of one capture in columnar lists (cheap to build, cheap to turn into a
    DataFrame). One entry per frame; ``ts_ns`` ints, sizes in bytes."""

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

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])

    def append(self, conn_id: str, f: Frame) -> None:
        self.connection.append(conn_id)
        self.direction.append(int(f.direction))
        self.offset.append(f.offset)
        self.header_len.append(f.header_len)
        self.fin.append(f.fin)
        self.rsv1.append(f.rsv1)
        self.rsv2.append(f.rsv2)
        self.rsv3.append(f.rsv3)
        self.opcode.append(f.opcode)
        self.masked.append(f.masked)
        self.masking_key.append(f.masking_key.hex() if f.masking_key else None)
        self.payload_len.append(f.payload_len)
        self.first_packet.append(f.first_packet)
        self.last_packet.append(f.last_packet)
        self.first_ts_ns.append(f.first_ts_ns)
        self.ts_ns.append(f.ts_ns)
        self.complete.append(f.complete)

    def __len__(self) -> int:
        return len(self.connection)


@dataclass(slots=True)
class ByteAccount:
    """Where every byte of one direction went, in bytes: decoded (HTTP heads and
    bodies, WebSocket frames), gap (never captured), undecodable (seen but not
    decodable), other (a protocol wsanalyze does not decode)."""

    decoded: int = 0
    gap: int = 0
    undecodable: int = 0
    other: int = 0


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
    http: bool = False  # carries HTTP/1.x (or WebSocket)
    protocol: str = "unknown"  # "http", "tls", "h2" (prior knowledge), "unknown"

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


class _ConnectionSink:
    """Routes one TCP connection's in-order bytes through HTTP/1.x and, after a
    successful upgrade, the WebSocket frame decoder and message assembler."""

    def __init__(
        self,
        analysis: ConnectionAnalysis,
        frames: FrameColumns,
        strict: bool,
        keep_payloads: bool,
        decode_as: frozenset[int] = frozenset(),
    ) -> None:
        self.decode_as = decode_as
        self.a = analysis
        self.frames = frames
        self.strict = strict
        self.keep_payloads = keep_payloads
        self.mode = [_UNKNOWN, _UNKNOWN]
        self.http: list[Http1Parser | None] = [None, None]
        self.ws: list[FrameDecoder | None] = [None, None]
        self.asm: list[MessageAssembler | None] = [None, None]
        self.sub: SubprotocolDecoder | None = None
        # Pings awaiting their Pong, per direction: (digest, packet), bounded.
        self.pings: tuple[deque[tuple[bytes, int]], deque[tuple[bytes, int]]] = (
            deque(maxlen=16),
            deque(maxlen=16),
        )
        self.transcript_chars = 0
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
        if data.startswith(_HTTP_METHODS) and not data.startswith(_H2_PREFACE):
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
        else:
            h2 = data.startswith(_H2_PREFACE)
            tls = len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04
            forced = self._decode_as_port()
            if not (h2 or tls) and (self.a.tcp.mid_stream or forced is not None):
                self.mode = [_PROBE, _PROBE]
                self.probe = _Probe(forced)
                return d
            self.mode = [_OTHER, _OTHER]
            if h2:
                self.a.protocol = "h2"
            elif tls:
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
        self.http = [Http1Parser(C2S), Http1Parser(S2C)]

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
        if is_upgrade_request(req) and self.upgrade_pending is None:
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
            hs = check_handshake(req, resp)
            if self.a.handshake is None:
                self.a.handshake = hs
                self.a.findings.extend(hs.findings)
            if hs.websocket:
                self._start_websocket(hs)
                return
            if resp.status == 101:  # some other protocol (h2c, ...): not decoded here
                self.mode = [_OTHER, _OTHER]
                for parser in self.http:
                    if parser is not None:
                        parser.stop()
                return
            parser = self.http[C2S]
            assert parser is not None
            self._http_events(C2S, parser.resume(), ts_ns, packet)

    def _start_websocket(self, hs: Handshake) -> None:
        rsv_allowed = 0x4 if hs.deflate else 0
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
            dec = FrameDecoder(
                d, rsv_allowed=rsv_allowed, start_offset=offset, stream_payloads=True
            )
            self.ws[d] = dec
            self.asm[d] = MessageAssembler(
                d,
                keep_payloads=self.keep_payloads or self.sub is not None,
                deflate=deflate_params(hs, d),
            )
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
        acct.undecodable += parser.undecodable_bytes

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
                self.frames.append(self.a.id, ev)
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
                self.a.messages.append(out)
            else:
                self.a.findings.append(out)

    def _ping_pong(self, msg: Message) -> None:
        """RFC 6455 §5.5.3: a Pong answering a Ping carries the Ping's application
        data. A Pong with no Ping outstanding is an unsolicited heartbeat (allowed);
        one answering may skip older Pings (only the latest must be answered)."""
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

    def _gap(self, d: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        if self.mode[d] == _PROBE:
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
        for d in (C2S, S2C):
            if self.mode[d] == _WS:
                dec, asm = self.ws[d], self.asm[d]
                assert dec is not None and asm is not None
                self._ws_events(d, dec.eof(ts_ns))
                self._assembled(asm.eof(ts_ns))
                self.a.bytes[d].decoded += dec.decoded_bytes
                self.a.bytes[d].undecodable += dec.undecodable_bytes
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

    Raises :class:`wsanalyze.errors.CaptureError` when the file cannot be used.
    """
    frames = FrameColumns()
    analyses: list[ConnectionAnalysis] = []

    def on_connection(conn: TcpConnection) -> _ConnectionSink:
        a = ConnectionAnalysis(id=f"{role}-{conn.index}", role=role, tcp=conn)
        analyses.append(a)
        return _ConnectionSink(a, frames, strict, keep_payloads, decode_as)

    reader = open_capture(path)
    with reader:
        reassembler = TcpReassembler(on_connection)
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

    for a in analyses:
        # TCP-level findings belong to the connection; give every finding its id.
        a.findings[:0] = a.tcp.findings
        a.close = close_story(a)
        if a.websocket:
            a.findings.extend(close_findings(a, a.close))  # RFC 6455 §7: how this leg ended
        a.findings = [_located(f, a.id, role) for f in a.findings]
    listed = [a for a in analyses if a.http]
    findings = [replace(f, capture=role) for f in reader.findings]
    findings.extend(_undecoded_protocols(analyses, role))
    return CaptureAnalysis(
        role=role,
        path=str(path),
        packets=reader.packets,
        tcp_packets=reader.tcp_packets,
        first_ts_ns=reader.first_ts_ns,
        last_ts_ns=reader.last_ts_ns,
        link_types=tuple(sorted(reader.link_types)),
        connections=listed,
        other_connections=len(analyses) - len(listed),
        frames=frames,
        findings=findings,
    )


def _undecoded_protocols(analyses: list[ConnectionAnalysis], role: str) -> list[Finding]:
    """One finding per protocol that hides WebSocket from this analysis (TLS, HTTP/2
    with prior knowledge), naming how many connections and which server ports."""
    out = []
    for proto, code in (("tls", "capture_tls_not_decoded"), ("h2", "capture_http2_not_decoded")):
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
