"""http(s) done natively: ranged, streamed reads that resume, with bounded retries.

When the server supports `Range`, an oci-archive is read in place over the network: its tar
headers first, then each blob in application order straight into verification and unpacking,
so the archive is never stored. Without `Range` it is downloaded once into a file.

The server is not trusted. One policy each, kept here:
- deadlines (`Policy`): a connection fails when it stalls or trickles; failures are retried
  with backoff within a count or a time budget; `Retry-After` is honoured up to a cap;
- redirects (`Client._redirect`): http(s) only, never from https down to http unless unsecure,
  no loops, at most REDIRECTS;
- credentials (`Authenticator`): bound to one origin (scheme, host, port), so they never follow
  a redirect elsewhere; a `user:password@` in a URL becomes such Basic credentials;
- bodies (`RangeReader`, `read_body`): read to their end, resumed where a connection broke,
  within a size limit; a large one (`ParallelReader`) through several ranged connections at
  once, handed on in order, with a bounded number of parts held;
- failures (`_failure`): any exception from an exchange becomes a cause to retry or one
  `FetchError` line; answers that cannot improve fail at once. URLs are printed `redact`ed.
"""

from __future__ import annotations

import base64
import email.utils
import errno
import http.client
import io
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Protocol

from .errors import BootcLiveError, ImageError, LayerError, SpaceError, shown
from .sources import NOT_A_FILE, ArchiveSource, ImageSource, MemberIndex, open_file
from .streams import Reader
from .tarstream import BLOCK

CA_BUNDLES = (  # all that exist are trusted
    "/etc/bootc-live/ca.pem",  # `bootc-live build --ca FILE` puts it into the initramfs
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
)
REDIRECTS = 10
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}  # and 5xx but 501/505; other answers are final
PROGRESS = 64 << 10  # bytes read since the last failure that make a fresh backoff and budget
MAX_RANGE_READS = 100_000  # tar headers read one by one from an archive in place
ERROR_BODY = 4096
INTERIM = 10  # 1xx answers skipped before the real one: a server could send them forever
TRAILER_LINES = 100  # the lines after a chunked body's last chunk, likewise
MAX_LINE = 65536  # http.client's bound on a header line
PART = 2 << 20  # what each connection of a ParallelReader fetches at a time
PARALLEL_MIN = 4 * PART  # bodies up to this size come through one connection
PIECE = 256 << 10  # the reads a part is made of
# bootc.connections= default: one. A guest whose CPU is the bound loses by more: under TCG the
# boot's unpack took 1.35-1.39 x as long through 4, 1.28 x even at 25 MB/s a connection
# (bench/fetch --boot); on the host, at 25 MB/s a connection, 4 took 0.24 x the time.
CONNECTIONS = 1
HOST_CONNECTIONS = 4  # the host command line's: a host has the CPU for them
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")
_DIGITS = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_HINT = "check the URL and the server"
# Header values a message may quote: numbers and ranges, content codings. Any other value is
# the server's free text, which may echo what the request carried: it is not repeated.
_NUMBERS = re.compile(r"(?:bytes )?[0-9 ,*/-]*")
_CODINGS = re.compile(
    r"(?:(?:chunked|identity|gzip|x-gzip|deflate|compress|br|zstd)(?:, ?|$))+", re.IGNORECASE
)  # codings are case-insensitive (RFC 9110 8.4.1): GZIP is gzip


class FetchError(BootcLiveError):
    """A URL cannot be fetched; `status` is the HTTP status when there was one."""

    def __init__(
        self, message: str, hint: str = "", status: int | None = None, body: bytes = b""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.body = body  # the start of an error response's body (a registry's error JSON)


class NoRangeResume(FetchError):
    """A resumed request was answered from byte 0: the server stopped honouring Range."""


class Stalled(socket.timeout):
    """A connection missed a deadline: no byte for too long, or too few bytes a second."""


DOCUMENT_SECONDS = 120.0  # the longest a document (manifest, token, index) may take to come


@dataclass(frozen=True)
class Policy:
    """The deadline model: per-stall, low-speed and total bounds, and the retries they allow.

    A connection fails when no byte comes for `stall` seconds (bootc.timeout), or when fewer
    than `low_speed` bytes a second come over a `low_speed_time` window (a trickling server).
    Failures are retried with exponential backoff, until `retries` (bootc.retries) are spent
    or, by default, until `total` seconds pass without progress (PROGRESS bytes since the first
    failure). A `Retry-After` longer than the backoff is honoured, up to `max_retry_after`.
    A body larger than PARALLEL_MIN bytes comes through up to `connections` at once.
    """

    retries: int | None = None
    total: float = 600.0  # like the original's 100 x 5 s
    stall: float = 30.0
    low_speed: int = 1024
    low_speed_time: float = 60.0
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    connections: int = CONNECTIONS


_LOOKASIDE_AT = re.compile(r"@sha(?:256|512)=[0-9a-f]+/")


def redact(url: str) -> str:
    """`url` fit to print: no user or password, no query (signed URLs carry secrets there).
    An @ in the path may end a password whose / was not percent-encoded (the parser then took
    its start for the host): what comes before it is hidden too."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path
        if "@" in _LOOKASIDE_AT.sub("", path):  # a lookaside's NAME@sha256=HEX is no secret
            netloc, path = "***@" + path.rpartition("@")[2], ""
        elif "@" in parts.query + parts.fragment:
            netloc, path = "***", ""  # USER:PA/SS?… or USER:PASS#…: the host is past them
        elif "@" in parts.netloc:
            netloc = "***@" + netloc
        text = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
        text += "?…" if parts.query else ""
    except ValueError:
        text = "(an invalid URL)"
    return shown(text, 150)


def scrub(text: str, url: str) -> str:
    """`text` (what a tool given `url` wrote: url-lib's "Downloading 'URL' failed!") with
    `url`, its password and its query made `redact`ed."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password or ""
    except ValueError:
        parts, password = None, ""
    text = text.replace(url, redact(url))
    secrets = [password, urllib.parse.unquote(password)]
    if parts is not None:
        secrets += [parts.query, parts.netloc.rpartition("@")[0]]
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port): what credentials are bound to."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), port or default


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without `user:password@`, (user, password) or None)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    user, _, password = userinfo.partition(":")
    return bare, (urllib.parse.unquote(user), urllib.parse.unquote(password))


