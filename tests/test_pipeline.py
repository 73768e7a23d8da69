"""The pipeline for one capture (wsanalyze.pipeline.analyze_capture): how the stages
are composed on one TCP connection — keep-alive requests before the Upgrade, a
request never answered, a refused handshake, WebSocket bytes arriving in the same
segment as the 101, a capture that starts mid-connection, and byte accounting."""

from __future__ import annotations

from pathlib import Path

from craft import (
    BINARY,
    CLOSE,
    TEXT,
    TcpFlow,
    close_payload,
    http_request,
    http_response,
    switching_headers,
    t_us,
    upgrade_headers,
    write_pcap,
    ws_frame,
    ws_key,
)

from wsanalyze.model import Direction, Opcode
from wsanalyze.pipeline import analyze_capture

C = ("192.0.2.10", 40000)
S = ("192.0.2.1", 80)
MASK = b"\x01\x02\x03\x04"


def _codes(conn) -> list[str]:
    return [f.code for f in conn.findings]


def _ws_exchange(f: TcpFlow, t: int, key: str) -> int:
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", key)), t_us(t))
    f.send("s", http_response(101, "Switching Protocols", switching_headers(key)), t_us(t + 100))
    f.send("c", ws_frame(TEXT, b"hello", mask_key=MASK), t_us(t + 200))
    f.send("s", ws_frame(TEXT, b"hello"), t_us(t + 300))
    f.send("c", ws_frame(CLOSE, close_payload(1000), mask_key=MASK), t_us(t + 400))
    f.send("s", ws_frame(CLOSE, close_payload(1000)), t_us(t + 500))
    f.fin("s", t_us(t + 600))
    f.fin("c", t_us(t + 700))
    return t + 700


