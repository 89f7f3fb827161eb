"""http(s) done natively: ranged, streamed reads that resume, with bounded retries.

When the server supports `Range`, an oci-archive is read in place over the network: its tar
headers first, then each blob in application order straight into verification and unpacking,
so the archive is never stored. Without `Range` it is downloaded once into a file.
Every retry is logged with its cause; `Retry-After` is honoured; 401/403/404/410 stop at once.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Protocol

from .errors import BootcLiveError, LayerError
from .sources import ArchiveSource, ImageSource, MemberIndex
from .streams import Reader
from .tarstream import BLOCK

if TYPE_CHECKING:
    import ssl

CA_BUNDLES = (  # all that exist are trusted
    "/etc/bootc-live/ca.pem",  # `bootc-live build --ca FILE` puts it into the initramfs
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
)
FATAL = {400, 401, 403, 404, 405, 410, 416}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(BootcLiveError):
    """A URL cannot be fetched; `status` is the HTTP status when there was one."""

    def __init__(
        self, message: str, hint: str = "", status: int | None = None, body: bytes = b""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.body = body  # the start of an error response's body (a registry's error JSON)


class Authenticator(Protocol):
    """Credentials for one server (a registry): headers per URL, and answers to 401."""

    def headers_for(self, url: str) -> dict[str, str]:
        """Authorization for `url`: none for another host (a redirect to blob storage)."""

    def challenge(self, url: str, www_authenticate: str) -> bool:
        """A 401 with this challenge: True when new credentials make a retry worthwhile."""


@dataclass(frozen=True)
class Policy:
    """Bounds on retries: a count (bootc.retries) or, by default, a total time."""

    retries: int | None = None
    total: float = 600.0  # like the original's 100 x 5 s
    stall: float = 30.0  # per-connection timeout (bootc.timeout)
    max_backoff: float = 30.0


class Retrier:
    """Counts failures against the policy; sleeps with exponential backoff between attempts."""

    def __init__(
        self,
        url: str,
        policy: Policy,
        log: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.policy = policy
        self.log = log
        self.sleep = sleep
        self.start = time.monotonic()
        self.failures = 0

    def failed(self, cause: str, retry_after: float | None = None) -> None:
        """Record a failure: wait before the next attempt, or raise when the bounds are spent."""
        self.failures += 1
        delay = min(self.policy.max_backoff, 0.5 * 2 ** (self.failures - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        spent = time.monotonic() - self.start
        out_of_tries = self.policy.retries is not None and self.failures > self.policy.retries
        if out_of_tries or (self.policy.retries is None and spent + delay > self.policy.total):
            tried = f"{self.failures - 1} retries" if out_of_tries else f"{spent:.0f}s of retries"
            raise FetchError(
                f"{self.url}: {cause}; giving up after {tried}",
                "check the server and the network, or raise bootc.retries=",
            )
        self.log(f"{self.url}: {cause}; retry {self.failures} in {delay:.1f}s")
        self.sleep(delay)

    def succeeded(self) -> None:
        """Progress was made: the next failure starts a fresh backoff."""
        if self.failures:
            self.failures = 0
            self.start = time.monotonic()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """GET requests with Range, redirects and TLS, through one fresh connection each."""

    def __init__(
        self,
        url: str,
        policy: Policy,
        log: Callable[[str], None],
        unsecure: bool = False,
        cafile: str | None = None,
        headers: dict[str, str] | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self.url = url
        self.policy = policy
        self.log = log
        self.unsecure = unsecure
        self.cafiles = [p for p in CA_BUNDLES if os.path.exists(p)] + ([cafile] if cafile else [])
        self.headers = headers or {}
        self.auth = auth

    def _context(self) -> ssl.SSLContext:
        # Imported here, not at the top: an initramfs without TLS (no libssl) still boots every
        # source that is not https.
        try:
            import ssl
        except ImportError as err:
            raise FetchError(
                f"{self.url}: https needs TLS, and this initramfs has none ({err})",
                "rebuild the initramfs with bootc-live build from an image that has python3's "
                "ssl module and libssl, or serve the image over http with a pinned bootc.digest=",
            ) from None
        if self.unsecure:
            return ssl._create_unverified_context()  # an explicit opt-in
        context = ssl.create_default_context()
        for bundle in self.cafiles:
            context.load_verify_locations(cafile=bundle)
        return context

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            context = self._context()  # first: http.client has no HTTPSConnection without ssl
            return http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.policy.stall, context=context
            )
        if parts.scheme == "http":
            return http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=self.policy.stall
            )
        raise FetchError(f"{url}: unsupported scheme {parts.scheme!r}")

    def open(
        self, start: int, end: int | None, retrier: Retrier
    ) -> tuple[http.client.HTTPResponse, int | None]:
        """GET bytes [start, end) (end None: to the end); retry until a usable answer.

        Returns the response positioned at `start` and the resource's total size if known.
        A server that ignores Range is answered with status 200 from byte 0.
        """
        url = self.url
        redirects = challenges = 0
        while redirects <= 10:
            headers = {"User-Agent": "bootc-live", "Accept-Encoding": "identity", **self.headers}
            if self.auth is not None:
                headers.update(self.auth.headers_for(url))
            if start or end is not None:
                headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            try:
                conn = self._connect(url)
                parts = urllib.parse.urlsplit(url)
                conn.request(
                    "GET",
                    parts.path + (f"?{parts.query}" if parts.query else "") or "/",
                    headers=headers,
                )
                resp = conn.getresponse()
            except OSError as err:
                if not _is_tls_error(err):
                    retrier.failed(f"connection failed ({_describe(err)})")
                    continue
                raise FetchError(
                    f"{url}: TLS failure ({getattr(err, 'reason', None) or err})",
                    "trust the server's CA with bootc-live build --ca FILE, "
                    "or use a trusted certificate",
                ) from None
            except http.client.HTTPException as err:
                retrier.failed(f"connection failed ({_describe(err)})")
                continue
            status = resp.status
            if status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location") or "")
                resp.close()
                redirects += 1
                continue
            if status == 206:
                m = _CONTENT_RANGE.fullmatch(resp.getheader("Content-Range", "") or "")
                if not m or int(m.group(1)) != start:
                    resp.close()
                    retrier.failed(
                        f"wrong Content-Range {resp.getheader('Content-Range')!r} "
                        f"for bytes {start}-"
                    )
                    continue
                total = int(m.group(3)) if m.group(3) != "*" else None
                return resp, total
            if status == 200:
                length = resp.getheader("Content-Length")
                return resp, int(length) if length and length.isdigit() else None
            reason = f"HTTP {status} {resp.reason}".strip()
            challenge = resp.getheader("WWW-Authenticate") or ""
            body = _error_body(resp)
            if status == 401 and self.auth is not None and challenges < 3:
                challenges += 1
                if self.auth.challenge(url, challenge):
                    continue
            if status in FATAL:
                raise FetchError(
                    f"{url}: {reason}", "check the URL in root= and the server", status, body
                )
            retrier.failed(reason, _retry_after(resp.getheader("Retry-After")))
        raise FetchError(f"{self.url}: too many redirects")


def _is_tls_error(err: OSError) -> bool:
    """A TLS failure (never retried): only possible once https has imported ssl."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(err, ssl.SSLError)


