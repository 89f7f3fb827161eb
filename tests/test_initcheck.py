"""The check before the root is reported ready: that it can be switched into (initcheck).

The roots are made of the real files of the cached Debian root (its systemd, its loader, its
absolute link /sbin/init -> /lib/systemd/systemd), Debian's busybox-static as an init that is
not systemd, and an aarch64 ELF from Debian's libc6-arm64-cross as another machine's init.
What the check decides is compared with what systemd's PID 1 and dracut's init.sh do with
such a root (their sources: src/core/dbus-manager.c, main.c; modules.d/99base/init.sh)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import initcheck
from debian_image import BOOKWORM, CACHES, ensure_image, root_key

BUSYBOX = Path("/bin/busybox")  # busybox-static (./setup): static, for this machine
AARCH64 = Path("/usr/aarch64-linux-gnu/lib/libc.so.6")  # libc6-arm64-cross (./setup)
X86_64 = 62
# What of the Debian root the test roots take: the systemd binary, the loader it names, the
# links between them (as Debian has them), os-release and the mount points.
KEEP = [
    "bin", "sbin", "lib", "lib64", "usr/sbin/init", "usr/lib/systemd/systemd",
    "usr/lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/bin/sh", "usr/bin/dash", "usr/lib/os-release", "etc/os-release",
    "proc", "sys", "dev", "run",
]  # fmt: skip


@pytest.fixture(scope="module")
def debian() -> Path:
    ensure_image()
    return CACHES / BOOKWORM.name / f"root-{root_key(BOOKWORM)}" / "root"


@pytest.fixture
def root(debian: Path, tmp_path: Path) -> Path:
    """A copy of the parts of the Debian root an init needs (links copied as links)."""
    new = tmp_path / "root"
    for name in KEEP:
        src, dst = debian / name, new / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            dst.mkdir()
        else:
            shutil.copy2(src, dst)
    return new


def decide(root: Path, systemd: bool, **extra: str) -> str | None:
    try:
        initcheck.check(str(root), extra, systemd=systemd, machine=X86_64)
    except initcheck.HandoverError as err:
        line = err.line()
        assert "\n" not in line and str(root) not in line  # one line, the image's own paths
        return line
    return None


def relink(root: Path, name: str, target: str) -> None:
    path = root / name
    path.unlink()
    os.symlink(target, path)


def script(root: Path, name: str, text: str, mode: int = 0o755) -> None:
    (root / name).write_text(text)
    (root / name).chmod(mode)


Change = Callable[[Path], None]
# A change to the Debian root; what systemd's switch root, then what dracut's init.sh, says.
CASES: dict[str, tuple[Change, str | None, str | None]] = {
    "as Debian has it": (lambda r: None, None, None),
    # PID 1 execs its own binary first: no /sbin/init is no matter to it, to init.sh it is
    "no /sbin/init (systemd without systemd-sysv)": (
        lambda r: (r / "usr/sbin/init").unlink(),
        None,
        "the image has no /sbin/init",
    ),
    "no init at all": (
        lambda r: [(r / p).unlink() for p in ("usr/sbin/init", "usr/lib/systemd/systemd")],
        "the image has no /sbin/init",
        "the image has no /sbin/init",
    ),
    # The absolute link names the image's /lib/systemd/systemd; this machine has one too
    "/sbin/init -> /lib/systemd/systemd, which the image lacks": (
        lambda r: (r / "usr/lib/systemd/systemd").unlink(),
        "/sbin/init is a link to nothing in the image",
        "/sbin/init is a link to nothing in the image",
    ),
    "/sbin/init a relative link": (
        lambda r: relink(r, "usr/sbin/init", "../lib/systemd/systemd"),
        None,
        None,
    ),
    "/sbin/init a link through the absolute /lib64 link": (
        lambda r: relink(r, "usr/sbin/init", "/lib64/../lib/systemd/systemd"),
        None,
        None,
    ),
    "/sbin/init a link loop": (
        lambda r: [(r / "usr/lib/systemd/systemd").unlink(), relink(r, "usr/sbin/init", "init")],
        "/sbin/init is a link to nothing in the image",
        "/sbin/init is a link to nothing in the image",
    ),
    "systemd not executable": (
        lambda r: (r / "usr/lib/systemd/systemd").chmod(0o644),
        "/usr/lib/systemd/systemd is not executable",
        "/sbin/init is not executable",
    ),
    "the loader systemd names missing": (
        lambda r: (r / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unlink(),
        "/usr/lib/systemd/systemd needs the loader /lib64/ld-linux-x86-64.so.2, which is not "
        "in the image",
        "needs the loader /lib64/ld-linux-x86-64.so.2",
    ),
    "no os-release": (
        lambda r: [(r / p).unlink() for p in ("etc/os-release", "usr/lib/os-release")],
        "the image has no /etc/os-release nor /usr/lib/os-release",
        None,  # init.sh does not look for it
    ),
    "os-release only in /usr/lib": (lambda r: (r / "etc/os-release").unlink(), None, None),
    "/etc/os-release only, a file": (
        lambda r: [
            (r / "etc/os-release").unlink(),
            (r / "usr/lib/os-release").rename(r / "etc/os-release"),
        ],
        None,
        None,
    ),
    "no /proc": (lambda r: (r / "proc").rmdir(), "the image has no /proc", "has no /proc"),
    "busybox-static as /sbin/init, no systemd": (
        lambda r: [
            (r / "usr/lib/systemd/systemd").unlink(),
            (r / "usr/sbin/init").unlink(),
            shutil.copy2(BUSYBOX, r / "usr/sbin/init"),
        ],
        None,
        None,
    ),
    "another machine's ELF as /sbin/init": (
        lambda r: [
            (r / "usr/lib/systemd/systemd").unlink(),
            shutil.copy2(AARCH64, r / "usr/lib/systemd/systemd"),
            (r / "usr/lib/systemd/systemd").chmod(0o755),
        ],
        "/usr/lib/systemd/systemd is an executable for aarch64, not for this x86_64 machine",
        "/sbin/init is an executable for aarch64",
    ),
    "a #!/bin/sh script as /sbin/init": (
        lambda r: [(r / "usr/sbin/init").unlink(), script(r, "usr/sbin/init", "#!/bin/sh\n")],
        None,
        None,
    ),
    "a script whose interpreter is missing": (
        lambda r: [
            (r / "usr/lib/systemd/systemd").unlink(),
            (r / "usr/sbin/init").unlink(),
            script(r, "usr/sbin/init", "#! /usr/bin/python3 -u\nprint('init')\n"),
        ],
        "/sbin/init is a script whose interpreter /usr/bin/python3 is not in the image",
        "/sbin/init is a script whose interpreter /usr/bin/python3 is not in the image",
    ),
    "a text file as /sbin/init": (
        lambda r: [(r / "usr/sbin/init").unlink(), script(r, "usr/sbin/init", "echo hi\n")],
        None,  # systemd's own binary comes first
        "/sbin/init is neither an ELF executable nor a #! script",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_check_decides_as_switch_root_does(root: Path, case: str) -> None:
    change, systemd, classic = CASES[case]
    change(root)
    for said, expected in ((decide(root, True), systemd), (decide(root, False), classic)):
        if expected is None:
            assert said is None, case
        else:
            assert said is not None and expected in said, (case, said)
            assert "init=" in said or "os-release" in said or "mkdir" in said  # the next step


@pytest.mark.parametrize(
    ("init", "expected", "classic"),
    [
        ("/bin/sh", None, None),  # through /bin -> usr/bin and /usr/bin/sh -> dash
        ("/usr/lib/systemd/systemd", "/usr/lib/systemd/systemd is not executable", "same"),
        ("/usr/bin/dash", None, None),
        (
            "/bin/busybox",
            "init=/bin/busybox cannot be run: /bin/busybox is not in the image",
            "same",
        ),
        # init.sh looks it up from the root, and switch_root execs it there
        ("bin/sh", "init=bin/sh is not an absolute path", None),
        ("/etc", "init=/etc cannot be run: /etc is not a file", "same"),
        ("/usr/lib/os-release", "/usr/lib/os-release is not executable", "same"),
    ],
)
def test_init_is_the_one_looked_for_when_given(
    root: Path, init: str, expected: str | None, classic: str | None
) -> None:
    """init= is what systemd runs (systemctl switch-root reads it): it must work, whatever
    /sbin/init is; init.sh takes it when it is executable, else /sbin/init (gone here)."""
    (root / "usr/sbin/init").unlink()
    (root / "usr/lib/systemd/systemd").chmod(0o644)
    for systemd, wanted in ((True, expected), (False, expected if classic == "same" else classic)):
        said = decide(root, systemd, init=init)
        assert said == wanted if wanted is None else wanted in (said or ""), said


def test_the_machine_is_this_interpreters() -> None:
    assert initcheck.own_machine() == {"x86_64": X86_64, "aarch64": 183}[os.uname().machine]


def test_run_is_needed_by_systemd_in_a_read_only_root_only(root: Path) -> None:
    """systemd moves /run into the new root, and makes the mount points if it can: in a
    writable root; dracut's init.sh needs /proc, /sys and /dev, writable or not."""
    (root / "run").rmdir()
    assert "the image has no /run" in (decide(root, True) or "")
    assert decide(root, False) is None
    (root / "proc").rmdir()
    initcheck.check(str(root), {}, rw=True, systemd=True, machine=X86_64)
    with pytest.raises(initcheck.HandoverError, match="the image has no /proc:"):
        initcheck.check(str(root), {}, rw=True, systemd=False, machine=X86_64)


