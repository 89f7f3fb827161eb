"""registries.d: the YAML subset (what it reads exactly, what it refuses with file:line), the
merge of several files, and which section gives an image its lookaside store. Where skopeo
writes signatures for the same configuration is checked in test_signatures.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_live.runtime.policy import DockerReference
from bootc_live.runtime.registriesd import (
    BUILTIN_LOOKASIDE,
    RegistriesD,
    RegistriesDError,
    Section,
    parse_yaml,
    signature_url,
    signature_urls,
)
from fakeregistry import REPO, TAG, Knobs, serve
from imagegen import build_layout, f, layer_tar

DIGEST = "sha256:" + "ab" * 32


def test_the_yaml_subset_reads_nested_mappings_strings_and_booleans() -> None:
    text = (
        "# registries.d\n"
        "default-docker:\n"
        "  lookaside: https://sigs.example/store   # a comment\n"
        "\n"
        "docker:\n"
        "    registry.example.com:5000/team:\n"
        "        lookaside: 'file:///srv/it''s here'\n"
        '        lookaside-staging: "file:///srv/staging#1"\n'
        "        use-sigstore-attachments: true\n"
        "    localhost:5000:\n"
        "        use-sigstore-attachments: False\n"
        "    empty.example:\n"
        "other: ~\n"
    )
    assert parse_yaml(text, "x.yaml") == {
        "default-docker": {"lookaside": "https://sigs.example/store"},
        "docker": {
            "registry.example.com:5000/team": {
                "lookaside": "file:///srv/it's here",
                "lookaside-staging": "file:///srv/staging#1",
                "use-sigstore-attachments": True,
            },
            "localhost:5000": {"use-sigstore-attachments": False},
            "empty.example": None,
        },
        "other": None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("docker:\n\tquay.io:\n", "x.yaml:2: indented with a tab (YAML allows only spaces)"),
        ("a:\n  b: 1\n c: 2\n", "x.yaml:3: indentation does not match any mapping above"),
        ("a: 1\n  b: 2\n", "x.yaml:2: indentation does not match any mapping above"),
        ("a: 1\na: 2\n", "x.yaml:2: a appears twice in one mapping"),
        ("- a\n", "x.yaml:1: only mappings of keys to values are read here"),
        ("a: 1\n---\nb: 2\n", "x.yaml:2: a second YAML document (one is read here)"),
        ("--- a: 1\n", "x.yaml:1: only mappings of keys to values are read here"),
        ("a: [1, 2]\n", "x.yaml:1: [1, 2] is beyond the YAML read here"),
        ("a: {b: c}\n", "x.yaml:1: {b: c} is beyond the YAML read here"),
        ("a: &anchor x\n", "x.yaml:1: &anchor x is beyond the YAML read here"),
        ("a: *anchor\n", "x.yaml:1: *anchor is beyond the YAML read here"),
        ("a: !!str x\n", "x.yaml:1: !!str x is beyond the YAML read here"),
        ("a: |\n  text\n", "x.yaml:1: | is beyond the YAML read here"),
        ("a: 'open\n", "x.yaml:1: a quoted string is not closed on its line"),
        ('a: "x" y\n', "x.yaml:1: text after a quoted string"),
        ('a: "\\q"\n', "x.yaml:1: the escape \\q is not read here"),
        ("just text\n", "x.yaml:1: expected `key: value`"),
        ("'key' x: 1\n", "x.yaml:1: expected `:` after the key"),
    ],
)
def test_what_the_yaml_subset_refuses(text: str, message: str) -> None:
    with pytest.raises(RegistriesDError) as err:
        parse_yaml(text, "x.yaml")
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("docker: x\n", "a.yaml:1: docker must be a mapping of scopes"),
        ("default-docker: x\n", "a.yaml:1: default-docker must be a mapping"),
        (
            "docker:\n  q.io:\n    lookaside: /srv/sigs\n",
            "a.yaml:3: docker.q.io.lookaside must be a file://, http:// or https:// URL",
        ),
        (
            "docker:\n  q.io:\n    sigstore: ftp://x/\n",
            "a.yaml:3: docker.q.io.sigstore must be a file://, http:// or https:// URL",
        ),
        (
            "default-docker:\n  use-sigstore-attachments: 'true'\n",
            "a.yaml:2: default-docker.use-sigstore-attachments must be true or false",
        ),
        (
            "default-docker:\n  Use-Sigstore-Attachments: yEs\n",  # not YAML 1.1's
            "a.yaml:2: default-docker.Use-Sigstore-Attachments must be true or false",
        ),
        (
            "docker:\n  q.io:\n    lookaside: true\n",
            "a.yaml:3: docker.q.io.lookaside must be a file://",
        ),
        (
            "docker:\n  q.io:\n    lookaside: file:///srv/sigs%00/x\n",
            "a.yaml:3: docker.q.io.lookaside: its path has a NUL or bytes that are not UTF-8",
        ),
        (
            "default-docker:\n  lookaside-staging: https://s.example/%ff\n",
            "a.yaml:2: default-docker.lookaside-staging: its path has a NUL or bytes that are not",
        ),
        (
            "default-docker:\n  lookaside: file:///a\n  LookAside: file:///b\n",
            "a.yaml:3: LookAside sets default-docker.lookaside, as lookaside does (a.yaml:2): "
            "keep one",
        ),
        (
            "Docker:\n  q.io:\ndocker:\n  r.io:\n",
            "a.yaml:3: docker sets docker, as Docker does (a.yaml:1): keep one",
        ),
    ],
)
def test_malformed_sections_are_errors(text: str, message: str) -> None:
    with pytest.raises(RegistriesDError) as err:
        RegistriesD.parse({"a.yaml": text})
    assert str(err.value).startswith(message)


def test_two_files_may_not_configure_the_same_thing() -> None:
    with pytest.raises(RegistriesDError) as err:
        RegistriesD.parse(
            {
                "a.yaml": "default-docker:\n  lookaside: file:///a\n",
                "b.yaml": "default-docker:\n  x:\n",
            }
        )
    assert str(err.value) == '"default-docker" is defined both in a.yaml and b.yaml'
    with pytest.raises(RegistriesDError) as err:
        RegistriesD.parse({"a.yaml": "docker:\n  q.io:\n", "b.yaml": "docker:\n  q.io:\n"})
    assert str(err.value) == "q.io is configured both in a.yaml and b.yaml"


CONFIG = {
    "a.yaml": (
        "default-docker:\n"
        "  lookaside: https://default.example/sigs\n"
        "docker:\n"
        "  registry.example.com:\n"
        "    lookaside: https://host.example/sigs\n"
        "    lookaside-staging: file:///staging/host\n"
        "  registry.example.com/team:\n"
        "    sigstore: https://team.example/old-name\n"
        "    use-sigstore-attachments: true\n"
    ),
    "b.yaml": (
        "docker:\n"
        "  registry.example.com/team/app:v1:\n"
        "    use-sigstore-attachments: false\n"
        "  registry.example.com/team/web:\n"
        "    lookaside: file:///srv/web/\n"
        "  '*.example.org':\n"
        "    lookaside: http://wild.example/sigs\n"
    ),
}


@pytest.mark.parametrize(
    ("ref", "read", "write", "attachments"),
    [
        # The most specific scope that sets a URL gives it: app:v1 sets none, team does.
        (
            "registry.example.com/team/app:v1",
            "https://team.example/old-name/team/app",
            "https://team.example/old-name/team/app",
            False,
        ),
        (
            "registry.example.com/team/app:v2",
            "https://team.example/old-name/team/app",
            "https://team.example/old-name/team/app",
            True,
        ),
        (
            f"registry.example.com/team/app@{DIGEST}",
            "https://team.example/old-name/team/app",
            "https://team.example/old-name/team/app",
            True,
        ),
        # A trailing slash is kept, as containers/image keeps it.
        (
            "registry.example.com/team/web:1",
            "file:///srv/web//team/web",
            "file:///srv/web//team/web",
            True,
        ),
        (
            "registry.example.com/other/x:1",
            "https://host.example/sigs/other/x",
            "file:///staging/host/other/x",
            False,
        ),
        ("sub.example.org/x:1", "http://wild.example/sigs/x", "http://wild.example/sigs/x", False),
        (
            "registry.example.com:5000/x:1",
            "https://default.example/sigs/x",
            "https://default.example/sigs/x",
            False,
        ),
        (
            "busybox:latest",
            "https://default.example/sigs/library/busybox",
            "https://default.example/sigs/library/busybox",
            False,
        ),
    ],
)
def test_the_most_specific_section_applies(
    ref: str, read: str, write: str, attachments: bool
) -> None:
    config = RegistriesD.parse(CONFIG)
    image = DockerReference.parse(ref)
    assert config.lookaside(image) == read
    assert config.lookaside(image, write=True) == write
    assert config.use_sigstore_attachments(image) is attachments


def test_without_configuration_the_builtin_store_and_no_attachments() -> None:
    config = RegistriesD.parse({})
    image = DockerReference.parse("quay.io/a/b:c")
    assert config.lookaside(image) == f"{BUILTIN_LOOKASIDE}/a/b"
    assert config.use_sigstore_attachments(image) is False


def test_load_reads_every_yaml_file_of_the_directory(tmp_path: Path) -> None:
    assert RegistriesD.load(str(tmp_path / "missing")) == RegistriesD({})
    (tmp_path / "a.yaml").write_text("docker:\n  q.io:\n    lookaside: file:///a\n")
    (tmp_path / "notes.txt").write_text("not: [yaml")
    (tmp_path / "b.yml").write_text("not read either: [")
    assert RegistriesD.load(str(tmp_path)) == RegistriesD(
        {"q.io": Section(str(tmp_path / "a.yaml"), lookaside="file:///a")}
    )
    (tmp_path / "c.yaml").write_bytes(b"docker: \xff\n")
    with pytest.raises(RegistriesDError, match=r"c\.yaml: not UTF-8 text"):
        RegistriesD.load(str(tmp_path))


def test_signature_urls() -> None:
    base = "https://sigs.example/store/team/app"
    assert signature_url(base, DIGEST, 1) == f"{base}@sha256={'ab' * 32}/signature-1"
    urls = signature_urls(base, DIGEST)
    assert [next(urls) for _ in range(3)] == [
        f"{base}@sha256={'ab' * 32}/signature-{n}" for n in (1, 2, 3)
    ]
    assert signature_url("file:///srv/sigs/a", DIGEST, 12).endswith(
        "a@sha256=" + "ab" * 32 + "/signature-12"
    )


def test_files_skopeo_reads_are_read_alike() -> None:
    """A `---` before the document, and a staging store given as a directory, as the man
    page's example has it: skopeo reads both; they were refused, and with them every boot."""
    text = (
        "# the signature stores\n"
        "---\n"
        "docker:\n"
        "  privateregistry.com:\n"
        "    lookaside: http://privateregistry.com/sigstore/\n"
        "    lookaside-staging: /mnt/nfs/privateregistry/sigstore\n"
    )
    config = RegistriesD.parse({"a.yaml": text})
    ref = DockerReference.parse("privateregistry.com/app:v1")
    assert config.lookaside(ref) == "http://privateregistry.com/sigstore//app"
    assert config.lookaside(ref, write=True) == "file:///mnt/nfs/privateregistry/sigstore/app"
    with pytest.raises(RegistriesDError) as err:
        RegistriesD.parse({"a.yaml": "---\ndefault-docker:\n---\ndocker:\n"})
    assert str(err.value) == "a.yaml:3: a second YAML document (one is read here)"
    with pytest.raises(RegistriesDError) as err:
        RegistriesD.parse({"a.yaml": "default-docker:\n  lookaside-staging: mnt/relative\n"})
    assert "must be a file://, http:// or https:// URL" in str(err.value)


