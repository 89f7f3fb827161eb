"""The live root's /etc and /var on a real tmpfs, mounted by mounts.finish_root in a private
mount namespace and judged from inside the root (chroot), as the booted system sees it: the
shapes of ostree-based bootc images (home -> var/home, usr/local -> ../var/usrlocal, ostree ->
sysroot/ostree) and hostile ones (/etc or /var a symbolic link)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from test_block import in_private_namespace
from unpackers import need

pytestmark = pytest.mark.integration

# In the child: the tree `shape` describes, made on a tmpfs at `root`; finish_root with the
# MountPlan given (default: read-only root, /etc and /var writable); then, chrooted into it,
# which of the paths asked about take a new file. Prints {"error": message} or {"writable": {...}}.
# A shape is (path, None) for a directory, (path, "") for an empty file, else a link.
CHILD = r"""
import json, os, sys
from bootc_live.runtime import mounts
from bootc_live.runtime.errors import BootcLiveError
root, shape, probes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
plan = mounts.MountPlan(**json.loads(sys.argv[4]))
overlays = sys.argv[5] == "overlays"
mounts.mount_tmpfs(root, 16 << 20, tree=True)
for path, target in shape:
    where = os.path.join(root, path)
    os.makedirs(os.path.dirname(where), exist_ok=True)
    if target is None:
        os.makedirs(where)
    elif target == "":
        open(where, "w").close()
    else:
        os.symlink(target, where)
try:
    if overlays:  # as an EROFS or packed root: the image read-only, overlays on a tmpfs
        from bootc_live.runtime import roots
        mounts.run(["mount", "-o", "remount,ro", root])
        uppers = root + "-uppers"
        os.mkdir(uppers)
        mounts.mount_tmpfs(uppers, 16 << 20)
        roots.overlay_etc_var(root, uppers, plan)
    else:
        mounts.finish_root(root, plan)
except BootcLiveError as err:
    print(json.dumps({"error": str(err), "hint": err.hint}))
    sys.exit(0)
os.chroot(root)
writable = {}
for probe in probes:
    try:
        with open(os.path.join(probe, "written-by-test"), "w") as f:
            f.write("x")
        writable[probe] = True
    except OSError:
        writable[probe] = False
