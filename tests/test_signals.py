"""Live and interruptible: `bootc-live unpack` of a real image shows progress (bytes fetched and
bytes unpacked), and SIGTERM, SIGINT or SIGHUP at any point clean up exactly as a failure does:
DEST left empty, no temporary copy left behind."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers, host_kernel
from bootc_live.layout import write_layout
from imagegen import build_layout, d, f, layer_tar
from unpackers import REPO, need_root_and

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("BOOTC_LIVE_TEST_SEED", time.time()))


@dataclass
class Image:
    source: str  # a docker-archive: read through a temporary copy, then unpacked
    work: Path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Three layers of 4000 small files each (well under a second to unpack here)."""
    need_root_and("skopeo")
    work = tmp_path_factory.mktemp("signals")
    rng = random.Random(15)
    layers = []
    for n in range(3):
        entries = [d(f"data{n}")]
        for i in range(4000):
            entries.append(f(f"data{n}/file{i}", rng.randbytes(64) * 64))
        layers.append(layer_tar(entries))
    build_layout(work / "layout", layers, tag="v1")
    archive = work / "image.tar"
    done = subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{work / 'layout'}:v1", f"docker-archive:{archive}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Image(f"docker-archive:{archive}", work)


def start(image: Image, dest: Path, tmpdir: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bootc_live", "unpack", image.source, str(dest)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(tmpdir), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: object, proc: subprocess.Popen[str], limit: float = 60) -> None:
    """Poll until `condition()` holds (the process still running), or fail."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, f"ended before the point: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the point was never reached"
        time.sleep(0.002)


def interrupt(proc: subprocess.Popen[str], signum: int) -> None:
    """Stop the process where it is, send `signum`, and let it go on: the signal finds it
    running at that point, however fast it goes (no delay to race its end)."""
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, f"ended before the signal: {proc.communicate()[1]}"
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)


def test_unpack_shows_bytes_fetched_and_unpacked(image: Image, tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    proc = start(image, tmp_path / "root", tmp_path / "tmp", BOOTC_LIVE_PROGRESS_SECONDS="0.01")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = re.findall(
        r"^bootc-live: layer (\d)/3  (\d+)/(\d+) MiB fetched, (\d+) MiB unpacked  "
        r"[\d.]+ MiB/s  ETA \d+s$",
        err,
        re.M,
    )
    assert len(lines) >= 2, err
    unpacked = [int(u) for *_, u in lines]
    assert unpacked == sorted(unpacked) and unpacked[-1] > 0, err
    assert re.search(
        r"^bootc-live: unpacked sha256:\w+ into .*: 3 layers, 12003 entries", err, re.M
    )
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_at_any_point_leaves_nothing(image: Image, tmp_path: Path, signum: int) -> None:
    """While skopeo writes the temporary copy, and once two files chosen at random (in the
    first half of a layer: the unpack is still going when the poll sees them) are written."""
    rng = random.Random(SEED + signum)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    points = ["", *(f"data{rng.randrange(3)}/file{rng.randrange(2000)}" for _ in range(2))]
    for point in points:
        dest = tmp_path / "root"
        dest.mkdir()  # an empty DEST given by the user: left empty
        proc = start(image, dest, tmpdir)
        try:
            if point:
                wait_until((dest / point).exists, proc)
            else:
                wait_until(lambda: any(tmpdir.iterdir()), proc)
            interrupt(proc, signum)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        where = (
            f"{signal.Signals(signum).name} once {point or 'the temporary copy'} exists"
            f" (seed {SEED})"
        )
        assert proc.returncode == 128 + signum, f"{where}: {err}"
        assert err.strip().splitlines()[-1] == (
            f"bootc-live: interrupted by {signal.Signals(signum).name}"
        ), where
        assert "Traceback" not in err, where
        assert list(dest.iterdir()) == [], f"{where}: DEST kept {list(dest.iterdir())[:3]}"
        assert list(tmpdir.iterdir()) == [], f"{where}: left {list(tmpdir.iterdir())}"
        dest.rmdir()


def test_with_fetch_threads_left_the_program_ends_without_finalisation(tmp_path: Path) -> None:
    """Threads a failure or an interrupt cut short may still be inside OpenSSL, and the
    interpreter's finalisation then crashed now and then (SIGSEGV, 2 of 20 interrupted
    pulls from a TLS registry): the program ends without it, its output all said."""

    def program(thread_left: bool) -> subprocess.CompletedProcess[str]:
        script = (
            "import atexit, sys, threading, time\n"
            "from bootc_live import cli\n"
            "atexit.register(lambda: print('finalised', flush=True))\n"
            + ("threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
               if thread_left else "")
            + f"sys.argv = ['bootc-live', 'inspect', 'oci:{tmp_path}']\n"
            "cli.program()\n"
        )  # fmt: skip
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
        )

    for thread_left, finalised in ((True, ""), (False, "finalised\n")):
        result = program(thread_left)
        assert result.returncode == 1 and result.stdout == finalised, result
        assert result.stderr.startswith(f"bootc-live: {tmp_path} is not an OCI image layout")


def test_an_interrupted_build_leaves_nothing_of_dracut(tmp_path: Path) -> None:
    """dracut's scratch space (over 100 MiB) lies in the build's work directory: dracut, killed
    when the build is interrupted, cannot remove it itself."""
    need_root_and("dracut", "lsinitrd")
    write_layout(tmp_path / "layout", demo_layers(), "demo")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    argv = ["build", f"oci:{tmp_path / 'layout'}:demo", "-o", str(tmp_path / "out"), "--host"]
    process = subprocess.Popen(
        [sys.executable, "-m", "bootc_live", *argv, "--kver", host_kernel(), "--pack", "none"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    work = tmp_path / "out.new"
    while not [*scratch.glob("dracut.*"), *work.glob("bootc-live-build.*/tmp/dracut.*")]:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # dracut has begun
    _, said = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, said
    assert said.splitlines()[-1] == "bootc-live: interrupted by SIGINT", said
    assert sorted(os.listdir(tmp_path)) == ["layout", "tmp"] and os.listdir(scratch) == []


STALLED_UNPACK = """
import os, signal, sys, threading
from bootc_live.runtime import oci, unpack
from bootc_live.runtime.sources import LayoutSource

