"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``),
driven over the Chrome DevTools Protocol by tests/browser.py.

- A crafted capture full of ``<script>``, ``onerror=``, ``javascript:``, template and
  mathtext content in every field a report shows: nothing from it executes (no
  dialog, ``window.__pwned`` never set, no exception), the report renders, and the
  injected strings are on the page as text.
- The report of every shipped capture (captures/) renders with no script error,
  every image (ladder, delay chart) decodes, and the sortable tables sort.

One browser for the module (fresh profile, killed by the fixture's finalizer), one
tab per page. A screenshot of each page is written to the test's ``tmp_path`` and,
when ``$WSANALYZE_ARTIFACTS`` is set, to that directory (with the HTML).
Skipped when no Chromium is installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from conftest import scenario_names
from craft import TEXT, Msg, TcpFlow, http_request, nginx_like, t_us, write_legs, write_pcap

from wsanalyze import analyze, report

TEMPLATE_SOURCE = (Path(report.__file__).parent / "templates" / "report.html.j2").read_text(
    encoding="utf-8"
)
TEMPLATE_SCRIPTS = TEMPLATE_SOURCE.count("<script")
"""The page's scripts are the template's own: as many, none from the capture."""
TEMPLATE_ELEMENTS = {m.lower() for m in re.findall(r"<([A-Za-z][A-Za-z0-9]*)", TEMPLATE_SOURCE)}
TEMPLATE_ELEMENTS |= {"html", "head", "body", "tbody"}  # implied by the HTML parser
"""The kinds of element the template writes: any other on the page was injected."""

# --- hostile content ---------------------------------------------------------------------

PWN1 = "<script>window.__pwned=1</script>"
PWN2 = '"><img src=x onerror="window.__pwned=2">'
PWN3 = "javascript:window.__pwned=3"
PWN4 = "</textarea><svg onload=window.__pwned=4>"
PWN5 = "</pre></details><script>window.__pwned=5</script>"
PWN6 = '<iframe srcdoc="<script>parent.__pwned=6</script>"></iframe>'
ALERT = "<img src=x onerror=alert(document.domain)>"
TEMPLATE = "{{7*7}}"  # jinja2 / client-side template injection
MATH = "$x$"  # matplotlib mathtext in a chart label
SUBPROTOCOL = "<script>window.__pwned=7</script>"
# A request-target holds no space: the same payloads, spelled without.
TARGET = (
    '/ws/<script>window.__pwned=8</script>?a="><img/src=x/onerror=window.__pwned=9>'
    "&b=javascript:window.__pwned=10&c={{7*7}}&d=$x$&e=</textarea><svg/onload=window.__pwned=11>"
)
HOSTILE_NAME = "X-<script>window.__pwned=12</script>"
LONG = "L" * 4000 + PWN1  # a very long header line, one unbreakable word
CLOSE_REASON = f"bye {PWN1}"  # close stories show a reason's first 60 characters
PAYLOADS = [PWN1, PWN2, PWN3, PWN4, PWN5, PWN6, ALERT, TEMPLATE, MATH]
"""Each must be on the rendered page as text."""

# What the page must not hold, evaluated in it: event-handler attributes,
# javascript:/data:text URLs, elements where only an injection puts them (the
# template's own inline SVG charts hold no script, link or animation), and the kinds
# of element present (each must be one the template writes). And what it shows:
# headings, images, its text with every <details> open.
DOM_CHECK = r"""
(() => {
  const urlAttrs = /^(href|src|action|formaction|xlink:href|srcdoc|data|poster|background|ping)$/;
  const onAttrs = [], badUrls = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const n = a.name.toLowerCase();
      if (n.startsWith('on')) onAttrs.push(`<${el.localName} ${n}=${a.value.slice(0, 60)}>`);
      const v = a.value.replace(/[\u0000-\u0020]/g, '').toLowerCase();
      if (urlAttrs.test(n) && (v.startsWith('javascript:') || v.startsWith('vbscript:')
          || v.startsWith('data:text') || n === 'srcdoc'))
        badUrls.push(`<${el.localName} ${n}=${a.value.slice(0, 60)}>`);
    }
  }
  // Elements of a kind the template may hold, in a place only an injection puts them.
  const misplaced = 'body meta,body style,body link,body base,a:not([href^="#"]),'
    + 'svg script,svg a,svg use,svg animate,svg set,svg image,svg foreignObject';
  const shown = {
    h1: Array.from(document.querySelectorAll('h1'), h => h.textContent.trim()),
    h2: Array.from(document.querySelectorAll('h2'), h => h.textContent.trim()),
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  };
  for (const d of document.querySelectorAll('details')) d.open = true;
  return Object.assign(shown, {
    pwned: typeof window.__pwned,
    scripts: Array.from(document.querySelectorAll('script'), s => s.textContent),
    onAttrs, badUrls,
    misplaced: Array.from(document.querySelectorAll(misplaced), e => e.outerHTML.slice(0, 80)),
    elements: Array.from(new Set(Array.from(document.querySelectorAll('*'), e => e.localName))),
    images: Array.from(document.images, i => i.getAttribute('src').slice(0, 22)),
    text: document.body.innerText,
  });
})()
"""

# Click every header cell of every sortable table twice (ascending, descending).
CLICK_ALL_HEADERS = r"""
(() => {
  let n = 0;
  for (const t of document.querySelectorAll('table.sortable'))
    for (const th of t.querySelectorAll('th')) { th.click(); th.click(); n += 2; }
  return n;
})()
"""

# A column of a sortable table (a key is the cell's data-sort, else its text): all
# numbers with the most distinct keys, else all text with the most distinct keys.
# One click on its header must sort it ascending, a second descending: numbers as
# numbers, text in the browser's collation (natural, "client-2" before "client-10",
# or plain: either is a sorted table).
SORT_CHECK = r"""
(() => {
  const key = c => c ? (c.getAttribute('data-sort') ?? c.textContent.trim()) : '';
  const isNum = k => k !== '' && !isNaN(Number(k));
  const cmpWith = opts => (a, b) => (isNum(a) && isNum(b)) ? Number(a) - Number(b)
    : (isNum(a) !== isNum(b)) ? (isNum(a) ? -1 : 1)
    : a.localeCompare(b, undefined, opts);
  const comparators = [cmpWith({numeric: true}), cmpWith({})];
  const ordered = (ks, sign) => comparators.some(
    cmp => ks.every((k, j) => j === 0 || sign * cmp(ks[j - 1], k) <= 0));
  const greater = (a, b) => {  // lexicographic comparison of two scores
    const j = a.findIndex((v, k) => v !== b[k]);
    return j !== -1 && a[j] > b[j];
  };
  let best = null;
  for (const t of document.querySelectorAll('table.sortable')) {
    const head = t.tHead ? t.tHead.rows[0] : t.rows[0];
    const body = () => Array.from(t.rows).filter(r => r !== head);
    if (body().length < 2) continue;
    Array.from(head.cells).forEach((th, i) => {
      const keys = body().map(r => key(r.cells[i]));
      const distinct = new Set(keys).size;
      const numeric = keys.every(isNum), text = !keys.some(isNum);
      const score = [numeric || text ? 1 : 0, numeric && distinct > 1 ? 1 : 0, distinct];
      if (!best || greater(score, best.score)) best = {t, th, i, body, score};
    });
  }
  if (!best) return null;
  const col = () => best.body().map(r => key(r.cells[best.i]));
  const before = col();
  best.th.click();
  const asc = col();
  best.th.click();
  const desc = col();
  return {
    table: best.t.id, column: best.th.textContent.trim(), distinct: best.score[2],
    before, asc, desc, ascending: ordered(asc, 1), descending: ordered(desc, -1),
  };
})()
"""

IMAGES = r"""
Array.from(document.images, i => ({
  alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
}))
"""


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(request, tmp_path_factory):
    """One headless Chromium with a fresh profile for the module; always killed."""
    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "no Chromium to open the HTML report in (apt-get install chromium, "
            "or set WSANALYZE_CHROMIUM to a Chromium/Chrome executable)"
        )
    pytest.importorskip("websockets.sync.client", reason="websockets>=12 drives the browser")
    b = Chromium.start(tmp_path_factory.mktemp("chromium-profile"), executable=exe)
    request.addfinalizer(b.close)
    return b


