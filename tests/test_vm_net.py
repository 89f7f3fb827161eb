"""Network boots in QEMU: root=bootc-live:URL against real servers on 127.0.0.1.

The guest reaches them only through QEMU's restricted user network (restrict=on) with guestfwd
rules to loopback; QEMU's own TFTP server serves tftp://10.0.2.2/.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from bootc_live.vm import GUEST_SERVER
from servers import faulty, hostile, nginx, throwaway_ca
from unpackers import bootc_live
from vmboot import assert_live, assert_stopped, build_artifacts, run

pytestmark = pytest.mark.vm
URL = f"root=bootc-live:http://{GUEST_SERVER}/root.oci"


def blob_offsets(archive: Path) -> dict[str, int]:
    """Where each blob's data starts inside an oci-archive (its tar member offset)."""
    data = archive.read_bytes()
    out = {}
    pos = 0
    while pos + 512 <= len(data) and data[pos : pos + 512] != bytes(512):
        name = data[pos : pos + 100].split(b"\0")[0].decode()
        size = int(data[pos + 124 : pos + 136].split(b"\0")[0].strip() or b"0", 8)
        if data[pos + 156 : pos + 157] == b"x":  # PAX header: skip its data, the entry follows
            pos += 512 + size + (-size % 512)
            continue
        if name.startswith("blobs/sha256/"):
            out[name[len("blobs/sha256/") :]] = pos + 512
        pos += 512 + size + (-size % 512)
    return out


@pytest.mark.parametrize("flavour", ["systemd", "shell"])
def test_http_boot_reads_the_archive_in_place(
    artifacts: dict[str, Path], flavour: str, tmp_path: Path
) -> None:
    art = artifacts[flavour]
    with nginx(art, tmp_path / "nginx") as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
        requests = server.requests()
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")
    # Every request was ranged, and each blob was fetched once: nothing stored, nothing twice.
    assert requests and all(" 206 " in line for line in requests), requests
    starts = [line.split('"bytes=')[1].split("-")[0] for line in requests]
    big = [s for s, line in zip(starts, requests) if int(line.rsplit(" ", 1)[1]) > 4096]
    assert len(big) == len(set(big)) >= 1


