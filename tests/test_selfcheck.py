"""`bootc-live build` proves each initramfs before publishing it (issue 13): a library, command
or module the boot needs and the initramfs lacks fails the build with one line naming it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootc_live import dracut, selfcheck
from bootc_live.build import BuildConfig, build
from bootc_live.demo import host_kernel
from bootc_live.images import SourceRef
from bootc_live.runtime.errors import BootcLiveError
from bootc_live.runtime.run import CommandError
from bootc_live.selfcheck import SelfCheckError
from debian_image import BOOKWORM_MINIMAL, CACHES, root_key
from unpackers import REPO, need

pytestmark = pytest.mark.integration

ALL = (
    "bootc-live",
    "bootc-live-erofs",
    "bootc-live-kexec",
    "bootc-live-net",
    "bootc-live-zram",
)


@pytest.fixture(scope="module")
def unpacked(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's systemd initramfs, unpacked once (copy it before breaking it)."""
    return selfcheck.unpack(
        artifacts["systemd"] / "initrd.img", Path("/"), tmp_path_factory.mktemp("sc") / "tree"
    )


def broken(unpacked: Path, tmp_path: Path, *remove: str) -> Path:
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", unpacked, tree], check=True)
    for path in remove:
        target = tree / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return tree


LIBSSL = "usr/lib/x86_64-linux-gnu/libssl.so.3"  # where Debian's _ssl finds it


def test_a_whole_initramfs_passes_and_says_what_it_boots(unpacked: Path) -> None:
    before = sorted(os.listdir(unpacked))
    verdict = selfcheck.probe(unpacked, Path("/"))
    assert verdict.modules == ALL
    assert verdict.modes().startswith("embedded and appended images and packed roots; URLs")
    assert sorted(os.listdir(unpacked)) == before  # the probe, at a new name, is gone


def test_a_missing_library_is_named_with_its_package(unpacked: Path, tmp_path: Path) -> None:
    tree = broken(unpacked, tmp_path, LIBSSL)
    with pytest.raises(SelfCheckError) as caught:
        selfcheck.probe(tree, Path("/"))
    line = caught.value.line()
    assert line.startswith("the initramfs cannot load libssl.so.3, needed by /"), line
    assert "_ssl.cpython" in line or "/usr/bin/" in line, line
    assert "package libssl3" in line, line
    assert "\n" not in line


def test_a_missing_command_is_named_with_the_mode_that_needs_it(
    unpacked: Path, tmp_path: Path
) -> None:
    kexec = next(p for p in ("usr/sbin/kexec", "sbin/kexec") if (unpacked / p).is_file())
    tree = broken(unpacked, tmp_path, kexec)
    with pytest.raises(SelfCheckError, match=r"lacks the command kexec, needed by bootc\.kexec"):
        selfcheck.probe(tree, Path("/"))


def test_a_runtime_that_does_not_import_is_named(unpacked: Path, tmp_path: Path) -> None:
    stdlib = next(p for p in (unpacked / "usr/lib").glob("python3*") if (p / "json").is_dir())
    tree = broken(unpacked, tmp_path, f"usr/lib/{stdlib.name}/json")
    with pytest.raises(SelfCheckError, match=r"the runtime does not import \(.*json"):
        selfcheck.probe(tree, Path("/"))


def test_a_failed_check_fails_the_build_and_publishes_nothing(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs on what dracut wrote; a broken initramfs never reaches the output."""

    def probe(tree: Path, userland: Path) -> selfcheck.Verdict:
        (tree / LIBSSL).unlink()
        return real_probe(tree, userland)

    real_probe = selfcheck.probe
    monkeypatch.setattr(selfcheck, "probe", probe)
    out = tmp_path / "out"
    with pytest.raises(SelfCheckError, match=r"cannot load libssl\.so\.3"):
        build(
            BuildConfig(
                SourceRef.parse(f"oci:{images}/layout:demo"),
                out,
                host=True,
                kver=host_kernel(),
                flavour="shell",
            )
        )
    assert sorted(os.listdir(tmp_path)) == []  # neither out nor out.new


def test_what_cannot_be_unpacked_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "initrd.img"
    bad.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(SelfCheckError, match="cannot unpack the initramfs to check it: "):
        selfcheck.check(bad, Path("/"), tmp_path / "check")
    assert sorted(os.listdir(tmp_path)) == ["initrd.img"]


def busybox_userland(root: Path) -> Path:
    """A userland of static busybox (sh, cp, mkdir, cat, ls …) with a `dracut` that writes
    its output file (the last argument) as a list of the modules.d it sees, and an
    `lsinitrd --unpack FILE` that writes FILE's first line as a file in the current
    directory: enough for the build's real chroot, namespaces and staging."""
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "cp", "mkdir", "cat", "ls", "head"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dracut").write_text(
        '#!/bin/sh\necho "$@" > /dracut-args\n'
        'for last; do :; done\nls /usr/lib/dracut/modules.d > "$last"\n'
    )
    (root / "usr/bin/lsinitrd").write_text('#!/bin/sh\nhead -n 1 "$2" > unpacked\n')
    for tool in ("dracut", "lsinitrd"):
        (root / "usr/bin" / tool).chmod(0o755)
    return root


