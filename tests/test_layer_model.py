"""Property-based: random multi-layer images over the names a, b, c (files, directories,
symlinks to directories, relative and absolute, hardlinks, whiteouts, opaque markers,
replacements in every order) applied by bootc-live, checked against a small in-memory model of
the changeset rules (SPEC.md §3 and apply.py's docstring). Nothing may appear beside the root.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bootc_live.runtime.apply import Applier
from bootc_live.runtime.errors import LayerError
from bootc_live.runtime.streams import FileStream
from imagegen import Entry, d, f, hard, layer_tar, opq, sym, wh
from treewalk import snapshot
from unpackers import need

Key = tuple[str, ...]
NAMES = ("a", "b", "c")
TARGETS = ("a", "b", "c", "a/b", "../a", "../../b", "../../../../c", "/a", "/b/c", ".", "/", "x")
TARGETS += ("x/..", "a/x/..", "/x/../b")  # implied parents a `..` leaves at once
MAX_LINKS = 40  # as apply.py


@dataclass(eq=False)
class Node:
    """One inode of the model (hardlinks share it)."""

    kind: str  # file, dir, symlink
    mode: int = 0o755
    data: bytes = b""
    target: str = ""


class Failed(Exception):
    """The model says the layer is refused."""


class Missing(Exception):
    """A path does not resolve (without creating parents)."""


@dataclass
class Model:
    tree: dict[Key, Node] = field(default_factory=lambda: {(): Node("dir")})

    def resolve(self, key: Key, create: bool, created: set[Key] | None = None) -> Key:
        """The real location of directory `key`: symlinks followed inside the root. The
        implied parents made on the way (also where a link's `..` leaves them) go into
        `created` with their ancestors: the layer's own, which its whiteouts keep."""
        real: list[str] = []
        todo = list(reversed(key))
        links = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if real:
                    real.pop()
                continue
            here = (*real, part)
            node = self.tree.get(here)
            if node is None:
                if not create:
                    raise Missing
                self.tree[here] = Node("dir", 0o755)  # an implied parent
                if created is not None:
                    created.update(here[:i] for i in range(len(here) + 1))
            elif node.kind == "symlink":
                links += 1
                if links > MAX_LINKS:
                    raise Failed("too many levels of symbolic links")
                if node.target.startswith("/"):
                    real = []
                todo.extend(reversed(node.target.split("/")))
                continue
            elif node.kind != "dir":
                raise Failed("a parent is not a directory")
            real.append(part)
        return tuple(real)

    def children(self, key: Key) -> list[Key]:
        return [k for k in self.tree if len(k) == len(key) + 1 and k[: len(key)] == key]

    def remove(self, key: Key) -> None:
        for k in [k for k in self.tree if k[: len(key)] == key]:
            del self.tree[k]

    def apply_layer(self, entries: list[tuple]) -> None:  # type: ignore[type-arg]
        touched: set[Key] = set()
        for op, key, *args in entries:
            if op in ("whiteout", "opaque"):
                self._whiteout(op, key, touched)
                continue
            real = (*self.resolve(key[:-1], create=True, created=touched), key[-1])
            touched.update(real[:i] for i in range(len(real) + 1))
            existing = self.tree.get(real)
            if op == "dir":
                if existing is not None and existing.kind != "dir":
                    self.remove(real)
                    existing = None
                if existing is None:
                    self.tree[real] = Node("dir", args[0])
                else:
                    existing.mode = args[0]
            elif op == "hardlink":
                self._hardlink(key, real, existing, args[0])
            else:
                if existing is not None:
                    self.remove(real)
                if op == "file":
                    self.tree[real] = Node("file", args[1], data=args[0])
                else:
                    self.tree[real] = Node("symlink", 0o777, target=args[0])

    def _hardlink(self, key: Key, real: Key, existing: Node | None, target: Key) -> None:
        if target == key:
            if existing is None:
                raise Failed("hardlink to itself, missing")
            return
        try:
            where = (*self.resolve(target[:-1], create=False), target[-1])
        except Missing:
            raise Failed("hardlink target missing") from None
        node = self.tree.get(where)
        if node is None or node.kind == "dir":
            raise Failed("hardlink target missing or a directory")
        if existing is node:
            return
        if existing is not None and where[: len(real)] == real:
            raise Failed("hardlink to what replacing it removes")
        if existing is not None:
            self.remove(real)
        self.tree[real] = node

    def _whiteout(self, op: str, key: Key, touched: set[Key]) -> None:
        parent = key if op == "opaque" else key[:-1]
        try:
            real_parent = self.resolve(parent, create=False)
        except (Missing, Failed):
            return
        if real_parent in self.tree and self.tree[real_parent].kind != "dir":
            return
        victims = self.children(real_parent) if op == "opaque" else [(*real_parent, key[-1])]
        for victim in victims:
            self._remove_lower(victim, touched)

    def _remove_lower(self, key: Key, touched: set[Key]) -> None:
        node = self.tree.get(key)
        if node is None:
            return
        if key not in touched:
            self.remove(key)
        elif node.kind == "dir":
            for child in self.children(key):
                self._remove_lower(child, touched)

    def expected(self) -> dict[bytes, tuple]:  # type: ignore[type-arg]
        groups: dict[int, list[bytes]] = {}
        for key, node in self.tree.items():
            if node.kind != "dir":
                groups.setdefault(id(node), []).append("/".join(key).encode())
        out = {}
        for key, node in self.tree.items():
            path = "/".join(key).encode() or b"."
            links = tuple(sorted(groups.get(id(node), []))) if node.kind != "dir" else ()
            out[path] = (
                node.kind,
                node.mode if node.kind != "symlink" else None,
                node.data if node.kind == "file" else None,
                node.target.encode() if node.kind == "symlink" else None,
                links if len(links) > 1 else (),
            )
        return out


def observed(root: Path) -> dict[bytes, tuple]:  # type: ignore[type-arg]
    out = {}
    for path, rec in snapshot(root).items():
        data = (root / os.fsdecode(path)).read_bytes() if rec.type == "file" else None
        out[path] = (
            rec.type,
            stat.S_IMODE(rec.mode) if rec.type != "symlink" else None,
            data,
            rec.target,
            rec.links,
        )
    out[b"."] = ("dir", 0o755, None, None, ())  # the root's own mode is the test's
    return out


# -- generation ---------------------------------------------------------------------------------

_BY_DEPTH = [[(n,) for n in NAMES]]
for _ in range(2):
    _BY_DEPTH.append([(*p, n) for p in _BY_DEPTH[-1] for n in NAMES])
any_path = st.sampled_from([p for paths in _BY_DEPTH for p in paths])


def ops(path: st.SearchStrategy[Key], target: st.SearchStrategy[str]) -> st.SearchStrategy[tuple]:  # type: ignore[type-arg]
    files = st.tuples(st.just("file"), path, st.sampled_from([b"1", b"22", b""]), st.just(0o644))
    dirs = st.tuples(st.just("dir"), path, st.sampled_from([0o755, 0o700, 0o750]))
    symlinks = st.tuples(st.just("symlink"), path, target)
    return st.one_of(  # hardlinks to missing paths end an example: fewer of them
        files,
        files,
        dirs,
        dirs,
        symlinks,
        symlinks,
        st.tuples(st.just("hardlink"), path, path),
        st.tuples(st.just("whiteout"), path),
        st.tuples(st.just("opaque"), st.one_of(st.just(()), path)),
    )


@st.composite
def images(draw: st.DrawFn) -> list[list[tuple]]:  # type: ignore[type-arg]
    """Layers whose entries mostly meet: a few hot paths, their children, and links to them."""
    hot = draw(st.lists(st.sampled_from(_BY_DEPTH[0] + _BY_DEPTH[1]), min_size=1, max_size=2))
    below = [(*h, n) for h in hot for n in NAMES]
    path = st.one_of(st.sampled_from(hot), st.sampled_from(below), any_path)
    to_hot = [prefix + "/".join(h) for h in hot for prefix in ("/", "", "../")]
    target = st.sampled_from(TARGETS + tuple(to_hot))
    layer = st.lists(ops(path, target), min_size=1, max_size=10)
    image = draw(st.lists(layer, min_size=1, max_size=3))
    # Hardlinks mostly to what an earlier entry made (a missing target ends the example).
    made: list[Key] = []
    for entries in image:
        for i, (op, key, *_args) in enumerate(entries):
            if op == "hardlink" and made and draw(st.integers(0, 9)):
                entries[i] = (op, key, draw(st.sampled_from(made)))
            elif op in ("file", "symlink"):
                made.append(key)
    return image


def tar_entry(op: tuple) -> Entry:  # type: ignore[type-arg]
    kind, key, *args = op
    name = "/".join(key)
    if kind == "file":
        return f(name, args[0], mode=args[1])
    if kind == "dir":
        return d(name, mode=args[0])
    if kind == "symlink":
        return sym(name, args[0])
    if kind == "hardlink":
        return hard(name, "/".join(args[0]))
    if kind == "whiteout":
        return wh(name)
    return opq(name or ".")


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "layer application sets owners: needs root")


