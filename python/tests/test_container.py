"""Container as a Python file object: zipfile, tarfile and io.BufferedReader on top of it, and
read/seek/tell semantics checked step by step against io.BytesIO over the same bytes."""

import io
import random
import tarfile
import zipfile

import pytest

import qeltrix

BS = 1 << 16


def build_zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (data, method) in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 5, 1, 12, 0, 0)), data,
                        compress_type=method)
    return buf.getvalue()


def test_zipfile_reads_members_from_container(tmp_path, key, pack_to, make_data, make_text):
    members = {
        "readme.txt": (make_text(10_000, seed=1), zipfile.ZIP_DEFLATED),
        "big.bin": (make_data(150_000, seed=2), zipfile.ZIP_STORED),
        "dir/log.txt": (make_text(70_000, seed=3), zipfile.ZIP_DEFLATED),
        "empty": (b"", zipfile.ZIP_STORED),
        "tail.bin": (make_data(BS + 3, seed=4), zipfile.ZIP_STORED),
    }
    archive = build_zip(members)
    assert len(archive) > 3 * BS  # the central directory is in the last block, members span several
    path = pack_to(archive, key, name="archive.zip.qltx")

    # One member out of the packed zip.
    with qeltrix.Container(path, key) as c:
        assert zipfile.ZipFile(c).read("dir/log.txt") == members["dir/log.txt"][0]

    with qeltrix.Container(path, key) as c, zipfile.ZipFile(c) as zf:
        assert sorted(zf.namelist()) == sorted(members)
        assert zf.testzip() is None  # reads every member, CRC-checked
        for name, (data, _) in members.items():
            assert zf.read(name) == data
        with zf.open("big.bin") as member:
            member.seek(100_000)
            assert member.read(5000) == members["big.bin"][0][100_000:105_000]


def build_tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1714564800
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["r", "r:"])
def test_tarfile_reads_members_from_container(tmp_path, key, pack_to, make_data, make_text, mode):
    """mode "r" (= "r:*") probes the compressions first, seeking back to 0 after each probe."""
    members = {
        "a.txt": make_text(3000, seed=5),
        "sub/b.bin": make_data(2 * BS + 11, seed=6),
        "c.bin": make_data(777, seed=7),
    }
    path = pack_to(build_tar(members), key, name="t.tar.qltx")
    with qeltrix.Container(path, key) as c, tarfile.open(fileobj=c, mode=mode) as tf:
        assert sorted(tf.getnames()) == sorted(members)
        for name, data in members.items():
            assert tf.extractfile(name).read() == data
        # Out of order: the last member, then the first again.
        assert tf.extractfile("c.bin").read() == members["c.bin"]
        assert tf.extractfile("a.txt").read() == members["a.txt"]


def test_buffered_reader(tmp_path, key, pack_to, make_data):
    data = make_data(3 * BS + 17, seed=8)
    path = pack_to(data, key)
    raw = qeltrix.Container(path, key)
    with io.BufferedReader(raw, buffer_size=8192) as br:
        assert br.read(100) == data[:100]
        assert br.peek(1)[:1] == data[100:101]
        assert br.seek(BS - 3) == BS - 3
        assert br.read(10) == data[BS - 3:BS + 7]
        assert br.tell() == BS + 7
        assert br.seek(-20, io.SEEK_END) == len(data) - 20
        assert br.read() == data[-20:]
        assert br.seek(0) == 0
        pieces = []
        rng = random.Random(9)
        while True:
            chunk = br.read(rng.choice([1, 13, 4096, 5000, BS + 1]))
            if not chunk:
                break
            pieces.append(chunk)
        assert b"".join(pieces) == data
    assert raw.closed


def test_textiowrapper_lines(tmp_path, key, pack_to, make_text):
    text = make_text(2 * BS + 500, seed=10)
    path = pack_to(text, key)
    with io.TextIOWrapper(io.BufferedReader(qeltrix.Container(path, key)), encoding="ascii") as t:
        lines = t.readlines()
    assert "".join(lines).encode() == text


