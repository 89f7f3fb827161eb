"""The kernel command line, parsed once into a typed BootSpec (SPEC.md §2).

Rules follow dracut: options from /etc/cmdline.d/*.conf come first, the kernel's command line
last; the last occurrence of an option wins; a bare boolean `name` is true, `name=0|no|off|false`
false and `name=1|yes|on|true` true. Every option is validated here, so an invalid value stops
the boot before anything is fetched, with a message that names the option and the value.
The table OPTIONS is also the source of docs/cmdline.md (a test keeps the two equal).
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import stat
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from .blobs import odd_at, registry_host
from .errors import BootcLiveError, ImageError, shown
from .oci import Platform, check_ref_name
from .policy import DockerReference
from .registry import Reference
from .sources import read_file

ROOT_PREFIX = "bootc-live:"
PACKED_PREFIX = "packed:"
BLOCK_PREFIX = "block:"
# How block:DEV names its device: by a filesystem's label or UUID, a partition's UUID, or a path.
DEVICE_TAGS = ("LABEL=", "UUID=", "PARTUUID=")
_TRUE = {"", "1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}
# dracut's own booleans (getargbool): these, as written, are false; anything else is true.
_DRACUT_FALSE = ("0", "no", "off")
BLOCK_WAIT = 90  # seconds block:DEV is waited for without bootc.timeout= (systemd's device default)
MAX_SECONDS = 86400  # a day: beyond, a stall is no longer one (and sockets refuse 1e10)
_URL_SCHEMES = ("http://", "https://", "ftp://", "tftp://", "nfs://")
_SIZE = re.compile(r"([0-9]+)([KMGT]?)(i?B)?", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+")  # not str.isdigit: that takes "²" and "٣"
# A decimal number as written in ASCII (float() alone takes "٣", "1_0", " 5\u3000" and "inf")
_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
MIB = 1 << 20
MAX_CONNECTIONS = 8  # 18 MiB of parts at most (http.ParallelReader), planned: boot.held_ahead
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class CmdlineError(BootcLiveError):
    """An option on the kernel command line has an invalid value."""


@dataclass(frozen=True)
class ImageLocation:
    """Where the image comes from: `root=bootc-live:…` (not the root filesystem: see RootMode)."""

    kind: str  # "path", "url", "docker" or "block"
    location: str  # PATH, URL or REF; for "block", PATH on the device's filesystem
    packed: bool = False  # `packed:`: a squashfs or EROFS image of the root, not an OCI image
    device: str = ""  # "block": LABEL=…, UUID=…, PARTUUID=… or /dev/…

    def __str__(self) -> str:
        packed = PACKED_PREFIX if self.packed else ""
        if self.kind == "docker":
            return f"{ROOT_PREFIX}{packed}docker://{self.location}"
        if self.kind == "block":
            return f"{ROOT_PREFIX}{BLOCK_PREFIX}{self.device}:{self.location}"
        return ROOT_PREFIX + packed + self.location


@dataclass(frozen=True)
class ZramSize:
    """`bootc.zram=`: a size in bytes, or a percentage of RAM."""

    value: int
    percent: bool

    def bytes_for(self, mem_total: int) -> int:
        return mem_total * self.value // 100 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else f"{-(-self.value // MIB)}M"


@dataclass(frozen=True)
class RootMode:
    """Where the live root is kept: a tmpfs (the default), a zram device or an EROFS image.

    Made once from the command line (`bootc.zram`, `bootc.live.erofs` and their options); the
    planner (memory) and the root builder (roots.make) take it as it is.
    """

    kind: str = "tmpfs"  # "tmpfs", "zram" or "erofs"
    zram_size: ZramSize | None = None  # zram: the device's size
    zram_algorithm: str | None = None  # zram: the compressor (None: the kernel's default)
    erofs_compress: str | None = None  # erofs: mkfs.erofs's compressor (None: none)

    def __post_init__(self) -> None:
        if self.kind not in ("tmpfs", "zram", "erofs") or (
            (self.kind == "zram") != (self.zram_size is not None)
        ):
            raise ValueError(f"not a root mode: {self}")

    @classmethod
    def zram(cls, size: int, algorithm: str | None = None) -> RootMode:
        """A zram root of `size` bytes."""
        return cls("zram", ZramSize(size, False), algorithm)

    def option(self) -> str:
        """How to ask for this mode on the kernel command line."""
        if self.kind == "zram":
            algorithm = (
                f" bootc.zram.algorithm={self.zram_algorithm}" if self.zram_algorithm else ""
            )
            return f"bootc.zram={self.zram_size}{algorithm}"
        if self.kind == "erofs":
            compress = f" bootc.live.erofs.compress={self.erofs_compress}"
            return "bootc.live.erofs=1" + (compress if self.erofs_compress else "")
        return "the default tmpfs root (no bootc.zram or bootc.live.erofs)"


TMPFS = RootMode()


@dataclass(frozen=True)
class BootSpec:
    """Everything the runtime needs to know from the command line."""

    image: ImageLocation | None = None  # None: root= is not ours
    label: str | None = None
    digest: str | None = None
    platform: Platform | None = None
    registry_unsecure: bool = False
    registry_mirrors: tuple[str, ...] = ()
    registry_mirrors_digest_only: bool = False
    registry_auth: str | None = None
    kexec: bool = False
    kexec_kver: str | None = None
    kexec_reuse_image: bool = True
    kexec_verified: str | None = None
    mode: RootMode = TMPFS
    rw: bool = False
    rootflags: tuple[str, ...] = ()
    etc_rw: bool = True
    var_rw: bool = True
    quiet: bool = False
    debug: bool = False
    keep_modules: bool = False
    retries: int | None = None
    timeout: float | None = None
    connections: int | None = None  # None: http.CONNECTIONS
    wait_any_if: bool = False
    policy: str | None = None
    identity: str | None = None
    packed_sha256: str | None = None  # the pin of a packed root (required but from a registry)
    packed_image: str | None = None  # the manifest digest it was made from, for the status
    # Options given but not ours (for kexec: the next stage gets them unchanged).
    extra: Mapping[str, str] = field(default_factory=dict)


# -- value parsers ---------------------------------------------------------------------------


def parse_bool(value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected 1|yes|on|true or 0|no|off|false")


def parse_root(value: str) -> ImageLocation | None:
    if not value.startswith(ROOT_PREFIX):
        return None  # not ours: another module handles this root
    rest = value[len(ROOT_PREFIX) :]
    if rest.startswith(PACKED_PREFIX):
        rest = rest[len(PACKED_PREFIX) :]
        if rest.startswith("docker://"):
            return ImageLocation("docker", docker_ref(rest), packed=True)
        if rest.startswith(_URL_SCHEMES):
            return ImageLocation("url", url_root(rest), packed=True)
        if rest.startswith("/"):
            return ImageLocation("path", rest, packed=True)
        raise ValueError(
            "expected packed:/PATH, packed:URL (http, https, ftp, tftp, nfs) or packed:docker://REF"
        )
    if rest.startswith("docker://"):
        return ImageLocation("docker", docker_ref(rest))
    if rest.startswith(_URL_SCHEMES):
        return ImageLocation("url", url_root(rest))
    if rest.startswith("/"):
        return ImageLocation("path", rest)
    if rest.startswith(BLOCK_PREFIX):
        return block_root(rest[len(BLOCK_PREFIX) :])
    raise ValueError(
        "expected /PATH, http(s)://…, ftp://…, tftp://…, nfs://…, docker://REF or block:DEV:/PATH"
    )


def block_root(text: str) -> ImageLocation:
    """DEV:/PATH of `block:DEV:/PATH`: the path starts at the first ":/" (a /dev/disk/by-path
    name holds colons, none followed by a slash)."""
    device, sep, path = text.partition(":/")
    usage = "expected block:DEV:/PATH, DEV one of LABEL=…, UUID=…, PARTUUID=… or /dev/…"
    tagged = device.startswith(DEVICE_TAGS) and device.partition("=")[2] != ""
    named = device.startswith("/dev/") and len(device) > len("/dev/")
    if not sep or not (tagged or named):
        raise ValueError(usage)
    if ".." in text.split("/"):  # in PATH (or DEV, /dev/../x): the shell's grammar says so too
        raise ValueError(f"{usage}; PATH without .. components")
    path = "/" + path
    return ImageLocation("block", path, device=device)


def docker_ref(text: str) -> str:
    """REF of `docker://REF`, a valid reference (checked here: a bad one stops the boot before
    the network is waited for)."""
    ref = text[len("docker://") :]
    if odd_at(ref):
        raise Secret(
            "what follows @ is not a digest (a USER:PASSWORD@ has no place in it: "
            "credentials go into the initramfs with bootc-live build --auth-file FILE)"
        )
    try:
        Reference.parse(ref)
    except ImageError as err:  # its usage, or why its digest is refused (sha384: …)
        usage = err.hint.partition("docker://")[2]
        raise ValueError(f"expected docker://{usage}" if usage else err.line()) from None
    return ref


def url_root(url: str) -> str:
    """A URL of root=, as the clients will read it; refused without being shown where it may
    hold a secret: a password cut short by a /, ? or # not percent-encoded leaves `USER:PASS`
    where the host goes and the rest, up to an @, in the path; a query may be a signature."""
    after = url.partition("://")[2]
    authority = re.split(r"[/?#]", after, maxsplit=1)[0]
    if ":" in authority and "@" in after[len(authority) :]:
        raise Secret(
            "an @ after a HOST:PORT (percent-encode a password's /, ? and # as %2F, %3F, %23, "
            "and an @ in the path as %40)"
        )
    refuse = Secret if "@" in authority or "?" in after else ValueError
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("expected SCHEME://HOST[:PORT]/PATH (an IPv6 address in [ ])") from None
    if not parts.hostname or port == 0:
        raise refuse("expected SCHEME://HOST[:PORT]/PATH with a host, and a port from 1")
    if "@" in authority and parts.scheme in _NO_LOGIN:
        # dracut's nfs-lib would read USER:PASS@HOST as a host and a port= mount option
        raise Secret(
            f"{parts.scheme}:// takes no USER:PASSWORD@ ({_NO_LOGIN[parts.scheme]}): expected "
            f"{parts.scheme}://HOST[:PORT]/PATH"
        )
    return url


# URL schemes whose protocol has no login, and what authorises a client instead.
_NO_LOGIN = {
    "nfs": "the NFS server exports by the client's address",
    "tftp": "TFTP has no login",
}


class Secret(ValueError):
    """A value refused that may hold a secret: the message does not repeat it."""


def parse_digest(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}", value):
        raise ValueError(
            "expected sha256: and 64, or sha512: and 128, lowercase hex digits (other "
            "algorithms are not supported)"
        )
    return value


def parse_sha256(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise ValueError("expected sha256: and 64 lowercase hex digits")
    return value


def parse_platform(value: str) -> Platform:
    return Platform.parse(value)


def parse_zram(value: str) -> ZramSize:
    if value.endswith("%"):
        percent = int(value[:-1]) if _NUMBER.fullmatch(value[:-1]) else -1
        if not 1 <= percent <= 400:
            raise ValueError("expected a percentage of RAM from 1% to 400%")
        return ZramSize(percent, True)
    return ZramSize(parse_size(value), False)


def parse_size(value: str) -> int:
    m = _SIZE.fullmatch(value)
    if not m or int(m.group(1)) == 0:
        raise ValueError("expected a size such as 512M or 8G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_count(value: str) -> int:
    if not _NUMBER.fullmatch(value):
        raise ValueError("expected a whole number")
    return int(value)


def parse_connections(value: str) -> int:
    if not _NUMBER.fullmatch(value) or not 1 <= int(value) <= MAX_CONNECTIONS:
        raise ValueError(f"expected a number of connections from 1 to {MAX_CONNECTIONS}")
    return int(value)


def parse_seconds(value: str) -> float:
    seconds = float(value) if _DECIMAL.fullmatch(value) else 0.0
    if not 0.1 <= seconds <= MAX_SECONDS:  # what a socket's timeout takes (and means)
        raise ValueError(f"expected a number of seconds from 0.1 to {MAX_SECONDS}")
    return seconds


def parse_word(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise ValueError("expected a single word")
    return value


def parse_text(value: str) -> str:
    if not value:
        raise ValueError("expected a value")
    return value


def parse_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("expected an absolute path in the initramfs")
    return value


def parse_identity(value: str) -> str:
    """A Docker reference in its expanded form; a bare name means its :latest, as for docker://."""
    try:
        ref = DockerReference.parse(value)
    except ValueError as err:
        raise ValueError(
            f"expected a registry reference HOST/PATH:TAG or @sha256:HEX ({err})"
        ) from None
    if ref.tag is not None and ref.digest is not None:
        raise ValueError("expected a tag or a digest, not both")
    return str(ref if not ref.name_only else DockerReference(ref.name, "latest"))


