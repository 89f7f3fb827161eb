"""How `bootc-live vm` reads a guest's console: verdict markers, failures, stops."""

from __future__ import annotations

from bootc_live.vm import _scan


def test_marker_wins_and_keeps_the_rest_of_its_line() -> None:
    found: dict[str, str] = {}
    assert _scan(["boot…", "\x1b[0mREPORT root=ro etc=rw\r"], ("REPORT",), found, False) == (
        "marker",
        False,
    )
    assert found == {"REPORT": "root=ro etc=rw"}


def test_a_stop_after_a_failure_is_a_failure() -> None:
    lines = ["[  9.1] dracut: FATAL: bootc-live: …", "[  9.2] dracut: Refusing to continue"]
    assert _scan(lines, (), {}, False) == (None, True)
    assert _scan(["[ 10.0] reboot: System halted"], (), {}, True) == ("stopped", True)


def test_a_clean_power_off_is_a_stop_without_failure() -> None:
    assert _scan(["sync", "[ 3.0] reboot: Power down"], (), {}, False) == ("stopped", False)
    failed_unit = (
        "[FAILED] Failed to start \x1b[0;1;39mbootc-live…ify and unpack the image into RAM."
    )
    assert _scan([failed_unit], (), {}, False) == (None, True)
