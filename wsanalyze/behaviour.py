"""What the proxy did to the messages of one pair, and one server message fanned out
to many connections.

:func:`~wsanalyze.correlate.match_messages` matches each message of one leg to its
copy on the other by (opcode, digest) in stream order per direction; digests are over
the decompressed payload, so a proxy that re-compresses (RFC 7692) still matches.
This module reads what is left between two consecutive matches of a direction, on
the *source* leg (where the message entered the proxy: the client leg for
client → server, the server leg for server → client) and on the *destination* leg:

- ``coalesced``: two or more consecutive unmatched source messages of one opcode
  whose lengths add up to one unmatched destination message; ``split`` the reverse.
  With payloads kept (``analyze(..., keep_payloads=True)``) the digest of the
  concatenation is checked (``verified`` True); otherwise it rests on lengths
  (``verified`` None: "probably").
- ``modified``: what remains, paired by position: one source and one destination
  message of the same opcode with different digests.
- ``dropped``: a source message with no copy; ``injected``: a destination message
  with no source.
- ``refragmented``: a matched message with another frame count (legal: RFC 6455 §5.4
  lets an intermediary re-fragment a message when no extension forbids it).
- ``pings_answered_by_proxy``: a ping on the source leg, not forwarded, answered by a
  pong with the same payload (RFC 6455 §5.5.3) on the same leg.

Control frames (ping, pong, close) are kept out of the data comparison; a close is
only noted as forwarded or not (``close_forwarded``), since
:mod:`wsanalyze.diagnose` reports a close not propagated and a close code changed.
Incomplete messages (cut by a capture gap) are left out: their digest is of a part.

The per-message proxy delay is :meth:`MessageMatch.delay_ns` (table
``message_matches``); :func:`fan_out` uses it for the delay spread of one message
pushed to many connections.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from . import catalogue
from .model import Direction, Finding, Message, Opcode

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .correlate import Correlation, Pair
    from .pipeline import ConnectionAnalysis

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
_DATA = (Opcode.TEXT, Opcode.BINARY)

MAX_PACKETS = 20
"""Packet numbers kept per finding (the first ones)."""

FAN_OUT_WINDOW_NS = 50_000_000
"""Copies of one server message within this time (ns, server-capture clock, from the
first copy) count as one fan-out."""

FAN_OUT_MIN_CONNECTIONS = 3
"""Server-side connections a message must be sent on to be a fan-out."""

KINDS = ("dropped", "injected", "modified", "refragmented", "coalesced", "split",
         "pings_answered_by_proxy")  # fmt: skip
"""The behaviours counted per pair and direction (the count columns of BEHAVIOUR)."""

BEHAVIOUR: dict[str, str] = {
    "pair_id": "string",
    "direction": "category",  # client_to_server / server_to_client (tables.DIRECTION)
    **{k: "int64" for k in KINDS},
}
"""Schema of :func:`behaviour_table`: one row per pair and direction. ``category`` is
:data:`DIRECTIONS` (``tables.DIRECTION``)."""

DIRECTIONS = ("client_to_server", "server_to_client")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the proxy did in one direction.

    ``source``/``destination`` are indices into the source and destination legs'
    ``messages`` (empty for a message with no counterpart). ``packets`` are the first
    packets of the messages it rests on, in the capture of role ``capture`` (the
    source leg's, or the destination leg's for ``injected``). ``verified`` (coalesced
    and split only): True when the payloads were kept and the digest checked, None
    when it rests on lengths alone.
    """

    source: tuple[int, ...]
    destination: tuple[int, ...]
    packets: tuple[int, ...]
    capture: str
    verified: bool | None = None


@dataclass(frozen=True, slots=True)
class DirectionBehaviour:
    """What the proxy did to one direction of one pair; ``source``/``destination`` are
    the connection ids of the legs the messages entered and left the proxy on."""

    direction: Direction
    source: str
    destination: str
    dropped: tuple[Event, ...] = ()
    injected: tuple[Event, ...] = ()
    modified: tuple[Event, ...] = ()
    refragmented: tuple[Event, ...] = ()
    coalesced: tuple[Event, ...] = ()
    split: tuple[Event, ...] = ()
    pings_answered_by_proxy: tuple[Event, ...] = ()
    close_forwarded: bool | None = None  # None: no close frame on the source leg

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in KINDS}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """:class:`DirectionBehaviour` for client → server and server → client."""

    pair_id: str
    client_to_server: DirectionBehaviour
    server_to_client: DirectionBehaviour

    def __iter__(self):
        return iter((self.client_to_server, self.server_to_client))

    def of(self, direction: Direction) -> DirectionBehaviour:
        return self.client_to_server if direction == C2S else self.server_to_client


