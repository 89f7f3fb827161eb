"""policy.json against skopeo's own verdicts: generated policies (scopes of the docker
transport, requirement lists, signedIdentity rules) and signatures made by `skopeo
standalone-sign` for generated identities, evaluated for one registry image by its tag and by
its digest. skopeo copies from a loopback registry with the signature in a file lookaside store;
bootc-live evaluates the same policy, signature and manifest. Where skopeo refuses what we
accept, an image the user's policy rejects would boot; the other way round, one it accepts
would not."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import policy, signatures
from bootc_live.runtime.policy import Policy, PolicyError
from fakeregistry import REPO, Knobs, serve
from imagegen import build_layout, f, layer_tar
from signing import GpgKey, gpg_keys

OTHER_DIGEST = "sha256:" + "12" * 32


@dataclass
class World:
    tmp: Path
    host: str
    digest: str
    manifest: bytes
    key: GpgKey
    other: GpgKey
    gnupg: Path
    signed: dict[str, bytes | None]  # identity → its signature (None: skopeo would not sign)

    def fill(self, text: str) -> str:
        return text.replace("H", self.host).replace("@D", f"@{self.digest}")

    def sign(self, identity: str) -> bytes | None:
        if identity not in self.signed:
            manifest = self.tmp / "manifest.json"
            out = self.tmp / "signature"
            out.unlink(missing_ok=True)
            done = subprocess.run(
                ["skopeo", "standalone-sign", "-o", str(out), str(manifest), identity,
                 self.key.fingerprint],
                capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                env={"GNUPGHOME": str(self.gnupg), "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            self.signed[identity] = out.read_bytes() if done.returncode == 0 else None
        return self.signed[identity]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which("skopeo") is None or shutil.which("gpg") is None:
        pytest.skip("needs skopeo and gpg")
    tmp = tmp_path_factory.mktemp("policy-skopeo")
    built = build_layout(tmp / "layout", [layer_tar([f("etc/motd", b"signed\n")])])
    digest = built.manifest_digest
    manifest = (tmp / "layout" / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()
    (tmp / "manifest.json").write_bytes(manifest)
    with (
        gpg_keys(tmp / "gnupg", "trusted", "other") as keys,
        serve(tmp / "layout", Knobs()) as registry,
    ):
        trusted, other = keys["trusted"], keys["other"]
        yield World(tmp, registry.host, digest, manifest, trusted, other, tmp / "gnupg", {})


# Names, with H the registry's host:port and @D the image's digest.
IMAGES = ["H/x/y:v1", "H/x/y@D"]
REFERENCES = [
    "H/x/y:v1", "H/x/y:v2", "H/x/y@D", f"H/x/y@{OTHER_DIGEST}", "H/x/y:v1@D", "H/x/y",
    "H/x:v1", "H/x/y/z:v1", "other.example/x/y:v1", "other.example/x/y@D",
    "docker.io/library/busybox:v1", "busybox:v1", "busybox", "mirror.example/team/x/y:v1",
    "mirror.example/team/x/y@D", "127.0.0.1/x/y:v1", "localhost/x/y:v1", "index.docker.io/x:v1",
]  # fmt: skip
PREFIXES = [
    "H", "H/x", "H/x/y", "H/xx", "H/x/", "127.0.0.1", "mirror.example/team",
    "mirror.example/team/x", "other.example", "docker.io", "docker.io/library", "localhost",
    "busybox", "H/x/y:v1",
]  # fmt: skip
SCOPES = [
    "H", "H/x", "H/x/y", "H/x/y:v1", "H/x/y:v2", "H/x/y@D", "*.0.1", "*.1", "*.0.0.1",
    "127.0.0.1", "docker.io", "H/x/y/z",
]  # fmt: skip

# How a requirement names its keys: the trusted key (T) signs, the other (O) does not.
KEYS = ["keyPath T", "keyPaths O T", "keyPaths O", "keyData T", "keyData O"]

identities = st.one_of(
    st.builds(
        lambda t: {"type": t},
        st.sampled_from(["matchExact", "matchRepoDigestOrExact", "matchRepository"]),
    ),
    st.builds(
        lambda r: {"type": "exactReference", "dockerReference": r}, st.sampled_from(REFERENCES)
    ),
    st.builds(
        lambda r: {"type": "exactRepository", "dockerRepository": r},
        st.sampled_from(REFERENCES),
    ),
    st.builds(
        lambda p, s: {"type": "remapIdentity", "prefix": p, "signedPrefix": s},
        st.sampled_from(PREFIXES),
        st.sampled_from(PREFIXES),
    ),
)
requirement = st.one_of(
    st.just({"type": "insecureAcceptAnything"}),
    st.just({"type": "reject"}),
    st.builds(
        lambda k, i: {"type": "signedBy", "keyType": "GPGKeys", "K": k, "signedIdentity": i},
        st.sampled_from(KEYS),
        identities,
    ),
    st.builds(lambda k: {"type": "signedBy", "keyType": "GPGKeys", "K": k}, st.sampled_from(KEYS)),
)
requirements = st.lists(requirement, min_size=1, max_size=3)
docker_scopes = st.dictionaries(st.sampled_from(["", *SCOPES]), requirements, max_size=3)


def fill_doc(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return world.fill(value)
    if isinstance(value, list):
        return [fill_doc(v, world) for v in value]
    if isinstance(value, dict):
        return {world.fill(k): fill_doc(v, world) for k, v in value.items()}
    return value


def skopeo_verdict(world: World, doc: dict[str, Any], image: str, signature: bytes | None) -> str:
    case = world.tmp / "case"
    shutil.rmtree(case, ignore_errors=True)
    store = case / "store" / f"{REPO}@{world.digest.replace(':', '=')}"
    store.mkdir(parents=True)
    if signature is not None:
        (store / "signature-1").write_bytes(signature)
    (case / "d").mkdir()
    (case / "d" / "d.yaml").write_text(f"default-docker:\n  lookaside: file://{case}/store\n")
    (case / "policy.json").write_text(json.dumps(doc))
    done = subprocess.run(
        ["skopeo", "copy", "--policy", str(case / "policy.json"), "--registries.d",
         str(case / "d"), "--src-tls-verify=false", f"docker://{image}", f"dir:{case}/out"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode == 0:
        return "accepted"
    if "invalid policy" in done.stderr:
        return "malformed"
    assert "Source image rejected" in done.stderr, done.stderr
    return "rejected"


def our_verdict(world: World, doc: dict[str, Any], image: str, signature: bytes | None) -> str:
    try:
        rules = Policy.parse(json.dumps(doc).encode(), "policy.json")
    except PolicyError:
        return "malformed"
    found = [signatures.from_blob(signature)] if signature is not None else []
    try:
        policy.evaluate(rules, "docker", image, world.manifest, found)
    except PolicyError as err:
        assert err.reason != policy.MALFORMED
        return "rejected"
    return "accepted"


@settings(
    max_examples=70,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    default=requirements,
    scopes=docker_scopes,
    image=st.sampled_from(IMAGES),
    signed=st.sampled_from(REFERENCES),
)
def test_our_verdict_is_skopeos(
    world: World,
    default: list[dict[str, Any]],
    scopes: dict[str, list[dict[str, Any]]],
    image: str,
    signed: str,
) -> None:
    doc = fill_doc({"default": default, "transports": {"docker": scopes}}, world)
    named = {"T": world.key.public, "O": world.other.public}
    for reqs in [doc["default"], *doc["transports"]["docker"].values()]:
        for req in reqs:
            if "K" in req:
                field, *keys = req.pop("K").split()
                paths = [str(named[k]) for k in keys]
                if field == "keyData":
                    req[field] = base64.b64encode(named[keys[0]].read_bytes()).decode()
                else:
                    req[field] = paths[0] if field == "keyPath" else paths
    image = world.fill(image)
    signature = world.sign(world.fill(signed))
    theirs = skopeo_verdict(world, doc, image, signature)
    ours = our_verdict(world, doc, image, signature)
    assert ours == theirs, (json.dumps(doc), image, world.fill(signed))
