"""Build small captures for tests with scapy: TCP conversations with a real
three-way handshake and correct sequence/acknowledgement numbers, HTTP/1.1 heads,
RFC 6455 frames, and both legs of a proxied WebSocket.

Everything is deterministic (times, ports, ISNs, masking keys are parameters), so
a test can state exactly what the analysis must find. Times are float seconds with
microsecond granularity (the pcap files are written with microsecond timestamps).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

T0 = 1_800_000_000.0  # a round epoch second; offsets are added in µs steps
US = 1e-6

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Header = tuple[str, str]


def t_us(offset_us: int, base: float = T0) -> float:
    """``base`` + ``offset_us`` microseconds, as float seconds."""
    return round(base + offset_us * US, 6)


# --- WebSocket and HTTP bytes ---------------------------------------------------------


def accept_for(key: str) -> str:
    """Sec-WebSocket-Accept for ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode()


def ws_key(n: int) -> str:
    """A distinct, valid Sec-WebSocket-Key (16 bytes, base64) for each ``n``."""
    return base64.b64encode(hashlib.sha256(f"key-{n}".encode()).digest()[:16]).decode()


def ws_frame(
    opcode: int, payload: bytes, *, mask_key: bytes | None = None, fin: bool = True
) -> bytes:
    """One RFC 6455 §5.2 frame; masked when ``mask_key`` (4 bytes) is given."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask_key is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask_key is None:
        return head + payload
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))
    return head + mask_key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def http_request(
    target: str | bytes,
    headers: Iterable[Header],
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
) -> bytes:
    t = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode() + b" " + t + b" " + version.encode() + b"\r\n"
    for n, v in headers:
        head += n.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
    return head + b"\r\n"


def http_response(status: int, reason: str, headers: Iterable[Header], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    for n, v in headers:
        head += n.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
    return head + b"\r\n" + body


def upgrade_headers(host: str, key: str, *extra: Header) -> list[Header]:
    """The headers of a WebSocket opening handshake request (RFC 6455 §4.1)."""
    return [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]


def switching_headers(key: str, *extra: Header) -> list[Header]:
    """The headers of a 101 answering a request with ``key``."""
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_for(key)),
        *extra,
    ]


# --- TCP ----------------------------------------------------------------------------------


class TcpFlow:
    """One TCP connection as packets: ``open`` (three-way handshake), ``send`` data
    from ``"c"`` (the side that sent the SYN) or ``"s"``, ``fin``. Every segment
    acknowledges everything the peer sent so far; data is cut into ``mss`` segments
    that share the given timestamp plus 1 µs per segment."""

    def __init__(
        self,
        client: tuple[str, int],
        server: tuple[str, int],
        *,
        isn_c: int = 1_000_000,
        isn_s: int = 5_000_000,
        mss: int = 1448,
    ) -> None:
        self.ep = {"c": client, "s": server}
        self.next_seq = {"c": isn_c, "s": isn_s}
        self.mss = mss
        self.packets: list = []

    def _pkt(self, frm: str, flags: str, t: float, payload: bytes = b"") -> None:
        to = "s" if frm == "c" else "c"
        (sip, sport), (dip, dport) = self.ep[frm], self.ep[to]
        ack = self.next_seq[to] if "A" in flags else 0
        p = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src=sip, dst=dip, ttl=64)
            / TCP(
                sport=sport, dport=dport, flags=flags, seq=self.next_seq[frm], ack=ack, window=65535
            )
        )
        if payload:
            p = p / Raw(load=payload)
        p.time = round(t, 6)
        self.packets.append(p)

    def open(self, t: float) -> float:
        """SYN at ``t``, SYN-ACK 10 µs later, ACK 20 µs later; returns the last time."""
        self._pkt("c", "S", t)
        self.next_seq["c"] += 1
        self._pkt("s", "SA", t + 10 * US)
        self.next_seq["s"] += 1
        self._pkt("c", "A", t + 20 * US)
        return t + 20 * US

    def send(self, frm: str, data: bytes, t: float) -> float:
        """``data`` from ``frm`` in MSS-sized segments starting at ``t``; returns the
        time of the last segment (the one carrying the last byte)."""
        last = t
        for k, i in enumerate(range(0, len(data), self.mss)):
            last = t + k * US
            self._pkt(frm, "PA", last, data[i : i + self.mss])
            self.next_seq[frm] += len(data[i : i + self.mss])
        return last

    def ack(self, frm: str, t: float) -> None:
        self._pkt(frm, "A", t)

    def fin(self, frm: str, t: float) -> None:
        self._pkt(frm, "FA", t)
        self.next_seq[frm] += 1

    def rst(self, frm: str, t: float) -> None:
        """A RST (with ACK, as Linux sends on an abortive close, ``SO_LINGER`` 0) from
        ``frm`` at the next sequence number (RFC 9293 §3.5.2)."""
        self._pkt(frm, "RA", t)


def write_pcap(path: Path | str, packets: Sequence) -> Path:
    """Write ``packets`` sorted by time (stable) as a classic Ethernet pcap."""
    pkts = sorted(packets, key=lambda p: float(p.time))
    wrpcap(str(path), pkts, linktype=1)
    return Path(path)


def shift_pcap(src: Path | str, dst: Path | str, delta_us: int) -> Path:
    """Copy a classic microsecond pcap adding ``delta_us`` to every record's
    timestamp, exactly (integer arithmetic on the record headers)."""
    data = bytearray(Path(src).read_bytes())
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        order = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        order = ">"
    else:  # pragma: no cover - only used on microsecond pcaps
        raise ValueError("not a microsecond classic pcap")
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from(order + "IIII", data, pos)
        total = sec * 1_000_000 + usec + delta_us
        struct.pack_into(order + "II", data, pos, total // 1_000_000, total % 1_000_000)
        pos += 16 + incl
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# --- a proxied WebSocket: both legs -------------------------------------------------------


@dataclass
class Msg:
    """One message: ``"c2s"`` or ``"s2c"``, opcode, payload (client frames are masked
    with ``mask_key``, the same bytes on both legs as nginx forwards them)."""

    direction: str
    opcode: int
    payload: bytes
    mask_key: bytes = b"\x11\x22\x33\x44"

    def frame(self) -> bytes:
        key = self.mask_key if self.direction == "c2s" else None
        return ws_frame(self.opcode, self.payload, mask_key=key)


@dataclass
class ProxiedWebSocket:
    """A WebSocket through a full proxy, as two TCP connections.

    The client leg runs ``client`` → ``listener``; the server leg ``proxy_source`` →
    ``server``. The proxy forwards each message ``delay_us`` after it arrived, the
    server-leg clock runs ``server_clock_us`` ahead of the client leg's (θ).
    ``client_headers``/``server_headers`` are the request as sent on each leg;
    ``client_response``/``server_response`` the response headers (an
    ``Sec-WebSocket-Accept`` for each leg's own key is added when ``status`` is 101).
    After the messages the client sends a close ``close`` (code, reason) unless it
    is None, the server answers it, and the server closes TCP on the server leg and
    the proxy on the client leg.
    """

    client: tuple[str, int]
    listener: tuple[str, int]
    proxy_source: tuple[str, int]
    server: tuple[str, int]
    client_headers: list[Header]
    server_headers: list[Header]
    target: str | bytes = "/ws"
    server_target: str | bytes | None = None
    server_version: str = "HTTP/1.1"
    status: int = 101
    reason: str = "Switching Protocols"
    client_response: list[Header] = field(default_factory=list)
    server_response: list[Header] = field(default_factory=list)
    messages: list[Msg] = field(default_factory=list)
    close: tuple[int, bytes] | None = (1000, b"bye")
    start_us: int = 0
    delay_us: int = 200
    step_us: int = 10_000
    server_clock_us: int = 0
    isn: int = 1_000_000

    def _key(self, headers: list[Header]) -> str | None:
        return next((v for n, v in headers if n.lower() == "sec-websocket-key"), None)

    def _response(self, headers: list[Header], request: list[Header]) -> bytes:
        hs = list(headers)
        key = self._key(request)
        if self.status == 101 and key is not None:
            hs = switching_headers(key, *hs)
        return http_response(self.status, self.reason, hs)

    def build(self) -> tuple[list, list]:
        """The packets of the client leg and of the server leg."""
        d, theta = self.delay_us, self.server_clock_us
        cf = TcpFlow(self.client, self.listener, isn_c=self.isn, isn_s=self.isn + 500_000)
        sf = TcpFlow(
            self.proxy_source, self.server, isn_c=self.isn + 2_000_000, isn_s=self.isn + 3_000_000
        )

        def ct(us: int) -> float:  # client-leg clock
            return t_us(self.start_us + us)

        def st(us: int) -> float:  # server-leg clock
            return t_us(self.start_us + us + theta)

        cf.open(ct(0))
        cf.send("c", http_request(self.target, self.client_headers), ct(100))
        cf.ack("s", ct(110))
        sf.open(st(100 + d))
        sf.send(
            "c",
            http_request(
                self.server_target if self.server_target is not None else self.target,
                self.server_headers,
                version=self.server_version,
            ),
            st(140 + d),
        )
        sf.send("s", self._response(self.server_response, self.server_headers), st(300 + d))
        sf.ack("c", st(310 + d))
        cf.send("s", self._response(self.client_response, self.client_headers), ct(300 + 2 * d))
        cf.ack("c", ct(310 + 2 * d))
        t = 1_000 + 2 * d
        msgs = list(self.messages)
        if self.status == 101 and self.close is not None:
            msgs.append(Msg("c2s", CLOSE, close_payload(*self.close)))
            msgs.append(Msg("s2c", CLOSE, close_payload(*self.close)))
        if self.status == 101:
            for m in msgs:
                t += self.step_us
                frame = m.frame()
                if m.direction == "c2s":
                    cf.send("c", frame, ct(t))
                    sf.send("c", frame, st(t + d))
                    sf.ack("s", st(t + d + 50))
                    cf.ack("s", ct(t + 60))
                else:
                    sf.send("s", frame, st(t))
                    cf.send("s", frame, ct(t + d))
                    cf.ack("c", ct(t + d + 50))
                    sf.ack("c", st(t + 60))
        t += self.step_us
        sf.fin("s", st(t))
        sf.fin("c", st(t + 30))
        cf.fin("s", ct(t + d))
        cf.fin("c", ct(t + d + 30))
        return cf.packets, sf.packets


def write_legs(
    tmp_path: Path, conversations: Sequence[ProxiedWebSocket], prefix: str = ""
) -> tuple[Path, Path]:
    """Build every conversation and write ``<prefix>client.pcap`` and
    ``<prefix>server.pcap`` into ``tmp_path``."""
    cpk: list = []
    spk: list = []
    for conv in conversations:
        c, s = conv.build()
        cpk += c
        spk += s
    return (
        write_pcap(tmp_path / f"{prefix}client.pcap", cpk),
        write_pcap(tmp_path / f"{prefix}server.pcap", spk),
    )


def nginx_like(
    n: int,
    *,
    client_ip: str = "192.0.2.10",
    client_port: int | None = None,
    proxy_port: int | None = None,
    pass_key: bool = True,
    extra: Sequence[Header] = (),
    **kw,
) -> ProxiedWebSocket:
    """Conversation number ``n`` through an nginx-like proxy at 192.0.2.1:80 →
    198.51.100.10:8080: the proxy adds X-Forwarded-For, lower-cases Connection and
    passes the client's Sec-WebSocket-Key unless ``pass_key`` is False (then the
    server leg carries a key of its own)."""
    ckey = ws_key(n)
    skey = ckey if pass_key else ws_key(1000 + n)
    cport = client_port if client_port is not None else 41000 + n
    pport = proxy_port if proxy_port is not None else 52000 + n
    return ProxiedWebSocket(
        client=(client_ip, cport),
        listener=("192.0.2.1", 80),
        proxy_source=("198.51.100.1", pport),
        server=("198.51.100.10", 8080),
        client_headers=upgrade_headers("192.0.2.1", ckey, *extra),
        server_headers=[
            ("Upgrade", "websocket"),
            ("Connection", "upgrade"),
            ("Host", "192.0.2.1"),
            ("X-Forwarded-For", client_ip),
            ("Sec-WebSocket-Key", skey),
            ("Sec-WebSocket-Version", "13"),
            *extra,
        ],
        isn=1_000_000 + 10_000_000 * n,
        **kw,
    )


def plain_http_capture(path: Path) -> Path:
    """A capture with no WebSocket at all: one HTTP GET answered 200 with a body, one
    TCP connection carrying something else (an SSH banner)."""
    f = TcpFlow(("192.0.2.10", 40100), ("192.0.2.1", 80))
    f.open(t_us(0))
    f.send("c", http_request("/index.html", [("Host", "192.0.2.1")]), t_us(100))
    body = b"<html>hello</html>"
    f.send(
        "s",
        http_response(200, "OK", [("Content-Length", str(len(body))), ("Server", "x")], body),
        t_us(300),
    )
    f.fin("c", t_us(500))
    f.fin("s", t_us(600))
    g = TcpFlow(("192.0.2.10", 40101), ("192.0.2.1", 22), isn_c=7_000_000, isn_s=8_000_000)
    g.open(t_us(1000))
    g.send("s", b"SSH-2.0-OpenSSH_9.2\r\n", t_us(1100))
    g.send("c", b"SSH-2.0-test\r\n", t_us(1200))
    g.fin("c", t_us(1300))
    g.fin("s", t_us(1400))
    return write_pcap(path, f.packets + g.packets)


# --- both legs scripted event by event (close and handshake-failure tests) ----------------


class ProxiedLegs:
    """Both legs of one proxied connection, scripted event by event, for what
    :class:`ProxiedWebSocket` cannot express (RST, a leg left open, a response that
    never comes, a 101 altered by the proxy).

    ``leg`` is ``"c"`` (client ↔ proxy listener) or ``"s"`` (proxy source ↔ server);
    ``frm`` the endpoint of that leg that sends: ``"c"`` opened the leg (the client on
    the client leg, the proxy on the server leg), ``"s"`` accepted it. Times ``us`` are
    µs from ``start_us`` on the client-leg clock; server-leg packets are stamped
    ``server_clock_us`` later (θ). Data is acknowledged by the peer 5 µs later.
    ``build()`` returns (client-leg packets, server-leg packets), so conversations of
    both kinds can go to :func:`write_legs` together.
    """

    def __init__(
        self,
        n: int = 1,
        *,
        client_ip: str = "192.0.2.10",
        server_clock_us: int = 0,
        start_us: int = 0,
    ) -> None:
        self.n = n
        self.client = (client_ip, 43000 + n)
        self.listener = ("192.0.2.1", 80)
        self.proxy_source = ("198.51.100.1", 53000 + n)
        self.server = ("198.51.100.10", 8080)
        self.server_clock_us = server_clock_us
        self.start_us = start_us
        isn = 3_000_000 + 10_000_000 * n
        self.flows = {
            "c": TcpFlow(self.client, self.listener, isn_c=isn, isn_s=isn + 500_000),
            "s": TcpFlow(
                self.proxy_source, self.server, isn_c=isn + 2_000_000, isn_s=isn + 3_000_000
            ),
        }

    def t(self, leg: str, us: int) -> float:
        """Packet time of client-leg µs ``us`` on ``leg``'s clock."""
        return t_us(self.start_us + us + (self.server_clock_us if leg == "s" else 0))

    def open(self, leg: str, us: int) -> None:
        self.flows[leg].open(self.t(leg, us))

    def send(self, leg: str, frm: str, data: bytes, us: int) -> None:
        flow = self.flows[leg]
        last = flow.send(frm, data, self.t(leg, us))
        flow.ack("s" if frm == "c" else "c", round(last + 5 * US, 6))

    def request(
        self,
        leg: str,
        headers: Iterable[Header],
        us: int,
        *,
        target: str = "/ws",
        version: str = "HTTP/1.1",
    ) -> None:
        self.send(leg, "c", http_request(target, headers, version=version), us)

    def response(
        self,
        leg: str,
        status: int,
        reason: str,
        headers: Iterable[Header],
        us: int,
        body: bytes = b"",
    ) -> None:
        self.send(leg, "s", http_response(status, reason, headers, body), us)

    def frame(self, leg: str, frm: str, opcode: int, payload: bytes, us: int) -> None:
        """One frame; masked (key 11 22 33 44) when sent by the leg's client."""
        key = b"\x11\x22\x33\x44" if frm == "c" else None
        self.send(leg, frm, ws_frame(opcode, payload, mask_key=key), us)

    def close(self, leg: str, frm: str, code: int | None, reason: bytes, us: int) -> None:
        """A close frame; ``code`` None sends an empty close payload."""
        self.frame(leg, frm, CLOSE, b"" if code is None else close_payload(code, reason), us)

    def fin(self, leg: str, frm: str, us: int) -> None:
        self.flows[leg].fin(frm, self.t(leg, us))

    def rst(self, leg: str, frm: str, us: int) -> None:
        self.flows[leg].rst(frm, self.t(leg, us))

    def ack(self, leg: str, frm: str, us: int) -> None:
        self.flows[leg].ack(frm, self.t(leg, us))

    def client_headers(self, *extra: Header, key: str | None = None) -> list[Header]:
        """The client's Upgrade request headers (key ``ws_key(n)`` unless given)."""
        return upgrade_headers("192.0.2.1", key or ws_key(self.n), *extra)

    def server_headers(self, *extra: Header, key: str | None = None) -> list[Header]:
        """An nginx-like forwarded request: X-Forwarded-For added, Connection lower-cased,
        the client's key unless ``key`` is given."""
        return [
            ("Upgrade", "websocket"),
            ("Connection", "upgrade"),
            ("Host", "192.0.2.1"),
            ("X-Forwarded-For", self.client[0]),
            ("Sec-WebSocket-Key", key or ws_key(self.n)),
            ("Sec-WebSocket-Version", "13"),
            *extra,
        ]

    def websocket(
        self,
        us: int = 0,
        *,
        messages: int = 1,
        step_us: int = 10_000,
        delay_us: int = 200,
    ) -> int:
        """A successful handshake on both legs, then ``messages`` text exchanges
        (client → server, echoed), each forwarded ``delay_us`` later. Returns the
        client-leg µs of the last event."""
        d = delay_us
        key = ws_key(self.n)
        self.open("c", us)
        self.request("c", self.client_headers(), us + 100)
        self.open("s", us + 100 + d)
        self.request("s", self.server_headers(), us + 140 + d)
        self.response("s", 101, "Switching Protocols", switching_headers(key), us + 300 + d)
        self.response("c", 101, "Switching Protocols", switching_headers(key), us + 300 + 2 * d)
        t = us + 1_000 + 2 * d
        for i in range(messages):
            t += step_us
            payload = f"message-{self.n}-{i}".encode()
            self.frame("c", "c", TEXT, payload, t)
            self.frame("s", "c", TEXT, payload, t + d)
            self.frame("s", "s", TEXT, payload, t + 2 * d)
            self.frame("c", "s", TEXT, payload, t + 3 * d)
            t += 3 * d
        return t

    def build(self) -> tuple[list, list]:
        return self.flows["c"].packets, self.flows["s"].packets


