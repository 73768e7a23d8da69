"""Redaction of credentials in everything a report shows.

Captures are full of credentials. Reports replace them by a marker that keeps the
length and a short hash, so equal values can still be compared across the two
legs: ``«redacted 32B #1a2b3c4d»``. Covered: values of Authorization,
Proxy-Authorization, Cookie, Set-Cookie and API-key/token-like header fields,
bearer tokens carried in Sec-WebSocket-Protocol (Kubernetes
``base64url.bearer.authorization.k8s.io.<token>``), and credential query
parameters (``access_token``, ``token``, ``key``, ``sig``, ...).
"""

from __future__ import annotations

import hashlib
import re

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "x-csrf-token",
    }
)
_SECRET_NAME = re.compile(r"(api[-_]?key|token|secret|password|passwd|session)", re.I)
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "token",
        "key",
        "sig",
        "signature",
        "password",
        "passwd",
        "secret",
        "api_key",
        "apikey",
        "auth",
        "jwt",
        "id_token",
        "refresh_token",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "client_secret",
        "code",
    }
)
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")
_K8S_BEARER = re.compile(r"(base64url\.bearer\.authorization\.k8s\.io\.)([A-Za-z0-9_\-=.]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|digest|negotiate)\s+([^\s,]+)")


def marker(secret: str) -> str:
    """The redaction marker for ``secret``: its length in bytes and a short hash."""
    raw = secret.encode("utf-8", "surrogateescape")
    return f"«redacted {len(raw)}B #{hashlib.sha256(raw).hexdigest()[:8]}»"


def redact_header(name: str, value: str | None) -> str | None:
    """The value to show for header ``name``; credentials replaced by a marker."""
    if value is None:
        return None
    lname = name.lower()
    if lname in SECRET_HEADERS or (_SECRET_NAME.search(lname) and lname != "sec-websocket-key"):
        return marker(value)
    if lname == "sec-websocket-protocol":
        return _K8S_BEARER.sub(lambda m: m.group(1) + marker(m.group(2)), value)
    value = _BEARER.sub(lambda m: f"{m.group(1)} {marker(m.group(2))}", value)
    if lname in ("referer", "location", "origin", "content-location", ":path"):  # RFC 9113 §8.3.1
        return redact_target(value)
    return value


def redact_target(target: str | None) -> str | None:
    """A request-target with credential query parameters replaced by markers."""
    if target is None:
        return None

    def sub(m: re.Match[str]) -> str:
        if m.group(2).lower() in SECRET_PARAMS and m.group(3):
            return f"{m.group(1)}{m.group(2)}={marker(m.group(3))}"
        return m.group(0)

    return _QUERY_PARAM.sub(sub, target)


class Redactor:
    """Applies redaction when ``enabled`` (the default everywhere); a no-op when the
    user asked for ``--no-redact``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def header(self, name: str, value: str | None) -> str | None:
        return redact_header(name, value) if self.enabled else value

    def target(self, target: str | None) -> str | None:
        return redact_target(target) if self.enabled else target

    def text(self, text: str | None) -> str | None:
        """Free text (finding details, previews): bearer tokens and query secrets."""
        if text is None or not self.enabled:
            return text
        text = _BEARER.sub(lambda m: f"{m.group(1)} {marker(m.group(2))}", text)
        text = _K8S_BEARER.sub(lambda m: m.group(1) + marker(m.group(2)), text)
        return redact_target(text)
