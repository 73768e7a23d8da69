"""What the proxy did to messages (wsanalyze.behaviour): dropped, injected, modified,
re-fragmented, coalesced and split messages, pings answered by the proxy, and one
server message fanned out to many connections. Each on a crafted two-leg capture;
assertions are on counts and codes, not wording."""

from __future__ import annotations

from craft import BINARY, PING, PONG, TEXT, ProxiedLegs, write_legs, ws_frame

import wsanalyze
from wsanalyze import catalogue
from wsanalyze.behaviour import (
    BEHAVIOUR,
    KINDS,
    behaviour_findings,
    behaviour_table,
    fan_out,
    fan_out_findings,
    pair_behaviour,
)
from wsanalyze.model import Direction, Severity

D = 200  # µs the proxy takes to forward
CODES = {
    "proxy_message_injected",
    "proxy_message_modified",
    "proxy_message_refragmented",
    "proxy_messages_coalesced",
    "proxy_message_split",
    "proxy_answers_pings",
    "server_fan_out",
}


class Legs(ProxiedLegs):
    """ProxiedLegs plus one-call messages: ``c2s``/``s2c`` send ``payload`` on the
    source leg and ``copy`` (None: nothing) on the destination leg ``D`` µs later."""

    def c2s(self, payload: bytes, us: int, copy: bytes | None = b"same", opcode=TEXT) -> None:
        self.frame("c", "c", opcode, payload, us)
        if copy is not None:
            self.frame("s", "c", opcode, payload if copy == b"same" else copy, us + D)

    def s2c(self, payload: bytes, us: int, copy: bytes | None = b"same", opcode=TEXT) -> None:
        self.frame("s", "s", opcode, payload, us)
        if copy is not None:
            self.frame("c", "s", opcode, payload if copy == b"same" else copy, us + D)


def _run(tmp_path, *convs, keep_payloads=False):
    client, server = write_legs(tmp_path, convs)
    return wsanalyze.analyze(client, server, strict=True, keep_payloads=keep_payloads)


def _one(tmp_path, script, keep_payloads=False):
    legs = Legs(1)
    t = legs.websocket(messages=1, delay_us=D)
    script(legs, t + 10_000)
    a = _run(tmp_path, legs, keep_payloads=keep_payloads)
    assert len(a.correlation.pairs) == 1
    pair = a.correlation.pairs[0]
    b = pair_behaviour(pair)
    return pair, b, {f.code for f in behaviour_findings(pair, b)}


def _counts(b, d: Direction) -> dict[str, int]:
    return {k: v for k, v in b.of(d).counts().items() if v}


C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT


def test_codes_are_catalogued():
    assert CODES <= set(catalogue.CATALOGUE)
    assert catalogue.CATALOGUE["proxy_message_refragmented"].severity == Severity.INFO
    assert catalogue.CATALOGUE["proxy_answers_pings"].severity == Severity.INFO
    assert catalogue.CATALOGUE["server_fan_out"].severity == Severity.INFO


def test_a_faithful_proxy_shows_nothing(tmp_path):
    def script(legs, t):
        legs.c2s(b"a", t)
        legs.s2c(b"b", t + 1_000)
        legs.c2s(b"\x00\x01", t + 2_000, opcode=BINARY)

    pair, b, codes = _one(tmp_path, script)
    assert _counts(b, C2S) == {} and _counts(b, S2C) == {}
    assert codes == set()
    assert len(pair.matches) >= 5


def test_dropped_is_counted_but_left_to_diagnose_by_default(tmp_path):
    def script(legs, t):
        legs.c2s(b"one", t)
        legs.c2s(b"two", t + 1_000, copy=None)
        legs.c2s(b"three", t + 2_000)

    pair, b, codes = _one(tmp_path, script)
    assert _counts(b, C2S) == {"dropped": 1}
    assert codes == set()
    ev = b.of(C2S).dropped[0]
    assert ev.capture == "client" and ev.destination == ()
    assert pair.client.messages[ev.source[0]].preview == b"two"
    both = {f.code for f in behaviour_findings(pair, b, dropped=True)}
    assert both == {"proxy_message_not_forwarded"}


