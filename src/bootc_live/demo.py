"""`bootc-live demo`: a small image from the host's own parts, built, booted live, reported."""

from __future__ import annotations

import shutil
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
    "whiteout=$gone"
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


def run_demo(workdir: Path, mem: int, flavour: str, verbose: bool) -> int:
    for tool, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("dracut", "dracut"),
        (str(BUSYBOX), "busybox-static"),
    ):
        if shutil.which(tool) is None:
            raise BootcLiveError(f"{tool} is missing", f"apt-get install {package} (or ./setup)")
    kver = host_kernel()
    say = print
    shutil.rmtree(workdir / "image", ignore_errors=True)
    digest = write_layout(workdir / "image", demo_layers(), "demo")
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
        print(
            f"bootc-live demo: FAILED: the live system did not come up ({result.ended} after "
            f"{result.seconds:.0f}s); see the console log",
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
