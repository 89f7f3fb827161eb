"""The decompression commands an initramfs carries (igzip, zstd) against the in-process
decoders: the same bytes out, the same streams refused, never a hang or a stray process.

Streams come from hypothesis (members of any content and level, cut into any reads, then
truncated, corrupted or padded with zeros anywhere) and from GNU gzip and pigz themselves."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import decompress
from bootc_live.runtime.errors import BootcLiveError, LayerError
from imagegen import compress
from servers import hard_timeout

IGZIP = shutil.which("igzip")
SETTINGS = settings(max_examples=150, deadline=None)


@pytest.fixture(autouse=True)
def _needs_igzip() -> Iterator[None]:
    assert IGZIP, "igzip (Debian package isal) is not installed: run ./setup"
    with hard_timeout(120):
        yield


def reader(data: bytes, cuts: list[int]) -> decompress.Read:
    """A read function giving `data` in pieces of the sizes `cuts` cycles through."""
    pos, i = 0, 0

    def read(n: int) -> bytes:
        nonlocal pos, i
        size = min(n, cuts[i % len(cuts)]) if cuts else n
        i += 1
        piece = data[pos : pos + size]
        pos += len(piece)
        return piece

    return read


def decode(
    decoder: str, data: bytes, cuts: list[int], max_window: int = decompress.ZSTD_WINDOW_LIMIT
) -> tuple[bytes, str]:
    """What the decoder makes of `data`: its output, and the LayerError's message or ""."""
    read = reader(data, cuts)
    head = decompress.read_head(read)
    kind = decompress.compression_of(head)
    out = bytearray()
    try:
        for chunk in decompress.decoder_chunks(decoder, kind, head, read, max_window):
            out += chunk
    except LayerError as err:
        return bytes(out), str(err)
    return bytes(out), ""


MEMBERS = st.lists(
    st.tuples(st.binary(max_size=3000) | st.sampled_from([b"", bytes(70000)]), st.integers(0, 9)),
    min_size=1,
    max_size=4,
)
CUTS = st.lists(st.integers(1, 70000), max_size=4)


def gzipped(members: list[tuple[bytes, int]]) -> bytes:
    return b"".join(gzip.compress(data, compresslevel=level, mtime=0) for data, level in members)


@SETTINGS
@given(MEMBERS, CUTS)
@example([(b"", 6)], [])
@example([(bytes(70000), 9), (b"x", 0)], [1])
def test_igzip_gives_what_zlib_gives(members: list[tuple[bytes, int]], cuts: list[int]) -> None:
    stream = gzipped(members)
    expected = (b"".join(data for data, _ in members), "")
    assert decode("zlib", stream, cuts) == expected
    assert decode("igzip", stream, cuts) == expected
    padded = stream + bytes(512)  # zero padding after the last member: both accept it
    assert decode("igzip", padded, cuts) == decode("zlib", padded, cuts) == expected


