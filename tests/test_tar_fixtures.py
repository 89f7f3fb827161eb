"""Differential test over other projects' tar fixtures: Go's archive/tar testdata and CPython's
testtar.tar, installed from Debian (golang-1.19-src, libpython3.11-testsuite; never committed).

Each fixture becomes the single layer of an OCI image, unpacked by bootc-live, by umoci and by
GNU tar; the trees are compared with the walker. Where the tools disagree, SPEC.md §3 (and where
it is silent, Go's archive/tar and umoci, see tarstream.py) decides: EXPECTED says, for each
fixture, which tool's tree ours must equal and why, or the one line ours must end in.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.runtime.errors import BootcLiveError
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.unpack import unpack_image
from imagegen import build_layout
from treewalk import diff, snapshot
from unpackers import assert_clean_failure, bootc_live, need, need_root_and, tool, umoci

pytestmark = pytest.mark.integration

GO = Path("/usr/share/go-1.19/src/archive/tar/testdata")
PYTHON = Path("/usr/lib/python3.11/test")
DROP_XATTRS = ("security.selinux",)


@dataclass(frozen=True)
class Same:
    """Our tree equals each of `oracles`' trees; `why` says what the other tools do."""

    oracles: tuple[str, ...]
    why: str = ""


@dataclass(frozen=True)
class Paths:
    """No tool is an oracle (`why`): our tree holds exactly these paths, as SPEC.md §3 says."""

    paths: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Refused:
    """Ours ends in one line containing `line`; so do `refused_by` (`why`: what others do)."""

    line: str
    refused_by: tuple[str, ...] = ("umoci", "gnu-tar")
    why: str = ""


BOTH = Same(("gnu-tar", "umoci"))
UMOCI_S = "umoci 0.4.7: unknown typeflag 'S'; SPEC.md §3: GNU sparse files, with holes"
TRUNCATED = Refused("the layer ends in the middle of a tar entry (truncated)")

EXPECTED: dict[str, Same | Paths | Refused] = {
    "go/file-and-dir.tar": BOTH,
    "go/gnu-incremental.tar": Same(
        ("gnu-tar",),
        "umoci: unknown typeflag 'D' (a GNU dumpdir: the directory, its listing skipped)",
    ),
    "go/gnu-long-nul.tar": BOTH,
    "go/gnu-multi-hdrs.tar": BOTH,
    "go/gnu-nil-sparse-data.tar": Same(("gnu-tar",), UMOCI_S),
    "go/gnu-nil-sparse-hole.tar": Same(("gnu-tar",), UMOCI_S),
    "go/gnu-not-utf8.tar": BOTH,
    "go/gnu-sparse-big.tar": Same(("gnu-tar",), UMOCI_S),
    "go/gnu-utf8.tar": BOTH,
    "go/gnu.tar": BOTH,
    "go/hardlink.tar": BOTH,
    "go/hdr-only.tar": BOTH,
    "go/invalid-go17.tar": Same(
        ("umoci",), "Go's pre-1.8 prefix in a GNU header: GNU tar ignores it (writes /foo)"
    ),
    "go/issue10968.tar": Refused("size does not fit in 64 bits"),
    "go/issue11169.tar": TRUNCATED,
    "go/issue12435.tar": Refused("size does not fit in 64 bits"),
    "go/neg-size.tar": Refused("size does not fit in 64 bits"),
    "go/nil-uid.tar": BOTH,
    "go/pax-bad-hdr-file.tar": Refused("malformed PAX record length"),
    "go/pax-bad-mtime-file.tar": Refused(
        "invalid PAX mtime", ("umoci",), "GNU tar ignores the bad mtime"
    ),
    "go/pax-global-records.tar": Paths(
        (".", "file1", "file2", "file3", "file4"),
        "PAX global headers are ignored: umoci fails (unknown typeflag 'g'), GNU tar applies "
        "their path= and fails on the empty one",
    ),
    "go/pax-multi-hdrs.tar": BOTH,
    "go/pax-nil-sparse-data.tar": BOTH,
    "go/pax-nil-sparse-hole.tar": BOTH,
    "go/pax-nul-path.tar": Refused(
        "its PAX path contains a NUL byte", ("umoci",), "GNU tar cuts the name at the NUL"
    ),
    "go/pax-nul-xattrs.tar": Refused("PAX key SCHILY.xattr.null\\x00 contains a NUL byte"),
    "go/pax-path-hdr.tar": BOTH,  # an extended header, then the end: an empty layer
    "go/pax-pos-size-file.tar": BOTH,
    "go/pax-records.tar": BOTH,
    "go/pax-sparse-big.tar": Same(
        ("gnu-tar",), "umoci writes the holes of its 60 GB file as data (so it is not run)"
    ),
    "go/pax.tar": BOTH,
    "go/sparse-formats.tar": Same(
        ("python-tarfile",),
        "umoci: unknown typeflag 'S'; GNU tar reads each sparse chunk from a new block and "
        "hits the end; Go's and CPython's readers (and ours) read the data back to back",
    ),
    "go/star.tar": BOTH,
    "go/trailing-slash.tar": BOTH,
    "go/ustar-file-devs.tar": BOTH,
    "go/ustar-file-reg.tar": BOTH,
    "go/ustar.tar": BOTH,
    "go/v7.tar": BOTH,
    "go/writer-big-long.tar": TRUNCATED,
    "go/writer-big.tar": TRUNCATED,
    "go/writer.tar": BOTH,
    "go/xattrs.tar": BOTH,
    "python/recursion.tar": TRUNCATED,
    "python/testtar.tar": Same(
        ("gnu-tar",), "umoci 0.4.7: unknown typeflag '7' (a contiguous file: a regular file)"
    ),
}


