"""`bootc-live demo`, the README's first command: it boots, and as root it writes only into a
work directory no other user can change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootc_live.demo import WROTE, demo_layers, fresh_image_dir, report
from bootc_live.layout import write_layout
from bootc_live.runtime.errors import BootcLiveError
from bootc_live.vm import Boot
from treewalk import snapshot
from unpackers import bootc_live

NOBODY = 65534


def victim(tmp_path: Path) -> Path:
    """A root-owned directory with a file, which a planted link points root's writes at."""
    target = tmp_path / "victim"
    target.mkdir()
    (target / "shadow").write_text("precious\n")
    return target


def demo(workdir: Path) -> tuple[int, str]:
    result = bootc_live("demo", "--workdir", os.fspath(workdir), "--mem", "256")
    return result.returncode, result.stderr


def test_a_workdir_another_user_owns_is_refused(tmp_path: Path) -> None:
    target = victim(tmp_path)
    before = snapshot(target)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "image").symlink_to(target)  # what the other user planted
    os.chown(workdir, NOBODY, NOBODY)
    code, err = demo(workdir)
    assert code == 1, err
    assert f"{workdir} is not a directory of this user's that only it can write to" in err
    assert "Traceback" not in err
    assert snapshot(target) == before
    assert sorted(os.listdir(workdir)) == ["image"]


def test_a_workdir_that_is_a_link_is_refused(tmp_path: Path) -> None:
    target = victim(tmp_path)
    before = snapshot(target)
    (tmp_path / "wd").symlink_to(target)
    code, err = demo(tmp_path / "wd")
    assert code == 1, err
    assert "is not a directory of this user's that only it can write to" in err
    assert snapshot(target) == before


def test_a_workdir_under_a_directory_others_can_change_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)  # they could rename wd away and put a link in its place
    code, err = demo(theirs / "wd" / "deeper")
    assert code == 1, err
    assert f"{theirs} can be changed by other users" in err
    assert os.listdir(theirs) == []  # nothing made under it


def test_a_group_writable_workdir_is_refused(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    workdir.chmod(0o775)
    code, err = demo(workdir)
    assert code == 1 and "only it can write to" in err, err
    assert os.listdir(workdir) == []


def test_an_image_directory_demo_did_not_write_is_kept(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "thesis").mkdir(parents=True)
    (image / "thesis" / "chapter1.tex").write_text("years of work\n")
    with pytest.raises(BootcLiveError, match="is not a demo image an earlier run wrote"):
        fresh_image_dir(tmp_path)
    assert (image / "thesis" / "chapter1.tex").read_text() == "years of work\n"
    # Through the command, as root, in a work directory of root's: the same refusal.
    code, err = demo(tmp_path)
    assert code == 1 and f"{image} is not a demo image an earlier run wrote" in err, err
    assert (image / "thesis" / "chapter1.tex").read_text() == "years of work\n"


def test_only_the_layout_an_earlier_run_recorded_is_replaced(tmp_path: Path) -> None:
    """An OCI layout of someone else's at WORKDIR/image (a skopeo copy, tagged demo even) is
    kept: only the one whose digest demo recorded beside it goes."""
    digest = write_layout(tmp_path / "image", demo_layers(), "demo")
    (tmp_path / "image/blobs/notes.txt").write_text("mine\n")
    with pytest.raises(BootcLiveError, match="is not a demo image an earlier run wrote"):
        fresh_image_dir(tmp_path)  # nothing recorded
    (tmp_path / WROTE).write_text("sha256:" + "0" * 64 + "\n")
    with pytest.raises(BootcLiveError, match="is not a demo image an earlier run wrote"):
        fresh_image_dir(tmp_path)  # another image recorded
    assert (tmp_path / "image/blobs/notes.txt").exists()
    (tmp_path / WROTE).write_text(digest + "\n")
    assert fresh_image_dir(tmp_path) == tmp_path / "image"
    assert not os.path.lexists(tmp_path / "image")


def test_a_qemu_that_fails_is_named_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    output = "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n"
    assert report(Boot(output, "qemu", 0.2, status=1)) == 1
    assert capsys.readouterr().err == (
        "bootc-live demo: FAILED: the live system did not come up (qemu after 0s: "
        "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory); "
        "see the console log\n"
    )


@pytest.mark.vm
def test_demo_boots_live_and_reports(tmp_path: Path) -> None:
    # The README's main job, as a user runs it (the default 512 MiB), in a new work directory.
    workdir = tmp_path / "new" / "wd"
    result = bootc_live("demo", "--workdir", os.fspath(workdir), timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bootc-live demo: OK: booted live in" in out, out
    assert "root tmpfs ro, /etc rw, /var rw" in out
    assert "/etc/old-motd whited out by layer 3: yes" in out
    assert "bootc-live: live root ready: sha256:" in out
    assert workdir.stat().st_mode & 0o777 == 0o700
    assert sorted(os.listdir(workdir)) == [WROTE, "artifacts", "console.log", "image"]
    assert "BOOTC-LIVE-REPORT root=ro" in (workdir / "console.log").read_text()
