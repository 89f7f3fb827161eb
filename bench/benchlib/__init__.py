"""The benchmarks' code; bench/boot, bench/unpack and bench/userlands are its entry scripts.

Shared: `common`. bench/boot: `console` (its console and the runtime's status lines), `boots`
(one boot and its figures), `ramsearch`, `servers`, `artifacts`, `rows` (rows, their figures,
the comparisons), `report` and `bootbench` (the whole run).

Importing the package puts the repository's src/ and tests/ on sys.path: the benches use
bootc_live and the tests' image builders and servers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _path in (Path(__file__).resolve().parents[2] / d for d in ("tests", "src")):
    if os.fspath(_path) not in sys.path:
        sys.path.insert(0, os.fspath(_path))
