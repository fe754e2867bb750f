"""seek_extract against slices of the original: inside blocks, across block boundaries, at and
past the end; the `key` and `master_key=` spellings."""

import random

import pytest

import qeltrix

BS = 1 << 16
N = 3 * BS + 17  # three full blocks and a 17-byte tail

RANGES = [
    (0, 0),
    (0, 1),
    (0, 100),
    (1, 4095),
    (4095, 2),  # across a 4 KiB page
    (4096, 4096),
    (BS - 1, 1),  # last byte of block 0
    (BS - 1, 2),  # across blocks 0 and 1
    (BS - 10, 20),
    (BS, 1),  # first byte of block 1
    (BS, BS),  # exactly block 1
    (BS + 1, BS),  # across blocks 1 and 2
    (2 * BS - 3, BS + 6),  # touches blocks 1, 2 and 3
    (0, N),  # everything
    (3 * BS, 17),  # the whole short last block
    (3 * BS + 16, 1),  # the last byte
    (N - 1, 1),
    (N - 1, 10),  # runs past the end: what exists
    (0, N + 1000),
    (N - 5, 1 << 30),
    (N, 0),
    (N, 1),  # at the end: nothing
    (N + 5, 10),  # past the end: nothing
    (1 << 40, 5),
]


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    data = random.Random(11).randbytes(N)
    key = qeltrix.Key.generate()
    path = tmp_path_factory.mktemp("seek") / "c.qltx"
    qeltrix.pack(data, path, key, block_size=BS)
    return path, key, data


@pytest.mark.parametrize("offset,length", RANGES)
def test_seek_extract_matches_slice(container, offset, length):
    path, key, data = container
    got = qeltrix.seek_extract(path, offset, length, key)
    assert isinstance(got, bytes)
    assert got == data[offset:offset + length]


def test_seek_extract_random_ranges(container):
    path, key, data = container
    rng = random.Random(12)
    for _ in range(60):
        offset = rng.randrange(0, N + 10)
        length = rng.choice([1, 7, 4096, BS - 1, BS + 1, rng.randrange(0, 2 * BS)])
        assert qeltrix.seek_extract(path, offset, length, key) == data[offset:offset + length], (
            offset, length)


def test_seek_extract_str_path_and_keyword_key(container):
    path, key, data = container
    assert qeltrix.seek_extract(str(path), BS - 3, 6, key=key) == data[BS - 3:BS + 3]


@pytest.mark.parametrize("offset,length", [(0, 10), (BS - 5, 10), (2 * BS + 100, BS), (N - 3, 100), (N, 4)])
def test_seek_extract_master_key_keyword(tmp_path, offset, length):
    """The original API's spelling: a raw 32-byte master key from random_master_key(), passed as
    master_key=; the same bytes given as key= read the same."""
    data = random.Random(13).randbytes(N)
    mk = qeltrix.random_master_key()
    path = tmp_path / "c.qltx"
    qeltrix.pack(data, path, mk, block_size=BS)
    want = data[offset:offset + length]
    assert qeltrix.seek_extract(path, offset, length, master_key=mk) == want
    assert qeltrix.seek_extract(path, offset, length, key=mk) == want
    assert qeltrix.seek_extract(str(path), offset, length, None, master_key=mk) == want


def test_seek_extract_needs_a_key(container):
    path, _, _ = container
    with pytest.raises((TypeError, ValueError)):
        qeltrix.seek_extract(path, 0, 10)


@pytest.mark.parametrize("offset,length", [(-1, 10), (0, -1), (-BS, -BS)])
def test_seek_extract_negative_is_value_error(container, offset, length):
    path, key, _ = container
    with pytest.raises(ValueError):
        qeltrix.seek_extract(path, offset, length, key)


def test_seek_extract_compressed_blocks(tmp_path, make_text):
    """Ranges inside and across zstd-compressed blocks."""
    data = make_text(3 * BS + 17, seed=14)
    key = qeltrix.Key.generate()
    path = tmp_path / "c.qltx"
    result = qeltrix.pack(data, path, key, block_size=BS, compress="always")
    assert result.blocks == 4
    assert result.compressed_blocks >= 3  # the full blocks; a 17-byte tail may stay stored
    for offset, length in RANGES:
        assert qeltrix.seek_extract(path, offset, length, key) == data[offset:offset + length], (
            offset, length)


def test_seek_extract_empty_container(tmp_path):
    key = qeltrix.Key.generate()
    path = tmp_path / "empty.qltx"
    qeltrix.pack(b"", path, key, block_size=BS)
    assert qeltrix.seek_extract(path, 0, 10, key) == b""
    assert qeltrix.seek_extract(path, 5, 10, key) == b""
