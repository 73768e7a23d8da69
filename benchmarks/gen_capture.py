#!/usr/bin/env python3
"""Generate a large synthetic classic-pcap capture of WebSocket traffic, fast.

The capture holds ``--connections`` TCP connections from one client host
(10.0.0.1, distinct ephemeral ports) to one server (10.0.0.2:8080), Ethernet /
IPv4 / TCP with microsecond timestamps. Nothing is sent anywhere: the packets
are bytes written with :mod:`struct`, one ``bytes`` object per packet, no
packet library.

Every connection has:

* a TCP three-way handshake (SYN options: MSS 1460, SACK permitted,
  timestamps, window scale 7; every later segment carries the timestamps
  option, so a full segment holds 1448 payload bytes);
* an HTTP/1.1 Upgrade request (``GET /ws``, Host, Upgrade, Connection,
  Sec-WebSocket-Key = base64 of 16 random bytes, Sec-WebSocket-Version: 13)
  and a ``101 Switching Protocols`` response whose Sec-WebSocket-Accept is
  computed per RFC 6455 §4.2.2;
* messages in both directions, interleaved at random: mostly 20-2000 bytes,
  some 10-60 KB spanning many segments, text (valid UTF-8) and binary, a few
  of them fragmented into continuation frames; client frames are masked with
  a random key, server frames are not; a few ping/pong exchanges;
* pure ACKs from the receiver (one per two data segments and one after the
  last), about 0.5 % retransmissions (an exact duplicate of a data segment,
  later, answered by a duplicate ACK) and about 0.5 % out-of-order pairs (two
  consecutive data segments of one direction swapped on the wire);
* a close handshake (status 1000 both ways, either side first), then the
  server's FIN, the client's FIN and the last ACK.

Each WebSocket frame starts in a new segment and no segment holds bytes of two
frames, so ``tshark -T fields -e websocket.opcode`` prints one value per line.
Connections start 2-3 ms apart, so tshark's ``tcp.stream`` index equals the
connection index in the truth file.

The output is deterministic for a given ``--seed``. A sidecar ``OUT.truth.json``
holds the true counts (see :func:`main` and ``benchmarks/README.md``).

Example::

    python benchmarks/gen_capture.py --size-mb 100 -o benchmarks/data/bench100.pcap
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import json
import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])
SERVER_PORT = 8080
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")

MSS_PAYLOAD = 1448  # 1460 MSS minus the 12-byte timestamps option
EPOCH_US = 1_700_000_000_000_000  # first connection starts here (2023-11-14)

# TCP flags
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10

# WebSocket opcodes and their names as the analyser spells them (model.Opcode).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODE_NAMES = {
    CONT: "continuation",
    TEXT: "text",
    BINARY: "binary",
    CLOSE: "close",
    PING: "ping",
    PONG: "pong",
}
DIRECTIONS = ("client_to_server", "server_to_client")
C2S, S2C = 0, 1

# Traffic mix
P_LARGE = 0.048  # share of data messages of 10-60 KB
P_PING = 0.01  # share of exchanges that are a ping/pong
P_FRAGMENT = 0.02  # share of data messages sent as several frames
P_TEXT = 0.6  # share of data messages that are text
P_RETRANSMIT = 0.005  # per data segment: an exact duplicate follows later
P_SWAP = 0.0095  # per position inside a multi-segment frame: swapped with the next

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_REC = struct.Struct("<IIII")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_TS_OPT = struct.Struct("!BBBBII")  # NOP NOP kind=8 len=10 TSval TSecr
_SYN_OPT = struct.Struct("!BBHBBBBIIBBBB")  # MSS, SACK_PERM, TS, NOP, WS


def accept_for(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key value (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 16-bit ones'-complement sum of ``data`` (even length), folded.

    Uses 2^16 ≡ 1 (mod 0xFFFF): the big-endian integer value of the data is
    congruent to the sum of its 16-bit words, so one big-int modulo does the
    whole fold. Returns 0xFFFF rather than 0 for a non-zero multiple.
    """
    r = int.from_bytes(data, "big") % 0xFFFF
    return r if r or not any(data) else 0xFFFF


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455 §5.3)."""
    n = len(payload)
    if not n:
        return payload
    keystream = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes, fin: bool, mask_key: bytes | None) -> bytes:
    """One WebSocket frame (RFC 6455 §5.2), masked when ``mask_key`` is given."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    m = 0x80 if mask_key is not None else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask_key is None:
        return head + payload
    return head + mask_key + mask(payload, mask_key)


