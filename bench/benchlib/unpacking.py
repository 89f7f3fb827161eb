"""bench/unpack's measurements: each method's commands, run into a fresh tmpfs under
/usr/bin/time with a sampler of the process tree's memory, the trees compared, the runs of a
method on an image and their medians."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import stat
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib.common import BenchError, log, run
from benchlib.mounts import unmount_all_under
from benchlib.refimage import REF_NAME, tree_figures

TAR_EXTRACT = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
METHODS = {
    "pigz": "pigz -dc | tar -x",
    "umoci": "tar -xf + umoci unpack",
    "bootc-live": "bootc-live unpack",
    "bootc-live-initramfs": "bootc-live, stdlib + igzip",
    "bootc-live-stdlib": "bootc-live, stdlib zlib",
}
OURS = ("bootc-live", "bootc-live-initramfs", "bootc-live-stdlib")
# Stand-ins that make the optional accelerators unimportable, so bootc-live runs on the stdlib
# and the commands on PATH, as in an initramfs: with igzip (initramfs) or no command (stdlib).
BLOCKED_ACCELERATORS = ("isal", "zstandard")
Step = tuple[str, list[str]]  # (label, argv)


@dataclasses.dataclass
class StepResult:
    argv: list[str]
    seconds: float
    cpu_seconds: float  # user + system time of the whole step (/usr/bin/time %U + %S)
    max_rss_kib: int  # /usr/bin/time %M: the largest single process of the step
    tree_rss_kib: int  # sampled sum over the step's process tree
    tree_anon_kib: int  # the same, resident minus file-backed/shared pages
    others_cpu_seconds: float  # CPU the rest of the machine used meanwhile: contention


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants every interval."""

    PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.stop = threading.Event()
        self.peak_rss_kib = 0
        self.peak_anon_kib = 0

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(self.interval):
                return

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
        rss = anon = 0
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    statm = f.read().split()
            except OSError:
                continue
            rss += int(statm[1])
            anon += int(statm[1]) - int(statm[2])
        self.peak_rss_kib = max(self.peak_rss_kib, rss * self.PAGE_KIB)
        self.peak_anon_kib = max(self.peak_anon_kib, anon * self.PAGE_KIB)


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def run_step(argv: list[str], logdir: Path, label: str, timeout: float) -> StepResult:
    """Run one timed command under /usr/bin/time with a tree sampler; raise on failure."""
    rss_file = logdir / f"{label}.rss"
    out_file = logdir / f"{label}.log"
    log("  + " + shlex.join(argv))
    with open(out_file, "wb") as out:
        busy = busy_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", os.fspath(rss_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timed out after {timeout:.0f} s: {shlex.join(argv)}") from None
        finally:
            seconds = time.perf_counter() - start
            busy = busy_cpu_seconds() - busy
            sampler.stop.set()
            sampler.join()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = out_file.read_text(errors="replace").strip()
    if proc.returncode != 0:
        tail = "\n".join("    " + line for line in output.splitlines()[-15:])
        raise BenchError(f"status {proc.returncode}: {shlex.join(argv)}\n{tail}")
    rss_kib, user, system = rss_file.read_text().splitlines()[-1].split()
    cpu = float(user) + float(system)
    return StepResult(
        argv,
        seconds,
        cpu,
        int(rss_kib),
        sampler.peak_rss_kib,
        sampler.peak_anon_kib,
        max(0.0, busy - cpu),
    )


@contextmanager
def fresh_tmpfs(base: Path) -> Iterator[Path]:
    """A new tmpfs on a temporary directory (we are in a private mount namespace)."""
    point = Path(tempfile.mkdtemp(prefix="tmpfs.", dir=base))
    run(
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "bootc-live-bench", point],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield point
    finally:
        unmount_all_under(point)
        point.rmdir()


