"""Progress on stderr for long analyses: one line, redrawn in place.

Shown only when the stream is a terminal and the work has taken longer than
:data:`DELAY_S` (a quick analysis prints nothing), and erased before anything else
is printed. No dependency: a percentage when the capture's size is known, a
spinner and the bytes read when it is not (standard input).

Use :class:`Progress` as the ``progress`` callback of :func:`wsanalyze.analyze`
(``progress(role, bytes_read, total_bytes)``); :meth:`Progress.stage` names a later
step (writing a report); :meth:`Progress.close` erases the line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

DELAY_S = 1.0
"""Seconds of work before the progress line appears."""

INTERVAL_S = 0.1
"""Least seconds between two redraws."""

_SPINNER = "|/-\\"
_ERASE = "\r\x1b[K"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Progress:
    """A progress line on ``stream`` (stderr by default).

    ``enabled`` None means "when ``stream`` is a terminal". ``delay`` and
    ``interval`` in seconds; ``clock`` returns seconds (tests pass their own).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        delay: float | None = None,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.delay = DELAY_S if delay is None else delay
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.shown = False  # a line is on the terminal
        self._last_draw: float | None = None
        self._spin = 0
        self._role: str | None = None

    def __call__(self, role: str, done: int, total: int | None) -> None:
        """The ``analyze(progress=...)`` callback: ``done`` of ``total`` bytes of
        the ``role`` capture read (``total`` None when unknown); a role "client and
        server" is both captures read at once."""
        what = "captures" if " and " in role else "capture"
        if total:
            pct = min(100, done * 100 // total)
            text = f"analysing the {role} {what} {pct:3d}% ({_mb(done)} of {_mb(total)})"
        else:
            self._spin = (self._spin + 1) % len(_SPINNER)
            text = f"analysing the {role} {what} {_SPINNER[self._spin]} {_mb(done)} read"
        self._show(text, force=role != self._role)
        self._role = role

    def stage(self, text: str) -> None:
        """Name the current step (shown at once if a line is already shown)."""
        self._show(text, force=True)

    def _show(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.started < self.delay:
            return
        if not force and self._last_draw is not None and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self.stream.write(f"{_ERASE}wsanalyze: {text}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Erase the line (if one was shown), so that output starts on a clean line."""
        if self.shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self.shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
