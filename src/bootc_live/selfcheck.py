"""`bootc-live build` proves each initramfs it makes before publishing it (issue 13).

The initramfs is unpacked by the userland that made it (its own `lsinitrd`, so its compressor
is at hand), then chrooted into: its own python3 runs `initrd_probe.py`, which imports the
runtime (and TLS where a network module is in), looks for each command our modules run, and
traces the libraries of every dynamically linked file with the initramfs's loader. A problem
fails the build with one line naming what is missing, what needs it and, when the userland's
package manager knows it, the package that holds it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import toolfiles
from .dracut import in_image, new_stage
from .runtime.errors import BootcLiveError
from .runtime.run import CommandError, run

PROBE = Path(__file__).with_name("initrd_probe.py")
MODES = {  # what each of our modules lets an initramfs boot
    "bootc-live": "embedded and appended images and packed roots",
    "bootc-live-net": "URLs (http, https; ftp, tftp, nfs through url-lib); registries (docker://)",
    "bootc-live-zram": "bootc.zram",
    "bootc-live-erofs": "bootc.live.erofs",
    "bootc-live-kexec": "bootc.kexec",
}
LIBRARY_DIRS = ("usr/lib64", "usr/lib", "lib64", "lib")


class SelfCheckError(BootcLiveError):
    """The initramfs just built would fail at boot."""


@dataclass(frozen=True)
class Problem:
    kind: str  # library (`what` is its soname), command, tool (a command that fails) or python
    what: str
    needed_by: str  # a file of the initramfs, or a mode


@dataclass(frozen=True)
class Verdict:
    modules: tuple[str, ...]  # our dracut modules in the initramfs
    tools: dict[str, list[str]] = field(default_factory=dict)  # toolfiles.manifest

    def modes(self) -> str:
        return "; ".join(MODES[name] for name in MODES if name in self.modules)


def check(initrd: Path, userland: Path, scratch: Path) -> Verdict:
    """Unpack `initrd` with the tools of `userland` (/ for the host) and probe it chrooted;
    then work out the files of its optional tools (toolfiles.py)."""
    tree = unpack(initrd, userland, scratch)
    try:
        return replace(probe(tree, userland), tools=toolfiles.manifest(tree))
    finally:
        shutil.rmtree(tree if userland == Path("/") else tree.parent, ignore_errors=True)


def probe(tree: Path, userland: Path) -> Verdict:
    """Run initrd_probe.py in the unpacked initramfs at `tree`; raise on any problem."""
    # A new name in the tree's top directory (ours): a name of the initramfs's own could be
    # a link it planted, and copying the probe over it would write where that leads.
    fd, script = tempfile.mkstemp(prefix=".bootc-live-probe-", suffix=".py", dir=tree)
    try:
        with open(fd, "wb") as out, open(PROBE, "rb") as f:
            shutil.copyfileobj(f, out)
        answer = run(
            ["chroot", tree, "/usr/bin/python3", "-S", "-E", "/" + os.path.basename(script)],
            capture=True,
            hint="the initramfs's python3 does not start: rebuild with the image's python3 "
            "installed, or use --host",
        )
    except CommandError as err:
        raise SelfCheckError(
            f"the initramfs fails its self-check: {err.detail}", err.hint
        ) from None
    finally:
        os.unlink(script)
    modules: list[str] = []
    problems: list[Problem] = []
    for line in answer.stdout.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "module":
            modules.append(value)
        elif kind == "problem":
            problems.append(Problem(*value.split("\t", 2)))
    if problems:
        raise SelfCheckError(*explain(problems, userland))
    return Verdict(tuple(modules))


def unpack(initrd: Path, userland: Path, scratch: Path) -> Path:
    """The initramfs's files below a new directory (in the image's root for an image build,
    a new one of our own there: dracut.new_stage)."""
    if userland == Path("/"):
        scratch.mkdir(parents=True)
        try:
            run(["lsinitrd", "--unpack", initrd], cwd=scratch, hint=LSINITRD_HINT)
        except CommandError as err:
            shutil.rmtree(scratch, ignore_errors=True)
            raise _unpack_failed(err) from None
        return scratch
    stage = new_stage(userland)
    inside = "/" + stage.name
    try:
        try:
            os.link(initrd, stage / "initrd.img")
        except OSError:
            shutil.copyfile(initrd, stage / "initrd.img")
        (stage / "tree").mkdir()
        in_image(
            userland,
            ["lsinitrd", "--unpack", f"{inside}/initrd.img"],
            cwd=f"{inside}/tree",
            hint=LSINITRD_HINT,
        )
        (stage / "initrd.img").unlink()
        return stage / "tree"
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(err, CommandError):
            raise _unpack_failed(err) from None
        raise


def _unpack_failed(err: CommandError) -> SelfCheckError:
    return SelfCheckError(f"cannot unpack the initramfs to check it: {err.detail}", err.hint)


LSINITRD_HINT = "the userland that built the initramfs needs dracut's lsinitrd to check it"


def explain(problems: Sequence[Problem], userland: Path) -> tuple[str, str]:
    """The first problem as one line (libraries come first: they cause the others), and a hint."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if first.kind == "library":
        found = find_library(userland, first.what)
        package = owner(userland, found) if found else None
        message = f"the initramfs cannot load {first.what}, needed by {first.needed_by}{more}"
        if found and package:
            hint = f"dracut left out {found} of the image's package {package}; please report it"
        elif found:
            hint = f"dracut left out /{found}; please report it"
        else:
            hint = f"install the package that provides {first.what} in the image"
        return message, hint
    if first.kind == "command":
        return (
            f"the initramfs lacks the command {first.what}, needed by {first.needed_by}{more}",
            f"install the package that provides {first.what} in the image, or leave out "
            f"{first.needed_by}",
        )
    if first.kind == "tool":
        return (
            f"the initramfs cannot run {first.what}, needed by {first.needed_by}{more}",
            "reinstall the package that provides it in the image",
        )
    return (
        f"the initramfs fails its self-check: {first.what}{more}",
        "install python3 with its ssl module and libssl in the image"
        if first.needed_by == "https"
        else "reinstall the image's python3 (its standard library is incomplete), or use --host",
    )


def find_library(userland: Path, soname: str) -> str | None:
    """Where the userland keeps a library (relative to its root), if anywhere."""
    for base in LIBRARY_DIRS:
        directory = userland / base
        if not directory.is_dir():
            continue
        for candidate in (directory, *sorted(directory.glob("*-linux-*"))):
            if (candidate / soname).exists():
                return os.path.relpath(candidate / soname, userland)
    return None


def owner(userland: Path, relative: str) -> str | None:
    """The package that holds a file, asked of the userland's own package database."""
    # A merged /usr has two names for a file, and the database knows one of them.
    paths = ["/" + relative.removeprefix("usr/"), "/usr/" + relative.removeprefix("usr/")]
    queries: list[list[str | os.PathLike[str]]] = []
    for path in paths:
        if (userland / "var/lib/dpkg/status").exists() and shutil.which("dpkg-query"):
            queries.append(["dpkg-query", "--admindir", userland / "var/lib/dpkg", "-S", path])
        if shutil.which("rpm") and (userland / "usr/lib/sysimage/rpm").exists():
            queries.append(["rpm", "--root", userland, "-qf", "--qf", "%{NAME}\n", path])
    for argv in queries:
        try:
            answer = run(argv, capture=True).stdout.strip()
        except CommandError:
            continue
        if answer:
            return answer.split(":", 1)[0].splitlines()[0]
    return None
