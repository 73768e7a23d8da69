"""The WebSocket opening handshake, RFC 6455 §4 (extension negotiation §9.1, RFC 7692).

:func:`check_handshake` takes the Upgrade request head and its response head (or None
when no response was seen) as parsed by :mod:`wsanalyze.http1` and returns a
:class:`Handshake`: what was offered and negotiated, whether the connection went on as
a WebSocket, and the findings (codes ``handshake_*`` in :mod:`wsanalyze.catalogue`).

The checks are an observer's: every deviation is recorded and the verdict follows what
the endpoints did, not what a strict client would have done. A 101 answering a
WebSocket request switches the connection (RFC 9110 §15.2.2: the server switches
"immediately after the empty line that terminates the 101 response"), so
``websocket`` is True for it even with a wrong Sec-WebSocket-Accept or a missing
``Connection: Upgrade`` (a proxy stripping hop-by-hop fields from the 101); only a 101
whose Upgrade field names another protocol (``h2c``) is not a WebSocket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from .catalogue import finding
from .http1 import upgrade_requested
from .model import (
    Direction,
    Finding,
    Headers,
    RequestHead,
    ResponseHead,
    header_value,
    header_values,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 §1.3 / §4.2.2: the globally unique identifier appended to the key."""

ExtensionParams = list[tuple[str, str | None]]
Extension = tuple[str, tuple[tuple[str, str | None], ...]]
"""One negotiated extension as stored in :class:`Handshake`: ``(name, ((param, value
or None), ...))``, names and values as sent (latin-1 decoded)."""

_C2S, _S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


