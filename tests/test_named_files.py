"""Files read by a name a user, an image or a command line gives: a FIFO with nobody writing,
/dev/zero, a directory, /dev/null are refused at once with one line naming the file and the
next step (sources.read_file, sources.open_file); nothing waits, nothing is read without end,
no descriptor is left open. Each reader is given each kind; a dangling link is a missing file.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from bootc_live import cli, pushpacked
from bootc_live.images import CopiedSource, SourceRef
from bootc_live.runtime import (
    cmdline,
    handover,
    http,
    modules,
    policy,
    registriesd,
    registry,
    tools,
)
from bootc_live.runtime.cmdline import ImageLocation
from bootc_live.runtime.errors import BootcLiveError
from bootc_live.runtime.oci import Image
from bootc_live.runtime.sources import LayoutSource
from servers import hard_timeout
from test_cmdline import dracut_getarg

KINDS = {
    "fifo": "a FIFO",
    "/dev/zero": "a character device",
    "/dev/null": "a character device",
    "directory": "a directory",
}


def make(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: open() for reading waits for a writer
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(path.parent / "nothing-here")
    else:
        path.symlink_to(kind)


def refusal(read: Callable[[], object]) -> str:
    """The one line `read` fails with, within 10 s, leaving no descriptor open."""
    before = sorted(os.listdir("/proc/self/fd"))
    with hard_timeout(10), pytest.raises((BootcLiveError, argparse.ArgumentTypeError)) as caught:
        read()
    assert sorted(os.listdir("/proc/self/fd")) == before
    err = caught.value
    return err.line() if isinstance(err, BootcLiveError) else str(err)


@pytest.mark.parametrize("kind", KINDS)
def test_policy_json(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "policy.json"
    make(path, kind)
    said = refusal(lambda: policy.Policy.load(str(path)))
    assert said == f"policy {path} is not a regular file ({KINDS[kind]}); fix bootc.policy="


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_registries_d_yaml(tmp_path: Path, kind: str) -> None:
    (tmp_path / "a.yaml").write_text("docker: {}\n")
    path = tmp_path / "b.yaml"
    make(path, kind)
    said = refusal(lambda: registriesd.RegistriesD.load(str(tmp_path)))
    assert said == (
        f"{path} is not a regular file ({KINDS[kind]}); make it a regular file, or remove it"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_auth_json(tmp_path: Path, kind: str) -> None:
    """bootc.registry.auth=, --authfile, $REGISTRY_AUTH_FILE and the places podman looks in
    are all read by read_auth_file."""
    path = tmp_path / "auth.json"
    make(path, kind)
    said = refusal(lambda: registry.read_auth_file(str(path)))
    assert said == (
        f"credentials file {path} is not a regular file ({KINDS[kind]}); "
        "make it a regular file, or name another"
    )


def test_a_registries_d_yaml_linked_to_dev_null_is_empty(tmp_path: Path) -> None:
    """A link to /dev/null masks a file; containers/image reads it as empty (os.ReadFile)."""
    (tmp_path / "a.yaml").write_text("default-docker:\n  lookaside: file:///sigs\n")
    make(tmp_path / "b.yaml", "/dev/null")
    loaded = quietly(lambda: registriesd.RegistriesD.load(str(tmp_path)))
    a = tmp_path / "a.yaml"
    assert loaded == registriesd.RegistriesD.parse({str(a): a.read_text()})
    assert loaded != registriesd.RegistriesD.parse({})


@pytest.mark.parametrize("where", ["cmdline.d", "etc/cmdline"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_cmdline_files(tmp_path: Path, kind: str, where: str) -> None:
    """A FIFO in /etc/cmdline.d stopped the boot for ever; /dev/zero filled the memory."""
    proc = tmp_path / "proc-cmdline"
    proc.write_text("quiet\n")
    conf_dir = tmp_path / "cmdline.d"
    conf_dir.mkdir()
    (conf_dir / "10-a.conf").write_text("rd.debug\n")
    path = conf_dir / "20-b.conf" if where == "cmdline.d" else tmp_path / "cmdline"
    make(path, kind)
    said = refusal(lambda: cmdline.read(str(proc), str(conf_dir), str(tmp_path / "cmdline")))
    assert said == (
        f"command-line file {path} is not a regular file ({KINDS[kind]}); "
        "remove it from the initramfs"
    )


def test_masked_and_directory_cmdline_files_are_empty_as_to_dracut(tmp_path: Path) -> None:
    """dracut's getcmdline reads a link to /dev/null (a masked file), a directory (its read
    fails with EISDIR) and a socket (the redirection fails) as empty, and goes on: so does
    the runtime, which must agree with the hooks. dracut-lib.sh's own getarg is the oracle."""
    conf = tmp_path / "etc/cmdline.d"
    conf.mkdir(parents=True)
    (conf / "10-a.conf").write_text("bootclabel=a\n")
    make(conf / "20-masked.conf", "/dev/null")
    make(conf / "30-dir.conf", "directory")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(conf / "40-socket.conf"))
    make(tmp_path / "etc/cmdline", "/dev/null")
    proc = tmp_path / "proc-cmdline"
    proc.write_text("root=bootc-live:/x.oci\n")
    spec = quietly(lambda: cmdline.read(str(proc), str(conf), str(tmp_path / "etc/cmdline")))
    getarg = dracut_getarg(tmp_path, proc, said_ok=True)  # bash's read errors: its words
    said = {name: getarg(name) for name in ("bootclabel", "root")}
    assert said == {"bootclabel": "a", "root": "bootc-live:/x.oci"}
    assert spec.label == "a"
    assert spec.image == ImageLocation("path", "/x.oci")


