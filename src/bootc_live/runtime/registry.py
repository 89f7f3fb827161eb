"""A native OCI distribution client: pull an image from a registry, streamed and verified.

`RegistrySource` is an `ImageSource`: the manifest (or index) named by the reference becomes
a one-entry index, so `oci.resolve` picks the platform and verifies every document as it does
for a layout; blobs are streamed straight from the registry (resumed with Range when a
connection breaks) into the same verification and unpacking as any other source.

Authentication follows the registry's challenge: Bearer tokens (anonymous or with credentials,
`service`/`scope`, a new token on `insufficient_scope` or expiry) and Basic. Credentials come
from a containers `auth.json` and are sent only to the registry they belong to: never to a
mirror, never along a redirect to another host. Plain http and unverified TLS only with
`unsecure`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Callable

from . import http, jsondoc
from .blobs import NAME_LIMIT, Descriptor, check_digest, digest_of, odd_at, registry_host
from .errors import BootcLiveError, ImageError, VerificationError
from .oci import INDEX_TYPES, MANIFEST_TYPES, REF_NAME, SCHEMA1_TYPES
from .sources import NOT_A_FILE, read_file
from .streams import Reader

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", DOCKER_HUB_API, "https://index.docker.io/v1/")
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        # Asked for so that an old image is recognised and refused clearly, not misread.
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ]
)
AUTH_IN_INITRAMFS = "/etc/bootc-live/auth.json"  # `bootc-live build --auth-file FILE` puts it
MANIFEST_LIMIT = 4 << 20
REFERRERS_PAGES = 16  # pages of a referrers index read, at most
# Small layers are fetched ahead, in parallel, into memory (where latency, not bandwidth,
# dominates); large ones stream. At most this much is held at once.
PREFETCH_BUDGET = 32 << 20
PREFETCH_MAX_BLOB = http.PARALLEL_MIN  # larger layers come through bootc.connections
PREFETCH_WORKERS = 3
# What the fetch-ahead may hold at once: its budget; the blob just handed to the unpack, whose
# slot is free again before the unpack has read it; each worker's blob once more while its parts
# are joined. The RAM planner counts it (boot.held_ahead).
PREFETCH_HELD = PREFETCH_BUDGET + PREFETCH_MAX_BLOB * (1 + PREFETCH_WORKERS)
# With `retries` set, `total` bounds nothing (Retrier): a busy mirror's Retry-After (up to
# Policy.max_retry_after, 60 s, a retry) held the boot two minutes before the next was asked.
MIRROR_POLICY = http.Policy(retries=2, total=30.0, stall=15.0, max_backoff=2.0, max_retry_after=5.0)
# A token request carries the password: asked again only twice, never along a redirect.
TOKEN_POLICY = http.Policy(retries=2, total=30.0, stall=15.0, max_backoff=2.0)
TOKEN_LIMIT = 1 << 20
AUTH_LIMIT = 1 << 20  # an auth.json: a few credentials
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")  # what can go into a header: no CR, LF, space
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_HTTP_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A scheme (and the token68 some schemes carry instead of parameters), then its parameters.
_CHALLENGE_SCHEME = re.compile(
    rf"[\s,]*({_HTTP_TOKEN})(?:\s+[A-Za-z0-9._~+/-]+=*(?=\s*(?:,|$)))?(?=[\s,]|$)(?!\s*=)"
)
_CHALLENGE_PARAM = re.compile(
    rf'[\s,]*({_HTTP_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_HTTP_TOKEN}))', re.DOTALL
)


class RegistryError(BootcLiveError):
    """The registry refused, or answered something unusable."""


@dataclass(frozen=True)
class Reference:
    """`host[:port]/path[:tag][@sha256:…]`, Docker Hub short names normalised."""

    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if odd_at(text):  # perhaps USER:PASSWORD@HOST: not shown
            raise ImageError(
                "docker://…@…: what follows @ is not a digest (the reference is not "
                "shown: a user or password has no place in it)",
                "pin with @sha256:HEX; give credentials in an auth.json: bootc-live build "
                "--auth-file FILE",
            )
        rest, _, digest = text.partition("@")
        if digest:
            check_digest(digest, f"docker://{text}")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            # Docker Hub's old name is Docker Hub (as distribution's references read it).
            registry, path = (DOCKER_HUB if first == "index.docker.io" else first), remainder
        else:
            registry, path = DOCKER_HUB, rest
        name, colon, tag = path.rpartition(":")
        if not colon or "/" in tag:
            name, tag, colon = path, "", ""
        if registry == DOCKER_HUB and "/" not in name:
            name = f"library/{name}"
        valid_tag = _TAG.fullmatch(tag) if colon else True  # `name:` names no tag (not latest)
        if not (registry_host(registry) and _REPOSITORY.fullmatch(name) and valid_tag):
            raise ImageError(
                f"docker://{text} is not a valid image reference",
                "use docker://HOST[:PORT]/PATH[:TAG][@sha256:HEX] (lower-case path; an IPv6 "
                "address in [ ])",
            )
        if len(f"{registry}/{name}") > NAME_LIMIT:  # as distribution counts it: docker.io/library/…
            raise ImageError(
                f"docker://{text}: repository name longer than {NAME_LIMIT} characters"
            )
        return cls(registry, name, tag or (None if digest else "latest"), digest or None)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What the manifest is fetched by: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"


def load_credentials(path: str | None, registry: str, repository: str) -> tuple[str, str] | None:
    """(user, password) for a registry from a containers/Docker `auth.json`, if it has any."""
    if not path:
        return None
    return credentials_in(read_auth_file(path), path, registry, repository)


def read_auth_file(path: str) -> dict[str, object]:
    """A containers/Docker `auth.json` as a JSON object, or one clear error."""
    try:  # a FIFO, /dev/zero, a log file: refused, not waited on or read to the end
        data = read_file(path, f"credentials file {path}", AUTH_LIMIT, NOT_A_FILE)
        obj = json.loads(data)
    except ImageError as err:
        raise RegistryError(str(err), err.hint) from None
    except FileNotFoundError:
        raise RegistryError(
            f"credentials file {path} is missing", "fix bootc.registry.auth="
        ) from None
    except (OSError, ValueError) as err:
        raise RegistryError(
            f"credentials file {path} is not a valid auth.json ({err})",
            'it must look like {"auths": {"HOST": {"auth": "BASE64(USER:PASSWORD)"}}}',
        ) from None
    if not isinstance(obj, dict):
        raise RegistryError(f"credentials file {path} is not a JSON object")
    return obj


def registry_keys(registry: str) -> tuple[str, ...]:
    """The keys an auth file may file a registry's credentials under."""
    return DOCKER_HUB_KEYS if registry in (DOCKER_HUB, DOCKER_HUB_API) else (registry,)


