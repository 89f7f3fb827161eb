"""The unpack pipeline: verified blobs → decompression → tar → layer application.

Threads share the work so every core is used: a feeder reads each layer blob, hashes it and
decompresses it, a thread of its own hashes the tar stream (zlib, isal, zstandard and hashlib
all release the GIL; igzip and zstd, in an initramfs, run as processes of their own), while the
caller's thread parses the tar and writes the tree. The feeder runs ahead by a
bounded queue, across layer boundaries, so the next layer is decompressed while this one is
applied. Application stays in layer order.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Callable

from .apply import Applier
from .blobs import VerifyingReader, new_hash, short
from .decompress import ZSTD_WINDOW_LIMIT, decoded_chunks
from .errors import LAYER_HINT, BootcLiveError, LayerError, VerificationError, console_line
from .oci import Image
from .streams import END, ChunkStream
from .tarstream import TarEntry

# ~4 MiB of decompressed data in flight at most: enough to keep the applier busy (more did not
# unpack faster, bench/unpack) and planned in memory.UNPACK_RESERVE, as is the hash's lag.
QUEUE_CHUNKS = 4
HASH_CHUNKS = 4  # the diff_id's hash lags the feeder by at most this (≤ 4 MiB more in flight)


@dataclass
class Stats:
    """What an unpack did."""

    layers: int
    entries: int
    bytes_written: int
    compressed_bytes: int
    seconds: float
    layer_sizes: list[int]  # of each uncompressed tar stream
    decoders: list[str]  # of each layer (decompress.decoder_of)

    @property
    def decompressor(self) -> str:
        """The decoders used, as one word: "igzip", "zlib,zstd" …"""
        return ",".join(sorted(set(self.decoders))) or "none"


class Progress:
    """A progress line at most every `interval` seconds: layer i/N, MiB done of total, rate, ETA."""

    def __init__(
        self,
        total: int,
        layers: int,
        interval: float = 2.0,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.total = total
        self.layers = layers
        self.interval = interval
        self.write = write or (lambda line: print(console_line(line), file=sys.stderr, flush=True))
        self.start = time.monotonic()
        self._last = self.start

    def update(self, layer: int, done: int, unpacked: int | None = None) -> None:
        """`done` compressed bytes fetched of `total`; `unpacked` bytes of tar written so far."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        written = "" if unpacked is None else f", {unpacked >> 20} MiB unpacked"
        self.write(
            f"bootc-live: layer {layer}/{self.layers}  {done >> 20}/{self.total >> 20} MiB "
            f"fetched{written}  {rate / (1 << 20):.1f} MiB/s  ETA {eta:.0f}s"
        )


FEEDER_GRACE = 5.0  # seconds


class _Feeder(threading.Thread):
    """Reads, verifies and decompresses the image's layers, in order, into a queue."""

    def __init__(self, image: Image, progress: Progress | None, max_window: int) -> None:
        super().__init__(name="layer-feeder", daemon=True)
        self.image = image
        self.progress = progress
        self.max_window = max_window  # the largest zstd window a frame may ask
        self.chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.stopped = threading.Event()  # the consumer is gone: stop at once
        self.abandoned = threading.Event()  # the consumer failed: only verify what is left
        self.compressed_bytes = 0
        self.unpacked_bytes = 0
        self.layer_sizes: list[int] = []
        self.decoders: list[str] = []
        self.failure: BaseException | None = None

    def _put(self, item: object) -> bool:
        while not self.stopped.is_set():
            try:
                self.chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            # A source that can fetch ahead (a registry) starts on the later layers now.
            self.image.source.prefetch(self.image.layers)
            for index in range(len(self.image.layers)):
                self._feed_layer(index)
                if not self._put(END) or self.abandoned.is_set():
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            self.failure = err
            self._put(err)

    def _feed_layer(self, index: int) -> None:
        size = 0

        def read(done: int) -> None:
            if self.progress:
                self.progress.update(
                    index + 1, self.compressed_bytes + done, self.unpacked_bytes + size
                )

        chunks = layer_chunks(
            self.image, index, self.abandoned.is_set, read, self.decoders.append, self.max_window
        )
        for chunk in chunks:
            if not self._put(chunk):
                return
            size += len(chunk)
        self.compressed_bytes += self.image.layers[index].size
        self.unpacked_bytes += size
        self.layer_sizes.append(size)


