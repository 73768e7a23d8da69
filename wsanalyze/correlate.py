"""Pair the client-side and server-side legs of every proxied connection.

A full proxy terminates TCP: the two legs of one WebSocket are two TCP connections
with different addresses, ports, sequence numbers and timing. Pairs are found by
scored evidence, strongest first:

==========================  =====  ==============================================
evidence                    score  why
==========================  =====  ==============================================
``f5_peer_id``               6.0   F5 BIG-IP trailers (``tcpdump -i 0.0:nnn``): one
                                   leg's flow id is the other's peer id
``sec_websocket_key``        4.0   RFC 6455 §4.1: 16 random bytes per handshake,
                                   passed through unchanged by most proxies
``message_digests``         ≤3.0   share of one leg's messages (BLAKE2b digests)
                                   found on the other, in order
``request_target``           1.0   same method and request-target (0.5: path only)
``end_to_end_headers``      ≤1.0   Jaccard similarity of the end-to-end header
                                   fields (RFC 9110 §7.6.1: hop-by-hop ones and
                                   those proxies rewrite are left out)
``timing``                  ≤1.0   the server-side request follows the client-side
                                   one within the clock-offset bounds
``proxy_protocol``           3.0   a PROXY protocol header on the server leg names
                                   the client-side client's exact ip:port
``x_forwarded_for``          0.5   X-Forwarded-For / X-Real-IP / Forwarded on the
                                   server leg names the client-side client
==========================  =====  ==============================================

Candidates are resolved one-to-one, best score first. A connection whose best
candidate is not clearly better (by :data:`AMBIGUITY_MARGIN`) than its second is
left unpaired with a ``pair_ambiguous`` finding rather than guessed (unless the
best shares the Sec-WebSocket-Key or the F5 ids: exact evidence).

Clock offset (θ = server-capture clock − client-capture clock): a request or
message travelling client → server gives ``Δ = t_server − t_client = θ + d_up``;
server → client gives ``Δ = θ − d_down``; delays are non-negative, so
``max(Δ_down) ≤ θ ≤ min(Δ_up)``. The estimate is the middle of the bounds (the
NTP assumption of equal minimum delays each way); every proxy delay is corrected
by it.
"""

from __future__ import annotations

import gc
import math
from bisect import bisect_left, bisect_right
from collections import defaultdict, deque
from dataclasses import dataclass, field
from itertools import pairwise
from urllib.parse import urlsplit

from . import catalogue
from .handshake import is_extended_connect
from .model import (
    Direction,
    Finding,
    Message,
    RequestHead,
    ResponseHead,
    fast_constructor,
    header_value,
)
from .pipeline import CaptureAnalysis, ConnectionAnalysis
from .tcp import f5_client_side

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

AMBIGUITY_MARGIN = 0.75
"""Score by which the best candidate must beat the second to be taken."""

MIN_PAIR_SCORE = 1.5
"""Below this score a candidate is not evidence enough to pair on."""

# Fields a proxy routinely adds, drops or rewrites: left out of the end-to-end
# comparison (RFC 9110 §7.6.1 hop-by-hop fields and the forwarding family).
_PROXY_FIELDS = frozenset(
    {
        b"connection",
        b"upgrade",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
        b"via",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-extensions",
    }
)


@dataclass(frozen=True, slots=True)
class HeaderChange:
    """One header field the proxy changed between the legs.

    ``message`` is ``"request"`` or ``"response"``; ``change`` is ``"added"``,
    ``"removed"``, ``"modified"`` in the direction of travel, or ``"mapped"`` (the
    same meaning in the other protocol's form, HTTP/1.1 vs HTTP/2: see
    :func:`head_changes`) (a request field
    ``added`` appears only on the server leg; a response field ``added`` only on the
    client leg). ``name`` is as sent (client-leg spelling when both have it); values
    are latin-1 text, repeated fields joined with ``", "``, None when absent.
    """

    message: str
    change: str
    name: str
    client_value: str | None
    server_value: str | None


@dataclass(frozen=True, slots=True)
class MessageMatch:
    """A message on the client leg matched to its copy on the server leg.

    Indices point into each connection's ``messages``; timestamps are the last
    byte of each copy, int ns on each capture's own clock.
    """

    direction: Direction
    client_index: int
    server_index: int
    client_ts_ns: int
    server_ts_ns: int
    opcode: int
    payload_len: int

    def delay_ns(self, clock_offset_ns: int | ClockOffset) -> int:
        """Proxy delay in ns, corrected by θ (server clock − client clock): an int θ,
        or a :class:`ClockOffset`, whose θ is taken at this message's time (drift)."""
        if isinstance(clock_offset_ns, ClockOffset):
            clock_offset_ns = clock_offset_ns.at(self.client_ts_ns)
        if self.direction == C2S:
            return self.server_ts_ns - clock_offset_ns - self.client_ts_ns
        return self.client_ts_ns - (self.server_ts_ns - clock_offset_ns)


