"""A headless Chromium driven over the Chrome DevTools Protocol (CDP), for tests that
open an HTML report in a real browser. No driver, no new dependency: the browser is
started as a subprocess (``--remote-debugging-port=0``, it prints its DevTools
address on stderr) and spoken to with the ``websockets`` library (sync client).

One browser connection carries every page: each page is a target attached with a
flattened session (``Target.attachToTarget`` ``flatten``), so the events of a page
carry its ``sessionId``. Every wait has a deadline; a dialog (``alert``) is recorded
and dismissed at once, so a script that opens one cannot block the page.

    with Chromium.start(profile_dir) as browser:   # close() ends its process group
        page = browser.new_page()
        page.open(path)            # file:// URL, waits for the load event
        page.evaluate("document.title")
        page.exceptions, page.console_errors, page.log_errors, page.dialogs
        png = page.screenshot()    # PNG bytes of the whole page
        page.close()
"""

from __future__ import annotations

import atexit
import base64
import inspect
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import unquote

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MiB
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(RuntimeError):
    """A CDP command answered with an error, or the browser went away."""


def find_chromium() -> str | None:
    """``$WSANALYZE_CHROMIUM``, else the first Chromium/Chrome on PATH, else
    Debian's /usr/bin/chromium; None when there is none."""
    env = os.environ.get("WSANALYZE_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _connect(url: str, timeout: float):
    from websockets.sync.client import connect

    kw: dict[str, Any] = {"max_size": None, "open_timeout": timeout, "close_timeout": 2}
    params = inspect.signature(connect).parameters
    if "proxy" in params:  # websockets >= 15 would honour $http_proxy for 127.0.0.1
        kw["proxy"] = None
    if "ping_interval" in params:
        kw["ping_interval"] = None
    if "legacy" in params:  # websockets >= 17.1: a connection not used as a context manager
        kw["legacy"] = True
    return connect(url, **kw)


class Chromium:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, proc: subprocess.Popen, ws, stderr_tail: deque[str]) -> None:
        self.proc = proc
        self.ws = ws
        self._stderr_tail = stderr_tail
        self._ids = itertools.count(1)
        self._responses: dict[int, dict[str, Any]] = {}
        self._unawaited: set[int] = set()  # commands whose answer nobody waits for
        self.pages: dict[str, Page] = {}
        self._closed = False
        atexit.register(self.close)

    # --- life cycle --------------------------------------------------------------------

    @classmethod
    def start(
        cls, profile_dir: Path | str, *, executable: str | None = None, timeout: float = 30.0
    ) -> Chromium:
        """Start a headless Chromium with a fresh profile in ``profile_dir`` and
        connect to it. Raises RuntimeError (with the browser's stderr) when it does
        not come up within ``timeout`` seconds; the process is then killed."""
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("no Chromium executable")
        argv = [exe, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"]
        # Its own process group: the browser, its zygote and renderers are ended
        # together by that group id (see close()).
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        tail: deque[str] = deque(maxlen=40)
        found: list[str] = []
        ready = threading.Event()

        def drain() -> None:  # read stderr to the end, so the pipe never fills
            assert proc.stderr is not None
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                tail.append(line)
                m = _LISTENING.search(line)
                if m and not found:
                    found.append(m.group(1))
                    ready.set()
            ready.set()  # EOF: the browser exited

        threading.Thread(target=drain, name="chromium-stderr", daemon=True).start()
        try:
            if not ready.wait(timeout) or not found:
                raise RuntimeError(
                    f"Chromium did not print its DevTools address within {timeout:.0f} s "
                    f"(exit status {proc.poll()}); stderr:\n" + "\n".join(tail)
                )
            ws = _connect(found[0], timeout)
        except BaseException:
            _kill_group(proc)
            raise
        return cls(proc, ws, tail)

    def close(self) -> None:
        """Close the connection and end the browser's process group (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            # A graceful exit first: the browser reaps its own zygote and renderers.
            self._post("Browser.close", None, None)
            self.proc.wait(timeout=5)
        except Exception:
            pass
        try:
            self.ws.close()
        except Exception:
            pass
        _kill_group(self.proc)
        atexit.unregister(self.close)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    # --- the protocol --------------------------------------------------------------------

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Send a command and wait (at most ``timeout`` s) for its result; events
        arriving meanwhile go to their page."""
        cid = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        while cid not in self._responses:
            self._pump(deadline, f"{method} (no answer within {timeout:.0f} s)")
        resp = self._responses.pop(cid)
        if "error" in resp:
            raise CDPError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    def _post(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        cid = next(self._ids)
        msg: dict[str, Any] = {"id": cid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        try:
            self.ws.send(json.dumps(msg))
        except Exception as exc:
            raise CDPError(
                f"{method}: browser connection lost ({exc}); stderr:\n" + self.stderr_tail()
            ) from exc
        return cid

    def _pump(self, deadline: float, waiting_for: str) -> None:
        """Receive one message (or time out at ``deadline``) and dispatch it."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {waiting_for}")
        try:
            raw = self.ws.recv(timeout=remaining)
        except TimeoutError:
            raise TimeoutError(f"timed out waiting for {waiting_for}") from None
        except Exception as exc:
            raise CDPError(
                f"browser connection lost waiting for {waiting_for} ({exc}); "
                f"exit status {self.proc.poll()}; stderr:\n" + self.stderr_tail()
            ) from exc
        msg = json.loads(raw)
        if "id" in msg:
            if msg["id"] in self._unawaited:
                self._unawaited.discard(msg["id"])
            else:
                self._responses[msg["id"]] = msg
            return
        page = self.pages.get(msg.get("sessionId", ""))
        if page is not None:
            page._event(msg["method"], msg.get("params", {}))

    def drain(self, seconds: float) -> None:
        """Dispatch whatever events arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._pump(deadline, "events")
            except TimeoutError:
                return

    def new_page(self, *, timeout: float = 15.0) -> Page:
        """A new tab (about:blank) with Page, Runtime and Log enabled."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        tid = target["targetId"]
        sid = self.send(
            "Target.attachToTarget", {"targetId": tid, "flatten": True}, timeout=timeout
        )["sessionId"]
        page = Page(self, tid, sid)
        self.pages[sid] = page
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable", timeout=timeout)
        return page


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL when the test process dies, even
    killed outright (no finalizer then). Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group started for ``proc`` (its id is ``proc.pid``), then
    SIGKILL it if the browser has not exited within 5 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:  # renderers left behind, or a browser that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass
    if proc.stderr is not None:
        proc.stderr.close()


class Page:
    """One tab. ``exceptions`` (uncaught, with their text), ``console_errors``
    (``console.error``/``console.assert``), ``log_errors`` (browser-side errors: a
    CSP violation, a failed load) and ``dialogs`` (alert/confirm/prompt, each
    dismissed) accumulate from the moment the page was created."""

    def __init__(self, browser: Chromium, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self.log_errors: list[str] = []
        self.dialogs: list[str] = []
        self._loads = 0

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 15.0):
        return self.browser.send(method, params, session=self.session_id, timeout=timeout)

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            exc = d.get("exception", {})
            self.exceptions.append(
                f"{d.get('text', '')} {exc.get('description', '')} "
                f"at {d.get('url', '')}:{d.get('lineNumber', '?')}".strip()
            )
        elif method == "Runtime.consoleAPICalled":
            if params.get("type") in ("error", "assert"):
                args = params.get("args", [])
                self.console_errors.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                )
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            if e.get("level") == "error":
                self.log_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{params.get('type')}: {params.get('message')}")
            # Dismiss at once (not waiting for the answer): a dialog blocks the page.
            cid = self.browser._post(
                "Page.handleJavaScriptDialog", {"accept": False}, self.session_id
            )
            self.browser._unawaited.add(cid)
        elif method == "Page.loadEventFired":
            self._loads += 1

    def open(self, path_or_url: Path | str, *, timeout: float = 30.0, settle: float = 0.2) -> None:
        """Navigate to a file (or URL), wait for its load event and that the document
        is complete, then let timers and image error handlers run for ``settle`` s."""
        url = path_or_url if isinstance(path_or_url, str) else Path(path_or_url).resolve().as_uri()
        deadline = time.monotonic() + timeout
        loads = self._loads
        nav = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if nav.get("errorText"):
            raise CDPError(f"navigating to {url}: {nav['errorText']}")
        while True:
            while self._loads == loads:
                self.browser._pump(deadline, f"the load event of {url}")
            loads = self._loads
            state = self.evaluate(
                "[document.readyState, location.href]",
                timeout=max(1.0, deadline - time.monotonic()),
            )
            if state[0] == "complete" and unquote(state[1]) == unquote(url):
                break
        self.evaluate(
            f"new Promise(r => requestAnimationFrame(() => setTimeout(r, {int(settle * 1000)})))",
            await_promise=True,
            timeout=max(5.0, settle + 5),
        )
        self.browser.drain(0.05)

    def evaluate(self, expression: str, *, await_promise: bool = False, timeout: float = 15.0):
        """The value of a JavaScript expression (JSON-serialisable; undefined is
        None). A JavaScript exception in it raises CDPError."""
        r = self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": await_promise,
                "userGesture": False,
            },
            timeout=timeout,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(
                f"evaluating {expression[:80]!r}: "
                f"{d.get('exception', {}).get('description') or d.get('text')}"
            )
        return r.get("result", {}).get("value")

    def screenshot(self, *, max_height: int = 8000, timeout: float = 30.0) -> bytes:
        """A PNG of the whole page (at most ``max_height`` CSS pixels tall)."""
        m = self.send("Page.getLayoutMetrics", timeout=timeout)
        size = m.get("cssContentSize") or m["contentSize"]
        width = max(1, int(size["width"]))
        height = max(1, min(int(size["height"]), max_height))
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            timeout=timeout,
        )
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        self.browser.pages.pop(self.session_id, None)
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target_id}, timeout=5)
        except (CDPError, TimeoutError):
            pass