class Stalled:
    def read(self, _n=-1):
        threading.Event().wait()  # a read that never returns
    def close(self):
        pass
    def __enter__(self):
        return self
    def __exit__(self, *_):
        pass

source = LayoutSource(sys.argv[1])
image = oci.resolve(source, "v1")
source.open_blob = lambda _desc: Stalled()
unpack.FEEDER_GRACE = 0.5
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
signal.signal(signal.SIGTERM, lambda *_: sys.exit("interrupted"))  # as bootc-live's handler
unpack.unpack_image(image, sys.argv[2])
"""


def test_a_signal_during_a_read_that_never_returns_still_ends_the_unpack(tmp_path: Path) -> None:
    """A blob whose read never returns (a stalled source) held the unpack after SIGTERM: the
    main thread waited for the feeder thread without end, with the stop signals ignored from
    then on. Now the feeder gets FEEDER_GRACE, and the interruption goes on. (In a process of
    its own: the signal must reach the thread that unpacks, the main one.)"""
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    (tmp_path / "root").mkdir()
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STALLED_UNPACK, str(tmp_path / "img"), str(tmp_path / "root")],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (1, "interrupted"), done.stderr
    assert time.monotonic() - start < 20


# An interrupt while the command line's modules load: a sitecustomize makes the import of one
# of them raise KeyboardInterrupt, as a Ctrl-C in that half second does.
INTERRUPTING = """
import sys
class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "bootc_live.build":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupting())
"""


@pytest.mark.parametrize("how", ["installed", "-m"])
def test_an_interrupt_while_the_program_loads_is_one_line(how: str, tmp_path: Path) -> None:
    """The program as installed (the console script beside this interpreter) and as
    `python -m bootc_live`."""
    (tmp_path / "sitecustomize.py").write_text(INTERRUPTING)
    script = Path(sys.executable).parent / "bootc-live"
    argv = [str(script)] if how == "installed" else [sys.executable, "-m", "bootc_live"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "src")])}
    said = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert (said.returncode, said.stderr, said.stdout) == (
        130,
        "bootc-live: interrupted by SIGINT\n",
        "",
    )


def test_an_interrupt_while_the_options_are_read_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bootc_live import cli

    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "parser", interrupt)
    assert cli.main(["inspect", "oci:x"]) == 130
    assert capsys.readouterr().err == "bootc-live: interrupted by SIGINT\n"
