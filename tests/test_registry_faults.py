"""The registry client against a scripted registry: authentication flows and the faults a
real registry will not produce. Each run pulls and unpacks the image, or ends in one error."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

import fakeregistry
from bootc_live.runtime import http, memory
from bootc_live.runtime.errors import BootcLiveError, VerificationError
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.registry import Reference, RegistryAuth, RegistrySource, load_credentials
from bootc_live.runtime.unpack import unpack_image
from fakeregistry import REPO, TAG, Knobs
from imagegen import build_layout, d, f, layer_tar
from registries import auth_json
from servers import hard_timeout

POLICY = http.Policy(retries=3, stall=5.0, max_backoff=0.2)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fake") / "layout"
    big = os.urandom(512_000)  # incompressible: room to cut a connection in the middle
    build_layout(
        path,
        [layer_tar([d("etc"), f("etc/os", b"fake\n")]), layer_tar([f("big", big)])],
        compression="gzip",
        tag=TAG,
    )
    return path


def pull(
    registry: fakeregistry.FakeRegistry,
    dest: Path,
    *,
    auth_file: Path | None = None,
    mirrors: tuple[str, ...] = (),
    unsecure: bool = True,
    ref: str = "",
) -> list[str]:
    """Resolve and unpack x/y:v1 into dest; returns the client's log lines."""
    said: list[str] = []
    source = RegistrySource(
        Reference.parse(ref or f"{registry.host}/{REPO}:{TAG}"),
        POLICY,
        said.append,
        auth_file=str(auth_file) if auth_file else None,
        unsecure=unsecure,
        mirrors=mirrors,
    )
    try:
        image = resolve(source)
        dest.mkdir()
        unpack_image(image, str(dest), warn=said.append)
    finally:
        source.close()
    return said


def test_anonymous_bearer_token(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs(auth="bearer")) as reg:
        pull(reg, tmp_path / "root")
        tokens = reg.hits("/token")
    assert (tmp_path / "root/etc/os").read_bytes() == b"fake\n"
    assert len(tokens) == 1 and "Authorization" not in tokens[0].headers
    assert f"scope=repository%3A{REPO.replace('/', '%2F')}%3Apull" in tokens[0].path
    assert "service=fake" in tokens[0].path
    assert all(r.headers.get("Authorization") == "Bearer tok-1" for r in reg.hits("/blobs/"))


def test_bearer_token_with_credentials_and_refusal(layout: Path, tmp_path: Path) -> None:
    knobs = Knobs(auth="bearer", credentials=("me", "pw"))
    with fakeregistry.serve(layout, knobs) as reg:
        good = auth_json(tmp_path / "good.json", {reg.host: ("me", "pw")})
        pull(reg, tmp_path / "root", auth_file=good)
        assert reg.hits("/token")[0].headers["Authorization"].startswith("Basic ")
        bad = auth_json(tmp_path / "bad.json", {reg.host: ("me", "nope")})
        with pytest.raises(BootcLiveError) as err:
            pull(reg, tmp_path / "root2", auth_file=bad)
    assert err.value.line() == (
        f"registry {reg.host}: 401 unauthorized for repository {REPO} (credentials rejected by "
        "the token service) (UNAUTHORIZED); add credentials with bootc-live build --auth-file FILE"
    )
    assert not (tmp_path / "root2").exists()


def test_insufficient_scope_gets_a_new_token(layout: Path, tmp_path: Path) -> None:
    knobs = Knobs(auth="bearer", first_token_scope="repository:other:pull")
    with fakeregistry.serve(layout, knobs) as reg:
        pull(reg, tmp_path / "root")
        scopes = [scope for scope, _ in reg.tokens.values()]
    assert scopes == ["repository:other:pull", f"repository:{REPO}:pull"]


