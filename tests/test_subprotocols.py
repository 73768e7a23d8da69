"""Sub-protocol decoders (wsanalyze.subprotocols): Kubernetes remote command
(channel.k8s.io and its base64 / v4 / v5 variants), GraphQL over WebSocket, MQTT,
STOMP, WAMP and Jupyter kernel messages; their channel, kind and transcript text in
the messages and transcript tables and in every report. Arbitrary bytes never
raise in any decoder; tests assert finding codes, not wording."""

from __future__ import annotations

import ast
import base64
import json
import struct
from hashlib import blake2b
from pathlib import Path

import pandas as pd
import pytest
from craft import BINARY, TEXT, Msg, nginx_like, write_legs
from hypothesis import given, settings
from hypothesis import strategies as st

import wsanalyze
from wsanalyze import report, tables
from wsanalyze.catalogue import CATALOGUE
from wsanalyze.model import Direction, Message, Opcode
from wsanalyze.subprotocols import Decoded, decoder_for, known
from wsanalyze.subprotocols._util import FINDING_LIMIT, TEXT_LIMIT

ROOT = Path(__file__).resolve().parents[1]
# The shared public captures live beside the repository (/work/shared).
JUPYTER = ROOT.parent / "shared" / "public-captures" / "zeek" / "jupyter-websocket.pcap"

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
K8S_TOKENS = (
    "channel.k8s.io",
    "v2.channel.k8s.io",
    "v3.channel.k8s.io",
    "v4.channel.k8s.io",
    "v5.channel.k8s.io",
    "base64.channel.k8s.io",
    "v4.base64.channel.k8s.io",
)
OTHER_TOKENS = (
    "graphql-ws",
    "graphql-transport-ws",
    "mqtt",
    "mqttv3.1",
    "v10.stomp",
    "v11.stomp",
    "v12.stomp",
    "stomp",
    "wamp.2.json",
    "v1.kernel.websocket.jupyter.org",
)

EXIT_2 = {
    "metadata": {},
    "status": "Failure",
    "message": "command terminated with non-zero exit code: error executing command "
    "[sh -c ls /nope], exit code 2",
    "reason": "NonZeroExitCode",
    "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
}


def mk(
    payload: bytes,
    opcode: int = Opcode.BINARY,
    direction: Direction = S2C,
    *,
    complete: bool = True,
    keep: bool = True,
) -> Message:
    """A Message as the pipeline hands it to a decoder."""
    return Message(
        direction=direction,
        opcode=opcode,
        frame_count=1,
        payload_len=len(payload),
        digest=blake2b(payload, digest_size=16).digest(),
        preview=payload[:256],
        first_packet=7,
        last_packet=8,
        first_ts_ns=1_000,
        ts_ns=2_000,
        offset=100,
        complete=complete,
        payload=payload if keep else None,
    )


def dec(token: str, payload: bytes, opcode: int = Opcode.BINARY, direction=S2C, **kw) -> Decoded:
    d = decoder_for(token)
    assert d is not None
    return d.decode(mk(payload, opcode, direction, **kw), payload if kw.get("keep", True) else b"")


def codes(d: Decoded) -> list[str]:
    return [f.code for f in d.findings]


# --- the registry ---------------------------------------------------------------------------


def test_every_token_has_a_decoder():
    assert set(K8S_TOKENS) | set(OTHER_TOKENS) <= set(known())
    for token in known():
        d = decoder_for(token)
        assert d is not None and d.name == token


@pytest.mark.parametrize("token", [None, "", "chat", "CHANNEL.K8S.IO", "v6.channel.k8s.io"])
def test_unknown_or_no_subprotocol_has_no_decoder(token):
    assert decoder_for(token) is None


def test_each_connection_gets_its_own_decoder():
    assert decoder_for("mqtt") is not decoder_for("mqtt")


def test_every_code_used_by_the_decoders_is_catalogued():
    used: set[str] = set()
    for path in (ROOT / "wsanalyze" / "subprotocols").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                if v.startswith(("k8s_", "subprotocol_")) and v.replace("_", "").isalnum():
                    used.add(v)
    assert {"k8s_unknown_channel", "k8s_bad_base64", "subprotocol_malformed_message"} <= used
    assert used - set(CATALOGUE) == set()


