"""A large body through several ranged connections at once (http.ParallelReader): in order, in
bounded memory, every failure raised where reading gets to it, and the workers gone after."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import cmdline, http
from bootc_live.runtime.blobs import Descriptor, VerifyingReader
from bootc_live.runtime.boot import fetch_policy
from bootc_live.runtime.http import (
    Client,
    FetchError,
    NoRangeResume,
    ParallelReader,
    Policy,
    RangeReader,
    Retrier,
    open_range,
)
from servers import Faulty, faulty, nginx, range_of

FAST = Policy(retries=3, stall=5, max_backoff=0.01)
PART = 16 << 10
DATA = os.urandom(40 * PART + 123)
MEDIA = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 16 KiB in pieces of 4 KiB: many parts from a small body."""
    monkeypatch.setattr(http, "PART", PART)
    monkeypatch.setattr(http, "PIECE", 4 << 10)
    monkeypatch.setattr(http, "PARALLEL_MIN", 4 * PART)


@pytest.fixture(scope="module")
def server() -> Iterator[Faulty]:
    with faulty(DATA, lambda _n, _start: None) as srv:
        yield srv


def client(url: str, log: list[str] | None = None, connections: int = 4) -> Client:
    policy = Policy(retries=3, stall=5, max_backoff=0.01, connections=connections)
    return Client(url, policy, (log if log is not None else []).append)


def read_all(reader: http.Reader, sizes: list[int]) -> bytes:
    out = bytearray()
    i = 0
    while data := reader.read(sizes[i % len(sizes)] if sizes else -1):
        out += data
        i += 1
    return bytes(out)


def read_exactly(reader: http.Reader, n: int) -> bytes:
    out = bytearray()
    while len(out) < n and (data := reader.read(n - len(out))):
        out += data
    return bytes(out)


def workers_end(reader: ParallelReader, within: float = 10) -> None:
    """Every worker thread of `reader` ends within `within` seconds."""
    for worker in reader._workers:
        worker.join(timeout=within)
        assert not worker.is_alive(), "a worker outlived close()"


def ranges(srv: Faulty) -> list[tuple[int, int]]:
    """[start, end) of every ranged request the server got."""
    return [range_of(header) for _status, header in srv.log]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.integers(0, 3 * PART),
    length=st.integers(4 * PART + 1, 30 * PART),
    connections=st.integers(2, 6),
    sizes=st.lists(st.integers(1, 3 * PART), max_size=5),
)
def test_the_body_comes_whole_and_in_order(
    server: Faulty, start: int, length: int, connections: int, sizes: list[int]
) -> None:
    server.log.clear()
    c = client(server.url(), connections=connections)
    with open_range(c, start, start + length, Retrier(c.url, c.policy, c.log)) as reader:
        assert isinstance(reader, ParallelReader)
        assert read_all(reader, sizes) == DATA[start : start + length]
        workers = list(reader._workers)
    # Asked in parts of PART bytes, each once, covering the body exactly.
    asked = sorted(ranges(server))
    assert asked == [(a, min(a + PART, start + length)) for a in range(start, start + length, PART)]
    assert len(workers) == min(connections, len(asked))
    for worker in workers:
        worker.join(timeout=10)
        assert not worker.is_alive()


def test_small_bodies_and_one_connection_take_one_request(server: Faulty) -> None:
    c = client(server.url())
    assert isinstance(open_range(c, 0, 4 * PART, Retrier(c.url, FAST, c.log)), RangeReader)
    one = client(server.url(), connections=1)
    assert isinstance(open_range(one, 0, len(DATA), Retrier(c.url, FAST, c.log)), RangeReader)


