"""What the proxy did, from both legs (wsanalyze.diagnose): the close across the proxy
(idle timeout, backend gone, close not propagated, close code changed) and the
handshake (Upgrade/Connection dropped or altered, refusal statuses, key and accept,
sub-protocols and extensions, duplicated fields, a response never forwarded). Each
code on a crafted two-leg capture; the real nginx/HAProxy captures end to end."""

from __future__ import annotations

import pytest
from conftest import capture_paths
from craft import (
    CLOSE,
    PING,
    TEXT,
    Msg,
    ProxiedLegs,
    accept_for,
    nginx_like,
    switching_headers,
    write_legs,
    write_pcap,
    ws_key,
)

import wsanalyze
from wsanalyze import catalogue
from wsanalyze.closing import close_story
from wsanalyze.diagnose import STATUS_CODES, idle_timeout_setting, proxy_idle_ns
from wsanalyze.model import Severity

S = 1_000_000  # µs per second (craft times are µs)

NEW_CODES = {
    "proxy_idle_timeout",
    "proxy_backend_vanished",
    "proxy_close_not_propagated",
    "proxy_close_code_changed",
    "proxy_upgrade_header_altered",
    "proxy_response_upgrade_header_dropped",
    "proxy_key_changed",
    "proxy_accept_not_recomputed",
    "proxy_subprotocol_stripped",
    "proxy_subprotocol_changed",
    "proxy_extension_stripped",
    "proxy_extension_changed",
    "proxy_header_duplicated",
    "proxy_response_not_forwarded",
    "ws_close_not_completed",
    "ws_abnormal_closure",
    "ws_closed_by_rst",
    *STATUS_CODES.values(),
}


def _analyze(tmp_path, *convs, clock_offset_ms=None):
    client, server = write_legs(tmp_path, convs)
    return wsanalyze.analyze(client, server, strict=True, clock_offset_ms=clock_offset_ms)


def _codes(a) -> list[str]:
    return [f.code for f in a.finding_list]


def _only(a, code: str):
    found = [f for f in a.finding_list if f.code == code]
    assert len(found) == 1, (code, _codes(a))
    return found[0]


def test_new_codes_are_catalogued():
    assert NEW_CODES <= set(catalogue.CATALOGUE)
    for code in NEW_CODES:
        assert catalogue.CATALOGUE[code].check, code


def test_a_clean_proxied_websocket_has_none_of_the_new_codes(tmp_path):
    conv = nginx_like(1, messages=[Msg("c2s", TEXT, b"hi"), Msg("s2c", TEXT, b"hi")])
    a = _analyze(tmp_path, conv)
    assert len(a.correlation.pairs) == 1
    assert not set(_codes(a)) & NEW_CODES


# --- the close across the proxy -------------------------------------------------------------


def _idle_legs(idle_us: int, *, server_clock_us: int = 0) -> ProxiedLegs:
    """Both legs idle for ``idle_us``, then the proxy closes the server leg and, 106 µs
    later, the client leg (as nginx does); each peer answers with its FIN."""
    legs = ProxiedLegs(server_clock_us=server_clock_us)
    t = legs.websocket(messages=2) + idle_us
    legs.fin("s", "c", t)
    legs.fin("c", "s", t + 106)
    legs.fin("s", "s", t + 500)
    legs.fin("c", "c", t + 900)
    return legs


@pytest.mark.parametrize("clock_us", [0, 2_500_000, -7_000_000])
def test_idle_timeout(tmp_path, clock_us):
    a = _analyze(tmp_path, _idle_legs(60 * S, server_clock_us=clock_us))
    codes = _codes(a)
    f = _only(a, "proxy_idle_timeout")
    assert f.severity == Severity.WARNING and f.capture == "client"
    (pair,) = a.correlation.pairs
    assert f.connections == (pair.client.id, pair.server.id)
    assert not {"proxy_close_not_propagated", "proxy_backend_vanished"} & set(codes)
    theta = a.correlation.clock_offset.estimate_ns
    idle = proxy_idle_ns(close_story(pair.client), close_story(pair.server), theta)
    assert idle is not None and abs(idle - 60e9) < 5e6
    assert idle_timeout_setting(idle).startswith("matches")


def test_idle_timeout_of_an_unknown_value(tmp_path):
    a = _analyze(tmp_path, _idle_legs(7 * S))
    _only(a, "proxy_idle_timeout")
    assert idle_timeout_setting(7_000_000_000).startswith("an idle timeout")


def test_a_short_silence_is_not_an_idle_timeout(tmp_path):
    a = _analyze(tmp_path, _idle_legs(300_000))
    assert "proxy_idle_timeout" not in _codes(a)