def parse_hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(h[:-1] if h.endswith("/") else h for h in value.split(",") if h)
    if any("@" in h for h in hosts):
        raise Secret(
            "a mirror is HOST[:PORT] (credentials go into the initramfs with bootc-live build "
            "--auth-file FILE)"
        )
    if not hosts or not all(registry_host(h) for h in hosts):
        raise ValueError(
            "expected HOST[:PORT][,HOST[:PORT]…]: no scheme (https, or http with "
            "bootc.registry.unsecure=1), no path; an IPv6 address in [ ]"
        )
    return hosts


def parse_flags(value: str) -> tuple[str, ...]:
    return tuple(flag for flag in value.split(",") if flag)


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One command-line option: its name, where it goes in BootSpec, and how it is parsed."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    usage: str
    help: str
    default: str = ""


OPTIONS: tuple[Option, ...] = (
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:/PATH",
        "Image inside the initramfs at PATH: an oci-archive file, an OCI layout directory or "
        "the split layout of `bootc-live build` (embedded, or appended by PXE).",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:URL",
        "oci-archive from http://, https://, ftp://, tftp:// or nfs://.",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:docker://REF",
        "Pull from an OCI registry: HOST[:PORT]/PATH[:TAG][@sha256:…]; Docker Hub short "
        "names are normalised.",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:block:DEV:/PATH",
        "An oci-archive file or OCI layout directory at PATH on a local disk's filesystem; DEV "
        "is LABEL= (a space written \\x20), UUID=, PARTUUID= or /dev/…. The device is waited "
        f"for (bootc.timeout=, else {BLOCK_WAIT} s), made read-only and its filesystem mounted "
        "read-only for the unpack (nothing is written to it, not even a journal replay), then "
        "unmounted before switch root: the machine runs from RAM.",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:packed:/PATH",
        "A packed root (the squashfs or EROFS image `bootc-live build` writes as packed.img) "
        "inside the initramfs at PATH: packed.img appended as an extra initrd unpacks to "
        "/bootc-live/packed.root (or its parts .0, .1, …). Mounted read-only from a loop "
        "device, nothing unpacked; needs bootc.packed.sha256=.",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:packed:URL",
        "A packed root from http://, https:// (streamed into RAM while hashed), ftp://, "
        "tftp:// or nfs:// (dracut's url-lib): packed.img, or the bare filesystem image.",
    ),
    Option(
        "root",
        "image",
        parse_root,
        "root=bootc-live:packed:docker://REF",
        "The packed root `bootc-live push-packed` pushed beside the image REF in its registry "
        "(an OCI artifact whose subject is the image's manifest; found by the referrers API or "
        "its tag sha256-HEX). REF is resolved and trusted as for docker:// (bootc.digest=, "
        "the policy); bootc.packed.sha256= (required: the artifact is not signed by the "
        "image) picks the artifact whose layer it is, checked as it streams.",
    ),
    Option(
        "bootc.packed.sha256",
        "packed_sha256",
        parse_sha256,
        "bootc.packed.sha256=sha256:HEX",
        "The sha256 of the packed root's filesystem image (not of its cpio wrapper; from a "
        "registry, its artifact's layer digest); required with root=bootc-live:packed:…, "
        "refused without it. Anything else stops the boot.",
    ),
    Option(
        "bootc.packed.image",
        "packed_image",
        parse_digest,
        "bootc.packed.image=sha256:HEX",
        "The manifest digest of the image the packed root was made from, reported in "
        "status.json as `manifest`.",
        "none",
    ),
    Option(
        "bootclabel",
        "label",
        check_ref_name,
        "bootclabel=TAG",
        "Which image of an archive or layout (org.opencontainers.image.ref.name); an index "
        "holding one unnamed image needs none. Ignored for docker:// (the reference names it).",
        "latest",
    ),
    Option(
        "bootc.digest",
        "digest",
        parse_digest,
        "bootc.digest=sha256:HEX",
        "The manifest (or index) digest the image must have; anything else stops the boot. "
        "`sha512:HEX` works too.",
    ),
    Option(
        "bootc.policy",
        "policy",
        parse_path,
        "bootc.policy=PATH",
        "The containers-policy.json(5) in the initramfs that the image's signatures must satisfy "
        "(docs/signatures.md); without this option `/etc/containers/policy.json` is used when "
        "the initramfs has it, and without either nothing is checked.",
        "/etc/containers/policy.json if present",
    ),
    Option(
        "bootc.identity",
        "identity",
        parse_identity,
        "bootc.identity=REF",
        "The registry name (HOST/PATH:TAG or @sha256:HEX) the policy and the signed identity "
        "are checked against for an image that is not pulled from a registry (in the "
        "initramfs, or at a URL); a registry image is named by root=. `bootc-live build` "
        "writes it when it knows the name.",
        "none: only the policy's default applies",
    ),
    Option(
        "bootc.registry.unsecure",
        "registry_unsecure",
        parse_bool,
        "bootc.registry.unsecure[=1]",
        "Allow plain http and unverified TLS for the registry.",
        "0",
    ),
    Option(
        "bootc.registry.mirror",
        "registry_mirrors",
        parse_hosts,
        "bootc.registry.mirror=HOST[,HOST…]",
        "Registry mirrors tried in order before the named registry; a mirror never receives "
        "the named registry's credentials.",
    ),
    Option(
        "bootc.registry.mirror.digest-only",
        "registry_mirrors_digest_only",
        parse_bool,
        "bootc.registry.mirror.digest-only[=1]",
        "Use the mirrors only for references pinned by digest (`@sha256:…`, `@sha512:…`): a "
        "tag is resolved by the named registry alone, so a stale mirror cannot serve an old "
        'image for it (containers-registries.conf\'s `pull-from-mirror = "digest-only"`).',
        "0",
    ),
    Option(
        "bootc.registry.auth",
        "registry_auth",
        parse_path,
        "bootc.registry.auth=PATH",
        "A containers auth.json inside the initramfs (bootc-live build --auth-file: the "
        "entries of the SOURCE's registry and of each --auth-registry HOST).",
    ),
    Option(
        "bootc.platform",
        "platform",
        parse_platform,
        "bootc.platform=OS/ARCH[/VARIANT]",
        "Platform to pick from a multi-platform index, as podman's --platform reads it "
        "(linux/x86_64 is linux/amd64, linux/arm is linux/arm/v7) and skopeo picks by it.",
        "this machine",
    ),
    Option(
        "bootc.kexec",
        "kexec",
        parse_bool,
        "bootc.kexec[=1]",
        "Find the kernel and initramfs in the image and kexec into them.",
        "0",
    ),
    Option(
        "bootc.kexec.kver",
        "kexec_kver",
        parse_word,
        "bootc.kexec.kver=KVER",
        "Which of the image's kernels to kexec into.",
        "the highest version",
    ),
    Option(
        "bootc.kexec.reuse-image",
        "kexec_reuse_image",
        parse_bool,
        "bootc.kexec.reuse-image=0",
        "Do not hand the obtained image to the kexec'd stage (it fetches it again).",
        "1",
    ),
    Option(
        "bootc.kexec.verified",
        "kexec_verified",
        parse_digest,
        "bootc.kexec.verified=sha256:HEX",
        "Set by bootc.kexec for the next stage, not by users: the digest of stage one's record of "
        "what it verified; the next stage skips only those hashes.",
        "none",
    ),
    Option(
        "bootc.zram",
        "zram_size",
        parse_zram,
        "bootc.zram=SIZE|N%",
        "Keep the root on a compressed zram device of SIZE (8G, 512M) or N% of RAM; with a "
        "packed root, the overlays' upper directories (what the live system writes).",
    ),
    Option(
        "bootc.zram.algorithm",
        "zram_algorithm",
        parse_word,
        "bootc.zram.algorithm=ALG",
        "The zram compressor (lz4, zstd, …).",
        "the kernel's default",
    ),
    Option(
        "bootc.live.erofs",
        "erofs",
        parse_bool,
        "bootc.live.erofs[=1]",
        "Build a reproducible EROFS image of the root and mount it.",
        "0",
    ),
    Option(
        "bootc.live.erofs.compress",
        "erofs_compress",
        parse_word,
        "bootc.live.erofs.compress=ALG",
        "Compress the EROFS image (lz4, lz4hc, lzma, …).",
    ),
    Option(
        "rw",
        "rw",
        parse_bool,
        "rw / rw=0",
        "Mount the root read-write / cancel an earlier rw. `ro` is ignored.",
        "0",
    ),
    Option(
        "rootflags",
        "rootflags",
        parse_flags,
        "rootflags=OPT[,OPT…]",
        "Extra mount options for the root.",
    ),
    Option(
        "bootc.live.etc.rw",
        "etc_rw",
        parse_bool,
        "bootc.live.etc.rw=0",
        "Keep /etc read-only.",
        "1",
    ),
    Option(
        "bootc.live.var.rw",
        "var_rw",
        parse_bool,
        "bootc.live.var.rw=0",
        "Keep /var read-only.",
        "1",
    ),
    Option(
        "bootc.quiet",
        "quiet",
        parse_bool,
        "bootc.quiet",
        "Only errors and a one-line summary on the console.",
        "0",
    ),
    Option(
        "bootc.debug",
        "debug",
        parse_bool,
        "bootc.debug[=1]",
        "Trace every command the boot runs and show a traceback for an internal error; dracut's "
        "`rd.debug` turns it on too (see docs/debugging.md).",
        "0",
    ),
    Option(
        "bootc.keep-modules",
        "keep_modules",
        parse_bool,
        "bootc.keep-modules[=1]",
        "Keep the initramfs's kernel modules that are not loaded, the tools the rest of the "
        "boot will not run (curl, gpgv, openssl, kexec, mkfs.ext4; mkfs.erofs but for EROFS) "
        "and the Python files of the modules the runtime has imported; by default their files "
        "are deleted once the root's own modules are loaded, and their memory goes to the root.",
        "0",
    ),
    Option(
        "bootc.retries",
        "retries",
        parse_count,
        "bootc.retries=N",
        "Bound on fetch retries (nfs:// is mounted with the kernel's own).",
        "retry with backoff for 10 minutes",
    ),
    Option(
        "bootc.timeout",
        "timeout",
        parse_seconds,
        "bootc.timeout=SECONDS",
        "Per-connection stall timeout, from 0.1 s to a day (nfs:// excepted); with "
        "root=bootc-live:block:…, how long its device is waited for.",
    ),
    Option(
        "bootc.connections",
        "connections",
        parse_connections,
        "bootc.connections=N",
        "Connections a large layer (over 8 MiB) is fetched through at once, over http(s) and "
        "from registries, 2 MiB a connection at a time. For servers that hold each connection "
        "to a rate (a CDN, a long path); where the machine's CPU is the bound, more cost more "
        "than they bring (bench/fetch).",
        "1",
    ),
    Option(
        "rd.net.wait-any-if",
        "wait_any_if",
        parse_bool,
        "rd.net.wait-any-if",
        "Wait for any one network interface instead of all.",
        "0",
    ),
)
_BY_NAME = {opt.name: opt for opt in OPTIONS}


