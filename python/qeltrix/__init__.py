"""Qeltrix: seekable encrypted containers, on the Qeltrix Rust core.

    from qeltrix import pack, unpack, seek_extract, random_master_key
    mk = random_master_key()
    result = pack("input.txt", "output.qltx", mk, block_size=1 << 20, workers=4, progress_cb=cb)
    chunk = seek_extract("output.qltx", offset, length, master_key=mk)

Heavy work (sealing, decrypting, reading, writing, serving) runs without the GIL: threads that
pack or unpack run in parallel. See docs/PYTHON.md in the Qeltrix repository.
"""

import io
import os

from . import _native
from ._native import (
    CorruptContainerError,
    Key,
    NotAContainerError,
    PackResult,
    QeltrixError,
    UnsupportedVersionError,
    WrongKeyError,
    __version__,
    info,
    keygen,
    random_master_key,
    seek_extract,
    unpack,
    verify,
)

__all__ = [
    "pack",
    "unpack",
    "seek_extract",
    "info",
    "verify",
    "Container",
    "StreamPacker",
    "Key",
    "keygen",
    "random_master_key",
    "serve",
    "gateway",
    "SeekServer",
    "GatewayServer",
    "PackResult",
    "QeltrixError",
    "WrongKeyError",
    "CorruptContainerError",
    "UnsupportedVersionError",
    "NotAContainerError",
    "__version__",
]

# Every qeltrix exception names where it happened, when known (the subclasses inherit these
# defaults; the core sets them on each exception it raises).
QeltrixError.path = None
QeltrixError.block = None
QeltrixError.offset = None


def pack(
    src,
    dst,
    key,
    *,
    block_size=1 << 20,
    cipher="aes-256-gcm",
    compress="auto",
    workers=0,
    progress_cb=None,
    overwrite=False,
):
    """Pack ``src`` into the new container ``dst``, all or nothing.

    ``src`` is a path, ``bytes``/``bytearray``/``memoryview``, or a binary file object with
    ``read``. ``key`` is a :class:`Key` or 32 bytes. ``progress_cb(done, total)`` is called every
    few MiB and once at the end (``total`` is ``None`` for a file object). Returns a
    :class:`PackResult`.
    """
    if isinstance(src, (bytearray, memoryview)):
        src = bytes(src)
    return _native.pack(
        src,
        dst,
        key,
        block_size=block_size,
        cipher=cipher,
        compress=compress,
        workers=workers,
        progress_cb=progress_cb,
        overwrite=overwrite,
    )


class Container(io.RawIOBase):
    """A container opened for reading: a seekable, read-only binary file of its plaintext.

    ``path_or_url`` is a local path, ``s3://BUCKET/KEY`` or ``http(s)://HOST/PATH``. Only the
    blocks a read covers are fetched and decrypted. Works with ``io.BufferedReader``,
    ``zipfile``, ``tarfile`` and anything else that takes a binary file.
    """

    def __init__(self, path_or_url, key):
        super().__init__()
        self._c = _native._Container(path_or_url, key)
        self._pos = 0
        self.name = os.fspath(path_or_url)

    @property
    def size(self):
        """The plaintext length in bytes."""
        return self._c.size

    def info(self):
        """What :func:`info` says of this container."""
        return self._c.info()

    def readable(self):
        return True

    def seekable(self):
        return True

    def writable(self):
        return False

    def _check(self):
        if self.closed:
            raise ValueError("I/O operation on a closed Container")

    def read_at(self, offset, length):
        """Up to ``length`` bytes from ``offset``, not moving the position."""
        self._check()
        return self._c.read_at(offset, length)

    def readinto(self, b):
        self._check()
        view = memoryview(b).cast("B")
        data = self._c.read_at(self._pos, len(view))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def read(self, size=-1):
        self._check()
        if size is None or size < 0:
            return self.readall()
        data = self._c.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self):
        self._check()
        data = self._c.read_at(self._pos, max(0, self._c.size - self._pos))
        self._pos += len(data)
        return data

    def seek(self, offset, whence=io.SEEK_SET):
        self._check()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._c.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self):
        self._check()
        return self._pos

    def __repr__(self):
        return f"<qeltrix.Container {self.name!r} size={self._c.size}>"


