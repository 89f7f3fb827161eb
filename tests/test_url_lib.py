"""ftp:// through the real dracut url-lib (dracut-lib.sh, url-lib.sh and curl of this host)
against a real FTP server (pyftpdlib) on 127.0.0.1: what a failed fetch tells the user.

Each fetch runs in a private mount namespace with a tmpfs over /run: url-lib makes its
CURL_HOME there (/run/initramfs/url-lib), and the destination is a tmpfs of a chosen size."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_live.runtime import urllib_dracut
from servers import _wait_for, free_port
from unpackers import need, need_root_and

MODULES = Path("/usr/lib/dracut/modules.d")
DRACUT_LIB = MODULES / "99base/dracut-lib.sh"
URL_LIB = MODULES / "45url-lib/url-lib.sh"
DRACUT_UTIL = Path("/usr/lib/dracut/dracut-util")  # getarg's helper, called as dracut-getarg
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-pyftpdlib is for it, not the venv
USER, PASSWORD = "me", "s3cr%t"  # a password that must be percent-encoded in the URL

FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer

port, root, user, password, rate = sys.argv[1:]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elr")
authorizer.add_anonymous(root)
FTPHandler.authorizer = authorizer
if int(rate):
    ThrottledDTPHandler.write_limit = int(rate)  # bytes a second sent, in small pieces
    FTPHandler.dtp_handler = ThrottledDTPHandler
FTPServer(("127.0.0.1", int(port)), FTPHandler).serve_forever()
"""


def ftp_server(root: Path, rate: int = 0, port: int = 0) -> Iterator[int]:
    """pyftpdlib serving `root` on 127.0.0.1 (anonymous, and USER with PASSWORD), sending at
    most `rate` bytes a second when not 0; yields its port."""
    need(
        subprocess.run([SYSTEM_PYTHON, "-c", "import pyftpdlib"], check=False).returncode == 0,
        "needs python3-pyftpdlib",
    )
    port = port or free_port()
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", FTP_SERVER, str(port), str(root), USER, PASSWORD, str(rate)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(params=[0])
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, int]]:
    """An FTP server of a directory; parametrized indirectly: the bytes a second it sends."""
    root = tmp_path / "ftp"
    root.mkdir()
    yield from ((root, port) for port in ftp_server(root, request.param))


# The child: url-lib's paths are the host's (dracut-lib.sh wrapped: it sources
# /lib/dracut-dev-lib.sh, which only the initramfs has, unless wait_for_dev is defined).
CHILD = """
import hashlib, json, os, subprocess, sys, time
from bootc_live.runtime import http, packed, urllib_dracut
from bootc_live.runtime.errors import BootcLiveError

url, dest, size, dracut_lib, url_lib, stall, what, retries = sys.argv[1:]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "run", "/run"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "dest", dest], check=True)
urllib_dracut.DRACUT_LIB, urllib_dracut.URL_LIB = dracut_lib, url_lib
result = {"error": None}
start = time.monotonic()
policy = http.Policy(retries=int(retries) if retries else None, stall=float(stall))
try:
    if what == "packed":
        stored = packed.UrlLibSource(url, policy).store(os.path.join(dest, "packed.root"))
        with open(stored.path, "rb") as f:
            on_disk = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        result["stored"] = [stored.sha256, stored.size, on_disk]
    else:
        urllib_dracut.fetch(url, os.path.join(dest, "download"), policy)
except BootcLiveError as err:
    result = {"error": err.line(), "space": type(err).__name__ == "SpaceError"}
result["seconds"] = time.monotonic() - start
result["left"] = sorted(os.listdir(dest))
result["curl_home"] = os.listdir("/run/initramfs")
print(json.dumps(result))
"""