# --- Kubernetes: channel.k8s.io family ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "channel", "kind", "text"),
    [
        (b"\x00ls\n", 0, "stdin", "ls\n"),
        (b"\x01bin\ndev\n", 1, "stdout", "bin\ndev\n"),
        (b"\x02ls: /nope: No such file\n", 2, "stderr", "ls: /nope: No such file\n"),
        (b'\x04{"Width":120,"Height":40}', 4, "resize", "resize 120x40"),
        (b"\x01", 1, "stdout", None),  # the empty message opening a channel
        (b"\x01caf\xc3\xa9 \xff", 1, "stdout", "café \ufffd"),
    ],
)
@pytest.mark.parametrize("token", ["channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"])
def test_k8s_binary_channels(token, data, channel, kind, text):
    d = dec(token, data)
    assert (d.channel, d.kind, d.text, d.findings) == (channel, kind, text, ())


def test_k8s_v4_status_exit_code():
    d = dec("v4.channel.k8s.io", b"\x03" + json.dumps(EXIT_2).encode())
    assert (d.channel, d.kind, d.findings) == (3, "status", ())
    assert d.text.startswith("exit code 2: command terminated with non-zero exit code")


def test_k8s_v4_status_success_and_other_failure():
    ok = dec("v5.channel.k8s.io", b'\x03{"metadata":{},"status":"Success"}')
    assert ok.text == "exit code 0: Success" and ok.findings == ()
    fail = {"status": "Failure", "reason": "InternalError", "message": "container not found"}
    d = dec("v4.channel.k8s.io", b"\x03" + json.dumps(fail).encode())
    assert d.kind == "status" and "InternalError" in d.text and "container not found" in d.text


def test_k8s_v1_error_channel_is_plain_text():
    d = dec("channel.k8s.io", b"\x03command terminated with non-zero exit code: 2")
    assert (d.kind, d.text, d.findings) == (
        "status",
        "command terminated with non-zero exit code: 2",
        (),
    )


@pytest.mark.parametrize(
    "status", [b"not json", b"[1, 2]", b'{"metadata": {}}', b"{" * 100_000, b'{"status": 1}']
)
def test_k8s_v4_bad_status(status):
    d = dec("v4.channel.k8s.io", b"\x03" + status)
    assert d.kind == "status" and codes(d) == ["k8s_bad_status"]


@pytest.mark.parametrize("resize", [b"80x24", b'{"Width": -1, "Height": 3}', b'{"Width": 80}'])
def test_k8s_bad_resize(resize):
    d = dec("v4.channel.k8s.io", b"\x04" + resize)
    assert d.kind == "resize" and codes(d) == ["k8s_bad_resize"]


@pytest.mark.parametrize("token", K8S_TOKENS)
def test_k8s_empty_message(token):
    d = dec(token, b"")
    assert d.kind is None and codes(d) == ["k8s_empty_message"]


@pytest.mark.parametrize(("token", "ch"), [("v4.channel.k8s.io", 7), ("v4.channel.k8s.io", 255)])
def test_k8s_unknown_channel(token, ch):
    d = dec(token, bytes([ch]) + b"x")
    assert d.channel == ch and d.kind is None and codes(d) == ["k8s_unknown_channel"]


def test_k8s_v5_close_stream():
    d = dec("v5.channel.k8s.io", b"\xff\x00", direction=C2S)
    assert (d.channel, d.kind, d.text, d.findings) == (255, "close_stream", "close stdin", ())
    bad = dec("v5.channel.k8s.io", b"\xff\x00\x01", direction=C2S)
    assert bad.kind == "close_stream" and codes(bad) == ["k8s_bad_close_stream"]


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
@pytest.mark.parametrize("token", K8S_TOKENS)
def test_k8s_control_frames_are_ignored(token, opcode):
    assert dec(token, b"\x03\xe8", opcode) == Decoded()


def test_k8s_text_is_bounded():
    d = dec("v4.channel.k8s.io", b"\x01" + b"x" * 100_000)
    assert d.kind == "stdout" and len(d.text) <= TEXT_LIMIT + 1


def test_k8s_payload_not_kept_decodes_the_preview_without_validity_findings():
    big = b"\x03" + b"{" * 10_000
    d = dec("v4.channel.k8s.io", big, keep=False)
    assert d.kind == "status" and d.findings == ()


def b64(channel: int, data: bytes) -> bytes:
    return str(channel).encode() + base64.b64encode(data)


