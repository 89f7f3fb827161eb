"""Fedora/CentOS-style bootc images, end to end without QEMU: a Debian userland committed by
Debian's `ostree` and exported as ostree-ext's chunked layers (tests/ostree_export.py), then
unpacked by bootc-live and judged against `ostree checkout` of the same commit and against
`umoci unpack` of the same OCI layout; its kernel found by bootc.kexec's finder and by
`bootc-live inspect`."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import ostree_export
from bootc_live.runtime import kexec
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from debian_image import CACHES
from imagegen import build_layout, d, f, hard, layer_tar, wh
from treewalk import diff, snapshot
from unpackers import (
    assert_clean_failure,
    bootc_live,
    bootc_live_unpack,
    need,
    need_root_and,
    umoci,
    umoci_unpack,
)

pytestmark = pytest.mark.integration

KVER = "6.14.0-63.fc42.x86_64"
MODULES = f"usr/lib/modules/{KVER}"
SMALL = 512 << 10  # the userland's programs taken: those below this size
# The top level of a bootc image's commit (rpm-ostree's, as Fedora's and CentOS's ship it).
TOP_LINKS = {
    "home": "var/home",
    "root": "var/roothome",
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "ostree": "sysroot/ostree",
    "bin": "usr/bin",
    "lib": "usr/lib",
    "lib64": "usr/lib64",
    "sbin": "usr/sbin",
    "usr/local": "../var/usrlocal",
}


def layers_of(layout: Path) -> list[bytes]:
    """The uncompressed layers of the layout's image (tag latest), the lowest first."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    return [gzip.decompress(blob(layout, layer["digest"])) for layer in manifest["layers"]]


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def debian_root() -> Path:
    """A Debian userland with a kernel in boot/: a cached debootstrap root, else this
    machine's own."""
    roots = sorted(CACHES.glob("*/root-*/root"))
    return roots[0] if roots else Path("/")


def kernel_of(root: Path) -> Path:
    kernels = sorted(root.glob("boot/vmlinuz-*"))
    need(bool(kernels), f"no kernel in {root}/boot")
    return kernels[0]


