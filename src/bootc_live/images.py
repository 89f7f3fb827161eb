"""Image references on the host command line: SOURCE arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .runtime.errors import BootcLiveError
from .runtime.sources import ArchiveSource, ImageSource, LayoutSource


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
