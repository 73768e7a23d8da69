"""The catalogue of finding codes: the one place each code is declared.

Every :class:`~wsanalyze.model.Finding` the analysis emits has a ``code`` listed
here with its severity, its reference (an RFC section, or ``"heuristic"``), an
explanation and what to check. Docs and the report legend are generated from
:data:`CATALOGUE`; a test checks every emitted code is in it.

Findings are created with :func:`finding`, which takes the severity from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Direction, Finding, Severity

I, W, E = Severity.INFO, Severity.WARNING, Severity.ERROR  # noqa: E741 - table brevity


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalogue entry: severity, reference, what it means, what to check."""

    code: str
    severity: Severity
    reference: str
    explanation: str
    check: str = ""


_ENTRIES: list[Entry] = [
    # --- capture files (capture.py) ---
    Entry(
        "capture_truncated_record",
        W,
        "pcap/pcapng format",
        "The capture file ends in the middle of a packet record: the capture was cut "
        "(disk full, copied while tcpdump was still writing).",
        "Stop tcpdump cleanly (Ctrl-C) before copying the file.",
    ),
    Entry(
        "capture_packet_cut_by_snaplen",
        W,
        "pcap/pcapng format",
        "A packet was captured shorter than it was on the wire (snapshot length), so "
        "some TCP payload is missing and counted as a gap.",
        "Capture with `tcpdump -s 0` (full packets).",
    ),
    Entry(
        "capture_corrupt_record",
        E,
        "pcap/pcapng format",
        "A packet record or block has an impossible length; reading stopped there.",
        "Re-take or re-copy the capture file.",
    ),
    Entry(
        "capture_unsupported_link_type",
        W,
        "pcap/pcapng format",
        "Packets of a link type wsanalyze does not decode were skipped.",
        "Capture on an Ethernet, Linux cooked (`-i any`), raw IP or loopback interface.",
    ),
    Entry(
        "capture_malformed_packet",
        W,
        "RFC 791 / RFC 8200 / RFC 9293",
        "A packet's IP or TCP header is malformed (bad header length, total length "
        "smaller than the header); the packet was skipped.",
        "",
    ),
    Entry(
        "capture_ip_fragment",
        W,
        "RFC 791 §2.3",
        "An IP fragment was seen; wsanalyze does not reassemble IP fragments, so its "
        "TCP payload is counted as a gap.",
        "Check the path MTU between the proxy and its peers.",
    ),
    Entry(
        "capture_tls_not_decoded",
        W,
        "RFC 8446",
        "Some TCP connections carry TLS (wss:// or https://); their WebSocket traffic is "
        "encrypted and cannot be analysed.",
        "Capture on the cleartext side of the TLS terminator (the proxy's server side "
        "when it terminates TLS), or ask the proxy for a cleartext mirror.",
    ),
    # --- HTTP/2 (http2.py) ---
    Entry(
        "h2_bad_preface",
        E,
        "RFC 9113 §3.4",
        "An HTTP/2 connection did not start as §3.4 requires: the client's first 24 bytes "
        "are not the connection preface `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`, or a "
        "side's first frame is not SETTINGS. The peer is probably not speaking HTTP/2 with "
        "prior knowledge (an HTTP/1.1 client on an h2-only port, TLS on a cleartext port). "
        "Decoding went on at the first plausible frame.",
        "Check the proxy's backend protocol setting against what the backend listens for "
        "(HAProxy `proto h2` on a `server` line, Envoy `http2_protocol_options` / Istio "
        "`appProtocol: http2` or port name `http2-…`/`grpc-…`) and whether the port expects TLS.",
    ),
    Entry(
        "h2_frame_error",
        E,
        "RFC 9113 §4.1-§4.2 / §6",
        "An HTTP/2 frame breaks the framing rules: a length above the receiver's "
        "SETTINGS_MAX_FRAME_SIZE, a wrong fixed length (PING 8, RST_STREAM 4, WINDOW_UPDATE 4, "
        "PRIORITY 5, SETTINGS a multiple of 6), stream 0 where a stream is required or the "
        "reverse, CONTINUATION not right after HEADERS of the same stream, padding not "
        "shorter than the payload, an out-of-range SETTINGS value, a WINDOW_UPDATE of 0, "
        "RST_STREAM on a stream never opened. A receiver treats these as connection or "
        "stream errors (it sends GOAWAY or RST_STREAM); the frame was skipped by its length.",
        "Look at the GOAWAY/RST_STREAM the peer sent next. Identify which side sent the "
        "frame and its software version (proxy or backend); such bugs are often fixed in "
        "later releases. A length error can also mean the two sides disagree on "
        "SETTINGS_MAX_FRAME_SIZE.",
    ),
    Entry(
        "h2_hpack_error",
        E,
        "RFC 9113 §4.3 / RFC 7541",
        "A header block (HEADERS/PUSH_PROMISE + CONTINUATION) could not be decoded with "
        "HPACK although every earlier block of that direction was seen: a bad index, a bad "
        "Huffman string, a table size above the receiver's SETTINGS_HEADER_TABLE_SIZE, or a "
        "header list over the analyser's bound. A real receiver fails the connection with "
        "COMPRESSION_ERROR. The block's headers are lost and the direction's HPACK state "
        "is unknown from here on.",
        "Look for a GOAWAY with COMPRESSION_ERROR from the receiver; compare both sides' "
        "SETTINGS_HEADER_TABLE_SIZE; check the encoder's software version.",
    ),
    Entry(
        "h2_hpack_state_lost",
        W,
        "RFC 7541 §2.3.2",
        "The HPACK dynamic table of one direction can no longer be followed (a header "
        "block was missed in a TCP gap, the capture began mid-connection, or a block failed "
        "to decode). Header blocks decoded after this are marked unreliable: static-table "
        "and literal fields are right, fields taken from the dynamic table may be wrong or "
        "missing. Later HPACK errors on that direction are expected and not reported.",
        "Capture from the start of the connection (before the proxy opens its h2 pool "
        "connections: restart the capture, then the proxy or its upstream), without "
        "packet loss (`tcpdump -B`, full snap length).",
    ),
    Entry(
        "h2_gap_resync",
        W,
        "heuristic (RFC 9113 §4.1)",
        "A TCP gap cut an HTTP/2 frame header or fell between frames, so the next frame "
        "boundary was unknown; the decoder skipped bytes until a run of plausible frame "
        "headers (the detail says how many; they are counted as undecodable). Also "
        "reported when a capture started mid-connection skips bytes before the first frame.",
        "Capture without packet loss; frames lost in the gap (WINDOW_UPDATE, SETTINGS) may "
        "explain later behaviour that looks wrong.",
    ),
    Entry(
        "h2_frame_lost_in_gap",
        W,
        "RFC 9113 §4.1",
        "A TCP gap fell inside a non-DATA frame (HEADERS, SETTINGS, WINDOW_UPDATE...) whose "
        "header was seen: that frame is lost, but its end is known so decoding went on right "
        "after it. A lost header block also loses the HPACK state.",
        "Capture without packet loss (`tcpdump -B`, full snap length).",
    ),
    Entry(
        "h2_header_block_too_large",
        W,
        "RFC 9113 §4.3 / §10.5.1 (security limit)",
        "A header block grew past the analyser's bound (256 KiB by default) and was dropped "
        "without being decoded; the direction's HPACK state is unknown from here on. "
        "Proxies usually refuse much smaller header lists (SETTINGS_MAX_HEADER_LIST_SIZE).",
        "Look for huge cookies or headers added by a client or middleware; check the "
        "proxy's header size limits (HAProxy `tune.bufsize`, Envoy "
        "`max_request_headers_kb`).",
    ),
    Entry(
        "h2_truncated",
        W,
        "RFC 9113 §4.1",
        "The HTTP/2 byte stream ended (FIN, RST or end of capture) inside a frame or a "
        "header block; the partial frame is counted as undecodable.",
        "Check whether the capture stopped too early or the sender aborted the connection "
        "mid-frame (a crash, a killed process, an idle timeout that reset it).",
    ),
    Entry(
        "h2_goaway_error",
        E,
        "RFC 9113 §6.8 / §7",
        "One side closed the HTTP/2 connection with GOAWAY carrying an error code "
        "(PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, COMPRESSION_ERROR, "
        "ENHANCE_YOUR_CALM...): every stream above its last_stream_id, WebSockets "
        "included, is dropped. A GOAWAY with NO_ERROR (graceful shutdown) is not a finding.",
        "The error code and debug data say why; look at the frames the other side sent "
        "just before (often one this tool flags). PROTOCOL_ERROR between a proxy and an h2 "
        "backend often means the two disagree on a feature (RFC 8441 extended CONNECT, "
        "stream states); ENHANCE_YOUR_CALM means a rate or abuse limit.",
    ),
    Entry(
        "h2_flow_control_stall",
        W,
        "RFC 9113 §5.2 / §6.9",
        "A DATA sender had used up its HTTP/2 flow-control window (the connection's or a "
        "stream's) and waited for the receiver's WINDOW_UPDATE before sending more: the "
        "detail gives the wait in ms. Long or repeated stalls delay WebSocket messages; a "
        "window never reopened before the end of the capture means the receiver stopped "
        "reading (or its updates were lost).",
        "Check the receiver's initial window (SETTINGS_INITIAL_WINDOW_SIZE) and how fast it "
        "consumes: a slow WebSocket reader behind the proxy, or small proxy buffers (Envoy "
        "`initial_stream_window_size`/`initial_connection_window_size`, HAProxy "
        "`tune.h2.initial-window-size`).",
    ),
    Entry(
        "h2_findings_suppressed",
        I,
        "security limit",
        "One direction of an HTTP/2 connection produced more than 10 findings of one code; "
        "only the first 10 were listed, the rest are counted in this finding's detail "
        "(code=..., suppressed=N).",
        "Look at the first findings of that code: the stream is likely hostile, corrupted "
        "or not HTTP/2 at all.",
    ),
    Entry(
        "capture_timestamps_out_of_order",
        I,
        "heuristic",
        "Packet timestamps go backwards in the file (a merged or multi-queue capture).",
        "",
    ),
    Entry(
        "capture_unknown_interface",
        W,
        "draft-ietf-opsawg-pcapng §4.2",
        "A pcapng packet block refers to an interface that no Interface Description "
        "Block of its section describes, so its link type is unknown; it was skipped.",
        "Re-save the capture with Wireshark or editcap; check how the file was merged.",
    ),
    Entry(
        "capture_timestamp_out_of_range",
        W,
        "draft-ietf-opsawg-pcapng §4.2",
        "A pcapng packet's timestamp, scaled by its interface's if_tsresol and "
        "if_tsoffset, falls outside the years 1677-2262 that nanosecond timestamps can "
        "hold (a wrong resolution or offset, or a corrupt block); the packet was skipped.",
        "Re-save the capture with Wireshark or editcap, or fix the capturing tool's "
        "timestamp resolution.",
    ),
    # --- TCP (tcp.py) ---
    Entry(
        "tcp_gap",
        W,
        "RFC 9293 §3.4",
        "Bytes of a TCP stream were never captured (packet loss at the capture point, "
        "or the capture started/ended mid-stream). They are counted, never zero-filled; "
        "the decoders resynchronise after them where they can.",
        "Capture closer to the host, with a larger buffer (`tcpdump -B`), and full packets.",
    ),
    Entry(
        "tcp_overlap_conflict",
        W,
        "RFC 9293 §3.10.7.4",
        "A retransmitted or overlapping segment carried bytes different from the first "
        "copy. The first copy is kept (as the receiver would).",
        "Look for a middlebox rewriting payload, or a capture merging two hosts.",
    ),
    Entry(
        "tcp_retransmission",
        I,
        "RFC 9293 §3.8",
        "Segments were retransmitted on this connection (counted per connection).",
        "Frequent retransmissions add latency that is not the proxy's.",
    ),
    Entry(
        "tcp_connection_mid_stream",
        I,
        "heuristic",
        "The capture started after the TCP connection was opened (no SYN seen); the "
        "client and server roles were inferred.",
        "Start the capture before the client connects.",
    ),
    Entry(
        "tcp_rst",
        I,
        "RFC 9293 §3.10.7",
        "A TCP RST ended the connection.",
        "An RST with no WebSocket close frame before it is an abrupt termination.",
    ),
    Entry(
        "tcp_empty_connections_evicted",
        I,
        "wsanalyze (memory limit)",
        "More than 32,768 TCP connections were open at once without having carried a "
        "payload byte (a SYN flood, a port scan, a pool of idle connections); the oldest "
        "were ended early to bound memory and are counted with the connections that carry "
        "no HTTP. One that carries data later is analysed as a connection whose start "
        "was not captured.",
        "Look for a SYN flood or a scan at the capture point; filter the capture on the "
        "proxy's ports (tcpdump 'port 443 or port 8080') to leave them out.",
    ),
    # --- HTTP/1.x (http1.py) ---
    Entry(
        "http_malformed_head",
        E,
        "RFC 9112 §2-§5",
        "An HTTP/1.x request or response head could not be parsed; the rest of that "
        "direction is not decoded.",
        "",
    ),
    Entry(
        "http_head_too_large",
        E,
        "RFC 9112 §2.3 (security limit)",
        "An HTTP/1.x head exceeded the 64 KiB limit without ending.",
        "",
    ),
    Entry(
        "http_no_response",
        W,
        "RFC 9112 §9",
        "A request was never answered in the capture.",
        "Check the proxy and server logs around this time; check the capture covered it.",
    ),
    Entry(
        "http_body_undecodable",
        W,
        "RFC 9112 §6-§7",
        "A message body could not be delimited (bad Content-Length or chunk size); the "
        "rest of that direction is not decoded as HTTP.",
        "",
    ),
    Entry(
        "http_truncated_head",
        W,
        "RFC 9112 §2.1",
        "The stream ended (FIN, RST or end of capture) in the middle of an HTTP/1.x head.",
        "Check whether the capture stopped too early or the peer closed mid-request.",
    ),
    Entry(
        "http_truncated_body",
        W,
        "RFC 9112 §6.3 / §8",
        "The stream ended before the end of a body delimited by Content-Length or chunked "
        "encoding (an incomplete message).",
        "Check whether the capture stopped too early or the sender aborted the message.",
    ),
    Entry(
        "http_resync",
        W,
        "heuristic",
        "After a TCP gap the HTTP parser discarded bytes until the next request or status "
        "line; the discarded bytes are counted as undecodable.",
        "",
    ),
    Entry(
        "http_lenient_parse",
        I,
        "RFC 9112 §2.2 / §5.1 / §5.2",
        "A head deviated from RFC 9112 in a way recipients tolerate (bare LF line endings, "
        "obsolete line folding, whitespace before a field's colon); it was parsed leniently.",
        "Whitespace before a colon or obs-fold passing a proxy is a request-smuggling "
        "risk: check how the proxy and the server read the head.",
    ),
    Entry(
        "http_transfer_encoding_and_length",
        W,
        "RFC 9112 §6.3",
        "A message has both Transfer-Encoding and Content-Length; Transfer-Encoding was used "
        '("Such a message might indicate an attempt to perform request smuggling").',
        "A proxy must remove Content-Length before forwarding such a message.",
    ),
    Entry(
        "http_upgrade_buffer_overflow",
        W,
        "security limit",
        "While waiting for the response to an Upgrade request (or after a 101), more than "
        "64 KiB arrived before the analysis took the bytes; the excess was not decoded.",
        "",
    ),
    # --- handshake (handshake.py), RFC 6455 §4 ---
    Entry(
        "handshake_bad_subprotocol_token",
        W,
        "RFC 6455 §4.1 / RFC 9110 §5.6.2",
        "A Sec-WebSocket-Protocol value is not a token (spaces, quotes, angle brackets "
        "or other separators): servers may refuse or mis-negotiate it.",
        "The client's sub-protocol list; a proxy that rewrote it.",
    ),
    Entry(
        "handshake_refused",
        W,
        "RFC 6455 §4.1",
        "The server answered the WebSocket Upgrade request with a status other than 101.",
        "Read the status: 400 often means the server did not see Upgrade/Connection.",
    ),
    Entry(
        "handshake_wrong_accept",
        E,
        "RFC 6455 §4.2.2",
        "Sec-WebSocket-Accept is not base64(SHA-1(Sec-WebSocket-Key + GUID)).",
        "A proxy that rewrites Sec-WebSocket-Key must also rewrite the accept value.",
    ),
    Entry(
        "handshake_missing_key",
        E,
        "RFC 6455 §4.1",
        "The Upgrade request has no Sec-WebSocket-Key (or it is not 16 bytes base64).",
        "",
    ),
    Entry(
        "handshake_missing_upgrade",
        E,
        "RFC 6455 §4.1 / RFC 9110 §7.8",
        "A WebSocket-looking request (Sec-WebSocket-Key present) lacks `Upgrade: websocket` "
        "or `Connection: Upgrade`.",
        "A proxy must forward Upgrade/Connection explicitly (they are hop-by-hop).",
    ),
    Entry(
        "handshake_bad_version",
        W,
        "RFC 6455 §4.1",
        "Sec-WebSocket-Version is missing or not 13.",
        "",
    ),
    Entry(
        "handshake_subprotocol_not_offered",
        E,
        "RFC 6455 §4.2.2",
        "The server selected a sub-protocol the client did not offer.",
        "",
    ),
    Entry(
        "handshake_extension_not_offered",
        E,
        "RFC 6455 §9.1",
        "The server accepted an extension the client did not offer.",
        "",
    ),
    Entry(
        "handshake_incomplete_101",
        E,
        "RFC 6455 §4.2.2",
        "A 101 response lacks `Upgrade: websocket` or `Connection: Upgrade`.",
        "",
    ),
    Entry(
        "handshake_bad_request_line",
        E,
        "RFC 6455 §4.1",
        'The Upgrade request is not a GET or is older than HTTP/1.1 ("The method of the '
        'request MUST be GET, and the HTTP version MUST be at least 1.1").',
        "nginx speaks HTTP/1.0 to the backend by default: `proxy_http_version 1.1;`.",
    ),
    Entry(
        "handshake_not_captured",
        W,
        "RFC 6455 §4 / heuristic",
        "WebSocket frames were decoded on a connection whose opening handshake is not in "
        "the capture (it started after the upgrade), recognised by their structure (runs "
        "of valid frame headers, client frames masked and server frames not) or forced "
        "with decode_as / --decode-as. Extensions and sub-protocol are unknown: RSV1 is "
        "accepted and compressed messages cannot be decompressed; the detail names the "
        "evidence.",
        "Start the capture before the clients connect to see the handshake (headers, "
        "extensions, what the proxy changed).",
    ),
    # --- WebSocket over HTTP/2 (pipeline.py, handshake.py), RFC 8441 ---
    Entry(
        "h2_connect_protocol_not_enabled",
        E,
        "RFC 8441 §3",
        "The HTTP/2 server never advertised SETTINGS_ENABLE_CONNECT_PROTOCOL=1, yet a WebSocket "
        "had to cross this connection: an extended CONNECT was sent anyway, or the client (the "
        "proxy) reset a stream before sending any request, which is how HAProxy gives up; the "
        "client-side WebSocket is then refused by the proxy (HAProxy 502, Istio before 1.12: 503).",
        "Enable RFC 8441 on the backend (e.g. Envoy `allow_connect: true`, Hypercorn/h2 "
        "`ENABLE_CONNECT_PROTOCOL`), or make the proxy speak HTTP/1.1 to it (Istio "
        "`h2UpgradePolicy: DO_NOT_UPGRADE`, HAProxy: remove `proto h2`).",
    ),
    Entry(
        "h2_extended_connect_reset",
        E,
        "RFC 8441 §5 / RFC 9113 §6.4",
        "The extended CONNECT that carries the WebSocket over HTTP/2 was answered by a "
        "RST_STREAM instead of a response: the WebSocket never opened on this leg; the proxy "
        "refuses the client side (typically 502/503).",
        "The error code names the reason (REFUSED_STREAM: retry elsewhere; PROTOCOL_ERROR: "
        "the server does not accept :protocol; CANCEL: the proxy gave up). Check the backend's "
        "RFC 8441 support and its logs at that time.",
    ),
    Entry(
        "h2_websocket_stream_reset",
        W,
        "RFC 8441 §5 / RFC 9113 §6.4",
        "An open WebSocket carried on an HTTP/2 stream was ended by RST_STREAM with an error "
        "code, not by a close frame and END_STREAM: the other leg sees an abnormal closure "
        "(1006) or a TCP reset.",
        "Look at what preceded the reset on the same HTTP/2 connection (GOAWAY, flow-control "
        "stalls, a timeout of the proxy or of the backend).",
    ),
    Entry(
        "proxy_delay_h2_flow_control",
        W,
        "RFC 9113 §5.2, §6.9",
        "Part of the proxy delay of these client-to-server messages is HTTP/2 flow control "
        "on the server leg: the proxy had the bytes but its sending window (the stream's or "
        "the connection's) was exhausted until the backend sent a WINDOW_UPDATE. Large "
        "messages and a backend that reads slowly, or grants credit late or in small steps, "
        "make this grow.",
        "Raise the backend's initial window (SETTINGS_INITIAL_WINDOW_SIZE; Envoy "
        "`initial_stream_window_size` / `initial_connection_window_size`) or make it grant "
        "credit as it reads; check how fast the backend consumes the WebSocket.",
    ),
    Entry(
        "h2_scheme_mismatch",
        W,
        "RFC 8441 §5 / RFC 9113 §8.3.1",
        "The extended CONNECT's :scheme says https but the stream travels on a cleartext TCP "
        "connection (RFC 8441 §5: `http` for a ws-schemed WebSocket; HAProxy 2.6 with `proto h2` "
        "sends https): a backend that checks the scheme, or builds URLs and Origin checks from "
        "it, may reject or misroute the WebSocket.",
        "Check the backend's scheme and Origin checks; with HAProxy, `http-request set-uri` / "
        "the server line's `ssl` decide the scheme it sends.",
    ),
    Entry(
        "h2_bad_extended_connect",
        E,
        "RFC 8441 §4 / RFC 9113 §8.5",
        "An extended CONNECT lacks :scheme, :path or :authority: the server must treat it as "
        "malformed and refuse the WebSocket.",
        "Check the proxy version: it builds the HTTP/2 request from the client's HTTP/1.1 Upgrade.",
    ),
    Entry(
        "h2_connection_specific_header",
        W,
        "RFC 9113 §8.2.2",
        "An HTTP/2 request or response carries a connection-specific field (Connection, Upgrade, "
        "Keep-Alive, Proxy-Connection, Transfer-Encoding, TE other than trailers): a conforming "
        "peer must treat the message as malformed. A proxy that translates an HTTP/1.1 Upgrade "
        "must drop Upgrade/Connection and say :protocol instead.",
        "Check header rules that re-add Upgrade/Connection on the HTTP/2 leg (e.g. nginx "
        "`proxy_set_header Connection`, Envoy `request_headers_to_add`).",
    ),
    # --- frames and messages (frames.py, messages.py), RFC 6455 §5-§8 ---
    Entry(
        "ws_client_data_before_101",
        W,
        "RFC 6455 §4.1",
        "The client sent data after its Upgrade request but before the server's 101 "
        "arrived; the client MUST wait for the response first.",
        "A client or a proxy that pipelines WebSocket data before the handshake completes.",
    ),
    Entry(
        "ws_pong_mismatch",
        W,
        "RFC 6455 §5.5.3",
        "A Pong answering a Ping does not carry the Ping's application data.",
        "A proxy answering pings itself, or an endpoint's ping/pong bookkeeping.",
    ),
    Entry(
        "ws_rsv1_on_continuation_or_control",
        E,
        "RFC 7692 §6",
        'With permessage-deflate, RSV1 (the "Per-Message Compressed" bit) is set on a '
        "continuation or control frame; it may only be set on the first frame of a data "
        "message. The bit was ignored.",
        "The sender's (or the proxy's) WebSocket compression code.",
    ),
    Entry(
        "ws_deflate_error",
        E,
        "RFC 7692 §7.2.2 / RFC 1951",
        "A compressed message is not valid DEFLATE data (or uses a window larger than "
        'negotiated: "invalid distance too far back"). It is counted with the digest of '
        "its wire bytes; with context takeover later messages of the direction cannot "
        "be decompressed.",
        "A proxy that rewrites Sec-WebSocket-Extensions (window bits, no_context_takeover) "
        "without re-compressing, or a peer that ignores the negotiated parameters.",
    ),
    Entry(
        "ws_deflate_limit_exceeded",
        W,
        "security limit",
        "A compressed message inflates beyond the decompression limit (16 MiB by "
        "default): a decompression bomb or a very large message. Only the first bytes "
        "were decompressed (digest and preview); the message is marked incomplete.",
        "Whether the peer really sends messages that large.",
    ),
    Entry(
        "deflate_context_lost",
        W,
        "RFC 7692 §7.1.1",
        "Compressed messages of this direction cannot be decompressed: bytes were lost "
        "(a TCP gap, inside the message or, with context takeover, earlier), an earlier "
        "message could not be decompressed, or the handshake that set the parameters "
        "was not captured. Reported once per direction; those messages are still "
        "counted, with digests of their wire bytes and no preview.",
        "Start the capture before the WebSocket opens and make sure it drops no packets.",
    ),
    Entry(
        "ws_unmasked_client_frame",
        E,
        "RFC 6455 §5.1",
        "A frame from client to server is not masked.",
        "",
    ),
    Entry(
        "ws_masked_server_frame", E, "RFC 6455 §5.1", "A frame from server to client is masked.", ""
    ),
    Entry(
        "ws_reserved_opcode",
        E,
        "RFC 6455 §5.2",
        "A frame uses a reserved opcode (0x3-0x7, 0xB-0xF).",
        "",
    ),
    Entry(
        "ws_reserved_bits",
        E,
        "RFC 6455 §5.2",
        "RSV1, RSV2 or RSV3 is set but no extension giving it a meaning was negotiated.",
        "",
    ),
    Entry(
        "ws_control_frame_too_long",
        E,
        "RFC 6455 §5.5",
        "A control frame has a payload longer than 125 bytes.",
        "",
    ),
    Entry("ws_control_frame_fragmented", E, "RFC 6455 §5.5", "A control frame has FIN clear.", ""),
    Entry(
        "ws_non_minimal_length",
        W,
        "RFC 6455 §5.2",
        "The payload length is not encoded in the minimal number of bytes.",
        "",
    ),
    Entry(
        "ws_length_msb_set",
        E,
        "RFC 6455 §5.2",
        "The most significant bit of a 64-bit payload length is set.",
        "",
    ),
    Entry(
        "ws_frame_not_buffered",
        I,
        "security limit",
        "A frame was larger than the decoder's buffer limit; its payload was digested "
        "and previewed, not kept.",
        "",
    ),
    Entry(
        "ws_frame_truncated",
        W,
        "RFC 6455 §5.2",
        "The stream ended, or a TCP gap fell, inside a frame.",
        "A gap inside a frame means the capture lost packets.",
    ),
    Entry(
        "ws_resync",
        W,
        "heuristic",
        "After a TCP gap the frame decoder skipped bytes until a run of plausible frame "
        "headers; the skipped bytes are counted as undecodable.",
        "",
    ),
    Entry(
        "ws_unexpected_continuation",
        E,
        "RFC 6455 §5.4",
        "A continuation frame arrived with no fragmented message in progress.",
        "",
    ),
    Entry(
        "ws_fragmented_message_interrupted",
        E,
        "RFC 6455 §5.4",
        "A new text or binary frame started while a fragmented message was unfinished.",
        "",
    ),
    Entry(
        "ws_invalid_utf8",
        E,
        "RFC 6455 §8.1",
        "A text message (or a close reason) is not valid UTF-8.",
        "",
    ),
    Entry(
        "ws_bad_close_code",
        E,
        "RFC 6455 §7.4",
        "A close frame carries a code that must not be sent (below 1000, 1004-1006, "
        "1015, 1016-2999 unassigned, or above 4999).",
        "",
    ),
    Entry(
        "ws_close_payload_one_byte",
        E,
        "RFC 6455 §5.5.1",
        "A close frame has a 1-byte payload (a code needs 2 bytes).",
        "",
    ),
    Entry(
        "ws_data_after_close",
        W,
        "RFC 6455 §5.5.1",
        "A frame was sent after this endpoint's close frame.",
        "",
    ),
    Entry(
        "ws_incomplete_message",
        W,
        "RFC 6455 §5.4",
        "The stream ended with a fragmented message unfinished.",
        "",
    ),
    Entry(
        "ws_findings_suppressed",
        I,
        "security limit",
        "One direction produced more than 10 findings of one code; only the first 10 "
        "were listed, the rest are counted in this finding's detail "
        "(code=..., suppressed=N).",
        "Look at the first findings of that code: the stream is likely hostile or "
        "not WebSocket at all.",
    ),
    # --- sub-protocols (subprotocols/) ---
    Entry(
        "k8s_empty_message",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand)",
        "A data message of a *.channel.k8s.io session is empty: every message must start "
        "with the channel it belongs to (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize).",
        "Check the client library: it must prefix each message with the channel byte "
        "(a digit in base64.channel.k8s.io).",
    ),
    Entry(
        "k8s_unknown_channel",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand)",
        "A message names a channel the negotiated *.channel.k8s.io version does not "
        "define (0-4; 255 close-stream only in v5.channel.k8s.io); the receiver discards it.",
        "A client speaking v5 (close-stream) after the server chose an older version, or "
        "a port-forward session (2 channels per port) decoded as exec.",
    ),
    Entry(
        "k8s_bad_base64",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand) / RFC 4648 §4",
        "The data after the channel digit of a base64.channel.k8s.io message is not "
        "padded standard base64; the API server rejects such input.",
        "Check the client encodes each message with standard base64 (btoa), padding "
        "included, after the channel digit.",
    ),
    Entry(
        "k8s_bad_status",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand)",
        "The error channel (3) of a v4/v5 session does not carry a JSON metav1.Status, so "
        "the client cannot learn the command's exit code.",
        "A proxy or shim in the path rewriting the stream, or an old kubelet answering a "
        "v4 client.",
    ),
    Entry(
        "k8s_bad_resize",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand)",
        'A resize message (channel 4) is not JSON {"Width": w, "Height": h} with '
        "unsigned 16-bit sizes; the terminal size is not changed.",
        "",
    ),
    Entry(
        "k8s_bad_close_stream",
        W,
        "Kubernetes remote command protocol (k8s.io/apimachinery/pkg/util/remotecommand, "
        "staging/src/k8s.io/client-go/tools/remotecommand)",
        "A v5.channel.k8s.io close-stream message (channel 255) does not carry exactly one "
        "byte naming the channel being closed.",
        "",
    ),
    Entry(
        "subprotocol_malformed_message",
        W,
        "the negotiated sub-protocol's specification (RFC 6455 §1.9; named in the detail)",
        "A message does not parse as the sub-protocol negotiated with "
        "Sec-WebSocket-Protocol (GraphQL over WebSocket, MQTT, STOMP, WAMP, Jupyter "
        "kernel messages): the peer will likely reject it.",
        "Compare the Sec-WebSocket-Protocol both ends agreed on with what the "
        "application actually sends.",
    ),
    Entry(
        "subprotocol_findings_suppressed",
        I,
        "security limit",
        "One connection produced more than 10 sub-protocol findings of one code; only "
        "the first 10 were listed (the detail names the code), later ones were dropped.",
        "Look at the first findings of that code: the sub-protocol was likely "
        "misidentified or the stream is hostile.",
    ),
    # --- the proxy, both legs (correlate.py, diagnose.py) ---
    Entry(
        "proxy_header_case_changed",
        I,
        "RFC 9110 §5.1",
        "The proxy changed the spelling of request header names (HAProxy lower-cases them "
        "all). Field names are case-insensitive, so nothing is lost, but a backend that "
        "compares them case-sensitively will miss them.",
        "A backend looking up e.g. 'Sec-WebSocket-Key' case-sensitively; HAProxy "
        "`h1-case-adjust` / `option h1-case-adjust-bogus-server` restores the spelling.",
    ),
    Entry(
        "captures_swapped",
        E,
        "heuristic",
        "The two captures look given in the wrong order: every message appears on the "
        "second ('server') capture before the first ('client') one, and the headers a "
        "proxy adds seem removed. Delays and header changes are then reversed.",
        "Run `wsanalyze pcap CLIENT_SIDE.pcap SERVER_SIDE.pcap` with the capture taken "
        "between client and proxy first.",
    ),
    Entry(
        "proxy_clock_drift",
        W,
        "heuristic",
        "The clock offset between the two captures changes over the capture (fitted as "
        "a line through per-window offset bounds): one capture host's clock runs fast or "
        "slow. Delays were corrected by the offset at each message's time.",
        "NTP/chrony on both capture hosts (`chronyc tracking`); a large drift can also "
        "mean a few false message matches.",
    ),
    # message behaviour across the proxy (behaviour.py)
    Entry(
        "proxy_message_injected",
        W,
        "heuristic",
        "A data message on the destination leg has no source on the other leg: the proxy "
        "(or a plugin, WAF or filter in it) sent a message of its own.",
        "Proxy plugins or scripts that write to the WebSocket (Envoy/Lua/Wasm filters, "
        "nginx njs/OpenResty, HAProxy Lua); or the source leg's capture starts late.",
    ),
    Entry(
        "proxy_message_modified",
        W,
        "heuristic",
        "Between two messages forwarded unchanged, a message of one leg and a message of "
        "the same type on the other leg differ (payload digest after decompression): "
        "the proxy rewrote the payload.",
        "Content filters, WAF or DLP rules, message-rewriting plugins; a permessage-deflate "
        "context that could not be followed (then the digests are over the wire bytes).",
    ),
    Entry(
        "proxy_message_refragmented",
        I,
        "RFC 6455 §5.4",
        "A message was forwarded with the same payload but another number of frames; "
        "intermediaries may change fragmentation when no extension forbids it.",
        "Only a problem for a peer that wrongly treats frames as messages; proxy buffer "
        "sizes (e.g. nginx `proxy_buffer_size`) decide where frames are cut.",
    ),
    Entry(
        "proxy_messages_coalesced",
        W,
        "RFC 6455 §5.4 / heuristic",
        "Two or more consecutive messages of one leg arrive as ONE message on the other "
        "(lengths add up; with kept payloads the digest is checked): message boundaries "
        "were lost across the proxy.",
        "A proxy that relays bytes of the payload but rebuilds frames (a non-WebSocket-aware "
        "TCP/HTTP relay terminating WebSocket on both sides); the application's framing.",
    ),
    Entry(
        "proxy_message_split",
        W,
        "RFC 6455 §5.4 / heuristic",
        "One message of one leg arrives as two or more messages on the other (lengths add "
        "up; with kept payloads the digest is checked): fragments were forwarded as "
        "separate messages.",
        "A proxy that forwards each frame as a message (FIN bit set on fragments) or cuts "
        "large messages at a buffer size.",
    ),
    Entry(
        "proxy_answers_pings",
        I,
        "RFC 6455 §5.5.2 / §5.5.3",
        "A ping on one leg was answered by a pong on the same leg and never reached the "
        "other leg: the proxy answers pings itself, so they do not test the far end.",
        "Keep-alives measure only the hop to the proxy; use application-level heartbeats "
        "to check the backend.",
    ),
    Entry(
        "server_fan_out",
        I,
        "heuristic",
        "The same server → client message (same digest) was sent on many server-side "
        "connections within a short window: one update pushed to every subscriber; the "
        "detail gives the spread and the slowest copy's proxy delay.",
        "The slowest connection's proxy delay if clients report late updates.",
    ),
    Entry(
        "proxy_protocol_header",
        I,
        "HAProxy PROXY protocol v1/v2",
        "The proxy sent a PROXY protocol header before the request, naming the real "
        "client; it was decoded and the HTTP after it analysed as usual.",
        "The backend must expect it (e.g. nginx `listen ... proxy_protocol`), or it "
        "will see the header as a malformed request.",
    ),
    # close story of one leg (closing.py); these need one capture only
    Entry(
        "ws_close_not_completed",
        W,
        "RFC 6455 §5.5.1 / §7.1.2",
        "One endpoint sent a close frame and the other never answered with its own before "
        'the TCP connection ended ("the endpoint MUST send a Close frame in response"); '
        "the initiator reports 1006 instead of the peer's code.",
        "The peer's WebSocket library or application (does it answer close frames, is it "
        "blocked?); a proxy that ends the connection on the first close frame instead of "
        "relaying the answer (nginx/HAProxy/F5/Envoy logs at that time); the initiator's "
        "close timeout.",
    ),
    Entry(
        "ws_abnormal_closure",
        W,
        "RFC 6455 §7.1.5 / §7.4.1",
        "The TCP connection ended (FIN or RST) with no close frame either way: both ends "
        "report close code 1006 (abnormal closure).",
        "Who sent the first FIN/RST (the detail says). On a client leg it is often the "
        "proxy: an idle timeout (nginx `proxy_read_timeout`, HAProxy `timeout tunnel`, F5 "
        "TCP profile Idle Timeout, Envoy `idle_timeout`), a backend restart, or a NAT or "
        "firewall idle timeout; compare with the other leg's capture.",
    ),
    Entry(
        "ws_closed_by_rst",
        W,
        "RFC 6455 §7.1.1 / RFC 9293 §3.5.2",
        "An endpoint reset the TCP connection without having sent a close frame: it "
        "vanished (process killed, `SO_LINGER` 0 abort, pod deleted) or a middlebox reset "
        "it; the other end reports 1006.",
        "The sender's logs at that time; conntrack/NAT/firewall idle timeouts (Linux "
        "`nf_conntrack_tcp_timeout_established`, cloud NAT gateways, AWS NLB 350 s); F5 "
        "TCP profile `Reset On Timeout`; Envoy access-log flags `UC`/`DC`.",
    ),
    # close across the proxy (diagnose.py)
    Entry(
        "proxy_idle_timeout",
        W,
        "heuristic",
        "The proxy closed both legs itself (FIN, RST or its own close frame toward the "
        "client and toward the server) after a silence, with no close frame from either "
        "end: an idle timeout. The detail gives the silence and the setting it matches.",
        "nginx: `proxy_read_timeout` (default 60 s; ingress-nginx annotation "
        "`proxy-read-timeout`). HAProxy: `timeout tunnel` (or `timeout client`/`timeout "
        "server` when no tunnel timeout is set). F5 BIG-IP: the TCP profile Idle Timeout "
        "(default 300 s). Envoy/Istio: `stream_idle_timeout` (default 5 min) and "
        "`idle_timeout` (default 1 h). Apache: `ProxyTimeout` (default `Timeout`, 60 s). "
        "AWS ALB idle timeout 60 s. Raise it for WebSocket routes or ping more often.",
    ),
    Entry(
        "proxy_backend_vanished",
        W,
        "RFC 6455 §7.1.1 / heuristic",
        "The server ended the server leg with a RST or FIN and no close frame, and the "
        "proxy then closed the client leg: the backend went away and the client sees a "
        "close without a close frame (1006) or the proxy's own close code.",
        "The server's logs at that time (crash, restart, OOM kill, pod eviction, an "
        "`SO_LINGER 0` abort, its own heartbeat timeout); HAProxy log termination flags "
        "`SD--`; nginx error log 'upstream prematurely closed connection' or 'Connection "
        "reset by peer'; Envoy access-log flag `UC`; F5 pool member status.",
    ),
    Entry(
        "proxy_close_not_propagated",
        W,
        "heuristic",
        "One leg was closed (close frame, FIN or RST) but the other stayed open until the "
        "end of the capture, or closed more than 1 s later: the proxy did not pass the "
        "close on, leaving one end waiting on a dead connection.",
        "Half-close handling: HAProxy `timeout client-fin`/`timeout server-fin`, F5 TCP "
        "profile FIN Wait / Close Wait timeouts, nginx `proxy_read_timeout` for the "
        "upstream leg, Envoy TCP proxy half-close; a leg left open is a leaked connection "
        "in the proxy and a hung client.",
    ),
    Entry(
        "proxy_close_code_changed",
        W,
        "RFC 6455 §7.4",
        "The close frame of one direction differs between the legs (another code or "
        "reason), or the proxy replaced it with a bare FIN/RST so the far end reports 1006.",
        "A byte-forwarding proxy keeps close frames unchanged; one that terminates WebSocket "
        "(F5 WebSocket profile, an API gateway, Spring Cloud Gateway, socket.io proxies) "
        "writes its own: check its WebSocket settings and logs at that time.",
    ),
    # handshake across the proxy (diagnose.py)
    Entry(
        "proxy_upgrade_header_altered",
        E,
        "RFC 6455 §4.1 / RFC 9110 §7.8",
        "The proxy forwarded Upgrade/Connection with other values (e.g. `Upgrade: "
        "WebSocket2`, `Connection: keep-alive` or `close`): the server does not see a "
        "WebSocket request.",
        "nginx: `proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "
        "$connection_upgrade;` with `map $http_upgrade $connection_upgrade {default upgrade; "
        "'' close;}` (a literal `Connection \"\"` for upstream keepalive breaks WebSocket). "
        "HAProxy: no `http-request set-header Connection` on the WebSocket path. F5: iRules "
        "or OneConnect rewriting Connection. Envoy: `upgrade_configs: [{upgrade_type: "
        "websocket}]`.",
    ),
    Entry(
        "proxy_response_upgrade_header_dropped",
        E,
        "RFC 6455 §4.2.2 / RFC 9110 §7.6.1",
        "The server's 101 carried `Upgrade: websocket` and `Connection: Upgrade`, but the "
        "101 the client received lacks or changed them: clients fail the handshake "
        "(browsers: \"'Upgrade' header is missing\").",
        "Hop-by-hop stripping on the response: nginx `proxy_hide_header`, HAProxy "
        "`http-response del-header`, F5 HTTP profile or iRules on HTTP_RESPONSE, a CDN or "
        "WAF in front that does not support WebSocket.",
    ),
    Entry(
        "handshake_status_400",
        W,
        "RFC 6455 §4.2.1 / RFC 9110 §15.5.1",
        "An Upgrade request was answered 400 Bad Request: the handshake itself was rejected, "
        "commonly for missing or altered Upgrade/Connection (Spring: 'Handshake failed due "
        "to invalid Upgrade header: null'), a bad Sec-WebSocket-Key/-Version, or an "
        "unaccepted Host. The detail says whether the server sent it or the proxy.",
        "Compare the legs in the header-change table. nginx: `proxy_http_version 1.1` and "
        "the Upgrade/Connection headers, `large_client_header_buffers` ('Request Header Or "
        "Cookie Too Large'); HAProxy logs `PR--` when HAProxy rejected the request itself.",
    ),
    Entry(
        "handshake_status_401",
        W,
        "RFC 9110 §15.5.2",
        "An Upgrade request was answered 401 Unauthorized: credentials were missing or "
        "rejected. Browsers cannot set headers on a WebSocket request, so tokens travel in "
        "a cookie, a query parameter or Sec-WebSocket-Protocol.",
        "Are Authorization/Cookie/`access_token` forwarded (compare the legs)? nginx "
        "`auth_request`; Istio `RequestAuthentication` (a JWT in the query needs "
        "`fromParams`); F5 APM access policy; oauth2-proxy in front.",
    ),
    Entry(
        "handshake_status_403",
        W,
        "RFC 6455 §10.2 / RFC 9110 §15.5.4",
        "An Upgrade request was answered 403 Forbidden: commonly the server's Origin check "
        "(Spring `setAllowedOrigins`, Tomcat/Jetty origin checks) after the proxy changed "
        "Host or Origin, a CSRF check, or an ACL/WAF in the proxy.",
        "Compare Origin and Host on both legs (nginx `proxy_set_header Host $host`, Apache "
        "`ProxyPreserveHost On`); the server's allowed origins; F5 ASM WebSocket security, "
        "ModSecurity, Istio `AuthorizationPolicy` ('RBAC: access denied'), HAProxy "
        "`http-request deny`.",
    ),
    Entry(
        "handshake_status_404",
        W,
        "RFC 9110 §15.5.5",
        "An Upgrade request was answered 404 Not Found: the request-target reached no "
        "WebSocket endpoint: the proxy rewrote the path or routed to the wrong backend, or "
        "the server maps the endpoint elsewhere.",
        "Compare the request-target on both legs: nginx `proxy_pass` with a URI part (a "
        "trailing slash replaces the location prefix); Istio VirtualService `rewrite.uri`; "
        "HAProxy `http-request set-path`/`replace-path`; the server's endpoint path and "
        "context path (SockJS endpoints end in `/websocket`).",
    ),
    Entry(
        "handshake_status_426",
        W,
        "RFC 6455 §4.4 / RFC 9110 §15.5.22",
        "An Upgrade request was answered 426 Upgrade Required: the server wanted a "
        "WebSocket upgrade it did not get (the proxy dropped Upgrade/Connection or spoke "
        "HTTP/1.0), or it does not support the Sec-WebSocket-Version asked for (the 426 "
        "then lists the versions it supports).",
        "nginx: `proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
        "proxy_set_header Connection $connection_upgrade;`; Envoy `upgrade_configs`; "
        "HAProxy/F5 Upgrade forwarding; compare Sec-WebSocket-Version on both legs.",
    ),
    Entry(
        "handshake_status_429",
        W,
        "RFC 6585 §4",
        "An Upgrade request was answered 429 Too Many Requests: a rate limit refused the "
        "handshake (every reconnect is a new request, so reconnect storms hit limits).",
        "nginx `limit_req`/`limit_conn` (`limit_req_status 429`), ingress-nginx "
        "`limit-rps`/`limit-connections`, Envoy/Istio local or global rate limit, HAProxy "
        "stick-table `http-request deny deny_status 429`; clients should back off "
        "(Retry-After).",
    ),
    Entry(
        "handshake_status_500",
        E,
        "RFC 9110 §15.6.1",
        "An Upgrade request was answered 500 Internal Server Error: the handshake handler "
        "failed (an exception in the upgrade path, an interceptor, authentication), on the "
        "server or, when the server leg shows no 500, in the proxy.",
        "The server's log at that time (handshake interceptor, endpoint constructor); the "
        "detail says whether the server sent the 500.",
    ),
    Entry(
        "handshake_status_502",
        E,
        "RFC 9110 §15.6.3",
        "An Upgrade request was answered 502 Bad Gateway: the proxy got no usable answer "
        "from the backend (connection refused or reset, closed without a response, an "
        "invalid response). The detail says whether a server-side connection exists and "
        "what happened on it.",
        "Backend address, port and health: nginx error log 'connect() failed (111: "
        "Connection refused)' / 'upstream prematurely closed connection'; HAProxy flags "
        "`SC--`/`SH--`; Envoy flags `UF`/`UC`/`URX`; F5 pool member status.",
    ),
    Entry(
        "handshake_status_503",
        E,
        "RFC 9110 §15.6.4",
        "An Upgrade request was answered 503 Service Unavailable: no backend available "
        "(no healthy upstream, pool members down, circuit breaker open) or an overloaded "
        "server. Istio before 1.12 answers 503 when `h2UpgradePolicy: UPGRADE` carries the "
        "WebSocket to the server sidecar over HTTP/2.",
        "Envoy 'no healthy upstream' (`UH`), overflow `UO`; Istio DestinationRule "
        "`h2UpgradePolicy` (DO_NOT_UPGRADE for WebSocket before 1.12); HAProxy `<NOSRV>`, "
        "`maxconn`; nginx upstream servers marked down; F5 pool with no available member; "
        "a Kubernetes Service with no ready endpoints.",
    ),
    Entry(
        "handshake_status_504",
        E,
        "RFC 9110 §15.6.5",
        "An Upgrade request was answered 504 Gateway Timeout: the proxy gave up waiting "
        "for the backend to accept the connection or to answer the handshake.",
        "nginx `proxy_connect_timeout`/`proxy_read_timeout` ('upstream timed out (110)'); "
        "HAProxy `timeout connect`/`timeout server` (flags `sC--`/`sH--`); Envoy route "
        "`timeout` (default 15 s); the server leg shows whether the request reached the "
        "backend.",
    ),
    Entry(
        "handshake_status_505",
        E,
        "RFC 9110 §15.6.6 / RFC 6455 §4.1",
        "An Upgrade request was answered 505 HTTP Version Not Supported: the server refused "
        "the HTTP version it received, typically HTTP/1.0 from a proxy, which cannot carry "
        "a WebSocket upgrade.",
        "nginx: `proxy_http_version 1.1;` (the default is 1.0).",
    ),
    Entry(
        "proxy_key_changed",
        I,
        "RFC 6455 §4.1",
        "The proxy sent the server a Sec-WebSocket-Key different from the client's: it runs "
        "a handshake of its own on each leg (a WebSocket-terminating proxy).",
        "Fine for a terminating proxy if it answers the client with the accept for the "
        "client's key (see proxy_accept_not_recomputed); a pass-through proxy must forward "
        "the key unchanged (F5 iRules, Envoy header mutations).",
    ),
    Entry(
        "proxy_accept_not_recomputed",
        E,
        "RFC 6455 §4.2.2 / §4.1",
        "The proxy changed Sec-WebSocket-Key but the Sec-WebSocket-Accept the client got is "
        "not computed from the client's key (often the server's accept relayed unchanged): "
        "the client must fail the connection.",
        "A terminating proxy must compute the accept from the client's key; otherwise stop "
        "rewriting Sec-WebSocket-Key (F5 `HTTP::header replace`, Envoy "
        "`request_headers_to_add`, HAProxy `set-header`).",
    ),
    Entry(
        "proxy_subprotocol_stripped",
        W,
        "RFC 6455 §4.1 / §11.3.4",
        "The client offered sub-protocols (Sec-WebSocket-Protocol) the proxy did not pass "
        "to the server: the server cannot select them, and clients that require one "
        "(Kubernetes exec `v5.channel.k8s.io`, STOMP, MQTT, `graphql-transport-ws`) fail.",
        "Header rules removing Sec-WebSocket-Protocol: nginx `proxy_set_header "
        'Sec-WebSocket-Protocol ""`, HAProxy `http-request del-header`, F5 HTTP profile or '
        "iRules, Envoy `request_headers_to_remove`, API gateways with a header allow-list.",
    ),
    Entry(
        "proxy_subprotocol_changed",
        E,
        "RFC 6455 §4.2.2 / §1.9",
        "The sub-protocol differs between the legs: the proxy offered the server another "
        "list, or told the client another selection than the server made, so the ends "
        "speak different protocols (e.g. `v5.channel.k8s.io` on one leg, "
        "`v4.channel.k8s.io` on the other).",
        "Rewrites of Sec-WebSocket-Protocol in the proxy (nginx `proxy_set_header`, HAProxy "
        "`set-header`, F5 iRules, Envoy header mutations) or a proxy negotiating per leg.",
    ),
    Entry(
        "proxy_extension_stripped",
        W,
        "RFC 6455 §9.1 / RFC 7692",
        "The client offered extensions (Sec-WebSocket-Extensions, e.g. permessage-deflate) "
        "the proxy did not pass to the server: the connection runs without them "
        "(uncompressed: correct, but more bytes).",
        "Proxies that cannot handle RSV bits strip it on purpose (F5 WebSocket profile, some "
        'WAFs and CDNs); nginx `proxy_set_header Sec-WebSocket-Extensions ""`; HAProxy '
        "`http-request del-header sec-websocket-extensions`.",
    ),
    Entry(
        "proxy_extension_changed",
        W,
        "RFC 6455 §9.1 / RFC 7692 §5",
        "The extensions differ between the legs (offered or accepted differently, e.g. "
        "permessage-deflate accepted on one leg only, other window-bits parameters): "
        "frames on one leg carry compression the far end did not agree to unless the proxy "
        "re-compresses.",
        "Whether the proxy terminates permessage-deflate (F5 WebSocket profile, Envoy "
        "filters); header rules touching Sec-WebSocket-Extensions.",
    ),
    Entry(
        "proxy_header_duplicated",
        W,
        "RFC 9110 §5.3 / RFC 6455 §11.3",
        "The proxy sent a handshake field twice or repeated a value (`Upgrade: websocket, "
        "websocket`, two Upgrade or Sec-WebSocket-Key fields) that the other leg carried "
        "once: strict servers and clients reject it (Sec-WebSocket-Key 'MUST NOT appear "
        "more than once').",
        "Set, do not add: nginx `proxy_set_header` (not also `more_set_input_headers`), "
        "HAProxy `http-request set-header` instead of `add-header`, F5 iRule `HTTP::header "
        "replace` instead of `insert`, Envoy `append_action: OVERWRITE_IF_EXISTS_OR_ADD`.",
    ),
    Entry(
        "proxy_response_not_forwarded",
        E,
        "RFC 9112 §9 / heuristic",
        "The server answered the handshake on the server leg but the client never got a "
        "response: the proxy held or dropped it (the client waits, then times out).",
        "Proxy error logs at that time; response inspection (WAF, ICAP, F5 iRules on "
        "HTTP_RESPONSE); HAProxy `timeout server`/`timeout client`; a proxy crash or reload.",
    ),
    Entry(
        "proxy_upgrade_header_dropped",
        E,
        "RFC 9110 §7.6.1 / RFC 6455 §4.1",
        "The client's request carried Upgrade/Connection but the proxy's request to the "
        "server did not: the proxy treated them as hop-by-hop headers and dropped them, "
        "so the server refused the handshake.",
        "nginx: `proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
        "proxy_set_header Connection $connection_upgrade;`. HAProxy/F5: make sure the "
        "HTTP profile allows WebSocket upgrade.",
    ),
    Entry(
        "proxy_http10_to_backend",
        E,
        "RFC 9112 §2.6 / RFC 6455 §4.1",
        "The proxy sent the request to the server as HTTP/1.0, which cannot upgrade.",
        "nginx: `proxy_http_version 1.1;` (the default is 1.0).",
    ),
    Entry(
        "proxy_handshake_refused_by_server",
        W,
        "RFC 6455 §4.1",
        "The server refused the handshake the proxy forwarded.",
        "Compare both requests in the header-change table.",
    ),
    Entry(
        "proxy_status_changed",
        W,
        "heuristic",
        "The proxy returned to the client a status different from the server's.",
        "",
    ),
    Entry(
        "proxy_no_server_connection",
        W,
        "heuristic",
        "A client-side WebSocket connection has no server-side twin in the server capture.",
        "Check the captures overlap in time and the server capture covers the right backend.",
    ),
    Entry(
        "proxy_message_not_forwarded",
        W,
        "heuristic",
        "A message seen on one leg has no copy on the other leg.",
        "Dropped by the proxy, or outside the other capture's time range.",
    ),
    Entry(
        "proxy_clock_bounds_empty",
        W,
        "heuristic",
        "The message delays imply no consistent clock offset between the two captures "
        "(a false message match, or a clock that jumped or drifted).",
        "",
    ),
    Entry(
        "pair_ambiguous",
        I,
        "heuristic",
        "Several server-side connections match one client-side connection equally well; "
        "it was left unpaired rather than guessed.",
        "",
    ),
    # --- the analysis itself ---
    Entry(
        "analysis_messages_not_kept",
        I,
        "wsanalyze (memory limit)",
        "The capture held more WebSocket messages than the analysis keeps in detail "
        "(max_messages, 1,000,000 by default, about 0.3-1 KB of memory each). Every "
        "message was decoded and counted, and each connection's first close frames per "
        "direction were kept, but the messages after the limit have no row in the "
        "messages and frames tables and take no part in matching, proxy delay or "
        "message behaviour (dropped, injected, modified).",
        "Raise the limit with --max-messages N (0: no limit; memory grows with it), or "
        "select the connections of interest with --connection or --port.",
    ),
    Entry(
        "internal_error",
        E,
        "wsanalyze",
        "wsanalyze hit an unexpected condition on this connection; other connections "
        "were still analysed. Please report it with the capture.",
        "",
    ),
]

