"""bootc.kexec with a packed root, stage one on the host: boot.main with test_boot_host's
recording System (its fake mounts show the packed root's tree) and a recording kexec that never
runs. The packed root itself is handed over: the next initrd is the image's initramfs and a cpio
archive holding it as bootc-live/packed.root (parts past PART_SIZE), the next command line boots
it from there with the same pin; every way stage one can stop leaves nothing mounted."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from bootc_live.runtime import boot, kexec, packed
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.run import CommandError
from newc import read_archive
from servers import faulty
from test_boot_host import TOTAL, System, system  # noqa: F401 - the fixture
from test_boot_packed import (  # noqa: F401 - the fixtures
    IMAGE,
    MIB,
    appended,
    images,
    packed_img,
    packed_system,
    pin,
)
from test_packed import make_tree

KVER = "6.1.0-9"
INITRAMFS = b"initramfs of the image\n" * 3  # 69 bytes: the next archive starts past padding


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the image's kernel and its initramfs (test_boot_packed's images pack it)."""
    where = make_tree(tmp_path_factory.mktemp("packed") / "tree")
    modules = where / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(b"kernel " + KVER.encode())
    (modules / "initramfs.img").write_bytes(INITRAMFS)
    return where


class Kexec:
    """The recording kexec: what `kexec -l` loaded, and what was mounted at `kexec -e`."""

    def __init__(self, faked: System) -> None:
        self.system = faked
        self.loaded: dict[str, bytes] = {}
        self.mounted_at_execute: list[str] | None = None

    def run(self, argv: list[str], **_kw: object) -> None:
        self.system.calls.append(list(argv))
        if self.system.fail_at == len(self.system.calls):
            raise CommandError(f"{argv[0]} failed: injected failure", "hint")
        if "-l" in argv:
            for arg in argv[argv.index("-l") + 1 : -1]:  # the kernel, --initrd=PATH
                path = arg.partition("=")[2] if arg.startswith("--initrd=") else arg
                self.loaded[path] = Path(path).read_bytes()
        if argv == ["kexec", "-e"]:
            self.mounted_at_execute = list(self.system.mounted)
            raise SystemExit("kexec -e")