@dataclass(frozen=True, slots=True)
class FanOut:
    """One server → client message sent on many server-side connections at once.

    Times are on the server capture's clock; ``spread_ns`` from the first copy to the
    last one. ``delay_*`` are proxy delays (clock-offset corrected) of the copies seen
    on their client leg (``delivered`` of them); None when none was.
    """

    opcode: int
    digest: bytes
    payload_len: int
    preview: bytes
    pair_ids: tuple[str, ...]
    connections: tuple[str, ...]  # server-side connection ids
    packets: tuple[int, ...]  # first packet of each copy, server capture
    capture: str
    first_ts_ns: int
    spread_ns: int
    delivered: int
    delay_min_ns: int | None
    delay_max_ns: int | None
    slowest_pair_id: str | None


# --- one pair ---------------------------------------------------------------------------


def _legs(pair: Pair, d: Direction) -> tuple[ConnectionAnalysis, ConnectionAnalysis]:
    return (pair.client, pair.server) if d == C2S else (pair.server, pair.client)


def _digest(data: bytes) -> bytes:
    return blake2b(data, digest_size=16).digest()


def _regroup(many: list[Message], one: Message) -> bool | None:
    """True/False when payloads allow checking that ``many`` concatenated is ``one``;
    None when they are not kept."""
    if one.payload is not None:
        pos = 0
        for m in many:
            if _digest(one.payload[pos : pos + m.payload_len]) != m.digest:
                return False
            pos += m.payload_len
        return True
    if all(m.payload is not None for m in many):
        return _digest(b"".join(m.payload or b"" for m in many)) == one.digest
    return None


def _run(seq: list[tuple[int, Message]], start: int, one: Message) -> tuple[int, bool | None]:
    """End (exclusive) of a run of 2+ messages from ``start`` of ``one``'s opcode whose
    lengths add up to ``one``'s (and, with payloads, whose bytes do); (start, None)
    when there is none."""
    total = 0
    k = start
    while k < len(seq) and seq[k][1].opcode == one.opcode and total < one.payload_len:
        total += seq[k][1].payload_len
        k += 1
    if k - start >= 2 and total == one.payload_len:
        ok = _regroup([m for _, m in seq[start:k]], one)
        if ok is not False:
            return k, ok
    return start, None


