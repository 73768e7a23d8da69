"""Jupyter kernel messages over WebSocket (``v1.kernel.websocket.jupyter.org``;
jupyter_server "WebSocket kernel wire protocols", and the Jupyter messaging
specification in jupyter_client ``docs/messaging.rst``).

A v1 binary message is: ``n`` (8 bytes, little-endian), ``n`` offsets (8 bytes
each, little-endian, from the start of the message), then the parts they delimit:
the channel name (``shell``, ``iopub``, ``stdin``, ``control``), the header JSON,
the parent header, the metadata, the content and optional buffers; the last offset
is the end of the last part. A text message (the legacy protocol) is one JSON
object with ``channel`` and ``header``.

``kind`` is the header's ``msg_type`` (``execute_request``, ``stream``,
``status``, ...); ``text`` the channel and, for a few message types, what matters
in the content (the code executed, the stream text, the error, the execution
state). A message whose offsets do not fit it is a ``subprotocol_malformed_message``
finding.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Message, Opcode
from . import Decoded, register
from ._util import DataMessageDecoder, bounded_text, clip, load_json

MAX_PARTS = 4096
"""Offsets accepted in one message (a bound against a hostile offset count)."""

_CONTENT_LIMIT = 256 * 1024  # content parsed for the text only up to this size
_MSG_TYPE = re.compile(rb'"msg_type"\s*:\s*"([A-Za-z0-9_]{1,64})"')
_CHANNEL = re.compile(rb"^[a-z_]{1,32}")


class JupyterDecoder(DataMessageDecoder):
    """Decoder of Jupyter kernel messages (one connection)."""

    __slots__ = ()

    def _decode(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        """Kind (``msg_type``) and text (channel, content summary). Never raises."""
        if msg.opcode == Opcode.TEXT:
            return self._legacy(msg, data, whole)
        parts, err = _split(data)
        if parts is None:
            if not whole:  # only the start is known: look for the header there
                m = _MSG_TYPE.search(data[:4096])
                return Decoded(kind=m.group(1).decode("ascii") if m else None)
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a v1 kernel message (offset table), found={err}",
                    msg,
                )
            )
        channel = bounded_text(parts[0], 32)
        header, _ = load_json(parts[1]) if len(parts) > 1 else (None, None)
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        if not isinstance(msg_type, str):
            m = _MSG_TYPE.search(parts[1][:4096]) if len(parts) > 1 else None
            msg_type = m.group(1).decode("ascii") if m else None
        kind = clip(msg_type, 64) if msg_type else None
        content = None
        if kind in _CONTENT_TEXT and len(parts) > 4 and len(parts[4]) <= _CONTENT_LIMIT:
            content, _ = load_json(parts[4])
        return Decoded(kind=kind, text=_text(channel, kind, content))

    def _legacy(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        obj, err = load_json(data)
        if err is not None or not isinstance(obj, dict):
            if not whole:
                m = _MSG_TYPE.search(data[:4096])
                return Decoded(kind=m.group(1).decode("ascii") if m else None)
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a JSON kernel message, found={err or type(obj).__name__}",
                    msg,
                )
            )
        header = obj.get("header")
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        if not isinstance(msg_type, str):
            msg_type = obj.get("msg_type") if isinstance(obj.get("msg_type"), str) else None
        channel = obj.get("channel")
        kind = clip(msg_type, 64) if msg_type else None
        return Decoded(
            kind=kind,
            text=_text(
                clip(channel, 32) if isinstance(channel, str) else "", kind, obj.get("content")
            ),
        )


def _split(data: bytes) -> tuple[list[bytes] | None, str]:
    """The parts of a v1 message (channel, header, parent header, metadata, content,
    buffers...), or ``(None, reason)``."""
    if len(data) < 8:
        return None, f"{len(data)} bytes"
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= MAX_PARTS or 8 * (n + 1) > len(data):
        return None, f"offset count {n} for {len(data)} bytes"
    offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(n)]
    if offsets[0] < 8 * (n + 1) or offsets[-1] > len(data):
        return None, f"offsets {offsets[0]}..{offsets[-1]} outside 8*(n+1)..{len(data)}"
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
        return None, "offsets not in order"
    if not _CHANNEL.match(data[offsets[0] : offsets[1]]):
        return None, f"channel name {data[offsets[0] : offsets[0] + 16]!r}"
    return [data[offsets[i] : offsets[i + 1]] for i in range(n - 1)], ""


def _code(content: dict[str, Any]) -> str | None:
    code = content.get("code")
    return clip(code, 500) if isinstance(code, str) else None


def _stream(content: dict[str, Any]) -> str | None:
    text = content.get("text")
    name = content.get("name")
    if not isinstance(text, str):
        return None
    return f"{clip(name, 16)}: {clip(text, 1000)}" if isinstance(name, str) else clip(text, 1000)


def _error(content: dict[str, Any]) -> str | None:
    ename, evalue = content.get("ename"), content.get("evalue")
    if isinstance(ename, str):
        return f"{clip(ename, 100)}: {clip(evalue, 500)}" if isinstance(evalue, str) else ename
    return None


def _status(content: dict[str, Any]) -> str | None:
    state = content.get("execution_state") or content.get("status")
    return clip(state, 32) if isinstance(state, str) else None


_CONTENT_TEXT = {
    "execute_request": _code,
    "execute_input": _code,
    "stream": _stream,
    "error": _error,
    "status": _status,
    "execute_reply": _status,
}


def _text(channel: str, kind: str | None, content: Any) -> str | None:
    fn = _CONTENT_TEXT.get(kind or "")
    detail = fn(content) if fn is not None and isinstance(content, dict) else None
    if detail and channel:
        return f"{channel}: {detail}"
    return detail or channel or None


register("v1.kernel.websocket.jupyter.org")(JupyterDecoder)
