"""The DataFrames of an analysis: every table of ``wsanalyze.tables.SCHEMAS`` has
exactly the declared columns, in order, with the declared dtypes (timestamps
``datetime64[ns, UTC]``), on a real analysis, on captures without any WebSocket,
and on empty input."""

from __future__ import annotations

import pandas as pd
import pytest
from craft import plain_http_capture

import wsanalyze
from wsanalyze import tables

SCHEMA_NAMES = sorted(tables.SCHEMAS)


def assert_schema(df: pd.DataFrame, schema: dict, name: str) -> None:
    assert isinstance(df, pd.DataFrame), name
    assert list(df.columns) == list(schema), f"{name}: columns"
    wrong = {
        col: (str(df[col].dtype), str(dtype))
        for col, dtype in schema.items()
        if df[col].dtype != dtype
    }
    assert not wrong, f"{name}: dtypes (found, declared): {wrong}"


def test_timestamps_are_declared_utc_nanoseconds():
    ts_cols = [(t, c) for t, s in tables.SCHEMAS.items() for c, d in s.items() if d == tables.TS]
    assert ts_cols, "some tables have timestamps"
    assert tables.TS == "datetime64[ns, UTC]"
    assert ("messages", "ts") in ts_cols and ("message_matches", "client_ts") in ts_cols


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_real_analysis_tables(name, analysis_of):
    a = analysis_of("nginx-ok")
    df = getattr(a, name)
    assert_schema(df, tables.SCHEMAS[name], name)
    if name not in ("findings", "transcript"):  # nginx-ok negotiates no sub-protocol
        assert len(df) > 0, f"{name} has rows on nginx-ok"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_refused_handshake_tables(name, analysis_of):
    a = analysis_of("nginx-no-upgrade")
    assert_schema(getattr(a, name), tables.SCHEMAS[name], name)


def test_real_analysis_values_are_consistent(analysis_of):
    a = analysis_of("nginx-ok")
    c = a.connections
    assert c["connection_id"].is_unique
    assert (c["first_ts"] <= c["last_ts"]).all()
    m = a.messages
    assert (m["first_ts"] <= m["ts"]).all()
    assert set(m["connection_id"]) <= set(c["connection_id"])
    # per connection, the message counts of the connections table are the messages rows
    for _, row in c.iterrows():
        mine = m[m["connection_id"] == row["connection_id"]]
        for d in ("client_to_server", "server_to_client"):
            assert row[f"{d}_messages"] == (mine["direction"] == d).sum()
    f = a.frames
    assert f.groupby("connection_id", observed=True).size().sum() == len(f)
    assert (f["masked"] == (f["direction"] == "client_to_server")).all()
    assert (a.pairs["confidence"].between(0, 1)).all()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    return plain_http_capture(d / "client.pcap"), plain_http_capture(d / "server.pcap")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@pytest.mark.parametrize("two", [False, True], ids=["one-capture", "two-captures"])
def test_no_websocket_tables(name, two, plain):
    client, server = plain
    a = wsanalyze.analyze(client, server if two else None, strict=True)
    df = getattr(a, name)
    assert_schema(df, tables.SCHEMAS[name], name)
    if name in ("frames", "messages", "message_matches", "transcript"):
        assert len(df) == 0
    if name == "handshake_timings":
        assert len(df) == (1 if two else 0)  # one per pair
    if name == "behaviour":
        assert len(df) == (2 if two else 0)  # one per pair and direction
    if name == "connections":
        # the HTTP connection is listed, the SSH one is not
        per_capture = 1
        assert len(df) == per_capture * (2 if two else 1)
        assert not df["websocket"].any()
        assert set(df["status"]) == {200} and set(df["target"]) == {"/index.html"}
    if name == "pairs":
        assert len(df) == (1 if two else 0)
        if two:
            assert not df["websocket_client"].any() and not df["websocket_server"].any()


EMPTY = {
    "connections": lambda: tables.connections_table([]),
    "frames": lambda: tables.frames_table([]),
    "messages": lambda: tables.messages_table([]),
    "pairs": lambda: tables.pairs_table(None),
    "header_changes": lambda: tables.header_changes_table(None),
    "message_matches": lambda: tables.message_matches_table(None),
    "findings": lambda: tables.findings_table([]),
    "transcript": lambda: tables.transcript_table([]),
    "handshake_timings": lambda: __import__("wsanalyze.timing").timing.handshake_timing_table(None),
    "behaviour": lambda: __import__("wsanalyze.behaviour").behaviour.behaviour_table(None),
}


def test_every_schema_has_an_empty_builder():
    assert sorted(EMPTY) == SCHEMA_NAMES


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_empty_input_gives_empty_typed_tables(name):
    df = EMPTY[name]()
    assert len(df) == 0
    assert_schema(df, tables.SCHEMAS[name], name)


def test_empty_correlation_gives_empty_typed_tables(plain):
    client, _ = plain
    a = wsanalyze.analyze(client, client, strict=True)
    # the same capture on both legs: the HTTP connection pairs with itself, no WebSocket
    for name in ("header_changes", "message_matches"):
        df = getattr(a, name)
        assert len(df) == 0
        assert_schema(df, tables.SCHEMAS[name], name)


def test_ladder_table(analysis_of):
    a = analysis_of("nginx-ok")
    pid = a.pairs["pair_id"].iloc[0]
    ev = tables.ladder_table(a.correlation, pid)
    assert_schema(ev, tables.LADDER, "ladder")
    assert ev["ts"].is_monotonic_increasing
    assert {"request", "response", "close", "fin"} <= set(ev["kind"])
    assert set(ev["leg"]) == {"client", "server"}
    with pytest.raises(KeyError):
        tables.ladder_table(a.correlation, "pair-999")
    with pytest.raises(KeyError):
        tables.ladder_table(None, pid)


def test_tables_are_cached_and_independent(analysis_of):
    a = analysis_of("nginx-ok")
    assert a.connections is a.connections
    assert a.frames is not a.messages
