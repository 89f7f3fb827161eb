"""Real systemd images for VM tests and benchmarks: Debian userlands (debootstrap) as OCI layouts.

Each `Recipe` is a userland (Debian 12 with every mode's packages, Debian 12 minimal, Debian 13).
The image carries systemd, the Debian kernel (also at /usr/lib/modules/KVER/vmlinuz, as bootc
images do), dracut and python3, so `bootc-live build` makes its initramfs in the image's own
userland. A unit prints one verdict line on the console once multi-user.target is reached, then
powers the machine off:

    BOOTC-LIVE-VERDICT root=ro etc=rw var=rw fstype=tmpfs kernel=6.1.0-… target=multi-user …

Both stages are cached under CACHES/RECIPE (kept across runs, outside the repository), each keyed
by a hash of what makes it: the debootstrap root by the package list and the source of the functions
that build it; the image by the root's key and this whole file. Builds go to `*.new` and are
renamed into place under a lock, so an interrupted or concurrent build never looks finished.
Used by tests/test_vm_debian.py and bench/boot.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootc_live.layout import Layer, LayoutWriter

CACHES = Path(os.environ.get("BOOTC_LIVE_TEST_CACHE", "/var/cache/bootc-live-tests"))
CACHE = CACHES / "debian"  # BOOKWORM's
MIRROR = os.environ.get("BOOTC_LIVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = ("debootstrap", "unshare", "tar", "pigz")  # on the host, to build the image
TAG = "debian-live"
MARKER = "BOOTC-LIVE-VERDICT"
HOSTNAME = "bootc-live-test"

# Packages a live image needs for every bootc-live mode: the network and url-lib modules (URL and
# registry boot: dracut-network, curl, CA bundle, iproute2), zram (e2fsprogs), EROFS (erofs-utils)
# and kexec (kexec-tools). SPEC §9 measures the initramfs "with all modules".
ALL_MODES = (
    "dracut-network",
    "curl",
    "ca-certificates",
    "iproute2",
    "dbus",
    "e2fsprogs",
    "erofs-utils",
    "kexec-tools",
)
# Removed after debootstrap: what a live image does not need.
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
)


@dataclass(frozen=True)
class Recipe:
    """A userland: what debootstrap installs; `name` is also its cache directory."""

    name: str
    suite: str
    include: tuple[str, ...]
    variant: str = "minbase"
    prune: tuple[str, ...] = PRUNE


BASE = ("systemd", "systemd-sysv", "udev", "kmod", "linux-image-amd64", "python3")
# Debian 12 with every mode's packages and isal (igzip): the image of test_vm_debian and
# bench/boot.
BOOKWORM = Recipe("debian", "bookworm", (*BASE, "dracut-core", *ALL_MODES, "isal"))
# Debian 12 as a user would make it plainly: no dracut-network, no curl, no TLS by chance.
BOOKWORM_MINIMAL = Recipe("debian-minimal", "bookworm", (*BASE, "iproute2", "dracut-core"))
# Debian 13: dracut-ng, systemd 257, Python 3.13, kernel 6.12.
TRIXIE = Recipe("debian-trixie", "trixie", (*BASE, "dracut-core", *ALL_MODES, "isal"))
RECIPES = {recipe.name: recipe for recipe in (BOOKWORM, BOOKWORM_MINIMAL, TRIXIE)}

# Units that cannot work, or only wait, in a diskless VM without network. systemd-firstboot
# would prompt on the console: /etc/machine-id is empty (uninitialized), so it is a first boot.
MASKED = ("systemd-firstboot.service", "systemd-networkd-wait-online.service")

# Layers as image builders write them: numeric owners, PAX with xattrs, sorted, no atime/ctime.
TAR_CREATE = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--format=pax",
    "--pax-option=delete=atime,delete=ctime",
    "--sort=name",
]

VERDICT_SCRIPT = r"""#!/bin/sh
# bootc-live test image: say on the console what the live system sees, then power off.
probe() {
    if touch "$1/.bootc-live-probe" 2> /dev/null; then
        rm -f "$1/.bootc-live-probe"
        echo rw
    else
        echo ro
    fi
}
fstype=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
state=$(systemctl is-active multi-user.target)
if [ "$state" = active ]; then target=multi-user; else target="multi-user:$state"; fi
failed=$(systemctl list-units --state=failed --no-legend --plain |
    awk '{ printf "%s%s", sep, $1; sep = "," }')
memtotal=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
memused=$(awk '$1 == "MemTotal:" { t = $2 } $1 == "MemAvailable:" { a = $2 } END { print t - a }' \
    /proc/meminfo)
verdict="BOOTC-LIVE-VERDICT root=$(probe /) etc=$(probe /etc) var=$(probe /var)"
verdict="$verdict fstype=$fstype kernel=$(uname -r) target=$target pid1=$(cat /proc/1/comm)"
verdict="$verdict hostname=$(cat /proc/sys/kernel/hostname) memtotal=$memtotal memused=$memused"
verdict="$verdict failed=${failed:-none}"
# One write, on a line of its own (a getty prompt may be on the console): kernel messages off.
echo 1 > /proc/sys/kernel/printk
printf '\n%s\n' "$verdict" > /dev/console
sync
systemctl poweroff --force
"""

VERDICT_UNIT = """[Unit]
Description=bootc-live test: report what the live system sees, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bootc-live-verdict
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


