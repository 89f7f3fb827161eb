"""The registry client against a hostile or broken registry (the scripted one): digests it
must check, credentials it must keep, answers it must read whole or refuse in one line, and
mirrors that must not stop a pull. Every test has a hard timeout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fakeregistry
from bootc_live.runtime import http
from bootc_live.runtime.blobs import Descriptor, VerifyingReader
from bootc_live.runtime.errors import BootcLiveError, ImageError, VerificationError
from bootc_live.runtime.http import PARALLEL_MIN
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.registry import Reference, RegistrySource, _next_page, error_codes
from bootc_live.runtime.unpack import unpack_image
from fakeregistry import REPO, TAG, Knobs
from imagegen import build_layout, d, f, layer_tar
from registries import auth_json
from servers import hard_timeout, hostile, throwaway_ca

POLICY = http.Policy(retries=2, stall=1.0, low_speed_time=2.0, max_backoff=0.05)
PASSWORD = "pw-S3CRET"


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    with hard_timeout(40):
        yield


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile-registry") / "layout"
    build_layout(
        path,
        [layer_tar([d("etc"), f("etc/os", b"fake\n")]), layer_tar([f("big", os.urandom(99_999))])],
        compression="gzip",
        tag=TAG,
    )
    return path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return throwaway_ca(tmp_path_factory.mktemp("ca"), "127.0.0.1")


def fetch(
    reg: fakeregistry.FakeRegistry,
    *,
    ref: str = "",
    auth_file: Path | None = None,
    mirrors: tuple[str, ...] = (),
    digest_only: bool = False,
    cafile: Path | None = None,
) -> tuple[str, list[str]]:
    """Resolve the image and read every layer through verification: (digest, log lines)."""
    said: list[str] = []
    source = RegistrySource(
        Reference.parse(ref or f"{reg.host}/{REPO}:{TAG}"),
        POLICY,
        said.append,
        auth_file=str(auth_file) if auth_file else None,
        unsecure=cafile is None,
        mirrors=mirrors,
        mirrors_digest_only=digest_only,
        cafile=str(cafile) if cafile else None,
    )
    try:
        image = resolve(source)
        source.prefetch(tuple(image.layers))
        for layer in image.layers:
            with source.open_blob(layer) as raw:
                VerifyingReader(raw, layer, "layer").finish()
        return image.manifest_digest, said
    finally:
        source.close()


def manifest_bytes(layout: Path) -> bytes:
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def test_a_layer_repeated_five_times_does_not_deadlock(tmp_path: Path) -> None:
    # Old Docker images repeat the empty layer: legal, and it must not block the prefetch.
    empty = layer_tar([])
    layers = [layer_tar([f("first", b"1")]), *[empty] * 6, layer_tar([f("last", b"2")])]
    build_layout(tmp_path / "layout", layers, compression="gzip", tag=TAG)
    with fakeregistry.serve(tmp_path / "layout", Knobs(blob_delay=0.05)) as reg:
        digest, _ = fetch(reg)
        blobs = [r.path.rsplit("/", 1)[1] for r in reg.hits("/blobs/")]
    assert digest.startswith("sha256:")
    assert len(set(blobs)) == 4  # the config, the first, the empty and the last layer


def test_sha512_pins_are_checked(layout: Path) -> None:
    body = manifest_bytes(layout)
    pin = "sha512:" + hashlib.sha512(body).hexdigest()
    with fakeregistry.serve(layout, Knobs()) as reg:
        digest, _ = fetch(reg, ref=f"{reg.host}/{REPO}@{pin}")
        assert digest == pin and reg.hits(f"/manifests/{pin}")
    with (
        fakeregistry.serve(layout, Knobs(manifest_body=body + b" ")) as reg,
        pytest.raises(VerificationError) as err,
    ):
        fetch(reg, ref=f"{reg.host}/{REPO}@{pin}")
    assert f"the manifest's content is sha512:{hashlib.sha512(body + b' ').hexdigest()}, not" in (
        str(err.value)
    )
    with pytest.raises(ImageError, match=r"digest algorithm 'sha384' is not supported"):
        Reference.parse(f"127.0.0.1:1/{REPO}@sha384:{'0' * 96}")


def test_an_https_registry_never_redirects_to_plain_http(
    layout: Path, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, cert, key = tls
    with hostile(b"", "honest") as plain:
        knobs = Knobs(auth="basic", credentials=("me", PASSWORD), tls=(cert, key))
        knobs.redirect_blobs_to = plain.port
        with fakeregistry.serve(layout, knobs) as reg:
            creds = auth_json(tmp_path / "a.json", {reg.host: ("me", PASSWORD)})
            with pytest.raises(BootcLiveError) as err:
                fetch(reg, auth_file=creds, cafile=ca)
    assert "redirected from https to plain http" in err.value.line()
    assert plain.requests == [] and PASSWORD not in err.value.line()


def test_a_tls_registry_naming_a_plain_http_realm_gets_no_password(
    layout: Path, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, cert, key = tls
    with hostile(b"{}", "honest") as realm:
        knobs = Knobs(auth="bearer", credentials=("me", PASSWORD), tls=(cert, key))
        knobs.realm = f"http://127.0.0.1:{realm.port}/token"
        with fakeregistry.serve(layout, knobs) as reg:
            creds = auth_json(tmp_path / "a.json", {reg.host: ("me", PASSWORD)})
            with pytest.raises(BootcLiveError) as err:
                fetch(reg, auth_file=creds, cafile=ca)
    assert err.value.line().startswith(
        f"registry {reg.host} (https) names a plain http token service "
        f"http://127.0.0.1:{realm.port}/token: refused"
    )
    assert realm.requests == []


@pytest.mark.parametrize(
    "realm", ["https://[::1/token", "file:///etc/shadow", "https://h:99999/token", "//x/token"]
)
def test_an_unusable_token_realm_is_one_line(realm: str, layout: Path, tmp_path: Path) -> None:
    knobs = Knobs(auth="bearer", credentials=("me", PASSWORD))
    knobs.realm = realm
    with fakeregistry.serve(layout, knobs) as reg:
        creds = auth_json(tmp_path / "a.json", {reg.host: ("me", PASSWORD)})
        with pytest.raises(BootcLiveError) as err:
            fetch(reg, auth_file=creds)
    line = err.value.line()
    assert re.match(
        rf"(registry {reg.host}: token service .* is not an http\(s\) URL|"
        r"https://h:99999/token.*: Port out of range 0-65535; fix the port in the URL)",
        line,
    ), line
    assert PASSWORD not in line and "\n" not in line


def test_token_credentials_never_follow_a_redirect(layout: Path, tmp_path: Path) -> None:
    with hostile(b"{}", "honest") as elsewhere:
        knobs = Knobs(auth="bearer", credentials=("me", PASSWORD))
        knobs.token_redirect_to = f"http://127.0.0.1:{elsewhere.port}/token"
        with fakeregistry.serve(layout, knobs) as reg:
            creds = auth_json(tmp_path / "a.json", {reg.host: ("me", PASSWORD)})
            with pytest.raises(BootcLiveError) as err:
                fetch(reg, auth_file=creds)
            asked = reg.hits("/token")
    assert "answered without a token" in err.value.line()
    assert elsewhere.requests and all("Authorization" not in r.headers for r in elsewhere.requests)
    assert len(asked) == 1  # the password went out once


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"token": "tok\r\nX-Evil: 1"}, "answered a token that cannot be sent"),
        ({"token": "a" * 9000}, "answered a token that cannot be sent"),
        ({"token": 5}, "answered without a token"),
        ({"token": "good", "expires_in": 10**400}, None),
        ({"token": "good", "expires_in": -1e308}, None),
        ({"token": "good", "expires_in": "soon"}, None),
    ],
)
def test_token_answers(
    layout: Path, answer: dict[str, object], expected: str | None, tmp_path: Path
) -> None:
    knobs = Knobs(auth="bearer", token_answer=answer)
    with fakeregistry.serve(layout, knobs) as reg:
        reg.tokens["good"] = ("repository:x/y:pull", float("inf"))
        if expected is None:
            digest, _ = fetch(reg)
            assert digest.startswith("sha256:")
            return
        with pytest.raises(BootcLiveError) as err:
            fetch(reg)
    line = err.value.line()
    assert f"token service http://{reg.host}/token answered" in line and expected in line
    assert "\r" not in line and "X-Evil" not in line and "aaaa" not in line


@pytest.mark.parametrize(
    "knobs",
    [
        Knobs(cut_manifest_at=40),  # resumed: the server ignores Range, so read again whole
        Knobs(cut_blob_at=40),  # the config breaks off: resumed with Range, parsed whole
    ],
    ids=["manifest", "config"],
)
def test_a_document_cut_short_is_read_whole(layout: Path, knobs: Knobs) -> None:
    with fakeregistry.serve(layout, knobs) as reg:
        digest, said = fetch(reg)
    assert digest.startswith("sha256:")
    assert any("connection broke at byte 40" in line for line in said), said


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        (Knobs(manifest_body=b"[" * 100_000), r"not valid JSON \(nested more than 64 levels"),
        (Knobs(manifest_body=b'{"a": "\xc3\x28"}'), r"not valid JSON \(not UTF-8 text\)"),
        (Knobs(manifest_stall=3.0), r"stalled: no data for 1s.*giving up after 2 retries"),
        (Knobs(manifest_chunked_garbage=True), r"connection broke.*giving up after 2 retries"),
        (
            Knobs(manifest_status=400, manifest_body=b'{"errors": ' + b"[" * 5000),
            r"HTTP 400 Bad Request; check",
        ),
    ],
    ids=["nested", "not-utf8", "stalled", "bad-chunked", "nested-error-body"],
)
def test_broken_manifests_end_in_one_line(layout: Path, knobs: Knobs, expected: str) -> None:
    with fakeregistry.serve(layout, knobs) as reg, pytest.raises(BootcLiveError) as err:
        fetch(reg)
    assert re.search(expected, err.value.line()), err.value.line()
    assert "\n" not in err.value.line()


def test_broken_mirrors_fall_through_to_the_registry(layout: Path) -> None:
    broken = [
        Knobs(manifest_chunked_garbage=True),
        Knobs(manifest_status=500, manifest_body=b"[" * 100_000),
        Knobs(manifest_body=b"{" * 100_000),
    ]
    with (
        fakeregistry.serve(layout, broken[0]) as one,
        fakeregistry.serve(layout, broken[1]) as two,
        fakeregistry.serve(layout, broken[2]) as three,
        fakeregistry.serve(layout, Knobs()) as reg,
    ):
        digest, said = fetch(reg, mirrors=(one.host, two.host, three.host))
    assert digest.startswith("sha256:")
    tried = [line for line in said if line.endswith("; trying the next")]
    assert [line.split(": ")[0] for line in tried] == [
        f"mirror {m.host}" for m in (one, two, three)
    ], said


def test_digest_only_mirrors_serve_pulls_by_digest_only(layout: Path) -> None:
    pin = "sha256:" + hashlib.sha256(manifest_bytes(layout)).hexdigest()
    with fakeregistry.serve(layout, Knobs()) as mirror, fakeregistry.serve(layout, Knobs()) as reg:
        _, said = fetch(reg, mirrors=(mirror.host,), digest_only=True)
        assert mirror.log == [] and reg.hits("/manifests/v1")
        assert any("the mirrors serve pulls by digest only" in line for line in said), said
        fetch(reg, ref=f"{reg.host}/{REPO}@{pin}", mirrors=(mirror.host,), digest_only=True)
        assert mirror.hits(f"/manifests/{pin}") and not reg.hits(f"/manifests/{pin}")
        fetch(reg, mirrors=(mirror.host,))  # without the option, a tag goes to the mirror too
        assert mirror.hits(f"/manifests/{TAG}")


def test_a_failing_token_service_gets_the_password_three_times_at_most(
    layout: Path, tmp_path: Path
) -> None:
    knobs = Knobs(auth="bearer", credentials=("me", PASSWORD), token_status=503)
    with fakeregistry.serve(layout, knobs) as reg:
        creds = auth_json(tmp_path / "a.json", {reg.host: ("me", PASSWORD)})
        with pytest.raises(BootcLiveError) as err:
            fetch(reg, auth_file=creds)
        asked = reg.hits("/token")
    assert err.value.line().startswith(
        f"http://{reg.host}/token?…: HTTP 503 Service Unavailable; giving up after 2 retries"
    )
    assert len(asked) == 3 and PASSWORD not in err.value.line()


def test_a_mirror_that_serves_the_image_fetches_within_the_boots_own_bounds(
    layout: Path,
) -> None:
    """A mirror is asked for the image with short deadlines of its own (a dead one hands over
    soon); once it serves it, every blob comes from it, within bootc.timeout= and
    bootc.retries= (a 16 s wait per blob failed a boot that allowed 60). Here the boot's own
    bounds are the tighter: no retry, a stall of 1 s, which the mirror's 2 s wait exceeds."""
    tight = replace(POLICY, retries=0, stall=1.0)
    with (
        fakeregistry.serve(layout, Knobs(blob_delay=2.0)) as mirror,
        fakeregistry.serve(layout, Knobs()) as reg,
    ):
        said: list[str] = []
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"),
            tight,
            said.append,
            unsecure=True,
            mirrors=(mirror.host,),
        )
        try:
            with pytest.raises(
                BootcLiveError, match=r"no data for 1s\); giving up after 0 retries"
            ):
                image = resolve(source)  # the config blob: from the mirror too
                for layer in image.layers:
                    with source.open_blob(layer) as raw:
                        VerifyingReader(raw, layer, "layer").finish()
            assert f"mirror {mirror.host} serves {reg.host}/{REPO}:{TAG}" in said
            assert not reg.hits("/blobs/")
        finally:
            source.close()


