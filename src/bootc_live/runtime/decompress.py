"""Layer decompression, detected by magic bytes: gzip (multi-member), zstd (multi-frame), tar.

Output is produced in bounded chunks whatever the compression ratio, so a decompression bomb
cannot blow up memory: it can only fill the destination, which the applier reports.
Accelerators (`isal` for gzip, `zstandard` for zstd) are used when importable; without
`zstandard`, zstd layers go through the `zstd` command.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import zlib
from collections.abc import Iterator
from typing import Any, Callable

from . import run
from .errors import LayerError

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_gzip_impl: Any
_zstandard: Any
try:
    from isal import isal_zlib as _gzip_impl
except ImportError:
    _gzip_impl = zlib
try:
    import zstandard as _zstandard
except ImportError:
    _zstandard = None

Read = Callable[[int], bytes]


def is_zstd_skippable(head: bytes) -> bool:
    """Skippable zstd frames have magic 0x184D2A50..0x184D2A5F (little-endian)."""
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


def compression_of(head: bytes) -> str:
    """Name the compression of a stream from its first bytes: gzip, zstd or none."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_zstd_skippable(head):
        return "zstd"
    return "none"


def decoded_chunks(read: Read) -> Iterator[bytes]:
    """Yield the decompressed content of the stream `read` gives, in chunks of at most CHUNK."""
    head = read(CHUNK)
    while 0 < len(head) < len(ZSTD_MAGIC):
        more = read(CHUNK)
        if not more:
            break
        head += more
    kind = compression_of(head)
    if kind == "gzip":
        return _gunzip(head, read)
    if kind == "zstd":
        return _unzstd(head, read)
    return _plain(head, read)


def _plain(head: bytes, read: Read) -> Iterator[bytes]:
    data = head
    while data:
        yield data
        data = read(CHUNK)


def _gunzip(head: bytes, read: Read) -> Iterator[bytes]:
    decomp: Any = None  # None between members
    data = head
    while True:
        if not data:
            data = read(CHUNK)
            if not data:
                break
        if decomp is None:
            if len(data) < len(GZIP_MAGIC):
                data += read(CHUNK)
            if data.startswith(GZIP_MAGIC):
                decomp = _gzip_impl.decompressobj(31)
            elif data.strip(b"\0"):
                raise LayerError("gzip stream has trailing garbage after a member")
            else:
                data = b""  # zero padding after the last member
                continue
        try:
            out = decomp.decompress(data, CHUNK)
        except _gzip_errors() as err:
            raise LayerError(f"gzip data is corrupt ({err})") from None
        if out:
            yield out
        if decomp.eof:
            data, decomp = decomp.unused_data, None
        else:
            data = decomp.unconsumed_tail
    if decomp is not None:
        # Input ended inside a member: give out what is pending, then it must be complete.
        while not decomp.eof:
            out = decomp.decompress(b"", CHUNK)
            if not out:
                raise LayerError("gzip stream is truncated")
            yield out


class _Prepend:
    """A file-like object giving `head` first, then what `read` gives."""

    def __init__(self, head: bytes, read: Read) -> None:
        self._head = head
        self._read = read

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._read(CHUNK if n < 0 else n)


def _unzstd(head: bytes, read: Read) -> Iterator[bytes]:
    if _zstandard is None:
        return _unzstd_command(head, read)
    return _unzstd_module(head, read)


def _gzip_errors() -> tuple[type[BaseException], ...]:
    return (zlib.error, _gzip_impl.error)


def _unzstd_module(head: bytes, read: Read) -> Iterator[bytes]:
    reader = _zstandard.ZstdDecompressor().stream_reader(
        _Prepend(head, read), read_size=CHUNK, read_across_frames=True
    )
    while True:
        try:
            out = reader.read(CHUNK)
        except _zstandard.ZstdError as err:
            raise LayerError(f"zstd data is corrupt ({err})") from None
        if not out:
            # Truncation at a frame boundary inside a block is caught by the diff_id check.
            return
        yield out


def _unzstd_command(head: bytes, read: Read) -> Iterator[bytes]:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise LayerError(
            "layer is zstd-compressed, but neither the zstandard module nor the zstd command is "
            "available"
        )
    proc = run.start([zstd, "-dcq"], stdin=run.PIPE, stdout=run.PIPE, stderr=run.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    failure: list[BaseException] = []

    def feed() -> None:
        assert proc.stdin
        try:
            data = head
            while data:
                proc.stdin.write(data)
                data = read(CHUNK)
        except BrokenPipeError:
            pass
        except BaseException as err:  # handed to the reading side
            failure.append(err)
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()

    feeder = threading.Thread(target=feed, name="zstd-feed", daemon=True)
    feeder.start()
    try:
        while True:
            out = proc.stdout.read(CHUNK)
            if not out:
                break
            yield out
    finally:
        proc.stdout.close()
        feeder.join()
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    if failure:
        raise failure[0]
    if rc != 0:
        raise LayerError(f"zstd data is corrupt ({err or f'zstd exit {rc}'})")
