"""info() without a key, verify() with and without one."""

import io
import os
import subprocess

import pytest

import qeltrix

BS = 1 << 16
INFO_KEYS = {"path", "format", "cipher", "block_size", "size", "blocks", "container_size", "root",
             "container_id", "signer", "signature"}


@pytest.mark.parametrize("size", [0, 1, BS, 3 * BS + 17])
def test_info(tmp_path, key, make_data, size):
    data = make_data(size, seed=size)
    path = tmp_path / "c.qltx"
    result = qeltrix.pack(data, path, key, block_size=BS)
    info = qeltrix.info(path)
    assert isinstance(info, dict)
    assert INFO_KEYS <= set(info), INFO_KEYS - set(info)
    assert os.path.basename(info["path"]) == "c.qltx"
    assert info["format"] == 2 == result.format
    assert info["cipher"] == "aes-256-gcm"
    assert info["block_size"] == BS
    assert info["size"] == size
    assert info["blocks"] == (size + BS - 1) // BS == result.blocks
    assert info["container_size"] == os.path.getsize(path) == result.container_size
    assert info["container_id"] == result.container_id
    assert len(info["container_id"]) == 32
    assert info["root"] == result.root
    assert info["root"] is None or isinstance(info["root"], str)
    assert (info["signer"], info["signature"]) == (None, "none")
    # Also for a str path.
    assert qeltrix.info(str(path))["container_id"] == result.container_id


def test_info_chacha_and_block_size(tmp_path, key, make_data):
    path = tmp_path / "c.qltx"
    qeltrix.pack(make_data(10_000), path, key, block_size=4096, cipher="chacha")
    info = qeltrix.info(path)
    assert info["cipher"] == "chacha20-poly1305"
    assert info["block_size"] == 4096
    assert info["blocks"] == 3


def test_info_needs_no_key_and_differs_per_container(tmp_path, key, make_data):
    data = make_data(1000)
    qeltrix.pack(data, tmp_path / "a.qltx", key, block_size=BS)
    qeltrix.pack(data, tmp_path / "b.qltx", key, block_size=BS)
    a, b = qeltrix.info(tmp_path / "a.qltx"), qeltrix.info(tmp_path / "b.qltx")
    assert a["container_id"] != b["container_id"]
    assert a["size"] == b["size"] == 1000


@pytest.mark.parametrize("size", [0, 4097, 3 * BS + 17])
def test_verify_keyless_and_keyed(tmp_path, key, make_data, size):
    path = tmp_path / "c.qltx"
    qeltrix.pack(make_data(size, seed=3), path, key, block_size=BS)
    blocks = (size + BS - 1) // BS

    keyless = qeltrix.verify(path)
    assert keyless["keyless"] is True
    assert keyless["blocks"] == blocks
    assert keyless["size"] == size
    assert os.path.basename(keyless["path"]) == "c.qltx"

    keyed = qeltrix.verify(path, key)
    assert keyed["keyless"] is False
    assert keyed["blocks"] == blocks
    assert keyed["size"] == size

    # key= as a keyword, and a raw 32-byte key.
    assert qeltrix.verify(str(path), key=key)["blocks"] == blocks
    raw = os.urandom(32)
    qeltrix.pack(make_data(size, seed=3), tmp_path / "r.qltx", raw, block_size=BS)
    assert qeltrix.verify(tmp_path / "r.qltx", raw)["size"] == size


def test_verify_stream_packed(tmp_path, key, make_data):
    data = make_data(2 * BS + 9, seed=4)
    buf = io.BytesIO()
    with qeltrix.StreamPacker(buf, key, block_size=BS) as sp:
        sp.write(data)
    path = tmp_path / "s.qltx"
    path.write_bytes(buf.getvalue())
    assert qeltrix.verify(path, key)["size"] == len(data)
    assert qeltrix.verify(path)["blocks"] == 3
    assert qeltrix.info(path)["size"] == len(data)


def test_info_shows_a_signature_the_cli_made_and_one_that_no_longer_holds(
        tmp_path, key, make_data, qeltrix_bin):
    path = tmp_path / "c.qltx"
    qeltrix.pack(make_data(3 * BS + 5), path, key, block_size=BS)
    made = subprocess.run([qeltrix_bin, "keygen", "--ed25519", "-o", str(tmp_path / "s.key")],
                          capture_output=True, text=True, check=True)
    signer = next(w for w in (made.stdout + made.stderr).split() if w.startswith("qeltrix-ed25519:"))
    subprocess.run([qeltrix_bin, "-q", "sign", "-k", str(tmp_path / "s.key"), str(path)],
                   check=True)
    info = qeltrix.info(path)
    assert (info["signer"], info["signature"]) == (signer, "valid")
    # A byte of the signature itself changed (the record is header bytes 896..1024): still
    # a readable container, but a signature that proves nothing.
    data = bytearray(path.read_bytes())
    data[960] ^= 1
    path.write_bytes(bytes(data))
    info = qeltrix.info(path)
    assert info["signer"] is None
    assert info["signature"].startswith("invalid: "), info["signature"]
