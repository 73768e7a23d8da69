"""The command line: ``wsanalyze.cli.main(argv) -> int`` in process, and the
installed ``wsanalyze`` console script once through a subprocess.

Exit codes (README): 0 when the analysis ran whatever it found, 1 with
``--fail-on`` and a finding of that severity, 2 with exactly one line on stderr
(starting ``wsanalyze:``, no traceback) for an unusable file or argument.
Also: ``--format`` (what goes to stdout), the filters, colours only on a terminal,
progress on stderr only on a terminal, ``-`` for standard input, the help texts.
"""

from __future__ import annotations

import json
import re
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


# --- --format: what goes to stdout ------------------------------------------------------------------

MANY = "nginx-many-clients"  # 12 concurrent clients, 12 pairs


def test_format_json_writes_the_report_to_stdout(capsys, tmp_path, check_report):
    j = tmp_path / "r.json"
    code, out, err = run(
        capsys, "pcap", *capture_paths(NO_UPGRADE), "--format", "json", "--json", j
    )
    assert code == 0 and err == ""
    doc = json.loads(out)
    check_report(doc)
    assert out == j.read_text(encoding="utf-8")  # the same report, to stdout and to the file
    assert "\x1b" not in out


def test_format_markdown_writes_the_report_to_stdout(capsys, tmp_path):
    m = tmp_path / "r.md"
    argv = ["pcap", *capture_paths(NO_UPGRADE), "--format", "markdown", "--markdown", m]
    code, out, err = run(capsys, *argv, "--color", "always")
    assert code == 0 and err == ""
    assert out.startswith("# wsanalyze report") and "proxy_upgrade_header_dropped" in out
    assert out == m.read_text(encoding="utf-8")
    assert "\x1b" not in out  # colours belong to the terminal summary only


def test_quiet_wins_over_format(capsys):
    assert run(capsys, "pcap", *capture_paths(OK), "--format", "json", "-q") == (0, "", "")


# --- filters ---------------------------------------------------------------------------------------


def test_port_filter_selects_one_pair_in_every_output(capsys, tmp_path, check_report):
    client, server = capture_paths(MANY)
    code, out, _ = run(capsys, "pcap", client, server, "--json", tmp_path / "all.json", "-q")
    full = json.loads((tmp_path / "all.json").read_text())
    assert code == 0 and len(full["pairs"]) == 12
    pair = full["pairs"][2]
    conns = {c["id"]: c for c in full["connections"]}
    port = conns[pair["client"]]["src"].rsplit(":", 1)[1]  # the client's ephemeral port
    j, m = tmp_path / "r.json", tmp_path / "r.md"
    code, out, err = run(
        capsys, "pcap", client, server, "--port", port, "--json", j, "--markdown", m
    )
    assert code == 0 and err == ""
    doc = json.loads(j.read_text())
    check_report(doc)
    assert [p["id"] for p in doc["pairs"]] == [pair["id"]]
    assert {c["id"] for c in doc["connections"]} == {pair["client"], pair["server"]}
    assert out.startswith(f"Filtered: --port {port}: 2 of 24 connections, 1 pair")
    assert "Connections carrying HTTP/WebSocket: 2" in out and "Pairs" in out
    other = conns[full["pairs"][3]["client"]]["src"]
    assert other not in out and other not in m.read_text()
    assert conns[pair["client"]]["src"] in m.read_text()


def test_connection_host_path_time_filters(capsys, tmp_path):
    client, server = capture_paths(MANY)

    def kept(*opts: str) -> set[str]:
        j = tmp_path / "f.json"
        code, _, _ = run(capsys, "pcap", client, server, *opts, "--json", j, "-q")
        assert code == 0
        return {c["id"] for c in json.loads(j.read_text())["connections"]}

    assert kept("--connection", "client-2", "--connection", "server-5") == {
        "client-2",
        "server-2",
        "client-5",
        "server-5",
    }
    assert len(kept("--host", "192.0.2.10")) == 24  # every client leg, so every pair
    assert len(kept("--host", "192.0.2.0/24", "--path", "/ws")) == 24
    assert kept("--path", "/api") == set()
    assert len(kept("--time", "2026-11-21T13:09:39Z..2026-11-21T13:09:41Z")) == 24
    assert kept("--time", "..2026-11-21T13:00:00Z") == set()
    assert kept("--time", "1795266600..") == set()  # epoch seconds, after the capture


