"""Progress on the host: a line at most every few seconds for any step that takes longer.

`BOOTC_LIVE_PROGRESS_SECONDS` sets the interval (default 5 s for a running tool, 2 s for
byte counts); a step that ends sooner says nothing but its result.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from types import TracebackType

from .runtime.errors import console_line
from .runtime.unpack import Progress


def interval(default: float) -> float:
    """BOOTC_LIVE_PROGRESS_SECONDS, within 0.01 s and an hour, else `default`."""
    try:
        value = float(os.environ.get("BOOTC_LIVE_PROGRESS_SECONDS", default))
    except ValueError:
        return default
    return default if math.isnan(value) else min(max(0.01, value), 3600.0)


def say(message: str) -> None:
    print(console_line(f"bootc-live: {message}"), file=sys.stderr, flush=True)


class Ticker:
    """While a tool runs (dracut, skopeo): `WHAT… Ns` every interval, then `WHAT: done in Ns`
    when it took longer than one interval."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.every = interval(5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="ticker", daemon=True)
        self.start = 0.0

    def __enter__(self) -> Ticker:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            say(f"{self.what}… {time.monotonic() - self.start:.0f}s")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        took = time.monotonic() - self.start
        if kind is None and took >= self.every:
            say(f"{self.what}: done in {took:.0f}s")


def bytes_progress(total: int, layers: int, quiet: bool = False) -> Progress | None:
    """The unpacker's progress line (layer i/N, fetched and unpacked MiB, rate, ETA)."""
    return None if quiet else Progress(total, layers, interval=interval(2.0))
