#!/usr/bin/env python3
"""A tiny cleartext HTTP/2 (prior knowledge, "h2c") server written with the `h2` library, for
the haproxy-h2-no-connect-protocol and haproxy-h2-rst scenarios of make_captures.sh (runs
in netns wsa-server). It never speaks WebSocket: it shows what HAProxy (`proto h2` on the
server line) does when a backend cannot or will not take an RFC 8441 extended CONNECT.

    PYTHON h2_plain_server.py --mode no-connect-protocol|refuse [--host H] [--port P]

Needs a Python >= 3.11 with `h2` (4.x; it comes with hypercorn).

--mode no-connect-protocol
    The server's SETTINGS frame does NOT carry SETTINGS_ENABLE_CONNECT_PROTOCOL (h2 would
    send it with the value 0: it is removed from the local settings before the connection
    preface), like an HTTP/2 server without RFC 8441 support (Istio/Envoy before it was enabled, many gRPC servers). Ordinary requests get a
    200 with a short text body. An extended CONNECT (`:protocol` present) is treated as RFC
    8441 §3 says a server that does not know the setting would: a malformed request, so the
    stream is reset with RST_STREAM PROTOCOL_ERROR (if a peer ever sends one). A frame the
    h2 state machine rejects (e.g. a RST_STREAM for a stream that was never opened) is a
    connection error: h2 queues a GOAWAY PROTOCOL_ERROR, which is sent before the socket is
    closed.
--mode refuse
    SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 is advertised, but every extended CONNECT is
    refused: on a path ending in "/forbidden" with a `:status 403` response (HEADERS, then a
    DATA frame with a short body and END_STREAM), on any other path with RST_STREAM
    REFUSED_STREAM (error code 0x7) before any response.

Every other setting is the h2 library's default (initial window 65535, max frame size
16384, header table 4096, max concurrent streams 100 as advertised by h2). Logs one line
per event on stdout (flushed), used in run.log as ground truth.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import signal
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

MODE = "no-connect-protocol"


def log(msg: str) -> None:
    print(f"{time.time():.6f} server {msg}", flush=True)


class H2Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = "{}:{}".format(*transport.get_extra_info("peername")[:2])
        settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
        if MODE == "refuse":
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        if MODE == "no-connect-protocol":
            # h2 would send ENABLE_CONNECT_PROTOCOL = 0 explicitly: leave it out altogether
            del self.conn.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        self.conn.initiate_connection()
        log(f"connection {self.peer} settings={ {k.name: v for k, v in settings.items()} }")
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log(f"protocol error {self.peer}: {exc!r} (GOAWAY)")
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                log(f"remote settings {self.peer} "
                    + str({k.name if hasattr(k, 'name') else k: v.new_value
                           for k, v in ev.changed_settings.items()}))
            elif isinstance(ev, h2.events.RequestReceived):
                self.request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                log(f"data {self.peer} stream={ev.stream_id} len={len(ev.data)}")
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                log(f"stream reset by peer {self.peer} stream={ev.stream_id} code={ev.error_code!r}")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                log(f"goaway from {self.peer} code={ev.error_code!r} last_stream={ev.last_stream_id}")
            elif isinstance(ev, h2.events.StreamEnded):
                log(f"stream ended by peer {self.peer} stream={ev.stream_id}")
        self.flush()

    def request(self, ev: h2.events.RequestReceived) -> None:
        headers = [(k, v) for k, v in ev.headers]
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        sid = ev.stream_id
        log(f"request {self.peer} stream={sid} headers={headers}")
        if pseudo.get(":method") == "CONNECT" and ":protocol" in pseudo:
            if MODE == "no-connect-protocol":
                # RFC 8441 §3: without the setting, :protocol makes the request malformed
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.PROTOCOL_ERROR)
                log(f"reset {self.peer} stream={sid} PROTOCOL_ERROR (extended CONNECT not supported)")
            elif pseudo.get(":path", "").split("?")[0].endswith("/forbidden"):
                body = b"WebSocket over HTTP/2 forbidden here\n"
                self.conn.send_headers(sid, [(":status", "403"), ("content-type", "text/plain"),
                                             ("content-length", str(len(body)))])
                self.conn.send_data(sid, body, end_stream=True)
                log(f"refused {self.peer} stream={sid} with 403")
            else:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                log(f"reset {self.peer} stream={sid} REFUSED_STREAM")
            return
        body = f"h2 server ({MODE}): {pseudo.get(':method')} {pseudo.get(':path')}\n".encode()
        self.conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"),
                                     ("content-length", str(len(body)))])
        self.conn.send_data(sid, body, end_stream=True)
        log(f"answered {self.peer} stream={sid} 200")

    def connection_lost(self, exc: Exception | None) -> None:
        log(f"connection lost {self.peer} {exc!r}")


async def main() -> None:
    global MODE
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="198.51.100.10")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mode", choices=("no-connect-protocol", "refuse"), default="no-connect-protocol")
    args = ap.parse_args()
    MODE = args.mode
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(H2Server, args.host, args.port)
    log(f"listening {args.host}:{args.port} h2c prior knowledge mode={MODE} "
        f"h2 {importlib.metadata.version('h2')} python {sys.version.split()[0]}")
    await stop.wait()
    server.close()
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
