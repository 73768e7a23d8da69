"""Turn the evidence of both legs into findings about what the proxy did.

Each rule names the headers, statuses and packets it rests on, so a finding can be
checked by hand in Wireshark. A finding's ``packets`` belong to the capture of its
FIRST connection (``capture`` is that connection's role); the detail names the other
leg's packets with "of the client capture" / "of the server capture".

Handshake (RFC 6455 §4, RFC 9110 §7.6.1 and §7.8), per pair:

- ``proxy_upgrade_header_dropped``: Upgrade or Connection absent on the server leg;
  ``proxy_upgrade_header_altered``: present but without ``websocket``/``upgrade``;
  ``proxy_http10_to_backend``; ``proxy_handshake_refused_by_server``;
  ``proxy_status_changed``; ``proxy_response_upgrade_header_dropped`` (the server's
  101 had them, the client's 101 lacks them).
- ``handshake_status_NNN`` for 400, 401, 403, 404, 426, 429, 500, 502, 503, 504 and
  505 answered to an Upgrade request on the client leg: one code per status (the
  catalogue explains each in WebSocket terms and names the settings to check); the
  detail says who produced it: relayed from the server, made by the proxy, or, for a
  server leg with no response, what happened there (reset, closed, given up by the
  proxy). Also raised for an unpaired client connection ("no server-side
  connection") when a server capture was given.
- ``proxy_key_changed`` / ``proxy_accept_not_recomputed`` (RFC 6455 §4.2.2).
- ``proxy_subprotocol_stripped`` / ``proxy_subprotocol_changed`` and
  ``proxy_extension_stripped`` / ``proxy_extension_changed`` (§4.1, §9.1).
- ``proxy_header_duplicated``: a handshake field repeated on the forwarded message
  but not on the original.
- ``proxy_response_not_forwarded``: the server answered, the client got nothing.

Close (RFC 6455 §7, with :mod:`wsanalyze.closing`), per pair of WebSocket legs, times
compared on the client capture's clock (server-leg time − θ):

- ``proxy_idle_timeout``: the proxy sent the first close event on both legs after at
  least :data:`MIN_IDLE_NS` of silence on both; the detail names the matching default
  (:data:`KNOWN_IDLE_TIMEOUTS`).
- ``proxy_backend_vanished``: the server's RST/FIN without a close frame ended the
  server leg; the proxy then closed the client leg.
- ``proxy_close_not_propagated``: one leg closed, the other stayed open
  :data:`PROPAGATION_LIMIT_NS` or more (until the end of its capture, or its first
  close event came that much later).
- ``proxy_close_code_changed``: a direction's close frame differs between the legs,
  or the proxy replaced it with a FIN/RST.
"""

from __future__ import annotations

from . import catalogue
from .behaviour import behaviour_findings, fan_out, fan_out_findings, pair_behaviour
from .closing import FIN, RST, CloseEvent, CloseStory, duration_text, story_of
from .correlate import Correlation, Pair
from .handshake import accept_for, is_upgrade_request, parse_extensions
from .model import Direction, Finding, Headers, ResponseHead, header_value, header_values
from .pipeline import ConnectionAnalysis

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT

MIN_IDLE_NS = 1_000_000_000
"""Silence (ns) before the proxy's close for ``proxy_idle_timeout``."""

PROPAGATION_LIMIT_NS = 1_000_000_000
"""A leg closing this much (ns) after the other one is ``proxy_close_not_propagated``."""

ORDER_SLACK_NS = 1_000_000
"""Tolerance (ns), on top of the clock-offset uncertainty, when deciding across
captures that one event came after another."""

KNOWN_IDLE_TIMEOUTS: tuple[tuple[int, str], ...] = (
    (60, "nginx proxy_read_timeout default 60 s"),
    (60, "Apache ProxyTimeout (= Timeout) default 60 s"),
    (60, "AWS ALB idle timeout default 60 s"),
    (50, "HAProxy timeout client/server 50 s of the Debian/Ubuntu packaged haproxy.cfg"),
    (240, "Azure Load Balancer idle timeout default 4 min"),
    (300, "F5 BIG-IP TCP profile idle timeout default 300 s"),
    (300, "Envoy stream_idle_timeout default 5 min"),
    (3600, "Envoy/Istio idle_timeout default 1 h"),
)
"""Idle timeouts (seconds) that proxies and load balancers apply by default."""

STATUS_CODES: dict[int, str] = {
    400: "handshake_status_400",
    401: "handshake_status_401",
    403: "handshake_status_403",
    404: "handshake_status_404",
    426: "handshake_status_426",
    429: "handshake_status_429",
    500: "handshake_status_500",
    502: "handshake_status_502",
    503: "handshake_status_503",
    504: "handshake_status_504",
    505: "handshake_status_505",
}
"""Statuses answered to an Upgrade request that get their own finding code."""

_STATUS_MEANING = {
    400: "the handshake was rejected as malformed",
    401: "credentials missing or rejected",
    403: "forbidden (Origin check, ACL or WAF)",
    404: "no WebSocket endpoint at this path",
    426: "the server requires an Upgrade it did not get, or another Sec-WebSocket-Version",
    429: "rate limited",
    500: "the handshake handler failed",
    502: "no usable answer from the backend",
    503: "no backend available",
    504: "the proxy timed out waiting for the backend",
    505: "the HTTP version was refused",
}

