"""The many-connection charts (plot_timeline, plot_throughput, plot_header_changes):
each returns a Figure, draws into a given Axes, accepts empty tables with the
declared columns, and on 5,000 proxied WebSockets (10,000 connections, tens of
thousands of frames) draws a handful of aggregated artists, not one per row."""

from __future__ import annotations

import io

import pytest
from matplotlib.figure import Figure
from test_report_scale import scale_legs

import wsanalyze
from wsanalyze import charts, tables

CHARTS = {
    "timeline": lambda a, **kw: charts.plot_timeline(a.connections, a.pairs, **kw),
    "throughput": lambda a, **kw: charts.plot_throughput(a.frames, **kw),
    "header_changes": lambda a, **kw: charts.plot_header_changes(a.header_changes, **kw),
}


def artists(fig: Figure) -> int:
    return sum(
        len(ax.lines) + len(ax.collections) + len(ax.patches) + len(ax.texts) for ax in fig.axes
    )


def renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50, bbox_inches="tight")
    assert buf.getvalue().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return wsanalyze.analyze(*scale_legs(tmp_path_factory.mktemp("scale"), 5_000))


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_returns_figure_and_honours_ax(name, analysis_of):
    a = analysis_of("nginx-ok")
    fig = CHARTS[name](a)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert artists(fig) > 0
    renders(fig)
    host = Figure()
    ax1, ax2 = host.subplots(1, 2)
    assert CHARTS[name](a, ax=ax2) is host
    assert len(host.axes) == 2 and artists(host) > 0 and not ax1.has_data()


def test_empty_inputs_with_declared_columns():
    for fig in (
        charts.plot_timeline(tables.connections_table([]), tables.pairs_table(None)),
        charts.plot_timeline(tables.connections_table([])),
        charts.plot_timeline(tables.connections_table([]), max_rows=0),
        charts.plot_throughput(tables.frames_table([])),
        charts.plot_header_changes(tables.header_changes_table(None)),
    ):
        assert isinstance(fig, Figure)
        renders(fig)


def test_timeline_gantt_links_pairs(analysis_of):
    a = analysis_of("nginx-ok")
    fig = charts.plot_timeline(a.connections, a.pairs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(a.connections["connection_id"])
    for c, s in zip(a.pairs["client_connection_id"], a.pairs["server_connection_id"], strict=True):
        assert labels.index(s) == labels.index(c) + 1  # a server side right below its client side
    assert len(ax.collections) == 3  # client bars, server bars, pairing links
    assert f"{len(a.pairs)} pairs" in ax.get_title()
    # without pairs: bars only
    assert len(charts.plot_timeline(a.connections).axes[0].collections) == 2


def test_header_changes_counts(analysis_of):
    a = analysis_of("nginx-ok")
    ax = charts.plot_header_changes(a.header_changes).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "request: X-Forwarded-For" in labels
    total = sum(p.get_width() for p in ax.patches)
    assert total == len(a.header_changes)
    ax = charts.plot_header_changes(a.header_changes, top=1).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 2 and labels[1].endswith("other headers)")
    assert sum(p.get_width() for p in ax.patches) == len(a.header_changes)


def test_throughput_totals(analysis_of):
    a = analysis_of("nginx-ok")
    fig = charts.plot_throughput(a.frames, bins=50)
    ax = fig.axes[0]
    series = a.frames.groupby(["capture", "direction"], observed=True).size()
    assert len(ax.patches) == len(series)  # one step line per leg and direction
    span_s = (a.frames["ts"].max() - a.frames["ts"].min()).total_seconds()
    drawn = sum(p.get_data().values.sum() * span_s / 50 for p in ax.patches)
    assert drawn == pytest.approx(a.frames["payload_bytes"].sum(), rel=1e-6)


def test_aggregated_at_scale(big):
    assert len(big.connections) == 10_000 and len(big.pairs) == 5_000
    for name, draw in CHARTS.items():
        fig = draw(big)
        assert artists(fig) <= 30, name
        assert len(fig.axes[0].get_yticklabels()) <= 30, name
        renders(fig)
    title = charts.plot_timeline(big.connections, big.pairs).axes[0].get_title()
    assert "10,000 connections" in title and "5,000 pairs" in title
    ax = charts.plot_timeline(big.connections, big.pairs, max_rows=20_000).axes[0]
    assert len(ax.collections) == 3  # a Gantt on request: still three collections
