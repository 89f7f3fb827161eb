"""Byte streams the tar reader consumes: a seekable file, or chunks handed over by a thread."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from typing import BinaryIO, Callable, TypeVar

from .errors import LayerError

_R = TypeVar("_R", bound="Reader")


class FileStream:
    """The tar reader's view of a seekable file (used to index an oci-archive)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        here = f.tell()
        self._size = f.seek(0, os.SEEK_END)  # where seeking past it says nothing
        f.seek(here)

    def read_exact(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise LayerError("unexpected end of tar data")
        return data

    def read_some(self, n: int) -> memoryview:
        data = self._f.read(n)
        if not data:
            raise LayerError("unexpected end of tar data")
        return memoryview(data)

    def skip(self, n: int) -> None:
        if n and self._f.seek(n, 1) > self._size:  # seek goes past the end without a word
            raise LayerError("unexpected end of tar data (the file is cut short)")

    def at_end(self) -> bool:
        if self._f.read(1):
            self._f.seek(-1, 1)
            return False
        return True


class Reader:
    """A byte reader usable in `with`, closed on exit (what sources hand out for blobs)."""

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


END = None  # marks the end of a stream in a ChunkStream's queue


class ChunkStream:
    """The tar reader's view of a sequence of chunks: from a queue a producer thread fills, or
    from an iterator.

    The producer puts bytes chunks, then END; or an exception, which is raised here.
    """

    def __init__(self, chunks: queue.Queue[object] | Iterator[bytes]) -> None:
        if isinstance(chunks, queue.Queue):
            self._get: Callable[[], object] = chunks.get
        else:
            self._get = lambda: next(chunks, END)
        self._buf = memoryview(b"")
        self._ended = False

    def _next(self) -> bool:
        if self._ended:
            return False
        item = self._get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is END:
            self._ended = True
            return False
        assert isinstance(item, bytes)
        self._buf = memoryview(item)
        return True

    def read_some(self, n: int) -> memoryview:
        while not self._buf:
            if not self._next():
                raise LayerError("the layer ends in the middle of a tar entry (truncated)")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_exact(self, n: int) -> bytes:
        if len(self._buf) >= n:
            data, self._buf = self._buf[:n], self._buf[n:]
            return data.tobytes()
        parts = []
        while n:
            part = self.read_some(n)
            parts.append(part.tobytes())
            n -= len(part)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.read_some(n))

    def at_end(self) -> bool:
        while not self._buf:
            if not self._next():
                return True
        return False

    def drain(self) -> None:
        """Consume the rest up to END (tar padding after the end-of-archive marker)."""
        self._buf = memoryview(b"")
        while self._next():
            pass
