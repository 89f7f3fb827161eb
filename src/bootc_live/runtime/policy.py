"""containers-policy.json(5): which signatures an image needs, and whether it has them.

Parsed strictly, as containers/image parses it: an unknown, duplicated or malformed entry is a
PolicyError naming its JSON path, never an accept. The requirements that apply to an image are
those of the most specific scope (containers/image's lookup: the image itself, its repository,
each parent namespace, the host, `*.` wildcards of the host, the transport's "", `default`);
all of them must hold, and any one signature that satisfies a requirement is enough for it.
Signatures are verified by `signatures` (gpgv, openssl); this module decides.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import signatures, strictjson
from .blobs import NAME_LIMIT
from .errors import BootcLiveError, ImageError, shown
from .signatures import BAD_SIGNATURE, INVALID_SIGNATURE, UNKNOWN_KEY, Signature, SignatureError
from .sources import read_file

# Reasons a PolicyError gives (tests and the boot's status match on them); a signature that
# does not verify gives the reason of its SignatureError.
NO_SIGNATURE = "no signature"
DIGEST_MISMATCH = "digest mismatch"
IDENTITY_MISMATCH = "identity mismatch"
REJECT = "reject"
KEY_MISSING = "key missing"
MALFORMED = "malformed policy"
BAD_REFERENCE = "invalid image name"
NOT_EVALUATED = "transport not evaluated"
# How far a signature got before it failed: the furthest names the failure of a requirement.
_STAGE = {
    UNKNOWN_KEY: 0,
    BAD_SIGNATURE: 1,
    INVALID_SIGNATURE: 2,
    DIGEST_MISMATCH: 3,
    IDENTITY_MISMATCH: 4,
}

DEFAULT_PATH = "/etc/containers/policy.json"
POLICY_LIMIT = 1 << 20
KEY_LIMIT = 64 << 20  # bytes of one key file (a keyring of thousands of keys is smaller)

# docker/distribution's reference grammar.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# A host is a DNS name, an IPv4 address, or an IPv6 address in brackets (distribution's
# reference grammar since 2023; containers' registries are named so: [::1]:5000).
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Go's \w: ASCII only (Python's is Unicode)
# go-digest's registered algorithms, lower-case hex of their length: a claim with any other
# digest is no reference containers/image can parse, so no signature's identity.
_DIGEST = r"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}"
_REFERENCE = re.compile(
    rf"((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?"
)
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_DOMAIN_RE = re.compile(_DOMAIN)
_NAME_WITH_DOMAIN = re.compile(rf"{_DOMAIN}/{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_WILDCARD = re.compile(rf"\*\.{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*")


class PolicyError(BootcLiveError):
    """The policy is malformed, or it does not accept the image; `reason` says which way."""

    def __init__(self, message: str, reason: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason


@dataclass(frozen=True)
class DockerReference:
    """A Docker reference in its fully expanded form (docker.io/library/busybox:latest)."""

    name: str  # domain/path, normalised
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> DockerReference:
        """distribution's ParseNormalizedNamed; ValueError when `text` is not a reference."""
        if _IDENTIFIER.fullmatch(text):
            raise ValueError("a 64-hex image ID is not a reference")
        m = _REFERENCE.fullmatch(text)
        if not m:
            raise ValueError("not a valid Docker reference (lower-case path, :TAG, @DIGEST)")
        name, tag, digest = m.groups()
        first, slash, rest = name.partition("/")
        if not slash or not (("." in first or ":" in first) or first == "localhost"):
            first, rest = "docker.io", name
            if not _PATH.fullmatch(rest):  # the grammar took an upper-case first part for a host
                raise ValueError("repository name must be lower-case")
        if first == "index.docker.io":
            first = "docker.io"
        if first == "docker.io" and "/" not in rest:
            rest = f"library/{rest}"
        full = f"{first}/{rest}"
        if len(full) > NAME_LIMIT:
            raise ValueError(f"repository name longer than {NAME_LIMIT} characters")
        return cls(full, tag, digest)

    @property
    def domain(self) -> str:
        return self.name.partition("/")[0]

    @property
    def path(self) -> str:
        """The repository without its domain (what a lookaside store is laid out by)."""
        return self.name.partition("/")[2]

    @property
    def name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"


