"""The smallest RAM that boots a row: a binary search in steps, each trial a boot."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchlib.boots import BootRun


@dataclass
class RamSearch:
    floor: int
    ceiling: int
    step: int
    max_boots: int | None
    found: int | None = None  # the smallest RAM that booted
    failed: int | None = None  # the largest RAM below it that did not (None: floor reached)
    capped: bool = False  # stopped by max_boots before reaching the resolution
    trials: list[BootRun] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trials": [t.as_dict() for t in self.trials]}


def search_ram(
    try_boot: Callable[[int], BootRun], known: dict[int, bool], search: RamSearch
) -> RamSearch:
    """Binary search, in steps, for the smallest RAM that reaches the goal.

    `known` holds the timed boots' outcomes (RAM → booted). Memory below the floor is taken as
    failing without a boot; at most `max_boots` boots are made.
    """
    step = search.step

    def boots(mem: int) -> bool:
        run = try_boot(mem)
        search.trials.append(run)
        known[mem] = run.ok
        return run.ok

    def budget_left() -> bool:
        if search.max_boots is not None and len(search.trials) >= search.max_boots:
            search.capped = True
            return False
        return True

    ok = [m for m, booted in known.items() if booted]
    hi = min(ok) if ok else None
    if hi is None or hi > search.ceiling:
        if not budget_left() or not boots(search.ceiling):
            search.failed = search.ceiling
            return search
        hi = search.ceiling
    lo = max([m for m, booted in known.items() if not booted and m < hi], default=None)
    if lo is None:
        lo = search.floor - step
    while hi - lo > step and budget_left():
        mid = lo + (hi - lo) // step // 2 * step
        if boots(mid):
            hi = mid
        else:
            lo = mid
    search.found = hi
    search.failed = lo if lo >= search.floor else None
    return search


def search_plan(
    args: argparse.Namespace, floor: int, ceiling: int, max_boots: int | None
) -> RamSearch | None:
    if args.no_ram_search:
        return None
    return RamSearch(floor, ceiling, args.ram_step, max_boots)