def _same_registry(a: str, b: str) -> bool:
    """Whether two registry names are one registry: Docker Hub goes by several."""
    hub = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API)
    return a == b or (a in hub and b in hub)


def _key_registry(key: str) -> str | None:
    """The registry a whole-registry key names: a host, or a URL (`docker login` wrote
    `https://HOST/v1/` for years; a URL names the registry, whatever its path); None for a
    HOST/NAMESPACE key."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            return key[len(scheme) :].split("/", 1)[0]
    return None if "/" in key else key


def keys_of(obj: dict[str, object], registry: str) -> list[str]:
    """The keys of an auth file's `auths` that the registry's credentials can be filed under
    (HOST, HOST/NAMESPACE…, a URL naming it, one of Docker Hub's names)."""
    auths = obj.get("auths")
    return [
        key
        for key in (auths if isinstance(auths, dict) else {})
        if _same_registry(_key_registry(key) or key.split("/", 1)[0], registry)
    ]


def credentials_in(
    obj: dict[str, object], path: str, registry: str, repository: str
) -> tuple[str, str] | None:
    """(user, password) from the `auths` of an auth file, if it has an entry for the registry.

    As containers/image reads it: a HOST/REPOSITORY or HOST/NAMESPACE key, the most specific
    first, then the HOST key itself, then a key that names the same registry otherwise (a
    URL, one of Docker Hub's names). An entry without `auth` (a credential helper's marker)
    is passed over. A credential helper named for the registry (`credHelpers`) cannot run
    here, nor can an identity token be used: each is one clear error, not an anonymous pull.
    """
    helpers = obj.get("credHelpers")
    helper = next(
        (
            name
            for key, name in (helpers.items() if isinstance(helpers, dict) else ())
            if isinstance(name, str) and _same_registry(key, registry)
        ),
        None,
    )
    auths = obj.get("auths", {})
    entries = auths if isinstance(auths, dict) else {}
    parts = f"{registry}/{repository}".split("/")
    exact = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    other = [k for k in entries if k not in exact and _key_registry(k) is not None]
    for key in [*exact, *(k for k in other if _same_registry(_key_registry(k) or "", registry))]:
        entry = entries.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            raise RegistryError(
                f"credentials file {path}: the entry for {key} is an identity token "
                "(identitytoken), which bootc-live cannot use",
                f"log in with a user and password: podman login --authfile {path} {registry}",
            )
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            return _user_password(entry["auth"], path, registry)
    if helper is not None:
        raise RegistryError(
            f"credentials file {path} leaves {registry}'s credentials to the credential helper "
            f"docker-credential-{helper} (credHelpers), which cannot run here",
            f"write them into the file instead: podman login --authfile FILE {registry}",
        )
    return None


def _user_password(auth: str, path: str, registry: str) -> tuple[str, str]:
    try:
        user, sep, password = base64.b64decode(auth).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        user, sep, password = "", "", ""
    if not sep:
        raise RegistryError(
            f"credentials file {path}: the entry for {registry} is not base64 of USER:PASSWORD"
        )
    return user, password


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {…}).

    As RFC 7235 reads it: schemes and parameter names in any case, values quoted (with
    backslash escapes) or plain tokens, and several challenges in one header, of which the
    Bearer one is taken, else the Basic one, else the first. Anything else ends the reading.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while scheme := _CHALLENGE_SCHEME.match(header, pos):
        params: dict[str, str] = {}
        pos = scheme.end()
        while param := _CHALLENGE_PARAM.match(header, pos):
            quoted, plain = param.group(2), param.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
            params.setdefault(param.group(1).lower(), value)
            pos = param.end()
        challenges.append((scheme.group(1).lower(), params))
    for wanted in ("bearer", "basic"):
        for challenge in challenges:
            if challenge[0] == wanted:
                return challenge
    return challenges[0] if challenges else ("", {})


