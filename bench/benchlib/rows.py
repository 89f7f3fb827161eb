"""The rows: what each boots and how, a row's boots and RAM search, its SPEC §9 figures
(medians of its boots), and the comparisons between rows (sources, root modes, kexec)."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib.boots import (
    AT_PEAK,
    KEXEC_SWITCH_ROOT,
    PHASES,
    QEMU_SWITCH_ROOT,
    SIGNATURE_CHECK,
    SWITCH_ROOT,
    SWITCH_ROOT_HOST,
    BootRun,
    Target,
    boot_once,
)
from benchlib.common import MIB, log, median
from benchlib.ramsearch import RamSearch, search_ram
from benchlib.servers import REGISTRY_PORT, REGISTRY_REPO
from benchlib.signed import SIGNED_GUEST_REF
from bootc_live.vm import GUEST_SERVER

# The root modes, each a row: the test image from a URL like `url` (whose root is the default
# tmpfs), with these kernel arguments appended; and the root's fstype its verdict must report.
MODES = {
    "zram": "bootc.zram=1G bootc.zram.algorithm=zstd",
    "erofs": "bootc.live.erofs=1",
    "erofs-lz4hc": "bootc.live.erofs=1 bootc.live.erofs.compress=lz4hc",
}
MODE_FSTYPE = {"zram": "ext4", "erofs": "erofs", "erofs-lz4hc": "erofs"}
# In table order: the test image's sources (embedded, URL, registry: all on tmpfs), then the mode
# rows next to `url`, the tmpfs root they are compared with.
# registry-signed: as registry, the image signed (another repository) and its initramfs's
# policy requiring the signatures (benchlib/signed.py).
SIGNED = "registry-signed"
SOURCE_ROWS = ("embedded", "url", "registry", SIGNED)
SOURCE_HOW = {
    "embedded": "initrd-full.img: the image in the initramfs",
    "url": f"http://{GUEST_SERVER}/root.oci (nginx)",
    "registry": f"docker://{GUEST_SERVER}:{REGISTRY_PORT}/{REGISTRY_REPO}",
    SIGNED: f"docker://{SIGNED_GUEST_REF}",
}
# The kexec row: booted like `url` (its own artifacts: stage one is the host's kernel and dracut),
# with this appended.
KEXEC = "kexec"
KEXEC_APPEND = "bootc.kexec"
# SPEC §9's reference image over http: on the default tmpfs root, and on zram (MODES["zram"]).
REFERENCE_ROWS = ("reference-url", "reference-zram")
# The packed root (issue 18): packed.img of a build that packs (the rest pass --pack none: the
# default, squashfs xz, costs minutes), in the format the kernel's config chooses, fetched over
# http with cmdline-packed.txt's pin; nothing is unpacked at boot. Each packed row and the rows
# it is compared with, booting the same image from a URL: on tmpfs, on zram, the original's.
PACKED = "packed"
REFERENCE_PACKED = "reference-packed"
PACKED_OF = {
    PACKED: {"tmpfs": "url", "zram": "zram", "original": "original-url"},
    REFERENCE_PACKED: {
        "tmpfs": "reference-url",
        "zram": "reference-zram",
        "original": "original-reference-url",
    },
}
PACKED_ROWS = tuple(PACKED_OF)
PACKED_ARTIFACTS = {PACKED: "debian-packed", REFERENCE_PACKED: "reference-packed"}  # the builds
PACKED_URL = f"root=bootc-live:packed:http://{GUEST_SERVER}/packed.img"
# Issue 18's targets: smallest RAM at most 0.6 x the tmpfs boot's, /init → switch root at most
# 0.3 x the original pipeline's (the same image from the same URL, this run).
PACKED_RAM_FACTOR = 0.6
PACKED_SWITCH_ROOT_FACTOR = 0.3
# The rows booted on a root mode other than the default tmpfs, and that mode (a key of MODES).
ROW_MODE = {**{m: m for m in MODES}, "reference-zram": "zram"}
# The original pipeline (bench/original: a dracut module doing what the original did), booted
# beside ours on the same image, kernel and RAM: each original row and the row of ours it is
# compared with.
ORIGINAL_OF = {
    "original-embedded": "embedded",
    "original-url": "url",
    "original-reference-url": "reference-url",
}
ORIGINAL_ROWS = tuple(ORIGINAL_OF)
ORIGINAL_ROOT = "original-live"  # its root=original-live:…
# The reference image from a URL: the original holds the archive (380 MB), the extracted layout
# (380 MB) and the root (860 MB) at once, beyond the SPEC's 1280 MiB: RAM of its own.
ORIGINAL_REFERENCE_MEM_MIB = 3072
ROWS = (*SOURCE_ROWS, *MODES, PACKED, KEXEC, *REFERENCE_ROWS, REFERENCE_PACKED, *ORIGINAL_ROWS)
URL_ROWS = (
    "url",
    *MODES,
    PACKED,
    KEXEC,
    *REFERENCE_ROWS,
    REFERENCE_PACKED,
    "original-url",
    "original-reference-url",
)
DEBIAN_ROWS = (*SOURCE_ROWS, *MODES, PACKED, KEXEC, "original-embedded", "original-url")
# The rows that boot the reference image (ours and the original's).
REFERENCE_IMAGE_ROWS = (*REFERENCE_ROWS, REFERENCE_PACKED, "original-reference-url")
# SPEC §9, for the Debian test image under TCG: ours must take at most half the original's
# initramfs → switch-root time (measured in the same run by the original-* rows; without them,
# the fallback is a remembered figure: the original spent about 53 s unpacking the test image in
# another run) and the original needs about 2 GiB of RAM; ours must boot from a URL with at most
# 1280 MiB, and use at most 1.1 x the unpacked size while unpacking from a URL.
ORIGINAL_UNPACK_S = 53.0
TARGET_FACTOR = 0.5
ORIGINAL_RAM_MIB = 2048
URL_RAM_TARGET_MIB = 1280
URL_PEAK_FACTOR = 1.1
# The zram mode's target (its issue), checked against the smallest RAM of the `zram` row (the
# test image) and of `reference-zram` (SPEC §9's reference image): "clearly" less is taken as
# at most ZRAM_CLEARLY x the unpacked size.
ZRAM_TARGET = "zram boots it with clearly less RAM than the image's unpacked size"
ZRAM_CLEARLY = 0.9
ZRAM_ROWS = tuple(n for n, mode in ROW_MODE.items() if mode == "zram")
# Issue 19's RAM targets on the reference image: the smallest RAM that boots it from a URL on
# the default tmpfs root, and on zram, at most these times what the root takes in a tmpfs
# (`tmpfs_mib`: df of a tmpfs after an unpack on the host, this run).
RAM_TARGETS = {"reference-url": 1.25, "reference-zram": 0.8}


@dataclass
class RowPlan:
    """What a row boots, with which RAM, and how its RAM search goes."""

    target: Target
    mem: int
    repeat: int
    search: RamSearch | None
    baseline: Target | None = None  # the tiny image from the same initramfs (URL rows)


def bench_row(plan: RowPlan, timeout: float, workdir: Path, logs: Path | None) -> dict[str, Any]:
    name = plan.target.row
    runs: list[BootRun] = []
    for i in range(1, plan.repeat + 1):
        log(f"[{name} {i}/{plan.repeat}] {plan.mem} MiB")
        console = workdir / f"console-{name}-run{i}.log"
        run = boot_once(plan.target, plan.mem, timeout, console)
        runs.append(run)
        log(
            f"[{name} {i}/{plan.repeat}] "
            + (f"done after {run.seconds:.1f} s" if run.ok else f"FAILED: {run.failure}")
            + (f"; peak memory in use {run.peak_mib} MiB" if run.peak_mib else "")
        )
        if not run.ok:
            log(f"the end of its console:\n{run.console_tail}")
            keep_log(console, logs)
    baseline: BootRun | None = None
    if plan.baseline is not None:
        log(f"[{name} baseline] the tiny image from the same initramfs, {plan.mem} MiB")
        baseline = boot_once(
            plan.baseline, plan.mem, timeout, workdir / f"console-{name}-baseline.log"
        )
        log(
            f"[{name} baseline] "
            + (
                f"peak memory in use {baseline.peak_mib} MiB"
                if baseline.ok
                else f"FAILED: {baseline.failure}"
            )
        )
    ok_runs = [r for r in runs if r.ok]
    search = plan.search
    if search is not None:
        longest = max([r.seconds for r in ok_runs], default=timeout / 3)
        trial_timeout = max(240.0, 3 * longest)

        def try_boot(mem: int) -> BootRun:
            log(f"[{name} ram] booting with {mem} MiB")
            console = workdir / f"console-{name}-{mem}.log"
            run = boot_once(plan.target, mem, trial_timeout, console)
            log(f"[{name} ram] {mem} MiB: " + ("boots" if run.ok else f"fails: {run.failure}"))
            return run

        search_ram(try_boot, {plan.mem: bool(runs) and all(r.ok for r in runs)}, search)
    return row_record(plan, runs, baseline)


def row_record(plan: RowPlan, runs: list[BootRun], baseline: BootRun | None) -> dict[str, Any]:
    """A row's record (as the JSON has it): its boots, their phases and the phases' medians
    over the boots that succeeded, the baseline boot, the RAM search."""
    ok_runs = [r for r in runs if r.ok]
    return {
        "target": {**asdict(plan.target), "artifacts": os.fspath(plan.target.artifacts)},
        "mem": plan.mem,
        "runs": [r.as_dict() for r in runs],
        "phases": {label: [f(r) for r in runs] for label, f in PHASES},
        "medians": {label: median([f(r) for r in ok_runs]) for label, f in PHASES},
        "baseline": None if baseline is None else baseline.as_dict(),
        "ram_search": None if plan.search is None else plan.search.as_dict(),
    }


def keep_log(console: Path, logs: Path | None) -> None:
    if logs is None or not console.exists():
        return
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copy2(console, logs / console.name)


def row_figures(row: dict[str, Any], tmpfs: int | None, largest_blob: int) -> dict[str, Any]:
    """The SPEC §9 figures of a row, from its successful timed boots (medians)."""
    ok = [r for r in row["runs"] if r["ok"]]

    def med(key: str) -> Any:
        return median([r[key] for r in ok])

    peak, start, written = med("peak_mib"), med("start_mib"), med("written_mib")
    base = row["baseline"]
    # The tiny image's peak is its start (it adds next to nothing), less the modules it freed.
    base_peak = base["peak_mib"] - (base["freed_mib"] or 0) if base and base["ok"] else None
    figures: dict[str, Any] = {
        "switch_root_s": row["medians"][SWITCH_ROOT],
        "unpack_s": med("unpack_s"),
        "peak_mib": peak,
        "start_mib": start,
        "freed_mib": med("freed_mib"),
        **{name: med(name) for name in AT_PEAK.values()},
        "baseline_peak_mib": base_peak,
        "written_mib": written,
        "tmpfs_mib": None if tmpfs is None else tmpfs / MIB,
        "booted": len(ok),
        "boots": len(row["runs"]),
        "fstype": sorted({r["verdict"]["fstype"] for r in ok if "fstype" in r["verdict"]}),
        "memused_mib": med("memused_mib"),  # in use once booted (the verdict's memused)
        "estimate_mib": med("estimate_mib"),
        "need_mib": med("need_mib"),  # the planner's figure for the row's mode
        "available_mib": med("available_mib"),
        "qemu_switch_root_s": row["medians"][QEMU_SWITCH_ROOT],
        "qemu_end_s": row["medians"]["QEMU start → end (host clock)"],
        "switch_root_host_s": row["medians"][SWITCH_ROOT_HOST],
        "signatures_s": row["medians"][SIGNATURE_CHECK],
        "signatures_keys": sorted({" + ".join(r["signatures_keys"]) for r in ok} - {""}),
    }
    if row["target"]["kexec"]:
        # Stage one's figures (the rest are stage two's); /init → switch root on the host's
        # clock from stage one's /init, across the kexec.
        figures["switch_root_host_s"] = row["medians"][KEXEC_SWITCH_ROOT]
        figures["stage_one_s"] = med("kexec_stage_one_s")
        figures["stage_one_console_s"] = row["medians"]["kexec: stage one /init → kexec into"]
        figures["stage_one_inuse_mib"] = med("kexec_inuse_mib")
        figures["next_initrd_mib"] = med("kexec_initrd_mib")
        figures["handover_mib"] = med("kexec_handover_mib")
        figures["stage_one_peak_mib"] = med("kexec_work_peak_mib")
        figures["stage_one_start_mib"] = med("kexec_work_start_mib")
        figures["stage_one_loading_peak_mib"] = med("kexec_loading_peak_mib")
        figures["layers_read"] = sorted({r["kexec_layers_read"] for r in ok})
        figures["layers"] = sorted({r["kexec_layers"] for r in ok})
        figures["kernels"] = sorted({" → ".join(r["kernels"]) for r in ok})
    # The root modes' own figures. zram: the data on the device and the RAM it takes; EROFS:
    # the image, whose sha256 must be the same in every boot (a reproducible image), RAM
    # trials included.
    if any(r["zram_ram_mib"] is not None for r in ok):
        figures["zram_algorithm"] = sorted({r["zram_algorithm"] for r in ok if r["zram_algorithm"]})
        figures["zram_stored_mib"] = med("zram_stored_mib")
        figures["zram_ram_mib"] = med("zram_ram_mib")
        if figures["zram_stored_mib"] and figures["zram_ram_mib"]:
            figures["zram_ratio"] = figures["zram_stored_mib"] / figures["zram_ram_mib"]
    everything = ok + [t for t in (row["ram_search"] or {}).get("trials", []) if t["ok"]]
    for kind, more in (
        ("erofs", ("erofs_compress", "mkfs_erofs")),
        # The packed root: the file the build made, the same in every boot (its pin).
        ("packed", ("packed_format",)),
    ):
        shas = sorted({r[f"{kind}_sha256"] for r in everything if r[f"{kind}_sha256"]})
        if shas:
            figures[f"{kind}_sha256"] = shas
            figures[f"{kind}_sha256_boots"] = sum(1 for r in everything if r[f"{kind}_sha256"])
            figures[f"{kind}_mib"] = med(f"{kind}_mib")
            for key in more:
                figures[key] = sorted({r[key] for r in ok if r[key]})
    if figures.get("packed_sha256"):
        figures["packed_s"] = med("packed_s")
    search = row["ram_search"]
    if search is not None:
        figures["min_ram_mib"] = search["found"]
        figures["ram_failed_mib"] = search["failed"]
    if row["target"].get("original"):
        # The original pipeline: its steps; its memory is sampled at its steps only.
        for key in ("fetch_s", "extract_s", "umoci_s", "bind_s", "work_s"):
            figures[f"original_{key}"] = med(f"original_{key}")
        figures["archive_mib"] = med("compressed_mib")
        return figures
    # Peak memory above the baseline, against the unpacked size (file data written).
    above = med("above_start_mib")
    if row["target"]["row"] == "embedded" or row["target"]["kexec"]:
        # Before fetching, the image's blobs sit in the initramfs (kexec: the handover appended
        # to stage two's initramfs); each is freed once applied.
        compressed = med("compressed_mib")
        if above is not None and compressed is not None:
            figures["above_imageless_mib"] = above + compressed
            if written:
                figures["embedded_limit_mib"] = written + largest_blob / MIB
                figures["embedded_ratio"] = (above + compressed) / figures["embedded_limit_mib"]
    else:
        figures["above_start_mib"] = above
        if above is not None and written:
            figures["ratio"] = above / written
        if peak is not None and base_peak is not None:
            figures["above_baseline_mib"] = peak - base_peak
            if written:
                figures["ratio_baseline"] = (peak - base_peak) / written
        tmpfs_root = row["target"]["row"] not in ROW_MODE and not row["target"].get("packed")
        if above is not None and tmpfs is not None and tmpfs_root:
            # Only for a tmpfs root: the footprint is the tmpfs's.
            figures["overhead_mib"] = above - tmpfs / MIB
    return figures


def source_comparison(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The test image's sources side by side, all on the default tmpfs root: embedded in the
    initramfs, over http (nginx), from a registry (docker-registry); the smallest RAM, switch
    root and the peak also against url's. Figures of this run only."""
    out: dict[str, Any] = {}
    url = rows["url"]["figures"] if "url" in rows else {}
    keys = ("min_ram_mib", "switch_root_s", "unpack_s", "peak_mib", "start_mib", "memused_mib")
    for name in SOURCE_ROWS:
        if name not in rows:
            continue
        f = rows[name]["figures"]
        out[name] = {"source": SOURCE_HOW[name], **{key: f.get(key) for key in keys}}
        for key in ("min_ram_mib", "switch_root_s", "peak_mib"):
            if f.get(key) is not None and url.get(key):
                out[name][f"{key}_vs_url"] = f[key] / url[key]
    return out


