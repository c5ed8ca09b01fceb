"""levent.recv_into / levent.send: non-blocking socket I/O for callbacks, on real socketpairs."""
import errno
import socket

import pytest

import levent


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_send_and_recv_into(pair):
    a, b = pair
    buf = bytearray(16)
    assert levent.send(b.fileno(), b"hello world") == 11
    assert levent.recv_into(a.fileno(), buf) == 11
    assert bytes(buf[:11]) == b"hello world"


def test_offset_and_nbytes(pair):
    a, b = pair
    buf = bytearray(16)
    assert levent.send(b.fileno(), b"0123456789", 2, 3) == 3
    assert levent.recv_into(a.fileno(), buf, 2) == 2
    assert levent.recv_into(a.fileno(), memoryview(buf)[2:]) == 1
    assert bytes(buf[:3]) == b"234"
    with pytest.raises(ValueError):
        levent.send(b.fileno(), b"abc", 4)


def test_never_blocks(pair):
    a, b = pair
    # recv on an empty socket, even a blocking one, raises instead of waiting.
    a.setblocking(True)
    with pytest.raises(BlockingIOError):
        levent.recv_into(a.fileno(), bytearray(10))
    # send on a full one likewise.
    b.setblocking(True)
    chunk = b"x" * 65536
    with pytest.raises(BlockingIOError):
        for _ in range(10_000):
            levent.send(b.fileno(), chunk)


def test_peer_closed(pair):
    a, b = pair
    b.close()
    assert levent.recv_into(a.fileno(), bytearray(10)) == 0
    with pytest.raises(OSError) as info:
        levent.send(a.fileno(), b"x")   # EPIPE, not SIGPIPE
    assert info.value.errno == errno.EPIPE


def test_misuse(pair):
    a, _ = pair
    with pytest.raises(TypeError):
        levent.recv_into(a.fileno(), b"read-only bytes")
    with pytest.raises(TypeError):
        levent.send(a.fileno(), "text")
    with pytest.raises(TypeError):
        levent.send("fd", b"x")
    with pytest.raises(OSError) as info:
        levent.send(10_000, b"x")
    assert info.value.errno == errno.EBADF
