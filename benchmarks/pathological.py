#!/usr/bin/env python3
"""Pathological inputs: generators, and how long and how much memory
``wsanalyze pcap X --json OUT`` takes on each.

Each generator writes one capture (classic pcap, Ethernet / IPv4 / TCP,
microsecond timestamps; or pcapng) with :mod:`struct`, streaming, no packet
library:

``huge-length``
    a WebSocket frame declaring a 2^63-1 byte payload (RFC 6455 §5.2: the 64-bit
    length), followed by ``--payload-mib`` MiB of its payload, then the capture ends;
``huge-length-msb``
    the same with 2^64-1 (the most significant bit set, which §5.2 forbids);
``tiny-frames``
    ``--frames`` empty text frames (2 bytes each, 724 per segment) from the server
    in one WebSocket connection;
``syn-flood``
    ``--connections`` TCP connections that are a SYN only;
``tcp-handshakes``
    ``--connections`` connections of SYN, SYN-ACK, ACK, FIN/ACK both ways, no payload;
``deflate-bomb``
    one permessage-deflate message (RFC 7692) that inflates to ``--bomb-gib`` GiB of
    zeros (about 1/1000 of that on the wire);
``record-4g-pcap`` / ``record-4g-pcapng``
    a few good packets, then a pcap record (pcapng Enhanced Packet Block) declaring
    a 4 GiB length; the file is made sparse and long enough for that record to
    "fit", so only the reader's record-length bound can reject it.

Run them (files go to ``benchmarks/data/``, git-ignored, or ``--data-dir``)::

    python benchmarks/pathological.py                 # every input, full size
    python benchmarks/pathological.py tiny-frames --frames 1000000
    python benchmarks/pathological.py --scale 0.01    # a quick look

For each input: the file size, wall time, CPU time and peak RSS of
``python -m wsanalyze.cli pcap FILE --json OUT -q`` run as a child process (peak RSS
from ``os.wait4``, exact), the exit code, the JSON report's size and the finding
codes it lists. The tests (``tests/test_robustness.py``) use the same generators at
a small scale and assert behaviour, never time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
T0_US = 1_800_000_000_000_000
MSS = 1448

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_REC = struct.Struct("<IIII")
_ETH = bytes.fromhex("0200000000020200000000010800")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
CLIENT = (bytes([10, 0, 0, 1]), 40000)
SERVER = (bytes([10, 0, 0, 2]), 8080)


# --- writing -------------------------------------------------------------------------------


def tcp_packet(
    src: tuple[bytes, int],
    dst: tuple[bytes, int],
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
) -> bytes:
    """Ethernet + IPv4 + TCP (20-byte headers, checksums left 0) + payload."""
    ip = _IP.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src[0], dst[0])
    tcp = _TCP.pack(src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
    return _ETH + ip + tcp + payload


class PcapWriter:
    """A classic pcap (µs timestamps, Ethernet) written record by record."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.f.write(_PCAP_HEADER)
        self.packets = 0

    def packet(self, ts_us: int, frame: bytes) -> None:
        self.f.write(_REC.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame)))
        self.f.write(frame)
        self.packets += 1

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Flow:
    """One TCP connection written to a :class:`PcapWriter`: handshake, data in MSS
    segments (each acknowledging everything the peer sent), FINs."""

    def __init__(self, w: PcapWriter, client=CLIENT, server=SERVER, t_us: int = T0_US) -> None:
        self.w = w
        self.ep = {"c": client, "s": server}
        self.seq = {"c": 1_000_000, "s": 5_000_000}
        self.t = t_us

    def pkt(self, frm: str, flags: int, payload: bytes = b"") -> None:
        to = "s" if frm == "c" else "c"
        ack = self.seq[to] if flags & ACK else 0
        self.w.packet(
            self.t, tcp_packet(self.ep[frm], self.ep[to], self.seq[frm], ack, flags, payload)
        )
        self.seq[frm] += len(payload) + (1 if flags & (SYN | FIN) else 0)
        self.t += 1

    def open(self) -> None:
        self.pkt("c", SYN)
        self.pkt("s", SYN | ACK)
        self.pkt("c", ACK)

    def send(self, frm: str, data: bytes) -> None:
        for i in range(0, len(data), MSS):
            self.pkt(frm, PSH | ACK, data[i : i + MSS])

    def close(self) -> None:
        self.pkt("c", FIN | ACK)
        self.pkt("s", FIN | ACK)
        self.pkt("c", ACK)


def websocket_open(flow: Flow, *, deflate: bool = False) -> None:
    """TCP handshake, GET Upgrade, 101 (RFC 6455 §4; permessage-deflate when asked)."""
    key = base64.b64encode(b"pathological-key")
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    ext = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    flow.open()
    flow.send(
        "c",
        b"GET /ws HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + ext + b"\r\n",
    )
    flow.send(
        "s",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + ext + b"\r\n",
    )