def test_injected(tmp_path):
    def script(legs, t):
        legs.s2c(b"one", t)
        legs.frame("c", "s", TEXT, b"maintenance at 22:00", t + 1_000)  # proxy only
        legs.s2c(b"two", t + 2_000)

    pair, b, codes = _one(tmp_path, script)
    assert _counts(b, S2C) == {"injected": 1}
    assert codes == {"proxy_message_injected"}
    (f,) = behaviour_findings(pair, b)
    assert f.capture == "client" and f.direction == S2C
    assert f.connections[0] == pair.client.id
    assert pair.client.messages[b.of(S2C).injected[0].destination[0]].first_packet in f.packets


def test_modified_is_not_dropped_plus_injected(tmp_path):
    def script(legs, t):
        legs.c2s(b"before", t)
        legs.c2s(b'{"amount": 10}', t + 1_000, copy=b'{"amount": 99}')
        legs.c2s(b"after", t + 2_000)

    _pair, b, codes = _one(tmp_path, script)
    assert _counts(b, C2S) == {"modified": 1}
    assert codes == {"proxy_message_modified"}


def test_refragmented_is_info(tmp_path):
    def script(legs, t):
        frames = ws_frame(TEXT, b"hello ", fin=False) + ws_frame(0, b"world")
        legs.send("s", "s", frames, t)
        legs.frame("c", "s", TEXT, b"hello world", t + D)

    pair, b, codes = _one(tmp_path, script)
    assert _counts(b, S2C) == {"refragmented": 1}
    assert codes == {"proxy_message_refragmented"}
    assert {f.severity for f in behaviour_findings(pair, b)} == {Severity.INFO}


def _coalesce(legs, t):
    legs.c2s(b"ab", t, copy=None)
    legs.c2s(b"cd", t + 1_000, copy=None)
    legs.c2s(b"ef", t + 2_000, copy=None)
    legs.frame("s", "c", TEXT, b"abcdef", t + 2_000 + D)
    legs.c2s(b"end", t + 3_000)


def test_coalesced_by_lengths(tmp_path):
    _pair, b, codes = _one(tmp_path, _coalesce)
    assert _counts(b, C2S) == {"coalesced": 1}
    ev = b.of(C2S).coalesced[0]
    assert len(ev.source) == 3 and len(ev.destination) == 1
    assert ev.verified is None
    assert codes == {"proxy_messages_coalesced"}


def test_coalesced_verified_with_payloads(tmp_path):
    _pair, b, _codes = _one(tmp_path, _coalesce, keep_payloads=True)
    assert b.of(C2S).coalesced[0].verified is True


def test_lengths_that_add_up_but_other_bytes_are_not_coalesced(tmp_path):
    def script(legs, t):
        legs.c2s(b"ab", t, copy=None)
        legs.c2s(b"cd", t + 1_000, copy=None)
        legs.frame("s", "c", TEXT, b"wxyz", t + 1_000 + D)

    _pair, b, _codes = _one(tmp_path, script, keep_payloads=True)
    assert _counts(b, C2S) == {"modified": 1, "dropped": 1}


def test_split(tmp_path):
    def script(legs, t):
        legs.s2c(b"hello world", t, copy=None)
        legs.frame("c", "s", TEXT, b"hello ", t + D)
        legs.frame("c", "s", TEXT, b"world", t + D + 100)

    _pair, b, codes = _one(tmp_path, script)
    assert _counts(b, S2C) == {"split": 1}
    assert len(b.of(S2C).split[0].destination) == 2
    assert codes == {"proxy_message_split"}


def test_pings_answered_by_the_proxy(tmp_path):
    def script(legs, t):
        legs.frame("c", "c", PING, b"p1", t)  # client ping, proxy answers
        legs.frame("c", "s", PONG, b"p1", t + 50)
        legs.c2s(b"p2", t + 1_000, opcode=PING)  # forwarded, server answers
        legs.s2c(b"p2", t + 1_000 + 2 * D, opcode=PONG)

    pair, b, codes = _one(tmp_path, script)
    assert _counts(b, C2S) == {"pings_answered_by_proxy": 1}
    assert _counts(b, S2C) == {}
    ev = b.of(C2S).pings_answered_by_proxy[0]
    assert pair.client.messages[ev.source[0]].preview == b"p1"
    assert codes == {"proxy_answers_pings"}


