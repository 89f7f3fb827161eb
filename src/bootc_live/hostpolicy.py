"""Signature policy on the host: --policy, --insecure-policy, --registries-d and --identity, and
the check of a SOURCE's image before any of its layers is read (docs/signatures.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Callable

from .images import SourceRef, UsageError
from .runtime import policy, registriesd, signatures, trust
from .runtime.errors import BootcLiveError, shown
from .runtime.oci import Image
from .runtime.policy import Policy, PolicyError, Verdict
from .runtime.registriesd import RegistriesD


@dataclass(frozen=True)
class TrustOptions:
    """What the host checks an image against (the options of every image command)."""

    policy: str | None = None  # --policy FILE; None: policy.DEFAULT_PATH when it exists
    insecure: bool = False  # --insecure-policy: nothing checked
    registries_d: str | None = None  # --registries-d DIR; None: registriesd.DEFAULT_DIR
    identity: str | None = None  # --identity REF: the registry name of a file or URL SOURCE

    def __post_init__(self) -> None:
        if self.insecure and self.policy is not None:
            raise UsageError(
                "--insecure-policy and --policy contradict each other", "give one of them"
            )

    def policy_file(self) -> str | None:
        """The policy that applies: --policy FILE, else the system's when it exists."""
        if self.insecure:
            return None
        if self.policy is not None:
            return self.policy
        return policy.DEFAULT_PATH if os.path.exists(policy.DEFAULT_PATH) else None

    def registries_dir(self) -> str:
        return self.registries_d or registriesd.DEFAULT_DIR

    def load(self) -> tuple[Policy | None, RegistriesD]:
        """The policy (None: nothing is checked) and the registries.d configuration."""
        path = self.policy_file()
        loaded = Policy.load(path) if path is not None else None
        return loaded, RegistriesD.load(self.registries_dir())

    def not_checked(self) -> str:
        """Why nothing is checked (when policy_file() is None)."""
        if self.insecure:
            return "signatures: not checked (--insecure-policy)"
        return f"signatures: not checked (no {policy.DEFAULT_PATH}; --policy FILE names one)"


def parse_identity(text: str) -> str:
    """--identity REF: a Docker reference, as a policy reads it; ValueError when not."""
    ref = policy.DockerReference.parse(text)
    if ref.name_only:
        raise ValueError("it needs a :TAG or @DIGEST, as the image was signed")
    return text


def evaluated_as(ref: SourceRef, identity: str | None) -> tuple[str, str]:
    """(transport, name) the policy evaluates SOURCE's image under (docs/signatures.md):
    docker://REF as REF (cli refuses --identity for it); any other SOURCE as the registry name
    --identity gives it, else as skopeo does: oci, oci-archive and dir by absolute path,
    docker-archive under its own transport; a URL and containers-storage have no name ("")."""
    if ref.transport == "docker":
        return "docker", ref.path
    if identity is not None:
        return "docker", identity
    if ref.transport in ("oci", "oci-archive", "dir"):
        return ref.transport, os.path.realpath(ref.path)
    if ref.transport == "docker-archive":
        return "docker-archive", os.path.realpath(ref.path)
    return "docker", ""


def applicable(ref: SourceRef, identity: str | None, rules: Policy) -> tuple[str, str, Policy]:
    """(transport, name, policy) SOURCE's image is checked with (trust.check)."""
    transport, name = evaluated_as(ref, identity)
    if ref.transport == "containers-storage" and not name:
        rules = storage_policy(rules)
    return transport, name, rules


def storage_policy(rules: Policy) -> Policy:
    """The policy for a containers-storage image without --identity: its transport's scope
    "" as the default (store-specific scopes, `[driver@root]name`, are not read: an error)."""
    scopes = rules.transports.get("containers-storage", {})
    if set(scopes) - {""}:
        raise PolicyError(
            f"{rules.source}: transports.containers-storage has store-specific scopes, which "
            "bootc-live does not read",
            policy.NOT_EVALUATED,
            "give the image's registry name with --identity REF",
        )
    return replace(rules, default=scopes[""]) if "" in scopes else rules


@dataclass(frozen=True)
class Checked:
    """An image with the signatures found for it, and what the policy said of it."""

    image: Image
    found: tuple[trust.Found, ...]
    verdict: Verdict | None  # None: not checked