def test_nothing_the_build_writes_follows_the_images_links_out_of_it(tmp_path: Path) -> None:
    """The image's links lead into the image: the build wrote the host's files through an
    absolute link at var/tmp (its included files: a CA or credentials; the check's copy of
    the initramfs), at a module directory's name in modules.d (our modules), and hung on a
    FIFO at the name dracut's output went to. The build writes its own files in a new
    directory of its own, and copies the modules from inside the chroot."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    host = tmp_path / "host"  # what the links name, were they followed on the host
    (host / "victim").mkdir(parents=True)
    (host / "victim/file").write_text("the host's")
    root = busybox_userland(tmp_path / "image")
    (root / "var").mkdir()
    (root / "var/tmp").symlink_to(host / "victim")  # absolute: the host's, if followed there
    modules = root / "usr/lib/dracut/modules.d"
    modules.mkdir(parents=True)
    (modules / "90bootc-live-erofs").symlink_to(host / "victim")
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA")
    out = tmp_path / "initrd.img"
    dracut.build_in_image(root, "6.1.0-1", "shell", out, [(ca, "/etc/bootc-live/ca.pem")])
    assert sorted(p.name for p in (host / "victim").iterdir()) == ["file"]
    assert (host / "victim/file").read_text() == "the host's"
    # In the image, our module replaced what was at its name (there, a dangling link).
    assert (modules / "90bootc-live-erofs/module-setup.sh").is_file()
    assert not (modules / "90bootc-live-erofs").is_symlink()
    assert "90bootc-live" in out.read_text().split()
    assert [p.name for p in root.iterdir() if p.name.startswith(".bootc-live")] == []
    # The self-check's unpack likewise: its staging is new, in the image.
    out.write_text("from the initramfs\n")
    tree = selfcheck.unpack(out, root, tmp_path / "unused")
    assert (tree / "unpacked").read_text() == "from the initramfs\n"
    assert tree.parent.parent == root and tree.parent.name.startswith(".bootc-live-")
    shutil.rmtree(tree.parent)
    assert sorted(p.name for p in (host / "victim").iterdir()) == ["file"]
    # A FIFO where dracut's output went (/var/tmp/bootc-live-initrd.img) held the build
    # forever: nothing of the image's is written to any more.
    other = busybox_userland(tmp_path / "other")
    (other / "var/tmp").mkdir(parents=True)
    os.mkfifo(other / "var/tmp/bootc-live-initrd.img")
    dracut.build_in_image(other, "6.1.0-1", "shell", out)
    assert "90bootc-live" in out.read_text().split()


INTERRUPTED = """
import sys
from pathlib import Path
from bootc_live import cli, dracut
from bootc_live.runtime.errors import Stopped, stopping
try:
    with stopping(cli.STOP_SIGNALS):  # as the CLI has it
        script = "sleep 600 & touch /started; wait"
        dracut.in_image(Path(sys.argv[1]), ["sh", "-c", script], hint="h")
except Stopped:
    sys.exit(3)
"""


def test_an_interrupted_build_leaves_nothing_running_in_the_image(tmp_path: Path) -> None:
    """A program the image's dracut started (a cp blocked on a FIFO, here a sleep) outlived
    an interrupted build, in its mount namespace: the image's programs now run in a PID
    namespace whose first process dies with the build, and the kernel ends the rest."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    root = busybox_userland(tmp_path / "image")
    (root / "bin/sleep").symlink_to("busybox")
    (root / "bin/touch").symlink_to("busybox")
    build = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    deadline = time.monotonic() + 60
    while not (root / "started").exists():
        assert build.poll() is None and time.monotonic() < deadline, "it never started"
        time.sleep(0.05)
    build.send_signal(signal.SIGTERM)
    assert build.wait(timeout=60) == 3

    def in_the_image() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/root") == str(root):
                    found.append(pid)
        return found

    deadline = time.monotonic() + 10  # the kernel ends them as it tears the namespace down
    while in_the_image() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_the_image() == []


