"""Mounts of the live root: the tmpfs it is unpacked into and the final read-only layout."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .run import run


@dataclass(frozen=True)
class MountPlan:
    """How the root is mounted at $NEWROOT: `rw`, `rootflags=`, `bootc.live.{etc,var}.rw`."""

    rw: bool = False
    etc_rw: bool = True
    var_rw: bool = True
    rootflags: tuple[str, ...] = ()


def flags_hint(flags: tuple[str, ...]) -> str:
    """The next step when a mount given rootflags= fails: they may be what it refused."""
    if not flags:
        return ""
    flags_text = ",".join(flags)
    return f"rootflags={flags_text} is passed to this mount: check that this filesystem takes it"


# The inodes of a tmpfs that holds an unpacked tree: one for each KiB of its size, what the
# kernel charges an inode (BOGO_INODE_SIZE) and less than any entry takes (its inode and dentry;
# footprint.INODE). The kernel's default, half its pages of RAM whatever the size, ran out
# first for trees of many small files: at 65 536 entries on a 512 MiB machine.
INODE_SPACE = 1024


def tree_inodes(size: int) -> str:
    """The nr_inodes= option of a tmpfs of `size` bytes that holds an unpacked tree."""
    return f"nr_inodes={max(size // INODE_SPACE, 1)}"


def mount_tmpfs(target: str, size: int, extra: tuple[str, ...] = (), *, tree: bool = False) -> None:
    """An explicitly sized tmpfs that allows setuid binaries and device nodes; with `tree`,
    inodes for an unpacked tree of that size (tree_inodes).

    In the systemd initrd, sysroot.mount (from our generator) has mounted it already, empty:
    it is then sized and given rootflags= by a remount.
    """
    inodes = [tree_inodes(size)] if tree else []
    options = [f"size={size}", *inodes, "suid", "dev", *extra]
    hint = flags_hint(extra)
    if is_mounted(target) and not os.listdir(target):
        run(["mount", "-o", ",".join(["remount", *options]), target], hint=hint)
    else:
        argv = ["mount", "-t", "tmpfs", "-o", ",".join(["mode=0755", *options]), "bootc-live"]
        run([*argv, target], hint=hint)


def resize_tmpfs(target: str, size: int, *, tree: bool = False) -> None:
    """Change a mounted tmpfs's limit (with `tree`, its inodes too: tree_inodes), its other
    options as they are."""
    inodes = [tree_inodes(size)] if tree else []
    run(["mount", "-o", ",".join(["remount", f"size={size}", *inodes]), target])


def umount(target: str) -> None:
    run(["umount", "-R", target])


def is_mounted(target: str) -> bool:
    real = os.path.realpath(target)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split()[4] == real for line in f)


def _remount_bind(target: str, rw: bool) -> None:
    run(["mount", "-o", "remount,bind," + ("rw" if rw else "ro"), target])


def finish_root(newroot: str, plan: MountPlan) -> None:
    """Make the unpacked root read-only (unless rw), keeping /etc and /var as asked."""
    for name, writable in (("etc", plan.etc_rw), ("var", plan.var_rw)):
        if writable == plan.rw:
            continue  # it follows the root
        path = os.path.join(newroot, name)
        if os.path.islink(path):
            continue  # it follows what it points to, inside the root
        if not os.path.isdir(path):
            if not writable:
                continue  # nothing there to protect
            os.mkdir(path, 0o755)
        run(["mount", "--bind", path, path])
        _remount_bind(path, writable)
    if not plan.rw:
        _remount_bind(newroot, False)
