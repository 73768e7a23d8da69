"""The server-side capture analysed in a second process while this one reads the
client side: two captures take about as long as the larger one (the issue's "two-
capture analysis may use both cores, one process per capture").

The child is forked (POSIX ``fork`` start method, so nothing is re-imported and no
argument is pickled); it runs :func:`~wsanalyze.pipeline.analyze_capture` and sends
back, over a pipe, progress reports and then the finished
:class:`~wsanalyze.pipeline.CaptureAnalysis`, pickled by :mod:`multiprocessing`.
That stream is made by this package's own code in a process it started, never
read from a file or the network, so unpickling it is safe: nothing from a capture
is ever unpickled (captured bytes travel inside ``bytes`` objects, as data).

Where ``fork`` is not available (Windows), only one CPU is, or the process runs
other threads (a Jupyter kernel), :func:`server_job` returns None and the caller
analyses the captures one after the other.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .errors import CaptureError
from .pipeline import CaptureAnalysis, analyze_capture

# Messages from the child: ("progress", done, total), then one of ("result",
# CaptureAnalysis), ("capture_error", message) or ("error", traceback text).


def _child(conn: Any, path: Any, options: dict[str, Any], progress: bool) -> None:
    """The forked process: analyse ``path`` as the server capture, send the result."""
    try:
        report = (lambda done, total: conn.send(("progress", done, total))) if progress else None
        capture = analyze_capture(path, "server", progress=report, **options)
        conn.send(("result", capture))
    except CaptureError as exc:
        conn.send(("capture_error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
        conn.send(("error", "".join(traceback.format_exception(exc))))
    finally:
        conn.close()


class ServerJob:
    """The server capture's analysis running in a child process.

    :meth:`poll` relays the progress reports received so far; :meth:`result` waits
    for the analysis and returns it, raising :class:`~wsanalyze.errors.CaptureError`
    with the child's message when the file cannot be used, and RuntimeError (with
    the child's traceback) for anything else. :meth:`cancel` stops the child.
    """

    def __init__(
        self,
        path: Any,
        options: dict[str, Any],
        progress: Callable[[int, int | None], None] | None,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._progress = progress
        self._proc = ctx.Process(
            target=_child,
            args=(child_conn, path, options, progress is not None),
            name="wsanalyze-server-capture",
            daemon=True,
        )
        self._proc.start()
        child_conn.close()  # the child's end: EOF here when the child exits
        self._final: tuple | None = None

    def _handle(self, msg: tuple) -> None:
        if msg[0] == "progress":
            if self._progress is not None:
                self._progress(msg[1], msg[2])
        else:
            self._final = msg

    def poll(self) -> None:
        """Relay the progress reports that have arrived (never blocks)."""
        while self._final is None and self._conn.poll():
            self._handle(self._conn.recv())

    def result(self) -> CaptureAnalysis:
        """Wait for the child's analysis and return it (see the class doc)."""
        try:
            while self._final is None:
                try:
                    msg = self._conn.recv()
                except EOFError:
                    self._proc.join()
                    raise RuntimeError(
                        f"the server capture's analysis process ended without a result "
                        f"(exit code {self._proc.exitcode})"
                    ) from None
                self._handle(msg)
        finally:
            self._conn.close()
            self._proc.join()
        kind, value = self._final
        if kind == "result":
            return value
        if kind == "capture_error":
            raise CaptureError(value)
        raise RuntimeError(f"the server capture's analysis failed:\n{value}")

    def cancel(self) -> None:
        """Stop the child (the client side failed or was interrupted)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._conn.close()


def parallel_available() -> bool:
    """True when a second process can analyse the server capture: the ``fork``
    start method exists, this process may use more than one CPU, and it runs no
    other Python thread (forking a threaded process, a Jupyter kernel say, can leave
    the child waiting on a lock some other thread held; there the captures are read
    one after the other)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if threading.active_count() > 1:
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus > 1


def server_job(
    path: Any,
    options: dict[str, Any],
    progress: Callable[[int, int | None], None] | None,
) -> ServerJob | None:
    """Start analysing ``path`` as the server capture in a child process, or return
    None when that is not possible here (see :func:`parallel_available`)."""
    if not parallel_available():
        return None
    try:
        return ServerJob(path, options, progress)
    except OSError:  # no process could be started (limits): do it in this one
        return None
