"""Tests for wsanalyze.http1: the sans-IO HTTP/1.x head parser (RFC 9112)."""

from __future__ import annotations

from bisect import bisect_right

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsanalyze.catalogue import CATALOGUE
from wsanalyze.http1 import Http1Parser, upgrade_requested
from wsanalyze.model import Direction, Finding, RequestHead, ResponseHead

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

UPGRADE = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)
WS_FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # masked "Hello", RFC 6455 §5.7

KEEPALIVE = (
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b'5;name=value;quoted="a;b"\r\nhello\r\n'
    b"A\r\n0123456789\r\n"
    b"0;last\r\nX-Trailer: 1\r\nY-Trailer: 2\r\n\r\n"
    b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
)

RESPONSES = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
)


def balanced(p: Http1Parser) -> bool:
    """Every byte of the direction is in exactly one counter."""
    return (
        p.decoded_bytes + p.undecodable_bytes + p.gap_bytes + p.taken_bytes + p.buffered
        == p.position
    )


def feed_chunks(p: Http1Parser, chunks: list[bytes], ts_ns: int = 1000, packet: int = 1) -> list:
    out: list = []
    for c in chunks:
        out += p.feed(c, ts_ns, packet)
        assert balanced(p)
    return out


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def heads(events: list) -> list:
    return [e for e in events if isinstance(e, (RequestHead, ResponseHead))]


def codes(events: list) -> list[str]:
    return [e.code for e in events if isinstance(e, Finding)]


def strip_evidence(ev):
    """A head or finding without its packets and time (for split comparisons)."""
    if isinstance(ev, Finding):
        return (ev.code, ev.detail, ev.offset, ev.direction)
    fields = {k: getattr(ev, k) for k in ev.__slots__ if k not in ("packets", "ts_ns")}
    return (type(ev).__name__, tuple(sorted(fields.items())))


# --- RFC 9112 §3 / §4: heads as sent ------------------------------------------------


