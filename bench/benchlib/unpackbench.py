"""bench/unpack's whole run (the cached images, every method on each, the trees checked) and
its report."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import debian_image
from benchlib.common import BenchError, log, machine_info, resolve_bootc_live, utc_now, write_json
from benchlib.mounts import remove_tree
from benchlib.refimage import build_image, build_root
from benchlib.unpacking import METHODS, OURS, bench_image, initramfs_commands

TARGET_VS_ORIGINAL = 0.4
TARGET_VS_FLOOR = 1.1
# Issue 19's, for what an initramfs has: at most these, against tar+umoci and pigz|tar.
INITRAMFS_TARGETS = {"vs_original": 0.3, "vs_floor": 1.0}
MB = 1_000_000
CONTENDED = 0.25  # a run is noisy when others used over a quarter of a CPU meanwhile


def mbytes(n: int) -> str:
    return f"{n / MB:.1f}"


def print_report(report: dict[str, Any]) -> None:
    root = report["reference_root"]["figures"]
    print()
    print(
        f"reference root: {root['entries']} entries, {mbytes(root['bytes'])} MB "
        f"(du -sb --apparent-size on the build disk); sizes in MB = 10^6 bytes"
    )
    for kind, img in report["images"].items():
        layers = img["layers"]
        print()
        print(
            f"== {kind}: {len(layers)} gzip layer(s), "
            f"{mbytes(sum(lay['size'] for lay in layers))} MB compressed "
            f"(largest {mbytes(max(lay['size'] for lay in layers))} MB), "
            f"{mbytes(sum(lay['tar_size'] for lay in layers))} MB of tar, "
            f"oci-archive {mbytes(img['archive_bytes'])} MB"
        )
        header = (
            f"{'method':<26}{'median s':>9}{'cpu s':>7}{'other':>7}  {'runs s':<18}"
            f"{'max RSS':>8}{'tree RSS':>9}{'anon':>7}{'tmpfs':>8}  tree entries / MB"
        )
        print(header)
        print("-" * len(header))
        for method, res in img["methods"].items():
            name = METHODS[method]
            if "median_seconds" not in res:
                print(f"{name:<26}{'FAILED':>9}")
            else:
                runs = " ".join(f"{r['seconds']:.2f}" for r in res["runs"])
                print(
                    f"{name:<26}{res['median_seconds']:>9.2f}{res['median_cpu_seconds']:>7.2f}"
                    f"{res['median_others_cpu_seconds']:>7.2f}  {runs:<18}"
                    f"{mbytes(res['max_rss_kib'] * 1024):>8}"
                    f"{mbytes(res['tree_rss_kib'] * 1024):>9}"
                    f"{mbytes(res['tree_anon_kib'] * 1024):>7}"
                    f"{mbytes(res['tmpfs_used_bytes']):>8}  "
                    f"{res['tree']['entries']} / {mbytes(res['tree']['bytes'])}"
                )
                if len(res["step_median_seconds"]) > 1 and method == "umoci":
                    for label, secs in res["step_median_seconds"].items():
                        print(f"  {label:<24}{secs:>9.2f}")
            if "error" in res:
                print(f"  ERROR: {res['error']}")
            if "note" in res:
                print(f"  note: {res['note']}")
        for method, r in img["ratios"].items():
            name = f"{METHODS[method]} /"
            if "vs_original" in r:
                verdict = "met" if r["vs_original"] <= TARGET_VS_ORIGINAL else "NOT MET"
                print(
                    f"{name:<25} (tar+umoci) = {r['vs_original']:.3f}   "
                    f"target <= {TARGET_VS_ORIGINAL}  ({verdict})"
                )
            if "vs_floor" in r:
                print(f"{name:<25} pigz|tar    = {r['vs_floor']:.3f}   target ~ {TARGET_VS_FLOOR}")
            if method == "bootc-live-initramfs":
                for key, target in INITRAMFS_TARGETS.items():
                    if key in r:
                        verdict = "met" if r[key] <= target else "NOT MET"
                        print(f"  issue 19, what an initramfs has: {key} <= {target}  ({verdict})")
    print()
    print("median s: wall clock; cpu s: user + system of the method's processes; other: CPU")
    print("seconds the rest of the machine used meanwhile; max RSS: the largest process")
    print("(/usr/bin/time %M); tree RSS / anon: peak sum over the process tree, sampled every")
    print("50 ms; tmpfs: used after the unpack (tar+umoci's includes the extracted layout)")
    all_runs = [
        run
        for img in report["images"].values()
        for res in img["methods"].values()
        for run in res["runs"]
    ]
    contended = [r for r in all_runs if r["others_cpu_seconds"] > CONTENDED * r["seconds"]]
    if contended:
        worst = max(r["others_cpu_seconds"] for r in contended)
        print(
            f"WARNING: other processes kept the CPUs busy during {len(contended)} of "
            f"{len(all_runs)} runs (up to {worst:.1f} CPU-s): timings are noisy; "
            "re-run on an idle machine"
        )


def tool_versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError:
            return "missing"
        out = (p.stdout or p.stderr).strip()
        return out.splitlines()[0] if out else ""

    return {
        "umoci": first_line(["umoci", "--version"]),
        "pigz": first_line(["pigz", "--version"]),
        "tar": first_line(["tar", "--version"]),
    }


def bench(args: argparse.Namespace) -> int:
    wanted = any(m in OURS for m in args.methods) and not args.build_only
    bootc_live = (
        resolve_bootc_live(args.bootc_live, skip="--methods pigz,umoci to skip it")
        if wanted
        else []
    )
    for tool in ("debootstrap", "umoci", "pigz", "tar", "/usr/bin/time", "mount"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed")
    # One builder at a time (the test suite builds this cache in the background and in a test).
    with debian_image.locked(args.cache):
        root, root_info = build_root(args.cache, args.mirror, args.rebuild_root)
        images = {
            kind: build_image(args.cache, kind, root, root_info, args.rebuild or args.rebuild_root)
            for kind in args.images
        }
    fig = root_info["figures"]
    log(f"reference root: {fig['entries']} entries, {mbytes(fig['bytes'])} MB")
    if args.build_only:
        for kind, info in images.items():
            log(
                f"{kind}: {args.cache / 'images' / kind}/image.tar, {len(info['layers'])} "
                f"layer(s), {mbytes(info['archive_bytes'])} MB"
            )
        return 0
    report: dict[str, Any] = {
        "when": utc_now(),
        "machine": {**machine_info(), "tools": tool_versions()},
        "bootc_live": bootc_live,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "targets": {
            "vs_original_max": TARGET_VS_ORIGINAL,
            "vs_floor_aim": TARGET_VS_FLOOR,
            "initramfs_max": INITRAMFS_TARGETS,
        },
        "reference_root": root_info,
        "images": {},
    }
    base = Path(tempfile.mkdtemp(prefix="bootc-live-bench."))
    try:
        ours = {"bootc-live": bootc_live, **initramfs_commands(base, bootc_live)}
        for kind, info in images.items():
            image_dir = args.cache / "images" / kind
            result = bench_image(kind, image_dir, info, args, base, ours)
            report["images"][kind] = {**info, "path": os.fspath(image_dir / "image.tar"), **result}
    finally:
        remove_tree(base)
    failures = [
        f"{kind}/{m}"
        for kind, img in report["images"].items()
        for m, res in img["methods"].items()
        if "error" in res
    ]
    report["failures"] = failures
    print_report(report)
    if args.json:
        write_json(args.json, report)
    if failures:
        log(f"bench/unpack: FAILED: {', '.join(failures)} (see the errors above)")
        return 1
    return 0
