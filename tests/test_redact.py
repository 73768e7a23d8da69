"""Redaction: credentials never reach a report by default (JSON, HTML, Markdown,
terminal summary, ladder diagram labels); ``--no-redact`` shows them and every
report says so; equal secrets on the two legs give equal markers."""

from __future__ import annotations

import json
import re

import pytest
from craft import TEXT, Msg, nginx_like, write_legs

from wsanalyze import analyze, report
from wsanalyze.cli import main
from wsanalyze.redact import Redactor, marker, redact_header, redact_target

MARKER = re.compile(r"«redacted (\d+)B #([0-9a-f]{8})»")

BEARER = "abcDEF0123456789bearerTOKENvalue"
SESSION = "s3ss10nVALUEdeadbeef"
SESSION2 = "s3ss10nREWRITTENcafe"
K8S = "eyJhbGciOiJSUzI1NiJ9K8StokenPART"
QUERY = "SECRETqueryTOKEN42"
SETCOOKIE = "NEWsessionFROMserver77"
CLOSE_TOKEN = "CLOSEbearerSECRET99"
SECRETS = (BEARER, SESSION, SESSION2, K8S, QUERY, SETCOOKIE, CLOSE_TOKEN)


# --- units -------------------------------------------------------------------------------------


def test_marker_keeps_length_and_a_short_hash():
    m = marker("0123456789")
    assert MARKER.fullmatch(m)
    assert MARKER.fullmatch(m).group(1) == "10"
    assert marker("0123456789") == m and marker("0123456789x") != m
    assert MARKER.fullmatch(marker("é")).group(1) == "2"  # bytes, not characters


@pytest.mark.parametrize(
    "name,value,secret",
    [
        ("Authorization", f"Bearer {BEARER}", BEARER),
        ("authorization", f"Basic {BEARER}", BEARER),
        ("Proxy-Authorization", f"Bearer {BEARER}", BEARER),
        ("Cookie", f"session={SESSION}; theme=dark", SESSION),
        ("Set-Cookie", f"session={SETCOOKIE}; HttpOnly", SETCOOKIE),
        ("X-Api-Key", BEARER, BEARER),
        ("X-Session-Token", SESSION, SESSION),
        (
            "Sec-WebSocket-Protocol",
            f"base64url.bearer.authorization.k8s.io.{K8S}, base64.channel.k8s.io",
            K8S,
        ),
        ("X-Forwarded-Authorization", f"Bearer {BEARER}", BEARER),
        ("Referer", f"https://app.example/ws?access_token={QUERY}", QUERY),
    ],
)
def test_redact_header(name, value, secret):
    out = redact_header(name, value)
    assert secret not in out
    assert MARKER.search(out)
    assert Redactor(False).header(name, value) == value


def test_k8s_subprotocol_keeps_the_other_protocols():
    out = redact_header(
        "Sec-WebSocket-Protocol",
        f"base64url.bearer.authorization.k8s.io.{K8S}, base64.channel.k8s.io",
    )
    assert out.startswith("base64url.bearer.authorization.k8s.io.«redacted ")
    assert out.endswith(", base64.channel.k8s.io")


