"""wsanalyze.http2: the sans-IO HTTP/2 connection decoder (RFC 9113) for a passive
observer, fed traffic built with the h2 library (and by hand with hyperframe/hpack for
what h2 refuses to send), and the real HAProxy -> Hypercorn captures, cross-checked
with tshark."""

from __future__ import annotations

import base64
import random
import shutil
import struct
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings
from hyperframe.frame import (
    ContinuationFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    SettingsFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsanalyze.capture import open_capture
from wsanalyze.catalogue import CATALOGUE
from wsanalyze.http2 import (
    ERROR_CODES,
    PREFACE,
    SETTINGS_NAMES,
    H2Data,
    H2DataGap,
    H2GoAway,
    H2Headers,
    H2Ping,
    H2Preface,
    H2RstStream,
    H2Settings,
    H2WindowUpdate,
    Http2Connection,
    error_name,
    looks_like_h2,
)
from wsanalyze.model import Direction, Finding
from wsanalyze.tcp import TcpConnection, TcpReassembler

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
T0 = 1_700_000_000_000_000_000
STEP = 100_000  # ns between two segments of a built conversation
ROOT = Path(__file__).resolve().parents[1]
H2_CAPTURES = ROOT / "captures" / "h2"

CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/ws"),
    (b":authority", b"example"),
]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"example")]

# A segment is (direction, bytes, ts_ns), or (direction, gap length, ts_ns) for a gap.
Segment = tuple[Direction, Any, int]


# --- building traffic ---------------------------------------------------------------


class Conv:
    """A client and a server h2 endpoint; each flush of an endpoint's output is one
    TCP segment of the conversation (STEP ns apart)."""

    def __init__(
        self,
        *,
        client_settings: dict[int, int] | None = None,
        server_settings: dict[int, int] | None = None,
        upgrade: bool = False,
    ) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.client.local_settings = Settings(client=True, initial_values=client_settings or {})
        self.server.local_settings = Settings(
            client=False,
            initial_values={SettingCodes.ENABLE_CONNECT_PROTOCOL: 1, **(server_settings or {})},
        )
        self.segments: list[Segment] = []
        self.ts = T0
        self.settings_header = b""
        if upgrade:
            header = self.client.initiate_upgrade_connection()
            assert header is not None
            self.settings_header = base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4))
            self.server.initiate_upgrade_connection(header)
        else:
            self.client.initiate_connection()
            self.server.initiate_connection()
        self.pump()

    def pump(self) -> None:
        while True:
            moved = False
            for d, src, dst in ((C2S, self.client, self.server), (S2C, self.server, self.client)):
                data = src.data_to_send()
                if data:
                    self.ts += STEP
                    self.segments.append((d, data, self.ts))
                    dst.receive_data(data)
                    moved = True
            if not moved:
                return

    def raw(self, d: Direction, data: bytes) -> None:
        """Bytes the endpoints never see (frames h2 would refuse to send)."""
        self.ts += STEP
        self.segments.append((d, data, self.ts))

    def wait(self, ns: int) -> None:
        self.ts += ns

    def stream(self, d: Direction) -> bytes:
        return b"".join(s[1] for s in self.segments if s[0] == d)


WS_CLIENT = bytes(range(1, 200)) * 3  # payload bytes (no 0x00: no frame-like runs)
WS_SERVER = b"x" * 20000  # split into 16384 + 3616 byte DATA frames


def exchange() -> Conv:
    """An RFC 8441 WebSocket stream and the frames around it: SETTINGS, extended
    CONNECT, 200, DATA both ways (one padded, one over two frames), WINDOW_UPDATE,
    PING, a plain GET (stream 3), a reset stream (5), END_STREAM, GOAWAY."""
    cv = Conv()
    cv.client.send_headers(1, CONNECT)
    cv.pump()
    cv.server.send_headers(1, [(b":status", b"200")])
    cv.pump()
    cv.client.send_data(1, WS_CLIENT[:300])
    cv.client.send_data(1, WS_CLIENT[300:], pad_length=7)
    cv.pump()
    cv.server.send_data(1, WS_SERVER[:16384])
    cv.server.send_data(1, WS_SERVER[16384:])
    cv.pump()
    cv.client.increment_flow_control_window(20000)
    cv.client.increment_flow_control_window(20000, stream_id=1)
    cv.pump()
    cv.client.ping(b"pingpong")
    cv.pump()
    cv.client.send_headers(3, GET, end_stream=True)
    cv.pump()
    cv.server.send_headers(3, [(b":status", b"404"), (b"content-length", b"0")], end_stream=True)
    cv.pump()
    cv.client.send_headers(5, GET)
    cv.client.reset_stream(5, 8)
    cv.pump()
    cv.client.send_data(1, b"", end_stream=True)
    cv.server.send_data(1, b"bye", end_stream=True)
    cv.pump()
    cv.server.close_connection(0)
    cv.pump()
    return cv


_EXCHANGE: Conv | None = None


def the_exchange() -> Conv:
    global _EXCHANGE
    if _EXCHANGE is None:
        _EXCHANGE = exchange()
    return _EXCHANGE


def frame(f: Any) -> bytes:
    return bytes(f.serialize())


def hblock(headers: Iterable[tuple[bytes, bytes]], enc: hpack.Encoder | None = None) -> bytes:
    return (enc or hpack.Encoder()).encode(list(headers))


def raw_header(length: int, ftype: int, flags: int, sid: int) -> bytes:
    return struct.pack("!HBBBL", length >> 8, length & 0xFF, ftype, flags, sid)


def server_preamble() -> bytes:
    return frame(SettingsFrame(0, settings={8: 1}))


def client_preamble() -> bytes:
    return PREFACE + frame(SettingsFrame(0))


# --- decoding -------------------------------------------------------------------------


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(seed: int) -> Callable[[bytes], list[bytes]]:
    rnd = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        out, i = [], 0
        while i < len(data):
            k = rnd.choice((1, 2, 3, 5, 8, 9, 10, 17, 100, 1000, 5000))
            out.append(data[i : i + k])
            i += k
        return out

    return split


class Run:
    """Decodes segments and checks the byte accounting after every call."""

    def __init__(self, **kwargs: Any) -> None:
        self.h2 = Http2Connection(**kwargs)
        self.events: list[Any] = []
        self.fed = [0, 0]
        self.gaps = [0, 0]
        self.packet = 0

    def check(self) -> None:
        h = self.h2
        for d in (0, 1):
            assert (
                h.decoded_bytes[d] + h.undecodable_bytes[d] + h.gap_bytes[d] + h.buffered_bytes[d]
                == self.fed[d] + self.gaps[d]
            ), (d, h.decoded_bytes, h.undecodable_bytes, h.gap_bytes, h.buffered_bytes)
            assert h.fed_bytes[d] == self.fed[d]
            assert min(h.decoded_bytes[d], h.undecodable_bytes[d], h.buffered_bytes[d]) >= 0

    def feed(self, d: Direction, data: bytes, ts: int, chunker=whole) -> None:
        self.packet += 1
        for piece in chunker(data):
            self.fed[d] += len(piece)
            self.events += self.h2.feed(d, piece, ts, self.packet)
            self.check()

    def gap(self, d: Direction, length: int, ts: int) -> None:
        self.packet += 1
        self.gaps[d] += length
        self.events += self.h2.gap(d, length, ts, self.packet)
        self.check()

    def eof(self, ts: int) -> None:
        self.events += self.h2.eof(ts)
        self.check()
        assert self.h2.buffered_bytes == (0, 0)

    def run(self, segments: Iterable[Segment], chunker=whole, eof: bool = True) -> Run:
        ts = T0
        for d, data, ts in segments:
            if isinstance(data, int):
                self.gap(d, data, ts)
            else:
                self.feed(d, data, ts, chunker)
        if eof:
            self.eof(ts + 1_000_000)
        return self

    # -- views -----------------------------------------------------------------------

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if type(e) is kind]

    def codes(self) -> list[str]:
        return [e.code for e in self.events if isinstance(e, Finding)]

    def data(self) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = defaultdict(bytes)
        for e in self.of(H2Data):
            out[(int(e.direction), e.stream_id)] += e.data
        return dict(out)

    def headers(self, d: Direction | None = None) -> list[H2Headers]:
        return [e for e in self.of(H2Headers) if d is None or e.direction == d]


