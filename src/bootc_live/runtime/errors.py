"""The error hierarchy: every expected failure is a BootcLiveError with a one-line message."""

from __future__ import annotations

import errno
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

SHOWN = 60  # characters kept at each end of a name shown in a message
MESSAGE_LIMIT = 500  # characters of a message, whatever it quotes


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _one_line(text: str) -> str:
    """What is not printable (control bytes, newlines, bidi overrides …) escaped."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _middle(text: str, keep: int) -> str:
    if len(text) <= 2 * keep + 1:
        return text
    return f"{text[:keep]}…{text[-keep:]}"


def shown(value: str | bytes, keep: int = SHOWN) -> str:
    """A name, value or server-chosen text as put into a message: one line of printable
    characters (the rest escaped; bytes that are not UTF-8 too), long ones shortened in the
    middle (the first and last `keep` characters kept)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return _middle(_one_line(value), keep)


CONSOLE_LIMIT = 4000  # characters of a line printed, whatever it says
STATUS_MARKER = "bootc-live: status "  # status.STATUS_LINE: what programs look for on a line


def console_line(text: str) -> str:
    """A line as every sink prints it (the console, the journal, the host's terminal, the
    error file dracut's hooks read): printable, one line, capped. Whatever a name quoted into
    it carries (an escape sequence, a carriage return or newline forging another line, a bidi
    override) is shown escaped, even where the name was not put in with `shown`. Nor does a
    quoted status marker make a sentence read as a status line (status.parse_line finds the
    marker anywhere in a line): its space is shown escaped."""
    line = _middle(_one_line(text), CONSOLE_LIMIT // 2)
    return line.replace(STATUS_MARKER, STATUS_MARKER[:-1] + "\\x20")


class BootcLiveError(Exception):
    """A failure the user can act on: `str(err)` names the cause, `hint` the next step.

    The message is made one line and capped, whatever it quotes (names are shortened where
    they are put into it, with `shown`)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(_middle(_one_line(message), MESSAGE_LIMIT // 2))
        self.hint = hint

    def line(self) -> str:
        """The one-line report: cause, then the next step."""
        text = str(self)
        return f"{text}; {self.hint}" if self.hint else text


def limit_hint(err: OSError) -> str:
    """The next step when the kernel refused for want of what the process or the machine has
    (open files, memory, processes), not for anything of the files concerned; "" otherwise."""
    if err.errno in (errno.EMFILE, errno.ENFILE):
        return "too many files are open: raise the limit (ulimit -n, LimitNOFILE=)"
    if err.errno in (errno.ENOMEM, errno.EAGAIN):
        return "the machine is out of memory or processes: add RAM, or stop what holds them"
    return ""


class ImageError(BootcLiveError):
    """The image (index, manifest, config) is missing, ambiguous or malformed."""


class MissingBlob(ImageError):
    """A blob an image names is not in the layout or archive (pulled for another platform,
    say: the index is kept whole, its other images' blobs are not)."""

    def __init__(self, where: str, digest: str) -> None:
        super().__init__(f"{where}: blob {digest} is missing")


class VerificationError(BootcLiveError):
    """A blob or layer does not match its digest, size or diff_id."""


class LayerError(BootcLiveError):
    """A layer's tar stream is malformed or asks for something forbidden."""


# The next step for a layer that cannot be applied while its blob matches its digest: nothing
# was damaged on the way, the image holds it so.
LAYER_HINT = "the blob matches its digest, so the image was built so: rebuild it"


class SpaceError(BootcLiveError):
    """The destination ran out of space."""


# What a message names at boot (a kernel argument, or the build flag that fills the initramfs)
# and what the same advice is on the host command line: ONE table, applied by `for_host` at the
# host's boundary, so the runtime's messages stay right at boot and become right on the host.
# (kernel argument, or a phrase of a hint; host equivalent; whether a value after `=` is kept).
# An argument written with its `=` here is only recognised with it (`root=`, not "the root").
BOOT_TO_HOST: tuple[tuple[str, str, bool], ...] = (
    ("bootc.registry.unsecure", "--unsecure", False),
    ("bootc.registry.auth", "--authfile FILE", False),
    ("bootc.registry.mirror", "--mirror", True),
    ("bootc.platform", "--platform", True),
    ("bootc.digest", "--digest", True),
    ("bootc.identity", "--identity REF", False),
    ("bootc.policy", "--policy FILE", False),
    ("bootc.retries", "--retries N", False),
    ("bootc.timeout", "--timeout SECONDS", False),
    ("bootc.live.erofs.compress", "--compress", True),
    ("bootclabel=", "the :TAG of SOURCE", False),
    ("root=", "SOURCE", False),
    ("bootc-live build --auth-file FILE", "--authfile FILE (or podman login)", False),
    ("bootc-live build --ca FILE", "--ca FILE", False),
    ("add RAM or use bootc.zram=", "free space there, or write somewhere else", False),
    (
        "convert it with bootc-live pull docker-archive:PATH -o oci-archive:FILE",
        "read it as docker-archive:PATH",
        False,
    ),
)


def for_host(text: str) -> str:
    """A runtime message as the host command line says it: kernel arguments → host flags."""
    # Phrases first: one may hold a kernel argument that means something else on its own.
    for boot, host, keeps_value in sorted(BOOT_TO_HOST, key=lambda entry: " " not in entry[0]):
        if " " in boot:  # a phrase of a hint
            text = text.replace(boot, host)
            continue
        value = r"([^\s;,)]*)" if boot.endswith("=") else r"(?:=([^\s;,)]*))?(?![\w.-])"
        pattern = rf"(?<![\w.-]){re.escape(boot)}{value}"

        def swap(m: re.Match[str], host: str = host, keeps_value: bool = keeps_value) -> str:
            return f"{host} {m.group(1)}" if keeps_value and m.group(1) else host

        text = re.sub(pattern, swap, text)
    return text


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGINT, SIGHUP), raised where the program is: it unwinds like a
    failure, so everything made is undone. Not an Exception: no retry loop takes it for a
    failure to try again."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stopping(signals: Sequence[int]) -> Iterator[None]:
    """Within: each of `signals` raises Stopped (a second one is then ignored, so that the
    undoing is not cut short); the handlers before come back after. Outside the main thread
    nothing changes: signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        for other in signals:
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {stop_signal: signal.signal(stop_signal, stop) for stop_signal in signals}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