class TestHeads:
    def test_request_fields_offsets_and_evidence(self):
        p = Http1Parser(C2S)
        events = p.feed(UPGRADE, 1_000, 7)
        assert len(events) == 1
        req = events[0]
        assert isinstance(req, RequestHead)
        assert (req.method, req.target, req.version) == (b"GET", b"/chat", b"HTTP/1.1")
        assert req.headers[0] == (b"Host", b"server.example.com")
        assert req.get(b"sec-websocket-key") == b"dGhlIHNhbXBsZSBub25jZQ=="
        assert (req.offset, req.length, req.packets, req.ts_ns) == (0, len(UPGRADE), (7, 7), 1_000)
        assert p.decoded_bytes == len(UPGRADE)
        assert balanced(p)

    def test_response_fields(self):
        p = Http1Parser(S2C)
        (resp,) = p.feed(SWITCH, 5, 3)
        assert isinstance(resp, ResponseHead)
        assert (resp.version, resp.status, resp.reason) == (
            b"HTTP/1.1",
            101,
            b"Switching Protocols",
        )
        assert resp.get(b"SEC-WEBSOCKET-ACCEPT") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert (resp.offset, resp.length) == (0, len(SWITCH))

    def test_status_line_without_reason(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.0 500 \r\n\r\n", 1, 1)
        assert [(h.status, h.reason) for h in heads(out)] == [(200, b""), (500, b"")]
        assert codes(out) == []

    def test_header_case_order_duplicates_and_ows(self):
        raw = (
            b"GET / HTTP/1.1\r\nhOsT:   example.com  \r\nX-Dup: 1\r\nx-dup:2\r\n"
            b"Empty:\r\nX-Dup: \t3\t\r\n\r\n"
        )
        (req,) = Http1Parser(C2S).feed(raw, 1, 1)
        assert req.headers == (
            (b"hOsT", b"example.com"),
            (b"X-Dup", b"1"),
            (b"x-dup", b"2"),
            (b"Empty", b""),
            (b"X-Dup", b"3"),
        )

    def test_value_keeps_inner_whitespace_and_colons(self):
        (req,) = Http1Parser(C2S).feed(b"GET / HTTP/1.1\r\nHost: a:80\r\nX: a  b\r\n\r\n", 1, 1)
        assert req.headers == ((b"Host", b"a:80"), (b"X", b"a  b"))

    def test_no_headers(self):
        (req,) = Http1Parser(C2S).feed(b"GET / HTTP/1.0\r\n\r\n", 1, 1)
        assert req.headers == () and req.length == 18

    def test_leading_empty_lines_ignored(self):
        # RFC 9112 §2.2: "SHOULD ignore at least one empty line (CRLF) received prior to
        # the request-line".
        p = Http1Parser(C2S)
        out = p.feed(b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n", 1, 1)
        (req,) = heads(out)
        assert req.offset == 5 and codes(out) == []
        assert p.decoded_bytes == p.position

    def test_bare_lf_tolerated(self):
        # RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line terminator".
        out = Http1Parser(C2S).feed(
            b"GET /x HTTP/1.1\nHost: a\nX: y\n\nGET /z HTTP/1.1\r\n\r\n", 1, 1
        )
        reqs = heads(out)
        assert [r.target for r in reqs] == [b"/x", b"/z"]
        assert reqs[0].headers == ((b"Host", b"a"), (b"X", b"y"))
        assert reqs[0].length == len(b"GET /x HTTP/1.1\nHost: a\nX: y\n\n")
        assert codes(out) == ["http_lenient_parse"]

    def test_obs_fold_joined_with_space(self):
        raw = b"GET / HTTP/1.1\r\nX-Long: part one\r\n   part two\r\n\tpart three\r\nB: c\r\n\r\n"
        out = Http1Parser(C2S).feed(raw, 1, 1)
        (req,) = heads(out)
        assert req.headers == ((b"X-Long", b"part one part two part three"), (b"B", b"c"))
        assert codes(out) == ["http_lenient_parse"]

    def test_whitespace_before_colon_tolerated_and_reported(self):
        out = Http1Parser(C2S).feed(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 1, 1)
        (req,) = heads(out)
        assert req.headers == ((b"Host", b"a"),)
        assert codes(out) == ["http_lenient_parse"]

    def test_offsets_count_every_byte_fed(self):
        p = Http1Parser(C2S)
        out = p.feed(KEEPALIVE, 1, 1)
        reqs = heads(out)
        assert [r.target for r in reqs] == [b"/upload", b"/chunked", b"/next"]
        for r in reqs:
            assert KEEPALIVE[r.offset : r.offset + r.length].startswith(r.method + b" " + r.target)
            assert KEEPALIVE[r.offset + r.length - 4 : r.offset + r.length] == b"\r\n\r\n"
        assert p.decoded_bytes == len(KEEPALIVE) and balanced(p)


# --- chunking never changes the events ------------------------------------------------


STREAMS = [
    (C2S, KEEPALIVE),
    (C2S, KEEPALIVE + UPGRADE + WS_FRAME),
    (S2C, RESPONSES),
    (S2C, RESPONSES + SWITCH + b"\x81\x05Hello"),
    (C2S, b"GET / HTTP/1.1\nA: b\n   c\n\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
    (C2S, KEEPALIVE + b"\x16\x03\x01garbage\r\n\r\n"),
]


def run_whole(direction, data, chunks=None):
    p = Http1Parser(direction)
    events = feed_chunks(p, chunks if chunks is not None else [data])
    events += p.eof(99)
    assert balanced(p)
    return events, p


class TestChunking:
    @pytest.mark.parametrize("direction,data", STREAMS)
    def test_one_byte_at_a_time(self, direction, data):
        whole, pw = run_whole(direction, data)
        byte, pb = run_whole(direction, data, split_every(data, 1))
        assert byte == whole
        assert (pb.decoded_bytes, pb.undecodable_bytes) == (pw.decoded_bytes, pw.undecodable_bytes)
        assert pb.take_rest() == pw.take_rest()

    @pytest.mark.parametrize("direction,data", STREAMS)
    def test_split_at_every_position(self, direction, data):
        whole, _ = run_whole(direction, data)
        for k in range(1, len(data)):
            p = Http1Parser(direction)
            events = p.feed(data[:k], 10, 1) + p.feed(data[k:], 20, 2) + p.eof(99)
            assert [strip_evidence(e) for e in events] == [strip_evidence(e) for e in whole], k
            for h in heads(events):
                end = h.offset + h.length
                first = 1 if h.offset < k else 2
                last = 1 if end <= k else 2
                assert h.packets == (first, last), k
                assert h.ts_ns == (10 if last == 1 else 20)
            assert balanced(p)

    def test_trailing_data_kept_for_the_next_head(self):
        p = Http1Parser(C2S)
        first = p.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HT", 1, 1)
        assert [h.target for h in heads(first)] == [b"/a"]
        assert p.buffered == 9
        second = p.feed(b"TP/1.1\r\n\r\n", 2, 2)
        (req,) = heads(second)
        assert (req.target, req.packets, req.ts_ns, req.offset) == (b"/b", (1, 2), 2, 19)


# --- RFC 9112 §6.3: bodies ----------------------------------------------------------


class TestBodies:
    def test_keepalive_bodies_then_upgrade(self):
        data = KEEPALIVE + UPGRADE + WS_FRAME
        p = Http1Parser(C2S)
        out = p.feed(data, 1, 1)
        assert [h.target for h in heads(out)] == [b"/upload", b"/chunked", b"/next", b"/chat"]
        assert codes(out) == []
        assert p.paused
        assert p.take_rest() == (len(KEEPALIVE) + len(UPGRADE), WS_FRAME)
        assert balanced(p)

    def test_body_bytes_are_not_heads(self):
        body = b"GET /fake HTTP/1.1\r\n\r\n"
        raw = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        p = Http1Parser(C2S)
        out = feed_chunks(p, split_every(raw, 3))
        assert [h.target for h in heads(out)] == [b"/"]
        assert p.decoded_bytes == len(raw)

    def test_request_without_length_has_no_body(self):
        out = Http1Parser(C2S).feed(b"DELETE /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n", 1, 1)
        assert [h.target for h in heads(out)] == [b"/x", b"/y"]

    def test_identical_content_length_list_accepted(self):
        # RFC 9110 §8.6: "Content-Length: 42, 42" may be accepted as 42.
        raw = b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nokGET /n HTTP/1.1\r\n\r\n"
        out = Http1Parser(C2S).feed(raw, 1, 1)
        assert [h.target for h in heads(out)] == [b"/", b"/n"] and codes(out) == []

    def test_head_response_has_no_body(self):
        p = Http1Parser(S2C)
        p.expect_response_to(b"HEAD")
        p.expect_response_to(b"GET")
        raw = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        )
        out = p.feed(raw, 1, 1)
        assert [h.status for h in heads(out)] == [200, 200]
        assert p.decoded_bytes == len(raw) and not p.buffered

    def test_1xx_204_304_have_no_body(self):
        p = Http1Parser(S2C)
        for m in (b"GET", b"GET", b"GET", b"GET", b"GET"):
            p.expect_response_to(m)
        out = p.feed(RESPONSES, 1, 1)
        assert [h.status for h in heads(out)] == [200, 200, 204, 304, 100, 404]
        assert codes(out) == [] and p.decoded_bytes == len(RESPONSES)

    def test_response_until_close(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.0 200 OK\r\n\r\nbody HTTP/1.1 200 OK\r\n\r\n", 1, 1)
        out += p.feed(b"more body", 2, 2) + p.gap(100, 3, 3) + p.feed(b"end", 4, 4)
        out += p.eof(5)
        assert len(heads(out)) == 1 and codes(out) == []
        assert p.undecodable_bytes == 0 and balanced(p)

    def test_response_with_non_chunked_transfer_coding_reads_until_close(self):
        p = Http1Parser(S2C)
        out = p.feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 1, 1
        )
        assert len(heads(out)) == 1 and codes(out) == []

    def test_chunked_response_then_next(self):
        raw = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4 ; ext\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
        )
        p = Http1Parser(S2C)
        out = feed_chunks(p, split_every(raw, 1))
        assert [h.status for h in heads(out)] == [200, 204] and codes(out) == []

    def test_transfer_encoding_and_content_length(self):
        # RFC 9112 §6.3 rule 3: Transfer-Encoding overrides Content-Length.
        raw = (
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /n HTTP/1.1\r\n\r\n"
        )
        out = Http1Parser(C2S).feed(raw, 1, 1)
        assert [h.target for h in heads(out)] == [b"/", b"/n"]
        assert codes(out) == ["http_transfer_encoding_and_length"]

    def test_connect_2xx_starts_a_tunnel(self):
        p = Http1Parser(S2C)
        p.expect_response_to(b"CONNECT")
        out = p.feed(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01", 1, 1)
        assert len(heads(out)) == 1 and p.switched
        assert p.take_rest() == (39, b"\x16\x03\x01")


class TestBodyErrors:
    @pytest.mark.parametrize(
        "raw",
        [
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 17 + b"\r\n",
        ],
    )
    def test_undelimitable_body_stops_the_direction(self, raw):
        p = Http1Parser(C2S)
        out = p.feed(raw, 1, 1)
        assert len(heads(out)) == 1
        assert codes(out) == ["http_body_undecodable"]
        assert p.failed
        assert p.feed(b"GET / HTTP/1.1\r\n\r\n", 2, 2) == []
        assert p.undecodable_bytes >= 18 and balanced(p)

    def test_chunk_size_line_too_long(self):
        p = Http1Parser(C2S, max_head=64)
        out = p.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 1)
        out += p.feed(b"1;" + b"x" * 100, 2, 2)
        assert codes(out) == ["http_body_undecodable"]

    def test_trailer_section_too_large(self):
        p = Http1Parser(C2S, max_head=64)
        out = p.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 1, 1)
        out += p.feed(b"X: " + b"y" * 100 + b"\r\n", 2, 2)
        assert codes(out) == ["http_body_undecodable"]