def test_cmdline_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmdline, "CMDLINE_LIMIT", 1000)
    proc = tmp_path / "proc-cmdline"
    proc.write_text("quiet\n")
    (tmp_path / "cmdline").write_text("rd.debug " * 200)
    said = refusal(lambda: cmdline.read(str(proc), str(tmp_path), str(tmp_path / "cmdline")))
    assert said == (
        f"command-line file {tmp_path / 'cmdline'} is larger than 1000 bytes; "
        "remove it from the initramfs"
    )


def test_cmdline_files_read_as_before(tmp_path: Path) -> None:
    """What dracut's getcmdline gives is unchanged: CR and CRLF end lines as text mode made
    them, a dangling conf is skipped (the shell's `<` fails and the loop goes on)."""
    proc = tmp_path / "proc-cmdline"
    proc.write_text("quiet\n")
    (tmp_path / "10-a.conf").write_bytes(b"rd.debug\r\nrd.shell\rrd.info\n")
    make(tmp_path / "20-b.conf", "dangling")
    lines = cmdline._lines(str(proc), str(tmp_path), str(tmp_path / "none"))
    assert lines == [["rd.debug", "rd.shell", "rd.info"], [], ["quiet"]]


@pytest.mark.parametrize("kind", KINDS)
def test_ca_option(tmp_path: Path, kind: str) -> None:
    """--ca FILE (and the same check wherever a file is given on the command line)."""
    path = tmp_path / "ca.pem"
    make(path, kind)
    said = refusal(lambda: cli._readable_file(str(path)))
    if kind == "directory":  # open() says so itself, as before
        assert said == f"{path}: Is a directory"
    else:
        assert said == (
            f"{path} is not a regular file ({KINDS[kind]}); make it a regular file, or name another"
        )


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_ca_bundle_of_a_connection(tmp_path: Path, kind: str) -> None:
    """The CA bundle an https connection trusts (bootc.ca=, --ca): OpenSSL read a FIFO's
    name and waited for ever."""
    path = tmp_path / "ca.pem"
    make(path, kind)
    client = http.Client("https://127.0.0.1:9/v2/", http.Policy(), print, cafile=str(path))
    said = refusal(client._context)
    assert said == (
        f"CA bundle {path} is not a regular file ({KINDS[kind]}); "
        "make it a regular file, or name another"
    )


