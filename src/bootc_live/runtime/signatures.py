"""Container image signatures, verified with real tools: gpgv for simple signing, openssl for
sigstore (cosign) signatures. No cryptography here, only reading what the tools say.

Simple signing (containers-signature(5)): an OpenPGP signed message whose literal data is
{"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": …},
"identity": {"docker-reference": …}}, "optional": {…}}. Sigstore: the same payload with the type
"cosign container image signature", signed as it is (the signature is the base64 of the layer
annotation dev.cosignproject.cosign/signature), with an ECDSA (SHA-256), RSA (PKCS #1 v1.5,
SHA-256) or Ed25519 public key. Whether the claims fit the image is for `policy` to decide.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import strictjson
from .errors import BootcLiveError, shown
from .run import CommandError, run

SIMPLE = "simple"
SIGSTORE = "sigstore"
OTHER = "other"  # a sigstore attachment that is not a signature
SIMPLE_TYPE = "atomic container signature"
SIGSTORE_TYPE = "cosign container image signature"
SIGSTORE_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_LIMIT = 4 << 20
TOOL_TIMEOUT = 60.0

# Reasons a signature fails, as `SignatureError.reason`.
UNKNOWN_KEY = "unknown key"
BAD_SIGNATURE = "bad signature"
INVALID_SIGNATURE = "invalid signature"
TOOL_FAILED = "verification tool failed"
BAD_KEY = "unusable key"  # a trusted key that cannot be read: the policy's files are wrong


class SignatureError(BootcLiveError):
    """A signature that does not verify, or cannot be read; `reason` says which."""

    def __init__(self, message: str, reason: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason


@dataclass(frozen=True)
class Signature:
    """One candidate signature of an image, untrusted until `verify` says otherwise."""

    kind: str  # SIMPLE, SIGSTORE or OTHER
    data: bytes  # SIMPLE: the OpenPGP message; SIGSTORE: the payload that was signed
    signature: str = ""  # SIGSTORE: the base64 signature (the layer's annotation)


@dataclass(frozen=True)
class Claims:
    """What a verified signature says about the image."""

    manifest_digest: str
    docker_reference: str


@dataclass(frozen=True)
class Verified:
    """A signature that verified: the key that made it (as a message names it), its claims."""

    key: str
    claims: Claims


def from_attachment(media_type: str, payload: bytes, annotations: dict[str, str]) -> Signature:
    """A sigstore attachment layer (tag sha256-HEX.sig): its media type, blob and annotations."""
    if media_type != SIGSTORE_MEDIA_TYPE:
        return Signature(OTHER, payload)
    return Signature(SIGSTORE, payload, annotations.get(SIGSTORE_ANNOTATION, ""))


def sigstore_tag(manifest_digest: str) -> str:
    """The tag cosign keeps an image's signatures under: sha256-HEX.sig."""
    algorithm, _, hex_value = manifest_digest.partition(":")
    return f"{algorithm}-{hex_value}.sig"


def from_signature_manifest(
    manifest: bytes, read_blob: Callable[[str, int], bytes]
) -> list[Signature]:
    """The signatures of a sigstore signature manifest (what the .sig tag names): one per
    layer. `read_blob(digest, size)` gives a layer's blob, checked against its digest."""
    try:
        doc = strictjson.loads(manifest, PAYLOAD_LIMIT)
        layers = doc["layers"]
        if not isinstance(layers, list):
            raise TypeError
        descriptors = []
        for layer in layers:
            media_type, digest, size = layer["mediaType"], layer["digest"], layer["size"]
            annotations = layer.get("annotations") or {}
            if not isinstance(media_type, str) or not isinstance(digest, str):
                raise TypeError
            if not isinstance(size, int) or not 0 <= size <= PAYLOAD_LIMIT:
                raise TypeError
            if not isinstance(annotations, dict):
                raise TypeError
            if not all(isinstance(v, str) for v in annotations.values()):
                raise TypeError
            descriptors.append((media_type, digest, size, annotations))
    except (ValueError, KeyError, TypeError):
        raise SignatureError("a malformed sigstore signature manifest", INVALID_SIGNATURE) from None
    return [from_attachment(m, read_blob(d, n), a) for m, d, n, a in descriptors]


