"""The artifacts the rows boot: `bootc-live build`s, their views for URL boots, their sizes,
the root's tmpfs footprint, and bench/unpack's reference image."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib.common import REPO, BenchError, log
from benchlib.refimage import REF_NAME

# What a build that packs adds, and a packed row boots (VmConfig(packed=True)).
PACKED_FILES = ("packed.img", "cmdline-packed.txt")


def run_step(argv: list[str], what: str) -> tuple[float, str]:
    """Run a host step in a session of its own (an interruption stops all of it, dracut in a
    chroot included); its seconds and standard output."""
    log("+ " + shlex.join(argv))
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise BenchError(f"{what} failed:\n{stderr.strip()[-3000:]}")
    return time.monotonic() - start, stdout


def build_artifacts(
    bootc_live: list[str], source: str, out: Path, *options: str, pack: bool = False
) -> float:
    """`bootc-live build`; its seconds. Only with `pack` does it make packed.img (in the format
    the kernel's config chooses): the rest pass --pack none (squashfs xz costs minutes)."""
    packing = [] if pack else ["--pack", "none"]
    seconds, _ = run_step(
        [*bootc_live, "build", source, "-o", os.fspath(out), *options, *packing],
        "bootc-live build",
    )
    return seconds


def tmpfs_footprint(bootc_live: list[str], source: str, mountpoint: Path) -> int:
    """Bytes a tmpfs holds once `bootc-live unpack` has written the image into it, on the host.

    The tmpfs lives in a private mount namespace of its own and vanishes with it.
    """
    mountpoint.mkdir(parents=True)
    script = (
        'set -e; d=$1; s=$2; shift 2; mount -t tmpfs -o size=16g,mode=0755 bench "$d"; '
        '"$@" unpack -q "$s" "$d"; df -B1 --output=used "$d" | tail -n 1'
    )
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
    _, out = run_step(
        [*argv, "sh", os.fspath(mountpoint), source, *bootc_live], "unpacking on the host"
    )
    return int(out.split()[-1])


def url_view(artifacts: Path, view: Path) -> Path:
    """The artifacts as a URL boot loads them: initrd.img alone, without the embedded image."""
    view.mkdir()
    for name in ("vmlinuz", "initrd.img", "rootfs.img", "cmdline.txt", *PACKED_FILES):
        if name in PACKED_FILES and not (artifacts / name).exists():
            continue  # a build with --pack none
        (view / name).symlink_to(artifacts / name)
    (view / "initrd-full.img").symlink_to(artifacts / "initrd.img")
    return view


def os_release_name(root: Path) -> str:
    """PRETTY_NAME of a root, for its systemd's greeting (`Welcome to NAME!`)."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = root / rel
        if path.is_symlink() and os.readlink(path).startswith("/"):
            continue  # it would name the host's file
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return "Debian GNU/Linux 12 (bookworm)"


def sizes_of(artifacts: Path) -> dict[str, int]:
    names = ("initrd.img", "rootfs.img", "initrd-full.img", "root.oci", "vmlinuz", "packed.img")
    return {
        name: (artifacts / name).stat().st_size for name in names if (artifacts / name).exists()
    }


def packed_record(artifacts: Path) -> dict[str, Any]:
    """packed.json of a build that packed: the image, sha256, bytes, format, compressor, tool."""
    return dict(json.loads((artifacts / "packed.json").read_text()))


def reference_image(cache: Path, kind: str) -> dict[str, Any]:
    """bench/unpack's reference image (built and cached by it when missing)."""
    seconds, _ = run_step(
        [
            os.fspath(REPO / "bench" / "unpack"),
            "--build-only",
            "--images",
            kind,
            "--cache",
            os.fspath(cache),
        ],
        "bench/unpack --build-only",
    )
    if seconds > 5:
        log(f"reference image built in {seconds:.0f} s")
    info = json.loads((cache / "images" / kind / "image.json").read_text())
    root = json.loads((cache / "root.json").read_text())
    return {
        "kind": kind,
        "layout": os.fspath(cache / "images" / kind / "layout"),
        "source": f"oci:{cache / 'images' / kind / 'layout'}:{REF_NAME}",
        "layers": info["layers"],
        "compressed_bytes": sum(layer["size"] for layer in info["layers"]),
        "entries": root["figures"]["entries"],
        "unpacked_bytes": root["figures"]["bytes"],
        "greeting": f"Welcome to {os_release_name(cache / 'root')}!",
    }


def layout_layers(layout: Path) -> list[dict[str, Any]]:
    """The layer descriptors of an OCI layout's (first) image."""
    blobs = layout / "blobs" / "sha256"
    (entry, *_) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((blobs / entry["digest"].split(":", 1)[1]).read_text())
    return list(manifest["layers"])
