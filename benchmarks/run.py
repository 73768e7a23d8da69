#!/usr/bin/env python3
"""Benchmark ``wsanalyze pcap`` against tshark on one capture file.

The two tools run alternately (``--runs`` each, default 3), each as a whole
process, with standard output discarded:

* wsanalyze: ``wsanalyze pcap FILE --json OUT`` (``OUT`` in a temporary
  directory). The console script is used (the one installed beside this Python
  first, then the one on PATH, which may be a slower version-manager shim), else the same
  entry point (``wsanalyze.cli:console``) through ``python -c`` with this
  checkout on ``PYTHONPATH``; ``--wsanalyze CMD`` overrides both.
* tshark: ``tshark -r FILE -o tcp.reassemble_out_of_order:TRUE
  -d tcp.port==8080,http -Y websocket -T fields -e frame.time_epoch
  -e tcp.stream -e websocket.opcode -e websocket.payload_length``.

For each tool it reports the median wall time, MB/s (10^6 bytes of file per
second), packets/s, CPU time and peak RSS. Every child is reaped with
:func:`os.wait4`, whose ``ru_maxrss`` is that child's own peak resident set
(KiB on Linux), so no polling is needed. The file is read once beforehand so
that both tools start from a warm page cache.

``--profile`` then runs the wsanalyze analysis once more under cProfile and
prints the top functions by cumulative and by own time.

If wsanalyze is missing or fails, that is reported and tshark is still run.

Examples::

    python benchmarks/run.py benchmarks/data/bench100.pcap
    python benchmarks/run.py                       # generates bench100.pcap if absent
    python benchmarks/run.py FILE --runs 5 --json benchmarks/data/results.json
    python benchmarks/run.py FILE --profile --no-tshark
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pstats
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_FILE = HERE / "data" / "bench100.pcap"

# fmt: off
TSHARK_ARGS = [
    "-o", "tcp.reassemble_out_of_order:TRUE",
    "-d", "tcp.port==8080,http",
    "-Y", "websocket",
    "-T", "fields",
    "-e", "frame.time_epoch",
    "-e", "tcp.stream",
    "-e", "websocket.opcode",
    "-e", "websocket.payload_length",
]
# fmt: on

# Runs the console entry point the way the ``wsanalyze`` script does.
ENTRY = (
    "import sys; from wsanalyze.cli import console; sys.argv[0] = 'wsanalyze'; sys.exit(console())"
)

# Profiles the same entry point: equivalent to
# ``python -m cProfile -o PROF -m wsanalyze.cli pcap FILE --json OUT`` but does
# not depend on cli.py having an ``if __name__ == "__main__"`` block.
PROFILE_DRIVER = """
import cProfile, sys
from wsanalyze.cli import console
prof_path = sys.argv[1]
sys.argv = ["wsanalyze", *sys.argv[2:]]
prof = cProfile.Profile()
code = 0
try:
    code = prof.runcall(console)
except SystemExit as exc:
    code = exc.code
finally:
    prof.dump_stats(prof_path)
sys.exit(code if isinstance(code, int) else 1)
"""


# --- helpers -------------------------------------------------------------------


def count_packets(path: Path) -> int | None:
    """Number of records in a classic pcap (either byte order, µs or ns), else None.

    Uses the generator's truth file when one sits beside the capture.
    """
    truth = path.with_name(path.name + ".truth.json")
    if truth.exists():
        try:
            return int(json.loads(truth.read_text())["packets"])
        except (ValueError, KeyError):
            pass
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return None
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            rec = struct.Struct("<IIII")
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            rec = struct.Struct(">IIII")
        else:
            return None  # pcapng or something else: not counted
        n = 0
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                return n
            f.seek(rec.unpack(hdr)[2], os.SEEK_CUR)
            n += 1


def warm_cache(path: Path) -> None:
    """Read the file once so that no tool pays for the first read from disk."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def measure(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd`` to completion; wall time, CPU time, peak RSS, exit code, stderr tail."""
    with tempfile.TemporaryFile() as err, open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=null, stderr=err, env=env)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        lines = [
            ln
            for ln in err.read().decode(errors="replace").splitlines()
            if "Running as user" not in ln  # tshark's note when run as root
        ]
    return {
        "wall_s": round(wall, 4),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "maxrss_kib": ru.ru_maxrss,
        "rc": proc.returncode,
        "stderr_tail": lines[-10:],
    }