@pytest.mark.parametrize("token", ["base64.channel.k8s.io", "v4.base64.channel.k8s.io"])
def test_k8s_base64(token):
    d = dec(token, b64(0, b"ls\n"), Opcode.TEXT, C2S)
    assert (d.channel, d.kind, d.text, d.findings) == (0, "stdin", "ls\n", ())
    d = dec(token, b"1Zm9v\r\nCg==", Opcode.TEXT)  # Go's decoder skips CR/LF
    assert (d.kind, d.text) == ("stdout", "foo\n")
    assert dec(token, b"2", Opcode.TEXT).kind == "stderr"


def test_k8s_base64_v4_status():
    d = dec("v4.base64.channel.k8s.io", b64(3, json.dumps(EXIT_2).encode()), Opcode.TEXT)
    assert d.kind == "status" and d.text.startswith("exit code 2:")


@pytest.mark.parametrize("body", [b"1Zm9v!", b"1Zm9", b"1Zm9vCg"])
def test_k8s_bad_base64(body):
    d = dec("base64.channel.k8s.io", body, Opcode.TEXT)
    assert d.kind == "stdout" and codes(d) == ["k8s_bad_base64"]


def test_k8s_base64_cut_message_has_no_base64_finding():
    d = dec("base64.channel.k8s.io", b"1Zm9vCg", Opcode.TEXT, complete=False)
    assert d.kind == "stdout" and d.findings == ()


@pytest.mark.parametrize("first", [b"x", b"9", b"\x00"])
def test_k8s_base64_unknown_channel(first):
    d = dec("base64.channel.k8s.io", first + b"Zm9v", Opcode.TEXT)
    assert codes(d)[:1] == ["k8s_unknown_channel"]


def test_findings_are_limited_per_connection_and_code():
    d = decoder_for("base64.channel.k8s.io")
    found = []
    for _ in range(FINDING_LIMIT + 5):
        m = mk(b"1!!!", Opcode.TEXT)
        found += codes(d.decode(m, b"1!!!"))
    assert found.count("k8s_bad_base64") == FINDING_LIMIT
    assert found.count("subprotocol_findings_suppressed") == 1
    f = d.decode(mk(b"", Opcode.TEXT), b"").findings[0]  # another code is not limited
    assert f.code == "k8s_empty_message"
    assert (f.packets, f.direction, f.offset, f.ts_ns) == ((7, 8), S2C, 100, 2_000)


# --- GraphQL, MQTT, STOMP, WAMP ---------------------------------------------------------------


def js(obj) -> bytes:
    return json.dumps(obj).encode()


def test_graphql_ws_legacy():
    t = "graphql-ws"
    init = dec(t, js({"type": "connection_init", "payload": {"authToken": "s3cr3t"}}), TEXT, C2S)
    assert init.kind == "connection_init" and init.text is None
    start = dec(
        t,
        js({"id": "1", "type": "start", "payload": {"query": "subscription  {\n  onX { id } }"}}),
        TEXT,
        C2S,
    )
    assert start.kind == "start" and start.text == "id=1 subscription { onX { id } }"
    data = dec(t, js({"id": "1", "type": "data", "payload": {"data": {"onX": {"id": 5}}}}), TEXT)
    assert data.kind == "data" and '"id":5' in data.text
    assert dec(t, js({"type": "ka"}), TEXT).kind == "ka"
    assert codes(dec(t, js({"id": "1", "type": "next"}), TEXT)) == ["subprotocol_malformed_message"]


def test_graphql_transport_ws():
    t = "graphql-transport-ws"
    sub = {"id": "a", "type": "subscribe", "payload": {"operationName": "OnX", "query": "..."}}
    d = dec(t, js(sub), TEXT, C2S)
    assert (d.kind, d.text) == ("subscribe", "id=a OnX")
    for kind in ("connection_ack", "next", "complete", "ping", "pong", "error"):
        assert dec(t, js({"id": "a", "type": kind}), TEXT).kind == kind
    for bad in (b"hello", b"[1]", js({"type": "start"}), js({"type": 3})):
        assert codes(dec(t, bad, TEXT)) == ["subprotocol_malformed_message"]


def mqtt_packet(ptype: int, body: bytes, flags: int = 0) -> bytes:
    n, rl = len(body), b""
    while True:
        b, n = n % 128, n // 128
        rl += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([ptype << 4 | flags]) + rl + body


