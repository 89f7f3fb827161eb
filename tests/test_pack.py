"""The packed root on the host (pack.py, `bootc-live pack`, build's packed.img): the format the
kernel's config chooses, the errors, the cpio wrapper read back by GNU cpio, and (as root) the
mounted filesystem against `bootc-live unpack` of the same image, and reproducibility."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bootc_live import build as build_mod
from bootc_live import cli, pack
from bootc_live.demo import demo_layers, host_kernel
from bootc_live.images import SourceRef
from bootc_live.layout import write_layout
from bootc_live.pack import KernelConfig, Packed, PackError, PackFormat
from bootc_live.runtime import handover, roots
from imagegen import block, build_layout, char, d, f, fifo, hard, layer_tar, ns, sparse, sym
from treewalk import Record, diff, snapshot
from unpackers import assert_clean_failure, bootc_live, bootc_live_unpack, need, need_root_and

TESTS = Path(__file__).resolve().parent
KVER = "6.1.0-99-amd64"
ALL_TOOLS = {
    "squashfs": ["gzip", "lzo", "lz4", "xz", "zstd", "lzma"],
    "erofs": ["lz4hc", "lz4"],
}
# What Debian 12's kernel enables (its /boot/config-6.1.0-*), of the options KERNEL_NEEDS names.
DEBIAN_12 = frozenset(
    {
        "CONFIG_SQUASHFS",
        "CONFIG_SQUASHFS_XATTR",
        "CONFIG_SQUASHFS_ZLIB",
        "CONFIG_SQUASHFS_LZ4",
        "CONFIG_SQUASHFS_LZO",
        "CONFIG_SQUASHFS_XZ",
        "CONFIG_SQUASHFS_ZSTD",
        "CONFIG_EROFS_FS",
        "CONFIG_EROFS_FS_XATTR",
        "CONFIG_EROFS_FS_ZIP",
    }
)


def config(*without: str, enabled: frozenset[str] = DEBIAN_12) -> KernelConfig:
    return KernelConfig(KVER, f"/boot/config-{KVER}", enabled - set(without))


# --- parsing and choosing --------------------------------------------------------------------


def test_pack_option_parses_format_and_compressor() -> None:
    assert PackFormat.parse("squashfs:xz") == PackFormat("squashfs", "xz")
    assert PackFormat.parse("erofs") == PackFormat("erofs", None)
    assert str(PackFormat("erofs", "lz4hc")) == "erofs:lz4hc"
    with pytest.raises(ValueError, match=r"^--pack ext4: the format is squashfs or erofs$"):
        PackFormat.parse("ext4")
    with pytest.raises(ValueError, match=r"^--pack erofs:xz: erofs compressors are lz4, lz4hc, "):
        PackFormat.parse("erofs:xz")


def test_the_cli_names_the_option_of_a_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["pack", "oci:x", "-o", "y", "--pack", "squashfs:brotli"])
    assert "argument --pack: --pack squashfs:brotli: squashfs compressors are" in (
        capsys.readouterr().err
    )
    args = cli.parser().parse_args(["build", "oci:x", "-o", "y", "--pack", "none"])
    assert args.pack == "none"


def test_the_kernel_config_chooses_the_smallest_it_mounts() -> None:
    assert pack.choose(None, config(), ALL_TOOLS) == PackFormat("squashfs", "xz")
    assert pack.choose(None, config("CONFIG_SQUASHFS_XZ"), ALL_TOOLS) == PackFormat(
        "squashfs", "zstd"
    )
    no_squashfs = config("CONFIG_SQUASHFS")
    assert pack.choose(None, no_squashfs, ALL_TOOLS) == PackFormat("erofs", "lz4hc")
    assert pack.choose(PackFormat("erofs"), config(), ALL_TOOLS) == PackFormat("erofs", "lz4hc")
    assert pack.choose(PackFormat("squashfs", "lz4"), config(), ALL_TOOLS) == PackFormat(
        "squashfs", "lz4"
    )
    # The tools decide too: a newer mkfs.erofs with lzma beats lz4hc when the kernel has it.
    newer = {"squashfs": [], "erofs": ["lz4", "lz4hc", "lzma"]}
    lzma = config(enabled=DEBIAN_12 | {"CONFIG_EROFS_FS_ZIP_LZMA"})
    assert pack.choose(None, lzma, newer) == PackFormat("erofs", "lzma")
    assert pack.choose(None, config(), newer) == PackFormat("erofs", "lz4hc")
    # Without a config, an explicit --pack is taken as the tools allow it.
    assert pack.choose(PackFormat("squashfs"), None, ALL_TOOLS) == PackFormat("squashfs", "xz")


def test_a_format_the_kernel_cannot_mount_names_the_missing_option() -> None:
    with pytest.raises(PackError) as err:
        pack.choose(PackFormat("squashfs", "xz"), config("CONFIG_SQUASHFS_XZ"), ALL_TOOLS)
    assert err.value.line() == (
        f"the kernel {KVER} cannot mount squashfs:xz: its config (/boot/config-{KVER}) lacks "
        "CONFIG_SQUASHFS_XZ for squashfs:xz; pick another --pack, or build the kernel with that "
        "option"
    )
    with pytest.raises(PackError) as err:
        pack.choose(
            PackFormat("erofs"), config("CONFIG_EROFS_FS", "CONFIG_EROFS_FS_ZIP"), ALL_TOOLS
        )
    assert str(err.value).endswith(
        "cannot mount erofs: its config (/boot/config-6.1.0-99-amd64) lacks CONFIG_EROFS_FS, "
        "CONFIG_EROFS_FS_ZIP for erofs:lz4hc; CONFIG_EROFS_FS, CONFIG_EROFS_FS_ZIP for erofs:lz4"
    )
    with pytest.raises(PackError) as err:
        pack.choose(None, config("CONFIG_SQUASHFS", "CONFIG_EROFS_FS"), ALL_TOOLS)
    assert str(err.value).endswith(
        "cannot mount any packed root made here: its config (/boot/config-6.1.0-99-amd64) lacks "
        "CONFIG_SQUASHFS for squashfs:xz; CONFIG_SQUASHFS for squashfs:zstd; CONFIG_SQUASHFS for "
        "squashfs:gzip; CONFIG_SQUASHFS for squashfs:lzo; CONFIG_SQUASHFS for squashfs:lz4; "
        "CONFIG_EROFS_FS for erofs:lz4hc; CONFIG_EROFS_FS for erofs:lz4"
    )
    with pytest.raises(PackError, match=r"lacks CONFIG_SQUASHFS_XATTR for squashfs:xz$"):
        pack.choose(PackFormat("squashfs", "xz"), config("CONFIG_SQUASHFS_XATTR"), ALL_TOOLS)


def test_no_config_and_no_pack_option_says_to_give_one() -> None:
    with pytest.raises(PackError) as err:
        pack.choose(None, None, ALL_TOOLS)
    assert err.value.line() == (
        "the image has no kernel config (looked for usr/lib/modules/KVER/config, "
        "boot/config-KVER), so nothing says which packed formats its kernel mounts; "
        "give --pack FORMAT[:COMPRESSOR] (e.g. --pack squashfs:xz; build takes --pack none)"
    )


def test_a_format_no_tool_here_makes_is_refused() -> None:
    with pytest.raises(PackError, match=r"cannot make erofs:lz4hc: mksquashfs offers xz, "):
        pack.choose(PackFormat("erofs", "lz4hc"), config(), {"squashfs": ["xz"], "erofs": []})
    with pytest.raises(PackError, match=r"offers nothing, mkfs.erofs nothing$"):
        pack.choose(None, config(), {"squashfs": [], "erofs": []})


def test_the_config_is_read_from_the_tree_never_through_a_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    modules = tree / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(b"kernel")
    assert pack.image_kernel_config(tree) is None
    (tree / "boot").mkdir()
    (tree / "boot" / f"config-{KVER}").write_text(
        "CONFIG_EROFS_FS=m\n# CONFIG_SQUASHFS is not set\n"
    )
    found = pack.image_kernel_config(tree)
    assert found == KernelConfig(KVER, f"/boot/config-{KVER}", frozenset({"CONFIG_EROFS_FS"}))
    (modules / "config").symlink_to("/boot/config-whatever-the-host-has")
    assert pack.image_kernel_config(tree) == found  # the link is not followed
    (modules / "config").unlink()
    (modules / "config").write_text("CONFIG_SQUASHFS=y\nCONFIG_SQUASHFS_XZ=y\nCONFIG_X=n\n")
    assert pack.image_kernel_config(tree) == KernelConfig(
        KVER,
        f"/usr/lib/modules/{KVER}/config",
        frozenset({"CONFIG_SQUASHFS", "CONFIG_SQUASHFS_XZ"}),
    )
    assert pack.image_kernel_config(tree, "5.0") is None


def test_the_real_tools_are_asked_what_they_offer() -> None:
    need(shutil.which("mksquashfs") is not None, "needs mksquashfs (squashfs-tools)")
    need(shutil.which("mkfs.erofs") is not None, "needs mkfs.erofs (erofs-utils)")
    tools = pack.offered()
    assert {"xz", "zstd", "gzip"} <= set(tools["squashfs"])
    assert "lz4hc" in tools["erofs"]


def test_tool_argv_exact(tmp_path: Path) -> None:
    assert pack.mksquashfs_argv(Path("/t"), Path("/i"), "zstd") == [
        "mksquashfs", "/t", "/i", "-noappend", "-reproducible", "-mkfs-time", "0", "-b", "1M",
        "-comp", "zstd", "-Xcompression-level", "19", "-quiet", "-no-progress",
    ]  # fmt: skip
    assert pack.mksquashfs_argv(Path("/t"), Path("/i"), "xz")[-4:] == [
        "-comp", "xz", "-quiet", "-no-progress",
    ]  # fmt: skip
    assert pack.mksquashfs_argv(Path("/t"), Path("/i"), "lz4")[-5:] == [
        "-comp", "lz4", "-Xhc", "-quiet", "-no-progress",
    ]  # fmt: skip
    assert roots.mkfs_erofs_argv("/i", "/t", "lz4hc") == [
        "mkfs.erofs", "-T0", f"-U{roots.NULL_UUID}", "-zlz4hc", "/i", "/t",
    ]  # fmt: skip


PACKED = Packed(
    "sha256:" + "1" * 64, "sha256:" + "2" * 64, 4096, PackFormat("squashfs", "xz"),
    "mksquashfs 4.5.1", KVER,
)  # fmt: skip


def test_the_record_and_the_arguments() -> None:
    assert json.loads(PACKED.record()) == {
        "image": "sha256:" + "1" * 64,
        "sha256": "sha256:" + "2" * 64,
        "bytes": 4096,
        "format": "squashfs",
        "compressor": "xz",
        "tool": "mksquashfs 4.5.1",
        "kernel": KVER,
    }
    assert PACKED.arguments() == (
        f"root=bootc-live:packed:/bootc-live/packed.root bootc.packed.sha256=sha256:{'2' * 64} "
        f"bootc.packed.image=sha256:{'1' * 64}"
    )
    assert PACKED.arguments("http://h/p.img").startswith("root=bootc-live:packed:http://h/p.img ")
    # What build records in the image index: inspect and the planner read it back.
    assert PACKED.annotations() == {
        "org.bootc-live.packed-bytes": "4096",
        "org.bootc-live.packed-sha256": "sha256:" + "2" * 64,
        "org.bootc-live.packed-format": "squashfs:xz",
    }


# --- the cpio wrapper ------------------------------------------------------------------------


def _cpio(archive: Path, *args: str, cwd: Path | None = None) -> str:
    need(shutil.which("cpio") is not None, "needs GNU cpio")
    with open(archive, "rb") as f:
        done = subprocess.run(
            ["cpio", "--quiet", *args], stdin=f, cwd=cwd, capture_output=True, check=True
        )
    return done.stdout.decode()


def _wrap(tmp_path: Path, data: bytes) -> Path:
    archive = tmp_path / "packed.img"
    with open(tmp_path / "fs", "wb") as fs:
        fs.write(data)
    with open(tmp_path / "fs", "rb") as src, open(archive, "wb") as out:
        pack.write_wrapper(src, len(data), out)
    return archive


def test_gnu_cpio_reads_the_filesystem_back_from_the_wrapper(tmp_path: Path) -> None:
    data = b"hsqs" + os.urandom(5000)
    archive = _wrap(tmp_path, data)
    assert archive.stat().st_size % 512 == 0
    assert _cpio(archive, "-t").split() == ["bootc-live", "bootc-live/packed.root"]
    out = tmp_path / "out"
    out.mkdir()
    _cpio(archive, "-i", "-d", cwd=out)
    assert (out / "bootc-live/packed.root").read_bytes() == data


def test_past_part_size_the_filesystem_is_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "PART_SIZE", 1000)
    data = os.urandom(2500)
    archive = _wrap(tmp_path, data)
    names = _cpio(archive, "-t").split()
    assert names == ["bootc-live", *(f"bootc-live/packed.root.{i}" for i in range(3))]
    out = tmp_path / "out"
    out.mkdir()
    _cpio(archive, "-i", "-d", cwd=out)
    parts = [(out / name).read_bytes() for name in names[1:]]
    assert [len(p) for p in parts] == [1000, 1000, 500]
    assert b"".join(parts) == data
    exactly = _wrap(tmp_path, data[:1000])  # at most PART_SIZE: one member
    assert _cpio(exactly, "-t").split() == ["bootc-live", "bootc-live/packed.root"]


def test_boot_ipxe_shows_the_packed_boot(tmp_path: Path) -> None:
    class Fake:
        manifest_digest = "sha256:" + "1" * 64

    script = build_mod.ipxe_script("root=bootc-live:/x", Fake(), KVER, PACKED)  # type: ignore[arg-type]
    assert (
        "# The packed root (nothing unpacked at boot), appended: kernel vmlinuz "
        f"initrd=initrd.img initrd=packed.img {PACKED.arguments()}\n"
        "# or by URL: kernel vmlinuz initrd=initrd.img "
        f"{PACKED.arguments('${base-url}/packed.img')}\n"
    ) in script
    assert "packed" not in build_mod.ipxe_script("root=bootc-live:/x", Fake(), KVER)  # type: ignore[arg-type]


# --- the packed filesystem, mounted, against unpack (root) -------------------------------------

MTIME = 1_600_000_000
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+p
# A POSIX ACL as the kernel stores it: user::rwx group::r-x group:4:r-x mask::r-x other::r-x.
ACL = bytes.fromhex(
    "02000000" "01000700ffffffff" "04000500ffffffff" "0800050004000000" "10000500ffffffff"
    "20000500ffffffff"
)  # fmt: skip
LAYERS = [
    [
        d("etc", mode=0o755, mtime=MTIME + 1),
        f("etc/shadow", b"secret\n", mode=0o640, gid=42, mtime=MTIME + 2),
        d("home/user", mode=0o700, uid=1000, gid=1000, mtime=MTIME + 3),
        f("home/user/notes", b"x" * 3000, mode=0o600, uid=1000, gid=1000, mtime=ns(MTIME, 5)),
        f("usr/bin/ping", b"\x7fELF" * 100, mode=0o755,
          xattrs={"security.capability": CAPABILITY}),
        f("usr/bin/su", b"su", mode=0o4755),
        d("tmp", mode=0o1777),
        f("data", b"\x00\xff binary", xattrs={"user.bin": b"\x00\x01\xfe\xff", "user.t": b"text"}),
        sym("usr/lib/link", "../bin/ping", mtime=MTIME + 7),
        f("usr/lib/original", b"shared by two names"),
        hard("usr/lib/hardlink", "usr/lib/original"),
        char("dev/null", 1, 3),
        block("dev/loop9", 7, 9),
        fifo("run/fifo", mode=0o600),
        sparse("var/sparse.img", 8 << 20, [(0, b"head" * 128), (5 << 20, b"middle" * 1000)]),
        f("empty", b""),
        d("var/log/journal", mode=0o2755, xattrs={"system.posix_acl_access": ACL,
                                                   "system.posix_acl_default": ACL}),
    ],
    [f("etc/shadow", b"replaced\n", mode=0o600, uid=0, gid=42, mtime=MTIME + 9)],
]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """An image holding every kind of entry, and its tree as `bootc-live unpack` writes it."""
    need_root_and("mksquashfs", "mkfs.erofs", "unshare", "mount")
    base = tmp_path_factory.mktemp("generated")
    build_layout(base / "layout", [layer_tar(layer) for layer in LAYERS], tag="gen")
    source = f"oci:{base / 'layout'}:gen"
    return source, bootc_live_unpack(source, base / "unpacked")


def mounted_snapshot(image: Path, work: Path) -> dict[bytes, Record]:
    """The tree of the filesystem image, mounted read-only from a loop device in a private
    mount namespace (gone, with its loop device, when the command ends)."""
    mnt, out = work / "mnt", work / "snapshot.pickle"
    mnt.mkdir()
    code = (
        "import pickle, sys; sys.path.insert(0, sys.argv[3]); from treewalk import snapshot; "
        "pickle.dump(snapshot(sys.argv[1]), open(sys.argv[2], 'wb'))"
    )
    script = 'mount -o ro,loop "$1" "$2" && "$3" -c "$4" "$2" "$5" "$6"'
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         image, mnt, sys.executable, code, out, TESTS],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    with open(out, "rb") as f:
        snap: dict[bytes, Record] = pickle.load(f)
    return snap


def packed_filesystem(archive: Path, work: Path) -> Path:
    out = work / "extracted"
    out.mkdir()
    _cpio(archive, "-i", "-d", cwd=out)
    return out / "bootc-live/packed.root"


def pack_cli(
    source: str, output: Path, *args: str, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return bootc_live("pack", source, "-o", str(output), *args, tmpdir=output.parent, umask=umask)


def implied_at_epoch(snap: dict[bytes, Record]) -> dict[bytes, Record]:
    """The root and the directories no layer names are dated when unpacked; packed, at 0."""
    late = (MTIME + 10**6) * 10**9
    return {
        p: replace(r, mtime_ns=0) if r.type == "dir" and r.mtime_ns > late else r
        for p, r in snap.items()
    }


def whole_seconds(snap: dict[bytes, Record]) -> dict[bytes, Record]:
    return {p: replace(r, mtime_ns=r.mtime_ns // 10**9 * 10**9) for p, r in snap.items()}


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["squashfs:xz", "erofs:lz4hc", "squashfs:zstd"])
def test_the_mounted_packed_root_is_the_unpacked_tree_and_reproducible(
    generated: tuple[str, Path], tmp_path: Path, fmt: str
) -> None:
    source, unpacked = generated
    outputs = []
    for attempt, umask in (("one", 0o022), ("two", 0o077)):  # two clean directories
        where = tmp_path / attempt
        where.mkdir()
        # The root's mode is the image's, not the umask's: the live / was 0700 under 077.
        done = pack_cli(source, where / "packed.img", "--pack", fmt, umask=umask)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in where.iterdir()) == ["packed.img", "packed.img.json"]
        outputs.append(where)
    one, two = ((w / "packed.img").read_bytes() for w in outputs)
    assert one == two
    record = (outputs[0] / "packed.img.json").read_bytes()
    assert record == (outputs[1] / "packed.img.json").read_bytes()

    filesystem = packed_filesystem(outputs[0] / "packed.img", tmp_path)
    data = filesystem.read_bytes()
    facts = json.loads(record)
    assert facts["sha256"] == "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    assert facts["bytes"] == len(data)
    assert (facts["format"], facts["compressor"], facts["kernel"]) == (*fmt.split(":"), None)
    assert facts["tool"].startswith("mksquashfs " if fmt.startswith("squashfs") else "mkfs.erofs ")
    if fmt.startswith("squashfs"):
        assert data[:4] == b"hsqs"
    else:
        assert data[1024:1028] == (0xE0F5E1E2).to_bytes(4, "little")
    printed = done.stdout.splitlines()
    assert printed[0].startswith(f"{facts['sha256']}  {outputs[1] / 'packed.img'}  (")
    assert printed[1] == (
        f"root=bootc-live:packed:/bootc-live/packed.root bootc.packed.sha256={facts['sha256']} "
        f"bootc.packed.image={facts['image']}"
    )

    expected, mounted = implied_at_epoch(snapshot(unpacked)), mounted_snapshot(filesystem, tmp_path)
    if fmt.startswith("squashfs"):  # squashfs keeps whole seconds, and no system.* xattrs
        expected, mounted = whole_seconds(expected), whole_seconds(mounted)
        journal = expected[b"var/log/journal"]
        assert {name for name, _ in journal.xattrs} == {
            "system.posix_acl_access", "system.posix_acl_default",
        }  # fmt: skip
        expected[b"var/log/journal"] = replace(journal, xattrs=())
        assert (
            "bootc-live: warning: squashfs stores no system.posix_acl_access of /var/log/journal "
            "(nor 1 more): the packed root lacks it; --pack erofs keeps every xattr\n"
        ) in done.stderr
    else:  # mkfs.erofs -T0 (1.5 cannot keep mtimes with a fixed build time): all at the epoch
        assert {r.mtime_ns for r in mounted.values()} == {0}
        expected = {p: replace(r, mtime_ns=0) for p, r in expected.items()}
    assert diff(expected, mounted, ignore=(), names=("unpacked", "mounted")) == []
    assert mounted[b"usr/lib/hardlink"].links == (b"usr/lib/hardlink", b"usr/lib/original")
    assert mounted[b"dev/loop9"].rdev == (7, 9)
    assert dict(mounted[b"data"].xattrs) == {"user.bin": b"\x00\x01\xfe\xff", "user.t": b"text"}
    if fmt.startswith("squashfs"):
        assert mounted[b"home/user/notes"].mtime_ns == MTIME * 10**9
        assert mounted[b"etc/shadow"].mtime_ns == (MTIME + 9) * 10**9


@pytest.mark.integration
def test_pack_fails_cleanly_without_a_kernel_config(
    generated: tuple[str, Path], tmp_path: Path
) -> None:
    source, _ = generated
    failed = pack_cli(source, tmp_path / "packed.img")
    err = assert_clean_failure(failed)
    assert "the image has no kernel config" in err and "give --pack FORMAT[:COMPRESSOR]" in err
    assert list(tmp_path.iterdir()) == []  # no FILE, no FILE.json, no scratch


@pytest.mark.integration
def test_pack_refuses_an_output_it_cannot_write(tmp_path: Path) -> None:
    """Before the image is read (erofs used to find out after its unpack and mkfs)."""
    need_root_and("mkfs.erofs")
    for command in ("pack", "erofs"):
        for output, why in (
            (tmp_path / "no/such.img", "no such directory"),
            (tmp_path, "is a directory"),
        ):
            err = assert_clean_failure(bootc_live(command, "oci:/nonexistent", "-o", str(output)))
            assert err == f"bootc-live: -o {output}: {why}; give a file in an existing directory\n"
    assert list(tmp_path.iterdir()) == []
    # A device or a link at FILE (or at pack's FILE.json) was renamed over: -o /dev/null, as
    # root, left /dev/null a file. Refused, and left as it was.
    devices = tmp_path / "dev"
    devices.mkdir()
    os.mknod(devices / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (devices / "stdout").symlink_to("/proc/self/fd/1")
    (devices / "p.img.json").symlink_to("/proc/self/fd/1")
    for command in ("pack", "erofs"):
        for name, what in (("null", "no regular file"), ("stdout", "a link")):
            output = devices / name
            err = assert_clean_failure(bootc_live(command, "oci:/nonexistent", "-o", str(output)))
            assert err == (
                f"bootc-live: -o {output}: {output} is {what}, which this would replace with a "
                "file; give a new file, or a regular file to replace\n"
            )
    err = assert_clean_failure(bootc_live("pack", "oci:/nonexistent", "-o", str(devices / "p.img")))
    assert f"{devices / 'p.img.json'} is a link" in err
    assert stat.S_ISCHR((devices / "null").lstat().st_mode)
    assert sorted(p.name for p in devices.iterdir()) == ["null", "p.img.json", "stdout"]


@pytest.mark.integration
def test_pack_refuses_a_format_the_images_kernel_cannot_mount(tmp_path: Path) -> None:
    need_root_and("mksquashfs", "mkfs.erofs")
    layer = [
        f(f"usr/lib/modules/{KVER}/vmlinuz", b"kernel"),
        f(f"usr/lib/modules/{KVER}/config", b"CONFIG_SQUASHFS=y\nCONFIG_SQUASHFS_XATTR=y\n"
          b"CONFIG_SQUASHFS_ZSTD=m\n"),
    ]  # fmt: skip
    build_layout(tmp_path / "layout", [layer_tar(layer)], tag="k")
    source = f"oci:{tmp_path / 'layout'}:k"
    out = tmp_path / "out"
    out.mkdir()
    err = assert_clean_failure(pack_cli(source, out / "packed.img", "--pack", "erofs"))
    assert (
        f"the kernel {KVER} cannot mount erofs: its config (/usr/lib/modules/{KVER}/config) "
        "lacks CONFIG_EROFS_FS, CONFIG_EROFS_FS_XATTR, CONFIG_EROFS_FS_ZIP for erofs:lz4hc; "
    ) in err
    assert list(out.iterdir()) == []
    done = pack_cli(source, out / "packed.img")  # chosen by that config: squashfs zstd
    assert done.returncode == 0, done.stderr
    facts = json.loads((out / "packed.img.json").read_text())
    assert (facts["format"], facts["compressor"], facts["kernel"]) == ("squashfs", "zstd", KVER)


@pytest.mark.integration
def test_pack_interrupted_leaves_nothing(generated: tuple[str, Path], tmp_path: Path) -> None:
    source, _ = generated
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    # mksquashfs is held until the signal: a wrapper script first on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("mksquashfs")
    (bin_dir / "mksquashfs").write_text(
        f'#!/bin/sh\ncase "$1" in -*) exec {real} "$@";; esac\ntouch "{tmp_path}/started"\n'
        "exec sleep 60\n"
    )
    (bin_dir / "mksquashfs").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootc_live", "pack", source, "-o", str(out / "packed.img"),
         "--pack", "squashfs:xz"],
        env={**env, "PATH": f"{bin_dir}:{env['PATH']}", "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for _ in range(600):
        if (tmp_path / "started").exists():
            break
        assert proc.poll() is None, proc.communicate()
        __import__("time").sleep(0.1)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15, err
    assert "interrupted by SIGTERM" in err
    assert list(out.iterdir()) == []


# --- build writes packed.img (root) -------------------------------------------------------------


@pytest.mark.integration
def test_build_writes_the_packed_root_its_record_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root_and("mksquashfs", "cpio")
    need(any(Path("/boot").glob("config-*")), "needs the host kernel's /boot/config-KVER")
    # dracut and the initramfs's self-check are other tests' business: not run here.
    monkeypatch.setattr(build_mod.dracut, "build_with_host", lambda *a: a[2].write_bytes(b"x"))
    monkeypatch.setattr(build_mod, "check", lambda *a: None)
    write_layout(tmp_path / "layout", demo_layers(), "demo")
    out, kver = tmp_path / "out", host_kernel()
    source = SourceRef.parse(f"oci:{tmp_path / 'layout'}:demo")
    build_mod.build(build_mod.BuildConfig(source, out, host=True, kver=kver))
    assert {p.name for p in out.iterdir()} == build_mod.ARTIFACTS  # all a rebuild may replace
    facts = json.loads((out / "packed.json").read_text())
    # The host's Debian kernel mounts squashfs xz: the smallest.
    assert (facts["format"], facts["compressor"], facts["kernel"]) == ("squashfs", "xz", kver)
    digest = next(
        a.partition("=")[2]
        for a in (out / "cmdline.txt").read_text().split()
        if a.startswith("bootc.digest=")
    )
    assert facts["image"] == digest
    arguments = (
        f"root=bootc-live:packed:/bootc-live/packed.root bootc.packed.sha256={facts['sha256']} "
        f"bootc.packed.image={digest}"
    )
    assert (out / "cmdline-packed.txt").read_text() == arguments + "\n"
    data = packed_filesystem(out / "packed.img", tmp_path).read_bytes()
    assert data[:4] == b"hsqs" and len(data) == facts["bytes"]
    ipxe = (out / "boot.ipxe").read_text()
    assert f"initrd=initrd.img initrd=packed.img {arguments}\n" in ipxe
    assert "root=bootc-live:packed:${base-url}/packed.img bootc.packed.sha256=" in ipxe
    # The image index of root.oci and rootfs.img records it: inspect shows it, nothing read.
    inspected = bootc_live("inspect", f"oci-archive:{out / 'root.oci'}:demo")
    assert inspected.returncode == 0, inspected.stderr
    mib = facts["bytes"] / (1 << 20)
    assert f", packed: {mib:.1f} MiB (squashfs:xz); what each root mode" in inspected.stdout
    assert (
        f"  packed about {(facts['bytes'] + (32 << 20)) / (1 << 20):.0f} MiB: "
        f"root=bootc-live:packed:… bootc.packed.sha256={facts['sha256']} (cmdline-packed.txt)\n"
    ) in inspected.stdout
    # --pack none: none of them.
    build_mod.build(build_mod.BuildConfig(source, out, host=True, kver=kver, pack="none"))
    assert not {"packed.img", "packed.json", "cmdline-packed.txt"} & {p.name for p in out.iterdir()}
    assert "packed" not in (out / "boot.ipxe").read_text()
    inspected = bootc_live("inspect", f"oci-archive:{out / 'root.oci'}:demo")
    assert inspected.returncode == 0, inspected.stderr
    assert "packed:" not in inspected.stdout and "  packed " not in inspected.stdout


@pytest.mark.integration
def test_build_packs_the_images_tree_by_its_kernel_before_dracut_writes_into_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root_and("mksquashfs", "cpio", "unsquashfs")
    config = b"CONFIG_SQUASHFS=y\nCONFIG_SQUASHFS_XATTR=y\nCONFIG_SQUASHFS_ZSTD=y\n"
    layer = [
        f(f"usr/lib/modules/{KVER}/vmlinuz", b"kernel"),
        f(f"boot/config-{KVER}", config),
        f("etc/os-release", b"ID=test\n"),
    ]
    build_layout(tmp_path / "layout", [layer_tar(layer)], tag="k")

    def dracut_in_image(root: Path, kver: str, flavour: str, output: Path, *_: object) -> None:
        (root / "usr/lib/dracut/modules.d").mkdir(parents=True)  # as build_in_image does
        output.write_bytes(b"initramfs")

    monkeypatch.setattr(build_mod.dracut, "check_userland", lambda root: None)
    monkeypatch.setattr(build_mod.dracut, "build_in_image", dracut_in_image)
    monkeypatch.setattr(build_mod, "check", lambda *a: None)
    out = tmp_path / "out"
    build_mod.build(build_mod.BuildConfig(SourceRef.parse(f"oci:{tmp_path / 'layout'}:k"), out))
    facts = json.loads((out / "packed.json").read_text())
    assert (facts["format"], facts["compressor"], facts["kernel"]) == ("squashfs", "zstd", KVER)
    filesystem = packed_filesystem(out / "packed.img", tmp_path)
    listing = subprocess.run(
        ["unsquashfs", "-l", "-d", "", filesystem], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "/etc/os-release" in listing
    assert not [p for p in listing if "dracut" in p]