def layer_chunks(
    image: Image,
    index: int,
    abandoned: Callable[[], bool] = lambda: False,
    on_read: Callable[[int], None] | None = None,
    used: Callable[[str], None] | None = None,
    max_window: int = ZSTD_WINDOW_LIMIT,
) -> Generator[bytes, None, None]:
    """Yield layer `index` decompressed; at its end, verify the blob's digest and the diff_id
    (unless an earlier boot stage did: `image.verified_blobs`, `image.verified_diff_ids`).
    `used` is told the decoder's name; a zstd frame's window may be `max_window` at most."""
    desc = image.layers[index]
    label = f"layer {index + 1}/{len(image.layers)}"
    diff_id = image.diff_ids[index]
    diff_hash = None if index in image.verified_diff_ids else BackgroundHash(new_hash(diff_id))
    with contextlib.ExitStack() as cleanup:
        if diff_hash:
            cleanup.callback(diff_hash.close)  # its thread ends however this ends
        raw = cleanup.enter_context(image.source.open_blob(desc))
        reader = VerifyingReader(raw, desc, label, trusted=index in image.verified_blobs)
        try:
            for chunk in decoded_chunks(reader.read, used, max_window):
                if abandoned():
                    break
                if diff_hash:
                    diff_hash.update(chunk)
                yield chunk
                if on_read:
                    on_read(reader.done)
        except VerificationError:
            raise
        except BootcLiveError as err:
            reader.finish()  # a digest mismatch explains broken compression better
            raise labelled(err, image, index) from None
        reader.finish()
    if abandoned() or diff_hash is None:
        return
    actual = f"{diff_id.partition(':')[0]}:{diff_hash.hexdigest()}"
    if actual != diff_id:
        raise VerificationError(
            f"{label} {short(desc.digest)} content does not match the config's diff_id "
            f"(expected {diff_id}, got {actual})",
            "the image is corrupt or was built wrongly",
        )


class BackgroundHash:
    """A hash computed by a thread of its own, so that hashing the uncompressed stream does not
    hold up the thread that decompresses it: without SHA instructions (many CPUs, and QEMU's
    emulated ones) sha256 is slower than decompressing. `update` hands the chunk over (it is
    not copied; at most HASH_CHUNKS wait), `hexdigest` waits for the rest."""

    def __init__(self, hasher: Any) -> None:
        self._hash = hasher
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="diff-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        """Let the thread hash what it holds, and end it."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return str(self._hash.hexdigest())


def layer_sizes(image: Image) -> list[int]:
    """Verify every layer and return the size of each uncompressed tar stream."""
    return [sum(len(c) for c in layer_chunks(image, i)) for i in range(len(image.layers))]


def labelled(err: BootcLiveError, image: Image, index: int) -> BootcLiveError:
    """`err` (a broken tar, say) as one line naming the layer it came from and its digest."""
    desc = image.layers[index]
    hint = err.hint or (LAYER_HINT if isinstance(err, LayerError) else "")
    return type(err)(f"layer {index + 1}/{len(image.layers)} {short(desc.digest)}: {err}", hint)


def unpack_image(
    image: Image,
    dest: str,
    *,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    observe: Callable[[TarEntry], None] | None = None,
    max_window: int = ZSTD_WINDOW_LIMIT,
) -> Stats:
    """Apply all layers of `image` onto the directory `dest`, verifying everything (`observe`
    is told of every entry; a zstd frame may ask a window of `max_window` at most: what a
    live boot planned)."""
    start = time.monotonic()
    applier = Applier(
        dest,
        warn or (lambda msg: print(console_line(f"bootc-live: {msg}"), file=sys.stderr)),
        observe,
    )
    feeder = _Feeder(image, progress, max_window)
    feeder.start()
    failed = True
    # A blob listed twice (Docker's empty layer, two identical steps) is stored once: it is
    # released after its last use only.
    last_use = {desc.digest: index for index, desc in enumerate(image.layers)}
    try:
        for index, desc in enumerate(image.layers):
            stream = ChunkStream(feeder.chunks)
            try:
                applier.apply_layer(stream)
            except BootcLiveError as err:
                if err is feeder.failure:
                    raise  # verification or decompression: labelled by the feeder
                # A digest mismatch explains a broken tar better: judge the blob first.
                feeder.abandoned.set()
                stream.drain()
                raise labelled(err, image, index) from None
            stream.drain()
            if last_use[desc.digest] == index:
                image.source.release(desc)
        failed = False
    finally:
        feeder.stopped.set()
        # After a failure or a signal, a read that never returns (a stalled source) must not
        # hold up the exit: the feeder, a daemon thread, gets FEEDER_GRACE to stop.
        feeder.join(FEEDER_GRACE if failed else None)
        applier.close()
    return Stats(
        layers=len(image.layers),
        entries=applier.entries,
        bytes_written=applier.bytes_written,
        compressed_bytes=feeder.compressed_bytes,
        seconds=time.monotonic() - start,
        layer_sizes=feeder.layer_sizes,
        decoders=feeder.decoders,
    )
