"""Layer application rules (SPEC.md §3), on in-memory layers applied to a temporary directory."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest

from bootc_live.runtime import apply as apply_mod
from bootc_live.runtime.apply import Applier, clean, rmtree
from bootc_live.runtime.errors import LayerError
from bootc_live.runtime.streams import FileStream
from imagegen import block, char, d, f, fifo, global_header, hard, layer_tar, opq, sparse, sym, wh
from treewalk import has_holes, snapshot
from unpackers import need


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "layer application sets owners and creates devices: needs root")


class Tree:
    """A root directory beside an `outside` directory that no layer may touch."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.outside = tmp / "outside"
        self.root.mkdir()
        self.outside.mkdir()
        (self.outside / "secret").write_text("untouched")
        self.warnings: list[str] = []

    def apply(self, *layers: list) -> Path:  # type: ignore[type-arg]
        applier = Applier(str(self.root), self.warnings.append)
        try:
            for entries in layers:
                applier.apply_layer(FileStream(io.BytesIO(layer_tar(entries))))
        finally:
            applier.close()
        return self.root

    def outside_intact(self) -> bool:
        return sorted(os.listdir(self.outside)) == ["secret"] and (
            (self.outside / "secret").read_text() == "untouched"
        )


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def test_clean_never_climbs_above_root() -> None:
    assert clean(b"./a/../../../b//c/.") == (b"b", b"c")
    assert clean(b"/etc/passwd") == (b"etc", b"passwd")
    assert clean(b"..") == ()


def test_all_kinds_with_metadata(tree: Tree) -> None:
    root = tree.apply(
        [
            d("bin", mode=0o755),
            f("bin/su", b"#!su", mode=0o4755, uid=0, gid=0),
            f("bin/wall", b"w", mode=0o2755, gid=5),
            d("tmp", mode=0o1777),
            f("data", b"x" * 100_000, mode=0o640, uid=123_456, gid=2_097_152),
            sym("link", "data", uid=7, gid=8),
            hard("data2", "data"),
            char("null", 1, 3, mode=0o666),
            block("sda", 8, 0, mode=0o660, gid=6),
            fifo("pipe", mode=0o600),
            f("nanos", b"n", mtime="1600000000.123456789"),
        ]
    )
    snap = snapshot(root)
    assert stat.S_IMODE(snap[b"bin/su"].mode) == 0o4755
    assert stat.S_IMODE(snap[b"bin/wall"].mode) == 0o2755
    assert stat.S_IMODE(snap[b"tmp"].mode) == 0o1777
    assert (snap[b"data"].uid, snap[b"data"].gid, snap[b"data"].size) == (
        123_456,
        2_097_152,
        100_000,
    )
    assert stat.S_IMODE(snap[b"data"].mode) == 0o640
    assert snap[b"link"].target == b"data" and (snap[b"link"].uid, snap[b"link"].gid) == (7, 8)
    assert snap[b"data"].links == snap[b"data2"].links == (b"data", b"data2")
    assert snap[b"null"].type == "char" and snap[b"null"].rdev == (1, 3)
    assert snap[b"sda"].type == "block" and snap[b"sda"].rdev == (8, 0) and snap[b"sda"].gid == 6
    assert snap[b"pipe"].type == "fifo" and stat.S_IMODE(snap[b"pipe"].mode) == 0o600
    assert snap[b"nanos"].mtime_ns == 1_600_000_000_123_456_789


def test_implied_parents_are_0755_root(tree: Tree) -> None:
    root = tree.apply([f("a/b/c/file", b"x", uid=5, gid=5)])
    for path in ("a", "a/b", "a/b/c"):
        st = os.lstat(root / path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)