def tool_version(cmd: list[str]) -> str | None:
    """First line of ``cmd``'s output, or None if it cannot be run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if out.returncode == 0 and text else None


def repo_env() -> dict:
    """The environment with this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def wsanalyze_command(override: str | None) -> tuple[list[str], dict | None, str]:
    """The command prefix that runs wsanalyze, the environment it needs, a label."""
    if override:
        return shlex.split(override), None, override
    # The script pip installed beside this interpreter first: a version manager's
    # shim on PATH (pyenv's is a bash script) adds 0.1-0.2 s to every run.
    exe = shutil.which("wsanalyze", path=sysconfig.get_path("scripts")) or shutil.which("wsanalyze")
    if exe:
        return [exe], None, exe
    return [sys.executable, "-c", ENTRY], repo_env(), "wsanalyze.cli:console (not installed)"


def preflight(prefix: list[str], env: dict | None, label: str) -> str | None:
    """None if ``PREFIX --help`` works, else a one-line reason."""
    try:
        out = subprocess.run(
            [*prefix, "--help"], capture_output=True, text=True, env=env, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {label}: {exc}"
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()
        return f"{label} --help exited {out.returncode}: " + (tail[-1] if tail else "no output")
    return None


def summarise(runs: list[dict], file_bytes: int, packets: int | None) -> dict:
    """Median / min wall time, throughput and peak RSS over the successful runs."""
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"ok_runs": 0}
    med = statistics.median(r["wall_s"] for r in ok)
    return {
        "ok_runs": len(ok),
        "median_wall_s": round(med, 4),
        "min_wall_s": min(r["wall_s"] for r in ok),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in ok), 4),
        "mb_per_s": round(file_bytes / 1e6 / med, 2),
        "packets_per_s": round(packets / med) if packets else None,
        "peak_rss_mib": round(max(r["maxrss_kib"] for r in ok) / 1024, 1),
    }