def accept_for(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key``: base64(SHA-1(key + GUID)), RFC 6455 §4.2.2
    item 5.4. ``key`` is taken as sent, minus surrounding whitespace (the RFC: "the
    base64-encoded ... version minus any leading and trailing whitespace")."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def is_upgrade_request(req: RequestHead) -> bool:
    """Whether ``req`` attempts a WebSocket opening handshake: an ``Upgrade`` field
    listing ``websocket`` (case-insensitive, comma lists), or a ``Sec-WebSocket-Key``
    field (a handshake whose Upgrade field a proxy dropped still counts as attempted).
    Same test as :func:`wsanalyze.http1.upgrade_requested`."""
    return upgrade_requested(req)


def _split_outside_quotes(value: bytes, sep: int) -> list[bytes]:
    """Split ``value`` on the byte ``sep`` where it is not inside a quoted-string
    (RFC 9110 §5.6.4, backslash escapes honoured)."""
    parts: list[bytes] = []
    start = 0
    quoted = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == 0x5C:  # backslash: quoted-pair
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == sep:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def _unquote(v: bytes) -> bytes:
    """The content of a quoted-string, escapes removed; other values unchanged."""
    if len(v) >= 2 and v[0] == 0x22 and v[-1] == 0x22:
        return _ESCAPE.sub(rb"\1", v[1:-1])
    if v[:1] == b'"':  # unterminated: keep what there is
        return _ESCAPE.sub(rb"\1", v[1:])
    return v


def parse_extensions(values: list[bytes]) -> list[tuple[str, ExtensionParams]]:
    """Parse ``Sec-WebSocket-Extensions`` field values, RFC 6455 §9.1::

        extension-list = 1#extension
        extension = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    ``values`` are the values of every such field in order (repeated fields combine as
    one list, RFC 9110 §5.3). Returns ``[(name, [(param, value or None), ...]), ...]``
    in order, names and values as sent (latin-1 decoded, OWS stripped, quoted-strings
    unquoted). Lenient: empty list elements and empty parameters are skipped, never
    raises.

    >>> parse_extensions([b"permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"])
    [('permessage-deflate', [('client_max_window_bits', None)]), ('x-webkit-deflate-frame', [])]
    """
    out: list[tuple[str, ExtensionParams]] = []
    for value in values:
        for element in _split_outside_quotes(bytes(value), 0x2C):  # ","
            parts = _split_outside_quotes(element, 0x3B)  # ";"
            name = parts[0].strip(b" \t")
            if not name:
                continue
            params: ExtensionParams = []
            for part in parts[1:]:
                part = part.strip(b" \t")
                if not part:
                    continue
                k, eq, v = part.partition(b"=")
                k = k.strip(b" \t")
                if not eq:
                    params.append((k.decode("latin-1"), None))
                else:
                    params.append(
                        (k.decode("latin-1"), _unquote(v.strip(b" \t")).decode("latin-1"))
                    )
            out.append((name.decode("latin-1"), params))
    return out


@dataclass(frozen=True, slots=True)
class Handshake:
    """One WebSocket opening handshake (RFC 6455 §4) as seen on one leg.

    ``websocket``: the connection switched to WebSocket (a 101 to a WebSocket request,
    see the module docstring). ``key``/``accept``/``version``: the
    ``Sec-WebSocket-Key``, ``Sec-WebSocket-Accept`` and ``Sec-WebSocket-Version``
    values as sent (None when absent). ``accept_ok``: whether the accept value is
    :func:`accept_for` the key (None without a 101 or without a key).
    ``subprotocols_offered``/``subprotocol``: ``Sec-WebSocket-Protocol`` of the request
    (in order) and of the 101 (None if none selected). ``extensions_offered`` /
    ``extensions``: ``Sec-WebSocket-Extensions`` of the request and of the 101, parsed
    by :func:`parse_extensions`. ``deflate``: permessage-deflate (RFC 7692) accepted,
    so RSV1 is in use. ``findings``: ``handshake_*`` findings, request ones first.
    """

    request: RequestHead
    response: ResponseHead | None
    websocket: bool
    key: bytes | None
    accept: bytes | None
    accept_ok: bool | None
    version: bytes | None
    subprotocols_offered: tuple[str, ...]
    subprotocol: str | None
    extensions_offered: tuple[Extension, ...]
    extensions: tuple[Extension, ...]
    deflate: bool
    findings: tuple[Finding, ...]


def _field_values(headers: Headers, name: bytes) -> list[bytes]:
    """Values of every field ``name`` (case-insensitive), not split on commas."""
    lname = name.lower()
    return [v for n, v in headers if n.lower() == lname]


def _has_token(headers: Headers, name: bytes, token: bytes) -> bool:
    """Whether a comma-separated field lists ``token`` (case-insensitive; a
    ``name/version`` protocol counts by its name, RFC 9110 §7.8)."""
    return any(p.split(b"/", 1)[0].strip().lower() == token for p in header_values(headers, name))


def _show(values: list[bytes]) -> str:
    return "absent" if not values else repr(b", ".join(values))[1:]


def _freeze(exts: list[tuple[str, ExtensionParams]]) -> tuple[Extension, ...]:
    return tuple((name, tuple(params)) for name, params in exts)


def _key_problem(keys: list[bytes]) -> str | None:
    """RFC 6455 §4.1 item 7: "a nonce consisting of a randomly selected 16-byte value
    that has been base64-encoded"; §11.3.1: the field "MUST NOT appear more than once
    in an HTTP request"."""
    if not keys:
        return "absent"
    if len(keys) > 1:
        return f"{len(keys)} Sec-WebSocket-Key fields"
    key = keys[0]
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(key) != 24 or len(raw) != 16:
        return f"{key!r} (not 16 bytes in base64)"
    return None


def _http11_or_later(version: bytes) -> bool:
    try:
        major, minor = int(version[5:6]), int(version[7:8])
    except ValueError:
        return False
    return (major, minor) >= (1, 1)


def is_extended_connect(req: RequestHead) -> bool:
    """Whether an HTTP/2 request (version ``HTTP/2``, pseudo-header fields among its
    headers) attempts WebSocket over HTTP/2: ``:method`` CONNECT with ``:protocol``
    websocket (RFC 8441 §4, §5; the protocol token compared case-insensitively)."""
    return (
        header_value(req.headers, b":method") == b"CONNECT"
        and (header_value(req.headers, b":protocol") or b"").lower() == b"websocket"
    )


_CONNECTION_SPECIFIC = (
    b"connection",
    b"upgrade",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
)


def _connection_specific(headers: Headers) -> str:
    """The connection-specific fields an HTTP/2 message carries, RFC 9113 §8.2.2 (``te``
    only with the value ``trailers``), as ``"Connection, Upgrade"``; empty if none."""
    bad = [
        n.decode("latin-1")
        for n, v in headers
        if n.lower() in _CONNECTION_SPECIFIC
        or (n.lower() == b"te" and v.strip().lower() != b"trailers")
    ]
    return ", ".join(dict.fromkeys(bad))


def _check_extended_connect(request: RequestHead, report) -> None:
    """RFC 8441 §4: an extended CONNECT carries ``:scheme``, ``:path`` and (RFC 9113
    §8.5) ``:authority``; RFC 9113 §8.2.2: no connection-specific fields."""
    missing = [
        p.decode()
        for p in (b":scheme", b":path", b":authority")
        if header_value(request.headers, p) is None
    ]
    if missing:
        report(
            "h2_bad_extended_connect",
            f"expected=:scheme, :path and :authority (RFC 8441 §4), found={', '.join(missing)} missing",
        )
    bad = _connection_specific(request.headers)
    if bad:
        report(
            "h2_connection_specific_header",
            f"expected=no connection-specific fields (RFC 9113 §8.2.2), found={bad}",
        )


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 §5.6.2 token."""


def check_handshake(request: RequestHead, response: ResponseHead | None) -> Handshake:
    """Check an opening handshake, RFC 6455 §4.1 (client requirements) and §4.2.2
    (server response). Never raises.

    For a request that does not attempt a WebSocket handshake
    (:func:`is_upgrade_request` False) nothing is checked: ``websocket`` is False and
    there are no findings. Findings, each once:

    - ``handshake_bad_request_line``: "The method of the request MUST be GET, and the
      HTTP version MUST be at least 1.1" (§4.1 item 2).
    - ``handshake_missing_upgrade``: no ``Upgrade: websocket`` (item 5) or no
      ``Connection: Upgrade`` (item 6); one finding per missing field.
    - ``handshake_missing_key``: ``Sec-WebSocket-Key`` absent, repeated or not 16
      bytes base64 (item 7).
    - ``handshake_bad_version``: ``Sec-WebSocket-Version`` absent or not 13 (item 9).
    - ``handshake_refused``: the response is not 101 (§4.1 "If the status code
      received from the server is not 101, the client handles the response per HTTP").
    - ``handshake_incomplete_101``: the 101 lacks ``Upgrade: websocket`` or
      ``Connection: Upgrade`` (§4.2.2 items 5.2, 5.3); one per missing field.
    - ``handshake_wrong_accept``: ``Sec-WebSocket-Accept`` absent or not
      base64(SHA-1(key + GUID)) (§4.2.2 item 5.4).
    - ``handshake_subprotocol_not_offered``: the 101 selects a sub-protocol the client
      did not list, or several (§4.1 "indicates the use of a subprotocol that was not
      present in the client's handshake").
    - ``handshake_extension_not_offered``: the 101 accepts an extension the client did
      not list (§9.1 "the server MUST NOT respond with an extension that was not
      offered"; names compared case-insensitively).

    Request findings carry the request's packets, direction client-to-server, offset
    and time; response findings carry both heads' packets and the response's
    direction, offset and time.
    """
    rh = request.headers
    keys = _field_values(rh, b"sec-websocket-key")
    key = keys[0] if keys else None
    versions = _field_values(rh, b"sec-websocket-version")
    version = versions[0] if versions else None
    offered_protocols = tuple(
        v.decode("latin-1") for v in header_values(rh, b"sec-websocket-protocol")
    )
    offered_exts = _freeze(parse_extensions(_field_values(rh, b"sec-websocket-extensions")))
    h2 = request.version == b"HTTP/2"
    attempted = is_extended_connect(request) if h2 else is_upgrade_request(request)
    findings: list[Finding] = []

    def req_finding(code: str, detail: str) -> None:
        findings.append(
            finding(
                code,
                detail,
                packets=request.packets,
                direction=_C2S,
                offset=request.offset,
                ts_ns=request.ts_ns,
            )
        )

    if attempted:
        # RFC 6455 §4.1: each sub-protocol is a token (RFC 9110 §5.6.2 tchar only).
        bad = [p for p in offered_protocols if not _TOKEN.fullmatch(p)]
        if bad:
            req_finding(
                "handshake_bad_subprotocol_token",
                f"expected=tokens, found={len(bad)} value(s) such as {bad[0][:60]!r}",
            )

    def resp_finding(code: str, detail: str) -> None:
        assert response is not None
        findings.append(
            finding(
                code,
                detail,
                packets=(*request.packets, *response.packets),
                direction=_S2C,
                offset=response.offset,
                ts_ns=response.ts_ns,
            )
        )

    if attempted and h2:
        _check_extended_connect(request, req_finding)
        if len(versions) != 1 or versions[0].strip() != b"13":
            req_finding(
                "handshake_bad_version",
                f"expected=Sec-WebSocket-Version 13, found={_show(versions)}",
            )
    elif attempted:
        if request.method != b"GET" or not _http11_or_later(request.version):
            req_finding(
                "handshake_bad_request_line",
                f"expected=GET with HTTP/1.1 or later, found={request.method.decode('latin-1')} "
                f"{request.version.decode('latin-1')}",
            )
        if not _has_token(rh, b"upgrade", b"websocket"):
            req_finding(
                "handshake_missing_upgrade",
                f"header=Upgrade, expected=websocket, found={_show(_field_values(rh, b'upgrade'))}",
            )
        if not _has_token(rh, b"connection", b"upgrade"):
            req_finding(
                "handshake_missing_upgrade",
                f"header=Connection, expected=Upgrade, "
                f"found={_show(_field_values(rh, b'connection'))}",
            )
        problem = _key_problem(keys)
        if problem is not None:
            req_finding(
                "handshake_missing_key",
                f"expected=one Sec-WebSocket-Key of 16 bytes in base64, found={problem}",
            )
        if len(versions) != 1 or versions[0].strip() != b"13":
            req_finding(
                "handshake_bad_version",
                f"expected=Sec-WebSocket-Version 13, found={_show(versions)}",
            )

    websocket = False
    accept: bytes | None = None
    accept_ok: bool | None = None
    subprotocol: str | None = None
    extensions: tuple[Extension, ...] = ()
    deflate = False
    if response is not None:
        sh = response.headers
        accepts = _field_values(sh, b"sec-websocket-accept")
        accept = accepts[0] if accepts else None
        success = 200 <= response.status < 300 if h2 else response.status == 101
        if attempted and not success:
            detail = (
                f"expected={'a 2xx (RFC 8441 §5)' if h2 else '101 Switching Protocols'}, "
                f"found={response.status} {response.reason.decode('latin-1')}".rstrip()
            )
            supported = _field_values(sh, b"sec-websocket-version")
            if supported:  # §4.4: a 426 lists the versions the server supports
                detail += f" (server Sec-WebSocket-Version: {_show(supported)})"
            resp_finding("handshake_refused", detail)
        elif attempted and h2:
            # RFC 8441 §5: a 2xx opens the tunnel; Sec-WebSocket-Accept is not used.
            websocket = True
            bad = _connection_specific(sh)
            if bad:
                resp_finding(
                    "h2_connection_specific_header",
                    f"expected=no connection-specific fields (RFC 9113 §8.2.2), found={bad}",
                )
        elif attempted:
            upgrade_values = header_values(sh, b"upgrade")
            has_ws = _has_token(sh, b"upgrade", b"websocket")
            websocket = has_ws or not upgrade_values
            if not has_ws:
                resp_finding(
                    "handshake_incomplete_101",
                    f"header=Upgrade, expected=websocket, found={_show(_field_values(sh, b'upgrade'))}",
                )
            if not _has_token(sh, b"connection", b"upgrade"):
                resp_finding(
                    "handshake_incomplete_101",
                    f"header=Connection, expected=Upgrade, "
                    f"found={_show(_field_values(sh, b'connection'))}",
                )
            if key is not None:
                expected = accept_for(key)
                accept_ok = len(accepts) == 1 and accept == expected
                if not accept_ok:
                    resp_finding(
                        "handshake_wrong_accept",
                        f"expected={expected.decode('latin-1')}, found={_show(accepts)}",
                    )
        if attempted and success:  # RFC 6455 §4.2.2 items 5.5-5.6, §9.1 (RFC 8441 §5: as in 6455)
            selected = [v.decode("latin-1") for v in header_values(sh, b"sec-websocket-protocol")]
            if selected:
                subprotocol = selected[0]
                if len(selected) > 1 or subprotocol not in offered_protocols:
                    resp_finding(
                        "handshake_subprotocol_not_offered",
                        f"expected=one of {list(offered_protocols)}, found={selected}",
                    )
            extensions = _freeze(parse_extensions(_field_values(sh, b"sec-websocket-extensions")))
            offered_names = {name.lower() for name, _ in offered_exts}
            for name, _params in extensions:
                if name.lower() not in offered_names:
                    resp_finding(
                        "handshake_extension_not_offered",
                        f"expected=one of {sorted(offered_names)}, found={name}",
                    )
            deflate = any(name.lower() == "permessage-deflate" for name, _ in extensions)

    return Handshake(
        request=request,
        response=response,
        websocket=websocket,
        key=key,
        accept=accept,
        accept_ok=accept_ok,
        version=version,
        subprotocols_offered=offered_protocols,
        subprotocol=subprotocol,
        extensions_offered=offered_exts,
        extensions=extensions,
        deflate=deflate,
        findings=tuple(findings),
    )
