"""pack()'s options: cipher, compress, block_size, overwrite, progress_cb."""

import io
import threading

import pytest

import qeltrix

BS = 1 << 16


def unpacked(path, key):
    sink = io.BytesIO()
    qeltrix.unpack(path, sink, key)
    return sink.getvalue()


@pytest.mark.parametrize("cipher,name", [
    ("aes-256-gcm", "aes-256-gcm"),
    ("aes", "aes-256-gcm"),
    ("chacha20-poly1305", "chacha20-poly1305"),
    ("chacha", "chacha20-poly1305"),
])
def test_cipher(tmp_path, key, make_data, cipher, name):
    data = make_data(2 * BS + 1, seed=1)
    path = tmp_path / "c.qltx"
    qeltrix.pack(data, path, key, block_size=BS, cipher=cipher)
    assert qeltrix.info(path)["cipher"] == name
    assert unpacked(path, key) == data
    assert qeltrix.seek_extract(path, BS - 1, 2, key) == data[BS - 1:BS + 1]


def test_default_cipher_is_aes(tmp_path, key):
    path = tmp_path / "c.qltx"
    qeltrix.pack(b"x", path, key)
    assert qeltrix.info(path)["cipher"] == "aes-256-gcm"
    assert qeltrix.info(path)["block_size"] == 1 << 20


@pytest.mark.parametrize("bad", ["des", "", "AES-128-GCM", "chacha20"])
def test_bad_cipher(tmp_path, key, bad):
    with pytest.raises(ValueError):
        qeltrix.pack(b"abc", tmp_path / "c.qltx", key, cipher=bad)
    assert not (tmp_path / "c.qltx").exists()


@pytest.mark.parametrize("compress", ["never", False])
def test_compress_never(tmp_path, key, make_text, compress):
    data = make_text(3 * BS, seed=2)
    path = tmp_path / "c.qltx"
    result = qeltrix.pack(data, path, key, block_size=BS, compress=compress)
    assert result.compressed_blocks == 0
    assert result.container_size > len(data)
    assert unpacked(path, key) == data


def test_compress_always(tmp_path, key, make_text, make_data):
    text = make_text(3 * BS, seed=3)
    path = tmp_path / "c.qltx"
    result = qeltrix.pack(text, path, key, block_size=BS, compress="always")
    assert result.compressed_blocks == result.blocks == 3
    assert result.container_size < len(text) // 2
    assert unpacked(path, key) == text


@pytest.mark.parametrize("compress", ["auto", True])
def test_compress_auto(tmp_path, key, make_text, make_data, compress):
    """auto compresses text and stores random data as it is."""
    text = make_text(3 * BS, seed=4)
    result = qeltrix.pack(text, tmp_path / "t.qltx", key, block_size=BS, compress=compress)
    assert result.compressed_blocks == 3
    assert unpacked(tmp_path / "t.qltx", key) == text
    rnd = make_data(3 * BS, seed=4)
    result = qeltrix.pack(rnd, tmp_path / "r.qltx", key, block_size=BS, compress=compress)
    assert result.compressed_blocks == 0
    assert unpacked(tmp_path / "r.qltx", key) == rnd


@pytest.mark.parametrize("bad", ["sometimes", "", "gzip"])
def test_bad_compress(tmp_path, key, bad):
    with pytest.raises(ValueError):
        qeltrix.pack(b"abc", tmp_path / "c.qltx", key, compress=bad)
    assert not (tmp_path / "c.qltx").exists()


@pytest.mark.parametrize("bad", [0, 1, 1000, 4095, 4097, 3 * 4096 + 1, 100_000, 128 << 20,
                                 (64 << 20) + 4096])
def test_invalid_block_size(tmp_path, key, bad):
    with pytest.raises(ValueError):
        qeltrix.pack(b"abc", tmp_path / "c.qltx", key, block_size=bad)
    assert not (tmp_path / "c.qltx").exists()


def test_negative_block_size(tmp_path, key):
    # A negative int may fail the integer conversion (OverflowError) before the range check.
    with pytest.raises((ValueError, OverflowError)):
        qeltrix.pack(b"abc", tmp_path / "c.qltx", key, block_size=-4096)
    assert not (tmp_path / "c.qltx").exists()


@pytest.mark.parametrize("block_size", [4096, 3 * 4096, BS])
def test_valid_block_sizes(tmp_path, key, make_data, block_size):
    data = make_data(3 * block_size + 5, seed=5)
    path = tmp_path / "c.qltx"
    result = qeltrix.pack(data, path, key, block_size=block_size)
    assert result.blocks == 4
    assert qeltrix.info(path)["block_size"] == block_size
    assert unpacked(path, key) == data


def test_overwrite(tmp_path, key, make_data):
    path = tmp_path / "c.qltx"
    path.write_bytes(b"not to be lost")
    with pytest.raises(FileExistsError):
        qeltrix.pack(b"new", path, key)
    assert path.read_bytes() == b"not to be lost"
    data = make_data(BS + 3, seed=6)
    qeltrix.pack(data, path, key, block_size=BS, overwrite=True)
    assert unpacked(path, key) == data
    # Packing over an existing container needs overwrite too.
    with pytest.raises(FileExistsError):
        qeltrix.pack(b"other", path, key, overwrite=False)
    assert unpacked(path, key) == data


def record_progress():
    calls = []

    def cb(done, total):
        calls.append((done, total, threading.get_ident()))

    return calls, cb


@pytest.mark.parametrize("source", ["bytes", "path"])
def test_progress_cb(tmp_path, key, make_data, source):
    data = make_data(5 * BS + 123, seed=7)
    if source == "path":
        src = tmp_path / "plain.bin"
        src.write_bytes(data)
    else:
        src = data
    calls, cb = record_progress()
    qeltrix.pack(src, tmp_path / "c.qltx", key, block_size=BS, progress_cb=cb)
    assert calls, "progress_cb was never called"
    me = threading.get_ident()
    assert all(t == me for _, _, t in calls), "progress_cb must run on the calling thread"
    dones = [d for d, _, _ in calls]
    assert dones == sorted(dones), dones  # never goes back
    assert all(isinstance(d, int) and 0 <= d <= len(data) for d in dones)
    assert all(t == len(data) for _, t, _ in calls), {t for _, t, _ in calls}
    assert calls[-1][0] == calls[-1][1] == len(data)


def test_progress_cb_unknown_total(tmp_path, key, make_data):
    """A file-like source of unknown length: total may be None; done still only grows."""
    data = make_data(3 * BS + 5, seed=8)
    calls, cb = record_progress()
    qeltrix.pack(io.BytesIO(data), tmp_path / "c.qltx", key, block_size=BS, progress_cb=cb)
    assert calls
    dones = [d for d, _, _ in calls]
    assert dones == sorted(dones)
    assert dones[-1] == len(data)
    assert all(t is None or t == len(data) for _, t, _ in calls)


def test_progress_cb_exception_aborts_pack(tmp_path, key, make_data):
    """An exception raised by the callback propagates out of pack() and leaves no output."""

    class Stop(Exception):
        pass

    def cb(done, total):
        raise Stop()

    with pytest.raises(Stop):
        qeltrix.pack(make_data(3 * BS, seed=9), tmp_path / "c.qltx", key, block_size=BS,
                     progress_cb=cb)
    assert not (tmp_path / "c.qltx").exists()
