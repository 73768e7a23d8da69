"""The pipeline's HTTP/2 path (RFC 9113, RFC 8441) on crafted traffic: how an HTTP/2
connection is recognised (prior knowledge, a server speaking first, ``Upgrade: h2c``,
mid-connection), each extended CONNECT stream as a WebSocket session of its own, and
the edge cases real proxies rarely produce (data before the response, RST_STREAM of
an open WebSocket, a TCP end that ends open streams, gaps inside DATA).

The HTTP/2 bytes are made by the ``h2`` library (client and server state machines),
the WebSocket frames by tests/craft.py, the TCP packets by scapy. Real captures:
tests/test_e2e_h2.py.
"""

from __future__ import annotations

from pathlib import Path

import hpack
from craft import TcpFlow, close_payload, http_request, t_us, write_pcap, ws_frame
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes
from hyperframe.frame import HeadersFrame

from wsanalyze.closing import close_story
from wsanalyze.model import Direction, Opcode
from wsanalyze.pipeline import analyze_capture

C, S = ("192.0.2.1", 40000), ("198.51.100.10", 8080)
C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
MASK = b"\x01\x02\x03\x04"
CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/ws"),
    (b":authority", b"example"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"chat"),
]


class Conv:
    """Two ``h2`` state machines and the bytes each sends, in order: ``steps`` of
    (sender "c"/"s", bytes)."""

    def __init__(self, *, enable_connect: bool = True, client_side_first: bool = True) -> None:
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.s = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        if enable_connect:
            self.s.local_settings = type(self.s.local_settings)(
                client=False, initial_values={SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
            )
        self.steps: list[tuple[str, bytes]] = []
        self.now: int | None = None  # µs for the next steps (None: 100 µs apart)
        self.times: list[int | None] = []
        self.c.initiate_connection()
        self.s.initiate_connection()
        first = ("c", "s") if client_side_first else ("s", "c")
        for who in first:
            self.flush(who)
        self.flush("c")
        self.flush("s")

    def flush(self, who: str) -> None:
        me, peer = (self.c, self.s) if who == "c" else (self.s, self.c)
        data = me.data_to_send()
        if data:
            self.steps.append((who, data))
            self.times.append(self.now)
            peer.receive_data(data)
            self.flush("s" if who == "c" else "c")  # ACKs and the like

    def request(self, sid: int, headers=CONNECT, end_stream: bool = False) -> None:
        self.c.send_headers(sid, headers, end_stream=end_stream)
        self.flush("c")

    def respond(self, sid: int, status: bytes = b"200", end_stream: bool = False) -> None:
        hd = [(b":status", status), (b"sec-websocket-protocol", b"chat")]
        self.s.send_headers(sid, hd, end_stream=end_stream)
        self.flush("s")

    def data(self, who: str, sid: int, payload: bytes, end_stream: bool = False) -> None:
        me = self.c if who == "c" else self.s
        me.send_data(sid, payload, end_stream=end_stream)
        self.flush(who)

    def reset(self, who: str, sid: int, code: int = 8) -> None:
        me = self.c if who == "c" else self.s
        me.reset_stream(sid, code)
        self.flush(who)

    def pcap(self, path: Path, *, syn: bool = True, end: str | None = "fin") -> Path:
        f = TcpFlow(C, S)
        t = t_us(0)
        if syn:
            t = f.open(t)
        last = 0
        for i, (who, data) in enumerate(self.steps):
            at = self.times[i] if i < len(self.times) else None
            last = max(last, 100 * (i + 1) if at is None else at)
            f.send(who, data, t_us(last))
        t = t_us(last + 100)
        if end == "fin":
            f.fin("c", t)
            f.fin("s", t_us(last + 200))
        elif end == "rst":
            f.rst("s", t)
        return write_pcap(path, f.packets)


def websocket_session(conv: Conv, sid: int = 1) -> None:
    conv.request(sid)
    conv.respond(sid)
    conv.data("c", sid, ws_frame(1, b"hello", mask_key=MASK))
    conv.data("s", sid, ws_frame(1, b"hello"))
    conv.data("c", sid, ws_frame(8, close_payload(1000), mask_key=MASK), end_stream=True)
    conv.data("s", sid, ws_frame(8, close_payload(1000)), end_stream=True)


def analyse(path: Path):
    cap = analyze_capture(path, "server", strict=True)
    return cap, {c.id: c for c in cap.connections}


def test_prior_knowledge_stream_is_a_websocket_session(tmp_path):
    conv = Conv()
    websocket_session(conv)
    cap, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    assert list(conns) == ["server-1", "server-1-s1"]
    tcp, st = conns["server-1"], conns["server-1-s1"]
    assert tcp.protocol == "h2" and [s.id for s in tcp.streams] == ["server-1-s1"]
    assert (st.protocol, st.stream_id, st.parent) == ("h2", 1, "server-1")
    assert st.websocket and st.handshake.subprotocol == "chat"
    assert st.requests[0].method == b"CONNECT" and st.requests[0].version == b"HTTP/2"
    assert st.responses[0].status == 200
    ops = [(m.direction, m.opcode) for m in st.messages]
    assert ops == [(C2S, Opcode.TEXT), (S2C, Opcode.TEXT), (C2S, Opcode.CLOSE), (S2C, Opcode.CLOSE)]
    # Offsets count the stream's DATA bytes; every byte of each leg is accounted for.
    assert st.messages[0].offset == 0
    for d in (C2S, S2C):
        acct = st.bytes[d]
        assert acct.decoded + acct.undecodable + acct.gap == st.tcp.bytes[d]
        tacct = tcp.bytes[d]
        assert tacct.decoded + tacct.undecodable == tcp.tcp.bytes[d]
    story = close_story(st)
    assert story.clean and story.client_code == story.server_code == 1000
    assert [e.label() for e in story.tcp_ends] == ["END_STREAM", "END_STREAM"]
    assert {f.code for f in cap.findings} == set()
    assert not [f for c in cap.connections for f in c.findings if f.severity.value != "info"]


def test_server_speaking_first_and_a_split_preface(tmp_path):
    conv = Conv(client_side_first=False)
    websocket_session(conv)
    # the client's preface in two segments
    who, data = conv.steps[1]
    assert who == "c"
    conv.steps[1:2] = [("c", data[:10]), ("c", data[10:])]
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    assert conns["server-1"].protocol == "h2" and conns["server-1-s1"].websocket


def test_two_streams_on_one_connection_and_a_plain_request(tmp_path):
    conv = Conv()
    conv.request(1)
    conv.request(3)
    conv.request(
        5,
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/health"),
            (b":authority", b"example"),
        ],
        end_stream=True,
    )
    conv.respond(3)
    conv.respond(1)
    conv.s.send_headers(5, [(b":status", b"204")], end_stream=True)
    conv.flush("s")
    conv.data("c", 3, ws_frame(2, b"\x00" * 3000, mask_key=MASK))
    conv.data("c", 1, ws_frame(1, b"one", mask_key=MASK))
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    assert list(conns) == ["server-1", "server-1-s1", "server-1-s3"]
    tcp = conns["server-1"]
    assert [(r.method, r.target) for r in tcp.requests] == [(b"GET", b"/health")]
    assert [r.status for r in tcp.responses] == [204]
    assert [m.payload_len for m in conns["server-1-s3"].messages] == [3000]
    assert [m.payload_len for m in conns["server-1-s1"].messages] == [3]


