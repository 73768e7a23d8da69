"""Handshake timing of a pair: where the time of a proxied WebSocket opening goes.

Per pair (client ↔ proxy leg and proxy ↔ server leg), all in int ns, None when a
needed event was not captured::

    client_connect    client leg: SYN → ACK of the TCP handshake
    proxy_request     client-leg request complete → server-leg request complete
                      (one clock via θ); includes the proxy's server-side TCP connect
                      when it opens a new connection for this request
    server_connect    server leg: SYN → ACK of the TCP handshake
    server_connection_new
                      True when the server-side connection was opened after the
                      client request (the proxy opened a new connection), False when
                      it was reused (opened before, or it carried earlier requests)
    server_response   server leg: request complete → response complete
    response_forward  server-leg response complete → client-leg response complete (θ)
    client_rtt        client leg: TCP handshake round trip at the capture point
    server_rtt        server leg: same

At the capture point SYN → ACK is one full round trip, so ``client_connect`` equals
``client_rtt`` (and ``server_connect`` ``server_rtt``) by definition: the connect
values are the phase of the timeline, the RTT values the path property.

θ is the clock offset (server-capture clock − client-capture clock, see
:class:`wsanalyze.correlate.ClockOffset`): a server-leg time ``t`` is ``t - θ`` on
the client capture's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .correlate import Correlation, Pair


@dataclass(frozen=True, slots=True)
class HandshakeTiming:
    """The handshake timing breakdown of one pair (ns, None when unknown)."""

    client_connect: int | None
    proxy_request: int | None
    server_connect: int | None
    server_connection_new: bool | None
    server_response: int | None
    response_forward: int | None
    client_rtt: int | None
    server_rtt: int | None

    def as_ms(self) -> dict[str, float | bool | None]:
        """JSON form: each duration in ms (3 decimals) as ``<name>_ms``, None when
        unknown; ``server_connection_new`` as is."""
        out: dict[str, float | bool | None] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "server_connection_new":
                out[name] = value
            else:
                out[f"{name}_ms"] = None if value is None else round(value / 1e6, 3)
        return out


def _span(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else end - start


def handshake_timing(pair: Pair, clock_offset_ns: int) -> HandshakeTiming:
    """The handshake timing of ``pair``; ``clock_offset_ns`` is θ (server-capture
    clock − client-capture clock; 0 for legs captured on one clock)."""
    c, s = pair.client, pair.server
    creq, cresp = c.exchange
    sreq, sresp = s.exchange
    ct, st = c.tcp, s.tcp
    theta = clock_offset_ns

    def on_client_clock(ts: int | None) -> int | None:
        return None if ts is None else ts - theta

    new: bool | None = None
    if sreq is not None and any(r.ts_ns < sreq.ts_ns for r in s.requests):
        new = False  # the connection carried earlier requests: reused
    elif st.syn_ts_ns is not None and creq is not None:
        new = on_client_clock(st.syn_ts_ns) >= creq.ts_ns  # type: ignore[operator]
    return HandshakeTiming(
        client_connect=_span(ct.syn_ts_ns, ct.ack_ts_ns),
        proxy_request=_span(
            creq.ts_ns if creq else None, on_client_clock(sreq.ts_ns if sreq else None)
        ),
        server_connect=_span(st.syn_ts_ns, st.ack_ts_ns),
        server_connection_new=new,
        server_response=_span(sreq.ts_ns if sreq else None, sresp.ts_ns if sresp else None),
        response_forward=_span(
            on_client_clock(sresp.ts_ns if sresp else None), cresp.ts_ns if cresp else None
        ),
        client_rtt=ct.rtt_ns,
        server_rtt=st.rtt_ns,
    )


HANDSHAKE_TIMINGS: dict[str, Any] = {
    "pair_id": "string",
    "client_connection_id": "string",
    "server_connection_id": "string",
    "client_connect_ms": "float64",  # client leg SYN → ACK
    "proxy_request_ms": "float64",  # client request → server request (θ), incl. server connect
    "server_connect_ms": "float64",  # server leg SYN → ACK
    "server_connection_new": "boolean",  # opened after the client request; NA if unknown
    "server_response_ms": "float64",  # server leg request → response
    "response_forward_ms": "float64",  # server response → client response (θ)
    "client_rtt_ms": "float64",  # TCP handshake round trip, client leg
    "server_rtt_ms": "float64",  # TCP handshake round trip, server leg
}
"""Columns and dtypes of :func:`handshake_timing_table` (``*_ms`` NaN when unknown)."""

_MS_FIELDS = (
    "client_connect",
    "proxy_request",
    "server_connect",
    "server_response",
    "response_forward",
    "client_rtt",
    "server_rtt",
)


def handshake_timing_table(correlation: Correlation | None) -> pd.DataFrame:
    """One row per pair of ``correlation`` (None: no rows); columns in
    :data:`HANDSHAKE_TIMINGS`, times in ms (float64, NaN when unknown), server-leg
    times moved onto the client capture's clock by the estimated θ."""
    import numpy as np
    import pandas as pd

    cols: dict[str, list[Any]] = {k: [] for k in HANDSHAKE_TIMINGS}
    offset = correlation.clock_offset if correlation else None
    theta = offset.estimate_ns if offset else 0
    for p in correlation.pairs if correlation else []:
        t = handshake_timing(p, theta)
        cols["pair_id"].append(p.id)
        cols["client_connection_id"].append(p.client.id)
        cols["server_connection_id"].append(p.server.id)
        cols["server_connection_new"].append(t.server_connection_new)
        for name in _MS_FIELDS:
            v = getattr(t, name)
            cols[f"{name}_ms"].append(np.nan if v is None else v / 1e6)
    return pd.DataFrame({k: pd.Series(v, dtype=HANDSHAKE_TIMINGS[k]) for k, v in cols.items()})
