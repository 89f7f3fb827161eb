"""The shell side of the dracut modules reads root= as the runtime's parser does."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from bootc_live.runtime.cmdline import parse_root

DRACUT = Path(__file__).resolve().parents[1] / "src/bootc_live/dracut"
LIB = DRACUT / "90bootc-live/bootc-live-lib.sh"
DIGEST = "sha256:" + "ab" * 32

ROOTS = [
    "bootc-live:/bootc-live/image",
    "bootc-live:/run/initramfs/root.oci",
    "bootc-live:http://10.0.2.2:8080/root.oci",
    "bootc-live:https://example.org/images/root.oci",
    "bootc-live:ftp://example.org/root.oci",
    "bootc-live:tftp://10.0.2.2/root.oci",
    "bootc-live:nfs://server/export/root.oci",
    "bootc-live:docker://quay.io/fedora/fedora-bootc:42",
    f"bootc-live:docker://localhost:5000/img@{DIGEST}",
    "bootc-live:docker://",
    "bootc-live:docker://a b",
    "bootc-live:",
    "bootc-live:relative/path",
    "bootc-live:HTTP://example.org/root.oci",
    "bootc-live:file:///root.oci",
    "bootc-live:docker:/one-slash",
    "bootc-live:block:LABEL=data:/image.oci",  # once parsed, never implemented: removed
    "bootc-live",
    "BOOTC-LIVE:/image",
    "/dev/sda1",
    "LABEL=root",
    "live:http://example.org/squashfs.img",
    "nfs:server:/export",
    "",
]


def python_kind(value: str) -> str:
    """What the runtime makes of root=VALUE, in the words of bootc_live_root_kind."""
    try:
        root = parse_root(value)
    except ValueError:
        return "invalid"
    return "" if root is None else root.kind


def shell(script: str, root: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`script` run by sh with the library and a getarg that knows only root=."""
    stubs = 'getarg() { [ "$1" = root= ] && printf %s "$ROOT"; }; getargbool() { return 1; }'
    return subprocess.run(
        ["sh", "-c", f'{stubs}\n. "{LIB}"\n{script}', "sh", *args],
        env={"ROOT": root, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.mark.parametrize("value", ROOTS)
def test_the_shell_grammar_is_the_runtimes(value: str) -> None:
    said = shell('bootc_live_root_kind "$1"', "", value).stdout
    assert said.strip() == python_kind(value)


def test_the_grammar_covers_every_kind_of_root() -> None:
    assert {python_kind(v) for v in ROOTS} == {"path", "url", "docker", "invalid", ""}


@pytest.mark.parametrize("value", ROOTS)
def test_generators_claim_the_roots_the_runtime_takes(value: str, tmp_path: Path) -> None:
    kind = python_kind(value)
    base = tmp_path / "base"
    net = tmp_path / "net"
    shell(f'. "{DRACUT}/90bootc-live/bootc-live-generator.sh"', value, "n", os.fspath(base))
    shell(f'. "{DRACUT}/90bootc-live-net/bootc-live-net-generator.sh"', value, "n", os.fspath(net))
    assert (base / "sysroot.mount").exists() == (kind != "")
    assert (net / "bootc-live.service.d/network.conf").exists() == (kind in ("url", "docker"))
    hook = shell(f'. "{DRACUT}/90bootc-live/bootc-live-cmdline.sh"; echo "$rootok"', value)
    assert hook.stdout == ("1\n" if kind else "\n")


def test_no_script_but_the_library_reads_root() -> None:
    scripts = [p for p in DRACUT.glob("*/*.sh") if p != LIB]
    assert len(scripts) >= 5
    for script in scripts:
        assert not re.search(r"bootc-live:[\w/]*\*", script.read_text()), script