def test_xattrs_byte_exact_and_capability_after_chown(tree: Tree) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw, v2
    root = tree.apply(
        [
            f(
                "ping",
                b"elf",
                mode=0o755,
                uid=1000,
                gid=1000,
                xattrs={"security.capability": cap, "user.raw": b"\xff\x00\xfe"},
            ),
            f(
                "labelled",
                b"",
                xattrs={
                    "security.selinux": b"system_u:object_r:bin_t:s0",
                    "trusted.overlay.opaque": b"y",
                    "trusted.keep": b"1",
                },
            ),
        ]
    )
    assert os.getxattr(root / "ping", "security.capability") == cap
    assert os.getxattr(root / "ping", "user.raw") == b"\xff\x00\xfe"
    assert os.stat(root / "ping").st_uid == 1000
    names = os.listxattr(root / "labelled")
    assert "trusted.keep" in names
    assert "trusted.overlay.opaque" not in names
    assert "security.selinux" not in names or os.getxattr(
        root / "labelled", "security.selinux"
    ) != (b"system_u:object_r:bin_t:s0")
    assert len([w for w in tree.warnings if "security.selinux" in w]) == 1


def test_pax_global_headers_are_ignored(tree: Tree) -> None:
    root = tree.apply(
        [
            global_header({"uid": "4242", "path": "hijacked", "SCHILY.xattr.user.g": "1"}),
            f("a", b"a", uid=1, pax={"comment": "local"}),
            f("b", b"b", uid=2),
        ]
    )
    assert sorted(os.listdir(root)) == ["a", "b"]
    assert (os.stat(root / "a").st_uid, os.stat(root / "b").st_uid) == (1, 2)
    assert "user.g" not in os.listxattr(root / "a")


def test_whiteouts_remove_lower_files_and_dirs(tree: Tree) -> None:
    root = tree.apply(
        [f("etc/a", b"a"), f("etc/b", b"b"), f("opt/x/y/z", b"z")],
        [wh("etc/a"), wh("opt/x"), wh("never/existed"), wh("etc/missing")],
    )
    assert sorted(os.listdir(root / "etc")) == ["b"]
    assert os.listdir(root / "opt") == []
    assert not (root / "never").exists()


DEEP = 1100  # directories nested deeper than Python recurses (1000 frames)


def test_a_tree_deeper_than_python_recurses_is_whited_out(tree: Tree) -> None:
    chain = [d("/".join(["d"] * (level + 1))) for level in range(DEEP)]
    bottom = "/".join(["d"] * DEEP) + "/bottom"
    root = tree.apply([*chain, f(bottom, b"b"), f("keep", b"k")], [wh("d")])
    assert os.listdir(root) == ["keep"] and tree.outside_intact()
    # This layer's own deep tree kept below an opaque whiteout, the lower content hidden.
    root = tree.apply([f("d/old", b"o")], [*chain, f(bottom, b"new"), opq("d")])
    assert os.listdir(root / "d") == ["d"] and (root / bottom).read_bytes() == b"new"
    rmtree(str(root))  # pytest removes old temporary trees with shutil, which recurses


