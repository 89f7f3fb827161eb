"""Reading newc cpio archives in tests, as the kernel reads an initrd."""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Member:
    name: str
    mode: int
    offset: int  # of its data
    size: int


def read_archive(data: bytes, pos: int = 0) -> tuple[list[Member], int]:
    """The members of the archive at `pos` (trailer left out), and the offset just after it."""
    members: list[Member] = []
    while True:
        assert data[pos : pos + 6] == MAGIC and pos % 4 == 0, f"no newc header at offset {pos}"
        mode, size, namesize = (
            int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in (1, 6, 11)
        )
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        start = pos + 110 + namesize
        start += -start % 4
        pos = start + size + (-size % 4)
        if name == TRAILER:
            return members, pos
        members.append(Member(name, mode, start, size))
