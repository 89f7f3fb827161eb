"""Differential tests: bootc-live unpack against Debian's umoci 0.4.7 on generated images.

Each case is a list of layers built with :mod:`imagegen`; both tools unpack the same OCI
layout and the resulting trees must be identical by :mod:`treewalk` (directory mtimes are not
compared: umoci restores parent directory times in its own way). Cases where umoci 0.4.7 departs
from SPEC.md §3 live in test_unpack_spec_cases.py instead:
- zstd layers (umoci 0.4.7 cannot decompress them);
- PAX global headers (umoci fails with "unknown typeflag 'g'");
- old GNU sparse files, typeflag 'S' (umoci fails with "unknown typeflag 'S'");
- bare ``.wh.``, ``.wh..``, ``.wh...`` (umoci deletes the parent directory, then fails);
- ``security.selinux`` / ``trusted.overlay.*`` xattrs (umoci applies them, the spec does not);
- media types that lie about the compression;
- multi-platform indexes (umoci refuses a tag reaching several manifests: "tag is ambiguous");
- implied parents inside a setgid directory (umoci lets the kernel's setgid inheritance apply).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagegen import (
    BLOCK,
    Entry,
    add_nested_index,
    block,
    build_image,
    build_layout,
    char,
    d,
    extended_header,
    f,
    fifo,
    hard,
    layer_tar,
    ns,
    opq,
    sha256,
    sparse,
    sym,
    wh,
    write_oci_archive,
)
from treewalk import diff, snapshot
from unpackers import (
    bootc_live,
    bootc_live_unpack,
    need_root_and,
    skopeo_copy,
    umoci,
    umoci_unpack,
)

pytestmark = pytest.mark.integration

# Drop security.selinux: umoci and the spec disagree on it (see the spec-case tests).
DROP_XATTRS = ("security.selinux",)


@pytest.fixture(autouse=True)
def _needs_umoci() -> None:
    need_root_and("umoci")


def blob(size: int, seed: str) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(size)


def cap_v2(permitted: int, effective: bool = True) -> bytes:
    """A VFS_CAP_REVISION_2 security.capability value (little-endian, 20 bytes)."""
    magic = 0x02000000 | (1 if effective else 0)
    return (
        magic.to_bytes(4, "little")
        + (permitted & 0xFFFFFFFF).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
        + (permitted >> 32).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
    )


CAP_NET_RAW = 1 << 13
CAP_NET_BIND_SERVICE = 1 << 10
LONG_PREFIXED = "usr/share/" + "p" * 80 + "/" + "q" * 90  # > 100 bytes, fits ustar prefix
LONG_PATH = "/".join(["deep" + "n" * 60] * 5)  # > 255 bytes, needs PAX path / GNU 'L'


@dataclass
class Ctx:
    """What a case may depend on: a private directory outside the unpacked root."""

    tmp_path: Path
    token: str

    @property
    def outside(self) -> Path:
        return self.tmp_path / "outside"


Layers = list[list[Entry]]


# --- cases ---------------------------------------------------------------------------------


def case_basic(ctx: Ctx) -> Layers:
    return [
        [
            d("bin"),
            d("etc"),
            f("etc/hostname", b"box\n"),
            f("etc/shadow", b"root:*:19000::::::\n", mode=0o640, gid=42),
            f("bin/su", blob(30_000, "su"), mode=0o4755),
            f("bin/wall", b"w", mode=0o2755, gid=5),
            f("bin/all-bits", b"a", mode=0o7777),
            f("bin/none", b"n", mode=0o000),
            d("tmp", mode=0o1777),
            d("srv", mode=0o700, uid=1000, gid=1000),
            f("srv/big", blob(3 * 2**20 + 17, "big"), uid=1000, gid=100, mode=0o600),
            f("srv/empty"),
            d("locked", mode=0o000),
            f("locked/inside", b"still written"),
            sym("bin/sh", "dash"),
            sym("abs-link", "/etc/hostname"),
            sym("dangling", "no/such/thing"),
            sym("self-loop", "self-loop"),
            d("dev"),
            char("dev/null", 1, 3),
            char("dev/tty", 5, 0, gid=5),
            block("dev/sda", 8, 0, gid=6),
            block("dev/nvme0n1p9", 259, 1_048_575),
            d("run"),
            fifo("run/initctl", mode=0o600),
            f("owned", b"o", uid=65534, gid=65534),
            f("numeric", b"n", uid=1234, gid=4321, uname="root", gname="root"),
        ],
        [
            f("etc/hostname", b"replaced\n", mtime=1_700_000_000),
            f("etc/motd", blob(100, "motd")),
            f("bin/dash", blob(5000, "dash"), mode=0o755),
            f("srv/second-layer", b"2", uid=1000, gid=1000),
        ],
        [f("third", b"3")],
    ]


def case_whiteouts(ctx: Ctx) -> Layers:
    return [
        [
            d("a"),
            f("a/keep", b"keep"),
            f("a/gone", b"gone"),
            d("a/sub"),
            f("a/sub/deep/x", b"x"),
            sym("a/sub/link", "/"),
            d("b"),
            f("b/f", b"old"),
            sym("link", "a/keep"),
            f("hl1", b"h"),
            hard("hl2", "hl1"),
            d("later", mode=0o700, uid=5),
            f("later/old", b"old"),
            f("will-be-dir", b"f"),
        ],
        [
            wh("a/gone"),
            wh("a/sub"),
            wh("missing"),
            wh("a/missing"),
            wh("nodir/x"),
            wh("link"),
            wh("hl1"),
            f("same-layer", b"new"),
            wh("same-layer"),
            f("a/keep2", b"k2"),
            wh("later"),
            f("later/new", b"new"),
            wh("b/f"),
            f("b/f", b"replaced"),
            wh("will-be-dir"),
            d("will-be-dir", mode=0o711),
        ],
        [f("a/gone", b"back")],
    ]


def case_opaque(ctx: Ctx) -> Layers:
    return [
        [
            d("o"),
            f("o/old1", b"1"),
            d("o/olddir"),
            f("o/olddir/x", b"x"),
            sym("o/oldlink", "/"),
            f("o/before", b"lower"),
            d("p"),
            f("p/old", b"p"),
            d("q"),
            d("q/r"),
            f("q/r/old", b"r"),
            f("q/keep", b"q"),
            d("top"),
        ],
        [
            f("o/before", b"upper"),
            d("o/olddir", mode=0o750),
            f("o/olddir/new-before", b"nb"),
            opq("o"),
            f("o/after", b"a"),
            d("o/newdir"),
            f("o/newdir/y", b"y"),
            opq("p"),
            d("q/r", mode=0o700),
            opq("q/r"),
            opq("nonexistent"),
            f("top/file", b"t"),
            opq("top"),
        ],
        [f("p/again", b"again"), opq("o"), f("o/third", b"3")],
    ]


def case_hardlinks(ctx: Ctx) -> Layers:
    return [
        [
            d("usr"),
            d("usr/bin"),
            f("usr/bin/python3.11", blob(40_000, "py"), mode=0o755),
            sym("usr/bin/py", "python3.11"),
            f("usr/bin/suid", b"s", mode=0o4755, uid=3, xattrs={"user.x": b"1"}),
            f("a", b"A"),
            hard("a2", "a"),
            sym("ldir", "usr/bin"),
            fifo("fifo1"),
            char("chr1", 1, 5),
            f("r", b"r"),
        ],
        [
            hard("usr/bin/python3", "usr/bin/python3.11"),
            hard("usr/bin/py-hl", "usr/bin/py"),
            hard("usr/bin/suid2", "usr/bin/suid"),
            sym("s-same", "nowhere"),
            hard("s-same-hl", "s-same"),
            hard("via-symlink-dir", "ldir/python3.11"),
            f("a", b"A-new"),
            hard("a3", "a2"),
            hard("meta-hl", "usr/bin/python3.11", mode=0o600, uid=7, mtime=5),
            hard("r", "a2"),
            hard("fifo-hl", "fifo1"),
            hard("chr-hl", "chr1"),
            f("same-layer", b"s"),
            hard("same-layer-hl", "same-layer"),
        ],
        [wh("usr/bin/python3.11"), hard("late", "usr/bin/python3")],
    ]


def case_symlink_escape(ctx: Ctx) -> Layers:
    outside = ctx.outside
    t = ctx.token
    return [
        [d("a"), d("b"), d("c"), d("etc"), f("etc/passwd", b"orig"), f("etc/old", b"old")],
        [
            sym("a", "/"),
            sym("b", "../" * 12),
            sym("c", os.fspath(outside)),
            sym("etc/shadow", os.fspath(outside / "victim")),
            sym("etc/dirlink", os.fspath(outside)),
        ],
        [
            f("a/etc/passwd", b"via-a"),
            f(f"a/escape-{t}-a", b"a"),
            f(f"b/escape-{t}-b", b"b"),
            f("c/file-c", b"c"),
            d("a/newdir", mode=0o700),
            f("a/newdir/f", b"f"),
            sym("b/sym-b", "x"),
            hard("c/hl-c", "etc/passwd"),
            hard("hl-through", "b/etc/passwd"),
            hard("hl-dotdot", "../../../../etc/passwd"),
            fifo("a/fifo-a"),
            char("b/dev-b", 1, 3),
            wh("a/etc/old"),
            d("a/etc", mode=0o700),
            f("etc/shadow", b"not the victim"),
            f("etc/dirlink/through", b"t"),
        ],
    ]


def case_absolute_and_dotdot_names(ctx: Ctx) -> Layers:
    t = ctx.token
    return [
        [
            d("q"),
            sym("a", "/"),
            f("/abs", b"abs"),
            d("/absdir", mode=0o750),
            f("./x/../y", b"y"),
            f(f"../escape-{t}-dotdot", b"dd"),
            f(f"q/../../../escape-{t}-q", b"q"),
            f(f"a/../../escape-{t}-mixed", b"m"),
            f(f"/../../escape-{t}-abs", b"abs"),
        ],
        [
            hard("/abs-hl", "/abs"),
            hard("hl-dotdot", f"../../../escape-{t}-dotdot"),
            sym("/abs-sym", "/abs"),
            wh(f"../../escape-{t}-q"),
        ],
    ]


def case_xattrs(ctx: Ctx) -> Layers:
    return [
        [
            d("bin"),
            f(
                "bin/ping",
                b"ping",
                mode=0o755,
                uid=1000,
                gid=1000,
                xattrs={"security.capability": cap_v2(CAP_NET_RAW)},
            ),
            f("bin/rootcap", b"rc", xattrs={"security.capability": cap_v2(CAP_NET_BIND_SERVICE)}),
            f(
                "bin/suidcap",
                b"sc",
                mode=0o4755,
                uid=1001,
                xattrs={"security.capability": cap_v2(CAP_NET_RAW, effective=False)},
            ),
            f(
                "data",
                b"d",
                xattrs={
                    "user.bin": b"\x00\xff\xfe\x00",
                    "user.empty": b"",
                    "user.utf": "é☃".encode(),
                    "user.big": blob(1000, "xattr"),
                    "trusted.t": b"\x01\x02",
                },
            ),
            d("xdir", xattrs={"user.d": b"1", "trusted.d": b"2", "trusted.overlay.opaque": b"y"}),
            sym("xlink", "data", xattrs={"trusted.l": b"sym"}),
            char("xdev", 1, 7, xattrs={"trusted.dev": b"dev"}),
            f("overlay", xattrs={"trusted.overlay.redirect": b"/x", "trusted.overlayx": b"kept"}),
        ],
        [
            d("xdir", xattrs={"user.new": b"n"}),
            f("data", b"d2", xattrs={"user.other": b"o"}),
            f("bin/ping-copy", b"ping", uid=1000, xattrs={"security.capability": cap_v2(1)}),
        ],
    ]


def case_long_names(ctx: Ctx) -> Layers:
    weird = b"caf\xe9/\xff\xfe-not-utf8"
    return [
        [
            f(LONG_PREFIXED, b"prefix"),
            f(LONG_PATH, b"long", mtime=ns(1_650_000_000, 1)),
            d(LONG_PATH.rsplit("/", 1)[0] + "/dir-" + "d" * 120, mode=0o750),
            sym("longlink", LONG_PATH),
            sym("short/long-target", "../" + "t" * 250),
            f(weird, b"w"),
            f(b"\xe9" * 200 + b"/" + b"\x80" * 150, b"long-non-utf8"),
            sym(b"weird-link\xfe", b"target\xff"),
            f("bigids", b"i", uid=4_000_000_000, gid=3_000_000),
        ],
        [
            hard("hl-to-long", LONG_PATH),
            hard("d" * 150, LONG_PREFIXED),
            wh(LONG_PREFIXED),
            hard(b"hl-weird\xfa", weird),
            wh(b"\xe9" * 200 + b"/" + b"\x80" * 150),
        ],
    ]


def case_replace(ctx: Ctx) -> Layers:
    return [
        [
            f("x", b"file"),
            d("y"),
            d("y/sub"),
            f("y/sub/z", b"z"),
            sym("s", "target"),
            d("t"),
            f("t/k", b"k"),
            f("u", b"u"),
            fifo("v"),
            d("m", mode=0o700, uid=1, gid=2, xattrs={"user.a": b"1"}),
            f("m/child", b"c"),
            sym("sd", "m"),
            f("fx", b"old", uid=3, xattrs={"user.old": b"o"}),
            char("cd", 1, 3),
            d("w", mode=0o755),
        ],
        [
            d("x", mode=0o750),
            f("x/in", b"in"),
            f("y", b"now a file"),
            d("s"),
            f("s/in", b"in s"),
            sym("t", "x"),
            sym("u", "y"),
            f("v", b"was a fifo"),
            d("m", mode=0o1777, uid=4, gid=5, xattrs={"user.b": b"2"}),
            f("sd", b"replaces a symlink to a dir"),
            f("fx", b"new"),
            fifo("cd"),
            f("w", b"dir became file"),
        ],
        [d("y", mode=0o700), f("y/again", b"dir again"), d("m", mode=0o755)],
    ]


def case_implied_parents(ctx: Ctx) -> Layers:
    return [
        [
            f("p/q/r/s", b"s"),
            sym("l/m/n", "x"),
            char("dev/x/y", 1, 5),
            d("late/child/dir"),
            f("late/file", b"f"),
            d("late", mode=0o700, uid=3, gid=4),
            d("explicit", mode=0o711),
        ],
        [f("explicit/a/b", b"b"), f("p/q/new", b"n"), d("p/q", mode=0o750)],
    ]


def case_root_entry(ctx: Ctx) -> Layers:
    return [
        [d("./", mode=0o750, gid=10, xattrs={"user.root": b"r"}), f("a", b"a")],
        [f("b", b"b"), d(".", mode=0o711, uid=1)],
    ]


def case_mtimes(ctx: Ctx) -> Layers:
    return [
        [
            f("epoch", b"e", mtime=0),
            f("nsec", b"n", mtime=ns(1_700_000_000, 123_456_789)),
            f("half", b"h", mtime="1700000000.5"),
            f("far", b"f", mtime=2**33),
            f("y2038", b"y", mtime=2**31 + 1),
            sym("link", "nsec", mtime=ns(1_600_000_000, 999_999_999)),
            fifo("pipe", mtime=ns(1_600_000_001, 1)),
            char("chr", 1, 3, mtime=ns(1_600_000_002, 2)),
            d("dir", mtime=ns(1_600_000_003, 3)),
            f("dir/in", b"i", mtime=ns(1_600_000_004, 4)),
        ],
        [f("nsec", b"n2", mtime=ns(1_700_000_001, 7))],
    ]


def case_sparse(ctx: Ctx) -> Layers:
    mib = 2**20
    return [
        [
            sparse("sparse/trailing-hole", 4 * mib, [(0, b"A" * 4096)]),
            sparse("sparse/leading-hole", 4 * mib, [(3 * mib, b"B" * 10)]),
            sparse("sparse/all-hole", 2 * mib, []),
            sparse(
                "sparse/many", 4 * mib, [(i * 65536, blob(512, f"s{i}")) for i in range(0, 60, 3)]
            ),
        ]
    ]


def case_tar_quirks(ctx: Ctx) -> Layers:
    return [
        [
            Entry("old-style-regular", "file", data=b"typeflag NUL", typeflag=b"\0"),
            f("./dot-slash", b"ds"),
            f("dup", b"first"),
            f("dup", b"second", mode=0o600),
            d("dupdir", mode=0o700),
            d("dupdir", mode=0o755, uid=2),
            f("pax-overrides", b"p", uid=1, pax={"uid": "77", "gid": "88"}),
            d("./etc/"),
            f("./etc/a", b"a"),
            f("./etc/b", b"b"),
            d("./opqdir"),
            f("./opqdir/old", b"old"),
            char("overlay-style-whiteout", 0, 0),
        ],
        [f("layer2", b"2"), wh("./etc/a"), opq("./opqdir"), f("./opqdir/new", b"new")],
    ]


def case_edge_paths(ctx: Ctx) -> Layers:
    return [
        [
            f("a//b/./c", b"c"),
            f("./d/./e", b"e"),
            d("x.wh.y"),
            f("x.wh.y/f", b"not a whiteout"),
            d("foo"),
            f("foo/x", b"x"),
            d("real"),
            f("real/x", b"x"),
            f("real/y", b"y"),
            sym("ln", "real"),
            d("real2"),
            f("real2/x", b"x"),
            sym("ln2", "real2"),
            d("real3"),
            sym("ln3", "real3"),
            d("holder"),
            f("holder/in", b"in"),
            f("t", b"t"),
            f("lw", b"lw"),
        ],
        [
            d(".wh.foo"),
            wh("ln/x"),
            opq("ln2"),
            d("ln3", mode=0o700),
            hard("holder", "t"),
            hard("lw-link", "lw"),
            wh("lw"),
            f("rl", b"1"),
            hard("rl-link", "rl"),
            f("rl", b"2"),
            d("z"),
            f("z/in", b"in"),
            f("z", b"file now"),
            d("zz"),
            f("zz/in", b"in"),
            hard("zz", "t"),
        ],
        [wh("real")],
    ]


def case_numbers(ctx: Ctx) -> Layers:
    return [
        [
            f("neg", b"n", mtime=-86400),
            f("neg-frac", b"n", mtime="-1.5"),
            sym("neg-link", "x", mtime=-5),
            char("bigdev", 4095, 1_048_575),
            block("bigblk", 4095, 0),
            f("maxids", b"m", uid=4_294_967_294, gid=4_294_967_294),
            f("ids-2-31", b"i", uid=2**31, gid=2**31 + 5),
        ]
    ]


CASES: dict[str, Callable[[Ctx], Layers]] = {
    name[len("case_") :]: fn for name, fn in globals().items() if name.startswith("case_")
}


# --- helpers -------------------------------------------------------------------------------


def make_ctx(tmp_path: Path) -> Ctx:
    ctx = Ctx(tmp_path, uuid.uuid4().hex[:12])
    ctx.outside.mkdir()
    (ctx.outside / "victim").write_bytes(b"host file")
    return ctx


def compare(umoci_root: Path, bootc_root: Path) -> list[str]:
    return diff(
        snapshot(umoci_root, drop_xattrs=DROP_XATTRS),
        snapshot(bootc_root, drop_xattrs=DROP_XATTRS),
        names=("umoci", "bootc-live"),
    )


def unpack_both(
    tmp_path: Path, layout: Path, tag: str = "latest", *, umask: int = 0o022
) -> list[str]:
    umoci_root = umoci_unpack(layout, tag, tmp_path / "umoci-bundle")
    bootc_root = bootc_live_unpack(f"oci:{layout}:{tag}", tmp_path / "bootc-root", umask=umask)
    return compare(umoci_root, bootc_root)


def assert_nothing_escaped(ctx: Ctx) -> None:
    """No file named for this test's token outside the roots; the host victim untouched."""
    strays = [
        stray
        for place in (Path("/"), ctx.tmp_path.parent, ctx.tmp_path)
        for stray in place.glob(f"escape-{ctx.token}-*")
    ]
    for stray in strays:
        stray.unlink()
    assert not strays, f"writes escaped the root: {strays}"
    assert sorted(p.name for p in ctx.outside.iterdir()) == ["victim"]
    assert (ctx.outside / "victim").read_bytes() == b"host file"


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_tree_as_umoci(name: str, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    layers = [layer_tar(entries) for entries in CASES[name](ctx)]
    build_layout(tmp_path / "layout", layers)
    try:
        assert unpack_both(tmp_path, tmp_path / "layout") == []
    finally:
        assert_nothing_escaped(ctx)


@pytest.mark.parametrize("name", ["long_names", "basic", "hardlinks", "mtimes"])
def test_gnu_format_same_tree_as_umoci(name: str, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    layers = [layer_tar(entries, fmt="gnu") for entries in CASES[name](ctx)]
    build_layout(tmp_path / "layout", layers)
    assert unpack_both(tmp_path, tmp_path / "layout") == []


@pytest.mark.parametrize("pax_first", [True, False])
def test_a_gnu_long_name_beside_a_pax_path_resolves_as_umoci_reads_it(
    pax_first: bool, tmp_path: Path
) -> None:
    """Both name one entry: Go's reader (umoci's) applies the PAX records, then the GNU long
    name and long link over them, whichever header came first."""
    gnu = layer_tar([sym("from-gnu-" + "n" * 120, "gnu-" + "t" * 120)], fmt="gnu")
    longs, entry = gnu[: 4 * BLOCK], gnu[4 * BLOCK : 5 * BLOCK]  # L, its name; K, its target
    pax = extended_header({"path": "from-pax", "linkpath": "pax-target"})
    member = (pax + longs if pax_first else longs + pax) + entry
    build_layout(tmp_path / "layout", [member + bytes(2 * BLOCK)])
    assert unpack_both(tmp_path, tmp_path / "layout") == []
    assert os.listdir(tmp_path / "bootc-root") == ["from-gnu-" + "n" * 120]


@pytest.mark.parametrize(
    ("compression", "kw"),
    [
        ("none", {}),
        ("gzip", {"members": 5}),
        (["none", "gzip", "none"], {}),
    ],
    ids=["uncompressed", "multi-member-gzip", "mixed"],
)
def test_compression_variants_same_tree_as_umoci(
    compression: str | list[str], kw: dict[str, int], tmp_path: Path
) -> None:
    layers = [layer_tar(entries) for entries in case_basic(make_ctx(tmp_path))]
    build_layout(tmp_path / "layout", layers, compression=compression, compress_kw=kw)
    assert unpack_both(tmp_path, tmp_path / "layout") == []


def test_tar_record_padding_and_empty_tar_same_tree_as_umoci(tmp_path: Path) -> None:
    padded = layer_tar([f("a", b"a"), d("d")], record_size=10240)
    build_layout(tmp_path / "layout", [padded, layer_tar([]), layer_tar([f("d/c", b"c")])])
    assert unpack_both(tmp_path, tmp_path / "layout") == []


def test_layer_without_end_of_archive_blocks_same_tree_as_umoci(tmp_path: Path) -> None:
    """Go's archive/tar (so umoci) accepts a tar that stops cleanly after an entry."""
    no_trailer = layer_tar([f("b", b"b"), f("d/c", b"c")])[: -2 * 512]
    build_layout(tmp_path / "layout", [layer_tar([f("a", b"a")]), no_trailer])
    assert unpack_both(tmp_path, tmp_path / "layout") == []


def test_zero_byte_layer_same_tree_as_umoci(tmp_path: Path) -> None:
    """A layer whose uncompressed stream is empty (no blocks at all): umoci treats it as empty."""
    build_layout(tmp_path / "layout", [layer_tar([f("a", b"a")]), b""])
    assert unpack_both(tmp_path, tmp_path / "layout") == []


def test_repeated_layer_blob_same_tree_as_umoci(tmp_path: Path) -> None:
    """The same blob twice in one manifest (it must not be freed after its first use)."""
    first = layer_tar([f("a", b"1"), d("dir")])
    build_layout(tmp_path / "layout", [first, layer_tar([f("a", b"2"), wh("dir")]), first])
    assert unpack_both(tmp_path, tmp_path / "layout") == []


def test_umask_does_not_leak_into_the_tree(tmp_path: Path) -> None:
    layers = [layer_tar(entries) for entries in case_implied_parents(make_ctx(tmp_path))]
    build_layout(tmp_path / "layout", layers)
    assert unpack_both(tmp_path, tmp_path / "layout", umask=0o077) == []


def test_tag_selection_in_multi_image_layout(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar([f("which", b"one")])], tag="one")
    build_layout(
        layout,
        [layer_tar([f("which", b"two")]), layer_tar([f("second", b"2")])],
        tag="two",
        more_tags=["stable"],
    )
    build_layout(layout, [layer_tar([f("which", b"latest")])], tag="latest")
    for tag in ("one", "stable", "latest"):
        umoci_root = umoci_unpack(layout, tag, tmp_path / f"u-{tag}")
        bootc_root = bootc_live_unpack(f"oci:{layout}:{tag}", tmp_path / f"b-{tag}")
        assert compare(umoci_root, bootc_root) == []
    assert (tmp_path / "b-stable" / "second").read_bytes() == b"2"


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nested_index_single_image_same_tree_as_umoci(depth: int, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layers = [layer_tar(entries) for entries in case_opaque(make_ctx(tmp_path))]
    add_nested_index(layout, [build_image(layout, layers)], tag="nested", depth=depth)
    assert unpack_both(tmp_path, layout, tag="nested") == []


# --- inputs both tools must reject ---------------------------------------------------------


def leftovers(path: Path) -> list[str]:
    """Everything under ``path`` (relative names); nothing when it does not exist."""
    return sorted(os.fspath(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# The next step of a layer that cannot be applied though its blob is intact.
BUILT_SO = "; the blob matches its digest, so the image was built so: rebuild it"


def both_fail(
    tmp_path: Path,
    layout: Path,
    *,
    umoci_says: str,
    we_say: str,
    tag: str = "latest",
    built_so: bool = True,
) -> None:
    """umoci and bootc-live both refuse the image, each naming the cause, and leave nothing.

    bootc-live unpacks into an existing empty DEST, so it has to empty it rather than remove
    it; ``we_say`` is its whole stderr, with shortened layer digests written ``sha256:…``, and
    BUILT_SO after it unless ``built_so`` is False (the refusal has a next step of its own).
    """
    bundle = tmp_path / "umoci-bundle"
    result = umoci("unpack", "--image", f"{layout}:{tag}", os.fspath(bundle))
    assert result.returncode != 0, "umoci accepted the image"
    assert umoci_says in result.stderr
    assert leftovers(bundle) == []
    dest, scratch = tmp_path / "bootc-root", tmp_path / "tmp"
    dest.mkdir()
    scratch.mkdir()
    ours = bootc_live("unpack", f"oci:{layout}:{tag}", os.fspath(dest), tmpdir=scratch)
    assert ours.returncode == 1
    said = re.sub(r"sha256:[0-9a-f]{12}…", "sha256:…", ours.stderr)
    assert said == f"bootc-live: {we_say}{BUILT_SO if built_so else ''}\n"
    assert dest.is_dir() and leftovers(dest) == []
    assert leftovers(scratch) == []


def test_hardlink_to_missing_target_fails(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout", [layer_tar([f("a"), hard("h", "nothere")])])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="unpack entry: h: link: no such file or directory",
        we_say="layer 1/1 sha256:…: layer entry /h is a hardlink to /nothere, which does not exist",
    )


def test_hardlink_to_whited_out_target_fails(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout", [layer_tar([f("a")]), layer_tar([wh("a"), hard("b", "a")])])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="unpack entry: b: link: no such file or directory",
        we_say="layer 2/2 sha256:…: layer entry /b is a hardlink to /a, which does not exist",
    )


def test_hardlink_to_directory_fails(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout", [layer_tar([d("x")]), layer_tar([hard("h", "x")])])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="unpack entry: h: link: operation not permitted",
        we_say="layer 2/2 sha256:…: layer entry /h is a hardlink to a directory",
    )


@pytest.mark.parametrize("same_layer", [True, False])
def test_file_as_parent_fails(same_layer: bool, tmp_path: Path) -> None:
    layers = [[f("a"), f("a/b")]] if same_layer else [[f("a")], [f("a/b")]]
    build_layout(tmp_path / "layout", [layer_tar(entries) for entries in layers])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="/umoci-bundle/rootfs/a: not a directory",
        we_say=f"layer {len(layers)}/{len(layers)} sha256:…: /a: a parent is not a directory",
    )


def test_symlink_loop_as_parent_fails(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout", [layer_tar([sym("loop", "loop")]), layer_tar([f("loop/x")])])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="/umoci-bundle/rootfs/loop/: too many levels of symbolic links",
        we_say="layer 2/2 sha256:…: /loop: too many levels of symbolic links",
    )


def test_hardlink_to_later_entry_fails(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout", [layer_tar([hard("h", "later"), f("later", b"x")])])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="unpack entry: h: link: no such file or directory",
        we_say="layer 1/1 sha256:…: layer entry /h is a hardlink to /later, which does not exist",
    )


def test_truncated_layer_fails(tmp_path: Path) -> None:
    tar = layer_tar([f("a", blob(20_000, "t")), f("b", b"b")])
    build_layout(tmp_path / "layout", [layer_tar([f("ok")]), tar[:5000]])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="unpack entry: a: unpack to regular file: short write: unexpected EOF",
        we_say="layer 2/2 sha256:…: the layer ends in the middle of a tar entry (truncated)",
    )


def test_diff_id_mismatch_fails(tmp_path: Path) -> None:
    tar = layer_tar([f("a", b"a")])
    wrong = "sha256:" + "0" * 64
    build_layout(
        tmp_path / "layout",
        [tar],
        config_extra={"rootfs": {"type": "layers", "diff_ids": [wrong]}},
    )
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says=f"diffid mismatch: got {sha256(tar)} expected {wrong}",
        we_say=(
            f"layer 1/1 sha256:… content does not match the config's diff_id (expected {wrong},"
            f" got {sha256(tar)}); the image is corrupt or was built wrongly"
        ),
        built_so=False,
    )


def test_corrupt_layer_blob_fails(tmp_path: Path) -> None:
    """umoci reads the damaged gzip stream before it checks the digest; we check first."""
    info = build_layout(tmp_path / "layout", [layer_tar([f("a", blob(5000, "c"))])])
    data = bytearray(info.layer_paths[0].read_bytes())
    data[len(data) // 2] ^= 0x55
    info.layer_paths[0].write_bytes(bytes(data))
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="read next entry: archive/tar: invalid tar header",
        we_say=(
            f"layer 1/1 sha256:… digest mismatch (expected {info.layer_digests[0]},"
            f" got {sha256(bytes(data))}); the image on the server changed or is corrupt"
        ),
        built_so=False,
    )


def test_header_after_a_lone_zero_block_fails(tmp_path: Path) -> None:
    lone = layer_tar([f("a", b"a")])[: -2 * 512] + bytes(512) + layer_tar([f("hidden", b"h")])
    build_layout(tmp_path / "layout", [lone])
    both_fail(
        tmp_path,
        tmp_path / "layout",
        umoci_says="read next entry: archive/tar: invalid tar header",
        we_say="layer 1/1 sha256:…: tar stream: a header after a lone zero block",
    )


def test_unknown_tag_fails(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar([f("a")])])
    both_fail(
        tmp_path,
        layout,
        tag="nope",
        umoci_says="tag is not found: nope",
        we_say=f"oci:{layout} has no image tagged 'nope' (tags: latest); fix the :TAG of SOURCE",
        built_so=False,
    )