def _error_body(resp: http.client.HTTPResponse) -> bytes:
    """The start of an error response's body (for a registry's error codes), then close it."""
    try:
        return resp.read(4096)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        resp.close()


def _describe(err: BaseException) -> str:
    if isinstance(err, socket.timeout):
        return "stalled"
    text = str(err) or type(err).__name__
    return text


class RangeReader(Reader):
    """Reads bytes [start, end) of a URL as one stream, resuming where a connection broke."""

    def __init__(self, client: Client, start: int, end: int | None, retrier: Retrier) -> None:
        self._client = client
        self._pos = start
        self._end = end
        self._retrier = retrier
        self._resp: http.client.HTTPResponse | None = None
        self.ranges = True

    def read(self, n: int = -1) -> bytes:
        want = n if n >= 0 else 1 << 20
        if self._end is not None:
            want = min(want, self._end - self._pos)
        while want > 0:
            if self._resp is None:
                self._resp, _total = self._client.open(self._pos, self._end, self._retrier)
                if self._resp.status == 200 and self._pos:
                    self._resp.close()
                    raise FetchError(f"{self._client.url}: the server stopped honouring Range")
            try:
                data = self._resp.read(want)
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                self._retrier.failed(f"connection broke at byte {self._pos} ({_describe(err)})")
                continue
            if data:
                self._pos += len(data)
                self._retrier.succeeded()
                return data
            self._drop()
            if self._end is None:
                return b""
            self._retrier.failed(
                f"connection broke at byte {self._pos} (closed before byte {self._end})"
            )
        return b""

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._drop()