# Handshake fields checked for duplication; those in _SINGLE must appear once.
_DUP_REQUEST = (
    b"upgrade",
    b"connection",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
    b"host",
    b"origin",
)
_DUP_RESPONSE = (
    b"upgrade",
    b"connection",
    b"sec-websocket-accept",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
)
_SINGLE = frozenset(
    {
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"host",
        b"origin",
        b"sec-websocket-accept",
    }
)


def _tokens(headers, name: bytes) -> set[bytes]:
    return {v.lower() for v in header_values(headers, name)}


def _s(b: bytes | None) -> str:
    return "absent" if b is None else b.decode("latin-1")


def _field(headers: Headers, name: str) -> str:
    """All values of ``name`` joined, or ``absent``."""
    vals = [v for n, v in headers if n.lower() == name.lower().encode()]
    return ", ".join(v.decode("latin-1") for v in vals) if vals else "absent"


def _status(resp: ResponseHead | None) -> str:
    return f"{resp.status} {resp.reason.decode('latin-1')}".rstrip() if resp else "no response"


def _other(role: str) -> str:
    return f"of the {role} capture"


# --- handshake ------------------------------------------------------------------------


def diagnose_pair(
    pair: Pair,
    *,
    clock_offset_ns: int = 0,
    clock_slack_ns: int = 0,
    capture_end_ns: dict[str, int] | None = None,
) -> list[Finding]:
    """Findings about one pair: the handshake as the proxy forwarded it, messages not
    forwarded, and how the close crossed the proxy.

    ``clock_offset_ns`` is θ (server capture clock − client capture clock, ns);
    ``clock_slack_ns`` its uncertainty; ``capture_end_ns`` the last packet time per
    capture role (``"client"``/``"server"``), to tell a leg still open at the end of
    its capture from one whose capture stopped early.
    """
    out = _handshake(pair)
    out.extend(_header_case(pair))
    status = _status_finding(pair.client, pair.server, "")
    if status is not None:
        out.append(status)
    # Dropped, injected, modified, re-fragmented, coalesced or split messages and
    # pings the proxy answered itself (wsanalyze.behaviour).
    out.extend(behaviour_findings(pair, pair_behaviour(pair), dropped=True))
    out.extend(_close(pair, clock_offset_ns, clock_slack_ns, capture_end_ns or {}))
    out.extend(_h2_flow_control(pair, clock_offset_ns))
    return out


def _h2_flow_control(pair: Pair, theta_ns: int) -> list[Finding]:
    """Proxy delay that an HTTP/2 server leg's flow control explains (RFC 9113 §5.2):
    client-to-server messages whose bytes were crossing the server leg (first to last
    byte there) while the proxy's sending window was exhausted, so the proxy held
    part of them until the WINDOW_UPDATE."""
    s = pair.server
    out: list[Finding] = []
    # The connection and the stream window may stall together: one finding for both.
    windows: dict[tuple[int, int | None], list[int]] = {}
    stalls = {}
    for st in s.h2_stalls:
        if st.direction == Direction.CLIENT_TO_SERVER:  # not the backend waiting for credit
            windows.setdefault((st.start_ts_ns, st.end_ts_ns), []).append(st.stream_id)
            stalls.setdefault((st.start_ts_ns, st.end_ts_ns), st)
    for key, st in stalls.items():
        end = st.end_ts_ns if st.end_ts_ns is not None else s.tcp.last_ts_ns
        held = [
            m
            for m in pair.matches
            if m.direction == Direction.CLIENT_TO_SERVER
            and s.messages[m.server_index].first_ts_ns <= end
            and m.server_ts_ns >= st.start_ts_ns
        ]
        if not held:
            continue
        worst = max(held, key=lambda m: m.delay_ns(theta_ns))
        window = " and ".join(
            "connection" if sid == 0 else f"stream {sid}" for sid in sorted(windows[key])
        ) + (" windows" if len(windows[key]) > 1 else " window")
        waited = (
            "until the end of the capture"
            if st.end_ts_ns is None
            else (
                f"{duration_text(st.end_ts_ns - st.start_ts_ns)} (WINDOW_UPDATE at packet "
                f"{st.packets[-1]} {_other(s.role)})"
            )
        )
        out.append(
            catalogue.finding(
                "proxy_delay_h2_flow_control",
                f"expected=client-to-server messages forwarded as they arrive, found="
                f"{len(held)} crossing the proxy while the {window} of its HTTP/2 leg had no "
                f"flow-control credit from the server for {waited}: the proxy held their "
                f"bytes (the largest: {worst.payload_len} bytes, proxy delay of its last "
                f"byte {duration_text(worst.delay_ns(theta_ns))})",
                packets=(
                    st.packets[0],
                    s.messages[worst.server_index].last_packet,
                ),
                connections=(s.id, pair.client.id),
                capture=s.role,
                ts_ns=st.start_ts_ns,
            )
        )
    return out


