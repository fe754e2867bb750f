"""The Python package and the `qeltrix` CLI ($QELTRIX_BIN) read each other's containers and key
files."""

import io
import os
import subprocess

import qeltrix

BS = 1 << 16
N = 3 * BS + 17


def run(qeltrix_bin, *args, input=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("QELTRIX_KEY_FILE", "QELTRIX_PASSPHRASE", "QELTRIX_MAX_KDF_ITERATIONS")}
    p = subprocess.run([qeltrix_bin, *map(str, args)], input=input, capture_output=True,
                       env=env, timeout=120)
    assert p.returncode == 0, (
        f"{qeltrix_bin} {' '.join(map(str, args))} exited {p.returncode}: "
        f"{p.stderr.decode(errors='replace')}")
    return p.stdout


def py_unpack(path, key):
    sink = io.BytesIO()
    qeltrix.unpack(path, sink, key)
    return sink.getvalue()


def test_python_pack_cli_unpack(tmp_path, qeltrix_bin, key, key_file, make_data):
    """Key.save writes a key file the CLI reads; the CLI unpacks what pack() wrote."""
    data = make_data(N, seed=1)
    src = tmp_path / "plain.bin"
    src.write_bytes(data)
    qeltrix.pack(src, tmp_path / "py.qltx", key, block_size=BS)
    run(qeltrix_bin, "unpack", tmp_path / "py.qltx", "-o", tmp_path / "out.bin",
        "--key-file", key_file, "-q")
    assert (tmp_path / "out.bin").read_bytes() == data
    run(qeltrix_bin, "verify", tmp_path / "py.qltx", "--key-file", key_file, "-q")
    run(qeltrix_bin, "verify", "--no-key", tmp_path / "py.qltx", "-q")
    out = run(qeltrix_bin, "seek", tmp_path / "py.qltx", "--offset", BS - 5, "--length", 10,
              "-o", "-", "--key-file", key_file, "-q")
    assert out == data[BS - 5:BS + 5]


def test_cli_pack_python_unpack(tmp_path, qeltrix_bin, make_data):
    """keygen(path) writes a key file the CLI packs with; Python unpacks the CLI's container."""
    kf = tmp_path / "gen.key"
    key = qeltrix.keygen(kf)
    data = make_data(N, seed=2)
    (tmp_path / "plain.bin").write_bytes(data)
    run(qeltrix_bin, "pack", tmp_path / "plain.bin", "-o", tmp_path / "cli.qltx",
        "--key-file", kf, "--block-size", BS // 1024, "-q")
    assert py_unpack(tmp_path / "cli.qltx", key) == data
    assert py_unpack(tmp_path / "cli.qltx", qeltrix.Key.from_file(kf)) == data
    out = tmp_path / "out.bin"
    assert qeltrix.unpack(tmp_path / "cli.qltx", out, key) == N
    assert out.read_bytes() == data
    with qeltrix.Container(tmp_path / "cli.qltx", key) as c:
        c.seek(BS - 1)
        assert c.read(2) == data[BS - 1:BS + 1]
    info = qeltrix.info(tmp_path / "cli.qltx")
    assert info["block_size"] == BS and info["size"] == N
    assert qeltrix.verify(tmp_path / "cli.qltx")["blocks"] == 4


def test_cli_keygen_python_pack(tmp_path, qeltrix_bin, make_data):
    """A key file made by `qeltrix keygen` loads with Key.from_file."""
    kf = tmp_path / "cli.key"
    run(qeltrix_bin, "keygen", "-o", kf, "-q")
    key = qeltrix.Key.from_file(kf)
    data = make_data(BS + 1, seed=3)
    qeltrix.pack(data, tmp_path / "py.qltx", key, block_size=BS, cipher="chacha")
    run(qeltrix_bin, "unpack", tmp_path / "py.qltx", "-o", tmp_path / "out.bin",
        "--key-file", kf, "-q")
    assert (tmp_path / "out.bin").read_bytes() == data


def test_cli_stdin_stream_python_reads(tmp_path, qeltrix_bin, key, key_file, make_data):
    """A container the CLI packed from stdin (streaming flag, unpatched header)."""
    data = make_data(2 * BS + 99, seed=4)
    run(qeltrix_bin, "pack", "-", "-o", tmp_path / "s.qltx", "--key-file", key_file,
        "--block-size", BS // 1024, "--compress", "never", "-q", input=data)
    assert py_unpack(tmp_path / "s.qltx", key) == data
    assert qeltrix.seek_extract(tmp_path / "s.qltx", BS + 7, 100, key) == data[BS + 7:BS + 107]


def test_stream_packer_cli_unpack(tmp_path, qeltrix_bin, key, key_file, make_data):
    data = make_data(2 * BS + 99, seed=5)
    buf = io.BytesIO()
    with qeltrix.StreamPacker(buf, key, block_size=BS) as sp:
        sp.write(data[:1000])
        sp.write(data[1000:])
    (tmp_path / "s.qltx").write_bytes(buf.getvalue())
    run(qeltrix_bin, "unpack", tmp_path / "s.qltx", "-o", tmp_path / "out.bin",
        "--key-file", key_file, "-q")
    assert (tmp_path / "out.bin").read_bytes() == data
    run(qeltrix_bin, "verify", "--no-key", tmp_path / "s.qltx", "-q")


def test_raw_master_key_file(tmp_path, qeltrix_bin, make_data):
    """random_master_key() bytes written raw to a file are a CLI key file (32 raw bytes)."""
    mk = qeltrix.random_master_key()
    kf = tmp_path / "raw.key"
    kf.write_bytes(mk)
    data = make_data(5000, seed=6)
    qeltrix.pack(data, tmp_path / "py.qltx", mk, block_size=BS)
    out = run(qeltrix_bin, "unpack", tmp_path / "py.qltx", "-o", "-", "--key-file", kf, "-q")
    assert out == data