# --- malformed heads ----------------------------------------------------------------


class TestMalformed:
    @pytest.mark.parametrize(
        "raw",
        [
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",  # a WebSocket frame
            b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
            b"GET\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1x\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET /a\x00b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad(name): x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 preface: SM line has no colon
        ],
    )
    def test_request_side(self, raw):
        p = Http1Parser(C2S)
        out = p.feed(raw, 1, 4)
        assert codes(out) == ["http_malformed_head"]
        f = out[-1]
        assert f.direction == C2S and f.packets == (4,) and f.ts_ns == 1
        assert p.failed and balanced(p)

    @pytest.mark.parametrize(
        "raw",
        [
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
        ],
    )
    def test_response_side(self, raw):
        p = Http1Parser(S2C)
        out = p.feed(raw, 1, 1)
        assert codes(out) == ["http_malformed_head"] and p.failed

    def test_offset_and_packet_of_a_later_malformed_head(self):
        p = Http1Parser(C2S)
        out = p.feed(b"GET / HTTP/1.1\r\n\r\n", 1, 1) + p.feed(b"GET / HT", 2, 2)
        out += p.feed(b"TP/9.x\r\n\r\n", 3, 3)
        (f,) = [e for e in out if isinstance(e, Finding)]
        assert (f.code, f.offset, f.packets, f.ts_ns) == ("http_malformed_head", 18, (2, 3), 3)

    def test_garbage_detected_before_the_line_ends(self):
        p = Http1Parser(C2S)
        assert codes(p.feed(b"\x00", 1, 1)) == ["http_malformed_head"]

    def test_remaining_bytes_counted_undecodable(self):
        p = Http1Parser(C2S)
        p.feed(b"GET / HTTP/1.1\r\n\r\n\x81\x85abcd", 1, 1)
        p.feed(b"12345", 2, 2)
        p.gap(10, 3, 3)
        assert p.decoded_bytes == 18 and p.undecodable_bytes == 11 and p.gap_bytes == 10
        assert p.eof(4) == [] and balanced(p)

    def test_head_too_large(self):
        p = Http1Parser(C2S, max_head=100)
        out = p.feed(b"GET / HTTP/1.1\r\n", 1, 1)
        for i in range(10):
            out += p.feed(b"X-Filler: %08d\r\n" % i, 2 + i, 2 + i)
        assert codes(out) == ["http_head_too_large"] and p.failed and balanced(p)

    def test_start_line_too_large(self):
        p = Http1Parser(C2S, max_head=100)
        out = p.feed(b"GET /" + b"a" * 200, 1, 1)
        assert codes(out) == ["http_head_too_large"]

    def test_head_exactly_at_the_limit_is_accepted(self):
        raw = b"GET / HTTP/1.1\r\nX: " + b"a" * 20 + b"\r\n\r\n"
        p = Http1Parser(C2S, max_head=len(raw))
        assert codes(p.feed(raw, 1, 1)) == [] and not p.failed
        p = Http1Parser(C2S, max_head=len(raw) - 1)
        assert codes(p.feed(raw, 1, 1)) == ["http_head_too_large"]