def test_no_match_is_a_note_not_an_error(capsys):
    code, out, err = run(capsys, "pcap", *capture_paths(MANY), "--path", "/api", "--format", "json")
    assert code == 0
    assert json.loads(out)["connections"] == []
    assert err == "wsanalyze: note: no connection matches the filters\n"


def test_unknown_connection_id_is_one_line_and_exit_2(capsys):
    code, out, err = run(capsys, "pcap", *capture_paths(MANY), "--connection", "client-99")
    assert_one_line_error(code, out, err)
    assert "client-99" in err and "client-1" in err


def test_fail_on_counts_the_selected_connections(capsys):
    argv = ["pcap", *capture_paths(NO_UPGRADE), "--fail-on", "error", "-q"]
    assert run(capsys, *argv)[0] == 1
    assert run(capsys, *argv, "--path", "/elsewhere")[0] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "0"],
        ["--port", "http"],
        ["--host", "proxy.example.com"],
        ["--path", "ws"],
        ["--time", "yesterday.."],
        ["--time", "1795266600..1795266500"],
        ["--time", ".."],
        ["--time", "1795266600"],
        ["--connection", "pair-1"],
        ["--format", "html"],
        ["--color", "sometimes"],
        ["--json", "-"],
        ["--markdown", "-"],
        ["--html", "-"],
    ],
)
def test_bad_new_options_are_one_line_and_exit_2(capsys, argv):
    code, out, err = run(capsys, "pcap", *capture_paths(OK), *argv)
    assert_one_line_error(code, out, err)


# --- colours ---------------------------------------------------------------------------------------


def test_color_always_marks_severities_and_never_reaches_files(capsys, tmp_path):
    j, m = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["pcap", *capture_paths(NO_UPGRADE), "--json", j, "--markdown", m]
    code, out, _ = run(capsys, *argv, "--color", "always")
    assert code == 0
    assert "\x1b[1;31m[error]\x1b[0m" in out and "\x1b[33m[warning]\x1b[0m" in out
    assert "\x1b" not in j.read_text() and "\x1b" not in m.read_text()
    plain = run(capsys, *argv, "--color", "never")[1]
    assert "\x1b" not in plain
    assert (
        out.replace("\x1b[1;31m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[0m", "")
        == plain
    )


def test_color_auto_follows_the_terminal_and_no_color(capsys, monkeypatch):
    argv = ["pcap", *capture_paths(NO_UPGRADE)]
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert "\x1b" not in run(capsys, *argv)[1]  # captured stdout is not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert "\x1b[1;31m[error]" in run(capsys, *argv)[1]  # a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in run(capsys, *argv)[1]  # https://no-color.org
    monkeypatch.setenv("NO_COLOR", "")
    assert "\x1b[1;31m[error]" in run(capsys, *argv)[1]  # set but empty: ignored
    monkeypatch.setenv("TERM", "dumb")
    assert "\x1b" not in run(capsys, *argv)[1]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[1;31m[error]" in run(capsys, *argv, "--color", "always")[1]


# --- progress on stderr ----------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_line_only_after_the_delay():
    import io

    from wsanalyze.progress import Progress

    clock, stream = _Clock(), io.StringIO()
    p = Progress(stream, enabled=True, delay=1.0, interval=0.1, clock=clock)
    p("client", 10, 100)
    assert stream.getvalue() == ""  # quick work: nothing shown
    clock.t = 1.5
    p("client", 50, 100)
    assert stream.getvalue().endswith(
        "wsanalyze: analysing the client capture  50% (0.0 MB of 0.0 MB)"
    )
    clock.t = 1.55
    p("client", 60, 100)  # within the redraw interval: skipped
    assert "60%" not in stream.getvalue()
    p("server", 5_000_000, None)  # a new capture redraws at once; unknown size: bytes read
    assert "analysing the server capture / 5.0 MB read" in stream.getvalue()
    p.stage("writing the HTML report")
    assert stream.getvalue().endswith("\r\x1b[Kwsanalyze: writing the HTML report")
    p.close()
    assert stream.getvalue().endswith("\r\x1b[K") and not p.shown
    before = stream.getvalue()
    p.close()
    assert stream.getvalue() == before


def test_progress_needs_a_terminal():
    import io

    from wsanalyze.progress import Progress

    clock, stream = _Clock(), io.StringIO()
    p = Progress(stream, delay=0, clock=clock)  # enabled=None: StringIO is no terminal
    p("client", 1, 2)
    p.stage("x")
    p.close()
    assert stream.getvalue() == ""


def test_cli_progress_on_a_terminal_is_erased_before_output(capsys, monkeypatch):
    from wsanalyze import progress
    from wsanalyze.parallel import parallel_available

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, "pcap", *capture_paths(OK), "--format", "json")
    assert code == 0 and json.loads(out)["schema"] == "wsanalyze/1"
    if parallel_available():  # both captures at once, one line for both
        assert re.search(r"wsanalyze: analysing the client and server captures +\d+% \(", err)
    else:
        assert "wsanalyze: analysing the client capture 100%" in err
        assert "analysing the server capture" in err
    assert "writing the JSON report" in err
    assert err.endswith("\r\x1b[K")  # the line is erased
    # -q: no progress either
    code, out, err = run(capsys, "pcap", *capture_paths(OK), "-q")
    assert (code, out, err) == (0, "", "")


