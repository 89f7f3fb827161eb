"""Image references on the host command line: SOURCE arguments."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field

from . import auth, progress, scratch
from .runtime import cmdline, http, registry
from .runtime.blobs import Descriptor
from .runtime.errors import BootcLiveError, ImageError, console_line, for_host, shown
from .runtime.oci import (
    Image,
    Platform,
    check_ref_name,
    choosable_platform,
    offered_platforms,
    resolve,
    tag_part,
)
from .runtime.run import CommandError, run
from .runtime.sources import ArchiveSource, ImageSource, LayoutSource, kind_of, looked_at

TRANSPORTS = (
    "oci-archive:PATH[:REF], oci:DIR[:REF], docker-archive:PATH[:REF], dir:DIR, "
    "containers-storage:[STORE]NAME, docker://REF or an http(s):// URL"
)
# Transports whose PATH ends at the first colon, the rest naming the image (as skopeo parses).
PATH_TRANSPORTS = ("oci", "oci-archive", "docker-archive", "dir")
# Transports read through skopeo (see CopiedSource).
SKOPEO_TRANSPORTS = ("containers-storage", "docker-archive", "dir")
HOST_POLICY = http.Policy(
    retries=3, total=120.0, stall=30.0, max_backoff=2.0, connections=http.HOST_CONNECTIONS
)


class UsageError(BootcLiveError):
    """The command line itself is wrong."""


@dataclass(frozen=True)
class RegistryOptions:
    """How docker:// sources are reached from the host."""

    auth_file: str | None = None  # None: where podman, skopeo and docker keep them (auth.py)
    ca: str | None = None  # a CA bundle trusted besides the system's
    unsecure: bool = False  # plain http and unverified TLS allowed
    mirrors: tuple[str, ...] = ()
    policy: http.Policy = HOST_POLICY  # retries and stall timeout (--retries, --timeout)
    compress_copies: bool = False  # skopeo's copies keep compressed layers (build writes them)


def _say(message: str) -> None:
    """What a source says as it goes (the runtime's words: kernel arguments become flags)."""
    print(console_line(f"bootc-live: {for_host(message)}"), file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SourceRef:
    """A parsed SOURCE argument: transport, path (or registry reference) and optional tag."""

    transport: str
    path: str
    tag: str | None
    registry: RegistryOptions = field(default_factory=RegistryOptions)

    @classmethod
    def parse(cls, text: str, options: RegistryOptions | None = None) -> SourceRef:
        options = options or RegistryOptions()
        if text.startswith("docker://"):
            ref = registry.Reference.parse(text[len("docker://") :])
            return cls("docker", str(ref), ref.tag, options)
        if text.startswith(("http://", "https://")):
            # An oci-archive at a URL, read as the boot reads it (in place when Range works),
            # checked as root= is (an unclosed [ was a traceback); not repeated if it may hold
            # a secret.
            try:
                cmdline.url_root(text)
            except cmdline.Secret as err:
                raise UsageError(f"the URL of SOURCE: {for_host(str(err))}", "fix SOURCE") from None
            except ValueError as err:
                raise UsageError(f"{shown(text)}: {for_host(str(err))}", "fix SOURCE") from None
            return cls("url", text, None, options)
        transport, sep, rest = text.partition(":")
        if not sep or not rest or transport not in (*PATH_TRANSPORTS, "containers-storage"):
            hint = f"use {TRANSPORTS}"
            if transport == "docker-daemon":
                hint = f"podman and buildah keep images in containers-storage: {hint}"
            raise UsageError(f"unsupported image source {text!r}", hint)
        if transport == "containers-storage":
            return cls(transport, rest, None, options)  # skopeo reads [STORE]NAME
        path, _, name = (rest, "", "") if transport == "dir" else rest.partition(":")
        if not path:
            raise UsageError(f"{text!r} names no file", f"use {transport}:PATH[:REF]")
        if name and not (transport == "docker-archive" and re.fullmatch(r"@\d+", name)):
            try:
                check_ref_name(name)
            except ValueError as err:
                raise UsageError(
                    f"{shown(name)} in {transport}:PATH:REF: {err}", "fix REF"
                ) from None
        return cls(transport, path, name or None, options)

    def resolve(self, platform: Platform | None = None, digest: str | None = None) -> Image:
        """Open the source and find the image (`image.source` is to be closed by the caller)."""
        source = self.open(platform, digest)
        label = None if self.transport in SKOPEO_TRANSPORTS else self.tag  # skopeo picked it
        if isinstance(source, CopiedSource) and source.pinned:
            digest = None  # checked on podman's own manifest: the gzip copy's is another
        try:
            return resolve(source, label=label, platform=platform, digest=digest, foreign=_say)
        except BaseException:
            source.close()
            raise

    def open(self, platform: Platform | None = None, digest: str | None = None) -> ImageSource:
        """The source; `platform` is the one a skopeo copy takes from a manifest list, `digest`
        the one it must have before a copy compresses it (CopiedSource)."""
        if self.transport == "docker":
            options = self.registry
            ref = registry.Reference.parse(self.path)
            return registry.RegistrySource(
                ref,
                options.policy,
                _say,
                credentials=auth.Lookup(options.auth_file),
                unsecure=options.unsecure,
                mirrors=options.mirrors,
                cafile=options.ca,
            )
        if self.transport in SKOPEO_TRANSPORTS:
            return CopiedSource(self, self.registry.compress_copies, platform, digest)
        if self.transport == "url":
            return http.open_url(
                self.path,
                self.registry.policy,
                _say,
                tempfile.gettempdir(),
                unsecure=self.registry.unsecure,
                cafile=self.registry.ca,
            )
        if self.transport == "oci":
            return LayoutSource(self.path)
        return ArchiveSource(self.path)

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        if self.transport == "containers-storage":
            return f"containers-storage:{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")