@pytest.mark.parametrize(
    "read",
    [
        lambda p: policy.Policy.load(str(p)),
        lambda p: registry.read_auth_file(str(p)),
    ],
    ids=["policy", "auth"],
)
def test_a_dangling_link_is_a_missing_file(tmp_path: Path, read: Callable[[Path], object]) -> None:
    path = tmp_path / "file.json"
    make(path, "dangling")
    said = refusal(lambda: read(path))
    assert f"{path}: no such policy file" in said or f"{path} is missing" in said


# Files of the initramfs the runtime reads to free memory or to trust a kexec handover: one
# that is not a regular file is as none (nothing freed, everything verified), not a boot that
# waits for ever or fills the memory.


def quietly(read: Callable[[], object]) -> object:
    """What `read` gives, within 10 s, leaving no descriptor open."""
    before = sorted(os.listdir("/proc/self/fd"))
    with hard_timeout(10):
        got = read()
    assert sorted(os.listdir("/proc/self/fd")) == before
    return got


@pytest.mark.parametrize("kind", [*KINDS, "dangling"])
def test_modules_dep(tmp_path: Path, kind: str) -> None:
    proc = tmp_path / "modules"
    proc.write_text("")
    (tmp_path / "vfat.ko").write_bytes(b"m")
    make(tmp_path / "modules.dep", kind)
    assert quietly(lambda: modules.unused(str(tmp_path), str(proc))) == modules.Unused()


@pytest.mark.parametrize("kind", [*KINDS, "dangling"])
def test_tools_manifest(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "tools.json"
    make(path, kind)
    assert quietly(lambda: tools.read_manifest(str(path))) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_kexec_record(tmp_path: Path, kind: str) -> None:
    (tmp_path / handover.IMAGE_DIR).mkdir(parents=True)
    make(tmp_path / handover.RECORD, kind)
    image = cast(Image, SimpleNamespace(manifest_digest="sha256:" + "1" * 64))
    said: list[str] = []
    layout = str(tmp_path / handover.IMAGE_DIR)
    expected = "sha256:" + "2" * 64
    got = quietly(
        lambda: handover.trust_previous_stage(image, layout, expected, said.append, str(tmp_path))
    )
    assert got is image
    assert said == [
        f"bootc.kexec.verified={expected} matches no record of this image: verifying all"
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_index_json_of_a_layout(tmp_path: Path, kind: str) -> None:
    """It was 'not an OCI image layout (no index.json)': the file is there, and is no file."""
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    make(tmp_path / "index.json", kind)
    said = refusal(lambda: LayoutSource(str(tmp_path)))
    assert said == (
        f"oci:{tmp_path}: index.json is not a regular file ({KINDS[kind]}); "
        "copy the layout again (skopeo copy … oci:DIR)"
    )


@pytest.mark.parametrize("name", ["packed.img.json", "packed.json"])
@pytest.mark.parametrize("kind", KINDS)
def test_record_beside_a_packed_image(tmp_path: Path, kind: str, name: str) -> None:
    """It was 'no record beside …': the record is there, and is no file."""
    (tmp_path / "packed.img").write_bytes(b"hsqs")
    make(tmp_path / name, kind)
    said = refusal(lambda: pushpacked.read_record(str(tmp_path / "packed.img")))
    assert said == (
        f"the record {tmp_path / name} is not a regular file ({KINDS[kind]}); "
        "give the packed.json that bootc-live build or pack wrote beside it"
    )


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_docker_archive(tmp_path: Path, kind: str) -> None:
    """It was 'no such file': the file is there, and is no file skopeo's archive is read from."""
    path = tmp_path / "img.tar"
    make(path, kind)
    ref = SourceRef.parse(f"docker-archive:{path}")
    said = refusal(lambda: CopiedSource(ref, compress=False))
    assert said == (
        f"{path}: is not a regular file ({KINDS[kind]}); save the archive to a file first"
    )


def test_a_socket_is_named(tmp_path: Path) -> None:
    """open() of a socket fails with ENXIO, 'No such device or address', which says little."""
    path = tmp_path / "auth.json"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    said = refusal(lambda: registry.read_auth_file(str(path)))
    assert said == (
        f"credentials file {path} is not a regular file (a socket); "
        "make it a regular file, or name another"
    )
