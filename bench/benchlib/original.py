"""The original pipeline as a baseline for bench/boot's original-* rows: its dracut module
(bench/original/90original-live) built into an initramfs by the same dracut as ours (the
image's, in a chroot of the image; or the host's, for the reference image), and its artifacts:
that initramfs beside the kernel and root.oci of ours, the archive embedded as an initrd."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from benchlib.artifacts import run_step
from benchlib.common import REPO, BenchError
from bootc_live.build import concatenate
from bootc_live.dracut import SYSTEMD_MODULES, host_compress, host_dracut_tree, in_image
from bootc_live.runtime.cpio import CpioWriter
from bootc_live.runtime.run import CommandError

MODULE = REPO / "bench" / "original" / "90original-live"
UMOCI = Path("/usr/bin/umoci")  # Debian's umoci on the host
ARCHIVE = "root.oci"  # the embedded archive's path in the initramfs
INITRD_INSIDE = "/var/tmp/original-live-initrd.img"


def version(argv: list[str]) -> str:
    """A tool's version: the last word of its --version's first line."""
    _, out = run_step([*argv, "--version"], f"{argv[0]} --version")
    return out.splitlines()[0].split()[-1] if out.strip() else "?"


def build_in_image(bootc_live: list[str], source: str, kver: str, out: Path) -> dict[str, Any]:
    """initrd.img of the original module by the image's own dracut, as bootc-live build makes
    ours (the image unpacked, dracut in a chroot of it, --add beside the image's configuration).
    The image has tar but no umoci: the host's is put into the unpacked image first."""
    root = out / "image-root"
    run_step([*bootc_live, "unpack", "-q", source, os.fspath(root)], "unpacking the image")
    try:
        shutil.copytree(MODULE, root / "usr/lib/dracut/modules.d" / MODULE.name)
        umoci = "the image's"
        if not (root / "usr/bin/umoci").exists():
            shutil.copy2(UMOCI, root / "usr/bin/umoci")
            umoci = "the host's /usr/bin/umoci (the image has none)"
        (root / "var/tmp").mkdir(parents=True, exist_ok=True)
        argv = ["dracut", "--force", "--no-hostonly", "--kver", kver, "--add", "original-live"]
        try:
            in_image(root, [*argv, INITRD_INSIDE], hint="see dracut's output")
        except CommandError as err:
            raise BenchError(f"the original's initramfs: dracut failed: {err.detail}") from None
        shutil.move(root / INITRD_INSIDE.lstrip("/"), out / "initrd.img")
        return {
            "dracut": "the image's dracut (in a chroot of it)",
            "tar": version([os.fspath(root / "usr/bin/tar")]),
            "umoci": f"{version([os.fspath(UMOCI)])}, {umoci}",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_with_host(kver: str, out: Path) -> dict[str, Any]:
    """initrd.img of the original module by the host's dracut, with the modules bootc-live build
    --host gives ours (a systemd initrd, systemd-networkd, QEMU's drivers), the host's
    configuration ignored."""
    base = host_dracut_tree(out)  # the host's dracut with bootc-live's modules (not asked for)
    shutil.copytree(MODULE, base / "modules.d" / MODULE.name)
    confdir = out / "dracut.conf.d"
    confdir.mkdir()
    # base as for ours (its module depends on it): dracut-lib.sh, the emergency shell
    modules = ["base", *SYSTEMD_MODULES, "systemd-networkd", "qemu qemu-net", "original-live"]
    # compressed as ours: the sizes and build times compare contents, not compressors
    compress = host_compress(kver)
    run_step(
        [
            "env",
            f"dracutbasedir={base}",
            "dracut",
            "--force",
            "--no-hostonly",
            "--kver",
            kver,
            "--conf",
            "/dev/null",
            "--confdir",
            os.fspath(confdir),
            "--modules",
            " ".join(modules),
            *(["--compress", compress] if compress else []),
            os.fspath(out / "initrd.img"),
        ],
        "the original's initramfs (host dracut)",
    )
    shutil.rmtree(base)
    return {
        "dracut": "the host's dracut",
        "tar": version(["tar"]),
        "umoci": version([os.fspath(UMOCI)]),
    }


def command_line(label: str) -> str:
    """The original's command line for its embedded archive."""
    return f"root=original-live:/{ARCHIVE} bootclabel={label}"


def label_of(ours: Path) -> str:
    """The image's label, as ours boots it (bootclabel= of its cmdline.txt)."""
    for word in (ours / "cmdline.txt").read_text().split():
        if word.startswith("bootclabel="):
            return word.split("=", 1)[1]
    return "latest"


def assemble(ours: Path, out: Path, embed: bool) -> None:
    """The original's artifacts in `out` (which holds its initrd.img): the kernel and root.oci
    of ours (the same files); with `embed`, rootfs.img, a cpio holding root.oci (the kernel
    unpacks it into the initramfs: the archive in RAM), after initrd.img in initrd-full.img."""
    (out / "vmlinuz").symlink_to(ours / "vmlinuz")
    (out / ARCHIVE).symlink_to(ours / "root.oci")
    if embed:
        with open(ours / "root.oci", "rb") as src, open(out / "rootfs.img", "wb") as cpio:
            writer = CpioWriter(cpio)
            writer.add_file(ARCHIVE, src, os.fstat(src.fileno()).st_size)
            writer.close()
        concatenate(out / "initrd-full.img", out / "initrd.img", out / "rootfs.img")
    else:
        # URL boots only: initrd.img alone (vm.boot wants the files to exist).
        (out / "rootfs.img").symlink_to(ours / "rootfs.img")
        (out / "initrd-full.img").symlink_to(out / "initrd.img")
    (out / "cmdline.txt").write_text(command_line(label_of(ours)) + "\n")