def test_memory_stays_within_the_window(server: Faulty) -> None:
    """A reader that stops after its first bytes: the workers fetch `connections` parts ahead
    of the one being read, then wait; no other request is made."""
    server.log.clear()
    c = client(server.url(), connections=3)
    reader = ParallelReader(c, 0, len(DATA), 3)
    try:
        assert read_exactly(reader, 100) == DATA[:100]
        for part in list(reader._ahead):
            assert part.done.wait(10)
        held = sum(
            len(p) for part in [reader._reading, *reader._ahead] if part for p in part.pieces
        )
        assert len(server.log) == 1 + 3, server.log  # the part being read and three ahead
        assert held <= 4 * PART
        assert read_exactly(reader, PART) == DATA[100 : 100 + PART]  # on into the next part
    finally:
        reader.close()
    workers_end(reader)


def test_a_failing_part_stops_the_read_where_it_starts(tmp_path: Path) -> None:
    bad = 5 * PART

    def plan(_n: int, start: int) -> tuple[int, dict[str, str], bytes, None] | None:
        return (404, {}, b"gone", None) if start == bad else None

    with faulty(DATA, plan) as srv:
        c = client(srv.url())
        reader = ParallelReader(c, 0, len(DATA), 4)
        got = bytearray()
        with pytest.raises(FetchError, match=r"/root\.oci: HTTP 404") as err:
            while data := reader.read(PART // 3):
                got += data
        workers_end(reader)
    assert bytes(got) == DATA[:bad]  # every byte before the failed part, none after
    assert err.value.status == 404
    # ... and at every read after: a verifying reader draining the rest says why, not "truncated".
    desc = Descriptor(MEDIA, "sha256:" + hashlib.sha256(DATA).hexdigest(), len(DATA))
    verifying = VerifyingReader(reader, desc, "layer 1/1")  # type: ignore[arg-type]
    with pytest.raises(FetchError, match=r"/root\.oci: HTTP 404") as again:
        verifying.finish()
    assert again.value is err.value


def test_a_failure_of_the_one_connection_is_kept() -> None:
    """The server ignores Range; the one connection that takes over breaks while skipping what
    was handed on, and its resume fails until the retries are spent. That error comes at this
    read and every read after, even once the server would answer again: the skip never
    finished, so no byte may follow from that connection."""
    from_zero = [0]
    busy = [0]

    def plan(_n: int, start: int) -> tuple[int, dict[str, str], bytes, int | None] | None:
        if start == 0:
            from_zero[0] += 1
            return (200, {}, DATA, None if from_zero[0] == 1 else 1000)  # the 2nd: cut
        if start == 1000 and busy[0] < 4:  # the first try and FAST's three retries
            busy[0] += 1
            return (503, {}, b"busy", None)
        if start == 1000:
            return None  # then the server would answer the resume (206)
        return (200, {}, DATA, None)  # parts after the first: Range ignored

    log: list[str] = []
    with faulty(DATA, plan) as srv:
        reader = ParallelReader(client(srv.url(), log), 0, len(DATA), 4)
        assert read_exactly(reader, PART) == DATA[:PART]  # the first part, from its 200
        with pytest.raises(FetchError, match=r"HTTP 503 .*giving up after 3 retries") as err:
            reader.read(PART)
        with pytest.raises(FetchError) as again:
            reader.read(PART)
        assert again.value is err.value
        workers_end(reader)
    assert any("the server ignores Range; the rest through one connection" in x for x in log)


def test_close_ends_a_worker_in_its_backoff() -> None:
    """A part answered 503 with Retry-After: 30: its worker waits to retry; close() ends the
    wait (a stopped reader's parts are not wanted)."""

    def plan(_n: int, start: int) -> tuple[int, dict[str, str], bytes, None] | None:
        return (503, {"Retry-After": "30"}, b"busy", None) if start >= 2 * PART else None

    log: list[str] = []
    with faulty(DATA, plan) as srv:
        reader = ParallelReader(client(srv.url(), log), 0, len(DATA), 4)
        assert read_exactly(reader, PART) == DATA[:PART]
        waited = threading.Event()
        for _ in range(1000):  # a worker is in its backoff (10 s at most)
            if any("retry 1 in 30.0s" in x for x in log):
                break
            waited.wait(0.01)
        assert any("retry 1 in 30.0s" in x for x in log), log
        reader.close()
        workers_end(reader, within=5)


def test_a_part_cut_short_is_resumed() -> None:
    cut_once: set[int] = set()

    def plan(_n: int, start: int) -> tuple[int, dict[str, str], bytes, int] | None:
        if start == 7 * PART and start not in cut_once:
            cut_once.add(start)
            headers = {"Content-Range": f"bytes {start}-{start + PART - 1}/{len(DATA)}"}
            return (206, headers, DATA[start : start + PART], 1000)
        return None

    log: list[str] = []
    with faulty(DATA, plan) as srv:
        c = client(srv.url(), log)
        with ParallelReader(c, 0, len(DATA), 4) as reader:
            assert read_all(reader, [PART]) == DATA
        resumed = [h for s, h in srv.log if h.startswith(f"bytes={7 * PART + 1000}-")]
    assert resumed == [f"bytes={7 * PART + 1000}-{8 * PART - 1}"]
    assert any("connection broke at byte" in line for line in log), log


def test_a_server_that_ignores_range_gives_the_body_through_one_connection() -> None:
    def plan(_n: int, _start: int) -> tuple[int, dict[str, str], bytes, None]:
        return (200, {}, DATA, None)

    log: list[str] = []
    with faulty(DATA, plan) as srv:
        c = client(srv.url(), log)
        with ParallelReader(c, 0, len(DATA), 4) as reader:
            assert read_all(reader, [PART // 2]) == DATA
            workers_end(reader)
    assert log == [f"{c.where}: the server ignores Range; the rest through one connection"]


def test_a_server_that_stops_honouring_range_inside_an_archive_fails_clearly() -> None:
    """A member's body (not from byte 0): a 200 cannot be skipped into; one clear error."""

    def plan(_n: int, start: int) -> tuple[int, dict[str, str], bytes, None] | None:
        return (200, {}, DATA, None) if start >= 3 * PART else None

    with faulty(DATA, plan) as srv:
        c = client(srv.url())
        reader = ParallelReader(c, PART, len(DATA), 4)
        with pytest.raises(NoRangeResume, match="the server stopped honouring Range"):
            read_all(reader, [PART])
        workers_end(reader)


def test_close_half_way_stops_the_workers() -> None:
    gate = threading.Event()

    def plan(_n: int, start: int) -> None:
        if start >= 2 * PART:
            gate.wait(10)  # the parts ahead are slow to come
        return None

    with faulty(DATA, plan) as srv:
        c = client(srv.url())
        reader = ParallelReader(c, 0, len(DATA), 4)
        assert read_exactly(reader, PART) == DATA[:PART]
        reader.close()
        assert reader.read(PART) == b""
        gate.set()
        workers_end(reader)
    # The part read, and the four ahead of it at most: none after close().
    assert len(srv.log) <= 1 + 4, srv.log


def test_nginx_serves_the_parts(tmp_path: Path) -> None:
    """The real server: parts of the body through 4 connections, each once, bytes intact."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "blob").write_bytes(DATA)
    with nginx(tmp_path / "srv", tmp_path / "nginx") as srv:
        c = client(srv.url("blob"))
        with ParallelReader(c, 0, len(DATA), 4) as reader:
            assert read_all(reader, [10_000]) == DATA
    requests = srv.requests()  # nginx stopped: every answer logged
    assert len(requests) == -(-len(DATA) // PART)
    assert all(" 206 " in line for line in requests), requests


def test_bootc_connections_sets_the_policy() -> None:
    root = "root=bootc-live:http://10.0.2.2/root.oci"
    assert fetch_policy(cmdline.parse([root, "bootc.connections=8"])).connections == 8
    default = cmdline.parse([root])
    assert fetch_policy(default).connections == http.CONNECTIONS
    option = next(o for o in cmdline.OPTIONS if o.name == "bootc.connections")
    assert option.default == str(http.CONNECTIONS)  # what docs/cmdline.md says
    for bad in ("0", "9", "x", "-1"):
        with pytest.raises(cmdline.CmdlineError, match=r"bootc\.connections=.*1 to 8"):
            cmdline.parse([root, f"bootc.connections={bad}"])
