"""The host command line: build, inspect, pull, vm, demo, unpack, erofs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import io
import os
import secrets
import shutil
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from . import (
    auth,
    build,
    carried,
    demo,
    describe,
    dracut,
    hostpolicy,
    pack,
    pushpacked,
    scratch,
    vm,
)
from .images import HOST_POLICY, TRANSPORTS, RegistryOptions, SourceRef, UsageError
from .progress import Ticker, bytes_progress, say
from .runtime import cmdline, handover, memory, registry, roots
from .runtime import run as run_module
from .runtime.errors import (
    BootcLiveError,
    ImageError,
    Stopped,
    console_line,
    for_host,
    shown,
    stopping,
)
from .runtime.oci import Image, Platform, all_manifests, offered_platforms
from .runtime.policy import DEFAULT_PATH as POLICY_PATH
from .runtime.registriesd import DEFAULT_DIR as REGISTRIES_D
from .runtime.run import CommandError
from .runtime.sources import NOT_A_FILE, open_file
from .runtime.unpack import unpack_image

MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class _DestBefore:
    """An existing DEST as it was: what the image's root entry (`./`) sets on it is undone
    when the unpack fails."""

    mode: int
    uid: int
    gid: int
    times: tuple[int, int]  # atime, mtime in ns
    xattrs: dict[str, bytes]

    @classmethod
    def of(cls, path: str) -> _DestBefore:
        st = os.lstat(path)
        xattrs = {name: os.getxattr(path, name) for name in _xattr_names(path)}
        return cls(
            st.st_mode & 0o7777, st.st_uid, st.st_gid, (st.st_atime_ns, st.st_mtime_ns), xattrs
        )

    def restore(self, path: str) -> None:
        with contextlib.suppress(OSError):
            for name in _xattr_names(path):
                if name not in self.xattrs:
                    os.removexattr(path, name)
            for name, value in self.xattrs.items():
                os.setxattr(path, name, value)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, self.mode)  # after chown, which clears set-id bits
            os.utime(path, ns=self.times)


def _xattr_names(path: str) -> list[str]:
    try:
        return os.listxattr(path)
    except OSError:  # a file system without xattrs
        return []


def _prepare_dest(dest: str) -> _DestBefore | None:
    """Make sure DEST exists and is empty; None when we created it, else how it was."""
    if not dest:
        raise UsageError("DEST is empty", "give a new or empty directory")
    if not os.path.lexists(dest) and os.path.basename(dest.rstrip("/")) in (".", ".."):
        raise UsageError(f"{dest} names no new directory", "give a new or empty directory")
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise UsageError(
                f"{dest} exists and is not a directory", "give a new or empty directory"
            )
        if os.listdir(dest):
            raise UsageError(f"{dest} is not empty", "give a new or empty directory")
        return _DestBefore.of(dest)
    scratch.make_parents(dest)
    scratch.track(dest)  # until it holds the whole image
    os.mkdir(dest)
    os.chmod(dest, 0o755)  # what the root is when the image does not say, whatever the umask
    return None


def _discard(dest: str, before: _DestBefore | None) -> None:
    """Remove a partially unpacked tree, so nobody mistakes it for the image; a DEST that was
    there is left empty, as it was."""
    if before is None:
        scratch.remove(dest)
        return
    for name in os.listdir(dest):
        scratch.remove(Path(dest, name))
    before.restore(dest)


def cmd_unpack(args: argparse.Namespace) -> int:
    _need_root("unpack")
    image = trusted_image(args)
    source = image.source
    try:
        before = _prepare_dest(args.dest)
    except BaseException:
        source.close()
        raise
    try:
        stats = unpack_image(
            image,
            args.dest,
            progress=bytes_progress(image.compressed_size, len(image.layers), args.quiet),
        )
    except BaseException:
        _discard(args.dest, before)
        raise
    finally:
        source.close()
    scratch.done(args.dest)
    if not args.quiet:
        print(
            f"bootc-live: unpacked {image.manifest_digest} into {args.dest}: "
            f"{stats.layers} layers, {stats.entries} entries, "
            f"{stats.bytes_written >> 20} MiB in {stats.seconds:.1f}s ({stats.decompressor})",
            file=sys.stderr,
        )
    return 0


def trusted_image(args: argparse.Namespace) -> Image:
    """SOURCE's image, accepted by the policy (checked before any layer is read); its source is
    the caller's to close."""
    ref = source_ref(args)
    image = ref.resolve(args.platform, getattr(args, "digest", None))
    try:
        hostpolicy.judge(ref, image, trust_options(args), _say_unless(args))
    except BaseException:
        image.source.close()
        raise
    return image


def trust_options(args: argparse.Namespace) -> hostpolicy.TrustOptions:
    return hostpolicy.TrustOptions(
        policy=args.policy,
        insecure=args.insecure_policy,
        registries_d=args.registries_d,
        identity=getattr(args, "identity", None),
    )


def _say_unless(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda _message: None) if getattr(args, "quiet", False) else say


def source_ref(args: argparse.Namespace) -> SourceRef:
    """SOURCE, with the registry options of the command line."""
    policy = dataclasses.replace(
        HOST_POLICY,
        retries=HOST_POLICY.retries if args.retries is None else args.retries,
        stall=args.timeout or HOST_POLICY.stall,
        max_backoff=HOST_POLICY.max_backoff if args.retries is None else 30.0,
    )
    ref = SourceRef.parse(
        args.source,
        RegistryOptions(
            auth_file=args.auth_file,
            ca=args.ca,
            unsecure=args.unsecure,
            mirrors=tuple(host for hosts in args.mirror for host in hosts),
            policy=policy,
            compress_copies=args.command in ("build", "pull"),
        ),
    )
    if ref.transport == "docker" and getattr(args, "identity", None):
        raise UsageError(
            f"--identity names SOURCEs that have no registry name; {ref} is checked as itself",
            "leave --identity out",
        )
    return ref


