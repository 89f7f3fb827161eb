"""Run the unpackers under test (bootc-live, umoci, skopeo) from integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def need(ok: bool, reason: str) -> None:
    """Skip when a capability is missing; in CI a missing capability is a failure."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"missing in CI: {reason}")
    pytest.skip(reason)


def need_root_and(*tools: str) -> None:
    need(os.geteuid() == 0, "needs root")
    for tool in tools:
        need(shutil.which(tool) is not None, f"needs {tool}")


def _env(tmpdir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if tmpdir is not None:
        env["TMPDIR"] = os.fspath(tmpdir)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def bootc_live(
    *args: str,
    umask: int = 0o022,
    tmpdir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m bootc_live ARGS`` with this checkout's src/ first on the path (and `env`
    added to the environment), in `cwd` if given."""
    return subprocess.run(
        [sys.executable, "-m", "bootc_live", *args],
        cwd=cwd,
        env={**_env(tmpdir), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        umask=umask,
        check=False,
    )


def bootc_live_unpack(source: str, dest: Path, *, umask: int = 0o022) -> Path:
    """Unpack with bootc-live and return ``dest``; fail the test with stderr on error."""
    result = bootc_live("unpack", source, os.fspath(dest), umask=umask, tmpdir=dest.parent)
    assert result.returncode == 0, f"bootc-live unpack {source} failed:\n{result.stderr}"
    return dest


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    """A failed bootc-live run: non-zero exit, a ``bootc-live:`` line, no traceback."""
    assert result.returncode != 0, f"expected failure, got success:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert any(line.startswith("bootc-live:") for line in lines), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def umoci(*args: str) -> subprocess.CompletedProcess[str]:
    return tool("umoci", *args)


def tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run an oracle (umoci, GNU tar…): stdin /dev/null, output captured, umask 022."""
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        umask=0o022,
        check=False,
    )


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """``umoci unpack`` as root (not rootless); returns BUNDLE/rootfs."""
    result = umoci("unpack", "--image", f"{os.fspath(layout)}:{tag}", os.fspath(bundle))
    assert result.returncode == 0, f"umoci unpack failed:\n{result.stderr}"
    return bundle / "rootfs"


def skopeo_copy(source: str, dest: str, *, tmpdir: Path) -> None:
    result = subprocess.run(
        ["skopeo", "copy", "--quiet", source, dest],
        env=_env(tmpdir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"skopeo copy failed:\n{result.stderr}"
