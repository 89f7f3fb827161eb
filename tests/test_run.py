"""The one door to external commands: run.run and run.start, and the lint rule that keeps it one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bootc_live.runtime import run
from signalled import gone, stopped

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


def ruff_says(source: str, filename: str) -> str:
    """ruff's findings on `source` as if it were the repository's file `filename`."""
    result = subprocess.run(
        [RUFF, "check", "--output-format=concise", "--stdin-filename", filename, "-"],
        cwd=REPO,
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


@pytest.mark.parametrize("line", ["import subprocess", "from subprocess import run"])
def test_subprocess_is_banned_outside_run_py(line: str) -> None:
    said = ruff_says(f"{line}\n\nprint(run if 0 else subprocess)\n", "src/bootc_live/vm.py")
    assert "TID251 `subprocess` is banned: external commands go through" in said


def test_run_py_and_tests_may_use_subprocess() -> None:
    source = "import subprocess\n\nsubprocess.run(['true'], check=True)\n"
    for filename in ("src/bootc_live/runtime/run.py", "tests/test_x.py", "bench/boot"):
        assert "TID251" not in ruff_says(source, filename), filename


def test_start_streams_and_logs_when_debugging(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "DEBUG", True)
    proc = run.start(["sh", "-c", "cat; echo err >&2"], stdin=run.PIPE, stdout=run.PIPE)
    out, _ = proc.communicate(b"fed")
    assert (out, proc.returncode) == (b"fed", 0)
    assert capfd.readouterr().err == "+ sh -c 'cat; echo err >&2'\nerr\n"


def test_start_names_a_missing_command() -> None:
    with pytest.raises(run.CommandError) as err:
        run.start(["/nonexistent/bootc-live-tool"])
    assert str(err.value) == "/nonexistent/bootc-live-tool: command not found"


def test_file_limit_ends_a_command_that_writes_more(tmp_path: Path) -> None:
    """`file_limit`: the command's files stop at that size; a command that goes on is ended."""
    out = tmp_path / "out"
    with pytest.raises(run.CommandError) as err:
        run.run(["dd", "if=/dev/zero", f"of={out}", "bs=4096", "count=64"], file_limit=10000)
    assert err.value.returncode == -25  # SIGXFSZ
    assert out.stat().st_size == 10000
    run.run(["dd", "if=/dev/zero", f"of={out}", "bs=4096", "count=2"], file_limit=10000)
    assert out.stat().st_size == 8192


def test_a_command_that_times_out_goes_with_what_it_started(tmp_path: Path) -> None:
    child = tmp_path / "child"
    script = f"sleep 300 & echo $! > {child}; wait"
    with pytest.raises(run.CommandError, match="sh timed out after 1s"):
        run.run(["sh", "-c", script], timeout=1)
    assert gone(child)


def test_an_interrupted_command_cleans_up_and_goes_with_what_it_started(tmp_path: Path) -> None:
    """SIGTERM to this process while a command runs (the build's dracut, its self-check's
    lsinitrd): the command gets SIGTERM to clean up, and its children go too (lsinitrd's zstd
    and cpio went on writing into a tree being removed)."""
    child, temp, ready = tmp_path / "child", tmp_path / "temp", tmp_path / "ready"
    command = (
        f"trap 'rm -f {temp}; exit 1' TERM; touch {temp}; "
        f"sleep 300 & echo $! > {child}; read go; touch {ready}; wait"
    )
    # `read go`: the command says it is ready once run() is waiting for it (it got the input),
    # not while run() is still starting it.
    stopped(
        f"from bootc_live.runtime import run; run.run(['sh', '-c', {command!r}], input='go\\n')",
        ready,
    )
    assert not temp.exists()  # its TERM trap ran
    assert gone(child)


def test_a_second_interrupt_during_the_grace_still_ends_everything(tmp_path: Path) -> None:
    """Ctrl-C, then Ctrl-C again while the command cleans up (its TERM handler runs): what it
    started (here a child deaf to SIGTERM) is out of the terminal's reach in its own session,
    so it is killed all the same, not left running."""
    child, ready, terming = tmp_path / "child", tmp_path / "ready", tmp_path / "terming"
    command = (
        f"(trap '' TERM; exec sleep 300) & echo $! > {child}; "
        f"trap 'touch {terming}; sleep 30; exit 1' TERM; read go; touch {ready}; wait"
    )
    script = (
        "import os, signal, threading, time\n"
        "from bootc_live.runtime import run\n"
        # A pytest-xdist worker ignores SIGINT, and so would this child: Ctrl-C's handler.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def interrupt(when):\n"
        "    while not os.path.exists(when):\n"
        "        time.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "def twice():\n"
        f"    interrupt({str(ready)!r})\n"
        f"    interrupt({str(terming)!r})  # the first interrupt's SIGTERM reached it\n"
        "threading.Thread(target=twice, daemon=True).start()\n"
        f"run.run(['sh', '-c', {command!r}], input='go\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr, result.stderr
    assert terming.exists() and gone(child)


@pytest.mark.parametrize(
    ("contents", "mode", "reason"),
    [
        (b"#!/bin/sh\ntrue\n", 0o644, "Permission denied"),  # not executable
        (b"\x7fELF\x02\x01\x01" + bytes(57), 0o755, "Exec format error"),  # a cut ELF
    ],
    ids=["EACCES", "ENOEXEC"],
)
def test_a_program_the_kernel_will_not_run_is_one_line(
    tmp_path: Path, contents: bytes, mode: int, reason: str
) -> None:
    """execve's EACCES or ENOEXEC (a tool damaged in the initramfs): the command's name, the
    kernel's reason and the caller's hint, not an internal error."""
    tool = tmp_path / "mkfs.erofs"
    tool.write_bytes(contents)
    tool.chmod(mode)
    for call in (run.run, run.start):
        with pytest.raises(run.CommandError) as err:
            call([tool], hint="install erofs-utils") if call is run.run else call([tool])
        hint = "install erofs-utils" if call is run.run else f"{tool} must be a program"
        assert err.value.line().startswith(f"mkfs.erofs could not be started: {reason}; {hint}")


# Run by the test below: its open files limited to those it holds, so that the pipes for a
# command's streams cannot be made (EMFILE, as the kernel says it).
AT_THE_FILE_LIMIT = r"""
import os, resource
from bootc_live.runtime import run
held = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
resource.setrlimit(resource.RLIMIT_NOFILE, (held, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
for call in (run.run, run.start):
    try:
        call(["true"], stdout=run.PIPE) if call is run.start else call(["true"], capture=True)
    except run.CommandError as err:
        print(err.line())
"""


def test_a_command_that_cannot_be_started_for_want_of_files_names_the_limit() -> None:
    src = Path(run.__file__).parents[2]
    child = subprocess.run(
        [sys.executable, "-c", AT_THE_FILE_LIMIT],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    line = "true could not be started: Too many open files; too many files are open: raise the "
    assert child.stdout.splitlines() == [f"{line}limit (ulimit -n, LimitNOFILE=)"] * 2, child.stderr
