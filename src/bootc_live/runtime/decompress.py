"""Layer decompression, detected by magic bytes: gzip (multi-member), zstd (multi-frame), tar.

Output is produced in bounded chunks whatever the compression ratio, so a decompression bomb
cannot blow up memory: it can only fill the destination, which the applier reports.

Each compression has its decoders, fastest first (`decoder_of`): an accelerator module when
importable (`isal` for gzip, `zstandard` for zstd: the host's venv), else a command on PATH
(`igzip` of ISA-L, about 2.5x zlib's speed here; `zstd`: what an initramfs carries), else the
standard library (zlib; zstd has none). A command is fed the verified stream by a thread and
runs beside the Python threads, on a core of its own. `pigz -d` is not one of them: it
decompresses on one thread, no faster than zlib in process. Where both succeed, every decoder
gives the same bytes (members, then only zeros); igzip, like gzip(1), also stops without error
at bytes after a member that are not one, which zlib here refuses. So a kexec stage two that
trusts stage one's diff_ids fails, or applies the tree they describe, whichever decoder it has.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import threading
import zlib
from collections.abc import Iterator
from typing import Any, Callable

from . import run
from .errors import BootcLiveError, LayerError

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
F_SETPIPE_SZ = 1031  # Linux's; the fcntl module names it from Python 3.10 on

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
# The largest zstd window the decoders take by default (zstd --long's, 2**27): a frame's
# decoder holds its window in memory. A live boot lowers it to the window it planned for.
ZSTD_WINDOW_LIMIT = 128 << 20


def frame_header_fields(descriptor: int) -> tuple[int, int, int]:
    """The bytes that follow a zstd frame header's descriptor (RFC 8878 3.1.1.1): its window
    descriptor (none for a single segment), dictionary ID and content size."""
    single = bool(descriptor & 0x20)
    fcs = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
    return (0 if single else 1), (0, 1, 2, 4)[descriptor & 3], fcs


def zstd_window(head: bytes) -> int | None:
    """The window size the first zstd frame in `head` declares (RFC 8878, 3.1.1.1), past any
    skippable frames in it; None when `head` does not hold that frame's header."""
    pos = 0
    while is_zstd_skippable(head[pos : pos + 4]) and len(head) >= pos + 8:
        pos += 8 + int.from_bytes(head[pos + 4 : pos + 8], "little")
    if head[pos : pos + 4] != ZSTD_MAGIC or len(head) < pos + 6:
        return None
    descriptor = head[pos + 4]
    if descriptor & 0x20:  # single segment: the window is the content, whose size follows
        _, dict_bytes, fcs_bytes = frame_header_fields(descriptor)
        start = pos + 5 + dict_bytes
        if len(head) < start + fcs_bytes:
            return None
        size = int.from_bytes(head[start : start + fcs_bytes], "little")
        return size + 256 if fcs_bytes == 2 else size
    exponent, mantissa = head[pos + 5] >> 3, head[pos + 5] & 7
    base = 1 << (10 + exponent)
    return base + (base >> 3) * mantissa


def zstd_content_size(head: bytes) -> int | None:
    """The content size the first zstd frame in `head` declares (RFC 8878, 3.1.1.1.4), past
    any skippable frames in it; None when it declares none or `head` does not hold it."""
    pos = 0
    while is_zstd_skippable(head[pos : pos + 4]) and len(head) >= pos + 8:
        pos += 8 + int.from_bytes(head[pos + 4 : pos + 8], "little")
    if head[pos : pos + 4] != ZSTD_MAGIC or len(head) < pos + 5:
        return None
    window_bytes, dict_bytes, fcs_bytes = frame_header_fields(head[pos + 4])
    start = pos + 5 + window_bytes + dict_bytes
    if fcs_bytes == 0 or len(head) < start + fcs_bytes:
        return None
    size = int.from_bytes(head[start : start + fcs_bytes], "little")
    return size + 256 if fcs_bytes == 2 else size


def is_zstd_skippable(head: bytes) -> bool:
    """Skippable zstd frames have magic 0x184D2A50..0x184D2A5F (little-endian)."""
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