def signature_comparison(
    rows: dict[str, dict[str, Any]],
    sizes: dict[str, dict[str, int]],
    initrd: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """registry-signed next to registry (the same image from the same registry, without a
    policy): /init → switch root of each (the SPEC's clock and the host's) and what the check
    added, the check's own seconds, and the initrd.img of each build and its difference (the
    policy, registries.d and keys: the verifiers, gpgv and openssl, are in both), with `initrd`,
    the files behind it (signed.initrd_difference). Figures of this run only ({} without
    registry-signed)."""
    if SIGNED not in rows:
        return {}
    signed = rows[SIGNED]["figures"]
    plain = rows["registry"]["figures"] if "registry" in rows else {}
    out: dict[str, Any] = {"against": "registry", "ran": "registry" in rows}
    for key in ("switch_root_s", "switch_root_host_s", "unpack_s"):
        out[key] = plain.get(key)
        out[f"signed_{key}"] = signed.get(key)
        both = out[key] is not None and out[f"signed_{key}"] is not None
        out[f"{key}_added"] = out[f"signed_{key}"] - out[key] if both else None
    out["signatures_s"] = signed.get("signatures_s")
    out["signatures_keys"] = signed.get("signatures_keys") or []
    img = {
        name: sizes[artifacts]["initrd.img"] if artifacts in sizes else None
        for name, artifacts in (("plain", "debian-registry"), ("signed", "debian-registry-signed"))
    }
    out["initrd_bytes"], out["signed_initrd_bytes"] = img["plain"], img["signed"]
    out["initrd_bytes_added"] = (
        img["signed"] - img["plain"]
        if img["plain"] is not None and img["signed"] is not None
        else None
    )
    out["initrd_files"] = initrd  # the files' own sizes (initrd_difference), when listed
    return out


def original_comparison(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each original row next to the row of ours booting the same image the same way (same
    kernel, RAM): switch root (the SPEC's clock and the host's), the peak memory, the memory in
    use once booted and the smallest RAM, each as ours / the original's; and the SPEC's target
    on switch root. Figures of this run only."""
    out: dict[str, Any] = {}
    keys = ("switch_root_s", "switch_root_host_s", "peak_mib", "memused_mib", "min_ram_mib")
    for original, name in ORIGINAL_OF.items():
        if original not in rows:
            continue
        theirs = rows[original]["figures"]
        ours = rows[name]["figures"] if name in rows else {}
        pair: dict[str, Any] = {"ours": name, "ran": name in rows}
        for key in keys:
            pair[key] = ours.get(key)
            pair[f"original_{key}"] = theirs.get(key)
            if ours.get(key) is not None and theirs.get(key):
                pair[f"{key}_ratio"] = ours[key] / theirs[key]
        ratio = pair.get("switch_root_s_ratio")
        pair["met"] = None if ratio is None else ratio <= TARGET_FACTOR
        out[original] = pair
    return out


def mode_comparison(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The root modes against their image's tmpfs row (`url`; `reference-url` for
    `reference-zram`), and the issue's target for zram on each image: it boots with clearly less
    RAM than the image's unpacked size. Figures of this run only."""
    out: dict[str, Any] = {}
    for name in ("url", *MODES, *REFERENCE_ROWS):
        if name not in rows:
            continue
        f = rows[name]["figures"]
        base_name = tmpfs_row(name)
        base = rows[base_name]["figures"] if base_name in rows else {}
        out[name] = {
            "append": MODES.get(ROW_MODE.get(name, ""), ""),
            "against": base_name,
            "min_ram_mib": f.get("min_ram_mib"),
            "switch_root_s": f.get("switch_root_s"),
            "peak_mib": f.get("peak_mib"),
            "memused_mib": f.get("memused_mib"),
            "written_mib": f.get("written_mib"),
        }
        for key in ("min_ram_mib", "switch_root_s", "peak_mib"):
            if f.get(key) is not None and base.get(key):
                out[name][f"{key}_vs_url"] = f[key] / base[key]
    out["targets"] = [zram_target(rows, name) for name in ZRAM_ROWS if name in rows]
    out["ram_targets"] = [
        ram_target(rows[name], name, limit) for name, limit in RAM_TARGETS.items() if name in rows
    ]
    return out


def verdict(ratio: float | None, failed: float | None, limit: float, base: float) -> bool | None:
    """Met when a boot at `limit` x `base` or below succeeded (`ratio`: the smallest RAM that
    booted / `base`); not met when one at or above it failed; else (the search's step straddles
    it, or only an upper bound above it is known) undecided: None."""
    if ratio is None:
        return None
    if ratio <= limit:
        return True
    if failed is not None and failed >= limit * base:
        return False
    return None


def ram_target(row: dict[str, Any], name: str, limit: float) -> dict[str, Any]:
    """One of RAM_TARGETS: the row's smallest RAM against the root's tmpfs footprint."""
    f = row["figures"]
    ram, footprint = f.get("min_ram_mib"), f.get("tmpfs_mib")
    ratio = ram / footprint if ram is not None and footprint else None
    return {
        "row": name,
        "limit": limit,
        "min_ram_mib": ram,
        "upper_bound": ram is not None and not exact_ram(row),
        "failed_mib": f.get("ram_failed_mib"),
        "tmpfs_mib": footprint,
        "ratio": ratio,
        "met": verdict(ratio, f.get("ram_failed_mib"), limit, footprint or 0),
    }


def tmpfs_row(name: str) -> str:
    """The row that boots the same image on the default tmpfs root."""
    return "reference-url" if name in REFERENCE_ROWS else "url"


def zram_target(rows: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The zram target on one image: the zram row's smallest RAM against the unpacked size (and
    against the tmpfs row's smallest RAM)."""
    tmpfs_name = tmpfs_row(name)
    image = "the reference image" if name in REFERENCE_ROWS else "the test image"
    zram = rows[name]["figures"]
    tmpfs = rows[tmpfs_name]["figures"] if tmpfs_name in rows else {}
    ram, written = zram.get("min_ram_mib"), zram.get("written_mib")
    ratio = ram / written if ram is not None and written else None
    target = {
        "text": ZRAM_TARGET,
        "row": name,
        "tmpfs_row": tmpfs_name,
        "image": image,
        "zram_min_ram_mib": ram,
        # The search reached its floor without a failure: the smallest RAM is at most that.
        "zram_min_ram_upper_bound": ram is not None and not exact_ram(rows[name]),
        "unpacked_mib": written,
        "url_min_ram_mib": tmpfs.get("min_ram_mib"),
        "url_min_ram_upper_bound": tmpfs_name in rows
        and tmpfs.get("min_ram_mib") is not None
        and not exact_ram(rows[tmpfs_name]),
        "ratio_unpacked": ratio,
        "ratio_url": ram / tmpfs["min_ram_mib"]
        if ram is not None and tmpfs.get("min_ram_mib")
        else None,
        "above_start_mib": zram.get("above_start_mib"),
        "above_start_ratio": zram.get("ratio"),
    }
    failed = zram.get("ram_failed_mib")
    target["zram_failed_mib"] = failed
    target["met"] = verdict(ratio, failed, ZRAM_CLEARLY, written or 0)
    return target


def packed_comparison(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each packed row next to the rows booting the same image from the same URL (PACKED_OF):
    on tmpfs, on zram, and the original pipeline's; the smallest RAM, /init → switch root, the
    peak and the memory in use once booted, each as packed / theirs; and issue 18's targets:
    smallest RAM against the tmpfs row's, switch root against the original's. Figures of this
    run only."""
    out: dict[str, Any] = {}
    keys = ("min_ram_mib", "switch_root_s", "switch_root_host_s", "peak_mib", "memused_mib")
    for name, against in PACKED_OF.items():
        if name not in rows:
            continue
        f = rows[name]["figures"]
        pair: dict[str, Any] = {
            **{key: f.get(key) for key in keys},
            "packed_mib": f.get("packed_mib"),
            "format": f.get("packed_format") or [],
            "sha256": f.get("packed_sha256") or [],
            "min_ram_upper_bound": f.get("min_ram_mib") is not None and not exact_ram(rows[name]),
        }
        for kind, other in against.items():
            theirs = rows[other]["figures"] if other in rows else {}
            pair[kind] = {
                "row": other,
                "ran": other in rows,
                **{key: theirs.get(key) for key in keys},
                "min_ram_upper_bound": other in rows
                and theirs.get("min_ram_mib") is not None
                and not exact_ram(rows[other]),
            }
            for key in keys:
                if f.get(key) is not None and theirs.get(key):
                    pair[kind][f"{key}_ratio"] = f[key] / theirs[key]
        pair["ram_met"] = packed_ram_met(pair)
        ratio = pair["original"].get("switch_root_s_ratio")
        pair["switch_root_met"] = None if ratio is None else ratio <= PACKED_SWITCH_ROOT_FACTOR
        out[name] = pair
    return out


def packed_ram_met(pair: dict[str, Any]) -> bool | None:
    """The RAM target (packed / tmpfs <= PACKED_RAM_FACTOR): met, not met, or undecided when a
    search reached its floor and gave only an upper bound on the side that decides."""
    ratio = pair["tmpfs"].get("min_ram_mib_ratio")
    if ratio is None:
        return None
    if ratio <= PACKED_RAM_FACTOR:
        return None if pair["tmpfs"]["min_ram_upper_bound"] else True
    return None if pair["min_ram_upper_bound"] else False


def kexec_comparison(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The kexec row next to `url` (the same image over http, no kexec): the smallest RAM, the
    time to switch root on the host's clock and the peak memory; and stage one's own figures.
    Figures of this run only."""
    if KEXEC not in rows:
        return {}
    out: dict[str, Any] = {}
    url = rows["url"]["figures"] if "url" in rows else {}
    keys = (
        "min_ram_mib",
        "qemu_switch_root_s",
        "switch_root_host_s",
        "switch_root_s",
        "qemu_end_s",
        "peak_mib",
        "start_mib",
        "memused_mib",
    )
    for name in ("url", KEXEC):
        if name not in rows:
            continue
        f = rows[name]["figures"]
        out[name] = {key: f.get(key) for key in keys}
        for key in ("min_ram_mib", "qemu_switch_root_s", "switch_root_host_s", "peak_mib"):
            if name != "url" and f.get(key) is not None and url.get(key):
                out[name][f"{key}_vs_url"] = f[key] / url[key]
    f = rows[KEXEC]["figures"]
    out["stage_one"] = {
        key: f.get(key)
        for key in (
            "stage_one_s",
            "stage_one_console_s",
            "stage_one_inuse_mib",
            "next_initrd_mib",
            "handover_mib",
            "stage_one_peak_mib",
            "stage_one_start_mib",
            "stage_one_loading_peak_mib",
            "layers_read",
            "layers",
            "kernels",
        )
    }
    out["stage_one"]["kexec_to_next_kernel_s"] = rows[KEXEC]["medians"][
        "kexec into → next kernel (host clock)"
    ]
    # Stage one's own work against a full unpack (url: the same image, the same fetch): its
    # peak, and what it added above its start, against url's peak and url's peak - before
    # fetching.
    one = out["stage_one"]
    if one["stage_one_peak_mib"] is not None and url.get("peak_mib"):
        one["peak_vs_url"] = one["stage_one_peak_mib"] / url["peak_mib"]
        if one["stage_one_start_mib"] is not None and url.get("above_start_mib"):
            one["added_mib"] = one["stage_one_peak_mib"] - one["stage_one_start_mib"]
            one["added_vs_url"] = one["added_mib"] / url["above_start_mib"]
    return out


def exact_ram(row: dict[str, Any]) -> bool:
    """Whether a row's smallest RAM is known to the search's step (not only an upper bound)."""
    search = row["ram_search"]
    if search is None or search["found"] is None or search["failed"] is None:
        return False
    return bool(search["found"] - search["failed"] <= search["step"])
