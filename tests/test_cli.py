"""The host command line: inspect, and errors as one line plus a hint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootc_live import build as build_mod
from imagegen import add_nested_index, build_layout, d, f, hard, layer_tar, wh, write_oci_archive
from unpackers import REPO, assert_clean_failure, bootc_live, need, need_root_and


def test_inspect_shows_layers_sizes_kernels_and_ram(tmp_path: Path) -> None:
    layers = [
        layer_tar(
            [
                d("usr/lib/modules/6.1.0-1-amd64"),
                f("usr/lib/modules/6.1.0-1-amd64/vmlinuz", b"k1"),
                f("usr/lib/modules/6.2.0-1-amd64/vmlinuz", b"k2"),
                f("data", bytes(20_000_000)),
            ]
        ),
        layer_tar([wh("usr/lib/modules/6.2.0-1-amd64")]),
    ]
    info = build_layout(tmp_path / "img", layers, tag="v1")
    archive = write_oci_archive(tmp_path / "img", tmp_path / "img.tar")
    result = bootc_live("inspect", f"oci-archive:{archive}:v1", "--measure")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"image     {info.manifest_digest}" in out
    assert "platforms linux/amd64" in out
    assert f"layer 1/2 {info.layer_digests[0]}" in out and "layer 2/2" in out
    assert "kernels   6.1.0-1-amd64\n" in out  # 6.2 was whited out by layer 2
    # The planner's figure for each root mode, from the sizes measured while reading.
    # zram's from the files as zstd pages: the 20 MB of zeros take none.
    assert (
        "RAM       measured 19 MiB unpacked (19 MiB in a tmpfs), 0 MiB as zstd pages (zram); "
        "what each root mode needs" in out
    )
    lines = re.findall(r"^  (\w+) +about (\d+) MiB(?:, (\d+) MiB once booted)?: (.*)$", out, re.M)
    assert {mode for mode, _, _, _ in lines} == {"tmpfs", "zram", "erofs"}, out
    # zram first: its files take no zstd page at all (a ratio of the gzip size would say more).
    assert [(mode, option) for mode, _, _, option in lines if mode != "tmpfs"] == [
        ("zram", "bootc.zram=48M bootc.zram.algorithm=zstd"),
        ("erofs", "bootc.live.erofs=1 bootc.live.erofs.compress=lz4hc"),
        ("erofs", "bootc.live.erofs=1"),
    ]
    peaks = [int(peak) for _, peak, _, _ in lines]
    assert peaks == sorted(peaks)  # smallest first
    # Plain EROFS holds the unpacked tree and its image at the peak, then only the image.
    erofs = lines[-1]
    assert int(erofs[1]) > int(erofs[2])


def test_inspect_plans_zram_from_the_figure_build_recorded(tmp_path: Path) -> None:
    """What the boot plans with: an image built by bootc-live build carries its zram figure,
    and inspect shows that one rather than its own measure."""
    build_layout(tmp_path / "img", [layer_tar([f("data", bytes(range(256)) * 4000)])], tag="v1")
    index = json.loads((tmp_path / "img/index.json").read_text())
    recorded = 300 << 20
    index["manifests"][0]["annotations"]["org.bootc-live.zram-zstd-bytes"] = str(recorded)
    (tmp_path / "img/index.json").write_text(json.dumps(index))
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", "--measure")
    assert result.returncode == 0, result.stderr
    assert "MiB in a tmpfs), 300 MiB as zstd pages (zram); what each root mode" in result.stdout
    zram = re.search(r"^  zram +about (\d+) MiB", result.stdout, re.M)
    assert zram and int(zram.group(1)) >= 300 * 1.08, result.stdout


def test_inspect_shows_the_packed_root_build_recorded(tmp_path: Path) -> None:
    """Its size known before any download: next to the unpacked and zram figures, and as a
    mode of its own (the packed root and its overlays' uppers), in order of the RAM it needs."""
    build_layout(tmp_path / "img", [layer_tar([f("data", bytes(range(256)) * 4000)])], tag="v1")
    index = json.loads((tmp_path / "img/index.json").read_text())
    index["manifests"][0]["annotations"].update(
        {
            "org.bootc-live.zram-zstd-bytes": str(300 << 20),
            "org.bootc-live.packed-bytes": str(170 << 20),
            "org.bootc-live.packed-sha256": "sha256:" + "ab" * 32,
            "org.bootc-live.packed-format": "squashfs:xz",
        }
    )
    (tmp_path / "img/index.json").write_text(json.dumps(index))
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1")
    assert result.returncode == 0, result.stderr
    assert (
        "MiB unpacked (from the gzip trailers), 300 MiB as zstd pages (zram), packed: 170.0 MiB "
        "(squashfs:xz); what each root mode needs" in result.stdout
    )
    lines = re.findall(r"^  (\w+) +about (\d+) MiB", result.stdout, re.M)
    assert ("packed", "202") in lines, result.stdout
    assert [int(peak) for _, peak in lines] == sorted(int(peak) for _, peak in lines)
    assert (
        f"  packed about 202 MiB: root=bootc-live:packed:… bootc.packed.sha256=sha256:{'ab' * 32} "
        "(cmdline-packed.txt)\n"
    ) in result.stdout


def test_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    result = bootc_live("inspect", f"oci:{tmp_path}")
    assert_clean_failure(result)
    assert result.stderr.strip() == (
        f"bootc-live: {tmp_path} is not an OCI image layout (no index.json); give the directory "
        "that holds oci-layout, index.json and blobs/"
    )
    result = bootc_live("inspect", "docker-daemon:x")
    assert (
        "podman and buildah keep images in containers-storage: use oci-archive:PATH[:REF], "
        "oci:DIR[:REF], docker-archive:PATH[:REF], dir:DIR, containers-storage:[STORE]NAME, "
        "docker://REF "
        "or an http(s):// URL"
    ) in assert_clean_failure(result)


def test_inspect_reads_no_layer_unless_asked_to_measure(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "img", [layer_tar([f("data", bytes(4096))])], tag="v1")
    for digest in info.layer_digests:  # inspect must not need them
        (tmp_path / "img/blobs/sha256" / digest.partition(":")[2]).unlink()
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1")
    assert result.returncode == 0, result.stderr
    assert f"layer 1/1 {info.layer_digests[0]}  0.0 MiB compressed\n" in result.stdout
    assert "kernels   not read (--measure reads the layers)\n" in result.stdout
    assert "no zram figure recorded (--measure measures one)" in result.stdout
    measured = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", "--measure")
    assert f"blob {info.layer_digests[0]} is missing" in assert_clean_failure(measured)


def test_inspect_says_which_blobs_are_uncompressed(tmp_path: Path) -> None:
    """A plain tar layer (buildah commit -D) is not "compressed"; the total says what it adds."""
    tars = [layer_tar([f("a", bytes(4096))]), layer_tar([f("b", bytes(4096))])]
    for name, compression, total in (
        ("plain", "none", "MiB uncompressed"),
        ("mixed", ["none", "gzip"], "MiB of blobs, some uncompressed"),
        ("gzip", "gzip", "MiB compressed"),
    ):
        build_layout(tmp_path / name, tars, compression=compression, tag="v1")
        result = bootc_live("inspect", f"oci:{tmp_path / name}:v1")
        assert result.returncode == 0, result.stderr
        words = [line.split("  ")[1] for line in result.stdout.splitlines()
                 if line.startswith("layer ")]  # fmt: skip
        kinds = [compression] * 2 if isinstance(compression, str) else compression
        assert words == [
            "0.0 MiB uncompressed" if kind == "none" else "0.0 MiB compressed" for kind in kinds
        ], result.stdout
        assert any(
            line.startswith("total ") and line.endswith(total)
            for line in result.stdout.splitlines()
        ), result.stdout


def test_inspect_measure_names_a_bad_layer_as_unpack_does(tmp_path: Path) -> None:
    """A byte changed in an uncompressed blob (its tar header broken): the digest mismatch of
    that layer, not an unlabelled 'tar header checksum mismatch'; a layer that is no tar but
    matches its digest: that layer named. The same line as unpack's, nothing left behind."""
    good = layer_tar([f("a", b"a" * 3000)])
    cases = {
        "changed": (layer_tar([f("b", b"b" * 3000)]), 600),
        "no-tar": (b"not a tar " * 200, None),
    }
    for name, (layer, flip) in cases.items():
        info = build_layout(tmp_path / name, [good, layer], compression="none", tag="v1")
        if flip is not None:
            blob = tmp_path / name / "blobs/sha256" / info.layer_digests[1].partition(":")[2]
            data = bytearray(blob.read_bytes())
            data[flip] ^= 0xFF
            blob.write_bytes(bytes(data))
        measured = assert_clean_failure(
            bootc_live("inspect", f"oci:{tmp_path / name}:v1", "--measure")
        )
        unpacked = assert_clean_failure(
            bootc_live("unpack", f"oci:{tmp_path / name}:v1", str(tmp_path / f"{name}-root"))
        )
        assert measured == unpacked, (measured, unpacked)
        assert measured.startswith(f"bootc-live: layer 2/2 {info.layer_digests[1][:19]}"), measured
        reason = "digest mismatch" if flip is not None else "tar header checksum mismatch"
        assert reason in measured
        assert not (tmp_path / f"{name}-root").exists()


def test_a_ref_that_no_image_can_be_named_is_refused_before_anything_is_read(
    tmp_path: Path,
) -> None:
    """SOURCE's :REF follows the image-spec's reference-name grammar, as bootclabel= does."""
    result = bootc_live("inspect", f"oci-archive:{tmp_path / 'none.tar'}:bad..name")
    said = assert_clean_failure(result)
    assert "bad..name in oci-archive:PATH:REF: expected a reference name" in said, said
    assert "fix REF" in said


def test_build_replaces_no_directory_it_did_not_write(tmp_path: Path) -> None:
    """-o names where a build's artifacts go; a rebuild replaces only a build's own output."""
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"keep")
    (tmp_path / "notes").write_text("keep")
    source = f"oci:{tmp_path / 'none'}:v1"  # never read: the output is checked first
    cases = [
        (("-o", "photos"), f"{mine} is not a bootc-live build's output: it holds holiday.jpg"),
        (("-o", str(tmp_path)), f"{tmp_path} is not a bootc-live build's output: it holds notes"),
        (("-o", "notes"), f"{tmp_path / 'notes'} exists and is not a directory bootc-live"),
        (("-o", "/"), "/ cannot be an output directory"),
    ]
    for option, reason in cases:
        said = assert_clean_failure(bootc_live("build", source, *option, cwd=tmp_path))
        assert len(said.splitlines()) == 1 and reason in said, (option, said)
    # DIR.new and DIR.old are replaced too: they must be a build's (a leftover work dir is).
    (tmp_path / "art.new").mkdir()
    (tmp_path / "art.new" / "diary.txt").write_text("keep")
    said = assert_clean_failure(bootc_live("build", source, "-o", "art", cwd=tmp_path))
    assert f"{tmp_path / 'art.new'} is not a bootc-live build's output: it holds diary" in said
    assert sorted(os.listdir(tmp_path)) == ["art.new", "notes", "photos"]
    assert os.listdir(mine) == ["holiday.jpg"] and (mine / "holiday.jpg").read_bytes() == b"keep"
    # What a build wrote, and the work directory an interrupted one left, may be replaced.
    (tmp_path / "art.new" / "diary.txt").unlink()
    (tmp_path / "art.new" / "bootc-live-build.x1y2").mkdir()
    (tmp_path / "art.new" / "initrd.img").write_bytes(b"")
    said = assert_clean_failure(bootc_live("build", source, "-o", "art", cwd=tmp_path))
    assert f"{tmp_path / 'none'}: no such directory" in said, said  # past the output check


