"""End-to-end robustness: damaged captures give a partial analysis plus findings
(exit 0) or one line naming the file (exit 2), never a traceback and never a hang;
pathological inputs are handled by design; an unusable file is a distinct one-line
message naming the file and what to do.

Every run goes through ``wsanalyze.cli.main`` with ``WSANALYZE_DEBUG`` set, so a bug
of ours raises here instead of becoming exit code 3. Sizes are small so the whole
file runs in seconds; ``benchmarks/pathological.py`` runs the same generators at
full size and ``benchmarks/fuzz.py`` fuzzes each decoder on its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import struct
import sys
from pathlib import Path

import pytest

from wsanalyze import cli
from wsanalyze.capture import CaptureReader

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


patho = _load("pathological", "pathological.py")
fuzz = _load("wsfuzz", "fuzz.py")
fuzz.register_targets()

# Small real captures of different kinds (deflate, a sub-protocol, a reset, plain
# HTTP, HTTP/2 behind a proxy) and one with ~200 records.
SOURCES = [
    "nginx-deflate/client.pcap",
    "nginx-k8s-exec/client.pcap",
    "haproxy-server-reset/client.pcap",
    "nginx-no-upgrade/client.pcap",
    "h2/haproxy-h2-rst/server.pcap",
    "nginx-many-clients/client.pcap",
]


@pytest.fixture(autouse=True)
def _debug(monkeypatch):
    monkeypatch.setenv("WSANALYZE_DEBUG", "1")  # an internal error raises


def run(tmp_path: Path, capsys, data: bytes | None = None, path: Path | None = None) -> tuple:
    """``wsanalyze pcap FILE --json OUT -q`` on ``data`` (or ``path``): the exit code
    and the finding codes (exit 0) or the stderr line (exit 2)."""
    if path is None:
        path = tmp_path / "in.pcap"
        path.write_bytes(data or b"")
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    rc = cli.main(["pcap", str(path), "--json", str(out), "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if rc == 2:
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("wsanalyze: "), captured.err
        assert str(path) in lines[0]
        return rc, lines[0]
    assert rc == 0, captured.err
    assert captured.err == ""
    report = json.loads(out.read_text())
    codes = {f["code"] for f in report["findings"]}
    assert "internal_error" not in codes
    return rc, codes


def records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record of a little-endian microsecond pcap."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    out, off = [], 24
    while off + 16 <= len(data):
        n = struct.unpack_from("<I", data, off + 8)[0]
        out.append((off, 16 + n))
        off += 16 + n
    assert off == len(data)
    return out


@pytest.fixture(scope="module", params=SOURCES, ids=lambda s: s.split("/")[-2])
def source(request) -> bytes:
    return (ROOT / "captures" / request.param).read_bytes()


class TestDamagedCaptures:
    """Issue item 4: truncation, bit flips, corrupt record lengths, reordering."""

    def test_truncated_at_any_offset(self, tmp_path, capsys, source):
        recs = records(source)
        rng = random.Random(len(source))
        boundaries = {off for off, _ in recs}
        cuts = set(range(0, 26)) | {o + d for o in sorted(boundaries)[:40] for d in (0, 1, 15, 17)}
        cuts |= {rng.randrange(len(source)) for _ in range(40)}
        for cut in sorted(c for c in cuts if c < len(source)):
            rc, got = run(tmp_path, capsys, source[:cut])
            if cut < 24:
                assert rc == 2  # empty, or a truncated file header
            elif cut in boundaries:
                assert rc == 0 and "capture_truncated_record" not in got, cut
            else:
                assert rc == 0 and "capture_truncated_record" in got, cut

    def test_bit_flips(self, tmp_path, capsys, source):
        rng = random.Random(1)
        recs = records(source)
        for i in range(60):
            data = bytearray(source)
            # half of the flips in the file or record headers, half anywhere
            if i % 2:
                off, _ = rng.choice(recs)
                pos = off + rng.randrange(16)
            else:
                pos = rng.randrange(len(data))
            for _ in range(rng.choice((1, 1, 2, 8))):
                data[pos] ^= 1 << rng.randrange(8)
                pos = min(len(data) - 1, pos + rng.randrange(64))
            run(tmp_path, capsys, bytes(data))

    @pytest.mark.parametrize(
        "length", [0, 1, 13, 65535, 2**31 - 1, 2**31, 2**32 - 1], ids=lambda n: f"len{n}"
    )
    def test_corrupt_record_lengths(self, tmp_path, capsys, source, length):
        recs = records(source)
        for k in sorted({0, 1, len(recs) // 2, len(recs) - 1}):
            off, _ = recs[k]
            for field in (8, 12):  # captured length, original length
                data = bytearray(source)
                struct.pack_into("<I", data, off + field, length)
                rc, got = run(tmp_path, capsys, bytes(data))
                assert rc == 0
                if field == 8 and length > 65535:
                    assert "capture_corrupt_record" in got or "capture_truncated_record" in got

    def test_reordered_records(self, tmp_path, capsys, source):
        head, recs = source[:24], records(source)
        chunks = [source[o : o + n] for o, n in recs]
        rng = random.Random(3)
        orders = [chunks[::-1], chunks[1:] + chunks[:1]]
        for _ in range(6):
            order = chunks[:]
            rng.shuffle(order)
            orders.append(order)
        for _ in range(6):  # neighbours swapped, records duplicated and dropped
            order = chunks[:]
            for _ in range(max(1, len(order) // 5)):
                i = rng.randrange(len(order))
                j = min(len(order) - 1, i + 1)
                order[i], order[j] = order[j], order[i]
                order.insert(rng.randrange(len(order)), rng.choice(chunks))
                del order[rng.randrange(len(order))]
            orders.append(order)
        for order in orders:
            rc, got = run(tmp_path, capsys, head + b"".join(order))
            assert rc == 0


class TestPathologicalInputs:
    """The generators of benchmarks/pathological.py at a small scale: behaviour,
    never time (the full-size figures are in benchmarks/README.md)."""

    def test_huge_frame_length(self, tmp_path, capsys):
        for msb in (False, True):
            path = patho.gen_huge_length(tmp_path / "h.pcap", payload_bytes=200_000, msb=msb)
            rc, got = run(tmp_path, capsys, path=path)
            assert rc == 0 and "ws_frame_truncated" in got
            assert ("ws_length_msb_set" in got) == msb

    def test_tiny_frames(self, tmp_path, capsys):
        path = patho.gen_tiny_frames(tmp_path / "t.pcap", frames=30_000)
        rc, got = run(tmp_path, capsys, path=path)
        assert rc == 0
        report = json.loads((tmp_path / "out.json").read_text())
        (conn,) = report["connections"]
        assert conn["frames"]["server_to_client"]["text"] == 30_000
        assert conn["messages"]["server_to_client"]["text"] == 30_000
        assert conn["messages_not_kept"] == 0

    def test_tiny_frames_beyond_max_messages(self, tmp_path, capsys):
        """The kept messages stop at the limit; the counts and the close do not."""
        path = patho.gen_tiny_frames(tmp_path / "t.pcap", frames=30_000)
        out = tmp_path / "out.json"
        args = ["pcap", str(path), "--json", str(out), "-q", "--max-messages", "1000"]
        assert cli.main(args) == 0
        report = json.loads(out.read_text())
        (conn,) = report["connections"]
        assert conn["messages"]["server_to_client"]["text"] == 30_000
        assert conn["messages_not_kept"] == 30_000 - 1000
        assert conn["close"]["client_to_server"]["code"] == 1000
        assert conn["close_story"]["clean"] is True
        (f,) = [f for f in report["findings"] if f["code"] == "analysis_messages_not_kept"]
        assert "not_kept=29000 messages" in f["detail"]

    @pytest.mark.parametrize("handshake", [False, True], ids=["syn", "handshake"])
    def test_many_connections(self, tmp_path, capsys, handshake, monkeypatch):
        """Empty connections are released (when they end, or beyond max_empty open
        at once) and still counted."""
        import wsanalyze.pipeline as pipeline

        real = pipeline.TcpReassembler
        reassemblers = []

        def reassembler(*args, **kwargs):
            r = real(*args, max_empty=1000, **kwargs)
            reassemblers.append(r)
            return r

        monkeypatch.setattr(pipeline, "TcpReassembler", reassembler)
        path = patho.gen_connections(tmp_path / "c.pcap", connections=5_000, handshake=handshake)
        capture = pipeline.analyze_capture(path, strict=True)
        assert capture.connections == [] and capture.other_connections == 5_000
        (r,) = reassemblers
        assert r.connections == [] if handshake else len(r.connections) <= 1000
        codes = [f.code for f in capture.findings]
        if handshake:  # each ended as it closed: nothing evicted, nothing open
            assert r.released == 5_000 and r.evicted == 0 and codes == []
        else:  # never closed: the oldest evicted beyond 1,000 open
            assert r.evicted >= 4_000 and codes == ["tcp_empty_connections_evicted"]
        rc, got = run(tmp_path, capsys, path=path)
        assert rc == 0 and "internal_error" not in got

    def test_deflate_bomb(self, tmp_path, capsys):
        path = patho.gen_deflate_bomb(tmp_path / "b.pcap", inflated=40 << 20)
        assert path.stat().st_size < 200_000
        rc, got = run(tmp_path, capsys, path=path)
        assert rc == 0 and "ws_deflate_limit_exceeded" in got

    @pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
    def test_4gib_record(self, tmp_path, capsys, fmt):
        gen = patho.gen_record_4g_pcap if fmt == "pcap" else patho.gen_record_4g_pcapng
        path = gen(tmp_path / f"r.{fmt}")  # sparse: 4 GiB long, a few KiB on disk
        rc, got = run(tmp_path, capsys, path=path)
        assert rc == 0 and "capture_corrupt_record" in got
        report = json.loads((tmp_path / "out.json").read_text())
        assert report["captures"][0]["packets"] == 3  # the good records before it


class TestUnusableFiles:
    """Issue item 5: each unusable file is its own one-line message naming the file
    and what to do, and exit code 2."""

    def _error(self, tmp_path, capsys, path: Path) -> str:
        rc, line = run(tmp_path, capsys, path=path)
        assert rc == 2
        return line.replace(str(path), "FILE")

    def test_messages(self, tmp_path, capsys):
        files = {}
        (tmp_path / "text.pcap").write_text("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        files["not a capture"] = tmp_path / "text.pcap"
        files["unsupported link type"] = tiny_pcap(tmp_path / "wifi.pcap", linktype=127)
        files["directory"] = tmp_path
        files["missing"] = tmp_path / "missing.pcap"
        (tmp_path / "empty.pcap").write_bytes(b"")
        files["empty"] = tmp_path / "empty.pcap"
        (tmp_path / "short.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
        files["truncated header"] = tmp_path / "short.pcap"
        files["pcapng without interface"] = pcapng_without_idb(tmp_path / "noidb.pcapng")
        lines = {what: self._error(tmp_path, capsys, p) for what, p in files.items()}
        assert "link type 127 (IEEE 802.11 radiotap)" in lines["unsupported link type"]
        assert "is a directory" in lines["directory"]
        assert "Interface Description Block" in lines["pcapng without interface"]
        assert "not a pcap or pcapng file" in lines["not a capture"]
        assert len(set(lines.values())) == len(lines)  # distinct
        for line in lines.values():  # after naming the file, what to do
            assert re.search(r"FILE'? .+[:;] \S", line), line

    def test_permission_denied(self, tmp_path, capsys, monkeypatch):
        path = tiny_pcap(tmp_path / "secret.pcap", linktype=1)
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads a mode-000 file: simulate the refusal
            import wsanalyze.capture

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied", str(path))

            monkeypatch.setattr(wsanalyze.capture, "open", refuse, raising=False)
        try:
            line = self._error(tmp_path, capsys, path)
        finally:
            path.chmod(0o644)
        assert "permission denied" in line


def tiny_pcap(path: Path, *, linktype: int) -> Path:
    """A pcap file header of ``linktype`` and one 60-byte record."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    path.write_bytes(header + struct.pack("<IIII", 1, 0, 60, 60) + bytes(60))
    return path