@settings(
    max_examples=1000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(images())
# What this test found (and the everyday case), kept as fixed examples:
@example([[("file", ("a",), b"1", 0o644), ("symlink", ("c",), "."), ("opaque", ("c",))]])
@example([[("file", ("a", "a"), b"1", 0o644), ("hardlink", ("a",), ("a", "a"))]])
@example(
    [
        [
            ("file", ("a",), b"1", 0o644),
            ("file", ("b", "a"), b"1", 0o644),
            ("hardlink", ("b", "a"), ("a",)),
            ("hardlink", ("b",), ("a",)),
        ]
    ]
)
@example(
    [
        [("symlink", ("b",), "a"), ("file", ("b", "a"), b"1", 0o644)],
        [("whiteout", ("b",)), ("file", ("b", "a"), b"2", 0o644)],
    ]
)
@example(
    [
        [
            ("dir", ("a",), 0o755),
            ("dir", ("a", "b"), 0o755),
            ("symlink", ("b",), "a/b"),
            ("file", ("b", "c"), b"1", 0o644),
            ("dir", ("b",), 0o700),
            ("file", ("b", "a"), b"2", 0o644),
        ]
    ]
)
def test_layers_match_the_model(image: list[list[tuple]]) -> None:  # type: ignore[type-arg]
    model = Model()
    failed = False
    try:
        for entries in image:
            model.apply_layer(entries)
    except Failed as err:
        failed = True
        event(f"refused: {err}")
    box = Path(tempfile.mkdtemp())
    try:
        root = box / "root"
        root.mkdir()
        applier = Applier(str(root), lambda _msg: None)
        try:
            for entries in image:
                applier.apply_layer(
                    FileStream(io.BytesIO(layer_tar([tar_entry(e) for e in entries])))
                )
        except LayerError as err:
            assert failed, f"refused what the model accepts: {err}"
            assert "\n" not in str(err) and len(str(err)) <= 300
        else:
            assert not failed, "accepted what the model refuses"
            assert observed(root) == model.expected()
        finally:
            applier.close()
        assert os.listdir(box) == ["root"], "written beside the root"
    finally:
        shutil.rmtree(box)
