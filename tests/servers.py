"""Test servers on 127.0.0.1: nginx (a real HTTP server with Range) and a scripted faulty one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from unpackers import need


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
        """Access log lines: `"GET /path HTTP/1.1" status range-header`."""
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


@contextmanager
def nginx(
    root: Path, workdir: Path, *, ranges: bool = True, tls: tuple[Path, Path] | None = None
) -> Iterator[Nginx]:
    """nginx serving `root` on 127.0.0.1; `ranges=False` makes it ignore Range (max_ranges 0);
    `tls` = (certificate, key) serves https."""
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
    log_format ranged '"$request" $status "$http_range" $body_bytes_sent';
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
        proc.terminate()
        proc.wait(timeout=10)


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
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on a free port of 127.0.0.1, for the block: yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
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
