"""No secret in any output or file: a registry (and the blob storage it sends clients to) that
puts a secret into every place a server controls (the status line and its reason phrase,
WWW-Authenticate, a redirect's Location and its signed query, the token service's answer, the
error JSON) and echoes back what the request carried (the Authorization header, the password
within it). The boot's console, status and error files, its bootc.debug trace, and the host's
inspect, pull and push-packed, none may repeat any of it. Each case has a hard timeout."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootc_live import build as build_mod
from bootc_live import pushpacked, vm
from bootc_live.images import SourceRef
from bootc_live.runtime import boot, http, registry, urllib_dracut
from bootc_live.runtime import run as run_module
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.errors import BootcLiveError
from imagegen import build_layout, f, layer_tar
from registries import auth_json
from servers import hard_timeout, http_server
from unpackers import need

SECRET = "Sekr1t-XYZZY"  # whatever the server says of its own
USER, PASSWORD = "joe", "hunter2-PW9"  # what the auth file holds
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "tok-" + "T0KEN" * 4  # what the token service hands out
REPO = "team/os"
DIGEST = "sha256:" + hashlib.sha256(b"x").hexdigest()
FORBIDDEN = (SECRET, PASSWORD, BASIC, TOKEN, "X-Amz-Signature", "hunter2")

# scenario → (what the handler does with a request, a fragment of the one line it must end in)
Plan = Callable[["Leaky", str], None]


class Leaky(BaseHTTPRequestHandler):
    """One request to the leaky registry: `plan` answers it."""

    protocol_version = "HTTP/1.1"
    plan: Plan
    port: int

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, reason: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response_only(status, reason)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def echo(self) -> str:
        """What the request carried that a careless server repeats: its Authorization."""
        return self.headers.get("Authorization", "") or SECRET

    def error_json(self) -> bytes:
        said = f"{SECRET} {self.echo()}"
        return json.dumps({"errors": [{"code": said, "message": said, "detail": said}]}).encode()

    def do_GET(self) -> None:
        type(self).plan(self, self.path)

    def do_HEAD(self) -> None:
        type(self).plan(self, self.path)

    def do_POST(self) -> None:
        type(self).plan(self, self.path)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).plan(self, self.path)


def challenge_negotiate(h: Leaky, path: str) -> None:
    h.send(
        401, f"Unauthorized {SECRET}", {"WWW-Authenticate": f"Negotiate {SECRET}"}, h.error_json()
    )


def error_body(h: Leaky, path: str) -> None:
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    h.send(404, f"Not Found {SECRET}", {"Content-Type": "application/json"}, h.error_json())


def reason_phrase(h: Leaky, path: str) -> None:
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    h.send(418, f"{SECRET} {h.echo()}", {}, h.error_json())


def status_line(h: Leaky, path: str) -> None:
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    h.wfile.write(f"HTTP/1.1 {SECRET}\r\n\r\n".encode())
    h.close_connection = True


def echo_basic(h: Leaky, path: str) -> None:
    """Basic auth; the credentials refused, repeated in every place of the answer."""
    if "Authorization" not in h.headers:
        return h.send(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="leaky"'})
    echo = h.echo()
    h.send(503, echo, {"WWW-Authenticate": f"Basic realm={echo!r}", "X-Echo": echo}, h.error_json())


def echo_token(h: Leaky, path: str) -> None:
    """A token service under a signed realm; the token refused and repeated."""
    realm = f"http://127.0.0.1:{h.port}/token?X-Amz-Signature={SECRET}"
    if path.startswith("/token"):
        return h.send(200, "OK", {}, json.dumps({"token": TOKEN, "expires_in": 300}).encode())
    if "Authorization" not in h.headers:
        value = f'Bearer realm="{realm}",service="{SECRET}",scope="repository:{REPO}:pull"'
        return h.send(401, "Unauthorized", {"WWW-Authenticate": value}, h.error_json())
    h.send(403, f"Forbidden {h.echo()}", {}, h.error_json())


def signed_redirect(h: Leaky, path: str) -> None:
    """The manifest is in blob storage behind a presigned URL, which then refuses."""
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    if path.startswith("/storage/"):
        return h.send(
            403, f"SignatureDoesNotMatch {SECRET}", {}, f"<Error>{SECRET}</Error>".encode()
        )
    where = f"http://{USER}:{SECRET}@127.0.0.1:{h.port}/storage/x?X-Amz-Signature={SECRET}"
    h.send(307, f"Temporary Redirect {SECRET}", {"Location": where})


def signed_upload(h: Leaky, path: str) -> None:
    """An upload's Location carries a signed state; the upload's connection then breaks."""
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    if h.command == "POST":
        return h.send(202, "Accepted", {"Location": f"/upload/x?_state={SECRET}"})
    if h.command == "PUT":
        h.close_connection = True  # no answer at all
        return None
    h.send(404, "Not Found", {})


def headers(h: Leaky, path: str) -> None:
    """Headers of the server's that the client reads and may quote."""
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    if "manifests" in path:
        return h.send(200, "OK", {"Docker-Content-Digest": f"sha256:{SECRET}"}, b"{}")
    h.send(404, "Not Found", {})


