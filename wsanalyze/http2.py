"""Sans-IO HTTP/2 connection decoder for a passive observer (RFC 9113), one per TCP connection.

An :class:`Http2Connection` is fed the in-order bytes of BOTH directions of one TCP
connection (as the TCP reassembler delivers them) with :meth:`~Http2Connection.feed`,
told about bytes that were never captured with :meth:`~Http2Connection.gap`, and
finished with :meth:`~Http2Connection.eof`. Each call returns the events it completed
(:data:`H2Event`) and the :class:`~wsanalyze.model.Finding` values it produced, in
stream order. It exists to decode WebSocket over HTTP/2 (RFC 8441: an extended
CONNECT with ``:protocol: websocket``, WebSocket frames inside DATA frames) but
decodes any HTTP/2 connection. Traffic never raises: every anomaly is a finding
with packet numbers and stream offsets, and decoding goes on.

Wire format (RFC 9113 §4.1)::

    length(24) type(8) flags(8) R(1) stream-id(31)    then `length` payload bytes

Frames are parsed with ``struct`` (header) and `hyperframe` (payloads of non-DATA
frames); header blocks are decoded by one `hpack` decoder per direction (RFC 7541
keeps one dynamic table per direction).

Policies
--------
- **Findings, not exceptions.** A frame breaking §4/§6 framing rules (length over the
  receiver's SETTINGS_MAX_FRAME_SIZE, wrong fixed length, stream id 0 where forbidden
  or non-0 where required, CONTINUATION not following HEADERS of the same stream
  (§6.10), padding not shorter than the payload (§6.1), SETTINGS values out of range
  (§6.5.2), WINDOW_UPDATE of 0 (§6.9), RST_STREAM on an idle stream (§6.4)) is an
  ``h2_frame_error``; the frame is skipped by its declared length (never buffered)
  and decoding goes on with the next frame. Exception: a header declaring a length
  over SETTINGS_MAX_FRAME_SIZE *and* failing the other plausibility checks (unknown
  type, undefined flags, wrong stream id or fixed length) is taken for garbage; its
  length is not trusted and the decoder resynchronises. A client preface (§3.4) that does not
  match, or a first frame that is not SETTINGS, is ``h2_bad_preface``. A GOAWAY with
  an error code other than NO_ERROR is ``h2_goaway_error`` (§6.8).
- **DATA is streamed.** DATA payloads are never buffered: every TCP segment's share
  of a DATA payload comes out as one :class:`H2Data` as it arrives (padding, §6.1,
  removed). A TCP gap inside a DATA payload whose frame header was seen becomes an
  :class:`H2DataGap`: the frame boundary is still known, decoding goes on after
  it, no resynchronisation and no HPACK loss.
- **Resynchronisation** (heuristic). A gap that cuts a frame header, or falls on a
  frame boundary, loses the frame boundary (a frame header has no marker): the
  decoder holds bytes and looks for :data:`RESYNC_CONFIRM` plausible frame headers in
  a row (the rules of :func:`looks_like_h2`, plus: the payloads in between plausible
  too, CONTINUATION only right after an open header block, stream ids at most
  :data:`STREAM_ID_MARGIN` above the highest seen, no empty frame first; or, at the
  end, plausible frames ending exactly at the end) and resumes there, with one
  ``h2_gap_resync`` saying how many bytes it skipped (counted as undecodable). Frames
  longer than half of :data:`RESYNC_WINDOW` cannot serve to resynchronise. It holds
  at most one candidate chain (≤ :data:`RESYNC_WINDOW`) plus the current ``feed``;
  bytes that cannot start a header are released as they are scanned. A gap inside a
  non-DATA frame whose header was seen does not lose the boundary: that frame is
  lost (``h2_frame_lost_in_gap``) and decoding goes on after it. ``mid_stream`` mode
  and a bad preface start the same way (a mismatching preface is searched from the
  first differing byte; the HPACK state is lost only if bytes had to be skipped).
- **HPACK loss.** The HPACK dynamic table (RFC 7541 §2.3.2) cannot be rebuilt once a
  header block was missed. When that happens on a direction (a gap across a frame
  boundary or in a HEADERS/PUSH_PROMISE/CONTINUATION frame, ``mid_stream`` mode, an
  HPACK decoding error, a header block dropped for size) one ``h2_hpack_state_lost``
  finding is emitted for that direction and every later header block of the
  direction has ``reliable=False``: the same decoder keeps going (static-table
  entries and literals still decode right; dynamic-table references may be wrong
  or fail). When `hpack` rejects a block of such a direction, its table is restored
  and the block is read field by field (RFC 7541 §6), keeping the fields that can be
  read and leaving out references to entries that are not known. An HPACK error on a
  reliable direction is ``h2_hpack_error`` (the block is lost: ``headers=()``); later
  ones are only counted (:attr:`Http2Connection.hpack_errors`). Every HEADERS or
  PUSH_PROMISE frame whose header was seen yields exactly one :class:`H2Headers`;
  when its block could not be decoded the event has ``headers=()`` and
  ``reliable=False``.
- **Flow-control stalls** (§5.2, §6.9). Per DATA sender, the connection window and
  each open stream's window are tracked: initial 65,535, streams follow the
  receiver's SETTINGS_INITIAL_WINDOW_SIZE (§6.9.2: a change applies to open streams
  too), each DATA frame takes its whole payload length (padding included), the
  receiver's WINDOW_UPDATE gives back (stream 0 = connection). A *stall* is the time
  from the DATA frame that left a window too small to the WINDOW_UPDATE that made
  room, confirmed by the sender's next DATA frame on that window: when the window
  was exhausted (≤ 0) any next DATA confirms it; when it was merely smaller than the
  next DATA frame, that frame must follow the update sooner than the wait itself
  lasted (otherwise the sender was idle, not blocked). The end is the first update
  after which the window could hold that frame. A window still exhausted at
  :meth:`~Http2Connection.eof` on a stream the sender had not ended is a stall with
  ``end_ts_ns=None``. Stalls are kept in :attr:`Http2Connection.stalls`; each longer
  than :data:`STALL_MIN_NS` is an ``h2_flow_control_stall`` finding. Tracking is
  O(1) per frame; it is off in ``mid_stream`` mode and once a frame boundary was
  lost in either direction (the windows are unknown then).
- **Findings limit.** At most :data:`FINDING_LIMIT` findings of one code per
  direction; the rest are counted and summarised at :meth:`~Http2Connection.eof`
  by one ``h2_findings_suppressed`` finding per code.

Security limits
---------------
- ``max_header_block`` (default 256 KiB): most bytes of one header block (HEADERS or
  PUSH_PROMISE + CONTINUATION fragments); a larger block is dropped without
  buffering (``h2_header_block_too_large``, HPACK state lost).
- :data:`MAX_HEADER_LIST` (1 MiB): the decoded size (RFC 9113 §6.5.2 accounting)
  of one header list (``hpack.Decoder.max_header_list_size``): an HPACK bomb fails
  as an HPACK error.
- :data:`MAX_TABLE_SIZE` (1 MiB): largest HPACK dynamic table accepted, whatever
  SETTINGS_HEADER_TABLE_SIZE the receiver advertised.
- Non-DATA frames are buffered up to their useful size only (SETTINGS up to
  :data:`MAX_SETTINGS_BYTES`, GOAWAY debug data up to 1 KiB); unknown frame types
  and PRIORITY are skipped unbuffered.
- :data:`MAX_TRACKED_STREAMS` per direction for flow control.

Byte accounting, per direction, at every moment::

    decoded_bytes + undecodable_bytes + gap_bytes + buffered_bytes == fed_bytes + gap lengths

``decoded_bytes``: the preface, frame headers and payloads of frames that were
decoded, skipped by design (PRIORITY, unknown types, GOAWAY debug data beyond 1 KiB)
or whose DATA payload was streamed; ``undecodable_bytes``: frames skipped for a
framing error (header included), header blocks dropped, bytes skipped while
resynchronising, a partial frame at the end; ``gap_bytes``: the lengths given to
:meth:`~Http2Connection.gap`; ``buffered_bytes``: a partial frame header, a
non-DATA payload being collected, bytes held while resynchronising. After
:meth:`~Http2Connection.eof`, ``buffered_bytes`` is 0.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import hpack
import hpack.hpack as _hh
from hpack.huffman_table import decode_huffman as _decode_huffman
from hyperframe.frame import Frame

from .catalogue import FindingLimiter
from .model import Direction, Finding, Headers, drop_pieces, fast_constructor

__all__ = [
    "ERROR_CODES",
    "FRAME_TYPES",
    "PREFACE",
    "SETTINGS_NAMES",
    "H2Data",
    "H2DataGap",
    "H2Event",
    "H2GoAway",
    "H2Headers",
    "H2Ping",
    "H2Preface",
    "H2RstStream",
    "H2Settings",
    "H2Stall",
    "H2WindowUpdate",
    "Http2Connection",
    "error_name",
    "looks_like_h2",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface, RFC 9113 §3.4 (24 bytes)."""

FRAME_TYPES: dict[int, str] = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
}
"""Frame types defined by RFC 9113 §6 (others are extensions, ignored per §4.1)."""

ERROR_CODES: dict[int, str] = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
"""Error codes of RST_STREAM and GOAWAY, RFC 9113 §7."""

SETTINGS_NAMES: dict[int, str] = {
    0x1: "HEADER_TABLE_SIZE",
    0x2: "ENABLE_PUSH",
    0x3: "MAX_CONCURRENT_STREAMS",
    0x4: "INITIAL_WINDOW_SIZE",
    0x5: "MAX_FRAME_SIZE",
    0x6: "MAX_HEADER_LIST_SIZE",
    0x8: "ENABLE_CONNECT_PROTOCOL",  # RFC 8441 §3
    0x9: "NO_RFC7540_PRIORITIES",  # RFC 9218 §2.1
}
"""SETTINGS parameters, RFC 9113 §6.5.2 (and RFC 8441 §3, RFC 9218 §2.1)."""

DEFAULT_MAX_FRAME_SIZE = 16384
"""SETTINGS_MAX_FRAME_SIZE until the receiver says otherwise (RFC 9113 §6.5.2), bytes."""

MAX_FRAME_LENGTH = (1 << 24) - 1
"""Largest length a frame header can declare (24 bits), bytes."""

DEFAULT_WINDOW = 65535
"""Initial flow-control window of the connection and of each stream (§6.9.2), bytes."""

DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE until the receiver says otherwise (§6.5.2), bytes."""

RESYNC_WINDOW = 64 * 1024
"""Most bytes a candidate frame chain may span while resynchronising (security limit)."""

RESYNC_CONFIRM = 3
"""Plausible frame headers in a row that resynchronisation needs (fewer when the
stream ends exactly at the end of the last frame). :func:`looks_like_h2` needs 2."""

MAX_HEADER_LIST = 1024 * 1024
"""Most decoded bytes of one header list (``hpack.Decoder.max_header_list_size``)."""

MAX_TABLE_SIZE = 1024 * 1024
"""Largest HPACK dynamic table accepted, bytes (security limit)."""

MAX_SETTINGS_BYTES = 6 * 1024
"""Most bytes of one SETTINGS payload kept (1024 parameters); the rest is skipped."""

MAX_DEBUG_DATA = 1024
"""Most bytes of GOAWAY debug data kept in :class:`H2GoAway`."""

MAX_TRACKED_STREAMS = 4096
"""Most streams whose flow-control window is tracked per direction."""

STALL_MIN_NS = 1_000_000
"""Flow-control stalls longer than this (1 ms) are findings."""

STREAM_ID_MARGIN = 1 << 20
"""Resynchronisation accepts stream ids up to this much above the highest seen."""

FINDING_LIMIT = 10
"""Findings of one code emitted per direction before they are only counted."""

_HDR = struct.Struct("!HBBBL")  # length hi16, length lo8, type, flags, R+stream id
_U32 = struct.Struct("!L").unpack_from

_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WU, _CONT = range(10)

# States of one direction.
_PREFACE, _HEADER, _DATAST, _BODY, _SKIP, _RESYNC = range(6)

# Flags defined per frame type (RFC 9113 §6): used only to judge plausibility.
_DEFINED_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)
_NO_STREAM = frozenset((_SETTINGS, _PING, _GOAWAY))
_HAS_STREAM = frozenset((_DATA, _HEADERS, _PRIORITY, _RST, _PUSH, _CONT))
_FIXED_LENGTH = {_PRIORITY: 5, _RST: 4, _PING: 8, _WU: 4}

_DIRS = (Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT)


def error_name(code: int) -> str:
    """The RFC 9113 §7 name of an RST_STREAM/GOAWAY error code (``"CANCEL"``), or
    ``"0x…"`` for an unknown one. Never raises for an int."""
    name = ERROR_CODES.get(code)
    return name if name is not None else f"{code:#x}"


def _type_name(t: int) -> str:
    return FRAME_TYPES.get(t) or f"type_{t:#x}"


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class H2Preface:
    """The client connection preface (RFC 9113 §3.4) at stream ``offset`` (bytes)."""

    direction: Direction
    offset: int
    ts_ns: int
    packet: int
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class H2Settings:
    """A SETTINGS frame (§6.5): ``settings`` as ``(identifier, value)`` pairs in wire
    order (names in :data:`SETTINGS_NAMES`); ``ack`` for an acknowledgement (empty)."""

    direction: Direction
    ack: bool
    settings: tuple[tuple[int, int], ...]
    offset: int
    ts_ns: int
    packet: int
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class H2Headers:
    """One complete header block (§4.3): a HEADERS frame (or PUSH_PROMISE, then
    ``promised_stream_id`` is set) and its CONTINUATION frames.

    ``headers`` in decoded order, pseudo-header fields included, names and values as
    bytes; ``()`` when the block could not be decoded (on a direction whose HPACK
    state was lost: the fields that could be read). ``reliable`` is False once the
    direction's HPACK state was lost (see the module docstring). ``end_stream``: the
    HEADERS frame had END_STREAM. ``offset`` is the stream offset of the first frame's
    header, ``length`` the bytes of all frames of the block (headers included),
    ``packets`` the first and last packet (1-based), ``ts_ns`` the time of the last.
    """

    direction: Direction
    stream_id: int
    headers: Headers
    end_stream: bool
    reliable: bool
    offset: int
    length: int
    ts_ns: int
    packets: tuple[int, int]
    promised_stream_id: int | None = None


@dataclass(frozen=True, slots=True)
class H2Data:
    """Bytes of a DATA frame's payload (§6.1), padding removed, as they arrived: one
    event per TCP segment's share of the frame. ``offset`` is the stream offset of
    the frame header, ``data_offset`` that of ``data[0]``; ``end_stream`` is True only
    on the frame's last event (an empty END_STREAM frame gives one event with
    ``data=b""``). ``ts_ns``/``packet``: the segment that carried the bytes."""

    direction: Direction
    stream_id: int
    data: bytes
    end_stream: bool
    offset: int
    data_offset: int
    ts_ns: int
    packet: int


@dataclass(frozen=True, slots=True)
class H2DataGap:
    """``length`` bytes of a DATA frame's payload that were never captured (a TCP gap
    inside a frame whose header was seen; padding not counted). When the gap took
    the padding-length octet, the rest of the frame is unknown and counted here too.
    ``offset`` is the frame header's stream offset."""

    direction: Direction
    stream_id: int
    length: int
    offset: int
    ts_ns: int
    packet: int


@dataclass(frozen=True, slots=True)
class H2RstStream:
    """An RST_STREAM frame (§6.4); ``error_code`` per §7 (see :func:`error_name`)."""

    direction: Direction
    stream_id: int
    error_code: int
    offset: int
    ts_ns: int
    packet: int


@dataclass(frozen=True, slots=True)
class H2GoAway:
    """A GOAWAY frame (§6.8); ``debug_data`` bounded to :data:`MAX_DEBUG_DATA` bytes."""

    direction: Direction
    last_stream_id: int
    error_code: int
    debug_data: bytes
    offset: int
    ts_ns: int
    packet: int
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class H2WindowUpdate:
    """A WINDOW_UPDATE frame (§6.9); ``stream_id`` 0 for the connection window."""

    direction: Direction
    stream_id: int
    increment: int
    offset: int
    ts_ns: int
    packet: int


@dataclass(frozen=True, slots=True)
class H2Ping:
    """A PING frame (§6.7) with its 8 opaque bytes; ``ack`` for the answer."""

    direction: Direction
    ack: bool
    opaque_data: bytes
    offset: int
    ts_ns: int
    packet: int
    stream_id: int = 0


H2Event = (
    H2Preface
    | H2Settings
    | H2Headers
    | H2Data
    | H2DataGap
    | H2RstStream
    | H2GoAway
    | H2WindowUpdate
    | H2Ping
)
"""Every event type :class:`Http2Connection` returns (besides findings)."""


@dataclass(frozen=True, slots=True)
class H2Stall:
    """A flow-control stall (§5.2): ``direction`` is the DATA sender's, ``stream_id``
    0 for the connection window. From ``start_ts_ns`` (the DATA frame that left the
    window too small) to ``end_ts_ns`` (the WINDOW_UPDATE that made room; None when
    none came before the end), ns. ``packets``: those two packets (one when open)."""

    direction: Direction
    stream_id: int
    start_ts_ns: int
    end_ts_ns: int | None
    packets: tuple[int, ...]

    @property
    def duration_ns(self) -> int | None:
        """``end_ts_ns - start_ts_ns``, None when the stall never ended."""
        return None if self.end_ts_ns is None else self.end_ts_ns - self.start_ts_ns


_new_data = fast_constructor(H2Data)


# --- resynchronisation ----------------------------------------------------------------


def _candidate_rx(limit: int) -> re.Pattern[bytes]:
    """Positions where a frame header of length <= ``limit`` (< 2^16), a known type
    and a clear reserved bit may start (a cheap pre-filter for :func:`_plausible`)."""
    return re.compile(
        b"(?=\\x00[\\x00-\\x%02x][\\x00-\\xff][\\x00-\\x09][\\x00-\\xff][\\x00-\\x7f])"
        % min(limit >> 8, 0xFF)
    )


_RX_DEFAULT = _candidate_rx(DEFAULT_MAX_FRAME_SIZE)
_RX_CACHE: dict[int, re.Pattern[bytes]] = {}


def _rx_for(limit: int) -> re.Pattern[bytes]:
    if limit == DEFAULT_MAX_FRAME_SIZE:
        return _RX_DEFAULT
    rx = _RX_CACHE.get(limit >> 8)
    if rx is None:
        rx = _RX_CACHE[limit >> 8] = _candidate_rx(limit)
    return rx


_RESYNC_LIMIT_MAX = (RESYNC_WINDOW - 9 * RESYNC_CONFIRM) // (RESYNC_CONFIRM - 1)


def _plausible(buf: bytes | bytearray, q: int, limit: int, max_sid: int = 0x7FFFFFFF) -> int:
    """Total length (9 + payload) of the frame whose header is at ``buf[q:q+9]`` when
    that header is plausible, -1 otherwise. Plausible: a known type, length <=
    ``limit``, reserved bit clear, only flags defined for the type, stream id zero or
    not as the type requires, fixed or minimal lengths right, and none of the legal
    but pointless frames that runs of zero bytes resemble (an empty header block
    fragment, an empty DATA frame without END_STREAM); stream id <= ``max_sid``."""
    hi, lo, t, fl, sid = _HDR.unpack_from(buf, q)
    length: int = (hi << 8) | lo
    if length > limit or t > 9 or sid > max_sid or fl & ~_DEFINED_FLAGS[t]:
        return -1
    if sid:
        if t in _NO_STREAM:
            return -1
    elif t in _HAS_STREAM:
        return -1
    fixed = _FIXED_LENGTH.get(t)
    if fixed is not None:
        if length != fixed:
            return -1
    elif t == _SETTINGS:
        if length % 6 or (fl & 1 and length):
            return -1
    elif t == _GOAWAY:
        if length < 8:
            return -1
    else:  # DATA, HEADERS, PUSH_PROMISE, CONTINUATION: padding and fixed fields fit
        need = (1 if fl & 0x08 else 0) + (5 if t == _HEADERS and fl & 0x20 else 0)
        need += 4 if t == _PUSH else 0
        if length < need or length == need and (t != _DATA or not fl & 1):
            return -1
    return 9 + length