def _direction(pair: Pair, d: Direction) -> DirectionBehaviour:
    src, dst = _legs(pair, d)
    srole, drole = src.role, dst.role
    matches = [m for m in pair.matches if m.direction == d]
    if d == C2S:
        link = {m.client_index: m.server_index for m in matches}
    else:
        link = {m.server_index: m.client_index for m in matches}
    matched_dst = set(link.values())

    def data(conn: ConnectionAnalysis) -> list[tuple[int, Message]]:
        return [
            (i, m)
            for i, m in enumerate(conn.messages)
            if m.direction == d and m.opcode in _DATA and m.complete
        ]

    # Unmatched data messages grouped by the number of data matches before them:
    # matches keep stream order on both legs, so group k lies between the same two
    # matches on each leg.
    gaps_s: dict[int, list[tuple[int, Message]]] = defaultdict(list)
    gaps_d: dict[int, list[tuple[int, Message]]] = defaultdict(list)
    refrag: list[Event] = []
    k = 0
    for i, m in data(src):
        j = link.get(i)
        if j is None:
            gaps_s[k].append((i, m))
            continue
        k += 1
        if dst.messages[j].frame_count != m.frame_count:
            refrag.append(Event((i,), (j,), (m.first_packet,), srole))
    k = 0
    for j, m in data(dst):
        if j in matched_dst:
            k += 1
        else:
            gaps_d[k].append((j, m))

    # A leg that reached max_messages kept its messages only up to some point, the
    # other leg maybe to another: after the last match, a message missing from one
    # leg may be one that leg did not keep, so nothing there is judged.
    cut = k if src.messages_not_kept or dst.messages_not_kept else None
    dropped: list[Event] = []
    injected: list[Event] = []
    modified: list[Event] = []
    coalesced: list[Event] = []
    split: list[Event] = []
    for g in sorted(set(gaps_s) | set(gaps_d)):
        if g == cut:
            continue
        us, vs = gaps_s.get(g, []), gaps_d.get(g, [])
        a = b = 0
        while a < len(us) and b < len(vs):
            (i, u), (j, v) = us[a], vs[b]
            end, ok = _run(us, a, v)
            if end > a:
                idx = tuple(x for x, _ in us[a:end])
                pk = tuple(m.first_packet for _, m in us[a:end])
                coalesced.append(Event(idx, (j,), pk, srole, ok))
                a, b = end, b + 1
                continue
            end, ok = _run(vs, b, u)
            if end > b:
                split.append(
                    Event((i,), tuple(x for x, _ in vs[b:end]), (u.first_packet,), srole, ok)
                )
                a, b = a + 1, end
                continue
            if u.opcode == v.opcode:
                modified.append(Event((i,), (j,), (u.first_packet,), srole))
                b += 1
            else:
                dropped.append(Event((i,), (), (u.first_packet,), srole))
            a += 1
        dropped += [Event((i,), (), (u.first_packet,), srole) for i, u in us[a:]]
        injected += [Event((), (j,), (v.first_packet,), drole) for j, v in vs[b:]]

    # Pings sent on the source leg, not forwarded, answered on that leg.
    back, pong = d.reverse, Opcode.PONG  # once, not per message
    pongs = [(j, m) for j, m in enumerate(src.messages) if m.opcode == pong and m.direction == back]
    src_matched = (
        {m.client_index for m in pair.matches}
        if d == C2S
        else {m.server_index for m in pair.matches}
    )
    used: set[int] = set()
    answered: list[Event] = []
    close_forwarded: bool | None = None
    for i, m in enumerate(src.messages):
        if m.direction != d:
            continue
        if m.opcode == Opcode.CLOSE and close_forwarded is None:
            close_forwarded = i in link
        if m.opcode != Opcode.PING or i in link:
            continue
        for j, p in pongs:
            if (
                j not in used
                and j not in src_matched
                and p.digest == m.digest
                and p.ts_ns >= m.ts_ns
            ):
                used.add(j)
                answered.append(Event((i,), (), (m.first_packet, p.first_packet), srole))
                break

    return DirectionBehaviour(
        direction=d,
        source=src.id,
        destination=dst.id,
        dropped=tuple(dropped),
        injected=tuple(injected),
        modified=tuple(modified),
        refragmented=tuple(refrag),
        coalesced=tuple(coalesced),
        split=tuple(split),
        pings_answered_by_proxy=tuple(answered),
        close_forwarded=close_forwarded,
    )


def pair_behaviour(pair: Pair) -> Behaviour:
    """What the proxy did to the messages of ``pair``, per direction. Both legs must be
    WebSockets for anything to be found (else every list is empty)."""
    if not pair.client.websocket or not pair.server.websocket:
        return Behaviour(
            pair.id,
            DirectionBehaviour(C2S, pair.client.id, pair.server.id),
            DirectionBehaviour(S2C, pair.server.id, pair.client.id),
        )
    return Behaviour(pair.id, _direction(pair, C2S), _direction(pair, S2C))


# --- findings -----------------------------------------------------------------------------


def _packets(events: tuple[Event, ...]) -> list[int]:
    out: list[int] = []
    for e in events:
        out.extend(e.packets)
        if len(out) >= MAX_PACKETS:
            break
    return out[:MAX_PACKETS]


def _msg(conn: ConnectionAnalysis, index: int) -> Message:
    return conn.messages[index]


