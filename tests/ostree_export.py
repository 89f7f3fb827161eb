"""Fedora/CentOS-style bootc images at test time: a tree committed by Debian's `ostree` into a
real repository, exported as layers the way ostree-ext's chunked export writes them
(ostree-ext/src/tar/export.rs in containers/bootc), read here, not copied:

- every layer starts with the repository's skeleton (sysroot/ostree/repo/objects/00..ff,
  refs, state, tmp, a `config` file); each content object is written once, under
  sysroot/ostree/repo/objects/XX/REST.file, preceded by its `.file-xattrs` (when new in the
  layer), a `.file-xattrs-link` hard link to it and a PAX header of SCHILY.xattr.* records
  (security.selinux left out) whose own name is empty; then every path of the commit with
  that content is a hard link to the object (a zero-sized regular file is a file of its own);
- paths carry no `./`, and usr/etc is written as etc;
- the last layer holds the root `./`, the commit, dirtree and dirmeta objects and every
  directory (`./usr`, `./etc`, …, sysroot left out), var/tmp (mode 1777) if the commit has
  none, then the content left over;
- old GNU headers (tar-rs's `Header::new_gnu`): names over 100 bytes as ././@LongLink `L`
  and `K` members, mtime 0.
The bytes of a `.file-xattrs` object are a stand-in (our unpackers never read them).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from imagegen import _gnu_long, _pad, header_block, pax_record

BLOCK = 512
OBJECTS = "sysroot/ostree/repo/objects"
REPO_CONFIG = b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n"
REPO_SUBDIRS = (
    "extensions", "refs", "refs/heads", "refs/mirrors", "refs/remotes", "state", "tmp",
    "tmp/cache",
)  # fmt: skip


def member(
    name: str,
    typeflag: bytes,
    *,
    data: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    linkname: str = "",
) -> bytes:
    """One member as tar-rs writes it with a GNU header (long names as L/K members)."""
    out = b""
    bname, blink = os.fsencode(name), os.fsencode(linkname)
    if len(bname) > 100:
        out += _gnu_long(b"L", bname)
        bname = bname[:100]
    if len(blink) > 100:
        out += _gnu_long(b"K", blink)
        blink = blink[:100]
    head = header_block(
        bname, typeflag=typeflag, size=len(data), mode=mode, uid=uid, gid=gid,
        linkname=blink, gnu=True,
    )  # fmt: skip
    return out + head + _pad(data)


def xattr_header(xattrs: dict[str, bytes]) -> bytes:
    """tar-rs's append_pax_extensions: a ustar 'x' member with an empty name."""
    payload = b"".join(pax_record(b"SCHILY.xattr." + k.encode(), v) for k, v in xattrs.items())
    return header_block(b"", typeflag=b"x", size=len(payload)) + _pad(payload)


@dataclass
class Commit:
    """A commit's listing (`ostree ls -R -C`): its directories and content objects."""

    repo: Path
    dirs: list[tuple[str, int, int, int]] = field(default_factory=list)  # path, mode, uid, gid
    # checksum -> the paths with that content, in the commit's order
    objects: dict[str, list[str]] = field(default_factory=dict)


