"""Session fixtures for the VM tests (the demo images and their artifacts, built once per run,
shared by pytest-xdist's workers), and what every test starts from."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prebuild
from bootc_live.runtime import mounts, roots, run
from debian_image import locked
from vmboot import build_artifacts, need_vm_tools, write_demo_images

PREBUILD = pytest.StashKey[subprocess.Popen[bytes]]()
# pytest-xdist's worker name (gw0, gw1, …) in a worker's environment; unset without xdist
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# Seconds a worker done with its own tests waits for the prebuild it started (another worker's
# tests wait on its locks); past that, the fixtures build what is missing themselves.
PREBUILD_GRACE = 900


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the cached images the selected tests name in their module's PREBUILD
    (tests/prebuild.py), unless BOOTC_LIVE_PREBUILD=0 or nothing runs. Under xdist every
    worker collects every test; the first one starts it."""
    if session.config.option.collectonly or os.environ.get("BOOTC_LIVE_PREBUILD") == "0":
        return
    if WORKER not in (None, "gw0"):
        return
    names: list[str] = []
    for item in session.items:
        module = getattr(item, "module", None)
        names += [n for n in getattr(module, "PREBUILD", ()) if n not in names]
    process = prebuild.start(names)
    if process is not None:
        session.config.stash[PREBUILD] = process


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A prebuild still running when the tests end (they stopped early) is stopped; a worker
    whose own tests ended first gives it up to PREBUILD_GRACE seconds to finish for the
    others (none if the run was interrupted)."""
    process = session.config.stash.get(PREBUILD, None)
    if process is None or process.poll() is not None:
        return
    if WORKER is not None and exitstatus != pytest.ExitCode.INTERRUPTED:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=PREBUILD_GRACE)
    if process.poll() is None:
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


@pytest.fixture(autouse=True)
def no_mounts_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's mounts, run in a test's own process, would be this machine's: a test
    that reaches one without faking it (the `system` fixtures do) fails instead. Real mounts
    happen in subprocesses in private mount namespaces only."""
    for module in (mounts, roots):
        real = module.run

        def guarded(argv: Any, *args: Any, _real: Any = real, **kw: Any) -> Any:
            if os.path.basename(str(argv[0])) in ("mount", "umount", "losetup"):
                raise AssertionError(f"a test ran {argv[0]} on this machine: {argv}")
            return _real(argv, *args, **kw)

        monkeypatch.setattr(module, "run", guarded)


@pytest.fixture(autouse=True)
def no_built_in_drivers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A test's modprobe that fails, fails: the host's own drivers (built in, or loaded) do not
    make it pass (roots.modprobe's fallback, for kernels without /lib/modules in the
    initramfs, is tested where it says so)."""
    monkeypatch.setattr(roots, "PROC_FILESYSTEMS", str(tmp_path / "no-proc-filesystems"))
    monkeypatch.setattr(roots, "SYS_MODULE", str(tmp_path / "no-sys-module"))


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]
) -> Path:
    """The directory NAME of this run, made by `make` the first time it is asked for: by this
    process, or under xdist by whichever worker asks first (the others wait for it)."""
    base = tmp_path_factory.getbasetemp()
    if WORKER is not None:
        base = base.parent  # the run's directory, above each worker's own (popen-gwN)
    lock = base / "shared" / name
    made = lock / "made"
    with locked(lock):
        if not (lock / "done").exists():
            shutil.rmtree(made, ignore_errors=True)  # what a worker that failed left
            made.mkdir()
            make(made)
            (lock / "done").touch()
    return made


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_vm_tools()
    return built_once(tmp_path_factory, "images", write_demo_images)


@pytest.fixture(scope="session")
def artifacts(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifacts of the demo image, one per initramfs flavour."""
    flavours = ("systemd", "shell")

    def make(out: Path) -> None:
        for flavour in flavours:
            build_artifacts(f"oci:{images}/layout:demo", out / flavour, flavour)

    out = built_once(tmp_path_factory, "artifacts", make)
    return {flavour: out / flavour for flavour in flavours}
