"""Reports: the HTML file is self-contained (no network fetch, charts as data: URIs)
with a ladder per pair, the delay chart, the header-change table and the findings;
Markdown has the verdict and header-change tables; content from a capture can never
become markup (HTML, Markdown) or terminal control sequences (summary), and cannot
break chart rendering."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from craft import TEXT, Msg, TcpFlow, http_request, nginx_like, t_us, write_legs, write_pcap

from wsanalyze import analyze, report

XSS = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
JS = "javascript:alert(1)"
# a request-target cannot hold spaces: the same payloads, spelled without them
TARGET = '/ws?x=<script>alert(1)</script>&y="><img/src=x/onerror=alert(1)>&z=javascript:alert(1)'


class _Tags(HTMLParser):
    """Every start tag of a document with its attributes, and the script bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def assert_self_contained(html: str) -> _Tags:
    tags = parse(html)
    for tag, attrs in tags.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), f"<{tag} {name}=...> event handler"
            if name in ("src", "href", "action", "srcset", "poster", "data", "formaction"):
                v = (value or "").strip().lower()
                assert v.startswith("data:image/png;base64,") or v.startswith("#"), (
                    f"<{tag} {name}={v[:60]!r}> fetches or navigates"
                )
    assert tag_count(tags, "link") == 0 and tag_count(tags, "iframe") == 0
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    return tags


def tag_count(tags: _Tags, name: str) -> int:
    return sum(1 for t, _ in tags.tags if t == name)


def images(tags: _Tags) -> dict[str, str]:
    return {a.get("alt") or "": a.get("src") or "" for t, a in tags.tags if t == "img"}


# --- real captures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def html_of(analysis_of):
    cache: dict[str, str] = {}

    def get(scenario: str) -> str:
        if scenario not in cache:
            cache[scenario] = report.render_html(analysis_of(scenario))
        return cache[scenario]

    return get


@pytest.mark.parametrize("scenario", ["nginx-ok", "nginx-no-upgrade"])
def test_html_is_one_self_contained_file(scenario, html_of, analysis_of, expected):
    html = html_of(scenario)
    tags = assert_self_contained(html)
    assert tag_count(tags, "script") == 1, "only the template's inline sorting script"
    a = analysis_of(scenario)
    imgs = images(tags)
    # one ladder diagram per pair, embedded
    for pid in a.pairs["pair_id"]:
        src = next((s for alt, s in imgs.items() if alt.endswith(pid) and "ladder" in alt), None)
        assert src and src.startswith("data:image/png;base64,"), pid
    ladders = [alt for alt in imgs if "ladder" in alt]
    assert len(ladders) == len(a.pairs)
    # the delay chart, when messages were matched
    delay = [alt for alt in imgs if "delay" in alt]
    assert len(delay) == (1 if len(a.message_matches) else 0)
    # header-change table: every expected change in a table row
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    for p in expected["scenarios"][scenario]["pairs"]:
        for h in p["request_header_changes"] + p["response_header_changes"]:
            assert any(f">{h['name']}<" in r and f">{h['change']}<" in r for r in rows), h
    # findings: every code, in the verdict and in the findings table
    for code in set(a.findings["code"]):
        assert html.count(code) >= 2, code


def test_html_findings_of_the_broken_proxy(html_of):
    html = html_of("nginx-no-upgrade")
    assert "proxy_upgrade_header_dropped" in html and "proxy_http10_to_backend" in html
    assert "credentials redacted" in html


@pytest.mark.parametrize("scenario", ["nginx-ok", "nginx-no-upgrade"])
@pytest.mark.parametrize("redact", [True, False])
def test_reports_from_one_json_doc_equal_those_built_alone(scenario, redact, analysis_of):
    """The command line builds the JSON dict once and hands it to the other reports
    (which add keys to its pairs): each report equals the one built on its own, in
    any order, and the JSON text written first is unchanged."""
    a = analysis_of(scenario)
    doc = report.to_json(a, redact=redact)
    text = json.dumps(doc, indent=2)
    assert report.summary_text(a, redact=redact, doc=doc) == report.summary_text(a, redact=redact)
    assert report.render_markdown(a, redact=redact, doc=doc) == report.render_markdown(
        a, redact=redact
    )
    assert report.render_html(a, redact=redact, doc=doc) == report.render_html(a, redact=redact)
    assert report.summary_text(a, redact=redact, doc=doc) == report.summary_text(a, redact=redact)
    assert json.dumps(report.to_json(a, redact=redact), indent=2) == text
    assert doc["pairs"] and "client_conn" in doc["pairs"][0]  # it was the one used


@pytest.mark.parametrize("scenario", ["nginx-ok", "nginx-no-upgrade"])
def test_markdown_tables(scenario, analysis_of, expected):
    a = analysis_of(scenario)
    md = report.render_markdown(a)
    lines = md.splitlines()
    assert "## Verdict" in md
    if len(a.findings):
        assert any(ln.startswith("| severity | finding |") for ln in lines)
        for code in set(a.findings["code"]):
            assert f"`{code}`" in md
    else:
        assert "No findings." in md
    assert any(ln.startswith("| message | change | header |") for ln in lines)
    for p in expected["scenarios"][scenario]["pairs"]:
        for h in p["request_header_changes"]:
            row = f"| request | {h['change']} | {h['name']} |"
            assert any(ln.startswith(row) for ln in lines), row
    assert_tables_well_formed(md)
    assert not re.search(r"<[A-Za-z/!]", md), "raw HTML in Markdown"


def _cells(line: str) -> int:
    """The number of unescaped pipes in a table line."""
    return len(re.findall(r"(?<!\\)\|", line.replace("\\\\", "")))