class Authenticator(Protocol):
    """Credentials for one origin: headers per URL, and answers to 401."""

    def headers_for(self, url: str) -> dict[str, str]:
        """Authorization for `url`: none for another origin (a redirect elsewhere)."""

    def challenge(self, url: str, www_authenticate: str) -> bool:
        """A 401 with this challenge: True when new credentials make a retry worthwhile."""


def basic(credentials: tuple[str, str]) -> str:
    """The `Authorization` value of Basic credentials."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class BasicAuth:
    """Basic credentials bound to the origin of one URL, sent to it only."""

    def __init__(self, url: str, credentials: tuple[str, str]) -> None:
        self.origin = origin(url)
        self._value = basic(credentials)

    def headers_for(self, url: str) -> dict[str, str]:
        return {"Authorization": self._value} if origin(url) == self.origin else {}

    def challenge(self, url: str, www_authenticate: str) -> bool:
        return False  # the same credentials again cannot do better

    def __repr__(self) -> str:
        return f"BasicAuth({self.origin})"


class Retrier:
    """Counts failures against the policy; sleeps with exponential backoff between attempts."""

    def __init__(
        self,
        url: str,
        policy: Policy,
        log: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.policy = policy
        self.log = log
        self.sleep = sleep
        self.clock = clock
        self.start = clock()  # of the current run of failures
        self.failures = 0
        self.progressed = 0

    def failed(self, cause: str, retry_after: float | None = None, url: str = "") -> None:
        """Record a failure: wait before the next attempt, or raise when the bounds are spent."""
        where = redact(url or self.url)
        if not self.failures:
            self.start = self.clock()
        self.failures += 1
        self.progressed = 0
        delay = min(self.policy.max_backoff, 0.5 * 2 ** min(self.failures - 1, 30))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.max_retry_after))
        spent = self.clock() - self.start
        out_of_tries = self.policy.retries is not None and self.failures > self.policy.retries
        if out_of_tries or (self.policy.retries is None and spent + delay > self.policy.total):
            tried = f"{self.failures - 1} retries" if out_of_tries else f"{spent:.0f}s of retries"
            raise FetchError(
                f"{where}: {cause}; giving up after {tried}",
                "check the server and the network, or raise bootc.retries=",
            )
        self.log(f"{where}: {cause}; retry {self.failures} in {delay:.1f}s")
        self.sleep(delay)

    def progress(self, n: int) -> None:
        """`n` bytes came: after PROGRESS of them, the next failure starts a fresh backoff."""
        self.progressed += n
        if self.failures and self.progressed >= PROGRESS:
            self.failures = 0

    def completed(self) -> None:
        """A range asked for came whole: the next failure starts a fresh backoff too (an
        archive's members are read in requests of a few hundred bytes, fewer than PROGRESS;
        a server that breaks some of them must not use up the retries of all)."""
        self.failures = 0


def told(value: str, shape: re.Pattern[str], limit: int, quote: bool = True) -> str:
    """A header's value to quote in a message: as it is when it has the expected shape
    (capped at `limit`), else only said to be there."""
    if not shape.fullmatch(value):
        return "(a value of the server's)"
    return repr(shown(value, limit)) if quote else shown(value, limit)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` (seconds or an HTTP date); None if unusable."""
    value = (value or "").strip()
    if not value:
        return None
    if _DIGITS.fullmatch(value):
        return float(value)
    if value.isdigit():
        return float("inf")  # more digits than any clock: the caller's cap applies
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def parse_content_length(value: str | None) -> int | None:
    """The body's length from `Content-Length`; ValueError when the header is not a number."""
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}  # a repeated header is joined with commas
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise ValueError(f"invalid Content-Length {told(value, _NUMBERS, 20)}")
    return int(next(iter(values)))


def parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    """(first, last, total or None) of `Content-Range: bytes FIRST-LAST/TOTAL`; ValueError."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        raise ValueError(f"invalid Content-Range {told(value or '', _NUMBERS, 30)}")
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        raise ValueError(f"invalid Content-Range {told(value or '', _NUMBERS, 30)}")
    return first, last, total


@dataclass
class Answer:
    """A usable answer (200 or 206) positioned at the requested start."""

    resp: http.client.HTTPResponse
    url: str  # the URL that answered, after redirects
    total: int | None  # the resource's size, when known
    length: int | None  # the bytes this answer carries, when known

    @property
    def status(self) -> int:
        return self.resp.status

    def close(self) -> None:
        self.resp.close()


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
        self.url, credentials = split_credentials(url)
        self.policy = policy
        self.log = log
        self.unsecure = unsecure
        self.cafiles = [p for p in CA_BUNDLES if os.path.exists(p)] + ([cafile] if cafile else [])
        self.headers = headers or {}
        self.auth = auth
        if credentials is not None and auth is None:
            self.auth = BasicAuth(self.url, credentials)
        self.where = redact(self.url)  # the URL that last answered, fit to print
        self._ssl_context: Any = None

    def _context(self) -> Any:
        # Imported here, not at the top: an initramfs without TLS (no libssl) still boots every
        # source that is not https.
        try:
            import ssl
        except ImportError as err:
            raise FetchError(
                f"{self.where}: https needs TLS, and this initramfs has none ({err})",
                "rebuild the initramfs with bootc-live build from an image that has python3's "
                "ssl module and libssl, or serve the image over http with a pinned bootc.digest=",
            ) from None

        if self._ssl_context is None:  # made once: a large layer takes a request a part
            if self.unsecure:
                self._ssl_context = ssl._create_unverified_context()  # an explicit opt-in
            else:
                context = ssl.create_default_context()
                for bundle in self.cafiles:
                    try:  # OpenSSL reading a FIFO would wait for ever: checked first
                        open_file(bundle, f"CA bundle {bundle}", hint=NOT_A_FILE).close()
                    except ImageError as err:
                        raise FetchError(str(err), err.hint) from None
                    context.load_verify_locations(cafile=bundle)
                self._ssl_context = context
        return self._ssl_context

    def _request(self, url: str, start: int, end: int | None) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port
            if port == 0:
                raise ValueError("Port 0 is no server's")
        except ValueError as err:  # "Port out of range 0-65535", "Port could not be cast …"
            why = "its port is not a number from 1 to 65535" if "@" in url else str(err)
            hint = "fix the port in the URL" if url == self.url else "the server redirected there"
            raise FetchError(f"{redact(url)}: {why}", hint) from None
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = self._context()  # first: http.client has no HTTPSConnection without ssl
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.policy.stall, context=context
            )
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=self.policy.stall)
        else:
            raise FetchError(f"{redact(url)}: unsupported scheme {parts.scheme!r}", _HINT)
        headers = {"User-Agent": "bootc-live", "Accept-Encoding": "identity", **self.headers}
        if self.auth is not None:
            headers.update(self.auth.headers_for(url))
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        conn.response_class = _Response
        conn.connect()
        paced = _PacedSocket(conn.sock, self.policy)
        conn.sock = paced
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers=headers)
            return conn.getresponse()
        except BaseException:
            paced.shutdown()
            raise

    def open(self, start: int, end: int | None, retrier: Retrier) -> Answer:
        """GET bytes [start, end) (end None: to the end); retry until a usable answer.

        A server that ignores Range answers with status 200 from byte 0.
        """
        url = self.url
        seen = {url}
        challenges = 0
        while True:
            self.where = redact(url)
            try:
                resp = self._request(url, start, end)
            except Exception as err:  # _failure sorts them
                retrier.failed(f"connection failed ({_failure(err, self.where)})", url=url)
                continue
            status = resp.status
            if 300 <= status < 400:
                url = self._redirect(url, resp, seen)
                continue
            if status in (200, 206):
                try:
                    return self._answer(resp, url, start)
                except BaseException:
                    resp.close()
                    raise
            reason = status_line(status)
            challenge = resp.getheader("WWW-Authenticate") or ""
            retry_after = parse_retry_after(resp.getheader("Retry-After"))
            body = _error_body(resp)
            if status == 401 and self.auth is not None and challenges < 3:
                challenges += 1
                if self.auth.challenge(url, challenge):
                    continue
            if status not in RETRYABLE and not (500 <= status < 600 and status not in (501, 505)):
                raise FetchError(f"{self.where}: {reason}", _HINT, status, body)
            retrier.failed(reason, retry_after, url=url)

    def _redirect(self, url: str, resp: http.client.HTTPResponse, seen: set[str]) -> str:
        """The URL a 3xx sends us to, if the redirect policy allows it."""
        status, location = resp.status, (resp.getheader("Location") or "").strip()
        resp.close()
        if status not in (301, 302, 303, 307, 308) or not location:
            raise FetchError(f"{self.where}: HTTP {status} without a Location to follow", _HINT)
        try:
            target = urllib.parse.urljoin(url, location)
            scheme = urllib.parse.urlsplit(target).scheme
        except ValueError:
            raise FetchError(f"{self.where}: redirected to an invalid URL", _HINT) from None
        if scheme not in ("http", "https"):
            raise FetchError(f"{self.where}: redirected to a {scheme}: URL, refused", _HINT)
        here = urllib.parse.urlsplit(url).scheme  # "HTTPS://" too (a token realm's spelling)
        if here == "https" and scheme == "http" and not self.unsecure:
            raise FetchError(
                f"{self.where}: redirected from https to plain http ({redact(target)}), refused",
                "the server must keep to https (a registry can be allowed plain http with "
                "bootc.registry.unsecure=1)",
            )
        if target in seen:
            raise FetchError(f"{self.where}: redirect loop", _HINT)
        if len(seen) > REDIRECTS:
            raise FetchError(f"{redact(self.url)}: more than {REDIRECTS} redirects", _HINT)
        seen.add(target)
        return target

    def _answer(self, resp: http.client.HTTPResponse, url: str, start: int) -> Answer:
        # A request without TE allows chunked only (RFC 9112 6.1); http.client reads any other
        # coding ("gzip, chunked") as the bytes themselves.
        coding = (resp.getheader("Transfer-Encoding") or "").strip().lower()
        if coding not in ("", "chunked", "identity"):
            raise FetchError(
                f"{self.where}: the server sent the body in Transfer-Encoding "
                f"{told(coding, _CODINGS, 20)}, which was not asked for",
                "the server must send the body as it is, or chunked",
            )
        try:
            length = parse_content_length(resp.getheader("Content-Length"))
            if resp.status == 200:
                return Answer(resp, url, length, length)
            first, last, total = parse_content_range(resp.getheader("Content-Range"))
        except ValueError as err:
            raise FetchError(f"{self.where}: {err}", _HINT) from None
        if first != start:
            raise FetchError(
                f"{self.where}: answered bytes {first}-{last} when asked for bytes {start}-",
                "the server's Range support is broken",
            )
        return Answer(resp, url, total, last - first + 1)


class _Response(http.client.HTTPResponse):
    """http.client's answer with its two loops bounded: interim answers and trailer lines,
    which a server could otherwise send forever, each byte within the deadlines; and its
    chunk sizes read strictly (hex digits only)."""

    _interim = 0

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        # Every 1xx but 101 is interim (RFC 9110 15.2: 102 Processing, 103 Early Hints …) and a
        # client reads past it to the answer; http.client skips only 100: the others are read
        # as 100 so that it skips them too.
        if 100 <= status < 200 and status != http.client.SWITCHING_PROTOCOLS:
            self._interim += 1
            if self._interim > INTERIM:
                raise http.client.HTTPException(f"got more than {INTERIM} interim answers")
            status = http.client.CONTINUE
        return version, status, reason

    def _read_next_chunk_size(self) -> int:
        # http.client takes whatever int(…, 16) takes: "-1" too, and then reads the rest of
        # the connection into memory at once (fp.read(-1)). A chunk size is 1*HEXDIG.
        assert self.fp is not None
        line = self.fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("chunk size")
        size = line.partition(b";")[0].strip(b" \t\r\n")
        if not _CHUNK_SIZE.fullmatch(size):
            self._close_conn()  # type: ignore[attr-defined]
            raise ValueError("invalid chunk size")  # http.client makes it IncompleteRead
        return int(size, 16)

    def _read_and_discard_trailer(self) -> None:
        assert self.fp is not None
        for _ in range(TRAILER_LINES):
            line = self.fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise http.client.LineTooLong("trailer line")
            if line in (b"\r\n", b"\n", b""):
                return
        raise http.client.HTTPException(f"got more than {TRAILER_LINES} trailer lines")


class _Paced(io.RawIOBase):
    """A connection's incoming bytes, held to the policy's stall and low-speed deadlines."""

    def __init__(self, sock: socket.socket, policy: Policy) -> None:
        self._sock = sock
        self._policy = policy
        self._last = self._window = time.monotonic()
        self._got = 0  # bytes in the current low-speed window

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        stall, window = self._policy.stall, self._policy.low_speed_time
        while True:
            now = time.monotonic()
            if now - self._last >= stall:
                raise Stalled(f"stalled: no data for {stall:g}s")
            if now - self._window >= window:
                if self._got < self._policy.low_speed * window:
                    raise Stalled(
                        f"too slow: {self._got} bytes in {window:g}s, under "
                        f"{self._policy.low_speed} bytes/s"
                    )
                self._window, self._got = now, 0
            self._sock.settimeout(max(0.01, min(self._last + stall, self._window + window) - now))
            try:
                n = self._sock.recv_into(buffer)
            except socket.timeout:
                continue  # the deadlines above judge it
            self._last = time.monotonic()
            self._got += n
            return n

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.close()


class _PacedSocket:
    """A connected socket whose reader is `_Paced`; the response closes the socket."""

    def __init__(self, sock: Any, policy: Policy) -> None:
        self._sock = sock
        self._policy = policy

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> BinaryIO:
        return io.BufferedReader(_Paced(self._sock, self._policy))

    def close(self) -> None:
        pass  # http.client closes its connection early; the response's reader closes us

    def shutdown(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def status_line(status: int) -> str:
    """`HTTP 404 Not Found`: a status told with its standard reason, never the server's (a
    reason phrase is free text of the server's, which may echo what the request carried)."""
    return f"HTTP {status} {http.client.responses.get(status, '')}".strip()


