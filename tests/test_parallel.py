"""Two captures analysed at once (wsanalyze.parallel): the same analysis as one
after the other, the same errors, progress for both, no process left behind."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from conftest import capture_paths

from wsanalyze import analyze, parallel, pipeline, report
from wsanalyze.errors import CaptureError

needs_fork = pytest.mark.skipif(
    not parallel.parallel_available(), reason="needs the fork start method and 2 CPUs"
)


def _json(a) -> str:
    return json.dumps(report.to_json(a), sort_keys=True)


@needs_fork
@pytest.mark.parametrize("scenario", ["nginx-ok", "haproxy-fragmented", "nginx-deflate"])
def test_the_analysis_is_the_same_as_one_after_the_other(scenario):
    client, server = capture_paths(scenario)
    one_by_one = analyze(client, server, parallel=False, strict=True)
    at_once = analyze(client, server, parallel=True, strict=True)
    assert _json(at_once) == _json(one_by_one)
    assert len(at_once.correlation.pairs) == len(one_by_one.correlation.pairs) > 0
    # the server side came back whole: tables, close stories, frames
    assert at_once.messages.equals(one_by_one.messages)
    assert len(at_once.server.frames) == len(one_by_one.server.frames) > 0
    assert not multiprocessing.active_children()


@needs_fork
def test_the_server_side_really_ran_in_another_process(monkeypatch):
    """The child's analyze_capture is the forked copy: a marker set only in the
    child's module proves which process analysed the server capture."""
    import os

    parent = os.getpid()
    real = parallel.analyze_capture
    pids = {}

    def spy(path, role, **kwargs):
        pids[role] = os.getpid()
        cap = real(path, role, **kwargs)
        cap.path = f"{cap.path}#pid={os.getpid()}"
        return cap

    monkeypatch.setattr(parallel, "analyze_capture", spy)
    client, server = capture_paths("nginx-ok")
    a = analyze(client, server, parallel=True, strict=True)
    assert a.server.path.startswith(str(server)) and "#pid=" in a.server.path
    assert int(a.server.path.split("#pid=")[1]) != parent
    assert "server" not in pids  # recorded in the child, not here


@needs_fork
def test_an_unusable_server_file_is_the_same_one_line_error(tmp_path):
    client, _ = capture_paths("nginx-ok")
    bad = tmp_path / "server.pcap"
    bad.write_bytes(b"this is not a capture at all")
    with pytest.raises(CaptureError) as sequential:
        analyze(client, bad, parallel=False)
    with pytest.raises(CaptureError) as at_once:
        analyze(client, bad, parallel=True)
    assert str(at_once.value) == str(sequential.value)
    assert "\n" not in str(at_once.value) and "server.pcap" in str(at_once.value)
    assert not multiprocessing.active_children()


@needs_fork
def test_an_unusable_client_file_stops_the_server_side(tmp_path):
    _, server = capture_paths("nginx-ok")
    with pytest.raises(CaptureError, match="does not exist"):
        analyze(tmp_path / "missing.pcap", server, parallel=True)
    assert not multiprocessing.active_children()


@needs_fork
def test_an_internal_error_in_the_server_process_is_raised_with_its_traceback(monkeypatch):
    def broken(path, role, **kwargs):
        raise ValueError("boom in the server process")

    monkeypatch.setattr(parallel, "analyze_capture", broken)
    client, server = capture_paths("nginx-ok")
    with pytest.raises(RuntimeError, match="boom in the server process") as exc:
        analyze(client, server, parallel=True, strict=True)
    assert "Traceback" in str(exc.value) and "broken" in str(exc.value)


@needs_fork
def test_progress_reports_both_captures_at_once(monkeypatch):
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 20)  # the forked child sees it too
    client, server = capture_paths("nginx-many-clients")
    calls = []
    analyze(client, server, parallel=True, progress=lambda *c: calls.append(c))
    assert calls and {role for role, _, _ in calls} == {"client and server"}
    total = client.stat().st_size + server.stat().st_size
    assert all(t in (None, total) for _, _, t in calls)
    assert any(t == total for _, _, t in calls)  # once both sides had reported
    assert all(0 < done <= total for _, done, _ in calls)


def test_without_fork_or_a_second_cpu_the_captures_are_read_one_after_the_other(monkeypatch):
    monkeypatch.setattr(parallel, "parallel_available", lambda: False)
    client, server = capture_paths("nginx-ok")
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 20)
    calls = []
    a = analyze(client, server, progress=lambda *c: calls.append(c))
    assert len(a.correlation.pairs) == 3
    assert [r for r in dict.fromkeys(role for role, _, _ in calls)] == ["client", "server"]


def test_a_process_running_other_threads_reads_one_after_the_other():
    """A Jupyter kernel runs threads: forking it is not safe, so no second process."""
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert parallel.parallel_available() is False
        assert parallel.server_job(capture_paths("nginx-ok")[1], {}, None) is None
    finally:
        stop.set()
        t.join()
