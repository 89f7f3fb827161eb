"""Memory planning: will the unpacked image fit? Decided before anything is written."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .errors import BootcLiveError
from .oci import Image

SIZES_ANNOTATION = "org.bootc-live.layer-sizes"  # written by `bootc-live build`
RATIO = 3  # stated conservative expansion of a compressed layer when no size is recorded
RESERVE = 48 << 20  # for the kernel, the runtime and switch-root
MIB = 1 << 20


class NotEnoughMemory(BootcLiveError):
    """The machine has too little memory for the image in the chosen mode."""


@dataclass(frozen=True)
class Memory:
    """What /proc/meminfo says."""

    total: int
    available: int

    @classmethod
    def read(cls, path: str = "/proc/meminfo") -> Memory:
        values = {}
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
        return cls(values["MemTotal"], values.get("MemAvailable", values["MemFree"]))


@dataclass(frozen=True)
class Estimate:
    """The unpacked size of an image, and how it was found."""

    unpacked: int
    how: str


def estimate(image: Image) -> Estimate:
    """Unpacked size in a tmpfs: tar sizes recorded at build time, else a stated ratio."""
    recorded = image.index_annotations.get(SIZES_ANNOTATION, "")
    sizes = [int(v) for v in recorded.split(",") if v.isdigit()]
    if len(sizes) == len(image.layers):
        # tmpfs rounds files up to pages where tar rounds to 512 bytes: allow 5 %.
        return Estimate(sum(sizes) * 21 // 20 + 16 * MIB, "recorded by bootc-live build")
    return Estimate(
        image.compressed_size * RATIO + 16 * MIB, f"{RATIO}x the compressed size (no size recorded)"
    )


def check(image: Image, memory: Memory, *, blobs_freed: bool) -> Estimate:
    """Stop early, naming the shortfall, unless the unpacked image fits in memory.

    With `blobs_freed` the image's blobs already sit in RAM (embedded or appended initrd) and
    each is deleted once its layer is applied, so at the peak only the largest one remains.
    """
    est = estimate(image)
    have = memory.available - RESERVE
    if blobs_freed and image.layers:
        have += image.compressed_size - max(layer.size for layer in image.layers)
    if est.unpacked > have:
        raise NotEnoughMemory(
            f"not enough memory: image needs {est.unpacked // MIB} MiB unpacked "
            f"({est.how}), {max(have, 0) // MIB} MiB available",
            "add RAM or use bootc.zram=",
        )
    return est


class PeakWatch:
    """Samples memory in use (MemTotal - MemAvailable) in a thread; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.2, path: str = "/proc/meminfo") -> None:
        self.interval = interval
        self.path = path
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-peak", daemon=True)

    def _sample(self) -> None:
        mem = Memory.read(self.path)
        self.peak = max(self.peak, mem.total - mem.available)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakWatch:
        self._sample()
        self.start = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