# --- end of stream --------------------------------------------------------------------


class TestEof:
    def test_truncated_head(self):
        p = Http1Parser(C2S)
        out = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n", 1, 1) + p.eof(9)
        assert codes(out) == ["http_truncated_head"]
        assert out[0].offset == 0 and out[0].ts_ns == 9
        assert p.undecodable_bytes == 25 and balanced(p)

    def test_truncated_body(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1, 1) + p.eof(2)
        assert codes(out) == ["http_truncated_body"] and balanced(p)

    def test_truncated_chunked_body(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 1, 1)
        assert codes(out + p.eof(2)) == ["http_truncated_body"]

    def test_clean_end(self):
        p = Http1Parser(C2S)
        out = p.feed(b"GET / HTTP/1.1\r\n\r\n\r\n", 1, 1) + p.eof(2)
        assert codes(out) == [] and p.decoded_bytes == 20
        assert p.feed(b"GET / HTTP/1.1\r\n\r\n", 3, 3) == [] and p.eof(4) == []

    def test_eof_while_paused_parses_the_held_bytes(self):
        p = Http1Parser(C2S)
        p.feed(UPGRADE + b"GET /after HTTP/1.1\r\n\r\n", 1, 1)
        assert p.paused
        out = p.eof(2)
        assert [h.target for h in heads(out)] == [b"/after"]
        assert balanced(p)