def print_table(results: dict) -> None:
    """The human-readable summary."""
    print()
    print(
        f"file: {results['file']}  ({results['file_bytes'] / 1e6:.1f} MB, "
        f"{results['packets'] or '?'} packets)"
    )
    hdr = (
        f"{'tool':<10} {'runs':>5} {'median s':>9} {'min s':>8} {'cpu s':>8} "
        f"{'MB/s':>8} {'kpkt/s':>8} {'peak RSS MiB':>13}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name in ("wsanalyze", "tshark"):
        tool = results["tools"].get(name)
        if tool is None:
            continue
        s = tool.get("summary", {})
        if not tool.get("available", True):
            print(f"{name:<10} unavailable: {tool['reason']}")
            continue
        if not s.get("ok_runs"):
            print(f"{name:<10} {0:>5}  every run failed ({tool.get('reason', '')})")
            continue
        kpps = f"{s['packets_per_s'] / 1000:8.1f}" if s["packets_per_s"] else f"{'?':>8}"
        print(
            f"{name:<10} {s['ok_runs']:>5} {s['median_wall_s']:>9.2f} {s['min_wall_s']:>8.2f} "
            f"{s['median_cpu_s']:>8.2f} {s['mb_per_s']:>8.1f} {kpps} {s['peak_rss_mib']:>13.1f}"
        )
    ratio = results.get("ratio_tshark_over_wsanalyze")
    if ratio is not None:
        faster = "wsanalyze faster" if ratio > 1 else "tshark faster"
        print(
            f"\nmedian ratio tshark/wsanalyze (paired runs): {ratio:.2f}x  ({faster}); "
            f"ratio of medians {results['ratio_of_medians']:.2f}x"
        )


def run_profile(file: Path, out_json: Path, prof_path: Path, top: int) -> None:
    """Run the analysis under cProfile and print the top functions."""
    env = repo_env()
    cmd = [
        sys.executable,
        "-c",
        PROFILE_DRIVER,
        str(prof_path),
        "pcap",
        str(file),
        "--json",
        str(out_json),
    ]
    print(
        f"\nprofiling: python -m cProfile -o {prof_path} -m wsanalyze.cli pcap {file} "
        f"--json {out_json}  (run through the console entry point)"
    )
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    print(f"exit {done.returncode} after {time.perf_counter() - t0:.1f} s (with profiler overhead)")
    if not prof_path.exists():
        print("no profile written")
        return
    for key, label in (("cumulative", "cumulative time"), ("tottime", "own (total) time")):
        print(f"\n=== top {top} by {label} ===")
        pstats.Stats(str(prof_path), stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(
            top
        )


# --- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "file",
        nargs="?",
        type=Path,
        help=f"capture to analyse (default {DEFAULT_FILE.relative_to(REPO)}, generated if missing)",
    )
    ap.add_argument(
        "--size-mb",
        type=float,
        default=100.0,
        help="size of the capture generated when FILE is missing (default 100)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool (default 3)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--tshark", default="tshark", help="tshark executable")
    ap.add_argument("--wsanalyze", help="command prefix for wsanalyze (default: auto)")
    ap.add_argument("--no-tshark", action="store_true", help="skip tshark")
    ap.add_argument("--no-wsanalyze", action="store_true", help="skip wsanalyze")
    ap.add_argument("--timeout", type=float, default=1800, help="per-run timeout, s (default 1800)")
    ap.add_argument(
        "--profile", action="store_true", help="also profile wsanalyze's analysis with cProfile"
    )
    ap.add_argument("--profile-out", type=Path, default=HERE / "data" / "wsanalyze.prof")
    ap.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    args = ap.parse_args(argv)

    file = args.file
    if file is None:
        file = (
            DEFAULT_FILE if args.size_mb == 100 else HERE / "data" / f"bench{args.size_mb:g}.pcap"
        )
        if not file.exists():
            print(f"generating {file} ({args.size_mb:g} MB)", file=sys.stderr)
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "gen_capture.py"),
                    "--size-mb",
                    str(args.size_mb),
                    "-o",
                    str(file),
                ],
                check=True,
            )
    if not file.exists():
        ap.error(f"{file}: no such file")
    file = file.resolve()
    file_bytes = file.stat().st_size
    packets = count_packets(file)
    warm_cache(file)

    results: dict = {
        "file": str(file),
        "file_bytes": file_bytes,
        "packets": packets,
        "runs_per_tool": args.runs,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "tools": {},
    }
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        results["commit"] = commit or None
    except OSError:
        results["commit"] = None

    tools = results["tools"]
    tmp = Path(tempfile.mkdtemp(prefix="wsbench-"))
    ws_env = None
    if not args.no_wsanalyze:
        prefix, ws_env, label = wsanalyze_command(args.wsanalyze)
        reason = preflight(prefix, ws_env, label)
        tools["wsanalyze"] = {
            "command": [*prefix, "pcap", str(file), "--json", str(tmp / "out.json")],
            "available": reason is None,
            "runs": [],
        }
        if reason:
            tools["wsanalyze"]["reason"] = reason
            print(f"wsanalyze unavailable: {reason}", file=sys.stderr)
    if not args.no_tshark:
        ver = tool_version([args.tshark, "--version"])
        tools["tshark"] = {
            "command": [args.tshark, "-r", str(file), *TSHARK_ARGS],
            "available": ver is not None,
            "version": ver,
            "runs": [],
        }
        if ver is None:
            tools["tshark"]["reason"] = f"cannot run `{args.tshark} --version`"
            print(f"tshark unavailable: {tools['tshark']['reason']}", file=sys.stderr)

    for i in range(args.runs):
        for name, tool in tools.items():
            if not tool["available"] or tool.get("failed"):
                continue
            r = measure(
                tool["command"], env=ws_env if name == "wsanalyze" else None, timeout=args.timeout
            )
            tool["runs"].append(r)
            status = "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})"
            print(
                f"run {i + 1}/{args.runs} {name:<9} {r['wall_s']:8.2f} s  "
                f"cpu {r['cpu_s']:7.2f} s  maxrss {r['maxrss_kib'] / 1024:8.1f} MiB  {status}",
                file=sys.stderr,
            )
            if r["rc"] != 0:
                # A broken tool is not retried: report why and carry on with the other.
                tool["failed"] = True
                tool["reason"] = f"exit {r['rc']}: " + " | ".join(r["stderr_tail"][-3:])
                print(f"  {name} failed: {tool['reason']}", file=sys.stderr)
            elif name == "wsanalyze" and not (tmp / "out.json").exists():
                tool["warning"] = "exit 0 but no --json output written"

    for tool in tools.values():
        tool["summary"] = summarise(tool["runs"], file_bytes, packets)

    ws, ts = tools.get("wsanalyze", {}), tools.get("tshark", {})
    pairs = [
        (t["wall_s"], w["wall_s"])
        for w, t in zip(ws.get("runs", []), ts.get("runs", []), strict=False)
        if w["rc"] == 0 and t["rc"] == 0
    ]
    if pairs:
        results["ratio_tshark_over_wsanalyze"] = round(
            statistics.median(t / w for t, w in pairs), 3
        )
        results["ratio_of_medians"] = round(
            ts["summary"]["median_wall_s"] / ws["summary"]["median_wall_s"], 3
        )
    print_table(results)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nresults written to {args.json}")

    if args.profile:
        if ws and not ws.get("available"):
            print(f"\n--profile skipped: wsanalyze unavailable ({ws.get('reason')})")
        else:
            args.profile_out.parent.mkdir(parents=True, exist_ok=True)
            run_profile(file, tmp / "profile.json", args.profile_out.resolve(), args.top)

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
