"""Failures: a wrong key, tampered, truncated and foreign bytes each raise their own exception
class, with .path set, and never hand out unauthenticated plaintext or leave an output file."""

import io
import os
import struct

import pytest

import qeltrix
from qeltrix import (CorruptContainerError, NotAContainerError, QeltrixError,
                     UnsupportedVersionError, WrongKeyError)

BS = 1 << 16
HEADER_LEN = 4096


def test_exception_hierarchy():
    for cls in (WrongKeyError, CorruptContainerError, UnsupportedVersionError, NotAContainerError):
        assert issubclass(cls, QeltrixError)
    assert issubclass(QeltrixError, Exception)
    for a in (WrongKeyError, CorruptContainerError, NotAContainerError):
        for b in (WrongKeyError, CorruptContainerError, NotAContainerError):
            assert a is b or not issubclass(a, b)


def check_path(exc, path):
    """The exception names the container (as given, or made absolute)."""
    assert exc.path is not None, exc
    assert os.path.basename(os.fspath(exc.path)) == os.path.basename(os.fspath(path)), exc.path
    for attr in ("block", "offset"):
        value = getattr(exc, attr)
        assert value is None or (isinstance(value, int) and value >= 0), (attr, value)


# ---------------------------------------------------------------------------- wrong key

@pytest.fixture
def wrong_key_case(tmp_path, key, other_key, pack_to, make_data):
    data = make_data(2 * BS + 5, seed=1)
    return pack_to(data, key), other_key


def test_wrong_key_container(wrong_key_case):
    path, wrong = wrong_key_case
    with pytest.raises(WrongKeyError) as ei:
        qeltrix.Container(path, wrong)
    check_path(ei.value, path)


def test_wrong_key_unpack_leaves_no_output(tmp_path, wrong_key_case):
    path, wrong = wrong_key_case
    out = tmp_path / "out.bin"
    with pytest.raises(WrongKeyError) as ei:
        qeltrix.unpack(path, out, wrong)
    check_path(ei.value, path)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.qltx"]  # no temporary left either

    sink = io.BytesIO()
    with pytest.raises(WrongKeyError):
        qeltrix.unpack(path, sink, wrong)
    assert sink.getvalue() == b""


def test_wrong_key_seek_extract(wrong_key_case):
    path, wrong = wrong_key_case
    with pytest.raises(WrongKeyError) as ei:
        qeltrix.seek_extract(path, 0, 10, wrong)
    check_path(ei.value, path)
    with pytest.raises(WrongKeyError):
        qeltrix.seek_extract(path, 0, 10, master_key=os.urandom(32))


def test_wrong_key_verify(wrong_key_case):
    path, wrong = wrong_key_case
    with pytest.raises(WrongKeyError):
        qeltrix.verify(path, wrong)
    # Keyless verification needs no key, so it passes.
    assert qeltrix.verify(path)["keyless"] is True


# ---------------------------------------------------------------------------- tampered

N_BLOCKS = 4


@pytest.fixture
def tampered(tmp_path, key, make_data):
    """A container of 4 full incompressible blocks with one byte flipped in the middle of the
    stored bytes of block 1. Returns (path, key, data, start of the data area of block 1)."""
    data = make_data(N_BLOCKS * BS, seed=2)
    path = tmp_path / "c.qltx"
    qeltrix.pack(data, path, key, block_size=BS, compress="never")
    raw = bytearray(path.read_bytes())
    footer_offset = struct.unpack_from("<Q", raw, 40)[0]  # patched header (FORMAT.md)
    assert HEADER_LEN < footer_offset < len(raw)
    stored = (footer_offset - HEADER_LEN) // N_BLOCKS  # equal-sized blocks: never compressed
    assert stored > BS
    where = HEADER_LEN + stored + stored // 2
    raw[where] ^= 0x40
    path.write_bytes(bytes(raw))
    return path, key, data


def test_tampered_unpack(tmp_path, tampered):
    path, key, _ = tampered
    out = tmp_path / "out.bin"
    with pytest.raises(CorruptContainerError) as ei:
        qeltrix.unpack(path, out, key)
    check_path(ei.value, path)
    assert ei.value.block in (None, 1)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.qltx"]


def test_tampered_unpack_to_filelike_raises(tampered):
    path, key, data = tampered
    sink = io.BytesIO()
    with pytest.raises(CorruptContainerError):
        qeltrix.unpack(path, sink, key)
    # Whatever was written before the damage was found is authentic, never the damaged block.
    assert data.startswith(sink.getvalue())
    assert len(sink.getvalue()) <= BS