def docker_namespaces(ref: DockerReference) -> list[str]:
    """The scopes a Docker image is looked up by, most specific first (containers/image's
    PolicyConfigurationIdentity, then its PolicyConfigurationNamespaces): the image, its
    repository, each parent namespace, the host[:port], then `*.` wildcards of the host."""
    if ref.tag is not None and ref.digest is not None:
        raise ValueError("a reference with both a tag and a digest has no policy identity")
    if ref.name_only:
        raise ValueError("a reference without a tag or digest has no policy identity")
    scopes = [str(ref)]
    name = ref.name
    while True:
        scopes.append(name)
        name, slash, _ = name.rpartition("/")
        if not slash:
            break
    host = "" if ref.domain.startswith("[") else ref.domain.partition(":")[0]
    while "." in host:
        host = host.partition(".")[2]
        scopes.append(f"*.{host}")
    return scopes


def path_namespaces(path: str) -> list[str]:
    """The scopes of an image in a file or directory: the path, then its parents but `/`."""
    scopes = []
    while path not in ("/", ""):
        scopes.append(path)
        path = path.rpartition("/")[0]
    return scopes


@dataclass(frozen=True)
class Identity:
    """A `signedIdentity`: what the signature's docker-reference must be for this image."""

    type: str = "matchRepoDigestOrExact"
    reference: DockerReference | None = None  # exactReference, exactRepository
    prefix: str = ""  # remapIdentity
    signed_prefix: str = ""

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        """Whether `signed` (from a verified signature) is acceptable for `image`
        (None for transports without a Docker identity: oci, oci-archive, dir)."""
        try:
            claim = DockerReference.parse(signed)
        except ValueError:
            return False
        if self.type == "exactReference":
            assert self.reference is not None
            return not claim.name_only and str(claim) == str(self.reference)
        if self.type == "exactRepository":
            assert self.reference is not None
            return claim.name == self.reference.name
        if image is None:
            return False
        if self.type == "matchExact":
            return not image.name_only and not claim.name_only and str(claim) == str(image)
        if self.type == "matchRepository":
            return claim.name == image.name
        if self.type == "remapIdentity":
            image = self._remapped(image)
            if image is None:
                return False
        return _repo_digest_or_exact(image, claim)

    def _remapped(self, image: DockerReference) -> DockerReference | None:
        name = image.name
        if not (name == self.prefix or name.startswith(self.prefix + "/")):
            return image
        rewritten = str(image).replace(self.prefix, self.signed_prefix, 1)
        try:
            remapped = DockerReference.parse(rewritten)
        except ValueError:
            return None
        # As containers/image: the rewritten name must be canonical as it stands, not only
        # after normalising (a bare "busybox" is not docker.io/library/busybox here).
        return remapped if str(remapped) == rewritten else None

    def describe(self) -> str:
        if self.reference is not None:
            return f"{self.type} {self.reference}"
        if self.type == "remapIdentity":
            return f"remapIdentity {self.prefix} → {self.signed_prefix}"
        return self.type


def _repo_digest_or_exact(image: DockerReference, claim: DockerReference) -> bool:
    if claim.name_only:
        return False
    if image.tag is not None:
        return str(claim) == str(image)
    if image.digest is not None:
        # The manifest is checked against the signed digest separately.
        return claim.name == image.name
    return False


@dataclass(frozen=True)
class Requirement:
    """One policy requirement; `where` is its JSON path in the policy file."""

    type: str  # insecureAcceptAnything, reject, signedBy, sigstoreSigned
    where: str
    key_paths: tuple[str, ...] = ()
    key_data: bytes | None = None
    identity: Identity = Identity()

    @property
    def kind(self) -> str:
        """The signature kind this requirement verifies ("" when it verifies none)."""
        return {"signedBy": "simple", "sigstoreSigned": "sigstore"}.get(self.type, "")

    def keys(self) -> list[tuple[str, bytes]]:
        """(name, contents) of each key file, or of the inline keyData."""
        if self.key_data is not None:
            return [(f"keyData of {self.where}", self.key_data)]
        return [(path, _read_key(path, self.where)) for path in self.key_paths]


def _read_key(path: str, where: str) -> bytes:
    """A key file's contents: a regular file of at most KEY_LIMIT bytes (sources.read_file)."""
    what = f"{path}: key named by {where}"
    try:
        return read_file(path, what, KEY_LIMIT, "name a key file in the policy")
    except ImageError as err:
        raise PolicyError(str(err), KEY_MISSING, err.hint) from None
    except OSError as err:
        raise PolicyError(f"{what} cannot be read: {err.strerror}", KEY_MISSING) from None