class ZstdFrames:
    """Follows a zstd stream's frames by their headers alone (RFC 8878 3.1: a frame's header,
    its blocks' 3-byte headers and sizes, its checksum; a skippable frame's size), fed the
    compressed bytes as they pass, to tell whether the stream ended between two frames.

    The zstandard module's stream reader ends without an error where its input ends, inside a
    frame too (its last block, or the checksum, or a skippable frame cut short), where the zstd
    command says "premature end". Bytes that begin no frame it leaves to the decoder (which
    refuses them) and stops following."""

    def __init__(self) -> None:
        self._pending = b""  # the part of a header read so far
        self._want = 4  # the bytes of the header being read
        self._skip = 0  # bytes to pass over before the next header
        self._state = "frame"  # the header awaited: frame, frame-rest, skippable, block
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self.lost = False  # bytes that begin no frame: the decoder's to refuse

    def between_frames(self) -> bool:
        """Whether what was fed ends where a frame would begin (or the walk was lost)."""
        return self.lost or (self._state == "frame" and not self._skip and not self._pending)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while not self.lost:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if self._skip:
                    return
            need = self._want - len(self._pending)
            if end - pos < need:
                self._pending += data[pos:]
                return
            header = self._pending + data[pos : pos + need]
            pos += need
            self._pending = b""
            self._header(header)

    def _header(self, header: bytes) -> None:
        if self._state == "frame":
            if header == ZSTD_MAGIC:
                self._state, self._want = "frame-rest", 1
            elif is_zstd_skippable(header):
                self._state, self._want = "skippable", 4
            else:
                self.lost = True
        elif self._state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._want = "frame", 4
        elif self._state == "frame-rest":
            descriptor = header[0]  # the frame header descriptor: what follows it
            self._checksum = bool(descriptor & 0x04)
            self._skip = sum(frame_header_fields(descriptor))
            self._state, self._want = "block", 3
        elif self._state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:  # reserved: corrupt, the decoder says so
                self.lost = True
                return
            self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._want = "frame", 4


def compression_of(head: bytes) -> str:
    """Name the compression of a stream from its first bytes: gzip, zstd or none."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_zstd_skippable(head):
        return "zstd"
    return "none"


# The decompression command of each compression, run as `NAME -dcq`.
COMMANDS = {"gzip": "igzip", "zstd": "zstd"}


def decoder_of(kind: str) -> str:
    """The decoder this process uses for `kind` (gzip, zstd, none): a module, a command, the
    standard library, or "" when there is none."""
    if kind == "gzip" and _gzip_impl is not zlib:
        return "isal"
    if kind == "zstd" and _zstandard is not None:
        return "zstandard"
    command = COMMANDS.get(kind)
    if command and shutil.which(command):
        return command
    return {"gzip": "zlib", "none": "none"}.get(kind, "")


def decoded_chunks(
    read: Read, used: Callable[[str], None] | None = None, max_window: int = ZSTD_WINDOW_LIMIT
) -> Iterator[bytes]:
    """Yield the decompressed content of the stream `read` gives, in chunks of at most CHUNK;
    `used` is told the decoder's name (`decoder_of`) once the compression is known. A zstd
    frame whose window is over `max_window` is refused."""
    head = read_head(read)
    kind = compression_of(head)
    decoder = decoder_of(kind)
    if used:
        used(decoder)
    return decoder_chunks(decoder, kind, head, read, max_window)


def read_head(read: Read) -> bytes:
    """The stream's first bytes: enough to tell its compression (unless it is shorter)."""
    head = read(CHUNK)
    while 0 < len(head) < len(ZSTD_MAGIC):
        more = read(CHUNK)
        if not more:
            break
        head += more
    return head


def other_compression(head: bytes) -> str:
    """A compression a stream that is neither gzip nor zstd has (xz, bzip2), or ""."""
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "bzip2" if head[:3] == b"BZh" else ""


def decoder_chunks(
    decoder: str, kind: str, head: bytes, read: Read, max_window: int = ZSTD_WINDOW_LIMIT
) -> Iterator[bytes]:
    """Decompress the `kind` stream that starts with `head` with the decoder named `decoder`
    (zstd frames with a window up to `max_window`)."""
    if kind == "none":
        other = other_compression(head)
        if other:  # else read as a tar: "tar header checksum mismatch"
            raise LayerError(
                f"the layer is {other}-compressed; OCI layers are gzip, zstd or plain tars",
                "recompress it with gzip or zstd",
            )
        return _plain(head, read)
    if kind == "gzip" and decoder in ("isal", "zlib"):
        return _gunzip_module(head, read, _gzip_impl if decoder == "isal" else zlib)
    if kind == "zstd" and decoder == "zstandard":
        return _unzstd_module(head, read, max_window)
    if decoder == COMMANDS.get(kind):
        return _command_chunks(decoder, kind, head, read, max_window)
    raise LayerError(
        "layer is zstd-compressed, but neither the zstandard module nor the zstd command is "
        "available"
    )


