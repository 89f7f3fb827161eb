"""A podman user's images: built by `podman build`, read by name from every transport podman
writes (containers-storage, docker-archive, oci-archive, oci-dir), and the README's podman
section run as written (minus the VM boot).

podman runs as root with the `vfs` driver and `--isolation chroot` (what works here), its store
in a temporary directory named by CONTAINERS_STORAGE_CONF, so nothing is left on the machine.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.runtime.errors import ImageError
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.sources import ArchiveSource
from treewalk import diff, snapshot
from unpackers import REPO, _env, assert_clean_failure, bootc_live, need_root_and

pytestmark = pytest.mark.integration


@dataclass
class Store:
    """A podman store in a temporary directory, and the environment that selects it."""

    root: Path
    runroot: Path
    env: dict[str, str]
    work: Path

    @property
    def spec(self) -> str:
        """The store as skopeo and podman name it in a reference: [driver@root+runroot]."""
        return f"[vfs@{self.root}+{self.runroot}]"

    def podman(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["podman", *args],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"podman {shlex.join(args)} failed: {done.stderr}"
        return done.stdout.strip()


def podman_store(work: Path) -> Store:
    root, runroot = work / "storage", work / "runroot"
    conf = work / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root}"\nrunroot = "{runroot}"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}
    return Store(root, runroot, env, work)


def remove_store(store: Store) -> None:
    subprocess.run(
        ["podman", "system", "reset", "--force"],
        env={**os.environ, **store.env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def context(path: Path) -> Path:
    """A build context: two COPY layers of files, a symlink, an executable, 2 MiB of data."""
    rootfs = path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "etc/os-release").write_text('ID=tiny\nPRETTY_NAME="tiny podman image"\n')
    hello = rootfs / "usr/bin/hello"
    hello.write_text("#!/bin/sh\necho hello\n")
    hello.chmod(0o755)
    (rootfs / "bin").symlink_to("usr/bin")
    (path / "data").write_bytes(random.Random(15).randbytes(2 << 20))
    (path / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\nCOPY data /var/data\n")
    return path


@dataclass
class Saved:
    store: Store
    image_id: str  # podman's image ID: the config's digest
    docker_archive: Path
    oci_archive: Path
    oci_dir: Path
    docker_dir: Path  # podman save --format docker-dir: skopeo's dir: layout
    mounted: Path  # podman image mount: the tree podman itself sees


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    need_root_and("podman", "skopeo")
    work = tmp_path_factory.mktemp("podman")
    store = podman_store(work)
    try:
        store.podman("build", "-q", "-t", "localhost/tiny:v1", str(context(work / "ctx")))
        image_id = store.podman("image", "inspect", "--format", "{{.Id}}", "localhost/tiny:v1")
        saves = {}
        formats = (
            ("docker-archive", "d.tar"),
            ("oci-archive", "o.tar"),
            ("oci-dir", "o"),
            ("docker-dir", "dd"),
        )
        for fmt, name in formats:
            saves[fmt] = work / name
            store.podman("save", "--format", fmt, "-o", str(work / name), "localhost/tiny:v1")
        mounted = Path(store.podman("image", "mount", "localhost/tiny:v1"))
        yield Saved(
            store,
            image_id,
            saves["docker-archive"],
            saves["oci-archive"],
            saves["oci-dir"],
            saves["docker-dir"],
            mounted,
        )
        store.podman("image", "unmount", "localhost/tiny:v1")
    finally:
        remove_store(store)


def sources(saved: Saved) -> list[str]:
    """Every way a podman user names the image, as podman and skopeo write the names."""
    name = "localhost/tiny:v1"
    return [
        f"containers-storage:{name}",
        f"containers-storage:{saved.store.spec}{name}",
        "containers-storage:tiny:v1",  # podman build -t tiny:v1: podman's localhost/tiny:v1
        f"containers-storage:sha256:{saved.image_id}",  # as podman images --no-trunc shows it
        f"containers-storage:{saved.image_id[:12]}",  # as podman images shows it
        f"docker-archive:{saved.docker_archive}",
        f"docker-archive:{saved.docker_archive}:{name}",
        f"docker-archive:{saved.docker_archive}:v1",  # a bare tag: the one name with it
        f"oci-archive:{saved.oci_archive}:{name}",  # the name as podman save wrote it
        f"oci-archive:{saved.oci_archive}:v1",
        f"oci-archive:{saved.oci_archive}",
        f"oci:{saved.oci_dir}:{name}",
        f"oci:{saved.oci_dir}:v1",
        f"dir:{saved.docker_dir}",
    ]


def test_every_podman_transport_gives_the_tree_podman_sees(saved: Saved, tmp_path: Path) -> None:
    # The root directory itself is the store's (vfs makes it 0555) or DEST: not the image's.
    expected = snapshot(saved.mounted)
    del expected[b"."]
    assert b"var/data" in expected and expected[b"bin"].target == b"usr/bin"
    for number, source in enumerate(sources(saved)):
        tmpdir = tmp_path / f"tmp{number}"
        tmpdir.mkdir()
        dest = tmp_path / f"root{number}"
        env = saved.store.env if "[" not in source else {}  # a store spec needs no env
        done = bootc_live("unpack", source, str(dest), tmpdir=tmpdir, env=env, timeout=120)
        assert done.returncode == 0, f"{source}: {done.stderr}"
        got = snapshot(dest)
        del got[b"."]
        assert diff(expected, got, names=("podman", source)) == []
        # The config is podman's own (its image ID), whatever the transport.
        shown = bootc_live("inspect", source, tmpdir=tmpdir, env=env, timeout=120)
        assert shown.returncode == 0, f"{source}: {shown.stderr}"
        assert f"config    sha256:{saved.image_id}\n" in shown.stdout, shown.stdout
        assert "platforms linux/amd64\n" in shown.stdout  # from the config, even without index
        assert list(tmpdir.iterdir()) == [], f"{source} left {list(tmpdir.iterdir())}"


def test_names_that_do_not_match_are_refused_with_what_there_is(
    saved: Saved, tmp_path: Path
) -> None:
    # podman save -m: two names in one docker-archive, both tagged latest
    store = saved.store
    store.podman("tag", "localhost/tiny:v1", "localhost/a:latest", "localhost/b:latest")
    multi = tmp_path / "multi.tar"
    store.podman("save", "-m", "-o", str(multi), "localhost/a:latest", "localhost/b:latest")
    said = assert_clean_failure(bootc_live("inspect", f"docker-archive:{multi}:latest"))
    assert said.strip() == (
        f"bootc-live: {multi} has several images named 'latest' (it has: localhost/a:latest, "
        f"localhost/b:latest); name one as listed: docker-archive:{multi}:NAME"
    )
    assert bootc_live("inspect", f"docker-archive:{multi}:localhost/b:latest").returncode == 0
    said = assert_clean_failure(bootc_live("inspect", f"oci-archive:{saved.oci_archive}:v2"))
    assert said.strip() == (
        f"bootc-live: oci-archive:{saved.oci_archive} has no image tagged 'v2' (tags: "
        "localhost/tiny:v1); fix the :TAG of SOURCE"
    )
    # The archive podman save writes by default, named as an oci-archive: a hint that helps.
    said = assert_clean_failure(bootc_live("inspect", f"oci-archive:{saved.docker_archive}"))
    assert said.strip() == (
        f"bootc-live: oci-archive:{saved.docker_archive} is a docker-archive, not an "
        "oci-archive; save it with podman save --format oci-archive, or read it as "
        "docker-archive:PATH"
    )
    said = assert_clean_failure(bootc_live("inspect", f"docker-archive:{saved.oci_archive}"))
    assert said.strip() == (
        f"bootc-live: {saved.oci_archive} is an oci-archive, not a docker-archive; read it as "
        f"oci-archive:{saved.oci_archive}"
    )
    said = assert_clean_failure(bootc_live("inspect", f"oci:{saved.docker_dir}"))
    assert said.strip() == (
        f"bootc-live: {saved.docker_dir} is a dir: layout (skopeo's, or podman save --format "
        f"docker-dir), not an OCI layout; read it as dir:{saved.docker_dir}"
    )
    # What the same refusal says at boot, to be done on the host first, works as said.
    converted = tmp_path / "converted.oci"
    pulled = bootc_live(
        "pull", f"docker-archive:{saved.docker_archive}", "-o", f"oci-archive:{converted}"
    )
    assert pulled.returncode == 0, pulled.stderr
    shown = bootc_live("inspect", f"oci-archive:{converted}")
    assert f"config    sha256:{saved.image_id}\n" in shown.stdout, shown.stderr
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    said = assert_clean_failure(
        bootc_live("inspect", "containers-storage:localhost/nope", tmpdir=tmpdir, env=store.env)
    )
    assert "bootc-live: containers-storage:localhost/nope: skopeo cannot read it (" in said
    assert "; check the name with podman images" in said and "skopeo copy" not in said
    assert list(tmpdir.iterdir()) == []


def test_a_tmpdir_with_a_colon_is_refused_before_skopeo_writes_anywhere(
    saved: Saved, tmp_path: Path
) -> None:
    """skopeo's oci:PATH ends PATH at a colon: with TMPDIR=/x/t:mp its copy went to /x/t, was
    left there, and the command failed naming another directory."""
    tmpdir = tmp_path / "t:mp"
    tmpdir.mkdir()
    said = assert_clean_failure(
        bootc_live("inspect", f"docker-archive:{saved.docker_archive}", tmpdir=tmpdir)
    )
    assert said == (
        f"bootc-live: {tmpdir}: skopeo cannot copy into a path with a ':'; set TMPDIR to a "
        "directory whose path has none\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["t:mp"] and os.listdir(tmpdir) == []


def test_an_archive_that_cannot_be_read_in_place_is_named_for_what_it_is(
    saved: Saved, tmp_path: Path
) -> None:
    """podman's oci-archive compressed with gzip or zstd, cut in half (podman writes index.json
    last: it looked like no oci-archive at all), or given as a pipe: one line each."""
    data = saved.oci_archive.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    packed = {}
    for tool, suffix in (("gzip", "gz"), ("zstd", "zst")):
        copy = tmp_path / f"o.tar.{suffix}"
        with copy.open("wb") as out:
            subprocess.run([tool, "-c", str(saved.oci_archive)], stdout=out, check=True)
        packed[tool] = copy
    cases = [
        (
            packed["gzip"],
            "is gzip-compressed as a whole (an oci-archive is read in place); "
            "decompress it first: gunzip FILE",
        ),
        (
            packed["zstd"],
            "is zstd-compressed as a whole (an oci-archive is read in place); "
            "decompress it first: unzstd FILE",
        ),
        (cut, "is not a valid oci-archive: unexpected end of tar data (the file is cut short)"),
    ]
    for path, reason in cases:
        tmpdir = tmp_path / f"tmp-{path.name}"
        tmpdir.mkdir()
        said = assert_clean_failure(bootc_live("inspect", f"oci-archive:{path}", tmpdir=tmpdir))
        assert said == f"bootc-live: oci-archive:{path} {reason}\n"
        assert list(tmpdir.iterdir()) == []
    read, write = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write, data[:4096]), os.close(write)))
    writer.start()
    try:
        with pytest.raises(ImageError) as err:
            ArchiveSource(f"/dev/fd/{read}")
    finally:
        writer.join()
        os.close(read)
    assert err.value.line() == (
        f"oci-archive:/dev/fd/{read} is not a regular file (a FIFO); save the "
        "archive to a file first"
    )


def test_an_encrypted_image_is_named_and_the_hint_works(saved: Saved, tmp_path: Path) -> None:
    """skopeo's ocicrypt layers (`+encrypted`): not a tar checksum error nor a RAM estimate
    read from ciphertext; decrypted as the hint says, the image unpacks."""
    key, public = tmp_path / "k.pem", tmp_path / "kpub.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], capture_output=True, check=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public)],
        capture_output=True,
        check=True,
    )
    encrypted, plain = tmp_path / "enc.tar", tmp_path / "plain.tar"
    skopeo = ["skopeo", "copy", "-q"]
    subprocess.run(
        [
            *skopeo,
            "--encryption-key",
            f"jwe:{public}",
            f"oci:{saved.oci_dir}:localhost/tiny:v1",
            f"oci-archive:{encrypted}",
        ],
        check=True,
    )
    for command in (["inspect"], ["unpack"]):
        dest = tmp_path / "refused"
        said = assert_clean_failure(
            bootc_live(
                *command,
                f"oci-archive:{encrypted}",
                *([str(dest)] if command == ["unpack"] else []),
            )
        )
        assert (
            "layer 1/2 is encrypted (application/vnd.oci.image.layer.v1.tar+gzip+encrypted); "
            in said
        )
        assert said.endswith(
            "decrypt the image first: skopeo copy --decryption-key KEY SOURCE oci-archive:FILE\n"
        ), said
        assert not dest.exists()
    subprocess.run(
        [*skopeo, "--decryption-key", str(key), f"oci-archive:{encrypted}", f"oci-archive:{plain}"],
        check=True,
    )
    dest = tmp_path / "root"
    assert bootc_live("unpack", f"oci-archive:{plain}", str(dest)).returncode == 0
    assert (dest / "usr/bin/hello").read_text() == "#!/bin/sh\necho hello\n"


def arch_context(path: Path, arch: str) -> Path:
    """A build context whose one file says which architecture it was built for."""
    (path / "rootfs").mkdir(parents=True)
    (path / "rootfs/arch").write_text(arch + "\n")
    (path / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    return path


def test_the_platform_asked_is_the_one_unpacked_whatever_the_index_says(
    saved: Saved, tmp_path: Path
) -> None:
    """podman save writes no platform in the index entry of an arm64 image: the config says
    it. Another platform asked for refuses it; none asked, the host says it is not this
    machine's and goes on (building for an arm64 board is a host's job; it was taken without
    a word); the boot refuses it (test below). A manifest list's entry `linux/arm64` is
    `linux/arm64/v8` (arm64 has no other variant), as skopeo takes it."""
    store = saved.store
    for arch in ("arm64", "amd64"):
        ctx = arch_context(tmp_path / f"ctx-{arch}", arch)
        store.podman(
            "build", "-q", "--platform", f"linux/{arch}", "-t", f"localhost/p:{arch}", str(ctx)
        )
    single = tmp_path / "arm64.tar"
    store.podman("save", "--format", "oci-archive", "-o", str(single), "localhost/p:arm64")
    dest = tmp_path / "refused"
    said = assert_clean_failure(
        bootc_live("unpack", "--platform", "linux/s390x", f"oci-archive:{single}", str(dest))
    )
    assert "is an image for linux/arm64 (its config), not for linux/s390x; choose it with " in said
    assert said.endswith("choose it with --platform linux/arm64\n"), said
    assert not dest.exists()
    dest = tmp_path / "taken"
    done = bootc_live("unpack", f"oci-archive:{single}", str(dest))
    assert done.returncode == 0, done.stderr
    assert (dest / "arch").read_text() == "arm64\n"
    assert "is an image for linux/arm64 (its config), not for this machine (linux/amd64)\n" in (
        done.stderr
    )
    with pytest.raises(ImageError) as err:  # the boot: no `foreign`, no bootc.platform=
        resolve(ArchiveSource(str(single)))
    assert err.value.line().endswith(  # the booting machine's, its processor's x86-64 level
        f"is an image for linux/arm64 (its config), not for {Platform.machine()}; choose it "
        "with bootc.platform=linux/arm64"
    ), err.value.line()
    for asked in ("linux/arm64", "linux/arm64/v8"):
        dest = tmp_path / asked.replace("/", "-")
        done = bootc_live("unpack", "--platform", asked, f"oci-archive:{single}", str(dest))
        assert done.returncode == 0, done.stderr
        assert (dest / "arch").read_text() == "arm64\n"
    store.podman("manifest", "create", "localhost/list:v1")
    for arch in ("amd64", "arm64"):
        store.podman(
            "manifest", "add", "localhost/list:v1", f"containers-storage:localhost/p:{arch}"
        )
    listed = tmp_path / "list.tar"
    store.podman("manifest", "push", "--all", "localhost/list:v1", f"oci-archive:{listed}")
    for asked, arch in (("linux/arm64/v8", "arm64"), ("linux/amd64", "amd64")):
        dest = tmp_path / f"list-{arch}"
        done = bootc_live("unpack", "--platform", asked, f"oci-archive:{listed}", str(dest))
        assert done.returncode == 0, done.stderr
        assert (dest / "arch").read_text() == f"{arch}\n"
    # Pulled for arm64 (on a build host, for a board): the index is kept whole (signatures
    # sign it), the amd64 image's blobs are not there. Read back for amd64: which one is.
    part = tmp_path / "arm64-of-list.tar"
    pulled = bootc_live(
        "pull", "--platform", "linux/arm64", f"oci-archive:{listed}", "-o", f"oci-archive:{part}"
    )
    assert pulled.returncode == 0, pulled.stderr
    said = assert_clean_failure(bootc_live("inspect", f"oci-archive:{part}"))
    assert said == (
        f"bootc-live: oci-archive:{part} holds its index only in part: not its image for "
        "linux/amd64 (it holds linux/arm64); choose one with --platform linux/arm64\n"
    )
    shown = bootc_live("inspect", "--platform", "linux/arm64", f"oci-archive:{part}")
    assert shown.returncode == 0, shown.stderr


def readme_podman_commands() -> list[str]:
    """The shell block of the README's podman section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From podman build to a live boot") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's podman section has no sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_readme_podman_section_works_as_written(tmp_path: Path) -> None:
    """podman build, then bootc-live build from containers-storage (the VM boot is left out).

    The image is tiny and has no kernel, so `build` gets `--host` (the README says when), and
    warns that the image has no kernel; dracut's run is long enough to show progress lines.
    """
    need_root_and("podman", "skopeo", "dracut")
    commands = readme_podman_commands()
    assert [c.split()[:3] for c in commands] == [
        ["podman", "build", "-t"],
        ["sudo", "bootc-live", "build"],
        ["bootc-live", "vm", "out"],
    ]
    store = podman_store(tmp_path)
    try:
        podman_build = shlex.split(commands[0].replace(" .", f" {context(tmp_path / 'ctx')}"))
        store.podman(*podman_build[1:])
        out = tmp_path / "out"
        build = [*shlex.split(commands[1])[2:], "--host"]
        build = [str(out) if arg == "out" else arg for arg in build]
        env = {**store.env, "BOOTC_LIVE_PROGRESS_SECONDS": "3"}
        done = bootc_live(*build, tmpdir=tmp_path, env=env, timeout=180)
        assert done.returncode == 0, done.stderr
        assert {p.name for p in out.iterdir()} >= {"vmlinuz", "initrd.img", "rootfs.img"}
        said = done.stderr
        assert re.search(
            r"^bootc-live: warning: the image has no kernel \(looked in "
            r"/usr/lib/modules/KVER/vmlinuz, ",
            said,
            re.M,
        ), said
        ticks = re.findall(
            r"^bootc-live: building initrd.img with the host's dracut "
            r"\(kernel [^)]+\)… (\d+)s$",
            said,
            re.M,
        )
        assert len(ticks) >= 2 and int(ticks[1]) > int(ticks[0]), said  # live, and counting
        assert re.search(r"host's dracut \(kernel [^)]+\): done in \d+s$", said, re.M), said
        assert "+ dracut" not in said and "--confdir" not in said  # no internal command line
        assert not list(tmp_path.glob("bootc-live-copy.*"))  # skopeo's copy is gone
    finally:
        remove_store(store)


