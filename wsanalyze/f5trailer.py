"""The F5 BIG-IP Ethernet trailer: what ``tcpdump -i 0.0:nnn`` on a BIG-IP appends.

tcpdump run on a BIG-IP with a noise modifier on the interface (``:n`` low,
``:nn`` medium, ``:nnn`` high) appends a trailer to every Ethernet frame, after
the IP datagram: the TMM that handled the packet (low noise), the **flow id** of
the connection and the **peer id**, the flow id of the connection on the other
side of the proxy (medium), and that peer connection's addresses and ports (high).
A client-side connection's peer id is its server-side twin's flow id and vice
versa, which is why :mod:`wsanalyze.correlate` pairs on it.

:func:`parse_f5_trailer` decodes the bytes that follow the IP datagram in a frame.
The formats are those of Wireshark's ``f5ethtrailer`` dissector
(``epan/dissectors/packet-f5ethtrailer.c``, F5 Networks), which is the reference:

Old format (BIG-IP 9.4.2 to 13.x), a sequence of TLVs ``type(1) length(1)
version(1) data``, each ``length + 2`` bytes long (type and length bytes not
counted by ``length``), types 1 low, 2 medium, 3 high noise:

====  ===  =====  ===================================================================
type  ver  bytes  content after type/length/version (offsets from the TLV start)
====  ===  =====  ===================================================================
low   0    35     9.4: ingress@3, slot@4, tmm@5, flow id u32@6, peer id u32@10,
                  flags u32@14, flow type@18, virtual server name 16@19
low   0    22     10.x: ingress@3, slot@4, tmm@5, virtual server name 16@6
low   1    7+n    11.x+: ingress@3, slot@4, tmm@5, name length n@6, name@7
med   0    8      9.4: HA unit, ingress slot and port (no flow ids)
med   0    21     10.x: flow id u32@3, peer id u32@7, ...
med   0    29     11.0/11.1: flow id u64@3, peer id u64@11, ...
med   1    30+n   11.2+: flow id u64@3, peer id u64@11, ..., RST cause length n@29
med   2    31+n   + priority: RST cause length n@30
med   3    35+n   + connflow flags high bits: RST cause length n@34
high  0    42     peer IP protocol@3, peer VLAN u16@4, peer remote address 16@6,
                  peer local address 16@22, peer remote port@38, peer local port@40
====  ===  =====  ===================================================================

New ("DPT") format (BIG-IP 14.0 and later): a header ``magic 0xF5DEB0F5, length
u16 (header included), version u16 (1)``, then TLVs ``provider u16, type u16,
length u16 (header included), version u16, data``. Provider 1 is the noise:
type 1 low (versions 2-4: flags, slot, tmm, then the virtual server name or, in
version 4, a block of typed object names), type 2 medium (version 4: flow id u64,
peer id u64, flags, flow type, HA unit, reserved, priority, RST cause length and
cause), type 3 high (version 1: as the old high TLV's data). Other providers (4
is TLS key material) are skipped by their length.

Addresses are 16 bytes: an IPv4 address is IPv4-mapped (``::ffff:a.b.c.d``) or,
in a route domain, ``2620:0:c10:f501:0:RD:a.b.c.d`` (route domain ``RD``); both
become 4-byte IPv4 addresses here, other values IPv6.

Policy (stricter than Wireshark, which shows whatever it can):

* Leading zero bytes are skipped (a short frame padded before TMM appended the
  trailer; no trailer starts with 0). Ethernet padding alone is never a trailer.
* A new-format trailer may follow a 4-byte FCS (as Wireshark allows); otherwise
  it starts right after the zeros.
* The trailer is recognised only if its structure validates completely: every
  length adds up and the trailer ends exactly at the end of the frame; old-format
  TLVs must all be of a known type and version with the exact lengths above, each
  type at most once; new-format noise TLVs of a known type/version must hold their
  fields (unknown ones, and other providers, are skipped by their length).
* Peer addresses are given only when the peer id is known and not 0 (Wireshark:
  "No peer connection information"), and when not all zero.

Never raises: anything else is "no trailer" (None).
"""

from __future__ import annotations

import functools
import struct

from .model import Endpoint, F5Trailer

__all__ = ["parse_f5_trailer", "MIN_TRAILER_BYTES", "DPT_MAGIC"]

MIN_TRAILER_BYTES = 7
"""The shortest trailer (an old-format low noise TLV without a virtual server name).
Padding of a TCP/IPv4 frame is at most 6 bytes (60 − 14 − 40)."""