def _switched(resp: ResponseHead | None) -> bool:
    """Whether ``resp`` opened the WebSocket: a 101 (RFC 6455 §4.2.2), or over HTTP/2 a
    2xx to the extended CONNECT (RFC 8441 §5)."""
    if resp is None:
        return False
    if resp.version == b"HTTP/2":
        return 200 <= resp.status < 300
    return resp.status == 101


def _header_case(pair: Pair) -> list[Finding]:
    """Request header names whose spelling the proxy changed (HAProxy lower-cases them
    all). Names are case-insensitive (RFC 9110 §5.1), so this is no header change,
    but a backend that compares names case-sensitively breaks on it."""
    creq, sreq = pair.client.exchange[0], pair.server.exchange[0]
    if creq is None or sreq is None or b"HTTP/2" in (creq.version, sreq.version):
        return []  # HTTP/2 field names are lower case by rule (RFC 9113 §8.2.1)
    server_names = {n.lower(): n for n, _ in sreq.headers}
    changed = []
    for name, _ in creq.headers:
        theirs = server_names.get(name.lower())
        if theirs is not None and theirs != name and name.decode("latin-1") not in changed:
            changed.append(name.decode("latin-1"))
    if not changed:
        return []
    shown = ", ".join(
        f"{n} -> {server_names[n.lower().encode('latin-1')].decode('latin-1')}" for n in changed[:6]
    )
    return [
        catalogue.finding(
            "proxy_header_case_changed",
            f"expected=header names as the client sent them, found={len(changed)} respelled: "
            f"{shown}",
            packets=sreq.packets,
            connections=(pair.server.id, pair.client.id),
            capture=pair.server.role,
            ts_ns=sreq.ts_ns,
        )
    ]


def _handshake(pair: Pair) -> list[Finding]:
    out: list[Finding] = []
    # A finding's packets belong to the capture of its first connection: the
    # server leg for handshake findings (the evidence is what the proxy sent).
    ids = (pair.server.id, pair.client.id)
    srole, crole = pair.server.role, pair.client.role
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    if creq is None or sreq is None:
        return out
    packets = (*sreq.packets, *(sresp.packets if sresp else ()))
    status = _status(sresp)
    client_pk = f" (client leg request: packet {creq.packets[0]} {_other(crole)})"

    def add(code: str, detail: str, pk, ts: int) -> None:
        out.append(
            catalogue.finding(code, detail, packets=pk, connections=ids, capture=srole, ts_ns=ts)
        )

    # Over HTTP/2 the server leg says :protocol instead of Upgrade/Connection
    # (RFC 8441 §4): those checks are for an HTTP/1.1 server leg.
    client_wants_ws = (
        b"websocket" in _tokens(creq.headers, b"upgrade")
        and b"upgrade" in _tokens(creq.headers, b"connection")
        and sreq.version != b"HTTP/2"
    )
    if client_wants_ws:
        absent, altered = [], []
        for h, token in (("Upgrade", b"websocket"), ("Connection", b"upgrade")):
            if token in _tokens(sreq.headers, h.encode()):
                continue
            (altered if header_values(sreq.headers, h.encode()) else absent).append(h)
        if absent:
            found = "; ".join(
                f"{h}: {', '.join(v.decode('latin-1') for v in header_values(sreq.headers, h.encode())) or 'absent'}"
                for h in (*absent, *altered)
            )
            add(
                "proxy_upgrade_header_dropped",
                f"expected=Upgrade: websocket and Connection: Upgrade on the server leg, "
                f"found={found}; server answered {status}{client_pk}",
                packets,
                sreq.ts_ns,
            )
        elif altered:
            found = "; ".join(
                f"{h}: {_field(sreq.headers, h)} (client sent {_field(creq.headers, h)})"
                for h in altered
            )
            add(
                "proxy_upgrade_header_altered",
                f"expected=Upgrade: websocket and Connection: Upgrade on the server leg, "
                f"found={found}; server answered {status}{client_pk}",
                packets,
                sreq.ts_ns,
            )
        if sreq.version == b"HTTP/1.0":
            add(
                "proxy_http10_to_backend",
                f"expected=HTTP/1.1 on the server leg, found=HTTP/1.0; server answered {status}",
                sreq.packets,
                sreq.ts_ns,
            )
        if sresp is not None and not _switched(sresp) and not absent and not altered:
            add(
                "proxy_handshake_refused_by_server",
                f"expected=101 from the server, found={status}",
                sresp.packets,
                sresp.ts_ns,
            )
        if sresp is not None and cresp is not None and sresp.status == cresp.status == 101:
            lost = []
            for h, token in (("Upgrade", b"websocket"), ("Connection", b"upgrade")):
                if token in _tokens(sresp.headers, h.encode()) and token not in _tokens(
                    cresp.headers, h.encode()
                ):
                    lost.append(f"{h}: {_field(cresp.headers, h)}")
            if lost:
                add(
                    "proxy_response_upgrade_header_dropped",
                    f"expected=Upgrade: websocket and Connection: Upgrade in the 101 to the "
                    f"client (as the server sent them, packet {sresp.packets[0]}), found="
                    f"{'; '.join(lost)} (client leg 101: packet {cresp.packets[0]} "
                    f"{_other(crole)})",
                    sresp.packets,
                    cresp.ts_ns,
                )
    elif sreq.version == b"HTTP/2" and sresp is not None and not _switched(sresp):
        add(
            "proxy_handshake_refused_by_server",
            f"expected=a 2xx to the extended CONNECT (RFC 8441 §5), found={status}",
            sresp.packets,
            sresp.ts_ns,
        )
    if (
        cresp is not None
        and sresp is not None
        and cresp.status != sresp.status
        and not (_switched(cresp) and _switched(sresp))
    ):
        add(
            "proxy_status_changed",
            f"expected={sresp.status} (server leg), found={cresp.status} (client leg, "
            f"packet {cresp.packets[0]} {_other(crole)})",
            sresp.packets,
            cresp.ts_ns,
        )
    if is_upgrade_request(creq):
        out.extend(_key_and_accept(pair, ids))
        out.extend(_negotiation(pair, ids))
        out.extend(_duplicates(pair, ids))
        if cresp is None and sresp is not None:
            waited = pair.client.tcp.last_ts_ns - creq.ts_ns
            add(
                "proxy_response_not_forwarded",
                f"expected=the server's {_status(sresp)} forwarded to the client, found=no "
                f"response on the client leg: the client waited {waited / 1e6:.1f} ms "
                f"(request at packet {creq.packets[0]} {_other(crole)} until the "
                f"connection's last packet)",
                sresp.packets,
                sresp.ts_ns,
            )
    return out


