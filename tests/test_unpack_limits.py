"""Resource limits: a decompression bomb can only fill the destination, and fails cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import build_layout, f, layer_tar
from unpackers import REPO, need

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