def tmpfs_used(point: Path) -> int:
    st = os.statvfs(point)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def warm(paths: list[Path]) -> None:
    """Read inputs once so every method starts with them in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(8 << 20):
                pass


def block_accelerators(base: Path) -> Path:
    """A PYTHONPATH directory in which importing the accelerators fails."""
    stubs = base / "no-accelerators"
    for name in BLOCKED_ACCELERATORS:
        (stubs / name).mkdir(parents=True, exist_ok=True)
        (stubs / name / "__init__.py").write_text(
            f"raise ImportError('{name} blocked by bench/unpack: measuring the stdlib path')\n"
        )
    return stubs


def initramfs_commands(base: Path, bootc_live: list[str]) -> dict[str, list[str]]:
    """bootc-live as an initramfs runs it: without the accelerator modules, with igzip on PATH
    (`bootc-live-initramfs`) or with no command at all (`bootc-live-stdlib`)."""
    igzip = shutil.which("igzip")
    if igzip is None:
        raise BenchError("igzip is not installed (Debian package isal): run ./setup")
    with_igzip = base / "path-igzip"
    with_igzip.mkdir()
    (with_igzip / "igzip").symlink_to(igzip)
    nothing = base / "path-empty"
    nothing.mkdir()
    env = ["env", f"PYTHONPATH={block_accelerators(base)}"]
    return {
        "bootc-live-initramfs": [*env, f"PATH={with_igzip}", *bootc_live],
        "bootc-live-stdlib": [*env, f"PATH={nothing}", *bootc_live],
    }


def pigz_steps(image_dir: Path, layers: list[dict[str, Any]], dest: Path) -> list[Step]:
    """pigz -dc | tar -x of each layer blob in turn."""
    extract = shlex.join(["tar", "-x", *TAR_EXTRACT, "-C", os.fspath(dest)])
    steps = []
    for lay in layers:
        blob = shlex.quote(
            os.fspath(
                image_dir / "layout" / "blobs" / "sha256" / lay["digest"].removeprefix("sha256:")
            )
        )
        pipeline = f"set -o pipefail; pigz -dc {blob} | {extract}"
        steps.append((f"layer-{lay['name']}", ["bash", "-c", pipeline]))
    return steps


def method_steps(
    method: str,
    image_dir: Path,
    layers: list[dict[str, Any]],
    point: Path,
    ours: dict[str, list[str]],
) -> tuple[list[Step], Path]:
    """The commands of one method and the tree it produces."""
    archive = os.fspath(image_dir / "image.tar")
    if method == "pigz":
        dest = point / "rootfs"
        dest.mkdir()
        return pigz_steps(image_dir, layers, dest), dest
    if method == "umoci":
        layout = point / "layout"
        layout.mkdir()
        bundle = point / "bundle"
        umoci = ["umoci", "unpack", "--image", f"{layout}:{REF_NAME}", os.fspath(bundle)]
        return [
            ("tar-xf", ["tar", "-xf", archive, "-C", os.fspath(layout)]),
            ("umoci-unpack", umoci),
        ], bundle / "rootfs"
    dest = point / "rootfs"
    unpack = [*ours[method], "unpack", f"oci-archive:{archive}:{REF_NAME}", os.fspath(dest)]
    return [("unpack", unpack)], dest


def listing(root: Path) -> dict[str, tuple[str, int, int]]:
    """path -> (type, size, link count) for every entry below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = stat.filemode(st.st_mode)[0]
            size = st.st_size if kind in "-l" else 0
            out[os.path.relpath(path, root)] = (kind, size, st.st_nlink if kind == "-" else 1)
    return out


def tree_differences(ours: Path, reference: Path, limit: int = 20) -> list[str]:
    """The first entries that differ between bootc-live's tree and pigz|tar's."""
    a, b = listing(ours), listing(reference)
    lines = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            lines.append(f"only in bootc-live: /{path} {a[path]}")
        elif path not in a:
            lines.append(f"missing from bootc-live: /{path} {b[path]}")
        elif a[path] != b[path]:
            lines.append(f"differs: /{path} bootc-live {a[path]} vs pigz|tar {b[path]}")
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return [*lines[:limit], *([more.strip()] if more else [])]