# --- archives and layouts written by real tools --------------------------------------------


@pytest.mark.parametrize("blobs_first", [True, False])
def test_oci_archive_same_as_layout(blobs_first: bool, tmp_path: Path) -> None:
    layers = [layer_tar(entries) for entries in case_hardlinks(make_ctx(tmp_path))]
    build_layout(tmp_path / "layout", layers, tag="v1")
    archive = write_oci_archive(tmp_path / "layout", tmp_path / "img.tar", blobs_first=blobs_first)
    from_layout = bootc_live_unpack(f"oci:{tmp_path / 'layout'}:v1", tmp_path / "from-layout")
    from_archive = bootc_live_unpack(f"oci-archive:{archive}:v1", tmp_path / "from-archive")
    assert diff(snapshot(from_layout), snapshot(from_archive), names=("oci", "oci-archive")) == []


def test_skopeo_archive(tmp_path: Path) -> None:
    need_root_and("skopeo")
    layers = [layer_tar(entries) for entries in case_whiteouts(make_ctx(tmp_path))]
    build_layout(tmp_path / "layout", layers)
    archive = tmp_path / "skopeo.tar"
    skopeo_copy(f"oci:{tmp_path / 'layout'}:latest", f"oci-archive:{archive}:v2", tmpdir=tmp_path)
    umoci_root = umoci_unpack(tmp_path / "layout", "latest", tmp_path / "umoci-bundle")
    bootc_root = bootc_live_unpack(f"oci-archive:{archive}:v2", tmp_path / "bootc-root")
    assert compare(umoci_root, bootc_root) == []