@dataclass(slots=True)
class Pair:
    """A client-side connection and its server-side twin.

    ``confidence`` in 0..1 grows with ``score`` (the sum of the evidence scores);
    ``evidence`` names what matched; ``matches`` are the messages seen on both legs.
    """

    id: str
    client: ConnectionAnalysis
    server: ConnectionAnalysis
    score: float
    confidence: float
    evidence: tuple[str, ...]
    header_changes: list[HeaderChange] = field(default_factory=list)
    matches: list[MessageMatch] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """θ = server-capture clock − client-capture clock, in ns.

    ``low``/``high`` are the bounds ``max(Δ_down)`` and ``min(Δ_up)`` (None when no
    sample in that direction); ``estimate`` their middle, or the imposed value;
    ``consistent`` is False when ``low > high``.

    Over a long capture (samples spread over more than :data:`DRIFT_MIN_SPAN_NS`)
    θ is a line, ``θ(t) = estimate + drift_ppm·10⁻⁶·(t − ref_ts_ns)``: then
    ``drift_ppm`` is the fitted rate, ``ref_ts_ns`` the (client-clock) time at which
    ``estimate``/``low``/``high`` hold (the middle of the samples), the bounds being
    those of the samples with the drift removed; ``span_ns`` is the time the samples
    cover. Use :meth:`at` for θ at a given time.
    """

    estimate_ns: int
    low_ns: int | None
    high_ns: int | None
    samples_up: int
    samples_down: int
    imposed: bool = False
    drift_ppm: float | None = None
    ref_ts_ns: int | None = None
    span_ns: int = 0

    @property
    def consistent(self) -> bool:
        return self.low_ns is None or self.high_ns is None or self.low_ns <= self.high_ns

    def at(self, ts_ns: int) -> int:
        """θ in ns at time ``ts_ns`` (either capture's clock: the difference is
        negligible at ppm rates); the constant estimate when there is no drift."""
        if not self.drift_ppm or self.ref_ts_ns is None:
            return self.estimate_ns
        return self.estimate_ns + round(self.drift_ppm * 1e-6 * (ts_ns - self.ref_ts_ns))

    @property
    def drift_significant(self) -> bool:
        """The fitted drift is above :data:`DRIFT_MIN_PPM` and moves θ by more than
        :data:`DRIFT_MIN_NS` over the capture."""
        return (
            self.drift_ppm is not None
            and abs(self.drift_ppm) > DRIFT_MIN_PPM
            and abs(self.drift_ppm) * 1e-6 * self.span_ns > DRIFT_MIN_NS
        )


DRIFT_MIN_SPAN_NS = 60_000_000_000
"""Samples must cover more than this (60 s) for θ to be fitted as a line."""
DRIFT_MIN_PPM = 20.0
DRIFT_MIN_NS = 1_000_000
"""A drift is reported (``proxy_clock_drift``) above 20 ppm and 1 ms over the capture."""
_DRIFT_WINDOWS = 16


@dataclass(slots=True)
class Correlation:
    """The result of pairing two captures: pairs, clock offset and findings."""

    pairs: list[Pair]
    clock_offset: ClockOffset | None
    findings: list[Finding]
    unpaired_client: list[ConnectionAnalysis]
    unpaired_server: list[ConnectionAnalysis]
    ambiguous_client: list[ConnectionAnalysis] = field(default_factory=list)
    """Client-side connections left unpaired because several candidates scored alike."""


# --- features ----------------------------------------------------------------


@dataclass(slots=True)
class _Features:
    """What pairing compares for one connection. ``request`` is None for a WebSocket
    whose handshake was not captured: then ``ts_ns``/``packets`` are those of its
    first message and only digests and timing can pair it."""

    conn: ConnectionAnalysis
    request: RequestHead | None
    response: ResponseHead | None
    ts_ns: int  # the request's time, else the first message's
    packets: tuple[int, ...]
    key: bytes | None
    method: bytes | None
    target: bytes | None
    path: bytes | None
    e2e: frozenset[tuple[bytes, bytes]]
    forwarded: bytes  # XFF / X-Real-IP / Forwarded values, lower-cased
    client_ip: str
    digests: frozenset[tuple[int, int, bytes]]  # (direction, opcode, digest)
    f5: tuple[int | None, int | None] = (None, None)  # F5 trailer (flow id, peer id)


def _features(conn: ConnectionAnalysis) -> _Features | None:
    req, resp = conn.exchange
    digests = frozenset(
        (int(m.direction), m.opcode, m.digest) for m in conn.messages[:256] if m.opcode < 8
    )
    client_ip = str(conn.tcp.client).rsplit(":", 1)[0].strip("[]")
    if req is None:
        if not conn.messages:
            return None
        first = conn.messages[0]
        return _Features(
            conn=conn,
            request=None,
            response=None,
            ts_ns=first.ts_ns,
            packets=(first.first_packet,),
            key=None,
            method=None,
            target=None,
            path=None,
            e2e=frozenset(),
            forwarded=b"",
            client_ip=client_ip,
            digests=digests,
            f5=(conn.tcp.f5_flow_id, conn.tcp.f5_peer_id),
        )
    target = req.target
    try:
        path = urlsplit(target.decode("latin-1")).path.encode("latin-1")
    except ValueError:
        path = target
    method = req.method
    if req.version == b"HTTP/2" and is_extended_connect(req):
        method = b"GET"  # RFC 8441 §5: the extended CONNECT stands for the Upgrade GET
    e2e = frozenset(
        (n.lower(), v)
        for n, v in req.headers
        if n.lower() not in _PROXY_FIELDS and not n.startswith(b":")
    )
    fwd = b" ".join(
        v.lower()
        for n, v in req.headers
        if n.lower() in (b"x-forwarded-for", b"x-real-ip", b"forwarded")
    )
    return _Features(
        conn=conn,
        request=req,
        response=resp,
        ts_ns=req.ts_ns,
        packets=req.packets,
        key=header_value(req.headers, b"sec-websocket-key"),
        method=method,
        target=target,
        path=path,
        e2e=e2e,
        forwarded=fwd,
        client_ip=client_ip,
        digests=digests,
        f5=(conn.tcp.f5_flow_id, conn.tcp.f5_peer_id),
    )


