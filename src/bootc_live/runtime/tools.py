"""Give the memory of the initramfs's tools that the rest of the boot will not run to the root.

A bootc-live initramfs carries a tool for each way it may boot: curl (dracut's url-lib: ftp://,
tftp:// and nfs:// images), gpgv and openssl (signatures), kexec (bootc.kexec), mkfs.ext4
(bootc.zram) and mkfs.erofs (bootc.live.erofs). By the time the root is prepared the image is
fetched and trusted and zram's file system made, so of these only mkfs.erofs can still run;
the others go, with the shared libraries that nothing else in the initramfs loads. On Debian
12 that is about 8 MiB, most of it the TLS, Kerberos and LDAP libraries only curl loads.

Which files each tool alone needs, and which tools nothing else in the initramfs may run, is
worked out when the initramfs is built, from the whole of it (`bootc-live build`,
toolfiles.py), and recorded in MANIFEST; the boot deletes only what that lists. An initrd added
at boot is not in that record: one that runs these tools or loads their libraries needs
bootc.keep-modules=1. As with the kernel modules (modules.py): only inside an initramfs, not
with bootc.keep-modules=1, and a file that cannot be deleted ends the freeing, never the boot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field

from . import modules
from .errors import ImageError
from .sources import read_file

MANIFEST = "/usr/lib/bootc-live/tools.json"
MANIFEST_LIMIT = 16 << 20  # bytes of tools.json (a few hundred paths)
# The tools a boot may do without, each with the other names it is installed under.
TOOLS = {
    "curl": (),
    "gpgv": (),
    "openssl": (),
    "kexec": (),
    "mkfs.ext4": ("mke2fs", "mkfs.ext2", "mkfs.ext3"),
    "mkfs.erofs": (),
}


@dataclass(frozen=True)
class Unused:
    """The tools this boot will not run, their files, and the memory those hold."""

    tools: tuple[str, ...] = ()
    files: modules.Unused = field(default_factory=modules.Unused)
    owners: tuple[str, ...] = ()  # the tool of each of files.paths


def still_run(mode: str) -> frozenset[str]:
    """The tools a boot in root mode `mode` may still run once its root is prepared: EROFS's
    mkfs.erofs packs the unpacked tree (zram's mkfs.ext4 has made its file system by then)."""
    return frozenset({"mkfs.erofs"} if mode == "erofs" else ())


def read_manifest(path: str | None = None) -> dict[str, list[str]]:
    """The files of each tool, as the build recorded them; nothing if there is no record or it
    is not one (an initramfs from an older build frees no tools)."""
    try:  # a FIFO would wait for ever, /dev/zero fill the memory: no record then
        doc = json.loads(read_file(path or MANIFEST, "tools.json", MANIFEST_LIMIT))
    except (OSError, ValueError, ImageError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        tool: [p for p in files if isinstance(p, str) and p.startswith("/")]
        for tool, files in doc.items()
        if tool in TOOLS and isinstance(files, list)
    }


def unused(keep: Collection[str], manifest: str | None = None) -> Unused:
    """The files of every recorded tool not in `keep`, and the pages they hold
    (modules.reclaimable); none where they cannot be deleted (a read-only initramfs)."""
    tools: list[str] = []
    paths: list[str] = []
    owners: list[str] = []
    for tool, files in sorted(read_manifest(manifest).items()):
        if tool in keep:
            continue
        there = [p for p in files if os.access(os.path.dirname(p), os.W_OK)]
        found = modules.reclaimable(there).paths
        if found:
            tools.append(tool)
            paths.extend(found)
            owners.extend([tool] * len(found))
    return Unused(tuple(tools), modules.reclaimable(paths), tuple(owners))


def free(files: Unused) -> Unused:
    """Delete the files `unused` counted; what was deleted (a tool when none of its files is
    left), and the memory given back."""
    deleted = modules.delete(files.files.paths)
    gone = set(deleted.paths)
    left = {t for t, p in zip(files.owners, files.files.paths) if os.path.lexists(p)}
    owners = tuple(t for t, p in zip(files.owners, files.files.paths) if p in gone)
    return Unused(tuple(t for t in files.tools if t not in left), deleted, owners)