# --- F5 BIG-IP Ethernet trailers (tcpdump -i 0.0:nnn on a BIG-IP) ----------------------------
# Layouts of Wireshark's packet-f5ethtrailer.c; see wsanalyze.f5trailer.


def f5_address(ip: str, route_domain: int | None = None) -> bytes:
    """A 16-byte trailer address: IPv4 as ``::ffff:a.b.c.d`` or, in a route domain,
    ``2620:0:c10:f501:0:RD:a.b.c.d``; IPv6 as is."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        return addr.packed
    if route_domain is None:
        return bytes(10) + b"\xff\xff" + addr.packed
    return (
        bytes.fromhex("26200000 0c10f501 0000".replace(" ", ""))
        + struct.pack("!H", route_domain)
        + addr.packed
    )


def f5_high_fields(
    remote: tuple[str, int],
    local: tuple[str, int],
    *,
    proto: int = 6,
    vlan: int = 0,
    remote_rd: int | None = None,
    local_rd: int | None = None,
) -> bytes:
    """The 39 bytes of high noise: peer IP protocol, VLAN, remote and local address
    (16 bytes each), remote and local port."""
    return (
        struct.pack("!BH", proto, vlan)
        + f5_address(remote[0], remote_rd)
        + f5_address(local[0], local_rd)
        + struct.pack("!HH", remote[1], local[1])
    )


def f5_dpt_trailer(
    *,
    ingress: bool = True,
    slot: int = 0,
    tmm: int = 0,
    vip: bytes = b"",
    low_version: int = 3,
    flow_id: int | None = None,
    peer_id: int = 0,
    high: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """A new-format (BIG-IP 14.0+, "DPT") trailer: header (magic, length, version 1),
    a low noise TLV (version 2 or 3: flags, slot (0-based), tmm, name length, name;
    version 4: the name in an object-name block), a medium noise TLV version 4 when
    ``flow_id`` is given (flow id, peer id, flags, flow type, HA unit, reserved,
    priority, no RST cause), a high noise TLV version 1 with ``high`` (39 bytes,
    :func:`f5_high_fields`), then ``extra`` (whole TLVs, e.g. another provider)."""

    def tlv(typ: int, version: int, data: bytes, provider: int = 1) -> bytes:
        return struct.pack("!HHHH", provider, typ, 8 + len(data), version) + data

    flags = 1 if ingress else 0  # version 2: the ingress byte; 3 and 4: flag bit 0
    if low_version < 4:
        low = struct.pack("!BBBB", flags, slot, tmm, len(vip)) + vip
    else:
        block = b"\x00" + bytes([len(vip)]) + vip if vip else b""
        block += b"\x01\x031.1"  # the physical port: an object name of another type
        low = struct.pack("!BBBB", flags, slot, tmm, len(block)) + block
    body = tlv(1, low_version, low)
    if flow_id is not None:
        med = struct.pack("!QQIIBBIBB", flow_id, peer_id, 0, 0x10, 0, 0, 0, 3, 0)
        body += tlv(2, 4, med)
    if high is not None:
        body += tlv(3, 1, high)
    body += extra
    return struct.pack("!4sHH", b"\xf5\xde\xb0\xf5", 8 + len(body), 1) + body


def f5_legacy_trailer(
    *,
    ingress: bool = True,
    slot: int = 0,
    tmm: int = 0,
    vip: bytes = b"",
    flow_id: int | None = None,
    peer_id: int = 0,
    high: bytes | None = None,
) -> bytes:
    """An old-format (BIG-IP 11.2-13.x) trailer: TLVs ``type, length, version, data``
    (``length`` counts from the version byte): low noise version 1 (ingress, slot
    (0-based), tmm, name length, name), medium noise version 1 when ``flow_id`` is
    given (64-bit flow and peer ids, flags, flow type, HA unit, ingress slot and port,
    no RST cause), high noise version 0 with ``high`` (39 bytes)."""

    def tlv(typ: int, version: int, data: bytes) -> bytes:
        return bytes([typ, len(data) + 1, version]) + data

    out = tlv(1, 1, struct.pack("!BBBB", int(ingress), slot, tmm, len(vip)) + vip)
    if flow_id is not None:
        out += tlv(2, 1, struct.pack("!QQIBBHHB", flow_id, peer_id, 0x10, 0, 0, 0, 0, 0))
    if high is not None:
        out += tlv(3, 0, high)
    return out


def with_f5_trailer(packet, trailer: bytes, *, fcs: bytes = b"", pad_to: int = 60):
    """``packet`` (Ether/IP/TCP) as a BIG-IP tcpdump writes it: the frame zero-padded to
    ``pad_to`` bytes (Ethernet's minimum without FCS), then ``fcs``, then the trailer.
    The IP total length still covers the IP datagram only. Keeps the packet time."""
    raw = bytes(packet)
    raw += bytes(max(0, pad_to - len(raw))) + fcs + trailer
    out = Ether(raw)  # the bytes after the IP datagram become scapy's Padding layer
    assert bytes(out) == raw
    out.time = packet.time
    return out


def f5_leg(
    packets: Sequence,
    flow_id: int,
    peer_id: int,
    *,
    peer_from: float = 0.0,
    first_without_flow: bool = False,
    ingress_src: str | None = None,
    legacy: bool = False,
) -> list:
    """Every packet of one proxy leg with a medium-noise F5 trailer: ``flow_id``, and
    ``peer_id`` from time ``peer_from`` on (0 before: the connection on the other side
    of the BIG-IP did not exist yet). ``first_without_flow``: the first packet (the
    client's SYN on the client side, before TMM created the flow) carries flow id 0.
    Packets from ``ingress_src`` entered the BIG-IP, the others left it."""
    make = f5_legacy_trailer if legacy else f5_dpt_trailer
    out = []
    for k, p in enumerate(sorted(packets, key=lambda q: float(q.time))):
        flow = 0 if first_without_flow and k == 0 else flow_id
        peer = peer_id if float(p.time) >= peer_from and flow else 0
        trailer = make(ingress=p[IP].src == ingress_src, slot=0, tmm=1, flow_id=flow, peer_id=peer)
        out.append(with_f5_trailer(p, trailer))
    return out