@dataclass(frozen=True)
class Verdict:
    """An accepted image: the scope that applied and the key that verified each requirement."""

    scope: str
    keys: tuple[str, ...]

    def line(self) -> str:
        if not self.keys:
            return f"signatures: not required (policy scope {self.scope})"
        return f"signatures: verified by {', '.join(self.keys)} (policy scope {self.scope})"


# Transports containers-policy.json knows; only some have images bootc-live verifies.
DOCKER_SCOPES = ("docker", "atomic")
PATH_SCOPES = ("oci", "oci-archive", "dir")
DEFAULT_ONLY = ("docker-archive", "tarball")
OPAQUE_SCOPES = ("containers-storage", "docker-daemon", "ostree", "sif")
EVALUATED = ("docker", "oci", "oci-archive", "dir", "docker-archive")


@dataclass(frozen=True)
class Policy:
    """A parsed policy.json."""

    default: tuple[Requirement, ...]
    transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]]
    source: str = DEFAULT_PATH

    @classmethod
    def load(cls, path: str) -> Policy:
        try:
            data = read_file(path, f"policy {path}", POLICY_LIMIT, "fix bootc.policy=")
        except ImageError as err:
            raise PolicyError(str(err), MALFORMED, err.hint) from None
        except FileNotFoundError:
            raise PolicyError(
                f"{path}: no such policy file",
                MALFORMED,
                "fix bootc.policy=",
            ) from None
        except OSError as err:
            raise PolicyError(
                f"{path}: cannot read the policy: {err.strerror}", MALFORMED
            ) from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes, source: str) -> Policy:
        doc = _load_json(data, source)
        _exact(doc, source, "", required=("default",), optional=("transports",))
        default = _requirements(doc["default"], source, "default")
        transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
        scopes_doc = doc.get("transports", {})
        if not isinstance(scopes_doc, dict):
            raise _malformed(source, "transports", "must be an object")
        _check_duplicates(scopes_doc, source, "transports")
        for transport, scopes in scopes_doc.items():
            where = f"transports.{transport}"
            if transport not in DOCKER_SCOPES + PATH_SCOPES + DEFAULT_ONLY + OPAQUE_SCOPES:
                raise _malformed(source, where, "is not a transport containers know")
            if not isinstance(scopes, dict):
                raise _malformed(source, where, "must be an object of scopes")
            _check_duplicates(scopes, source, where)
            parsed = {}
            for scope, reqs in scopes.items():
                scope_where = f"{where}[{json.dumps(scope)}]"
                _check_scope(transport, scope, source, scope_where)
                parsed[scope] = _requirements(reqs, source, scope_where)
            transports[transport] = parsed
        return cls(default, transports, source)

    def requirements_for(self, transport: str, name: str) -> tuple[str, tuple[Requirement, ...]]:
        """(scope, requirements) for an image: `name` is a Docker reference in its expanded
        form for docker (docker.io/library/x:latest), an absolute path for oci, oci-archive
        and dir (symbolic links resolved by the caller), ignored for docker-archive."""
        if transport not in EVALUATED:
            raise PolicyError(
                f"{transport}: images of this transport are not checked", NOT_EVALUATED
            )
        if transport == "docker":
            try:
                candidates = docker_namespaces(DockerReference.parse(name))
            except ValueError as err:
                raise PolicyError(f"docker://{shown(name)}: {err}", BAD_REFERENCE) from None
        elif transport in PATH_SCOPES:
            if not os.path.isabs(name):
                raise PolicyError(f"{transport}:{shown(name)}: not an absolute path", BAD_REFERENCE)
            candidates = path_namespaces(_clean(name))
        else:
            candidates = []
        scopes = self.transports.get(transport, {})
        for scope in [*candidates, ""]:
            if scope in scopes:
                return f"{transport} {json.dumps(scope)}", scopes[scope]
        return "default", self.default

    def key_paths(self) -> list[str]:
        """Every key file the policy names, in order, once (what an initramfs must carry)."""
        every = [*self.default]
        for scopes in self.transports.values():
            for reqs in scopes.values():
                every += reqs
        return list(dict.fromkeys(path for req in every for path in req.key_paths))


def image_name(transport: str, name: str) -> str:
    """How a message names an image: docker://REF, oci:PATH …"""
    return f"docker://{shown(name)}" if transport == "docker" else f"{transport}:{shown(name)}"


