"""The packed root's runtime parts on the host: the command line, the cpio stream parser (any
split of the stream into reads, GNU cpio's own output, hostile headers), the filesystem's
detection from real mksquashfs and mkfs.erofs images, and parts joined in place."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootc_live.runtime import handover, packed
from bootc_live.runtime.cmdline import CmdlineError, ImageLocation, RootMode, parse
from bootc_live.runtime.cpio import CpioWriter
from bootc_live.runtime.packed import MEMBER, FileSource, PackedError, payload

PIN = "sha256:" + "ab" * 32
IMAGE = "sha256:" + "cd" * 32


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "kind", "location"),
    [
        ("/bootc-live/packed.root", "path", "/bootc-live/packed.root"),
        ("http://10.0.2.100/packed.img", "url", "http://10.0.2.100/packed.img"),
        ("https://me:pw@server/p.img", "url", "https://me:pw@server/p.img"),
        ("ftp://server/p.img", "url", "ftp://server/p.img"),
        ("tftp://server/p.img", "url", "tftp://server/p.img"),
        ("nfs://server/export/p.img", "url", "nfs://server/export/p.img"),
        ("docker://quay.io/org/os:1", "docker", "quay.io/org/os:1"),
    ],
)
def test_a_packed_root_is_a_typed_location_with_its_pin(
    root: str, kind: str, location: str
) -> None:
    spec = parse([f"root=bootc-live:packed:{root}", f"bootc.packed.sha256={PIN}"])
    assert spec.image == ImageLocation(kind, location, packed=True)
    assert str(spec.image) == f"bootc-live:packed:{root}"
    assert (spec.packed_sha256, spec.packed_image) == (PIN, None)
    spec = parse(
        [
            f"root=bootc-live:packed:{root}",
            f"bootc.packed.sha256={PIN}",
            f"bootc.packed.image={IMAGE}",
        ]
    )
    assert spec.packed_image == IMAGE


def test_a_packed_root_from_a_registry_needs_its_pin_too() -> None:
    """The artifact is not signed by the image: anyone who can push can add one about it."""
    root = "root=bootc-live:packed:docker://quay.io/org/os@" + IMAGE
    with pytest.raises(CmdlineError, match=r"needs bootc\.packed\.sha256="):
        parse([root])
    spec = parse([root, f"bootc.packed.sha256={PIN}"])
    assert spec.image == ImageLocation("docker", "quay.io/org/os@" + IMAGE, packed=True)
    assert str(spec.image) == "bootc-live:packed:docker://quay.io/org/os@" + IMAGE
    assert spec.packed_sha256 == PIN
    # The image it names is trusted as a docker:// boot's: its policy applies.
    assert parse([root, f"bootc.packed.sha256={PIN}", "bootc.policy=/p.json"]).policy == "/p.json"


def test_bootc_zram_with_a_packed_root_is_its_uppers_device() -> None:
    spec = parse(
        [
            "root=bootc-live:packed:/p",
            f"bootc.packed.sha256={PIN}",
            "bootc.zram=64M",
            "bootc.zram.algorithm=zstd",
        ]
    )
    assert spec.mode == RootMode.zram(64 << 20, "zstd")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "root=bootc-live:packed:/p",
            "root=bootc-live:packed:… needs bootc.packed.sha256=; add the arguments pack, build or "
            "push-packed printed (cmdline-packed.txt)",
        ),
        (
            f"root=bootc-live:/image bootc.packed.sha256={PIN}",
            "bootc.packed.sha256 given without a packed root; use root=bootc-live:packed:… or "
            "drop them",
        ),
        (
            f"root=bootc-live:/image bootc.packed.sha256={PIN} bootc.packed.image={IMAGE}",
            "bootc.packed.sha256 and bootc.packed.image given without a packed root; use "
            "root=bootc-live:packed:… or drop them",
        ),
        (  # a policy that asks for signatures would not be enforced: no image is read
            f"root=bootc-live:packed:/p bootc.packed.sha256={PIN} bootc.policy=/etc/strict.json",
            "bootc.policy= applies to an OCI image, and root= is a packed root from a file or "
            "URL (bootc.packed.sha256= pins it); drop them",
        ),
        (
            f"root=bootc-live:packed:https://h/packed.img bootc.packed.sha256={PIN} "
            "bootc.identity=quay.io/org/os:1",
            "bootc.identity= applies to an OCI image, and root= is a packed root from a file or "
            "URL (bootc.packed.sha256= pins it); drop them",
        ),
        (
            f"root=bootc-live:packed:/p bootc.packed.sha256={PIN} bootc.live.erofs",
            "a packed root does not combine with bootc.live.erofs; drop one of them",
        ),
        (
            f"root=bootc-live:packed:docker:// bootc.packed.sha256={PIN}",
            "invalid root=bootc-live:packed:docker://: expected "
            "docker://HOST[:PORT]/PATH[:TAG][@sha256:HEX] (lower-case path; an IPv6 address in "
            "[ ]); fix the kernel command line",
        ),
        (
            f"root=bootc-live:packed:relative bootc.packed.sha256={PIN}",
            "invalid root=bootc-live:packed:relative: expected packed:/PATH, packed:URL "
            "(http, https, ftp, tftp, nfs) or packed:docker://REF; fix the kernel command line",
        ),
        (
            "root=bootc-live:packed:/p bootc.packed.sha256=sha512:" + "ab" * 64,
            f"invalid bootc.packed.sha256=sha512:{'ab' * 64}: expected sha256: and 64 "
            "lowercase hex digits; fix the kernel command line",
        ),
        (
            "root=bootc-live:packed:/p bootc.packed.sha256=" + "ab" * 32,
            f"invalid bootc.packed.sha256={'ab' * 32}: expected sha256: and 64 lowercase hex "
            "digits; fix the kernel command line",
        ),
    ],
)
def test_the_packed_options_are_checked_at_parse_time(args: str, message: str) -> None:
    with pytest.raises(CmdlineError) as err:
        parse(args.split())
    assert err.value.line() == message


def test_without_a_root_of_ours_the_pin_is_still_refused() -> None:
    with pytest.raises(CmdlineError, match="given without a packed root"):
        parse(["root=/dev/sda1", f"bootc.packed.sha256={PIN}"])


# -- the cpio stream -------------------------------------------------------------------------


def packed_img(parts: list[bytes], single: bool = True) -> bytes:
    """packed.img as the contract says: CpioWriter, directory bootc-live, the member(s)."""
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.add_dir("bootc-live")
    if single:
        (data,) = parts
        writer.add_file(MEMBER, io.BytesIO(data), len(data))
    else:
        for i, data in enumerate(parts):
            writer.add_file(f"{MEMBER}.{i}", io.BytesIO(data), len(data))
    writer.close()
    return out.getvalue()


def split(data: bytes, size: int) -> list[bytes]:
    """`data` in parts of `size` bytes, the last shorter, as pack makes them (PART_SIZE)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def reads(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """`data` in pieces cut at `cuts`, then nothing."""
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[last:cut]
        last = cut
    yield data[last:]


def reader(data: bytes, cuts: list[int]) -> object:
    """A read(n) that returns the pieces, never more than asked (empty pieces are skipped
    but for the last)."""
    pieces = [p for p in reads(data, cuts) if p]
    buffer = bytearray()

    def read(n: int) -> bytes:
        while not buffer and pieces:
            buffer.extend(pieces.pop(0))
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    return read


@settings(max_examples=200, deadline=None)
@given(
    root=st.binary(max_size=2400),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=30),
    single=st.booleans(),
    part_size=st.integers(min_value=1, max_value=600),
)
def test_the_payload_is_the_members_data_whatever_the_reads(
    root: bytes, cuts: list[int], single: bool, part_size: int
) -> None:
    data = packed_img([root] if single else split(root, part_size), single)
    with mock.patch.object(handover, "PART_SIZE", part_size):
        got = b"".join(payload(reader(data, cuts), "test"))  # type: ignore[arg-type]
    assert got == root


