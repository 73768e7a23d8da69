"""permessage-deflate (RFC 7692): the negotiated parameters and a bounded, sans-IO
decompressor for the messages of one direction.

:func:`deflate_params` reads the parameters the server accepted in its 101
(``Handshake.extensions``, RFC 7692 §7.1) for one direction: client-to-server
messages are compressed by the client (``client_max_window_bits``,
``client_no_context_takeover``), server-to-client ones by the server
(``server_max_window_bits``, ``server_no_context_takeover``).

An :class:`Inflater` decompresses the messages of one direction, one at a time and
incrementally (RFC 7692 §7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to the tail
end of the payload of the message. Decompress the resulting data using DEFLATE")::

    inf = Inflater(params)
    if inf.begin():                       # False: the context is lost (see below)
        for payload_part in parts:
            for piece in inf.feed(payload_part):
                ...                       # decompressed bytes, in order
        for piece in inf.end():           # appends 00 00 ff ff
            ...
        inf.error, inf.exceeded, inf.produced   # how the message went

Context takeover (RFC 7692 §7.1.1): unless ``no_context_takeover``, the LZ77 window
of earlier messages is used by later ones, so one decompressor is kept across the
messages of the direction. Once a message could not be decompressed entirely
(invalid data, the limit, a message abandoned after a gap: :meth:`Inflater.abandon`,
bytes lost between messages: :meth:`Inflater.lose_context`), the context is lost for
the rest of the direction and :meth:`Inflater.begin` returns False. With
``no_context_takeover`` every message starts from an empty window and nothing is lost
beyond the message concerned.

A message ending with a DEFLATE block that has BFINAL set (RFC 7692 §7.2.3.4) ends
the zlib stream; the next message is decompressed by a new decompressor primed with
the last window of output (``zdict``), so context takeover still holds.

Security limit: at most ``limit`` (default 16 MiB) decompressed bytes per message.
The decompressor is driven with ``decompressobj.decompress(data, max_length)`` in
pieces of at most :data:`PIECE` bytes, so memory stays bounded by the limit whatever
the compression ratio (a decompression bomb inflates DEFLATE data about 1000 times):
:meth:`Inflater.feed` stops at the limit, sets ``exceeded`` and drops the rest.

Errors never raise: invalid DEFLATE data sets ``error`` (zlib's message).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import Direction

if TYPE_CHECKING:
    from .handshake import Handshake

DEFAULT_MAX_DECOMPRESSED = 16 * 1024 * 1024
"""Most decompressed bytes per message, bytes (security limit)."""

PIECE = 64 * 1024
"""Largest piece of output asked of zlib at once, bytes."""

TAIL = b"\x00\x00\xff\xff"
"""Appended to every compressed message before decompression (RFC 7692 §7.2.2)."""

_TRAILING_LIMIT = 64  # bytes tolerated after a BFINAL block (the RFC's example has 1)


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The permessage-deflate parameters of one direction (RFC 7692 §7.1).

    ``window_bits``: base-2 logarithm of the sender's LZ77 window, 8-15 (§7.1.2;
    15 when not negotiated). ``no_context_takeover``: the sender resets its
    compression context after each message (§7.1.1), so every message decompresses
    on its own.
    """

    window_bits: int = 15
    no_context_takeover: bool = False


def _window_bits(value: str | None) -> int:
    """A ``*_max_window_bits`` value (RFC 7692 §7.1.2: an integer 8-15, no leading
    zeros); 15, the largest window, when absent or invalid (it decompresses any
    smaller window too)."""
    if value is None:
        return 15
    v = value.strip()
    if v.isdigit() and v.isascii() and 8 <= int(v) <= 15:
        return int(v)
    return 15


def deflate_params(handshake: Handshake | None, direction: Direction) -> DeflateParams | None:
    """The parameters with which ``direction``'s messages are compressed, or None when
    ``handshake`` is None or did not accept permessage-deflate.

    Reads the first ``permessage-deflate`` extension of the 101
    (``handshake.extensions``; names compared case-insensitively). Client-to-server:
    ``client_max_window_bits`` and ``client_no_context_takeover``; server-to-client:
    ``server_max_window_bits`` and ``server_no_context_takeover`` (RFC 7692 §7.1.1,
    §7.1.2). Lenient: a window-bits value absent or outside 8-15 counts as 15; never
    raises."""
    if handshake is None or not handshake.deflate:
        return None
    params: tuple[tuple[str, str | None], ...] = ()
    for name, ps in handshake.extensions:
        if name.lower() == "permessage-deflate":
            params = ps
            break
    prefix = "client_" if direction == Direction.CLIENT_TO_SERVER else "server_"
    bits = 15
    no_takeover = False
    for key, value in params:
        k = key.strip().lower()
        if k == prefix + "no_context_takeover":
            no_takeover = True
        elif k == prefix + "max_window_bits":
            bits = _window_bits(value)
    return DeflateParams(window_bits=bits, no_context_takeover=no_takeover)