def test_a_path_the_host_refuses_is_one_line(tmp_path: Path) -> None:
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    source = f"oci:{tmp_path / 'img'}:v1"
    (tmp_path / "empty").mkdir()
    cases = [
        (("unpack", source, "/proc/nope/x"), "/proc/nope: No such file or directory; check the"),
        (("pull", source, "-o", f"oci-archive:{tmp_path / 'no/x.tar'}"), "no is not a directory"),
        (("pull", source, "-o", f"oci-archive:{tmp_path / 'empty'}"), "empty exists; give a new"),
    ]
    for argv, reason in cases:
        said = assert_clean_failure(bootc_live(*argv))
        assert len(said.splitlines()) == 1 and reason in said, (argv, said)
    assert sorted(os.listdir(tmp_path)) == ["empty", "img"] and not os.listdir(tmp_path / "empty")


def test_a_failed_unpack_removes_a_tree_deeper_than_python_recurses(tmp_path: Path) -> None:
    deep = [d("/".join(["d"] * (level + 1))) for level in range(1100)]
    broken = [hard("link", "missing")]  # the second layer fails: the first's tree must go
    build_layout(tmp_path / "img", [layer_tar(deep), layer_tar(broken)], tag="v1")
    dest = tmp_path / "dest"
    said = assert_clean_failure(bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", str(dest)))
    assert "missing" in said and len(said.splitlines()) == 1, said
    assert sorted(os.listdir(tmp_path)) == ["img"]


def test_credentials_in_a_docker_reference_are_refused_unrepeated() -> None:
    for ref in (
        "docker://me:S3CRET@reg.example/x@sha999:abc",
        "docker://me:S3CRET@host/x:v1",
        "docker://me:S3/CRET@host/x:v1",
        "docker://me:S3CRET@host:5000",
    ):
        said = assert_clean_failure(bootc_live("inspect", ref))
        assert said == (
            "bootc-live: docker://…@…: what follows @ is not a digest (the reference is not "
            "shown: a user or password has no place in it); pin with @sha256:HEX; give "
            "credentials in an auth.json: --authfile FILE (or podman login)\n"
        ), said


def test_a_missing_ca_bundle_is_a_usage_error_not_a_failing_connection(tmp_path: Path) -> None:
    for argv in (
        ("inspect", "docker://127.0.0.1:9/x:v1"),
        ("build", "docker://127.0.0.1:9/x:v1", "-o", str(tmp_path / "out")),
    ):
        result = bootc_live(*argv, "--ca", str(tmp_path / "none.pem"), "--retries", "0")
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"bootc-live {argv[0]}: error: argument --ca: {tmp_path / 'none.pem'}: "
            "No such file or directory"
        )
    assert os.listdir(tmp_path) == []