def test_the_first_layers_blob_named_again_later_is_not_waited_for(tmp_path: Path) -> None:
    """Layers [E, a, b, c, d, E] (Docker's empty layer twice): the fetch-ahead queued E's
    blob behind a to d, whose slots fill the budget until the feeder reads them, while the
    feeder, at layer 0, waited for E's fetch: the boot hung."""
    empty = layer_tar([])
    layers = [empty, *(layer_tar([f(f"f{i}", b"x%d" % i)]) for i in range(1, 5)), empty]
    build_layout(tmp_path / "layout", layers, tag=TAG)
    (tmp_path / "root").mkdir()
    with fakeregistry.serve(tmp_path / "layout", Knobs()) as reg:
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"), POLICY, lambda _: None, unsecure=True
        )
        try:
            image = resolve(source)
            with hard_timeout(60):
                stats = unpack_image(image, str(tmp_path / "root"))
        finally:
            source.close()
    assert stats.entries == 4 and (tmp_path / "root/f4").read_bytes() == b"x4"


def test_a_link_header_of_unclosed_brackets_is_read_in_linear_time() -> None:
    """A referrers answer's Link header of `<` without `>` was scanned to its end from every
    `<`: 12 s for a 64 KiB line, about a day for one folded over 99 lines (6 MB)."""
    url = "https://r.example/v2/a/referrers/sha256:0"
    start = time.monotonic()
    assert _next_page("<" * 65536, url) == ""
    assert time.monotonic() - start < 2
    link = '<https://x.example/p>; rel="next", </v2/a/referrers/sha256:0?n=2>; rel=next'
    assert _next_page("<<" + link, url) == ""  # the next page is on another origin
    assert _next_page(link.partition(", ")[2], url) == url.partition("?")[0] + "?n=2"


