"""The console watcher of `bootc-live vm` and the VM tests: its limits on a made-up clock, its
plumbing on stand-in commands (no QEMU)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from bootc_live import vm
from bootc_live.vm import INIT_STARTED, Console, VmConfig, kernel_command_line, watch
from signalled import gone, stopped


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_a_kernel_silent_before_init_is_a_stall() -> None:
    console = Console((), timeout=20, stall=1.0, start=0.0)
    assert console.overdue(1.0) is None
    console.feed("Linux version 6\n", 0.5)
    assert console.overdue(1.5) is None
    assert console.overdue(1.501) == "stalled"


def test_silence_after_init_is_not_a_stall() -> None:
    # Once the initramfs runs, slow work is ours to judge: the timeout does.
    console = Console((), timeout=3, stall=1.0, start=0.0)
    console.feed(f"{INIT_STARTED}\n", 0.5)
    assert console.overdue(2.999) is None
    assert console.overdue(3.0) == "timeout"


def test_the_marker_ends_the_watch() -> None:
    console = Console(("MARK",), timeout=20, stall=1.5, start=0.0)
    console.feed("Run /in", 0.1)
    console.feed("it as init process\n", 0.3)
    assert console.overdue(2.2) is None and console.ended is None
    console.feed("MARK ok\n", 2.3)
    assert console.ended == "marker" and console.found == {"MARK": "ok"}


def test_init_is_seen_however_the_console_splits_its_line() -> None:
    # A serial console under load arrives in small pieces: one byte at a time here.
    console = Console((), timeout=20, stall=1.0, start=0.0)
    line = f"[ 5.1] {INIT_STARTED}\n"
    for n, char in enumerate(line):
        console.feed(char, n * 0.02)
    assert console.in_init
    assert console.overdue(19.9) is None
    assert "".join(console.chunks) == line


def test_watch_judges_by_its_clock() -> None:
    """A silent command, and a clock at 100 s from its second reading: a stall at once."""
    readings = iter([0.0])
    result = watch(
        sh("exec sleep 30"), timeout=1000, echo=None, clock=lambda: next(readings, 100.0)
    )
    assert (result.ended, result.seconds, result.output) == ("stalled", 100.0, "")


def test_watch_times_out_by_its_clock() -> None:
    readings = iter([0.0])
    result = watch(sh("exec sleep 30"), timeout=5, echo=None, clock=lambda: next(readings, 5.0))
    assert (result.ended, result.seconds) == ("timeout", 5.0)


def test_watch_reads_the_marker_through_the_pipe() -> None:
    result = watch(
        sh("printf 'Run /in'; echo 'it as init process'; echo 'MARK ok'; exec sleep 30"),
        timeout=600,
        markers=("MARK",),
        echo=None,
    )
    assert (result.ended, result.markers) == ("marker", {"MARK": "ok"})
    assert result.output == f"{INIT_STARTED}\nMARK ok\n"


def test_watch_ends_when_the_guest_stops() -> None:
    panic = "Kernel panic - not syncing: x"
    panicked = watch(sh(f"echo '{INIT_STARTED}'; echo '{panic}'"), timeout=600, echo=None)
    assert (panicked.ended, panicked.output) == ("failure", f"{INIT_STARTED}\n{panic}\n")
    # Before /init nothing of ours has run: the kernel crashed.
    assert watch(sh(f"echo '{panic}'"), timeout=600, echo=None).ended == "crashed"
    halted = watch(sh("echo 'reboot: Power down'; exec sleep 30"), timeout=600, echo=None)
    assert halted.ended == "exit"


CRASH = (
    "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\nKernel panic - not syncing: Attempted to kill init"
)


def stand_in_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *boots: str) -> Path:
    """Artifacts `boot` accepts, and QEMU replaced by a command printing each of `boots` in
    turn (the last again once they run out); returns the file counting its runs."""
    for name in ("vmlinuz", "initrd.img", "cmdline.txt", "rootfs.img", "initrd-full.img"):
        (tmp_path / name).write_text("")
    runs = tmp_path / "runs"
    runs.write_text("")
    scripts = [f"printf '%s\\n' {shlex.quote(text)}" for text in boots]
    script = (
        'echo x >> "$1"; n=$(wc -l < "$1"); case $n in '
        + " ".join(f"{n}) {line} ;;" for n, line in enumerate(scripts[:-1], 1))
        + f" *) {scripts[-1]} ;; esac"
    )
    monkeypatch.setattr(vm, "qemu_argv", lambda *_: ["sh", "-c", script, "sh", str(runs)])
    return runs


def test_a_kernel_crash_before_init_is_booted_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QEMU's TCG now and then runs kernel code the kernel has just patched in its old form and
    the guest's kernel oopses before /init, before anything of ours: the boot is tried again,
    once, and says so."""
    runs = stand_in_qemu(monkeypatch, tmp_path, CRASH, f"{INIT_STARTED}\nMARK ok")
    result = vm.boot(VmConfig(tmp_path, accel="tcg"), timeout=60, markers=("MARK",), echo=None)
    assert (result.ended, result.markers) == ("marker", {"MARK": "ok"})
    assert runs.read_text().count("x") == 2
    said = capsys.readouterr().err
    assert said == (
        "bootc-live: the guest's kernel panicked before it ran /init (before bootc-live runs); "
        "booting it again\n"
    )