def raw_headers(h: Leaky, path: str) -> None:
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    h.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {SECRET}\r\n\r\n".encode())
    h.close_connection = True


def raw_coding(h: Leaky, path: str) -> None:
    if path == "/v2/":
        return h.send(200, "OK", {}, b"{}")
    h.wfile.write(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {SECRET}, chunked\r\n\r\n".encode())
    h.close_connection = True


PLANS: dict[str, tuple[Plan, str]] = {
    "headers": (headers, "Docker-Content-Digest (a value of the server's) does not match"),
    "content-length": (raw_headers, "invalid Content-Length (a value of the server's)"),
    "transfer-encoding": (raw_coding, "Transfer-Encoding (a value of the server's)"),
    "challenge": (challenge_negotiate, "unsupported authentication scheme Negotiate"),
    "error-body": (error_body, f"{REPO} has no tag v1"),
    "reason": (reason_phrase, "HTTP 418 I'm a Teapot"),
    "status-line": (status_line, "not an HTTP answer"),
    "echo-basic": (echo_basic, "HTTP 503 Service Unavailable"),
    "echo-token": (echo_token, "HTTP 403 Forbidden"),
    "signed-upload": (signed_upload, "has no tag v1"),
    "signed-redirect": (signed_redirect, "403 denied for repository"),
}


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    with hard_timeout(60):
        yield


@pytest.fixture(params=sorted(PLANS))
def leaky(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    plan, expected = PLANS[request.param]
    handler = type("Handler", (Leaky,), {"plan": staticmethod(plan), "port": 0})
    with http_server(handler) as port:
        handler.port = port
        yield port, expected


def assert_clean(texts: list[str], files_under: list[Path]) -> None:
    for root in files_under:
        for where, _dirs, names in os.walk(root):
            for name in names:
                path = Path(where) / name
                if path.name != "auth.json" and not path.is_symlink():
                    texts.append(f"{path}: " + path.read_bytes().decode("latin-1"))
    for text in texts:
        for secret in FORBIDDEN:  # in any case: a header's value may be lowered first
            assert secret.lower() not in text.lower(), (secret, text)


def test_the_boot_repeats_no_secret(
    leaky: tuple[int, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, expected = leaky
    monkeypatch.setattr(boot, "STATUS_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(boot, "wait_for_route", lambda *_: None)
    auth = auth_json(tmp_path / "auth.json", {f"127.0.0.1:{port}": (USER, PASSWORD)})
    argv = [
        f"root=bootc-live:docker://127.0.0.1:{port}/{REPO}:v1",
        f"bootc.registry.auth={auth}",
        "bootc.registry.unsecure=1",
        "bootc.retries=1",
        "bootc.timeout=2",
        "bootc.debug",
        "rd.debug",
    ]
    assert boot.main(["boot", str(tmp_path / "newroot")], lambda: parse(argv)) == 1
    said = capsys.readouterr()
    error = (tmp_path / "run/error").read_text()
    assert expected in error and "\n" not in error.strip(), error
    assert_clean([said.out, said.err], [tmp_path])


def test_the_host_commands_repeat_no_secret(leaky: tuple[int, str], tmp_path: Path) -> None:
    port, expected = leaky
    auth = auth_json(tmp_path / "auth.json", {f"127.0.0.1:{port}": (USER, PASSWORD)})
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "TMPDIR": str(tmp_path),
    }
    ref = f"docker://127.0.0.1:{port}/{REPO}:v1"
    options = ["--authfile", str(auth), "--unsecure", "--retries", "1"]
    texts = []
    for argv in (
        ["inspect", ref, *options],
        ["--debug", "pull", ref, "-o", f"oci-archive:{tmp_path / 'out.oci'}", *options],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bootc_live", *argv],
            capture_output=True,
            text=True,
            timeout=50,
            env=env,
        )
        assert done.returncode == 1 and expected in done.stderr, done.stderr
        texts += [done.stdout, done.stderr]
    assert_clean(texts, [tmp_path])


def test_push_packed_repeats_no_secret(leaky: tuple[int, str]) -> None:
    """The writes' client: its refusals and failed connections."""
    port, _ = leaky
    ref = registry.Reference.parse(f"127.0.0.1:{port}/{REPO}:v1")
    said: list[str] = []
    pusher = pushpacked.Pusher(ref, (USER, PASSWORD), said.append, unsecure=True)
    lines = []
    for attempt in (
        pusher.ping,
        lambda: pusher.get_index("v1"),
        lambda: pusher.put_manifest("v1", "application/json", b"{}"),
        lambda: pusher.push_blob(pushpacked.Blob("application/octet-stream", DIGEST, 1, b"x")),
    ):
        try:
            attempt()
        except BootcLiveError as err:
            lines.append(err.line())
    assert lines or said
    assert_clean([*lines, *said], [])


# The initramfs' auth.json (build --auth-file): the credentials of the registries the boot
# can pull from, no one else's.

HOSTS = ["reg.example", "reg.example:5000", "10.0.2.100:5000", "docker.io", "quay.io"]
REPOS = ["team/os", "team/other", "else/where", "library/debian"]


def key_forms(host: str) -> list[str]:
    """The keys podman, skopeo and docker write a registry's credentials under."""
    forms = [host, f"{host}/team", f"{host}/team/os", f"https://{host}/v1/", f"http://{host}"]
    if host == "docker.io":
        forms += ["index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"]
    return forms


ALL_KEYS = sorted({key for host in HOSTS for key in key_forms(host)})


def write_auth(path: Path, keys: list[str]) -> dict[str, object]:
    auths = {
        key: {"auth": base64.b64encode(f"u{i}:PW-{i}-end".encode()).decode()}
        for i, key in enumerate(keys)
    }
    obj: dict[str, object] = {"auths": auths, "HttpHeaders": {"X-Api-Key": SECRET}}
    path.write_text(json.dumps(obj))
    return obj


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.sampled_from(ALL_KEYS), min_size=1, max_size=12, unique=True),
    source=st.sampled_from([*HOSTS, None]),
    named=st.lists(st.sampled_from(HOSTS), max_size=2, unique=True),
)
def test_the_initramfs_gets_the_credentials_of_the_boot_s_registries_only(
    keys: list[str], source: str | None, named: list[str]
) -> None:
    """Every registry the boot can pull from (the SOURCE's, --auth-registry's) resolves to the
    same credentials from the embedded file as from the given one; every other registry to
    none, and none of their passwords (nor the file's other settings) is in it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "auth.json"
        original = write_auth(path, keys)
        ref = f"docker://{source}/team/os:v1" if source else f"oci:{tmp}/img:v1"
        config = build_mod.BuildConfig(
            SourceRef.parse(ref), Path(tmp) / "out", auth_file=path, auth_registries=tuple(named)
        )
        wanted = [*([source] if source else []), *named]
        try:
            embedded_bytes = build_mod.auth_json(config)
        except BootcLiveError as err:
            assert all(
                registry.credentials_in(original, str(path), host, repo) is None
                for host in wanted
                for repo in REPOS
            ), err.line()
            assert str(path) in err.line() and "--auth-registry" in err.line()
            return
    assert embedded_bytes is not None
    embedded = json.loads(embedded_bytes)
    assert SECRET not in embedded_bytes.decode()
    served = [h for h in HOSTS if any(registry._same_registry(h, w) for w in wanted)]
    for host in HOSTS:
        for repo in REPOS:
            given_creds = registry.credentials_in(original, "given", host, repo)
            got = registry.credentials_in(embedded, "embedded", host, repo)
            assert got == (given_creds if host in served else None), (host, repo, embedded)
    for i, key in enumerate(keys):
        if key not in embedded["auths"]:
            assert f"PW-{i}-end" not in embedded_bytes.decode()


def test_an_auth_file_for_a_registry_only_the_guest_names_needs_naming(tmp_path: Path) -> None:
    """The README's case: the host pulls from 127.0.0.1:5000, the guest from 10.0.2.100:5000
    (the same registry by another name). Its credentials go in only when named; the host's
    entry, and an unrelated registry's, not at all."""
    path = tmp_path / "auth.json"
    auth_json(
        path,
        {
            "127.0.0.1:5000": (USER, "host-side-pw"),
            "10.0.2.100:5000": (USER, PASSWORD),
            "quay.io": ("me", "unrelated-pw"),
        },
    )
    build_layout(tmp_path / "img", [layer_tar([f("etc/os", b"x\n")])], tag="v1")
    for source in ("docker://127.0.0.1:5000/team/os:v1", f"oci:{tmp_path / 'img'}:v1"):
        config = build_mod.BuildConfig(SourceRef.parse(source), tmp_path / "out", auth_file=path)
        if source.startswith("oci:"):
            with pytest.raises(BootcLiveError) as err:
                build_mod.auth_json(config)
            assert "is not pulled from a registry" in err.value.line()
        named = build_mod.auth_json(replace(config, auth_registries=("10.0.2.100:5000",)))
        assert (
            named is not None
            and PASSWORD
            in base64.b64decode(json.loads(named)["auths"]["10.0.2.100:5000"]["auth"]).decode()
        )
        assert b"quay.io" not in named
        assert (b"127.0.0.1:5000" in named) == source.startswith("docker:")
        every = build_mod.auth_json(replace(config, auth_registries=("all",)))
        assert every is not None and b"quay.io" in every  # asked for


def test_build_names_what_to_do_with_credentials_it_would_not_embed(tmp_path: Path) -> None:
    """The command line: --auth-registry reaches the build; a registry given with credentials
    is refused without repeating them; nothing is written."""
    need(os.geteuid() == 0, "build needs root")
    build_layout(tmp_path / "img", [layer_tar([f("etc/os", b"x\n")])], tag="v1")
    auth = auth_json(tmp_path / "auth.json", {"10.0.2.100:5000": (USER, PASSWORD)})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    base = ["build", f"oci:{tmp_path / 'img'}:v1", "-o", str(tmp_path / "out")]
    said = []
    for extra, expected in (
        (["--auth-file", str(auth)], "is not pulled from a registry"),
        (["--auth-file", str(auth), "--auth-registry", "quay.io"], "no credentials for quay.io"),
        (["--auth-registry", f"{USER}:{PASSWORD}@quay.io"], "without credentials"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bootc_live", *base, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode != 0 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        said += [done.stdout, done.stderr]
    assert sorted(os.listdir(tmp_path)) == ["auth.json", "img"]
    assert_clean(said, [])


def test_vm_s_debug_trace_shows_the_kernel_command_line_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bootc-live --debug vm --append root=bootc-live:https://USER:PASS@…` traced QEMU's
    command line as given. A stand-in for QEMU (sh, the rest of its arguments unread) is
    watched as QEMU is."""
    monkeypatch.setattr(run_module, "DEBUG", True)
    given = (
        f"console=ttyS0 root=bootc-live:https://{USER}:{PASSWORD}@10.0.2.100/root.oci"
        f"?X-Amz-Signature={SECRET} proxy=http://{USER}:{PASSWORD}@10.0.2.2:3128"
    )
    argv = ["sh", "-c", "echo 'Linux version 6'", "-append", given]
    boot = vm.watch(argv, timeout=20, markers=("Linux version",), echo=None)
    assert boot.ended == "marker", boot
    traced = capsys.readouterr().err
    assert "+ sh -c" in traced and "root=bootc-live:https://***@10.0.2.100/root.oci?…" in traced
    assert_clean([traced], [])


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://{USER}:{PASSWORD}@10.0.2.100/root.oci",
        f"tftp://10.0.2.100/root.oci?X-Amz-Signature={SECRET}",
        f"ftp://{USER}:{PASSWORD.replace('-', '%2D')}@10.0.2.100/root.oci",
    ],
)
def test_url_lib_s_words_about_a_url_lose_its_secrets(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dracut's url-lib, when a download leaves no file, warns `Downloading 'URL' failed!`
    (url-lib.sh) on stderr, whose last line is the boot's error line. The command run keeps
    the environment the boot gives it; only its script says what url-lib says."""
    real = urllib_dracut.run

    def url_lib(argv: list[str], **kw: Any) -> Any:
        script = "echo \"dracut Warning: Downloading '$BOOTC_URL' failed!\" >&2; exit 253"
        return real(["sh", "-c", script], **kw)

    monkeypatch.setattr(urllib_dracut, "run", url_lib)
    with pytest.raises(BootcLiveError) as err:
        urllib_dracut.fetch(url, str(tmp_path / "x"), http.Policy(retries=1))
    line = err.value.line()
    assert "Downloading 'ftp://***@10.0.2.100/root.oci' failed" in line or "?…' failed" in line
    assert_clean([line, getattr(err.value, "detail", "")], [])


@settings(max_examples=200, deadline=None)
@given(
    password=st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S")), min_size=4)
    .filter(lambda p: p.strip() == p)
    .map(lambda p: "PW" + p),
    query=st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=6, max_size=20),
    words=st.sampled_from(["Downloading '{}' failed!", "{}: not found", "curl: ({}) 22"]),
)
def test_scrub_leaves_no_password_nor_query(password: str, query: str, words: str) -> None:
    quoted = urllib.parse.quote(password, safe="")
    url = f"ftp://user:{quoted}@10.0.2.100:21/path/root.oci?sig={query}"
    text = http.scrub(words.format(url), url)
    assert quoted not in text and password not in text and query not in text, text


def test_a_url_source_s_debug_output_repeats_no_secret(
    leaky: tuple[int, str], tmp_path: Path
) -> None:
    """--debug shows the traceback of a failure: not what it was raised in handling (the raw
    exception, whose words are the server's)."""
    port, _ = leaky
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/root.oci"
    texts = []
    for argv in (["inspect", url], ["pull", url, "-o", f"oci-archive:{tmp_path / 'o.oci'}"]):
        done = subprocess.run(
            [sys.executable, "-m", "bootc_live", "--debug", *argv, "--retries", "1"],
            capture_output=True,
            text=True,
            timeout=50,
            env={**env, "TMPDIR": str(tmp_path)},
        )
        assert done.returncode == 1 and "Traceback" in done.stderr, done.stderr
        texts += [done.stdout, done.stderr]
    assert_clean(texts, [tmp_path])


@pytest.mark.parametrize("coding", ["gzip", "GZIP", "Chunked, gzip", "x-GZip"])
def test_a_content_coding_is_told_in_whatever_case_the_server_writes_it(coding: str) -> None:
    """Codings are case-insensitive (RFC 9110): GZIP was said to be 'a value of the server's'."""
    assert http.told(coding, http._CODINGS, 20) == repr(coding)
    assert http.told(f"{coding}; {SECRET}", http._CODINGS, 20) == "(a value of the server's)"
