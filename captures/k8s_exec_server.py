#!/usr/bin/env python3
"""A Kubernetes-exec-style WebSocket server for make_captures.sh (runs in netns wsa-server).

It stands in for the kubelet / API server end of ``kubectl exec`` over WebSocket
(``GET /api/v1/namespaces/NS/pods/POD/exec?command=...&stdin=true&stdout=true...``),
speaking the channel sub-protocols as Kubernetes defines them
(k8s.io/apimachinery/pkg/util/httpstream/wsstream and the kubelet's remotecommand):

- sub-protocols supported, in the server's order of preference: ``v4.channel.k8s.io``,
  ``v3.channel.k8s.io``, ``v2.channel.k8s.io``, ``channel.k8s.io``,
  ``base64.channel.k8s.io`` (no ``v5.channel.k8s.io``: like an API server before 1.30, so
  a client offering "v5, v4, channel.k8s.io" gets v4). The first of the client's offers
  that the server supports is selected, in the client's order.
- binary protocols: every message is binary, its first byte the channel (0 stdin,
  1 stdout, 2 stderr, 3 error/status, 4 resize); ``base64.channel.k8s.io``: every message
  is text, its first character the channel digit, the rest the data in base64.
- like the kubelet, right after the handshake it writes an empty message on the lowest
  writable channel (stdout: the binary message ``b"\\x01"``, or the text ``"1"``) to tell the
  client the streams are ready.
- stdin is run line by line by a tiny fake shell: ``echo ARGS`` writes ARGS on stdout,
  ``ls PATH`` (a path that does not exist) writes ls's error on stderr, ``exit N`` ends the
  session. On exit the status is written on channel 3: with v4 the JSON ``metav1.Status``
  (``{"metadata":{},"status":"Success"}`` for 0, the ``NonZeroExitCode`` Failure with the
  exit code as cause otherwise); with the older protocols (v1-v3, base64) the kubelet writes
  only the error text (``status.Error()``) and nothing on success. Then the server closes
  the WebSocket with 1000.
- a resize message (channel 4, JSON ``{"Width":W,"Height":H}``) is logged, not answered.

Anything but a GET on ``/api/v1/namespaces/<ns>/pods/<pod>/exec`` gets a plain 404. No
compression, no keepalive pings. Logs one line per event on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http
import json
import logging
import re
import signal
import sys
import time

import websockets
from websockets.asyncio.server import ServerConnection, serve

SUPPORTED = (
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
STDIN, STDOUT, STDERR, STATUS, RESIZE = range(5)
NAMES = {STDIN: "stdin", STDOUT: "stdout", STDERR: "stderr", STATUS: "status", RESIZE: "resize"}
EXEC_PATH = re.compile(r"^/api/v1/namespaces/[a-z0-9-]+/pods/[a-z0-9.-]+/exec(\?.*)?$")


def log(msg: str) -> None:
    print(f"{time.time():.6f} k8s-server {msg}", flush=True)


def select_subprotocol(connection: ServerConnection, offered: list[str]) -> str | None:
    for p in offered:  # the client's order, among those this server supports
        if p in SUPPORTED:
            return p
    return None


def process_request(connection: ServerConnection, request):  # type: ignore[no-untyped-def]
    peer = "{}:{}".format(*connection.remote_address[:2])
    log(f"request {peer} {request.path} headers={list(request.headers.raw_items())}")
    if not EXEC_PATH.match(request.path):
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


def exit_status(code: int, v4: bool) -> bytes | None:
    cmd = "[sh]"
    if not v4:  # v1-v3: only the error text, nothing on success
        if code == 0:
            return None
        return (
            f"command terminated with non-zero exit code: error executing command "
            f"{cmd}, exit code {code}"
        ).encode()
    if code == 0:
        doc: dict = {"metadata": {}, "status": "Success"}
    else:
        doc = {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
            f"{cmd}, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    return json.dumps(doc, separators=(",", ":")).encode()


async def handler(ws: ServerConnection) -> None:
    peer = "{}:{}".format(*ws.remote_address[:2])
    proto = ws.subprotocol or ""
    b64 = proto == "base64.channel.k8s.io"
    v4 = proto == "v4.channel.k8s.io"
    log(f"open {peer} subprotocol={proto!r} path={ws.request.path if ws.request else None}")

    async def write(channel: int, data: bytes) -> None:
        if b64:
            await ws.send(str(channel) + base64.b64encode(data).decode())
        else:
            await ws.send(bytes([channel]) + data)
        log(f"sent {peer} {NAMES[channel]} {data!r}")

    await write(STDOUT, b"")  # the kubelet's "streams are ready" message
    pending = b""
    exit_code = None
    try:
        async for message in ws:
            if b64:
                if not isinstance(message, str) or not message:
                    log(f"protocol error {peer}: expected a text message, got {message!r}")
                    continue
                channel, data = int(message[0]), base64.b64decode(message[1:])
            else:
                if not isinstance(message, bytes) or not message:
                    log(f"protocol error {peer}: expected a binary message, got {message!r}")
                    continue
                channel, data = message[0], message[1:]
            log(f"recv {peer} {NAMES.get(channel, channel)} {data!r}")
            if channel == RESIZE:
                size = json.loads(data)
                log(f"resize {peer} width={size.get('Width')} height={size.get('Height')}")
                continue
            if channel != STDIN:
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "echo":
                    await write(STDOUT, (" ".join(words[1:]) + "\n").encode())
                elif words[0] == "ls":
                    for path in words[1:]:
                        await write(
                            STDERR,
                            f"ls: cannot access '{path}': No such file or directory\n".encode(),
                        )
                elif words[0] == "exit":
                    exit_code = int(words[1]) if len(words) > 1 else 0
                    break
                else:
                    await write(STDERR, f"sh: 1: {words[0]}: not found\n".encode())
            if exit_code is not None:
                status = exit_status(exit_code, v4)
                if status is not None:
                    await write(STATUS, status)
                await ws.close(1000)
                break
    except websockets.ConnectionClosed:
        pass
    log(f"closed {peer} code={ws.close_code} reason={ws.close_reason!r} exit_code={exit_code}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="198.51.100.10")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
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
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        ping_interval=None,
        max_size=2**20,
    ):
        log(f"listening {args.host}:{args.port} websockets {websockets.__version__}")
        await stop
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
