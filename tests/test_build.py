"""Artifact pieces of `bootc-live build`, without dracut or QEMU: layouts, cpio, arguments."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bootc_live import build as build_mod
from bootc_live.dracut import (
    HOST_COMPRESS,
    MODULES,
    OPTIONAL_MODULES,
    dracut_argv,
    export_modules,
    host_compress,
)
from bootc_live.images import SourceRef
from bootc_live.runtime import handover, memory
from bootc_live.runtime.cpio import CpioWriter
from bootc_live.runtime.errors import BootcLiveError, for_host
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from bootc_live.runtime.unpack import layer_sizes, unpack_image
from imagegen import build_layout, d, f, layer_tar, sym
from unpackers import need

LAYERS = [layer_tar([d("etc"), f("etc/a", b"a" * 5000)]), layer_tar([f("big", os.urandom(70_000))])]


def test_dracut_argv_exact() -> None:
    assert dracut_argv("6.1.0-1-amd64", "systemd", "/o/initrd.img", minimal=True,
                       confdir="/w/conf") == [
        "dracut", "--force", "--no-hostonly", "--kver", "6.1.0-1-amd64",
        "--conf", "/dev/null", "--confdir", "/w/conf",
        "--modules",
        "systemd systemd-initrd dracut-systemd systemd-networkd qemu qemu-net bootc-live "
        "bootc-live-net bootc-live-zram bootc-live-erofs "
        "bootc-live-kexec",
        "/o/initrd.img",
    ]  # fmt: skip
    assert dracut_argv("6.9", "shell", "/x", minimal=False, includes=[("/h/ca", "/etc/ca")],
                       optional=["bootc-live-erofs"]) == [
        "dracut", "--force", "--no-hostonly", "--kver", "6.9", "--no-uefi", "--add",
        "bootc-live bootc-live-erofs", "--omit", "systemd systemd-initrd dracut-systemd",
        "--include", "/h/ca", "/etc/ca", "/x",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="flavour"):
        dracut_argv("6.9", "openrc", "/x", minimal=False)
    assert dracut_argv("6.9", "shell", "/x", minimal=False, compress="zstd -q -9 -T0")[-3:] == [
        "--compress", "zstd -q -9 -T0", "/x",
    ]  # fmt: skip


def test_an_images_uefi_setting_does_not_make_the_initramfs_a_uefi_executable() -> None:
    """uefi=yes in the image's dracut.conf.d: its dracut made initrd.img a UEFI executable
    (a UKI, which the kernel cannot unpack as an initramfs), or without objcopy and a stub
    failed the build ("Need 'objcopy' to create a UEFI executable") under a hint to install
    dracut and python3. The command line overrides it, as it does hostonly=yes."""
    argv = dracut_argv("6.9", "systemd", "/x", minimal=False)
    assert "--no-uefi" in argv and "--uefi" not in argv


@pytest.mark.parametrize(
    ("config", "zstd", "expected"),
    [
        ("CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n", True, HOST_COMPRESS),
        ("CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n", True, None),  # dracut's default
        ("CONFIG_RD_ZSTD=y\n", False, None),  # no zstd on this machine
        (None, True, None),  # no config: nothing known about the kernel
    ],
)
def test_the_host_initramfs_is_zstd_when_its_kernel_unpacks_zstd(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: str | None,
    zstd: bool,
    expected: str | None,
) -> None:
    (tmp_path / "boot").mkdir()
    if config is not None:
        (tmp_path / "boot/config-6.9").write_text(config)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name == "zstd" and not zstd else real_which(name)
    )
    if zstd:
        need(real_which("zstd") is not None, "needs zstd")
    assert host_compress("6.9", tmp_path) == expected


def test_exported_modules_carry_the_runtime(tmp_path: Path) -> None:
    module, *optional = export_modules(tmp_path)
    assert module.name == "90bootc-live"
    assert [m.name for m in optional] == [f"90{name}" for name in OPTIONAL_MODULES]
    for other in optional:  # the runtime is in the core module only
        assert (other / "module-setup.sh").is_file() and not (other / "python").exists()
    for name in (
        "module-setup.sh",
        "bootc-live-boot",
        "bootc-live.service",
        "python/bootc_live/runtime/boot.py",
        "python/bootc_live/runtime/apply.py",
    ):
        assert (module / name).is_file(), name
    # No host code goes into the initramfs.
    assert sorted(p.name for p in (module / "python/bootc_live").iterdir()) == [
        "__init__.py",
        "runtime",
    ]


def test_modules_exported_again_replace_the_old_whole(tmp_path: Path) -> None:
    """`dracut-modules DEST` copied into what DEST had: a file of an older export stayed (and
    went into the initramfs), and a failure midway (here the old `python` a file) left a
    half-written module there for dracut to take. Each module is now made aside, then renamed
    into place."""
    old = tmp_path / "90bootc-live"
    old.mkdir()
    (old / "bootc-live-stale.sh").write_text("old\n")
    (old / "python").write_text("not a directory\n")
    module, *_ = export_modules(tmp_path)
    assert not (module / "bootc-live-stale.sh").exists()
    assert (module / "python/bootc_live/runtime/boot.py").is_file()
    assert stat.S_IMODE(module.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODULES)


def test_stdlib_probe_lists_only_what_the_runtime_imports(tmp_path: Path) -> None:
    module = export_modules(tmp_path)[0]
    files = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", str(module / "stdlib-files.py"), str(module / "python")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {Path(p).name for p in files}
    assert "os.py" in names and "tarfile.py" not in names  # tar is parsed by our own reader
    assert "json" in {Path(p).parent.name for p in files}  # the json package is imported
    assert any(n.startswith("_hashlib") or n == "hashlib.py" for n in names)
    assert not any("bootc_live" in p for p in files)
    assert all(p.startswith("/usr/lib/python3") for p in files), files


def test_a_standard_library_module_the_userland_lacks_is_named(tmp_path: Path) -> None:
    """A python3 without `resource` (its lib-dynload file missing): the initramfs got python3
    and no standard library, and the self-check said only "<no Python frame>"; the module is
    named now, and module-setup.sh stops dracut with that line."""
    module = export_modules(tmp_path)[0]
    script = module / "stdlib-files.py"
    lacking = (
        "import sys; sys.modules['resource'] = None; "
        f"sys.argv = ['x', {str(module / 'python')!r}]; "
        f"exec(compile(open({str(script)!r}).read(), 'stdlib-files.py', 'exec'))"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", "-c", lacking], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stdout == (
        "/usr/bin/python3 lacks the standard library module resource (the runtime imports "
        "it): reinstall that python3, or build with --host\n"
    )
    setup = (module / "module-setup.sh").read_text()
    assert 'dfatal "bootc-live: ${files:-' in setup and "exit 1" in setup


def test_cpio_writer_is_read_by_cpio(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.add_dir("a")
    writer.add_bytes("a/small", b"hello")
    writer.add_file("a/odd", io.BytesIO(b"x" * 1001), 1001)
    writer.close()
    data = out.getvalue()
    assert len(data) % 512 == 0
    listing = (
        subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    assert listing == ["a", "a/small", "a/odd"]
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=dest, check=True)
    assert (dest / "a/odd").read_bytes() == b"x" * 1001


def test_a_layer_listed_twice_boots_from_the_split_layout(tmp_path: Path) -> None:
    """Docker's empty layer, or two identical steps: one blob listed twice in the manifest.
    The split layout stores it once; the boot (which frees each blob once applied) frees it
    after its last use, and plans its memory once."""
    need(os.geteuid() == 0, "unpacking sets owners: needs root")
    same = layer_tar([d("etc"), f("etc/a", b"same\n")])
    info = build_layout(tmp_path / "img", [same, layer_tar([f("etc/b", b"b\n")]), same], tag="v1")
    image = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    with open(tmp_path / "rootfs.img", "wb") as out:
        handover.write_split_layout(image, build_mod.index_json(image, "v1", None), out)
    initramfs = tmp_path / "initramfs"
    initramfs.mkdir()
    with open(tmp_path / "rootfs.img", "rb") as cpio:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=cpio, cwd=initramfs, check=True)
    layout = initramfs / handover.IMAGE_DIR
    split_image = resolve(LayoutSource(str(layout), consume=True), label="v1")
    free = memory.Memory(1 << 30, 100 << 20)
    stored = sum({la.digest: la.size for la in split_image.layers}.values())
    biggest = max(la.size for la in split_image.layers)
    assert memory.available(free, split_image, blobs_freed=True) == (
        free.available - memory.UNPACK_RESERVE + stored - biggest
    )
    root = tmp_path / "root"
    root.mkdir()
    unpack_image(split_image, str(root))
    assert (root / "etc/a").read_bytes() == b"same\n" and (root / "etc/b").read_bytes() == b"b\n"
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == sorted(
        [info.manifest_digest[7:], info.config_digest[7:]]
    )


def test_split_layout_and_archive_hold_the_verified_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need(os.geteuid() == 0, "unpacking sets owners: needs root")
    info = build_layout(tmp_path / "img", LAYERS, tag="v1")
    image = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    sizes = layer_sizes(image)
    assert sizes == [len(t) for t in LAYERS]
    index = build_mod.index_json(image, "v1", sizes)
    # Blobs above the cpio member limit are stored in parts: force that with a tiny limit.
    monkeypatch.setattr(handover, "MAX_MEMBER", 10_000)
    monkeypatch.setattr(handover, "PART_SIZE", 4096)
    with open(tmp_path / "rootfs.img", "wb") as out:
        handover.write_split_layout(image, index, out)
    initramfs = tmp_path / "initramfs"
    initramfs.mkdir()
    with open(tmp_path / "rootfs.img", "rb") as cpio:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=cpio, cwd=initramfs, check=True)
    layout = initramfs / handover.IMAGE_DIR
    big = layout / "blobs/sha256" / info.layer_digests[1][7:]
    assert not big.exists() and (big.parent / (big.name + ".0")).exists()
    source = LayoutSource(str(layout), consume=True)
    split_image = resolve(source, label="v1")
    assert split_image.manifest_digest == info.manifest_digest
    assert memory.estimate(split_image).how == "from the layer sizes bootc-live build recorded"
    root = tmp_path / "root"
    root.mkdir()
    unpack_image(split_image, str(root))
    assert (root / "big").stat().st_size == 70_000
    # Every layer blob was freed once applied; manifest and config stay.
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == sorted(
        [info.manifest_digest[7:], info.config_digest[7:]]
    )

    build_mod.write_oci_archive(image, index, tmp_path / "root.oci")
    archived = resolve(ArchiveSource(str(tmp_path / "root.oci")), label="v1")
    assert archived.manifest_digest == info.manifest_digest
    assert json.loads(index)["manifests"][0]["annotations"][memory.SIZES_ANNOTATION] == (
        f"{len(LAYERS[0])},{len(LAYERS[1])}"
    )


def test_concatenation_aligns_each_initrd(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"070701")
    (tmp_path / "a").chmod(0o600)  # initrd.img, which can hold credentials
    (tmp_path / "b").chmod(0o644)
    build_mod.concatenate(tmp_path / "ab", tmp_path / "a", tmp_path / "b")
    # 4 zero bytes at least (they end an lz4 legacy initrd.img), then a 4-byte boundary.
    assert (tmp_path / "ab").read_bytes() == b"abc" + bytes(5) + b"070701"
    assert stat.S_IMODE((tmp_path / "ab").stat().st_mode) == 0o600


def test_kernel_is_the_highest_version(tmp_path: Path) -> None:
    for kver in ("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"):
        (tmp_path / "usr/lib/modules" / kver).mkdir(parents=True)
        (tmp_path / "usr/lib/modules" / kver / "vmlinuz").write_bytes(b"k")
    assert build_mod.find_kernel(tmp_path, None)[0] == "6.1.0-10-amd64"
    assert build_mod.find_kernel(tmp_path, "6.1.0-9-amd64")[0] == "6.1.0-9-amd64"
    with pytest.raises(build_mod.BuildError, match=r"no kernel 7\.0"):
        build_mod.find_kernel(tmp_path, "7.0")
    # A vmlinuz that is a link is named as one: the image looks as if it had that kernel.
    (tmp_path / "usr/lib/modules/7.0").mkdir()
    (tmp_path / "usr/lib/modules/7.0/vmlinuz").symlink_to("/opt/vmlinuz-7.0")
    with pytest.raises(build_mod.BuildError) as err:
        build_mod.find_kernel(tmp_path, "7.0")
    assert "usr/lib/modules/7.0/vmlinuz is a symbolic link (to /opt/vmlinuz-7.0)" in str(err.value)


def test_a_kernel_without_its_modules_is_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale usr/lib/modules/9.9.9 with a vmlinuz only was taken as the highest: its
    initramfs had no module at all, and the self-check said it booted zram and packed roots."""
    modules = tmp_path / "usr/lib/modules"
    for kver in ("6.1.0-10-amd64", "9.9.9-stale"):
        (modules / kver).mkdir(parents=True)
        (modules / kver / "vmlinuz").write_bytes(b"k")
    (modules / "6.1.0-10-amd64/modules.dep").write_text("kernel/x.ko:\n")
    assert build_mod.find_kernel(tmp_path, None)[0] == "6.1.0-10-amd64"
    assert "kernel 9.9.9-stale has no modules" in capsys.readouterr().err
    # Its modules.dep a link out of the image: no modules of its own.
    (modules / "9.9.9-stale/modules.dep").symlink_to(modules / "6.1.0-10-amd64/modules.dep")
    assert build_mod.find_kernel(tmp_path, None)[0] == "6.1.0-10-amd64"
    (modules / "9.9.9-stale/modules.dep").unlink()
    (modules / "9.9.9-stale/modules.dep").write_text("")
    assert build_mod.find_kernel(tmp_path, None)[0] == "9.9.9-stale"


