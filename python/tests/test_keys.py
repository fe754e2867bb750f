"""Key: generate, from_bytes, from_file, save, from_passphrase; keygen(); random_master_key()."""

import io
import os
import stat

import pytest

import qeltrix
from qeltrix import Key

BS = 1 << 16
DATA = bytes(range(256)) * 300  # 76,800 bytes: two blocks


def round_trips(tmp_path, pack_key, unpack_key, name="c.qltx"):
    path = tmp_path / name
    qeltrix.pack(DATA, path, pack_key, block_size=BS)
    sink = io.BytesIO()
    qeltrix.unpack(path, sink, unpack_key)
    return sink.getvalue() == DATA


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generate(tmp_path):
    k = Key.generate()
    assert isinstance(k, Key)
    assert k.kind == "key-file"
    assert round_trips(tmp_path, k, k)
    # Two keys are different keys.
    with pytest.raises(qeltrix.WrongKeyError):
        round_trips(tmp_path, k, Key.generate(), name="d.qltx")


def test_from_bytes(tmp_path):
    raw = os.urandom(32)
    a, b = Key.from_bytes(raw), Key.from_bytes(bytes(raw))
    assert a.kind == "key-file"
    assert round_trips(tmp_path, a, b)
    assert round_trips(tmp_path, a, raw, name="d.qltx")  # raw bytes are the same key


@pytest.mark.parametrize("bad", [b"", os.urandom(31), os.urandom(33), os.urandom(64)])
def test_from_bytes_wrong_length(bad):
    with pytest.raises(ValueError):
        Key.from_bytes(bad)


def test_save_and_from_file(tmp_path):
    k = Key.generate()
    path = tmp_path / "k.key"
    assert k.save(path) is None
    assert path.exists()
    assert mode_of(path) == 0o600
    loaded = Key.from_file(path)
    assert loaded.kind == "key-file"
    assert round_trips(tmp_path, k, loaded)
    assert round_trips(tmp_path, Key.from_file(str(path)), k, name="d.qltx")


def test_save_refuses_existing_file(tmp_path):
    path = tmp_path / "k.key"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError):
        Key.generate().save(path)
    assert path.read_text() == "precious\n"


@pytest.mark.parametrize("form", ["hex", "hex-newline", "HEX", "raw"])
def test_from_file_formats(tmp_path, form):
    """Key files: 64 hex digits (with or without a newline) or 32 raw bytes, as the CLI reads."""
    raw = os.urandom(32)
    path = tmp_path / "k.key"
    if form == "hex":
        path.write_text(raw.hex())
    elif form == "hex-newline":
        path.write_text(raw.hex() + "\n")
    elif form == "HEX":
        path.write_text(raw.hex().upper() + "\n")
    else:
        path.write_bytes(raw)
    assert round_trips(tmp_path, Key.from_file(path), raw)


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Key.from_file(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(ValueError):
        Key.from_file(bad)


def test_keygen(tmp_path):
    path = tmp_path / "gen.key"
    k = qeltrix.keygen(path)
    assert isinstance(k, Key)
    assert mode_of(path) == 0o600
    assert round_trips(tmp_path, k, Key.from_file(path))
    with pytest.raises(FileExistsError):
        qeltrix.keygen(path)
    # Without a path: a key, no file.
    before = sorted(os.listdir(tmp_path))
    k2 = qeltrix.keygen()
    assert isinstance(k2, Key)
    assert sorted(os.listdir(tmp_path)) == before
    assert round_trips(tmp_path, k2, k2, name="d.qltx")


def test_random_master_key(tmp_path):
    mk = qeltrix.random_master_key()
    assert type(mk) is bytes
    assert len(mk) == 32
    assert qeltrix.random_master_key() != mk
    assert round_trips(tmp_path, mk, mk)
    assert round_trips(tmp_path, mk, Key.from_bytes(mk), name="d.qltx")


def test_passphrase_round_trip(tmp_path):
    """The one passphrase test (PBKDF2 is slow by design): 100,000 iterations, the floor the CLI
    warns below."""
    k = Key.from_passphrase("correct horse battery staple", iterations=100_000)
    assert k.kind == "passphrase"
    path = tmp_path / "p.qltx"
    qeltrix.pack(DATA, path, k, block_size=BS)
    # A reader needs only the passphrase: the iteration count is stored in the slot.
    again = Key.from_passphrase("correct horse battery staple")
    with qeltrix.Container(path, again) as c:
        assert c.read() == DATA
    with pytest.raises(qeltrix.WrongKeyError):
        qeltrix.Container(path, Key.from_passphrase("wrong horse battery staple"))