def _key_and_accept(pair: Pair, ids: tuple[str, str]) -> list[Finding]:
    """RFC 6455 §4.2.2 item 5.4: the accept must be computed from the key the client
    sent; a proxy that changes the key must compute the client's accept itself."""
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    assert creq is not None and sreq is not None
    ckey = header_value(creq.headers, b"sec-websocket-key")
    skey = header_value(sreq.headers, b"sec-websocket-key")
    if ckey is None or skey is None or ckey.strip() == skey.strip():
        return []
    srole, crole = pair.server.role, pair.client.role
    out = [
        catalogue.finding(
            "proxy_key_changed",
            f"expected=Sec-WebSocket-Key {_s(ckey)} (client leg, packet {creq.packets[0]} "
            f"{_other(crole)}), found={_s(skey)} on the server leg",
            packets=sreq.packets,
            connections=ids,
            capture=srole,
            ts_ns=sreq.ts_ns,
        )
    ]
    if cresp is not None and cresp.status == 101:
        got = header_value(cresp.headers, b"sec-websocket-accept")
        want = accept_for(ckey)
        if got is None or got.strip() != want:
            why = ""
            if got is not None and got.strip() == accept_for(skey):
                why = " (the accept for the server-leg key: the server's value relayed unchanged)"
            out.append(
                catalogue.finding(
                    "proxy_accept_not_recomputed",
                    f"expected=Sec-WebSocket-Accept {want.decode()} for the client's key, "
                    f"found={_s(got)}{why} in the 101 to the client (packet "
                    f"{cresp.packets[0]} {_other(crole)})",
                    packets=(*sreq.packets, *(sresp.packets if sresp else ())),
                    connections=ids,
                    capture=srole,
                    ts_ns=cresp.ts_ns,
                )
            )
    return out


def _offered_protocols(headers: Headers) -> list[str]:
    return [v.decode("latin-1") for v in header_values(headers, b"sec-websocket-protocol")]


def _selected_protocol(resp: ResponseHead | None) -> str | None:
    if not _switched(resp):
        return None
    sel = _offered_protocols(resp.headers)
    return sel[0] if sel else None


def _extensions(headers: Headers) -> list[tuple[str, tuple[tuple[str, str | None], ...]]]:
    """Parsed Sec-WebSocket-Extensions, names and parameter names lower-cased,
    parameters sorted (so ordering differences do not count)."""
    vals = [v for n, v in headers if n.lower() == b"sec-websocket-extensions"]
    return [
        (name.lower(), tuple(sorted((k.lower(), v) for k, v in params)))
        for name, params in parse_extensions(vals)
    ]


def _ext_text(exts) -> str:
    if not exts:
        return "none"
    return ", ".join(
        name + "".join(f"; {k}" + (f"={v}" if v is not None else "") for k, v in params)
        for name, params in exts
    )


