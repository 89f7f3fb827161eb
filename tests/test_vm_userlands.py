"""Userlands we did not tailor: each image builds its initramfs in its own userland and boots, in
the modes its packages allow, to its own systemd reporting what it sees (issue 13).

- Debian 12 as a user makes it plainly (no dracut-network, no curl: nothing brings libssl into
  the initramfs by chance) boots embedded onto zram, the modes its initramfs says it boots; its
  initramfs carries the libraries of the Python extension modules the runtime imports.
- Debian 13 (dracut-ng, systemd 257, Python 3.13, kernel 6.12) boots from a URL onto zram
  (zstd: the planner's zram figure checked against what the device holds), and as stage two of
  bootc.kexec onto EROFS, fetching the image itself (bootc.kexec.reuse-image=0).

Debian 12 with every mode's packages is tests/test_vm_debian.py; every userland in every mode
is bench/userlands.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import debian_image
import kexec_image
from bootc_live.demo import host_kernel
from bootc_live.runtime import memory
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import ArchiveSource
from bootc_live.vm import VmConfig
from debian_boot import (
    MEM,
    built,
    ensure,
    expected,
    initramfs_names,
    tail,
    url_boot,
    verdict,
    watch,
)
from servers import served
from unpackers import bootc_live
from vmboot import ready, statuses

pytestmark = pytest.mark.vm
# Built in the background while the tests before these run (tests/prebuild.py).
PREBUILD = (debian_image.BOOKWORM_MINIMAL.name, debian_image.TRIXIE.name)

ALL_MODES = (
    "embedded and appended images and packed roots; URLs (http, https; ftp, tftp, nfs through "
    "url-lib); registries (docker://); bootc.zram; bootc.live.erofs; bootc.kexec"
)


def modes_line(said: str) -> str:
    found = re.search(r"bootc-live: the initramfs boots: (.*)", said)
    assert found, said
    return found.group(1)


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> tuple[debian_image.DebianImage, Path]:
    image = ensure(debian_image.BOOKWORM_MINIMAL)
    out, said = built(image, tmp_path_factory.mktemp("minimal"))
    # It says what it can boot: no network, no EROFS, no kexec in this userland.
    assert modes_line(said) == "embedded and appended images and packed roots; bootc.zram"
    assert "cannot bring up a network" in said
    return image, out


@pytest.fixture(scope="module")
def trixie(tmp_path_factory: pytest.TempPathFactory) -> tuple[debian_image.DebianImage, Path]:
    image = ensure(debian_image.TRIXIE)
    out, said = built(image, tmp_path_factory.mktemp("trixie"))
    assert modes_line(said) == ALL_MODES
    return image, out


def test_a_plain_debian_12_boots_embedded_onto_zram(
    minimal: tuple[debian_image.DebianImage, Path], tmp_path: Path
) -> None:
    image, out = minimal
    # _ssl came with libssl, which nothing else here links (dracut resolves the libraries of
    # executables only, and extension modules are not executable).
    names = initramfs_names(out / "initrd.img")
    assert any(n.endswith("/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so") for n in names)
    assert any(n.endswith("/libssl.so.3") for n in names), "libssl was left out"
    console = tmp_path / "console.log"
    result = watch(
        VmConfig(out, mem=MEM, append="bootc.zram=1G"),
        console,
    )
    assert verdict(result, console) == expected(image, "ext4"), tail(result.output)
    done = ready(result.output)
    assert done["manifest"] == image.manifest_digest
    assert done["decompressor"] == "zlib", done  # no isal here: the standard library's zlib


def test_debian_13_boots_from_a_url_onto_zram(
    trixie: tuple[debian_image.DebianImage, Path], tmp_path: Path
) -> None:
    image, out = trixie
    console = tmp_path / "console.log"
    result, requests = url_boot(
        out,
        tmp_path,
        console,
        mem=MEM,
        embedded=False,
        extra="bootc.zram=1G bootc.zram.algorithm=zstd",
    )
    assert verdict(result, console) == expected(image, "ext4"), tail(result.output)
    done = ready(result.output)
    assert done["manifest"] == image.manifest_digest
    assert done["decompressor"] == "igzip", done  # Debian 13's isal, in by its own dracut-ng
    assert requests and all(" 206 " in line for line in requests)  # read in place
    # The planner's basis holds: zram takes about what bootc-live build measured the files
    # take as zstd pages, and no more than the overhead the planner adds to it.
    archive = resolve(ArchiveSource(os.fspath(out / "root.oci")))
    recorded = int(archive.index_annotations[memory.ZRAM_ANNOTATION])
    root = done["root"]
    assert (root["mode"], root["algorithm"]) == ("zram", "zstd"), root
    assert 0.9 * recorded <= root["memory"] <= memory.ZRAM_OVERHEAD * recorded, (root, recorded)


def test_debian_13_is_stage_two_of_kexec_onto_erofs(
    trixie: tuple[debian_image.DebianImage, Path], tmp_path: Path
) -> None:
    """Stage one is the host's kernel and dracut; stage two the image's own kernel and the
    initramfs its userland built, onto EROFS. With bootc.kexec.reuse-image=0 the image is not
    handed over: stage two fetches it again from the URL, as the command line names it. The
    kernel is named (bootc.kexec.kver=): stage one stops at its layer."""
    image, out = trixie
    digest = kexec_image.kexec_ready(image, out / "initrd.img", tmp_path)
    stage_one = tmp_path / "artifacts"
    source = f"oci:{tmp_path / 'layout'}:{debian_image.TAG}"
    made = bootc_live(
        "build", source, "-o", str(stage_one), "--host", "--kver", host_kernel(),
        "--pack", "none", tmpdir=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, tail(made.stderr)
    console = tmp_path / "console.log"
    result, requests = url_boot(
        stage_one,
        tmp_path,
        console,
        mem=MEM,
        embedded=False,
        extra=f"bootc.kexec bootc.kexec.kver={image.kver} bootc.kexec.reuse-image=0 "
        "bootc.live.erofs",
    )
    assert verdict(result, console) == expected(image, "erofs"), tail(result.output)
    done = ready(result.output)
    assert done["manifest"] == digest and done["root"]["mode"] == "erofs"
    loaded = [s for s in statuses(result.output) if s["state"] == "kexec-loaded"]
    assert [s["kexec_kver"] for s in loaded] == [image.kver]
    assert "bootclabel=handover" not in loaded[0]["kexec_cmdline"], loaded[0]
    # Stage two was told not to kexec again, and got no bootc.kexec.* option.
    assert loaded[0]["kexec_cmdline"].split().count("bootc.kexec=0") == 1, loaded[0]
    assert "bootc.kexec.kver" not in loaded[0]["kexec_cmdline"], loaded[0]
    assert "handover_layers" not in done, done
    # Stage one read the manifest, config and the kernel's layers; stage two the whole archive.
    archive = (stage_one / "root.oci").stat().st_size
    assert served(requests) > archive * 1.4, (served(requests), archive)
