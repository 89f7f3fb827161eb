"""Image references on the host command line: SOURCE arguments."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from .runtime import http, registry
from .runtime.errors import BootcLiveError
from .runtime.oci import Image, Platform, resolve
from .runtime.sources import ArchiveSource, ImageSource, LayoutSource

TRANSPORTS = "oci-archive:PATH[:TAG], oci:DIR[:TAG], docker://REF or an http(s):// URL"


class UsageError(BootcLiveError):
    """The command line itself is wrong."""


def default_auth_file() -> str | None:
    """Where podman, skopeo and docker keep registry credentials, first found."""
    candidates = [os.environ.get("REGISTRY_AUTH_FILE", "")]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers/auth.json"))
    candidates += [
        os.path.expanduser("~/.config/containers/auth.json"),
        os.path.expanduser("~/.docker/config.json"),
    ]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


@dataclass(frozen=True)
class RegistryOptions:
    """How docker:// sources are reached from the host."""

    auth_file: str | None = None  # None: the usual places (default_auth_file)
    ca: str | None = None  # a CA bundle trusted besides the system's
    unsecure: bool = False  # plain http and unverified TLS allowed
    mirrors: tuple[str, ...] = ()


def _say(message: str) -> None:
    print(f"bootc-live: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SourceRef:
    """A parsed SOURCE argument: transport, path (or registry reference) and optional tag."""

    transport: str
    path: str
    tag: str | None
    registry: RegistryOptions = field(default_factory=RegistryOptions)

    @classmethod
    def parse(cls, text: str, options: RegistryOptions | None = None) -> SourceRef:
        if text.startswith("docker://"):
            ref = registry.Reference.parse(text[len("docker://") :])
            return cls("docker", str(ref), ref.tag, options or RegistryOptions())
        if text.startswith(("http://", "https://")):
            # An oci-archive at a URL, read as the boot reads it (in place when Range works).
            return cls("url", text, None, options or RegistryOptions())
        transport, sep, rest = text.partition(":")
        if not sep or transport not in ("oci", "oci-archive") or not rest:
            raise UsageError(f"unsupported image source {text!r}", f"use {TRANSPORTS}")
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and tail and "/" not in tail and not os.path.exists(rest):
            path, tag = head, tail
        return cls(transport, path, tag, options or RegistryOptions())

    def resolve(self, platform: Platform | None = None, digest: str | None = None) -> Image:
        """Open the source and find the image (`image.source` is to be closed by the caller)."""
        source = self.open()
        try:
            return resolve(source, label=self.tag, platform=platform, digest=digest)
        except BaseException:
            source.close()
            raise

    def open(self) -> ImageSource:
        if self.transport == "docker":
            options = self.registry
            return registry.RegistrySource(
                registry.Reference.parse(self.path),
                http.Policy(total=120.0),
                _say,
                auth_file=options.auth_file or default_auth_file(),
                unsecure=options.unsecure,
                mirrors=options.mirrors,
                cafile=options.ca,
            )
        if self.transport == "url":
            return http.open_url(
                self.path,
                http.Policy(total=120.0),
                _say,
                tempfile.gettempdir(),
                unsecure=self.registry.unsecure,
                cafile=self.registry.ca,
            )
        if self.transport == "oci":
            return LayoutSource(self.path)
        return ArchiveSource(self.path)
