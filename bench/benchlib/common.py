"""What every bench uses: the repository, errors, logging, the command measured, medians,
the machine, and the guarded run of a bench."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


class BenchError(Exception):
    """A failure that ends the benchmark with one message."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run one command, logged copy-pasteably; a failure raises BenchError naming it."""
    args = [os.fspath(a) for a in argv]
    log("+ " + shlex.join(args))
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run(args, **kwargs)
    if proc.returncode != 0:
        raise BenchError(f"command failed with status {proc.returncode}: {shlex.join(args)}")
    return proc


def resolve_bootc_live(arg: str | None, skip: str = "") -> list[str]:
    """The bootc-live command: --bootc-live CMD, else this repository's .venv, else PATH."""
    if arg:
        return shlex.split(arg)
    venv = REPO / ".venv" / "bin" / "bootc-live"
    if venv.exists():
        return [os.fspath(venv)]
    found = shutil.which("bootc-live")
    if found:
        return [found]
    raise BenchError(
        "bootc-live not found in .venv or on PATH; pass --bootc-live CMD"
        + (f", or {skip}" if skip else "")
    )


def median(values: list[Any]) -> Any:
    """The median of the known values (None: not known), None if none is."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def machine_info() -> dict[str, Any]:
    """The machine a bench ran on."""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"results written to {path}")


def not_root(prog: str, why: str) -> bool:
    """Whether this process is not root (said in one line): every bench must be."""
    if os.geteuid() == 0:
        return False
    log(f"{prog}: must run as root ({why})")
    return True


def run_guarded(
    prog: str, bench: Callable[[], int], errors: tuple[type[Exception], ...] = ()
) -> int:
    """Run a bench: a BenchError (or one of `errors`) ends it with one line, and its cleanup
    (QEMU and servers stopped, mounts and work directories removed) runs on SIGTERM too."""
    caught: tuple[type[Exception], ...] = (BenchError, *errors)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return bench()
    except caught as e:
        log(f"{prog}: {e}")
        return 1
    except KeyboardInterrupt:
        log(f"{prog}: interrupted")
        return 130