def publish(topic: str, payload: bytes) -> bytes:
    t = topic.encode()
    return mqtt_packet(3, struct.pack("!H", len(t)) + t + payload)


CONNECT = mqtt_packet(1, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc")


def test_mqtt_packet_types():
    d = decoder_for("mqtt")
    assert d.decode(mk(CONNECT, direction=C2S), CONNECT).kind == "CONNECT"
    connack = mqtt_packet(2, b"\x00\x00")
    assert d.decode(mk(connack), connack).kind == "CONNACK"
    p = publish("sensors/temp", b"21.5")
    r = d.decode(mk(p, direction=C2S), p)
    assert (r.kind, r.text, r.channel) == ("PUBLISH", "sensors/temp", None)
    ping = mqtt_packet(12, b"")
    assert d.decode(mk(ping, direction=C2S), ping).kind == "PINGREQ"


def test_mqtt_several_packets_in_one_message():
    data = publish("a/b", b"x" * 300) + mqtt_packet(12, b"")
    d = decoder_for("mqtt").decode(mk(data, direction=C2S), data)
    assert d.kind == "PUBLISH" and d.text == "a/b (+1 more packets)"


def test_mqtt_packet_split_across_messages():
    d = decoder_for("mqtt")
    p = publish("big/topic", b"y" * 1000)
    first, rest = p[:100], p[100:] + mqtt_packet(12, b"")
    assert d.decode(mk(first, direction=C2S), first).kind == "PUBLISH"
    assert d.decode(mk(rest, direction=C2S), rest).kind == "PINGREQ"
    # a fixed header cut after its first byte
    q = mqtt_packet(8, b"\x00\x01" + b"z" * 200)
    assert d.decode(mk(q[:2], direction=C2S), q[:2]).kind == "SUBSCRIBE"
    tail = q[2:]
    assert d.decode(mk(tail, direction=C2S), tail).kind is None  # only continues it


def test_mqtt_malformed():
    d = decoder_for("mqtt")
    for bad in (b"\x00\x00", b"\x30\xff\xff\xff\xff\x01"):
        assert codes(d.decode(mk(bad), bad)) == ["subprotocol_malformed_message"]


def test_stomp_commands():
    t = "v12.stomp"
    connect = b"CONNECT\naccept-version:1.2\nhost:h\nlogin:u\npasscode:p4ss\n\n\x00"
    d = dec(t, connect, TEXT, C2S)
    assert d.kind == "CONNECT" and "p4ss" not in (d.text or "")
    send = b"SEND\r\ndestination:/queue/a\r\ncontent-type:text/plain\r\n\r\nhello\x00"
    d = dec(t, send, TEXT, C2S)
    assert (d.kind, d.text) == ("SEND", "/queue/a hello")
    assert dec(t, b"MESSAGE\ndestination:/topic/x\nmessage-id:1\n\nhi\x00", TEXT).kind == "MESSAGE"
    assert dec(t, b"\n", TEXT).kind == "heartbeat"
    assert codes(dec(t, b"HELLO\n\n\x00", TEXT)) == ["subprotocol_malformed_message"]


def test_wamp_message_codes():
    t = "wamp.2.json"
    d = dec(t, js([1, "realm1", {"roles": {}}]), TEXT, C2S)
    assert (d.kind, d.text) == ("HELLO", "realm1")
    assert dec(t, js([2, 123, {}]), TEXT).kind == "WELCOME"
    d = dec(t, js([16, 1, {}, "com.x.topic", ["a"]]), TEXT, C2S)
    assert (d.kind, d.text) == ("PUBLISH", "com.x.topic")
    assert dec(t, js([48, 2, {}, "com.x.add", [1, 2]]), TEXT, C2S).text == "com.x.add"
    assert dec(t, js([50, 2, {}, [3]]), TEXT).kind == "RESULT"
    d = dec(t, js([8, 48, 2, {}, "wamp.error.no_such_procedure"]), TEXT)
    assert (d.kind, d.text) == ("ERROR", "wamp.error.no_such_procedure")
    for bad in (js({"a": 1}), js([999]), js([]), js(["1"]), js([True]), b"nope"):
        assert codes(dec(t, bad, TEXT)) == ["subprotocol_malformed_message"]


# --- Jupyter ------------------------------------------------------------------------------------


def jupyter_v1(channel: str, header: dict, content: dict) -> bytes:
    parts = [json.dumps(header).encode(), b"{}", b"{}", json.dumps(content).encode()]
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(channel))
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    head = struct.pack("<Q", len(offsets)) + b"".join(struct.pack("<Q", o) for o in offsets)
    return head + channel.encode() + b"".join(parts)


