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


# --- many connections: timeline, throughput, header changes ---------------------------------

_CAPTURE_COLOURS = {"client": "#1f77b4", "server": "#ff7f0e"}
_LEG_DIRECTIONS = {
    ("client", "client_to_server"): "client → proxy",
    ("client", "server_to_client"): "proxy → client",
    ("server", "client_to_server"): "proxy → server",
    ("server", "server_to_client"): "server → proxy",
}
_CHANGE_COLOURS = {
    "added": "#2ca02c",
    "removed": "#d62728",
    "modified": "#ff7f0e",
    "mapped": "#7f7f7f",
}


def _ns(values: pd.Series) -> np.ndarray:
    """Timestamps (tz-aware or naive, no NaT) as int64 ns since the epoch."""
    return values.astype("int64").to_numpy()


def _dates(ns: np.ndarray) -> np.ndarray:
    """int64 ns since the epoch as matplotlib date numbers."""
    from matplotlib.dates import date2num

    return np.asarray(date2num(np.asarray(ns, dtype="int64").astype("datetime64[ns]")))


def _date_axis(ax: Axes) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def plot_timeline(
    connections: pd.DataFrame,
    pairs: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    max_rows: int = 200,
) -> Figure:
    """A connection timeline (Gantt) of both captures, with the pairing.

    ``connections`` is the ``connections`` table (columns ``connection_id``,
    ``capture``, ``first_ts``, ``last_ts``); ``pairs`` the ``pairs`` table (columns
    ``client_connection_id``, ``server_connection_id``) or None. Up to ``max_rows``
    connections: one bar per connection from its first to its last packet, coloured
    by capture, each server-side connection right below the client-side one it is
    paired with and linked to it by a vertical line at the server side's first
    packet. Above ``max_rows``: the number of open connections over time per capture
    (step lines), the pairing counts in the title. Times are on each capture's own
    clock.
    """
    conns = connections[["connection_id", "capture", "first_ts", "last_ts"]].dropna()
    n = len(conns)
    pair_of: dict[str, str] = {}
    if pairs is not None and len(pairs):
        ids = set(conns["connection_id"])
        for c, s in zip(pairs["client_connection_id"], pairs["server_connection_id"], strict=True):
            if c in ids and s in ids:
                pair_of[c] = s
    n_pairs = len(pair_of)
    # An HTTP/2 connection whose WebSocket streams are rows (and pairs) of their own
    # is their transport, not a connection waiting for a twin.
    transports = set()
    if "stream_id" in connections:
        streams = connections.loc[connections["stream_id"].notna(), "connection_id"]
        transports = {str(c).rsplit("-s", 1)[0] for c in streams}
    pairable = conns[~conns["connection_id"].isin(transports)]
    by_capture = pairable["capture"].astype(str).value_counts()
    unpaired_c = int(by_capture.get("client", 0)) - n_pairs
    unpaired_s = int(by_capture.get("server", 0)) - n_pairs
    counts = f"{n:,} connections"
    if pairs is not None:
        counts += (
            f", {n_pairs:,} pairs, unpaired: {unpaired_c:,} client-side, {unpaired_s:,} server-side"
        )
    if n <= max_rows:
        fig, ax = _axes(ax, (9.0, max(2.5, min(0.22 * n + 1.5, 40.0))))
        # rows: connections by first packet, a paired server-side one under its client side
        order = conns.sort_values("first_ts", kind="stable")
        paired_servers = set(pair_of.values())
        rows: list[str] = []
        for cid, cap in zip(order["connection_id"], order["capture"].astype(str), strict=True):
            if cap == "server" and cid in paired_servers:
                continue
            rows.append(cid)
            if cid in pair_of:
                rows.append(pair_of[cid])
        index = conns.set_index("connection_id")
        y = {cid: i for i, cid in enumerate(rows)}
        for cap, colour in _CAPTURE_COLOURS.items():
            part = index.loc[[r for r in rows if str(index.at[r, "capture"]) == cap]]
            if not len(part):
                continue
            ax.hlines(
                [y[r] for r in part.index],
                _dates(_ns(part["first_ts"])),
                _dates(_ns(part["last_ts"])),
                colors=colour,
                linewidth=6,
                label=f"{cap} capture ({'client ↔ proxy' if cap == 'client' else 'proxy ↔ server'})",
            )
        if pair_of:
            links = list(pair_of.items())
            at = _dates(_ns(index.loc[[s for _, s in links], "first_ts"]))
            ax.vlines(
                at,
                [y[c] for c, _ in links],
                [y[s] for _, s in links],
                colors="#444444",
                linewidth=1,
                label="paired (at the server side's first packet)",
            )
        ax.set_yticks(range(len(rows)), rows, fontsize=6 if len(rows) > 40 else 8)
        if rows:
            ax.set_ylim(len(rows) - 0.5, -0.5)
        if n:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
            _date_axis(ax)
        ax.set_title(f"Connection timeline ({counts})", fontsize=10)
    else:
        fig, ax = _axes(ax, (9.0, 3.5))
        for cap, colour in _CAPTURE_COLOURS.items():
            part = conns[conns["capture"].astype(str) == cap]
            if not len(part):
                continue
            t = np.concatenate([_ns(part["first_ts"]), _ns(part["last_ts"])])
            step = np.concatenate([np.ones(len(part)), -np.ones(len(part))])
            o = np.lexsort((step, t))  # at equal times, closes before opens
            open_now = np.cumsum(step[o])
            ax.step(_dates(t[o]), open_now, where="post", color=colour, label=f"{cap} capture")
        ax.set_ylabel("open connections")
        ax.legend(loc="best", fontsize=8)
        _date_axis(ax)
        ax.set_title(f"Open connections over time ({counts})", fontsize=10)
    ax.set_xlabel("time (UTC, each capture's clock)")
    return fig