@settings(max_examples=100, deadline=None)
@given(
    raw=st.binary(min_size=1, max_size=5000).filter(lambda b: not b.startswith(b"070701")),
    cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=20),
)
def test_a_bare_image_is_its_own_payload(raw: bytes, cuts: list[int]) -> None:
    assert b"".join(payload(reader(raw, cuts), "test")) == raw  # type: ignore[arg-type]


def test_gnu_cpio_output_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real tool's newc archive, with directory `.` and the member; also split in parts."""
    if not shutil.which("cpio"):
        pytest.skip("GNU cpio is not installed (apt-get install cpio)")
    data = os.urandom(70_001)
    monkeypatch.setattr(handover, "PART_SIZE", len(data))
    for names, expected in (
        ([MEMBER], data),
        ([f"{MEMBER}.0", f"{MEMBER}.1"], data + data[:99]),
    ):
        tree = tmp_path / f"tree{len(names)}"
        (tree / "bootc-live").mkdir(parents=True)
        (tree / names[0]).write_bytes(data)
        if len(names) == 2:
            (tree / names[1]).write_bytes(data[:99])
        listing = "\n".join([".", "bootc-live", *names]) + "\n"
        archive = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=tree,
            input=listing.encode(),
            capture_output=True,
            check=True,
        ).stdout
        assert b"".join(payload(io.BytesIO(archive).read, "gnu")) == expected