_SPACE = b" \t\n\v\f\r\xa0"  # the kernel's isspace(), and dracut-getarg's: byte 0xA0 too


def split(text: str) -> list[str]:
    """Split a command line as the kernel (lib/cmdline.c) and dracut's getarg do, byte by
    byte: whitespace outside double quotes separates (ASCII's and the byte 0xA0, not U+3000);
    the quote a word or its value starts with is dropped, with the word's last character if
    that is a quote; other quotes stay (`rootflags=context="a,b"` keeps its quotes, which
    mount needs). `text` read from a file with surrogateescape keeps its undecodable bytes."""
    data = _bytes(text)
    args: list[str] = []
    i, n = 0, len(data)
    while True:
        while i < n and data[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        quoted = data[i] == 0x22
        i += quoted
        start, in_quote = i, quoted
        while i < n and (in_quote or data[i] not in _SPACE):
            in_quote ^= data[i] == 0x22
            i += 1
        word = data[start:i]
        name, eq, value = word.partition(b"=")
        if eq and value.startswith(b'"'):
            value = value[1:]
            word = name + eq + (value[:-1] if value.endswith(b'"') else value)
        elif quoted and word.endswith(b'"'):
            word = word[:-1]
        args.append(word.decode("utf-8", "replace"))


def join(args: Iterable[str]) -> str:
    """A command line the kernel (and `split`) reads back as `args`, each argument written as
    it is or with double quotes, the kernel's only quoting (`spelling`)."""
    return " ".join(spelling(arg) for arg in args)


def spelling(arg: str) -> str:
    """`arg` as the kernel reads it back whole, and the next argument apart: as it is when it
    can be, else in double quotes around it, before it, or around its value. A quote inside
    it counts: `x=a"b c"` is one argument as it is and two in quotes, and `"a"b` is read as
    `a"b`, which as it is would open a quote over the rest of the line. An argument no
    spelling gives back (its quote was left open at the end of the line) raises ValueError."""
    name, _, value = arg.partition("=")
    for candidate in (arg, f'"{arg}"', f'"{arg}', f'{name}="{value}"', f'{name}="{value}'):
        if split(candidate + " x") == [arg, "x"]:
            return candidate
    raise ValueError(f"the argument {shown(name)} has a quote that no spelling closes")


def _bytes(text: str) -> bytes:
    """`text` as the bytes it was read from (surrogateescape keeps undecodable ones)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def parse(args: Iterable[str], commented: Collection[str] = ()) -> BootSpec:
    """Parse command-line arguments (in order; the last occurrence wins) into a BootSpec.
    `commented`: arguments read from lines that start with # (dracut takes them as arguments
    too), which are not refused as unknown options."""
    given: dict[str, str] = {}
    extra: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if name == "ro":
            continue
        if name in _BY_NAME:
            given[name] = value if sep else ""
        else:
            extra[name] = value
    check_unknown({name: value for name, value in extra.items() if name not in commented})
    values: dict[str, Any] = {"extra": extra}
    for name, value in given.items():
        opt = _BY_NAME[name]
        if not value and opt.parse not in (parse_bool, parse_flags, parse_root):
            raise CmdlineError(f"{name}= needs a value", f"use {opt.usage}")
        try:
            values[opt.attr] = opt.parse(value)
        except ValueError as err:
            shown_value = "…" if isinstance(err, Secret) else value
            raise CmdlineError(
                f"invalid {name}={shown_value}: {err}", "fix the kernel command line"
            ) from None
    if "debug" not in values and "rd.debug" in extra:  # dracut's option, read as dracut does
        values["debug"] = extra["rd.debug"] not in _DRACUT_FALSE
    elif "debug" not in values and ("rdinitdebug" in extra or "rdnetdebug" in extra):
        values["debug"] = True  # its old names, on whatever their value (getarg -y)
    check_needed(values)
    values["mode"] = root_mode(values)
    check_packed(values)
    check_kexec(values)
    return BootSpec(**values)


def check_unknown(extra: Mapping[str, str]) -> None:
    """A bootc.* name that is none of ours (bootc.digets=, bootc.Digest=, BOOTC.DIGEST=,
    rd.bootc.digest=) would be ignored like any other module's option, and a pin or policy
    dropped without a word: it stops."""
    for name in extra:
        plain = name.lower().removeprefix("rd.")
        close = difflib.get_close_matches(plain, _BY_NAME, 1, 0.8)
        if plain.startswith("bootc.") or (plain.startswith("bootc") and close):
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise CmdlineError(
                f"unknown option {shown(name)}{guess}",
                "fix the kernel command line (docs/cmdline.md lists the options)",
            )


# An option that means something only with another: given alone, it would be dropped without a
# word (bootc.zram.algorithm=zstd alone is a tmpfs root). An explicit `=0` of the other is kept.
_NEEDS = {
    "zram_algorithm": ("zram_size", "bootc.zram.algorithm=", "bootc.zram=SIZE|N%"),
    "erofs_compress": ("erofs", "bootc.live.erofs.compress=", "bootc.live.erofs"),
    "kexec_kver": ("kexec", "bootc.kexec.kver=", "bootc.kexec"),
    "kexec_reuse_image": ("kexec", "bootc.kexec.reuse-image=", "bootc.kexec"),
}


def check_needed(values: dict[str, Any]) -> None:
    for attr, (needed, option, other) in _NEEDS.items():
        if attr in values and needed not in values:
            raise CmdlineError(f"{option} is given without {other}", f"add {other}, or drop it")


def check_packed(values: dict[str, Any]) -> None:
    """A packed root needs its pin, from a registry too (the artifact that names the image as
    its subject is not signed by it); it combines with bootc.zram (its uppers' device) and
    bootc.kexec, not with bootc.live.erofs (it is a read-only image already)."""
    image: ImageLocation | None = values.get("image")
    packed = image is not None and image.packed
    if packed and "packed_sha256" not in values:
        raise CmdlineError(
            "root=bootc-live:packed:… needs bootc.packed.sha256=",
            "add the arguments pack, build or push-packed printed (cmdline-packed.txt)",
        )
    if packed and image is not None and image.kind != "docker":
        about = [f"{name}=" for name, attr in IMAGE_OPTIONS if attr in values]
        if about:
            raise CmdlineError(
                f"{' and '.join(about)} {'apply' if len(about) > 1 else 'applies'} to an OCI "
                "image, and root= is a packed root from a file or URL (bootc.packed.sha256= "
                "pins it)",
                "drop them",
            )
    if not packed:
        given = [f"bootc.packed.{n}" for n in ("sha256", "image") if f"packed_{n}" in values]
        if given:
            raise CmdlineError(
                f"{' and '.join(given)} given without a packed root",
                "use root=bootc-live:packed:… or drop them",
            )
        return
    mode: RootMode = values["mode"]
    if mode.kind == "erofs":
        raise CmdlineError(
            "a packed root does not combine with bootc.live.erofs", "drop one of them"
        )


# What checks or picks an OCI image: a packed root from a file or URL is no image, so they
# would be dropped without a word (a policy that requires signatures not enforced).
IMAGE_OPTIONS = (
    ("bootc.digest", "digest"),
    ("bootc.platform", "platform"),
    ("bootclabel", "label"),
    ("bootc.policy", "policy"),
    ("bootc.identity", "identity"),
)


def check_kexec(values: dict[str, Any]) -> None:
    """An image (or packed root) in the initramfs is there for stage one only: the next stage
    gets the image's own initramfs, so it must be handed over."""
    image: ImageLocation | None = values.get("image")
    if (
        values.get("kexec")
        and values.get("kexec_reuse_image") is False
        and image is not None
        and image.kind == "path"
    ):
        what = "packed root" if image.packed else "image"
        raise CmdlineError(
            f"bootc.kexec.reuse-image=0 with the {what} in the initramfs: the next stage gets "
            "only the image's own initramfs, so it would not find it",
            f"drop bootc.kexec.reuse-image=0 (the {what} is handed over), or boot from a URL "
            "or a registry",
        )


def root_mode(values: dict[str, Any]) -> RootMode:
    """The one root mode the options ask for; conflicting modes stop here, before any fetch."""
    size: ZramSize | None = values.pop("zram_size", None)
    algorithm: str | None = values.pop("zram_algorithm", None)
    erofs: bool = values.pop("erofs", False)
    compress: str | None = values.pop("erofs_compress", None)
    if size is not None and erofs:
        raise CmdlineError("bootc.zram and bootc.live.erofs were both given", "pick one of them")
    if size is not None:
        return RootMode("zram", size, zram_algorithm=algorithm)
    if erofs:
        return RootMode("erofs", erofs_compress=compress)
    return TMPFS


CONF_DIR = "/etc/cmdline.d"
ETC_CMDLINE = "/etc/cmdline"


CMDLINE_LIMIT = 1 << 20  # bytes of one file of options (the kernel's line is at most 64 KiB)

# What bootc-live-net's cmdline hook writes at boot for a fetched root (rd.neednet=1, ip=dhcp):
# not the user's; a next stage's hook writes its own if its root is fetched.
GENERATED = ("90-bootc-live-net.conf",)


def _lines(
    proc_cmdline: str, conf_dir: str, etc_cmdline: str, skip: Collection[str] = ()
) -> list[list[str]]:
    """The lines dracut's getcmdline reads options from, in its order: those of
    /etc/cmdline.d/*.conf (but the files named in `skip`), of /etc/cmdline, of the kernel's
    command line; each as the shell's `read -r` gives it (without its spaces and tabs at
    either end, and its NUL bytes)."""
    confs = [p for p in sorted(glob.glob(f"{conf_dir}/*.conf")) if os.path.basename(p) not in skip]
    parts: list[list[str]] = [[], [], []]
    for part, path in [*((0, conf) for conf in confs), (1, etc_cmdline), (2, proc_cmdline)]:
        if path != proc_cmdline and _passed_over(path):
            continue
        what = f"command-line file {path}"
        try:  # a FIFO would block the boot for ever, /dev/zero fill the memory: refused
            hint = "remove it from the initramfs"  # a link to /dev/null (masked) is empty
            data = read_file(path, what, CMDLINE_LIMIT, hint, null_is_empty=True)
        except FileNotFoundError:
            if path == proc_cmdline:
                raise
            continue
        except ImageError as err:
            raise CmdlineError(str(err), err.hint) from None
        except OSError as err:
            raise CmdlineError(f"{what} cannot be read: {err.strerror}") from None
        # split's bytes; newlines as text-mode open() gave them (\r and \r\n as \n)
        text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")  # not splitlines: \x1c or U+2028 end no line for the shell
        if lines[-1] == "":
            lines.pop()
        parts[part] += [line.replace("\0", "").strip(" \t") for line in lines]
    return parts


def _passed_over(path: str) -> bool:
    """Whether the shell's `while read … done < FILE` of getcmdline reads nothing of `path`,
    and goes on: a directory (read fails with EISDIR), a socket (the redirection fails)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) or stat.S_ISSOCK(mode)


def _joined(parts: list[list[str]]) -> str:
    """The one line getcmdline makes of the three parts' lines (and dracut-getarg parses): a
    quote left open in one line goes on into the next."""
    return " ".join("".join(" " + line for line in part) for part in parts)


def _commented(line: str) -> bool:
    """Whether a line is one a person would take for a comment (dracut does not)."""
    return line.lstrip().startswith("#")


def read(
    proc_cmdline: str = "/proc/cmdline",
    conf_dir: str | None = None,
    etc_cmdline: str | None = None,
) -> BootSpec:
    """The BootSpec of the running system, from what dracut's hooks read (`_lines`, as one
    line). Every line counts, one starting with # too (dracut has no comments there: skipping
    them, the hooks and this would disagree)."""
    parts = _lines(proc_cmdline, conf_dir or CONF_DIR, etc_cmdline or ETC_CMDLINE)
    commented = {
        word.partition("=")[0]
        for part in parts
        for line in part
        if _commented(line)
        for word in split(line)
    }
    return parse(split(_joined(parts)), commented)


def running(proc_cmdline: str = "/proc/cmdline") -> list[str]:
    """The arguments this boot runs with, wherever they came from (`_lines`, as one line; a
    line starting with # is taken for a comment here): a next stage's initramfs may have
    none of this one's /etc/cmdline.d."""
    parts = _lines(proc_cmdline, CONF_DIR, ETC_CMDLINE, skip=GENERATED)
    return split(_joined([[line for line in part if not _commented(line)] for part in parts]))


def reference() -> str:
    """The kernel command-line reference (docs/cmdline.md), generated from OPTIONS."""
    lines = [
        "# Kernel command line",
        "",
        "Generated from `src/bootc_live/runtime/cmdline.py` (`bootc-live cmdline-reference`); a "
        "test keeps the two equal.",
        "",
        "Options also come from `/etc/cmdline.d/*.conf` and `/etc/cmdline` in the initramfs, "
        "read as dracut reads them (every line, `#` is no comment; the kernel's command line "
        "wins). The last occurrence of an option wins; a bare boolean `name` is true, "
        "`name=0|no|off|false` is false. An invalid value stops the boot with a message naming "
        "the option; so does an unknown `bootc.` option (a typo would drop a pin or a policy), "
        "and an option of a mode that was not asked for.",
        "",
        "| option | meaning | default |",
        "|---|---|---|",
    ]
    for opt in OPTIONS:
        lines.append(f"| `{opt.usage}` | {opt.help} | {opt.default} |")
    return "\n".join(lines) + "\n"
