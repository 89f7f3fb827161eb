"""Registry credentials on the host, where podman, skopeo and docker keep them, in their order,
against a real registry (docker-registry, TLS, htpasswd): each auth.json location, the first
that has something for the registry deciding, `--authfile`, and credential helpers."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bootc_live import auth, cli
from bootc_live.runtime.errors import BootcLiveError
from imagegen import build_layout, f, layer_tar
from registries import Pki, Registry, auth_json, docker_registry, make_pki, skopeo_push
from unpackers import need_root_and

pytestmark = pytest.mark.integration

USER, PASSWORD = "podman-user", "pw-never-printed"


@dataclass
class World:
    pki: Pki
    registry: Registry
    digest: str
    work: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_root_and("docker-registry", "skopeo", "openssl")
    work = tmp_path_factory.mktemp("auth")
    pki = make_pki(work / "pki")
    with docker_registry(work / "registry", pki, users={USER: PASSWORD}) as registry:
        info = build_layout(work / "img", [layer_tar([f("etc/hello", b"hi\n")])], tag="v1")
        skopeo_push(f"oci:{work / 'img'}:v1", registry, "my/os:v1", pki, f"{USER}:{PASSWORD}")
        big = layer_tar([f("big", random.Random(15).randbytes(24 << 20))])
        build_layout(work / "big", [big], tag="v1")
        skopeo_push(f"oci:{work / 'big'}:v1", registry, "my/big:v1", pki, f"{USER}:{PASSWORD}")
        yield World(pki, registry, info.manifest_digest, work)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials anywhere: a fresh HOME, no XDG or REGISTRY_AUTH_FILE, an empty /run."""
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(auth, "RUN_CONTAINERS", str(tmp_path / "run"))
    return tmp_path


def pull(world: World, dest: Path, *extra: str) -> int:
    ref = f"docker://{world.registry.host}/my/os:v1"
    return cli.main(["pull", ref, "-o", f"oci:{dest}", "--ca", str(world.pki.ca), *extra])


