"""Give the memory of the runtime's own Python files to the root once they are imported.

Python reads a module's source and bytecode once, when the module is first imported, and the
runtime is the one Python program of the initramfs and runs once. By the time the root is
prepared, the .py and .pyc files of the modules imported so far (about 7 MiB of the standard
library and the runtime on Debian 12) are read no more, yet in the initramfs's ramfs they hold
pages the root could use: they are deleted then. A module not imported yet keeps its files, so
a later import works as before; extension modules (.so) stay too, mapped by the process that
loaded them (deleting them frees nothing). What is lost: the source lines in a traceback
(bootc.debug), and a second run of the runtime in that initramfs.

As with the kernel modules (modules.py) and the tools (tools.py): only inside an initramfs, not
with bootc.keep-modules=1, and a file that cannot be deleted ends the freeing, never the boot.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

from . import modules

# Where the files of the interpreter's standard library and of the runtime lie (module
# globals: tests point them elsewhere).
STDLIB = os.path.dirname(os.__file__)
RUNTIME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../bootc_live
INSTALLED = "/usr/lib/bootc-live"  # where 90bootc-live's module-setup.sh puts the runtime


def runtime_installed() -> bool:
    """Whether this runtime is the initramfs's copy: only then are these files the initramfs's
    own (the host's tests run the runtime from the source tree, with the host's Python)."""
    return RUNTIME.startswith(os.path.join(INSTALLED, ""))


def imported(roots: Sequence[str] | None = None) -> list[str]:
    """The source and bytecode files of the modules imported from under `roots` (the standard
    library's and the runtime's directories)."""
    roots = (STDLIB, RUNTIME) if roots is None else roots
    found: dict[str, None] = {}
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not isinstance(source, str) or not source.endswith(".py"):
            continue
        if not any(source.startswith(os.path.join(root, "")) for root in roots):
            continue
        # A frozen module (os, io, codecs … since Python 3.11) has no __cached__: its bytecode
        # in __pycache__ is never read either.
        cached = getattr(module, "__cached__", None) or importlib.util.cache_from_source(source)
        for path in (source, cached):
            if isinstance(path, str):
                found[path] = None
    return list(found)


def unused() -> modules.Unused:
    """The imported modules' files that can be deleted, and the pages deleting them frees;
    none when this runtime is not the initramfs's copy."""
    if not runtime_installed():
        return modules.Unused()
    return modules.reclaimable(p for p in imported() if os.access(os.path.dirname(p), os.W_OK))