DPT_MAGIC = b"\xf5\xde\xb0\xf5"
"""First bytes of a new-format (BIG-IP 14.0+) trailer."""

_LOW, _MED, _HIGH = 1, 2, 3
_NOISE_PROVIDER = 1
_MAX_OLD_TLV = 140  # Wireshark's F5_MAX_SANE

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_TLV = struct.Struct("!HHHH").unpack_from  # provider, type, length, version
_IPV4_MAPPED = bytes(10) + b"\xff\xff"
_ROUTE_DOMAIN = b"\x26\x20\x00\x00\x0c\x10\xf5\x01\x00\x00"


class _Bad(Exception):
    """Private: the bytes are not a valid trailer."""


class _Fields:
    """What the TLVs of one trailer said, before it is frozen into an F5Trailer."""

    __slots__ = (
        "ingress",
        "slot",
        "tmm",
        "virtual_server",
        "flow_id",
        "peer_id",
        "high",
    )

    def __init__(self) -> None:
        self.ingress: bool | None = None
        self.slot: int | None = None
        self.tmm: int | None = None
        self.virtual_server: str | None = None
        self.flow_id: int | None = None
        self.peer_id: int | None = None
        self.high: bytes | None = None  # the 39 bytes of the high noise fields


def parse_f5_trailer(data: bytes | bytearray | memoryview) -> F5Trailer | None:
    """Decode the F5 Ethernet trailer in ``data``, the bytes that follow the IP
    datagram in one captured Ethernet frame (padding included).

    Returns a :class:`~wsanalyze.model.F5Trailer` (``length`` counts the trailer's
    bytes, padding and FCS excluded), or None when ``data`` is not a complete, valid
    trailer (see the module docstring: old format BIG-IP 9.4.2-13.x, new "DPT" format
    14.0+, as Wireshark's ``packet-f5ethtrailer.c`` reads them). Never raises.
    Results are cached by value (the trailers of one connection repeat), so equal
    trailers give the same object.
    """
    return _parse(data if type(data) is bytes else bytes(data))


@functools.lru_cache(maxsize=4096)
def _parse(data: bytes) -> F5Trailer | None:
    n = len(data)
    z = 0
    while z < n and data[z] == 0:
        z += 1
    if n - z < MIN_TRAILER_BYTES:
        return None
    try:
        if data.startswith(DPT_MAGIC, z):
            return _dpt(data, z)
        # A new-format trailer after a 4-byte FCS (whose first bytes may be zeros and
        # were skipped with the padding): Wireshark's order, 4 bytes on first.
        for q in range(z + 4, max(z, 4) - 1, -1):
            if data.startswith(DPT_MAGIC, q):
                return _dpt(data, q)
        return _old(data, z)
    except (_Bad, struct.error, IndexError, UnicodeDecodeError):
        return None


def _old(data: bytes, start: int) -> F5Trailer:
    """Old-format TLVs from ``start`` to the end of ``data``."""
    f = _Fields()
    seen: set[int] = set()
    o, n = start, len(data)
    while o < n:
        if n - o < 3:
            raise _Bad
        typ, ver = data[o], data[o + 2]
        size = data[o + 1] + 2
        if typ not in (_LOW, _MED, _HIGH) or typ in seen or ver > 3:
            raise _Bad
        if size < MIN_TRAILER_BYTES or size > _MAX_OLD_TLV or o + size > n:
            raise _Bad
        seen.add(typ)
        t = data[o : o + size]
        if typ == _LOW:
            _old_low(t, ver, f)
        elif typ == _MED:
            _old_med(t, ver, f)
        elif ver == 0 and size == 42:
            f.high = t[3:42]
        else:
            raise _Bad
        o += size
    return _freeze("legacy", n - start, f)


def _old_low(t: bytes, ver: int, f: _Fields) -> None:
    size = len(t)
    if ver == 0 and size == 35:  # BIG-IP 9.4: the flow ids are here
        f.flow_id, f.peer_id = _U32(t, 6)[0], _U32(t, 10)[0]
        name = t[19:35]
    elif ver == 0 and size == 22:
        name = t[6:22]
    elif ver == 1 and size == 7 + t[6]:
        name = t[7:]
    else:
        raise _Bad
    f.ingress, f.slot, f.tmm = t[3] != 0, t[4] + 1, t[5]
    f.virtual_server = _name(name)