class ImageBuildError(Exception):
    """The test image could not be built."""


@dataclass(frozen=True)
class DebianImage:
    """A built image: its OCI layout and what it holds."""

    layout: Path
    tag: str
    kver: str
    manifest_digest: str
    layers: list[dict[str, Any]]  # name, digest, size, diff_id, tar_size
    entries: int  # entries of the unpacked root
    unpacked_bytes: int  # apparent size of the unpacked root

    @property
    def source(self) -> str:
        """The SOURCE argument of `bootc-live build`."""
        return f"oci:{self.layout}:{self.tag}"

    @property
    def compressed_bytes(self) -> int:
        return sum(layer["size"] for layer in self.layers)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Log = Callable[[str], None]


def run(argv: Sequence[str | os.PathLike[str]], log: Log, **kwargs: Any) -> None:
    args = [os.fspath(a) for a in argv]
    log("+ " + shlex.join(args))
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, check=False, **kwargs)
    if proc.returncode != 0:
        raise ImageBuildError(f"command failed with status {proc.returncode}: {shlex.join(args)}")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def root_key(recipe: Recipe) -> str:
    """The package list and the code that builds the root."""
    sources = [inspect.getsource(f) for f in (debootstrap, prepare_root)]
    return _key(repr(recipe), *sources)


def image_key(recipe: Recipe) -> str:
    """The root, this whole file (layers, verdict unit, masks) and the layout writer."""
    return _key(root_key(recipe), Path(__file__).read_text(), inspect.getsource(LayoutWriter))


@contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One builder at a time per cache (a test and a benchmark may start together)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_image(
    cache: Path | None = None,
    mirror: str = MIRROR,
    log: Log = stderr_log,
    recipe: Recipe = BOOKWORM,
) -> DebianImage:
    """The image, from the cache (default CACHES/RECIPE-NAME) or built now (minutes cold)."""
    cache = cache or CACHES / recipe.name
    with locked(cache):
        root = cache / f"root-{root_key(recipe)}"
        image = cache / f"image-{image_key(recipe)}"
        if not (image / "image.json").exists():
            if not (root / "done").exists():
                build_root(root, recipe, mirror, log)
            build_image(root / "root", image, log)
        for stale in cache.iterdir():  # older recipes
            if stale.is_dir() and stale.name not in (root.name, image.name):
                log(f"removing the stale cache entry {stale}")
                shutil.rmtree(stale)
        return load_image(image)


def load_image(image: Path) -> DebianImage:
    info = json.loads((image / "image.json").read_text())
    return DebianImage(
        layout=image / "layout",
        tag=TAG,
        kver=info["kver"],
        manifest_digest=info["manifest_digest"],
        layers=info["layers"],
        entries=info["entries"],
        unpacked_bytes=info["unpacked_bytes"],
    )


# ---------------------------------------------------------------- the root


def build_root(final: Path, recipe: Recipe, mirror: str, log: Log) -> None:
    new = final.with_name(final.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    new.mkdir(parents=True)
    start = time.monotonic()
    log(f"building the Debian {recipe.suite} root in {new} (debootstrap, a few minutes)")
    debootstrap(new / "root", recipe, mirror, log)
    prepare_root(new / "root", recipe, log)
    (new / "done").write_text(f"debootstrap and prepare: {time.monotonic() - start:.0f} s\n")
    new.rename(final)


def debootstrap(root: Path, recipe: Recipe, mirror: str, log: Log) -> None:
    """debootstrap in a private mount namespace: its /proc and /sys mounts vanish with it."""
    run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "debootstrap",
            f"--variant={recipe.variant}",
            "--include=" + ",".join(recipe.include),
            recipe.suite,
            root,
            mirror,
        ],
        log,
        stdout=subprocess.DEVNULL,
    )


