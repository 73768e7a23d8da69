"""Kubernetes remote command over WebSocket: ``kubectl exec`` / ``attach`` (and the
API server's ``/exec``, ``/attach`` endpoints).

Reference: Kubernetes remote command protocol
(k8s.io/apimachinery/pkg/util/remotecommand, k8s.io/apimachinery/pkg/util/httpstream/wsstream
``conn.go``, staging/src/k8s.io/client-go/tools/remotecommand ``websocket.go``).

Sub-protocol tokens and their framing:

- ``channel.k8s.io``, ``v2.channel.k8s.io``, ``v3.channel.k8s.io``: each (binary)
  message starts with one byte naming the channel, the rest is the data. Channel 3
  (error) carries the error as plain text.
- ``v4.channel.k8s.io``: as above; channel 3 carries a JSON ``metav1.Status``
  (``{"status": "Success"}`` or ``"Failure"`` with ``reason``, ``message`` and the
  exit code in ``details.causes[?]`` where ``reason == "ExitCode"`` → ``message``).
- ``v5.channel.k8s.io``: as v4, plus channel 255 = close stream: the one-byte
  payload names the channel whose sender is done (half-close, e.g. stdin EOF).
- ``base64.channel.k8s.io``, ``v4.base64.channel.k8s.io``: text messages; the first
  character is the channel as an ASCII digit (``'0'`` + channel), the rest is the
  data in standard padded base64 (RFC 4648 §4).

Channels: 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize (JSON
``{"Width": 80, "Height": 24}``), 255 close stream (v5). ``kind`` is ``"stdin"``,
``"stdout"``, ``"stderr"``, ``"status"``, ``"resize"`` or ``"close_stream"``.

The server sends one empty message per output channel when the session opens; those
have a channel and kind but no text. Port-forward sessions negotiate the same
tokens with a different channel layout (2 channels per port); they are decoded as
exec channels.

Findings: ``k8s_empty_message`` (no channel byte), ``k8s_unknown_channel``,
``k8s_bad_base64``, ``k8s_bad_status``, ``k8s_bad_resize``, ``k8s_bad_close_stream``.
Validity findings are not raised for a message a gap cut or whose payload was not
kept (only its first bytes are known).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..model import Message, Opcode
from . import Decoded, register
from ._util import Findings, bounded_text, clip, load_json, payload_of

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE_STREAM = 0, 1, 2, 3, 4, 255

CHANNEL_KINDS = {
    STDIN: "stdin",
    STDOUT: "stdout",
    STDERR: "stderr",
    ERROR: "status",
    RESIZE: "resize",
    CLOSE_STREAM: "close_stream",
}
"""Kind of each channel number."""

_STATUS_LIMIT = 64 * 1024  # a metav1.Status is a few hundred bytes


class K8sChannelDecoder:
    """Decoder of one connection's Kubernetes remote-command channels.

    ``name`` is the negotiated token; ``version`` 1-5 (``channel.k8s.io`` is 1);
    ``base64`` True for the ``*base64.channel.k8s.io`` tokens.
    """

    __slots__ = ("name", "version", "base64", "_findings")

    def __init__(self, name: str) -> None:
        self.name = name
        self.base64 = "base64." in name
        head = name.split(".", 1)[0]
        self.version = int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else 1
        self._findings = Findings(name)

    def decode(self, msg: Message, payload: bytes) -> Decoded:
        """Channel, kind, text and findings of one message. Control frames (ping,
        pong, close) give ``Decoded()``. Never raises."""
        if Opcode.is_control(msg.opcode):
            return Decoded()
        data, whole = payload_of(msg, payload)
        if not data:
            return Decoded(
                findings=self._findings(
                    "k8s_empty_message",
                    "expected=a channel byte, found=an empty message",
                    msg,
                )
            )
        if self.base64:
            return self._decode_base64(msg, data, whole)
        return self._decode_channel(msg, data[0], data[1:], whole)

    def _decode_base64(self, msg: Message, data: bytes, whole: bool) -> Decoded:
        ch = data[0]
        if not 0x30 <= ch <= 0x39:
            return Decoded(
                findings=self._findings(
                    "k8s_unknown_channel",
                    f"expected=an ASCII digit 0-4, found={bytes([ch])!r}",
                    msg,
                )
            )
        # Go's base64 decoder (encoding/base64) skips CR and LF.
        body = data[1:].replace(b"\r", b"").replace(b"\n", b"")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            if not whole:  # cut message: decode what is decodable, no finding
                usable = body[: len(body) // 4 * 4]
                try:
                    raw = base64.b64decode(usable, validate=True)
                except (binascii.Error, ValueError):
                    raw = b""
                return self._decode_channel(msg, ch - 0x30, raw, False)
            d = self._decode_channel(msg, ch - 0x30, b"", whole)
            bad = self._findings(
                "k8s_bad_base64",
                f"expected=base64 (RFC 4648 §4), found={body[:32]!r} ({len(body)} bytes)",
                msg,
            )
            return Decoded(d.channel, d.kind, d.text, d.findings + bad)
        return self._decode_channel(msg, ch - 0x30, raw, whole)

    def _decode_channel(self, msg: Message, ch: int, data: bytes, whole: bool) -> Decoded:
        kind = CHANNEL_KINDS.get(ch)
        if kind is None or (ch == CLOSE_STREAM and self.version < 5):
            allowed = "0-4, 255" if self.version >= 5 else "0-4"
            return Decoded(
                channel=ch,
                findings=self._findings(
                    "k8s_unknown_channel", f"expected=channel {allowed}, found={ch}", msg
                ),
            )
        if ch == ERROR:
            text, findings = self._status(msg, data, whole)
            return Decoded(ch, kind, text, findings)
        if ch == RESIZE:
            text, findings = self._resize(msg, data, whole)
            return Decoded(ch, kind, text, findings)
        if ch == CLOSE_STREAM:
            if len(data) == 1:
                closed = CHANNEL_KINDS.get(data[0], f"channel {data[0]}")
                return Decoded(ch, kind, f"close {closed}")
            return Decoded(
                ch,
                kind,
                None,
                self._findings(
                    "k8s_bad_close_stream",
                    f"expected=1 byte naming a channel, found={len(data)} bytes",
                    msg,
                ),
            )
        return Decoded(ch, kind, bounded_text(data) if data else None)

    def _status(self, msg: Message, data: bytes, whole: bool) -> tuple[str | None, tuple]:
        """Text of an error/status message: the metav1.Status (v4+) or the plain
        error text (v1-v3)."""
        if not data:
            return None, ()
        if self.version < 4 and not data.lstrip().startswith(b"{"):
            return bounded_text(data), ()
        obj, err = load_json(data, _STATUS_LIMIT)
        if err is None:
            text = status_text(obj)
            if text is not None:
                return text, ()
            err = "not a metav1.Status object"
        if self.version < 4 or not whole:
            return bounded_text(data), ()
        return bounded_text(data), self._findings(
            "k8s_bad_status",
            f"expected=JSON metav1.Status, found={err}: {data[:48]!r}",
            msg,
        )

    def _resize(self, msg: Message, data: bytes, whole: bool) -> tuple[str | None, tuple]:
        obj, err = load_json(data, _STATUS_LIMIT)
        if err is None and isinstance(obj, dict):
            w, h = obj.get("Width"), obj.get("Height")
            if _is_uint(w) and _is_uint(h):
                return f"resize {w}x{h}", ()
            err = f"Width={clip(repr(w), 20)}, Height={clip(repr(h), 20)}"
        elif err is None:
            err = type(obj).__name__
        if not whole:
            return None, ()
        return None, self._findings(
            "k8s_bad_resize",
            f'expected={{"Width": uint16, "Height": uint16}}, found={err}: {data[:48]!r}',
            msg,
        )


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF


def status_text(obj: Any) -> str | None:
    """One line for a ``metav1.Status`` (k8s.io/apimachinery/pkg/apis/meta/v1):
    ``"exit code 0: Success"``, ``"exit code 2: <message>"`` (the exit code from
    ``details.causes[?].reason == "ExitCode"``), ``"Failure: <reason>: <message>"``;
    None when ``obj`` has no ``status`` string."""
    if not isinstance(obj, dict) or not isinstance(obj.get("status"), str):
        return None
    status = clip(obj["status"], 64)
    message = obj.get("message")
    message = clip(message, 1024) if isinstance(message, str) else ""
    reason = obj.get("reason")
    reason = clip(reason, 128) if isinstance(reason, str) else ""
    if status == "Success":
        return "exit code 0: Success"
    code = None
    details = obj.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if isinstance(causes, list):
        for c in causes:
            if isinstance(c, dict) and c.get("reason") == "ExitCode":
                code = c.get("message")
                break
    if isinstance(code, str | int) and not isinstance(code, bool):
        return f"exit code {clip(str(code), 32)}: {message or reason or status}"
    return ": ".join(p for p in (status, reason, message) if p)


register(
    "channel.k8s.io",
    "v2.channel.k8s.io",
    "v3.channel.k8s.io",
    "v4.channel.k8s.io",
    "v5.channel.k8s.io",
    "base64.channel.k8s.io",
    "v4.base64.channel.k8s.io",
)(K8sChannelDecoder)
