"""The HTML report at scale: a capture with thousands of proxied WebSockets still
gives one usable file (summaries and the worst cases first, details collapsed,
tables capped with a note), and its verdict links resolve.

:func:`scale_legs` writes both legs of ``n`` proxied WebSockets as classic pcap
bytes built with :mod:`struct` (no packet library: 10,000 pairs take seconds).
Run this file as a script to measure the report for a large capture::

    python tests/test_report_scale.py --pairs 10000
"""

from __future__ import annotations

import re
import struct
import time
from collections import Counter
from pathlib import Path

import pytest
from craft import TEXT, accept_for, close_payload, http_request, http_response, ws_frame, ws_key
from test_report import assert_self_contained, images, parse, tag_count

from wsanalyze import analyze, charts, report

# --- a large two-leg capture, fast ----------------------------------------------------------------

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_REC = struct.Struct("<IIII")
_ETH = bytes.fromhex("0200000000020200000000010800")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
EPOCH_US = 1_800_000_000_000_000
MASK = b"\x11\x22\x33\x44"


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


class _Flow:
    """One TCP connection as (µs, frame bytes) records appended to ``out``."""

    def __init__(self, out: list, client: tuple[str, int], server: tuple[str, int], isn: int):
        self.out = out
        self.ep = {"c": (_ip(client[0]), client[1]), "s": (_ip(server[0]), server[1])}
        self.seq = {"c": isn, "s": isn + 7_000_000}

    def pkt(self, frm: str, flags: int, us: int, payload: bytes = b"") -> None:
        to = "s" if frm == "c" else "c"
        (sip, sport), (dip, dport) = self.ep[frm], self.ep[to]
        ack = self.seq[to] & 0xFFFFFFFF if flags & ACK else 0
        ip = _IP.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, sip, dip)
        tcp = _TCP.pack(sport, dport, self.seq[frm] & 0xFFFFFFFF, ack, 5 << 4, flags, 65535, 0, 0)
        self.out.append((us, len(self.out), _ETH + ip + tcp + payload))
        self.seq[frm] += len(payload) + (1 if flags & (SYN | FIN) else 0)

    def open(self, us: int) -> None:
        self.pkt("c", SYN, us)
        self.pkt("s", SYN | ACK, us + 10)
        self.pkt("c", ACK, us + 20)

    def send(self, frm: str, data: bytes, us: int) -> None:
        self.pkt(frm, PSH | ACK, us, data)


