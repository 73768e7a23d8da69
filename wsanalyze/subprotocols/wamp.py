"""WAMP v2 with JSON serialisation (``wamp.2.json``; The Web Application Messaging
Protocol, wamp-proto.org / draft-oberstet-hybi-tavendo-wamp, "Message Codes and
Direction"): the message type of each message.

A message is a JSON array whose first element is the message code (1 HELLO,
2 WELCOME, 8 ERROR, 16 PUBLISH, 32 SUBSCRIBE, 48 CALL, 50 RESULT, ...). ``kind`` is
the type name; ``text`` the realm (HELLO), topic (PUBLISH, SUBSCRIBE), procedure
(CALL, REGISTER) or error URI (ERROR, ABORT) when present. A message that is not
an array starting with a known code is a ``subprotocol_malformed_message`` finding.
"""

from __future__ import annotations

from ..model import Message
from . import Decoded, register
from ._util import DataMessageDecoder, clip, load_json

MESSAGE_TYPES = {
    1: "HELLO",
    2: "WELCOME",
    3: "ABORT",
    4: "CHALLENGE",
    5: "AUTHENTICATE",
    6: "GOODBYE",
    8: "ERROR",
    16: "PUBLISH",
    17: "PUBLISHED",
    32: "SUBSCRIBE",
    33: "SUBSCRIBED",
    34: "UNSUBSCRIBE",
    35: "UNSUBSCRIBED",
    36: "EVENT",
    48: "CALL",
    49: "CANCEL",
    50: "RESULT",
    64: "REGISTER",
    65: "REGISTERED",
    66: "UNREGISTER",
    67: "UNREGISTERED",
    68: "INVOCATION",
    69: "INTERRUPT",
    70: "YIELD",
}
"""WAMP v2 message codes (basic and advanced profile)."""

# Index of the URI worth showing, per message code.
_URI_AT = {1: 1, 3: 2, 6: 2, 8: 4, 16: 3, 32: 3, 48: 3, 64: 3}


class WampDecoder(DataMessageDecoder):
    """Decoder of ``wamp.2.json`` messages (one connection)."""

    __slots__ = ()

    def _decode(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        """Kind (the message type name) and text (the URI it names). Never raises."""
        obj, err = load_json(data)
        if err is not None and not whole:
            return Decoded()
        code = obj[0] if isinstance(obj, list) and obj else None
        if not isinstance(code, int) or isinstance(code, bool) or code not in MESSAGE_TYPES:
            found = err or (
                f"code {clip(repr(code), 32)}" if isinstance(obj, list) else "not an array"
            )
            return Decoded(
                findings=self._findings(
                    "subprotocol_malformed_message",
                    f"expected=a JSON array starting with a WAMP message code, found={found}",
                    msg,
                )
            )
        text = None
        at = _URI_AT.get(code)
        if at is not None and len(obj) > at and isinstance(obj[at], str):
            text = clip(obj[at], 256)
        return Decoded(kind=MESSAGE_TYPES[code], text=text)


register("wamp.2.json")(WampDecoder)