def test_a_copy_that_cannot_be_written_is_told_as_tmpdirs_not_the_names(
    saved: Saved, tmp_path: Path
) -> None:
    """A short name is tried as podman's localhost/NAME, then as skopeo reads it: a copy of
    the first that failed for want of space in $TMPDIR was told as the second's 'does not
    resolve to an image ID', with 'check the name with podman images'."""
    need_root_and("unshare", "mount")
    full = tmp_path / "full"
    full.mkdir()
    command = [sys.executable, "-m", "bootc_live", "inspect", "containers-storage:tiny:v1"]
    where = shlex.quote(str(full))
    mounted = (
        f'mount -t tmpfs -o size=256k tmpfs {where} || exit 99; "$@"; said=$?; '
        f'echo "left: $(ls -A {where})"; exit $said'
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounted, "sh", *command],
        env={**_env(full), **saved.store.env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = assert_clean_failure(done)
    assert said.startswith(
        f"bootc-live: containers-storage:tiny:v1: skopeo could not write its copy in {full} ("
    ), said
    assert "no space left on device" in said and "docker.io" not in said, said
    assert said.endswith(
        "free space there, or set TMPDIR to a directory with room for the image\n"
    ), said
    assert len(said.splitlines()) == 1
    assert done.stdout == "left: \n"  # the copy begun in the full tmpfs is removed


def test_a_reading_copy_keeps_podmans_manifest_and_its_digest(saved: Saved, tmp_path: Path) -> None:
    """`--dest-decompress` is skopeo's for dir: alone: into the oci: copy every layer was
    gzipped (a pass over the whole image) and the manifest rewritten, so the digest podman
    shows was 'not the pinned' one for --digest. The copy keeps podman's manifest."""
    store = saved.store
    store.podman("tag", "localhost/tiny:v1", "localhost/digest:v1")
    digest = store.podman("image", "inspect", "--format", "{{.Digest}}", "localhost/digest:v1")
    shown = bootc_live(
        "inspect", "--digest", digest, "containers-storage:localhost/digest:v1", env=store.env
    )
    assert shown.returncode == 0, shown.stderr
    assert f"image     {digest}\n" in shown.stdout
    assert re.search(r"^layer 1/2 \S+  [\d.]+ MiB uncompressed$", shown.stdout, re.M), shown.stdout


def test_a_pull_pinned_to_podmans_digest_checks_it_then_compresses(
    saved: Saved, tmp_path: Path
) -> None:
    """pull and build gzip skopeo's copy (its manifest then has a digest of its own): the
    digest podman shows was 'not the pinned' one. It is checked on an uncompressed copy,
    which is then compressed; a digest that is not podman's stops with nothing left behind."""
    store = saved.store
    store.podman("tag", "localhost/tiny:v1", "localhost/pinned:v1")
    digest = store.podman("image", "inspect", "--format", "{{.Digest}}", "localhost/pinned:v1")
    source = "containers-storage:localhost/pinned:v1"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "pinned.tar"
    done = bootc_live(
        "pull", source, "--digest", digest, "-o", f"oci-archive:{out}", env=store.env, tmpdir=tmp
    )
    assert done.returncode == 0, done.stderr
    pulled = done.stdout.split()[0]
    assert pulled.startswith("sha256:") and pulled != digest  # the gzip copy's own manifest
    archive = ArchiveSource(str(out))
    try:
        image = resolve(archive)
        assert [layer.media_type.endswith("+gzip") for layer in image.layers] == [True, True]
    finally:
        archive.close()
    other = "sha256:" + "1" * 64
    refused = bootc_live(
        "pull",
        source,
        "--digest",
        other,
        "-o",
        f"oci-archive:{tmp_path / 'no.tar'}",
        env=store.env,
        tmpdir=tmp,
    )
    said = assert_clean_failure(refused)
    assert said == (
        f"bootc-live: {source}: image digest is {digest}, not the pinned {other}; the image "
        "changed: update --digest or rebuild the boot entry\n"
    )
    assert not (tmp_path / "no.tar").exists() and list(tmp.iterdir()) == []


def test_a_dir_holding_a_manifest_list_gives_the_platform_asked(
    saved: Saved, tmp_path: Path
) -> None:
    """`skopeo copy --all` into dir: keeps a manifest list; skopeo's copy was of this
    machine's image whatever --platform asked, and the refusal named the other one. A
    platform it does not have is told with those it has, as for a layout (it was skopeo's
    'no image found in image index for architecture s390x …', which names none)."""
    store = saved.store
    for arch in ("arm64", "amd64"):
        ctx = arch_context(tmp_path / f"ctx-{arch}", arch)
        store.podman(
            "build", "-q", "--no-cache", "--platform", f"linux/{arch}",
            "-t", f"localhost/dl:{arch}", str(ctx),
        )  # fmt: skip
    store.podman("manifest", "create", "localhost/dlist:v1")
    for arch in ("amd64", "arm64"):
        store.podman(
            "manifest", "add", "localhost/dlist:v1", f"containers-storage:localhost/dl:{arch}"
        )
    listed, layout = tmp_path / "list.tar", tmp_path / "dir"
    store.podman("manifest", "push", "--all", "localhost/dlist:v1", f"oci-archive:{listed}")
    copy = ["skopeo", "--insecure-policy", "copy", "-q", "--all"]
    subprocess.run([*copy, f"oci-archive:{listed}", f"dir:{layout}"], check=True)
    for asked, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64"), (None, "amd64")):
        dest = tmp_path / f"root-{arch}-{asked is None}"
        platform = ["--platform", asked] if asked else []
        done = bootc_live("unpack", *platform, f"dir:{layout}", str(dest), tmpdir=tmp_path)
        assert done.returncode == 0, done.stderr
        assert (dest / "arch").read_text() == f"{arch}\n"
    said = assert_clean_failure(
        bootc_live("inspect", "--platform", "linux/s390x", f"dir:{layout}", tmpdir=tmp_path)
    )
    assert said == (
        f"bootc-live: dir:{layout} has no image for platform linux/s390x (offers: linux/amd64, "
        "linux/arm64); choose one with --platform linux/amd64\n"
    ), said
    assert not list(tmp_path.glob("bootc-live-copy.*"))
    # The list in podman's store: skopeo 1.9 reads the list, not its images from the store.
    done = bootc_live(
        "inspect", "--platform", "linux/arm64", "containers-storage:localhost/dlist:v1",
        env=store.env, tmpdir=tmp_path,
    )  # fmt: skip
    if done.returncode != 0:
        said = assert_clean_failure(done)
        assert said.endswith(
            "write the list out first: podman manifest push --all localhost/dlist:v1 "
            "oci-archive:FILE, then read oci-archive:FILE (with --platform), or name the "
            "platform's image itself\n"
        ), said
    assert not list(tmp_path.glob("bootc-live-copy.*"))


def test_a_store_that_is_not_there_is_refused_and_not_made(tmp_path: Path) -> None:
    """skopeo makes a new, empty store at a ROOT (and RUNROOT) that is not there: a typo in
    containers-storage:[vfs@ROOT+RUNROOT]NAME left both directories behind."""
    need_root_and("skopeo")
    for spec in ("vfs@{root}+{run}", "overlay@{root}+{run}:overlay.mountopt=nodev", "{root}"):
        root, run = tmp_path / "typo", tmp_path / "run"
        source = f"containers-storage:[{spec.format(root=root, run=run)}]localhost/x:1"
        said = assert_clean_failure(bootc_live("inspect", source, tmpdir=tmp_path))
        assert said == (
            f"bootc-live: {source}: {root}, the store's ROOT, is no directory; fix the store's "
            "path (podman info --format {{.Store.GraphRoot}} shows it)\n"
        )
        assert sorted(os.listdir(tmp_path)) == []
