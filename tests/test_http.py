"""URL sources: in-place reads with Range from nginx, download without Range, and faults."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bootc_live.runtime.errors import ImageError, VerificationError
from bootc_live.runtime.http import FetchError, HttpArchiveSource, Policy, open_url
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import ArchiveSource
from bootc_live.runtime.unpack import unpack_image
from imagegen import build_layout, d, f, layer_tar, write_oci_archive
from servers import faulty, nginx, served
from unpackers import need

pytestmark = pytest.mark.integration
FAST = Policy(retries=5, stall=5, max_backoff=0.05)
BIG = os.urandom(3 << 20)


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "unpacking sets owners: needs root")


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[int]]:
    """An oci-archive and the offsets of its layer blobs inside it."""
    layers = [layer_tar([d("etc"), f("etc/hostname", b"live\n")]), layer_tar([f("big", BIG)])]
    info = build_layout(tmp_path / "img", layers, compression="none")
    (tmp_path / "srv").mkdir()
    path = write_oci_archive(tmp_path / "img", tmp_path / "srv" / "root.oci")
    data = path.read_bytes()
    return path, [data.index(p.read_bytes()[:4096]) for p in info.layer_paths]


def unpack_url(url: str, tmp_path: Path, log: list[str], policy: Policy = FAST) -> Path:
    source = open_url(url, policy, log.append, str(tmp_path / "dl"))
    dest = tmp_path / "root"
    dest.mkdir()
    try:
        unpack_image(resolve(source), str(dest))
    finally:
        source.close()
    return dest


def test_nginx_range_reads_the_archive_in_place(
    archive: tuple[Path, list[int]], tmp_path: Path
) -> None:
    path, _ = archive
    with nginx(path.parent, tmp_path / "nginx") as server:
        log: list[str] = []
        source = open_url(server.url("root.oci"), FAST, log.append, str(tmp_path / "dl"))
        assert isinstance(source, HttpArchiveSource)
        root = unpack_url(server.url("root.oci"), tmp_path, log)
    requests = server.requests()  # nginx stopped: every answer logged
    assert (root / "big").read_bytes() == BIG and log == []
    assert all(" 206 " in line for line in requests), requests
    # Nothing was fetched twice: bytes sent stay near one archive plus header reads.
    sent = served(requests)
    assert sent < 2 * path.stat().st_size
    assert not (tmp_path / "dl").exists() or not os.listdir(tmp_path / "dl")


def test_without_range_the_archive_is_downloaded_once(
    archive: tuple[Path, list[int]], tmp_path: Path
) -> None:
    path, _ = archive
    with nginx(path.parent, tmp_path / "nginx", ranges=False) as server:
        log: list[str] = []
        source = open_url(server.url("root.oci"), FAST, log.append, str(tmp_path / "dl"))
        assert isinstance(source, ArchiveSource)
        source.close()
        root = unpack_url(server.url("root.oci"), tmp_path, log)
    assert (root / "etc/hostname").read_bytes() == b"live\n"
    assert any("does not support Range; downloading" in line for line in log)
    assert os.listdir(tmp_path / "dl") == []  # deleted once unpacked


def test_a_download_that_is_no_oci_archive_is_named_by_its_url_and_removed(
    archive: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """Without Range the archive is downloaded first: when it then proves not to be one (cut,
    or compressed), the line names the URL, not the temporary file, which is gone."""
    path, _ = archive
    data = path.read_bytes()
    (path.parent / "cut.oci").write_bytes(data[: len(data) // 2])
    (path.parent / "junk.oci").write_bytes(b"\x1f\x8b" + bytes(4094))
    with nginx(path.parent, tmp_path / "nginx", ranges=False) as server:
        for name in ("cut.oci", "junk.oci"):
            url = server.url(name)
            with pytest.raises(ImageError) as err:
                open_url(url, FAST, lambda _: None, str(tmp_path / "dl"))
            assert err.value.line().startswith(f"oci-archive:{url} "), err.value.line()
            assert os.listdir(tmp_path / "dl") == []


def test_reset_mid_layer_resumes_with_range(
    archive: tuple[Path, list[int]], tmp_path: Path
) -> None:
    path, offsets = archive
    data = path.read_bytes()
    cut_at = 1 << 20

    def plan(_n: int, start: int):  # type: ignore[no-untyped-def]
        if start == offsets[1] and not cut[0]:
            cut[0] = True
            body = data[start:]
            return (
                206,
                {
                    "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                    "Content-Length": str(len(body)),
                },
                body,
                cut_at,
            )
        return None

    cut = [False]
    with faulty(data, plan) as server:
        log: list[str] = []
        root = unpack_url(server.url(), tmp_path, log)
    assert (root / "big").read_bytes() == BIG
    assert f"bytes={offsets[1] + cut_at}-" in [r.rsplit("-", 1)[0] + "-" for _s, r in server.log]
    assert any(f"connection broke at byte {offsets[1] + cut_at}" in line for line in log), log


def test_429_retry_after_is_honoured(archive: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, _ = archive
    data = path.read_bytes()
    with faulty(
        data, lambda n, _s: (429, {"Retry-After": "1"}, b"slow down", None) if n == 1 else None
    ) as server:
        log: list[str] = []
        start = time.monotonic()
        unpack_url(server.url(), tmp_path, log)
    assert time.monotonic() - start >= 1.0
    assert log and "HTTP 429" in log[0] and "retry 1 in 1.0s" in log[0]


def test_404_fails_at_once(tmp_path: Path) -> None:
    with (
        faulty(b"", lambda _n, _s: (404, {}, b"no", None)) as server,
        pytest.raises(FetchError) as err,
    ):
        open_url(server.url(), FAST, [].append, str(tmp_path))
    assert str(err.value) == f"{server.url()}: HTTP 404 Not Found"
    assert len(server.log) == 1  # no retry storm


def test_retries_are_bounded(tmp_path: Path) -> None:
    with faulty(b"x" * 4096, lambda _n, _s: (503, {}, b"busy", None)) as server:
        log: list[str] = []
        with pytest.raises(FetchError, match=r"HTTP 503 Service Unavailable; giving up after 5 "):
            open_url(server.url(), FAST, log.append, str(tmp_path))
    assert len(server.log) == 6 and len(log) == 5


def test_blob_changed_on_the_server(archive: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, offsets = archive
    data = bytearray(path.read_bytes())
    data[offsets[1] + 100_000] ^= 1
    with (
        faulty(bytes(data), lambda _n, _s: None) as server,
        pytest.raises(VerificationError, match=r"layer 2/2 .* digest mismatch"),
    ):
        unpack_url(server.url(), tmp_path, [])