def frame_header(b0: int, length: int) -> bytes:
    """An unmasked frame header with the minimal length encoding (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


# --- the inputs ------------------------------------------------------------------------------


def gen_huge_length(path: Path, *, payload_bytes: int = 64 << 20, msb: bool = False) -> Path:
    """A server frame declaring 2^63-1 (or, ``msb``, 2^64-1) payload bytes; then
    ``payload_bytes`` of its payload and the end of the capture."""
    length = (1 << 64) - 1 if msb else (1 << 63) - 1
    with PcapWriter(path) as w:
        flow = Flow(w)
        websocket_open(flow)
        flow.send("s", b"\x82\x7f" + struct.pack("!Q", length))
        chunk = bytes(range(256)) * (MSS // 256) + bytes(MSS % 256)
        for _ in range(payload_bytes // MSS):
            flow.pkt("s", PSH | ACK, chunk)
        flow.close()
    return path


def gen_tiny_frames(path: Path, *, frames: int = 10_000_000) -> Path:
    """``frames`` empty text frames (``81 00``) from the server, 724 per segment,
    then a close frame each way and the TCP close."""
    per = MSS // 2
    with PcapWriter(path) as w:
        flow = Flow(w)
        websocket_open(flow)
        full = b"\x81\x00" * per
        left = frames
        while left:
            n = min(per, left)
            flow.pkt("s", PSH | ACK, full if n == per else b"\x81\x00" * n)
            left -= n
        flow.send("c", b"\x88\x82" + b"\x00\x00\x00\x00" + b"\x03\xe8")  # close 1000, masked
        flow.send("s", b"\x88\x02\x03\xe8")
        flow.close()
    return path


def _client(i: int) -> tuple[bytes, int]:
    """A distinct client endpoint for connection ``i`` (10.1.0.0/16, ports 1024-60999)."""
    host, port = divmod(i, 60_000)
    return bytes([10, 1 + (host >> 16 & 0x3F), host >> 8 & 0xFF, host & 0xFF]), 1024 + port


def gen_connections(path: Path, *, connections: int = 1_000_000, handshake: bool = False) -> Path:
    """``connections`` TCP connections: a SYN each, or (``handshake``) a full
    three-way handshake and close without payload."""
    with PcapWriter(path) as w:
        t = T0_US
        for i in range(connections):
            flow = Flow(w, client=_client(i), t_us=t)
            if handshake:
                flow.open()
                flow.close()
            else:
                flow.pkt("c", SYN)
            t += 10
    return path


def gen_deflate_bomb(path: Path, *, inflated: int = 4 << 30) -> Path:
    """One server message, permessage-deflate (RSV1), whose payload inflates to
    ``inflated`` zero bytes (RFC 7692 §7.2.1: raw DEFLATE, the final 00 00 ff ff
    removed)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero = bytes(1 << 20)
    parts = []
    left = inflated
    while left:
        n = min(len(zero), left)
        parts.append(comp.compress(zero[:n]))
        left -= n
    parts.append(comp.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    payload = payload[:-4]
    with PcapWriter(path) as w:
        flow = Flow(w)
        websocket_open(flow, deflate=True)
        flow.send("s", frame_header(0xC2, len(payload)) + payload)  # FIN, RSV1, binary
        flow.send("s", b"\x88\x02\x03\xe8")
        flow.send("c", b"\x88\x82\x00\x00\x00\x00\x03\xe8")
        flow.close()
    return path


_FOUR_GIB = 0xFFFFFFF0  # a multiple of 4 (pcapng block lengths are)


def _good_frames(n: int = 3) -> list[bytes]:
    return [tcp_packet(CLIENT, SERVER, 1000 + i, 1, ACK | PSH, b"x") for i in range(n)]


def gen_record_4g_pcap(path: Path, *, sparse: bool = True) -> Path:
    """Good records, then one declaring 4 GiB captured (and on the wire); with
    ``sparse`` the file is extended (sparse) so that the record fits in it."""
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for i, fr in enumerate(_good_frames()):
            f.write(_REC.pack(T0_US // 1_000_000, i, len(fr), len(fr)) + fr)
        f.write(_REC.pack(T0_US // 1_000_000, 9, _FOUR_GIB, _FOUR_GIB))
        f.write(_good_frames(1)[0])  # the start of its "data"
        if sparse:
            f.truncate(f.tell() + _FOUR_GIB)
    return path


def gen_record_4g_pcapng(path: Path, *, sparse: bool = True) -> Path:
    """SHB, IDB, good Enhanced Packet Blocks, then an EPB whose block total length
    (and captured length) is 4 GiB; ``sparse`` as for :func:`gen_record_4g_pcap`."""

    def block(btype: int, body: bytes) -> bytes:
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    def epb(data: bytes, ts: int) -> bytes:
        pad = bytes(-len(data) % 4)
        return block(
            6,
            struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data + pad,
        )

    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(block(1, struct.pack("<HHI", 1, 0, 262144)))
        for i, fr in enumerate(_good_frames()):
            f.write(epb(fr, T0_US + i))
        f.write(struct.pack("<IIIIIII", 6, _FOUR_GIB, 0, 0, 0, _FOUR_GIB - 32, _FOUR_GIB - 32))
        if sparse:
            f.truncate(f.tell() + _FOUR_GIB)
    return path


# --- measuring -------------------------------------------------------------------------------


def measure(path: Path, out_json: Path, *, timeout: float = 900) -> dict:
    """Run ``python -m wsanalyze.cli pcap PATH --json OUT -q`` as a child; wall and
    CPU time, peak RSS (``os.wait4``), exit code, last stderr line, report size and
    finding codes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out_json.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "wsanalyze.cli", "pcap", str(path), "--json", str(out_json), "-q"]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT
        )
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip().splitlines()
    result = {
        "file_bytes": path.stat().st_size,
        "file_disk_bytes": path.stat().st_blocks * 512,
        "wall_s": round(wall, 2),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "maxrss_mib": round(ru.ru_maxrss / 1024, 1),
        "rc": rc,
        "stderr": stderr[-1] if stderr else "",
    }
    if out_json.exists():
        report = json.loads(out_json.read_text())
        result["json_bytes"] = out_json.stat().st_size
        result["findings"] = sorted({f["code"] for f in report["findings"]})
        result["connections_listed"] = len(report["connections"])
    return result


def inputs(scale: float) -> dict[str, tuple[str, Callable[[Path], Path]]]:
    """name -> (description, generator(path) -> path) at ``scale`` (1 = full size)."""
    frames = max(1, int(10_000_000 * scale))
    conns = max(1, int(1_000_000 * scale))
    payload = max(MSS, int((64 << 20) * scale))
    bomb = max(1 << 20, int((4 << 30) * scale))
    return {
        "huge-length": (
            f"frame declaring 2^63-1 bytes, {payload >> 20} MiB of it captured",
            lambda p: gen_huge_length(p, payload_bytes=payload),
        ),
        "huge-length-msb": (
            f"frame declaring 2^64-1 bytes (MSB set), {payload >> 20} MiB captured",
            lambda p: gen_huge_length(p, payload_bytes=payload, msb=True),
        ),
        "tiny-frames": (
            f"{frames:,} empty frames in one connection",
            lambda p: gen_tiny_frames(p, frames=frames),
        ),
        "syn-flood": (
            f"{conns:,} SYN-only connections",
            lambda p: gen_connections(p, connections=conns),
        ),
        "tcp-handshakes": (
            f"{conns:,} connections, handshake and close, no payload",
            lambda p: gen_connections(p, connections=conns, handshake=True),
        ),
        "deflate-bomb": (
            f"permessage-deflate message inflating to {bomb / (1 << 30):g} GiB",
            lambda p: gen_deflate_bomb(p, inflated=bomb),
        ),
        "record-4g-pcap": ("pcap record declaring 4 GiB (sparse file)", gen_record_4g_pcap),
        "record-4g-pcapng": ("pcapng block declaring 4 GiB (sparse file)", gen_record_4g_pcapng),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("names", nargs="*", help="inputs to run (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor (1 = full size)")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    table = inputs(args.scale)
    names = args.names or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown input(s) {unknown}; choose from {list(table)}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        desc, gen = table[name]
        path = args.data_dir / f"pathological-{name}.{'pcapng' if 'pcapng' in name else 'pcap'}"
        t0 = time.perf_counter()
        gen(path)
        gen_s = time.perf_counter() - t0
        r = measure(path, args.data_dir / f"pathological-{name}.json", timeout=args.timeout)
        r["input"] = desc
        r["generate_s"] = round(gen_s, 2)
        results[name] = r
        print(f"{name:17} {desc}")
        print(
            f"{'':17} file {r['file_bytes'] / 1e6:,.1f} MB (on disk {r['file_disk_bytes'] / 1e6:,.1f}),"
            f" wall {r['wall_s']} s, cpu {r['cpu_s']} s, peak RSS {r['maxrss_mib']} MiB,"
            f" exit {r['rc']}, JSON {r.get('json_bytes', 0):,} B"
        )
        print(
            f"{'':17} findings: {', '.join(r.get('findings', [])) or '-'}"
            + (f"; stderr: {r['stderr']}" if r["stderr"] else ""),
            flush=True,
        )
        if not args.keep:
            path.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