def behaviour_findings(pair: Pair, behaviour: Behaviour, *, dropped: bool = False) -> list[Finding]:
    """Findings for ``behaviour`` of ``pair``: one per code and direction, with the
    first packets as evidence. ``dropped`` True also reports the dropped messages as
    ``proxy_message_not_forwarded`` (off by default: diagnose already has that code,
    counting modified and coalesced messages too)."""
    out: list[Finding] = []
    for db in behaviour:
        src, dst = _legs(pair, db.direction)
        lab = db.direction.label
        ids = (src.id, dst.id)

        def add(
            code: str,
            events: tuple[Event, ...],
            detail: str,
            conns: tuple[str, str] = ids,
            ev_conn: ConnectionAnalysis = src,
            d: Direction = db.direction,
        ) -> None:
            first = events[0]
            idx = first.source[0] if first.source else first.destination[0]
            out.append(
                catalogue.finding(
                    code,
                    detail,
                    packets=_packets(events),
                    direction=d,
                    connections=conns,
                    capture=first.capture,
                    ts_ns=_msg(ev_conn, idx).ts_ns,
                )
            )

        if dropped and db.dropped:
            e = db.dropped
            add(
                "proxy_message_not_forwarded",
                e,
                f"expected=every {lab} message of {src.id} on {dst.id}, found={len(e)} without "
                f"a copy (first at packet {e[0].packets[0]})",
            )
        if db.injected:
            e = db.injected
            add(
                "proxy_message_injected",
                e,
                f"expected=every {lab} message of {dst.id} to come from {src.id}, found="
                f"{len(e)} with no source (first at packet {e[0].packets[0]} of the "
                f"{dst.role} capture)",
                conns=(dst.id, src.id),
                ev_conn=dst,
            )
        if db.modified:
            e = db.modified
            u, v = _msg(src, e[0].source[0]), _msg(dst, e[0].destination[0])
            add(
                "proxy_message_modified",
                e,
                f"expected=the {lab} message of {src.id} unchanged on {dst.id}, found={len(e)} "
                f"changed (first: packet {u.first_packet}, {u.payload_len} bytes → packet "
                f"{v.first_packet} of the {dst.role} capture, {v.payload_len} bytes)",
            )
        if db.refragmented:
            e = db.refragmented
            u, v = _msg(src, e[0].source[0]), _msg(dst, e[0].destination[0])
            add(
                "proxy_message_refragmented",
                e,
                f"{len(e)} {lab} message(s) forwarded with another fragmentation (first: "
                f"packet {u.first_packet}, {u.frame_count} frame(s) on {src.id} → "
                f"{v.frame_count} on {dst.id})",
            )
        for code, events, many in (
            ("proxy_messages_coalesced", db.coalesced, "source"),
            ("proxy_message_split", db.split, "destination"),
        ):
            if not events:
                continue
            e = events[0]
            n_many = len(e.source if many == "source" else e.destination)
            how = "payload digest checked" if e.verified else "probably: lengths add up"
            verb = "merged into one" if code == "proxy_messages_coalesced" else "split into"
            first = (
                f"{n_many} messages from packet {e.packets[0]} {verb} on {dst.id}"
                if many == "source"
                else f"packet {e.packets[0]} {verb} {n_many} messages on {dst.id}"
            )
            add(
                code,
                events,
                f"expected=message boundaries of {src.id} kept on {dst.id} ({lab}), found="
                f"{len(events)} regrouped (first: {first}; {how})",
            )
        if db.pings_answered_by_proxy:
            e = db.pings_answered_by_proxy
            add(
                "proxy_answers_pings",
                e,
                f"{len(e)} {lab} ping(s) on {src.id} answered by a pong on the same leg and "
                f"not forwarded to {dst.id} (first: ping packet {e[0].packets[0]}, pong "
                f"packet {e[0].packets[1]})",
            )
    return out


# --- fan-out -------------------------------------------------------------------------------


def fan_out(
    correlation: Correlation,
    *,
    window_ns: int = FAN_OUT_WINDOW_NS,
    min_connections: int = FAN_OUT_MIN_CONNECTIONS,
) -> list[FanOut]:
    """Server → client data messages (same opcode and digest) sent on at least
    ``min_connections`` paired server-side connections within ``window_ns`` of the
    first copy, one copy per connection, in order of the first copy. A message the
    client sent earlier on that connection (an echo) is not a push and is left out."""
    theta = correlation.clock_offset or 0  # drift-aware: θ at each message's time
    copies: dict[tuple[int, bytes], list[tuple[int, int, int, Message]]] = defaultdict(list)
    pairs = correlation.pairs
    for n, p in enumerate(pairs):
        if not p.server.websocket:
            continue
        asked: set[bytes] = set()  # digests the client sent: an echo is not a push
        for j, m in enumerate(p.server.messages):
            if m.opcode not in _DATA:
                continue
            if m.direction == C2S:
                asked.add(m.digest)
            elif m.complete and m.digest not in asked:
                copies[(m.opcode, m.digest)].append((m.ts_ns, n, j, m))
    delivered: dict[int, dict[int, int]] = {}  # pair number → server index → delay
    out: list[FanOut] = []
    for (opcode, digest), lst in copies.items():
        # (most digests are sent once: skip them before building a set)
        if len(lst) < min_connections or len({x[1] for x in lst}) < min_connections:
            continue
        lst.sort(key=lambda x: (x[0], x[1], x[2]))
        a = 0
        while a < len(lst):
            t0 = lst[a][0]
            group: dict[int, tuple[int, int, Message]] = {}
            b = a
            while b < len(lst) and lst[b][0] - t0 <= window_ns:
                group.setdefault(lst[b][1], (lst[b][0], lst[b][2], lst[b][3]))
                b += 1
            if len(group) < min_connections:
                a += 1
                continue
            for n in group:
                if n not in delivered:
                    delivered[n] = {
                        mm.server_index: mm.delay_ns(theta)
                        for mm in pairs[n].matches
                        if mm.direction == S2C
                    }
            out.append(_fan_out(pairs, opcode, digest, group, delivered))
            a = b
    out.sort(key=lambda f: f.first_ts_ns)
    return out