def _content_ok(buf: bytes | bytearray, q: int, total: int) -> bool:
    """Judge the payload of the plausible frame at ``buf[q:q+total]`` (available in
    full): no SETTINGS identifier 0, a WINDOW_UPDATE increment in [1, 2^31-1], error
    codes below 256, padding shorter than the payload."""
    t = buf[q + 3]
    fl = buf[q + 4]
    if t in (_WU, _RST, _GOAWAY):
        value: int = _U32(buf, q + (13 if t == _GOAWAY else 9))[0]
        return 0 < value < 0x80000000 if t == _WU else value < 256
    if t == _SETTINGS:
        return all(buf[k] | buf[k + 1] for k in range(q + 9, q + total, 6))
    if fl & 0x08 and t in (_DATA, _HEADERS, _PUSH):
        return buf[q + 9] < total - 9
    return True


def _chain(
    buf: bytes | bytearray,
    p: int,
    n: int,
    limit: int,
    final: bool,
    need: int = 2,
    max_sid: int = 0x7FFFFFFF,
    first_nonempty: bool = False,
) -> int:
    """Verdict on ``p`` as a frame boundary in ``buf[:n]``: 1 accept (``need``
    plausible headers in a row, the payloads between them plausible too, keeping
    §6.10: a header block's frames are contiguous; or, when ``final``, plausible
    frames ending exactly at ``n``), 0 need more bytes (never when ``final``), -1
    reject. A CONTINUATION cannot start a chain, nor, with ``first_nonempty``, an
    empty frame (nine bytes of a zero-heavy payload look like one too easily)."""
    q = p
    count = 0
    prev_open = False  # the previous frame left a header block open
    prev_sid = b""
    while True:
        if n - q < 9:
            if final:
                return 1 if count and q == n else -1
            return 0
        r = _plausible(buf, q, limit, max_sid)
        if r < 0:
            return -1
        t = buf[q + 3]
        if prev_open:
            if t != _CONT or buf[q + 5 : q + 9] != prev_sid:
                return -1
        elif t == _CONT or (first_nonempty and r == 9 and not count):
            return -1
        count += 1
        if count >= need:
            return 1
        if q + r > n:
            return -1 if final else 0
        if not _content_ok(buf, q, r):
            return -1
        prev_open = t in (_HEADERS, _PUSH, _CONT) and not buf[q + 4] & 0x04
        prev_sid = bytes(buf[q + 5 : q + 9])
        q += r