def populate(root: Path) -> None:
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "os-release").write_text("ID=test\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(blob(10_000, "tool"))
    os.chmod(root / "usr" / "bin" / "tool", 0o4755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool-hl")
    os.symlink("../usr/bin/tool", root / "etc" / "tool-link")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.chown(root / "etc" / "os-release", 1000, 1000)
    os.setxattr(root / "usr" / "bin" / "tool", "user.made-by", b"umoci\xff")
    os.utime(root / "etc" / "os-release", ns=(0, 1_650_000_000_123_456_789))


def test_umoci_made_layout(tmp_path: Path) -> None:
    layout = tmp_path / "umoci-layout"
    bundle = tmp_path / "bundle"
    for args in (
        ("init", "--layout", os.fspath(layout)),
        ("new", "--image", f"{layout}:t"),
        ("unpack", "--image", f"{layout}:t", os.fspath(bundle)),
    ):
        result = umoci(*args)
        assert result.returncode == 0, result.stderr
    populate(bundle / "rootfs")
    assert umoci("repack", "--image", f"{layout}:t", os.fspath(bundle)).returncode == 0
    # second layer: delete one file, add another
    (bundle / "rootfs" / "fifo").unlink()
    (bundle / "rootfs" / "etc" / "added").write_bytes(b"layer 2")
    assert umoci("repack", "--image", f"{layout}:t", os.fspath(bundle)).returncode == 0
    umoci_root = umoci_unpack(layout, "t", tmp_path / "umoci-check")
    bootc_root = bootc_live_unpack(f"oci:{layout}:t", tmp_path / "bootc-root")
    assert compare(umoci_root, bootc_root) == []
    assert not (bootc_root / "fifo").exists() and (bootc_root / "etc" / "added").exists()


def test_a_layout_umoci_insert_wrote_unpacks_as_umoci_unpacks_it(tmp_path: Path) -> None:
    """umoci 0.4.7's `insert` writes its layer without the padding after the last member's
    data and without an end-of-archive marker; Go's tar reader (umoci, podman) ends the
    archive there, and so does this one, instead of calling the layer truncated."""
    layout, added = tmp_path / "layout", tmp_path / "added"
    added.mkdir()
    (added / "hi").write_bytes(b"hi\n")  # 3 bytes: 509 bytes of padding would follow
    for argv in (
        ("init", "--layout", str(layout)),
        ("new", "--image", f"{layout}:latest"),
        ("insert", "--image", f"{layout}:latest", str(added / "hi"), "/etc/hi"),
    ):
        result = umoci(*argv)
        assert result.returncode == 0, result.stderr
    assert unpack_both(tmp_path, layout) == []
    assert (tmp_path / "bootc-root/etc/hi").read_bytes() == b"hi\n"
