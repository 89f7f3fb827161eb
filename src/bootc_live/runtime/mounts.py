"""Mounts of the live root: the tmpfs it is unpacked into and the final read-only layout."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BootcLiveError
from .run import run

# Symbolic links followed to a place before it is a loop (the kernel's MAXSYMLINKS).
MAX_SYMLINKS = 40


class PlaceError(BootcLiveError):
    """The image's /etc or /var cannot be mounted as bootc.live.{etc,var}.rw asks."""


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


def within(root: str, path: str, *, existing: bool = True) -> str | None:
    """Where `path` leads in the tree at `root`, its symbolic links followed as a process
    chrooted there follows them (an absolute target starts again at `root`, `..` stops at
    it): the path relative to `root` ("" for the root itself). None for a loop of links (over
    the kernel's MAX_SYMLINKS) and, when `existing`, for a path that does not exist (a dangling
    link too); without, a missing part is taken as named (where a directory would be made)."""
    done: list[str] = []
    todo = list(reversed(path.split("/")))
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        if not os.path.islink(here):
            if existing and not os.path.lexists(here):
                return None
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            return None
        target = os.readlink(here)
        if target.startswith("/"):
            done.clear()
        todo.extend(reversed(target.split("/")))
    return "/".join(done)


def in_root(root: str, name: str) -> str:
    """Where /`name` lies in the tree at `root` as the booted system sees it (`within`), made
    or not; a loop of links is refused."""
    where = within(root, name, existing=False)
    if where is None:
        raise PlaceError(
            f"the image's /{name} is a loop of symbolic links",
            f"fix /{name} in the image: a directory, or a link to one",
        )
    return where


def places(newroot: str, plan: MountPlan, *, make: bool) -> list[tuple[str, str, bool]]:
    """The directories of the tree at `newroot` to mount, in order, to give /etc and /var
    what `plan` asks while the root is `plan.rw`: each is where /etc or /var leads inside the
    root (its links followed), with its name and whether it is to be writable; one that lies
    inside the other comes after it, and is mounted only if it differs from it (/etc -> var/etc with
    bootc.live.etc.rw=0 is read-only in a writable /var). With `make`, a missing directory
    to be writable is made (where a link would have it); without, it is left out."""
    wanted: dict[str, tuple[str, bool]] = {}
    for name, writable in (("etc", plan.etc_rw), ("var", plan.var_rw)):
        where = in_root(newroot, name)
        if not where and writable == plan.rw:
            continue  # the root itself, as the root is
        other = wanted.get(where)
        if other is not None and other[1] != writable:
            raise PlaceError(
                f"the image's /etc and /var are one directory (/{where}): it cannot be both "
                "writable and read-only",
                "boot with bootc.live.etc.rw= and bootc.live.var.rw= alike",
            )
        wanted[where] = (name, writable)
    out: list[tuple[str, str, bool]] = []
    for where in sorted(wanted, key=lambda w: w.split("/")):
        name, writable = wanted[where]
        enclosing = [w for w in wanted if where.startswith(w + "/")]
        if writable == (wanted[enclosing[0]][1] if enclosing else plan.rw):
            continue  # it follows what holds it
        path = _directory(newroot, name, where, plan.rw, writable)
        if path is None:
            if not (writable and make):
                continue  # nothing there to protect, or to make writable
            path = os.path.join(newroot, where)
            try:
                os.makedirs(path, 0o755)
            except OSError as err:  # a parent that is a file (/etc -> hostname/etc), say
                shown = f" (a symbolic link to /{where})" if where != name else ""
                raise PlaceError(
                    f"the image's /{name}{shown} cannot be made: {err.strerror}",
                    f"make /{name} a directory in the image",
                ) from None
        out.append((path, name, writable))
    return out


def _directory(root: str, name: str, where: str, rw: bool, writable: bool) -> str | None:
    """The directory /`name` leads to (`where`, inside the root): its path, None if there is
    none; refused if it is the root itself or not a directory."""
    shown = f"/{name}" + (f" (a symbolic link to /{where})" if where != name else "")
    if not where:
        raise PlaceError(
            f"the image's /{name} is a symbolic link to the root itself: it cannot be "
            f"{'writable' if writable else 'read-only'} while the root is "
            f"{'read-write' if rw else 'read-only'}",
            f"boot with{'' if writable else 'out'} rw, or with bootc.live.{name}.rw="
            f"{1 if rw else 0}; or make /{name} a directory in the image",
        )
    path = os.path.join(root, where)
    if os.path.isdir(path):
        return path
    if os.path.lexists(path):
        raise PlaceError(
            f"the image's {shown} is not a directory",
            f"make /{name} a directory in the image",
        )
    return None


def finish_root(newroot: str, plan: MountPlan) -> None:
    """Make the unpacked root read-only (unless rw), keeping /etc and /var as asked (places)."""
    for path, _name, writable in places(newroot, plan, make=True):
        run(["mount", "--bind", path, path])
        _remount_bind(path, writable)
    if not plan.rw:
        _remount_bind(newroot, False)