@SETTINGS
@given(MEMBERS, CUTS, st.data())
def test_igzip_refuses_what_zlib_refuses(
    members: list[tuple[bytes, int]], cuts: list[int], data: st.DataObject
) -> None:
    stream = bytearray(gzipped(members))
    # Truncated anywhere past the magic, or one bit of the deflate data or trailer flipped
    # (the 10-byte header's mtime, XFL and OS bytes mean nothing to either).
    if data.draw(st.booleans(), label="truncate"):
        stream = stream[: data.draw(st.integers(2, len(stream) - 1), label="cut at")]
    else:
        at = data.draw(st.integers(10, len(stream) - 1), label="flip at")
        stream[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    zlib_out, zlib_error = decode("zlib", bytes(stream), cuts)
    igzip_out, igzip_error = decode("igzip", bytes(stream), cuts)
    if not zlib_error:  # a flip that still decodes, in a stored block's data: never here
        assert (igzip_out, igzip_error) == (zlib_out, "")  # the CRC would fail in both
    elif "trailing garbage" in zlib_error:
        # A member's magic broken: what follows is not gzip. igzip stops there, as gzip(1) does,
        # with what the members before gave; the diff_id check judges that.
        assert igzip_error or igzip_out == zlib_out
    elif not igzip_error:
        # A later member's header flag byte with a reserved bit set: zlib refuses it, igzip
        # reads past it. It can only give the members' true content, as the CRCs still hold.
        assert igzip_out == b"".join(content for content, _ in members)
    else:
        assert igzip_error.startswith("gzip data is corrupt (igzip: "), igzip_error


@pytest.mark.parametrize("tool", ["gzip", "pigz"])
def test_real_tools_streams(tool: str, tmp_path: Path) -> None:
    """GNU gzip's and pigz's own output, several members, as layers are written by them."""
    assert shutil.which(tool), f"{tool} is not installed: run ./setup"
    parts = [os.urandom(200_000), bytes(3 << 20), b"tail\n" * 1000]
    stream = b"".join(
        subprocess.run([tool, "-c", f"-{level}"], input=p, capture_output=True, check=True).stdout
        for p, level in zip(parts, (1, 9, 6))
    )
    assert decode("igzip", stream, [65536, 7]) == (b"".join(parts), "")


@SETTINGS
@given(MEMBERS, CUTS, st.data())
@example([(b"hello\n", 6), (b"world\n", 6)], [decompress.CHUNK], None)  # see below
def test_zeros_end_the_stream_for_every_decoder(
    members: list[tuple[bytes, int]], cuts: list[int], data: st.DataObject | None
) -> None:
    """Zeros after a member end the stream: what follows must be zeros too. zlib refuses a
    member after them whatever the read boundaries; igzip stops at them. So where both succeed
    they give the same bytes: a kexec stage two trusting stage one's diff_ids, with another
    decoder, fails or applies the same tree."""
    if data is None:  # the zeros end exactly at a read boundary, the next member starts there
        where, zeros = 1, decompress.CHUNK - len(gzipped(members[:1]))
    else:
        where = data.draw(st.integers(1, len(members)), label="zeros after member")
        zeros = data.draw(st.integers(1, 70000), label="zeros")
    stream = gzipped(members[:where]) + bytes(zeros) + gzipped(members[where:])
    before = b"".join(content for content, _ in members[:where])
    zlib_said, igzip_said = decode("zlib", stream, cuts), decode("igzip", stream, cuts)
    assert igzip_said == (before, "")
    if where == len(members):
        assert zlib_said == (before, "")
    else:
        assert zlib_said[1] == "gzip stream has trailing garbage after a member"


def test_trailing_garbage_is_ignored_by_igzip_as_by_gzip() -> None:
    """The one documented difference: bytes after the last member. The tree is still the
    diff_id's."""
    stream = gzip.compress(b"payload", mtime=0) + b"not gzip at all"
    assert decode("zlib", stream, []) == (
        b"payload",
        "gzip stream has trailing garbage after a member",
    )
    assert decode("igzip", stream, []) == (b"payload", "")


def test_corrupt_data_names_the_compression_and_the_tool_said() -> None:
    stream = bytearray(gzip.compress(os.urandom(5000), mtime=0))
    stream[-8] ^= 0xFF  # the CRC
    read = reader(bytes(stream), [])
    with pytest.raises(LayerError) as caught:
        b"".join(decompress.decoder_chunks("igzip", "gzip", read(decompress.CHUNK), read))
    assert str(caught.value).startswith("gzip data is corrupt (igzip: ")
    assert "(null)" not in str(caught.value)


def children() -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as fh:
            found |= {int(pid) for pid in fh.read().split()}
    return found


def test_a_consumer_that_stops_early_ends_the_command() -> None:
    """The applier failed on the first chunk: the command ends and is reaped at once, the rest
    of the layer is not read."""
    before = children()
    sent = gzip.compress(os.urandom(32 << 20), compresslevel=1, mtime=0)
    total = len(sent)

    def read(n: int) -> bytes:
        nonlocal sent
        piece, sent = sent[:n], sent[n:]
        return piece

    chunks = decompress.decoder_chunks("igzip", "gzip", read(decompress.CHUNK), read)
    assert next(chunks)
    chunks.close()
    assert children() == before
    assert len(sent) > total // 2


def test_a_source_failure_is_raised_as_it_is_not_as_corrupt_data() -> None:
    class Broken(OSError):
        pass

    sent = [gzip.compress(os.urandom(300_000), mtime=0)[:100_000]]

    def read(_n: int) -> bytes:
        if sent:
            return sent.pop()
        raise Broken("connection reset")

    with pytest.raises(Broken, match="connection reset"):
        b"".join(decompress.decoder_chunks("igzip", "gzip", read(decompress.CHUNK), read))


def test_a_killed_command_is_not_called_corrupt_data() -> None:
    """The OOM killer in a small initramfs: the message says so, not that the layer is bad."""
    before = children()
    sent = [gzip.compress(os.urandom(3 << 20), compresslevel=1, mtime=0)]

    def read(_n: int) -> bytes:
        for pid in children() - before:
            os.kill(pid, signal.SIGKILL)
        return sent.pop() if sent else b""

    head = gzip.compress(b"x" * 100, mtime=0)
    with pytest.raises(BootcLiveError) as caught:
        b"".join(decompress.decoder_chunks("igzip", "gzip", head, read))
    assert not isinstance(caught.value, LayerError)
    assert str(caught.value) == "igzip was killed by signal 9 while decompressing a gzip layer"
    assert caught.value.hint == "the machine may be out of memory: add RAM"
    assert children() == before


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_zstd_command_refuses_damaged_frames(damage: str) -> None:
    assert shutil.which("zstd"), "zstd is not installed: run ./setup"
    content = os.urandom(100_000) + bytes(100_000)
    stream = bytearray(compress(content, "zstd", members=2))
    if damage == "truncated":
        del stream[len(stream) // 2 :]
    else:
        stream[-2] ^= 0xFF  # the second frame's checksum
    out, error = decode("zstd", bytes(stream), [4096])
    assert error.startswith("zstd data is corrupt ("), error
    assert len(out) < len(content)
    assert decode("zstd", compress(content, "zstd", members=2), [4096]) == (content, "")


FRAMES = st.lists(
    st.tuples(
        st.sampled_from(["frame", "skippable"]),
        st.binary(max_size=3000) | st.sampled_from([b"", bytes(300_000)]),
        st.booleans(),  # a checksum; a skippable frame: its size said
    ),
    min_size=1,
    max_size=3,
)


def zstd_frames(frames: list[tuple[str, bytes, bool]]) -> tuple[bytes, list[int], bytes]:
    """The stream of `frames` (zstd's own; skippable frames as zstd:chunked puts them), where
    each frame ends in it, and the content."""
    stream, ends = b"", []
    for kind, content, flag in frames:
        if kind == "frame":
            stream += zstd_cli(content, "--check" if flag else "--no-check")
        else:
            stream += b"\x5a\x2a\x4d\x18" + len(content).to_bytes(4, "little") + content
        ends.append(len(stream))
    return stream, ends, b"".join(c for kind, c, _ in frames if kind == "frame")


@settings(max_examples=60, deadline=None)
@given(FRAMES, CUTS, st.data())
@example([("frame", b"x" * 1000, True)], [], None)  # the checksum's last byte cut
def test_zstandard_refuses_a_stream_cut_inside_a_frame_as_the_zstd_command_does(
    frames: list[tuple[str, bytes, bool]], cuts: list[int], data: st.DataObject | None
) -> None:
    """The zstandard module's stream reader ends quietly where its input does, inside a frame
    (a block, the checksum, a skippable frame) too; the zstd command says "premature end".
    Cut anywhere, both refuse the stream or both give the same bytes: whole frames only."""
    stream, ends, _ = zstd_frames(frames)
    # (cut before 4 bytes, it is no zstd stream: read as a plain tar)
    cut = len(stream) - 1 if data is None else data.draw(st.integers(4, len(stream)), label="cut")
    short = stream[:cut]
    module, command = decode("zstandard", short, cuts), decode("zstd", short, cuts)
    if cut in ends:
        whole = [f for f, end in zip(frames, ends) if end <= cut]
        assert module == command == (zstd_frames(whole)[2], "")
    else:
        assert module[1] == "zstd data is corrupt (the stream ends inside a frame)", module
        assert command[1].startswith("zstd data is corrupt ("), command
        assert zstd_frames(frames)[2].startswith(module[0])


@pytest.mark.parametrize("decoder", ["zstd", "zstandard"])
def test_a_zstd_window_over_128_mib_is_named_not_called_corrupt(decoder: str) -> None:
    """`zstd --long=28` (from a pipe: the window is not shrunk to the input) needs 256 MiB to
    decode; both decoders refuse it past 128 MiB, which was told as corrupt data, with the
    command's own advice (`Use --long=28 or --memory=256MB`)."""
    data = os.urandom(100_000)
    stream = subprocess.run(
        ["zstd", "-q", "--long=28", "-c"], input=data, capture_output=True, check=True
    ).stdout
    assert (
        subprocess.run(
            ["zstd", "-dcq", "--long=28"], input=stream, capture_output=True, check=True
        ).stdout
        == data
    )  # a valid stream
    _, said = decode(decoder, stream, [])  # zstandard: the host's (dev extras); zstd: the boot's
    assert said == (
        "its zstd frames need a window over 128 MiB (made with zstd --long or --ultra), more "
        "memory than a layer may take here"
    )


def zstd_cli(data: bytes, *options: str) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-c", *options], input=data, capture_output=True, check=True
    ).stdout


def zstd_says_window(stream: bytes, tmp_path: Path) -> int:
    """The window `zstd -lv` reads in the stream's first frame, in bytes."""
    path = tmp_path / "s.zst"
    path.write_bytes(stream)
    listed = subprocess.run(
        ["zstd", "-lv", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(listed.split("Window Size:")[1].split("(")[1].split(" B)")[0])


@pytest.mark.parametrize(
    "options",
    [(), ("-19",), ("--long=25",), ("--long=27",), ("--ultra", "-20"), ("-1", "--no-check")],
)
@pytest.mark.parametrize("known_size", [False, True])
def test_the_first_frames_window_is_read_as_zstd_reads_it(
    tmp_path: Path, options: tuple[str, ...], known_size: bool
) -> None:
    """The window a live boot plans for (memory.zstd_window), read from the frame header of
    the zstd command's own streams and compared with `zstd -lv`: from a pipe (the window as
    the level or --long says), and of a file (a single segment: the content's size)."""
    data = os.urandom(3000) * 40
    if known_size:
        source = tmp_path / "data"
        source.write_bytes(data)
        stream = subprocess.run(
            ["zstd", "-q", "-c", *options, str(source)], capture_output=True, check=True
        ).stdout
    else:
        stream = zstd_cli(data, *options)
    assert decompress.zstd_window(stream[:4096]) == zstd_says_window(stream, tmp_path)
    # Past a skippable frame, and not from a head too short for the header.
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"12345"
    assert decompress.zstd_window(skippable + stream[:64]) == decompress.zstd_window(stream)
    assert decompress.zstd_window(stream[:5]) is None and decompress.zstd_window(b"tar") is None


@pytest.mark.parametrize("decoder", ["zstd", "zstandard"])
def test_a_frame_asking_more_than_the_planned_window_is_refused(decoder: str) -> None:
    """A live boot lets the decoder hold the window it planned from the layers' first frames:
    a later frame asking more is one line, not memory the plan never had."""
    data = os.urandom(100_000)
    small, large = zstd_cli(data, "-3"), zstd_cli(data, "--long=25")  # 2 and 32 MiB windows
    assert decode(decoder, small + large, [], max_window=32 << 20) == (data + data, "")
    out, said = decode(decoder, small + large, [], max_window=8 << 20)
    assert out == data[: len(out)] and said == (
        "its zstd frames need a window over 8 MiB (made with zstd --long or --ultra), more "
        "memory than a layer may take here"
    )


@pytest.mark.parametrize(("tool", "kind"), [("xz", "xz"), ("bzip2", "bzip2")])
def test_a_layer_compressed_otherwise_is_named_for_it(tool: str, kind: str) -> None:
    """An xz or bzip2 layer was read as a tar: 'tar header checksum mismatch'."""
    stream = subprocess.run([tool, "-c"], input=b"a tar", capture_output=True, check=True).stdout
    _, said = decode("none", stream, [])
    assert said == f"the layer is {kind}-compressed; OCI layers are gzip, zstd or plain tars"
