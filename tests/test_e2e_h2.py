"""End to end on the committed real HTTP/2-backend captures (captures/h2/<scenario>/).

HAProxy 2.6 with ``proto h2`` on its server line carries each client's HTTP/1.1
WebSocket to the backend (Hypercorn, or the h2 library for the refusals) as an RFC
8441 extended CONNECT stream. The truth is captures/expected_h2.json, derived by
captures/derive_expected.py from the pcaps with tshark (HTTP/2 frames and HPACK) and
its own RFC 6455 parser over each stream's DATA: every assertion reads it, nothing
about ports, counts or delays is hard-coded. Checked through the DataFrames, the JSON
report, the terminal summary and the HTML report.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

import wsanalyze
from wsanalyze import cli, report

ROOT = Path(__file__).resolve().parent.parent
H2 = ROOT / "captures" / "h2"
EXPECTED = json.loads((ROOT / "captures" / "expected_h2.json").read_text(encoding="utf-8"))
SCENARIOS = sorted(EXPECTED["scenarios"])
# The stream HAProxy resets before sending a request is no WebSocket session (there is
# no request to pair on): its client connection is explained, not paired (see below).
STREAM_SCENARIOS = [s for s in SCENARIOS if s != "haproxy-h2-no-connect-protocol"]
WS_SCENARIOS = [s for s in SCENARIOS if s in ("haproxy-h2", "haproxy-h2-multiplex")]
DIRS = ("client_to_server", "server_to_client")


def _facts(scenario: str) -> dict[str, dict]:
    return {f["fact"]: f for f in EXPECTED["scenarios"][scenario]["must_find"]}


@cache
def _analysis(scenario: str, clock_offset_ms: float | None = None):
    d = H2 / scenario
    return wsanalyze.analyze(
        d / "client.pcap", d / "server.pcap", clock_offset_ms=clock_offset_ms, strict=True
    )


def _pairs(a) -> set[tuple[str, str, int | None]]:
    """(client endpoint, server-leg endpoint, HTTP/2 stream id) of each pair."""
    conns = a.connections.set_index("connection_id")
    out = set()
    for _, p in a.pairs.iterrows():
        c, s = conns.loc[p["client_connection_id"]], conns.loc[p["server_connection_id"]]
        sid = s["stream_id"]
        out.add((c["client"], s["client"], None if pd.isna(sid) else int(sid)))
    return out


@pytest.mark.parametrize("scenario", STREAM_SCENARIOS)
def test_each_websocket_stream_pairs_with_its_client_connection(scenario):
    want = _facts(scenario)["pairs"]["pairs"]
    got = _pairs(_analysis(scenario))
    assert got == {(p["client"], p["server"], p["stream_id"]) for p in want}


@pytest.mark.parametrize("scenario", STREAM_SCENARIOS)
def test_http2_connections_and_streams_are_listed(scenario):
    a = _analysis(scenario)
    backend = _facts(scenario)["h2_backend"]
    server = a.connections[a.connections["capture"] == "server"]
    tcp = server[server["stream_id"].isna()]
    assert set(tcp["protocol"]) == {"h2"}
    assert len(tcp) == backend["server_connections"]
    streams = server[server["stream_id"].notna()]
    got = {}
    for _, row in streams.iterrows():
        got.setdefault(row["client"], []).append(int(row["stream_id"]))
    assert {k: sorted(v) for k, v in got.items()} == backend["streams"]
    # Each stream is a session of its own: its id names its TCP connection.
    for _, row in streams.iterrows():
        parent = tcp[tcp["client"] == row["client"]]["connection_id"].item()
        assert row["connection_id"] == f"{parent}-s{int(row['stream_id'])}"
        assert row["method"] == "CONNECT" and row["http_version"] == "HTTP/2"


@pytest.mark.parametrize("scenario", WS_SCENARIOS)
def test_messages_on_both_legs(scenario):
    a = _analysis(scenario)
    want = _facts(scenario)["websocket_messages"]["messages"]
    conns = a.connections.set_index("connection_id")
    for _, p in a.pairs.iterrows():
        client = conns.loc[p["client_connection_id"], "client"]
        for leg in ("client_connection_id", "server_connection_id"):
            msgs = a.messages[a.messages["connection_id"] == p[leg]]
            for d in DIRS:
                got = msgs[msgs["direction"] == d]["opcode"].value_counts().to_dict()
                exp = {k: v for k, v in want[client][d].items() if v}
                assert {str(k): int(v) for k, v in got.items() if v} == exp, (leg, d)


@pytest.mark.parametrize("scenario", WS_SCENARIOS)
def test_proxy_delay_matches_the_independent_reading(scenario):
    """Both legs were captured on one host: with the clock offset imposed as 0 each
    message's proxy delay equals the one derived from tshark's frame times."""
    a = _analysis(scenario, 0.0)
    conns = a.connections.set_index("connection_id")
    by_client = {p["client"]: p for p in EXPECTED["scenarios"][scenario]["pairs"]}
    mm = a.message_matches
    assert len(mm) > 0
    for _, p in a.pairs.iterrows():
        exp = by_client[conns.loc[p["client_connection_id"], "client"]]["proxy_delay_ms"]
        rows = mm[mm["pair_id"] == p["pair_id"]]
        for d in DIRS:
            want = sorted(m["delay_ms"] for m in exp[d]["matches"])
            got = sorted(rows[rows["direction"] == d]["proxy_delay_ms"].round(3))
            assert got == pytest.approx(want, abs=0.0015), d


@pytest.mark.parametrize("scenario", ["haproxy-h2", "haproxy-h2-rst"])
def test_header_changes_map_http11_to_http2(scenario):
    """Host is compared with :authority, Upgrade/Connection with :protocol: only
    X-Forwarded-For is really added; the translations are listed as mapped."""
    a = _analysis(scenario)
    fact = _facts(scenario)["request_header_changes"]
    hc = a.header_changes
    for pair_id in a.pairs["pair_id"]:
        req = hc[(hc["pair_id"] == pair_id) & (hc["message"] == "request")]
        added = sorted(req[req["change"] == "added"]["name"].str.lower())
        assert added == fact["added"]
        assert req[req["change"] == "removed"].empty  # host/upgrade/connection are mapped
        mapped = set(req[req["change"] == "mapped"]["name"])
        assert {"request line -> :method :path", "Upgrade, Connection -> :protocol"} <= mapped
        host = req[req["name"] == "Host -> :authority"]
        assert host.empty == fact["host_equals_authority"]


def _codes(a, capture: str | None = None) -> dict[str, int]:
    f = a.findings
    if capture is not None:
        f = f[f["capture"] == capture]
    return f["code"].value_counts().to_dict()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_internal_errors_and_scheme_named(scenario):
    a = _analysis(scenario)
    codes = _codes(a)
    assert "internal_error" not in codes
    assert "h2_hpack_error" not in codes
    streams = a.connections["stream_id"].notna().sum()
    # HAProxy 2.6 sends :scheme https on the cleartext HTTP/2 leg (RFC 8441 §5: http).
    assert codes.get("h2_scheme_mismatch", 0) == streams


def test_backend_without_extended_connect():
    """The backend sends SETTINGS_ENABLE_CONNECT_PROTOCOL=0: HAProxy resets a stream it
    never opened and answers 502; the 502 is explained by the server leg."""
    a = _analysis("haproxy-h2-no-connect-protocol")
    assert _facts("haproxy-h2-no-connect-protocol")["h2_backend"]["enable_connect_protocol"][
        "backend"
    ] == [0]
    codes = _codes(a)
    assert codes["h2_connect_protocol_not_enabled"] == 1
    assert codes["handshake_status_502"] == 1
    assert "proxy_no_server_connection" not in codes  # there is one: it got no request
    f = a.findings
    explained = f[f["code"] == "handshake_status_502"]["detail"].item()
    assert "SETTINGS_ENABLE_CONNECT_PROTOCOL" in explained
    # The oracle's pair is (client, server connection, stream 1): the server connection
    # is named in the explanation; stream 1 never carried a request, so no session.
    (want,) = _facts("haproxy-h2-no-connect-protocol")["pairs"]["pairs"]
    server = a.connections[a.connections["client"] == want["server"]]
    assert list(server["stream_id"].isna()) == [True] and a.pairs.empty
    assert server["connection_id"].item() in explained


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_json_http2_block_says_what_each_side_advertised(scenario):
    doc = report.to_json(_analysis(scenario))
    want = _facts(scenario)["h2_backend"]["enable_connect_protocol"]
    blocks = [c["http2"] for c in doc["connections"] if c["http2"] is not None]
    assert len(blocks) == _facts(scenario)["h2_backend"]["server_connections"]
    for b in blocks:
        ecp = b["enable_connect_protocol"]
        assert [ecp["client"]] == want["proxy"][:1] and [ecp["server"]] == want["backend"][:1]
        assert b["frames"]["client_to_server"]["SETTINGS"] >= 1
    if scenario == "haproxy-h2-no-connect-protocol":
        (b,) = blocks
        assert [(g["from"], g["error"]) for g in b["goaway"]] == [("server", "PROTOCOL_ERROR")]


def test_refusals_over_http2():
    a = _analysis("haproxy-h2-rst")
    refusals = {r["client"]: r for r in _facts("haproxy-h2-rst")["handshake_refused"]["refusals"]}
    conns = a.connections.set_index("connection_id")
    f = a.findings
    for _, p in a.pairs.iterrows():
        c, s = conns.loc[p["client_connection_id"]], conns.loc[p["server_connection_id"]]
        want = refusals[c["client"]]
        assert c["status"] == want["status"]
        assert (None if pd.isna(s["status"]) else s["status"]) == want["server_sent"]
        mine = f[f["connections"].map(lambda ids, s=s: s.name in ids.split(", "))]
        codes = set(mine["code"])
        if want["rst_stream"]:
            assert "h2_extended_connect_reset" in codes
            assert s["rst_from"] is not None  # RST_STREAM ends the session like a TCP RST
        else:
            assert "proxy_handshake_refused_by_server" in codes


@pytest.mark.parametrize("scenario", ["haproxy-h2-multiplex"])
def test_cli_json_and_html(scenario, tmp_path, capsys):
    d = H2 / scenario
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    rc = cli.main(
        [
            "pcap",
            str(d / "client.pcap"),
            str(d / "server.pcap"),
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    streams = [c for c in doc["connections"] if c["stream_id"] is not None]
    assert {c["protocol"] for c in streams} == {"h2"}
    parents = {c["id"]: c for c in doc["connections"] if c["streams"]}
    assert len(parents) == 1
    (parent,) = parents.values()
    assert sorted(parent["streams"]) == sorted(c["id"] for c in streams)
    assert all(c["parent"] == parent["id"] for c in streams)
    paired = {p["server"] for p in doc["pairs"]}
    assert paired == {c["id"] for c in streams}
    assert parent["id"] not in text.split("unpaired:")[-1] if "unpaired:" in text else True
    html = out_html.read_text(encoding="utf-8")
    for c in streams:
        assert c["id"] in html
    assert ":protocol" in html
    assert report.to_json(_analysis(scenario))["pairs"] == doc["pairs"]


def test_flow_control_stall_shows_as_proxy_delay():
    """haproxy-h2: a 70,000-byte message exceeds the backend's initial window (65,535,
    RFC 9113 §6.9.2); HAProxy waits for its WINDOW_UPDATE mid-message. In the
    multiplex run the update came in time: no such finding there."""
    a = _analysis("haproxy-h2")
    f = a.findings[a.findings["code"] == "proxy_delay_h2_flow_control"]
    assert len(f) == 1
    (server_id,) = [c for c in f["connections"].item().split(", ") if c.startswith("server")]
    msgs = a.messages[
        (a.messages["connection_id"] == server_id) & (a.messages["direction"] == "client_to_server")
    ]
    assert (msgs["payload_bytes"] > 65535).any()
    assert _codes(a)["h2_flow_control_stall"] == 1
    assert "proxy_delay_h2_flow_control" not in _codes(_analysis("haproxy-h2-multiplex"))


def test_connection_filter_takes_stream_ids(capsys):
    """--connection server-1-s3 selects one stream (and its pair); server-1 selects the
    HTTP/2 connection with all its streams."""
    d = H2 / "haproxy-h2-multiplex"
    args = ["pcap", str(d / "client.pcap"), str(d / "server.pcap"), "--format", "json"]
    assert cli.main([*args, "--connection", "server-1-s3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = {c["id"] for c in doc["connections"]}
    assert len(doc["pairs"]) == 1 and doc["pairs"][0]["server"] == "server-1-s3"
    assert "server-1-s3" in ids and not ids & {"server-1-s1", "server-1-s5"}
    assert cli.main([*args, "--connection", "server-1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["pairs"]) == 3