def exchange_failure(err: OSError | http.client.HTTPException) -> str:
    """A connection's or an answer's failure in words fit to print: the server's own words
    (the status line it sent, the version it named) are not repeated."""
    if isinstance(err, http.client.BadStatusLine) and not isinstance(
        err, http.client.RemoteDisconnected
    ):
        return "not an HTTP answer"
    if isinstance(err, http.client.UnknownProtocol):
        return "not an HTTP/1.x answer"
    return shown(str(err) or type(err).__name__)


def _failure(err: BaseException, where: str) -> str:
    """The one place a failed exchange is judged: a cause worth a retry, or FetchError now.

    Nothing of the server's own words (its status line, its reason phrase) reaches the
    message, nor anything of the request (its headers carry credentials): either may hold
    a secret a proxy or a server echoes.
    """
    if isinstance(err, BootcLiveError):
        raise err
    ssl = sys.modules.get("ssl")  # a TLS failure is only possible once https imported it
    if ssl is not None and isinstance(err, ssl.SSLError):
        if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            # The server closed the connection in the handshake (restarting, overloaded, a
            # balancer draining): retried like any connection it closes. "TLS failure" stays
            # in the words: a registry's unsecure ping falls back to plain http on them.
            return "TLS failure: the server closed the connection"
        raise FetchError(
            f"{where}: TLS failure ({shown(str(getattr(err, 'reason', '') or err))})",
            "the initramfs needs the server's CA (bootc-live build --ca FILE), or use a "
            "trusted certificate"
            if isinstance(err, ssl.SSLCertVerificationError)
            else "check that the server speaks https on this port",
        ) from None
    if isinstance(err, http.client.LineTooLong) or (
        type(err) is http.client.HTTPException and "more than" in str(err)
    ):
        raise FetchError(f"{where}: malformed answer ({shown(str(err))})", _HINT) from None
    if isinstance(err, http.client.InvalidURL):  # a redirect to what no request can carry
        raise FetchError(f"{where}: not a URL that can be requested", _HINT) from None
    if isinstance(err, socket.timeout) and not isinstance(err, Stalled):
        return "stalled"  # connecting, the TLS handshake or the headers outlasted bootc.timeout
    if isinstance(err, (OSError, http.client.HTTPException)):
        return exchange_failure(err)
    raise FetchError(f"{where}: unusable answer or request ({type(err).__name__})", _HINT) from None


