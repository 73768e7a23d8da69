"""Turn the evidence of both legs into findings about what the proxy did.

Each rule names the headers, statuses and packets it rests on, so a finding can be
checked by hand in Wireshark.
"""

from __future__ import annotations

from . import catalogue
from .correlate import Correlation, Pair
from .model import Direction, Finding, Opcode, header_values

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT


def _tokens(headers, name: bytes) -> set[bytes]:
    return {v.lower() for v in header_values(headers, name)}


def diagnose_pair(pair: Pair) -> list[Finding]:
    """Findings about one pair: the handshake as the proxy forwarded it (RFC 6455
    §4.1, RFC 9110 §7.6.1 and §7.8), and messages not forwarded."""
    out: list[Finding] = []
    # A finding's packets belong to the capture of its first connection: the
    # server leg for handshake findings (the evidence is what the proxy sent).
    ids = (pair.server.id, pair.client.id)
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    if creq is None or sreq is None:
        return out
    packets = (*sreq.packets, *(sresp.packets if sresp else ()))
    status = f"{sresp.status} {sresp.reason.decode('latin-1')}" if sresp else "no response"
    client_pk = f" (client leg request: packet {creq.packets[0]} of the client capture)"

    client_wants_ws = b"websocket" in _tokens(creq.headers, b"upgrade") and (
        b"upgrade" in _tokens(creq.headers, b"connection")
    )
    if client_wants_ws:
        lost = []
        if b"websocket" not in _tokens(sreq.headers, b"upgrade"):
            lost.append("Upgrade")
        if b"upgrade" not in _tokens(sreq.headers, b"connection"):
            lost.append("Connection")
        if lost:
            found = "; ".join(
                f"{h}: {', '.join(v.decode('latin-1') for v in header_values(sreq.headers, h.encode())) or 'absent'}"
                for h in lost
            )
            out.append(
                catalogue.finding(
                    "proxy_upgrade_header_dropped",
                    f"expected=Upgrade: websocket and Connection: Upgrade on the server leg, "
                    f"found={found}; server answered {status}{client_pk}",
                    packets=packets,
                    connections=ids,
                    capture=pair.server.role,
                    ts_ns=sreq.ts_ns,
                )
            )
        if sreq.version == b"HTTP/1.0":
            out.append(
                catalogue.finding(
                    "proxy_http10_to_backend",
                    f"expected=HTTP/1.1 on the server leg, found=HTTP/1.0; server answered "
                    f"{status}",
                    packets=sreq.packets,
                    connections=ids,
                    capture=pair.server.role,
                    ts_ns=sreq.ts_ns,
                )
            )
        if sresp is not None and sresp.status != 101 and not lost:
            out.append(
                catalogue.finding(
                    "proxy_handshake_refused_by_server",
                    f"expected=101 from the server, found={status}",
                    packets=sresp.packets,
                    connections=ids,
                    capture=pair.server.role,
                    ts_ns=sresp.ts_ns,
                )
            )
    if cresp is not None and sresp is not None and cresp.status != sresp.status:
        out.append(
            catalogue.finding(
                "proxy_status_changed",
                f"expected={sresp.status} (server leg), found={cresp.status} (client leg, "
                f"packet {cresp.packets[0]} of the client capture)",
                packets=sresp.packets,
                connections=ids,
                capture=pair.server.role,
                ts_ns=cresp.ts_ns,
            )
        )
    out.extend(_not_forwarded(pair))
    return out


def _not_forwarded(pair: Pair) -> list[Finding]:
    """Messages of one leg with no copy on the other, per direction (aggregated).

    Only messages inside the time both legs were open count: the source leg's
    message must precede the destination leg's close."""
    out: list[Finding] = []
    matched_c = {m.client_index for m in pair.matches}
    matched_s = {m.server_index for m in pair.matches}
    for d, src, matched, dst in (
        (C2S, pair.client, matched_c, pair.server),
        (S2C, pair.server, matched_s, pair.client),
    ):
        if not src.websocket or not dst.websocket:
            continue
        missing = [
            m
            for i, m in enumerate(src.messages)
            if m.direction == d
            and i not in matched
            and m.complete
            # A proxy may answer pings itself and each leg closes on its own.
            and m.opcode not in (Opcode.PING, Opcode.PONG, Opcode.CLOSE)
        ]
        if missing:
            out.append(
                catalogue.finding(
                    "proxy_message_not_forwarded",
                    f"expected=every {d.label} message of {src.id} on {dst.id}, found="
                    f"{len(missing)} without a copy (first at packet {missing[0].first_packet})",
                    packets=[m.last_packet for m in missing[:20]],
                    direction=d,
                    connections=(src.id, dst.id),
                    capture=src.role,
                    ts_ns=missing[0].ts_ns,
                )
            )
    return out


def diagnose(correlation: Correlation, *, server_capture_given: bool = True) -> list[Finding]:
    """All findings from the correlation: per pair, plus client-side WebSocket
    connections with no server-side twin."""
    out: list[Finding] = list(correlation.findings)
    for p in correlation.pairs:
        out.extend(diagnose_pair(p))
    if server_capture_given:
        ambiguous = {id(c) for c in correlation.ambiguous_client}
        for c in correlation.unpaired_client:
            hs = c.handshake
            if hs is None or id(c) in ambiguous:  # pair_ambiguous says it already
                continue
            out.append(
                catalogue.finding(
                    "proxy_no_server_connection",
                    f"expected=a server-side connection for {hs.request.method.decode('latin-1')} "
                    f"{hs.request.target.decode('latin-1')[:120]}, found=none that matches",
                    packets=hs.request.packets,
                    connections=(c.id,),
                    capture=c.role,
                    ts_ns=hs.request.ts_ns,
                )
            )
    return out