def decode(segments: Iterable[Segment], chunker=whole, **kwargs: Any) -> Run:
    return Run(**kwargs).run(segments, chunker)


def summary(r: Run) -> tuple:
    """What must not depend on how the bytes were chunked: every event but DATA per
    direction (without times and packet numbers), the DATA bytes per stream, where
    streams ended, and the frame counts."""
    events: tuple[list[Any], list[Any]] = ([], [])
    ends: Counter[tuple[int, int]] = Counter()
    for e in r.events:
        if isinstance(e, H2Data):
            if e.end_stream:
                ends[(int(e.direction), e.stream_id)] += 1
            continue
        if isinstance(e, Finding):
            item: Any = ("finding", e.code, e.offset)
        elif isinstance(e, H2Headers):
            item = (
                "headers",
                e.stream_id,
                e.headers,
                e.end_stream,
                e.reliable,
                e.offset,
                e.length,
                e.promised_stream_id,
            )
        else:
            fields = {k: getattr(e, k) for k in e.__slots__ if k not in ("ts_ns", "packet")}
            item = (type(e).__name__, tuple(sorted(fields.items())))
        events[int(e.direction) if e.direction is not None else 0].append(item)
    return (events, r.data(), ends, dict(r.h2.frame_counts))


def data_events_offsets(r: Run) -> None:
    """data_offset of consecutive H2Data chunks of one frame are contiguous."""
    nxt: dict[int, int] = {}
    for e in r.of(H2Data):
        if e.offset in nxt:
            assert e.data_offset == nxt[e.offset]
        nxt[e.offset] = e.data_offset + len(e.data)


# --- the exchange ----------------------------------------------------------------------


class TestExchange:
    """RFC 9113 §3.4, §4, §6, RFC 8441 §3-§5: a clean connection decodes completely."""

    def test_events(self):
        cv = the_exchange()
        r = decode(cv.segments)
        h = r.h2
        assert r.codes() == []
        assert h.undecodable_bytes == [0, 0]
        assert h.decoded_bytes == [len(cv.stream(C2S)), len(cv.stream(S2C))]
        (preface,) = r.of(H2Preface)
        assert preface.direction == C2S and preface.offset == 0
        sets = r.of(H2Settings)
        assert [(s.direction, s.ack) for s in sets if not s.ack] == [(C2S, False), (S2C, False)]
        assert sum(s.ack for s in sets) == 2
        assert h.enable_connect_protocol == [False, True]  # h2 clients send 0
        assert h.settings[1][8] == 1
        connect = r.headers(C2S)[0]
        assert (connect.stream_id, connect.reliable, connect.end_stream) == (1, True, False)
        assert connect.headers == tuple(CONNECT)
        # preface, SETTINGS (9 + 6 per parameter), SETTINGS ACK (9), then the HEADERS
        assert connect.offset == len(PREFACE) + 9 + 6 * len(sets[0].settings) + 9
        resp = r.headers(S2C)[0]
        assert resp.headers == ((b":status", b"200"),) and resp.stream_id == 1
        assert resp.length > 9 and resp.packets[0] <= resp.packets[1]
        get = r.headers(C2S)[1]
        assert get.stream_id == 3 and get.end_stream and get.headers == tuple(GET)
        assert r.headers(S2C)[1].headers == ((b":status", b"404"), (b"content-length", b"0"))
        assert all(e.reliable for e in r.of(H2Headers))
        assert r.data() == {
            (0, 1): WS_CLIENT,
            (1, 1): WS_SERVER + b"bye",
        }
        ends = [(e.direction, e.stream_id) for e in r.of(H2Data) if e.end_stream]
        assert ends == [(C2S, 1), (S2C, 1)]
        empty_end = [e for e in r.of(H2Data) if e.end_stream and e.direction == C2S]
        assert empty_end[0].data == b""
        wu = r.of(H2WindowUpdate)
        assert [(e.direction, e.stream_id, e.increment) for e in wu] == [
            (C2S, 0, 20000),
            (C2S, 1, 20000),
        ]
        pings = r.of(H2Ping)
        assert [(p.direction, p.ack, p.opaque_data) for p in pings] == [
            (C2S, False, b"pingpong"),
            (S2C, True, b"pingpong"),
        ]
        (rst,) = r.of(H2RstStream)
        assert (rst.direction, rst.stream_id, rst.error_code) == (C2S, 5, 8)
        assert error_name(rst.error_code) == "CANCEL"
        (goaway,) = r.of(H2GoAway)
        assert (goaway.direction, goaway.error_code, goaway.last_stream_id) == (S2C, 0, 5)
        assert h.frame_counts[(0, 1)] == 3 and h.frame_counts[(1, 1)] == 2
        assert h.frame_counts[(1, 0)] == 3  # 16384 + 3616 + "bye"
        assert h.frame_counts[(0, 0)] == 3  # 300, padded rest, empty END_STREAM
        assert h.frame_counts[(1, 7)] == 1 and h.frame_counts[(0, 3)] == 1
        assert h.stalls == []
        data_events_offsets(r)

    def test_data_offsets_point_into_the_stream(self):
        cv = the_exchange()
        r = decode(cv.segments)
        streams = {d: cv.stream(d) for d in (C2S, S2C)}
        for e in r.of(H2Data):
            s = streams[e.direction]
            assert s[e.data_offset : e.data_offset + len(e.data)] == e.data
            assert s[e.offset + 3] == 0  # the frame header's type: DATA

    @pytest.mark.parametrize(
        "chunker",
        [bytewise, random_chunks(1), random_chunks(2), random_chunks(3)],
        ids=["bytewise", "random1", "random2", "random3"],
    )
    def test_chunking_does_not_change_the_result(self, chunker):
        cv = the_exchange()
        ref = decode(cv.segments)
        r = decode(cv.segments, chunker)
        assert summary(r) == summary(ref)
        data_events_offsets(r)

    def test_each_direction_fed_at_once(self):
        cv = the_exchange()
        ref = decode(cv.segments)
        at_once = [(C2S, cv.stream(C2S), T0), (S2C, cv.stream(S2C), T0 + 1)]
        r = decode(at_once)
        assert summary(r) == summary(ref)

    def test_a_large_data_frame_is_streamed(self):
        cv = the_exchange()
        big_off = next(f[0] for f in find_frames(cv.stream(S2C)) if f[1] == 16384)
        r = decode(cv.segments, random_chunks(7))
        big = [e for e in r.of(H2Data) if e.direction == S2C and e.offset == big_off]
        assert len(big) > 1 and not any(e.end_stream for e in big)
        assert b"".join(e.data for e in big) == WS_SERVER[:16384]

    @pytest.mark.parametrize("cut", [1, 5, 9, 12, 16])
    def test_trailing_partial_frame(self, cut):
        cv = the_exchange()
        ref = decode(cv.segments)
        tail = frame(PingFrame(0, opaque_data=b"12345678"))[:cut]
        r = decode([*cv.segments, (C2S, tail, cv.ts + STEP)])
        assert r.codes() == ["h2_truncated"]
        (c2s, s2c), data, ends, _ = summary(r)
        (ref_c2s, ref_s2c), ref_data, ref_ends, _ = summary(ref)
        assert c2s[:-1] == ref_c2s and s2c == ref_s2c
        assert data == ref_data and ends == ref_ends
        assert r.h2.undecodable_bytes[0] == len(tail)

    def test_truncated_data_frame_keeps_what_came(self):
        cv = Conv()
        cv.client.send_headers(1, CONNECT)
        cv.pump()
        cv.server.send_headers(1, [(b":status", b"200")])
        cv.server.send_data(1, b"abcdefghij")
        cv.pump()
        segs = cv.segments[:-1] + [(S2C, cv.segments[-1][1][:-4], cv.ts)]
        r = decode(segs)
        assert r.codes() == ["h2_truncated"]
        assert r.data()[(1, 1)] == b"abcdef"

    def test_eof_twice(self):
        r = decode(the_exchange().segments)
        assert r.h2.eof(T0) == []