class _RangeStream:
    """The tar reader's view of a URL: each read is a ranged GET (used for the headers only)."""

    def __init__(self, client: Client, retrier: Retrier, size: int) -> None:
        self._client = client
        self._retrier = retrier
        self._size = size
        self.pos = 0

    def read_exact(self, n: int) -> bytes:
        if self.pos + n > self._size:
            raise LayerError("unexpected end of tar data")
        with RangeReader(self._client, self.pos, self.pos + n, self._retrier) as reader:
            parts = []
            left = n
            while left:
                data = reader.read(left)
                if not data:
                    raise LayerError("unexpected end of tar data")
                parts.append(data)
                left -= len(data)
        self.pos += n
        return b"".join(parts)

    def read_some(self, n: int) -> memoryview:
        return memoryview(self.read_exact(min(n, self._size - self.pos) or 1))

    def skip(self, n: int) -> None:
        self.pos += n

    def at_end(self) -> bool:
        return self.pos >= self._size


class HttpArchiveSource(MemberIndex):
    """An oci-archive read in place over http(s) with Range: nothing of it is stored."""

    def __init__(self, client: Client, retrier: Retrier, size: int) -> None:
        self._client = client
        self._retrier = retrier
        self.description = f"oci-archive:{client.url}"
        stream = _RangeStream(client, retrier, size)
        self._index_members(stream, lambda: stream.pos)

    def _open_member(self, offset: int, size: int) -> BinaryIO:
        return RangeReader(self._client, offset, offset + size, self._retrier)  # type: ignore[return-value]


def open_url(
    url: str,
    policy: Policy,
    log: Callable[[str], None],
    download_dir: str,
    unsecure: bool = False,
) -> ImageSource:
    """An image source for an oci-archive URL: read in place with Range, else downloaded once."""
    client = Client(url, policy, log, unsecure=unsecure)
    retrier = Retrier(url, policy, log)
    resp, total = client.open(0, BLOCK, retrier)
    if resp.status == 206 and total is not None:
        resp.close()
        return HttpArchiveSource(client, retrier, total)
    log(f"{url}: the server does not support Range; downloading the archive once")
    os.makedirs(download_dir, exist_ok=True)
    path = os.path.join(download_dir, "download.oci")
    with open(path, "wb") as out:
        _download(client, retrier, resp, out)
    return ArchiveSource(path, delete=True)


def _download(
    client: Client, retrier: Retrier, resp: http.client.HTTPResponse, out: BinaryIO
) -> None:
    """Copy a whole response into `out`; without Range, a broken transfer starts again."""
    while True:
        try:
            while data := resp.read(1 << 20):
                out.write(data)
            length = resp.getheader("Content-Length")
            if length is None or out.tell() == int(length):
                return
            cause = f"connection broke at byte {out.tell()} of {length}"
        except (OSError, http.client.HTTPException) as err:
            cause = f"connection broke at byte {out.tell()} ({_describe(err)})"
        resp.close()
        retrier.failed(f"{cause}; no Range: starting again")
        out.seek(0)
        out.truncate()
        resp, _total = client.open(0, None, retrier)
