"""The printed report of bench/boot: the phases, the SPEC §9 figures side by side, then the
sources, the root modes and kexec next to url, and the RAM trials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchlib.boots import KEXEC_PHASES, ORIGINAL_PHASES, PHASES, SWITCH_ROOT
from benchlib.common import MIB
from benchlib.rows import (
    DEBIAN_ROWS,
    KEXEC,
    KEXEC_APPEND,
    MODES,
    ORIGINAL_OF,
    ORIGINAL_RAM_MIB,
    ORIGINAL_ROWS,
    ORIGINAL_UNPACK_S,
    PACKED_ARTIFACTS,
    PACKED_RAM_FACTOR,
    PACKED_ROWS,
    PACKED_SWITCH_ROOT_FACTOR,
    REFERENCE_ROWS,
    ROW_MODE,
    SIGNED,
    TARGET_FACTOR,
    URL_PEAK_FACTOR,
    URL_RAM_TARGET_MIB,
    URL_ROWS,
    ZRAM_CLEARLY,
)


def fmt(value: Any, unit: str = "s", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" {unit}" if unit else "")


WIDTH = 15  # a row's column, wider for a longer name


def column(names: list[str]) -> int:
    return max([WIDTH, *(len(n) + 2 for n in names)])


def print_report(report: dict[str, Any]) -> None:
    rows: dict[str, dict[str, Any]] = report["rows"]
    names = list(rows)
    print()
    print_inputs(report, names)
    print_phases(rows, names)
    cells = Cells(report)
    print_figures(report, cells)
    print_original(report, cells.ram)
    print_sources(report, cells.ram)
    print_signatures(report)
    print_modes(report, cells.ram)
    print_kexec(report, cells.ram)
    print_packed(report, cells.ram)
    print_trials(rows, names)
    print_notes(rows, names)


def print_inputs(report: dict[str, Any], names: list[str]) -> None:
    """What was booted: the images, the registry, the kexec image, the VM."""
    rows = report["rows"]
    img = report.get("image")
    if img:
        print(
            f"image ({', '.join(n for n in names if n in DEBIAN_ROWS)}): Debian 12 test image, "
            f"kernel {img['kver']}, "
            f"{img['entries']} entries, {img['unpacked_bytes'] / 1e6:.0f} MB unpacked, "
            f"{img['compressed_bytes'] / 1e6:.0f} MB in {len(img['layers'])} gzip layers; "
            + "; ".join(
                f"{what} {report['build_seconds'][key]:.0f} s"
                for key, what in (
                    ("debian", "build"),
                    ("debian-registry", "registry's build (--ca, --auth-file)"),
                    (
                        "debian-registry-signed",
                        "registry-signed's (also --policy, --registries-d)",
                    ),
                )
                if key in report["build_seconds"]
            )
            + " (initramfs by the image's dracut)"
        )
    reg = report.get("registry")
    if reg:
        print(
            f"registry: {reg['server']} on {reg['host']}, the guest pulls "
            f"{reg['guest_ref']} (guestfwd); pushed by skopeo in {reg['push_seconds']:.0f} s; "
            + blob_requests(reg.get("guest_blob_requests"))
        )
    signed = report.get("registry_signed")
    if signed:
        print(
            f"registry-signed: the same image pushed again as {signed['guest_ref']}, signed in "
            f"{signed['sign_seconds']:.0f} s (skopeo --sign-by GPG key "
            f"{signed['gpg_fingerprint']} into a lookaside store, the guest reads it at "
            f"{signed['lookaside']}; a cosign-format attachment by openssl, key "
            f"{signed['cosign_public']}); its initramfs's policy requires both; "
            + blob_requests(signed.get("guest_blob_requests"))
            + f", {signed.get('lookaside_requests', '-')} signature files from the lookaside"
        )
    ref = report.get("reference")
    if ref:
        built = report["build_seconds"].get("reference")
        print(
            f"reference (reference-url): bench/unpack's '{ref['kind']}' image, "
            f"{ref['entries']} entries, {ref['unpacked_bytes'] / 1e6:.0f} MB unpacked (du on "
            f"ext4), {ref['compressed_bytes'] / 1e6:.0f} MB in {len(ref['layers'])} gzip "
            f"layer(s); build {fmt(built, 's', 0)} (--pack none) with the host's "
            f"kernel {ref['kver']} and dracut"
        )
    print_packed_builds(report)
    kx = report.get("kexec_image")
    if kx:
        print(
            f"kexec: the test image plus its own initramfs ({kx['initramfs_bytes'] / MIB:.1f} "
            f"MiB, the url row's initrd.img) at usr/lib/modules/{kx['image_kver']}/initramfs.img "
            f"in a top layer: {len(kx['layers'])} layers, {kx['compressed_bytes'] / 1e6:.0f} MB; "
            f"stage one: the host's kernel {kx['stage_one_kver']} and dracut (build "
            f"{report['build_seconds']['debian-kexec']:.0f} s), booted like url with "
            f"{KEXEC_APPEND}"
        )
    for key, ours in (("debian-original", "debian"), ("reference-original", "reference")):
        orig = report.get("original_build", {}).get(key)
        if orig:
            print(
                f"original ({', '.join(n for n in names if n in ORIGINAL_ROWS)}): the original "
                f"pipeline (bench/original/90original-live: tar -x, umoci unpack, bind mounts), "
                f"its initrd.img by {orig['dracut']} in {report['build_seconds'][key]:.0f} s with "
                f"tar {orig['tar']} and umoci {orig['umoci']}; the kernel and root.oci of "
                f"{ours}'s artifacts"
            )
    mems = ", ".join(f"{n} {rows[n]['mem']} MiB x {len(rows[n]['runs'])}" for n in names)
    print(f"QEMU {report['accel']}, {report['cpus']} vCPUs; timed boots: {mems}")
    for n in names:
        if n in MODES:
            print(f"{n}: booted like url, with {MODES[n]}")


def print_phases(rows: dict[str, dict[str, Any]], names: list[str]) -> None:
    """The phases' medians, one column per row, and each boot's /init → switch root."""
    print()
    width = column(names)
    header = f"{'phase (median of the timed boots)':<40}" + "".join(f"{n:>{width}}" for n in names)
    print(header)
    print("-" * len(header))
    kexec_labels = {label for label, _ in KEXEC_PHASES}
    original_labels = {label for label, _ in ORIGINAL_PHASES}
    for label, _ in PHASES:
        if label in kexec_labels and KEXEC not in names:
            continue
        if label in original_labels and not set(ORIGINAL_ROWS) & set(names):
            continue
        print(f"{label:<40}" + "".join(f"{fmt(rows[n]['medians'][label]):>{width}}" for n in names))
    for n in names:
        shown = " ".join(fmt(v, "") for v in rows[n]["phases"][SWITCH_ROOT])
        stage = " (stage two)" if n == KEXEC else ""
        print(f"  {n}: /init{stage} → switch root per boot: {shown}")
        for r in rows[n]["runs"]:
            if not r["ok"]:
                print(f"  {n}: boot with {r['mem']} MiB FAILED ({r['ended']}): {r['failure']}")


class Cells:
    """The cells of the figures table: one function of the row's name per figure."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.rows: dict[str, dict[str, Any]] = report["rows"]
        self.figs = {n: row["figures"] for n, row in self.rows.items()}

    def mib(self, key: str, digits: int = 0) -> Callable[[str], str]:
        return lambda n: fmt(self.figs[n].get(key), "MiB", digits)

    def ratio(self, key: str, digits: int) -> Callable[[str], str]:
        return lambda n: fmt(self.figs[n].get(key), "", digits)

    def seconds(self, key: str) -> Callable[[str], str]:
        return lambda n: fmt(self.figs[n][key])

    def ram(self, n: str) -> str:
        f, search = self.figs[n], self.rows[n]["ram_search"]
        if search is None:
            return "not searched"
        if f["min_ram_mib"] is None:
            return f"> {search['ceiling']} MiB"
        if f["ram_failed_mib"] is None:
            return f"<= {f['min_ram_mib']} MiB"
        if search["capped"] and f["min_ram_mib"] - f["ram_failed_mib"] > search["step"]:
            return f"{f['ram_failed_mib']}<x<={f['min_ram_mib']}"
        return f"{f['min_ram_mib']} MiB"

    def vs_original(self, n: str) -> str:
        """Switch root / the original's: its original row's in this run; else, marked *, the
        remembered 53 s (the test image's rows only)."""
        value = self.figs[n]["switch_root_s"]
        pair = next(
            (p for o, p in (self.report.get("original") or {}).items() if ORIGINAL_OF[o] == n),
            None,
        )
        if pair is not None:  # its original row ran: this run's ratio, or none
            return fmt(pair.get("switch_root_s_ratio"), "", 2)
        if n in (*REFERENCE_ROWS, KEXEC, *ORIGINAL_ROWS) or value is None:
            return "-"
        same_run = bool(self.report.get("original"))
        return f"{value / ORIGINAL_UNPACK_S:.2f}" + ("*" if same_run else "")

    def boots(self, n: str) -> str:
        return f"{self.figs[n]['booted']}/{self.figs[n]['boots']} @{self.rows[n]['mem']}"

    def fstype(self, n: str) -> str:
        return ",".join(self.figs[n].get("fstype") or ["-"])

    def initrd_size(self, n: str) -> str:
        return fmt(self.report["sizes"][self.rows[n]["artifacts_of"]]["initrd.img"] / MIB, "MiB")

    def image_size(self, n: str) -> str:
        if n in ("registry", SIGNED):
            return fmt(self.report["registry"]["compressed_bytes"] / MIB, "MiB")
        name = "root.oci" if n in URL_ROWS else "rootfs.img"
        name = "packed.img" if n in PACKED_ROWS else name
        return fmt(self.report["sizes"][self.rows[n]["artifacts_of"]][name] / MIB, "MiB")


