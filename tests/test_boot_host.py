"""The boot's orchestration on the host: boot.live_boot, roots and mounts, with a recording fake
of run.run (and of the mount table), a temporary meminfo and a fake zram sysfs.

Every command the boot would run is compared, argv for argv, with what each root mode and each
mount option asks for; every way a boot can stop half-way must leave nothing mounted and the
zram device reset. The real kernel does the same in the VM tier (test_vm_modes)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import py_compile
import shutil
import signal
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from bootc_live.runtime import (
    boot,
    http,
    kexec,
    memory,
    modules,
    mounts,
    policy,
    pyfiles,
    roots,
    status,
    tools,
    unpack,
    urllib_dracut,
)
from bootc_live.runtime.blobs import Descriptor
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.errors import BootcLiveError, SpaceError
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.status import Report, documents
from imagegen import BUSYBOX, bootable, build_layout, d, f, layer_tar, sym
from servers import hard_timeout
from test_signatures import cosign_keys, gnupg  # noqa: F401 - the fixtures signer needs
from test_trust import NAME, Signer, carry_simple, gpg_req, signer  # noqa: F401
from unpackers import REPO

MIB = 1 << 20
TOTAL = 4096 * MIB
AVAILABLE = 3000000 << 10  # the fake /proc/meminfo's MemAvailable
NULL_UUID = "-U00000000-0000-0000-0000-000000000000"


class System:
    """Stands in for the commands and the kernel's mount table; `fail_at` makes the Nth
    command fail as a real one would (CommandError)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.calls: list[list[str]] = []
        self.mounted: list[str] = []
        self.fail_at: int | None = None

    def run(self, argv: list[Any], **_kw: Any) -> subprocess.CompletedProcess[str]:
        args = [os.fspath(a) for a in argv]
        self.calls.append(args)
        if self.fail_at == len(self.calls):
            raise CommandError(f"{args[0]} failed: injected failure", "hint")
        out = ""
        if args[0] == "mount":
            options = args[args.index("-o") + 1] if "-o" in args else ""
            if "remount" in options.split(","):
                assert self.is_mounted(args[-1]), f"remount of {args[-1]}, which is not mounted"
            else:
                self.mounted.append(os.path.realpath(args[-1]))
        elif args[:2] == ["umount", "-R"]:
            top = os.path.realpath(args[2])
            assert top in self.mounted, f"umount of {top}, which is not mounted"
            self.mounted = [m for m in self.mounted if m != top and not m.startswith(top + "/")]
        elif args[:2] == ["mkfs.erofs", "--help"]:
            out = "Available compressors are: lz4, lz4hc\n"
        elif args[0] == "mkfs.erofs":
            Path(args[-2]).write_bytes(b"erofs image of " + args[-1].encode())
            out = "mkfs.erofs 1.5\n"
        if args[:3] == ["mount", "-t", "erofs"]:  # the image's tree appears at the mount point
            tree = Path(args[-2]).read_bytes().removeprefix(b"erofs image of ").decode()
            shutil.copytree(tree, args[-1], symlinks=True, dirs_exist_ok=True)
        return subprocess.CompletedProcess(args, 0, out, "")

    def is_mounted(self, path: str) -> bool:
        return os.path.realpath(path) in self.mounted


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> System:
    fake = System(tmp_path)
    for module in (mounts, roots):
        monkeypatch.setattr(module, "run", fake.run)
    monkeypatch.setattr(mounts, "is_mounted", fake.is_mounted)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        f"MemTotal: {TOTAL >> 10} kB\nMemFree: 1 kB\nMemAvailable: {AVAILABLE >> 10} kB\n"
    )
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    monkeypatch.setattr(memory, "ZONEINFO", str(tmp_path / "no-zoneinfo"))  # nor the host's
    knob = tmp_path / "min_free_kbytes"  # never the host's, whatever a test makes of the boot
    knob.write_text("4000\n")
    monkeypatch.setattr(memory, "MIN_FREE_KBYTES", str(knob))
    zram0 = tmp_path / "sys/block/zram0"
    zram0.mkdir(parents=True)
    (zram0 / "disksize").write_text("0\n")
    (zram0 / "comp_algorithm").write_text("lzo [lzo-rle] lz4 zstd\n")
    (zram0 / "mm_stat").write_text("10485760 3145728 4194304 0 4194304 0 0 0 0\n")
    monkeypatch.setattr(roots, "SYS_BLOCK", str(tmp_path / "sys/block"))
    monkeypatch.setattr(roots, "ZRAM_CONTROL", str(tmp_path / "sys/class/zram-control"))
    monkeypatch.setattr(roots, "WORKDIR", str(tmp_path / "work"))
    monkeypatch.setattr(boot, "STATUS_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(boot, "POLICY", str(tmp_path / "etc/containers/policy.json"))
    monkeypatch.setattr(boot, "REGISTRIES_D", str(tmp_path / "etc/containers/registries.d"))
    (tmp_path / "newroot").mkdir()
    return fake


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image with /etc and /var directories, and /home a symlink into /var."""
    where = tmp_path_factory.mktemp("image") / "layout"
    entries = [
        d("etc"),
        f("etc/hostname", b"live\n"),
        d("var"),
        d("var/home"),
        sym("home", "var/home"),
        *bootable(),
    ]
    build_layout(where, [layer_tar(entries)])
    return where


MODES = {
    "tmpfs": "",
    "zram": "bootc.zram=512M",
    "zram-zstd": "bootc.zram=25% bootc.zram.algorithm=zstd",
    "erofs": "bootc.live.erofs",
    "erofs-lz4hc": "bootc.live.erofs bootc.live.erofs.compress=lz4hc",
}
OPTIONS = {
    "": (False, True, True, ()),
    "rw": (True, True, True, ()),
    "rw rw=0": (False, True, True, ()),
    "bootc.live.etc.rw=0": (False, False, True, ()),
    "bootc.live.var.rw=0 rootflags=nr_inodes=1m,noatime": (
        False,
        True,
        False,
        ("nr_inodes=1m", "noatime"),
    ),
    "rw bootc.live.etc.rw=0 bootc.live.var.rw=0": (True, False, False, ()),
    "rw bootc.live.var.rw=0 rootflags=noatime": (True, True, False, ("noatime",)),
}


def inodes(size: int) -> str:
    """The inodes of a tmpfs of `size` bytes that an image is unpacked into: one a KiB."""
    return f"nr_inodes={size // 1024}"


def expected_calls(mode: str, options: str, tmp: Path, budget: int) -> list[list[str]]:
    """The commands a boot must run, written out from SPEC §5 for each mode and option. A
    tmpfs the image is unpacked into holds no more than the planner's `budget` until then."""
    rw, etc_rw, var_rw, flags = OPTIONS[options]
    newroot, work = str(tmp / "newroot"), tmp / "work"
    calls: list[list[str]] = []

    def bind_ro_layout() -> None:  # tmpfs and zram: bind remounts of the unpacked tree
        for name, writable in (("etc", etc_rw), ("var", var_rw)):
            if writable != rw:
                path = f"{newroot}/{name}"
                calls.append(["mount", "--bind", path, path])
                calls.append(["mount", "-o", "remount,bind," + ("rw" if writable else "ro"), path])
        if not rw:
            calls.append(["mount", "-o", "remount,bind,ro", newroot])

    if mode == "tmpfs":
        # inodes for the tree (one a KiB), unless rootflags= gave a number
        options_ = ",".join(["mode=0755", f"size={budget}", inodes(budget), "suid", "dev", *flags])
        calls.append(["mount", "-t", "tmpfs", "-o", options_, "bootc-live", newroot])
        users = any(flag.startswith("nr_inodes=") for flag in flags)
        resized = f"remount,size={TOTAL}" + ("" if users else f",{inodes(TOTAL)}")
        calls.append(["mount", "-o", resized, newroot])
        bind_ro_layout()
    elif mode.startswith("zram"):
        calls += [["modprobe", "zram"], ["modprobe", "ext4"]]
        mkfs = "mkfs.ext4 -q -F -m 0 -b 4096 -i 4096 -O ^has_journal -L bootc-live -E nodiscard"
        calls.append([*mkfs.split(), "/dev/zram0"])
        options_ = ",".join(["discard", *flags])
        calls.append(["mount", "-t", "ext4", "-o", options_, "/dev/zram0", newroot])
        bind_ro_layout()
    else:
        calls += [["modprobe", "loop"], ["modprobe", "erofs"], ["modprobe", "overlay"]]
        compress = ["-zlz4hc"] if mode == "erofs-lz4hc" else []
        if compress:
            calls.append(["mkfs.erofs", "--help"])
        staging = ",".join(["mode=0755", f"size={budget}", inodes(budget), "suid", "dev"])
        # the image's tmpfs holds what memory is left beside the tree, until the tree is freed
        live = ",".join(["mode=0755", f"size={AVAILABLE - memory.RESERVE}", "suid", "dev"])
        calls.append(["mount", "-t", "tmpfs", "-o", staging, "bootc-live", str(work / "tree")])
        calls.append(["mount", "-t", "tmpfs", "-o", live, "bootc-live", str(work / "live")])
        image = str(work / "live/root.erofs")
        calls.append(["mkfs.erofs", "-T0", NULL_UUID, *compress, image, str(work / "tree")])
        calls.append(["umount", "-R", str(work / "tree")])
        calls.append(["mount", "-o", f"remount,size={TOTAL}", str(work / "live")])
        calls.append(
            ["mount", "-t", "erofs", "-o", ",".join(["loop", "ro", *flags]), image, newroot]
        )
        for name, writable in (("etc", etc_rw), ("var", var_rw)):
            if writable:
                lower, upper = f"{newroot}/{name}", work / "live" / name
                overlay = f"lowerdir={lower},upperdir={upper}/upper,workdir={upper}/work"
                calls.append(["mount", "-t", "overlay", "-o", overlay, f"bootc-live-{name}", lower])
    return calls


def boot_with(
    layout: Path, tmp: Path, args: str, keep: str = "bootc.keep-modules"
) -> tuple[int, dict[str, Any]]:
    """A boot of a copy of `layout` (a boot deletes the blobs of an image in the initramfs)."""
    copy = tmp / "initramfs-image"
    shutil.rmtree(copy, ignore_errors=True)
    (tmp / "run" / boot.CONSUMED).unlink(missing_ok=True)  # a new boot: its initramfs whole
    if layout.exists():
        shutil.copytree(layout, copy)
    argv = [f"root=bootc-live:{copy}", *keep.split(), *args.split()]
    code = boot.main(["boot", str(tmp / "newroot")], lambda: parse(argv))
    return code, json.loads((tmp / "run/status.json").read_text())


@pytest.mark.parametrize(
    "was, thp, option, lowered",
    [
        (45056, "always [madvise] never", "", True),
        (5000, "always [madvise] never", "", False),  # no higher than the kernel's
        (45056, "always madvise [never]", "", False),  # THP off: it was set so
        (45056, "[always] madvise never", "sysctl.vm.min_free_kbytes=45056", False),
    ],
)
def test_the_reserve_transparent_hugepages_raised_goes_to_the_root(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    was: int,
    thp: str,
    option: str,
    lowered: bool,
) -> None:
    """In the initramfs, vm.min_free_kbytes above the kernel's own reserve for the RAM, with
    transparent hugepages on (khugepaged raises it), is set back to that before the root is
    planned; the status says so. Otherwise, or set on the command line, it is left alone."""
    knob = tmp_path / "min_free_kbytes"
    knob.write_text(f"{was}\n")
    (tmp_path / "thp").write_text(thp + "\n")
    monkeypatch.setattr(memory, "MIN_FREE_KBYTES", str(knob))
    monkeypatch.setattr(memory, "THP_ENABLED", str(tmp_path / "thp"))
    monkeypatch.setattr(modules, "in_initramfs", lambda: True)
    monkeypatch.setattr(modules, "MODULES_DIR", str(tmp_path / "no-modules"))
    code, status = boot_with(layout, tmp_path, option)
    assert code == 0 and status["state"] == "ready", status
    base = 8192  # the square root of 16 x 4 GiB in KiB
    assert memory.base_min_free_kbytes(TOTAL) == base
    assert int(knob.read_text()) == (base if lowered else was)
    assert status["min_free_kbytes"] == ([was, base] if lowered else None)


@pytest.mark.parametrize("mode", ["tmpfs", "zram", "erofs"])
def test_the_tools_the_rest_of_the_boot_will_not_run_go_before_the_unpack(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    """In the initramfs, the files the build recorded for each optional tool are deleted once
    the root is prepared (zram's mkfs.ext4 has run), before the unpack, but EROFS's mkfs.erofs,
    which packs the unpacked tree; the planner counted them as available (a file once, however
    many names it has; one with a name elsewhere as nothing). bootc.keep-modules keeps them."""
    monkeypatch.setattr(modules, "in_initramfs", lambda: True)
    monkeypatch.setattr(modules, "MODULES_DIR", str(tmp_path / "no-modules"))
    files = {
        "curl": ["usr/bin/curl", "usr/lib/libcurl.so.4"],
        "gpgv": ["usr/bin/gpgv"],
        "kexec": ["usr/sbin/kexec"],
        "mkfs.ext4": ["usr/sbin/mke2fs", "usr/sbin/mkfs.ext4", "usr/lib/libext2fs.so.2"],
        "mkfs.erofs": ["usr/bin/mkfs.erofs"],
    }
    pages = {"curl": 8192 + 12288, "gpgv": 0, "kexec": 8192, "mkfs.ext4": 8192 + 16384}
    pages["mkfs.erofs"] = 8192
    root = tmp_path / "initramfs"

    def make() -> None:
        for paths in files.values():
            for n, rel in enumerate(paths):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).unlink(missing_ok=True)
                if rel.endswith("mkfs.ext4"):
                    os.link(root / "usr/sbin/mke2fs", root / rel)  # one file, two names
                else:
                    (root / rel).write_bytes(b"x" * (5000 * (n + 1)))
        (tmp_path / "gpgv-elsewhere").unlink(missing_ok=True)
        os.link(root / "usr/bin/gpgv", tmp_path / "gpgv-elsewhere")  # its pages stay

    make()
    manifest = tmp_path / "tools.json"
    manifest.write_text(json.dumps({t: [f"{root}/{p}" for p in ps] for t, ps in files.items()}))
    monkeypatch.setattr(tools, "MANIFEST", str(manifest))
    kept = {"mkfs.erofs"} if mode == "erofs" else set()  # zram's mkfs.ext4 ran before
    gone = sorted(set(files) - kept)
    seen: list[tuple[bool, list[str]]] = []  # at the unpack: curl's file there, commands run
    real_unpack = boot.unpack_image

    def unpack_image(*args: Any, **kwargs: Any) -> Any:
        seen.append(((root / "usr/bin/curl").exists(), [c[0] for c in system.calls]))
        return real_unpack(*args, **kwargs)

    monkeypatch.setattr(boot, "unpack_image", unpack_image)

    code, final = boot_with(layout, tmp_path, MODES[mode], keep="")

    assert code == 0 and final["state"] == "ready", final
    states = {s["state"]: s for s in status.documents(capsys.readouterr().err.splitlines())}
    assert states["unpacking"]["tools_freed"] == gone
    assert states["unpacking"]["tools_freed_bytes"] == sum(pages[t] for t in gone)
    assert states["planned"]["tools_unused_bytes"] == sum(pages[t] for t in gone)
    for tool, paths in files.items():
        for rel in paths:
            assert (root / rel).exists() == (tool in kept), rel
    # Gone before the unpack began, and after zram's file system was made.
    assert seen[0][0] is False
    assert ("mkfs.ext4" in seen[0][1]) == (mode == "zram")

    make()
    system.calls, system.mounted = [], []
    (tmp_path / "sys/block/zram0/disksize").write_text("0\n")
    shutil.rmtree(tmp_path / "work", ignore_errors=True)  # the fake mounts left plain files
    shutil.rmtree(tmp_path / "newroot")
    (tmp_path / "newroot").mkdir()
    code, final = boot_with(layout, tmp_path, MODES[mode])  # with bootc.keep-modules
    states = {s["state"]: s for s in status.documents(capsys.readouterr().err.splitlines())}
    assert code == 0 and states["unpacking"]["tools_freed"] == [], final
    assert all((root / rel).exists() for paths in files.values() for rel in paths)


def test_a_runtime_run_from_elsewhere_frees_no_python_files() -> None:
    # These tests run the runtime from the source tree with the host's Python: its files, and
    # the host's standard library, are never the initramfs's to delete.
    assert not pyfiles.runtime_installed()
    assert pyfiles.imported() and pyfiles.unused() == modules.Unused()


def test_a_frozen_modules_bytecode_goes_with_its_source(tmp_path: Path) -> None:
    # os, io, codecs … are frozen into Python 3.11's interpreter: no __cached__, yet their
    # __pycache__ files are in the initramfs, never read.
    frozen = types.ModuleType("livefake_frozen")
    frozen.__file__ = str(tmp_path / "livefake_frozen.py")
    frozen.__cached__ = None  # type: ignore[attr-defined]
    sys.modules["livefake_frozen"] = frozen
    try:
        found = pyfiles.imported(roots=[str(tmp_path)])
    finally:
        del sys.modules["livefake_frozen"]
    pyc = importlib.util.cache_from_source(str(tmp_path / "livefake_frozen.py"))
    assert found == [str(tmp_path / "livefake_frozen.py"), pyc]
    assert [os.path.basename(p) for p in pyfiles.imported() if "/__pycache__/os." in p]


def test_the_imported_modules_python_files_go_before_the_unpack(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In the initramfs, the source and bytecode of the modules the runtime has imported (the
    standard library's and its own) are deleted once the root is prepared, before the unpack;
    the planner counted them. A module not imported yet keeps its files and imports after;
    bootc.keep-modules keeps them all."""
    monkeypatch.setattr(modules, "in_initramfs", lambda: True)
    monkeypatch.setattr(modules, "MODULES_DIR", str(tmp_path / "no-modules"))
    monkeypatch.setattr(tools, "MANIFEST", str(tmp_path / "no-tools.json"))
    stdlib = tmp_path / "initramfs/usr/lib/python3"
    installed = tmp_path / "initramfs/usr/lib/bootc-live"
    monkeypatch.setattr(pyfiles, "STDLIB", str(stdlib))
    monkeypatch.setattr(pyfiles, "RUNTIME", str(installed / "livert"))
    monkeypatch.setattr(pyfiles, "INSTALLED", str(installed))
    sources = {
        stdlib / "livefake_a.py": "A = 1\n",
        stdlib / "livefake_pkg/__init__.py": "",
        stdlib / "livefake_pkg/sub.py": "B = 'x' * 5000\n",
        stdlib / "livefake_later.py": "C = 3\n",
        installed / "livert/__init__.py": "D = 4\n",
    }
    names = ["livefake_a", "livefake_pkg", "livefake_pkg.sub", "livefake_later", "livert"]

    def make() -> list[Path]:
        """The files, the imported modules' bytecode compiled: those that are to go."""
        for name in names:
            sys.modules.pop(name, None)
        for path, text in sources.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            py_compile.compile(str(path), doraise=True)  # as build's compileall does
        importlib.invalidate_caches()
        for name in ("livefake_a", "livefake_pkg.sub", "livert"):
            importlib.import_module(name)
        return [
            p
            for m in ("livefake_a", "livefake_pkg", "livefake_pkg.sub", "livert")
            for p in (Path(sys.modules[m].__file__ or ""), Path(sys.modules[m].__cached__ or ""))
        ]

    monkeypatch.syspath_prepend(str(stdlib))
    monkeypatch.syspath_prepend(str(installed))
    try:
        going = make()
        assert all(p.is_file() for p in going) and len(going) == 8
        pages = sum(modules.pages(p.stat().st_size) for p in going)
        seen: list[bool] = []
        real_unpack = boot.unpack_image

        def unpack_image(*args: Any, **kwargs: Any) -> Any:
            seen.append(any(p.exists() for p in going))
            return real_unpack(*args, **kwargs)

        monkeypatch.setattr(boot, "unpack_image", unpack_image)
        code, final = boot_with(layout, tmp_path, "", keep="")
        assert code == 0 and final["state"] == "ready", final
        states = {s["state"]: s for s in status.documents(capsys.readouterr().err.splitlines())}
        assert states["planned"]["python_unused_bytes"] == pages > 0
        counted = states["planned"]["available"]
        assert states["unpacking"]["python_freed"] == len(going)
        assert states["unpacking"]["python_freed_bytes"] == pages
        assert seen == [False]  # gone before the unpack began
        # Marked first: a second run of the runtime stops saying why (test_dracut_shell).
        assert (tmp_path / "run" / boot.FREED).is_file()
        (tmp_path / "run" / boot.FREED).unlink()
        assert (stdlib / "livefake_later.py").exists()
        assert importlib.import_module("livefake_later").C == 3  # not imported before: kept

        going = make()
        shutil.rmtree(tmp_path / "newroot")
        (tmp_path / "newroot").mkdir()
        code, final = boot_with(layout, tmp_path, "")  # with bootc.keep-modules
        states = {s["state"]: s for s in status.documents(capsys.readouterr().err.splitlines())}
        assert code == 0 and states["unpacking"]["python_freed"] == 0, final
        assert all(p.exists() for p in going) and not (tmp_path / "run" / boot.FREED).exists()
        # The planner counted them as available when they were to go.
        assert counted - states["planned"]["available"] == pages
    finally:
        for name in names:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_and_mount_option_runs_exactly_these_commands(
    system: System, layout: Path, tmp_path: Path, mode: str, options: str
) -> None:
    code, status = boot_with(layout, tmp_path, f"{MODES[mode]} {options}")
    assert code == 0, status
    assert 0 < status["available"] < TOTAL
    assert system.calls == expected_calls(mode, options, tmp_path, status["available"])
    assert status["state"] == "ready" and status["mode"] == mode.split("-")[0]
    assert (tmp_path / "newroot/etc/hostname").read_bytes() == b"live\n"
    root = status["root"]
    if mode.startswith("zram"):
        algorithm = "zstd" if mode == "zram-zstd" else "lzo-rle"
        assert root == {
            "mode": "zram",
            "device": "/dev/zram0",
            "algorithm": algorithm,
            "stored": 10485760,
            "memory": 4194304,
        }
        size = TOTAL // 4 if mode == "zram-zstd" else 512 * MIB
        assert (tmp_path / "sys/block/zram0/disksize").read_text() == str(size)
    elif mode.startswith("erofs"):
        image = tmp_path / "work/live/root.erofs"
        assert (
            root["sha256"] == roots.sha256_file(str(image))
            and root["bytes"] == image.stat().st_size
        )
        assert (root["compress"], root["mkfs_erofs"]) == (
            "lz4hc" if mode == "erofs-lz4hc" else "none",
            "1.5",
        )
    else:
        assert root == {"mode": "tmpfs"}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_failure_at_any_command_leaves_nothing_mounted(
    system: System, layout: Path, tmp_path: Path, mode: str
) -> None:
    """Fail each command of a full boot in turn (a mount, mkfs, a remount): the boot stops with
    the command's one line, and nothing it mounted stays mounted; a zram device is reset."""
    args = f"{MODES[mode]} bootc.live.etc.rw=0"
    count = len(expected_calls(mode, "bootc.live.etc.rw=0", tmp_path, budget=1))  # any
    for n in range(1, count + 1):
        system.calls, system.mounted, system.fail_at = [], [], n
        reset = tmp_path / "sys/block/zram0/reset"
        reset.unlink(missing_ok=True)
        (tmp_path / "sys/block/zram0/disksize").write_text("0\n")
        code, status = boot_with(layout, tmp_path, args)
        failed = system.calls[n - 1][0]
        assert code == 1 and status["state"] == "failed"
        assert status["message"] == f"bootc-live: {failed} failed: injected failure; hint"
        assert system.mounted == [], (n, system.calls)
        # A zram device is given back once it was sized (its disksize written).
        if mode.startswith("zram") and n > 2:
            assert reset.read_text() == "1", n


@pytest.mark.parametrize(
    ("mode", "hint"),
    [
        ("tmpfs", "the image is larger than the memory given to it: add RAM or use bootc.zram="),
        (
            "zram",
            "the zram device (512 MiB) is too small for the image: give bootc.zram= a larger size",
        ),
        ("erofs", "the image is larger than the memory given to it: add RAM or use bootc.zram="),
    ],
)
def test_a_full_root_says_what_to_do_in_that_mode_and_is_undone(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    hint: str,
) -> None:
    def full(*_a: object, **_kw: object) -> None:
        raise SpaceError("no space left to write etc/hostname", "the unpacker's own hint")

    monkeypatch.setattr(boot, "unpack_image", full)
    code, status = boot_with(layout, tmp_path, MODES[mode])
    assert code == 1 and system.mounted == []
    assert status["message"] == f"bootc-live: no space left to write etc/hostname; {hint}"


def test_an_erofs_image_larger_than_the_memory_left_stops_at_no_space_and_is_undone(
    system: System, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mkfs.erofs writes a sparse file's holes out (erofs-utils 1.5): an image larger than
    the planner's figure. It goes into a tmpfs of the memory left beside the tree, not of all
    the machine's, where it met the OOM killer; mkfs.erofs's "No space left on device" is the
    root's full message, not a hint to install erofs-utils."""
    real = system.run

    def mkfs_full(argv: list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[0] == "mkfs.erofs" and argv[1] != "--help":
            system.calls.append([os.fspath(a) for a in argv])
            Path(argv[-2]).write_bytes(b"\0" * (3 * MIB))
            raise CommandError(
                "mkfs.erofs failed: <E> erofs: Could not format the device : [Error 28] No "
                "space left on device",
                roots.MKFS_EROFS_MISSING,
                "<E> erofs: Could not format the device : [Error 28] No space left on device",
            )
        return real(argv, **kw)

    monkeypatch.setattr(roots, "run", mkfs_full)
    code, status = boot_with(layout, tmp_path, MODES["erofs"])
    assert (code, system.mounted) == (1, [])
    assert status["message"] == (
        "bootc-live: no space left for the EROFS image of the root (3 MiB written); the image "
        "is larger than the memory given to it: add RAM or use bootc.zram="
    )
    live = ["mount", "-t", "tmpfs", "-o", f"mode=0755,size={AVAILABLE - memory.RESERVE},suid,dev"]
    assert [*live, "bootc-live", str(tmp_path / "work/live")] in system.calls


@pytest.mark.parametrize("mode", ["tmpfs", "erofs"])
def test_a_full_root_without_mkfs_ext4_does_not_name_zram(
    system: System, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """An initramfs without bootc-live-zram (an image without e2fsprogs): "use bootc.zram="
    would fail for want of mkfs.ext4."""

    def full(*_a: object, **_kw: object) -> None:
        raise SpaceError("no space left to write etc/hostname", "the unpacker's own hint")

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "mkfs.ext4" else real(t))
    monkeypatch.setattr(boot, "unpack_image", full)
    code, status = boot_with(layout, tmp_path, MODES[mode])
    assert code == 1 and system.mounted == []
    assert status["message"] == (
        "bootc-live: no space left to write etc/hostname; the image is larger than the memory "
        "given to it: add RAM"
    )


@pytest.mark.parametrize("debug", ["", "rd.debug", "bootc.debug=1"])
def test_an_internal_error_mid_unpack_is_one_line_and_undone(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug: str,
) -> None:
    """A bug is one line and undoes the root; rd.debug or bootc.debug=1 add its traceback and
    trace every command."""

    def bug(*_a: object, **_kw: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(unpack, "Applier", bug)
    monkeypatch.setattr(boot.runner, "DEBUG", False)
    code, status = boot_with(layout, tmp_path, f"{MODES['zram']} {debug}")
    boot.runner.run(["echo", "traced?"])
    err = capsys.readouterr().err
    assert code == 1 and system.mounted == []
    assert (tmp_path / "sys/block/zram0/reset").read_text() == "1"
    message = "bootc-live: internal error: KeyError: 'oops'; please report it"
    if not debug:
        message += " (bootc.debug=1 shows where it happened)"
    assert status["message"] == message and message in err.splitlines()
    assert ("Traceback (most recent call last):" in err) is bool(debug)
    assert ("+ echo 'traced?'" in err.splitlines()) is bool(debug)


def _encoding_bug() -> None:
    b"usr/lib/x\xff".decode("utf-8", "surrogateescape").encode("utf-8")  # a name not UTF-8


def _forging_bug() -> None:
    raise ValueError("x\nbootc-live: live root ready\r\x1b[2K\u202e")


def _hinted_failure() -> None:  # a hint quoting what an image or a server said
    raise BootcLiveError("the layer is bad", 'see\nbootc-live: status {"state":"ready"}')


@pytest.mark.parametrize("bug", [_encoding_bug, _forging_bug, _hinted_failure])
def test_the_failure_line_is_one_printable_line_whatever_it_quotes(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bug: Any,
) -> None:
    """The error file dracut's hook dies with, the console's last sentence and status.json's
    message: one line of printable characters, whatever the failure quotes (a name that is
    not UTF-8, a newline forging "live root ready", an escape sequence, a status marker);
    never a traceback, and the boot still ends `failed`."""
    monkeypatch.setattr(unpack, "Applier", lambda *_a, **_k: bug())
    code, status = boot_with(layout, tmp_path, "")
    err = capsys.readouterr().err
    written = (tmp_path / "run/error").read_text(encoding="utf-8")
    assert code == 1 and system.mounted == [] and status["state"] == "failed"
    assert written.endswith("\n") and written[:-1].isprintable()
    assert status["message"] == written[:-1] and written[:-1] in err.splitlines()
    assert "Traceback" not in err
    assert not [line for line in err.splitlines() if line.startswith("bootc-live: live root")]
    assert [doc["state"] for doc in documents(err.splitlines())][-1] == "failed"
    assert all(line.isprintable() for line in err.splitlines())


def test_the_status_lines_follow_the_states_and_carry_status_json(
    system: System,
    layout: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zoneinfo = tmp_path / "zoneinfo"  # 300 free pages on one CPU's list, 20 on another's
    zoneinfo.write_text(
        "Node 0, zone    DMA32\n  pages free     9000\n  pagesets\n    cpu: 0\n"
        "              count: 300\n    cpu: 1\n              count: 20\n"
    )
    monkeypatch.setattr(memory, "ZONEINFO", str(zoneinfo))
    lists = 320 * os.sysconf("SC_PAGE_SIZE")
    code, final = boot_with(layout, tmp_path, "")
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("bootc-live: status ")
    ]
    states = status.documents(lines)
    assert code == 0 and [s["state"] for s in states] == [
        "resolving",
        "planned",
        "unpacking",
        "ready",
    ]
    assert states[-1] == final
    assert final["root"] == {"mode": "tmpfs"} and final["entries"] == 5 + len(bootable())
    assert final["manifest"].startswith("sha256:") and final["layers"] == 1
    # MemAvailable and the per-CPU lists' free pages, less the reserve.
    assert final["per_cpu_free"] == lists
    assert final["available"] == 3000000 * 1024 + lists - memory.UNPACK_RESERVE
    assert final["reserve"] == memory.UNPACK_RESERVE  # an embedded image: nothing held ahead
    assert final["modules_freed"] == 0 and final["mode"] == "tmpfs"


def test_quiet_prints_only_the_summary_and_the_last_status(
    system: System, layout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, final = boot_with(layout, tmp_path, "bootc.quiet")
    summary, *lines = capsys.readouterr().err.splitlines()
    assert code == 0 and summary.startswith(
        f"bootc-live: live root ready: {final['manifest']}, {5 + len(bootable())} entries"
    ), summary
    # Then the last state only, whole: on one status line, or on several of that one state
    # when it is long (status.LINE_LIMIT; this machine's figures decide how long it is).
    parsed = [status.parse_line(line) for line in lines]
    assert lines and all(p is not None and p["state"] == "ready" for p in parsed), lines
    assert status.documents(lines)[-1] == final


def test_conflicting_modes_stop_before_anything_is_opened(system: System, tmp_path: Path) -> None:
    code, status = boot_with(
        tmp_path / "no-such-layout", tmp_path, "bootc.zram=1G bootc.live.erofs"
    )
    assert code == 1 and system.calls == []
    assert status == {
        "state": "failed",
        "message": "bootc-live: bootc.zram and bootc.live.erofs were both given; pick one of them",
        "after": "",  # no state was reached
        "time": status["time"],
        "uptime": status["uptime"],
        "boot": status["boot"],
    }


def test_a_size_in_rootflags_is_the_users_and_stays(
    system: System, layout: Path, tmp_path: Path
) -> None:
    """rootflags=size=300m sizes the root (after the budget in the mount options, so it wins):
    the resize once unpacked must not undo it."""
    code, status = boot_with(layout, tmp_path, "rootflags=size=300m")
    assert code == 0, status
    newroot = str(tmp_path / "newroot")
    budget = status["available"]
    options = ",".join(["mode=0755", f"size={budget}", inodes(budget), "suid", "dev", "size=300m"])
    assert system.calls[0] == ["mount", "-t", "tmpfs", "-o", options, "bootc-live", newroot]
    assert not [c for c in system.calls if c[:2] == ["mount", "-o"] and "size=" in c[2]]


@pytest.mark.parametrize("fail", [False, True])
def test_in_the_systemd_initrd_the_generators_tmpfs_is_sized_by_a_remount(
    system: System, layout: Path, tmp_path: Path, fail: bool
) -> None:
    """sysroot.mount (from our generator) has mounted /sysroot, empty: the root is that tmpfs,
    sized and given rootflags= by a remount; a failure later unmounts it too."""
    newroot = str(tmp_path / "newroot")
    system.mounted = [newroot]
    system.fail_at = 2 if fail else None
    code, status = boot_with(layout, tmp_path, "rootflags=noatime bootc.live.etc.rw=0")
    budget = status["available"]
    remount = ["mount", "-o", f"remount,size={budget},{inodes(budget)},suid,dev,noatime", newroot]
    assert system.calls[0] == remount
    if fail:
        assert (code, status["state"], system.mounted) == (1, "failed", [])
    else:
        assert (code, system.calls[1:]) == (
            0,
            expected_calls("tmpfs", "bootc.live.etc.rw=0", tmp_path, budget)[1:],
        )


@pytest.mark.parametrize(("mode", "busy"), [("zram", "newroot"), ("erofs", "work/tree")])
def test_an_undo_that_fails_still_undoes_the_rest_and_keeps_the_first_reason(
    system: System,
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    busy: str,
) -> None:
    """The root runs out of space (the unpack; EROFS: mkfs.erofs), then one unmount fails too
    (busy): the zram device is still reset, EROFS's other tmpfs still unmounted, the reason
    stays the one line, and what could not be undone is said."""

    def full(*_a: object, **_kw: object) -> None:
        raise SpaceError("no space left to write etc/hostname", "the unpacker's own hint")

    real = system.run

    def in_use(argv: list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[:2] == ["umount", "-R"] and argv[2] == str(tmp_path / busy):
            system.calls.append([os.fspath(a) for a in argv])
            raise CommandError("umount failed: target is busy", "")
        return real(argv, **kw)

    for module in (mounts, roots):
        monkeypatch.setattr(module, "run", in_use)
    monkeypatch.setattr(
        roots if mode == "erofs" else boot,
        "make_erofs" if mode == "erofs" else "unpack_image",
        full,
    )
    code, status = boot_with(layout, tmp_path, MODES[mode])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and status["message"].startswith("bootc-live: no space left to write")
    assert "bootc-live: could not undo the root: umount failed: target is busy" in err
    assert system.mounted == [str(tmp_path / busy)]  # only what was busy stays
    if mode == "zram":
        assert (tmp_path / "sys/block/zram0/reset").read_text() == "1"


def test_url_lib_gets_the_url_in_its_environment_and_no_trace(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ftp://, tftp://, nfs:// go through dracut's url-lib, sourced by a shell: the URL is in
    the environment, never in an argv (traced by bootc.debug), and RD_DEBUG=no keeps dracut-lib
    from tracing url-lib under rd.debug."""
    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], **kw: Any) -> None:
        seen.append((argv, dict(kw["env"])))
        Path(argv[-1]).write_bytes(b"not an archive")

    monkeypatch.setattr(urllib_dracut, "run", fake_run)
    monkeypatch.setattr(boot, "wait_for_route", lambda *_: None)
    monkeypatch.setattr(boot, "STATUS_DIR", str(tmp_path / "run"))
    url = "ftp://me:s3cret@10.0.2.100/root.oci"
    argv = [f"root=bootc-live:{url}", "rd.debug", "bootc.retries=4", "bootc.timeout=7"]
    assert boot.main(["boot", str(tmp_path / "newroot")], lambda: parse(argv)) == 1
    ((args, env),) = seen
    assert "s3cret" not in " ".join(args)
    assert (env["BOOTC_URL"], env["RD_DEBUG"]) == (url, "no")
    # bootc.retries= and bootc.timeout= reach url-lib's curl, after its own arguments.
    assert env["BOOTC_CURL_ARGS"] == (
        "--connect-timeout 7 --speed-time 7 --speed-limit 1024 --retry 4"
    )
    assert 'curl_args="$curl_args $BOOTC_CURL_ARGS"; fetch_url' in args[2]
    # What it fetched is no oci-archive: named by its URL (no password), and gone from RAM.
    message = json.loads((tmp_path / "run/status.json").read_text())["message"]
    assert message.startswith(
        "bootc-live: oci-archive:ftp://***@10.0.2.100/root.oci is not a valid oci-archive"
    ), message
    assert not (tmp_path / "run/download/download.oci").exists()
    # It went into a tmpfs of its own (not /run, 20% of RAM), sized to the memory free, and
    # unmounted with it.
    mount = next(c for c in system.calls if c[:3] == ["mount", "-t", "tmpfs"])
    assert mount[-1] == str(tmp_path / "run/download"), system.calls
    assert f"size={3000000 * 1024 - memory.RESERVE}," in mount[4]
    assert system.mounted == []


def test_url_libs_curl_gives_up_on_a_silent_server_within_bootc_timeout(tmp_path: Path) -> None:
    """What those arguments make of the real curl: an FTP server that accepts and says
    nothing ends the fetch after bootc.timeout= seconds, where curl alone waits for ever
    (the hard limit would fail the test first)."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def silent() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            done.wait()
            conn.close()

    threading.Thread(target=silent, daemon=True).start()
    argv = ["curl", "--fail", "--show-error", "--silent", "--output", str(tmp_path / "out")]
    argv += urllib_dracut.curl_args(http.Policy(retries=0, stall=1.0))
    try:
        with hard_timeout(30):
            result = subprocess.run(
                [*argv, f"ftp://127.0.0.1:{server.getsockname()[1]}/root.oci"],
                capture_output=True,
                text=True,
                check=False,
            )
    finally:
        done.set()
        server.close()
    assert result.returncode == 28 and "timed out after 1" in result.stderr, result.stderr


# Signatures (docs/signatures.md, "At boot").


def test_without_a_policy_nothing_is_checked_and_that_is_said(
    system: System, layout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, final = boot_with(layout, tmp_path, "")
    assert code == 0 and final["signatures"] == {"checked": False}
    said = capsys.readouterr().err.splitlines()
    assert "bootc-live: signatures: not checked (no policy in the initramfs)" in said


@pytest.fixture
def signed(layout: Path, tmp_path: Path, signer: Signer) -> tuple[Path, Path]:  # noqa: F811
    """A copy of the image with a GPG signature carried for NAME, and a policy that requires
    the trusted key for example.com/app (and rejects anything else)."""
    copy = tmp_path / "signed"
    shutil.copytree(layout, copy)
    digest = json.loads((copy / "index.json").read_bytes())["manifests"][0]["digest"]
    carry_simple(copy, digest, [signer.gpg(digest)])
    rules = tmp_path / "trusted.json"
    scopes = {"example.com/app": [gpg_req(signer.trusted)]}
    rules.write_text(
        json.dumps({"default": [{"type": "reject"}], "transports": {"docker": scopes}})
    )
    return copy, rules


def test_a_signed_image_boots_and_its_verdict_is_in_the_status(
    system: System,
    signed: tuple[Path, Path],
    tmp_path: Path,
    signer: Signer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    image, rules = signed
    code, final = boot_with(image, tmp_path, f"bootc.policy={rules} bootc.identity={NAME}")
    key = f"GPG key {signer.trusted.fingerprint} ({signer.trusted.public})"
    assert code == 0, final
    assert 0 <= final["signatures"].pop("seconds") < 60  # what the check took
    assert final["signatures"] == {
        "checked": True,
        "accepted": True,
        "scope": 'docker "example.com/app"',
        "keys": [key],
    }
    said = capsys.readouterr().err.splitlines()
    line = f'bootc-live: signatures: verified by {key} (policy scope docker "example.com/app")'
    assert line in said
    # Said before anything about the image's size or its root.
    assert said.index(line) < next(i for i, s in enumerate(said) if "layers," in s)


def opened_blobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every blob digest a layout source opens from now on."""
    opened: list[str] = []
    real = LayoutSource.open_blob

    def recording(self: LayoutSource, desc: Descriptor) -> Any:
        opened.append(desc.digest)
        return real(self, desc)

    monkeypatch.setattr(LayoutSource, "open_blob", recording)
    return opened


@pytest.mark.parametrize(
    ("args", "reason", "message"),
    [
        (
            "bootc.identity=example.com/app:v2",  # another tag: the signed identity is v1
            policy.IDENTITY_MISMATCH,
            "docker://example.com/app:v2: identity mismatch under policy scope docker "
            '"example.com/app" (transports.docker["example.com/app"][0]): signed identity '
            "example.com/app:v1 is not accepted by matchRepoDigestOrExact",
        ),
        (
            "",  # no identity: the default applies, which rejects
            policy.REJECT,
            "oci:{image}: rejected by policy scope default (default[0] is reject)",
        ),
        (
            "bootc.identity=example.com/app:v1 bootc.kexec",  # stage one checks before kexec
            policy.REJECT,
            None,
        ),
    ],
)
def test_a_refused_image_stops_the_boot_before_any_layer_is_opened(
    system: System,
    signed: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: str,
    reason: str,
    message: str | None,
) -> None:
    image, rules = signed
    kexecs: list[object] = []
    monkeypatch.setattr(kexec, "kexec_boot", lambda *a, **_kw: kexecs.append(a))
    if message is None:  # the image unsigned under the policy's own scope, which rejects
        rules.write_text(json.dumps({"default": [{"type": "reject"}]}))
        message = (
            "docker://example.com/app:v1: rejected by policy scope default (default[0] is reject)"
        )
    opened = opened_blobs(monkeypatch)
    code, final = boot_with(image, tmp_path, f"bootc.policy={rules} {args}")
    copy = tmp_path / "initramfs-image"
    expected = message.format(image=copy) + f"; the policy is {rules}"
    assert (code, final["state"], final["message"]) == (1, "failed", f"bootc-live: {expected}")
    assert final["signatures"] == {"checked": True, "accepted": False, "reason": reason}
    manifest = json.loads((copy / "index.json").read_bytes())["manifests"][0]
    layers = json.loads((copy / "blobs/sha256" / manifest["digest"][7:]).read_bytes())["layers"]
    assert opened and not {layer["digest"] for layer in layers} & set(opened)
    assert system.calls == [] and kexecs == []  # nothing mounted, nothing kexec'd


def test_a_malformed_signature_stops_the_boot_with_a_verdict_in_the_status(
    system: System,
    signed: tuple[Path, Path],
    tmp_path: Path,
    signer: Signer,  # noqa: F811
) -> None:
    """A signature store that cannot be read is a refusal like the policy's: the status says
    so, the line names the store and the policy."""
    image, rules = signed
    digest = json.loads((image / "index.json").read_bytes())["manifests"][0]["digest"]
    index = json.loads((image / "index.json").read_bytes())
    index["manifests"] = index["manifests"][:1]  # the image only: a new .simplesig follows
    (image / "index.json").write_text(json.dumps(index))
    carry_simple(image, digest, [b"\x00unknown-format\nxx"])
    code, final = boot_with(image, tmp_path, f"bootc.policy={rules} bootc.identity={NAME}")
    copy = tmp_path / "initramfs-image"
    tag = f"sha256-{digest[7:]}.simplesig"
    assert (code, final["state"]) == (1, "failed")
    assert final["message"] == (
        f"bootc-live: oci:{copy} {tag} layer 1: a signature of unknown format unknown-format; "
        f"mend or remove that signature store of oci:{copy}, or change the policy {rules}"
    )
    assert final["signatures"] == {
        "checked": True,
        "accepted": False,
        "reason": "invalid signature",
    }
    assert system.calls == []


def test_the_initramfs_policy_applies_without_bootc_policy(
    system: System, signed: tuple[Path, Path], tmp_path: Path
) -> None:
    image, rules = signed
    (tmp_path / "etc/containers").mkdir(parents=True)
    shutil.copy(rules, tmp_path / "etc/containers/policy.json")
    code, final = boot_with(image, tmp_path, f"bootc.identity={NAME}")
    assert code == 0 and final["signatures"]["scope"] == 'docker "example.com/app"'
    code, final = boot_with(image, tmp_path, "bootc.identity=example.com/else:v1")
    assert code == 1 and final["signatures"]["reason"] == policy.REJECT


def test_a_policy_that_cannot_be_read_stops_the_boot_before_anything_is_opened(
    system: System, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = opened_blobs(monkeypatch)
    missing = tmp_path / "missing.json"
    code, final = boot_with(layout, tmp_path, f"bootc.policy={missing}")
    assert (code, final["message"]) == (
        1,
        f"bootc-live: {missing}: no such policy file; fix bootc.policy=",
    )
    assert opened == [] and system.calls == []


def test_a_zram_size_the_kernel_refuses_is_one_line(
    system: System, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bootc.zram=4096T parses (a size), and the kernel refuses the device's table (ENOMEM);
    /dev/full stands in for that refusal: one line naming the size, nothing mounted."""
    disksize = tmp_path / "sys/block/zram0/disksize"
    disksize.unlink()
    disksize.symlink_to("/dev/full")
    read = roots._read
    monkeypatch.setattr(roots, "_read", lambda p: "0" if p == str(disksize) else read(p))
    code, status = boot_with(layout, tmp_path, "bootc.zram=512M")
    assert code == 1 and status["state"] == "failed", status
    assert status["message"] == (
        "bootc-live: the kernel refused a zram device of 512 MiB (No space left on device); give "
        "bootc.zram= a percentage of RAM, or a size such as 8G"
    )
    assert system.mounted == []


ROUTE4_HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
ROUTE4_ETH0 = "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
Z32 = "0" * 32
LINK_UP_ONLY = "".join(  # what every link has once up, configured or not (and lo's)
    f"{dest} {plen} {Z32} 00 {Z32} 00000100 00000001 00000000 00000001 {dev}\n"
    for dest, plen, dev in (
        ("fe80" + "0" * 28, "40", "eth0"),
        ("fe8000000000000000fc00fffe000001", "80", "eth0"),
        ("ff" + "0" * 30, "08", "eth0"),
        ("0" * 31 + "1", "80", "lo"),
        (Z32, "00", "lo"),
    )
)
SLAAC = (
    f"20010db8000000000000000000000000 40 {Z32} 00 {Z32} 00000100 00000001 00000000 00000001 eth0\n"
)


@pytest.mark.parametrize(
    ("routes4", "routes6", "up"),
    [
        (ROUTE4_HEADER, "", False),
        (ROUTE4_HEADER + "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n", "", False),
        (ROUTE4_HEADER + ROUTE4_ETH0, LINK_UP_ONLY, True),
        (ROUTE4_HEADER, LINK_UP_ONLY, False),
        (ROUTE4_HEADER, LINK_UP_ONLY + SLAAC, True),  # IPv6 only: it waited out the deadline
    ],
)
@pytest.mark.parametrize(
    "server", ["http://[2001:db8::1]/npm/@a/os.oci", "http://10.0.2.100/os@v1.oci"]
)
def test_a_configured_interface_is_seen_in_either_family(
    routes4: str,
    routes6: str,
    up: bool,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An IPv6 route counts for a server at an IPv6 address only: a dual-stack link has it
    from the router before DHCP gives IPv4, and fetching from an IPv4 server then fails."""
    ipv6 = boot._ipv6_host(server)
    up = up and (ipv6 or "eth0\t" in routes4)
    assert boot.configured(routes4, routes6, ipv6) is up
    (tmp_path / "route").write_text(routes4)
    (tmp_path / "ipv6_route").write_text(routes6)
    monkeypatch.setattr(boot, "ROUTES4", str(tmp_path / "route"))
    monkeypatch.setattr(boot, "ROUTES6", str(tmp_path / "ipv6_route"))
    report = Report(quiet=True, directory=str(tmp_path / "run"))
    if up:
        boot.wait_for_route(0.2, report, ipv6)
    else:
        with pytest.raises(BootcLiveError, match="no network: no interface was configured"):
            boot.wait_for_route(0.2, report, ipv6)


def test_a_network_of_ipv6_only_is_used_after_a_grace_or_at_once_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLAAC only, a server by name: an IPv6 route and no IPv4 one. It used to wait out the
    whole deadline (10 minutes) and say no interface was configured. It goes on once no IPv4
    route came for the grace; at once with ip=dhcp6|auto6|either6."""
    (tmp_path / "route").write_text(ROUTE4_HEADER)
    (tmp_path / "ipv6_route").write_text(LINK_UP_ONLY + SLAAC)
    monkeypatch.setattr(boot, "ROUTES4", str(tmp_path / "route"))
    monkeypatch.setattr(boot, "ROUTES6", str(tmp_path / "ipv6_route"))
    said: list[str] = []
    report = Report(quiet=True, directory=str(tmp_path / "run"))
    monkeypatch.setattr(report, "say", said.append)
    boot.wait_for_route(30, report, grace=0.2)
    assert said == [
        "waiting for the network",
        "no IPv4 route after 0s, an IPv6 one: going on with IPv6",
    ]
    # Link-local routes only: no grace makes them a configuration.
    (tmp_path / "ipv6_route").write_text(LINK_UP_ONLY)
    with pytest.raises(BootcLiveError, match="no network: no interface was configured"):
        boot.wait_for_route(0.5, report, grace=0.1)
    for ip, v6 in (
        ("dhcp6", True),
        ("eth0:auto6", True),
        ("either6", True),
        ("dhcp", False),
        ("dhcp,dhcp6", False),
        ("", False),
    ):
        spec = parse(
            ["root=bootc-live:http://h/r.oci", f"ip={ip}"]
            if ip
            else ["root=bootc-live:http://h/r.oci"]
        )
        assert boot.ipv6_asked(spec) is v6, ip


def test_the_boot_says_when_the_blobs_it_fetches_are_plain_tars(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image of uncompressed layers (`buildah commit -D`): its size is not "compressed"."""
    tars = [layer_tar([d("etc"), d("var"), *bootable()]), layer_tar([f("etc/a", b"a" * 3000)])]
    for compression, words in (("none", "uncompressed"), (["gzip", "none"], "of blobs, some")):
        layout = tmp_path / "layouts" / words.replace(" ", "-")
        build_layout(layout, tars, compression=compression)
        code, final = boot_with(layout, tmp_path, "")
        assert code == 0, final
        said = [s for s in capsys.readouterr().err.splitlines() if " layers, " in s]
        assert len(said) == 1 and ": 2 layers, " in said[0] and f" MiB {words}" in said[0], said


def test_the_runtime_run_for_a_root_it_does_not_take_for_its_own_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the dracut hook and the generator's unit run the runtime, once the shell side has
    read root= as bootc-live's. If the runtime reads it otherwise, returning 0 booted the empty
    tmpfs the generator had mounted: it stops with one line instead."""
    monkeypatch.setattr(boot, "STATUS_DIR", str(tmp_path / "run"))
    (tmp_path / "newroot").mkdir()
    argv = ["root=/dev/sda2"]
    assert boot.main(["boot", str(tmp_path / "newroot")], lambda: parse(argv)) == 1
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["state"] == "failed"
    assert status["message"].startswith(
        "bootc-live: root= names no bootc-live image as the runtime reads the command line"
    )
    assert list((tmp_path / "newroot").iterdir()) == []


STOPPED_BOOT = """
import sys
from bootc_live.runtime import boot
from bootc_live.runtime.cmdline import parse
boot.STATUS_DIR = sys.argv[1]
boot.wait_for_route = lambda *_a: None
argv = [f"root=bootc-live:http://127.0.0.1:{sys.argv[2]}/root.oci", "bootc.timeout=600"]
sys.exit(boot.main(["boot", sys.argv[3]], lambda: parse(argv)))
"""


def test_a_stopped_boot_says_so_in_its_status(tmp_path: Path) -> None:
    """bootc-live.service stopped (an isolate to emergency.target sends SIGTERM): the status
    stayed at `resolving`, which a program waiting for `ready` or `failed` waits on forever.
    It ends `failed`, saying why. (A process of its own: under xdist a signal need not reach
    the test's thread.)"""
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        boot_process = subprocess.Popen(
            [sys.executable, "-c", STOPPED_BOOT, str(tmp_path / "run"),
             str(silent.getsockname()[1]), str(tmp_path / "newroot")],
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        connection, _ = silent.accept()  # it asks for the archive: resolving
        with connection:
            status = json.loads((tmp_path / "run/status.json").read_text())
            assert status["state"] == "resolving", status
            boot_process.send_signal(signal.SIGTERM)
            assert boot_process.wait(timeout=30) == 1
    assert boot_process.stderr is not None
    line = "bootc-live: stopped by SIGTERM before the live root was ready"
    assert line in boot_process.stderr.read().splitlines()
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert (status["state"], status["after"], status["message"]) == ("failed", "resolving", line)


def test_the_registry_options_reach_the_registry_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bootc.retries=, bootc.timeout=, bootc.connections=, bootc.registry.unsecure,
    bootc.registry.auth=, bootc.registry.mirror= and .digest-only, as the boot opens a
    registry: each reaches what fetches (the parser's tests stop at the spec)."""
    monkeypatch.setattr(boot, "wait_for_route", lambda *_: None)
    auth = tmp_path / "other-auth.json"
    auth.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": "dTpw"}}}))  # u:p
    argv = [
        "root=bootc-live:docker://reg.example:5000/team/app:v1",
        "bootc.retries=3",
        "bootc.timeout=7",
        "bootc.connections=2",
        "bootc.registry.unsecure",
        f"bootc.registry.auth={auth}",
        "bootc.registry.mirror=mirror.example:5000",
    ]
    report = Report(stream=io.StringIO(), directory=str(tmp_path / "run"))
    source = boot.open_registry_source(parse(argv), report)
    mirror, upstream = source.endpoints
    assert (mirror.host, mirror.mirror, upstream.host) == (
        "mirror.example:5000",
        True,
        "reg.example:5000",
    )
    assert (upstream.policy.retries, upstream.policy.stall, upstream.policy.connections) == (
        3,
        7.0,
        2,
    )
    assert upstream.unsecure and mirror.unsecure
    assert upstream.auth.credentials == ("u", "p") and mirror.auth.credentials is None
    # digest-only: a tag goes to the registry alone.
    source = boot.open_registry_source(parse([*argv, "bootc.registry.mirror.digest-only"]), report)
    assert [e.host for e in source.endpoints] == ["reg.example:5000"]
    # Without bootc.registry.unsecure, never unsecure.
    source = boot.open_registry_source(parse(argv[:4]), report)
    assert not any(e.unsecure for e in source.endpoints)


def test_bootc_platform_picks_the_image_the_boot_resolves(tmp_path: Path) -> None:
    """An index of two platforms under one tag: bootc.platform= picks which one the boot
    resolves and checks (the parser's tests stop at the spec)."""
    layout = tmp_path / "layout"
    infos = {
        arch: build_layout(
            layout, [layer_tar([f("arch", arch.encode()), *bootable()])], platform=("linux", arch)
        )
        for arch in ("amd64", "arm64")
    }
    for arch, info in infos.items():
        spec = parse([f"root=bootc-live:{layout}", f"bootc.platform=linux/{arch}"])
        report = Report(stream=io.StringIO(), directory=str(tmp_path / "run"))
        image = boot.resolve_and_trust(spec, LayoutSource(str(layout)), report)
        assert image.manifest_digest == info.manifest_digest, arch


@pytest.mark.parametrize("mode", ["tmpfs", "zram", "erofs"])
def test_a_root_without_an_init_is_never_reported_ready_and_is_undone(
    system: System, tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image that unpacks well but has no init (here: busybox-static's applets without
    /sbin/init) stops the boot with the check's one line before `ready`, the root undone,
    as after any image error; init= naming its init boots it; rd.break= (a shell before the
    switch, asked for) boots it with the line as a warning, an earlier break does not."""
    entries = [e for e in bootable() if e.name != "sbin/init"]
    layout = tmp_path / "no-init"
    build_layout(
        layout,
        [layer_tar([*entries, d("bin"), f("bin/busybox", BUSYBOX.read_bytes(), mode=0o755)])],
    )

    def again(args: str) -> tuple[int, dict[str, Any]]:
        system.mounted = []
        (tmp_path / "sys/block/zram0/disksize").write_text("0\n")  # a new boot's device
        return boot_with(layout, tmp_path, f"{MODES[mode]} {args}")

    code, status = again("")
    assert code == 1 and status["state"] == "failed" and status["after"] != "ready"
    assert status["message"] == (
        "bootc-live: the image has no /sbin/init; name the image's init with init=, or "
        "install systemd (systemd-sysv) in it"
    )
    assert system.mounted == []
    code, status = again("init=/bin/busybox")
    assert code == 0 and status["state"] == "ready", status
    code, status = again("init=/bin/sh")
    assert (
        code == 1 and "init=/bin/sh cannot be run: /bin/sh is not in the image" in status["message"]
    )
    for asked in ("rd.break", "rd.break=pre-pivot", "rdbreak=cleanup"):
        capsys.readouterr()
        code, status = again(asked)
        assert code == 0 and status["state"] == "ready", status
        assert "bootc-live: warning: the image has no /sbin/init;" in capsys.readouterr().err
    code, status = again("rd.break=pre-mount")  # a shell before the runtime: over by now
    assert code == 1 and "the image has no /sbin/init" in status["message"]
