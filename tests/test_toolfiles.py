"""`bootc-live build` records the files each optional tool of the initramfs alone needs
(toolfiles.py), so that a boot that will not run it can free them (runtime/tools.py). Deleting a
file something else loads would break the boot: binutils' readelf and GNU grep are the judges."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootc_live import build, selfcheck, toolfiles
from bootc_live.runtime.cpio import CpioWriter
from newc import read_archive
from unpackers import need

LIBDIR = "usr/lib/x86_64-linux-gnu"


def readelf_needed(path: Path) -> list[str] | None:
    """The DT_NEEDED entries binutils reads, None for a file that is not ELF."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True)
    if "Not an ELF file" in out.stderr:
        return None
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", out.stdout)


def host_elves(limit: int = 250) -> list[Path]:
    found = []
    for directory in ("/usr/bin", "/usr/sbin", f"/{LIBDIR}"):
        for path in sorted(Path(directory).iterdir()):
            if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
                found.append(path)
    step = max(1, len(found) // limit)
    return found[::step]


def test_the_needed_libraries_are_what_readelf_reads() -> None:
    """On this machine's own programs and libraries, a sample across /usr/bin, /usr/sbin and
    the libraries: the same DT_NEEDED entries, in order."""
    elves = host_elves()
    assert len(elves) > 100
    for path in elves:
        assert toolfiles.needed(path.read_bytes()) == readelf_needed(path), path


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_broken_elf_files_give_an_answer_never_an_exception(data: st.DataObject) -> None:
    """An ELF file cut short or with bytes changed anywhere in its headers is read, or said to
    be unreadable: never another exception (the build would stop with a traceback)."""
    original = Path("/usr/bin/true").read_bytes()
    mutated = bytearray(original[: data.draw(st.integers(0, len(original)))])
    for _ in range(data.draw(st.integers(0, 8))):
        if mutated:
            at = data.draw(st.integers(0, min(len(mutated), 8192) - 1))
            mutated[at] = data.draw(st.integers(0, 255))
    try:
        answer = toolfiles.needed(bytes(mutated))
    except toolfiles.Unreadable:
        return
    assert answer is None or all(isinstance(name, str) for name in answer)


def copy_with_libraries(program: str, tree: Path, at: str) -> None:
    """`program` into `tree` at `at`, and every library ldd lists, where Debian keeps them."""
    target = tree / at
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(program, target)
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for line in listed.splitlines():
        m = re.search(r"(\S+) => (/\S+) \(0x", line) or re.search(r"^\s*(/\S+) \(0x", line)
        if not m:
            continue
        source = Path(m.group(m.lastindex or 1))
        real = source.resolve()
        place = tree / str(source.parent).lstrip("/")
        place.mkdir(parents=True, exist_ok=True)
        if not (place / real.name).exists():
            shutil.copy2(real, place / real.name)
        if source.name != real.name and not (place / source.name).exists():
            (place / source.name).symlink_to(real.name)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """curl, bash and mke2fs of this machine with their libraries, as an initramfs holds them
    (lib a link to usr/lib, as in Debian's)."""
    root = tmp_path / "initramfs"
    for merged in ("lib", "lib64"):
        (root / "usr" / merged).mkdir(parents=True)
        (root / merged).symlink_to(f"usr/{merged}")
    copy_with_libraries("/usr/bin/curl", root, "usr/bin/curl")
    copy_with_libraries("/usr/bin/bash", root, "usr/bin/bash")
    copy_with_libraries("/usr/sbin/mke2fs", root, "usr/sbin/mke2fs")
    return root


def files(found: dict[str, list[str]], tool: str) -> set[str]:
    return {os.path.basename(p) for p in found.get(tool, [])}


def test_a_tool_takes_what_only_it_loads(tree: Path) -> None:
    found = toolfiles.manifest(tree)
    curl = files(found, "curl")
    assert {"curl", "libcurl.so.4.8.0", "libnghttp2.so.14.24.1"} <= curl
    assert "libc.so.6" not in curl and "bash" not in curl  # bash loads libc
    assert set(found) == {"curl", "mkfs.ext4"}  # the others are not in this initramfs
    assert {"mke2fs", "libext2fs.so.2.4"} <= files(found, "mkfs.ext4")
    # Every file listed is in the initramfs, by an absolute path in it.
    for paths in found.values():
        for path in paths:
            assert path.startswith("/") and (tree / path.lstrip("/")).is_file()


def test_a_library_another_program_names_stays_with_what_it_loads(tree: Path) -> None:
    """A program that holds a library's name (as dlopen is given it) keeps that library and
    its own libraries, though nothing lists it as DT_NEEDED."""
    dlopener = tree / "usr/bin/dlopener"
    dlopener.write_bytes(Path("/usr/bin/true").read_bytes() + b"\0libnghttp2.so.14\0")
    curl = files(toolfiles.manifest(tree), "curl")
    assert "libnghttp2.so.14.24.1" not in curl and "libcurl.so.4.8.0" in curl
    # A name without its version names it too (dlopen("libgnutls.so")).
    dlopener.write_bytes(Path("/usr/bin/true").read_bytes() + b"\0libgnutls.so\0")
    curl = files(toolfiles.manifest(tree), "curl")
    assert "libgnutls.so.30.34.3" not in curl
    assert "libnettle.so.8.6" not in curl  # what gnutls loads stays with it


def test_an_elf_file_that_cannot_be_read_keeps_everything(tree: Path) -> None:
    """What a broken ELF file loads is unknown, so nothing may go."""
    (tree / "usr/bin/broken").write_bytes(Path("/usr/bin/true").read_bytes()[:200])
    assert toolfiles.manifest(tree) == {}


def test_a_multi_call_binary_and_hard_links(tree: Path) -> None:
    """A tool whose file answers to other names is another program too: kept. Its own aliases
    (mkfs.ext4 of mke2fs) are fine, and every hard link of a file is listed."""
    os.link(tree / "usr/sbin/mke2fs", tree / "usr/sbin/mkfs.ext4")
    os.link(tree / "usr/sbin/mke2fs", tree / "usr/bin/mke2fs")  # walked first: its known name
    (tree / "usr/bin/wget").symlink_to("curl")
    found = toolfiles.manifest(tree)
    assert "curl" not in found
    paths = {"/usr/bin/mke2fs", "/usr/sbin/mke2fs", "/usr/sbin/mkfs.ext4"}
    assert paths <= set(found["mkfs.ext4"])


@pytest.mark.parametrize(
    ("program", "tool"),
    [
        ("/usr/bin/skopeo", "mkfs.ext4"),  # Go: "…mkdirtempmkfs.ext4mode=0620…"
        (str(Path(sys.executable).with_name("ruff")), "curl"),  # Rust: "…alloc curlextents…"
    ],
    ids=["go-skopeo", "rust-ruff"],
)
def test_a_go_or_rust_program_that_holds_a_tools_name_keeps_it(
    tree: Path, program: str, tool: str
) -> None:
    """Go and Rust lay a program's strings end to end, with no NUL after each: in a real Go
    program (skopeo) and a real Rust one (ruff) a tool's name stands between other strings,
    never as a C string, and whether they run it cannot be told: the tool stays."""
    assert tool in toolfiles.manifest(tree)
    data = Path(program).read_bytes()
    assert tool.encode() in data and tool not in {
        m.decode() for m in toolfiles.RUNS_ELF.findall(data)
    }
    copy_with_libraries(program, tree, f"usr/bin/{Path(program).name}")
    found = toolfiles.manifest(tree)
    assert tool not in found
    assert found["curl" if tool != "curl" else "mkfs.ext4"]  # the other tool still goes


@pytest.fixture(scope="module")
def demo_initramfs(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The demo's systemd initrd.img as built, and its files unpacked."""
    initrd = artifacts["systemd"] / "initrd.img"
    return initrd, selfcheck.unpack(initrd, Path("/"), tmp_path_factory.mktemp("tf") / "tree")


@pytest.mark.integration
def test_in_a_real_initramfs_nothing_kept_loads_or_names_what_goes(
    demo_initramfs: tuple[Path, Path],
) -> None:
    """The demo's initramfs, made by this machine's dracut: curl and its TLS, Kerberos and LDAP
    libraries go, what another program may run stays; no ELF file that stays lists any freed
    library as DT_NEEDED (readelf) or holds a name of one (grep); build appended the same
    record to initrd.img, where the kernel reads it."""
    initrd, root = demo_initramfs
    found = toolfiles.manifest(root)
    assert {"curl", "mkfs.ext4", "mkfs.erofs", "gpgv"} <= set(found)
    # systemd (systemctl kexec, systemd-shutdown) may run kexec, libcrypto names openssl: kept.
    assert not {"kexec", "openssl"} & set(found)
    assert {"libcurl.so.4.8.0", "libgnutls.so.30.34.3", "libkrb5.so.3.3"} <= files(found, "curl")
    gone = {p.lstrip("/") for paths in found.values() for p in paths}
    names = {}  # every name leading to a file that goes
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            real = os.path.relpath(os.path.realpath(os.path.join(root, rel)), root)
            if real in gone:
                names.setdefault(name, real)
    libraries = {n for n in names if ".so" in n}
    assert len(libraries) >= 15
    kept = []
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = os.path.relpath(path, root)
            if rel in gone or path.is_symlink() or "usr/lib/modules" in rel:
                continue
            needs = readelf_needed(path)
            if needs is None:
                continue
            kept.append(path)
            assert not set(needs) & libraries, (rel, set(needs) & libraries)
    assert len(kept) > 50
    for library in libraries:
        stem = library.split(".so")[0] + ".so"
        named = subprocess.run(
            ["grep", "-lF", "--", stem, *map(str, kept)], capture_output=True, text=True
        ).stdout.split()
        assert not named, (library, named)

    kind = build.initramfs_compression(initrd)
    command = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"]}[kind]
    data = subprocess.run(
        command, input=initrd.read_bytes(), capture_output=True, check=True
    ).stdout
    at = data.rindex(b"usr/lib/bootc-live/tools.json\0") - 110
    members, end = read_archive(data, at)
    assert [m.name for m in members] == ["usr/lib/bootc-live/tools.json"]
    recorded = json.loads(data[members[0].offset : members[0].offset + members[0].size])
    assert recorded == found
    assert data[end:].strip(b"\0") == b""  # the last archive in the initramfs


def test_a_tool_another_program_may_run_stays(tree: Path) -> None:
    """A script, unit or udev rule naming a tool as a word (not in a comment), or a program
    holding its name as a whole string (what exec is given), may run it: it stays. dracut's
    url-lib (curl's wrapper) and our own runtime do not count; what names fetch_url does."""
    scripts = tree / "usr/lib/dracut/hooks"
    scripts.mkdir(parents=True)
    (tree / "usr/lib/url-lib.sh").write_text('fetch_url() {\n    curl -sS "$1"\n}\n')
    runtime = tree / "usr/lib/bootc-live/bootc_live/runtime"
    runtime.mkdir(parents=True)
    (runtime / "urllib_dracut.py").write_text('RUN = ["curl", "fetch_url", "mkfs.ext4"]\n')
    (scripts / "comment.sh").write_text("# curl and mke2fs would do this\necho curly\n")
    assert {"curl", "mkfs.ext4"} <= set(toolfiles.manifest(tree))

    (scripts / "livenet.sh").write_text('. /lib/url-lib.sh\nfetch_url "$url" /tmp/x\n')
    assert "curl" not in toolfiles.manifest(tree)
    (scripts / "livenet.sh").unlink()
    (scripts / "tang.sh").write_text('exec /usr/bin/curl -sfg "$url/adv"\n')
    assert "curl" not in toolfiles.manifest(tree)
    (scripts / "tang.sh").unlink()
    unit = tree / "usr/lib/systemd/system/makefs.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=mkfs.ext4 -F /dev/vdb\n")
    assert "mkfs.ext4" not in toolfiles.manifest(tree) and "curl" in toolfiles.manifest(tree)
    unit.unlink()
    runner = tree / "usr/bin/runner"
    runner.write_bytes(Path("/usr/bin/true").read_bytes() + b"\0/usr/sbin/mke2fs\0")
    assert "mkfs.ext4" not in toolfiles.manifest(tree)


def initrd_of(tmp_path: Path, kind: str, early: bool) -> Path:
    """An initramfs as dracut writes one: a compressed archive, maybe after an uncompressed
    early one (microcode)."""
    main = io.BytesIO()
    writer = CpioWriter(main)
    writer.add_dir("usr")
    writer.add_bytes("init", b"#!/bin/sh\n")
    writer.close()
    plain = tmp_path / "main.cpio"
    plain.write_bytes(main.getvalue())
    command = {
        "gzip": ["gzip", "-n9c"],
        "xz": ["xz", "--check=crc32", "-c"],
        "zstd": ["zstd", "-qc"],
    }
    packed = (
        subprocess.run([*command[kind], str(plain)], capture_output=True, check=True).stdout
        if kind in command
        else plain.read_bytes()
    )
    initrd = tmp_path / "initrd.img"
    first = b""
    if early:
        micro = io.BytesIO()
        writer = CpioWriter(micro)
        writer.add_bytes("kernel/x86/microcode/GenuineIntel.bin", b"\1" * 1000)
        writer.close()
        first = micro.getvalue()
    initrd.write_bytes(first + packed)
    return initrd


@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd", "none"])
def test_the_record_is_one_stream_with_the_initramfs(
    tmp_path: Path, kind: str, early: bool
) -> None:
    """build appends the record compressed as the initramfs is: its decompressor reads the two
    as one stream, silently (no trailing bytes), and the record is the archive after the
    initramfs's own, where the kernel unpacks it."""
    initrd = initrd_of(tmp_path, kind, early)
    assert build.initramfs_compression(initrd) == kind
    record = {"curl": ["/usr/bin/curl", "/usr/lib/libcurl.so.4"]}
    build.record_tools(initrd, record)
    data = initrd.read_bytes()
    if early:
        _, at = read_archive(data)
        data = data[at:].lstrip(b"\0")
    if kind != "none":
        command = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"]}[kind]
        done = subprocess.run(command, input=data, capture_output=True)
        assert (done.returncode, done.stderr) == (0, b"")
        data = done.stdout
    members, at = read_archive(data)
    assert [m.name for m in members] == ["usr", "init"]
    at += -at % 4
    while data[at : at + 1] == b"\0":
        at += 1
    members, _ = read_archive(data, at)
    assert [m.name for m in members] == ["usr/lib/bootc-live/tools.json"]
    assert json.loads(data[members[0].offset : members[0].offset + members[0].size]) == record
    assert not list(tmp_path.glob("tools.cpio*"))  # zstd's scratch files are gone


def test_the_record_after_an_lz4_initramfs_is_past_the_zeros_that_end_it(
    tmp_path: Path,
) -> None:
    """dracut's lz4 (legacy format) has no end mark: the kernel reads chunk sizes until a zero
    one or the end. The record went right after it (0 to 3 zeros), so the kernel read the
    record's "0707" as a chunk size, and its initramfs unpacking failed there."""
    need(shutil.which("lz4") is not None, "needs lz4")
    plain = tmp_path / "main.cpio"
    main = io.BytesIO()
    writer = CpioWriter(main)
    writer.add_bytes("init", b"#!/bin/sh\n" + os.urandom(1001))
    writer.close()
    plain.write_bytes(main.getvalue())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(subprocess.run(["lz4", "-lqc", plain], capture_output=True).stdout)
    build.record_tools(initrd, {"curl": ["/usr/bin/curl"]})
    data = initrd.read_bytes()
    at = 4  # past the magic: then chunks, each after its little-endian size, as the kernel reads
    while len(data) - at >= 4 and (size := int.from_bytes(data[at : at + 4], "little")):
        assert size < 1 << 24, f"a chunk size of {size:#x} at {at}: the record, read as lz4"
        at += 4 + size
    rest = data[at:].lstrip(b"\0")
    assert rest.startswith(b"070701") and (len(data) - len(rest)) % 4 == 0
