"""Helpers shared by the sub-protocol decoders: bounded text, bounded JSON parsing,
and per-connection finding limits. Nothing here raises on traffic."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from ..catalogue import finding
from ..model import Finding, Message, Opcode
from . import Decoded  # defined before the package imports its decoder modules

TEXT_LIMIT = 4096
"""Characters of transcript text kept per message (the rest is cut, ``…`` appended)."""

JSON_LIMIT = 1024 * 1024
"""Bytes of a message parsed as JSON at most; larger messages are not parsed."""

FINDING_LIMIT = 10
"""Findings of one code listed per connection; the next one is replaced by a single
``subprotocol_findings_suppressed`` finding and later ones are dropped."""


def bounded_text(data: bytes, limit: int = TEXT_LIMIT) -> str:
    """``data`` as UTF-8 (replacement characters for invalid bytes), at most
    ``limit`` characters, ``…`` appended when cut."""
    if len(data) > 4 * limit:
        data = data[: 4 * limit]  # at most 4 bytes per character
        cut = True
    else:
        cut = False
    text = data.decode("utf-8", "replace")
    if len(text) > limit:
        return text[:limit] + "…"
    return text + "…" if cut else text


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, ``…`` appended when cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def load_json(data: bytes, limit: int = JSON_LIMIT) -> tuple[Any, str | None]:
    """Parse ``data`` as JSON (RFC 8259). Returns ``(value, None)``, or ``(None,
    reason)`` when it is not JSON, too deep (recursion) or larger than ``limit``
    bytes. Never raises."""
    if len(data) > limit:
        return None, f"{len(data)} bytes, larger than the {limit}-byte parse limit"
    try:
        return json.loads(data), None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        return None, type(exc).__name__
    except RecursionError:
        return None, "nested too deeply"


def payload_of(msg: Message, payload: bytes) -> tuple[bytes, bool]:
    """The bytes to decode and whether they are the whole message: the payload, or
    the 256-byte preview when the payload was not kept (larger than the keep limit)
    or a gap cut the message."""
    if not payload and msg.payload_len > 0:
        return msg.preview, False
    return payload, msg.complete and len(payload) >= msg.payload_len


class Findings:
    """Per-connection finding factory with a per-code limit (:data:`FINDING_LIMIT`):
    hostile traffic cannot produce millions of findings."""

    __slots__ = ("subprotocol", "counts", "limit")

    def __init__(self, subprotocol: str, limit: int = FINDING_LIMIT) -> None:
        self.subprotocol = subprotocol
        self.counts: dict[str, int] = {}
        self.limit = limit

    def __call__(self, code: str, detail: str, msg: Message) -> tuple[Finding, ...]:
        """A finding ``code`` located at ``msg`` (its packets, direction, stream
        offset and time), or a suppression notice, or nothing once over the limit."""
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        where = {
            "packets": (msg.first_packet, msg.last_packet),
            "direction": msg.direction,
            "offset": msg.offset,
            "ts_ns": msg.ts_ns,
        }
        if n <= self.limit:
            return (finding(code, f"subprotocol={self.subprotocol}, {detail}", **where),)
        if n == self.limit + 1:
            return (
                finding(
                    "subprotocol_findings_suppressed",
                    f"subprotocol={self.subprotocol}, code={code}, limit={self.limit}",
                    **where,
                ),
            )
        return ()


def compact_json(obj: Any, limit: int = 512) -> str:
    """``obj`` as compact JSON, at most ``limit`` characters (``…`` appended when cut).
    Never raises."""
    try:
        return clip(json.dumps(obj, separators=(",", ":"), ensure_ascii=False), limit)
    except (ValueError, TypeError, RecursionError):
        return clip(repr(obj), limit)


def is_data(msg: Message) -> bool:
    """True for a text or binary message (not ping, pong or close)."""
    return msg.opcode in (Opcode.TEXT, Opcode.BINARY)


class DataMessageDecoder(ABC):
    """Base of decoders that read text and binary messages only: :meth:`decode`
    skips control frames and hands :meth:`_decode` the payload seen and whether it
    is the whole message (a gap or an unkept payload gives only part of it)."""

    __slots__ = ("name", "_findings")

    def __init__(self, name: str) -> None:
        self.name = name
        self._findings = Findings(name)

    def decode(self, msg: Message, payload: bytes) -> Decoded:
        """Decode one message; never raises on traffic."""
        if not is_data(msg):
            return Decoded()
        data, whole = payload_of(msg, payload)
        return self._decode(msg, data, whole)

    @abstractmethod
    def _decode(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        """Decode the payload ``data`` of a text or binary message."""
