"""The host command line: `bootc-live unpack` (build, pull, inspect, vm and demo come next)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from .runtime import cmdline
from .runtime.errors import BootcLiveError
from .runtime.oci import Platform, resolve
from .runtime.sources import ArchiveSource, ImageSource, LayoutSource
from .runtime.unpack import Progress, unpack_image


class UsageError(BootcLiveError):
    """The command line itself is wrong."""


@dataclass(frozen=True)
class SourceRef:
    """A parsed SOURCE argument: transport, path and optional tag."""

    transport: str
    path: str
    tag: str | None

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        transport, sep, rest = text.partition(":")
        if not sep or transport not in ("oci", "oci-archive") or not rest:
            raise UsageError(
                f"unsupported image source {text!r}",
                "use oci-archive:PATH[:TAG] or oci:DIR[:TAG]",
            )
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and tail and "/" not in tail and not os.path.exists(rest):
            path, tag = head, tail
        return cls(transport, path, tag)

    def open(self) -> ImageSource:
        if self.transport == "oci":
            return LayoutSource(self.path)
        return ArchiveSource(self.path)


def _prepare_dest(dest: str) -> bool:
    """Make sure DEST exists and is empty; return whether we created it."""
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise UsageError(
                f"{dest} exists and is not a directory", "give a new or empty directory"
            )
        if os.listdir(dest):
            raise UsageError(f"{dest} is not empty", "give a new or empty directory")
        return False
    os.makedirs(dest)
    os.chmod(dest, 0o755)  # what the root is when the image does not say, whatever the umask
    return True


def _discard(dest: str, created: bool) -> None:
    """Remove a partially unpacked tree, so nobody mistakes it for the image."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def cmd_unpack(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError(
            "bootc-live unpack must run as root to set owners and create device nodes",
            "run it with sudo",
        )
    ref = SourceRef.parse(args.source)
    source = ref.open()
    image = resolve(source, label=ref.tag, platform=args.platform, digest=args.digest)
    created = _prepare_dest(args.dest)
    try:
        stats = unpack_image(
            image,
            args.dest,
            progress=None if args.quiet else Progress(image.compressed_size, len(image.layers)),
        )
    except BaseException:
        _discard(args.dest, created)
        raise
    finally:
        source.close()
    if not args.quiet:
        print(
            f"bootc-live: unpacked {image.manifest_digest} into {args.dest}: "
            f"{stats.layers} layers, {stats.entries} entries, "
            f"{stats.bytes_written >> 20} MiB in {stats.seconds:.1f}s",
            file=sys.stderr,
        )
    return 0


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bootc-live",
        description="Boot machines live, from RAM, from bootc (bootable container) images.",
    )
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    unpack = sub.add_parser(
        "unpack",
        help="write an image's root filesystem into a directory",
        description="Verify an image and write its root filesystem into DEST (needs root). "
        "SOURCE is oci-archive:PATH[:TAG] or oci:DIR[:TAG]; TAG defaults to 'latest', and an "
        "archive or layout holding a single image needs none.",
    )
    unpack.add_argument("source", metavar="SOURCE")
    unpack.add_argument("dest", metavar="DEST", help="a new or empty directory")
    unpack.add_argument(
        "--platform",
        type=_platform,
        default=None,
        help="OS/ARCH[/VARIANT] to pick from a multi-platform index (default: this machine)",
    )
    unpack.add_argument(
        "--digest",
        default=None,
        metavar="sha256:HEX",
        help="the manifest digest the image must have",
    )
    unpack.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    unpack.set_defaults(func=cmd_unpack)
    ref = sub.add_parser(
        "cmdline-reference",
        help="print the kernel command-line reference (docs/cmdline.md)",
        description="Print the reference of the kernel command-line options, generated from the "
        "runtime's parser.",
    )
    ref.set_defaults(func=lambda _args: print(cmdline.reference(), end="") or 0)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BootcLiveError as err:
        if args.debug:
            traceback.print_exc()
        print(f"bootc-live: {err.line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bootc-live: interrupted", file=sys.stderr)
        return 130