def _negotiation(pair: Pair, ids: tuple[str, str]) -> list[Finding]:
    """Sub-protocols (RFC 6455 §4.1 item 10, §4.2.2) and extensions (§9.1) offered and
    selected on each leg."""
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    assert creq is not None and sreq is not None
    srole, crole = pair.server.role, pair.client.role
    packets = (*sreq.packets, *(sresp.packets if sresp else ()))
    both_101 = _switched(cresp) and _switched(sresp)
    where = f"client leg request: packet {creq.packets[0]} {_other(crole)}"
    out: list[Finding] = []

    def add(code: str, detail: str) -> None:
        out.append(
            catalogue.finding(
                code, detail, packets=packets, connections=ids, capture=srole, ts_ns=sreq.ts_ns
            )
        )

    coff, soff = _offered_protocols(creq.headers), _offered_protocols(sreq.headers)
    csel, ssel = _selected_protocol(cresp), _selected_protocol(sresp)
    added = [p for p in soff if p not in coff]
    stripped = [p for p in coff if p not in soff]
    if added or (both_101 and csel != ssel):
        add(
            "proxy_subprotocol_changed",
            f"expected=the client's offer {coff} on the server leg and the server's choice "
            f"on the client leg, found=server leg offered {soff}, server selected "
            f"{ssel or 'none'}, client leg got {csel or 'none'} ({where})",
        )
    elif stripped:
        add(
            "proxy_subprotocol_stripped",
            f"expected=Sec-WebSocket-Protocol {', '.join(coff)} on the server leg (as the "
            f"client offered), found={', '.join(soff) or 'absent'}; server answered "
            f"{_status(sresp)} selecting {ssel or 'none'} ({where})",
        )

    cext, sext = _extensions(creq.headers), _extensions(sreq.headers)
    cnames, snames = [n for n, _ in cext], [n for n, _ in sext]
    cneg = sorted(_extensions(cresp.headers)) if cresp is not None and _switched(cresp) else []
    sneg = sorted(_extensions(sresp.headers)) if sresp is not None and _switched(sresp) else []
    added_x = [n for n in snames if n not in cnames]
    stripped_x = [n for n in cnames if n not in snames]
    if added_x or (both_101 and cneg != sneg):
        add(
            "proxy_extension_changed",
            f"expected=the client's offer ({_ext_text(cext)}) on the server leg and the "
            f"server's acceptance on the client leg, found=server leg offered "
            f"{_ext_text(sext)}, server accepted {_ext_text(sneg)}, client leg got "
            f"{_ext_text(cneg)} ({where})",
        )
    elif stripped_x:
        add(
            "proxy_extension_stripped",
            f"expected=Sec-WebSocket-Extensions {_ext_text(cext)} on the server leg (as the "
            f"client offered), found={_ext_text(sext) if sext else 'absent'}: "
            f"{', '.join(dict.fromkeys(stripped_x))} stripped ({where})",
        )
    return out


def _duplication(headers: Headers, name: bytes) -> str | None:
    """How ``name`` is duplicated in ``headers`` (a field that must appear once
    appearing several times, or a list element repeated), or None."""
    fields = [v for n, v in headers if n.lower() == name]
    elems = [e.lower() for e in header_values(headers, name)]
    repeated = sorted({e for e in elems if elems.count(e) > 1})
    if (name in _SINGLE and len(fields) > 1) or repeated:
        shown = " | ".join(v.decode("latin-1") for v in fields)
        return f"{len(fields)} field(s): {shown}"
    return None


def _duplicates(pair: Pair, ids: tuple[str, str]) -> list[Finding]:
    """Handshake fields the proxy duplicated (RFC 9110 §5.3; RFC 6455 §11.3.1: the
    Sec-WebSocket-Key "MUST NOT appear more than once")."""
    creq, cresp = pair.client.exchange
    sreq, sresp = pair.server.exchange
    assert creq is not None and sreq is not None
    out: list[Finding] = []
    checks = [("request", creq, sreq, _DUP_REQUEST, pair.server, pair.client)]
    if cresp is not None and sresp is not None:
        checks.append(("response", sresp, cresp, _DUP_RESPONSE, pair.client, pair.server))
    for what, src, dst, names, dst_conn, src_conn in checks:
        for name in names:
            dup = _duplication(dst.headers, name)
            if dup is None or _duplication(src.headers, name) is not None:
                continue
            title = name.decode().title().replace("Websocket", "WebSocket")
            out.append(
                catalogue.finding(
                    "proxy_header_duplicated",
                    f"header={title} ({what}), expected={_field(src.headers, title)} once as "
                    f"on the {src_conn.role} leg (packet {src.packets[0]} "
                    f"{_other(src_conn.role)}), found={dup} on the {dst_conn.role} leg",
                    packets=dst.packets,
                    connections=(dst_conn.id, src_conn.id),
                    capture=dst_conn.role,
                    ts_ns=dst.ts_ns,
                )
            )
    return out


def _h2_refusal(
    client: ConnectionAnalysis, servers: list[ConnectionAnalysis], theta_ns: int, slack_ns: int
) -> str | None:
    """Why a client-leg handshake has no server-side twin when the proxy forwards to an
    HTTP/2 server that never enabled extended CONNECT (RFC 8441 §3): the server leg
    then holds no request, only the proxy's ``h2_connect_protocol_not_enabled``
    evidence between the client's request and the proxy's refusal."""
    creq = client.exchange[0]
    if creq is None:
        return None
    lo = creq.ts_ns + theta_ns - slack_ns
    hi = client.tcp.last_ts_ns + theta_ns + slack_ns  # HAProxy answers 502 before its reset
    for s in servers:
        for f in s.findings:
            if f.code == "h2_connect_protocol_not_enabled" and f.ts_ns is not None:
                if lo <= f.ts_ns <= hi:
                    at = f"packet {f.packets[0]} {_other(s.role)}" if f.packets else s.id
                    return (
                        f"made by the proxy: the HTTP/2 server it forwards to ({s.id}) did not "
                        f"advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3), so the "
                        f"WebSocket could not be sent as an extended CONNECT ({at})"
                    )
    return None