def test_h2c_upgrade(tmp_path):
    """RFC 7540 §3.2: HTTP/1.1 request with Upgrade: h2c, a 101, then HTTP/2 both
    ways; the upgraded request is stream 1, extended CONNECT streams follow."""
    c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    s = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    s.local_settings = type(s.local_settings)(
        client=False, initial_values={SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
    )
    settings_header = c.initiate_upgrade_connection()
    req = http_request(
        "/",
        [
            ("Host", "example"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", settings_header.decode()),
        ],
    )
    s.initiate_upgrade_connection(settings_header)
    resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    steps = [("c", req), ("s", resp)]
    conv = Conv.__new__(Conv)
    conv.c, conv.s, conv.steps = c, s, steps
    conv.now, conv.times = None, [None] * len(steps)
    conv.flush("s")
    conv.flush("c")
    conv.s.send_headers(1, [(b":status", b"200")], end_stream=True)
    conv.flush("s")
    websocket_session(conv, sid=3)
    cap, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    tcp = conns["server-1"]
    assert tcp.protocol == "h2"
    assert [r.status for r in tcp.responses] == [101, 200]  # the 101, then stream 1's
    assert conns["server-1-s3"].websocket
    assert [m.opcode for m in conns["server-1-s3"].messages][:2] == [Opcode.TEXT, Opcode.TEXT]
    assert not [f for f in tcp.findings if f.code.startswith("http_")]


def test_mid_connection_capture_is_recognised_as_http2(tmp_path):
    """No SYN, no preface: frames recognised mid-connection; the stream whose
    HEADERS were before the capture is not a session, a later one is (its HEADERS
    decode with the static table and literals, flagged by h2_hpack_state_lost)."""
    conv = Conv()
    websocket_session(conv, sid=1)
    websocket_session(conv, sid=3)
    conv.steps = conv.steps[5:]  # drop the prefaces, SETTINGS and stream 1's start
    path = conv.pcap(tmp_path / "a.pcap", syn=False)
    cap, conns = analyse(path)
    assert "server-1" in conns and conns["server-1"].protocol == "h2"
    codes = {f.code for c in cap.connections for f in c.findings}
    assert "h2_hpack_state_lost" in codes


def test_client_data_before_the_response_is_held(tmp_path):
    conv = Conv()
    conv.request(1)
    conv.data("c", 1, ws_frame(1, b"early", mask_key=MASK))
    conv.respond(1)
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    st = conns["server-1-s1"]
    assert [m.payload_len for m in st.messages] == [5] and st.websocket


def test_refused_with_a_status(tmp_path):
    conv = Conv()
    conv.request(1)
    conv.s.send_headers(1, [(b":status", b"403"), (b"content-length", b"4")])
    conv.s.send_data(1, b"nope", end_stream=True)
    conv.flush("s")
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    st = conns["server-1-s1"]
    assert not st.websocket and st.responses[0].status == 403
    assert "handshake_refused" in {f.code for f in st.findings}
    assert st.bytes[S2C].decoded == 4  # the refusal's body


def test_extended_connect_reset_and_websocket_reset(tmp_path):
    conv = Conv()
    conv.request(1)
    conv.reset("s", 1, 7)  # REFUSED_STREAM
    conv.request(3)
    conv.respond(3)
    conv.data("c", 3, ws_frame(1, b"x", mask_key=MASK))
    conv.reset("s", 3, 2)  # INTERNAL_ERROR on an open WebSocket
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    s1, s3 = conns["server-1-s1"], conns["server-1-s3"]
    assert "h2_extended_connect_reset" in {f.code for f in s1.findings}
    assert s1.handshake is None or not s1.handshake.websocket
    assert "h2_websocket_stream_reset" in {f.code for f in s3.findings}
    assert s3.tcp.rst_error[S2C] == 2
    story = close_story(s3)
    assert story.closed_by == "server" and story.tcp_ends[0].label() == "RST_STREAM"


def test_tcp_reset_ends_open_streams(tmp_path):
    conv = Conv()
    conv.request(1)
    conv.respond(1)
    conv.data("c", 1, ws_frame(1, b"x", mask_key=MASK))
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap", end="rst"))
    st = conns["server-1-s1"]
    assert st.tcp.rst_ts_ns[S2C] is not None
    assert st.tcp.rst_ts_ns[S2C] == conns["server-1"].tcp.rst_ts_ns[S2C]
    story = close_story(st)
    assert (story.closed_by, story.client_code, story.server_code) == ("server", 1006, 1006)
    assert [e.label() for e in story.tcp_ends] == ["RST"]  # the TCP RST, not a RST_STREAM


def _raw_headers(conv: Conv, sid: int, headers) -> None:
    """A HEADERS frame the h2 library would refuse to send (malformed on purpose)."""
    frame = HeadersFrame(sid)
    frame.data = hpack.Encoder().encode(headers)
    frame.flags.add("END_HEADERS")
    conv.steps.append(("c", frame.serialize()))


def test_extended_connect_without_path_and_with_upgrade_fields(tmp_path):
    """RFC 8441 §4: :path is required; RFC 9113 §8.2.2: no Connection/Upgrade."""
    conv = Conv()
    _raw_headers(
        conv,
        1,
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":authority", b"e"),
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
        ],
    )
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    codes = {f.code for f in conns["server-1-s1"].findings}
    assert {"h2_bad_extended_connect", "h2_connection_specific_header"} <= codes


