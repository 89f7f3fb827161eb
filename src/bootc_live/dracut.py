"""The dracut side of the host: export our modules and build an initramfs with them."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path

from . import pack, scratch, toolfiles
from .runtime.errors import BootcLiveError, shown
from .runtime.mounts import within
from .runtime.run import CommandError, run
from .runtime.sources import kind_of

PACKAGE = Path(__file__).resolve().parent
MODULES = (
    "90bootc-live",
    "90bootc-live-net",
    "90bootc-live-zram",
    "90bootc-live-erofs",
    "90bootc-live-kexec",
)
# Our modules beyond the core one: each is included when the userland that builds the
# initramfs has what it needs (checked by `optional_modules`).
OPTIONAL_MODULES = (
    "bootc-live-net",
    "bootc-live-zram",
    "bootc-live-erofs",
    "bootc-live-kexec",
)
FLAVOURS = ("systemd", "shell")
SYSTEMD_MODULES = ("systemd", "systemd-initrd", "dracut-systemd")
HOST_DRACUT = Path("/usr/lib/dracut")
# The host's initramfs as zstd when its kernel unpacks zstd (dracut's own default there is
# `pigz -9`): at level 9 zstd makes a smaller file than pigz -9 in a fraction of its time
# (bench/initramfs; bench/README.md). dracut itself falls back to its default for a kernel
# without CONFIG_RD_ZSTD, with a warning: `host_compress` asks only when it need not.
HOST_COMPRESS = "zstd -q -9 -T0"
# dracut in the image runs with the image's environment, not the host's: the host's TMPDIR,
# PATH (a venv's) or dracutbasedir mean nothing inside the chroot.
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


def host_flavour() -> str:
    """systemd when the host's dracut can build a systemd initrd, else the shell flavour."""
    return "systemd" if Path("/usr/lib/systemd/systemd").exists() else "shell"


def export_modules(dest: Path) -> list[Path]:
    """Write self-contained dracut module directories (runtime included) into `dest`, each
    made whole beside its place and then renamed there: a failed or interrupted export leaves
    no half-written module for dracut to take, and one there before is replaced, not merged
    into (a file of an older version would stay in the initramfs)."""
    scratch.make_parents(dest / MODULES[0])
    out = []
    for name in MODULES:
        new = Path(scratch.make_dir(f".{name}.new-", os.fspath(dest)))
        shutil.copytree(PACKAGE / "dracut" / name, new, dirs_exist_ok=True)
        if name == MODULES[0]:  # the runtime, in the core module only
            python = new / "python" / "bootc_live"
            (python / "runtime").mkdir(parents=True)
            shutil.copy2(PACKAGE / "__init__.py", python / "__init__.py")
            for source in sorted((PACKAGE / "runtime").glob("*.py")):
                shutil.copy2(source, python / "runtime" / source.name)
        _put(new, dest / name)
        out.append(dest / name)
    return out


def _put(new: Path, target: Path) -> None:
    """Rename the directory `new` to `target`, whatever was there moved aside and removed
    (kept, under its aside name, if the command is cut short between the two renames)."""
    if not os.path.lexists(target):
        os.rename(new, target)
        scratch.done(new)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    scratch.remove(old)  # what an export cut short there left
    os.rename(target, old)
    os.rename(new, target)
    scratch.done(new)
    scratch.track(old)
    scratch.remove(old)


