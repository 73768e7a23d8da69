#!/usr/bin/env python3
"""Derive captures/expected.json and captures/MANIFEST.md from the real pcaps, with tshark.

    python3 captures/derive_expected.py [--captures DIR]

Everything in expected.json is read back from the capture files by tshark (connections,
request targets, statuses, per-direction message counts, header changes); the only
"scenario knowledge" used is how to find the ground truth of the pairing: the clients
of most scenarios send a unique text token ("i-am-<name>") that the proxy forwards
unchanged, and (all scenarios) the proxy (nginx, HAProxy, Apache) forwards the client's
Sec-WebSocket-Key verbatim. Both are used and must agree. Per-message facts (fragments,
sizes on the wire and decompressed, digests, Kubernetes channels) come from an own
RFC 6455 / RFC 7692 decoding of the TCP payload tshark prints, checked against tshark's
WebSocket dissector (frames by opcode, RSV1, decompressed text and binary payloads).

The script also checks that each capture really shows what its scenario is meant to
show (complete TCP handshakes on both legs, segments <= 1448 payload bytes, 101 in
the *-ok scenarios, the refusal status, the idle-timeout close, the backend's RST,
identical message counts on both legs, permessage-deflate on every data message and
the effect of context takeover, the fragments and control frames between them, the
k8s channels and exit code) and exits 1 with an explanation if not, so a broken run
never ships quietly. Needs tshark (Wireshark >= 3.6); reads run.log and the
proxy configuration (nginx.conf, haproxy.cfg or apache2.conf) written beside the pcaps by
make_captures.sh for the software versions and the configuration shown in MANIFEST.md.

The HTTP/2-backend scenarios (captures/h2/haproxy-h2*: HAProxy `server ... proto h2`, each
WebSocket an RFC 8441 extended CONNECT stream on the server leg) go to their own file,
captures/expected_h2.json, and their own MANIFEST.md section (when present). The server
leg is read with tshark's HTTP/2 dissector (`-d tcp.port==8080,http2`: frames, SETTINGS,
HPACK header lists, RST_STREAM, GOAWAY, DATA) and an own parse of the HTTP/2 framing of the
TCP bytes, which must agree frame by frame; tshark 4.0 does not dissect WebSocket inside
DATA, so each stream's WebSocket messages come from the own RFC 6455 decoding of its DATA
payloads. The pairs (client connection <-> server connection + stream id) rest on the
forwarded Sec-WebSocket-Key, the unique text tokens and run.log (the backend's request log,
HAProxy's log line); per pair the proxy delay of every message matched by (opcode, payload
digest) is computed from tshark's frame times (both captures share one clock).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path

MAX_SEGMENT_PAYLOAD = 1448  # MTU 1500 - 20 (IPv4) - 20 (TCP) - 12 (timestamps option)

OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
DIRS = ("client_to_server", "server_to_client")

# What each scenario is, and the ground truth that tshark's reading is checked against.
# The three concurrent clients of the *-ok scenarios (ws_client.py multi), per client:
# (client_to_server, server_to_client) message counts.
MULTI_CLIENTS = {"alpha": "i-am-alpha", "bravo": "i-am-bravo", "charlie": "i-am-charlie"}
MULTI_MESSAGES = {
    "alpha": ({"text": 5, "binary": 2, "ping": 1, "pong": 0, "close": 1},
              {"text": 6, "binary": 2, "ping": 0, "pong": 1, "close": 1}),
    "bravo": ({"text": 4, "binary": 1, "ping": 1, "pong": 0, "close": 1},
              {"text": 5, "binary": 1, "ping": 0, "pong": 1, "close": 1}),
    "charlie": ({"text": 4, "binary": 1, "ping": 1, "pong": 0, "close": 1},
                {"text": 5, "binary": 1, "ping": 0, "pong": 1, "close": 1}),
}
PROXY_NAMES = {"nginx": "nginx", "haproxy": "HAProxy", "apache": "Apache httpd"}
PROXY_CONF = {"nginx": "nginx.conf", "haproxy": "haproxy.cfg", "apache": "apache2.conf"}

SCENARIOS: dict[str, dict] = {
    "nginx-ok": {
        "title": "Correct nginx WebSocket proxy, three concurrent clients",
        "proxy": "nginx",
        "clients": MULTI_CLIENTS,
        "connections": 3,
        "status": 101,
        "messages": MULTI_MESSAGES,
    },
    "nginx-no-upgrade": {
        "title": "nginx without proxy_http_version 1.1 / Upgrade / Connection (field note seed 004)",
        "proxy": "nginx",
        "clients": {},
        "connections": 1,
        "status": 505,
        "server_request_version": "HTTP/1.0",
    },
    "nginx-no-upgrade-http11": {
        "title": "nginx with proxy_http_version 1.1 but without the Upgrade / Connection headers",
        "proxy": "nginx",
        "clients": {},
        "connections": 1,
        "status": 426,
        "server_request_version": "HTTP/1.1",
    },
    "nginx-idle-timeout": {
        "title": "nginx proxy_read_timeout 3s closes an idle WebSocket",
        "proxy": "nginx",
        "clients": {},
        "connections": 1,
        "status": 101,
        "idle_timeout_s": 3.0,
        "messages": {
            None: ({"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0},
                   {"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0}),
        },
    },
    "haproxy-ok": {
        "title": "HAProxy 2.6 (mode http, option forwardfor, timeout tunnel 30s), three concurrent clients",
        "proxy": "haproxy",
        "clients": MULTI_CLIENTS,
        "connections": 3,
        "status": 101,
        "messages": MULTI_MESSAGES,
    },
    "apache-ok": {
        "title": "Apache httpd 2.4 mod_proxy_wstunnel (ProxyPass /ws ws://...), three concurrent clients",
        "proxy": "apache",
        "clients": MULTI_CLIENTS,
        "connections": 3,
        "status": 101,
        "messages": MULTI_MESSAGES,
    },
    "haproxy-server-reset": {
        "title": "HAProxy: the backend resets the WebSocket connection mid-stream (TCP RST)",
        "proxy": "haproxy",
        "clients": {"delta": "i-am-delta"},
        "connections": 1,
        "status": 101,
        "server_reset": True,
        "messages": {
            "delta": ({"text": 2, "binary": 0, "ping": 0, "pong": 0, "close": 0},
                      {"text": 2, "binary": 0, "ping": 0, "pong": 0, "close": 0}),
        },
    },
    "haproxy-idle-timeout": {
        "title": "HAProxy timeout tunnel 3s closes an idle WebSocket",
        "proxy": "haproxy",
        "clients": {},
        "connections": 1,
        "status": 101,
        "idle_timeout_s": 3.0,
        "messages": {
            None: ({"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0},
                   {"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0}),
        },
    },
    "apache-idle-timeout": {
        "title": "Apache httpd Timeout 3 / ProxyTimeout 3 closes an idle WebSocket",
        "proxy": "apache",
        "clients": {},
        "connections": 1,
        "status": 101,
        "idle_timeout_s": 3.0,
        "messages": {
            None: ({"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0},
                   {"text": 1, "binary": 0, "ping": 0, "pong": 0, "close": 0}),
        },
    },
    "nginx-deflate": {
        "title": "nginx passes permessage-deflate through (context takeover, 15-bit windows)",
        "proxy": "nginx",
        "clients": {"echo": "i-am-echo"},
        "connections": 1,
        "status": 101,
        "detail": True,
        "deflate": {"extensions": "permessage-deflate", "context_takeover": True},
        "messages": {
            "echo": ({"text": 7, "binary": 1, "ping": 1, "pong": 0, "close": 1},
                     {"text": 8, "binary": 1, "ping": 0, "pong": 1, "close": 1}),
        },
    },
    "nginx-deflate-no-context-takeover": {
        "title": "nginx passes permessage-deflate through (no context takeover, client_max_window_bits=10)",
        "proxy": "nginx",
        "clients": {"echo": "i-am-echo"},
        "connections": 1,
        "status": 101,
        "detail": True,
        "deflate": {"extensions": "permessage-deflate; server_no_context_takeover; "
                                  "client_no_context_takeover; client_max_window_bits=10",
                    "context_takeover": False},
        "messages": {
            "echo": ({"text": 7, "binary": 1, "ping": 1, "pong": 0, "close": 1},
                     {"text": 8, "binary": 1, "ping": 0, "pong": 1, "close": 1}),
        },
    },
    "haproxy-fragmented": {
        "title": "HAProxy: large and fragmented messages, pings between fragments",
        "proxy": "haproxy",
        "clients": {"golf": "i-am-golf"},
        "connections": 1,
        "status": 101,
        "detail": True,
        "fragmented": True,
        "messages": {
            "golf": ({"text": 5, "binary": 1, "ping": 2, "pong": 1, "close": 1},
                     {"text": 6, "binary": 0, "ping": 1, "pong": 2, "close": 1}),
        },
    },
    "nginx-many-clients": {
        "title": "nginx: twelve concurrent clients on the same URL",
        "proxy": "nginx",
        "clients": {f"client-{i:02d}": f"i-am-client-{i:02d}" for i in range(1, 13)},
        "connections": 12,
        "status": 101,
        "messages": {
            f"client-{i:02d}": ({"text": 3, "binary": 1, "ping": 0, "pong": 0, "close": 1},
                                {"text": 3, "binary": 1, "ping": 0, "pong": 0, "close": 1})
            for i in range(1, 13)
        },
    },
    "nginx-k8s-exec": {
        "title": "nginx in front of a Kubernetes-exec-style server (v4.channel.k8s.io)",
        "proxy": "nginx",
        "clients": {},
        "connections": 1,
        "status": 101,
        "detail": True,
        "target": "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&stderr=true&tty=false",
        "k8s": {"subprotocol": "v4.channel.k8s.io", "base64": False},
        "messages": {
            None: ({"text": 0, "binary": 4, "ping": 0, "pong": 0, "close": 1},
                   {"text": 0, "binary": 4, "ping": 0, "pong": 0, "close": 1}),
        },
    },
    "nginx-k8s-exec-base64": {
        "title": "nginx in front of a Kubernetes-exec-style server (base64.channel.k8s.io)",
        "proxy": "nginx",
        "clients": {},
        "connections": 1,
        "status": 101,
        "detail": True,
        "target": "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&stderr=true&tty=false",
        "k8s": {"subprotocol": "base64.channel.k8s.io", "base64": True},
        "messages": {
            None: ({"text": 4, "binary": 0, "ping": 0, "pong": 0, "close": 1},
                   {"text": 4, "binary": 0, "ping": 0, "pong": 0, "close": 1}),
        },
    },
}
K8S_CHANNEL_NAMES = {0: "stdin", 1: "stdout", 2: "stderr", 3: "status", 4: "resize", 255: "close"}


class Failure(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failure(msg)


# ----------------------------------------------------------------------------- tshark
def tshark_json(pcap: Path, fields: list[str], display_filter: str | None = None) -> list[dict]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "json"]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = json.loads(out or "[]")
    return [r["_source"]["layers"] for r in rows]


def one(layer: dict, field: str, default=None):  # type: ignore[no-untyped-def]
    v = layer.get(field)
    return v[0] if v else default


def parse_header_lines(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        line = line.rstrip("\r\n")
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        headers.append((name, value.strip()))
    return headers


# ----------------------------------------------------------------------------- reading
def read_capture(pcap: Path) -> dict:
    """All TCP connections of one capture, as tshark reads them."""
    pkts = tshark_json(pcap, [
        "frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst",
        "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset",
        "tcp.len", "tcp.seq", "tcp.payload",
    ], "tcp")
    total = tshark_json(pcap, ["frame.number"])
    conns: dict[int, dict] = {}
    for p in pkts:
        sid = int(one(p, "tcp.stream"))
        src = f"{one(p, 'ip.src')}:{one(p, 'tcp.srcport')}"
        dst = f"{one(p, 'ip.dst')}:{one(p, 'tcp.dstport')}"
        ts = float(one(p, "frame.time_epoch"))
        syn = one(p, "tcp.flags.syn") in ("1", "True")
        ack = one(p, "tcp.flags.ack") in ("1", "True")
        fin = one(p, "tcp.flags.fin") in ("1", "True")
        rst = one(p, "tcp.flags.reset") in ("1", "True")
        plen = int(one(p, "tcp.len", "0"))
        c = conns.get(sid)
        if c is None:
            c = conns[sid] = {
                "stream": sid, "src": src, "dst": dst, "syn_seen": False,
                "first_ts": ts, "last_ts": ts, "packets": 0,
                "payload_bytes": {d: 0 for d in DIRS}, "max_segment_payload": 0,
                "fin": {}, "rst": {}, "last_payload_ts": None, "payload_ts": [],
                "segments": {d: {} for d in DIRS},
            }
        if syn and not ack:
            c["src"], c["dst"], c["syn_seen"] = src, dst, True
        d = "client_to_server" if src == c["src"] else "server_to_client"
        c["packets"] += 1
        c["last_ts"] = ts
        c["payload_bytes"][d] += plen
        c["max_segment_payload"] = max(c["max_segment_payload"], plen)
        if plen:
            c["last_payload_ts"] = ts
            c["payload_ts"].append(ts)
            payload = bytes.fromhex(one(p, "tcp.payload", "").replace(":", ""))
            c["segments"][d].setdefault(int(one(p, "tcp.seq")), payload)  # first copy wins
        if fin and d not in c["fin"]:
            c["fin"][d] = ts
        if rst and d not in c["rst"]:
            c["rst"][d] = ts

    for r in tshark_json(pcap, ["tcp.stream", "http.request.method", "http.request.uri",
                                "http.request.version", "http.request.line"], "http.request"):
        c = conns[int(one(r, "tcp.stream"))]
        c.setdefault("requests", []).append({
            "method": one(r, "http.request.method"), "target": one(r, "http.request.uri"),
            "version": one(r, "http.request.version"),
            "headers": parse_header_lines(r.get("http.request.line", [])),
        })
    for r in tshark_json(pcap, ["tcp.stream", "http.response.code", "http.response.phrase",
                                "http.response.version", "http.response.line"], "http.response"):
        c = conns[int(one(r, "tcp.stream"))]
        c.setdefault("responses", []).append({
            "status": int(one(r, "http.response.code")), "phrase": one(r, "http.response.phrase"),
            "version": one(r, "http.response.version"),
            "headers": parse_header_lines(r.get("http.response.line", [])),
        })
    for r in tshark_json(pcap, ["tcp.stream", "ip.src", "tcp.srcport", "frame.time_epoch",
                                "websocket.opcode", "websocket.fin", "websocket.rsv",
                                "websocket.payload.text", "websocket.payload.close.status_code",
                                "websocket.payload.close.reason", "data.data"], "websocket"):
        c = conns[int(one(r, "tcp.stream"))]
        src = f"{one(r, 'ip.src')}:{one(r, 'tcp.srcport')}"
        d = "client_to_server" if src == c["src"] else "server_to_client"
        ws = c.setdefault("ws", {x: {"frames": defaultdict(int), "texts": [], "close": [],
                                     "rsv1": 0, "binaries": [], "close_ts": []} for x in DIRS})
        ts = float(one(r, "frame.time_epoch"))
        for op in r.get("websocket.opcode", []):
            ws[d]["frames"][OPCODES.get(int(op), f"opcode{op}")] += 1
            if int(op) == 8:
                ws[d]["close_ts"].append(ts)
        # websocket.rsv: the 3 RSV bits (0x4 = RSV1, "Per-Message Compressed")
        ws[d]["rsv1"] += sum(1 for v in r.get("websocket.rsv", []) if int(v, 16) & 0x4)
        # with permessage-deflate negotiated, tshark (Wireshark >= 3.x) decompresses: the
        # text is the decompressed text, data.data the decompressed binary payload
        ws[d]["texts"] += r.get("websocket.payload.text", [])
        ws[d]["binaries"] += [bytes.fromhex(h.replace(":", "")) for h in r.get("data.data", [])]
        for code in r.get("websocket.payload.close.status_code", []):
            ws[d]["close"].append(int(code))
        ws[d]["close_reasons"] = ws[d].get("close_reasons", []) + r.get("websocket.payload.close.reason", [])
    for c in conns.values():
        c["stream_bytes"] = {d: reassemble(c["segments"][d]) for d in DIRS}
        del c["segments"]
    return {"file": pcap, "packets": len(total), "connections": [conns[k] for k in sorted(conns)]}


def reassemble(segments: dict[int, bytes]) -> bytes | None:
    """One direction's TCP payload in sequence order (None if there is a hole)."""
    out = bytearray()
    nxt = None
    for seq in sorted(segments):
        data = segments[seq]
        if nxt is None:
            nxt = seq
        if seq > nxt:
            return None
        out += data[nxt - seq:]
        nxt = max(nxt, seq + len(data))
    return bytes(out)


def after_head(data: bytes | None) -> bytes | None:
    """What follows the first HTTP head (the WebSocket bytes after the handshake)."""
    if data is None:
        return None
    i = data.find(b"\r\n\r\n")
    return data[i + 4:] if i >= 0 else b""


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    vals = [v for n, v in headers if n.lower() == name.lower()]
    return ", ".join(vals) if vals else None


# ----------------------------------------------------------------------------- own decoding
# An independent RFC 6455 / RFC 7692 decoding of the reassembled TCP bytes that tshark
# printed (tcp.payload), checked against tshark's own WebSocket dissector (frame counts by
# opcode, RSV1, decompressed text and binary payloads) so that the per-message facts of
# expected.json (lengths, digests, k8s channels) rest on two readings.
PREVIEW_BYTES = 256  # wsanalyze's message preview: the first 256 payload bytes


def ws_frames(data: bytes) -> list[dict]:
    """The complete WebSocket frames of one direction (bytes after the HTTP head)."""
    frames, pos = [], 0
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, p = b1 & 0x7F, pos + 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, p)
            p += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, p)
            p += 8
        key = data[p:p + 4] if b1 & 0x80 else None
        if key is not None:
            p += 4
        payload = data[p:p + n]
        if len(payload) < n:
            break  # cut by the end of the capture
        if key is not None and n:
            mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
        # start / end: the frame's first and one-past-last byte offsets in `data`
        frames.append({"fin": bool(b0 & 0x80), "rsv1": bool(b0 & 0x40), "opcode": b0 & 0x0F,
                       "masked": key is not None, "length": n, "payload": payload,
                       "start": pos, "end": p + n})
        pos = p + n
    return frames


def deflate_params(extensions: str | None) -> dict | None:
    """permessage-deflate parameters the server accepted (RFC 7692 §7.1), or None."""
    if not extensions:
        return None
    for ext in extensions.split(","):
        parts = [x.strip() for x in ext.split(";")]
        if parts[0] != "permessage-deflate":
            continue
        params = dict((kv.split("=", 1) + [""])[:2] for kv in parts[1:] if kv)
        bits = {k: int(params[k].strip('"')) if params.get(k) else 15
                for k in ("client_max_window_bits", "server_max_window_bits")}
        return {
            "client_to_server": {"context_takeover": "client_no_context_takeover" not in params,
                                 "window_bits": bits["client_max_window_bits"]},
            "server_to_client": {"context_takeover": "server_no_context_takeover" not in params,
                                 "window_bits": bits["server_max_window_bits"]},
        }
    return None


