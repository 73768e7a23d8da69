"""pandas DataFrames of an analysis, one declared schema per table.

Every table is tidy and long: one row per connection, frame, message, pair,
header change, message match or finding. Timestamps are ``datetime64[ns, UTC]``;
sizes are bytes (``*_bytes``); delays are milliseconds (``*_ms``, float64);
``direction`` is categorical ``client_to_server`` / ``server_to_client`` relative
to each leg's own client. Empty input gives an empty DataFrame with the declared
columns and dtypes, never None.

This module never opens a capture: it reads the values the pipeline produced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .behaviour import BEHAVIOUR as _BEHAVIOUR
from .catalogue import CATALOGUE
from .closing import story_of
from .correlate import ClockOffset, Correlation
from .model import Direction, Finding, Opcode, Severity
from .pipeline import CaptureAnalysis
from .timing import HANDSHAKE_TIMINGS

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

TS = "datetime64[ns, UTC]"
DIRECTION = pd.CategoricalDtype(["client_to_server", "server_to_client"])
CAPTURE = pd.CategoricalDtype(["client", "server"])
OPCODE = pd.CategoricalDtype(
    ["continuation", "text", "binary", "close", "ping", "pong"]
    + [f"reserved_{v:#x}" for v in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)]
)
SEVERITY = pd.CategoricalDtype(["info", "warning", "error"], ordered=True)
HEADER_MESSAGE = pd.CategoricalDtype(["request", "response"])
CHANGE = pd.CategoricalDtype(["added", "removed", "modified", "mapped"])
STR = "string"

CONNECTIONS: dict[str, Any] = {
    "connection_id": STR,  # unique across both captures, e.g. "client-3"
    "capture": CAPTURE,
    "tcp_index": "int64",  # 1-based TCP connection number in its capture
    "protocol": STR,  # "http" (HTTP/1.x), "h2" (HTTP/2 connection or RFC 8441 stream), "websocket"
    "stream_id": "Int64",  # HTTP/2 stream of an RFC 8441 WebSocket session; <NA> for a TCP connection
    "client": STR,  # "ip:port" of the side that opened the TCP connection
    "server": STR,
    "first_ts": TS,
    "last_ts": TS,
    "syn_seen": "bool",
    "rtt_ms": "float64",  # SYN → ACK of the TCP handshake at the capture point; NaN if unseen
    "method": STR,
    "target": STR,
    "http_version": STR,
    "status": "Int64",  # status of the WebSocket handshake response (or first response)
    "requests": "int64",
    "websocket": "bool",  # RFC 6455 §4.2.2 handshake succeeded
    "subprotocol": STR,
    "extensions": STR,
    "client_to_server_bytes": "int64",  # TCP payload bytes delivered
    "server_to_client_bytes": "int64",
    "client_to_server_frames": "int64",
    "server_to_client_frames": "int64",
    "client_to_server_messages": "int64",
    "server_to_client_messages": "int64",
    "close_code_client_to_server": "Int64",  # first close frame's code each way
    "close_code_server_to_client": "Int64",
    "first_close_from": DIRECTION,  # who sent the first close frame
    "first_fin_from": STR,  # "ip:port" or NA
    "rst_from": STR,  # "ip:port[, ip:port]" or NA
    "closed_by": STR,  # "client", "server" or "unknown": first close frame, FIN or RST
    "close_clean": "boolean",  # both close frames exchanged before the TCP close
    "close_echoed": "boolean",  # the first close frame was answered (RFC 6455 §5.5.1)
    "close_echo_ms": "float64",  # delay of that answer; NaN if none
    "idle_before_close_s": "float64",  # silence before the first close event; NaN if none
    "close_code_at_client": "Int64",  # the code each end reports (RFC 6455 §7.1.5;
    "close_code_at_server": "Int64",  # 1006 when no close frame arrived)
    "open_at_end": "bool",  # no close event before the capture ended
    "close_story": STR,  # one line, see wsanalyze.closing
    "gaps": "int64",
    "gap_bytes": "int64",
    "undecodable_bytes": "int64",
    "findings": "int64",
    "f5_flow_id": "UInt64",  # F5 BIG-IP trailer ids (unsigned 64-bit); <NA> without trailers
    "f5_peer_id": "UInt64",
}

FRAMES: dict[str, Any] = {
    "connection_id": STR,
    "capture": CAPTURE,
    "direction": DIRECTION,
    "ts": TS,  # packet carrying the frame's last byte
    "first_ts": TS,
    "first_packet": "int64",
    "last_packet": "int64",
    "offset": "int64",  # stream offset of the first header byte, bytes
    "fin": "bool",
    "rsv1": "bool",
    "rsv2": "bool",
    "rsv3": "bool",
    "opcode": OPCODE,
    "masked": "bool",
    "masking_key": STR,  # hex, NA when unmasked
    "header_bytes": "int64",
    "payload_bytes": "int64",  # as declared (RFC 6455 §5.2)
    "complete": "bool",
}

MESSAGES: dict[str, Any] = {
    "connection_id": STR,
    "capture": CAPTURE,
    "direction": DIRECTION,
    "message_index": "int64",  # index in the connection's messages (time order)
    "ts": TS,  # last byte
    "first_ts": TS,
    "opcode": OPCODE,
    "frame_count": "int64",
    "payload_bytes": "int64",  # reassembled (RFC 6455 §5.4), decompressed when compressed
    "compressed": "bool",  # RSV1: permessage-deflate (RFC 7692 §6)
    "wire_bytes": "Int64",  # bytes on the wire when compressed, else NA
    "decompressed": "boolean",  # compressed only: False when the context was lost
    "digest": STR,  # BLAKE2b-128 hex of the payload
    "preview": STR,  # first bytes: text as UTF-8 (replacement chars), binary as hex
    "close_code": "Int64",
    "close_reason": STR,
    "utf8_valid": "boolean",
    "complete": "bool",
    "first_packet": "int64",
    "last_packet": "int64",
    "channel": "Int64",  # sub-protocol channel (Kubernetes: 0 stdin, 1 stdout, ...), else NA
    "kind": STR,  # message type in the negotiated sub-protocol ("stdout", "PUBLISH"), else NA
}

TRANSCRIPT: dict[str, Any] = {
    "connection_id": STR,
    "capture": CAPTURE,
    "ts": TS,  # last byte of the message
    "direction": DIRECTION,
    "channel": "Int64",  # sub-protocol channel, NA when the sub-protocol has none
    "kind": STR,  # "stdin", "stdout", "stderr", "status", "resize", "close_stream", ...
    "text": STR,  # decoded content (UTF-8, replacement characters), a few KiB at most
}

PAIRS: dict[str, Any] = {
    "pair_id": STR,
    "client_connection_id": STR,
    "server_connection_id": STR,
    "confidence": "float64",  # 0..1
    "score": "float64",
    "evidence": STR,  # comma-separated evidence names
    "client": STR,  # the client on the client leg, "ip:port"
    "proxy_listener": STR,  # what the client connected to
    "proxy_source": STR,  # the proxy's source on the server leg
    "server": STR,
    "target": STR,
    "client_status": "Int64",
    "server_status": "Int64",
    "websocket_client": "bool",
    "websocket_server": "bool",
    "messages_matched": "int64",
    "header_changes": "int64",
    "client_to_server_delay_p50_ms": "float64",
    "server_to_client_delay_p50_ms": "float64",
}

HEADER_CHANGES: dict[str, Any] = {
    "pair_id": STR,
    "client_connection_id": STR,
    "server_connection_id": STR,
    "message": HEADER_MESSAGE,
    "change": CHANGE,  # in the direction of travel of the message
    "name": STR,
    "client_value": STR,
    "server_value": STR,
}

MESSAGE_MATCHES: dict[str, Any] = {
    "pair_id": STR,
    "direction": DIRECTION,
    "client_connection_id": STR,
    "server_connection_id": STR,
    "client_message_index": "int64",
    "server_message_index": "int64",
    "opcode": OPCODE,
    "payload_bytes": "int64",
    "client_ts": TS,  # on the client capture's clock
    "server_ts": TS,  # on the server capture's clock
    "proxy_delay_ms": "float64",  # corrected by the clock offset
}

FINDINGS: dict[str, Any] = {
    "code": STR,
    "severity": SEVERITY,
    "reference": STR,  # RFC section or "heuristic"
    "detail": STR,
    "connections": STR,  # comma-separated connection ids
    "capture": CAPTURE,  # the capture whose packet numbers "packets" lists
    "packets": STR,  # comma-separated packet numbers
    "direction": DIRECTION,
    "offset": "Int64",
    "ts": TS,
}

SCHEMAS = {
    "connections": CONNECTIONS,
    "frames": FRAMES,
    "messages": MESSAGES,
    "pairs": PAIRS,
    "header_changes": HEADER_CHANGES,
    "message_matches": MESSAGE_MATCHES,
    "findings": FINDINGS,
    "transcript": TRANSCRIPT,
    "handshake_timings": HANDSHAKE_TIMINGS,
    "behaviour": {**_BEHAVIOUR, "direction": DIRECTION},
}


def _frame(columns: dict[str, list[Any] | np.ndarray], schema: dict[str, Any]) -> pd.DataFrame:
    """Build a DataFrame with exactly ``schema``'s columns and dtypes."""
    data = {}
    for name, dtype in schema.items():
        values = columns.get(name, [])
        if dtype == TS:
            data[name] = (
                pd.to_datetime(pd.array(values, dtype="Int64"), unit="ns", utc=True).astype(TS)
                if len(values)
                else pd.Series([], dtype=TS)
            )
        else:
            data[name] = _series(values, dtype) if len(values) else pd.Series([], dtype=dtype)
    return pd.DataFrame(
        {k: v.reset_index(drop=True) if isinstance(v, pd.Series) else v for k, v in data.items()}
    )