class CopiedSource(LayoutSource):
    """An image podman or buildah keeps (containers-storage) or saved (docker-archive), read
    through skopeo: `skopeo copy SOURCE oci:TMPDIR`, then read as a layout; the copy is
    deleted on close(), after a failure or a signal too.

    Why skopeo into a layout, not `podman image mount`: every command needs the image's
    layers as tars with their digests (build writes them into rootfs.img, unpack verifies each
    against the config's diff_ids), and a mount gives only the merged tree; containers-storage
    keeps layers as trees (vfs, overlay), so some tool has to write them as tars once, and
    skopeo is the one that does it with the digests podman recorded, for both transports and
    for every store spec `[driver@root+runroot]`. The copy is on disk once, in $TMPDIR
    (default /var/tmp): without `compress`, layers stay uncompressed tars (no gzip pass, the
    fastest copy and the fastest read; podman's own manifest, the digest podman shows) for
    commands that only read them; `build`, which puts the blobs into its artifacts, keeps
    skopeo's gzip. `platform` is what skopeo takes from a manifest list (a dir: of `skopeo
    copy --all`): this machine's unless told. A `pinned` digest (--digest: what podman shows)
    is checked on an uncompressed copy first, which skopeo then compresses (the gzip copy's
    manifest has a digest of its own); `pinned` is then True.
    """

    def __init__(
        self,
        ref: SourceRef,
        compress: bool,
        platform: Platform | None = None,
        digest: str | None = None,
    ) -> None:
        if ref.transport == "docker-archive" and not os.path.isfile(looked_at(ref.path)):
            hint = "give the file podman save wrote"
            if os.path.isdir(ref.path):
                what = "is a directory, not a file"
            elif os.path.exists(ref.path):  # a FIFO (/dev/fd/N of <(…)), a device
                what = f"is not a regular file ({kind_of(os.stat(ref.path).st_mode)})"
                hint = "save the archive to a file first"
            else:
                what = "no such file"
            raise UsageError(f"{ref.path}: {what}", hint)
        manifest = os.path.join(ref.path, "manifest.json")
        if ref.transport == "dir" and not os.path.isfile(looked_at(manifest)):
            raise UsageError(
                f"{ref.path} is not a dir: layout (no manifest.json)",
                "give the directory skopeo copy … dir:DIR or podman save --format docker-dir wrote",
            )
        store = _store_root(ref)
        if store is not None and not os.path.isdir(store):
            # skopeo would make a new, empty store there (and its RUNROOT), left behind
            raise UsageError(
                f"{ref}: {store}, the store's ROOT, is no directory",
                "fix the store's path (podman info --format {{.Store.GraphRoot}} shows it)",
            )
        if shutil.which("skopeo") is None:
            raise UsageError(
                f"{ref.transport}: SOURCEs are read with skopeo, which is missing",
                "apt-get install skopeo (or ./setup)",
            )
        work = scratch.make_dir("bootc-live-copy.")
        if ":" in work:  # skopeo's oci:PATH ends PATH at its first colon
            scratch.remove(work)
            raise UsageError(
                f"{os.path.dirname(work)}: skopeo cannot copy into a path with a ':'",
                "set TMPDIR to a directory whose path has none",
            )
        self.work = work
        try:
            # bootc-live's own check of the copy (hostpolicy) is the one policy that applies.
            # A layout holds no signatures (what skopeo copies is checked without any, see
            # docs/signatures.md): a dir: or a store that has some would stop the copy.
            argv = ["skopeo", "--insecure-policy", *_platform_options(platform), "copy"]
            argv += ["--quiet", "--remove-signatures"]
            # skopeo gzips every uncompressed layer it writes into an oci: layout unless told
            # to keep them (--dest-decompress is dir:'s alone: here it changed nothing); kept,
            # podman's own manifest is copied, the image digest podman shows.
            # A pinned digest is podman's: checked on an uncompressed copy, then compressed.
            recompress = compress and digest is not None
            first = "plain" if recompress else "layout"
            argv += [] if compress and not recompress else ["--dest-oci-accept-uncompressed-layers"]
            with progress.Ticker(f"copying {ref} with skopeo"):
                names = _skopeo_names(ref)
                for i, name in enumerate(names):
                    try:
                        run([*argv, name, f"oci:{work}/{first}"])
                        break
                    except CommandError as err:
                        if ref.transport == "docker-archive" and _is_oci_archive(ref.path):
                            raise ImageError(
                                f"{ref.path} is an oci-archive, not a docker-archive",
                                f"read it as oci-archive:{ref.path}",
                            ) from None
                        # The next name only when skopeo found no image by this one: a copy
                        # that failed otherwise (a full $TMPDIR) is told as itself.
                        if i + 1 == len(names) or not _NOT_THERE.search(err.detail):
                            raise _skopeo_failed(ref, err.detail, work, name, platform) from None
                        scratch.remove(os.path.join(work, first))
            if recompress:
                assert digest is not None
                _check_pinned(os.path.join(work, first), str(ref), platform, digest)
                with progress.Ticker(f"compressing the copy of {ref} with skopeo"):
                    argv = ["skopeo", "--insecure-policy", "copy", "--quiet"]
                    run([*argv, f"oci:{work}/plain", f"oci:{work}/layout"])
                scratch.remove(os.path.join(work, "plain"))
            super().__init__(os.path.join(work, "layout"))
        except BaseException:
            scratch.remove(work)
            raise
        self.description = str(ref)
        self.pinned = recompress

    def close(self) -> None:
        scratch.remove(self.work)