def test_ordinary_headers_are_untouched():
    for name, value in [
        ("Host", "192.0.2.1"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
    ]:
        assert redact_header(name, value) == value
    assert redact_header("Cookie", None) is None


def test_redact_target():
    out = redact_target(f"/ws?access_token={QUERY}&x=1")
    assert QUERY not in out
    assert out.startswith("/ws?access_token=«redacted 18B #") and out.endswith("»&x=1")
    assert redact_target("/ws?x=1&token=&y=2") == "/ws?x=1&token=&y=2"
    assert redact_target("/ws") == "/ws"
    assert redact_target(None) is None
    assert QUERY not in redact_target(f"/a?b=1;sig={QUERY}#frag")


def test_free_text():
    r = Redactor()
    text = f"found=Authorization: Bearer {BEARER} at /ws?access_token={QUERY}"
    out = r.text(text)
    assert BEARER not in out and QUERY not in out
    assert Redactor(False).text(text) == text


# --- every report, on a crafted capture --------------------------------------------------------


@pytest.fixture(scope="module")
def secret_captures(tmp_path_factory):
    """One WebSocket whose handshake carries every kind of credential; the proxy
    passes Authorization, the bearer sub-protocol and the target unchanged and
    rewrites the Cookie. The server sets a cookie; the close reason carries a token."""
    conv = nginx_like(
        1,
        extra=[
            ("Authorization", f"Bearer {BEARER}"),
            (
                "Sec-WebSocket-Protocol",
                f"base64url.bearer.authorization.k8s.io.{K8S}, base64.channel.k8s.io",
            ),
        ],
        messages=[Msg("c2s", TEXT, b"hello"), Msg("s2c", TEXT, b"hello")],
        close=(4001, f"expired Bearer {CLOSE_TOKEN}".encode()),
    )
    conv.target = f"/ws?access_token={QUERY}&x=1"
    conv.client_headers.append(("Cookie", f"session={SESSION}"))
    conv.server_headers.append(("Cookie", f"session={SESSION2}"))
    conv.server_response = [
        ("Sec-WebSocket-Protocol", "base64.channel.k8s.io"),
        ("Set-Cookie", f"session={SETCOOKIE}; HttpOnly"),
    ]
    conv.client_response = list(conv.server_response)
    return write_legs(tmp_path_factory.mktemp("secrets"), [conv])


def _outputs(capsys, tmp_path, captures, *extra: str) -> dict[str, str]:
    j, h, m = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    code = main(
        ["pcap", *map(str, captures), "--json", str(j), "--html", str(h), "--markdown", str(m)]
        + list(extra)
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    return {
        "json": j.read_text(encoding="utf-8"),
        "html": h.read_text(encoding="utf-8"),
        "markdown": m.read_text(encoding="utf-8"),
        "summary": out,
    }


def test_secrets_never_appear_by_default(capsys, tmp_path, secret_captures):
    outs = _outputs(capsys, tmp_path, secret_captures)
    for kind, text in outs.items():
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{kind} shows {leaked}"
    doc = json.loads(outs["json"])
    assert doc["redacted"] is True
    assert MARKER.search(outs["json"]) and MARKER.search(outs["summary"])
    assert "NOT redacted" not in outs["summary"] and "NOT redacted" not in outs["markdown"]
    # also through the API's report functions
    a = analyze(*secret_captures)
    for text in (json.dumps(report.to_json(a)), report.summary_text(a), report.render_markdown(a)):
        assert not [s for s in SECRETS if s in text]


def test_no_redact_shows_secrets_and_says_so(capsys, tmp_path, secret_captures):
    outs = _outputs(capsys, tmp_path, secret_captures, "--no-redact")
    doc = json.loads(outs["json"])
    assert doc["redacted"] is False
    for s in (BEARER, SESSION, SESSION2, K8S, QUERY, SETCOOKIE):
        assert s in outs["json"], s
        assert s in outs["html"], s
    assert QUERY in outs["summary"] and QUERY in outs["markdown"]
    assert SESSION in outs["summary"] and SESSION2 in outs["markdown"]
    assert "NOT redacted" in outs["summary"]
    assert "NOT redacted" in outs["markdown"]
    assert "NOT redacted" in outs["html"]
    assert not MARKER.search(outs["json"])


def _header(conn: dict, name: str) -> str:
    return next(v for n, v in conn["request"]["headers"] if n.lower() == name.lower())


def test_equal_secrets_give_equal_markers(secret_captures):
    doc = report.to_json(analyze(*secret_captures))
    conns = {c["id"]: c for c in doc["connections"]}
    (pair,) = doc["pairs"]
    c, s = conns[pair["client"]], conns[pair["server"]]
    for name in ("Authorization", "Sec-WebSocket-Protocol"):
        assert MARKER.search(_header(c, name))
        assert _header(c, name) == _header(s, name), name
    assert c["request"]["target"] == s["request"]["target"]
    assert MARKER.search(c["request"]["target"]) and c["request"]["target"].endswith("&x=1")
    # the proxy rewrote the cookie: a modified change with two different markers
    (cookie,) = [h for h in pair["header_changes"] if h["name"].lower() == "cookie"]
    assert cookie["change"] == "modified"
    assert MARKER.fullmatch(cookie["client_value"]) and MARKER.fullmatch(cookie["server_value"])
    assert cookie["client_value"] != cookie["server_value"]
    assert cookie["client_value"] == marker(f"session={SESSION}")
    # close reasons are free text: the bearer token is redacted, the code kept
    close = c["close"]["client_to_server"]
    assert close["code"] == 4001 and CLOSE_TOKEN not in close["reason"]


def test_ladder_labels_are_redacted(monkeypatch, secret_captures):
    """The HTML report's ladder diagrams are pictures: their labels (request target)
    must be redacted before drawing."""
    from wsanalyze import charts

    seen: list[str] = []
    real = charts.plot_ladder

    def spy(events, **kw):
        seen.extend(str(x) for x in events["label"])
        return real(events, **kw)

    monkeypatch.setattr(charts, "plot_ladder", spy)
    a = analyze(*secret_captures)
    report.render_html(a)
    assert seen and any("«redacted" in x for x in seen)
    assert not [s for s in SECRETS if any(s in x for x in seen)]
    seen.clear()
    report.render_html(a, redact=False)
    assert any(QUERY in x for x in seen)


def test_malformed_head_excerpt_does_not_leak_the_previous_field(tmp_path):
    SHORT = "c00kieSEKRT"  # short enough to sit in the excerpt before the bad name
    from craft import TcpFlow, http_response, t_us, write_pcap

    f = TcpFlow(("192.0.2.10", 43000), ("192.0.2.1", 80))
    f.open(t_us(0))
    head = (
        b"GET /ws HTTP/1.1\r\nHost: h\r\n"
        + f"Cookie: session={SHORT}\r\n".encode()
        + b"Bad Header: x\r\n\r\n"
    )
    f.send("c", head, t_us(100))
    f.send("s", http_response(400, "Bad Request", [("Content-Length", "0")]), t_us(200))
    a = analyze(write_pcap(tmp_path / "c.pcap", f.packets), strict=True)
    assert "http_malformed_head" in set(a.findings["code"])
    assert SHORT not in json.dumps(report.to_json(a))
    assert SHORT not in report.summary_text(a)