def check(
    ref: SourceRef,
    image: Image,
    options: TrustOptions,
    say: Callable[[str], None],
) -> Checked:
    """Gather the image's signatures and check them against the policy; PolicyError (one line:
    the image, the scope that applied, why) when it does not accept the image. Reads no layer."""
    found = gather(ref, image, options, say)
    verdict = judge(ref, image, options, say, found)
    return Checked(image, found or (), verdict)


def gather(
    ref: SourceRef, image: Image, options: TrustOptions, say: Callable[[str], None]
) -> tuple[trust.Found, ...] | None:
    """The signatures the image has where registries.d says, and carried in SOURCE (none in
    the copy skopeo makes of containers-storage and docker-archive images), gathered once:
    what is checked is what pull and build carry. A store that cannot be read fails when the
    policy needs signatures of the image, else it is a warning (and None)."""
    registries = RegistriesD.load(options.registries_dir())
    try:
        return tuple(trust.gather(image.source, image, registries, ref.registry.policy, say))
    except BootcLiveError as err:
        if needs_signatures(ref, options):
            raise
        say(f"warning: no signature kept: {err.line()}")
        return None


def needs_signatures(ref: SourceRef, options: TrustOptions) -> bool:
    """Whether the requirements that apply to SOURCE's image need any signature."""
    loaded, _ = options.load()
    if loaded is None:
        return False
    transport, name, rules = applicable(ref, options.identity, loaded)
    requirements = rules.requirements_for(transport, name)[1] if name else rules.default
    return any(req.kind for req in requirements)


def judge(
    ref: SourceRef,
    image: Image,
    options: TrustOptions,
    say: Callable[[str], None],
    found: Sequence[trust.Found] | None = None,
) -> Verdict | None:
    """The policy's verdict (None: nothing checked), said when signatures were verified (an
    accepted image is otherwise silent, as with skopeo: a failure stays one line); PolicyError
    when the policy rejects the image."""
    loaded, registries = options.load()
    if loaded is None:
        return None
    transport, name, loaded = applicable(ref, options.identity, loaded)
    fetch = ref.registry.policy
    try:
        verdict = trust.check(
            loaded, transport, name, image.source, image, registries, fetch, say, found
        )
    except PolicyError as err:
        if transport == "docker" or err.reason != policy.IDENTITY_MISMATCH:
            raise
        # Checked by its path, the image has no name a signature could claim.
        raise PolicyError(str(err), err.reason, trust.IDENTITY_HINT) from None
    if verdict.keys:
        say(verdict.line())
    return verdict


def signature_lines(checked: Checked, options: TrustOptions, ref: SourceRef) -> list[str]:
    """inspect's lines: each signature found (kind, origin) and which key of the policy's
    applicable scope verifies it, or why none does."""
    loaded, _ = options.load()
    requirements: Sequence[policy.Requirement] = ()
    if loaded is not None:
        transport, name, rules = applicable(ref, options.identity, loaded)
        # Without a name only the default applies (trust.check); the verdict says the rest.
        requirements = rules.requirements_for(transport, name)[1] if name else rules.default
    lines = []
    for number, found in enumerate(checked.found, 1):
        head = f"signature {number} {found.signature.kind} ({shown(found.origin, 200)})"
        lines.append(f"{head}: {_verified_by(found.signature, requirements, checked)}")
    if not lines:
        lines.append("signatures none found")
    return lines


def _verified_by(
    sig: signatures.Signature, requirements: Sequence[policy.Requirement], checked: Checked
) -> str:
    mine = [req for req in requirements if req.kind == sig.kind]
    if not mine:
        return "no key of the policy is for it"
    why = []
    for req in mine:
        try:
            verified = signatures.verify(sig, req.keys())
        except (signatures.SignatureError, PolicyError) as err:
            why.append(str(err))
            continue
        claims = verified.claims
        image = checked.image
        if claims.manifest_digest == image.top.digest:
            digest = "this image"
        elif claims.manifest_digest in {d.digest for d in trust.signed_documents(image)}:
            digest = "this image's manifest for its platform"
        else:
            digest = "another image"
        return f"verified by {verified.key}; signs {shown(claims.docker_reference)} for {digest}"
    return "not verified: " + "; ".join(dict.fromkeys(why))
