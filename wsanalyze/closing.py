"""How one leg of a WebSocket ended: the close story (RFC 6455 §5.5.1, §7.1; RFC 9293).

:func:`close_story` reads one :class:`~wsanalyze.pipeline.ConnectionAnalysis` and
returns a :class:`CloseStory`: the close frame each endpoint sent, who sent the first
and whether the other echoed it (RFC 6455 §5.5.1: "If an endpoint receives a Close
frame and did not previously send a Close frame, the endpoint MUST send a Close frame
in response"), the TCP FIN (RFC 9293 §3.6) and RST (§3.5.2) each way in time order,
how long the connection was silent before the first close event, the close code each
endpoint would report (RFC 6455 §7.1.5) and who closed.

:func:`close_findings` turns one story into the single-leg findings
``ws_close_not_completed``, ``ws_abnormal_closure`` and ``ws_closed_by_rst``; they
need no second capture. Pair-level close findings (idle timeout, backend gone, close
not propagated, close code changed) are in :mod:`wsanalyze.diagnose`.

Endpoints are named by their role on the leg: ``"client"`` (the side that opened the
TCP connection) and ``"server"``. On the client leg the proxy is the ``"server"``; on
the server leg it is the ``"client"``. Times are int ns on the leg's capture clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import catalogue
from .model import CloseCode, Direction, Finding, Opcode

if TYPE_CHECKING:  # pipeline.py may import this module to add close_findings()
    from .pipeline import ConnectionAnalysis

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

CLOSE, FIN, RST = "close", "fin", "rst"
_KIND_RANK = {CLOSE: 0, FIN: 1, RST: 2}  # same instant and packet: the frame came first


def _same(s: str) -> str:
    return s


def _sender(d: Direction | int) -> str:
    return "client" if d == C2S else "server"


def _peer(sender: str) -> str:
    return "server" if sender == "client" else "client"


@dataclass(frozen=True, slots=True)
class CloseEvent:
    """One close event of one leg: a WebSocket close frame (``kind="close"``, RFC 6455
    §5.5.1), a TCP FIN (``"fin"``) or RST (``"rst"``).

    ``sender`` is ``"client"`` or ``"server"`` (the leg's endpoint that sent it),
    ``endpoint`` its ``"ip:port"``. ``ts_ns`` is the time of the packet that carried
    it (the last byte of a close frame), ``packet`` that packet's number in the leg's
    capture (None when not known). ``code``/``reason``: the close frame's status code
    and reason bytes (None for an empty close payload, and for FIN/RST).
    """

    kind: str
    sender: str
    endpoint: str
    ts_ns: int
    packet: int | None
    code: int | None = None
    reason: bytes | None = None
    h2: bool = False
    """The leg is an HTTP/2 stream (RFC 8441): its FIN is END_STREAM, its RST RST_STREAM."""

    @property
    def direction(self) -> Direction:
        return C2S if self.sender == "client" else S2C

    def label(self, text: Callable[[str], str] = _same) -> str:
        """``"close 1000 'bye'"``, ``"close (no code)"``, ``"FIN"`` or ``"RST"``; ``text``
        is applied to the close reason (e.g. a report's redaction)."""
        if self.kind != CLOSE:
            if self.h2:
                return "END_STREAM" if self.kind == FIN else "RST_STREAM"
            return self.kind.upper()
        if self.code is None:
            return "close (no code)"
        reason = text(self.reason.decode("utf-8", "replace")) if self.reason else ""
        return f"close {self.code}" + (f" {reason[:60]!r}" if reason else "")


@dataclass(frozen=True, slots=True)
class CloseStory:
    """How one leg ended.

    - ``client_close``/``server_close``: the first close frame each endpoint sent
      (None if it sent none).
    - ``first_close_from``: ``"client"``/``"server"``, the sender of the first close
      frame (None without close frames); ``echoed``: the other endpoint sent a close
      frame after it (RFC 6455 §5.5.1, §7.1.2); ``echo_delay_ns``: how long after.
    - ``events``: close frames (first per direction), FIN and RST per direction, in
      time order (then packet order; a close frame before a FIN in the same packet).
    - ``last_activity_ts_ns``/``last_activity_packet``: the last message other than a
      close frame (text, binary, ping, pong), or HTTP head, before the first close
      event (None when there was none); ``close_ts_ns``/``close_packet``: the first
      close event; ``idle_ns``: the silence between them, ns (None without either).
    - ``client_code``/``server_code``: the close code that endpoint would report,
      RFC 6455 §7.1.5: the code of the close frame it received, 1005 when that frame
      had no code, 1006 when the TCP connection closed (FIN or RST) with no close
      frame received; None when the connection is not a WebSocket, or nothing
      closed in the capture.
    - ``closed_by``: ``"client"``, ``"server"`` (the sender of the first close event)
      or ``"unknown"`` (no close event in the capture).
    - ``clean``: both close frames were exchanged and no RST came before the second
      (the TCP close followed the closing handshake, §7.1.1).
    - ``open_at_end``: the TCP connection was still open when the capture ended (no
      RST and not both FINs); ``last_ts_ns``: the connection's last packet.
    """

    connection: str
    capture: str
    websocket: bool
    client_endpoint: str
    server_endpoint: str
    client_close: CloseEvent | None
    server_close: CloseEvent | None
    first_close_from: str | None
    echoed: bool
    echo_delay_ns: int | None
    events: tuple[CloseEvent, ...]
    last_activity_ts_ns: int | None
    last_activity_packet: int | None
    close_ts_ns: int | None
    close_packet: int | None
    idle_ns: int | None
    client_code: int | None
    server_code: int | None
    closed_by: str
    clean: bool
    open_at_end: bool
    last_ts_ns: int

    @property
    def close_frames(self) -> tuple[CloseEvent, ...]:
        """The close frames (at most one per endpoint) in time order."""
        return tuple(e for e in self.events if e.kind == CLOSE)

    @property
    def tcp_ends(self) -> tuple[CloseEvent, ...]:
        """The FINs and RSTs in time order."""
        return tuple(e for e in self.events if e.kind != CLOSE)

    @property
    def first_event(self) -> CloseEvent | None:
        """The first close event (close frame, FIN or RST), or None."""
        return self.events[0] if self.events else None

    def first_from(self, sender: str) -> CloseEvent | None:
        """The first close event sent by ``sender`` (``"client"``/``"server"``)."""
        return next((e for e in self.events if e.sender == sender), None)

    def close_from(self, sender: str) -> CloseEvent | None:
        """The close frame sent by ``sender``, or None."""
        return self.client_close if sender == "client" else self.server_close

    def describe(self, text: Callable[[str], str] = _same) -> str:
        """The story in one line, for example ``closed by client: close 1000 'bye'
        from client, echoed by server after 0.171 ms; FIN from server 192.0.2.1:80
        +0.360 ms, FIN from client 192.0.2.10:56524 +0.720 ms; clean, 1000 at both
        ends``. ``text`` is applied to close reasons (a report's redaction)."""
        if not self.events:
            if self.websocket:
                return "still open at end of capture (no close frame, FIN or RST)"
            return "still open at end of capture"
        parts: list[str] = []
        head = f"closed by {self.closed_by}"
        if self.idle_ns is not None and self.idle_ns >= 1_000_000:
            head += f" after {duration_text(self.idle_ns)} idle"
        frames = self.close_frames
        if frames:
            first = frames[0]
            s = f"{first.label(text)} from {first.sender}"
            if self.echoed and len(frames) > 1:
                second = frames[1]
                same = (second.code, second.reason) == (first.code, first.reason)
                echo = "echoed" if same else f"answered {second.label(text)}"
                s += f", {echo} by {second.sender} after {duration_text(self.echo_delay_ns or 0)}"
            elif self.open_at_end:
                s += f", not answered by {_peer(first.sender)} by the end of the capture"
            else:
                s += f", never answered by {_peer(first.sender)}"
            parts.append(s)
        elif self.websocket:
            parts.append("no close frame")
        t0 = self.events[0].ts_ns
        ends = []
        for e in self.tcp_ends:
            rel = "" if e.ts_ns == t0 else f" +{duration_text(e.ts_ns - t0)}"
            ends.append(f"{e.label()} from {e.sender} {e.endpoint}{rel}")
        if ends:
            parts.append(", ".join(ends))
        tail = []
        if self.clean:
            tail.append("clean")
        if self.open_at_end:
            tail.append("still open at end of capture")
        if self.websocket and (self.client_code is not None or self.server_code is not None):
            if self.client_code == self.server_code:
                tail.append(f"{self.client_code} at both ends")
            else:
                tail.append(
                    f"client reports {_code(self.client_code)}, "
                    f"server reports {_code(self.server_code)}"
                )
        if tail:
            parts.append(", ".join(tail))
        return head + ": " + "; ".join(parts)

    def as_json(
        self,
        ts: Callable[[int], Any] = lambda ns: ns,
        text: Callable[[str], str] = lambda s: s,
    ) -> dict[str, Any]:
        """Plain JSON values: ``ts`` formats a time in ns (e.g. an ISO string), ``text``
        a close reason (e.g. redaction). Durations are float ms."""

        def ev(e: CloseEvent | None) -> dict[str, Any] | None:
            if e is None:
                return None
            out: dict[str, Any] = {
                "kind": e.kind,
                "from": e.sender,
                "endpoint": e.endpoint,
                "ts": ts(e.ts_ns),
                "packet": e.packet,
            }
            if e.kind == CLOSE:
                out["code"] = e.code
                out["reason"] = (
                    text(e.reason.decode("utf-8", "replace")) if e.reason is not None else None
                )
            return out

        def ms(ns: int | None) -> float | None:
            return None if ns is None else round(ns / 1e6, 6)

        return {
            "closed_by": self.closed_by,
            "first_close_from": self.first_close_from,
            "echoed": self.echoed,
            "echo_delay_ms": ms(self.echo_delay_ns),
            "clean": self.clean,
            "open_at_end": self.open_at_end,
            "idle_before_close_ms": ms(self.idle_ns),
            "code_at_client": self.client_code,
            "code_at_server": self.server_code,
            "events": [ev(e) for e in self.events],
            "summary": self.describe(text),
        }


def duration_text(ns: int) -> str:
    """A duration for humans: ``0.171 ms``, ``12.5 ms``, ``2.995 s``."""
    if abs(ns) < 10_000_000:
        return f"{ns / 1e6:.3f} ms"
    if abs(ns) < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.3f} s"


def _code(code: int | None) -> str:
    return "nothing" if code is None else str(code)


def close_story(conn: ConnectionAnalysis) -> CloseStory:
    """The close story of one leg (see :class:`CloseStory`). Never raises."""
    t = conn.tcp
    # An RFC 8441 stream ends with END_STREAM / RST_STREAM (RFC 9113 §5.1), or with
    # the TCP connection's own FIN / RST (H2StreamTransport.tcp_end).
    tcp_end = getattr(t, "tcp_end", (True, True))
    h2s = [conn.stream_id is not None and not tcp_end[d] for d in (C2S, S2C)]
    endpoints = {"client": str(t.client), "server": str(t.server)}
    events: list[CloseEvent] = []
    closes: dict[str, CloseEvent] = {}
    for m in conn.messages:
        if m.opcode != Opcode.CLOSE:
            continue
        who = _sender(m.direction)
        if who in closes:
            continue
        e = CloseEvent(
            CLOSE, who, endpoints[who], m.ts_ns, m.last_packet, m.close_code, m.close_reason
        )
        closes[who] = e
        events.append(e)
    for d in (C2S, S2C):
        who = _sender(d)
        if t.fin_ts_ns[d] is not None:
            events.append(
                CloseEvent(FIN, who, endpoints[who], t.fin_ts_ns[d], t.fin_packet[d], h2=h2s[d])
            )
        if t.rst_ts_ns[d] is not None:
            events.append(
                CloseEvent(RST, who, endpoints[who], t.rst_ts_ns[d], t.rst_packet[d], h2=h2s[d])
            )
    events.sort(key=lambda e: (e.ts_ns, e.packet or 0, _KIND_RANK[e.kind]))

    first = events[0] if events else None
    frames = [e for e in events if e.kind == CLOSE]
    first_close_from = frames[0].sender if frames else None
    echoed = len(frames) == 2
    echo_delay = frames[1].ts_ns - frames[0].ts_ns if echoed else None

    # The silence before the close: the last message or HTTP head before it.
    limit = first.ts_ns if first is not None else None
    last_ts: int | None = None
    last_pk: int | None = None
    activity = [(m.ts_ns, m.last_packet) for m in conn.messages if m.opcode != Opcode.CLOSE]
    activity += [(h.ts_ns, h.packets[-1]) for h in (*conn.requests, *conn.responses)]
    if getattr(conn, "last_not_kept", None) is not None:  # messages past max_messages
        activity.append(conn.last_not_kept)
    for ts, pk in activity:
        if limit is not None and ts > limit:
            continue
        if last_ts is None or ts > last_ts or (ts == last_ts and pk > (last_pk or 0)):
            last_ts, last_pk = ts, pk
    idle = first.ts_ns - last_ts if first is not None and last_ts is not None else None

    rsts = [e for e in events if e.kind == RST]
    fins = {e.sender for e in events if e.kind == FIN}
    tcp_closed = bool(rsts) or fins == {"client", "server"}
    clean = echoed and not any(r.ts_ns < frames[1].ts_ns for r in rsts)

    def code_at(receiver: str) -> int | None:
        if not conn.websocket:
            return None
        got = closes.get(_peer(receiver))
        if got is not None:
            return got.code if got.code is not None else int(CloseCode.NO_STATUS_RCVD)
        if any(e.kind != CLOSE for e in events):
            return int(CloseCode.ABNORMAL_CLOSURE)
        return None

    return CloseStory(
        connection=conn.id,
        capture=conn.role,
        websocket=conn.websocket,
        client_endpoint=endpoints["client"],
        server_endpoint=endpoints["server"],
        client_close=closes.get("client"),
        server_close=closes.get("server"),
        first_close_from=first_close_from,
        echoed=echoed,
        echo_delay_ns=echo_delay,
        events=tuple(events),
        last_activity_ts_ns=last_ts,
        last_activity_packet=last_pk,
        close_ts_ns=first.ts_ns if first else None,
        close_packet=first.packet if first else None,
        idle_ns=max(idle, 0) if idle is not None else None,
        client_code=code_at("client"),
        server_code=code_at("server"),
        closed_by=first.sender if first else "unknown",
        clean=clean,
        open_at_end=not tcp_closed,
        last_ts_ns=t.last_ts_ns,
    )


def story_of(conn: ConnectionAnalysis) -> CloseStory:
    """The close story the pipeline stored on ``conn``, computed if it has none."""
    stored = getattr(conn, "close", None)
    return stored if stored is not None else close_story(conn)


def close_findings(conn: ConnectionAnalysis, story: CloseStory | None = None) -> list[Finding]:
    """Single-leg close findings of one WebSocket connection (none for a connection
    that never became a WebSocket):

    - ``ws_close_not_completed``: one endpoint sent a close frame, the other never
      answered it and the TCP connection ended anyway (the peer sent FIN or either sent
      RST), RFC 6455 §5.5.1 and §7.1.2. Not raised while the connection is still open
      at the end of the capture (the answer may come later).
    - ``ws_abnormal_closure``: FIN or RST with no close frame either way: both ends
      report 1006 (§7.1.5, §7.4.1).
    - ``ws_closed_by_rst``: an endpoint reset the connection without having sent a
      close frame (it vanished: process killed, ``SO_LINGER 0``, a middlebox reset).

    Findings carry the connection id, the capture role and the packets of the close
    events they rest on.
    """
    if not conn.websocket:
        return []
    s = story if story is not None else close_story(conn)
    out: list[Finding] = []

    def add(code: str, detail: str, events: list[CloseEvent], direction: Direction) -> None:
        out.append(
            catalogue.finding(
                code,
                detail,
                packets=[e.packet for e in events if e.packet],
                direction=direction,
                ts_ns=events[0].ts_ns,
                connections=(conn.id,),
                capture=conn.role,
            )
        )

    frames = s.close_frames
    ends = s.tcp_ends
    if len(frames) == 1:
        first = frames[0]
        peer = _peer(first.sender)
        ending = [e for e in ends if e.kind == RST or e.sender == peer]
        if ending:
            end = ending[0]
            add(
                "ws_close_not_completed",
                f"expected=a close frame from the {peer} answering the {first.sender}'s "
                f"{first.label()} (RFC 6455 §5.5.1), found={end.label()} from the "
                f"{end.sender} {end.endpoint} {duration_text(end.ts_ns - first.ts_ns)} later "
                f"(packet {end.packet}) with no close frame from the {peer}; the "
                f"{first.sender} reports 1006",
                [first, end],
                first.direction,
            )
    if not frames and ends:
        end = ends[0]
        idle = f" after {duration_text(s.idle_ns)} of silence" if s.idle_ns is not None else ""
        add(
            "ws_abnormal_closure",
            f"expected=a close frame each way before the TCP close (RFC 6455 §7.1.1), "
            f"found=none: {end.label()} from the {end.sender} {end.endpoint}{idle} "
            f"(packet {end.packet}); both ends report 1006",
            [end],
            end.direction,
        )
    for e in ends:
        if e.kind == RST and s.close_from(e.sender) is None:
            add(
                "ws_closed_by_rst",
                f"expected=a close frame from the {e.sender} before it closed, found=RST from "
                f"the {e.sender} {e.endpoint} (packet {e.packet}) and no close frame from it; "
                f"the {_peer(e.sender)} reports 1006",
                [e],
                e.direction,
            )
            break
    return out


def describe_pair(
    client: CloseStory,
    server: CloseStory,
    clock_offset_ns: int = 0,
    text: Callable[[str], str] = _same,
) -> str:
    """One line telling how a proxied WebSocket ended on both legs: each leg's first
    close event and who sent it (client, proxy or server), the leg that closed first
    named first, the other's delay on the client capture's clock (server-leg times
    minus ``clock_offset_ns``, θ = server clock − client clock), and the close code
    the real client and the real server report (RFC 6455 §7.1.5). For example
    ``server leg: closed by server (RST); client leg: closed by proxy (FIN) +0.161 ms;
    no close frame on either leg; the client reports 1006, the server 1006``.
    ``text`` is applied to close reasons (a report's redaction)."""
    names = {
        ("client", "client"): "client",
        ("client", "server"): "proxy",
        ("server", "client"): "proxy",
        ("server", "server"): "server",
    }
    legs = []
    for leg, story, shift in (("client", client, 0), ("server", server, clock_offset_ns)):
        first = story.first_event
        ts = first.ts_ns - shift if first is not None else None
        legs.append((ts is None, ts or 0, leg, story, first))
    legs.sort(key=lambda x: (x[0], x[1]))
    t0 = legs[0][1]
    parts = []
    for n, (_open, ts, leg, story, first) in enumerate(legs):
        if first is None:
            parts.append(f"{leg} leg: still open at end of capture")
            continue
        who = names[(leg, first.sender)]
        prev = legs[0][4] if n > 0 else None
        if (
            who == "proxy"
            and prev is not None
            and first.kind == CLOSE == prev.kind
            and first.code == prev.code
        ):
            # The proxy relayed the close frame it received on the other leg.
            s = f"{leg} leg: the proxy forwarded it ({first.label(text)})"
        else:
            s = f"{leg} leg: closed by {who} ({first.label(text)})"
        if n == 0 and story.idle_ns is not None and story.idle_ns >= 1_000_000:
            s += f" after {duration_text(story.idle_ns)} idle"
        if n > 0:
            s += f" {'+' if ts >= t0 else '-'}{duration_text(abs(ts - t0))}"
        if story.clean:
            s += ", clean"
        elif story.open_at_end:
            s += ", still open at end of capture"
        parts.append(s)
    if client.websocket and not client.close_frames and not server.close_frames:
        parts.append("no close frame on either leg")
    at_client, at_server = client.client_code, server.server_code
    if at_client is not None or at_server is not None:
        parts.append(f"the client reports {_code(at_client)}, the server {_code(at_server)}")
    return "; ".join(parts)
