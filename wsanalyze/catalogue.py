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
    Entry(
        "capture_http2_not_decoded",
        W,
        "RFC 9113 §3.4 / RFC 8441",
        "Some TCP connections carry HTTP/2 with prior knowledge (the leg to an Envoy/Istio "
        "sidecar or an h2 backend); WebSocket over HTTP/2 (RFC 8441) is not decoded yet.",
        "Compare the HTTP/1.1 leg; WebSocket over HTTP/2 decoding is planned.",
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
    # --- frames and messages (frames.py, messages.py), RFC 6455 §5-§8 ---
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
    # --- the proxy, both legs (correlate.py, diagnose.py) ---
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