def test_an_empty_dest_is_refused_and_nothing_goes(tmp_path: Path) -> None:
    """`sudo bootc-live unpack IMAGE "$DEST"` with DEST unset removed the current directory."""
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    work = tmp_path / "work"
    (work / "project").mkdir(parents=True)
    (work / "project/notes.txt").write_text("keep")
    for dest, reason in (("", "DEST is empty"), ("nope/..", "nope/.. names no new directory")):
        result = bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", dest, cwd=work)
        said = assert_clean_failure(result)
        assert reason in said and len(said.splitlines()) == 1, said
        assert (work / "project/notes.txt").read_text() == "keep"
        assert sorted(os.listdir(work)) == ["project"]


def test_a_failed_unpack_removes_the_directories_it_made_above_dest(tmp_path: Path) -> None:
    """`unpack IMAGE a/b/root` that fails leaves neither root nor the a/b it created; one
    that succeeds keeps them all."""
    layer = layer_tar([f("b", b"b" * 3000)])
    info = build_layout(tmp_path / "img", [layer], compression="none", tag="v1")
    blob = tmp_path / "img/blobs/sha256" / info.layer_digests[0].partition(":")[2]
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF
    blob.write_bytes(bytes(data))
    (tmp_path / "a").mkdir()
    said = assert_clean_failure(
        bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", str(tmp_path / "a/b/c/root"))
    )
    assert "digest mismatch" in said
    assert os.listdir(tmp_path / "a") == []  # a was there before: it stays
    blob.write_bytes(bytes(data[:600]) + bytes([data[600] ^ 0xFF]) + bytes(data[601:]))
    result = bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", str(tmp_path / "a/b/c/root"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a/b/c/root/b").read_bytes() == b"b" * 3000


