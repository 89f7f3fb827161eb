"""Print the standard-library files the bootc-live runtime needs: import it and list them."""

import contextlib
import importlib
import importlib.util
import os
import pkgutil
import sys

sys.path.insert(0, sys.argv[1])
import bootc_live.runtime as runtime

try:
    for info in pkgutil.iter_modules(runtime.__path__):
        importlib.import_module(f"{runtime.__name__}.{info.name}")
    # Imported lazily at run time (codec lookups by http.client and ssl): import them here.
    for lazy in ("encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.idna"):
        importlib.import_module(lazy)
except ImportError as err:  # said on stdout, alone: module-setup.sh stops dracut with it
    print(
        f"{sys.executable} lacks the standard library module {err.name} (the runtime imports "
        "it): reinstall that python3, or build with --host"
    )
    sys.exit(1)
# TLS is imported by the runtime only for https, so that an initramfs without it still boots
# every other source: take it when this userland has it (the build's self-check decides
# whether the modules included need it).
with contextlib.suppress(ImportError):
    importlib.import_module("ssl")

files = set()
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if not path or name.startswith("bootc_live") or name == "__main__":
        continue
    files.add(path)
    if path.endswith(".py"):
        files.add(importlib.util.cache_from_source(path))
for path in sorted(files):
    if os.path.exists(path):
        print(path)
