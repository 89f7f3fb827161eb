"""Messages for the place they appear: the same failure names kernel arguments at boot and host
flags on the host, through one table (runtime.errors.BOOT_TO_HOST); no internal command line
unless --debug; --kver failures list the kernels there are."""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import socket
import tarfile
import time
from pathlib import Path

import pytest

from bootc_live import build, cli
from bootc_live.runtime import cmdline, http
from bootc_live.runtime.errors import BOOT_TO_HOST, BootcLiveError, for_host
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.run import CommandError, run
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from imagegen import build_layout, d, f, layer_tar, write_oci_archive
from unpackers import REPO, assert_clean_failure, bootc_live, need_root_and

# The runtime modules whose messages reach the host's commands.
HOST_REACHABLE = ("registry", "http", "oci", "sources", "blobs", "unpack", "decompress", "apply")
KERNEL_ARGUMENT = re.compile(r"(?<![\w.-])(bootc\.[a-z][\w.-]*[a-z]|bootclabel=|root=)")


def host_options() -> set[str]:
    """Every option string of every host command."""
    found = set()
    for action in cli.parser()._subparsers._group_actions:  # type: ignore[union-attr]
        for sub in action.choices.values():  # type: ignore[union-attr]
            for option in sub._actions:
                found.update(option.option_strings)
    return found


def test_the_table_maps_real_kernel_arguments_to_real_host_flags() -> None:
    reference = cmdline.reference()
    options = host_options()
    for boot, host, _ in BOOT_TO_HOST:
        if " " not in boot:
            assert f"`{boot.rstrip('=')}" in reference, f"{boot} is not a kernel argument"
        for flag in re.findall(r"--[\w-]+", host):
            assert flag in options, f"{host} names no host option"
        assert not KERNEL_ARGUMENT.search(host)


def runtime_strings(module: str) -> list[str]:
    """The string constants of a runtime module (f-strings' literal parts included)."""
    tree = ast.parse((REPO / "src/bootc_live/runtime" / f"{module}.py").read_text())
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


@pytest.mark.parametrize("module", HOST_REACHABLE)
def test_every_kernel_argument_a_host_command_can_say_has_a_host_equivalent(module: str) -> None:
    """A new message naming a kernel argument fails here until the table has its host flag."""
    said = [s for s in runtime_strings(module) if KERNEL_ARGUMENT.search(s)]
    assert said or module not in ("registry", "http", "oci")  # they do name some
    for text in said:
        if text.startswith(("#", "\n")) or "\n" in text.strip():
            continue  # a docstring, not a message
        assert not KERNEL_ARGUMENT.search(for_host(text)), (
            f"{module}: {text!r} → {for_host(text)!r}"
        )


def two_tags(tmp_path: Path) -> Path:
    layout = tmp_path / "img"
    build_layout(layout, [layer_tar([f("a", b"a")])], tag="a", platform=("linux", "arm64"))
    build_layout(layout, [layer_tar([f("b", b"b")])], tag="b", platform=("linux", "arm64"))
    return layout


def test_a_label_that_is_not_there_at_boot_and_on_the_host(tmp_path: Path) -> None:
    layout = two_tags(tmp_path)
    with pytest.raises(BootcLiveError) as boot:
        resolve(LayoutSource(str(layout)), label="c")
    assert (
        boot.value.line() == f"oci:{layout} has no image tagged 'c' (tags: a, b); fix bootclabel="
    )
    host = assert_clean_failure(bootc_live("inspect", f"oci:{layout}:c"))
    assert host.strip() == (
        f"bootc-live: oci:{layout} has no image tagged 'c' (tags: a, b); fix the :TAG of SOURCE"
    )


