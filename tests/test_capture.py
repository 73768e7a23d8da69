"""Tests for wsanalyze.capture: pcap/pcapng reading, link layers, IP/TCP decoding,
damaged files, and a cross-check against dpkt on the public captures."""

from __future__ import annotations

import io
import os
import socket
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsanalyze.capture import MAX_RECORD_BYTES, CaptureReader, open_capture
from wsanalyze.catalogue import CATALOGUE
from wsanalyze.errors import CaptureError
from wsanalyze.model import Segment

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789  # a timestamp with nanosecond digits
PUBLIC = Path("/work/shared/public-captures")

# --- packet builders (by hand, network byte order) ------------------------------


def tcp(
    sport=40000,
    dport=80,
    seq=1000,
    ack=2000,
    flags=0x18,
    window=512,
    payload=b"hello",
    options=b"",
    data_offset=None,
):
    """A TCP header (RFC 9293 §3.1) followed by the payload."""
    off = data_offset if data_offset is not None else (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0)
    return hdr + options + payload


def ipv4(
    payload,
    src="192.0.2.1",
    dst="198.51.100.2",
    proto=6,
    frag=0,
    options=b"",
    total=None,
    ihl=None,
):
    """An IPv4 header (RFC 791) followed by the payload."""
    hl = 20 + len(options)
    ihl = hl // 4 if ihl is None else ihl
    tot = hl + len(payload) if total is None else total
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        tot,
        7,
        frag,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return hdr + options + payload


def ipv6(payload, src="2001:db8::1", dst="2001:db8::2", nh=6, exts=(), plen=None):
    """An IPv6 header (RFC 8200) with extension headers ``exts`` = [(type, bytes
    after the next-header byte)], then the payload."""
    chain = b""
    types = [t for t, _ in exts] + [nh]
    for i, (_t, body) in enumerate(exts):
        chain += bytes([types[i + 1]]) + body
    first = types[0]
    body = chain + payload
    plen = len(body) if plen is None else plen
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        plen,
        first,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return hdr + body


def ext_generic(n8=1):
    """Body of a hop-by-hop / routing / destination options header of 8*n8 bytes."""
    return bytes([n8 - 1]) + b"\x00" * (8 * n8 - 2)


def ext_fragment(offset=0, more=0):
    return b"\x00" + struct.pack("!HI", (offset << 3) | more, 0x1234)


def ext_ah(words=4):
    """Body of an Authentication Header of ``words`` 32-bit words (length field = words-2)."""
    return bytes([words - 2]) + b"\x00" * (4 * words - 2)


def eth(payload, ethertype=0x0800, vlans=()):
    """An Ethernet II frame with optional (TPID, VID) tags."""
    out = b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb"
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype) + payload


def sll(payload, proto=0x0800):
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", proto) + payload


def sll2(payload, proto=0x0800):
    return struct.pack("!HHIHBB8s", proto, 0, 3, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00") + (
        payload
    )


# --- file builders ----------------------------------------------------------------


