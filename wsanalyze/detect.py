"""Recognise RFC 6455 frames by their structure when the opening handshake was not
captured (the capture started after the connection was upgraded).

Sans-IO and bounded: :func:`detect` is given the first bytes seen in each direction
of one TCP connection (at most :data:`SCAN_LIMIT` bytes each are looked at) and says
whether they are WebSocket frames, where the frames start in each direction and
which side masks its frames (RFC 6455 §5.1: the client, and only the client).

What counts as a frame header (RFC 6455 §5.2, §5.4, §5.5; RFC 7692 §6)
-----------------------------------------------------------------------
A header is *plausible* when it keeps every rule a correct peer keeps:

- the opcode is defined (0x0-0x2, 0x8-0xA);
- RSV2 and RSV3 are clear; RSV1 (the one bit permessage-deflate gives a meaning,
  and extensions are unknown without the handshake) only on a text or binary frame
  (RFC 7692 §6: never on a continuation or control frame);
- a control frame has FIN set and at most 125 payload bytes;
- the length uses the minimal encoding; a 64-bit length is below
  :data:`MAX_PLAUSIBLE_LENGTH` (1 TiB: a real frame is never near 2^63);
- it is not an empty non-final fragment (legal, but so rare that runs of zero
  bytes would otherwise read as frames);
- its MASK bit equals that of the first header of the run (one direction is all
  masked, client → server, or all unmasked, server → client).

A *run* is a chain of plausible headers, each starting where the previous frame
ends, that fragments consistently (no continuation after a final fragment, no new
text/binary frame inside a fragmented message; a run may begin inside a message)
and that covers the bytes given from its first header to the end: the data ends
exactly at a frame boundary, inside the last frame's payload, or inside the last
header. A run qualifies with at least :data:`MIN_RUN` headers, or with at least one
when the data ends exactly at a frame boundary. A chain of :data:`MAX_RUN` plausible
headers qualifies whatever follows (so a protocol violation later in the stream
does not hide the frames before it).

Start offset (capture started in the middle of a frame): alignments 0 ..
:data:`ALIGN_WINDOW` - 1 are tried in order and the first where a qualifying run
starts is taken; the bytes before it belong to a frame whose start was not
captured (the caller counts them as undecodable).

Decision
--------
Each qualifying run scores ``frames + 2`` when the data ends exactly at a frame
boundary, else ``frames`` (frames counted up to :data:`MAX_RUN`). The connection
is WebSocket when the best of: one direction's score, or the sum of both when one
direction is masked and the other is not, reaches :data:`DETECT_SCORE`. The masked
direction is the client's; when only one direction has a run, its MASK bit says
which side it is. With ``final=False`` the answer is None (wait for more bytes)
until the score is reached, or False as soon as no direction has a run and no
direction that sent bytes can still get one (a silent direction keeps nothing open).

False positives
---------------
One random byte pair is a plausible header with probability about 13/256 (first
byte) x 1/2 (MASK bit matching the run) ≈ 1/40; a run of k headers that also ends
exactly at the end of the data needs k independent coincidences and an exact
landing. Requiring a score of 9 means seven chained headers ending exactly in one
direction, or five in all (three and two, four and one) ending exactly in both
directions, with opposite MASK bits. Measured on 1,000,000 pairs of random byte
strings of 1-2,000 bytes: no detection; a score of 7 for 34 pairs and of 8 for 2
(each point of score 15-20 times rarer than the one before), so about one random
connection in 10^7 would reach 9. tests/test_detect.py keeps 10,000 pairs and a
hypothesis property in CI.

Protocols that could look like frames, by their first bytes:

- TLS records start 0x14-0x17 0x03: RSV3 set and a reserved opcode, so a run can
  never start at a record header; a run starting in ciphertext must jump over every
  record header (at most 16 KiB + 5 bytes apart) with headers that are themselves
  random bytes (above).
- HTTP/2 frames start with a 24-bit length whose first byte is almost always 0x00
  (an empty non-final continuation when the second byte is 0 too) and a type/flags
  pair that rarely chains to the next 9-byte header.
- Text protocols (Redis, SMTP, HTTP bodies, JSON) are printable ASCII: FIN is clear,
  so only 'A' and 'B' (a text or binary fragment with RSV1) are plausible, and the
  continuation or control frame that must follow them starts with a byte that is
  not printable: runs of one header at most, unmasked both ways, never a decision.
- Length-prefixed binary protocols (PostgreSQL, MySQL, Kafka) put a type byte with
  RSV bits or a reserved opcode, or a zero length byte, where a header would be.

What it cannot do: a connection whose first :data:`SCAN_LIMIT` bytes per direction
hold fewer than five frames in all (one huge message, or a single ping and pong),
or whose frame boundaries all lie beyond :data:`ALIGN_WINDOW` in a direction, is not
recognised (in that direction); ``--decode-as PORT`` forces the decoding.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

ALIGN_WINDOW = 4096
"""Start offsets tried per direction (bytes), for a capture that began mid-frame."""

SCAN_LIMIT = 1024 * 1024
"""Bytes of each direction the detector looks at, at most. Chains jump over frame
payloads, so the work does not grow with it; it lets a run go on past frames of
tens of KiB (random data stops every chain well before: a 16-bit length reaches
64 KiB at most and a 64-bit one must exceed 64 KiB and stay below
:data:`MAX_PLAUSIBLE_LENGTH`)."""

MIN_RUN = 3
"""Plausible headers in a row that make a run (fewer when the data ends exactly at
the end of the last one)."""

MAX_RUN = 32
"""A chain of this many plausible headers qualifies without walking further (bounds
the work per alignment to this many steps)."""

EXACT_BONUS = 2
"""Score added when the data ends exactly at a frame boundary."""

DETECT_SCORE = 9
"""Score a connection needs to be WebSocket (see the module docstring)."""

MAX_PLAUSIBLE_LENGTH = 1 << 40
"""Largest payload length (bytes) a 64-bit length field may declare in a run."""

_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from


def _b0_plausible(b0: int) -> bool:
    op = b0 & 0x0F
    if b0 & 0x30 or op not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
        return False  # RSV2/RSV3, or a reserved opcode (§5.2)
    if op >= 0x8 and not b0 & 0x80:
        return False  # a fragmented control frame (§5.5)
    return not (b0 & 0x40 and op not in (0x1, 0x2))  # RSV1: first data frame only


_B0_OK = tuple(_b0_plausible(b0) for b0 in range(256))
_B0_SET = bytes(b0 for b0 in range(256) if _B0_OK[b0])
_CANDIDATE = re.compile(b"[" + re.escape(_B0_SET) + b"]")
_HLEN = tuple(2 + (4 if b1 & 0x80 else 0) + {126: 2, 127: 8}.get(b1 & 0x7F, 0) for b1 in range(256))


@dataclass(frozen=True, slots=True)
class Run:
    """A run of plausible frame headers in the first bytes of one direction.

    ``offset``: index in the bytes scanned of the first header (the bytes before it
    are the end of a frame whose start was not captured); ``frames``: headers in the
    run, counted up to :data:`MAX_RUN`; ``masked``: the frames carry a masking key
    (RFC 6455 §5.3: client → server); ``exact``: the bytes scanned end exactly at
    the end of the last frame.
    """

    offset: int
    frames: int
    masked: bool
    exact: bool

    @property
    def score(self) -> int:
        """``frames`` plus :data:`EXACT_BONUS` when ``exact``."""
        return self.frames + (EXACT_BONUS if self.exact else 0)


@dataclass(frozen=True, slots=True)
class Detection:
    """The verdict on one connection.

    ``websocket`` is True (frames), False (not frames) or None (undecided: give more
    bytes). ``runs`` holds the run found in each direction, in the order the
    directions were given (None where there is none). ``client`` is the index (0 or
    1) of the direction whose frames are masked, i.e. the client → server one
    (RFC 6455 §5.1), None when the evidence does not say. ``score`` is the evidence
    score compared with :data:`DETECT_SCORE`.
    """

    websocket: bool | None
    runs: tuple[Run | None, Run | None]
    client: int | None
    score: int


def _walk(data: bytes, p: int, n: int) -> tuple[int, bool, bool] | None:
    """Follow the chain of headers from ``data[p]`` to ``n``: ``(frames, masked,
    exact)`` when every header is plausible and the chain reaches ``n`` (or
    :data:`MAX_RUN` headers), None when a header breaks a rule."""
    if n - p < 2:
        return None  # not even one header byte pair: nothing to judge
    masked = data[p + 1] >= 0x80
    in_message: bool | None = None  # unknown until the run's first data frame
    frames = 0
    q = p
    b0_ok = _B0_OK
    while True:
        if q == n:
            return frames, masked, True
        if q > n:
            return frames, masked, False  # the data ends inside this frame's payload
        if frames >= MAX_RUN:
            return frames, masked, False
        if n - q < 2:
            return (frames, masked, False) if b0_ok[data[q]] else None
        b0 = data[q]
        b1 = data[q + 1]
        if not b0_ok[b0] or (b1 >= 0x80) is not masked:
            return None
        len7 = b1 & 0x7F
        fin = b0 >= 0x80
        control = b0 & 0x08
        if control and len7 > 125:
            return None
        if len7 == 0 and not fin:
            return None  # an empty non-final fragment
        hlen = _HLEN[b1]
        if n - q < hlen:
            return frames, masked, False  # the data ends inside this header
        if len7 < 126:
            plen = len7
        elif len7 == 126:
            plen = _U16(data, q + 2)[0]
            if plen < 126:
                return None
        else:
            plen = _U64(data, q + 2)[0]
            if plen < 0x10000 or plen >= MAX_PLAUSIBLE_LENGTH:
                return None
        if not control:
            if in_message is (b0 & 0x0F != 0):
                return None  # continuation outside, or text/binary inside, a message
            in_message = not fin
        frames += 1
        q += hlen + plen


def scan(data: bytes) -> tuple[Run | None, bool]:
    """The first qualifying run in the first bytes of one direction, and whether one
    may still appear with more bytes.

    Looks at ``data[:SCAN_LIMIT]``, alignments ``0 .. ALIGN_WINDOW - 1``. Returns
    ``(run, alive)``: ``run`` is None when no alignment qualifies; ``alive`` is
    False when no alignment can qualify whatever bytes follow (every chain broke a
    rule and no new alignment is left to try).
    """
    if len(data) > SCAN_LIMIT:
        data = data[:SCAN_LIMIT]
    n = len(data)
    alive = n < ALIGN_WINDOW
    for m in _CANDIDATE.finditer(data, 0, min(n, ALIGN_WINDOW)):
        p = m.start()
        r = _walk(data, p, n)
        if r is None:
            if n - p < 2:
                alive = True  # one header byte so far
            continue
        frames, masked, exact = r
        alive = True
        if frames >= MIN_RUN or (exact and frames >= 1):
            return Run(p, frames, masked, exact), True
    return None, alive


def detect(first: bytes, second: bytes, *, final: bool = False) -> Detection:
    """Decide whether ``first`` and ``second`` (the first bytes of the two directions
    of one TCP connection, either may be empty) are RFC 6455 frames.

    ``final``: no more bytes will come (the connection ended or the caller's buffer
    is full), so the answer is True or False, never None. Cost: at most
    :data:`ALIGN_WINDOW` x :data:`MAX_RUN` header checks per direction.
    """
    (ra, alive_a), (rb, alive_b) = scan(first), scan(second)
    runs = (ra, rb)
    sa = ra.score if ra is not None else 0
    sb = rb.score if rb is not None else 0
    score, client = 0, None
    if ra is not None and rb is not None and ra.masked != rb.masked:
        score, client = sa + sb, (0 if ra.masked else 1)
    elif ra is not None or rb is not None:
        side, r = (0, ra) if sa >= sb else (1, rb)
        assert r is not None
        score = r.score
        if runs[1 - side] is None:  # else both mask alike: the roles are unclear
            client = side if r.masked else 1 - side
    if score >= DETECT_SCORE:
        return Detection(True, runs, client, score)
    # Nothing seen can be frames: no run, and every direction with bytes is dead (a
    # silent direction is no evidence either way, so it does not keep this open).
    hopeless = (
        ra is None
        and rb is None
        and (first or second)
        and not (first and alive_a)
        and not (second and alive_b)
    )
    if final or hopeless:
        return Detection(False, runs, client, score)
    return Detection(None, runs, client, score)