# --- gaps ---------------------------------------------------------------------------


def cut(segments: list[Segment], d: Direction, start: int, length: int) -> list[Segment]:
    """Replace bytes [start, start+length) of direction ``d`` with a gap."""
    out: list[Segment] = []
    pos = 0
    for sd, data, ts in segments:
        if sd != d:
            out.append((sd, data, ts))
            continue
        a, b = pos, pos + (data if isinstance(data, int) else len(data))
        pos = b
        lo, hi = max(a, start), min(b, start + length)
        if lo >= hi or isinstance(data, int):
            out.append((sd, data, ts))
            continue
        if lo > a:
            out.append((sd, data[: lo - a], ts))
        out.append((sd, hi - lo, ts))
        if hi < b:
            out.append((sd, data[hi - a :], ts))
    return out


def find_frames(stream: bytes, start: int = 0) -> list[tuple[int, int, int, int]]:
    """(offset, length, type, stream id) of each frame of a well-formed stream."""
    out = []
    i = start
    while i + 9 <= len(stream):
        hi, lo, t, _fl, sid = struct.unpack_from("!HBBBL", stream, i)
        length = (hi << 8) | lo
        out.append((i, length, t, sid))
        i += 9 + length
    return out


class TestGaps:
    """A gap inside a DATA payload keeps the frame boundary; one across a frame header
    loses it (resynchronisation) and the HPACK state (RFC 7541 §2.3.2)."""

    def test_gap_inside_data_payload(self):
        cv = the_exchange()
        s2c = cv.stream(S2C)
        big = next(f for f in find_frames(s2c) if f[2] == 0 and f[1] == 16384)
        start = big[0] + 9 + 1000
        segs = cut(cv.segments, S2C, start, 5000)
        r = decode(segs)
        (g,) = r.of(H2DataGap)
        assert (g.direction, g.stream_id, g.length, g.offset) == (S2C, 1, 5000, big[0])
        assert "h2_gap_resync" not in r.codes() and "h2_hpack_state_lost" not in r.codes()
        assert r.codes() == []
        assert r.data()[(1, 1)] == WS_SERVER[:1000] + WS_SERVER[6000:] + b"bye"
        assert all(h.reliable for h in r.of(H2Headers))
        assert r.headers(S2C)[1].headers == ((b":status", b"404"), (b"content-length", b"0"))
        assert r.h2.gap_bytes == [0, 5000]

    def test_gap_to_the_end_of_a_data_payload(self):
        cv = the_exchange()
        s2c = cv.stream(S2C)
        big = next(f for f in find_frames(s2c) if f[2] == 0 and f[1] == 16384)
        segs = cut(cv.segments, S2C, big[0] + 9 + 100, 16384 - 100)
        r = decode(segs)
        assert [g.length for g in r.of(H2DataGap)] == [16284]
        assert r.codes() == []

    def test_gap_inside_padded_data_skips_padding(self):
        cv = the_exchange()
        c2s = cv.stream(C2S)
        padded = next(f for f in find_frames(c2s, len(PREFACE)) if f[2] == 0 and f[1] > 300)
        # The last 3 padding bytes and nothing else.
        segs = cut(cv.segments, C2S, padded[0] + 9 + padded[1] - 3, 3)
        r = decode(segs)
        assert r.of(H2DataGap) == [] and r.codes() == []
        assert r.data()[(0, 1)] == WS_CLIENT

    def test_gap_across_a_frame_header(self):
        cv = the_exchange()
        s2c = cv.stream(S2C)
        frames = find_frames(s2c)
        big = next(i for i, f in enumerate(frames) if f[2] == 0 and f[1] == 16384)
        nxt = frames[big + 1]  # the 3616-byte DATA frame
        start = nxt[0] - 50  # the end of the big DATA frame and the next header
        segs = cut(cv.segments, S2C, start, 50 + 9 + 10)
        r = decode(segs)
        codes = r.codes()
        assert "h2_gap_resync" in codes and "h2_hpack_state_lost" in codes
        assert r.of(H2DataGap)[0].length == 50
        # Frames after the resynchronisation still decode: later DATA of stream 1 and
        # the header blocks (unreliable now), the GOAWAY.
        assert r.data()[(1, 1)].endswith(b"bye")
        s2c_headers = r.headers(S2C)
        assert s2c_headers[0].reliable and not s2c_headers[-1].reliable
        assert s2c_headers[-1].headers == ((b":status", b"404"), (b"content-length", b"0"))
        assert r.of(H2GoAway)
        assert r.h2.undecodable_bytes[1] == nxt[1] - 10  # the rest of the cut frame
        # The client direction is untouched.
        assert all(h.reliable for h in r.headers(C2S))

    def test_gap_inside_a_headers_frame(self):
        cv = the_exchange()
        c2s = cv.stream(C2S)
        hdr = next(f for f in find_frames(c2s, len(PREFACE)) if f[2] == 1)
        segs = cut(cv.segments, C2S, hdr[0] + 9 + 2, 3)
        r = decode(segs)
        assert r.codes() == ["h2_frame_lost_in_gap", "h2_hpack_state_lost"]
        first = r.headers(C2S)[0]
        assert first.headers == () and not first.reliable and first.stream_id == 1
        assert not any(h.reliable for h in r.headers(C2S))
        assert r.data()[(0, 1)] == WS_CLIENT  # the frame boundary was kept

    def test_gap_inside_settings(self):
        cv = the_exchange()
        segs = cut(cv.segments, S2C, 9 + 2, 4)
        r = decode(segs)
        assert r.codes() == ["h2_frame_lost_in_gap"]
        assert r.data()[(1, 1)] == WS_SERVER + b"bye"

    def test_gap_in_the_preface(self):
        cv = the_exchange()
        r = decode(cut(cv.segments, C2S, 3, 5))
        assert r.codes() == []
        assert r.data()[(0, 1)] == WS_CLIENT

    def test_gap_at_the_start_of_the_server_stream(self):
        cv = the_exchange()
        r = decode(cut(cv.segments, S2C, 0, 20))
        codes = r.codes()
        assert "h2_gap_resync" in codes and "h2_bad_preface" not in codes
        assert r.data()[(1, 1)].endswith(b"bye")

    def test_gap_during_resync_is_absorbed(self):
        cv = the_exchange()
        s2c = cv.stream(S2C)
        segs = cut(cut(cv.segments, S2C, 60, 30), S2C, 120, 7)
        r = decode(segs)
        assert r.codes().count("h2_gap_resync") >= 1
        assert r.data()[(1, 1)].endswith(b"bye")
        h = r.h2
        assert len(s2c) == h.decoded_bytes[1] + h.undecodable_bytes[1] + h.gap_bytes[1]
        assert h.gap_bytes[1] == 37