# --- the upgrade: switch, pause, resume -----------------------------------------------


class TestUpgrade:
    def test_101_then_take_rest_returns_the_websocket_bytes(self):
        p = Http1Parser(S2C)
        p.expect_response_to(b"GET")
        out = p.feed(SWITCH + b"\x81\x05Hel", 1, 1)
        assert [h.status for h in heads(out)] == [101] and p.switched
        assert p.feed(b"lo", 2, 2) == []  # held, not parsed
        assert p.take_rest() == (len(SWITCH), b"\x81\x05Hello")
        assert p.taken_bytes == 7 and balanced(p)
        p.stop()
        assert p.feed(b"\x81\x00", 3, 3) == [] and p.gap(5, 4, 4) == [] and p.eof(5) == []
        assert p.take_rest() == (len(SWITCH) + 7, b"")
        assert p.position == len(SWITCH) + 7

    def test_101_without_trailing_bytes(self):
        p = Http1Parser(S2C)
        p.feed(SWITCH, 1, 1)
        assert p.take_rest() == (len(SWITCH), b"")

    def test_client_pauses_after_upgrade_request_mid_feed(self):
        p = Http1Parser(C2S)
        out = p.feed(UPGRADE + WS_FRAME, 1, 1)
        assert len(heads(out)) == 1 and codes(out) == []
        assert p.paused and p.buffered == len(WS_FRAME)
        assert p.feed(WS_FRAME, 2, 2) == []
        assert p.take_rest() == (len(UPGRADE), WS_FRAME + WS_FRAME)
        assert balanced(p)

    def test_pause_again_is_harmless(self):
        p = Http1Parser(C2S)
        p.feed(UPGRADE, 1, 1)
        p.pause()
        assert p.paused

    def test_resume_after_refusal_parses_the_held_requests(self):
        p = Http1Parser(C2S)
        out = p.feed(UPGRADE + b"GET /a HTTP/1.1\r\n", 1, 1)
        assert len(heads(out)) == 1 and p.paused
        assert p.feed(b"\r\nGET /b HTTP/1.1\r\n\r\n", 2, 2) == []
        resumed = p.resume()
        assert [h.target for h in heads(resumed)] == [b"/a", b"/b"]
        assert heads(resumed)[0].packets == (1, 2)
        assert not p.paused and p.feed(b"GET /c HTTP/1.1\r\n\r\n", 3, 3)[0].target == b"/c"
        assert balanced(p)

    def test_resume_when_not_paused(self):
        assert Http1Parser(C2S).resume() == []

    def test_no_pause_without_pause_on(self):
        p = Http1Parser(C2S, pause_on=None)
        out = p.feed(UPGRADE + b"GET /a HTTP/1.1\r\n\r\n", 1, 1)
        assert len(heads(out)) == 2 and not p.paused

    def test_manual_pause_waits_for_the_body_to_end(self):
        p = Http1Parser(C2S, pause_on=None)
        p.feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", 1, 1)
        p.pause()
        assert p.feed(b"cdGET / HTTP/1.1\r\n\r\n", 2, 2) == []
        assert p.take_rest() == (42, b"GET / HTTP/1.1\r\n\r\n")

    def test_hold_buffer_overflow(self):
        p = Http1Parser(C2S, max_head=64)
        req = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        out = p.feed(req, 1, 1) + p.feed(b"a" * 50, 2, 2) + p.feed(b"b" * 50, 3, 3)
        out += p.feed(b"c" * 10, 4, 4)
        assert codes(out) == ["http_upgrade_buffer_overflow"]
        off, rest = p.take_rest()
        assert (off, rest) == (len(req), b"a" * 50 + b"b" * 14)
        assert (
            p.position - (off + len(rest)) == 46
        )  # lost while holding: a gap for the next decoder
        assert p.undecodable_bytes == 46 and balanced(p)

    def test_gap_while_paused_then_resume_resyncs(self):
        p = Http1Parser(C2S)
        p.feed(UPGRADE + b"GET /a HTTP/1.1\r\n\r\nGET /b", 1, 1)
        p.gap(10, 2, 2)
        assert p.feed(b"GET /c HTTP/1.1\r\n\r\n", 3, 3) == []  # dropped: after the hole
        out = p.resume()
        assert [h.target for h in heads(out)] == [b"/a"] and codes(out) == []
        # the partial "GET /b" before the hole is discarded; reported once resynchronised
        later = p.feed(b"GET /d HTTP/1.1\r\n\r\n", 4, 4)
        assert [h.target for h in heads(later)] == [b"/d"] and codes(later) == ["http_resync"]
        assert p.undecodable_bytes == 6 + 19 and p.gap_bytes == 10 and balanced(p)

    def test_upgrade_requested(self):
        def req(*headers):
            return RequestHead(b"GET", b"/", b"HTTP/1.1", headers, 0, (1, 1), 0, 0)

        assert upgrade_requested(req((b"Upgrade", b"WebSocket")))
        assert upgrade_requested(req((b"upgrade", b"h2c, websocket/13")))
        assert upgrade_requested(req((b"Sec-WebSocket-Key", b"x")))
        assert not upgrade_requested(req((b"Upgrade", b"h2c")))
        assert not upgrade_requested(req((b"Host", b"a")))