def place(where: str, base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where podman (or docker) would have written an auth file, with the environment set so."""
    if where == "REGISTRY_AUTH_FILE":
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(base / "given.json"))
        return base / "given.json"
    if where == "XDG_RUNTIME_DIR":
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base / "xdg-run"))
        return base / "xdg-run/containers/auth.json"
    if where == "/run/containers/UID":  # sudo podman login, without XDG_RUNTIME_DIR
        return base / "run" / str(os.getuid()) / "auth.json"
    if where == "XDG_CONFIG_HOME":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
        return base / "xdg-config/containers/auth.json"
    if where == "~/.config":
        return base / "home/.config/containers/auth.json"
    if where == "DOCKER_CONFIG":
        monkeypatch.setenv("DOCKER_CONFIG", str(base / "docker-config"))
        return base / "docker-config/config.json"
    assert where == "~/.docker"
    return base / "home/.docker/config.json"


PLACES = [
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
    "/run/containers/UID",
    "XDG_CONFIG_HOME",
    "~/.config",
    "DOCKER_CONFIG",
    "~/.docker",
]


@pytest.mark.parametrize("where", PLACES)
def test_credentials_are_found_where_podman_keeps_them(
    world: World,
    home: Path,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pull(world, home / "none") == 1
    said = capsys.readouterr().err
    assert "401 unauthorized for repository my/os (no credentials)" in said
    path = place(where, home, monkeypatch)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The 401 hint names the host flag and every place looked, this one included.
    assert pull(world, home / "none") == 1
    said = capsys.readouterr().err
    assert "add credentials with --authfile FILE (or podman login) (looked in: " in said
    assert str(path) in said and "bootc-live build" not in said
    auth_json(path, {world.registry.host: (USER, PASSWORD)})
    assert pull(world, home / "pulled") == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert out.split()[0] == world.digest
    assert PASSWORD not in out + err


def test_the_first_place_with_an_entry_decides_in_podmans_order(
    world: World, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    later = place("~/.docker", home, monkeypatch)
    later.parent.mkdir(parents=True)
    auth_json(later, {world.registry.host: (USER, PASSWORD)})
    # An earlier file with entries for other registries only is passed over ...
    earlier = place("XDG_RUNTIME_DIR", home, monkeypatch)
    earlier.parent.mkdir(parents=True)
    auth_json(earlier, {"quay.io": ("someone", "else")})
    assert pull(world, home / "a") == 0, capsys.readouterr().err
    # ... one with an entry for this registry decides, even when the later one is right.
    auth_json(earlier, {world.registry.host: (USER, "stale")})
    assert pull(world, home / "b") == 1
    assert "401 unauthorized for repository my/os (credentials rejected)" in (
        capsys.readouterr().err
    )
    # --authfile (podman's spelling) names the one file to read.
    given = auth_json(home / "given.json", {world.registry.host: (USER, PASSWORD)})
    assert pull(world, home / "c", "--authfile", str(given)) == 0, capsys.readouterr().err
    assert not (home / "b").exists()
    # So does $REGISTRY_AUTH_FILE (podman's and skopeo's default --authfile): nothing else.
    auth_json(earlier, {world.registry.host: (USER, PASSWORD)})
    elsewhere = auth_json(home / "elsewhere.json", {"quay.io": ("someone", "else")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(elsewhere))
    assert pull(world, home / "d") == 1
    said = capsys.readouterr().err
    assert "401 unauthorized for repository my/os (no credentials)" in said
    assert f"(looked in: {elsewhere})" in said


HELPER = """#!/bin/sh
# A docker credential helper: `get` reads the server on stdin, answers JSON or "not found".
read -r server
echo "$server" >> "{log}"
if [ "$1" = get ] && [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}\\n' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


@pytest.mark.parametrize("how", ["credHelpers", "credsStore", "not found"])
def test_credential_helpers_run_when_configured(
    world: World,
    home: Path,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = home / "bin"
    bin_dir.mkdir()
    log = home / "helper.log"
    helper = bin_dir / "docker-credential-fake"
    host = world.registry.host if how != "not found" else "elsewhere.example"
    helper.write_text(
        HELPER.format(log=log, host=host, user=USER, secret=PASSWORD), encoding="utf-8"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = place("~/.docker", home, monkeypatch)
    config.parent.mkdir(parents=True)
    if how == "credsStore":  # docker login with a store: an empty entry, the secret elsewhere
        docs = {"auths": {world.registry.host: {}}, "credsStore": "fake"}
    else:
        docs = {"auths": {}, "credHelpers": {world.registry.host: "fake"}}
    config.write_text(json.dumps(docs))
    status = pull(world, home / "pulled")
    out, err = capsys.readouterr()
    assert log.read_text() == f"{world.registry.host}\n"  # asked once, for this registry
    assert PASSWORD not in out + err
    if how == "not found":
        assert status == 1
        assert "401 unauthorized for repository my/os (no credentials)" in err
    else:
        assert status == 0, err
        assert out.split()[0] == world.digest


def test_a_missing_helper_is_named(
    world: World, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = place("~/.docker", home, monkeypatch)
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"credsStore": "nonexistent-helper"}))
    assert pull(world, home / "pulled") == 1
    assert capsys.readouterr().err.strip() == (
        f"bootc-live: {config} names the credential helper 'nonexistent-helper', but "
        "docker-credential-nonexistent-helper is not installed; install "
        f"docker-credential-nonexistent-helper, or remove it from {config}"
    )
    assert not (home / "pulled").exists()


def test_pull_shows_the_bytes_fetched(
    world: World, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    given = auth_json(home / "auth.json", {world.registry.host: (USER, PASSWORD)})
    monkeypatch.setenv("BOOTC_LIVE_PROGRESS_SECONDS", "0.02")
    ref = f"docker://{world.registry.host}/my/big:v1"
    dest = f"oci-archive:{home / 'big.oci'}"
    status = cli.main(
        ["pull", ref, "-o", dest, "--ca", str(world.pki.ca), "--authfile", str(given)]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    fetched = re.findall(
        r"^bootc-live: layer 1/1  (\d+)/24 MiB fetched  [\d.]+ MiB/s  ETA \d+s$", err, re.M
    )
    assert len(fetched) >= 2, err
    assert [int(n) for n in fetched] == sorted(int(n) for n in fetched)


def test_build_refuses_an_auth_file_the_boot_could_not_use(tmp_path: Path) -> None:
    """docker login with a credential helper writes `{}` for the registry and the helper's name
    beside it: the host pulls through the helper, the initramfs could not. build says so
    before it embeds the file, instead of a boot that pulls anonymously and gets 401."""
    from bootc_live.build import BuildConfig, includes
    from bootc_live.images import SourceRef

    helper_file = tmp_path / "config.json"
    helper_file.write_text(json.dumps({"auths": {"r.io": {}}, "credHelpers": {"r.io": "pass"}}))
    work = tmp_path / "work"
    work.mkdir()
    config = BuildConfig(
        SourceRef.parse("docker://r.io/team/app:v1"), tmp_path / "out", auth_file=helper_file
    )
    with pytest.raises(BootcLiveError) as err:
        includes(config, work)
    assert "leaves r.io's credentials to the credential helper docker-credential-pass" in str(
        err.value.line()
    )
    assert list(work.iterdir()) == []  # nothing staged
    # Named as a registry the boot pulls from (--auth-registry), likewise.
    elsewhere = SourceRef.parse("docker://other.io/team/app:v1")
    config = BuildConfig(elsewhere, tmp_path / "out", auth_file=helper_file)
    with pytest.raises(BootcLiveError) as err:
        includes(replace(config, auth_registries=("r.io",)), work)
    assert "to the credential helper docker-credential-pass" in err.value.line()
    # For an image elsewhere it holds nothing the boot could use: refused too, as empty.
    with pytest.raises(BootcLiveError) as err:
        includes(config, work)
    assert "has no credentials for other.io: the initramfs would get none" in err.value.line()
    assert list(work.iterdir()) == []
    # A file with the credentials is embedded.
    path = auth_json(tmp_path / "auth.json", {"r.io": ("u", "p")})
    config = BuildConfig(
        SourceRef.parse("docker://r.io/team/app:v1"), tmp_path / "out", auth_file=path
    )
    assert [p for _, p in includes(config, work)] == ["/etc/bootc-live/auth.json"]