def _plain(head: bytes, read: Read) -> Iterator[bytes]:
    data = head
    while data:
        yield data
        data = read(CHUNK)


def _gunzip_module(head: bytes, read: Read, impl: Any) -> Iterator[bytes]:
    errors = (zlib.error, impl.error)
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
                decomp = impl.decompressobj(31)
            else:
                # Zero padding after the last member: only zeros may follow, however it is read
                # (a member after zeros would be dropped by igzip and gzip(1): never decoded).
                while data:
                    if data.strip(b"\0"):
                        raise LayerError("gzip stream has trailing garbage after a member")
                    data = read(CHUNK)
                break
        try:
            out = decomp.decompress(data, CHUNK)
        except errors as err:
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


def _unzstd_module(head: bytes, read: Read, max_window: int) -> Iterator[bytes]:
    frames = ZstdFrames()

    def followed(n: int) -> bytes:
        data = read(n)
        frames.feed(data)
        return data

    frames.feed(head)
    reader = _zstandard.ZstdDecompressor(max_window_size=max_window).stream_reader(
        _Prepend(head, followed), read_size=CHUNK, read_across_frames=True
    )
    while True:
        try:
            out = reader.read(CHUNK)
        except _zstandard.ZstdError as err:
            if "too much memory" in str(err) or "too large" in str(err):
                raise _long_window(max_window) from None
            raise LayerError(f"zstd data is corrupt ({err})") from None
        if not out:
            if not frames.between_frames():  # the reader ends where its input does
                raise LayerError("zstd data is corrupt (the stream ends inside a frame)")
            return
        yield out


def _command_chunks(
    name: str, kind: str, head: bytes, read: Read, max_window: int = ZSTD_WINDOW_LIMIT
) -> Iterator[bytes]:
    """Decompress with the command `name` of COMMANDS: a thread feeds it `head`, then what
    `read` gives, while this generator yields what it writes. An error reading the input is
    raised as it was; the command's own failure is the data's."""
    argv = [name, "-dcq"] + ([f"--memory={max_window}"] if kind == "zstd" else [])
    proc = run.start(argv, stdin=run.PIPE, stdout=run.PIPE, stderr=run.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    for pipe in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):  # a chunk per pipe read: fewer switches
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, CHUNK)
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

    feeder = threading.Thread(target=feed, name=f"{name}-feed", daemon=True)
    feeder.start()
    finished = False
    try:
        while True:
            out = proc.stdout.read(CHUNK)
            if not out:
                finished = True
                break
            yield out
    finally:
        if not finished:
            proc.kill()  # the output is not wanted: do not wait for the input's end
        proc.stdout.close()
        feeder.join()
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    if failure:
        raise failure[0]
    if rc < 0:  # not the data's fault: the OOM killer, most likely, in a small initramfs
        raise BootcLiveError(
            f"{name} was killed by signal {-rc} while decompressing a {kind} layer",
            "the machine may be out of memory: add RAM",
        )
    if rc != 0:
        # igzip names its input "(null)" when it is a pipe
        detail = err.splitlines()[-1].replace(" (null)", "") if err else f"{name} exit {rc}"
        if kind == "zstd" and ("--long" in detail or "--memory" in detail):
            raise _long_window(max_window)  # "Use --long=28 or --memory=256MB"
        raise LayerError(f"{kind} data is corrupt ({detail})")


def _long_window(limit: int) -> LayerError:
    """A zstd frame whose window is over `limit`: the decoders' 128 MiB (`zstd --long=28`
    and more), or, in a live boot, the window planned from the layers' first frames."""
    return LayerError(
        f"its zstd frames need a window over {limit >> 20} MiB (made with zstd --long or "
        "--ultra), more memory than a layer may take here",
        "recompress the layer without --long, at level 19 or below",
    )