@pytest.fixture
def recorder(
    packed_system: System,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Kexec:
    fake = Kexec(packed_system)
    monkeypatch.setattr(kexec, "run", fake.run)
    monkeypatch.setattr(kexec.shutil, "which", lambda name: f"/usr/sbin/{name}")
    original = kexec.packed_kexec_boot
    monkeypatch.setattr(
        kexec,
        "packed_kexec_boot",
        functools.partial(
            original, workdir=str(tmp_path / "kexec"), proc_cmdline=str(tmp_path / "cmdline")
        ),
    )
    return fake


def stage_one(tmp: Path, root: str, sha256: str, args: str = "") -> dict[str, Any]:
    """boot.main with bootc.kexec; kexec -e ends it as a real one ends the process."""
    argv = [
        f"root=bootc-live:packed:{root}",
        f"bootc.packed.sha256={sha256}",
        f"bootc.packed.image={IMAGE}",
        "bootc.keep-modules",
        "bootc.kexec",
        *args.split(),
    ]
    (tmp / "run" / boot.CONSUMED).unlink(missing_ok=True)  # a new boot: its initramfs whole
    (tmp / "cmdline").write_text(" ".join(argv) + "\n")
    try:
        code = boot.main(["boot", str(tmp / "newroot")], lambda: parse(argv))
        assert code == 1
    except SystemExit as end:
        assert str(end) == "kexec -e"
    status: dict[str, Any] = json.loads((tmp / "run/status.json").read_text())
    return status


def expected(tmp: Path, fs: str, file: str, served: int | None, next_line: str) -> list[list[str]]:
    work = tmp / "kexec"
    calls = [
        ["mount", "-t", "tmpfs", "-o", f"mode=0755,size={TOTAL},suid,dev", "bootc-live", str(work)],
        ["modprobe", "loop"],
        ["modprobe", "overlay"],
    ]
    if served is not None:
        size = -(-(served + MIB) // MIB) * MIB
        files = f"mode=0755,size={size},suid,dev"
        calls.append(["mount", "-t", "tmpfs", "-o", files, "bootc-live", str(work / "packed")])
    calls += [
        ["modprobe", fs],
        ["mount", "-t", fs, "-o", "loop,ro", file, str(work / "tree")],
        ["umount", "-R", str(work / "tree")],
        [
            "kexec",
            "-s",
            "-l",
            str(work / "vmlinuz"),
            f"--initrd={work / 'initrd'}",
            f"--command-line={next_line}",
        ],
    ]
    if served is not None:
        calls.append(["umount", "-R", str(work / "packed")])
    return [*calls, ["umount", "-R", str(work)], ["kexec", "-e"]]


def left_in(workdir: Path) -> list[str]:
    """The files (not directories) under stage one's work directory, but the tree the fake
    loop mount copied (a real unmount takes it away)."""
    return [
        name
        for where, _subdirs, names in os.walk(workdir)
        for name in names
        if not Path(where).is_relative_to(workdir / "tree")
    ]


def handed_over(initrd: bytes) -> dict[str, bytes]:
    """The next initrd past the image's initramfs, unpacked as the kernel does: its files."""
    assert initrd.startswith(INITRAMFS)
    pos = len(INITRAMFS)
    gap = initrd[pos : pos + 7]
    while initrd[pos] == 0:
        pos += 1
    assert pos % 4 == 0 and 4 <= pos - len(INITRAMFS) <= 7, gap
    members, end = read_archive(initrd, pos)
    assert set(initrd[end:]) <= {0} and (end - pos) % 4 == 0
    assert stat.S_ISDIR(members[0].mode) and members[0].name == "bootc-live"
    return {m.name: initrd[m.offset : m.offset + m.size] for m in members[1:]}


@pytest.mark.parametrize("served", [False, True], ids=["appended", "served"])
@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
def test_the_packed_root_itself_is_handed_over(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    fs: str,
    served: bool,
) -> None:
    image = images[fs]
    data = packed_img(image)
    sha256 = pin(image)
    with faulty(data, lambda _n, _s: None) as server:
        if served:
            root, file = server.url("packed.img"), str(tmp_path / "kexec/packed/packed.root")
        else:
            root = file = appended(tmp_path, image)
        status = stage_one(tmp_path, root, sha256, "ip=dhcp console=ttyS0 bootc.kexec.kver=" + KVER)
    next_line = (
        f"bootc.keep-modules ip=dhcp console=ttyS0 root=bootc-live:packed:/{packed.MEMBER} "
        f"bootc.packed.sha256={sha256} bootc.packed.image={IMAGE} bootc.kexec=0"
    )
    assert recorder.system.calls == expected(
        tmp_path, fs, file, len(data) if served else None, next_line
    )
    initrd = recorder.loaded[str(tmp_path / "kexec/initrd")]
    assert handed_over(initrd) == {packed.MEMBER: image.read_bytes()}
    assert recorder.loaded[str(tmp_path / "kexec/vmlinuz")] == b"kernel " + KVER.encode()
    # At kexec -e nothing is mounted and no copy is left: the kernel holds the next initrd.
    assert recorder.mounted_at_execute == [] and recorder.system.mounted == []
    assert not os.path.exists(file) and left_in(tmp_path / "kexec") == []
    assert status["state"] == "kexec-loaded" and status["kexec_cmdline"] == next_line
    assert (status["kexec_kver"], status["packed_sha256"]) == (KVER, sha256)
    assert (status["manifest"], status["format"]) == (IMAGE, fs)
    assert status["kexec_handover_bytes"] == image.stat().st_size
    assert status["kexec_next_initrd_bytes"] == len(initrd)


def test_past_part_size_it_is_handed_over_in_parts(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts appended are joined to be mounted, and handed over as parts again (the contract's
    packed.root.0, .1, …), which the next stage joins as it joins appended ones."""
    image = images["erofs"]
    part = 1000
    monkeypatch.setattr(packed.handover, "PART_SIZE", part)
    status = stage_one(tmp_path, appended(tmp_path, image, parts=3), pin(image))
    assert status["state"] == "kexec-loaded", status
    files = handed_over(recorder.loaded[str(tmp_path / "kexec/initrd")])
    data = image.read_bytes()
    count = -(-len(data) // part)
    assert list(files) == [f"{packed.MEMBER}.{i}" for i in range(count)]
    assert b"".join(files.values()) == data
    assert [len(f) for f in files.values()][:-1] == [part] * (count - 1)


@pytest.mark.parametrize("served", [False, True], ids=["appended", "served"])
def test_a_failure_at_any_command_leaves_nothing_mounted(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    served: bool,
) -> None:
    image = images["squashfs"]
    data = packed_img(image)
    with faulty(data, lambda _n, _s: None) as server:
        count = len(expected(tmp_path, "squashfs", "x", len(data) if served else None, ""))
        for n in range(1, count + 1):
            recorder.system.calls, recorder.system.mounted = [], []
            recorder.system.fail_at = n
            shutil.rmtree(tmp_path / "kexec", ignore_errors=True)
            if served:
                root, file = server.url("packed.img"), str(tmp_path / "kexec/packed/packed.root")
            else:
                root = file = appended(tmp_path, image)
            status = stage_one(tmp_path, root, pin(image))
            failed = recorder.system.calls[n - 1]
            assert recorder.system.mounted == [], (n, recorder.system.calls)
            if status["state"] == "kexec-loaded":  # and it went on to kexec -e:
                if failed[:3] == ["kexec", "-s", "-l"]:  # kexec -l was tried next
                    assert status["kexec_loader"] == "kexec_load"
                else:  # once loaded, a stuck umount is said; the next one takes it along
                    assert failed == ["umount", "-R", str(tmp_path / "kexec/packed")], n
                assert recorder.system.calls[-1] == ["kexec", "-e"]
                continue
            assert status["state"] == "failed", (n, failed)
            if n > 1:  # the packed root's file goes once it was opened (as in a packed boot)
                assert not os.path.exists(file), n
            if failed[:2] == ["modprobe", "squashfs"]:
                assert "cannot mount the packed root: no squashfs module" in status["message"]
            else:
                assert (
                    status["message"] == f"bootc-live: {failed[0]} failed: injected failure; hint"
                )


def test_not_enough_memory_stops_before_anything(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    image = images["erofs"]
    (tmp_path / "meminfo").write_text(
        f"MemTotal: {TOTAL >> 10} kB\nMemFree: 1 kB\nMemAvailable: {200 << 10} kB\n"
    )
    file = appended(tmp_path, image)
    status = stage_one(tmp_path, file, pin(image))
    assert status["message"] == (
        "bootc-live: not enough memory for kexec: the packed root needs about 160 MiB, "
        f"{(200 * MIB - kexec.memory.RESERVE) >> 20} MiB available; add RAM, or boot the packed "
        "root without bootc.kexec"
    )
    assert recorder.system.calls == [] and os.path.exists(file)


def test_a_wrong_pin_or_a_missing_kernel_is_one_line_and_leaves_nothing(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    image = images["erofs"]
    status = stage_one(tmp_path, appended(tmp_path, image), "sha256:" + "0" * 64)
    assert status["message"].startswith(
        f"bootc-live: the packed root {tmp_path}/initramfs/bootc-live/packed.root in the "
        f"initramfs has {pin(image)}, the command line pins sha256:{'0' * 64}"
    )
    assert recorder.system.mounted == [] and all(c[0] != "kexec" for c in recorder.system.calls)
    recorder.system.calls = []
    status = stage_one(tmp_path, appended(tmp_path, image), pin(image), "bootc.kexec.kver=9.9")
    assert status["message"] == (
        f"bootc-live: bootc.kexec.kver=9.9: the image has no kernel 9.9 (kernels: {KVER}); fix "
        "bootc.kexec.kver= or drop it for the highest version"
    )
    assert recorder.system.mounted == [] and recorder.system.calls[-1][:2] == ["umount", "-R"]


def test_the_next_command_line_boots_what_was_handed_over() -> None:
    pin_ = "sha256:" + "ab" * 32
    current = (
        f"root=bootc-live:packed:https://u:pw@h/p.img bootc.packed.sha256={pin_} "
        "bootc.packed.image=sha256:" + "12" * 32 + " "
        "bootc.kexec bootc.kexec.kver=6.1 ip=dhcp rw"
    )
    assert kexec.packed_command_line(current, pin_, IMAGE) == (
        f"ip=dhcp rw root=bootc-live:packed:/{packed.MEMBER} bootc.packed.sha256={pin_} "
        f"bootc.packed.image={IMAGE} bootc.kexec=0"
    )
    spec = parse(current.split())
    assert spec.kexec and spec.image is not None and spec.image.packed
    # From a registry with a digest, a platform and a label (docs/packed.md): the handed-over
    # root is a file, which refuses them; stage two must read its command line.
    registry = (
        f"root=bootc-live:packed:docker://r.example/os:1 bootc.packed.sha256={pin_} "
        f"bootc.digest=sha256:{'cd' * 32} bootc.platform=linux/amd64 bootclabel=prod "
        "bootc.policy=/etc/strict.json bootc.kexec"
    )
    assert parse(registry.split()).kexec
    handed = kexec.packed_command_line(registry, pin_, IMAGE)
    assert "bootc.digest" not in handed and "bootclabel" not in handed
    assert "bootc.policy" not in handed  # checked in stage one, refused with a file
    stage_two = parse(handed.split())
    assert (stage_two.image, stage_two.packed_sha256, stage_two.kexec) == (
        parse(f"root=bootc-live:packed:/{packed.MEMBER} bootc.packed.sha256={pin_}".split()).image,
        pin_,
        False,
    )


def test_move_into_places_the_bytes_where_the_headers_left_room(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41  # 10496 bytes
    part, target = tmp_path / "part", tmp_path / "target"
    part.write_bytes(data)
    target.write_bytes(b"\xff" * 12000)
    places = [(100, 4000), (5000, 4000), (9500, 2496)]
    kexec.move_into(str(part), str(target), places, chunk=1000)
    got = target.read_bytes()
    assert got[100:4100] + got[5000:9000] + got[9500:11996] == data
    assert got[:100] == b"\xff" * 100 and got[4100:5000] == b"\xff" * 900
    assert not part.exists()


def test_the_exact_check_counts_the_loaders_copies_before_anything_is_moved(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the kernel is known: two more copies of it and of the next initrd (the initramfs
    and the packed root) must fit, or stage one stops before building that initrd."""
    image = images["erofs"]
    found = kexec.boot_files_in_tree
    left = (kexec.memory.RESERVE + kexec.SLACK) >> 10  # kB: room for no copy at all

    def then_less_memory(*args: Any) -> kexec.BootFiles:
        files = found(*args)
        (tmp_path / "meminfo").write_text(
            f"MemTotal: {TOTAL >> 10} kB\nMemFree: 1 kB\nMemAvailable: {left} kB\n"
        )
        return files

    monkeypatch.setattr(kexec, "boot_files_in_tree", then_less_memory)
    status = stage_one(tmp_path, appended(tmp_path, image), pin(image))
    assert status["message"] == (
        f"bootc-live: not enough memory for kexec: loading kernel {KVER} (kexec holds two more "
        "copies of it and its initrd) needs about 64 MiB, 64 MiB available; add RAM, or boot the "
        "packed root without bootc.kexec"
    )
    assert recorder.system.mounted == [] and all(c[0] != "kexec" for c in recorder.system.calls)
    # The copies of the kernel and initramfs went with stage one's tmpfs; the packed root too.
    assert recorder.system.calls[-1] == ["umount", "-R", str(tmp_path / "kexec")]
    assert not (tmp_path / "initramfs/bootc-live/packed.root").exists()


def test_reuse_image_0_hands_nothing_over_and_the_next_stage_fetches_it_again(
    recorder: Kexec,
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """bootc.kexec.reuse-image=0 with a packed root at a URL: stage one reads the kernel from
    it, then the next initrd is the image's initramfs alone, and the next command line names
    the same URL and pin (it was accepted and the root handed over all the same)."""
    image = images["squashfs"]
    data = packed_img(image)
    sha256 = pin(image)
    with faulty(data, lambda _n, _s: None) as server:
        url = server.url("packed.img")
        status = stage_one(tmp_path, url, sha256, "bootc.kexec.reuse-image=0")
    next_line = (
        f"root=bootc-live:packed:{url} bootc.packed.sha256={sha256} bootc.packed.image={IMAGE} "
        "bootc.keep-modules bootc.kexec=0"
    )
    file = str(tmp_path / "kexec/packed/packed.root")
    assert recorder.system.calls == expected(tmp_path, "squashfs", file, len(data), next_line)
    assert recorder.loaded[str(tmp_path / "kexec/initrd")] == INITRAMFS
    assert status["state"] == "kexec-loaded" and status["kexec_handover_bytes"] == 0
    assert recorder.system.mounted == [] and left_in(tmp_path / "kexec") == []


def test_reuse_image_0_with_the_packed_root_in_the_initramfs_stops_before_anything() -> None:
    from bootc_live.runtime.cmdline import CmdlineError

    argv = [
        "root=bootc-live:packed:/packed.img",
        "bootc.packed.sha256=sha256:" + "a" * 64,
        "bootc.kexec",
        "bootc.kexec.reuse-image=0",
    ]
    with pytest.raises(CmdlineError) as err:
        parse(argv)
    assert err.value.line() == (
        "bootc.kexec.reuse-image=0 with the packed root in the initramfs: the next stage gets "
        "only the image's own initramfs, so it would not find it; drop "
        "bootc.kexec.reuse-image=0 (the packed root is handed over), or boot from a URL or a "
        "registry"
    )
