"""F5 BIG-IP Ethernet trailers (``tcpdump -i 0.0:nnn`` on a BIG-IP): the parser against
byte layouts written out by hand from Wireshark's packet-f5ethtrailer.c (every format
and version of the table in wsanalyze.f5trailer), garbage and padding that must not
parse, a fuzz invariant; the reader attaching the trailer to its Segment (fast and
general paths); tshark's own dissector on the same crafted capture; the ids carried to
the TCP connection; and pairing of two legs on them when nothing else tells the legs
apart."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import replace

import pytest
from craft import (
    TEXT,
    Msg,
    f5_address,
    f5_dpt_trailer,
    f5_high_fields,
    f5_leg,
    f5_legacy_trailer,
    nginx_like,
    t_us,
    with_f5_trailer,
    write_legs,
    write_pcap,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

import wsanalyze
from wsanalyze import correlate
from wsanalyze.capture import open_capture
from wsanalyze.f5trailer import MIN_TRAILER_BYTES, parse_f5_trailer
from wsanalyze.model import ACK, PSH, SYN, Endpoint, F5Trailer, Segment
from wsanalyze.tcp import TcpReassembler, f5_client_side

MAGIC = b"\xf5\xde\xb0\xf5"
V4_1 = bytes([10, 1, 1, 1])
V4_2 = bytes([10, 2, 2, 2])
V6_1 = bytes.fromhex("20010db8000000000000000000000001")
V6_2 = bytes.fromhex("20010db8000000000000000000000002")
MAPPED = bytes(10) + b"\xff\xff"
RD = bytes.fromhex("262000000c10f5010000")  # route-domain prefix; RD u16 and IPv4 follow


def name16(text: bytes) -> bytes:
    return text.ljust(16, b"\0")


def high39(remote: bytes, local: bytes, rport: int = 443, lport: int = 50000) -> bytes:
    """High noise fields: IP protocol 6, VLAN 4094, 16-byte addresses, ports."""
    return struct.pack("!BH", 6, 4094) + remote + local + struct.pack("!HH", rport, lport)


def dpt(*tlvs: bytes, version: int = 1) -> bytes:
    body = b"".join(tlvs)
    return MAGIC + struct.pack("!HH", 8 + len(body), version) + body


def tlv(provider: int, typ: int, version: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", provider, typ, 8 + len(data), version) + data


def med_v4(flow: int, peer: int, cause: bytes = b"") -> bytes:
    """DPT medium noise v4: flow, peer, cf flags high, cf flags, flow type, HA unit,
    reserved u32, priority, RST cause length, cause."""
    return struct.pack("!QQIIBBIBB", flow, peer, 0, 0x10, 0, 0, 0, 3, len(cause)) + cause


# --- old format (BIG-IP 9.4.2 - 13.x): type, length (from the version byte on), version ----


class TestOldFormat:
    def test_v94_low_35_bytes_carries_32_bit_flow_ids(self):
        low = (
            bytes([1, 33, 0])  # type low, length 35-2, version 0
            + bytes([1, 2, 3])  # ingress, slot (0-based), tmm
            + struct.pack("!IIIB", 0xAABBCCDD, 0x11223344, 0x80, 1)  # flow, peer, flags, type
            + name16(b"/Common/vs9")
        )
        med = bytes([2, 6, 0]) + bytes([0]) + b"\x01\x00\x02\x00"  # HA unit, slot, port (LE)
        assert len(low) == 35 and len(med) == 8
        t = parse_f5_trailer(low + med)
        assert t == F5Trailer(
            format="legacy",
            length=43,
            ingress=True,
            slot=3,  # 1-based here (Wireshark shows 9.4's raw 0-based 2)
            tmm=3,
            virtual_server="/Common/vs9",
            flow_id=0xAABBCCDD,
            peer_id=0x11223344,
        )

    def test_v10_low_22_and_medium_21_bytes_32_bit_ids(self):
        low = bytes([1, 20, 0, 0, 0, 5]) + name16(b"")
        med = bytes([2, 19, 0]) + struct.pack("!II", 7, 9) + bytes(10)
        assert len(low) == 22 and len(med) == 21
        t = parse_f5_trailer(med + low)  # any order
        assert t is not None
        assert (t.ingress, t.slot, t.tmm, t.virtual_server) == (False, 1, 5, None)
        assert (t.flow_id, t.peer_id, t.length) == (7, 9, 43)

    def test_v11_0_medium_29_bytes_64_bit_ids(self):
        med = bytes([2, 27, 0]) + struct.pack("!QQ", 1 << 40, 2 << 40) + bytes(10)
        assert len(med) == 29
        t = parse_f5_trailer(med)
        assert t is not None and (t.flow_id, t.peer_id) == (1 << 40, 2 << 40)
        assert t.ingress is None and t.virtual_server is None  # no low noise: None

    @pytest.mark.parametrize(
        "version,fixed", [(1, 30), (2, 31), (3, 35)], ids=["v1-11.2", "v2-priority", "v3-flags2"]
    )
    @pytest.mark.parametrize("cause", [b"", b"\x00" + bytes(8) + b"RST cause text"])
    def test_medium_v1_to_v3_with_rst_cause(self, version, fixed, cause):
        body = struct.pack("!QQ", 0x0102030405060708, 0x1112131415161718)
        body += bytes(fixed - 3 - 16 - 1) + bytes([len(cause)]) + cause
        med = bytes([2, len(body) + 1, version]) + body
        assert len(med) == fixed + len(cause)
        t = parse_f5_trailer(med)
        assert t is not None and t.length == len(med)
        assert (t.flow_id, t.peer_id) == (0x0102030405060708, 0x1112131415161718)

    def test_low_v1_name_of_given_length(self):
        low = bytes([1, 5 + 11, 1, 1, 0, 2, 11]) + b"/Common/vs1"
        t = parse_f5_trailer(low)
        assert t is not None and (t.ingress, t.slot, t.tmm) == (True, 1, 2)
        assert (t.virtual_server, t.length) == ("/Common/vs1", 18)
        shortest = bytes([1, 5, 1, 0, 0, 0, 0])  # no name: 7 bytes, the smallest trailer
        assert len(shortest) == MIN_TRAILER_BYTES
        assert parse_f5_trailer(shortest) == F5Trailer("legacy", 7, False, 1, 0, None)

    @pytest.mark.parametrize(
        "remote,local,want_r,want_l,rd_r,rd_l",
        [
            (MAPPED + V4_1, MAPPED + V4_2, V4_1, V4_2, None, None),
            (RD + b"\x00\x05" + V4_1, RD + b"\x01\x00" + V4_2, V4_1, V4_2, 5, 256),
            (V6_1, V6_2, V6_1, V6_2, None, None),
        ],
        ids=["ipv4-mapped", "route-domain", "ipv6"],
    )
    def test_high_v0_peer_endpoints(self, remote, local, want_r, want_l, rd_r, rd_l):
        low = bytes([1, 5, 1, 1, 0, 0, 0])
        med = bytes([2, 28, 1]) + struct.pack("!QQ", 5, 6) + bytes(10) + b"\x00"  # v1, no cause
        high = bytes([3, 40, 0]) + high39(remote, local)
        assert len(high) == 42
        t = parse_f5_trailer(low + med + high)
        assert t is not None and t.length == 7 + 30 + 42
        assert (t.peer_ipproto, t.peer_vlan) == (6, 4094)
        assert t.peer_remote == Endpoint(want_r, 443)
        assert t.peer_local == Endpoint(want_l, 50000)
        assert (t.peer_remote_route_domain, t.peer_local_route_domain) == (rd_r, rd_l)

    def test_high_noise_without_peer_gives_no_peer_endpoints(self):
        med = bytes([2, 28, 1]) + struct.pack("!QQ", 5, 0) + bytes(10) + b"\x00"
        high = bytes([3, 40, 0]) + bytes(39)  # Wireshark: "No peer connection information"
        t = parse_f5_trailer(med + high)
        assert t is not None and (t.flow_id, t.peer_id) == (5, 0)
        assert t.peer_remote is None and t.peer_local is None and t.peer_ipproto is None

    def test_after_zero_padding(self):
        low = bytes([1, 5, 1, 1, 0, 0, 0])
        t = parse_f5_trailer(bytes(6) + low)
        assert t is not None and t.length == 7  # padding not counted


# --- new format (BIG-IP 14.0+, "DPT") -----------------------------------------------------


class TestDptFormat:
    def test_low_v2_ingress_byte_medium_v4_high_v1(self):
        low = struct.pack("!BBBB", 1, 1, 3, 10) + b"/Common/vs"
        high = high39(MAPPED + V4_1, RD + b"\x00\x02" + V4_2)
        data = dpt(tlv(1, 1, 2, low), tlv(1, 2, 4, med_v4(0xF1, 0xF2)), tlv(1, 3, 1, high))
        t = parse_f5_trailer(data)
        assert t == F5Trailer(
            format="dpt",
            length=len(data),
            ingress=True,
            slot=2,
            tmm=3,
            virtual_server="/Common/vs",
            flow_id=0xF1,
            peer_id=0xF2,
            peer_ipproto=6,
            peer_vlan=4094,
            peer_remote=Endpoint(V4_1, 443),
            peer_local=Endpoint(V4_2, 50000),
            peer_remote_route_domain=None,
            peer_local_route_domain=2,
        )

    @pytest.mark.parametrize("flags,ingress", [(0x01, True), (0x06, False), (0x07, True)])
    def test_low_v3_flags_bit_0_is_ingress(self, flags, ingress):
        data = dpt(tlv(1, 1, 3, struct.pack("!BBBB", flags, 0, 0, 0)))
        t = parse_f5_trailer(data)
        assert t is not None and t.ingress is ingress and t.virtual_server is None

    def test_low_v4_object_name_block(self):
        block = b"\x01\x031.1" + b"\x00\x0a/Common/vs" + b"\x02\x02t1"  # port, virtual, trunk
        low = struct.pack("!BBBB", 0, 0, 1, len(block)) + block
        t = parse_f5_trailer(dpt(tlv(1, 1, 4, low)))
        assert t is not None and (t.ingress, t.tmm, t.virtual_server) == (False, 1, "/Common/vs")

    def test_medium_v4_rst_cause_and_ipv6_high(self):
        cause = b"\x00" + bytes(8) + b"[F5RST: No server selected]"
        data = dpt(
            tlv(1, 2, 4, med_v4(1 << 63, 12345, cause)),
            tlv(1, 3, 1, high39(V6_1, V6_2, 80, 1024)),
        )
        t = parse_f5_trailer(data)
        assert t is not None and (t.flow_id, t.peer_id) == (1 << 63, 12345)
        assert t.peer_remote == Endpoint(V6_1, 80) and t.peer_local == Endpoint(V6_2, 1024)

    def test_other_providers_and_unknown_noise_versions_are_skipped(self):
        tls = tlv(4, 0, 1, bytes(40))  # TLS key material
        data = dpt(tls, tlv(1, 1, 9, b"future"), tlv(1, 2, 4, med_v4(3, 4)))
        t = parse_f5_trailer(data)
        assert t is not None and (t.flow_id, t.peer_id, t.length) == (3, 4, len(data))

    @pytest.mark.parametrize("fcs", [b"\x12\x34\x56\x78", b"\x00\x00\x9a\xbc", bytes(4)])
    def test_after_a_frame_check_sequence(self, fcs):
        data = dpt(tlv(1, 2, 4, med_v4(8, 9)))
        for padding in (b"", bytes(6)):
            t = parse_f5_trailer(padding + fcs + data)
            assert t is not None and (t.flow_id, t.peer_id, t.length) == (8, 9, len(data))

    def test_after_zero_padding(self):
        data = dpt(tlv(1, 2, 4, med_v4(8, 9)))
        t = parse_f5_trailer(bytes(13) + data)
        assert t is not None and t.length == len(data)


# --- what must not parse --------------------------------------------------------------------

GOOD_DPT = dpt(tlv(1, 2, 4, med_v4(8, 9)))
GOOD_OLD = bytes([1, 5, 1, 1, 0, 0, 0]) + bytes([2, 28, 1]) + bytes(16) + bytes(10) + b"\x00"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(6),  # Ethernet padding of a TCP/IPv4 frame
        bytes(60),
        b"\x01\x02\x03\x04\x05\x06",  # non-zero padding, too short to be a trailer
        b"\x00" * 3 + b"\xaa\xbb\xcc\xdd",  # padding then a 4-byte FCS
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)),
        GOOD_DPT[:-1],  # cut
        GOOD_DPT + b"\x00",  # does not end at the frame's end
        MAGIC + struct.pack("!HH", len(GOOD_DPT), 2) + GOOD_DPT[8:],  # DPT version 2
        MAGIC + struct.pack("!HH", len(GOOD_DPT) + 4, 1) + GOOD_DPT[8:],  # length too long
        dpt(tlv(1, 2, 4, med_v4(8, 9))[:-1] + b"\x00\x00\x00"),  # TLV length inconsistent
        dpt(tlv(1, 2, 4, med_v4(8, 9)), tlv(1, 2, 4, med_v4(8, 9))),  # medium twice
        dpt(tlv(1, 2, 4, bytes(20))),  # medium v4 too short for its fields
        dpt(tlv(1, 1, 3, struct.pack("!BBBB", 1, 0, 0, 30) + b"short")),  # name past its TLV
        dpt(struct.pack("!HHHH", 1, 2, 4, 4)),  # TLV length below its header
        GOOD_OLD[:-1],
        GOOD_OLD + b"\x01",
        bytes([4, 5, 0, 0, 0, 0, 0]),  # type 4
        bytes([1, 5, 4, 0, 0, 0, 0]),  # version 4
        bytes([1, 5, 1, 0, 0, 0, 0]) * 2,  # low twice
        bytes([1, 6, 1, 0, 0, 0, 0, 0]),  # low v1: length disagrees with the name length
        bytes([2, 6, 0]) + bytes(5) + bytes([2, 6, 0]) + bytes(5),
        bytes([2, 20, 0]) + bytes(19),  # medium v0 of no known length (22)
        bytes([3, 39, 0]) + bytes(38),  # high v0 of 41 bytes
        bytes([1, 200, 1]) + bytes(199),  # beyond Wireshark's sanity bound (140)
    ],
    ids=lambda d: d[:12].hex() or "empty",
)
def test_not_a_trailer(data):
    assert parse_f5_trailer(data) is None


def test_accepts_bytearray_and_memoryview():
    assert parse_f5_trailer(bytearray(GOOD_DPT)) == parse_f5_trailer(GOOD_DPT)
    assert parse_f5_trailer(memoryview(GOOD_OLD)) == parse_f5_trailer(GOOD_OLD)


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda p, b: p + b, st.sampled_from([b"", bytes(6), b"\0\0\x12\x34"]), st.binary()
        ),
        st.builds(
            lambda d, i, b: d[:i] + b + d[i + len(b) :],
            st.sampled_from([GOOD_DPT, GOOD_OLD, MAGIC + GOOD_DPT[4:]]),
            st.integers(0, 60),
            st.binary(max_size=4),
        ),
    )
)
def test_arbitrary_bytes_never_raise_and_length_is_what_was_consumed(data):
    t = parse_f5_trailer(data)
    if t is None:
        return
    assert isinstance(t, F5Trailer) and t.format in ("legacy", "dpt")
    assert MIN_TRAILER_BYTES <= t.length <= len(data)
    # The trailer is the end of the frame; before it only zero padding and, before
    # a new-format trailer, a 4-byte FCS.
    before = data[: len(data) - t.length]
    if t.format == "dpt" and any(before):
        assert len(before) >= 4 and not any(before[:-4])
    else:
        assert not any(before)
    assert parse_f5_trailer(data[len(data) - t.length :]) == t


@settings(max_examples=300, deadline=None)
@given(
    legacy=st.booleans(),
    ingress=st.booleans(),
    slot=st.integers(0, 254),
    tmm=st.integers(0, 255),
    vip=st.binary(max_size=40).map(lambda b: bytes(c % 95 + 32 for c in b)),
    ids=st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    rd=st.none() | st.integers(0, 65535),
    padding=st.integers(0, 6),
)
def test_crafted_trailers_round_trip(legacy, ingress, slot, tmm, vip, ids, rd, padding):
    high = f5_high_fields(("10.9.8.7", 443), ("10.1.2.3", 40000), remote_rd=rd, vlan=7)
    flow, peer = ids if ids is not None else (None, 0)
    make = f5_legacy_trailer if legacy else f5_dpt_trailer
    data = make(ingress=ingress, slot=slot, tmm=tmm, vip=vip, flow_id=flow, peer_id=peer, high=high)
    t = parse_f5_trailer(bytes(padding) + data)
    assert t is not None and t.length == len(data)
    assert t.format == ("legacy" if legacy else "dpt")
    assert (t.ingress, t.slot, t.tmm) == (ingress, slot + 1, tmm)
    assert t.virtual_server == (vip.decode() or None)
    assert (t.flow_id, t.peer_id) == ((flow, peer) if ids is not None else (None, None))
    if peer:
        assert t.peer_remote == Endpoint(bytes([10, 9, 8, 7]), 443)
        assert t.peer_local == Endpoint(bytes([10, 1, 2, 3]), 40000)
        assert (t.peer_vlan, t.peer_remote_route_domain, t.peer_local_route_domain) == (7, rd, None)
    else:
        assert t.peer_remote is None


def test_craft_address_helper_matches_the_layout():
    assert f5_address("10.1.1.1") == MAPPED + V4_1
    assert f5_address("10.1.1.1", 5) == RD + b"\x00\x05" + V4_1
    assert f5_address("2001:db8::1") == V6_1


# --- the reader --------------------------------------------------------------------------------

CLIENT, VIP = "192.0.2.10", "192.0.2.1"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def _frames():
    """(frame, its TCP payload, the trailer bytes or None) for each record of the
    crafted capture: IPv4 fast path, 802.1Q and IPv6 (general path), both formats,
    frames with padding only, and a trailer after a 4-byte FCS."""
    high = f5_high_fields(("198.51.100.10", 8080), ("198.51.100.1", 52001), remote_rd=3)
    syn = ETH / IP(src=CLIENT, dst=VIP) / TCP(sport=41001, dport=80, flags="S", seq=100)
    data = (
        ETH
        / IP(src=VIP, dst=CLIENT)
        / TCP(sport=80, dport=41001, flags="PA", seq=500, ack=101)
        / Raw(b"x" * 100)
    )
    tagged = (
        ETH
        / Dot1Q(vlan=4094)
        / IP(src=CLIENT, dst=VIP)
        / TCP(sport=41001, dport=80, flags="A", seq=101, ack=601)
    )
    v6 = (
        ETH
        / IPv6(src="2001:db8::10", dst="2001:db8::1")
        / TCP(sport=41002, dport=80, flags="PA", seq=7)
        / Raw(b"hello")
    )
    cases = [
        (syn, b"", f5_dpt_trailer(ingress=True, vip=b"/Common/ws_vs", flow_id=0, peer_id=0)),
        (
            data,
            b"x" * 100,
            f5_dpt_trailer(ingress=False, slot=1, tmm=2, flow_id=0xC1, peer_id=0x51, high=high),
        ),
        (tagged, b"", f5_dpt_trailer(low_version=4, vip=b"/Common/ws_vs", flow_id=0xC1)),
        (v6, b"hello", f5_legacy_trailer(vip=b"/Common/v6", flow_id=0xC2, peer_id=0x52)),
        (data, b"x" * 100, f5_legacy_trailer(tmm=5, flow_id=0xC1, peer_id=0x51, high=high)),
        (syn, b"", None),  # Ethernet padding only
        (data, b"x" * 100, None),
    ]
    out = []
    for k, (p, payload, trailer) in enumerate(cases):
        if trailer is None:
            q = Ether(bytes(p) + bytes(max(0, 60 - len(bytes(p)))))
        else:
            q = with_f5_trailer(p, trailer)
        q.time = t_us(k * 10)
        out.append((q, payload, trailer))
    trailer = f5_dpt_trailer(flow_id=0xC3, peer_id=0x53)
    fcs = with_f5_trailer(syn, trailer, fcs=b"\x00\x1f\x2e\x3d")  # an FCS already there
    fcs.time = t_us(100)
    out.append((fcs, b"", trailer))
    return out


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    path = tmp_path_factory.mktemp("f5") / "f5.pcap"
    frames = _frames()
    write_pcap(path, [q for q, _, _ in frames])
    return path, frames


def test_reader_attaches_the_trailer_to_each_segment(crafted):
    path, frames = crafted
    with open_capture(path) as reader:
        segs = list(reader)
    assert len(segs) == len(frames)
    for seg, (_, payload, trailer) in zip(segs, frames, strict=True):
        assert seg.payload == payload  # the trailer is not payload
        assert seg.f5_trailer == (None if trailer is None else parse_f5_trailer(trailer))
    ids = [(s.f5_trailer.flow_id, s.f5_trailer.peer_id) if s.f5_trailer else None for s in segs]
    assert ids == [
        (0, 0),
        (0xC1, 0x51),
        (0xC1, 0),
        (0xC2, 0x52),
        (0xC1, 0x51),
        None,
        None,
        (0xC3, 0x53),  # after the FCS
    ]
    t = segs[1].f5_trailer
    assert (t.format, t.ingress, t.slot, t.tmm) == ("dpt", False, 2, 2)
    assert t.peer_remote == Endpoint(bytes([198, 51, 100, 10]), 8080)
    assert (t.peer_remote_route_domain, t.peer_local_route_domain) == (3, None)
    assert segs[2].f5_trailer.virtual_server == "/Common/ws_vs"  # 802.1Q: general path
    assert segs[3].f5_trailer.format == "legacy"  # IPv6: general path


def test_reader_pcapng_fast_path(tmp_path):
    from scapy.utils import wrpcapng

    p = _frames()[1][0]
    path = tmp_path / "f5.pcapng"
    wrpcapng(str(path), [p])
    with open_capture(path) as reader:
        (seg,) = list(reader)
    assert seg.f5_trailer is not None and seg.f5_trailer.flow_id == 0xC1
    assert seg.payload == b"x" * 100


TSHARK = shutil.which("tshark")
TS_FIELDS = [
    "frame.number",
    "f5ethtrailer.flowid",
    "f5ethtrailer.peerid",
    "f5ethtrailer.vip",
    "f5ethtrailer.slot",
    "f5ethtrailer.tmm",
    "f5ethtrailer.ingress",
    "f5ethtrailer.peerremoteaddr",
    "f5ethtrailer.peerlocaladdr",
    "f5ethtrailer.peerremoteport",
    "f5ethtrailer.peerlocalport",
    "f5ethtrailer.peerremotertdom",
]


def _addr(ep: Endpoint | None) -> str:
    return ".".join(map(str, ep.ip)) if ep is not None and len(ep.ip) == 4 else ""


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed (CI installs it)")
def test_same_fields_as_tsharks_f5ethtrailer_dissector(crafted):
    path, _ = crafted
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "--enable-heuristic", "f5ethtrailer", "-T", "fields"]
        + [a for f in TS_FIELDS for a in ("-e", f)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    with open_capture(path) as reader:
        segs = list(reader)
    assert len(rows) == len(segs)
    for row, seg in zip(rows, segs, strict=True):
        t = seg.f5_trailer
        if t is None:
            assert row[1:] == [""] * (len(TS_FIELDS) - 1), row
            continue
        mine = [
            str(seg.packet),
            "" if t.flow_id is None else f"{t.flow_id:#018x}",
            "" if t.peer_id is None else f"{t.peer_id:#018x}",
            t.virtual_server or "",
            str(t.slot),
            str(t.tmm),
            str(int(t.ingress)),
            _addr(t.peer_remote),
            _addr(t.peer_local),
            "" if t.peer_remote is None else str(t.peer_remote.port),
            "" if t.peer_local is None else str(t.peer_local.port),
            "" if t.peer_remote_route_domain is None else str(t.peer_remote_route_domain),
        ]
        theirs = [v.split(",")[0] for v in row]  # tshark repeats a field per occurrence
        assert theirs == mine, seg.packet


# --- the TCP connection ---------------------------------------------------------------------


class _Sink:
    def data(self, *a):
        pass

    gap = fin = rst = end = data


def _seg(packet, src, sport, dst, dport, seq, ack, flags, payload=b"", trailer=None):
    return Segment(
        packet,
        packet * 1000,
        src,
        sport,
        dst,
        dport,
        seq,
        ack,
        flags,
        65535,
        payload,
        len(payload),
        trailer,
    )


def test_connection_keeps_the_first_non_zero_ids_fast_path_included():
    c, s = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])

    def tr(flow, peer):
        return F5Trailer("dpt", 40, flow_id=flow, peer_id=peer)

    r = TcpReassembler(lambda conn: _Sink())
    r.feed(_seg(1, c, 1000, s, 80, 100, 0, SYN, trailer=tr(0, 0)))  # ingress SYN: no flow yet
    r.feed(_seg(2, s, 80, c, 1000, 500, 101, SYN | ACK, trailer=tr(0xF1, 0)))
    r.feed(_seg(3, c, 1000, s, 80, 101, 501, ACK, trailer=None))  # a frame without a trailer
    (conn,) = r.connections
    assert (conn.f5_flow_id, conn.f5_peer_id) == (0xF1, None)
    r.feed(_seg(4, c, 1000, s, 80, 101, 501, PSH | ACK, b"GET", tr(0xF1, 0)))
    r.feed(_seg(5, c, 1000, s, 80, 104, 501, PSH | ACK, b"abc", tr(0xF1, 0x51)))  # fast path
    assert conn._halves[0].fast
    assert (conn.f5_flow_id, conn.f5_peer_id) == (0xF1, 0x51)
    r.feed(_seg(6, s, 80, c, 1000, 501, 107, PSH | ACK, b"x", tr(0xF9, 0x59)))  # first wins
    r.finish()
    assert (conn.f5_flow_id, conn.f5_peer_id) == (0xF1, 0x51)


def test_connection_without_trailers_has_no_ids():
    c, s = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    r = TcpReassembler(lambda conn: _Sink())
    r.feed(_seg(1, c, 1000, s, 80, 100, 0, SYN))
    r.feed(_seg(2, s, 80, c, 1000, 500, 101, SYN | ACK))
    r.finish()
    assert (r.connections[0].f5_flow_id, r.connections[0].f5_peer_id) == (None, None)


# --- pairing ----------------------------------------------------------------------------------

# Two clients of one URL through a proxy that rewrites Sec-WebSocket-Key, at the same time,
# exchanging the same messages: only the F5 ids tell which server-side leg is whose. The
# trailers pair client conversation 0 with server conversation 1 and 1 with 0 (the
# server-side ports are in the other order), so a pairing by anything else would differ.
CLIENT_FLOW = {0: 0x0000_7F10_0000_1000, 1: 0x0000_7F10_0000_2000}
SERVER_FLOW = {1: 0x0000_7F20_0000_1001, 0: 0x0000_7F20_0000_2001}
TWIN = {0: 1, 1: 0}  # client conversation -> server conversation, per the trailers


def _twin_conversations():
    msgs = [Msg("c2s", TEXT, b"hello"), Msg("s2c", TEXT, b"hello")]
    return [nginx_like(n, pass_key=False, start_us=0, delay_us=200, messages=msgs) for n in (0, 1)]


def _f5_legs(tmp_path, convs):
    """Both legs of ``convs`` with DPT trailers as a BIG-IP writes them, client
    conversation n paired with server conversation TWIN[n]: on the client side flow id 0
    on the client's SYN and the peer id from when the server-side connection exists; on
    the server side (the BIG-IP opens it) both ids from the first packet."""
    legs = [conv.build() for conv in convs]
    cpk: list = []
    spk: list = []
    for n, conv in enumerate(convs):
        m = TWIN[n]
        cpk += f5_leg(
            legs[n][0],
            CLIENT_FLOW[n],
            SERVER_FLOW[m],
            peer_from=t_us(conv.start_us + 100 + conv.delay_us),
            first_without_flow=True,
            ingress_src=conv.client[0],
        )
        spk += f5_leg(legs[m][1], SERVER_FLOW[m], CLIENT_FLOW[n], ingress_src=convs[m].server[0])
    return write_pcap(tmp_path / "client.pcap", cpk), write_pcap(tmp_path / "server.pcap", spk)


def test_without_trailers_the_twins_are_ambiguous(tmp_path):
    client, server = write_legs(tmp_path, _twin_conversations())
    a = wsanalyze.analyze(client, server, strict=True)
    assert len(a.pairs) == 0
    assert (a.findings["code"] == "pair_ambiguous").sum() == 2


def test_f5_peer_ids_pair_the_legs_exactly(tmp_path):
    convs = _twin_conversations()
    client, server = _f5_legs(tmp_path, convs)
    a = wsanalyze.analyze(client, server, strict=True)
    want = {
        f"{convs[n].client[0]}:{convs[n].client[1]}": "{}:{}".format(*convs[m].proxy_source)
        for n, m in TWIN.items()
    }
    assert {r["client"]: r["proxy_source"] for _, r in a.pairs.iterrows()} == want
    assert a.pairs["evidence"].str.contains("f5_peer_id").all()
    assert not (a.findings["code"] == "pair_ambiguous").any()
    # the ids reached the connections: client legs' flow ids, server legs' peer ids
    ids = {
        (c.role, c.tcp.f5_flow_id, c.tcp.f5_peer_id) for cap in a.captures for c in cap.connections
    }
    conns = a.connections.set_index("connection_id")
    assert str(conns["f5_flow_id"].dtype) == "UInt64"
    for cap in a.captures:
        for c in cap.connections:
            assert conns.loc[c.id, "f5_flow_id"] == c.tcp.f5_flow_id
            assert conns.loc[c.id, "f5_peer_id"] == c.tcp.f5_peer_id
    assert ids == {
        ("client", CLIENT_FLOW[0], SERVER_FLOW[1]),
        ("client", CLIENT_FLOW[1], SERVER_FLOW[0]),
        ("server", SERVER_FLOW[1], CLIENT_FLOW[0]),
        ("server", SERVER_FLOW[0], CLIENT_FLOW[1]),
    }


# --- pairing within ONE capture (tcpdump -i 0.0:nnn on the BIG-IP: both legs, one file) ----

# Three clients of one URL through a BIG-IP that rewrites Sec-WebSocket-Key, at the same
# time, exchanging the same messages; the trailers pair client conversation n with server
# conversation TWIN3[n], so that pairing by port or connection order would differ.
TWIN3 = {0: 2, 1: 0, 2: 1}
FLOW_C = {n: 0x0000_7F10_0000_1000 * (n + 1) for n in range(3)}
FLOW_S = {m: 0x0000_7F20_0000_0001 + 0x1000 * m for m in range(3)}


def _big_ip_capture(path, convs, twin, *, trailers=None, flow_c=FLOW_C, flow_s=FLOW_S):
    """Both legs of ``convs`` in ONE file, as ``tcpdump -i 0.0:nnn`` on the BIG-IP
    writes them: client conversation n's client leg crossed with server conversation
    ``twin[n]``'s server leg by their ids (client side: flow id 0 on the client's SYN,
    the peer id once the server-side flow exists; server side: both ids from its
    first packet, the BIG-IP having opened it). ``trailers[n]``: ``"dpt"`` (default),
    ``"legacy"``, ``"client-only"`` (the server leg without trailers) or None (no
    trailer on either leg)."""
    trailers = trailers or {}
    legs = [conv.build() for conv in convs]
    out: list = []
    for n, m in twin.items():
        kind = trailers.get(n, "dpt")
        conv, sconv = convs[n], convs[m]
        cpk, spk = legs[n][0], legs[m][1]
        if kind is not None:
            legacy = kind == "legacy"
            cpk = f5_leg(
                cpk,
                flow_c[n],
                flow_s[m],
                peer_from=t_us(sconv.start_us + 100 + sconv.delay_us),
                first_without_flow=True,
                ingress_src=conv.client[0],
                legacy=legacy,
            )
            if kind != "client-only":
                spk = f5_leg(spk, flow_s[m], flow_c[n], ingress_src=sconv.server[0], legacy=legacy)
        out += cpk + spk
    return write_pcap(path, out)


def _three_conversations(**kw):
    msgs = [Msg("c2s", TEXT, b"hello"), Msg("s2c", TEXT, b"hello")]
    return [
        nginx_like(n, pass_key=False, start_us=0, delay_us=200, messages=msgs, **kw)
        for n in range(3)
    ]


def _ep(addr: tuple[str, int]) -> str:
    return "{}:{}".format(*addr)


def _pairs_by_client(a) -> dict[str, tuple[str, str, str, str]]:
    return {
        r["client"]: (r["proxy_listener"], r["proxy_source"], r["server"], r["evidence"])
        for _, r in a.pairs.iterrows()
    }


def test_one_big_ip_capture_pairs_every_leg_on_the_f5_ids(tmp_path):
    convs = _three_conversations()
    path = _big_ip_capture(tmp_path / "bigip.pcap", convs, TWIN3, trailers={2: "legacy"})
    a = wsanalyze.analyze(path, strict=True)
    assert a.server is None and len(a.client.connections) == 6
    got = _pairs_by_client(a)
    assert set(got) == {_ep(c.client) for c in convs}
    for n, m in TWIN3.items():
        listener, source, server, evidence = got[_ep(convs[n].client)]
        # the client-side leg is the one to the virtual server, the server-side leg
        # the one from the BIG-IP's address to the pool member
        assert (listener, source, server) == (
            _ep(convs[n].listener),
            _ep(convs[m].proxy_source),
            _ep(convs[m].server),
        )
        ev = evidence.split(", ")
        assert ev[0] == "f5_peer_id" and "sec_websocket_key" not in ev  # the key was rewritten
    pairs = a.correlation.pairs
    assert all(len(p.matches) == 4 for p in pairs)  # hello both ways, and the closes
    for p in pairs:
        assert (p.client.tcp.f5_peer_id, p.server.tcp.f5_peer_id) == (
            p.server.tcp.f5_flow_id,
            p.client.tcp.f5_flow_id,
        )
        changes = {(h.message, h.change, h.name.lower()) for h in p.header_changes}
        assert ("request", "modified", "sec-websocket-key") in changes
        assert ("request", "added", "x-forwarded-for") in changes
    assert a.correlation.unpaired_client == []
    assert not (a.findings["code"] == "pair_ambiguous").any()
    # Each leg's side is also what its trailers' ingress flags say.
    assert [f5_client_side(p.client.tcp) for p in pairs] == [True] * 3
    assert [f5_client_side(p.server.tcp) for p in pairs] == [False] * 3


def test_ingress_flags_decide_the_sides_against_causality(tmp_path):
    """When causality misleads (OneConnect reusing a server-side connection opened
    earlier, clocks of two TMMs), the trailers' ingress flags still tell the sides."""
    convs = _three_conversations()
    path = _big_ip_capture(tmp_path / "bigip.pcap", convs, TWIN3)
    a = wsanalyze.analyze(path, strict=True)
    c, s = a.correlation.pairs[0].client, a.correlation.pairs[0].server
    assert correlate._f5_client_side_first(c, s) and not correlate._f5_client_side_first(s, c)
    # Same legs with the clock of causality reversed: the ingress flags still decide.
    c.requests[0], s.requests[0] = (
        replace(c.requests[0], ts_ns=s.requests[0].ts_ns + 1),
        replace(s.requests[0], ts_ns=c.requests[0].ts_ns),
    )
    assert correlate._f5_client_side_first(c, s)
    c.tcp.f5_ingress = s.tcp.f5_ingress = None  # without flags: causality (now reversed)
    assert not correlate._f5_client_side_first(c, s)