def dracut_argv(
    kver: str,
    flavour: str,
    output: str,
    *,
    minimal: bool,
    confdir: str = "",
    includes: Sequence[tuple[str, str]] = (),
    optional: Sequence[str] = OPTIONAL_MODULES,
    compress: str | None = None,
) -> list[str]:
    """The dracut command line for an initramfs with the bootc-live modules.

    `minimal` (used with the host's dracut) includes only what a live boot needs and ignores the
    host's configuration (`confdir` is an empty directory); otherwise the image's own dracut
    configuration decides the rest and bootc-live is added to it. `compress`: dracut's
    --compress (its default, or the image's configuration's, without).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown initramfs flavour {flavour!r}")
    argv = ["dracut", "--force", "--no-hostonly", "--kver", kver]
    ours = " ".join(["bootc-live", *optional])
    if minimal:
        # The host's dracut.conf.d is about the host's own boot: ignore it.
        # qemu, qemu-net: the virtio drivers `bootc-live vm` needs (host builds are for QEMU).
        if flavour == "systemd":
            modules = [*SYSTEMD_MODULES, "systemd-networkd", "qemu qemu-net", ours]
        else:
            modules = ["network-legacy", "qemu qemu-net", ours]
        argv += ["--conf", "/dev/null", "--confdir", confdir, "--modules", " ".join(modules)]
    else:
        # An image's uefi=yes would make the output a UEFI executable, not an initramfs.
        argv += ["--no-uefi", "--add", ours]
    if flavour == "shell":
        argv += ["--omit", " ".join(SYSTEMD_MODULES)]
    for source, target in includes:
        argv += ["--include", source, target]
    if compress:
        argv += ["--compress", compress]
    return [*argv, output]


def host_dracut_tree(workdir: Path) -> Path:
    """A dracut base directory: the host's, with our modules added (the host is not changed)."""
    base = workdir / "dracut"
    (base / "modules.d").mkdir(parents=True)
    for entry in HOST_DRACUT.iterdir():
        if entry.name != "modules.d":
            (base / entry.name).symlink_to(entry)
    for module in (HOST_DRACUT / "modules.d").iterdir():
        if module.name not in MODULES:
            (base / "modules.d" / module.name).symlink_to(module)
    export_modules(base / "modules.d")
    return base


def host_compress(kver: str, root: Path = Path("/")) -> str | None:
    """HOST_COMPRESS when this machine has zstd and kernel `kver`'s config (under `root`) says
    it unpacks a zstd initramfs; else None (dracut's default)."""
    config = pack.kernel_config(root, kver)
    if config is None or "CONFIG_RD_ZSTD" not in config.enabled:
        return None
    return HOST_COMPRESS if shutil.which("zstd") else None


def build_with_host(
    kver: str,
    flavour: str,
    output: Path,
    workdir: Path,
    includes: Sequence[tuple[Path, str]] = (),
) -> None:
    """Build the initramfs with the host's dracut, kernel modules and Python."""
    if not (Path("/lib/modules") / kver).is_dir():
        raise BootcLiveError(
            f"no modules for kernel {kver} in /lib/modules",
            "install the kernel package, or give another --kver",
        )
    base = host_dracut_tree(workdir)
    confdir = workdir / "dracut.conf.d"
    confdir.mkdir()
    # dracut's scratch space (100 MiB and more) inside the work directory: an interrupted
    # build removes it with the rest (dracut, killed, cannot clean up after itself).
    scratch = workdir / "tmp"
    scratch.mkdir()
    env = {**os.environ, "dracutbasedir": str(base), "TMPDIR": str(scratch)}
    run(
        dracut_argv(
            kver,
            flavour,
            str(output),
            minimal=True,
            confdir=str(confdir),
            includes=[(str(src), dst) for src, dst in includes],
            optional=optional_modules(Path("/"), "the host's"),
            compress=host_compress(kver),
        ),
        env=env,
        hint="see the dracut output above; install dracut and the kernel's modules",
    )


def _has_binary(root: Path, name: str) -> bool:
    """Whether the userland at `root` has the command (its links followed inside it: an
    image's absolute link names its own file, not the host's)."""
    return any(toolfiles.has(root, f"{d}/{name}") for d in ("usr/sbin", "usr/bin", "sbin", "bin"))


def check_userland(root: Path) -> None:
    """The image's dracut and python3, which make its initramfs: a missing one stops the
    build before the work, named, instead of after it in dracut's words ("exec: dracut: not
    found"; without python3, "module 'bootc-live' cannot be found or installed")."""
    where = [d.lstrip("/") for d in IMAGE_ENV["PATH"].split(":")]
    missing = [
        n for n in ("dracut", "python3") if not any(toolfiles.has(root, f"{d}/{n}") for d in where)
    ]
    if missing:
        raise BootcLiveError(
            f"the image has no {' and no '.join(missing)}: bootc-live build makes the "
            "initramfs with the image's own dracut and python3 (docs/live-ready.md)",
            f"install {' and '.join(missing)} in the image (Debian: "
            f"{' '.join('dracut-core' if n == 'dracut' else n for n in missing)}), "
            "or build with --host",
        )


