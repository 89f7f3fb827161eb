"""The boot's two voices: sentences for people, and a status for programs.

People read the console: `bootc-live: …` sentences, whose wording may change at any time.
Programs read the status (README "Boot status for programs"): /run/bootc-live/status.json,
one JSON object whose fields accumulate over the boot, rewritten at every state change; and at
that moment a console line `bootc-live: status {…}` with the state and the fields that changed,
so that the lines, read in order, add up to status.json (`documents`). With bootc.quiet only the
last status line (`ready` or `failed`, then carrying everything) and the one-line summary are
printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .errors import STATUS_MARKER, console_line

STATUS_DIR = "/run/bootc-live"
STATUS_LINE = STATUS_MARKER  # what a program looks for on the console
FINAL = ("ready", "failed")


def boot_id() -> str:
    """This kernel's boot: what tells a kexec'd stage two's status lines from stage one's."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()[:8]
    except OSError:
        return ""


BOOT = boot_id()


def uptime() -> float:
    """Seconds since the kernel started: the clock of the console's timestamps."""
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


# The kernel's log cuts a line at about 1000 bytes (journald forwards the initrd's lines there):
# a status line stays below this, a longer change is spread over several lines of one state.
LINE_LIMIT = 900


class Report:
    """Where the boot says what it does: the console, status.json and the status lines."""

    def __init__(
        self,
        quiet: bool = False,
        directory: str = STATUS_DIR,
        stream: TextIO | None = None,
        boot: str = BOOT,
    ) -> None:
        self.quiet = quiet
        self.boot = boot
        self.directory = directory
        self.stream = stream
        self.status: dict[str, Any] = {}  # status.json: everything so far
        self._printed: dict[str, Any] = {}  # what the status lines have carried so far
        self._unwritten = False  # status.json could not be written (said once)

    def _print(self, line: str) -> None:
        """A sentence: one printable line, whatever it quotes, that reads as no status."""
        self._emit(console_line(line))

    def _emit(self, line: str) -> None:
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
        """A state change: the fields join the status; status.json and the status line follow.

        A status line carries the state, its time and the fields that changed since the last
        line (with bootc.quiet, whose only line is the last, that is all of them): read in
        order, the lines add up to status.json (`documents`)."""
        self.status.update(fields)
        self.status.update(state=state, time=round(time.time(), 3), uptime=uptime(), boot=self.boot)
        try:
            self._write()
        except OSError as err:  # /run full, say: a report is no reason to stop the boot
            if not self._unwritten:
                self._unwritten = True
                self._print(
                    f"bootc-live: warning: {self.directory}/status.json cannot be written "
                    f"({err.strerror or err}): the status is in the status lines only"
                )
        finally:  # the lines are printed even where the file cannot be written
            if not self.quiet or state in FINAL:
                for line in self._lines():  # ASCII JSON: printable, one line
                    self._emit(line)

    def _write(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, ".status.json")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(_json(self.status) + "\n")
            os.replace(tmp, os.path.join(self.directory, "status.json"))
        except OSError:
            with contextlib.suppress(OSError):  # what was written of it takes room
                os.unlink(tmp)
            raise

    def _lines(self) -> list[str]:
        head = {key: self.status[key] for key in ("state", "time", "uptime", "boot")}
        changed = {
            key: value
            for key, value in self.status.items()
            if key not in head and self._printed.get(key, _NOTHING) != value
        }
        self._printed.update(self.status)
        lines, part = [], dict(head)
        for key, value in changed.items():
            if len(_json(value)) > LINE_LIMIT // 2:  # whole in status.json, shortened here
                value = _shortened(
                    value if isinstance(value, str) else _json(value), LINE_LIMIT // 2
                )
            if len(_json({**part, key: value})) + len(STATUS_LINE) > LINE_LIMIT and part != head:
                lines.append(STATUS_LINE + _json(part))
                part = dict(head)
            part[key] = value
        return [*lines, STATUS_LINE + _json(part)]


_NOTHING = object()


def _json(document: object) -> str:
    """Compact and ASCII: a character is a byte, and no character of a value ends the line."""
    return json.dumps(document, separators=(",", ":"))


def _shortened(text: str, limit: int) -> str:
    """`text`, its middle cut out until it takes at most `limit` bytes as JSON."""
    keep = len(text)
    while len(_json(text)) > limit and keep > 0:
        keep = min(keep - 1, keep * limit // len(_json(text)))
        text = text[: keep // 2] + "…" + text[len(text) - keep // 2 :]
    return text


def parse_line(line: str) -> dict[str, Any] | None:
    """The fields a console line's status carries (the marker anywhere in it: after a
    timestamp or a journal prefix), or None for any other line, or a cut one."""
    _, marker, rest = line.partition(STATUS_LINE)
    if not marker:
        return None
    try:
        fields, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) and isinstance(fields.get("state"), str) else None


def documents(lines: Iterable[str]) -> list[dict[str, Any]]:
    """status.json as it was at each status line, from a console's lines, in order. Another
    `boot` (a kexec'd stage two is a boot of its own kernel) starts afresh."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        fields = parse_line(line)
        if fields is None:
            continue
        if fields.get("boot") != current.get("boot"):
            current = {}
        current = {**current, **fields}
        found.append(current)
    return found
