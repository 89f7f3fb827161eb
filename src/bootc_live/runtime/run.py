"""The one door to external commands: argv lists, stdin from /dev/null, one clear failure."""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from .errors import BootcLiveError, limit_hint

DEBUG = bool(os.environ.get("BOOTC_LIVE_DEBUG"))
PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired


class CommandError(BootcLiveError):
    """An external command failed; `detail` is the last line it wrote to stderr, `command`
    the command line (shown with --debug only: it is internal), `output` what it printed."""

    def __init__(
        self,
        message: str,
        hint: str = "",
        detail: str = "",
        command: str = "",
        output: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.detail = detail or message
        self.command = command
        self.output = output
        self.returncode = returncode  # None: it did not run, or did not end in time


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    hint: str = "",
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    shown: Sequence[str] | None = None,
    file_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; log it as `+ cmd` (or as `shown`, an argv without its secrets) when
    debugging; raise CommandError if it fails. `file_limit`: no file the command writes grows
    past that many bytes (RLIMIT_FSIZE; a command that tries is ended by SIGXFSZ)."""
    args = _logged(argv, shown)
    try:
        # A session of its own: what it starts in turn (dracut's cp and cpio, lsinitrd's zstd)
        # is ended with it if this run is cut short, not left writing on its own.
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=None if file_limit is None else lambda: _limit_files(file_limit),
        )
    except FileNotFoundError:
        raise CommandError(f"{args[0]}: command not found", hint) from None
    except OSError as err:
        raise not_started(args[0], err, hint) from None
    try:
        stdout, stderr = proc.communicate(input, timeout)
    except subprocess.TimeoutExpired:
        end_group(proc)
        raise CommandError(
            f"{os.path.basename(args[0])} timed out after {timeout:.0f}s",
            hint,
            command=shlex.join(shown or args),
        ) from None
    except BaseException:  # interrupted (Stopped, KeyboardInterrupt): the command goes too
        end_group(proc)
        raise
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    if result.returncode != 0:
        detail = [line.strip() for line in (result.stderr or "").splitlines() if line.strip()]
        while len(detail) > 1 and detail[-1].startswith("dmesg(1) may have more"):
            detail.pop()  # mount's pointer to the kernel log: the reason is on the line before
        last = detail[-1] if detail else f"exit status {result.returncode}"
        # The program's name, not its command line: that is internal (shown with --debug).
        raise CommandError(
            f"{os.path.basename(args[0])} failed: {last}",
            hint,
            last,
            shlex.join(shown or args),
            result.stdout or "",
            result.returncode,
        )
    if result.stderr and DEBUG:
        sys.stderr.write(result.stderr)
    return result


GRACE = 5.0  # seconds a command's processes have to clean up after SIGTERM, before SIGKILL


def end_group(proc: subprocess.Popen[str]) -> None:
    """End the command started in a session of its own, and all it started: SIGTERM first
    (dracut removes its temporary files), then, after at most GRACE seconds (or at once when
    the wait is itself interrupted), SIGKILL for whatever is left of the group."""
    try:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GRACE)
    finally:
        _signal_group(proc, signal.SIGKILL)  # what the leader left behind, or the leader
        proc.wait()


def _signal_group(proc: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone
        os.killpg(proc.pid, signum)


def _limit_files(size: int) -> None:
    """In the child, before exec: files grow to `size` bytes at most."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | None = DEVNULL,
    stdout: int | None = None,
    stderr: int | None = None,
    shown: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a command whose streams the caller handles as it runs (None: this process's own);
    logged like run() (as `shown` when given). The caller waits for it and judges its exit
    status."""
    args = _logged(argv, shown)
    try:
        return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr)
    except FileNotFoundError:
        raise CommandError(f"{args[0]}: command not found") from None
    except OSError as err:
        raise not_started(args[0], err) from None


def not_started(program: str, err: OSError, hint: str = "") -> CommandError:
    """A command the kernel would not start, said in one line: for want of open files, memory
    or processes (the machine's limits), or a file that is no program this machine runs."""
    hint = limit_hint(err) or hint or f"{program} must be a program this machine runs: reinstall it"
    return CommandError(
        f"{os.path.basename(program)} could not be started: {err.strerror or err}", hint
    )


def _logged(
    argv: Sequence[str | os.PathLike[str]], shown: Sequence[str] | None = None
) -> list[str]:
    args = [os.fspath(a) for a in argv]
    if DEBUG:
        print("+ " + shlex.join(shown or args), file=sys.stderr, flush=True)
    return args