# What skopeo (containers/image) reads from the same files: which store it reads an image's
# signatures from, and whether it asks for the sigstore attachment tag.

SKOPEO_READS = [
    # Names match whatever their case (Go's encoding/json), U+017F standing for s.
    "default-docker:\n  Lookaside: file://@T@/A\n",
    "Default-Docker:\n  lookaside: file://@T@/A\n",
    "default-docker:\n  u\u017fe-\u017figstore-attachments: true\n",
    # A byte order mark before the first name, and CRLF line ends.
    "\ufeffdefault-docker:\r\n  lookaside: file://@T@/A\r\n",
    # Names it does not know are passed over, at any level.
    "unknown: 1\ndefault-docker:\n  lookaside: file://@T@/A\n  lookasid: file://@T@/B\n",
    # Empty and null values are not set: a less specific section's apply.
    "default-docker:\n  lookaside: file://@T@/A\ndocker:\n  @H@:\n    lookaside: ''\n",
    "default-docker:\n  lookaside: file://@T@/A\ndocker:\n  @H@:\n    lookaside:\n",
    "default-docker:\n  use-sigstore-attachments:\n",
    # YAML 1.1's booleans.
    "default-docker:\n  use-sigstore-attachments: yes\n",
    "default-docker:\n  use-sigstore-attachments: On\n",
    "default-docker:\n  use-sigstore-attachments: y\n",
    "docker:\n  @H@:\n    use-sigstore-attachments: off\ndefault-docker:\n"
    "  use-sigstore-attachments: true\n",
    # The most specific scope that sets a value; a host without its port is another.
    "docker:\n  @H@/x:\n    lookaside: file://@T@/B\n  '*.0.1':\n    lookaside: file://@T@/C\n"
    "  127.0.0.1:\n    lookaside: file://@T@/D\n",
    "docker:\n  '*.0.1':\n    lookaside: file://@T@/C\n  127.0.0.1:\n    lookaside: file://@T@/D\n",
    "default-docker:\n  sigstore: file://@T@/B\n  lookaside: file://@T@/A\n",
    # A null default-docker is none: another file may define it.
    {"a.yaml": "default-docker:\n", "b.yaml": "default-docker:\n  lookaside: file://@T@/B\n"},
]