def evaluate(
    policy: Policy,
    transport: str,
    name: str,
    manifest: bytes,
    candidates: Sequence[Signature],
    label: str = "",
    named: bytes | None = None,
) -> Verdict:
    """Whether the policy accepts the image `name` of `transport` whose manifest is
    `manifest`, given its candidate signatures; PolicyError (with its reason) when not.
    Messages name the image `label` (by default docker://NAME, oci:PATH …). `named`: the
    document the name names, when `manifest` is one below it (an index's platform manifest):
    a digest the name pins is that one's."""
    scope, requirements = policy.requirements_for(transport, name)
    image = DockerReference.parse(name) if transport == "docker" else None
    label = label or image_name(transport, name)
    if (
        image is not None
        and image.digest is not None
        and not _manifest_matches(manifest if named is None else named, image.digest)
    ):
        # A name that pins a digest (bootc.identity=, --identity) names that image only: any
        # other image signed for the repository is not it.
        raise PolicyError(
            f"{label}: the name pins {image.digest}, and this image is another", DIGEST_MISMATCH
        )
    keys = []
    for req in requirements:
        if req.type == "insecureAcceptAnything":
            continue
        if req.type == "reject":
            raise PolicyError(
                f"{label}: rejected by policy scope {scope} ({req.where} is reject)", REJECT
            )
        keys.append(_satisfy(req, image, manifest, candidates, label, scope))
    return Verdict(scope, tuple(keys))


def _satisfy(
    req: Requirement,
    image: DockerReference | None,
    manifest: bytes,
    candidates: Sequence[Signature],
    label: str,
    scope: str,
) -> str:
    """The key by which one of the signatures satisfies `req`; PolicyError when none does."""
    mine = [sig for sig in candidates if sig.kind == req.kind]
    if not mine:
        others = f" (only {len(candidates)} of another kind)" if candidates else ""
        raise PolicyError(
            f"{label}: no {req.kind} signature{others}, and policy scope {scope} requires one "
            f"({req.where})",
            NO_SIGNATURE,
        )
    keys = req.keys()
    failures: list[tuple[str, str]] = []
    for sig in mine:
        try:
            verified = signatures.verify(sig, keys)
        except SignatureError as err:
            if err.reason in (signatures.TOOL_FAILED, signatures.BAD_KEY):  # not the signature's
                raise PolicyError(f"{label}: {err}", err.reason, err.hint) from None
            failures.append((err.reason, str(err)))
            continue
        claims = verified.claims
        # containers/image matches a signed digest against the manifest's sha256 digest only
        # (manifest.MatchesDigest): a sha384 or sha512 claim, even of this manifest, is refused.
        signed_digest = claims.manifest_digest
        if not (signed_digest.startswith("sha256:") and _manifest_matches(manifest, signed_digest)):
            failures.append(
                (
                    DIGEST_MISMATCH,
                    f"signed manifest digest {shown(claims.manifest_digest)} is not this image's",
                )
            )
        elif not req.identity.matches(image, claims.docker_reference):
            failures.append(
                (
                    IDENTITY_MISMATCH,
                    f"signed identity {shown(claims.docker_reference)} is not accepted by "
                    f"{req.identity.describe()}",
                )
            )
        else:
            return verified.key
    reason = max((r for r, _ in failures), key=lambda r: _STAGE.get(r, -1))
    why = "; ".join(dict.fromkeys(text for _, text in failures))
    count = f"none of {len(mine)} signatures accepted: " if len(mine) > 1 else ""
    raise PolicyError(
        f"{label}: {reason} under policy scope {scope} ({req.where}): {count}{why}", reason
    )


def _manifest_matches(manifest: bytes, digest: str) -> bool:
    algorithm, colon, hex_value = digest.partition(":")
    if not colon or algorithm not in ("sha256", "sha384", "sha512"):
        return False
    return hashlib.new(algorithm, manifest).hexdigest() == hex_value


# Parsing.


def _load_json(data: bytes, source: str) -> Any:
    try:
        return strictjson.loads(data, POLICY_LIMIT)
    except ValueError as err:
        raise PolicyError(f"{source}: not a valid policy: {err}", MALFORMED) from None


def _malformed(source: str, where: str, what: str) -> PolicyError:
    return PolicyError(f"{source}: {where or 'the policy'} {what}", MALFORMED)


def _check_duplicates(obj: dict[str, Any], source: str, where: str) -> None:
    duplicate = strictjson.duplicate_in(obj)
    if duplicate is not None:
        raise _malformed(source, where, f"has {json.dumps(duplicate)} twice")