# -- resolve() against the kernel's own resolution in a chroot ---------------------------------

PARTS = st.sampled_from(["a", "b", "c", "..", "."])
TARGETS = st.lists(PARTS, min_size=1, max_size=4).flatmap(
    lambda parts: st.sampled_from(["/" + "/".join(parts), "/".join(parts)])
)
TREES = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3), TARGETS | st.none()
    ),
    max_size=12,
)


def kernel_view(root: Path, paths: list[str]) -> list[str | None]:
    """What each path is inside `root` by the kernel's lookup: chrooted there (in a child),
    realpath(strict) of each, None for what does not resolve."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: chroot, resolve, report, exit without pytest's cleanup
        try:
            os.close(reader)
            os.chroot(root)
            os.chdir("/")
            found = []
            for p in paths:
                try:  # the kernel's lookup decides whether it is there, realpath where
                    found.append(os.path.realpath(p, strict=True) if os.path.exists(p) else None)
                except OSError:
                    found.append(None)
            os.write(writer, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    found: list[str | None] = json.loads(data)
    return found


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES)
def test_resolve_finds_what_the_kernel_finds_inside_the_root(
    tree: list[tuple[list[str], str | None]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Random trees of directories and links (absolute, relative, through .., looping): a
    path resolves inside the root to what a process chrooted there finds, or to nothing."""
    root = tmp_path_factory.mktemp("tree")
    for parts, target in tree:
        path = root.joinpath(*parts)
        if os.path.lexists(path) or not path.parent.is_dir() or path.parent.is_symlink():
            continue
        if target is None:
            path.mkdir()
        else:
            os.symlink(target, path)
    paths = ["/" + "/".join(parts) for parts, _ in tree] + ["/a/b/c", "/a/../b", "/.."]
    for path, seen in zip(paths, kernel_view(root, paths)):
        mine = initcheck.resolve(str(root), path)
        assert (mine is None) == (seen is None), (path, mine, seen)
        assert mine is None or seen is None or Path(mine) == root / seen.lstrip("/"), path


