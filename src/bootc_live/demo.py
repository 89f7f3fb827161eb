"""`bootc-live demo`: a small image from the host's own parts, built, booted live, reported."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

from . import build as build_module
from .build import BuildConfig, build
from .images import SourceRef
from .layout import LayerTar, TreeEntry, write_layout
from .runtime.errors import BootcLiveError
from .runtime.run import run
from .vm import Boot, VmConfig, boot

BUSYBOX = Path("/bin/busybox")
MARKER = "BOOTC-LIVE-REPORT"
REPORT_START = "== bootc-live demo: what the live system sees =="

# /sbin/init of the demo image: report what the live system sees, then power off.
INIT = r"""#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
probe() {
    if touch "$1/.bootc-live-probe" 2>/dev/null; then rm -f "$1/.bootc-live-probe"; echo rw
    else echo ro; fi
}
field() { awk -v m="$1" -v f="$2" '$2 == m { v = $f } END { print v }' /proc/mounts; }
mem() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
echo
echo "== bootc-live demo: what the live system sees =="
echo "kernel:   $(uname -r)"
echo "cmdline:  $(cat /proc/cmdline)"
echo "mounts:"
awk '$2 == "/" || $2 == "/etc" || $2 == "/var" { print "  " $2 " " $3 " " $4 }' /proc/mounts
echo "writable: / $(probe /), /etc $(probe /etc), /var $(probe /var)"
echo "memory:   $(($(mem MemTotal) / 1024)) MiB total," \
    "$(($(mem MemAvailable) / 1024)) MiB available"
gone=$(test -e /etc/old-motd && echo no || echo yes)
echo "image:    $(cat /etc/bootc-live-demo); /etc/old-motd whited out by layer 3: $gone"
echo "BOOTC-LIVE-REPORT root=$(probe /) etc=$(probe /etc) var=$(probe /var)" \
    "fstype=$(field / 3) rootopts=$(field / 4) etcopts=$(field /etc 4)" \
    "memtotal=$(mem MemTotal) memused=$(($(mem MemTotal) - $(mem MemAvailable)))" \
    "whiteout=$gone disks=$(awk '$1 ~ /^\/dev\/vd/ { n++ } END { print n + 0 }' /proc/mounts)"
sync
poweroff -f
"""


OS_RELEASE = (
    b'NAME="bootc-live demo"\nID=bootc-live-demo\nPRETTY_NAME="bootc-live demo (busybox)"\n'
)


def demo_layers(busybox: Path = BUSYBOX) -> list[bytes]:
    """Three layers: busybox and the directories, the report as init, a whiteout."""
    applets = run([busybox, "--list"], capture=True).stdout.split()
    base = LayerTar(
        [
            TreeEntry(d, "dir", mode=0o755)
            for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "var", "root")
        ]
    )
    base.entries[-3].mode = 0o1777  # tmp
    base.entries.append(TreeEntry("bin/busybox", data=busybox.read_bytes(), mode=0o755))
    base.entries += [
        TreeEntry(f"bin/{a}", "symlink", target="busybox", mode=0o777)
        for a in applets
        if a != "busybox"
    ]
    base.entries += [
        TreeEntry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        TreeEntry("etc/group", data=b"root:x:0:\n"),
        TreeEntry("etc/old-motd", data=b"from layer 1, removed by layer 3\n"),
        TreeEntry("usr", "dir", mode=0o755),
        TreeEntry("usr/lib", "dir", mode=0o755),
        TreeEntry("usr/lib/os-release", data=OS_RELEASE),
        TreeEntry("etc/os-release", "symlink", target="../usr/lib/os-release", mode=0o777),
    ]
    system = LayerTar(
        [
            TreeEntry("sbin/init", data=INIT.encode(), mode=0o755),
            TreeEntry("etc/bootc-live-demo", data=b"bootc-live demo image (busybox)\n"),
            TreeEntry("var/log", "dir", mode=0o755),
        ]
    )
    cleanup = LayerTar([TreeEntry("etc/old-motd", "whiteout")])
    return [base.tar(), system.tar(), cleanup.tar()]


def host_kernel() -> str:
    """The newest host kernel with its modules installed."""
    return build_module.host_kernel(None)


def parse_report(rest: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in rest.split() if "=" in item)


WROTE = ".demo-image"  # in the work directory: the digest of the demo image written there


def own_workdir(workdir: Path) -> Path:
    """The work directory, made private to this user if new, else refused unless it is
    already a real directory no one else can change. demo runs as root, by default in
    /var/tmp, where any user could make that name first and plant links for root to
    write through."""
    # The directories above it as they really are; itself never through a link.
    absolute = Path(os.path.abspath(workdir))
    workdir = Path(os.path.realpath(absolute.parent)) / absolute.name
    _check_parents(workdir)  # before making any of them
    try:
        workdir.parent.mkdir(parents=True, exist_ok=True)
        _check_parents(workdir)  # and as they are now
        workdir.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise BootcLiveError(
            f"cannot make {workdir}: {err.strerror}", "choose another --workdir"
        ) from None
    st = os.lstat(workdir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise BootcLiveError(
            f"{workdir} is not a directory of this user's that only it can write to",
            "remove it, or choose another --workdir",
        )
    return workdir


def _check_parents(workdir: Path) -> None:
    for parent in reversed(workdir.parents):
        if not _others_cannot_change(parent):
            raise BootcLiveError(
                f"{parent} can be changed by other users, so {workdir} under it is not safe "
                "for demo to write in",
                "choose a --workdir under directories only this user or root can write to",
            )


def _others_cannot_change(directory: Path) -> bool:
    """Whether only this user (or root) can rename or replace entries in `directory`: owned
    by one of them, and writable by no one else unless sticky (as /tmp and /var/tmp are)."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return True  # made by this run, as this user
    if st.st_uid not in (0, os.geteuid()):
        return False
    return not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX)