def referrers(reg: fakeregistry.FakeRegistry, layout: Path) -> bytes | None:
    source = RegistrySource(
        Reference.parse(f"{reg.host}/{REPO}:{TAG}"), POLICY, lambda _: None, unsecure=True
    )
    try:
        digest = "sha256:" + hashlib.sha256(manifest_bytes(layout)).hexdigest()
        return source.referrers(digest, "application/vnd.bootc-live.packed.v1")
    finally:
        source.close()


@pytest.mark.parametrize(
    "link", ['<http://[::1/x>; rel="next"', "<//[zz/p>; rel=next", "<" * 65_000], ids=str.__len__
)
def test_a_referrers_link_that_is_no_url_ends_the_pages(layout: Path, link: str) -> None:
    """An unclosed [ raised ValueError (a traceback on the host, 'internal error' at boot);
    a run of < without > took 12 s of CPU to scan (each < a scan to the end)."""
    index = b'{"schemaVersion": 2, "manifests": []}'
    with fakeregistry.serve(layout, Knobs(referrers=index, referrers_link=link)) as reg:
        started = time.monotonic()
        assert referrers(reg, layout) == index
    assert time.monotonic() - started < 2.0


def test_a_referrers_index_in_pages_is_bounded_as_one_index(layout: Path) -> None:
    """16 pages of 4 MiB each (of {}: 1.4 million objects a page) were parsed and merged
    whole: 1.8 GB at once, an out-of-memory kill at boot, not a line."""
    page = b'{"schemaVersion": 2, "manifests": [' + b"{}," * (1 << 19) + b"{}]}"
    with fakeregistry.serve(layout, Knobs(referrers_pages=(page,) * 16)) as reg:
        with pytest.raises(BootcLiveError) as err:
            referrers(reg, layout)
        assert len(reg.hits("/referrers/")) == 3  # 1.5 MiB each: the third is one too many
    assert err.value.line() == (
        f"http://{reg.host}/v2/{REPO}/referrers/sha256:"
        f"{hashlib.sha256(manifest_bytes(layout)).hexdigest()}?…: the referrers index is larger "
        "than 4194304 bytes (in 3 pages); this is not what the registry should answer"
    )