CATALOGUE: dict[str, Entry] = {e.code: e for e in _ENTRIES}


def finding(
    code: str,
    detail: str,
    *,
    packets: tuple[int, ...] | list[int] = (),
    direction: Direction | None = None,
    offset: int | None = None,
    ts_ns: int | None = None,
    connections: tuple[str, ...] = (),
    capture: str | None = None,
) -> Finding:
    """Create a :class:`Finding` whose severity comes from the catalogue.

    Raises KeyError for a code not in :data:`CATALOGUE` (a programming error).
    """
    return Finding(
        code=code,
        severity=CATALOGUE[code].severity,
        detail=detail,
        packets=tuple(sorted(set(packets))),
        direction=direction,
        offset=offset,
        ts_ns=ts_ns,
        connections=connections,
        capture=capture,
    )


class FindingLimiter:
    """Emits a decoder's findings of one code at most ``limit`` times per direction,
    counts the rest, and summarises them with one ``suppressed_code`` finding per code
    (``ws_findings_suppressed`` for the WebSocket decoders, ``h2_findings_suppressed``
    for HTTP/2): a security limit against hostile streams producing millions of
    identical findings."""

    __slots__ = ("direction", "limit", "counts", "suppressed_code")

    def __init__(
        self,
        direction: Direction,
        limit: int = 10,
        suppressed_code: str = "ws_findings_suppressed",
    ) -> None:
        self.direction = direction
        self.limit = limit
        self.suppressed_code = suppressed_code
        self.counts: dict[str, int] = {}

    def emit(
        self,
        out: list,
        code: str,
        detail: str,
        packets: tuple[int, ...],
        offset: int | None,
        ts_ns: int | None,
    ) -> None:
        """Append the finding to ``out`` unless ``limit`` of that code were emitted."""
        count = self.counts.get(code, 0) + 1
        self.counts[code] = count
        if count <= self.limit:
            out.append(
                finding(
                    code,
                    detail,
                    packets=packets,
                    direction=self.direction,
                    offset=offset,
                    ts_ns=ts_ns,
                )
            )

    def summary(self, ts_ns: int) -> list[Finding]:
        """One ``suppressed_code`` finding per code that went over the limit."""
        return [
            finding(
                self.suppressed_code,
                f"code={code}, suppressed={count - self.limit}, total={count}",
                direction=self.direction,
                ts_ns=ts_ns,
            )
            for code, count in self.counts.items()
            if count > self.limit
        ]


def catalogue_markdown() -> str:
    """docs/findings.md: every finding code with severity, reference, meaning and
    what to check (regenerate with ``python -m wsanalyze.catalogue > docs/findings.md``)."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        "# Finding codes",
        "",
        "Generated from `wsanalyze/catalogue.py` by `python -m wsanalyze.catalogue`; "
        "do not edit by hand.",
        "",
        "| code | severity | reference | meaning | what to check |",
        "|---|---|---|---|---|",
    ]
    for e in _ENTRIES:
        lines.append(
            f"| `{e.code}` | {e.severity.label} | {cell(e.reference)} | "
            f"{cell(e.explanation)} | {cell(e.check)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(catalogue_markdown())
