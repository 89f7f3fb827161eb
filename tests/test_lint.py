"""Linters are tests: formatting, lint, types, the runtime's Python 3.9 floor and its isolation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCH_SCRIPTS = (
    "bench/unpack",
    "bench/boot",
    "bench/userlands",
    "bench/fetch",
    "bench/initramfs",
)  # no .py: named for ruff


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


DRACUT = REPO / "src/bootc_live/dracut"
SHELL_SHEBANG = re.compile(rb"#!\s*/(usr/)?bin/(env\s+)?(ba|da)?sh\b")
NOT_SHELL = (".py", ".service", ".network")
# $moddir/NAME installed as a hook (inst_hook STAGE PRIO) or a generator (inst_script)
INSTALLED_SCRIPT = re.compile(r'inst_(?:hook\s+\w+\s+\d+|script)\s+"\$moddir/([^"]+)"')


def dracut_files() -> list[Path]:
    return sorted(p for p in DRACUT.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def is_shell(path: Path) -> bool:
    return path.suffix == ".sh" or SHELL_SHEBANG.match(path.read_bytes()[:80]) is not None


def is_python(path: Path) -> bool:
    try:
        compile(path.read_bytes(), os.fspath(path), "exec")
    except SyntaxError:
        return False
    return True


def test_dracut_shell_scripts_are_all_found() -> None:
    """Every shell script of the dracut modules is found, by its name or its #! line."""
    scripts = [p for p in dracut_files() if is_shell(p)]
    found = {os.fspath(p.relative_to(DRACUT)) for p in scripts}
    modules = sorted(p.name for p in DRACUT.iterdir() if p.is_dir())
    assert {f"{m}/module-setup.sh" for m in modules} <= found
    assert {
        "90bootc-live/bootc-live-cmdline.sh",
        "90bootc-live/bootc-live-generator.sh",
        "90bootc-live/bootc-live-lib.sh",
        "90bootc-live/bootc-live-mount.sh",
        "90bootc-live-net/bootc-live-net-cmdline.sh",
        "90bootc-live-net/bootc-live-net-generator.sh",
    } <= found
    installed = {
        f"{setup.parent.name}/{name}"
        for setup in DRACUT.glob("*/module-setup.sh")
        for name in INSTALLED_SCRIPT.findall(setup.read_text())
    }
    assert installed and installed <= found, "a hook or generator is not a shell script"
    others = [p for p in dracut_files() if not is_shell(p)]
    unknown = [p for p in others if p.suffix not in NOT_SHELL and not is_python(p)]
    assert not unknown, "neither shell (.sh or a #! line) nor a known other kind: add a #! line"


def test_shellcheck_dracut_scripts() -> None:
    """Each script in the dialect its #! line names (module-setup.sh: bash, as dracut uses)."""
    run("shellcheck", *(os.fspath(p) for p in dracut_files() if is_shell(p)))
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
