"""The terminal summary for many connections: distributions and the worst cases
first, not one line per connection (issue: summaries that scale)."""

from __future__ import annotations

import pytest
from test_report_scale import scale_legs

import wsanalyze
from wsanalyze import report


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    client, server = scale_legs(tmp_path_factory.mktemp("many"), 300)
    return wsanalyze.analyze(client, server)


def test_many_pairs_give_distributions_not_lists(many) -> None:
    text = report.summary_text(many)
    assert len(text.splitlines()) < 80  # 600 connections, yet a screenful or two
    assert "connections:" in text and "WebSocket" in text
    assert "proxy delay ms c->s over all pairs: n=" in text
    assert "close codes: 1000 x" in text
    assert "worst pairs (findings first, then p95 delay), 10 of " in text
    # the pairs with findings (scale_legs refuses every 211th and resets every 97th)
    # are among the worst listed first
    worst = text.split("worst pairs")[1].splitlines()[1]
    assert "no findings" not in worst
    assert "pair-1:" not in text.split("worst pairs")[0]  # no per-pair listing


def test_few_pairs_keep_the_detailed_summary(analysis_of) -> None:
    text = report.summary_text(analysis_of("nginx-ok"))
    assert "pair-1: client-1" in text and "worst pairs" not in text
