"""TCP reassembly per connection and direction (RFC 9293), for a passive observer.

:class:`TcpReassembler` takes :class:`~wsanalyze.model.Segment` objects in
capture-file order and hands each connection's two byte streams to a
:class:`StreamSink`, strictly in stream order, as ``data`` and ``gap`` calls
followed by ``fin``/``rst`` and, once per connection, ``end``.

Policy
------

* **Sequence space** (RFC 9293 §3.4): sequence numbers are compared modulo
  2^32 (signed 32-bit difference to the next expected sequence number) and
  unwrapped to 64-bit stream offsets, so a stream may cross 2^32 and may be
  longer than 4 GiB. Offset 0 is the byte after the SYN (the SYN and the FIN
  each consume one sequence number, §3.5, §3.6). Without a SYN (capture started
  mid-connection) offset 0 is the peer's last acknowledgment number captured
  before the direction's first byte, when it lies within 1 MiB of that byte:
  bytes already acknowledged were sent before the capture and are skipped, and
  bytes after it are reassembled even when the first segment seen was out of
  order (a hole there becomes a gap like any other). With no such ACK, offset 0
  is the first byte seen (pure ACKs and keep-alives carry none) and earlier
  bytes arriving later are dropped as retransmissions of pre-capture data.
* **First copy wins** (a receiver trims a segment to RCV.NXT, RFC 9293
  §3.10.7.4, so bytes it already has are kept; out-of-order bytes are kept the
  same way here): bytes already delivered or already buffered are never
  replaced. When an overlapping copy differs from the first one (the
  last ``recent_window`` bytes delivered per direction are kept to compare
  against, and all buffered bytes), a ``tcp_overlap_conflict`` finding names
  both packets and the first differing offset. Retransmitted segments (any
  payload byte already seen, a repeated SYN or FIN) are counted per direction
  and reported once per connection as ``tcp_retransmission``.
* **Gaps, never zero-fill**: segments beyond a hole wait in a bounded buffer.
  The hole becomes a ``gap`` call (and a ``tcp_gap`` finding) when (a) the peer
  acknowledges past the hole's start (the host got bytes the capture lost),
  (b) the buffer holds more than ``max_pending_bytes`` bytes or
  ``max_pending_segments`` segments, (c) a RST arrives in that direction, or
  (d) the connection ends (``finish()`` or 4-tuple reuse). A FIN with a hole
  before it waits like data: its ``fin`` call follows the hole's gap, declared
  by (a) (the peer acknowledging the FIN) or (d). Payload cut by the snapshot
  length (``payload_len > len(payload)``) is a gap right after the captured
  bytes.
* **Connections**: the sender of a SYN without ACK is the client, the sender
  of a SYN-ACK the server. With neither, the roles are guessed (the lower port
  is the server; equal ports: the destination of the first packet) and a
  ``tcp_connection_mid_stream`` finding is added; :meth:`TcpConnection.swap_roles`
  lets a later stage correct the guess. A SYN on a known 4-tuple starts a new
  connection (the old one gets ``end``) when the old one saw a FIN or RST, when
  its ISN differs from the one already seen in that direction, or, with no ISN
  known, when it is more than 1 MiB away from the current sequence space. A SYN
  repeating the known ISN is a retransmission.
* Keep-alive probes (RFC 9293 §3.8.4: no data, or one byte, at the next
  sequence number minus one) are ignored. A RST is delivered after the
  direction's buffered data (with gaps for its holes) and adds a ``tcp_rst``
  finding; data after a FIN or RST in the same direction is ignored.

Performance: an in-order segment on an established connection costs one dict
lookup on ``(src, sport, dst, dport)``, a few integer comparisons, one test for an
F5 trailer (``TcpConnection.f5_flow_id``/``f5_peer_id``) and one ``sink.data``
call. Everything else takes the slow path.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter
from typing import Protocol

from .catalogue import finding
from .model import ACK, FIN, RST, SYN, Direction, Endpoint, F5Trailer, Finding, Segment

__all__ = ["StreamSink", "TcpConnection", "TcpReassembler"]

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_MOD = 0x100000000

MAX_AHEAD = 1 << 30
"""Segments starting more than this many bytes (the largest scaled TCP window,
RFC 7323 §2.3) beyond the next expected byte are dropped as out of window."""

NEAR_WINDOW = 1 << 20
"""Mid-stream only: how near the first byte seen the peer's acknowledgment must
be to become offset 0, and how far from the sequence space a SYN must be to
start a new connection."""

MAX_RETRANSMISSION_PACKETS = 10
"""Packet numbers listed in the aggregated ``tcp_retransmission`` finding."""

_START = itemgetter(0)


def _signed(diff: int) -> int:
    """A difference of two 32-bit sequence numbers as a signed 32-bit value."""
    diff &= _MASK
    return diff - _MOD if diff >= _HALF else diff


def _take_f5(conn: TcpConnection, trailer: F5Trailer, seg: Segment) -> None:
    """Keep the first non-zero F5 flow id and peer id of a connection, and the first
    ``ingress`` flag with the endpoint that sent that packet."""
    if conn.f5_flow_id is None and trailer.flow_id:
        conn.f5_flow_id = trailer.flow_id
    if conn.f5_peer_id is None and trailer.peer_id:
        conn.f5_peer_id = trailer.peer_id
    if conn.f5_ingress is None and trailer.ingress is not None:
        conn.f5_ingress = (Endpoint(seg.src, seg.sport), trailer.ingress)


def _carried_nothing(conn: TcpConnection) -> bool:
    """Not ended, and no payload byte delivered, declared missing (a gap advances
    ``next_off`` too) or waiting either way."""
    c2s, s2c = conn._halves
    return not (conn.ended or c2s.next_off or s2c.next_off or c2s.pend or s2c.pend)


def _first_diff(a: bytes, b: bytes) -> int:
    """Index of the first differing byte of two equal-length byte strings."""
    lo, hi = 0, len(a)
    while hi - lo > 64:  # binary search on slices: C-speed comparisons
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return hi


class StreamSink(Protocol):
    """Receives one TCP connection's byte streams, per direction in stream order.

    For each direction, ``data`` and ``gap`` calls are contiguous: each starts at
    the stream ``offset`` (bytes) where the previous one ended, the first at 0.
    Then at most one ``fin`` or ``rst`` (a ``rst`` may follow a ``fin``), and
    after both directions, ``end`` exactly once. ``ts_ns`` (nanoseconds since
    the epoch) and ``packet`` (1-based capture record number) identify the
    segment that carried the bytes, or for a gap the segment after it (or that
    caused it to be declared).
    """

    def data(self, direction: Direction, offset: int, data: bytes, ts_ns: int, packet: int) -> None:
        """Bytes ``[offset, offset + len(data))`` of ``direction``, first copy seen."""

    def gap(self, direction: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        """``length`` bytes at ``offset`` that were sent but never captured."""

    def fin(self, direction: Direction, ts_ns: int, packet: int) -> None:
        """The sender of ``direction`` closed it (RFC 9293 §3.6); no more data follows."""

    def rst(self, direction: Direction, ts_ns: int, packet: int) -> None:
        """The sender of ``direction`` reset the connection (RFC 9293 §3.5.2)."""

    def end(self, ts_ns: int) -> None:
        """The connection is over for the reassembler (capture ended or 4-tuple reused);
        ``ts_ns`` is the time of its last packet."""


class _Half:
    """Reassembly state of one direction of one connection (internal)."""

    __slots__ = (
        "conn",
        "direction",
        "peer",
        "key",
        "fast",
        "waiting",
        "isn",
        "ack_hint",
        "next_seq",
        "next_off",
        "pend",
        "pend_bytes",
        "recent",
        "recent_pk",
        "recent_len",
        "fin_off",
        "fin_done",
        "fin_ts_ns",
        "fin_packet",
        "rst_done",
        "rst_ts_ns",
        "rst_packet",
        "packets",
        "retransmissions",
        "gaps",
        "gap_bytes",
        "conflicts",
        "last_packet",
        "s_data",
        "s_gap",
        "s_fin",
        "s_rst",
    )

    def __init__(self, conn: TcpConnection, direction: Direction, key: tuple) -> None:
        self.conn = conn
        self.direction = direction
        self.peer: _Half = self
        self.key = key
        self.fast = False  # the in-order hot path applies
        self.waiting = True  # the peer's ACKs matter: a hole, a pending FIN, no base yet
        self.isn: int | None = None
        self.ack_hint: int | None = None  # peer's last ACK while next_seq is unknown
        self.next_seq: int | None = None  # 32-bit sequence number of next_off
        self.next_off = 0  # stream offset of the next byte to deliver
        self.pend: list[tuple[int, int, bytes | None, int, int]] = []  # (start, end, data, ts, pkt)
        self.pend_bytes = 0
        self.recent: list[bytes] = []  # last delivered chunks, contiguous, ending at next_off
        self.recent_pk: list[int] = []
        self.recent_len = 0
        self.fin_off: int | None = None
        self.fin_done = False
        self.fin_ts_ns: int | None = None
        self.fin_packet: int | None = None
        self.rst_done = False
        self.rst_ts_ns: int | None = None
        self.rst_packet: int | None = None
        self.packets = 0
        self.retransmissions = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.conflicts = 0
        self.last_packet = 0

    def refresh(self) -> None:
        """Recompute the ``waiting`` and ``fast`` flags after a slow-path change."""
        # waiting: the peer's ACKs matter (a hole to declare, or no base yet)
        self.waiting = (
            bool(self.pend)
            or (self.fin_off is not None and not self.fin_done)
            or self.next_seq is None
        )
        self.fast = (
            not self.waiting
            and self.fin_off is None
            and not self.rst_done
            and not (self.conn._awaiting_ack and self.direction == C2S)
        )


class TcpConnection:
    """One TCP connection as seen in the capture (mutable, owned by the reassembler).

    Attributes: ``index`` (1-based, in order of first packet), ``client`` and
    ``server`` (:class:`~wsanalyze.model.Endpoint`; the client opened the
    connection), ``syn_seen`` (the client's SYN was captured), ``mid_stream``
    (roles were guessed: neither SYN nor SYN-ACK opened the connection in the
    capture), ``first_ts_ns``/``last_ts_ns`` (ns, first and last packet),
    ``first_packet``, the handshake times ``syn_ts_ns``, ``synack_ts_ns``,
    ``ack_ts_ns`` (ns, None when not captured), ``findings`` (list of
    :class:`~wsanalyze.model.Finding`, complete once ``ended``), ``ended``
    (``end`` was called), ``sink`` (the connection's StreamSink; None once ``end``
    was called).

    Per-direction values are tuples indexed by :class:`~wsanalyze.model.Direction`:
    ``isn`` (None if unknown), ``packets`` (segments), ``bytes`` (payload bytes
    delivered), ``retransmissions`` (segments), ``gaps`` (count), ``gap_bytes``,
    ``fin_ts_ns``, ``fin_packet``, ``rst_ts_ns``, ``rst_packet``.

    F5 BIG-IP trailers (:attr:`~wsanalyze.model.Segment.f5_trailer`, captures taken
    with ``tcpdump -i 0.0:nn`` or ``:nnn`` on a BIG-IP): ``f5_flow_id`` is the first
    non-zero flow id and ``f5_peer_id`` the first non-zero peer id seen in either
    direction (TMM's id of this connection, and of the connection on the other side
    of the proxy: 0 until that one exists, e.g. at the first SYN); None without
    trailers. A client-side connection's peer id is its server-side twin's flow id.
    ``f5_ingress``: ``(sender endpoint, ingress)`` of the first trailer that said
    whether its packet entered the BIG-IP (None if none did); see
    :func:`f5_client_side`.
    """

    __slots__ = (
        "index",
        "client",
        "server",
        "syn_seen",
        "mid_stream",
        "first_ts_ns",
        "last_ts_ns",
        "first_packet",
        "syn_ts_ns",
        "synack_ts_ns",
        "ack_ts_ns",
        "findings",
        "sink",
        "ended",
        "f5_flow_id",
        "f5_peer_id",
        "f5_ingress",
        "_halves",
        "_awaiting_ack",
        "_retrans_packets",
    )

    def __init__(
        self, index: int, client: Endpoint, server: Endpoint, ts_ns: int, packet: int
    ) -> None:
        self.index = index
        self.client = client
        self.server = server
        self.syn_seen = False
        self.mid_stream = False
        self.first_ts_ns = ts_ns
        self.last_ts_ns = ts_ns
        self.first_packet = packet
        self.syn_ts_ns: int | None = None
        self.synack_ts_ns: int | None = None
        self.ack_ts_ns: int | None = None
        self.findings: list[Finding] = []
        self.sink: StreamSink | None = None
        self.ended = False  # end() was called
        self.f5_flow_id: int | None = None  # first non-zero F5 trailer ids (see above)
        self.f5_peer_id: int | None = None
        self.f5_ingress: tuple[Endpoint, bool] | None = None  # (sender, ingress), first
        self._awaiting_ack = False  # SYN-ACK seen, client's handshake ACK not yet
        self._retrans_packets: list[int] = []  # first few, for the summary finding
        c2s = _Half(self, C2S, (client.ip, client.port, server.ip, server.port))
        s2c = _Half(self, S2C, (server.ip, server.port, client.ip, client.port))
        c2s.peer, s2c.peer = s2c, c2s
        self._halves: tuple[_Half, _Half] = (c2s, s2c)

    def __repr__(self) -> str:
        return f"<TcpConnection #{self.index} {self.client} -> {self.server}>"

    @property
    def rtt_ns(self) -> int | None:
        """Handshake round-trip time in ns: ACK time minus SYN time (RFC 9293 §3.5).

        It is one full round trip wherever the capture point lies on the path;
        None unless both were captured."""
        if self.syn_ts_ns is None or self.ack_ts_ns is None:
            return None
        return self.ack_ts_ns - self.syn_ts_ns

    def _pair(self, name: str) -> tuple:
        c2s, s2c = self._halves
        return (getattr(c2s, name), getattr(s2c, name))

    @property
    def isn(self) -> tuple[int | None, int | None]:
        """Initial sequence number per direction (None when no SYN was seen in it)."""
        return self._pair("isn")

    @property
    def packets(self) -> tuple[int, int]:
        """Segments captured per direction (pure ACKs included)."""
        return self._pair("packets")

    @property
    def bytes(self) -> tuple[int, int]:
        """Payload bytes delivered to the sink per direction (gaps excluded)."""
        c2s, s2c = self._halves
        return (c2s.next_off - c2s.gap_bytes, s2c.next_off - s2c.gap_bytes)

    @property
    def retransmissions(self) -> tuple[int, int]:
        """Retransmitted segments per direction (some payload already seen, or a repeated
        SYN or FIN)."""
        return self._pair("retransmissions")

    @property
    def gaps(self) -> tuple[int, int]:
        """Number of ``gap`` calls per direction."""
        return self._pair("gaps")

    @property
    def gap_bytes(self) -> tuple[int, int]:
        """Bytes declared as gaps per direction."""
        return self._pair("gap_bytes")

    @property
    def fin_ts_ns(self) -> tuple[int | None, int | None]:
        """Time (ns) of the first FIN per direction."""
        return self._pair("fin_ts_ns")

    @property
    def fin_packet(self) -> tuple[int | None, int | None]:
        """Packet number of the first FIN per direction."""
        return self._pair("fin_packet")

    @property
    def rst_ts_ns(self) -> tuple[int | None, int | None]:
        """Time (ns) of the first RST per direction."""
        return self._pair("rst_ts_ns")

    @property
    def rst_packet(self) -> tuple[int | None, int | None]:
        """Packet number of the first RST per direction."""
        return self._pair("rst_packet")

    def swap_roles(self) -> None:
        """Exchange client and server (when the guessed roles proved wrong).

        Swaps the endpoints and all per-direction state (``isn``, ``packets``,
        ``bytes``, ...), and flips the direction of the findings already made.
        Callbacks already delivered keep the direction they were made with; every
        later callback uses the new roles, continuing each stream at the offset it
        had reached (so a caller that swaps right after the first ``data`` call
        only has to relabel that one call). It may be called from inside a sink
        callback. The handshake times are left as they are.
        """
        c2s, s2c = self._halves
        self._halves = (s2c, c2s)
        s2c.direction, c2s.direction = C2S, S2C
        self.client, self.server = self.server, self.client
        self.findings[:] = [
            f if f.direction is None else replace(f, direction=f.direction.reverse)
            for f in self.findings
        ]
        c2s.refresh()
        s2c.refresh()


class TcpReassembler:
    """Reassembles every TCP connection of one capture (RFC 9293), see the module doc.

    ``on_connection(conn)`` is called once per connection, when its first packet
    is fed, and returns the :class:`StreamSink` for it. Bounds: at most
    ``max_pending_bytes`` bytes / ``max_pending_segments`` out-of-order segments
    wait per direction before the hole becomes a gap; the last
    ``recent_window`` bytes delivered per direction are kept (up to twice that
    between trims) to detect conflicting retransmissions; at most
    ``max_findings`` ``tcp_gap`` and ``tcp_overlap_conflict`` findings per
    direction, then one summary each.

    ``connections`` lists every connection not released, in index order. ``feed``
    must not be called after ``finish``.

    Empty connections are released as soon as they end: a connection that carried
    no payload byte either way (a SYN scan answered by RST, a health check that
    connects and closes) is ended (its sink gets ``end``), reported to
    ``on_release(conn)``, and forgotten once both directions have delivered their
    FIN or either a RST, so a capture of millions of them needs no memory per
    connection. Its 4-tuple is remembered (the last ``max_released`` of them) so
    that its trailing packets (the last ACK, a retransmitted FIN) do not open a new
    connection; a SYN on it does. When more than ``max_empty`` connections are
    open without a payload byte yet (a SYN flood, a scan), the oldest of them are
    ended and released the same way (``evicted`` counts them), but their 4-tuples
    are not remembered: should one carry data after all, it comes back as a new
    connection whose start was not captured, and its bytes are decoded.
    """

    def __init__(
        self,
        on_connection: Callable[[TcpConnection], StreamSink],
        *,
        max_pending_bytes: int = 2 * 1024 * 1024,
        max_pending_segments: int = 1000,
        recent_window: int = 64 * 1024,
        max_findings: int = 20,
        on_release: Callable[[TcpConnection], None] | None = None,
        max_released: int = 65536,
        max_empty: int = 32768,
    ) -> None:
        self._on_connection = on_connection
        self._on_release = on_release
        self._flows: dict[tuple, _Half] = {}
        self._all: dict[int, TcpConnection] = {}
        self._count = 0
        # 4-tuples of released connections, FIFO (OrderedDict: popping the oldest of a
        # plain dict rescans the deleted entries at its front, quadratic)
        self._released: OrderedDict[tuple, None] = OrderedDict()
        self.max_released = max_released
        self.released = 0
        self._empty: OrderedDict[int, TcpConnection] = OrderedDict()  # maybe empty, FIFO
        self.max_empty = max_empty
        self.evicted = 0
        self._live: dict[int, TcpConnection] = {}
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_segments = max_pending_segments
        self.recent_window = recent_window
        self._recent_max = 2 * recent_window
        self.max_findings = max_findings
        self._finished = False

    @property
    def connections(self) -> list[TcpConnection]:
        """Every connection not released, in index order."""
        return list(self._all.values())

    # --- the hot path -----------------------------------------------------

    def feed(self, seg: Segment) -> None:
        """Process one segment; segments must come in capture-file order."""
        h = self._flows.get((seg.src, seg.sport, seg.dst, seg.dport))
        if h is not None and h.fast:
            flags = seg.flags
            seq = seg.seq
            payload = seg.payload
            n = seg.payload_len
            if not flags & 7 and seq == h.next_seq and n == len(payload):
                ts = seg.ts_ns
                h.conn.last_ts_ns = ts
                h.packets += 1
                if n:
                    packet = seg.packet
                    off = h.next_off
                    h.next_off = off + n
                    h.next_seq = (seq + n) & _MASK
                    h.last_packet = packet
                    h.recent.append(payload)
                    h.recent_pk.append(packet)
                    h.recent_len += n
                    if h.recent_len > self._recent_max:
                        self._trim_recent(h)
                    h.s_data(h.direction, off, payload, ts, packet)
                if flags & ACK and h.peer.waiting:
                    self._ack(h.peer, seg)
                if seg.f5_trailer is not None:
                    _take_f5(h.conn, seg.f5_trailer, seg)
                return
        self._slow(seg, h)

    # --- the slow path ----------------------------------------------------

    def _slow(self, seg: Segment, h: _Half | None) -> None:
        flags = seg.flags
        seq = seg.seq & _MASK
        ts = seg.ts_ns
        pkt = seg.packet
        if h is None:
            if self._released:
                key = (seg.src, seg.sport, seg.dst, seg.dport)
                if key in self._released:
                    if not flags & SYN:
                        return  # a released connection's last ACK or a retransmission
                    del self._released[key]
                    self._released.pop((seg.dst, seg.dport, seg.src, seg.sport), None)
            h = self._new_connection(seg)
        elif flags & SYN and self._starts_new_connection(h, seq):
            self._close(h.conn)
            h = self._new_connection(seg)
        conn = h.conn
        conn.last_ts_ns = ts
        h.packets += 1
        if seg.f5_trailer is not None:
            _take_f5(conn, seg.f5_trailer, seg)

        data_seq = seq
        if flags & SYN:
            data_seq = (seq + 1) & _MASK
            if h.isn is None:
                if h.next_seq is None or (h.next_off == 0 and not h.pend):
                    h.isn = seq
                    h.next_seq = data_seq
                    if flags & ACK:
                        if conn.synack_ts_ns is None:
                            conn.synack_ts_ns = ts
                            conn._awaiting_ack = conn.ack_ts_ns is None
                    else:
                        conn.syn_seen = True
                        if conn.syn_ts_ns is None:
                            conn.syn_ts_ns = ts
                else:  # a SYN inside the sequence space of a mid-stream direction: bogus
                    self._ack_and_refresh(h, seg, flags)
                    return
            elif seq == h.isn:
                if not seg.payload_len:
                    self._count_retransmission(h, pkt)
            else:  # another ISN, close to the current one: not a new connection
                self._ack_and_refresh(h, seg, flags)
                return
        elif h.next_seq is None:
            # mid-stream: offset 0 is the peer's last acknowledgment number when it is
            # near the first byte seen (pure ACKs and keep-alives carry none), else
            # that first byte.
            if not (seg.payload_len > 0 or flags & (FIN | RST)):
                self._ack_and_refresh(h, seg, flags)
                return
            base = seq
            if h.ack_hint is not None and abs(_signed(h.ack_hint - seq)) <= NEAR_WINDOW:
                base = h.ack_hint
            h.next_seq = base

        if conn._awaiting_ack and h.direction == C2S and flags & ACK and not flags & SYN:
            # the client's first ACK after the SYN-ACK completes the handshake (§3.5)
            conn.ack_ts_ns = ts
            conn._awaiting_ack = False

        plen = seg.payload_len
        payload = seg.payload
        assert h.next_seq is not None
        diff = _signed(data_seq - h.next_seq)

        if plen <= 1 and diff == -1 and not flags & (SYN | FIN | RST):
            # keep-alive probe (RFC 9293 §3.8.4): ignore its byte
            self._ack_and_refresh(h, seg, flags)
            return

        start = h.next_off + diff
        if plen > 0:
            if len(payload) > plen:
                payload = payload[:plen]
            self._add(h, start, payload, plen, ts, pkt)

        if flags & FIN:
            fin_off = start + max(plen, 0)
            if h.fin_off is None:
                if not h.rst_done and fin_off - h.next_off <= MAX_AHEAD:
                    h.fin_off = max(fin_off, 0)
                    h.fin_ts_ns = ts
                    h.fin_packet = pkt
                    self._drain(h)
            elif fin_off == h.fin_off and not plen:
                self._count_retransmission(h, pkt)

        if flags & RST and not h.rst_done:
            self._reset(h, ts, pkt)

        self._ack_and_refresh(h, seg, flags)
        if flags & (FIN | RST) and self._on_release is not None:
            self._release_if_empty(conn)

    def _release_if_empty(self, conn: TcpConnection) -> None:
        """End and forget ``conn`` if it is over on the wire (both FINs delivered, or
        a RST) and carried no payload byte either way."""
        c2s, s2c = conn._halves
        if _carried_nothing(conn) and (
            c2s.fin_done and s2c.fin_done or c2s.rst_done or s2c.rst_done
        ):
            self._forget(conn, remember=True)

    def _forget(self, conn: TcpConnection, *, remember: bool) -> None:
        """End ``conn``, drop it, and tell ``on_release``; ``remember`` its 4-tuple."""
        self._close(conn)
        del self._all[conn.index]
        self._empty.pop(conn.index, None)
        if remember:
            released = self._released
            for h in conn._halves:
                released[h.key] = None
            while len(released) > self.max_released:
                released.popitem(last=False)
        self.released += 1
        assert self._on_release is not None
        self._on_release(conn)
        # Break the reference cycles (connection <-> halves; _close dropped the sink)
        # so that reference counting frees the connection now, without waiting for
        # the cyclic collector.
        for h in conn._halves:
            h.conn = h.peer = None  # type: ignore[assignment]

    def _evict_empty(self) -> None:
        """Too many connections open without payload: release the oldest still empty
        ones until a quarter of ``max_empty`` is free (those that did carry data
        just leave the list)."""
        empty = self._empty
        target = max(1, self.max_empty * 3 // 4)  # never the newest, being created
        while len(empty) > target:
            conn = empty.popitem(last=False)[1]
            if not _carried_nothing(conn):
                continue
            self.evicted += 1
            self._forget(conn, remember=False)

    def _ack_and_refresh(self, h: _Half, seg: Segment, flags: int) -> None:
        if flags & ACK and h.peer.waiting:
            self._ack(h.peer, seg)
        h.refresh()
        h.peer.refresh()

    def _new_connection(self, seg: Segment) -> _Half:
        """Create the connection for a segment on an unknown (or reused) 4-tuple."""
        flags = seg.flags
        src = Endpoint(seg.src, seg.sport)
        dst = Endpoint(seg.dst, seg.dport)
        mid = False
        if flags & SYN and not flags & ACK:
            client, server = src, dst
        elif flags & SYN:
            client, server = dst, src
        else:
            mid = True
            client, server = (dst, src) if seg.sport < seg.dport else (src, dst)
        self._count += 1
        conn = TcpConnection(self._count, client, server, seg.ts_ns, seg.packet)
        conn.mid_stream = mid
        c2s, s2c = conn._halves
        if flags & SYN and flags & ACK:
            # the SYN-ACK acknowledges the client's ISN + 1
            c2s.isn = (seg.ack - 1) & _MASK
            c2s.next_seq = seg.ack & _MASK
        if mid:
            conn.findings.append(
                finding(
                    "tcp_connection_mid_stream",
                    f"no SYN or SYN-ACK captured; guessed client={client}, server={server} "
                    "(the lower port is taken as the server)",
                    packets=(seg.packet,),
                    ts_ns=seg.ts_ns,
                )
            )
        self._all[conn.index] = conn
        self._live[conn.index] = conn
        if self._on_release is not None:
            self._empty[conn.index] = conn
            if len(self._empty) > self.max_empty:
                self._evict_empty()
        self._flows[c2s.key] = c2s
        self._flows[s2c.key] = s2c
        sink = self._on_connection(conn)
        conn.sink = sink
        for h in (c2s, s2c):
            h.s_data, h.s_gap, h.s_fin, h.s_rst = sink.data, sink.gap, sink.fin, sink.rst
        c2s.refresh()
        s2c.refresh()
        return c2s if src == client else s2c

    def _starts_new_connection(self, h: _Half, seq: int) -> bool:
        """A SYN in direction ``h``: does it open a new connection on this 4-tuple?"""
        if h.isn is not None and seq == h.isn:
            return False  # retransmitted SYN
        conn = h.conn
        for x in conn._halves:
            if x.fin_off is not None or x.rst_done:
                return True
        if h.isn is not None:
            return True  # another ISN in a direction that had one: a new incarnation
        if h.next_seq is None:
            return False  # first SYN of this direction (SYN-ACK, simultaneous open)
        return abs(_signed(seq + 1 - h.next_seq)) > NEAR_WINDOW

    def _count_retransmission(self, h: _Half, packet: int) -> None:
        h.retransmissions += 1
        rp = h.conn._retrans_packets
        if len(rp) < MAX_RETRANSMISSION_PACKETS:
            rp.append(packet)

    def _add(self, h: _Half, start: int, payload: bytes, plen: int, ts: int, pkt: int) -> None:
        """Take payload ``[start, start + plen)`` (``len(payload)`` captured bytes)."""
        if h.fin_done or h.rst_done:
            if start < h.next_off:
                self._count_retransmission(h, pkt)
            return  # nothing is delivered after FIN or RST
        end = start + plen
        if h.fin_off is not None and end > h.fin_off:
            end = h.fin_off  # no data beyond the FIN
            if end <= start:
                return
            payload = payload[: end - start]
            plen = end - start
        nxt = h.next_off
        seen = False
        if start < nxt:
            seen = True
            old_end = min(end, nxt)
            cap_end = min(old_end, start + len(payload))
            if cap_end > start:
                self._compare_recent(h, start, payload[: cap_end - start], ts, pkt)
            if end <= nxt:
                self._count_retransmission(h, pkt)
                return
            cut = nxt - start
            payload = payload[cut:]
            start = nxt
            plen = end - start
        if start - nxt > MAX_AHEAD:
            return  # out of any window: another connection's segment, or garbage
        cap = len(payload)
        if cap:
            seen |= self._insert(h, start, start + cap, payload, ts, pkt)
        if cap < plen:
            seen |= self._insert(h, start + cap, end, None, ts, pkt)
        if seen:
            self._count_retransmission(h, pkt)
        self._drain(h)
        while h.pend and (
            h.pend_bytes > self.max_pending_bytes or len(h.pend) > self.max_pending_segments
        ):
            first = h.pend[0]
            self._gap(h, first[0] - h.next_off, first[3], first[4], "out-of-order buffer full")
            self._drain(h)

    def _insert(self, h: _Half, s: int, e: int, data: bytes | None, ts: int, pkt: int) -> bool:
        """Buffer ``[s, e)`` (bytes, or None for bytes cut by the snapshot length) where
        it is not already buffered (first copy wins). Returns True on any overlap."""
        pend = h.pend
        i = bisect_right(pend, s, key=_START)
        if i and pend[i - 1][1] > s:
            i -= 1
        n = len(pend)
        if i >= n or pend[i][0] >= e:
            pend.insert(i, (s, e, data, ts, pkt))
            h.pend_bytes += e - s
            return False
        pieces: list[tuple[int, int, int]] = []
        cur = s
        j = i
        conflict: tuple[int, int] | None = None
        while j < n and pend[j][0] < e:
            ps, pe, pd, _, ppk = pend[j]
            if ps > cur:
                pieces.append((j, cur, ps))
            lo, hi = max(cur, ps), min(e, pe)
            if conflict is None and data is not None and pd is not None and lo < hi:
                a = pd[lo - ps : hi - ps]
                b = data[lo - s : hi - s]
                if a != b:
                    conflict = (lo + _first_diff(a, b), ppk)
            cur = max(cur, pe)
            j += 1
        if cur < e:
            pieces.append((j, cur, e))
        for idx, a0, b0 in reversed(pieces):
            piece = None if data is None else data[a0 - s : b0 - s]
            pend.insert(idx, (a0, b0, piece, ts, pkt))
            h.pend_bytes += b0 - a0
        if conflict is not None:
            self._conflict(h, conflict[0], conflict[1], pkt, ts)
        return True

    def _drain(self, h: _Half) -> None:
        """Deliver buffered segments that start at the next expected offset, then the
        FIN once everything before it is delivered."""
        pend = h.pend
        while pend and pend[0][0] <= h.next_off:
            s, e, d, ts, pkt = pend.pop(0)
            h.pend_bytes -= e - s
            nxt = h.next_off
            if e <= nxt:
                continue
            if s < nxt:  # cannot happen (buffered ranges start at or after next_off)
                if d is not None:
                    d = d[nxt - s :]
                s = nxt
            if d is None:
                self._gap(h, e - s, ts, pkt, "packet cut by the snapshot length")
                continue
            assert h.next_seq is not None
            h.next_off = e
            h.next_seq = (h.next_seq + e - s) & _MASK
            h.last_packet = pkt
            h.recent.append(d)
            h.recent_pk.append(pkt)
            h.recent_len += e - s
            if h.recent_len > self._recent_max:
                self._trim_recent(h)
            h.s_data(h.direction, s, d, ts, pkt)
        if h.fin_off is not None and not h.fin_done and h.next_off >= h.fin_off:
            h.fin_done = True
            pend.clear()
            h.pend_bytes = 0
            assert h.fin_ts_ns is not None and h.fin_packet is not None
            h.s_fin(h.direction, h.fin_ts_ns, h.fin_packet)

    def _gap(self, h: _Half, length: int, ts: int, pkt: int, cause: str) -> None:
        """Declare ``length`` bytes at ``h.next_off`` never captured."""
        if length <= 0:
            return
        off = h.next_off
        h.gaps += 1
        h.gap_bytes += length
        if h.gaps <= self.max_findings:
            h.conn.findings.append(
                finding(
                    "tcp_gap",
                    f"{length} bytes never captured at offset {off} ({cause})",
                    packets=tuple(p for p in (h.last_packet, pkt) if p),
                    direction=h.direction,
                    offset=off,
                    ts_ns=ts,
                )
            )
        h.recent.clear()
        h.recent_pk.clear()
        h.recent_len = 0
        assert h.next_seq is not None
        h.next_off = off + length
        h.next_seq = (h.next_seq + length) & _MASK
        h.s_gap(h.direction, off, length, ts, pkt)

    def _ack(self, p: _Half, seg: Segment) -> None:
        """A segment towards ``p``'s sender acknowledges ``seg.ack``: holes in ``p``
        before that point were received by the host but not captured (RFC 9293 §3.4)."""
        if p.next_seq is None:
            if seg.flags & ACK:
                p.ack_hint = seg.ack & _MASK
            return
        diff = _signed(seg.ack - p.next_seq)
        if diff <= 0:
            return
        ack_off = p.next_off + diff
        for _ in range(len(p.pend) + 2):
            if not p.waiting or ack_off <= p.next_off:
                break
            if p.pend:
                target, ets, epk = p.pend[0][0], p.pend[0][3], p.pend[0][4]
            else:
                assert p.fin_off is not None and p.fin_ts_ns is not None
                target, ets, epk = p.fin_off, p.fin_ts_ns, p.fin_packet or seg.packet
            if target > p.next_off:
                if ack_off < target:
                    target, ets, epk = ack_off, seg.ts_ns, seg.packet
                self._gap(p, target - p.next_off, ets, epk, "acknowledged by the peer")
            self._drain(p)
            p.refresh()

    def _reset(self, h: _Half, ts: int, pkt: int) -> None:
        """RST in direction ``h``: flush its buffered data (holes become gaps), then the
        pending FIN, then the ``rst`` call (RFC 9293 §3.5.3)."""
        self._flush(h, "reset before it was captured")
        h.rst_done = True
        h.rst_ts_ns = ts
        h.rst_packet = pkt
        h.conn.findings.append(
            finding(
                "tcp_rst",
                f"RST from the {'client' if h.direction == C2S else 'server'}",
                packets=(pkt,),
                direction=h.direction,
                offset=h.next_off,
                ts_ns=ts,
            )
        )
        h.s_rst(h.direction, ts, pkt)

    def _flush(self, h: _Half, cause: str) -> None:
        """Turn every hole of ``h`` into a gap and deliver everything, FIN included."""
        while h.pend:
            s, _, _, ts, pkt = h.pend[0]
            if s > h.next_off:
                self._gap(h, s - h.next_off, ts, pkt, cause)
            self._drain(h)
        if h.fin_off is not None and not h.fin_done:
            assert h.fin_ts_ns is not None and h.fin_packet is not None
            self._gap(h, h.fin_off - h.next_off, h.fin_ts_ns, h.fin_packet, cause)
            self._drain(h)
        h.refresh()

    def _conflict(self, h: _Half, offset: int, old_pkt: int, new_pkt: int, ts: int) -> None:
        h.conflicts += 1
        if h.conflicts <= self.max_findings:
            h.conn.findings.append(
                finding(
                    "tcp_overlap_conflict",
                    f"packet {new_pkt} carries bytes at offset {offset} different from "
                    f"the first copy in packet {old_pkt}; the first copy is kept",
                    packets=(old_pkt, new_pkt),
                    direction=h.direction,
                    offset=offset,
                    ts_ns=ts,
                )
            )

    def _compare_recent(self, h: _Half, start: int, data: bytes, ts: int, pkt: int) -> None:
        """Compare an old copy ``[start, start + len(data))`` with the delivered bytes
        still in the recent window; a difference is a ``tcp_overlap_conflict``."""
        end = start + len(data)
        chunk_end = h.next_off
        chunks, pks = h.recent, h.recent_pk
        k = len(chunks) - 1
        first: tuple[int, int] | None = None
        while k >= 0 and chunk_end > start:
            chunk = chunks[k]
            cs = chunk_end - len(chunk)
            lo, hi = max(cs, start), min(chunk_end, end)
            if lo < hi:
                a = chunk[lo - cs : hi - cs]
                b = data[lo - start : hi - start]
                if a != b:
                    first = (lo + _first_diff(a, b), pks[k])  # keep the lowest offset
            chunk_end = cs
            k -= 1
        if first is not None:
            self._conflict(h, first[0], first[1], pkt, ts)

    def _trim_recent(self, h: _Half) -> None:
        """Drop the oldest delivered chunks beyond ``recent_window`` bytes."""
        excess = h.recent_len - self.recent_window
        chunks = h.recent
        k = 0
        dropped = 0
        while k < len(chunks) - 1 and dropped + len(chunks[k]) <= excess:
            dropped += len(chunks[k])
            k += 1
        del chunks[:k]
        del h.recent_pk[:k]
        h.recent_len -= dropped

    # --- the end ----------------------------------------------------------

    def _close(self, conn: TcpConnection) -> None:
        """Flush both directions, add the summary findings and call ``end``."""
        if conn.ended:
            return
        for h in conn._halves:
            self._flush(h, "never captured before the connection ended")
        c2s, s2c = conn._halves
        total = c2s.retransmissions + s2c.retransmissions
        if total:
            conn.findings.append(
                finding(
                    "tcp_retransmission",
                    f"{total} retransmitted segments (client_to_server={c2s.retransmissions}, "
                    f"server_to_client={s2c.retransmissions}); first packets listed",
                    packets=tuple(conn._retrans_packets),
                )
            )
        for h in conn._halves:
            if h.gaps > self.max_findings:
                conn.findings.append(
                    finding(
                        "tcp_gap",
                        f"{h.gaps} gaps in all, {h.gap_bytes} bytes never captured "
                        f"(only the first {self.max_findings} are listed)",
                        direction=h.direction,
                    )
                )
            if h.conflicts > self.max_findings:
                conn.findings.append(
                    finding(
                        "tcp_overlap_conflict",
                        f"{h.conflicts} conflicting overlaps in all "
                        f"(only the first {self.max_findings} are listed)",
                        direction=h.direction,
                    )
                )
            h.recent.clear()
            h.recent_pk.clear()
            h.recent_len = 0
            h.fast = False
            if self._flows.get(h.key) is h:
                del self._flows[h.key]
        conn.ended = True
        self._live.pop(conn.index, None)
        assert conn.sink is not None
        conn.sink.end(conn.last_ts_ns)
        # Nothing calls the sink after end(): let it go (its decoders, buffers and
        # zlib contexts), which also leaves the connection plain data (picklable).
        conn.sink = None
        for h in conn._halves:
            h.s_data = h.s_gap = h.s_fin = h.s_rst = None

    def finish(self) -> None:
        """End of capture: flush every connection (pending data becomes data after a
        gap, a pending FIN is delivered) and call ``end`` on each, in index order.
        Calling it again does nothing."""
        if self._finished:
            return
        self._finished = True
        for index in sorted(self._live):
            conn = self._live.get(index)
            if conn is not None:
                self._close(conn)


def f5_client_side(conn: TcpConnection) -> bool | None:
    """Whether ``conn`` is a client-side connection of an F5 BIG-IP, from the
    trailer's ingress flag: on the client side the TCP client's packets enter the
    BIG-IP (it is the virtual server's TCP server); on the server side the BIG-IP is
    the TCP client, so its packets leave (Wireshark ``f5ethtrailer.ingress``). None
    without an ingress flag."""
    if conn.f5_ingress is None:
        return None
    sender, ingress = conn.f5_ingress
    return ingress if sender == conn.client else not ingress