def _fan_out(pairs, opcode: int, digest: bytes, group, delivered) -> FanOut:
    delays: list[tuple[int, str]] = []
    for n, (_ts, j, _m) in group.items():
        if j in delivered[n]:
            delays.append((delivered[n][j], pairs[n].id))
    order = sorted(group, key=lambda n: group[n][0])
    times = [group[n][0] for n in order]
    m0 = group[order[0]][2]
    slowest = max(delays) if delays else None
    return FanOut(
        opcode=opcode,
        digest=digest,
        payload_len=m0.payload_len,
        preview=m0.preview,
        pair_ids=tuple(pairs[n].id for n in order),
        connections=tuple(pairs[n].server.id for n in order),
        packets=tuple(group[n][2].first_packet for n in order),
        capture=pairs[order[0]].server.role,
        first_ts_ns=times[0],
        spread_ns=times[-1] - times[0],
        delivered=len(delays),
        delay_min_ns=min(d for d, _ in delays) if delays else None,
        delay_max_ns=slowest[0] if slowest else None,
        slowest_pair_id=slowest[1] if slowest else None,
    )


def _preview_text(opcode: int, preview: bytes, limit: int = 60) -> str:
    if opcode == Opcode.TEXT:
        text = preview.decode("utf-8", "replace")
        return text if len(text) <= limit else text[:limit] + "…"
    return preview[:16].hex()


def fan_out_findings(fan_outs: list[FanOut]) -> list[Finding]:
    """One ``server_fan_out`` finding per :class:`FanOut`."""
    out: list[Finding] = []
    for f in fan_outs:
        if f.delivered:
            delays = (
                f"delivered on {f.delivered} client leg(s) after "
                f"{(f.delay_min_ns or 0) / 1e6:.3f}–{(f.delay_max_ns or 0) / 1e6:.3f} ms "
                f"(slowest: {f.slowest_pair_id})"
            )
        else:
            delays = "no copy seen on a client leg"
        out.append(
            catalogue.finding(
                "server_fan_out",
                f"{Opcode.name_of(f.opcode)} message of {f.payload_len} bytes "
                f'"{_preview_text(f.opcode, f.preview)}" (digest {f.digest.hex()[:12]}) sent on '
                f"{len(f.connections)} server-side connections within "
                f"{f.spread_ns / 1e6:.3f} ms; {delays}",
                packets=f.packets[:MAX_PACKETS],
                direction=S2C,
                connections=f.connections,
                capture=f.capture,
                ts_ns=f.first_ts_ns,
            )
        )
    return out


# --- table ---------------------------------------------------------------------------------


def behaviour_table(correlation: Correlation | None) -> pd.DataFrame:
    """One row per pair and direction with the counts of :data:`KINDS`; columns and
    dtypes in :data:`BEHAVIOUR`."""
    import pandas as pd

    cols: dict[str, list[Any]] = {k: [] for k in BEHAVIOUR}
    for p in correlation.pairs if correlation else []:
        for db in pair_behaviour(p):
            cols["pair_id"].append(p.id)
            cols["direction"].append(db.direction.label)
            for k, v in db.counts().items():
                cols[k].append(v)
    dtypes: dict[str, Any] = dict(BEHAVIOUR)
    dtypes["direction"] = pd.CategoricalDtype(list(DIRECTIONS))
    return pd.DataFrame({k: pd.Series(cols[k], dtype=t) for k, t in dtypes.items()})
