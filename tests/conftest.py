"""Session fixtures for the VM tests (the demo images and their artifacts, built once per run),
and what every test starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootc_live.runtime import run
from vmboot import build_artifacts, need_vm_tools, write_demo_images


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