def test_a_busy_mirror_hands_over_soon_whatever_its_retry_after(layout: Path) -> None:
    """503 with a Retry-After of 400 digits to every request: the mirror was waited for 60 s
    a retry (120 s) before the registry was asked; it is asked with short deadlines of its own.
    (The https attempt before plain http is answered 400, as real servers answer it.)"""
    with (
        hostile(b"", "retry-after-huge") as mirror,
        fakeregistry.serve(layout, Knobs()) as reg,
    ):
        digest, said = fetch(reg, mirrors=(f"127.0.0.1:{mirror.port}",))
    assert digest.startswith("sha256:") and len(mirror.requests) == 3
    waits = [line.rpartition(" in ")[2] for line in said if "; retry " in line]
    assert waits == ["5.0s", "5.0s"], said


@pytest.mark.parametrize("connections", [1, 4])
def test_a_blob_shorter_than_its_descriptor_says_so(layout: Path, connections: int) -> None:
    """The server's Content-Range gives the blob's size: past its end no retry can help, yet
    the retries were spent and the line was the last one's 'HTTP 416 Range Not Satisfiable'."""
    big = json.loads(manifest_bytes(layout))["layers"][1]
    desc = Descriptor(big["mediaType"], big["digest"], big["size"] + PARALLEL_MIN)
    policy = replace(POLICY, connections=connections)
    with fakeregistry.serve(layout, Knobs()) as reg:
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"), policy, lambda _: None, unsecure=True
        )
        source.index_json()
        with pytest.raises(BootcLiveError) as err, source.open_blob(desc) as raw:
            VerifyingReader(raw, desc, "layer").finish()
        source.close()
    assert f"/blobs/{desc.digest}: it is {big['size']} bytes long, shorter than what" in (
        err.value.line()
    )