class Pools:
    """Shared read-only payload material: random bytes and UTF-8 text."""

    WORDS = (
        "price quote order trade user session event update status value id "
        "channel symbol bid ask volume time delta snapshot heartbeat message "
        "data alpha beta gamma café naïve Zürich 東京 ✓ → € λ"
    ).split()

    def __init__(self, rng: random.Random) -> None:
        """Build a 1 MiB random-byte pool and a ~256 K-character text pool."""
        self.binary = rng.randbytes(1 << 20)
        words = self.WORDS
        parts = []
        total = 0
        while total < 1 << 18:
            w = rng.choice(words)
            parts.append(w)
            total += len(w) + 1
        self.text = " ".join(parts)

    def payload(self, rng: random.Random, opcode: int, size: int, seq: int) -> bytes:
        """A payload of about ``size`` bytes: JSON-like UTF-8 text or random bytes."""
        if opcode == BINARY:
            start = rng.randrange(len(self.binary) - size)
            return self.binary[start : start + size]
        if size < 64:
            start = rng.randrange(len(self.text) - size)
            return self.text[start : start + size].encode()
        head = f'{{"seq":{seq},"type":"update","data":"'
        want = size - len(head) - 2
        start = rng.randrange(len(self.text) - want)
        # Slicing the str (not its bytes) keeps the UTF-8 valid; non-ASCII
        # characters make the message a little longer than ``size``.
        return (head + self.text[start : start + want] + '"}').encode()