def test_a_second_build_to_the_same_output_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    """Two builds writing one -o deleted each other's files and each failed with an unrelated
    error; now DIR.new is locked by the build writing it, and another is told so."""
    from bootc_live import build, scratch
    from bootc_live.runtime.errors import BootcLiveError

    output = tmp_path / "x/out"
    tmp = output.with_name("out.new")
    first = build.claim(tmp, output)
    try:
        (tmp / "initrd.img").write_text("the first build's")
        try:
            build.claim(tmp, output)
        except BootcLiveError as err:
            assert str(err) == f"another bootc-live build is writing {output}"
        else:
            raise AssertionError("a second claim of DIR.new was granted")
        assert (tmp / "initrd.img").read_text() == "the first build's"
    finally:
        os.close(first)
    # Once the first has ended (a failed build's files left behind), the next one empties it.
    second = build.claim(tmp, output)
    os.close(second)
    assert os.listdir(tmp) == []
    scratch.remove(tmp)
    scratch.remove_all()
    assert not (tmp_path / "x").exists()  # made for it, empty: gone with the command's end


def test_pull_never_replaces_what_appeared_at_its_path_meanwhile(tmp_path: Path) -> None:
    """A second pull to the same path, finishing first, kept its file: the slower one ends
    with `exists`, not by replacing it (both used to say they had succeeded)."""
    from bootc_live import cli

    for kind in ("archive", "layout"):
        target, tmp = tmp_path / f"{kind}-target", tmp_path / f"{kind}-tmp"
        if kind == "archive":
            tmp.write_text("mine")
            target.write_text("theirs")
        else:
            tmp.mkdir()
            (tmp / "index.json").write_text("mine")
            target.mkdir()
            (target / "index.json").write_text("theirs")
        try:
            cli._publish_new(tmp, target)
        except cli.UsageError as err:
            assert str(err) == f"{target} exists"
        else:
            raise AssertionError(f"{kind}: replaced what was there")
        theirs = target if kind == "archive" else target / "index.json"
        assert theirs.read_text() == "theirs"
        # A new path, and for a layout an empty directory, are taken.
        (target.unlink() if kind == "archive" else shutil.rmtree(target))
        if kind == "layout":
            target.mkdir()
        cli._publish_new(tmp, target)
        assert not tmp.exists()
        assert (target if kind == "archive" else target / "index.json").read_text() == "mine"