@pytest.mark.parametrize(("elapsed", "renewed"), [(0.999, False), (1.0, True), (30.0, True)])
def test_a_token_is_renewed_ten_seconds_before_it_expires(
    elapsed: float, renewed: bool, layout: Path, tmp_path: Path
) -> None:
    """Tokens live 11 s by the clock the registry and the client share; the client stops using
    one at 1 s, before the registry would refuse it, so no request is turned away for it."""
    now = [0.0]
    knobs = Knobs(auth="bearer", token_lifetime=11, clock=lambda: now[0])
    with fakeregistry.serve(layout, knobs) as reg:
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"), POLICY, print, unsecure=True
        )
        source.endpoint.auth.clock = lambda: now[0]
        image = resolve(source)
        resolved = len(reg.log)
        now[0] = elapsed
        (tmp_path / "root").mkdir()
        unpack_image(image, str(tmp_path / "root"))
    after = reg.log[resolved:]
    assert [r.status for r in after if r.status not in (200, 206)] == []
    used = {r.headers["Authorization"] for r in after if "/blobs/" in r.path}
    if renewed:  # renewed once, however many fetch-ahead workers found it expired
        assert len(reg.hits("/token")) == 2 and used == {"Bearer tok-2"}
    else:
        assert len(reg.hits("/token")) == 1 and used == {"Bearer tok-1"}
    assert (tmp_path / "root/etc/os").read_bytes() == b"fake\n"


def test_basic_auth(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs(auth="basic", credentials=("me", "pw"))) as reg:
        creds = auth_json(tmp_path / "a.json", {f"{reg.host}/x": ("me", "pw")})  # by path
        pull(reg, tmp_path / "root", auth_file=creds)
        with pytest.raises(BootcLiveError, match=r"401 unauthorized .* \(no credentials\)"):
            pull(reg, tmp_path / "root2")


def test_redirected_blobs_get_no_credentials(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs()) as storage:
        knobs = Knobs(auth="basic", credentials=("me", "pw"), redirect_blobs_to=storage.port)
        with fakeregistry.serve(layout, knobs) as reg:
            creds = auth_json(tmp_path / "a.json", {reg.host: ("me", "pw")})
            pull(reg, tmp_path / "root", auth_file=creds)
            asked = reg.hits("/blobs/")
        served = storage.hits("/blob/")
    assert asked and all(r.status == 307 and "Authorization" in r.headers for r in asked)
    assert served and all("Authorization" not in r.headers for r in served)
    assert (tmp_path / "root/big").stat().st_size == 512_000


def test_a_reset_mid_blob_resumes_with_range(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs(cut_blob_at=200_000)) as reg:
        said = pull(reg, tmp_path / "root")
        ranges = [r.headers.get("Range") for r in reg.hits("/blobs/")]
    assert "bytes=200000-" in [r.split("-")[0] + "-" for r in ranges if r]
    assert any("connection broke at byte 200000" in line for line in said), said
    assert (tmp_path / "root/big").stat().st_size == 512_000


def test_a_reset_mid_blob_without_range_reads_the_blob_again(layout: Path, tmp_path: Path) -> None:
    """A server that answers every Range with the whole blob: the blob is read again from its
    start, what was handed on already skipped (it failed with "stopped honouring Range")."""
    with fakeregistry.serve(layout, Knobs(cut_blob_at=200_000, blob_range=False)) as reg:
        said = pull(reg, tmp_path / "root")
        statuses = [r.status for r in reg.hits("/blobs/")]
    assert any("connection broke at byte 200000" in line for line in said), said
    assert set(statuses) == {200} and (tmp_path / "root/big").stat().st_size == 512_000


def test_429_waits_as_told(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs(throttle_first_manifest=True)) as reg:
        said = pull(reg, tmp_path / "root")
        statuses = [r.status for r in reg.hits("/manifests/")]
    assert statuses[:2] == [429, 200]
    assert any("HTTP 429" in line and "retry 1 in 1.0s" in line for line in said), said


