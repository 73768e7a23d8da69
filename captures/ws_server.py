#!/usr/bin/env python3
"""Tiny real WebSocket echo server used by make_captures.sh (runs in netns wsa-server).

- listens on HOST:PORT (default 198.51.100.10:8080), WebSocket only on path /ws
  (anything else gets a plain 404);
- echoes every message (text as text, binary as binary);
- on the text message "push" it also sends one JSON document (after the echo);
- negotiates the sub-protocol "chat" if the client offers it, none otherwise;
- permessage-deflate disabled by default (compression=None) so payloads are identical on
  both legs (see --compression);
- no keepalive pings (ping_interval=None): every frame on the wire is one the client
  scenario asked for;
- with --reset-after N: after echoing the N-th message of a connection (and a short pause,
  so the echo is on the wire and acknowledged), the server aborts that TCP connection with
  SO_LINGER {on, 0}: the kernel sends a RST instead of a FIN and no close frame is sent
  (the "backend died mid-stream" case);
- with --compression deflate: permessage-deflate (RFC 7692) accepted with the RFC defaults
  (context takeover both ways, 15-bit windows: the response is a bare
  "permessage-deflate" unless the client asked for parameters); with --compression
  deflate-no-context-takeover the response always carries server_no_context_takeover and
  client_no_context_takeover (and the client_max_window_bits the client asked for);
- with --summarize-over N: a data message longer than N bytes is not echoed; the server
  answers with a short text "got <kind> len=<n> sha256=<hex>" instead (keeps the captures of
  the large-message scenario small: only one direction carries the large payloads);
- on the text message "frag-reply" it answers with a text message of 4 fragments of 512
  bytes (frames: text, continuation x3, then websockets' empty final continuation), sending a
  ping ("srv-ping") between the 2nd and 3rd fragment and waiting for its pong.

Logs one line per event on stdout (flushed), used by make_captures.sh as ground truth.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http
import json
import logging
import signal
import socket
import struct
import sys
import time

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

PUSH_SEQ = 0
RESET_AFTER = 0  # --reset-after N (0: never)
SUMMARIZE_OVER = 0  # --summarize-over N (0: always echo)
FRAG_REPLY_UNIT = "[server-fragment-{i}]"


def log(msg: str) -> None:
    print(f"{time.time():.6f} server {msg}", flush=True)


def select_subprotocol(connection: ServerConnection, subprotocols: list[str]) -> str | None:
    return "chat" if "chat" in subprotocols else None


def process_request(connection: ServerConnection, request):  # type: ignore[no-untyped-def]
    peer = "{}:{}".format(*connection.remote_address[:2])
    log(f"request {peer} {request.path} headers={list(request.headers.raw_items())}")
    if request.path != "/ws":
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


async def handler(ws: ServerConnection) -> None:
    global PUSH_SEQ
    peer = "{}:{}".format(*ws.remote_address[:2])
    log(f"open {peer} subprotocol={ws.subprotocol!r}")
    count = 0
    try:
        async for message in ws:
            count += 1
            kind = "text" if isinstance(message, str) else "binary"
            log(f"recv {peer} {kind} len={len(message)} head={message[:40]!r}")
            if SUMMARIZE_OVER and len(message) > SUMMARIZE_OVER:
                raw = message.encode() if isinstance(message, str) else message
                summary = f"got {kind} len={len(message)} sha256={hashlib.sha256(raw).hexdigest()}"
                await ws.send(summary)
                log(f"summary {peer} {summary}")
                continue
            if message == "frag-reply":
                await ws.send(fragmented_reply(ws))
                log(f"fragmented reply {peer}")
                continue
            await ws.send(message)
            if RESET_AFTER and count >= RESET_AFTER:
                await asyncio.sleep(0.05)  # the echo is sent and acknowledged
                sock = ws.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                log(f"reset {peer} after message {count} (SO_LINGER 0, abort)")
                ws.transport.abort()
                break
            if message == "push":
                PUSH_SEQ += 1
                doc = {
                    "type": "push",
                    "seq": PUSH_SEQ,
                    "peer": peer,
                    "payload": {"status": "ok", "items": [1, 2, 3], "note": "server push"},
                }
                await ws.send(json.dumps(doc, separators=(",", ":")))
                log(f"push {peer} seq={PUSH_SEQ}")
    except websockets.ConnectionClosed:
        pass
    log(f"closed {peer} code={ws.close_code} reason={ws.close_reason!r}")


def fragment(i: int) -> str:
    unit = FRAG_REPLY_UNIT.format(i=i)
    return (unit * (512 // len(unit) + 1))[:512]


async def fragmented_reply(ws: ServerConnection):  # type: ignore[no-untyped-def]
    """Four 512-byte text fragments; a ping (answered before going on) after the 2nd."""
    for i in range(4):
        if i == 2:
            pong = await ws.ping(b"srv-ping")
            await pong
        yield fragment(i)


def extensions(mode: str) -> list | None:  # type: ignore[type-arg]
    if mode == "deflate":
        # RFC 7692 defaults: context takeover, 15-bit windows, zlib's default memLevel
        return [ServerPerMessageDeflateFactory()]
    if mode == "deflate-no-context-takeover":
        return [ServerPerMessageDeflateFactory(server_no_context_takeover=True,
                                               client_no_context_takeover=True)]
    return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="198.51.100.10")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--reset-after", type=int, default=0,
                    help="abort each connection with a TCP RST after echoing this many messages")
    ap.add_argument("--compression", default="none",
                    choices=("none", "deflate", "deflate-no-context-takeover"))
    ap.add_argument("--summarize-over", type=int, default=0,
                    help="answer data messages longer than this with a summary, not an echo")
    args = ap.parse_args()
    global RESET_AFTER, SUMMARIZE_OVER
    RESET_AFTER = args.reset_after
    SUMMARIZE_OVER = args.summarize_over

    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(created).6f websockets %(message)s"
    )
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)

    async with serve(
        handler,
        args.host,
        args.port,
        compression=None,
        extensions=extensions(args.compression),
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        ping_interval=None,
        max_size=2**21,
    ):
        log(f"listening {args.host}:{args.port} websockets {websockets.__version__} "
            f"compression={args.compression}")
        await stop
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
