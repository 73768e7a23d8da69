#!/usr/bin/env python3
"""Real WebSocket clients used by make_captures.sh (runs in netns wsa-client).

Modes:
  multi    three concurrent clients (alpha, bravo, charlie) on the same URL, sub-protocol
           "chat" offered. Each: "hello" (identical across clients), a unique token
           "i-am-<name>", "push" (server answers echo + JSON), one binary message, one
           ping, "bye", close 1000. alpha also sends a 5000-byte text and a 70000-byte
           binary message (64-bit payload length).
  refused  one attempt that the server side is expected to refuse; the exception is
           printed and the exit status is 0. With --before-url URL (repeatable) one
           attempt on each of those URLs first, one after the other.
  idle     one client: "hello", then silent for --idle seconds; records how the
           connection ends (the proxy's idle timeout).
  reset    one client (delta) against a server started with --reset-after 2: "hello",
           "i-am-delta" (both echoed), then waits up to --idle seconds and records how the
           proxy ends the client leg after the backend's TCP RST.
  deflate  one client (echo) with permessage-deflate against a server started with
           --compression deflate[-no-context-takeover]: offers "permessage-deflate;
           client_max_window_bits" (RFC defaults, context takeover) or, with
           --no-context-takeover, "permessage-deflate; server_no_context_takeover;
           client_no_context_takeover; client_max_window_bits=10". Sends (each echoed):
           "hello", "i-am-echo", a 2 KB repetitive log text, the same text again (with
           context takeover its second copy compresses to a few bytes), "push" (echo +
           JSON), a 20000-byte repetitive text, a 4096-byte repetitive binary message, a
           ping, "bye", close 1000.
  fragmented  one client (golf) against a server started with --summarize-over 4096:
           "hello", "i-am-golf", a 147456-byte binary message sent fragmented in frames of
           64 KiB, 64 KiB and 16 KiB (websockets adds an empty final continuation frame)
           with a ping (awaiting its pong) after the 1st and after the 2nd fragment, an
           80000-byte text message in one frame (64-bit length), "frag-reply" (the server
           answers with a 4-fragment text message and pings between its fragments), "bye",
           close 1000. The server answers each large message with a short summary text
           (length + SHA-256, checked here) instead of an echo.
  many     --clients N (12) concurrent clients client-01..client-NN on the same URL, each:
           "hello" (identical), "i-am-client-NN" (unique token), "same-for-all"
           (identical), an identical binary message, close 1000.
  k8s      a Kubernetes-exec-style client (captures/k8s_exec_server.py) on the exec URL,
           offering --subprotocol (repeatable, in order); binary channel messages (first
           byte = channel) or, when a base64.* protocol is selected, text messages (first
           char = channel digit, rest base64): stdin "echo hello\n", stdin
           "ls /nonexistent\n", resize {"Width":80,"Height":24} on channel 4, stdin
           "exit 2\n"; reads stdout / stderr / the status on channel 3 and the server's
           close 1000.

Every message is awaited (echo received) before the next is sent, so per-connection
order is deterministic; the clients still run concurrently. Prints one line per event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time

import websockets
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

NAMES = ("alpha", "bravo", "charlie")
GAP = 0.05  # seconds between a client's messages


def log(name: str, msg: str) -> None:
    print(f"{time.time():.6f} {name} {msg}", flush=True)


def big_text(n: int, name: str) -> str:
    unit = f"[{name}:large-text]"
    return (unit * (n // len(unit) + 1))[:n]


def big_binary(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


async def echo(ws, name: str, message) -> None:  # type: ignore[no-untyped-def]
    await ws.send(message)
    reply = await ws.recv()
    if reply != message:
        raise RuntimeError(f"{name}: echo mismatch for {message[:20]!r}")
    log(name, f"echo ok {type(message).__name__} len={len(message)}")


async def one_client(url: str, name: str, start: asyncio.Event) -> None:
    await start.wait()
    async with connect(
        url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
        max_size=2**20, open_timeout=5, close_timeout=5,
    ) as ws:
        sport = ws.local_address[1]
        log(name, f"open local_port={sport} subprotocol={ws.subprotocol!r}")
        await echo(ws, name, "hello")
        await asyncio.sleep(GAP)
        await echo(ws, name, f"i-am-{name}")
        await asyncio.sleep(GAP)
        await ws.send("push")
        first = await ws.recv()
        second = await ws.recv()
        log(name, f"push replies {first!r} {second[:60]!r}")
        await asyncio.sleep(GAP)
        await echo(ws, name, b"\x00\x01\x02binary-" + name.encode() + b"\xfe\xff")
        await asyncio.sleep(GAP)
        t0 = time.monotonic()
        pong = await ws.ping(f"ping-{name}".encode())
        await pong
        log(name, f"pong after {1000 * (time.monotonic() - t0):.3f} ms")
        await asyncio.sleep(GAP)
        if name == "alpha":
            await echo(ws, name, big_text(5000, name))
            await asyncio.sleep(GAP)
            await echo(ws, name, big_binary(70000))
            await asyncio.sleep(GAP)
        await echo(ws, name, "bye")
        await ws.close(1000, f"{name} done")
        log(name, f"closed code={ws.close_code} reason={ws.close_reason!r} local_port={sport}")


async def multi(url: str) -> int:
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_client(url, n, start)) for n in NAMES]
    await asyncio.sleep(0.01)
    start.set()  # all three connect at the same time
    results = await asyncio.gather(*tasks, return_exceptions=True)
    bad = [r for r in results if isinstance(r, BaseException)]
    for r in bad:
        log("multi", f"error {r!r}")
    return 1 if bad else 0


async def refused(url: str) -> int:
    try:
        async with connect(
            url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
            open_timeout=5,
        ) as ws:
            log("refused", f"UNEXPECTED: handshake succeeded subprotocol={ws.subprotocol!r}")
            await ws.close(1000)
            return 1
    except websockets.InvalidStatus as exc:
        r = exc.response
        log("refused", f"handshake refused status={r.status_code} reason={r.reason_phrase!r} "
                       f"headers={list(r.headers.raw_items())} body={r.body!r}")
    except Exception as exc:  # noqa: BLE001 - record whatever the real software did
        log("refused", f"handshake failed {type(exc).__name__}: {exc}")
    return 0


async def idle(url: str, seconds: float) -> int:
    async with connect(
        url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
        open_timeout=5, close_timeout=2,
    ) as ws:
        log("idle", f"open local_port={ws.local_address[1]}")
        await echo(ws, "idle", "hello")
        t0 = time.monotonic()
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout=seconds)
            log("idle", f"UNEXPECTED message {msg!r}")
        except TimeoutError:
            log("idle", f"still open after {seconds} s")
        except websockets.ConnectionClosed as exc:
            log("idle", f"connection closed after {time.monotonic() - t0:.3f} s: "
                        f"{type(exc).__name__} rcvd={exc.rcvd} sent={exc.sent}")
    return 0


async def reset(url: str, seconds: float) -> int:
    name = "delta"
    async with connect(
        url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
        open_timeout=5, close_timeout=2,
    ) as ws:
        log(name, f"open local_port={ws.local_address[1]} subprotocol={ws.subprotocol!r}")
        await echo(ws, name, "hello")
        await asyncio.sleep(GAP)
        await echo(ws, name, f"i-am-{name}")
        t0 = time.monotonic()
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout=seconds)
            log(name, f"UNEXPECTED message {msg!r}")
            return 1
        except TimeoutError:
            log(name, f"UNEXPECTED: still open after {seconds} s")
            return 1
        except websockets.ConnectionClosed as exc:
            log(name, f"connection closed after {time.monotonic() - t0:.3f} s: "
                      f"{type(exc).__name__} rcvd={exc.rcvd} sent={exc.sent} "
                      f"cause={exc.__cause__!r}")
    return 0


LOG_LINE = ("2026-11-21T12:00:{s:02d}.{ms:03d}Z INFO http request handled method=GET "
            "path=/api/v1/items status=200 bytes=512 upstream=198.51.100.10:8080\n")


def log_text(lines: int) -> str:
    return "".join(LOG_LINE.format(s=i % 60, ms=(i * 37) % 1000) for i in range(lines))


def repetitive_binary(n: int) -> bytes:
    unit = b"\x00\x01\x02\x03binary-block-\xfe\xff"
    return (unit * (n // len(unit) + 1))[:n]


async def deflate(url: str, no_context_takeover: bool) -> int:
    name = "echo"
    if no_context_takeover:
        ext = ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                             client_no_context_takeover=True,
                                             client_max_window_bits=10)
    else:
        ext = ClientPerMessageDeflateFactory()  # offers client_max_window_bits (no value)
    async with connect(
        url, subprotocols=["chat"], compression=None, extensions=[ext], ping_interval=None,
        proxy=None, max_size=2**20, open_timeout=5, close_timeout=5,
    ) as ws:
        sport = ws.local_address[1]
        log(name, f"open local_port={sport} subprotocol={ws.subprotocol!r} "
                  f"extensions={ws.response.headers.get('Sec-WebSocket-Extensions')!r}")
        await echo(ws, name, "hello")
        await asyncio.sleep(GAP)
        await echo(ws, name, f"i-am-{name}")
        await asyncio.sleep(GAP)
        text = log_text(20)
        await echo(ws, name, text)
        await asyncio.sleep(GAP)
        await echo(ws, name, text)  # the same again: context takeover makes it tiny
        await asyncio.sleep(GAP)
        await ws.send("push")
        first = await ws.recv()
        second = await ws.recv()
        log(name, f"push replies {first!r} {second[:60]!r}")
        await asyncio.sleep(GAP)
        await echo(ws, name, big_text(20000, name))
        await asyncio.sleep(GAP)
        await echo(ws, name, repetitive_binary(4096))
        await asyncio.sleep(GAP)
        pong = await ws.ping(f"ping-{name}".encode())
        await pong
        await asyncio.sleep(GAP)
        await echo(ws, name, "bye")
        await ws.close(1000, f"{name} done")
        log(name, f"closed code={ws.close_code} reason={ws.close_reason!r} local_port={sport}")
    return 0


FRAGMENTS = (65536, 65536, 16384)


async def fragmented(url: str) -> int:
    name = "golf"
    async with connect(
        url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
        max_size=2**20, open_timeout=5, close_timeout=5,
    ) as ws:
        sport = ws.local_address[1]
        log(name, f"open local_port={sport} subprotocol={ws.subprotocol!r}")
        await echo(ws, name, "hello")
        await asyncio.sleep(GAP)
        await echo(ws, name, f"i-am-{name}")
        await asyncio.sleep(GAP)
        blob = big_binary(sum(FRAGMENTS))

        async def chunks():  # type: ignore[no-untyped-def]
            pos = 0
            for i, n in enumerate(FRAGMENTS):
                if i:
                    pong = await ws.ping(f"frag-ping-{i}".encode())
                    await pong
                    log(name, f"pong frag-ping-{i} between fragments")
                yield blob[pos:pos + n]
                pos += n

        for message in (chunks(), big_text(80000, name)):
            await ws.send(message)
            raw = blob if not isinstance(message, str) else message.encode()
            kind = "binary" if not isinstance(message, str) else "text"
            want = f"got {kind} len={len(raw)} sha256={hashlib.sha256(raw).hexdigest()}"
            reply = await ws.recv()
            if reply != want:
                raise RuntimeError(f"{name}: summary mismatch {reply!r} != {want!r}")
            log(name, f"summary ok {reply}")
            await asyncio.sleep(GAP)
        await ws.send("frag-reply")
        reply = await ws.recv()
        log(name, f"fragmented reply len={len(reply)} head={reply[:40]!r}")
        if len(reply) != 2048:
            raise RuntimeError(f"{name}: fragmented reply of {len(reply)} characters")
        await asyncio.sleep(GAP)
        await echo(ws, name, "bye")
        await ws.close(1000, f"{name} done")
        log(name, f"closed code={ws.close_code} reason={ws.close_reason!r} local_port={sport}")
    return 0


async def many_one(url: str, name: str, start: asyncio.Event) -> None:
    await start.wait()
    async with connect(
        url, subprotocols=["chat"], compression=None, ping_interval=None, proxy=None,
        open_timeout=5, close_timeout=5,
    ) as ws:
        sport = ws.local_address[1]
        log(name, f"open local_port={sport}")
        for message in ("hello", f"i-am-{name}", "same-for-all", b"\x00same-binary\xff"):
            await echo(ws, name, message)
            await asyncio.sleep(GAP)
        await ws.close(1000, f"{name} done")
        log(name, f"closed code={ws.close_code} local_port={sport}")


async def many(url: str, clients: int) -> int:
    start = asyncio.Event()
    names = [f"client-{i:02d}" for i in range(1, clients + 1)]
    tasks = [asyncio.create_task(many_one(url, n, start)) for n in names]
    await asyncio.sleep(0.01)
    start.set()  # all connect at the same time
    results = await asyncio.gather(*tasks, return_exceptions=True)
    bad = [r for r in results if isinstance(r, BaseException)]
    for r in bad:
        log("many", f"error {r!r}")
    return 1 if bad else 0


K8S_CHANNELS = {0: "stdin", 1: "stdout", 2: "stderr", 3: "status", 4: "resize"}


async def k8s(url: str, subprotocols: list[str]) -> int:
    name = "kubectl"
    async with connect(
        url, subprotocols=subprotocols, compression=None, ping_interval=None, proxy=None,
        open_timeout=5, close_timeout=5,
    ) as ws:
        proto = ws.subprotocol or ""
        b64 = proto.endswith("base64.channel.k8s.io")
        log(name, f"open local_port={ws.local_address[1]} subprotocol={proto!r}")

        def encode(channel: int, data: bytes):  # type: ignore[no-untyped-def]
            if b64:
                return str(channel) + base64.b64encode(data).decode()
            return bytes([channel]) + data

        def decode(message) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
            if b64:
                return int(message[0]), base64.b64decode(message[1:])
            return message[0], bytes(message[1:])

        async def expect(channel: int) -> bytes:
            while True:
                ch, data = decode(await ws.recv())
                log(name, f"recv {K8S_CHANNELS.get(ch, ch)} {data!r}")
                if ch == channel and data:
                    return data

        async def send(channel: int, data: bytes) -> None:
            await ws.send(encode(channel, data))
            log(name, f"sent {K8S_CHANNELS[channel]} {data!r}")

        await send(0, b"echo hello\n")
        await expect(1)
        await asyncio.sleep(GAP)
        await send(0, b"ls /nonexistent\n")
        await expect(2)
        await asyncio.sleep(GAP)
        await send(4, json.dumps({"Width": 80, "Height": 24}, separators=(",", ":")).encode())
        await asyncio.sleep(GAP)
        await send(0, b"exit 2\n")
        status = await expect(3)
        log(name, f"status {status.decode()}")
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout=3)
            log(name, f"UNEXPECTED message {msg!r}")
            return 1
        except websockets.ConnectionClosedOK as exc:
            log(name, f"closed by the server: code={exc.rcvd.code if exc.rcvd else None}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("multi", "refused", "idle", "reset", "deflate", "fragmented",
                                     "many", "k8s"))
    ap.add_argument("--url", default="ws://192.0.2.1/ws")
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--no-context-takeover", action="store_true")
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--subprotocol", action="append", default=[])
    ap.add_argument("--before-url", action="append", default=[])
    args = ap.parse_args()
    log("client", f"websockets {websockets.__version__} python {sys.version.split()[0]}")
    if args.mode == "multi":
        return asyncio.run(multi(args.url))
    if args.mode == "deflate":
        return asyncio.run(deflate(args.url, args.no_context_takeover))
    if args.mode == "fragmented":
        return asyncio.run(fragmented(args.url))
    if args.mode == "many":
        return asyncio.run(many(args.url, args.clients))
    if args.mode == "k8s":
        return asyncio.run(k8s(args.url, args.subprotocol))
    if args.mode == "refused":
        rc = 0
        for url in [*args.before_url, args.url]:
            log("refused", f"attempt {url}")
            rc |= asyncio.run(refused(url))
        return rc
    if args.mode == "reset":
        return asyncio.run(reset(args.url, args.idle))
    return asyncio.run(idle(args.url, args.idle))


if __name__ == "__main__":
    sys.exit(main())
