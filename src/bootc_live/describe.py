"""`bootc-live inspect`: what an image holds, and what it needs to boot live."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import footprint, zramsize
from .runtime import kernels, memory
from .runtime.errors import BootcLiveError
from .runtime.oci import Image
from .runtime.streams import ChunkStream
from .runtime.tarstream import REGULAR, read_entries
from .runtime.unpack import Progress, labelled, layer_chunks


@dataclass
class Description:
    """The facts `bootc-live inspect` prints."""

    layer_sizes: list[int] | None  # None: not recorded and not measured
    kernels: list[str] | None  # None: not measured
    estimate: memory.Estimate
    zram: int | None  # the files as zstd pages (zramsize), summed over the layers
    tmpfs: int | None  # what the root takes in a tmpfs (footprint), summed likewise


def recorded(image: Image) -> Description:
    """What the manifests, config and annotations say, reading no layer: the sizes `bootc-live
    build` recorded, else the planner's estimate (gzip trailers are a ranged read each)."""
    known = memory.recorded_numbers(image.index_annotations.get(memory.SIZES_ANNOTATION, ""))
    return Description(
        known if len(known) == len(image.layers) else None,
        None,
        memory.estimate(image),
        None,
        None,
    )


def describe(image: Image, progress: Progress | None = None) -> Description:
    """Read every layer once (verifying it): unpacked sizes, the kernels of the merged tree, and
    (with zstandard) what the files take in zram. Files that an upper layer replaces or deletes
    are counted in zram all the same: for the planner, that errs on the safe side."""
    notes: list[
        list[tuple[bytes, str, bytes]]
    ] = []  # each layer's entries that name kernels or hide
    sizes: list[int] = []
    meter = zramsize.PageMeter() if zramsize.available() else None
    tmpfs = footprint.TmpfsMeter()
    for index in range(len(image.layers)):
        size = 0
        fetched = sum(layer.size for layer in image.layers[:index])

        def read(done: int, index: int = index, fetched: int = fetched) -> None:
            if progress is not None:
                progress.update(index + 1, fetched + done, sum(sizes) + size)  # noqa: B023

        failed: list[BaseException] = []  # what the layer's reading raised: labelled there

        def counted(index: int = index, failed: list[BaseException] = failed) -> object:
            nonlocal size
            try:
                for chunk in layer_chunks(image, index, on_read=read):
                    size += len(chunk)
                    yield chunk
            except BaseException as err:
                failed.append(err)
                raise

        stream = ChunkStream(counted())  # type: ignore[arg-type]
        layer_notes: list[tuple[bytes, str, bytes]] = []
        try:
            for entry in read_entries(stream):
                tmpfs.add(entry)
                if entry.kind == REGULAR:
                    if meter is None:
                        stream.skip(entry.size)
                    else:
                        meter.add(stream.read_exact, entry.size)
                if kernels.matters(entry.name):
                    layer_notes.append((entry.name, entry.kind, entry.linkname))
            stream.drain()
        except BootcLiveError as err:
            if failed and err is failed[0]:
                raise
            stream.drain()  # a digest mismatch explains a broken tar better: judged first
            raise labelled(err, image, index) from None
        notes.append(layer_notes)
        sizes.append(size)
    finder = kernels.KernelFinder()
    for layer_notes in reversed(notes):  # the merged tree: the top layer first
        for name, kind, linkname in layer_notes:
            finder.entry(name, kind, linkname)
        finder.end_layer()
    annotated = {
        **image.index_annotations,
        memory.SIZES_ANNOTATION: ",".join(map(str, sizes)),
        memory.TMPFS_ANNOTATION: str(tmpfs.total),
    }
    estimate = memory.estimate(replace(image, index_annotations=annotated))
    zram = None if meter is None else meter.total
    return Description(sizes, finder.kernels(), estimate, zram, tmpfs.total)