def _error_body(resp: http.client.HTTPResponse) -> bytes:
    """The start of an error response's body (for a registry's error codes), then close it."""
    try:
        return resp.read(ERROR_BODY)
    except Exception:  # an error body is a courtesy
        return b""
    finally:
        resp.close()


class RangeReader(Reader):
    """Reads bytes [start, end) of a URL as one stream, resuming where a connection broke.

    A body from byte 0 on a server that answers a resumed request whole (200) is read again
    from its start, the bytes handed on already skipped; from the middle, that is
    NoRangeResume (the caller downloads instead).
    """

    def __init__(self, client: Client, start: int, end: int | None, retrier: Retrier) -> None:
        if start < 0 or (end is not None and end < start):
            raise FetchError(
                f"{client.where}: bytes {start}-{end} is not a range to read",
                "the archive's index of members is corrupt",
            )
        self._client = client
        self._start = start
        self._pos = start
        self._end = end
        self._retrier = retrier
        self._answer: Answer | None = None
        self.answered = 0.0  # when the current answer's headers came (time.monotonic())
        self._behind = 0  # bytes of a body answered again from byte 0 that were handed on
        self._until: int | None = None  # where the current answer's bytes end, when it says
        self.first: Answer | None = None  # the first answer (its headers describe the body)

    def read(self, n: int = -1) -> bytes:
        want = n if n >= 0 else 1 << 20
        if self._end is not None:
            want = min(want, self._end - self._pos)
        while want > 0:
            if self._answer is None:
                self._answer = self._client.open(self._pos, self._end, self._retrier)
                self.answered = time.monotonic()
                self.first = self.first or self._answer
                self._behind = 0
                length = self._answer.length
                at = 0 if self._answer.status == 200 else self._pos
                self._until = None if length is None else at + length
                if self._answer.status == 200 and self._pos:
                    if self._start:  # bytes from the middle, answered from byte 0
                        self._drop()
                        raise NoRangeResume(
                            f"{self._client.where}: the server stopped honouring Range", _HINT
                        )
                    self._behind = self._pos  # the body again: read up to where it broke
            try:
                if self._behind:  # no progress: a server that always breaks there must fail
                    skipped = self._answer.resp.read(min(self._behind, 1 << 20))
                    self._behind -= len(skipped)
                    if skipped:
                        continue
                data = self._answer.resp.read(want)
            except Exception as err:  # _failure sorts them
                url = self._answer.url
                self._drop()
                cause = _failure(err, redact(url))
                self._retrier.failed(f"connection broke at byte {self._pos} ({cause})", url=url)
                continue
            if data:
                self._pos += len(data)
                self._retrier.progress(len(data))
                if self._pos == self._end:
                    self._retrier.completed()
                return data
            total = self._answer.total if self._end is None else self._end
            known = self._answer.total  # the resource's size, as this answer gave it
            if total is None:  # `bytes FIRST-LAST/*`: the end is at least where the answer's is
                total = self._until
            url = self._answer.url
            self._drop()
            if total is None or self._pos >= total:
                return b""
            if known is not None and self._pos >= known:  # no retry makes it longer
                raise FetchError(
                    f"{redact(url)}: it is {known} bytes long, shorter than what was asked for "
                    f"(up to byte {total})",
                    "the server's copy is not what names it (a descriptor's or index's size)",
                )
            self._retrier.failed(
                f"connection broke at byte {self._pos} (closed before byte {total})", url=url
            )
        return b""

    def _drop(self) -> None:
        if self._answer is not None:
            self._answer.close()
            self._answer = None

    def close(self) -> None:
        self._drop()


