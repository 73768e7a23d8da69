"""The close story of one leg (wsanalyze.closing): close frames each way, echo,
FIN/RST in order, idle time, the close code each end reports (RFC 6455 §7.1.5), who
closed, and the single-leg findings ws_close_not_completed, ws_abnormal_closure and
ws_closed_by_rst. Crafted legs and the real nginx/HAProxy captures."""

from __future__ import annotations

import pytest
from conftest import capture_paths
from craft import PING, TEXT, ProxiedLegs, http_request, http_response, write_pcap

from wsanalyze import closing
from wsanalyze.closing import close_findings, close_story, describe_pair
from wsanalyze.correlate import correlate
from wsanalyze.pipeline import ConnectionAnalysis, analyze_capture

MS = 1_000_000
S = 1_000_000_000


def _client_leg(tmp_path, legs: ProxiedLegs) -> ConnectionAnalysis:
    """The client leg of ``legs`` analysed on its own (one capture)."""
    path = write_pcap(tmp_path / "leg.pcap", legs.build()[0])
    cap = analyze_capture(path, "client", strict=True)
    assert len(cap.connections) == 1
    return cap.connections[0]


def _codes(conn: ConnectionAnalysis) -> list[str]:
    return sorted(f.code for f in close_findings(conn))


def test_clean_close_client_initiated(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket(messages=2)
    legs.close("c", "c", 1000, b"bye", t + 500_000)
    legs.close("c", "s", 1000, b"bye", t + 500_300)
    legs.fin("c", "s", t + 500_400)
    legs.fin("c", "c", t + 500_600)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.websocket and s.connection == conn.id and s.capture == "client"
    assert s.client_close is not None and s.client_close.code == 1000
    assert s.client_close.reason == b"bye"
    assert s.server_close is not None and s.server_close.code == 1000
    assert s.first_close_from == "client" and s.closed_by == "client"
    assert s.echoed and s.echo_delay_ns == 300_000
    assert [(e.kind, e.sender) for e in s.events] == [
        ("close", "client"),
        ("close", "server"),
        ("fin", "server"),
        ("fin", "client"),
    ]
    assert [e.kind for e in s.tcp_ends] == ["fin", "fin"]
    assert s.tcp_ends[0].endpoint == "192.0.2.1:80"
    assert all(e.packet for e in s.events)
    assert s.clean and not s.open_at_end
    assert (s.client_code, s.server_code) == (1000, 1000)
    assert s.idle_ns is not None and 490 * MS <= s.idle_ns <= 510 * MS
    assert s.close_ts_ns == s.client_close.ts_ns
    assert _codes(conn) == []
    line = s.describe()
    assert line and "\n" not in line


def test_server_initiated_close_with_other_code(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "s", 1001, b"going away", t + 1000)
    legs.close("c", "c", 1000, b"", t + 2000)
    legs.fin("c", "s", t + 2100)
    legs.fin("c", "c", t + 2200)
    s = close_story(_client_leg(tmp_path, legs))
    assert s.first_close_from == "server" and s.closed_by == "server"
    assert s.echoed and s.clean
    # §7.1.5: each end reports the code of the close frame it received.
    assert (s.client_code, s.server_code) == (1001, 1000)


def test_close_not_answered_before_tcp_close(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "c", 1000, b"bye", t + 1000)
    legs.fin("c", "s", t + 5000)  # the server leaves without its close frame
    legs.fin("c", "c", t + 5100)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.first_close_from == "client" and not s.echoed and s.echo_delay_ns is None
    assert not s.clean and not s.open_at_end
    assert (s.client_code, s.server_code) == (1006, 1000)
    assert _codes(conn) == ["ws_close_not_completed"]
    f = close_findings(conn)[0]
    assert f.connections == (conn.id,) and f.capture == "client"
    assert s.client_close is not None and s.client_close.packet in f.packets


def test_rst_without_close_frame(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.rst("c", "s", t + 50_000)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.closed_by == "server" and not s.close_frames
    assert [(e.kind, e.sender) for e in s.events] == [("rst", "server")]
    assert (s.client_code, s.server_code) == (1006, 1006)
    assert not s.clean and not s.open_at_end
    assert s.idle_ns is not None and 49 * MS <= s.idle_ns <= 51 * MS
    assert _codes(conn) == ["ws_abnormal_closure", "ws_closed_by_rst"]


def test_rst_after_own_close_frame_is_not_a_vanished_endpoint(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "c", 1000, b"", t + 1000)
    legs.rst("c", "c", t + 2000)  # the client gives up waiting for the echo
    conn = _client_leg(tmp_path, legs)
    assert _codes(conn) == ["ws_close_not_completed"]


def test_fin_without_close_frame(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.fin("c", "s", t + 2 * 1_000_000)  # 2 s of silence, then the proxy's FIN
    legs.fin("c", "c", t + 2 * 1_000_000 + 400)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.closed_by == "server" and not s.close_frames
    assert s.idle_ns is not None and 1.99 * S <= s.idle_ns <= 2.01 * S
    assert (s.client_code, s.server_code) == (1006, 1006)
    assert not s.open_at_end and not s.clean
    assert _codes(conn) == ["ws_abnormal_closure"]


def test_still_open_at_end_of_capture(tmp_path):
    legs = ProxiedLegs()
    legs.websocket(messages=3)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.events == () and s.closed_by == "unknown" and s.open_at_end
    assert s.first_event is None and s.close_ts_ns is None and s.idle_ns is None
    assert (s.client_code, s.server_code) == (None, None)
    assert s.last_activity_ts_ns is not None
    assert _codes(conn) == []
    assert s.describe()


def test_close_sent_but_capture_ends_before_the_answer(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "s", 1000, b"", t + 1000)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert s.open_at_end and not s.echoed and s.closed_by == "server"
    assert s.client_code == 1000 and s.server_code is None
    assert _codes(conn) == []  # the answer may come after the capture


def test_close_frame_without_code_reports_1005(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "c", None, b"", t + 1000)
    legs.close("c", "s", None, b"", t + 1200)
    legs.fin("c", "s", t + 1300)
    legs.fin("c", "c", t + 1400)
    s = close_story(_client_leg(tmp_path, legs))
    assert s.client_close is not None and s.client_close.code is None
    assert (s.client_code, s.server_code) == (1005, 1005)
    assert s.clean


def test_idle_counts_pings_and_data_not_the_close(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.frame("c", "c", PING, b"keepalive", t + 1_000_000)
    legs.frame("c", "s", TEXT, b"late", t + 1_500_000)
    legs.fin("c", "s", t + 1_800_000)
    legs.fin("c", "c", t + 1_800_100)
    s = close_story(_client_leg(tmp_path, legs))
    assert s.idle_ns is not None and 299 * MS <= s.idle_ns <= 301 * MS


def test_not_a_websocket(tmp_path):
    legs = ProxiedLegs()
    legs.open("c", 0)
    legs.request("c", legs.client_headers(), 100)
    legs.response("c", 403, "Forbidden", [("Content-Length", "0")], 300)
    legs.fin("c", "c", 1000)
    legs.fin("c", "s", 1100)
    conn = _client_leg(tmp_path, legs)
    s = close_story(conn)
    assert not s.websocket and s.closed_by == "client"
    assert (s.client_code, s.server_code) == (None, None)
    assert close_findings(conn) == []


def test_plain_http_connection(tmp_path):
    legs = ProxiedLegs()
    f = legs.flows["c"]
    legs.open("c", 0)
    legs.send("c", "c", http_request("/x", [("Host", "h")]), 100)
    legs.send("c", "s", http_response(200, "OK", [("Content-Length", "0")]), 200)
    f.fin("s", legs.t("c", 300))
    s = close_story(_client_leg(tmp_path, legs))
    assert s.closed_by == "server" and s.open_at_end  # only one FIN
    assert s.describe()


def test_as_json_is_plain(tmp_path):
    legs = ProxiedLegs()
    t = legs.websocket()
    legs.close("c", "c", 1000, b"bye", t + 1000)
    legs.close("c", "s", 1000, b"bye", t + 1200)
    legs.fin("c", "s", t + 1300)
    legs.fin("c", "c", t + 1400)
    story = close_story(_client_leg(tmp_path, legs))
    assert "bye" in story.describe()
    assert "bye" not in story.describe(text=lambda _: "[redacted]")  # report redaction
    j = story.as_json(ts=str, text=str.upper)
    assert "bye" not in j["summary"]
    assert j["closed_by"] == "client" and j["clean"] is True
    assert j["code_at_client"] == 1000 and j["code_at_server"] == 1000
    assert [e["kind"] for e in j["events"]] == ["close", "close", "fin", "fin"]
    assert j["events"][0]["reason"] == "BYE" and isinstance(j["events"][0]["ts"], str)
    assert j["echo_delay_ms"] == pytest.approx(0.2)


def test_duration_text():
    assert closing.duration_text(171_000) == "0.171 ms"
    assert closing.duration_text(2_995_000_000) == "2.995 s"


# --- the real captures -----------------------------------------------------------------


def _legs(scenario: str):
    cpath, spath = capture_paths(scenario)
    return analyze_capture(cpath, "client", strict=True), analyze_capture(
        spath, "server", strict=True
    )


def test_nginx_ok_clean_on_both_legs():
    for cap in _legs("nginx-ok"):
        assert len(cap.connections) == 3
        for conn in cap.connections:
            s = close_story(conn)
            assert s.clean and s.echoed and not s.open_at_end
            assert s.closed_by == "client" and s.first_close_from == "client"
            assert (s.client_code, s.server_code) == (1000, 1000)
            assert close_findings(conn) == []


def test_nginx_idle_timeout_closed_by_the_proxy_on_both_legs():
    c, s = _legs("nginx-idle-timeout")
    (cl,), (sl,) = c.connections, s.connections
    cs, ss = close_story(cl), close_story(sl)
    # The proxy is the client leg's server and the server leg's client.
    assert cs.closed_by == "server" and ss.closed_by == "client"
    for st in (cs, ss):
        assert not st.close_frames and st.first_event is not None
        assert st.first_event.kind == "fin"
        assert st.idle_ns is not None and 2.9 * S <= st.idle_ns <= 3.2 * S
        assert (st.client_code, st.server_code) == (1006, 1006)
        assert not st.open_at_end
    assert _codes(cl) == _codes(sl) == ["ws_abnormal_closure"]


def test_haproxy_server_reset():
    c, s = _legs("haproxy-server-reset")
    (cl,), (sl,) = c.connections, s.connections
    cs, ss = close_story(cl), close_story(sl)
    assert ss.closed_by == "server"
    assert [(e.kind, e.sender) for e in ss.events] == [("rst", "server")]
    assert cs.closed_by == "server" and cs.first_event is not None
    assert cs.first_event.kind == "fin"
    assert not any(e.kind == "rst" for e in cs.events)
    assert _codes(sl) == ["ws_abnormal_closure", "ws_closed_by_rst"]
    assert _codes(cl) == ["ws_abnormal_closure"]
    corr = correlate(c, s)
    (pair,) = corr.pairs
    assert corr.clock_offset is not None
    line = describe_pair(
        close_story(pair.client), close_story(pair.server), corr.clock_offset.estimate_ns
    )
    assert line and "\n" not in line
