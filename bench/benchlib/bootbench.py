"""bench/boot's whole run: the images and their artifacts built, the servers started, each
row planned and booted, its figures and the comparisons, the report."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import debian_image
import kexec_image
from benchlib.artifacts import (
    build_artifacts,
    layout_layers,
    packed_record,
    reference_image,
    sizes_of,
    tmpfs_footprint,
    url_view,
)
from benchlib.boots import Target
from benchlib.common import BenchError, log, machine_info, resolve_bootc_live, utc_now, write_json
from benchlib.console import READY_MARKER
from benchlib.original import assemble as assemble_original
from benchlib.original import build_in_image as original_in_image
from benchlib.original import build_with_host as original_with_host
from benchlib.original import label_of
from benchlib.ramsearch import RamSearch, search_plan
from benchlib.report import print_report
from benchlib.rows import (
    DEBIAN_ROWS,
    KEXEC,
    KEXEC_APPEND,
    MODE_FSTYPE,
    MODES,
    ORIGINAL_OF,
    ORIGINAL_RAM_MIB,
    ORIGINAL_ROOT,
    ORIGINAL_ROWS,
    ORIGINAL_UNPACK_S,
    PACKED,
    PACKED_ARTIFACTS,
    PACKED_ROWS,
    PACKED_URL,
    REFERENCE_IMAGE_ROWS,
    REFERENCE_PACKED,
    REFERENCE_ROWS,
    ROW_MODE,
    ROWS,
    SIGNED,
    TARGET_FACTOR,
    URL_PEAK_FACTOR,
    URL_RAM_TARGET_MIB,
    URL_ROWS,
    RowPlan,
    bench_row,
    keep_log,
    kexec_comparison,
    mode_comparison,
    original_comparison,
    packed_comparison,
    row_figures,
    signature_comparison,
    source_comparison,
)
from benchlib.servers import (
    REGISTRY_PORT,
    REGISTRY_REPO,
    TINY_TAG,
    guest_blob_requests,
    registry_credentials,
    registry_serving,
    serving,
)
from benchlib.signed import (
    LOOKASIDE_PORT,
    SIGNED_GUEST_REF,
    SIGNED_REPO,
    Signed,
    initrd_difference,
    initrd_files,
    sign_and_push,
)
from bootc_live.demo import host_kernel
from bootc_live.vm import GUEST_SERVER, VmConfig, choose_accel


@dataclass
class Setup:
    """What the rows are planned with: the options, the tool, where and how it all runs, and
    what planning gathers (the rows' plans, each image's largest blob)."""

    args: argparse.Namespace
    bootc_live: str
    workdir: Path
    report: dict[str, Any]
    stack: ExitStack
    plans: dict[str, RowPlan] = field(default_factory=dict)
    largest: dict[str, int] = field(default_factory=dict)
    signed: Signed | None = None  # the registry-signed row's signing, when it runs


def bench(args: argparse.Namespace) -> int:
    bootc_live = resolve_bootc_live(args.bootc_live)
    debian = any(r in DEBIAN_ROWS for r in args.rows)
    check_tools(args.rows, debian)
    image = debian_image.ensure_image(args.cache, log=log) if debian else None
    ref = (
        reference_image(args.reference_cache, "single")
        if set(args.rows) & set(REFERENCE_IMAGE_ROWS)
        else None
    )
    report = new_report(bootc_live, image, ref)
    workdir = Path(tempfile.mkdtemp(prefix="bootc-live-bench-boot.", dir="/var/tmp"))
    try:
        with ExitStack() as stack:
            b = Setup(args, bootc_live, workdir, report, stack)
            registry = debian_plans(b, image) if image is not None else None
            if ref is not None:
                reference_plans(b, ref)
            run_rows(b)
            if registry is not None:
                report["registry"]["guest_blob_requests"] = guest_blob_requests(registry)
            if b.signed is not None:
                report["registry_signed"]["guest_blob_requests"] = guest_blob_requests(
                    registry, SIGNED_REPO
                )
                report["registry_signed"]["lookaside_requests"] = len(b.signed.lookaside_requests())
            report["signatures"] = signature_comparison(
                report["rows"], report["sizes"], report.get("registry_signed_initrd")
            )
            report["sources"] = source_comparison(report["rows"])
            report["modes"] = mode_comparison(report["rows"])
            report["kexec"] = kexec_comparison(report["rows"])
            report["original"] = original_comparison(report["rows"])
            report["packed_rows"] = packed_comparison(report["rows"])
        if args.logs:
            for console in workdir.glob("console-*.log"):
                keep_log(console, args.logs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        write_json(args.json, report)
    print_report(report)
    failed = [n for n, row in report["rows"].items() if not all(r["ok"] for r in row["runs"])]
    if failed:
        log(f"bench/boot: timed boots failed in: {', '.join(failed)}")
    return 1 if failed else 0


def check_tools(rows: list[str], debian: bool) -> None:
    """Every tool the rows asked for, or one line naming the missing."""
    tools = ["qemu-system-x86_64", "unshare"]
    tools += ["chroot"] if debian else []
    tools += ["nginx"] if set(rows) & set(URL_ROWS) else []
    registry = set(rows) & {"registry", SIGNED}
    tools += ["docker-registry", "skopeo", "openssl"] if registry else []
    tools += ["nginx", "gpg", "gpgv", "gpgconf"] if SIGNED in rows else []
    tools += ["/usr/bin/umoci"] if set(rows) & set(ORIGINAL_ROWS) else []
    missing = (debian_image.missing_tools() if debian else []) + [
        t for t in tools if shutil.which(t) is None
    ]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run ./setup)")


def new_report(
    bootc_live: str, image: debian_image.DebianImage | None, ref: dict[str, Any] | None
) -> dict[str, Any]:
    """The report's header: the machine, the targets, the images booted."""
    report: dict[str, Any] = {
        "when": utc_now(),
        "machine": {
            **machine_info(),
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "accel": choose_accel("auto"),
        "cpus": VmConfig(Path(".")).cpus,
        "bootc_live": bootc_live,
        "targets": {
            "original_unpack_reference_s": ORIGINAL_UNPACK_S,  # the fallback only
            "factor": TARGET_FACTOR,
            "original_ram_mib": ORIGINAL_RAM_MIB,
            "url_ram_target_mib": URL_RAM_TARGET_MIB,
            "url_peak_factor": URL_PEAK_FACTOR,
        },
        "build_seconds": {},
        "packed": {},  # each packed build's packed.json
        "original_build": {},
        "sizes": {},
        "tmpfs_bytes": {},
        "rows": {},
    }
    if image is not None:
        report["image"] = {
            **asdict(image),
            "layout": os.fspath(image.layout),
            "compressed_bytes": image.compressed_bytes,
        }
    if ref is not None:
        report["reference"] = {**ref, "kver": host_kernel()}
    return report


def debian_plans(b: Setup, image: debian_image.DebianImage) -> Any:
    """The rows of the Debian test image, their artifacts built and servers started; the
    registry server when the registry row is asked for."""
    art = b.workdir / "debian"
    # registry: artifacts of its own; kexec: its initramfs is these artifacts'; the original's:
    # their kernel and root.oci.
    originals = [r for r in ("original-embedded", "original-url") if r in b.args.rows]
    if set(b.args.rows) & {"embedded", "url", *MODES, KEXEC} or originals:
        b.report["build_seconds"]["debian"] = build_artifacts(b.bootc_live, image.source, art)
        b.report["sizes"]["debian"] = sizes_of(art)
    b.report["tmpfs_bytes"]["debian"] = tmpfs_footprint(
        b.bootc_live, image.source, b.workdir / "tmpfs-debian"
    )
    b.largest["debian"] = max(layer["size"] for layer in image.layers)
    if "embedded" in b.args.rows:
        b.plans["embedded"] = RowPlan(
            Target("embedded", art, fstype="tmpfs"),
            b.args.mem,
            b.args.repeat,
            search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
        )
    url_rows = [r for r in ("url", *MODES) if r in b.args.rows]
    if url_rows or "original-url" in originals:
        # One nginx for the url row, the root modes and the original's: the same root.oci.
        port, view, url, tiny = serve_root_oci(art, b.workdir, "debian", b.stack)
    for name in url_rows:
        # url: the default tmpfs root; the modes append their kernel arguments. The tiny
        # image's cross-check of the baseline is made once, by url.
        append = f"{url} {MODES[name]}" if name in MODES else url
        b.plans[name] = RowPlan(
            Target(name, view, append, port, fstype=MODE_FSTYPE.get(name, "tmpfs")),
            b.args.mem,
            b.args.repeat,
            search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
            None
            if b.args.no_baseline or name != "url"
            else Target("url", view, tiny, port, "ready", READY_MARKER),
        )
    if originals:
        embed = "original-embedded" in originals
        original = build_original(b, "debian", art, embed, image.kver, image.source)
        if "original-embedded" in originals:
            b.plans["original-embedded"] = RowPlan(
                Target("original-embedded", original, fstype="tmpfs", original=True),
                b.args.mem,
                b.args.repeat,
                search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
            )
        if "original-url" in originals:
            b.plans["original-url"] = RowPlan(
                original_url(b, "original-url", original, port, fstype="tmpfs"),
                b.args.mem,
                b.args.repeat,
                search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
            )
    registry = None
    if set(b.args.rows) & {"registry", SIGNED}:
        registry = registry_plan(b, image)
    if PACKED in b.args.rows:
        b.plans[PACKED] = packed_plan(
            b,
            PACKED,
            image.source,
            (),
            b.args.mem,
            b.args.repeat,
            search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
        )
    if KEXEC in b.args.rows:
        b.plans[KEXEC] = kexec_plan(b.args, b.bootc_live, image, art, b.workdir, b.report, b.stack)
        b.largest["debian-kexec"] = b.report["kexec_image"]["largest_blob_bytes"]
    return registry


def registry_plan(b: Setup, image: debian_image.DebianImage) -> Any:
    """The registry rows: the image pushed to a real registry; `registry`'s artifacts of its
    own (the initramfs carries the CA and the credentials); `registry-signed`'s (the same and a
    policy requiring both kinds of signature) with the image pushed again, signed. The
    registry."""
    pki, auth = registry_credentials(b.workdir / "registry-pki")
    reg_art = b.workdir / "debian-registry"
    if "registry" in b.args.rows:
        b.report["build_seconds"]["debian-registry"] = build_artifacts(
            b.bootc_live, image.source, reg_art, "--ca", os.fspath(pki.ca), "--auth-file",
            os.fspath(auth), "--auth-registry", f"{GUEST_SERVER}:{REGISTRY_PORT}",
        )  # fmt: skip
        b.report["sizes"]["debian-registry"] = sizes_of(reg_art)
    registry, push_s = b.stack.enter_context(
        registry_serving(image.source, pki, b.workdir / "registry")
    )
    pull = f"docker://{GUEST_SERVER}:{REGISTRY_PORT}/{REGISTRY_REPO}"
    b.report["registry"] = {
        "server": "docker-registry (TLS from a throwaway CA, htpasswd auth)",
        "host": registry.host,
        "guest_ref": pull,
        "pushed": image.source,
        "push_seconds": push_s,
        "compressed_bytes": image.compressed_bytes,
    }
    if "registry" in b.args.rows:
        b.plans["registry"] = RowPlan(
            Target(
                "registry",
                url_view(reg_art, b.workdir / "debian-registry-view"),
                f"root=bootc-live:{pull}",
                registry.port,
                guest_port=REGISTRY_PORT,
                fstype="tmpfs",
            ),
            b.args.mem,
            b.args.repeat,
            search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
        )
    if SIGNED in b.args.rows:
        b.signed = signed_plan(b, image, pki, auth, registry)
    return registry


def signed_plan(
    b: Setup, image: debian_image.DebianImage, pki: Any, auth: Path, registry: Any
) -> Signed:
    """registry-signed: the image pushed again as SIGNED_REPO, signed (GPG by skopeo into a
    lookaside nginx serves, a cosign attachment); artifacts built with --ca, --auth-file,
    --policy (requiring both) and --registries-d; booted by its tag, the registry and the
    lookaside each through a guestfwd."""
    signed = sign_and_push(
        image.source,
        image.layout,
        image.manifest_digest,
        registry,
        pki,
        b.workdir / "registry-signed",
        b.stack,
    )
    art = b.workdir / "debian-registry-signed"
    b.report["build_seconds"]["debian-registry-signed"] = build_artifacts(
        b.bootc_live, image.source, art, "--ca", os.fspath(pki.ca), "--auth-file",
        os.fspath(auth), "--auth-registry", f"{GUEST_SERVER}:{REGISTRY_PORT}",
        "--policy", os.fspath(signed.policy), "--registries-d",
        os.fspath(signed.registries_d),
    )  # fmt: skip
    b.report["sizes"]["debian-registry-signed"] = sizes_of(art)
    if "registry" in b.args.rows:  # what is in its initramfs for the check, against registry's
        b.report["registry_signed_initrd"] = initrd_difference(
            initrd_files(b.workdir / "debian-registry" / "initrd.img"),
            initrd_files(art / "initrd.img"),
        )
    pull = f"docker://{SIGNED_GUEST_REF}"
    b.report["registry_signed"] = {
        "guest_ref": pull,
        "sign_seconds": signed.sign_seconds,
        "gpg_fingerprint": signed.gpg_fingerprint,
        "cosign_public": os.fspath(signed.cosign_public),
        "policy": json.loads(signed.policy.read_text()),
        "lookaside": f"http://{GUEST_SERVER}:{LOOKASIDE_PORT} (nginx on {signed.lookaside.port})",
    }
    b.plans[SIGNED] = RowPlan(
        Target(
            SIGNED,
            url_view(art, b.workdir / "debian-registry-signed-view"),
            f"root=bootc-live:{pull}",
            registry.port,
            guest_port=REGISTRY_PORT,
            fstype="tmpfs",
            more_forwards=((LOOKASIDE_PORT, signed.lookaside.port),),
        ),
        b.args.mem,
        b.args.repeat,
        search_plan(b.args, b.args.ram_min, b.args.ram_max, None),
    )
    return signed


def reference_plans(b: Setup, ref: dict[str, Any]) -> None:
    """The rows of the reference-sized image, booted from a URL: those that unpack it from the
    artifacts of a build with --pack none, reference-packed from those of a build that packs
    (the difference of their seconds is what packing adds)."""
    art = b.workdir / "reference"
    kver = b.report["reference"]["kver"]
    b.report["tmpfs_bytes"]["reference"] = tmpfs_footprint(
        b.bootc_live, ref["source"], b.workdir / "tmpfs-reference"
    )
    b.largest["reference"] = max(layer["size"] for layer in ref["layers"])
    if REFERENCE_PACKED in b.args.rows:
        b.plans[REFERENCE_PACKED] = packed_plan(
            b,
            REFERENCE_PACKED,
            ref["source"],
            ("--host", "--kver", kver),
            b.args.reference_mem,
            b.args.reference_repeat,
            search_plan(
                b.args,
                b.args.reference_packed_ram_min,
                b.args.reference_ram_max,
                b.args.reference_ram_boots,
            ),
            goal="switch-root",
            marker=ref["greeting"],
        )
    if not set(b.args.rows) & {*REFERENCE_ROWS, "original-reference-url"}:
        return
    b.report["build_seconds"]["reference"] = build_artifacts(
        b.bootc_live, ref["source"], art, "--host", "--kver", kver
    )
    b.report["sizes"]["reference"] = sizes_of(art)
    port, view, url, tiny = serve_root_oci(art, b.workdir, "reference", b.stack)
    for name in (n for n in REFERENCE_ROWS if n in b.args.rows):
        append = f"{url} {MODES[ROW_MODE[name]]}" if name in ROW_MODE else url
        b.plans[name] = RowPlan(
            Target(name, view, append, port, "switch-root", ref["greeting"]),
            b.args.reference_mem,
            b.args.reference_repeat,
            search_plan(
                b.args,
                b.args.reference_ram_min,
                b.args.reference_ram_max,
                b.args.reference_ram_boots,
            ),
            None
            if b.args.no_baseline or name != "reference-url"
            else Target(name, view, tiny, port, "ready", READY_MARKER),
        )
    greeting = ref["greeting"]
    if "original-reference-url" in b.args.rows:
        # The original holds the archive, the extracted layout and the root at once: it gets
        # RAM of its own (--original-reference-mem), and its search goes as high.
        original = build_original(b, "reference", art, False, kver)
        b.plans["original-reference-url"] = RowPlan(
            original_url(
                b, "original-reference-url", original, port, goal="switch-root", marker=greeting
            ),
            b.args.original_reference_mem,
            b.args.reference_repeat,
            search_plan(
                b.args,
                b.args.reference_ram_min,
                max(b.args.reference_ram_max, b.args.original_reference_mem),
                b.args.reference_ram_boots,
            ),
        )


def packed_plan(
    b: Setup,
    name: str,
    source: str,
    options: tuple[str, ...],
    mem: int,
    repeat: int,
    search: RamSearch | None,
    goal: str = "verdict",
    marker: str = debian_image.MARKER,
) -> RowPlan:
    """A packed row: artifacts of a build that packs (the kernel config's format), packed.img
    served by an nginx of its own, booted from initrd.img alone with cmdline-packed.txt's pin
    and root= naming packed.img's URL. The build's seconds, sizes and packed.json go into the
    report under the image's label with -packed (debian-packed, reference-packed)."""
    label = PACKED_ARTIFACTS[name]
    art = b.workdir / label
    b.report["build_seconds"][label] = build_artifacts(
        b.bootc_live, source, art, *options, pack=True
    )
    b.report["sizes"][label] = sizes_of(art)
    made = packed_record(art)
    b.report["packed"][label] = made
    port = b.stack.enter_context(serving(art, b.workdir / f"serve-{label}"))
    view = url_view(art, b.workdir / f"{label}-url")
    # To the verdict, which must name the packed root's filesystem, or to the greeting.
    fstype = made["format"] if goal == "verdict" else ""
    target = Target(name, view, PACKED_URL, port, goal, marker, fstype, packed=True)
    return RowPlan(target, mem, repeat, search)


def build_original(
    b: Setup, image: str, ours: Path, embed: bool, kver: str, source: str | None = None
) -> Path:
    """The original pipeline's artifacts for an image: its initramfs by the same dracut as
    ours (the image's own, in a chroot of `source`; without one the host's, as for the
    reference), with the kernel and root.oci of ours (`ours`), the archive embedded when
    `embed`."""
    out = b.workdir / f"{image}-original"
    out.mkdir()
    start = time.monotonic()
    if source is None:
        info = original_with_host(kver, out)
    else:
        info = original_in_image(b.bootc_live, source, kver, out)
    b.report["build_seconds"][f"{image}-original"] = time.monotonic() - start
    assemble_original(ours, out, embed)
    b.report["original_build"][f"{image}-original"] = info
    b.report["sizes"][f"{image}-original"] = sizes_of(out)
    return out


def original_url(
    b: Setup,
    name: str,
    original: Path,
    port: int,
    goal: str = "verdict",
    marker: str = debian_image.MARKER,
    fstype: str = "",
) -> Target:
    """An original row from a URL: its initrd.img alone, the root.oci of nginx on `port`; its
    success as a Target's."""
    view = url_view(original, b.workdir / f"{name}-view")
    # A URL boot's command line is its own, not cmdline.txt's: the image's label goes along.
    append = f"root={ORIGINAL_ROOT}:http://{GUEST_SERVER}/root.oci bootclabel={label_of(original)}"
    return Target(name, view, append, port, goal, marker, fstype, original=True)


def serve_root_oci(
    art: Path, workdir: Path, label: str, stack: ExitStack
) -> tuple[int, Path, str, str]:
    """nginx serving these artifacts (until the stack closes): its port, the directory it
    serves, the root= of root.oci and that of the tiny image beside it."""
    port = stack.enter_context(serving(art, workdir / f"serve-{label}"))
    view = url_view(art, workdir / f"{label}-url")
    url = f"root=bootc-live:http://{GUEST_SERVER}/root.oci"
    tiny = f"root=bootc-live:http://{GUEST_SERVER}/tiny.oci bootclabel={TINY_TAG}"
    return port, view, url, tiny


def run_rows(b: Setup) -> None:
    """Boot every planned row in ROWS order; its record and figures into the report."""
    for name in ROWS:
        if name not in b.plans:
            continue
        of = {KEXEC: "debian-kexec"}.get(name, "debian")
        of = "reference" if name in REFERENCE_IMAGE_ROWS else of
        row = bench_row(b.plans[name], b.args.timeout, b.workdir, b.args.logs)
        row["artifacts_of"] = {
            "registry": "debian-registry",
            SIGNED: "debian-registry-signed",
        }.get(name, of)
        if name in ORIGINAL_OF:
            row["artifacts_of"] = f"{of}-original"
        if name in PACKED_ROWS:
            row["artifacts_of"] = PACKED_ARTIFACTS[name]
        tmpfs = b.report["tmpfs_bytes"][of]
        row["figures"] = row_figures(row, tmpfs, b.largest[of])
        b.report["rows"][name] = row


def kexec_plan(
    args: argparse.Namespace,
    bootc_live: list[str],
    image: debian_image.DebianImage,
    debian: Path,
    workdir: Path,
    report: dict[str, Any],
    stack: ExitStack,
) -> RowPlan:
    """The kexec row: the test image plus its own initramfs (the debian artifacts' initrd.img,
    built in its userland) as usr/lib/modules/KVER/initramfs.img in a top layer, its artifacts
    built with the host's kernel and dracut (stage one), served by an nginx of its own; booted
    like `url` with bootc.kexec appended."""
    made = workdir / "kexec"
    made.mkdir()
    digest = kexec_image.kexec_ready(image, debian / "initrd.img", made)
    layout = made / "layout"
    source = f"oci:{layout}:{debian_image.TAG}"
    kver = host_kernel()
    if kver == image.kver:
        log(f"kexec: the host's kernel is the image's ({kver}): both stages run the same kernel")
    art = workdir / "debian-kexec"
    report["build_seconds"]["debian-kexec"] = build_artifacts(
        bootc_live, source, art, "--host", "--kver", kver
    )
    report["sizes"]["debian-kexec"] = sizes_of(art)
    report["tmpfs_bytes"]["debian-kexec"] = tmpfs_footprint(
        bootc_live, source, workdir / "tmpfs-kexec"
    )
    layers = layout_layers(layout)
    report["kexec_image"] = {
        "source": source,
        "manifest_digest": digest,
        "image_kver": image.kver,
        "stage_one_kver": kver,
        "layers": layers,
        "compressed_bytes": sum(layer["size"] for layer in layers),
        "largest_blob_bytes": max(layer["size"] for layer in layers),
        "initramfs_bytes": (debian / "initrd.img").stat().st_size,
    }
    port = stack.enter_context(serving(art, workdir / "serve-kexec"))
    append = f"root=bootc-live:http://{GUEST_SERVER}/root.oci {KEXEC_APPEND}"
    return RowPlan(
        Target(
            KEXEC,
            url_view(art, workdir / "kexec-url"),
            append,
            port,
            fstype="tmpfs",
            kexec=True,
        ),
        args.mem,
        args.repeat,
        search_plan(args, args.ram_min, args.ram_max, None),
    )