def test_close_forwarded(tmp_path):
    legs = Legs(1)
    t = legs.websocket(messages=1, delay_us=D)
    legs.close("c", "c", 1000, b"bye", t + 1_000)
    legs.close("s", "c", 1000, b"bye", t + 1_000 + D)
    legs.close("s", "s", 1000, b"bye", t + 2_000)
    legs.close("c", "s", 1001, b"going", t + 2_000 + D)
    a = _run(tmp_path, legs)
    b = pair_behaviour(a.correlation.pairs[0])
    assert b.of(C2S).close_forwarded is True
    assert b.of(S2C).close_forwarded is False
    assert all(v == 0 for v in b.of(S2C).counts().values())  # close is not a data message


def test_table_schema(tmp_path):
    def script(legs, t):
        legs.c2s(b"one", t)
        legs.c2s(b"two", t + 1_000, copy=None)

    legs = Legs(1)
    script(legs, legs.websocket(messages=1, delay_us=D) + 10_000)
    a = _run(tmp_path, legs)
    df = behaviour_table(a.correlation)
    assert list(df.columns) == list(BEHAVIOUR)
    assert len(df) == 2
    assert str(df["direction"].dtype) == "category"
    for k in KINDS:
        assert str(df[k].dtype) == "int64"
    row = df[df["direction"] == "client_to_server"].iloc[0]
    assert row["dropped"] == 1 and row["pair_id"] == a.correlation.pairs[0].id
    assert len(behaviour_table(None)) == 0


# --- fan-out --------------------------------------------------------------------------


def _fan(tmp_path, n_conns: int, step_us: int):
    tmp_path.mkdir(exist_ok=True)
    convs = []
    for n in range(1, n_conns + 1):
        legs = Legs(n)
        t = legs.websocket(messages=1, delay_us=D)
        push = 60_000 + n * step_us
        legs.frame("s", "s", TEXT, b'{"update": 42}', push)
        legs.frame("c", "s", TEXT, b'{"update": 42}', push + D + 300 * n)  # n=last slowest
        assert t < 60_000
        convs.append(legs)
    return _run(tmp_path, *convs)


def test_fan_out_over_six_connections(tmp_path):
    a = _fan(tmp_path, 6, 500)
    assert len(a.correlation.pairs) == 6
    (fo,) = fan_out(a.correlation)
    assert len(fo.connections) == 6 and fo.delivered == 6
    assert fo.preview == b'{"update": 42}'
    assert fo.spread_ns == 5 * 500_000
    assert fo.delay_max_ns - fo.delay_min_ns == 5 * 300_000
    slowest = max(a.correlation.pairs, key=lambda p: p.client.tcp.client.port)
    assert fo.slowest_pair_id == slowest.id
    (f,) = fan_out_findings([fo])
    assert f.code == "server_fan_out" and f.severity == Severity.INFO
    assert f.capture == "server" and len(f.packets) == 6
    # per pair, the copies are faithful: no behaviour finding
    for p in a.correlation.pairs:
        assert behaviour_findings(p, pair_behaviour(p)) == []


def test_no_fan_out_on_few_connections_or_spread_out(tmp_path):
    assert fan_out(_fan(tmp_path / "a", 2, 500).correlation) == []
    assert fan_out(_fan(tmp_path / "b", 6, 100_000).correlation) == []  # 100 ms apart


def test_echoes_of_the_same_message_are_not_a_fan_out(tmp_path):
    convs = []
    for n in range(1, 7):
        legs = Legs(n)
        t = legs.websocket(messages=1, delay_us=D)
        legs.c2s(b"hello", t + 10_000 + n)
        legs.s2c(b"hello", t + 10_000 + n + 2 * D)
        convs.append(legs)
    a = _run(tmp_path, *convs)
    assert len(a.correlation.pairs) == 6
    assert fan_out(a.correlation) == []
