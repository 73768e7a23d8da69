"""Tests for wsanalyze.tcp: TCP reassembly (RFC 9293) with a recording sink."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsanalyze.model import ACK, FIN, PSH, RST, SYN, Direction, Endpoint, Segment
from wsanalyze.tcp import TcpConnection, TcpReassembler

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
MASK = 0xFFFFFFFF

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])


class Recorder:
    """A StreamSink that records every call and checks the stream-order contract."""

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.events: list[tuple] = []
        self.next = {C2S: 0, S2C: 0}
        self.closed = {C2S: False, S2C: False}
        self.totals = {C2S: [0, 0], S2C: [0, 0]}  # data bytes, gap bytes (follow swaps)
        self.ended = False

    def _check(self, direction: Direction, offset: int) -> None:
        assert not self.ended, "call after end()"
        assert not self.closed[direction], "data after fin/rst"
        assert offset == self.next[direction], f"non-contiguous: {offset} != {self.next[direction]}"

    def data(self, direction, offset, data, ts_ns, packet):
        self._check(direction, offset)
        assert isinstance(data, bytes) and data
        self.next[direction] = offset + len(data)
        self.totals[direction][0] += len(data)
        self.events.append(("data", direction, offset, data, ts_ns, packet))

    def gap(self, direction, offset, length, ts_ns, packet):
        self._check(direction, offset)
        assert length > 0
        self.next[direction] = offset + length
        self.totals[direction][1] += length
        self.events.append(("gap", direction, offset, length, ts_ns, packet))

    def fin(self, direction, ts_ns, packet):
        assert not self.ended and not self.closed[direction]
        self.closed[direction] = True
        self.events.append(("fin", direction, ts_ns, packet))

    def rst(self, direction, ts_ns, packet):
        assert not self.ended
        self.closed[direction] = True
        self.events.append(("rst", direction, ts_ns, packet))

    def end(self, ts_ns):
        assert not self.ended, "end() twice"
        self.ended = True
        self.events.append(("end", ts_ns))

    def swap(self) -> None:
        """Follow TcpConnection.swap_roles(): later calls use the other labels."""
        self.next = {C2S: self.next[S2C], S2C: self.next[C2S]}
        self.closed = {C2S: self.closed[S2C], S2C: self.closed[C2S]}
        self.totals = {C2S: self.totals[S2C], S2C: self.totals[C2S]}

    # helpers
    def stream(self, direction: Direction) -> list[tuple]:
        """[(kind, offset, bytes-or-length)] for one direction."""
        return [
            (e[0], e[2], e[3]) for e in self.events if e[0] in ("data", "gap") and e[1] == direction
        ]

    def bytes(self, direction: Direction) -> bytes:
        out = []
        for kind, _, value in self.stream(direction):
            assert kind == "data", "unexpected gap"
            out.append(value)
        return b"".join(out)

    def kinds(self, direction: Direction | None = None) -> list[str]:
        return [e[0] for e in self.events if direction is None or e[1] == direction]


class Harness:
    """A reassembler whose connections record into :class:`Recorder` objects."""

    def __init__(self, **kwargs) -> None:
        self.sinks: list[Recorder] = []
        self.order: list[tuple] = []  # (conn index, event kind) across connections
        self.r = TcpReassembler(self._on_connection, **kwargs)

    def _on_connection(self, conn: TcpConnection) -> Recorder:
        rec = Recorder(conn)
        self.sinks.append(rec)
        return rec

    def feed(self, *segs: Segment) -> None:
        for s in segs:
            self.r.feed(s)

    def finish(self) -> None:
        self.r.finish()

    @property
    def conn(self) -> TcpConnection:
        assert len(self.sinks) == 1
        return self.sinks[0].conn

    @property
    def rec(self) -> Recorder:
        assert len(self.sinks) == 1
        return self.sinks[0]


class Flow:
    """Builds the segments of one connection; offsets are stream offsets."""

    def __init__(
        self, cisn: int = 1000, sisn: int = 900000, cport: int = 50000, sport: int = 80
    ) -> None:
        self.cisn, self.sisn = cisn, sisn
        self.cport, self.sport = cport, sport
        self.pkt = 0
        self.ts = 1_700_000_000_000_000_000

    def _seg(self, c2s, seq, ack, flags, payload, payload_len=None, ts=None):
        self.pkt += 1
        self.ts += 1000
        src, sp, dst, dp = (
            (CLIENT_IP, self.cport, SERVER_IP, self.sport)
            if c2s
            else (SERVER_IP, self.sport, CLIENT_IP, self.cport)
        )
        return Segment(
            packet=self.pkt,
            ts_ns=self.ts if ts is None else ts,
            src=src,
            sport=sp,
            dst=dst,
            dport=dp,
            seq=seq & MASK,
            ack=ack & MASK,
            flags=flags,
            window=65535,
            payload=payload,
            payload_len=len(payload) if payload_len is None else payload_len,
        )

    def syn(self):
        return self._seg(True, self.cisn, 0, SYN, b"")

    def synack(self):
        return self._seg(False, self.sisn, self.cisn + 1, SYN | ACK, b"")

    def hs_ack(self):
        return self._seg(True, self.cisn + 1, self.sisn + 1, ACK, b"")

    def handshake(self):
        return [self.syn(), self.synack(), self.hs_ack()]

    def c(self, off, data=b"", flags=ACK | PSH, ack=0, payload_len=None):
        """Client segment at stream offset ``off``; ``ack`` is a server stream offset."""
        return self._seg(True, self.cisn + 1 + off, self.sisn + 1 + ack, flags, data, payload_len)

    def s(self, off, data=b"", flags=ACK | PSH, ack=0, payload_len=None):
        return self._seg(False, self.sisn + 1 + off, self.cisn + 1 + ack, flags, data, payload_len)


def codes(conn: TcpConnection) -> list[str]:
    return [f.code for f in conn.findings]


# --- basic behaviour --------------------------------------------------------


def test_in_order_handshake_roles_and_rtt():
    h, f = Harness(), Flow()
    syn, synack, ack = f.handshake()
    h.feed(syn, synack, ack)
    h.feed(f.c(0, b"GET / HTTP/1.1\r\n"), f.c(16, b"\r\n"))
    h.feed(f.s(0, b"HTTP/1.1 101 OK\r\n\r\n", ack=18))
    fin_c = f.c(18, flags=FIN | ACK, ack=19)
    fin_s = f.s(19, flags=FIN | ACK, ack=19)
    h.feed(fin_c, fin_s, f.c(19, flags=ACK, ack=20))
    h.finish()
    conn, rec = h.conn, h.rec
    assert conn.index == 1
    assert conn.client == Endpoint(CLIENT_IP, 50000)
    assert conn.server == Endpoint(SERVER_IP, 80)
    assert conn.syn_seen and not conn.mid_stream
    assert conn.isn == (1000, 900000)
    assert conn.syn_ts_ns == syn.ts_ns
    assert conn.synack_ts_ns == synack.ts_ns
    assert conn.ack_ts_ns == ack.ts_ns
    assert conn.rtt_ns == ack.ts_ns - syn.ts_ns
    assert conn.first_packet == 1 and conn.first_ts_ns == syn.ts_ns
    assert conn.last_ts_ns == f.ts
    assert rec.bytes(C2S) == b"GET / HTTP/1.1\r\n\r\n"
    assert rec.bytes(S2C) == b"HTTP/1.1 101 OK\r\n\r\n"
    assert conn.bytes == (18, 19)
    assert conn.packets == (6, 3)
    assert conn.fin_packet == (fin_c.packet, fin_s.packet)
    assert conn.fin_ts_ns == (fin_c.ts_ns, fin_s.ts_ns)
    assert conn.rst_packet == (None, None)
    assert conn.retransmissions == (0, 0) and conn.gaps == (0, 0)
    assert rec.kinds(C2S) == ["data", "data", "fin"]
    assert rec.events[-1] == ("end", conn.last_ts_ns)
    assert conn.findings == []
    assert conn.ended


def test_data_call_carries_packet_and_time():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    seg = f.c(0, b"abc")
    h.feed(seg)
    assert h.rec.events[-1] == ("data", C2S, 0, b"abc", seg.ts_ns, seg.packet)


def test_reordering_is_delivered_in_order():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    a, b, c = f.c(0, b"aaaa"), f.c(4, b"bbbb"), f.c(8, b"cc")
    h.feed(c, a)
    assert h.rec.bytes(C2S) == b"aaaa"  # c waits for b
    h.feed(b)
    h.finish()
    assert h.rec.bytes(C2S) == b"aaaabbbbcc"
    assert [e[5] for e in h.rec.events if e[0] == "data"] == [a.packet, b.packet, c.packet]
    assert h.conn.gaps == (0, 0) and h.conn.retransmissions == (0, 0)


def test_duplicate_segments_count_as_retransmissions():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    a = f.c(0, b"hello")
    dup = f.c(0, b"hello")
    h.feed(a, dup, f.c(5, b"!"))
    h.finish()
    assert h.rec.bytes(C2S) == b"hello!"
    assert h.conn.retransmissions == (1, 0)
    found = [x for x in h.conn.findings if x.code == "tcp_retransmission"]
    assert len(found) == 1 and dup.packet in found[0].packets
    assert "1 retransmitted" in found[0].detail


def test_overlap_with_equal_bytes_is_not_a_conflict():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"abcdef"), f.c(3, b"defghi"))
    h.finish()
    assert h.rec.bytes(C2S) == b"abcdefghi"
    assert "tcp_overlap_conflict" not in codes(h.conn)
    assert h.conn.retransmissions == (1, 0)


def test_overlap_with_different_bytes_first_copy_wins():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    first = f.c(0, b"abcdef")
    second = f.c(2, b"cdXfgh")
    h.feed(first, second)
    h.finish()
    assert h.rec.bytes(C2S) == b"abcdefgh"  # first copy kept, new tail appended
    conflicts = [x for x in h.conn.findings if x.code == "tcp_overlap_conflict"]
    assert len(conflicts) == 1
    assert conflicts[0].offset == 4
    assert conflicts[0].packets == (first.packet, second.packet)
    assert conflicts[0].direction == C2S


def test_conflict_against_buffered_out_of_order_copy():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    late = f.c(4, b"WXYZ")
    other = f.c(4, b"WXyZ")
    h.feed(late, other, f.c(0, b"0123"))
    h.finish()
    assert h.rec.bytes(C2S) == b"0123WXYZ"
    (conflict,) = [x for x in h.conn.findings if x.code == "tcp_overlap_conflict"]
    assert conflict.offset == 6 and conflict.packets == (late.packet, other.packet)


def test_conflict_outside_recent_window_is_not_detected():
    h, f = Harness(recent_window=8), Flow()
    h.feed(*f.handshake())
    for i in range(10):
        h.feed(f.c(i * 4, b"%04d" % i))
    h.feed(f.c(0, b"XXXX"))  # long gone from the 8..16-byte window
    h.finish()
    assert h.rec.bytes(C2S) == b"".join(b"%04d" % i for i in range(10))
    assert "tcp_overlap_conflict" not in codes(h.conn)
    assert h.conn.retransmissions == (1, 0)


def test_gap_declared_when_peer_acknowledges_past_the_hole():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"aaaa"))
    _lost = f.c(4, b"bbbb")
    after = f.c(8, b"cccc")
    h.feed(after)
    assert h.rec.stream(C2S) == [("data", 0, b"aaaa")]
    ack = f.s(0, flags=ACK, ack=12)  # server got everything
    h.feed(ack)
    assert h.rec.stream(C2S) == [("data", 0, b"aaaa"), ("gap", 4, 4), ("data", 8, b"cccc")]
    gap_event = [e for e in h.rec.events if e[0] == "gap"][0]
    assert gap_event[5] == after.packet
    (gap,) = [x for x in h.conn.findings if x.code == "tcp_gap"]
    assert gap.offset == 4 and gap.direction == C2S
    assert gap.packets == (4, after.packet)  # the packet before and after the gap
    assert h.conn.gaps == (1, 0) and h.conn.gap_bytes == (4, 0)
    assert h.conn.bytes == (8, 0)


def test_partial_ack_declares_only_the_acknowledged_part():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(8, b"cccc"))  # bytes 0..8 missing
    h.feed(f.s(0, flags=ACK, ack=3))
    assert h.rec.stream(C2S) == [("gap", 0, 3)]
    h.feed(f.c(3, b"defgh"))  # the rest was only delayed
    assert h.rec.stream(C2S) == [("gap", 0, 3), ("data", 3, b"defgh"), ("data", 8, b"cccc")]


def test_gap_at_finish():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"aa"), f.c(10, b"zz"))
    assert h.rec.stream(C2S) == [("data", 0, b"aa")]
    h.finish()
    assert h.rec.stream(C2S) == [("data", 0, b"aa"), ("gap", 2, 8), ("data", 10, b"zz")]
    assert h.rec.kinds()[-1] == "end"
    assert codes(h.conn).count("tcp_gap") == 1


def test_pending_buffer_bound_segments():
    h, f = Harness(max_pending_segments=3), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"a"))
    for i in range(2, 6):
        h.feed(f.c(i, bytes([65 + i])))
    # 4 segments pending > 3: the hole at 1 became a gap before the end of capture
    assert h.rec.stream(C2S) == [
        ("data", 0, b"a"),
        ("gap", 1, 1),
        ("data", 2, b"C"),
        ("data", 3, b"D"),
        ("data", 4, b"E"),
        ("data", 5, b"F"),
    ]
    assert not h.rec.ended


def test_pending_buffer_bound_bytes():
    h, f = Harness(max_pending_bytes=100), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(10, b"x" * 60))
    assert h.rec.stream(C2S) == []
    h.feed(f.c(70, b"y" * 60))
    assert h.rec.stream(C2S) == [("gap", 0, 10), ("data", 10, b"x" * 60), ("data", 70, b"y" * 60)]


def test_sequence_wraparound():
    h, f = Harness(), Flow(cisn=2**32 - 10, sisn=2**32 - 1)
    h.feed(*f.handshake())
    data = bytes(range(100))
    segs = [f.c(i, data[i : i + 7]) for i in range(0, 100, 7)]
    rnd = random.Random(7)
    rnd.shuffle(segs)
    h.feed(*segs)
    h.feed(f.s(0, b"server bytes", ack=100))
    h.finish()
    assert h.rec.bytes(C2S) == data
    assert h.rec.bytes(S2C) == b"server bytes"
    assert h.conn.isn == (2**32 - 10, 2**32 - 1)
    assert h.conn.gaps == (0, 0)


def test_long_stream_crosses_2_32_offsets_unwrapped():
    h, f = Harness(), Flow(cisn=5)
    h.feed(*f.handshake())
    # 5 GiB of stream through gaps declared by ACKs: offsets are 64-bit
    step = 1 << 30
    for k in range(1, 6):
        h.feed(f.c(k * step - 1, b"z"))
        h.feed(f.s(0, flags=ACK, ack=k * step))  # the server got everything up to here
    h.finish()
    stream = h.rec.stream(C2S)
    assert stream[-2:] == [("gap", 4 * step, step - 1), ("data", 5 * step - 1, b"z")]
    assert h.conn.gap_bytes == (5 * step - 5, 0) and h.conn.bytes == (5, 0)


def test_mid_stream_roles_guessed_by_port():
    h, f = Harness(), Flow(cport=50000, sport=443)
    first = f.s(0, b"server speaks first")  # first packet from the server
    h.feed(first, f.c(0, b"client"))
    h.finish()
    conn = h.conn
    assert conn.mid_stream and not conn.syn_seen
    assert conn.server == Endpoint(SERVER_IP, 443)
    assert conn.client == Endpoint(CLIENT_IP, 50000)
    assert conn.isn == (None, None)
    assert h.rec.bytes(S2C) == b"server speaks first"
    assert h.rec.bytes(C2S) == b"client"
    (mid,) = [x for x in conn.findings if x.code == "tcp_connection_mid_stream"]
    assert mid.packets == (first.packet,)
    assert conn.rtt_ns is None


def test_mid_stream_equal_ports_destination_is_server():
    h, f = Harness(), Flow(cport=7000, sport=7000)
    h.feed(f.s(0, b"x"))  # sent by SERVER_IP: its destination becomes the server
    assert h.conn.server == Endpoint(CLIENT_IP, 7000)
    assert h.rec.bytes(C2S) == b"x"


def test_mid_stream_pure_ack_does_not_set_offset_zero():
    h, f = Harness(), Flow()
    h.feed(f.c(100, flags=ACK))  # no bytes: offset 0 is still unknown
    h.feed(f.c(40, b"q" * 60), f.c(100, b"rest"))
    h.finish()
    assert h.rec.stream(C2S) == [("data", 0, b"q" * 60), ("data", 60, b"rest")]
    assert h.conn.gaps == (0, 0) and h.conn.retransmissions == (0, 0)


def test_mid_stream_fin_or_rst_first():
    h, f = Harness(), Flow()
    h.feed(f.c(100, flags=ACK | FIN), f.c(0, b"x" * 100))
    h.finish()
    assert h.rec.kinds(C2S) == ["fin"]  # offset 0 at the FIN: nothing can follow it
    h2, f2 = Harness(), Flow()
    h2.feed(f2.c(100, b"z", flags=RST | ACK))
    assert h2.rec.stream(C2S) == [("data", 0, b"z")] and h2.rec.kinds(C2S)[-1] == "rst"


def test_mid_stream_out_of_order_first_data_waits_behind_peer_ack():
    h, f = Harness(), Flow(cport=50000, sport=443)
    h.feed(f.s(0, flags=ACK, ack=0))  # the server acknowledges client offset 0
    h.feed(f.c(10, b"second"))  # ahead of the acknowledged point: a hole before it
    assert h.rec.stream(C2S) == []
    h.feed(f.c(0, b"first-----"))
    h.finish()
    assert h.rec.bytes(C2S) == b"first-----second"
    assert h.conn.gaps == (0, 0)


def test_mid_stream_hole_after_peer_ack_becomes_gap_at_offset_zero():
    h, f = Harness(), Flow(cport=50000, sport=443)
    h.feed(f.s(0, flags=ACK, ack=0), f.c(10, b"second"))
    h.feed(f.s(0, flags=ACK, ack=16))  # the server got bytes 0..10: the capture lost them
    assert h.rec.stream(C2S) == [("gap", 0, 10), ("data", 10, b"second")]


def test_mid_stream_skips_bytes_the_peer_already_acknowledged():
    h, f = Harness(), Flow(cport=50000, sport=443)
    h.feed(f.s(0, flags=ACK, ack=50))
    h.feed(f.c(49, b"\x00"))  # a 1-byte keep-alive at the acknowledged point - 1
    h.feed(f.c(40, b"0123456789abc"))  # a retransmission straddling it
    h.finish()
    assert h.rec.stream(C2S) == [("data", 0, b"abc")]
    assert h.conn.retransmissions == (1, 0)


def test_synack_first_sets_roles_and_client_offsets():
    h, f = Harness(), Flow()
    h.feed(f.synack(), f.hs_ack(), f.c(0, b"hi"))
    h.finish()
    conn = h.conn
    assert not conn.mid_stream and not conn.syn_seen
    assert conn.client == Endpoint(CLIENT_IP, 50000)
    assert conn.isn == (1000, 900000)
    assert h.rec.bytes(C2S) == b"hi"
    assert "tcp_connection_mid_stream" not in codes(conn)


def test_fin_each_side_and_fin_waits_for_earlier_data():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    fin = f.c(4, b"tail", flags=FIN | ACK)
    h.feed(fin)
    assert h.rec.kinds(C2S) == []  # waits for bytes 0..4
    h.feed(f.c(0, b"head"))
    assert h.rec.kinds(C2S) == ["data", "data", "fin"]
    assert h.rec.events[-1] == ("fin", C2S, fin.ts_ns, fin.packet)
    sfin = f.s(0, flags=FIN | ACK, ack=9)
    h.feed(sfin, f.c(9, flags=ACK, ack=1))
    assert h.rec.kinds(S2C) == ["fin"]
    # a retransmitted FIN is not delivered twice
    h.feed(f.s(0, flags=FIN | ACK, ack=9))
    h.finish()
    assert h.rec.kinds(S2C) == ["fin"]
    assert h.conn.retransmissions == (0, 1)
    assert h.rec.bytes(C2S) == b"headtail"


def test_fin_after_lost_data_acknowledged_gives_gap_then_fin():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"ab"), f.c(4, flags=FIN | ACK))  # bytes 2..4 lost
    assert h.rec.kinds(C2S) == ["data"]
    h.feed(f.s(0, flags=ACK, ack=5))  # the FIN is acknowledged
    assert h.rec.stream(C2S) == [("data", 0, b"ab"), ("gap", 2, 2)]
    assert h.rec.kinds(C2S)[-1] == "fin"


def test_rst_flushes_pending_and_is_reported():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(0, b"a"), f.c(5, b"f"))
    rst = f.c(6, flags=RST)
    h.feed(rst)
    assert h.rec.stream(C2S) == [("data", 0, b"a"), ("gap", 1, 4), ("data", 5, b"f")]
    assert h.rec.kinds(C2S)[-1] == "rst"
    assert h.conn.rst_packet == (rst.packet, None)
    assert h.conn.rst_ts_ns == (rst.ts_ns, None)
    (r,) = [x for x in h.conn.findings if x.code == "tcp_rst"]
    assert r.packets == (rst.packet,) and r.direction == C2S
    h.feed(f.c(6, b"late"), f.c(6, flags=RST))  # ignored after the RST
    h.finish()
    assert h.rec.kinds(C2S).count("rst") == 1
    assert h.rec.kinds(C2S)[-1] == "rst"
    assert h.rec.stream(C2S)[-1] == ("data", 5, b"f")  # nothing after the RST


def test_four_tuple_reuse_after_fin_starts_new_connection():
    h, f = Harness(), Flow()
    h.feed(*f.handshake(), f.c(0, b"one"))
    h.feed(f.c(3, flags=FIN | ACK), f.s(0, flags=FIN | ACK, ack=4), f.c(4, flags=ACK, ack=1))
    f2 = Flow(cisn=777777)
    f2.pkt, f2.ts = f.pkt, f.ts
    syn2 = f2.syn()
    h.feed(syn2, f2.synack(), f2.hs_ack(), f2.c(0, b"two"))
    h.finish()
    assert len(h.sinks) == 2
    first, second = h.sinks
    assert first.conn.index == 1 and second.conn.index == 2
    assert first.bytes(C2S) == b"one" and second.bytes(C2S) == b"two"
    assert first.events[-1] == ("end", first.conn.last_ts_ns)
    assert first.conn.last_ts_ns < syn2.ts_ns  # ended before the new SYN was processed
    assert second.conn.first_packet == syn2.packet
    assert second.conn.isn[0] == 777777
    assert h.r.connections == [first.conn, second.conn]


def test_retransmitted_syn_is_not_a_new_connection():
    h, f = Harness(), Flow()
    h.feed(f.syn(), f.syn(), f.synack(), f.hs_ack(), f.c(0, b"x"))
    h.finish()
    assert len(h.sinks) == 1
    assert h.conn.retransmissions == (1, 0)
    assert h.rec.bytes(C2S) == b"x"


def test_new_isn_without_fin_is_a_new_connection():
    h, f = Harness(), Flow()
    h.feed(*f.handshake(), f.c(0, b"old"))
    f2 = Flow(cisn=3_000_000_000)
    f2.pkt, f2.ts = f.pkt, f.ts
    h.feed(f2.syn(), f2.synack(), f2.hs_ack(), f2.c(0, b"new"))
    h.finish()
    assert [s.bytes(C2S) for s in h.sinks] == [b"old", b"new"]
    assert all(s.ended for s in h.sinks)


def test_snaplen_cut_segment_is_data_then_gap():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    cut = f.c(0, b"abcd", payload_len=10)
    h.feed(cut, f.c(10, b"next"))
    h.finish()
    assert h.rec.stream(C2S) == [("data", 0, b"abcd"), ("gap", 4, 6), ("data", 10, b"next")]
    gap = [e for e in h.rec.events if e[0] == "gap"][0]
    assert gap[5] == cut.packet
    assert h.conn.gap_bytes == (6, 0) and h.conn.bytes == (8, 0)


def test_snaplen_cut_out_of_order_segment():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.feed(f.c(4, b"ef", payload_len=4), f.c(0, b"abcd"), f.c(8, b"ij"))
    h.finish()
    assert h.rec.stream(C2S) == [
        ("data", 0, b"abcd"),
        ("data", 4, b"ef"),
        ("gap", 6, 2),
        ("data", 8, b"ij"),
    ]


def test_keepalive_probes_create_no_gap_or_conflict():
    h, f = Harness(), Flow()
    h.feed(*f.handshake(), f.c(0, b"data"))
    h.feed(f.c(3, flags=ACK), f.c(3, b"\x00", flags=ACK))  # keep-alives at seq - 1
    h.feed(f.s(0, flags=ACK, ack=4), f.c(4, b"more"))
    h.finish()
    assert h.rec.bytes(C2S) == b"datamore"
    assert h.conn.findings == []
    assert h.conn.packets[0] == 6


def test_swap_roles_after_wrong_guess():
    h, f = Harness(), Flow(cport=9000, sport=8080)
    # the side on port 8080 sends a request: it is the client, but the guess (lower
    # port = server) made it the server
    h.feed(f.s(0, b"GET / HTTP/1.1\r\n\r\n"))
    conn = h.conn
    assert conn.server == Endpoint(SERVER_IP, 8080)
    assert h.rec.events[-1][1] == S2C
    conn.swap_roles()
    h.rec.swap()
    assert conn.client == Endpoint(SERVER_IP, 8080)
    assert conn.server == Endpoint(CLIENT_IP, 9000)
    h.feed(f.s(18, b"more"), f.c(0, b"HTTP/1.1 200 OK\r\n\r\n"))
    h.finish()
    later = [e for e in h.rec.events if e[0] == "data"][1:]
    assert later[0][1:4] == (C2S, 18, b"more")
    assert later[1][1:4] == (S2C, 0, b"HTTP/1.1 200 OK\r\n\r\n")
    assert conn.packets == (2, 1)
    assert conn.bytes == (22, 19)
    assert len([x for x in conn.findings if x.code == "tcp_connection_mid_stream"]) == 1


def test_swap_roles_flips_finding_directions_and_pending_state():
    h, f = Harness(), Flow(cport=9000, sport=8080)
    h.feed(f.s(0, b"GET "), f.s(10, b"later"))  # a hole at 4..10 in the guessed S2C
    conn = h.conn
    conn.swap_roles()
    h.rec.swap()
    h.feed(f.c(0, flags=ACK, ack=15))  # the (new) server acknowledges past the hole
    h.finish()
    assert h.rec.stream(C2S) == [("gap", 4, 6), ("data", 10, b"later")]
    (gap,) = [x for x in conn.findings if x.code == "tcp_gap"]
    assert gap.direction == C2S and gap.offset == 4
    assert conn.gaps == (1, 0)


def test_many_gaps_are_summarised():
    h, f = Harness(max_findings=3), Flow()
    h.feed(*f.handshake())
    for i in range(10):
        h.feed(f.c(i * 2, b"x"))  # every other byte lost
    h.finish()
    gaps = [x for x in h.conn.findings if x.code == "tcp_gap"]
    assert len(gaps) == 4  # 3 listed + 1 summary
    assert "9 gaps" in gaps[-1].detail
    assert h.conn.gaps == (9, 0)


def test_ipv6_endpoints_and_many_connections():
    h = Harness()
    for i in range(5):
        ip_c = bytes(15) + bytes([1])
        ip_s = bytes(15) + bytes([2])
        base = dict(ts_ns=i, dst=ip_s, dport=443, ack=0, window=1, payload_len=0)
        h.feed(
            Segment(packet=i + 1, src=ip_c, sport=40000 + i, seq=i, flags=SYN, payload=b"", **base)
        )
    h.finish()
    assert [s.conn.index for s in h.sinks] == [1, 2, 3, 4, 5]
    assert str(h.sinks[0].conn.server) == "[::2]:443"
    assert all(s.ended for s in h.sinks)


def test_finish_is_idempotent():
    h, f = Harness(), Flow()
    h.feed(*f.handshake())
    h.finish()
    h.finish()
    assert h.rec.kinds() == ["end"]


# --- properties -------------------------------------------------------------


def _cuts(draw, n: int) -> list[tuple[int, int]]:
    points = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=20))) - {n})
    bounds = [0, *points, n]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@st.composite
def stream_and_segments(draw):
    data = draw(st.binary(min_size=1, max_size=400))
    segs = _cuts(draw, len(data))
    isn = draw(st.sampled_from([0, 1000, 2**32 - 1, 2**32 - 50, 2**31]))
    return data, segs, isn


def _feed_stream(h, f, data, ranges, order_seed, dup_idx=(), extra=()):
    h.feed(*f.handshake())
    segs = [f.c(a, data[a:b]) for a, b in ranges]
    segs += [f.c(ranges[i][0], data[ranges[i][0] : ranges[i][1]]) for i in dup_idx]
    segs += [f.c(a, data[a:b]) for a, b in extra if b > a]  # re-packetised copies
    random.Random(order_seed).shuffle(segs)
    h.feed(*segs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_segments(), st.integers(), st.data())
def test_property_permutation_and_duplication_yield_the_stream(sd, seed, extra):
    data, ranges, isn = sd
    dups = extra.draw(st.lists(st.integers(0, len(ranges) - 1), max_size=10))
    n = len(data)
    overlaps = extra.draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=5))
    h, f = Harness(), Flow(cisn=isn)
    _feed_stream(h, f, data, ranges, seed, dups, overlaps)
    h.feed(f.c(len(data), flags=FIN | ACK))
    h.finish()
    assert h.rec.bytes(C2S) == data
    assert h.conn.gaps == (0, 0)
    assert h.rec.kinds(C2S)[-1] == "fin"
    assert "tcp_overlap_conflict" not in codes(h.conn)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_segments(), st.integers(), st.data())
def test_property_dropped_segments_become_exact_gaps(sd, seed, extra):
    data, ranges, isn = sd
    drop = extra.draw(st.sets(st.integers(0, len(ranges) - 1)))
    kept = [r for i, r in enumerate(ranges) if i not in drop]
    h, f = Harness(), Flow(cisn=isn)
    _feed_stream(h, f, data, kept, seed)
    h.feed(f.c(len(data), flags=FIN | ACK))
    h.finish()
    # expected: maximal runs of dropped bytes are gaps, everything else is data
    missing = bytearray(len(data))
    for i in drop:
        a, b = ranges[i]
        missing[a:b] = b"\x01" * (b - a)
    got = bytearray(len(data))
    got_missing = bytearray(len(data))
    expected_gaps = []
    pos = 0
    while pos < len(data):
        if missing[pos]:
            end = pos
            while end < len(data) and missing[end]:
                end += 1
            expected_gaps.append((pos, end - pos))
            pos = end
        else:
            pos += 1
    gaps = []
    for kind, off, value in h.rec.stream(C2S):
        if kind == "gap":
            gaps.append((off, value))
            got_missing[off : off + value] = b"\x01" * value
        else:
            got[off : off + len(value)] = value
    assert gaps == expected_gaps
    assert got_missing == missing
    for i, (a, b) in enumerate(ranges):
        if i not in drop:
            assert bytes(got[a:b]) == data[a:b]
    assert h.conn.gap_bytes == (sum(n for _, n in expected_gaps), 0)
    assert h.rec.kinds(C2S)[-1] == "fin"


_ENDPOINTS = [(CLIENT_IP, 1000), (SERVER_IP, 80), (CLIENT_IP, 80)]


@st.composite
def soup_segment(draw):
    src = draw(st.sampled_from(_ENDPOINTS))
    dst = draw(st.sampled_from(_ENDPOINTS))
    payload = draw(st.binary(max_size=30))
    cut = draw(st.integers(0, 5))
    seq = draw(
        st.one_of(
            st.integers(0, 2**32 - 1),
            st.integers(0, 200),
            st.integers(2**32 - 100, 2**32 - 1),
        )
    )
    ack = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 300)))
    return (
        src,
        dst,
        seq,
        ack,
        draw(st.integers(0, 0x3F)),
        payload,
        len(payload) + draw(st.sampled_from([0, 0, 0, cut])),
        draw(st.integers(0, 2**40)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(soup_segment(), max_size=60),
    st.integers(1, 8),
    st.sets(st.integers(0, 59), max_size=3),
)
def test_property_segment_soup_never_raises(parts, bound, swaps):
    h = Harness(max_pending_segments=bound, max_pending_bytes=bound * 10, recent_window=16)
    for i, (src, dst, seq, ack, flags, payload, plen, ts) in enumerate(parts):
        if i in swaps and h.sinks and not h.sinks[-1].ended:
            h.sinks[-1].conn.swap_roles()
            h.sinks[-1].swap()
        h.feed(
            Segment(
                packet=i + 1,
                ts_ns=ts,
                src=src[0],
                sport=src[1],
                dst=dst[0],
                dport=dst[1],
                seq=seq,
                ack=ack,
                flags=flags,
                window=0,
                payload=payload,
                payload_len=plen,
            )
        )
    h.finish()
    # the Recorder checked contiguity and ordering on every call
    assert all(s.ended for s in h.sinks)
    for s in h.sinks:
        for d in (C2S, S2C):
            assert s.conn.bytes[d] == s.totals[d][0]
            assert s.conn.gap_bytes[d] == s.totals[d][1]
    assert [c.index for c in h.r.connections] == list(range(1, len(h.sinks) + 1))


@pytest.mark.parametrize("isn", [0, 2**32 - 1, 2**32 - 10])
def test_server_stream_wraps_with_acks(isn):
    h, f = Harness(), Flow(sisn=isn)
    h.feed(*f.handshake())
    h.feed(f.s(0, b"0123456789"), f.c(0, flags=ACK, ack=10), f.s(10, b"abc"))
    h.finish()
    assert h.rec.bytes(S2C) == b"0123456789abc"


# --- releasing empty connections (bounded memory) -----------------------------------------


class Releasing(Harness):
    """A harness whose reassembler releases empty connections into ``released``."""

    def __init__(self, **kwargs) -> None:
        self.released: list[TcpConnection] = []
        super().__init__(on_release=self.released.append, **kwargs)


def _close_both(f: Flow, c_off: int = 0, s_off: int = 0) -> list[Segment]:
    return [
        f.c(c_off, flags=FIN | ACK, ack=s_off),
        f.s(s_off, flags=FIN | ACK, ack=c_off + 1),
        f.c(c_off + 1, flags=ACK, ack=s_off + 1),  # the last ACK
    ]


def test_an_empty_connection_is_released_when_both_fins_are_delivered():
    h = Releasing()
    f = Flow()
    h.feed(*f.handshake())
    fin_c, fin_s, last_ack = _close_both(f)
    h.feed(fin_c)
    assert h.released == [] and h.r.connections == [h.conn]
    h.feed(fin_s)
    (conn,) = h.released
    assert conn.ended and h.rec.kinds() == ["fin", "fin", "end"]
    assert h.r.connections == [] and h.r.released == 1
    h.feed(last_ack, f.c(1, flags=ACK, ack=1))  # trailing packets: no new connection
    assert len(h.sinks) == 1
    # port reuse: a SYN on the released 4-tuple is a new connection
    g = Flow(cisn=777777)
    h.feed(g.syn(), g.synack(), g.hs_ack(), g.c(0, b"GET"))
    assert len(h.sinks) == 2 and h.sinks[1].conn.index == 2
    assert h.sinks[1].bytes(C2S) == b"GET" and h.r.connections == [h.sinks[1].conn]
    h.finish()
    assert h.r.released == 1 and h.sinks[1].ended


def test_a_reset_empty_connection_is_released():
    h = Releasing()
    f = Flow()
    h.feed(f.syn(), f._seg(False, 0, f.cisn + 1, RST | ACK, b""))  # port closed
    assert len(h.released) == 1 and h.rec.kinds() == ["rst", "end"]


def test_a_connection_that_carried_data_is_not_released():
    h = Releasing()
    f = Flow()
    h.feed(*f.handshake(), f.c(0, b"hello"), *_close_both(f, c_off=5))
    assert h.released == [] and h.r.connections == [h.conn]
    assert h.rec.bytes(C2S) == b"hello" and h.rec.kinds().count("fin") == 2
    h.finish()
    assert h.rec.ended and h.released == []


def test_without_on_release_nothing_is_released():
    h = Harness()
    f = Flow()
    h.feed(*f.handshake(), *_close_both(f))
    assert h.r.connections == [h.conn] and not h.rec.ended
    h.finish()
    assert h.rec.ended


def test_too_many_open_empty_connections_evict_the_oldest_and_data_still_decodes():
    h = Releasing(max_empty=8)
    flows = [Flow(cport=40000 + i, cisn=1000 * i) for i in range(12)]
    h.feed(*flows[0].handshake(), flows[0].c(0, b"busy"))  # carries data: never evicted
    for f in flows[1:]:
        h.feed(f.syn())
    # 9 > 8 open: the oldest empty ones go until 6 remain candidates
    assert h.r.evicted >= 3 and len(h.released) == h.r.evicted
    assert flows[0].cport not in {c.client.port for c in h.released}
    assert all(c.ended for c in h.released)
    evicted = h.released[0]
    f = flows[evicted.client.port - 40000]
    # the evicted connection turns out to carry data: a new, mid-stream connection
    h.feed(f.synack(), f.hs_ack(), f.c(0, b"late data"), f.c(9, b"!"))
    late = h.sinks[-1]
    assert late.conn is not evicted and late.conn.client.port == f.cport
    assert late.bytes(C2S) == b"late data!"
    h.finish()
    assert h.sinks[0].bytes(C2S) == b"busy" and h.sinks[0].ended


def test_a_released_connection_is_freed_without_the_cyclic_collector():
    """Released connections break their reference cycles: with the collector off,
    the sink (which refers back to its connection) is freed at once."""
    import gc
    import weakref

    refs = []

    def on_connection(conn):
        rec = Recorder(conn)
        refs.append(weakref.ref(rec))
        return rec

    r = TcpReassembler(on_connection, on_release=lambda conn: None)
    f = Flow()
    gc.disable()
    try:
        for seg in [*f.handshake(), *_close_both(f)]:
            r.feed(seg)
        assert r.released == 1 and refs[0]() is None
    finally:
        gc.enable()


def test_the_connection_being_opened_is_never_the_one_evicted():
    h = Releasing(max_empty=1)
    flows = [Flow(cport=41000 + i) for i in range(3)]
    for f in flows:
        h.feed(f.syn())
    assert h.r.evicted == 2 and [c.client.port for c in h.r.connections] == [41002]
    f = flows[2]
    h.feed(f.synack(), f.hs_ack(), f.c(0, b"ok"))
    assert h.sinks[-1].bytes(C2S) == b"ok"