class Inflater:
    """RFC 7692 §7.2.2 decompression of one direction's messages."""

    def __init__(self, window_bits: int, context_takeover: bool) -> None:
        self.bits, self.takeover = window_bits, context_takeover
        self.z = zlib.decompressobj(wbits=-window_bits)
        self.window = b""

    def message(self, data: bytes) -> bytes:
        if not self.takeover or self.z.eof:
            # no context takeover: every message starts from an empty window; a BFINAL
            # block ended the stream: go on with the last window as dictionary
            zdict = self.window if self.takeover else b""
            self.z = (zlib.decompressobj(wbits=-self.bits, zdict=zdict) if zdict
                      else zlib.decompressobj(wbits=-self.bits))
        out = self.z.decompress(data + b"\x00\x00\xff\xff")
        self.window = (self.window + out)[-(1 << self.bits):]
        return out


def ws_messages(frames: list[dict], inflater: Inflater | None) -> list[dict]:
    """Messages in stream order (RFC 6455 §5.4): a control frame is a message of its own
    where it stands (also between the fragments of a data message), a data message is
    emitted at its final fragment; compressed payloads (RSV1 on the first frame) are
    decompressed."""
    out: list[dict] = []
    cur: dict | None = None
    for f in frames:
        op = f["opcode"]
        if op >= 8:
            out.append({"opcode": OPCODES.get(op, f"opcode{op}"), "frames": 1, "compressed": False,
                        "wire_bytes": f["length"], "payload": f["payload"], "fin": [f["fin"]],
                        "frame_bytes": [f["length"]], "controls_inside": 0,
                        "start": f["start"], "end": f["end"]})
            if cur is not None:
                cur["controls_inside"] += 1
            continue
        if op in (1, 2):
            cur = {"opcode": OPCODES[op], "frames": 0, "compressed": f["rsv1"], "wire_bytes": 0,
                   "parts": [], "fin": [], "frame_bytes": [], "controls_inside": 0,
                   "start": f["start"]}
        if cur is None:
            continue  # a continuation without a start: not in these captures
        cur["frames"] += 1
        cur["wire_bytes"] += f["length"]
        cur["parts"].append(f["payload"])
        cur["fin"].append(f["fin"])
        cur["frame_bytes"].append(f["length"])
        if f["fin"]:
            cur["end"] = f["end"]
            wire = b"".join(cur.pop("parts"))
            if cur["compressed"]:
                check(inflater is not None, "RSV1 set without permessage-deflate")
                cur["payload"] = inflater.message(wire)
            else:
                cur["payload"] = wire
            out.append(cur)
            cur = None
    return out


def preview(opcode: str, payload: bytes) -> str:
    """wsanalyze's preview column: text as UTF-8 (replacement characters), a close
    frame's reason (the bytes after its 2-byte code), the others as hex of the
    first 64 bytes (of the first 256)."""
    head = payload[:PREVIEW_BYTES]
    if opcode == "close":
        return head[2:].decode("utf-8", "replace")
    return head.decode("utf-8", "replace") if opcode == "text" else head[:64].hex()


def message_json(m: dict, k8s: dict | None) -> dict:
    out = {
        "opcode": m["opcode"],
        "frames": m["frames"],
        "frame_payload_bytes": m["frame_bytes"],
        "controls_between_fragments": m["controls_inside"],
        "compressed": m["compressed"],
        "wire_bytes": m["wire_bytes"],
        "payload_bytes": len(m["payload"]),
        # BLAKE2b-128 of the (decompressed) payload: wsanalyze's message digest
        "digest": hashlib.blake2b(m["payload"], digest_size=16).hexdigest(),
        "sha256": hashlib.sha256(m["payload"]).hexdigest(),
        "preview": preview(m["opcode"], m["payload"]),
    }
    if k8s is not None and m["opcode"] in ("text", "binary"):
        ch, data = k8s_split(m["payload"], k8s["base64"])
        out["channel"] = ch
        out["kind"] = K8S_CHANNEL_NAMES.get(ch)
        out["channel_data"] = data.decode("utf-8", "replace")
    return out


def k8s_split(payload: bytes, b64: bool) -> tuple[int, bytes]:
    """A *.channel.k8s.io message: channel byte (or digit) and data (base64-decoded)."""
    if b64:
        return int(chr(payload[0])), base64.b64decode(payload[1:])
    return payload[0], payload[1:]