def test_server_without_range(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """The archive must be downloaded whole: into a tmpfs of the boot's own, sized to the
    memory free, not into the initramfs's /run (systemd's 20% of RAM, 102 MiB here), which
    an archive of 150 MiB overflowed though the machine had room for it."""
    art = artifacts["systemd"]
    served = tmp_path / "srv"
    served.mkdir()
    shutil.copy(art / "root.oci", served / "root.oci")
    with tarfile.open(served / "root.oci", "a", format=tarfile.PAX_FORMAT) as archive:
        padding = tarfile.TarInfo("padding")  # a member no image reads
        padding.size = 150 << 20
        archive.addfile(padding, io.BytesIO(bytes(padding.size)))
    with nginx(served, tmp_path / "nginx", ranges=False) as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
        requests = server.requests()
    assert_live(result, root="ro")
    assert any("does not support Range; downloading the archive once" in m for m in result.messages)
    assert len([r for r in requests if " 200 " in r]) == 1, requests


def test_https_with_a_ca_in_the_initramfs(images: Path, tmp_path: Path) -> None:
    ca, cert, key = throwaway_ca(tmp_path / "pki", GUEST_SERVER)
    art = build_artifacts(f"oci:{images}/layout:demo", tmp_path / "art", "systemd", ca=ca)
    with nginx(art, tmp_path / "nginx", tls=(cert, key)) as server:
        url = f"root=bootc-live:https://{GUEST_SERVER}/root.oci"
        assert_live(run(art, url, network=True, forwards=((443, server.port),)), root="ro")


def test_https_without_the_ca_fails_clearly(artifacts: dict[str, Path], tmp_path: Path) -> None:
    _ca, cert, key = throwaway_ca(tmp_path / "pki", GUEST_SERVER)
    art = artifacts["systemd"]
    with nginx(art, tmp_path / "nginx", tls=(cert, key)) as server:
        url = f"root=bootc-live:https://{GUEST_SERVER}/root.oci"
        result = run(art, url, network=True, forwards=((443, server.port),))
    assert_stopped(result, "TLS failure")
    assert any("bootc-live build --ca FILE" in m for m in result.messages)


def test_tftp_through_url_lib(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = artifacts["systemd"]
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    shutil.copy(art / "root.oci", tftp / "root.oci")
    result = run(art, "root=bootc-live:tftp://10.0.2.2/root.oci", network=True, tftp=tftp)
    assert_live(result, root="ro", etc="rw", var="rw")


def test_two_nics_one_dead_with_wait_any_if(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """The boot works with a dead second NIC. That wait-online then waits for one link only
    (--any) is asserted on the generator's output in test_dracut_shell.py, not by a clock."""
    art = artifacts["systemd"]
    with nginx(art, tmp_path / "nginx") as server:
        result = run(
            art,
            f"{URL} rd.net.wait-any-if",
            network=True,
            dead_nic=True,
            forwards=((80, server.port),),
        )
    assert_live(result, root="ro")


# -- faults from a scripted server -----------------------------------------------------------


def _serve_faulty(art: Path, plan):  # type: ignore[no-untyped-def]
    return faulty((art / "root.oci").read_bytes(), plan)


def test_reset_half_way_through_a_layer_resumes(artifacts: dict[str, Path]) -> None:
    art = artifacts["systemd"]
    data = (art / "root.oci").read_bytes()
    layer = _biggest_blob(data, art / "root.oci")
    size = _size_at(data, layer)
    cut_at = layer + size // 2

    def plan(_n: int, begin: int):  # type: ignore[no-untyped-def]
        if begin == layer:  # the layer's first request breaks half-way through
            body = data[layer : layer + size]
            headers = {
                "Content-Range": f"bytes {layer}-{layer + size - 1}/{len(data)}",
                "Content-Length": str(size),
            }
            return 206, headers, body, size // 2
        return None

    with _serve_faulty(art, plan) as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
    assert_live(result, root="ro", whiteout="yes")
    ranges = [r for _s, r in server.log]
    assert f"bytes={cut_at}-{layer + size - 1}" in ranges, ranges
    assert any(f"connection broke at byte {cut_at}" in m for m in result.messages)


def test_429_with_retry_after(artifacts: dict[str, Path]) -> None:
    art = artifacts["systemd"]
    plan = lambda n, _b: (429, {"Retry-After": "2"}, b"busy", None) if n == 1 else None  # noqa: E731
    with _serve_faulty(art, plan) as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
    assert_live(result, root="ro")
    assert any("HTTP 429 Too Many Requests; retry 1 in 2.0s" in m for m in result.messages)
    assert server.log[0][0] == 429


def test_404_stops_without_a_retry_storm(artifacts: dict[str, Path]) -> None:
    art = artifacts["systemd"]
    with _serve_faulty(art, lambda _n, _b: (404, {}, b"gone", None)) as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
    assert_stopped(result, f"http://{GUEST_SERVER}/root.oci: HTTP 404 Not Found")
    assert len(server.log) == 1


def test_blob_changed_on_the_server(artifacts: dict[str, Path]) -> None:
    art = artifacts["systemd"]
    data = bytearray((art / "root.oci").read_bytes())
    data[_biggest_blob(bytes(data), art / "root.oci") + 1000] ^= 0xFF
    with faulty(bytes(data), lambda _n, _b: None) as server:
        result = run(art, URL, network=True, forwards=((80, server.port),))
    assert_stopped(result, "digest mismatch (expected sha256:")


def test_a_hostile_server_ends_the_boot_in_one_line(artifacts: dict[str, Path]) -> None:
    # A redirect loop, to a URL that carries a password: the password is sent (Basic, to that
    # server only), the boot stops at once with one line, and no line of ours shows it.
    art = artifacts["systemd"]
    secret = "S3cret-pw"
    with hostile((art / "root.oci").read_bytes(), "redirect-loop") as server:
        url = f"root=bootc-live:http://me:{secret}@{GUEST_SERVER}/root.oci"
        result = run(art, url, network=True, forwards=((80, server.port),))
    assert_stopped(
        result,
        f"bootc-live: http://{GUEST_SERVER}/root.oci: redirect loop; check the URL and the server",
    )
    assert len(server.requests) == 1
    assert server.requests[0].headers["Authorization"].startswith("Basic ")
    assert not [m for m in result.messages if secret in m], result.messages


def _size_at(archive: bytes, data_offset: int) -> int:
    header = archive[data_offset - 512 : data_offset]
    return int(header[124:136].split(b"\0")[0].strip() or b"0", 8)


def _biggest_blob(archive: bytes, path: Path) -> int:
    return max(blob_offsets(path).values(), key=lambda o: _size_at(archive, o))


def test_vm_serve_boots_a_file_over_loopback(artifacts: dict[str, Path]) -> None:
    art = artifacts["systemd"]
    result = bootc_live(
        "vm",
        str(art),
        "--serve",
        str(art / "root.oci"),
        "--accel",
        "tcg",
        "--mem",
        "512",
        "--timeout",
        "300",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BOOTC-LIVE-REPORT root=ro etc=rw var=rw" in result.stdout
    assert f"root=bootc-live:http://{GUEST_SERVER}/root.oci" in result.stdout
    assert '"GET /root.oci HTTP/1.1" 206' in result.stderr  # served by `vm --serve`, ranged