def test_jupyter_v1_crafted():
    t = "v1.kernel.websocket.jupyter.org"
    m = jupyter_v1("shell", {"msg_type": "execute_request", "msg_id": "1"}, {"code": "1+1"})
    d = dec(t, m, BINARY, C2S)
    assert (d.kind, d.text, d.channel) == ("execute_request", "shell: 1+1", None)
    s = jupyter_v1("iopub", {"msg_type": "stream"}, {"name": "stdout", "text": "2\n"})
    assert dec(t, s).text == "iopub: stdout: 2\n"
    legacy = js({"channel": "shell", "header": {"msg_type": "kernel_info_request"}, "content": {}})
    assert dec(t, legacy, TEXT, C2S).kind == "kernel_info_request"
    for bad in (b"\x01\x00", struct.pack("<Q", 10**9) + b"\x00" * 16, m[:60] + b"\xff" * 8):
        assert codes(dec(t, bad)) == ["subprotocol_malformed_message"], bad


@pytest.mark.skipif(not JUPYTER.exists(), reason="shared public captures not present")
def test_jupyter_public_capture_yields_kinds():
    a = wsanalyze.analyze(JUPYTER, strict=True)
    m = a.messages
    data = m[m["opcode"].isin(["binary", "text"])]
    assert len(data) > 0 and data["kind"].notna().all() and data["channel"].isna().all()
    assert {"kernel_info_request", "kernel_info_reply", "status"} <= set(data["kind"])
    tr = tables.transcript_table(a.captures)
    assert set(tr["text"]) >= {"shell", "iopub: idle", "iopub: busy"}
    assert not [f for f in a.finding_list if f.code.startswith(("k8s_", "subprotocol_"))]


# --- arbitrary bytes never raise -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    token=st.sampled_from(sorted(set(K8S_TOKENS) | set(OTHER_TOKENS))),
    messages=st.lists(
        st.tuples(
            st.binary(max_size=300),
            st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE]),
            st.sampled_from([C2S, S2C]),
            st.booleans(),
        ),
        max_size=6,
    ),
)
def test_arbitrary_payloads_never_raise(token, messages):
    d = decoder_for(token)
    for payload, opcode, direction, complete in messages:
        r = d.decode(mk(payload, opcode, direction, complete=complete), payload)
        assert isinstance(r, Decoded)
        assert all(f.code in CATALOGUE for f in r.findings)
        assert r.text is None or len(r.text) <= TEXT_LIMIT + 1
        assert r.channel is None or 0 <= r.channel <= 255


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_prefixed_garbage_never_raises(tail):
    # inputs that reach the deeper parsers: a valid channel, header or offset table
    heads = {
        "v4.channel.k8s.io": [b"\x03", b"\x04", b"\x03{"],
        "v5.channel.k8s.io": [b"\xff"],
        "v4.base64.channel.k8s.io": [b"3", b"4"],
        "mqtt": [b"\x30", b"\x30\x05\x00\x03"],
        "v1.kernel.websocket.jupyter.org": [struct.pack("<QQQ", 2, 24, 30)],
        "wamp.2.json": [b"[16, 1, {}, "],
        "v12.stomp": [b"SEND\n"],
    }
    for token, prefixes in heads.items():
        for p in prefixes:
            assert isinstance(dec(token, p + tail), Decoded)


# --- end to end: crafted captures through wsanalyze.analyze -------------------------------------


def k8s_conversation(token: str, messages: list[Msg], n: int = 1):
    proto = ("Sec-WebSocket-Protocol", token)
    return nginx_like(
        n,
        extra=[proto],
        client_response=[proto],
        server_response=[proto],
        target="/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true"
        "&stderr=true&tty=false",
        messages=messages,
    )


EXEC_V4 = [
    Msg("s2c", BINARY, b"\x01"),
    Msg("s2c", BINARY, b"\x02"),
    Msg("c2s", BINARY, b'\x04{"Width":80,"Height":24}'),
    Msg("c2s", BINARY, b"\x00ls /nope; echo `id` <b>\n"),
    Msg("s2c", BINARY, b"\x01<script>alert(1)</script> ```\nAuthorization: Bearer abcdef123456\n"),
    Msg("s2c", BINARY, b"\x02ls: /nope: No such file or directory\n"),
    Msg("s2c", BINARY, b"\x03" + json.dumps(EXIT_2).encode()),
]


