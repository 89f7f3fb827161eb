"""Faults of the machine during a boot, on real filesystems in a private mount namespace: the
boot stops with one line naming the cause and the next step, leaves nothing mounted and the
root empty, and a second attempt in the same namespace works, or is refused with its line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootc_live.runtime import boot, roots, status
from imagegen import build_layout, write_bootable
from unpackers import need

pytestmark = pytest.mark.integration

MIB = 1 << 20

# Run in a private mount namespace: boot.main on the layout argv[2] into argv[1]/newroot, once
# for each command line argv[3:] (one JSON list of kernel arguments each), as attempts in one
# initramfs; after each, what is mounted under argv[1] and what the root holds. kexec is never
# run: the kernel refuses to load (as under lockdown).
ATTEMPTS = r"""
import functools, json, os, subprocess, sys
from bootc_live.runtime import block, boot, kexec, roots
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.run import CommandError
tmp, layout = sys.argv[1], sys.argv[2]
boot.STATUS_DIR, roots.WORKDIR = f"{tmp}/run", f"{tmp}/work"
kexec.kexec_boot = functools.partial(kexec.kexec_boot, workdir=f"{tmp}/kexec")
def refused(argv, **_):  # never this machine's kexec: the kernel refuses the load
    raise CommandError("kexec failed", "", "kexec_load failed: Operation not permitted")
kexec.run = refused
boot.POLICY, boot.REGISTRIES_D, block.MOUNTPOINT = f"{tmp}/none", f"{tmp}/none", f"{tmp}/disk"
newroot = f"{tmp}/newroot"
os.makedirs(newroot)
seen = []
for args in sys.argv[3:]:
    root = layout if layout.startswith("root=") else f"root=bootc-live:{layout}"
    argv = [root, "bootc.keep-modules=1", *json.loads(args)]
    code = boot.main(["boot", newroot], lambda: parse(argv))
    try:
        with open(f"{tmp}/run/status.json", encoding="utf-8") as f:
            status = json.load(f)
    except FileNotFoundError:
        status = {}
    table = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    mounted = [m for m in table.stdout.split() if m.startswith(tmp)]
    loops = subprocess.run(["losetup", "-n", "-l", "-O", "BACK-FILE"], capture_output=True,
                           text=True).stdout.split()
    seen.append({"code": code, "message": status.get("message"), "mounted": mounted,
                 "root": sorted(os.listdir(newroot)), "loops": [l for l in loops if tmp in l]})