# --- modes ----------------------------------------------------------------------------


class TestModes:
    def test_mid_stream(self):
        """Capture started inside the server's big DATA frame and inside the client's
        first DATA frame: no preface, HPACK unknown, decoding from the next frame."""
        cv = the_exchange()
        c2s, s2c = cv.stream(C2S), cv.stream(S2C)
        big = next(f for f in find_frames(s2c) if f[2] == 0 and f[1] == 16384)
        first_data = next(f for f in find_frames(c2s, len(PREFACE)) if f[2] == 0)
        cs = first_data[0] + 9 + 50
        ss = big[0] + 9 + 5000
        segs = [
            (d, data[cs if d == C2S else ss :], T0 + i)
            for i, (d, data) in enumerate(((C2S, c2s), (S2C, s2c)))
        ]
        r = decode(segs, mode="mid_stream", start_offsets=(cs, ss))
        codes = r.codes()
        assert codes.count("h2_hpack_state_lost") == 2
        assert "h2_bad_preface" not in codes and r.of(H2Preface) == []
        assert r.data()[(1, 1)] == WS_SERVER[16384:] + b"bye"
        assert r.data()[(0, 1)] == WS_CLIENT[300:]
        assert r.headers() and not any(h.reliable for h in r.headers())
        get = r.headers(C2S)[0]
        assert get.stream_id == 3 and (b":method", b"GET") in get.headers
        assert r.h2.undecodable_bytes == [first_data[1] - 50, 16384 - 5000]
        assert r.of(H2GoAway)[0].offset == find_frames(s2c)[-1][0]
        assert r.h2.stalls == []

    def test_mid_stream_random_chunks(self):
        cv = the_exchange()
        c2s, s2c = cv.stream(C2S), cv.stream(S2C)
        segs = [(C2S, c2s[333:], T0), (S2C, s2c[77:], T0 + 1)]
        ref = decode(segs, mode="mid_stream", start_offsets=(333, 77))
        r = decode(segs, random_chunks(5), mode="mid_stream", start_offsets=(333, 77))
        assert summary(r) == summary(ref)

    def test_upgrade(self):
        """h2c (RFC 7540 §3.2): client preface + SETTINGS, server SETTINGS first, the
        response to the upgraded request on stream 1."""
        cv = Conv(upgrade=True)
        cv.server.send_headers(1, [(b":status", b"200"), (b"server", b"x")])
        cv.server.send_data(1, b"hello", end_stream=True)
        cv.pump()
        r = decode(cv.segments, mode="upgrade", start_offsets=(120, 80))
        assert r.codes() == [] and r.h2.settings[0]
        assert r.of(H2Preface)[0].offset == 120
        (resp,) = r.headers(S2C)
        assert resp.stream_id == 1 and resp.reliable and resp.offset > 80
        assert resp.headers == ((b":status", b"200"), (b"server", b"x"))
        assert r.data() == {(1, 1): b"hello"}
        r2 = decode(
            cv.segments,
            mode="upgrade",
            start_offsets=(120, 80),
            upgrade_settings=cv.settings_header,
        )
        assert summary(r2) == summary(r)
        assert r2.h2.settings[0] == r.h2.settings[0]  # the same values, sent twice

    def test_unknown_mode_is_mid_stream(self):
        r = decode(the_exchange().segments, mode="nonsense")
        assert r.codes().count("h2_hpack_state_lost") == 2


# --- findings ----------------------------------------------------------------------------


def by_hand(c2s: list[bytes], s2c: list[bytes] | None = None, **kwargs: Any) -> Run:
    """Frames built by hand: client preface+SETTINGS, server SETTINGS, then these."""
    segs: list[Segment] = [(C2S, client_preamble(), T0), (S2C, server_preamble(), T0 + 1)]
    ts = T0 + 2
    for data in c2s:
        segs.append((C2S, data, ts))
        ts += STEP
    for data in s2c or []:
        segs.append((S2C, data, ts))
        ts += STEP
    return decode(segs, **kwargs)


PING = frame(PingFrame(0, opaque_data=b"12345678"))