# -- a script's #! line against the kernel's own reading (binfmt_script) ----------------------

SHEBANGS = st.tuples(
    st.sampled_from(["", " ", "\t", " \t "]),
    st.sampled_from(["/bin/sh", "bin/sh", "usr/bin/sh", "/usr/bin/sh", "/bin/nosuch", ""]),
    st.sampled_from(
        ["", "\r", " -e", "\t-e", " ", "\0x", "\r -e", "\v", "  -e  ", " -e\r", "\t\r", " \r"]
    ),
).map(lambda parts: "#!" + "".join(parts) + "\nexit 0\n")


def kernel_runs(root: Path, path: str) -> bool:
    """Whether the kernel starts `path` in a process chrooted to `root` (in a child; the
    scripts given only exit)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.chroot(root)
            os.chdir("/")
            fd = os.open("/dev/null", os.O_WRONLY) if os.path.exists("/dev/null") else -1
            if fd >= 0:
                os.dup2(fd, 2)
            os.execv(path, [path])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=SHEBANGS)
def test_a_scripts_interpreter_is_read_as_the_kernel_reads_it(root: Path, text: str) -> None:
    """A #! init is taken exactly when the kernel runs it: blanks and tabs around the name,
    arguments, a relative name (looked up from the root, where the init starts), and a
    carriage return (a file saved with CRLF), which is part of the name the kernel looks up."""
    # one root for all examples (hypothesis reuses the fixture): no systemd, a static sh
    (root / "usr/lib/systemd/systemd").unlink(missing_ok=True)
    (root / "usr/sbin/init").unlink(missing_ok=True)
    if (root / "usr/bin/sh").is_symlink():
        (root / "usr/bin/sh").unlink()
        shutil.copy2(BUSYBOX, root / "usr/bin/sh")  # static: runs without the image's libraries
    (root / "usr/sbin/init").write_bytes(text.encode())
    (root / "usr/sbin/init").chmod(0o755)
    runs = kernel_runs(root, "/sbin/init")
    for systemd in (True, False):
        said = decide(root, systemd)
        assert (said is None) == runs, (text, said)
        assert said is None or "/sbin/init is a script" in said, said
        assert said is None or ("dos2unix" in said) == ("\r" in text.split("\n")[0]), said


# -- the classic initrd's choice against dracut's own init.sh ---------------------------------

INIT_SH = Path("/usr/lib/dracut/modules.d/99base/init.sh")  # dracut (./setup)
GOOD = "#!/bin/sh\nexit 0\n"
BAD = "#!/usr/bin/nosuch\nexit 0\n"
SBIN_INITS = st.sampled_from(["good", "absent", "not executable", "bad", "dangling"])
NAMED = st.sampled_from(
    ["", "/opt/init", "opt/init", "/opt/bad", "/opt/noexec", "/opt/nosuch", "/opt", "/sbin/init"]
)


def dracut_init(root: Path, args: dict[str, str]) -> str:
    """The init dracut's init.sh takes for the root: its own loop, read from the installed
    dracut, run with getarg answering from `args`."""
    text = INIT_SH.read_text()
    start = text.index('for i in "$(getarg real_init=)"')
    loop = text[start : text.index("\ndone\n", start) + 6]
    stubs = (
        'getarg() { case "$1" in '
        + " ".join(f"{k}=) printf %s {shlex.quote(v)} ;;" for k, v in args.items())
        + ' esac; }\ngetargs() { getarg "$@"; }\n'
    )
    out = subprocess.run(
        ["sh", "-c", stubs + loop + 'printf %s "$INIT"'],
        env={"NEWROOT": str(root), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sbin=SBIN_INITS, init=NAMED, real_init=st.sampled_from(["", "/opt/init", "/opt/nosuch"]))
def test_the_classic_initrd_takes_the_init_dracut_takes(
    root: Path, sbin: str, init: str, real_init: str
) -> None:
    """init.sh takes the first of real_init=, init= and /sbin/init that is executable, and
    switch_root execs it: the root is refused exactly when that init does not start (an init=
    that is not there gives way to /sbin/init, a relative one is looked up from the root)."""
    (root / "usr/lib/systemd/systemd").unlink(missing_ok=True)
    if (root / "usr/bin/sh").is_symlink():
        (root / "usr/bin/sh").unlink()
        shutil.copy2(BUSYBOX, root / "usr/bin/sh")  # static: runs without the image's libraries
    (root / "opt").mkdir(exist_ok=True)
    script(root, "opt/init", GOOD)
    script(root, "opt/bad", BAD)
    script(root, "opt/noexec", GOOD, 0o644)
    init_path = root / "usr/sbin/init"
    init_path.unlink(missing_ok=True)
    if sbin == "dangling":
        os.symlink("/lib/systemd/systemd", init_path)
    elif sbin != "absent":
        script(root, "usr/sbin/init", BAD if sbin == "bad" else GOOD)
        init_path.chmod(0o644 if sbin == "not executable" else 0o755)
    args = {k: v for k, v in (("init", init), ("real_init", real_init)) if v}
    taken = dracut_init(root, args)
    runs = bool(taken) and kernel_runs(root, taken)
    said = decide(root, False, **args)
    assert (said is None) == runs, (args, sbin, taken, said)


@pytest.mark.parametrize("depth", range(1, 8))
def test_nested_scripts_run_as_deep_as_the_kernel_runs_them(root: Path, depth: int) -> None:
    """/sbin/init a script whose interpreter is a script … `depth` deep, then a static sh:
    taken exactly when the kernel runs the chain (it rewrites a script at most five times)."""
    (root / "usr/lib/systemd/systemd").unlink()
    (root / "usr/sbin/init").unlink()
    (root / "usr/bin/sh").unlink()
    shutil.copy2(BUSYBOX, root / "usr/bin/sh")
    interpreter = "/bin/sh"
    for level in range(depth):
        script(root, f"usr/bin/s{level}", f"#!{interpreter}\nexit 0\n")
        interpreter = f"/bin/s{level}"
    os.symlink(interpreter, root / "usr/sbin/init")
    runs = kernel_runs(root, "/sbin/init")
    for systemd in (True, False):
        said = decide(root, systemd)
        assert (said is None) == runs, (depth, runs, said)
