"""gateway(): the TCP gateway (docs/GATEWAY.md) through real sockets. Encrypt (reflect): bytes
in, a container stream back on the same connection. Decrypt: a container in, plaintext back."""

import io
import socket
import threading

import pytest

import qeltrix

BS = 1 << 16
TIMEOUT = 60


def exchange(address, payload):
    """Connect, send payload and half-close while reading the reply to EOF on this thread (the
    gateway streams its output while input arrives, so a sender must read as it writes)."""
    with socket.create_connection(address, timeout=TIMEOUT) as s:
        errors = []

        def send():
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            chunks = []
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sender.join(TIMEOUT)
        assert not sender.is_alive(), "sending did not finish"
        if errors:
            raise errors[0]
        return b"".join(chunks)


def unpacked(tmp_path, container_bytes, key, name="g.qltx"):
    path = tmp_path / name
    path.write_bytes(container_bytes)
    sink = io.BytesIO()
    qeltrix.unpack(path, sink, key)
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, 1000, BS, 3 * BS + 17])
def test_encrypt_reflect_round_trip(tmp_path, key, make_data, size):
    data = make_data(size, seed=size)
    with qeltrix.gateway(key, block_size=BS) as gw:
        assert isinstance(gw, qeltrix.GatewayServer)
        assert gw.address == (gw.host, gw.port)
        assert gw.port > 0
        stream = exchange(gw.address, data)
    assert stream[:8] == b"QELTRIX\0"
    assert unpacked(tmp_path, stream, key) == data
    info = qeltrix.info(tmp_path / "g.qltx")
    assert info["size"] == size
    assert info["blocks"] == (size + BS - 1) // BS
    assert info["block_size"] == BS


def test_encrypt_connections_get_own_containers(tmp_path, key, make_data):
    a, b = make_data(5000, seed=1), make_data(7000, seed=2)
    with qeltrix.gateway(key, mode="encrypt", block_size=BS) as gw:
        sa = exchange(gw.address, a)
        sb = exchange(gw.address, b)
    assert unpacked(tmp_path, sa, key, "a.qltx") == a
    assert unpacked(tmp_path, sb, key, "b.qltx") == b
    assert qeltrix.info(tmp_path / "a.qltx")["container_id"] != \
        qeltrix.info(tmp_path / "b.qltx")["container_id"]


@pytest.mark.parametrize("size", [0, 1, 3 * BS + 17])
def test_decrypt_packed_container(tmp_path, key, make_data, pack_to, size):
    data = make_data(size, seed=3)
    container = pack_to(data, key).read_bytes()
    with qeltrix.gateway(key, mode="decrypt") as gw:
        assert exchange(gw.address, container) == data


def test_encrypt_then_decrypt_tunnel(key, make_data):
    """A gateway pair is a transparent tunnel: what the encrypting one emits, the decrypting one
    turns back into the input."""
    data = make_data(2 * BS + 333, seed=4)
    with qeltrix.gateway(key, block_size=BS) as enc, qeltrix.gateway(key, mode="decrypt") as dec:
        stream = exchange(enc.address, data)
        assert exchange(dec.address, stream) == data


def test_decrypt_wrong_key_resets(key, other_key, make_data, pack_to):
    """A container the gateway's key does not open gives no plaintext: the connection is reset,
    never closed cleanly (docs/GATEWAY.md, Faults)."""
    container = pack_to(make_data(BS + 5, seed=5), key).read_bytes()
    with qeltrix.gateway(other_key, mode="decrypt") as gw:
        with pytest.raises((ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            exchange(gw.address, container)


def test_stopped_gateway_refuses(key):
    with qeltrix.gateway(key) as gw:
        address = gw.address
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()
    gw2 = qeltrix.gateway(key)
    try:
        assert exchange(gw2.address, b"hello")[:8] == b"QELTRIX\0"
    finally:
        gw2.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(gw2.address, timeout=TIMEOUT).close()


def test_bad_mode(key):
    try:
        gw = qeltrix.gateway(key, mode="sideways")
    except ValueError:
        return
    gw.stop()
    pytest.fail("gateway(mode='sideways') did not raise ValueError")
