"""A packed root's boot on the host: boot.main with the recording fake of run.run and of the
mount table (test_boot_host's System), real squashfs and EROFS images, packed.img made with
CpioWriter as the contract says, and real HTTP servers (tests/servers.py).

Every command is compared argv for argv, for each filesystem and each mount option; every way
the boot can stop leaves nothing mounted and no file of the packed root."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootc_live.runtime import boot, handover, memory, mounts, packed, roots, urllib_dracut
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.cpio import CpioWriter
from bootc_live.runtime.http import Policy
from bootc_live.runtime.packed import MEMBER
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.status import documents
from imagegen import write_bootable
from servers import faulty, nginx
from test_boot_host import OPTIONS, TOTAL, System, system  # noqa: F401 - the fixture
from test_packed import erofs, make_tree, squashfs
from unpackers import need

MIB = 1 << 20
IMAGE = "sha256:" + "cd" * 32
FAST = Policy(retries=3, stall=5, max_backoff=0.05)
ZRAM = "bootc.zram=64M bootc.zram.algorithm=zstd"  # the overlays' uppers on a zram device


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = make_tree(tmp_path_factory.mktemp("packed") / "tree")
    write_bootable(made)
    return made


@pytest.fixture(scope="module")
def images(tree: Path) -> dict[str, Path]:
    """The tree as squashfs (zstd) and EROFS (lz4hc), made by the real tools."""
    for tool in ("mksquashfs", "mkfs.erofs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (squashfs-tools, erofs-utils)")
    where = tree.parent
    return {
        "squashfs": squashfs(tree, where / "root.squashfs", "zstd"),
        "erofs": erofs(tree, where / "root.erofs", "lz4hc"),
    }


def pin(image: Path) -> str:
    return "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()


def packed_img(image: Path, parts: int = 1) -> bytes:
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.add_dir("bootc-live")
    data = image.read_bytes()
    if parts == 1:
        writer.add_file(MEMBER, io.BytesIO(data), len(data))
    else:
        step = -(-len(data) // parts)
        for i in range(parts):
            chunk = data[i * step : (i + 1) * step]
            writer.add_file(f"{MEMBER}.{i}", io.BytesIO(chunk), len(chunk))
    writer.close()
    return out.getvalue()


@pytest.fixture
def packed_system(system: System, tree: Path, monkeypatch: pytest.MonkeyPatch) -> System:  # noqa: F811
    """System, whose loop mounts of a packed root show the tree and whose overlays show
    their lower directory (as the kernel's would)."""
    real = system.run

    def run(argv: list[Any], **kw: Any) -> subprocess.CompletedProcess[str]:
        args = [os.fspath(a) for a in argv]
        if args[:3] in (["mount", "-t", "squashfs"], ["mount", "-t", "erofs"]):
            # Not System's EROFS mode's mount (it reads its fake image): the same, with the tree.
            system.calls.append(args)
            if system.fail_at == len(system.calls):
                raise CommandError("mount failed: injected failure", "hint")
            system.mounted.append(os.path.realpath(args[-1]))
            shutil.copytree(tree, args[-1], symlinks=True, dirs_exist_ok=True)
            return subprocess.CompletedProcess(args, 0, "", "")
        done = real(argv, **kw)
        if args[:3] == ["mount", "-t", "overlay"]:
            lower = args[4].split(",")[0].removeprefix("lowerdir=")
            if lower != args[-1]:
                shutil.copytree(lower, args[-1], symlinks=True, dirs_exist_ok=True)
        return done

    for module in (mounts, roots):
        monkeypatch.setattr(module, "run", run)
    monkeypatch.setattr(boot, "wait_for_route", lambda *_: None)
    return system


def boot_packed(tmp: Path, root: str, sha256: str, args: str = "") -> tuple[int, dict[str, Any]]:
    argv = [
        f"root=bootc-live:packed:{root}",
        f"bootc.packed.sha256={sha256}",
        f"bootc.packed.image={IMAGE}",
        "bootc.keep-modules",
        "bootc.retries=3",
        *args.split(),
    ]
    (tmp / "run" / boot.CONSUMED).unlink(missing_ok=True)  # a new boot: its initramfs whole
    code = boot.main(["boot", str(tmp / "newroot")], lambda: parse(argv))
    return code, json.loads((tmp / "run/status.json").read_text())


def appended(tmp: Path, image: Path, parts: int = 1) -> str:
    """The packed root as the kernel unpacks packed.img: PATH, or PATH.0, PATH.1, …"""
    where = tmp / "initramfs/bootc-live"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    data = image.read_bytes()
    if parts == 1:
        (where / "packed.root").write_bytes(data)
    else:
        step = -(-len(data) // parts)
        for i in range(parts):
            (where / f"packed.root.{i}").write_bytes(data[i * step : (i + 1) * step])
    return str(where / "packed.root")


def expected_calls(
    fs: str,
    options: str,
    tmp: Path,
    file: str,
    streamed_size: int | None = None,
    zram: bool = False,
) -> list[list[str]]:
    """The commands a packed boot must run, for each filesystem and mount option, the uppers
    on a tmpfs or (`zram`) on ext4 on /dev/zram0."""
    rw, etc_rw, var_rw, flags = OPTIONS[options]
    newroot, work = str(tmp / "newroot"), tmp / "work"
    calls = [["modprobe", "loop"], ["modprobe", "overlay"]]
    if zram:  # as the zram mode makes its device (test_boot_host), mounted without rootflags,
        # and before the unused modules are freed: zram and its compressor load then
        calls += [["modprobe", "zram"], ["modprobe", "ext4"]]
        mkfs = "mkfs.ext4 -q -F -m 0 -b 4096 -i 4096 -O ^has_journal -L bootc-live -E nodiscard"
        calls.append([*mkfs.split(), "/dev/zram0"])
        calls.append(["mount", "-t", "ext4", "-o", "discard", "/dev/zram0", str(work / "live")])
    if streamed_size is not None:
        size = -(-(streamed_size + MIB) // MIB) * MIB
        files = ",".join(["mode=0755", f"size={size}", "suid", "dev"])
        calls.append(["mount", "-t", "tmpfs", "-o", files, "bootc-live", str(work / "packed")])
    calls.append(["modprobe", fs])
    if not zram:
        live = ",".join(["mode=0755", f"size={TOTAL}", "suid", "dev"])
        calls.append(["mount", "-t", "tmpfs", "-o", live, "bootc-live", str(work / "live")])
    loop = ",".join(["loop", "ro", *flags])

    def overlay(lower: str, name: str, target: str) -> list[str]:
        upper = work / "live" / name
        options_ = f"lowerdir={lower},upperdir={upper}/upper,workdir={upper}/work"
        return ["mount", "-t", "overlay", "-o", options_, f"bootc-live-{name}", target]

    if rw:
        calls.append(["mount", "-t", fs, "-o", loop, file, str(work / "lower")])
        calls.append(overlay(str(work / "lower"), "root", newroot))
        for name, writable in (("etc", etc_rw), ("var", var_rw)):
            if not writable:
                path = f"{newroot}/{name}"
                calls += [
                    ["mount", "--bind", path, path],
                    ["mount", "-o", "remount,bind,ro", path],
                ]
    else:
        calls.append(["mount", "-t", fs, "-o", loop, file, newroot])
        for name, writable in (("etc", etc_rw), ("var", var_rw)):
            if writable:
                calls.append(overlay(f"{newroot}/{name}", name, f"{newroot}/{name}"))
    return calls


@pytest.mark.parametrize("zram", [False, True], ids=["tmpfs", "zram"])
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
def test_an_appended_packed_root_runs_exactly_these_commands(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    fs: str,
    options: str,
    zram: bool,
) -> None:
    """… its uppers on a tmpfs, or with bootc.zram on a device it sized and set up as asked."""
    image = images[fs]
    file = appended(tmp_path, image)
    code, status = boot_packed(tmp_path, file, pin(image), f"{ZRAM if zram else ''} {options}")
    assert code == 0, status
    assert packed_system.calls == expected_calls(fs, options, tmp_path, file, zram=zram)
    assert (tmp_path / "newroot/etc/hostname").read_bytes() == b"live\n"
    compressor = "zstd" if fs == "squashfs" else "lz4"
    assert status["state"] == "ready" and status["mode"] == "packed"
    figures = {  # the fake sysfs's mm_stat: 10 MiB stored in 4 MiB of RAM
        "zram": {"device": "/dev/zram0", "algorithm": "zstd", "stored": 10 * MIB, "memory": 4 * MIB}
    }
    assert status["root"] == {
        "mode": "packed",
        "sha256": pin(image),
        "bytes": image.stat().st_size,
        "format": fs,
        "compressor": compressor,
        "image": IMAGE,
        **(figures if zram else {}),
    }
    zram0 = tmp_path / "sys/block/zram0"
    assert (zram0 / "disksize").read_text() == (str(64 * MIB) if zram else "0\n")
    assert (zram0 / "comp_algorithm").read_text().strip() == (
        "zstd" if zram else "lzo [lzo-rle] lz4 zstd"
    )
    assert not (zram0 / "reset").exists()
    assert status["manifest"] == IMAGE and status["bytes"] == image.stat().st_size
    assert status["peak_memory"] > 0 and status["seconds"] >= 0
    assert (status["format"], status["compressor"]) == (fs, compressor)  # from "planned"


@pytest.mark.parametrize(
    ("args", "uppers", "table"),
    [
        ("", "a tmpfs", 0),
        # the device's table: 16 bytes a 4 KiB page of it
        (ZRAM, "a 64 MiB zram device (zstd), at most, and 1 MiB for its table", 64 * MIB // 256),
    ],
    ids=["tmpfs", "zram"],
)
def test_the_states_and_the_planner_line_of_a_packed_boot(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: str,
    uppers: str,
    table: int,
) -> None:
    image = images["squashfs"]
    code, final = boot_packed(tmp_path, appended(tmp_path, image), pin(image), args)
    err = capsys.readouterr().err.splitlines()
    states = documents([line for line in err if "bootc-live: status " in line])
    assert code == 0 and [s["state"] for s in states] == [
        "resolving",
        "planned",
        "loading",
        "ready",
    ]
    assert states[-1] == final
    need = memory.PACKED_UPPERS + table
    assert final["need"] == need and final["packed_bytes"] == image.stat().st_size
    planner = [line for line in err if line.startswith("bootc-live: needs about")]
    assert planner == [
        f"bootc-live: needs about {memory.mib_up(need)} MiB for the packed root "
        f"{tmp_path}/initramfs/bootc-live/"
        f"packed.root in the initramfs ({memory.mib_up(image.stat().st_size)} MiB, in memory "
        f"already) and 32 MiB for the /etc and /var overlays on {uppers}, "
        f"{(3000000 * 1024 - memory.RESERVE) >> 20} MiB available; it is squashfs (zstd)"
    ]
    summary = [line for line in err if "live root ready" in line]
    # zram's figures: the fake sysfs's mm_stat, 10 MiB stored in 4 MiB of RAM
    zram = "; uppers on zram /dev/zram0 (zstd): 10.0 MiB stored in 4.0 MiB of RAM" if args else ""
    root = f"packed root {pin(image)} ({image.stat().st_size / MIB:.1f} MiB, squashfs zstd)"
    assert len(summary) == 1 and f"{root}{zram} in " in summary[0]


def test_parts_appended_are_joined_in_place(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    image = images["erofs"]
    file = appended(tmp_path, image, parts=3)
    code, status = boot_packed(tmp_path, file, pin(image))
    assert code == 0, status
    assert os.listdir(Path(file).parent) == ["packed.root"]
    assert Path(file).read_bytes() == image.read_bytes()
    assert packed_system.calls == expected_calls("erofs", "", tmp_path, file)


def test_a_join_that_fails_leaves_no_part(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts appended are joined in place; stopped half-way (here: no memory left to append
    the last part), none of them stays in RAM."""
    image = images["erofs"]
    file = appended(tmp_path, image, parts=3)
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".1"):  # the second part, once appended: the third comes next
            real_unlink(path, *args, **kwargs)
            raise OSError(28, "No space left on device")
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    code, status = boot_packed(tmp_path, file, pin(image))
    monkeypatch.undo()
    assert code == 1 and status["state"] == "failed", status
    joined = (2 * -(-image.stat().st_size // 3)) >> 20
    assert status["message"] == (  # not an internal error: the machine is short of memory
        f"bootc-live: no memory left to join the parts of the packed root {file} in the "
        f"initramfs ({joined} of {image.stat().st_size >> 20} MiB joined); the packed root is "
        "larger than the memory given to it: add RAM"
    )
    assert os.listdir(Path(file).parent) == []
    assert packed_system.mounted == []


@pytest.mark.parametrize("zram", [False, True], ids=["tmpfs", "zram"])
@pytest.mark.parametrize("served", [False, True], ids=["appended", "served"])
@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
def test_a_failure_at_any_command_leaves_nothing_mounted_and_no_file(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    fs: str,
    served: bool,
    zram: bool,
) -> None:
    """… and a zram device for the uppers is reset once it was sized (after modprobe ext4)."""
    data = packed_img(images[fs])
    zram0 = tmp_path / "sys/block/zram0"
    with faulty(data, lambda _n, _s: None) as server:
        for options in ("bootc.live.etc.rw=0", "rw bootc.live.var.rw=0 rootflags=noatime"):
            size = len(data) if served else None
            calls = expected_calls(fs, options, tmp_path, "x", size, zram)
            sized = calls.index(["modprobe", "ext4"]) + 1 if zram else len(calls)
            for n in range(1, len(calls) + 1):
                packed_system.calls, packed_system.mounted, packed_system.fail_at = [], [], n
                for made in ("work", "newroot"):  # what the fake mounts copied
                    shutil.rmtree(tmp_path / made, ignore_errors=True)
                (tmp_path / "newroot").mkdir()
                (zram0 / "reset").unlink(missing_ok=True)
                (zram0 / "disksize").write_text("0\n")
                if served:
                    root, file = server.url("packed.img"), str(tmp_path / "work/packed/packed.root")
                else:
                    root = file = appended(tmp_path, images[fs])
                args = f"{ZRAM if zram else ''} {options}"
                code, status = boot_packed(tmp_path, root, pin(images[fs]), args)
                failed = packed_system.calls[n - 1]
                reset = (zram0 / "reset").read_text() if (zram0 / "reset").exists() else None
                assert reset == ("1" if n > sized else None), (n, failed)
                assert code == 1 and status["state"] == "failed", (n, failed)
                if failed[:2] == ["modprobe", fs]:
                    assert status["message"] == (
                        f"bootc-live: this kernel cannot mount the packed root: no {fs} module "
                        f"(modprobe {fs} failed); rebuild the initramfs with bootc-live build"
                    )
                else:
                    message = f"bootc-live: {failed[0]} failed: injected failure; hint"
                    assert status["message"] == message
                assert packed_system.mounted == [], (n, packed_system.calls)
                assert not os.path.exists(file), n


def test_credentials_in_the_url_are_never_shown(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = images["squashfs"]
    with faulty(packed_img(image), lambda _n, _s: None) as server:
        url = server.url("packed.img").replace("://", "://me:s3cret@")
        code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 0, status
    assert status["source"] == f"bootc-live:packed:{url.replace('me:s3cret', '***')}"
    assert "s3cret" not in capsys.readouterr().err + json.dumps(status)


def test_a_pin_mismatch_names_both_digests_and_leaves_nothing(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    image = images["squashfs"]
    file = appended(tmp_path, image)
    wrong = "sha256:" + "0" * 64
    code, status = boot_packed(tmp_path, file, wrong)
    assert code == 1 and status["message"] == (
        f"bootc-live: the packed root {file} in the initramfs has {pin(image)}, the command line "
        f"pins {wrong}; the file on the server or in the initrd changed, or bootc.packed.sha256= "
        "is of another build: use the arguments that build printed with it"
    )
    assert packed_system.mounted == [] and not os.path.exists(file)
    assert packed_system.calls == [["modprobe", "loop"], ["modprobe", "overlay"]]


def test_a_tampered_byte_is_refused(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    image = images["erofs"]
    file = appended(tmp_path, image)
    data = bytearray(Path(file).read_bytes())
    data[-100] ^= 1
    Path(file).write_bytes(bytes(data))
    code, status = boot_packed(tmp_path, file, pin(image))
    assert code == 1 and "the command line pins " + pin(image) in status["message"]
    assert packed_system.mounted == [] and not os.path.exists(file)


def test_not_enough_memory_stops_before_anything_with_the_figures(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "meminfo").write_text(
        f"MemTotal: {TOTAL >> 10} kB\nMemFree: 1 kB\nMemAvailable: {60 << 10} kB\n"
    )
    image = images["squashfs"]
    data = packed_img(image)
    with faulty(data, lambda _n, _s: None) as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 1 and packed_system.calls == []
    size = memory.mib_up(len(data))
    assert status["message"] == (
        f"bootc-live: not enough memory: needs {size + 32} MiB for the packed root {url} "
        f"({size} MiB) and 32 MiB for the /etc and /var overlays on a tmpfs, 12 MiB available; "
        "add RAM"
    )


# -- the uppers on zram ------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["63M", "1%"])
def test_a_zram_device_too_small_for_the_uppers_stops_before_anything(
    packed_system: System, images: dict[str, Path], tmp_path: Path, size: str
) -> None:
    image = images["squashfs"]
    file = appended(tmp_path, image)
    code, status = boot_packed(tmp_path, file, pin(image), f"bootc.zram={size}")
    assert code == 1 and packed_system.calls == []
    assert status["message"] == (
        f"bootc-live: bootc.zram={size} is too small for a packed root's overlays: 32 MiB of "
        "writes need a 64 MiB device; use bootc.zram=64M (a zram device takes RAM for what it "
        "holds, compressed, and a table of 1/256 of its size)"
    )
    assert (tmp_path / "sys/block/zram0/disksize").read_text() == "0\n"


def test_a_pin_mismatch_with_zram_gives_the_device_back(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    """The device is made first (its modules load before the unused ones are freed): a root
    refused after that leaves it reset, nothing mounted."""
    image = images["erofs"]
    file = appended(tmp_path, image)
    code, status = boot_packed(tmp_path, file, "sha256:" + "0" * 64, ZRAM)
    assert code == 1 and "the command line pins sha256:" in status["message"]
    assert packed_system.mounted == [] and not os.path.exists(file)
    assert (tmp_path / "sys/block/zram0/reset").read_text() == "1"


def test_a_compressor_zram_does_not_offer_stops_before_the_root_is_stored(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    image = images["squashfs"]
    file = appended(tmp_path, image)
    code, status = boot_packed(
        tmp_path, file, pin(image), "bootc.zram=64M bootc.zram.algorithm=nope"
    )
    assert code == 1 and status["message"] == (
        "bootc-live: bootc.zram.algorithm=nope: this kernel's zram offers lzo, lzo-rle, lz4, zstd; "
        "pick one of those"
    )
    assert packed_system.calls == [["modprobe", m] for m in ("loop", "overlay", "zram", "ext4")]
    assert packed_system.mounted == [] and not os.path.exists(file)
    assert (tmp_path / "sys/block/zram0/disksize").read_text() == "0\n"


# -- streamed over http ----------------------------------------------------------------------


@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
@pytest.mark.parametrize("wrapped", [True, False])
def test_nginx_serves_packed_img_or_the_bare_image(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fs: str,
    wrapped: bool,
) -> None:
    """… and the planner, before the download, counts the size the server announces."""
    image = images[fs]
    srv = tmp_path / "srv"
    srv.mkdir()
    data = packed_img(image) if wrapped else image.read_bytes()
    (srv / "packed.img").write_bytes(data)
    with nginx(srv, tmp_path / "nginx") as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 0, status
    size = memory.mib_up(len(data))
    assert (
        f"bootc-live: needs about {memory.mib_up(len(data) + memory.PACKED_UPPERS)} MiB for the "
        f"packed root {url} ({size} MiB) and 32 MiB for the /etc and /var overlays on a tmpfs, "
    ) in capsys.readouterr().err
    stored = str(tmp_path / "work/packed/packed.root")
    assert packed_system.calls == expected_calls(fs, "", tmp_path, stored, len(data))
    assert Path(stored).read_bytes() == image.read_bytes()
    assert status["root"]["sha256"] == pin(image) and status["packed_bytes"] == len(data)


def test_a_cut_connection_resumes_with_range(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = images["squashfs"]
    monkeypatch.setattr(handover, "PART_SIZE", -(-image.stat().st_size // 2))
    data = packed_img(image, parts=2)
    cut = len(data) // 2

    def plan(n: int, start: int) -> Any:
        if n == 1:
            return (200, {"Content-Length": str(len(data))}, data, cut)
        return None

    with faulty(data, plan) as server:
        code, status = boot_packed(tmp_path, server.url("packed.img"), pin(image))
        log = list(server.log)
    assert code == 0, status
    assert log == [(200, ""), (206, f"bytes={cut}-")]
    err = capsys.readouterr().err
    assert f"connection broke at byte {cut}" in err
    assert (tmp_path / "work/packed/packed.root").read_bytes() == image.read_bytes()


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (
            lambda n, s: (404, {}, b"no", None),
            "bootc-live: {url}: HTTP 404 Not Found; check the URL and the server",
        ),
        (  # more announced than sent, and no Range to resume with: read again from the start
            lambda n, s: (200, {"Content-Length": "99999999"}, b"070701", 6),
            "bootc-live: {url}: connection broke at byte 6 (closed before byte 99999999); "
            "giving up after 3 retries; check the server and the network, or raise "
            "bootc.retries=",
        ),
        (  # more announced than sent, every time
            lambda n, s: (
                (200, {"Content-Length": "99999999"}, b"070701", 6)
                if n == 1
                else (
                    206,
                    {"Content-Range": f"bytes {s}-99999998/99999999", "Content-Length": "9"},
                    b"",
                    0,
                )
            ),
            "bootc-live: {url}: connection broke at byte 6 (closed before byte 99999999); "
            "giving up after 3 retries; check the server and the network, or raise "
            "bootc.retries=",
        ),
    ],
)
def test_http_failures_are_one_line_and_leave_nothing(
    packed_system: System, tmp_path: Path, plan: Any, reason: str
) -> None:
    with faulty(b"unused", plan) as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, "sha256:" + "0" * 64)
    assert code == 1 and status["message"] == reason.format(url=url)
    assert packed_system.mounted == [] and not (tmp_path / "work/packed/packed.root").exists()


def test_less_sent_than_announced_is_a_truncated_packed_root(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    """A Content-Length shorter than packed.img: the cpio stream ends early; nothing stays."""
    image = images["squashfs"]
    data = packed_img(image)
    short = len(data) - 700
    with faulty(
        data, lambda n, s: (200, {"Content-Length": str(short)}, data[:short], None)
    ) as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 1 and status["message"].startswith(
        f"bootc-live: {url}: truncated packed root at byte "
    )
    assert packed_system.mounted == [] and not (tmp_path / "work/packed/packed.root").exists()
    assert ["modprobe", "squashfs"] not in packed_system.calls


def test_a_server_that_changed_the_file_is_refused_and_nothing_stays(
    packed_system: System, images: dict[str, Path], tmp_path: Path
) -> None:
    image = images["erofs"]
    data = bytearray(packed_img(image))
    data[-1000] ^= 1
    with faulty(bytes(data), lambda _n, _s: None) as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 1 and status["message"].startswith(f"bootc-live: the packed root {url} has ")
    assert packed_system.mounted == [] and not (tmp_path / "work/packed/packed.root").exists()


def test_more_sent_than_announced_fills_its_tmpfs_and_says_so(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file grew on the server between two connections: the resumed answer names a larger
    total, and the tmpfs sized by the first one fills. Adding RAM would not help."""
    image = images["squashfs"].read_bytes()
    grown = image + bytes(3 * MIB)
    limit = -(-(len(image) + MIB) // MIB) * MIB  # the tmpfs the announced size gets
    real_open = open

    class Tmpfs:
        def __init__(self, path: str, mode: str) -> None:
            self.file, self.written = real_open(path, mode), 0

        def __enter__(self) -> Tmpfs:
            return self

        def __exit__(self, *_: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.file.write(data))

    def opened(path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return Tmpfs(path, mode) if "x" in mode else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(packed, "open", opened, raising=False)
    first = (200, {"Content-Length": str(len(image))}, image, len(image) // 2)
    with faulty(grown, lambda n, _s: first if n == 1 else None) as server:
        url = server.url("packed.img")
        code, status = boot_packed(tmp_path, url, pin(images["squashfs"]))
    assert code == 1 and status["message"].startswith(
        f"bootc-live: no space left to store the packed root {url} ("
    )
    assert status["message"].endswith(
        f"; the server sent more than the {len(image)} bytes it announced (the file changed "
        "while it was read?): boot again once it is whole"
    )
    assert packed_system.mounted == [] and not (tmp_path / "work/packed/packed.root").exists()


@pytest.mark.parametrize("wrapped", [True, False])
def test_url_lib_fetches_then_it_is_a_file(
    packed_system: System,
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wrapped: bool,
) -> None:
    """ftp://, tftp://, nfs://: url-lib (the shared urllib_dracut.fetch, its URL in the
    environment) writes the file on the packed tmpfs; packed.img is unwrapped, the download
    deleted."""
    image = images["squashfs"]
    data = packed_img(image) if wrapped else image.read_bytes()
    seen: list[tuple[list[str], str]] = []

    def fetch_url(argv: list[str], **kw: Any) -> None:
        seen.append((argv, kw["env"]["BOOTC_URL"]))
        Path(argv[-1]).write_bytes(data)

    monkeypatch.setattr(urllib_dracut, "run", fetch_url)
    url = "tftp://10.0.2.100/packed.img"
    code, status = boot_packed(tmp_path, url, pin(image))
    assert code == 0, status
    stored = tmp_path / "work/packed/packed.root"
    assert [(argv[-1], env) for argv, env in seen] == [(f"{stored}.download", url)]
    assert os.listdir(stored.parent) == ["packed.root"]
    assert stored.read_bytes() == image.read_bytes()
    # The size is not known before the fetch: the tmpfs may take what memory leaves (what is
    # available, less the reserve and the uppers), so a server without end fills it, not RAM.
    limit = (3000000 << 10) - memory.RESERVE - memory.PACKED_UPPERS
    assert packed_system.calls[2] == [
        "mount",
        "-t",
        "tmpfs",
        "-o",
        f"mode=0755,size={-(-limit // MIB) * MIB},suid,dev",
        "bootc-live",
        str(stored.parent),
    ]


# -- the real kernel, in a private mount namespace -------------------------------------------

KERNEL_BOOT = """
import json, os, subprocess, sys
from bootc_live.runtime import boot, roots
from bootc_live.runtime.cmdline import parse

tmp, args, fail = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "fail"
boot.STATUS_DIR, roots.WORKDIR = f"{tmp}/run", f"{tmp}/work"
newroot = f"{tmp}/newroot"
if fail:  # a failure once the image is mounted: everything must be undone, the loop too
    def broken(*_a):
        raise OSError("injected failure after the image's mount")
    roots.overlay_etc_var = broken
    roots.overlay = broken
code = boot.main(["boot", newroot], lambda: parse(args))


def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False


with open("/proc/self/mountinfo") as f:
    mounts = sorted(line.split()[4] for line in f if line.split()[4].startswith(tmp))
print(json.dumps({
    "code": code,
    "mounts": mounts,
    "hostname": open(f"{newroot}/etc/hostname").read() if code == 0 else None,
    "etc": writable(f"{newroot}/etc/new"),
    "var": writable(f"{newroot}/var/new"),
    "root": writable(f"{newroot}/new"),
    "loops": [l for l in subprocess.run(["losetup", "-a"], capture_output=True, text=True)
              .stdout.splitlines() if tmp in l],
}))
"""


@pytest.mark.integration
@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
@pytest.mark.parametrize(
    ("options", "writable"),
    [
        ("", (True, True, False)),
        ("bootc.live.etc.rw=0", (False, True, False)),
        ("rw", (True, True, True)),
        ("rw bootc.live.var.rw=0 rootflags=noatime", (True, False, True)),
        ("fail", None),
        ("rootflags=nosuchflag", None),  # the filesystem refuses it: the line says so
    ],
)
def test_the_kernel_mounts_what_the_commands_say(
    images: dict[str, Path],
    tmp_path: Path,
    fs: str,
    options: str,
    writable: tuple[bool, bool, bool] | None,
) -> None:
    """The same boot with the real mount(8) and kernel in `unshare -m`: the root is read-only
    unless rw, /etc and /var as asked; a failure after the image's mount leaves no mount, no
    loop device and no file. (modprobe is a stub: the host's modules are loaded or built in.)"""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    filesystems = Path("/proc/filesystems").read_text().split()
    need(fs in filesystems and "overlay" in filesystems, f"this kernel lacks {fs} or overlay")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "modprobe").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "modprobe").chmod(0o755)
    (tmp_path / "newroot").mkdir()
    file = appended(tmp_path, images[fs])
    fail = options == "fail"
    args = [
        f"root=bootc-live:packed:{file}",
        f"bootc.packed.sha256={pin(images[fs])}",
        "bootc.keep-modules",
        *([] if fail else options.split()),
    ]
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    result = subprocess.run(
        [
            *("unshare", "-m", "--propagation", "private"),
            *(sys.executable, "-c", KERNEL_BOOT, str(tmp_path), " ".join(args)),
            "fail" if fail else "boot",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    if fail or writable is None:
        assert seen["code"] == 1 and seen["mounts"] == [], result.stderr
        assert not os.path.exists(file) and seen["loops"] == []
    if fail:
        assert "injected failure after the image's mount" in result.stderr
        return
    if writable is None:  # mount's reason, not its pointer to dmesg; and rootflags= named
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("bootc-live: mount")]
        assert line.startswith("bootc-live: mount failed: mount: "), line
        assert "dmesg" not in line, line
        assert line.endswith(
            "; rootflags=nosuchflag is passed to this mount: check that this filesystem takes it"
        ), line
        return
    assert seen["code"] == 0, result.stderr
    assert seen["hostname"] == "live\n"
    assert (seen["etc"], seen["var"], seen["root"]) == writable
    assert str(tmp_path / "newroot") in seen["mounts"] and len(seen["loops"]) == 1


def test_a_url_lib_failure_leaves_no_download(
    packed_system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half(argv: list[str], **_kw: Any) -> None:
        Path(argv[-1]).write_bytes(b"half a file")
        raise CommandError("sh failed: curl: (28) timeout", "", "curl: (28) timeout", "", "", 28)

    monkeypatch.setattr(urllib_dracut, "run", half)
    code, status = boot_packed(tmp_path, "ftp://10.0.2.100/packed.img", "sha256:" + "0" * 64)
    assert code == 1 and status["message"] == (
        "bootc-live: could not fetch ftp://10.0.2.100/packed.img: the server was silent or "
        "too slow for bootc.timeout= (curl: (28) timeout); check the URL, that the server has "
        "the file, and the network"
    )
    assert packed_system.mounted == [] and os.listdir(tmp_path / "work/packed") == []


@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
def test_a_packed_root_without_an_init_is_undone_with_the_checks_line(
    packed_system: System, images: dict[str, Path], tree: Path, tmp_path: Path, fs: str
) -> None:
    """A packed root of a tree without /sbin/init (the mount points and os-release there)
    stops before `ready`, nothing mounted and no file of it left, as a pin mismatch does.
    (The fake loop mount shows `tree`: its init is moved away meanwhile.)"""
    init, away = tree / "sbin/init", tmp_path / "init"
    shutil.move(init, away)
    try:
        file = appended(tmp_path, images[fs])
        code, status = boot_packed(tmp_path, file, pin(images[fs]))
    finally:
        shutil.move(away, init)
    assert code == 1 and status["state"] == "failed" and status["after"] != "ready", status
    assert status["message"] == (
        "bootc-live: the image has no /sbin/init; name the image's init with init=, or "
        "install systemd (systemd-sysv) in it"
    )
    assert packed_system.mounted == [] and not os.path.exists(file)