def _server_leg_text(
    client: ConnectionAnalysis, server: ConnectionAnalysis | None, why_none: str
) -> str:
    """What the server leg shows about a refused client-leg handshake."""
    cresp = client.exchange[1]
    assert cresp is not None
    if server is None:
        return why_none
    sreq, sresp = server.exchange
    role = server.role
    if sresp is not None:
        at = f"packet {sresp.packets[0]} {_other(role)}"
        if sresp.status == cresp.status:
            return f"relayed from the server ({server.id} answered {_status(sresp)}, {at})"
        return (
            f"made by the proxy: the server answered {_status(sresp)} ({server.id}, {at}) "
            f"and the proxy returned {cresp.status}"
        )
    start = sreq.ts_ns if sreq is not None else server.tcp.first_ts_ns
    story = story_of(server)
    end = next((e for e in story.tcp_ends), None)
    if end is None:
        waited = duration_text(server.tcp.last_ts_ns - start)
        return (
            f"made by the proxy: the server-side request ({server.id}) got no response in "
            f"{waited} (until the capture's last packet of that connection)"
        )
    after = duration_text(end.ts_ns - start)
    at = f"packet {end.packet} {_other(role)}"
    if end.sender == "server" and end.kind == RST:
        return (
            f"made by the proxy: the server reset the server-side connection ({server.id}, "
            f"{at}) {after} after the request, without a response"
        )
    if end.sender == "server":
        return (
            f"made by the proxy: the server closed the server-side connection ({server.id}, "
            f"{at}) {after} after the request, without a response"
        )
    return (
        f"made by the proxy: it gave up on the server-side connection ({server.id}, "
        f"{end.label()} at {at}) {after} after the request with no response from the "
        f"server (a backend timeout)"
    )


def _status_finding(
    client: ConnectionAnalysis, server: ConnectionAnalysis | None, why_none: str
) -> Finding | None:
    """``handshake_status_NNN`` for a client-leg Upgrade request refused with one of
    :data:`STATUS_CODES`, naming who produced the status."""
    creq, cresp = client.exchange
    if creq is None or cresp is None or not is_upgrade_request(creq):
        return None
    code = STATUS_CODES.get(cresp.status)
    if code is None:
        return None
    extra = ""
    versions = [v for n, v in cresp.headers if n.lower() == b"sec-websocket-version"]
    if cresp.status == 426 and versions:
        extra = f" (supported Sec-WebSocket-Version: {b', '.join(versions).decode('latin-1')})"
    return catalogue.finding(
        code,
        f"expected=101 Switching Protocols, found={_status(cresp)}{extra} on the client leg "
        f"({_STATUS_MEANING[cresp.status]}); "
        f"{_server_leg_text(client, server, why_none)}",
        packets=cresp.packets,
        direction=S2C,
        connections=(client.id, server.id) if server is not None else (client.id,),
        capture=client.role,
        ts_ns=cresp.ts_ns,
    )


# --- messages --------------------------------------------------------------------------


def idle_timeout_setting(idle_ns: int) -> str:
    """Name the proxy setting an idle timeout of ``idle_ns`` matches: "matches nginx
    proxy_read_timeout default 60 s (also ...)" when within max(1 s, 5 %) of one of
    :data:`KNOWN_IDLE_TIMEOUTS`, else "an idle timeout of about N s"."""
    secs = idle_ns / 1e9
    hits = [label for d, label in KNOWN_IDLE_TIMEOUTS if abs(secs - d) <= max(1.0, 0.05 * d)]
    if hits:
        also = f" (also: {'; '.join(hits[1:])})" if len(hits) > 1 else ""
        return f"matches {hits[0]}{also}"
    return (
        f"an idle timeout of about {secs:.3g} s (nginx proxy_read_timeout, HAProxy timeout "
        f"tunnel, F5 idle timeout, Envoy idle_timeout/stream_idle_timeout, Apache ProxyTimeout)"
    )


def _close(pair: Pair, theta: int, slack: int, capture_end: dict[str, int]) -> list[Finding]:
    """Close findings of one pair of WebSocket legs (see the module docstring)."""
    c, s = pair.client, pair.server
    if not (c.websocket and s.websocket):
        return []
    cs, ss = story_of(c), story_of(s)
    out: list[Finding] = []
    out.extend(_idle_timeout(pair, cs, ss, theta))
    out.extend(_backend_vanished(pair, cs, ss, theta, slack))
    out.extend(_not_propagated(pair, cs, ss, theta, capture_end))
    out.extend(_close_code_changed(pair, cs, ss, theta, slack))
    return out


def _who(leg: str, sender: str) -> str:
    """``"client"``, ``"proxy"`` or ``"server"``: the sender of an event on ``leg``
    (``"client"``: client ↔ proxy, ``"server"``: proxy ↔ server)."""
    return sender if leg == sender else "proxy"


