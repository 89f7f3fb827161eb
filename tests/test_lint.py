"""Linters are tests: formatting, lint, types, the runtime's Python 3.9 floor and its isolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCH_SCRIPTS = ("bench/unpack", "bench/boot", "bench/userlands")  # no .py: named for ruff


def run(*argv: str) -> None:
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "argv",
    [
        ("ruff", "format", "--check", "src", "tests", "bench", *BENCH_SCRIPTS),
        ("ruff", "check", "src", "tests", "bench", *BENCH_SCRIPTS),
        ("mypy",),
        (
            "vermin",
            "--target=3.9-",
            "--no-tips",
            "--violations",
            "--eval-annotations",
            "src/bootc_live/runtime",
            "src/bootc_live/initrd_probe.py",
        ),
    ],
    ids=lambda argv: argv[0] + ("-" + argv[1] if argv[0] == "ruff" else ""),
)
def test_linter(argv: tuple[str, ...]) -> None:
    run(str(BIN / argv[0]), *argv[1:])


def test_shellcheck_dracut_scripts() -> None:
    module = REPO / "src/bootc_live/dracut/90bootc-live"
    run("shellcheck", "-s", "bash", str(module / "module-setup.sh"))
    run("shellcheck", "-s", "sh", *sorted(str(p) for p in module.glob("bootc-live-*.sh")))
    run("shellcheck", "-s", "bash", "setup", "run-tests", ".ci/run")


IMPORT_RUNTIME = (
    "import pkgutil, importlib, bootc_live.runtime as r\n"
    "for m in pkgutil.iter_modules(r.__path__):\n"
    "    importlib.import_module('bootc_live.runtime.' + m.name)\n"
)


def runtime_probe(probe: str) -> str:
    """What `probe` prints, run by this Python with src/ on the path and no site packages."""
    return subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=REPO / "src",
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_runtime_imports_only_stdlib_and_itself() -> None:
    """The boot-time runtime runs where nothing else exists: stdlib and optional accelerators."""
    probe = IMPORT_RUNTIME + (
        "import sys\n"
        "bad = sorted({n.split('.')[0] for n in sys.modules} - set(sys.stdlib_module_names)"
        " - {'bootc_live', 'isal', 'zstandard', '_cffi_backend', '__main__'})\n"
        "host = sorted(n for n in sys.modules if n.startswith('bootc_live.')"
        " and not n.startswith('bootc_live.runtime'))\n"
        "print(bad, host)\n"
    )
    assert runtime_probe(probe).strip() == "[] []"


def test_runtime_imports_without_tls_and_https_then_says_so() -> None:
    """An initramfs without libssl boots every source but https (issue 13): TLS is imported
    only when an https URL is opened, and its absence is one line, not a traceback."""
    probe = (
        "import sys\n"
        "sys.modules['ssl'] = sys.modules['_ssl'] = None  # import ssl raises ImportError\n"
        + IMPORT_RUNTIME
        + "from bootc_live.runtime import http\n"
        "try:\n"
        "    http.open_url('https://127.0.0.1:9/root.oci', http.Policy(retries=0), print, '/nx')\n"
        "except http.FetchError as err:\n"
        "    print(err.line())\n"
    )
    out = runtime_probe(probe)
    assert out.startswith("https://127.0.0.1:9/root.oci: https needs TLS, and this initramfs has")
    assert "rebuild the initramfs" in out and out.count("\n") == 1