def bootc_tree(where: Path) -> Path:
    """A commit's tree shaped as rpm-ostree makes them, from a Debian userland: /etc under
    usr/etc, the kernel and its initramfs in usr/lib/modules/KVER, top-level links into /var
    and /usr, an empty /var, /boot and /sysroot; and a file with a capability, one with a user
    xattr, a zero-sized file, a private directory and a setuid binary."""
    source = debian_root()
    tree = where / "tree"
    (tree / "usr").mkdir(parents=True)
    cp = ["cp", "-a", "--preserve=all"]
    subprocess.run([*cp, source / "etc", tree / "usr/etc"], check=True)
    (tree / "usr/bin").mkdir()
    small = [p for p in (source / "usr/bin").iterdir() if p.lstat().st_size < SMALL]
    subprocess.run([*cp, *small, tree / "usr/bin"], check=True)
    (tree / "usr/lib64").mkdir()
    (tree / "usr/sbin").mkdir()
    (tree / MODULES).mkdir(parents=True)
    shutil.copyfile(kernel_of(source), tree / MODULES / "vmlinuz")
    (tree / MODULES / "initramfs.img").write_bytes(b"initramfs of " + KVER.encode() * 1000)
    for name in ("var", "boot", "sysroot"):
        (tree / name).mkdir()
    for name, target in TOP_LINKS.items():
        os.symlink(target, tree / name)
    capped = tree / "usr/bin/capped"
    capped.write_bytes(b"#!/bin/sh\n")
    os.setxattr(capped, "security.capability", bytes.fromhex("01000002" + "00200000" + "00" * 12))
    os.setxattr(tree / "usr/etc/hostname", "user.origin", b"ostree test")
    (tree / "usr/etc/empty.conf").write_bytes(b"")
    (tree / "usr/etc/private").mkdir(mode=0o700)
    (tree / "usr/etc/private/key").write_bytes(b"secret")
    os.chown(tree / "usr/etc/private", 0, 4)
    return tree


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bootc-style OCI layout (tag latest) and the repository its commit is in."""
    need_root_and("ostree", "umoci")
    where = tmp_path_factory.mktemp("ostree")
    tree = bootc_tree(where)
    found = ostree_export.commit(tree, where / "repo")
    labels = {"containers.bootc": "1", "ostree.bootable": "true"}
    build_layout(
        where / "layout",
        ostree_export.export(found),
        config_extra={"config": {"Labels": labels}},
    )
    return where / "layout", where / "repo"


def test_the_unpacked_tree_is_umoci_s(image: tuple[Path, Path], tmp_path: Path) -> None:
    layout, _repo = image
    ours = bootc_live_unpack(f"oci:{layout}:latest", tmp_path / "ours")
    theirs = umoci_unpack(layout, "latest", tmp_path / "bundle")
    assert diff(snapshot(ours), snapshot(theirs), names=("bootc-live", "umoci")) == []


def test_the_unpacked_tree_is_the_ostree_checkout(image: tuple[Path, Path], tmp_path: Path) -> None:
    """Every path of the commit as `ostree checkout` makes it (usr/etc at etc), and besides
    those only the repository and var/tmp."""
    layout, _repo = image
    ours = snapshot(bootc_live_unpack(f"oci:{layout}:latest", tmp_path / "ours"))
    checkout = tmp_path / "checkout"
    subprocess.run(["ostree", "checkout", f"--repo={image[1]}", "os", checkout], check=True)
    os.rename(checkout / "usr/etc", checkout / "etc")
    oracle = snapshot(checkout)
    extra = {p for p in ours.keys() - oracle.keys() if not p.startswith(b"sysroot/")}
    assert extra == {b"var/tmp"}
    assert ours[b"var/tmp"].mode & 0o7777 == 0o1777
    mine = {p: ours[p] for p in oracle if not p.startswith(b"sysroot/")}
    oracle = {p: r for p, r in oracle.items() if not p.startswith(b"sysroot/")}
    # Link groups: the checkout's files are hard links to the repository's objects, as the
    # unpacked tree's are, apart from zero-sized files (ostree-ext writes each on its own).
    assert (
        diff(
            mine,
            oracle,
            ignore={"dir_mtime", "links", "xattrs", "mtime_ns"},
            names=("ours", "ostree"),
        )
        == []
    )
    zero = {p for p, r in oracle.items() if r.type == "file" and r.size == 0}
    differ = {p for p in oracle if mine[p].xattrs != oracle[p].xattrs}
    assert differ <= zero


def test_the_kernel_is_found_through_its_hard_link(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    layout, _repo = image
    found = kexec.find_boot_files(resolve(LayoutSource(str(layout))), None, str(tmp_path))
    assert found.kver == KVER
    assert Path(found.kernel).read_bytes() == kernel_of(debian_root()).read_bytes()
    shown = bootc_live("inspect", "--measure", f"oci:{layout}:latest")
    assert shown.returncode == 0, shown.stderr
    assert f"kernels   {KVER}\n" in shown.stdout


def test_a_derived_layer_never_changes_the_objects_its_files_are_linked_to(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    """A layer built on the image (podman build: dnf install, a config edit) rewrites files
    that the base's layers hard-linked to sysroot/ostree/repo/objects, removes one, chmods
    one: the object keeps its bytes, mode and link to the other paths, as umoci leaves it."""
    layout, _repo = image
    base = snapshot(bootc_live_unpack(f"oci:{layout}:latest", tmp_path / "base"))
    derived = tmp_path / "derived"
    upper = [
        f("usr/bin/capped", b"#!/bin/sh\necho rebuilt\n", mode=0o755),
        f("etc/hostname", b"derived\n"),
        wh("usr/bin/ls"),
        f("usr/bin/cat", (tmp_path / "base/usr/bin/cat").read_bytes(), mode=0o700, uid=7),
        d("var/home", mode=0o711),
    ]
    build_layout(
        derived,
        [*layers_of(layout), layer_tar(upper)],
        compression="gzip",
    )
    ours = snapshot(bootc_live_unpack(f"oci:{derived}:latest", tmp_path / "ours"))
    theirs = snapshot(umoci_unpack(derived, "latest", tmp_path / "bundle"))
    assert diff(ours, theirs, names=("bootc-live", "umoci")) == []
    objects = {p: r for p, r in base.items() if p.startswith(b"sysroot/")}
    for path, record in objects.items():
        mine = ours[path]
        assert (mine.sha256, mine.mode, mine.uid, mine.xattrs) == (
            record.sha256,
            record.mode,
            record.uid,
            record.xattrs,
        ), path


def test_a_kernel_linked_to_a_hard_link_of_a_lower_layer_is_found(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    """A derived layer whose initramfs.img (or a chain of its own links over several layers)
    is a hard link to the base's vmlinuz, itself a hard link to its ostree object: the
    unpacker links them to the object's bytes, and bootc.kexec's finder follows the chain;
    it said that no layer held the base's vmlinuz as a regular file, and stopped the boot."""
    layout, _repo = image
    kernel = kernel_of(debian_root()).read_bytes()
    upper = [
        [hard("usr/k1", f"{MODULES}/vmlinuz")],
        [hard("usr/k2", "usr/k1")],
        [hard(f"{MODULES}/initramfs.img", "usr/k2")],
    ]
    derived = tmp_path / "derived"
    build_layout(derived, [*layers_of(layout), *(layer_tar(entries) for entries in upper)])
    unpacked = bootc_live_unpack(f"oci:{derived}:latest", tmp_path / "ours")
    assert (unpacked / MODULES / "initramfs.img").read_bytes() == kernel
    (tmp_path / "work").mkdir()
    found = kexec.find_boot_files(resolve(LayoutSource(str(derived))), None, str(tmp_path / "work"))
    assert (found.kver, found.layers_read) == (KVER, 7)
    assert Path(found.kernel).read_bytes() == Path(found.initramfs).read_bytes() == kernel


