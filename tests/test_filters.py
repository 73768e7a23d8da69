"""Filters (wsanalyze/filters.py): a filtered view of an Analysis that selects whole
connections, keeps both legs of a pair when either leg matches, and that the tables
and every report respect. On the real captures (captures/MANIFEST.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import capture_paths

import wsanalyze
from wsanalyze import catalogue
from wsanalyze.api import Analysis
from wsanalyze.filters import (
    filter_analysis,
    parse_host,
    parse_path,
    parse_time,
    parse_time_window,
    request_path,
)
from wsanalyze.report import render_markdown, summary_text, to_json

MANY = "nginx-many-clients"  # 12 concurrent clients, 12 pairs
NO_UPGRADE = "nginx-no-upgrade"


def ids(analysis) -> set[str]:
    return {c.id for cap in analysis.captures for c in cap.connections}


def pair_legs(analysis) -> set[tuple[str, str]]:
    return {(p.client.id, p.server.id) for p in analysis.correlation.pairs}


# --- one client port: one pair, both legs ---------------------------------------------------------


def test_client_port_keeps_one_pair_with_both_legs(analysis_of, check_report):
    a = analysis_of(MANY)
    assert len(a.correlation.pairs) == 12
    c3 = a.client.connection("client-3")
    partner = next(p.server.id for p in a.correlation.pairs if p.client is c3)
    f = filter_analysis(a, ports=[c3.tcp.client.port])  # the client's ephemeral port
    assert ids(f) == {"client-3", partner}
    assert pair_legs(f) == {("client-3", partner)}
    # the pair keeps its id, header changes and matched messages
    (p,) = f.correlation.pairs
    orig = next(q for q in a.correlation.pairs if q.client is c3)
    assert p.id == orig.id and p.header_changes == orig.header_changes
    assert len(p.matches) == len(orig.matches) > 0
    # every table holds the two legs only
    assert set(f.connections["connection_id"]) == {"client-3", partner}
    assert set(f.frames["connection_id"]) == {"client-3", partner}
    assert len(f.frames) == int(a.frames["connection_id"].isin(["client-3", partner]).sum())
    assert set(f.messages["connection_id"]) <= {"client-3", partner}
    assert list(f.pairs["pair_id"]) == [orig.id]
    assert len(f.message_matches) == len(orig.matches)
    # the captures' own facts are unchanged
    assert [c.packets for c in f.captures] == [c.packets for c in a.captures]
    # the JSON report is the filtered view, and valid
    doc = to_json(f)
    check_report(doc)
    assert {c["id"] for c in doc["connections"]} == {"client-3", partner}
    assert [p["id"] for p in doc["pairs"]] == [orig.id]
    # the original analysis is untouched
    assert len(ids(a)) == 24 and len(a.correlation.pairs) == 12 and len(a.frames) > len(f.frames)


def test_server_leg_id_keeps_its_client_leg(analysis_of):
    a = analysis_of(MANY)
    p7 = a.correlation.pairs[6]
    f = filter_analysis(a, connections=[p7.server.id])
    assert pair_legs(f) == {(p7.client.id, p7.server.id)}
    assert ids(f) == {p7.client.id, p7.server.id}


def test_repeated_values_are_alternatives(analysis_of):
    a = analysis_of(MANY)
    legs = [(p.client.id, p.server.id) for p in a.correlation.pairs[:3]]
    f = filter_analysis(a, connections=[c for c, _ in legs])
    assert pair_legs(f) == set(legs)
    ports = [a.client.connection(c).tcp.client.port for c, _ in legs[:2]]
    assert pair_legs(filter_analysis(a, ports=ports)) == set(legs[:2])


def test_different_filters_must_all_match(analysis_of):
    a = analysis_of(MANY)
    c1 = a.client.connections[0]
    client_ip = str(parse_host(str(c1.tcp.client).rsplit(":", 1)[0]).network_address)
    # the client's address and the client's port: one connection (and its partner)
    f = filter_analysis(a, hosts=[client_ip], ports=[c1.tcp.client.port])
    assert len(f.correlation.pairs) == 1 and c1.id in ids(f)
    # a host and a port that never meet on one connection: nothing
    server_port = a.server.connections[0].tcp.server.port
    assert ids(filter_analysis(a, hosts=[client_ip], ports=[c1.tcp.client.port, 1])) == ids(f)
    f = filter_analysis(a, ports=[c1.tcp.client.port], paths=["/no/such/path"])
    assert ids(f) == set() and f.correlation.pairs == []
    assert ids(filter_analysis(a, ports=[server_port])) == ids(a)  # every server leg, so all


def test_host_either_endpoint_and_networks(analysis_of):
    a = analysis_of(MANY)
    everything = ids(a)
    server_side = a.server.connections[0].tcp.server  # the backend, server capture only
    backend = str(server_side).rsplit(":", 1)[0]
    # the backend appears only on server legs, yet every pair is kept with both legs
    assert ids(filter_analysis(a, hosts=[backend])) == everything
    net = backend.rsplit(".", 1)[0] + ".0/24"
    assert ids(filter_analysis(a, hosts=[net])) == everything
    assert ids(filter_analysis(a, hosts=["203.0.113.99"])) == set()
    assert ids(filter_analysis(a, hosts=["2001:db8::1"])) == set()  # other family: no match


def test_path_prefix(analysis_of):
    a = analysis_of(MANY)
    assert ids(filter_analysis(a, paths=["/ws"])) == ids(a)
    assert ids(filter_analysis(a, paths=["/"])) == ids(a)
    assert ids(filter_analysis(a, paths=["/api"])) == set()
    assert ids(filter_analysis(a, paths=["/api", "/w"])) == ids(a)


def test_time_window_overlap(analysis_of):
    a = analysis_of(MANY)
    conns = [c for cap in a.captures for c in cap.connections]
    first = min(c.tcp.first_ts_ns for c in conns)
    last = max(c.tcp.last_ts_ns for c in conns)
    assert ids(filter_analysis(a, time=(None, None))) == ids(a)  # both open: no filter
    assert ids(filter_analysis(a, time=(first, last))) == ids(a)
    assert ids(filter_analysis(a, time=(None, first - 1))) == set()
    assert ids(filter_analysis(a, time=(last + 1, None))) == set()
    # a window ending just after the earliest start: the connections that had started,
    # plus their partners
    end = sorted(c.tcp.first_ts_ns for c in conns)[2]
    matched = {c.id for c in conns if c.tcp.first_ts_ns <= end}
    partners = {
        x
        for p in a.correlation.pairs
        if p.client.id in matched or p.server.id in matched
        for x in (p.client.id, p.server.id)
    }
    f = filter_analysis(a, time=(None, end))
    assert ids(f) == matched | partners and 0 < len(ids(f)) < len(conns)
    # the same window as text, ISO 8601 on the report's own timestamps
    start_iso = to_json(a)["captures"][0]["first_ts"]
    assert ids(filter_analysis(a, time=f"{start_iso}..")) == ids(a)


def test_findings_follow_the_kept_connections(analysis_of):
    a = analysis_of(NO_UPGRADE)
    extra = catalogue.finding(
        "capture_tls_not_decoded", "capture-wide, for the test", capture="client"
    )
    extra = replace(extra, connections=())
    a = Analysis(a.client, a.server, a.correlation, [*a.finding_list, extra])
    (pair,) = a.correlation.pairs
    f = filter_analysis(a, connections=[pair.client.id])
    # both legs kept: every finding stays (pair findings name both legs)
    assert len(f.finding_list) == len(a.finding_list)
    none = filter_analysis(a, paths=["/no/such/path"])
    assert ids(none) == set()
    assert none.finding_list == [extra]  # capture-wide findings always stay
    assert list(none.findings["code"]) == ["capture_tls_not_decoded"]
    assert to_json(none)["findings"][0]["code"] == "capture_tls_not_decoded"


def test_reports_render_the_filtered_view(analysis_of):
    a = analysis_of(MANY)
    p = a.correlation.pairs[4]
    f = filter_analysis(a, connections=[p.client.id])
    text = summary_text(f)
    assert "Connections carrying HTTP/WebSocket: 2" in text
    others = [q.client for q in a.correlation.pairs if q is not p]
    for c in others:
        assert str(c.tcp.client) not in text
    md = render_markdown(f)
    assert str(p.client.tcp.client) in md
    assert all(str(c.tcp.client) not in md for c in others)


def test_single_capture():
    client, _ = capture_paths(MANY)
    a = wsanalyze.analyze(client)
    c = a.client.connections[5]
    f = filter_analysis(a, ports=[c.tcp.client.port])
    assert f.server is None and ids(f) == {c.id}
    assert set(f.frames["connection_id"]) == {c.id}


def test_no_filter_is_the_analysis_itself(analysis_of):
    a = analysis_of(MANY)
    assert filter_analysis(a) is a
    assert filter_analysis(a, connections=(), hosts=[], ports=[], paths=[], time=None) is a


def test_unknown_connection_id_names_the_ids_there_are(analysis_of):
    a = analysis_of(MANY)
    with pytest.raises(ValueError, match="client-99") as exc:
        filter_analysis(a, connections=["client-99"])
    assert "client-1" in str(exc.value) and "server-12" in str(exc.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ports": [0]},
        {"ports": [70000]},
        {"hosts": ["example.com"]},
        {"paths": ["ws"]},
        {"time": "yesterday..today"},
    ],
)
def test_bad_values_raise_value_error(analysis_of, kwargs):
    with pytest.raises(ValueError):
        filter_analysis(analysis_of(MANY), **kwargs)


# --- parsing ----------------------------------------------------------------------------------------

T0 = 1795266579_000_000_000  # 2026-11-21T13:09:39Z


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-21T13:09:39Z", T0),
        ("2026-11-21T13:09:39", T0),  # no offset: UTC
        ("2026-11-21 13:09:39+00:00", T0),
        ("2026-11-21T21:09:39+08:00", T0),
        ("2026-11-21T13:09:39.863231Z", T0 + 863_231_000),  # the reports' format
        ("2026-11-21T13:09:39.123456789Z", T0 + 123_456_789),  # ns kept
        ("2026-11-21T13:09:39,5Z", T0 + 500_000_000),
        ("2026-11-21", T0 - (13 * 3600 + 9 * 60 + 39) * 1_000_000_000),
        ("1795266579", T0),
        ("1795266579.25", T0 + 250_000_000),
        ("1795266579.000000001", T0 + 1),
    ],
)
def test_parse_time(text, ns):
    assert parse_time(text) == ns


@pytest.mark.parametrize("text", ["", "now", "2026-13-01", "12:00", "1e9", "2026-11-21T25:00:00Z"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_parse_time_window():
    assert parse_time_window("1795266579..1795266580") == (T0, T0 + 1_000_000_000)
    assert parse_time_window("1795266579..") == (T0, None)
    assert parse_time_window("..2026-11-21T13:09:39Z") == (None, T0)
    assert parse_time_window(" 1795266579.5 .. 1795266580 ") == (T0 + 500_000_000, T0 + 10**9)
    for bad in ("..", "1795266579", "1..2..3", "1795266580..1795266579"):
        with pytest.raises(ValueError):
            parse_time_window(bad)


def test_parse_host_and_path():
    assert str(parse_host("192.0.2.10")) == "192.0.2.10/32"
    assert str(parse_host("[2001:db8::1]")) == "2001:db8::1/128"
    assert str(parse_host("10.1.2.3/8")) == "10.0.0.0/8"
    for bad in ("example.com", "192.0.2.300", ""):
        with pytest.raises(ValueError):
            parse_host(bad)
    assert parse_path("/ws") == "/ws"
    with pytest.raises(ValueError):
        parse_path("ws")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/ws", "/ws"),
        (
            b"/api/v1/namespaces/default/pods/p/exec?command=ls&stdin=1",
            "/api/v1/namespaces/default/pods/p/exec",
        ),
        (b"http://example.com:8080/rlzy/ws?x=1", "/rlzy/ws"),
        (b"http://example.com", "/"),
        (b"example.com:443", "example.com:443"),
        (b"*", "*"),
    ],
)
def test_request_path(target, path):
    assert request_path(target) == path


def test_json_report_says_it_was_filtered(tmp_path):
    """A filtered JSON report names its filters, so a ticket reader knows it is partial."""
    import json

    from conftest import capture_paths

    from wsanalyze.cli import main

    client, server = capture_paths("nginx-ok")
    out = tmp_path / "r.json"
    assert main(["pcap", str(client), str(server), "--port", "8080", "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["filters"] == "--port 8080"
    assert main(["pcap", str(client), str(server), "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["filters"] is None
