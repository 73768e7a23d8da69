"""Command line: ``wsanalyze pcap CLIENT [SERVER]``.

Exit codes: 0 when the analysis ran, whatever it found (``--fail-on`` opts in to
1 when a finding of that severity or worse was found); 2 for usage errors and
unusable capture files, with one line on stderr and no traceback; 3 for an
internal error (a bug), also one line (``WSANALYZE_DEBUG=1`` shows the traceback).

Standard output carries what ``--format`` chooses (the summary, coloured only on a
terminal, or the Markdown or JSON report); standard error carries the error line,
a note when the filters match nothing, and, on a terminal, the progress of an
analysis that takes more than a second (:mod:`wsanalyze.progress`). Filters
(:mod:`wsanalyze.filters`) apply to every output.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from . import __version__
from .errors import WsanalyzeError
from .pipeline import MAX_MESSAGES

EPILOG = """\
examples:
  wsanalyze pcap client.pcap server.pcap
      pair the two legs of a proxy and show what it did
  wsanalyze pcap proxyhost.pcap
      one capture taken on the proxy host (tcpdump -i any): both legs are paired
      by their shared Sec-WebSocket-Key
  wsanalyze pcap client.pcap server.pcap --html report.html --format markdown
  wsanalyze pcap client.pcap server.pcap --port 37458 --fail-on error
  wsanalyze pcap client.pcap server.pcap --clock-offset 0
      the two captures share one clock (taken on the proxy host)

'wsanalyze pcap --help' lists every option with examples per group.
Docs: docs/getting-started.md, docs/capturing.md (how to take good captures),
docs/findings.md, docs/json.md.
"""

PCAP_EPILOG = """\
examples:
  the captures
    wsanalyze pcap client.pcap server.pcap
        pair the two legs of a proxy and show what it did
    wsanalyze pcap client.pcap
        one capture: connections, handshakes, frames, findings
    wsanalyze pcap proxyhost.pcap
        one capture taken on the proxy host (tcpdump -i any): both legs are
        paired by their shared Sec-WebSocket-Key
    timeout 60 tcpdump -i any -s 0 -U -w - 'tcp port 80' | wsanalyze pcap -
        read the capture from standard input ('-', for one of the two captures;
        wsanalyze reads to the end, so stop tcpdump with timeout or -c COUNT)

  reports
    wsanalyze pcap client.pcap server.pcap --html report.html --json report.json
    wsanalyze pcap client.pcap server.pcap --markdown ticket.md --no-redact
    wsanalyze pcap client.pcap server.pcap --format markdown > ticket.md
    wsanalyze pcap client.pcap server.pcap --format json | jq '.findings[].code'

  filters (they select whole connections; a pair is kept, both legs, when
  either leg matches; different options must all match)
    wsanalyze pcap client.pcap server.pcap --connection client-3 --connection client-7
    wsanalyze pcap client.pcap server.pcap --host 192.0.2.10 --port 37458
    wsanalyze pcap client.pcap server.pcap --path /api/v1/namespaces/
    wsanalyze pcap client.pcap server.pcap --time 2026-11-21T13:09:39Z..2026-11-21T13:10:00Z
    wsanalyze pcap client.pcap server.pcap --time 1795266580..
        connections overlapping the window (ISO 8601, no offset = UTC, or epoch
        seconds; either side may be empty)

  analysis
    wsanalyze pcap client.pcap server.pcap --clock-offset 0
        the two captures share one clock (taken on the proxy host)
    wsanalyze pcap client.pcap server.pcap --decode-as 8080 --decode-as 9000
        decode connections on ports 8080 and 9000 as WebSocket although their
        handshake is not in the capture (like tshark's Decode As)

  scripts and CI
    wsanalyze pcap client.pcap server.pcap -q --fail-on warning --json report.json
        exit 1 when there is a finding of severity warning or error
    wsanalyze pcap client.pcap server.pcap --color never | less
        (colours are used only on a terminal, and never when NO_COLOR is set)

exit status:
  0  the analysis ran, whatever it found
  1  --fail-on SEVERITY was given and a finding of that severity or worse was found
  2  usage error or unusable capture/output file (one line on stderr)
  3  internal error (one line on stderr; WSANALYZE_DEBUG=1 shows the traceback)

Docs: docs/getting-started.md, docs/capturing.md, docs/findings.md, docs/json.md.
"""

SEVERITIES = ("info", "warning", "error")
_CONNECTION_ID = re.compile(r"(client|server)-[1-9][0-9]*(-s[1-9][0-9]*)?")  # -sN: HTTP/2 stream


def _port(text: str) -> int:
    """A TCP port (argparse type): an integer 1-65535."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {text!r}")
    return port


def _count(text: str) -> int:
    """A count (argparse type): an integer >= 0."""
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"not a count (0 or more): {text!r}")
    return n


