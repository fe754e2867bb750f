"""Type stubs for qeltrix: seekable encrypted containers on the Qeltrix Rust core."""

import io
import os
from typing import IO, Any, Callable, Dict, Optional, Tuple, Union

__version__: str

StrPath = Union[str, "os.PathLike[str]"]
KeyLike = Union["Key", bytes]
Source = Union[StrPath, bytes, bytearray, memoryview, IO[bytes]]
Compress = Union[str, bool]

class QeltrixError(Exception):
    """Any failure of the qeltrix core."""

    path: Optional[str]
    block: Optional[int]
    offset: Optional[int]

class WrongKeyError(QeltrixError): ...
class CorruptContainerError(QeltrixError): ...
class UnsupportedVersionError(QeltrixError): ...
class NotAContainerError(QeltrixError): ...

class Key:
    @staticmethod
    def generate() -> Key: ...
    @staticmethod
    def from_bytes(data: bytes) -> Key: ...
    @staticmethod
    def from_passphrase(passphrase: str, *, iterations: Optional[int] = None) -> Key: ...
    @staticmethod
    def from_file(path: StrPath) -> Key: ...
    def save(self, path: StrPath) -> None: ...
    @property
    def kind(self) -> str: ...

class PackResult:
    original_size: int
    container_size: int
    blocks: int
    compressed_blocks: int
    container_id: str
    format: int
    root: Optional[str]

def keygen(path: Optional[StrPath] = None) -> Key: ...
def random_master_key() -> bytes: ...
def pack(
    src: Source,
    dst: StrPath,
    key: KeyLike,
    *,
    block_size: int = ...,
    cipher: str = ...,
    compress: Compress = ...,
    workers: int = ...,
    progress_cb: Optional[Callable[[int, Optional[int]], Any]] = None,
    overwrite: bool = False,
) -> PackResult: ...
def unpack(
    src: StrPath,
    dst: Union[StrPath, IO[bytes]],
    key: KeyLike,
    *,
    workers: int = 0,
    verify: bool = True,
    overwrite: bool = False,
) -> int: ...
def seek_extract(
    path: StrPath,
    offset: int,
    length: int,
    key: Optional[KeyLike] = None,
    *,
    master_key: Optional[KeyLike] = None,
) -> bytes: ...
def info(path: StrPath) -> Dict[str, Any]: ...
def verify(path: StrPath, key: Optional[KeyLike] = None, *, workers: int = 0) -> Dict[str, Any]: ...

class Container(io.RawIOBase):
    name: str
    def __init__(self, path_or_url: StrPath, key: KeyLike) -> None: ...
    @property
    def size(self) -> int: ...
    def info(self) -> Dict[str, Any]: ...
    def read_at(self, offset: int, length: int) -> bytes: ...
    def read(self, size: Optional[int] = -1) -> bytes: ...
    def readall(self) -> bytes: ...
    def readinto(self, b: Any) -> int: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def tell(self) -> int: ...

class StreamPacker:
    def __init__(
        self,
        fileobj: IO[bytes],
        key: KeyLike,
        *,
        block_size: int = ...,
        cipher: str = ...,
        compress: Compress = ...,
        workers: int = ...,
    ) -> None: ...
    def write(self, data: Union[bytes, bytearray, memoryview]) -> int: ...
    def flush_block(self) -> None: ...
    def close(self) -> PackResult: ...
    def abort(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> StreamPacker: ...
    def __exit__(self, *exc: Any) -> bool: ...

class _Running:
    @property
    def address(self) -> Tuple[str, int]: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    def stop(self) -> None: ...
    def __exit__(self, *exc: Any) -> bool: ...

class SeekServer(_Running):
    def __init__(
        self,
        path: StrPath,
        key: KeyLike,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: Optional[str] = None,
        cache_size: int = ...,
        workers: int = 0,
    ) -> None: ...
    @property
    def url(self) -> str: ...
    def __enter__(self) -> SeekServer: ...

class GatewayServer(_Running):
    def __init__(
        self,
        key: KeyLike,
        *,
        mode: str = "encrypt",
        host: str = "127.0.0.1",
        port: int = 0,
        forward_to: Optional[str] = None,
        block_size: int = ...,
        cipher: str = ...,
        compress: Compress = ...,
        workers: int = 0,
        verify: bool = True,
    ) -> None: ...
    def __enter__(self) -> GatewayServer: ...

def serve(path: StrPath, key: KeyLike, host: str = "127.0.0.1", port: int = 0, **options: Any) -> SeekServer: ...
def gateway(key: KeyLike, **options: Any) -> GatewayServer: ...
