"""Test servers on 127.0.0.1: nginx (a real HTTP server with Range) and a scripted faulty one."""

from __future__ import annotations

import gzip
import itertools
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from unpackers import need


class HardTimeout(BaseException):
    """Not an Exception (TimeoutError is an OSError): no retry loop under test takes it for a
    network failure and goes on."""


@contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """Whatever the block waits for (a socket, a lock, a sleep), it fails after `seconds`."""

    def expire(*_: object) -> None:
        raise HardTimeout(f"the test ran for more than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Nginx:
    port: int
    root: Path
    access_log: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> list[str]:
        """Access log lines: `END SECONDS "GET /path HTTP/1.1" status "range-header" bytes-sent`
        (END: when the answer was sent, SECONDS: how long it took, both to the millisecond)."""
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


def served(requests: list[str]) -> int:
    """Bytes sent in all, from Nginx.requests()."""
    return sum(int(line.rsplit(" ", 1)[1]) for line in requests)


def asked_path(line: str) -> str:
    """The path a Nginx.requests() line asked for."""
    return line.split('"', 2)[1].split()[1]


def range_of(header: str) -> tuple[int, int]:
    """[start, end) of a `Range: bytes=FIRST-LAST` header's value."""
    first, _, last = header[len("bytes=") :].partition("-")
    return int(first), int(last) + 1


def asked_range(line: str) -> tuple[int, int]:
    """[start, end) of the `Range: bytes=FIRST-LAST` of a Nginx.requests() line."""
    return range_of("bytes=" + line.split('"bytes=', 1)[1].split('"', 1)[0])


def most_at_once(requests: list[str]) -> int:
    """The most requests nginx was answering at the same time, from Nginx.requests()."""
    events = []
    for line in requests:
        end, seconds = (float(field) for field in line.split(" ", 2)[:2])
        events += [(end - seconds, 1), (end, -1)]
    most = now = 0
    for _when, step in sorted(events):  # at a tie, an end (-1) comes before a start
        now += step
        most = max(most, now)
    return most


@contextmanager
def nginx(
    root: Path,
    workdir: Path,
    *,
    ranges: bool = True,
    tls: tuple[Path, Path] | None = None,
    rate: str = "",
) -> Iterator[Nginx]:
    """nginx serving `root` on 127.0.0.1; `ranges=False` makes it ignore Range (max_ranges 0);
    `tls` = (certificate, key) serves https; `rate` (`32m`: bytes a second) holds each
    connection to it (limit_rate, as a CDN or a long path holds one flow)."""
    need(shutil.which("nginx") is not None, "needs nginx")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "access.log"
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format ranged '$msec $request_time "$request" $status "$http_range" $body_bytes_sent';
    access_log {log} ranged;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        {f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ""}
        root {root};
        {"" if ranges else "max_ranges 0;"}
        {f"limit_rate {rate};" if rate else ""}
    }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, proc)
        yield Nginx(port, root, log)
    finally:
        # A graceful stop (SIGQUIT): nginx logs an answer only after its last byte went out,
        # so a client can be done before its line is there; once stopped, every line is.
        # Read Nginx.requests() after the `with` to count them all.
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


@dataclass
class Faulty:
    """A scripted server: `plan(request_number, range_start)` decides each answer."""

    port: int
    log: list[tuple[int, str]] = field(default_factory=list)  # (status, Range header)

    def url(self, name: str = "root.oci") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


# An answer: (status, headers, body, cut) — `cut` closes the connection after that many bytes.
Answer = tuple[int, dict[str, str], bytes, "int | None"]


