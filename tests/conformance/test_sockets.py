"""Low-level socket coroutines: sock_recv, sock_recv_into, sock_recvfrom, sock_recvfrom_into,
sock_sendall, sock_sendto, sock_connect, sock_accept (127.0.0.1 and socketpairs only)."""
import asyncio
import hashlib
import os
import socket

import pytest

from .util import PY311, refused_port, run

needs_311 = pytest.mark.skipif(not PY311, reason="sock_recvfrom/_into and sock_sendto are new in 3.11")


@pytest.fixture
def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
        yield a, b
    finally:
        a.close()
        b.close()


class TestStreamSockets:
    def test_recv_and_sendall(self, loop, socketpair):
        a, b = socketpair

        async def main():
            await loop.sock_sendall(a, b"hello")
            return await loop.sock_recv(b, 100)

        assert run(loop, main()) == b"hello"

    def test_recv_waits_for_data(self, loop, socketpair):
        a, b = socketpair

        async def main():
            t = loop.create_task(loop.sock_recv(b, 100))
            await asyncio.sleep(0.02)
            assert not t.done()
            a.send(b"late")
            return await t

        assert run(loop, main()) == b"late"

    def test_recv_eof(self, loop, socketpair):
        a, b = socketpair
        a.shutdown(socket.SHUT_WR)
        assert run(loop, loop.sock_recv(b, 100)) == b""

    def test_recv_into(self, loop, socketpair):
        a, b = socketpair
        buf = bytearray(10)

        async def main():
            await loop.sock_sendall(a, b"abcdef")
            n = await loop.sock_recv_into(b, buf)
            return n

        n = run(loop, main())
        assert buf[:n] == b"abcdef"[:n] and n >= 1
        view = memoryview(buf)[2:5]
        a.send(b"XYZW")
        n2 = run(loop, loop.sock_recv_into(b, view))
        assert 1 <= n2 <= 3 and bytes(buf[2:2 + n2]) == b"XYZ"[:n2]

    def test_cancelled_recv_leaves_the_socket_usable(self, loop, socketpair):
        a, b = socketpair

        async def main():
            t = loop.create_task(loop.sock_recv(b, 100))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            a.send(b"after cancel")
            return await loop.sock_recv(b, 100)

        assert run(loop, main()) == b"after cancel"

    def test_sendall_large_to_a_slow_reader(self, loop, socketpair):
        a, b = socketpair
        payload = os.urandom(8 * 1024 * 1024)

        async def slow_reader():
            h = hashlib.sha256()
            n = 0
            chunks = 0
            while n < len(payload):
                data = await loop.sock_recv(b, 65536)
                if not data:
                    break
                h.update(data)
                n += len(data)
                chunks += 1
                if chunks % 16 == 0:
                    await asyncio.sleep(0.001)
            return n, h.hexdigest()

        async def main():
            reader = loop.create_task(slow_reader())
            await loop.sock_sendall(a, payload)
            return await reader

        n, digest = run(loop, main(), timeout=30)
        assert n == len(payload)
        assert digest == hashlib.sha256(payload).hexdigest()

    def test_sendall_memoryview(self, loop, socketpair):
        a, b = socketpair
        run(loop, loop.sock_sendall(a, memoryview(b"0123456789")[3:6]))
        assert run(loop, loop.sock_recv(b, 10)) == b"345"


class TestConnectAccept:
    def test_connect_and_accept(self, loop, listener):
        async def main():
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                accept = loop.create_task(loop.sock_accept(listener))
                await loop.sock_connect(c, listener.getsockname())
                conn, addr = await accept
                with conn:
                    assert addr == c.getsockname()
                    assert conn.gettimeout() == 0  # accepted sockets are non-blocking
                    await loop.sock_sendall(c, b"ping")
                    assert await loop.sock_recv(conn, 10) == b"ping"
                    await loop.sock_sendall(conn, b"pong")
                    return await loop.sock_recv(c, 10)
            finally:
                c.close()

        assert run(loop, main()) == b"pong"

    def test_connect_refused(self, loop):
        s, port = refused_port()
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                run(loop, loop.sock_connect(c, ("127.0.0.1", port)))
        finally:
            c.close()
            s.close()

    def test_accept_waits(self, loop, listener):
        async def main():
            t = loop.create_task(loop.sock_accept(listener))
            await asyncio.sleep(0.02)
            assert not t.done()
            c = socket.socket()
            c.setblocking(False)
            try:
                await loop.sock_connect(c, listener.getsockname())
                conn, _ = await t
                conn.close()
            finally:
                c.close()

        run(loop, main())


class TestDatagrams:
    @needs_311
    def test_sendto_recvfrom(self, loop, udp_pair):
        a, b = udp_pair

        async def main():
            await loop.sock_sendto(a, b"datagram", b.getsockname())
            return await loop.sock_recvfrom(b, 100)

        data, addr = run(loop, main())
        assert data == b"datagram"
        assert addr == a.getsockname()

    @needs_311
    def test_recvfrom_into(self, loop, udp_pair):
        a, b = udp_pair
        buf = bytearray(64)

        async def main():
            t = loop.create_task(loop.sock_recvfrom_into(b, buf))
            await asyncio.sleep(0.01)
            assert not t.done()
            await loop.sock_sendto(a, b"into", b.getsockname())
            return await t

        n, addr = run(loop, main())
        assert bytes(buf[:n]) == b"into"
        assert addr == a.getsockname()

    @needs_311
    def test_recvfrom_into_nbytes(self, loop, udp_pair):
        a, b = udp_pair
        buf = bytearray(64)
        a.sendto(b"0123456789", b.getsockname())
        n, _ = run(loop, loop.sock_recvfrom_into(b, buf, 4))
        assert n == 4 and bytes(buf[:4]) == b"0123"

    def test_datagrams_on_connected_udp_with_recv_and_sendall(self, loop, udp_pair):
        a, b = udp_pair
        a.connect(b.getsockname())
        run(loop, loop.sock_sendall(a, b"one"))
        assert run(loop, loop.sock_recv(b, 100)) == b"one"


def _blocking_calls(loop, sock, listener):
    calls = [
        ("sock_recv", lambda: loop.sock_recv(sock, 10)),
        ("sock_recv_into", lambda: loop.sock_recv_into(sock, bytearray(10))),
        ("sock_sendall", lambda: loop.sock_sendall(sock, b"x")),
        ("sock_connect", lambda: loop.sock_connect(sock, listener.getsockname())),
        ("sock_accept", lambda: loop.sock_accept(sock)),
    ]
    if PY311:
        calls += [
            ("sock_recvfrom", lambda: loop.sock_recvfrom(sock, 10)),
            ("sock_recvfrom_into", lambda: loop.sock_recvfrom_into(sock, bytearray(10))),
            ("sock_sendto", lambda: loop.sock_sendto(sock, b"x", ("127.0.0.1", 9))),
        ]
    return calls


class TestBlockingSocketsInDebugMode:
    def test_blocking_socket_refused_with_value_error(self, loop, listener):
        loop.set_debug(True)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            assert s.gettimeout() is None  # blocking
            for name, call in _blocking_calls(loop, s, listener):
                with pytest.raises(ValueError, match="non-blocking"):
                    run(loop, call())
                    pytest.fail(f"{name} accepted a blocking socket in debug mode")
        finally:
            s.close()
