"""The boot's two voices: sentences for people, and a status for programs.

People read the console: `bootc-live: …` sentences, whose wording may change at any time.
Programs read the status (README "Boot status for programs"): /run/bootc-live/status.json,
one JSON object whose fields accumulate over the boot, rewritten at every state change, and the
same object printed as one console line `bootc-live: status {…}` at that moment. With
bootc.quiet only the last status line (`ready` or `failed`) and the one-line summary are printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

STATUS_DIR = "/run/bootc-live"
STATUS_LINE = "bootc-live: status "  # what a program looks for on the console
FINAL = ("ready", "failed")


def uptime() -> float:
    """Seconds since the kernel started: the clock of the console's timestamps."""
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


class Report:
    """Where the boot says what it does: the console, status.json and the status lines."""

    def __init__(
        self,
        quiet: bool = False,
        directory: str = STATUS_DIR,
        stream: TextIO | None = None,
    ) -> None:
        self.quiet = quiet
        self.directory = directory
        self.stream = stream
        self.status: dict[str, Any] = {}

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def say(self, message: str) -> None:
        """A sentence for people (not with bootc.quiet)."""
        if not self.quiet:
            self._print(f"bootc-live: {message}")

    def summary(self, message: str) -> None:
        """The one sentence printed even with bootc.quiet."""
        self._print(f"bootc-live: {message}")

    def note(self, **fields: Any) -> None:
        """Fields that join the status with the next state change."""
        self.status.update(fields)

    def state(self, state: str, **fields: Any) -> None:
        """A state change: the fields join the status; status.json and a status line follow."""
        self.status.update(fields)
        self.status.update(state=state, time=round(time.time(), 3), uptime=uptime())
        document = json.dumps(self.status, separators=(",", ":"))
        try:
            os.makedirs(self.directory, exist_ok=True)
            tmp = os.path.join(self.directory, ".status.json")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(document + "\n")
            os.replace(tmp, os.path.join(self.directory, "status.json"))
        finally:  # the line is printed even where the file cannot be written
            if not self.quiet or state in FINAL:
                self._print(STATUS_LINE + document)


def parse_line(line: str) -> dict[str, Any] | None:
    """The status a console line carries (anywhere in it: after a timestamp or a journal
    prefix), or None. For programs that read the console (tests, bench)."""
    _, marker, document = line.partition(STATUS_LINE)
    if not marker:
        return None
    try:
        status = json.loads(document)
    except ValueError:
        return None
    return status if isinstance(status, dict) else None