def _exact(
    obj: Any,
    source: str,
    where: str,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> None:
    """`obj` is an object with each of `required`, any of `optional` and nothing else."""
    if not isinstance(obj, dict):
        raise _malformed(source, where, "must be an object")
    _check_duplicates(obj, source, where)
    for key in obj:
        if key not in required and key not in optional:
            raise _malformed(source, _join(where, key), "is not a known field")
    for key in required:
        if key not in obj:
            raise _malformed(source, where, f"has no {json.dumps(key)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _string(obj: Mapping[str, Any], key: str, source: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise _malformed(source, _join(where, key), "must be a non-empty string")
    return value


def _check_scope(transport: str, scope: str, source: str, where: str) -> None:
    if scope == "" or transport in ("docker-daemon", "ostree"):
        return
    if transport == "containers-storage":
        if not _storage_scope(scope):
            raise _malformed(
                source,
                where,
                "is not a containers-storage scope ([DRIVER@]ROOT, then NAME[@DIGEST][@ID])",
            )
        return
    if transport == "sif" and (not scope.startswith("/") or scope == "/" or _clean(scope) != scope):
        raise _malformed(source, where, "must be an absolute, canonical path other than /")
    if transport in DEFAULT_ONLY:
        raise _malformed(source, where, f'is not valid: {transport} has only the scope ""')
    if transport in PATH_SCOPES:
        # Canonical as Go's filepath.Clean has it: normpath keeps two leading slashes.
        if not scope.startswith("/") or scope == "/" or _clean(scope) != scope:
            raise _malformed(source, where, "must be an absolute, canonical path other than /")
        return
    if _WILDCARD.fullmatch(scope):
        return
    host, slash, _ = scope.partition("/")
    if not slash and not _DOMAIN_RE.fullmatch(scope):
        raise _malformed(source, where, "is not a valid scope (host[:port][/namespace…])")
    if slash:
        try:
            ref = DockerReference.parse(scope)
        except ValueError as err:
            raise _malformed(source, where, f"is not a valid scope: {err}") from None
        if ref.tag is not None and ref.digest is not None:
            raise _malformed(source, where, "has both a tag and a digest")
    # Images are looked up by their expanded names: a host that distribution would not read
    # as one (busybox, library/busybox) or index.docker.io never matches.
    if not ("." in host or ":" in host or host == "localhost") or host == "index.docker.io":
        raise _malformed(
            source, where, "is not in the fully expanded form (docker.io/library/busybox)"
        )


_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


def _storage_scope(scope: str) -> bool:
    """A containers-storage scope as containers/image validates it (storage_transport.go):
    [ROOT] or [DRIVER@ROOT], an absolute ROOT; then nothing, or a name, @DIGEST or @ID,
    @DIGEST@ID (the name itself it does not check)."""
    close = scope.find("]")
    if not scope.startswith("[") or close < 1:
        return False
    store, rest = scope[1:close], scope[close + 1 :]
    driver, at, root = store.partition("@")
    if not at:
        driver, root = "x", store
    if not driver or not root.startswith("/"):
        return False
    if not rest:
        return True
    fields = rest.split("@", 2)
    if len(fields) == 2:
        return bool(_IMAGE_ID.fullmatch(fields[1]) or re.fullmatch(_DIGEST, fields[1]))
    if len(fields) == 3:
        return bool(re.fullmatch(_DIGEST, fields[1]) and _IMAGE_ID.fullmatch(fields[2]))
    return True


def _clean(path: str) -> str:
    """An absolute path as Go's filepath.Clean makes it (one leading slash, never two)."""
    cleaned = os.path.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _requirements(value: Any, source: str, where: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise _malformed(source, where, "must be a non-empty list of requirements")
    return tuple(_requirement(item, source, f"{where}[{i}]") for i, item in enumerate(value))


_UNSUPPORTED_SIGSTORE = (
    "fulcio",
    "rekorPublicKeyPath",
    "rekorPublicKeyPaths",
    "rekorPublicKeyData",
    "pki",
)


def _requirement(obj: Any, source: str, where: str) -> Requirement:
    if not isinstance(obj, dict):
        raise _malformed(source, where, "must be an object")
    kind = obj.get("type")
    if kind in ("insecureAcceptAnything", "reject"):
        _exact(obj, source, where, required=("type",))
        return Requirement(kind, where)
    if kind == "signedBy":
        _exact(
            obj,
            source,
            where,
            required=("type", "keyType"),
            optional=("keyPath", "keyPaths", "keyData", "signedIdentity"),
        )
        if obj["keyType"] != "GPGKeys":
            raise _malformed(
                source,
                f"{where}.keyType",
                f"{json.dumps(obj['keyType'])} is not supported (only GPGKeys)",
            )
    elif kind == "sigstoreSigned":
        for key in _UNSUPPORTED_SIGSTORE:
            if key in obj:
                raise _malformed(
                    source,
                    f"{where}.{key}",
                    "is not supported: only public keys (keyPath, keyPaths, keyData) are",
                )
        _exact(
            obj,
            source,
            where,
            required=("type",),
            optional=("keyPath", "keyPaths", "keyData", "signedIdentity"),
        )
    elif isinstance(kind, str):
        raise _malformed(source, f"{where}.type", f"{json.dumps(kind)} is not a requirement type")
    else:
        raise _malformed(source, f"{where}.type", "must be a string")
    key_paths, key_data = _keys(obj, source, where)
    identity = (
        _identity(obj["signedIdentity"], source, f"{where}.signedIdentity")
        if "signedIdentity" in obj
        else Identity()
    )
    return Requirement(kind, where, key_paths, key_data, identity)


def _keys(obj: Mapping[str, Any], source: str, where: str) -> tuple[tuple[str, ...], bytes | None]:
    present = [key for key in ("keyPath", "keyPaths", "keyData") if key in obj]
    if len(present) != 1:
        raise _malformed(
            source, where, f"needs exactly one of keyPath, keyPaths and keyData, not {len(present)}"
        )
    key = present[0]
    if key == "keyData":
        text = _string(obj, key, source, where)
        try:
            return (), signatures.go_base64(text)
        except ValueError:  # binascii.Error, or a character beyond ASCII
            raise _malformed(source, f"{where}.keyData", "is not base64") from None
    paths = [obj[key]] if key == "keyPath" else obj[key]
    if not isinstance(paths, list):
        raise _malformed(source, f"{where}.{key}", "must be a list of paths")
    if not paths:
        raise _malformed(source, f"{where}.{key}", "must not be empty")
    for i, path in enumerate(paths):
        at = f"{where}.{key}" + ("" if key == "keyPath" else f"[{i}]")
        if not isinstance(path, str):
            raise _malformed(source, at, "must be a string")
        if not os.path.isabs(path):
            # Relative paths would depend on the directory a command runs in, and the boot
            # finds the keys in the initramfs at the paths the policy names.
            raise _malformed(source, at, "must be an absolute path")
        try:
            os.fsencode(path)  # a lone surrogate (JSON's \ud800) names no file
        except UnicodeError:
            raise _malformed(source, at, "is not a file name") from None
        if "\0" in path:
            raise _malformed(source, at, "contains a NUL byte, which no file name can")
    return tuple(paths), None


def _identity(obj: Any, source: str, where: str) -> Identity:
    if not isinstance(obj, dict):
        raise _malformed(source, where, "must be an object")
    kind = obj.get("type")
    if kind in ("matchExact", "matchRepoDigestOrExact", "matchRepository"):
        _exact(obj, source, where, required=("type",))
        return Identity(kind)
    if kind in ("exactReference", "exactRepository"):
        field = "dockerReference" if kind == "exactReference" else "dockerRepository"
        _exact(obj, source, where, required=("type", field))
        text = _string(obj, field, source, where)
        try:
            ref = DockerReference.parse(text)
        except ValueError as err:
            raise _malformed(source, f"{where}.{field}", f"is not valid: {err}") from None
        if kind == "exactReference" and ref.name_only:
            raise _malformed(source, f"{where}.{field}", "has neither a tag nor a digest")
        return Identity(kind, reference=ref)
    if kind == "remapIdentity":
        _exact(obj, source, where, required=("type", "prefix", "signedPrefix"))
        prefixes = []
        for field in ("prefix", "signedPrefix"):
            value = _string(obj, field, source, where)
            if not (_DOMAIN_RE.fullmatch(value) or _NAME_WITH_DOMAIN.fullmatch(value)):
                raise _malformed(
                    source, f"{where}.{field}", "must be host[:port] or host[:port]/namespace"
                )
            prefixes.append(value)
        return Identity(kind, prefix=prefixes[0], signed_prefix=prefixes[1])
    if isinstance(kind, str):
        raise _malformed(source, f"{where}.type", f"{json.dumps(kind)} is not an identity rule")
    raise _malformed(source, f"{where}.type", "must be a string")
