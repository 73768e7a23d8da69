#!/usr/bin/env python3
"""RFC 8441 WebSocket backend for the haproxy-h2* scenarios of make_captures.sh: Hypercorn
serving an ASGI WebSocket app equivalent to ws_server.py, over cleartext HTTP/2 with prior
knowledge ("h2c", what HAProxy's `proto h2` server option speaks), in netns wsa-server.

    PYTHON h2_ws_server.py [--host 198.51.100.10] [--port 8080]

Needs a Python >= 3.11 with `hypercorn` (tested with 0.18.0, which brings `h2` 4.x and
`wsproto`): `python3 -m pip install 'hypercorn==0.18.0'`.

- Hypercorn accepts both HTTP/1.1 and, on the same cleartext port, HTTP/2 with prior
  knowledge (it switches to its h2 protocol on the `PRI * HTTP/2.0` preface);
- its HTTP/2 SETTINGS always carry SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3;
  hard-coded in hypercorn/protocol/h2.py), so HAProxy may send WebSocket handshakes as
  extended CONNECT requests (`:method CONNECT`, `:protocol websocket`); the answer is a
  `:status 200` HEADERS frame and the WebSocket frames travel in DATA frames of that stream;
- the app: WebSocket only on path /ws (another path is refused before the accept, which
  Hypercorn answers with 403); sub-protocol "chat" if the client offers it; echoes every
  message (text as text, binary as binary); on the text message "push" it also sends one
  JSON document (after the echo), as ws_server.py;
- pings are answered by wsproto inside Hypercorn (the app never sees them), close frames
  too (Hypercorn echoes the client's close code);
- no keepalive pings (websocket_ping_interval None), permessage-deflate only if the client
  offers it (the clients of these scenarios do not);
- logs one line per event on stdout (flushed), used in run.log as ground truth, plus
  Hypercorn's access log and error log.

Stops on SIGTERM / SIGINT (graceful: Hypercorn sends GOAWAY on its open connections).

Two small fixes of Hypercorn 0.18.0's HTTP/2 WebSocket teardown are applied at start-up
(`--stock` runs Hypercorn unchanged). Measured with the stock 0.18.0 behind HAProxy 2.6
(`proto h2`): when the *client* closes (close frame 1000, echoed by Hypercorn), Hypercorn
forgets the stream without ever sending END_STREAM (it only ends the stream when the app
closes first), so HAProxy keeps the client's TCP connection open and the websockets client
drops it after its close_timeout (5 s); HAProxy then ends the h2 stream with an empty DATA
frame with END_STREAM, which Hypercorn does not expect for a forgotten stream: `KeyError` in
H2Protocol._handle_events ("Unhandled exception in client_connected_cb", the whole h2
connection dies: pgjones/hypercorn#365). The fixes: (1) after echoing a peer's close frame on
an HTTP/2 stream, end the stream (END_STREAM), as RFC 8441 §5 maps an orderly TCP close to
END_STREAM and as Hypercorn already does when the app closes first; (2) DATA for a stream
Hypercorn already forgot is acknowledged (flow control) and dropped instead of crashing the
connection. Nothing else (SETTINGS, framing, flow control) is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import signal
import sys
import time

import h2.events
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol.events import EndData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.ws_stream import WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

PUSH_SEQ = 0


def log(msg: str) -> None:
    print(f"{time.time():.6f} server {msg}", flush=True)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global PUSH_SEQ
    if scope["type"] == "lifespan":
        while True:
            ev = await receive()
            if ev["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif ev["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    peer = "{}:{}".format(*scope["client"]) if scope.get("client") else "?"
    if scope["type"] == "http":
        log(f"http {peer} HTTP/{scope['http_version']} {scope['method']} {scope['path']} (404)")
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Not Found\n"})
        return
    if scope["type"] != "websocket":
        return
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    log(f"request {peer} HTTP/{scope['http_version']} {scope['path']} headers={headers}")
    ev = await receive()
    assert ev["type"] == "websocket.connect", ev
    if scope["path"] != "/ws":
        log(f"refused {peer} {scope['path']} (close before accept: 403)")
        await send({"type": "websocket.close", "code": 1000})
        return
    sub = "chat" if "chat" in scope.get("subprotocols", []) else None
    await send({"type": "websocket.accept", "subprotocol": sub})
    log(f"open {peer} HTTP/{scope['http_version']} subprotocol={sub!r}")
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            log(f"closed {peer} code={ev.get('code')}")
            return
        text, data = ev.get("text"), ev.get("bytes")
        message = text if text is not None else data
        kind = "text" if text is not None else "binary"
        log(f"recv {peer} {kind} len={len(message)} head={message[:40]!r}")
        await send({"type": "websocket.send", "text": text} if text is not None
                   else {"type": "websocket.send", "bytes": data})
        if text == "push":
            PUSH_SEQ += 1
            doc = {
                "type": "push",
                "seq": PUSH_SEQ,
                "peer": peer,
                "payload": {"status": "ok", "items": [1, 2, 3], "note": "server push"},
            }
            await send({"type": "websocket.send", "text": json.dumps(doc, separators=(",", ":"))})
            log(f"push {peer} seq={PUSH_SEQ}")


def fix_hypercorn_h2_websocket_teardown() -> None:
    """The two fixes described in the module docstring (Hypercorn 0.18.0)."""
    send_wsproto_event = WSStream._send_wsproto_event

    async def _send_wsproto_event(self, event):  # type: ignore[no-untyped-def]
        await send_wsproto_event(self, event)
        # the echo of the peer's close frame (wsproto is CLOSED only after both close
        # frames): end the HTTP/2 stream, as after an app-initiated close
        if (isinstance(event, CloseConnection) and self.handshake.http_version == "2"
                and self.connection.state == ConnectionState.CLOSED):
            log(f"end stream {self.stream_id} after the close handshake (END_STREAM)")
            await self.send(EndData(stream_id=self.stream_id))

    handle_events = H2Protocol._handle_events

    async def _handle_events(self, events):  # type: ignore[no-untyped-def]
        kept = []
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id not in self.streams:
                log(f"DATA ({len(ev.data)} bytes) on finished stream {ev.stream_id} ignored")
                self.connection.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                continue
            kept.append(ev)
        await handle_events(self, kept)

    WSStream._send_wsproto_event = _send_wsproto_event  # type: ignore[method-assign]
    H2Protocol._handle_events = _handle_events  # type: ignore[method-assign]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="198.51.100.10")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--stock", action="store_true",
                    help="run Hypercorn unchanged (without the two teardown fixes)")
    args = ap.parse_args()
    if not args.stock:
        fix_hypercorn_h2_websocket_teardown()

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = "-"
    config.errorlog = "-"
    config.loglevel = "INFO"
    config.access_log_format = '%(h)s "%(r)s" %(s)s proto=%(H)s'
    config.websocket_ping_interval = None
    config.keep_alive_timeout = 30  # keep HAProxy's idle h2 connection for the whole run
    config.graceful_timeout = 1

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    versions = {p: importlib.metadata.version(p) for p in ("hypercorn", "h2", "wsproto")}
    log(f"listening {args.host}:{args.port} (h2c prior knowledge + HTTP/1.1) "
        + " ".join(f"{k} {v}" for k, v in versions.items()) + f" python {sys.version.split()[0]}"
        + (" (stock)" if args.stock else " (with the two teardown fixes)"))
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