def commit(tree: Path, repo: Path, branch: str = "os") -> Commit:
    """`tree` committed into a new bare repository at `repo`, listed."""
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=bare"], check=True)
    subprocess.run(
        ["ostree", "commit", f"--repo={repo}", f"--branch={branch}", f"--tree=dir={tree}"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["ostree", "ls", f"--repo={repo}", "-R", "-C", branch],
        check=True,
        capture_output=True,
    ).stdout
    found = Commit(repo)
    for line in listing.decode().splitlines():
        kind_mode, uid, gid, _size, checksum, rest = line.split(None, 5)
        if kind_mode[0] == "d":
            _meta, path = rest.split(" ", 1)
            found.dirs.append((path, int(kind_mode[1:], 8), int(uid), int(gid)))
        else:
            path = rest.split(" -> ", 1)[0] if kind_mode[0] == "l" else rest
            found.objects.setdefault(checksum, []).append(path)
    return found


def _tar_path(path: str) -> str:
    path = path.lstrip("/")
    return path[4:] if path == "usr/etc" or path.startswith("usr/etc/") else path


def _object(checksum: str, suffix: str = "file") -> str:
    return f"{OBJECTS}/{checksum[:2]}/{checksum[2:]}.{suffix}"


def _skeleton() -> bytes:
    out = b""
    for path in ("sysroot", "sysroot/ostree", "sysroot/ostree/repo", OBJECTS):
        out += member(path, b"5", mode=0o755)
    for n in range(256):
        out += member(f"{OBJECTS}/{n:02x}", b"5", mode=0o755)
    for sub in REPO_SUBDIRS:
        out += member(f"sysroot/ostree/repo/{sub}", b"5", mode=0o755)
    return out + member("sysroot/ostree/repo/config", b"0", data=REPO_CONFIG)


def _content(found: Commit, checksums: list[str]) -> bytes:
    out = b""
    wrote_xattrs: set[str] = set()
    for checksum in sorted(checksums):
        source = os.fspath(found.repo / "objects" / checksum[:2] / f"{checksum[2:]}.file")
        st = os.lstat(source)
        xattrs = {
            name: os.getxattr(source, name, follow_symlinks=False)
            for name in sorted(os.listxattr(source, follow_symlinks=False))
        }
        text = repr(sorted(xattrs.items())).encode()
        digest = hashlib.sha256(text).hexdigest()
        if digest not in wrote_xattrs:
            wrote_xattrs.add(digest)
            out += member(_object(digest, "file-xattrs"), b"0", data=text)
        link = _object(checksum, "file-xattrs-link")
        out += member(link, b"1", linkname=_object(digest, "file-xattrs"))
        shown = {k: v for k, v in xattrs.items() if k != "security.selinux"}
        if shown:
            out += xattr_header(shown)
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        objpath = _object(checksum)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(source)
            out += member(objpath, b"2", mode=mode, uid=uid, gid=gid, linkname=target)
        else:
            with open(source, "rb") as f:
                data = f.read()
            out += member(objpath, b"0", data=data, mode=mode, uid=uid, gid=gid)
        for path in found.objects[checksum]:
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                out += member(_tar_path(path), b"0", mode=mode, uid=uid, gid=gid)
            else:
                out += member(_tar_path(path), b"1", mode=mode, uid=uid, gid=gid, linkname=objpath)
    return out


def _metadata(found: Commit) -> bytes:
    out = b""
    objects = found.repo / "objects"
    for suffix in ("commit", "dirmeta", "dirtree"):
        for obj in sorted(objects.glob(f"*/*.{suffix}")):
            checksum = obj.parent.name + obj.name.split(".")[0]
            out += member(_object(checksum, suffix), b"0", data=obj.read_bytes())
    return out


def export(found: Commit, chunks: int = 3) -> list[bytes]:
    """The commit as chunked layers (uncompressed tars), the lowest first: `chunks` layers of
    content objects, then the last one (directories, metadata, the rest of the content)."""
    checksums = sorted(found.objects)
    share = -(-len(checksums) // (chunks + 1))
    groups = [checksums[i * share : (i + 1) * share] for i in range(chunks + 1)]
    end = b"\0" * (2 * BLOCK)
    layers = [_skeleton() + _content(found, group) + end for group in groups[:-1]]
    last = b""
    for path, mode, uid, gid in found.dirs:
        if path == "/":
            last += member("./", b"5", mode=mode, uid=uid, gid=gid)
            last += _skeleton() + _metadata(found)
        elif path != "/sysroot" and not path.startswith("/sysroot/"):
            last += member("./" + _tar_path(path), b"5", mode=mode, uid=uid, gid=gid)
    if not any(path == "/var/tmp" for path, *_ in found.dirs):
        last += member("var/tmp", b"5", mode=0o1777)
    layers.append(last + _content(found, groups[-1]) + end)
    return layers