def test_digest_picks_one_of_several_untagged_images(tmp_path: Path) -> None:
    """A layout of two untagged images: --digest names one (the hint says so), for inspect,
    unpack and the rest alike; without it, the refusal says how to pick."""
    layout = tmp_path / "two"
    first = build_layout(layout, [layer_tar([f("a", b"first")])], tag=None)
    second = build_layout(layout, [layer_tar([f("a", b"second")])], tag=None)
    third = build_layout(layout, [layer_tar([f("a", b"third")])], tag="v1", more_tags=["v2"])
    said = assert_clean_failure(bootc_live("inspect", f"oci:{layout}"))
    assert said == (
        f"bootc-live: oci:{layout} holds 4 images and none is tagged 'latest' (tags: v1, v2); "
        "name one with the :TAG of SOURCE, or pick one by its digest with --digest\n"
    )
    # The third is listed twice (tagged v1 and v2): its digest picks it all the same.
    for info, content in ((first, b"first"), (second, b"second"), (third, b"third")):
        digest = info.manifest_digest
        shown = bootc_live("inspect", f"oci:{layout}", "--digest", digest)
        assert shown.returncode == 0 and f"image     {digest}\n" in shown.stdout, shown.stderr
        root = tmp_path / f"root-{content.decode()}"
        done = bootc_live("unpack", f"oci:{layout}", str(root), "--digest", digest)
        assert done.returncode == 0, done.stderr
        assert (root / "a").read_bytes() == content


def test_pull_without_a_transport_in_o_and_an_empty_modules_dest_are_one_line(
    tmp_path: Path,
) -> None:
    """`pull -o plain.tar` was told "unsupported image source" with docker:// among the forms;
    `dracut-modules ""` wrote into the current directory."""
    said = assert_clean_failure(
        bootc_live("pull", "docker://h.example/x:y", "-o", "pl/plain.tar", cwd=tmp_path)
    )
    assert said == (
        "bootc-live: -o pl/plain.tar: pull writes oci-archive:PATH[:TAG] or oci:DIR[:TAG]; "
        "e.g. -o oci-archive:image.tar\n"
    )
    said = assert_clean_failure(bootc_live("dracut-modules", "", cwd=tmp_path))
    assert said == "bootc-live: DEST is empty; give the directory to write the modules into\n"
    assert os.listdir(tmp_path) == []


def test_an_empty_output_is_refused_not_taken_as_the_current_directory(tmp_path: Path) -> None:
    """`-o ""` (a variable that was not set): erofs kept nothing and said it had, pack said
    the current directory was a directory, build made its output of the current directory's
    name beside it (and replaced the directory, were it empty). So are demo's --workdir and
    vm's DIR."""
    need_root_and("mkfs.erofs")
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    work = tmp_path / "work"
    work.mkdir()
    for command, hint in (
        ("erofs", "give a file in an existing directory"),
        ("pack", "give a file in an existing directory"),
        ("build", "name the output directory"),
    ):
        result = bootc_live(command, f"oci:{tmp_path / 'img'}:v1", "-o", "", cwd=work)
        assert assert_clean_failure(result) == f"bootc-live: -o is empty; {hint}\n", command
        assert sorted(os.listdir(tmp_path)) == ["img", "work"] and os.listdir(work) == []
    # demo wrote its image and artifacts into the current directory; vm booted what it had.
    for args, said in (
        (["demo", "--workdir", ""], "--workdir is empty; give the directory demo works in"),
        (["vm", ""], "DIR is empty; give the output directory of bootc-live build"),
    ):
        # No QEMU on the PATH: whatever goes wrong, no guest is booted.
        result = bootc_live(*args, cwd=work, env={"PATH": str(tmp_path / "no-bin")})
        assert assert_clean_failure(result) == f"bootc-live: {said}\n"
        assert os.listdir(work) == []


