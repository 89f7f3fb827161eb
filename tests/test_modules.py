"""The initramfs's unused kernel modules: which files go, and what memory they give back."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from bootc_live.runtime import modules, tools

DEP = """\
kernel/drivers/block/zram/zram.ko.xz:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko.zst:
kernel/drivers/net/wireless/ath/ath9k/ath9k.ko.gz:
kernel/drivers/scsi/qla2xxx/qla2xxx.ko:
kernel/net/netfilter/nf-nat.ko:
kernel/drivers/gone.ko:
"""
LOADED = """\
zram 45056 0 - Live 0x0000000000000000
ext4 999424 1 - Live 0x0000000000000000
jbd2 167936 1 ext4, Live 0x0000000000000000
mbcache 16384 1 ext4, Live 0x0000000000000000
e1000 163840 0 - Live 0x0000000000000000
"""


def tree(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "lib/modules/6.1.0-test"
    sizes = {
        "zram.ko.xz": 100,
        "ext4.ko": 9000,
        "jbd2.ko": 10,
        "mbcache.ko": 10,
        "e1000.ko.zst": 5000,
        "ath9k.ko.gz": 4097,
        "qla2xxx.ko": 12288,
        "nf-nat.ko": 1,
    }
    for line in DEP.splitlines():
        rel = line.partition(":")[0]
        name = rel.rsplit("/", 1)[-1]
        if name in sizes:
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_bytes(b"m" * sizes[name])
    (base / "modules.dep").write_text(DEP)
    (base / "modules.alias.bin").write_bytes(b"index")
    proc = tmp_path / "proc-modules"
    proc.write_text(LOADED)
    return base, proc


def test_the_files_of_modules_not_loaded_go_and_their_pages_are_counted(tmp_path: Path) -> None:
    base, proc = tree(tmp_path)
    files = modules.unused(str(base), str(proc))
    gone = {Path(p).relative_to(base).as_posix() for p in files.paths}
    # Loaded modules stay (whatever their suffix), and so do modprobe's indexes; names with a
    # dash are listed by the kernel with an underscore; a listed file that is absent is skipped.
    assert gone == {
        "kernel/drivers/net/wireless/ath/ath9k/ath9k.ko.gz",
        "kernel/drivers/scsi/qla2xxx/qla2xxx.ko",
        "kernel/net/netfilter/nf-nat.ko",
    }
    assert files.size == 8192 + 12288 + 4096  # whole pages: 4097 bytes hold two
    assert modules.free(files, str(proc)) == files
    left = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert left == [
        "kernel/drivers/block/zram/zram.ko.xz",
        "kernel/drivers/net/ethernet/intel/e1000/e1000.ko.zst",
        "kernel/fs/ext4/ext4.ko",
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/mbcache.ko",
        "modules.alias.bin",
        "modules.dep",
    ]
    assert modules.unused(str(base), str(proc)) == modules.Unused()
    assert modules.free(files, str(proc)).size == 0  # already gone: nothing counted twice


def test_a_module_loaded_after_counting_is_not_freed(tmp_path: Path) -> None:
    base, proc = tree(tmp_path)
    counted = modules.unused(str(base), str(proc))
    proc.write_text(LOADED + "qla2xxx 1 0 - Live 0x0\n")  # e.g. the root's own, loaded since
    files = modules.free(counted, str(proc))
    assert files.size == counted.size - 12288
    assert (base / "kernel/drivers/scsi/qla2xxx/qla2xxx.ko").exists()


def test_nothing_is_freed_without_modules_dep_or_outside_an_initramfs(tmp_path: Path) -> None:
    proc = tmp_path / "proc-modules"
    proc.write_text(LOADED)
    assert modules.unused(str(tmp_path / "none"), str(proc)) == modules.Unused()
    # The runtime frees modules only where /etc/initrd-release says it runs in an initramfs.
    assert not modules.in_initramfs(str(tmp_path / "initrd-release"))
    (tmp_path / "initrd-release").write_text("NAME=dracut\n")
    assert modules.in_initramfs(str(tmp_path / "initrd-release"))


def test_module_names_as_the_kernel_lists_them() -> None:
    assert modules.module_name("kernel/fs/fat/vfat.ko.xz") == "vfat"
    assert modules.module_name("kernel/lib/lz4/lz4hc_compress.ko") == "lz4hc_compress"
    assert modules.module_name("kernel/net/netfilter/nf-nat.ko.zst") == "nf_nat"


def test_nothing_is_counted_where_the_files_cannot_be_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 13's initramfs keeps its modules on a read-only filesystem: the planner must not
    count memory that cannot be given back."""
    base, proc = tree(tmp_path)
    real_access = os.access
    monkeypatch.setattr(
        modules.os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode)
    )
    assert modules.unused(str(base), str(proc)) == modules.Unused()


