"""Build the cached images the selected VM tests will need, in the background, while the tests
before them run: conftest.py starts this when a collected test module names what it needs in
PREBUILD (a Debian recipe of debian_image.RECIPES, or "reference": bench/unpack's image).

Each is debootstrap from the package mirror and minutes of work, most of it waiting on the
network and on one core; the unit tests before the VM tests leave the other core idle. Nothing
here decides a test's outcome: the tests' fixtures take each cache's lock and build whatever is
missing themselves (so they wait for a build under way, and a prebuild that failed or was cut
short costs only the time it would have saved).

    python tests/prebuild.py NAME...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import debian_boot
import debian_image

LOG = "prebuild.log"  # in debian_image.CACHES


def check(names: list[str]) -> None:
    unknown = [n for n in names if n != debian_boot.REFERENCE and n not in debian_image.RECIPES]
    if unknown:  # a test module's PREBUILD names what this cannot build
        raise ValueError(f"prebuild: unknown images {unknown}")


def ready_to_build() -> bool:
    """Whether this machine can build them at all (else the tests say why, not this)."""
    return os.geteuid() == 0 and not debian_image.missing_tools() and bool(shutil.which("umoci"))


def start(names: list[str]) -> subprocess.Popen[bytes] | None:
    """Build `names` in a process of its own, at a lower priority than the tests; its output
    goes to CACHES/prebuild.log."""
    check(names)
    if not names or not ready_to_build():
        return None
    debian_image.CACHES.mkdir(parents=True, exist_ok=True)
    with open(debian_image.CACHES / LOG, "wb") as log:
        return subprocess.Popen(
            ["nice", "-n", "10", sys.executable, os.path.abspath(__file__), *names],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped as a group if the tests end first
        )


def build(name: str) -> None:
    if name == debian_boot.REFERENCE:
        subprocess.run(debian_boot.reference_build_argv(), stdin=subprocess.DEVNULL, check=True)
    else:
        debian_image.ensure_image(recipe=debian_image.RECIPES[name])


def main(names: list[str]) -> int:
    failed = []
    for name in names:
        began = time.monotonic()
        try:
            build(name)
        except Exception as e:  # logged; the test's fixture builds it again
            print(f"prebuild: {name} failed: {e}", flush=True)
            failed.append(name)
        else:
            print(f"prebuild: {name} ready in {time.monotonic() - began:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