def test_one_big_ip_capture_pairs_plain_http_and_a_dropped_key(tmp_path):
    """No Sec-WebSocket-Key in common at all: a plain GET (no Upgrade), and a
    WebSocket whose server-side request carries no key (a proxy that drops it)."""
    convs = _three_conversations()[:2]
    plain = convs[0]
    plain.client_headers = [("Host", "192.0.2.1"), ("Accept", "*/*")]
    plain.server_headers = [("Host", "192.0.2.1"), ("Accept", "*/*"), ("X-Forwarded-For", "x")]
    plain.status, plain.reason, plain.target = 200, "OK", "/index.html"
    plain.server_response = plain.client_response = [("Content-Length", "0")]
    dropped = convs[1]
    dropped.server_headers = [h for h in dropped.server_headers if h[0] != "Sec-WebSocket-Key"]
    path = _big_ip_capture(tmp_path / "bigip.pcap", convs, {0: 1, 1: 0})
    a = wsanalyze.analyze(path)
    got = _pairs_by_client(a)
    assert {c: v[1] for c, v in got.items()} == {
        _ep(convs[0].client): _ep(convs[1].proxy_source),
        _ep(convs[1].client): _ep(convs[0].proxy_source),
    }
    assert all(v[3].startswith("f5_peer_id") for v in got.values())