def save_artifact(tmp_path: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``tmp_path/name`` and to ``$WSANALYZE_ARTIFACTS/name``."""
    out = tmp_path / name
    out.write_bytes(data)
    extra = os.environ.get("WSANALYZE_ARTIFACTS")
    if extra:
        d = Path(extra)
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return out


def assert_png_shows_something(png: bytes, name: str) -> None:
    """A PNG that decodes, at least 600 px wide, with dark pixels (text) on it."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.width >= 600 and img.height >= 200, (name, img.size)
    lo, hi = img.convert("L").getextrema()
    assert lo < 100 < hi, f"{name}: a blank screenshot (grey levels {lo}..{hi})"


def open_report(browser, tmp_path: Path, name: str, html: str):
    """Write ``html``, open it in a new tab; return the tab (still open)."""
    path = tmp_path / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    if os.environ.get("WSANALYZE_ARTIFACTS"):
        save_artifact(tmp_path, f"{name}.html", html.encode("utf-8"))
    page = browser.new_page()
    try:
        page.open(path)
    except BaseException:
        page.close()
        raise
    return page


def problems(page) -> dict[str, list[str]]:
    return {
        "exceptions": page.exceptions,
        "console errors": page.console_errors,
        "browser errors (CSP, loads)": page.log_errors,
        "dialogs": page.dialogs,
    }


def test_the_harness_sees_scripts_run(browser, tmp_path):
    """The detectors work: a page that does run injected code is caught by each."""
    html = (
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="default-src '
        "'none'; img-src data:; script-src 'unsafe-inline'\"><body><h2>x</h2>"
        f"{PWN2}{PWN1}{PWN6}{ALERT}<script>console.error('logged'); null.x</script>"
    )
    page = open_report(browser, tmp_path, "harness", html)
    try:
        dom = page.evaluate(DOM_CHECK)
    finally:
        page.close()
    assert dom["pwned"] == "number"
    assert any("alert" in d for d in page.dialogs), page.dialogs
    assert any("TypeError" in e for e in page.exceptions), page.exceptions
    assert page.console_errors == ["logged"]
    assert any("Content Security Policy" in e for e in page.log_errors), page.log_errors
    assert len(dom["scripts"]) == 2 and dom["onAttrs"] and dom["badUrls"]
    assert "iframe" in set(dom["elements"]) - TEMPLATE_ELEMENTS


# --- a capture full of script ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Both legs of two proxied WebSockets and one malformed request, every shown field
    hostile: request target, header names and values (one 4 KB), the sub-protocol
    (Sec-WebSocket-Protocol on both legs), text messages, close reasons, GraphQL
    message fields (shown in the transcript), headers the proxy adds or changes."""
    d = tmp_path_factory.mktemp("hostile-browser")
    proto = ("Sec-WebSocket-Protocol", SUBPROTOCOL)
    texts = [p.encode() for p in PAYLOADS] + [TARGET.encode()]
    ws = nginx_like(
        1,
        extra=[
            proto,
            ("X-Script", PWN1),
            ("X-Img", PWN2),
            ("X-Link", PWN3),
            ("X-Svg", PWN4),
            ("X-Pre", PWN5),
            ("X-Frame", PWN6),
            ("X-Alert", ALERT),
            ("X-Template", TEMPLATE),
            ("X-Math", MATH),
            ("X-$x$", MATH),  # "$" is a token character: a valid header name
            ("X-Long", LONG),
        ],
        messages=[Msg("c2s" if i % 2 else "s2c", TEXT, t) for i, t in enumerate(texts)],
        close=(1000, CLOSE_REASON.encode()),
    )
    ws.target = TARGET
    ws.client_headers.append(("X-Changed", PWN1))
    ws.server_headers.append(("X-Changed", PWN2))  # modified: the header-change table
    ws.server_headers.append(("X-Added", f"{PWN4}{PWN6}{TEMPLATE}{MATH}"))
    ws.client_response = [proto, ("X-Resp", PWN2), ("X-Link", PWN3), ("X-Long", LONG)]
    ws.server_response = [proto, ("X-Resp", PWN5), ("X-Long", LONG)]

    gql = ("Sec-WebSocket-Protocol", "graphql-transport-ws")
    messages = [
        {"type": "subscribe", "id": PWN1, "payload": {"operationName": PWN2}},
        {"type": "next", "id": PWN3, "payload": {"data": {"x": f"{PWN4} {PWN5} {TEMPLATE}"}}},
        {"type": "error", "id": "1", "payload": [{"message": f"{PWN6} {ALERT} {MATH}"}]},
    ]
    graphql = nginx_like(
        2,
        start_us=300_000,
        extra=[gql],
        messages=[
            Msg("c2s" if m["type"] == "subscribe" else "s2c", TEXT, json.dumps(m).encode())
            for m in messages
        ],
        close=(4400, f"{PWN5}".encode()),
    )
    graphql.target = "/graphql?q=" + TEMPLATE
    graphql.client_response = [gql]
    graphql.server_response = [gql]
    client, server = write_legs(d, [ws, graphql])

    # A third client connection: a hostile header *name* (a malformed head, whose
    # bytes land in a finding's detail); no WebSocket follows.
    f = TcpFlow(("192.0.2.10", 43000), ("192.0.2.1", 80), isn_c=9_000_000, isn_s=9_500_000)
    f.open(t_us(900_000))
    f.send("c", http_request("/x", [("Host", "h"), (HOSTILE_NAME, PWN2)]), t_us(900_100))
    import scapy.utils

    write_pcap(client, list(scapy.utils.rdpcap(str(client))) + f.packets)
    return client, server


@pytest.fixture(scope="module")
def hostile_html(hostile) -> str:
    a = analyze(*hostile, strict=True)
    # The capture decodes as crafted: the hostile strings reach the report.
    assert len(a.pairs) == 2
    assert SUBPROTOCOL in set(a.connections["subprotocol"].dropna())
    assert "http_malformed_head" in set(a.findings["code"])
    return report.render_html(a)


def assert_nothing_ran(page, dom: dict) -> None:
    """No dialog, no exception or error, ``window.__pwned`` never set, and the only
    scripts are the template's own."""
    assert page.dialogs == [], "a dialog opened: script from the capture ran"
    assert dom["pwned"] == "undefined", "window.__pwned was set: script from the capture ran"
    assert problems(page) == {k: [] for k in problems(page)}
    assert len(dom["scripts"]) == TEMPLATE_SCRIPTS, dom["scripts"]
    assert not any("__pwned" in s or "alert" in s for s in dom["scripts"]), dom["scripts"]


def assert_sorts(sort: dict | None) -> None:
    """One click on a header sorts its column ascending, a second descending, the
    same rows in both (see SORT_CHECK)."""
    assert sort is not None, "no sortable table with two rows or more"
    assert sort["distinct"] >= 2, sort
    assert sorted(sort["asc"]) == sorted(sort["before"]) == sorted(sort["desc"]), sort
    assert sort["ascending"], f"not sorted ascending after one click: {sort}"
    assert sort["descending"], f"not sorted descending after a second click: {sort}"


def test_hostile_capture_does_not_execute(browser, hostile_html, tmp_path):
    page = open_report(browser, tmp_path, "hostile", hostile_html)
    try:
        dom = page.evaluate(DOM_CHECK)  # opens every <details>: all of it on screen
        png = page.screenshot(max_height=16000)
        images = page.evaluate(IMAGES)
        sort = page.evaluate(SORT_CHECK)
        clicks = page.evaluate(CLICK_ALL_HEADERS)
        page.browser.drain(0.1)
        after = page.evaluate(DOM_CHECK)  # sorting moved rows: still nothing runs
    finally:
        page.close()
    save_artifact(tmp_path, "hostile.png", png)

    # Nothing executed, before or after every table was sorted.
    assert_nothing_ran(page, dom)
    assert_nothing_ran(page, after)
    # Nothing from the capture became markup.
    assert TEMPLATE_SCRIPTS == 1 and "sortable" in dom["scripts"][0]
    for d in (dom, after):
        assert d["onAttrs"] == [], d["onAttrs"]
        assert d["badUrls"] == [], d["badUrls"]
        assert d["misplaced"] == [], d["misplaced"]
        foreign = {e.lower() for e in d["elements"]} - TEMPLATE_ELEMENTS
        assert not foreign, f"elements the template never writes: {foreign}"
    assert dom["images"] and all(s.startswith("data:image/png;base64,") for s in dom["images"])
    assert all(i["complete"] and i["width"] > 0 for i in images), images
    # The report rendered, its sorter works, and the capture's strings are text on it.
    assert dom["h1"] == ["wsanalyze report"]
    assert {"Verdict", "Pairs", "Connections", "Transcripts", "Findings"} <= set(dom["h2"])
    assert_sorts(sort)
    assert clicks >= 10
    text = dom["text"]
    for p in [*PAYLOADS, SUBPROTOCOL, TARGET, CLOSE_REASON, LONG, "X-$x$: $x$"]:
        assert p in text, f"{p[:60]!r} not shown as text"
    # The malformed head's finding quotes the bytes up to the first one not in a token.
    assert "found=b'X-<'" in text
    assert dom["overflow"] <= 0, f"the page scrolls sideways by {dom['overflow']} px"
    assert_png_shows_something(png, "hostile.png")


# --- the shipped captures ----------------------------------------------------------------


@pytest.mark.parametrize("scenario", scenario_names())
def test_shipped_capture_report_renders(scenario, browser, analysis_of, tmp_path):
    a = analysis_of(scenario)
    html = report.render_html(a)
    page = open_report(browser, tmp_path, scenario, html)
    try:
        png = page.screenshot()  # as it opens
        images = page.evaluate(IMAGES)
        dom = page.evaluate(DOM_CHECK)
        sort = page.evaluate(SORT_CHECK)
        page.browser.drain(0.05)
    finally:
        page.close()
    save_artifact(tmp_path, f"{scenario}.png", png)

    assert_nothing_ran(page, dom)
    assert dom["h1"] == ["wsanalyze report"]
    assert {"Verdict", "Connections", "Findings"} <= set(dom["h2"]), dom["h2"]
    # Every image decoded: the ladders and the delay chart.
    assert len(images) == html.count("<img "), "an image of the HTML is not in the page"
    bad = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert bad == [], f"images not decoded: {bad}"
    if len(a.pairs):
        assert any("ladder" in i["alt"] for i in images), images
    if len(a.message_matches):
        assert any("delay" in i["alt"] for i in images), images
    assert_sorts(sort)
    assert dom["overflow"] <= 0, f"the page scrolls sideways by {dom['overflow']} px"
    assert_png_shows_something(png, f"{scenario}.png")
