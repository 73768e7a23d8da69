#!/usr/bin/env python3
"""Check a generated capture against its truth file, using tshark as the oracle.

Runs::

    tshark -r FILE -o tcp.reassemble_out_of_order:TRUE -d tcp.port==8080,http \\
        -Y websocket -T fields -e tcp.stream -e websocket.opcode

counts the lines per (stream, opcode) and compares them with
``per_connection[*].frames`` of ``FILE.truth.json`` (both directions added).
Then runs ``tshark -q -z expert`` and fails on any expert *error* (malformed
packets and the like); warnings and notes are printed.

Exit status 0 when everything matches, 1 otherwise.

Example::

    python benchmarks/gen_capture.py --size-mb 2 -o benchmarks/data/small.pcap
    python benchmarks/check_truth.py benchmarks/data/small.pcap
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

OPCODES = {"continuation": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}


def tshark_counts(tshark: str, path: Path) -> Counter[tuple[int, int]]:
    """(tcp.stream, opcode) -> number of lines tshark prints for it."""
    # fmt: off
    cmd = [
        tshark, "-r", str(path),
        "-o", "tcp.reassemble_out_of_order:TRUE",
        "-d", "tcp.port==8080,http",
        "-Y", "websocket",
        "-T", "fields", "-e", "tcp.stream", "-e", "websocket.opcode",
    ]
    # fmt: on
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    counts: Counter[tuple[int, int]] = Counter()
    for line in out.splitlines():
        stream, _, opcodes = line.partition("\t")
        for op in opcodes.split(","):  # several frames in one packet: "1,1"
            counts[int(stream), int(op)] += 1
    return counts


def truth_counts(truth: dict) -> Counter[tuple[int, int]]:
    """(stream, opcode) -> true number of frames, both directions added."""
    counts: Counter[tuple[int, int]] = Counter()
    for conn in truth["per_connection"]:
        for per_dir in conn["frames"].values():
            for name, n in per_dir.items():
                if n:
                    counts[conn["stream"], OPCODES[name]] += n
    return counts


def expert(tshark: str, path: Path) -> dict[str, list[str]]:
    """tshark's expert summary, by severity section (Errors, Warns, Notes, Chats)."""
    cmd = [tshark, "-r", str(path), "-o", "tcp.reassemble_out_of_order:TRUE", "-q", "-z", "expert"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^(\w+) \(\d+\)$", line.strip())
        if m:
            current = m.group(1)
            sections[current] = []
        elif current and re.match(r"^\s+\d+\s", line):
            sections[current].append(" ".join(line.split()))
    return sections


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap", type=Path)
    ap.add_argument("--truth", type=Path, help="truth file (default PCAP.truth.json)")
    ap.add_argument("--tshark", default="tshark")
    args = ap.parse_args(argv)
    truth_path = args.truth or args.pcap.with_name(args.pcap.name + ".truth.json")
    truth = json.loads(truth_path.read_text())

    ok = True
    want = truth_counts(truth)
    got = tshark_counts(args.tshark, args.pcap)
    diffs = sorted(k for k in want.keys() | got.keys() if want[k] != got[k])
    for stream, op in diffs[:20]:
        print(
            f"MISMATCH stream {stream} opcode {op}: truth {want[stream, op]}, tshark {got[stream, op]}"
        )
    if diffs:
        ok = False
        print(f"{len(diffs)} (stream, opcode) counts differ")
    else:
        print(
            f"frames: tshark agrees with the truth on all {len(want)} (stream, opcode) counts, "
            f"{sum(want.values())} frames in {truth['connections']} connections"
        )

    sections = expert(args.tshark, args.pcap)
    for name in ("Errors", "Warns", "Notes"):
        for line in sections.get(name, []):
            print(f"expert {name.lower()}: {line}")
    if sections.get("Errors"):
        ok = False
    tcp = truth.get("tcp", {})
    print(
        f"truth: {tcp.get('retransmissions')} retransmissions, "
        f"{tcp.get('out_of_order_pairs')} out-of-order pairs"
    )
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