def test_a_platform_that_is_not_there_at_boot_and_on_the_host(tmp_path: Path) -> None:
    layout = two_tags(tmp_path)
    amd64 = Platform("linux", "amd64")
    with pytest.raises(BootcLiveError) as boot:
        resolve(LayoutSource(str(layout)), label="a", platform=amd64)
    assert boot.value.hint == "choose one with bootc.platform=linux/arm64"
    host = bootc_live("inspect", f"oci:{layout}:a", "--platform", "linux/amd64")
    assert (
        assert_clean_failure(host)
        .strip()
        .endswith(
            "has no image for platform linux/amd64 (offers: linux/arm64); choose one with "
            "--platform linux/arm64"
        )
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_registry_that_does_not_answer_fails_within_seconds_on_the_host() -> None:
    port = closed_port()
    with pytest.raises(BootcLiveError) as boot:  # at boot: the kernel argument
        client = http.Client(f"https://127.0.0.1:{port}/v2/", http.Policy(retries=0), print)
        client.open(0, None, http.Retrier(client.url, client.policy, print))
    assert boot.value.hint == "check the server and the network, or raise bootc.retries="
    start = time.monotonic()
    host = bootc_live("inspect", f"docker://127.0.0.1:{port}/my/os:v1", timeout=60)
    took = time.monotonic() - start
    said = assert_clean_failure(host)
    assert took < 15, f"took {took:.0f}s"
    assert said.splitlines()[-1].endswith(
        "giving up after 3 retries; check the server and the network, or raise --retries N"
    ), said
    assert "bootc." not in said
    patient = bootc_live("inspect", f"docker://127.0.0.1:{port}/x", "--retries", "1")
    assert "giving up after 1 retries" in assert_clean_failure(patient)


def test_a_failed_command_is_named_not_quoted() -> None:
    with pytest.raises(CommandError) as err:
        run(["sh", "-c", "echo the reason >&2; exit 3", "internal-argument"])
    assert str(err.value) == "sh failed: the reason"
    assert "internal-argument" in err.value.command


def test_debug_shows_the_commands_run(tmp_path: Path) -> None:
    garbage = tmp_path / "saved.tar"
    garbage.write_bytes(b"not an archive" * 100)
    plain = assert_clean_failure(bootc_live("inspect", f"docker-archive:{garbage}"))
    assert plain.startswith(f"bootc-live: docker-archive:{garbage}: skopeo cannot read it (")
    assert "+ skopeo" not in plain and "--dest-oci-accept-uncompressed-layers" not in plain
    debug = bootc_live("--debug", "inspect", f"docker-archive:{garbage}")
    assert debug.returncode == 1
    assert (
        "+ skopeo --insecure-policy copy --quiet --remove-signatures "
        "--dest-oci-accept-uncompressed-layers "
        "docker-archive:" in debug.stderr
    )


def test_kver_failures_list_the_kernels_there_are(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/modules/6.1.0-9-amd64").mkdir(parents=True)
    (root / "usr/lib/modules/6.1.0-9-amd64/vmlinuz").write_bytes(b"kernel")
    with pytest.raises(BootcLiveError) as err:
        build.find_kernel(root, "6.2.0-1-amd64")
    assert err.value.line() == (
        "the image has no kernel 6.2.0-1-amd64 (it has: 6.1.0-9-amd64; looked in "
        "/usr/lib/modules/KVER/vmlinuz, /lib/modules/KVER/vmlinuz, /boot/vmlinuz-KVER); give "
        "one of those to --kver, or leave --kver out for the highest"
    )
    with pytest.raises(BootcLiveError) as err:
        build.host_kernel("0.0.0-not-here")
    there = build.host_kernels()
    assert str(err.value) == (
        f"--kver 0.0.0-not-here: this host has no such kernel (it has: "
        f"{', '.join(there) or 'none'}; looked for /boot/vmlinuz-KVER with /lib/modules/KVER)"
    )
    if there:  # without --kver, --host takes the highest kernel the host has
        assert build.host_kernel(None) in there


def test_podmans_full_names_and_bare_tags_in_a_layout(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    a = build_layout(layout, [layer_tar([f("a", b"a")])], tag="localhost/a:latest")
    b = build_layout(layout, [layer_tar([f("b", b"b")])], tag="localhost/b:v2")
    # The path ends at the first colon: the rest is the name, colons and all.
    shown = bootc_live("inspect", f"oci:{layout}:localhost/b:v2")
    assert f"image     {b.manifest_digest}" in shown.stdout, shown.stderr
    # A bare tag names the one full name with that tag part ...
    shown = bootc_live("inspect", f"oci:{layout}:latest")
    assert f"image     {a.manifest_digest}" in shown.stdout, shown.stderr
    # ... and nothing when two have it, which is said.
    build_layout(layout, [layer_tar([f("c", b"c")])], tag="localhost/c:latest")
    said = assert_clean_failure(bootc_live("inspect", f"oci:{layout}:latest"))
    assert said.strip() == (
        f"bootc-live: oci:{layout} has 2 images tagged 'latest' under different names "
        "(localhost/a:latest, localhost/c:latest); name one in full with the :TAG of SOURCE"
    )


def test_timeout_bounds_a_registry_that_accepts_and_says_nothing() -> None:
    with socket.socket() as mute:  # connections queue in the backlog; nobody answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        start = time.monotonic()
        said = assert_clean_failure(
            bootc_live(
                "inspect", f"docker://127.0.0.1:{port}/x", "--timeout", "1", "--retries", "0"
            )
        )
        took = time.monotonic() - start
    assert "connection failed (stalled); giving up after 0 retries" in said, said
    assert took < 10, f"took {took:.0f}s"


def test_an_image_without_dracut_says_what_it_lacks(tmp_path: Path) -> None:
    """Checked before dracut runs (dracut.check_userland): not dracut's own words, "chroot:
    failed to run command", after the whole root was unpacked."""
    need_root_and("unshare", "chroot")
    layout = tmp_path / "img"
    kernel = [d("usr/lib/modules/6.1.0-9-amd64"), f("usr/lib/modules/6.1.0-9-amd64/vmlinuz", b"k")]
    build_layout(layout, [layer_tar(kernel)], tag="v1")
    out = tmp_path / "out"
    # --pack none: the image has no kernel config to choose a packed root's format by.
    said = assert_clean_failure(
        bootc_live("build", f"oci:{layout}:v1", "-o", str(out), "--pack", "none")
    )
    last = said.strip().splitlines()[-1]
    assert last == (
        "bootc-live: the image has no dracut and no python3: bootc-live build makes the "
        "initramfs with the image's own dracut and python3 (docs/live-ready.md); install "
        "dracut and python3 in the image (Debian: dracut-core python3), or build with --host"
    ), said
    assert "unshare" not in said and "--add" not in said  # not the internal command line
    assert not out.exists() and not (tmp_path / "out.new").exists()


def test_a_docker_archive_given_as_an_oci_archive_at_boot(tmp_path: Path) -> None:
    saved = tmp_path / "saved.tar"
    with tarfile.open(saved, "w") as tar:  # what podman save writes by default, in short
        data = json.dumps([{"Config": "c.json", "RepoTags": ["localhost/x:latest"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BootcLiveError) as boot:
        ArchiveSource(str(saved))
    assert boot.value.line() == (
        f"oci-archive:{saved} is a docker-archive, not an oci-archive; save it with podman save "
        "--format oci-archive, or convert it with bootc-live pull docker-archive:PATH -o "
        "oci-archive:FILE"
    )


def test_the_progress_interval_from_the_environment_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BOOTC_LIVE_PROGRESS_SECONDS=1e10 (or inf) made the ticker thread die in a traceback
    (a wait longer than threading takes); nan and words are the default."""
    from bootc_live import progress

    for value, expected in (("1e10", 3600.0), ("inf", 3600.0), ("nan", 2.0), ("x", 2.0)):
        monkeypatch.setenv("BOOTC_LIVE_PROGRESS_SECONDS", value)
        assert progress.interval(2.0) == expected, value
    monkeypatch.setenv("BOOTC_LIVE_PROGRESS_SECONDS", "-3")
    assert progress.interval(2.0) == 0.01


def test_every_flag_a_host_message_names_is_an_option_of_each_command_reading_an_image() -> None:
    """A hint on the host names host flags (for_host): each must be there to follow, in every
    command that reads an image (build said "choose one with --platform" and had none)."""
    flags = {host.split()[0] for _, host, _ in BOOT_TO_HOST if host.startswith("--")}
    flags.discard("--compress")  # EROFS's compressor: only `erofs` names it
    commands = next(
        a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    readers = {n: p for n, p in commands.items() if any(a.dest == "source" for a in p._actions)}
    assert {"build", "inspect", "pull", "unpack", "erofs", "pack"} <= set(readers)
    for name, parser in readers.items():
        options = {o for a in parser._actions for o in a.option_strings}
        # push-packed reads docker://REF only: its image has a registry name, and --identity
        # is named (trust.IDENTITY_HINT) only of an image without one.
        needed = flags - {"--identity"} if name == "push-packed" else flags
        assert needed <= options, (name, sorted(needed - options))


def test_oci_given_a_file_or_nothing_says_which(tmp_path: Path) -> None:
    """oci: on the oci-archive build writes (root.oci), or on a path that is not there: not
    "is not an OCI image layout (no index.json)", as of a directory that lacks one."""
    build_layout(tmp_path / "img", [layer_tar([f("a", b"a")])])
    archive = write_oci_archive(tmp_path / "img", tmp_path / "root.oci")
    said = assert_clean_failure(bootc_live("inspect", f"oci:{archive}"))
    assert said.strip() == (
        f"bootc-live: {archive} is a file, not a directory; use oci-archive:PATH for an oci-archive"
    )
    said = assert_clean_failure(bootc_live("inspect", f"oci:{tmp_path / 'gone'}"))
    assert said.strip() == f"bootc-live: {tmp_path / 'gone'}: no such directory"
