"""The Python entry point: :func:`analyze` and the :class:`Analysis` it returns."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING

from .correlate import Correlation, correlate, correlate_within
from .diagnose import diagnose
from .model import Finding
from .pipeline import CaptureAnalysis, analyze_capture

if TYPE_CHECKING:
    import pandas as pd


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
    - ``transcript`` (:data:`~wsanalyze.tables.TRANSCRIPT`): what the negotiated
      sub-protocol carried, e.g. a ``kubectl exec`` session's stdin, stdout,
      stderr and exit status;
    - ``findings`` (:data:`~wsanalyze.tables.FINDINGS`), worst first.

    ``client`` and ``server`` are the per-capture :class:`CaptureAnalysis` objects
    (``server`` is None for a single capture); ``correlation`` holds the pairs and
    the clock offset (None for a single capture); ``finding_list`` the findings as
    :class:`~wsanalyze.model.Finding` values.
    """

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


def analyze(
    client: str | os.PathLike[str],
    server: str | os.PathLike[str] | None = None,
    *,
    clock_offset_ms: float | None = None,
    keep_payloads: bool = False,
    strict: bool = False,
    decode_as: Iterable[int] = (),
    progress: Callable[[str, int, int | None], None] | None = None,
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
    read (``role`` "client" or "server"; ``total_bytes`` None when unknown).

    Raises :class:`wsanalyze.errors.CaptureError` for a file that cannot be used
    and ValueError for a port outside 1-65535.
    """
    ports = frozenset(int(p) for p in decode_as)
    bad = sorted(p for p in ports if not 1 <= p <= 65535)
    if bad:
        raise ValueError(f"decode_as: not a TCP port (1-65535): {bad[0]}")
    def reporter(role: str) -> Callable[[int, int | None], None] | None:
        return None if progress is None else (lambda done, total: progress(role, done, total))

    c = analyze_capture(
        client,
        "client",
        strict=strict,
        keep_payloads=keep_payloads,
        decode_as=ports,
        progress=reporter("client"),
    )
    findings: list[Finding] = list(c.findings)
    for conn in c.connections:
        findings.extend(conn.findings)
    s = None
    corr = None
    if server is not None:
        s = analyze_capture(
            server,
            "server",
            strict=strict,
            keep_payloads=keep_payloads,
            decode_as=ports,
            progress=reporter("server"),
        )
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