def test_tampered_container_read(tampered):
    path, key, data = tampered
    got = None
    with pytest.raises(CorruptContainerError) as ei:
        with qeltrix.Container(path, key) as c:
            got = c.read()
    assert got is None  # no data returned
    check_path(ei.value, path)


def test_tampered_block_only_fails_where_damaged(tampered):
    path, key, data = tampered
    with qeltrix.Container(path, key) as c:
        # Blocks 0 and 2 are intact and read normally: damage is found where it is.
        assert c.read_at(0, 100) == data[:100]
        assert c.read_at(2 * BS, 100) == data[2 * BS:2 * BS + 100]
        with pytest.raises(CorruptContainerError):
            c.read_at(BS, BS)
        c.seek(BS - 10)
        with pytest.raises(CorruptContainerError):
            c.read(BS)
    # (Not a short range: format 2 authenticates 16 KiB segments, and a read that misses the
    # damaged segment of the block is served correctly.)
    with pytest.raises(CorruptContainerError):
        qeltrix.seek_extract(path, BS, BS, key)


def test_tampered_verify_keyed(tampered):
    path, key, _ = tampered
    with pytest.raises(CorruptContainerError) as ei:
        qeltrix.verify(path, key)
    check_path(ei.value, path)
    assert ei.value.block in (None, 1)


def test_tampered_verify_keyless(tampered):
    path, _, _ = tampered
    with pytest.raises(CorruptContainerError) as ei:
        qeltrix.verify(path)
    check_path(ei.value, path)
    assert ei.value.block in (None, 1)


# ---------------------------------------------------------------------------- truncated

@pytest.mark.parametrize("cut", ["trailer", "middle"])
def test_truncated(tmp_path, key, make_data, cut):
    data = make_data(3 * BS + 17, seed=3)
    path = tmp_path / "c.qltx"
    qeltrix.pack(data, path, key, block_size=BS)
    raw = path.read_bytes()
    raw = raw[:-100] if cut == "trailer" else raw[:len(raw) // 2]
    path.write_bytes(raw)

    out = tmp_path / "out.bin"
    with pytest.raises(CorruptContainerError) as ei:
        qeltrix.unpack(path, out, key)
    check_path(ei.value, path)
    assert not out.exists()

    got = None
    with pytest.raises(CorruptContainerError):
        with qeltrix.Container(path, key) as c:
            got = c.read()
    assert got is None
    with pytest.raises(CorruptContainerError):
        qeltrix.verify(path, key)
    with pytest.raises(CorruptContainerError):
        qeltrix.verify(path)
    with pytest.raises(CorruptContainerError):
        qeltrix.info(path)


# ---------------------------------------------------------------------------- not a container

@pytest.mark.parametrize("size", [100, 100_000])
def test_random_bytes_are_not_a_container(tmp_path, key, size):
    path = tmp_path / "random.qltx"
    path.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    with pytest.raises(NotAContainerError) as ei:
        qeltrix.unpack(path, out, key)
    check_path(ei.value, path)
    assert not out.exists()
    with pytest.raises(NotAContainerError):
        qeltrix.info(path)
    with pytest.raises(NotAContainerError):
        qeltrix.Container(path, key)
    with pytest.raises(NotAContainerError):
        qeltrix.seek_extract(path, 0, 1, key)
    with pytest.raises(NotAContainerError):
        qeltrix.verify(path)
    with pytest.raises(NotAContainerError):
        qeltrix.verify(path, key)


def test_unsupported_version(tmp_path, key, pack_to):
    path = pack_to(b"x" * 5000, key)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, 9)  # header version field
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedVersionError) as ei:
        qeltrix.info(path)
    check_path(ei.value, path)
    with pytest.raises(UnsupportedVersionError):
        qeltrix.unpack(path, tmp_path / "out", key)
    assert not (tmp_path / "out").exists()


def test_missing_file_is_file_not_found(tmp_path, key):
    missing = tmp_path / "missing.qltx"
    with pytest.raises(FileNotFoundError):
        qeltrix.info(missing)
    with pytest.raises(FileNotFoundError):
        qeltrix.Container(missing, key)
    with pytest.raises(FileNotFoundError):
        qeltrix.seek_extract(missing, 0, 1, key)
    with pytest.raises(FileNotFoundError):
        qeltrix.verify(missing)


def test_bad_key_argument_types(tmp_path, key, pack_to):
    path = pack_to(b"abc", key)
    with pytest.raises((TypeError, ValueError)):
        qeltrix.unpack(path, tmp_path / "out", b"too short")
    with pytest.raises((TypeError, ValueError)):
        qeltrix.unpack(path, tmp_path / "out", "a str is not a key")
    assert not (tmp_path / "out").exists()