@pytest.fixture(scope="module")
def exec_v4(tmp_path_factory):
    d = tmp_path_factory.mktemp("k8s-v4")
    client, server = write_legs(d, [k8s_conversation("v4.channel.k8s.io", EXEC_V4)])
    return wsanalyze.analyze(client, server, strict=True)


def test_exec_v4_messages_table(exec_v4):
    m = exec_v4.messages
    assert str(m["channel"].dtype) == "Int64" and str(m["kind"].dtype) == "string"
    for leg in ("client-1", "server-1"):
        mine = m[(m["connection_id"] == leg) & m["opcode"].isin(["binary"])]
        assert list(mine["channel"]) == [1, 2, 4, 0, 1, 2, 3]
        assert list(mine["kind"]) == [
            "stdout",
            "stderr",
            "resize",
            "stdin",
            "stdout",
            "stderr",
            "status",
        ]
    closes = m[m["opcode"] == "close"]
    assert closes["channel"].isna().all() and closes["kind"].isna().all()
    assert not [f for f in exec_v4.finding_list if f.code.startswith("k8s_")]


def test_exec_v4_transcript_table(exec_v4):
    tr = tables.transcript_table(exec_v4.captures)
    assert list(tr.columns) == list(tables.TRANSCRIPT)
    for col, dtype in tables.TRANSCRIPT.items():
        assert tr[col].dtype == dtype, col
    client = tr[tr["connection_id"] == "client-1"]
    assert list(client["kind"]) == ["resize", "stdin", "stdout", "stderr", "status"]
    assert list(client["direction"]) == ["client_to_server"] * 2 + ["server_to_client"] * 3
    assert client["text"].iloc[1] == "ls /nope; echo `id` <b>\n"
    assert client["text"].iloc[-1].startswith("exit code 2: ")
    assert (client["ts"].diff().dropna() > pd.Timedelta(0)).all()
    assert set(tr["capture"]) == {"client", "server"}


def test_transcript_table_empty_has_schema():
    tr = tables.transcript_table([])
    assert len(tr) == 0 and list(tr.columns) == list(tables.TRANSCRIPT)
    for col, dtype in tables.TRANSCRIPT.items():
        assert tr[col].dtype == dtype, col


def test_exec_v4_json_transcript(exec_v4, check_report):
    doc = report.to_json(exec_v4)
    check_report(doc)
    conn = next(c for c in doc["connections"] if c["id"] == "client-1")
    tr = conn["transcript"]
    assert [e["kind"] for e in tr] == ["resize", "stdin", "stdout", "stderr", "status"]
    assert [e["channel"] for e in tr] == [4, 0, 1, 2, 3]
    assert set(tr[0]) == {"ts", "direction", "channel", "kind", "text"}
    assert tr[-1]["text"].startswith("exit code 2:")
    assert "abcdef123456" not in json.dumps(doc)  # redacted
    assert "abcdef123456" in json.dumps(report.to_json(exec_v4, redact=False))
    assert conn["transcript_omitted"] == 0


def test_no_transcript_key_without_subprotocol(analysis_of):
    doc = report.to_json(analysis_of("nginx-ok"))
    assert all("transcript" not in c for c in doc["connections"])
    assert "Transcripts" not in report.summary_text(analysis_of("nginx-ok"))


def test_exec_v4_summary(exec_v4):
    text = report.summary_text(exec_v4)
    assert "exit code 2" in text
    assert "$ ls /nope; echo `id` <b>" in text
    assert "ls: /nope: No such file or directory" in text
    assert "server leg server-1: same transcript" in text
    assert "abcdef123456" not in text
    block = text[text.index("Transcripts") :]
    assert block.index("$ ls") < block.index("exit code 2")


def test_exec_v4_markdown(exec_v4):
    md = report.render_markdown(exec_v4)
    section = md[md.index("## Transcripts") :]
    fence = section[section.index("```text") + 7 :]
    body = fence[: fence.index("```")]
    assert "`" not in body  # backticks cannot close the fence
    assert "$ ls /nope; echo 'id' <b>" in body
    assert "exit code 2" in body and "abcdef123456" not in md