def test_a_kernel_that_cannot_boot_fails_after_one_more_try(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Twice a crash before /init: a failure (as a panic after it is), after two boots only."""
    runs = stand_in_qemu(monkeypatch, tmp_path, CRASH)
    result = vm.boot(VmConfig(tmp_path, accel="tcg"), timeout=60, markers=("MARK",), echo=None)
    assert result.ended == "failure" and "Attempted to kill init" in result.output
    assert runs.read_text().count("x") == 2
    # A failure once the initramfs runs is ours to report: not booted again.
    runs = stand_in_qemu(monkeypatch, tmp_path, f"{INIT_STARTED}\nKernel panic - not syncing: y")
    result = vm.boot(VmConfig(tmp_path, accel="tcg"), timeout=60, markers=("MARK",), echo=None)
    assert result.ended == "failure" and runs.read_text().count("x") == 1


def test_an_appended_root_boots_another_image_without_the_built_ones_pin(tmp_path: Path) -> None:
    """cmdline.txt pins the image built; `vm --append root=…` (another image) leaves out what
    names the built one, and keeps the rest."""
    (tmp_path / "cmdline.txt").write_text(
        "root=bootc-live:/bootc-live/image bootclabel=v1 bootc.digest=sha256:ab "
        "bootc.identity=example.com/app:v1 bootc.zram=1G\n"
    )
    url = "root=bootc-live:http://10.0.2.100/other.oci"
    other = kernel_command_line(VmConfig(tmp_path, append=f"{url} quiet"))
    assert other.endswith(f"rd.emergency=poweroff bootc.zram=1G {url} quiet")
    same = kernel_command_line(VmConfig(tmp_path, append="quiet"))
    assert "bootc.digest=sha256:ab bootc.identity=example.com/app:v1 bootc.zram=1G quiet" in same


def test_a_packed_root_at_a_url_keeps_its_pin(tmp_path: Path) -> None:
    """`vm --packed --serve packed.img`: the same file from a URL; only root= changes."""
    (tmp_path / "cmdline.txt").write_text("root=bootc-live:/bootc-live/image bootclabel=v1\n")
    (tmp_path / "cmdline-packed.txt").write_text(
        "root=bootc-live:packed:/bootc-live/packed.root bootc.packed.sha256=sha256:cd "
        "bootc.packed.image=sha256:ab\n"
    )
    url = "root=bootc-live:packed:http://10.0.2.100/packed.img"
    served = kernel_command_line(VmConfig(tmp_path, append=url, packed=True))
    assert served.endswith(
        "rd.emergency=poweroff bootc.packed.sha256=sha256:cd bootc.packed.image=sha256:ab " + url
    )
    appended = kernel_command_line(VmConfig(tmp_path, packed=True))
    assert appended.endswith(
        "rd.emergency=poweroff root=bootc-live:packed:/bootc-live/packed.root "
        "bootc.packed.sha256=sha256:cd bootc.packed.image=sha256:ab"
    )


def test_two_initrds_are_joined_outside_the_artifacts_and_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`vm --pxe` (and an appended packed root) joins initrd.img and the second initrd for QEMU
    in a private directory of its own, not in the artifacts (read-only to this user, or booted
    by another `vm` at once), and removes it when QEMU ends."""
    artifacts, scratch_dir = tmp_path / "artifacts", tmp_path / "tmp"
    artifacts.mkdir()
    scratch_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch_dir))
    for name, data in (("vmlinuz", b"k"), ("initrd.img", b"i" * 6), ("rootfs.img", b"r")):
        (artifacts / name).write_bytes(data)
    (artifacts / "initrd-full.img").write_bytes(b"")
    (artifacts / "cmdline.txt").write_text("root=bootc-live:/bootc-live/image\n")
    seen: list[tuple[str, bytes]] = []

    def qemu(config: VmConfig, initrd: Path, accel: str) -> list[str]:
        seen.append((os.fspath(initrd), initrd.read_bytes()))
        return ["sh", "-c", f"echo '{INIT_STARTED}'; echo 'MARK ok'"]

    monkeypatch.setattr(vm, "qemu_argv", qemu)
    for _ in range(2):
        config = VmConfig(artifacts, accel="tcg", pxe=True)
        result = vm.boot(config, timeout=60, markers=("MARK",), echo=None)
        assert result.ended == "marker"
    (first, joined), (second, _) = seen
    # The second one after 4 to 7 zeros (they end an lz4 legacy stream), 4-byte aligned.
    assert joined == b"i" * 6 + bytes(6) + b"r"
    assert Path(first).parent.parent == scratch_dir and first != second
    assert list(scratch_dir.iterdir()) == [] and len(list(artifacts.iterdir())) == 5


