"""bootc.kexec's first stage: the kernel and initramfs found from the top layer down (whiteouts
and opaque directories respected, lower layers left unread), the next command line, and the
split layout it hands over read back as an image source."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import stat
import subprocess
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from bootc_live.runtime import blobs, boot, cmdline, kexec, unpack
from bootc_live.runtime import run as run_module
from bootc_live.runtime.cmdline import parse, split
from bootc_live.runtime.handover import (
    IMAGE_DIR,
    RECORD,
    SplitLayoutSource,
    index_json,
    trust_previous_stage,
    write_record,
    write_split_layout,
)
from bootc_live.runtime.memory import Memory
from bootc_live.runtime.oci import Image, resolve
from bootc_live.runtime.policy import Policy, PolicyError
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.status import Report
from bootc_live.runtime.unpack import unpack_image
from imagegen import build_layout, d, f, hard, layer_tar, opq, sparse, sym, wh
from newc import read_archive

M = "usr/lib/modules"


class Calls(list[list[str]]):
    """The commands run, and what the files a `kexec -l` named held when it ran."""

    loaded: dict[str, bytes]
    shown: list[list[str]]  # the argv each command is traced as with bootc.debug


@pytest.fixture(autouse=True)
def never_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """No test here may mount or kexec on the host: commands are recorded, not run, and
    `kexec -e` ends the call as a real one would end the process."""
    calls = Calls()
    calls.loaded, calls.shown = {}, []

    def fake_run(argv: list[str], shown: list[str] | None = None, **_kw: object) -> None:
        calls.append(list(argv))
        calls.shown.append(list(shown or argv))
        if argv[0] == "kexec" and "-l" in argv:
            for arg in argv[argv.index("-l") + 1 : -1]:  # the kernel, --initrd=PATH
                path = arg.partition("=")[2] if arg.startswith("--initrd=") else arg
                calls.loaded[path] = Path(path).read_bytes()
        if argv[:2] == ["kexec", "-e"]:
            raise SystemExit("kexec -e")

    monkeypatch.setattr(kexec, "run", fake_run)
    monkeypatch.setattr(kexec.mounts, "mount_tmpfs", lambda *_a, **_k: None)
    return calls


def kernel(kver: str, initramfs: bool = True) -> list[object]:
    entries = [d(f"{M}/{kver}"), f(f"{M}/{kver}/vmlinuz", f"kernel {kver}".encode())]
    if initramfs:
        entries.append(f(f"{M}/{kver}/initramfs.img", f"initramfs {kver}".encode()))
    return entries


def image_of(tmp_path: Path, *layers: list[object]) -> Image:
    build_layout(tmp_path / "img", [layer_tar([d("usr"), d("usr/lib"), d(M), *e]) for e in layers])
    return resolve(LayoutSource(str(tmp_path / "img")))


def found(image: Image, tmp_path: Path, wanted: str | None = None) -> tuple[str, bytes, int]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    files = kexec.find_boot_files(image, wanted, str(work))
    assert Path(files.initramfs).read_bytes() == f"initramfs {files.kver}".encode()
    return files.kver, Path(files.kernel).read_bytes(), files.layers_read


PLENTY = Memory(8 << 30, 4 << 30)


def stage_one(
    tmp_path: Path,
    image: Image,
    work: Path,
    argv: tuple[str, ...] = ("root=bootc-live:/x", "bootc.kexec"),
    memory: Memory = PLENTY,
    report: Report | None = None,
) -> None:
    """kexec_boot with the running command line `argv`."""
    (tmp_path / "cmdline").write_text(" ".join(argv) + "\n")
    report = report or Report(directory=str(tmp_path / "status"))
    kexec.kexec_boot(parse(list(argv)), image, memory, report, str(work), str(tmp_path / "cmdline"))


class Unreadable:
    """A source whose listed blobs must not be read (the lower layers)."""

    def __init__(self, inner: LayoutSource, forbidden: set[str]) -> None:
        self.inner, self.forbidden, self.description = inner, forbidden, inner.description

    def index_json(self) -> bytes:
        return self.inner.index_json()

    def open_blob(self, desc):  # type: ignore[no-untyped-def]
        assert desc.digest not in self.forbidden, "a lower layer was read"
        return self.inner.open_blob(desc)


def test_the_highest_version_in_any_layer_unless_one_is_named(tmp_path: Path) -> None:
    """SPEC §7, several kernels: the highest version, wherever its layer lies (an older LTS
    kernel added on top of a newer one, say), so every layer is read, as `build` and `inspect`
    read them. bootc.kexec.kver= names one: reading stops at the layer that settles it."""
    image = image_of(
        tmp_path, kernel("6.8.9"), [f("bin", b"x")], kernel("6.1.0-9"), kernel("6.1.0-10")
    )
    assert found(image, tmp_path) == ("6.8.9", b"kernel 6.8.9", 4)
    assert len(list((tmp_path / "work").iterdir())) == 2  # the other kernels' files are freed
    lower = {image.layers[0].digest, image.layers[1].digest}
    guarded = replace(image, source=Unreadable(image.source, lower))
    assert found(guarded, tmp_path, "6.1.0-10") == ("6.1.0-10", b"kernel 6.1.0-10", 1)
    assert found(guarded, tmp_path, "6.1.0-9") == ("6.1.0-9", b"kernel 6.1.0-9", 2)


def test_a_higher_kernel_without_its_initramfs_is_said_to_be_passed_over(tmp_path: Path) -> None:
    """The highest kernel with both files boots (docs/live-ready.md); one higher that lacks its
    initramfs.img is named on the console, not passed over without a word. Named by
    bootc.kexec.kver=, the kernel is the one asked for: nothing is passed over."""
    image = image_of(tmp_path, kernel("6.1.0-9"), kernel("6.9.0", initramfs=False))
    work = tmp_path / "work"
    work.mkdir()
    files = kexec.find_boot_files(image, None, str(work))
    assert (files.kver, files.passed_over) == ("6.1.0-9", ("6.9.0",))
    assert files.note() == (
        " (6.9.0 passed over: no vmlinuz and initramfs.img both; bootc.kexec.kver= names the "
        "one to boot)"
    )
    named = kexec.find_boot_files(image, "6.1.0-9", str(work))
    assert (named.passed_over, named.note()) == ((), "")
    complete = image_of(tmp_path / "b", kernel("6.1.0-9"), kernel("6.9.0"))
    assert kexec.find_boot_files(complete, None, str(work)).passed_over == ()


def test_whiteouts_and_opaque_directories_hide_lower_kernels(tmp_path: Path) -> None:
    image = image_of(
        tmp_path,
        kernel("6.1.0-10"),
        kernel("6.1.0-9"),
        [wh(f"{M}/6.1.0-10"), f("etc", b"")],
    )
    assert found(image, tmp_path)[:2] == ("6.1.0-9", b"kernel 6.1.0-9")
    hidden = image_of(tmp_path / "b", kernel("6.1.0-10"), [opq(M), *kernel("5.10.0-1")])
    assert found(hidden, tmp_path)[:2] == ("5.10.0-1", b"kernel 5.10.0-1")
    # The root made opaque hides every lower layer too (umoci and our unpack agree).
    root = image_of(tmp_path / "c", kernel("6.9.0"), [opq("."), *kernel("6.1.0")])
    assert found(root, tmp_path)[:2] == ("6.1.0", b"kernel 6.1.0")


def test_a_link_over_a_kernels_directory_hides_the_lower_kernel(tmp_path: Path) -> None:
    """An upper layer that makes usr/lib/modules/6.9.0 a link leaves no 6.9.0/vmlinuz of the
    lower layer in the merged tree (an unpacker replaces the directory)."""
    image = image_of(
        tmp_path,
        [*kernel("6.9.0"), *kernel("6.1.0")],
        [sym(f"{M}/6.9.0", "6.1.0")],
    )
    assert found(image, tmp_path)[:2] == ("6.1.0", b"kernel 6.1.0")


def test_an_upper_file_replaces_a_lower_one(tmp_path: Path) -> None:
    new = [
        f(f"{M}/6.1.0-1/vmlinuz", b"kernel 6.1.0-1"),
        f(f"{M}/6.1.0-1/initramfs.img", b"initramfs 6.1.0-1"),
    ]
    old = [
        d(f"{M}/6.1.0-1"),
        f(f"{M}/6.1.0-1/vmlinuz", b"old"),
        f(f"{M}/6.1.0-1/initramfs.img", b"old"),
    ]
    assert found(image_of(tmp_path, old, new), tmp_path) == ("6.1.0-1", b"kernel 6.1.0-1", 2)
    # Within one layer the last entry at a path is the file, as in the unpacked tree.
    twice = [*old[1:], *new]
    assert found(image_of(tmp_path / "b", twice), tmp_path)[:2] == ("6.1.0-1", b"kernel 6.1.0-1")


def test_the_modules_place_wins_over_boot_in_any_order(tmp_path: Path) -> None:
    """One KVER with boot/vmlinuz-KVER and usr/lib/modules/KVER/vmlinuz: the latter, as
    `build` takes it from the tree, whichever the layer lists first."""
    layer = [d("boot"), f("boot/vmlinuz-6.1.0-1", b"boot copy"), *kernel("6.1.0-1")]
    assert found(image_of(tmp_path, layer), tmp_path)[:2] == ("6.1.0-1", b"kernel 6.1.0-1")


# A layer of kernel 6.14.0's places, hard links to its objects sysroot/{k,i}.file below.
OSTREE_LINKS = [
    d(f"{M}/6.14.0"),
    hard(f"{M}/6.14.0/vmlinuz", "sysroot/k.file"),
    hard(f"{M}/6.14.0/initramfs.img", "sysroot/i.file"),
]


def test_kernels_hard_linked_as_ostree_stores_them(tmp_path: Path) -> None:
    """Fedora's and CentOS's bootc images (ostree-ext) store each file once under
    sysroot/ostree/repo/objects and hard-link every place to it: the link comes after its
    target in the layer, or the target lies in a lower layer. GNU tar writes the same when
    files share an inode (the first name is the file, the others links)."""
    tree = tmp_path / "tree"
    objects = tree / "sysroot/ostree/repo/objects/ab"
    objects.mkdir(parents=True)
    (tree / M / "6.14.0").mkdir(parents=True)
    (objects / "cd.file").write_bytes(b"kernel 6.14.0")
    (objects / "ef.file").write_bytes(b"initramfs 6.14.0")
    (tree / M / "6.14.0/vmlinuz").hardlink_to(objects / "cd.file")
    (tree / M / "6.14.0/initramfs.img").hardlink_to(objects / "ef.file")
    tar = subprocess.run(
        ["tar", "-C", str(tree), "--sort=name", "--format=pax", "-cf", "-", "."],
        check=True,
        capture_output=True,
    ).stdout
    assert b"usr/lib/modules/6.14.0/vmlinuz" in tar
    build_layout(tmp_path / "gnu", [tar])
    gnu = resolve(LayoutSource(str(tmp_path / "gnu")))
    assert found(gnu, tmp_path) == ("6.14.0", b"kernel 6.14.0", 1)
    # The objects in a lower layer, the links in an upper one.
    objects_layer = [
        d("sysroot"),
        f("sysroot/k.file", b"kernel 6.14.0"),
        f("sysroot/i.file", b"initramfs 6.14.0"),
    ]
    image = image_of(tmp_path / "b", objects_layer, OSTREE_LINKS)
    assert found(image, tmp_path) == ("6.14.0", b"kernel 6.14.0", 2)


def test_a_sparse_kernel_is_extracted_with_its_holes(tmp_path: Path) -> None:
    head, tail = b"MZ".ljust(512, b"h"), b"t" * 512
    segments = [(0, head), (8192, tail)]
    layer = [
        d(f"{M}/6.1.0-1"),
        sparse(f"{M}/6.1.0-1/vmlinuz", 12288, segments),
        f(f"{M}/6.1.0-1/initramfs.img", b"initramfs 6.1.0-1"),
    ]
    for fmt in ("pax", "gnu"):
        build_layout(tmp_path / fmt, [layer_tar([d("usr"), d("usr/lib"), d(M), *layer], fmt=fmt)])
        image = resolve(LayoutSource(str(tmp_path / fmt)))
        kernel_bytes = found(image, tmp_path)[1]
        assert kernel_bytes == head + bytes(8192 - 512) + tail + bytes(12288 - 8704), fmt


@pytest.mark.parametrize(
    ("layers", "wanted", "message"),
    [
        ([[f("etc", b"")]], None, "the image has no kernel (no usr/lib/modules/KVER/vmlinuz)"),
        ([kernel("6.1.0-1", initramfs=False)], None, "no usr/lib/modules/6.1.0-1/initramfs.img"),
        (
            [kernel("6.1.0-1")],
            "6.2",
            "bootc.kexec.kver=6.2: the image has no kernel 6.2 (kernels: 6.1.0-1)",
        ),
        (
            [
                [
                    d(f"{M}/6.1.0-1"),
                    sym(f"{M}/6.1.0-1/vmlinuz", "/boot/x"),
                    f(f"{M}/6.1.0-1/initramfs.img", b"i"),
                ]
            ],
            None,
            "the image's usr/lib/modules/6.1.0-1/vmlinuz is a symbolic link (to /boot/x), "
            "which bootc.kexec does not follow; put the vmlinuz itself there",
        ),
        (  # the initramfs is there: a kernel hard-linked to nothing was taken for one without it
            [
                [
                    d(f"{M}/6.1.0-1"),
                    hard(f"{M}/6.1.0-1/vmlinuz", "sysroot/gone"),
                    f(f"{M}/6.1.0-1/initramfs.img", b"i"),
                ]
            ],
            None,
            "the image's usr/lib/modules/6.1.0-1/vmlinuz is a hard link to sysroot/gone, which "
            "no layer holds as a regular file",
        ),
        (
            [[*kernel("6.1.0-1", initramfs=False), sym(f"{M}/6.1.0-1/initramfs.img", "i.img")]],
            "6.1.0-1",
            "usr/lib/modules/6.1.0-1/initramfs.img is a symbolic link (to i.img)",
        ),
    ],
)
def test_what_is_missing_is_named(
    tmp_path: Path, layers: list[list[object]], wanted: str | None, message: str
) -> None:
    with pytest.raises(kexec.KexecError) as err:
        kexec.find_boot_files(image_of(tmp_path, *layers), wanted, str(tmp_path))
    assert message in err.value.line()


def test_the_next_command_line_drops_the_kexec_switch() -> None:
    current = (
        "console=ttyS0 root=bootc-live:http://10.0.2.100/root.oci bootc.kexec bootc.kexec.kver=6 "
        "bootclabel=x rd.shell=0 'quoted arg'\n"
    )
    assert kexec.next_command_line(current, reuse=False, label="h") == (
        "console=ttyS0 root=bootc-live:http://10.0.2.100/root.oci bootclabel=x rd.shell=0 "
        "'quoted arg' bootc.kexec=0"
    )
    assert kexec.next_command_line(current, reuse=True, label="h") == (
        "console=ttyS0 rd.shell=0 'quoted arg' root=bootc-live:/bootc-live/image bootclabel=h "
        "bootc.kexec=0"
    )


def test_options_after_a_double_dash_are_dropped_there_too() -> None:
    """/proc/cmdline keeps what follows `--` (init's arguments), and the next stage parses the
    whole line, the last occurrence winning: a `bootc.kexec` or `root=` kept there would undo
    bootc.kexec=0 (a kexec without end) or the handed-over root=."""
    current = "console=ttyS0 -- single bootc.kexec=1 root=bootc-live:/elsewhere bootc.kexec.kver=6"
    for reuse in (False, True):
        line = kexec.next_command_line(current, reuse=reuse, label="h", verified="sha256:v")
        assert line.endswith(
            "bootc.kexec=0 -- single" if reuse else "-- single root=bootc-live:/elsewhere"
        )
        spec = parse(split(line.replace("sha256:v", "sha256:" + "1" * 64)))
        assert not spec.kexec
    handed = kexec.next_command_line(current, reuse=True, label="h")
    assert parse(split(handed)).image == parse(["root=bootc-live:/bootc-live/image"]).image


def test_an_argument_with_spaces_reaches_the_next_kernel_whole() -> None:
    """The kernel knows double quotes only: shell quotes would split it into two words."""
    current = '"systemd.setenv=GREETING=hello world" x="a\tb c" bootc.kexec console=ttyS0\n'
    line = kexec.next_command_line(current, reuse=False, label="h")
    assert line == '"systemd.setenv=GREETING=hello world" "x=a\tb c" console=ttyS0 bootc.kexec=0'
    assert split(line) == [
        "systemd.setenv=GREETING=hello world",
        "x=a\tb c",
        "console=ttyS0",
        "bootc.kexec=0",
    ]
    assert kexec.printable_command_line(line) == line
    # Its space between quotes of its own: quotes around the whole split it at that space.
    current = 'systemd.setenv=GREETING="hello world" bootc.kexec rootflags=context="a b",ro'
    line = kexec.next_command_line(current, reuse=False, label="h")
    assert split(line) == [
        'systemd.setenv=GREETING="hello world"',
        'rootflags=context="a b",ro',
        "bootc.kexec=0",
    ]


@pytest.mark.parametrize(
    ("current", "arg"),
    [
        (
            'systemd.setenv=MSG="hello world" bootc.kexec console=ttyS0',
            'systemd.setenv=MSG="hello world"',
        ),
        ('"a"b bootc.kexec console=ttyS0', 'a"b'),
    ],
)
def test_an_argument_with_a_quote_inside_reaches_the_next_kernel_as_it_was(
    current: str, arg: str
) -> None:
    """Put in quotes, `x=MSG="a b"` was cut at its space (its own quote closed the one put
    before it); written as it was read, `a"b` (from `"a"b`) opened a quote over the rest of
    the line, bootc.kexec=0 and all."""
    line = kexec.next_command_line(current, reuse=False, label="h")
    assert split(line) == [arg, "console=ttyS0", "bootc.kexec=0"], line


def test_an_argument_whose_quote_was_left_open_stops_the_kexec() -> None:
    with pytest.raises(kexec.KexecError) as err:
        kexec.next_command_line('bootc.kexec x=a"b=c"d"', reuse=False, label="h")
    assert err.value.line() == (
        "bootc.kexec: the argument x has a quote that no spelling closes, so the next kernel "
        "would not read it as this one did; close its quote on the kernel command line, or "
        "boot without bootc.kexec"
    )


def test_options_after_the_init_arguments_mark_are_replaced_too() -> None:
    """The kernel passes what follows `--` to init, but dracut's getarg and the runtime read
    the whole command line: a bootc.kexec or root= there, kept, was the last word in stage
    two, which kexecs again without end, or fetched the image again."""
    current = "root=bootc-live:/x bootc.kexec -- single bootc.kexec root=bootc-live:/y"
    line = kexec.next_command_line(current, reuse=True, label="h")
    assert line == ("root=bootc-live:/bootc-live/image bootclabel=h bootc.kexec=0 -- single")
    spec = parse(split(line))
    assert (spec.kexec, str(spec.image)) == (False, "bootc-live:/bootc-live/image")


def test_the_printed_command_line_shows_no_url_s_credentials() -> None:
    line = (
        "root=bootc-live:https://me:S3CRET@h/os.oci?sig=S3CRET proxy=http://u:S3CRET@p:3128 "
        '"x=a b" root2=bootc-live:docker://q.io/os:v1 rd.x=ftp://h/x proxy2=u:S3CRET@p:3128 '
        "list=ftp://u:S3CRET@f/a,http://u2:S3CRET@g/ netroot=iscsi:user:S3CRET@10.0.0.1::3260::t "
        f"d=docker://q.io/os@sha256:{'a' * 64}"
    )
    assert kexec.printable_command_line(line) == (
        "root=bootc-live:https://***@h/os.oci?… proxy=http://***@p:3128 "
        '"x=a b" root2=bootc-live:docker://q.io/os:v1 rd.x=ftp://h/x proxy2=***@p:3128 '
        "list=ftp://***@f/a,http://***@g/ netroot=***@10.0.0.1::3260::t "
        f"d=docker://q.io/os@sha256:{'a' * 64}"
    )


def test_the_next_command_line_pins_the_image_stage_one_checked() -> None:
    """A tag may name another image by the time stage two fetches it: stage two is pinned to
    what stage one checked, whatever bootc.digest= said (an index's digest, say)."""
    current = "root=bootc-live:docker://registry.example/app:v1 bootc.digest=sha256:11 bootc.kexec"
    fetched = kexec.next_command_line(current, reuse=False, label="h", pin="sha256:22")
    assert fetched == (
        "root=bootc-live:docker://registry.example/app:v1 bootc.digest=sha256:22 bootc.kexec=0"
    )
    handed = kexec.next_command_line(
        current, reuse=True, label="h", verified="sha256:v", pin="sha256:33"
    )
    assert handed == (
        "root=bootc-live:/bootc-live/image bootclabel=h bootc.digest=sha256:33 "
        "bootc.kexec.verified=sha256:v bootc.kexec=0"
    )


def test_the_handover_is_a_source_of_the_same_image(tmp_path: Path) -> None:
    image = image_of(tmp_path, kernel("6.1.0-1"), [f("etc", b"hello")])
    buf = io.BytesIO()
    index = index_json(image, "h", None)
    extents = write_split_layout(image, index, buf)
    (tmp_path / "handover").write_bytes(buf.getvalue())
    source = SplitLayoutSource(str(tmp_path / "handover"), index, extents)
    again = resolve(source, label="h")
    assert again.manifest_digest == image.manifest_digest
    (tmp_path / "root").mkdir()
    unpack_image(again, str(tmp_path / "root"))
    assert (tmp_path / "root/etc").read_bytes() == b"hello"


def test_stage_one_reads_the_layers_back_from_the_handover_it_wrote(
    tmp_path: Path, never_on_this_machine: Calls
) -> None:
    """kexec_boot up to `kexec -e`: the layer search runs on the handover file as written
    (small blobs included, which a buffered writer would still hold), and the next initrd is
    the image's initramfs with the handover appended, a cpio archive at a 4-byte boundary.
    Once loaded, the files are deleted: the kernel holds its own copy."""
    image = image_of(tmp_path, [f("etc", b"x")], kernel("6.1.0-1"))
    calls = never_on_this_machine
    work = tmp_path / "work"
    report = Report(directory=str(tmp_path / "status"))
    argv = ("console=ttyS0", "root=bootc-live:/x", "bootc.kexec")
    with pytest.raises(SystemExit, match="kexec -e"):
        stage_one(tmp_path, image, work, argv, report=report)
    load = calls[0]
    # The status says what stage one found and loaded (its two states, in status.json too).
    status = json.loads((tmp_path / "status/status.json").read_text())
    assert status == report.status and status["state"] == "kexec-loaded"
    assert (status["kexec_kver"], status["kexec_layers_read"]) == ("6.1.0-1", 2)
    assert status["kexec_handover_bytes"] > image.compressed_size
    assert status["kexec_loader"] == "kexec_file_load"
    assert status["kexec_cmdline"] == load[5].partition("=")[2]
    assert status["kexec_next_initrd_bytes"] == len(never_on_this_machine.loaded[load[4][9:]])
    loaded = never_on_this_machine.loaded
    assert load[:3] == ["kexec", "-s", "-l"] and loaded[load[3]] == b"kernel 6.1.0-1"
    assert load[4] == f"--initrd={work / 'initrd'}"
    assert load[5].startswith(
        "--command-line=console=ttyS0 root=bootc-live:/bootc-live/image bootclabel=handover "
        f"bootc.digest={image.manifest_digest} bootc.kexec.verified=sha256:"
    )
    initrd = loaded[str(work / "initrd")]
    first = b"initramfs 6.1.0-1"  # 17 bytes: then 4 zero bytes, and 3 more to a 4-byte boundary
    assert initrd.startswith(first + b"\0" * 7 + b"070701")
    assert sorted(loaded) == sorted([load[3], str(work / "initrd")])
    assert list(work.iterdir()) == []


def test_without_reuse_the_initrd_is_the_images_initramfs(
    tmp_path: Path, never_on_this_machine: Calls
) -> None:
    image = image_of(tmp_path, kernel("6.1.0-1"))
    argv = ("root=bootc-live:http://h/r.oci", "bootc.kexec", "bootc.kexec.reuse-image=0")
    with pytest.raises(SystemExit, match="kexec -e"):
        stage_one(tmp_path, image, tmp_path / "work", argv)
    initrd = never_on_this_machine[0][4].partition("=")[2]
    assert never_on_this_machine.loaded[initrd] == b"initramfs 6.1.0-1"
    assert never_on_this_machine[0][5] == (
        f"--command-line=root=bootc-live:http://h/r.oci bootc.digest={image.top.digest} "
        "bootc.kexec=0"
    )


def test_a_password_in_root_goes_to_the_next_stage_and_nowhere_else(
    tmp_path: Path,
    never_on_this_machine: Calls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without reuse the next stage fetches the image itself: it needs root= as given, secret
    and all; the status, the console and the bootc.debug trace show it without the secret."""
    image = image_of(tmp_path, kernel("6.1.0-1"))
    root = "root=bootc-live:https://me:s3cret@h/r.oci?sig=t0ken"
    argv = (root, "bootc.kexec", "bootc.kexec.reuse-image=0")
    monkeypatch.setattr(run_module, "DEBUG", True)
    report = Report(directory=str(tmp_path / "status"))
    with pytest.raises(SystemExit, match="kexec -e"):
        stage_one(tmp_path, image, tmp_path / "work", argv, report=report)
    pin = f"bootc.digest={image.top.digest} bootc.kexec=0"
    assert never_on_this_machine[0][5] == f"--command-line={root} {pin}"
    assert report.status["kexec_cmdline"] == f"root=bootc-live:https://***@h/r.oci?… {pin}"
    assert never_on_this_machine.shown[0][-1] == (
        f"--command-line=root=bootc-live:https://***@h/r.oci?… {pin}"
    )
    run_module.run(["true", "s3cret"], shown=["true", "shown"])  # how run() traces `shown`
    said = capsys.readouterr().err + (tmp_path / "status/status.json").read_text()
    assert "s3cret" not in said and "t0ken" not in said
    assert "+ true shown" in said


def extract_initrd(data: bytes, offset: int, dest: Path) -> None:
    """What the kernel does with the rest of an initrd from `offset`: newc cpio archives one
    after the other, zero padding between them, unpacked into `dest`."""
    pos = offset
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        members, pos = read_archive(data, pos)
        for m in members:
            if stat.S_ISDIR(m.mode):
                (dest / m.name).mkdir(parents=True, exist_ok=True)
            else:
                (dest / m.name).write_bytes(data[m.offset : m.offset + m.size])


@pytest.mark.parametrize("record", ["kept", "lost", "forged", "other image"])
def test_each_digest_is_computed_once_across_both_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    """SPEC §7: the handed-over image is neither downloaded nor verified twice. Stage one
    verifies every blob as it writes the handover and the diff_ids of the layers it reads; the
    next stage, finding the record the command line names beside the handover, computes only
    what is left. Without the record, with a changed one, or with one for another image, it
    verifies everything itself."""
    image = image_of(tmp_path, [f("etc", b"x")], [f("bin", b"y")], kernel("6.1.0-1"))
    hashed: Counter[str] = Counter()

    def counting(digest: str) -> object:
        hashed[digest] += 1
        return hashlib.new(digest.partition(":")[0])

    monkeypatch.setattr(blobs, "new_hash", counting)
    monkeypatch.setattr(unpack, "new_hash", counting)
    work = tmp_path / "work"
    calls: list[list[str]] = []
    initrd = tmp_path / "initrd"

    def loads(argv: list[str], **_kw: object) -> None:
        calls.append(argv)
        if argv[1] == "-s":  # what the next kernel gets; stage one deletes it after loading
            shutil.copy(argv[4].partition("=")[2], initrd)

    monkeypatch.setattr(kexec, "run", loads)
    with pytest.raises(kexec.KexecError, match="kexec -e returned"):
        stage_one(
            tmp_path, image, work, ("root=bootc-live:/x", "bootc.kexec", "bootc.kexec.kver=6.1.0-1")
        )
    next_spec = parse(calls[0][5].partition("=")[2].split())
    assert next_spec.kexec_verified and not next_spec.kexec
    stage_two = tmp_path / "stage-two"
    stage_two.mkdir()
    extract_initrd(initrd.read_bytes(), len(b"initramfs 6.1.0-1"), stage_two)
    saved = stage_two / RECORD
    if record == "lost":
        saved.unlink()
    elif record == "forged":  # vouches for nothing more, but is not the record stage one wrote
        saved.write_text(saved.read_text() + " ")
    elif record == "other image":
        saved.write_text(saved.read_text().replace(image.manifest_digest, "sha256:" + "0" * 64))
    layout = str(stage_two / IMAGE_DIR)
    handed = resolve(LayoutSource(layout, consume=True), label="handover")
    said: list[str] = []
    handed = trust_previous_stage(
        handed, layout, next_spec.kexec_verified, said.append, root=str(stage_two)
    )
    (tmp_path / "root").mkdir()
    unpack_image(handed, str(tmp_path / "root"))
    assert (tmp_path / "root/bin").read_bytes() == b"y"
    layer_digests = [*(desc.digest for desc in image.layers), *image.diff_ids]
    # Stage one read only the top layer (its kernel named): its diff_id, and every blob, are
    # checked there.
    once = [1] * len(layer_digests)
    twice = [2, 2, 2, 1, 1, 2]
    assert [hashed[d] for d in layer_digests] == (once if record == "kept" else twice)
    assert said == [
        "kexec handover: 3 layer digests and 1 diff_ids were verified by the previous stage, "
        "not computed again"
        if record == "kept"
        else f"bootc.kexec.verified={next_spec.kexec_verified} matches no record of this image: "
        "verifying all"
    ]


def test_a_record_counts_only_beside_the_handover_with_its_digest(tmp_path: Path) -> None:
    """A record in an initrd someone else made (a rootfs.img changed in transfer, say) is
    ignored: it counts only for root=bootc-live:/bootc-live/image and with the digest stage
    one put on the command line."""
    image = image_of(tmp_path, [f("etc", b"x")], kernel("6.1.0-1"))
    (tmp_path / "bootc-live").mkdir()  # made by the handover's archive, before the record's
    with open(tmp_path / "record.cpio", "wb") as out:
        digest = write_record(image, 1, out)
    extract_initrd((tmp_path / "record.cpio").read_bytes(), 0, tmp_path)
    here, root = str(tmp_path / IMAGE_DIR), str(tmp_path)
    trusted = trust_previous_stage(image, here, digest, print, root)
    assert (trusted.verified_blobs, trusted.verified_diff_ids) == ({0, 1}, {1})
    nothing = "sha256:" + hashlib.sha256(b"").hexdigest()  # no record at all has this digest
    for layout, expected in (
        (here, "sha256:" + "1" * 64),
        (str(tmp_path / "other"), digest),
        (str(tmp_path / "other"), nothing),
    ):
        ignored = trust_previous_stage(image, layout, expected, print, root)
        assert (ignored.verified_blobs, ignored.verified_diff_ids) == (set(), set())


def test_a_failed_load_names_the_kernel_and_what_kexec_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(argv: list[str], **_kw: object) -> None:
        raise CommandError(f"{argv[0]} failed", "", "Cannot determine the file type of x")

    monkeypatch.setattr(kexec, "run", refuse)
    image = image_of(tmp_path, kernel("6.1.0-1"))
    with pytest.raises(kexec.KexecError) as err:
        stage_one(tmp_path, image, tmp_path / "w")
    assert err.value.line().startswith(
        "bootc.kexec: kexec could not load kernel 6.1.0-1 from the image: Cannot determine the "
        "file type of x; check that the image's vmlinuz is a kernel for this machine"
    )


@pytest.mark.parametrize(
    ("root", "hint"),
    [
        (
            "root=bootc-live:http://h/r.oci",
            "or boot with bootc.kexec.reuse-image=0 (the next stage fetches the image itself)",
        ),
        # The image in the initramfs cannot be fetched again: reuse-image=0 is no way out.
        ("root=bootc-live:/x", "add RAM (an image in the initramfs is always handed over)"),
    ],
)
def test_stage_one_checks_memory_before_the_handover(
    tmp_path: Path, never_on_this_machine: Calls, root: str, hint: str
) -> None:
    image = image_of(tmp_path, kernel("6.1.0-1"))
    small = Memory(total=256 << 20, available=150 << 20)
    with pytest.raises(kexec.memory.NotEnoughMemory) as err:
        stage_one(tmp_path, image, tmp_path / "w", (root, "bootc.kexec"), memory=small)
    assert never_on_this_machine == []
    assert err.value.line().startswith("not enough memory for kexec: the handover needs about ")
    assert err.value.line().endswith(hint)
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("spare_mib", "file_load", "outcome"),
    [
        (-1, True, "loading kernel 6.1.0-1 (kexec holds two more copies"),
        (1, True, "kexec -s -l"),
        (1, False, "kexec -l"),
    ],
)
def test_the_exact_check_counts_the_loaders_copies_before_it_loads_anything(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spare_mib: int,
    file_load: bool,
    outcome: str,
) -> None:
    """Once the kernel is known, what is loaded (kernel, initramfs, handover: 8 MiB of random
    kernel makes them about 16 MiB) must fit twice more, plus the slack, whichever loader
    (kexec_file_load, or kexec_load when the kernel refuses it); 1 MiB either side of that
    decides (a formula counting a copy too few or too many gets one of them wrong)."""
    vmlinuz = random.Random(7).randbytes(8 << 20)
    image = image_of(
        tmp_path,
        [d(f"{M}/6.1.0-1"), f(f"{M}/6.1.0-1/vmlinuz", vmlinuz), f(f"{M}/6.1.0-1/initramfs.img")],
    )
    work = tmp_path / "work"
    sizes: list[int] = []
    loads: list[str] = []

    def meminfo(cls: object) -> Memory:
        loaded = sum(p.stat().st_size for p in work.iterdir())  # handover, kernel, initramfs
        sizes.append(loaded)
        spare = 2 * loaded + kexec.SLACK + kexec.memory.RESERVE + spare_mib * (1 << 20)
        return Memory(8 << 30, spare)

    def fake_run(argv: list[str], **_kw: object) -> None:
        if argv[1] == "-e":
            raise SystemExit("kexec -e")
        if argv[1] == "-s" and not file_load:
            raise CommandError(
                "kexec failed", "", "kexec_file_load failed: Operation not permitted"
            )
        loads.append(" ".join(argv[:3] if argv[1] == "-s" else argv[:2]))

    monkeypatch.setattr(kexec.memory.Memory, "read", classmethod(meminfo))
    monkeypatch.setattr(kexec.memory, "PeakWatch", NoWatch)  # reads only through the checks
    monkeypatch.setattr(kexec, "run", fake_run)
    if outcome.startswith("kexec"):
        with pytest.raises(SystemExit, match="kexec -e"):
            stage_one(tmp_path, image, work)
        assert loads == [outcome]
    else:
        with pytest.raises(kexec.memory.NotEnoughMemory) as err:
            stage_one(tmp_path, image, work)
        assert outcome in err.value.line() and loads == []
    assert sizes[0] > 16 << 20


class NoWatch:
    peak = start = 0

    def __init__(self, **_kw: object) -> None:
        pass

    def __enter__(self) -> NoWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


def test_an_initramfs_without_kexec_stops_before_the_handover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kexec.shutil, "which", lambda _name: None)
    image = image_of(tmp_path, kernel("6.1.0-1"))
    with pytest.raises(kexec.KexecError) as err:
        stage_one(tmp_path, image, tmp_path / "w")
    assert err.value.line() == (
        "bootc.kexec: this initramfs has no kexec (kexec-tools); build it with kexec-tools "
        "installed (the bootc-live-kexec module), or boot without bootc.kexec"
    )
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("checked", [True, False])
def test_the_record_hands_the_signature_verdict_to_the_next_stage(
    tmp_path: Path, checked: bool
) -> None:
    """Stage one checked the policy before kexec; stage two, given the handover it vouches
    for, says that verdict rather than checking again without the signatures (the handover
    carries none). A stage one that checked nothing vouches for nothing: its policy applies."""
    verdict = {"checked": True, "accepted": True, "scope": "default", "keys": ["GPG key K (k)"]}
    said = {"checked": False}
    image = replace(
        image_of(tmp_path, [f("etc", b"x")], kernel("6.1.0-1")),
        signatures=verdict if checked else said,
    )
    (tmp_path / "bootc-live").mkdir()
    with open(tmp_path / "record.cpio", "wb") as out:
        digest = write_record(image, 1, out)
    extract_initrd((tmp_path / "record.cpio").read_bytes(), 0, tmp_path)
    handed = trust_previous_stage(
        replace(image, signatures={}), str(tmp_path / IMAGE_DIR), digest, print, str(tmp_path)
    )
    assert handed.signatures == (verdict if checked else said)
    rejecting = Policy.parse(b'{"default": [{"type": "reject"}]}', "policy.json")
    stream = io.StringIO()
    spec = parse([f"root=bootc-live:/{IMAGE_DIR}", f"bootc.kexec.verified={digest}"])
    if not checked:
        with pytest.raises(PolicyError, match=r"rejected by policy scope default"):
            boot.check_signatures(
                spec, handed.source, handed, rejecting, None, Report(stream=stream)
            )
        return
    trusted = boot.check_signatures(
        spec, handed.source, handed, rejecting, None, Report(stream=stream)
    )
    assert trusted.signatures == {**verdict, "handover": True}
    assert stream.getvalue() == (
        "bootc-live: signatures: verified by GPG key K (k) (policy scope default), by the "
        "previous stage (kexec handover)\n"
    )


@pytest.mark.parametrize("checked", [True, False])
def test_stage_ones_policy_file_is_not_needed_by_the_stage_it_vouched_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    """bootc.policy=PATH goes on to stage two's command line, whose initramfs (the image's own)
    lacks PATH: with the record's verdict the policy is not loaded at all; without one, it is,
    and its absence stops the boot as anywhere."""
    verdict = {"checked": True, "accepted": True, "scope": "default", "keys": ["GPG key K (k)"]}
    image = replace(
        image_of(tmp_path, [f("etc", b"x")], kernel("6.1.0-1")),
        signatures=verdict if checked else {"checked": False},
    )
    (tmp_path / "bootc-live").mkdir()
    with open(tmp_path / "record.cpio", "wb") as out:
        digest = write_record(image, 1, out)
    extract_initrd((tmp_path / "record.cpio").read_bytes(), 0, tmp_path)
    monkeypatch.setattr(
        boot.handover, "trust_previous_stage", partial(trust_previous_stage, root=str(tmp_path))
    )
    spec = parse(
        [
            f"root=bootc-live:{tmp_path / IMAGE_DIR}",
            f"bootc.kexec.verified={digest}",
            "bootc.policy=/etc/bootc-live/strict.json",
        ]
    )
    stream = io.StringIO()
    if not checked:
        with pytest.raises(PolicyError, match=r"strict\.json"):
            boot.resolve_and_trust(spec, image.source, Report(stream=stream))
        return
    trusted = boot.resolve_and_trust(spec, image.source, Report(stream=stream))
    assert trusted.signatures == {**verdict, "handover": True}
    assert "by the previous stage (kexec handover)" in stream.getvalue()


def test_options_from_cmdline_d_reach_the_next_stage_which_kexecs_no_more(
    tmp_path: Path, never_on_this_machine: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §2: options come from the initramfs's /etc/cmdline.d too. The next stage boots
    the image's initramfs, which has not got them (root= was lost with reuse-image=0, and
    bootc.zram): they go on its command line, before a `--` (whatever follows is init's). Were
    it this very initramfs, its cmdline.d would ask for bootc.kexec again, without end: the
    next command line says bootc.kexec=0."""
    conf = tmp_path / "cmdline.d"
    conf.mkdir()
    (conf / "10-bootc.conf").write_text(
        "root=bootc-live:http://h/r.oci bootc.kexec bootc.zram=50%\n# a comment\n"
    )
    # What bootc-live-net's hook wrote at this boot: its own, not the user's (stage two's
    # root is fetched, so its hook writes it again; handed over, it needs no network).
    (conf / "90-bootc-live-net.conf").write_text("rd.neednet=1\nip=dhcp\n")
    monkeypatch.setattr(cmdline, "CONF_DIR", str(conf))
    (tmp_path / "cmdline").write_text("console=ttyS0 bootc.kexec.reuse-image=0 -- single\n")
    spec = cmdline.read(str(tmp_path / "cmdline"))
    image = image_of(tmp_path, kernel("6.1.0-1"))
    report = Report(directory=str(tmp_path / "status"))
    with pytest.raises(SystemExit, match="kexec -e"):
        kexec.kexec_boot(
            spec, image, PLENTY, report, str(tmp_path / "work"), str(tmp_path / "cmdline")
        )
    line = never_on_this_machine[0][5].partition("=")[2]
    assert line == (
        "root=bootc-live:http://h/r.oci bootc.zram=50% console=ttyS0 "
        f"bootc.digest={image.top.digest} bootc.kexec=0 -- single"
    )
    (tmp_path / "next").write_text(line)
    again = cmdline.read(str(tmp_path / "next"))  # the same initramfs, its cmdline.d and all
    assert (again.kexec, again.image, again.mode) == (False, spec.image, spec.mode)


def test_a_next_command_line_over_the_kernels_limit_is_named(
    tmp_path: Path, never_on_this_machine: Calls
) -> None:
    """x86's kexec_file_load refuses a command line longer than 2048 bytes with EINVAL, and
    stage one adds root=, bootclabel=, bootc.digest= and bootc.kexec.verified= to what the
    boot kernel took: a line that booted can be too long for the next kernel."""
    image = image_of(tmp_path, kernel("6.1.0-1"))
    argv = ("root=bootc-live:/x", "bootc.kexec", "x=" + "y" * 1900)
    with pytest.raises(kexec.KexecError) as err:
        stage_one(tmp_path, image, tmp_path / "work", argv)
    assert err.value.line().startswith("bootc.kexec: the next kernel's command line would be 2"), (
        err.value.line()
    )
    assert "bytes, over the kernel's 2048" in err.value.line()
    assert never_on_this_machine == []  # nothing was loaded


def test_a_hard_link_to_a_lower_layer_takes_its_last_entry_at_that_path(tmp_path: Path) -> None:
    """Within a layer the last entry at a path is the file: the target of an upper layer's
    hard link too."""
    lower = [
        d("sysroot"),
        f("sysroot/k.file", b"stale kernel"),
        f("sysroot/k.file", b"kernel 6.14.0"),
        f("sysroot/i.file", b"initramfs 6.14.0"),
    ]
    assert found(image_of(tmp_path, lower, OSTREE_LINKS), tmp_path)[:2] == (
        "6.14.0",
        b"kernel 6.14.0",
    )


def test_a_kernels_name_reaches_the_console_escaped(tmp_path: Path) -> None:
    """A directory name under usr/lib/modules is the image's: on the console (a VT, a serial
    console, the journal) its escape sequences (an OSC 52 clipboard write, a screen clear), a
    carriage return that would overwrite the line with a forged "live root ready" and a bidi
    override are shown escaped; status.json keeps the name as it is."""
    evil = "6.1.0\x1b]52;c;aGk=\x07\r\x1b[2Kbootc-live: live root ready\u202e"
    image = image_of(tmp_path, kernel(evil), kernel("9.9\x1b[2J\x9b1m", initramfs=False))
    out = io.StringIO()
    report = Report(directory=str(tmp_path / "status"), stream=out)
    with pytest.raises(SystemExit):
        stage_one(tmp_path, image, tmp_path / "w", report=report)
    console = out.getvalue()
    assert console.endswith("\n")
    for line in console[:-1].split("\n"):
        assert line.isprintable(), line
    assert (
        "kexec into 6.1.0\\x1b]52;c;aGk=\\x07\\x0d\\x1b[2Kbootc-live: live root ready\\u202e:"
        in (console)
    )
    assert "(9.9\\x1b[2J\\x9b1m passed over" in console
    written = json.loads((tmp_path / "status/status.json").read_text())
    assert written["kexec_kver"] == evil