print(json.dumps(seen))
"""


def attempts(
    tmp: Path,
    layout: Path | str,
    *args: list[str],
    before: str = "",
    said: list[str] | None = None,
) -> list[dict[str, object]]:
    """What each boot of `layout` (or of `root=…`) with these kernel arguments did, one after
    the other in one private mount namespace (where the shell commands `before` ran first);
    `said` gets the console's lines."""
    need(os.geteuid() == 0, "mounts in a private namespace need root")
    need(shutil.which("unshare") is not None, "needs unshare")
    src = Path(boot.__file__).parents[2]
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-euc", f'{before}\nexec "$@"']
    child = subprocess.run(
        [*argv, "sh", sys.executable, "-c", ATTEMPTS, str(tmp), str(layout)]
        + [json.dumps(a) for a in args],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    if said is not None:
        said.extend(child.stderr.splitlines())
    seen: list[dict[str, object]] = json.loads(child.stdout)
    return seen


# The top-level names of imagegen.bootable() (usr among them).
BOOTABLE = ["dev", "proc", "run", "sbin", "sys", "usr"]


def gnu_tar(tmp: Path, name: str, files: dict[str, bytes], base: bool = True) -> bytes:
    """A layer as GNU tar writes it: `files` (with their directories) under a tree of its own;
    a `base` layer also what the runtime's check before switch root asks (imagegen.bootable)."""
    tree = tmp / f"tree-{name}"
    if base:
        tree.mkdir(parents=True)
        write_bootable(tree)
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    argv = ["tar", "--sort=name", "--owner=0", "--group=0", "-C", str(tree), "-cf", "-", "."]
    return subprocess.run(argv, check=True, capture_output=True).stdout


def test_a_retry_after_layers_in_the_initramfs_were_freed_says_why_it_cannot_read_them(
    tmp_path: Path,
) -> None:
    """A layout in the initramfs gives each blob's memory back once its layer is applied: a
    boot that fails at the second layer (its tmpfs full) has deleted the first. A retry from the
    emergency shell (bootc.keep-modules=1 keeps the runtime for it) was told "blob … is
    missing", as if the image lacked it; it is refused with the reason and "reboot". Nothing
    stays mounted after either attempt."""
    base = gnu_tar(tmp_path, "base", {"etc/hostname": b"live\n", "var/lib/x": b"x"})
    big = gnu_tar(tmp_path, "big", {"usr/big": os.urandom(4 * MIB)}, base=False)
    build_layout(tmp_path / "layout", [base, big])
    first, second = attempts(tmp_path, tmp_path / "layout", ["rootflags=size=2M"], [])
    assert first["code"] == 1 and "the root filesystem is full while writing /usr/big" in str(
        first["message"]
    )
    assert second == {
        "code": 1,
        "message": f"bootc-live: an earlier attempt in this boot deleted layers of "
        f"{tmp_path / 'layout'} from the initramfs as it applied them (their memory went to "
        "the root): it is not whole any more; reboot to try again",
        "mounted": [],
        "root": [],
        "loops": [],
    }
    assert first["mounted"] == [] and first["root"] == []


@pytest.mark.parametrize(
    ("flags", "full_at"),
    [
        ("size=2M", "/usr/big (1 MiB written)"),
        # /, dev, etc, etc/hostname, proc, run, sbin, sbin/init (busybox, 1 MiB), sys: not usr
        ("noatime,nr_inodes=9", "/usr (1 MiB written)"),
    ],
)
def test_a_root_full_at_the_size_rootflags_gives_it_names_them_and_a_retry_boots(
    tmp_path: Path, flags: str, full_at: str
) -> None:
    """rootflags= that limit the root's tmpfs (its size, its inodes), too small for the image:
    the line names them, not "add RAM", which could not help. Nothing was deleted yet (the
    first layer failed), and the same initramfs boots at the second attempt without them, into
    the root the first left empty and unmounted."""
    layer = gnu_tar(tmp_path, "one", {"etc/hostname": b"live\n", "usr/big": os.urandom(4 * MIB)})
    build_layout(tmp_path / "layout", [layer])
    first, second = attempts(tmp_path, tmp_path / "layout", [f"rootflags={flags}"], [])
    limits = ",".join(f for f in flags.split(",") if f != "noatime")
    assert str(first["message"]).endswith(
        f": the root filesystem is full while writing {full_at}; rootflags={limits} limits the "
        "root's tmpfs: raise it, or drop it (the root is then sized to the memory)"
    )
    assert (first["code"], first["mounted"], first["root"]) == (1, [], [])
    newroot = str(tmp_path / "newroot")
    assert second["code"] == 0, second
    assert second["mounted"] == [newroot, f"{newroot}/etc", f"{newroot}/var"]
    assert second["root"] == sorted(["etc", "var", *BOOTABLE])


def test_a_full_run_directory_costs_the_status_file_not_the_boot(tmp_path: Path) -> None:
    """/run full (a tmpfs of 20% of RAM in systemd's initrd): status.json cannot be written.
    That stopped the boot as "internal error: OSError: [Errno 28] No space left on device;
    please report it" before anything was read; the boot goes on, says so once, and its status
    lines still carry the status."""
    layer = gnu_tar(tmp_path, "one", {"etc/hostname": b"live\n", "var/lib/x": b"x"})
    build_layout(tmp_path / "layout", [layer])
    run = tmp_path / "run"
    run.mkdir()
    fill = f"mount -t tmpfs -o size=4k,nr_inodes=8 full {run}; head -c 4096 /dev/zero > {run}/x"
    said: list[str] = []
    (only,) = attempts(tmp_path, tmp_path / "layout", [], before=fill, said=said)
    newroot = str(tmp_path / "newroot")
    assert only == {
        "code": 0,
        "message": None,
        "mounted": [str(run), newroot, f"{newroot}/etc", f"{newroot}/var"],
        "root": sorted(["etc", "var", *BOOTABLE]),
        "loops": [],
    }
    warning = f"bootc-live: warning: {run}/status.json cannot be written (No space left on device)"
    assert [line for line in said if "warning" in line] == [
        f"{warning}: the status is in the status lines only"
    ]
    (ready,) = [doc for doc in status.documents(said) if doc["state"] == "ready"]
    # ., etc, var and theirs (6), and imagegen.bootable()'s 9
    assert ready["mode"] == "tmpfs" and ready["entries"] == 15


KERNEL = "usr/lib/modules/6.1.0-9-amd64"


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"etc/hostname": b"live\n"}, "the image has no kernel (no usr/lib/modules/KVER/vmlinuz)"),
        (
            {f"{KERNEL}/vmlinuz": b"kernel", f"{KERNEL}/initramfs.img": b"initramfs"},
            "kexec could not load kernel 6.1.0-9-amd64 from the image: kexec_load failed: "
            "Operation not permitted",
        ),
    ],
    ids=["no-kernel", "load-refused"],
)
def test_a_failed_kexec_stage_one_gives_its_handover_back_and_a_retry_boots(
    tmp_path: Path, files: dict[str, bytes], reason: str
) -> None:
    """bootc.kexec copies the image into a tmpfs of its own (the handover) before it looks for
    the kernel. A stage one that failed left that tmpfs mounted, the whole image held in RAM
    for the emergency shell, and a retry stacked another over it; it is unmounted, and the same
    initramfs boots without bootc.kexec."""
    layer = gnu_tar(tmp_path, "one", {"var/lib/x": os.urandom(MIB), **files})
    build_layout(tmp_path / "layout", [layer])
    first, second = attempts(tmp_path, tmp_path / "layout", ["bootc.kexec=1"], [])
    assert str(first["message"]).startswith(f"bootc-live: bootc.kexec: {reason}; ")
    assert (first["code"], first["mounted"], first["root"]) == (1, [], [])
    assert second["code"] == 0 and second["mounted"] == [
        str(tmp_path / "newroot"),
        str(tmp_path / "newroot/etc"),
        str(tmp_path / "newroot/var"),
    ]


