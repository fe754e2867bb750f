"""serve(): the HTTP Range server over one container or a vault folder (docs/SERVE.md), fetched
with urllib from this same process, so it also shows the server does not need the GIL."""

import json
import socket
import urllib.error
import urllib.request

import pytest

import qeltrix

BS = 1 << 16
N = 3 * BS + 17
TIMEOUT = 30


def get(http, url, range_=None, token=None):
    """(status, headers, body) of a GET; HTTP errors are raised as urllib.error.HTTPError."""
    req = urllib.request.Request(url)
    if range_ is not None:
        req.add_header("Range", range_)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with http.open(req, timeout=TIMEOUT) as resp:
        return resp.status, resp.headers, resp.read()


def assert_start_fails(exc, *args, **kwargs):
    """serve(*args, **kwargs) raises exc; a server started anyway is stopped, not leaked."""
    try:
        srv = qeltrix.serve(*args, **kwargs)
    except exc:
        return
    srv.stop()
    pytest.fail(f"serve() started instead of raising {exc.__name__}")


def assert_refused(host, port):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=TIMEOUT).close()


@pytest.fixture
def movie(tmp_path, key, make_data, pack_to):
    data = make_data(N, seed=1)
    return pack_to(data, key, name="movie.bin.qltx"), data


@pytest.mark.parametrize("first,last", [
    (0, 0),
    (0, 99),
    (BS - 10, BS + 9),  # across blocks 0 and 1
    (BS, 2 * BS - 1),  # exactly block 1
    (100, 3 * BS + 5),  # four blocks
    (N - 17, N - 1),  # the short last block
])
def test_single_container_range(movie, key, http, first, last):
    path, data = movie
    with qeltrix.serve(path, key) as srv:
        assert isinstance(srv, qeltrix.SeekServer)
        assert srv.host == "127.0.0.1"
        assert isinstance(srv.port, int) and srv.port > 0
        assert srv.url == f"http://127.0.0.1:{srv.port}/"
        # A single container is served at "/" and at "/NAME" (its file name without .qltx).
        for url in (srv.url, srv.url + "movie.bin"):
            status, headers, body = get(http, url, f"bytes={first}-{last}")
            assert status == 206
            assert body == data[first:last + 1]
            assert headers["Content-Range"] == f"bytes {first}-{last}/{N}"
            assert int(headers["Content-Length"]) == last - first + 1
            assert headers["Accept-Ranges"] == "bytes"


def test_single_container_full_and_suffix(movie, key, http):
    path, data = movie
    with qeltrix.serve(path, key) as srv:
        status, headers, body = get(http, srv.url)
        assert status == 200 and body == data
        assert int(headers["Content-Length"]) == N
        status, _, body = get(http, srv.url, "bytes=-100")
        assert status == 206 and body == data[-100:]
        status, _, body = get(http, srv.url, f"bytes={N - 50}-")
        assert status == 206 and body == data[-50:]
        status, _, body = get(http, srv.url, f"bytes={N - 10}-{N + 1000}")  # clipped
        assert status == 206 and body == data[-10:]
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(http, srv.url, f"bytes={N + 10}-{N + 20}")
        assert ei.value.code == 416
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(http, srv.url + "no-such-file")
        assert ei.value.code == 404


def test_port_refuses_after_with_block(movie, key, http):
    path, data = movie
    with qeltrix.serve(path, key, host="127.0.0.1", port=0) as srv:
        host, port = srv.host, srv.port
        assert get(http, srv.url, "bytes=0-9")[2] == data[:10]
    assert_refused(host, port)


def test_stop(movie, key, http):
    path, data = movie
    srv = qeltrix.serve(path, key)
    try:
        assert get(http, srv.url, "bytes=5-14")[2] == data[5:15]
    finally:
        srv.stop()
    assert_refused(srv.host, srv.port)


def test_token(movie, key, http):
    path, data = movie
    token = "s3cret-token_0123"
    with qeltrix.serve(path, key, token=token) as srv:
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(http, srv.url, "bytes=0-9")
        assert ei.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(http, srv.url, "bytes=0-9", token="wrong-token")
        assert ei.value.code == 401
        status, _, body = get(http, srv.url, f"bytes={BS - 5}-{BS + 4}", token=token)
        assert status == 206
        assert body == data[BS - 5:BS + 5]
        # /health answers without the token, with the status only.
        status, _, body = get(http, srv.url + "health")
        assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("bad", ["two words", "", "   "])
def test_bad_token_is_value_error(movie, key, bad):
    path, _ = movie
    assert_start_fails(ValueError, path, key, token=bad)


def test_vault(tmp_path, key, make_data, http):
    """A vault folder: V/sub/a.txt.qltx is served at /sub/a.txt; folders list as JSON."""
    vault = tmp_path / "vault"
    (vault / "sub").mkdir(parents=True)
    a = make_data(2 * BS + 1, seed=2)
    b = make_data(5000, seed=3)
    qeltrix.pack(a, vault / "sub" / "a.txt.qltx", key, block_size=BS)
    qeltrix.pack(b, vault / "b.bin.qltx", key, block_size=BS)
    with qeltrix.serve(vault, key) as srv:
        status, _, body = get(http, srv.url + "sub/a.txt", f"bytes={BS - 2}-{BS + 1}")
        assert status == 206 and body == a[BS - 2:BS + 2]
        status, _, body = get(http, srv.url + "b.bin")
        assert status == 200 and body == b
        _, _, body = get(http, srv.url + "?format=json")
        entries = {e["name"]: e for e in json.loads(body)["entries"]}
        assert entries["sub"]["type"] == "dir"
        assert entries["b.bin"]["type"] == "file" and entries["b.bin"]["size"] == len(b)
        _, _, body = get(http, srv.url + "sub/?format=json")
        entries = {e["name"]: e for e in json.loads(body)["entries"]}
        assert entries["a.txt"]["size"] == len(a)
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(http, srv.url + "sub/missing.txt")
        assert ei.value.code == 404
        port = srv.port
    assert_refused("127.0.0.1", port)


def test_wrong_key_fails_at_start(movie, other_key):
    """The key is checked before serving, as the CLI does (docs/SERVE.md)."""
    path, _ = movie
    assert_start_fails(qeltrix.WrongKeyError, path, other_key)