class RegistryAuth:
    """Bearer and Basic authentication for one registry endpoint (http.Authenticator)."""

    def __init__(
        self,
        netloc: str,
        repository: str,
        credentials: tuple[str, str] | None,
        connect: Callable[[str, http.Authenticator | None], http.Client],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netloc = netloc
        self.transport = "https"  # the endpoint's scheme: credentials go to that origin only
        self.unsecure = False
        self.repository = repository
        self.credentials = credentials
        self.connect = connect
        self.clock = clock
        self.scheme = ""  # "bearer" or "basic" once the registry asked
        self.token = ""
        self.expires = 0.0
        self.challenge_params: dict[str, str] = {}
        self.denied = ""  # why the last challenge could not be met
        self._renewing = threading.Lock()  # the fetch-ahead threads renew an expired token once

    def _ours(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        return (parts.scheme, parts.netloc) == (self.transport, self.netloc)

    def headers_for(self, url: str) -> dict[str, str]:
        if not self._ours(url):
            return {}  # blob storage behind a redirect: it gets no credentials of ours
        if self.scheme == "bearer" and self.token:
            with self._renewing:
                if self.clock() >= self.expires:
                    self._fetch_token(self.challenge_params)  # expired: a fresh one first
            return {"Authorization": f"Bearer {self.token}"}
        if self.scheme == "basic" and self.credentials:
            return {"Authorization": http.basic(self.credentials)}
        return {}

    def challenge(self, url: str, www_authenticate: str) -> bool:
        if not self._ours(url):
            self.denied = "blob storage asked for credentials"
            return False
        scheme, params = parse_challenge(www_authenticate)
        if scheme == "basic":
            if self.scheme == "basic" or not self.credentials:
                self.denied = "credentials rejected" if self.credentials else "no credentials"
                return False
            self.scheme = "basic"
            return True
        if scheme != "bearer" or "realm" not in params:
            self.denied = _unsupported(scheme)
            return False
        scope = params.get("scope") or f"repository:{self.repository}:pull"
        params = {**params, "scope": scope}
        if params.get("error") == "insufficient_scope" or params != self.challenge_params:
            old = self.token
            self._fetch_token(params)
            return self.token != old or params.get("error") == "insufficient_scope"
        # The same challenge after a token for it: a token that expired, once; then refused.
        if self.scheme == "bearer" and self.clock() < self.expires:
            self.denied = "credentials rejected" if self.credentials else "no credentials"
            self.expires = 0.0
            return False
        self._fetch_token(params)
        return True

    def _fetch_token(self, params: dict[str, str]) -> None:
        realm = params["realm"]
        try:
            scheme = urllib.parse.urlsplit(realm).scheme
        except ValueError:  # an unclosed [ of an IPv6 address, say
            scheme = ""
        if scheme not in ("http", "https"):
            raise RegistryError(
                f"registry {self.netloc}: token service {http.redact(realm)} is not an http(s) URL"
            )
        if scheme == "http" and self.transport == "https" and not self.unsecure:
            raise RegistryError(
                f"registry {self.netloc} (https) names a plain http token service "
                f"{http.redact(realm)}: refused, credentials and tokens would travel in clear",
                "fix the registry's token realm, or bootc.registry.unsecure=1",
            )
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in params["scope"].split(" ") if s]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        basic = http.BasicAuth(url, self.credentials) if self.credentials else None
        client = self.connect(url, basic)
        try:
            data, _ = http.read_body(client, "token", TOKEN_LIMIT)
        except http.FetchError as err:
            if err.status in (401, 403):
                self.denied = "credentials rejected by the token service"
                self.scheme, self.token = "bearer", ""
                return
            raise
        token, lifetime = parse_token(data, f"token service {http.redact(realm)}")
        self.scheme, self.token, self.challenge_params = "bearer", token, params
        self.expires = self.clock() + max(lifetime - 10, 1)


# The schemes of IANA's HTTP Authentication Scheme Registry, and NTLM: the only words of a
# WWW-Authenticate a message repeats. The rest of a challenge is the server's (a Negotiate or
# NTLM blob, a nonce, whatever a proxy puts there) and is not printed.
_KNOWN_SCHEMES = {
    "basic": "Basic",
    "bearer": "Bearer",
    "concealed": "Concealed",
    "digest": "Digest",
    "dpop": "DPoP",
    "gnap": "GNAP",
    "hoba": "HOBA",
    "mutual": "Mutual",
    "negotiate": "Negotiate",
    "ntlm": "NTLM",
    "oauth": "OAuth",
    "privatetoken": "PrivateToken",
    "scram-sha-1": "SCRAM-SHA-1",
    "scram-sha-256": "SCRAM-SHA-256",
    "vapid": "vapid",
}


def _unsupported(scheme: str) -> str:
    """Why a challenge cannot be met, in words of ours only."""
    if scheme == "bearer":
        return "unsupported authentication: a Bearer challenge without a token realm"
    if scheme in _KNOWN_SCHEMES:
        return f"unsupported authentication scheme {_KNOWN_SCHEMES[scheme]}"
    return "unsupported authentication: an unknown scheme" if scheme else "unreadable challenge"


def parse_token(data: bytes, who: str) -> tuple[str, float]:
    """(token, seconds it lives) from a token service's JSON answer; one RegistryError else.

    The token is never put into a message: it is a secret even when it is malformed.
    """
    try:
        obj = jsondoc.loads(data, TOKEN_LIMIT, 8)
    except ValueError as err:
        raise RegistryError(f"{who} answered something that is not a token ({err})") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"{who} answered something that is not a token (not an object)")
    token = obj.get("token") or obj.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{who} answered without a token")
    if not _TOKEN.fullmatch(token):
        raise RegistryError(
            f"{who} answered a token that cannot be sent (control characters, spaces or over 8 KiB)"
        )
    lifetime = obj.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
        lifetime = 60
    seconds = float(min(max(lifetime, 0), 86400))  # a day at most: also no float overflow
    return token, seconds if math.isfinite(seconds) else 60.0