def test_exec_v4_html(exec_v4):
    html = report.render_html(exec_v4)
    section = html[html.index(">Transcripts</h2>") : html.index(">Findings</h2>")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section and "<script>" not in section
    assert "$ ls /nope; echo `id` &lt;b&gt;" in section
    assert "exit code 2" in section


def test_transcript_reports_are_bounded(exec_v4):
    conn = exec_v4.client.connections[0]
    saved = list(conn.transcript)
    try:
        ts = saved[-2][0]
        extra = [(ts, 1, 1, "stdout", f"line {i}\n") for i in range(500)]
        conn.transcript[:] = saved[:-1] + extra + saved[-1:]
        doc = report.to_json(exec_v4)
        c = next(c for c in doc["connections"] if c["id"] == "client-1")
        assert len(c["transcript"]) == report.TRANSCRIPT_ENTRIES
        assert c["transcript_omitted"] == len(conn.transcript) - report.TRANSCRIPT_ENTRIES
        text = report.summary_text(exec_v4)
        block = text[text.index("  client-1 (") : text.index("  server-1 (")]
        assert len(block.splitlines()) < 50 and "more lines" in block
        assert block.rstrip().splitlines()[-1].startswith("    [status] exit code 2")
        md = report.render_markdown(exec_v4)
        assert md.count("line ") <= 2 * 100 and "exit code 2" in md
        html = report.render_html(exec_v4)
        assert html.count("line ") <= 2 * 200 and "exit code 2" in html
    finally:
        conn.transcript[:] = saved


def test_exec_base64_variant(tmp_path):
    msgs = [
        Msg("s2c", TEXT, b"1"),
        Msg("c2s", TEXT, b64(0, b"cat /etc/hostname\n")),
        Msg("s2c", TEXT, b64(1, b"web-0\n")),
        Msg("s2c", TEXT, b"2not base64!"),
        Msg("s2c", TEXT, b64(3, json.dumps(EXIT_2).encode())),
    ]
    client, _ = write_legs(tmp_path, [k8s_conversation("v4.base64.channel.k8s.io", msgs)])
    a = wsanalyze.analyze(client, strict=True)
    m = a.messages[a.messages["opcode"] == "text"]
    assert list(m["kind"]) == ["stdout", "stdin", "stdout", "stderr", "status"]
    assert list(m["channel"]) == [1, 0, 1, 2, 3]
    assert [f.code for f in a.finding_list if f.code.startswith("k8s_")] == ["k8s_bad_base64"]
    bad = next(f for f in a.finding_list if f.code == "k8s_bad_base64")
    assert bad.connections == ("client-1",) and bad.packets
    text = report.summary_text(a)
    assert "$ cat /etc/hostname" in text and "web-0" in text and "exit code 2" in text


def test_exec_v5_close_stream(tmp_path):
    msgs = [
        Msg("c2s", BINARY, b"\x00hello\n"),
        Msg("c2s", BINARY, b"\xff\x00"),
        Msg("s2c", BINARY, b"\x01hello\n"),
        Msg("s2c", BINARY, b'\x03{"metadata":{},"status":"Success"}'),
    ]
    client, _ = write_legs(tmp_path, [k8s_conversation("v5.channel.k8s.io", msgs)])
    a = wsanalyze.analyze(client, strict=True)
    tr = tables.transcript_table(a.captures)
    assert list(tr["kind"]) == ["stdin", "close_stream", "stdout", "status"]
    assert list(tr["channel"]) == [0, 255, 1, 3]
    assert tr["text"].iloc[1] == "close stdin"
    text = report.summary_text(a)
    assert "[close stdin]" in text and "exit code 0: Success" in text
    assert not [f for f in a.finding_list if f.code.startswith("k8s_")]


def test_keep_payloads_keeps_them_with_a_decoder(tmp_path):
    msgs = [Msg("c2s", BINARY, b"\x00ls\n")]
    client, _ = write_legs(tmp_path, [k8s_conversation("channel.k8s.io", msgs)])
    dropped = wsanalyze.analyze(client, strict=True).client.connections[0].messages
    kept = wsanalyze.analyze(client, keep_payloads=True).client.connections[0].messages
    assert dropped[0].payload is None and dropped[0].kind == "stdin"
    assert kept[0].payload == b"\x00ls\n" and kept[0].kind == "stdin"