class TestFindings:
    """Every finding code of http2.py, asserted by code (RFC 9113 section in the test)."""

    def test_all_codes_are_catalogued(self):
        for code in (
            "h2_bad_preface",
            "h2_frame_error",
            "h2_hpack_error",
            "h2_hpack_state_lost",
            "h2_gap_resync",
            "h2_frame_lost_in_gap",
            "h2_header_block_too_large",
            "h2_truncated",
            "h2_goaway_error",
            "h2_flow_control_stall",
            "h2_findings_suppressed",
        ):
            assert code in CATALOGUE and CATALOGUE[code].reference

    def test_bad_client_preface_section_3_4(self):
        segs = [
            (C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T0),
            (S2C, server_preamble(), T0 + 1),
        ]
        r = decode(segs)
        codes = r.codes()
        assert codes[0] == "h2_bad_preface"
        assert "h2_gap_resync" in codes  # nothing HTTP/2 in the client's bytes
        assert r.h2.undecodable_bytes[0] == len(segs[0][1])

    def test_missing_preface_frames_still_decode(self):
        segs = [
            (C2S, frame(SettingsFrame(0)) + PING, T0),
            (S2C, server_preamble(), T0 + 1),
        ]
        r = decode(segs)
        assert r.codes() == ["h2_bad_preface"]
        assert len(r.of(H2Ping)) == 1 and r.h2.undecodable_bytes == [0, 0]

    def test_server_first_frame_not_settings_section_3_4(self):
        segs = [(C2S, client_preamble(), T0), (S2C, PING + server_preamble(), T0 + 1)]
        r = decode(segs)
        assert r.codes() == ["h2_bad_preface"]
        assert r.of(H2Settings)[-1].direction == S2C

    def test_client_first_frame_not_settings(self):
        segs = [(C2S, PREFACE + PING, T0), (S2C, server_preamble(), T0 + 1)]
        assert decode(segs).codes() == ["h2_bad_preface"]

    @pytest.mark.parametrize(
        "bad",
        [
            raw_header(4, 6, 0, 0) + b"1234",  # PING of 4 bytes (§6.7)
            raw_header(6, 4, 0, 1) + b"\x00\x03\x00\x00\x00\x01",  # SETTINGS on a stream
            raw_header(5, 0, 0, 0) + b"hello",  # DATA on stream 0 (§6.1)
            raw_header(3, 9, 4, 1) + b"abc",  # CONTINUATION without HEADERS (§6.10)
            raw_header(5, 0, 0x08, 1) + b"\x09abcd",  # padding longer than payload
            raw_header(16385, 0, 0, 1) + b"z" * 16385,  # over SETTINGS_MAX_FRAME_SIZE
            raw_header(4, 8, 0, 0) + b"\x00\x00\x00\x00",  # WINDOW_UPDATE of 0 (§6.9)
            raw_header(3, 3, 0, 1) + b"abc",  # RST_STREAM of 3 bytes
            raw_header(7, 7, 0, 0) + b"1234567",  # GOAWAY shorter than 8
            raw_header(4, 2, 0, 1) + b"1234",  # PRIORITY of 4 bytes
            raw_header(0, 1, 0x04, 0),  # HEADERS on stream 0
            raw_header(6, 4, 1, 0) + b"\x00" * 6,  # SETTINGS ACK with a payload
            raw_header(6, 4, 0, 0) + b"\x00\x05\x00\x00\x10\x00",  # MAX_FRAME_SIZE 4096
            raw_header(6, 4, 0, 0) + b"\x00\x08\x00\x00\x00\x02",  # ENABLE_CONNECT_PROTOCOL 2
            raw_header(4, 3, 0, 9) + b"\x00\x00\x00\x08",  # RST_STREAM on an idle stream
        ],
        ids=[
            "ping4",
            "settings-stream",
            "data-stream0",
            "continuation-alone",
            "padding",
            "too-long",
            "window-update-0",
            "rst3",
            "goaway7",
            "priority4",
            "headers-stream0",
            "settings-ack-payload",
            "max-frame-size",
            "connect-protocol-2",
            "rst-idle",
        ],
    )
    def test_frame_error_section_4_and_6(self, bad):
        r = by_hand([bad, PING])
        assert r.codes()[0] == "h2_frame_error"
        # A skipped HEADERS/CONTINUATION may have changed the HPACK table.
        lost = {"h2_hpack_state_lost"} if bad[3] in (1, 9) else set()
        assert set(r.codes()) == {"h2_frame_error"} | lost
        assert r.of(H2Ping)[-1].opaque_data == b"12345678"  # decoding went on

    def test_continuation_interrupted_section_6_10(self):
        block = hblock(CONNECT)
        hdr = HeadersFrame(1, data=block[:5])  # no END_HEADERS
        r = by_hand(
            [frame(hdr), PING, frame(ContinuationFrame(1, data=block[5:], flags=["END_HEADERS"]))]
        )
        codes = r.codes()
        assert codes.count("h2_frame_error") == 2  # the PING, then the orphan CONTINUATION
        assert "h2_hpack_state_lost" in codes
        (h,) = r.headers()
        assert h.headers == () and not h.reliable

    def test_headers_with_continuation(self):
        block = hblock(CONNECT)
        frames = [
            frame(HeadersFrame(1, data=block[:3], flags=["END_STREAM"])),
            frame(ContinuationFrame(1, data=block[3:8])),
            frame(ContinuationFrame(1, data=block[8:], flags=["END_HEADERS"])),
        ]
        r = by_hand(frames)
        assert r.codes() == []
        (h,) = r.headers()
        assert h.headers == tuple(CONNECT) and h.end_stream and h.reliable
        assert h.length == sum(len(f) for f in frames)
        assert h.packets[0] < h.packets[1]

    def test_padded_and_prioritised_headers(self):
        block = hblock(CONNECT)
        f = HeadersFrame(1, data=block, flags=["END_HEADERS", "PADDED", "PRIORITY"])
        f.pad_length = 4
        f.depends_on, f.stream_weight = 0, 15
        r = by_hand([frame(f)])
        assert r.codes() == [] and r.headers()[0].headers == tuple(CONNECT)

    def test_push_promise(self):
        enc = hpack.Encoder()
        req = hblock(CONNECT, enc)
        push = PushPromiseFrame(1, promised_stream_id=2, data=hblock(GET), flags=["END_HEADERS"])
        resp = HeadersFrame(1, data=hblock([(b":status", b"200")]), flags=["END_HEADERS"])
        r = by_hand(
            [frame(HeadersFrame(1, data=req, flags=["END_HEADERS"]))], [frame(resp), frame(push)]
        )
        assert r.codes() == []
        pp = r.headers(S2C)[1]
        assert pp.promised_stream_id == 2 and pp.stream_id == 1 and pp.headers == tuple(GET)

    def test_push_promise_from_client_is_a_frame_error(self):
        push = PushPromiseFrame(1, promised_stream_id=2, data=hblock(GET), flags=["END_HEADERS"])
        assert by_hand([frame(push)]).codes() == ["h2_frame_error", "h2_hpack_state_lost"]

    def test_hpack_error_then_state_lost(self):
        bad = frame(HeadersFrame(1, data=b"\xff\x80\x80\x80\x01", flags=["END_HEADERS"]))
        bad2 = frame(HeadersFrame(3, data=b"\xbf", flags=["END_HEADERS"]))  # index 63: empty table
        ok = frame(HeadersFrame(5, data=hblock(GET), flags=["END_HEADERS"]))
        r = by_hand([bad, bad2, ok])
        assert r.codes() == ["h2_hpack_error", "h2_hpack_state_lost"]
        assert r.h2.hpack_errors == [2, 0] and r.h2.hpack_lost == (True, False)
        h1, h2, h3 = r.headers()
        assert h1.headers == () and h2.headers == ()
        assert h3.headers == tuple(GET) and not h3.reliable  # decoded, but not trusted

    def test_hpack_table_size_over_the_receivers_setting(self):
        enc = hpack.Encoder()
        enc.header_table_size = 8192  # the server allowed 4096 (the default)
        block = enc.encode(CONNECT)
        r = by_hand([frame(HeadersFrame(1, data=block, flags=["END_HEADERS"]))])
        assert r.codes() == ["h2_hpack_error", "h2_hpack_state_lost"]

    def test_hpack_table_size_follows_settings(self):
        enc = hpack.Encoder()
        enc.header_table_size = 8192
        block = enc.encode(CONNECT)
        segs = [
            (C2S, client_preamble(), T0),
            (S2C, frame(SettingsFrame(0, settings={1: 8192})), T0 + 1),
            (C2S, frame(SettingsFrame(0, flags=["ACK"])), T0 + 2),
            (C2S, frame(HeadersFrame(1, data=block, flags=["END_HEADERS"])), T0 + 3),
        ]
        r = decode(segs)
        assert r.codes() == [] and r.headers()[0].headers == tuple(CONNECT)

    def test_header_block_too_large(self):
        big = [*CONNECT, (b"x-big", b"v" * 300)]
        block = hblock(big)
        frames = [
            frame(HeadersFrame(1, data=block[:100])),
            frame(ContinuationFrame(1, data=block[100:200])),
            frame(ContinuationFrame(1, data=block[200:], flags=["END_HEADERS"])),
            PING,
        ]
        r = by_hand(frames, max_header_block=150)
        assert r.codes() == ["h2_header_block_too_large", "h2_hpack_state_lost"]
        (h,) = r.headers()
        assert h.headers == () and not h.reliable and h.length == sum(map(len, frames[:3]))
        assert len(r.of(H2Ping)) == 1
        assert r.h2.undecodable_bytes[0] == sum(len(f) - 9 for f in frames[1:3])  # payloads

    def test_header_list_bomb_is_an_hpack_error(self):
        enc = hpack.Encoder()
        enc.header_table_size = 4096
        first = enc.encode([(b"x-a", b"v" * 4000)])
        bomb = b"\xbe" * 300  # index 62 (the 4 KiB entry) 300 times: 1.2 MB decoded
        frames = [
            frame(HeadersFrame(1, data=first, flags=["END_HEADERS"])),
            frame(HeadersFrame(3, data=bomb, flags=["END_HEADERS"])),
        ]
        r = by_hand(frames)
        assert r.codes() == ["h2_hpack_error", "h2_hpack_state_lost"]

    def test_goaway_error_section_6_8(self):
        g = frame(GoAwayFrame(0, last_stream_id=1, error_code=1, additional_data=b"boom"))
        r = by_hand([], [g])
        assert r.codes() == ["h2_goaway_error"]
        (ev,) = r.of(H2GoAway)
        assert (ev.error_code, ev.last_stream_id, ev.debug_data) == (1, 1, b"boom")
        assert error_name(ev.error_code) == "PROTOCOL_ERROR"

    def test_goaway_no_error_is_not_a_finding(self):
        g = frame(GoAwayFrame(0, last_stream_id=0, error_code=0))
        assert by_hand([], [g]).codes() == []

    def test_goaway_debug_data_is_bounded(self):
        g = frame(GoAwayFrame(0, error_code=11, additional_data=b"d" * 5000))
        r = by_hand([], [g, PING])
        assert len(r.of(H2GoAway)[0].debug_data) == 1024
        assert r.of(H2Ping) and r.h2.undecodable_bytes == [0, 0]

    def test_truncated(self):
        r = by_hand([PING[:12]])
        assert r.codes() == ["h2_truncated"]
        block = hblock(CONNECT)
        r = by_hand([frame(HeadersFrame(1, data=block))])  # no END_HEADERS, then the end
        assert r.codes() == ["h2_truncated", "h2_hpack_state_lost"]
        assert r.headers()[0].headers == ()

    def test_unknown_frame_types_are_ignored_section_4_1(self):
        ext = raw_header(5, 0xFA, 0xFF, 7) + b"hello"
        prio = raw_header(5, 2, 0, 1) + b"\x00\x00\x00\x00\x10"
        r = by_hand([ext, prio, PING])
        assert r.codes() == []
        assert r.h2.frame_counts[(0, 0xFA)] == 1 and r.h2.frame_counts[(0, 2)] == 1
        assert len(r.of(H2Ping)) == 1 and r.h2.undecodable_bytes == [0, 0]

    def test_reserved_bit_is_ignored_section_4_1(self):
        r = by_hand([raw_header(5, 0, 0x01, 0x80000001) + b"hello"])
        assert r.codes() == [] and r.data() == {(0, 1): b"hello"}

    def test_implausible_long_header_is_not_trusted(self):
        """A frame header too long for SETTINGS_MAX_FRAME_SIZE and of an unknown type is
        taken for garbage: decoding resynchronises instead of skipping 7 MB."""
        garbage = raw_header(0x787878, 0x78, 0x78, 0x78787878)
        r = by_hand([garbage + PING + PING + PING])
        assert r.codes()[:1] == ["h2_frame_error"] and "h2_gap_resync" in r.codes()
        assert len(r.of(H2Ping)) == 3

    def test_plausible_long_header_is_skipped_by_its_length(self):
        too_long = raw_header(20000, 0, 0, 1) + b"z" * 20000
        r = by_hand([too_long, PING])
        assert r.codes() == ["h2_frame_error"] and len(r.of(H2Ping)) == 1
        assert r.h2.undecodable_bytes[0] == len(too_long)

    def test_no_recursion_on_hostile_input(self):
        unit = PING * 3 + raw_header(0x787878, 0x78, 0, 0)
        r = by_hand([unit * 3000])
        assert len(r.of(H2Ping)) == 9000

    def test_findings_are_limited(self):
        r = by_hand([raw_header(4, 6, 0, 0) + b"1234"] * 15)
        codes = r.codes()
        assert codes.count("h2_frame_error") == 10
        assert codes.count("h2_findings_suppressed") == 1

    def test_larger_max_frame_size(self):
        big = raw_header(20000, 0, 0, 1) + b"q" * 20000
        segs = [
            (C2S, client_preamble(), T0),
            (S2C, frame(SettingsFrame(0, settings={5: 32768})), T0 + 1),
            (C2S, frame(SettingsFrame(0, flags=["ACK"])) + big, T0 + 2),
        ]
        r = decode(segs, random_chunks(3))
        assert r.codes() == [] and r.data() == {(0, 1): b"q" * 20000}