def pcapng_without_idb(path: Path) -> Path:
    """A Section Header Block then an Enhanced Packet Block naming interface 0,
    which no Interface Description Block describes."""

    def block(btype: int, body: bytes) -> bytes:
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    frame = patho.tcp_packet(patho.CLIENT, patho.SERVER, 1, 1, patho.ACK, b"x")
    frame += bytes(-len(frame) % 4)
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    epb = block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(shb + epb)
    return path


class TestByteAccount:
    """Regressions found by benchmarks/fuzz.py (target ``pipeline``): every byte of
    each direction is accounted for (decoded + undecodable + other == TCP bytes)."""

    @staticmethod
    def _analyse(tmp_path: Path, request: bytes, response: bytes, after: list) -> object:
        from wsanalyze.pipeline import analyze_capture

        with patho.PcapWriter(tmp_path / "a.pcap") as w:
            flow = patho.Flow(w)
            flow.open()
            flow.send("c", request)
            flow.send("s", response)
            for frm, data in after:
                flow.send(frm, data)
            flow.close()
        (conn,) = analyze_capture(tmp_path / "a.pcap", strict=True).connections
        for d in (0, 1):
            acct = conn.bytes[d]
            assert acct.decoded + acct.undecodable + acct.other == conn.tcp.bytes[d], d
        return conn

    SWITCH = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )

    def test_101_to_a_malformed_upgrade_request(self, tmp_path):
        # the request head does not parse, so no handshake: the frames after the
        # 101 were held by the response parser and counted nowhere
        request = (
            b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-K\x00: x\r\n\r\n"
        )
        conn = self._analyse(tmp_path, request, self.SWITCH + b"\x82\x04\x20\x02\x00\x00", [])
        assert conn.bytes[1].undecodable == 6

    def test_101_to_another_protocol(self, tmp_path):
        # a 101 switching a WebSocket request to another protocol: the heads were
        # never counted, nor the bytes held after them
        request = (
            b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/2\r\nConnection: Upgrade\r\n\r\n"
        )
        conn = self._analyse(
            tmp_path, request, response + b"tail", [("c", b"client bytes"), ("s", b"more")]
        )
        assert conn.bytes[0].other == len(b"client bytes")
        assert conn.bytes[1].other == len(b"tailmore")
        assert (conn.bytes[0].decoded, conn.bytes[1].decoded) == (len(request), len(response))