def fetch(
    url: str,
    tmp_path: Path,
    size: str = "64m",
    stall: float = 5.0,
    what: str = "fetch",
    retries: str = "0",
) -> dict[str, object]:
    """urllib_dracut.fetch of `url` into a tmpfs of `size` (`what`="packed": a packed root's
    UrlLibSource.store): its error line (or None), whether it is a SpaceError, what is left in
    the tmpfs, and what url-lib printed on the way (nothing may name the password)."""
    need_root_and("unshare", "curl")
    need(DRACUT_LIB.is_file() and URL_LIB.is_file(), "needs dracut's url-lib (dracut-network)")
    need(DRACUT_UTIL.is_file(), "needs dracut's dracut-util")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "dracut-getarg").exists():
        (bin_dir / "dracut-getarg").symlink_to(DRACUT_UTIL)
    lib = tmp_path / "dracut-lib.sh"
    lib.write_text(f"wait_for_dev() {{ :; }}\n. {DRACUT_LIB}\n")
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    src = Path(urllib_dracut.__file__).parents[2]
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(src),
        "PREFIX": "/nonexistent",  # dracut-lib.sh then leaves /run and /var/log alone
        "DRACUT_SYSTEMD": "1",  # dracut's warnings to stderr, not /dev/kmsg
    }
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD]
    result = subprocess.run(
        [*argv, url, str(dest), size, str(lib), str(URL_LIB), str(stall), what, retries],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "s3cr%25t" not in result.stdout + result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    assert out["curl_home"] == ["url-lib"]  # url-lib ran, and wrote only under /run
    return out


def url(port: int, name: str) -> str:
    return f"ftp://{USER}:s3cr%25t@127.0.0.1:{port}/{name}"


def test_a_missing_file_is_named_without_the_password(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    _, port = served
    out = fetch(url(port, "missing.oci"), tmp_path)
    assert out["error"] == (
        f"could not fetch ftp://***@127.0.0.1:{port}/missing.oci: the server has no such "
        "file (curl: (78) The file does not exist); check the URL, that the server has the "
        "file, and the network"
    )


def test_a_file_larger_than_its_tmpfs_says_ram_not_the_network(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    """The destination is sized to the memory left: a file larger than that fills it and
    curl stops (its write error, 23), which is no network failure."""
    root, port = served
    (root / "big.oci").write_bytes(os.urandom(6 << 20))
    out = fetch(url(port, "big.oci"), tmp_path, size="4m")
    assert out["space"] is True
    assert out["error"] == (
        f"no space left to download ftp://***@127.0.0.1:{port}/big.oci (4 MiB written): it "
        "is stored whole in RAM first; add RAM"
    )


def test_a_scheme_url_lib_has_no_handler_for_says_what_the_initramfs_lacks(
    tmp_path: Path,
) -> None:
    """nfs:// needs dracut's nfs module (nfs-lib.sh), which this host's url-lib lacks as a
    minimal bootc-live initramfs does: url-lib returns 254 and prints nothing."""
    out = fetch("nfs://127.0.0.1/export/root.oci", tmp_path)
    assert out["error"] == (
        "this initramfs cannot fetch nfs:// URLs: dracut's url-lib has no handler for them; "
        "add dracut's nfs module (the image needs nfs-utils) and rebuild it with bootc-live "
        "build, or serve the file over http(s), ftp or tftp"
    )


@pytest.mark.parametrize("served", [300], indirect=True)
def test_a_trickling_server_is_given_up_on_as_over_http(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    """A server that sends, but 300 bytes a second, ends the try after bootc.timeout=
    seconds, as http's fetch does below Policy.low_speed: at 64 KiB curl's one byte a second
    took over three minutes (the child's 60 s limit fails the old code first)."""
    root, port = served
    (root / "slow.oci").write_bytes(os.urandom(64 << 10))
    out = fetch(url(port, "slow.oci"), tmp_path, stall=2.0)
    assert isinstance(out["seconds"], float) and out["seconds"] < 20, out
    assert out["error"] == (
        f"could not fetch ftp://***@127.0.0.1:{port}/slow.oci: the server was silent or too "
        "slow for bootc.timeout= (curl: (28) Operation too slow. Less than 1024 bytes/sec "
        "transferred the last 2 seconds); check the URL, that the server has the file, and "
        "the network"
    )


def test_packed_img_is_unwrapped_where_it_was_fetched(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    """packed.img (GNU cpio's newc around mksquashfs's image) fetched by url-lib into a tmpfs
    that holds it once and a half: the image is unwrapped in the same file, where a copy beside
    the download ran out of space."""
    need_root_and("mksquashfs", "cpio")
    root, port = served
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in range(4):
        (tree / f"f{n}").write_bytes(os.urandom(1 << 20))  # incompressible: 4 MiB squashed
    work = tmp_path / "packed"
    (work / "bootc-live").mkdir(parents=True)
    image = work / "bootc-live/packed.root"
    subprocess.run(
        ["mksquashfs", str(tree), str(image), "-quiet", "-no-progress", "-comp", "gzip"],
        check=True,
        capture_output=True,
    )
    with (root / "packed.img").open("wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            input=b"bootc-live\nbootc-live/packed.root\n",
            cwd=work,
            stdout=out,
            check=True,
        )
    wrapped = (root / "packed.img").stat().st_size
    out = fetch(url(port, "packed.img"), tmp_path, size=str(wrapped * 3 // 2), what="packed")
    data = image.read_bytes()
    assert out["error"] is None, out
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert out["stored"] == [digest, len(data), digest]
    assert out["left"] == ["packed.root"]  # the download is the root now: nothing beside it
    shutil.rmtree(work)


def tftp_refusing(code: int, text: bytes) -> Iterator[int]:
    """A TFTP server on 127.0.0.1 that answers every read request with an ERROR packet
    (RFC 1350: opcode 5, the error code, the text) from a port of its own, as servers do."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                request, peer = listener.recvfrom(2048)
            except TimeoutError:
                continue
            if request[:2] == b"\0\1":  # RRQ
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as reply:
                    reply.bind(("127.0.0.1", 0))
                    reply.sendto(struct.pack("!HH", 5, code) + text + b"\0", peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join()
        listener.close()


def test_a_file_missing_from_a_tftp_server_is_said_so(tmp_path: Path) -> None:
    """curl's exit status 68 (the server's 'File not found') came with a stale 'getpeername()
    failed' as its only line: the status's meaning is now said first."""
    for port in tftp_refusing(1, b"File not found"):
        out = fetch(f"tftp://127.0.0.1:{port}/images/root.oci", tmp_path)
        assert isinstance(out["error"], str)
        assert out["error"].startswith(
            f"could not fetch tftp://127.0.0.1:{port}/images/root.oci: the TFTP server has no "
            "such file (curl: (68) "
        ), out


def test_without_bootc_retries_a_server_still_starting_is_waited_for(tmp_path: Path) -> None:
    """bootc.retries= unset retries for Policy.total seconds, as over http: url-lib's own
    --retry 3 gave up after 1 + 2 + 4 s on a server that listens 10 s after the boot asked."""
    root = tmp_path / "ftp"
    root.mkdir()
    (root / "root.oci").write_bytes(b"an archive")
    port = free_port()
    servers: list[Iterator[int]] = []

    def start() -> None:
        servers.append(ftp_server(root, port=port))
        next(servers[0])

    later = threading.Timer(10, start)
    later.start()
    try:
        out = fetch(f"ftp://127.0.0.1:{port}/root.oci", tmp_path, retries="")
    finally:
        later.cancel()
        for server in servers:
            server.close()
    assert out["error"] is None and out["left"] == ["download"], out