def test_a_qemu_that_fails_is_an_error_with_its_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QEMU refusing its arguments (a size it cannot take, KVM it cannot open) exits non-zero
    before any guest runs: `vm` says so and exits 1, instead of taking it for a guest that
    powered off. A guest that does power off makes QEMU exit 0 (watch_ends_when_the_guest…)."""
    from bootc_live import cli

    runs = stand_in_qemu(monkeypatch, tmp_path, "")
    script = f"printf 'qemu: cannot open /dev/kvm\\n'; echo x >> {shlex.quote(str(runs))}; exit 3"
    monkeypatch.setattr(vm, "qemu_argv", lambda *_: sh(script))
    result = vm.boot(VmConfig(tmp_path, accel="tcg"), timeout=60, echo=None)
    assert (result.ended, result.status) == ("qemu", 3)
    assert result.output == "qemu: cannot open /dev/kvm\n" and runs.read_text() == "x\n"
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: False)
    assert cli.main(["vm", str(tmp_path), "--accel", "tcg", "--timeout", "60"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "bootc-live: qemu-system-x86_64 failed (exit status 3): its message is above; check "
        "--mem, --accel and the artifacts"
    )


def test_a_qemu_killed_by_a_signal_is_named_by_it() -> None:
    # QEMU 7.2 aborts on an unusable KVM (an MSR assertion here): status -6.
    assert vm.Boot("", "qemu", 0.1, status=-6).verdict(60) == (
        "qemu-system-x86_64 failed (killed by SIGABRT): its message is above; check --mem, "
        "--accel and the artifacts"
    )


def test_a_guest_without_a_verdict_in_time_is_an_error_that_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bootc_live import cli

    stand_in_qemu(monkeypatch, tmp_path, "")
    monkeypatch.setattr(vm, "qemu_argv", lambda *_: sh(f"echo '{INIT_STARTED}'; exec sleep 30"))
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: False)
    assert cli.main(["vm", str(tmp_path), "--accel", "tcg", "--timeout", "0.5"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "bootc-live: no verdict after 0.5 s, so the guest was stopped (raise --timeout)"
    )


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--mem", "-5", "is not a size in MiB from 64 to 1048576"),
        ("--mem", "0", "is not a size in MiB from 64 to 1048576"),
        ("--mem", "abc", "is not a size in MiB from 64 to 1048576"),
        ("--timeout", "nan", "is not a number of seconds"),
        ("--timeout", "-1", "is not a number of seconds"),
        ("--timeout", "100000", "'100000' is not a number of seconds above 0 and below 86400"),
        ("--forward", "99999", "ports from 1 to 65535"),
        ("--forward", "5000:0", "ports from 1 to 65535"),
    ],
)
def test_vm_refuses_values_qemu_cannot_take_before_it_starts(
    tmp_path: Path, option: str, value: str, said: str
) -> None:
    from unpackers import bootc_live

    result = bootc_live("vm", str(tmp_path), f"{option}={value}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert said in result.stderr.splitlines()[-1], result.stderr


def test_a_comma_in_a_value_cannot_lift_the_network_restriction(tmp_path: Path) -> None:
    """A value QEMU reads as key=value,… (a path, the bridge's command with this Python's
    path) has its commas doubled: `tftp=DIR,restrict=off` would otherwise be an option of its
    own. Judged by QEMU itself: its monitor's view of the netdev (no guest is run)."""
    tftp = tmp_path / "t,restrict=off"
    tftp.mkdir()
    config = VmConfig(tmp_path, network=True, forwards=((80, 8080),), tftp=tftp)
    args = vm.network_args(config)
    netdev = args[args.index("-netdev") + 1]
    assert f"tftp={str(tftp).replace(',', ',,')}" in netdev
    argv = [vm.QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S"]
    argv += ["-monitor", "stdio", "-netdev", netdev]
    shown = subprocess.run(
        argv, input="info network\nquit\n", capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "n0: index=0,type=user,net=10.0.2.0,restrict=on" in shown, shown


def test_served_names_reach_the_guest_whatever_their_characters(tmp_path: Path) -> None:
    """`vm --serve FILE`: the URL on the kernel command line names FILE percent-encoded, and
    the runtime's own parser and client get FILE's bytes back from vm.serve."""
    from bootc_live.runtime import cmdline, http

    (tmp_path / "cmdline.txt").write_text("root=bootc-live:/bootc-live/image\n")
    names = ["root.oci", "my root.oci", "root#1.oci", "räder?.oci", "100%.oci", "a,b=c"]
    names.append(os.fsdecode(b"\xffroot.oci"))  # not UTF-8
    for name in names:
        served = tmp_path / "served" / name
        served.parent.mkdir(exist_ok=True)
        served.write_bytes(b"DATA " + os.fsencode(name))
        append = f"root=bootc-live:{vm.served_url(served)}"
        line = kernel_command_line(VmConfig(tmp_path, append=append, embedded=False))
        spec = cmdline.parse(cmdline.split(line))
        assert spec.image is not None
        with vm.serve(served) as port:
            url = spec.image.location.replace(vm.GUEST_SERVER, f"127.0.0.1:{port}", 1)
            client = http.Client(url, http.Policy(), lambda _: None)
            answer = client.open(0, None, http.Retrier(client.url, http.Policy(), print))
            assert answer.resp.read() == served.read_bytes(), name
            answer.close()
        served.unlink()


def test_kvm_is_not_chosen_for_a_user_who_cannot_open_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The probe's answer is kept for the machine (/run): another user without access to
    /dev/kvm gets TCG, not a QEMU that fails to open it."""
    cache = tmp_path / "kvm-usable"
    cache.write_text("yes\n")
    monkeypatch.setattr(vm, "KVM_PROBE_CACHE", cache)
    real_access = os.access
    monkeypatch.setattr(
        vm.os, "access", lambda p, m: False if p == "/dev/kvm" else real_access(p, m)
    )
    assert vm.choose_accel("auto") == "tcg"
    monkeypatch.setattr(
        vm.os, "access", lambda p, m: True if p == "/dev/kvm" else real_access(p, m)
    )
    assert vm.choose_accel("auto") == "kvm"


def test_an_interactive_guest_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    """By SIGTERM first: QEMU then gives the terminal back as it found it (after a SIGKILL
    it stays raw, without echo); the stand-in says when its TERM handler ran."""
    pid, restored = tmp_path / "pid", tmp_path / "restored"
    script = f"sleep 30 & trap 'kill $!; echo yes > {restored}; exit 0' TERM; echo $$ > {pid}; wait"
    result = vm.run_interactive(sh(script), 1.0)
    assert result.ended == "timeout"
    assert result.verdict(1.0) == "no verdict after 1 s, so the guest was stopped (raise --timeout)"
    assert gone(pid) and restored.read_text() == "yes\n"


def test_an_interactive_guest_goes_with_the_command(tmp_path: Path) -> None:
    """SIGTERM to `vm` (its terminal closed, a service stopped) stops QEMU with it."""
    pid, ready = tmp_path / "pid", tmp_path / "ready"
    command = f"echo $$ > {pid}; touch {ready}; exec sleep 60"
    stopped(f"from bootc_live import vm; vm.run_interactive(['sh', '-c', {command!r}], 120)", ready)
    assert gone(pid)


def test_only_the_files_a_boot_loads_are_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """From the network: initrd.img alone; a packed root appended: packed.img, not rootfs.img."""
    (tmp_path / "cmdline.txt").write_text("root=bootc-live:/bootc-live/image\n")
    (tmp_path / "cmdline-packed.txt").write_text("root=bootc-live:packed:/bootc-live/p\n")
    for name in ("vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(vm, "qemu_argv", lambda *_: sh(f"echo '{INIT_STARTED}'; echo 'MARK ok'"))
    for config in (
        VmConfig(tmp_path, embedded=False),
        VmConfig(tmp_path, packed=True, embedded=False),
    ):
        assert vm.boot(config, timeout=60, markers=("MARK",), echo=None).ended == "marker"
    with pytest.raises(vm.VmError, match=r"packed\.img is missing"):
        vm.boot(VmConfig(tmp_path, packed=True), timeout=60, echo=None)
    (tmp_path / "initrd-full.img").mkdir()
    with pytest.raises(vm.VmError, match=r"initrd-full\.img is not a file"):
        vm.boot(VmConfig(tmp_path), timeout=60, echo=None)


def test_one_guest_port_is_forwarded_once(tmp_path: Path) -> None:
    from unpackers import bootc_live

    served = tmp_path / "root.oci"
    served.write_bytes(b"x")
    for args, by in (
        (["--forward", "80:8080", "--forward", "80:9090"], "another --forward"),
        (["--serve", str(served), "--forward", "80:8080"], "--serve"),
    ):
        result = bootc_live("vm", str(tmp_path), *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1].endswith(
            f"--forward 80:{args[-1].split(':')[1]}: guest port 80 is forwarded already, by {by}; "
            "give each guest port one --forward (--serve takes port 80)"
        ), result.stderr


def test_forward_without_a_root_is_one_line_before_qemu(tmp_path: Path) -> None:
    """`vm --forward` boots initrd.img alone, and cmdline.txt's (cmdline-packed.txt's) root=
    names the image of the initrd left out: the guest booted and failed minutes later. A root=
    of its own is asked for, as with --disk (nothing is read: DIR has no artifacts)."""
    from unpackers import bootc_live

    for args in (
        ["--forward", "5000"],
        ["--forward", "5000:8080", "--packed"],
        ["--forward", "5000", "--append", "rd.debug bootc.quiet"],
    ):
        result = bootc_live("vm", str(tmp_path), *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1].startswith(
            "bootc-live: --forward boots initrd.img alone: the image it reaches needs its root=; "
            "add --append root=bootc-live:docker://10.0.2.100:PORT/NAME:TAG"
        ), result.stderr


def test_pxe_with_an_image_from_elsewhere_is_one_line_before_qemu(tmp_path: Path) -> None:
    """`vm --pxe` with --serve, --forward or --disk was accepted and did nothing: they boot
    initrd.img alone, rootfs.img never loaded. Refused, naming the two (nothing is read: DIR
    has no artifacts)."""
    from unpackers import bootc_live

    served = tmp_path / "root.oci"
    served.write_bytes(b"x")
    root = ["--append", "root=bootc-live:block:LABEL=x:/root.oci"]
    for args, other in (
        (["--serve", str(served)], "--serve"),
        (["--forward", "5000", *root], "--forward"),
        (["--disk", str(served), *root], "--disk"),
    ):
        result = bootc_live("vm", str(tmp_path), "--pxe", *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"bootc-live: --pxe loads rootfs.img as a second initrd, and {other} boots "
            f"initrd.img alone; leave --pxe out, or {other}"
        ), result.stderr


def test_a_command_line_file_that_is_not_utf8_is_passed_on_as_its_bytes(tmp_path: Path) -> None:
    """cmdline.txt is the user's to edit: saved in Latin-1, `vm` ended in a UnicodeDecodeError
    traceback. Its bytes go to QEMU as they are (the kernel's command line is bytes)."""
    (tmp_path / "cmdline.txt").write_bytes(b"root=bootc-live:/bootc-live/image note=caf\xe9\n")
    line = kernel_command_line(VmConfig(tmp_path, append="rd.debug"))
    assert os.fsencode(line).endswith(b"root=bootc-live:/bootc-live/image note=caf\xe9 rd.debug")


def test_serve_with_a_root_of_its_own_is_one_line_before_qemu(tmp_path: Path) -> None:
    """`vm --serve FILE --append root=…`: the root= appended came after --serve's and won (the
    last one does), so FILE was served to a guest that never asked for it."""
    from unpackers import bootc_live

    served = tmp_path / "root.oci"
    served.write_bytes(b"x")
    for root in ("root=bootc-live:docker://10.0.2.100:5000/x", "rd.debug root=/dev/vda"):
        result = bootc_live("vm", str(tmp_path), "--serve", str(served), "--append", root)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == (
            "bootc-live: --serve boots the file it serves, and --append's root= another image; "
            "give one of them"
        ), result.stderr


def test_disks_are_attached_read_only_whatever_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vm --disk FILE`: judged by QEMU's monitor (`info block`, no guest run), the drive is
    FILE itself and read-only, a comma in its name included (`,readonly=off` would otherwise
    be an option of its own)."""
    disk = tmp_path / "d,readonly=off"
    disk.write_bytes(b"\0" * 65536)
    (tmp_path / "nbd:x.img").write_bytes(b"\0" * 65536)  # relative, it would be a protocol
    monkeypatch.chdir(tmp_path)
    args = vm.disk_args((disk, Path("nbd:x.img")))
    drive = args[args.index("-drive") + 1]
    argv = [vm.QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S"]
    argv += ["-monitor", "stdio", "-drive", drive, "-drive", args[5]]
    shown = subprocess.run(
        argv,
        input="info block\nquit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert re.search(
        rf"^disk1 \(#block[0-9]+\): {re.escape(str(Path.cwd()))}/nbd:x.img", shown, re.M
    )
    assert re.search(
        rf"^disk0 \(#block[0-9]+\): {re.escape(str(disk))} \(raw, read-only\)$", shown, re.M
    ), shown
    assert args[2:4] == ["-device", "virtio-blk-pci,drive=disk0"]


def test_a_missing_disk_is_one_line(tmp_path: Path) -> None:
    from unpackers import bootc_live

    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    root = "root=bootc-live:block:LABEL=x:/root.oci"
    hint = (
        "--disk boots initrd.img alone: the image on the disk needs its root=; add --append "
        "root=bootc-live:block:LABEL=…:/PATH (an oci-archive or OCI layout on the disk; a "
        "packed root cannot be booted from a disk)"
    )
    for args, said in (
        (["--disk", f"{tmp_path}/none.img"], f"--disk {tmp_path}/none.img: no such file"),
        (["--disk", str(tmp_path), "--append", root], f"--disk {tmp_path}: not a file or block"),
        (["--disk", str(disk)], hint),
        (["--disk", str(disk), "--packed", "--append", root], hint),
    ):
        result = bootc_live("vm", str(tmp_path), *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"bootc-live: {said}"), result.stderr