def test_closing_before_the_layers_fetched_ahead_are_read_ends_the_fetch_ahead(
    tmp_path: Path,
) -> None:
    """The unpack failed at the first layer, so the budget's slots, held by the layers fetched
    ahead, never came back: a worker waited for one for good, holding the others' turn."""
    layers = [layer_tar([f(f"f{i}", os.urandom(3 << 20))]) for i in range(8)]
    build_layout(tmp_path / "layout", layers, tag=TAG)
    with fakeregistry.serve(tmp_path / "layout", Knobs()) as reg:
        source = RegistrySource(
            Reference.parse(f"{reg.host}/{REPO}:{TAG}"), POLICY, lambda _: None, unsecure=True
        )
        image = resolve(source)
        source.prefetch(tuple(image.layers))
        workers = list(source._workers)
        while len(reg.hits("/blobs/")) < 5:  # the config, then four layers fill the budget
            time.sleep(0.05)
        source.close()
        for worker in workers:
            worker.join(5.0)
    assert [w for w in workers if w.is_alive()] == []


def index_of_one(layout: Path, dest: Path, media_type: str | None) -> str:
    """A copy of `layout` whose tag names an index of one entry: the layout's manifest, under
    `media_type` (None: without one); the manifest's digest."""
    shutil.copytree(layout, dest)
    index_json = json.loads((dest / "index.json").read_text())
    top = index_json["manifests"][0]
    entry = {k: v for k, v in top.items() if k not in ("mediaType", "annotations")}
    entry["platform"] = {"os": "linux", "architecture": str(Platform.host().architecture)}
    if media_type is not None:
        entry["mediaType"] = media_type
    body = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    (dest / "blobs/sha256" / digest[7:]).write_bytes(body)
    top.update(mediaType="application/vnd.oci.image.index.v1+json", digest=digest, size=len(body))
    (dest / "index.json").write_text(json.dumps(index_json))
    return str(entry["digest"])