def test_a_leg_without_trailers_falls_back_to_the_key(tmp_path):
    """Conversation 0: F5 ids on both legs, key rewritten. Conversation 1: trailers on
    the client leg only (its ids match nothing), the key passed through: paired by
    the key. Conversation 2: no trailer at all, key passed: paired by the key."""
    msgs = [Msg("c2s", TEXT, b"hello"), Msg("s2c", TEXT, b"hello")]
    convs = [
        nginx_like(n, pass_key=n > 0, start_us=0, delay_us=200, messages=msgs) for n in range(3)
    ]
    twin = {0: 0, 1: 1, 2: 2}
    path = _big_ip_capture(
        tmp_path / "bigip.pcap", convs, twin, trailers={1: "client-only", 2: None}
    )
    a = wsanalyze.analyze(path, strict=True)
    got = _pairs_by_client(a)
    assert {c: v[1] for c, v in got.items()} == {_ep(c.client): _ep(c.proxy_source) for c in convs}
    ev = {c: v[3].split(", ") for c, v in got.items()}
    assert "f5_peer_id" in ev[_ep(convs[0].client)]
    assert "sec_websocket_key" not in ev[_ep(convs[0].client)]
    for conv in convs[1:]:
        assert ev[_ep(conv.client)][0] == "sec_websocket_key"
        assert "f5_peer_id" not in ev[_ep(conv.client)]