@pytest.mark.parametrize(
    "links",
    [
        ["../../../../../../../../SECRET"],
        ["/SECRET"],
        ["ostree/../../../../../../../../SECRET"],
        ["ostree/repo/config"],  # through the image's own ostree -> sysroot/ostree: inside
    ],
    ids=["dotdot", "absolute", "through-ostree-link", "inside"],
)
def test_hard_links_over_the_objects_stay_in_the_root(
    image: tuple[Path, Path], links: list[str], tmp_path: Path
) -> None:
    """A derived layer's hard links aimed past the root, by `..`, an absolute name or the
    image's own links (ostree -> sysroot/ostree): linked inside the root, as umoci links them,
    or refused in one line as umoci refuses them; never a link to a file of the host's."""
    layout, _repo = image
    secret = tmp_path / "secret"
    secret.write_bytes(b"host's\n")
    aimed = [target.replace("SECRET", str(secret).lstrip("/")) for target in links]
    derived = tmp_path / "derived"
    layer = layer_tar([hard(f"usr/bin/x{i}", target) for i, target in enumerate(aimed)])
    build_layout(derived, [*layers_of(layout), layer])
    ours = bootc_live("unpack", f"oci:{derived}:latest", str(tmp_path / "ours"))
    theirs = umoci("unpack", "--image", f"{derived}:latest", str(tmp_path / "bundle"))
    assert os.stat(secret).st_nlink == 1
    assert (ours.returncode == 0) == (theirs.returncode == 0), (ours.stderr, theirs.stderr)
    if ours.returncode == 0:
        got = snapshot(tmp_path / "ours")
        assert diff(got, snapshot(tmp_path / "bundle/rootfs"), names=("bootc-live", "umoci")) == []
    else:
        assert "which does not exist" in assert_clean_failure(ours)
        assert not (tmp_path / "ours").exists()  # nothing partial is left