ERROR_CODES = frozenset(
    [
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "MANIFEST_UNVERIFIED",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "PAGINATION_NUMBER_INVALID",
        "RANGE_INVALID",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "UNAVAILABLE",
        "UNKNOWN",
        # Harbor's own (src/lib/errors): a pull its vulnerability or signature policy stops
        # is a 403 PROJECTPOLICYVIOLATION, whose code alone tells it from missing rights
        "BAD_REQUEST",
        "CONFLICT",
        "FORBIDDEN",
        "NOT_FOUND",
        "PRECONDITION",
        "PROJECTPOLICYVIOLATION",
    ]
)


def error_codes(body: bytes) -> str:
    """The codes of a registry's error JSON: `MANIFEST_UNKNOWN`, `DENIED`, …"""
    try:
        obj = jsondoc.loads(body, http.ERROR_BODY, 8)
    except ValueError:
        return ""
    errors = obj.get("errors") if isinstance(obj, dict) else None
    codes = (
        [e.get("code") for e in errors or () if isinstance(e, dict) and "code" in e]
        if isinstance(errors, list)
        else []
    )
    # Only codes the distribution spec (and distribution itself, and Harbor) defines are
    # repeated: the rest of an error body is the server's, and may echo what the request
    # carried. An entry without a code (Artifactory's status and message) adds none.
    known = list(dict.fromkeys(c for c in codes if isinstance(c, str) and c in ERROR_CODES))
    if any(not (isinstance(c, str) and c in ERROR_CODES) for c in codes):
        known.append("a code of the server's own")
    return ", ".join(known[:4])