def _check_pinned(layout: str, what: str, platform: Platform | None, digest: str) -> None:
    """That the uncompressed copy at `layout` (podman's own manifest) of the SOURCE `what` has
    `digest`, as resolve checks it (the index's or the image's); ImageError as resolve says."""
    source = LayoutSource(layout)
    source.description = what
    try:
        resolve(source, platform=platform, digest=digest, foreign=lambda _: None)
    finally:
        source.close()


# What skopeo says when containers-storage has no image by a name (or ID).
_NOT_THERE = re.compile(
    r"does not resolve to an image ID|identifier is not an image|image not known"
)


def _platform_options(platform: Platform | None) -> list[str]:
    """skopeo's choice from a manifest list (a dir: or a store may hold one): the platform
    asked, not this machine's; a single image is copied whatever its platform (resolve
    judges it then)."""
    if platform is None:
        return []
    options = ["--override-os", platform.os, "--override-arch", platform.architecture]
    return options + (["--override-variant", platform.variant] if platform.variant else [])


def _skopeo_failed(
    ref: SourceRef, detail: str, work: str, name: str, platform: Platform | None
) -> ImageError:
    """skopeo's failure: a copy that could not be written (where $TMPDIR is) is not the
    SOURCE's fault; a manifest list without the platform asked is told with those it has."""
    said = _skopeo_says(detail)
    if work in said or "no space left on device" in said.lower():
        return ImageError(
            f"{ref}: skopeo could not write its copy in {os.path.dirname(work)} ({said})",
            "free space there, or set TMPDIR to a directory with room for the image",
        )
    if ref.transport == "containers-storage" and "from manifest list" in said:
        # podman manifest create/add: skopeo reads the list but not its images from the store
        return ImageError(
            f"{ref}: skopeo cannot read an image of this manifest list ({said})",
            f"write the list out first: podman manifest push --all {ref.path} "
            "oci-archive:FILE, then read oci-archive:FILE (with --platform), or name the "
            "platform's image itself",
        )
    listed = _listed_platforms(name) if "no image found in" in said else None
    if listed is not None:  # a manifest list without the platform asked
        offered, choosable = listed
        return ImageError(
            f"{ref} has no image for platform {platform or Platform.host()} (offers: "
            f"{', '.join(offered) or 'none'})",
            f"choose one with --platform {choosable or 'OS/ARCH[/VARIANT]'}",
        )
    if "no image found in" in said:
        return ImageError(
            f"{ref}: skopeo cannot read it ({said})",
            "choose a platform it has with --platform OS/ARCH[/VARIANT] "
            "(skopeo inspect --raw SOURCE lists them)",
        )
    return ImageError(f"{ref}: skopeo cannot read it ({said})", _SKOPEO_HINTS[ref.transport])