def test_rmtree_takes_the_path_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ "" and a path ending in . or .. name no entry: nothing goes (os.path.abspath made ""
    the current directory); link/../name is name beside where the link leads."""
    (tmp_path / "elsewhere/sub").mkdir(parents=True)
    (tmp_path / "elsewhere/name").mkdir()
    (tmp_path / "name").mkdir()
    (tmp_path / "link").symlink_to("elsewhere/sub")
    (tmp_path / "keep").write_text("k")
    monkeypatch.chdir(tmp_path)
    for path in ("", ".", "./", "name/..", "name/../.", str(tmp_path / "name/..")):
        rmtree(path)
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "keep", "link", "name"]
    rmtree("link/../name")
    assert os.listdir(tmp_path / "elsewhere") == ["sub"] and (tmp_path / "name").is_dir()


def test_rmtree_keeps_going_past_what_it_cannot_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in "abcdefgh":
        (tmp_path / "t" / name / "deep").mkdir(parents=True)
        (tmp_path / "t" / name / "deep" / "file").write_text(name)
    real_unlink = os.unlink
    stuck = (tmp_path / "t/c/deep/file").stat().st_ino  # as if immutable (chattr +i)

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_ino == stuck:
            raise PermissionError(1, "Operation not permitted")
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        rmtree(str(tmp_path / "t"), keep_going=True)
    assert os.listdir(tmp_path / "t") == ["c"] and os.listdir(tmp_path / "t/c/deep") == ["file"]
    with pytest.raises(PermissionError):
        rmtree(str(tmp_path / "t"))  # not keep_going: the first failure stops it
    monkeypatch.undo()
    rmtree(str(tmp_path / "t"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh..."])
def test_degenerate_whiteouts_are_errors(tree: Tree, name: str) -> None:
    with pytest.raises(LayerError, match="invalid whiteout"):
        tree.apply([f("keep", b"k")], [f(f"dir/{name}")])
    assert (tree.root / "keep").exists()


@pytest.mark.parametrize("whiteout_first", [True, False])
def test_whiteouts_never_hide_the_same_layer(tree: Tree, whiteout_first: bool) -> None:
    upper = [f("etc/a", b"new"), f("d/new", b"n")]
    whiteouts = [wh("etc/a"), opq("d")]
    root = tree.apply(
        [f("etc/a", b"old"), f("d/old", b"o"), f("d/sub/deep", b"o")],
        whiteouts + upper if whiteout_first else upper + whiteouts,
    )
    assert (root / "etc/a").read_bytes() == b"new"
    assert sorted(os.listdir(root / "d")) == ["new"]


@pytest.mark.parametrize("before", [True, False])
def test_an_implied_parent_a_link_leaves_at_once_is_the_layers_own(
    tree: Tree, before: bool
) -> None:
    """Through `s -> x/..` an entry makes the missing x (an implied parent) and leaves it: x is
    still the layer's own, so the layer's opaque marker keeps it, before or after it in tar
    order (it went when the marker came after, and stayed when it came before)."""
    marker = [opq(".")]
    layer = [sym("s", "x/.."), *(marker if before else []), f("s/f", b"1"), *marker]
    root = tree.apply([f("lower")], layer)
    assert sorted(os.listdir(root)) == ["f", "s", "x"] and (root / "x").is_dir()


def test_opaque_keeps_redefined_subdirs_but_hides_their_lower_content(tree: Tree) -> None:
    root = tree.apply(
        [f("d/sub/old", b"o"), f("d/other", b"o")],
        [d("d/sub", mode=0o700), f("d/sub/new", b"n"), opq("d")],
    )
    assert sorted(os.listdir(root / "d")) == ["sub"]
    assert sorted(os.listdir(root / "d/sub")) == ["new"]
    assert stat.S_IMODE(os.stat(root / "d/sub").st_mode) == 0o700


def test_repeated_whiteouts_cost_no_more_than_one(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header each, a layer can repeat a whiteout or an opaque marker thousands of times; each
    repeat walked all the layer had added there (quadratic: minutes from a small layer). Once a
    place has no lower content left, a whiteout at or below it has nothing to do: the nodes
    looked at stay linear in the entries."""
    looked = [0]
    lstat = apply_mod._lstat

    def counted(name: bytes, dir_fd: int) -> os.stat_result | None:
        looked[0] += 1
        return lstat(name, dir_fd)

    monkeypatch.setattr(apply_mod, "_lstat", counted)
    many = 400
    added = [f(f"d/new{i}", b"n") for i in range(many)] + [f(f"x/new{i}") for i in range(many)]
    repeats = [opq("d"), wh("x"), wh("d/new0"), opq("x"), wh("d/old")] * many
    root = tree.apply([f("d/old", b"o"), f("x/old", b"o"), f("d/sub/old")], [*added, *repeats])
    assert sorted(os.listdir(root / "d")) == sorted(f"new{i}" for i in range(many))
    assert sorted(os.listdir(root / "x")) == sorted(f"new{i}" for i in range(many))
    entries = len(added) + len(repeats)
    assert looked[0] < 3 * entries, looked  # each repeat walking 400 names: 400 x 2000
    # A name whited out, then the same layer's own directory there: its opaque marker hides
    # nothing, and a whiteout of the parent's still removes what the lower layers had.
    root = tree.apply(
        [f("p/n/lower"), f("p/other")],
        [wh("p/n"), f("p/n/mine"), opq("p/n"), opq("p"), opq("p")],
    )
    assert sorted(os.listdir(root / "p")) == ["n"] and os.listdir(root / "p/n") == ["mine"]
    # An opaque directory still goes when whited out itself: its marker hid only what was below.
    assert not (tree.apply([f("q/lower")], [opq("q"), wh("q")]) / "q").exists()


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of `name` in apply.py's module (`os.open` through a counting os)."""
    calls = [0]
    real = getattr(apply_mod, name) if name != "open" else os.open

    def counted(*args: object, **kw: object) -> object:
        calls[0] += 1
        return real(*args, **kw)  # type: ignore[operator]

    if name == "open":

        class CountingOs:
            def __getattr__(self, attr: str) -> object:
                return counted if attr == "open" else getattr(os, attr)

        monkeypatch.setattr(apply_mod, "os", CountingOs())
    else:
        monkeypatch.setattr(apply_mod, name, counted)
    return calls