def _score(c: _Features, s: _Features, timing: _Timing | None) -> tuple[float, list[str]]:
    score = 0.0
    ev: list[str] = []
    if c.f5[0] is not None and c.f5[0] == s.f5[1] or c.f5[1] is not None and c.f5[1] == s.f5[0]:
        score += 6.0  # the BIG-IP itself names the connection on the other side
        ev.append("f5_peer_id")
    if c.key is not None and c.key == s.key:
        score += 4.0
        ev.append("sec_websocket_key")
    if c.digests and s.digests:
        common = len(c.digests & s.digests)
        if common:
            frac = common / max(len(c.digests), len(s.digests))
            score += 3.0 * frac
            ev.append(f"message_digests({common})")
    if c.method is None or s.method is None:
        pass  # a handshake not captured: no request to compare
    elif c.method == s.method and c.target == s.target:
        score += 1.0
        ev.append("request_target")
    elif c.method == s.method and c.path == s.path:
        score += 0.5
        ev.append("request_path")
    if c.e2e or s.e2e:
        j = len(c.e2e & s.e2e) / len(c.e2e | s.e2e)
        if j > 0:
            score += j
            ev.append(f"end_to_end_headers({j:.2f})")
    if s.conn.proxied_client is not None and s.conn.proxied_client == str(c.conn.tcp.client):
        score += 3.0  # a PROXY protocol header names this exact client endpoint
        ev.append("proxy_protocol")
    if c.forwarded and c.client_ip.encode() in s.forwarded:
        score += 0.5
        ev.append("x_forwarded_for")
    if timing is not None:
        t = timing.score(s.ts_ns - c.ts_ns - timing.shift(c.ts_ns))
        if t > 0.01:
            score += t
            ev.append(f"timing({t:.2f})")
    return score, ev


@dataclass(frozen=True, slots=True)
class _Timing:
    """Where the server-side request of a true pair falls relative to the client-side
    one: ``Δ = t_server − t_client = θ + d`` with d the proxy's forwarding delay
    (including a new server-side TCP connect). ``low``/``high`` bound the plausible
    Δ in ns; ``slack`` is the decay scale outside them. With a clock drift, Δ is
    first corrected by :meth:`shift` (θ(t) − θ(ref))."""

    low: int
    high: int
    slack: int
    rate_ppm: float = 0.0
    ref_ts_ns: int = 0

    def shift(self, ts_ns: int) -> int:
        if not self.rate_ppm:
            return 0
        return round(self.rate_ppm * 1e-6 * (ts_ns - self.ref_ts_ns))

    def score(self, delta: int) -> float:
        if self.low <= delta <= self.high:
            return 1.0
        dist = (self.low - delta) if delta < self.low else (delta - self.high)
        return math.exp(-dist / self.slack)

    def window(self) -> tuple[int, int]:
        """Δ range worth scoring at all (beyond it the score is below 0.01)."""
        return self.low - 5 * self.slack, self.high + 5 * self.slack


_MIN_SLACK = 5_000_000  # 5 ms


