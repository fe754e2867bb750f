"""pack then unpack / Container.read, at sizes around the page and block boundaries, from every
kind of source and into both kinds of destination."""

import io
import os
import pathlib
import string

import pytest

import qeltrix

BS = 1 << 16
SIZES = [0, 1, 4095, 4096, 4097, BS - 1, BS, BS + 1, 3 * BS + 17]
SOURCES = ["path", "bytes", "bytesio"]


def is_hex(s):
    return isinstance(s, str) and len(s) > 0 and all(ch in string.hexdigits for ch in s)


def blocks_for(n):
    return (n + BS - 1) // BS


def make_source(kind, data, tmp_path):
    if kind == "path":
        src = tmp_path / "plain.bin"
        src.write_bytes(data)
        return src
    if kind == "bytes":
        return data
    if kind == "bytesio":
        return io.BytesIO(data)
    raise AssertionError(kind)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("source", SOURCES)
def test_round_trip(tmp_path, key, make_data, size, source):
    """pack from a path, bytes or BytesIO; unpack to a path and to a BytesIO, and read through
    Container: every way gives back the exact bytes, and PackResult describes the container."""
    data = make_data(size, seed=size)
    dst = tmp_path / "c.qltx"
    result = qeltrix.pack(make_source(source, data, tmp_path), dst, key, block_size=BS)

    assert isinstance(result, qeltrix.PackResult)
    assert result.original_size == size
    assert result.container_size == os.path.getsize(dst)
    assert result.blocks == blocks_for(size)
    assert 0 <= result.compressed_blocks <= result.blocks
    assert result.format == 2
    assert is_hex(result.container_id) and len(result.container_id) == 32
    assert result.root is None or is_hex(result.root)

    out = tmp_path / "out.bin"
    assert qeltrix.unpack(dst, out, key) == size
    assert out.read_bytes() == data

    sink = io.BytesIO()
    assert qeltrix.unpack(dst, sink, key) == size
    assert sink.getvalue() == data

    with qeltrix.Container(dst, key) as c:
        assert c.size == size
        assert c.read() == data
        assert c.read() == b""
        assert c.tell() == size


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_pack_from_other_buffers(tmp_path, key, make_data, wrap):
    """bytearray and memoryview sources are accepted like bytes."""
    data = make_data(2 * BS + 5, seed=1)
    dst = tmp_path / "c.qltx"
    assert qeltrix.pack(wrap(data), dst, key, block_size=BS).original_size == len(data)
    sink = io.BytesIO()
    qeltrix.unpack(dst, sink, key)
    assert sink.getvalue() == data


class ShortReader:
    """A file-like with only .read(), returning at most 1000 bytes a call: a source that gives
    short reads must still be packed whole."""

    def __init__(self, data):
        self._data = data
        self._pos = 0
        self.calls = 0

    def read(self, n=-1):
        self.calls += 1
        if n is None or n < 0:
            n = len(self._data) - self._pos
        n = min(n, 1000)
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk


def test_pack_from_read_only_filelike_with_short_reads(tmp_path, key, make_data):
    data = make_data(BS + 4321, seed=2)
    src = ShortReader(data)
    dst = tmp_path / "c.qltx"
    result = qeltrix.pack(src, dst, key, block_size=BS)
    assert result.original_size == len(data)
    assert src.calls > len(data) // 1000
    out = tmp_path / "out"
    qeltrix.unpack(dst, out, key)
    assert out.read_bytes() == data


def test_pack_from_open_file(tmp_path, key, make_data):
    """A real file object opened by Python (has readinto and a fileno) is a file-like source."""
    data = make_data(3 * BS + 17, seed=3)
    src = tmp_path / "plain.bin"
    src.write_bytes(data)
    dst = tmp_path / "c.qltx"
    with open(src, "rb") as f:
        assert qeltrix.pack(f, dst, key, block_size=BS).original_size == len(data)
    with qeltrix.Container(dst, key) as c:
        assert c.read() == data


def test_paths_as_str_and_pathlike(tmp_path, key, make_data):
    """str and os.PathLike are both accepted for src and dst."""
    data = make_data(5000, seed=4)
    src = tmp_path / "plain.bin"
    src.write_bytes(data)
    qeltrix.pack(str(src), str(tmp_path / "a.qltx"), key, block_size=BS)
    qeltrix.pack(pathlib.Path(src), pathlib.Path(tmp_path / "b.qltx"), key, block_size=BS)
    qeltrix.unpack(str(tmp_path / "a.qltx"), str(tmp_path / "a.out"), key)
    qeltrix.unpack(pathlib.Path(tmp_path / "b.qltx"), pathlib.Path(tmp_path / "b.out"), key)
    assert (tmp_path / "a.out").read_bytes() == data
    assert (tmp_path / "b.out").read_bytes() == data


def test_unpack_to_open_file(tmp_path, key, pack_to, make_data):
    data = make_data(2 * BS + 3, seed=5)
    c = pack_to(data, key)
    out = tmp_path / "out.bin"
    with open(out, "wb") as f:
        assert qeltrix.unpack(c, f, key) == len(data)
    assert out.read_bytes() == data


def test_raw_32_byte_key(tmp_path, make_data, pack_to):
    """32 raw bytes are a key-file key: they pack and unpack like a Key."""
    raw = os.urandom(32)
    data = make_data(BS + 1, seed=6)
    c = pack_to(data, raw)
    sink = io.BytesIO()
    qeltrix.unpack(c, sink, raw)
    assert sink.getvalue() == data
    # The same 32 bytes as a Key object open it too.
    sink = io.BytesIO()
    qeltrix.unpack(c, sink, qeltrix.Key.from_bytes(raw))
    assert sink.getvalue() == data


def test_unpack_overwrite(tmp_path, key, pack_to, make_data):
    data = make_data(1000, seed=7)
    c = pack_to(data, key)
    out = tmp_path / "out"
    out.write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        qeltrix.unpack(c, out, key)
    assert out.read_bytes() == b"already here"
    assert qeltrix.unpack(c, out, key, overwrite=True) == len(data)
    assert out.read_bytes() == data


def test_missing_source_raises_file_not_found(tmp_path, key):
    missing = tmp_path / "no-such-file"
    with pytest.raises(FileNotFoundError):
        qeltrix.pack(missing, tmp_path / "c.qltx", key, block_size=BS)
    assert not (tmp_path / "c.qltx").exists()
    with pytest.raises(FileNotFoundError):
        qeltrix.unpack(tmp_path / "no-such.qltx", tmp_path / "out", key)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_workers(tmp_path, key, make_data, pack_to, workers):
    data = make_data(5 * BS + 99, seed=8)
    c = pack_to(data, key, workers=workers)
    sink = io.BytesIO()
    assert qeltrix.unpack(c, sink, key, workers=workers) == len(data)
    assert sink.getvalue() == data


def test_a_packed_file_keeps_its_mode_and_mtime(tmp_path, key, make_data):
    """Packing a path seals its mode and mtime into the file record, as the CLI does; unpacking
    to a path restores them (the mode within the umask)."""
    src = tmp_path / "report.bin"
    src.write_bytes(make_data(5000))
    os.chmod(src, 0o640)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    qeltrix.pack(src, tmp_path / "report.qltx", key, block_size=BS)
    out = tmp_path / "restored.bin"
    qeltrix.unpack(tmp_path / "report.qltx", out, key)
    assert out.read_bytes() == src.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o640 & ~umask
    assert int(out.stat().st_mtime) == 1_600_000_000