def header(name: bytes, size: int, mode: int = 0o100644, namesize: int | None = None) -> bytes:
    fields = (
        1,
        mode,
        0,
        0,
        1,
        0,
        size,
        0,
        0,
        0,
        0,
        len(name) + 1 if namesize is None else namesize,
        0,
    )
    head = b"070701" + b"".join(b"%08X" % v for v in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


GOOD = header(MEMBER.encode(), 4) + b"hsqs"
DIRECTORY = header(b"d", 0, mode=0o40755)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOOD[:50], "test: truncated cpio header at byte 0"),
        (GOOD[:115], "test: truncated cpio name at byte 110"),
        (GOOD[:-2], "test: truncated packed root at byte 138"),
        (GOOD, "test: truncated cpio header at byte 140"),  # no trailer
        (
            GOOD + b"0707ZZ" + GOOD[6:],
            "test: not a newc cpio header at byte 140",
        ),
        (
            header(b"x", 0)[:14] + b"+0000001" + header(b"x", 0)[22:],
            "test: not a newc cpio header at byte 0",
        ),
        (header(MEMBER.encode(), 4, namesize=0), "test: a cpio name of 0 bytes at byte 0"),
        (
            header(MEMBER.encode(), 4, namesize=0xFFFFFFFF),
            "test: a cpio name of 4294967295 bytes at byte 0",
        ),
        (
            header(MEMBER.encode() + b"\0x", 4),
            "test: a malformed cpio name at byte 0",
        ),
        (
            header(b"etc/passwd", 4) + b"root",
            "test: unexpected cpio member 'etc/passwd' at byte 0 (expected "
            f"{MEMBER} or its parts in order)",
        ),
        (
            header(f"{MEMBER}.1".encode(), 4) + b"root",
            f"test: unexpected cpio member '{MEMBER}.1' at byte 0 (expected {MEMBER} or its "
            "parts in order)",
        ),
        (
            GOOD + header(MEMBER.encode(), 4),
            f"test: unexpected cpio member '{MEMBER}' at byte 140 (expected {MEMBER} or its "
            "parts in order)",
        ),
        (
            header(MEMBER.encode(), 0, mode=0o120777),
            f"test: unexpected cpio member '{MEMBER}' at byte 0 (expected {MEMBER} or its "
            "parts in order)",
        ),
        (
            header(b"\x1b[2Jevil\n", 0, mode=0o100644),
            "test: unexpected cpio member '\\x1b[2Jevil\\x0a' at byte 0 (expected "
            f"{MEMBER} or its parts in order)",
        ),
        (header(b"TRAILER!!!", 0), f"test: no {MEMBER} in the cpio archive"),
        (
            # Empty parts without end fill no tmpfs: a part short of PART_SIZE is the last.
            b"".join(header(f"{MEMBER}.{i}".encode(), 0) for i in range(10_000)),
            f"test: {MEMBER}.0 holds 0 bytes, not {handover.PART_SIZE}, yet {MEMBER}.1 follows "
            f"it (at byte {len(header(f'{MEMBER}.0'.encode(), 0))}): only the last part is "
            "shorter",
        ),
        (
            header(f"{MEMBER}.0".encode(), 4) + b"hsqs" + header(f"{MEMBER}.1".encode(), 4),
            f"test: {MEMBER}.0 holds 4 bytes, not {handover.PART_SIZE}, yet {MEMBER}.1 follows "
            "it (at byte 140): only the last part is shorter",
        ),
        (
            # Directories without end (a server that never stops sending them) end here.
            DIRECTORY * 10_000,
            f"test: more than {packed.MAX_DIRECTORIES} directories in the cpio archive (at "
            f"byte {packed.MAX_DIRECTORIES * len(DIRECTORY)}): not a packed.img",
        ),
    ],
)
def test_a_hostile_or_truncated_stream_is_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(PackedError) as err:
        b"".join(payload(io.BytesIO(data).read, "test"))
    assert str(err.value) == reason
    assert err.value.hint == packed.PACK_HINT and "\n" not in err.value.line()


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=400))
def test_any_mangled_archive_gives_a_packed_error_or_bytes_never_a_traceback(
    garbage: bytes, cut: int
) -> None:
    data = packed_img([b"hsqs" + bytes(60)])
    mangled = data[:cut] + garbage + data[cut + len(garbage) :]
    try:
        b"".join(payload(io.BytesIO(mangled).read, "test"))
    except PackedError as err:
        assert "\n" not in err.line()