FAILING_MODPROBE = """#!/bin/sh
echo "modprobe: FATAL: Module $1 not found in directory /lib/modules/$(uname -r)" >&2
exit 1
"""


@pytest.mark.parametrize(
    ("flags", "outcome"),
    [
        ([], None),
        (
            ["rootflags=bogus_flag"],
            "bootc-live: mount failed: mount: {newroot}: wrong fs type, bad option, bad "
            "superblock on /dev/loop",
        ),
    ],
    ids=["boots", "mount-refused"],
)
def test_a_packed_root_whose_filesystem_is_built_into_the_kernel_boots(
    tmp_path: Path, flags: list[str], outcome: str | None
) -> None:
    """A kernel with squashfs built in, and no module of it in the initramfs: modprobe fails
    (as it does for any module on a kernel without /lib/modules), and the packed root was
    refused as "this kernel cannot mount the packed root: no squashfs module", which it can
    (loop and overlay were already taken so). A mount the kernel refuses (rootflags= it does
    not take) leaves no loop device and nothing mounted."""
    need(shutil.which("mksquashfs") is not None, "needs mksquashfs (squashfs-tools)")
    need("squashfs" in Path("/proc/filesystems").read_text().split(), "needs squashfs loaded")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "var").mkdir()
    (tree / "etc/hostname").write_text("live\n")
    write_bootable(tree)
    packed = tmp_path / "packed.img"
    subprocess.run(["mksquashfs", str(tree), str(packed), "-quiet", "-noappend"], check=True)
    pin = f"sha256:{hashlib.sha256(packed.read_bytes()).hexdigest()}"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "modprobe").write_text(FAILING_MODPROBE)
    (fake / "modprobe").chmod(0o755)
    root = f"root=bootc-live:packed:{packed}"
    before = f'export PATH="{fake}:$PATH"'
    pinned = [f"bootc.packed.sha256={pin}"]
    seen, again = attempts(tmp_path, root, [*pinned, *flags], pinned, before=before)
    newroot = str(tmp_path / "newroot")
    if outcome is None:
        assert seen["code"] == 0, seen
        assert seen["root"] == sorted(["etc", "var", *BOOTABLE])
        assert seen["loops"] == [str(packed)]
        return
    assert str(seen["message"]).startswith(outcome.format(newroot=newroot)), seen
    assert (seen["mounted"], seen["root"], seen["loops"]) == ([], [], [])
    # The failed boot gave the packed root's memory back: a retry says so, not that the
    # initramfs has no packed root ("append packed.img … or fix root=").
    assert not packed.exists()
    assert again == {
        "code": 1,
        "message": f"bootc-live: an earlier attempt in this boot deleted the packed root "
        f"{packed} from the initramfs as it failed (their memory went to the root): it is not "
        "whole any more; reboot to try again",
        "mounted": [],
        "root": [],
        "loops": [],
    }