def _listed_platforms(name: str) -> tuple[list[str], str | None] | None:
    """The platforms the manifest list skopeo reads as `name` offers, and the first one
    --platform picks (None when skopeo cannot say)."""
    try:
        raw = run(["skopeo", "inspect", "--raw", name], capture=True, timeout=120).stdout
        manifests = json.loads(raw).get("manifests")
        descs = [Descriptor.from_json(m, name) for m in manifests]
    except (BootcLiveError, ValueError, AttributeError, TypeError):
        return None
    return offered_platforms(descs), choosable_platform(descs)  # (as shown: escaped)


_SKOPEO_HINTS = {
    "containers-storage": "check the name with podman images (as the same user: root's "
    "images are not yours), or name the store: containers-storage:[vfs@ROOT+RUNROOT]NAME",
    "docker-archive": "check the file (podman save -o FILE NAME writes one) and, for an "
    "archive of several images, name one: docker-archive:FILE:NAME:TAG",
    "dir": "check the directory (skopeo copy … dir:DIR writes one)",
}


def _store_root(ref: SourceRef) -> str | None:
    """The ROOT a containers-storage SOURCE names in `[DRIVER@ROOT+RUNROOT:OPTIONS]NAME`."""
    m = re.match(r"\[([^\]]*)\]", ref.path) if ref.transport == "containers-storage" else None
    if m is None:
        return None
    spec = m.group(1).partition("@")[2] if "@" in m.group(1) else m.group(1)
    root, plus, _ = spec.partition("+")
    return (root if plus else root.partition(":")[0]) or None


def _is_oci_archive(path: str) -> bool:
    """Whether a file skopeo could not read as a docker-archive is an oci-archive (what
    `podman save --format oci-archive` writes): index.json, and no manifest.json."""
    try:
        with tarfile.open(path) as tar:
            names = {os.path.normpath(n) for n in tar.getnames()}
    except (OSError, tarfile.TarError):
        return False
    return "index.json" in names and "manifest.json" not in names


def _skopeo_says(line: str) -> str:
    """The message of skopeo's log line `time=… level=fatal msg="…"`."""
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return m.group(1).replace('\\"', '"') if m else line


def _skopeo_names(ref: SourceRef) -> list[str]:
    """What skopeo is asked for, in turn: a short containers-storage name (`myimg` of
    `podman build -t myimg`) is podman's localhost/myimg first, then skopeo's own reading of
    it (docker.io/library/myimg), as podman looks them up."""
    name = ref.path
    first = name.split("/", 1)[0]
    qualified = "/" in name and ("." in first or ":" in first or first == "localhost")
    by_id = re.fullmatch(r"(?:sha256:)?[0-9a-f]{64}", name) is not None  # `facade` is a name
    if ref.transport != "containers-storage" or qualified or by_id or name.startswith("["):
        return [_skopeo_name(ref)]
    return [f"containers-storage:localhost/{name}", _skopeo_name(ref)]


def _skopeo_name(ref: SourceRef) -> str:
    if ref.transport == "containers-storage" and re.fullmatch(r"sha256:[0-9a-f]{64}", ref.path):
        # An ID as `podman images --no-trunc` shows it: skopeo knows it by its hex alone.
        return f"containers-storage:{ref.path.partition(':')[2]}"
    if ref.transport in ("containers-storage", "dir"):
        return f"{ref.transport}:{ref.path}"
    if not ref.tag:
        return f"docker-archive:{ref.path}"
    return f"docker-archive:{ref.path}:{_archive_name(ref.path, ref.tag)}"


def _archive_name(path: str, wanted: str) -> str:
    """The name in a docker-archive that REF means: itself when listed (or `@N`), else the one
    full name whose tag part is that bare TAG (`latest` → `localhost/name:latest`) or that
    ends in /REF (`name:tag` → `localhost/name:tag`), when only one does."""
    if wanted.startswith("@"):
        return wanted
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            listed = json.load(member) if member else []
        names = [str(n) for image in listed for n in image.get("RepoTags") or []]
    except (OSError, KeyError, ValueError, tarfile.TarError, AttributeError, TypeError):
        raise UsageError(
            f"{path} is not a docker-archive (no readable manifest.json)",
            "give the file podman save (or docker save) wrote",
        ) from None
    if wanted in names:
        return wanted
    matches = [
        n
        for n in names
        if n.endswith("/" + wanted) or (":" not in wanted and tag_part(n) == wanted)
    ]
    if len(matches) == 1:
        return matches[0]
    raise UsageError(
        f"{path} has {'several images named' if matches else 'no image named'} {wanted!r} "
        f"(it has: {', '.join(names) or 'no names'})",
        f"name one as listed: docker-archive:{path}:NAME",
    )