@pytest.mark.parametrize("omitted", ["", " network ", " url-lib "])
def test_a_network_the_images_dracut_configuration_omits_is_not_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], omitted: str
) -> None:
    """omit_dracutmodules+=" network " in the image's dracut.conf.d: adding bootc-live-net
    (which needs network) failed the whole build ("cannot be found or installed"). It is left
    out, with the note, as when dracut-network is not installed."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    root = busybox_userland(tmp_path / "image")
    for module in ("40network", "45url-lib"):
        (root / "usr/lib/dracut/modules.d" / module).mkdir(parents=True)
    (root / "usr/bin/curl").write_text("")
    (root / "etc/dracut.conf.d").mkdir(parents=True)
    # POSIX here (busybox has no bash); images' files say += and are read with their bash
    conf = f'omit_dracutmodules="$omit_dracutmodules{omitted}"\n'
    (root / "etc/dracut.conf.d/zz.conf").write_text(conf)
    dracut.build_in_image(root, "6.1.0-1", "shell", tmp_path / "initrd.img")
    added = (root / "dracut-args").read_text().split("--add ")[1].split(" --")[0]
    assert ("bootc-live-net" in added) is (not omitted), added
    said = capsys.readouterr().err
    note = f"the image's userland dracut configuration omits {omitted.strip()}"
    assert (note in said) is bool(omitted), said


HOSTILE_MOUNT_POINTS = {
    "proc-to-top": ("proc", lambda root, host: (root / "proc").symlink_to("/")),
    "dev-up-and-out": ("dev", lambda root, host: (root / "dev").symlink_to("../../..")),
    "run-to-the-host": ("run", lambda root, host: (root / "run").symlink_to(host)),
    "run-dangling": ("run", lambda root, host: (root / "run").symlink_to(host / "new")),
    "run-a-file": ("run", lambda root, host: (root / "run").write_text("")),
    "sys-a-fifo": ("sys", lambda root, host: os.mkfifo(root / "sys")),
    "sys-a-loop": ("sys", lambda root, host: (root / "sys").symlink_to("sys")),
    "run-into-dev": (
        "run",
        lambda root, host: (
            (root / "dev/shm").mkdir(parents=True),
            (root / "run").symlink_to("dev/shm"),
        ),
    ),
}


@pytest.mark.parametrize("shape", sorted(HOSTILE_MOUNT_POINTS))
def test_what_the_image_has_at_dev_proc_sys_run_is_not_followed_out_of_it(
    tmp_path: Path, shape: str
) -> None:
    """/dev, /proc, /sys and /run of the image are where the build mounts the kernel's: a
    link there was followed on the host's side (/proc -> / and /run -> a host directory had
    proc and a tmpfs mounted over the host's /, its directory, in the build's namespace), a
    dangling link, a file or a FIFO was a FileExistsError traceback. Each is refused, named,
    with the next step, and nothing is made or mounted outside the tree."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    name, make = HOSTILE_MOUNT_POINTS[shape]
    host = tmp_path / "host"
    host.mkdir()
    root = busybox_userland(tmp_path / "image")
    make(root, host)
    with pytest.raises(BootcLiveError) as raised:
        dracut.in_image(root, ["sh", "-c", ":"], hint="h")
    said = str(raised.value)
    assert said.startswith(f"the image's /{name} ") and "\n" not in said, said
    assert "mkdir" in raised.value.hint and "--host" in raised.value.hint
    assert list(host.iterdir()) == []


def debian_var_run() -> str:
    """Debian's /var/run link (its cached root's, when there is one): /run."""
    for found in Path("/var/cache/bootc-live-tests/debian-minimal").glob("root-*/root/var/run"):
        return os.readlink(found)
    return "/run"


@pytest.mark.parametrize("run_is", ["missing", "debian", "a link to /var/run"])
def test_links_at_the_mount_points_lead_inside_the_image(tmp_path: Path, run_is: str) -> None:
    """A missing one is made; a link is followed inside the tree, as in the chroot: an image
    whose /run is a link to /var/run (absolute, the layout before /run) has its tmpfs there,
    not on the host's /var/run."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    root = busybox_userland(tmp_path / "image")
    (root / "var/run").mkdir(parents=True)
    if run_is == "debian":
        (root / "var/run").rmdir()
        (root / "var/run").symlink_to(debian_var_run())
    elif run_is != "missing":
        (root / "run").symlink_to("/var/run")
    mounts = dracut.in_image(root, ["cat", "/proc/self/mounts"], hint="h", capture=True)
    (run,) = [
        line.split()[1]
        for line in mounts.splitlines()
        if line.split()[2] == "tmpfs" and line.split()[1] in ("/run", "/var/run")
    ]
    assert run == ("/var/run" if run_is == "a link to /var/run" else "/run")
    for name in ("dev", "proc", "sys"):
        assert (root / name).is_dir() and not (root / name).is_symlink()


def test_the_images_dracut_runs_without_its_var_tmp(tmp_path: Path) -> None:
    """An image without /var/tmp (left to systemd-tmpfiles at boot) stopped the build at the
    image's own dracut's "Invalid tmpdir '/var/tmp'" (its TMPDIR): its dracut and every
    command in the image now have a new directory of ours. The cached Debian root's real
    dracut, for a kernel it has no modules of, gets past its tmpdir check to that one."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    cached = CACHES / BOOKWORM_MINIMAL.name / f"root-{root_key(BOOKWORM_MINIMAL)}" / "root"
    need(cached.is_dir(), f"needs the cached Debian root {cached}")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", cached, root], check=True)
    shutil.rmtree(root / "var/tmp")
    shutil.rmtree(root / "tmp")
    with pytest.raises(CommandError) as raised:
        dracut.build_in_image(root, "0.0-none", "systemd", tmp_path / "initrd.img")
    assert "tmpdir" not in raised.value.detail
    assert raised.value.detail == "dracut: and --no-kernel was not specified"  # no modules
    assert [p.name for p in root.iterdir() if p.name.startswith(".bootc-live")] == []
    assert not (root / "var/tmp").exists() and not (tmp_path / "initrd.img").exists()