def _connection_id(text: str) -> str:
    if not _CONNECTION_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a connection id: {text!r} (like client-3, server-7 or server-2-s5, as the "
            "summary lists them)"
        )
    return text


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError (its message is kept)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line on stderr (exit 2), like file errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"wsanalyze: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wsanalyze`` (subcommand ``pcap``); usage errors are
    one line on stderr and exit code 2."""
    from .filters import parse_host, parse_path, parse_time_window

    parser = _Parser(
        prog="wsanalyze",
        description="Analyse WebSocket traffic through a full proxy from packet captures\n"
        "taken on both sides of it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"wsanalyze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "pcap",
        help="analyse a client-side capture and, optionally, the server-side one",
        description="Analyse CLIENT (client <-> proxy) and, optionally, SERVER (proxy <-> server):\n"
        "reassemble TCP, decode HTTP/1.1 handshakes and WebSocket frames, pair the legs\n"
        "and report what the proxy did. Reads pcap and pcapng; '-' reads one of the two\n"
        "captures from standard input.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PCAP_EPILOG,
    )
    p.add_argument(
        "client", metavar="CLIENT", help="capture between client and proxy ('-': standard input)"
    )
    p.add_argument(
        "server",
        metavar="SERVER",
        nargs="?",
        help="capture between proxy and server (optional; '-': standard input)",
    )

    g = p.add_argument_group("reports")
    g.add_argument("--json", metavar="FILE", help="write the JSON report (schema wsanalyze/1)")
    g.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    g.add_argument("--markdown", metavar="FILE", help="write a Markdown report (for a ticket)")
    g.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="what goes to standard output: the summary (text, the default), the "
        "Markdown report or the JSON report",
    )
    g.add_argument(
        "--no-redact",
        action="store_true",
        help="show credentials (Authorization, Cookie, tokens) in reports",
    )

    g = p.add_argument_group(
        "filters",
        "Focus on part of the captures. Filters select whole connections, and every\n"
        "report (summary, --format, --json, --html, --markdown) shows only those; a pair\n"
        "is kept, both legs, when either leg matches. Each option may be repeated (either\n"
        "value matches); different options must all match.",
    )
    g.add_argument(
        "--connection",
        metavar="ID",
        type=_connection_id,
        action="append",
        default=[],
        help="a connection id as the summary lists them (client-3, server-7; server-2-s5 is "
        "the WebSocket on stream 5 of the HTTP/2 connection server-2, which selects its streams)",
    )
    g.add_argument(
        "--host",
        metavar="IP",
        type=_argtype(parse_host),
        action="append",
        default=[],
        help="an IP address or network (10.0.0.0/8) at either end of the connection",
    )
    g.add_argument(
        "--port",
        metavar="N",
        type=_port,
        action="append",
        default=[],
        help="a TCP port at either end of the connection",
    )
    g.add_argument(
        "--path",
        metavar="PREFIX",
        type=_argtype(parse_path),
        action="append",
        default=[],
        help="a prefix of the request path (before '?'), e.g. /ws or /api/v1/namespaces/",
    )
    g.add_argument(
        "--time",
        metavar="START..END",
        type=_argtype(parse_time_window),
        help="connections active in this window, each capture on its own clock: ISO 8601 "
        "(no offset = UTC) or epoch seconds; either side may be empty",
    )

    g = p.add_argument_group("analysis")
    g.add_argument(
        "--clock-offset",
        metavar="MS",
        type=float,
        help="impose the server capture's clock offset relative to the client "
        "capture's, in ms, instead of estimating it",
    )
    g.add_argument(
        "--decode-as",
        metavar="PORT",
        type=_port,
        action="append",
        default=[],
        help="decode TCP connections on PORT as WebSocket even when their handshake is "
        "not in the capture (repeatable; connections whose start was not captured are "
        "recognised by their frames without it)",
    )
    g.add_argument(
        "--max-messages",
        metavar="N",
        type=_count,
        default=MAX_MESSAGES,
        help="keep at most N WebSocket messages per capture in detail (default "
        f"{MAX_MESSAGES:,}, about 0.3-1 KB of memory each; 0: no limit); later messages "
        "are decoded and counted but take no part in matching and proxy delay, and an "
        "analysis_messages_not_kept finding says so",
    )

    g = p.add_argument_group("terminal and exit status")
    g.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        metavar="SEVERITY",
        help="exit 1 when a finding of this severity or worse was found (info, warning "
        "or error; of the selected connections when filters are given); else 0",
    )
    g.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the severities in the summary: auto (the default) when standard "
        "output is a terminal and NO_COLOR is not set; never in files",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on standard output (report files are still written) and no progress",
    )
    return parser


def _use_color(mode: str, stream: TextIO) -> bool:
    """``--color``: always, never, or auto (a terminal, NO_COLOR unset or empty,
    TERM not "dumb"; https://no-color.org)."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _check_inputs(args: argparse.Namespace) -> str | None:
    """Usage errors argparse cannot see; the message, or None."""
    if args.client == "-" and args.server == "-":
        return "standard input ('-') can hold only one capture: give a file for the other"
    for option in ("json", "markdown"):
        if getattr(args, option) == "-":
            return (
                f"--{option} takes a file name; to write the report to standard output "
                f"use --format {option}"
            )
    if args.html == "-":
        return "--html takes a file name (--format json or markdown writes to standard output)"
    if "-" in (args.client, args.server):
        isatty = getattr(sys.stdin, "isatty", None)
        if isatty is not None and isatty():
            return (
                "standard input ('-') is a terminal: pipe a capture into it "
                "(tcpdump -w - ... | wsanalyze pcap -)"
            )
    return None


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise WsanalyzeError(f"{path}: cannot write: {exc.strerror}") from None


def _filter_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "connections": args.connection,
        "hosts": args.host,
        "ports": args.port,
        "paths": args.path,
        "time": args.time,
    }