def print_figures(report: dict[str, Any], cells: Cells) -> None:
    """SPEC §9's figures, one column per row, with the target or how each is measured."""
    names = list(report["rows"])
    same_run = bool(report.get("original"))
    remembered = (
        f"53 s = its TCG unpacking of the test image alone, remembered from another run; "
        f"{TARGET_FACTOR} x = {ORIGINAL_UNPACK_S * TARGET_FACTOR:.1f} s"
    )
    table: list[tuple[str, Callable[[str], str], str]] = [
        (
            "initramfs start → switch root",
            cells.seconds("switch_root_s"),
            f"<= {TARGET_FACTOR} x the original's"
            + (" (its original-* row, this run)" if same_run else " (no original-* row ran)"),
        ),
        (
            "  / the original's, this run" if same_run else "  / the original's ~53 s (fallback)",
            cells.vs_original,
            "ours / its original-* row (same kernel, image, RAM); *: no such row ran, the "
            "fallback: / 53 s, remembered"
            if same_run
            else f"the fallback (no original-* row ran): {remembered}",
        ),
        ("  of which bootc-live unpacks", cells.seconds("unpack_s"), "its own figure"),
        (
            "boots / timed boots",
            cells.boots,
            f"reference-url: must boot with {URL_RAM_TARGET_MIB} MiB",
        ),
        (
            "root (the verdict's fstype)",
            cells.fstype,
            "tmpfs; zram: ext4 on /dev/zram*; EROFS: erofs (loop)",
        ),
        (
            "smallest RAM that boots",
            cells.ram,
            f"<= {URL_RAM_TARGET_MIB} MiB from a URL; the original ~{ORIGINAL_RAM_MIB} MiB",
        ),
        (
            "  the mode needs (runtime's planner)",
            cells.mib("need_mib"),
            "status 'need': at the peak; it refuses to start below",
        ),
        (
            "  what the root may take (runtime)",
            cells.mib("available_mib"),
            "status 'available', at the timed boots' RAM",
        ),
        (
            "peak memory in use (runtime)",
            cells.mib("peak_mib"),
            "MemTotal - MemAvailable - per-CPU lists, peak during fetch + unpack",
        ),
        (
            "  of it: the initramfs's files",
            cells.mib("peak_files_mib"),
            "status 'memory_at_peak' (meminfo at the peak): 'initramfs_files' (Unevictable)",
        ),
        ("    tmpfs: the root, /run", cells.mib("peak_tmpfs_mib"), "its 'tmpfs' (Shmem)"),
        ("    processes", cells.mib("peak_processes_mib"), "its 'processes' (AnonPages)"),
        (
            "    kernel",
            cells.mib("peak_kernel_mib"),
            "its 'kernel' (unreclaimable slab: the root's inodes; stacks, page tables, vmalloc)",
        ),
        ("    other", cells.mib("peak_other_mib"), "its 'other': the rest (watermarks, caches)"),
        (
            "  in use before fetching (runtime)",
            cells.mib("start_mib"),
            "the same figure when the runtime starts: the baseline",
        ),
        (
            "  modules, tools, Python files freed",
            cells.mib("freed_mib"),
            "status 'modules_freed_bytes' + 'tools_freed_bytes' + 'python_freed_bytes'",
        ),
        (
            "  peak of a tiny image, same initrd",
            cells.mib("baseline_peak_mib"),
            "cross-check of the baseline (a separate boot), less what it freed",
        ),
        (
            "in use once booted (verdict)",
            cells.mib("memused_mib"),
            "MemTotal - MemAvailable at multi-user (the test image)",
        ),
        ("unpacked (file data written)", cells.mib("written_mib"), "the runtime's figure"),
        (
            "  its tmpfs footprint (on the host)",
            cells.mib("tmpfs_mib"),
            "df of a tmpfs after unpack",
        ),
        (
            "zram: data stored on the device",
            cells.mib("zram_stored_mib", 1),
            "the root's 'stored' (/sys/block/zram*/mm_stat)",
        ),
        ("  RAM the device takes", cells.mib("zram_ram_mib", 1), "the root's 'memory' (mem_used)"),
        ("  stored / RAM", cells.ratio("zram_ratio", 2), "the compression zram achieved"),
        (
            "EROFS image",
            cells.mib("erofs_mib", 1),
            "its size (the root stays in RAM as this image); sha256 below",
        ),
        (
            "packed root (packed.img)",
            cells.mib("packed_mib", 1),
            "its size: the root stays in RAM as this file; nothing unpacked",
        ),
        (
            "URL, registry: peak - before fetching",
            cells.mib("above_start_mib"),
            "memory the fetch and unpack added",
        ),
        (
            "  / unpacked",
            cells.ratio("ratio", 3),
            f"<= {URL_PEAK_FACTOR} (SPEC, from a URL into tmpfs)",
        ),
        (
            "  with the tiny image's baseline",
            cells.ratio("ratio_baseline", 3),
            "(peak - tiny peak) / unpacked",
        ),
        (
            "  beyond the root's tmpfs footprint",
            cells.mib("overhead_mib"),
            "what the unpacker itself held at the peak",
        ),
        (
            "embedded: peak above image-less",
            cells.mib("above_imageless_mib"),
            "peak - (before fetching - the blobs in the initramfs)",
        ),
        (
            "  / (unpacked + largest blob)",
            cells.ratio("embedded_ratio", 3),
            "<= 1 (SPEC, from an embedded split layout)",
        ),
        (
            "initrd.img (all modules)",
            cells.initrd_size,
            "<= the original's, same dracut"
            + (" (original-* rows: their own, below)" if same_run else " (not measured)"),
        ),
        (
            "image: rootfs.img / root.oci / blobs",
            cells.image_size,
            "embedded: rootfs.img (split layout); URL rows: root.oci; registry: the pushed "
            "layers; packed rows: packed.img",
        ),
    ]
    print()
    width = column(names)
    header = f"{'SPEC §9 figure':<40}" + "".join(f"{n:>{width}}" for n in names)
    print(header + "   target / how")
    print("-" * (len(header) + 20))
    for label, cell, note in table:
        print(f"{label:<40}" + "".join(f"{cell(n):>{width}}" for n in names) + f"   {note}")


