"""Pairing at scale and under ambiguity: 2,000 concurrent WebSockets from one client
to one URL through a SNAT proxy (benchmarks/pairing_scale.py writes them), with and
without Sec-WebSocket-Key passed through: every pair correct, none guessed. And a
server capture whose clock runs 100 ppm fast over 120 s: the drift is fitted,
reported, and the delays are corrected by θ at each message's time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from wsanalyze.correlate import ClockOffset, correlate
from wsanalyze.pipeline import analyze_capture

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "pairing_scale.py"
_spec = importlib.util.spec_from_file_location("pairing_scale", _PATH)
assert _spec is not None and _spec.loader is not None
pairing_scale = importlib.util.module_from_spec(_spec)
sys.modules["pairing_scale"] = pairing_scale
_spec.loader.exec_module(pairing_scale)

N = 2_000


def _pair(tmp_path: Path, n: int, **kw):
    cpath, spath, truth = pairing_scale.generate(tmp_path, n, **kw)
    corr = correlate(analyze_capture(cpath, "client"), analyze_capture(spath, "server"))
    return corr, truth


@pytest.mark.parametrize("pass_key", [True, False], ids=["key", "no_key"])
def test_concurrent_connections_through_snat_all_pair_correctly(tmp_path, pass_key):
    corr, truth = _pair(tmp_path, N, pass_key=pass_key)
    result = pairing_scale.score(corr, truth)
    assert result["pairs_found"] == N
    assert result["pairs_correct"] == N
    assert result["ambiguous"] == 0
    theta = corr.clock_offset
    assert theta is not None and theta.consistent
    assert abs(theta.estimate_ns - 1_234_000_000) < 1_000_000
    assert "proxy_clock_drift" not in {f.code for f in corr.findings}


def test_identical_connections_without_key_are_ambiguous_not_guessed(tmp_path):
    """Without the key, a distinct message is what tells the legs apart: connections
    whose messages are all alike (here: only the heartbeat, because both legs' other
    messages are swapped out) must not be guessed among near-simultaneous rivals."""
    cpath, spath, truth = pairing_scale.generate(tmp_path, 200, pass_key=False, spacing_us=5)
    client, server = analyze_capture(cpath, "client"), analyze_capture(spath, "server")
    for conn in (*client.connections, *server.connections):
        conn.messages[:] = conn.messages[:1]  # the common heartbeat only
    corr = correlate(client, server)
    result = pairing_scale.score(corr, truth)
    assert result["pairs_wrong"] == 0
    assert result["ambiguous"] > 0


def test_clock_drift_is_fitted_reported_and_corrected(tmp_path):
    corr, truth = _pair(tmp_path, 300, drift_ppm=100.0, span_s=120.0, spacing_us=200)
    result = pairing_scale.score(corr, truth)
    assert result["pairs_correct"] == 300
    theta = corr.clock_offset
    assert theta is not None and theta.drift_ppm is not None
    assert theta.drift_ppm == pytest.approx(100.0, abs=5.0)
    assert theta.consistent  # the drift explains what a constant θ could not
    assert "proxy_clock_drift" in {f.code for f in corr.findings}
    assert "proxy_clock_bounds_empty" not in {f.code for f in corr.findings}
    # the generator's forwarding delays are 0.1-5 ms each way: corrected delays stay
    # within them (θ(t) is off by at most a fraction of a ms), while the constant
    # estimate is off by up to ±6 ms at the ends of the capture
    delays = [m.delay_ns(theta) for p in corr.pairs for m in p.matches]
    assert len(delays) >= 3 * 300
    assert min(delays) > -500_000 and max(delays) < 5_500_000
    flat = [m.delay_ns(theta.estimate_ns) for p in corr.pairs for m in p.matches]
    assert min(flat) < -3_000_000 or max(flat) > 8_000_000
    m = corr.pairs[0].matches[0]
    assert m.delay_ns(theta) == m.delay_ns(theta.at(m.client_ts_ns))


def test_clock_offset_at_is_constant_without_drift():
    co = ClockOffset(5, 0, 10, 1, 1)
    assert co.drift_ppm is None and co.at(10**18) == 5
    drifting = ClockOffset(5, 0, 10, 1, 1, drift_ppm=100.0, ref_ts_ns=0, span_ns=10**11)
    assert drifting.at(10**9) == 5 + 100_000
    assert drifting.drift_significant
