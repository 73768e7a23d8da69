"""Focus on part of a capture: a filtered view of an :class:`~wsanalyze.api.Analysis`.

:func:`filter_analysis` runs after the analysis and returns a new ``Analysis``
holding only the selected connections; the terminal summary, the JSON, HTML and
Markdown reports and the tables all read that view. Filters select **whole
connections** (never single packets or messages), so what is shown of a kept
connection is exactly what the unfiltered analysis found.

- ``connections``: connection ids (``client-3``, ``server-7``; ``server-7-s3`` for
  stream 3 of an HTTP/2 connection, whose id also selects its streams);
- ``hosts``: IP addresses or networks (``192.0.2.10``, ``10.0.0.0/8``), either
  endpoint of the connection;
- ``ports``: TCP ports, either endpoint;
- ``paths``: prefixes of the request path (the request target as sent, before
  ``?``; an absolute-form target ``http://host/path`` counts by its path), any
  request of the connection;
- ``time``: a window ``(start_ns, end_ns)`` (either side None for open) or the
  text ``START..END``; a connection is kept when its first..last packet overlaps
  the window, each capture on its own clock (the times the reports show).

Different kinds of filter must all match (``hosts`` and ``ports``: that host AND
that port); several values of one kind are alternatives (two ports: either).
A pair is kept when either of its legs matches, and then both legs are kept, so
the header changes, proxy delay and close story of a pair are never cut in half.
Findings are kept when they name a kept connection, and capture-wide findings
(those naming no connection) are always kept. The captures' packet counts and
time spans, and the clock offset, stay those of the whole captures.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from .api import Analysis
from .model import Finding
from .pipeline import CaptureAnalysis, ConnectionAnalysis

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "Filters",
    "filter_analysis",
    "parse_host",
    "parse_path",
    "parse_time",
    "parse_time_window",
]


# --- parsing (shared with the command line) ----------------------------------------


def parse_host(text: str) -> Network:
    """An IP address or network: ``192.0.2.10``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``10.0.0.0/8``. Raises ValueError for anything else (host names are not
    resolved: a capture holds addresses)."""
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    try:
        return ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise ValueError(
            f"not an IP address or network: {text!r} (e.g. 192.0.2.10, 10.0.0.0/8, 2001:db8::1)"
        ) from None


def parse_path(text: str) -> str:
    """A request path prefix: it starts with ``/``. Raises ValueError otherwise."""
    if not text.startswith("/"):
        raise ValueError(f"a request path prefix starts with '/': {text!r}")
    return text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
# ISO 8601 with a fraction of a second: datetime takes at most 6 digits; ns are kept.
_FRACTION = re.compile(r"^(.*\d\d:\d\d:\d\d)[.,](\d+)(.*)$")


def parse_time(text: str) -> int:
    """A point in time as int ns since the epoch: epoch seconds (``1763726400``,
    ``1763726400.25``) or ISO 8601 (``2026-11-21T12:00:00.123456Z``,
    ``2026-11-21 12:00:00+08:00``; no offset means UTC, a date alone its midnight
    UTC). Raises ValueError otherwise."""
    s = text.strip()
    if _NUMBER.fullmatch(s):
        try:
            return int(Decimal(s) * 1_000_000_000)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            pass
    frac_ns = 0
    m = _FRACTION.match(s)
    if m:
        s = m.group(1) + m.group(3)
        frac_ns = int((m.group(2) + "000000000")[:9])
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (ISO 8601 like 2026-11-21T12:00:00Z, or epoch seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    td = dt - _EPOCH
    return (td.days * 86_400 + td.seconds) * 1_000_000_000 + td.microseconds * 1000 + frac_ns


def parse_time_window(text: str) -> tuple[int | None, int | None]:
    """``START..END`` as ``(start_ns, end_ns)``; either side may be empty (open)
    but not both. Raises ValueError for a malformed window or START after END."""
    parts = text.split("..")
    if len(parts) != 2:
        raise ValueError(
            f"not a time window: {text!r} (START..END, either side may be empty, "
            "e.g. 2026-11-21T12:00:00Z..2026-11-21T12:05:00Z or 1763726400..)"
        )
    start_s, end_s = (p.strip() for p in parts)
    if not start_s and not end_s:
        raise ValueError(f"empty time window: {text!r} (give START, END or both)")
    start = parse_time(start_s) if start_s else None
    end = parse_time(end_s) if end_s else None
    if start is not None and end is not None and start > end:
        raise ValueError(f"time window ends before it starts: {text!r}")
    return start, end


# --- matching ------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Normalised filter values (see the module docstring); empty means "any"."""

    connections: frozenset[str] = frozenset()
    hosts: tuple[Network, ...] = ()
    ports: frozenset[int] = frozenset()
    paths: tuple[str, ...] = ()
    time: tuple[int | None, int | None] | None = None

    @classmethod
    def of(
        cls,
        *,
        connections: Iterable[str] = (),
        hosts: Iterable[str | Network] = (),
        ports: Iterable[int] = (),
        paths: Iterable[str] = (),
        time: str | tuple[int | None, int | None] | None = None,
    ) -> Filters:
        """Validate and normalise; raises ValueError for a bad value."""
        port_set = frozenset(int(p) for p in ports)
        bad = sorted(p for p in port_set if not 1 <= p <= 65535)
        if bad:
            raise ValueError(f"not a TCP port (1-65535): {bad[0]}")
        return cls(
            connections=frozenset(connections),
            hosts=tuple(h if not isinstance(h, str) else parse_host(h) for h in hosts),
            ports=port_set,
            paths=tuple(parse_path(p) for p in paths),
            time=parse_time_window(time) if isinstance(time, str) else time,
        )

    def __bool__(self) -> bool:
        return bool(self.connections or self.hosts or self.ports or self.paths or self.time)

    def matches(self, conn: ConnectionAnalysis) -> bool:
        """Whether one connection passes every given kind of filter."""
        t = conn.tcp
        ends = (t.client, t.server)
        if self.connections and not (
            conn.id in self.connections or conn.parent in self.connections
        ):  # an HTTP/2 connection selects its WebSocket streams
            return False
        if self.ports and not any(e.port in self.ports for e in ends):
            return False
        if self.hosts:
            addrs = [ipaddress.ip_address(e.ip) for e in ends]
            if not any(a in net for a in addrs for net in self.hosts if a.version == net.version):
                return False
        if self.paths:
            paths = [request_path(r.target) for r in conn.requests]
            if not any(p.startswith(prefix) for p in paths for prefix in self.paths):
                return False
        if self.time is not None:
            start, end = self.time
            if start is not None and t.last_ts_ns < start:
                return False
            if end is not None and t.first_ts_ns > end:
                return False
        return True

    def describe(self) -> str:
        """The filters as command-line options (for a note in the summary)."""
        parts = [f"--connection {c}" for c in sorted(self.connections)]
        parts += [f"--host {h}" for h in self.hosts]
        parts += [f"--port {p}" for p in sorted(self.ports)]
        parts += [f"--path {p}" for p in self.paths]
        if self.time is not None:
            parts.append(f"--time {_iso(self.time[0])}..{_iso(self.time[1])}")
        return " ".join(parts)