class TestFuzzRegressions:
    """Other failures benchmarks/fuzz.py found, reduced to their cause."""

    @pytest.mark.parametrize("output", ["--json", "--html", "--markdown"])
    def test_pcapng_timestamps_beyond_2262(self, tmp_path, capsys, output):
        # target pipeline (atheris): an if_tsresol of 6 on nanosecond timestamps put
        # the packets in the year 55840; every report failed (ValueError in
        # report.iso, OverflowError in tables): exit 3
        fuzz.load()
        records = [(t, fuzz.link(ip, 1)) for t, ip in fuzz.conversation(fuzz.ws_session())]
        good = fuzz.pcapng(records, tsresol=9)
        bad = bytearray(good)
        i = bad.find(bytes([9, 0, 1, 0, 9]))  # the IDB's if_tsresol option: 10^-9
        bad[i + 4] = 6  # 10^-6: every timestamp 1000 times too large
        path = tmp_path / "future.pcapng"
        path.write_bytes(bytes(bad))
        out = tmp_path / "report"
        rc = cli.main(["pcap", str(path), output, str(out), "-q"])
        assert rc == 0 and capsys.readouterr().err == ""
        # the reader skips such packets, and says so
        reader = CaptureReader.from_bytes(bytes(bad))
        assert list(reader) == [] and reader.packets == len(records)
        (f,) = reader.findings
        assert f.code == "capture_timestamp_out_of_range"
        assert f"{len(records)} pcapng packet(s)" in f.detail

    def test_frame_length_with_msb_set_in_the_tables(self, tmp_path, capsys):
        # target pipeline: a frame declaring 2^64-1 bytes (RFC 6455 §5.2 forbids the
        # MSB) broke the int64 columns of the frames and messages tables, so the
        # HTML report exited 3
        import wsanalyze

        path = patho.gen_huge_length(tmp_path / "msb.pcap", payload_bytes=5000, msb=True)
        tables = wsanalyze.analyze(path, strict=True).tables()
        assert tables["frames"]["payload_bytes"].max() == 2**63 - 1  # clipped
        assert tables["messages"]["payload_bytes"].max() == 2**63 - 1
        assert cli.main(["pcap", str(path), "--html", str(tmp_path / "r.html"), "-q"]) == 0
        assert capsys.readouterr().err == ""

    def test_h2_end_of_padded_data_cut_before_its_padding(self):
        # target http2: the empty END_STREAM event that ends a padded DATA frame cut
        # (by a segment boundary or a gap) before its padding had data_offset after
        # the padding, not after the data
        from wsanalyze.http2 import PREFACE, H2Data, H2DataGap, Http2Connection
        from wsanalyze.model import Direction

        def frame(t: int, flags: int, sid: int, payload: bytes) -> bytes:
            return (
                len(payload).to_bytes(3, "big")
                + bytes([t, flags])
                + sid.to_bytes(4, "big")
                + payload
            )

        data = frame(0, 0x08 | 0x01, 1, bytes([5]) + b"hello" + bytes(5))  # PADDED, END_STREAM
        h2 = Http2Connection(mode="prior_knowledge")
        h2.feed(Direction.CLIENT_TO_SERVER, PREFACE + frame(4, 0, 0, b""), 1, 1)
        events = h2.feed(Direction.SERVER_TO_CLIENT, frame(4, 0, 0, b""), 1, 2)
        for piece in (data[:15], data[15:]):
            events += h2.feed(Direction.SERVER_TO_CLIENT, piece, 1, 3)
        got = [(e.data, e.end_stream, e.data_offset) for e in events if isinstance(e, H2Data)]
        assert got == [(b"hello", False, 19), (b"", True, 24)]
        # the same when a gap takes the end of the data and the padding
        h2 = Http2Connection(mode="prior_knowledge")
        h2.feed(Direction.CLIENT_TO_SERVER, PREFACE + frame(4, 0, 0, b""), 1, 1)
        events = h2.feed(Direction.SERVER_TO_CLIENT, frame(4, 0, 0, b"") + data[:12], 1, 2)
        events += h2.gap(Direction.SERVER_TO_CLIENT, 8, 1, 3)
        got = [
            (type(e).__name__, getattr(e, "data_offset", None), getattr(e, "length", None))
            for e in events
            if isinstance(e, H2Data | H2DataGap)
        ]
        assert got == [("H2Data", 19, None), ("H2DataGap", None, 3), ("H2Data", 24, None)]


@pytest.mark.parametrize("target", list(fuzz.TARGETS))
def test_fuzz_target_short_run(target):
    """Each target of benchmarks/fuzz.py, its seeds then mutations (1,500 inputs in
    all): the harness keeps working and nothing fails. The large runs are
    ``python benchmarks/fuzz.py`` (figures in benchmarks/README.md)."""
    fuzz.load()
    result = fuzz.run_mutate(target, runs=1500, seed=1, slow=60.0, save=False)
    assert result["inputs"] == 1500
    assert result["failures"] == 0, result["distinct"]
