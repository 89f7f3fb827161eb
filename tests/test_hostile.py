"""The URL client against a scripted hostile server: one case per misbehaviour of status,
headers or body. Each ends in success, a bounded retry that says why, or one line; never a
hang (a hard timeout per test), never a traceback, never the URL's password in any output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from bootc_live.runtime import boot, http
from bootc_live.runtime.blobs import Descriptor, VerifyingReader
from bootc_live.runtime.cmdline import BootSpec, ImageLocation
from bootc_live.runtime.errors import BootcLiveError, ImageError
from bootc_live.runtime.oci import all_manifests, resolve
from bootc_live.runtime.sources import LayoutSource
from imagegen import build_layout, d, f, layer_tar, write_oci_archive
from servers import MISBEHAVIOURS, Answer, faulty, hard_timeout, hostile, throwaway_ca
from unpackers import need

SECRET = "s3cr3t-PASSWORD"
CREDENTIALS = f"me:{SECRET}"
FAST = http.Policy(
    retries=3,
    total=5.0,
    stall=0.4,  # under the low-speed window: a stall is told as one, whatever the timing
    low_speed=1000,
    low_speed_time=0.5,
    max_backoff=0.01,
    max_retry_after=0.2,
)


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    with hard_timeout(30):
        yield


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("hostile")
    layers = [
        layer_tar([d("etc"), f("etc/hostname", b"live\n")]),
        layer_tar([f("data", os.urandom(200_000))]),
    ]
    build_layout(tmp / "img", layers, compression="none")
    return write_oci_archive(tmp / "img", tmp / "root.oci").read_bytes()


def fetch(url: str, tmp_path: Path, log: list[str], policy: http.Policy = FAST) -> str:
    """Resolve the image at `url` and read every layer through verification: its digest."""
    source = http.open_url(url, policy, log.append, str(tmp_path / "dl"))
    try:
        image = resolve(source)
        for layer in image.layers:
            with source.open_blob(layer) as raw:
                VerifyingReader(raw, layer, "layer").finish()
        return image.manifest_digest
    finally:
        source.close()


# switch: (None for success, or a pattern of the one line), and the most requests it may take
OUTCOMES: dict[str, tuple[str | None, int]] = {
    "honest": (None, 40),
    "no-range": (None, 2),
    "redirect": (None, 80),
    "no-location": (r"HTTP 302 without a Location to follow", 1),
    "redirect-loop": (r"redirect loop", 1),
    "redirect-chain": (r"more than 10 redirects", 11),
    "redirect-file": (r"redirected to a file: URL, refused", 1),
    "redirect-garbage": (r"/a b\\x1b\[31m: not a URL that can be requested", 1),
    "wrong-range-start": (r"answered bytes 1-511 when asked for bytes 0-", 1),
    "unknown-total": (None, 3),
    "huge-header": (r"malformed answer \(got more than 65536 bytes", 1),
    "many-headers": (r"malformed answer \(got more than 100 headers\)", 1),
    "content-length-abc": (r"invalid Content-Length \(a value of the server's\)", 1),
    "content-length-huge": (r"invalid Content-Length '9999", 1),
    "bad-chunked": (r"connection broke at byte 0 .*giving up after 3 retries", 4),
    "trickle-body": (r"too slow: \d+ bytes in 0.5s, under 1000 bytes/s.*giving up after 3", 4),
    "trickle-headers": (r"too slow: \d+ bytes in 0.5s.*giving up after 3 retries", 4),
    "stall": (r"stalled: no data for 0.4s.*giving up after 3 retries", 4),
    "cut-first": (None, 80),
    "retry-after-huge": (r"HTTP 503 Service Unavailable; giving up after 3 retries", 4),
    "status-600": (r"HTTP 600; check the URL", 1),
    "status": (r"HTTP 418 I'm a Teapot; check the URL and the server", 1),
    "garbage": (r"connection failed \(not an HTTP answer\); giving up after 3 retries", 4),
    "empty": (r"connection failed \(Remote end closed .*giving up after 3 retries", 4),
    "401": (r"HTTP 401 Unauthorized", 1),
    "503-once": (None, 40),
    "endless-continue": (r"malformed answer \(got more than 10 interim answers\)", 1),
    "early-hints": (None, 40),  # a 103 and a 102 before each answer: read past, as curl does
    "endless-early-hints": (r"malformed answer \(got more than 10 interim answers\)", 1),
    "endless-trailer": (r"malformed answer \(got more than 100 trailer lines\)", 1),
    # http.client would read the rest of the connection into memory (fp.read(-1)).
    "negative-chunk": (r"at byte 0 \(IncompleteRead\(0 bytes read\)\).*after 3 retries", 4),
    "content-encoding": (r"the server sends the archive encoded \(Content-Encoding 'gzip'\)", 1),
    "transfer-encoding": (r"in Transfer-Encoding 'gzip, chunked', which was not asked for", 1),
    "part-always": (r"asked for the whole archive, the server answered a part of it", 2),
}


def test_every_misbehaviour_has_an_outcome() -> None:
    assert sorted(OUTCOMES) == sorted(MISBEHAVIOURS)


@pytest.mark.parametrize("switch", MISBEHAVIOURS)
def test_hostile_server(switch: str, archive: bytes, tmp_path: Path) -> None:
    expected, most = OUTCOMES[switch]
    log: list[str] = []
    with hostile(archive, "honest") as target:
        with hostile(archive, switch, redirect_to=target.url()) as server:
            start = time.monotonic()
            try:
                # cut-first: every member read (index.json, manifest, config too) breaks off
                # once: each is a failure of its own, not one more of 3 retries in all.
                digest = fetch(server.url(credentials=CREDENTIALS), tmp_path, log)
                said = ""
            except BootcLiveError as err:
                digest, said = "", err.line()
            took = time.monotonic() - start
        requests = server.requests + target.requests
    where = f"{switch}: {said!r}, log {log}"
    if expected is None:
        assert digest.startswith("sha256:"), where
    else:
        assert re.search(expected, said), where
        assert "\n" not in said and "\x1b" not in said, where
    assert len(server.requests) <= most, (where, len(server.requests))
    assert took < 10, where
    for line in [said, *log]:
        assert SECRET not in line and "me:" not in line, line
    # The credentials of the URL go to its origin only: never to the server redirected to.
    assert all("Authorization" not in r.headers for r in target.requests), where
    if switch == "honest":
        assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in requests)
    if switch in ("no-range", "unknown-total"):
        assert any("downloading" in line for line in log), log
        assert not os.listdir(tmp_path / "dl")  # the download is gone once closed


RETRIED = {408, 425, 429, 500, 502, 503, 504, 507, 511, 599}


# (A 1xx is interim: read past, to the answer after it; "early-hints" and
# "endless-early-hints" in OUTCOMES.)
@pytest.mark.parametrize(
    "status", [201, 204, 300, 304, 305, 400, 404, 410, 416, 418, 451, 501, 505, 999, *RETRIED]
)
def test_every_status_ends_at_once_or_in_bounded_retries(
    status: int, archive: bytes, tmp_path: Path
) -> None:
    log: list[str] = []
    with hostile(archive, "status", status=status) as server:
        with pytest.raises(BootcLiveError) as err:
            fetch(server.url(), tmp_path, log)
        asked = len(server.requests)
    line = err.value.line()
    assert line.startswith(f"http://127.0.0.1:{server.port}/root.oci: ") and "\n" not in line
    if status in RETRIED:
        reason = http.status_line(status)  # the standard one: never the server's ("Status")
        assert f"{reason}; giving up after 3 retries" in line and asked == 4
    else:
        assert asked == 1 and f"HTTP {status}" in line and "Status" not in line, line


def test_a_trickle_exhausts_the_time_budget(archive: bytes, tmp_path: Path) -> None:
    policy = http.Policy(total=1.2, stall=5, low_speed=1000, low_speed_time=0.3, max_backoff=0.01)
    log: list[str] = []
    with hostile(archive, "trickle-body") as server, pytest.raises(BootcLiveError) as err:
        fetch(server.url(), tmp_path, log, policy)
    assert re.search(r"too slow: .*giving up after \ds of retries", str(err.value)), err.value
    assert 3 <= len(server.requests) <= 8


def test_retry_after_is_capped_also_with_a_retry_count() -> None:
    slept: list[float] = []
    policy = http.Policy(retries=5, max_retry_after=60.0)
    retrier = http.Retrier("http://h/x", policy, lambda _m: None, sleep=slept.append)
    for value in ("9" * 400, "1" * 19, "Wed, 21 Oct 9999 07:28:00 GMT", "-5", "1.5"):
        retrier.failed("HTTP 429", http.parse_retry_after(value))
    assert slept == [60.0, 60.0, 60.0, 4.0, 8.0]
    with pytest.raises(http.FetchError, match="giving up after 5 retries"):
        retrier.failed("HTTP 429", http.parse_retry_after("9" * 400))


@pytest.mark.parametrize("spelling", ["https", "HTTPS"])  # a token realm's, say
def test_https_redirect_to_plain_http_is_refused(
    spelling: str, archive: bytes, tmp_path: Path
) -> None:
    ca, cert, key = throwaway_ca(tmp_path / "ca", "127.0.0.1")
    with hostile(archive, "honest") as plain:
        target = plain.url()
        with hostile(archive, "redirect", tls=(cert, key), redirect_to=target) as server:
            # (without credentials: taking them out of a URL also lowercases its scheme)
            creds = CREDENTIALS if spelling == "https" else ""
            url = server.url(credentials=creds).replace("https:", f"{spelling}:")
            client = http.Client(url, FAST, [].append)
            client.cafiles.append(str(ca))
            with pytest.raises(http.FetchError) as err:
                client.open(0, None, http.Retrier(client.url, FAST, [].append))
    assert str(err.value).startswith(
        f"https://127.0.0.1:{server.port}/root.oci: redirected from https to plain http "
        f"(http://127.0.0.1:{plain.port}/root.oci), refused"
    )
    assert plain.requests == [] and SECRET not in err.value.line()


def test_a_part_of_untold_size_cut_short_is_resumed_not_taken_whole() -> None:
    """A 206 `bytes 0-369/*` (to a request without Range) that breaks off at byte 50: its end
    is at least byte 370, though the total is not told."""
    doc = json.dumps({"token": "t" * 300}).encode()
    whole = f"bytes 0-{len(doc) - 1}/*"

    def plan(n: int, start: int) -> Answer | None:
        return (206, {"Content-Range": whole}, doc, 50) if n == 1 else None

    log: list[str] = []
    with faulty(doc, plan) as server:
        client = http.Client(server.url("token"), FAST, log.append)
        body, _ = http.read_body(client, "token", 1 << 20)
    assert body == doc, log
    assert [h for _status, h in server.log] == ["", "bytes=50-"]


def test_an_https_server_closing_in_the_handshake_is_retried(
    archive: bytes, tmp_path: Path
) -> None:
    """A server that closes a connection before its TLS handshake (restarting, overloaded)
    gets the retries any closed connection gets, not a TLS failure at once with a CA hint."""
    ca, cert, key = throwaway_ca(tmp_path / "ca", "127.0.0.1")
    log: list[str] = []
    with hostile(archive, "honest", tls=(cert, key), drop=2) as server:
        client = http.Client(server.url(), FAST, log.append)
        client.cafiles.append(str(ca))
        answer = client.open(0, None, http.Retrier(client.url, FAST, log.append))
        answer.close()
    assert answer.status == 200, log
    assert len(log) == 2 and all(
        "connection failed (TLS failure: the server closed the connection); retry" in line
        for line in log
    ), log
    with hostile(archive, "honest", tls=(cert, key), drop=99) as server:
        client = http.Client(server.url(), FAST, log.append)
        client.cafiles.append(str(ca))
        with pytest.raises(http.FetchError) as err:
            client.open(0, None, http.Retrier(client.url, FAST, log.append))
    assert "TLS failure: the server closed the connection); giving up after 3" in str(err.value)
    assert "--ca" not in err.value.line()


def test_a_server_that_always_breaks_without_range_uses_up_the_retries(
    archive: bytes, tmp_path: Path
) -> None:
    """Every answer whole (200) and cut half-way: a body read again from byte 0 is no
    progress until it passes where the last one broke, so the retries run out (the bytes
    read again reset them, and the reading went on for ever)."""
    half = len(archive) // 2

    def plan(n: int, start: int) -> tuple[int, dict[str, str], bytes, int]:
        return 200, {"Content-Length": str(len(archive))}, archive, half

    with faulty(archive, plan) as server:
        client = http.Client(server.url(), FAST, [].append)
        with pytest.raises(http.FetchError) as err:
            http.read_body(client, "archive", 1 << 30)  # one stream from byte 0
        assert len(server.log) == 4, server.log
        log: list[str] = []
        with pytest.raises(http.FetchError) as download:
            http.open_url(server.url(), FAST, log.append, str(tmp_path))  # downloaded once
        assert len(server.log) == 4 + 4, server.log  # the probe's answer is the first
    for line in (err.value.line(), download.value.line()):
        assert re.search(rf"connection broke at byte {half}\b.*giving up after 3 retries", line)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("port", ["99999", "x1", "0"])
def test_a_port_no_connection_can_use_is_one_line_at_once(port: str) -> None:
    client = http.Client(f"http://127.0.0.1:{port}/root.oci", FAST, [].append)
    with pytest.raises(http.FetchError) as err:
        client.open(0, None, http.Retrier(client.url, FAST, [].append))
    reasons = {"99999": "out of range 0-65535", "x1": "could not be cast to integer"}
    reason = reasons.get(port, "0 is no server's")
    assert err.value.line().startswith(f"http://127.0.0.1:{port}/root.oci: Port {reason}")
    assert err.value.line().endswith("; fix the port in the URL")


def test_a_redirect_to_a_port_no_connection_can_use_blames_the_redirect(archive: bytes) -> None:
    with hostile(archive, "redirect", redirect_to="http://127.0.0.1:99999/x") as server:
        client = http.Client(server.url(), FAST, [].append)
        with pytest.raises(http.FetchError) as err:
            client.open(0, None, http.Retrier(client.url, FAST, [].append))
    line = err.value.line()
    assert (
        line == "http://127.0.0.1:99999/x: Port out of range 0-65535; the server redirected there"
    )


def test_a_download_onto_a_full_filesystem_is_not_retried(archive: bytes, tmp_path: Path) -> None:
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    small = tmp_path / "small"
    small.mkdir()
    with hostile(archive, "no-range") as server:
        script = (
            f"mount -t tmpfs -o size=64k tmpfs {small} && "
            f'TMPDIR={small} "$0" -m bootc_live inspect "$1"; echo "exit $?"'
        )
        result = subprocess.run(
            [
                *("unshare", "-m", "--propagation", "private", "sh", "-c", script),
                *(sys.executable, server.url(credentials=CREDENTIALS)),
            ],
            capture_output=True,
            text=True,
            timeout=25,
        )
    lines = result.stderr.strip().splitlines()
    assert result.stdout.strip().endswith("exit 1"), (result.stdout, result.stderr)
    assert re.fullmatch(
        rf"bootc-live: no space left to download http://127\.0\.0\.1:{server.port}/"
        rf"root\.oci into {small} \(0 MiB written\); free space there, .*",
        lines[-1],
    ), lines
    assert len(server.requests) == 1, "the answer to the probe is the download: no retry"
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    "switch", ["honest", "no-range", "no-location", "401", "content-length-abc"]
)
def test_the_command_line_takes_a_url(switch: str, archive: bytes, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "TMPDIR": str(tmp_path),
    }

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bootc_live", *argv],
            capture_output=True,
            text=True,
            timeout=25,
            env=env,
        )

    with hostile(archive, switch) as server:
        url = server.url(credentials=CREDENTIALS)
        result = cli("inspect", url)
        pulled = cli("pull", url, "-o", f"oci-archive:{tmp_path / 'copy.oci'}")
    for done in (result, pulled):
        assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    assert not list(tmp_path.glob("download-*")), "a download was left behind"
    if switch in ("honest", "no-range"):
        assert result.returncode == 0 and pulled.returncode == 0, result.stderr + pulled.stderr
        digest = re.search(r"^image     (sha256:[0-9a-f]{64})$", result.stdout, re.M)
        assert digest and pulled.stdout.startswith(f"{digest.group(1)}  oci-archive:")
        return
    assert not (tmp_path / "copy.oci").exists()
    for done in (result, pulled):
        errors = [line for line in done.stderr.splitlines() if "retry" not in line]
        assert done.returncode == 1 and len(errors) == 1, done.stderr
        assert errors[0].startswith(f"bootc-live: http://127.0.0.1:{server.port}/root.oci: ")


def test_at_boot_the_password_is_in_no_file(
    archive: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(boot, "STATUS_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(boot, "wait_for_route", lambda *_: None)
    with hostile(archive, "wrong-range-start") as server:
        url = server.url(credentials=CREDENTIALS)
        spec = BootSpec(image=ImageLocation("url", url), retries=1, timeout=1)
        assert boot.main(["boot", str(tmp_path / "newroot")], lambda: spec) == 1
    said = capsys.readouterr()
    error = (tmp_path / "run/error").read_text()
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert error == (
        f"bootc-live: http://127.0.0.1:{server.port}/root.oci: answered bytes 1-511 when "
        "asked for bytes 0-; the server's Range support is broken\n"
    )
    assert status["state"] == "failed" and status["message"] == error.strip()
    assert boot.printable_root(spec) == f"bootc-live:http://***@127.0.0.1:{server.port}/root.oci"
    for text in (said.out, said.err, *(p.read_text() for p in (tmp_path / "run").iterdir())):
        assert SECRET not in text


def negative_size(archive: bytes, size: int) -> bytes:
    """The archive with its first regular member's size set to `size` (base-256), its header
    checksum fixed."""
    pos = 0
    while archive[pos + 156 : pos + 157] not in (b"0", b"\0"):
        length = int(archive[pos + 124 : pos + 136].split(b"\0")[0].strip() or b"0", 8)
        pos += 512 + length + (-length % 512)
    header = bytearray(archive[pos : pos + 512])
    header[124:136] = b"\xff" + (size % (1 << 88)).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return archive[:pos] + bytes(header) + archive[pos + 512 :]


@pytest.mark.parametrize("size", [-512, -(1 << 40)])
def test_a_negative_member_size_does_not_loop(archive: bytes, size: int, tmp_path: Path) -> None:
    with (
        hostile(negative_size(archive, size), "honest") as server,
        pytest.raises(BootcLiveError) as err,
    ):
        fetch(server.url(), tmp_path, [])
    asked = len(server.requests)
    assert re.fullmatch(
        r"oci-archive:http://.*/root\.oci is not a valid oci-archive: .*", str(err.value)
    )
    # (the tar reader may refuse the size itself, before the ranged reader does: either holds)
    assert re.search(r"(negative|invalid) .*size|size .*(negative|invalid)", str(err.value))
    assert asked <= 8  # the probe and a few headers: no storm of ranged requests


def test_after_a_redirect_errors_name_the_url_that_failed(archive: bytes, tmp_path: Path) -> None:
    with (
        hostile(archive, "status-600") as failing,
        hostile(archive, "redirect", redirect_to=failing.url("moved.oci")) as server,
        pytest.raises(BootcLiveError) as err,
    ):
        fetch(server.url(credentials=CREDENTIALS), tmp_path, [])
    assert str(err.value) == f"http://127.0.0.1:{failing.port}/moved.oci: HTTP 600"


def test_inspect_reads_each_nested_index_once(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    info = build_layout(layout, [layer_tar([f("a", b"a")])], compression="none", tag=None)
    manifest = info.manifest_descriptor

    def add_index(entries: list[dict[str, object]]) -> dict[str, object]:
        data = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs/sha256" / digest).write_bytes(data)
        media = "application/vnd.oci.image.index.v1+json"
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    inner = add_index([manifest] * 3)
    outer = add_index([inner] * 50)
    top = add_index([outer] * 50)
    opened: list[str] = []

    class Counting(LayoutSource):
        def open_blob(self, desc: Descriptor) -> BinaryIO:
            opened.append(desc.digest)
            return super().open_blob(desc)

    found = all_manifests(Counting(str(layout)), Descriptor.from_json(top, "top"))
    assert [d.digest for d in found] == [manifest["digest"]]
    documents = [top["digest"], outer["digest"], inner["digest"], manifest["digest"]]
    assert sorted(opened) == sorted(documents)
    images = [  # five images, and the index of them: more documents than a limit of five
        build_layout(layout, [layer_tar([f("a", b"%d" % i)])], compression="none", tag=str(i))
        for i in range(5)
    ]
    five = Descriptor.from_json(add_index([i.manifest_descriptor for i in images]), "five")
    with pytest.raises(ImageError, match=r"its indexes name more than 5 documents"):
        all_manifests(LayoutSource(str(layout)), five, limit=5)


def test_a_sha512_pin_is_checked_whatever_the_index_names(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "layout", [layer_tar([f("a", b"a")])], compression="none")
    digest = str(info.manifest_descriptor["digest"])
    data = (tmp_path / "layout/blobs/sha256" / digest.split(":")[1]).read_bytes()
    pin = "sha512:" + hashlib.sha512(data).hexdigest()
    source = LayoutSource(str(tmp_path / "layout"))
    assert resolve(source, digest=pin).manifest_digest == digest
    with pytest.raises(ImageError, match=rf"image digest is {pin}, not the pinned sha512:0+$"):
        resolve(source, digest="sha512:" + "0" * 128)


def test_a_document_trickling_above_the_low_speed_floor_ends_at_its_deadline(
    archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest sent at just above the low-speed floor never stalls, and 4 MiB of it took an
    hour: a document comes whole within http.DOCUMENT_SECONDS, or the fetch ends, saying so."""
    monkeypatch.setattr(http, "DOCUMENT_SECONDS", 1.0)
    assert len(archive) > 100_000  # 4 s at least at 25 kB/s
    with hostile(archive, "trickle-steady") as server:
        url = server.url()
        client = http.Client(url, FAST, [].append)
        start = time.monotonic()
        with pytest.raises(http.FetchError) as err:
            http.read_body(client, "manifest", 4 << 20)
        took = time.monotonic() - start
    assert 1.0 <= took < 3, took
    assert re.fullmatch(
        rf"{re.escape(url)}: the manifest did not come whole within 1s \(\d+ bytes came\); "
        "check the server and the network",
        err.value.line(),
    ), err.value.line()


def test_the_document_deadline_counts_from_the_answer_not_the_wait_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry busy (503, Retry-After) for longer than the deadline, then answering at
    once: the body comes whole, the waiting is the retries' (Policy.total), not the
    deadline's."""
    monkeypatch.setattr(http, "DOCUMENT_SECONDS", 1.0)

    def plan(n: int, start: int) -> tuple[int, dict[str, str], bytes, int | None] | None:
        if n == 1:
            return 503, {"Retry-After": "2", "Content-Length": "0"}, b"", None
        return None  # the document

    policy = replace(FAST, retries=3, max_retry_after=5.0)
    with faulty(b'{"ok": true}', plan) as server:
        client = http.Client(server.url(), policy, [].append)
        start = time.monotonic()
        body, _ = http.read_body(client, "answer", 1 << 20)
    assert body == b'{"ok": true}' and time.monotonic() - start >= 2
