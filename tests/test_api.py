"""The notebook-facing API of :class:`wsanalyze.Analysis`: the rich display
(``_repr_html_``: escaped, redacted), ``summary()``, ``tables()``, the Parquet export
(``to_parquet`` / ``read_parquet``) and the generated docs/tables.md."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from craft import nginx_like, plain_http_capture, write_legs

import wsanalyze
from wsanalyze import report, tables

ROOT = Path(__file__).resolve().parent.parent

SECRET_QUERY = "SECRETQUERY456"
SECRET_BEARER = "SECRETBEARER123"
SECRET_BASIC = "U0VDUkVUQkFTSUM9"
HOSTILE_TARGET = f"/ws?access_token={SECRET_QUERY}&x=<script>alert(1)</script>"
HOSTILE_REASON = "Forbidden<script>alert(2)</script>"
HTML_TAGS = {"style", "div", "h4", "table", "thead", "tbody", "tr", "th", "td", "code"}
HTML_TAGS |= {"span", "br", "p"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


def _tags(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> wsanalyze.Analysis:
    """Two proxied conversations with markup and credentials where a capture can hold
    them: a 101 whose target has ``<script>`` and an ``access_token``, with an
    Authorization header the proxy rewrites; a 403 whose reason phrase has
    ``<script>``. The files live in a directory whose name is markup too."""
    d = tmp_path_factory.mktemp("caps") / '<b>"&'
    d.mkdir()
    auth = ("Authorization", f"Bearer {SECRET_BEARER}")
    ok = nginx_like(1, extra=[auth], target=HOSTILE_TARGET)
    ok.server_headers = [
        (n, f"Basic {SECRET_BASIC}") if n == "Authorization" else (n, v)
        for n, v in ok.server_headers
    ]
    refused = nginx_like(2, status=403, reason=HOSTILE_REASON, start_us=200_000)
    client, server = write_legs(d, [ok, refused])
    return wsanalyze.analyze(client, server, strict=True)


# --- _repr_html_ ------------------------------------------------------------------------


def test_repr_html_escapes_capture_strings(hostile):
    html = hostile._repr_html_()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the target, escaped
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the reason, in a finding
    assert "&lt;b&gt;&quot;&amp;" in html  # the capture's path
    parsed = _tags(html)
    assert parsed.tags <= HTML_TAGS, parsed.tags - HTML_TAGS
    assert parsed.attrs <= {"class", "style"}, parsed.attrs


def test_repr_html_redacts_credentials(hostile):
    html = hostile._repr_html_()
    for secret in (SECRET_QUERY, SECRET_BEARER, SECRET_BASIC):
        assert secret not in html
    assert "access_token=«redacted" in html
    # the data really holds them: the tables are not redacted
    assert hostile.pairs.target.str.contains(SECRET_QUERY).any()
    values = hostile.header_changes.client_value.astype(str).str.cat()
    assert SECRET_BEARER in values


def test_repr_html_content(analysis_of):
    a = analysis_of("nginx-ok")
    html = a._repr_html_()
    for text in ("nginx-ok/client.pcap", "nginx-ok/server.pcap", "pair-1", "pair-3"):
        assert text in html
    for name in tables.SCHEMAS:
        assert f"<code>.{name}</code>" in html
    assert "101 / 101" in html
    assert "No findings." in html
    offset = a.correlation.clock_offset.estimate_ns / 1e6
    assert f"{offset:.3f} ms" in html
    # counts: connections, WebSocket connections, pairs, messages
    assert "<td>6</td><td>6</td><td>3</td>" in html
    assert f"<td>{len(a.messages)}</td>" in html


def test_repr_html_cuts_long_lists(analysis_of):
    a = analysis_of("nginx-no-upgrade")
    html = a._html_summary(max_pairs=0, max_findings=2)
    codes = a.findings.code.nunique()
    assert f"{codes - 2} more codes" in html
    assert "1 more pairs" in html
    worst = _tags(html)
    assert worst.tags <= HTML_TAGS


def test_repr_html_findings_worst_first(analysis_of):
    a = analysis_of("nginx-no-upgrade")
    html = a._repr_html_()
    errors = [
        html.index(f"<code>{c}</code>") for c in a.findings.code[a.findings.severity == "error"]
    ]
    warnings = [
        html.index(f"<code>{c}</code>") for c in a.findings.code[a.findings.severity == "warning"]
    ]
    assert max(errors) < min(warnings)
    assert html.index("proxy_upgrade_header_dropped") < html.index("handshake_missing_upgrade")


def test_repr_html_single_capture_and_no_websocket(tmp_path):
    a = wsanalyze.analyze(plain_http_capture(tmp_path / "plain.pcap"), strict=True)
    html = a._repr_html_()
    assert "one capture" in html
    assert "No pairs" in html
    assert _tags(html).tags <= HTML_TAGS


# --- summary() and tables() -------------------------------------------------------------


def test_summary_is_the_terminal_summary(analysis_of):
    a = analysis_of("nginx-no-upgrade")
    text = a.summary()
    assert text == report.summary_text(a)
    assert text.startswith("Captures")
    assert "proxy_upgrade_header_dropped" in text


def test_summary_redacts_by_default(hostile):
    text = hostile.summary()
    for secret in (SECRET_QUERY, SECRET_BEARER, SECRET_BASIC):
        assert secret not in text
    assert "«redacted" in text
    raw = hostile.summary(redact=False)
    assert SECRET_QUERY in raw and SECRET_BEARER in raw and SECRET_BASIC in raw


def test_tables_returns_every_table(analysis_of):
    a = analysis_of("nginx-ok")
    t = a.tables()
    assert list(t) == list(tables.SCHEMAS)
    for name, df in t.items():
        assert df is getattr(a, name)


# --- to_parquet / read_parquet --------------------------------------------------------------


def _assert_parquet_round_trip(a: wsanalyze.Analysis, directory: Path) -> None:
    paths = a.to_parquet(directory)
    assert paths == [directory / f"{name}.parquet" for name in tables.SCHEMAS]
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in paths)
    for name, path in zip(tables.SCHEMAS, paths, strict=True):
        df = getattr(a, name)
        back = pd.read_parquet(path)
        assert list(back.columns) == list(df.columns), name
        if len(df):
            pd.testing.assert_frame_equal(back, df, check_exact=True, obj=name)
            continue
        # Parquet keeps no categories for an empty column: everything else holds.
        assert back.empty, name
        for col, dtype in tables.SCHEMAS[name].items():
            if isinstance(dtype, pd.CategoricalDtype):
                assert isinstance(back[col].dtype, pd.CategoricalDtype), (name, col)
                assert back[col].dtype.ordered == dtype.ordered, (name, col)
            else:
                assert back[col].dtype == dtype, (name, col, back[col].dtype)
    restored = wsanalyze.Analysis.read_parquet(directory)
    assert list(restored) == list(tables.SCHEMAS)
    for name, df in restored.items():
        pd.testing.assert_frame_equal(df, getattr(a, name), check_exact=True, obj=name)


def test_to_parquet_round_trip_real_capture(analysis_of, tmp_path):
    a = analysis_of("nginx-ok")
    assert len(a.messages) and len(a.message_matches) and len(a.header_changes)
    ts = a.messages.ts
    assert str(ts.dtype) == "datetime64[ns, UTC]"
    _assert_parquet_round_trip(a, tmp_path / "nested" / "export")


def test_to_parquet_round_trip_k8s_transcript(analysis_of, tmp_path):
    a = analysis_of("nginx-k8s-exec")
    assert len(a.transcript)
    _assert_parquet_round_trip(a, tmp_path)


def test_to_parquet_round_trip_empty_tables(tmp_path):
    a = wsanalyze.analyze(plain_http_capture(tmp_path / "plain.pcap"), strict=True)
    empty = [n for n in tables.SCHEMAS if getattr(a, n).empty]
    assert {"frames", "messages", "pairs", "message_matches", "transcript"} <= set(empty)
    _assert_parquet_round_trip(a, tmp_path / "out")


def test_to_parquet_replaces_existing_files(analysis_of, tmp_path):
    a = analysis_of("nginx-no-upgrade")
    (tmp_path / "pairs.parquet").write_bytes(b"not parquet")
    a.to_parquet(tmp_path)
    a.to_parquet(tmp_path)
    assert len(pd.read_parquet(tmp_path / "pairs.parquet")) == len(a.pairs)
    assert not list(tmp_path.glob(".*tmp"))


def test_to_parquet_unusable_directory(analysis_of, tmp_path):
    a = analysis_of("nginx-no-upgrade")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        a.to_parquet(a_file)
    with pytest.raises(OSError, match="cannot create the directory"):
        a.to_parquet(a_file / "sub")
    with pytest.raises(ValueError, match="empty path"):
        a.to_parquet("")
    assert a_file.read_text() == "x"


def test_read_parquet_rejects_foreign_files(analysis_of, tmp_path):
    a = analysis_of("nginx-no-upgrade")
    a.to_parquet(tmp_path)
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "pairs.parquet")
    with pytest.raises(ValueError, match="pairs.parquet"):
        wsanalyze.Analysis.read_parquet(tmp_path)
    (tmp_path / "frames.parquet").unlink()
    with pytest.raises(FileNotFoundError):
        wsanalyze.Analysis.read_parquet(tmp_path)


# --- docs/tables.md -------------------------------------------------------------------------


def test_docs_tables_md_is_generated():
    text = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert text == tables.tables_markdown(), (
        "docs/tables.md is stale: python -m wsanalyze.tables > docs/tables.md"
    )


def test_every_column_is_documented():
    schemas = {**tables.SCHEMAS, "ladder": tables.LADDER}
    missing = [(t, c) for t, s in schemas.items() for c in s if not tables.column_doc(t, c)]
    assert not missing, f"add these to tables.COLUMN_DOCS: {missing}"
    stale = [(t, c) for t, docs in tables.COLUMN_DOCS.items() for c in docs if c not in schemas[t]]
    assert not stale, f"documented columns that do not exist: {stale}"
    assert set(tables.DESCRIPTIONS) == set(schemas)