def test_a_file_that_cannot_be_deleted_ends_the_freeing_not_the_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, proc = tree(tmp_path)
    files = modules.unused(str(base), str(proc))
    real_unlink = os.unlink
    deleted: list[str] = []

    def unlink(path: str) -> None:
        if deleted:
            raise OSError(errno.EROFS, "Read-only file system", path)
        real_unlink(path)
        deleted.append(path)

    first = modules.pages(os.path.getsize(files.paths[0]))
    monkeypatch.setattr(modules.os, "unlink", unlink)
    freed = modules.free(files, str(proc))
    assert freed == modules.Unused((files.paths[0],), first)
    assert all(os.path.exists(p) for p in files.paths[1:])


# The initramfs's optional tools (runtime/tools.py): the files the build recorded for each.


def tool_files(tmp_path: Path) -> tuple[dict[str, list[str]], Path]:
    files = {
        "curl": [tmp_path / "bin/curl", tmp_path / "lib/libcurl.so.4"],
        "gpgv": [tmp_path / "bin/gpgv"],
    }
    for paths in files.values():
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"t" * 5000)
    manifest = tmp_path / "tools.json"
    recorded = {tool: [str(p) for p in paths] for tool, paths in files.items()}
    manifest.write_text(json.dumps(recorded))
    return recorded, manifest


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"curl": "/bin/curl"}', '{"sh": ["/bin/sh"]}', '{"curl": ["bin/x"]}'],
)
def test_a_missing_or_foreign_tools_record_frees_nothing(tmp_path: Path, text: str) -> None:
    """Only what the build recorded, as it records it: absolute paths of the known tools. An
    initramfs of an older build has no record; anything else in one is not acted on."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/sh").write_bytes(b"sh")
    (tmp_path / "bin/x").write_bytes(b"x")
    manifest = tmp_path / "tools.json"
    manifest.write_text(text)
    assert tools.unused(keep=(), manifest=str(manifest)) == tools.Unused()
    assert tools.unused(keep=(), manifest=str(tmp_path / "none.json")) == tools.Unused()


def test_a_tool_is_reported_freed_only_when_all_its_files_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded, manifest = tool_files(tmp_path)
    files = tools.unused(keep={"kexec"}, manifest=str(manifest))
    assert files.tools == ("curl", "gpgv") and files.files.size == 3 * 8192
    real_unlink = os.unlink

    def unlink(path: str) -> None:
        if path == recorded["curl"][1]:
            raise OSError(errno.EROFS, "Read-only file system", path)
        real_unlink(path)

    monkeypatch.setattr(modules.os, "unlink", unlink)
    freed = tools.free(files)
    assert freed.tools == () and freed.files.paths == (recorded["curl"][0],)
    assert freed.files.size == 8192 and os.path.exists(recorded["gpgv"][0])


def test_tools_on_a_read_only_initramfs_are_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, manifest = tool_files(tmp_path)
    real_access = os.access
    monkeypatch.setattr(
        tools.os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode)
    )
    assert tools.unused(keep=(), manifest=str(manifest)) == tools.Unused()


def test_a_file_with_a_name_elsewhere_is_deleted_but_not_counted(tmp_path: Path) -> None:
    """dracut hard-links identical files: deleting one name of several frees nothing, so the
    planner counts a file's pages only when all its names go, once."""
    base, proc = tree(tmp_path)
    qla = base / "kernel/drivers/scsi/qla2xxx/qla2xxx.ko"
    os.link(qla, tmp_path / "elsewhere.ko")
    files = modules.unused(str(base), str(proc))
    assert str(qla) in files.paths
    alone = modules.unused(str(base), str(proc))
    os.unlink(tmp_path / "elsewhere.ko")
    both = modules.unused(str(base), str(proc))
    assert both.size - alone.size == 12288 == modules.pages(qla.stat().st_size)
    os.link(qla, qla.with_name("qla2xxx-copy.ko"))  # two names, both among the files
    paths = [str(qla), str(qla.with_name("qla2xxx-copy.ko"))]
    assert modules.reclaimable(paths).size == 12288
    assert modules.reclaimable(paths[:1]).size == 0
    assert modules.delete(paths).size == 12288
