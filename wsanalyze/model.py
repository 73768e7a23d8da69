"""Value types shared by every stage of the pipeline.

All values are frozen, slotted dataclasses or ``IntEnum``s. Time is ``int``
nanoseconds since the Unix epoch (``ts_ns``); sizes are bytes; packet numbers
are 1-based, as Wireshark shows them; stream offsets count bytes from the first
byte of one direction of one TCP connection (0 = the byte after the SYN).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Headers = tuple[tuple[bytes, bytes], ...]
"""HTTP header fields in wire order, case as sent, duplicates kept."""


class Direction(enum.IntEnum):
    """Direction of travel on one leg, relative to the side that opened it."""

    CLIENT_TO_SERVER = 0
    SERVER_TO_CLIENT = 1

    @property
    def label(self) -> str:
        """``"client_to_server"`` or ``"server_to_client"`` (table and JSON form)."""
        return _DIRECTION_LABELS[self]

    @property
    def reverse(self) -> Direction:
        return Direction(1 - self)


_DIRECTION_LABELS = {0: "client_to_server", 1: "server_to_client"}


class Opcode(enum.IntEnum):
    """WebSocket frame opcodes, RFC 6455 §5.2 and §11.8. 3-7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @staticmethod
    def name_of(value: int) -> str:
        """Lower-case name for a raw opcode value, ``"reserved_0x3"`` for reserved ones."""
        try:
            return Opcode(value).name.lower()
        except ValueError:
            return f"reserved_{value:#x}"

    @staticmethod
    def is_control(value: int) -> bool:
        """RFC 6455 §5.5: control frames have the most significant opcode bit set."""
        return value >= 0x8


class CloseCode(enum.IntEnum):
    """Close status codes, RFC 6455 §7.4.1 and the IANA registry (§11.7)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire (§7.4.1)
    ABNORMAL_CLOSURE = 1006  # never on the wire (§7.4.1)
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire (§7.4.1)


class Severity(enum.IntEnum):
    """How much a finding matters. Ordered, so ``max()`` gives the worst."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation about the traffic, with its evidence.

    ``code`` is a stable snake_case name listed in :mod:`wsanalyze.catalogue`
    (which gives its severity, reference and explanation); ``detail`` is one line,
    ``expected=..., found=...`` where that applies. Decoders leave ``connection``
    empty; the analysis fills it with the connection id.
    """

    code: str
    severity: Severity
    detail: str
    packets: tuple[int, ...] = ()
    direction: Direction | None = None
    offset: int | None = None  # stream offset in that direction, bytes
    ts_ns: int | None = None
    connections: tuple[str, ...] = ()
    capture: str | None = None  # "client" or "server": the capture ``packets`` refer to


# --- capture.py -------------------------------------------------------------


@dataclass(slots=True)
class Segment:
    """One TCP segment read from a capture (mutable only for speed of creation).

    ``src``/``dst`` are packed addresses (4 bytes IPv4, 16 bytes IPv6).
    ``payload`` holds the captured TCP payload; ``payload_len`` is its length
    according to the IP header, larger when the snapshot length cut the packet.
    ``flags`` is the TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10).
    ``f5_trailer`` is the F5 BIG-IP Ethernet trailer that followed the IP datagram
    in the frame (:class:`F5Trailer`), None when there was none.
    """

    packet: int
    ts_ns: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    payload_len: int
    f5_trailer: F5Trailer | None = None


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# --- tcp.py -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address (packed, 4 or 16 bytes) and a TCP port."""

    ip: bytes
    port: int

    def __str__(self) -> str:
        return _endpoint_text(self.ip, self.port)


@dataclass(frozen=True, slots=True)
class F5Trailer:
    """The F5 BIG-IP Ethernet trailer ("noise") that ``tcpdump -i 0.0:nnn`` on a
    BIG-IP appends to each frame, decoded by :func:`wsanalyze.f5trailer.parse_f5_trailer`
    (formats: Wireshark's ``packet-f5ethtrailer.c``).

    ``format`` is ``"legacy"`` (BIG-IP 9.4.2-13.x type/length/version TLVs) or
    ``"dpt"`` (14.0+, magic 0xF5DEB0F5); ``length`` the trailer's bytes. Low noise
    (``:n``): ``ingress`` (True when the packet entered the BIG-IP), ``slot``
    (1-based), ``tmm`` (0-based), ``virtual_server`` (name, None if none). Medium
    noise (``:nn``): ``flow_id``, the id of this packet's connection flow in TMM, and
    ``peer_id``, the flow id of the connection on the other side of the proxy (0:
    none yet). High noise (``:nnn``), given only when ``peer_id`` is not 0: the peer
    connection's IP protocol, VLAN, and its ``peer_remote`` and ``peer_local``
    :class:`Endpoint` (from the BIG-IP's point of view; addresses 4 bytes for IPv4,
    16 for IPv6) with their route domains (None outside one). Fields of a noise
    level the trailer does not carry are None.
    """

    format: str
    length: int
    ingress: bool | None = None
    slot: int | None = None
    tmm: int | None = None
    virtual_server: str | None = None
    flow_id: int | None = None
    peer_id: int | None = None
    peer_ipproto: int | None = None
    peer_vlan: int | None = None
    peer_remote: Endpoint | None = None
    peer_local: Endpoint | None = None
    peer_remote_route_domain: int | None = None
    peer_local_route_domain: int | None = None