def test_a_lying_docker_content_digest_stops(layout: Path, tmp_path: Path) -> None:
    with (
        fakeregistry.serve(layout, Knobs(lie_about_digest=True)) as reg,
        pytest.raises(VerificationError, match="Docker-Content-Digest sha256:1111"),
    ):
        pull(reg, tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_a_tampered_blob_stops(layout: Path, tmp_path: Path) -> None:
    info = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs/sha256" / info["manifests"][0]["digest"][7:]).read_text()
    )
    layer = manifest["layers"][1]["digest"]
    with (
        fakeregistry.serve(layout, Knobs(tamper=layer)) as reg,
        pytest.raises(VerificationError, match=f"layer 2/2 {layer[:19]}.* digest mismatch"),
    ):
        pull(reg, tmp_path / "root")


def test_schema1_is_refused(layout: Path, tmp_path: Path) -> None:
    with (
        fakeregistry.serve(layout, Knobs(schema1=True)) as reg,
        pytest.raises(BootcLiveError, match="is a Docker schema 1 manifest"),
    ):
        pull(reg, tmp_path / "root")


def test_plain_http_only_when_unsecure(layout: Path, tmp_path: Path) -> None:
    with (
        fakeregistry.serve(layout, Knobs()) as reg,
        pytest.raises(BootcLiveError, match=f"registry {reg.host}: TLS failure"),
    ):
        pull(reg, tmp_path / "root", unsecure=False)


def test_a_mirror_never_gets_the_registrys_credentials(layout: Path, tmp_path: Path) -> None:
    with fakeregistry.serve(layout, Knobs(auth="basic", credentials=("me", "pw"))) as reg:
        with (
            fakeregistry.serve(tmp_path / "empty", Knobs())
            if False
            else fakeregistry.serve(
                layout, Knobs(auth="basic", credentials=("other", "pw"))
            ) as mirror
        ):
            creds = auth_json(tmp_path / "a.json", {reg.host: ("me", "pw")})
            said = pull(reg, tmp_path / "root", auth_file=creds, mirrors=(mirror.host,))
            asked = list(mirror.log)
        served = reg.hits("/manifests/")
    # The mirror asked for credentials and got none (they belong to the registry): fallback.
    assert asked and all("Authorization" not in r.headers for r in asked)
    assert any(f"mirror {mirror.host}: 401 unauthorized" in line for line in said), said
    assert served and served[-1].headers.get("Authorization", "").startswith("Basic ")


def test_digest_pin_through_the_reference(layout: Path, tmp_path: Path) -> None:
    info = json.loads((layout / "index.json").read_text())
    digest = info["manifests"][0]["digest"]
    with fakeregistry.serve(layout, Knobs()) as reg:
        pull(reg, tmp_path / "root", ref=f"{reg.host}/{REPO}@{digest}")
        assert reg.hits(f"/manifests/{digest}")
        with pytest.raises(
            BootcLiveError, match=r"has no manifest sha256:0{64} \(MANIFEST_UNKNOWN"
        ):
            pull(reg, tmp_path / "root2", ref=f"{reg.host}/{REPO}@sha256:{'0' * 64}")


