"""Correlation: header changes, the clock-offset bounds, and pairing of the two legs
when the proxy does not pass Sec-WebSocket-Key (crafted captures), including the
case that must be reported ambiguous rather than guessed; a constant shift of the
server capture changes nothing but the clock offset."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import capture_paths, scenario_names
from craft import BINARY, TEXT, Msg, nginx_like, shift_pcap, write_legs
from hypothesis import given, settings
from hypothesis import strategies as st

import wsanalyze
from wsanalyze.correlate import (
    HeaderChange,
    MessageMatch,
    Pair,
    estimate_clock_offset,
    header_changes,
)
from wsanalyze.model import Direction

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT


def H(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode(), v.encode()) for n, v in pairs)


# --- header_changes ---------------------------------------------------------------------------


def test_request_changes_added_removed_modified_in_wire_order():
    client = H(
        ("Host", "192.0.2.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("X-Dup", "1"),
        ("X-Dup", "2"),
        ("Cookie", "a=1"),
    )
    server = H(
        ("host", "192.0.2.1"),  # case of the name only: not a change
        ("Connection", "upgrade"),
        ("X-Dup", "1, 2"),  # repeated fields compare as their joined list
        ("X-Forwarded-For", "192.0.2.10"),
        ("COOKIE", "a=2"),
    )
    assert header_changes(client, server, "request") == [
        HeaderChange("request", "removed", "Upgrade", "websocket", None),
        HeaderChange("request", "modified", "Connection", "Upgrade", "upgrade"),
        HeaderChange("request", "modified", "Cookie", "a=1", "a=2"),  # client-leg spelling
        HeaderChange("request", "added", "X-Forwarded-For", None, "192.0.2.10"),
    ]


def test_repeated_fields_are_joined_when_they_differ():
    client = H(("X-A", "1"), ("Other", "x"), ("x-a", "2"))
    server = H(("X-A", "1"), ("Other", "x"))
    assert header_changes(client, server, "request") == [
        HeaderChange("request", "modified", "X-A", "1, 2", "1")
    ]


def test_identical_heads_and_case_only_differences_are_no_change():
    hs = H(("Host", "h"), ("Sec-WebSocket-Key", "k"), ("X-Dup", "a"), ("X-Dup", "b"))
    assert header_changes(hs, hs, "request") == []
    lower = tuple((n.lower(), v) for n, v in hs)
    assert header_changes(hs, lower, "request") == []
    assert header_changes(lower, hs, "response") == []


def test_response_changes_follow_the_direction_of_travel():
    """A response travels server → client: a field only the client received was
    added by the proxy; one only the server sent was removed."""
    server = H(
        ("Server", "Python/3.11 websockets/17.4"),
        ("Connection", "Upgrade"),
        ("X-Internal", "node-7"),
        ("content-type", "text/plain"),
    )
    client = H(
        ("Server", "nginx/1.22.1"),
        ("Connection", "upgrade"),
        ("Via", "1.1 proxy"),
        ("Content-Type", "text/html"),
    )
    got = header_changes(client, server, "response")
    assert got == [
        HeaderChange(
            "response", "modified", "Server", "nginx/1.22.1", "Python/3.11 websockets/17.4"
        ),
        HeaderChange("response", "modified", "Connection", "upgrade", "Upgrade"),
        HeaderChange("response", "removed", "X-Internal", None, "node-7"),
        HeaderChange("response", "modified", "Content-Type", "text/html", "text/plain"),
        HeaderChange("response", "added", "Via", "1.1 proxy", None),
    ]


def test_empty_heads():
    assert header_changes((), (), "request") == []
    assert header_changes(H(("A", "1")), (), "request") == [
        HeaderChange("request", "removed", "A", "1", None)
    ]
    assert header_changes(H(("A", "1")), (), "response") == [
        HeaderChange("response", "added", "A", "1", None)
    ]


# --- estimate_clock_offset --------------------------------------------------------------------


def _pair(matches: list[MessageMatch]) -> Pair:
    conn = SimpleNamespace(handshake=None, requests=[], responses=[], exchange=(None, None), id="x")
    p = Pair("pair-1", conn, conn, 1.0, 0.5, ())  # type: ignore[arg-type]
    p.matches = matches
    return p


def _match(d: Direction, client_ts: int, server_ts: int) -> MessageMatch:
    return MessageMatch(d, 0, 0, client_ts, server_ts, 1, 1)


def test_clock_offset_bounds_from_delays_each_way():
    theta = 5_000_000_000  # server clock 5 s ahead
    ups = [1_000_000, 200_000, 3_000_000]  # proxy delays client → server
    downs = [300_000, 2_000_000]  # server → client
    t = 1_800_000_000_000_000_000
    ms = [_match(C2S, t + i, t + i + theta + d) for i, d in enumerate(ups)]
    ms += [_match(S2C, t + 10 + i + d, t + 10 + i + theta) for i, d in enumerate(downs)]
    co = estimate_clock_offset([_pair(ms)])
    assert co is not None and not co.imposed and co.consistent
    assert co.high_ns == theta + min(ups)  # min(Δ_up)
    assert co.low_ns == theta - min(downs)  # max(Δ_down)
    assert co.low_ns <= theta <= co.high_ns
    assert co.estimate_ns == (co.low_ns + co.high_ns) // 2
    assert (co.samples_up, co.samples_down) == (len(ups), len(downs))
    # every delay corrected by the estimate is non-negative
    assert all(m.delay_ns(co.estimate_ns) >= 0 for m in ms)


def test_clock_offset_one_direction_only_and_none():
    t = 1_800_000_000_000_000_000
    up_only = estimate_clock_offset([_pair([_match(C2S, t, t + 700)])])
    assert up_only is not None
    assert (up_only.low_ns, up_only.high_ns, up_only.estimate_ns) == (None, 700, 700)
    down_only = estimate_clock_offset([_pair([_match(S2C, t + 700, t)])])
    assert down_only is not None
    assert (down_only.low_ns, down_only.high_ns, down_only.estimate_ns) == (-700, None, -700)
    assert estimate_clock_offset([]) is None
    assert estimate_clock_offset([_pair([])]) is None


def test_imposed_offset_keeps_the_measured_bounds():
    t = 1_800_000_000_000_000_000
    ms = [_match(C2S, t, t + 900), _match(S2C, t + 500, t + 100)]
    co = estimate_clock_offset([_pair(ms)], imposed_ns=0)
    assert co is not None and co.imposed
    assert (co.estimate_ns, co.low_ns, co.high_ns) == (0, -400, 900)
    assert estimate_clock_offset([], imposed_ns=123) is not None


def test_inconsistent_bounds_are_flagged():
    t = 1_800_000_000_000_000_000
    # a "delay" of −1 ms up and +1 ms down cannot both be true
    ms = [_match(C2S, t, t + 100), _match(S2C, t + 100, t + 5_000)]
    co = estimate_clock_offset([_pair(ms)])
    assert co is not None and co.low_ns > co.high_ns and not co.consistent


# --- pairing without Sec-WebSocket-Key ---------------------------------------------------------

NAMES = ("alpha", "bravo", "charlie")
DELAYS_US = (300, 900, 100)  # server-leg order differs from client-leg order


def _conversations(*, identical: bool, pass_key: bool = False, clock_us: int = 0):
    convs = []
    for i, name in enumerate(NAMES):
        if identical:
            msgs = [Msg("c2s", TEXT, b"hello"), Msg("s2c", TEXT, b"hello")]
        else:
            msgs = [
                Msg("c2s", TEXT, b"hello"),  # the same for all: pairing must not rest on it
                Msg("s2c", TEXT, b"hello"),
                Msg("c2s", TEXT, f"i-am-{name}".encode()),
                Msg("s2c", TEXT, f"i-am-{name}".encode()),
                Msg("c2s", BINARY, bytes([i]) * 20),
                Msg("s2c", BINARY, bytes([i]) * 20),
            ]
        convs.append(
            nginx_like(
                i,
                pass_key=pass_key,
                start_us=i * 40,  # three concurrent clients, same URL
                delay_us=DELAYS_US[i],
                server_clock_us=clock_us,
                proxy_port=52000 + (7 * (3 - i)),  # server-leg ports not in client order
                messages=msgs,
                close=(1000, name.encode()) if not identical else (1000, b"bye"),
            )
        )
    return convs


def _truth(convs) -> dict[str, str]:
    return {
        f"{c.client[0]}:{c.client[1]}": f"{c.proxy_source[0]}:{c.proxy_source[1]}" for c in convs
    }


@pytest.mark.parametrize("clock_us", [0, 5_000_000])
def test_pairs_from_message_digests_when_the_key_is_not_passed(tmp_path, clock_us):
    convs = _conversations(identical=False, clock_us=clock_us)
    # the proxy really did replace every key
    assert all(
        dict(c.client_headers)["Sec-WebSocket-Key"] != dict(c.server_headers)["Sec-WebSocket-Key"]
        for c in convs
    )
    client, server = write_legs(tmp_path, convs)
    a = wsanalyze.analyze(client, server, strict=True)
    got = {r["client"]: r["proxy_source"] for _, r in a.pairs.iterrows()}
    assert got == _truth(convs)
    assert not a.pairs["evidence"].str.contains("sec_websocket_key").any()
    assert a.pairs["evidence"].str.contains("message_digests").all()
    codes = set(a.findings["code"])
    assert not codes & {"pair_ambiguous", "proxy_no_server_connection", "proxy_clock_bounds_empty"}
    # The proxy's delay per pair is recovered exactly, the clock offset bracketed.
    co = a.correlation.clock_offset
    assert co.low_ns <= clock_us * 1000 <= co.high_ns
    for conv in convs:
        row = a.pairs[a.pairs["client"] == f"{conv.client[0]}:{conv.client[1]}"].iloc[0]
        mm = a.message_matches[a.message_matches["pair_id"] == row["pair_id"]]
        assert len(mm) == len(conv.messages) + 2  # and both close frames
        raw = (mm["server_ts"] - mm["client_ts"]).dt.total_seconds() * 1e6 - clock_us
        want = [
            conv.delay_us if d == "client_to_server" else -conv.delay_us for d in mm["direction"]
        ]
        assert [round(x) for x in raw] == want
        assert (mm["proxy_delay_ms"] >= 0).all()
        # key header modified (client and server values both present) is a change
        hc = a.header_changes[a.header_changes["pair_id"] == row["pair_id"]]
        key = hc[hc["name"].str.lower() == "sec-websocket-key"]
        assert list(key["change"]) == ["modified"]


def test_identical_clients_and_messages_are_ambiguous_not_guessed(tmp_path):
    convs = _conversations(identical=True)
    client, server = write_legs(tmp_path, convs)
    a = wsanalyze.analyze(client, server, strict=True)
    assert len(a.pairs) == 0, "no evidence tells the three apart: a pairing is a guess"
    amb = a.findings[a.findings["code"] == "pair_ambiguous"]
    flagged = {c.strip() for cs in amb["connections"] for c in cs.split(",")}
    client_ids = set(a.connections[a.connections["capture"] == "client"]["connection_id"])
    assert flagged == client_ids


def test_ambiguous_connections_are_not_reported_as_without_server_twin(tmp_path):
    client, server = write_legs(tmp_path, _conversations(identical=True))
    a = wsanalyze.analyze(client, server, strict=True)
    assert (a.findings["code"] == "pair_ambiguous").sum() == 3
    assert not (a.findings["code"] == "proxy_no_server_connection").any()


def test_identical_messages_are_paired_by_a_passed_key(tmp_path):
    convs = _conversations(identical=True, pass_key=True)
    client, server = write_legs(tmp_path, convs)
    a = wsanalyze.analyze(client, server, strict=True)
    assert {r["client"]: r["proxy_source"] for _, r in a.pairs.iterrows()} == _truth(convs)
    assert a.pairs["evidence"].str.contains("sec_websocket_key").all()
    assert not (a.findings["code"] == "pair_ambiguous").any()


# --- a constant shift of the server capture ---------------------------------------------------

SHIFT_US = 2_500_000


@pytest.mark.parametrize("scenario", scenario_names())
def test_shifted_server_capture_changes_only_the_clock_offset(tmp_path, scenario, analysis_of):
    client, server = capture_paths(scenario)
    shifted = shift_pcap(server, tmp_path / "server-shifted.pcap", SHIFT_US)
    base = analysis_of(scenario)
    moved = wsanalyze.analyze(client, shifted, strict=True)

    b, m = base.correlation.clock_offset, moved.correlation.clock_offset
    assert m.estimate_ns - b.estimate_ns == SHIFT_US * 1000
    assert m.low_ns - b.low_ns == SHIFT_US * 1000
    assert m.high_ns - b.high_ns == SHIFT_US * 1000
    assert (m.samples_up, m.samples_down) == (b.samples_up, b.samples_down)

    cols = ["pair_id", "client_connection_id", "server_connection_id", "client", "proxy_source"]
    assert base.pairs[cols].equals(moved.pairs[cols])
    assert base.pairs["score"].equals(moved.pairs["score"])
    assert base.header_changes.equals(moved.header_changes)
    same = [c for c in base.message_matches.columns if c != "server_ts"]
    assert base.message_matches[same].equals(moved.message_matches[same])
    dt = moved.message_matches["server_ts"] - base.message_matches["server_ts"]
    assert (dt.dt.total_seconds() * 1e6 == SHIFT_US).all()

    def findings(a):
        return sorted(zip(a.findings["code"], a.findings["connections"], strict=True))

    assert findings(base) == findings(moved)


def _merge(paths, out):
    """Both legs in one file, records in time order (as `tcpdump -i any` writes them)."""
    import dpkt

    records = []
    for p in paths:
        with open(p, "rb") as fh:
            records.extend(dpkt.pcap.Reader(fh))
    records.sort(key=lambda r: r[0])
    with open(out, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=1, nano=False)
        for ts, buf in records:
            w.writepkt(buf, ts=ts)
    return out


@pytest.mark.parametrize("scenario", ["nginx-ok", "nginx-no-upgrade"])
def test_both_legs_in_one_capture_pair_by_key(tmp_path, scenario):
    """A capture taken on the proxy host (-i any) holds both legs: they pair on the
    shared Sec-WebSocket-Key, with the same header changes and diagnosis as from
    two captures."""
    from conftest import capture_paths

    client, server = capture_paths(scenario)
    one = wsanalyze.analyze(_merge([client, server], tmp_path / "both.pcap"), strict=True)
    two = wsanalyze.analyze(client, server, strict=True)
    assert len(one.pairs) == len(two.pairs) > 0
    assert sorted(one.pairs["client"]) == sorted(two.pairs["client"])
    assert sorted(one.pairs["server"]) == sorted(two.pairs["server"])
    cols = ["message", "change", "name", "client_value", "server_value"]
    key = lambda df: sorted(map(tuple, df[cols].astype(str).values.tolist()))  # noqa: E731
    assert key(one.header_changes) == key(two.header_changes)
    one_codes = set(one.findings["code"])
    assert {c for c in two.findings["code"] if c.startswith("proxy_")} <= one_codes
    assert one.correlation.clock_offset.estimate_ns == 0


def test_one_capture_without_shared_keys_has_no_pairs(tmp_path):
    """Two independent clients of one server look alike; without a shared key they
    are not paired inside one capture."""
    from conftest import capture_paths

    client, _ = capture_paths("nginx-ok")
    a = wsanalyze.analyze(client, strict=True)
    assert a.correlation is None and len(a.pairs) == 0


@pytest.mark.parametrize("scenario", scenario_names())
def test_captures_given_the_wrong_way_round_are_named(scenario, analysis_of):
    """Server capture first: say so (captures_swapped) instead of reporting empty clock
    bounds and reversed header changes; the right order never says it."""
    right = analysis_of(scenario)
    assert "captures_swapped" not in set(right.findings["code"])
    client, server = capture_paths(scenario)
    wrong = wsanalyze.analyze(server, client)
    codes = set(wrong.findings["code"])
    assert len(wrong.pairs) == len(right.pairs) > 0
    assert "captures_swapped" in codes
    assert "proxy_clock_bounds_empty" not in codes


@pytest.mark.parametrize(
    ("scenario", "respelled"),
    [("haproxy-ok", True), ("haproxy-fragmented", True), ("nginx-ok", False), ("apache-ok", False)],
)
def test_header_name_case_changes_are_noted(scenario, respelled, analysis_of):
    """HAProxy lower-cases request header names; nginx and Apache keep them."""
    codes = list(analysis_of(scenario).findings["code"])
    assert ("proxy_header_case_changed" in codes) == respelled


# --- match_messages: the one-for-one shortcut and the greedy match agree ------------------


def _greedy(client_msgs, server_msgs):
    """The greedy matching of match_messages, written plainly: per direction, each
    client message takes the first later server message with its (opcode, digest)."""
    out = []
    for d in (0, 1):
        src = [(i, m) for i, m in enumerate(client_msgs) if m.direction == d]
        dst = [(j, m) for j, m in enumerate(server_msgs) if m.direction == d]
        last = -1
        for i, m in src:
            for pos in range(last + 1, len(dst)):
                j, sm = dst[pos]
                if (sm.opcode, sm.digest) == (m.opcode, m.digest):
                    out.append((d, i, j))
                    last = pos
                    break
    return sorted(out, key=lambda x: client_msgs[x[1]].ts_ns)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.sampled_from([1, 2]), st.integers(0, 3)), max_size=30),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_match_messages_one_for_one_and_otherwise(keys, forwarded, rnd):
    """Random message sequences, forwarded one for one (the shortcut) or with
    messages dropped, injected and swapped (the index): match_messages gives what
    the plain greedy match gives."""
    from wsanalyze.correlate import match_messages
    from wsanalyze.model import Message

    def msg(i, d, op, dg):
        return Message(
            direction=Direction(d), opcode=op, frame_count=1, payload_len=dg,
            digest=bytes([dg]), preview=b"", first_packet=i + 1, last_packet=i + 1,
            first_ts_ns=1000 * i, ts_ns=1000 * i, offset=i,
        )  # fmt: skip

    client = [msg(i, *k) for i, k in enumerate(keys)]
    server_keys = list(keys)
    if not forwarded and server_keys:
        for _ in range(3):
            k = rnd.randrange(len(server_keys))
            what = rnd.randrange(3)
            if what == 0:
                del server_keys[k]
            elif what == 1:
                server_keys.insert(k, (rnd.randrange(2), rnd.choice([1, 2]), rnd.randrange(4)))
            else:
                j = rnd.randrange(len(server_keys))
                server_keys[k], server_keys[j] = server_keys[j], server_keys[k]
            if not server_keys:
                break
    server = [msg(i, *k) for i, k in enumerate(server_keys)]
    got = match_messages(SimpleNamespace(messages=client), SimpleNamespace(messages=server))
    assert [(int(m.direction), m.client_index, m.server_index) for m in got] == _greedy(
        client, server
    )
    for m in got:
        assert m.client_ts_ns == client[m.client_index].ts_ns
        assert m.server_ts_ns == server[m.server_index].ts_ns