def test_a_layout_on_a_read_only_filesystem_is_read_where_it_lies_and_again(
    tmp_path: Path,
) -> None:
    """root=bootc-live:/PATH on a filesystem that is mounted read-only (a live medium dracut
    mounted): its blobs cannot be deleted once applied. The first deletion stopped the boot as
    "internal error: OSError: [Errno 30] Read-only file system: …; please report it"; they
    are left where they lie (they hold no RAM), and the next boot reads them again."""
    base = gnu_tar(tmp_path, "base", {"etc/hostname": b"live\n", "var/lib/x": b"x"})
    more = gnu_tar(tmp_path, "more", {"usr/share/y": os.urandom(MIB)}, base=False)
    layout = tmp_path / "layout"
    build_layout(layout, [base, more])
    blobs = sorted(p.name for p in (layout / "blobs/sha256").iterdir())
    read_only = f"mount --bind -o ro {layout} {layout}"
    newroot = tmp_path / "newroot"
    for _ in range(2):
        shutil.rmtree(newroot, ignore_errors=True)
        (seen,) = attempts(tmp_path, layout, [], before=read_only)
        assert seen["code"] == 0, seen
        assert seen["mounted"] == [str(layout), *(f"{newroot}{p}" for p in ("", "/etc", "/var"))]
        assert seen["root"] == sorted(["etc", "var", *BOOTABLE])
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == blobs


def test_an_erofs_image_the_kernel_does_not_mount_says_what_to_check(tmp_path: Path) -> None:
    """No loop device can be had (an initramfs whose /dev lacks them): the kernel refuses the
    EROFS image's mount ("Operation not permitted"), which was the whole line, with no next
    step. It names what to check or how to boot without; the staging tree and the image's
    tmpfs are unmounted."""
    need(shutil.which("mkfs.erofs") is not None, "needs mkfs.erofs (erofs-utils)")
    layer = gnu_tar(tmp_path, "one", {"etc/hostname": b"live\n", "var/lib/x": b"x"})
    build_layout(tmp_path / "layout", [layer])
    no_loops = "mount -t tmpfs nodev /dev; mknod -m 666 /dev/null c 1 3"
    (seen,) = attempts(tmp_path, tmp_path / "layout", ["bootc.live.erofs=1"], before=no_loops)
    assert str(seen["message"]).startswith("bootc-live: mount failed: "), seen
    assert str(seen["message"]).endswith(f"; {roots.EROFS_MOUNT_HINT}")
    assert (seen["code"], seen["mounted"], seen["root"], seen["loops"]) == (1, [], [], [])