def _old_med(t: bytes, ver: int, f: _Fields) -> None:
    size = len(t)
    if ver == 0:
        if size == 8:  # BIG-IP 9.4: no flow ids in medium noise
            return
        if size == 21:  # 10.x: 32-bit flow ids
            f.flow_id, f.peer_id = _U32(t, 3)[0], _U32(t, 7)[0]
            return
        if size != 29:
            raise _Bad
    else:
        fixed = {1: 30, 2: 31, 3: 35}[ver]
        if size < fixed or size != fixed + t[fixed - 1]:
            raise _Bad
    f.flow_id, f.peer_id = _U64(t, 3)[0], _U64(t, 11)[0]


def _dpt(data: bytes, q: int) -> F5Trailer:
    """A new-format trailer at ``q``; it must end exactly at the end of ``data``."""
    total, version = _U16(data, q + 4)[0], _U16(data, q + 6)[0]
    if version != 1 or total < 16 or q + total != len(data):
        raise _Bad
    f = _Fields()
    seen: set[int] = set()
    o, end = q + 8, q + total
    while o < end:
        if end - o < 8:
            raise _Bad
        provider, typ, size, ver = _TLV(data, o)
        if size < 8 or o + size > end:
            raise _Bad
        body = data[o + 8 : o + size]
        o += size
        if provider != _NOISE_PROVIDER:
            continue  # TLS key material (provider 4) and others: skipped
        if typ in seen:
            raise _Bad
        seen.add(typ)
        if typ == _LOW and 2 <= ver <= 4:
            _dpt_low(body, ver, f)
        elif typ == _MED and ver == 4:
            if len(body) < 32 or 32 + body[31] > len(body):
                raise _Bad
            f.flow_id, f.peer_id = _U64(body, 0)[0], _U64(body, 8)[0]
        elif typ == _HIGH and ver == 1:
            if len(body) < 39:
                raise _Bad
            f.high = body[:39]
    return _freeze("dpt", total, f)


def _dpt_low(body: bytes, ver: int, f: _Fields) -> None:
    if len(body) < 4:
        raise _Bad
    flags = body[0]
    f.ingress = (flags != 0) if ver == 2 else bool(flags & 1)
    f.slot, f.tmm = body[1] + 1, body[2]
    k = body[3]
    if 4 + k > len(body):
        raise _Bad
    if ver < 4:
        f.virtual_server = _name(body[4 : 4 + k])
        return
    # Version 4: a block of object names, each type(1) length(1) name; type 0 is
    # the virtual server (1 port, 2 trunk).
    block = body[4 : 4 + k]
    i = 0
    while i < k:
        if i + 2 > k or i + 2 + block[i + 1] > k:
            raise _Bad
        if block[i] == 0 and f.virtual_server is None:
            f.virtual_server = _name(block[i + 2 : i + 2 + block[i + 1]])
        i += 2 + block[i + 1]


def _name(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    return text or None


def _address(raw: bytes) -> tuple[bytes, int | None]:
    """A 16-byte trailer address: (packed IPv4 or IPv6 address, route domain)."""
    if raw.startswith(_IPV4_MAPPED):
        return raw[12:], None
    if raw.startswith(_ROUTE_DOMAIN):
        return raw[12:], _U16(raw, 10)[0]
    return raw, None


def _freeze(fmt: str, length: int, f: _Fields) -> F5Trailer:
    proto = vlan = remote = local = rd_remote = rd_local = None
    h = f.high
    if h is not None and f.peer_id:
        proto, vlan = h[0], _U16(h, 1)[0]
        r_ip, rd_remote = _address(h[3:19])
        l_ip, rd_local = _address(h[19:35])
        r_port, l_port = _U16(h, 35)[0], _U16(h, 37)[0]
        if any(h[3:35]) or r_port or l_port:
            remote, local = Endpoint(r_ip, r_port), Endpoint(l_ip, l_port)
    return F5Trailer(
        format=fmt,
        length=length,
        ingress=f.ingress,
        slot=f.slot,
        tmm=f.tmm,
        virtual_server=f.virtual_server,
        flow_id=f.flow_id,
        peer_id=f.peer_id,
        peer_ipproto=proto,
        peer_vlan=vlan,
        peer_remote=remote,
        peer_local=local,
        peer_remote_route_domain=rd_remote,
        peer_local_route_domain=rd_local,
    )