def _publish_new(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`, which must still be new (or, for a layout, an empty
    directory): what appeared there since the command began (another pull's) is kept."""
    taken = UsageError(f"{target} exists", "give a new path")
    try:
        if tmp.is_dir():
            if target.is_dir() and not target.is_symlink():
                target.rmdir()  # empty when checked; not empty now fails
            os.rename(tmp, target)  # onto a file, or a directory not empty, fails
            return
        try:
            os.link(tmp, target)  # never replaces
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if os.path.lexists(target):  # a file system without hard links: check, rename
                raise taken from None
            os.rename(tmp, target)
            return
        os.unlink(tmp)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as err:
        raise taken from err
    except OSError as err:
        if err.errno != errno.ENOTEMPTY:
            raise
        raise taken from None


def cmd_pull(args: argparse.Namespace) -> int:
    """Copy an image into an oci-archive or an OCI layout, every blob verified."""
    if not args.output.startswith(("oci:", "oci-archive:")):
        raise UsageError(
            f"-o {shown(args.output)}: pull writes oci-archive:PATH[:TAG] or oci:DIR[:TAG]",
            "e.g. -o oci-archive:image.tar",
        )
    dest = SourceRef.parse(args.output)
    if dest.transport not in ("oci", "oci-archive"):
        raise UsageError("pull writes oci-archive:PATH[:TAG] or oci:DIR[:TAG]", "fix -o")
    target = Path(dest.path)
    if target.name in ("", ".."):  # `.`, `/`: no name to write a new one beside, renamed
        raise UsageError(
            f"-o {shown(args.output)}: {shown(dest.path)} names no new path",
            "end it in the name of a new file or directory",
        )
    archive = dest.transport == "oci-archive"
    if target.exists() and (archive or not target.is_dir() or any(target.iterdir())):
        raise UsageError(
            f"{target} exists", f"give a new path{'' if archive else ' (or an empty directory)'}"
        )
    parent = target.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{parent} is not a directory", "create it, or fix -o")
    ref = source_ref(args)
    image = ref.resolve(args.platform, args.digest)
    # Its own name: a second pull to the same path must not write into this one's file.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.bootc-live-pull")
    try:
        checked = hostpolicy.check(ref, image, trust_options(args), say)
        label = dest.tag or (ref.tag if ref.transport == "docker" else None) or "latest"
        entries, documents = carried.entries(image, checked.found)
        index = handover.index_json(image, label, None, top=image.top, carried=entries)
        scratch.remove(tmp)
        scratch.track(tmp)
        progress = bytes_progress(image.compressed_size, len(image.layers))
        if dest.transport == "oci":
            build.write_oci_layout(image, index, tmp, progress, documents)
        else:
            build.write_oci_archive(image, index, tmp, progress, documents)
        _publish_new(tmp, target)
        scratch.done(tmp)
    except BaseException:
        scratch.remove(tmp)
        raise
    finally:
        image.source.close()
    count = len(checked.found)
    kept = f" with {count} signature{'s' if count > 1 else ''}" if count else ""
    print(f"{image.manifest_digest}  {dest.transport}:{target}:{label}{kept}")
    return 0


def add_image_selection(p: argparse.ArgumentParser, digest: bool = True) -> None:
    """Which image of SOURCE: --platform, and the --digest it must have."""
    p.add_argument(
        "--platform",
        type=_platform,
        default=None,
        metavar="OS/ARCH[/VARIANT]",
        help="the platform to pick from a multi-platform index (default: this machine)",
    )
    if digest:
        p.add_argument(
            "--digest",
            default=None,
            metavar="sha256:HEX",
            help="the manifest digest the image must have",
        )


def add_registry_options(p: argparse.ArgumentParser, ca: bool = True) -> None:
    """How docker:// SOURCEs are reached (registry credentials, CA, mirrors)."""
    p.add_argument(
        "--authfile",
        "--auth-file",
        dest="auth_file",
        metavar="FILE",
        help="registry credentials (a containers auth.json); default: $REGISTRY_AUTH_FILE if "
        "set, else where podman, skopeo and docker keep them, the first with an entry for the "
        "registry: $XDG_RUNTIME_DIR/containers/auth.json, /run/containers/UID/auth.json, "
        "$XDG_CONFIG_HOME/containers/auth.json (~/.config), $DOCKER_CONFIG/config.json "
        "(~/.docker); credHelpers and credsStore run docker-credential-NAME",
    )
    if ca:
        p.add_argument(
            "--ca",
            type=_readable_file,
            metavar="FILE",
            help="a CA bundle to trust for https, besides the system's",
        )
    p.add_argument(
        "--unsecure",
        action="store_true",
        help="allow plain http and unverified TLS for the registry",
    )
    p.add_argument(
        "--mirror",
        action="append",
        type=_mirror,
        default=[],
        metavar="HOST[:PORT]",
        help="a registry mirror to try first (repeatable; it never gets the registry's "
        "credentials)",
    )
    p.add_argument(
        "--retries",
        type=_count,
        metavar="N",
        help=f"retries of a failed connection (default {HOST_POLICY.retries}, with short "
        "backoff: a registry that is down fails within seconds)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"how long a connection may stall (default {HOST_POLICY.stall:.0f})",
    )


def add_trust_options(
    p: argparse.ArgumentParser, build: bool = False, identity: bool = True
) -> None:
    """Which signatures SOURCE's image needs (containers-policy.json), checked before any of
    its layers is read (docs/signatures.md); `identity`: SOURCE may have no registry name."""
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="the signature policy SOURCE must satisfy (containers-policy.json); default: "
        f"{POLICY_PATH} when it exists, else nothing is checked"
        + (
            ". build also puts FILE into the initramfs, with the registries.d files and "
            "every key FILE names, and the boot enforces it"
            if build
            else ""
        ),
    )
    p.add_argument(
        "--insecure-policy",
        action="store_true",
        help="check no signature (not even the default policy's)",
    )
    p.add_argument(
        "--registries-d",
        metavar="DIR",
        help=f"where signatures are kept (containers-registries.d); default {REGISTRIES_D}",
    )
    if not identity:
        return
    p.add_argument(
        "--identity",
        type=_identity,
        metavar="REF",
        help="the registry name (HOST/PATH:TAG) an oci:, oci-archive:, URL, docker-archive: or "
        "containers-storage: SOURCE was signed as: the policy's docker scopes and signedIdentity "
        "rules apply to it"
        + (" (build writes it as bootc.identity=REF, as it does docker://REF)" if build else ""),
    )


def cmd_build(args: argparse.Namespace) -> int:
    _need_root("build")
    if not args.output:  # not the current directory: a path that was meant to be given
        raise UsageError("-o is empty", "name the output directory")
    out = build.build(
        build.BuildConfig(
            source_ref(args),
            Path(args.output),
            host=args.host,
            kver=args.kver,
            flavour=args.flavour,
            ca=Path(args.ca) if args.ca else None,
            auth_file=Path(args.auth_file) if args.auth_file else None,
            auth_registries=tuple(args.auth_registries),
            trust=trust_options(args),
            pack=args.pack,
            platform=args.platform,
            digest=args.digest,
        )
    )
    for name in sorted(p.name for p in out.iterdir()):
        size = (out / name).stat().st_size
        print(f"{out / name}  {size / (1 << 20):.1f} MiB")
    return 0


def say_out(line: str) -> None:
    """A line of a report on stdout (inspect's): what it quotes of an image (annotations,
    names, a recorded packed root's format) escaped, one line, as every sentence is."""
    print(console_line(line))


def cmd_inspect(args: argparse.Namespace) -> int:
    ref = source_ref(args)
    image = ref.resolve(args.platform, args.digest)
    source = image.source
    try:
        say_out(f"image     {image.manifest_digest}")
        if image.top.digest != image.manifest_digest:
            say_out(f"signed    {image.top.digest} (the index SOURCE names)")
        platforms = platform_list(image) or [_config_platform(image)]
        say_out(f"platforms {', '.join(shown(p) for p in platforms)}")  # the image's own words
        say_out(f"config    {image.config_digest}")
        options = trust_options(args)
        found = hostpolicy.gather(ref, image, options, say)
        checked = hostpolicy.Checked(image, found or (), None)
        for line in hostpolicy.signature_lines(checked, options, ref):
            say_out(line)
        sys.stdout.flush()
        verdict = hostpolicy.judge(ref, image, options, lambda _message: None, found)
        say_out(f"policy    {verdict.line() if verdict else options.not_checked()}")
        if args.measure:
            facts = describe.describe(
                image, bytes_progress(image.compressed_size, len(image.layers))
            )
        else:
            facts = describe.recorded(image)
        for i, layer in enumerate(image.layers):
            size = (
                ""
                if facts.layer_sizes is None
                else f", {facts.layer_sizes[i] / MIB:.1f} MiB unpacked"
            )
            say_out(
                f"layer {i + 1}/{len(image.layers)} {layer.digest}  {layer.size / MIB:.1f} MiB "
                f"{'uncompressed' if layer.plain_tar else 'compressed'}{size}"
            )
        unpacked = (
            ""
            if facts.layer_sizes is None
            else f", {sum(facts.layer_sizes) / MIB:.1f} MiB unpacked"
        )
        say_out(f"total     {image.compressed_size / MIB:.1f} MiB {image.blobs_are}{unpacked}")
        kernels = ", ".join(map(shown, facts.kernels)) if facts.kernels is not None else None
        say_out(f"kernels   {kernels or 'none' if kernels is not None else NOT_MEASURED}")
        for line in ram_lines(image, facts):
            say_out(line)
    finally:
        source.close()
    return 0


NOT_MEASURED = "not read (--measure reads the layers)"


def _config_platform(image: Image) -> str:
    """The platform the image's config states, when no index says one."""
    config = image.config
    if not config.get("os") or not config.get("architecture"):
        return "unspecified"
    return str(
        Platform(str(config["os"]), str(config["architecture"]), str(config.get("variant") or ""))
    )


def ram_lines(image: Image, facts: describe.Description) -> list[str]:
    """The RAM each root mode needs (SPEC §5's planner), as `inspect` prints it."""
    largest = max((layer.size for layer in image.layers), default=0)
    # zram is planned from what the files take as zstd pages: as `build` recorded it (what the
    # boot plans with), else as measured now.
    zram = memory.recorded_zram(image)
    if zram is None and facts.zram is not None:
        zram = facts.zram
        recorded = {**image.index_annotations, memory.ZRAM_ANNOTATION: str(zram)}
        image = dataclasses.replace(image, index_annotations=recorded)
    as_pages = "" if zram is None else f", {zram / MIB:.0f} MiB as zstd pages (zram)"
    if facts.kernels is not None:
        how = f"measured {sum(facts.layer_sizes or ()) / MIB:.0f} MiB unpacked"
        if facts.tmpfs is not None:
            how += f" ({facts.tmpfs / MIB:.0f} MiB in a tmpfs)"
        how += as_pages
    else:
        how = f"about {facts.estimate.unpacked / MIB:.0f} MiB unpacked ({facts.estimate.how})"
        how += as_pages or ", no zram figure recorded (--measure measures one)"
    packed = memory.recorded_packed(image)  # what build packed: its size known before download
    if packed is not None:
        how += f", packed: {packed.size / MIB:.1f} MiB ({packed.format})"
    lines = [
        f"RAM       {how}; what "
        "each root mode needs besides the kernel and initramfs (+ the largest blob, "
        f"{largest / MIB:.0f} MiB, while an embedded image is unpacked):"
    ]
    modes = []
    for need in memory.alternatives(image, facts.estimate):
        steady = f", {need.steady / MIB:.0f} MiB once booted" if need.steady < need.peak else ""
        modes.append(
            (
                need.peak,
                f"{need.mode.kind:<5} about {need.peak / MIB:.0f} MiB{steady}: "
                + need.mode.option(),
            )
        )
    if packed is not None:
        modes.append(
            (
                packed.need(),
                f"packed about {packed.need() / MIB:.0f} MiB: root=bootc-live:packed:… "
                f"bootc.packed.sha256={packed.sha256} (cmdline-packed.txt)",
            )
        )
    return lines + [f"  {line}" for _, line in sorted(modes)]


def _output_file(given: str, with_record: bool = False) -> Path:
    """-o FILE of erofs and pack: a file (new, or a regular file replaced) in a directory that
    exists, checked before the image is read; `with_record`: FILE.json too (pack's record).
    A device or a link there is refused: renamed over, /dev/null would be a file."""
    if not given:  # not the current directory: a path that was meant to be given
        raise UsageError("-o is empty", "give a file in an existing directory")
    output = Path(os.path.abspath(given))
    if not output.parent.is_dir() or output.is_dir():
        raise UsageError(
            f"-o {given}: {'is a directory' if output.is_dir() else 'no such directory'}",
            "give a file in an existing directory",
        )
    paths = [output, output.with_name(output.name + ".json")] if with_record else [output]
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            what = "a link" if stat.S_ISLNK(mode) else "no regular file"
            raise UsageError(
                f"-o {given}: {path} is {what}, which this would replace with a file",
                "give a new file, or a regular file to replace",
            )
    return output


def cmd_erofs(args: argparse.Namespace) -> int:
    """Make the EROFS image a bootc.live.erofs boot makes, and print its sha256."""
    _need_root("erofs")
    if shutil.which("mkfs.erofs") is None:
        raise UsageError("mkfs.erofs is missing", "apt-get install erofs-utils (or ./setup)")
    roots.check_compressor(args.compress)  # before the unpack, not after it
    output = None if args.output is None else os.fspath(_output_file(args.output))
    image = trusted_image(args)
    source = image.source
    try:
        work = scratch.make_dir(".bootc-live-erofs-", os.path.dirname(output) if output else None)
    except BaseException:
        source.close()
        raise
    try:
        tree = os.path.join(work, "tree")
        os.mkdir(tree)
        os.chmod(tree, 0o755)  # the boot's tmpfs root, whatever the umask: the same image
        unpack_image(
            image,
            tree,
            progress=bytes_progress(image.compressed_size, len(image.layers), args.quiet),
        )
        packed = os.path.join(work, "root.erofs")
        with Ticker("packing the tree with mkfs.erofs"):
            made = roots.make_erofs(tree, packed, args.compress)
        if output:
            os.replace(packed, output)
    finally:
        source.close()
        scratch.remove(work)
    print(
        f"{made.sha256}  {output or '-'}  ({made.size / MIB:.1f} MiB, compression "
        f"{args.compress or 'none'}, mkfs.erofs {made.mkfs_version})"
    )
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    """Make the packed root of an image (packed.img) and its record; print its arguments."""
    _need_root("pack")
    output = _output_file(args.output, with_record=True)
    record = output.with_name(output.name + ".json")
    image = trusted_image(args)
    try:
        work = Path(scratch.make_dir(".bootc-live-pack-", os.fspath(output.parent)))
    except BaseException:
        image.source.close()
        raise
    try:
        packed = pack.pack_image(image, work / "packed.img", args.pack, work)
        (work / "packed.json").write_bytes(packed.record())
        os.replace(work / "packed.json", record)
        scratch.track(record)  # until FILE is there too
        os.replace(work / "packed.img", output)
        scratch.done(record)
    finally:
        image.source.close()
        scratch.remove(work)
    print(
        f"{packed.sha256}  {output}  ({packed.size / MIB:.1f} MiB, {packed.format}, {packed.tool})"
    )
    print(packed.arguments())
    return 0


def cmd_push_packed(args: argparse.Namespace) -> int:
    """Push FILE (packed.img) as the packed root artifact of the image docker://REF."""
    ref = source_ref(args)
    if ref.transport != "docker":
        raise UsageError(f"{args.source} is not in a registry", "give docker://REF")
    path = os.path.abspath(args.file)
    if not Path(path).is_file():  # else a packed.json beside it passed for its record
        what = "is not a file" if os.path.lexists(path) else "no such file"
        raise UsageError(
            f"{shown(args.file)}: {what}", "give the packed.img that bootc-live build or pack wrote"
        )
    record = pushpacked.read_record(path)
    image = trusted_image(args)
    image.source.close()
    where = registry.Reference.parse(ref.path)
    pusher = pushpacked.Pusher(
        where,
        auth.Lookup(args.auth_file)(where.registry, where.repository),
        _say_unless(args),
        unsecure=args.unsecure,
        ca=args.ca,
        policy=ref.registry.policy,
    )
    subject = {
        "mediaType": image.manifest.media_type,
        "digest": image.manifest_digest,
        "size": image.manifest.size,
    }
    done = pushpacked.push(pusher, subject, path, record)
    tag = f", listed at the tag {done.tag}" if done.tag else ""
    print(
        f"{done.manifest}  the packed root {done.layer} of {image.manifest_digest} in "
        f"{where.registry}/{where.repository}{tag}"
        + ("" if done.sent else " (its layer was there already)")
    )
    location = f"docker://{where.registry}/{where.repository}@{image.manifest_digest}"
    print(f"root=bootc-live:packed:{location} bootc.packed.sha256={done.layer}")
    return 0


def _pack_format(text: str) -> pack.PackFormat:
    try:
        return pack.PackFormat.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pack_option(text: str) -> pack.PackFormat | str:
    return "none" if text == "none" else _pack_format(text)


def platform_list(image: Image) -> list[str]:
    """The platforms the index the image was picked from offers (nested indexes included;
    buildx's attestations, unknown/unknown, are none)."""
    try:
        return sorted(set(offered_platforms(all_manifests(image.source, image.top))))
    except BootcLiveError:
        return []


def cmd_vm(args: argparse.Namespace) -> int:
    if not args.artifacts:  # not the current directory: a path that was meant to be given
        raise UsageError("DIR is empty", "give the output directory of bootc-live build")
    append = " ".join(args.append)
    with contextlib.ExitStack() as stack:
        forwards: tuple[tuple[int, int], ...] = ()
        if args.serve and any(a.startswith("root=") for a in append.split()):
            raise UsageError(
                "--serve boots the file it serves, and --append's root= another image",
                "give one of them",
            )
        if args.serve:
            served = Path(args.serve)
            if not served.is_file():
                raise UsageError(
                    f"{served} is not a file",
                    "give the root.oci (or, with --packed, the packed.img) of bootc-live build",
                )
            port = stack.enter_context(vm.serve(served))
            forwards = ((80, port),)
            kind = "packed:" if args.packed else ""
            append = f"root=bootc-live:{kind}{vm.served_url(served)} {append}"
            append = append.strip()
        for spec in args.forward:
            guest, _, host = spec.partition(":")
            ports = (guest, host or guest)
            if not all(p.isdigit() and p.isascii() and 0 < int(p) < 65536 for p in ports):
                raise UsageError(
                    f"--forward {spec}: expected PORT or PORT:HOSTPORT, ports from 1 to 65535",
                    "e.g. --forward 5000",
                )
            taken = [f for f in forwards if f[0] == int(guest)]
            if taken:
                by = "--serve" if args.serve and taken[0] == forwards[0] else "another --forward"
                raise UsageError(
                    f"--forward {spec}: guest port {guest} is forwarded already, by {by}",
                    "give each guest port one --forward (--serve takes port 80)",
                )
            forwards += ((int(guest), int(host or guest)),)
        fetched = bool(args.serve or args.forward)
        disks = tuple(Path(d) for d in args.disk)
        for disk in disks:
            if not (disk.is_file() or disk.is_block_device()):
                what = "not a file or block device" if disk.exists() else "no such file"
                raise UsageError(f"--disk {disk}: {what}", "give a raw disk image file")
        if args.pxe and (fetched or disks):
            other = "--serve" if args.serve else "--forward" if args.forward else "--disk"
            raise UsageError(
                f"--pxe loads rootfs.img as a second initrd, and {other} boots initrd.img alone",
                f"leave --pxe out, or {other}",
            )
        rooted = any(a.startswith("root=") for a in append.split())  # --serve's, or given
        if disks and (args.packed or not rooted):
            raise UsageError(
                "--disk boots initrd.img alone: the image on the disk needs its root=",
                "add --append root=bootc-live:block:LABEL=…:/PATH (an oci-archive or OCI "
                "layout on the disk; a packed root cannot be booted from a disk)",
            )
        if args.forward and not rooted:  # cmdline.txt's root= is the image left behind
            raise UsageError(
                "--forward boots initrd.img alone: the image it reaches needs its root=",
                f"add --append root=bootc-live:docker://{vm.GUEST_SERVER}:PORT/NAME:TAG (or "
                f"a URL at {vm.GUEST_SERVER}:PORT)",
            )
        config = vm.VmConfig(
            Path(args.artifacts),
            append=append,
            mem=args.mem,
            pxe=args.pxe,
            packed=args.packed,
            # The image comes over the network or from a disk: no copy in the initramfs.
            embedded=not (fetched or disks),
            accel=args.accel,
            network=fetched or args.net,
            forwards=forwards,
            disks=disks,
        )
        result = vm.boot(config, timeout=args.timeout, interactive=sys.stdin.isatty())
    verdict = result.verdict(args.timeout)
    if verdict is None:
        return 0
    print(console_line(f"bootc-live: {verdict}"), file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    _need_root("demo")
    if not args.workdir:  # not the current directory: a path that was meant to be given
        raise UsageError("--workdir is empty", "give the directory demo works in")
    return demo.run_demo(Path(args.workdir), args.mem, args.flavour, args.verbose)


def cmd_dracut_modules(args: argparse.Namespace) -> int:
    if not args.dest:
        raise UsageError("DEST is empty", "give the directory to write the modules into")
    if os.path.lexists(args.dest) and not os.path.isdir(args.dest):
        raise UsageError(
            f"{args.dest} is not a directory", "give the directory to write the modules into"
        )
    for path in dracut.export_modules(Path(args.dest)):
        print(path)
    return 0


def _need_root(command: str) -> None:
    if os.geteuid() != 0:
        raise UsageError(f"bootc-live {command} must run as root", "run it with sudo")


def _count(text: str) -> int:
    if not (text.isdigit() and text.isascii()):  # '²' is a digit int() refuses
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of retries")
    return int(text)


MEM_RANGE = (64, 1 << 20)  # MiB a guest is given: less boots nothing; 1 TiB is plenty


def _mib(text: str) -> int:
    low, high = MEM_RANGE
    if not (text.isdigit() and text.isascii() and low <= int(text) <= high):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in MiB from {low} to {high}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and below 86400 (a day)"
        )
    return value


def _mirror(text: str) -> tuple[str, ...]:
    try:
        return cmdline.parse_hosts(text)
    except cmdline.Secret:  # not repeated: it may hold a password
        raise argparse.ArgumentTypeError(
            "a mirror is HOST[:PORT], without credentials (they come from --authfile FILE or "
            "podman login)"
        ) from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {for_host(str(err))}") from None


def _auth_registry(text: str) -> tuple[str, ...]:
    if text == build.ALL_REGISTRIES:
        return (text,)
    try:
        return cmdline.parse_hosts(text)
    except cmdline.Secret:  # not repeated: it may hold a password
        raise argparse.ArgumentTypeError(
            "a registry is HOST[:PORT], without credentials (they come from --authfile FILE)"
        ) from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {for_host(str(err))}") from None


def _identity(text: str) -> str:
    try:
        return hostpolicy.parse_identity(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an image reference: {err}") from None


def _readable_file(text: str) -> str:
    """A file given on the command line: there and readable, checked before anything is done
    (a missing CA bundle would otherwise be told as a failing connection)."""
    try:  # without waiting: a FIFO blocked here for ever, and so would OpenSSL reading it
        with open_file(text, text, hint=NOT_A_FILE):
            return text
    except ImageError as err:
        raise argparse.ArgumentTypeError(err.line()) from None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err.strerror}") from None


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bootc-live",
        description="Boot machines live, from RAM, from bootc (bootable container) images. "
        f"SOURCE is {TRANSPORTS}.",
    )
    top.add_argument("--debug", action="store_true", help="show tracebacks and every command run")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "build",
        help="make the boot artifacts of an image",
        description="Write vmlinuz, initrd.img, rootfs.img, initrd-full.img, "
        "root.oci, cmdline.txt, packed.img, packed.json, cmdline-packed.txt and boot.ipxe into "
        "DIR (atomically; an existing DIR must be a build's output). By default the "
        "initramfs is built by dracut inside the image's own userland, with its "
        "kernel, modules and Python; before that, the unpacked image is checked as the boot "
        "checks it before switching root (os-release, the init for the image's architecture, "
        "its loader, /proc /sys /dev /run) and what would stop its boot is a warning "
        "(init= on the boot's command line may name another init).",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument(
        "--host",
        action="store_true",
        help="use the host's dracut, /boot/vmlinuz-KVER and modules instead",
    )
    p.add_argument(
        "--kver",
        metavar="KVER",
        help="kernel version (default: the highest; with --host, of this host: "
        "/boot/vmlinuz-KVER with /lib/modules/KVER)",
    )
    p.add_argument(
        "--flavour",
        choices=dracut.FLAVOURS,
        default="systemd",
        help="systemd initrd (default) or dracut's classic shell initrd",
    )
    p.add_argument(
        "--pack",
        type=_pack_option,
        metavar="FORMAT[:COMPRESSOR]|none",
        help="packed.img's format: squashfs or erofs, and a compressor; none: no packed.img "
        "(default: the smallest the kernel mounts, by its config: the image's, or with --host "
        "this machine's /boot/config-KVER)",
    )
    p.add_argument(
        "--ca",
        type=_readable_file,
        metavar="FILE",
        help="a CA bundle the initramfs (and this command, for docker://) trusts for https, "
        "besides the system's",
    )
    add_image_selection(p)
    add_registry_options(p, ca=False)
    p.add_argument(
        "--auth-registry",
        dest="auth_registries",
        action="extend",
        type=_auth_registry,
        default=[],
        metavar="HOST[:PORT][,…]|all",
        help="a registry the boot pulls from (root=bootc-live:docker://HOST/…, "
        "bootc.registry.mirror=HOST), as the machine booted sees it, whose credentials of "
        "--authfile go into the initramfs (repeatable; all: every registry's)",
    )
    add_trust_options(p, build=True)
    p.epilog = (
        "--authfile (--auth-file) also puts credentials into the initramfs (mode 0600, "
        "/etc/bootc-live/auth.json) for root=bootc-live:docker://REF: those of a docker:// "
        "SOURCE's registry and of each --auth-registry, no other registry's."
    )
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "inspect",
        help="show an image's platforms, layers, sizes, kernels, RAM",
        description="Check an image's signatures (its policy) and print its platforms, "
        "layers and sizes, and the RAM a live boot needs. Its layers are read, their digests "
        "checked and the kernels they carry listed only with --measure.",
    )
    p.add_argument("source", metavar="SOURCE")
    add_image_selection(p)
    p.add_argument(
        "--measure",
        action="store_true",
        help="also read every layer: unpacked sizes, kernels, and what the files take in zram "
        "when the image has no figure recorded by bootc-live build (slow: it downloads and "
        "decompresses everything)",
    )
    add_registry_options(p)
    add_trust_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "pull",
        help="copy an image from a registry into an oci-archive or OCI layout",
        description="Pull docker://REF (HOST[:PORT]/PATH[:TAG][@sha256:HEX]; Docker Hub short "
        "names are normalised) with bootc-live's own registry client, or an oci-archive at an "
        "http(s):// URL (read as the boot reads it), verifying every blob, "
        "and write the image for one platform as oci-archive:PATH[:TAG] or oci:DIR[:TAG] "
        "with the registry's manifest and blobs unchanged (the same digests). Any other "
        "SOURCE is copied the same way.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="oci-archive:PATH[:TAG]|oci:DIR[:TAG]")
    add_image_selection(p)
    add_registry_options(p)
    add_trust_options(p)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "vm",
        help="boot artifacts in QEMU on the serial console",
        description="Boot the artifacts of bootc-live build in QEMU (KVM when "
        "usable, TCG otherwise) with the console on this terminal.",
    )
    p.add_argument("artifacts", metavar="DIR")
    p.add_argument(
        "--append",
        action="append",
        default=[],
        metavar="ARGS",
        help="extra kernel arguments (repeatable); a root= here boots another image: "
        "cmdline.txt's root=, bootclabel=, bootc.digest= and bootc.identity= are left out",
    )
    p.add_argument("--mem", type=_mib, default=1024, metavar="MiB")
    p.add_argument(
        "--pxe",
        action="store_true",
        help="load initrd.img and rootfs.img as two initrds, as iPXE does (not with --serve, "
        "--forward or --disk, which boot initrd.img alone)",
    )
    p.add_argument(
        "--packed",
        action="store_true",
        help="boot the packed root: packed.img as the second initrd (or, with --serve, from a "
        "URL) with cmdline-packed.txt's arguments",
    )
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="stop the guest after this long, on a terminal too (default 3600)",
    )
    p.add_argument(
        "--serve",
        metavar="FILE",
        help="serve FILE (root.oci; packed.img with --packed) to the guest over loopback and "
        f"boot from it: root=bootc-live:http://{vm.GUEST_SERVER}/NAME",
    )
    p.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="PORT[:HOSTPORT]",
        help=f"let the guest reach 127.0.0.1:HOSTPORT (e.g. a registry) at {vm.GUEST_SERVER}:PORT "
        "and boot initrd.img alone, the image --append's root= names (repeatable)",
    )
    p.add_argument(
        "--net", action="store_true", help="give the guest a NIC on QEMU's restricted user network"
    )
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="FILE",
        help="attach FILE, a raw disk image, as a read-only virtio disk and boot initrd.img "
        "alone (repeatable): boot an image on it with --append "
        "root=bootc-live:block:LABEL=…:/PATH",
    )
    p.set_defaults(func=cmd_vm)

    p = sub.add_parser(
        "demo",
        help="build a small image from this host's parts and boot it live",
        description="Build a busybox image from this host's parts, make its "
        "artifacts with the host's kernel and dracut, boot it live in QEMU and "
        "print what the live system saw. Exit 0 only if it came up.",
    )
    p.add_argument("--workdir", default="/var/tmp/bootc-live-demo", metavar="DIR")
    p.add_argument("--mem", type=_mib, default=512, metavar="MiB")
    p.add_argument(
        "--flavour",
        choices=dracut.FLAVOURS,
        default=dracut.host_flavour(),
        help="initramfs flavour (default: systemd when the host has it)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the whole console")
    p.set_defaults(func=cmd_demo)

    unpack = sub.add_parser(
        "unpack",
        help="write an image's root filesystem into a directory",
        description="Verify an image and write its root filesystem into DEST (needs root). "
        f"SOURCE is {TRANSPORTS}; TAG defaults to 'latest', and an "
        "archive or layout holding a single image needs none.",
    )
    unpack.add_argument("source", metavar="SOURCE")
    unpack.add_argument("dest", metavar="DEST", help="a new or empty directory")
    add_image_selection(unpack)
    unpack.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    add_registry_options(unpack)
    add_trust_options(unpack)
    unpack.set_defaults(func=cmd_unpack)

    p = sub.add_parser(
        "erofs",
        help="make the EROFS image of bootc.live.erofs=1 and print its sha256",
        description="Verify and unpack an image (needs root), pack it as a bootc.live.erofs=1 "
        "boot does (null UUID, every timestamp at the epoch) and print the sha256 of the result: "
        "a live system booted with bootc.live.erofs=1 reports the same when the initramfs has "
        "the same mkfs.erofs version.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", metavar="FILE", help="keep the EROFS image in FILE")
    p.add_argument(
        "--compress",
        metavar="ALG",
        help="as bootc.live.erofs.compress=ALG (what mkfs.erofs offers, e.g. lz4, lz4hc)",
    )
    add_image_selection(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    add_registry_options(p)
    add_trust_options(p)
    p.set_defaults(func=cmd_erofs)

    p = sub.add_parser(
        "pack",
        help="make the packed root of an image (packed.img) and print its kernel arguments",
        description="Verify and unpack an image (needs root), pack its root as one reproducible "
        "compressed filesystem image (squashfs or EROFS: the smallest the image's own kernel "
        "mounts, or --pack), and write FILE (a cpio archive to append as an initrd, or to serve "
        "at a URL) and FILE.json (what it was made from and how); print its sha256 and the "
        "kernel arguments that boot it appended (docs/packed.md).",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument(
        "--pack",
        type=_pack_format,
        metavar="FORMAT[:COMPRESSOR]",
        help="squashfs or erofs, and a compressor (default: the smallest the kernel mounts)",
    )
    add_image_selection(p)
    add_registry_options(p)
    add_trust_options(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "push-packed",
        help="push a packed root (packed.img) into its image's registry, as an OCI artifact",
        description="Push the filesystem image in FILE (packed.img of bootc-live build or pack, "
        "its record beside it) into the repository of the image docker://REF it was made from: "
        "an OCI artifact whose subject is the image's manifest, listed by the referrers API or "
        "its tag sha256-HEX; print its digest and the kernel argument that boots it "
        "(root=bootc-live:packed:docker://…, docs/packed.md).",
    )
    p.add_argument("source", metavar="docker://REF")
    p.add_argument("file", metavar="FILE")
    add_image_selection(p)
    add_registry_options(p)
    add_trust_options(p, identity=False)  # its SOURCE is docker://REF: its name is its own
    p.set_defaults(func=cmd_push_packed)

    p = sub.add_parser(
        "dracut-modules",
        help="write the bootc-live dracut modules into a directory",
        description="Write the bootc-live dracut modules, runtime included, into "
        "DIR (e.g. /usr/lib/dracut/modules.d in an image).",
    )
    p.add_argument("dest", metavar="DIR")
    p.set_defaults(func=cmd_dracut_modules)

    ref = sub.add_parser(
        "cmdline-reference",
        help="print the kernel command-line reference (docs/cmdline.md)",
        description="Print the reference of the kernel command-line options, generated from the "
        "runtime's parser.",
    )
    ref.set_defaults(func=lambda _args: print(cmdline.reference(), end="") or 0)
    return top


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def error_line(err: BootcLiveError, args: argparse.Namespace) -> str:
    """The one line the host prints: the runtime's kernel arguments as host flags (not for
    `vm`, whose --append takes kernel arguments)."""
    line = err.line() if getattr(args, "func", None) is cmd_vm else for_host(err.line())
    if " 401 unauthorized" in str(err):
        line += f" (looked in: {auth.Lookup(getattr(args, 'auth_file', None)).where()})"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except KeyboardInterrupt:  # before stopping() below turns signals into a clean unwinding
        return interrupted(int(signal.SIGINT))
    if args.debug:
        os.environ["BOOTC_LIVE_DEBUG"] = "1"
        run_module.DEBUG = True
    try:
        with stopping(STOP_SIGNALS):  # they unwind like a failure: everything is cleaned up
            return run_command(args)
    finally:
        scratch.remove_all()  # what a signal kept a clean-up from reaching


def program() -> NoReturn:
    """The `bootc-live` program: `main`, then the exit.

    Fetch threads a failure or an interrupt cut short may still be inside OpenSSL, and the
    interpreter's finalisation then crashes now and then (SIGSEGV instead of exit 130): with
    such threads left and nothing more to do, the output is flushed and the process ends
    without it.

    A character the terminal's encoding lacks (LANG=C with PYTHONIOENCODING=ascii, a latin-1
    locale: a kernel's name in `inspect`, the "…" of a shortened one) is written as its escape
    on stdout too, as Python writes it on stderr: never a UnicodeEncodeError traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")
    code = main()
    if threading.active_count() > 1:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def run_command(args: argparse.Namespace) -> int:
    """The command, its failures reported as one line (and its interruption as a failure)."""
    try:
        return int(args.func(args))
    except BootcLiveError as err:
        if args.debug:
            # Where it was raised, not what it was raised in handling: that is the raw failure
            # (http.client's BadStatusLine quotes the server's line), which the line does not
            # repeat for a reason.
            traceback.print_exc(chain=False)
            if isinstance(err, CommandError) and err.command:
                print(console_line(f"bootc-live: the command was: {err.command}"), file=sys.stderr)
        print(console_line(f"bootc-live: {error_line(err, args)}"), file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # what the host's filesystem refused that no check above foresaw
        if args.debug:
            traceback.print_exc()
        # Both names of a copy or a rename: a full disk is the second's (the target's).
        names = [
            shown(os.fsdecode(name))
            for name in (err.filename, err.filename2)
            if isinstance(name, (str, bytes))
        ]
        where = f"{' → '.join(names)}: " if names else ""
        print(
            console_line(
                f"bootc-live: {where}{err.strerror or err}; check the paths given and the space "
                "there"
            ),
            file=sys.stderr,
        )
        return 1
    except (Stopped, KeyboardInterrupt) as err:
        return interrupted(err.signum if isinstance(err, Stopped) else int(signal.SIGINT))


def interrupted(signum: int) -> int:
    """Says the command was interrupted by `signum`; the exit status that says it too."""
    print(f"bootc-live: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + signum
