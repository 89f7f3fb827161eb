"""Code of bootc-live run in a child process and stopped by SIGTERM there, as the CLI is: a
signal in a pytest-xdist worker would stop the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def stopped(call: str, ready: Path, limit: float = 30) -> str:
    """Run the Python statement `call` within stopping(SIGTERM) (the CLI's handling), send
    SIGTERM once the file `ready` exists, and return what the child wrote to stderr; it must
    have ended by that signal's Stopped."""
    script = (
        "import signal\n"
        "from bootc_live.runtime.errors import stopping\n"
        "with stopping((signal.SIGTERM,)):\n"
        f"    {call}\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + limit
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=limit)
    assert proc.returncode != 0 and "Stopped" in err, err
    return err


def gone(pid_file: Path, limit: float = 10) -> bool:
    """Whether the process whose PID the file holds ends (or is only a zombie) within `limit`
    seconds: a SIGKILL sent takes effect when the process is next scheduled."""
    stat = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    deadline = time.monotonic() + limit
    while stat.exists() and ") Z " not in _read(stat):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # gone meanwhile
        return ") Z "
