"""The status contract (README "Boot status for programs"): status.json holds everything; the
status lines, read in order, add up to it, each short enough for the kernel's log."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bootc_live.runtime.status import LINE_LIMIT, STATUS_LINE, Report, documents, parse_line

FIELD = st.text("abcdefghij_", min_size=1, max_size=12)
VALUE = st.one_of(
    st.integers(0, 1 << 40),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),  # fits a line
    st.booleans(),
    st.dictionaries(FIELD, st.integers(0, 1 << 20), max_size=4),
)
STATES = st.lists(
    st.tuples(
        st.sampled_from(["kexec", "planned", "unpacking", "packing"]),
        st.dictionaries(FIELD, VALUE, max_size=12),
    ),
    max_size=6,
)


def played(
    tmp: Path, steps: list[tuple[str, dict[str, object]]], quiet: bool, boot: str = "b00t0001"
) -> tuple[list[str], dict[str, object]]:
    out = io.StringIO()
    report = Report(quiet=quiet, directory=str(tmp), stream=out, boot=boot)
    for state, fields in [*steps, ("ready", {"entries": 3})]:
        report.state(state, **fields)
    return out.getvalue().splitlines(), json.loads((tmp / "status.json").read_text())


@settings(max_examples=150, deadline=None)
@given(steps=STATES, quiet=st.booleans())
def test_the_lines_add_up_to_status_json_and_stay_short(
    tmp_path_factory: object, steps: list[tuple[str, dict[str, object]]], quiet: bool
) -> None:
    tmp = tmp_path_factory.mktemp("status")  # type: ignore[attr-defined]
    lines, final = played(tmp, [("resolving", {"source": "bootc-live:/x"}), *steps], quiet)
    assert all(len(line.encode()) <= LINE_LIMIT for line in lines), max(map(len, lines))
    assert all(line.startswith(STATUS_LINE + '{"state":"') for line in lines)
    if quiet:  # the last state only, carrying everything
        assert {parse_line(line)["state"] for line in lines} == {"ready"}  # type: ignore[index]
    assert documents(lines)[-1] == final


def test_a_long_value_is_shortened_on_its_line_only(tmp_path: Path) -> None:
    cmdline = "console=ttyS0 " + "\u00e9" * 3000 + " root=bootc-live:/bootc-live/image"
    table = {f"k{i}": i for i in range(400)}
    lines, final = played(
        tmp_path,
        [("resolving", {"source": "s"}), ("kexec-loaded", {"kexec_cmdline": cmdline, "t": table})],
        False,
    )
    assert all(len(line.encode()) <= LINE_LIMIT for line in lines)
    assert (final["kexec_cmdline"], final["t"]) == (cmdline, table)  # whole in status.json
    shown = documents(lines)[-1]
    assert shown["kexec_cmdline"].startswith("console=ttyS0 \u00e9")
    assert shown["kexec_cmdline"].endswith("/bootc-live/image") and "…" in shown["kexec_cmdline"]
    assert shown["t"].startswith('{"k0":0,') and "…" in shown["t"]


def test_a_kexec_stage_two_starts_a_document_of_its_own(tmp_path: Path) -> None:
    one, _ = played(
        tmp_path / "one",
        [("resolving", {"source": "http://h/r.oci"}), ("kexec", {"kexec_kver": "6.1"})],
        False,
    )
    two, final = played(
        tmp_path / "two", [("resolving", {"source": "/bootc-live/image"})], False, "b00t0002"
    )
    early, _ = played(tmp_path / "early", [], False, "b00t0003")  # fails before resolving
    console = [
        "[    0.1] Linux version 6.1",
        *one[:-1],
        "[    0.0] Linux version 6.12",
        "bootc-live[9]: " + two[0],
        "cut " + two[1][:40],
        *two[1:],
    ]
    found = documents(console)
    assert [d["state"] for d in found] == ["resolving", "kexec", "resolving", "ready"]
    assert found[1]["kexec_kver"] == "6.1" and "kexec_kver" not in found[-1]
    assert found[-1] == final
    after = documents([*one, *early])[-1]  # another boot that never resolved: nothing of one's
    assert "kexec_kver" not in after and after["state"] == "ready"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_every_line_printed_is_one_printable_line(said: str, field: str) -> None:
    """Whatever a sentence quotes (a name from an image or a server: control characters, a
    newline forging a status line or a second error, C1 controls, surrogates, bidi overrides),
    each print is one line of printable characters, and the lines read back to status.json."""
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as run:  # hypothesis: no function-scoped tmp_path
        report = Report(directory=run, stream=out)
        said_lines(report, said, field)
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    assert all(line.isprintable() for line in lines[:-1])
    assert [doc["state"] for doc in documents(lines)] == ["failed"]
    assert documents(lines)[-1]["message"] == field


def said_lines(report: Report, said: str, field: str) -> None:
    """`said` said, summarised with a forged status line around it, then the failure."""
    forged = f'{said}\nbootc-live: status {{"state":"ready"}}\r{said}'
    report.say(forged)
    report.summary(forged)
    report.state("failed", message=field)