class TestFlowControl:
    """RFC 9113 §5.2 / §6.9: stalls of the connection and stream windows."""

    def _conv(self) -> Conv:
        cv = Conv(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        cv.client.send_headers(1, CONNECT)
        cv.pump()
        cv.server.send_headers(1, [(b":status", b"200")])
        cv.pump()
        return cv

    def test_stall_until_window_update(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 1000)  # exhausts the stream window
        cv.pump()
        start = cv.ts
        cv.wait(5_000_000)
        cv.client.increment_flow_control_window(1000, stream_id=1)
        cv.pump()
        end = cv.ts
        cv.server.send_data(1, b"b" * 500)
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == ["h2_flow_control_stall"]
        (stall,) = r.h2.stalls
        assert (stall.direction, stall.stream_id) == (S2C, 1)
        assert (stall.start_ts_ns, stall.end_ts_ns) == (start, end)
        assert stall.duration_ns == 5_000_000 + STEP
        finding = next(e for e in r.events if isinstance(e, Finding))
        assert finding.packets == stall.packets and finding.direction == S2C

    def test_stall_over_many_segments(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 1000)
        cv.pump()
        cv.wait(3_000_000)
        cv.client.increment_flow_control_window(1000, stream_id=1)
        cv.pump()
        cv.server.send_data(1, b"b" * 1000)
        cv.pump()
        ref = decode(cv.segments)
        r = decode(cv.segments, bytewise)
        assert summary(r) == summary(ref) and r.h2.stalls == ref.h2.stalls

    def test_short_stall_is_recorded_not_reported(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 1000)
        cv.pump()
        cv.client.increment_flow_control_window(1000, stream_id=1)
        cv.pump()
        cv.server.send_data(1, b"b" * 500)
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == [] and len(r.h2.stalls) == 1

    def test_window_never_reopened(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 1000)
        cv.pump()
        r = Run().run(cv.segments, eof=False)
        r.eof(cv.ts + 10_000_000)
        assert r.codes() == ["h2_flow_control_stall"]
        (stall,) = r.h2.stalls
        assert stall.end_ts_ns is None and stall.stream_id == 1 and stall.duration_ns is None

    def test_idle_sender_is_not_a_stall(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 600)  # 400 bytes of window left
        cv.pump()
        cv.client.increment_flow_control_window(600, stream_id=1)
        cv.pump()
        cv.wait(50_000_000)  # the sender had room and nothing to send
        cv.server.send_data(1, b"b" * 800)
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == [] and r.h2.stalls == []

    def test_partial_window_wait_is_a_stall(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 600)
        cv.pump()
        cv.wait(4_000_000)
        cv.client.increment_flow_control_window(600, stream_id=1)
        cv.pump()
        cv.server.send_data(1, b"b" * 800)  # did not fit in the 400 bytes left
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == ["h2_flow_control_stall"]

    def test_initial_window_change_applies_to_open_streams_section_6_9_2(self):
        cv = self._conv()
        cv.server.send_data(1, b"a" * 1000)
        cv.pump()
        cv.wait(2_000_000)
        cv.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 3000})
        cv.pump()
        cv.server.send_data(1, b"b" * 2000)
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == ["h2_flow_control_stall"]
        assert r.h2.stalls[0].stream_id == 1

    def test_connection_window(self):
        cv = Conv()
        cv.client.send_headers(1, CONNECT)
        cv.client.increment_flow_control_window(10_000_000, stream_id=None)
        cv.pump()
        cv.server.send_headers(1, [(b":status", b"200")])
        cv.pump()
        cv.server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        cv.pump()
        r = decode(cv.segments)
        assert r.codes() == []