def test_cli_works_without_the_progress_hook(capsys, monkeypatch):
    """The CLI passes ``progress`` only when ``analyze`` takes it."""
    from wsanalyze import api

    real = api.analyze

    def analyze(client, server=None, *, clock_offset_ms=None, decode_as=(), max_messages=None):
        return real(
            client,
            server,
            clock_offset_ms=clock_offset_ms,
            decode_as=decode_as,
            max_messages=max_messages,
        )

    monkeypatch.setattr(api, "analyze", analyze)
    code, out, _ = run(capsys, "pcap", *capture_paths(OK))
    assert code == 0 and "Pairs" in out


# --- standard input ----------------------------------------------------------------------------------


def test_stdin_capture_through_the_console_script(tmp_path):
    client, server = capture_paths(NO_UPGRADE)
    from_file = subprocess.run(
        [*_script(), "pcap", str(client), str(server), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    with open(client, "rb") as fh:
        piped = subprocess.run(
            [*_script(), "pcap", "-", str(server), "--format", "json"],
            stdin=fh,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert piped.returncode == 0 and piped.stderr == ""
    a, b = json.loads(from_file.stdout), json.loads(piped.stdout)
    assert b["captures"][0]["path"] == "-"
    a["captures"][0]["path"] = b["captures"][0]["path"] = None
    assert a == b  # the same analysis, whether read from the file or from a pipe
    # the server capture can come from the pipe too
    with open(server, "rb") as fh:
        proc = subprocess.run(
            [*_script(), "pcap", str(client), "-", "--fail-on", "error"],
            stdin=fh,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1 and "proxy_upgrade_header_dropped" in proc.stdout


def test_stdin_for_both_captures_is_one_line_and_exit_2(capsys):
    code, out, err = run(capsys, "pcap", "-", "-")
    assert_one_line_error(code, out, err)
    assert "standard input" in err


def test_stdin_that_is_a_terminal_is_refused(capsys, monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty())
    code, out, err = run(capsys, "pcap", "-")
    assert_one_line_error(code, out, err)
    assert "pipe a capture" in err


def test_stdin_that_is_not_a_capture_is_one_line(tmp_path):
    proc = subprocess.run(
        [*_script(), "pcap", "-"],
        input=b"GET / HTTP/1.1\r\n\r\n",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode()
    assert len(err.splitlines()) == 1 and err.startswith("wsanalyze:") and "Traceback" not in err


# --- help --------------------------------------------------------------------------------------------


def test_pcap_help_has_examples_for_each_option_group(capsys):
    code, out, _ = run(capsys, "pcap", "--help")
    assert code == 0
    for group in ("reports:", "filters:", "analysis:", "terminal and exit status:"):
        assert group in out
    for example in (
        "wsanalyze pcap -",
        "--format markdown",
        "--format json",
        "--connection client-3",
        "--host 192.0.2.10 --port",
        "--path /",
        "--time 2026-",
        "--fail-on warning",
        "--decode-as 8080",
        "--color never",
    ):
        assert example in out, example
    assert "exit status:" in out
    assert "1  --fail-on SEVERITY" in out and "exit 1 when a finding" in out
    assert "docs/getting-started.md" in out and "docs/capturing.md" in out


def test_help_lists_only_existing_options(capsys):
    """Every --option in an example of either help is an option of `wsanalyze pcap`."""
    import re

    from wsanalyze.cli import build_parser

    pcap = build_parser()._subparsers._group_actions[0].choices["pcap"]
    known = {s for a in pcap._actions for s in a.option_strings}
    for argv in (["--help"], ["pcap", "--help"]):
        out = run(capsys, *argv)[1]
        examples = out.split("examples:", 1)[1]
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", examples))
        assert used and used <= known | {"--help"}, used - known
