#!/usr/bin/env python3
"""The floor of pure Python on a benchmark capture: the tightest reassembly and
frame walk we could write, for comparison with ``wsanalyze`` and tshark.

It reads a classic pcap (Ethernet, IPv4, TCP) with ``struct`` from a memory map,
keeps per direction only the next expected sequence number, a buffer and the
segments that arrived early, and walks RFC 6455 frame headers (§5.2) over the
in-order bytes, counting frames per opcode. It keeps nothing else: no findings,
no messages, no digests, no unmasking, no HTTP (the handshake is skipped by
looking for the blank line), no gaps, no report. It is what the issue's "a tight
pure-Python reassembly and frame walk takes about 1.1 s" measures.

    python benchmarks/tight_loop.py benchmarks/data/bench100.pcap [--runs 3]

Prints the median wall time of the loop (in-process, after imports), the frame
count (to check it against the truth file) and the figures per second.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import struct
import sys
import time
from pathlib import Path


def walk(path: Path) -> tuple[int, int]:
    """(packets, frames) of one pass over the capture."""
    rec = struct.Struct("<IIII").unpack_from
    eth_ip = struct.Struct("!12xH B x H 2x H x B 2x 4s 4s").unpack_from
    tcp = struct.Struct("!HHII B").unpack_from
    u16 = struct.Struct("!H").unpack_from
    u64 = struct.Struct("!Q").unpack_from
    flows: dict[tuple, list] = {}
    frames = 0
    packets = 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        end = len(buf)
        off = 24
        while off + 16 <= end:
            _, _, caplen, _ = rec(buf, off)
            p = off + 16
            off = p + caplen
            packets += 1
            et, vihl, tot, frag, proto, src, dst = eth_ip(buf, p)
            if et != 0x0800 or proto != 6:
                continue
            sport, dport, seq, _, offb = tcp(buf, p + 34)
            a = p + 34 + ((offb >> 4) << 2)
            b = p + 14 + tot
            key = (src, sport, dst, dport)
            st = flows.get(key)
            flags = buf[p + 47]
            if st is None:
                # [next_seq, pending bytes, early segments {seq: data}, in HTTP head]
                st = flows[key] = [(seq + 1) & 0xFFFFFFFF if flags & 2 else seq, b"", {}, True]
                if flags & 2:
                    continue
            n = b - a
            if not n:
                continue
            if seq != st[0]:
                if (seq - st[0]) & 0xFFFFFFFF < 0x80000000:
                    st[2][seq] = buf[a:b]  # early: wait for the hole
                continue  # else a retransmission
            data = st[1] + buf[a:b]
            nxt = (seq + n) & 0xFFFFFFFF
            early = st[2]
            while nxt in early:
                more = early.pop(nxt)
                data += more
                nxt = (nxt + len(more)) & 0xFFFFFFFF
            st[0] = nxt
            i = 0
            if st[3]:
                h = data.find(b"\r\n\r\n")
                if h < 0:
                    st[1] = data
                    continue
                i = h + 4
                st[3] = False
            n = len(data)
            while i + 2 <= n:
                b1 = data[i + 1]
                len7 = b1 & 0x7F
                hl = 2
                if len7 == 126:
                    if i + 4 > n:
                        break
                    plen = u16(data, i + 2)[0]
                    hl = 4
                elif len7 == 127:
                    if i + 10 > n:
                        break
                    plen = u64(data, i + 2)[0]
                    hl = 10
                else:
                    plen = len7
                if b1 & 0x80:
                    hl += 4
                if i + hl + plen > n:
                    break
                i += hl + plen
                frames += 1
            st[1] = data[i:]
    return packets, frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    size = args.pcap.stat().st_size
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        packets, frames = walk(args.pcap)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(
        f"tight loop: median {med:.2f} s (min {min(times):.2f}) over {args.runs} runs, "
        f"{packets:,} packets, {frames:,} frames, {size / 1e6 / med:.1f} MB/s, "
        f"{packets / med / 1e3:.1f} kpkt/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
