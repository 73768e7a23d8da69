"""Command line: ``wsanalyze pcap CLIENT [SERVER]``.

Exit codes: 0 when the analysis ran, whatever it found (``--fail-on`` opts in to
1 when a finding of that severity or worse was found); 2 for usage errors and
unusable capture files, with one line on stderr and no traceback; 3 for an
internal error (a bug), also one line (``WSANALYZE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

from . import __version__
from .errors import WsanalyzeError

EPILOG = """\
examples:
  wsanalyze pcap client.pcap server.pcap
      pair the two legs of a proxy and show what it did
  wsanalyze pcap client.pcap
      one capture: connections, handshakes, frames, findings
  wsanalyze pcap proxyhost.pcap
      one capture taken on the proxy host (tcpdump -i any): both legs are paired
      by their shared Sec-WebSocket-Key
  wsanalyze pcap client.pcap server.pcap --html report.html --json report.json
  wsanalyze pcap client.pcap server.pcap --clock-offset 0
      the two captures share one clock (taken on the proxy host)
  wsanalyze pcap client.pcap server.pcap --decode-as 8080 --decode-as 9000
      decode connections on ports 8080 and 9000 as WebSocket although their
      handshake is not in the capture (like tshark's Decode As)
"""


def _port(text: str) -> int:
    """A TCP port for ``--decode-as`` (argparse type): an integer 1-65535."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {text!r}")
    return port


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line on stderr (exit 2), like file errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"wsanalyze: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsanalyze",
        description="Analyse WebSocket traffic through a full proxy from packet captures "
        "taken on both sides of it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"wsanalyze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "pcap",
        help="analyse a client-side capture and, optionally, the server-side one",
        description="Analyse CLIENT (client <-> proxy) and, optionally, SERVER "
        "(proxy <-> server): reassemble TCP, decode HTTP/1.1 handshakes and "
        "WebSocket frames, pair the legs and report what the proxy did. "
        "Reads pcap and pcapng.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("client", metavar="CLIENT", help="capture between client and proxy")
    p.add_argument(
        "server", metavar="SERVER", nargs="?", help="capture between proxy and server (optional)"
    )
    p.add_argument("--json", metavar="FILE", help="write the JSON report (schema wsanalyze/1)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    p.add_argument(
        "--clock-offset",
        metavar="MS",
        type=float,
        help="impose the server capture's clock offset relative to the client "
        "capture's, in ms, instead of estimating it",
    )
    p.add_argument(
        "--decode-as",
        metavar="PORT",
        type=_port,
        action="append",
        default=[],
        help="decode TCP connections on PORT as WebSocket even when their handshake is "
        "not in the capture (repeatable; connections whose start was not captured are "
        "recognised by their frames without it)",
    )
    p.add_argument(
        "--no-redact",
        action="store_true",
        help="show credentials (Authorization, Cookie, tokens) in reports",
    )
    p.add_argument(
        "--fail-on",
        choices=("info", "warning", "error"),
        help="exit 1 when a finding of this severity or worse was found",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    return parser


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise WsanalyzeError(f"{path}: cannot write: {exc.strerror}") from None


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
    from . import report
    from .api import analyze

    try:
        analysis = analyze(
            args.client,
            args.server,
            clock_offset_ms=args.clock_offset,
            decode_as=args.decode_as,
        )
        redact = not args.no_redact
        if args.json:
            _write(
                args.json,
                json.dumps(report.to_json(analysis, redact=redact), indent=2, ensure_ascii=False)
                + "\n",
            )
        if args.markdown:
            _write(args.markdown, report.render_markdown(analysis, redact=redact))
        if args.html:
            _write(args.html, report.render_html(analysis, redact=redact))
        summary = None if args.quiet else report.summary_text(analysis, redact=redact)
    except WsanalyzeError as exc:
        print(f"wsanalyze: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, not a traceback
        if os.environ.get("WSANALYZE_DEBUG"):
            raise
        print(
            f"wsanalyze: internal error ({type(exc).__name__}: {exc}); please report it "
            f"with the capture (WSANALYZE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 3
    if summary is not None:
        sys.stdout.write(summary)
    if args.fail_on:
        threshold = ("info", "warning", "error").index(args.fail_on)
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