@pytest.fixture(scope="module")
def skopeo_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A registry serving x/y:v1, and file stores A … D each holding a signature-1 for it
    that names its store; (where the stores are, the registry's host)."""
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo")
    tmp = tmp_path_factory.mktemp("skopeo-registriesd")
    digest = build_layout(tmp / "layout", [layer_tar([f("etc/motd", b"hi\n")])]).manifest_digest
    for store in "ABCD":
        where = tmp / store / f"{REPO}@{digest.replace(':', '=')}"
        where.mkdir(parents=True)
        (where / "signature-1").write_text(store)
    with serve(tmp / "layout", Knobs()) as registry:
        yield tmp, registry.host


@pytest.mark.parametrize("files", SKOPEO_READS)
def test_skopeo_reads_the_same_store_and_attachments(
    files: str | dict[str, str], skopeo_registry: tuple[Path, str], tmp_path: Path
) -> None:
    stores, host = skopeo_registry
    texts = {"a.yaml": files} if isinstance(files, str) else files
    texts = {n: t.replace("@T@", str(stores)).replace("@H@", host) for n, t in texts.items()}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    done = subprocess.run(
        ["skopeo", "copy", "--policy", str(tmp_path / "policy.json"),
         "--registries.d", str(tmp_path), "--src-tls-verify=false", "--debug",
         f"docker://{host}/{REPO}:{TAG}", f"dir:{tmp_path}/out"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # skopeo fails at our signature-N (not a signature), before it would look for attachments:
    # the message names the file it read. With no store of ours, it asks for the attachments
    # tag when it reads them.
    read = re.search(rf"{re.escape(str(stores))}/([A-D])/{REPO}@", done.stderr)
    asked = re.search(rf"/v2/{REPO}/manifests/sha256-[0-9a-f]{{64}}\.sig", done.stderr)
    config = RegistriesD.parse(texts)
    ref = DockerReference.parse(f"{host}/{REPO}:{TAG}")
    url = config.lookaside(ref)
    store = url.removeprefix(f"file://{stores}/")[0] if str(stores) in url else None
    if read:
        assert store == read.group(1), done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert (store, config.use_sigstore_attachments(ref)) == (None, bool(asked))