@contextmanager
def faulty(data: bytes, plan: Callable[[int, int], Answer | None]) -> Iterator[Faulty]:
    """Serve `data` with Range support, except where `plan` answers something else."""
    server_state = Faulty(0)
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            count[0] += 1
            header = self.headers.get("Range", "")
            start = int(header[6:].split("-")[0]) if header.startswith("bytes=") else 0
            end_text = header[6:].split("-")[1] if header.startswith("bytes=") else ""
            end = int(end_text) + 1 if end_text else len(data)
            answer = plan(count[0], start)
            if answer is None:
                body = data[start:end]
                status = 206 if header else 200
                headers = {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
                if header:
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                answer = (status, headers, body, None)
            status, headers, body, cut = answer
            server_state.log.append((status, header))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
            except OSError:
                return
            if cut is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    with http_server(Handler) as server_state.port:
        yield server_state


@contextmanager
def http_server(
    handler: type[BaseHTTPRequestHandler], tls: tuple[Path, Path] | None = None
) -> Iterator[int]:
    """A threaded HTTP server on a free port of 127.0.0.1, for the block: yields its port.
    With `tls` = (certificate, key), it speaks https."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def throwaway_ca(workdir: Path, *server_ips: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `server_ips`: (ca.pem, server.pem, server.key)."""
    need(shutil.which("openssl") is not None, "needs openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        workdir / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = workdir / "san.ext"
    names = ",".join(f"IP:{ip}" for ip in server_ips)
    ext.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    for argv in (
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=bootc-live test CA",
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            f"/CN={server_ips[0]}",
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True)
    return ca, cert, key


# -- a scripted hostile server ----------------------------------------------------------------
#
# Raw sockets, so that it can say what no well-behaved server library would: each switch of
# MISBEHAVIOURS is one pathology of status, headers or body. Every other request (and every
# request once a switch has had its say, for the switches that relent) is served honestly,
# with Range, from `data`.


@dataclass
class HostileRequest:
    path: str
    headers: dict[str, str]
    start: int  # of the Range asked for (0 without one)
    end: int | None  # exclusive


@dataclass
class Hostile:
    port: int
    switch: str
    scheme: str = "http"
    requests: list[HostileRequest] = field(default_factory=list)
    redirect_to: str = ""  # for "redirect": where to
    status: int = 418  # for "status": the status of every answer
    cuts: set[int] = field(default_factory=set)  # for "cut-first": the member reads cut once
    drop: int = 0  # connections closed at once, without a word (or a TLS handshake)

    def url(self, path: str = "root.oci", credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"{self.scheme}://{at}127.0.0.1:{self.port}/{path}"


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _honest(data: bytes, req: HostileRequest, ranges: bool = True) -> list[object]:
    if ranges and "Range" in req.headers:
        end = min(req.end if req.end is not None else len(data), len(data))
        body = data[req.start : end]
        head = _head(
            "206 Partial Content",
            [
                ("Content-Range", f"bytes {req.start}-{end - 1}/{len(data)}"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [head + body]
    return [_head("200 OK", [("Content-Length", str(len(data)))]) + data]


def _trickle(head: bytes, body: bytes, pause: float) -> list[object]:
    out: list[object] = [head]
    for i in range(len(body)):
        out += [body[i : i + 1], pause]
    return out


def _misbehave(server: Hostile, data: bytes, req: HostileRequest, n: int) -> Iterable[object]:
    """What to send for request number `n` (1-based) under the server's switch: bytes to
    send, or seconds (float) to wait; without end for the switches that never stop."""
    s = server.switch
    first = n == 1
    if s == "honest":
        return _honest(data, req)
    if s == "no-range":
        return _honest(data, req, ranges=False)
    if s == "redirect":
        return [_head("302 Found", [("Location", server.redirect_to), ("Content-Length", "0")])]
    if s == "no-location":
        return [_head("302 Found", [("Content-Length", "0")])]
    if s == "redirect-loop":
        return [_head("307 Temporary Redirect", [("Location", req.path), ("Content-Length", "0")])]
    if s == "redirect-chain":
        hop = f"/hop{n}"
        return [_head("301 Moved Permanently", [("Location", hop), ("Content-Length", "0")])]
    if s == "redirect-garbage":  # a Location no request line can carry
        return [_head("302 Found", [("Location", "/a b\x1b[31m"), ("Content-Length", "0")])]
    if s == "redirect-file":
        return [_head("302 Found", [("Location", "file:///etc/shadow"), ("Content-Length", "0")])]
    if s == "wrong-range-start":
        if "Range" not in req.headers:
            return _honest(data, req)
        end = len(data) if req.end is None else req.end
        body = data[req.start + 1 : end]
        cr = f"bytes {req.start + 1}-{end - 1}/{len(data)}"
        return [_head("206 Partial Content", [("Content-Range", cr)]) + body]
    if s == "unknown-total":
        if "Range" not in req.headers:
            return _honest(data, req)
        end = min(len(data), req.end if req.end is not None else len(data))
        cr = f"bytes {req.start}-{end - 1}/*"
        body = data[req.start : end]
        return [_head("206 Partial Content", [("Content-Range", cr)]) + body]
    if s == "huge-header":
        return [_head("200 OK", [("X-Junk", "x" * (1 << 20)), ("Content-Length", "0")])]
    if s == "many-headers":
        return [_head("200 OK", [(f"X-H{i}", "v") for i in range(300)])]
    if s == "content-length-abc":
        return [_head("200 OK", [("Content-Length", "abc")]) + data]
    if s == "content-length-huge":
        return [_head("200 OK", [("Content-Length", "9" * 40)]) + data]
    if s == "bad-chunked":
        return [_head("200 OK", [("Transfer-Encoding", "chunked")]) + b"zz\r\nabc\r\n"]
    if s == "trickle-body":
        head = _head("200 OK", [("Content-Length", str(len(data)))])
        return _trickle(head, data[:200], 0.05)
    if s == "trickle-headers":
        return _trickle(b"", _head("200 OK", [("Content-Length", str(len(data)))]), 0.05)
    if s == "stall":
        return [_head("200 OK", [("Content-Length", str(len(data)))]) + data[:10], 30.0]
    if s == "cut-first":  # each member read's first answer breaks off half-way; resumed after
        if req.end is None or req.end in server.cuts:
            return _honest(data, req)
        server.cuts.add(req.end)
        part = _honest(data, req)[0]
        assert isinstance(part, bytes)
        head_len = part.index(b"\r\n\r\n") + 4
        return [part[: head_len + (len(part) - head_len) // 2]]
    if s == "retry-after-huge":
        return [_head("503 Busy", [("Retry-After", "9" * 400), ("Content-Length", "0")])]
    if s == "status":
        return [_head(f"{server.status} Status", [("Content-Length", "4")]) + b"body"]
    if s == "status-600":
        return [_head("600 Odd", [("Content-Length", "0")])]
    if s == "garbage":
        return [b"HELLO \x00\x1b[31m\r\n\r\n"]
    if s == "empty":
        return []
    if s == "401":
        head = _head("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')])
        return [head]
    if s == "endless-continue":  # interim answers without end, each on time
        return itertools.repeat(b"HTTP/1.1 100 Continue\r\n\r\n")
    if s == "early-hints":  # interim answers a client reads past (RFC 9110 15.2), then the answer
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
        hints += b"HTTP/1.1 102 Processing\r\n\r\n"
        first_part = _honest(data, req)
        assert isinstance(first_part[0], bytes)
        return [hints + first_part[0], *first_part[1:]]
    if s == "trickle-steady":  # never slow enough to stall, too slow to end soon
        head = _head("200 OK", [("Content-Length", str(len(data)))])
        return [head, *(x for i in range(0, len(data), 500) for x in (data[i : i + 500], 0.02))]
    if s == "endless-early-hints":
        return itertools.repeat(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
    if s == "endless-trailer":  # a chunked body whose trailer never ends
        head = _head("200 OK", [("Transfer-Encoding", "chunked")]) + b"5\r\nstart\r\n0\r\n"
        return itertools.chain([head], itertools.repeat(b"X-Trailer: more\r\n"))
    if s == "negative-chunk":  # a chunk size of -1, then 64 MiB: none of it is to be held
        head = _head("200 OK", [("Transfer-Encoding", "chunked")]) + b"-1\r\n"
        return itertools.chain([head], itertools.repeat(b"x" * 65536, 1024))
    if s == "content-encoding":  # compressed on the way, though asked for identity
        body = gzip.compress(data)
        return [
            _head("200 OK", [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))])
            + body
        ]
    if s == "transfer-encoding":  # a coding no request allowed: the body is not the bytes
        head = _head("200 OK", [("Transfer-Encoding", "gzip, chunked")])
        body = gzip.compress(data)
        return [head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"]
    if s == "part-always":  # the first 512 bytes, of a size untold, whatever is asked
        head = _head("206 Partial Content", [("Content-Range", "bytes 0-511/*")])
        return [head + data[:512]]
    if s == "503-once":
        if first:
            return [_head("503 Busy", [("Retry-After", "0"), ("Content-Length", "0")])]
        return _honest(data, req)
    raise ValueError(f"unknown switch {s}")


MISBEHAVIOURS = [
    "honest",
    "no-range",
    "redirect",
    "no-location",
    "redirect-loop",
    "redirect-chain",
    "redirect-file",
    "redirect-garbage",
    "wrong-range-start",
    "unknown-total",
    "huge-header",
    "many-headers",
    "content-length-abc",
    "content-length-huge",
    "bad-chunked",
    "trickle-body",
    "trickle-headers",
    "stall",
    "cut-first",
    "retry-after-huge",
    "status-600",
    "status",
    "garbage",
    "empty",
    "401",
    "503-once",
    "endless-continue",
    "early-hints",
    "endless-early-hints",
    "endless-trailer",
    "negative-chunk",
    "content-encoding",
    "transfer-encoding",
    "part-always",
]
# Switches too slow for test_hostile_server's every read; their own tests use them.
SLOW_MISBEHAVIOURS = ["trickle-steady"]


@contextmanager
def hostile(
    data: bytes,
    switch: str,
    *,
    tls: tuple[Path, Path] | None = None,
    redirect_to: str = "",
    status: int = 418,
    drop: int = 0,
) -> Iterator[Hostile]:
    """A server on 127.0.0.1 that misbehaves as `switch` says (one of MISBEHAVIOURS); its
    first `drop` connections are closed at once."""
    assert switch in MISBEHAVIOURS or switch in SLOW_MISBEHAVIOURS, switch
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    server = Hostile(int(listener.getsockname()[1]), switch, "https" if tls else "http")
    server.redirect_to = redirect_to
    server.status = status
    server.drop = drop
    context = None
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
    stop = threading.Event()
    lock = threading.Lock()

    def serve_one(conn: socket.socket) -> None:
        try:
            with lock:
                server.drop -= 1
                dropped = server.drop >= 0
            conn.settimeout(10)
            if dropped:  # what the client sent first read (a reset else), then closed
                conn.recv(65536)
                return
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            raw = b""
            while b"\r\n\r\n" not in raw and len(raw) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                raw += chunk
                if context is None and raw.startswith(b"\x16\x03"):
                    # A TLS ClientHello to plain http: answered as nginx, Go and Python's
                    # servers answer it (the client's TLS sees no handshake: "wrong version").
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    return
            lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            start, end = 0, None
            if headers.get("Range", "").startswith("bytes="):
                first, _, last = headers["Range"][6:].partition("-")
                start, end = int(first), (int(last) + 1 if last else None)
            req = HostileRequest(path, headers, start, end)
            with lock:
                server.requests.append(req)
                n = len(server.requests)
            for item in _misbehave(server, data, req, n):
                if stop.is_set():
                    return
                if isinstance(item, float):
                    stop.wait(item)
                else:
                    conn.sendall(item)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        listener.close()