def _filter_note(analysis: Any, total: int) -> str:
    kept = sum(len(c.connections) for c in analysis.captures)
    pairs = len(analysis.correlation.pairs) if analysis.correlation else 0
    return (
        f"Filtered: {analysis.filters.describe()}: {kept} of {total} connections"
        + (f", {pairs} pair{'s' if pairs != 1 else ''}" if analysis.correlation else "")
        + " (whole connections; both legs of a pair)\n\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    if args.command != "pcap":
        print(
            "wsanalyze: a command is required: wsanalyze pcap CLIENT [SERVER] "
            "(see 'wsanalyze --help')",
            file=sys.stderr,
        )
        return 2
    problem = _check_inputs(args)
    if problem:
        print(f"wsanalyze: {problem} (see 'wsanalyze pcap --help')", file=sys.stderr)
        return 2
    from . import report
    from .api import analyze
    from .filters import filter_analysis
    from .progress import Progress

    progress = Progress(sys.stderr, enabled=False if args.quiet else None)
    options: dict[str, Any] = {}
    if "progress" in inspect.signature(analyze).parameters:
        options["progress"] = progress
    try:
        analysis = analyze(
            args.client,
            args.server,
            clock_offset_ms=args.clock_offset,
            decode_as=args.decode_as,
            max_messages=args.max_messages,
            **options,
        )
        filters = _filter_args(args)
        note = ""
        empty = False
        if any(filters.values()):
            total = sum(len(c.connections) for c in analysis.captures)
            try:
                analysis = filter_analysis(analysis, **filters)
            except ValueError as exc:  # a connection id that is not in the captures
                raise WsanalyzeError(str(exc)) from None
            note = _filter_note(analysis, total)
            empty = not any(c.connections for c in analysis.captures)
        redact = not args.no_redact
        json_text = None
        doc = None  # the JSON report's dict, built once for --json and the other reports
        if args.json or args.format == "json":
            progress.stage("writing the JSON report")
            doc = report.to_json(analysis, redact=redact)
            json_text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if args.json:
            _write(args.json, json_text or "")
        markdown = None
        if args.markdown or args.format == "markdown":
            progress.stage("writing the Markdown report")
            markdown = report.render_markdown(analysis, redact=redact, doc=doc)
        if args.markdown:
            _write(args.markdown, markdown or "")
        if args.html:
            progress.stage("writing the HTML report")
            _write(args.html, report.render_html(analysis, redact=redact, doc=doc))
        if args.quiet:
            stdout = None
        elif args.format == "json":
            stdout = json_text
        elif args.format == "markdown":
            stdout = markdown
        else:
            color = _use_color(args.color, sys.stdout)
            stdout = note + report.summary_text(analysis, redact=redact, color=color, doc=doc)
    except WsanalyzeError as exc:
        progress.close()
        print(f"wsanalyze: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()  # "wsanalyze: interrupted" then starts on a clean line
        raise
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, not a traceback
        progress.close()
        if os.environ.get("WSANALYZE_DEBUG"):
            raise
        print(
            f"wsanalyze: internal error ({type(exc).__name__}: {exc}); please report it "
            f"with the capture (WSANALYZE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 3
    progress.close()
    if empty:
        print("wsanalyze: note: no connection matches the filters", file=sys.stderr)
    if stdout is not None:
        sys.stdout.write(stdout)
    if args.fail_on:
        threshold = SEVERITIES.index(args.fail_on)
        if any(f.severity >= threshold for f in analysis.finding_list):
            return 1
    return 0


def console() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `wsanalyze pcap ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        print("wsanalyze: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    console()
