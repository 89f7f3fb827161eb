"""The benchmarks' code; bench/boot, bench/unpack, bench/userlands, bench/fetch and
bench/initramfs are its entry scripts.

Shared: `common` (errors, logging, commands, medians, the machine, a guarded run).

bench/boot: `console` (the console read: events, the runtime's status lines, failures),
`boots` (one boot and its figures), `ramsearch` (the smallest RAM), `servers` (nginx,
docker-registry), `artifacts` (builds and views), `rows` (rows, their figures, the
comparisons), `report` and `bootbench` (the whole run).

bench/unpack: `refimage` (the reference root and its OCI images, cached; bench/boot's
reference rows boot them too), `mounts` (mount safety), `unpacking` (the methods measured)
and `unpackbench` (the whole run and its report).

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