# --- looks_like_h2 ---------------------------------------------------------------------


class TestLooksLikeH2:
    def test_finds_frames_after_garbage(self):
        s2c = the_exchange().stream(S2C)
        assert looks_like_h2(s2c) == 0
        assert looks_like_h2(b"garbage!" + s2c) == 8
        assert looks_like_h2(the_exchange().stream(C2S)) == 24  # after the preface

    def test_single_frame_ending_at_the_end(self):
        assert looks_like_h2(PING) == 0
        assert looks_like_h2(PING[:-1]) is None

    def test_rejects_text_and_zeros(self):
        assert looks_like_h2(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n") is None
        assert looks_like_h2(b"\x00" * 1000) is None
        assert looks_like_h2(b"") is None

    @given(st.binary(max_size=300))
    @settings(max_examples=200, deadline=None)
    def test_never_raises(self, data):
        p = looks_like_h2(data)
        assert p is None or 0 <= p < len(data)


def test_tables():
    assert ERROR_CODES[0xD] == "HTTP_1_1_REQUIRED" and len(ERROR_CODES) == 14
    assert SETTINGS_NAMES[8] == "ENABLE_CONNECT_PROTOCOL"
    assert error_name(0x99) == "0x99"


# --- hypothesis -------------------------------------------------------------------------

_modes = st.sampled_from(["prior_knowledge", "upgrade", "mid_stream"])


def _ops(data: bytes, cuts: list[int], gaps: list[int]) -> list[tuple[str, Any]]:
    """Split ``data`` at ``cuts``; a non-zero gaps[i] turns piece i into a gap."""
    pts = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    ops = []
    for k, (a, b) in enumerate(zip(pts, pts[1:], strict=False)):
        if k < len(gaps) and gaps[k]:
            ops.append(("gap", b - a))
        else:
            ops.append(("data", data[a:b]))
    return ops


def _drive(mode: str, c_ops, s_ops, order: list[bool]) -> Run:
    r = Run(mode=mode)
    queues = {C2S: list(c_ops), S2C: list(s_ops)}
    ts = T0
    k = 0
    while queues[C2S] or queues[S2C]:
        d = C2S if (order[k % len(order)] if order else k % 2) else S2C
        if not queues[d]:
            d = d.reverse
        kind, v = queues[d].pop(0)
        ts += 1000
        if kind == "gap":
            if v:
                r.gap(d, v, ts)
        else:
            r.feed(d, v, ts)
        k += 1
    r.eof(ts + 1)
    return r


class TestNeverRaises:
    @given(
        _modes,
        st.binary(max_size=400),
        st.binary(max_size=400),
        st.lists(st.integers(0, 500), max_size=8),
        st.lists(st.integers(0, 1), max_size=8),
        st.lists(st.booleans(), max_size=10),
    )
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_bytes(self, mode, c, s, cuts, gaps, order):
        r = _drive(mode, _ops(c, cuts, gaps), _ops(s, cuts[::-1], gaps[::-1]), order)
        for e in r.events:
            assert isinstance(e, Finding) or e.direction in (C2S, S2C)

    @given(
        st.binary(max_size=200),
        st.lists(st.integers(0, 10**6), max_size=6),
        st.lists(st.integers(0, 1), max_size=6),
        st.integers(0, 10**6),
        st.booleans(),
    )
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_exchange_with_garbage_and_gaps(self, junk, cuts, gaps, at, which):
        """Real frames with junk spliced in and parts turned into gaps."""
        cv = the_exchange()
        c2s, s2c = cv.stream(C2S), cv.stream(S2C)
        if which:
            p = at % (len(c2s) + 1)
            c2s = c2s[:p] + junk + c2s[p:]
        else:
            p = at % (len(s2c) + 1)
            s2c = s2c[:p] + junk + s2c[p:]
        _drive("prior_knowledge", _ops(c2s, cuts, gaps), _ops(s2c, cuts, gaps[::-1]), [])

    @given(st.lists(st.integers(1, 3000), min_size=1, max_size=12), st.integers(0, 2**32))
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_chunking_never_changes_the_output(self, sizes, seed):
        cv = the_exchange()
        ref = decode(cv.segments)
        rnd = random.Random(seed)

        def chunker(data: bytes) -> list[bytes]:
            out, i = [], 0
            while i < len(data):
                k = rnd.choice(sizes)
                out.append(data[i : i + k])
                i += k
            return out

        r = decode(cv.segments, chunker)
        assert summary(r) == summary(ref)

    @given(st.integers(0, 10**6), st.integers(1, 3000), st.integers(0, 10**6))
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_gaps_never_change_the_other_direction_or_the_bytes_after_a_data_gap(
        self, start, length, seed
    ):
        cv = the_exchange()
        d = C2S if seed % 2 else S2C
        n = len(cv.stream(d))
        start %= n
        segs = cut(cv.segments, d, start, min(length, n - start))
        r = decode(segs, random_chunks(seed))
        ref = decode(cv.segments)
        other = d.reverse
        # The other direction's header blocks are untouched.
        assert [h.headers for h in r.headers(other)] == [h.headers for h in ref.headers(other)]
        # DATA bytes decoded are a subsequence-by-pieces of the real ones.
        for key, data in r.data().items():
            assert len(data) <= len(ref.data()[key])


# --- real captures (HAProxy 2.6 -> Hypercorn, cleartext h2 on port 8080) ----------------


class _Sink:
    """A StreamSink feeding one Http2Connection per TCP connection."""

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.h2 = Http2Connection()
        self.events: list[Any] = []

    def data(self, d: Direction, offset: int, data: bytes, ts_ns: int, packet: int) -> None:
        self.events += self.h2.feed(d, data, ts_ns, packet)

    def gap(self, d: Direction, offset: int, length: int, ts_ns: int, packet: int) -> None:
        self.events += self.h2.gap(d, length, ts_ns, packet)

    def fin(self, d: Direction, ts_ns: int, packet: int) -> None:
        pass

    def rst(self, d: Direction, ts_ns: int, packet: int) -> None:
        pass

    def end(self, ts_ns: int) -> None:
        self.events += self.h2.eof(ts_ns)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if type(e) is kind]

    def codes(self) -> list[str]:
        return [e.code for e in self.events if isinstance(e, Finding)]


def decode_capture(path: Path) -> dict[int, _Sink]:
    """One sink per TCP connection, keyed by the client's port."""
    sinks: dict[int, _Sink] = {}

    def on_connection(conn: TcpConnection) -> _Sink:
        sink = _Sink(conn)
        sinks[conn.client.port] = sink
        return sink

    reasm = TcpReassembler(on_connection)
    with open_capture(path) as reader:
        for seg in reader:
            reasm.feed(seg)
    reasm.finish()
    return sinks


SEP = "\x1f"