def from_blob(blob: bytes) -> Signature:
    """A signature as containers/image stores it (dir: signature-N, a lookaside signature-N):
    a bare OpenPGP message, or a zero byte, a format name and a newline before the data."""
    if not blob:
        raise SignatureError("an empty signature", INVALID_SIGNATURE)
    if blob[0] != 0:
        return Signature(SIMPLE, blob)  # gpgv says whether it is OpenPGP
    name, newline, chunk = blob[1:].partition(b"\n")
    if not newline:
        raise SignatureError("a signature with no format name", INVALID_SIGNATURE)
    if name == b"simple-signing":
        return Signature(SIMPLE, chunk)
    if name != b"sigstore-json":
        raise SignatureError(f"a signature of unknown format {shown(name)}", INVALID_SIGNATURE)
    try:
        doc = strictjson.loads(chunk, PAYLOAD_LIMIT)
        mime = doc["mimeType"]
        payload = go_base64(doc["payload"])
        annotations = doc.get("annotations") or {}
        if not isinstance(mime, str) or not isinstance(annotations, dict):
            raise TypeError
        if not all(isinstance(v, str) for v in annotations.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SignatureError("a malformed sigstore signature", INVALID_SIGNATURE) from None
    return from_attachment(mime, payload, annotations)


def verify(sig: Signature, keys: Sequence[tuple[str, bytes]]) -> Verified:
    """Verify `sig` with the trusted `keys` ((name, contents) of each key file or keyData)."""
    if sig.kind == SIMPLE:
        return verify_simple(sig.data, keys)
    if sig.kind == SIGSTORE:
        return verify_sigstore(sig.data, sig.signature, keys)
    raise SignatureError("a sigstore attachment that is not a signature", INVALID_SIGNATURE)


# Simple signing.

_ARMOR = re.compile(
    rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.DOTALL
)


def dearmor(data: bytes) -> bytes:
    """OpenPGP keys as binary packets, which is all gpgv 2.2 reads: each ASCII-armored block
    decoded (its header lines and CRC line dropped: the signature check covers the key),
    binary input kept as it is."""
    blocks = _ARMOR.findall(data)
    if not blocks:
        return data
    out = b""
    for block in blocks:
        lines = block.replace(b"\r", b"").rstrip(b"\n").split(b"\n")
        if b"" in lines:  # armor headers ("Comment: …") end at an empty line
            lines = lines[lines.index(b"") + 1 :]
        if lines and len(lines[-1]) == 5 and lines[-1].startswith(b"="):  # the CRC-24
            lines.pop()
        try:
            out += base64.b64decode(b"".join(lines), validate=True)
        except binascii.Error:
            raise SignatureError("an ASCII-armored key is not base64", BAD_KEY) from None
    return out


def _public_keyring(data: bytes) -> bool:
    """Whether `data` is whole OpenPGP packets (RFC 4880 4.2's framing, nothing more read),
    the first a public key."""
    pos, first = 0, True
    while pos < len(data):
        ctb = data[pos]
        if not ctb & 0x80:
            return False
        if ctb & 0x40:  # the new format: the tag, then a length of 1, 2 or 5 octets
            tag, octet = ctb & 0x3F, data[pos + 1] if pos + 1 < len(data) else 256
            if octet < 192:
                length, pos = octet, pos + 2
            elif octet < 224 and pos + 2 < len(data):
                length, pos = ((octet - 192) << 8) + data[pos + 2] + 192, pos + 3
            elif octet == 255 and pos + 6 <= len(data):
                length, pos = int.from_bytes(data[pos + 2 : pos + 6], "big"), pos + 6
            else:  # partial lengths (no key uses them), or cut short
                return False
        else:  # the old format: the tag and a length of 1, 2 or 4 octets in the first
            tag, octets = (ctb >> 2) & 0x0F, ctb & 3
            if octets == 3:  # of indeterminate length: no key is
                return False
            octets = 1 << octets
            if pos + 1 + octets > len(data):
                return False
            length = int.from_bytes(data[pos + 1 : pos + 1 + octets], "big")
            pos += 1 + octets
        if first and tag != 6:  # a Public-Key packet
            return False
        first = False
        pos += length
    return not first and pos == len(data)


def verify_simple(message: bytes, keys: Sequence[tuple[str, bytes]]) -> Verified:
    """gpgv over a simple-signing message: exactly one good signature by one of `keys`."""
    with tempfile.TemporaryDirectory(prefix="bootc-live-gpgv.") as tmp:
        argv = ["gpgv", "--homedir", tmp, "--status-fd", "1"]
        for i, (name, key) in enumerate(keys):
            keyring = os.path.join(tmp, f"key{i}.gpg")
            try:
                binary = dearmor(key)
            except SignatureError as err:
                raise SignatureError(f"{name}: {err}", BAD_KEY) from None
            if not _public_keyring(binary):
                # gpgv stops at a keyring it cannot read, and tells a signature by a key in
                # the next one as "No public key": said here, of the key at fault.
                raise SignatureError(f"{name}: not an OpenPGP public key", BAD_KEY)
            _write(keyring, binary)
            argv += ["--keyring", keyring]
        signed, payload = os.path.join(tmp, "signed"), os.path.join(tmp, "payload")
        _write(signed, message)
        argv += ["--output", payload, signed]
        try:
            # An untrusted message may be compressed: gpgv writes at most one byte more than
            # a payload may hold (a few KB of bzip2 expand to GBs; /tmp is RAM at boot).
            status = run(
                argv, capture=True, timeout=TOOL_TIMEOUT, file_limit=PAYLOAD_LIMIT + 1
            ).stdout
            failed = False
        except CommandError as err:
            if _size(payload) > PAYLOAD_LIMIT:  # ended by SIGXFSZ, or a write that failed
                raise SignatureError(_TOO_LARGE, INVALID_SIGNATURE) from None
            if err.returncode is None:  # gpgv is missing or did not end in time
                raise SignatureError(f"gpgv could not verify: {err.detail}", TOOL_FAILED) from None
            # It ran and refused: a message it cannot parse may end it before any status line.
            status, failed = err.output, True
        if _size(payload) > PAYLOAD_LIMIT:
            raise SignatureError(_TOO_LARGE, INVALID_SIGNATURE)
        fingerprint = _gpg_verdict(status, failed)
        with open(payload, "rb") as f:
            data = f.read(PAYLOAD_LIMIT + 1)
    names = ", ".join(name for name, _ in keys)
    return Verified(f"GPG key {fingerprint} ({names})", parse_claims(data, SIMPLE_TYPE))


_TOO_LARGE = f"the signed payload is larger than {PAYLOAD_LIMIT} bytes"


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _gpg_verdict(status: str, failed: bool) -> str:
    """The primary key fingerprint of the one valid signature gpgv's status lines report."""
    lines = [line.split()[1:] for line in status.splitlines() if line.startswith("[GNUPG:] ")]
    words = [line for line in lines if line]
    valid = [w for w in words if w[0] == "VALIDSIG"]
    sigs = [w for w in words if w[0] == "NEWSIG"]
    unknown = [w for w in words if w[0] == "NO_PUBKEY"]
    if unknown:
        key = unknown[0][1] if len(unknown[0]) > 1 else "?"
        raise SignatureError(f"signed by key {shown(key)}, which is not trusted", UNKNOWN_KEY)
    if any(w[0] == "ERRSIG" for w in words):  # an algorithm gpgv cannot check, …
        raise SignatureError("the OpenPGP signature cannot be checked (ERRSIG)", INVALID_SIGNATURE)
    if any(w[0] in ("BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG") for w in words):
        bad = next(w[0] for w in words if w[0] in ("BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"))
        raise SignatureError(f"the OpenPGP signature is not valid ({bad})", BAD_SIGNATURE)
    if failed or len(valid) != 1 or len(sigs) > 1:
        count = max(len(sigs), len(valid))
        what = f"{count} signatures in one" if count > 1 else "not a valid OpenPGP signature"
        raise SignatureError(f"{what} (gpgv)", INVALID_SIGNATURE)
    signer = valid[0][1]
    primary = valid[0][10] if len(valid[0]) >= 11 else signer
    if signer != primary:
        # containers/image trusts a key file's primary keys only: it refuses a signature by
        # a subkey ("Signature by key SUBKEY is not accepted"), as podman and skopeo do.
        raise SignatureError(
            f"signed by subkey {shown(signer)} of key {shown(primary)}: only a signature by "
            "the primary key is accepted (as containers/image)",
            UNKNOWN_KEY,
            f"sign with the primary key itself (for gpg: --local-user {shown(primary)}!)",
        )
    return primary


# Sigstore.

# SubjectPublicKeyInfo algorithm and curve OIDs, as DER bytes.
_OIDS = {
    bytes.fromhex("2a8648ce3d0201"): "ecdsa",
    bytes.fromhex("2a864886f70d010101"): "rsa",
    bytes.fromhex("2b6570"): "ed25519",
    bytes.fromhex("2a8648ce3d030107"): "P-256",
    bytes.fromhex("2b81040022"): "P-384",
    bytes.fromhex("2b81040023"): "P-521",
}
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n(.*?)-----END PUBLIC KEY-----", re.DOTALL)


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[pos], data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated")
    return tag, start, start + length


def _pem_der(pem: bytes) -> bytes:
    """The DER of a PEM file's one PUBLIC KEY block (binascii.Error, a ValueError, when its
    base64 is not)."""
    blocks = _PEM.findall(pem)
    if len(blocks) != 1:
        raise SignatureError(f"{len(blocks)} PEM PUBLIC KEY blocks where one is expected", BAD_KEY)
    return base64.b64decode(b"".join(blocks[0].split()), validate=True)


def public_key_type(pem: bytes) -> str:
    """ "ecdsa P-256" (P-384, P-521), "rsa" or "ed25519": the algorithm of a PEM public key
    (one SubjectPublicKeyInfo block, as cosign writes cosign.pub)."""
    try:
        der = _pem_der(pem)
        tag, start, _ = _der(der, 0)  # SubjectPublicKeyInfo
        tag2, alg_start, alg_end = _der(der, start)  # AlgorithmIdentifier
        tag3, oid_start, oid_end = _der(der, alg_start)
        if (tag, tag2, tag3) != (0x30, 0x30, 0x06):
            raise ValueError("not a SubjectPublicKeyInfo")
        algorithm = _OIDS.get(der[oid_start:oid_end], "")
        if algorithm == "ecdsa":
            tag4, curve_start, curve_end = _der(der, oid_end)
            curve = _OIDS.get(der[curve_start:curve_end], "") if tag4 == 0x06 else ""
            if curve.startswith("P-") and oid_end < alg_end:
                # Go's x509 (containers/image) reads an uncompressed point only; openssl
                # reads a compressed one too, which would make a key containers cannot use.
                tag5, point, point_end = _der(der, alg_end)  # BIT STRING: 0, then the point
                size = {"P-256": 32, "P-384": 48, "P-521": 66}[curve]
                if tag5 != 0x03 or der[point : point + 2] != b"\0\x04":
                    raise SignatureError(
                        "an ECDSA public key whose point is not uncompressed (containers/image "
                        "cannot read it)",
                        BAD_KEY,
                    )
                if point_end - point != 2 + 2 * size:
                    raise ValueError("not a point of the curve")
                return f"ecdsa {curve}"
        elif algorithm in ("rsa", "ed25519"):
            return algorithm
    except (ValueError, binascii.Error):
        raise SignatureError("a PEM public key that cannot be read", BAD_KEY) from None
    raise SignatureError(
        "a public key of a type cosign does not use (ECDSA P-256/384/521, RSA, Ed25519)",
        BAD_KEY,
    )


def go_base64(text: str | bytes) -> bytes:
    """Base64 as containers/image reads it (Go's StdEncoding): padded and strict, but a CR or
    LF anywhere is skipped, so a wrapped keyData or signature reads as it does there.
    ValueError when it is not."""
    if isinstance(text, str):
        text = text.encode("ascii")  # UnicodeEncodeError is a ValueError
    if not isinstance(text, bytes):  # from JSON: anything
        raise ValueError("not a string")
    text = text.replace(b"\r", b"").replace(b"\n", b"")
    if len(text) % 4:  # Python reads padding after a whole quantum ("QUJD=") as nothing
        raise ValueError("not whole base64 quanta")
    return base64.b64decode(text, validate=True)


def verify_sigstore(payload: bytes, signature: str, keys: Sequence[tuple[str, bytes]]) -> Verified:
    """openssl over a sigstore payload: the signature verifies with one of `keys`."""
    try:
        raw = go_base64(signature)
    except ValueError:  # binascii.Error, or a character beyond ASCII
        raw = b""
    if not raw:
        raise SignatureError("a sigstore signature without a base64 signature", INVALID_SIGNATURE)
    with tempfile.TemporaryDirectory(prefix="bootc-live-openssl.") as tmp:
        data, sig = os.path.join(tmp, "payload"), os.path.join(tmp, "signature")
        _write(data, payload)
        _write(sig, raw)
        for i, (name, key) in enumerate(keys):
            try:
                key_type = public_key_type(key)
            except SignatureError as err:
                raise SignatureError(f"{name}: {err}", BAD_KEY) from None
            if not _whole_signature(key_type, key, raw):
                continue  # not one this key makes (bytes after it, or cut short)
            pem = os.path.join(tmp, f"key{i}.pem")
            _write(pem, key)
            if _openssl_verifies(key_type, pem, data, sig):
                return Verified(
                    f"sigstore key {name} ({key_type})", parse_claims(payload, SIGSTORE_TYPE)
                )
    names = ", ".join(name for name, _ in keys)
    raise SignatureError(f"the sigstore signature does not verify with {names}", UNKNOWN_KEY)


def _whole_signature(key_type: str, pem: bytes, raw: bytes) -> bool:
    """Whether `raw` is exactly one signature of the key's kind: `openssl dgst -signature`
    reads only as many bytes as the key's largest signature, so bytes appended to a good one
    would pass it (Go's verifiers, cosign's, refuse them). ECDSA: one DER SEQUENCE, the whole
    of it; RSA: the modulus's length; Ed25519: 64 bytes."""
    try:
        if key_type.startswith("ecdsa"):
            tag, _, end = _der(raw, 0)
            return tag == 0x30 and end == len(raw)
        if key_type == "rsa":
            return len(raw) == _rsa_modulus_bytes(_pem_der(pem))
    except ValueError:
        return False
    return len(raw) == 64


def _rsa_modulus_bytes(der: bytes) -> int:
    """The length of an RSA SubjectPublicKeyInfo's modulus, in bytes."""
    _, info, _ = _der(der, 0)
    _, _, algorithm_end = _der(der, info)
    tag, bits, _ = _der(der, algorithm_end)  # BIT STRING: unused-bits byte, RSAPublicKey
    tag2, key, _ = _der(der, bits + 1)
    tag3, start, end = _der(der, key)  # the modulus INTEGER
    if (tag, tag2, tag3) != (0x03, 0x30, 0x02):
        raise ValueError("not an RSA public key")
    return len(der[start:end].lstrip(b"\0"))


def _openssl_verifies(key_type: str, pem: str, data: str, sig: str) -> bool:
    if key_type == "ed25519":  # pure Ed25519 signs the payload itself
        argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin"]
        argv += ["-in", data, "-sigfile", sig]
        failure = "Signature Verification Failure"
    else:
        argv = ["openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, data]
        failure = "Verification failure"
    try:
        run(argv, capture=True, timeout=TOOL_TIMEOUT)
    except CommandError as err:
        # A signature that does not verify, or that is not even one this key could make
        # (a malformed ASN.1 signature, another algorithm's): not made by this key.
        if err.output.strip() == failure or err.detail == "Error verifying data":
            return False
        raise SignatureError(f"openssl could not verify: {err.detail}", TOOL_FAILED) from None
    return True


# The signed payload.


def parse_claims(payload: bytes, signature_type: str) -> Claims:
    """The claims of a verified payload, read as strictly as containers/image reads them."""
    try:
        doc = strictjson.loads(payload, PAYLOAD_LIMIT)
        _fields(doc, ("critical", "optional"))
        critical = doc["critical"]
        _fields(critical, ("type", "image", "identity"))
        if critical["type"] != signature_type:
            raise ValueError(f"its type is {shown(str(critical['type']))}")
        _fields(critical["image"], ("docker-manifest-digest",))
        _fields(critical["identity"], ("docker-reference",))
        digest = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
        # As containers/image: an object (null only from cosign), its creator a string,
        # its timestamp an integer, no key twice; other keys are anyone's.
        optional = doc["optional"]
        if optional is None and signature_type != SIMPLE_TYPE:
            optional = {}
        if not isinstance(optional, dict) or strictjson.duplicate_in(optional):
            raise ValueError("its optional part is not an object (of each key once)")
        # (a null of either is read as nothing by Go's decoder, so accepted too)
        if optional.get("creator") is not None and not isinstance(optional["creator"], str):
            raise ValueError("its optional creator is not a string")
        if optional.get("timestamp") is not None and not _integral(optional["timestamp"]):
            raise ValueError("its optional timestamp is not an integer")
        if not isinstance(digest, str) or not isinstance(reference, str):
            raise ValueError("its digest or identity is not a string")
    except (ValueError, TypeError) as err:
        raise SignatureError(f"the signed payload is malformed: {err}", INVALID_SIGNATURE) from None
    return Claims(digest, reference)


def _integral(value: Any) -> bool:
    """A JSON number without a fraction, in int64 (as containers/image reads a timestamp: as
    a float64 first, so an integer within 512 of 2^63 is 2^63 there, beyond int64)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        number = float(value)  # an int rounds to the nearest float64, as Go parses it
    except OverflowError:
        return False
    return number.is_integer() and -(2**63) <= number < 2**63


def _fields(obj: Any, names: Sequence[str]) -> None:
    if not isinstance(obj, dict) or set(obj) != set(names) or strictjson.duplicate_in(obj):
        raise ValueError(f"it is not an object of exactly {', '.join(names)}")


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
