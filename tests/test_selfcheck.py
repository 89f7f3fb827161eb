"""`bootc-live build` proves each initramfs before publishing it (issue 13): a library, command
or module the boot needs and the initramfs lacks fails the build with one line naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bootc_live import selfcheck
from bootc_live.build import BuildConfig, build
from bootc_live.demo import host_kernel
from bootc_live.images import SourceRef
from bootc_live.selfcheck import SelfCheckError

pytestmark = pytest.mark.integration

ALL = (
    "bootc-live",
    "bootc-live-erofs",
    "bootc-live-kexec",
    "bootc-live-net",
    "bootc-live-zram",
)


@pytest.fixture(scope="module")
def unpacked(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's systemd initramfs, unpacked once (copy it before breaking it)."""
    return selfcheck.unpack(
        artifacts["systemd"] / "initrd.img", Path("/"), tmp_path_factory.mktemp("sc") / "tree"
    )


def broken(unpacked: Path, tmp_path: Path, *remove: str) -> Path:
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", unpacked, tree], check=True)
    for path in remove:
        target = tree / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return tree


LIBSSL = "usr/lib/x86_64-linux-gnu/libssl.so.3"  # where Debian's _ssl finds it


def test_a_whole_initramfs_passes_and_says_what_it_boots(unpacked: Path) -> None:
    verdict = selfcheck.probe(unpacked, Path("/"))
    assert verdict.modules == ALL
    assert verdict.modes().startswith("embedded and appended images and packed roots; URLs")
    assert not (unpacked / "bootc-live-probe.py").exists()


def test_a_missing_library_is_named_with_its_package(unpacked: Path, tmp_path: Path) -> None:
    tree = broken(unpacked, tmp_path, LIBSSL)
    with pytest.raises(SelfCheckError) as caught:
        selfcheck.probe(tree, Path("/"))
    line = caught.value.line()
    assert line.startswith("the initramfs cannot load libssl.so.3, needed by /"), line
    assert "_ssl.cpython" in line or "/usr/bin/" in line, line
    assert "package libssl3" in line, line
    assert "\n" not in line


def test_a_missing_command_is_named_with_the_mode_that_needs_it(
    unpacked: Path, tmp_path: Path
) -> None:
    kexec = next(p for p in ("usr/sbin/kexec", "sbin/kexec") if (unpacked / p).is_file())
    tree = broken(unpacked, tmp_path, kexec)
    with pytest.raises(SelfCheckError, match=r"lacks the command kexec, needed by bootc\.kexec"):
        selfcheck.probe(tree, Path("/"))


def test_a_runtime_that_does_not_import_is_named(unpacked: Path, tmp_path: Path) -> None:
    stdlib = next(p for p in (unpacked / "usr/lib").glob("python3*") if (p / "json").is_dir())
    tree = broken(unpacked, tmp_path, f"usr/lib/{stdlib.name}/json")
    with pytest.raises(SelfCheckError, match=r"the runtime does not import \(.*json"):
        selfcheck.probe(tree, Path("/"))


def test_a_failed_check_fails_the_build_and_publishes_nothing(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs on what dracut wrote; a broken initramfs never reaches the output."""

    def probe(tree: Path, userland: Path) -> selfcheck.Verdict:
        (tree / LIBSSL).unlink()
        return real_probe(tree, userland)

    real_probe = selfcheck.probe
    monkeypatch.setattr(selfcheck, "probe", probe)
    out = tmp_path / "out"
    with pytest.raises(SelfCheckError, match=r"cannot load libssl\.so\.3"):
        build(
            BuildConfig(
                SourceRef.parse(f"oci:{images}/layout:demo"),
                out,
                host=True,
                kver=host_kernel(),
                flavour="shell",
            )
        )
    assert sorted(os.listdir(tmp_path)) == []  # neither out nor out.new


def test_what_cannot_be_unpacked_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "initrd.img"
    bad.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(SelfCheckError, match="cannot unpack the initramfs to check it: "):
        selfcheck.check(bad, Path("/"), tmp_path / "check")
    assert sorted(os.listdir(tmp_path)) == ["initrd.img"]