def _timing_from_anchors(anchors: list[tuple[_Features, _Features]], theta: ClockOffset) -> _Timing:
    """Plausible Δ range from the clock offset and the forwarding delays of pairs
    already known (their request Δ minus θ)."""
    est = theta.estimate_ns
    lo = theta.low_ns if theta.low_ns is not None else est
    hi = theta.high_ns if theta.high_ns is not None else est
    lo, hi = min(lo, hi), max(lo, hi)
    fwd = [s.ts_ns - c.ts_ns - theta.at(c.ts_ns) for c, s in anchors]
    d_max = max([0, *fwd])
    slack = max(_MIN_SLACK, 2 * d_max)
    rate = theta.drift_ppm or 0.0
    ref = theta.ref_ts_ns if theta.ref_ts_ns is not None else 0
    return _Timing(lo - _MIN_SLACK // 5, hi + d_max + slack, slack, rate, ref)


def _timing_from_mode(cf: list[_Features], sf: list[_Features]) -> _Timing | None:
    """Without anchors: the most common request Δ (1 ms bins) over candidates with
    the same method and path, if it is common enough to mean a clock offset."""
    by_path: dict[tuple[bytes, bytes], list[int]] = defaultdict(list)
    for s in sf:
        if s.method is not None:
            by_path[(s.method, s.path)].append(s.ts_ns)
    bins: dict[int, list[int]] = defaultdict(list)
    budget = 200_000
    for c in cf:
        for t in by_path.get((c.method, c.path), ())[:256]:
            d = t - c.ts_ns
            bins[d // 1_000_000].append(d)
            budget -= 1
        if budget <= 0:
            break
    if not bins:
        return None
    best = max(bins, key=lambda k: len(bins[k]) + len(bins.get(k + 1, ())))
    votes = sorted(bins[best] + bins.get(best + 1, []))
    if len(votes) < max(2, min(len(cf), len(sf)) // 2) and not (len(cf) == len(sf) == 1):
        return None
    return _Timing(votes[0] - _MIN_SLACK // 5, votes[-1] + _MIN_SLACK, _MIN_SLACK)


# --- message matching and clock offset -------------------------------------------


_new_match = fast_constructor(MessageMatch)


def match_messages(client: ConnectionAnalysis, server: ConnectionAnalysis) -> list[MessageMatch]:
    """Match each message on one leg to its copy on the other, by (opcode, digest)
    in stream order per direction (a proxy does not reorder one direction).

    Returns the matches sorted by client-leg time.
    """
    out: list[MessageMatch] = []
    new = _new_match
    for d in (C2S, S2C):
        src = [(i, m) for i, m in enumerate(client.messages) if m.direction == d]
        dst = [(j, m) for j, m in enumerate(server.messages) if m.direction == d]
        if [(m.opcode, m.digest) for _, m in src] == [(m.opcode, m.digest) for _, m in dst]:
            # Forwarded one for one (the usual case): the greedy match below pairs
            # the k-th with the k-th; no index needed.
            out.extend(
                new(d, i, j, m.ts_ns, sm.ts_ns, m.opcode, m.payload_len)
                for (i, m), (j, sm) in zip(src, dst, strict=True)
            )
            continue
        index: dict[tuple[int, bytes], deque[tuple[int, int, Message]]] = defaultdict(deque)
        for pos, (j, m) in enumerate(dst):
            index[(m.opcode, m.digest)].append((pos, j, m))
        last = -1
        for i, m in src:
            q = index.get((m.opcode, m.digest))
            while q and q[0][0] <= last:
                q.popleft()
            if not q:
                continue
            pos, j, sm = q.popleft()
            last = pos
            out.append(new(d, i, j, m.ts_ns, sm.ts_ns, m.opcode, m.payload_len))
    out.sort(key=lambda x: x.client_ts_ns)
    return out


def _samples(pair: Pair) -> tuple[list[int], list[int]]:
    """Δ = t_server − t_client samples: (up, down)."""
    up: list[int] = []
    down: list[int] = []
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    if creq is not None and sreq is not None:
        up.append(sreq.ts_ns - creq.ts_ns)
        if cresp is not None and sresp is not None:
            down.append(sresp.ts_ns - cresp.ts_ns)
    for m in pair.matches:
        (up if m.direction == C2S else down).append(m.server_ts_ns - m.client_ts_ns)
    return up, down


def _timed_samples(pair: Pair) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(client-clock time, Δ) samples: (up, down)."""
    up: list[tuple[int, int]] = []
    down: list[tuple[int, int]] = []
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    if creq is not None and sreq is not None:
        up.append((creq.ts_ns, sreq.ts_ns - creq.ts_ns))
        if cresp is not None and sresp is not None:
            down.append((cresp.ts_ns, sresp.ts_ns - cresp.ts_ns))
    for m in pair.matches:
        (up if m.direction == C2S else down).append(
            (m.client_ts_ns, m.server_ts_ns - m.client_ts_ns)
        )
    return up, down


def _fit_drift(
    up: list[tuple[int, int]], down: list[tuple[int, int]], t0: int, t1: int
) -> float | None:
    """Rate (ppm) of θ over [t0, t1]: per time window, the middle of its bounds
    (max Δ_down, min Δ_up) at the window's middle; a least-squares line through
    those points. None with fewer than three windows having both bounds."""
    width = (t1 - t0) / _DRIFT_WINDOWS
    lo: dict[int, int] = {}
    hi: dict[int, int] = {}
    for t, d in up:
        w = min(int((t - t0) / width), _DRIFT_WINDOWS - 1)
        hi[w] = min(hi.get(w, d), d)
    for t, d in down:
        w = min(int((t - t0) / width), _DRIFT_WINDOWS - 1)
        lo[w] = max(lo.get(w, d), d)
    pts = [((w + 0.5) * width, (lo[w] + hi[w]) / 2) for w in sorted(lo.keys() & hi.keys())]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pts) / sxx * 1e6


def estimate_clock_offset(pairs: list[Pair], imposed_ns: int | None = None) -> ClockOffset | None:
    """Bounds and estimate of θ from the handshakes and matched messages of ``pairs``.

    When the samples cover more than :data:`DRIFT_MIN_SPAN_NS`, θ is fitted as a
    line (see :class:`ClockOffset`): the bounds are then those of the samples with
    the fitted drift removed, at the middle of the samples. An imposed θ is constant.
    Returns None when there is no sample and nothing imposed.
    """
    up: list[tuple[int, int]] = []
    down: list[tuple[int, int]] = []
    for p in pairs:
        u, d = _timed_samples(p)
        up.extend(u)
        down.extend(d)
    times = [t for t, _ in up] + [t for t, _ in down]
    span = max(times) - min(times) if times else 0
    drift = ref = None
    if imposed_ns is None and span > DRIFT_MIN_SPAN_NS:
        t0 = min(times)
        drift = _fit_drift(up, down, t0, t0 + span)
        if drift is not None:
            ref = t0 + span // 2
            rate = drift * 1e-6
            up = [(t, d - round(rate * (t - ref))) for t, d in up]
            down = [(t, d - round(rate * (t - ref))) for t, d in down]
    high = min(d for _, d in up) if up else None
    low = max(d for _, d in down) if down else None
    if imposed_ns is not None:
        return ClockOffset(imposed_ns, low, high, len(up), len(down), imposed=True, span_ns=span)
    if low is None and high is None:
        return None
    if low is None:
        est = high
    elif high is None:
        est = low
    else:
        est = (low + high) // 2
    assert est is not None
    return ClockOffset(
        est, low, high, len(up), len(down), drift_ppm=drift, ref_ts_ns=ref, span_ns=span
    )


# --- header changes ----------------------------------------------------------------


def header_changes(client_headers, server_headers, message: str) -> list[HeaderChange]:
    """Fields added, removed or modified between the legs, in wire order of first
    appearance. Names compare case-insensitively (RFC 9110 §5.1); repeated fields
    compare as their joined list; a change of name case alone is not a change."""

    def group(headers) -> dict[bytes, tuple[bytes, list[bytes]]]:
        out: dict[bytes, tuple[bytes, list[bytes]]] = {}
        for n, v in headers:
            key = n.lower()
            if key in out:
                out[key][1].append(v)
            else:
                out[key] = (n, [v])
        return out

    c, s = group(client_headers), group(server_headers)
    before, after = (c, s) if message == "request" else (s, c)
    changes: list[HeaderChange] = []
    for key in list(dict.fromkeys([*before, *after])):
        cv = _join(c[key][1]) if key in c else None
        sv = _join(s[key][1]) if key in s else None
        name = (c.get(key) or s[key])[0].decode("latin-1")
        if key not in after:
            change = "removed"
        elif key not in before:
            change = "added"
        elif cv != sv:
            change = "modified"
        else:
            continue
        changes.append(HeaderChange(message, change, name, cv, sv))
    return changes


def _join(values: list[bytes]) -> str:
    return ", ".join(v.decode("latin-1") for v in values)


# --- pairing -------------------------------------------------------------------------


_RARE_DIGEST = 8
"""A digest on more server-side connections than this says little: not indexed."""

_WINDOW_ONLY_MAX = 3.5
"""The most a candidate found only by the time window (no shared key, rare digest or
PROXY protocol endpoint) can score besides its common digests: request target 1,
end-to-end headers 1, timing 1, X-Forwarded-For 0.5."""


@dataclass(slots=True)
class _Index:
    """Server-side indexes for candidate search, and per connection the number of
    its digests too common to index (they bound what a window-only rival scores)."""

    by_key: dict[bytes, list[int]]
    by_digest: dict[tuple[int, int, bytes], list[int]]
    by_proxied: dict[str, list[int]]
    by_path: dict[tuple[bytes, bytes], list[tuple[int, int]]]
    common_c: list[int]
    common_s: list[int]
    by_f5: dict[int, list[int]] = field(default_factory=dict)  # F5 flow and peer ids


def _index(cf: list[_Features], sf: list[_Features]) -> _Index:
    by_key: dict[bytes, list[int]] = defaultdict(list)
    by_digest: dict[tuple[int, int, bytes], list[int]] = defaultdict(list)
    by_proxied: dict[str, list[int]] = defaultdict(list)
    by_f5: dict[int, list[int]] = defaultdict(list)
    by_path: dict[tuple[bytes, bytes], list[tuple[int, int]]] = defaultdict(list)
    for k, s in enumerate(sf):
        if s.key is not None:
            by_key[s.key].append(k)
        for dg in s.digests:
            by_digest[dg].append(k)
        if s.conn.proxied_client is not None:
            by_proxied[s.conn.proxied_client].append(k)
        for f5_id in {i for i in s.f5 if i is not None}:
            by_f5[f5_id].append(k)
        if s.method is not None:
            by_path[(s.method, s.path)].append((s.ts_ns, k))
    for bucket in by_path.values():
        bucket.sort()

    def common(f: _Features) -> int:
        return sum(1 for dg in f.digests if len(by_digest.get(dg, ())) > _RARE_DIGEST)

    return _Index(
        dict(by_key),
        dict(by_digest),
        dict(by_proxied),
        dict(by_path),
        [common(c) for c in cf],
        [common(s) for s in sf],
        dict(by_f5),
    )


def _candidates(
    cf: list[_Features], sf: list[_Features], timing: _Timing | None, ix: _Index | None = None
) -> dict[int, set[int]]:
    """Indexed server-side candidates per client-side connection: the same
    Sec-WebSocket-Key; an F5 flow id or peer id in common; a rare message digest in
    common; a PROXY protocol header naming its endpoint; without timing, the same
    method and path when few server connections have them (scored whole). The time window over same-path requests
    is added by :func:`_window_edges` only where these do not settle the pair, so the
    number of scored edges stays near-linear."""
    ix = ix or _index(cf, sf)
    out: dict[int, set[int]] = {}
    for ci, c in enumerate(cf):
        cands: set[int] = set()
        if c.key is not None:
            cands.update(ix.by_key.get(c.key, ()))
        for dg in c.digests:
            hits = ix.by_digest.get(dg, ())
            if len(hits) <= _RARE_DIGEST:
                cands.update(hits)
        cands.update(ix.by_proxied.get(str(c.conn.tcp.client), ()))
        for f5_id in c.f5:  # a server leg whose peer id is our flow id, or the converse
            if f5_id is not None:
                cands.update(ix.by_f5.get(f5_id, ()))
        if timing is None and c.method is not None:
            bucket = ix.by_path.get((c.method, c.path), [])
            if len(bucket) <= 64:
                cands.update(k for _, k in bucket)
        out[ci] = cands
    return out


def _window_bound(f: _Features, common: int) -> float:
    """Upper bound of the score of a window-only candidate of ``f``."""
    return _WINDOW_ONLY_MAX + (3.0 * common / len(f.digests) if f.digests else 0.0)


def _assign(
    cf: list[_Features], sf: list[_Features], timing: _Timing | None
) -> tuple[list[tuple[_Features, _Features, float, list[str]]], list[_Features]]:
    """Score candidates and resolve them one-to-one, best score first; returns the
    pairs and the client-side connections left ambiguous (their best candidate not
    :data:`AMBIGUITY_MARGIN` better than the runner-up, for it or for its server).

    With timing, the time window over same-path requests is searched only from the
    connections (either side) whose best indexed candidate does not beat every
    possible window-only rival by the margin: such a rival could neither be taken nor
    change the outcome, so leaving it out keeps the result and the cost near-linear."""
    ix = _index(cf, sf)
    cands = _candidates(cf, sf, timing, ix)
    edges: list[tuple[float, int, int, list[str]]] = []
    best_c: dict[int, list[float]] = defaultdict(list)
    best_s: dict[int, list[float]] = defaultdict(list)

    def add(ci: int, si: int) -> None:
        sc, ev = _score(cf[ci], sf[si], timing)
        if sc >= MIN_PAIR_SCORE:
            edges.append((sc, ci, si, ev))
            best_c[ci].append(sc)
            best_s[si].append(sc)

    for ci, cs in cands.items():
        for si in cs:
            add(ci, si)
    if timing is not None:
        lo, hi = timing.window()
        open_c = [
            ci
            for ci, c in enumerate(cf)
            if c.method is not None
            and max(best_c.get(ci, ()), default=0.0)
            < _window_bound(c, ix.common_c[ci]) + AMBIGUITY_MARGIN
        ]
        open_s = [
            si
            for si, s in enumerate(sf)
            if s.method is not None
            and max(best_s.get(si, ()), default=0.0)
            < _window_bound(s, ix.common_s[si]) + AMBIGUITY_MARGIN
        ]
        for ci in open_c:
            c = cf[ci]
            bucket = ix.by_path.get((c.method, c.path), [])  # type: ignore[arg-type]
            base = c.ts_ns + timing.shift(c.ts_ns)
            i = bisect_left(bucket, (base + lo, -1))
            j = bisect_right(bucket, (base + hi, len(sf)))
            for _, si in bucket[i:j]:
                if si not in cands[ci]:
                    cands[ci].add(si)
                    add(ci, si)
        if open_s:
            by_path_c: dict[tuple[bytes, bytes], list[tuple[int, int]]] = defaultdict(list)
            for ci, c in enumerate(cf):
                if c.method is not None:
                    by_path_c[(c.method, c.path)].append((c.ts_ns, ci))
            for bucket in by_path_c.values():
                bucket.sort()
            est = -timing.low  # ≈ −θ: a server time back to the client clock
            margin = 1_000_000 + round(abs(timing.rate_ppm) * 1e-6 * (hi - lo))  # shift error
            for si in open_s:
                s = sf[si]
                bucket = by_path_c.get((s.method, s.path), [])  # type: ignore[arg-type]
                sh = timing.shift(s.ts_ns + est)
                i = bisect_left(bucket, (s.ts_ns - sh - hi - margin, -1))
                j = bisect_right(bucket, (s.ts_ns - sh - lo + margin, len(cf)))
                for t, ci in bucket[i:j]:
                    if si in cands[ci]:
                        continue
                    base = t + timing.shift(t)
                    if base + lo <= s.ts_ns <= base + hi:  # exactly the forward window
                        cands[ci].add(si)
                        add(ci, si)
    edges.sort(key=lambda e: (-e[0], e[1], e[2]))
    top_c = {ci: _top2(v) for ci, v in best_c.items()}
    top_s = {si: _top2(v) for si, v in best_s.items()}
    used_c: set[int] = set()
    used_s: set[int] = set()
    ambiguous: set[int] = set()
    pairs = []
    for sc, ci, si, ev in edges:
        if ci in used_c or si in used_s or ci in ambiguous:
            continue
        # Is this edge clearly the best for its client and for its server?
        second = max(top_c[ci], top_s[si])
        exact = "sec_websocket_key" in ev or "f5_peer_id" in ev
        if second > 0 and sc - second < AMBIGUITY_MARGIN and not exact:
            ambiguous.add(ci)
            continue
        used_c.add(ci)
        used_s.add(si)
        pairs.append((cf[ci], sf[si], sc, ev))
    return pairs, [cf[i] for i in sorted(ambiguous - used_c)]


def _top2(scores: list[float]) -> float:
    """The second-highest score (0 when there is one)."""
    if len(scores) < 2:
        return 0.0
    a = b = -math.inf
    for x in scores:
        if x > a:
            a, b = x, a
        elif x > b:
            b = x
    return b


_FORWARDING = {"x-forwarded-for", "x-real-ip", "forwarded", "via", "x-forwarded-proto"}


def _captures_swapped(pairs: list[Pair]) -> bool:
    """The two captures were given in the wrong order: no constant offset explains
    the timings, but one would with every Δ negated (max Δ_up ≤ min Δ_down), and the
    forwarding headers a proxy adds look removed rather than added."""
    up: list[int] = []
    down: list[int] = []
    for p in pairs:
        u, d = _samples(p)
        up.extend(u)
        down.extend(d)
    if not up or not down or max(up) > min(down):
        return False
    removed = added = 0
    for p in pairs:
        for h in p.header_changes:
            if h.message == "request" and h.name.lower() in _FORWARDING:
                removed += h.change == "removed"
                added += h.change == "added"
    return removed >= added


def _make_pair(pair_id: str, c: _Features, s: _Features, score: float, ev: list[str]) -> Pair:
    """A :class:`Pair` with its message matches and header changes."""
    p = Pair(pair_id, c.conn, s.conn, round(score, 3), _confidence(score), tuple(ev))
    p.matches = match_messages(c.conn, s.conn)
    if c.request is not None and s.request is not None:
        p.header_changes = head_changes(c.request, s.request, "request")
    if c.response is not None and s.response is not None:
        p.header_changes += head_changes(c.response, s.response, "response")
    return p


def head_changes(
    client: RequestHead | ResponseHead, server: RequestHead | ResponseHead, message: str
) -> list[HeaderChange]:
    """:func:`header_changes` between the two legs' heads, across a change of protocol:
    when one leg is HTTP/2 (RFC 8441) and the other HTTP/1.1, ``Host`` compares with
    ``:authority`` (RFC 9113 §8.3.1), the request line and status with the
    pseudo-header fields, and ``Upgrade``/``Connection`` (which HTTP/2 forbids, §8.2.2)
    with ``:protocol`` (request) or the 2xx (response); each such translation is one
    ``"mapped"`` change (or ``"modified"`` when the values differ), and only what was
    really added or lost is reported as such. Names compare lower-cased."""
    h2c, h2s = client.version == b"HTTP/2", server.version == b"HTTP/2"
    if h2c == h2s:
        return header_changes(client.headers, server.headers, message)
    h1, h2 = (server, client) if h2c else (client, server)
    mapped: list[tuple[str, str | None, str | None]] = []  # (name, h1 value, h2 value)
    drop1: set[bytes] = set()
    rename: dict[bytes, bytes] = {}
    if message == "request":
        assert isinstance(h1, RequestHead) and isinstance(h2, RequestHead)
        mapped.append(
            (
                "request line -> :method :path",
                f"{h1.method.decode('latin-1')} {h1.target.decode('latin-1')}",
                f"{_pseudo(h2, b':method')} {_pseudo(h2, b':path')}",
            )
        )
        if header_value(h2.headers, b":protocol") is not None:
            up = [
                f"{n.decode('latin-1')}: {v.decode('latin-1')}"
                for n, v in h1.headers
                if n.lower() in (b"upgrade", b"connection")
            ]
            mapped.append(
                (
                    "Upgrade, Connection -> :protocol",
                    "; ".join(up) or None,
                    _pseudo(h2, b":protocol"),
                )
            )
            drop1 = {b"upgrade", b"connection"}
        rename = {b":authority": b"host"}
    else:
        assert isinstance(h1, ResponseHead) and isinstance(h2, ResponseHead)
        mapped.append(
            (
                "status",
                f"{h1.status} {h1.reason.decode('latin-1')}".strip(),
                _pseudo(h2, b":status"),
            )
        )
        if 200 <= h2.status < 300 and h1.status == 101:
            drop1 = {b"upgrade", b"connection"}
    h2_headers = [
        (rename.get(n, n), v) for n, v in h2.headers if not n.startswith(b":") or n in rename
    ]
    h1_headers = [(n, v) for n, v in h1.headers if n.lower() not in drop1]
    ch, sh = (h2_headers, h1_headers) if h2c else (h1_headers, h2_headers)
    out = [
        HeaderChange(message, "mapped", name, *((v1, v2) if not h2c else (v2, v1)))
        for name, v1, v2 in mapped
    ]
    for hc in header_changes(ch, sh, message):
        if hc.name.lower() == "host" or hc.name == ":authority":
            hc = HeaderChange(
                hc.message, hc.change, "Host -> :authority", hc.client_value, hc.server_value
            )
        out.append(hc)
    return out


def _pseudo(head: RequestHead | ResponseHead, name: bytes) -> str:
    v = header_value(head.headers, name)
    return v.decode("latin-1") if v is not None else "absent"


def _confidence(score: float) -> float:
    return round(1.0 - math.exp(-score / 2.0), 3)


def correlate(
    client: CaptureAnalysis,
    server: CaptureAnalysis,
    *,
    clock_offset_ns: int | None = None,
) -> Correlation:
    """Pair the connections of a client-side and a server-side capture.

    Pass 1 pairs on evidence that needs no clock (Sec-WebSocket-Key, message
    digests, request, headers); its pairs bound the clock offset θ and the proxy's
    forwarding delay, which pass 2 adds as timing evidence. Without such anchors, θ
    is taken from the most common request-time difference. ``clock_offset_ns``
    imposes θ (server clock − client clock). Returns a :class:`Correlation`; never
    raises on traffic.
    """
    # Pairing allocates many small objects next to two large analyses: the cyclic
    # collector's full passes over those made the cost grow quadratically.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _correlate(client, server, clock_offset_ns)
    finally:
        if paused:
            gc.enable()


def _correlate(
    client: CaptureAnalysis, server: CaptureAnalysis, clock_offset_ns: int | None
) -> Correlation:
    cf = [f for f in map(_features, client.connections) if f is not None]
    sf = [f for f in map(_features, server.connections) if f is not None]

    first, _ = _assign(cf, sf, None)
    strong = [(c, s) for c, s, sc, _ev in first if sc >= 4.0]
    anchors = []
    for c, s in strong:
        p = Pair("", c.conn, s.conn, 0.0, 0.0, ())
        p.matches = match_messages(c.conn, s.conn)
        anchors.append(p)
    theta = estimate_clock_offset(anchors, clock_offset_ns)
    if theta is not None and strong:
        timing: _Timing | None = _timing_from_anchors(strong, theta)
    elif clock_offset_ns is not None:
        timing = _Timing(
            clock_offset_ns - _MIN_SLACK // 5, clock_offset_ns + 4 * _MIN_SLACK, 4 * _MIN_SLACK
        )
    else:
        timing = _timing_from_mode(cf, sf)
    assigned, ambiguous = _assign(cf, sf, timing)

    pairs: list[Pair] = []
    for n, (c, s, sc, ev) in enumerate(sorted(assigned, key=lambda x: x[0].ts_ns), start=1):
        pairs.append(_make_pair(f"pair-{n}", c, s, sc, ev))
    theta = estimate_clock_offset(pairs, clock_offset_ns)

    findings: list[Finding] = []
    for c in ambiguous:
        findings.append(
            catalogue.finding(
                "pair_ambiguous",
                f"expected=one server-side twin for {c.conn.id}, found=several scoring within "
                f"{AMBIGUITY_MARGIN}",
                packets=c.packets,
                connections=(c.conn.id,),
                capture=c.conn.role,
                ts_ns=c.ts_ns,
            )
        )
    swapped = theta is not None and not theta.consistent and _captures_swapped(pairs)
    if swapped:
        findings.append(
            catalogue.finding(
                "captures_swapped",
                "expected=the client-side capture first, found=every message arrives on the "
                "'server' capture before it leaves the 'client' capture (and forwarding "
                "headers vanish toward the server): give the two captures the other way round",
            )
        )
    elif theta is not None and not theta.consistent and not theta.imposed:
        findings.append(
            catalogue.finding(
                "proxy_clock_bounds_empty",
                f"expected=max(Δ_down) ≤ min(Δ_up), found={(theta.low_ns or 0) / 1e6:.3f} ms > "
                f"{(theta.high_ns or 0) / 1e6:.3f} ms",
            )
        )
    if theta is not None and theta.drift_significant and theta.drift_ppm is not None:
        moved = theta.drift_ppm * 1e-6 * theta.span_ns
        findings.append(
            catalogue.finding(
                "proxy_clock_drift",
                f"expected=a constant clock offset (|drift| ≤ {DRIFT_MIN_PPM:g} ppm), "
                f"found={theta.drift_ppm:+.1f} ppm ({moved / 1e6:+.3f} ms over "
                f"{theta.span_ns / 1e9:.1f} s); delays corrected by θ(t)",
            )
        )
    paired_c = {id(p.client) for p in pairs}
    paired_s = {id(p.server) for p in pairs}
    return Correlation(
        pairs=pairs,
        clock_offset=theta,
        findings=findings,
        unpaired_client=[c for c in client.connections if id(c) not in paired_c and not c.streams],
        # An HTTP/2 connection's WebSocket streams are paired on their own.
        unpaired_server=[s for s in server.connections if id(s) not in paired_s and not s.streams],
        ambiguous_client=[c.conn for c in ambiguous],
    )


def _f5_twins(
    conns: list[ConnectionAnalysis],
) -> list[tuple[ConnectionAnalysis, ConnectionAnalysis]]:
    """Connections of ONE capture whose F5 trailer ids cross-match (one's peer id is
    the other's flow id, and the other's peer id is this one's flow id or unknown),
    as unordered twins, each connection in at most one. O(n): a dict by flow id.
    When a flow id recurs (TMM reuses them over a long capture), the twin is the
    candidate whose lifetime overlaps, then the nearest in time."""
    by_flow: dict[int, list[ConnectionAnalysis]] = defaultdict(list)
    for conn in conns:
        if conn.tcp.f5_flow_id is not None and not conn.streams:
            by_flow[conn.tcp.f5_flow_id].append(conn)
    if not by_flow:
        return []
    taken: set[int] = set()
    twins = []
    for group in by_flow.values():
        for a in group:
            flow, peer = a.tcp.f5_flow_id, a.tcp.f5_peer_id
            if peer is None or id(a) in taken:
                continue  # a connection without a peer id is found from its twin
            cands = [
                b
                for b in by_flow.get(peer, ())
                if b is not a and id(b) not in taken and b.tcp.f5_peer_id in (flow, None)
            ]
            if not cands:
                continue
            t0, t1 = a.tcp.first_ts_ns, a.tcp.last_ts_ns
            b = min(
                cands,
                key=lambda x: (
                    x.tcp.last_ts_ns < t0 or x.tcp.first_ts_ns > t1,
                    abs(x.tcp.first_ts_ns - t0),
                ),
            )
            taken.update((id(a), id(b)))
            twins.append((a, b))
    return twins


def _f5_client_side_first(a: ConnectionAnalysis, b: ConnectionAnalysis) -> bool:
    """True when ``a`` is the client-side leg of the F5 twins ``a``/``b``: by the
    trailers' ingress flags when they tell the legs apart
    (:func:`wsanalyze.tcp.f5_client_side`), else by causality on the one clock of
    the capture:

    1. the first request: a full proxy forwards a request only after receiving it;
    2. else the SYN: BIG-IP opens the server-side connection only after the
       client-side one (once it has chosen a pool member; without OneConnect reuse);
    3. else the messages both legs carry: a client→server message is on the
       client-side leg first, a server→client message on the server-side leg first;
    4. else the first packet (a guess: mid-stream capture, no common message)."""
    ia, ib = f5_client_side(a.tcp), f5_client_side(b.tcp)
    if ia is not None and ib is not None and ia != ib:
        return ia
    ra = a.requests[0].ts_ns if a.requests else None
    rb = b.requests[0].ts_ns if b.requests else None
    if ra is not None and rb is not None and ra != rb:
        return ra < rb
    sa, sb = a.tcp.syn_ts_ns, b.tcp.syn_ts_ns
    if sa is not None and sb is not None and sa != sb:
        return sa < sb
    votes = 0
    for m in match_messages(a, b):
        if m.client_ts_ns != m.server_ts_ns:
            earlier_on_a = m.client_ts_ns < m.server_ts_ns
            votes += 1 if earlier_on_a == (m.direction == C2S) else -1
    if votes:
        return votes > 0
    return (a.tcp.first_ts_ns, a.tcp.index) <= (b.tcp.first_ts_ns, b.tcp.index)


def correlate_within(capture: CaptureAnalysis) -> Correlation | None:
    """Both legs in ONE capture (``tcpdump -i any`` on the proxy host, ``-i 0.0:nn``
    on an F5 BIG-IP): pair the connections that are two legs of one proxied
    connection, on exact evidence only.

    1. F5 trailer ids (``tcpdump -i 0.0:nn``/``:nnn``): a connection whose peer id
       is another's flow id (and whose flow id is that one's peer id, when known) is
       its twin, whatever the requests say (a rewritten or dropped
       Sec-WebSocket-Key, plain HTTP before an Upgrade). The client-side leg is the
       one earlier by causality (:func:`_f5_client_side_first`: first request, else
       SYN, else common messages).
    2. Sec-WebSocket-Key (RFC 6455 §4.1: 16 random bytes per handshake, so two TCP
       connections carrying it are two legs of one WebSocket): legs of one key are
       chained in request order (client → proxy → server; several proxies give
       several pairs). A key pair already made by the F5 ids, or that would make a
       connection client side (or server side) of a second pair, is left out.

    One clock, so θ = 0. Returns None when nothing pairs; weaker evidence is not
    used here, since two independent clients of one server look alike. HTTP/2
    connections carrying RFC 8441 streams are not paired on F5 ids (one TCP flow,
    several WebSockets).
    """
    legs: list[tuple[_Features, _Features]] = []
    sides: set[tuple[int, int]] = set()  # (id(conn), 0 client side / 1 server side)
    twins: set[frozenset[int]] = set()
    for a, b in _f5_twins(capture.connections):
        if not _f5_client_side_first(a, b):
            a, b = b, a
        fc, fs = _features(a), _features(b)
        if fc is None or fs is None:
            continue  # nothing to compare (no request, no message): left unpaired
        legs.append((fc, fs))
        sides.update(((id(a), 0), (id(b), 1)))
        twins.add(frozenset((id(a), id(b))))
    # Group by key from the request alone; only connections sharing a key need the
    # full features (message digests), which cost a pass over their messages.
    by_key: dict[bytes, list[ConnectionAnalysis]] = defaultdict(list)
    for conn in capture.connections:
        req = conn.exchange[0]
        key = header_value(req.headers, b"sec-websocket-key") if req is not None else None
        if key is not None:
            by_key[key].append(conn)
    for group in by_key.values():
        if len(group) > 1:
            feats = [f for f in map(_features, group) if f is not None]
            for c, s in pairwise(sorted(feats, key=lambda f: f.ts_ns)):
                ic, is_ = id(c.conn), id(s.conn)
                if frozenset((ic, is_)) in twins or (ic, 0) in sides or (is_, 1) in sides:
                    continue
                legs.append((c, s))
    if not legs:
        return None
    timing = _Timing(-_MIN_SLACK // 5, 4 * _MIN_SLACK, 4 * _MIN_SLACK)
    pairs: list[Pair] = []
    for n, (c, s) in enumerate(sorted(legs, key=lambda x: x[0].ts_ns), start=1):
        sc, ev = _score(c, s, timing)
        pairs.append(_make_pair(f"pair-{n}", c, s, sc, ev))
    in_pair = {id(p.client) for p in pairs} | {id(p.server) for p in pairs}
    rest = [c for c in capture.connections if id(c) not in in_pair]
    return Correlation(
        pairs=pairs,
        clock_offset=estimate_clock_offset(pairs, 0),
        findings=[],
        unpaired_client=rest,
        unpaired_server=[],
    )