def looks_like_h2(data: bytes) -> int | None:
    """Offset of the first position in ``data`` where HTTP/2 frames plausibly start:
    a chain of at least two plausible frame headers (known type 0-9, length <=
    16,384, reserved bit 0, stream id 0 exactly for SETTINGS/PING/GOAWAY and non-0
    for DATA/HEADERS/PRIORITY/RST_STREAM/PUSH_PROMISE/CONTINUATION, fixed lengths
    PING 8, RST_STREAM 4, WINDOW_UPDATE 4, PRIORITY 5, SETTINGS a multiple of 6, only
    defined flags), or one or more such frames ending exactly at the end of ``data``.
    None when there is no such position. Linear in ``len(data)`` in practice (a
    regular-expression pre-filter); never raises for bytes-like input."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    n = len(data)
    p = 0
    search = _RX_DEFAULT.search
    while p < n:
        m = search(data, p)
        if m is None:
            return None
        p = m.start()
        if _chain(data, p, n, DEFAULT_MAX_FRAME_SIZE, True) == 1:
            return p
        p += 1
    return None


# --- HPACK salvage (a direction whose dynamic table is unknown) -------------------------


def _table_state(table: Any) -> tuple[list[tuple[bytes, bytes]], int, int]:
    return (list(table.dynamic_entries), table._current_size, table.maxsize)


def _restore_table(table: Any, saved: tuple[list[tuple[bytes, bytes]], int, int]) -> None:
    entries, size, maxsize = saved
    table.dynamic_entries.clear()
    table.dynamic_entries.extend(entries)
    table._current_size = size
    table._maxsize = maxsize


def _salvage(decoder: hpack.Decoder, data: bytes) -> Headers:
    """Best-effort RFC 7541 §6 decoding of a header block with an unknown dynamic table:
    the fields whose name and value can be read (static table, literals, dynamic
    entries that exist) in order; references to missing entries are left out, but
    insertions still happen (with an empty name when it is unknown) so that later
    indices stay aligned. Stops at the first malformed representation or after
    :data:`MAX_HEADER_LIST` decoded bytes. Never raises."""
    table = decoder.header_table
    out: list[tuple[bytes, bytes]] = []
    size = 0
    i = 0
    n = len(data)
    try:
        while i < n and size <= MAX_HEADER_LIST:
            b = data[i]
            if b & 0x80:  # §6.1 indexed field
                idx, k = _hh.decode_integer(data[i:], 7)
                i += k
                try:
                    name, value = table.get_by_index(idx)
                except Exception:
                    continue
                out.append((bytes(name), bytes(value)))
                size += 32 + len(name) + len(value)
                continue
            if b & 0xC0 == 0x40:  # §6.2.1 literal with incremental indexing
                prefix, index = 6, True
            elif b & 0xE0 == 0x20:  # §6.3 dynamic table size update
                new, k = _hh.decode_integer(data[i:], 5)
                i += k
                if new > decoder.max_allowed_table_size:
                    return tuple(out)
                table.maxsize = new
                continue
            else:  # §6.2.2/§6.2.3 literal without indexing / never indexed
                prefix, index = 4, False
            idx, k = _hh.decode_integer(data[i:], prefix)
            i += k
            name_b: bytes | None = None
            if idx:
                try:
                    name_b = bytes(table.get_by_index(idx)[0])
                except Exception:
                    name_b = None
            else:
                name_b, i = _literal(data, i)
            value, i = _literal(data, i)
            if index:
                table.add(name_b if name_b is not None else b"", value)
            if name_b is not None:
                out.append((name_b, value))
                size += 32 + len(name_b) + len(value)
    except Exception:
        pass
    return tuple(out)


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """An RFC 7541 §5.2 string literal at ``data[i:]`` and the index after it."""
    huff = data[i] & 0x80
    length, k = _hh.decode_integer(data[i:], 7)
    i += k
    raw = data[i : i + length]
    if len(raw) != length:
        raise ValueError("truncated string literal")
    return (bytes(_decode_huffman(raw)) if huff else raw), i + length


# --- internal state -----------------------------------------------------------------


class _Block:
    """A header block being collected (HEADERS/PUSH_PROMISE + CONTINUATION)."""

    __slots__ = (
        "sid",
        "promised",
        "frags",
        "size",
        "length",
        "offset",
        "first_packet",
        "end_stream",
        "dropped",
    )

    def __init__(self, sid: int, offset: int, first_packet: int, end_stream: bool) -> None:
        self.sid = sid
        self.promised: int | None = None
        self.frags: list[bytes] = []
        self.size = 0
        self.length = 0
        self.offset = offset
        self.first_packet = first_packet
        self.end_stream = end_stream
        self.dropped = False


class _Window:
    """Flow-control bookkeeping of one window (see the module docstring)."""

    __slots__ = ("adj", "low_ts", "low_packet", "low_value", "updates", "ended")

    def __init__(self) -> None:
        self.adj = 0  # stream windows: window = initial + adj; connection: the window
        self.low_ts = 0  # the last DATA on this window
        self.low_packet = 0
        self.low_value: int | None = None  # window after it (None: no DATA yet)
        self.updates: list[tuple[int, int, int]] = []  # (ts, packet, window after)
        self.ended = False


class _Dir:
    """Decoding state of one direction."""

    __slots__ = (
        "d",
        "i",
        "state",
        "offset",
        "pre_pos",
        "hbuf",
        "h_off",
        "h_packet",
        "h_ts",
        "f_type",
        "f_flags",
        "f_sid",
        "f_len",
        "f_off",
        "f_pos",
        "f_hdr",
        "f_packet",
        "f_ts",
        "f_pad",
        "f_end_sent",
        "f_keep",
        "f_skip_decoded",
        "f_block_frame",
        "f_data_tail",
        "body",
        "blk",
        "hpack",
        "hpack_lost",
        "expect_settings",
        "max_frame",
        "rbuf",
        "rpieces",
        "rbase",
        "rskipped",
        "rstart",
        "rpacket",
        "rts",
        "rreason",
        "rstrict",
        "resync_limit",
        "limiter",
    )

    def __init__(self, d: Direction, offset: int) -> None:
        self.d = d
        self.i = int(d)
        self.state = _HEADER
        self.offset = offset  # stream offset of the next byte fed or gapped
        self.pre_pos = 0  # preface bytes matched
        self.hbuf = bytearray()  # partial frame header
        self.h_off = 0
        self.h_packet = 0
        self.h_ts = 0
        # The frame in progress (_DATAST, _BODY, _SKIP).
        self.f_type = 0
        self.f_flags = 0
        self.f_sid = 0
        self.f_len = 0
        self.f_off = 0
        self.f_pos = 0
        self.f_hdr = b""
        self.f_packet = 0
        self.f_ts = 0
        self.f_pad = -1  # DATA: padding length, -1 not known yet, -2 lost in a gap
        self.f_end_sent = False
        self.f_keep = 0
        self.f_skip_decoded = True
        self.f_block_frame = False  # a skipped frame of a dropped header block
        self.f_data_tail = False  # skipping the rest of a DATA frame (padding lost)
        self.body = bytearray()
        self.blk: _Block | None = None
        self.hpack = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.hpack_lost = False
        self.expect_settings = False
        self.max_frame = DEFAULT_MAX_FRAME_SIZE  # the receiver's, for frames of this sender
        self.rbuf = bytearray()
        self.rpieces: list[tuple[int, int, int]] = []  # (length, ts_ns, packet)
        self.rbase = 0
        self.rskipped = 0
        self.rstart = 0
        self.rpacket = 0
        self.rts = 0
        self.rreason = ""
        self.rstrict = True  # bytes were lost: an empty frame cannot start a chain
        self.resync_limit = DEFAULT_MAX_FRAME_SIZE
        self.limiter = FindingLimiter(d, FINDING_LIMIT, "h2_findings_suppressed")


class Http2Connection:
    """Decodes both directions of one HTTP/2 connection (RFC 9113) as an observer.

    ``mode``:

    - ``"prior_knowledge"``: the client's bytes start with the §3.4 preface, the
      server's with a SETTINGS frame;
    - ``"upgrade"`` (h2c, RFC 7540 §3.2): the HTTP/1.1 request and the 101 were
      consumed elsewhere; the client's bytes start with the preface, the server's
      with SETTINGS; stream 1 is the upgraded request (half-closed for the client).
      ``upgrade_settings`` may give the decoded ``HTTP2-Settings`` header (a SETTINGS
      payload) of the request: the client's initial settings;
    - ``"mid_stream"``: the capture began mid-connection: no preface expected, HPACK
      state unknown on both directions (one ``h2_hpack_state_lost`` each, all header
      blocks ``reliable=False``), decoding starts at the first plausible frame
      boundary (:func:`looks_like_h2`), flow-control stalls are not tracked.

    An unknown ``mode`` is treated as ``"mid_stream"``. ``start_offsets``: the TCP
    stream offset (bytes) of the first byte fed per direction. ``max_header_block``:
    see the module docstring (security limit, bytes).

    Public state (read-only for callers): ``decoded_bytes``, ``undecodable_bytes``,
    ``gap_bytes``, ``fed_bytes`` (lists per direction, bytes; see the byte
    accounting in the module docstring), ``buffered_bytes`` (property),
    ``settings`` (per direction, the values its sender set by SETTINGS, later ones
    overriding earlier ones), ``enable_connect_protocol`` (per direction: the
    RFC 8441 §3 SETTINGS_ENABLE_CONNECT_PROTOCOL its sender advertised last, None
    when never), ``frame_counts`` (``(direction, frame type) -> frames``, every
    frame header parsed, erroneous ones included), ``stalls``
    (:class:`H2Stall`), ``hpack_errors`` (per direction, blocks HPACK could not
    decode), ``hpack_lost`` (per direction).

    ``feed``/``gap``/``eof`` never raise on any traffic; ``direction`` must be a
    :class:`~wsanalyze.model.Direction` (or 0/1).
    """

    def __init__(
        self,
        *,
        mode: str = "prior_knowledge",
        start_offsets: tuple[int, int] = (0, 0),
        max_header_block: int = 256 * 1024,
        upgrade_settings: bytes | None = None,
    ) -> None:
        if mode not in ("prior_knowledge", "upgrade", "mid_stream"):
            mode = "mid_stream"
        self.mode = mode
        self.max_header_block = max(0, int(max_header_block))
        self.decoded_bytes = [0, 0]
        self.undecodable_bytes = [0, 0]
        self.gap_bytes = [0, 0]
        self.fed_bytes = [0, 0]
        self.settings: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.enable_connect_protocol: list[bool | None] = [None, None]
        self.frame_counts: dict[tuple[int, int], int] = {}
        self.stalls: list[H2Stall] = []
        self.hpack_errors = [0, 0]
        self._dirs = (
            _Dir(Direction.CLIENT_TO_SERVER, start_offsets[0]),
            _Dir(Direction.SERVER_TO_CLIENT, start_offsets[1]),
        )
        self._started = [False, False]
        self._eof_done = False
        # SETTINGS sent by 1-d awaiting d's ACK: their values apply to d's frames.
        self._pending: tuple[deque[dict[int, int]], deque[dict[int, int]]] = (deque(), deque())
        # Flow control, per DATA sender: connection window, stream windows,
        # initial stream window (the receiver's SETTINGS_INITIAL_WINDOW_SIZE).
        self._fc_on = mode != "mid_stream"
        self._fc_conn = (_Window(), _Window())
        self._fc_conn[0].adj = self._fc_conn[1].adj = DEFAULT_WINDOW
        self._fc_streams: tuple[dict[int, _Window], dict[int, _Window]] = ({}, {})
        self._fc_init = [DEFAULT_WINDOW, DEFAULT_WINDOW]
        # Stream ids opened so far (for RST_STREAM on an idle stream, §6.4).
        self._streams_known = mode != "mid_stream"
        self._max_opened = [0, 0]  # highest odd (client) and even (server) stream id
        self._max_sid = 0  # highest stream id in any frame header so far
        c, s = self._dirs
        if mode == "mid_stream":
            for st in self._dirs:
                st.state = _RESYNC
                st.rreason = "capture started mid-connection"
                st.rstart = st.offset
                st.rbase = st.offset
                st.max_frame = MAX_FRAME_LENGTH  # the receiver's SETTINGS are unknown
                st.resync_limit = _RESYNC_LIMIT_MAX
                st.hpack.max_allowed_table_size = MAX_TABLE_SIZE
        else:
            c.state = _PREFACE
            s.expect_settings = True
        if mode == "upgrade":
            self._max_opened[0] = 1  # stream 1: half-closed (local) for the client
            self._fc_streams[1][1] = _Window()
            if upgrade_settings:
                values = self._parse_settings_payload(upgrade_settings)
                self._apply_settings(c, values, 0, 0, acked=True)

    # -- public API -------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> tuple[int, int]:
        """Bytes held per direction, not yet counted as decoded or undecodable."""
        return (self._buffered(self._dirs[0]), self._buffered(self._dirs[1]))

    @property
    def hpack_lost(self) -> tuple[bool, bool]:
        """Per direction: the HPACK dynamic table state is unknown (blocks unreliable)."""
        return (self._dirs[0].hpack_lost, self._dirs[1].hpack_lost)

    def feed(
        self, direction: Direction, data: bytes, ts_ns: int, packet: int
    ) -> list[H2Event | Finding]:
        """Decode the next ``data`` of ``direction``, carried by ``packet`` (1-based)
        captured at ``ts_ns`` (ns). Returns ``list[H2Event | Finding]`` in stream
        order. Never raises on any bytes."""
        out: list[Any] = []
        n = len(data)
        if n == 0:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        d = int(direction)
        st = self._dirs[d]
        self.fed_bytes[d] += n
        self._start(st, out, ts_ns, packet)
        base = st.offset
        st.offset = base + n
        self._run(st, data, base, ts_ns, packet, out)
        if st.state == _RESYNC:
            self._resync_loop(st, out, ts_ns, final=False)
        return out

    def gap(
        self, direction: Direction, length: int, ts_ns: int, packet: int
    ) -> list[H2Event | Finding]:
        """``length`` bytes of ``direction`` were never captured (the TCP
        reassembler's gap; ``packet``/``ts_ns`` the segment after it). Returns
        ``list[H2Event | Finding]``. Never raises."""
        out: list[Any] = []
        if length <= 0:
            return out
        d = int(direction)
        st = self._dirs[d]
        self.gap_bytes[d] += length
        self._start(st, out, ts_ns, packet)
        at = st.offset
        st.offset = at + length
        self._gap(st, at, length, ts_ns, packet, out)
        return out

    def eof(self, ts_ns: int) -> list[H2Event | Finding]:
        """Both directions are over: a partial frame or header block still held is an
        ``h2_truncated`` finding (its bytes undecodable), a pending resynchronisation
        gets its final verdict, open flow-control stalls are recorded, suppressed
        findings are summarised. Returns ``list[H2Event | Finding]``; calling it again
        returns ``[]``. Never raises."""
        out: list[Any] = []
        if self._eof_done:
            return out
        self._eof_done = True
        for st in self._dirs:
            self._eof_dir(st, ts_ns, out)
        if self._fc_on:
            self._eof_stalls(ts_ns, out)
        for st in self._dirs:
            out.extend(st.limiter.summary(ts_ns))
        return out

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _buffered(st: _Dir) -> int:
        n = len(st.hbuf) + len(st.rbuf)
        if st.state == _BODY:
            n += len(st.body)
        return n

    def _finding(
        self,
        code: str,
        st: _Dir,
        out: list[Any],
        detail: str,
        packets: tuple[int, ...],
        offset: int | None,
        ts_ns: int | None,
    ) -> None:
        st.limiter.emit(out, code, detail, packets, offset, ts_ns)

    def _start(self, st: _Dir, out: list[Any], ts_ns: int, packet: int) -> None:
        """First bytes (or gap) of a direction: in mid_stream mode, its HPACK state is
        unknown from the start."""
        d = st.d
        if self._started[d]:
            return
        self._started[d] = True
        if self.mode == "mid_stream":
            self._lose_hpack(st, "capture started mid-connection", (packet,), st.offset, ts_ns, out)

    def _lose_hpack(
        self,
        st: _Dir,
        why: str,
        packets: tuple[int, ...],
        offset: int | None,
        ts_ns: int,
        out: list[Any],
    ) -> None:
        if st.hpack_lost:
            return
        st.hpack_lost = True
        self._finding(
            "h2_hpack_state_lost",
            st,
            out,
            f"expected=every header block of this direction seen, found={why}; "
            "later header blocks are decoded best-effort (reliable=False)",
            packets,
            offset,
            ts_ns,
        )

    def _lose_boundary(self) -> None:
        """A frame boundary was lost: windows and stream states are unknown now."""
        self._fc_on = False
        self._streams_known = False

    # -- the byte loop ------------------------------------------------------------------

    def _run(
        self, st: _Dir, data: bytes, base: int, ts_ns: int, packet: int, out: list[Any]
    ) -> None:
        """Decode ``data`` (stream offset ``base``) in the direction's current state."""
        i = 0
        n = len(data)
        d = st.d
        while i < n:
            state = st.state
            if state == _HEADER:
                hbuf = st.hbuf
                if hbuf:
                    take = min(9 - len(hbuf), n - i)
                    hbuf += data[i : i + take]
                    i += take
                    if len(hbuf) < 9:
                        return
                    hdr = bytes(hbuf)
                    hbuf.clear()
                    i = self._header(
                        st, hdr, 0, st.h_off, st.h_packet, st.h_ts, data, i, ts_ns, packet, out
                    )
                elif n - i >= 9:
                    i = self._header(
                        st, data, i, base + i, packet, ts_ns, data, i + 9, ts_ns, packet, out
                    )
                else:
                    hbuf += data[i:]
                    st.h_off = base + i
                    st.h_packet = packet
                    st.h_ts = ts_ns
                    return
            elif state == _DATAST:
                i = self._data(st, data, i, base, ts_ns, packet, out)
            elif state == _BODY:
                take = min(st.f_len - st.f_pos, n - i)
                room = st.f_keep - len(st.body)
                if room > 0:
                    st.body += data[i : i + min(room, take)]
                    if take > room:
                        self.decoded_bytes[d] += take - room
                else:
                    self.decoded_bytes[d] += take
                st.f_pos += take
                i += take
                if st.f_pos == st.f_len:
                    self._body_done(st, ts_ns, packet, out)
            elif state == _SKIP:
                take = min(st.f_len - st.f_pos, n - i)
                if st.f_skip_decoded:
                    self.decoded_bytes[d] += take
                else:
                    self.undecodable_bytes[d] += take
                st.f_pos += take
                i += take
                if st.f_pos == st.f_len:
                    self._skip_done(st, ts_ns, packet, out)
            elif state == _PREFACE:
                i = self._preface(st, data, i, base, ts_ns, packet, out)
            else:  # _RESYNC
                if not st.rpacket:
                    st.rpacket, st.rts = packet, ts_ns
                if i == 0:
                    st.rbuf += data
                    st.rpieces.append((n, ts_ns, packet))
                else:
                    st.rbuf += data[i:]
                    st.rpieces.append((n - i, ts_ns, packet))
                return  # scanned by the caller (_resync_loop), never recursively

    def _preface(
        self, st: _Dir, data: bytes, i: int, base: int, ts_ns: int, packet: int, out: list[Any]
    ) -> int:
        """Match the client preface (§3.4); a mismatch is ``h2_bad_preface`` and the
        bytes from the mismatch on are searched for frames."""
        n = len(data)
        pos = st.pre_pos
        take = min(24 - pos, n - i)
        if data[i : i + take] == PREFACE[pos : pos + take]:
            if pos == 0:
                st.h_packet, st.h_ts = packet, ts_ns
            self.decoded_bytes[st.d] += take
            st.pre_pos = pos + take
            if st.pre_pos == 24:
                st.state = _HEADER
                st.expect_settings = True
                out.append(H2Preface(st.d, base + i - pos, ts_ns, packet))
            return i + take
        k = 0
        while data[i + k] == PREFACE[pos + k]:
            k += 1
        self.decoded_bytes[st.d] += k
        at = base + i + k
        self._finding(
            "h2_bad_preface",
            st,
            out,
            f"expected=client connection preface {PREFACE!r}, "
            f"found={bytes(data[i : i + min(take, 24)])!r} at preface byte {pos + k}",
            (st.h_packet or packet, packet) if pos else (packet,),
            base + i - pos,
            ts_ns,
        )
        st.pre_pos = 24
        self._begin_resync(st, at, packet, ts_ns, "bad connection preface", lost=False)
        return i + k

    # -- frame headers ----------------------------------------------------------------

    def _header(
        self,
        st: _Dir,
        hbuf: bytes,
        j: int,
        off: int,
        first_packet: int,
        first_ts: int,
        data: bytes,
        i: int,
        ts_ns: int,
        packet: int,
        out: list[Any],
    ) -> int:
        """Handle the frame header at ``hbuf[j:j+9]`` (stream offset ``off``); the
        payload starts at ``data[i]``. Returns the index in ``data`` to go on from."""
        hi, lo, t, fl, sid = _HDR.unpack_from(hbuf, j)
        length: int = (hi << 8) | lo
        sid &= 0x7FFFFFFF  # §4.1: the reserved bit MUST be ignored when receiving
        d = st.d
        key = (st.i, t)
        fc = self.frame_counts
        fc[key] = fc.get(key, 0) + 1
        if sid > self._max_sid:
            self._max_sid = sid
        self.decoded_bytes[d] += 9
        if st.expect_settings:
            st.expect_settings = False
            if t != _SETTINGS:
                who = "client" if d == 0 else "server"
                self._finding(
                    "h2_bad_preface",
                    st,
                    out,
                    f"expected=SETTINGS as the {who}'s first frame, found={_type_name(t)} "
                    f"on stream {sid}",
                    (first_packet, packet),
                    off,
                    ts_ns,
                )
        # DATA: the hot path (no hyperframe object, no buffering).
        if t == _DATA and st.blk is None and sid and length <= st.max_frame:
            if not fl & 0x08:
                if self._fc_on:
                    self._fc_data(st, sid, length, fl & 1, first_ts, first_packet, out)
                if len(data) - i >= length:
                    if length or fl & 1:
                        out.append(
                            _new_data(
                                d,
                                sid,
                                data[i : i + length],
                                bool(fl & 1),
                                off,
                                off + 9,
                                ts_ns,
                                packet,
                            )
                        )
                    self.decoded_bytes[d] += length
                    return i + length
                st.state = _DATAST
                st.f_type, st.f_flags, st.f_sid, st.f_len = t, fl, sid, length
                st.f_off, st.f_pos = off, 0
                st.f_packet, st.f_ts = first_packet, first_ts
                st.f_pad = 0
                st.f_end_sent = False
                return i
        st.f_type, st.f_flags, st.f_sid, st.f_len = t, fl, sid, length
        st.f_off, st.f_pos, st.f_hdr = off, 0, bytes(hbuf[j : j + 9])
        st.f_packet, st.f_ts = first_packet, first_ts
        st.f_block_frame = False
        st.f_data_tail = False
        blk = st.blk
        if blk is not None and (t != _CONT or sid != blk.sid):
            # §6.10: a header block is a contiguous sequence of frames.
            self._finding(
                "h2_frame_error",
                st,
                out,
                f"expected=CONTINUATION on stream {blk.sid}, found={_type_name(t)} on stream {sid}",
                (blk.first_packet, packet),
                off,
                ts_ns,
            )
            self._abort_block(st, "header block interrupted by another frame", ts_ns, packet, out)
        problem = self._header_problem(st, t, fl, sid, length)
        if problem and length > st.max_frame and _plausible(hbuf, j, MAX_FRAME_LENGTH) < 0:
            # Too long AND wrong in other ways: more likely garbage than a frame, so
            # its length is not trusted; look for the next frame boundary instead.
            self._frame_error(st, problem + ", not trusted", t, sid, out, ts_ns, packet)
            self.decoded_bytes[d] -= 9
            self.undecodable_bytes[d] += 9
            if st.blk is not None:
                self._abort_block(st, "an implausible frame header", ts_ns, packet, out)
            self._begin_resync(
                st, off + 9, packet, ts_ns, f"implausible frame header at offset {off}", lost=True
            )
            st.rstart = off
            st.rskipped = 9
            return i
        if problem:
            self._frame_error(st, problem, t, sid, out, ts_ns, packet)
            if t in (_HEADERS, _PUSH, _CONT):
                self._lose_hpack(
                    st, f"an invalid {_type_name(t)} frame", (first_packet, packet), off, ts_ns, out
                )
                if t == _CONT and st.blk is not None:
                    self._abort_block(st, "invalid CONTINUATION", ts_ns, packet, out)
            self.decoded_bytes[d] -= 9
            self.undecodable_bytes[d] += 9
            self._skip(st, decoded=False)
            return self._zero_length(st, i, ts_ns, packet, out) if length == 0 else i
        if t == _DATA:  # PADDED, or after an interrupted header block
            return self._data_start(st, fl, sid, length, off, first_packet, first_ts, i, out)
        if t in (_HEADERS, _PUSH, _CONT):
            if t != _CONT:
                blk = _Block(sid, off, first_packet, bool(fl & 1))
                st.blk = blk
                if t == _HEADERS and self._streams_known and sid & 1:
                    self._open_stream(sid)
            else:
                blk = st.blk
                assert blk is not None
            blk.length += 9 + length
            if blk.dropped:
                st.f_block_frame = True
                self._skip(st, decoded=False)
            elif blk.size + length > self.max_header_block:
                self._finding(
                    "h2_header_block_too_large",
                    st,
                    out,
                    f"expected<={self.max_header_block} bytes of header block, "
                    f"found>={blk.size + length} on stream {sid}",
                    (blk.first_packet, packet),
                    blk.offset,
                    ts_ns,
                )
                self._drop_block(st, "header block too large", packet, ts_ns, out)
                st.f_block_frame = True
                self._skip(st, decoded=False)
            else:
                self._body(st, length)
            if length == 0:
                return self._zero_length(st, i, ts_ns, packet, out)
            return i
        if t == _PRIORITY or t > _CONT:
            self._skip(st, decoded=True)  # §4.1: unknown types MUST be ignored
        elif t == _SETTINGS:
            self._body(st, min(length, MAX_SETTINGS_BYTES))
        elif t == _GOAWAY:
            self._body(st, min(length, 8 + MAX_DEBUG_DATA))
        else:  # RST_STREAM, PING, WINDOW_UPDATE
            self._body(st, length)
        if length == 0:
            return self._zero_length(st, i, ts_ns, packet, out)
        return i

    def _data_start(
        self,
        st: _Dir,
        fl: int,
        sid: int,
        length: int,
        off: int,
        first_packet: int,
        first_ts: int,
        i: int,
        out: list[Any],
    ) -> int:
        """Begin a (valid) DATA frame in the _DATAST state."""
        if self._fc_on:
            self._fc_data(st, sid, length, fl & 1, first_ts, first_packet, out)
        st.state = _DATAST
        st.f_pad = -1 if fl & 0x08 else 0
        st.f_end_sent = False
        if length == 0:
            if fl & 1:
                out.append(_new_data(st.d, sid, b"", True, off, off + 9, first_ts, first_packet))
            st.state = _HEADER
        return i

    def _zero_length(self, st: _Dir, i: int, ts_ns: int, packet: int, out: list[Any]) -> int:
        if st.state == _BODY:
            self._body_done(st, ts_ns, packet, out)
        elif st.state == _SKIP:
            self._skip_done(st, ts_ns, packet, out)
        return i

    def _header_problem(self, st: _Dir, t: int, fl: int, sid: int, length: int) -> str:
        """A §4/§6 framing violation visible in a frame header, or ``""``."""
        if length > st.max_frame:
            return f"expected=length<={st.max_frame} (SETTINGS_MAX_FRAME_SIZE), found={length}"
        if t > _CONT:
            return ""
        if t in _NO_STREAM:
            if sid:
                return f"expected=stream 0, found=stream {sid}"
        elif t in _HAS_STREAM and not sid:
            return "expected=a stream id, found=stream 0"
        fixed = _FIXED_LENGTH.get(t)
        if fixed is not None and length != fixed:
            return f"expected=length {fixed}, found={length}"
        if t == _SETTINGS:
            if fl & 1 and length:
                return f"expected=empty SETTINGS ACK, found=length {length}"
            if length % 6:
                return f"expected=length a multiple of 6, found={length}"
        elif t == _GOAWAY and length < 8:
            return f"expected=length>=8, found={length}"
        elif t == _PUSH:
            if st.d == Direction.CLIENT_TO_SERVER:
                return "expected=no PUSH_PROMISE from a client (§8.4), found=PUSH_PROMISE"
        if t == _CONT and st.blk is None:
            return "expected=CONTINUATION only after HEADERS/PUSH_PROMISE without END_HEADERS, found=CONTINUATION"
        if t in (_DATA, _HEADERS, _PUSH):
            need = (1 if fl & 0x08 else 0) + (5 if t == _HEADERS and fl & 0x20 else 0)
            need += 4 if t == _PUSH else 0
            if length < need:
                return f"expected=length>={need} (padding/priority fields), found={length}"
        return ""

    def _frame_error(
        self, st: _Dir, detail: str, t: int, sid: int, out: list[Any], ts_ns: int, packet: int
    ) -> None:
        self._finding(
            "h2_frame_error",
            st,
            out,
            f"{detail} ({_type_name(t)} frame, stream {sid})",
            (st.f_packet, packet),
            st.f_off,
            ts_ns,
        )

    def _skip(self, st: _Dir, *, decoded: bool) -> None:
        st.state = _SKIP
        st.f_pos = 0
        st.f_skip_decoded = decoded

    def _body(self, st: _Dir, keep: int) -> None:
        st.state = _BODY
        st.f_pos = 0
        st.f_keep = keep
        st.body = bytearray()

    # -- DATA -------------------------------------------------------------------------

    def _data(
        self, st: _Dir, data: bytes, i: int, base: int, ts_ns: int, packet: int, out: list[Any]
    ) -> int:
        """Stream the DATA payload bytes of ``data[i:]``; returns the index after them."""
        n = len(data)
        pos = st.f_pos
        length = st.f_len
        take = min(length - pos, n - i)
        d = st.d
        if st.f_pad == -1:  # PADDED: the first payload octet is the padding length
            pad = data[i]
            if pad >= length:
                # §6.1: padding "equal to or greater than the length of the frame
                # payload" is a PROTOCOL_ERROR.
                self._frame_error(
                    st,
                    f"expected=padding<{length}, found=padding {pad}",
                    _DATA,
                    st.f_sid,
                    out,
                    ts_ns,
                    packet,
                )
                self.decoded_bytes[d] -= 9
                self.undecodable_bytes[d] += 9
                self._skip(st, decoded=False)
                return i
            st.f_pad = pad
        self.decoded_bytes[d] += take
        end = pos + take
        if st.f_pad >= 0:
            lo = 1 if st.f_flags & 0x08 else 0
            hi = length - st.f_pad
            a = pos if pos > lo else lo
            b = end if end < hi else hi
            done = end == length
            if b > a:
                last = done and st.f_flags & 1
                chunk = (
                    data
                    if (i == 0 and a == pos and take == n and b == end)
                    else data[i + a - pos : i + b - pos]
                )
                out.append(
                    _new_data(
                        d, st.f_sid, chunk, bool(last), st.f_off, st.f_off + 9 + a, ts_ns, packet
                    )
                )
                if last:
                    st.f_end_sent = True
        st.f_pos = end
        if end == length:
            st.state = _HEADER
            if self._fc_on:
                self._fc_data_done(st, st.f_sid, ts_ns, packet)
            if st.f_flags & 1 and not st.f_end_sent:
                # data_offset: right after the data (before any padding)
                end_data = st.f_off + 9 + length - max(st.f_pad, 0)
                out.append(_new_data(d, st.f_sid, b"", True, st.f_off, end_data, ts_ns, packet))
        return i + take

    # -- non-DATA frames ------------------------------------------------------------------

    def _body_done(self, st: _Dir, ts_ns: int, packet: int, out: list[Any]) -> None:
        """A buffered frame is complete: parse it with hyperframe and act on it."""
        st.state = _HEADER
        body = bytes(st.body)
        st.body = bytearray()
        d = st.d
        t = st.f_type
        kept = len(body)
        try:
            frame, _ = Frame.parse_frame_header(memoryview(st.f_hdr))
            frame.parse_body(memoryview(body))
        except Exception as exc:  # hyperframe on hostile input: a framing error
            self.decoded_bytes[d] -= 9
            self.undecodable_bytes[d] += 9 + kept
            self._frame_error(
                st,
                f"expected=valid {_type_name(t)} payload, found={type(exc).__name__}: {exc}",
                t,
                st.f_sid,
                out,
                ts_ns,
                packet,
            )
            if t in (_HEADERS, _PUSH, _CONT):
                self._drop_block(st, f"invalid {_type_name(t)} frame", packet, ts_ns, out)
                self._maybe_close_block(st, ts_ns, packet, out)
            return
        self.decoded_bytes[d] += kept
        off = st.f_off
        sid = st.f_sid
        if t == _HEADERS or t == _PUSH or t == _CONT:
            blk = st.blk
            if blk is None:  # pragma: no cover - guarded by _header_problem
                return
            frag = frame.data  # type: ignore[attr-defined]
            if t == _PUSH:
                blk.promised = frame.promised_stream_id  # type: ignore[attr-defined]
                if self._streams_known:
                    self._open_stream(blk.promised)
            blk.frags.append(frag)
            blk.size += len(frag)
            self._maybe_close_block(st, ts_ns, packet, out)
        elif t == _SETTINGS:
            # Wire order and repeated identifiers kept (hyperframe's dict loses them).
            values = [
                (body[k] << 8 | body[k + 1], _U32(body, k + 2)[0])
                for k in range(0, len(body) - 5, 6)
            ]
            ack = bool(st.f_flags & 1)
            out.append(H2Settings(d, ack, tuple(values), off, ts_ns, packet))
            if ack:
                self._settings_acked(st)
            else:
                self._check_settings(st, values, out, ts_ns, packet)
                self._apply_settings(st, dict(values), ts_ns, packet)
        elif t == _RST:
            code = frame.error_code  # type: ignore[attr-defined]
            if self._streams_known and self._idle(sid):
                self._frame_error(
                    st,
                    f"expected=RST_STREAM on an open or closed stream, found=idle stream {sid} "
                    f"({error_name(code)})",
                    t,
                    sid,
                    out,
                    ts_ns,
                    packet,
                )
            out.append(H2RstStream(d, sid, code, off, ts_ns, packet))
            self._fc_forget(sid)
        elif t == _PING:
            out.append(
                H2Ping(d, bool(st.f_flags & 1), bytes(frame.opaque_data), off, ts_ns, packet)  # type: ignore[attr-defined]
            )
        elif t == _GOAWAY:
            code = frame.error_code  # type: ignore[attr-defined]
            debug = bytes(frame.additional_data)[:MAX_DEBUG_DATA]  # type: ignore[attr-defined]
            last = frame.last_stream_id & 0x7FFFFFFF  # type: ignore[attr-defined]
            out.append(H2GoAway(d, last, code, debug, off, ts_ns, packet))
            if code != 0:
                self._finding(
                    "h2_goaway_error",
                    st,
                    out,
                    f"expected=NO_ERROR, found={error_name(code)} "
                    f"(last_stream_id={last}, debug={debug[:120]!r})",
                    (st.f_packet, packet),
                    off,
                    ts_ns,
                )
        elif t == _WU:
            inc = frame.window_increment  # type: ignore[attr-defined]
            out.append(H2WindowUpdate(d, sid, inc, off, ts_ns, packet))
            if self._fc_on:
                self._fc_update(st, sid, inc, ts_ns, packet)

    def _skip_done(self, st: _Dir, ts_ns: int, packet: int, out: list[Any]) -> None:
        st.state = _HEADER
        if st.f_block_frame:
            st.f_block_frame = False
            self._maybe_close_block(st, ts_ns, packet, out)
        elif st.f_data_tail:  # the rest of a DATA frame whose padding length was lost
            st.f_data_tail = False
            if st.f_flags & 1:
                off = st.f_off
                out.append(
                    _new_data(st.d, st.f_sid, b"", True, off, off + 9 + st.f_len, ts_ns, packet)
                )

    # -- header blocks ----------------------------------------------------------------

    def _maybe_close_block(self, st: _Dir, ts_ns: int, packet: int, out: list[Any]) -> None:
        """After a frame of the open block: decode the block on END_HEADERS."""
        blk = st.blk
        if blk is None or not st.f_flags & 0x04:
            return
        st.blk = None
        d = st.d
        headers: Headers = ()
        if not blk.dropped:
            block = b"".join(blk.frags)
            table = st.hpack.header_table
            saved = _table_state(table) if st.hpack_lost else None
            try:
                decoded = st.hpack.decode(block, raw=True)
                headers = tuple((bytes(k), bytes(v)) for k, v in decoded)
                ok = True
            except Exception as exc:  # hpack on hostile input
                ok = False
                self.hpack_errors[d] += 1
                if saved is not None:
                    # The table is unknown anyway: keep what can be read.
                    _restore_table(table, saved)
                    headers = _salvage(st.hpack, block)
                if not st.hpack_lost:
                    self._finding(
                        "h2_hpack_error",
                        st,
                        out,
                        f"expected=a decodable header block, found={type(exc).__name__}: "
                        f"{str(exc)[:120]} (stream {blk.sid})",
                        (blk.first_packet, packet),
                        blk.offset,
                        ts_ns,
                    )
                    self._lose_hpack(
                        st,
                        "an undecodable header block",
                        (blk.first_packet, packet),
                        blk.offset,
                        ts_ns,
                        out,
                    )
            reliable = ok and not st.hpack_lost
        else:
            reliable = False
        out.append(
            H2Headers(
                d,
                blk.sid,
                headers,
                blk.end_stream,
                reliable,
                blk.offset,
                blk.length,
                ts_ns,
                (blk.first_packet, packet),
                blk.promised,
            )
        )
        if blk.end_stream:
            self._fc_end(d, blk.sid)

    def _drop_block(self, st: _Dir, why: str, packet: int, ts_ns: int, out: list[Any]) -> None:
        """The open block can no longer be decoded: HPACK state is lost."""
        blk = st.blk
        if blk is None:
            return
        if not blk.dropped:
            blk.dropped = True
            blk.frags = []
            self._lose_hpack(st, why, (blk.first_packet, packet), blk.offset, ts_ns, out)

    def _abort_block(self, st: _Dir, why: str, ts_ns: int, packet: int, out: list[Any]) -> None:
        """End the open block now, undecoded (its H2Headers has headers=())."""
        blk = st.blk
        if blk is None:
            return
        self._drop_block(st, why, packet, ts_ns, out)
        st.blk = None
        out.append(
            H2Headers(
                st.d,
                blk.sid,
                (),
                blk.end_stream,
                False,
                blk.offset,
                blk.length,
                ts_ns,
                (blk.first_packet, packet),
                blk.promised,
            )
        )

    # -- SETTINGS -----------------------------------------------------------------------

    @staticmethod
    def _parse_settings_payload(payload: bytes) -> dict[int, int]:
        return {
            payload[k] << 8 | payload[k + 1]: _U32(payload, k + 2)[0]
            for k in range(0, len(payload) - 5, 6)
        }

    def _check_settings(
        self, st: _Dir, values: list[tuple[int, int]], out: list[Any], ts_ns: int, packet: int
    ) -> None:
        """§6.5.2 value ranges (and RFC 8441 §3 for ENABLE_CONNECT_PROTOCOL)."""
        d = st.d
        for ident, value in values:
            problem = ""
            if ident == 0x2 and value > 1:
                problem = f"expected=ENABLE_PUSH 0 or 1, found={value}"
            elif ident == 0x2 and value == 1 and d == Direction.SERVER_TO_CLIENT:
                problem = "expected=no ENABLE_PUSH=1 from a server (§6.5.2), found=1"
            elif ident == 0x4 and value > 0x7FFFFFFF:
                problem = f"expected=INITIAL_WINDOW_SIZE<=2^31-1, found={value}"
            elif ident == 0x5 and not DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_LENGTH:
                problem = f"expected=MAX_FRAME_SIZE in [16384, 16777215], found={value}"
            elif ident == 0x8 and value > 1:
                problem = f"expected=ENABLE_CONNECT_PROTOCOL 0 or 1, found={value}"
            elif ident == 0x8 and value == 0 and self.enable_connect_protocol[d] is True:
                problem = "expected=no ENABLE_CONNECT_PROTOCOL=0 after 1 (RFC 8441 §3), found=0"
            if problem:
                self._frame_error(st, problem, _SETTINGS, 0, out, ts_ns, packet)

    def _apply_settings(
        self, st: _Dir, values: dict[int, int], ts_ns: int, packet: int, *, acked: bool = False
    ) -> None:
        """SETTINGS sent by ``st``'s sender: they govern what the peer sends.
        ``acked``: no ACK will come (the h2c HTTP2-Settings header)."""
        d = st.d
        peer = self._dirs[1 - d]
        self.settings[d].update(values)
        if 0x8 in values:
            self.enable_connect_protocol[d] = bool(values[0x8])
        # Values apply to the peer once it acknowledges; until then accept both.
        pend = self._pending[1 - d]
        if not acked:
            pend.append(values)
            if len(pend) > 16:
                pend.popleft()
        if 0x1 in values and self.mode != "mid_stream":
            new = min(values[0x1], MAX_TABLE_SIZE)
            if new > peer.hpack.max_allowed_table_size:
                peer.hpack.max_allowed_table_size = new
        if 0x5 in values and DEFAULT_MAX_FRAME_SIZE <= values[0x5] <= MAX_FRAME_LENGTH:
            if self.mode == "mid_stream" and peer.max_frame == MAX_FRAME_LENGTH:
                peer.max_frame = values[0x5]
            else:
                peer.max_frame = max(peer.max_frame, values[0x5])
            peer.resync_limit = min(peer.max_frame, _RESYNC_LIMIT_MAX)
        if 0x4 in values and values[0x4] <= 0x7FFFFFFF:
            self._fc_initial(1 - d, values[0x4], ts_ns, packet)

    def _settings_acked(self, st: _Dir) -> None:
        """``st``'s sender acknowledged the peer's oldest pending SETTINGS."""
        pend = self._pending[st.d]
        if not pend:
            return
        values = pend.popleft()
        if 0x1 in values and self.mode != "mid_stream":
            st.hpack.max_allowed_table_size = min(values[0x1], MAX_TABLE_SIZE)
        if 0x5 in values and DEFAULT_MAX_FRAME_SIZE <= values[0x5] <= MAX_FRAME_LENGTH:
            st.max_frame = values[0x5]
            st.resync_limit = min(st.max_frame, _RESYNC_LIMIT_MAX)

    # -- stream states (only what the frame checks need) ----------------------------------

    def _open_stream(self, sid: int) -> None:
        """A new stream (HEADERS opening it, or PUSH_PROMISE reserving it)."""
        k = sid & 1 ^ 1  # 0 for odd (client-initiated), 1 for even
        if sid <= self._max_opened[k]:
            return
        self._max_opened[k] = sid
        for d in (0, 1):
            streams = self._fc_streams[d]
            if sid not in streams and len(streams) < MAX_TRACKED_STREAMS:
                streams[sid] = _Window()

    def _idle(self, sid: int) -> bool:
        return sid > self._max_opened[sid & 1 ^ 1]

    # -- flow control (§5.2, §6.9) ------------------------------------------------------

    def _fc_data(
        self, st: _Dir, sid: int, length: int, end: int, ts_ns: int, packet: int, out: list[Any]
    ) -> None:
        """A DATA frame of ``length`` (padding included) from ``st``'s sender, whose
        header came in ``packet`` at ``ts_ns``."""
        d = st.d
        conn = self._fc_conn[d]
        streams = self._fc_streams[d]
        w = streams.get(sid)
        if w is None and not end and len(streams) < MAX_TRACKED_STREAMS:
            w = streams[sid] = _Window()
        if length:
            c_stall = self._fc_check(conn, length, ts_ns)
            s_stall = self._fc_check(w, length, ts_ns) if w is not None else None
            if c_stall is not None or s_stall is not None:
                self._stalls(st, sid, c_stall, s_stall, out)
        conn.adj -= length
        conn.low_ts, conn.low_packet, conn.low_value = ts_ns, packet, conn.adj
        conn.updates = []
        if w is not None:
            w.adj -= length
            w.low_ts, w.low_packet = ts_ns, packet
            w.low_value = self._fc_init[d] + w.adj
            w.updates = []
            if end:
                del streams[sid]

    def _fc_data_done(self, st: _Dir, sid: int, ts_ns: int, packet: int) -> None:
        """The last byte of a DATA frame spanning segments: the sender is blocked
        from here on, not from the frame's header."""
        d = st.d
        conn = self._fc_conn[d]
        conn.low_ts, conn.low_packet = ts_ns, packet
        w = self._fc_streams[d].get(sid)
        if w is not None:
            w.low_ts, w.low_packet = ts_ns, packet

    @staticmethod
    def _fc_check(w: _Window, length: int, ts_ns: int) -> tuple[int, int, int, int] | None:
        """Before a DATA frame of ``length`` on window ``w``: was the sender waiting
        for the WINDOW_UPDATEs since its previous DATA frame? Returns (start ts,
        start packet, end ts, end packet) of the stall, or None."""
        low = w.low_value
        if low is None or not w.updates or low >= length:
            return None
        end_ts, end_packet = w.updates[-1][:2]
        for uts, upk, after in w.updates:
            if after >= length:
                end_ts, end_packet = uts, upk
                break
        end_ts = max(end_ts, w.low_ts)
        if low > 0 and ts_ns - end_ts > end_ts - w.low_ts:
            return None  # the window had room: the sender was idle, not blocked
        return (w.low_ts, w.low_packet, end_ts, end_packet)

    def _stalls(
        self,
        st: _Dir,
        sid: int,
        c_stall: tuple[int, int, int, int] | None,
        s_stall: tuple[int, int, int, int] | None,
        out: list[Any],
    ) -> None:
        """Record the stalls of the connection and/or stream ``sid`` windows; one
        finding when both windows stalled with the same bounds."""
        items: list[tuple[str, tuple[int, int, int, int]]] = []
        if c_stall is not None:
            self.stalls.append(H2Stall(st.d, 0, c_stall[0], c_stall[2], (c_stall[1], c_stall[3])))
            items.append(("connection window", c_stall))
        if s_stall is not None:
            self.stalls.append(H2Stall(st.d, sid, s_stall[0], s_stall[2], (s_stall[1], s_stall[3])))
            if s_stall == c_stall:
                items = [(f"connection and stream {sid} windows", s_stall)]
            else:
                items.append((f"stream {sid} window", s_stall))
        for what, (start, start_packet, end, end_packet) in items:
            if end - start > STALL_MIN_NS:
                self._finding(
                    "h2_flow_control_stall",
                    st,
                    out,
                    "expected=DATA sent without waiting for flow-control credit, "
                    f"found=sender waited {(end - start) / 1e6:.3f} ms for a WINDOW_UPDATE "
                    f"on the {what}",
                    (start_packet, end_packet),
                    None,
                    start,
                )

    def _open_stall(
        self, st: _Dir, sid: int, w: _Window, value: int, ts_ns: int, out: list[Any]
    ) -> None:
        """At the end: window ``w`` still exhausted (``value`` <= 0)."""
        self.stalls.append(H2Stall(st.d, sid, w.low_ts, None, (w.low_packet,)))
        if ts_ns - w.low_ts > STALL_MIN_NS:
            what = f"stream {sid} window" if sid else "connection window"
            self._finding(
                "h2_flow_control_stall",
                st,
                out,
                f"expected=a WINDOW_UPDATE reopening the {what} ({value} bytes), "
                f"found=none in the last {(ts_ns - w.low_ts) / 1e6:.3f} ms of the connection",
                (w.low_packet,),
                None,
                w.low_ts,
            )

    def _fc_update(self, st: _Dir, sid: int, inc: int, ts_ns: int, packet: int) -> None:
        """A WINDOW_UPDATE from ``st``'s sender: it opens the peer's window."""
        s = 1 - st.d
        if sid == 0:
            w = self._fc_conn[s]
            w.adj += inc
            value = w.adj
        else:
            w2 = self._fc_streams[s].get(sid)
            if w2 is None:
                return
            w = w2
            w.adj += inc
            value = self._fc_init[s] + w.adj
        if w.low_value is not None and len(w.updates) < 64:
            w.updates.append((ts_ns, packet, value))

    def _fc_initial(self, s: int, value: int, ts_ns: int, packet: int) -> None:
        """The receiver changed SETTINGS_INITIAL_WINDOW_SIZE for sender ``s`` (§6.9.2)."""
        old = self._fc_init[s]
        self._fc_init[s] = value
        if value > old and self._fc_on:
            for w in self._fc_streams[s].values():
                if w.low_value is not None and len(w.updates) < 64:
                    w.updates.append((ts_ns, packet, value + w.adj))

    def _fc_end(self, d: int, sid: int) -> None:
        self._fc_streams[d].pop(sid, None)

    def _fc_forget(self, sid: int) -> None:
        self._fc_streams[0].pop(sid, None)
        self._fc_streams[1].pop(sid, None)

    def _eof_stalls(self, ts_ns: int, out: list[Any]) -> None:
        for d in (0, 1):
            st = self._dirs[d]
            streams = self._fc_streams[d]
            conn = self._fc_conn[d]
            if streams and conn.low_value is not None and conn.adj <= 0:
                self._open_stall(st, 0, conn, conn.adj, ts_ns, out)
            init = self._fc_init[d]
            for sid, w in streams.items():
                if w.low_value is not None and init + w.adj <= 0:
                    self._open_stall(st, sid, w, init + w.adj, ts_ns, out)

    # -- gaps ---------------------------------------------------------------------------

    def _gap(self, st: _Dir, at: int, length: int, ts_ns: int, packet: int, out: list[Any]) -> None:
        """Apply a gap of ``length`` bytes at stream offset ``at``."""
        d = st.d
        state = st.state
        if state == _PREFACE:
            rest = 24 - st.pre_pos
            if length < rest:
                st.pre_pos += length
                return
            st.pre_pos = 24
            st.state = _HEADER
            st.expect_settings = False
            at += rest
            length -= rest
            if not length:
                return  # the gap ended exactly at the end of the preface
        elif state == _DATAST:
            rest = st.f_len - st.f_pos
            g = min(rest, length)
            pos, end = st.f_pos, st.f_pos + g
            if st.f_pad == -1:
                st.f_pad = -2  # the padding-length octet is lost: the split is unknown
            if st.f_pad == -2:
                lost = st.f_len - pos  # the rest of the frame cannot be used
            else:
                lo = 1 if st.f_flags & 0x08 else 0
                hi = st.f_len - st.f_pad
                lost = max(0, min(end, hi) - max(pos, lo))
            if lost:
                out.append(H2DataGap(d, st.f_sid, lost, st.f_off, ts_ns, packet))
            st.f_pos = end
            if end == st.f_len:
                st.state = _HEADER
                if st.f_flags & 1 and not st.f_end_sent:
                    # data_offset: right after the data (before any known padding)
                    end_data = st.f_off + 9 + st.f_len - max(st.f_pad, 0)
                    out.append(_new_data(d, st.f_sid, b"", True, st.f_off, end_data, ts_ns, packet))
            elif st.f_pad == -2:  # skip the captured rest of this frame (in the H2DataGap)
                st.state = _SKIP
                st.f_skip_decoded = False
                st.f_block_frame = False
                st.f_data_tail = True
            at += g
            length -= g
            if not length:
                return
        elif state in (_BODY, _SKIP):
            rest = st.f_len - st.f_pos
            g = min(rest, length)
            if state == _BODY:
                t = st.f_type
                self.decoded_bytes[d] -= 9
                self.undecodable_bytes[d] += 9 + len(st.body)
                st.body = bytearray()
                self._finding(
                    "h2_frame_lost_in_gap",
                    st,
                    out,
                    f"expected={st.f_len} payload bytes of {_type_name(t)} on stream "
                    f"{st.f_sid}, found={st.f_pos} then a gap of {length} bytes",
                    (st.f_packet, packet),
                    st.f_off,
                    ts_ns,
                )
                if t in (_HEADERS, _PUSH, _CONT):
                    self._drop_block(
                        st, f"a gap inside a {_type_name(t)} frame", packet, ts_ns, out
                    )
                    st.f_block_frame = True
                    if t == _PUSH:
                        self._streams_known = False  # the promised stream id is lost
                elif t == _SETTINGS or t == _WU:
                    self._fc_on = False  # a window change was lost
                st.state = _SKIP
                st.f_skip_decoded = False
            st.f_pos += g
            if st.f_pos == st.f_len:
                self._skip_done(st, ts_ns, packet, out)
            at += g
            length -= g
            if not length:
                return
        elif state == _RESYNC:
            # Bytes held before the gap cannot chain across it.
            held = len(st.rbuf)
            self.undecodable_bytes[d] += held
            st.rskipped += held
            st.rbuf.clear()
            st.rpieces.clear()
            st.rbase = at + length
            return
        # _HEADER (or what remains of the gap after a frame): the boundary is lost.
        if st.hbuf:
            self.undecodable_bytes[d] += len(st.hbuf)
            carry = len(st.hbuf)
            st.hbuf.clear()
        else:
            carry = 0
        if st.blk is not None:
            self._abort_block(st, "a gap between frames of a header block", ts_ns, packet, out)
        self._lose_hpack(
            st, f"a gap of {length} bytes across a frame boundary", (packet,), at, ts_ns, out
        )
        self._begin_resync(st, at + length, packet, ts_ns, f"gap of {length} bytes", lost=True)
        st.rskipped = carry
        st.rstart = at - carry

    # -- resynchronisation --------------------------------------------------------------

    def _begin_resync(
        self, st: _Dir, at: int, packet: int, ts_ns: int, reason: str, *, lost: bool
    ) -> None:
        st.state = _RESYNC
        st.rbuf.clear()
        st.rpieces.clear()
        st.rbase = at
        st.rstart = at
        st.rskipped = 0
        st.rpacket = packet
        st.rts = ts_ns
        st.rreason = reason
        st.rstrict = lost
        st.expect_settings = False
        if lost:
            self._lose_boundary()
        st.blk = None

    def _resync_loop(self, st: _Dir, out: list[Any], ts_ns: int, *, final: bool) -> None:
        """Resynchronise, decode the held bytes from the boundary found, and again if
        they lead back to resynchronisation (an iterative loop: hostile input cannot
        make it recurse; each round decodes at least one frame header)."""
        while st.state == _RESYNC:
            replay = self._resync(st, out, ts_ns, final=final)
            if not replay:
                return
            for data, base, pts, ppk in replay:
                self._run(st, data, base, pts, ppk, out)

    def _resync(
        self, st: _Dir, out: list[Any], ts_ns: int, *, final: bool
    ) -> list[tuple[bytes, int, int, int]] | None:
        """Look in the held bytes for a frame boundary (see the module docstring). On
        success the state is _HEADER and the held bytes from the boundary on are
        returned as (data, stream offset, ts_ns, packet) pieces to decode."""
        buf = st.rbuf
        n = len(buf)
        limit = st.resync_limit
        # New streams during a gap are few: stream ids far above those seen are noise.
        max_sid = self._max_sid + STREAM_ID_MARGIN
        if self.mode == "mid_stream" and not self._max_sid:
            max_sid = 0x7FFFFFFF
        search = _rx_for(limit).search
        p = 0
        verdict = -1
        while p < n:
            m = search(buf, p)
            if m is None:
                keep = 0 if final else min(8, n - p)
                p = n - keep
                verdict = 0 if keep else -1
                break
            p = m.start()
            verdict = _chain(buf, p, n, limit, final, RESYNC_CONFIRM, max_sid, st.rstrict)
            if verdict >= 0:
                break
            p += 1
        if p:
            d = st.d
            self.undecodable_bytes[d] += p
            st.rskipped += p
            del buf[:p]
            st.rbase += p
            drop_pieces(st.rpieces, p)
        if verdict == 1:
            pieces = st.rpieces
            resume_packet = pieces[0][2] if pieces else st.rpacket
            if st.rskipped or st.rreason.startswith("gap"):
                self._finding(
                    "h2_gap_resync",
                    st,
                    out,
                    f"expected=a frame header after the {st.rreason}, "
                    f"found={st.rskipped} bytes skipped before the next plausible frame header "
                    f"at offset {st.rbase}",
                    (st.rpacket, resume_packet) if st.rpacket else (resume_packet,),
                    st.rstart,
                    ts_ns,
                )
            if st.rskipped:
                self._lose_hpack(
                    st, f"{st.rskipped} bytes skipped", (resume_packet,), st.rbase, ts_ns, out
                )
                self._lose_boundary()
            data = bytes(buf)
            base = st.rbase
            buf.clear()
            st.rpieces = []
            st.state = _HEADER
            start = 0
            replay = []
            for length, pts, ppk in pieces:
                replay.append((data[start : start + length], base + start, pts, ppk))
                start += length
            return replay
        if final:
            held = len(buf)
            self.undecodable_bytes[st.d] += held
            st.rskipped += held
            buf.clear()
            st.rpieces.clear()
            if st.rskipped:
                self._finding(
                    "h2_gap_resync",
                    st,
                    out,
                    f"expected=a frame header after the {st.rreason}, found={st.rskipped} "
                    "bytes skipped and no plausible frame header before the end",
                    (st.rpacket,) if st.rpacket else (),
                    st.rstart,
                    ts_ns,
                )
            st.state = _HEADER
        return None

    # -- end ------------------------------------------------------------------------------

    def _eof_dir(self, st: _Dir, ts_ns: int, out: list[Any]) -> None:
        d = st.d
        state = st.state
        if state == _RESYNC:
            if not st.rpacket and st.rpieces:
                st.rpacket = st.rpieces[0][2]
            self._resync_loop(st, out, ts_ns, final=True)
            state = st.state
        if state == _PREFACE:
            if 0 < st.pre_pos < 24:
                self._finding(
                    "h2_truncated",
                    st,
                    out,
                    f"expected=24-byte connection preface, found={st.pre_pos} bytes then the end",
                    (st.h_packet,),
                    st.offset - st.pre_pos,
                    ts_ns,
                )
        elif state == _HEADER:
            if st.hbuf:
                k = len(st.hbuf)
                self.undecodable_bytes[d] += k
                st.hbuf.clear()
                self._finding(
                    "h2_truncated",
                    st,
                    out,
                    f"expected=9-byte frame header, found={k} bytes then the end",
                    (st.h_packet,),
                    st.h_off,
                    ts_ns,
                )
        else:  # _DATAST, _BODY, _SKIP: a frame cut by the end
            if state == _BODY:
                self.decoded_bytes[d] -= 9
                self.undecodable_bytes[d] += 9 + len(st.body)
                st.body = bytearray()
            self._finding(
                "h2_truncated",
                st,
                out,
                f"expected={st.f_len} payload bytes of {_type_name(st.f_type)} on stream "
                f"{st.f_sid}, found={st.f_pos} then the end",
                (st.f_packet,),
                st.f_off,
                ts_ns,
            )
            st.state = _HEADER
        if st.blk is not None:
            blk = st.blk
            self._finding(
                "h2_truncated",
                st,
                out,
                f"expected=CONTINUATION with END_HEADERS on stream {blk.sid}, found=the end",
                (blk.first_packet,),
                blk.offset,
                ts_ns,
            )
            self._abort_block(st, "the end inside a header block", ts_ns, blk.first_packet, out)