# -- the filesystem --------------------------------------------------------------------------


def make_tree(where: Path) -> Path:
    (where / "etc").mkdir(parents=True)
    (where / "etc/hostname").write_bytes(b"live\n")
    (where / "var/home").mkdir(parents=True)
    (where / "home").symlink_to("var/home")
    return where


def squashfs(tree: Path, out: Path, compressor: str) -> Path:
    subprocess.run(
        ["mksquashfs", tree, out, "-noappend", "-no-progress", "-quiet", "-comp", compressor],
        check=True,
        capture_output=True,
    )
    return out


def erofs(tree: Path, out: Path, compress: str | None) -> Path:
    argv = ["mkfs.erofs", "-T0", *([f"-z{compress}"] if compress else []), out, tree]
    subprocess.run(argv, check=True, capture_output=True)
    return out


@pytest.mark.parametrize("compressor", ["gzip", "xz", "zstd", "lz4"])
def test_squashfs_and_its_compressor_are_read_from_the_superblock(
    tmp_path: Path, compressor: str
) -> None:
    if not shutil.which("mksquashfs"):
        pytest.skip("apt-get install squashfs-tools")
    image = squashfs(make_tree(tmp_path / "tree"), tmp_path / "root.sq", compressor)
    head = image.read_bytes()[: packed.HEAD]
    assert packed.detect(head, "x") == packed.Format("squashfs", compressor)


@pytest.mark.parametrize(
    ("compress", "expected"), [(None, "none"), ("lz4hc", "lz4"), ("lz4", "lz4")]
)
def test_erofs_and_its_compression_are_read_from_the_superblock(
    tmp_path: Path, compress: str | None, expected: str
) -> None:
    if not shutil.which("mkfs.erofs"):
        pytest.skip("apt-get install erofs-utils")
    tree = make_tree(tmp_path / "tree")
    (tree / "big").write_bytes(b"compressible " * 100_000)
    image = erofs(tree, tmp_path / "root.erofs", compress)
    head = image.read_bytes()[: packed.HEAD]
    assert packed.detect(head, "x") == packed.Format("erofs", expected)


def test_erofs_compression_configurations_name_the_algorithms() -> None:
    head = bytearray(packed.HEAD)
    head[1024:1028] = (0xE0F5E1E2).to_bytes(4, "little")
    head[1104:1108] = (0x3).to_bytes(4, "little")  # ZERO_PADDING | COMPR_CFGS
    head[1108:1110] = (0b1010).to_bytes(2, "little")  # lzma, zstd
    assert packed.detect(bytes(head), "x") == packed.Format("erofs", "lzma+zstd")


