"""Capture reader: stage one of the pipeline (pcap / pcapng file -> TCP segments).

:func:`open_capture` checks the file and returns a :class:`CaptureReader`, which
iterates :class:`~wsanalyze.model.Segment` for every TCP segment over IPv4 or IPv6,
in file order. Other packets are counted and skipped.

Formats
  * classic pcap (draft-ietf-opsawg-pcap): magic ``a1b2c3d4`` (microsecond
    timestamps) and ``a1b23c4d`` (nanosecond), both byte orders;
  * pcapng (draft-ietf-opsawg-pcapng): Section Header Blocks of either byte order
    (several sections per file), several Interface Description Blocks with
    ``if_tsresol`` (option 9) and ``if_tsoffset`` (option 14), Enhanced Packet
    Blocks, Simple Packet Blocks and the obsolete Packet Block; other blocks are
    skipped.

Link types (LINKTYPE_* values): Ethernet (1) with 802.1Q / 802.1ad tags, stacked
or not; Linux cooked capture SLL (113) and SLL2 (276); raw IP (101, and the
platform DLT values 12 and 14; also 228 IPv4 and 229 IPv6); BSD loopback NULL
(0, address family in the capturing host's byte order) and LOOP (108, network
byte order).

Policy
  * Timestamps are integer nanoseconds since the epoch, computed with integer
    arithmetic only.
  * Packet numbers are 1-based record numbers counting every packet record
    (pcap record, or pcapng EPB/SPB/PB), as Wireshark's frame numbers.
  * The TCP payload is delimited by the IP total length (IPv6 payload length),
    never by the captured length: Ethernet padding and trailers are not payload.
    On Ethernet, 7 or more bytes after the IP datagram may be an F5 BIG-IP trailer
    (``tcpdump -i 0.0:nnn``): :func:`wsanalyze.f5trailer.parse_f5_trailer` decodes
    it into ``Segment.f5_trailer`` (shorter tails are padding and cost one integer
    comparison). A total length of 0 (TCP segmentation offload seen on
    the sending host) means "up to the end of the packet on the wire".
  * IP fragments of TCP are not reassembled: they are skipped with a
    ``capture_ip_fragment`` finding (IPv6 atomic fragments are decoded).
  * Traffic never raises. Damaged files end iteration early with a finding
    (``capture_truncated_record``, ``capture_corrupt_record``); per-packet
    problems are aggregated into one finding per code (per link type for
    ``capture_unsupported_link_type``) with a count and the first packet
    numbers, so a large capture cannot produce millions of findings.

Performance: the whole file is mapped with :mod:`mmap` (standard input is read
into memory), and the pages already parsed are released from the resident set every
16 MiB, so a large capture costs no more memory than a small one; headers are decoded with precompiled :class:`struct.Struct`
``unpack_from`` calls on the buffer. The common case (Ethernet, IPv4 without
options, complete TCP packet) is decoded inline in the record loop with one
``unpack_from`` for Ethernet+IPv4 and one for TCP; everything else goes through
:meth:`CaptureReader._decode`.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import sys
from collections.abc import Iterator
from typing import Any

from .catalogue import finding
from .errors import CaptureError
from .f5trailer import MIN_TRAILER_BYTES as _MIN_TRAILER_BYTES
from .f5trailer import parse_f5_trailer
from .model import Finding, Segment

__all__ = ["CaptureReader", "open_capture", "MAX_RECORD_BYTES"]

MAX_RECORD_BYTES = 256 * 1024 * 1024
"""A packet record or pcapng block longer than this (bytes) is corrupt."""

_TS_MIN, _TS_MAX = -(2**63) + 1, 2**63 - 1
"""Timestamps (ns) that ``datetime64[ns]`` can hold: years 1677 to 2262. A pcapng
timestamp (64 bits scaled by ``if_tsresol``, plus ``if_tsoffset``) may exceed them."""

_FIRST_PACKETS = 10
"""How many packet numbers an aggregated finding lists."""

_MAX_REASONS = 8
"""How many distinct reasons an aggregated finding tracks (the rest count as "other")."""

_NS = 1_000_000_000
# Resident pages of a mapped capture are released behind the reader every 16 MiB
# (madvise MADV_DONTNEED; absent on Windows, where the mapping simply stays resident).
_RELEASE_BYTES = 16 * 1024 * 1024
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)

_MIN_ETH_TRAILER = 14 + _MIN_TRAILER_BYTES
"""Fast path: ``caplen - ip_total_length`` from which bytes after the IP datagram
may hold an F5 trailer (less is at most Ethernet padding, never parsed)."""

# --- file format constants --------------------------------------------------

_PCAP_MAGICS = {
    # first four bytes -> (byte order, nanosecond timestamps)
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_BOM_LE = b"\x4d\x3c\x2b\x1a"
_BOM_BE = b"\x1a\x2b\x3c\x4d"
_KNOWN_OTHER_MAGICS = {
    b"\x34\xcd\xb2\xa1": "a modified (Kuznetzov) pcap; convert it with `editcap -F pcap`",
    b"\xa1\xb2\xcd\x34": "a modified (Kuznetzov) pcap; convert it with `editcap -F pcap`",
    b"\x1f\x8b": "gzip-compressed; decompress it first (gunzip)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first (unzstd)",
    b"PK\x03\x04": "a zip archive; extract the capture first",
    b"XCP\x00": "a Network Instruments Observer file; re-save it as pcapng with Wireshark",
    b"\x7fELF": "an executable, not a capture",
}

_BLOCK_IDB = 1
_BLOCK_PB = 2
_BLOCK_SPB = 3
_BLOCK_EPB = 6

# --- link types ----------------------------------------------------------------

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
_RAW_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14})
SUPPORTED_LINK_TYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        *_RAW_LINKTYPES,
    }
)
"""Link types whose packets are decoded; packets of other link types are skipped."""

_LINK_TYPE_NAMES = {
    9: " (PPP)",
    50: " (PPP in HDLC)",
    104: " (Cisco HDLC)",
    105: " (IEEE 802.11)",
    127: " (IEEE 802.11 radiotap)",
    192: " (PPI)",
    239: " (Linux NFLOG)",
    252: " (Wireshark upper PDU)",
}
"""Names of some unsupported link types, for findings."""

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
_IPV6_EXT_HEADERS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPPROTO_TCP = 6
_IPPROTO_FRAGMENT = 44
_IPPROTO_AH = 51

# --- precompiled structs ---------------------------------------------------------

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U32LE = struct.Struct("<I").unpack_from
# Ethernet + IPv4 without options: ethertype, ver/ihl, total length, flags/fragment
# offset, protocol, source, destination (34 bytes).
_ETH_IP4 = struct.Struct("!12xHBxH2xHxB2x4s4s").unpack_from
# IPv4 header: ver/ihl, total length, flags/fragment offset, protocol, src, dst.
_IP4 = struct.Struct("!BxH2xHxB2x4s4s").unpack_from
# IPv6 header: version/class/flow, payload length, next header, src, dst.
_IP6 = struct.Struct("!IHBx16s16s").unpack_from
# TCP header: ports, seq, ack, data offset byte, flags byte, window.
_TCP = struct.Struct("!HHIIBBH").unpack_from


def _structs(order: str) -> dict[str, Any]:
    """Byte-order dependent record structs of one file / pcapng section."""
    return {
        "pcap_header": struct.Struct(order + "HHiIII").unpack_from,
        "pcap_record": struct.Struct(order + "IIII").unpack_from,
        "u16": struct.Struct(order + "H").unpack_from,
        "u32": struct.Struct(order + "I").unpack_from,
        "i64": struct.Struct(order + "q").unpack_from,
        "block": struct.Struct(order + "II").unpack_from,
        "shb": struct.Struct(order + "HH").unpack_from,
        "idb": struct.Struct(order + "HxxI").unpack_from,
        "epb": struct.Struct(order + "IIIII").unpack_from,
        "pb": struct.Struct(order + "HxxIIII").unpack_from,
    }


_STRUCTS = {"<": _structs("<"), ">": _structs(">")}


class _Agg:
    """Aggregated occurrences of one finding code (count, first packets, reasons)."""

    __slots__ = ("count", "packets", "first_ts", "reasons")

    def __init__(self) -> None:
        self.count = 0
        self.packets: list[int] = []
        self.first_ts: int | None = None
        self.reasons: dict[str, int] = {}

    def add(self, packet: int, ts: int | None, reason: str) -> None:
        self.count += 1
        if len(self.packets) < _FIRST_PACKETS:
            self.packets.append(packet)
        if self.first_ts is None:
            self.first_ts = ts
        if reason:
            if reason not in self.reasons and len(self.reasons) >= _MAX_REASONS:
                reason = "other"
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


class _Interface:
    """One pcapng interface: link type, snaplen and timestamp conversion.

    A raw timestamp ``t`` (units of the interface's resolution) becomes
    ``t * mul // div + offset_ns`` nanoseconds.
    """

    __slots__ = ("link_type", "snaplen", "mul", "div", "offset_ns")

    def __init__(self, link_type: int, snaplen: int) -> None:
        self.link_type = link_type
        self.snaplen = snaplen
        self.mul = 1000  # default resolution 10^-6 s
        self.div = 1
        self.offset_ns = 0

    def set_tsresol(self, value: int) -> None:
        """``if_tsresol``: 10^-v seconds, or 2^-(v & 0x7f) when the MSB is set."""
        if value & 0x80:
            self.mul, self.div = _NS, 1 << (value & 0x7F)
        elif value <= 9:
            self.mul, self.div = 10 ** (9 - value), 1
        else:
            self.mul, self.div = 1, 10 ** (value - 9)


def _unsupported(name: str, link_types: set[int]) -> str:
    """The CaptureError message for a capture whose packets are all of link types
    that are not decoded."""
    lts = ", ".join(f"{lt}{_LINK_TYPE_NAMES.get(lt, '')}" for lt in sorted(link_types))
    return (
        f"capture file {name} has only packets of link type{'s' if len(link_types) > 1 else ''} "
        f"{lts}, which wsanalyze does not decode: capture on an Ethernet, Linux cooked "
        "(tcpdump -i any), raw IP or loopback interface"
    )


def _display_name(path: str) -> str:
    return "standard input" if path == "-" else repr(path)


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open a pcap or pcapng capture file for reading.

    ``path`` is a file name, or ``"-"`` for standard input (read fully into
    memory). Regular files are memory-mapped, so opening is cheap whatever the
    size; packets are decoded while iterating the returned reader.

    Raises :class:`~wsanalyze.errors.CaptureError` (one line naming the file and
    what to do) when the file is missing, unreadable, a directory, empty, not a
    pcap/pcapng file (unknown magic number), has a truncated or corrupt file
    header, holds only packets of link types that are not decoded, or is a pcapng
    file whose packets all refer to interfaces that no Interface Description Block
    describes.
    """
    if not isinstance(path, str):
        path = os.fsdecode(os.fspath(path))
    if path == "-":
        try:
            data = sys.stdin.buffer.read()
        except OSError as exc:
            raise CaptureError(f"cannot read the capture from standard input: {exc}") from exc
        return CaptureReader.from_bytes(data, "-")
    name = _display_name(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(
            f"capture file {name} does not exist: check the path and the working directory"
        ) from None
    except IsADirectoryError:
        raise CaptureError(
            f"capture file {name} is a directory: give the path of a .pcap or .pcapng file"
        ) from None
    except PermissionError:
        raise CaptureError(
            f"capture file {name} cannot be read (permission denied): "
            "fix its permissions or copy it with sudo"
        ) from None
    except OSError as exc:
        raise CaptureError(f"capture file {name} cannot be opened: {exc.strerror or exc}") from None
    buf: Any
    with f:  # an mmap keeps its own file descriptor
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise CaptureError(
                    f"capture file {name} is a directory: give the path of a .pcap or .pcapng file"
                )
            buf = None
            if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                try:
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):  # a file system without mmap: read it
                    buf = None
            if buf is None:  # a pipe, a character device, or no mmap
                buf = f.read()
        except OSError as exc:
            raise CaptureError(
                f"capture file {name} cannot be read: {exc.strerror or exc}"
            ) from None
    try:
        return CaptureReader(buf, path)
    except BaseException:
        if isinstance(buf, mmap.mmap):
            buf.close()
        raise


class CaptureReader:
    """Iterates the TCP segments of one capture file, in file order.

    Iterating yields :class:`~wsanalyze.model.Segment` (packet number, ``ts_ns``
    in nanoseconds since the epoch, addresses, ports, sequence numbers, flags,
    window, captured payload bytes and the payload length in bytes per the IP
    header). Iterating again starts over and recounts.

    Statistics, final once iteration has ended or been abandoned (``packets``,
    ``tcp_packets`` and ``bytes_read`` are also brought up to date each time a
    segment is yielded, for progress reports):

    ``path``
        the file name given (``"-"`` for standard input);
    ``format``
        ``"pcap"`` or ``"pcapng"``;
    ``packets``
        packet records read (all protocols);
    ``tcp_packets``
        TCP segments yielded;
    ``first_ts_ns`` / ``last_ts_ns``
        earliest and latest record timestamps (ns since the epoch; equal to the
        first and last record's when the file is in time order), None when the
        file has no packet;
    ``link_types``
        LINKTYPE_* values of the file (from the pcap header when opened; from
        pcapng Interface Description Blocks as iteration reads them);
    ``bytes_read``
        bytes of the file parsed, headers included;
    ``findings``
        list of :class:`~wsanalyze.model.Finding` about the file (``capture_*``
        codes), a fresh list on each access.

    Use :func:`open_capture` (or :meth:`from_bytes`) to create one; ``close()``
    or a ``with`` block releases the file mapping. Iteration never raises on
    file or traffic content.
    """

    def __init__(self, buf: Any, path: str) -> None:
        self.path = path
        self._buf = buf
        self._name = _display_name(path)
        self.format = ""
        self.link_types: set[int] = set()
        self._reset()
        head = bytes(buf[:4])
        if not head:
            raise CaptureError(
                f"capture file {self._name} is empty (0 bytes): the capture wrote nothing; "
                "check tcpdump's interface and filter"
            )
        if head in _PCAP_MAGICS:
            self._open_pcap(*_PCAP_MAGICS[head])
        elif head == _PCAPNG_MAGIC:
            self._open_pcapng()
        else:
            what = _KNOWN_OTHER_MAGICS.get(head) or _KNOWN_OTHER_MAGICS.get(head[:2])
            if what is None:
                what = f"not a pcap or pcapng file (magic number {head.hex()})"
            raise CaptureError(
                f"capture file {self._name} is {what}; "
                "wsanalyze reads pcap and pcapng files (tcpdump -w, Wireshark, dumpcap)"
            )

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "<bytes>") -> CaptureReader:
        """A reader over a capture held in memory (``path`` only names it).

        Raises :class:`~wsanalyze.errors.CaptureError` like :func:`open_capture`.
        """
        return cls(bytes(data), path)

    # --- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Release the file mapping. Iterating a closed reader yields nothing; an
        iteration in progress ends at its next record."""
        buf, self._buf = self._buf, b""
        if isinstance(buf, mmap.mmap):
            buf.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<CaptureReader {self.path!r} {self.format} packets={self.packets} "
            f"tcp_packets={self.tcp_packets}>"
        )

    # --- statistics and findings --------------------------------------------------

    def _reset(self) -> None:
        self.packets = 0
        self.tcp_packets = 0
        self.first_ts_ns: int | None = None
        self.last_ts_ns: int | None = None
        self.bytes_read = 0
        self._findings: list[Finding] = []
        self._agg: dict[str, _Agg] = {}
        self._unsupported: dict[int, _Agg] = {}

    def _note(self, code: str, packet: int, ts: int | None = None, reason: str = "") -> None:
        agg = self._agg.get(code)
        if agg is None:
            agg = self._agg[code] = _Agg()
        agg.add(packet, ts, reason)

    def _bad(self, packet: int, ts: int, reason: str, cut: bool) -> None:
        """A packet whose headers are malformed, or cut by the snapshot length."""
        if cut:
            self._note("capture_packet_cut_by_snaplen", packet, ts, "headers")
        else:
            self._note("capture_malformed_packet", packet, ts, reason)

    @property
    def findings(self) -> list[Finding]:
        """Findings about the capture file, in order of first packet."""
        out = list(self._findings)
        for lt, agg in self._unsupported.items():
            out.append(
                finding(
                    "capture_unsupported_link_type",
                    f"{agg.count} packet(s) of link type {lt}{_LINK_TYPE_NAMES.get(lt, '')} skipped "
                    f"(supported: {sorted(SUPPORTED_LINK_TYPES)})",
                    packets=agg.packets,
                    ts_ns=agg.first_ts,
                )
            )
        for code, agg in self._agg.items():
            out.append(
                finding(code, self._agg_detail(code, agg), packets=agg.packets, ts_ns=agg.first_ts)
            )
        out.sort(key=lambda f: (f.packets[0] if f.packets else 0, f.code))
        return out

    @staticmethod
    def _agg_detail(code: str, agg: _Agg) -> str:
        first = ", ".join(map(str, agg.packets))
        more = ", ..." if agg.count > len(agg.packets) else ""
        where = f"packets {first}{more}"
        items = list(agg.reasons.items())
        reasons = "; ".join(f"{r} x{n}" for r, n in items[:4])
        if len(items) > 4:
            reasons += f"; others x{sum(n for _, n in items[4:])}"
        if code == "capture_packet_cut_by_snaplen":
            headers = agg.reasons.get("headers", 0)
            text = f"{agg.count} packet(s) captured shorter than on the wire ({where})"
            if headers:
                text += f"; {headers} of them cut inside their headers were skipped"
            return text
        if code == "capture_malformed_packet":
            return (
                f"{agg.count} packet(s) with malformed IP/TCP headers skipped ({where}): {reasons}"
            )
        if code == "capture_ip_fragment":
            return f"{agg.count} IP fragment(s) of TCP packets skipped ({where})"
        if code == "capture_timestamps_out_of_order":
            return f"{agg.count} packet(s) earlier than a packet before them ({where})"
        if code == "capture_timestamp_out_of_range":
            return (
                f"{agg.count} pcapng packet(s) with a timestamp outside 1677-2262 skipped "
                f"({where}); check the interface's if_tsresol and if_tsoffset"
            )
        if code == "capture_unknown_interface":
            return (
                f"{agg.count} pcapng packet(s) refer to an interface with no Interface "
                f"Description Block and were skipped ({where}): {reasons}"
            )
        return f"{agg.count} occurrence(s) ({where})"

    def _truncated(self, packet: int, offset: int) -> None:
        self._findings.append(
            finding(
                "capture_truncated_record",
                f"the file ends inside packet record {packet} (byte offset {offset} of "
                f"{len(self._buf)}); the {packet - 1} packet(s) before it were read",
                packets=(packet,),
            )
        )

    def _corrupt(self, packet: int, offset: int, what: str) -> None:
        self._findings.append(
            finding(
                "capture_corrupt_record",
                f"{what} at byte offset {offset} (before packet {packet}); reading stopped "
                f"after {packet - 1} packet(s)",
                packets=(packet,),
            )
        )

    # --- opening --------------------------------------------------------------------

    def _open_pcap(self, order: str, nanos: bool) -> None:
        self.format = "pcap"
        self._order = order
        self._nanos = nanos
        if len(self._buf) < 24:
            raise CaptureError(
                f"capture file {self._name} has a truncated pcap file header "
                f"({len(self._buf)} of 24 bytes): re-copy the file"
            )
        major, _minor, _zone, _sigfigs, snaplen, network = _STRUCTS[order]["pcap_header"](
            self._buf, 4
        )
        if major != 2:
            raise CaptureError(
                f"capture file {self._name} has pcap version {major}, not 2: "
                "re-save it with Wireshark or editcap"
            )
        self._snaplen = snaplen
        # bits 16-31 hold the FCS length and reserved bits (draft-ietf-opsawg-pcap §4)
        self._pcap_link_type = network & 0xFFFF
        self.link_types.add(self._pcap_link_type)
        if self._pcap_link_type not in SUPPORTED_LINK_TYPES:
            raise CaptureError(_unsupported(self._name, {self._pcap_link_type}))

    def _open_pcapng(self) -> None:
        self.format = "pcapng"
        buf = self._buf
        if len(buf) < 28:
            raise CaptureError(
                f"capture file {self._name} has a truncated pcapng Section Header Block "
                f"({len(buf)} bytes): re-copy the file"
            )
        bom = bytes(buf[8:12])
        if bom not in (_BOM_LE, _BOM_BE):
            raise CaptureError(
                f"capture file {self._name} starts like pcapng but has no byte-order magic "
                "(corrupt or not a capture): re-copy or re-save the file"
            )
        order = "<" if bom == _BOM_LE else ">"
        (blen,) = _STRUCTS[order]["u32"](buf, 4)
        if blen < 28 or blen % 4 or blen > MAX_RECORD_BYTES:
            raise CaptureError(
                f"capture file {self._name} has a corrupt pcapng Section Header Block "
                f"(length {blen}): re-copy or re-save the file"
            )
        (major,) = _STRUCTS[order]["u16"](buf, 12)
        if major != 1:
            raise CaptureError(
                f"capture file {self._name} is pcapng version {major}, not 1: "
                "re-save it with Wireshark or editcap"
            )
        unusable = self._pcapng_unusable()
        if unusable:
            raise CaptureError(_unsupported(self._name, unusable))
        if unusable is not None:
            raise CaptureError(
                f"capture file {self._name} is a pcapng file whose packets all refer to "
                "interfaces never described by an Interface Description Block: re-save it "
                "with Wireshark or editcap"
            )

    def _pcapng_unusable(self) -> set[int] | None:
        """Walk block headers: None when there is no packet block, a packet names a
        described interface of a decoded link type, or at any damage; otherwise the
        link types of the interfaces the packets name (empty: none was described)."""
        buf, end, off = self._buf, len(self._buf), 0
        seen_packet = False
        ifaces: list[int] = []  # link type per interface of the current section
        named: set[int] = set()
        s = _STRUCTS["<"]
        while off + 12 <= end:
            btype, blen = s["block"](buf, off)
            if btype == _PCAPNG_SHB:
                bom = bytes(buf[off + 8 : off + 12])
                if bom not in (_BOM_LE, _BOM_BE):
                    return None
                s = _STRUCTS["<" if bom == _BOM_LE else ">"]
                btype, blen = s["block"](buf, off)
                ifaces = []
            if blen < 12 or blen % 4 or off + blen > end:
                return None
            if btype == _BLOCK_IDB:
                ifaces.append(s["u16"](buf, off + 8)[0] if blen >= 20 else -1)
            elif btype in (_BLOCK_EPB, _BLOCK_PB, _BLOCK_SPB):
                seen_packet = True
                if btype == _BLOCK_EPB:
                    iid = s["u32"](buf, off + 8)[0]
                elif btype == _BLOCK_PB:
                    iid = s["u16"](buf, off + 8)[0]
                else:
                    iid = 0
                if iid < len(ifaces):
                    if ifaces[iid] in SUPPORTED_LINK_TYPES or ifaces[iid] < 0:
                        return None
                    named.add(ifaces[iid])
            off += blen
        return named if seen_packet else None

    # --- iteration ------------------------------------------------------------------

    def __iter__(self) -> Iterator[Segment]:
        self._reset()
        if not self._buf:
            return iter(())
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()

    def _release(self, off: int) -> int:
        """Drop the mapped pages before ``off`` from this process's resident set and
        return the offset at which to do it next (every ``_RELEASE_BYTES``).

        Segments hold copies of their bytes, so pages already parsed are never read
        again by the iteration; without this, a mapped capture's resident pages would
        grow to the size of the file (500 MB of capture, 500 MB of RSS). The page
        cache keeps them: a second iteration faults them back in, as the first did.
        """
        buf = self._buf
        if off and _MADV_DONTNEED is not None and isinstance(buf, mmap.mmap):
            upto = off - off % mmap.PAGESIZE
            if upto:
                try:
                    buf.madvise(_MADV_DONTNEED, 0, upto)
                except (OSError, ValueError):  # closed during iteration, or unsupported
                    return 1 << 62
        return off + _RELEASE_BYTES

    def _finish(self, pkt: int, tcp_n: int, min_ts: int, max_ts: int, off: int) -> None:
        self.packets = pkt
        self.tcp_packets = tcp_n
        if pkt and min_ts <= max_ts:
            self.first_ts_ns = min_ts
            self.last_ts_ns = max_ts
        self.bytes_read = off

    def _iter_pcap(self) -> Iterator[Segment]:
        """Record loop for classic pcap (draft-ietf-opsawg-pcap §5): 16-byte record
        header (seconds, µs or ns, captured length, original length), then data."""
        buf = self._buf
        end = len(buf)
        rec = _STRUCTS[self._order]["pcap_record"]
        frac = 1 if self._nanos else 1000
        lt = self._pcap_link_type
        eth = lt == LINKTYPE_ETHERNET
        decode = self._decode
        eth_ip4 = _ETH_IP4
        tcp = _TCP
        seg = Segment
        f5 = parse_f5_trailer
        min_trailer = _MIN_ETH_TRAILER
        pkt = tcp_n = 0
        max_ts = -(1 << 200)
        min_ts = 1 << 200
        off = 24
        release_at = self._release(0)
        try:
            while off + 16 <= end:
                ts_s, ts_f, caplen, origlen = rec(buf, off)
                if caplen > MAX_RECORD_BYTES:
                    self._corrupt(pkt + 1, off, f"packet record with captured length {caplen}")
                    break
                p = off + 16
                if p + caplen > end:
                    self._truncated(pkt + 1, off)
                    break
                off = p + caplen
                if off > release_at:
                    release_at = self._release(off)
                pkt += 1
                ts = ts_s * _NS + ts_f * frac
                if ts < max_ts:
                    self._note("capture_timestamps_out_of_order", pkt, ts)
                else:
                    max_ts = ts
                if ts < min_ts:
                    min_ts = ts
                # fast path: Ethernet, IPv4 without options, unfragmented, fully captured TCP
                if eth and caplen >= 54:
                    et, vihl, tot, frag, proto, src, dst = eth_ip4(buf, p)
                    if (
                        et == 0x0800
                        and vihl == 0x45
                        and proto == 6
                        and not frag & 0x3FFF
                        and 40 <= tot <= caplen - 14
                    ):
                        sport, dport, sq, ak, offb, flags, win = tcp(buf, p + 34)
                        a = p + 34 + ((offb >> 4) << 2)
                        b = p + 14 + tot
                        if p + 54 <= a <= b:
                            tcp_n += 1
                            self.packets, self.tcp_packets, self.bytes_read = pkt, tcp_n, off
                            # Bytes after the IP datagram: padding (< 7), or an F5 trailer?
                            tr = None if caplen - tot < min_trailer else f5(buf[b : p + caplen])
                            pl = buf[a:b]
                            yield seg(
                                pkt, ts, src, sport, dst, dport, sq, ak, flags, win, pl, b - a, tr
                            )
                            continue
                s = decode(buf, p, caplen, origlen, lt, pkt, ts)
                if s is not None:
                    tcp_n += 1
                    self.packets, self.tcp_packets, self.bytes_read = pkt, tcp_n, off
                    yield s
            else:
                if off < end:
                    self._truncated(pkt + 1, off)
        except ValueError:
            if self._buf:  # not "mmap closed" after close() during iteration
                raise
        finally:
            self._finish(pkt, tcp_n, min_ts, max_ts, off)

    def _iter_pcapng(self) -> Iterator[Segment]:
        """Block loop for pcapng (draft-ietf-opsawg-pcapng §3-§4): each block is
        type, total length, body, total length again; byte order per section."""
        buf = self._buf
        end = len(buf)
        decode = self._decode
        eth_ip4 = _ETH_IP4
        tcp = _TCP
        seg = Segment
        f5 = parse_f5_trailer
        min_trailer = _MIN_ETH_TRAILER
        s = _STRUCTS["<"]
        block = s["block"]
        u32 = s["u32"]
        epb = s["epb"]
        ifaces: list[_Interface] = []
        pkt = tcp_n = 0
        max_ts = -(1 << 200)
        min_ts = 1 << 200
        last_ts = 0
        off = 0
        release_at = self._release(0)
        try:
            while off + 12 <= end:
                btype, blen = block(buf, off)
                if btype == _PCAPNG_SHB:
                    bom = bytes(buf[off + 8 : off + 12])
                    if bom not in (_BOM_LE, _BOM_BE):
                        self._corrupt(pkt + 1, off, "Section Header Block without byte-order magic")
                        break
                    s = _STRUCTS["<" if bom == _BOM_LE else ">"]
                    block, u32, epb = s["block"], s["u32"], s["epb"]
                    btype, blen = block(buf, off)
                if blen < 12 or blen & 3 or blen > MAX_RECORD_BYTES:
                    self._corrupt(pkt + 1, off, f"pcapng block (type {btype:#x}) of length {blen}")
                    break
                nxt = off + blen
                if nxt > end:
                    self._truncated(pkt + 1, off)
                    break
                if nxt > release_at:
                    release_at = self._release(nxt)
                if u32(buf, nxt - 4)[0] != blen:
                    self._corrupt(
                        pkt + 1,
                        off,
                        f"pcapng block (type {btype:#x}) whose trailing length differs",
                    )
                    break
                if btype == _BLOCK_EPB:
                    if blen < 32:
                        self._corrupt(pkt + 1, off, f"Enhanced Packet Block of length {blen}")
                        break
                    iid, th, tl, caplen, origlen = epb(buf, off + 8)
                    if caplen > blen - 32:
                        self._corrupt(
                            pkt + 1, off, f"Enhanced Packet Block with captured length {caplen}"
                        )
                        break
                    p = off + 28
                elif btype == _PCAPNG_SHB:  # a new section: interfaces start again
                    if blen < 28:
                        self._corrupt(pkt + 1, off, f"Section Header Block of length {blen}")
                        break
                    major = s["shb"](buf, off + 12)[0]
                    if major != 1:
                        self._corrupt(pkt + 1, off, f"pcapng section of version {major}")
                        break
                    ifaces = []
                    off = nxt
                    continue
                elif btype == _BLOCK_IDB:
                    if blen < 20:
                        self._corrupt(pkt + 1, off, f"Interface Description Block of length {blen}")
                        break
                    iface = self._parse_idb(buf, off, nxt, s)
                    ifaces.append(iface)
                    self.link_types.add(iface.link_type)
                    off = nxt
                    continue
                elif btype == _BLOCK_SPB:
                    if blen < 16:
                        self._corrupt(pkt + 1, off, f"Simple Packet Block of length {blen}")
                        break
                    iid = 0
                    (origlen,) = u32(buf, off + 8)
                    caplen = min(origlen, blen - 16)
                    if ifaces and ifaces[0].snaplen:
                        caplen = min(caplen, ifaces[0].snaplen)
                    th = tl = -1  # no timestamp
                    p = off + 12
                elif btype == _BLOCK_PB:
                    if blen < 32:
                        self._corrupt(pkt + 1, off, f"Packet Block of length {blen}")
                        break
                    iid, th, tl, caplen, origlen = s["pb"](buf, off + 8)
                    if caplen > blen - 32:
                        self._corrupt(pkt + 1, off, f"Packet Block with captured length {caplen}")
                        break
                    p = off + 28
                else:
                    off = nxt
                    continue
                off = nxt
                pkt += 1
                if iid < len(ifaces):
                    iface = ifaces[iid]
                else:
                    self._note("capture_unknown_interface", pkt, None, f"interface {iid}")
                    continue
                if th < 0:  # Simple Packet Block: no timestamp, keep the previous one
                    ts = last_ts
                else:
                    ts = ((th << 32) | tl) * iface.mul // iface.div + iface.offset_ns
                    if not _TS_MIN <= ts <= _TS_MAX:
                        self._note("capture_timestamp_out_of_range", pkt, None, "")
                        continue
                    if ts < max_ts:
                        self._note("capture_timestamps_out_of_order", pkt, ts)
                    else:
                        max_ts = ts
                    if ts < min_ts:
                        min_ts = ts
                    last_ts = ts
                lt = iface.link_type
                if lt == 1 and caplen >= 54:
                    et, vihl, tot, frag, proto, src, dst = eth_ip4(buf, p)
                    if (
                        et == 0x0800
                        and vihl == 0x45
                        and proto == 6
                        and not frag & 0x3FFF
                        and 40 <= tot <= caplen - 14
                    ):
                        sport, dport, sq, ak, offb, flags, win = tcp(buf, p + 34)
                        a = p + 34 + ((offb >> 4) << 2)
                        b = p + 14 + tot
                        if p + 54 <= a <= b:
                            tcp_n += 1
                            self.packets, self.tcp_packets, self.bytes_read = pkt, tcp_n, off
                            # Bytes after the IP datagram: padding (< 7), or an F5 trailer?
                            tr = None if caplen - tot < min_trailer else f5(buf[b : p + caplen])
                            pl = buf[a:b]
                            yield seg(
                                pkt, ts, src, sport, dst, dport, sq, ak, flags, win, pl, b - a, tr
                            )
                            continue
                sg = decode(buf, p, caplen, origlen, lt, pkt, ts)
                if sg is not None:
                    tcp_n += 1
                    self.packets, self.tcp_packets, self.bytes_read = pkt, tcp_n, off
                    yield sg
            else:
                if off < end:
                    self._truncated(pkt + 1, off)
        except ValueError:
            if self._buf:  # not "mmap closed" after close() during iteration
                raise
        finally:
            self._finish(pkt, tcp_n, min_ts, max_ts, off)

    @staticmethod
    def _parse_idb(buf: Any, off: int, nxt: int, s: dict[str, Any]) -> _Interface:
        """Interface Description Block: link type, snaplen, then options
        (code, length, value padded to 4 bytes; ``opt_endofopt`` = 0 ends them)."""
        link_type, snaplen = s["idb"](buf, off + 8)
        iface = _Interface(link_type, snaplen)
        o = off + 16
        stop = nxt - 4
        u16 = s["u16"]
        while o + 4 <= stop:
            code, olen = u16(buf, o)[0], u16(buf, o + 2)[0]
            v = o + 4
            if code == 0 or v + olen > stop:
                break
            if code == 9 and olen >= 1:  # if_tsresol
                iface.set_tsresol(buf[v])
            elif code == 14 and olen >= 8:  # if_tsoffset, seconds
                iface.offset_ns = s["i64"](buf, v)[0] * _NS
            o = v + ((olen + 3) & ~3)
        return iface

    # --- packet decoding (general path) ---------------------------------------------

    def _decode(
        self, buf: Any, p: int, caplen: int, origlen: int, lt: int, pkt: int, ts: int
    ) -> Segment | None:
        """Decode one packet of link type ``lt`` whose captured bytes are
        ``buf[p:p+caplen]`` (``origlen`` bytes on the wire). Returns the TCP segment,
        or None after counting why the packet was skipped."""
        cap_end = p + caplen
        wire_end = p + (origlen if origlen > caplen else caplen)
        cut = origlen > caplen
        # --- link layer -> q (start of the IP header), ver (4, 6, or 0 for "other")
        if lt == LINKTYPE_ETHERNET or lt == LINKTYPE_LINUX_SLL or lt == LINKTYPE_LINUX_SLL2:
            if lt == LINKTYPE_ETHERNET:
                q, et_at = p + 14, p + 12
            elif lt == LINKTYPE_LINUX_SLL:
                q, et_at = p + 16, p + 14
            else:
                q, et_at = p + 20, p
            if q > cap_end:
                self._bad(pkt, ts, "link-layer header longer than the packet", cut)
                return None
            (et,) = _U16(buf, et_at)
            while et in _VLAN_TPIDS:
                if q + 4 > cap_end:
                    self._bad(pkt, ts, "VLAN tag longer than the packet", cut)
                    return None
                (et,) = _U16(buf, q + 2)
                q += 4
            if et == _ETHERTYPE_IPV4:
                ver = 4
            elif et == _ETHERTYPE_IPV6:
                ver = 6
            else:
                return None
        elif lt in _RAW_LINKTYPES or lt == LINKTYPE_IPV4 or lt == LINKTYPE_IPV6:
            q = p
            if caplen < 1:
                self._bad(pkt, ts, "empty raw IP packet", cut)
                return None
            ver = buf[p] >> 4
            if lt == LINKTYPE_IPV4 and ver != 4 or lt == LINKTYPE_IPV6 and ver != 6:
                self._bad(pkt, ts, f"IP version {ver} on link type {lt}", False)
                return None
        elif lt == LINKTYPE_NULL or lt == LINKTYPE_LOOP:
            q = p + 4
            if q > cap_end:
                self._bad(pkt, ts, "loopback header longer than the packet", cut)
                return None
            if lt == LINKTYPE_LOOP:
                (fam,) = _U32(buf, p)
            else:  # host byte order of the capturing machine: guess it
                (fam,) = _U32LE(buf, p)
                if fam > 0xFFFF:
                    (fam,) = _U32(buf, p)
            if fam == _AF_INET:
                ver = 4
            elif fam in _AF_INET6:
                ver = 6
            else:
                return None
        else:
            agg = self._unsupported.get(lt)
            if agg is None:
                agg = self._unsupported[lt] = _Agg()
            agg.add(pkt, ts, "")
            return None
        # --- IP
        if ver == 4:
            if q + 20 > cap_end:
                self._bad(pkt, ts, "IPv4 header beyond the packet end", cut)
                return None
            vihl, tot, frag, proto, src, dst = _IP4(buf, q)
            if vihl >> 4 != 4:
                self._bad(pkt, ts, f"IP version {vihl >> 4} in an IPv4 packet", False)
                return None
            ihl = (vihl & 15) << 2
            if ihl < 20:
                self._bad(pkt, ts, f"IPv4 header length {ihl} < 20", False)
                return None
            if proto != _IPPROTO_TCP:
                return None
            if tot == 0:  # TCP segmentation offload: the length is the frame's
                tot = wire_end - q
            ip_end = q + tot
            if tot < ihl or ip_end > wire_end:
                self._bad(pkt, ts, f"IPv4 total length {tot} (header {ihl})", False)
                return None
            if frag & 0x3FFF:
                self._note("capture_ip_fragment", pkt, ts)
                return None
            l4 = q + ihl
        elif ver == 6:
            if q + 40 > cap_end:
                self._bad(pkt, ts, "IPv6 header beyond the packet end", cut)
                return None
            vtf, plen, nh, src, dst = _IP6(buf, q)
            if vtf >> 28 != 6:
                self._bad(pkt, ts, f"IP version {vtf >> 28} in an IPv6 packet", False)
                return None
            if plen == 0:  # jumbogram or segmentation offload: up to the frame's end
                plen = wire_end - q - 40
            ip_end = q + 40 + plen
            if ip_end > wire_end:
                self._bad(pkt, ts, f"IPv6 payload length {plen} beyond the packet", False)
                return None
            l4 = q + 40
            while nh != _IPPROTO_TCP:
                if nh in _IPV6_EXT_HEADERS or nh == _IPPROTO_AH or nh == _IPPROTO_FRAGMENT:
                    if l4 + 8 > ip_end:
                        self._bad(pkt, ts, f"IPv6 extension header {nh} beyond the payload", False)
                        return None
                    if l4 + 8 > cap_end:
                        self._bad(pkt, ts, "IPv6 extension header cut", cut)
                        return None
                    if nh == _IPPROTO_FRAGMENT:
                        (fo,) = _U16(buf, l4 + 2)
                        if fo & 0xFFF9:  # offset or M bit: a real fragment
                            if buf[l4] == _IPPROTO_TCP:
                                self._note("capture_ip_fragment", pkt, ts)
                            return None
                        hl = 8  # atomic fragment (RFC 6946): decode the rest
                    elif nh == _IPPROTO_AH:
                        hl = (buf[l4 + 1] + 2) << 2
                    else:
                        hl = (buf[l4 + 1] + 1) << 3
                    nh = buf[l4]
                    l4 += hl
                else:
                    return None
        else:
            self._bad(pkt, ts, f"IP version {ver}", False)
            return None
        # --- TCP
        if l4 + 20 > ip_end:
            self._bad(pkt, ts, "TCP header beyond the IP payload", False)
            return None
        if l4 + 20 > cap_end:
            self._bad(pkt, ts, "TCP header cut", cut)
            return None
        sport, dport, sq, ak, offb, flags, win = _TCP(buf, l4)
        thl = (offb >> 4) << 2
        a = l4 + thl
        if thl < 20 or a > ip_end:
            self._bad(pkt, ts, f"TCP header length {thl}", False)
            return None
        b = ip_end if ip_end <= cap_end else cap_end
        if b < a:
            b = a
        if b < ip_end:
            self._note("capture_packet_cut_by_snaplen", pkt, ts)
        trailer = None
        if lt == LINKTYPE_ETHERNET and cap_end - ip_end >= _MIN_TRAILER_BYTES:
            trailer = parse_f5_trailer(buf[ip_end:cap_end])
        return Segment(
            pkt, ts, src, sport, dst, dport, sq, ak, flags, win, buf[a:b], ip_end - a, trailer
        )