def prepare_root(root: Path, recipe: Recipe, log: Log) -> None:
    """Make the debootstrap root look like a bootc image: kernel in /usr/lib/modules, no cruft."""
    for rel in recipe.prune:
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.mkdir(mode=0o755)  # the directory stays, as after `apt-get clean`
        elif path.exists() or path.is_symlink():
            path.unlink()
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    # The host's initramfs-tools output is of no use: the initramfs is built by bootc-live.
    for initrd in (root / "boot").glob("initrd.img-*"):
        initrd.unlink()
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageBuildError(f"expected one kernel in {root}/boot, found {kernels}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[0], root / "usr/lib/modules" / kver / "vmlinuz")
    # Uninitialized: systemd makes one at boot (first boot), as on any image meant to be copied.
    (root / "etc/machine-id").write_bytes(b"")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    log(f"root prepared: kernel {kver}")


# ---------------------------------------------------------------- the image


def tree_figures(root: Path) -> tuple[int, int]:
    """Entries below root and the apparent size of its files and symlinks."""
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            entries += 1
            st = os.lstat(os.path.join(dirpath, name))
            if name in filenames:
                size += st.st_size
    return entries, size


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_layer(name: str, tar_argv: list[str], blobs: Path, log: Log) -> dict[str, Any]:
    """Run a tar command, gzip its output with pigz into blobs/, hashing both streams."""
    tmp = blobs / f".{name}.tmp"
    log("+ " + shlex.join(tar_argv) + " | pigz -n > " + os.fspath(tmp))
    diff = hashlib.sha256()
    tar_size = 0
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(tar_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        pigz = subprocess.Popen(["pigz", "-n"], stdin=subprocess.PIPE, stdout=out)
        assert tar.stdout is not None and pigz.stdin is not None
        try:
            while chunk := tar.stdout.read(1 << 20):
                diff.update(chunk)
                tar_size += len(chunk)
                pigz.stdin.write(chunk)
            pigz.stdin.close()
        except BrokenPipeError:
            tar.kill()  # pigz died: reported below
        if tar.wait() != 0 or pigz.wait() != 0:
            raise ImageBuildError(f"layer {name}: tar {tar.returncode}, pigz {pigz.returncode}")
    digest = sha256_file(tmp)
    tmp.rename(blobs / digest)
    return {
        "name": name,
        "digest": f"sha256:{digest}",
        "size": (blobs / digest).stat().st_size,
        "diff_id": f"sha256:{diff.hexdigest()}",
        "tar_size": tar_size,
    }


def config_layer_tar() -> bytes:
    """The last layer, as a Containerfile's last steps would make it: the verdict unit."""
    out = io.BytesIO()
    mtime = 1_700_000_000
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(path: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = kind, mode, mtime
            info.linkname = target
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for directory in (
            "etc",
            "etc/systemd",
            "etc/systemd/system",
            "etc/systemd/system/multi-user.target.wants",
            "usr",
            "usr/local",
            "usr/local/sbin",
        ):
            add(directory, tarfile.DIRTYPE, 0o755)
        add("etc/hostname", tarfile.REGTYPE, 0o644, HOSTNAME.encode() + b"\n")
        add("usr/local/sbin/bootc-live-verdict", tarfile.REGTYPE, 0o755, VERDICT_SCRIPT.encode())
        unit = "etc/systemd/system/bootc-live-verdict.service"
        add(unit, tarfile.REGTYPE, 0o644, VERDICT_UNIT.encode())
        add(
            "etc/systemd/system/multi-user.target.wants/bootc-live-verdict.service",
            tarfile.SYMTYPE,
            0o777,
            target="/" + unit,
        )
        for name in MASKED:
            add(f"etc/systemd/system/{name}", tarfile.SYMTYPE, 0o777, target="/dev/null")
    return out.getvalue()


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
            {"created": created, "created_by": f"tests/debian_image.py: {layer['name']}"}
            for layer in layers
        ],
    }


def write_image(out: LayoutWriter, layers: list[dict[str, Any]], created: str) -> str:
    """The config, manifest and index.json (tagged TAG) of these layers; the manifest digest."""
    blobs = [Layer(layer["digest"], layer["size"], layer["diff_id"]) for layer in layers]
    return out.add_image(blobs, TAG, image_config(layers, created))


def build_image(root: Path, final: Path, log: Log) -> None:
    """Three gzip layers: the OS without its kernel, the kernel and its modules, the config."""
    new = final.with_name(final.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    out = LayoutWriter(new / "layout")
    blobs = out.blobs
    log(f"building the image in {new}")
    (kver,) = [p.name for p in (root / "usr/lib/modules").iterdir()]
    tar = ["tar", "-C", os.fspath(root), *TAR_CREATE, "-cf", "-"]
    layers = [
        write_layer("os", [*tar, "--anchored", "--exclude=./usr/lib/modules", "."], blobs, log),
        write_layer(
            "kernel",
            [*tar, "--no-recursion", ".", "./usr", "./usr/lib", "--recursion", "./usr/lib/modules"],
            blobs,
            log,
        ),
    ]
    config = config_layer_tar()
    config_tar = new / "config.tar"
    config_tar.write_bytes(config)
    layers.append(write_layer("config", ["cat", os.fspath(config_tar)], blobs, log))
    config_tar.unlink()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(root.stat().st_mtime))
    digest = write_image(out, layers, created)
    entries, size = tree_figures(root)
    info = {
        "kver": kver,
        "manifest_digest": digest,
        "layers": layers,
        "entries": entries,
        "unpacked_bytes": size + len(config),
    }
    (new / "image.json").write_text(json.dumps(info, indent=2) + "\n")
    new.rename(final)
    log(
        f"image {digest[:19]}…: kernel {kver}, {entries} entries, {size / 1e6:.0f} MB unpacked, "
        f"{sum(layer['size'] for layer in layers) / 1e6:.0f} MB in {len(layers)} gzip layers"
    )
