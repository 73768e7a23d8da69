"""The memory limit on kept messages (``max_messages``): on the committed real
captures, a small limit keeps what it says, counts the rest, keeps the close story,
leaves pairing alone and invents no proxy behaviour; the CLI option and its errors."""

from __future__ import annotations

import json

import pytest
from conftest import capture_paths

from wsanalyze import analyze, report
from wsanalyze.cli import main
from wsanalyze.closing import story_of
from wsanalyze.model import Opcode
from wsanalyze.pipeline import MAX_MESSAGES, analyze_capture

SCENARIO = "nginx-many-clients"  # 12 proxied WebSockets, 120 messages per leg


def _closes(conn) -> int:
    return sum(1 for m in conn.messages if m.opcode == Opcode.CLOSE)


@pytest.fixture(scope="module")
def full():
    return analyze(*capture_paths(SCENARIO), strict=True)


@pytest.fixture(scope="module")
def cut():
    return analyze(*capture_paths(SCENARIO), strict=True, max_messages=40)


def test_default_limit_keeps_everything_of_a_normal_capture(full):
    assert MAX_MESSAGES == 1_000_000
    assert not any(f.code == "analysis_messages_not_kept" for f in full.finding_list)
    for cap in full.captures:
        assert all(c.messages_not_kept is None for c in cap.connections)
        assert sum(len(c.messages) for c in cap.connections) == 120


def test_a_small_limit_keeps_that_many_messages_and_frames_plus_the_closes(full, cut):
    for cap_full, cap_cut in zip(full.captures, cut.captures, strict=True):
        kept = sum(len(c.messages) for c in cap_cut.connections)
        not_kept = sum(sum((c.messages_not_kept or {}).values()) for c in cap_cut.connections)
        closes_after = sum(
            _closes(c) for c in cap_cut.connections if c.messages_not_kept
        )  # close messages kept beyond the limit
        assert kept + not_kept == 120
        assert 40 <= kept <= 40 + closes_after
        assert len(cap_cut.frames) == 40
        # the kept messages are the capture's first 40, in time order, and identical
        first = sorted(
            (m for c in cap_full.connections for m in c.messages), key=lambda m: m.first_packet
        )[:40]
        kept_msgs = {(m.first_packet, m.digest) for c in cap_cut.connections for m in c.messages}
        assert {(m.first_packet, m.digest) for m in first} <= kept_msgs
        for c_full, c_cut in zip(cap_full.connections, cap_cut.connections, strict=True):
            # frames are counted whether kept or not; so are messages, per opcode
            assert c_cut.frame_counts == c_full.frame_counts
            counts = {}
            for m in c_cut.messages:
                key = (int(m.direction), m.opcode)
                counts[key] = counts.get(key, 0) + 1
            for key, n in (c_cut.messages_not_kept or {}).items():
                counts[key] = counts.get(key, 0) + n
            full_counts = {}
            for m in c_full.messages:
                key = (int(m.direction), m.opcode)
                full_counts[key] = full_counts.get(key, 0) + 1
            assert counts == full_counts
            # the close frames, hence the close story, survive the limit
            assert _closes(c_cut) == _closes(c_full) == 2
            assert story_of(c_cut).as_json(ts=str) == story_of(c_full).as_json(ts=str)


def test_the_finding_says_what_was_not_kept(cut):
    found = [f for f in cut.finding_list if f.code == "analysis_messages_not_kept"]
    assert [f.capture for f in found] == ["client", "server"]
    for f, cap in zip(found, cut.captures, strict=True):
        not_kept = sum(sum((c.messages_not_kept or {}).values()) for c in cap.connections)
        assert "max_messages=40: kept=" in f.detail
        assert f"not_kept={not_kept} messages" in f.detail
        first = min(
            p
            for c in cap.connections
            for p in [m.first_packet for m in c.messages]
            if c.messages_not_kept
        )
        assert f.packets and f.packets[0] > first  # the first message not kept is later
        assert f.connections == ()  # capture-wide, so that filters keep it
        n = sum(1 for c in cap.connections if c.messages_not_kept)
        assert f.detail.endswith(f"on {n} connection(s)") and n > 1


def test_pairing_is_unchanged_and_no_behaviour_is_invented(full, cut):
    assert [(p.client.id, p.server.id) for p in cut.correlation.pairs] == [
        (p.client.id, p.server.id) for p in full.correlation.pairs
    ]
    codes_full = {f.code for f in full.finding_list}
    codes_cut = {f.code for f in cut.finding_list} - {"analysis_messages_not_kept"}
    assert codes_cut == codes_full  # no message "dropped" or "injected" by the limit
    matched = sum(len(p.matches) for p in cut.correlation.pairs)
    assert 0 < matched < sum(len(p.matches) for p in full.correlation.pairs)


def test_json_counts_every_message_and_says_how_many_were_not_kept(full, cut, check_report):
    doc_full = report.to_json(full)
    doc_cut = report.to_json(cut)
    check_report(doc_cut)
    for a, b in zip(doc_full["connections"], doc_cut["connections"], strict=True):
        assert a["messages"] == b["messages"] and a["frames"] == b["frames"]
        assert a["close"] == b["close"]
        assert a["messages_not_kept"] == 0
    assert sum(c["messages_not_kept"] for c in doc_cut["connections"]) == sum(
        sum((c.messages_not_kept or {}).values()) for cap in cut.captures for c in cap.connections
    )


def test_zero_means_no_limit(tmp_path):
    client, _ = capture_paths(SCENARIO)
    a = analyze_capture(client, max_messages=0)
    b = analyze_capture(client, max_messages=None)
    assert sum(len(c.messages) for c in a.connections) == 120
    assert len(a.frames) == len(b.frames)


def test_cli_option(tmp_path, capsys):
    client, server = capture_paths(SCENARIO)
    out = tmp_path / "r.json"
    assert main(["pcap", str(client), str(server), "--max-messages", "40", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [f["capture"] for f in doc["findings"] if f["code"] == "analysis_messages_not_kept"] == [
        "client",
        "server",
    ]
    assert "analysis_messages_not_kept" in capsys.readouterr().out
    for bad in ("-1", "many"):
        assert main(["pcap", str(client), "--max-messages", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--max-messages" in err and "not a count" in err


def test_api_rejects_a_negative_limit():
    with pytest.raises(ValueError, match="max_messages"):
        analyze(capture_paths(SCENARIO)[0], max_messages=-1)


def test_connections_table_counts_every_message(full, cut):
    cols = ["client_to_server_frames", "server_to_client_frames"]
    cols += ["client_to_server_messages", "server_to_client_messages"]
    assert (cut.connections[cols].values == full.connections[cols].values).all()
    assert len(cut.messages) < len(full.messages) and len(cut.frames) == 2 * 40
