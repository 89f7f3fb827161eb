"""Descriptors, and readers that verify a blob's digest and size while it streams."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import ImageError, VerificationError

_DIGEST = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")


NAME_LIMIT = 255  # characters of a reference's name, its domain included (distribution's)

# The OCI digest grammar, with an encoded part of 32 characters or more (every registered
# algorithm's): `host:5000` is not one, so `me:pw@host:5000` is no digest.
_DIGEST_SHAPE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


def odd_at(reference: str) -> bool:
    """Whether a docker reference has an `@` that is not a digest's (its only `@`): a
    USER:PASSWORD@ perhaps, so the reference is refused without being shown."""
    before, at, after = reference.rpartition("@")
    return bool(at) and ("@" in before or not _DIGEST_SHAPE.fullmatch(after))


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_PORT = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?")


def registry_host(text: str) -> bool:
    """Whether `text` is a registry's HOST[:PORT] as references write it: DNS labels or an
    IPv4 address, or an IPv6 address in brackets; a port from 1 to 65535. No scheme, no path."""
    m = _HOST_PORT.fullmatch(text)
    if m is None:
        return False
    return m.group(1) is None or 0 < int(m.group(1)) < 65536


def check_digest(digest: object, what: str) -> str:
    """Return `digest` if it is a well-formed sha256/sha512 digest, else raise ImageError."""
    if isinstance(digest, str) and _DIGEST.fullmatch(digest):
        return digest
    algorithm, colon, _ = str(digest).partition(":")
    if isinstance(digest, str) and colon and algorithm not in ("sha256", "sha512"):
        raise ImageError(
            f"{what}: digest algorithm {algorithm[:20]!r} is not supported",
            "pin the image by its sha256: or sha512: digest",
        )
    raise ImageError(f"{what}: invalid digest {str(digest)[:140]!r}")


def short(digest: str) -> str:
    """`sha256:0123456789ab…` for messages."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}…"


# A platform's fields that are strings (OCI image-spec; os.features and features are lists).
_PLATFORM_STRINGS = ("os", "architecture", "variant", "os.version")


def _strings(*values: object) -> bool:
    """Whether all are strings or null (which Go decodes as ""), as a descriptor's mediaType,
    annotations and platform fields must be: Go's decoder refuses a number there, which the
    lookups of names and platforms here would meet as a TypeError."""
    return all(value is None or isinstance(value, str) for value in values)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, obj: Any, what: str) -> Descriptor:
        """Validate and convert a descriptor object from a manifest or index."""
        if not isinstance(obj, dict):
            raise ImageError(f"{what}: descriptor is not an object")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{what}: descriptor has no valid size")
        annotations = obj.get("annotations") or {}
        platform = obj.get("platform")
        if not isinstance(annotations, dict) or (
            platform is not None and not isinstance(platform, dict)
        ):
            raise ImageError(f"{what}: malformed descriptor")
        media_type = obj.get("mediaType")
        fields = (platform.get(key) for key in _PLATFORM_STRINGS) if platform else ()
        if not _strings(media_type, *annotations.values(), *fields):
            raise ImageError(
                f"{what}: malformed descriptor (a mediaType, annotation or platform field that "
                "is not a string)"
            )
        return cls(
            media_type=media_type or "",
            digest=check_digest(obj.get("digest"), what),
            size=size,
            annotations={key: value or "" for key, value in annotations.items()},
            platform=platform,
        )

    @property
    def plain_tar(self) -> bool:
        """A layer blob declared an uncompressed tar (`buildah commit -D`, docker's diff.tar)."""
        return self.media_type.endswith(".tar")


def new_hash(digest: str) -> Any:
    """A hashlib object for the algorithm of `digest`."""
    return hashlib.new(digest.partition(":")[0])


def digest_of(data: bytes, like: str) -> str:
    """The digest of `data` in the algorithm of the digest `like` (sha256 or sha512)."""
    hasher = new_hash(like)
    hasher.update(data)
    return f"{like.partition(':')[0]}:{hasher.hexdigest()}"


class VerifyingReader:
    """Reads a blob and checks, at its end, that its size and digest match the descriptor.

    Reading past the descriptor's size is an error at once, so a lying server or archive cannot
    feed more than it declared. `finish()` drains the rest and judges the digest. A `trusted`
    blob (one an earlier boot stage verified: the kexec handover) has its size checked only.
    """

    def __init__(self, raw: BinaryIO, desc: Descriptor, label: str, trusted: bool = False) -> None:
        self._raw = raw
        self._desc = desc
        self._label = label
        self._hash = None if trusted else new_hash(desc.digest)
        self._oversized: VerificationError | None = None
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        """Read up to n bytes (all remaining bytes when n < 0)."""
        remaining = self._desc.size - self.done
        # Ask for one byte more than is left, so excess data is caught at once.
        data = self._raw.read(remaining + 1 if n < 0 or n > remaining else n)
        if len(data) > remaining:
            self._oversized = VerificationError(
                f"{self._label} {short(self._desc.digest)} is larger than its descriptor's "
                f"{self._desc.size} bytes",
                "the image is corrupt or the source changed",
            )
        if self._oversized:
            raise self._oversized
        if self._hash:
            self._hash.update(data)
        self.done += len(data)
        return data

    def finish(self) -> None:
        """Drain the blob to its end, then check size and digest."""
        while self.read(1 << 20):
            pass
        if self.done != self._desc.size:
            raise VerificationError(
                f"{self._label} {short(self._desc.digest)} is truncated: "
                f"{self.done} of {self._desc.size} bytes",
                "the image is corrupt or the transfer was cut short",
            )
        if self._hash is None:
            return
        actual = f"{self._desc.digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if actual != self._desc.digest:
            raise VerificationError(
                f"{self._label} {short(self._desc.digest)} digest mismatch "
                f"(expected {self._desc.digest}, got {actual})",
                "the image on the server changed or is corrupt",
            )


def read_verified(raw: BinaryIO, desc: Descriptor, label: str, limit: int = 16 << 20) -> bytes:
    """Read a whole small blob (manifest, config, index) and verify it."""
    if desc.size > limit:
        raise ImageError(f"{label} {short(desc.digest)} is implausibly large ({desc.size} bytes)")
    reader = VerifyingReader(raw, desc, label)
    parts = []
    while reader.done < desc.size and (data := reader.read(desc.size - reader.done)):
        parts.append(data)  # a network stream may hand the blob over in several pieces
    reader.finish()
    return b"".join(parts)