def test_whiteouts_nested_deepest_first_walk_each_level_once(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opaque markers or whiteouts from the deepest directory up: each used to walk all the
    layer had added below it again (depth x entries: a 70 KiB gzip layer took a minute)."""
    looked = counting(monkeypatch, "_lstat")
    depth, files = 150, 150
    chain = "/".join(["a"] * depth)
    added = [f(f"{chain}/f{i}") for i in range(files)]
    levels = ["/".join(["a"] * k) for k in range(depth, 0, -1)]
    root = tree.apply([f("a/lower"), f(f"{chain}/lower")], [*added, *map(opq, levels)])
    assert sorted(os.listdir(root / chain)) == sorted(f"f{i}" for i in range(files))
    assert os.listdir(root / "a") == ["a"]
    assert looked[0] < 4 * (depth + files), looked  # depth x files: 22 500
    looked[0] = 0
    root = tree.apply([f("b/lower")], [*(f(f"b/{chain}/f{i}") for i in range(files))])
    tree.apply([*(f(f"b/{chain}/g{i}") for i in range(files)), *(wh(f"b/{p}") for p in levels)])
    assert sorted(os.listdir(root / f"b/{chain}")) == sorted(f"g{i}" for i in range(files))
    assert looked[0] < 4 * (depth + 2 * files), looked
    rmtree(str(root))


def test_entries_below_a_link_chain_pay_its_expansion_once(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each entry below a chain of links expanded the whole chain again, from the root: 40
    links of 4000 bytes made a 4 KiB gzip layer take a minute. Siblings now start from their
    cached parent; a layer that keeps dropping the cache (replacing a link before each entry)
    is refused once it has followed far more link names than its entries can need."""
    opened = counting(monkeypatch, "open")
    hops = "a/../" * 300  # 600 names a link
    chain = [sym(f"L{k}", hops + (f"L{k + 1}" if k < 40 else "a")) for k in range(1, 41)]
    entries = 200
    root = tree.apply([d("a"), *chain, *(f(f"L1/d{i}/f", b"x") for i in range(entries))])
    assert len(os.listdir(root / "a")) == entries and tree.outside_intact()
    one_walk = 40 * 300 * 2
    assert opened[0] < one_walk + 20 * entries, opened  # was about one_walk per entry
    # The cache dropped before each entry (a link replaced): every walk pays the chain again.
    opened[0] = 0
    dropping = [e for i in range(entries) for e in (sym("z", f"t{i}"), f(f"L1/e{i}/f"))]
    with pytest.raises(LayerError, match="go through symbolic links too often"):
        tree.apply(dropping)
    assert opened[0] < 2 * apply_mod._LINK_STEPS, opened  # a few walks, not 200: 4.8 million


def test_the_mtimes_of_deep_directories_take_one_walk(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories a layer changed get their mtimes at its end, each found from the root:
    with more parents than the cache holds, each re-walked the whole depth (depth x entries).
    In the keys' order the walks share their way down."""
    depth, parents, rounds = 200, 80, 5
    chain = "/".join(["a"] * depth)
    tree.apply([*(d(f"{chain}/p{j}") for j in range(parents))])
    opened, at_end = counting(monkeypatch, "open"), [0]
    set_times = Applier._set_dir_times

    def counted_at_end(self: Applier) -> None:
        before = opened[0]
        set_times(self)
        at_end[0] += opened[0] - before

    monkeypatch.setattr(Applier, "_set_dir_times", counted_at_end)
    layer = [sym("L", chain)]
    layer += [d(f"L/p{j}/d{i}", mtime=7) for i in range(rounds) for j in range(parents)]
    root = tree.apply(layer)
    assert os.stat(root / chain / "p5/d3").st_mtime == 7
    keys = parents * (rounds + 1)
    assert at_end[0] < 10 * (depth + keys), at_end  # depth x keys: 96 000
    rmtree(str(root))


def test_a_cached_parent_counts_the_links_it_took(tree: Tree) -> None:
    """A lookup follows 40 links at most, all its names together (the kernel's rule): a name
    walked from a cached parent adds to the links the parent took."""
    chain = [sym(f"P{k}", f"P{k + 1}" if k < 40 else "a") for k in range(1, 41)]
    root = tree.apply([d("a"), sym("a/s", "."), *chain, f("P1/x", b"x")])
    assert (root / "a/x").read_bytes() == b"x"
    with pytest.raises(OSError) as kernel:
        os.stat(root / "P1/s/y")
    assert kernel.value.errno == errno.ELOOP  # the oracle
    with pytest.raises(LayerError, match="too many levels of symbolic links"):
        tree.apply([f("P1/x2"), f("P1/s/y")])


def test_a_directory_replaced_later_in_its_layer_keeps_no_mtime(tree: Tree) -> None:
    """The layer's directory mtimes are set at its end, at their real places, following no
    link: x/d0 (mtime 5) is gone when x became a link to y, and y/d0 keeps its own."""
    root = tree.apply(
        [d("y"), d("y/d0", mtime=100), d("y", mtime=100)],
        [d("x/d0", mtime=5), sym("x", "y")],
    )
    assert (root / "x").is_symlink() and os.lstat(root / "y/d0").st_mtime == 100


def test_file_and_directory_replace_each_other(tree: Tree) -> None:
    root = tree.apply(
        [f("was-file", b"f"), f("was-dir/a/b", b"b"), sym("was-link", "/etc")],
        [
            d("was-file", mode=0o750),
            f("was-file/inside", b"i"),
            f("was-dir", b"now a file"),
            d("was-link"),
        ],
    )
    assert (root / "was-file/inside").read_bytes() == b"i"
    assert stat.S_IMODE(os.stat(root / "was-file").st_mode) == 0o750
    assert (root / "was-dir").read_bytes() == b"now a file"
    assert (root / "was-link").is_dir() and not (root / "was-link").is_symlink()


def test_directory_entry_redefines_mode_owner_and_xattrs(tree: Tree) -> None:
    root = tree.apply(
        [d("srv", mode=0o755, xattrs={"user.old": b"1"}), f("srv/keep", b"k")],
        [d("srv", mode=0o700, uid=33, gid=33, xattrs={"user.new": b"2"}, mtime="1700000000.5")],
    )
    st = os.stat(root / "srv")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 33, 33)
    assert os.listxattr(root / "srv") == ["user.new"]
    assert (root / "srv/keep").read_bytes() == b"k"
    assert st.st_mtime_ns == 1_700_000_000_500_000_000


def test_directory_mtimes_survive_their_contents(tree: Tree) -> None:
    root = tree.apply(
        [d("a", mtime=1_000_000_000), f("a/x", b"x")],
        [f("a/y", b"y")],
    )
    assert os.stat(root / "a").st_mtime_ns == 1_000_000_000 * 10**9


@pytest.mark.parametrize("entry_first", [True, False])
def test_a_directory_mtime_holds_however_later_entries_name_the_directory(
    tree: Tree, entry_first: bool
) -> None:
    """usr/lib/x's own entry says its mtime; lib/x/f (lib → usr/lib) in the same layer, or
    a whiteout there, changes its contents but not that mtime."""
    entry = d("usr/lib/x", mtime=1_000_000_000)
    through_link = [f("lib/x/f", b"f"), wh("lib/x/old")]
    root = tree.apply(
        [d("usr"), d("usr/lib"), sym("lib", "usr/lib"), f("usr/lib/x/old", b"o")],
        [entry, *through_link] if entry_first else [*through_link, entry],
    )
    assert os.listdir(root / "usr/lib/x") == ["f"]
    assert os.stat(root / "usr/lib/x").st_mtime_ns == 1_000_000_000 * 10**9


def test_hardlinks_to_lower_layers_and_to_symlinks(tree: Tree) -> None:
    root = tree.apply(
        [f("usr/bin/python3.11", b"py"), sym("usr/bin/py", "python3.11")],
        [hard("usr/bin/python3", "usr/bin/python3.11"), hard("usr/bin/py-again", "usr/bin/py")],
    )
    assert os.stat(root / "usr/bin/python3").st_ino == os.stat(root / "usr/bin/python3.11").st_ino
    link = os.lstat(root / "usr/bin/py-again")
    assert stat.S_ISLNK(link.st_mode) and link.st_ino == os.lstat(root / "usr/bin/py").st_ino


def test_hardlink_to_missing_target_is_an_error(tree: Tree) -> None:
    with pytest.raises(LayerError, match="does not exist"):
        tree.apply([hard("a", "nothing/here")])
    with pytest.raises(LayerError, match="does not exist"):
        tree.apply([hard("b", "also-missing")])


def test_hardlink_to_directory_is_an_error(tree: Tree) -> None:
    with pytest.raises(LayerError, match="directory"):
        tree.apply([d("dir"), hard("link", "dir")])


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_sparse_files_keep_their_holes(tree: Tree, fmt: str) -> None:
    size = 4 << 20
    segments = [
        (0, b"head".ljust(512, b"h")),
        (1 << 20, b"middle".ljust(1024, b"m")),
        (size - 512, b"end".rjust(512, b"e")),
    ]
    applier = Applier(str(tree.root), tree.warnings.append)
    try:
        layer = layer_tar([sparse("disk.img", size, segments)], fmt=fmt)
        applier.apply_layer(FileStream(io.BytesIO(layer)))
    finally:
        applier.close()
    data = (tree.root / "disk.img").read_bytes()
    expected = bytearray(size)
    for offset, chunk in segments:
        expected[offset : offset + len(chunk)] = chunk
    assert data == bytes(expected)
    assert has_holes(tree.root / "disk.img")


def test_long_and_non_utf8_names(tree: Tree) -> None:
    long_dir = "d" * 120
    long_name = "n" * 250
    root = tree.apply(
        [
            f(f"{long_dir}/{long_name}", b"long"),
            f(b"caf\xe9-\xff", b"latin1"),
            sym(b"to-\xff", b"caf\xe9-\xff"),
            hard("x" * 200, b"caf\xe9-\xff"),
        ]
    )
    assert (root / long_dir / long_name).read_bytes() == b"long"
    assert os.readlink(os.fsencode(root) + b"/to-\xff") == b"caf\xe9-\xff"
    assert (root / ("x" * 200)).read_bytes() == b"latin1"


# -- escapes ---------------------------------------------------------------------------------


def test_dotdot_and_absolute_names_stay_inside(tree: Tree) -> None:
    root = tree.apply(
        [f("../outside/secret", b"pwned"), f("/abs/file", b"a"), f("a/../../../../b", b"b")]
    )
    assert tree.outside_intact()
    assert (root / "outside/secret").read_bytes() == b"pwned"
    assert (root / "abs/file").exists() and (root / "b").exists()


@pytest.mark.parametrize(
    ("target", "lands_in"),
    [
        ("../outside", "outside"),
        ("../../outside", "outside"),
        ("/", "."),
        ("../..", "."),
        ("ABSOLUTE", "ABSOLUTE"),
    ],
)
def test_symlinked_parents_resolve_inside_the_root(tree: Tree, target: str, lands_in: str) -> None:
    absolute = os.fspath(tree.outside)
    target = target.replace("ABSOLUTE", absolute)
    lands_in = lands_in.replace("ABSOLUTE", absolute.lstrip("/"))
    root = tree.apply(
        [sym("escape", target)],
        [f("escape/secret", b"pwned"), f("escape/new", b"new")],
    )
    assert tree.outside_intact()
    assert (root / lands_in / "secret").read_bytes() == b"pwned"
    assert (root / lands_in / "new").read_bytes() == b"new"


def test_chains_of_symlinks_and_loops(tree: Tree) -> None:
    root = tree.apply(
        [sym("a", "b/c"), sym("b", "/x/../y"), d("y/c")],
        [f("a/file", b"through two links")],
    )
    assert (root / "y/c/file").read_bytes() == b"through two links"
    with pytest.raises(LayerError, match="symbolic links"):
        tree.apply([sym("l1", "l2"), sym("l2", "l1")], [f("l1/x", b"x")])
    assert tree.outside_intact()


def test_hardlinks_and_whiteouts_through_symlinks_stay_inside(tree: Tree) -> None:
    outside = os.fspath(tree.outside)
    with pytest.raises(LayerError, match="does not exist"):
        tree.apply([sym("out", outside)], [hard("stolen", "out/secret")])
    assert not (tree.root / "stolen").exists()
    root = tree.apply(
        [sym("rel", "../outside"), f("outside/secret", b"inside copy")],
        [wh("rel/secret"), wh("../outside/secret")],
    )
    assert tree.outside_intact()
    assert not (root / "outside/secret").exists()


def test_entry_replacing_a_symlink_does_not_follow_it(tree: Tree) -> None:
    outside = os.fspath(tree.outside)
    root = tree.apply([sym("victim", f"{outside}/secret")], [f("victim", b"replaced")])
    assert tree.outside_intact()
    assert (root / "victim").read_bytes() == b"replaced" and not (root / "victim").is_symlink()


def test_parent_that_is_a_file_is_an_error(tree: Tree) -> None:
    with pytest.raises(LayerError, match="not a directory"):
        tree.apply([f("file", b"f")], [f("file/child", b"c")])


def test_truncated_layer_is_an_error(tree: Tree) -> None:
    data = layer_tar([f("big", b"x" * 10_000)])[:3000]
    applier = Applier(str(tree.root), tree.warnings.append)
    try:
        with pytest.raises(LayerError, match="unexpected end"):
            applier.apply_layer(FileStream(io.BytesIO(data)))
    finally:
        applier.close()


def test_a_deep_tree_needs_few_open_files(tree: Tree) -> None:
    """Each walk held one descriptor per directory from the root down: a chain 600 deep failed
    with 'Too many open files' under a limit of 256 (1024 is the usual soft limit; umoci
    unpacks 1000 deep). Now a walk holds only its current directory."""
    import resource

    depth = 600
    chain = [d("/".join(["a"] * (level + 1))) for level in range(depth)]
    leaf = "/".join(["a"] * depth) + "/leaf"
    # A symbolic link at the bottom leading up 599 levels by `..`, and a hard link through it.
    up = "/".join([".."] * (depth - 1))
    link = "/".join(["a"] * depth) + "/up"
    soft, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard_limit))
    try:
        root = tree.apply([*chain, f(leaf, b"x"), sym(link, up), hard(f"{link}/a/top", leaf)])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard_limit))
    assert (root / leaf).read_bytes() == b"x"
    assert os.path.samefile(root / "a/a/top", root / leaf) and tree.outside_intact()
    rmtree(str(root))