class Inflater:
    """Decompresses the permessage-deflate messages of one direction (RFC 7692
    §7.2.2), one message at a time, bounded by ``limit`` decompressed bytes per
    message. See the module docstring for the protocol.

    After each call, for the message in progress: ``produced`` (decompressed bytes
    returned so far), ``exceeded`` (the message inflates beyond ``limit``; the rest
    was dropped), ``error`` (zlib's message for invalid data, else None), ``active``
    (bytes fed are still decompressed). ``context_ok`` is False once the context is
    lost for later messages (never with ``no_context_takeover``).

    A window of 8 bits (allowed by RFC 7692 §7.1.2.1) is inflated with 9: zlib refuses
    8 for raw DEFLATE compression, so zlib-based senders that negotiate 8 use 9, and
    inflating with a window at least as large as the sender's is always correct.
    """

    __slots__ = (
        "params",
        "limit",
        "produced",
        "exceeded",
        "error",
        "active",
        "context_ok",
        "_wbits",
        "_d",
        "_hist",
        "_trailing",
        "_fed",
    )

    def __init__(self, params: DeflateParams, *, limit: int = DEFAULT_MAX_DECOMPRESSED) -> None:
        self.params = params
        self.limit = max(0, limit)
        self.produced = 0
        self.exceeded = False
        self.error: str | None = None
        self.active = False
        self.context_ok = True
        self._wbits = min(15, max(9, params.window_bits))
        self._d = None  # zlib decompressobj, kept across messages with context takeover
        # Last window of output, kept only with context takeover (to prime a new
        # decompressor after a BFINAL block).
        self._hist: bytearray | None = None if params.no_context_takeover else bytearray()
        self._trailing = -1  # bytes seen after a BFINAL block in this message, -1: none
        self._fed = 0  # compressed bytes fed for the message in progress

    def begin(self) -> bool:
        """Start a message; returns whether it can be decompressed (False once the
        context is lost with context takeover: the message's output depends on
        earlier messages that were not decompressed)."""
        if self.active:
            self.abandon()
        self.produced = 0
        self.exceeded = False
        self.error = None
        self._trailing = -1
        self._fed = 0
        if self.params.no_context_takeover:
            self._d = zlib.decompressobj(-self._wbits)  # RFC 7692 §7.1.1: a fresh window
        elif not self.context_ok:
            return False
        elif self._d is None:
            self._d = zlib.decompressobj(-self._wbits)
        self.active = True
        return True

    def feed(self, data: bytes) -> list[bytes]:
        """Decompress the next payload bytes of the message; returns the decompressed
        pieces (each at most :data:`PIECE` bytes, together at most what is left of
        ``limit``). Returns [] when the message is not being decompressed."""
        if not self.active or not data:
            return []
        self._fed += len(data)
        return self._run(data)

    def end(self) -> list[bytes]:
        """The message's payload is complete: decompress with the 0x00 0x00 0xff 0xff
        tail (RFC 7692 §7.2.2) and return the last pieces. The message is then over
        (``active`` False); ``error``/``exceeded``/``produced`` describe it.

        A message with an empty payload decompresses to nothing and leaves the
        context as it was (a DEFLATE sender writes one 0x00 for an empty message,
        §7.2.3.6; appending the tail to nothing would leave the decompressor inside
        a block header and misalign every later message)."""
        if not self.active:
            return []
        if not self._fed:
            self.active = False
            return []
        out = self._run(TAIL)
        if self.active:
            d = self._d
            assert d is not None
            if self._trailing >= 0:
                # A BFINAL block ended the stream (§7.2.3.4): what followed it in the
                # message must be at most an empty block header (the RFC's 0x00).
                if self._trailing > len(TAIL) + 1:
                    self._fail(f"{self._trailing - len(TAIL)} bytes after the final DEFLATE block")
                else:
                    hist = self._hist
                    window = bytes(hist[-(1 << self._wbits) :]) if hist else b""
                    if window:
                        self._d = zlib.decompressobj(-self._wbits, zdict=window)
                    else:
                        self._d = zlib.decompressobj(-self._wbits)
            self.active = False
        return out

    def decompress(self, payload: bytes) -> bytes:
        """Decompress one whole message (``begin``, ``feed``, ``end``); returns the
        output, truncated at ``limit`` (check ``exceeded`` and ``error``)."""
        if not self.begin():
            return b""
        return b"".join(self.feed(payload) + self.end())

    def abandon(self) -> None:
        """The message in progress will not be finished (a gap inside it, interrupted,
        end of stream): with context takeover the context is lost."""
        if self.active:
            self.active = False
            self._lose()

    def lose_context(self) -> None:
        """Bytes of this direction were lost (a TCP gap, bytes skipped while
        resynchronising): a message may be missing, so with context takeover later
        messages cannot be decompressed. Abandons the message in progress."""
        self.active = False
        self._lose()

    # -- internals ------------------------------------------------------------------

    def _lose(self) -> None:
        if not self.params.no_context_takeover:
            self.context_ok = False
            self._d = None
            self._hist = None

    def _fail(self, message: str) -> None:
        self.error = message
        self.active = False
        self._lose()

    def _run(self, data: bytes) -> list[bytes]:
        """Feed ``data`` to zlib, taking at most what is left of the limit (plus one
        byte, to tell "exactly the limit" from "beyond it")."""
        out: list[bytes] = []
        if self._trailing >= 0:  # after a BFINAL block: zlib would only buffer it
            self._trailing += len(data)
            if self._trailing > _TRAILING_LIMIT:
                self._fail(f"{self._trailing} bytes after the final DEFLATE block")
            return out
        d = self._d
        assert d is not None
        hist = self._hist
        window = 1 << self._wbits
        budget = self.limit - self.produced
        try:
            while True:
                want = PIECE if PIECE <= budget else budget + 1
                piece = d.decompress(data, want)
                got = len(piece)
                if got > budget:
                    piece = piece[:budget]
                    got = budget
                    self.exceeded = True
                if got:
                    out.append(piece)
                    self.produced += got
                    budget -= got
                    if hist is not None:
                        hist += piece
                        if len(hist) > 2 * window:
                            del hist[:-window]
                if self.exceeded:
                    self.active = False
                    self._lose()
                    return out
                if d.eof:
                    self._trailing = len(d.unused_data)
                    return out
                data = d.unconsumed_tail
                if not data and len(piece) < want:
                    return out
        except zlib.error as exc:
            self._fail(str(exc))
            return out