def test_io_protocol(tmp_path, key, pack_to, make_data):
    data = make_data(2 * BS + 5, seed=11)
    path = pack_to(data, key)
    c = qeltrix.Container(path, key)
    try:
        assert isinstance(c, io.RawIOBase)
        assert isinstance(c, io.IOBase)
        assert c.readable() and c.seekable() and not c.writable()
        assert not c.closed
        assert c.name == str(path)
        assert c.size == len(data)
        assert c.tell() == 0

        buf = bytearray(1000)
        assert c.readinto(buf) == 1000 and bytes(buf) == data[:1000]
        mv = memoryview(bytearray(BS))
        assert c.readinto(mv) == BS and mv.tobytes() == data[1000:1000 + BS]
        assert c.tell() == 1000 + BS
        assert c.read(0) == b""
        assert c.readall() == data[1000 + BS:]
        assert c.readinto(bytearray(10)) == 0  # at the end

        end = c.tell()
        assert c.read_at(BS - 2, 4) == data[BS - 2:BS + 2]
        assert c.tell() == end  # read_at does not move the position
        assert c.read_at(0, len(data) + 10) == data
        assert c.read_at(len(data), 5) == b""
        assert c.read_at(len(data) + 100, 5) == b""
    finally:
        c.close()
    assert c.closed
    c.close()  # closing twice is harmless, as for every io object
    with pytest.raises(ValueError):
        c.read(1)
    with pytest.raises(ValueError):
        c.seek(0)


def test_context_manager_closes(tmp_path, key, pack_to):
    path = pack_to(b"hello", key)
    with qeltrix.Container(path, key) as c:
        assert c.read() == b"hello"
    assert c.closed


def test_empty_container(tmp_path, key, pack_to):
    path = pack_to(b"", key)
    with qeltrix.Container(path, key) as c:
        assert c.size == 0
        assert c.read() == b""
        assert c.read(10) == b""
        assert c.seek(0, io.SEEK_END) == 0


def test_seek_tell_whence_against_bytesio(tmp_path, key, pack_to, make_data):
    """The same random sequence of seeks (SEEK_SET, SEEK_CUR, SEEK_END, past the end) and reads
    on the Container and on a BytesIO gives the same positions and bytes at every step."""
    data = make_data(3 * BS + 17, seed=12)
    path = pack_to(data, key)
    model = io.BytesIO(data)
    n = len(data)
    rng = random.Random(13)
    with qeltrix.Container(path, key) as c:
        for step in range(400):
            pos = model.tell()
            op = rng.randrange(7)
            if op == 0:
                target = rng.choice([0, 1, BS - 1, BS, BS + 1, n - 1, n, n + 5, rng.randrange(n)])
                args = (target, io.SEEK_SET)
            elif op == 1:
                args = (rng.randrange(-pos, n - pos + 10), io.SEEK_CUR)
            elif op == 2:
                args = (-rng.randrange(0, n + 1) if rng.random() < 0.9 else rng.randrange(20),
                        io.SEEK_END)
            if op <= 2:
                assert c.seek(*args) == model.seek(*args), (step, args)
            elif op == 3:
                size = rng.choice([0, 1, 7, 4096, BS - 1, BS + 1, 3 * BS])
                assert c.read(size) == model.read(size), (step, pos, size)
            elif op == 4:
                assert c.read() == model.read(), (step, pos)
            elif op == 5:
                size = rng.choice([1, 100, BS + 7])
                a, b = bytearray(size), bytearray(size)
                assert c.readinto(a) == model.readinto(b), (step, pos, size)
                assert a == b
            else:
                assert c.seek(0, io.SEEK_CUR) == model.seek(0, io.SEEK_CUR)
            assert c.tell() == model.tell(), step


def test_seek_whence_details(tmp_path, key, pack_to, make_data):
    data = make_data(BS + 100, seed=14)
    path = pack_to(data, key)
    with qeltrix.Container(path, key) as c:
        assert c.seek(10) == 10
        assert c.seek(5, io.SEEK_CUR) == 15
        assert c.seek(-5, io.SEEK_CUR) == 10
        assert c.seek(0, io.SEEK_END) == len(data)
        assert c.seek(-1, io.SEEK_END) == len(data) - 1
        assert c.read() == data[-1:]
        assert c.seek(len(data) + 1000) == len(data) + 1000  # past the end is allowed...
        assert c.read(10) == b""  # ...and reads nothing
        assert c.tell() == len(data) + 1000
        assert c.seek(BS) == BS
        with pytest.raises((ValueError, OSError)):
            c.seek(-1)
        with pytest.raises((ValueError, OSError)):
            c.seek(0, 3)
        # A failed seek does not move the position.
        assert c.tell() == BS
        assert c.read(4) == data[BS:BS + 4]


def test_two_containers_on_one_file_are_independent(tmp_path, key, pack_to, make_data):
    data = make_data(2 * BS, seed=15)
    path = pack_to(data, key)
    with qeltrix.Container(path, key) as a, qeltrix.Container(path, key) as b:
        a.seek(BS)
        assert b.read(10) == data[:10]
        assert a.read(10) == data[BS:BS + 10]
