"""Real registries for the tests: Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1.

Each runs with TLS from a throwaway CA (its certificate is valid for 127.0.0.1 and for the
address guests see, 10.0.2.100), optionally htpasswd (Basic) authentication, or as a pull-through
cache (`proxy`) of another one, which is what a registry mirror is. Images are pushed with
skopeo.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers import _wait_for, free_port, throwaway_ca
from unpackers import need

GUEST_SERVER = "10.0.2.100"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    cert_dir: Path  # for skopeo's --*-cert-dir: the CA as ca.crt


def make_pki(workdir: Path) -> Pki:
    ca, cert, key = throwaway_ca(workdir, "127.0.0.1", GUEST_SERVER)
    cert_dir = workdir / "certs.d"
    cert_dir.mkdir()
    shutil.copy(ca, cert_dir / "ca.crt")
    return Pki(ca, cert, key, cert_dir)


def htpasswd(path: Path, user: str, password: str) -> Path:
    """An htpasswd file with a bcrypt hash, the only kind docker-registry accepts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated, still in 3.11; libxcrypt does bcrypt

    # The lowest bcrypt cost (2^4 rounds): the registry checks it on every request, and the
    # default cost (2^12) makes each take a quarter of a second.
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)
    path.write_text(f"{user}:{crypt.crypt(password, salt)}\n")
    return path


def auth_json(path: Path, entries: dict[str, tuple[str, str]]) -> Path:
    """A containers auth.json: {"auths": {host: {"auth": base64(user:password)}}}."""
    auths = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in entries.items()
    }
    path.write_text(json.dumps({"auths": auths}))
    path.chmod(0o600)
    return path


@dataclass
class Registry:
    port: int
    workdir: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def docker_registry(
    workdir: Path,
    pki: Pki,
    *,
    users: dict[str, str] | None = None,
    proxy_of: tuple[Registry, str, str] | None = None,
    port: int | None = None,
) -> Iterator[Registry]:
    """docker-registry on 127.0.0.1 with TLS; `users` turns on htpasswd auth; `proxy_of`
    (upstream, user, password) makes it a pull-through cache of another registry."""
    need(shutil.which("docker-registry") is not None, "needs docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [
        "version: 0.1",
        "log: {level: info, formatter: text}",
        "storage:",
        f"  filesystem: {{rootdirectory: {workdir / 'storage'}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: bootc-live-tests",
        f"  tls: {{certificate: {pki.cert}, key: {pki.key}}}",
    ]
    if users:
        path = workdir / "htpasswd"
        path.write_text("")
        for user, password in users.items():
            with path.open("a") as f:
                f.write(htpasswd(workdir / ".one", user, password).read_text())
        lines += ["auth:", f"  htpasswd: {{realm: bootc-live-tests, path: {path}}}"]
    if proxy_of:
        upstream, user, password = proxy_of
        lines += [
            "proxy:",
            # distribution's proxy sends its username/password only to a Bearer token service;
            # to a registry that asks for Basic it sends the URL's userinfo (Go's client does).
            f"  remoteurl: https://{user}:{password}@{upstream.host}",
            f"  username: {user}",
            f"  password: {password}",
        ]
    config = workdir / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "SSL_CERT_FILE": str(pki.ca)}  # the proxy trusts the upstream's CA
    with open(workdir / "registry.log", "ab") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_for(port, proc)
        yield Registry(port, workdir)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def skopeo_push(
    source: str,
    registry: Registry,
    name: str,
    pki: Pki,
    creds: str,
    *,
    all_platforms: bool = False,
    docker_schema2: bool = False,
) -> None:
    """Push `source` (e.g. oci:DIR:TAG) to registry/name with skopeo, keeping its manifests
    (or converting them to Docker schema 2 media types)."""
    argv = ["skopeo", "copy", "--quiet"]
    argv += ["--format", "v2s2"] if docker_schema2 else ["--preserve-digests"]
    argv += ["--all"] if all_platforms else []
    argv += ["--dest-cert-dir", str(pki.cert_dir), "--dest-creds", creds]
    argv += [source, f"docker://{registry.host}/{name}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"skopeo copy failed: {done.stderr}"