def plot_throughput(frames: pd.DataFrame, *, ax: Axes | None = None, bins: int = 200) -> Figure:
    """WebSocket payload throughput over time, per leg (capture) and direction.

    ``frames`` is the ``frames`` table (columns ``capture``, ``direction``, ``ts``,
    ``payload_bytes``). The time span is cut into at most ``bins`` equal intervals;
    each leg and direction is one line of payload bytes per second per interval
    (computed with array operations: millions of frames are fine).
    """
    fig, ax = _axes(ax, (9.0, 3.5))
    data = frames[["capture", "direction", "ts", "payload_bytes"]].dropna()
    total = len(data)
    if total:
        from matplotlib.ticker import EngFormatter

        t_ns = _ns(data["ts"])
        t0, t1 = int(t_ns.min()), int(t_ns.max())
        n_bins = max(1, bins)
        span = max(t1 - t0, 1)
        idx = np.minimum((t_ns - t0).astype("float64") / span * n_bins, n_bins - 1).astype("int64")
        cap = pd.Categorical(data["capture"].astype(str), categories=["client", "server"]).codes
        dirs = ["client_to_server", "server_to_client"]
        d = pd.Categorical(data["direction"].astype(str), categories=dirs).codes
        key = (cap.astype("int64") * 2 + d) * n_bins + idx
        ok = (cap >= 0) & (d >= 0)
        sums = np.bincount(
            key[ok],
            weights=data["payload_bytes"].to_numpy(dtype="float64")[ok],
            minlength=4 * n_bins,
        ).reshape(4, n_bins)
        present = np.bincount((cap.astype("int64") * 2 + d)[ok], minlength=4) > 0
        width_s = span / n_bins / 1e9
        edges = _dates(t0 + (np.arange(n_bins + 1) * (span / n_bins)).astype("int64"))
        styles = {"client_to_server": "-", "server_to_client": "--"}
        for i, (c, dn) in enumerate((c, dn) for c in ("client", "server") for dn in dirs):
            if present[i]:
                ax.stairs(
                    sums[i] / width_s,
                    edges,
                    color=_CAPTURE_COLOURS[c],
                    linestyle=styles[dn],
                    label=f"{c} capture: {_LEG_DIRECTIONS[(c, dn)]}",
                )
        ax.yaxis.set_major_formatter(EngFormatter(unit="B/s"))
        ax.legend(loc="best", fontsize=8)
        _date_axis(ax)
    ax.set_ylabel("payload throughput")
    ax.set_xlabel("time (UTC, each capture's clock)")
    ax.set_title(f"WebSocket payload throughput per leg ({total:,} frames)", fontsize=10)
    return fig


def plot_header_changes(
    header_changes: pd.DataFrame, *, ax: Axes | None = None, top: int = 20
) -> Figure:
    """What the proxy does to handshake headers, counted across pairs.

    ``header_changes`` is the ``header_changes`` table (columns ``pair_id``,
    ``message``, ``change``, ``name``). One horizontal bar per (message, header
    name, names compared case-insensitively), stacked by change kind (added,
    removed, modified), the ``top`` most frequent first; the rest are summed into one
    last bar.
    """
    data = header_changes[["pair_id", "message", "change", "name"]].dropna()
    total = len(data)
    n_pairs = data["pair_id"].nunique()
    fig, ax = _axes(ax, (8.0, max(2.5, 0.3 * min(top + 1, data["name"].nunique() + 1) + 1.5)))
    kinds = list(_CHANGE_COLOURS)
    if total:
        lower = data["name"].str.lower()
        spelling = data["name"].groupby(lower).agg(lambda v: v.value_counts().index[0])
        label = data["message"].astype(str) + ": " + lower.map(spelling)
        table = pd.crosstab(label, data["change"].astype(str))
        table = table.reindex(columns=kinds, fill_value=0)
        table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
        if len(table) > top:
            rest = table.iloc[top:].sum()
            table = pd.concat(
                [
                    table.iloc[:top],
                    pd.DataFrame([rest], index=[f"({len(table) - top} other headers)"]),
                ]
            )
        yy = np.arange(len(table))
        left = np.zeros(len(table))
        for kind in kinds:
            width = table[kind].to_numpy(dtype=float)
            if width.any():
                ax.barh(yy, width, left=left, color=_CHANGE_COLOURS[kind], label=kind, height=0.7)
            left += width
        ax.set_yticks(yy, [str(i) for i in table.index], fontsize=8, parse_math=False)
        ax.set_ylim(len(table) - 0.5, -0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        ax.set_yticks([])
    ax.set_xlabel("changes (one per pair, message and header)")
    ax.set_title(
        f"Header changes by the proxy ({total:,} changes in {n_pairs:,} pairs)",
        fontsize=10,
        parse_math=False,
    )
    return fig