def test_a_kernel_whose_modules_are_missing_is_refused(tmp_path: Path) -> None:
    """The only kernel's vmlinuz without its modules (usr/lib/modules/KVER has the vmlinuz, so
    dracut found the directory): its initramfs had no module at all (no loop, overlay, zram,
    ext4), and the self-check said it booted packed roots and bootc.zram. Refused when its
    config says it has modules; a kernel built without module support is taken."""
    kver = "6.1.0-10-amd64"
    (tmp_path / "usr/lib/modules" / kver).mkdir(parents=True)
    (tmp_path / "usr/lib/modules" / kver / "vmlinuz").write_bytes(b"k")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{kver}").write_text("CONFIG_MODULES=y\nCONFIG_ZRAM=m\n")
    for given in (None, kver):
        with pytest.raises(build_mod.BuildError) as err:
            build_mod.find_kernel(tmp_path, given)
        assert err.value.line().startswith(f"kernel {kver} has no modules in the image"), err
        assert f"linux-image-{kver}" in err.value.hint
    (tmp_path / "boot" / f"config-{kver}").write_text("# CONFIG_MODULES is not set\n")
    assert build_mod.find_kernel(tmp_path, None)[0] == kver


def test_the_index_records_the_zram_and_tmpfs_figures_a_handover_keeps(tmp_path: Path) -> None:
    build_layout(tmp_path / "img", LAYERS, tag="v1")
    image = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    index = build_mod.index_json(image, "v1", [1, 2], 12345, tmpfs=300 << 20)
    (tmp_path / "img/index.json").write_bytes(index)
    recorded = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    assert memory.recorded_zram(recorded) == 12345
    # The tmpfs figure is what the planner takes (its room for other kernels is per entry).
    assert memory.estimate(recorded) == memory.Estimate(300 << 20, "recorded by bootc-live build")
    # A layout made from it (a kexec handover, `pull`) keeps the figures.
    again = json.loads(handover.index_json(recorded, "handover", None))["manifests"][0]
    assert again["annotations"][memory.ZRAM_ANNOTATION] == "12345"
    assert again["annotations"][memory.SIZES_ANNOTATION] == "1,2"
    assert again["annotations"][memory.TMPFS_ANNOTATION] == str(300 << 20)
    assert memory.recorded_zram(image) is None


