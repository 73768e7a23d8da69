#!/usr/bin/env python3
"""Real WebSocket clients used by make_captures.sh (runs in netns wsa-client).

Modes:
  multi    three concurrent clients (alpha, bravo, charlie) on the same URL, sub-protocol
           "chat" offered. Each: "hello" (identical across clients), a unique token
           "i-am-<name>", "push" (server answers echo + JSON), one binary message, one
           ping, "bye", close 1000. alpha also sends a 5000-byte text and a 70000-byte
           binary message (64-bit payload length).
  refused  one attempt that the server side is expected to refuse; the exception is
           printed and the exit status is 0.
  idle     one client: "hello", then silent for --idle seconds; records how the
           connection ends (the proxy's idle timeout).
  reset    one client (delta) against a server started with --reset-after 2: "hello",
           "i-am-delta" (both echoed), then waits up to --idle seconds and records how the
           proxy ends the client leg after the backend's TCP RST.

Every message is awaited (echo received) before the next is sent, so per-connection
order is deterministic; the clients still run concurrently. Prints one line per event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import websockets
from websockets.asyncio.client import connect

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("multi", "refused", "idle", "reset"))
    ap.add_argument("--url", default="ws://192.0.2.1/ws")
    ap.add_argument("--idle", type=float, default=5.0)
    args = ap.parse_args()
    log("client", f"websockets {websockets.__version__} python {sys.version.split()[0]}")
    if args.mode == "multi":
        return asyncio.run(multi(args.url))
    if args.mode == "refused":
        return asyncio.run(refused(args.url))
    if args.mode == "reset":
        return asyncio.run(reset(args.url, args.idle))
    return asyncio.run(idle(args.url, args.idle))


if __name__ == "__main__":
    sys.exit(main())