def fixtures() -> list[Path]:
    return [*sorted(GO.glob("*.tar")), PYTHON / "testtar.tar", PYTHON / "recursion.tar"]


def fixture_id(path: Path) -> str:
    return f"{'go' if path.parent == GO else 'python'}/{path.name}"


@dataclass
class Outcome:
    tree: dict[bytes, object] | None
    error: str


def ours(layout: Path, dest: Path) -> Outcome:
    dest.mkdir()
    try:
        unpack_image(resolve(LayoutSource(str(layout))), str(dest), warn=lambda _msg: None)
    except BootcLiveError as err:
        return Outcome(None, err.line())
    return Outcome(snapshot(dest, drop_xattrs=DROP_XATTRS), "")  # type: ignore[arg-type]


def by_umoci(layout: Path, bundle: Path) -> Outcome:
    result = umoci("unpack", "--image", f"{layout}:latest", os.fspath(bundle))
    if result.returncode != 0:
        return Outcome(None, result.stderr.strip().splitlines()[-1])
    return Outcome(snapshot(bundle / "rootfs", drop_xattrs=DROP_XATTRS), "")  # type: ignore[arg-type]


def by_gnu_tar(fixture: Path, dest: Path) -> Outcome:
    dest.mkdir()
    dest.chmod(0o755)
    result = tool(
        "tar",
        "--extract",
        f"--file={fixture}",
        f"--directory={dest}",
        "--numeric-owner",
        "--same-owner",
        "--same-permissions",
        "--xattrs",
        "--xattrs-include=*",
        "--no-overwrite-dir",
    )
    if result.returncode != 0:
        return Outcome(None, result.stderr.strip().splitlines()[-1])
    return Outcome(snapshot(dest, drop_xattrs=DROP_XATTRS), "")  # type: ignore[arg-type]


def by_python_tarfile(fixture: Path, dest: Path) -> Outcome:
    dest.mkdir()
    dest.chmod(0o755)
    try:
        with tarfile.open(fixture) as tar:
            tar.extractall(dest, numeric_owner=True)
    except (tarfile.TarError, OSError) as err:
        return Outcome(None, str(err))
    return Outcome(snapshot(dest, drop_xattrs=DROP_XATTRS), "")  # type: ignore[arg-type]


def outcomes(fixture: Path, tmp_path: Path, tools: tuple[str, ...]) -> dict[str, Outcome]:
    """Ours and the named tools' outcomes (only those: umoci fills a disk with some)."""
    layout = tmp_path / "layout"
    build_layout(layout, [fixture.read_bytes()], compression="none")
    runs = {
        "umoci": lambda: by_umoci(layout, tmp_path / "umoci"),
        "gnu-tar": lambda: by_gnu_tar(fixture, tmp_path / "gnu-tar"),
        "python-tarfile": lambda: by_python_tarfile(fixture, tmp_path / "python-tarfile"),
    }
    got = {"bootc-live": ours(layout, tmp_path / "ours")}
    got.update((tool, runs[tool]()) for tool in tools)
    return got


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_root_and("umoci", "tar")
    need(GO.is_dir(), f"needs {GO} (golang-1.19-src)")
    need((PYTHON / "testtar.tar").is_file(), "needs testtar.tar (libpython3.11-testsuite)")


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(fixture_id(p) for p in fixtures()) == sorted(EXPECTED)


@pytest.mark.parametrize("fixture", fixtures(), ids=fixture_id)
def test_fixture_as_a_layer(fixture: Path, tmp_path: Path) -> None:
    expected = EXPECTED[fixture_id(fixture)]
    tools = expected.oracles if isinstance(expected, Same) else ()
    tools = expected.refused_by if isinstance(expected, Refused) else tools
    got = outcomes(fixture, tmp_path, tools)
    mine = got["bootc-live"]
    if isinstance(expected, Refused):
        assert mine.tree is None, "bootc-live accepted it"
        assert "\n" not in mine.error and len(mine.error) <= 300, mine.error
        assert expected.line in mine.error, mine.error
        for tool in expected.refused_by:
            assert got[tool].tree is None, f"{tool} accepted it"
        return
    assert mine.tree is not None, mine.error
    if isinstance(expected, Paths):
        assert sorted(mine.tree) == sorted(p.encode() for p in expected.paths)
        return
    for tool in expected.oracles:
        theirs = got[tool]
        assert theirs.tree is not None, f"{tool} failed: {theirs.error}"
        assert diff(theirs.tree, mine.tree, names=(tool, "bootc-live")) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["pax-nul-path.tar", "neg-size.tar", "writer-big.tar"])
def test_broken_fixture_through_the_command_line(name: str, tmp_path: Path) -> None:
    """What a user sees: one bootc-live line, exit 1, nothing left where the root was to be."""
    build_layout(tmp_path / "layout", [(GO / name).read_bytes()])
    result = bootc_live("unpack", f"oci:{tmp_path / 'layout'}", os.fspath(tmp_path / "root"))
    stderr = assert_clean_failure(result)
    lines = [line for line in stderr.splitlines() if line.startswith("bootc-live:")]
    assert len(lines) == 1 and len(lines[0]) <= 400, stderr
    assert EXPECTED[f"go/{name}"].line in lines[0]  # type: ignore[union-attr]
    assert sorted(os.listdir(tmp_path)) == ["layout"]