# Run by the test below: an Applier whose process may open one file more than it holds (the
# root's descriptor), applying a tar GNU tar wrote.
AT_THE_FILE_LIMIT = r"""
import io, os, resource, sys
from bootc_live.runtime.apply import Applier
from bootc_live.runtime.errors import LayerError
from bootc_live.runtime.streams import FileStream
layer = io.BytesIO(sys.stdin.buffer.read())
held = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (held + 1, hard))
applier = Applier(sys.argv[1], print)
try:
    applier.apply_layer(FileStream(layer))
except LayerError as err:
    print(err.line())
"""


def test_a_layer_applied_at_the_open_files_limit_names_the_limit(tmp_path: Path) -> None:
    """EMFILE is the process's limit, not the root filesystem's refusal ("check the space, the
    inodes and the limits where the root is written")."""
    import subprocess
    import sys

    tree = tmp_path / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/c").write_text("c")
    tar = ["tar", "--sort=name", "-C", str(tree), "-cf", "-", "a"]
    layer = subprocess.run(tar, check=True, capture_output=True).stdout
    (tmp_path / "root").mkdir()
    child = subprocess.run(
        [sys.executable, "-c", AT_THE_FILE_LIMIT, str(tmp_path / "root")],
        input=layer,
        env={"PYTHONPATH": str(Path(apply_mod.__file__).parents[2])},
        capture_output=True,
        check=False,
        timeout=60,
    )
    said = child.stdout.decode().splitlines()
    assert len(said) == 1 and said[0].startswith("cannot apply /a"), child.stderr
    assert said[0].endswith(
        ": Too many open files; too many files are open: raise the limit (ulimit -n, LimitNOFILE=)"
    )
