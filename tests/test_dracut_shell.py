"""The shell side of the dracut modules reads root= as the runtime's parser does; the net
generator writes the drop-ins rd.net.wait-any-if asks for."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bootc_live.runtime import boot
from bootc_live.runtime.cmdline import parse_root
from unpackers import need

DRACUT = Path(__file__).resolve().parents[1] / "src/bootc_live/dracut"
LIB = DRACUT / "90bootc-live/bootc-live-lib.sh"
DIGEST = "sha256:" + "ab" * 32

ROOTS = [
    "bootc-live:/bootc-live/image",
    "bootc-live:/run/initramfs/root.oci",
    "bootc-live:http://10.0.2.2:8080/root.oci",
    "bootc-live:https://example.org/images/root.oci",
    "bootc-live:ftp://example.org/root.oci",
    "bootc-live:tftp://10.0.2.2/root.oci",
    "bootc-live:nfs://server/export/root.oci",
    "bootc-live:packed:/bootc-live/packed.root",
    "bootc-live:packed:http://10.0.2.2:8080/packed.img",
    "bootc-live:packed:https://example.org/packed.img",
    "bootc-live:packed:tftp://10.0.2.2/packed.img",
    "bootc-live:packed:nfs://server/export/packed.img",
    "bootc-live:packed:ftp://server/packed.img",
    "bootc-live:packed:",
    "bootc-live:packed:docker://quay.io/x",
    f"bootc-live:packed:docker://localhost:5000/img@{DIGEST}",
    "bootc-live:packed:docker://",
    "bootc-live:packed:docker://a b",
    "bootc-live:packed:relative",
    "bootc-live:docker://quay.io/fedora/fedora-bootc:42",
    f"bootc-live:docker://localhost:5000/img@{DIGEST}",
    "bootc-live:docker://",
    "bootc-live:docker://a b",
    "bootc-live:",
    "bootc-live:relative/path",
    "bootc-live:HTTP://example.org/root.oci",
    "bootc-live:file:///root.oci",
    "bootc-live:docker:/one-slash",
    "bootc-live:block:LABEL=data:/image.oci",
    "bootc-live:block:UUID=0b7c-11ee:/images/layout",
    "bootc-live:block:PARTUUID=6e0a0a53-01:/root.oci",
    "bootc-live:block:/dev/disk/by-path/pci-0000:00:04.0-part1:/images/root.oci",
    "bootc-live:block:LABEL=a:b:/x:/y",
    "bootc-live:block:data:/image.oci",
    "bootc-live:block:LABEL=:/image.oci",
    "bootc-live:block:/dev/:/image.oci",
    "bootc-live:block:LABEL=data",
    "bootc-live:block:LABEL=data:/images/../root.oci",
    "bootc-live:block:LABEL=data:/images/..",
    "bootc-live:block:LABEL=:/a:/b",
    "bootc-live:block:UUID=:/a:/b",
    "bootc-live:block:PARTUUID=:/a:/b",
    "bootc-live:block:/dev/:/a:/b",
    "bootc-live:block:/dev/../dev/vda:/img",
    "bootc-live:block:LABEL=a/../b:/img",
    "bootc-live:block:LABEL=a/..:/img",
    "bootc-live",
    "BOOTC-LIVE:/image",
    "/dev/sda1",
    "LABEL=root",
    "live:http://example.org/squashfs.img",
    "nfs:server:/export",
    "",
]


def python_kind(value: str) -> str:
    """What the runtime makes of root=VALUE, in the words of bootc_live_root_kind."""
    try:
        root = parse_root(value)
    except ValueError:
        return "invalid"
    return "" if root is None else root.kind


def shell(script: str, root: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`script` run by sh with the library and a getarg that knows only root=."""
    stubs = 'getarg() { [ "$1" = root= ] && printf %s "$ROOT"; }; getargbool() { return 1; }'
    return subprocess.run(
        ["sh", "-c", f'{stubs}\n. "{LIB}"\n{script}', "sh", *args],
        env={"ROOT": root, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.mark.parametrize("value", ROOTS)
def test_the_shell_grammar_is_the_runtimes(value: str) -> None:
    said = shell('bootc_live_root_kind "$1"', "", value).stdout
    assert said.strip() == python_kind(value)


def test_the_grammar_covers_every_kind_of_root() -> None:
    assert {python_kind(v) for v in ROOTS} == {"path", "url", "docker", "block", "invalid", ""}


@pytest.mark.parametrize("value", ROOTS)
def test_generators_claim_the_roots_the_runtime_takes(value: str, tmp_path: Path) -> None:
    kind = python_kind(value)
    base = tmp_path / "base"
    net = tmp_path / "net"
    shell(f'. "{DRACUT}/90bootc-live/bootc-live-generator.sh"', value, "n", os.fspath(base))
    shell(f'. "{DRACUT}/90bootc-live-net/bootc-live-net-generator.sh"', value, "n", os.fspath(net))
    assert (base / "sysroot.mount").exists() == (kind != "")
    assert (net / "bootc-live.service.d/network.conf").exists() == (kind in ("url", "docker"))
    hook = shell(f'. "{DRACUT}/90bootc-live/bootc-live-cmdline.sh"; echo "$rootok"', value)
    assert hook.stdout == ("1\n" if kind else "\n")


def test_no_script_but_the_library_reads_root() -> None:
    scripts = [p for p in DRACUT.glob("*/*.sh") if p != LIB]
    assert len(scripts) >= 5
    for script in scripts:
        assert not re.search(r"bootc-live:[\w/]*\*", script.read_text()), script


DRACUT_LIB = Path("/usr/lib/dracut/modules.d/99base/dracut-lib.sh")
DRACUT_UTIL = Path("/usr/lib/dracut/dracut-util")  # getarg's helper, called as dracut-getarg

# dracut-lib.sh reads the command line in getcmdline (from /proc/cmdline and /etc/cmdline.d);
# the one defined after it prints $CMDLINE instead. wait_for_dev is defined first so that
# dracut-lib.sh does not source /lib/dracut-dev-lib.sh, which is where the initramfs has it.
PRELUDE = """
wait_for_dev() { :; }
. "$DRACUT_LIB"
getcmdline() { printf '%s' "$CMDLINE"; }
. "$BOOTC_LIVE_LIB"
. "$SCRIPT"
"""

HTTP_ROOT = "root=bootc-live:http://10.0.2.2/root.oci"
WAITS_FOR_THE_NETWORK = {
    "early/bootc-live.service.d/network.conf": (
        "[Unit]\nWants=network-online.target\nAfter=network-online.target\n"
    )
}
ANY_LINK_WILL_DO = {
    "early/systemd-networkd-wait-online.service.d/bootc-live-any.conf": (
        "[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any\n"
    )
}


def run_generator(script: Path, cmdline: str, tmp_path: Path) -> dict[str, str]:
    """Run a systemd generator as systemd does (normal, early and late directories), with
    dracut's own getarg and getargbool on `cmdline`; return every file it wrote, by path under
    `tmp_path`."""
    need(DRACUT_LIB.is_file() and DRACUT_UTIL.is_file(), "needs dracut's dracut-lib.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dracut-getarg").symlink_to(DRACUT_UTIL)
    dirs = [tmp_path / name for name in ("normal", "early", "late")]
    for directory in dirs:
        directory.mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PREFIX": "/nonexistent",  # set: dracut-lib.sh then leaves /run alone
        "DRACUT_SYSTEMD": "1",  # warnings to stderr, not /dev/kmsg
        "DEBUG_MEM_LEVEL": "0",
        "DRACUT_LIB": os.fspath(DRACUT_LIB),
        "BOOTC_LIVE_LIB": os.fspath(LIB),
        "SCRIPT": os.fspath(script),
        "CMDLINE": cmdline,
    }
    result = subprocess.run(
        ["sh", "-c", PRELUDE, script.name, *map(os.fspath, dirs)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    return {
        os.fspath(path.relative_to(tmp_path)): path.read_text()
        for directory in dirs
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (f"{HTTP_ROOT} rd.net.wait-any-if", {**WAITS_FOR_THE_NETWORK, **ANY_LINK_WILL_DO}),
        (f"{HTTP_ROOT} rd.net.wait-any-if=1", {**WAITS_FOR_THE_NETWORK, **ANY_LINK_WILL_DO}),
        (f"rd.net.wait-any-if {HTTP_ROOT}", {**WAITS_FOR_THE_NETWORK, **ANY_LINK_WILL_DO}),
        (
            "root=bootc-live:docker://registry.example/demo:1 rd.net.wait-any-if",
            {**WAITS_FOR_THE_NETWORK, **ANY_LINK_WILL_DO},
        ),
        (HTTP_ROOT, WAITS_FOR_THE_NETWORK),
        (f"{HTTP_ROOT} rd.net.wait-any-if=0", WAITS_FOR_THE_NETWORK),
        (f"{HTTP_ROOT} rd.net.wait-any-if=off", WAITS_FOR_THE_NETWORK),
        (f"{HTTP_ROOT} rd.net.wait-any-if=false", WAITS_FOR_THE_NETWORK),  # as parse_bool
        (f"{HTTP_ROOT} rd.net.wait-any-if=FALSE", WAITS_FOR_THE_NETWORK),
        (f"{HTTP_ROOT} rd.net.wait-any-if=Yes", {**WAITS_FOR_THE_NETWORK, **ANY_LINK_WILL_DO}),
        ("root=bootc-live:/run/root.oci rd.net.wait-any-if", {}),  # no network needed
        ("root=/dev/sda1 rd.net.wait-any-if", {}),
    ],
)
def test_net_generator_writes_the_wait_online_drop_ins(
    cmdline: str, expected: dict[str, str], tmp_path: Path
) -> None:
    """rd.net.wait-any-if makes systemd-networkd-wait-online content with one link (--any)."""
    script = DRACUT / "90bootc-live-net" / "bootc-live-net-generator.sh"
    assert run_generator(script, cmdline, tmp_path) == expected


def test_a_second_run_after_the_spare_files_went_stops_saying_why(tmp_path: Path) -> None:
    """systemd's emergency shell starts bootc-live.service again when it is left; once the
    first run freed the initramfs's spare files (its Python files among them), the unit's
    ExecStartPre and the shell flavour's mount hook stop with one line, before python3."""
    unit = (DRACUT / "90bootc-live/bootc-live.service").read_text()
    pre = next(ln for ln in unit.splitlines() if ln.startswith("ExecStartPre="))
    argv = shlex.split(pre.removeprefix("ExecStartPre="))
    assert argv[:2] == ["/bin/sh", "-c"] and "/lib/bootc-live-lib.sh" in argv[2]
    script = argv[2].replace("/lib/bootc-live-lib.sh", str(LIB))
    run = tmp_path / "run"
    run.mkdir()
    env = {"BOOTC_LIVE_RUN": str(run), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert (first.returncode, first.stderr) == (0, "")
    (run / boot.FREED).write_text("")
    again = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr == (
        "bootc-live: an earlier attempt in this boot freed the initramfs's unused modules, "
        "tools and the runtime's Python files, so it cannot run again: reboot to try again "
        "(bootc.keep-modules=1 keeps them, for a retry from the emergency shell)\n"
    )
    # The shell flavour's mount hook: dracut's die with that line, python3 never run.
    hook = DRACUT / "90bootc-live/bootc-live-mount.sh"
    stubs = (
        f'getarg() {{ [ "$1" = root= ] && echo bootc-live:/image; }}; ismounted() {{ false; }}; '
        f'die() {{ echo "DIE $*"; exit 1; }}; NEWROOT=/sysroot; . "{LIB}"; . "{hook}"'
    )
    died = subprocess.run(["sh", "-c", stubs], env=env, capture_output=True, text=True)
    assert died.stdout == f"DIE {again.stderr}" and died.returncode == 1


# dracut's die (dracut-lib.sh) as far as the message goes: through echo into the kernel's log
# and, between double quotes, into a script that the emergency shell (rd.shell) sources, where
# warn echoes it.
DIE = """die() {
    echo "<24>dracut: FATAL: $*" > "$RUN/kmsg"
    echo "warn dracut: FATAL: \\"$*\\"" >> "$RUN/01-die.sh"
    exit 1
}"""


def emergency_line(sh: str, error: str | None, tmp_path: Path) -> str:
    """What the emergency shell says, under `sh`, once the runtime failed and left `error`
    (None: no file) for the shell flavour's mount hook; nothing else may have been done."""
    need(shutil.which(sh) is not None, f"needs {sh}")
    run = tmp_path / "run"
    run.mkdir()
    if error is not None:
        (run / "error").write_text(error)
    hook = tmp_path / "mount.sh"
    text = (DRACUT / "90bootc-live/bootc-live-mount.sh").read_text()
    hook.write_text(text.replace("/usr/bin/python3", "false"))  # the runtime failed
    stubs = 'getarg() { [ "$1" = root= ] && echo bootc-live:/image; }; ismounted() { false; }'
    script = f'{stubs}\n{DIE}\nNEWROOT=/sysroot\n. "{LIB}"\n. "{hook}"'
    env = {"BOOTC_LIVE_RUN": os.fspath(run), "RUN": os.fspath(run), "PATH": "/usr/bin:/bin"}
    died = subprocess.run([sh, "-c", script], cwd=tmp_path, env=env, capture_output=True)
    assert (died.returncode, died.stderr) == (1, b"")
    emergency = 'warn() { echo "$*"; }\n. ./01-die.sh'  # dracut's warn echoes too
    shown = subprocess.run([sh, "-c", emergency], cwd=run, env=env, capture_output=True, text=True)
    assert shown.stderr == ""
    assert sorted(os.listdir(tmp_path)) == ["mount.sh", "run"]
    return shown.stdout


@pytest.mark.parametrize("sh", ["dash", "bash"])
def test_the_runtimes_message_is_shown_by_the_emergency_shell_and_never_run(
    sh: str, tmp_path: Path
) -> None:
    """The runtime's line quotes the command line and servers' replies (an HTTP reason
    phrase, a WWW-Authenticate header): the shell flavour's mount hook hands it to dracut's
    die, whose emergency script shows it as it is, whatever shell /bin/sh is."""
    message = 'bootc-live: r.example: HTTP 500 $(touch a) `touch b` "q" \\c \\x20 \\\\ \\" $'
    assert emergency_line(sh, message + "\n", tmp_path) == f"dracut: FATAL: {message}\n"


@pytest.mark.parametrize("error", [None, ""])
def test_a_runtime_that_left_no_line_still_stops_with_one(
    error: str | None, tmp_path: Path
) -> None:
    """No error file (the runtime died before writing it) or an empty one (it could not write
    it: memory ran out): the mount hook's own line, not an empty FATAL."""
    shown = emergency_line("sh", error, tmp_path)
    assert shown == "dracut: FATAL: bootc-live: the live root could not be set up\n"


@pytest.mark.parametrize(
    "root",
    [
        "bootc-live:http://10.0.2.2/root.oci?$(touch${IFS}pwned)",
        "bootc-live:/bootc-live/`touch pwned`",
        'bootc-live:block:LABEL="my disk":/root.oci',
        "bootc-live:/bootc-live/a\\",
    ],
)
def test_the_classic_init_evaluates_no_root_value(root: str, tmp_path: Path) -> None:
    """The classic init unexports $root with dracut's export_n, an eval of root="$root", before
    switch root: the cmdline hook's $root runs nothing there and stays set (rootok too)."""
    need(DRACUT_LIB.is_file() and DRACUT_UTIL.is_file(), "needs dracut's dracut-lib.sh")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/dracut-getarg").symlink_to(DRACUT_UTIL)
    hook = DRACUT / "90bootc-live/bootc-live-cmdline.sh"
    script = PRELUDE.replace('"$SCRIPT"', f'"{hook}"') + (
        'export_n root rflags fstype netroot NEWROOT\necho "$rootok $root"\n'
    )
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "PREFIX": "/nonexistent",
        "DRACUT_SYSTEMD": "1",
        "DEBUG_MEM_LEVEL": "0",
        "DRACUT_LIB": os.fspath(DRACUT_LIB),
        "BOOTC_LIVE_LIB": os.fspath(LIB),
        "CMDLINE": f"root={root}",
    }
    result = subprocess.run(
        ["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "1 bootc-live\n", "")
    assert sorted(os.listdir(tmp_path)) == ["bin"]
