"""Fuzz every decoder of wsanalyze: arbitrary and mutated inputs must never raise
anything but the documented errors, and the outputs must stay well-formed.

    python benchmarks/fuzz.py                       # every target, 100,000 inputs each
    python benchmarks/fuzz.py --target frames --runs 20000
    python benchmarks/fuzz.py --engine atheris      # coverage-guided (pip install atheris)
    python benchmarks/fuzz.py --replay FILE...      # run saved inputs again
    python benchmarks/fuzz.py --replay FILE --minimize   # and shrink them
    python benchmarks/fuzz.py --list

Each target is a function of one ``bytes`` input, so both engines drive the same
code: the first bytes choose the parameters (direction, limits, chunking seed, mode)
and the rest is the traffic. A target fails when the code under test raises (only
``CaptureError`` from the capture reader is allowed, and only for the file as a
whole) or when one of its checks (the documented invariants: byte accounting,
chunking invariance, round-trips, limits) does not hold.

Engines
  ``mutate`` (default, no dependency): a seeded random + mutation loop over a corpus
  built from the committed real captures (``captures/*/*.pcap``, ``captures/h2``)
  and from valid inputs crafted here (frames, heads, deflate streams, sub-protocol
  messages, pcap/pcapng files of every supported link type).
  Mutations: bit flips, interesting 8/16/32/64-bit values in both byte orders,
  arithmetic, insertions, deletions, duplication, splicing two corpus entries,
  dictionary tokens, and for capture files header fields located by walking the
  pcap/pcapng structure (record lengths, link types, IDB options, IP/TCP fields).
  An input whose output signature (finding codes, kinds of events) is new joins
  the corpus: cheap behavioural feedback instead of code coverage.

  ``atheris`` (coverage-guided, libFuzzer): wsanalyze is instrumented on import; the
  same corpus seeds it. ``--runs`` is the number of inputs.

Targets run one after the other, each in its own process (``--jobs N`` runs N at
once). Every distinct failure (exception type and the innermost wsanalyze function,
or the check that failed) is printed once with its traceback, and its smallest
input is saved to ``benchmarks/data/fuzz/<target>-<type>-<hash>.bin``.
``--replay --minimize`` shrinks such a file (delta debugging, same failure) to
``*.min.bin``, the start of a regression test. Inputs slower than ``--slow``
seconds are saved too (not counted as failures). Per target: inputs run, failing
inputs, distinct failures, time, slowest input. Exit status 1 when anything failed.
``tests/test_robustness.py`` runs every target briefly.
"""

# ruff: noqa: F401 - _import() collects its imports into W with locals()
from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "data" / "fuzz"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

W = SimpleNamespace()  # wsanalyze names, imported by load() (after atheris instruments)


def load(instrument: bool = False) -> None:
    """Import wsanalyze (instrumented for atheris when ``instrument``)."""
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["wsanalyze"]):
            _import()
    else:
        _import()


def _import() -> None:
    from wsanalyze import api, http2, parallel, report
    from wsanalyze.capture import CaptureReader, open_capture
    from wsanalyze.catalogue import CATALOGUE
    from wsanalyze.deflate import DeflateParams, Inflater, deflate_params
    from wsanalyze.detect import ALIGN_WINDOW, DETECT_SCORE, detect
    from wsanalyze.errors import CaptureError
    from wsanalyze.frames import FrameDecoder, PayloadChunk
    from wsanalyze.handshake import accept_for, check_handshake
    from wsanalyze.http1 import Http1Parser
    from wsanalyze.messages import MessageAssembler
    from wsanalyze.model import (
        PREVIEW_BYTES,
        Direction,
        Finding,
        Frame,
        Message,
        RequestHead,
        ResponseHead,
        Segment,
    )
    from wsanalyze.pipeline import analyze_capture, parse_proxy_header
    from wsanalyze.subprotocols import Decoded, decoder_for, known
    from wsanalyze.subprotocols._util import TEXT_LIMIT
    from wsanalyze.tcp import TcpReassembler

    W.__dict__.update(locals())
    W.C2S, W.S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
    W.TOKENS = known()


class Violation(AssertionError):
    """A documented invariant does not hold."""


def check(cond: object, what: str = "") -> None:
    if not cond:
        raise Violation(what)


def _same(a: list, b: list) -> bool:
    """Two event lists are the same, findings compared by code and offset (their
    wording may quote what was buffered when they were made)."""

    def norm(x):
        return (x.code, x.offset) if isinstance(x, W.Finding) else x

    return [norm(x) for x in a] == [norm(x) for x in b]


def catalogued(items) -> list[str]:
    codes = [f.code for f in items if isinstance(f, W.Finding)]
    for c in codes:
        check(c in W.CATALOGUE, f"finding code not catalogued: {c}")
    return codes


class Src:
    """Reads parameters from the front of an input; zeros once exhausted."""

    __slots__ = ("d", "i")

    def __init__(self, d: bytes) -> None:
        self.d = d
        self.i = 0

    def u8(self) -> int:
        if self.i < len(self.d):
            self.i += 1
            return self.d[self.i - 1]
        return 0

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def u32(self) -> int:
        return self.u16() << 16 | self.u16()

    def take(self, n: int) -> bytes:
        b = self.d[self.i : self.i + n]
        self.i += len(b)
        return b

    def rest(self) -> bytes:
        return self.take(len(self.d))

    @property
    def left(self) -> int:
        return len(self.d) - self.i


def split(data: bytes, rng: random.Random, max_pieces: int = 12) -> list[bytes]:
    """``data`` cut at up to ``max_pieces - 1`` random places (no empty pieces)."""
    if len(data) < 2:
        return [data] if data else []
    k = rng.randint(0, min(max_pieces - 1, len(data) - 1))
    cuts = sorted(set(rng.sample(range(1, len(data)), k)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# --- wire builders (seeds and structured modes) ----------------------------------------


def ws_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    form: int | None = None,
) -> bytes:
    """One RFC 6455 §5.2 frame (``form`` forces the length encoding: 0, 2 or 8)."""
    n = len(payload)
    if form is None:
        form = 0 if n < 126 else 2 if n < 65536 else 8
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
    m = 0x80 if key is not None else 0
    if form == 0:
        head += bytes([m | n])
    elif form == 2:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    if key is None or not n:
        return head + (key or b"") + payload
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


def deflate_message(comp, payload: bytes) -> bytes:
    """RFC 7692 §7.2.1: compress, sync-flush, drop the 00 00 ff ff tail."""
    out = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


def http_head(start: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body


KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(*extra: tuple[bytes, bytes]) -> bytes:
    return http_head(
        b"GET /chat?x=1 HTTP/1.1",
        [
            (b"Host", b"server.example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", KEY),
            (b"Sec-WebSocket-Version", b"13"),
            *extra,
        ],
    )


def switching(*extra: tuple[bytes, bytes]) -> bytes:
    return http_head(
        b"HTTP/1.1 101 Switching Protocols",
        [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", ACCEPT),
            *extra,
        ],
    )


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_segment(sport, dport, seq, ack, flags, payload=b"", options=b"") -> bytes:
    options += b"\0" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    head = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, 65535, 0, 0
    )
    return head + options + payload


def ipv4(
    payload: bytes, src=b"\xc0\x00\x02\x01", dst=b"\xc6\x33\x64\x02", proto=6, frag=0
) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(
    payload: bytes, src=b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01", dst=None, exts=b""
) -> bytes:
    dst = dst or b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02"
    nh = 0 if exts else 6  # exts: one hop-by-hop header (8 bytes) leading to TCP
    return (
        struct.pack("!IHBB", 6 << 28, len(exts) + len(payload), nh, 64) + src + dst + exts + payload
    )


def eth(ip: bytes, ethertype: int = 0x0800, vlans: tuple[int, ...] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", tpid, 7) for tpid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", ethertype) + ip


def conversation(
    steps: list[tuple[int, bytes]],
    *,
    v6: bool = False,
    syn: bool = True,
    fin: bool = True,
    mss: int = 1400,
    cport: int = 40000,
    sport: int = 8080,
    isn: tuple[int, int] = (1000, 2**32 - 300),
    t0: int = 1_700_000_000 * 10**9,
) -> list[tuple[int, bytes]]:
    """IP packets (ts_ns, bytes) of one TCP connection: handshake, ``steps`` as
    (0 client / 1 server, payload) split at ``mss``, acknowledgements, FINs."""
    if v6:
        c_ip = b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01"
        s_ip = b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02"
    else:
        c_ip, s_ip = b"\xc0\x00\x02\x01", b"\xc6\x33\x64\x02"
    nxt = [isn[0] + 1, isn[1] + 1]
    out: list[tuple[int, bytes]] = []
    t = [t0]

    def send(side: int, flags: int, payload: bytes = b"", seq: int | None = None) -> None:
        src, dst = (c_ip, s_ip) if side == 0 else (s_ip, c_ip)
        sp, dp = (cport, sport) if side == 0 else (sport, cport)
        s = nxt[side] if seq is None else seq
        seg = tcp_segment(sp, dp, s, nxt[1 - side], flags, payload)
        ip = ipv6(seg, src, dst) if v6 else ipv4(seg, src, dst)
        t[0] += 137_000
        out.append((t[0], ip))
        if seq is None:
            nxt[side] = (nxt[side] + len(payload)) & 0xFFFFFFFF

    if syn:
        send(0, 0x02, seq=isn[0])
        send(1, 0x12, seq=isn[1])
        send(0, 0x10)
    for side, payload in steps:
        for i in range(0, len(payload), mss):
            send(side, 0x18, payload[i : i + mss])
        send(1 - side, 0x10)
    if fin:
        send(0, 0x11)
        nxt[0] = (nxt[0] + 1) & 0xFFFFFFFF
        send(1, 0x11)
        nxt[1] = (nxt[1] + 1) & 0xFFFFFFFF
        send(0, 0x10)
    return out


def pcap(
    records: list[tuple[int, bytes]],
    *,
    linktype: int = 1,
    order: str = "<",
    nanos: bool = False,
    snaplen: int = 65535,
) -> bytes:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in records:
        sec, frac = divmod(ts, 10**9)
        frac = frac if nanos else frac // 1000
        cap = frame[:snaplen]
        out.append(struct.pack(order + "IIII", sec, frac, len(cap), len(frame)) + cap)
    return b"".join(out)


def _option(order: str, code: int, value: bytes) -> bytes:
    pad = b"\0" * (-len(value) % 4)
    return struct.pack(order + "HH", code, len(value)) + value + pad


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def pcapng(
    records: list[tuple[int, bytes]],
    *,
    linktype: int = 1,
    order: str = "<",
    tsresol: int | None = 6,
    tsoffset: int = 0,
    kinds: str = "E",
) -> bytes:
    """One section, one interface (``if_tsresol``, ``if_tsoffset`` options), packets
    as EPB / SPB / PB blocks cycling through ``kinds`` ('E', 'S', 'P')."""
    shb_opts = _option(order, 4, b"fuzz") + _option(order, 0, b"")
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts)
    opts = b""
    if tsresol is not None:
        opts += _option(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += _option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += _option(order, 0, b"")
    idb = _block(order, 1, struct.pack(order + "HHI", linktype, 0, 65535) + opts)
    res = 10 ** (tsresol if tsresol is not None and tsresol < 128 else 6)
    blocks = [shb, idb]
    for i, (ts, frame) in enumerate(records):
        kind = kinds[i % len(kinds)]
        units = (ts - tsoffset * 10**9) * res // 10**9
        if kind == "S":
            blocks.append(_block(order, 3, struct.pack(order + "I", len(frame)) + frame))
        elif kind == "P":
            body = struct.pack(
                order + "HHIIII", 0, 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)
            )
            blocks.append(_block(order, 2, body + frame))
        else:
            body = struct.pack(
                order + "IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)
            )
            blocks.append(
                _block(
                    order,
                    6,
                    body
                    + frame
                    + b"\0" * (-len(frame) % 4)
                    + _option(order, 1, b"c")
                    + _option(order, 0, b""),
                )
            )
    return b"".join(blocks)