def _at(e: CloseEvent, leg: str, role: str) -> str:
    return (
        f"{e.label()} from the {_who(leg, e.sender)} {e.endpoint} at packet {e.packet} "
        f"{_other(role)}"
    )


def proxy_idle_ns(client: CloseStory, server: CloseStory, clock_offset_ns: int = 0) -> int | None:
    """The silence (ns) after which the proxy closed both legs itself, or None.

    Not None only when the first close event of the client leg comes from its server
    endpoint (the proxy's listener) and that of the server leg from its client endpoint
    (the proxy's source): the time from the last message or HTTP head on either leg
    to the proxy's first close event, on the client capture's clock (server-leg times
    minus ``clock_offset_ns``)."""
    ce, se = client.first_event, server.first_event
    if ce is None or se is None or ce.sender != "server" or se.sender != "client":
        return None
    acts = [client.last_activity_ts_ns]
    if server.last_activity_ts_ns is not None:
        acts.append(server.last_activity_ts_ns - clock_offset_ns)
    known = [a for a in acts if a is not None]
    if not known:
        return None
    return max(0, min(ce.ts_ns, se.ts_ns - clock_offset_ns) - max(known))


def _idle_timeout(pair: Pair, cs: CloseStory, ss: CloseStory, theta: int) -> list[Finding]:
    idle = proxy_idle_ns(cs, ss, theta)
    if idle is None or idle < MIN_IDLE_NS:
        return []
    ce, se = cs.first_event, ss.first_event
    assert ce is not None and se is not None
    gap = se.ts_ns - theta - ce.ts_ns
    order = (
        f"{duration_text(-gap)} after the server leg"
        if gap <= 0
        else f"{duration_text(gap)} before the server leg"
    )
    return [
        catalogue.finding(
            "proxy_idle_timeout",
            f"expected=the WebSocket to stay open or end with a close frame from an endpoint, "
            f"found=the proxy closed both legs after {duration_text(idle)} of silence with no "
            f"close frame from either end (client leg: {ce.label()} from the proxy "
            f"{ce.endpoint} at packet {ce.packet}, {order}; server leg: {se.label()} from "
            f"the proxy {se.endpoint} at packet {se.packet} {_other(pair.server.role)}): "
            f"{idle_timeout_setting(idle)}",
            packets=[ce.packet] if ce.packet else [],
            direction=S2C,
            connections=(pair.client.id, pair.server.id),
            capture=pair.client.role,
            ts_ns=ce.ts_ns,
        )
    ]


def _backend_vanished(
    pair: Pair, cs: CloseStory, ss: CloseStory, theta: int, slack: int
) -> list[Finding]:
    se, ce = ss.first_event, cs.first_event
    if se is None or se.sender != "server" or se.kind not in (FIN, RST):
        return []
    if ce is None or ce.sender != "server":  # the proxy's event must open the client leg's close
        return []
    se_t = se.ts_ns - theta
    if ce.ts_ns < se_t - slack:
        return []
    delay = ce.ts_ns - se_t
    when = f"{duration_text(delay)} later" if delay >= 0 else "at the same time"
    return [
        catalogue.finding(
            "proxy_backend_vanished",
            f"expected=a close frame from the server before its TCP close (RFC 6455 §7.1.1), "
            f"found={se.label()} from the server {se.endpoint} (packet {se.packet}) with "
            f"no close frame, then the proxy closed the client leg with {ce.label()} "
            f"(packet {ce.packet} {_other(pair.client.role)}) {when}; the client reports "
            f"{cs.client_code}",
            packets=[se.packet] if se.packet else [],
            direction=se.direction,
            connections=(pair.server.id, pair.client.id),
            capture=pair.server.role,
            ts_ns=se.ts_ns,
        )
    ]


def _not_propagated(
    pair: Pair, cs: CloseStory, ss: CloseStory, theta: int, capture_end: dict[str, int]
) -> list[Finding]:
    ce, se = cs.first_event, ss.first_event
    legs = {"client": (pair.client, cs, ce, 0), "server": (pair.server, ss, se, theta)}
    if ce is not None and se is not None:
        first, late = ("client", "server") if ce.ts_ns <= se.ts_ns - theta else ("server", "client")
        fconn, _fs, fe, fshift = legs[first]
        lconn, _ls, le, lshift = legs[late]
        assert fe is not None and le is not None
        gap = (le.ts_ns - lshift) - (fe.ts_ns - fshift)
        if gap <= PROPAGATION_LIMIT_NS:
            return []
        found = f"the {late} leg's first close event {duration_text(gap)} later ({_at(le, late, lconn.role)})"
    elif ce is not None or se is not None:
        first, late = ("client", "server") if ce is not None else ("server", "client")
        fconn, _fs, fe, fshift = legs[first]
        lconn, _ls, _le, lshift = legs[late]
        assert fe is not None
        end = capture_end.get(lconn.role, lconn.tcp.last_ts_ns)
        open_for = (end - lshift) - (fe.ts_ns - fshift)
        if open_for <= PROPAGATION_LIMIT_NS:
            return []  # the other capture ended too soon to tell
        found = (
            f"the {late} leg still open {duration_text(open_for)} later, at the end of the "
            f"{lconn.role} capture"
        )
    else:
        return []
    return [
        catalogue.finding(
            "proxy_close_not_propagated",
            f"expected=the {late} leg closed soon after the {first} leg "
            f"({fe.label()} from the {_who(first, fe.sender)} {fe.endpoint} at packet "
            f"{fe.packet}), found={found}",
            packets=[fe.packet] if fe.packet else [],
            direction=fe.direction,
            connections=(fconn.id, lconn.id),
            capture=fconn.role,
            ts_ns=fe.ts_ns,
        )
    ]