def test_small_layers_are_fetched_in_parallel_and_applied_in_order(tmp_path: Path) -> None:
    # Eight small layers, each rewriting the same file: only in-order application leaves the
    # last one's content; the registry takes 0.3 s per blob, so overlap shows.
    layers = [
        layer_tar([f("order", f"layer {i}\n".encode()), f(f"f{i}", os.urandom(999))])
        for i in range(8)
    ]
    layout = tmp_path / "layout"
    build_layout(layout, layers, tag=TAG)
    with fakeregistry.serve(layout, Knobs(blob_delay=0.3)) as reg:
        pull(reg, tmp_path / "root")
        most = reg.most_in_flight
        fetched = [r.path.rsplit("/", 1)[1] for r in reg.hits("/blobs/")]
    assert (tmp_path / "root/order").read_text() == "layer 7\n"
    assert most >= 2, "no two blobs were fetched at the same time"
    assert len(fetched) == len(set(fetched)) == 9  # the config and 8 layers, each once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fedora", ("docker.io", "library/fedora", "latest", None)),
        ("fedora:41", ("docker.io", "library/fedora", "41", None)),
        ("org/img", ("docker.io", "org/img", "latest", None)),
        ("quay.io/fedora/fedora-bootc:41", ("quay.io", "fedora/fedora-bootc", "41", None)),
        ("localhost/x", ("localhost", "x", "latest", None)),
        ("10.0.2.100:5000/a/b/c", ("10.0.2.100:5000", "a/b/c", "latest", None)),
        (f"r:5000/x@sha256:{'a' * 64}", ("r:5000", "x", None, f"sha256:{'a' * 64}")),
        (f"r.io/x:t@sha256:{'b' * 64}", ("r.io", "x", "t", f"sha256:{'b' * 64}")),
    ],
)
def test_references_are_normalised(text: str, expected: tuple[str, str, str, str]) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert ref.api_host == ("registry-1.docker.io" if expected[0] == "docker.io" else expected[0])


@pytest.mark.parametrize("text", ["Upper/case", "r.io/x:bad tag", "r.io/x@sha256:12", "r.io/"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(BootcLiveError, match="docker://"):
        Reference.parse(text)


def test_credentials_by_host_path_and_docker_hub(tmp_path: Path) -> None:
    path = auth_json(
        tmp_path / "a.json",
        {
            "r.io": ("host", "1"),
            "r.io/team": ("team", "2"),
            "https://index.docker.io/v1/": ("hub", "3"),
        },
    )
    assert load_credentials(str(path), "r.io", "other/x") == ("host", "1")
    assert load_credentials(str(path), "r.io", "team/x") == ("team", "2")
    assert load_credentials(str(path), "docker.io", "library/fedora") == ("hub", "3")
    assert load_credentials(str(path), "mirror.io", "team/x") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BootcLiveError, match=r"not a valid auth\.json"):
        load_credentials(str(tmp_path / "bad.json"), "r.io", "x")


def _b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("auths", "ref", "expected"),
    [
        # docker login wrote URLs as keys for years: a URL names the whole registry.
        ({"https://r.io:5000/v1/": ("u", "1")}, "r.io:5000/team/app", ("u", "1")),
        ({"http://r.io/anything/": ("u", "2")}, "r.io/team/app", ("u", "2")),
        ({"https://r.io/v1/": ("u", "3")}, "r.io:5000/team/app", None),  # another port
        # The most specific key first, whatever the file's order.
        (
            {"r.io": ("host", "1"), "r.io/team": ("ns", "2"), "r.io/team/app": ("repo", "3")},
            "r.io/team/app",
            ("repo", "3"),
        ),
        # Docker Hub by any of its names; its own key before docker login's URL.
        ({"https://index.docker.io/v1/": ("hub", "1")}, "index.docker.io/library/f", ("hub", "1")),
        (
            {"https://index.docker.io/v1/": ("hub", "2")},
            "registry-1.docker.io/library/f",
            ("hub", "2"),
        ),
        (
            {"https://index.docker.io/v1/": ("old", "stale"), "docker.io": ("new", "fresh")},
            "fedora",
            ("new", "fresh"),
        ),
    ],
)
def test_auth_file_keys_match_as_containers_image_matches_them(
    tmp_path: Path, auths: dict[str, tuple[str, str]], ref: str, expected: tuple[str, str] | None
) -> None:
    """The rules of containers/image's pkg/docker/config (findCredentialsInFile): exact keys,
    the most specific first, then keys normalised to a registry (a URL's host; Docker Hub's
    names as one)."""
    parsed = Reference.parse(ref)
    path = auth_json(tmp_path / "auth.json", auths)
    assert load_credentials(str(path), parsed.registry, parsed.repository) == expected