class _Part:
    """Bytes [start, end) of a ParallelReader's body: fetched by a worker, then read."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.pieces: deque[bytes] = deque()
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Stopped(Exception):
    """A worker's part is no longer wanted (the reader was closed or went to one connection)."""


class ParallelReader(Reader):
    """Bytes [start, end) of a URL through up to `connections` ranged connections at once,
    PART bytes each, read in order: the body of a large layer, faster where one connection is
    held back (a per-connection rate, a long round trip).

    At most `connections` parts are fetched or held ahead of the one being read, so what this
    takes in memory stays below (connections + 1) * PART. Each part resumes and retries on its
    own (a Retrier of its own: the policy's bounds hold per part); a part's failure is raised
    when reading gets to it, and again at every read after. A body from byte 0 on a server that
    ignores Range (a 200 to a part after the first) is read again through one connection, the
    bytes already handed on skipped. Closing stops the workers, also in a retry's backoff.
    """

    def __init__(self, client: Client, start: int, end: int, connections: int) -> None:
        self._client = client
        self._start = start
        self._end = end
        self._connections = connections
        self._pos = start  # the next byte read() hands on
        self._next = start  # the first byte no part covers yet
        self._ahead: deque[_Part] = deque()  # parts fetched or being fetched, in order
        self._reading: _Part | None = None
        self._piece = b""  # the piece being read, from self._at
        self._at = 0
        self._todo: deque[_Part | None] = deque()  # for the workers; None: end
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._told = False  # the workers are to end once no part is left
        self._stop = threading.Event()  # the workers are to end at once
        self._error: BaseException | None = None  # raised again at every read
        self._closed = False
        self._single: RangeReader | None = None  # Range ignored: one connection from here on

    def read(self, n: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        want = min(n if n >= 0 else 1 << 20, self._end - self._pos)
        if want <= 0 or self._closed:
            return b""
        if self._single is not None:
            data = self._single.read(want)
        elif self._at < len(self._piece):
            data = self._piece[self._at : self._at + want]
        else:
            piece = self._next_piece()
            if piece is None:
                return self.read(n)  # through self._single now
            self._piece, self._at = piece, 0
            data = piece if len(piece) <= want else piece[:want]
        if self._single is None:
            self._at += len(data)
        self._pos += len(data)
        return data

    def _next_piece(self) -> bytes | None:
        """The next piece in order, waiting for its part; None when the server ignores Range
        and the rest is to come through one connection. A failed part's error is raised, and
        kept for every read after."""
        while self._reading is None or not self._reading.pieces:
            self._reading = None
            self._schedule()
            assert self._ahead, (self._pos, self._end)  # pos < end: a part covers it
            part = self._ahead[0]
            part.done.wait()
            with self._cond:
                self._ahead.popleft()
            self._schedule()  # the window moves on: another part fetched while this is read
            try:
                if isinstance(part.error, NoRangeResume) and self._start == 0:
                    self._one_connection()
                    return None
                if part.error is not None:
                    raise part.error
            except BaseException as err:
                self._error = err
                self._stop_workers()
                raise
            self._reading = part
        return self._reading.pieces.popleft()

    def _schedule(self) -> None:
        """Parts ahead up to the window; the workers started the first time, told to end once
        every part is given out."""
        with self._cond:
            while len(self._ahead) < self._connections and self._next < self._end:
                part = _Part(self._next, min(self._end, self._next + PART))
                self._next = part.end
                self._ahead.append(part)
                self._todo.append(part)
            self._cond.notify_all()
        while not self._told and len(self._workers) < min(self._connections, len(self._ahead)):
            worker = threading.Thread(target=self._work, name="fetch-part", daemon=True)
            self._workers.append(worker)
            worker.start()
        if self._next >= self._end and not self._told:
            self._stop_workers(drop=False)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._todo:
                    self._cond.wait()
                part = self._todo.popleft()
            if part is None:
                return
            try:
                self._fetch(part)
            except BaseException as err:  # raised by read() when it gets to this part
                part.error = err
            part.done.set()

    def _fetch(self, part: _Part) -> None:
        client = self._client
        retrier = Retrier(client.url, client.policy, client.log, sleep=self._pause)
        with RangeReader(client, part.start, part.end, retrier) as reader:
            left = part.end - part.start
            while left:
                if self._stop.is_set():
                    raise _Stopped()
                data = reader.read(min(left, PIECE))
                if not data:  # RangeReader retries a body cut short: not expected
                    where = part.end - left
                    raise FetchError(f"{client.where}: the body ended at byte {where}", _HINT)
                part.pieces.append(data)
                left -= len(data)

    def _pause(self, seconds: float) -> None:
        """A worker's backoff before a retry, cut short when the reader stops."""
        if self._stop.wait(seconds):
            raise _Stopped()

    def _one_connection(self) -> None:
        """The server answered a part from byte 0: the rest through one connection, the bytes
        handed on already skipped."""
        self._stop_workers()
        self._client.log(
            f"{self._client.where}: the server ignores Range; the rest through one connection"
        )
        retrier = Retrier(self._client.url, self._client.policy, self._client.log)
        single = RangeReader(self._client, 0, self._end, retrier)
        try:
            skip = self._pos
            while skip:
                data = single.read(min(skip, 1 << 20))
                if not data:  # RangeReader retries a body cut short: not expected
                    where = self._pos - skip
                    raise FetchError(f"{self._client.where}: the body ended at byte {where}", _HINT)
                skip -= len(data)
        except BaseException:
            single.close()
            raise
        self._single = single

    def _stop_workers(self, drop: bool = True) -> None:
        """The workers end once they have no part left to fetch; with `drop`, at once (a part
        being fetched is given up at its next piece or retry) and the parts ahead are dropped."""
        with self._cond:
            if drop:
                self._stop.set()
                self._ahead.clear()
                self._todo.clear()
                self._reading = None
                self._piece, self._at = b"", 0
            if drop or not self._told:
                self._todo.extend([None] * len(self._workers))
            self._told = True
            self._cond.notify_all()

    def close(self) -> None:
        self._closed = True
        self._stop_workers()
        if self._single is not None:
            self._single.close()


def open_range(client: Client, start: int, end: int, retrier: Retrier) -> Reader:
    """Bytes [start, end) of the client's URL: through several connections when the body is
    larger than PARALLEL_MIN and the policy allows them (ParallelReader), else through one."""
    if client.policy.connections > 1 and end - start > PARALLEL_MIN:
        return ParallelReader(client, start, end, client.policy.connections)
    return RangeReader(client, start, end, retrier)


def read_body(client: Client, what: str, limit: int) -> tuple[bytes, http.client.HTTPMessage]:
    """A whole document (manifest, token, …) and its headers: read to its end within `limit`
    bytes, resumed where a connection broke (started again if the server ignores Range)."""
    retrier = Retrier(client.url, client.policy, client.log)
    # A server trickling just above the low-speed floor would hold a 4 MiB document for an
    # hour: an answer's body comes whole within DOCUMENT_SECONDS of its headers (a manifest is
    # kilobytes). Waiting for a server to answer at all is the retries' (Policy.total).
    for _attempt in range(3):
        parts: list[bytes] = []
        got = 0
        try:
            with RangeReader(client, 0, None, retrier) as reader:
                # In small pieces, so that the deadline is looked at while they trickle.
                while data := reader.read(min(16 << 10, limit + 1 - got)):
                    parts.append(data)
                    got += len(data)
                    if got > limit:
                        raise FetchError(
                            f"{client.where}: the {what} is larger than {limit} bytes",
                            "this is not what the server should answer",
                        )
                    if time.monotonic() - reader.answered > DOCUMENT_SECONDS:
                        raise FetchError(
                            f"{client.where}: the {what} did not come whole within "
                            f"{DOCUMENT_SECONDS:g}s ({got} bytes came)",
                            "check the server and the network",
                        )
                assert reader.first is not None
                return b"".join(parts), reader.first.resp.headers
        except NoRangeResume:
            continue  # from the start again
    raise FetchError(f"{client.where}: the {what} broke off three times", _HINT)


class _RangeStream:
    """The tar reader's view of a URL: each read is a ranged GET (used for the headers only)."""

    def __init__(self, client: Client, retrier: Retrier, size: int) -> None:
        self._client = client
        self._retrier = retrier
        self._size = size
        self._reads = 0
        self.pos = 0

    def read_exact(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self._size:
            raise LayerError("unexpected end of tar data")
        self._reads += 1
        if self._reads > MAX_RANGE_READS:
            raise LayerError(f"more than {MAX_RANGE_READS} tar headers")
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
        if n < 0:
            raise LayerError(f"negative size {n}")
        self.pos += n

    def at_end(self) -> bool:
        return self.pos >= self._size


class HttpArchiveSource(MemberIndex):
    """An oci-archive read in place over http(s) with Range: nothing of it is stored."""

    def __init__(self, client: Client, retrier: Retrier, size: int) -> None:
        self._client = client
        self._retrier = retrier
        self.description = f"oci-archive:{client.where}"
        self.size = size
        stream = _RangeStream(client, retrier, size)
        self._index_members(stream, lambda: stream.pos)

    def _open_member(self, offset: int, size: int) -> BinaryIO:
        return open_range(self._client, offset, offset + size, self._retrier)  # type: ignore[return-value]


class Spool:
    """Where open_url downloads an archive it cannot read in place: a directory (the host's
    TMPDIR). At boot, runtime.boot's RamSpool: a tmpfs of its own, sized to the memory."""

    full_hint = (
        "free space there, or serve the archive with Range support (it is then read in place, "
        "not stored)"
    )

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def take(self, length: int | None) -> str:
        """The directory, ready for a download of `length` bytes (None: not announced)."""
        os.makedirs(self.directory, exist_ok=True)
        return self.directory

    def release(self) -> None:
        """The download is gone: what was made for it goes too."""


def open_url(
    url: str,
    policy: Policy,
    log: Callable[[str], None],
    download: str | Spool,
    unsecure: bool = False,
    cafile: str | None = None,
) -> ImageSource:
    """An image source for an oci-archive URL: read in place with Range, else downloaded once
    (into `download`, a directory or a Spool)."""
    spool = download if isinstance(download, Spool) else Spool(download)
    client = Client(url, policy, log, unsecure=unsecure, cafile=cafile)
    retrier = Retrier(client.url, policy, log)
    answer = client.open(0, BLOCK, retrier)
    encoding = (answer.resp.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":  # asked for none: the bytes that came are no tar's
        answer.close()
        raise FetchError(
            f"{client.where}: the server sends the archive encoded (Content-Encoding "
            f"{told(encoding, _CODINGS, 20)}), though asked for it as it is",
            "turn the server's compression off for this file",
        )
    if answer.status == 206 and answer.total is not None:
        answer.close()
        return HttpArchiveSource(client, retrier, answer.total)
    if answer.status == 206:  # `bytes 0-511/*`: the part is not the archive
        answer.close()
        log(f"{client.where}: the server does not give the archive's size; downloading it once")
        answer = _open_whole(client, retrier)
    else:
        log(f"{client.where}: the server does not support Range; downloading the archive once")
    try:
        where = spool.take(answer.length)
        fd, path = tempfile.mkstemp(".oci", "download-", where)
    except BaseException:
        answer.close()
        spool.release()
        raise
    try:
        with os.fdopen(fd, "wb") as out:
            _download(client, retrier, answer, out, where, spool.full_hint)
        return ArchiveSource(path, delete=True, name=client.where, release=spool.release)
    except BaseException:  # not an oci-archive after all, too: the download goes
        os.unlink(path)
        spool.release()
        raise


def _download(
    client: Client, retrier: Retrier, answer: Answer, out: BinaryIO, where: str, hint: str
) -> None:
    """Copy a whole answer into `out` (in directory `where`); without Range, a broken
    transfer starts again."""
    reached = 0  # the furthest a transfer got: only bytes beyond it are progress
    while True:
        try:
            cause = _copy(answer, out, retrier, where, hint, reached)
        finally:
            answer.close()
        if not cause:
            return
        reached = max(reached, out.tell())
        retrier.failed(f"{cause}; no Range: starting again", url=answer.url)
        out.seek(0)
        out.truncate()
        answer = _open_whole(client, retrier)


def _open_whole(client: Client, retrier: Retrier) -> Answer:
    """The whole body, asked for without Range: a 206 to that must be all of it (the part
    `bytes 0-511/*` again would be downloaded as the archive)."""
    answer = client.open(0, None, retrier)
    if answer.status == 206 and (answer.total is None or answer.length != answer.total):
        answer.close()
        raise FetchError(
            f"{client.where}: asked for the whole archive, the server answered a part of it",
            "the server's Range support is broken",
        )
    return answer


def _copy(
    answer: Answer, out: BinaryIO, retrier: Retrier, where: str, hint: str, reached: int = 0
) -> str:
    """Copy the answer's body into `out`: "" when complete, else why it broke off. Bytes up
    to `reached` (got before, by a transfer that broke) are no progress: a server that always
    breaks at the same byte must use up the retries."""
    while True:
        try:
            data = answer.resp.read(1 << 20)
        except Exception as err:  # _failure sorts them
            return f"connection broke at byte {out.tell()} ({_failure(err, redact(answer.url))})"
        if not data:
            break
        try:
            out.write(data)
        except OSError as err:  # the disk's failure, not the network's: no retry
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpaceError(
                    f"no space left to download {redact(answer.url)} into {where} "
                    f"({out.tell() >> 20} MiB written)",
                    hint,
                ) from None
            raise BootcLiveError(f"cannot store the download: {err.strerror}") from None
        retrier.progress(max(0, min(len(data), out.tell() - reached)))
    if answer.length is None or out.tell() == answer.length:
        return ""
    return f"connection broke at byte {out.tell()} of {answer.length}"
