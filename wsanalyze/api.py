"""The Python entry point: :func:`analyze` and the :class:`Analysis` it returns."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .correlate import Correlation, correlate, correlate_within
from .diagnose import diagnose
from .model import Finding, Severity
from .parallel import server_job
from .pipeline import (
    MAX_MESSAGES,
    CaptureAnalysis,
    _file_size,
    analyze_capture,
    fewer_collections,
)

if TYPE_CHECKING:
    import pandas as pd


class _BothProgress:
    """Progress of two captures read at once: one ``"client and server"`` report
    of the summed bytes, each time either side reports (the client side also
    relays what the server-side process has sent so far)."""

    def __init__(
        self, progress: Callable[[str, int, int | None], None] | None, *paths: Any
    ) -> None:
        self.progress = progress
        self.job: Any = None
        self.done = [0, 0]
        self.total: list[int | None] = [_file_size(p) for p in paths]

    def _report(self, i: int, done: int, total: int | None) -> None:
        self.done[i] = done
        self.total[i] = total
        assert self.progress is not None
        known = None if None in self.total else sum(t or 0 for t in self.total)
        self.progress("client and server", sum(self.done), known)

    def client(self, done: int, total: int | None) -> None:
        self._report(0, done, total)
        if self.job is not None:
            self.job.poll()

    def server(self, done: int, total: int | None) -> None:
        self._report(1, done, total)


class Analysis:
    """The analysis of one or two captures, with its tables as pandas DataFrames.

    Each table attribute is built on first use and has the columns and dtypes
    declared in :mod:`wsanalyze.tables` (timestamps ``datetime64[ns, UTC]``, sizes
    in bytes, delays in ms):

    - ``connections`` (:data:`~wsanalyze.tables.CONNECTIONS`): one row per TCP
      connection carrying HTTP/1.x or WebSocket, both captures;
    - ``frames`` (:data:`~wsanalyze.tables.FRAMES`): one row per WebSocket frame;
    - ``messages`` (:data:`~wsanalyze.tables.MESSAGES`): one row per message or
      control frame;
    - ``pairs`` (:data:`~wsanalyze.tables.PAIRS`): client-side ↔ server-side pairs;
    - ``header_changes`` (:data:`~wsanalyze.tables.HEADER_CHANGES`);
    - ``message_matches`` (:data:`~wsanalyze.tables.MESSAGE_MATCHES`): proxy delay
      per matched message;
    - ``behaviour`` (:data:`~wsanalyze.behaviour.BEHAVIOUR`): per pair and direction,
      what the proxy did to the messages (dropped, injected, modified, ...);
    - ``handshake_timings`` (:data:`~wsanalyze.timing.HANDSHAKE_TIMINGS`): where each
      pair's opening handshake spent its time;
    - ``transcript`` (:data:`~wsanalyze.tables.TRANSCRIPT`): what the negotiated
      sub-protocol carried, e.g. a ``kubectl exec`` session's stdin, stdout,
      stderr and exit status;
    - ``findings`` (:data:`~wsanalyze.tables.FINDINGS`), worst first.

    ``client`` and ``server`` are the per-capture :class:`CaptureAnalysis` objects
    (``server`` is None for a single capture); ``correlation`` holds the pairs and
    the clock offset (None for a single capture); ``finding_list`` the findings as
    :class:`~wsanalyze.model.Finding` values.
    """

    _HTML_STYLE = (
        "<style>"
        ".wsa-analysis table{border-collapse:collapse;margin:0.2em 0 0.8em 0;font-size:90%}"
        ".wsa-analysis th,.wsa-analysis td{border:1px solid #ccc;padding:2px 6px;"
        "text-align:left;vertical-align:top}"
        ".wsa-analysis h4{margin:0.6em 0 0.2em 0}"
        "</style>"
    )
    """Styles of :meth:`Analysis._repr_html_`, scoped to its ``wsa-analysis`` block."""

    def __init__(
        self,
        client: CaptureAnalysis,
        server: CaptureAnalysis | None,
        correlation: Correlation | None,
        findings: list[Finding],
    ) -> None:
        self.client = client
        self.server = server
        self.correlation = correlation
        self.finding_list = findings

    @property
    def captures(self) -> list[CaptureAnalysis]:
        """The analysed captures, client side first."""
        return [self.client] + ([self.server] if self.server is not None else [])

    @cached_property
    def connections(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.connections_table(self.captures)

    @cached_property
    def frames(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.frames_table(self.captures)

    @cached_property
    def messages(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.messages_table(self.captures)

    @cached_property
    def pairs(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.pairs_table(self.correlation)

    @cached_property
    def header_changes(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.header_changes_table(self.correlation)

    @cached_property
    def message_matches(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.message_matches_table(self.correlation)

    @cached_property
    def behaviour(self) -> pd.DataFrame:
        from .behaviour import behaviour_table

        return behaviour_table(self.correlation)

    @cached_property
    def handshake_timings(self) -> pd.DataFrame:
        from .timing import handshake_timing_table

        return handshake_timing_table(self.correlation)

    @cached_property
    def transcript(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.transcript_table(self.captures)

    @cached_property
    def findings(self) -> pd.DataFrame:
        from . import tables  # pandas is imported on first use only

        return tables.findings_table(self.finding_list)

    def __repr__(self) -> str:
        n = sum(len(c.connections) for c in self.captures)
        pairs = len(self.correlation.pairs) if self.correlation else 0
        return (
            f"<Analysis captures={len(self.captures)} connections={n} pairs={pairs} "
            f"findings={len(self.finding_list)}>"
        )

    # --- notebooks: summary, rich display, export ------------------------------------

    def summary(self, *, redact: bool = True) -> str:
        """The terminal summary (what the CLI prints): captures, connections, pairs
        with their header changes and proxy delay, findings; ``print(a.summary())``.
        Credentials are redacted unless ``redact=False``."""
        from . import report

        return report.summary_text(self, redact=redact)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, by name, in the order of :data:`wsanalyze.tables.SCHEMAS`
        (building those not built yet)."""
        from . import tables

        return {name: getattr(self, name) for name in tables.SCHEMAS}

    def to_parquet(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write every table to ``directory/<table>.parquet`` (pyarrow, no index) and
        return the paths, in the order of :data:`wsanalyze.tables.SCHEMAS`.

        The directory is created (with its parents) when missing; existing files of
        the same names are replaced (each written to a temporary name first, so a
        failure never leaves a half-written table under its real name). Columns keep
        their declared dtypes when read back with ``pd.read_parquet``
        (``datetime64[ns, UTC]``, ``string``, ``Int64``, ``boolean``, categoricals with
        all their categories) except one thing Parquet cannot store: the categories of
        a categorical column in a table with no rows. :meth:`read_parquet` restores
        the declared dtypes exactly.

        The exported tables are NOT redacted (they hold what the captures hold).

        Raises ValueError when ``directory`` is empty, and OSError (with the path and
        the reason: NotADirectoryError, FileExistsError, PermissionError, ...) when
        it cannot be created or written.
        """
        from . import tables

        if not os.fspath(directory):
            raise ValueError("to_parquet: the directory is an empty path")
        root = Path(directory)
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"to_parquet: {str(root)!r} exists and is not a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(
                exc, f"to_parquet: cannot create the directory {str(root)!r}"
            ) from exc
        paths = []
        for name in tables.SCHEMAS:
            path = root / f"{name}.parquet"
            tmp = root / f".{name}.parquet.{os.getpid()}.tmp"
            try:
                getattr(self, name).to_parquet(tmp, engine="pyarrow", index=False)
                os.replace(tmp, path)
            except OSError as exc:
                raise self._os_error(exc, f"to_parquet: cannot write {str(path)!r}") from exc
            finally:
                tmp.unlink(missing_ok=True)  # gone after the replace; a failure's leftovers
            paths.append(path)
        return paths

    @staticmethod
    def read_parquet(directory: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
        """The tables :meth:`to_parquet` wrote into ``directory``, by name, with the
        declared columns and dtypes of :data:`wsanalyze.tables.SCHEMAS` (which
        ``pd.read_parquet`` alone loses for the categories of an empty table).

        Raises FileNotFoundError for a missing table file and ValueError for a file
        whose columns are not the declared ones (written by another version).
        """
        import pandas as pd

        from . import tables

        out = {}
        for name, schema in tables.SCHEMAS.items():
            path = Path(directory) / f"{name}.parquet"
            df = pd.read_parquet(path, engine="pyarrow")
            if list(df.columns) != list(schema):
                raise ValueError(
                    f"read_parquet: {str(path)!r} has columns {list(df.columns)}, "
                    f"expected {list(schema)}"
                )
            for col, dtype in schema.items():
                if df[col].dtype != dtype or str(df[col].dtype) != str(dtype):
                    df[col] = df[col].astype(dtype)
            out[name] = df
        return out

    def _repr_html_(self) -> str:
        """A compact HTML summary for Jupyter: captures, counts, clock offset, the
        findings worst first, the pairs and the tables to explore. Every string from a
        capture is escaped and credentials are redacted (notebooks get shared)."""
        return self._html_summary(max_pairs=20, max_findings=10)

    def _html_summary(self, *, max_pairs: int, max_findings: int) -> str:
        import pandas as pd

        from . import report, tables
        from .redact import Redactor

        r = Redactor(True)
        dash = "\u2014"

        def e(value: Any) -> str:  # escaped text; None and NA as a dash
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                return dash
            return html.escape(str(value), quote=True)

        def cut(text: str | None, limit: int) -> str | None:
            return text if text is None or len(text) <= limit else text[: limit - 1] + "\u2026"

        def ms(value: Any) -> str:
            return dash if value is None or pd.isna(value) else f"{float(value):.3f}"

        def table(head: list[str], rows: list[list[str]]) -> str:  # cells already escaped
            th = "".join(f"<th>{h}</th>" for h in head)
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"

        conns = [conn for cap in self.captures for conn in cap.connections]
        n_pairs = len(self.correlation.pairs) if self.correlation else 0
        out = [self._HTML_STYLE, '<div class="wsa-analysis">', "<h4>wsanalyze analysis</h4>"]

        rows = []
        for cap in self.captures:
            span = dash
            if cap.first_ts_ns is not None and cap.last_ts_ns is not None:
                span = (
                    f"{e(report.iso(cap.first_ts_ns))} .. {e(report.iso(cap.last_ts_ns))} "
                    f"({(cap.last_ts_ns - cap.first_ts_ns) / 1e9:.3f} s)"
                )
            rows.append([e(cap.role), f"<code>{e(cap.path)}</code>", e(cap.packets), span])
        out.append(table(["capture", "path", "packets", "time range (UTC)"], rows))

        offset = self.correlation.clock_offset if self.correlation else None
        if self.server is None:
            clock = "one capture, one clock"
        elif offset is None:
            clock = "not estimated (no pair)"
        else:
            low, high = (
                dash if v is None else f"{v / 1e6:.3f}" for v in (offset.low_ns, offset.high_ns)
            )
            clock = f"{offset.estimate_ns / 1e6:.3f} ms (bounds {low} .. {high} ms" + (
                ", imposed)" if offset.imposed else ")"
            )
        counts = [
            len(conns),
            sum(1 for conn in conns if conn.websocket),
            n_pairs,
            sum(sum(conn.message_counts().values()) for conn in conns),
            len(self.finding_list),
            clock,
        ]
        head = ["connections", "WebSocket connections", "pairs", "messages", "findings"]
        out.append(table([*head, "clock offset (server \u2212 client)"], [[e(c) for c in counts]]))

        groups: dict[str, list[Finding]] = {}
        for f in sorted(self.finding_list, key=lambda f: (-f.severity, f.ts_ns or 0)):
            groups.setdefault(f.code, []).append(f)
        # Worst first; at equal severity the proxy's diagnosis (both legs) leads, as in
        # the reports.
        ranked = sorted(
            groups.items(),
            key=lambda kv: (-kv[1][0].severity, not kv[0].startswith("proxy_"), -len(kv[1]), kv[0]),
        )
        out.append(f"<h4>Findings: {len(self.finding_list)}, worst first</h4>")
        rows = []
        for code, fs in ranked[:max_findings]:
            sev = Severity(fs[0].severity).label
            colour = {"error": "#b00020", "warning": "#9a6700"}.get(sev, "#555555")
            detail = cut(r.text(fs[0].detail), 200)
            style = f"color:{colour};font-weight:bold"
            rows.append(
                [f'<span style="{style}">{e(sev)}</span>', f"<code>{e(code)}</code>"]
                + [e(len(fs)), e(detail)]
            )
        if rows:
            out.append(table(["severity", "code", "count", "first detail"], rows))
        else:
            out.append("<p>No findings.</p>")
        if len(ranked) > max_findings:
            more = len(ranked) - max_findings
            out.append(f"<p>\u2026 {more} more codes: <code>.findings</code></p>")

        out.append(f"<h4>Pairs: {n_pairs} (client side \u2194 server side)</h4>")
        rows = []
        for p in self.pairs.head(max_pairs).itertuples(index=False):
            target = None if pd.isna(p.target) else r.target(str(p.target))
            rows.append(
                [
                    e(p.pair_id),
                    f"{e(p.client)} \u2192 {e(p.proxy_listener)}<br>"
                    f"{e(p.proxy_source)} \u2192 {e(p.server)}",
                    f"<code>{e(cut(target, 80))}</code>",
                    f"{e(p.client_status)} / {e(p.server_status)}",
                    f"{float(p.confidence):.2f}",
                    e(p.header_changes),
                    f"{ms(p.client_to_server_delay_p50_ms)} / "
                    f"{ms(p.server_to_client_delay_p50_ms)}",
                ]
            )
        if rows:
            head = ["pair", "client \u2192 proxy<br>proxy \u2192 server", "target"]
            head += ["status client / server leg", "confidence", "header changes"]
            head += ["proxy delay p50 ms c\u2192s / s\u2192c"]
            out.append(table(head, rows))
        elif self.server is None:
            out.append("<p>No pairs: analyse the server-side capture too.</p>")
        else:
            out.append("<p>No pairs.</p>")
        if n_pairs > max_pairs:
            out.append(f"<p>\u2026 {n_pairs - max_pairs} more pairs: <code>.pairs</code></p>")

        names = ", ".join(f"<code>.{e(n)}</code>" for n in tables.SCHEMAS)
        out.append(
            f"<p>Explore the tables (pandas DataFrames, see docs/tables.md): {names}; "
            "also <code>.summary()</code> and <code>.to_parquet(directory)</code>. "
            "Credentials are redacted in this summary, not in the tables.</p></div>"
        )
        return "".join(out)

    @staticmethod
    def _os_error(exc: OSError, what: str) -> OSError:
        """An OSError of ``exc``'s kind (same errno) saying what failed and why."""
        message = f"{what}: {exc.strerror or exc}"
        try:
            return type(exc)(exc.errno, message) if exc.errno else type(exc)(message)
        except Exception:  # a subclass with another constructor
            return OSError(exc.errno, message) if exc.errno else OSError(message)


def analyze(
    client: str | os.PathLike[str],
    server: str | os.PathLike[str] | None = None,
    *,
    clock_offset_ms: float | None = None,
    keep_payloads: bool = False,
    strict: bool = False,
    decode_as: Iterable[int] = (),
    progress: Callable[[str, int, int | None], None] | None = None,
    max_messages: int | None = MAX_MESSAGES,
    parallel: bool | None = None,
) -> Analysis:
    """Analyse a client-side capture and, optionally, the server-side capture of
    the same proxy.

    ``clock_offset_ms`` imposes the offset of the server capture's clock relative
    to the client capture's (instead of estimating it from the traffic). With one
    capture, connections carrying the same Sec-WebSocket-Key are paired as two legs
    of one proxied WebSocket (a capture taken on the proxy host with ``-i any``).
    ``keep_payloads`` keeps whole message payloads (``Message.payload``).
    ``strict`` re-raises unexpected internal exceptions (for tests).
    ``decode_as`` lists TCP ports (1-65535) whose connections are decoded as
    WebSocket even though no handshake was captured, like tshark's Decode As
    (without it, only connections whose start was not captured are examined, and
    decoded when their bytes are recognisably RFC 6455 frames, see
    :mod:`wsanalyze.detect`); either way such a connection gets one
    ``handshake_not_captured`` finding.
    ``progress(role, bytes_read, total_bytes)`` is called while each capture is
    read (``role`` "client" or "server"; ``total_bytes`` None when unknown), or
    while both are read at once (``role`` "client and server", the sums).
    ``parallel``: with two captures, analyse the server capture in a second process
    while this one reads the client capture (:mod:`wsanalyze.parallel`); None (the
    default) does so when the ``fork`` start method and a second CPU are available
    and no other thread runs (not in a Jupyter kernel) and the server capture is not
    standard input, False never. The result is the same either way.
    ``max_messages`` bounds the messages kept per capture (default 1,000,000; 0 or
    None: no limit); the rest are decoded and counted, not kept, and an
    ``analysis_messages_not_kept`` finding says so (see
    :func:`wsanalyze.pipeline.analyze_capture`).

    Raises :class:`wsanalyze.errors.CaptureError` for a file that cannot be used
    and ValueError for a port outside 1-65535 or a negative ``max_messages``.
    """
    if max_messages is not None and max_messages < 0:
        raise ValueError(f"max_messages: not a count (0 for no limit): {max_messages}")
    ports = frozenset(int(p) for p in decode_as)
    bad = sorted(p for p in ports if not 1 <= p <= 65535)
    if bad:
        raise ValueError(f"decode_as: not a TCP port (1-65535): {bad[0]}")

    def reporter(role: str) -> Callable[[int, int | None], None] | None:
        return None if progress is None else (lambda done, total: progress(role, done, total))

    options: dict[str, Any] = {
        "strict": strict,
        "keep_payloads": keep_payloads,
        "decode_as": ports,
        "max_messages": max_messages,
    }
    job = None
    client_progress = reporter("client")
    # (a server capture on standard input is read here: a forked child gets none)
    if server is not None and parallel is not False and str(server) != "-":
        both = _BothProgress(progress, client, server)
        job = server_job(server, options, None if progress is None else both.server)
        if job is not None:
            both.job = job
            client_progress = None if progress is None else both.client
    try:
        c = analyze_capture(client, "client", progress=client_progress, **options)
        s = None
        if server is not None:
            if job is not None:
                s = job.result()
            else:
                s = analyze_capture(server, "server", progress=reporter("server"), **options)
    except BaseException:
        if job is not None:
            job.cancel()
        raise
    findings: list[Finding] = list(c.findings)
    for conn in c.connections:
        findings.extend(conn.findings)
    corr = None
    with fewer_collections():
        if s is not None:
            findings.extend(s.findings)
            for conn in s.connections:
                findings.extend(conn.findings)
            offset_ns = round(clock_offset_ms * 1e6) if clock_offset_ms is not None else None
            corr = correlate(c, s, clock_offset_ns=offset_ns)
            findings.extend(diagnose(corr))
        else:
            # One capture may hold both legs (taken on the proxy host with -i any).
            corr = correlate_within(c)
            if corr is not None:
                findings.extend(diagnose(corr, server_capture_given=False))
    return Analysis(c, s, corr, findings)