def optional_modules(root: Path, whose: str, omitted: Collection[str] = ()) -> list[str]:
    """Our optional modules that the userland at `root` can build; a note for each other one.
    `omitted`: the dracut modules its configuration leaves out (omit_dracutmodules)."""
    modules_d = "usr/lib/dracut/modules.d"
    network_omitted = sorted({"network", "url-lib"} & set(omitted))
    can = {
        # dracut's network and url-lib modules, and curl for url-lib
        # (registries too: the runtime holds their client)
        "bootc-live-net": toolfiles.has(root, f"{modules_d}/40network", "dir")
        and toolfiles.has(root, f"{modules_d}/45url-lib", "dir")
        and _has_binary(root, "curl")
        and not network_omitted,
        "bootc-live-zram": _has_binary(root, "mkfs.ext4"),
        "bootc-live-erofs": _has_binary(root, "mkfs.erofs"),
        "bootc-live-kexec": _has_binary(root, "kexec"),
    }
    without = {
        "bootc-live-net": "cannot bring up a network (it needs dracut's network and url-lib "
        "modules and curl, e.g. dracut-network): its initramfs boots embedded images only",
        "bootc-live-zram": "has no mkfs.ext4 (e2fsprogs): its initramfs cannot use bootc.zram",
        "bootc-live-erofs": "has no mkfs.erofs (erofs-utils): its initramfs cannot use "
        "bootc.live.erofs",
        "bootc-live-kexec": "has no kexec (kexec-tools): its initramfs cannot use bootc.kexec",
    }
    if network_omitted:
        without["bootc-live-net"] = (
            f"dracut configuration omits {' and '.join(network_omitted)} (omit_dracutmodules): "
            "its initramfs boots embedded images only"
        )
    for name in OPTIONAL_MODULES:
        if not can[name] and name in without:
            print(f"bootc-live: {whose} userland {without[name]}", file=sys.stderr)
    return [name for name in OPTIONAL_MODULES if can[name]]


def build_in_image(
    root: Path,
    kver: str,
    flavour: str,
    output: Path,
    includes: Sequence[tuple[Path, str]] = (),
) -> None:
    """Build the initramfs with the image's own dracut, kernel modules and Python (chroot).

    Nothing is written through a name the image chose: our modules, the included files and
    dracut's output go into a new directory of our own at the top of the tree (`stage`), and
    the modules are copied into the image's dracut from inside the chroot, where the image's
    links lead into the image (an absolute link at var/tmp or modules.d/90bootc-live led onto
    the host's files)."""
    stage = new_stage(root)
    inside = "/" + stage.name
    export_modules(stage / "modules.d")
    staged = []
    for number, (source, target) in enumerate(includes):
        shutil.copy2(source, stage / f"include-{number}")
        staged.append((f"{inside}/include-{number}", target))
    optional = optional_modules(root, "the image's", omitted_modules(root))
    argv = dracut_argv(
        kver, flavour, f"{inside}/initrd.img", minimal=False, includes=staged, optional=optional
    )
    # dracut's own (an image's dracut.conf may name a tmpdir=, missing too): ours
    (stage / "tmp").mkdir()
    argv[-1:-1] = ["--tmpdir", f"{inside}/tmp"]
    # Whatever the image has at our modules' names (an older copy, a link) is replaced.
    install = (
        'set -e; d=/usr/lib/dracut/modules.d; mkdir -p "$d"; '
        'for m in "$1"/*; do rm -rf "$d/${m##*/}"; done; cp -R "$1"/. "$d"/; shift; exec "$@"'
    )
    try:
        in_image(
            root,
            ["sh", "-c", install, "sh", f"{inside}/modules.d", *argv],
            hint="the image needs dracut, python3 and its kernel's modules to build its "
            "initramfs; or use --host --kver KVER",
        )
        shutil.move(str(stage / "initrd.img"), output)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def new_stage(root: Path) -> Path:
    """A new directory of the build's own at the top of the image's tree (made with mkdir:
    nothing the image planted is there); inside the image it is "/" + its name."""
    return Path(tempfile.mkdtemp(prefix=".bootc-live-", dir=root))