def table_head(*titles: str, header: str) -> None:
    """A table's title lines after a blank line, its header and a rule under it."""
    print()
    for title in titles:
        print(title)
    print(header)
    print("-" * len(header))


def print_original(report: dict[str, Any], ram: Callable[[str], str]) -> None:
    """Each original row next to ours (the same image booted the same way), this run's: switch
    root, the peak memory, the memory in use once booted, the smallest RAM and the initramfs,
    each ours / the original's; then the original's own steps."""
    pairs: dict[str, Any] = report.get("original") or {}
    if not pairs:
        return
    rows: dict[str, dict[str, Any]] = report["rows"]

    def both(pair: dict[str, Any], key: str, show: Callable[[Any], str]) -> str:
        ratio = pair.get(f"{key}_ratio")
        shown = f"{show(pair[key])} / {show(pair[f'original_{key}'])}"
        return shown + (f" = {ratio:.2f}" if ratio is not None else "")

    table_head(
        "The original pipeline, this run: ours / the original's (same kernel, image and RAM)",
        header=f"{'ours / original':<40}{'/init → switch root':>28}{'same, host clock':>28}"
        f"{'peak memory (runtime)':>32}{'in use once booted':>32}",
    )
    for original, pair in pairs.items():
        if not pair["ran"]:
            print(f"{pair['ours'] + ' / ' + original:<40}  ({pair['ours']} did not run)")
            continue
        print(
            f"{pair['ours'] + ' / ' + original:<40}"
            f"{both(pair, 'switch_root_s', fmt):>28}"
            f"{both(pair, 'switch_root_host_s', fmt):>28}"
            f"{both(pair, 'peak_mib', lambda v: fmt(v, 'MiB', 0)):>32}"
            f"{both(pair, 'memused_mib', lambda v: fmt(v, 'MiB', 0)):>32}"
        )
    for original, pair in pairs.items():
        if not pair["ran"]:
            continue
        verdict = {True: "met", False: "NOT MET", None: "-"}[pair["met"]]
        ratio = pair.get("switch_root_s_ratio")
        sizes = report["sizes"]
        ours_initrd = sizes[rows[pair["ours"]]["artifacts_of"]]["initrd.img"]
        their_initrd = sizes[rows[original]["artifacts_of"]]["initrd.img"]
        print(
            f"  {pair['ours']}: /init → switch root {fmt(ratio, '', 2)} x the original's   "
            f"target <= {TARGET_FACTOR} ({verdict}); smallest RAM {ram(pair['ours'])} / "
            f"{ram(original)}; initrd.img {ours_initrd / MIB:.1f} / {their_initrd / MIB:.1f} "
            f"MiB = {ours_initrd / their_initrd:.2f}   target <= 1, same dracut "
            f"({'met' if ours_initrd <= their_initrd else 'NOT MET'})"
        )
    for original in pairs:
        f = rows[original]["figures"]
        print(
            f"  {original}: archive into RAM {fmt(f['original_fetch_s'])}, tar -x "
            f"{fmt(f['original_extract_s'])}, umoci unpack {fmt(f['original_umoci_s'])}, bind "
            f"mounts {fmt(f['original_bind_s'])}: its work {fmt(f['original_work_s'])}; archive "
            f"{fmt(f['archive_mib'], 'MiB', 0)} (kept in RAM, as the original does); its memory "
            f"sampled at its steps only"
        )


