"""Which files of an initramfs each of its optional tools alone needs (runtime/tools.py).

`bootc-live build` works this out on the unpacked initramfs it has just checked, and puts the
answer into the initramfs (runtime.tools.MANIFEST), so that a boot which will not run a tool
can delete its files and give their memory to the root.

A tool's files are its executable and the shared libraries it loads (DT_NEEDED, through every
library's own) that nothing else keeps. Everything else in the initramfs keeps what it loads:
every other ELF file is a root of the keeping, even a library nothing names (it may be
dlopened), and so is a library whose name another file holds as a string (what dlopen is
given: glibc and systemd dlopen libidn2 and libp11-kit by name). Sonames resolve to every file
of that name, wherever it is: keeping too much is safe, deleting what is loaded is not. A tool
stays whole when anything else in the initramfs may run it (RUNS_ELF, RUNS_TEXT; in a Go or
Rust program, whose strings have no end marked, RUNS_ANYWHERE), or when its executable answers
to names other than its own (a multi-call binary).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from .runtime.mounts import within
from .runtime.tools import TOOLS

PATH = ("usr/sbin", "usr/bin", "sbin", "bin")
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NEEDED, DT_STRTAB = 1, 5
# Names a file may hold of a library, as dlopen is given them: libfoo.so, libfoo.so.1, …
MENTION = re.compile(rb"lib[A-Za-z0-9_+-]+(?:[.-][A-Za-z0-9_+]+)*?\.so(?:\.[0-9]+)*")
# What runs a tool: its name (or another of its names) as a program holds it to exec it, a
# whole string, bare or at the end of a path; as a script, a unit or a udev rule names it, a
# word outside comments. dracut's url-lib is curl's wrapper: whatever names its fetch_url runs
# curl. Our runtime (RUNTIME) decides at boot what it runs: what it names does not count.
WRAPPERS = {"fetch_url": "curl"}
_RUN_NAMES = sorted({*TOOLS, *(a for aliases in TOOLS.values() for a in aliases), *WRAPPERS})
_ALTERNATIVES = b"|".join(re.escape(n.encode()) for n in _RUN_NAMES)
RUNS_ELF = re.compile(rb"(?<=[\0/])(" + _ALTERNATIVES + rb")(?=\0)")
RUNS_TEXT = re.compile(rb"(?<![A-Za-z0-9_.+-])(" + _ALTERNATIVES + rb")(?![A-Za-z0-9_+-])")
# Go and Rust lay a program's strings end to end, with no NUL after each ("…mkdirtempmkfs.ext4
# mode=0620…" in podman): in a program of theirs a tool's name counts wherever it stands. What
# marks one: Go's build information, the paths of Rust's core library in its panic messages.
UNTERMINATED = (b"\xff Go buildinf:", b"/library/core/src/")
RUNS_ANYWHERE = re.compile(rb"(" + _ALTERNATIVES + rb")")
RUNTIME = "usr/lib/bootc-live/"
URL_LIB = "url-lib.sh"


class Unreadable(ValueError):
    """An ELF file whose program headers or dynamic section cannot be read."""


def needed(data: bytes) -> list[str] | None:
    """The DT_NEEDED sonames of an ELF file's bytes; None if it is not an ELF file, [] if it
    is linked statically; Unreadable if its headers or dynamic section are broken."""
    if data[:4] != b"\x7fELF" or len(data) < 52 or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    try:
        if wide:
            phoff, phentsize, phnum = struct.unpack_from(order + "Q14xHH", data, 32)
        else:
            phoff, phentsize, phnum = struct.unpack_from(order + "I10xHH", data, 28)
        loads, dynamic = [], None
        for i in range(phnum):
            at = phoff + i * phentsize
            if wide:
                p_type, _, offset, vaddr, _, filesz = struct.unpack_from(order + "IIQQQQ", data, at)
            else:
                p_type, offset, vaddr, _, filesz = struct.unpack_from(order + "IIIII", data, at)
            if p_type == PT_LOAD:
                loads.append((vaddr, offset, filesz))
            elif p_type == PT_DYNAMIC:
                dynamic = (offset, filesz)
        if dynamic is None:
            return []
        entry = struct.Struct(order + ("qQ" if wide else "iI"))
        names, strtab = [], None
        for at in range(dynamic[0], dynamic[0] + dynamic[1] - entry.size + 1, entry.size):
            tag, value = entry.unpack_from(data, at)
            if tag == 0:
                break
            if tag == DT_NEEDED:
                names.append(value)
            elif tag == DT_STRTAB:
                strtab = value
        base = next(
            (o + strtab - v for v, o, n in loads if strtab is not None and v <= strtab < v + n),
            None,
        )
    except (struct.error, OverflowError):
        raise Unreadable("its headers point past its end") from None
    if base is None:
        if names:
            raise Unreadable("its string table is outside its segments")
        return []
    found = []
    for offset in names:
        end = data.find(b"\0", base + offset)
        if end < 0:
            raise Unreadable("a library's name is past its end")
        found.append(data[base + offset : end].decode(errors="replace"))
    return found


def inside(root: Path, rel: str) -> str | None:
    """Where `rel` leads in the tree at `root`, following its symlinks as a process chrooted
    there would (mounts.within): a relative path that exists, "" for the root itself, or None
    (a dangling link, a loop)."""
    return within(os.fspath(root), rel)


def has(root: Path, rel: str, kind: str = "file") -> bool:
    """Whether the tree at `root` has a `kind` ("file" or "dir") at `rel`, its links
    followed inside it (`inside`)."""
    found = inside(root, rel)
    if found is None:
        return False
    path = root / found
    return path.is_dir() if kind == "dir" else path.is_file()


class Tree:
    """An unpacked initramfs: its regular files, the names leading to each (links followed
    inside the tree), and its ELF files' needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: dict[str, set[str]] = {}  # a file -> the basenames leading to it
        self.links: dict[str, list[str]] = {}  # a file -> its hard links (itself included)
        self.canonical: dict[str, str] = {}  # a hard link -> the file it is known as
        self.by_name: dict[str, set[str]] = {}  # a basename -> the files it leads to
        self.elves: dict[str, list[str]] = {}  # an ELF file -> its DT_NEEDED sonames
        self.mentions: dict[str, set[str]] = {}  # an ELF file -> the library names it holds
        self.commands: dict[str, set[str]] = {}  # a file -> the tools it runs (names)
        self.unreadable: list[str] = []  # ELF files whose needs cannot be known
        inodes: dict[tuple[int, int], str] = {}  # a file is known by its first link, sorted
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir in ("usr/lib/modules", "lib/modules"):
                dirnames[:] = []  # kernel modules: never loaded as shared objects
                continue
            linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in sorted(filenames + linked):
                found = self.resolve(os.path.normpath(os.path.join(rel_dir, name)))
                if found is None:
                    continue
                st = os.stat(root / found)
                target = inodes.setdefault((st.st_dev, st.st_ino), found)
                self.canonical[found] = target
                if found not in self.links.setdefault(target, []):
                    self.links[target].append(found)
                self.names.setdefault(target, set()).add(name)
                self.by_name.setdefault(name, set()).add(target)
        for rel in self.names:
            with open(root / rel, "rb") as f:
                data = f.read()
            try:
                found_needed = needed(data)
            except Unreadable:
                self.unreadable.append(rel)
                continue
            if found_needed is not None:
                self.elves[rel] = found_needed
                self.mentions[rel] = {m.decode() for m in MENTION.findall(data)}
                runs = RUNS_ANYWHERE if any(m in data for m in UNTERMINATED) else RUNS_ELF
                self.commands[rel] = {m.decode() for m in runs.findall(data)}
            elif b"\0" not in data[:8192]:  # a script, a unit, a rule: its lines but comments
                lines = (ln for ln in data.splitlines() if not ln.lstrip().startswith(b"#"))
                self.commands[rel] = {m.decode() for m in RUNS_TEXT.findall(b"\n".join(lines))}

    def resolve(self, rel: str) -> str | None:
        """The regular file `rel` leads to, following symlinks as the initramfs would (an
        absolute target is from the initramfs's root), or None."""
        found = inside(self.root, rel)
        return found if found and (self.root / found).is_file() else None

    def loads(self, rel: str) -> set[str]:
        """The files `rel` loads directly: every file each of its sonames leads to."""
        return {t for soname in self.elves.get(rel, ()) for t in self.by_name.get(soname, ())}

    def closure(self, roots: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        pending = list(roots)
        while pending:
            rel = pending.pop()
            if rel not in seen:
                seen.add(rel)
                pending.extend(self.loads(rel) - seen)
        return seen

    def executable(self, tool: str) -> str | None:
        """The ELF file the tool's name (or one of its own other names) leads to."""
        for name in (tool, *TOOLS[tool]):
            for directory in PATH:
                found = self.resolve(f"{directory}/{name}")
                if found is not None and self.canonical.get(found) in self.elves:
                    return self.canonical[found]
        return None

    def files_of(self, tool: str) -> list[str]:
        """The files only `tool` needs, as absolute paths in the initramfs (every name of
        each); [] when the tool is absent, a multi-call binary, or another file may run it."""
        exe = self.executable(tool)
        if exe is None or self.names[exe] - {tool, *TOOLS[tool]}:
            return []
        mine = self.closure([exe])
        while True:
            kept = self.closure(rel for rel in self.elves if rel not in mine)
            mine -= kept
            named = {
                rel
                for rel in mine - {exe}
                if any(
                    self._mentioned(rel, self.mentions[other])
                    for other in self.elves
                    if other not in mine
                )
            }
            if not named:
                break
            mine -= self.closure(named)
        if self.run_by_others(tool, mine):
            return []
        return sorted(f"/{path}" for rel in mine for path in self.links[rel])

    def run_by_others(self, tool: str, mine: set[str]) -> bool:
        """Whether a file outside `mine` may run `tool` (RUNS_ELF, RUNS_ANYWHERE, RUNS_TEXT)."""
        names = {tool, *TOOLS[tool], *(w for w, t in WRAPPERS.items() if t == tool)}
        for rel, commands in self.commands.items():
            if rel in mine or rel.startswith(RUNTIME) or not commands & names:
                continue
            if os.path.basename(rel) == URL_LIB and commands & names <= {"curl", "fetch_url"}:
                continue  # the wrapper itself: its callers count
            return True
        return False

    def _mentioned(self, rel: str, mentions: set[str]) -> bool:
        return any(n == m or n.startswith(m + ".") for n in self.names[rel] for m in mentions)


def manifest(root: Path) -> dict[str, list[str]]:
    """For each of runtime.tools.TOOLS in the unpacked initramfs at `root`: the files only it
    needs."""
    tree = Tree(root)
    if tree.unreadable:
        return {}  # what they load is unknown: nothing may go
    found = {tool: tree.files_of(tool) for tool in TOOLS}
    return {tool: files for tool, files in found.items() if files}