def measure(
    method: str,
    kind: str,
    image_dir: Path,
    info: dict[str, Any],
    base: Path,
    ours: dict[str, list[str]],
    timeout: float,
    rep: int,
    reference: dict[str, int] | None,
) -> dict[str, Any]:
    """One run of one method on one image, into a fresh tmpfs."""
    blobs = image_dir / "layout" / "blobs" / "sha256"
    warm(
        [
            image_dir / "image.tar",
            *(blobs / lay["digest"].removeprefix("sha256:") for lay in info["layers"]),
        ]
    )
    logdir = base / "logs" / f"{kind}-{method}-{rep}"
    logdir.mkdir(parents=True)
    mismatch = []
    with fresh_tmpfs(base) as point:
        steps, tree = method_steps(method, image_dir, info["layers"], point, ours)
        results = [run_step(argv, logdir, label, timeout) for label, argv in steps]
        used = tmpfs_used(point)
        figures = tree_figures(tree)
        if method in OURS and reference is not None and figures != reference:
            # Unpack the reference beside it, to name the entries that differ.
            expected = point / "pigz-tar"
            expected.mkdir()
            for _, argv in pigz_steps(image_dir, info["layers"], expected):
                run(argv)
            mismatch = tree_differences(tree, expected)
    return {
        "seconds": sum(r.seconds for r in results),
        "cpu_seconds": sum(r.cpu_seconds for r in results),
        "others_cpu_seconds": sum(r.others_cpu_seconds for r in results),
        "steps": [
            {"label": label, **dataclasses.asdict(r)} for (label, _), r in zip(steps, results)
        ],
        "max_rss_kib": max(r.max_rss_kib for r in results),
        "tree_rss_kib": max(r.tree_rss_kib for r in results),
        "tree_anon_kib": max(r.tree_anon_kib for r in results),
        "tmpfs_used_bytes": used,
        "tree": figures,
        "mismatch": mismatch,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps: dict[str, list[float]] = {}
    for r in runs:
        for s in r["steps"]:
            steps.setdefault(s["label"], []).append(s["seconds"])
    return {
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "median_others_cpu_seconds": statistics.median(r["others_cpu_seconds"] for r in runs),
        "step_median_seconds": {k: statistics.median(v) for k, v in steps.items()},
        "max_rss_kib": max(r["max_rss_kib"] for r in runs),
        "tree_rss_kib": max(r["tree_rss_kib"] for r in runs),
        "tree_anon_kib": max(r["tree_anon_kib"] for r in runs),
        "tmpfs_used_bytes": max(r["tmpfs_used_bytes"] for r in runs),
        "tree": runs[-1]["tree"],
    }


def bench_image(
    kind: str,
    image_dir: Path,
    info: dict[str, Any],
    args: argparse.Namespace,
    base: Path,
    ours: dict[str, list[str]],
) -> dict[str, Any]:
    """All methods, args.repeat times each (interleaved), on one image."""
    out: dict[str, Any] = {m: {"runs": []} for m in args.methods}
    reference: dict[str, int] | None = None
    # Runs numbered 0 and below are warm-ups: checked like the others, but not counted.
    for rep in range(1 - args.warmup, args.repeat + 1):
        for method in args.methods:
            entry = out[method]
            if "error" in entry:
                continue
            what = f"run {rep}/{args.repeat}" if rep > 0 else "warm-up"
            log(f"[{kind}] {METHODS[method]}, {what}")
            try:
                result = measure(
                    method, kind, image_dir, info, base, ours, args.timeout, rep, reference
                )
            except BenchError as e:
                entry["error"] = str(e)
                log(f"!! [{kind}] {METHODS[method]} FAILED: {e}")
                continue
            tree = result["tree"]
            log(f"   {result['seconds']:.2f} s, {tree['entries']} entries, {tree['bytes']} bytes")
            if rep > 0:
                entry["runs"].append(result)
            if method == "pigz" and reference is None:
                reference = tree
            if method in OURS and reference is not None and tree != reference:
                entry["error"] = "\n    ".join(
                    [f"tree mismatch: bootc-live {tree} vs pigz|tar {reference}"]
                    + result["mismatch"]
                )
                log(f"!! [{kind}] bootc-live TREE MISMATCH: {entry['error']}")
            if method == "umoci" and reference is not None and tree != reference:
                entry["note"] = f"umoci tree {tree} differs from pigz|tar {reference}"
    for entry in out.values():
        if entry["runs"]:
            entry.update(summarize(entry["runs"]))
    ratios: dict[str, dict[str, float]] = {}
    for method in OURS:
        res = out.get(method, {})
        if "median_seconds" not in res or "error" in res:
            continue
        for other, key in (("umoci", "vs_original"), ("pigz", "vs_floor")):
            if "median_seconds" in out.get(other, {}):
                ratio = res["median_seconds"] / out[other]["median_seconds"]
                ratios.setdefault(method, {})[key] = ratio
    return {"methods": out, "ratios": ratios}
