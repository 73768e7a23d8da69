"""MQTT over WebSocket (``mqtt``: MQTT 3.1.1 §6 and MQTT 5.0 §6; ``mqttv3.1``):
the control packet type of each message.

A message carries MQTT bytes in binary frames; packets need not align with
messages (MQTT 3.1.1 §6: "The receiver MUST NOT assume that MQTT Control Packets
are aligned on WebSocket frame boundaries"), so the decoder follows each direction
as a byte stream: fixed header (§2.2: type = first byte >> 4, remaining length
1-4 bytes, 7 bits each) and the bytes to skip. ``kind`` is the type of the first
packet that starts in the message (``"CONNECT"``, ``"PUBLISH"``, ...; None when the
message only continues a packet); ``text`` the topic of a PUBLISH (§3.3.2.1) and
the count of further packets in the message. A reserved packet type 0 or a
remaining length longer than 4 bytes is a ``subprotocol_malformed_message``
finding (the stream is then assumed to realign at the next message).
"""

from __future__ import annotations

from ..model import Message
from . import Decoded, register
from ._util import DataMessageDecoder, bounded_text

PACKET_TYPES = {
    1: "CONNECT",
    2: "CONNACK",
    3: "PUBLISH",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    8: "SUBSCRIBE",
    9: "SUBACK",
    10: "UNSUBSCRIBE",
    11: "UNSUBACK",
    12: "PINGREQ",
    13: "PINGRESP",
    14: "DISCONNECT",
    15: "AUTH",  # MQTT 5.0 (reserved in 3.1.1)
}
"""MQTT control packet types (MQTT 3.1.1 §2.2.1, MQTT 5.0 §2.1.2)."""

MAX_PACKETS = 256
"""Packets followed per message; past this the stream is assumed to realign at the
next message (bounds the work on a message of millions of 2-byte packets)."""


class MqttDecoder(DataMessageDecoder):
    """Decoder of MQTT over WebSocket (one connection, both directions)."""

    __slots__ = ("_skip", "_carry")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._skip = [0, 0]  # bytes of a packet still to come, per direction
        self._carry = [b"", b""]  # an unfinished fixed header, per direction

    def _decode(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        """Kind (first packet type starting here) and text (PUBLISH topic). Never raises."""
        d = int(msg.direction)
        carried = len(self._carry[d])
        buf = self._carry[d] + data if carried else data
        self._carry[d] = b""
        pos = min(self._skip[d], len(buf))
        self._skip[d] -= pos
        first: tuple[int, int, int] | None = None  # type, variable header start, end
        count = 0
        findings: tuple = ()
        while pos < len(buf) and count < MAX_PACKETS:
            ptype = buf[pos] >> 4
            length, i, state = _remaining_length(buf, pos + 1)
            if ptype == 0 or state == "malformed":
                found = "packet type 0" if ptype == 0 else "remaining length over 4 bytes"
                findings = self._findings(
                    "subprotocol_malformed_message",
                    f"expected=an MQTT control packet, found={found} at message byte "
                    f"{max(pos - carried, 0)}",
                    msg,
                )
                break
            if pos >= carried and first is None:
                first = (ptype, i, i + length)
            if state == "incomplete":
                self._carry[d] = bytes(buf[pos:])
                break
            count += 1
            end = i + length
            if end > len(buf):
                self._skip[d] = end - len(buf)
                break
            pos = end
        if findings or not whole:  # lost track: realign at the next message
            self._skip[d], self._carry[d] = 0, b""
        if first is None:
            return Decoded(findings=findings)
        ptype, start, end = first
        text = None
        if ptype == 3 and start + 2 <= len(buf):  # PUBLISH: topic name (§3.3.2.1)
            n = int.from_bytes(buf[start : start + 2], "big")
            if start + 2 + n <= min(len(buf), end):
                text = bounded_text(buf[start + 2 : start + 2 + n], 256)
        if count > 1:
            more = f"+{count - 1} more packets"
            text = f"{text} ({more})" if text is not None else more
        return Decoded(kind=PACKET_TYPES[ptype], text=text, findings=findings)


def _remaining_length(buf: bytes, i: int) -> tuple[int, int, str]:
    """Decode the Remaining Length (MQTT 3.1.1 §2.2.3) at ``buf[i:]``: ``(length,
    index after it, "ok" | "incomplete" | "malformed")``."""
    value, mult = 0, 1
    for _ in range(4):
        if i >= len(buf):
            return 0, i, "incomplete"
        b = buf[i]
        i += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i, "ok"
        mult *= 128
    return 0, i, "malformed"


register("mqtt", "mqttv3.1")(MqttDecoder)
