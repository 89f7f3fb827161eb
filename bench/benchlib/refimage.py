"""SPEC §9's reference image, built once and cached by bench/unpack (and booted by bench/boot's
reference rows): a debootstrap Debian 12 root and two OCI images of it (one gzip layer, five
gzip layers), each an OCI layout and its oci-archive."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import debian_image
from benchlib.common import BenchError, log, run, utc_now
from benchlib.mounts import remove_tree, unmount_all_under
from bootc_live.layout import Layer, LayoutWriter

DEFAULT_CACHE = Path("/var/cache/bootc-live-bench")
CACHE_FORMAT = 2  # bump to invalidate every cached image when the image recipe changes
ROOT_RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "variant": "minbase",
    # The SPEC's packages (systemd, kernel, python3, dracut) plus a few common ones that bring
    # the root to the reference size: ~850 MB and ~19 000 entries.
    "include": [
        "systemd",
        "systemd-sysv",
        "linux-image-amd64",
        "python3",
        "dracut-core",
        "udev",
        "python3-setuptools",
        "ca-certificates",
        "iproute2",
        "procps",
        "less",
        "kmod",
        "man-db",
    ],
}
# Layers as OCI image builders write them: numeric owners, PAX with xattrs (ACLs included, as
# containers/storage records them), whole-second mtimes and no atime/ctime records.
TAR_CREATE = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--format=pax",
    "--pax-option=delete=atime,delete=ctime,delete=mtime",
    "--sort=name",
]
REF_NAME = "latest"
# The multi-layer image, split by directory: (layer, directory, its entries in the layer; None
# for those no other layer takes). Each layer also holds the directories above what it holds, as
# a builder's diff does.
SPLIT: list[tuple[str, str, list[str] | None]] = [
    ("base", ".", None),
    ("usr", "usr", None),
    ("usr-lib", "usr", ["lib"]),
    ("usr-share", "usr", ["share"]),
    ("etc-var", ".", ["etc", "var"]),
]
IMAGES = ("single", "multi")


def recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def tree_figures(path: Path) -> dict[str, int]:
    """Entries (`find | wc -l`) and bytes (`du -sb --apparent-size`): the cheap tree check."""
    find = subprocess.run(["find", os.fspath(path)], capture_output=True, check=True)
    du = subprocess.run(
        ["du", "-sb", "--apparent-size", os.fspath(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"entries": find.stdout.count(b"\n"), "bytes": int(du.stdout.split()[0])}


def build_root(cache: Path, mirror: str, force: bool) -> tuple[Path, dict[str, Any]]:
    """The debootstrap root, built once per recipe."""
    root = cache / "root"
    stamp = cache / "root.json"
    recipe = {**ROOT_RECIPE, "mirror": mirror}
    if not force and stamp.exists() and root.is_dir():
        info = json.loads(stamp.read_text())
        if info.get("recipe") == recipe:
            return root, info
    log(f"building the reference root in {root} (debootstrap, a few minutes)")
    new = cache / "root.new"
    remove_tree(new)
    stamp.unlink(missing_ok=True)
    start = time.monotonic()
    try:
        run(
            [
                "debootstrap",
                f"--variant={recipe['variant']}",
                "--include=" + ",".join(recipe["include"]),
                recipe["suite"],
                new,
                mirror,
            ],
            stdout=subprocess.DEVNULL,
        )
    finally:
        unmount_all_under(new)  # debootstrap mounts proc and sys in the target
    remove_tree(root)
    new.rename(root)
    info = {
        "recipe": recipe,
        "built": utc_now(),
        "build_seconds": round(time.monotonic() - start, 1),
        "figures": tree_figures(root),
    }
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    return root, info


def layer_members(root: Path, directory: str, entries: list[str] | None) -> list[str]:
    """tar member arguments of one layer of the split image."""
    if entries is None:
        taken = {e for _, d, es in SPLIT if d == directory for e in es or ()}
        taken |= {d.split("/")[0] for _, d, _ in SPLIT if directory == "." and d != "."}
        entries = [e for e in sorted(os.listdir(root / directory)) if e not in taken]
    parts = Path(directory).parts
    parents = ["."] + ["./" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    subtrees = [os.path.normpath(f"./{directory}/{e}") for e in entries]
    return ["--no-recursion", *parents, "--recursion", *(f"./{t}" for t in subtrees)]


def verify_layer(blobs: Path, layer: dict[str, Any]) -> None:
    """Decompress the written blob again and check its diff_id."""
    proc = subprocess.Popen(
        ["pigz", "-dc", os.fspath(blobs / layer["digest"].removeprefix("sha256:"))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    h = hashlib.sha256()
    while chunk := proc.stdout.read(1 << 20):
        h.update(chunk)
    if proc.wait() != 0 or f"sha256:{h.hexdigest()}" != layer["diff_id"]:
        raise BenchError(f"layer {layer['name']}: blob does not decompress to its diff_id")


def image_config(layers: list[dict[str, Any]], created: str) -> dict[str, Any]:
    """What the image's config holds besides its os, architecture and layers."""
    return {
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/sbin/init"],
            "Labels": {"containers.bootc": "1"},
        },
        "history": [
            {"created": created, "created_by": f"bench/unpack: layer {layer['name']}"}
            for layer in layers
        ],
    }


def build_image(
    cache: Path, kind: str, root: Path, root_info: dict[str, Any], force: bool
) -> dict[str, Any]:
    """One cached image: an OCI layout and the oci-archive (a plain tar of it)."""
    final = cache / "images" / kind
    recipe = {
        "format": CACHE_FORMAT,
        "root": recipe_key(root_info["recipe"]),
        "root_built": root_info["built"],
        "tar": TAR_CREATE,
        # Lists, as JSON reads the stamp back.
        "split": [list(layer) for layer in SPLIT] if kind == "multi" else None,
    }
    stamp = final / "image.json"
    if not force and stamp.exists():
        cached: dict[str, Any] = json.loads(stamp.read_text())
        if cached.get("recipe") == recipe:
            return cached
    log(f"building the {kind}-layer image in {final}")
    new = cache / "images" / f"{kind}.new"
    remove_tree(new)
    out = LayoutWriter(new / "layout")
    if kind == "single":
        parts = [("rootfs", ["."])]
    else:
        parts = [(name, layer_members(root, d, entries)) for name, d, entries in SPLIT]
    tar = ["tar", "-C", os.fspath(root), *TAR_CREATE, "-cf", "-"]
    layers = [
        debian_image.write_layer(name, [*tar, *members], out.blobs, log) for name, members in parts
    ]
    for layer in layers:
        verify_layer(out.blobs, layer)
    blobs = [Layer(layer["digest"], layer["size"], layer["diff_id"]) for layer in layers]
    out.add_image(blobs, REF_NAME, image_config(layers, root_info["built"]))
    run(
        [
            "tar",
            "-C",
            new / "layout",
            "--numeric-owner",
            "--format=pax",
            "--pax-option=delete=atime,delete=ctime,delete=mtime",
            "-cf",
            new / "image.tar",
            "oci-layout",
            "index.json",
            "blobs",
        ]
    )
    info = {
        "recipe": recipe,
        "layers": layers,
        "archive_bytes": (new / "image.tar").stat().st_size,
    }
    (new / "image.json").write_text(json.dumps(info, indent=2) + "\n")
    remove_tree(final)
    new.rename(final)
    return info
