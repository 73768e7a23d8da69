"""GraphQL over WebSocket: the message ``type`` of each JSON message.

- ``graphql-ws``: the legacy Apollo protocol (subscriptions-transport-ws,
  PROTOCOL.md): ``connection_init``, ``connection_ack``, ``connection_error``,
  ``ka`` (keep-alive), ``connection_terminate``, ``start``, ``data``, ``error``,
  ``complete``, ``stop``.
- ``graphql-transport-ws``: the GraphQL over WebSocket protocol of the ``graphql-ws``
  library (enisdenjo/graphql-ws, PROTOCOL.md): ``connection_init``,
  ``connection_ack``, ``ping``, ``pong``, ``subscribe``, ``next``, ``error``,
  ``complete``.

``kind`` is the ``type``; ``text`` the operation id with the operation name (or the
start of the query) of a subscription, or the start of the payload of a result.
``connection_init`` payloads (often credentials) are never shown. A message that is
not a JSON object with a known string ``type`` is a ``subprotocol_malformed_message``
finding.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Message
from . import Decoded, register
from ._util import DataMessageDecoder, clip, compact_json, load_json

LEGACY_TYPES = frozenset(
    {
        "connection_init",
        "connection_ack",
        "connection_error",
        "ka",
        "connection_terminate",
        "start",
        "data",
        "error",
        "complete",
        "stop",
    }
)
TRANSPORT_TYPES = frozenset(
    {"connection_init", "connection_ack", "ping", "pong", "subscribe", "next", "error", "complete"}
)
_TYPES = {"graphql-ws": LEGACY_TYPES, "graphql-transport-ws": TRANSPORT_TYPES}
_SPACE = re.compile(r"\s+")
_TYPE = re.compile(rb'"type"\s*:\s*"([a-z_]{1,32})"')


class GraphQLDecoder(DataMessageDecoder):
    """Decoder of ``graphql-ws`` / ``graphql-transport-ws`` messages (one connection)."""

    __slots__ = ("types",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.types = _TYPES.get(name, LEGACY_TYPES | TRANSPORT_TYPES)

    def _decode(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        """Kind (the message ``type``) and text of one message. Never raises."""
        obj, err = load_json(data)
        if err is not None or not isinstance(obj, dict):
            if not whole:  # only the start is known: look for the type there
                m = _TYPE.search(data[:4096])
                kind = m.group(1).decode("ascii") if m else None
                return Decoded(kind=kind if kind in self.types else None)
            found = err or f"a JSON {type(obj).__name__}"
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a JSON object with a type, found={found}",
                    msg,
                )
            )
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in self.types:
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a {self.name} message type, found=type={clip(repr(kind), 64)}",
                    msg,
                )
            )
        return Decoded(kind=kind, text=_text(kind, obj))


def _text(kind: str, obj: dict[str, Any]) -> str | None:
    if kind in ("connection_init", "connection_ack", "ka", "ping", "pong", "connection_terminate"):
        return None  # nothing to read, or credentials (connection_init)
    ident = obj.get("id")
    prefix = f"id={clip(str(ident), 64)}" if isinstance(ident, str | int) else ""
    payload = obj.get("payload")
    detail = ""
    if kind in ("start", "subscribe") and isinstance(payload, dict):
        name = payload.get("operationName")
        query = payload.get("query")
        if isinstance(name, str) and name:
            detail = clip(name, 200)
        elif isinstance(query, str):
            detail = clip(_SPACE.sub(" ", query[:1000]).strip(), 200)
    elif kind in ("data", "next", "error", "connection_error") and payload is not None:
        detail = compact_json(payload)
    return " ".join(p for p in (prefix, detail) if p) or None


register("graphql-ws", "graphql-transport-ws")(GraphQLDecoder)