def tshark_h2(path: Path) -> dict[int, dict[str, Any]]:
    """Per client port: frame counts per (direction, type) and the header blocks
    (direction, stream, [(name, value)]) as tshark decodes them."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (CI installs it): no oracle for the h2 captures")
    fields = ["tcp.srcport", "tcp.dstport", "http2.type", "http2.streamid"]
    fields += ["http2.header.count", "http2.header.name", "http2.header.value"]
    cmd = [tshark, "-r", str(path), "-d", "tcp.port==8080,http2", "-Y", "http2", "-T", "fields"]
    cmd += ["-E", "occurrence=a", "-E", f"aggregator={SEP}"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[int, dict[str, Any]] = defaultdict(lambda: {"counts": Counter(), "blocks": []})
    for line in out.splitlines():
        sport, dport, types, sids, hcounts, names, values = (line.split("\t") + [""] * 7)[:7]
        d = S2C if sport == "8080" else C2S
        port = int(dport if d == S2C else sport)
        entry = result[port]
        types_l = types.split(SEP) if types else []
        sids_l = sids.split(SEP) if sids else []
        for t in types_l:
            entry["counts"][(int(d), int(t))] += 1
        names_l = names.split(SEP) if names else []
        values_l = values.split(SEP) if values else []
        counts_l = [int(c) for c in hcounts.split(SEP)] if hcounts else []
        header_sids = [int(s) for t, s in zip(types_l, sids_l, strict=True) if t in ("1", "5")]
        k = 0
        for sid, count in zip(header_sids, counts_l, strict=True):
            pairs = list(zip(names_l[k : k + count], values_l[k : k + count], strict=True))
            entry["blocks"].append((d, sid, [(n.encode(), v.encode()) for n, v in pairs]))
            k += count
    return dict(result)


def _cross_check(scenario: str) -> dict[int, _Sink]:
    path = H2_CAPTURES / scenario / "server.pcap"
    oracle = tshark_h2(path)
    sinks = decode_capture(path)
    assert sorted(sinks) == sorted(oracle)
    for port, sink in sinks.items():
        h = sink.h2
        assert Counter(h.frame_counts) == oracle[port]["counts"], port
        mine = [(h.direction, h.stream_id, list(h.headers)) for h in sink.of(H2Headers)]
        assert mine == oracle[port]["blocks"], port
        assert all(e.reliable for e in sink.of(H2Headers))
        codes = sink.codes()
        assert "h2_frame_error" not in codes or scenario.endswith("no-connect-protocol")
        assert "h2_hpack_error" not in codes and "h2_hpack_state_lost" not in codes
        assert h.undecodable_bytes == [0, 0] and h.gap_bytes == [0, 0]
        assert h.decoded_bytes == h.fed_bytes
        assert h.settings[1][8] in (0, 1)
    return sinks


def _header(block: H2Headers, name: bytes) -> bytes | None:
    return next((v for n, v in block.headers if n == name), None)


class TestRealCaptures:
    def test_haproxy_h2(self):
        """Three WebSockets, one per TCP connection: extended CONNECT with
        :protocol websocket and X-Forwarded-For, a 200, DATA both ways."""
        sinks = _cross_check("haproxy-h2")
        assert len(sinks) == 3
        for sink in sinks.values():
            h = sink.h2
            assert h.enable_connect_protocol == [True, True]  # HAProxy advertises it too
            req, resp = sink.of(H2Headers)
            assert req.direction == C2S and req.stream_id == 1
            assert _header(req, b":method") == b"CONNECT"
            assert _header(req, b":protocol") == b"websocket"
            assert _header(req, b":scheme") == b"https"  # HAProxy says https over cleartext
            assert _header(req, b"x-forwarded-for") == b"192.0.2.10"
            assert _header(resp, b":status") == b"200"
            assert sink.of(H2Preface)
            assert not sink.of(H2GoAway) and not sink.of(H2RstStream)
            data = defaultdict(bytes)
            for e in sink.of(H2Data):
                data[(int(e.direction), e.stream_id)] += e.data
            assert set(data) == {(0, 1), (1, 1)}
            assert data[(0, 1)][:1] in (b"\x81", b"\x82", b"\x01", b"\x02")  # WS frames
            assert data[(1, 1)][:1] in (b"\x81", b"\x82", b"\x01", b"\x02")
        # The big message: Hypercorn batches its WINDOW_UPDATEs, HAProxy waits ~1 ms.
        big = max(sinks.values(), key=lambda s: s.h2.decoded_bytes[0])
        assert any(s.direction == C2S and s.stream_id in (0, 1) for s in big.h2.stalls)

    def test_haproxy_h2_multiplex(self):
        """Three WebSockets as streams 1, 3, 5 of one connection."""
        sinks = _cross_check("haproxy-h2-multiplex")
        (sink,) = sinks.values()
        reqs = [b for b in sink.of(H2Headers) if b.direction == C2S]
        assert [b.stream_id for b in reqs] == [1, 3, 5]
        assert all(_header(b, b":protocol") == b"websocket" for b in reqs)
        resps = [b for b in sink.of(H2Headers) if b.direction == S2C]
        assert [(b.stream_id, _header(b, b":status")) for b in resps] == [
            (1, b"200"),
            (3, b"200"),
            (5, b"200"),
        ]
        streams = {e.stream_id for e in sink.of(H2Data)}
        assert streams == {1, 3, 5}
        # Each WebSocket closed with an empty END_STREAM DATA frame both ways.
        ends = Counter((int(e.direction), e.stream_id) for e in sink.of(H2Data) if e.end_stream)
        assert ends == Counter({(d, s): 1 for d in (0, 1) for s in (1, 3, 5)})

    def test_haproxy_h2_no_connect_protocol(self):
        """Hypercorn sends SETTINGS_ENABLE_CONNECT_PROTOCOL=0; HAProxy, unable to
        forward the WebSocket, resets stream 1 before opening it (an RST_STREAM on an
        idle stream, §6.4) and Hypercorn closes the connection with PROTOCOL_ERROR."""
        sinks = _cross_check("haproxy-h2-no-connect-protocol")
        (sink,) = sinks.values()
        assert sink.h2.enable_connect_protocol == [True, False]
        assert sink.of(H2Headers) == []
        (rst,) = sink.of(H2RstStream)
        assert (rst.direction, rst.stream_id, error_name(rst.error_code)) == (
            C2S,
            1,
            "INTERNAL_ERROR",
        )
        (goaway,) = sink.of(H2GoAway)
        assert (goaway.direction, error_name(goaway.error_code), goaway.last_stream_id) == (
            S2C,
            "PROTOCOL_ERROR",
            0,
        )
        assert sorted(sink.codes()) == ["h2_frame_error", "h2_goaway_error"]

    def test_haproxy_h2_rst(self):
        """/ws/forbidden gets a 403 with a body; /ws/reset gets RST_STREAM
        REFUSED_STREAM instead of a response."""
        sinks = _cross_check("haproxy-h2-rst")
        first, second = (sinks[p] for p in sorted(sinks, key=lambda p: sinks[p].conn.index))
        req, resp = first.of(H2Headers)
        assert _header(req, b":path") == b"/ws/forbidden"
        assert _header(resp, b":status") == b"403" and not resp.end_stream
        body = b"".join(e.data for e in first.of(H2Data) if e.direction == S2C)
        assert body == b"WebSocket over HTTP/2 forbidden here\n"
        assert first.codes() == [] and first.of(H2RstStream) == []
        (req2,) = second.of(H2Headers)
        assert _header(req2, b":path") == b"/ws/reset"
        (rst,) = second.of(H2RstStream)
        assert (rst.direction, rst.stream_id, error_name(rst.error_code)) == (
            S2C,
            1,
            "REFUSED_STREAM",
        )
        assert second.codes() == []

    def test_client_legs_are_not_h2(self):
        """The client side of HAProxy is HTTP/1.1: no frame chain in its bytes."""
        path = H2_CAPTURES / "haproxy-h2" / "client.pcap"
        sinks = decode_capture(path)
        for sink in sinks.values():
            assert "h2_bad_preface" in sink.codes()
            assert sink.of(H2Headers) == []
