"""Whether the root can be switched into: checked before the runtime says it is ready.

After the runtime, dracut switches root into the image's own init: in the systemd initrd,
initrd-switch-root.service asks PID 1 (`systemctl switch-root`), which refuses a root without
/etc/os-release or /usr/lib/os-release ("does not seem to be an OS tree") and an init= that is
not executable inside it, then execs /usr/lib/systemd/systemd, else /sbin/init, else /bin/sh;
in the classic initrd, init.sh takes the first executable of init= and /sbin/init (a relative
init= from the root) and `switch_root` execs it.
Either way the init is resolved inside the new root (an absolute link /sbin/init →
/lib/systemd/systemd names the image's file, not the initramfs's), and an init the kernel
cannot run (another machine's ELF, a script whose interpreter is missing) ends in a kernel
panic or a hang, long after the runtime said the root was ready. Both also need /proc, /sys
and /dev in the root to mount the kernel's filesystems on (dracut's usable_root; systemd
cannot make them in a read-only root), and systemd /run too.

`check(newroot, …)` finds the first of these problems and raises a RootError naming it, so
that the root is undone as after any other image error.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections.abc import Mapping
from typing import BinaryIO

from .errors import BootcLiveError, shown
from .mounts import within

# Where PID 1 of the systemd initrd looks when init= is not given (main.c, after switch root:
# its own binary's path, then the fallback); the classic initrd looks for /sbin/init.
DEFAULT_INITS = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
MAX_SCRIPTS = 5  # nested #! interpreters the kernel follows (exec_binprm: depth > 5 is ELOOP)
EM_NAMES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "x86_64",
            183: "aarch64", 243: "riscv64", 258: "loongarch64"}  # fmt: skip
# The ELF machine of an OCI image's architecture (the kernel that boots the image is its own)
OCI_MACHINES = {"amd64": 62, "386": 3, "arm64": 183, "arm": 40, "ppc64le": 21, "ppc64": 21,
                "s390x": 22, "riscv64": 243, "loong64": 258}  # fmt: skip
COMPAT = {62: {3}, 183: {40}}  # machines whose kernels usually run another's binaries too
PT_INTERP = 3
# What dracut's init.sh takes for the init before /sbin/init, in its order (99base/init.sh)
CLASSIC_ARGS = ("real_init", "init", "rd.distroinit")


class HandoverError(BootcLiveError):
    """The root has no init that can be run, or misses what switch root needs."""


def resolve(root: str, path: str) -> str | None:
    """`path` (absolute, as seen from inside `root`) resolved inside `root` (mounts.within):
    the path on this side, or None if it does not exist (a dangling or looping link too)."""
    where = within(root, path)
    return None if where is None else os.path.join(root, where)


def is_directory(path: str | None) -> bool:
    """Whether `path` (resolve's: None for nothing) is a directory."""
    return path is not None and os.path.isdir(path)


def present(root: str, path: str) -> bool:
    """Whether `path` is in `root` at all, a dangling link too (its directory resolved inside
    `root`)."""
    parent = resolve(root, os.path.dirname(path))
    return parent is not None and os.path.lexists(os.path.join(parent, os.path.basename(path)))


def elf_machine(head: bytes) -> int | None:
    """The e_machine of an ELF header (64 bytes at least), None if `head` is none."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    machine: int = struct.unpack_from(order + "H", head, 18)[0]
    return machine


def interpreter(f: BinaryIO, head: bytes) -> str | None:
    """The PT_INTERP of an ELF file (its dynamic loader), None for a static one."""
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    for i in range(min(phnum, 256)):
        f.seek(phoff + i * phentsize)
        ph = f.read(phentsize)
        if len(ph) < (56 if wide else 32):
            return None
        if struct.unpack_from(order + "I", ph, 0)[0] != PT_INTERP:
            continue
        if wide:
            (offset,) = struct.unpack_from(order + "Q", ph, 8)
            (size,) = struct.unpack_from(order + "Q", ph, 32)
        else:
            (offset,) = struct.unpack_from(order + "I", ph, 4)
            (size,) = struct.unpack_from(order + "I", ph, 16)
        f.seek(offset)
        return f.read(min(size, 4096)).split(b"\0")[0].decode("utf-8", "surrogateescape")
    return None


def own_machine() -> int | None:
    """The ELF machine of the interpreter running this: the initramfs's, the kernel's."""
    try:
        with open(sys.executable, "rb") as f:
            return elf_machine(f.read(64))
    except OSError:
        return None


def unrunnable(root: str, path: str, machine: int | None, depth: int = 0) -> str | None:
    """Why the kernel could not run `path` (as seen from inside `root`), None if it can."""
    real = resolve(root, path)
    if real is None:
        there = present(root, path)
        return f"{shown(path)} is a link to nothing in the image" if there else None
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        return f"{shown(path)} is not a file"
    if not st.st_mode & 0o111:
        return f"{shown(path)} is not executable"
    with open(real, "rb") as f:
        head = f.read(256)
        if head.startswith(b"#!"):
            # as binfmt_script reads it: the first line, blanks and tabs before the name,
            # the name up to a blank, a tab or a NUL (a carriage return is part of it); a
            # relative name is looked up from the root, where the init starts
            line = head[2:].split(b"\n")[0].lstrip(b" \t")
            word = line.replace(b"\t", b" ").replace(b"\0", b" ").split(b" ")[0]
            if not word:
                return f"{shown(path)} is a script that names no interpreter"
            name = word.decode("utf-8", "surrogateescape")
            if depth >= MAX_SCRIPTS:
                return f"{shown(path)} is a script whose interpreter {shown(name)} cannot be run"
            if line.endswith(b"\r") and not name.endswith("\r"):
                # the interpreter is given an argument ending in CR, which none takes
                return (
                    f"{shown(path)} is a script whose #! line ends in CR (CR LF line ends: "
                    "convert it with dos2unix)"
                )
            where = name if name.startswith("/") else "/" + name
            why = unrunnable(root, where, machine, depth + 1)
            if why is not None or resolve(root, where) is None:
                crlf = " (CR LF line ends: convert it with dos2unix)" * name.endswith("\r")
                return (
                    f"{shown(path)} is a script whose interpreter {shown(name)} "
                    + (f"cannot be run ({why})" if why else "is not in the image")
                    + crlf
                )
            return None
        elf = elf_machine(head)
        if elf is None:
            return f"{shown(path)} is neither an ELF executable nor a #! script"
        if machine is not None and elf != machine and elf not in COMPAT.get(machine, ()):
            theirs = EM_NAMES.get(elf, f"machine {elf}")
            ours = EM_NAMES.get(machine, f"machine {machine}")
            return f"{shown(path)} is an executable for {theirs}, not for this {ours} machine"
        loader = interpreter(f, head)
    if loader and resolve(root, loader) is None:
        return f"{shown(path)} needs the loader {shown(loader)}, which is not in the image"
    return None


def check(
    newroot: str,
    extra: Mapping[str, str],
    *,
    rw: bool = False,
    systemd: bool | None = None,
    machine: int | None = None,
    any_machine: bool = False,
) -> None:
    """Raise a HandoverError if the root at `newroot` cannot be switched into: `extra` are the
    command line's other options (init=), `rw` whether the root is writable, `systemd`
    whether systemd switches root (default: whether it runs this initramfs), `machine` the
    ELF machine the kernel runs (default: this interpreter's; `any_machine`: not checked)."""
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system")
    if machine is None and not any_machine:
        machine = own_machine()
    hint_init = "name the image's init with init=, or install systemd (systemd-sysv) in it"
    if systemd and not any(resolve(newroot, p) for p in OS_RELEASE):
        raise HandoverError(
            "the image has no /etc/os-release nor /usr/lib/os-release, without which "
            "systemd does not switch root into it",
            "add /usr/lib/os-release to the image (docs/live-ready.md)",
        )
    # systemd makes the missing ones in a writable root (base_filesystem_create), then
    # resolves each in the new root or fails; dracut's init.sh unmounts a root without
    # /proc, /sys and /dev (usable_root)
    needed: tuple[str, ...] = ("proc", "sys", "dev", "run") if systemd else ("proc", "sys", "dev")
    if systemd and rw:
        needed = ()
    missing = [d for d in needed if not is_directory(resolve(newroot, d))]
    if missing:
        raise HandoverError(
            f"the image has no /{', /'.join(missing)}: the initramfs mounts the kernel's "
            "filesystems there when it switches root",
            f"create the director{'ies' if len(missing) > 1 else 'y'} in the image "
            f"(mkdir /{' /'.join(missing)})",
        )
    if not systemd:
        return _check_classic(newroot, extra, machine, hint_init)
    named = extra.get("init")
    if named:
        if not named.startswith("/"):
            raise HandoverError(f"init={shown(named)} is not an absolute path", hint_init)
        why = unrunnable(newroot, named, machine)
        if why is None and resolve(newroot, named) is None:
            why = f"{shown(named)} is not in the image"
        if why:
            raise HandoverError(f"init={shown(named)} cannot be run: {why}", hint_init)
        return
    # systemd's PID 1 falls back from its own binary to /sbin/init
    first = None
    for path in DEFAULT_INITS:
        if not present(newroot, path):
            continue
        why = unrunnable(newroot, path, machine)
        if why is None:
            return
        first = first or why
    if first:
        raise HandoverError(f"the image's init cannot be run: {first}", hint_init)
    raise HandoverError("the image has no /sbin/init", hint_init)


def _check_classic(
    newroot: str, extra: Mapping[str, str], machine: int | None, hint_init: str
) -> None:
    """dracut's init.sh takes the first of real_init=, init=, rd.distroinit= and /sbin/init
    that is there and executable (a relative name from the root), and switch_root execs it:
    an init= that is not passed over for /sbin/init; the one taken must run."""
    named = [(f"{key}=", extra[key]) for key in CLASSIC_ARGS if extra.get(key)]
    tried = [*named, ("", "/sbin/init")]
    for key, name in tried:
        path = name if name.startswith("/") else "/" + name
        real = resolve(newroot, path)
        if real is None or not os.stat(real).st_mode & 0o111:
            continue
        why = unrunnable(newroot, path, machine)
        if why is None:
            return
        what = f"{key}{shown(name)}" if key else "the image's init"
        passed = "".join(f" ({k}{shown(n)} is not an executable there)" for k, n in named)
        passed = "" if key else passed  # init.sh passed over each one given
        raise HandoverError(f"{what} cannot be run: {why}{passed}", hint_init)
    whys = []
    for key, name in named:
        path = name if name.startswith("/") else "/" + name
        why = unrunnable(newroot, path, machine) or f"{shown(name)} is not in the image"
        whys.append(f"{key}{shown(name)} cannot be run: {why}")
    why = unrunnable(newroot, "/sbin/init", machine)
    whys.append(f"the image's init cannot be run: {why}" if why else "the image has no /sbin/init")
    raise HandoverError("; ".join(whys), hint_init)