def print_trials(rows: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Each RAM search's boots."""
    for n in names:
        search = rows[n]["ram_search"]
        if not search or not search["trials"]:
            continue
        trials = ", ".join(
            f"{t['mem']} {'ok' if t['ok'] else 'fail'}"
            + (f" (peak {t['peak_mib']})" if t["peak_mib"] else "")
            for t in search["trials"]
        )
        capped = f"; stopped after {search['max_boots']} boots" if search["capped"] else ""
        print(f"\n{n}: RAM trials (MiB): {trials}{capped}")
        for t in search["trials"]:
            if not t["ok"]:
                print(f"  {t['mem']} MiB: {t['failure']}")


def print_notes(rows: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Whether other guests ran meanwhile, and where the phases come from."""
    loaded = [n for n in names if any(r["other_qemus"] for r in all_boots(rows[n]))]
    print()
    if loaded:
        print(
            f"WARNING: other QEMU guests ran during boots of {', '.join(loaded)}: those "
            "timings were taken under load (see other_qemus in the JSON)."
        )
    else:
        print("No other QEMU guest ran during any boot.")
    print("Phases come from the guest console: kernel timestamps ([   6.17]) on the kernel's")
    print("'Run /init as init process', on bootc-live's status lines (planned, packing, ready)")
    print("and on the image's own systemd announcing itself after switch root ('systemd 252…")
    print("running in system mode', 2nd occurrence); 'host clock' lines time the arrival of")
    print("console lines on the host instead.")
    if KEXEC in names:
        print("kexec: the console is split at the second kernel's 'Linux version' banner; the")
        print("'kexec:' phases are stage one's (the host's kernel), the others stage two's (its")
        print("kernel timestamps restart at 0, its initramfs's systemd announces itself again).")


def blob_requests(seen: dict[str, Any] | None) -> str:
    if seen is None:
        return "its blob requests not counted"
    statuses = ", ".join(seen["statuses"]) or "none"
    return (
        f"the guest fetched {seen['blobs']} blobs in {seen['responses']} responses "
        f"(status {statuses})"
    )


def print_sources(report: dict[str, Any], ram: Callable[[str], str]) -> None:
    """embedded, url and registry side by side (the same image, tmpfs root), this run's."""
    sources: dict[str, Any] = report.get("sources") or {}
    if len(sources) < 2 and not {"registry", SIGNED} & set(sources):
        return

    def cell(n: str, key: str, value: str) -> str:
        vs = sources[n].get(f"{key}_vs_url")
        return value if vs is None or n == "url" else f"{value} (x{vs:.2f})"

    table_head(
        "Sources: the test image on tmpfs, this run (medians; (xN): against url)",
        header=f"{'row':<17}{'fetched from':<52}{'smallest RAM':>20}{'switch root':>18}"
        f"{'unpack':>9}{'peak memory':>20}{'before fetch':>14}{'once booted':>13}",
    )
    for n, f in sources.items():
        print(
            f"{n:<17}{f['source']:<52}"
            f"{cell(n, 'min_ram_mib', ram(n)):>20}"
            f"{cell(n, 'switch_root_s', fmt(f['switch_root_s'])):>18}"
            f"{fmt(f['unpack_s']):>9}"
            f"{cell(n, 'peak_mib', fmt(f['peak_mib'], 'MiB', 0)):>20}"
            f"{fmt(f['start_mib'], 'MiB', 0):>14}"
            f"{fmt(f['memused_mib'], 'MiB', 0):>13}"
        )
    if "embedded" in sources:
        print(
            "  embedded: 'before fetch' holds the image's blobs in the initramfs (freed as "
            "they are applied)"
        )


def print_signatures(report: dict[str, Any]) -> None:
    """registry-signed against registry, this run: what the signature check adds to a registry
    boot's time and to the initramfs."""
    sig: dict[str, Any] = report.get("signatures") or {}
    if not sig:
        return

    def both(key: str, show: Callable[[Any], str]) -> str:
        added = sig.get(f"{key}_added")
        return f"{show(sig[f'signed_{key}'])} / {show(sig[key])}" + (
            f" = {'+' if added >= 0 else ''}{show(added)}" if added is not None else ""
        )

    table_head(
        "Signatures, this run: registry-signed / registry (the same image, registry and RAM; "
        "medians; = what the check added)",
        header=f"{'registry-signed / registry':<28}{'/init → switch root':>30}"
        f"{'same, host clock':>30}{'check (own figure)':>20}{'initrd.img':>36}",
    )
    print(
        f"{'medians':<28}{both('switch_root_s', fmt):>30}{both('switch_root_host_s', fmt):>30}"
        f"{fmt(sig['signatures_s'], 's', 2):>20}{both('initrd_bytes', size_mib):>36}"
    )
    if not sig["ran"]:
        print("  (registry did not run: no difference to show)")
    added = sig["initrd_bytes_added"]
    if added is not None:
        print(
            f"  initrd.img (compressed): {sig['signed_initrd_bytes']:,} / "
            f"{sig['initrd_bytes']:,} bytes = {added:+,}"
        )
    files = sig.get("initrd_files")
    if files:
        verifiers = ", ".join(f"{path} {size:,}" for path, size in files["verifiers"].items())
        where = (
            "in both builds (the dracut module installs them whenever the userland has them)"
            if files["verifiers_in_plain"]
            else "only in registry-signed's"
        )
        print(f"  verifiers {where}: {verifiers or 'none found'} bytes (uncompressed)")
        only = ", ".join(f"{path} {size:,}" for path, size in files["only_signed"].items())
        print(
            f"  only in registry-signed's: {files['only_signed_bytes']:,} bytes (uncompressed)"
            + (f": {only}" if only else "")
        )
    for keys in sig["signatures_keys"]:
        print(f"  verified by {keys}")


def size_mib(value: float | None) -> str:
    return fmt(None if value is None else value / MIB, "MiB", 2)


def print_modes(report: dict[str, Any], ram: Callable[[str], str]) -> None:
    """The root modes next to url (tmpfs), and the zram target, from this run's figures."""
    modes: dict[str, Any] = report.get("modes") or {}
    rows: dict[str, dict[str, Any]] = report["rows"]
    names = [n for n in ("url", *MODES, *REFERENCE_ROWS) if n in modes]
    if not any(n in ROW_MODE for n in names):
        return

    def cell(n: str, key: str, value: str) -> str:
        vs = modes[n].get(f"{key}_vs_url")
        return value if vs is None or n == modes[n]["against"] else f"{value} (x{vs:.2f})"

    print()
    print(
        "Root modes: the test image (and the reference-* rows: the reference image) from a "
        "URL, this run"
    )
    print("(medians; (xN): against the same image's tmpfs row, url or reference-url)")
    header = (
        f"{'row':<15}{'kernel arguments appended':<52}{'smallest RAM':>20}{'switch root':>18}"
        f"{'peak memory':>20}{'once booted':>13}"
    )
    print(header)
    print("-" * len(header))
    for n in names:
        f = modes[n]
        print(
            f"{n:<15}{f['append'] or '(none: tmpfs root)':<52}"
            f"{cell(n, 'min_ram_mib', ram(n)):>20}"
            f"{cell(n, 'switch_root_s', fmt(f['switch_root_s'])):>18}"
            f"{cell(n, 'peak_mib', fmt(f['peak_mib'], 'MiB', 0)):>20}"
            f"{fmt(f['memused_mib'], 'MiB', 0):>13}"
        )
    for n in names:
        figs = rows[n]["figures"]
        shas = figs.get("erofs_sha256") or []
        if len(shas) == 1:
            print(
                f"{n}: EROFS image {shas[0]}, the same in all {figs['erofs_sha256_boots']} "
                f"boots (compression {','.join(figs['erofs_compress'])}, mkfs.erofs "
                f"{','.join(figs['mkfs_erofs'])})"
            )
        elif shas:
            print(
                f"{n}: WARNING: the EROFS image differs between boots ({len(shas)} sha256 in "
                f"{figs['erofs_sha256_boots']} boots): {', '.join(shas)}"
            )
    for target in modes.get("targets") or []:
        print_zram_target(target, rows)
    for target in modes.get("ram_targets") or []:
        print_ram_target(target)


def print_ram_target(target: dict[str, Any]) -> None:
    """Issue 19's: the smallest RAM against what the root takes in a tmpfs."""
    name, ram, footprint = target["row"], target["min_ram_mib"], target["tmpfs_mib"]
    head = f"issue 19 ({name}): smallest RAM / the root's tmpfs footprint (host, this run): "
    if target["ratio"] is None:
        print(head + "- (" + ("not searched" if ram is None else "no footprint") + ")")
        return
    at_most = "<= " if target["upper_bound"] else ""
    met = {True: "met", False: "NOT MET", None: "undecided (search finer with --ram-step)"}
    print(
        f"{head}{at_most}{ram} / {footprint:.0f} MiB = {at_most}{target['ratio']:.2f}   "
        f"{met[target['met']]} (at most {target['limit']})"
        + (f"; {target['failed_mib']} MiB did not boot" if target["failed_mib"] else "")
    )


def print_zram_target(target: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    name, tmpfs = target["row"], target["tmpfs_row"]
    print(f"zram target ({name}: {target['image']}): {target['text']}")
    ram_z, written, ram_url = (
        target["zram_min_ram_mib"],
        target["unpacked_mib"],
        target["url_min_ram_mib"],
    )
    at_most = "<= " if target["zram_min_ram_upper_bound"] else ""
    if target["ratio_unpacked"] is None:
        why = "its RAM was not searched" if rows[name]["ram_search"] is None else "no figure"
        print(f"  smallest RAM, zram / unpacked size: - ({why})")
    else:
        verdict = {
            True: "met",
            False: "NOT MET",
            None: f"undecided (failed at {target['zram_failed_mib']} MiB: search finer with "
            "--ram-step, or lower --ram-min)",
        }
        print(
            f"  smallest RAM, zram / unpacked size: {at_most}{ram_z} / {written:.0f} MiB = "
            f"{at_most}{target['ratio_unpacked']:.2f}   {verdict[target['met']]} (at most "
            f"{ZRAM_CLEARLY}: clearly less RAM than the unpacked file data)"
        )
    if target["ratio_url"] is None:
        why = f"{tmpfs} not run or not searched" if ram_z is not None else "no zram figure"
        print(f"  smallest RAM, zram / {tmpfs} (tmpfs): - ({why})")
    else:
        url_at_most = "<= " if target["url_min_ram_upper_bound"] else ""
        print(
            f"  smallest RAM, zram / {tmpfs} (tmpfs): {at_most}{ram_z} / {url_at_most}{ram_url} MiB"
            f" = {target['ratio_url']:.2f}" + ("  (bounds only)" if at_most or url_at_most else "")
        )
    if target["above_start_ratio"] is not None:
        print(
            f"  memory the fetch and unpack added on zram / unpacked size: "
            f"{target['above_start_mib']:.0f} / {written:.0f} MiB = "
            f"{target['above_start_ratio']:.2f}   (the rest of the smallest RAM is the kernel, "
            "the initramfs and the runtime: 'before fetching')"
        )


def print_kexec(report: dict[str, Any], ram: Callable[[str], str]) -> None:
    """kexec next to url (the same image over http, no kexec), and stage one's figures."""
    kx: dict[str, Any] = report.get("kexec") or {}
    if KEXEC not in kx:
        return

    def cell(n: str, key: str, value: str) -> str:
        vs = kx[n].get(f"{key}_vs_url")
        return value if vs is None else f"{value} (x{vs:.2f})"

    print()
    print("kexec: the test image over http with and without bootc.kexec, this run (medians;")
    print("(xN): against url; switch root on the host's clock, kexec's across both stages)")
    header = (
        f"{'row':<8}{'smallest RAM':>20}{'QEMU start → switch root':>27}"
        f"{'/init → switch root':>23}{'QEMU start → verdict':>22}{'peak memory':>20}"
        f"{'before fetch':>14}"
    )
    print(header)
    print("-" * len(header))
    for n in ("url", KEXEC):
        if n not in kx:
            continue
        f = kx[n]
        print(
            f"{n:<8}{cell(n, 'min_ram_mib', ram(n)):>20}"
            f"{cell(n, 'qemu_switch_root_s', fmt(f['qemu_switch_root_s'])):>27}"
            f"{cell(n, 'switch_root_host_s', fmt(f['switch_root_host_s'])):>23}"
            f"{fmt(f['qemu_end_s']):>22}"
            f"{cell(n, 'peak_mib', fmt(f['peak_mib'], 'MiB', 0)):>20}"
            f"{fmt(f['start_mib'], 'MiB', 0):>14}"
        )
    one, two = kx["stage_one"], kx[KEXEC]
    read = ",".join(str(v) for v in one["layers_read"]) or "-"
    layers = ",".join(str(v) for v in one["layers"]) or "-"
    print(
        f"  kexec stage one ({'; '.join(one['kernels']) or 'kernels: -'}): /init → kexec into "
        f"{fmt(one['stage_one_console_s'])} (console), stage one's work "
        f"{fmt(one['stage_one_s'])} (its own figure); {read} of {layers} layers read; memory in "
        f"use before kexec {fmt(one['stage_one_inuse_mib'], 'MiB', 0)} (next initrd "
        f"{fmt(one['next_initrd_mib'], 'MiB', 0)}, handover "
        f"{fmt(one['handover_mib'], 'MiB', 0)}); kexec into → next kernel's banner "
        f"{fmt(one['kexec_to_next_kernel_s'])} (host clock)"
    )
    if one.get("peak_vs_url") is not None:
        added = (
            f"; it added {one['added_mib']:.0f} MiB above its start, x{one['added_vs_url']:.2f} "
            "of what url's fetch and unpack added"
            if one.get("added_vs_url") is not None
            else ""
        )
        print(
            f"  kexec stage one against a full unpack (url): peak before loading "
            f"{fmt(one['stage_one_peak_mib'], 'MiB', 0)}, x{one['peak_vs_url']:.2f} of url's "
            f"peak{added}; while loading (kexec's copies) "
            f"{fmt(one['stage_one_loading_peak_mib'], 'MiB', 0)}"
        )
    print(
        f"  kexec stage two: /init → switch root {fmt(two['switch_root_s'])}, peak memory in "
        f"use {fmt(two['peak_mib'], 'MiB', 0)} ({fmt(two['start_mib'], 'MiB', 0)} before "
        "fetching: its initramfs and the handed-over blobs)"
    )
    print(
        "  smallest RAM: both stages must fit (stage one holds the handover and the loaded "
        "kernel; stage two, the handover in its initramfs while it unpacks)"
    )


def print_packed_builds(report: dict[str, Any]) -> None:
    """Each build that packed: its packed.img, and the seconds packing added to the build of the
    same image with --pack none (both builds in this run)."""
    without = {"debian-packed": "debian", "reference-packed": "reference"}
    for label in PACKED_ARTIFACTS.values():
        made = report.get("packed", {}).get(label)
        if not made:
            continue
        seconds = report["build_seconds"]
        plain = seconds.get(without[label])
        added = (
            f", {seconds[label] - plain:.0f} s more than {without[label]}'s with --pack none "
            f"({plain:.0f} s): packing adds x{seconds[label] / plain:.2f}"
            if plain
            else f" ({without[label]}'s build with --pack none did not run: nothing to compare)"
        )
        print(
            f"{label}: built in {seconds[label]:.0f} s with packing{added}; packed.img "
            f"{made['bytes'] / MIB:.1f} MiB, {made['format']}:{made['compressor']} by "
            f"{made['tool']} for kernel {made['kernel']}, {made['sha256']}"
        )


def print_packed(report: dict[str, Any], ram: Callable[[str], str]) -> None:
    """Each packed row against the same image from the same URL on tmpfs, on zram and by the
    original pipeline, and issue 18's targets, from this run's figures."""
    packed: dict[str, Any] = report.get("packed_rows") or {}
    verdicts = {True: "met", False: "NOT MET", None: "undecided"}
    for name, pair in packed.items():
        print()
        print(
            f"Packed root ({name}, {','.join(pair['format']) or '-'}, "
            f"{fmt(pair['packed_mib'], 'MiB', 1)}), this run: packed / the same image from the "
            "same URL"
        )
        for kind, what in (("tmpfs", "tmpfs"), ("zram", "zram"), ("original", "the original")):
            theirs = pair[kind]
            if not theirs["ran"]:
                print(f"  / {theirs['row']} ({what}): - (not run)")
                continue
            cells = [
                f"{label} {show(name, pair[key])} / {show(theirs['row'], theirs[key])} = "
                + fmt(theirs.get(f"{key}_ratio"), "", 2)
                for key, label, show in (
                    ("min_ram_mib", "smallest RAM", lambda n, _: ram(n)),
                    ("switch_root_s", "/init → switch root", lambda _, v: fmt(v)),
                    ("peak_mib", "peak memory", lambda _, v: fmt(v, "MiB", 0)),
                    ("memused_mib", "once booted", lambda _, v: fmt(v, "MiB", 0)),
                )
            ]
            print(f"  / {theirs['row']} ({what}): " + "; ".join(cells))
        print(
            f"  target: smallest RAM <= {PACKED_RAM_FACTOR} x {pair['tmpfs']['row']}'s: "
            f"{fmt(pair['tmpfs'].get('min_ram_mib_ratio'), '', 2)} ({verdicts[pair['ram_met']]})"
            f"; /init → switch root <= {PACKED_SWITCH_ROOT_FACTOR} x "
            f"{pair['original']['row']}'s: "
            f"{fmt(pair['original'].get('switch_root_s_ratio'), '', 2)} "
            f"({verdicts[pair['switch_root_met']]})"
        )
        shas = pair["sha256"]
        figs = report["rows"][name]["figures"]
        if len(shas) > 1:
            print(f"  WARNING: the packed root differs between boots: {', '.join(shas)}")
        elif shas:
            print(f"  mounted {shas[0]} in all {figs['packed_sha256_boots']} boots that got there")


def all_boots(row: dict[str, Any]) -> list[dict[str, Any]]:
    extra = [row["baseline"]] if row["baseline"] else []
    trials = row["ram_search"]["trials"] if row["ram_search"] else []
    return [*row["runs"], *extra, *trials]