def test_an_index_entry_without_a_media_type_is_asked_for_as_a_manifest(tmp_path: Path) -> None:
    """containers/image asks for every entry of an index at /manifests/; asked for at
    /blobs/, the registry answered 404 and the line said the repository had no such blob."""
    manifest = index_of_one(build_small(tmp_path), tmp_path / "untyped", None)
    with fakeregistry.serve(tmp_path / "untyped", Knobs()) as reg:
        digest, _ = fetch(reg)
    assert digest == manifest
    assert not reg.hits(f"/blobs/{manifest}")


def test_an_index_entry_of_another_media_type_is_named_before_it_is_asked_for(
    tmp_path: Path,
) -> None:
    artifact = "application/vnd.example.sbom.v1+json"
    manifest = index_of_one(build_small(tmp_path), tmp_path / "artifact", artifact)
    with fakeregistry.serve(tmp_path / "artifact", Knobs()) as reg:
        with pytest.raises(ImageError) as err:
            fetch(reg)
        assert not reg.hits(manifest)
    assert str(err.value) == (
        f"docker://{reg.host}/{REPO}:{TAG}: {manifest[:19]}… has unsupported media type "
        f"'{artifact}'"
    )


def build_small(tmp_path: Path) -> Path:
    build_layout(tmp_path / "small", [layer_tar([f("etc/os", b"x\n")])], tag=TAG)
    return tmp_path / "small"


CODES = st.sampled_from(
    ["MANIFEST_UNKNOWN", "DENIED", "PROJECTPOLICYVIOLATION", "NOT_FOUND", "SECRET_x1"]
)
ODD_CODES = st.one_of(
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
    st.integers(),
    st.none(),
)
ENTRIES = st.one_of(
    st.fixed_dictionaries({"code": CODES, "message": st.just("the server's words")}),
    st.fixed_dictionaries({"code": ODD_CODES}),
    st.fixed_dictionaries({"status": st.integers(400, 599), "message": st.just("no such")}),
)


def told(entries: list[dict[str, object]], said: str) -> None:
    """`said` names each known code of `entries` once, "a code of the server's own" exactly
    when one has a code not known, and none of the server's words."""
    codes = [e["code"] for e in entries if "code" in e]
    for code in {"MANIFEST_UNKNOWN", "DENIED", "PROJECTPOLICYVIOLATION", "NOT_FOUND"} & {
        c for c in codes if isinstance(c, str)
    }:
        assert said.count(code) == 1, said
    own = any(not isinstance(c, str) or c == "SECRET_x1" for c in codes)
    assert ("a code of the server's own" in said) == own, (entries, said)
    assert "SECRET" not in said and "words" not in said and "\n" not in said


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(ENTRIES, max_size=4))
def test_error_bodies_are_told_by_their_codes(entries: list[dict[str, object]]) -> None:
    """A registry's error body as distribution, Harbor (PROJECTPOLICYVIOLATION when its
    vulnerability policy stops a pull, NOT_FOUND) and Artifactory (status and message, no
    code) write it, and odd ones (a code that is an object): told by its known codes."""
    told(entries, error_codes(json.dumps({"errors": entries}).encode()))


@pytest.mark.parametrize(
    ("status", "entries"),
    [
        (403, [{"code": "PROJECTPOLICYVIOLATION", "message": "the server's words"}]),
        (404, [{"code": "MANIFEST_UNKNOWN"}, {"code": "MANIFEST_UNKNOWN"}]),
        (404, [{"status": 404, "message": "the server's words"}]),
        (404, [{"code": {"a": 1}}]),
    ],
    ids=["harbor-policy", "repeated", "artifactory", "code-an-object"],
)
def test_a_refused_pull_names_the_codes(
    layout: Path, status: int, entries: list[dict[str, object]]
) -> None:
    knobs = Knobs(manifest_status=status, manifest_body=json.dumps({"errors": entries}).encode())
    with fakeregistry.serve(layout, knobs) as reg, pytest.raises(BootcLiveError) as err:
        fetch(reg)
    told(entries, err.value.line())
    if "PROJECTPOLICYVIOLATION" in err.value.line():  # not the credentials' rights
        assert "registry's policy" in err.value.line(), err.value.line()
