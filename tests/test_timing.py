"""Handshake timing per pair (wsanalyze.timing): on the real nginx captures (every
value present and non-negative; nginx opens a new upstream connection per client,
so the proxy's request time includes the server-side connect), on crafted legs with
known delays and clock offset, and on hand-made pairs for the reuse and unknown
cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
from craft import nginx_like, write_legs

import wsanalyze
from wsanalyze.timing import (
    HANDSHAKE_TIMINGS,
    HandshakeTiming,
    handshake_timing,
    handshake_timing_table,
)

MS_COLUMNS = [c for c in HANDSHAKE_TIMINGS if c.endswith("_ms")]


def assert_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(HANDSHAKE_TIMINGS)
    assert {c: str(df[c].dtype) for c in df} == {c: str(d) for c, d in HANDSHAKE_TIMINGS.items()}


def test_nginx_ok_all_present_non_negative(analysis_of):
    a = analysis_of("nginx-ok")
    df = handshake_timing_table(a.correlation)
    assert_schema(df)
    assert len(df) == len(a.pairs) > 0
    assert list(df["pair_id"]) == list(a.pairs["pair_id"])
    assert not df[MS_COLUMNS].isna().any().any()
    assert (df[MS_COLUMNS] >= 0).all().all()
    assert df["server_connection_new"].all()  # nginx: one upstream connection per client
    # the proxy's request time includes its connect to the server
    assert (df["proxy_request_ms"] >= df["server_connect_ms"]).all()
    # RTT from the TCP handshake is SYN → ACK at the capture point
    assert (df["client_rtt_ms"] == df["client_connect_ms"]).all()
    assert (df["server_rtt_ms"] == df["server_connect_ms"]).all()


def test_dataclass_values_are_ns(analysis_of):
    a = analysis_of("nginx-ok")
    theta = a.correlation.clock_offset.estimate_ns
    p = a.correlation.pairs[0]
    t = handshake_timing(p, theta)
    assert isinstance(t, HandshakeTiming)
    with pytest.raises(AttributeError):
        t.client_rtt = 0  # type: ignore[misc]
    assert t.client_rtt == p.client.tcp.rtt_ns and t.server_rtt == p.server.tcp.rtt_ns
    sreq = p.server.exchange[0]
    assert t.proxy_request == sreq.ts_ns - theta - p.client.exchange[0].ts_ns


@pytest.mark.parametrize("theta_us", [0, 250_000, -40_000])
def test_crafted_known_delays(tmp_path, theta_us):
    d = 700  # µs the proxy takes each way (see craft.ProxiedWebSocket.build)
    legs = write_legs(tmp_path, [nginx_like(1, delay_us=d, server_clock_us=theta_us)])
    a = wsanalyze.analyze(*legs, clock_offset_ms=theta_us / 1000)
    df = handshake_timing_table(a.correlation)
    assert_schema(df)
    row = df.iloc[0]
    # client request at 100 µs, server leg SYN at 100+d, its request at 140+d,
    # response at 300+d, client-leg response at 300+2d; SYN → ACK 20 µs on both legs
    assert row["client_connect_ms"] == pytest.approx(0.020)
    assert row["server_connect_ms"] == pytest.approx(0.020)
    assert row["proxy_request_ms"] == pytest.approx((40 + d) / 1000)
    assert row["server_response_ms"] == pytest.approx(0.160)
    assert row["response_forward_ms"] == pytest.approx(d / 1000)
    assert row["client_rtt_ms"] == pytest.approx(0.020)
    assert row["server_rtt_ms"] == pytest.approx(0.020)
    assert bool(row["server_connection_new"]) is True


def test_empty_and_none():
    df = handshake_timing_table(None)
    assert_schema(df)
    assert df.empty


def _head(ts):
    return SimpleNamespace(ts_ns=ts)


def _conn(reqs, resp, syn=None, ack=None):
    requests = [_head(t) for t in reqs]
    tcp = SimpleNamespace(
        syn_ts_ns=syn,
        ack_ts_ns=ack,
        rtt_ns=None if syn is None or ack is None else ack - syn,
    )
    return SimpleNamespace(
        requests=requests,
        exchange=(requests[-1] if requests else None, _head(resp) if resp is not None else None),
        tcp=tcp,
    )


def test_reused_server_connection():
    # the server leg carried an earlier request: reused, whatever its SYN time
    c = _conn([1_000], 5_000, syn=0, ack=100)
    s = _conn([200, 2_000], 4_000, syn=50, ack=60)
    t = handshake_timing(SimpleNamespace(client=c, server=s), 0)
    assert t.server_connection_new is False
    assert t.proxy_request == 1_000 and t.server_response == 2_000 and t.response_forward == 1_000
    # a SYN before the client request (on one clock via θ) is a reused connection
    s = _conn([2_500], 4_500, syn=1_400, ack=1_410)  # θ = 500: SYN at 900 on the client clock
    t = handshake_timing(SimpleNamespace(client=c, server=s), 500)
    assert t.server_connection_new is False
    assert t.proxy_request == 1_000 and t.response_forward == 1_000 and t.server_connect == 10
    s = _conn([2_500], 4_500, syn=1_600, ack=1_610)  # SYN at 1_100: opened for this request
    assert handshake_timing(SimpleNamespace(client=c, server=s), 500).server_connection_new is True


def test_unknown_values_are_none_and_nan():
    c = _conn([1_000], None)  # no SYN captured, no response
    s = _conn([], None)  # nothing on the server leg
    t = handshake_timing(SimpleNamespace(client=c, server=s), 0)
    assert t == HandshakeTiming(None, None, None, None, None, None, None, None)
    c.id, s.id = "client-1", "server-1"
    corr = SimpleNamespace(
        pairs=[SimpleNamespace(id="pair-1", client=c, server=s)], clock_offset=None
    )
    df = handshake_timing_table(corr)
    assert_schema(df)
    assert all(math.isnan(df.iloc[0][c]) for c in MS_COLUMNS)
    assert df["server_connection_new"].isna().all()