def omitted_modules(root: Path) -> set[str]:
    """The dracut modules the image's dracut configuration omits: its config files sourced
    as its dracut sources them, in its chroot. An --add of a module that depends on one of
    them fails the whole build ("module bootc-live-net cannot be found or installed")."""
    show = (
        "for f in /etc/dracut.conf /usr/lib/dracut/dracut.conf.d/*.conf "
        '/etc/dracut.conf.d/*.conf; do [ -f "$f" ] && . "$f" > /dev/null 2>&1; done; '
        'echo "$omit_dracutmodules"'
    )
    try:
        # bash, as dracut (its files use +=); sh where there is none
        pick = 'if command -v bash > /dev/null; then exec bash -c "$1"; fi; exec sh -c "$1"'
        said = in_image(root, ["sh", "-c", pick, "sh", show], hint="", capture=True)
    except CommandError:
        return set()  # dracut's own run then says what is wrong with its configuration
    return set(said.split())


MOUNT_POINTS = ("dev", "proc", "sys", "run")


def mount_points(root: Path) -> list[str]:
    """Where /dev, /proc, /sys and /run are in the image's tree, relative to `root`: a missing
    one made (a directory of ours), a link followed inside the tree (as the chroot follows it;
    var/run -> ../run is the usual shape). What is not a directory of the tree's own there is
    refused, named: a dangling link, a file, a FIFO, a link to the tree's top or to another of
    them (/proc -> /, /dev -> ../../..), which were mounted over or made through on the
    host's side (the link followed outside the tree) or were a traceback."""
    places: list[str] = []
    for name in MOUNT_POINTS:
        path = root / name
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
        where = within(str(root), name)
        why = None
        if where is None:
            why = f"is a link to nothing in the image ({shown(os.readlink(path))})"
        elif where == "":
            why = "is a link to the image's top (/)"
        elif not os.path.isdir(os.path.join(root, where)):
            why = f"is not a directory ({kind_of(os.lstat(os.path.join(root, where)).st_mode)})"
        elif any(
            where == other or where.startswith(other + "/") or other.startswith(where + "/")
            for other in places
        ):
            why = f"leads to /{shown(where)}, where another of /dev, /proc, /sys, /run is"
        if why:
            raise BootcLiveError(
                f"the image's /{name} {why}: bootc-live build mounts the kernel's "
                f"/{name} there to run the image's dracut",
                f"make /{name} a directory in the image (rm /{name} && mkdir /{name}), "
                "or build with --host",
            )
        assert where is not None
        places.append(where)
    return places


def in_image(
    root: Path, argv: Sequence[str], *, hint: str, cwd: str = "/", capture: bool = False
) -> str:
    """Run a command in the image's userland: chrooted, in a private mount namespace with
    /dev, /proc, /sys and /run mounted, in the image's environment, from `cwd` inside it;
    what it printed with `capture`."""
    dev, proc, sys_, run_ = mount_points(root)
    script = (
        'set -e; r="$1"; d="$2"; '
        'mount --rbind /dev "$r/$3"; mount -t proc proc "$r/$4"; '
        'mount -t sysfs sysfs "$r/$5"; mount -t tmpfs tmpfs "$r/$6"; shift 6; '
        'exec chroot "$r" /bin/sh -c \'cd "$1" && shift && exec "$@"\' sh "$d" "$@"'
    )
    # A PID namespace too: when the build is interrupted (unshare killed), its child is
    # killed (--kill-child) and with it everything the image's programs started, which in a
    # mount namespace alone outlived it (a cp blocked on a FIFO the image planted).
    namespace = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork"]
    namespace += ["--kill-child"]
    # TMPDIR: a new directory of ours (the image's /var/tmp may be missing, as in images
    # that leave it to systemd-tmpfiles: dracut's "Invalid tmpdir '/var/tmp'", lsinitrd's
    # mktemp failed)
    tmp = new_stage(root)
    try:
        done = run(
            [*namespace, "sh", "-c", script, "sh", root, cwd, dev, proc, sys_, run_, *argv],
            env={**IMAGE_ENV, "TMPDIR": "/" + tmp.name},
            hint=hint,
            capture=capture,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done.stdout or ""
