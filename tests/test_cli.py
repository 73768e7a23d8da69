"""The command line: ``wsanalyze.cli.main(argv) -> int`` in process, and the
installed ``wsanalyze`` console script once through a subprocess.

Exit codes (README): 0 when the analysis ran whatever it found, 1 with
``--fail-on`` and a finding of that severity, 2 with exactly one line on stderr
(starting ``wsanalyze:``, no traceback) for an unusable file or argument.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import capture_paths

from wsanalyze.cli import main

OK = "nginx-ok"
NO_UPGRADE = "nginx-no-upgrade"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wsanalyze:")
    assert "Traceback" not in err and "Traceback" not in out


# --- the summary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [OK, NO_UPGRADE])
def test_summary_shows_pairs_and_header_changes(capsys, expected, scenario):
    code, out, err = run(capsys, "pcap", *capture_paths(scenario))
    assert code == 0 and err == ""
    for p in expected["scenarios"][scenario]["pairs"]:
        # the pair's line names both legs' endpoints
        line = next((x for x in out.splitlines() if p["client"] in x and p["server"] in x), None)
        assert line is not None, f"no line pairing {p['client']} with {p['server']}"
        for h in p["request_header_changes"] + p["response_header_changes"]:
            assert any(h["name"] in x and h["change"] in x for x in out.splitlines()), h
            for v in (h["client_value"], h["server_value"]):
                if v is not None:
                    assert v in out


def test_quiet_prints_nothing(capsys):
    code, out, err = run(capsys, "pcap", *capture_paths(OK), "-q")
    assert (code, out, err) == (0, "", "")


def test_single_capture(capsys, tmp_path, expected, check_report):
    client, _ = capture_paths(OK)
    j = tmp_path / "one.json"
    code, out, _ = run(capsys, "pcap", client, "--json", j)
    assert code == 0
    for c in expected["scenarios"][OK]["captures"]["client"]["connections"]:
        assert c["src"] in out
    assert "Pairs" not in out
    doc = json.loads(j.read_text())
    check_report(doc)
    assert [c["role"] for c in doc["captures"]] == ["client"]
    assert doc["pairs"] == [] and doc["clock_offset_ms"] is None


# --- report files --------------------------------------------------------------------------------


def test_json_html_markdown_files(capsys, tmp_path, check_report, expected):
    j, h, m = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    code, out, err = run(
        capsys, "pcap", *capture_paths(NO_UPGRADE), "--json", j, "--html", h, "--markdown", m
    )
    assert code == 0 and err == ""
    doc = json.loads(j.read_text(encoding="utf-8"))
    check_report(doc)
    assert doc["redacted"] is True
    assert len(doc["pairs"]) == len(expected["scenarios"][NO_UPGRADE]["pairs"])
    html = h.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "proxy_upgrade_header_dropped" in html
    md = m.read_text(encoding="utf-8")
    assert md.startswith("# ") and "proxy_upgrade_header_dropped" in md
    assert "Pairs" in out


def test_clock_offset_zero_is_imposed(capsys, tmp_path):
    j = tmp_path / "r.json"
    code, _, _ = run(capsys, "pcap", *capture_paths(OK), "--clock-offset", "0", "--json", j, "-q")
    assert code == 0
    co = json.loads(j.read_text())["clock_offset_ms"]
    assert co["imposed"] is True and co["estimate"] == 0
    # the bounds are still measured, and contain the imposed value (one clock)
    assert co["low"] <= 0 <= co["high"]
    j2 = tmp_path / "r2.json"
    run(capsys, "pcap", *capture_paths(OK), "--json", j2, "-q")
    assert json.loads(j2.read_text())["clock_offset_ms"]["imposed"] is False


# --- exit codes ----------------------------------------------------------------------------------


def test_fail_on_error(capsys):
    code, _, _ = run(capsys, "pcap", *capture_paths(NO_UPGRADE), "--fail-on", "error", "-q")
    assert code == 1
    code, _, _ = run(capsys, "pcap", *capture_paths(OK), "--fail-on", "error", "-q")
    assert code == 0
    # without --fail-on the analysis "ran", whatever it found
    code, _, _ = run(capsys, "pcap", *capture_paths(NO_UPGRADE), "-q")
    assert code == 0


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("GET / HTTP/1.1\r\nHost: example\r\n\r\nnot a capture at all\n")
    short = tmp_path / "short.pcap"
    short.write_bytes(capture_paths(OK)[0].read_bytes()[:10])
    return {
        "missing": tmp_path / "missing.pcap",
        "directory": tmp_path,
        "empty": empty,
        "text": text,
        "short-header": short,
    }


@pytest.mark.parametrize("which", ["missing", "directory", "empty", "text", "short-header"])
@pytest.mark.parametrize("leg", ["client", "server"])
def test_unusable_capture_is_one_line_and_exit_2(capsys, tmp_path, which, leg):
    bad = _bad_inputs(tmp_path)[which]
    good = capture_paths(OK)[0]
    argv = ["pcap", bad, good] if leg == "client" else ["pcap", good, bad]
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, out, err)
    assert str(bad) in err or bad.name in err
    assert out == ""


@pytest.mark.parametrize("option", ["--json", "--html", "--markdown"])
@pytest.mark.parametrize("where", ["missing-dir", "is-a-directory"])
def test_unwritable_output_is_one_line_and_exit_2(capsys, tmp_path, option, where):
    target = tmp_path / "no" / "such" / "dir" / "r.out" if where == "missing-dir" else tmp_path
    code, out, err = run(capsys, "pcap", *capture_paths(NO_UPGRADE), option, target)
    assert_one_line_error(code, out, err)
    assert str(target) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["pcap", "x.pcap", "--clock-offset", "abc"],
        ["pcap", "x.pcap", "--fail-on", "sometimes"],
        ["pcap"],
        ["pcap", "a", "b", "c"],
        ["--no-such-option"],
        [],
    ],
    ids=["bad-float", "bad-choice", "no-capture", "three-captures", "unknown-option", "no-command"],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, out, err)


@pytest.mark.parametrize("argv", [["--help"], ["pcap", "--help"]])
def test_help_shows_examples(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "examples:" in out
    assert "wsanalyze pcap client.pcap server.pcap" in out
    assert "--clock-offset 0" in out


def test_version(capsys):
    import wsanalyze

    code, out, _ = run(capsys, "--version")
    assert code == 0 and wsanalyze.__version__ in out


# --- the installed console script -----------------------------------------------------------------


def _script() -> list[str]:
    exe = shutil.which("wsanalyze")
    assert exe is not None, "the console script is installed by `pip install -e .`"
    return [exe]


def test_console_script(tmp_path, expected, check_report):
    j = tmp_path / "r.json"
    client, server = capture_paths(NO_UPGRADE)
    proc = subprocess.run(
        [*_script(), "pcap", str(client), str(server), "--json", str(j), "--fail-on", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    for p in expected["scenarios"][NO_UPGRADE]["pairs"]:
        assert p["client"] in proc.stdout and p["server"] in proc.stdout
    check_report(json.loads(j.read_text()))


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [*_script(), "pcap", str(tmp_path / "missing.pcap")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("wsanalyze:")


def test_module_entry_point_matches_console_script():
    proc = subprocess.run(
        [sys.executable, "-m", "wsanalyze.cli", "pcap", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "examples:" in proc.stdout


def test_internal_error_is_one_line_and_exit_3(monkeypatch, capsys):
    """A bug of ours while reporting gives one line on stderr and exit 3, never a
    traceback (WSANALYZE_DEBUG=1 re-raises for debugging)."""
    from wsanalyze import report

    def boom(*_a, **_k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(report, "summary_text", boom)
    client, server = capture_paths("nginx-ok")
    assert main(["pcap", str(client), str(server)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wsanalyze: internal error")
    assert "Traceback" not in err
    monkeypatch.setenv("WSANALYZE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["pcap", str(client), str(server)])
