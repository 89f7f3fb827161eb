"""The console watcher of `bootc-live vm` and the VM tests, on stand-in commands (no QEMU)."""

from __future__ import annotations

from bootc_live.vm import INIT_STARTED, watch


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_a_kernel_silent_before_init_is_a_stall() -> None:
    result = watch(sh("echo 'Linux version 6'; sleep 30"), timeout=20, echo=None, stall=1.0)
    assert result.ended == "stalled" and result.seconds < 10


def test_silence_after_init_is_not_a_stall() -> None:
    # Once the initramfs runs, slow work is ours to judge: the timeout does.
    result = watch(sh(f"echo '{INIT_STARTED}'; sleep 30"), timeout=3, echo=None, stall=1.0)
    assert result.ended == "timeout"


def test_the_marker_ends_the_watch() -> None:
    result = watch(
        sh("printf 'Run /in'; sleep 0.2; echo 'it as init process'; sleep 2; echo 'MARK ok'"),
        timeout=20,
        markers=("MARK",),
        echo=None,
        stall=1.5,
    )
    assert result.ended == "marker" and result.markers == {"MARK": "ok"}


def test_init_is_seen_however_the_console_splits_its_line() -> None:
    # A serial console under load arrives in small pieces: one byte at a time here.
    pieces = "; ".join(f"printf '{c}'; sleep 0.02" for c in f"[ 5.1] {INIT_STARTED}\n")
    result = watch(
        sh(f"{pieces}; sleep 30"), timeout=3 + len(INIT_STARTED) * 0.05, echo=None, stall=1.0
    )
    assert result.ended == "timeout"