# No < inside the <…>: a run of < without a > is then linear, not scanned to the end from
# each < (quadratic: 12 s for a 64 KiB line; folded over 99 lines, 6 MB, about a day).
_LINK = re.compile(r"<([^<>]*)>((?:\s*;\s*[^,;]*)*)")


def _next_page(link: str, url: str) -> str:
    """The next page a Link header names (rel="next"), resolved against `url`; "" if none, if
    it is no URL (an unclosed [ of an IPv6 address), or if it is on another origin (the
    credentials go to this registry only)."""
    for match in _LINK.finditer(link):
        params = [p.strip().replace('"', "").lower() for p in match.group(2).split(";")]
        if "rel=next" in params:
            try:
                nxt = urllib.parse.urljoin(url, match.group(1).strip())
                here, there = urllib.parse.urlsplit(url), urllib.parse.urlsplit(nxt)
            except ValueError:
                return ""
            same = (here.scheme, here.netloc) == (there.scheme, there.netloc)
            return nxt if same else ""
    return ""


class Endpoint:
    """One registry (the named one or a mirror) serving one repository."""

    def __init__(
        self,
        host: str,
        ref: Reference,
        credentials: tuple[str, str] | None,
        policy: http.Policy,
        log: Callable[[str], None],
        unsecure: bool,
        mirror: bool,
        cafile: str | None = None,
    ) -> None:
        self.host = host
        self.cafile = cafile
        self.ref = ref
        self.policy = policy
        self.log = log
        self.unsecure = unsecure
        self.mirror = mirror
        self.scheme = "https"
        self.auth = RegistryAuth(host, ref.repository, credentials, self._token_client)
        self.auth.unsecure = unsecure

    @property
    def name(self) -> str:
        return f"mirror {self.host}" if self.mirror else f"registry {self.ref.registry}"

    def _client(self, url: str, headers: dict[str, str]) -> http.Client:
        return http.Client(
            url,
            self.policy,
            self.log,
            unsecure=self.unsecure,
            cafile=self.cafile,
            headers=headers,
            auth=self.auth,
        )

    def _token_client(self, url: str, auth: http.Authenticator | None) -> http.Client:
        return http.Client(
            url, TOKEN_POLICY, self.log, unsecure=self.unsecure, cafile=self.cafile, auth=auth
        )

    def url(self, kind: str, reference: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.ref.repository}/{kind}/{reference}"

    def ping(self) -> None:
        """`GET /v2/`: reachable, speaking the API; with unsecure, plain http if TLS fails."""
        for attempt in ("https", "http") if self.unsecure else ("https",):
            self.scheme = self.auth.transport = attempt
            try:
                http.read_body(self._client(f"{attempt}://{self.host}/v2/", {}), "answer", 1 << 20)
                return
            except http.FetchError as err:
                if err.status == 401:
                    return  # the manifest request meets the challenge with the repository's scope
                if err.status is None and "TLS failure" in str(err) and attempt == "https":
                    if self.unsecure:
                        continue
                    raise RegistryError(
                        f"{self.name}: TLS failure ({err})",
                        "trust the registry's CA with bootc-live build --ca FILE, or use "
                        "bootc.registry.unsecure=1 for a registry without trusted TLS",
                    ) from None
                raise

    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, its digest checked."""
        client = self._client(self.url("manifests", reference), {"Accept": ACCEPT})
        pinned = ":" in reference
        try:
            body, headers = http.read_body(client, "manifest", MANIFEST_LIMIT)
        except http.FetchError as err:
            what = f"manifest {reference}" if pinned else f"tag {reference}"
            raise self._refused(err, what) from None
        media_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        claimed = (headers.get("Docker-Content-Digest") or "").strip()
        where = f"{self.name}: {self.ref.repository}@{reference}"
        digest = digest_of(body, reference if pinned else "sha256:")
        if pinned and digest != reference:
            raise VerificationError(
                f"{where}: the manifest's content is {digest}, not the digest asked for",
                "the registry or a proxy altered it",
            )
        if claimed.startswith(("sha256:", "sha512:")) and claimed != digest_of(body, claimed):
            told = http.told(claimed, _DIGEST, 140, quote=False)
            raise VerificationError(
                f"{where}: Docker-Content-Digest {told} does not "
                f"match the manifest's content ({digest_of(body, claimed)})",
                "the registry or a proxy altered it",
            )
        if media_type in SCHEMA1_TYPES:
            raise ImageError(
                f"{where} is a Docker schema 1 manifest, which is not supported",
                "push the image again with a current tool (it then gets a schema 2 or OCI "
                "manifest)",
            )
        return body, media_type, digest

    def tagged(self, tag: str) -> tuple[bytes, str, str] | None:
        """manifest(tag), or None when the repository has no such tag (404): how an
        attachment such as cosign's signatures (tag sha256-HEX.sig) is looked for."""
        try:
            return self.manifest(tag)
        except _NotFound:
            return None

    def referrers(self, digest: str, artifact_type: str) -> bytes | None:
        """The OCI 1.1 referrers API's index of the manifests whose subject is `digest`
        (filtered by `artifact_type` where the registry can), or None where it has no such
        API (404, or an answer that is no index, such as an HTML page: the tag fallback
        `sha256-HEX` is then asked). An index in pages (a Link header, rel="next", on this
        registry) is read to its end, REFERRERS_PAGES pages at most, as one."""
        query = urllib.parse.urlencode({"artifactType": artifact_type})
        url = self.url("referrers", digest) + "?" + query
        pages: list[bytes] = []
        held = 0  # the pages' bytes: together within MANIFEST_LIMIT, as one index would be
        while url and len(pages) < REFERRERS_PAGES:
            client = self._client(url, {"Accept": "application/vnd.oci.image.index.v1+json"})
            try:
                body, headers = http.read_body(client, "referrers index", MANIFEST_LIMIT)
            except http.FetchError as err:
                if err.status == 404 and not pages:
                    return None
                raise self._refused(err, f"referrers of {digest}") from None
            kind = (headers.get("Content-Type") or "").partition(";")[0].strip().lower()
            if kind and kind not in ("application/vnd.oci.image.index.v1+json", "application/json"):
                if not pages:
                    return None  # not the API: oras-go asks the tag schema then too
                break
            held += len(body)
            if held > MANIFEST_LIMIT:  # 16 pages of {} each: 1.8 GB once parsed and merged
                raise RegistryError(
                    f"{client.where}: the referrers index is larger than {MANIFEST_LIMIT} bytes "
                    f"(in {len(pages) + 1} pages)",
                    "this is not what the registry should answer",
                )
            pages.append(body)
            url = _next_page(headers.get("Link") or "", url)
        if len(pages) == 1:
            return pages[0]
        manifests: list[Any] = []
        for page in pages:
            try:
                listed = jsondoc.loads(page, MANIFEST_LIMIT).get("manifests")
            except (ValueError, AttributeError):
                listed = None
            if isinstance(listed, list):
                manifests += listed
        return json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()

    def tail(self, desc: Descriptor, n: int) -> bytes:
        """The blob's last `n` bytes, by a ranged request (unverified: for estimates only)."""
        with self.blob(desc, max(0, desc.size - n)) as reader:
            return reader.read(n)

    def blob(self, desc: Descriptor, start: int = 0) -> Reader:
        """The blob's bytes from `start`, resumed across broken connections."""
        client = self._client(self.url("blobs", desc.digest), {})
        retrier = http.Retrier(client.url, self.policy, self.log)
        return _CheckedReader(self, http.open_range(client, start, desc.size, retrier), desc)

    def _refused(self, err: http.FetchError, what: str) -> BootcLiveError:
        codes = error_codes(err.body)
        detail = f" ({codes})" if codes else ""
        repo = self.ref.repository
        if err.status == 401:
            why = self.auth.denied or "unauthorized"
            return RegistryError(
                f"{self.name}: 401 unauthorized for repository {repo} ({why}){detail}",
                "add credentials with bootc-live build --auth-file FILE",
            )
        if err.status == 403:
            return RegistryError(
                f"{self.name}: 403 denied for repository {repo}{detail}",
                "the registry's policy (vulnerabilities, signatures) refuses this image: ask its "
                "administrators, or boot another"
                if "PROJECTPOLICYVIOLATION" in codes
                else "check the credentials' rights on that repository",
            )
        if err.status == 404:
            if self.mirror:
                return _MirrorMiss(f"{self.name}: {repo} has no {what}{detail}")
            return _NotFound(
                f"{self.name}: {repo} has no {what}{detail}",
                "check the repository, tag or digest in docker://",
            )
        return err


