"""StreamPacker: a container written piece by piece into any binary writable file-like."""

import io
import random

import pytest

import qeltrix

BS = 1 << 16


def odd_pieces(data, seed=0):
    """data cut into pieces of awkward sizes, including empty ones and ones larger than a block."""
    rng = random.Random(seed)
    sizes = [0, 1, 2, 7, 4095, 4097, BS - 1, BS + 1, 3 * BS + 5, 13]
    pos = 0
    while pos < len(data):
        n = rng.choice(sizes)
        yield data[pos:pos + n]
        pos += n


def unpacked(path, key):
    sink = io.BytesIO()
    qeltrix.unpack(path, sink, key)
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, BS, 5 * BS + 123])
def test_stream_into_bytesio(tmp_path, key, make_data, size):
    data = make_data(size, seed=size)
    buf = io.BytesIO()
    sp = qeltrix.StreamPacker(buf, key, block_size=BS)
    written = 0
    for piece in odd_pieces(data, seed=size):
        assert sp.write(piece) == len(piece)
        written += len(piece)
    assert written == size
    result = sp.close()
    assert isinstance(result, qeltrix.PackResult)
    assert result.original_size == size
    assert result.container_size == len(buf.getvalue())
    assert result.blocks == (size + BS - 1) // BS

    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    assert unpacked(path, key) == data
    with qeltrix.Container(path, key) as c:
        assert c.size == size
        assert c.read() == data
    assert qeltrix.seek_extract(path, max(0, size - 10), 20, key) == data[max(0, size - 10):]


def test_stream_into_file(tmp_path, key, make_data):
    data = make_data(4 * BS + 77, seed=1)
    path = tmp_path / "s.qltx"
    with open(path, "wb") as f:
        with qeltrix.StreamPacker(f, key, block_size=BS) as sp:
            for piece in odd_pieces(data, seed=1):
                sp.write(piece)
    out = tmp_path / "out.bin"
    assert qeltrix.unpack(path, out, key) == len(data)
    assert out.read_bytes() == data


def test_write_accepts_buffers(tmp_path, key, make_data):
    data = make_data(3 * BS, seed=2)
    buf = io.BytesIO()
    with qeltrix.StreamPacker(buf, key, block_size=BS) as sp:
        assert sp.write(bytearray(data[:BS])) == BS
        assert sp.write(memoryview(data)[BS:2 * BS]) == BS
        assert sp.write(data[2 * BS:]) == BS
    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    assert unpacked(path, key) == data


def test_flush_block_seals_partial_blocks(tmp_path, key, make_data):
    """flush_block() seals a short block early; the plaintext is unchanged and the index records
    the short blocks."""
    data = make_data(2 * BS + 300, seed=3)
    buf = io.BytesIO()
    sp = qeltrix.StreamPacker(buf, key, block_size=BS)
    sp.write(data[:100])
    sp.flush_block()  # block 0: 100 bytes
    sp.flush_block()  # nothing pending: no empty block
    sp.write(data[100:BS + 200])
    sp.flush_block()  # block 1: 64 KiB, block 2: 100 bytes
    sp.write(data[BS + 200:])
    result = sp.close()
    assert result.original_size == len(data)
    assert result.blocks >= 4
    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    assert unpacked(path, key) == data
    for offset, length in [(0, 150), (90, 20), (BS, 300), (BS + 150, BS), (len(data) - 5, 10)]:
        assert qeltrix.seek_extract(path, offset, length, key) == data[offset:offset + length]


def test_options(tmp_path, key, make_text):
    data = make_text(3 * BS, seed=4)
    buf = io.BytesIO()
    with qeltrix.StreamPacker(buf, key, block_size=4096, cipher="chacha", compress="always",
                              workers=2) as sp:
        sp.write(data)
    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    info = qeltrix.info(path)
    assert info["cipher"] == "chacha20-poly1305"
    assert info["block_size"] == 4096
    assert info["container_size"] < len(data)  # compressed
    assert unpacked(path, key) == data


def test_close_returns_result_once_context_exit(tmp_path, key):
    buf = io.BytesIO()
    with qeltrix.StreamPacker(buf, key, block_size=BS) as sp:
        sp.write(b"abc")
    size = len(buf.getvalue())
    assert size > 3
    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    assert unpacked(path, key) == b"abc"


def test_exception_leaves_output_unfinished(tmp_path, key, make_data):
    """Leaving the with block by an exception does not finish the container: it has no footer
    and reads as incomplete, never as a shorter valid container."""
    data = make_data(2 * BS + 10, seed=5)
    path = tmp_path / "s.qltx"
    with open(path, "wb") as f:
        with pytest.raises(RuntimeError, match="boom"):
            with qeltrix.StreamPacker(f, key, block_size=BS) as sp:
                sp.write(data)
                raise RuntimeError("boom")
    out = tmp_path / "out.bin"
    with pytest.raises(qeltrix.CorruptContainerError):
        qeltrix.unpack(path, out, key)
    assert not out.exists()


def test_writes_into_a_writer_without_seek(tmp_path, key, make_data):
    """A sink that can only write (a socket's makefile, a pipe) is enough."""

    class WriteOnly(io.RawIOBase):
        def __init__(self):
            self.chunks = []

        def writable(self):
            return True

        def write(self, b):
            self.chunks.append(bytes(b))
            return len(b)

    data = make_data(3 * BS + 1, seed=6)
    sink = WriteOnly()
    with qeltrix.StreamPacker(sink, key, block_size=BS) as sp:
        for piece in odd_pieces(data, seed=6):
            sp.write(piece)
    path = tmp_path / "s.qltx"
    path.write_bytes(b"".join(sink.chunks))
    assert unpacked(path, key) == data