def _iso(ts_ns: int | None) -> str:
    if ts_ns is None:
        return ""
    from .report import iso

    return iso(ts_ns) or ""


def request_path(target: bytes) -> str:
    """The path of a request target (RFC 9112 §3.2): origin-form ``/p?q`` gives
    ``/p``; absolute-form ``http://h/p?q`` gives ``/p``; others as sent."""
    s = target.decode("latin-1")
    if s.startswith("/"):
        return s.split("?", 1)[0].split("#", 1)[0]
    if "://" in s:
        try:
            return urlsplit(s).path or "/"
        except ValueError:
            return s
    return s


# --- the filtered view ---------------------------------------------------------------


def filter_analysis(
    analysis: Analysis,
    *,
    connections: Iterable[str] = (),
    hosts: Iterable[str | Network] = (),
    ports: Iterable[int] = (),
    paths: Iterable[str] = (),
    time: str | tuple[int | None, int | None] | None = None,
) -> Analysis:
    """A new :class:`~wsanalyze.api.Analysis` holding only the matching
    connections (see the module docstring for the rules); ``analysis`` itself is
    not changed. With no filter given, ``analysis`` is returned as is.

    Raises ValueError for a bad filter value or a connection id that is in
    neither capture (the message lists the ids there are).
    """
    f = Filters.of(connections=connections, hosts=hosts, ports=ports, paths=paths, time=time)
    if not f:
        return analysis
    every = [c for cap in analysis.captures for c in cap.connections]
    unknown = sorted(f.connections - {c.id for c in every})
    if unknown:
        raise ValueError(
            f"no connection {unknown[0]} in the capture(s) (there are {_id_ranges(every)})"
        )
    keep = {c.id for c in every if f.matches(c)}
    corr = analysis.correlation
    if corr is not None:
        pairs = [p for p in corr.pairs if p.client.id in keep or p.server.id in keep]
        for p in pairs:
            keep.update((p.client.id, p.server.id))

        def kept(cs: list[ConnectionAnalysis]) -> list[ConnectionAnalysis]:
            return [c for c in cs if c.id in keep]

        corr = replace(
            corr,
            pairs=pairs,
            findings=_findings(corr.findings, keep),
            unpaired_client=kept(corr.unpaired_client),
            unpaired_server=kept(corr.unpaired_server),
            ambiguous_client=kept(corr.ambiguous_client),
        )
    client = _capture(analysis.client, keep)
    server = _capture(analysis.server, keep) if analysis.server is not None else None
    out = Analysis(client, server, corr, _findings(analysis.finding_list, keep))
    out.filters = f  # type: ignore[attr-defined]  # what was selected, for reports
    out.unfiltered_connections = len(every)  # type: ignore[attr-defined]
    return out


def _findings(findings: list[Finding], keep: set[str]) -> list[Finding]:
    """Findings naming a kept connection, and those naming none (capture-wide)."""
    return [f for f in findings if not f.connections or any(c in keep for c in f.connections)]


def _capture(cap: CaptureAnalysis, keep: set[str]) -> CaptureAnalysis:
    src = cap.frames
    rows = [i for i, cid in enumerate(src.connection) if cid in keep]
    frames = src if len(rows) == len(src) else src.select(rows)
    return replace(
        cap,
        connections=[c for c in cap.connections if c.id in keep],
        frames=frames,
    )


def _id_ranges(conns: list[ConnectionAnalysis]) -> str:
    """The ids per capture: all of them when few, else the first and last and how
    many (ids count the capture's TCP connections, so they may skip numbers)."""
    by_role: dict[str, list[str]] = {}
    for c in conns:
        by_role.setdefault(c.role, []).append(c.id)
    if not by_role:
        return "none"
    return "; ".join(
        ", ".join(ids) if len(ids) <= 6 else f"{len(ids)} from {ids[0]} to {ids[-1]}"
        for ids in by_role.values()
    )