def test_a_copy_onto_a_full_disk_names_where_it_was_copying_to(tmp_path: Path) -> None:
    """build --host with -o on a full disk was told as `/boot/vmlinuz-KVER: No space left on
    device`, the copy's source alone, as if /boot were full: both names are said."""
    need_root_and("unshare", "mount")
    kernels = build_mod.host_kernels()
    need(bool(kernels), "needs a host kernel")
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    full = tmp_path / "full"
    full.mkdir()
    script = 'mount -t tmpfs -o size=1m tmpfs "$1" || exit 99; shift; "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(full)]
    argv += [sys.executable, "-m", "bootc_live", "build", f"oci:{tmp_path / 'img'}:v1"]
    argv += ["-o", str(full / "out"), "--host", "--kver", kernels[-1], "--pack", "none"]
    result = subprocess.run(
        argv,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert assert_clean_failure(result).splitlines()[-1] == (
        f"bootc-live: /boot/vmlinuz-{kernels[-1]} → {full}/out.new/vmlinuz: No space left on "
        "device; check the paths given and the space there"
    )


def test_push_packed_of_a_file_that_is_not_there_is_one_line_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped FILE beside build's packed.json took that for its record: the registry was
    asked for the image first, and its failure (or, reached, `FILE: No such file`) said."""
    from bootc_live import cli

    (tmp_path / "packed.json").write_text('{"image": "sha256:aa", "sha256": "sha256:bb"}')
    os.mkfifo(tmp_path / "fifo.img")  # no writer: read, it would wait for ever
    (tmp_path / "fifo.img.json").write_text('{"image": "sha256:aa", "sha256": "sha256:bb"}')
    for given, what in (("packd.img", "no such file"), ("fifo.img", "is not a file")):
        result = bootc_live(
            "push-packed", "docker://127.0.0.1:1/x", given, "--retries", "0", cwd=tmp_path
        )
        assert assert_clean_failure(result) == (
            f"bootc-live: {given}: {what}; give the packed.img that bootc-live build or pack "
            "wrote\n"
        )
    # One this user may not look at is not "no such file" (the kernel's EACCES faked: root is
    # not refused).
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path).startswith(f"{tmp_path}/"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    assert cli.main(["push-packed", "docker://127.0.0.1:1/x", f"{tmp_path}/packed.img"]) == 1
    assert capsys.readouterr().err == (
        f"bootc-live: {tmp_path}/packed.img: Permission denied; check the paths given and the "
        "space there\n"
    )


def test_pull_to_a_path_without_a_name_is_one_line(tmp_path: Path) -> None:
    """`pull -o oci:.` in an empty directory ended in a ValueError traceback (no name to make
    its temporary one from)."""
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    work = tmp_path / "work"
    work.mkdir()
    for output in ("oci:.", "oci:./", "oci:..", "oci-archive:.", "oci:/"):
        result = bootc_live("pull", f"oci:{tmp_path / 'img'}:v1", "-o", output, cwd=work)
        path = output.partition(":")[2]
        assert assert_clean_failure(result) == (
            f"bootc-live: -o {output}: {path} names no new path; end it in the name of a new "
            "file or directory\n"
        )
        assert os.listdir(work) == [] and sorted(os.listdir(tmp_path)) == ["img", "work"]


def test_numbers_out_of_range_are_told_so_by_the_option(tmp_path: Path) -> None:
    """--timeout 100000 was "not a number of seconds"; --retries ² (a digit to str.isdigit)
    was "invalid _count value", the name of a function."""
    for option, value, said in (
        ("--timeout", "100000", "'100000' is not a number of seconds above 0 and below 86400"),
        ("--retries", "²", "'²' is not a number of retries"),
    ):
        result = bootc_live("inspect", f"oci:{tmp_path}", option, value)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"error: argument {option}: {said}" in result.stderr.splitlines()[-1], result
        assert "_count" not in result.stderr


def test_a_tmpdir_that_is_no_directory_is_named_as_tmpdir(tmp_path: Path) -> None:
    """$TMPDIR is not a path the command line gave: `TMPDIR=/gone bootc-live erofs SOURCE` said
    "/gone/.bootc-live-erofs-…: No such file or directory; check the paths given"."""
    need_root_and("mkfs.erofs")
    build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    (tmp_path / "file").write_text("")
    for tmpdir, why in (
        (tmp_path / "gone", "No such file or directory"),
        (tmp_path / "file", "Not a directory"),
    ):
        result = bootc_live("erofs", f"oci:{tmp_path / 'img'}:v1", tmpdir=tmpdir)
        assert assert_clean_failure(result).splitlines()[-1] == (
            f"bootc-live: TMPDIR={tmpdir}: {why}; set TMPDIR to a directory with room for the "
            "work, or unset it (/var/tmp)"
        )
    assert sorted(os.listdir(tmp_path)) == ["file", "img"]


def test_a_fifo_as_archive_or_blob_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """open() of a FIFO blocks until a writer comes: SOURCE naming one, or a layout whose blob
    is one, hung; now each is named for what it is, and nothing is left in DEST."""
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    said = assert_clean_failure(
        bootc_live("unpack", f"oci-archive:{fifo}", str(tmp_path / "a"), timeout=30)
    )
    assert said == (
        f"bootc-live: oci-archive:{fifo} is not a regular file (a FIFO); save the "
        "archive to a file first\n"
    )
    info = build_layout(tmp_path / "img", [layer_tar([f("a", b"x")])], tag="v1")
    blob = tmp_path / "img/blobs/sha256" / info.layer_digests[0].partition(":")[2]
    blob.unlink()
    os.mkfifo(blob)
    said = assert_clean_failure(
        bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", str(tmp_path / "b"), timeout=30)
    )
    assert f"blob {info.layer_digests[0]} is not a regular file (a FIFO)" in said
    assert sorted(os.listdir(tmp_path)) == ["image.tar", "img"]
    # inspect reads a gzip blob's last bytes for its estimate: an estimate goes without.
    shown = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", timeout=30)
    assert shown.returncode == 0 and "3x the compressed size" in shown.stdout, shown.stderr


def test_inspect_escapes_what_the_image_names(tmp_path: Path) -> None:
    """The config's platform and the kernels' directory names are the image's words: a
    terminal escape there reached the terminal (clear the screen, set its title)."""
    evil = "6.1.0\x1b[2J\x1b]0;pwned\x07"
    layer = layer_tar([f(f"usr/lib/modules/{evil}/vmlinuz", b"k")])
    variant = "v8\x1b]0;pwned\x07"  # (amd64 takes a variant it does not know when asked)
    build_layout(tmp_path / "img", [layer], tag="v1", platform=("linux", "amd64", variant))
    asked = f"linux/amd64/{variant}"
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", "--measure", "--platform", asked)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "platforms linux/amd64/v8\\x1b]0;pwned\\x07\n" in result.stdout, result.stdout
    assert "kernels   6.1.0\\x1b[2J\\x1b]0;pwned\\x07\n" in result.stdout, result.stdout


def test_inspect_finds_kernels_hard_linked_as_ostree_stores_them(tmp_path: Path) -> None:
    """ostree-based images (Fedora's, CentOS's) hard-link usr/lib/modules/KVER/vmlinuz to its
    object: that is the kernel, as in the unpacked tree (it said "none")."""
    layer = layer_tar(
        [
            f("sysroot/ostree/repo/objects/ab/cd.file", b"k"),
            d("usr/lib/modules/6.14.0-63.fc42.x86_64"),
            hard(
                "usr/lib/modules/6.14.0-63.fc42.x86_64/vmlinuz",
                "sysroot/ostree/repo/objects/ab/cd.file",
            ),
        ]
    )
    build_layout(tmp_path / "img", [layer], tag="v1")
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", "--measure")
    assert result.returncode == 0, result.stderr
    assert "kernels   6.14.0-63.fc42.x86_64\n" in result.stdout, result.stdout


def test_a_url_source_that_is_no_url_is_one_line_and_its_password_unrepeated() -> None:
    """An unclosed [ was a traceback from urllib; a URL with credentials is refused without
    being repeated, as root= is at boot."""
    for source, said in (
        (
            "http://alice:S3CRETpw@[::1/image.tar",
            "bootc-live: the URL of SOURCE: expected SCHEME://HOST[:PORT]/PATH (an IPv6 "
            "address in [ ]); fix SOURCE\n",
        ),
        (
            "https://[::1/image.tar",
            "bootc-live: https://[::1/image.tar: expected SCHEME://HOST[:PORT]/PATH (an IPv6 "
            "address in [ ]); fix SOURCE\n",
        ),
        (
            "http://h.example:0/image.tar",
            "bootc-live: http://h.example:0/image.tar: expected SCHEME://HOST[:PORT]/PATH with a "
            "host, and a port from 1; fix SOURCE\n",
        ),
    ):
        for command in (["inspect", source], ["pull", source, "-o", "oci:x"]):
            assert assert_clean_failure(bootc_live(*command)) == said, command


def test_a_failed_unpack_into_an_existing_dest_leaves_it_as_it_was(tmp_path: Path) -> None:
    """The image's root entry (`./`) set DEST's mode, owner and xattrs; the unpack then failed
    and emptied DEST, but left them: DEST is now as it was before, not only empty."""
    layers = [
        layer_tar([d(".", mode=0o700, uid=5, gid=6, xattrs={"user.image": b"1"}), f("a", b"a")]),
        layer_tar([hard("h", "nothere")]),
    ]
    build_layout(tmp_path / "img", layers, compression="none", tag="v1")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.chmod(dest, 0o750)
    os.setxattr(dest, "user.keep", b"k")
    os.utime(dest, (1_000_000, 2_000_000))
    said = assert_clean_failure(bootc_live("unpack", f"oci:{tmp_path / 'img'}:v1", str(dest)))
    assert "hardlink to /nothere, which does not exist" in said
    st = dest.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o750, 0, 0, 2_000_000)
    assert os.listdir(dest) == []
    assert os.listxattr(dest) == ["user.keep"] and os.getxattr(dest, "user.keep") == b"k"


def test_a_build_that_finds_dir_new_published_under_it_is_told_another_is_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another build renamed DIR.new to DIR between our open and our lock: refused as busy
    (it was a raw FileNotFoundError), and no descriptor is left open."""
    import fcntl

    from bootc_live import build
    from bootc_live.runtime.errors import BootcLiveError

    output = tmp_path / "out"
    tmp = tmp_path / "out.new"
    real = fcntl.flock

    def publishing_first(fd: int, op: int) -> None:
        os.rename(tmp, output)  # the other build publishes, and ends
        real(fd, op)

    monkeypatch.setattr(build.fcntl, "flock", publishing_first)
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(BootcLiveError) as err:
        build.claim(tmp, output)
    assert str(err.value) == f"another bootc-live build is writing {output}"
    assert sorted(os.listdir("/proc/self/fd")) == before and output.is_dir()


def test_identity_is_offered_only_where_a_source_can_lack_a_registry_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """push-packed takes docker://REF only, whose name is its own: --identity, always refused
    there, is not offered; build and inspect keep it."""
    from bootc_live import cli

    for command, offered in (("push-packed", False), ("build", True), ("inspect", True)):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert ("--identity" in capsys.readouterr().out) == offered, command


def test_inspect_lists_the_platforms_of_the_tag_it_inspects(tmp_path: Path) -> None:
    """As skopeo leaves a layout whose tags moved: an untagged entry of the amd64 image before
    the two-platform index tagged `multi`, and another tag for an arm64 image alone. The
    platforms line is the tag's: not the layout's, and not short of the amd64 image because
    index.json named it untagged first."""
    layout = tmp_path / "img"
    amd = build_layout(layout, [layer_tar([f("a", b"amd")])], tag=None)
    arm = build_layout(layout, [layer_tar([f("a", b"arm")])], tag=None, platform=("linux", "arm64"))
    index = json.loads((layout / "index.json").read_text())
    untagged = {k: v for k, v in amd.manifest_descriptor.items() if k != "platform"}
    index["manifests"] = [
        untagged,
        {**arm.manifest_descriptor, "annotations": {"org.opencontainers.image.ref.name": "solo"}},
    ]
    (layout / "index.json").write_text(json.dumps(index))
    add_nested_index(layout, [amd, arm], tag="multi")
    result = bootc_live("inspect", f"oci:{layout}:multi")
    assert result.returncode == 0, result.stderr
    assert "platforms linux/amd64, linux/arm64\n" in result.stdout
    result = bootc_live("inspect", "--platform", "linux/arm64", f"oci:{layout}:solo")
    assert result.returncode == 0, result.stderr
    assert "platforms linux/arm64\n" in result.stdout


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "LANG": "C"}])
def test_inspect_on_an_ascii_terminal_escapes_what_it_cannot_encode(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A kernel directory name is the image's, in any characters; `inspect` on a stdout whose
    encoding lacks them (PYTHONIOENCODING=ascii, as in a minimal container or CI) writes their
    escapes, as Python does on stderr, instead of ending in a UnicodeEncodeError traceback (the
    "…" of a shortened name too)."""
    kver = "6.1.0-\u00e9\u00e9\u00e9" + "x" * 200
    modules = f"usr/lib/modules/{kver}"
    build_layout(
        tmp_path / "img", [layer_tar([d(modules), f(f"{modules}/vmlinuz", b"k")])], tag="v1"
    )
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1", "--measure", env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    shortened = kver[:60] + "\u2026" + kver[-60:]
    wanted = (
        shortened
        if env.get("LANG") == "C"  # Python's UTF-8 mode: the characters as they are
        else shortened.encode("ascii", "backslashreplace").decode()
    )
    assert f"\nkernels   {wanted}\n" in result.stdout


def test_inspect_shows_what_an_index_annotation_says_escaped(tmp_path: Path) -> None:
    """The packed root's format and sha256 `build` records are the image's annotations: a
    pushed image may carry anything there. inspect's lines stay lines: an escape sequence (a
    window title, a screen clear) and a newline forging a line of its own are shown escaped."""
    build_layout(tmp_path / "img", [layer_tar([f("data", b"x")])], tag="v1")
    index = json.loads((tmp_path / "img/index.json").read_text())
    index["manifests"][0]["annotations"].update(
        {
            "org.bootc-live.packed-bytes": str(1 << 20),
            "org.bootc-live.packed-sha256": "sha256:\x1b[2J\npolicy    signatures: verified",
            "org.bootc-live.packed-format": "squashfs:xz\x1b]0;owned\x07\u202e\u009b1m",
        }
    )
    (tmp_path / "img/index.json").write_text(json.dumps(index))
    result = bootc_live("inspect", f"oci:{tmp_path / 'img'}:v1")
    assert result.returncode == 0, result.stderr
    assert all(line.isprintable() for line in result.stdout.splitlines())
    assert [ln for ln in result.stdout.splitlines() if ln.startswith("policy ")] == [
        "policy    signatures: not required (policy scope default)"
    ]
    assert "(squashfs:xz\\x1b]0;owned\\x07\\u202e\\x9b1m)" in result.stdout
    assert "sha256:\\x1b[2J\\x0apolicy    signatures: verified" in result.stdout
