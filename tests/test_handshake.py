"""Tests for wsanalyze.handshake: the RFC 6455 §4 opening handshake checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsanalyze.catalogue import CATALOGUE
from wsanalyze.handshake import (
    GUID,
    Handshake,
    accept_for,
    check_handshake,
    is_upgrade_request,
    parse_extensions,
)
from wsanalyze.http1 import Http1Parser
from wsanalyze.model import Direction, RequestHead, ResponseHead

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

REQUEST_HEADERS = (
    (b"Host", b"server.example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Origin", b"http://example.com"),
    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
    (b"Sec-WebSocket-Version", b"13"),
)
RESPONSE_HEADERS = (
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Accept", ACCEPT),
    (b"Sec-WebSocket-Protocol", b"chat"),
)


def request(
    headers=REQUEST_HEADERS, *, method=b"GET", version=b"HTTP/1.1", drop=(), extra=()
) -> RequestHead:
    drop_l = {d.lower() for d in drop}
    hdrs = tuple(h for h in headers if h[0].lower() not in drop_l) + tuple(extra)
    return RequestHead(
        method, b"/chat", version, hdrs, ts_ns=1_000, packets=(4, 5), offset=0, length=200
    )


def response(
    status=101, reason=b"Switching Protocols", headers=RESPONSE_HEADERS, *, drop=(), extra=()
) -> ResponseHead:
    drop_l = {d.lower() for d in drop}
    hdrs = tuple(h for h in headers if h[0].lower() not in drop_l) + tuple(extra)
    return ResponseHead(
        b"HTTP/1.1", status, reason, hdrs, ts_ns=2_000, packets=(7, 7), offset=0, length=129
    )


def codes(hs: Handshake) -> list[str]:
    return [f.code for f in hs.findings]


# --- RFC 6455 §4.2.2: Sec-WebSocket-Accept --------------------------------------------


class TestAccept:
    def test_rfc_example(self):
        assert accept_for(KEY) == ACCEPT

    def test_key_whitespace_ignored(self):
        assert accept_for(b"  " + KEY + b"\t") == ACCEPT

    def test_guid(self):
        assert GUID == b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class TestIsUpgradeRequest:
    @pytest.mark.parametrize(
        "headers",
        [
            ((b"Upgrade", b"websocket"),),
            ((b"upgrade", b"WebSocket"),),
            ((b"Upgrade", b"h2c, websocket"),),
            ((b"Upgrade", b"foo"), (b"Upgrade", b"websocket")),
            ((b"Sec-WebSocket-Key", KEY),),  # Upgrade dropped by a proxy
        ],
    )
    def test_yes(self, headers):
        assert is_upgrade_request(request(headers))

    @pytest.mark.parametrize(
        "headers", [(), ((b"Upgrade", b"h2c"),), ((b"Connection", b"Upgrade"),)]
    )
    def test_no(self, headers):
        assert not is_upgrade_request(request(headers))


# --- RFC 6455 §9.1: Sec-WebSocket-Extensions -----------------------------------------


class TestParseExtensions:
    def test_rfc_style_example(self):
        assert parse_extensions(
            [b"permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"]
        ) == [
            ("permessage-deflate", [("client_max_window_bits", None)]),
            ("x-webkit-deflate-frame", []),
        ]

    def test_values_tokens_and_quoted_strings(self):
        value = b'foo; a=1; b="x, y; z"; c = "q\\"uote" ;d, bar;e="\\\\"'
        assert parse_extensions([value]) == [
            ("foo", [("a", "1"), ("b", "x, y; z"), ("c", 'q"uote'), ("d", None)]),
            ("bar", [("e", "\\")]),
        ]

    def test_several_fields_combine_in_order(self):
        out = parse_extensions([b"permessage-deflate; server_no_context_takeover", b"x-y"])
        assert [name for name, _ in out] == ["permessage-deflate", "x-y"]
        assert out[0][1] == [("server_no_context_takeover", None)]

    def test_empty_elements_skipped(self):
        assert parse_extensions([b" , ,a;;b=2,", b""]) == [("a", [("b", "2")])]

    def test_unterminated_quote_is_kept(self):
        assert parse_extensions([b'a; b="open']) == [("a", [("b", "open")])]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=60), max_size=4))
    def test_never_raises(self, values):
        for name, params in parse_extensions(values):
            assert isinstance(name, str) and name
            assert all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in params)


# --- RFC 6455 §4.1 / §4.2.2: check_handshake ------------------------------------------


class TestSuccess:
    def test_rfc_example_handshake(self):
        hs = check_handshake(request(), response())
        assert hs.findings == ()
        assert hs.websocket and hs.accept_ok is True
        assert (hs.key, hs.accept, hs.version) == (KEY, ACCEPT, b"13")
        assert hs.subprotocols_offered == ("chat", "superchat")
        assert hs.subprotocol == "chat"
        assert hs.extensions == () and not hs.deflate

    def test_case_insensitive_tokens(self):
        req = request(
            drop=[b"Upgrade", b"Connection"],
            extra=[(b"UPGRADE", b"WebSocket"), (b"connection", b"keep-alive, upgrade")],
        )
        resp = response(
            drop=[b"Upgrade", b"Connection"],
            extra=[(b"upgrade", b"WEBSOCKET"), (b"CONNECTION", b"UPGRADE")],
        )
        hs = check_handshake(req, resp)
        assert hs.findings == () and hs.websocket

    def test_permessage_deflate_accepted(self):
        req = request(
            extra=[
                (
                    b"Sec-WebSocket-Extensions",
                    b"permessage-deflate; client_max_window_bits, x-webkit-deflate-frame",
                )
            ]
        )
        resp = response(
            extra=[(b"Sec-WebSocket-Extensions", b"permessage-deflate; server_no_context_takeover")]
        )
        hs = check_handshake(req, resp)
        assert hs.findings == () and hs.deflate
        assert hs.extensions_offered == (
            ("permessage-deflate", (("client_max_window_bits", None),)),
            ("x-webkit-deflate-frame", ()),
        )
        assert hs.extensions == (("permessage-deflate", (("server_no_context_takeover", None),)),)

    def test_no_subprotocol_selected(self):
        hs = check_handshake(request(), response(drop=[b"Sec-WebSocket-Protocol"]))
        assert hs.findings == () and hs.subprotocol is None

    def test_no_response(self):
        hs = check_handshake(request(), None)
        assert (
            hs.findings == () and not hs.websocket and hs.accept_ok is None and hs.response is None
        )

    def test_not_a_websocket_request(self):
        req = request(((b"Host", b"a"),))
        hs = check_handshake(req, response(200, b"OK", ()))
        assert hs.findings == () and not hs.websocket

    def test_from_parsed_heads(self):
        c, s = Http1Parser(C2S), Http1Parser(S2C)
        raw_req = (
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % KEY
        )
        raw_resp = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
            % ACCEPT
        )
        (req,) = c.feed(raw_req, 10, 1)
        (resp,) = s.feed(raw_resp, 20, 3)
        hs = check_handshake(req, resp)
        assert hs.websocket and hs.accept_ok and hs.findings == ()


class TestFindings:
    def test_refused(self):
        hs = check_handshake(request(), response(400, b"Bad Request", ()))
        assert codes(hs) == ["handshake_refused"] and not hs.websocket
        assert "400" in hs.findings[0].detail and "Bad Request" in hs.findings[0].detail
        assert hs.accept_ok is None and hs.extensions == ()

    def test_refused_426_with_versions(self):
        hs = check_handshake(
            request(), response(426, b"Upgrade Required", ((b"Sec-WebSocket-Version", b"13, 8"),))
        )
        assert codes(hs) == ["handshake_refused"]

    def test_wrong_accept_still_websocket(self):
        hs = check_handshake(
            request(),
            response(
                drop=[b"Sec-WebSocket-Accept"],
                extra=[(b"Sec-WebSocket-Accept", b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
            ),
        )
        assert codes(hs) == ["handshake_wrong_accept"]
        assert hs.websocket and hs.accept_ok is False
        assert ACCEPT.decode() in hs.findings[0].detail

    def test_missing_accept(self):
        hs = check_handshake(request(), response(drop=[b"Sec-WebSocket-Accept"]))
        assert (
            codes(hs) == ["handshake_wrong_accept"] and hs.accept_ok is False and hs.accept is None
        )

    def test_accept_for_a_rewritten_key(self):
        # a proxy rewrote the key towards the server but passed the server's accept back
        other = b"AQIDBAUGBwgJCgsMDQ4PEA=="
        hs = check_handshake(
            request(drop=[b"Sec-WebSocket-Key"], extra=[(b"Sec-WebSocket-Key", other)]), response()
        )
        assert codes(hs) == ["handshake_wrong_accept"]

    def test_missing_key(self):
        hs = check_handshake(
            request(drop=[b"Sec-WebSocket-Key"]), response(drop=[b"Sec-WebSocket-Accept"])
        )
        assert codes(hs) == ["handshake_missing_key"]
        assert hs.key is None and hs.accept_ok is None and hs.websocket

    @pytest.mark.parametrize(
        "key",
        [
            b"short",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"!!!!!!!!!!!!!!!!!!!!!!==",
            b"dGhlIHNhbXBsZSBub25jZSE=",
        ],
    )
    def test_invalid_key(self, key):
        hs = check_handshake(
            request(drop=[b"Sec-WebSocket-Key"], extra=[(b"Sec-WebSocket-Key", key)]), None
        )
        assert codes(hs) == ["handshake_missing_key"]

    def test_repeated_key(self):
        hs = check_handshake(request(extra=[(b"Sec-WebSocket-Key", KEY)]), None)
        assert codes(hs) == ["handshake_missing_key"]

    def test_upgrade_dropped_by_proxy(self):
        hs = check_handshake(request(drop=[b"Upgrade"]), response(400, b"Bad Request", ()))
        assert codes(hs) == ["handshake_missing_upgrade", "handshake_refused"]
        assert "Upgrade" in hs.findings[0].detail

    def test_connection_lacks_upgrade(self):
        req = request(drop=[b"Connection"], extra=[(b"Connection", b"keep-alive")])
        hs = check_handshake(req, None)
        assert codes(hs) == ["handshake_missing_upgrade"]
        assert "Connection" in hs.findings[0].detail

    def test_both_hop_by_hop_fields_dropped(self):
        hs = check_handshake(request(drop=[b"Upgrade", b"Connection"]), None)
        assert codes(hs) == ["handshake_missing_upgrade", "handshake_missing_upgrade"]

    @pytest.mark.parametrize("versions", [(), (b"8",), (b"13", b"13"), (b"13, 8",)])
    def test_bad_version(self, versions):
        req = request(
            drop=[b"Sec-WebSocket-Version"], extra=[(b"Sec-WebSocket-Version", v) for v in versions]
        )
        assert codes(check_handshake(req, None)) == ["handshake_bad_version"]

    @pytest.mark.parametrize(
        "method,version", [(b"POST", b"HTTP/1.1"), (b"GET", b"HTTP/1.0"), (b"GET", b"HTTP/0.9")]
    )
    def test_bad_request_line(self, method, version):
        hs = check_handshake(request(method=method, version=version), None)
        assert codes(hs) == ["handshake_bad_request_line"]

    def test_subprotocol_not_offered(self):
        resp = response(
            drop=[b"Sec-WebSocket-Protocol"],
            extra=[(b"Sec-WebSocket-Protocol", b"v4.channel.k8s.io")],
        )
        hs = check_handshake(request(), resp)
        assert codes(hs) == ["handshake_subprotocol_not_offered"]
        assert hs.subprotocol == "v4.channel.k8s.io" and hs.websocket

    def test_subprotocol_when_none_offered(self):
        hs = check_handshake(request(drop=[b"Sec-WebSocket-Protocol"]), response())
        assert codes(hs) == ["handshake_subprotocol_not_offered"]

    def test_several_subprotocols_selected(self):
        resp = response(
            drop=[b"Sec-WebSocket-Protocol"],
            extra=[(b"Sec-WebSocket-Protocol", b"chat, superchat")],
        )
        assert codes(check_handshake(request(), resp)) == ["handshake_subprotocol_not_offered"]

    def test_extension_not_offered(self):
        resp = response(extra=[(b"Sec-WebSocket-Extensions", b"permessage-deflate")])
        hs = check_handshake(request(), resp)
        assert codes(hs) == ["handshake_extension_not_offered"]
        assert hs.deflate  # the endpoints will use it: RSV1 must be accepted

    def test_extension_names_compare_case_insensitively(self):
        req = request(extra=[(b"Sec-WebSocket-Extensions", b"PerMessage-Deflate")])
        resp = response(extra=[(b"Sec-WebSocket-Extensions", b"permessage-deflate")])
        assert codes(check_handshake(req, resp)) == []

    def test_101_without_connection_upgrade(self):
        hs = check_handshake(request(), response(drop=[b"Connection"]))
        assert codes(hs) == ["handshake_incomplete_101"]
        assert "Connection" in hs.findings[0].detail
        assert hs.websocket  # the endpoints switched: decode what follows

    def test_101_stripped_of_hop_by_hop_fields(self):
        hs = check_handshake(request(), response(drop=[b"Connection", b"Upgrade"]))
        assert codes(hs) == ["handshake_incomplete_101", "handshake_incomplete_101"]
        assert hs.websocket

    def test_101_to_another_protocol(self):
        resp = response(drop=[b"Upgrade"], extra=[(b"Upgrade", b"h2c")])
        hs = check_handshake(request(), resp)
        assert "handshake_incomplete_101" in codes(hs) and not hs.websocket

    def test_finding_evidence(self):
        req = request(drop=[b"Sec-WebSocket-Version"])
        resp = response(drop=[b"Sec-WebSocket-Accept"])
        hs = check_handshake(req, resp)
        by_code = {f.code: f for f in hs.findings}
        f = by_code["handshake_bad_version"]
        assert (f.direction, f.packets, f.offset, f.ts_ns) == (C2S, (4, 5), 0, 1_000)
        f = by_code["handshake_wrong_accept"]
        assert (f.direction, f.packets, f.ts_ns) == (S2C, (4, 5, 7), 2_000)
        assert all(
            f.code in CATALOGUE and f.severity == CATALOGUE[f.code].severity for f in hs.findings
        )


class TestNeverRaises:
    header_names = st.sampled_from(
        [
            b"Upgrade",
            b"Connection",
            b"Sec-WebSocket-Key",
            b"Sec-WebSocket-Version",
            b"Sec-WebSocket-Protocol",
            b"Sec-WebSocket-Extensions",
            b"Sec-WebSocket-Accept",
            b"X",
        ]
    )
    headers = st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=8).map(tuple)

    @settings(max_examples=300, deadline=None)
    @given(
        req_headers=headers,
        resp_headers=headers,
        status=st.one_of(st.none(), st.integers(0, 999)),
        method=st.sampled_from([b"GET", b"POST", b"CONNECT"]),
        version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]),
    )
    def test_any_heads(self, req_headers, resp_headers, status, method, version):
        req = request(req_headers, method=method, version=version)
        resp = None if status is None else response(status, b"", resp_headers)
        hs = check_handshake(req, resp)
        assert all(f.code in CATALOGUE for f in hs.findings)
        assert not hs.websocket or (resp is not None and resp.status == 101)
        assert hs.accept_ok is None or resp is not None


def test_subprotocol_that_is_not_a_token():
    """RFC 6455 §4.1: sub-protocol names are tokens; Kubernetes bearer names are."""
    k8s = (
        b"Sec-WebSocket-Protocol",
        b"v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.a_-1",
    )
    ok = request(drop=(b"Sec-WebSocket-Protocol",), extra=(k8s,))
    assert "handshake_bad_subprotocol_token" not in codes(check_handshake(ok, None))
    hostile = (b"Sec-WebSocket-Protocol", b"<script>x</script>")
    bad = request(drop=(b"Sec-WebSocket-Protocol",), extra=(hostile,))
    assert "handshake_bad_subprotocol_token" in codes(check_handshake(bad, None))