print(json.dumps({"writable": writable}))
"""

OSTREE_TOP = [
    ("usr/bin", None),
    ("etc", None),
    ("var/home", None),
    ("var/usrlocal", None),
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("usr/local", "../var/usrlocal"),
    ("ostree", "sysroot/ostree"),
    ("sysroot/ostree/repo/objects", None),
]


def finish(
    tmp_path: Path,
    shape: list[tuple[str, str | None]],
    probes: list[str],
    plan: dict[str, bool] | None = None,
    mode: str = "binds",
) -> dict[str, Any]:
    need(os.geteuid() == 0, "mounts in a private namespace need root")
    need(shutil.which("unshare") is not None, "needs unshare")
    root = str(tmp_path / "root")
    os.mkdir(root)
    done = in_private_namespace(
        CHILD, root, json.dumps(shape), json.dumps(probes), json.dumps(plan or {}), mode
    )
    assert done.returncode == 0, done.stderr
    for place in (root, root + "-uppers"):  # the tmpfs went with the namespace
        assert not os.path.exists(place) or os.listdir(place) == []
    return json.loads(done.stdout.splitlines()[-1])


def test_an_ostree_shaped_root_has_etc_var_and_their_links_writable(tmp_path: Path) -> None:
    found = finish(tmp_path, OSTREE_TOP, ["/etc", "/var", "/home", "/usr/local", "/usr/bin", "/"])
    assert found == {
        "writable": {
            "/etc": True,
            "/var": True,
            "/home": True,
            "/usr/local": True,
            "/usr/bin": False,
            "/": False,
        }
    }


@pytest.mark.parametrize(
    "etc",
    [
        [("usr/etc", None), ("etc", "usr/etc")],
        [("usr/etc", None), ("etc", "/usr/etc")],
        [("usr/etc", None), ("etc", "usr/../usr/./etc")],
        [("usr/lib/etc", None), ("usr/etc", "lib/etc"), ("etc", "/usr/etc")],
        [("usr", None), ("etc", "usr/etc")],  # dangling: made, as a missing /etc is
    ],
    ids=["relative", "absolute", "dots", "two-links", "dangling"],
)
def test_an_etc_that_is_a_link_into_the_root_is_writable(
    etc: list[tuple[str, str | None]], tmp_path: Path
) -> None:
    """/etc a symbolic link to a directory of the image: that directory is what the booted
    system writes as /etc, and SPEC §6 has it writable; it stayed read-only with the root (the
    link was skipped), and so did the rest of the root."""
    found = finish(tmp_path, [*etc, ("var", None)], ["/etc", "/var", "/usr", "/"])
    assert found == {"writable": {"/etc": True, "/var": True, "/usr": False, "/": False}}


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            [("etc", "/"), ("var", None)],
            "the image's /etc is a symbolic link to the root itself: it cannot be writable "
            "while the root is read-only",
        ),
        (
            [("etc", None), ("var", "../..")],
            "the image's /var is a symbolic link to the root itself: it cannot be writable "
            "while the root is read-only",
        ),
        ([("etc", "etc"), ("var", None)], "the image's /etc is a loop of symbolic links"),
        ([("etc", ""), ("var", None)], "the image's /etc is not a directory"),
        (
            [("var", None), ("usr/lib", ""), ("etc", "usr/lib/etc")],
            "the image's /etc (a symbolic link to /usr/lib/etc) cannot be made: Not a directory",
        ),
        (
            [("etc", None), ("usr/var", ""), ("var", "usr/var")],
            "the image's /var (a symbolic link to /usr/var) is not a directory",
        ),
        (
            [("var", None), ("usr/etc", None), ("etc", "usr/etc/../../..")],
            "the image's /etc is a symbolic link to the root itself: it cannot be writable "
            "while the root is read-only",
        ),
    ],
    ids=[
        "etc-to-slash",
        "var-to-dotdot",
        "loop",
        "etc-file",
        "etc-under-a-file",
        "var-to-file",
        "etc-above-the-root",
    ],
)
def test_an_etc_or_var_that_leads_to_the_root_is_one_clear_line(
    shape: list[tuple[str, str | None]], message: str, tmp_path: Path
) -> None:
    """A /etc or /var that is the root itself cannot be writable with the root read-only: one
    line says so and what to boot with, where the root was left read-only with it (or a
    loop of links went unnoticed); nothing outside the root is touched (a link to / from the
    host's view is the host's /)."""
    found = finish(tmp_path, shape, [])
    assert found["error"] == message
    assert found["hint"]


@pytest.mark.parametrize(
    ("shape", "plan", "expected"),
    [
        (
            [("var/etc", None), ("etc", "var/etc")],
            {"etc_rw": False},
            {"/etc": False, "/var": True, "/": False},
        ),
        (
            [("etc/var", None), ("var", "etc/var")],
            {"var_rw": False},
            {"/etc": True, "/var": False, "/": False},
        ),
        (
            [("var/etc", None), ("etc", "var/etc")],
            {"rw": True, "var_rw": False},
            {"/etc": True, "/var": False, "/": True},
        ),
        (
            [("usr/etc", None), ("etc", "usr/etc"), ("var", None)],
            {"rw": True, "etc_rw": False},
            {"/etc": False, "/var": True, "/usr": True, "/": True},
        ),
    ],
    ids=["etc-in-var-ro", "var-in-etc-ro", "rw-etc-in-ro-var", "rw-etc-link-ro"],
)
def test_a_place_inside_the_other_keeps_what_was_asked_for_it(
    shape: list[tuple[str, str | None]],
    plan: dict[str, bool],
    expected: dict[str, bool],
    tmp_path: Path,
) -> None:
    """/etc -> var/etc with bootc.live.etc.rw=0: /etc was writable, as the /var it lies in
    (skipped as "following the root", or its read-only bind hidden by /var's bind over it)."""
    found = finish(tmp_path, shape, list(expected), plan)
    assert found == {"writable": expected}


@pytest.mark.parametrize(
    ("shape", "plan", "expected"),
    [
        (
            [("usr/etc", None), ("etc", "/usr/etc"), ("var", None)],
            {},
            {"/etc": True, "/var": True, "/usr": False, "/": False},
        ),
        (
            [("var/etc", None), ("etc", "var/etc")],
            {"etc_rw": False},
            {"/etc": False, "/var": True, "/": False},
        ),
        (OSTREE_TOP, {}, {"/etc": True, "/home": True, "/usr/local": True, "/usr/bin": False}),
    ],
    ids=["etc-link", "etc-in-var-ro", "ostree"],
)
def test_overlays_of_a_read_only_image_follow_the_same_places(
    shape: list[tuple[str, str | None]],
    plan: dict[str, bool],
    expected: dict[str, bool],
    tmp_path: Path,
) -> None:
    """EROFS and packed roots make /etc and /var writable by overlays: where a link leads, as
    finish_root; the links were skipped, leaving /etc the image's read-only one."""
    found = finish(tmp_path, shape, list(expected), plan, mode="overlays")
    assert found == {"writable": expected}


def test_an_etc_and_var_that_are_one_directory_asked_two_ways_is_one_line(
    tmp_path: Path,
) -> None:
    found = finish(tmp_path, [("etc", None), ("var", "etc")], [], {"var_rw": False})
    assert found["error"] == (
        "the image's /etc and /var are one directory (/etc): it cannot be both writable and "
        "read-only"
    )