def fresh_image_dir(workdir: Path) -> Path:
    """WORKDIR/image, empty: the demo image an earlier run wrote there is removed (its index
    names the digest that run recorded); anything else at that name is refused."""
    image = workdir / "image"
    if not os.path.lexists(image):
        return image
    try:
        listed = json.loads((image / "index.json").read_text())["manifests"]
        ours = [m["digest"] for m in listed] == [(workdir / WROTE).read_text().strip()]
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if image.is_symlink() or not ours:
        raise BootcLiveError(
            f"{image} is not a demo image an earlier run wrote, and demo would replace it",
            "move it away, or choose another --workdir",
        )
    shutil.rmtree(image)
    return image


def run_demo(workdir: Path, mem: int, flavour: str, verbose: bool) -> int:
    workdir = own_workdir(workdir)
    for tool, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("dracut", "dracut"),
        (str(BUSYBOX), "busybox-static"),
    ):
        if shutil.which(tool) is None:
            raise BootcLiveError(f"{tool} is missing", f"apt-get install {package} (or ./setup)")
    kver = host_kernel()
    say = print
    image = fresh_image_dir(workdir)
    digest = write_layout(image, demo_layers(), "demo")
    (workdir / WROTE).write_text(digest + "\n")
    say(f"bootc-live demo: 1/3 demo image {digest[:19]}… (busybox, 3 layers) in {workdir}/image")
    artifacts = workdir / "artifacts"
    build(
        BuildConfig(
            SourceRef("oci", str(workdir / "image"), "demo"),
            artifacts,
            host=True,
            kver=kver,
            flavour=flavour,
        )
    )
    say(f"bootc-live demo: 2/3 artifacts in {artifacts} (kernel {kver}, {flavour} initramfs)")
    say(
        f"bootc-live demo: 3/3 booting it live in QEMU with {mem} MiB "
        f"(console: {workdir}/console.log)"
    )
    result = boot(
        VmConfig(artifacts, mem=mem),
        timeout=600,
        markers=(MARKER,),
        echo=sys.stdout if verbose else None,
        log=workdir / "console.log",
    )
    return report(result)


def report(result: Boot) -> int:
    lines = result.output.replace("\r", "").splitlines()
    shown = [ln[ln.index("bootc-live: ") :] for ln in lines if "bootc-live: " in ln]
    if REPORT_START in lines:
        shown += lines[lines.index(REPORT_START) :]
    print("\n".join(ln for ln in shown if MARKER not in ln))
    if MARKER not in result.markers:
        said = result.output.strip().splitlines()
        why = f": {said[-1].strip()}" if result.ended == "qemu" and said else ""
        print(
            f"bootc-live demo: FAILED: the live system did not come up ({result.ended} after "
            f"{result.seconds:.0f}s{why}); see the console log",
            file=sys.stderr,
        )
        return 1
    seen = parse_report(result.markers[MARKER])
    ok = seen.get("root") == "ro" and seen.get("etc") == "rw" and seen.get("var") == "rw"
    verdict = "OK" if ok else "FAILED"
    print(
        f"bootc-live demo: {verdict}: booted live in {result.seconds:.0f}s; root "
        f"{seen.get('fstype')} {seen.get('root')}, /etc {seen.get('etc')}, /var {seen.get('var')}"
    )
    return 0 if ok else 1
