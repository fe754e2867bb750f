"""Container, seek_extract, info and verify on an http:// URL: the core's HTTP client (ranged
GETs with If-Match) against a real web server on 127.0.0.1.

The server is a small static file server with what the core needs of any web server: HEAD,
Range (including suffix ranges), ETag and If-Match. It counts the bytes it sends, so the test
can check that a small read does not download the container.
"""

import errno
import http.server
import os
import re
import threading
import io
import zipfile

import pytest

import qeltrix

BS = 1 << 16


class RangeHandler(http.server.BaseHTTPRequestHandler):
    root = None
    sent = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.join(self.root, self.path.lstrip("/").split("?")[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return None, None
        stat = os.stat(path)
        return path, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'

    def do_HEAD(self):
        path, etag = self._file()
        if path:
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self):
        path, etag = self._file()
        if not path:
            return
        match = self.headers.get("If-Match")
        if match and match != "*" and etag not in [m.strip() for m in match.split(",")]:
            self.send_error(412)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        spec = self.headers.get("Range")
        if spec:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self.send_error(416)
                return
            if m.group(1) == "":
                start, end = max(0, size - int(m.group(2))), size - 1
            else:
                start = int(m.group(1))
                end = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            status = 206
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.write(body)
        with RangeHandler.lock:
            RangeHandler.sent += len(body)


@pytest.fixture
def web(tmp_path, monkeypatch):
    """A web server over tmp_path/www; yields (base_url, folder)."""
    # The core's HTTP client honours proxy variables; the server is local.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "www"
    folder.mkdir()
    handler = type("Handler", (RangeHandler,), {"root": str(folder)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_container_reads_ranges_of_a_url(web, key, make_data):
    base, folder = web
    data = make_data(40 * BS + 123)
    qeltrix.pack(data, folder / "big.bin.qltx", key, block_size=BS)
    url = base + "big.bin.qltx"

    RangeHandler.sent = 0
    with qeltrix.Container(url, key) as c:
        assert c.size == len(data)
        c.seek(20 * BS + 5)
        assert c.read(1000) == data[20 * BS + 5:20 * BS + 1005]
        c.seek(-10, io.SEEK_END)
        assert c.read() == data[-10:]
    # The index and header, and one block's segments: a fraction of the container.
    assert 0 < RangeHandler.sent < os.path.getsize(folder / "big.bin.qltx") // 4

    assert qeltrix.seek_extract(url, 3 * BS - 7, 100, key) == data[3 * BS - 7:3 * BS + 93]
    assert qeltrix.info(url)["size"] == len(data)
    assert qeltrix.verify(url)["blocks"] == 41
    assert qeltrix.verify(url, key)["size"] == len(data)


def test_zipfile_over_a_url(web, key):
    base, folder = web
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(20):
            z.writestr(f"m{i}.txt", f"member {i}\n".encode() * 5000)
    qeltrix.pack(buf.getvalue(), folder / "a.zip.qltx", key, block_size=BS)
    with qeltrix.Container(base + "a.zip.qltx", key) as c:
        assert zipfile.ZipFile(c).read("m13.txt") == b"member 13\n" * 5000


def test_url_errors(web, key, other_key, make_data):
    base, folder = web
    qeltrix.pack(make_data(1000), folder / "x.qltx", key)
    with pytest.raises(qeltrix.WrongKeyError):
        qeltrix.Container(base + "x.qltx", other_key)
    with pytest.raises(FileNotFoundError):
        qeltrix.Container(base + "missing.qltx", key)
    (folder / "junk.qltx").write_bytes(make_data(5000, seed=9))
    with pytest.raises(qeltrix.NotAContainerError):
        qeltrix.info(base + "junk.qltx")
    with pytest.raises(ValueError, match="must name a container"):
        qeltrix.Container(base, key)  # a folder: web servers have no standard listing


def test_a_web_server_is_read_only(web, key):
    base, folder = web
    with pytest.raises(OSError) as ei:
        qeltrix.pack(b"data", base + "new.qltx", key)
    assert ei.value.errno == errno.EOPNOTSUPP
    assert "read-only" in str(ei.value)
    assert ei.value.filename == base + "new.qltx"
    assert list(folder.iterdir()) == []
