"""Resource limits: a decompression bomb can only fill the destination, and fails cleanly."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootc_live.runtime.apply import Applier, rmtree
from bootc_live.runtime.errors import LayerError
from bootc_live.runtime.streams import FileStream
from imagegen import build_layout, f, layer_tar, sym
from unpackers import REPO, assert_clean_failure, bootc_live, need, tool

pytestmark = pytest.mark.integration


def test_decompression_bomb_is_bounded_by_the_destination(tmp_path: Path) -> None:
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    # 512 MiB of zeros compress to about 0.5 MiB: far more than the 16 MiB destination holds.
    bomb = layer_tar([f("etc/ok", b"fine"), f("bomb", bytes(512 << 20))])
    layout = tmp_path / "img"
    build_layout(layout, [bomb])
    assert sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir()) < 2 << 20
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sibling = tmp_path / "sibling"
    sibling.write_text("untouched")
    # A private mount namespace: the small tmpfs exists only for this command.
    script = (
        'mount -t tmpfs -o size=16m tmpfs "$1" && '
        '"$2" -m bootc_live unpack "oci:$3" "$1/root"; rc=$?; '
        'echo "rc=$rc"; ls -A "$1"; df -k "$1" | tail -1'
    )
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mnt),
            sys.executable,
            str(layout),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout.splitlines()
    assert "rc=1" in out, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bootc-live:")]
    assert len(errors) == 1 and "root filesystem is full while writing /bomb" in errors[0], (
        result.stderr
    )
    # On the host, the advice of the host (at boot it is "add RAM or use bootc.zram=").
    assert errors[0].endswith(
        "the image is larger than the space given to it: free space there, or write somewhere else"
    )
    # Nothing partial is left, and nothing outside the destination changed.
    assert out[1:2] != ["root"], result.stdout
    assert int(out[-1].split()[2]) < 1024, f"tmpfs still holds data: {out[-1]}"
    assert sorted(os.listdir(tmp_path)) == ["img", "mnt", "sibling"]
    assert sibling.read_text() == "untouched" and os.listdir(mnt) == []


def read_at(top: Path, name: str) -> bytes:
    """A file's bytes by a path too long for one system call: a directory at a time."""
    *dirs, leaf = name.split("/")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in dirs:
            fd, parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        leaf_fd = os.open(leaf, os.O_RDONLY, dir_fd=fd)
        with os.fdopen(leaf_fd, "rb") as file:
            return file.read()
    finally:
        os.close(fd)


@pytest.mark.parametrize(("depth", "refused"), [(2047, False), (2048, True), (20_000, True)])
def test_a_path_of_path_max_or_more_is_refused(tmp_path: Path, depth: int, refused: bool) -> None:
    """One entry `a/a/…/a/f` (a 200-byte gzip layer at 20 000 levels): the applier kept every
    prefix of every path, growing by the square of the depth (a MemoryError traceback under a
    limit, an OOM kill at boot) and made each level a directory. Now an entry whose path in
    the root, `/` first, takes PATH_MAX bytes or more with its NUL is one line, before any
    directory is made; one of 4095 bytes is applied. The oracle, GNU tar, extracts the first
    and refuses the deepest ("File name too long"); so does umoci, whose limit counts the
    bundle's own path too."""
    need(os.geteuid() == 0 and shutil.which("tar") is not None, "needs root and GNU tar")
    name = "a/" * (depth - 1) + "f"  # "/" + name: 2 * depth bytes, then the NUL
    tar = layer_tar([f(name, b"deep")])
    (tmp_path / "layer.tar").write_bytes(tar)
    layout = tmp_path / "img"
    build_layout(layout, [tar])
    dest, theirs = tmp_path / "dest", tmp_path / "gnu-tar"
    theirs.mkdir()
    try:
        result = bootc_live("unpack", f"oci:{layout}:latest", str(dest), tmpdir=tmp_path)
        gnu = tool("tar", "-xf", str(tmp_path / "layer.tar"), "-C", str(theirs))
        if not refused:
            assert result.returncode == 0, result.stderr
            assert read_at(dest, name) == b"deep"
            assert gnu.returncode == 0 and read_at(theirs, name) == b"deep", gnu.stderr
            return
        said = assert_clean_failure(result).splitlines()[-1]
        assert "would be at a path of over 4095 bytes (PATH_MAX)" in said, said
        assert not dest.exists() or list(dest.iterdir()) == []
        if depth > 2048:
            assert gnu.returncode != 0 and "File name too long" in gnu.stderr, gnu.stderr
    finally:  # pytest's own clean-up recurses a level a frame: too deep for it
        for tree in (dest, theirs):
            rmtree(str(tree))


def test_no_directory_is_made_past_path_max_through_a_link(tmp_path: Path) -> None:
    """An entry whose name is short but which a link leads deep: its missing parents are made
    up to PATH_MAX at most, then it is refused (the applier itself, without the clean-up a
    failed unpack does; 1100 levels were made below the link's 1000 before)."""
    deep = "d/" * 1000  # the link's target: 2000 bytes with the root's "/"
    below = "a/" * 1100  # then 2200 bytes more, made as the entry's parents
    entries = [f(deep + "keep", b"k"), sym("l", deep.rstrip("/")), f("l/" + below + "f", b"")]
    root = tmp_path / "root"
    root.mkdir()
    applier = Applier(str(root), print)
    try:
        with pytest.raises(LayerError, match="would be at a path of over 4095 bytes"):
            applier.apply_layer(FileStream(io.BytesIO(layer_tar(entries))))
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        made = 0
        for part in [*deep.rstrip("/").split("/"), *below.rstrip("/").split("/")]:
            try:
                fd, parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            except FileNotFoundError:
                break
            os.close(parent)
            made += part == "a"
        os.close(fd)
        assert made > 0 and 2000 + 2 * made < 4096, made
    finally:
        applier.close()
        rmtree(str(root))
