"""STOMP over WebSocket (``v10.stomp``, ``v11.stomp``, ``v12.stomp``, ``stomp``;
STOMP 1.2 specification, "Frames and headers"): the command of each message.

A STOMP frame is a command line, header lines, a blank line, the body and a NUL
byte; a bare end-of-line is a heart-beat. ``kind`` is the command of the first
frame in the message (``"CONNECT"``, ``"SEND"``, ``"MESSAGE"``, ...) or
``"heartbeat"``; ``text`` the ``destination`` header (or ``message`` of an ERROR)
and the start of the body. Credentials (``login``, ``passcode`` headers of CONNECT)
are never shown. A first line that is not a STOMP command is a
``subprotocol_malformed_message`` finding.
"""

from __future__ import annotations

from ..model import Message
from . import Decoded, register
from ._util import DataMessageDecoder, bounded_text, clip

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "ACK",
        "NACK",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS

_HEAD_LIMIT = 8192  # bytes of a frame read for its command and headers
_BODY_PREVIEW = 200


class StompDecoder(DataMessageDecoder):
    """Decoder of STOMP frames carried in WebSocket messages (one connection)."""

    __slots__ = ()

    def _decode(self, msg: Message, data: bytes, _whole: bool) -> Decoded:
        """Kind (the command) and text of the first frame. Never raises."""
        body = data.lstrip(b"\r\n")
        if not body or body == b"\x00":
            return Decoded(kind="heartbeat") if data else Decoded()
        head, sep, rest = body[:_HEAD_LIMIT].partition(b"\n\n")
        if not sep:
            head, sep, rest = body[:_HEAD_LIMIT].partition(b"\r\n\r\n")
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        command = lines[0].decode("ascii", "replace")
        if command not in COMMANDS:
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a STOMP command, found={clip(repr(command), 40)}",
                    msg,
                )
            )
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon and name not in headers:  # STOMP 1.2: the first occurrence wins
                headers[name] = value
        parts = []
        for key in (b"destination", b"message"):
            if key in headers:
                parts.append(bounded_text(headers[key], 256))
        if sep and command in ("SEND", "MESSAGE", "ERROR"):
            preview = rest.split(b"\x00", 1)[0][:_BODY_PREVIEW]
            if preview:
                parts.append(bounded_text(preview, _BODY_PREVIEW))
        return Decoded(kind=command, text=" ".join(parts) or None)


register("v10.stomp", "v11.stomp", "v12.stomp", "stomp")(StompDecoder)
