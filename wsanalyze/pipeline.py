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

import os
from dataclasses import dataclass, field, replace

from . import catalogue
from .capture import open_capture
from .frames import FrameDecoder, PayloadChunk
from .handshake import Handshake, check_handshake, is_upgrade_request
from .http1 import Http1Parser
from .messages import MessageAssembler
from .model import (
    Direction,
    Finding,
    Frame,
    Message,
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
        """True when the opening handshake succeeded (RFC 6455 §4.2.2: a 101 with
        Upgrade: websocket), so frames follow."""
        return self.handshake is not None and self.handshake.websocket


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
        self.transcript_chars = 0
        self.pending: list[RequestHead] = []  # requests awaiting a response
        self.upgrade_pending: RequestHead | None = None
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
            self._gap(direction, length, ts_ns, packet)
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
        if mode == _UNKNOWN:
            d = self._detect(d, data)
            mode = self.mode[d]
        if mode == _OTHER:
            self.a.bytes[d].other += len(data)
            return
        parser = self.http[d]
        assert parser is not None
        self._http_events(d, parser.feed(data, ts_ns, packet), ts_ns, packet)

    def _detect(self, d: Direction, data: bytes) -> Direction:
        """Decide on the first bytes of a connection whether it carries HTTP/1.x;
        returns the direction of ``data`` (changed when the roles were swapped)."""
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
            self.mode = [_OTHER, _OTHER]
            if data.startswith(_H2_PREFACE):
                self.a.protocol = "h2"
            elif len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04:
                self.a.protocol = "tls"  # a TLS handshake record (RFC 8446 §5.1)
        return d

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
                d, keep_payloads=self.keep_payloads or self.sub is not None
            )
            last = self.a.responses[-1] if d == S2C else self.a.requests[-1]
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
                self.a.messages.append(out)
            else:
                self.a.findings.append(out)

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

    def _gap(self, d: Direction, length: int, ts_ns: int, packet: int) -> None:
        if self.mode[d] == _WS:
            dec = self.ws[d]
            assert dec is not None
            self._ws_events(d, dec.gap(length, ts_ns, packet))
        elif self.mode[d] == _HTTP:
            parser = self.http[d]
            assert parser is not None
            self._http_events(d, parser.gap(length, ts_ns, packet), ts_ns, packet)

    def _end(self, ts_ns: int) -> None:
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
) -> CaptureAnalysis:
    """Analyse one capture file.

    ``role`` names the capture point (``"client"``: client ↔ proxy, ``"server"``:
    proxy ↔ server) and prefixes connection ids. ``strict`` re-raises unexpected
    exceptions instead of recording ``internal_error`` findings (tests use it).
    ``keep_payloads`` keeps every message payload in memory (notebook work).
    ``decode_as`` lists TCP ports whose connections are decoded as WebSocket even
    without a captured handshake (like tshark's Decode As).

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
        for seg in reader:
            feed(seg)
        reassembler.finish()

    for a in analyses:
        # TCP-level findings belong to the connection; give every finding its id.
        a.findings[:0] = a.tcp.findings
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


def _located(f: Finding, conn_id: str, role: str) -> Finding:
    """``f`` with its connection id and capture role filled in."""
    return replace(f, connections=f.connections or (conn_id,), capture=f.capture or role)
