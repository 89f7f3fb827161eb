"""A scripted registry for faults a real one will not produce (tests only).

It serves one OCI layout as repository `x/y` over plain http on 127.0.0.1, with Bearer (its own
token service) or Basic authentication, and knobs for each misbehaviour: expiring tokens,
tokens of the wrong scope, blobs redirected to another port, a connection cut mid-blob, 429 with
Retry-After, a lying Docker-Content-Digest, a tampered blob, a schema 1 manifest, a token
realm or token answer of its choosing, a manifest answer that breaks off, stalls, is not JSON
or is chunked wrongly; a referrers API's answer. Every request is logged with its headers.
With `tls`, it speaks https.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from servers import http_server

REPO = "x/y"
TAG = "v1"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Knobs:
    auth: str = ""  # "", "bearer" or "basic"
    credentials: tuple[str, str] | None = None  # required by the token service / Basic
    token_lifetime: int = 300
    first_token_scope: str = ""  # the token service's first token has this scope instead
    redirect_blobs_to: int = 0  # port of a plain server that serves /blob/DIGEST
    cut_blob_at: int = 0  # the first blob answer stops after this many bytes
    blob_range: bool = True  # False: blobs answered whole (200) whatever Range asks
    throttle_first_manifest: bool = False  # 429 + Retry-After: 1 once
    lie_about_digest: bool = False
    tamper: str = ""  # digest of a blob served with one byte flipped
    schema1: bool = False
    blob_delay: float = 0.0  # seconds before each blob answer (to see requests overlap)
    realm: str = ""  # the token realm named in challenges (default: its own /token)
    token_redirect_to: str = ""  # /token answers 307 to this URL
    token_answer: dict[str, object] | None = None  # the token service's JSON, as given
    token_status: int = 0  # the token service answers this status (and no token)
    cut_manifest_at: int = 0  # the first manifest answer stops after this many bytes
    manifest_body: bytes = b""  # served as the manifest (with its true digest)
    manifest_status: int = 0  # the manifest request is answered with this (and manifest_body)
    manifest_chunked_garbage: bool = False  # a chunked manifest answer with a bad chunk size
    manifest_stall: float = 0.0  # seconds the manifest answer stops after its first bytes
    referrers: bytes | None = None  # the referrers API's answer (OCI 1.1); None: 404, no API
    referrers_pages: tuple[bytes, ...] = ()  # or its pages, each Link-ed to the next
    referrers_type: str = "application/vnd.oci.image.index.v1+json"  # its Content-Type
    referrers_link: str = ""  # a Link header sent with `referrers`, as given
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve https
    clock: Callable[[], float] = time.monotonic  # when tokens expire (a test may share one)


@dataclass
class FakeRegistry:
    port: int
    knobs: Knobs
    log: list[Request] = field(default_factory=list)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → scope, expiry
    in_flight: int = 0
    most_in_flight: int = 0  # blob requests served at the same time, at most

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.knobs.tls else 'http'}://{self.host}"

    def hits(self, fragment: str) -> list[Request]:
        return [r for r in self.log if fragment in r.path]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextmanager
def serve(layout: Path, knobs: Knobs) -> Iterator[FakeRegistry]:
    index = json.loads((layout / "index.json").read_text())
    top = index["manifests"][0]
    tagged = {  # tags beyond TAG: the layout's other entries (cosign's sha256-HEX.sig …)
        m["annotations"]["org.opencontainers.image.ref.name"]: m
        for m in index["manifests"][1:]
        if "org.opencontainers.image.ref.name" in m.get("annotations", {})
    }
    state = FakeRegistry(0, knobs)
    cuts = [knobs.cut_blob_at]
    manifest_cuts = [knobs.cut_manifest_at]
    by_sha512 = {
        "sha512:" + hashlib.sha512(p.read_bytes()).hexdigest(): "sha256:" + p.name
        for p in (layout / "blobs" / "sha256").iterdir()
    }
    throttled = [not knobs.throttle_first_manifest]
    lock = threading.Lock()

    def blob(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        if digest == knobs.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        seen: Request  # this request's entry in the log (requests on other connections interleave)

        def log_message(self, *args: object) -> None:
            pass

        def answer(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            cut: int = 0,
        ) -> None:
            self.seen.status = status
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:cut] if cut else body)
            self.wfile.flush()
            if cut:
                self.close_connection = True

        def challenge(self, error: str = "") -> None:
            if knobs.auth == "basic":
                value = 'Basic realm="fake"'
            else:
                realm = knobs.realm or f"{state.url}/token"
                value = f'Bearer realm="{realm}",service="fake",scope="repository:{REPO}:pull"' + (
                    f',error="{error}"' if error else ""
                )
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]}).encode()
            self.answer(401, body, {"WWW-Authenticate": value, "Content-Type": "application/json"})

        def authorized(self) -> bool:
            given = self.headers.get("Authorization", "")
            if knobs.auth == "basic":
                ok = knobs.credentials is not None and given == _basic(*knobs.credentials)
            elif knobs.auth == "bearer":
                token = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
                scope, expiry = state.tokens.get(token, ("", 0.0))
                if token in state.tokens and knobs.clock() < expiry and REPO not in scope:
                    self.challenge("insufficient_scope")
                    return False
                ok = token in state.tokens and knobs.clock() < expiry
            else:
                ok = True
            if not ok:
                self.challenge()
            return ok

        def do_GET(self) -> None:
            with lock:
                self.seen = Request("GET", self.path, dict(self.headers.items()))
                state.log.append(self.seen)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/token":
                return self.token(urllib.parse.parse_qs(url.query))
            if url.path.startswith("/blob/"):
                return self.send_blob(url.path[len("/blob/") :])
            if not self.authorized():
                return None
            if url.path == "/v2/":
                return self.answer(200, b"{}")
            prefix = f"/v2/{REPO}/"
            if not url.path.startswith(prefix):
                return self.answer(404)
            kind, _, ref = url.path[len(prefix) :].partition("/")
            if kind == "manifests":
                return self.manifest(ref)
            if kind == "referrers" and knobs.referrers_pages:
                page = int(urllib.parse.parse_qs(url.query).get("page", ["0"])[0])
                media = {"Content-Type": knobs.referrers_type}
                if page + 1 < len(knobs.referrers_pages):  # relative, as distribution sends it
                    media["Link"] = f'</v2/{REPO}/referrers/{ref}?page={page + 1}>; rel="next"'
                return self.answer(200, knobs.referrers_pages[page], media)
            if kind == "referrers" and knobs.referrers is not None:
                media = {"Content-Type": knobs.referrers_type}
                if knobs.referrers_link:
                    media["Link"] = knobs.referrers_link
                return self.answer(200, knobs.referrers, media)
            if kind == "blobs":
                if knobs.redirect_blobs_to:
                    location = f"http://127.0.0.1:{knobs.redirect_blobs_to}/blob/{ref}"
                    return self.answer(307, b"", {"Location": location})
                return self.send_blob(ref)
            return self.answer(404)

        def token(self, query: dict[str, list[str]]) -> None:
            if knobs.token_redirect_to:
                return self.answer(307, b"", {"Location": knobs.token_redirect_to})
            if knobs.token_status:
                return self.answer(knobs.token_status, b"busy")
            if knobs.credentials and self.headers.get("Authorization") != _basic(
                *knobs.credentials
            ):
                return self.answer(401, b'{"details": "bad credentials"}')
            scope = " ".join(query.get("scope", []))
            with lock:
                if knobs.first_token_scope and not state.tokens:
                    scope = knobs.first_token_scope
                token = f"tok-{len(state.tokens) + 1}"
                state.tokens[token] = (scope, knobs.clock() + knobs.token_lifetime)
            body = knobs.token_answer or {"token": token, "expires_in": knobs.token_lifetime}
            return self.answer(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def manifest(self, ref: str) -> None:
            if not throttled[0]:
                throttled[0] = True
                return self.answer(429, b"", {"Retry-After": "1"})
            if knobs.manifest_status:
                return self.answer(knobs.manifest_status, knobs.manifest_body)
            if knobs.manifest_chunked_garbage:
                self.seen.status = 200
                self.send_response(200)
                self.send_header("Content-Type", str(top["mediaType"]))
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b'10\r\n{"schemaVersion\r\nzz\r\n')
                self.close_connection = True
                return None
            ref = by_sha512.get(ref, ref)
            if knobs.manifest_body:
                body, media = knobs.manifest_body, str(top["mediaType"])
            elif knobs.schema1:
                body = json.dumps({"schemaVersion": 1, "name": REPO, "tag": TAG}).encode()
                media = "application/vnd.docker.distribution.manifest.v1+prettyjws"
            else:
                entry = top if ref == TAG else tagged.get(ref)
                digest = entry["digest"] if entry else ref
                if entry is None and not (layout / "blobs/sha256" / ref.split(":")[-1]).exists():
                    return self.answer(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
                body, media = blob(digest), str((entry or top)["mediaType"])
            claimed = "sha256:" + hashlib.sha256(body).hexdigest()
            if knobs.lie_about_digest:
                claimed = "sha256:" + "1" * 64
            headers = {"Content-Type": media, "Docker-Content-Digest": claimed}
            if knobs.manifest_stall:
                self.seen.status = 200
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body[:10])
                self.wfile.flush()
                time.sleep(knobs.manifest_stall)
                self.close_connection = True
                return None
            cut = 0
            if manifest_cuts[0] and len(body) > manifest_cuts[0]:
                cut, manifest_cuts[0] = manifest_cuts[0], 0
            return self.answer(200, body, headers, cut)

        def send_blob(self, digest: str) -> None:
            with lock:
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                time.sleep(knobs.blob_delay)
                self.send_blob_now(digest)
            finally:
                with lock:
                    state.in_flight -= 1

        def send_blob_now(self, digest: str) -> None:
            data = blob(digest)
            header = self.headers.get("Range", "") if knobs.blob_range else ""
            start = int(header[6:].split("-")[0]) if header.startswith("bytes=") else 0
            body = data[start:]
            headers = {"Content-Type": "application/octet-stream"}
            status = 200
            if header:
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            cut = 0
            if cuts[0] and len(body) > cuts[0]:
                cut, cuts[0] = cuts[0], 0
            return self.answer(status, body, headers, cut)

    with http_server(Handler, tls=knobs.tls) as state.port:
        yield state