def link(ip: bytes, linktype: int) -> bytes:
    """``ip`` framed for ``linktype``."""
    v6 = ip[0] >> 4 == 6
    if linktype == 1:
        return eth(ip, 0x86DD if v6 else 0x0800)
    if linktype == 113:  # SLL
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x86DD if v6 else 0x0800) + ip
    if linktype == 276:  # SLL2
        return struct.pack("!HHIHBB8s", 0x86DD if v6 else 0x0800, 0, 2, 1, 0, 6, b"\x02" * 8) + ip
    if linktype == 0:  # NULL, host byte order (little-endian here)
        return struct.pack("<I", 30 if v6 else 2) + ip
    if linktype == 108:  # LOOP
        return struct.pack("!I", 30 if v6 else 2) + ip
    return ip  # raw


# --- seeds ----------------------------------------------------------------------------

MK = b"\x37\xfa\x21\x3d"


def frame_streams() -> list[bytes]:
    c = [
        ws_frame(1, b"Hello", key=MK),
        ws_frame(1, b"Hel", fin=False, key=MK)
        + ws_frame(9, b"p", key=MK)
        + ws_frame(0, b"lo", key=MK),
        ws_frame(2, bytes(range(200)), key=MK),
        ws_frame(2, b"x" * 70000, key=MK),
        ws_frame(8, struct.pack("!H", 1000) + b"bye", key=MK),
        ws_frame(1, b"\xc3\xa9t\xc3", key=MK, fin=False) + ws_frame(0, b"\xa9", key=MK),
        ws_frame(1, b"ab", key=MK, form=2) + ws_frame(1, b"c", key=MK, form=8),
        ws_frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4, key=MK),
    ]
    s = [
        ws_frame(1, b"Hello"),
        ws_frame(10, b"pong") + ws_frame(8, b"\x03\xe8"),
        ws_frame(2, b"y" * 300) + ws_frame(1, b"\xff\xfe"),
        ws_frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)
        + ws_frame(1, b"\xf2\x00\x11\x00\x00", rsv=4),
        bytes([0x82, 0x7F]) + (2**63 - 1).to_bytes(8, "big") + b"zz",
        ws_frame(3, b"r") + ws_frame(1, b"a", rsv=7) + ws_frame(9, b"p" * 130),
    ]
    return c + s