class StreamPacker:
    """Packs what is written into a container on ``fileobj`` (any binary writable file object:
    a file, ``io.BytesIO``, a socket's ``makefile("wb")``), block by block.

    ``close()`` writes the footer and returns a :class:`PackResult`. Used as a context manager,
    it closes on a normal exit and, on an exception, aborts: the output then has no footer, an
    incomplete container that readers refuse.
    """

    def __init__(self, fileobj, key, *, block_size=1 << 20, cipher="aes-256-gcm", compress="auto", workers=0):
        self._p = _native._StreamPacker(
            fileobj, key, block_size=block_size, cipher=cipher, compress=compress, workers=workers
        )

    def write(self, data):
        """Packs ``data`` (bytes-like); returns its length."""
        if not isinstance(data, bytes):
            data = bytes(data)
        return self._p.write(data)

    def flush_block(self):
        """Seals the partial block now and writes everything sealed."""
        self._p.flush_block()

    def close(self):
        """Finishes the container and flushes ``fileobj``; returns a :class:`PackResult`."""
        return self._p.close()

    def abort(self):
        """Stops without finishing: the output is left incomplete."""
        self._p.abort()

    @property
    def closed(self):
        return self._p.closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._p.closed:
            return False
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class _Running:
    """A server running in background threads of this process: ``stop()`` or ``with``."""

    def __init__(self, native):
        self._s = native

    @property
    def address(self):
        """``(host, port)`` listened on."""
        return self._s.address

    @property
    def host(self):
        return self._s.address[0]

    @property
    def port(self):
        return self._s.address[1]

    def stop(self):
        """Stops the server and waits for its thread; again, it does nothing."""
        self._s.stop()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False


class SeekServer(_Running):
    """``qeltrix serve`` in this process: a container or a vault folder over HTTP with Range
    requests, bound to ``host`` (``127.0.0.1`` by default) and ``port`` (0: any free one).
    ``token``: clients must send ``Authorization: Bearer TOKEN``.
    """

    def __init__(self, path, key, host="127.0.0.1", port=0, *, token=None, cache_size=256 << 20, workers=0):
        super().__init__(
            _native._SeekServer(path, key, host, port, token=token, cache_size=cache_size, workers=workers)
        )

    @property
    def url(self):
        """``http://HOST:PORT/``."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"


class GatewayServer(_Running):
    """``qeltrix gateway`` in this process: each connection's bytes sealed into a container
    (``mode="encrypt"``) or a container stream opened (``mode="decrypt"``), sent back to the
    client (it half-closes its side to end the input) or forwarded to ``forward_to``
    (``"HOST:PORT"``).
    """

    def __init__(
        self,
        key,
        *,
        mode="encrypt",
        host="127.0.0.1",
        port=0,
        forward_to=None,
        block_size=1 << 20,
        cipher="aes-256-gcm",
        compress="auto",
        workers=0,
        verify=True,
    ):
        if isinstance(compress, bool):
            compress = "auto" if compress else "never"
        super().__init__(
            _native._GatewayServer(
                key,
                mode=mode,
                host=host,
                port=port,
                forward_to=forward_to,
                block_size=block_size,
                cipher=cipher,
                compress=compress,
                workers=workers,
                verify=verify,
            )
        )


def serve(path, key, host="127.0.0.1", port=0, **options):
    """Starts a :class:`SeekServer` for ``path`` and returns it, running; use it with ``with``."""
    return SeekServer(path, key, host, port, **options)


def gateway(key, **options):
    """Starts a :class:`GatewayServer` and returns it, running; use it with ``with``."""
    return GatewayServer(key, **options)