def _write(path: Path, records: list) -> Path:
    records.sort()
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for us, _, frame in records:
            f.write(_REC.pack(us // 1_000_000, us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return path


def pair_kind(i: int) -> str:
    """What pair ``i`` of :func:`scale_legs` does: ``"refused"`` (the backend answers
    403), ``"reset"`` (the backend resets mid-session, the proxy closes the client leg
    with a FIN), ``"slow"`` (the proxy adds 20+ ms per message) or ``"ok"``."""
    if i % 211 == 7:
        return "refused"
    if i % 97 == 5:
        return "reset"
    if i % 500 == 250:
        return "slow"
    return "ok"


def pair_delay_us(i: int) -> int:
    """The forwarding delay of pair ``i`` (µs): 150-549 µs, 20+ ms for slow pairs
    (the slowest is the highest ``i``)."""
    return 20_000 + i if pair_kind(i) == "slow" else 150 + (i * 7919) % 400


def scale_legs(directory: Path, n: int, *, messages: int = 2) -> tuple[Path, Path]:
    """Write ``client.pcap`` and ``server.pcap`` into ``directory``: ``n`` WebSockets
    through a proxy at 192.0.2.1:80 → 198.51.100.10:8080, one every ms, each
    ``messages`` text messages client → server echoed back, then a close handshake
    (see :func:`pair_kind` for the exceptions). Both legs carry the same
    Sec-WebSocket-Key, one clock."""
    crec: list = []
    srec: list = []
    for i in range(n):
        kind, d = pair_kind(i), pair_delay_us(i)
        t0 = EPOCH_US + i * 1000
        cip = f"10.{1 + i // 50_000}.0.1"
        client = (cip, 10_000 + i % 50_000)
        proxy_src = (f"198.51.{100 + i // 50_000}.1", 10_000 + i % 50_000)
        cf = _Flow(crec, client, ("192.0.2.1", 80), 1_000_000 + i * 13)
        sf = _Flow(srec, proxy_src, ("198.51.100.10", 8080), 2_000_000 + i * 17)
        key = ws_key(i)
        up = [("Host", "192.0.2.1"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
        ws = [("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
        fwd = [("X-Forwarded-For", cip)]
        cf.open(t0)
        cf.send("c", http_request(f"/ws/{i}", up + ws), t0 + 100)
        sf.open(t0 + 100 + d)
        sf.send("c", http_request(f"/ws/{i}", up + ws + fwd), t0 + 140 + d)
        if kind == "refused":
            body = b"forbidden"
            resp = http_response(403, "Forbidden", [("Content-Length", str(len(body)))], body=body)
            sf.send("s", resp, t0 + 300 + d)
            cf.send("s", resp, t0 + 300 + 2 * d)
            sf.pkt("s", FIN | ACK, t0 + 400 + d)
            sf.pkt("c", FIN | ACK, t0 + 410 + d)
            cf.pkt("s", FIN | ACK, t0 + 420 + 2 * d)
            cf.pkt("c", FIN | ACK, t0 + 430 + 2 * d)
            continue
        ok = http_response(
            101,
            "Switching Protocols",
            [("Upgrade", "websocket"), ("Connection", "Upgrade")]
            + [("Sec-WebSocket-Accept", accept_for(key))],
        )
        sf.send("s", ok, t0 + 300 + d)
        cf.send("s", ok, t0 + 300 + 2 * d)
        t = t0 + 1000 + 2 * d
        for k in range(messages):
            t += 10_000
            payload = f"message {i}.{k}".encode()
            cf.send("c", ws_frame(TEXT, payload, mask_key=MASK), t)
            sf.send("c", ws_frame(TEXT, payload, mask_key=MASK), t + d)
            sf.send("s", ws_frame(TEXT, payload), t + 2 * d)
            cf.send("s", ws_frame(TEXT, payload), t + 3 * d)
        t += 10_000
        if kind == "reset":
            sf.pkt("s", RST | ACK, t)
            cf.pkt("s", FIN | ACK, t + d)
            cf.pkt("c", FIN | ACK, t + d + 30)
            continue
        bye = close_payload(1000, b"bye")
        cf.send("c", ws_frame(0x8, bye, mask_key=MASK), t)
        sf.send("c", ws_frame(0x8, bye, mask_key=MASK), t + d)
        sf.send("s", ws_frame(0x8, bye), t + 2 * d)
        cf.send("s", ws_frame(0x8, bye), t + 3 * d)
        sf.pkt("s", FIN | ACK, t + 2 * d + 20)
        sf.pkt("c", FIN | ACK, t + 2 * d + 40)
        cf.pkt("s", FIN | ACK, t + 3 * d + 20)
        cf.pkt("c", FIN | ACK, t + 3 * d + 40)
    directory = Path(directory)
    return _write(directory / "client.pcap", crec), _write(directory / "server.pcap", srec)


# --- the report -----------------------------------------------------------------------------------

MB = 1024 * 1024
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
BIG = 2_500  # pairs: above every default cap but the details' and ladders'
SMALL = 300
RANK = {"error": 2, "warning": 1, "info": 0}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """2,500 pairs (5,000 connections, ~10,000 matched messages) and its report with
    the default caps."""
    a = analyze(*scale_legs(tmp_path_factory.mktemp("big"), BIG), strict=True)
    t = time.perf_counter()
    html = report.render_html(a)
    return a, html, time.perf_counter() - t


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """300 pairs, rendered with small caps so that every cap applies."""
    a = analyze(*scale_legs(tmp_path_factory.mktemp("small"), SMALL), strict=True)
    html = report.render_html(a, max_pairs=8, max_rows=25, max_ladders=3, scatter_limit=100)
    return a, html


def ids_and_links(html: str) -> tuple[list[str], list[str]]:
    tags = parse(html).tags
    ids = [a["id"] or "" for _, a in tags if "id" in a]
    links = [a["href"] or "" for t, a in tags if t == "a" and "href" in a]
    return ids, links


def assert_links_resolve(html: str) -> list[str]:
    ids, links = ids_and_links(html)
    dup = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup, f"duplicate ids {dup[:5]}"
    assert all(h.startswith("#") for h in links)
    missing = [h for h in links if h[1:] not in set(ids)]
    assert not missing, f"links to no element: {missing[:5]}"
    return links


def section(html: str, start: str, end: str) -> str:
    i = html.index(start)
    return html[i : html.index(end, i)]


def verdict_rows(html: str) -> list[str]:
    body = section(html, 'id="t-verdict"', "</table>")
    return re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1], re.S)


def expected_pair_keys(a) -> dict[str, tuple[int, float]]:
    """Per pair, independently of the report: its worst finding severity (-1 none)
    and the larger p95 proxy delay of its two directions (NaN none)."""
    worst: dict[str, int] = {}
    for codes, sev in zip(a.findings["connections"], a.findings["severity"], strict=True):
        for c in (codes or "").split(", "):
            worst[c] = max(worst.get(c, -1), RANK[sev])
    p95 = a.message_matches.groupby(["pair_id", "direction"])["proxy_delay_ms"].quantile(0.95)
    p95 = p95.groupby(level=0).max()
    out = {}
    for pid, c, s in zip(
        a.pairs["pair_id"],
        a.pairs["client_connection_id"],
        a.pairs["server_connection_id"],
        strict=True,
    ):
        out[pid] = (max(worst.get(c, -1), worst.get(s, -1)), float(p95.get(pid, float("nan"))))
    return out


def assert_worst_first(keys: list[tuple[int, float]]) -> None:
    """Severity never increases; at equal severity the p95 delay never increases
    (pairs without matched messages last), to the report's rounding (1 µs)."""
    for (s1, d1), (s2, d2) in zip(keys, keys[1:], strict=False):
        assert s1 >= s2, keys
        if s1 == s2 and d2 == d2:  # d2 not NaN
            assert d1 == d1 and d1 >= d2 - 0.001, (d1, d2)


# --- at scale, default caps -------------------------------------------------------------------------


def test_big_capture_report_is_bounded_and_capped(big):
    a, html, seconds = big
    assert len(a.pairs) == BIG and len(a.connections) == 2 * BIG
    assert len(html.encode()) < 15 * MB
    tags = assert_self_contained(html)
    assert tag_count(tags, "script") == 1
    # details for the 50 worst pairs, ladders for 10, tables of 2,000 rows with a note
    details = [a_["id"] for t, a_ in tags.tags if t == "details" and "id" in a_]
    assert len(details) == 50
    ladders = [alt for alt in images(tags) if "ladder" in alt]
    assert len(ladders) == 10
    assert all(alt.removeprefix("ladder diagram of ") in details[:10] for alt in ladders)
    for table, total in (("t-pairs", BIG), ("t-connections", 2 * BIG)):
        body = section(html, f'id="{table}"', "</table>")
        assert body.count("<tr") == 2_000 + 1  # and the header
        assert f"2,000 of {total:,}" in html and f"{total - 2_000:,} not shown" in html
    assert "The JSON report (--json)" in html
    assert "Details for the 50 worst of 2,500 pairs" in html
    # ~10,000 matched messages: percentile bands, not a scatter of every message
    assert len(a.message_matches) >= 5_000
    delay = [alt for alt in images(tags) if "delay" in alt]
    assert delay == ["proxy delay per message (percentile bands over time)"]
    assert_links_resolve(html)
    print(f"{BIG} pairs: {len(html.encode()) / MB:.2f} MB in {seconds:.1f} s")


def test_big_capture_worst_pairs_first(big):
    a, html, _ = big
    keys = expected_pair_keys(a)
    ids, _links = ids_and_links(html)
    details = [i for i in ids if i.startswith("pair-")][:50]
    with_findings = {p for p, (sev, _) in keys.items() if sev >= 0}
    assert 0 < len(with_findings) < 50
    # every pair with a finding has its details, before any other
    assert set(details[: len(with_findings)]) == with_findings
    assert_worst_first([keys[p] for p in details])
    # then the slowest pairs: the proxy added 20+ ms there
    slow = [i for i in range(BIG) if pair_kind(i) == "slow"]
    first_clean = details[len(with_findings)]
    assert keys[first_clean][1] >= 20.0
    assert keys[first_clean][1] == pytest.approx(pair_delay_us(max(slow)) / 1000, abs=0.01)
    # the table of all pairs is in the same order
    body = section(html, 'id="t-pairs"', "</table>")
    rows = re.findall(r"<tr(?: id=\"(pair-\d+)\")?><td>(?:<a href=\"#(pair-\d+)\">)?", body)
    order = [x or y for x, y in rows if x or y]
    assert order[:50] == details
    assert_worst_first([keys[p] for p in order])


def test_big_capture_summary_block(big):
    a, html, _ = big
    summary = section(html, 'id="summary"', 'id="pairs"')
    refused = sum(1 for i in range(BIG) if pair_kind(i) == "refused")
    text = re.sub(r"<[^>]+>", " ", summary)
    assert re.search(r"connections \(HTTP or WebSocket\)\s+2,500\s+2,500", text)
    assert re.search(rf"upgrade refused \(not 101\)\s+{refused}\s+{refused}", text)
    assert re.search(r"WebSocket established\s+" + rf"{BIG - refused:,}\s+" * 2, text)
    assert re.search(r"pairs \(client leg ↔ server leg\)\s+2,500", text)
    for d in ("client to server", "server to client"):
        assert re.search(rf"{d}\s+[\d,]+(\s+\d+\.\d{{3}}){{4}}", text), d
    assert re.search(r"first close code.*?1000\s+[\d,]+", text, re.S)
    assert "closed by server with RST" in text
    for code, n in Counter(a.findings["code"]).items():
        assert re.search(rf"{code}\s+{n:,}", text), code


def test_big_capture_verdict_times_and_links(big):
    a, html, _ = big
    rows = verdict_rows(html)
    assert len(rows) == a.findings["code"].nunique()  # every group, complete
    counts = Counter(a.findings["code"])
    for row in rows:
        code = re.search(r'<td class="code">(\w+)</td>', row).group(1)
        assert f'<td class="num">{counts[code]}</td>' in row
        first, *last = ISO.findall(re.search(r'<td class="time"[^>]*>(.*?)</td>', row).group(1))
        ts = a.findings.loc[a.findings["code"] == code, "ts"]
        assert first == report.iso(ts.min().value)
        assert (last[0] if last else first) == report.iso(ts.max().value)
        links = re.findall(r'<a href="#(pair-\d+)">', row)
        assert 1 <= len(links) <= 5
    assert_links_resolve(html)


# --- every cap, small ------------------------------------------------------------------------------


def test_small_caps_and_notes(small):
    a, html = small
    tags = assert_self_contained(html)
    assert tag_count(tags, "script") == 1
    details = [x["id"] for t, x in tags.tags if t == "details" and "id" in x]
    assert len(details) == 8
    assert len([alt for alt in images(tags) if "ladder" in alt]) == 3
    n_findings = len(a.findings)
    assert n_findings > 25
    for table, total in (
        ("t-pairs", SMALL),
        ("t-connections", 2 * SMALL),
        ("t-findings", n_findings),
    ):
        body = section(html, f'id="{table}"', "</table>")
        assert body.count("<tr") == 25 + 1, table
        assert f"25 of {total:,}" in html and f"{total - 25:,} not shown" in html, table
    assert f"{SMALL - 8} more pairs are summarised in the table below (its first 25 rows)" in html
    # the verdict still counts every finding
    counted = sum(
        int(re.search(r'<td class="num">(\d+)</td>', r).group(1)) for r in verdict_rows(html)
    )
    assert counted == n_findings
    assert [alt for alt in images(tags) if "delay" in alt] == [
        "proxy delay per message (percentile bands over time)"
    ]
    assert_links_resolve(html)


def test_filter_boxes_and_one_script(small):
    _a, html = small
    tags = parse(html)
    boxes = [x for t, x in tags.tags if t == "input" and "filter" in (x.get("class") or "")]
    assert {b["data-table"] for b in boxes} == {"t-pairs", "t-connections", "t-findings"}
    table_ids = {x.get("id") for t, x in tags.tags if t == "table"}
    assert all(b["data-table"] in table_ids for b in boxes)
    assert all(b.get("type") == "search" and b.get("aria-label") for b in boxes)
    for _tag, attrs in tags.tags:
        assert not any(name.startswith("on") for name in attrs)
    (script,) = tags.scripts
    assert "input.filter" in script and "table.sortable" in script
    assert "addEventListener" in script and "toLowerCase" in script
    # The policy allows exactly this script, by its hash (CSP3), and no inline handler.
    import base64
    import hashlib

    pinned = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert (
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{pinned}'\"" in html
    )


def test_per_pair_close_story_and_delay_strip(small):
    a, html = small
    sec = report.sections(a)
    by_id = {p["id"]: p for p in sec["pairs"]}
    blocks = dict(re.findall(r'<details id="(pair-\d+)"[^>]*>(.*?)</details>', html, re.S))
    assert len(blocks) == 8
    for pid, body in blocks.items():
        p = by_id[pid]
        assert "Close story: " + p["close"].replace("'", "&#39;") in body
        if p["messages_matched"]:
            svg = re.search(r'<svg class="strip"[^>]*>(.*?)</svg>', body, re.S)
            assert svg, pid
            assert svg.group(1).count("<circle") == p["messages_matched"]
        else:
            assert "<svg" not in body


# --- real captures: the verdict's anchors ------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario", ["nginx-ok", "nginx-no-upgrade", "haproxy-server-reset", "nginx-idle-timeout"]
)
def test_verdict_anchors_resolve(scenario, analysis_of):
    a = analysis_of(scenario)
    html = report.render_html(a)
    links = assert_links_resolve(html)
    rows = verdict_rows(html) if a.finding_list else []
    assert len(rows) == a.findings["code"].nunique()
    for row in rows:
        hrefs = re.findall(r'<a href="(#[^"]+)">', row)
        assert hrefs and set(hrefs) <= set(links)
        assert ISO.search(row)
    sec = report.sections(a)
    theta = a.correlation.clock_offset.estimate_ns if a.correlation.clock_offset else 0
    for v in sec["verdict"]:
        ts = [
            f.ts_ns - (theta if f.capture == "server" else 0)
            for f in a.finding_list
            if f.code == v["code"] and f.ts_ns is not None
        ]
        assert (v["first_ts"], v["last_ts"]) == (report.iso(min(ts)), report.iso(max(ts)))
        pairs = {t["id"] for t in v["targets"] if t["kind"] == "pair"}
        for p in pairs:
            assert f'<details id="{p}"' in html
    if scenario == "nginx-ok":
        assert not a.finding_list and "No findings." in html
        assert {f"#{p}" for p in a.pairs["pair_id"]} <= set(links)


# --- the aggregated delay chart -------------------------------------------------------------------


def test_delay_distribution_chart(small):
    from matplotlib.figure import Figure

    a, _html = small
    m = a.message_matches
    fig = charts.plot_proxy_delay_distribution(m)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.collections) == 2  # one band per direction
    assert len(ax.lines) >= 4  # median and max per direction, and the zero line
    own = Figure()
    into = own.add_subplot()
    assert charts.plot_proxy_delay_distribution(m, ax=into) is own
    empty = charts.plot_proxy_delay_distribution(m.iloc[:0])
    assert isinstance(empty, Figure)
    one = charts.plot_proxy_delay_distribution(m.iloc[:1])
    assert len(one.axes[0].collections) == 1


# --- measuring a large report (not a test) --------------------------------------------------------


def measure(pairs: int, directory: Path, browser: bool = True) -> dict[str, float]:
    """Generate ``pairs`` pairs, analyse, render the HTML report; the size and the
    time of each step, and with ``browser`` the time headless Chromium takes to load
    and lay it out (tests/browser.py)."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    client, server = scale_legs(directory, pairs)
    out["generate_s"] = time.perf_counter() - t
    out["capture_mb"] = (client.stat().st_size + server.stat().st_size) / MB
    t = time.perf_counter()
    a = analyze(client, server)
    out["analyze_s"] = time.perf_counter() - t
    t = time.perf_counter()
    html = report.render_html(a)
    out["render_s"] = time.perf_counter() - t
    path = directory / "report.html"
    path.write_text(html, encoding="utf-8")
    out["html_mb"] = len(html.encode()) / MB
    if browser:
        from browser import Chromium, find_chromium

        if find_chromium():
            with Chromium.start(directory / "profile") as b:
                page = b.new_page()
                t = time.perf_counter()
                page.open(path, timeout=300)
                out["browser_load_s"] = time.perf_counter() - t
                t = time.perf_counter()
                shown = page.evaluate(
                    "(function () { var b = document.querySelector('input.filter');"
                    " b.value = 'rst'; b.dispatchEvent(new Event('input'));"
                    " var t = document.getElementById(b.getAttribute('data-table'));"
                    " return Array.prototype.filter.call(t.tBodies[0].rows,"
                    " function (r) { return !r.hidden; }).length; })()"
                )
                out["browser_filter_s"] = time.perf_counter() - t
                out["browser_filter_rows"] = shown
                out["browser_errors"] = len(page.exceptions) + len(page.console_errors)
                page.close()
    return out


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=measure.__doc__)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        for k, v in measure(args.pairs, d, browser=not args.no_browser).items():
            print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