def _series(values: list[Any] | np.ndarray, dtype: Any) -> pd.Series:
    """``pd.Series(values, dtype=dtype)``; integers beyond int64 (a length declared
    with the most significant bit set, RFC 6455 §5.2, which ``ws_length_msb_set``
    reports) are clipped to 2^63-1."""
    try:
        return pd.Series(values, dtype=dtype)
    except OverflowError:
        top = (1 << 63) - 1
        return pd.Series([v if v is None or v <= top else top for v in values], dtype=dtype)


def _opcode_names(values: Iterable[int]) -> list[str]:
    names = {v: Opcode.name_of(v) for v in range(16)}
    return [names[v] for v in values]


def _dir_labels(values: Iterable[int]) -> list[str]:
    return ["client_to_server" if v == 0 else "server_to_client" for v in values]


def connections_table(captures: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per TCP connection carrying HTTP/1.x or WebSocket, both captures;
    columns and dtypes in :data:`CONNECTIONS`."""
    cols: dict[str, list[Any]] = {k: [] for k in CONNECTIONS}
    for cap in captures:
        for a in cap.connections:
            t = a.tcp
            hs = a.handshake
            story = story_of(a)
            req, resp = a.exchange
            first_close: dict[int, int | None] = {}
            first_close_ts: dict[int, int] = {}
            for m in a.messages:
                if m.opcode == Opcode.CLOSE and m.direction not in first_close:
                    first_close[m.direction] = m.close_code
                    first_close_ts[m.direction] = m.ts_ns
            msgs = [0, 0]
            for (d, _op), n in a.message_counts().items():
                msgs[d] += n
            fins = [(ts, d) for d, ts in enumerate(t.fin_ts_ns) if ts is not None]
            rsts = [d for d, ts in enumerate(t.rst_ts_ns) if ts is not None]
            ends = (t.client, t.server)
            frames = [0, 0]
            for (d, _op), n in a.frame_counts.items():
                frames[d] += n
            row = {
                "connection_id": a.id,
                "capture": cap.role,
                "tcp_index": t.index,
                "protocol": a.protocol,
                "stream_id": a.stream_id,
                "client": str(t.client),
                "server": str(t.server),
                "first_ts": t.first_ts_ns,
                "last_ts": t.last_ts_ns,
                "syn_seen": t.syn_seen,
                "rtt_ms": (t.rtt_ns / 1e6) if t.rtt_ns is not None else np.nan,
                "method": req.method.decode("latin-1") if req else None,
                "target": req.target.decode("latin-1") if req else None,
                "http_version": req.version.decode("latin-1") if req else None,
                "status": resp.status if resp else None,
                "requests": len(a.requests),
                "websocket": a.websocket,
                "subprotocol": hs.subprotocol if hs else None,
                "extensions": ", ".join(n for n, _ in hs.extensions)
                if hs and hs.extensions
                else None,
                "client_to_server_bytes": t.bytes[0],
                "server_to_client_bytes": t.bytes[1],
                "client_to_server_frames": frames[0],
                "server_to_client_frames": frames[1],
                "client_to_server_messages": msgs[0],
                "server_to_client_messages": msgs[1],
                "close_code_client_to_server": first_close.get(0),
                "close_code_server_to_client": first_close.get(1),
                "first_close_from": _dir_labels([min(first_close_ts, key=first_close_ts.get)])[0]
                if first_close_ts
                else None,
                "first_fin_from": str(ends[min(fins)[1]]) if fins else None,
                "rst_from": ", ".join(str(ends[d]) for d in rsts) or None,
                "closed_by": story.closed_by,
                "close_clean": story.clean if a.websocket else None,
                "close_echoed": story.echoed if story.first_close_from else None,
                "close_echo_ms": _ms(story.echo_delay_ns),
                "idle_before_close_s": np.nan if story.idle_ns is None else story.idle_ns / 1e9,
                "close_code_at_client": story.client_code,
                "close_code_at_server": story.server_code,
                "open_at_end": story.open_at_end,
                "close_story": story.describe(),
                "gaps": t.gaps[0] + t.gaps[1],
                "gap_bytes": t.gap_bytes[0] + t.gap_bytes[1],
                "undecodable_bytes": a.bytes[0].undecodable + a.bytes[1].undecodable,
                "findings": len(a.findings),
                "f5_flow_id": t.f5_flow_id,
                "f5_peer_id": t.f5_peer_id,
            }
            for k, v in row.items():
                cols[k].append(v)
    return _frame(cols, CONNECTIONS)


def frames_table(captures: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per WebSocket frame (RFC 6455 §5.2); columns in :data:`FRAMES`."""
    parts = []
    for cap in captures:
        f = cap.frames
        n = len(f)
        if not n:
            continue
        top = np.uint64((1 << 63) - 1)  # a length with the MSB set (ws_length_msb_set)
        cols: dict[str, Any] = {
            "connection_id": f.connection,
            "capture": [cap.role] * n,
            "direction": _dir_labels(f.direction),
            "ts": np.asarray(f.ts_ns, dtype=np.int64),
            "first_ts": np.asarray(f.first_ts_ns, dtype=np.int64),
            "first_packet": np.asarray(f.first_packet, dtype=np.int64),
            "last_packet": np.asarray(f.last_packet, dtype=np.int64),
            "offset": np.asarray(f.offset, dtype=np.int64),
            "fin": np.asarray(f.fin, dtype=bool),
            "rsv1": np.asarray(f.rsv1, dtype=bool),
            "rsv2": np.asarray(f.rsv2, dtype=bool),
            "rsv3": np.asarray(f.rsv3, dtype=bool),
            "opcode": _opcode_names(f.opcode),
            "masked": np.asarray(f.masked, dtype=bool),
            "masking_key": [None if k < 0 else f"{k:08x}" for k in f.masking_key],
            "header_bytes": np.asarray(f.header_len, dtype=np.int64),
            "payload_bytes": np.minimum(np.asarray(f.payload_len, dtype=np.uint64), top).astype(
                np.int64
            ),
            "complete": np.asarray(f.complete, dtype=bool),
        }
        parts.append(_frame(cols, FRAMES))
    if not parts:
        return _frame({}, FRAMES)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def preview_text(opcode: int, preview: bytes) -> str:
    """A printable preview: text as UTF-8 with replacement characters, a close frame's
    reason (RFC 6455 §5.5.1: after the 2-byte code), binary as hex."""
    if opcode == Opcode.CLOSE:  # the code is in close_code; show the reason only
        return preview[2:].decode("utf-8", "replace")
    if opcode == Opcode.TEXT:
        return preview.decode("utf-8", "replace")
    return preview[:64].hex()


def messages_table(captures: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per WebSocket message or control frame; columns in :data:`MESSAGES`."""
    cols: dict[str, list[Any]] = {k: [] for k in MESSAGES}
    for cap in captures:
        for a in cap.connections:
            for i, m in enumerate(a.messages):
                cols["connection_id"].append(a.id)
                cols["capture"].append(cap.role)
                cols["direction"].append(m.direction.label)
                cols["message_index"].append(i)
                cols["ts"].append(m.ts_ns)
                cols["first_ts"].append(m.first_ts_ns)
                cols["opcode"].append(Opcode.name_of(m.opcode))
                cols["frame_count"].append(m.frame_count)
                cols["payload_bytes"].append(m.payload_len)
                cols["compressed"].append(m.compressed)
                cols["wire_bytes"].append(m.wire_len)
                cols["decompressed"].append(m.decompressed)
                cols["digest"].append(m.digest.hex())
                cols["preview"].append(preview_text(m.opcode, m.preview))
                cols["close_code"].append(m.close_code)
                cols["close_reason"].append(
                    m.close_reason.decode("utf-8", "replace")
                    if m.close_reason is not None
                    else None
                )
                cols["utf8_valid"].append(m.utf8_valid)
                cols["complete"].append(m.complete)
                cols["first_packet"].append(m.first_packet)
                cols["last_packet"].append(m.last_packet)
                cols["channel"].append(m.channel)
                cols["kind"].append(m.kind)
    return _frame(cols, MESSAGES)


def transcript_table(captures: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per message a sub-protocol decoder gave text for (e.g. each stdin,
    stdout, stderr and status message of a ``kubectl exec`` session), in time order
    per connection; columns in :data:`TRANSCRIPT`. Built from
    ``ConnectionAnalysis.transcript`` (bounded per connection by the pipeline)."""
    cols: dict[str, list[Any]] = {k: [] for k in TRANSCRIPT}
    for cap in captures:
        for a in cap.connections:
            for ts_ns, direction, channel, kind, text in a.transcript:
                cols["connection_id"].append(a.id)
                cols["capture"].append(cap.role)
                cols["ts"].append(ts_ns)
                cols["direction"].append(Direction(direction).label)
                cols["channel"].append(channel)
                cols["kind"].append(kind)
                cols["text"].append(text)
    return _frame(cols, TRANSCRIPT)


def _ms(ns: int | None) -> float:
    return np.nan if ns is None else ns / 1e6


def _p50(values: list[float]) -> float:
    return float(np.median(values)) if values else np.nan


def pairs_table(corr: Correlation | None) -> pd.DataFrame:
    """One row per client-side/server-side pair; columns in :data:`PAIRS`."""
    cols: dict[str, list[Any]] = {k: [] for k in PAIRS}
    # θ as a ClockOffset: delays use θ at each message's time when drift was fitted.
    theta = corr.clock_offset if corr and corr.clock_offset else 0
    for p in corr.pairs if corr else []:
        c, s = p.client, p.server
        req, cresp = c.exchange
        sresp = s.exchange[1]
        delays: list[list[float]] = [[], []]
        for m in p.matches:
            delays[m.direction].append(m.delay_ns(theta) / 1e6)
        row = {
            "pair_id": p.id,
            "client_connection_id": c.id,
            "server_connection_id": s.id,
            "confidence": p.confidence,
            "score": p.score,
            "evidence": ", ".join(p.evidence),
            "client": str(c.tcp.client),
            "proxy_listener": str(c.tcp.server),
            "proxy_source": str(s.tcp.client),
            "server": str(s.tcp.server),
            "target": req.target.decode("latin-1") if req else None,
            "client_status": cresp.status if cresp else None,
            "server_status": sresp.status if sresp else None,
            "websocket_client": c.websocket,
            "websocket_server": s.websocket,
            "messages_matched": len(p.matches),
            "header_changes": len(p.header_changes),
            "client_to_server_delay_p50_ms": _p50(delays[0]),
            "server_to_client_delay_p50_ms": _p50(delays[1]),
        }
        for k, v in row.items():
            cols[k].append(v)
    return _frame(cols, PAIRS)


def header_changes_table(corr: Correlation | None) -> pd.DataFrame:
    """One row per header field added, removed or modified by the proxy; columns in
    :data:`HEADER_CHANGES`."""
    cols: dict[str, list[Any]] = {k: [] for k in HEADER_CHANGES}
    for p in corr.pairs if corr else []:
        for h in p.header_changes:
            cols["pair_id"].append(p.id)
            cols["client_connection_id"].append(p.client.id)
            cols["server_connection_id"].append(p.server.id)
            cols["message"].append(h.message)
            cols["change"].append(h.change)
            cols["name"].append(h.name)
            cols["client_value"].append(h.client_value)
            cols["server_value"].append(h.server_value)
    return _frame(cols, HEADER_CHANGES)


def message_matches_table(corr: Correlation | None) -> pd.DataFrame:
    """One row per message seen on both legs, with the proxy delay corrected by the
    clock offset; columns in :data:`MESSAGE_MATCHES`."""
    cols: dict[str, list[Any]] = {k: [] for k in MESSAGE_MATCHES}
    offset: ClockOffset | None = corr.clock_offset if corr else None
    theta = offset if offset else 0  # drift-aware: θ at each message's time
    for p in corr.pairs if corr else []:
        for m in p.matches:
            cols["pair_id"].append(p.id)
            cols["direction"].append(m.direction.label)
            cols["client_connection_id"].append(p.client.id)
            cols["server_connection_id"].append(p.server.id)
            cols["client_message_index"].append(m.client_index)
            cols["server_message_index"].append(m.server_index)
            cols["opcode"].append(Opcode.name_of(m.opcode))
            cols["payload_bytes"].append(m.payload_len)
            cols["client_ts"].append(m.client_ts_ns)
            cols["server_ts"].append(m.server_ts_ns)
            cols["proxy_delay_ms"].append(m.delay_ns(theta) / 1e6)
    return _frame(cols, MESSAGE_MATCHES)


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """One row per finding, worst first; columns in :data:`FINDINGS`."""
    cols: dict[str, list[Any]] = {k: [] for k in FINDINGS}
    for f in sorted(findings, key=lambda f: (-f.severity, f.ts_ns or 0)):
        cols["code"].append(f.code)
        cols["severity"].append(Severity(f.severity).label)
        cols["reference"].append(CATALOGUE[f.code].reference if f.code in CATALOGUE else None)
        cols["detail"].append(f.detail)
        cols["connections"].append(", ".join(f.connections))
        cols["capture"].append(f.capture)
        cols["packets"].append(", ".join(map(str, f.packets)))
        cols["direction"].append(f.direction.label if f.direction is not None else None)
        cols["offset"].append(f.offset)
        cols["ts"].append(f.ts_ns)
    return _frame(cols, FINDINGS)


LADDER: dict[str, Any] = {
    "leg": CAPTURE,  # "client" (client ↔ proxy) or "server" (proxy ↔ server)
    "direction": DIRECTION,
    "ts": TS,  # on the client capture's clock (server leg corrected by the offset)
    "kind": STR,  # request, response, text, binary, ping, pong, close, fin, rst
    "label": STR,
    "payload_bytes": "Int64",
}


def ladder_table(corr: Correlation | None, pair_id: str, *, max_messages: int = 60) -> pd.DataFrame:
    """The events of one pair for a ladder diagram (client | proxy | server): both
    handshakes, messages (the first ``max_messages`` per leg), close frames, FIN and
    RST, with server-leg times moved onto the client capture's clock by the
    estimated offset. Columns in :data:`LADDER`; ``df.attrs["omitted"]`` counts
    messages left out. Raises KeyError for an unknown pair id."""
    if corr is None:
        raise KeyError(pair_id)
    pair = next((p for p in corr.pairs if p.id == pair_id), None)
    if pair is None:
        raise KeyError(pair_id)
    theta = corr.clock_offset.estimate_ns if corr.clock_offset else 0
    cols: dict[str, list[Any]] = {k: [] for k in LADDER}
    omitted = 0

    def add(leg: str, d: int, ts: int, kind: str, label: str, size: int | None) -> None:
        cols["leg"].append(leg)
        cols["direction"].append(_dir_labels([d])[0])
        cols["ts"].append(ts)
        cols["kind"].append(kind)
        cols["label"].append(label)
        cols["payload_bytes"].append(size)

    for leg, conn, shift in (("client", pair.client, 0), ("server", pair.server, theta)):
        for req in conn.requests:
            add(
                leg,
                0,
                req.ts_ns - shift,
                "request",
                f"{req.method.decode('latin-1')} {req.target.decode('latin-1')[:40]}",
                None,
            )
        for resp in conn.responses:
            add(leg, 1, resp.ts_ns - shift, "response", f"{resp.status}", None)
        for i, m in enumerate(conn.messages):
            if i >= max_messages and m.opcode != Opcode.CLOSE:
                omitted += 1
                continue
            name = Opcode.name_of(m.opcode)
            if m.opcode == Opcode.CLOSE:
                label = f"close {m.close_code}"
            else:  # the sub-protocol's message type says more than the opcode
                label = f"{m.kind or name} {m.payload_len}B"
            add(leg, m.direction, m.ts_ns - shift, name, label, m.payload_len)
        t = conn.tcp
        tcp_end = getattr(t, "tcp_end", (True, True))  # an RFC 8441 stream: END_STREAM...
        for d in (0, 1):
            h2 = conn.stream_id is not None and not tcp_end[d]
            if t.fin_ts_ns[d] is not None:
                add(leg, d, t.fin_ts_ns[d] - shift, "fin", "END_STREAM" if h2 else "FIN", None)
            if t.rst_ts_ns[d] is not None:
                add(leg, d, t.rst_ts_ns[d] - shift, "rst", "RST_STREAM" if h2 else "RST", None)
    df = _frame(cols, LADDER).sort_values("ts", kind="stable").reset_index(drop=True)
    df.attrs["omitted"] = omitted
    df.attrs["pair_id"] = pair_id
    return df


# --- documentation: docs/tables.md is generated from SCHEMAS and the text below ------------
# Regenerate with ``python -m wsanalyze.tables > docs/tables.md`` (a test compares them).

DESCRIPTIONS: dict[str, str] = {
    "connections": "One row per TCP connection carrying HTTP/1.x or WebSocket, both captures.",
    "frames": "One row per WebSocket frame (RFC 6455 §5.2), both captures: at most "
    "max_messages (default 1,000,000) per capture; the frame and message counts of the "
    "connections table and of the JSON report include the rest.",
    "messages": "One row per WebSocket message (reassembled, RFC 6455 §5.4) or control frame: "
    "at most max_messages (default 1,000,000) per capture, plus each connection's close "
    "frames; beyond that they are counted (`messages_not_kept` in the JSON report) and an "
    "`analysis_messages_not_kept` finding says from which packet on.",
    "pairs": "One row per pair: a client-side connection and the server-side connection "
    "the proxy opened for it.",
    "header_changes": "One row per header field the proxy added, removed or modified "
    "(request and response of each pair).",
    "message_matches": "One row per message seen on both legs of a pair, with the proxy "
    "delay corrected by the clock offset.",
    "findings": "One row per finding, worst first (codes in wsanalyze.catalogue).",
    "behaviour": "One row per pair and direction: messages the proxy dropped, injected, "
    "modified, re-fragmented, coalesced or split, and pings it answered itself.",
    "handshake_timings": "One row per pair: where the opening handshake's time went "
    "(client connect, proxy forwarding incl. a new server-side connection, server "
    "response, response forwarding), in ms on the client capture's clock.",
    "transcript": "One row per message a sub-protocol decoder gave text for (e.g. the stdin, "
    "stdout, stderr and exit status of a `kubectl exec` session), in time order per "
    "connection.",
    "ladder": "The events of one pair for a ladder diagram: "
    "`tables.ladder_table(analysis.correlation, pair_id)`, drawn by `charts.plot_ladder`; "
    "not exported by `to_parquet`.",
}
"""One line per table of :func:`tables_markdown`."""

_SHARED_DOCS: dict[str, str] = {
    "connection_id": "the connection's id, unique across both captures: "
    '`"<capture>-<tcp_index>"`, e.g. `"client-3"`',
    "capture": "the capture the row comes from: `client` (client ↔ proxy) or `server` "
    "(proxy ↔ server)",
    "direction": "`client_to_server` or `server_to_client`, relative to that leg's own "
    "client (on the server leg the proxy is the client)",
    "ts": "time of the packet carrying the last byte",
    "first_ts": "time of the packet carrying the first byte",
    "first_packet": "1-based number, in its capture, of the packet carrying the first byte",
    "last_packet": "1-based number, in its capture, of the packet carrying the last byte",
    "opcode": "RFC 6455 §5.2 opcode name (`reserved_0x3` ... for reserved opcodes)",
    "pair_id": 'the pair\'s id, `"pair-<n>"`',
    "client_connection_id": "the connection on the client leg (client ↔ proxy)",
    "server_connection_id": "the connection on the server leg (proxy ↔ server)",
}

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "connections": {
        "tcp_index": "1-based TCP connection number in its capture",
        "client": '"ip:port" of the side that opened the TCP connection',
        "server": '"ip:port" of the side that accepted it',
        "first_ts": "time of the connection's first packet",
        "last_ts": "time of the connection's last packet",
        "syn_seen": "the TCP three-way handshake was captured",
        "rtt_ms": "SYN → ACK of the TCP handshake at the capture point; NaN if unseen",
        "method": "method of the first HTTP request (the WebSocket handshake), NA if none",
        "target": "request-target of that request (NOT redacted)",
        "http_version": 'HTTP version of that request, e.g. "HTTP/1.1"',
        "status": "status of the WebSocket handshake response (or first response); NA if none",
        "requests": "HTTP requests seen on the connection",
        "websocket": "RFC 6455 §4.2.2 handshake succeeded (or WebSocket frames recognised "
        "without a captured handshake)",
        "subprotocol": "negotiated Sec-WebSocket-Protocol, NA if none",
        "extensions": "negotiated extension names, comma-separated, NA if none",
        "client_to_server_bytes": "TCP payload bytes delivered, client to server",
        "server_to_client_bytes": "TCP payload bytes delivered, server to client",
        "client_to_server_frames": "WebSocket frames, client to server",
        "server_to_client_frames": "WebSocket frames, server to client",
        "client_to_server_messages": "WebSocket messages and control frames, client to server",
        "server_to_client_messages": "WebSocket messages and control frames, server to client",
        "close_code_client_to_server": "code of the first close frame client to server; NA if "
        "none or no code",
        "close_code_server_to_client": "code of the first close frame server to client; NA if "
        "none or no code",
        "first_close_from": "direction of the first close frame; NA without close frames",
        "first_fin_from": '"ip:port" that sent the first FIN; NA if none',
        "rst_from": '"ip:port[, ip:port]" that sent a RST; NA if none',
        "closed_by": '"client", "server" or "unknown": sender of the first close frame, FIN or RST',
        "close_clean": "both close frames exchanged before the TCP close (WebSocket only, else NA)",
        "close_echoed": "the first close frame was answered (RFC 6455 §5.5.1); NA without "
        "close frames",
        "close_echo_ms": "delay of that answer; NaN if none",
        "idle_before_close_s": "silence before the first close event, seconds; NaN if none",
        "close_code_at_client": "the close code the client end reports (RFC 6455 §7.1.5: "
        "1005 no code, 1006 when no close frame arrived); NA if not closed",
        "close_code_at_server": "the close code the server end reports (same rules)",
        "open_at_end": "no close event before the capture ended",
        "close_story": "how the connection ended, one line (see wsanalyze.closing)",
        "gaps": "TCP sequence holes (bytes never captured), both directions",
        "gap_bytes": "bytes in those holes",
        "undecodable_bytes": "bytes seen but not decodable as HTTP/1.x or WebSocket, both "
        "directions",
        "findings": "findings attached to this connection",
        "protocol": "`http` (HTTP/1.x), `websocket` (frames recognised without a captured "
        "handshake), `h2`: an HTTP/2 connection (RFC 9113) or one of its RFC 8441 WebSocket "
        "streams, which are listed as sessions of their own",
        "stream_id": "the HTTP/2 stream id of an RFC 8441 WebSocket session (its id is the "
        "connection's plus `-s<stream id>`; endpoints, `tcp_index` and `rtt_ms` are its TCP "
        "connection's; bytes, times and the close story are the stream's: END_STREAM counts "
        "as a FIN, RST_STREAM as a RST); NA for a TCP connection",
        "f5_flow_id": "F5 BIG-IP trailer (`tcpdump -i 0.0:nn` or `:nnn` on a BIG-IP): the "
        "first non-zero flow id of the connection (Wireshark `f5ethtrailer.flowid`); NA "
        "without trailers",
        "f5_peer_id": "the first non-zero peer id: the flow id of the connection on the other "
        "side of the BIG-IP (`f5ethtrailer.peerid`), which pairs the legs; NA if none",
    },
    "frames": {
        "ts": "time of the packet carrying the frame's last byte",
        "first_ts": "time of the packet carrying the frame's first byte",
        "offset": "stream offset of the first header byte in its direction, bytes",
        "fin": "FIN bit: last frame of a message",
        "rsv1": "RSV1 bit (permessage-deflate: compressed message, RFC 7692 §6)",
        "rsv2": "RSV2 bit",
        "rsv3": "RSV3 bit",
        "masked": "MASK bit (client frames must be masked, RFC 6455 §5.3)",
        "masking_key": "masking key, hex; NA when unmasked",
        "header_bytes": "frame header length, bytes (2 to 14)",
        "payload_bytes": "payload length as declared in the header (RFC 6455 §5.2)",
        "complete": "the whole frame was captured (False when a gap or the capture end cut it)",
    },
    "messages": {
        "message_index": "index in the connection's messages, both directions, time order "
        "(what `message_matches` refers to)",
        "ts": "time of the packet carrying the message's last byte",
        "first_ts": "time of the packet carrying the message's first byte",
        "frame_count": "frames the message was made of",
        "payload_bytes": "reassembled payload length (RFC 6455 §5.4), decompressed when compressed",
        "compressed": "RSV1 set: permessage-deflate (RFC 7692 §6)",
        "wire_bytes": "payload bytes on the wire when compressed, else NA",
        "decompressed": "compressed only: False when the deflate context was lost; else NA",
        "digest": "BLAKE2b-128 of the payload, hex (matches a message across the proxy)",
        "preview": "first bytes of the payload: text as UTF-8 (replacement characters), a close "
        "frame's reason, binary as hex (NOT redacted)",
        "close_code": "close frames: the status code; else NA",
        "close_reason": "close frames: the reason; else NA",
        "utf8_valid": "text messages and close reasons: valid UTF-8 (RFC 6455 §8.1); else NA",
        "complete": "the whole message was captured (False when a gap cut it)",
        "channel": "sub-protocol channel (Kubernetes: 0 stdin, 1 stdout, 2 stderr, 3 status, "
        "4 resize), else NA",
        "kind": 'message type in the negotiated sub-protocol ("stdout", "PUBLISH"), else NA',
    },
    "pairs": {
        "confidence": "confidence of the pairing, 0..1 (grows with `score`)",
        "score": "sum of the evidence scores (see wsanalyze.correlate)",
        "evidence": "comma-separated names of the evidence that matched",
        "client": 'the client on the client leg, "ip:port"',
        "proxy_listener": 'what the client connected to (the proxy), "ip:port"',
        "proxy_source": 'the proxy\'s source address on the server leg, "ip:port"',
        "server": 'the server on the server leg, "ip:port"',
        "target": "request-target on the client leg (NOT redacted)",
        "client_status": "handshake response status on the client leg; NA if none",
        "server_status": "handshake response status on the server leg; NA if none",
        "websocket_client": "the client leg became a WebSocket",
        "websocket_server": "the server leg became a WebSocket",
        "messages_matched": "messages seen on both legs (rows of `message_matches`)",
        "header_changes": "header fields changed by the proxy (rows of `header_changes`)",
        "client_to_server_delay_p50_ms": "median proxy delay, client to server, ms; NaN if "
        "no message",
        "server_to_client_delay_p50_ms": "median proxy delay, server to client, ms; NaN if "
        "no message",
    },
    "header_changes": {
        "message": "`request` or `response` (of the WebSocket handshake)",
        "change": "`added`, `removed` or `modified`, in the direction of travel of the message",
        "name": "header field name as on the wire",
        "client_value": "value on the client leg; NA when absent there (NOT redacted)",
        "server_value": "value on the server leg; NA when absent there (NOT redacted)",
    },
    "message_matches": {
        "client_message_index": "`message_index` of the message on the client leg",
        "server_message_index": "`message_index` of the message on the server leg",
        "payload_bytes": "payload length, bytes",
        "client_ts": "time of the message on the client leg, client capture's clock",
        "server_ts": "time of the message on the server leg, server capture's clock",
        "proxy_delay_ms": "time the proxy took to forward it (seen on the outgoing leg minus seen "
        "on the incoming leg), ms, corrected by the clock offset",
    },
    "findings": {
        "code": "stable snake_case code (wsanalyze.catalogue explains each)",
        "severity": "`info` < `warning` < `error` (ordered: `findings[findings.severity >= "
        '"warning"]` works)',
        "reference": 'RFC section or "heuristic"',
        "detail": "one line, `expected=..., found=...` where that applies (NOT redacted)",
        "connections": "comma-separated connection ids",
        "capture": 'the capture whose packet numbers "packets" lists; NA if none',
        "packets": "comma-separated 1-based packet numbers (evidence)",
        "direction": "direction the finding is about; NA if none",
        "offset": "stream offset in that direction, bytes; NA if none",
        "ts": "time of the evidence; NaT if none",
    },
    "transcript": {
        "ts": "time of the packet carrying the message's last byte",
        "channel": "sub-protocol channel, NA when the sub-protocol has none",
        "kind": '"stdin", "stdout", "stderr", "status", "resize", "close_stream", ...',
        "text": "decoded content (UTF-8, replacement characters), a few KiB at most (NOT redacted)",
    },
    "behaviour": {
        "dropped": "messages on the source leg with no copy on the other leg",
        "injected": "messages on the destination leg that the source leg never sent",
        "modified": "messages forwarded with different content (same position, same opcode)",
        "refragmented": "messages forwarded in a different number of frames (legal, RFC 6455 §5.4)",
        "coalesced": "groups of source messages forwarded as one message",
        "split": "source messages forwarded as several messages",
        "pings_answered_by_proxy": "pings the proxy answered itself, without forwarding them",
    },
    "handshake_timings": {
        "client_connect_ms": "client leg TCP handshake, SYN → ACK (one round trip)",
        "proxy_request_ms": "client-leg request complete → server-leg request complete, "
        "including the proxy's new server-side TCP connect",
        "server_connect_ms": "server leg TCP handshake, SYN → ACK",
        "server_connection_new": "the proxy opened the server-side connection for this "
        "request (NA when its SYN was not captured)",
        "server_response_ms": "server leg: request → response (the server's own time)",
        "response_forward_ms": "server-leg response → client-leg response (the proxy)",
        "client_rtt_ms": "round trip of the client leg's TCP handshake",
        "server_rtt_ms": "round trip of the server leg's TCP handshake",
    },
    "ladder": {
        "leg": '"client" (client ↔ proxy) or "server" (proxy ↔ server)',
        "ts": "on the client capture's clock (server leg moved by the clock offset)",
        "kind": "request, response, text, binary, ping, pong, close, fin, rst",
        "label": "the arrow's label",
        "payload_bytes": "messages: payload length; else NA",
    },
}
"""Per table, a description of each column (``_SHARED_DOCS`` for columns that mean
the same in every table)."""


def column_doc(table: str, column: str) -> str:
    """The description of ``column`` of ``table`` ("" when undocumented)."""
    return COLUMN_DOCS.get(table, {}).get(column) or _SHARED_DOCS.get(column, "")


def _dtype_doc(dtype: Any) -> str:
    if isinstance(dtype, pd.CategoricalDtype):
        cats = " < " if dtype.ordered else ", "
        kind = "ordered categorical" if dtype.ordered else "categorical"
        return f"{kind}: {cats.join(f'`{c}`' for c in dtype.categories)}"
    return f"`{dtype}`"


def tables_markdown() -> str:
    """docs/tables.md: every table of :data:`SCHEMAS` (and the ladder table) with its
    columns, dtypes and descriptions."""
    out = [
        "# Tables",
        "",
        "<!-- Generated by `python -m wsanalyze.tables > docs/tables.md` from "
        "wsanalyze/tables.py; do not edit by hand. -->",
        "",
        "`wsanalyze.analyze(client, server)` returns an `Analysis` whose attributes "
        "below are pandas DataFrames with exactly these columns, in this order, with "
        "these dtypes, also when empty (never None). `Analysis.tables()` returns them "
        "all by name; `Analysis.to_parquet(directory)` writes each to "
        "`<table>.parquet`.",
        "",
        "Conventions:",
        "",
        "- timestamps are `datetime64[ns, UTC]` (`NaT` when unknown); sizes are bytes "
        "(`*_bytes`); delays are milliseconds (`*_ms`, `float64`, `NaN` when unknown);",
        "- `string` is pandas' nullable string dtype, `Int64` and `boolean` are nullable "
        "(`<NA>` when not applicable); `int64` and `bool` columns are never NA, `float64` "
        "columns use `NaN`;",
        "- `direction` is relative to each leg's own client: on the server leg the proxy "
        "is the client;",
        "- the tables are NOT redacted: targets, header values, previews and transcripts "
        "are as captured (the reports, `Analysis.summary()` and the notebook display "
        "redact credentials);",
        "- Parquet cannot store the categories of a categorical column in a table with "
        "no rows: `pd.read_parquet` then gives an empty category list, "
        "`Analysis.read_parquet(directory)` restores the declared dtypes.",
        "",
    ]
    names = [*SCHEMAS, "ladder"]
    out.append("| table | description |")
    out.append("|---|---|")
    for name in names:
        out.append(f"| [`{name}`](#{name}) | {DESCRIPTIONS[name]} |")
    out.append("")
    for name in names:
        schema = SCHEMAS.get(name, LADDER)
        attr = f"`Analysis.{name}`" if name in SCHEMAS else "`tables.ladder_table(...)`"
        out += [f"## {name}", "", f"{attr}: {DESCRIPTIONS[name]}", ""]
        out += ["| column | dtype | description |", "|---|---|---|"]
        for col, dtype in schema.items():
            doc = column_doc(name, col).replace("|", "\\|")
            out.append(f"| `{col}` | {_dtype_doc(dtype)} | {doc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(tables_markdown())
