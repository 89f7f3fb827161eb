"""The one kernel finder: which kernels a stack of layers, or an unpacked tree, shows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootc_live.runtime.kernels import KernelFinder, boot_file, in_tree, version_key
from bootc_live.runtime.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK

M = "usr/lib/modules"
# (tar name, a regular file (True) or a symlink (False)), or (tar name, kind, link target)
Layer = list[tuple[str, bool] | tuple[str, str, str]]


def shown(*layers: Layer) -> KernelFinder:
    """A finder fed `layers` (listed bottom-up, as a manifest lists them) from the top down."""
    finder = KernelFinder()
    for layer in reversed(layers):
        for name, *how in layer:
            kind, target = (
                (how[0], how[1]) if len(how) == 2 else (REGULAR if how[0] else SYMLINK, "")
            )
            finder.entry(name.encode(), kind, target.encode())
        finder.end_layer(finder.relink())
    return finder


def kernel(kver: str, place: str = M) -> Layer:
    return [(f"{place}/{kver}/vmlinuz", True), (f"{place}/{kver}/initramfs.img", True)]


@pytest.mark.parametrize(
    ("path", "which"),
    [
        (f"{M}/6.1.0-1/vmlinuz", ("6.1.0-1", "vmlinuz")),
        ("lib/modules/6.1.0-1/initramfs.img", ("6.1.0-1", "initramfs.img")),
        ("boot/vmlinuz-6.1.0-1", ("6.1.0-1", "vmlinuz")),
        (f"{M}/6.1.0-1/kernel/vmlinuz", None),
        (f"{M}/vmlinuz", None),
        ("boot/vmlinuz", None),
        ("boot/initramfs-6.1.0-1.img", None),
        ("usr/boot/vmlinuz-6.1.0-1", None),
    ],
)
def test_the_places_of_a_kernel(path: str, which: tuple[str, str] | None) -> None:
    assert boot_file(path.encode()) == which


def test_versions_are_ordered_as_numbers_and_complete_needs_the_initramfs() -> None:
    finder = shown(
        [*kernel("6.1.0-9"), *kernel("5.10.0-30"), (f"./{M}/6.1.0-10/vmlinuz", True)],
    )
    assert finder.kernels() == ["5.10.0-30", "6.1.0-9", "6.1.0-10"]
    assert finder.complete() == ["5.10.0-30", "6.1.0-9"]


@pytest.mark.parametrize(
    "upper",
    [
        [(f"{M}/6.1.0-10/.wh.vmlinuz", False)],  # the file
        [(f"{M}/.wh.6.1.0-10", False)],  # its directory
        [("usr/lib/.wh.modules", False), (f"{M}/6.1.0-9/vmlinuz", True)],  # a parent, then anew
        [(f"{M}/.wh..wh..opq", False), (f"{M}/6.1.0-9/vmlinuz", True)],  # an opaque parent
    ],
)
def test_an_upper_layer_hides_a_lower_kernel(upper: Layer) -> None:
    finder = shown(kernel("6.1.0-10"), [(f"{M}/6.1.0-9/vmlinuz", True)], upper)
    assert finder.kernels() == ["6.1.0-9"]


def test_a_layers_whiteouts_hide_only_the_layers_below_it() -> None:
    same = [(f"{M}/.wh..wh..opq", False), (f"{M}/.wh.6.1.0-1", False), *kernel("6.1.0-1")]
    assert shown(same).kernels() == ["6.1.0-1"]


def test_an_upper_file_replaces_the_lower_one_at_its_path() -> None:
    finder = KernelFinder()
    assert finder.entry(f"{M}/6.1.0-1/vmlinuz".encode()) is True  # its bytes are wanted
    finder.end_layer()
    assert finder.entry(f"{M}/6.1.0-1/vmlinuz".encode()) is False  # the lower one
    assert finder.where(("6.1.0-1", "vmlinuz")) == (0, f"{M}/6.1.0-1/vmlinuz".encode())
    # A link over the kernel's file leaves that kernel without one; another place still counts.
    linked = shown(kernel("6.1.0-1"), [(f"{M}/6.1.0-1/vmlinuz", False)])
    assert (linked.kernels(), linked.named) == ([], {"6.1.0-1"})
    elsewhere = shown([("boot/vmlinuz-6.1.0-1", True)], [(f"{M}/6.1.0-1/vmlinuz", False)])
    assert elsewhere.files == {("6.1.0-1", "vmlinuz"): b"boot/vmlinuz-6.1.0-1"}


def test_an_unpacked_tree_without_following_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for kver in ("6.1.0-9", "6.1.0-10"):
        (root / M / kver).mkdir(parents=True)
        (root / M / kver / "vmlinuz").write_bytes(b"k")
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-6.1.0-9").symlink_to(f"../{M}/6.1.0-9/vmlinuz")
    (root / "boot/vmlinuz-9.9.9").symlink_to("/boot/vmlinuz-host")  # the host's, if followed
    (root / "lib").symlink_to("usr/lib")
    (root / "usr/lib/modules/6.1.0-10/initramfs.img").write_bytes(b"i")
    host = tmp_path / "host-modules/7.0"  # a KVER directory linked out of the tree
    host.mkdir(parents=True)
    (host / "vmlinuz").write_bytes(b"the host's")
    (host / "initramfs.img").write_bytes(b"the host's")
    (root / M / "7.0").symlink_to(host)
    finder = in_tree(os.fspath(root))
    assert finder.kernels() == ["6.1.0-9", "6.1.0-10"]
    assert finder.complete() == ["6.1.0-10"]
    assert finder.files[("6.1.0-9", "vmlinuz")] == f"{M}/6.1.0-9/vmlinuz".encode()
    assert finder.named == {"6.1.0-9", "6.1.0-10", "9.9.9"}
    link = (b"boot/vmlinuz-9.9.9", SYMLINK, b"/boot/vmlinuz-host")  # named, for the message
    assert finder.at_place(("9.9.9", "vmlinuz")) == link


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("6.1.0-9", "6.1.0-10"),
        ("6.8.5-301.fc40.x86_64+debug", "6.8.5-301.fc40.x86_64"),  # Fedora's kernel-debug
        ("6.12~rc1", "6.12"),  # Debian's pre-release
        ("5.14.0-427.el9", "5.14.0-427.13.1.el9"),
        ("6.1²", "6.2"),  # a digit that int() refuses is a word, not a traceback
        # Numbers within a part, as `sort -V` and rpm compare them: Fedora rawhide's and
        # upstream's release candidates, RHEL's real-time kernels.
        ("6.12.0-0.rc9.20241104git.60.fc42", "6.12.0-0.rc10.20241104git.60.fc42"),
        ("6.12.0-rc2", "6.12.0-rc10"),
        ("5.14.0-284.11.1.rt9.296.el9_2.x86_64", "5.14.0-284.11.1.rt14.296.el9_2.x86_64"),
        ("6.10.3-zen2-1-zen", "6.10.3-zen10-1-zen"),
    ],
)
def test_version_order(lower: str, higher: str) -> None:
    assert version_key(lower) < version_key(higher)
    assert sorted([higher, lower], key=version_key) == [lower, higher]


def test_two_flavours_of_one_version_never_compare_equal() -> None:
    """+64k and +debug of one version: a tie left the choice to the order a set gave them,
    which the initramfs's Python randomises from boot to boot."""
    for flavours in (
        ["5.14.0-427.el9.aarch64+debug", "5.14.0-427.el9.aarch64+64k"],
        ["6.1.0-07", "6.1.0-7"],  # one number written two ways
        ["6.1.0", "6.1-0"],
    ):
        assert version_key(flavours[0]) != version_key(flavours[1])
        assert sorted(flavours, key=version_key) == sorted(reversed(flavours), key=version_key)


def test_hard_links_and_links_over_directories() -> None:
    """A hard link at a kernel's place is that kernel (ostree-based images); a link or file
    over a directory of the place hides the lower layers' kernels below it."""
    linked = shown(
        [
            ("sysroot/objects/k.file", True),
            (f"{M}/6.14.0/vmlinuz", HARDLINK, "sysroot/objects/k.file"),
            (f"{M}/6.14.0/initramfs.img", HARDLINK, "./sysroot/objects/k.file"),
        ]
    )
    assert (linked.kernels(), linked.complete()) == (["6.14.0"], ["6.14.0"])
    assert linked.where(("6.14.0", "vmlinuz")) == (0, b"sysroot/objects/k.file")
    for over in ("usr", "usr/lib", M, f"{M}/6.9.0"):
        finder = shown([*kernel("6.9.0"), *kernel("6.1.0")], [(over, SYMLINK, "elsewhere")])
        assert finder.kernels() == ([] if over != f"{M}/6.9.0" else ["6.1.0"]), over
    # A directory entry over it hides nothing: the layers merge.
    assert shown(kernel("6.9.0"), [(f"{M}/6.9.0", DIRECTORY, "")]).kernels() == ["6.9.0"]
