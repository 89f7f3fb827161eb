"""Session fixtures for the VM tests (the demo images and their artifacts, built once per run),
and what every test starts from."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

import prebuild
from bootc_live.runtime import run
from vmboot import build_artifacts, need_vm_tools, write_demo_images

PREBUILD = pytest.StashKey[subprocess.Popen[bytes]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the cached images the selected tests name in their module's PREBUILD
    (tests/prebuild.py), unless BOOTC_LIVE_PREBUILD=0 or nothing runs."""
    if session.config.option.collectonly or os.environ.get("BOOTC_LIVE_PREBUILD") == "0":
        return
    names: list[str] = []
    for item in session.items:
        module = getattr(item, "module", None)
        names += [n for n in getattr(module, "PREBUILD", ()) if n not in names]
    process = prebuild.start(names)
    if process is not None:
        session.config.stash[PREBUILD] = process


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A prebuild still running when the tests end (they stopped early) is stopped."""
    process = session.config.stash.get(PREBUILD, None)
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(autouse=True)
def untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with commands untraced: a boot under rd.debug, or `--debug`, run in
    this process turns tracing on for the process, and its "+ argv" lines are not the next
    test's output."""
    monkeypatch.setattr(run, "DEBUG", False)
    monkeypatch.delenv("BOOTC_LIVE_DEBUG", raising=False)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_vm_tools()
    return write_demo_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def artifacts(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifacts of the demo image, one per initramfs flavour."""
    out = tmp_path_factory.mktemp("artifacts")
    return {
        flavour: build_artifacts(f"oci:{images}/layout:demo", out / flavour, flavour)
        for flavour in ("systemd", "shell")
    }
