"""Shared fixtures for the qeltrix Python package's tests.

Helpers live here as fixtures (not importable functions), so the suite runs the same under
pytest's default and `--import-mode=importlib`. Sizes are small: the whole suite should take
seconds, even against a debug build of the extension.

Environment:
    QELTRIX_BIN   path of the `qeltrix` CLI binary (target/debug/qeltrix or target/release/qeltrix);
                  needed by the interop tests, which fail (not skip) without it.
"""

import os
import random
import urllib.request

import pytest

import qeltrix

# Block size used throughout: small, so a few hundred KiB cross several block boundaries.
BS = 1 << 16


def _make_data(n, seed=0):
    """n deterministic pseudo-random bytes (incompressible)."""
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def _make_text(n, seed=0):
    """n deterministic bytes of log-like text (compresses well)."""
    rng = random.Random(seed)
    words = [b"GET", b"POST", b"/api/v1/items", b"status=200", b"status=404", b"user=u00042",
             b"dur_ms=12", b"INFO", b"WARN", b"request", b"served", b"from", b"cache"]
    out = bytearray()
    line = 0
    while len(out) < n:
        out += b"2024-05-01 12:00:%02d " % (line % 60)
        out += b" ".join(rng.choice(words) for _ in range(8)) + b"\n"
        line += 1
    return bytes(out[:n])


@pytest.fixture
def make_data():
    return _make_data


@pytest.fixture
def make_text():
    return _make_text


@pytest.fixture
def key():
    return qeltrix.Key.generate()


@pytest.fixture
def other_key():
    return qeltrix.Key.generate()


@pytest.fixture
def key_file(tmp_path, key):
    """The `key` fixture saved as a key file (the CLI's --key-file format)."""
    path = tmp_path / "test.key"
    key.save(path)
    return path


@pytest.fixture
def pack_to(tmp_path):
    """pack_to(data, key, name="c.qltx", **options) -> path of a container holding `data`."""

    def _pack(data, key, name="c.qltx", **options):
        options.setdefault("block_size", BS)
        dst = tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        result = qeltrix.pack(bytes(data), dst, key, **options)
        assert result.original_size == len(data)
        assert result.container_size == os.path.getsize(dst)
        return dst

    return _pack


@pytest.fixture(scope="session")
def qeltrix_bin():
    """The CLI binary named by QELTRIX_BIN. A missing variable is a failure, not a skip:
    scripts/test.sh always sets it, and a silently skipped interop test proves nothing."""
    path = os.environ.get("QELTRIX_BIN")
    if not path:
        pytest.fail(
            "QELTRIX_BIN is not set: set it to the qeltrix CLI binary "
            "(e.g. QELTRIX_BIN=$PWD/target/debug/qeltrix after `cargo build`) to run the "
            "CLI interop tests",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"QELTRIX_BIN={path!r} is not an executable file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def http():
    """A urllib opener that ignores any http_proxy/HTTP_PROXY of the environment: the servers
    under test listen on 127.0.0.1, and a proxy would answer in their place."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))