def test_f5_ids_that_match_nothing_pair_nothing(tmp_path):
    """Each leg names a peer that is not in the capture (and the key was rewritten):
    nothing pairs, nothing is guessed."""
    convs = _three_conversations()[:2]
    out: list = []
    for n, conv in enumerate(convs):
        cpk, spk = conv.build()
        out += f5_leg(cpk, FLOW_C[n], 0xDEAD_0000 + n, first_without_flow=True)
        out += f5_leg(spk, FLOW_S[n], 0xBEEF_0000 + n)
    a = wsanalyze.analyze(write_pcap(tmp_path / "bigip.pcap", out), strict=True)
    ids = {(c.tcp.f5_flow_id, c.tcp.f5_peer_id) for c in a.client.connections}
    assert len(ids) == 4 and None not in {i for pair in ids for i in pair}
    assert a.correlation is None and len(a.pairs) == 0


def test_mid_stream_capture_tells_the_client_side_by_the_messages(tmp_path):
    """Started mid-stream (no SYN, no handshake) and a server→client message first: the
    server-side legs appear first in the file, yet a client→server message is on the
    client-side leg first and a server→client one on the server-side leg first."""
    msgs = [Msg("s2c", TEXT, b"world")] + [Msg("c2s", TEXT, b"hello %d" % k) for k in range(3)]
    convs = [nginx_like(n, pass_key=False, start_us=0, delay_us=200, messages=msgs) for n in (0, 1)]
    path = _big_ip_capture(tmp_path / "full.pcap", convs, {0: 1, 1: 0})
    cut = t_us(1_000 + 400 + 5_000)  # after the handshakes, before the first message
    mid = write_pcap(tmp_path / "mid.pcap", [p for p in rdpcap(str(path)) if p.time >= cut])
    a = wsanalyze.analyze(mid)
    first = a.client.connections[0]
    assert first.handshake is None and str(first.tcp.client).startswith("198.51.100.1:")
    got = _pairs_by_client(a)
    assert {c: v[1] for c, v in got.items()} == {
        _ep(convs[0].client): _ep(convs[1].proxy_source),
        _ep(convs[1].client): _ep(convs[0].proxy_source),
    }