def pcap(records, linktype=1, order="<", nanos=False, snaplen=262144):
    """Classic pcap (draft-ietf-opsawg-pcap). ``records``: (ts_ns, data[, origlen])."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        ts, data = rec[0], rec[1]
        orig = rec[2] if len(rec) > 2 else len(data)
        sec, frac = divmod(ts, NS)
        out.append(
            struct.pack(order + "IIII", sec, frac if nanos else frac // 1000, len(data), orig)
        )
        out.append(data)
    return b"".join(out)


def _pad4(b):
    return b + b"\x00" * (-len(b) % 4)


def block(order, btype, body):
    body = _pad4(body)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order="<"):
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def opt(order, code, value):
    return struct.pack(order + "HH", code, len(value)) + _pad4(value)


def idb(order="<", linktype=1, snaplen=0, tsresol=None, tsoffset=None):
    opts = b""
    if tsresol is not None:
        opts += opt(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += opt(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += opt(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order, iid, ts_raw, data, orig=None):
    orig = len(data) if orig is None else orig
    head = struct.pack(order + "IIIII", iid, ts_raw >> 32, ts_raw & 0xFFFFFFFF, len(data), orig)
    return block(order, 6, head + data)


def spb(order, data, orig=None):
    return block(order, 3, struct.pack(order + "I", len(data) if orig is None else orig) + data)


def pb(order, iid, ts_raw, data):
    head = struct.pack(
        order + "HHIIII", iid, 0, ts_raw >> 32, ts_raw & 0xFFFFFFFF, len(data), len(data)
    )
    return block(order, 2, head + data)


def read(data: bytes):
    """(segments, reader) of an in-memory capture."""
    r = CaptureReader.from_bytes(data, "test.pcap")
    return list(r), r


def codes(reader):
    return [f.code for f in reader.findings]


def write(tmp_path, data, name="c.pcap"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


PAYLOAD = b"GET / HTTP/1.1\r\n\r\n"
SEG = tcp(payload=PAYLOAD)
V4 = ipv4(SEG)


def check_default(s: Segment, packet=1, ts=T0 // 1000 * 1000, v6=False):
    """The segment built from SEG, over IPv4 (or IPv6 from ipv6(SEG))."""
    assert s.packet == packet
    assert s.ts_ns == ts
    if v6:
        assert s.src == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        assert s.dst == socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    else:
        assert s.src == socket.inet_aton("192.0.2.1")
        assert s.dst == socket.inet_aton("198.51.100.2")
    assert (s.sport, s.dport, s.seq, s.ack, s.flags, s.window) == (40000, 80, 1000, 2000, 0x18, 512)
    assert s.payload == PAYLOAD
    assert s.payload_len == len(PAYLOAD)
    assert isinstance(s.payload, bytes) and isinstance(s.src, bytes)


# --- basic reading ----------------------------------------------------------------


def test_ethernet_ipv4_fields_and_statistics(tmp_path):
    data = pcap([(T0, eth(V4)), (T0 + 5_000_000, eth(ipv4(tcp(seq=2**32 - 1, flags=0x02))))])
    with open_capture(write(tmp_path, data)) as r:
        segs = list(r)
        assert r.path == str(tmp_path / "c.pcap")
    assert len(segs) == 2
    check_default(segs[0])
    assert segs[1].seq == 2**32 - 1 and segs[1].flags == 0x02 and segs[1].packet == 2
    assert (r.packets, r.tcp_packets, r.format) == (2, 2, "pcap")
    assert r.first_ts_ns == T0 // 1000 * 1000
    assert r.last_ts_ns == (T0 + 5_000_000) // 1000 * 1000
    assert r.link_types == {1}
    assert r.bytes_read == len(data)
    assert r.findings == []


def test_pathlike_and_iterating_twice_restarts(tmp_path):
    data = pcap([(T0, eth(V4)), (T0, eth(V4))])
    r = open_capture(write(tmp_path, data))
    first = list(r)
    second = list(r)
    assert first == second and len(first) == 2
    assert r.packets == 2 and r.tcp_packets == 2
    r.close()
    assert list(r) == []  # closed: nothing, no exception
    r = open_capture(tmp_path / "c.pcap")
    it = iter(r)
    assert next(it).packet == 1
    r.close()  # while iterating: the iteration ends quietly
    assert list(it) == [] and r.packets == 1


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions(order, nanos):
    segs, r = read(pcap([(T0, eth(V4))], order=order, nanos=nanos))
    expected_ts = T0 if nanos else T0 // 1000 * 1000
    assert len(segs) == 1
    check_default(segs[0], ts=expected_ts)
    assert r.first_ts_ns == r.last_ts_ns == expected_ts


def test_link_type_field_upper_bits_are_ignored():
    # draft-ietf-opsawg-pcap §4: FCS length / F bit live in the upper bits.
    segs, r = read(pcap([(T0, eth(V4) + b"\xde\xad\xbe\xef")], linktype=(2 << 28) | (1 << 27) | 1))
    assert r.link_types == {1}
    check_default(segs[0])


LINK_CASES = {
    "ethernet": (1, eth(V4)),
    "ethernet_ipv6": (1, eth(ipv6(SEG), 0x86DD)),
    "sll": (113, sll(V4)),
    "sll_ipv6": (113, sll(ipv6(SEG), 0x86DD)),
    "sll2": (276, sll2(V4)),
    "sll2_ipv6": (276, sll2(ipv6(SEG), 0x86DD)),
    "raw101": (101, V4),
    "raw101_ipv6": (101, ipv6(SEG)),
    "raw12": (12, V4),
    "raw14": (14, ipv6(SEG)),
    "ipv4_228": (228, V4),
    "ipv6_229": (229, ipv6(SEG)),
    "null_le": (0, struct.pack("<I", 2) + V4),
    "null_be_host": (0, struct.pack(">I", 2) + V4),
    "null_ipv6_bsd": (0, struct.pack("<I", 24) + ipv6(SEG)),
    "null_ipv6_freebsd": (0, struct.pack("<I", 28) + ipv6(SEG)),
    "null_ipv6_macos": (0, struct.pack(">I", 30) + ipv6(SEG)),
    "loop": (108, struct.pack(">I", 2) + V4),
    "loop_ipv6": (108, struct.pack(">I", 30) + ipv6(SEG)),
}


@pytest.mark.parametrize("name", sorted(LINK_CASES))
def test_each_link_type(name):
    lt, frame = LINK_CASES[name]
    segs, r = read(pcap([(T0, frame)], linktype=lt))
    assert len(segs) == 1, r.findings
    check_default(segs[0], v6="ipv6" in name or name == "raw14")
    assert r.link_types == {lt}
    assert r.findings == []


@pytest.mark.parametrize(
    "vlans",
    [
        [(0x8100, 10)],
        [(0x88A8, 100), (0x8100, 10)],
        [(0x9100, 5), (0x8100, 6), (0x8100, 7)],
    ],
)
def test_vlan_tags(vlans):
    segs, r = read(pcap([(T0, eth(V4, vlans=vlans)), (T0, eth(ipv6(SEG), 0x86DD, vlans))]))
    assert len(segs) == 2
    check_default(segs[0])
    check_default(segs[1], packet=2, v6=True)


def test_vlan_tag_in_sll():
    segs, _ = read(pcap([(T0, sll(struct.pack("!HH", 10, 0x0800) + V4, proto=0x8100))], 113))
    check_default(segs[0])


def test_ipv4_options_are_skipped_via_ihl():
    segs, r = read(pcap([(T0, eth(ipv4(SEG, options=b"\x01\x01\x01\x00" * 3)))]))
    check_default(segs[0])
    assert r.findings == []


def test_tcp_options_are_skipped_via_data_offset():
    opts = b"\x02\x04\x05\xb4\x01\x03\x03\x07\x01\x01\x08\x0a" + b"\x00" * 8
    segs, _ = read(pcap([(T0, eth(ipv4(tcp(options=opts, payload=PAYLOAD))))]))
    check_default(segs[0])


@pytest.mark.parametrize(
    "exts",
    [
        [(0, ext_generic(1))],
        [(0, ext_generic(2)), (43, ext_generic(3)), (60, ext_generic(1))],
        [(60, ext_generic(1)), (51, ext_ah(6))],
        [(44, ext_fragment(0, 0))],  # atomic fragment (RFC 6946): not a real fragment
    ],
)
def test_ipv6_extension_headers(exts):
    segs, r = read(pcap([(T0, eth(ipv6(SEG, exts=exts), 0x86DD))]))
    assert len(segs) == 1
    check_default(segs[0], v6=True)
    assert r.findings == []


def test_flags_byte_and_window_and_ns_bit():
    # The NS bit lives in the data-offset byte: it must not leak into flags.
    seg = bytearray(tcp(flags=0xFF, window=0xFFFF, payload=b""))
    seg[12] |= 0x01
    segs, _ = read(pcap([(T0, eth(ipv4(bytes(seg))))]))
    assert segs[0].flags == 0xFF and segs[0].window == 0xFFFF
    assert segs[0].payload == b"" and segs[0].payload_len == 0


# --- pcapng -----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_two_interfaces_resolution_and_offset(order):
    data = (
        shb(order)
        + idb(order, 1, tsresol=9)  # ns
        + idb(order, 113, tsresol=6, tsoffset=1000)  # µs, +1000 s
        + block(order, 4, b"\x00\x00\x00\x00")  # a Name Resolution Block: skipped
        + epb(order, 0, T0, eth(V4))
        + epb(order, 1, 1_700_000_001_000_001, sll(V4))
        + block(order, 0x40000BAD, b"custom")  # a custom block: skipped
    )
    segs, r = read(data)
    assert [s.packet for s in segs] == [1, 2]
    check_default(segs[0], ts=T0)
    check_default(segs[1], packet=2, ts=(1_700_000_001_000_001 * 1000) + 1000 * NS)
    assert r.link_types == {1, 113}
    assert r.format == "pcapng" and r.packets == 2
    assert r.findings == []
    assert r.first_ts_ns == T0 and r.last_ts_ns == segs[1].ts_ns


@pytest.mark.parametrize(
    ("tsresol", "raw", "expected_ns"),
    [
        (6, 1_700_000_000_123_456, 1_700_000_000_123_456_000),  # default resolution
        (9, T0, T0),
        (3, 1_700_000_000_123, 1_700_000_000_123_000_000),
        (10, 17_000_000_001_234_567_891, 1_700_000_000_123_456_789),  # 0.1 ns: floor
        (0x80 | 20, (1_700_000_000 << 20) | (1 << 19), 1_700_000_000_500_000_000),  # 2^-20
        (0x80 | 30, 3, (3 * NS) >> 30),
    ],
)
def test_pcapng_tsresol_integer_arithmetic(tsresol, raw, expected_ns):
    # A resolution of 10^-6 is also what an IDB without if_tsresol means.
    iface = idb("<", 1) if tsresol == 6 else idb("<", 1, tsresol=tsresol)
    segs, _ = read(shb() + iface + epb("<", 0, raw, eth(V4)))
    assert segs[0].ts_ns == expected_ns
    assert isinstance(segs[0].ts_ns, int)


def test_pcapng_negative_tsoffset():
    segs, _ = read(shb() + idb("<", 1, tsresol=9, tsoffset=-3600) + epb("<", 0, T0, eth(V4)))
    assert segs[0].ts_ns == T0 - 3600 * NS


def test_pcapng_several_sections_of_both_byte_orders():
    data = (
        shb("<")
        + idb("<", 1, tsresol=9)
        + epb("<", 0, T0, eth(V4))
        + shb(">")  # a new section: interfaces start again from 0
        + idb(">", 101)
        + epb(">", 0, (T0 + 1000) // 1000, V4)
    )
    segs, r = read(data)
    assert len(segs) == 2
    check_default(segs[0], ts=T0)
    check_default(segs[1], packet=2, ts=(T0 + 1000) // 1000 * 1000)
    assert r.link_types == {1, 101}


def test_pcapng_simple_and_obsolete_packet_blocks():
    data = (
        shb()
        + idb("<", 1, snaplen=58)
        + pb("<", 0, T0 // 1000, eth(V4))
        # SPB: 58 captured bytes + 2 padding bytes; only the IDB 0 snaplen tells them apart
        + spb("<", eth(V4)[:58], orig=len(eth(V4)))
        + spb("<", eth(ipv4(tcp(payload=b""))))
        + spb("<", eth(V4)[:40], orig=len(eth(V4)))  # cut inside the TCP header: skipped
    )
    segs, r = read(data)
    assert [s.packet for s in segs] == [1, 2, 3]
    check_default(segs[0])
    assert segs[1].payload == PAYLOAD[:4] and segs[1].payload_len == len(PAYLOAD)
    assert segs[2].payload == b"" and segs[2].payload_len == 0
    assert segs[1].ts_ns == segs[2].ts_ns == segs[0].ts_ns  # SPB: no timestamp, the previous one
    (f,) = r.findings
    assert f.code == "capture_packet_cut_by_snaplen" and f.packets == (2, 4)
    assert "1 of them cut inside their headers" in f.detail
    assert r.packets == 4


def test_pcapng_unknown_interface_is_a_finding_when_other_packets_are_usable():
    data = shb() + idb("<", 1) + epb("<", 1, 5, eth(V4)) + epb("<", 0, 6, eth(V4))
    segs, r = read(data)
    assert [s.packet for s in segs] == [2]
    (f,) = r.findings
    assert f.code == "capture_unknown_interface" and f.packets == (1,)


def test_pcapng_all_packets_on_unknown_interfaces_is_an_error():
    with pytest.raises(CaptureError, match="Interface Description"):
        CaptureReader.from_bytes(shb() + epb("<", 0, 5, eth(V4)) + epb("<", 3, 5, eth(V4)))


def test_pcapng_without_packets_is_fine():
    segs, r = read(shb() + idb("<", 1))
    assert segs == [] and r.packets == 0 and r.first_ts_ns is None and r.findings == []


# --- damaged files ----------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 10, 16, 30])
def test_truncated_final_pcap_record(cut):
    full = pcap([(T0, eth(V4)), (T0, eth(V4)), (T0, eth(V4))])
    data = full[: len(full) - len(eth(V4)) - 16 + cut]
    segs, r = read(data)
    assert len(segs) == 2 and r.packets == 2
    (f,) = r.findings
    assert f.code == "capture_truncated_record" and f.packets == (3,)


def test_truncated_final_pcapng_block():
    data = shb() + idb("<", 1) + epb("<", 0, 1, eth(V4)) + epb("<", 0, 2, eth(V4))[:-7]
    segs, r = read(data)
    assert len(segs) == 1
    assert codes(r) == ["capture_truncated_record"]
    assert r.findings[0].packets == (2,)


def test_truncated_second_section_header():
    data = shb() + idb("<", 1) + epb("<", 0, 1, eth(V4)) + shb(">")[:17]
    segs, r = read(data)
    assert len(segs) == 1 and codes(r) == ["capture_truncated_record"]


def test_corrupt_pcap_record_length_stops_reading():
    data = pcap([(T0, eth(V4))]) + struct.pack("<IIII", 1, 0, MAX_RECORD_BYTES + 1, 99)
    data += pcap([(T0, eth(V4))])[24:]
    segs, r = read(data)
    assert len(segs) == 1
    assert codes(r) == ["capture_corrupt_record"]
    assert r.findings[0].packets == (2,)


@pytest.mark.parametrize(
    "bad_block",
    [
        struct.pack("<II", 6, 30) + b"\x00" * 22,  # not a multiple of 4
        struct.pack("<II", 6, 8),  # smaller than the minimum
        struct.pack("<II", 6, 32) + b"\x00" * 20 + struct.pack("<I", 36),  # trailer differs
        # EPB whose captured length exceeds its block
        struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 100, 100) + struct.pack("<I", 32),
    ],
)
def test_corrupt_pcapng_block_stops_reading(bad_block):
    data = shb() + idb("<", 1) + epb("<", 0, 1, eth(V4)) + bad_block + epb("<", 0, 2, eth(V4))
    segs, r = read(data)
    assert len(segs) == 1
    assert codes(r) == ["capture_corrupt_record"]


def test_snaplen_cut_payload_is_aggregated():
    frame = eth(ipv4(tcp(payload=b"x" * 1000)))
    records = [(T0 + i, frame[:200], len(frame)) for i in range(50)]
    segs, r = read(pcap(records, snaplen=200))
    assert len(segs) == 50
    assert all(s.payload == b"x" * (200 - 54) and s.payload_len == 1000 for s in segs)
    (f,) = r.findings
    assert f.code == "capture_packet_cut_by_snaplen"
    assert "50 packet(s)" in f.detail
    assert f.packets == tuple(range(1, 11))  # the first ten, not fifty


def test_ethernet_padding_and_f5_trailer_are_ignored():
    # A bare ACK is padded to 60 bytes on Ethernet; an F5 BIG-IP trailer follows.
    ack = ipv4(tcp(payload=b"", flags=0x10))
    trailer = b"\x01\x0c" + bytes(range(40)) + b"\x02\x05peer"
    frame = eth(ack) + b"\x00" * (60 - 14 - len(ack)) + trailer
    big = eth(V4) + trailer
    v6 = eth(ipv6(SEG), 0x86DD) + trailer
    segs, r = read(pcap([(T0, frame), (T0, big), (T0, v6)]))
    assert [s.payload for s in segs] == [b"", PAYLOAD, PAYLOAD]
    assert [s.payload_len for s in segs] == [0, len(PAYLOAD), len(PAYLOAD)]
    assert r.findings == []


def test_segmentation_offload_total_length_zero():
    frame = eth(ipv4(SEG, total=0))
    segs, r = read(pcap([(T0, frame)]))
    check_default(segs[0])
    assert r.findings == []


def test_ip_fragments_are_skipped_with_one_finding():
    records = [
        (T0, eth(ipv4(SEG, frag=0x2000))),  # MF set
        (T0, eth(ipv4(b"tail of it", frag=185))),  # offset > 0
        (T0, eth(ipv6(SEG, exts=[(44, ext_fragment(0, 1))]), 0x86DD)),
        (T0, eth(ipv4(b"udp frag", proto=17, frag=0x2000))),  # not TCP: just skipped
        (T0, eth(V4)),
    ]
    segs, r = read(pcap(records))
    assert [s.packet for s in segs] == [5]
    (f,) = r.findings
    assert f.code == "capture_ip_fragment" and f.packets == (1, 2, 3)


def test_non_tcp_packets_are_counted_and_skipped():
    udp = struct.pack("!HHHH", 53, 53, 12, 0) + b"abcd"
    records = [
        (T0, eth(b"\x00" * 28, 0x0806)),  # ARP
        (T0, eth(ipv4(udp, proto=17))),
        (T0, eth(ipv6(b"\x80\x00" + b"\x00" * 6, nh=58), 0x86DD)),  # ICMPv6
        (T0, eth(ipv6(b"", nh=59), 0x86DD)),  # no next header
        (T0, eth(b"\xaa\xaa\x03" + b"\x00" * 40, 46)),  # 802.3 length field + LLC
        (T0, eth(V4)),
    ]
    segs, r = read(pcap(records))
    assert [s.packet for s in segs] == [6]
    assert r.packets == 6 and r.tcp_packets == 1
    assert r.findings == []
    # BSD loopback with an address family that is not IP (AF_APPLETALK)
    segs, r = read(pcap([(T0, struct.pack("<I", 16) + V4), (T0, struct.pack("<I", 2) + V4)], 0))
    assert [s.packet for s in segs] == [2] and r.findings == []


def test_malformed_headers_are_aggregated():
    bad = [
        eth(ipv4(SEG, ihl=4)),  # IHL < 5
        eth(ipv4(SEG, total=10)),  # total length < header
        eth(ipv4(SEG, total=2000)),  # total length beyond the frame
        eth(ipv4(tcp(data_offset=3))),  # TCP data offset < 5
        eth(ipv4(tcp(data_offset=15, payload=b""))),  # TCP header beyond the IP payload
        eth(ipv6(SEG)),  # IPv6 bytes behind the IPv4 ethertype
        eth(ipv6(SEG, plen=4000), 0x86DD),
        eth(ipv6(SEG, exts=[(0, bytes([200]) + b"\x00" * 6)]), 0x86DD),  # ext beyond payload
        eth(ipv4(b"\x00" * 10)),  # TCP header beyond the IP payload
    ]
    records = [(T0 + i, f) for i, f in enumerate(bad * 3)] + [(T0 + 100, eth(V4))]
    segs, r = read(pcap(records))
    assert [s.packet for s in segs] == [len(bad) * 3 + 1]
    (f,) = r.findings
    assert f.code == "capture_malformed_packet"
    assert f.detail.startswith(f"{len(bad) * 3} packet(s)")
    assert f.packets == tuple(range(1, 11))
    assert "IPv4 header length 16 < 20" in f.detail


def test_unsupported_link_type_only_is_an_error():
    with pytest.raises(CaptureError, match=r"link type 127 \(IEEE 802.11 radiotap\), which"):
        read(pcap([(T0, b"\x00" * 60)] * 5, linktype=127))
    ng = shb() + idb("<", 127) + idb("<", 105)
    ng += b"".join(epb("<", i % 2, i, eth(V4)) for i in range(4))
    with pytest.raises(CaptureError, match=r"link types 105 \(IEEE 802.11\), 127 "):
        read(ng)


def test_unsupported_link_type_once_per_type():
    ng = shb() + idb("<", 127) + idb("<", 105) + idb("<", 1)
    ng += b"".join(epb("<", i % 3, i, eth(V4)) for i in range(9))
    segs, r = read(ng)
    assert len(segs) == 3
    assert sorted(f.detail.split(" (")[0] for f in r.findings) == [
        "3 packet(s) of link type 105",
        "3 packet(s) of link type 127",
    ]


def test_timestamps_out_of_order_once():
    records = [(T0, eth(V4)), (T0 - NS, eth(V4)), (T0 + NS, eth(V4)), (T0, eth(V4))]
    segs, r = read(pcap(records))
    assert len(segs) == 4
    (f,) = r.findings
    assert f.code == "capture_timestamps_out_of_order" and f.packets == (2, 4)
    assert r.first_ts_ns == (T0 - NS) // 1000 * 1000
    assert r.last_ts_ns == (T0 + NS) // 1000 * 1000


def test_every_finding_code_is_in_the_catalogue():
    records = [(T0, eth(ipv4(SEG, ihl=3))), (T0 - 1000, eth(ipv4(SEG, frag=1)))]
    records += [(T0, eth(V4)[:60], 200)]
    data = pcap(records) + b"\x01\x02"
    _, r = read(data)
    assert len(r.findings) == 5
    assert all(f.code in CATALOGUE and f.severity == CATALOGUE[f.code].severity for f in r.findings)


# --- unusable files -----------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CaptureError, match="does not exist") as exc:
        open_capture(tmp_path / "nope.pcap")
    assert "nope.pcap" in str(exc.value) and "\n" not in str(exc.value)


def test_directory(tmp_path):
    with pytest.raises(CaptureError, match="is a directory"):
        open_capture(tmp_path)


def test_empty_file(tmp_path):
    with pytest.raises(CaptureError, match="is empty"):
        open_capture(write(tmp_path, b""))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello world, this is not a capture file", "not a pcap or pcapng"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 40, "gzip"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (b"\xd4\xc3\xb2\xa1" + b"\x09\x00\x04\x00" + b"\x00" * 16, "pcap version 9"),
        (b"\x0a\x0d\x0d\x0a" + b"\x1c\x00\x00\x00" + b"XXXX" + b"\x00" * 16, "byte-order"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00", "truncated pcapng"),
        (shb()[:12] + b"\x02\x00" + shb()[14:], "pcapng version 2"),
        (b"\x0a\x0d\x0d\x0a\x1e\x00\x00\x00\x4d\x3c\x2b\x1a" + b"\x00" * 20, "corrupt pcapng"),
    ],
)
def test_not_a_capture(tmp_path, data, message):
    with pytest.raises(CaptureError, match=message) as exc:
        open_capture(write(tmp_path, data))
    assert "c.pcap" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a mode-000 file"
)
def test_permission_denied(tmp_path):
    p = write(tmp_path, pcap([(T0, eth(V4))]))
    p.chmod(0)
    try:
        with pytest.raises(CaptureError, match="permission denied"):
            open_capture(p)
    finally:
        p.chmod(0o600)


def test_permission_denied_message(tmp_path, monkeypatch):
    # Runs as root too: the error raised by open() is simulated.
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("wsanalyze.capture.open", denied, raising=False)
    with pytest.raises(CaptureError, match="permission denied") as exc:
        open_capture(tmp_path / "secret.pcap")
    assert "secret.pcap" in str(exc.value)


def test_statistics_are_current_while_iterating():
    data = pcap([(T0, eth(V4)), (T0, eth(b"\x00" * 28, 0x0806)), (T0, eth(V4))])
    r = CaptureReader.from_bytes(data)
    seen = [(s.packet, r.packets, r.tcp_packets, r.bytes_read) for s in r]
    rec = 16 + len(eth(V4))
    assert seen == [(1, 1, 1, 24 + rec), (3, 3, 2, len(data))]


def test_malformed_reasons_are_bounded():
    records = [(T0, eth(ipv4(SEG, total=100 + i))) for i in range(40)]
    _, r = read(pcap(records))
    (f,) = r.findings
    assert f.detail.startswith("40 packet(s)")
    assert f.detail.endswith("IPv4 total length 103 (header 20) x1; others x36")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_named_pipe_is_read_without_mmap(tmp_path):
    import threading

    fifo = tmp_path / "pipe.pcap"
    os.mkfifo(fifo)
    data = pcap([(T0, eth(V4))])
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        with open_capture(fifo) as r:
            segs = list(r)
    finally:
        writer.join(timeout=10)
    check_default(segs[0])


def test_stdin(monkeypatch):
    data = pcap([(T0, eth(V4))])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    with open_capture("-") as r:
        segs = list(r)
    check_default(segs[0])
    assert r.path == "-"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(CaptureError, match="standard input is empty"):
        open_capture("-")


# --- scapy-built captures -------------------------------------------------------------


def test_scapy_written_capture(tmp_path):
    scapy = pytest.importorskip("scapy.all")
    pkts = [
        scapy.Ether()
        / scapy.IP(src="10.1.1.1", dst="10.2.2.2")
        / scapy.TCP(sport=1, dport=2, seq=5),
        scapy.Ether()
        / scapy.Dot1Q(vlan=3)
        / scapy.IP(src="10.1.1.1", dst="10.2.2.2", options=[scapy.IPOption_NOP()] * 4)
        / scapy.TCP(sport=3, dport=4, seq=6, options=[("MSS", 1460), ("SAckOK", b"")])
        / b"abc",
        scapy.Ether()
        / scapy.IPv6(src="fe80::1", dst="fe80::2")
        / scapy.IPv6ExtHdrHopByHop()
        / scapy.IPv6ExtHdrDestOpt()
        / scapy.TCP(sport=5, dport=6, seq=7, flags="PA")
        / b"defg",
        scapy.Ether() / scapy.IP() / scapy.UDP() / b"x",
        scapy.Ether()
        / scapy.IP(src="10.1.1.1", dst="10.2.2.2")
        / scapy.TCP()
        / b"q"
        / scapy.Padding(load=b"\x00" * 20),
    ]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i / 4
    path = tmp_path / "scapy.pcap"
    scapy.wrpcap(str(path), pkts)
    with open_capture(path) as r:
        segs = list(r)
    assert [s.packet for s in segs] == [1, 2, 3, 5]
    assert [(s.sport, s.dport, s.payload) for s in segs] == [
        (1, 2, b""),
        (3, 4, b"abc"),
        (5, 6, b"defg"),
        (20, 80, b"q"),
    ]
    assert segs[2].flags == 0x18 and segs[2].src == socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert [s.ts_ns for s in segs] == [1_700_000_000 * NS + k * 250_000_000 for k in (0, 1, 2, 4)]
    assert r.packets == 5 and r.findings == []


def test_scapy_cooked_linux(tmp_path):
    scapy = pytest.importorskip("scapy.all")
    p = scapy.CookedLinux(proto=0x0800) / scapy.IP() / scapy.TCP(seq=77) / b"zz"
    path = tmp_path / "sll.pcap"
    scapy.wrpcap(str(path), [p])
    with open_capture(path) as r:
        segs = list(r)
    assert r.link_types == {113}
    assert [(s.seq, s.payload) for s in segs] == [(77, b"zz")]


# --- robustness (hypothesis) ---------------------------------------------------------


def _base_files():
    pc = pcap(
        [(T0, eth(V4)), (T0, eth(ipv6(SEG, exts=[(0, ext_generic())]), 0x86DD, [(0x8100, 1)]))]
        + [(T0, eth(ipv4(SEG, frag=0x2000))), (T0, eth(V4)[:40], 80)]
    )
    ng = (
        shb()
        + idb("<", 1, tsresol=9, tsoffset=5)
        + idb("<", 113)
        + epb("<", 0, T0, eth(V4))
        + epb("<", 1, 7, sll(ipv6(SEG), 0x86DD))
        + spb("<", eth(V4))
        + shb(">")
        + idb(">", 101)
        + epb(">", 0, 9, V4)
    )
    return [pc, ng]


BASES = _base_files()


def _consume(data: bytes) -> None:
    """Open and iterate; only CaptureError may come out, and the results are sane."""
    try:
        r = CaptureReader.from_bytes(data, "fuzz")
    except CaptureError as exc:
        assert "\n" not in str(exc)
        return
    last = 0
    n = 0
    for s in r:
        n += 1
        assert s.packet > last
        last = s.packet
        assert len(s.payload) <= s.payload_len
        assert 0 <= s.flags <= 0xFF and 0 <= s.seq < 2**32
        assert len(s.src) in (4, 16) and len(s.dst) == len(s.src)
    assert r.tcp_packets == n <= r.packets <= len(data) // 12
    assert r.bytes_read <= len(data)
    for f in r.findings:
        assert f.code in CATALOGUE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    linktype=st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276, 127]),
    order=st.sampled_from(["<", ">"]),
    tail=st.binary(max_size=2048),
)
def test_fuzz_arbitrary_bytes_after_pcap_header(linktype, order, tail):
    _consume(pcap([], linktype=linktype, order=order) + tail)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_valid_files(data):
    base = bytearray(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(0, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        base = base[: data.draw(st.integers(0, len(base)))]
    if data.draw(st.booleans()):
        pos = data.draw(st.integers(0, len(base)))
        base[pos:pos] = data.draw(st.binary(max_size=64))
    _consume(bytes(base))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    packets=st.lists(st.binary(min_size=0, max_size=200), max_size=20),
    linktype=st.sampled_from([1, 101, 113, 276, 0]),
)
def test_fuzz_arbitrary_packet_contents(packets, linktype):
    # Valid records, random contents (with an Ethernet/IPv4/TCP prefix half the time).
    records = [(T0 + i, (eth(ipv4(p)) if i % 2 else p)) for i, p in enumerate(packets)]
    data = pcap(records, linktype=linktype)
    segs, r = read(data)
    assert r.packets == len(packets)
    assert not any(
        f.code in ("capture_corrupt_record", "capture_truncated_record") for f in r.findings
    )
    _consume(data)


# --- cross-check against dpkt on real captures ---------------------------------------


def _public_captures():
    if not PUBLIC.is_dir():
        return []
    return sorted(p for p in PUBLIC.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def _dpkt_segments(path: Path):
    """What dpkt sees: (record count, [(packet, ts_us, seq, payload_len, payload)]) per
    TCP segment. Packets dpkt cannot parse, and IP fragments, are left out;
    ``payload_len`` is None where dpkt does not give it directly (IPv6, TSO)."""
    dpkt = pytest.importorskip("dpkt")
    sll2 = pytest.importorskip("dpkt.sll2")

    out = []
    n = 0
    with open(path, "rb") as f:
        reader = dpkt.pcap.UniversalReader(f)
        lt = reader.datalink()
        decoders = {1: dpkt.ethernet.Ethernet, 113: dpkt.sll.SLL, 276: sll2.SLL2}
        for n, (ts, buf) in enumerate(reader, start=1):
            try:
                if lt in decoders:
                    ip = decoders[lt](buf).data
                else:
                    ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
            except (dpkt.UnpackError, IndexError, struct.error):
                continue
            if isinstance(ip, dpkt.ip.IP):
                if ip.offset or ip.mf:
                    continue
                payload_len = ip.len - ip.hl * 4 if ip.len else None
            elif isinstance(ip, dpkt.ip6.IP6):
                payload_len = None
            else:
                continue
            seg = ip.data
            if not isinstance(seg, dpkt.tcp.TCP):
                continue
            if payload_len is not None:
                payload_len -= seg.off * 4
            out.append((n, round(ts * 1e6), seg.seq, payload_len, bytes(seg.data)))
    return n, out


def _compare_with_dpkt(path: Path) -> int:
    """Assert wsanalyze and dpkt agree on ``path``; returns the segments compared."""
    with open_capture(path) as r:
        ours = list(r)
    records, theirs = _dpkt_segments(path)
    assert theirs, "dpkt found no TCP segment: the comparison would be vacuous"
    assert r.packets == records
    by_packet = {s.packet: s for s in ours}
    for n, ts_us, seq, payload_len, payload in theirs:
        s = by_packet.get(n)
        assert s is not None, f"packet {n}: dpkt sees a TCP segment, wsanalyze does not"
        assert s.seq == seq, n
        assert s.payload == payload, n
        assert abs(s.ts_ns // 1000 - ts_us) <= 1, n
        if payload_len is not None:
            assert s.payload_len == payload_len, n
    assert len(ours) == len(theirs)
    assert r.tcp_packets == len(ours)
    bad = {"capture_corrupt_record", "capture_malformed_packet", "capture_unsupported_link_type"}
    assert not [f for f in r.findings if f.code in bad]
    assert r.first_ts_ns is not None and r.first_ts_ns <= r.last_ts_ns
    return len(theirs)


@pytest.mark.parametrize("path", _public_captures(), ids=lambda p: str(p.relative_to(PUBLIC)))
def test_public_captures_match_dpkt(path):
    assert _compare_with_dpkt(path) > 0


@pytest.mark.parametrize("linktype", [1, 113, 276, 101])
def test_generated_capture_matches_dpkt(tmp_path, linktype):
    # The public captures are all Ethernet/SLL IPv4: cover VLANs, IPv6 extension
    # headers, padding and other link types here.
    frames = {
        1: [
            eth(V4, vlans=[(0x8100, 4)]),
            eth(ipv6(SEG, exts=[(0, ext_generic()), (60, ext_generic(2))]), 0x86DD),
            eth(ipv4(tcp(payload=b"", flags=0x10))) + b"\x00" * 6 + b"trailer",
            eth(ipv4(tcp(seq=7, options=b"\x01" * 12))),
        ],
        113: [sll(V4), sll(ipv6(SEG, exts=[(43, ext_generic())]), 0x86DD)],
        276: [sll2(V4), sll2(ipv6(SEG), 0x86DD)],
        101: [V4, ipv6(SEG), ipv4(SEG, options=b"\x01" * 8)],
    }[linktype]
    path = write(tmp_path, pcap([(T0 + i * 1000, f) for i, f in enumerate(frames)], linktype))
    assert _compare_with_dpkt(path) == len(frames)


# --- resident memory of a mapped capture ------------------------------------------


def _mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                mine = line.rstrip("\n").endswith(str(path))
            elif mine and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_parsed_pages_of_a_mapped_capture_are_released(tmp_path, monkeypatch, fmt):
    """An 8.6 MB capture read with a 256 KiB release step: the segments are those of
    an in-memory read, and the mapping's resident pages stay within a few steps and
    the kernel's fault-around (up to 2 MiB here) instead of growing to the file's
    size (8.4 MiB resident without the release)."""
    import wsanalyze.capture as capture

    payload = bytes(1400)
    packets = [(T0 + i * 1000, eth(ipv4(tcp(seq=i * 1400, payload=payload)))) for i in range(6000)]
    if fmt == "pcap":
        data = pcap(packets)
    else:
        data = shb() + idb(tsresol=9) + b"".join(epb("<", 0, ts, p) for ts, p in packets)
    path = write(tmp_path, data, "big." + fmt)
    monkeypatch.setattr(capture, "_RELEASE_BYTES", 256 * 1024)
    expected, _ = read(data)
    with open_capture(path) as r:
        seen = []
        peak = 0
        for i, s in enumerate(r):
            seen.append(s)
            if i % 200 == 0:
                peak = max(peak, _mapped_rss_kib(path))
        assert r.findings == []
    assert seen == expected and len(seen) == 6000
    assert len(data) > 8_000_000
    assert 0 < peak < 4096  # KiB