def http_streams() -> list[bytes]:
    return [
        upgrade_request(
            (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")
        ),
        switching((b"Sec-WebSocket-Protocol", b"v4.channel.k8s.io")) + ws_frame(1, b"hi"),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\nHost: a\n folded\nX : y\n\n",
        b"CONNECT host:443 HTTP/1.1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nbody until close",
        b"\x16\x03\x01\x00\x05hello",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ]


def deflate_streams() -> list[bytes]:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [deflate_message(comp, m) for m in (b"Hello", b"Hello again", b"x" * 1000, b"")]
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    return out + [
        deflate_message(bomb, bytes(200_000)),
        zlib.compress(b"final block", 9)[2:-4],
        b"\xf2\x48\xcd\xc9\xc9\x07\x00",
    ]


def subprotocol_payloads() -> list[bytes]:
    return [
        b"\x01stdout text",
        b'\x03{"metadata":{},"status":"Failure","message":"exit","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"2"}]}}',
        b'\x04{"Width":80,"Height":24}',
        b"\xff\x00",
        b"1aGVsbG8=",
        b'{"type":"connection_init","payload":{}}',
        b'{"id":"1","type":"subscribe","payload":{"query":"subscription { a }"}}',
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
        b"\x30\x07\x00\x03a/bhi",
        b"SEND\ndestination:/q\ncontent-length:2\n\nhi\x00",
        b"CONNECTED\nversion:1.2\n\n\x00",
        b'[1,"realm1",{"roles":{}}]',
        b'[48,1,{},"com.add",[1,2]]',
        struct.pack("<QQQQ", 3, 32, 37, 40) + b"shell" + b"{}{}" + b'{"msg_type":"x"}',
        b'{"channel":"shell","header":{"msg_type":"execute_request"},"content":{"code":"1"}}',
    ]


def proxy_headers() -> list[bytes]:
    v2 = b"\r\n\r\n\x00\r\nQUIT\n"
    return [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 80\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n",
        b"PROXY UNKNOWN\r\n",
        v2 + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + b"\x9c\x40\x00\x50",
        v2 + b"\x21\x21\x00\x24" + bytes(16) + bytes(15) + b"\x01" + b"\x9c\x40\x00\x50",
        v2 + b"\x20\x00\x00\x00",
        v2 + b"\x21\x11\x00\x10" + bytes(12) + b"\x04\x00\x01\x00",
    ]


def ws_session(
    extra_req=(), extra_resp=(), messages=None, deflate: bool = False
) -> list[tuple[int, bytes]]:
    """Steps of a WebSocket connection: handshake, messages, closes."""
    steps: list[tuple[int, bytes]] = [(0, upgrade_request(*extra_req)), (1, switching(*extra_resp))]
    if messages is None:
        messages = [(0, 1, b"hello"), (1, 1, b"world"), (0, 2, bytes(300)), (1, 9, b"p")]
    comps = [zlib.compressobj(6, zlib.DEFLATED, -15) for _ in range(2)]
    for side, op, payload in messages:
        rsv = 0
        if deflate and op in (1, 2):
            payload, rsv = deflate_message(comps[side], payload), 4
        steps.append((side, ws_frame(op, payload, rsv=rsv, key=MK if side == 0 else None)))
    steps += [(0, ws_frame(8, b"\x03\xe8", key=MK)), (1, ws_frame(8, b"\x03\xe8"))]
    return steps


def pipeline_seeds() -> list[bytes]:
    pmd = (b"Sec-WebSocket-Extensions", b"permessage-deflate")
    sessions = [
        conversation(ws_session()),
        conversation(ws_session([pmd], [pmd], deflate=True)),
        conversation([(0, proxy_headers()[0][:-18] + upgrade_request()), *ws_session()[1:]]),
        conversation([(0, proxy_headers()[3] + upgrade_request()), *ws_session()[1:]], v6=True),
        conversation(
            ws_session(
                [(b"Sec-WebSocket-Protocol", b"v4.channel.k8s.io")],
                [(b"Sec-WebSocket-Protocol", b"v4.channel.k8s.io")],
                [(0, 2, b"\x00ls\n"), (1, 2, b"\x01out"), (1, 2, subprotocol_payloads()[1])],
            )
        ),
        conversation(
            ws_session(
                [(b"Sec-WebSocket-Protocol", b"mqtt")],
                [(b"Sec-WebSocket-Protocol", b"mqtt")],
                [(0, 2, subprotocol_payloads()[7]), (1, 2, b"\x20\x02\x00\x00")],
            )
        ),
        conversation(
            [(0, ws_frame(1, f"m{i}".encode(), key=MK)) for i in range(6)]
            + [(1, ws_frame(1, f"r{i}".encode())) for i in range(6)],
            syn=False,
        ),
        conversation([(0, http_streams()[2]), (1, http_streams()[5])]),
        conversation(
            [(0, upgrade_request()), (1, http_streams()[7]), (0, b"GET /x HTTP/1.1\r\n\r\n")]
        ),
        conversation(
            ws_session(messages=[(0, 1, b"frag")] * 2 + [(1, 2, b"\x00" * 2000)]), mss=500
        ),
    ]
    seeds = [pcap([(t, link(ip, 1)) for t, ip in s]) for s in sessions]
    seeds.append(
        pcapng([(t, link(ip, 113)) for t, ip in sessions[0]], linktype=113, kinds="EPS", tsresol=9)
    )
    seeds.append(pcap([(t, link(ip, 276)) for t, ip in sessions[0]], linktype=276, nanos=True))
    return seeds


def capture_seeds() -> list[bytes]:
    recs = conversation(ws_session(), v6=False)
    recs6 = conversation(ws_session(), v6=True)
    seeds = []
    for lt in (0, 1, 101, 108, 113, 228, 229, 276, 12, 127):
        r = recs6 if lt == 229 else recs
        seeds.append(pcap([(t, link(ip, lt)) for t, ip in r[:6]], linktype=lt))
    seeds.append(pcap([(t, link(ip, 1)) for t, ip in recs[:5]], order=">", nanos=True))
    seeds.append(pcap([(t, link(ip, 1)) for t, ip in recs[:5]], snaplen=60))
    seeds.append(
        pcap(
            [
                (recs[0][0], eth(ipv4(tcp_segment(1, 2, 3, 4, 0x18, b"frag"), frag=0x2000))),
                (
                    recs[0][0],
                    eth(ipv6(tcp_segment(1, 2, 3, 4, 0x18, b"ext"), exts=b"\x06\x00" + bytes(6))),
                ),
                (recs[0][0], eth(recs[3][1], 0x0800, (0x88A8, 0x8100))),
                (recs[0][0], eth(ipv4(b"\x45" + bytes(19), proto=17))),
            ]
        )
    )
    framed = [(t, eth(ip)) for t, ip in recs[:6]]
    for order in ("<", ">"):
        seeds.append(pcapng(framed, order=order, kinds="EPS", tsresol=9, tsoffset=3))
        seeds.append(pcapng(recs6[:4], order=order, linktype=101, tsresol=0x83))
    seeds.append(
        pcapng(framed[:3])
        + pcapng([(t, link(ip, 113)) for t, ip in recs[3:6]], order=">", linktype=113)
    )
    return seeds


def real_captures(limit: int) -> list[bytes]:
    """The committed real captures, cut after the last whole pcap record within
    ``limit`` bytes."""
    out = []
    for p in sorted(
        [*(ROOT / "captures").glob("*/*.pcap"), *(ROOT / "captures").glob("h2/*/*.pcap")]
    ):
        data = p.read_bytes()
        if len(data) > limit and data[:4] == b"\xd4\xc3\xb2\xa1":
            off = 24
            while off + 16 <= len(data):
                n = struct.unpack_from("<I", data, off + 8)[0]
                if off + 16 + n > limit:
                    break
                off += 16 + n
            data = data[:off]
        out.append(data[:limit])
    return out


# --- targets ----------------------------------------------------------------------------

SIG = frozenset


def t_capture(data: bytes):
    try:
        r = W.CaptureReader.from_bytes(data, "fuzz")
    except W.CaptureError as exc:
        check("\n" not in str(exc), "CaptureError message is one line")
        return SIG({"error", str(exc)[:30]})
    last = n = 0
    for s in r:
        n += 1
        check(s.packet > last, "packet numbers increase")
        last = s.packet
        check(len(s.payload) <= s.payload_len, "payload within payload_len")
        check(0 <= s.seq < 2**32 and 0 <= s.ack < 2**32 and 0 <= s.flags <= 0xFF, "tcp fields")
        check(0 <= s.sport < 65536 and 0 <= s.dport < 65536, "ports")
        check(len(s.src) in (4, 16) and len(s.dst) == len(s.src), "addresses")
        check(type(s.ts_ns) is int, "integer timestamps")
    check(r.tcp_packets == n <= r.packets <= len(data) // 12, "packet counts")
    check(r.bytes_read <= len(data), "bytes_read")
    if r.first_ts_ns is not None:
        check(r.first_ts_ns <= r.last_ts_ns, "first_ts <= last_ts")
    codes = catalogued(r.findings)
    packets = r.packets
    check(sum(1 for _ in r) == n and r.packets == packets, "iterating again gives the same")
    return SIG(codes) | {r.format, min(n, 3), tuple(sorted(r.link_types))[:2]}


_TMP: list[str] = []


def _tmp_path() -> str:
    if not _TMP:
        d = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, p = tempfile.mkstemp(prefix="wsanalyze-fuzz-", suffix=".pcap", dir=d)
        os.close(fd)
        atexit.register(lambda: os.path.exists(p) and os.unlink(p))
        _TMP.append(p)
    return _TMP[0]


def t_pipeline(data: bytes):
    path = _tmp_path()
    with open(path, "wb") as f:
        f.write(data)
    h = hashlib.blake2b(data, digest_size=2).digest()
    limit = (None, 1, 2, 3, 7)[h[1] % 5]  # max_messages, from the input
    try:
        ca = W.analyze_capture(path, "client", strict=True, max_messages=limit)
    except W.CaptureError as exc:
        check("\n" not in str(exc))
        return SIG({"error"})
    sig = set(catalogued(ca.findings))
    if limit is not None:
        kept = sum(len(c.messages) for c in ca.connections)
        check(kept <= limit + 4 * len(ca.connections), "messages kept within max_messages")
        check(len(ca.frames) <= limit, "frame rows within max_messages")
        not_kept = sum(sum((c.messages_not_kept or {}).values()) for c in ca.connections)
        check(not not_kept or "analysis_messages_not_kept" in sig, "a finding when not kept")
    for c in ca.connections:
        sig.update(catalogued(c.findings))
        sig.add(c.protocol)
        for d in (W.C2S, W.S2C):
            acct = c.bytes[d]
            check(min(acct.decoded, acct.gap, acct.undecodable, acct.other) >= 0, "account >= 0")
            check(
                acct.decoded + acct.undecodable + acct.other == c.tcp.bytes[d],
                f"byte account {acct} != tcp bytes {c.tcp.bytes[d]}",
            )
        for m in c.messages:
            check(len(m.preview) <= W.PREVIEW_BYTES, "preview bounded")
    if h[0] < 16:
        # 1 in 16: the whole analysis, the JSON report, the tables, the summary
        a = W.api.analyze(path, strict=True)
        json.dumps(W.report.to_json(a))
        for name, df in a.tables().items():
            check(df is not None, f"table {name}")
        a.summary()
        sig.add("analyzed")
        if h[0] < 2 and W.parallel.parallel_available():
            # 1 in 128: as both captures, in two processes and in one: the same report
            at_once = W.api.analyze(path, path, strict=True, parallel=True)
            one_by_one = W.api.analyze(path, path, strict=True, parallel=False)
            check(
                json.dumps(W.report.to_json(at_once)) == json.dumps(W.report.to_json(one_by_one)),
                "two processes give the same analysis as one",
            )
    return SIG(sig)


class _Rec:
    """StreamSink checking the contract: per direction, contiguous offsets; nothing
    after fin/rst; end exactly once."""

    __slots__ = ("conn", "next", "closed", "ended", "datab", "gapb", "events")

    def __init__(self, conn) -> None:
        self.conn = conn
        self.next = [0, 0]
        self.closed = [False, False]
        self.ended = False
        self.datab = [0, 0]
        self.gapb = [0, 0]
        self.events: list[list[tuple[int, bytes]]] = [[], []]

    def _at(self, d, offset) -> None:
        check(not self.ended, "call after end")
        check(not self.closed[d], "data after fin/rst")
        check(offset == self.next[d], f"non-contiguous offset {offset} != {self.next[d]}")

    def data(self, d, offset, data, ts_ns, packet) -> None:
        self._at(d, offset)
        check(type(data) is bytes and len(data) > 0, "data is non-empty bytes")
        self.next[d] += len(data)
        self.datab[d] += len(data)
        self.events[d].append((offset, data))

    def gap(self, d, offset, length, ts_ns, packet) -> None:
        self._at(d, offset)
        check(length > 0, "gap length > 0")
        self.next[d] += length
        self.gapb[d] += length

    def fin(self, d, ts_ns, packet) -> None:
        check(not self.ended and not self.closed[d], "fin after end/fin/rst")
        self.closed[d] = True

    def rst(self, d, ts_ns, packet) -> None:
        check(not self.ended, "rst after end")
        self.closed[d] = True

    def end(self, ts_ns) -> None:
        check(not self.ended, "end twice")
        self.ended = True


_EPS = [
    (b"\x0a\x00\x00\x01", 40000),
    (b"\x0a\x00\x00\x02", 80),
    (b"\x0a\x00\x00\x01", 80),
    (b"\x20\x01" + bytes(13) + b"\x01", 443),
]


def _stream_byte(seq: int) -> int:
    """Consistent mode: the byte at sequence number ``seq`` is a byte of the aligned
    32-bit word ``seq & ~3`` (big-endian), so any 7 bytes reveal their sequence number."""
    return (seq & 0xFFFFFFFC) >> (8 * (3 - (seq & 3))) & 0xFF


def _base_of(events: list[tuple[int, bytes]]) -> int | None:
    """The sequence number of stream offset 0 implied by consistent-mode data."""
    for off, data in events:
        if len(data) < 7:
            continue
        for j in range(4):
            w = int.from_bytes(data[j : j + 4], "big")
            if w & 3 == 0 and all(data[i] == _stream_byte(w - j + i) for i in range(len(data))):
                return (w - j - off) & 0xFFFFFFFF
        return -1  # not consistent-mode bytes at all
    return None


def t_tcp(data: bytes):
    s = Src(data)
    p0 = s.u8()
    consistent = bool(p0 & 1)
    bound = 1 + (p0 >> 1 & 7)
    recs: list[_Rec] = []

    def on_conn(conn):
        r = _Rec(conn)
        recs.append(r)
        return r

    kw: dict = {}
    if p0 & 0x10:
        kw = {"max_pending_segments": bound, "max_pending_bytes": bound * 16, "recent_window": 8}
    released: list = []
    if p0 & 0x20:  # release empty connections, with small bounds
        kw.update(on_release=released.append, max_empty=bound, max_released=bound)
    ra = W.TcpReassembler(on_conn, **kw)
    isn = [s.u32(), 2**32 - 1 - s.u8(), s.u16(), 2**31 + s.u8()]
    ts = 1_000_000
    pkt = 0
    while s.left >= 4:
        b0, flags, mode, plen = s.u8(), s.u8(), s.u8(), s.u8() & 63
        src, dst = _EPS[b0 & 3], _EPS[b0 >> 2 & 3]
        k = b0 & 3
        if mode & 3 == 0:
            seq = s.u32()
        else:
            seq = (isn[k] + (s.u8() if mode & 3 == 1 else s.u16()) - (mode >> 2 & 3)) & 0xFFFFFFFF
        ack = s.u32() if mode & 0x10 else (isn[b0 >> 2 & 3] + s.u8() * 7) & 0xFFFFFFFF
        fl = flags & 0x3F | (flags & 0xC0 if b0 & 0x40 else 0)
        if consistent:  # data on a SYN starts after it (RFC 9293 §3.4)
            first = seq + 1 if fl & 0x02 else seq
            payload = bytes(_stream_byte(first + i) for i in range(plen))
        else:
            payload = s.take(plen)
        extra = (mode >> 5) if b0 & 0x80 else 0
        ts += s.u8() * 1000 - (3000 if mode & 0x80 else 0)
        pkt += 1
        ra.feed(W.Segment(pkt, ts, *src, *dst, seq, ack, fl, 512, payload, len(payload) + extra))
    ra.finish()
    sig = set()
    indices = sorted([c.index for c in ra.connections] + [c.index for c in released])
    check(indices == list(range(1, len(recs) + 1)), "indices")
    check(ra.released == len(released), "released counted")
    gone = {c.index for c in released}
    for r in recs:
        if r.conn.index in gone:  # released: it carried nothing, and ended
            check(r.datab == [0, 0] and r.gapb == [0, 0] and r.ended, "released only when empty")
    for r in recs:
        check(r.ended, "every connection ended")
        codes = catalogued(r.conn.findings)
        sig.update(codes)
        for d in (0, 1):
            check(r.conn.bytes[d] == r.datab[d], "conn.bytes == data delivered")
            check(r.conn.gap_bytes[d] == r.gapb[d], "conn.gap_bytes == gaps delivered")
            if consistent:
                base = _base_of(r.events[d])
                if base is not None:
                    check(base >= 0, "delivered bytes are bytes that were sent")
                    for off, chunk in r.events[d]:
                        check(
                            all(
                                chunk[i] == _stream_byte(base + off + i) for i in range(len(chunk))
                            ),
                            "every byte delivered at the offset its sequence number gives",
                        )
        if consistent:
            check("tcp_overlap_conflict" not in codes, "identical copies never conflict")
    return SIG(sig) | {len(recs) > 1, ("released", bool(released)), ("evicted", ra.evicted > 0)}


def _http_balanced(p) -> None:
    check(
        p.decoded_bytes + p.undecodable_bytes + p.gap_bytes + p.taken_bytes + p.buffered
        == p.position,
        "http1 byte accounting",
    )


def _http_events(events, direction) -> list[str]:
    for e in events:
        check(isinstance(e, W.RequestHead | W.ResponseHead | W.Finding), "event types")
        if isinstance(e, W.Finding):
            check(e.direction == direction, "finding direction")
    return catalogued(events)


def t_http1(data: bytes):
    s = Src(data)
    p0, seed = s.u8(), s.u16()
    direction = W.C2S if p0 & 1 else W.S2C
    max_head = (16, 64, 1024, 65536)[p0 >> 1 & 3]
    method = (b"GET", b"HEAD", b"CONNECT", b"POST")[p0 >> 3 & 3]
    rng = random.Random(seed)
    stream = s.rest()
    if p0 & 0x20:  # ops: pause / resume / take_rest / gaps interleaved
        p = W.Http1Parser(direction, max_head=max_head)
        p.expect_response_to(method)
        events: list = []
        for i, piece in enumerate(split(stream, rng, 16)):
            events += p.feed(piece, i, i + 1)
            _http_balanced(p)
            op = rng.randrange(8)
            if op == 0:
                events += p.gap(rng.randint(1, 40), i, i + 1)
            elif op == 1:
                events += p.resume()
            elif op == 2:
                p.pause()
            elif op == 3:
                off, rest = p.take_rest()
                check(off >= 0 and isinstance(rest, bytes), "take_rest")
            _http_balanced(p)
        events += p.eof(10**6)
        _http_balanced(p)
        return SIG(_http_events(events, direction)) | {"ops"}
    # chunking invariance: the same stream (with gaps at the same stream positions)
    # parsed whole-per-segment and cut into random pieces gives the same events.
    segments: list = []
    for piece in split(stream, rng, 4):
        segments.append(piece)
        if p0 & 0x40 and rng.random() < 0.5:
            segments.append(rng.randint(1, 60))
    results = []
    for cut in (False, True):
        p = W.Http1Parser(direction, max_head=max_head)
        p.expect_response_to(method)
        ev: list = []
        for seg in segments:
            if isinstance(seg, int):
                ev += p.gap(seg, 5, 2)
            else:
                for piece in split(seg, rng, 8) if cut else [seg]:
                    ev += p.feed(piece, 5, 2)
                    _http_balanced(p)
        ev += p.eof(9)
        _http_balanced(p)
        results.append((ev, p.decoded_bytes, p.undecodable_bytes, p.gap_bytes, p.take_rest()))
    evs = [r[0] for r in results]
    overflow = [
        next(
            (
                i
                for i, e in enumerate(ev)
                if getattr(e, "code", "") == "http_upgrade_buffer_overflow"
            ),
            None,
        )
        for ev in evs
    ]
    if overflow == [None, None]:
        check(_same(*evs), "http1 chunking changes the events")
        check(results[0][1:] == results[1][1:], "http1 chunking changes the byte accounting")
    else:  # documented: the bytes of the feed that started a hold are all kept
        n = min(i for i in overflow if i is not None)
        check(_same(evs[0][:n], evs[1][:n]), "http1 chunking changes the events")
    return SIG(_http_events(results[0][0], direction)) | {p.switched, p.failed}


def _frame_view(items):
    frames, findings, chunks = [], [], {}
    for x in items:
        if isinstance(x, W.Frame):
            frames.append(x)
        elif isinstance(x, W.Finding):
            findings.append(x)
        elif isinstance(x, W.PayloadChunk):
            chunks.setdefault(x.frame_offset, []).append(x.data)
        else:
            raise Violation(f"frame decoder returned {type(x).__name__}")
    return frames, findings, {k: b"".join(v) for k, v in chunks.items()}


def _frames_run(kw, segments, rng, cut: bool):
    dec = W.FrameDecoder(**kw)
    out: list = []
    for seg in segments:
        if isinstance(seg, int):
            out += dec.gap(seg, 5, 2)
        else:
            for piece in split(seg, rng, 10) if cut else [seg]:
                out += dec.feed(piece, 5, 2)
                check(
                    dec.decoded_bytes + dec.undecodable_bytes + dec.buffered_bytes == dec.fed_bytes,
                    "frame byte accounting",
                )
    out += dec.eof(9)
    check(dec.buffered_bytes == 0, "nothing buffered after eof")
    check(
        dec.decoded_bytes + dec.undecodable_bytes == dec.fed_bytes, "frame byte accounting at eof"
    )
    check(dec.eof(10) == [], "eof twice returns nothing")
    return out, dec


def t_frames(data: bytes):
    s = Src(data)
    p0, p1, seed = s.u8(), s.u8(), s.u16()
    direction = W.C2S if p0 & 1 else W.S2C
    kw = {
        "direction": direction,
        "rsv_allowed": p0 >> 1 & 7,
        "max_buffer": (0, 7, 64, 16 * 2**20)[p0 >> 4 & 3],
        "stream_payloads": bool(p0 & 0x40),
        "start_offset": p1 * 1000,
    }
    rng = random.Random(seed)
    if p0 & 0x80:  # round trip: frames built here decode to what was encoded
        specs, wire = [], b""
        while s.left:
            b = s.u8()
            op = (0, 1, 2, 8, 9, 10, 3, 11)[b & 7]
            n = s.u8()
            payload = s.take(n * (257 if b & 0x08 else 1) % 70000)
            key = s.take(4).ljust(4, b"\0") if direction == W.C2S else None
            form = (None, None, 2, 8)[b >> 4 & 3]
            if form == 2 and len(payload) > 65535:
                form = None
            fin, rsv = bool(b & 0x40) or op >= 8, (b >> 7) * 4 & kw["rsv_allowed"]
            specs.append((fin, rsv, op, key, payload))
            wire += ws_frame(op, payload, fin=fin, rsv=rsv, key=key, form=form)
        out, dec = _frames_run(kw, [wire], rng, True)
        frames, findings, chunks = _frame_view(out)
        check(len(frames) == len(specs), "one frame per frame encoded")
        pos = kw["start_offset"]
        for f, (fin, rsv, op, key, payload) in zip(frames, specs, strict=False):
            got = f.payload if f.payload is not None else chunks.get(f.offset, b"")
            check(
                (f.fin, f.rsv1 << 2 | f.rsv2 << 1 | f.rsv3, f.opcode, f.masked, f.masking_key)
                == (fin, rsv, op, key is not None, key),
                "round trip of the header fields",
            )
            check(f.payload_len == len(payload) and f.complete, "payload length")
            if f.payload is not None or kw["stream_payloads"]:
                check(got == payload, "payload")
            check(f.offset == pos, "frame offsets")
            pos += f.header_len + len(payload)
        check(dec.decoded_bytes == len(wire) and dec.undecodable_bytes == 0, "all decoded")
        return SIG(catalogued(findings)) | {"roundtrip"}
    stream = s.rest()
    segments: list = []
    for piece in split(stream, rng, 5):
        segments.append(piece)
        if p1 & 1 and rng.random() < 0.5:
            segments.append(rng.choice((1, 2, 3, 7, 50, 300, 70000)))
    state = rng.getstate()
    whole, dec = _frames_run(kw, segments, rng, False)
    rng.setstate(state)
    cut, dec2 = _frames_run(kw, segments, rng, True)
    a, b = _frame_view(whole), _frame_view(cut)
    check(a[0] == b[0], "chunking changes the frames")
    check(
        [(f.code, f.offset) for f in a[1]] == [(f.code, f.offset) for f in b[1]],
        "chunking changes the findings",
    )
    check(a[2] == b[2], "chunking changes the streamed payloads")
    check(
        (dec.decoded_bytes, dec.undecodable_bytes, dec.gap_bytes)
        == (dec2.decoded_bytes, dec2.undecodable_bytes, dec2.gap_bytes),
        "chunking changes the byte accounting",
    )
    fed = sum(len(x) for x in segments if isinstance(x, bytes))
    check(
        dec.fed_bytes == fed and dec.gap_bytes == sum(x for x in segments if isinstance(x, int)),
        "fed/gap bytes",
    )
    for f in a[0]:
        check(f.payload is None or len(f.payload) == f.payload_len, "payload length")
        check(f.payload is None or f.payload_len <= kw["max_buffer"], "max_buffer")
    return SIG(catalogued(a[1])) | {len(a[0]) > 3}


def _check_message(m, max_decompressed: int) -> None:
    check(isinstance(m, W.Message), "message type")
    check(len(m.preview) <= W.PREVIEW_BYTES and len(m.digest) == 16, "preview/digest")
    if m.payload is not None:
        check(hashlib.blake2b(m.payload, digest_size=16).digest() == m.digest, "digest of payload")
        check(m.preview == m.payload[: W.PREVIEW_BYTES], "preview is the payload's start")
        if m.complete:
            check(len(m.payload) == m.payload_len, "payload_len")
        if m.opcode == 1 and m.complete and m.decompressed is not False:
            try:
                m.payload.decode("utf-8")
                ok = True
            except UnicodeDecodeError:
                ok = False
            check(m.utf8_valid is ok, "utf8_valid agrees with the payload")
    if m.compressed:
        if m.decompressed:
            check(m.payload_len <= max_decompressed, "decompressed within the limit")
        else:
            check(m.payload is None and m.preview == b"" and m.utf8_valid is None, "undecodable")
            check(m.payload_len == m.wire_len, "undecodable: wire length")
    else:
        check(m.wire_len is None and m.decompressed is None, "uncompressed fields")


def _assemble(dec_kw, asm_kw, segments, rng, cut=True):
    dec = W.FrameDecoder(**dec_kw)
    asm = W.MessageAssembler(dec_kw["direction"], **asm_kw)
    out: list = []

    def take(items):
        for x in items:
            if isinstance(x, W.Frame):
                out.extend(asm.frame(x))
            elif isinstance(x, W.PayloadChunk):
                out.extend(asm.chunk(x))
            else:
                out.append(x)

    for seg in segments:
        if isinstance(seg, int):
            take(dec.gap(seg, 5, 2))
        else:
            for piece in split(seg, rng, 8) if cut else [seg]:
                take(dec.feed(piece, 5, 2))
    take(dec.eof(9))
    out.extend(asm.eof(9))
    check(asm.eof(10) == [], "assembler eof twice")
    return out


def t_messages(data: bytes):
    s = Src(data)
    p0, p1, seed = s.u8(), s.u8(), s.u16()
    direction = W.C2S if p0 & 1 else W.S2C
    rng = random.Random(seed)
    wbits = 9 + (p1 & 7) % 7
    no_ctx = bool(p1 & 8)
    deflate = W.DeflateParams(wbits, no_ctx) if p0 & 2 else None
    limit = (100, 1000, 4096, 16 * 2**20)[p1 >> 4 & 3]
    asm_kw = {
        "keep_payloads": True,
        "deflate": deflate,
        "deflate_unknown": bool(p0 & 4),
        "max_decompressed": limit,
        "max_kept": (50, 16 * 2**20)[p1 >> 6 & 1],
    }
    dec_kw = {
        "direction": direction,
        "rsv_allowed": 4 if deflate or p0 & 4 else 0,
        "max_buffer": (5, 16 * 2**20)[p0 >> 3 & 1],
        "stream_payloads": True,
    }
    if not p0 & 0x80:  # raw wire bytes, with gaps
        segments: list = []
        for piece in split(s.rest(), rng, 5):
            segments.append(piece)
            if p0 & 0x40 and rng.random() < 0.4:
                segments.append(rng.choice((1, 3, 20, 500)))
        out = _assemble(dec_kw, asm_kw, segments, rng)
        for m in out:
            if not isinstance(m, W.Finding):
                _check_message(m, limit)
        return SIG(catalogued(out)) | {"raw"}
    # structured: messages compressed and framed here must come back out (RFC 7692).
    comp = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    key = MK if direction == W.C2S else None
    wire: list[bytes] = []
    expected: list = []
    lost = False
    while s.left:
        b, n = s.u8(), s.u8()
        op = (1, 2, 9, 10, 8, 1, 2, 2)[b & 7]
        compress = deflate is not None and bool(b & 0x10) and op in (1, 2)
        if b & 0x08 and compress:
            original = bytes([s.u8()]) * (n * 1000)  # a bomb when the limit is small
        else:
            original = s.take(n)
        if op >= 8:
            original = original[:125]
            if op == 8 and len(original) == 1:
                original = b""
            wire.append(ws_frame(op, original, key=key))
            expected.append((op, original, "plain"))
            continue
        if compress:
            if no_ctx:
                comp = zlib.compressobj(6, zlib.DEFLATED, -wbits)
            body = deflate_message(comp, original)
        else:
            body = original
        pieces = split(body, rng, 1 + (b >> 5)) or [b""]
        for i, piece in enumerate(pieces):
            first, last = i == 0, i == len(pieces) - 1
            wire.append(
                ws_frame(
                    op if first else 0, piece, fin=last, rsv=4 if compress and first else 0, key=key
                )
            )
            if not last and b & 0x80:  # a control frame between fragments (§5.4)
                wire.append(ws_frame(9, b"ping", key=key))
                expected.append((9, b"ping", "plain"))
        if not compress:
            expected.append((op, original, "plain"))
        elif lost:
            expected.append((op, original, "lost"))
        elif len(original) > limit:
            expected.append((op, original, "exceeded"))
            lost = not no_ctx
        else:
            expected.append((op, original, "decompressed"))
    asm_kw["deflate_unknown"] = False
    asm_kw["max_kept"] = 16 * 2**20
    dec_kw["max_buffer"] = (16, 16 * 2**20)[p0 >> 3 & 1]
    out = _assemble(dec_kw, asm_kw, [b"".join(wire)], rng)
    msgs = [m for m in out if isinstance(m, W.Message)]
    codes = catalogued(out)
    check(len(msgs) == len(expected), f"{len(msgs)} messages for {len(expected)} sent")
    for m, (op, original, how) in zip(msgs, expected, strict=False):
        _check_message(m, limit)
        check(m.opcode == op, "opcode")
        if how == "plain":
            check(m.payload == original and m.complete and not m.compressed, "plain payload")
        elif how == "decompressed":
            check(m.compressed and m.decompressed and m.payload == original, "decompressed payload")
        elif how == "exceeded":
            check(
                m.compressed and not m.complete and m.payload_len == limit, "bomb cut at the limit"
            )
            check(m.preview == original[: W.PREVIEW_BYTES][:limit], "bomb preview")
        else:
            check(m.compressed and m.decompressed is False, "context lost")
    if any(h == "exceeded" for *_, h in expected):
        check("ws_deflate_limit_exceeded" in codes, "limit finding")
    return SIG(codes) | {"structured"}


def t_deflate(data: bytes):
    s = Src(data)
    p0, seed = s.u8(), s.u16()
    wbits = 8 + (p0 & 7)
    params = W.DeflateParams(wbits, bool(p0 & 8))
    limit = (0, 10, 1000, 65536 * 3)[p0 >> 4 & 3]
    inf = W.Inflater(params, limit=limit)
    rng = random.Random(seed)
    roundtrip = bool(p0 & 0x40)
    comp = zlib.compressobj(6, zlib.DEFLATED, -max(9, wbits))
    sig = set()
    while s.left:
        n = s.u8() * (37 if p0 & 0x80 else 1)
        raw = s.take(n)
        if roundtrip:
            if params.no_context_takeover:
                comp = zlib.compressobj(6, zlib.DEFLATED, -max(9, wbits))
            payload = deflate_message(comp, raw)
        else:
            payload = raw
        ok_before = inf.context_ok
        began = inf.begin()
        check(began == (params.no_context_takeover or ok_before), "begin() iff the context is ok")
        out = []
        for piece in split(payload, rng, 6):
            out += inf.feed(piece)
        out += inf.end()
        got = b"".join(out)
        check(not inf.active, "message over after end()")
        check(len(got) == (inf.produced if began else 0) <= limit, "produced within the limit")
        check(all(len(p) <= 65536 for p in out), "pieces bounded")
        if inf.exceeded:
            check(inf.produced == limit, "exceeded: cut exactly at the limit")
        if began and (inf.error or inf.exceeded) and not params.no_context_takeover:
            check(not inf.context_ok, "context lost after a failure")
        if roundtrip and began:
            check(inf.error is None, f"own deflate stream rejected: {inf.error}")
            check(got == raw[:limit] and inf.exceeded == (len(raw) > limit), "round trip")
        sig.add((began, inf.error is not None and inf.error[:20], inf.exceeded))
    return SIG(sig)


def t_subprotocols(data: bytes):
    s = Src(data)
    token = W.TOKENS[s.u8() % len(W.TOKENS)]
    d = W.decoder_for(token)
    check(d is not None, "registered token")
    sig = {token}
    while s.left:
        b, n = s.u8(), s.u16() % 3000
        payload = s.take(n)
        op = (1, 2, 2, 1, 8, 9, 10, 0)[b & 7]
        direction = W.C2S if b & 8 else W.S2C
        complete = not b & 0x10
        kept = payload if not b & 0x20 else b""
        head = (direction, op, 1, len(payload), bytes(16), payload[:256], 1, 1, 0, 0, 0)
        m = W.Message(*head, complete=complete, payload=kept or None)
        r = d.decode(m, kept)
        check(isinstance(r, W.Decoded), "Decoded returned")
        sig.update(catalogued(r.findings))
        check(
            r.text is None or (isinstance(r.text, str) and len(r.text) <= W.TEXT_LIMIT + 1),
            "text bounded",
        )
        check(r.channel is None or 0 <= r.channel <= 255, "channel range")
        check(r.kind is None or isinstance(r.kind, str) and len(r.kind) <= 200, "kind bounded")
        sig.add(r.kind if r.kind is None or len(r.kind) < 30 else "long")
    return SIG(sig)


def t_detect(data: bytes):
    s = Src(data)
    p0, k = s.u8(), s.u16()
    rest = s.rest()
    k = k % (len(rest) + 1)
    first, second = rest[:k], rest[k:]
    final = bool(p0 & 1)
    det = W.detect(first, second, final=final)
    check(
        det.websocket in (True, False) if final else det.websocket in (True, False, None), "verdict"
    )
    check(det.client in (None, 0, 1), "client index")
    if det.websocket:
        check(det.score >= W.DETECT_SCORE, "score")
    for data_, run in zip((first, second), det.runs, strict=True):
        if run is not None:
            check(0 <= run.offset < min(len(data_), W.ALIGN_WINDOW), "run offset")
            check(run.frames >= 1, "run frames")
    if det.client is not None and det.runs[det.client] is not None:
        check(det.runs[det.client].masked, "the client's frames are masked")
    if det.websocket and not final:
        check(W.detect(first, second, final=True).websocket, "a decision stands when final")
    return SIG({det.websocket, det.client, det.score})


def t_proxy(data: bytes):
    r = W.parse_proxy_header(data)
    if r is None:
        return SIG({None})
    length, version, source = r
    check(0 < length <= len(data) and version in (1, 2), "header length and version")
    check(source is None or isinstance(source, str), "source")
    check(W.parse_proxy_header(data[:length]) == r, "the header is complete within its length")
    return SIG({version, source is None})


def _headers_from(blob: bytes) -> tuple:
    out = []
    for line in blob.split(b"\n")[:40]:
        name, _, value = line.partition(b":")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def t_handshake(data: bytes):
    s = Src(data)
    p0, status = s.u8(), s.u16() % 700
    req_blob, _, resp_blob = s.rest().partition(b"\n\n")
    base_req = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", KEY),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    base_resp = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", ACCEPT),
    ]
    keep = [h for i, h in enumerate(base_req) if p0 >> i & 1]
    version = (b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/x.y")[p0 >> 4 & 3]
    req = W.RequestHead(b"GET", b"/", version, (*keep, *_headers_from(req_blob)), 1, (1, 1), 0, 10)
    resp = None
    if not p0 & 0x40:
        headers = (*base_resp, *_headers_from(resp_blob))
        resp = W.ResponseHead(
            b"HTTP/1.1", 101 if p0 & 0x80 else status, b"X", headers, 2, (2, 2), 0, 10
        )
    hs = W.check_handshake(req, resp)
    codes = catalogued(hs.findings)
    if hs.websocket:
        check(resp is not None and resp.status == 101, "websocket needs a 101")
    check(hs.accept_ok is None or resp is not None, "accept_ok without a response")
    for d in (W.C2S, W.S2C):
        dp = W.deflate_params(hs, d)
        check(dp is None or 8 <= dp.window_bits <= 15, "window bits")
    key = req_blob[:40]
    check(
        W.accept_for(key)
        == base64.b64encode(
            hashlib.sha1(key.strip() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        ),
        "accept_for",
    )
    return SIG(codes) | {hs.websocket, hs.deflate}


H2_MODES = ("prior_knowledge", "upgrade", "mid_stream")


def _h2_run(mode: str, max_block: int, segments: list, rng: random.Random | None):
    """Feed ``segments`` ((direction, bytes) or (direction, gap length)) to one
    Http2Connection, each piece cut at random places when ``rng``; checks the byte
    accounting after every call. Returns (events, connection)."""
    h2 = W.http2.Http2Connection(mode=mode, max_header_block=max_block)
    fed, gaps = [0, 0], [0, 0]
    out: list = []

    def balanced() -> None:
        buf = h2.buffered_bytes
        for d in (0, 1):
            check(
                h2.decoded_bytes[d] + h2.undecodable_bytes[d] + h2.gap_bytes[d] + buf[d]
                == fed[d] + gaps[d],
                "http2 byte accounting",
            )
            check(h2.fed_bytes[d] == fed[d] and h2.gap_bytes[d] == gaps[d], "http2 fed/gap bytes")

    for d, seg in segments:
        direction = (W.C2S, W.S2C)[d]
        if isinstance(seg, int):
            gaps[d] += seg
            out += h2.gap(direction, seg, 5, 2)
            balanced()
            continue
        for piece in split(seg, rng, 8) if rng else [seg]:
            fed[d] += len(piece)
            out += h2.feed(direction, piece, 5, 2)
            balanced()
    out += h2.eof(9)
    balanced()
    check(h2.buffered_bytes == (0, 0), "http2: nothing buffered after eof")
    check(h2.eof(10) == [], "http2: eof twice returns nothing")
    return out, h2


def _h2_summary(events) -> tuple:
    """What must not depend on chunking (as tests/test_http2.py's ``summary``): the
    events but DATA without times and packets, DATA bytes per frame, findings by
    code, direction and offset."""
    rest, data, nxt = [], {}, {}
    for e in events:
        if isinstance(e, W.http2.H2Data):
            key = (int(e.direction), e.offset)
            check(nxt.get(key, e.data_offset) == e.data_offset, "H2Data pieces contiguous")
            nxt[key] = e.data_offset + len(e.data)
            data[key] = data.get(key, b"") + e.data
            if e.end_stream:
                rest.append(("end", key, e.stream_id))
        elif isinstance(e, W.http2.H2DataGap):
            key = (int(e.direction), e.offset)
            if key in nxt:
                nxt[key] += e.length
            rest.append(("gap", key, e.stream_id, e.length))
        elif isinstance(e, W.Finding):
            rest.append((e.code, e.direction, e.offset))
        elif isinstance(e, W.http2.H2Headers):
            rest.append(
                (e.direction, e.stream_id, e.headers, e.end_stream, e.reliable, e.offset, e.length)
            )
        else:
            check(type(e).__name__ in W.http2.__all__, f"http2 returned {type(e).__name__}")
            rest.append(tuple(getattr(e, k) for k in e.__slots__ if k not in ("ts_ns", "packet")))
    return tuple(rest), data


def t_http2(data: bytes):
    s = Src(data)
    p0, seed, n0 = s.u8(), s.u16(), s.u16()
    mode = H2_MODES[p0 % 3]
    max_block = (64, 4096, 256 * 1024)[p0 >> 2 & 3 if p0 >> 2 & 3 < 3 else 2]
    streams = [s.take(n0), s.rest()]
    rng = random.Random(seed)
    # interleave the two directions in segments of random sizes, gaps when asked
    segments: list = []
    pos = [0, 0]
    while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
        d = (
            rng.randrange(2)
            if all(pos[i] < len(streams[i]) for i in (0, 1))
            else int(pos[0] >= len(streams[0]))
        )
        n = rng.choice((1, 9, 50, 300, 1500, 5000))
        segments.append((d, streams[d][pos[d] : pos[d] + n]))
        pos[d] += n
        if p0 & 0x10 and rng.random() < 0.15:
            segments.append((d, rng.choice((1, 5, 9, 40, 1000, 20000))))
    whole, h2 = _h2_run(mode, max_block, segments, None)
    cut, _ = _h2_run(mode, max_block, segments, rng)
    a, b = _h2_summary(whole), _h2_summary(cut)
    check(a[0] == b[0], "http2: chunking changes the events")
    check(a[1] == b[1], "http2: chunking changes the DATA bytes")
    return SIG(catalogued(whole)) | {mode, len(a[1]) > 0}


class _Collect:
    """StreamSink keeping both byte streams of one connection (gaps skipped)."""

    def __init__(self, conn) -> None:
        self.b = [bytearray(), bytearray()]

    def data(self, d, offset, data, ts_ns, packet) -> None:
        self.b[d] += data

    def gap(self, *a) -> None: ...
    def fin(self, *a) -> None: ...
    def rst(self, *a) -> None: ...
    def end(self, *a) -> None: ...


def tcp_streams(path: Path) -> list[tuple[bytes, bytes]]:
    """(client-to-server, server-to-client) bytes of each TCP connection of a capture."""
    sinks: list[_Collect] = []
    ra = W.TcpReassembler(lambda conn: sinks.append(_Collect(conn)) or sinks[-1])
    with W.open_capture(path) as r:
        for seg in r:
            ra.feed(seg)
    ra.finish()
    return [(bytes(c.b[0]), bytes(c.b[1])) for c in sinks]


def _seeds_http2() -> list[bytes]:
    """HTTP/2 streams of the committed captures (the proxy-to-server legs), both
    directions cut to 3000 bytes, in each mode."""
    out = []
    for p in sorted((ROOT / "captures").glob("h2/*/server.pcap")):
        for c2s, s2c in tcp_streams(p):
            c2s, s2c = c2s[:3000], s2c[:3000]
            for p0 in (0, 1, 2, 0x14):
                out.append(_p(p0, 0, 1) + len(c2s).to_bytes(2, "big") + c2s + s2c)
    return out


TARGETS: dict[str, tuple[Callable, Callable[[], list[bytes]], int, str]] = {}
"""name -> (function, seeds, max input length, description)."""


def _p(*parts: int) -> bytes:
    return bytes(parts)


def _seeds_tcp() -> list[bytes]:
    out = []
    for p0 in (0, 1, 0x11, 0x10):
        body = b""
        for i in range(12):
            body += (
                bytes([i % 4 * 4 + 1, (0x02, 0x12, 0x10, 0x18, 0x19, 0x04)[i % 6], 2, 30, 0])
                + bytes([i * 5, 1])
                + b"x" * 30
            )
        out.append(bytes([p0]) + bytes(9) + body)
        out.append(bytes([p0]) + random.Random(p0).randbytes(309))
    return out


def register_targets() -> None:
    frames = frame_streams()
    TARGETS.update(
        {
            "capture": (
                t_capture,
                lambda: capture_seeds() + pipeline_seeds() + real_captures(65536),
                65536,
                "pcap/pcapng reader",
            ),
            "tcp": (t_tcp, _seeds_tcp, 4096, "TCP reassembly"),
            "http1": (
                t_http1,
                lambda: [
                    _p(p0, 1, 2) + h for h in http_streams() for p0 in (0, 1, 0x21, 0x40, 0x5F)
                ],
                4096,
                "HTTP/1.1 head parser",
            ),
            "frames": (
                t_frames,
                lambda: (
                    [_p(p0, 1, 0, 7) + f for f in frames for p0 in (0, 1, 0x41, 0x63, 0x19)]
                    + [
                        _p(0x81, 0, 0, 1, 0x41, 5) + b"hello" + MK,
                        _p(0x80, 0, 0, 1, 0x62, 200) + bytes(200),
                    ]
                ),
                8192,
                "RFC 6455 frame decoder",
            ),
            "messages": (
                t_messages,
                lambda: (
                    [
                        _p(p0, p1, 0, 3) + f
                        for f in frames
                        for p0, p1 in ((3, 0), (0x43, 0x10), (0, 0))
                    ]
                    + [
                        _p(0x83, p1, 0, 1, 1, 5)
                        + b"hello"
                        + _p(0x19, 200, 0)
                        + _p(0x91, 20)
                        + b"q" * 20
                        for p1 in (0, 8, 0x10, 0x30)
                    ]
                ),
                8192,
                "message assembly + permessage-deflate",
            ),
            "deflate": (
                t_deflate,
                lambda: [
                    _p(p0, 0, 1) + bytes([len(m) % 256]) + m
                    for m in deflate_streams()
                    for p0 in (7, 0x27, 0x4F, 0xC7)
                ],
                8192,
                "bounded Inflater",
            ),
            "subprotocols": (
                t_subprotocols,
                lambda: [
                    bytes([i]) + bytes([b]) + len(p).to_bytes(2, "big") + p
                    for i in range(24)
                    for b, p in zip(
                        (0, 1, 9, 0x21), subprotocol_payloads()[i % 15 :][:4] or [b""], strict=False
                    )
                ],
                4096,
                "sub-protocol decoders",
            ),
            "detect": (
                t_detect,
                lambda: [
                    _p(f) + (len(a) % 65536).to_bytes(2, "big") + a + b
                    for a in frames[:8]
                    for b in frames[8:]
                    for f in (0, 1)
                ],
                8192,
                "mid-stream WebSocket detection",
            ),
            "proxy": (t_proxy, proxy_headers, 512, "PROXY protocol header parser"),
            "handshake": (
                t_handshake,
                lambda: [
                    _p(p0, 0, 101)
                    + b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\n"
                    b"Sec-WebSocket-Protocol: mqtt, v12.stomp\n\nSec-WebSocket-Protocol: mqtt\n"
                    b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover"
                    for p0 in (0x0F, 0x8F, 0xCF, 0x01)
                ],
                2048,
                "opening handshake checks",
            ),
            "http2": (t_http2, _seeds_http2, 8192, "HTTP/2 connection decoder (RFC 9113, 8441)"),
            "pipeline": (
                t_pipeline,
                lambda: pipeline_seeds() + real_captures(12000),
                24000,
                "whole analysis of one capture (strict)",
            ),
        }
    )


# --- the mutation engine -----------------------------------------------------------------

# fmt: off
INTERESTING = [
    0, 1, 2, 3, 4, 7, 8, 12, 14, 16, 20, 24, 28, 32, 40, 60, 64, 100, 125, 126, 127, 128,
    255, 256, 512, 1000, 1024, 1460, 4096, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
    0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 2**63 - 1, 2**63, 2**64 - 1, 2**32 + 5,
]

DICTIONARY = [
    b"\r\n", b"\r\n\r\n", b"\n", b" ", b":", b";", b",", b"=", b'"', b"\\", b"\x00", b"\xff",
    b"HTTP/1.1 ", b"HTTP/1.0", b"GET ", b"HEAD ", b"CONNECT ", b"101 ", b"200 ",
    b"Upgrade: websocket\r\n", b"Connection: Upgrade\r\n", b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n", b"Sec-WebSocket-Key: " + KEY + b"\r\n",
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=8\r\n",
    b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n", b"PROXY TCP4 ", b"PROXY UNKNOWN\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n", b"\x81\x05", b"\x01\x7e", b"\x82\x7f", b"\x88\x02\x03\xe8",
    b"\x89\x80", b"\xc1\x85", b"\x00\x00\xff\xff", b"\x01\x00\x00\xff\xff", b'{"type":"',
    b'"msg_type":"', b"[48,", b"\n\n\x00", b"0\r\n\r\n", b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a",
    b"\x4d\x3c\x2b\x1a", b"\x08\x00\x45\x00", b"\x86\xdd\x60\x00", b"\x81\x00",
]
# fmt: on


def capture_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, size, byte order) of header fields in a pcap/pcapng file: record and
    block headers, IDB options, and the link/IP/TCP headers at each packet's start.
    Tolerant: stops where the structure breaks."""
    out: list[tuple[int, int, str]] = []
    n = len(data)
    head = data[:4]
    if head in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = "<" if head[0] in (0xD4, 0x4D) else ">"
        out += [(4, 2, order), (16, 4, order), (20, 4, order)]
        off = 24
        while off + 16 <= n and len(out) < 4000:
            out += [(off, 4, order), (off + 4, 4, order), (off + 8, 4, order), (off + 12, 4, order)]
            cap = struct.unpack_from(order + "I", data, off + 8)[0]
            _packet_fields(out, off + 16, min(cap, n - off - 16))
            off += 16 + cap
    elif head == b"\x0a\x0d\x0d\x0a":
        off, order = 0, "<"
        while off + 12 <= n and len(out) < 4000:
            if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
                order = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack_from(order + "II", data, off)
            out += [(off, 4, order), (off + 4, 4, order)]
            if blen < 12 or off + blen > n:
                break
            out.append((off + blen - 4, 4, order))
            if btype == 1:  # IDB: link type, snaplen, options
                out += [(off + 8, 2, order), (off + 12, 4, order)]
                o = off + 16
                while o + 4 <= off + blen - 4:
                    out += [(o, 2, order), (o + 2, 2, order), (o + 4, 1, order)]
                    ln = struct.unpack_from(order + "H", data, o + 2)[0]
                    o += 4 + ln + (-ln % 4)
            elif btype == 6 and blen >= 32:
                out += [(off + 8 + 4 * i, 4, order) for i in range(5)]
                _packet_fields(
                    out,
                    off + 28,
                    min(struct.unpack_from(order + "I", data, off + 20)[0], n - off - 28),
                )
            elif btype == 3 and blen >= 16:
                out.append((off + 8, 4, order))
                _packet_fields(out, off + 12, blen - 16)
            elif btype == 0x0A0D0D0A:
                out += [(off + 12, 2, order), (off + 16, 8, order)]
            off += blen
    return out


def _packet_fields(out: list, p: int, n: int) -> None:
    """Ethernet type, IPv4/IPv6 and TCP header fields of a packet at ``p`` (guessing
    Ethernet framing)."""
    if n < 34:
        return
    out += [
        (p + 12, 2, ">"),
        (p + 14, 1, ">"),
        (p + 16, 2, ">"),
        (p + 20, 2, ">"),
        (p + 23, 1, ">"),
    ]
    out += [
        (p + 18, 4, ">"),
        (p + 34, 2, ">"),
        (p + 38, 4, ">"),
        (p + 42, 4, ">"),
        (p + 46, 1, ">"),
        (p + 47, 1, ">"),
    ]


class Mutator:
    def __init__(self, rng: random.Random, max_len: int, structured: bool) -> None:
        self.rng = rng
        self.max_len = max_len
        self.structured = structured

    def mutate(self, data: bytes, other: bytes) -> bytes:
        rng = self.rng
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            op = rng.randrange(16 if self.structured else 14)
            n = len(b)
            if op == 0 and n:
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
            elif op == 1 and n:
                b[rng.randrange(n)] = rng.randrange(256)
            elif op in (2, 3) and n:
                size = rng.choice((1, 2, 4, 8))
                v = rng.choice(INTERESTING) & ((1 << (8 * size)) - 1)
                if rng.random() < 0.3:
                    v = (v + rng.randint(-2, 2)) % (1 << (8 * size))
                pos = rng.randrange(n)
                b[pos : pos + size] = v.to_bytes(size, rng.choice(("big", "little")))
            elif op == 4:
                pos = rng.randint(0, n)
                b[pos:pos] = rng.randbytes(rng.choice((1, 2, 4, 16, 64)))
            elif op == 5 and n:
                pos = rng.randrange(n)
                del b[pos : pos + rng.choice((1, 2, 4, 16, 128, n))]
            elif op == 6 and n:
                pos = rng.randrange(n)
                chunk = b[pos : pos + rng.choice((1, 4, 16, 100, 1000))]
                at = rng.randint(0, n)
                b[at:at] = chunk * rng.choice((1, 1, 2, 8))
            elif op == 7 and n:
                del b[rng.randint(0, n) :]
            elif op == 8 and other:
                cut_a = rng.randint(0, n)
                cut_b = rng.randint(0, len(other))
                b = b[:cut_a] + bytearray(other[cut_b:])
            elif op in (9, 10):
                tok = rng.choice(DICTIONARY)
                pos = rng.randint(0, n)
                if op == 9:
                    b[pos:pos] = tok
                else:
                    b[pos : pos + len(tok)] = tok
            elif op == 11 and n:
                pos = rng.randrange(n)
                b[pos] = (b[pos] + rng.randint(-8, 8)) & 0xFF
            elif op == 12 and n > 1:  # change a front parameter byte (mode, direction)
                b[rng.randrange(min(4, n))] = rng.randrange(256)
            elif op == 13 and n:
                pos = rng.randrange(n)
                b[pos : pos + 4] = bytes(rng.randrange(256) for _ in range(4))
            elif op in (14, 15):  # a header field of the capture structure
                fields = capture_fields(bytes(b))
                if fields:
                    off, size, order = rng.choice(fields)
                    if off + size <= len(b):
                        cur = int.from_bytes(
                            b[off : off + size], "little" if order == "<" else "big"
                        )
                        choice = rng.random()
                        if choice < 0.5:
                            v = rng.choice(INTERESTING)
                        elif choice < 0.8:
                            v = cur + rng.randint(-16, 16)
                        else:
                            v = rng.randrange(1 << (8 * size))
                        v %= 1 << (8 * size)
                        b[off : off + size] = v.to_bytes(size, "little" if order == "<" else "big")
        return bytes(b[: self.max_len])


def failure_key(exc: BaseException) -> str:
    """The exception type and innermost wsanalyze (or check) location; for a
    violated invariant, which one."""
    where = "?"
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if "/wsanalyze/" in fr.filename or (fr.filename.endswith("fuzz.py") and fr.name != "check"):
            where = f"{Path(fr.filename).name}:{fr.name}"
            break
    what = re.sub(r"\d+", "N", str(exc))[:80] if isinstance(exc, Violation) else ""
    return f"{type(exc).__name__}@{where}" + (f": {what}" if what else "")


def minimize(name: str, data: bytes, budget: int = 20000) -> bytes:
    """Delta debugging: the shortest input found by deleting chunks (halving their
    size) and zeroing bytes that still fails with the same :func:`failure_key`."""
    fn = TARGETS[name][0]

    def key(d: bytes) -> str | None:
        try:
            fn(d)
        except Exception as exc:  # noqa: BLE001
            return failure_key(exc)
        return None

    want = key(data)
    if want is None:
        return data
    size = max(1, len(data) // 2)
    while size >= 1 and budget > 0:
        i = 0
        while i < len(data) and budget > 0:
            budget -= 1
            cand = data[:i] + data[i + size :]
            if key(cand) == want:
                data = cand
            else:
                i += size
        size //= 2
    for i in range(len(data)):
        if data[i] and budget > 0:
            budget -= 1
            cand = data[:i] + b"\0" + data[i + 1 :]
            if key(cand) == want:
                data = cand
    return data


class Failures:
    """Distinct failures of one target, the smallest input of each saved."""

    def __init__(self, target: str, save: bool = True, quiet: bool = False) -> None:
        self.target = target
        self.save = save
        self.quiet = quiet
        self.distinct: dict[str, dict] = {}
        self.count = 0

    def record(self, exc: BaseException, data: bytes) -> None:
        self.count += 1
        kind = type(exc).__name__
        key = failure_key(exc)
        entry = self.distinct.get(key)
        if entry is None or len(data) < entry["size"]:
            name = f"{self.target}-{kind}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.bin"
            if self.save:
                OUT_DIR.mkdir(parents=True, exist_ok=True)
                (OUT_DIR / name).write_bytes(data)
            if entry is None:
                if not self.quiet:
                    print(
                        f"\n[{self.target}] NEW FAILURE {key}\n  input saved: {OUT_DIR / name}\n"
                        + "".join(traceback.format_exception(exc)).rstrip(),
                        file=sys.stderr,
                        flush=True,
                    )
                entry = self.distinct[key] = {"key": key, "file": str(OUT_DIR / name), "hits": 0}
            entry["size"] = len(data)
            entry["file"] = str(OUT_DIR / name)
        entry["hits"] += 1


def run_mutate(name: str, runs: int, seed: int, slow: float, save: bool) -> dict:
    fn, seeds_fn, max_len, _ = TARGETS[name]
    rng = random.Random(seed)
    corpus = [s[:max_len] for s in seeds_fn()]
    seen: set = set()
    fails = Failures(name, save)
    slowest = (0.0, b"")
    slow_inputs = 0
    mut = Mutator(rng, max_len, structured=name in ("capture", "pipeline"))
    t0 = time.perf_counter()
    done = 0
    while done < runs:
        if done < len(corpus):
            data = corpus[done]
        elif rng.random() < 0.03:
            data = rng.randbytes(rng.choice((4, 16, 64, 256, 1024)))
        else:
            data = mut.mutate(rng.choice(corpus), rng.choice(corpus))
        t = time.perf_counter()
        try:
            sig = fn(data)
        except Exception as exc:  # noqa: BLE001 - every exception is a finding here
            fails.record(exc, data)
            sig = None
        dt = time.perf_counter() - t
        if dt > slowest[0]:
            slowest = (dt, data)
        if dt > slow:
            slow_inputs += 1
            if save:
                OUT_DIR.mkdir(parents=True, exist_ok=True)
                (OUT_DIR / f"{name}-slow-{hashlib.sha1(data).hexdigest()[:10]}.bin").write_bytes(
                    data
                )
        if sig is not None:
            try:
                key = hash(sig)
            except TypeError:
                key = None
            if key is not None and key not in seen:
                seen.add(key)
                if len(corpus) < 4096:
                    corpus.append(data)
                else:
                    corpus[rng.randrange(len(corpus))] = data
        done += 1
    return {
        "target": name,
        "engine": "mutate",
        "inputs": done,
        "failures": fails.count,
        "distinct": list(fails.distinct.values()),
        "seconds": round(time.perf_counter() - t0, 1),
        "slowest_ms": round(slowest[0] * 1000, 1),
        "slow_inputs": slow_inputs,
        "corpus": len(corpus),
        "signatures": len(seen),
    }


def run_atheris(name: str, runs: int, seed: int, result_file: str, save: bool) -> None:
    """libFuzzer over ``name``, seeded with its corpus. libFuzzer leaves the process
    with ``exit()``, so the result file is rewritten as it goes (every 1,000 inputs,
    on a failure, and from ``runs`` on)."""
    import atheris

    fn, seeds_fn, max_len, _ = TARGETS[name]
    corpus_dir = tempfile.mkdtemp(prefix=f"wsanalyze-fuzz-{name}-")
    for i, s in enumerate(seeds_fn()):
        Path(corpus_dir, f"seed-{i}").write_bytes(s[:max_len])
    fails = Failures(name, save)
    state = {"inputs": 0, "t0": time.perf_counter(), "slowest": 0.0}

    def report() -> None:
        res = {
            "target": name,
            "engine": "atheris",
            "inputs": state["inputs"],
            "failures": fails.count,
            "distinct": list(fails.distinct.values()),
            "seconds": round(time.perf_counter() - state["t0"], 1),
            "slowest_ms": round(state["slowest"] * 1000, 1),
            "slow_inputs": 0,
        }
        Path(result_file).write_text(json.dumps(res))

    def one(data: bytes) -> None:
        state["inputs"] += 1
        t = time.perf_counter()
        failed = fails.count
        try:
            fn(data)
        except Exception as exc:  # noqa: BLE001
            fails.record(exc, data)
        state["slowest"] = max(state["slowest"], time.perf_counter() - t)
        if state["inputs"] % 1000 == 0 or state["inputs"] >= runs or fails.count > failed:
            report()

    argv = [
        sys.argv[0],
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={max_len}",
        "-print_final_stats=0",
        corpus_dir,
    ]
    atheris.Setup(argv, one)
    atheris.Fuzz()


def replay(files: list[str], shrink: bool = False) -> int:
    """Run saved inputs again (``shrink``: write a minimized copy ``*.min.bin`` of
    each failing one, and print it as a Python literal for a regression test)."""
    bad = 0
    for f in files:
        p = Path(f)
        name = p.name.split("-", 1)[0]
        if name not in TARGETS:
            print(f"{f}: unknown target {name!r} (files are named <target>-...)")
            bad += 1
            continue
        try:
            TARGETS[name][0](p.read_bytes())
            print(f"{f}: ok")
        except Exception:  # noqa: BLE001
            bad += 1
            print(f"{f}: FAILS\n{traceback.format_exc()}")
            if shrink:
                small = minimize(name, p.read_bytes())
                p.with_suffix(".min.bin").write_bytes(small)
                print(f"minimized to {len(small)} bytes: {small!r}")
    return 1 if bad else 0


def _table(results: list[dict]) -> None:
    print(
        f"\n{'target':<14}{'engine':<9}{'inputs':>10}{'failures':>10}{'distinct':>10}{'seconds':>9}{'slowest ms':>12}"
    )
    for r in results:
        print(
            f"{r['target']:<14}{r['engine']:<9}{r['inputs']:>10,}{r['failures']:>10}"
            f"{len(r['distinct']):>10}{r['seconds']:>9}{r['slowest_ms']:>12}"
        )
        for d in r["distinct"]:
            print(f"    {d['hits']:>6} x {d['key'][:140]}  ({d['file']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", action="append", help="target name (repeatable; default: all)")
    ap.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    ap.add_argument("--slow", type=float, default=2.0, help="save inputs slower than this (s)")
    ap.add_argument("--json", help="write the per-target results to this file")
    ap.add_argument("--no-save", action="store_true", help="do not save failing inputs")
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs again")
    ap.add_argument("--minimize", action="store_true", help="with --replay: shrink failing inputs")
    ap.add_argument("--list", action="store_true", help="list the targets")
    ap.add_argument("--child-result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    register_targets()
    if args.list:
        for n, (_, _, ml, desc) in TARGETS.items():
            print(f"{n:<14} {desc} (inputs up to {ml} bytes)")
        return 0
    names = args.target or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; --list shows them")
    if args.replay:
        load()
        return replay(args.replay, args.minimize)
    if args.child_result:  # one target, in this process
        load(instrument=args.engine == "atheris")
        if args.engine == "atheris":
            run_atheris(names[0], args.runs, args.seed, args.child_result, not args.no_save)
        else:
            res = run_mutate(names[0], args.runs, args.seed, args.slow, not args.no_save)
            Path(args.child_result).write_text(json.dumps(res))
        return 0
    results = [_run_child(n, args) for n in names]
    _table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if any(r["failures"] or r.get("error") for r in results) else 0


def _run_child(name: str, args: argparse.Namespace) -> dict:
    """Fuzz one target in a process of its own (atheris needs that; a crash or an
    exhausted memory then costs one target, not the run); returns its result."""
    out = Path(tempfile.mkdtemp(prefix="wsanalyze-fuzz-")) / "result.json"
    cmd = [sys.executable, __file__, "--target", name, "--child-result", str(out)]
    cmd += ["--runs", str(args.runs), "--seed", str(args.seed), "--engine", args.engine]
    cmd += ["--slow", str(args.slow)] + (["--no-save"] if args.no_save else [])
    print(f"[{time.strftime('%H:%M:%S')}] start {name}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, check=False).returncode
    try:
        res = json.loads(out.read_text())
    except (OSError, ValueError):
        res = {
            "target": name,
            "engine": args.engine,
            "inputs": 0,
            "failures": 1,
            "distinct": [],
            "seconds": round(time.perf_counter() - t0, 1),
            "slowest_ms": 0,
            "error": f"child exited with status {rc} and no result",
        }
    print(
        f"[{time.strftime('%H:%M:%S')}] done {name}: {res['inputs']:,} inputs, "
        f"{res['failures']} failing, {res['seconds']} s",
        flush=True,
    )
    return res


if __name__ == "__main__":
    sys.exit(main())