def test_malformed_extended_connect(tmp_path):
    conv = Conv()
    conv.c.send_headers(  # h2 validates outbound headers: use its raw path
        1,
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":authority", b"e"),
            (b":scheme", b"http"),
            (b":path", b"/ws"),
            (b"sec-websocket-version", b"12"),
        ],
    )
    conv.flush("c")
    conv.respond(1)
    _, conns = analyse(conv.pcap(tmp_path / "a.pcap"))
    codes = {f.code for f in conns["server-1-s1"].findings}
    assert "handshake_bad_version" in codes


def test_pairs_across_the_protocol_change_without_sec_websocket_key(tmp_path):
    """Envoy does not forward Sec-WebSocket-Key over HTTP/2 (RFC 8441 §5 does not use
    it): three simultaneous clients to one URL pair with their streams on target,
    headers, timing and message digests; the streams are in another order than the
    client connections, and the server capture's clock is 2.5 ms ahead."""
    from craft import http_response, switching_headers, upgrade_headers, ws_key

    import wsanalyze

    theta = 2500  # µs
    order = [2, 0, 1]  # client i's WebSocket is stream order.index(i)
    cpk = []
    conv = Conv()
    for k in range(3):
        conv.now = 200 + 10 * k + theta
        conv.request(2 * k + 1, [h for h in CONNECT if h[0] != b"sec-websocket-protocol"])
    for k in range(3):
        conv.now = 400 + 10 * k + theta
        conv.s.send_headers(2 * k + 1, [(b":status", b"200")])
        conv.flush("s")
    server_data = []  # (µs, sender, stream, bytes), sent in time order below
    for i in range(3):
        key = ws_key(i)
        f = TcpFlow(("192.0.2.20", 41000 + i), ("192.0.2.1", 80))
        f.open(t_us(10 * i))
        f.send("c", http_request("/ws", upgrade_headers("example", key)), t_us(100 + 10 * i))
        f.send(
            "s",
            http_response(101, "Switching Protocols", switching_headers(key)),
            t_us(500 + 10 * i),
        )
        sid = 2 * order.index(i) + 1
        for n in range(3):
            t = 1000 * (n + 1) + 100 * i
            msg = f"client {i} message {n}".encode()
            f.send("c", ws_frame(1, msg, mask_key=MASK), t_us(t))
            server_data.append((t + 80 + theta, "c", sid, ws_frame(1, msg, mask_key=MASK)))
            server_data.append((t + 300 + theta, "s", sid, ws_frame(1, msg.upper())))
            f.send("s", ws_frame(1, msg.upper()), t_us(t + 350))
        cpk += f.packets
    for t, who, sid, payload in sorted(server_data):
        conv.now = t
        conv.data(who, sid, payload)
    client = write_pcap(tmp_path / "client.pcap", cpk)
    server = conv.pcap(tmp_path / "server.pcap")
    a = wsanalyze.analyze(client, server, strict=True)
    conns = a.connections.set_index("connection_id")
    got = {}
    for _, p in a.pairs.iterrows():
        port = int(conns.loc[p["client_connection_id"], "client"].rsplit(":", 1)[1])
        got[port - 41000] = int(conns.loc[p["server_connection_id"], "stream_id"])
        assert "sec_websocket_key" not in p["evidence"]
    assert got == {i: 2 * order.index(i) + 1 for i in range(3)}
    mm = a.message_matches
    assert len(mm) == 18
    # Delays are corrected by the estimated clock offset (θ = 2.5 ms): 80 µs up, 50 down.
    up = mm[mm["direction"] == "client_to_server"]["proxy_delay_ms"]
    assert up.between(0.0, 0.3).all()