def test_what_cannot_be_used_at_boot_is_said_not_pulled_anonymously(tmp_path: Path) -> None:
    """docker login's files: a credential helper's `{}` marker, an identity token."""
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "r.io": {},
                    "az.io": {"auth": _b64("0000", ""), "identitytoken": "SECRET-T"},
                },
                "credHelpers": {"r.io": "ecr-login"},
                "credsStore": "desktop",
            }
        )
    )
    with pytest.raises(BootcLiveError) as err:
        load_credentials(str(path), "r.io", "team/app")
    assert err.value.line() == (
        f"credentials file {path} leaves r.io's credentials to the credential helper "
        "docker-credential-ecr-login (credHelpers), which cannot run here; write them into the "
        "file instead: podman login --authfile FILE r.io"
    )
    with pytest.raises(BootcLiveError) as err:
        load_credentials(str(path), "az.io", "team/app")
    assert err.value.line() == (
        f"credentials file {path}: the entry for az.io is an identity token (identitytoken), "
        f"which bootc-live cannot use; log in with a user and password: podman login "
        f"--authfile {path} az.io"
    )
    assert "SECRET-T" not in err.value.line()
    # A helper for another registry, and credsStore, leave a public image's pull anonymous.
    assert load_credentials(str(path), "public.io", "team/app") is None


def test_the_memory_estimate_reads_the_gzip_trailers_by_range(layout: Path) -> None:
    with fakeregistry.serve(layout, Knobs(auth="bearer")) as reg:
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"), POLICY, print, unsecure=True
        )
        image = resolve(source)
        est = memory.estimate(image)
        tails = [r.headers.get("Range") for r in reg.hits("/blobs/")]
    assert est.how == "from the gzip trailers"
    sizes = [layer.size for layer in image.layers]
    assert all(f"bytes={s - 4}-{s - 1}" in tails for s in sizes)  # 4 bytes of each layer


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("Negotiate " + "A" * 60_000 + "\nInjected: 1", "scheme Negotiate"),
        ("NTLM TlRMTVNTUAACAAAA", "scheme NTLM"),
        ('Digest realm="r", nonce="SECRET-NONCE"', "scheme Digest"),
        ('Bearer service="SECRET-SERVICE"', "a Bearer challenge without a token realm"),
        ("SECRET-SCHEME x=1", "an unknown scheme"),
    ],
)
def test_an_unsupported_challenge_is_named_not_quoted(header: str, said: str) -> None:
    """The server's WWW-Authenticate is named by its scheme only: the rest (a Negotiate or
    NTLM blob, a nonce) is the server's, and a proxy may put there what the request carried."""
    auth = RegistryAuth("127.0.0.1:5000", REPO, None, lambda *_: pytest.fail("no token asked"))
    url = f"https://127.0.0.1:5000/v2/{REPO}/manifests/{TAG}"
    assert not auth.challenge(url, header)
    assert auth.denied.endswith(said), auth.denied
    assert (
        "AAAA" not in auth.denied and "SECRET" not in auth.denied and "Injected" not in auth.denied
    )


def test_an_auth_file_is_read_within_a_bound(tmp_path: Path) -> None:
    """A credentials file is read up to 1 MiB (/dev/zero was read until memory ran out; a
    large valid file stands for it here, as the same bound stops both)."""
    huge = tmp_path / "huge.json"
    huge.write_bytes(b'{"auths": {}, "x": "' + b"a" * (2 << 20) + b'"}')
    for path, said in (
        (str(huge), f"credentials file {huge} is larger than {1 << 20} bytes"),
        (str(tmp_path / "none.json"), f"credentials file {tmp_path / 'none.json'} is missing"),
    ):
        with hard_timeout(30), pytest.raises(BootcLiveError) as err:
            load_credentials(path, "r.example", "x/y")
        assert err.value.line().startswith(said), err.value.line()