def _close_code_changed(
    pair: Pair, cs: CloseStory, ss: CloseStory, theta: int, slack: int
) -> list[Finding]:
    out: list[Finding] = []
    # (source close frame, its leg, destination story, destination leg, proxy's sender
    # name on the destination leg, shift from source clock to destination clock)
    for src, sconn, dst_story, dconn, proxy, shift in (
        (cs.client_close, pair.client, ss, pair.server, "client", theta),
        (ss.server_close, pair.server, cs, pair.client, "server", -theta),
    ):
        if src is None:
            continue
        dst = dst_story.close_from(proxy)
        src_at = f"{src.label()} at packet {src.packet} {_other(sconn.role)}"
        if dst is not None:
            if (dst.code, dst.reason) == (src.code, src.reason):
                continue
            found = f"{dst.label()} (packet {dst.packet})"
            evidence = dst
        else:
            end = next((e for e in dst_story.tcp_ends if e.sender == proxy), None)
            if end is None or end.ts_ns < src.ts_ns + shift - slack:
                continue  # not closed by the proxy, or closed before the close frame came
            found = (
                f"no close frame: the proxy ended the {dconn.role} leg with {end.label()} "
                f"(packet {end.packet}), so the {'server' if proxy == 'client' else 'client'} "
                f"reports 1006"
            )
            evidence = end
        out.append(
            catalogue.finding(
                "proxy_close_code_changed",
                f"expected={src.label()} on the {dconn.role} leg as the {src.sender} sent it "
                f"on the {sconn.role} leg ({src_at}), found={found}",
                packets=[evidence.packet] if evidence.packet else [],
                direction=src.direction,
                connections=(dconn.id, sconn.id),
                capture=dconn.role,
                ts_ns=evidence.ts_ns,
            )
        )
    return out


# --- all -------------------------------------------------------------------------------


def _capture_ends(correlation: Correlation) -> dict[str, int]:
    """Last packet time per capture role over every connection of the correlation."""
    ends: dict[str, int] = {}
    conns = [x for p in correlation.pairs for x in (p.client, p.server)]
    conns += correlation.unpaired_client + correlation.unpaired_server
    for conn in conns:
        ends[conn.role] = max(ends.get(conn.role, conn.tcp.last_ts_ns), conn.tcp.last_ts_ns)
    return ends


def diagnose(correlation: Correlation, *, server_capture_given: bool = True) -> list[Finding]:
    """All findings from the correlation: per pair (handshake, messages, close), plus
    client-side WebSocket connections with no server-side twin, and the refusal
    status of those (``handshake_status_NNN``) when a server capture was given."""
    out: list[Finding] = list(correlation.findings)
    theta = correlation.clock_offset
    theta_ns = theta.estimate_ns if theta is not None else 0
    slack = ORDER_SLACK_NS
    if theta is not None and not theta.imposed and theta.low_ns is not None:
        if theta.high_ns is not None and theta.consistent:
            slack += (theta.high_ns - theta.low_ns) // 2
    ends = _capture_ends(correlation)
    for p in correlation.pairs:
        out.extend(
            diagnose_pair(p, clock_offset_ns=theta_ns, clock_slack_ns=slack, capture_end_ns=ends)
        )
    out.extend(fan_out_findings(fan_out(correlation)))  # one server push, many clients
    if server_capture_given:
        ambiguous = {id(c) for c in correlation.ambiguous_client}
        for c in correlation.unpaired_client:
            hs = c.handshake
            if hs is None:
                continue
            h2_refusal = _h2_refusal(c, correlation.unpaired_server, theta_ns, slack)
            if id(c) in ambiguous:  # pair_ambiguous says it already
                why = "server leg not identified (several candidates: see pair_ambiguous)"
            elif h2_refusal is not None:
                why = h2_refusal
            else:
                why = (
                    "no server-side connection for this request in the server capture: the "
                    "proxy answered by itself (it could not reach the backend, or refused "
                    "the request), or the server capture does not cover that backend"
                )
                out.append(
                    catalogue.finding(
                        "proxy_no_server_connection",
                        f"expected=a server-side connection for "
                        f"{hs.request.method.decode('latin-1')} "
                        f"{hs.request.target.decode('latin-1')[:120]}, found=none that matches",
                        packets=hs.request.packets,
                        connections=(c.id,),
                        capture=c.role,
                        ts_ns=hs.request.ts_ns,
                    )
                )
            f = _status_finding(c, None, why)
            if f is not None:
                out.append(f)
    return out