def document(raw: bytes, what: str) -> dict[str, Any]:
    """A manifest or index as JSON: an object, or one ImageError (a mirror's is skipped)."""
    try:
        obj = jsondoc.loads(raw, MANIFEST_LIMIT)
    except ValueError as err:
        raise ImageError(f"{what} is not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


class _NotFound(RegistryError):
    """The registry (or a mirror) has no such tag, manifest or blob (404)."""


class _MirrorMiss(_NotFound):
    """A mirror does not have the image: the next mirror, or the registry, is asked."""


class _CheckedReader(Reader):
    """A blob stream whose HTTP refusals are reported as the registry's (401, 404 …)."""

    def __init__(self, endpoint: Endpoint, raw: Reader, desc: Descriptor) -> None:
        self._endpoint = endpoint
        self._raw = raw
        self._desc = desc

    def read(self, n: int = -1) -> bytes:
        try:
            return self._raw.read(n)
        except http.FetchError as err:
            raise self._endpoint._refused(err, f"blob {self._desc.digest}") from None

    def close(self) -> None:
        self._raw.close()


class RegistrySource:
    """An image in a registry, read through its mirrors first (an `ImageSource`).

    A reference names one image, and a digest in it is checked against the manifest's content
    as it is fetched: `oci.resolve` needs neither a label nor that pin.
    """

    names_one_image = True

    def __init__(
        self,
        ref: Reference,
        policy: http.Policy,
        log: Callable[[str], None],
        *,
        auth_file: str | None = None,
        unsecure: bool = False,
        mirrors: tuple[str, ...] = (),
        mirrors_digest_only: bool = False,
        cafile: str | None = None,
        credentials: Callable[[str, str], tuple[str, str] | None] | None = None,
    ) -> None:
        # (registry or mirror host, repository) → (user, password): from auth_file unless
        # the host's lookup (auth files in podman's order, credential helpers) is given.
        lookup = credentials or (lambda host, repo: load_credentials(auth_file, host, repo))
        self.ref = ref
        self.log = log
        self.description = f"docker://{ref}"
        upstream = Endpoint(
            ref.api_host,
            ref,
            lookup(ref.registry, ref.repository),
            policy,
            log,
            unsecure,
            mirror=False,
            cafile=cafile,
        )
        # A mirror gets its own credentials from the file, if any: never the registry's; its
        # own short deadlines while it is asked for the image (a dead one hands over soon),
        # the connections asked for.
        self.policy = policy
        mirror_policy = replace(MIRROR_POLICY, connections=policy.connections)
        self.endpoints = [
            Endpoint(
                host,
                ref,
                lookup(host, ref.repository),
                mirror_policy,
                log,
                unsecure,
                mirror=True,
                cafile=cafile,
            )
            for host in mirrors
        ] + [upstream]
        if mirrors and mirrors_digest_only and not ref.digest:
            # containers-registries.conf's pull-from-mirror = "digest-only": a tag is asked of
            # the registry only, where it is authoritative; a mirror may hold a stale one.
            log(
                f"pulling {ref} by tag: the mirrors serve pulls by digest only, asking the registry"
            )
            self.endpoints = [upstream]
        self.endpoint = upstream
        self._documents: dict[str, bytes] = {}
        self._index: bytes | None = None
        self._ahead: dict[str, _Fetch] = {}
        self._budget = threading.BoundedSemaphore(PREFETCH_BUDGET // PREFETCH_MAX_BLOB)
        self._queue: queue.Queue[_Fetch | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._order = threading.Lock()
        self._closed = False

    def index_json(self) -> bytes:
        """The reference's manifest or index as a one-entry index (tagged with the tag)."""
        if self._index is None:
            self._index = self._top_index()
        return self._index

    def _top_index(self) -> bytes:
        body, media_type, digest = b"", "", ""
        for endpoint in self.endpoints:
            try:
                endpoint.ping()
                raw, media_type, digest = endpoint.manifest(self.ref.reference)
                obj = document(raw, f"{endpoint.name}: {self.ref.repository}@{self.ref.reference}")
            except (BootcLiveError, OSError) as err:
                if not endpoint.mirror:
                    raise
                said = _line(err)
                if not said.startswith(endpoint.name):
                    said = f"{endpoint.name}: {said}"
                self.log(f"{said}; trying the next")
                continue
            if endpoint.mirror:
                self.log(f"{endpoint.name} serves {self.ref}")
                # It serves every blob now: bootc.timeout= and bootc.retries= bound those.
                endpoint.policy = self.policy
            self.endpoint = endpoint
            self._documents[digest] = raw
            body = raw
            media_type = media_type or str(obj.get("mediaType", ""))
            break
        desc: dict[str, object] = {"mediaType": media_type, "digest": digest, "size": len(body)}
        if self.ref.tag:
            desc["annotations"] = {REF_NAME: self.ref.tag}
        return json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        """Fetch the small layers after the first ahead, in parallel, within a memory budget.

        Application stays in order: the feeder opens each layer in turn and gets the bytes
        fetched ahead (verified then, like any other stream) or a live stream.
        """
        todo: dict[str, Descriptor] = {}  # a layer named twice is fetched ahead once
        # Nor is the first layer's blob, named again later (Docker's empty layer): the feeder
        # opens it first, and would wait for its fetch queued behind the others' slots.
        first = layers[0].digest if layers else ""
        for d in layers[1:]:
            if d.size <= PREFETCH_MAX_BLOB and d.digest not in self._ahead and d.digest != first:
                todo.setdefault(d.digest, d)
        for desc in todo.values():
            fetch = _Fetch(desc)
            self._ahead[desc.digest] = fetch
            self._queue.put(fetch)
        while todo and len(self._workers) < PREFETCH_WORKERS:
            worker = threading.Thread(target=self._fetch_ahead, name="prefetch", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _fetch_ahead(self) -> None:
        while True:
            # The next fetch and its slot of PREFETCH_MAX_BLOB bytes are taken together, in
            # layer order: every slot is then held by an earlier layer, which the feeder
            # consumes (and frees) before it waits for this one.
            with self._order:
                fetch = self._queue.get()
                if fetch is None:
                    return
                # Closed while the budget is spent (the unpack failed before it read the
                # layers fetched ahead): no slot comes back, and this worker, holding the
                # order, held the others too, for good.
                while not self._budget.acquire(timeout=0.5):
                    if self._closed:
                        return
            if fetch.cancelled:
                self._budget.release()
                continue
            try:
                with self.endpoint.blob(fetch.desc) as reader:
                    fetch.data = _read_exactly(reader, fetch.desc.size)
            except BaseException as err:  # the feeder raises it when it gets to that layer
                fetch.error = err
            fetch.done.set()

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        fetch = self._ahead.pop(desc.digest, None)
        if fetch is not None:
            fetch.done.wait()
            self._budget.release()
            if fetch.error is not None:
                raise fetch.error
            return io.BytesIO(fetch.data)
        if desc.digest in self._documents:
            return io.BytesIO(self._documents[desc.digest])
        if desc.media_type in INDEX_TYPES or desc.media_type in MANIFEST_TYPES:
            raw, _, digest = self.endpoint.manifest(desc.digest)
            self._documents[digest] = raw
            return io.BytesIO(raw)
        return self.endpoint.blob(desc)  # type: ignore[return-value]

    def tagged(self, tag: str) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of the manifest `tag` names in the repository, from
        the endpoint that serves the image, or None when there is no such tag."""
        self.index_json()  # the endpoint is chosen
        return self.endpoint.tagged(tag)

    def referrers(self, digest: str, artifact_type: str) -> bytes | None:
        """Endpoint.referrers, of the endpoint that serves the image."""
        self.index_json()
        return self.endpoint.referrers(digest, artifact_type)

    def fall_back(self) -> str:
        """The endpoint after the one that served the image (a mirror), which lacks what is
        asked next (a packed root artifact: mirrors copy images, not always what refers to
        them), becomes the one asked: its name, "" when there is none (the registry itself
        was asked)."""
        self.index_json()
        after = self.endpoints[self.endpoints.index(self.endpoint) + 1 :]
        if not after:
            return ""
        self.endpoint = after[0]
        self.endpoint.ping()
        return self.endpoint.name

    def tail(self, desc: Descriptor, n: int) -> bytes:
        return self.endpoint.tail(desc, n)

    def release(self, desc: Descriptor) -> None:
        self._documents.pop(desc.digest, None)

    def close(self) -> None:
        self._closed = True
        self._documents.clear()
        for fetch in self._ahead.values():
            fetch.cancelled = True
        for _ in self._workers:
            self._queue.put(None)
        self._ahead.clear()


class _Fetch:
    """One blob fetched ahead."""

    def __init__(self, desc: Descriptor) -> None:
        self.desc = desc
        self.data = b""
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.cancelled = False


def _read_exactly(reader: Reader, size: int) -> bytes:
    parts = []
    got = 0
    while got < size + 1:  # one byte more: a blob longer than its descriptor is caught too
        data = reader.read(min(1 << 20, size + 1 - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _line(err: BaseException) -> str:
    return err.line() if isinstance(err, BootcLiveError) else str(err)