class Connection:
    """One client-server TCP connection carrying WebSocket traffic.

    :meth:`packets` yields ``(ts_us, frame_bytes)`` in non-decreasing time order
    and fills :attr:`truth` and :attr:`stats` as it goes.
    """

    def __init__(
        self,
        index: int,
        seed: int,
        client_port: int,
        start_us: int,
        budget: int,
        pools: Pools,
    ) -> None:
        """Prepare per-direction header templates; ``budget`` is the byte target."""
        self.index = index
        self.rng = random.Random(seed)
        self.client_port = client_port
        self.t = start_us
        self.budget = budget
        self.pools = pools
        self.written = 0
        rng = self.rng
        self.rtt_us = rng.randint(200, 20_000)  # capture point is next to the server
        self.snd_nxt = [rng.getrandbits(32), rng.getrandbits(32)]  # ISNs
        self.rcv_nxt = [0, 0]  # per sender side: what that side acknowledges
        self.ip_id = [rng.getrandbits(16), rng.getrandbits(16)]
        self.ts_off = [rng.getrandbits(32), rng.getrandbits(32)]
        self.window = [502, 509]
        # Per-direction constants: Ethernet header, addresses, ports.
        self.eth = [
            SERVER_MAC + CLIENT_MAC + b"\x08\x00",
            CLIENT_MAC + SERVER_MAC + b"\x08\x00",
        ]
        self.addrs = [(CLIENT_IP, SERVER_IP), (SERVER_IP, CLIENT_IP)]
        self.ports = [(client_port, SERVER_PORT), (SERVER_PORT, client_port)]
        self.frames = [dict.fromkeys(OPCODE_NAMES.values(), 0) for _ in DIRECTIONS]
        self.messages = [{"text": 0, "binary": 0} for _ in DIRECTIONS]
        self.payload_bytes = [0, 0]  # application payload bytes of data messages
        self.stats = {
            "packets": 0,
            "data_segments": 0,
            "pure_acks": 0,
            "retransmissions": 0,
            "out_of_order_pairs": 0,
        }
        self.msg_seq = 0

    # --- packet construction ------------------------------------------------

    def _tsval(self, side: int, t: int) -> int:
        return (t // 1000 + self.ts_off[side]) & 0xFFFFFFFF

    def build(
        self, side: int, t: int, seq: int, ack: int, flags: int, payload: bytes = b""
    ) -> bytes:
        """Ethernet + IPv4 + TCP (+ options) + payload, checksums filled in."""
        src, dst = self.addrs[side]
        sport, dport = self.ports[side]
        peer = 1 - side
        if flags & SYN:
            # fmt: off
            opts = _SYN_OPT.pack(
                2, 4, 1460, 4, 2, 8, 10,
                self._tsval(side, t),
                self._tsval(peer, t - self.rtt_us) if flags & ACK else 0,
                1, 3, 3, 7,
            )
            # fmt: on
            window = 64240 if side == C2S else 65160
        else:
            opts = _TS_OPT.pack(1, 1, 8, 10, self._tsval(side, t), self._tsval(peer, t - 100))
            window = self.window[side]
        tcp_len = 20 + len(opts) + len(payload)
        hdr = _TCP.pack(sport, dport, seq, ack, (20 + len(opts)) << 2, flags, window, 0, 0) + opts
        pseudo = src + dst + struct.pack("!HH", 6, tcp_len)
        body = pseudo + hdr + payload
        if len(payload) & 1:
            body += b"\x00"
        csum = 0xFFFF - ones_complement_sum(body)
        hdr = hdr[:16] + struct.pack("!H", csum) + hdr[18:]
        ip_id = self.ip_id[side]
        self.ip_id[side] = (ip_id + 1) & 0xFFFF
        ip = _IP.pack(0x45, 0, 20 + tcp_len, ip_id, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", 0xFFFF - ones_complement_sum(ip)) + ip[12:]
        return self.eth[side] + ip + hdr + payload

    def _pure_ack(self, side: int, t: int, ack: int) -> bytes:
        self.stats["pure_acks"] += 1
        return self.build(side, t, self.snd_nxt[side], ack, ACK)

    # --- exchanges ------------------------------------------------------------

    def send_bytes(
        self, side: int, data: bytes, t0: int, *, ack_last: bool = True
    ) -> list[tuple[int, bytes]]:
        """Packets carrying ``data`` from ``side``, plus the receiver's ACKs.

        Data segments leave ``side`` back to back starting at ``t0``; the
        receiver ACKs every second segment and the last one (unless
        ``ack_last`` is false: the reply piggybacks it). Retransmissions and
        swapped pairs are injected here.
        """
        rng = self.rng
        peer = 1 - side
        # Sender-to-capture and capture-to-receiver delays: the capture point is
        # next to the server, so the client's packets or ACKs come an RTT later.
        ack_delay = rng.randint(40, 200) if side == C2S else self.rtt_us
        ack = self.rcv_nxt[side]
        seq = self.snd_nxt[side]
        segs: list[tuple[int, int, bytes]] = []  # (seq, end, bytes)
        t = t0
        times = []
        for off in range(0, len(data), MSS_PAYLOAD):
            chunk = data[off : off + MSS_PAYLOAD]
            end = (seq + len(chunk)) & 0xFFFFFFFF
            last = off + MSS_PAYLOAD >= len(data)
            segs.append(
                (seq, end, self.build(side, t, seq, ack, ACK | (PSH if last else 0), chunk))
            )
            times.append(t)
            seq = end
            t += rng.randint(8, 30)
        self.snd_nxt[side] = seq
        self.stats["data_segments"] += len(segs)
        # Wire order: swap some consecutive pairs (they keep their time slots).
        order = list(range(len(segs)))
        i = 0
        while i < len(order) - 1:
            if rng.random() < P_SWAP:
                order[i], order[i + 1] = order[i + 1], order[i]
                self.stats["out_of_order_pairs"] += 1
                i += 2
            else:
                i += 1
        out: list[tuple[int, bytes]] = []
        # Receiver: cumulative ACK after each arrival, sent every 2nd / last.
        expected = self.snd_nxt[side] if not segs else segs[0][0]
        pending: dict[int, int] = {}
        for n, k in enumerate(order):
            s_seq, s_end, pkt = segs[k]
            ts = times[n]
            out.append((ts, pkt))
            if s_seq == expected:
                expected = s_end
                while expected in pending:
                    expected = pending.pop(expected)
            else:
                pending[s_seq] = s_end
            is_last = n == len(order) - 1
            if (n % 2 == 1 and not is_last) or (is_last and ack_last):
                out.append((ts + ack_delay, self._pure_ack(peer, ts + ack_delay, expected)))
        # Retransmissions: an exact copy later, then a duplicate ACK.
        for k, (_, _, pkt) in enumerate(segs):
            if rng.random() < P_RETRANSMIT:
                tr = times[-1] + rng.randint(200, 3000) + 10 * k
                out.append((tr, pkt))
                self.stats["retransmissions"] += 1
                out.append((tr + ack_delay, self._pure_ack(peer, tr + ack_delay, expected)))
        self.rcv_nxt[peer] = self.snd_nxt[side]
        return out

    def send_frame(
        self, side: int, opcode: int, payload: bytes, fin: bool, t0: int, *, ack_last: bool = True
    ) -> list[tuple[int, bytes]]:
        """Send one WebSocket frame from ``side`` and count it in the truth."""
        key = self.rng.randbytes(4) if side == C2S else None
        self.frames[side][OPCODE_NAMES[opcode]] += 1
        return self.send_bytes(side, ws_frame(opcode, payload, fin, key), t0, ack_last=ack_last)

    def _flush(self, pkts: list[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        """Yield ``pkts`` in time order (strictly increasing) and advance the clock."""
        pkts.sort(key=lambda p: p[0])
        t = self.t
        for ts, pkt in pkts:
            t = max(ts, t + 1)
            self.written += 16 + len(pkt)
            yield t, pkt
        self.t = t
        self.stats["packets"] += len(pkts)

    def packets(self) -> Iterator[tuple[int, bytes]]:
        """All packets of the connection, in time order."""
        rng = self.rng
        t = self.t
        # TCP handshake
        cisn, sisn = self.snd_nxt
        pkts = [(t, self.build(C2S, t, cisn, 0, SYN))]
        self.snd_nxt[C2S] = cisn = (cisn + 1) & 0xFFFFFFFF
        t += 50
        pkts.append((t, self.build(S2C, t, sisn, cisn, SYN | ACK)))
        self.snd_nxt[S2C] = sisn = (sisn + 1) & 0xFFFFFFFF
        self.rcv_nxt = [sisn, cisn]
        t += self.rtt_us
        pkts.append((t, self.build(C2S, t, cisn, sisn, ACK)))
        t += rng.randint(20, 200)
        # HTTP Upgrade
        key = base64.b64encode(rng.randbytes(16))
        request = (
            b"GET /ws HTTP/1.1\r\n"
            b"Host: 10.0.0.2:8080\r\n"
            b"User-Agent: wsanalyze-bench/1.0\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(key) + b"\r\n\r\n"
        )
        pkts += self.send_bytes(C2S, request, t, ack_last=False)
        t = max(p[0] for p in pkts) + rng.randint(100, 400)
        pkts += self.send_bytes(S2C, response, t)
        yield from self._flush(pkts)

        # Messages until the byte budget is spent (keep ~1 KB for the close).
        while self.written < self.budget - 1200:
            t = self.t + int(rng.expovariate(1 / 4000)) + 1
            if rng.random() < P_PING:
                side = rng.randrange(2)
                body = rng.randbytes(rng.randint(0, 8))
                pkts = self.send_frame(side, PING, body, True, t, ack_last=False)
                t2 = max(p[0] for p in pkts) + rng.randint(30, 300)
                pkts += self.send_frame(1 - side, PONG, body, True, t2)
            else:
                pkts = self.data_message(t)
            yield from self._flush(pkts)

        # Close handshake (either side first), then FIN from the server first.
        t = self.t + rng.randint(1000, 50_000)
        first = rng.randrange(2)
        pkts = self.send_frame(first, CLOSE, struct.pack("!H", 1000), True, t, ack_last=False)
        t = max(p[0] for p in pkts) + rng.randint(30, 300)
        pkts += self.send_frame(1 - first, CLOSE, struct.pack("!H", 1000), True, t, ack_last=False)
        t = max(p[0] for p in pkts) + rng.randint(20, 200)
        pkts.append((t, self.build(S2C, t, self.snd_nxt[S2C], self.rcv_nxt[S2C], FIN | ACK)))
        self.snd_nxt[S2C] = (self.snd_nxt[S2C] + 1) & 0xFFFFFFFF
        self.rcv_nxt[C2S] = self.snd_nxt[S2C]
        t += self.rtt_us
        pkts.append((t, self.build(C2S, t, self.snd_nxt[C2S], self.rcv_nxt[C2S], FIN | ACK)))
        self.snd_nxt[C2S] = (self.snd_nxt[C2S] + 1) & 0xFFFFFFFF
        self.rcv_nxt[S2C] = self.snd_nxt[C2S]
        t += rng.randint(20, 200)
        pkts.append((t, self.build(S2C, t, self.snd_nxt[S2C], self.rcv_nxt[S2C], ACK)))
        self.stats["pure_acks"] += 1
        yield from self._flush(pkts)

    def data_message(self, t: int) -> list[tuple[int, bytes]]:
        """One text or binary message in a random direction, maybe fragmented."""
        rng = self.rng
        side = rng.randrange(2)
        opcode = TEXT if rng.random() < P_TEXT else BINARY
        size = rng.randint(10_000, 60_000) if rng.random() < P_LARGE else 0
        if not size or size * 1.1 > self.budget - self.written:
            # Small message (also instead of a large one that would overshoot
            # the byte budget by much).
            size = int(20 * 100 ** rng.random())  # log-uniform 20..2000
        self.msg_seq += 1
        payload = self.pools.payload(rng, opcode, size, self.msg_seq)
        self.messages[side][OPCODE_NAMES[opcode]] += 1
        self.payload_bytes[side] += len(payload)
        if rng.random() < P_FRAGMENT and len(payload) >= 4:
            nfrag = rng.randint(2, min(4, len(payload)))
            cuts = sorted(rng.sample(range(1, len(payload)), nfrag - 1))
            pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        else:
            pieces = [payload]
        pkts: list[tuple[int, bytes]] = []
        for i, piece in enumerate(pieces):
            op = opcode if i == 0 else CONT
            pkts += self.send_frame(side, op, piece, i == len(pieces) - 1, t)
            t = max(p[0] for p in pkts) + rng.randint(5, 50)
        return pkts

    def truth(self, stream: int) -> dict:
        """This connection's true counts (for the sidecar)."""
        return {
            "stream": stream,
            "client": f"10.0.0.1:{self.client_port}",
            "server": f"10.0.0.2:{SERVER_PORT}",
            "frames": {d: dict(self.frames[i]) for i, d in enumerate(DIRECTIONS)},
            "messages": {d: dict(self.messages[i]) for i, d in enumerate(DIRECTIONS)},
            "payload_bytes": {d: self.payload_bytes[i] for i, d in enumerate(DIRECTIONS)},
            "tcp": dict(self.stats),
        }


def generate(out: Path, size_mb: float, connections: int, seed: int) -> dict:
    """Write the capture to ``out`` and return the truth dictionary."""
    rng = random.Random(seed)
    pools = Pools(rng)
    target = int(size_mb * 1_000_000)
    budget = max(4000, (target - len(_PCAP_HEADER)) // connections)
    ports = rng.sample(range(32768, 61000), connections)
    conns = []
    start = EPOCH_US
    for i in range(connections):
        start += rng.randint(2000, 3000)
        conns.append(Connection(i, rng.getrandbits(64), ports[i], start, budget, pools))
    rec = _REC.pack
    n = 0
    nbytes = len(_PCAP_HEADER)
    first_ts = last_ts = None
    with open(out, "wb", buffering=1 << 22) as f:
        f.write(_PCAP_HEADER)
        for ts, pkt in heapq.merge(*(c.packets() for c in conns), key=lambda p: p[0]):
            ln = len(pkt)
            f.write(rec(ts // 1_000_000, ts % 1_000_000, ln, ln) + pkt)
            n += 1
            nbytes += 16 + ln
            if first_ts is None:
                first_ts = ts
            last_ts = ts

    per_conn = [c.truth(i) for i, c in enumerate(conns)]

    def total(key: str) -> dict:
        return {
            d: {k: sum(pc[key][d][k] for pc in per_conn) for k in per_conn[0][key][d]}
            for d in DIRECTIONS
        }

    frames = total("frames")
    messages = total("messages")
    tcp = {k: sum(pc["tcp"][k] for pc in per_conn) for k in per_conn[0]["tcp"]}
    return {
        "format": "wsanalyze-bench-truth/1",
        "generator": {
            "script": "benchmarks/gen_capture.py",
            "seed": seed,
            "size_mb": size_mb,
            "connections": connections,
        },
        "file": out.name,
        "file_bytes": nbytes,
        "packets": n,
        "first_ts_us": first_ts,
        "last_ts_us": last_ts,
        "connections": connections,
        "frames": frames,
        "frames_total": sum(v for d in frames.values() for v in d.values()),
        "messages": messages,
        "messages_total": sum(v for d in messages.values() for v in d.values()),
        "payload_bytes": {d: sum(pc["payload_bytes"][d] for pc in per_conn) for d in DIRECTIONS},
        "tcp": tcp,
        "per_connection": per_conn,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write OUT and OUT.truth.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size-mb",
        type=float,
        default=100.0,
        help="target file size in MB (10^6 bytes; default 100)",
    )
    ap.add_argument(
        "--connections", type=int, default=100, help="number of connections (default 100)"
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("benchmarks/data/bench.pcap"),
        help="output pcap (default benchmarks/data/bench.pcap)",
    )
    args = ap.parse_args(argv)
    if args.connections < 1:
        ap.error("--connections must be at least 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = generate(args.out, args.size_mb, args.connections, args.seed)
    elapsed = time.perf_counter() - t0
    truth["generation_seconds"] = round(elapsed, 3)
    truth_path = args.out.with_name(args.out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    print(
        f"{args.out}: {truth['file_bytes'] / 1e6:.1f} MB, {truth['packets']} packets, "
        f"{truth['connections']} connections, {truth['frames_total']} frames, "
        f"{truth['messages_total']} messages in {elapsed:.1f} s; truth in {truth_path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