def test_the_index_records_the_packed_root_and_a_handover_keeps_it(tmp_path: Path) -> None:
    build_layout(tmp_path / "img", LAYERS, tag="v1")
    image = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    assert memory.recorded_packed(image) is None
    figures = {
        memory.PACKED_BYTES_ANNOTATION: str(170 << 20),
        memory.PACKED_SHA256_ANNOTATION: "sha256:" + "ab" * 32,
        memory.PACKED_FORMAT_ANNOTATION: "squashfs:xz",
    }
    (tmp_path / "img/index.json").write_bytes(
        build_mod.index_json(image, "v1", [1, 2], None, packed=figures)
    )
    recorded = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    assert memory.recorded_packed(recorded) == memory.RecordedPacked(
        170 << 20, "sha256:" + "ab" * 32, "squashfs:xz"
    )
    assert memory.recorded_packed(recorded).need() == (170 + 32) << 20  # as check_packed plans
    again = json.loads(handover.index_json(recorded, "handover", None))["manifests"][0]
    assert {k: again["annotations"][k] for k in figures} == figures


def test_an_auth_file_the_boot_cannot_use_fails_before_any_layer_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--authfile FILE goes into the initramfs: it was read only once the image was unpacked
    (minutes for a real one, to then say the file was missing), and read to its end (/dev/zero
    took all the memory there was, then a traceback). It is now read as the boot reads it,
    bounded, before anything else is done."""
    build_layout(tmp_path / "img", LAYERS, tag="v1")

    def unpacked(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a layer was read")

    monkeypatch.setattr(build_mod, "unpack_image", unpacked)
    (tmp_path / "helpers.json").write_text('{"credHelpers": {"r.io": "pass"}}')
    with open(tmp_path / "big.json", "wb") as big:  # sparse: larger than any auth.json
        big.truncate(1 << 30)
    for given, said in (
        (tmp_path / "missing.json", "is missing; fix --authfile FILE"),
        (Path("/dev/zero"), "/dev/zero is not a regular file (a character device)"),
        (tmp_path / "big.json", "is larger than"),
        (tmp_path / "helpers.json", 'has no "auths" object'),
    ):
        source = SourceRef.parse(f"oci:{tmp_path / 'img'}:v1")
        config = build_mod.BuildConfig(source, tmp_path / "out", auth_file=given, pack="none")
        with pytest.raises(BootcLiveError) as err:
            build_mod.build(config)
        assert said in for_host(err.value.line())
        assert sorted(os.listdir(tmp_path)) == ["big.json", "helpers.json", "img"]


def test_a_sha512_image_s_split_layout_unpacks_as_the_kernel_unpacks_it(tmp_path: Path) -> None:
    """The kernel makes no parent directory for a cpio member (nor does `cpio -i` without -d):
    an image whose blobs are named by sha512 needs blobs/sha512 in the archive, or its blobs
    are dropped and the boot finds none of them."""
    need(os.geteuid() == 0, "unpacking sets owners: needs root")
    need(shutil.which("cpio") is not None, "cpio is missing")
    layout = tmp_path / "img"
    info = build_layout(layout, [layer_tar([d("etc"), f("etc/a", b"a\n")])], tag="v1")

    (layout / "blobs/sha512").mkdir()

    def add_sha512(desc: dict[str, object], data: bytes) -> dict[str, object]:
        digest = hashlib.sha512(data).hexdigest()
        (layout / "blobs/sha512" / digest).write_bytes(data)
        return {**desc, "digest": f"sha512:{digest}", "size": len(data)}

    def as_sha512(desc: dict[str, object]) -> dict[str, object]:
        return add_sha512(desc, (layout / "blobs/sha256" / str(desc["digest"])[7:]).read_bytes())

    manifest = json.loads(info.manifest_path.read_bytes())
    manifest["config"] = as_sha512(manifest["config"])
    manifest["layers"] = [as_sha512(layer) for layer in manifest["layers"]]
    top = add_sha512(info.manifest_descriptor, json.dumps(manifest).encode())
    shutil.rmtree(layout / "blobs/sha256")
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    image = resolve(LayoutSource(str(layout)))
    with open(tmp_path / "rootfs.img", "wb") as out:
        handover.write_split_layout(image, build_mod.index_json(image, "v1", None), out)
    initramfs = tmp_path / "initramfs"
    initramfs.mkdir()
    with open(tmp_path / "rootfs.img", "rb") as cpio:
        subprocess.run(["cpio", "-i", "--quiet"], stdin=cpio, cwd=initramfs, check=True)
    split_image = resolve(LayoutSource(str(initramfs / handover.IMAGE_DIR)), label="v1")
    assert split_image.manifest_digest == top["digest"]
    root = tmp_path / "root"
    root.mkdir()
    unpack_image(split_image, str(root))
    assert (root / "etc/a").read_bytes() == b"a\n"


def test_an_image_without_dracut_or_python3_stops_before_the_work(tmp_path: Path) -> None:
    """An image with Debian's initramfs-tools, or without python3, went on to pack its root
    and then failed in dracut's words ("exec: dracut: not found"; without python3, "module
    'bootc-live' cannot be found or installed"). It stops after the unpacking, naming what to
    install, and leaves nothing behind."""
    need(os.geteuid() == 0, "unpacking sets owners: needs root")
    kernel = [d("usr"), d("usr/lib"), d("usr/lib/modules"), d("usr/lib/modules/6.1.0-1")]
    kernel += [f("usr/lib/modules/6.1.0-1/vmlinuz", b"k"), d("usr/bin"), d("etc")]
    for present, said in (
        ([], "the image has no dracut and no python3"),
        ([f("usr/bin/dracut", b"#!/bin/sh\n", 0o755)], "the image has no python3"),
    ):
        build_layout(tmp_path / "img", [layer_tar([*kernel, *present])], tag="v1")
        source = SourceRef.parse(f"oci:{tmp_path / 'img'}:v1")
        with pytest.raises(BootcLiveError) as err:
            build_mod.build(build_mod.BuildConfig(source, tmp_path / "out", pack="none"))
        assert err.value.line().startswith(said), err.value.line()
        assert "install" in (err.value.hint or "")
        assert sorted(os.listdir(tmp_path)) == ["img"]
        shutil.rmtree(tmp_path / "img")


def test_no_usable_python3_stops_dracut_saying_why(tmp_path: Path) -> None:
    """install() found no real python3 (here one that does not run, as a broken shim): it said
    so with derror and returned 1, which dracut ignores, so the initramfs went on without the
    runtime's interpreter and the self-check said only that python3 does not start. It stops
    dracut now, with its reason."""
    module = export_modules(tmp_path / "modules")[0]
    shim = tmp_path / "bin/python3"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\nexit 1\n")
    shim.chmod(0o755)
    script = (
        'dfatal() { echo "FATAL: $*"; }; derror() { echo "ERROR: $*"; }; '
        "inst_binary() { echo installed; }; inst_multiple() { :; }; "
        f"moddir={module}; initdir={tmp_path}/init; dracutsysrootdir=; "
        f". {module}/module-setup.sh; install; echo went on"
    )
    env = {**os.environ, "PATH": f"{shim.parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stdout
    assert done.stdout == (
        "FATAL: bootc-live: no usable python3 in /usr/bin (none, or a virtual environment's, "
        "not a real interpreter)\n"
    )


AARCH64_LIB = Path("/usr/aarch64-linux-gnu/lib")  # libc6-arm64-cross (./setup)
BUSYBOX = Path("/bin/busybox")  # busybox-static (./setup): static, for this machine


def _init_files(case: str) -> list[bytes]:
    if case == "no init":
        return []
    if case == "a dangling init":  # Debian's link, without systemd
        return [d("sbin"), sym("sbin/init", "/lib/systemd/systemd")]
    if case == "busybox":
        return [d("sbin"), f("sbin/init", BUSYBOX.read_bytes(), 0o755)]
    # libc.so.6 runs as a program (it names its loader, in the image too)
    libc = (AARCH64_LIB / "libc.so.6").read_bytes()
    loader = (AARCH64_LIB / "ld-linux-aarch64.so.1").read_bytes()
    return [
        d("sbin"),
        f("sbin/init", libc, 0o755),
        d("lib"),
        f("lib/ld-linux-aarch64.so.1", loader, 0o755),
    ]


@pytest.mark.parametrize(
    ("case", "platform", "said"),
    [
        ("no init", "linux/amd64", "the image has no /sbin/init; name the image's init with init="),
        ("a dangling init", "linux/amd64", "/sbin/init is a link to nothing in the image"),
        ("aarch64", "linux/amd64", "/sbin/init is an executable for aarch64, not for this x86_64"),
        ("aarch64", "linux/arm64", None),
        ("busybox", "linux/amd64", None),
    ],
)
def test_build_says_what_would_stop_the_images_switch_root_before_the_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    platform: str,
    said: str | None,
) -> None:
    """The boot checks that the root can be switched into (initcheck) and stops there with one
    line; the build, which has the tree, says the same as a warning before building (init=,
    known at boot only, may name another init). The init's machine is the image's
    architecture's: an arm64 image built with --platform linux/arm64 is not warned about its
    arm64 init, an amd64 image is."""
    need(os.geteuid() == 0, "unpacking sets owners: needs root")
    need(AARCH64_LIB.is_dir() and BUSYBOX.is_file(), "needs libc6-arm64-cross and busybox-static")
    tree = [d("usr"), d("usr/lib"), d("usr/lib/modules"), d("usr/lib/modules/6.1.0-1")]
    tree += [f("usr/lib/modules/6.1.0-1/vmlinuz", b"k"), d("usr/bin"), d("etc")]
    tree += [f("usr/bin/dracut", b"#!/bin/sh\n", 0o755), f("usr/bin/python3", b"", 0o755)]
    tree += [f("usr/lib/os-release", b"ID=test\n"), *(d(n) for n in ("proc", "sys", "dev", "run"))]
    tree += _init_files(case)
    build_layout(tmp_path / "img", [layer_tar(tree)], tag="v1", platform=tuple(platform.split("/")))

    def dracut_in_image(root: Path, kver: str, flavour: str, output: Path, *_: object) -> None:
        output.write_bytes(b"initramfs")

    monkeypatch.setattr(build_mod.dracut, "build_in_image", dracut_in_image)
    monkeypatch.setattr(build_mod, "check", lambda *a: None)
    source = SourceRef.parse(f"oci:{tmp_path / 'img'}:v1")
    config = build_mod.BuildConfig(
        source, tmp_path / "out", pack="none", platform=Platform.parse(platform)
    )
    build_mod.build(config)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    if said is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and said in warnings[0], warnings
        assert warnings[0].endswith("(its boot stops there)")
        assert str(tmp_path) not in warnings[0]
