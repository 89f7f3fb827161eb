"""The one kernel finder: which kernels a stack of layers, or an unpacked tree, shows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootc_live.runtime.kernels import KernelFinder, boot_file, in_tree

M = "usr/lib/modules"
Layer = list[tuple[str, bool]]  # (tar name, a regular file)


def shown(*layers: Layer) -> KernelFinder:
    """A finder fed `layers` (listed bottom-up, as a manifest lists them) from the top down."""
    finder = KernelFinder()
    for layer in reversed(layers):
        for name, regular in layer:
            finder.entry(name.encode(), regular)
        finder.end_layer()
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
    assert finder.entry(f"{M}/6.1.0-1/vmlinuz".encode(), True) == ("6.1.0-1", "vmlinuz")
    finder.end_layer()
    assert finder.entry(f"{M}/6.1.0-1/vmlinuz".encode(), True) is None  # the lower one
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
    finder = in_tree(os.fspath(root))
    assert finder.kernels() == ["6.1.0-9", "6.1.0-10"]
    assert finder.complete() == ["6.1.0-10"]
    assert finder.files[("6.1.0-9", "vmlinuz")] == f"{M}/6.1.0-9/vmlinuz".encode()
    assert finder.named == {"6.1.0-9", "6.1.0-10", "9.9.9"}