def test_keep_alive_requests_before_the_upgrade(tmp_path: Path) -> None:
    f = TcpFlow(C, S)
    f.open(t_us(0))
    body = b"0123456789"
    f.send("c", http_request("/health", [("Host", "x")]), t_us(100))
    f.send("s", http_response(200, "OK", [("Content-Length", "10")], body), t_us(200))
    f.send("c", http_request("/up", [("Host", "x"), ("Content-Length", "3")]) + b"abc", t_us(300))
    f.send("s", http_response(204, "No Content", []), t_us(400))
    _ws_exchange(f, 1000, ws_key(1))
    cap = analyze_capture(write_pcap(tmp_path / "k.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert [r.target for r in conn.requests] == [b"/health", b"/up", b"/ws"]
    assert [r.status for r in conn.responses] == [200, 204, 101]
    assert conn.websocket and conn.handshake is not None
    assert conn.handshake.request.target == b"/ws"
    ops = [(m.direction, m.opcode) for m in conn.messages]
    assert ops == [
        (Direction.CLIENT_TO_SERVER, Opcode.TEXT),
        (Direction.SERVER_TO_CLIENT, Opcode.TEXT),
        (Direction.CLIENT_TO_SERVER, Opcode.CLOSE),
        (Direction.SERVER_TO_CLIENT, Opcode.CLOSE),
    ]
    assert conn.findings == []


def test_request_never_answered(tmp_path: Path) -> None:
    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", ws_key(2))), t_us(100))
    f.ack("s", t_us(200))
    f.fin("c", t_us(5_000_000))
    cap = analyze_capture(write_pcap(tmp_path / "n.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert conn.handshake is not None and conn.handshake.response is None
    assert not conn.websocket
    assert "http_no_response" in _codes(conn)
    f_no = next(x for x in conn.findings if x.code == "http_no_response")
    assert f_no.packets == (4,)  # SYN, SYN-ACK, ACK, then the request


def test_refused_handshake_keeps_parsing_http(tmp_path: Path) -> None:
    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", ws_key(3))), t_us(100))
    f.send("s", http_response(403, "Forbidden", [("Content-Length", "0")]), t_us(200))
    f.send("c", http_request("/other", [("Host", "x")]), t_us(300))
    f.send("s", http_response(200, "OK", [("Content-Length", "0")]), t_us(400))
    cap = analyze_capture(write_pcap(tmp_path / "r.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert not conn.websocket
    assert [r.status for r in conn.responses] == [403, 200]
    assert [r.target for r in conn.requests] == [b"/ws", b"/other"]
    assert "handshake_refused" in _codes(conn)


def test_frames_in_the_same_segment_as_the_101(tmp_path: Path) -> None:
    key = ws_key(4)
    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", key)), t_us(100))
    resp = http_response(101, "Switching Protocols", switching_headers(key))
    f.send("s", resp + ws_frame(TEXT, b"welcome") + ws_frame(BINARY, b"\x00\x01"), t_us(200))
    f.send("c", ws_frame(TEXT, b"hi", mask_key=MASK), t_us(300))
    cap = analyze_capture(write_pcap(tmp_path / "s.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    server_msgs = [m for m in conn.messages if m.direction == Direction.SERVER_TO_CLIENT]
    assert [m.preview for m in server_msgs] == [b"welcome", b"\x00\x01"]
    # The frame offsets start right after the 101 head in the server's stream.
    assert server_msgs[0].offset == len(resp)
    assert [m.preview for m in conn.messages if m.direction == Direction.CLIENT_TO_SERVER] == [
        b"hi"
    ]


def test_every_byte_is_accounted_for(tmp_path: Path) -> None:
    f = TcpFlow(C, S)
    f.open(t_us(0))
    _ws_exchange(f, 100, ws_key(5))
    cap = analyze_capture(write_pcap(tmp_path / "b.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    for d in Direction:
        acct = conn.bytes[d]
        assert acct.decoded + acct.undecodable + acct.other == conn.tcp.bytes[d]
        assert acct.gap == 0 and acct.undecodable == 0


def test_non_http_connection_is_counted_not_listed(tmp_path: Path) -> None:
    f = TcpFlow(C, ("192.0.2.1", 22))
    f.open(t_us(0))
    f.send("s", b"SSH-2.0-OpenSSH_9.2\r\n", t_us(100))
    f.send("c", b"SSH-2.0-client\r\n", t_us(200))
    cap = analyze_capture(write_pcap(tmp_path / "o.pcap", f.packets), strict=True)
    assert cap.connections == []
    assert cap.other_connections == 1


def test_mid_stream_roles_are_corrected_by_http(tmp_path: Path) -> None:
    """No SYN and the client uses the lower port: the side that sends a request is
    the client, whatever the port guess said."""
    f = TcpFlow(("192.0.2.10", 80), ("192.0.2.1", 8080))
    f.send("c", http_request("/x", [("Host", "y")]), t_us(100))
    f.send("s", http_response(200, "OK", [("Content-Length", "0")]), t_us(200))
    cap = analyze_capture(write_pcap(tmp_path / "m.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert str(conn.tcp.client) == "192.0.2.10:80"
    assert [r.target for r in conn.requests] == [b"/x"]
    assert [r.status for r in conn.responses] == [200]
    assert "tcp_connection_mid_stream" in _codes(conn)


def test_capture_level_findings_name_their_capture(tmp_path: Path) -> None:
    """A finding about the file itself (timestamps going backwards) names the capture
    whose packet numbers it lists, in the findings and in every report."""
    from scapy.utils import wrpcap

    import wsanalyze
    from wsanalyze import report

    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/x", [("Host", "y")]), t_us(100))
    f.send("s", http_response(200, "OK", [("Content-Length", "0")]), t_us(200))
    f.packets[3].time, f.packets[4].time = f.packets[4].time, f.packets[3].time
    path = tmp_path / "backwards.pcap"
    wrpcap(str(path), f.packets, linktype=1)  # unsorted on purpose
    a = wsanalyze.analyze(path, path, strict=True)
    backwards = [x for x in a.finding_list if x.code == "capture_timestamps_out_of_order"]
    assert {x.capture for x in backwards} == {"client", "server"}
    doc = report.to_json(a)
    assert {x["capture"] for x in doc["findings"] if x["code"] == backwards[0].code} == {
        "client",
        "server",
    }
    assert "client capture packets 5" in report.summary_text(a)
    assert set(a.findings.loc[a.findings["code"] == backwards[0].code, "capture"]) == {
        "client",
        "server",
    }


def test_tls_is_named_and_http2_is_decoded(tmp_path: Path) -> None:
    """A wss:// capture hides WebSocket from us: say so, with the ports. An HTTP/2 leg
    (prior knowledge, RFC 9113 §3.4) is decoded and listed."""
    tls = TcpFlow(C, ("192.0.2.1", 443))
    tls.open(t_us(0))
    tls.send("c", b"\x16\x03\x01\x00\x05hello", t_us(100))
    h2 = TcpFlow(("192.0.2.10", 40001), ("192.0.2.1", 8443))
    h2.open(t_us(200))
    h2.send("c", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", t_us(300))
    cap = analyze_capture(write_pcap(tmp_path / "t.pcap", tls.packets + h2.packets), strict=True)
    assert [(c.id, c.protocol, c.stream_id) for c in cap.connections] == [("client-2", "h2", None)]
    assert cap.other_connections == 1
    assert cap.connections[0].bytes[0].decoded == 33  # the preface and an empty SETTINGS
    codes = {f.code: f for f in cap.findings}
    assert "443" in codes["capture_tls_not_decoded"].detail
    assert "capture_http2_not_decoded" not in codes
    assert codes["capture_tls_not_decoded"].capture == "client"


def _ws_flow(key: str) -> TcpFlow:
    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", key)), t_us(100))
    f.send("s", http_response(101, "Switching Protocols", switching_headers(key)), t_us(200))
    return f


def test_pong_must_echo_the_ping(tmp_path: Path) -> None:
    """RFC 6455 §5.5.3: a Pong answering a Ping carries its application data. An
    unsolicited Pong (no Ping outstanding) is allowed, and so is answering only the
    latest of several Pings."""
    from craft import PING, PONG

    f = _ws_flow(ws_key(6))
    f.send("s", ws_frame(PONG, b"heartbeat"), t_us(300))  # unsolicited: fine
    f.send("c", ws_frame(PING, b"a", mask_key=MASK), t_us(400))
    f.send("c", ws_frame(PING, b"b", mask_key=MASK), t_us(410))
    f.send("s", ws_frame(PONG, b"b"), t_us(500))  # answers the latest: fine
    f.send("c", ws_frame(PING, b"c", mask_key=MASK), t_us(600))
    f.send("s", ws_frame(PONG, b"zzz"), t_us(700))  # wrong data
    cap = analyze_capture(write_pcap(tmp_path / "p.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert _codes(conn) == ["ws_pong_mismatch"]


def test_client_data_before_the_101(tmp_path: Path) -> None:
    """RFC 6455 §4.1: the client waits for the 101 before sending frames."""
    key = ws_key(7)
    f = TcpFlow(C, S)
    f.open(t_us(0))
    f.send("c", http_request("/ws", upgrade_headers("192.0.2.1", key)), t_us(100))
    f.send("c", ws_frame(TEXT, b"too early", mask_key=MASK), t_us(150))
    f.send("s", http_response(101, "Switching Protocols", switching_headers(key)), t_us(200))
    cap = analyze_capture(write_pcap(tmp_path / "e.pcap", f.packets), strict=True)
    (conn,) = cap.connections
    assert "ws_client_data_before_101" in _codes(conn)
    assert [m.preview for m in conn.messages] == [b"too early"]  # still decoded


def test_progress_reports_bytes_read_up_to_the_file_size(tmp_path: Path) -> None:
    import wsanalyze
    from wsanalyze import pipeline

    f = TcpFlow(C, S)
    f.open(t_us(0))
    _ws_exchange(f, 100, ws_key(8))
    path = write_pcap(tmp_path / "p.pcap", f.packets)
    seen: list[tuple[str, int, int | None]] = []
    old = pipeline.PROGRESS_EVERY
    pipeline.PROGRESS_EVERY = 2  # several calls on a small file
    try:
        a = wsanalyze.analyze(
            path, path, progress=lambda *x: seen.append(x), strict=True, parallel=False
        )
    finally:
        pipeline.PROGRESS_EVERY = old
    size = path.stat().st_size
    assert {r for r, _, _ in seen} == {"client", "server"}
    assert all(t == size for _, _, t in seen)
    done = [d for r, d, _ in seen if r == "client"]
    assert done == sorted(done) and done[-1] == size and len(done) > 2
    plain = wsanalyze.analyze(path, path, strict=True)  # progress changes nothing else
    assert a.messages.equals(plain.messages) and a.pairs.equals(plain.pairs)


def test_proxy_protocol_header_is_decoded_and_pairs_the_legs(tmp_path: Path) -> None:
    """HAProxy `send-proxy`: the server leg starts with a PROXY protocol header. It
    is decoded (not a malformed request), and the client it names pairs the legs
    even when the proxy replaced Sec-WebSocket-Key."""
    import wsanalyze

    ckey, skey = ws_key(9), ws_key(10)
    cf = TcpFlow(C, S)
    cf.open(t_us(0))
    cf.send("c", http_request("/ws", upgrade_headers("192.0.2.1", ckey)), t_us(100))
    sf = TcpFlow(("198.51.100.1", 52000), ("198.51.100.10", 8080), isn_c=7_000_000)
    sf.open(t_us(150))
    header = b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 80\r\n"
    sf.send("c", header + http_request("/ws", upgrade_headers("x", skey)), t_us(200))
    sf.send("s", http_response(101, "Switching Protocols", switching_headers(skey)), t_us(300))
    cf.send("s", http_response(101, "Switching Protocols", switching_headers(ckey)), t_us(400))
    client = write_pcap(tmp_path / "c.pcap", cf.packets)
    server = write_pcap(tmp_path / "s.pcap", sf.packets)
    a = wsanalyze.analyze(client, server, strict=True)
    (conn,) = a.server.connections
    assert conn.proxied_client == "192.0.2.10:40000"
    assert conn.requests[0].target == b"/ws" and conn.websocket
    assert "proxy_protocol_header" in _codes(conn)
    assert conn.bytes[Direction.CLIENT_TO_SERVER].decoded >= len(header)
    assert "proxy_protocol" in a.pairs["evidence"].iloc[0]


def test_parse_proxy_header_versions() -> None:
    import struct

    from wsanalyze.pipeline import parse_proxy_header

    assert parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\nGET") == (
        45,
        1,
        "[2001:db8::1]:4000",
    )
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == (15, 1, None)
    assert parse_proxy_header(b"PROXY TCP4 1.2.3.4") is None  # incomplete
    assert parse_proxy_header(b"GET / HTTP/1.1\r\n") is None
    v2 = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
    v2 += bytes([192, 0, 2, 10, 192, 0, 2, 1]) + struct.pack("!HH", 40000, 80)
    assert parse_proxy_header(v2 + b"GET") == (28, 2, "192.0.2.10:40000")