def assert_tables_well_formed(md: str) -> None:
    """Every row of every table has as many cell separators as its header."""
    want = None
    for ln in md.splitlines():
        if ln.startswith("|"):
            if want is None:
                want = _cells(ln)
            assert _cells(ln) == want, ln
        else:
            want = None


# --- hostile content ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Both legs of a WebSocket whose target, header values, messages and close reason
    are script/markup injections, plus one connection with a hostile header *name*
    (a malformed head: its bytes land in a finding's detail)."""
    d = tmp_path_factory.mktemp("hostile")
    conv = nginx_like(
        1,
        extra=[("X-Evil", XSS), ("X-Img", IMG), ("X-Link", JS)],
        messages=[Msg("c2s", TEXT, XSS.encode()), Msg("s2c", TEXT, IMG.encode())],
        close=(1000, f"bye {XSS}".encode()),
    )
    conv.target = TARGET
    conv.client_headers.append(("X-Pipe", "a|b"))
    conv.server_headers.append(("X-Pipe", "a|b|c"))  # modified: shown in the change table
    conv.server_headers.append(("X-Added", f"{XSS}|{IMG}|{JS}"))
    conv.client_response = [("X-Resp", IMG), ("X-Link", f"[click]({JS})")]
    client, server = write_legs(d, [conv])
    # a second client connection: hostile header name, no WebSocket follows
    f = TcpFlow(("192.0.2.10", 43000), ("192.0.2.1", 80), isn_c=9_000_000, isn_s=9_500_000)
    f.open(t_us(500_000))
    f.send("c", http_request("/ws", [("Host", "h"), (f"X-{XSS}", IMG)]), t_us(500_100))
    import scapy.utils

    pkts = list(scapy.utils.rdpcap(str(client))) + f.packets
    write_pcap(client, pkts)
    return client, server


@pytest.fixture(scope="module")
def hostile_analysis(hostile):
    return analyze(*hostile, strict=True)


def test_hostile_capture_is_decoded(hostile_analysis):
    a = hostile_analysis
    assert len(a.pairs) == 1
    assert a.pairs["target"].iloc[0] == TARGET
    hc = a.header_changes
    assert set(hc["name"]) >= {"X-Pipe", "X-Added", "X-Resp"}
    codes = set(a.findings["code"])
    assert "http_malformed_head" in codes


def test_hostile_html_has_no_markup_from_the_capture(hostile_analysis):
    html = report.render_html(hostile_analysis)
    tags = assert_self_contained(html)
    assert tag_count(tags, "script") == 1
    (script,) = tags.scripts
    assert "alert" not in script and "sortable" in script
    for _tag, attrs in tags.tags:
        assert not any("alert" in (v or "") or "javascript:" in (v or "") for v in attrs.values())
    assert all(src.startswith("data:image/png;base64,") for src in images(tags).values())
    assert "<script>alert" not in html and "<img src=x" not in html.lower()
    # the payloads are there, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    text = re.sub(r"<[^>]+>", "", html)
    assert "javascript:alert(1)" in text


def test_hostile_markdown_has_no_markup_and_escapes_pipes(hostile_analysis):
    md = report.render_markdown(hostile_analysis)
    assert not re.search(r"<\s*(script|img)", md, re.I)
    assert not re.search(r"<[A-Za-z/!]", md), "raw HTML tag in Markdown"
    assert not re.search(r"(?<!\\)\]\(javascript:", md), "a link from the capture"
    assert "\\[click\\](javascript:alert(1))" in md
    assert "a\\|b\\|c" in md and "a\\|b" in md
    assert_tables_well_formed(md)
    # each header-change row has exactly five cells
    rows = [ln for ln in md.splitlines() if ln.startswith(("| request |", "| response |"))]
    assert rows and all(_cells(r) == 6 for r in rows)


def test_hostile_json_is_valid(hostile_analysis, check_report):
    doc = report.to_json(hostile_analysis)
    check_report(doc)
    text = json.dumps(doc, ensure_ascii=False)
    assert XSS in text  # JSON carries data, consumers escape


def test_summary_has_no_terminal_control_sequences(tmp_path):
    conv = nginx_like(
        1,
        messages=[Msg("c2s", TEXT, b"x")],
        close=(1000, b"\x1b]0;pwned\x07\x1b[2J"),
        extra=[("X-Esc", "a\x1b[31mred")],
    )
    conv.server_headers.append(("X-Esc2", "\x1b[5mblink"))
    a = analyze(*write_legs(tmp_path, [conv]), strict=True)
    text = report.summary_text(a)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
    assert "\\x1b" in text  # shown, escaped


def test_chart_labels_are_not_mathtext(tmp_path):
    """A ``$...$`` in a target is text, not matplotlib mathtext (which raised)."""
    conv = nginx_like(1, messages=[Msg("c2s", TEXT, b"x")])
    conv.target = "/ws?a=$\\frac{$&b=$^^$"
    a = analyze(*write_legs(tmp_path, [conv]), strict=True)
    html = report.render_html(a)
    alts = images(parse(html))
    # the ladder, the delay chart, and the timeline, throughput and header-change
    # charts (header names may hold "$" too: a valid token character)
    assert len(alts) == 5
    assert any("ladder" in alt for alt in alts)
    assert any("Header changes" in alt for alt in alts)


def test_many_pairs_cap_the_ladders(tmp_path):
    convs = [
        nginx_like(i, start_us=i * 100, messages=[Msg("c2s", TEXT, f"m{i}".encode())])
        for i in range(3)
    ]
    a = analyze(*write_legs(tmp_path, convs), strict=True)
    html = report.render_html(a, max_ladders=2)
    imgs = images(parse(html))
    assert len([alt for alt in imgs if "ladder" in alt]) == 2
    assert len(a.pairs) == 3
