"""`bootc-live push-packed`: the packed root pushed beside its image, as an OCI artifact.

The artifact (runtime/packedreg.py says how the boot finds it): an OCI image manifest with
artifactType `application/vnd.bootc-live.packed.v1`, the empty config, ONE layer (the bare
squashfs or EROFS image out of packed.img: its digest is the packed root's sha256) annotated
with the record, and `subject` the image's manifest. Pushed by the distribution API into the
image's repository: blobs (HEAD first: one already there is not sent again; else POST then one
PUT), the manifest by its digest, and, unless the registry says it keeps the referrers itself
(`OCI-Subject` in its answer), the referrers tag schema's index at the tag `sha256-HEX` (merged
with the one there). Credentials as for a pull: the registry's Basic or Bearer challenge
answered by the runtime's RegistryAuth.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from .runtime import http as rhttp
from .runtime import jsondoc, packed, packedreg
from .runtime.errors import ImageError
from .runtime.registry import TOKEN_POLICY, Reference, RegistryAuth, RegistryError, error_codes
from .runtime.sources import read_file

EMPTY = b"{}"
RECORD_KEYS = ("format", "compressor", "tool")
ANNOTATION = "org.bootc-live.packed."  # + format, compressor, tool
CREATED = "org.opencontainers.image.created"  # when it was pushed (SOURCE_DATE_EPOCH if set)
INDEX_LIMIT = 4 << 20
RECORD_LIMIT = 1 << 20  # bytes of packed.json
RECORD_HINT = "give the packed.json that bootc-live build or pack wrote beside it"
Body = Union[bytes, Callable[[], Iterator[bytes]]]


@dataclass(frozen=True)
class Blob:
    """What is uploaded: its descriptor's fields and its bytes (or a way to read them)."""

    media_type: str
    digest: str
    size: int
    body: Body

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def _payload(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from packed.payload(f.read, path)


def filesystem(path: str, record: dict[str, Any]) -> Blob:
    """The bare filesystem image in packed.img (or the bare image itself), hashed, checked
    against its record."""
    digest = hashlib.sha256()
    size = 0
    for data in _payload(path):
        digest.update(data)
        size += len(data)
    sha256 = "sha256:" + digest.hexdigest()
    if sha256 != record.get("sha256"):
        raise packed.PackedError(
            f"{path} holds the packed root {sha256}, its record says {record.get('sha256')}",
            "give the packed.img and packed.json of one build",
        )
    fs = str(record.get("format"))
    if fs not in ("squashfs", "erofs"):
        raise packed.PackedError(f"the record of {path} names no format squashfs or erofs")
    return Blob(packedreg.LAYER_TYPE + fs, sha256, size, lambda: _payload(path))


def read_record(path: str) -> dict[str, Any]:
    """FILE.json (pack), else packed.json beside FILE (build): what FILE was made from."""
    for candidate in (path + ".json", os.path.join(os.path.dirname(path), "packed.json")):
        if os.path.exists(candidate):  # a FIFO or a device too: refused, not waited on
            try:
                data = read_file(candidate, f"the record {candidate}", RECORD_LIMIT, RECORD_HINT)
                obj = jsondoc.loads(data, RECORD_LIMIT)
            except ImageError as err:
                raise packed.PackedError(str(err), err.hint) from None
            except (OSError, ValueError) as err:
                raise packed.PackedError(f"cannot read the record {candidate}: {err}") from None
            if isinstance(obj, dict) and isinstance(obj.get("image"), str):
                return obj
            raise packed.PackedError(f"{candidate} is not a packed root's record")
    raise packed.PackedError(
        f"no record beside {path} ({os.path.basename(path)}.json or packed.json)",
        "give the packed.img that bootc-live build or pack wrote, with its record",
    )


def artifact(layer: Blob, record: dict[str, Any], subject: dict[str, Any], created: str) -> Blob:
    """The artifact manifest: ours, the empty config, the layer, about `subject`."""
    notes = {ANNOTATION + k: str(record[k]) for k in RECORD_KEYS if record.get(k) is not None}
    manifest = {
        "schemaVersion": 2,
        "mediaType": packedreg.OCI_MANIFEST,
        "artifactType": packedreg.ARTIFACT_TYPE,
        "config": empty().descriptor(),
        "layers": [layer.descriptor(annotations=notes)],
        "subject": subject,
        "annotations": {CREATED: created, **notes, packedreg.PIN_ANNOTATION: layer.digest},
    }
    body = json.dumps(manifest, indent=None, separators=(",", ":")).encode()
    return Blob(packedreg.OCI_MANIFEST, sha256_digest(body), len(body), body)


def empty() -> Blob:
    return Blob(packedreg.EMPTY_TYPE, sha256_digest(EMPTY), len(EMPTY), EMPTY)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def created_now() -> str:
    """RFC 3339, from SOURCE_DATE_EPOCH if set (reproducible), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    seconds = int(epoch) if epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def merged_index(existing: bytes | None, entry: dict[str, Any], where: str) -> bytes:
    """The referrers tag's index with `entry` first, an older entry of it, or of the same packed
    root (pushed again, with another date), dropped."""
    manifests: list[Any] = []
    if existing is not None:
        try:
            obj = jsondoc.loads(existing, INDEX_LIMIT)
        except ValueError as err:
            raise RegistryError(f"{where} is not valid JSON ({err})", _TAG_HINT) from None
        listed = obj.get("manifests") if isinstance(obj, dict) else None
        if not isinstance(listed, list):
            raise RegistryError(f"{where} is not an OCI index", _TAG_HINT)
        manifests = [m for m in listed if not _same(m, entry)]
    index = {
        "schemaVersion": 2,
        "mediaType": packedreg.OCI_INDEX,
        "manifests": [entry, *manifests],
    }
    return json.dumps(index, separators=(",", ":")).encode()


def _same(listed: Any, entry: dict[str, Any]) -> bool:
    if not isinstance(listed, dict):
        return False
    if listed.get("digest") == entry["digest"]:
        return True
    notes = listed.get("annotations")
    pin = entry["annotations"][packedreg.PIN_ANNOTATION]
    return (
        listed.get("artifactType") == packedreg.ARTIFACT_TYPE
        and isinstance(notes, dict)
        and notes.get(packedreg.PIN_ANNOTATION) == pin
    )


_TAG_HINT = "delete that tag in the registry (it is the referrers tag schema's), then push again"


def _target(url: str) -> str:
    """A request's path fit to print: its query (an upload's signed state) is not."""
    parts = urllib.parse.urlsplit(rhttp.redact(url))
    return parts.path + ("?…" if parts.query else "")


PUSH_POLICY = rhttp.Policy(retries=0, stall=60.0)  # without --retries and --timeout


class Pusher:
    """The distribution API's writes into one repository: blobs, manifests, tags."""

    def __init__(
        self,
        ref: Reference,
        credentials: tuple[str, str] | None,
        log: Callable[[str], None],
        unsecure: bool = False,
        ca: str | None = None,
        policy: rhttp.Policy = PUSH_POLICY,
    ) -> None:
        self.ref = ref
        self.log = log
        self.unsecure = unsecure
        self.ca = ca
        self.policy = policy  # its stall bounds each connection, its retries a failed one
        self.scheme = "https"
        self.auth = RegistryAuth(ref.api_host, ref.repository, credentials, self._token_client)
        self.auth.unsecure = unsecure
        self.base = f"https://{ref.api_host}/v2/{ref.repository}"

    def _token_client(self, url: str, auth: rhttp.Authenticator | None) -> rhttp.Client:
        return rhttp.Client(
            url, TOKEN_POLICY, self.log, unsecure=self.unsecure, cafile=self.ca, auth=auth
        )

    def _context(self) -> ssl.SSLContext:
        if self.unsecure:
            return ssl._create_unverified_context()  # an explicit opt-in
        context = ssl.create_default_context()  # the system's CAs, and --ca besides them
        if self.ca:
            context.load_verify_locations(cafile=self.ca)
        return context

    def request(
        self, method: str, url: str, body: Body = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """(status, headers, body) of one request, a challenge met (a streamed body is sent
        once the registry accepted the credentials: ask with a small request first)."""
        failures = 0
        for _attempt in range(3):
            parts = urllib.parse.urlsplit(url)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                resp, data = self._exchange(parts, method, target, body, headers or {}, url)
            except (OSError, http.client.HTTPException) as err:
                failures += 1
                retries = self.policy.retries or 0
                if failures <= retries and not isinstance(err, ssl.SSLError):
                    time.sleep(min(2.0 ** (failures - 1), self.policy.max_backoff))
                    continue  # a connection that failed: the same request again
                raise RegistryError(
                    f"registry {self.ref.registry}: {method} {_target(url)} failed: "
                    f"{rhttp.exchange_failure(err)}"
                    + (f" ({failures - 1} retries)" if failures > 1 else ""),
                    "check that the registry is up, or --ca / --unsecure for its TLS",
                ) from None
            if resp.status == 401 and self.auth.challenge(
                url, resp.headers.get("WWW-Authenticate", "")
            ):
                continue
            return resp.status, resp.headers, data
        raise RegistryError(f"registry {self.ref.registry}: {method} {_target(url)}: 401 again")

    def _exchange(
        self,
        parts: urllib.parse.SplitResult,
        method: str,
        target: str,
        body: Body,
        headers: dict[str, str],
        url: str,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request on a connection of its own: the answer, and its body (bounded)."""
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.netloc, timeout=self.policy.stall, context=self._context()
            )
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=self.policy.stall)
        sent = {**headers, **self.auth.headers_for(url)}
        try:
            conn.request(
                method, target, body=body() if callable(body) else body or None, headers=sent
            )
            resp = conn.getresponse()
            return resp, resp.read(INDEX_LIMIT + 1)
        finally:
            conn.close()

    def _refused(self, what: str, status: int, data: bytes) -> RegistryError:
        # Of the body, the error codes the spec defines only: the rest is the server's words.
        why = self.auth.denied if status == 401 else error_codes(data)
        return RegistryError(
            f"registry {self.ref.registry}: {what} of {self.ref.repository} refused "
            f"({rhttp.status_line(status)}{': ' + why if why else ''})",
            "check the credentials' push rights on that repository (--authfile)",
        )

    def ping(self) -> None:
        """`GET /v2/`: https, or with unsecure plain http where TLS fails."""
        for scheme in ("https", "http") if self.unsecure else ("https",):
            self.scheme = self.auth.transport = scheme
            self.base = f"{scheme}://{self.ref.api_host}/v2/{self.ref.repository}"
            try:
                self.request("GET", f"{scheme}://{self.ref.api_host}/v2/")
                return
            except RegistryError:
                if scheme == "http" or not self.unsecure:
                    raise

    def push_blob(self, blob: Blob) -> bool:
        """The blob in the repository; False when it was there already."""
        status, _, _ = self.request("HEAD", f"{self.base}/blobs/{blob.digest}")
        if status == 200:
            return False
        status, headers, data = self.request("POST", f"{self.base}/blobs/uploads/")
        location = headers.get("Location", "")
        if status != 202 or not location:
            raise self._refused("an upload", status, data)
        url = urllib.parse.urljoin(self.base + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": blob.digest})
        sent = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        status, _, data = self.request("PUT", url, blob.body, sent)
        if status != 201:
            raise self._refused(f"the blob {blob.digest}", status, data)
        return True

    def put_manifest(self, reference: str, media_type: str, body: bytes) -> http.client.HTTPMessage:
        status, headers, data = self.request(
            "PUT", f"{self.base}/manifests/{reference}", body, {"Content-Type": media_type}
        )
        if status != 201:
            raise self._refused(f"the manifest {reference}", status, data)
        return headers

    def get_index(self, tag: str) -> bytes | None:
        """The index at `tag`, or None (404)."""
        status, _, data = self.request(
            "GET", f"{self.base}/manifests/{tag}", headers={"Accept": packedreg.OCI_INDEX}
        )
        if status == 404:
            return None
        if status != 200:
            raise self._refused(f"the tag {tag}", status, data)
        if len(data) > INDEX_LIMIT:
            raise RegistryError(
                f"the tag {tag} of {self.ref.repository} is an index over {INDEX_LIMIT} bytes",
                _TAG_HINT,
            )
        return data


@dataclass(frozen=True)
class Pushed:
    manifest: str  # the artifact manifest's digest
    layer: str  # the layer's digest: the packed root's sha256
    tag: str | None  # the referrers tag written, None when the registry keeps them itself
    sent: bool  # the layer was uploaded (False: it was there)


def push(pusher: Pusher, image: dict[str, Any], path: str, record: dict[str, Any]) -> Pushed:
    """The packed root FILE (its record `record`) pushed as the artifact of `image` (its
    manifest's descriptor)."""
    if record.get("image") != image["digest"]:
        raise packed.PackedError(
            f"{path} was made from the image {record.get('image')}, the registry's is "
            f"{image['digest']}",
            "pack that image again (bootc-live pack docker://…), or push to the image it was "
            "made from",
        )
    layer = filesystem(path, record)
    manifest = artifact(layer, record, image, created_now())
    pusher.ping()
    pusher.push_blob(empty())
    sent = pusher.push_blob(layer)
    assert isinstance(manifest.body, bytes)
    answer = pusher.put_manifest(manifest.digest, manifest.media_type, manifest.body)
    if answer.get("OCI-Subject", "").strip() == image["digest"]:
        return Pushed(manifest.digest, layer.digest, None, sent)
    tag = packedreg.fallback_tag(image["digest"])
    obj = json.loads(manifest.body)
    entry = manifest.descriptor(
        artifactType=packedreg.ARTIFACT_TYPE, annotations=obj["annotations"]
    )
    index = merged_index(pusher.get_index(tag), entry, f"the tag {tag}")
    pusher.put_manifest(tag, packedreg.OCI_INDEX, index)
    return Pushed(manifest.digest, layer.digest, tag, sent)