def exit_code_of(status: str) -> int | None:
    """The exit code in a channel-3 status: metav1.Status JSON (v4: the ExitCode cause,
    0 for "Success") or the v1-v3 error text ("... exit code N")."""
    try:
        doc = json.loads(status)
    except ValueError:
        m = re.search(r"exit code (\d+)", status)
        return int(m.group(1)) if m else None
    if doc.get("status") == "Success":
        return 0
    for cause in doc.get("details", {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    return None


def decode_connection(c: dict) -> None:
    """Own frames and messages of one connection (c["own"]), per direction."""
    resp = (c.get("responses") or [None])[0]
    c["own"] = None
    if not (resp and resp["status"] == 101):
        return
    params = deflate_params(header(resp["headers"], "Sec-WebSocket-Extensions"))
    own = {}
    for d in DIRS:
        data = after_head(c["stream_bytes"][d])
        check(data is not None, f"{c['src']}: hole in the {d} stream")
        frames = ws_frames(data)
        inflater = Inflater(**params[d]) if params else None
        own[d] = {"frames": frames, "messages": ws_messages(frames, inflater)}
    c["own"] = own


def connection_json(c: dict, spec: dict | None = None) -> dict:
    spec = spec or {}
    req = (c.get("requests") or [None])[0]
    resp = (c.get("responses") or [None])[0]
    ws = c.get("ws")
    websocket = bool(resp and resp["status"] == 101 and ws is not None)
    messages = {}
    for d in DIRS:
        f = ws[d]["frames"] if ws else {}
        messages[d] = {k: f.get(k, 0) for k in ("text", "binary", "ping", "pong", "close")}
    first_fin = None
    if c["fin"]:
        first_fin = min(c["fin"], key=c["fin"].get)
    who = {"client_to_server": "client", "server_to_client": "server"}
    # close events: every close frame, the first FIN and the first RST each way
    events = []
    for d in DIRS:
        for t, code in zip((ws[d]["close_ts"] if ws else []), (ws[d]["close"] if ws else []), strict=True):
            events.append((t, "close", who[d], code))
        if d in c["fin"]:
            events.append((c["fin"][d], "fin", who[d], None))
        if d in c["rst"]:
            events.append((c["rst"][d], "rst", who[d], None))
    events.sort(key=lambda e: (e[0], {"close": 0, "fin": 1, "rst": 2}[e[1]]))
    ends = [e for e in events if e[1] in ("fin", "rst")]
    first_end = ends[0] if ends else None
    idle_before_end = None
    if first_end:
        before = [t for t in c["payload_ts"] if t <= first_end[0]]
        idle_before_end = round(first_end[0] - before[-1], 3) if before else None
    out = {
        "src": c["src"],
        "dst": c["dst"],
        "websocket": websocket,
        "request_target": req["target"] if req else None,
        "request_version": req["version"] if req else None,
        "status": resp["status"] if resp else None,
        "reason": resp["phrase"] if resp else None,
        "subprotocol": header(resp["headers"], "Sec-WebSocket-Protocol") if resp else None,
        "sec_websocket_key": header(req["headers"], "Sec-WebSocket-Key") if req else None,
        "messages": messages,
        "close_codes": {d: (ws[d]["close"] if ws else []) for d in DIRS},
        "continuation_frames": {d: (ws[d]["frames"].get("continuation", 0) if ws else 0) for d in DIRS},
        "tcp": {
            "syn_seen": c["syn_seen"],
            "packets": c["packets"],
            "payload_bytes": c["payload_bytes"],
            "max_segment_payload": c["max_segment_payload"],
            "first_fin_from": {"client_to_server": "client", "server_to_client": "server"}.get(first_fin),
            "rst_from": sorted({"client_to_server": "client", "server_to_client": "server"}[d] for d in c["rst"]),
            "duration_s": round(c["last_ts"] - c["first_ts"], 6),
            "idle_before_first_fin_s": (
                round(c["fin"][first_fin] - c["last_payload_ts"], 3)
                if first_fin and c["last_payload_ts"] else None
            ),
            # the first FIN or RST (whichever came first) and the silence before it
            "first_end": ({"kind": first_end[1], "from": first_end[2]} if first_end else None),
            "idle_before_end_s": idle_before_end,
        },
        # close frames (with their code), the first FIN and first RST each way, in time
        # order; "t_s" = seconds since the connection's first packet in this capture
        "close_events": [
            {"kind": k, "from": w, "code": code, "t_s": round(t - c["first_ts"], 6)}
            for t, k, w, code in events
        ],
        # frames by opcode (a fragmented message: its first frame counts as text/binary,
        # the others as continuation), and frames with RSV1 set, as tshark dissects them
        "frames": {d: {k: (ws[d]["frames"].get(k, 0) if ws else 0)
                       for k in ("text", "binary", "continuation", "ping", "pong", "close")}
                   for d in DIRS},
        "rsv1_frames": {d: (ws[d]["rsv1"] if ws else 0) for d in DIRS},
        "extensions": header(resp["headers"], "Sec-WebSocket-Extensions") if resp else None,
        "compressed_messages": {
            d: (sum(1 for m in c["own"][d]["messages"] if m["compressed"]) if c.get("own") else 0)
            for d in DIRS
        },
    }
    own = c.get("own")
    if own and spec.get("detail"):
        k8s = spec.get("k8s")
        out["message_list"] = {d: [message_json(m, k8s) for m in own[d]["messages"]] for d in DIRS}
    if own and spec.get("k8s"):
        k8s = spec["k8s"]
        chans: dict[str, dict[str, int]] = {}
        status = None
        for d in DIRS:
            counts: dict[str, int] = defaultdict(int)
            for m in own[d]["messages"]:
                if m["opcode"] in ("text", "binary"):
                    ch, data = k8s_split(m["payload"], k8s["base64"])
                    counts[str(ch)] += 1
                    if ch == 3:
                        status = data.decode()
            chans[d] = dict(sorted(counts.items()))
        out["k8s"] = {"channels": chans, "status": status,
                      "exit_code": exit_code_of(status) if status is not None else None}
    return out


def header_changes(before: list[tuple[str, str]], after: list[tuple[str, str]]) -> list[dict]:
    """Changes from `before` (as sent by the first hop) to `after` (as forwarded)."""
    def grouped(hs: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        g: dict[str, list] = {}
        for n, v in hs:
            g.setdefault(n.lower(), [n, []])[1].append(v)
        return {k: (n, ", ".join(vs)) for k, (n, vs) in g.items()}
    b, a = grouped(before), grouped(after)
    changes = []
    for key in list(b) + [k for k in a if k not in b]:
        if key in b and key not in a:
            changes.append({"name": b[key][0], "change": "removed", "client_value": b[key][1], "server_value": None})
        elif key in a and key not in b:
            changes.append({"name": a[key][0], "change": "added", "client_value": None, "server_value": a[key][1]})
        elif b[key][1] != a[key][1]:
            changes.append({"name": b[key][0], "change": "modified", "client_value": b[key][1], "server_value": a[key][1]})
    return changes


def response_changes(server_side: list[tuple[str, str]], client_side: list[tuple[str, str]]) -> list[dict]:
    """Response headers: server_value is what the server sent, client_value what the client got."""
    out = []
    for ch in header_changes(server_side, client_side):
        # header_changes() put the server's response in "client_value" (its `before`)
        out.append({"name": ch["name"], "change": ch["change"],
                    "client_value": ch["server_value"], "server_value": ch["client_value"]})
    return out


def crosscheck_tshark(where: str, c: dict) -> None:
    """Our own decoding of a connection agrees with tshark's WebSocket dissector."""
    own, ws = c.get("own"), c.get("ws")
    if own is None:
        check(ws is None, f"{where}: tshark decodes WebSocket on a connection without a 101")
        return
    for d in DIRS:
        frames = own[d]["frames"]
        mine: dict[str, int] = defaultdict(int)
        for f in frames:
            mine[OPCODES.get(f["opcode"], f"opcode{f['opcode']}")] += 1
        theirs = {k: v for k, v in (ws[d]["frames"] if ws else {}).items() if v}
        check(dict(mine) == theirs, f"{where} {c['src']} {d}: frames {dict(mine)} but tshark {theirs}")
        rsv1 = sum(1 for f in frames if f["rsv1"])
        check(rsv1 == (ws[d]["rsv1"] if ws else 0),
              f"{where} {c['src']} {d}: {rsv1} RSV1 frames but tshark {ws[d]['rsv1'] if ws else 0}")
        # tshark prints the (decompressed) text of every unfragmented text message and
        # gives the (decompressed) payload of every unfragmented binary message to its
        # data dissector (data.data); fragmented ones it reassembles without printing
        msgs = own[d]["messages"]
        texts = [m["payload"].decode("utf-8") for m in msgs if m["opcode"] == "text" and m["frames"] == 1]
        check(texts == (ws[d]["texts"] if ws else []),
              f"{where} {c['src']} {d}: our text payloads differ from tshark's")
        binaries = [m["payload"] for m in msgs if m["opcode"] == "binary" and m["frames"] == 1]
        check(binaries == (ws[d]["binaries"] if ws else []),
              f"{where} {c['src']} {d}: our binary payloads differ from tshark's")


# ----------------------------------------------------------------------------- pairing
def find_pairs(name: str, spec: dict, cli: dict, srv: dict) -> list[dict]:
    cconns = [c for c in cli["connections"] if c.get("requests")]
    sconns = [c for c in srv["connections"] if c.get("requests")]

    def key(c: dict) -> str | None:
        return header(c["requests"][0]["headers"], "Sec-WebSocket-Key")

    by_key = {}
    for c in cconns:
        m = [s for s in sconns if key(s) == key(c)]
        check(len(m) == 1, f"{name}: client-side {c['src']} has {len(m)} server-side connections "
                           f"with Sec-WebSocket-Key {key(c)}")
        by_key[c["src"]] = m[0]

    labels: dict[str, str] = {}
    for label, token in spec["clients"].items():
        def has(c: dict, token: str = token) -> bool:
            return token in (c.get("ws") or {}).get("client_to_server", {}).get("texts", [])
        cm = [c for c in cconns if has(c)]
        sm = [s for s in sconns if has(s)]
        check(len(cm) == 1 and len(sm) == 1,
              f"{name}: token {token!r} found in {len(cm)} client-side / {len(sm)} server-side connections")
        check(by_key[cm[0]["src"]] is sm[0],
              f"{name}: token pairing and Sec-WebSocket-Key pairing disagree for {label}")
        labels[cm[0]["src"]] = label

    pairs = []
    for c in sorted(cconns, key=lambda c: c["first_ts"]):
        s = by_key[c["src"]]
        creq, sreq = c["requests"][0], s["requests"][0]
        cresp = (c.get("responses") or [None])[0]
        sresp = (s.get("responses") or [None])[0]
        line = {}
        for field in ("method", "target", "version"):
            if creq[field] != sreq[field]:
                line[field] = {"client_value": creq[field], "server_value": sreq[field]}
        pair = {
            "client": c["src"],
            "server": s["src"],
            "label": labels.get(c["src"]),
            "matched_by": (["unique text token", "Sec-WebSocket-Key"] if c["src"] in labels
                           else ["Sec-WebSocket-Key"]),
            "request_line_changes": line,
            "request_header_changes": header_changes(creq["headers"], sreq["headers"]),
            "request_header_order": {
                "client": [n for n, _ in creq["headers"]],
                "server": [n for n, _ in sreq["headers"]],
            },
            # response header names as each side saw them (server sent, client received)
            "response_header_order": {
                "server": [n for n, _ in sresp["headers"]] if sresp else [],
                "client": [n for n, _ in cresp["headers"]] if cresp else [],
            },
            # are the bytes after the HTTP heads (the WebSocket frames) identical on both
            # legs, per direction? (masking keys, frame boundaries and payloads untouched)
            # (None: not a WebSocket connection, or a hole in a capture)
            "websocket_bytes_identical": {
                d: (after_head(c["stream_bytes"][d]) == after_head(s["stream_bytes"][d])
                    if c["stream_bytes"][d] is not None and s["stream_bytes"][d] is not None
                    and cresp and sresp and cresp["status"] == sresp["status"] == 101 else None)
                for d in DIRS
            },
            "response_status": {"server_sent": sresp["status"] if sresp else None,
                                "client_received": cresp["status"] if cresp else None},
            "response_header_changes": (response_changes(sresp["headers"], cresp["headers"])
                                        if sresp and cresp else []),
        }
        pairs.append(pair)
    return pairs


# ----------------------------------------------------------------------------- checks
def verify(name: str, spec: dict, cap: dict[str, dict], conns: dict[str, list[dict]],
           pairs: list[dict]) -> None:
    for side in ("client", "server"):
        cs = conns[side]
        check(len(cs) == spec["connections"],
              f"{name}/{side}: {len(cs)} TCP connections, expected {spec['connections']}")
        for c in cs:
            check(c["tcp"]["syn_seen"], f"{name}/{side}: {c['src']} has no SYN in the capture")
            check(c["tcp"]["max_segment_payload"] <= MAX_SEGMENT_PAYLOAD,
                  f"{name}/{side}: segment of {c['tcp']['max_segment_payload']} bytes "
                  f"(> {MAX_SEGMENT_PAYLOAD}): offloads were not disabled")
            check(c["status"] == spec["status"],
                  f"{name}/{side}: {c['src']} status {c['status']}, expected {spec['status']}")
            check(c["websocket"] == (spec["status"] == 101), f"{name}/{side}: websocket flag wrong")
            target = spec.get("target", "/ws")
            check(c["request_target"] == target, f"{name}/{side}: target {c['request_target']}")
            if not spec.get("fragmented"):
                check(sum(c["continuation_frames"].values()) == 0, f"{name}/{side}: unexpected fragmentation")
            if "deflate" not in spec:
                check(sum(c["rsv1_frames"].values()) == 0, f"{name}/{side}: unexpected RSV1")
            if side == "client":
                check(c["src"].startswith("192.0.2.10:") and c["dst"] == "192.0.2.1:80",
                      f"{name}/client: unexpected endpoints {c['src']} -> {c['dst']}")
            else:
                check(c["src"].startswith("198.51.100.1:") and c["dst"] == "198.51.100.10:8080",
                      f"{name}/server: unexpected endpoints {c['src']} -> {c['dst']}")
    check(len(pairs) == spec["connections"], f"{name}: {len(pairs)} pairs")
    by_src = {side: {c["src"]: c for c in conns[side]} for side in ("client", "server")}
    for p in pairs:
        cc, sc = by_src["client"][p["client"]], by_src["server"][p["server"]]
        check(cc["messages"] == sc["messages"],
              f"{name}: message counts differ between legs of {p['client']} / {p['server']}")
        if "messages" in spec:
            want = spec["messages"][p["label"]]
            got = (cc["messages"]["client_to_server"], cc["messages"]["server_to_client"])
            check(got == want, f"{name}: {p['label']} messages {got}, expected {want}")
    if "server_request_version" in spec:
        for sc in conns["server"]:
            check(sc["request_version"] == spec["server_request_version"],
                  f"{name}: server-side request version {sc['request_version']}")
        for p in pairs:
            removed = {h["name"].lower() for h in p["request_header_changes"] if h["change"] == "removed"}
            check("upgrade" in removed, f"{name}: Upgrade header not removed by the proxy?")
    if spec.get("server_reset"):
        for c in conns["server"]:
            check(c["tcp"]["rst_from"] == ["server"],
                  f"{name}/server: RST from {c['tcp']['rst_from']}, expected the backend's RST")
        for side in ("client", "server"):
            for c in conns[side]:
                check(not any(c["close_codes"].values()), f"{name}/{side}: unexpected close frame")
        for c in conns["client"]:
            check(c["tcp"]["first_fin_from"] == "server" or "server" in c["tcp"]["rst_from"],
                  f"{name}/client: the proxy did not end the client leg")
    if "idle_timeout_s" in spec:
        for side in ("client", "server"):
            for c in conns[side]:
                # the proxy ends both legs itself (with a FIN or a RST), after the timeout
                idle = c["tcp"]["idle_before_end_s"]
                want_from = "server" if side == "client" else "client"
                end = c["tcp"]["first_end"]
                check(end is not None and end["from"] == want_from,
                      f"{name}/{side}: first FIN/RST {end}, expected one from the proxy ({want_from})")
                check(idle is not None and abs(idle - spec["idle_timeout_s"]) < 0.5,
                      f"{name}/{side}: idle before the proxy's FIN/RST {idle} s, expected ~{spec['idle_timeout_s']} s")
                check(not any(c["close_codes"].values()), f"{name}/{side}: close frame in an idle timeout")
    if "deflate" in spec:
        want = spec["deflate"]
        for side in ("client", "server"):
            for c in conns[side]:
                check(c["extensions"] == want["extensions"],
                      f"{name}/{side}: Sec-WebSocket-Extensions {c['extensions']!r}")
                for d in DIRS:
                    data = sum(c["messages"][d][k] for k in ("text", "binary"))
                    check(c["compressed_messages"][d] == data > 0,
                          f"{name}/{side}: {c['compressed_messages'][d]} of {data} {d} messages compressed")
                    check(c["rsv1_frames"][d] == data, f"{name}/{side}: RSV1 on {c['rsv1_frames'][d]} frames")
                    # the log text sent twice: the 3rd and 4th text message each way
                    texts = [m for m in c["message_list"][d] if m["opcode"] == "text"]
                    a, b = texts[2], texts[3]
                    check(a["sha256"] == b["sha256"], f"{name}/{side}: log text copies differ")
                    if want["context_takeover"]:
                        check(b["wire_bytes"] * 2 < a["wire_bytes"],
                              f"{name}/{side} {d}: with context takeover the second copy is "
                              f"{b['wire_bytes']} bytes, the first {a['wire_bytes']}")
                    else:
                        check(b["wire_bytes"] == a["wire_bytes"],
                              f"{name}/{side} {d}: without context takeover both copies should "
                              f"compress alike ({a['wire_bytes']} / {b['wire_bytes']})")
        for p in pairs:
            cc, sc = by_src["client"][p["client"]], by_src["server"][p["server"]]
            for d in DIRS:
                check([m["digest"] for m in cc["message_list"][d]] == [m["digest"] for m in sc["message_list"][d]],
                      f"{name}: decompressed payloads differ between the legs ({d})")
    if spec.get("fragmented"):
        for side in ("client", "server"):
            for c in conns[side]:
                c2s, s2c = c["message_list"]["client_to_server"], c["message_list"]["server_to_client"]
                frag = [m for m in c2s if m["frames"] > 1]
                check([(m["opcode"], m["frame_payload_bytes"], m["controls_between_fragments"]) for m in frag]
                      == [("binary", [65536, 65536, 16384, 0], 2)],
                      f"{name}/{side}: client fragmented messages {frag}")
                check(any(m["opcode"] == "text" and m["frames"] == 1 and m["payload_bytes"] == 80000
                          for m in c2s), f"{name}/{side}: no 80000-byte single-frame text")
                frag = [m for m in s2c if m["frames"] > 1]
                check([(m["opcode"], m["frame_payload_bytes"], m["controls_between_fragments"]) for m in frag]
                      == [("text", [512, 512, 512, 512, 0], 1)],
                      f"{name}/{side}: server fragmented messages {frag}")
    if "k8s" in spec:
        for side in ("client", "server"):
            for c in conns[side]:
                check(c["subprotocol"] == spec["k8s"]["subprotocol"], f"{name}/{side}: sub-protocol {c['subprotocol']}")
                check(c["k8s"]["channels"] == {"client_to_server": {"0": 3, "4": 1},
                                               "server_to_client": {"1": 2, "2": 1, "3": 1}},
                      f"{name}/{side}: k8s channels {c['k8s']['channels']}")
                check(c["k8s"]["exit_code"] == 2, f"{name}/{side}: exit code {c['k8s']['exit_code']}")
                first_close = next((e for e in c["close_events"] if e["kind"] == "close"), None)
                check(first_close == {**(first_close or {}), "kind": "close", "from": "server", "code": 1000},
                      f"{name}/{side}: first close {first_close}, expected the server's 1000")


# ----------------------------------------------------------------------------- provenance
def read_versions(run_log: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    if not run_log.exists():
        return versions
    text = run_log.read_text(errors="replace")
    m = re.search(r"^## versions\n(.*?)(?:\n## |\Z)", text, re.S | re.M)
    if m:
        for line in m.group(1).splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                versions[k.strip()] = v.strip()
    return versions


def server_block(conf: Path) -> str:
    if not conf.exists():
        return f"({conf.name} missing)"
    text = conf.read_text()
    if conf.name != "nginx.conf":
        # haproxy.cfg / apache2.conf: the part after the marker line written by make_captures.sh
        marker = "# --- proxy part (shown in MANIFEST.md)\n"
        return text.split(marker, 1)[-1].rstrip()
    start = text.find("    map ")
    return "\n".join(line[4:] if line.startswith("    ") else line
                     for line in text[start:].rstrip().rstrip("}").rstrip().splitlines())


# ----------------------------------------------------------------------------- manifest
PROSE = {
    "nginx-ok": """\
Three `websockets` clients (alpha, bravo, charlie) connect **at the same time** to
`ws://192.0.2.1/ws`, offering sub-protocol `chat` (the server selects it). Each sends, waiting
for the echo each time: `hello` (identical for all three: pairing must not rely on it),
`i-am-<name>` (unique: ground truth of the pairing), `push` (the server answers with the
echo **and** a 114-byte JSON document), one binary message, one ping (`ping-<name>`, answered
by a pong), `bye`, then a close 1000 (`<name> done`). alpha also sends a 5000-byte text
(16-bit length, 4 TCP segments) and a 70000-byte binary message (64-bit length, ~49 segments)
before `bye`. permessage-deflate is off, so payloads are byte-identical on both legs; nginx
forwards frames untouched (client frames stay masked with the same key on the server leg).
""",
    "nginx-no-upgrade": """\
The misconfiguration of field note seed 004: no `proxy_http_version 1.1` and no
`Upgrade`/`Connection` forwarding (and no `Host $host`). nginx speaks **HTTP/1.0** upstream,
drops the hop-by-hop `Upgrade` header, sends `Connection: close`, and `Host` becomes the
upstream address. The real `websockets` 17 server refuses the request because of the HTTP
version *before* looking at Upgrade: **505 HTTP Version Not Supported** (body "Failed to open
a WebSocket connection: unsupported HTTP version: HTTP/1.0."). nginx relays the 505 to the
client with its own `Server`/`Date` and `Connection: keep-alive`; the client then closes.
(Spring would instead log "invalid Upgrade header: null" and answer 400; see
`nginx-no-upgrade-http11` for the Upgrade-header-only failure.)
""",
    "nginx-no-upgrade-http11": """\
A variant (not in the brief, added because it reproduces the seed-004 symptom exactly):
`proxy_http_version 1.1` is set but `Upgrade`/`Connection` are not forwarded. The server
sees an HTTP/1.1 GET without `Upgrade` and with `Connection: close` and refuses with
**426 Upgrade Required** (+ `Upgrade: websocket`, body "Failed to open a WebSocket
connection: missing Upgrade header..."), the `websockets` equivalent of Spring's
"Handshake failed due to invalid Upgrade header: null". nginx relays the 426.
""",
    "nginx-idle-timeout": """\
The correct proxy configuration plus `proxy_read_timeout 3s`. One client connects, sends
`hello`, gets the echo, then stays silent (no keepalive pings on either end). After 3 s
without data from the upstream nginx closes **both** TCP connections with a FIN (no
WebSocket close frame on either leg: the server records close code 1006, the client gets
`ConnectionClosedError` with no close frame received or sent). nginx's error log says:
"upstream timed out (110: Connection timed out) while proxying upgraded connection".
The first FIN is the proxy's on both legs, ~3.0 s after the last payload.
""",
    "haproxy-ok": """\
The same three concurrent clients as `nginx-ok` (alpha, bravo, charlie; same messages, same
ground truth `i-am-<name>`), through HAProxy 2.6 in `mode http` with `option forwardfor` and
`timeout tunnel 30s` (HAProxy switches the connection to tunnel mode after the 101). What
HAProxy does to the handshake: it adds `x-forwarded-for: 192.0.2.10` and it **lower-cases
every header name** in both directions (HTX: HTTP/1 header names are rewritten in lower
case), values untouched, order kept; `Host`, `Connection: Upgrade` and the response's
`Server`/`Date` pass through unchanged. Names are compared case-insensitively, so the only
header change in the table is the added `x-forwarded-for`; the case changes are in the
header order lines and the notes. The close handshake (1000 both ways) and the server's
FIN are relayed leg by leg.
""",
    "apache-ok": """\
The same three concurrent clients as `nginx-ok`, through Apache httpd 2.4 (Debian's
`apache2` binary with a minimal configuration: mpm_event, mod_proxy, mod_proxy_http,
mod_proxy_wstunnel) and `ProxyPass /ws ws://198.51.100.10:8080/ws` (with
`ProxyWebsocketFallbackToProxyHttp` at its default, mod_proxy_http performs the Upgrade).
What Apache does to the handshake: `Host` becomes the backend address (no
`ProxyPreserveHost`), `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Server` are
added, and the hop-by-hop `Connection: Upgrade` / `Upgrade: websocket` are regenerated at
the **end** of the request; in the response the backend's `Server` and `Date` are kept
(Apache does not add its own), and `Connection`/`Upgrade` are moved to the end. Values are
otherwise unchanged, so the response has no header change in the table, only a different
order. The close handshake (1000 both ways) and the server's FIN are relayed leg by leg.
""",
    "haproxy-server-reset": """\
One client (delta) through the `haproxy-ok` configuration. The server is started with
`--reset-after 2`: it echoes `hello` and `i-am-delta`, waits 50 ms, then aborts the
connection with `SO_LINGER {1, 0}`, so the kernel sends a **TCP RST** (no close frame, no
FIN) on the server leg. HAProxy logs the session with termination flags `SD--` (server
aborted during the data phase; see `run.log`) and ends the client leg with a plain **FIN**
(no WebSocket close frame, no RST) about 0.1 ms after the RST; the client answers with its
FIN. The `websockets` client sees `ConnectionClosedError` with no close frame received or
sent (close code 1006). The server leg has no FIN at all: its only end is the server's RST.
""",
    "haproxy-idle-timeout": """\
The `haproxy-ok` configuration with `timeout tunnel 3s` (after the 101 HAProxy switches the
session to tunnel mode, where only `timeout tunnel` applies). One client sends `hello`, gets
the echo, then stays silent (no keepalive pings on either end). After 3 s HAProxy ends the
session: a **FIN** to the client and, a few milliseconds or less later (the note below has
the gap of this run), a **RST** (no FIN at all) to the backend: HAProxy aborts its
server-side connection. No WebSocket close frame on either leg
(the client gets `ConnectionClosedError`, the server records 1006). HAProxy's log line has
the termination flags `cD--` (a *client*-side timeout during the data phase, although it is
the tunnel timeout; see `run.log`). Unlike nginx and Apache, which end both legs with FINs,
the server leg's only end is the proxy's RST.
""",
    "apache-idle-timeout": """\
The `apache-ok` configuration plus `ProxyTimeout 3` **and** `Timeout 3`. Measured with this
Apache: `ProxyTimeout 3` alone does **not** close an idle WebSocket (the client was still
connected after 5 s): the tunnel of an upgraded connection (mod_proxy_http performs it, as
`ProxyWebsocketFallbackToProxyHttp` is On by default) waits for the longer of the client-side
`Timeout` (default 60 s) and the backend timeout. `Timeout 3` alone is enough (ProxyTimeout
defaults to it); `ProxyWebsocketIdleTimeout` does not exist in this build (`apache2 -t`:
"Invalid command"). One client sends `hello`, gets the echo, then stays silent. After 3 s
Apache closes both legs with a **FIN**, the server leg first, the client leg less than a
millisecond later (see the note below); no close frame on either leg (1006 at both ends); nothing in the error log at
`LogLevel info`.
""",
    "nginx-deflate": """\
The `nginx-ok` location (nginx forwards `Sec-WebSocket-Extensions` like any end-to-end header
and never touches the frames). Server (`ws_server.py --compression deflate`) and client both
use websockets' permessage-deflate with the RFC 7692 defaults: the client offers
`permessage-deflate; client_max_window_bits`, the server accepts with a bare
`permessage-deflate` (context takeover both ways, 15-bit windows, zlib's default memLevel).
One client (`echo`) sends, each echoed: `hello`, `i-am-echo` (the pairing token), a
2600-byte repetitive log text, **the same text again**, `push` (echo + JSON), a 20000-byte
repetitive text, a 4096-byte repetitive binary message, a ping, `bye`, close 1000.
websockets compresses **every** data message (RSV1 on all of them, none on control frames),
even `hello` (5 bytes -> 7 on the wire). Context takeover is visible: the first copy of the
log text is 227 bytes on the wire, the second 33 (back-references into the previous
message); the 20000-byte text is 88 bytes, the binary message 50. The compressed bytes are
identical on both legs, so the decompressed payloads are too.
""",
    "nginx-deflate-no-context-takeover": """\
Like `nginx-deflate`, but the client offers `permessage-deflate; server_no_context_takeover;
client_no_context_takeover; client_max_window_bits=10` and the server
(`--compression deflate-no-context-takeover`) accepts all of it. Every message is
compressed on its own: both copies of the 2600-byte log text are 223 bytes on the wire
client->server (10-bit window) and 228 bytes server->client (15-bit window), where
`nginx-deflate` has 227 then 33. A decompressor that wrongly kept the context would still
succeed here; one that wrongly reset it fails on `nginx-deflate`.
""",
    "haproxy-fragmented": """\
Large and fragmented messages through the `haproxy-ok` configuration. The brief asked for a
1 MiB binary message and a 200 KB text; both legs of a 1 MiB message cannot fit the 300 KB
budget of a committed pcap, so the sizes are scaled down and the server (`ws_server.py
--summarize-over 4096`) answers a large message with a short summary text (`got binary
len=147456 sha256=...`, checked by the client) instead of echoing it: only the
client->server direction carries the large payloads. The client (`golf`) sends `hello`,
`i-am-golf`, then a **147456-byte binary message fragmented** by websockets
(`send(async iterator)`) into frames of 65536 (64-bit length: 65536 > 65535), 65536 and
16384 bytes **plus an empty final continuation frame with FIN** (websockets always ends an
iterator-sent message that way: 4 frames, 3 continuations), with a **ping between the 1st
and 2nd and between the 2nd and 3rd fragment** (each pong awaited before the next fragment:
control frames inside a fragmented message, RFC 6455 §5.4), then an **80000-byte text in one
frame** (64-bit length), then `frag-reply`: the server answers with a text message of four
512-byte fragments plus the empty final one (5 frames) and sends a ping (`srv-ping`) between
the 2nd and 3rd fragment, answered by the client. Then `bye`, close 1000. HAProxy forwards
the frames byte for byte.
""",
    "nginx-many-clients": """\
Twelve `websockets` clients (`client-01` .. `client-12`) connect **at the same time** to
`ws://192.0.2.1/ws` through the `nginx-ok` location. Each sends, waiting for each echo:
`hello` (identical for all), `i-am-client-NN` (unique: the ground truth of the pairing),
`same-for-all` (identical), an identical binary message, then close 1000
(`client-NN done`). Only the token, the Sec-WebSocket-Key and timing tell the twelve pairs
apart.
""",
    "nginx-k8s-exec": """\
A `kubectl exec`-style session through nginx (`location /api/`) to
`captures/k8s_exec_server.py`, a small stand-in for the kubelet's exec endpoint at
`/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&stderr=true&tty=false`.
The client offers `v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io` (as kubectl >= 1.30
does); the server, like an API server before v5, selects **`v4.channel.k8s.io`**. Every
message is binary, its first byte the channel. Right after the 101 the server sends an
**empty stdout message** (`01`: the kubelet's "streams ready"); the client sends stdin
`echo hello\\n` (-> stdout `hello\\n`), stdin `ls /nonexistent\\n` (-> stderr
`ls: cannot access '/nonexistent': No such file or directory\\n`), a resize
`{"Width":80,"Height":24}` on channel 4 (not answered), stdin `exit 2\\n`; the server then
writes the `metav1.Status` JSON on channel 3 (`"status":"Failure"`, `"reason":"NonZeroExitCode"`,
cause `ExitCode` = `2`) and **closes with 1000**; the client echoes the close.
""",
    "nginx-k8s-exec-base64": """\
The same session with `base64.channel.k8s.io`: the client offers only that, every message is
**text**, its first character the channel digit and the rest the data in base64 (stdin
`echo hello\\n` is `0ZWNobyBoZWxsbwo=`; the "streams ready" message is just `1`). This is
the v1 channel protocol, so, like the kubelet, the server writes on channel 3 not the
`metav1.Status` JSON but only its error text: `command terminated with non-zero exit code:
error executing command [sh], exit code 2` (the exit code has to be read from the text).
""",
}


def fmt_counts(m: dict, c: dict | None = None, d: str | None = None) -> str:
    """Messages by opcode; continuation frames and compressed messages when there are."""
    out = ", ".join(f"{k} {v}" for k, v in m.items() if v) or "none"
    if c is not None:
        if c["continuation_frames"][d]:
            out += f" (+{c['continuation_frames'][d]} continuation frames)"
        if c["compressed_messages"][d]:
            out += f"; {c['compressed_messages'][d]} compressed"
    return out


def manifest(expected: dict, root: Path) -> str:
    out = ["# Real captures for wsanalyze end-to-end tests", ""]
    out.append("Generated by `sudo bash captures/make_captures.sh` (this file and `expected.json` are "
               "rewritten by `captures/derive_expected.py` from the pcaps with tshark on every run; "
               "ports are random, so never edit them by hand).")
    out.append("")
    out.append("Topology (three Linux network namespaces, two veth pairs, MTU 1500, "
               "TSO/GSO limited to one segment so captured segments are wire-sized, IPv6 off):")
    out.append("")
    out.append("```")
    out.append("wsa-client                 wsa-proxy (nginx | HAProxy | Apache)  wsa-server")
    out.append("192.0.2.10 ---- veth ---- 192.0.2.1:80 | 198.51.100.1 ---- veth ---- 198.51.100.10:8080")
    out.append("                          ^ client.pcap   ^ server.pcap")
    out.append("```")
    out.append("")
    out.append("Both captures are taken by tcpdump (`-s 0 -U --immediate-mode`, Ethernet link type, "
               "classic pcap, microsecond timestamps) **inside the proxy namespace**, on the proxy's "
               "two interfaces, so both files share one clock. `client.pcap` = client <-> proxy "
               "(\"client side\"), `server.pcap` = proxy <-> server (\"server side\"). Each capture "
               "begins with the ARP exchange of a fresh namespace (non-TCP packets to skip).")
    out.append("")
    sw = expected["software"]
    out.append("## Software")
    out.append("")
    for k, v in sw.items():
        out.append(f"- {k}: `{v}`")
    out.append("")
    out.append("Server: `captures/ws_server.py` (websockets asyncio server, echo, `push` -> JSON, "
               "sub-protocol `chat` if offered, `compression=None` unless the scenario says "
               "otherwise, no keepalive pings); the `nginx-k8s-exec*` scenarios use "
               "`captures/k8s_exec_server.py` (a Kubernetes-exec-style channel server). Client: "
               "`captures/ws_client.py`. Each proxy runs in the foreground in `wsa-proxy` with its "
               "own configuration, pid and log files in a scratch directory (never as a system "
               "service). Logs of the run (client, server, proxy access and error logs, tcpdump "
               "statistics) are in `<scenario>/run.log`, the exact proxy configuration in "
               "`<scenario>/nginx.conf`, `<scenario>/haproxy.cfg` or `<scenario>/apache2.conf`.")
    out.append("")
    for name, sc in expected["scenarios"].items():
        out.append(f"## `{name}`: {sc['title']}")
        out.append("")
        out.append(PROSE.get(name, "").rstrip())
        out.append("")
        proxy, conf = sc["proxy"], PROXY_CONF[sc["proxy"]]
        part = {"nginx": "http-level part", "haproxy": "without the `global` section",
                "apache": "the proxy part"}[proxy]
        out.append(f"{PROXY_NAMES[proxy]} configuration ({part}; full file in `{name}/{conf}`):")
        out.append("")
        out.append("```" + proxy)
        out.append(server_block(root / name / conf))
        out.append("```")
        out.append("")
        for side in ("client", "server"):
            capinfo = sc["captures"][side]
            out.append(f"**{capinfo['file']}** ({capinfo['bytes']} bytes, {capinfo['packets']} packets, "
                       f"largest TCP payload {capinfo['max_segment_payload']} bytes):")
            out.append("")
            out.append("| connection | HTTP | status | WebSocket | client -> server | server -> client | close codes c->s / s->c | first FIN / RST |")
            out.append("|---|---|---|---|---|---|---|---|")
            for c in capinfo["connections"]:
                end, idle = c["tcp"]["first_end"], c["tcp"]["idle_before_end_s"]
                others = [w for w in c["tcp"]["rst_from"] if not (end and end["kind"] == "rst" and end["from"] == w)]
                out.append(
                    f"| {c['src']} -> {c['dst']} | GET {c['request_target']} {c['request_version']} | "
                    f"{c['status']} {c['reason'] or ''} | {'yes' if c['websocket'] else 'no'}"
                    f"{' (' + c['subprotocol'] + ')' if c['subprotocol'] else ''}"
                    f"{'; ' + c['extensions'] if c.get('extensions') else ''} | "
                    f"{fmt_counts(c['messages']['client_to_server'], c, 'client_to_server')} | "
                    f"{fmt_counts(c['messages']['server_to_client'], c, 'server_to_client')} | "
                    f"{c['close_codes']['client_to_server'] or '-'} / {c['close_codes']['server_to_client'] or '-'} | "
                    f"{(end['kind'].upper() + ' from ' + end['from']) if end else '-'}"
                    f"{f' after {idle:.3f} s idle' if idle is not None and idle > 1 else ''}"
                    f"{''.join(f'; RST from {w}' for w in others)} |")
            out.append("")
        out.append("**What the analysis must find**")
        out.append("")
        out.append("Pairs (client-side client endpoint -> server-side proxy endpoint):")
        out.append("")
        for p in sc["pairs"]:
            label = f" ({p['label']})" if p["label"] else ""
            out.append(f"- `{p['client']}` -> `{p['server']}`{label}, matched by {' + '.join(p['matched_by'])}; "
                       f"status server sent {p['response_status']['server_sent']}, "
                       f"client received {p['response_status']['client_received']}")
        out.append("")
        p0 = sc["pairs"][0]
        if p0["request_line_changes"]:
            out.append("Request line changes: " + "; ".join(
                f"{k}: `{v['client_value']}` -> `{v['server_value']}`" for k, v in p0["request_line_changes"].items()))
            out.append("")
        out.append("Request header changes made by the proxy (the same for every pair; client side -> server side):")
        out.append("")
        out.append("| header | change | client side | server side |")
        out.append("|---|---|---|---|")
        for h in p0["request_header_changes"]:
            out.append(f"| {h['name']} | {h['change']} | {h['client_value'] if h['client_value'] is not None else '-'} | "
                       f"{h['server_value'] if h['server_value'] is not None else '-'} |")
        out.append("")
        out.append("Header order: client sent `" + ", ".join(p0["request_header_order"]["client"]) +
                   "`; server received `" + ", ".join(p0["request_header_order"]["server"]) + "`.")
        out.append("")
        if p0["response_header_order"]["server"] != p0["response_header_order"]["client"]:
            out.append("Response header order: server sent `" +
                       ", ".join(p0["response_header_order"]["server"]) + "`; client received `" +
                       ", ".join(p0["response_header_order"]["client"]) + "`.")
            out.append("")
        if p0["response_header_changes"]:
            out.append("Response header changes (server sent -> client received):")
            out.append("")
            out.append("| header | change | server sent | client received |")
            out.append("|---|---|---|---|")
            for h in p0["response_header_changes"]:
                out.append(f"| {h['name']} | {h['change']} | {h['server_value'] if h['server_value'] is not None else '-'} | "
                           f"{h['client_value'] if h['client_value'] is not None else '-'} |")
            out.append("")
        for note in sc.get("notes", []):
            out.append(f"- {note}")
        if sc.get("notes"):
            out.append("")
        out.append("**Must find** (`must_find` in expected.json: each fact in words and as values to "
                   "check mechanically):")
        out.append("")
        for f in sc.get("must_find", []):
            values = {k: v for k, v in f.items() if k not in ("fact", "text")}
            out.append(f"- `{f['fact']}`: {f['text']}.  ")
            out.append(f"  `{json.dumps(values, separators=(', ', ': '))}`")
        out.append("")
    out.append("## expected.json")
    out.append("")
    out.append("Per scenario: `captures.client|server.connections[]` with `src`, `dst` (ip:port; `src` is "
               "the side that sent the SYN), `websocket`, `request_target`, `request_version`, "
               "`status`, `messages.{client_to_server,server_to_client}.{text,binary,ping,pong,close}` "
               "(messages by opcode: WebSocket frames by opcode as tshark decodes them, continuation "
               "frames not counted; `continuation_frames` counts those), "
               "`close_codes`, `tcp` (SYN seen, packets, payload bytes, largest segment, who sent the "
               "first FIN, idle time before it); `pairs[]` with `client`, `server`, "
               "`request_line_changes`, `request_header_changes[]` (`name`, `change` "
               "added|removed|modified, `client_value`, `server_value`; names compared "
               "case-insensitively, values exactly, repeated headers joined with \", \"), "
               "`response_header_changes[]` (`server_value` = as the server sent it, "
               "`client_value` = as the client received it), `response_status`, "
               "`request_header_order` / `response_header_order` (header names exactly as each "
               "side saw them: a change of name case only shows here) and "
               "`websocket_bytes_identical` (per direction: are the bytes after the HTTP heads "
               "identical on both legs).")
    out.append("")
    out.append("Also per connection: `frames.{direction}.{text,binary,continuation,ping,pong,close}` "
               "(frames by opcode: a fragmented message counts once as text/binary, its other "
               "frames as continuation), `rsv1_frames` (frames with RSV1 set), `extensions` (the "
               "101's Sec-WebSocket-Extensions), `compressed_messages` (data messages whose first "
               "frame has RSV1), `close_events[]` (every close frame with its `code`, the first FIN "
               "and first RST each way, in time order: `kind` close|fin|rst, `from` client|server "
               "on that leg, `t_s` seconds since the connection's first packet), "
               "`tcp.first_end` (the first FIN or RST: `kind`, `from`) and "
               "`tcp.idle_before_end_s` (silence before it). For the scenarios with per-message "
               "detail (deflate, fragmented, k8s): `message_list.{direction}[]` in stream order "
               "(control frames where they stand, a data message at its last fragment) with "
               "`opcode`, `frames`, `frame_payload_bytes`, `controls_between_fragments`, "
               "`compressed`, `wire_bytes` (payload bytes on the wire), `payload_bytes` "
               "(decompressed), `digest` (BLAKE2b-128 hex of the decompressed payload, as "
               "wsanalyze's message digest), `sha256`, `preview` (first 256 bytes as UTF-8 for "
               "text, hex of the first 64 for the others, as wsanalyze's preview) and, for k8s, "
               "`channel`, `kind`, `channel_data`; for k8s scenarios `k8s.channels` "
               "(messages per channel per direction), `k8s.status`, `k8s.exit_code`. These "
               "are decoded by derive_expected.py from the TCP payload tshark prints and checked "
               "against tshark's WebSocket dissector (frame counts by opcode, RSV1 counts, "
               "decompressed text and binary payloads).")
    out.append("")
    out.append("Per scenario, `must_find[]`: what the analysis must find, one object per fact "
               "with `fact` (a stable name: pairs, request_header_changes, handshake_refused, "
               "idle_timeout, backend_reset, deflate, fragmented_messages, large_messages, "
               "k8s_exec, close_handshake), `text` (in words) and the values to check "
               "(e.g. `{\"idle_timeout_s\": 3.0, \"client_leg_end\": \"fin\", "
               "\"server_leg_end\": \"rst\"}`, `{\"deflate\": {\"client_to_server\": 8, ...}}`, "
               "`{\"k8s_channels\": {...}, \"exit_code\": 2}`).")
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTTP/2 backend
# The captures/h2/<scenario>/ captures: HAProxy 2.6 with `server ... proto h2` (cleartext
# HTTP/2 with prior knowledge). The client leg is HTTP/1.1 WebSocket as everywhere else; on
# the server leg each WebSocket is an RFC 8441 extended CONNECT (`:method CONNECT`,
# `:protocol websocket`) on an HTTP/2 stream, its frames inside DATA frames. tshark 4.0
# decodes the HTTP/2 frames and HPACK (`-d tcp.port==8080,http2`) but not the WebSocket
# inside DATA, so the HTTP/2 framing is also parsed here from the TCP bytes tshark prints
# (checked frame by frame against tshark's: type, flags, stream, length, SETTINGS,
# RST_STREAM / GOAWAY codes, DATA payloads), the header lists are tshark's (HPACK), and the
# WebSocket frames are decoded from each stream's DATA with the RFC 6455 parser above.
# Every message carries the packets of its first and last byte; "time" is tshark's
# frame.time_epoch of the packet with the last byte (wsanalyze's message time), and the
# proxy delays of the pairs are computed from those strings in integer nanoseconds.
H2_SUBDIR = "h2"
BACKEND_PORT = 8080
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
H2_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
            6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}
H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
             4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
             8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
             12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
H2_SETTINGS = {1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS",
               4: "INITIAL_WINDOW_SIZE", 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE",
               8: "ENABLE_CONNECT_PROTOCOL"}
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG, ACK = 0x1, 0x4, 0x8, 0x20, 0x1

# What each scenario is, and the ground truth tshark's reading is checked against.
H2_SCENARIOS: dict[str, dict] = {
    "haproxy-h2": {
        "title": "HAProxy 2.6 with an HTTP/2 backend (`proto h2`): RFC 8441 extended CONNECT, "
                 "three concurrent clients, one server connection each",
        "clients": MULTI_CLIENTS,
        "messages": MULTI_MESSAGES,
        "connections": {"client": 3, "server": 3},
        "streams_per_connection": [1, 1, 1],
        "client_status": [101, 101, 101],
        "server_status": [200, 200, 200],
        "backend_enable_connect_protocol": 1,
        "rst_streams": [],
    },
    "haproxy-h2-multiplex": {
        "title": "HAProxy 2.6 with an HTTP/2 backend and `http-reuse always`: three WebSockets "
                 "multiplexed as three streams of one server connection",
        "clients": MULTI_CLIENTS,
        "messages": MULTI_MESSAGES,
        "connections": {"client": 3, "server": 1},
        "streams_per_connection": [3],
        "client_status": [101, 101, 101],
        "server_status": [200, 200, 200],
        "backend_enable_connect_protocol": 1,
        "rst_streams": [],
    },
    "haproxy-h2-no-connect-protocol": {
        "title": "HAProxy 2.6 with an HTTP/2 backend whose SETTINGS disable extended CONNECT "
                 "(SETTINGS_ENABLE_CONNECT_PROTOCOL = 0): the client gets a 502",
        "clients": {},
        "connections": {"client": 1, "server": 1},
        "streams_per_connection": [1],
        "client_status": [502],
        "server_status": [None],
        "backend_enable_connect_protocol": 0,  # sent, with the value 0 (the h2 library's default)
        "rst_streams": [("client", "INTERNAL_ERROR")],
        "goaway": [("server", "PROTOCOL_ERROR")],
    },
    "haproxy-h2-rst": {
        "title": "HAProxy 2.6 with an HTTP/2 backend that refuses: a 403 on one stream, "
                 "RST_STREAM(REFUSED_STREAM) on another",
        "clients": {},
        "connections": {"client": 2, "server": 2},
        "streams_per_connection": [1, 1],
        "client_status": [403, 502],
        "server_status": [403, None],
        "backend_enable_connect_protocol": 1,
        "rst_streams": [("server", "REFUSED_STREAM")],
    },
}

def as_list(v) -> list:  # type: ignore[no-untyped-def]
    """--no-duplicate-keys merges repeated keys into a list; a single one stays a value."""
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def epoch_ns(ts: str) -> int:
    """tshark's frame.time_epoch string ("1795273134.532258000") in integer nanoseconds."""
    sec, _, frac = ts.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def delay_ms(later: str, earlier: str) -> float:
    return round((epoch_ns(later) - epoch_ns(earlier)) / 1e6, 3)


def read_tcp(pcap: Path) -> dict[int, dict]:
    """Per tcp.stream: endpoints (src = the SYN's sender), per-direction bytes in sequence
    order, and for each byte range the packet that carried it first (frame number and
    tshark's frame.time_epoch string), FIN and RST packets each way."""
    pkts = tshark_json(pcap, [
        "frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst",
        "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset",
        "tcp.len", "tcp.seq", "tcp.payload",
    ], "tcp")
    conns: dict[int, dict] = {}
    for p in pkts:
        sid = int(one(p, "tcp.stream"))
        src = f"{one(p, 'ip.src')}:{one(p, 'tcp.srcport')}"
        dst = f"{one(p, 'ip.dst')}:{one(p, 'tcp.dstport')}"
        num, ts = int(one(p, "frame.number")), one(p, "frame.time_epoch")
        flag = {k: one(p, f"tcp.flags.{k}") in ("1", "True") for k in ("syn", "ack", "fin", "reset")}
        plen = int(one(p, "tcp.len", "0"))
        c = conns.get(sid)
        if c is None:
            c = conns[sid] = {"stream": sid, "src": src, "dst": dst, "syn_seen": False, "packets": 0,
                              "first": (num, ts), "payload_bytes": {d: 0 for d in DIRS},
                              "max_segment_payload": 0, "fin": {}, "rst": {}, "segs": {d: [] for d in DIRS}}
        if flag["syn"] and not flag["ack"]:
            c["src"], c["dst"], c["syn_seen"] = src, dst, True
        d = "client_to_server" if src == c["src"] else "server_to_client"
        c["packets"] += 1
        c["payload_bytes"][d] += plen
        c["max_segment_payload"] = max(c["max_segment_payload"], plen)
        if plen:
            payload = bytes.fromhex(one(p, "tcp.payload", "").replace(":", ""))
            c["segs"][d].append((int(one(p, "tcp.seq")), payload, num, ts))
        if flag["fin"]:
            c["fin"].setdefault(d, (num, ts))
        if flag["reset"]:
            c["rst"].setdefault(d, (num, ts))
    for c in conns.values():
        c["bytes"], c["chunks"] = {}, {}
        for d in DIRS:
            segs = c["segs"][d]
            first: dict[int, bytes] = {}
            for seq, payload, _, _ in segs:
                first.setdefault(seq, payload)  # first copy wins, as in read_capture()
            c["bytes"][d] = reassemble(first) if segs else b""
            base = min((s for s, *_ in segs), default=0)
            c["chunks"][d] = [(seq - base, seq - base + len(pl), num, ts) for seq, pl, num, ts in segs]
        del c["segs"]
    return conns


def packet_at(c: dict, d: str, offset: int) -> tuple[int, str]:
    """The packet (number, time) that first carried byte `offset` of direction d."""
    for start, end, num, ts in c["chunks"][d]:  # in capture order
        if start <= offset < end:
            return num, ts
    raise Failure(f"{c['src']} {d}: no packet carries byte {offset}")


def tcp_json(c: dict) -> dict:
    who = {"client_to_server": "client", "server_to_client": "server"}
    ends = sorted([(v[0], "fin", who[d], v[1]) for d, v in c["fin"].items()] +
                  [(v[0], "rst", who[d], v[1]) for d, v in c["rst"].items()])
    return {
        "syn_seen": c["syn_seen"],
        "first_packet": {"packet": c["first"][0], "time": c["first"][1]},
        "packets": c["packets"],
        "payload_bytes": c["payload_bytes"],
        "max_segment_payload": c["max_segment_payload"],
        # the first FIN and the first RST each way: packet number and time
        "fin": {who[d]: {"packet": v[0], "time": v[1]} for d, v in sorted(c["fin"].items())},
        "rst": {who[d]: {"packet": v[0], "time": v[1]} for d, v in sorted(c["rst"].items())},
        "first_end": ({"kind": ends[0][1], "from": ends[0][2], "packet": ends[0][0], "time": ends[0][3]}
                      if ends else None),
    }


def h2_message_json(m: dict, locate) -> dict:  # type: ignore[no-untyped-def]
    """One WebSocket message with the packets of its first and last byte."""
    first, last = locate(m["start"]), locate(m["end"] - 1)
    out = {
        "opcode": m["opcode"],
        "frames": m["frames"],
        "compressed": m["compressed"],
        "payload_bytes": len(m["payload"]),
        "digest": hashlib.blake2b(m["payload"], digest_size=16).hexdigest(),
        "preview": preview(m["opcode"], m["payload"]),
        "first_packet": first[0],
        "last_packet": last[0],
        "first_time": first[1],
        "time": last[1],
    }
    if m["opcode"] == "close":
        out["close_code"] = struct.unpack("!H", m["payload"][:2])[0] if len(m["payload"]) >= 2 else None
    return out


def ws_counts(msgs: list[dict]) -> dict[str, int]:
    return {k: sum(1 for m in msgs if m["opcode"] == k) for k in ("text", "binary", "ping", "pong", "close")}


# ---------------------------------------------------------------- client leg (HTTP/1.1)
def h1_leg(pcap: Path, where: str) -> list[dict]:
    """The HTTP/1.1 WebSocket connections of a client.pcap: tshark's HTTP and WebSocket
    dissection (read_capture, crosscheck_tshark) plus the own decoding located in packets."""
    cap = read_capture(pcap)
    tcp = read_tcp(pcap)
    out = []
    for c in cap["connections"]:
        decode_connection(c)
        crosscheck_tshark(where, c)
        t = tcp[c["stream"]]
        check(t["src"] == c["src"] and all(t["bytes"][d] == c["stream_bytes"][d] for d in DIRS),
              f"{where} {c['src']}: the two TCP readings differ")
        req = (c.get("requests") or [None])[0]
        resp = (c.get("responses") or [None])[0]
        heads = {}
        for d, what in (("client_to_server", req), ("server_to_client", resp)):
            data = t["bytes"][d]
            i = data.find(b"\r\n\r\n")
            heads[d] = i + 4 if what is not None and i >= 0 else None
        conn = {
            "src": c["src"], "dst": c["dst"],
            "tcp": tcp_json(t),
            "request": None, "response": None,
        }
        if req:
            num, ts = packet_at(t, "client_to_server", heads["client_to_server"] - 1)
            conn["request"] = {"method": req["method"], "target": req["target"], "version": req["version"],
                               "headers": [list(h) for h in req["headers"]], "packet": num, "time": ts}
        if resp:
            num, ts = packet_at(t, "server_to_client", heads["server_to_client"] - 1)
            conn["response"] = {"status": resp["status"], "reason": resp["phrase"], "version": resp["version"],
                                "headers": [list(h) for h in resp["headers"]], "packet": num, "time": ts}
            body = after_head(t["bytes"]["server_to_client"])
            if resp["status"] != 101:
                conn["response"]["body_bytes"] = len(body or b"")
                conn["response"]["body_preview"] = (body or b"")[:PREVIEW_BYTES].decode("utf-8", "replace")
        own = c.get("own")
        conn["websocket"] = own is not None
        conn["subprotocol"] = header(resp["headers"], "Sec-WebSocket-Protocol") if resp else None
        conn["extensions"] = header(resp["headers"], "Sec-WebSocket-Extensions") if resp else None
        conn["sec_websocket_key"] = header(req["headers"], "Sec-WebSocket-Key") if req else None
        msgs = {}
        for d in DIRS:
            ms = own[d]["messages"] if own else []
            base = heads[d] or 0
            msgs[d] = [h2_message_json(m, lambda off, d=d, base=base, t=t: packet_at(t, d, base + off)) for m in ms]
        conn["messages"] = {d: ws_counts(msgs[d]) for d in DIRS}
        conn["close_codes"] = {d: [m["close_code"] for m in msgs[d] if m["opcode"] == "close"] for d in DIRS}
        conn["message_list"] = msgs
        # internal (not written): the WebSocket bytes after the heads, for the comparison
        conn["_ws_bytes"] = {d: (t["bytes"][d][heads[d]:] if own and heads[d] is not None else None) for d in DIRS}
        out.append(conn)
    return out


# ---------------------------------------------------------------- server leg (HTTP/2)
def h2_frames(data: bytes, preface: bool, where: str) -> list[dict]:
    """RFC 9113 §4.1 frames of one direction (after the connection preface)."""
    pos = 0
    if preface:
        check(data.startswith(H2_PREFACE), f"{where}: no HTTP/2 connection preface")
        pos = len(H2_PREFACE)
    frames = []
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        typ, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        end = pos + 9 + length
        if end > len(data):
            break  # cut by the end of the capture
        payload = data[pos + 9:end]
        f = {"type": typ, "flags": flags, "stream_id": sid, "length": length, "start": pos, "end": end}
        if typ == 0:  # DATA
            skip = 1 if flags & PADDED else 0
            pad = payload[0] if skip else 0
            f["data"] = payload[skip:length - pad]
            f["data_start"] = pos + 9 + skip
        elif typ == 3:  # RST_STREAM
            f["error_code"] = int.from_bytes(payload[:4], "big")
        elif typ == 4:  # SETTINGS
            f["settings"] = [(int.from_bytes(payload[i:i + 2], "big"), int.from_bytes(payload[i + 2:i + 6], "big"))
                             for i in range(0, length - length % 6, 6)]
        elif typ == 7:  # GOAWAY
            f["last_stream_id"] = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            f["error_code"] = int.from_bytes(payload[4:8], "big")
            f["debug"] = payload[8:]
        frames.append(f)
        pos = end
    return frames


def tshark_h2(pcap: Path) -> dict[tuple[int, str], list[dict]]:
    """tshark's HTTP/2 frames per (tcp.stream, source port), in order, with the HPACK-decoded
    header lists, SETTINGS, error codes and DATA payloads."""
    cmd = ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={BACKEND_PORT},http2", "-T", "json",
           "-J", "frame tcp http2", "--no-duplicate-keys", "-Y", "http2"]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout or "[]")
    out: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in rows:
        layers = r["_source"]["layers"]
        num = int(layers["frame"]["frame.number"])
        key = (int(layers["tcp"]["tcp.stream"]), layers["tcp"]["tcp.srcport"])
        for layer in as_list(layers.get("http2")):
            for s in as_list(layer.get("http2.stream")):
                if "http2.type" not in s:
                    if "http2.magic" in s:
                        out[key].append({"magic": True, "packet": num})
                    continue
                f = {"type": int(s["http2.type"]), "flags": int(s["http2.flags"], 16),
                     "stream_id": int(s["http2.streamid"]), "length": int(s["http2.length"]), "packet": num}
                if "http2.header" in s:
                    f["headers"] = [(h["http2.header.name"], h.get("http2.header.value", ""))
                                    for h in as_list(s["http2.header"])]
                if "http2.settings" in s:
                    f["settings"] = [(int(e["http2.settings.id"]),
                                      int(next(v for k, v in e.items() if k != "http2.settings.id")))
                                     for e in as_list(s["http2.settings"])]
                if "http2.rst_stream.error" in s:
                    f["error_code"] = int(s["http2.rst_stream.error"])
                if "http2.goaway.error" in s:
                    f["error_code"] = int(s["http2.goaway.error"])
                    f["last_stream_id"] = int(s["http2.goaway.last_stream_id"])
                if f["type"] == 0:
                    f["data"] = bytes.fromhex(s.get("http2.data.data", "").replace(":", ""))
                out[key].append(f)
    return out


def settings_json(pairs: list[tuple[int, int]]) -> list[dict]:
    return [{"id": i, "name": H2_SETTINGS.get(i, f"0x{i:x}"), "value": v} for i, v in pairs]


def h2_leg(pcap: Path, where: str) -> list[dict]:
    """The HTTP/2 connections of a server.pcap: own framing of the TCP bytes, checked
    against tshark's HTTP/2 dissector frame by frame; headers from tshark (HPACK);
    per stream the WebSocket messages decoded from the DATA payloads."""
    tcp = read_tcp(pcap)
    tsh = tshark_h2(pcap)
    who = {"client_to_server": "client", "server_to_client": "server"}
    out = []
    for sid in sorted(tcp):
        t = tcp[sid]
        w = f"{where} {t['src']}"
        own = {d: h2_frames(t["bytes"][d], d == "client_to_server", w) for d in DIRS}
        port = {"client_to_server": t["src"].rsplit(":", 1)[1], "server_to_client": t["dst"].rsplit(":", 1)[1]}
        theirs = {d: tsh.get((sid, port[d]), []) for d in DIRS}
        magic = [f for f in theirs["client_to_server"] if f.get("magic")]
        check(len(magic) == 1, f"{w}: tshark sees {len(magic)} connection prefaces")
        theirs = {d: [f for f in theirs[d] if not f.get("magic")] for d in DIRS}
        for d in DIRS:
            a = [(f["type"], f["flags"], f["stream_id"], f["length"]) for f in own[d]]
            b = [(f["type"], f["flags"], f["stream_id"], f["length"]) for f in theirs[d]]
            check(a == b, f"{w} {d}: own HTTP/2 frames differ from tshark's")
            for f, g in zip(own[d], theirs[d], strict=True):
                check(f["type"] != 9, f"{w}: CONTINUATION frames are not handled here")
                f["packet"], f["time"] = packet_at(t, d, f["end"] - 1)  # where the frame completes
                check(f["packet"] == g["packet"], f"{w} {d}: frame completes in {f['packet']}, tshark {g['packet']}")
                for k in ("settings", "error_code", "last_stream_id", "data"):
                    # (an empty SETTINGS or DATA: no field in tshark's output)
                    check((f.get(k) or None) == (g.get(k) or None),
                          f"{w} {d}: {H2_TYPES[f['type']]} {k} differs from tshark's")
                if "headers" in g:
                    f["headers"] = g["headers"]
        conn: dict = {"src": t["src"], "dst": t["dst"], "tcp": tcp_json(t),
                      "preface_packet": magic[0]["packet"]}
        conn["frames"] = {d: {n: sum(1 for f in own[d] if f["type"] == k) for k, n in H2_TYPES.items()
                              if any(f["type"] == k for f in own[d])} for d in DIRS}
        conn["settings"] = {who[d]: [{"packet": f["packet"], "time": f["time"], "values": settings_json(f["settings"])}
                                     for f in own[d] if f["type"] == 4 and not f["flags"] & ACK] for d in DIRS}
        conn["settings_acks"] = {who[d]: [f["packet"] for f in own[d] if f["type"] == 4 and f["flags"] & ACK]
                                 for d in DIRS}
        conn["enable_connect_protocol"] = {
            who[d]: next((v for f in own[d] if f["type"] == 4 and not f["flags"] & ACK
                          for i, v in f["settings"] if i == 8), None) for d in DIRS}
        conn["goaway"] = [{"from": who[d], "last_stream_id": f["last_stream_id"], "error_code": f["error_code"],
                           "error": H2_ERRORS.get(f["error_code"], hex(f["error_code"])),
                           "debug": f["debug"].decode("utf-8", "replace"), "packet": f["packet"], "time": f["time"]}
                          for d in DIRS for f in own[d] if f["type"] == 7]
        conn["goaway"].sort(key=lambda g: g["packet"])
        conn["streams"] = h2_streams(t, own, w)
        out.append(conn)
    return out


def h2_streams(t: dict, own: dict[str, list[dict]], where: str) -> list[dict]:
    who = {"client_to_server": "client", "server_to_client": "server"}
    streams: dict[int, dict] = {}
    events = sorted(((f["packet"], f["start"], d, f) for d in DIRS for f in own[d] if f["stream_id"]),
                    key=lambda e: (e[0], e[1]))
    for _, _, d, f in events:
        s = streams.setdefault(f["stream_id"], {
            "stream_id": f["stream_id"], "request": None, "response": None, "informational": [],
            "trailers": [], "rst_stream": [], "end_stream": {d2: None for d2 in DIRS},
            "data_frames": {d2: 0 for d2 in DIRS}, "_data": {d2: [] for d2 in DIRS}})
        at = {"packet": f["packet"], "time": f["time"]}
        if f["type"] == 1:
            hs = f["headers"]
            block = {"pseudo_headers": [list(h) for h in hs if h[0].startswith(":")],
                     "headers": [list(h) for h in hs if not h[0].startswith(":")],
                     "end_stream": bool(f["flags"] & END_STREAM), **at}
            if d == "client_to_server" and s["request"] is None:
                s["request"] = block
            elif d == "server_to_client" and s["response"] is None:
                status = int(dict(hs).get(":status", "0"))
                if 100 <= status < 200:
                    s["informational"].append({"status": status, **block})
                else:
                    s["response"] = {"status": status, **block}
            else:
                s["trailers"].append({"from": who[d], **block})
        elif f["type"] == 0:
            s["data_frames"][d] += 1
            s["_data"][d].append(f)
        elif f["type"] == 3:
            s["rst_stream"].append({"from": who[d], "error_code": f["error_code"],
                                    "error": H2_ERRORS.get(f["error_code"], hex(f["error_code"])), **at})
        if f["type"] in (0, 1) and f["flags"] & END_STREAM and s["end_stream"][d] is None:
            s["end_stream"][d] = {**at, "frame": H2_TYPES[f["type"]], "frame_payload_bytes": f["length"]}
    out = []
    for sid in sorted(streams):
        s = streams[sid]
        req, resp = s["request"], s["response"]
        pseudo = dict(map(tuple, req["pseudo_headers"])) if req else {}
        s["extended_connect"] = pseudo.get(":method") == "CONNECT" and ":protocol" in pseudo
        s["websocket"] = bool(s["extended_connect"] and pseudo.get(":protocol") == "websocket"
                              and resp and 200 <= resp["status"] < 300)
        data = {}
        for d in DIRS:
            pieces, buf = [], bytearray()
            for f in s["_data"][d]:
                pieces.append((len(buf), len(f["data"]), f["data_start"]))
                buf += f["data"]
            data[d] = (bytes(buf), pieces)
        del s["_data"]
        s["data_bytes"] = {d: len(data[d][0]) for d in DIRS}
        msgs: dict[str, list[dict]] = {d: [] for d in DIRS}
        s["_ws_bytes"] = {d: None for d in DIRS}
        if s["websocket"]:
            params = deflate_params(header([tuple(h) for h in resp["headers"]], "Sec-WebSocket-Extensions"))
            for d in DIRS:
                buf, pieces = data[d]

                def locate(off: int, d: str = d, pieces: list = pieces, sid: int = sid) -> tuple[int, str]:
                    for start, n, tcp_off in pieces:
                        if start <= off < start + n:
                            return packet_at(t, d, tcp_off + off - start)
                    raise Failure(f"{where} stream {sid} {d}: no DATA byte {off}")

                def spans(m: dict, pieces: list = pieces) -> int:
                    return sum(1 for start, n, _ in pieces if start < m["end"] and m["start"] < start + n)
                inflater = Inflater(**params[d]) if params else None
                frames = ws_frames(buf)
                check(sum(f["end"] - f["start"] for f in frames) == len(buf),
                      f"{where} stream {sid} {d}: DATA is not a whole number of WebSocket frames")
                msgs[d] = [{**h2_message_json(m, locate), "data_frames": spans(m)}
                           for m in ws_messages(frames, inflater)]
                s["_ws_bytes"][d] = buf
        else:
            s["body_preview"] = {d: data[d][0][:PREVIEW_BYTES].decode("utf-8", "replace") for d in DIRS}
        s["messages"] = {d: ws_counts(msgs[d]) for d in DIRS}
        s["close_codes"] = {d: [m["close_code"] for m in msgs[d] if m["opcode"] == "close"] for d in DIRS}
        s["message_list"] = msgs
        out.append(s)
    return out


# ---------------------------------------------------------------- run.log evidence
def runlog_evidence(run_log: Path) -> dict:
    """From the logs of the run: the backend's request lines (proxy source endpoint and
    sec-websocket-key, both servers log them) and HAProxy's httplog lines (client
    endpoint, status, termination state, request line)."""
    text = run_log.read_text(errors="replace") if run_log.exists() else ""
    keys = {m.group(2): m.group(1) for m in
            re.finditer(r"^\S+ server request (\S+) .*?'sec-websocket-key', '([^']+)'", text, re.M)}
    log = {}
    for m in re.finditer(r'^(\d+\.\d+\.\d+\.\d+:\d+) \[[^\]]+\] (\S+) (\S+) (\S+) (-?\d+) (\d+) \S+ \S+ '
                         r'(\S{4}) \S+ \S+ "([^"]*)"', text, re.M):
        log[m.group(1)] = {"status": int(m.group(5)), "timers": m.group(4), "termination_state": m.group(7),
                           "server": m.group(3), "request": m.group(8)}
    return {"backend_keys": keys, "haproxy_log": log}


# ---------------------------------------------------------------- pairing
def h2_pairs(name: str, spec: dict, cli: list[dict], srv: list[dict], ev: dict) -> list[dict]:
    streams = [(c, s) for c in srv for s in c["streams"]]

    def skey(s: dict) -> str | None:
        return header([tuple(h) for h in s["request"]["headers"]], "sec-websocket-key") if s["request"] else None

    labels: dict[str, str] = {}
    for label, token in spec["clients"].items():
        cm = [c for c in cli if any(m["opcode"] == "text" and m["preview"] == token
                                    for m in c["message_list"]["client_to_server"])]
        sm = [(c, s) for c, s in streams if any(m["opcode"] == "text" and m["preview"] == token
                                                for m in s["message_list"]["client_to_server"])]
        check(len(cm) == 1 and len(sm) == 1, f"{name}: token {token!r} on {len(cm)} client-side "
                                             f"connections / {len(sm)} server-side streams")
        labels[cm[0]["src"]] = label
        cm[0]["_token_stream"] = sm[0]
    pairs = []
    for c in sorted(cli, key=lambda c: c["request"]["packet"] if c["request"] else 1 << 62):
        if c["request"] is None:
            continue
        key = c["sec_websocket_key"]
        m = [(sc, s) for sc, s in streams if key is not None and skey(s) == key]
        matched_by = []
        if m:
            check(len(m) == 1, f"{name}: {len(m)} server-side streams carry Sec-WebSocket-Key {key}")
            matched_by.append("Sec-WebSocket-Key")
        else:
            # no request reached the backend (the proxy refused before HEADERS): only an
            # unambiguous single candidate is accepted
            check(len(cli) == 1 and len(streams) == 1,
                  f"{name}: {c['src']} has no server-side stream with its Sec-WebSocket-Key")
            m = streams
            matched_by.append("only connection on each leg")
        sc, s = m[0]
        if "_token_stream" in c:
            check(c["_token_stream"][1] is s, f"{name}: token and Sec-WebSocket-Key pairings disagree")
            matched_by.insert(0, "unique text token")
        logged = ev["haproxy_log"].get(c["src"])
        check(logged is not None and c["response"] is not None and logged["status"] == c["response"]["status"],
              f"{name}: run.log's HAProxy log line for {c['src']} ({logged}) disagrees with the capture")
        if key is not None and skey(s) == key:
            check(ev["backend_keys"].get(key) == sc["src"],
                  f"{name}: run.log's backend saw key {key} from {ev['backend_keys'].get(key)}, capture {sc['src']}")
            matched_by.append("run.log (backend request log: proxy endpoint + sec-websocket-key)")
        else:
            matched_by.append("run.log (HAProxy log line of the client endpoint)")
            # and timing: the proxy opened the server-side connection between the
            # client's request and its answer (same clock)
            t0, t1 = epoch_ns(c["request"]["time"]), epoch_ns(c["response"]["time"])
            check(t0 <= epoch_ns(sc["tcp"]["first_packet"]["time"]) <= t1,
                  f"{name}: the server-side connection was not opened between request and answer")
            matched_by.append("timing (the server-side connection opens between the client's request "
                              "and the proxy's answer)")
        pairs.append(h2_pair(c, sc, s, labels.get(c["src"]), matched_by, logged))
    return pairs


def h2_pair(c: dict, sc: dict, s: dict, label: str | None, matched_by: list[str], logged: dict) -> dict:
    creq, cresp = c["request"], c["response"]
    sreq, sresp = s["request"], s["response"]
    pseudo = dict(map(tuple, sreq["pseudo_headers"])) if sreq else {}
    lower = [(n.lower(), v) for n, v in creq["headers"]]
    host = header([tuple(h) for h in creq["headers"]], "Host")
    pair: dict = {
        "client": c["src"],
        "server": sc["src"],
        "stream_id": s["stream_id"],
        "label": label,
        "matched_by": matched_by,
        "sec_websocket_key": c["sec_websocket_key"],
        "haproxy_log": logged,
        "request_line": {
            "client": {"method": creq["method"], "target": creq["target"], "version": creq["version"]},
            "server": pseudo or None,
        },
        "host_vs_authority": {"host": host, "authority": pseudo.get(":authority"),
                              "equal": host == pseudo.get(":authority")} if sreq else None,
        # client header names lower-cased vs the server-side regular (non-pseudo) headers
        "request_header_changes": (header_changes(lower, [tuple(h) for h in sreq["headers"]]) if sreq else None),
        "request_header_order": {"client": [n for n, _ in creq["headers"]],
                                 "server": [n for n, _ in sreq["headers"]] if sreq else []},
        "response_status": {"server_sent": sresp["status"] if sresp else None,
                            "client_received": cresp["status"] if cresp else None},
        "response_header_changes": (response_changes([tuple(h) for h in sresp["headers"]],
                                                     [(n.lower(), v) for n, v in cresp["headers"]])
                                    if sresp and cresp else []),
        "response_header_order": {"server": [n for n, _ in sresp["headers"]] if sresp else [],
                                  "client": [n for n, _ in cresp["headers"]] if cresp else []},
        "rst_stream": s["rst_stream"],
        "websocket_bytes_identical": {
            d: (c["_ws_bytes"][d] == s["_ws_bytes"][d]
                if c["_ws_bytes"][d] is not None and s["_ws_bytes"][d] is not None else None) for d in DIRS},
    }
    matched, unmatched, delays = {}, {}, {}
    for d in DIRS:
        cm, sm = c["message_list"][d], s["message_list"][d]
        j, rows = 0, []
        used = set()
        for i, m in enumerate(cm):
            k = next((k for k in range(j, len(sm)) if (sm[k]["opcode"], sm[k]["digest"]) == (m["opcode"], m["digest"])),
                     None)
            if k is None:
                continue
            used.add(k)
            j = k + 1
            t_c, t_s = m["time"], sm[k]["time"]
            rows.append({"opcode": m["opcode"], "payload_bytes": m["payload_bytes"], "client_leg_index": i,
                         "server_leg_index": k, "client_leg_packet": m["last_packet"],
                         "server_leg_packet": sm[k]["last_packet"],
                         "delay_ms": delay_ms(t_s, t_c) if d == "client_to_server" else delay_ms(t_c, t_s)})
        matched[d] = len(rows)
        unmatched[d] = {"client_leg": len(cm) - len(rows), "server_leg": len(sm) - len(used)}
        vals = sorted(r["delay_ms"] for r in rows)
        n = len(vals)
        delays[d] = {"count": n, "min": vals[0] if n else None, "max": vals[-1] if n else None,
                     "median": (round((vals[(n - 1) // 2] + vals[n // 2]) / 2, 4) if n else None),
                     "matches": rows}
    pair["messages_matched"] = matched
    pair["messages_unmatched"] = unmatched
    pair["proxy_delay_ms"] = delays
    return pair



# ---------------------------------------------------------------- checks
def verify_h2(name: str, spec: dict, cli: list[dict], srv: list[dict], pairs: list[dict]) -> None:
    for side, conns in (("client", cli), ("server", srv)):
        check(len(conns) == spec["connections"][side],
              f"{name}/{side}: {len(conns)} TCP connections, expected {spec['connections'][side]}")
        for c in conns:
            check(c["tcp"]["syn_seen"], f"{name}/{side}: {c['src']} has no SYN in the capture")
            check(c["tcp"]["max_segment_payload"] <= MAX_SEGMENT_PAYLOAD,
                  f"{name}/{side}: segment of {c['tcp']['max_segment_payload']} bytes: offloads were not disabled")
            if side == "client":
                check(c["src"].startswith("192.0.2.10:") and c["dst"] == "192.0.2.1:80",
                      f"{name}/client: unexpected endpoints {c['src']} -> {c['dst']}")
            else:
                check(c["src"].startswith("198.51.100.1:") and c["dst"] == f"198.51.100.10:{BACKEND_PORT}",
                      f"{name}/server: unexpected endpoints {c['src']} -> {c['dst']}")
    check([len(c["streams"]) for c in srv] == spec["streams_per_connection"],
          f"{name}/server: streams per connection {[len(c['streams']) for c in srv]}")
    check(len(pairs) == len(cli), f"{name}: {len(pairs)} pairs for {len(cli)} client-side connections")
    check([p["response_status"]["client_received"] for p in pairs] == spec["client_status"],
          f"{name}/client: statuses {[p['response_status']['client_received'] for p in pairs]}")
    check([p["response_status"]["server_sent"] for p in pairs] == spec["server_status"],
          f"{name}/server: statuses {[p['response_status']['server_sent'] for p in pairs]}")
    for c in srv:
        check(c["enable_connect_protocol"]["server"] == spec["backend_enable_connect_protocol"],
              f"{name}/server: backend SETTINGS_ENABLE_CONNECT_PROTOCOL {c['enable_connect_protocol']['server']}")
        for s in c["streams"]:
            if s["request"] is not None:
                check(s["extended_connect"] and dict(map(tuple, s["request"]["pseudo_headers"])).get(":protocol")
                      == "websocket", f"{name}/server: stream {s['stream_id']} is not an extended CONNECT")
    rst = sorted((r["from"], r["error"]) for c in srv for s in c["streams"] for r in s["rst_stream"])
    check(rst == sorted(spec["rst_streams"]), f"{name}/server: RST_STREAM {rst}")
    goaway = [(g["from"], g["error"]) for c in srv for g in c["goaway"]]
    check(goaway == spec.get("goaway", []), f"{name}/server: GOAWAY {goaway}")
    by_src = {c["src"]: c for c in cli}
    streams = {(c["src"], s["stream_id"]): s for c in srv for s in c["streams"]}
    for p in pairs:
        cc, s = by_src[p["client"]], streams[(p["server"], p["stream_id"])]
        check(cc["messages"] == s["messages"], f"{name}: message counts differ between legs of {p['client']}")
        if "messages" in spec:
            got = (cc["messages"]["client_to_server"], cc["messages"]["server_to_client"])
            check(got == spec["messages"][p["label"]], f"{name}: {p['label']} messages {got}")
        for d in DIRS:
            check(p["messages_unmatched"][d] == {"client_leg": 0, "server_leg": 0},
                  f"{name}: unmatched messages {p['messages_unmatched'][d]} ({p['client']} {d})")
            check(all(r["delay_ms"] >= 0 for r in p["proxy_delay_ms"][d]["matches"]),
                  f"{name}: negative proxy delay ({p['client']} {d})")


# ---------------------------------------------------------------- notes and must_find
def ms_between(a: str, b: str) -> str:
    return f"{delay_ms(b, a):.3f} ms"


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def h2_notes(name: str, cli: list[dict], srv: list[dict], pairs: list[dict]) -> list[str]:
    notes: list[str] = []
    by_src = {c["src"]: c for c in cli}
    streams = {(c["src"], s["stream_id"]): s for c in srv for s in c["streams"]}
    reqs = [s["request"] for s in streams.values() if s["request"]]
    if reqs:
        pseudo = dict(map(tuple, reqs[0]["pseudo_headers"]))
        notes.append(f"The extended CONNECT carries `:scheme {pseudo.get(':scheme')}` although the client "
                     "asked for `ws://` and the server connection is cleartext HTTP/2 (h2c with prior "
                     "knowledge, no TLS): RFC 8441 §5 wants `http` for ws-schemed WebSockets."
                     if pseudo.get(":scheme") == "https" else
                     f"The extended CONNECT carries `:scheme {pseudo.get(':scheme')}`.")
        names = [n for n, _ in reqs[0]["headers"]]
        kept = [n for n in ("sec-websocket-key", "sec-websocket-version") if n in names]
        if kept:
            notes.append("HAProxy forwards " + " and ".join(f"`{n}`" for n in kept) + " inside the extended "
                         "CONNECT although RFC 8441 §5 does not use them over HTTP/2 (`:protocol` replaces "
                         "the key/accept exchange).")
        p = next(q for q in pairs if q["request_header_changes"] is not None)
        ch = p["request_header_changes"]
        hva = p["host_vs_authority"]
        notes.append("Request headers (the client's names lower-cased, HTTP/2 names are lower case): "
                     + ", ".join(f"`{h['name']}` {h['change']}" for h in ch)
                     + (f"; the Host value `{hva['host']}` reappears as `:authority`" if hva["equal"] else
                        f"; Host `{hva['host']}` but `:authority` `{hva['authority']}`")
                     + "; the other headers keep their values and order.")
    ws = [p for p in pairs if p["response_status"]["server_sent"] == 200]
    if ws:
        p = ws[0]
        cc, s = by_src[p["client"]], streams[(p["server"], p["stream_id"])]
        acc_s = header([tuple(h) for h in s["response"]["headers"]], "sec-websocket-accept")
        acc_c = header([tuple(h) for h in cc["response"]["headers"]], "sec-websocket-accept")
        want = ws_accept(cc["sec_websocket_key"])
        if acc_s:
            srv_name = header([tuple(h) for h in s["response"]["headers"]], "server")
            notes.append(f"The backend{f' (`server: {srv_name}`)' if srv_name else ''} answers the extended "
                         "CONNECT with `:status 200` **and** a "
                         "`sec-websocket-accept` (not part of RFC 8441)" +
                         ("; the value is the RFC 6455 accept of the client's key, and the client receives "
                          "the same value" if acc_s == want == acc_c else
                          f"; server {acc_s}, client {acc_c}, RFC 6455 accept {want}") + ".")
        added = [h for h in p["response_header_changes"] if h["change"] == "added"]
        others = [h for h in p["response_header_changes"] if h["change"] != "added"]
        order = p["response_header_order"]
        kept = [n for n in order["client"] if n not in {h["name"] for h in added}] == order["server"]
        notes.append(f"HAProxy turns the `:status 200` into `HTTP/1.1 {cc['response']['status']}"
                     + (" ` with an **empty reason phrase** (HTTP/2 has none to relay)"
                        if cc["response"]["reason"] is None else f" {cc['response']['reason']}`")
                     + (" and appends " + " and ".join(f"`{h['name']}: {h['client_value']}`" for h in added)
                        if added else "")
                     + ("; the backend's response headers pass through unchanged and in order" if kept and not others
                        else "; other response header changes: " + ", ".join(f"`{h['name']}` {h['change']}"
                                                                             for h in others)) + ".")
        ident = all(q["websocket_bytes_identical"][d] for q in ws for d in DIRS)
        spans = max((m["data_frames"] for q in ws for d in DIRS
                     for m in streams[(q["server"], q["stream_id"])]["message_list"][d]), default=0)
        if ident:
            notes.append("HAProxy forwards the WebSocket bytes unchanged: the concatenated DATA payload of "
                         "each stream equals the client leg's bytes after the HTTP head, each way (client "
                         "frames keep their masking keys on the HTTP/2 leg); DATA frame boundaries do not "
                         f"follow WebSocket frames (a message spans up to {spans} DATA frames).")
        # the end of a WebSocket: the close handshake, END_STREAM both ways, the client leg's FIN
        ends = []
        for q in ws:
            cc, s = by_src[q["client"]], streams[(q["server"], q["stream_id"])]
            es = s["end_stream"]
            fin = cc["tcp"]["fin"].get("server")
            if es["server_to_client"] and es["client_to_server"] and fin:
                ends.append((delay_ms(es["client_to_server"]["time"], es["server_to_client"]["time"]),
                             delay_ms(fin["time"], es["server_to_client"]["time"])))
        empty = all(streams[(q["server"], q["stream_id"])]["end_stream"][d]["frame_payload_bytes"] == 0
                    for q in ws for d in DIRS if streams[(q["server"], q["stream_id"])]["end_stream"][d])
        if ends:
            notes.append("After the close handshake (relayed frame by frame) the backend ends its half of the "
                         "stream with END_STREAM" + (" (an empty DATA frame)" if empty else "") +
                         "; HAProxy answers with END_STREAM "
                         f"({min(e[0] for e in ends):.3f}-{max(e[0] for e in ends):.3f} ms later) and sends "
                         f"its FIN to the client ({min(e[1] for e in ends):.3f}-{max(e[1] for e in ends):.3f} ms "
                         "after the backend's END_STREAM).")
    if len(srv) == 1 and len(srv[0]["streams"]) > 1:
        c = srv[0]
        ids = [s["stream_id"] for s in c["streams"]]
        pk = sorted({s["request"]["packet"] for s in c["streams"] if s["request"]})
        notes.append(f"All {len(ids)} WebSockets share one server-side TCP connection as streams "
                     f"{', '.join(map(str, ids))} (request HEADERS in packet(s) {', '.join(map(str, pk))}); their "
                     "DATA frames interleave on the connection, so the pairing needs the stream id, not only "
                     "the TCP connection.")
    for c in srv:
        ecp = c["enable_connect_protocol"]
        if not ecp["server"] and c["streams"]:
            s = c["streams"][0]
            st = c["settings"]["server"][0]
            p = next(q for q in pairs if q["server"] == c["src"])
            cc = by_src[p["client"]]
            rst = s["rst_stream"][0] if s["rst_stream"] else None
            ga = c["goaway"][0] if c["goaway"] else None
            names = ", ".join(f"{v['name']}={v['value']}" for v in st["values"])
            notes.append(f"The backend's SETTINGS ({names}) "
                         + ("set ENABLE_CONNECT_PROTOCOL to 0" if ecp["server"] == 0 else "lack ENABLE_CONNECT_PROTOCOL")
                         + f", so HAProxy sends no HEADERS at all: it answers the client `{cc['response']['status']} "
                         f"{cc['response']['reason']}` {ms_between(st['time'], cc['response']['time'])} after "
                         f"that SETTINGS frame (log: termination state "
                         f"`{p['haproxy_log']['termination_state']}`)" +
                         (f", then sends RST_STREAM({rst['error']}) on stream {s['stream_id']}, a stream it "
                          f"never opened, {ms_between(cc['response']['time'], rst['time'])} after the 502"
                          if rst else "") +
                         (f"; the backend (h2) treats that as a connection error: GOAWAY({ga['error']}, last "
                          f"stream {ga['last_stream_id']}) {ms_between(rst['time'], ga['time'])} later"
                          if ga and rst else "") +
                         (f", and HAProxy resets the TCP connection {ms_between(ga['time'], c['tcp']['rst']['client']['time'])} "
                          "after the GOAWAY" if ga and "client" in c["tcp"]["rst"] else "") + ".")
    for c in srv:
        for s in c["streams"]:
            for r in s["rst_stream"]:
                if r["from"] != "server":
                    continue
                p = next(q for q in pairs if q["server"] == c["src"] and q["stream_id"] == s["stream_id"])
                cc = by_src[p["client"]]
                tr = c["tcp"]["rst"].get("client")
                notes.append(f"The backend refuses stream {s['stream_id']} of {c['src']} "
                             f"(`:path {dict(map(tuple, s['request']['pseudo_headers'])).get(':path')}`) with "
                             f"RST_STREAM({r['error']}) "
                             f"{ms_between(s['request']['time'], r['time'])} after its HEADERS; HAProxy answers "
                             f"the client `{cc['response']['status']} {cc['response']['reason']}` "
                             f"{ms_between(r['time'], cc['response']['time'])} after the RST_STREAM (log: "
                             f"termination state `{p['haproxy_log']['termination_state']}`, not a relayed "
                             "status)" +
                             (f" and resets the whole server-side TCP connection "
                              f"{ms_between(r['time'], tr['time'])} after it (TCP RST, no GOAWAY)" if tr and
                              epoch_ns(tr['time']) - epoch_ns(r['time']) < 100_000_000 else "") + ".")
            if s["response"] and s["response"]["status"] >= 300:
                p = next(q for q in pairs if q["server"] == c["src"] and q["stream_id"] == s["stream_id"])
                cc = by_src[p["client"]]
                same = (not p["response_header_changes"]
                        and cc["response"].get("body_bytes") == s["data_bytes"]["server_to_client"]
                        and cc["response"].get("body_preview") == s["body_preview"]["server_to_client"])
                es = s["end_stream"]["client_to_server"]
                notes.append(f"The backend answers stream {s['stream_id']} of {c['src']} "
                             f"(`:path {dict(map(tuple, s['request']['pseudo_headers'])).get(':path')}`) with "
                             f"`:status {s['response']['status']}` "
                             f"and a {s['data_bytes']['server_to_client']}-byte body; HAProxy relays it as "
                             f"`HTTP/1.1 {cc['response']['status']}"
                             + (" ` (empty reason phrase)" if cc["response"]["reason"] is None
                                else f" {cc['response']['reason']}`")
                             + (" with the same headers and body" if same else " (headers or body changed)")
                             + (", and closes its half of the stream with an empty DATA frame (END_STREAM)"
                                if es and es["frame"] == "DATA" and es["frame_payload_bytes"] == 0 else "") + ".")
    # how the server-side TCP connections end
    late = [c for c in srv if c["tcp"]["first_end"] and c["tcp"]["first_end"]["kind"] == "rst"
            and c["tcp"]["first_end"]["from"] == "client" and not c["goaway"]]
    idle = []
    for c in late:
        last = max((epoch_ns(x["time"]) for s in c["streams"] for x in
                    [*(v for v in s["end_stream"].values() if v), *s["rst_stream"]]), default=None)
        if last is not None and epoch_ns(c["tcp"]["first_end"]["time"]) - last > 100_000_000:
            idle.append((c, (epoch_ns(c["tcp"]["first_end"]["time"]) - last) / 1e9))
    if idle:
        notes.append(f"{len(idle)} server-side connection(s) stay open after their last stream ended and are "
                     "reset by HAProxy (TCP RST, no GOAWAY, no FIN) when make_captures.sh soft-stops it, "
                     + (f"{idle[0][1]:.3f}" if len(idle) == 1 else
                        f"{min(x[1] for x in idle):.3f}-{max(x[1] for x in idle):.3f}")
                     + " s later: an idle HTTP/2 "
                     "connection, not a WebSocket failure.")
    return notes


def h2_must_find(name: str, spec: dict, cli: list[dict], srv: list[dict], pairs: list[dict]) -> list[dict]:
    out: list[dict] = []
    by_src = {c["src"]: c for c in cli}
    streams = {(c["src"], s["stream_id"]): s for c in srv for s in c["streams"]}
    tokens = sum(1 for p in pairs if "unique text token" in p["matched_by"])
    out.append({
        "fact": "pairs",
        "pairs": [{"client": p["client"], "server": p["server"], "stream_id": p["stream_id"]} for p in pairs],
        "matched_by_unique_token": tokens,
        "text": f"{len(pairs)} pair(s), each a client-side connection and a (server-side connection, HTTP/2 "
                "stream id)" + (f" ({tokens} ground truth by unique text token, all by Sec-WebSocket-Key)"
                                if tokens else ""),
    })
    out.append({
        "fact": "h2_backend",
        "server_connections": len(srv),
        "streams": {c["src"]: [s["stream_id"] for s in c["streams"]] for c in srv},
        "extended_connect_streams": sum(1 for s in streams.values() if s["extended_connect"]),
        "enable_connect_protocol": {"proxy": sorted({c["enable_connect_protocol"]["client"] for c in srv},
                                                    key=str),
                                    "backend": sorted({c["enable_connect_protocol"]["server"] for c in srv},
                                                      key=str)},
        "text": f"the server leg is HTTP/2 with prior knowledge: {len(srv)} TCP connection(s) with "
                f"{len(streams)} stream(s) ({sum(1 for s in streams.values() if s['extended_connect'])} extended "
                "CONNECT `:protocol websocket`); SETTINGS_ENABLE_CONNECT_PROTOCOL: proxy "
                f"{srv[0]['enable_connect_protocol']['client']}, backend "
                f"{srv[0]['enable_connect_protocol']['server'] if srv[0]['enable_connect_protocol']['server'] is not None else 'not sent'}",
    })
    with_req = [p for p in pairs if p["request_header_changes"] is not None]
    if with_req:
        ch = with_req[0]["request_header_changes"]
        check(all(p["request_header_changes"] == ch for p in with_req), f"{name}: header changes differ between pairs")
        out.append({
            "fact": "request_header_changes",
            "added": [h["name"] for h in ch if h["change"] == "added"],
            "removed": [h["name"] for h in ch if h["change"] == "removed"],
            "modified": [h["name"] for h in ch if h["change"] == "modified"],
            "host_equals_authority": all(p["host_vs_authority"]["equal"] for p in with_req),
            "text": "request headers changed by the proxy (client names lower-cased vs the HTTP/2 regular "
                    "headers): " + ", ".join(f"{h['name']} {h['change']}" for h in ch) +
                    "; Host becomes `:authority` unchanged; `GET <path> HTTP/1.1` becomes `:method CONNECT`, "
                    "`:protocol websocket`, `:path <path>`, `:scheme https`",
        })
    statuses = [(p["response_status"]["server_sent"], p["response_status"]["client_received"]) for p in pairs]
    out.append({
        "fact": "response_status",
        "server_sent_client_received": [list(x) for x in statuses],
        "text": "status per pair (server sent -> client received): " + ", ".join(
            f"{a if a is not None else 'none'} -> {b}" for a, b in statuses),
    })
    ws = [p for p in pairs if p["response_status"]["server_sent"] == 200]
    if ws:
        counts = {p["client"]: by_src[p["client"]]["messages"] for p in ws}
        out.append({
            "fact": "websocket_messages",
            "messages": counts,
            "all_matched": all(p["messages_unmatched"][d] == {"client_leg": 0, "server_leg": 0} for p in ws for d in DIRS),
            "bytes_identical": all(p["websocket_bytes_identical"][d] for p in ws for d in DIRS),
            "text": "WebSocket messages decoded from the DATA frames of each stream, the same on both legs "
                    "(every message matched by opcode and payload digest); "
                    + "; ".join(f"{p['label'] or p['client']}: {sum(counts[p['client']]['client_to_server'].values())} "
                                f"client->server, {sum(counts[p['client']]['server_to_client'].values())} "
                                "server->client" for p in ws),
        })
        rng = {}
        for d in DIRS:
            vals = [r["delay_ms"] for p in ws for r in p["proxy_delay_ms"][d]["matches"]]
            rng[d] = {"count": len(vals), "min": min(vals), "max": max(vals)}
        out.append({
            "fact": "proxy_delay",
            "proxy_delay_ms": rng,
            "text": "proxy delay per matched message (last byte on the outgoing leg minus last byte on the "
                    "incoming leg, one clock): client->server "
                    f"{rng['client_to_server']['min']:.3f}-{rng['client_to_server']['max']:.3f} ms, server->client "
                    f"{rng['server_to_client']['min']:.3f}-{rng['server_to_client']['max']:.3f} ms",
        })
        p0 = ws[0]
        cc = by_src[p0["client"]]
        first = min(((m["time"], d) for d in DIRS for m in cc["message_list"][d] if m["opcode"] == "close"),
                    key=lambda x: epoch_ns(x[0]), default=None)
        if first:
            out.append({
                "fact": "close_handshake",
                "first_close_from": "client" if first[1] == "client_to_server" else "server",
                "codes": {d: cc["close_codes"][d] for d in DIRS},
                "end_stream_both_ways": all(all(streams[(p["server"], p["stream_id"])]["end_stream"][d]
                                                for d in DIRS) for p in ws),
                "client_leg_first_fin_from": cc["tcp"]["first_end"]["from"] if cc["tcp"]["first_end"] else None,
                "text": f"clean close: the {'client' if first[1] == 'client_to_server' else 'server'} sends close "
                        f"{cc['close_codes'][first[1]][0]}, the other side echoes it (inside DATA on the server "
                        "leg); then END_STREAM both ways on the stream and a FIN from the proxy on the client leg",
            })
    refused = [p for p in pairs if p["response_status"]["client_received"] != 101]
    if refused:
        out.append({
            "fact": "handshake_refused",
            "refusals": [{"client": p["client"], "status": p["response_status"]["client_received"],
                          "server_sent": p["response_status"]["server_sent"],
                          "rst_stream": [{"from": r["from"], "error": r["error"]} for r in p["rst_stream"]],
                          "haproxy_termination_state": p["haproxy_log"]["termination_state"]} for p in refused],
            "text": "; ".join(
                (f"{p['client']}: the backend refused the extended CONNECT with {p['response_status']['server_sent']}, "
                 f"relayed as {p['response_status']['client_received']}" if p["response_status"]["server_sent"] else
                 f"{p['client']}: no response on the server leg ("
                 + (", ".join(f"RST_STREAM {r['error']} from the {'backend' if r['from'] == 'server' else 'proxy'}"
                              for r in p["rst_stream"]) or "no stream") +
                 f"), HAProxy answers {p['response_status']['client_received']} itself")
                for p in refused),
        })
    if any(not c["enable_connect_protocol"]["server"] for c in srv):
        out.append({
            "fact": "no_extended_connect_support",
            "backend_enable_connect_protocol": [c["enable_connect_protocol"]["server"] for c in srv],
            "request_headers_sent": any(s["request"] for s in streams.values()),
            "goaway": [{"from": g["from"], "error": g["error"]} for c in srv for g in c["goaway"]],
            "text": "the backend does not allow extended CONNECT (its SETTINGS carry "
                    "SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) = 0): HAProxy sends no request on the server leg "
                    "and answers the client 502 itself",
        })
    return out


# ---------------------------------------------------------------- derive
def strip_internal(o):  # type: ignore[no-untyped-def]
    if isinstance(o, dict):
        return {k: strip_internal(v) for k, v in o.items() if not k.startswith("_")}
    if isinstance(o, list):
        return [strip_internal(v) for v in o]
    return o


def derive_h2(root: Path) -> dict:
    expected: dict = {"generated_by": "captures/derive_expected.py", "software": {}, "scenarios": {}}
    if not (root / H2_SUBDIR).is_dir():
        return expected
    for name, spec in H2_SCENARIOS.items():
        d = root / H2_SUBDIR / name
        if not (d / "client.pcap").exists() or not (d / "server.pcap").exists():
            print(f"derive_expected: {H2_SUBDIR}/{name}: no captures, skipped", file=sys.stderr)
            continue
        for k, v in read_versions(d / "run.log").items():
            expected["software"].setdefault(k, v)
        cli = h1_leg(d / "client.pcap", f"{name}/client")
        srv = h2_leg(d / "server.pcap", f"{name}/server")
        pairs = h2_pairs(name, spec, cli, srv, runlog_evidence(d / "run.log"))
        verify_h2(name, spec, cli, srv, pairs)
        packets = {side: len(tshark_json(d / f"{side}.pcap", ["frame.number"])) for side in ("client", "server")}
        with_req = [p for p in pairs if p["request_header_changes"] is not None]
        expected["scenarios"][name] = strip_internal({
            "title": spec["title"],
            "proxy": "haproxy",
            "backend_protocol": "HTTP/2 cleartext with prior knowledge (HAProxy `server ... proto h2`), RFC 8441",
            "captures": {
                side: {
                    "file": f"{H2_SUBDIR}/{name}/{side}.pcap",
                    "bytes": (d / f"{side}.pcap").stat().st_size,
                    "packets": packets[side],
                    "max_segment_payload": max((c["tcp"]["max_segment_payload"] for c in conns), default=0),
                    "connections": conns,
                }
                for side, conns in (("client", cli), ("server", srv))
            },
            "pairs": pairs,
            "request_header_changes": with_req[0]["request_header_changes"] if with_req else None,
            "notes": h2_notes(name, cli, srv, pairs),
            "must_find": h2_must_find(name, spec, cli, srv, pairs),
        })
    return expected


# ---------------------------------------------------------------- manifest
PROSE_H2 = {
    "haproxy-h2": """\
The three concurrent clients of `haproxy-ok` (alpha, bravo, charlie; same messages, same
ground truth `i-am-<name>`) speak HTTP/1.1 WebSocket to HAProxy 2.6, whose server line has
`proto h2`: the backend (`captures/h2_ws_server.py`, Hypercorn with RFC 8441 support) is
reached over **cleartext HTTP/2 with prior knowledge** (the connection preface, no Upgrade,
no TLS). Each WebSocket handshake becomes an **RFC 8441 extended CONNECT** on an HTTP/2
stream (`:method CONNECT`, `:protocol websocket`, `:path /ws`), answered `:status 200`, and
the WebSocket frames travel inside DATA frames of that stream; HAProxy answers the client
`101`. With the default `http-reuse safe` each client session gets a server connection of
its own: three TCP connections, one stream (id 1) each. The server leg cannot be read as
HTTP/1.1: an analysis must decode HTTP/2 framing and HPACK to see the handshake and the
DATA frames to see the messages.
""",
    "haproxy-h2-multiplex": """\
The `haproxy-h2` setup with `http-reuse always` in the backend: the three WebSockets are
**multiplexed** as streams 1, 3 and 5 of a **single** server-side TCP connection (the three
HEADERS frames even share one TCP segment), their DATA frames interleaved. Pairing by TCP
connection alone is impossible on the server leg: the pairs are (client connection) <->
(server connection, stream id).
""",
    "haproxy-h2-no-connect-protocol": """\
One client through the `haproxy-h2` configuration to a backend (`captures/h2_plain_server.py
--mode no-connect-protocol`, the `h2` library) whose SETTINGS do not allow extended CONNECT
(`SETTINGS_ENABLE_CONNECT_PROTOCOL` = 0). HAProxy opens the server connection and exchanges
SETTINGS, but never sends the request: it answers the client **502 Bad Gateway** itself (log:
termination state `SH--`). It then sends RST_STREAM on stream 1, which it never opened; the
backend treats that as a connection error (GOAWAY PROTOCOL_ERROR) and HAProxy resets the TCP
connection. The backend's log shows the protocol error; the client sees only the 502.
""",
    "haproxy-h2-rst": """\
Two attempts, one after the other, through the `haproxy-h2` configuration to a backend
(`captures/h2_plain_server.py --mode refuse`) that allows extended CONNECT but refuses both:
`ws://192.0.2.1/ws/forbidden` is answered **`:status 403`** with a text body, which HAProxy
relays as `HTTP/1.1 403`; `ws://192.0.2.1/ws/reset` is answered with **RST_STREAM
(REFUSED_STREAM)**, for which HAProxy answers the client **502 Bad Gateway** itself (log:
`SH--`) and resets that server connection. Each attempt has a server connection of its own.
""",
}


ROLE_H2 = {"client": "the proxy", "server": "the backend"}  # "client"/"server" on the HTTP/2 leg


def manifest_h2(expected: dict, root: Path) -> str:
    out = ["## HTTP/2 backend scenarios (`h2/`, `expected_h2.json`)", ""]
    out.append("The `haproxy-h2*` scenarios live in `captures/h2/<scenario>/` and are described by "
               "`captures/expected_h2.json` (not `expected.json`: the server leg is HTTP/2, which the "
               "end-to-end tests of `expected.json` do not read). Same topology, same clock, same client "
               "(`captures/ws_client.py`); HAProxy 2.6 reaches the backend over **cleartext HTTP/2 with prior "
               "knowledge** (`server ... proto h2`), so the server leg starts with the HTTP/2 connection "
               "preface and each WebSocket is an RFC 8441 extended CONNECT stream. derive_expected.py "
               "reads the HTTP/2 frames with tshark (`-d tcp.port==8080,http2`: frames, SETTINGS, HPACK "
               "header lists, RST_STREAM, GOAWAY, DATA) and also parses the framing itself from the TCP bytes "
               "(both must agree frame by frame); tshark 4.0 does not dissect WebSocket inside HTTP/2 DATA, "
               "so the WebSocket messages of a stream are decoded by derive_expected.py's own RFC 6455 parser "
               "from the stream's DATA payloads, in order.")
    out.append("")
    if expected["software"]:
        out.append("Software of these runs:")
        out.append("")
        for k, v in expected["software"].items():
            out.append(f"- {k}: `{v}`")
        out.append("")
    for name, sc in expected["scenarios"].items():
        out.append(f"## `h2/{name}`: {sc['title']}")
        out.append("")
        out.append(PROSE_H2.get(name, "").rstrip())
        out.append("")
        out.append(f"HAProxy configuration (without the `global` section; full file in `h2/{name}/haproxy.cfg`):")
        out.append("")
        out.append("```haproxy")
        out.append(server_block(root / H2_SUBDIR / name / "haproxy.cfg"))
        out.append("```")
        out.append("")
        cap = sc["captures"]["client"]
        out.append(f"**{cap['file']}** ({cap['bytes']} bytes, {cap['packets']} packets, largest TCP payload "
                   f"{cap['max_segment_payload']} bytes; HTTP/1.1):")
        out.append("")
        out.append("| connection | HTTP | status | WebSocket | client -> server | server -> client | close codes c->s / s->c | first FIN / RST |")
        out.append("|---|---|---|---|---|---|---|---|")
        for c in cap["connections"]:
            req, resp, end = c["request"], c["response"], c["tcp"]["first_end"]
            out.append(
                f"| {c['src']} -> {c['dst']} | {req['method']} {req['target']} {req['version']} | "
                f"{resp['status']} {resp['reason'] or '(empty reason)'} | "
                f"{'yes' if c['websocket'] else 'no'}{' (' + c['subprotocol'] + ')' if c['subprotocol'] else ''} | "
                f"{fmt_counts(c['messages']['client_to_server'])} | {fmt_counts(c['messages']['server_to_client'])} | "
                f"{c['close_codes']['client_to_server'] or '-'} / {c['close_codes']['server_to_client'] or '-'} | "
                f"{(end['kind'].upper() + ' from ' + end['from']) if end else '-'} |")
        out.append("")
        cap = sc["captures"]["server"]
        out.append(f"**{cap['file']}** ({cap['bytes']} bytes, {cap['packets']} packets, largest TCP payload "
                   f"{cap['max_segment_payload']} bytes; HTTP/2 with prior knowledge; per stream):")
        out.append("")
        out.append("| connection | stream | request | status | WebSocket | client -> server | server -> client | close codes c->s / s->c | END_STREAM c->s / s->c | RST_STREAM |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for c in cap["connections"]:
            for s in c["streams"]:
                ps = dict(map(tuple, s["request"]["pseudo_headers"])) if s["request"] else {}
                reqtxt = (f"{ps.get(':method')} {ps.get(':path')} (:protocol {ps.get(':protocol')}, "
                          f":scheme {ps.get(':scheme')})" if s["request"] else "none")
                es = s["end_stream"]
                out.append(
                    f"| {c['src']} -> {c['dst']} | {s['stream_id']} | {reqtxt} | "
                    f"{s['response']['status'] if s['response'] else '-'} | {'yes' if s['websocket'] else 'no'} | "
                    f"{fmt_counts(s['messages']['client_to_server'])} | {fmt_counts(s['messages']['server_to_client'])} | "
                    f"{s['close_codes']['client_to_server'] or '-'} / {s['close_codes']['server_to_client'] or '-'} | "
                    f"{'packet ' + str(es['client_to_server']['packet']) if es['client_to_server'] else '-'} / "
                    f"{'packet ' + str(es['server_to_client']['packet']) if es['server_to_client'] else '-'} | "
                    + (", ".join(f"{r['error']} from {ROLE_H2[r['from']]} (packet {r['packet']})"
                                 for r in s["rst_stream"]) or "-")
                    + " |")
        out.append("")
        for c in cap["connections"]:
            st = c["settings"]
            fmt = {who: "; ".join(", ".join(f"{v['name']}={v['value']}" for v in x["values"]) for x in st[who]) or "none"
                   for who in ("client", "server")}
            end = c["tcp"]["first_end"]
            ga = "; ".join(f"GOAWAY {g['error']} (last stream {g['last_stream_id']}) from {ROLE_H2[g['from']]} "
                           f"(packet {g['packet']})" for g in c["goaway"]) or "no GOAWAY"
            frames = {d: ", ".join(f"{k} {v}" for k, v in c["frames"][d].items()) for d in DIRS}
            out.append(f"- `{c['src']}`: SETTINGS from the proxy `{fmt['client']}`, from the backend "
                       f"`{fmt['server']}`; {ga}; TCP ends with a "
                       f"{(end['kind'].upper() + ' from ' + ROLE_H2[end['from']]) if end else '-'} (packet "
                       f"{end['packet'] if end else '-'}). Frames client -> server: {frames['client_to_server']}; "
                       f"server -> client: {frames['server_to_client']}.")
        out.append("")
        out.append("**What the analysis must find**")
        out.append("")
        out.append("Pairs (client-side client endpoint -> server-side proxy endpoint, HTTP/2 stream):")
        out.append("")
        for p in sc["pairs"]:
            label = f" ({p['label']})" if p["label"] else ""
            out.append(f"- `{p['client']}` -> `{p['server']}` stream {p['stream_id']}{label}, matched by "
                       f"{' + '.join(p['matched_by'])}; status server sent "
                       f"{p['response_status']['server_sent'] if p['response_status']['server_sent'] is not None else 'none'}, "
                       f"client received {p['response_status']['client_received']}")
        out.append("")
        withreq = [p for p in sc["pairs"] if p["request_line"]["server"]]
        if withreq:
            p0 = withreq[0]
            rl = p0["request_line"]
            out.append(f"Request line: client `{rl['client']['method']} {rl['client']['target']} "
                       f"{rl['client']['version']}` -> server " +
                       ", ".join(f"`{k} {v}`" for k, v in rl["server"].items()) + ".")
            out.append("")
            out.append("Request header changes made by the proxy (the same for every pair; client names "
                       "lower-cased -> HTTP/2 regular headers):")
            out.append("")
            out.append("| header | change | client side | server side |")
            out.append("|---|---|---|---|")
            for h in p0["request_header_changes"]:
                out.append(f"| {h['name']} | {h['change']} | {h['client_value'] if h['client_value'] is not None else '-'} | "
                           f"{h['server_value'] if h['server_value'] is not None else '-'} |")
            out.append("")
            hva = p0["host_vs_authority"]
            out.append(f"Host vs `:authority`: `{hva['host']}` / `{hva['authority']}` "
                       f"({'equal' if hva['equal'] else 'different'}). Header order: client sent `"
                       + ", ".join(p0["request_header_order"]["client"]) + "`; server received `"
                       + ", ".join(p0["request_header_order"]["server"]) + "`.")
            out.append("")
        for p in sc["pairs"]:
            if p["response_header_changes"]:
                out.append(f"Response header changes for `{p['client']}` (server sent -> client received; the same "
                           "for every WebSocket pair):")
                out.append("")
                out.append("| header | change | server sent | client received |")
                out.append("|---|---|---|---|")
                for h in p["response_header_changes"]:
                    out.append(f"| {h['name']} | {h['change']} | {h['server_value'] if h['server_value'] is not None else '-'} | "
                               f"{h['client_value'] if h['client_value'] is not None else '-'} |")
                out.append("")
                break
        ws = [p for p in sc["pairs"] if p["messages_matched"]["client_to_server"] or p["messages_matched"]["server_to_client"]]
        if ws:
            out.append("Proxy delay per message (ms; messages matched in order by opcode and payload digest; "
                       "last byte out minus last byte in, one clock):")
            out.append("")
            out.append("| pair | client -> server: n, min / median / max | server -> client: n, min / median / max |")
            out.append("|---|---|---|")
            for p in ws:
                cells = []
                for d in DIRS:
                    x = p["proxy_delay_ms"][d]
                    cells.append(f"{x['count']}, {x['min']:.3f} / {x['median']:.3f} / {x['max']:.3f}" if x["count"] else "-")
                out.append(f"| `{p['client']}` -> stream {p['stream_id']}{' (' + p['label'] + ')' if p['label'] else ''} | "
                           f"{cells[0]} | {cells[1]} |")
            out.append("")
        for note in sc["notes"]:
            out.append(f"- {note}")
        if sc["notes"]:
            out.append("")
        out.append("**Must find** (`must_find` in expected_h2.json):")
        out.append("")
        for f in sc["must_find"]:
            values = {k: v for k, v in f.items() if k not in ("fact", "text")}
            out.append(f"- `{f['fact']}`: {f['text']}.  ")
            out.append(f"  `{json.dumps(values, separators=(', ', ': '))}`")
        out.append("")
    out.append("## expected_h2.json")
    out.append("")
    out.append("Per scenario: `captures.client.connections[]` (HTTP/1.1) with `src`, `dst`, `tcp` (`syn_seen`, "
               "`first_packet`, `packets`, `payload_bytes`, `max_segment_payload`, `fin` / `rst` by sender "
               "client|server with `packet` and `time`, `first_end`), `request` (`method`, `target`, `version`, "
               "`headers` as [name, value] exactly as sent, in order; `packet`/`time` of the head's last byte), "
               "`response` (`status`, `reason` (null: empty), `version`, `headers`, `packet`, `time`; "
               "`body_bytes`, `body_preview` when not 101), `websocket`, `subprotocol`, `extensions`, "
               "`sec_websocket_key`, `messages` (by opcode), `close_codes`, and `message_list.{direction}[]`.")
    out.append("")
    out.append("`captures.server.connections[]` (HTTP/2) with `src`, `dst`, `tcp`, `preface_packet`, `frames` "
               "(HTTP/2 frames by type per direction), `settings.{client,server}[]` (each non-ACK SETTINGS "
               "frame: `packet`, `time`, `values[]` of `id`, `name`, `value`; `client` = HAProxy, `server` = "
               "the backend, as everywhere on this leg), `settings_acks`, `enable_connect_protocol` "
               "(SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) each side sent, null if absent), `goaway[]` (`from`, "
               "`last_stream_id`, `error_code`, `error`, `debug`, `packet`, `time`) and `streams[]`: "
               "`stream_id`, `request` (`pseudo_headers` and `headers` as [name, value] in order, tshark's HPACK "
               "decoding; `end_stream`, `packet`, `time`), `response` (`status`, likewise), `informational`, "
               "`trailers`, `rst_stream[]` (`from`, `error_code`, `error`, `packet`, `time`), `end_stream` per "
               "direction (`packet`, `time`, `frame`, `frame_payload_bytes`; null if none), `data_frames`, "
               "`data_bytes`, `extended_connect`, `websocket` (extended CONNECT with `:protocol websocket` "
               "answered 2xx), `messages`, `close_codes`, `message_list`, and `body_preview` for non-WebSocket "
               "streams.")
    out.append("")
    out.append("`message_list.{direction}[]` (both legs, in stream order): `opcode`, `frames`, `compressed`, "
               "`payload_bytes`, `digest` (BLAKE2b-128 of the payload, as wsanalyze's digest), `preview`, "
               "`first_packet` / `first_time` (packet of the message's first byte), `last_packet` / `time` "
               "(packet of its last byte: the message time), `close_code` for close frames and, on the "
               "HTTP/2 leg, `data_frames` (DATA frames carrying the message). Times are tshark's "
               "`frame.time_epoch` strings.")
    out.append("")
    out.append("`pairs[]`: `client`, `server` (proxy endpoint on the server leg), `stream_id`, `label`, "
               "`matched_by` (ground truth: unique text token, Sec-WebSocket-Key = the forwarded "
               "`sec-websocket-key`, run.log's backend request log and HAProxy log line, or for the refused "
               "handshake without any request on the server leg the only candidate plus timing), "
               "`sec_websocket_key`, `haproxy_log` (HAProxy's log line of the client endpoint: `status`, "
               "`timers`, `termination_state`, `server`, `request`), `request_line` (client request line; "
               "server pseudo-headers), `host_vs_authority`, `request_header_changes[]` (client names "
               "lower-cased vs the server's regular headers: `name`, `change` added|removed|modified, "
               "`client_value`, `server_value`), `request_header_order`, `response_status` (`server_sent`, "
               "`client_received`), `response_header_changes[]`, `response_header_order`, `rst_stream`, "
               "`websocket_bytes_identical` (client leg bytes after the head == the stream's DATA payload, per "
               "direction), `messages_matched`, `messages_unmatched`, and `proxy_delay_ms.{direction}` "
               "(`count`, `min`, `median`, `max`, `matches[]`: `opcode`, `payload_bytes`, `client_leg_index`, "
               "`server_leg_index`, `client_leg_packet`, `server_leg_packet`, `delay_ms` = server-leg time "
               "minus client-leg time client->server, client-leg minus server-leg server->client). Also "
               "`notes` and `must_find[]` as in expected.json (facts: pairs, h2_backend, "
               "request_header_changes, response_status, websocket_messages, proxy_delay, close_handshake, "
               "handshake_refused, no_extended_connect_support).")
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def derive(root: Path) -> dict:
    expected: dict = {"generated_by": "captures/derive_expected.py", "software": {}, "scenarios": {}}
    for name, spec in SCENARIOS.items():
        d = root / name
        if not (d / "client.pcap").exists() or not (d / "server.pcap").exists():
            print(f"derive_expected: {name}: no captures, skipped", file=sys.stderr)
            continue
        for k, v in read_versions(d / "run.log").items():
            expected["software"].setdefault(k, v)  # the proxies of every scenario present
        cap = {side: read_capture(d / f"{side}.pcap") for side in ("client", "server")}
        for side in cap:
            for c in cap[side]["connections"]:
                decode_connection(c)
                crosscheck_tshark(f"{name}/{side}", c)
        conns = {side: [connection_json(c, spec) for c in cap[side]["connections"]] for side in cap}
        pairs = find_pairs(name, spec, cap["client"], cap["server"])
        verify(name, spec, cap, conns, pairs)
        check(all(p["request_header_changes"] == pairs[0]["request_header_changes"] for p in pairs),
              f"{name}: request header changes differ between pairs")
        notes: list[str] = []
        generic: list[str] = []  # computed for every scenario, listed after the specific notes
        p0 = pairs[0]
        for what, order, a, b in (
            ("request", p0["request_header_order"], "client", "server"),
            ("response", p0["response_header_order"], "server", "client"),
        ):
            before = {n.lower(): n for n in order[a]}
            recased = [f"`{before[n.lower()]}` -> `{n}`" for n in order[b]
                       if n.lower() in before and before[n.lower()] != n]
            if recased:
                generic.append(f"The proxy changes the case of {what} header names (same values, so no "
                             f"change in the table above): " + ", ".join(recased) + ".")
            elif ([n for n in order[a] if n.lower() in {x.lower() for x in order[b]}] !=
                  [n for n in order[b] if n.lower() in {x.lower() for x in order[a]}]):
                generic.append(f"The proxy reorders the {what} headers (see the header order above).")
        if all(all(v for v in p["websocket_bytes_identical"].values()) for p in pairs) and spec["status"] == 101:
            generic.append(f"{PROXY_NAMES[spec['proxy']]} forwards the WebSocket frames byte for byte: frame "
                         "boundaries, masking keys and payloads are identical on both legs; only TCP "
                         "segmentation and timing differ.")
        if spec.get("server_reset"):
            cc, sc_ = cap["client"]["connections"][0], cap["server"]["connections"][0]
            rst = sc_["rst"].get("server_to_client")
            end = {**{("FIN", k): t for k, t in cc["fin"].items()}, **{("RST", k): t for k, t in cc["rst"].items()}}
            if rst is not None and end:
                (kind, direction), t = min(end.items(), key=lambda kv: kv[1])
                who = "the proxy" if direction == "server_to_client" else "the client"
                notes.append(f"The backend's RST on the server leg is followed {1e3 * (t - rst):.3f} ms later by "
                             f"a {kind} from {who} on the client leg (same clock); no WebSocket close frame on "
                             "either leg, no RST on the client leg." if not cc["rst"] else
                             f"The backend's RST on the server leg is followed {1e3 * (t - rst):.3f} ms later by "
                             f"a {kind} from {who} on the client leg (same clock).")
        if "idle_timeout_s" in spec:
            cc, sc_ = cap["client"]["connections"][0], cap["server"]["connections"][0]
            pname = PROXY_NAMES[spec["proxy"]]
            cfin = cc["fin"].get("server_to_client")
            sfin, srst = sc_["fin"].get("client_to_server"), sc_["rst"].get("client_to_server")
            if cfin is not None and sfin is not None:
                notes.append(f"{pname} sent its FIN to the client {(cfin - sfin) * 1e3:+.3f} ms after its FIN to "
                             "the server (same clock: both captures are taken in the proxy namespace).")
            elif cfin is not None and srst is not None:
                notes.append(f"{pname} ended the server leg with a RST (no FIN) {(srst - cfin) * 1e3:+.3f} ms "
                             "after its FIN to the client (same clock: both captures are taken in the "
                             "proxy namespace).")
        if spec.get("clients") is MULTI_CLIENTS:
            notes.insert(0, "All three clients send the identical first message `hello` at the same moment; "
                            "the pairing is only decidable by the unique `i-am-<name>` message, the "
                            "Sec-WebSocket-Key, the ping payload `ping-<name>` or timing.")
        if name == "nginx-many-clients":
            notes.insert(0, "All twelve clients send the identical messages `hello`, `same-for-all` and "
                            "the same binary message at nearly the same moments; the pairing is only "
                            "decidable by the unique `i-am-client-NN` message, the Sec-WebSocket-Key "
                            "or timing.")
        notes += generic
        expected["scenarios"][name] = {
            "title": spec["title"],
            "proxy": spec["proxy"],
            "captures": {
                side: {
                    "file": f"{name}/{side}.pcap",
                    "bytes": (d / f"{side}.pcap").stat().st_size,
                    "packets": cap[side]["packets"],
                    "max_segment_payload": max((c["tcp"]["max_segment_payload"] for c in conns[side]), default=0),
                    "connections": conns[side],
                }
                for side in ("client", "server")
            },
            "pairs": pairs,
            # the proxy treats every connection of a scenario alike: the changes of one pair
            "request_header_changes": pairs[0]["request_header_changes"],
            "notes": notes,
            "must_find": must_find(name, spec, cap, conns, pairs),
        }
    return expected


# ----------------------------------------------------------------------------- must_find
def must_find(name: str, spec: dict, cap: dict, conns: dict[str, list[dict]], pairs: list[dict]) -> list[dict]:
    """What the analysis must find, one dict per fact: "fact" (a stable name), "text"
    (in words, for MANIFEST.md) and machine-checkable values. Everything is read from
    the captures (conns, pairs) except the scenario's intent (spec)."""
    out: list[dict] = []
    pname = PROXY_NAMES[spec["proxy"]]
    by_src = {side: {c["src"]: c for c in conns[side]} for side in ("client", "server")}
    legs = [(by_src["client"][p["client"]], by_src["server"][p["server"]]) for p in pairs]
    tokens = sum(1 for p in pairs if "unique text token" in p["matched_by"])
    out.append({
        "fact": "pairs",
        "pairs": len(pairs),
        "matched_by_unique_token": tokens,
        "text": f"{len(pairs)} pair(s): every client-side connection paired with its server-side twin"
                + (f" ({tokens} ground truth by unique text token, all by Sec-WebSocket-Key)" if tokens
                   else " (ground truth by Sec-WebSocket-Key)"),
    })
    ch = pairs[0]["request_header_changes"]
    out.append({
        "fact": "request_header_changes",
        "added": [h["name"] for h in ch if h["change"] == "added"],
        "removed": [h["name"] for h in ch if h["change"] == "removed"],
        "modified": [h["name"] for h in ch if h["change"] == "modified"],
        "text": "request headers changed by the proxy: " + (", ".join(
            f"{h['name']} {h['change']}" for h in ch) or "none"),
    })
    if spec["status"] != 101:
        removed = [h["name"] for h in ch if h["change"] == "removed"]
        out.append({
            "fact": "handshake_refused",
            "status": spec["status"],
            "upgrade_header_dropped": any(n.lower() == "upgrade" for n in removed),
            "http10_to_backend": spec.get("server_request_version") == "HTTP/1.0",
            "text": f"the backend refused the handshake ({spec['status']}) because the proxy dropped "
                    "the Upgrade header" + (" and spoke HTTP/1.0" if spec.get("server_request_version") == "HTTP/1.0" else ""),
        })
        return out
    if "idle_timeout_s" in spec:
        cc, sc = legs[0]
        cend, send = cc["tcp"]["first_end"], sc["tcp"]["first_end"]
        ccl, scl = cap["client"]["connections"][0], cap["server"]["connections"][0]
        t_c = ccl["fin"].get("server_to_client") or ccl["rst"].get("server_to_client")
        t_s = scl["fin"].get("client_to_server") or scl["rst"].get("client_to_server")
        out.append({
            "fact": "idle_timeout",
            "idle_timeout_s": spec["idle_timeout_s"],
            "closed_by": "proxy",
            "client_leg_end": cend["kind"],
            "server_leg_end": send["kind"],
            "idle_before_end_s": {"client_leg": cc["tcp"]["idle_before_end_s"],
                                  "server_leg": sc["tcp"]["idle_before_end_s"]},
            "close_frames": 0,
            "first_leg_closed": "server" if t_s < t_c else "client",
            "gap_ms": round(abs(t_c - t_s) * 1e3, 3),
            "text": f"proxy idle timeout of ~{spec['idle_timeout_s']:.0f} s on both legs: {pname} ends the "
                    f"client leg with a {cend['kind'].upper()} and the server leg with a "
                    f"{send['kind'].upper()} after {cc['tcp']['idle_before_end_s']:.3f} s / "
                    f"{sc['tcp']['idle_before_end_s']:.3f} s of silence, no close frame on either leg "
                    "(both endpoints see 1006)",
        })
    if spec.get("server_reset"):
        out.append({
            "fact": "backend_reset",
            "server_leg_end": "rst", "rst_from": "server", "client_leg_end": "fin", "close_frames": 0,
            "text": f"the backend reset the server leg (RST, no close frame); {pname} relayed it as a FIN "
                    "on the client leg",
        })
    if "deflate" in spec:
        cc, sc = legs[0]
        params = deflate_params(cc["extensions"]) or {}
        n = {d: cc["compressed_messages"][d] for d in DIRS}
        out.append({
            "fact": "deflate",
            "deflate": {
                "negotiated_on_both_legs": cc["extensions"] == sc["extensions"] and bool(params),
                "extensions": cc["extensions"],
                **n,
                "context_takeover": {d: params[d]["context_takeover"] for d in DIRS},
                "window_bits": {d: params[d]["window_bits"] for d in DIRS},
                "decompressed_payload_equal_on_both_legs": all(
                    [m["digest"] for m in c1["message_list"][d]] == [m["digest"] for m in c2["message_list"][d]]
                    for c1, c2 in legs for d in DIRS),
                "wire_bytes_identical_on_both_legs": all(all(p["websocket_bytes_identical"].values()) for p in pairs),
            },
            "text": f"permessage-deflate negotiated on both legs ({cc['extensions']}), "
                    f"{n['client_to_server']} compressed messages client->server and "
                    f"{n['server_to_client']} server->client, decompressed payloads equal on both legs "
                    f"(the proxy passes the compressed frames through untouched); context takeover "
                    f"{'on' if spec['deflate']['context_takeover'] else 'off'}",
        })
    frag = {d: [m for m in legs[0][0].get("message_list", {}).get(d, []) if m["frames"] > 1] for d in DIRS}
    if any(frag.values()):
        out.append({
            "fact": "fragmented_messages",
            "fragmented": {d: [{k: m[k] for k in ("opcode", "frames", "payload_bytes", "frame_payload_bytes",
                                                  "controls_between_fragments")} for m in frag[d]] for d in DIRS},
            "continuation_frames": legs[0][0]["continuation_frames"],
            "text": "fragmented messages reassembled: " + "; ".join(
                f"{d.replace('_', ' ')}: {m['opcode']} of {m['payload_bytes']} bytes in {m['frames']} frames "
                f"({', '.join(map(str, m['frame_payload_bytes']))}) with {m['controls_between_fragments']} "
                "control frame(s) between the fragments"
                for d in DIRS for m in frag[d]),
        })
        big = {d: max((m["payload_bytes"] for m in legs[0][0]["message_list"][d] if m["frames"] == 1), default=0)
               for d in DIRS}
        out.append({
            "fact": "large_messages",
            "largest_single_frame_message": big,
            "text": f"a single-frame message of {big['client_to_server']} bytes (64-bit length) client->server",
        })
    if "k8s" in spec:
        k = legs[0][0]["k8s"]
        out.append({
            "fact": "k8s_exec",
            "subprotocol": spec["k8s"]["subprotocol"],
            "k8s_channels": k["channels"],
            "exit_code": k["exit_code"],
            "status": k["status"],
            "text": f"Kubernetes exec over {spec['k8s']['subprotocol']}: client->server "
                    + ", ".join(f"{K8S_CHANNEL_NAMES[int(c)]}×{n}" for c, n in k["channels"]["client_to_server"].items())
                    + "; server->client "
                    + ", ".join(f"{K8S_CHANNEL_NAMES[int(c)]}×{n}" for c, n in k["channels"]["server_to_client"].items())
                    + f" (the first stdout message is empty: 'streams ready'); status channel: exit code "
                      f"{k['exit_code']}; the server closes with 1000",
        })
    cc = legs[0][0]
    closes = [e for e in cc["close_events"] if e["kind"] == "close"]
    if closes:
        out.append({
            "fact": "close_handshake",
            "first_close_from": closes[0]["from"],
            "codes": {d: cc["close_codes"][d] for d in DIRS},
            "first_fin_from": cc["tcp"]["first_fin_from"],
            "text": f"clean close on both legs: the {closes[0]['from']} sends close {closes[0]['code']}, "
                    "the other side echoes it; the proxy relays both close frames",
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    root = args.captures
    try:
        expected = derive(root)
    except Failure as exc:
        print(f"derive_expected: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"derive_expected: {exc} (apt-get install -y tshark)", file=sys.stderr)
        return 1
    try:
        expected_h2 = derive_h2(root)
    except Failure as exc:
        print(f"derive_expected: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    if not expected["scenarios"]:
        print("derive_expected: no scenario captures found", file=sys.stderr)
        return 1
    (root / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    text = manifest(expected, root)
    if expected_h2["scenarios"]:
        # the haproxy-h2* scenarios (captures/h2/): their own file, their own MANIFEST.md section
        (root / "expected_h2.json").write_text(json.dumps(expected_h2, indent=2) + "\n")
        text += "\n" + manifest_h2(expected_h2, root)
    (root / "MANIFEST.md").write_text(text)
    for name, sc in expected["scenarios"].items():
        st = sc["captures"]["client"]["connections"][0]["status"]
        print(f"derive_expected: {name}: {len(sc['pairs'])} pair(s), client-side status {st}, checks passed")
    for name, sc in expected_h2["scenarios"].items():
        st = [c["response"]["status"] if c["response"] else None for c in sc["captures"]["client"]["connections"]]
        streams = sum(len(c["streams"]) for c in sc["captures"]["server"]["connections"])
        print(f"derive_expected: {H2_SUBDIR}/{name}: {len(sc['pairs'])} pair(s), {streams} HTTP/2 stream(s), "
              f"client-side status {st}, checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
