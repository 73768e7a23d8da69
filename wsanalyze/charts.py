"""Charts: DataFrames in, matplotlib Figures out.

Each function is ``plot_x(df, *, ax=None) -> Figure`` on matplotlib's object API:
no global pyplot state, no I/O. Pass ``ax`` to draw into an existing figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

_LANES = {"client": 0.0, "proxy": 1.0, "server": 2.0}
_COLOURS = {
    "request": "#1f77b4",
    "response": "#1f77b4",
    "text": "#2ca02c",
    "binary": "#17becf",
    "ping": "#9467bd",
    "pong": "#9467bd",
    "close": "#d62728",
    "fin": "#7f7f7f",
    "rst": "#d62728",
}


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.figure
        assert isinstance(fig, Figure)
        return fig, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def plot_ladder(
    events: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """A ladder diagram client | proxy | server for one pair, time flowing down.

    ``events`` is :func:`wsanalyze.tables.ladder_table` output (columns ``leg``,
    ``direction``, ``ts``, ``kind``, ``label``). Each event is an arrow between the
    lanes of its leg: client-leg events between client and proxy, server-leg events
    between proxy and server, pointing in the direction of travel. Rows are events
    in time order; each arrow is labelled with its time in ms from the first event.
    """
    n = len(events)
    fig, ax = _axes(ax, (8.0, max(3.0, min(0.3 * n + 1.5, 30.0))))
    for name, x in _LANES.items():
        ax.axvline(x, color="#444444", linewidth=1)
        ax.text(
            x,
            1.01,
            name,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
        )
    if n:
        # One row per event, in time order: events microseconds apart (a request
        # and its echo) stay readable; the time is written on each arrow.
        ms = (events["ts"] - events["ts"].min()).dt.total_seconds() * 1000.0
        for y, ((_, ev), t) in enumerate(zip(events.iterrows(), ms, strict=True)):
            left, right = (0.0, 1.0) if ev["leg"] == "client" else (1.0, 2.0)
            start, end = (left, right) if ev["direction"] == "client_to_server" else (right, left)
            colour = _COLOURS.get(ev["kind"], "#333333")
            ax.annotate(
                "",
                xy=(end, y),
                xytext=(start, y),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2},
            )
            ax.text(
                (left + right) / 2,
                y - 0.08,
                f"{ev['label']}  @{t:.3f} ms",
                ha="center",
                va="bottom",
                fontsize=7,
                color=colour,
                clip_on=True,
                parse_math=False,  # labels come from the capture: "$" is not mathtext
            )
        ax.set_ylim(n - 0.4, -0.8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, 2.2)
    ax.set_xticks([])
    ax.set_ylabel("events in time order (ms since the first, client capture clock)")
    omitted = events.attrs.get("omitted", 0)
    heading = title or events.attrs.get("pair_id", "")
    if omitted:
        heading = f"{heading} ({omitted} messages not drawn)"
    ax.set_title(heading, fontsize=10, pad=24, parse_math=False)
    return fig


def plot_proxy_delay(matches: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Proxy delay per matched message over time, one series per direction.

    ``matches`` is the ``message_matches`` table (columns ``client_ts``,
    ``direction``, ``proxy_delay_ms``). Delays are corrected by the clock offset.
    """
    fig, ax = _axes(ax, (8.0, 3.5))
    for direction, marker in (("client_to_server", "o"), ("server_to_client", "s")):
        part = matches[matches["direction"] == direction]
        if len(part):
            ax.scatter(
                part["client_ts"],
                part["proxy_delay_ms"],
                s=12,
                marker=marker,
                label=direction.replace("_", " "),
                alpha=0.8,
            )
    ax.set_ylabel("proxy delay (ms)")
    ax.set_xlabel("time (UTC, client capture clock)")
    ax.axhline(0, color="#999999", linewidth=0.8)
    if len(matches):
        ax.legend(loc="best", fontsize=8)
    ax.set_title("Proxy delay per message", fontsize=10)
    fig.autofmt_xdate()
    return fig


def plot_proxy_delay_distribution(
    matches: pd.DataFrame, *, ax: Axes | None = None, bins: int = 60
) -> Figure:
    """Proxy delay over time as percentile bands, one series per direction: for a
    capture with too many matched messages for a scatter plot.

    ``matches`` is the ``message_matches`` table (columns ``client_ts``,
    ``direction``, ``proxy_delay_ms``). The capture's time span is cut into at most
    ``bins`` equal intervals; each direction draws its median per interval as a line,
    the 5th-95th percentile range as a band and the maximum as a dotted line.
    """
    fig, ax = _axes(ax, (8.0, 3.5))
    data = matches[["client_ts", "direction", "proxy_delay_ms"]].dropna()
    total = len(data)
    if total:
        t_ns = data["client_ts"].astype("int64").to_numpy()
        t0, t1 = int(t_ns.min()), int(t_ns.max())
        n_bins = max(1, min(bins, total // 20 or 1))
        edges = np.linspace(t0, t1, n_bins + 1) if t1 > t0 else np.array([t0, t0 + 1])
        n_bins = len(edges) - 1
        idx = np.clip(np.searchsorted(edges, t_ns, side="right") - 1, 0, n_bins - 1)
        centres = ((edges[:-1] + edges[1:]) / 2).astype("int64").astype("datetime64[ns]")
        colours = {"client_to_server": "#1f77b4", "server_to_client": "#ff7f0e"}
        for direction, colour in colours.items():
            mine = (data["direction"] == direction).to_numpy()
            if not mine.any():
                continue
            delay = data["proxy_delay_ms"].to_numpy(dtype=float)[mine]
            groups = pd.Series(delay).groupby(idx[mine])
            q = groups.quantile([0.05, 0.5, 0.95]).unstack()
            top = groups.max()
            x = centres[q.index.to_numpy()]
            label = direction.replace("_", " ")
            ax.fill_between(x, q[0.05], q[0.95], color=colour, alpha=0.25, linewidth=0)
            ax.plot(x, q[0.5], color=colour, linewidth=1.4, label=f"{label}: median")
            ax.plot(x, top, color=colour, linewidth=0.8, linestyle=":", label=f"{label}: max")
        ax.legend(loc="best", fontsize=8, title="band: 5th-95th percentile", title_fontsize=8)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("proxy delay (ms)")
    ax.set_xlabel("time (UTC, client capture clock)")
    ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_title(
        f"Proxy delay per message, percentiles over time ({total:,} messages)", fontsize=10
    )
    return fig
