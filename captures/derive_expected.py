#!/usr/bin/env python3
"""Derive captures/expected.json and captures/MANIFEST.md from the real pcaps, with tshark.

    python3 captures/derive_expected.py [--captures DIR]

Everything in expected.json is read back from the capture files by tshark (connections,
request targets, statuses, per-direction message counts, header changes); the only
"scenario knowledge" used is how to find the ground truth of the pairing: every client
of the *-ok and *-server-reset scenarios sends a unique text token ("i-am-<name>") that
the proxy forwards unchanged, and (all scenarios) the proxy (nginx, HAProxy, Apache)
forwards the client's Sec-WebSocket-Key verbatim. Both are used and must agree.

The script also checks that each capture really shows what its scenario is meant to
show (complete TCP handshakes on both legs, segments <= 1448 payload bytes, 101 in
the *-ok scenarios, the refusal status, the idle-timeout close, the backend's RST,
identical message counts on both legs) and exits 1 with an explanation if not, so a
broken run never ships quietly. Needs tshark (Wireshark >= 3.6); reads run.log and the
proxy configuration (nginx.conf, haproxy.cfg or apache2.conf) written beside the pcaps by
make_captures.sh for the software versions and the configuration shown in MANIFEST.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
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
}


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
                "fin": {}, "rst": {}, "last_payload_ts": None,
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
    for r in tshark_json(pcap, ["tcp.stream", "ip.src", "tcp.srcport", "websocket.opcode",
                                "websocket.payload.text", "websocket.payload.close.status_code",
                                "websocket.payload.close.reason"], "websocket"):
        c = conns[int(one(r, "tcp.stream"))]
        src = f"{one(r, 'ip.src')}:{one(r, 'tcp.srcport')}"
        d = "client_to_server" if src == c["src"] else "server_to_client"
        ws = c.setdefault("ws", {x: {"frames": defaultdict(int), "texts": [], "close": []} for x in DIRS})
        for op in r.get("websocket.opcode", []):
            ws[d]["frames"][OPCODES.get(int(op), f"opcode{op}")] += 1
        ws[d]["texts"] += r.get("websocket.payload.text", [])
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


def connection_json(c: dict) -> dict:
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
        },
    }
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
            check(c["request_target"] == "/ws", f"{name}/{side}: target {c['request_target']}")
            check(sum(c["continuation_frames"].values()) == 0, f"{name}/{side}: unexpected fragmentation")
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
                idle = c["tcp"]["idle_before_first_fin_s"]
                want_from = "server" if side == "client" else "client"  # nginx closes both legs
                check(c["tcp"]["first_fin_from"] == want_from,
                      f"{name}/{side}: first FIN from {c['tcp']['first_fin_from']}, expected {want_from} (nginx)")
                check(idle is not None and abs(idle - spec["idle_timeout_s"]) < 0.5,
                      f"{name}/{side}: idle before FIN {idle} s, expected ~{spec['idle_timeout_s']} s")


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
}


def fmt_counts(m: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.items() if v) or "none"


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
               "sub-protocol `chat` if offered, `compression=None`, no keepalive pings). Client: "
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
            out.append("| connection | HTTP | status | WebSocket | client -> server | server -> client | close codes c->s / s->c | first FIN |")
            out.append("|---|---|---|---|---|---|---|---|")
            for c in capinfo["connections"]:
                out.append(
                    f"| {c['src']} -> {c['dst']} | GET {c['request_target']} {c['request_version']} | "
                    f"{c['status']} {c['reason'] or ''} | {'yes' if c['websocket'] else 'no'}"
                    f"{' (' + c['subprotocol'] + ')' if c['subprotocol'] else ''} | "
                    f"{fmt_counts(c['messages']['client_to_server'])} | "
                    f"{fmt_counts(c['messages']['server_to_client'])} | "
                    f"{c['close_codes']['client_to_server'] or '-'} / {c['close_codes']['server_to_client'] or '-'} | "
                    f"{c['tcp']['first_fin_from'] or '-'}"
                    f"{' after {:.3f} s idle'.format(c['tcp']['idle_before_first_fin_s']) if c['tcp']['idle_before_first_fin_s'] is not None and c['tcp']['idle_before_first_fin_s'] > 1 else ''}"
                    f"{''.join(f'; RST from {w}' for w in c['tcp']['rst_from'])} |")
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
    out.append("## expected.json")
    out.append("")
    out.append("Per scenario: `captures.client|server.connections[]` with `src`, `dst` (ip:port; `src` is "
               "the side that sent the SYN), `websocket`, `request_target`, `request_version`, "
               "`status`, `messages.{client_to_server,server_to_client}.{text,binary,ping,pong,close}` "
               "(WebSocket frames by opcode as tshark decodes them; no fragmentation occurs), "
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
        conns = {side: [connection_json(c) for c in cap[side]["connections"]] for side in cap}
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
        if name == "nginx-idle-timeout":
            cfin = cap["client"]["connections"][0]["fin"]
            sfin = cap["server"]["connections"][0]["fin"]
            if "server_to_client" in cfin and "client_to_server" in sfin:
                delta = cfin["server_to_client"] - sfin["client_to_server"]
                notes.append(f"nginx sent its FIN to the client {delta * 1e3:+.3f} ms after its FIN to "
                             "the server (same clock: both captures are taken in the proxy namespace).")
        if spec.get("clients") is MULTI_CLIENTS:
            notes.insert(0, "All three clients send the identical first message `hello` at the same moment; "
                            "the pairing is only decidable by the unique `i-am-<name>` message, the "
                            "Sec-WebSocket-Key, the ping payload `ping-<name>` or timing.")
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
        }
    return expected


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
    if not expected["scenarios"]:
        print("derive_expected: no scenario captures found", file=sys.stderr)
        return 1
    (root / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    (root / "MANIFEST.md").write_text(manifest(expected, root))
    for name, sc in expected["scenarios"].items():
        st = sc["captures"]["client"]["connections"][0]["status"]
        print(f"derive_expected: {name}: {len(sc['pairs'])} pair(s), client-side status {st}, checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