@functools.lru_cache(maxsize=65536)
def _endpoint_text(ip: bytes, port: int) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6); cached: reports format each endpoint
    many times."""
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


# --- http1.py ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHead:
    """An HTTP/1.x request line and header section (RFC 9112 §3, §5), as sent."""

    method: bytes
    target: bytes
    version: bytes  # b"HTTP/1.1"
    headers: Headers
    ts_ns: int  # time of the packet that completed the head
    packets: tuple[int, ...]  # first and last packet of the head
    offset: int  # stream offset of the request line
    length: int  # bytes of the head, CRLFCRLF included

    def get(self, name: bytes) -> bytes | None:
        """Value of the first field named ``name`` (case-insensitive), or None."""
        return header_value(self.headers, name)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """An HTTP/1.x status line and header section (RFC 9112 §4), as sent."""

    version: bytes
    status: int
    reason: bytes
    headers: Headers
    ts_ns: int
    packets: tuple[int, ...]
    offset: int
    length: int

    def get(self, name: bytes) -> bytes | None:
        return header_value(self.headers, name)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """First value of ``name`` in ``headers``, compared case-insensitively (RFC 9110 §5.1)."""
    lname = name.lower()
    for n, v in headers:
        if n.lower() == lname:
            return v
    return None


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of ``name``, each comma-separated list element split out and stripped
    (RFC 9110 §5.3: repeated fields combine as a comma-separated list)."""
    lname = name.lower()
    out: list[bytes] = []
    for n, v in headers:
        if n.lower() == lname:
            out.extend(p.strip() for p in v.split(b",") if p.strip())
    return out


# --- frames.py / messages.py ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One WebSocket frame, RFC 6455 §5.2.

    ``payload`` is the unmasked application data, or None when the frame was
    larger than the decoder's buffer limit or was cut by a gap (its bytes then
    reach the message assembler as :class:`~wsanalyze.frames.PayloadChunk` items,
    and ``complete`` is False for a cut frame). ``ts_ns`` is the time of the packet carrying the frame's
    last byte; ``first_ts_ns`` that of its first byte.
    """

    direction: Direction
    offset: int  # stream offset of the first header byte
    header_len: int
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    masking_key: bytes | None
    payload_len: int  # as declared in the header
    payload: bytes | None
    first_packet: int
    last_packet: int
    first_ts_ns: int
    ts_ns: int
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """One WebSocket message (RFC 6455 §5.4: a data frame with FIN, or a fragment
    sequence ending with FIN), or one control frame (ping, pong, close).

    ``payload_len`` is the reassembled length in bytes (decompressed when
    ``compressed``; ``wire_len`` is then the length on the wire); ``digest`` a
    16-byte BLAKE2b of the reassembled (decompressed) payload, used to match the
    message across the proxy even when it re-compresses; ``preview`` at most the
    first 256 bytes; ``payload`` the whole payload only when the analysis was asked
    to keep payloads. ``channel`` and ``kind`` come from the negotiated
    sub-protocol's decoder (e.g. Kubernetes channel 1 = ``stdout``).
    """

    direction: Direction
    opcode: int  # TEXT, BINARY, CLOSE, PING or PONG
    frame_count: int
    payload_len: int
    digest: bytes
    preview: bytes
    first_packet: int
    last_packet: int
    first_ts_ns: int
    ts_ns: int  # time of the packet carrying the last byte
    offset: int  # stream offset of the first frame
    close_code: int | None = None
    close_reason: bytes | None = None
    utf8_valid: bool | None = None  # text and close reason only
    complete: bool = True  # False when a gap cut the message
    payload: bytes | None = None
    compressed: bool = False  # RSV1 set: permessage-deflate (RFC 7692 §6)
    wire_len: int | None = None  # bytes on the wire when compressed, else None
    channel: int | None = None  # sub-protocol channel (Kubernetes *.channel.k8s.io)
    kind: str | None = None  # message type in the negotiated sub-protocol
    # Compressed only: True when the payload fields are over the decompressed bytes,
    # False when it could not be decompressed (context lost): then over the wire bytes.
    decompressed: bool | None = None


PREVIEW_BYTES = 256


def drop_pieces(pieces: list[tuple[int, int, int]], n: int) -> None:
    """Remove the first ``n`` bytes from ``pieces``, a list of ``(length, ts_ns,
    packet)`` describing buffered bytes in stream order (a resynchronising decoder's
    bookkeeping of which packet each held byte came from); a piece cut in two keeps
    its time and packet. In place."""
    k = 0
    while n and k < len(pieces):
        length, ts, pk = pieces[k]
        if length <= n:
            n -= length
            k += 1
        else:
            pieces[k] = (length - n, ts, pk)
            n = 0
    del pieces[:k]


def fast_constructor(cls: type) -> Callable[..., Any]:
    """A positional constructor for a frozen, slotted dataclass without
    ``__post_init__`` that stores the fields directly through their slot
    descriptors: about twice as fast as the generated ``__init__``, whose
    ``object.__setattr__`` calls dominate the cost of a small frame. Falls back to
    ``cls`` itself when the class does not have that shape."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]
    if tuple(getattr(cls, "__slots__", ())) != tuple(names):
        return cls
    args = ", ".join(f"a{i}" for i in range(len(names)))
    body = "".join(f"    s{i}(o, a{i})\n" for i in range(len(names)))
    src = f"def make({args}):\n    o = new(cls)\n{body}    return o\n"
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    env.update({f"s{i}": cls.__dict__[name].__set__ for i, name in enumerate(names)})
    exec(src, env)
    return env["make"]