# --- TCP gaps -------------------------------------------------------------------------


class TestGaps:
    def test_gap_inside_content_length_body_is_skipped(self):
        p = Http1Parser(C2S)
        out = p.feed(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", 1, 1)
        out += p.gap(90, 2, 2)
        out += p.feed(b"defghijGET /n HTTP/1.1\r\n\r\n", 3, 3)
        reqs = heads(out)
        assert [r.target for r in reqs] == [b"/", b"/n"] and codes(out) == []
        assert reqs[1].offset == 40 + 100
        assert p.gap_bytes == 90 and p.undecodable_bytes == 0 and balanced(p)

    def test_gap_inside_chunk_data_is_skipped(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab", 1, 1)
        out += p.gap(10, 2, 2) + p.feed(b"cdef\r\n0\r\n\r\nHTTP/1.1 204 No\r\n\r\n", 3, 3)
        assert [h.status for h in heads(out)] == [200, 204] and codes(out) == []

    def test_gap_inside_a_head_resyncs_on_the_next_start_line(self):
        p = Http1Parser(C2S)
        out = p.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n", 1, 1)
        out += p.gap(20, 2, 2)
        out += p.feed(b"-Agent: y\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 3, 3)
        assert [h.target for h in heads(out)] == [b"/b"]
        (f,) = [e for e in out if isinstance(e, Finding)]
        assert f.code == "http_resync" and f.offset == 0 and f.packets == (1, 3)
        assert p.undecodable_bytes == 26 + 13 and balanced(p)
        assert heads(out)[0].offset == 26 + 20 + 13

    def test_gap_at_a_message_boundary_needs_no_discard(self):
        p = Http1Parser(C2S)
        out = p.feed(b"GET /a HTTP/1.1\r\n\r\n", 1, 1) + p.gap(50, 2, 2)
        out += p.feed(b"GET /b HTTP/1.1\r\n\r\n", 3, 3)
        assert [h.target for h in heads(out)] == [b"/a", b"/b"] and codes(out) == []

    def test_gap_past_the_end_of_a_body_resyncs(self):
        p = Http1Parser(S2C)
        out = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 1, 1) + p.gap(40, 2, 2)
        out += p.feed(b"der: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3, 3)
        assert [h.status for h in heads(out)] == [200, 200]
        assert codes(out) == ["http_resync"]

    def test_resync_never_finds_a_start_line(self):
        p = Http1Parser(C2S)
        out = p.gap(5, 1, 1) + p.feed(b"tail of something\r\nmore\r\n", 2, 2) + p.eof(3)
        assert codes(out) == ["http_resync"] and p.undecodable_bytes == 25 and balanced(p)

    def test_gap_during_resync_keeps_one_finding(self):
        p = Http1Parser(C2S)
        out = p.gap(5, 1, 1) + p.feed(b"junk", 2, 2) + p.gap(5, 3, 3) + p.feed(b"more\r\n", 4, 4)
        out += p.feed(b"GET / HTTP/1.1\r\n\r\n", 5, 5)
        assert codes(out) == ["http_resync"] and len(heads(out)) == 1

    def test_long_line_is_not_a_candidate(self):
        p = Http1Parser(C2S, max_head=32)
        out = p.gap(1, 1, 1) + p.feed(
            b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nGET / HTTP/1.1\r\n\r\n", 2, 2
        )
        assert [h.target for h in heads(out)] == [b"/"] and codes(out) == ["http_resync"]


# --- Hypothesis ----------------------------------------------------------------------


PIECES = [
    UPGRADE,
    SWITCH,
    WS_FRAME,
    b"GET / HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b" folded\r\n",
    b"X: y\r\n",
    b"abc",
]

streams = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join),
)


@st.composite
def chunkings(draw, data: bytes):
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class TestHypothesis:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        direction=st.sampled_from([C2S, S2C]),
        ops=st.lists(
            st.one_of(
                st.binary(min_size=1, max_size=80).map(lambda b: ("feed", b)),
                st.sampled_from(PIECES).map(lambda b: ("feed", b)),
                st.integers(1, 50).map(lambda n: ("gap", n)),
                st.sampled_from(["resume", "take", "pause"]).map(lambda s: (s, None)),
            ),
            max_size=20,
        ),
        max_head=st.sampled_from([16, 64, 65536]),
    )
    def test_arbitrary_input_never_raises(self, direction, ops, max_head):
        p = Http1Parser(direction, max_head=max_head)
        p.expect_response_to(b"HEAD")
        events: list = []
        for i, (op, arg) in enumerate(ops):
            if op == "feed":
                events += p.feed(arg, i, i + 1)
            elif op == "gap":
                events += p.gap(arg, i, i + 1)
            elif op == "resume":
                events += p.resume()
            elif op == "pause":
                p.pause()
            else:
                p.take_rest()
            assert balanced(p)
        events += p.eof(10_000)
        assert balanced(p)
        for e in events:
            assert isinstance(e, (RequestHead, ResponseHead, Finding))
            if isinstance(e, Finding):
                assert e.code in CATALOGUE and e.direction == direction

    @settings(max_examples=300, deadline=None)
    @given(direction=st.sampled_from([C2S, S2C]), data=st.data(), stream=streams)
    def test_chunking_never_changes_the_events(self, direction, data, stream):
        chunks = data.draw(chunkings(stream))
        whole_p = Http1Parser(direction)
        whole = whole_p.feed(stream, 7, 1) + whole_p.eof(8)
        p = Http1Parser(direction)
        split = feed_chunks(p, chunks, 7, 1) + p.eof(8)
        assert split == whole
        assert (p.decoded_bytes, p.undecodable_bytes) == (
            whole_p.decoded_bytes,
            whole_p.undecodable_bytes,
        )
        assert p.take_rest() == whole_p.take_rest()

    @settings(max_examples=150, deadline=None)
    @given(data=st.data(), stream=streams, gap_at=st.integers(0, 300), gap_len=st.integers(1, 40))
    def test_chunking_with_a_gap_never_changes_the_events(self, data, stream, gap_at, gap_len):
        gap_at = min(gap_at, len(stream))
        before, after = stream[:gap_at], stream[gap_at:]
        results = []
        for chunker in (lambda b: [b] if b else [], lambda b: data.draw(chunkings(b)) if b else []):
            p = Http1Parser(Direction.CLIENT_TO_SERVER, pause_on=None)
            ev = feed_chunks(p, chunker(before), 1, 1) + p.gap(gap_len, 2, 2)
            ev += feed_chunks(p, chunker(after), 3, 3) + p.eof(4)
            assert balanced(p)
            results.append(ev)
        assert results[0] == results[1]

    @settings(max_examples=200, deadline=None)
    @given(direction=st.sampled_from([C2S, S2C]), data=st.data(), stream=streams)
    def test_evidence_follows_the_bytes(self, direction, data, stream):
        """Each chunk is its own packet: a head's packets are those of its first and
        last byte, its time that of its last byte, whatever the chunking."""
        chunks = data.draw(chunkings(stream))
        p = Http1Parser(direction)
        events, starts, off = [], [], 0
        for k, c in enumerate(chunks):
            starts.append(off)
            off += len(c)
            events += p.feed(c, 100 + k, k + 1)
        whole = Http1Parser(direction).feed(stream, 1, 1)
        assert [strip_evidence(e) for e in events] == [strip_evidence(e) for e in whole]

        def packet_of(o: int) -> int:
            return bisect_right(starts, o)

        for h in heads(events):
            last = packet_of(h.offset + h.length - 1)
            assert h.packets == (packet_of(h.offset), last)
            assert h.ts_ns == 100 + last - 1