def test_idle_timeout_with_both_legs_in_one_capture(tmp_path):
    cpk, spk = _idle_legs(60 * S).build()
    path = write_pcap(tmp_path / "proxyhost.pcap", cpk + spk)
    a = wsanalyze.analyze(path, strict=True)
    assert a.correlation is not None and len(a.correlation.pairs) == 1
    _only(a, "proxy_idle_timeout")


@pytest.mark.parametrize("kind", ["rst", "fin"])
def test_backend_vanished(tmp_path, kind):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 50_000
    getattr(legs, kind)("s", "s", t)  # the server goes away, no close frame
    if kind == "fin":
        legs.fin("s", "c", t + 100)
    legs.fin("c", "s", t + 133)  # the proxy closes the client leg
    legs.fin("c", "c", t + 400)
    a = _analyze(tmp_path, legs)
    f = _only(a, "proxy_backend_vanished")
    (pair,) = a.correlation.pairs
    assert f.connections == (pair.server.id, pair.client.id) and f.capture == "server"
    assert not {"proxy_idle_timeout", "proxy_close_not_propagated"} & set(_codes(a))


def test_backend_vanished_needs_the_proxy_to_close_the_client_leg_after(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 50_000
    legs.fin("c", "c", t)  # the client left first
    legs.rst("s", "s", t + 5_000)
    legs.fin("c", "s", t + 5_100)
    a = _analyze(tmp_path, legs)
    assert "proxy_backend_vanished" not in _codes(a)


def _server_closes_server_leg(legs: ProxiedLegs, t: int) -> None:
    legs.close("s", "s", 1000, b"done", t)
    legs.close("s", "c", 1000, b"done", t + 100)
    legs.fin("s", "s", t + 200)
    legs.fin("s", "c", t + 300)


def test_close_not_propagated_leg_left_open(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 10_000
    _server_closes_server_leg(legs, t)
    legs.frame("c", "c", PING, b"anyone?", t + 2 * S)  # the client leg lives on
    legs.frame("c", "c", PING, b"anyone?", t + 5 * S)
    a = _analyze(tmp_path, legs)
    f = _only(a, "proxy_close_not_propagated")
    (pair,) = a.correlation.pairs
    assert f.connections == (pair.server.id, pair.client.id)
    assert "proxy_close_code_changed" not in _codes(a)


def test_close_not_propagated_leg_closed_much_later(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 10_000
    _server_closes_server_leg(legs, t)
    legs.fin("c", "s", t + 3 * S)
    legs.fin("c", "c", t + 3 * S + 300)
    a = _analyze(tmp_path, legs)
    _only(a, "proxy_close_not_propagated")
    # And the server's close 1000 reached the client as a bare FIN (1006).
    _only(a, "proxy_close_code_changed")


def test_close_not_propagated_needs_the_other_capture_to_go_on(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 10_000
    _server_closes_server_leg(legs, t)
    legs.frame("c", "c", PING, b"x", t + 400_000)  # the client capture stops 0.4 s later
    a = _analyze(tmp_path, legs)
    assert "proxy_close_not_propagated" not in _codes(a)


def test_close_code_changed(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2) + 10_000
    legs.close("c", "c", 1000, b"bye", t)
    legs.close("s", "c", 1001, b"proxy going away", t + 200)  # the proxy's own close
    legs.close("s", "s", 1001, b"proxy going away", t + 400)
    legs.close("c", "s", 1001, b"proxy going away", t + 600)
    legs.fin("s", "s", t + 700)
    legs.fin("s", "c", t + 800)
    legs.fin("c", "s", t + 900)
    legs.fin("c", "c", t + 1000)
    a = _analyze(tmp_path, legs)
    f = _only(a, "proxy_close_code_changed")
    (pair,) = a.correlation.pairs
    assert f.connections == (pair.server.id, pair.client.id) and f.capture == "server"
    assert not {"ws_close_not_completed", "proxy_close_not_propagated"} & set(_codes(a))


def test_close_code_unchanged_through_the_proxy(tmp_path):
    conv = nginx_like(1, messages=[Msg("c2s", TEXT, b"a")], close=(4001, b"app reason"))
    a = _analyze(tmp_path, conv)
    assert "proxy_close_code_changed" not in _codes(a)


# --- the handshake ------------------------------------------------------------------------


def _replace(headers, name: str, value: str | None):
    out = [(n, v) for n, v in headers if n.lower() != name.lower()]
    if value is not None:
        out.insert(0, (name, value))
    return out


@pytest.mark.parametrize(
    ("header", "value"), [("Upgrade", "WebSocket2"), ("Connection", "keep-alive")]
)
def test_upgrade_header_altered(tmp_path, header, value):
    conv = nginx_like(1, status=400, reason="Bad Request")
    conv.server_headers = _replace(conv.server_headers, header, value)
    a = _analyze(tmp_path, conv)
    codes = _codes(a)
    f = _only(a, "proxy_upgrade_header_altered")
    assert f.capture == "server" and f.severity == Severity.ERROR
    assert "proxy_upgrade_header_dropped" not in codes
    assert "handshake_status_400" in codes


def test_upgrade_header_dropped_still_reported(tmp_path):
    conv = nginx_like(1, status=426, reason="Upgrade Required")
    conv.server_headers = _replace(conv.server_headers, "Upgrade", None)
    conv.server_headers = _replace(conv.server_headers, "Connection", "close")
    a = _analyze(tmp_path, conv)
    codes = _codes(a)
    _only(a, "proxy_upgrade_header_dropped")
    assert "proxy_upgrade_header_altered" not in codes
    assert "handshake_status_426" in codes
    assert "proxy_handshake_refused_by_server" not in codes


def test_http10_to_backend_still_reported(tmp_path):
    conv = nginx_like(1, status=505, reason="HTTP Version Not Supported", server_version="HTTP/1.0")
    a = _analyze(tmp_path, conv)
    _only(a, "proxy_http10_to_backend")
    _only(a, "handshake_status_505")


STATUS_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


@pytest.mark.parametrize("status", sorted(STATUS_CODES))
def test_refusal_status_relayed_from_the_server(tmp_path, status):
    a = _analyze(tmp_path, nginx_like(1, status=status, reason=STATUS_REASONS[status]))
    f = _only(a, STATUS_CODES[status])
    (pair,) = a.correlation.pairs
    assert f.capture == "client" and f.connections == (pair.client.id, pair.server.id)
    assert f.packets and all(p > 0 for p in f.packets)
    expected = Severity.ERROR if status >= 500 else Severity.WARNING
    assert f.severity == expected
    assert "proxy_handshake_refused_by_server" in _codes(a)
    assert "proxy_status_changed" not in _codes(a)


def test_refusal_status_made_by_the_proxy(tmp_path):
    conv = nginx_like(1, status=500, reason="Internal Server Error")
    a0 = _analyze(tmp_path, conv)
    assert "handshake_status_500" in _codes(a0)
    # The server answered 500; the client got 502 from the proxy.
    legs = ProxiedLegs()
    legs.open("c", 0)
    legs.request("c", legs.client_headers(), 100)
    legs.open("s", 300)
    legs.request("s", legs.server_headers(), 340)
    legs.response("s", 500, "Internal Server Error", [("Content-Length", "0")], 500)
    legs.response("c", 502, "Bad Gateway", [("Content-Length", "0")], 700)
    legs.fin("c", "c", 900)
    legs.fin("c", "s", 950)
    legs.fin("s", "c", 920)
    legs.fin("s", "s", 960)
    (tmp_path / "b").mkdir()
    a = _analyze(tmp_path / "b", legs)
    codes = _codes(a)
    assert "handshake_status_502" in codes and "proxy_status_changed" in codes


def test_502_with_no_server_side_connection(tmp_path):
    lone = ProxiedLegs(1)
    lone.open("c", 0)
    lone.request("c", lone.client_headers(), 100)
    lone.response("c", 502, "Bad Gateway", [("Content-Length", "0")], 3000)
    lone.fin("c", "c", 3500)
    lone.fin("c", "s", 3600)
    healthy = nginx_like(2, messages=[Msg("c2s", TEXT, b"x")], start_us=10_000)
    cpk, _ = lone.build()
    hc, hs = healthy.build()
    client = write_pcap(tmp_path / "client.pcap", cpk + hc)
    server = write_pcap(tmp_path / "server.pcap", hs)
    a = wsanalyze.analyze(client, server, strict=True)
    f = _only(a, "handshake_status_502")
    assert len(f.connections) == 1 and f.capture == "client"
    assert "proxy_no_server_connection" in _codes(a)


def _unanswered_server_leg(legs: ProxiedLegs, status: int, end: str) -> None:
    legs.open("c", 0)
    legs.request("c", legs.client_headers(), 100)
    legs.open("s", 300)
    legs.request("s", legs.server_headers(), 340)
    if end == "proxy_gives_up":
        legs.fin("s", "c", 5 * S)
        legs.fin("s", "s", 5 * S + 100)
    else:
        legs.rst("s", "s", 2000)
    legs.response("c", status, STATUS_REASONS[status], [("Content-Length", "0")], 5 * S + 200)
    legs.fin("c", "c", 5 * S + 400)
    legs.fin("c", "s", 5 * S + 500)


@pytest.mark.parametrize(
    ("status", "end"), [(504, "proxy_gives_up"), (503, "server_resets"), (502, "server_resets")]
)
def test_5xx_with_an_unanswered_server_leg(tmp_path, status, end):
    legs = ProxiedLegs()
    _unanswered_server_leg(legs, status, end)
    a = _analyze(tmp_path, legs)
    f = _only(a, STATUS_CODES[status])
    (pair,) = a.correlation.pairs
    assert f.connections == (pair.client.id, pair.server.id)
    assert "http_no_response" in _codes(a)  # the server leg's request, unanswered


def test_response_not_forwarded(tmp_path):
    legs = ProxiedLegs()
    key = ws_key(legs.n)
    legs.open("c", 0)
    legs.request("c", legs.client_headers(), 100)
    legs.open("s", 300)
    legs.request("s", legs.server_headers(), 340)
    legs.response("s", 101, "Switching Protocols", switching_headers(key), 500)
    legs.fin("c", "c", 2 * S)  # the client gives up
    legs.fin("c", "s", 2 * S + 100)
    a = _analyze(tmp_path, legs)
    f = _only(a, "proxy_response_not_forwarded")
    (pair,) = a.correlation.pairs
    assert f.capture == "server" and f.connections == (pair.server.id, pair.client.id)
    assert "http_no_response" in _codes(a)  # on the client leg


def test_response_upgrade_header_dropped(tmp_path):
    legs = ProxiedLegs()
    key = ws_key(legs.n)
    legs.open("c", 0)
    legs.request("c", legs.client_headers(), 100)
    legs.open("s", 300)
    legs.request("s", legs.server_headers(), 340)
    legs.response("s", 101, "Switching Protocols", switching_headers(key), 500)
    legs.response(
        "c",
        101,
        "Switching Protocols",
        [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", accept_for(key))],
        700,
    )
    a = _analyze(tmp_path, legs)
    _only(a, "proxy_response_upgrade_header_dropped")


def test_key_changed_with_the_accept_recomputed(tmp_path):
    conv = nginx_like(1, pass_key=False, messages=[Msg("c2s", TEXT, b"unique-1")])
    a = _analyze(tmp_path, conv)
    f = _only(a, "proxy_key_changed")
    assert f.severity == Severity.INFO
    assert "proxy_accept_not_recomputed" not in _codes(a)


def test_key_changed_and_the_servers_accept_relayed(tmp_path):
    legs = ProxiedLegs()
    ckey, skey = ws_key(1), ws_key(1001)
    legs.open("c", 0)
    legs.request("c", legs.client_headers(key=ckey), 100)
    legs.open("s", 300)
    legs.request("s", legs.server_headers(key=skey), 340)
    legs.response("s", 101, "Switching Protocols", switching_headers(skey), 500)
    legs.response("c", 101, "Switching Protocols", switching_headers(skey), 700)
    for i, t in enumerate((10_000, 20_000)):
        legs.frame("c", "c", TEXT, f"unique-{i}".encode(), t)
        legs.frame("s", "c", TEXT, f"unique-{i}".encode(), t + 200)
    a = _analyze(tmp_path, legs)
    assert len(a.correlation.pairs) == 1
    _only(a, "proxy_key_changed")
    f = _only(a, "proxy_accept_not_recomputed")
    assert f.severity == Severity.ERROR


def test_subprotocol_stripped(tmp_path):
    conv = nginx_like(1)
    offer = ("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io")
    conv.client_headers.append(offer)
    a = _analyze(tmp_path, conv)
    _only(a, "proxy_subprotocol_stripped")
    assert "proxy_subprotocol_changed" not in _codes(a)


def test_subprotocol_changed(tmp_path):
    conv = nginx_like(1)
    conv.client_headers.append(("Sec-WebSocket-Protocol", "v5.channel.k8s.io"))
    conv.server_headers.append(("Sec-WebSocket-Protocol", "v4.channel.k8s.io"))
    conv.server_response = [("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]
    conv.client_response = [("Sec-WebSocket-Protocol", "v5.channel.k8s.io")]
    a = _analyze(tmp_path, conv)
    f = _only(a, "proxy_subprotocol_changed")
    assert f.severity == Severity.ERROR
    assert "proxy_subprotocol_stripped" not in _codes(a)


def test_subprotocol_negotiated_the_same_on_both_legs(tmp_path):
    proto = ("Sec-WebSocket-Protocol", "chat")
    conv = nginx_like(1, extra=[proto], client_response=[proto], server_response=[proto])
    a = _analyze(tmp_path, conv)
    assert not {"proxy_subprotocol_changed", "proxy_subprotocol_stripped"} & set(_codes(a))


def test_extension_stripped(tmp_path):
    conv = nginx_like(1)
    conv.client_headers.append(
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
    )
    a = _analyze(tmp_path, conv)
    _only(a, "proxy_extension_stripped")
    assert "proxy_extension_changed" not in _codes(a)


def test_extension_changed(tmp_path):
    ext = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
    conv = nginx_like(
        1, extra=[ext], server_response=[("Sec-WebSocket-Extensions", "permessage-deflate")]
    )
    a = _analyze(tmp_path, conv)  # the client leg's 101 accepts no extension
    _only(a, "proxy_extension_changed")
    assert "proxy_extension_stripped" not in _codes(a)


@pytest.mark.parametrize(
    "fields",
    [
        [("Upgrade", "websocket,websocket")],
        [("Upgrade", "websocket"), ("Upgrade", "websocket")],
    ],
)
def test_header_duplicated_on_the_server_leg(tmp_path, fields):
    conv = nginx_like(1)
    conv.server_headers = _replace(conv.server_headers, "Upgrade", None) + fields
    a = _analyze(tmp_path, conv)
    f = _only(a, "proxy_header_duplicated")
    (pair,) = a.correlation.pairs
    assert f.capture == "server" and f.connections == (pair.server.id, pair.client.id)
    assert not {"proxy_upgrade_header_dropped", "proxy_upgrade_header_altered"} & set(_codes(a))


def test_header_duplicated_in_the_101_to_the_client(tmp_path):
    conv = nginx_like(1, client_response=[("Upgrade", "websocket")])
    a = _analyze(tmp_path, conv)
    f = _only(a, "proxy_header_duplicated")
    (pair,) = a.correlation.pairs
    assert f.capture == "client" and f.connections == (pair.client.id, pair.server.id)


def test_duplicates_sent_by_the_client_are_not_the_proxys(tmp_path):
    conv = nginx_like(1)
    conv.client_headers = _replace(conv.client_headers, "Upgrade", "websocket, websocket")
    conv.server_headers = _replace(conv.server_headers, "Upgrade", "websocket, websocket")
    a = _analyze(tmp_path, conv)
    assert "proxy_header_duplicated" not in _codes(a)


# --- the real captures ---------------------------------------------------------------------


def _real(scenario: str, clock_offset_ms=None):
    client, server = capture_paths(scenario)
    return wsanalyze.analyze(client, server, clock_offset_ms=clock_offset_ms, strict=True)


def test_nginx_ok_has_none_of_the_new_warnings_or_errors():
    a = _real("nginx-ok")
    bad = [f.code for f in a.finding_list if f.code in NEW_CODES and f.severity >= Severity.WARNING]
    assert bad == []


@pytest.mark.parametrize("clock_offset_ms", [None, 0.0])
def test_nginx_idle_timeout_real_capture(clock_offset_ms):
    a = _real("nginx-idle-timeout", clock_offset_ms)
    f = _only(a, "proxy_idle_timeout")
    assert f.severity == Severity.WARNING and f.packets
    (pair,) = a.correlation.pairs
    theta = a.correlation.clock_offset.estimate_ns
    idle = proxy_idle_ns(close_story(pair.client), close_story(pair.server), theta)
    assert idle is not None and 2.9e9 <= idle <= 3.2e9
    codes = set(_codes(a))
    assert not {"proxy_close_not_propagated", "proxy_backend_vanished"} & codes
    assert not {c for c in codes if c.startswith("handshake_status_")}


@pytest.mark.parametrize("clock_offset_ms", [None, 0.0])
def test_haproxy_server_reset_real_capture(clock_offset_ms):
    a = _real("haproxy-server-reset", clock_offset_ms)
    f = _only(a, "proxy_backend_vanished")
    (pair,) = a.correlation.pairs
    assert f.capture == "server" and f.connections == (pair.server.id, pair.client.id)
    codes = set(_codes(a))
    assert not {"proxy_idle_timeout", "proxy_close_not_propagated"} & codes
    assert not any(f.severity == Severity.ERROR for f in a.finding_list)


def test_close_opcode_constant():
    assert CLOSE == 0x8  # craft and RFC 6455 §5.2 agree