def test_a_root_no_kernel_can_mount_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    """mksquashfs's lzma (not xz) was never in Linux: refused from the superblock, before the
    whole root is stored, not by mount's generic line after it."""
    image = squashfs(make_tree(tmp_path / "tree"), tmp_path / "root.sq", "lzma")
    with pytest.raises(PackedError) as err:
        packed.detect(image.read_bytes()[: packed.HEAD], "the packed root at X")
    assert err.value.line() == (
        "the packed root at X is squashfs compressed with lzma, which no Linux kernel mounts; "
        "pack it again: bootc-live pack --pack squashfs:zstd (or xz, gzip, lz4, lzo)"
    )
    with pytest.raises(PackedError, match=r"^the packed root at X is empty$"):
        packed.detect(b"", "the packed root at X")
    # One the kernel would mount if it had the option: a failed mount names it.
    assert packed.kernel_hint(packed.Format("erofs", "lzma+zstd")).startswith(
        "a erofs root compressed with lzma+zstd needs a kernel with CONFIG_EROFS_FS and "
        "CONFIG_EROFS_FS_ZIP_LZMA and CONFIG_EROFS_FS_ZIP_ZSTD: boot one"
    )


def test_a_directory_named_as_the_packed_root_is_one_line(tmp_path: Path) -> None:
    """root=bootc-live:packed:/bootc-live (the directory packed.img makes) was a traceback."""
    (tmp_path / "bootc-live").mkdir()
    with pytest.raises(PackedError) as err:
        FileSource(str(tmp_path / "bootc-live"))
    assert err.value.line() == (
        f"{tmp_path / 'bootc-live'} in the initramfs is no file; name the file packed.img "
        "holds: root=bootc-live:packed:/bootc-live/packed.root"
    )


def test_neither_filesystem_is_one_line() -> None:
    with pytest.raises(PackedError) as err:
        packed.detect(b"\x7fELF" + bytes(5000), "the packed root at X")
    assert err.value.line() == (
        "the packed root at X is neither squashfs nor EROFS (it starts with 7f454c4600000000); "
        + packed.PACK_HINT
    )


def test_parts_are_joined_in_place_each_deleted_once_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATH.0, PATH.1, PATH.2 become PATH: the first renamed, the others appended and deleted
    one by one (at most one part more than the whole at any time)."""
    base = tmp_path / "bootc-live/packed.root"
    base.parent.mkdir()
    zstd = (6).to_bytes(2, "little")  # the superblock's compressor, at byte 20
    parts = [b"hsqs" + os.urandom(16) + zstd + os.urandom(2982), os.urandom(3004), os.urandom(17)]
    for i, data in enumerate(parts):
        Path(f"{base}.{i}").write_bytes(data)
    source = FileSource(str(base))
    assert (source.size, source.largest_part, source.in_place) == (6025, 3004, True)
    present: list[list[str]] = []
    real_unlink = os.unlink

    def unlink(path: str) -> None:
        present.append(sorted(p.name for p in base.parent.iterdir()))
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    stored = source.store(str(base))
    whole = b"".join(parts)
    assert stored == packed.Stored(str(base), "sha256:" + hashlib.sha256(whole).hexdigest(), 6025)
    assert base.read_bytes() == whole and sorted(os.listdir(base.parent)) == ["packed.root"]
    assert present == [
        ["packed.root", "packed.root.1", "packed.root.2"],
        ["packed.root", "packed.root.2"],
    ]


def test_a_missing_packed_root_says_what_to_append(tmp_path: Path) -> None:
    with pytest.raises(PackedError) as err:
        FileSource(str(tmp_path / "packed.root"))
    assert err.value.line() == (
        f"no packed root at {tmp_path}/packed.root (nor {tmp_path}/packed.root.0) in the "
        "initramfs; append packed.img from bootc-live build as an extra initrd, or fix root="
    )


@pytest.mark.parametrize("piece", [4095, 1 << 20, (1 << 20) + 3, 3 << 20])
def test_members_larger_than_a_chunk_come_whole_whatever_the_reads(
    piece: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "PART_SIZE", (2 << 20) + 5)
    parts = [os.urandom((2 << 20) + 5), os.urandom((2 << 20) + 5), os.urandom(3)]
    data = packed_img(parts, single=False)
    cuts = list(range(piece, len(data), piece))
    got = list(payload(reader(data, cuts), "test"))  # type: ignore[arg-type]
    assert b"".join(got) == b"".join(parts) and max(map(len, got)) <= packed.CHUNK
