"""Mutated tar headers: valid layers with header bytes and PAX records changed (checksums
recomputed, so every mutation reaches the parser) must end in success or one line, a
BootcLiveError of at most 300 characters, never another exception, never a hang, never a
write beside the root. A seeded fuzzer: the same cases on every run."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_live.runtime.apply import Applier
from bootc_live.runtime.errors import BootcLiveError
from bootc_live.runtime.streams import FileStream
from imagegen import (
    BLOCK,
    block,
    char,
    d,
    f,
    fifo,
    hard,
    layer_tar,
    opq,
    sparse,
    sym,
    wh,
)
from unpackers import need

CASES = 3000
SECONDS_PER_CASE = 10
OUTSIDE = "/outside-of-the-root"  # symlink targets that a resolver bug would follow


def seeds() -> list[list[object]]:
    """Valid layers in every header dialect the writer has (PAX, GNU) to mutate."""
    entries: list[object] = [
        d("etc", mode=0o750, uid=3),
        f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", xattrs={"user.a": b"\x00\xff"}),
        f("etc/" + "long-" * 30, b"long name", mtime="1700000000.123456789"),
        sym("etc/link", "passwd"),
        sym("abs", OUTSIDE),
        sym("up", "../../.."),
        hard("etc/hard", "etc/passwd"),
        char("dev/null", 1, 3),
        block("dev/sda", 8, 0),
        fifo("run/fifo"),
        f("big-ids", b"i", uid=2**31, gid=3_000_000),
        sparse("disk", 1 << 20, [(0, b"A" * 512), (8192, b"B" * 512)]),
        wh("gone"),
        opq("etc"),
        f("abs/through-link", b"t"),
        f("up/through-up", b"u"),
    ]
    return [entries]


def headers(tar: bytes) -> list[int]:
    """Offsets of the blocks whose checksum is valid: the headers (data rarely is one)."""
    found = []
    for off in range(0, len(tar), BLOCK):
        blk = tar[off : off + BLOCK]
        if len(blk) < BLOCK or blk == bytes(BLOCK):
            continue
        field = blk[148:156].split(b"\0", 1)[0].strip()
        if re.fullmatch(rb"[0-7]+", field) and int(field, 8) == sum(blk[:148]) + 256 + sum(
            blk[156:]
        ):
            found.append(off)
    return found


def fix_checksum(buf: bytearray, off: int) -> None:
    buf[off + 148 : off + 156] = b" " * 8
    buf[off + 148 : off + 156] = b"%06o\0 " % sum(buf[off : off + BLOCK])


INTERESTING_NUMBERS = [
    b"\xff" * 12,  # base-256 -1
    b"\x80" + b"\xff" * 11,  # base-256 huge
    b"\xbf" + b"\xff" * 11,  # base-256 beyond 64 bits
    b"\xc0" + bytes(11),  # base-256 most negative
    b"77777777777\0",
    b"-1\0",
    b"\0" * 12,
    b"9" * 12,
]
NUMERIC_FIELDS = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)]
PAX_VALUES = [b"", b"-1", b"-99999", b"9" * 30, b"\0", b"a\0b", b"1.5", b"x", b"1," * 50]
PAX_KEYS = [
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"SCHILY.devmajor",
    b"SCHILY.devminor",
    b"SCHILY.xattr.user.\0x",
    b"SCHILY.xattr.",
    b"GNU.sparse.major",
    b"GNU.sparse.map",
    b"GNU.sparse.size",
    b"GNU.sparse.name",
    b"",
]


def mutate_header(buf: bytearray, off: int, rng: random.Random) -> None:
    choice = rng.randrange(4)
    if choice == 0:  # random bytes anywhere but the checksum
        for _ in range(rng.randint(1, 6)):
            pos = rng.choice([i for i in range(BLOCK) if not 148 <= i < 156])
            buf[off + pos] = rng.randrange(256)
    elif choice == 1:  # an interesting number in a numeric field
        start, width = rng.choice(NUMERIC_FIELDS)
        value = rng.choice(INTERESTING_NUMBERS)
        buf[off + start : off + start + width] = value[-width:].rjust(width, b"\0")
    elif choice == 2:  # another typeflag
        buf[off + 156] = rng.choice(b"\x000123456789DgxKLSVAZ\xff")
    else:  # the magic (format) or a name ending in /
        if rng.random() < 0.5:
            buf[off + 257 : off + 265] = rng.choice(
                [b"ustar\x0000", b"ustar  \0", bytes(8), b"ustar\0\xff\xff"]
            )
        else:
            name = bytes(buf[off : off + 100]).split(b"\0", 1)[0][:99]
            buf[off : off + 100] = (name + b"/").ljust(100, b"\0")
    fix_checksum(buf, off)


def mutate_pax(buf: bytearray, off: int, rng: random.Random) -> bool:
    """Rewrite one record of the PAX header at `off` (size field and checksum kept true)."""
    field = bytes(buf[off + 124 : off + 135])
    if buf[off + 156] not in b"xg" or re.fullmatch(rb"[0-7]+", field) is None:
        return False  # not a PAX header (any more)
    size = int(field, 8)
    data = bytes(buf[off + BLOCK : off + BLOCK + size])
    records = data.split(b"\n")[:-1] or [b"0 x=y"]
    i = rng.randrange(len(records))
    key = rng.choice(PAX_KEYS)
    value = rng.choice(PAX_VALUES)
    if rng.random() < 0.3:  # a broken length prefix
        records[i] = rng.choice([b"0", b"999999", b"-5", b"", b"3"]) + b" " + key + b"=" + value
    else:
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n = len(str(n)) + len(body)
        records[i] = str(n).encode() + body[:-1]
    new = b"\n".join(records) + b"\n"
    padded = new + bytes(-len(new) % BLOCK)
    old_len = size + (-size % BLOCK)
    buf[off + BLOCK : off + BLOCK + old_len] = padded
    buf[off + 124 : off + 136] = b"%011o\0" % len(new)
    fix_checksum(buf, off)
    return True


def cases() -> Iterator[tuple[int, bytes]]:
    layers = [layer_tar(entries, fmt=fmt) for entries in seeds() for fmt in ("pax", "gnu")]  # type: ignore[arg-type]
    for case in range(CASES):
        rng = random.Random(case)
        buf = bytearray(rng.choice(layers))
        offsets = headers(bytes(buf))
        for _ in range(rng.randint(1, 3)):
            off = rng.choice(headers(bytes(buf)) or offsets)
            if not (rng.random() < 0.4 and mutate_pax(buf, off, rng)):
                mutate_header(buf, off, rng)
        yield case, bytes(buf)


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "layer application sets owners and creates devices: needs root")


def test_mutated_headers_end_in_success_or_one_line() -> None:
    problems: list[str] = []
    outcomes = {"applied": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case, tar in cases():
            box = Path(tempfile.mkdtemp())
            try:
                (box / "root").mkdir()
                applier = Applier(str(box / "root"), lambda _msg: None)
                signal.alarm(SECONDS_PER_CASE)
                try:
                    applier.apply_layer(FileStream(io.BytesIO(tar)))
                    outcomes["applied"] += 1
                except BootcLiveError as err:
                    line = str(err)
                    if "\n" in line or len(line) > 300:
                        problems.append(f"case {case}: a long or multi-line error: {line[:400]!r}")
                    outcomes["refused"] += 1
                except Hang:
                    problems.append(f"case {case}: no end after {SECONDS_PER_CASE} s")
                except Exception as err:  # the finding: anything but a BootcLiveError
                    problems.append(f"case {case}: {type(err).__name__}: {str(err)[:200]}")
                finally:
                    signal.alarm(0)
                    applier.close()
                if os.listdir(box) != ["root"] or os.path.lexists(OUTSIDE):
                    problems.append(f"case {case}: wrote beside the root")
            finally:
                shutil.rmtree(box)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not problems, f"{len(problems)} problems, e.g.:\n" + "\n".join(problems[:15])
    # The mutations are neither all harmless nor all fatal.
    assert outcomes["applied"] > CASES // 10 and outcomes["refused"] > CASES // 10, outcomes
