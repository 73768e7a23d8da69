"""Pairing at scale: N concurrent WebSockets from ONE client to ONE URL through a
SNAT proxy, and how long ``correlate()`` takes to pair the two legs.

The generated capture pair (classic pcap, Ethernet/IPv4/TCP, µs timestamps, built
with :mod:`struct`):

* client leg: 10.0.0.1:<distinct ports> → 192.0.2.1:80, ``GET /ws`` with the same
  headers on every connection, opened one every ``--spacing-us`` (all open at once:
  every connection stays open until all have exchanged their messages);
* server leg: the proxy's ONE source address 198.51.100.1 with other ports (a
  shuffled permutation) → 198.51.100.10:8080, forwarding delay 0.1-5 ms per
  connection (so the server-side order differs from the client-side order), the
  server capture's clock ``--offset-ms`` ahead (and ``--drift-ppm`` fast);
* each connection: a heartbeat text message common to all, one distinct
  client → server message and one distinct reply, then FIN both ways;
* ``--no-key``: the proxy replaces Sec-WebSocket-Key by one of its own (pairs must
  then come from message digests and timing).

The truth (client port → proxy port) is written next to the captures. Then the two
legs are analysed (timed) and paired with ``correlate()`` (timed separately)::

    python benchmarks/pairing_scale.py                 # 20,000 connections
    python benchmarks/pairing_scale.py --no-key --json benchmarks/data/pairing.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import struct
import sys
import time
from pathlib import Path

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_REC = struct.Struct("<IIII")
_ETH = bytes.fromhex("0200000000020200000000010800")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
EPOCH_US = 1_800_000_000_000_000
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CLIENT_IP, PROXY_VIP, PROXY_SNAT, BACKEND = "10.0.0.1", "192.0.2.1", "198.51.100.1", "198.51.100.10"


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ws_frame(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class _Flow:
    """One TCP connection as (µs, n, frame bytes) records appended to ``out``."""

    __slots__ = ("out", "ep", "seq", "clock")

    def __init__(self, out, client, server, isn, clock):
        self.out = out
        self.ep = {"c": (_ip(client[0]), client[1]), "s": (_ip(server[0]), server[1])}
        self.seq = {"c": isn, "s": isn + 7_000_000}
        self.clock = clock  # true µs → this capture's µs

    def pkt(self, frm: str, flags: int, us: int, payload: bytes = b"") -> None:
        to = "s" if frm == "c" else "c"
        (sip, sport), (dip, dport) = self.ep[frm], self.ep[to]
        ack = self.seq[to] & 0xFFFFFFFF if flags & ACK else 0
        ip = _IP.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, sip, dip)
        tcp = _TCP.pack(sport, dport, self.seq[frm] & 0xFFFFFFFF, ack, 5 << 4, flags, 65535, 0, 0)
        self.out.append((self.clock(us), len(self.out), _ETH + ip + tcp + payload))
        self.seq[frm] += len(payload) + (1 if flags & (SYN | FIN) else 0)


def _write(path: Path, records: list) -> Path:
    records.sort()
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for us, _, frame in records:
            f.write(_REC.pack(us // 1_000_000, us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return path


def generate(
    directory: Path | str,
    n: int = 20_000,
    *,
    pass_key: bool = True,
    offset_us: int = 1_234_000,
    drift_ppm: float = 0.0,
    spacing_us: int = 50,
    span_s: float | None = None,
    seed: int = 1,
) -> tuple[Path, Path, dict[int, int]]:
    """Write ``client.pcap``, ``server.pcap`` and ``truth.json`` into ``directory``;
    returns the two paths and the truth {client port: proxy port}.

    Messages are exchanged after every connection is open, in a shuffled order,
    over ``span_s`` seconds (default: one every ``spacing_us``). The server capture's
    clock reads ``true + offset_us + drift_ppm·10⁻⁶·(true − start)``."""
    if n > 64_000:
        raise ValueError("one client IP: at most 64,000 connections")
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    proxy_ports = list(range(1024, 1024 + n))
    rng.shuffle(proxy_ports)
    order = list(range(n))
    rng.shuffle(order)
    msg_at = {i: k for k, i in enumerate(order)}
    t_msgs = EPOCH_US + n * spacing_us + 20_000
    span_us = round(span_s * 1e6) if span_s is not None else n * spacing_us
    t_end = t_msgs + span_us + 20_000

    def cclock(us: int) -> int:
        return us

    def sclock(us: int) -> int:
        return us + offset_us + round(drift_ppm * 1e-6 * (us - EPOCH_US))

    crec: list = []
    srec: list = []
    truth: dict[int, int] = {}
    heartbeat = b'{"type":"heartbeat"}'
    for i in range(n):
        t0 = EPOCH_US + i * spacing_us
        d = rng.randint(100, 5_000)  # this connection's forwarding delay, µs
        cport, pport = 1024 + i, proxy_ports[i]
        truth[cport] = pport
        cf = _Flow(crec, (CLIENT_IP, cport), (PROXY_VIP, 80), 1_000_000 + i * 13, cclock)
        sf = _Flow(srec, (PROXY_SNAT, pport), (BACKEND, 8080), 3_000_000 + i * 17, sclock)
        ckey = base64.b64encode(rng.randbytes(16))
        skey = ckey if pass_key else base64.b64encode(rng.randbytes(16))

        def req(key: bytes, fwd: bool) -> bytes:
            return (
                b"GET /ws HTTP/1.1\r\nHost: 192.0.2.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\nUser-Agent: bench/1\r\n"
                + (b"X-Forwarded-For: 10.0.0.1\r\n" if fwd else b"")
                + b"\r\n"
            )

        def resp(key: bytes) -> bytes:
            acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n"
            )

        cf.pkt("c", SYN, t0)
        cf.pkt("s", SYN | ACK, t0 + 10)
        cf.pkt("c", ACK, t0 + 20)
        cf.pkt("c", PSH | ACK, t0 + 100, req(ckey, False))
        sf.pkt("c", SYN, t0 + 100 + d)
        sf.pkt("s", SYN | ACK, t0 + 110 + d)
        sf.pkt("c", ACK, t0 + 120 + d)
        sf.pkt("c", PSH | ACK, t0 + 140 + d, req(skey, True))
        sf.pkt("s", PSH | ACK, t0 + 300 + d, resp(skey))
        cf.pkt("s", PSH | ACK, t0 + 300 + 2 * d, resp(ckey))
        mask = rng.randbytes(4)
        t = t_msgs + (msg_at[i] * span_us) // n
        token = rng.randbytes(6).hex()
        for payload in (heartbeat, f"hello {i} {token}".encode()):
            cf.pkt("c", PSH | ACK, t, ws_frame(1, payload, mask))
            sf.pkt("c", PSH | ACK, t + d, ws_frame(1, payload, mask))
            t += 10 + 2 * d
        reply = f"welcome {i} {token}".encode()
        sf.pkt("s", PSH | ACK, t, ws_frame(1, reply, None))
        cf.pkt("s", PSH | ACK, t + d, ws_frame(1, reply, None))
        te = t_end + i * 2
        cf.pkt("c", FIN | ACK, te)
        sf.pkt("c", FIN | ACK, te + d)
        sf.pkt("s", FIN | ACK, te + d + 50)
        cf.pkt("s", FIN | ACK, te + 2 * d + 50)
        cf.pkt("c", ACK, te + 2 * d + 60)
        sf.pkt("c", ACK, te + d + 60)
    cpath = _write(directory / "client.pcap", crec)
    spath = _write(directory / "server.pcap", srec)
    (directory / "truth.json").write_text(json.dumps({str(k): v for k, v in truth.items()}))
    return cpath, spath, truth


def score(correlation, truth: dict[int, int]) -> dict[str, int]:
    """Pairs found / correct / wrong against the truth, ambiguous and unpaired."""
    found = correct = 0
    for p in correlation.pairs:
        found += 1
        if truth.get(p.client.tcp.client.port) == p.server.tcp.client.port:
            correct += 1
    return {
        "connections": len(truth),
        "pairs_found": found,
        "pairs_correct": correct,
        "pairs_wrong": found - correct,
        "ambiguous": len(correlation.ambiguous_client),
        "unpaired_client": len(correlation.unpaired_client),
    }


def run(n: int, *, pass_key: bool, directory: Path, seed: int = 1) -> dict:
    from wsanalyze.correlate import correlate
    from wsanalyze.pipeline import analyze_capture

    t = time.perf_counter()
    cpath, spath, truth = generate(directory, n, pass_key=pass_key, seed=seed)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    client = analyze_capture(cpath, "client")
    server = analyze_capture(spath, "server")
    t_analyze = time.perf_counter() - t
    t = time.perf_counter()
    corr = correlate(client, server)
    t_pair = time.perf_counter() - t
    theta = corr.clock_offset
    return {
        "n": n,
        "pass_key": pass_key,
        **score(corr, truth),
        "clock_offset_ms": round(theta.estimate_ns / 1e6, 3) if theta else None,
        "findings": sorted({f.code for f in corr.findings}),
        "seconds_generate": round(t_gen, 3),
        "seconds_analyze_both_legs": round(t_analyze, 3),
        "seconds_pair": round(t_pair, 3),
        "client_pcap_mb": round(cpath.stat().st_size / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--connections", type=int, default=20_000)
    ap.add_argument("--no-key", action="store_true", help="the proxy replaces Sec-WebSocket-Key")
    ap.add_argument("--both", action="store_true", help="run with and without the key")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "data" / "pairing")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    modes = [True, False] if args.both else [not args.no_key]
    results = []
    for pass_key in modes:
        r = run(args.connections, pass_key=pass_key, directory=args.dir, seed=args.seed)
        results.append(r)
        print(
            f"{r['n']} concurrent connections, key {'passed' if pass_key else 'replaced'}: "
            f"pairs found {r['pairs_found']}, correct {r['pairs_correct']}, "
            f"wrong {r['pairs_wrong']}, ambiguous {r['ambiguous']}; "
            f"θ {r['clock_offset_ms']} ms; analyse {r['seconds_analyze_both_legs']:.2f} s, "
            f"pair {r['seconds_pair']:.2f} s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    ok = all(r["pairs_correct"] == r["n"] and r["pairs_wrong"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
