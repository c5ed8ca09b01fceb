"""TCP: create_connection, create_server and Server, connect_accepted_socket (127.0.0.1 and, when it
works here, ::1)."""
import asyncio
import socket

import pytest

from .util import Echo, Recorder, ipv6_loopback_works, refused_port, run


async def echo_roundtrip(loop, host, port, payload=b"ping", **kwargs):
    """Connect to an echo server, send payload, half-close, return what came back."""
    proto = Recorder(loop)
    tr, pr = await loop.create_connection(lambda: proto, host, port, **kwargs)
    assert pr is proto
    tr.write(payload)
    tr.write_eof()
    await proto.eof
    await proto.lost
    return bytes(proto.data), tr


class TestCreateConnection:
    def test_host_port(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                port = server.sockets[0].getsockname()[1]
                data, tr = await echo_roundtrip(loop, "127.0.0.1", port, b"hello")
                assert isinstance(tr, asyncio.Transport)
                return data

        assert run(loop, main()) == b"hello"

    def test_localhost_name(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                port = server.sockets[0].getsockname()[1]
                # localhost may also resolve to ::1, where nothing listens: the next address is tried
                data, _ = await echo_roundtrip(loop, "localhost", port, b"by name",
                                               family=socket.AF_INET)
                return data

        assert run(loop, main()) == b"by name"

    def test_sock(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                s = socket.socket()
                s.setblocking(False)
                await loop.sock_connect(s, server.sockets[0].getsockname())
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, sock=s)
                assert tr.get_extra_info("socket").fileno() == s.fileno()
                tr.write(b"via sock")
                tr.write_eof()
                await proto.lost
                assert s.fileno() == -1  # the transport closed the socket
                return bytes(proto.data)

        assert run(loop, main()) == b"via sock"

    def test_local_addr(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                port = server.sockets[0].getsockname()[1]
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port,
                                                     local_addr=("127.0.0.1", 0))
                sockname = tr.get_extra_info("sockname")
                tr.close()
                await proto.lost
                return sockname

        host, port = run(loop, main())
        assert host == "127.0.0.1" and port != 0

    def test_happy_eyeballs_and_interleave(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                port = server.sockets[0].getsockname()[1]
                data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"eyeballs",
                                               happy_eyeballs_delay=0.25, interleave=1)
                return data

        assert run(loop, main()) == b"eyeballs"

    def test_refused(self, loop):
        s, port = refused_port()
        try:
            with pytest.raises(ConnectionRefusedError):
                run(loop, loop.create_connection(asyncio.Protocol, "127.0.0.1", port))
        finally:
            s.close()

    def test_argument_errors(self, loop):
        async def main():
            with pytest.raises(ValueError):
                await loop.create_connection(asyncio.Protocol)  # neither host/port nor sock
            s = socket.socket()
            try:
                with pytest.raises(ValueError):
                    await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=s)
            finally:
                s.close()
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                with pytest.raises(ValueError):
                    await loop.create_connection(asyncio.Protocol, sock=u)  # not SOCK_STREAM
            finally:
                u.close()

        run(loop, main())


class TestCreateServer:
    def test_basic(self, loop):
        accepted = []

        def factory():
            p = Recorder(loop)
            accepted.append(p)
            return p

        async def main():
            server = await loop.create_server(factory, "127.0.0.1", 0)
            try:
                assert isinstance(server, asyncio.AbstractServer)
                assert server.get_loop() is loop
                assert server.is_serving()
                assert len(server.sockets) == 1
                addr = server.sockets[0].getsockname()
                assert addr[0] == "127.0.0.1"
                c = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: c, *addr)
                sp = None
                for _ in range(200):
                    if accepted and accepted[0].transport is not None:
                        sp = accepted[0]
                        break
                    await asyncio.sleep(0.005)
                assert sp is not None
                await sp.made
                assert sp.transport.get_extra_info("peername") == tr.get_extra_info("sockname")
                assert sp.transport.get_extra_info("sockname") == tr.get_extra_info("peername")
                tr.write(b"to server")
                await sp.wait_data(9)
                sp.transport.write(b"to client")
                await c.wait_data(9)
                tr.close()
                await sp.lost
                await c.lost
                return bytes(sp.data), bytes(c.data), sp.events
            finally:
                server.close()
                await server.wait_closed()

        to_server, to_client, events = run(loop, main())
        assert to_server == b"to server" and to_client == b"to client"
        assert events == ["made", "data", "eof", "lost"]

    def test_host_list(self, loop):
        async def main():
            server = await loop.create_server(Echo, ["127.0.0.1"], 0)
            async with server:
                assert len(server.sockets) == 1
                port = server.sockets[0].getsockname()[1]
                data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"list")
                return data

        assert run(loop, main()) == b"list"

    def test_ipv4_and_ipv6_hosts(self, loop):
        if not ipv6_loopback_works():
            pytest.skip("IPv6 loopback (::1) does not work here")

        async def main():
            server = await loop.create_server(Echo, ("127.0.0.1", "::1"), 0)
            async with server:
                families = sorted(s.family for s in server.sockets)
                assert families == sorted([socket.AF_INET, socket.AF_INET6])
                out = []
                for s in server.sockets:
                    host, port = s.getsockname()[:2]
                    data, _ = await echo_roundtrip(loop, host, port, host.encode())
                    out.append(data)
                return sorted(out)

        assert run(loop, main()) == [b"127.0.0.1", b"::1"]

    def test_family(self, loop):
        async def main():
            server = await loop.create_server(Echo, "localhost", 0, family=socket.AF_INET)
            async with server:
                assert server.sockets
                assert all(s.family == socket.AF_INET for s in server.sockets)
                port = server.sockets[0].getsockname()[1]
                data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"inet")
                return data

        assert run(loop, main()) == b"inet"

    def test_sock(self, loop):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()

        async def main():
            server = await loop.create_server(Echo, sock=s, backlog=5)
            async with server:
                assert len(server.sockets) == 1
                assert server.sockets[0].getsockname() == addr
                data, _ = await echo_roundtrip(loop, *addr, b"sock")
                return data

        try:
            assert run(loop, main()) == b"sock"
            assert s.fileno() == -1  # closed with the server
        finally:
            s.close()

    def test_backlog_and_many_clients(self, loop):
        async def main():
            # (more simultaneous connects than the backlog would make the kernel drop SYNs and
            # the clients retry after seconds: keep them within it)
            server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=5)
            async with server:
                port = server.sockets[0].getsockname()[1]
                results = []
                for batch in range(4):
                    results += await asyncio.gather(*[
                        echo_roundtrip(loop, "127.0.0.1", port, b"client %d" % (batch * 5 + i))
                        for i in range(5)])
                return [d for d, _ in results]

        assert run(loop, main()) == [b"client %d" % i for i in range(20)]

    def test_reuse_address(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, reuse_address=True)
            async with server:
                return server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)

        assert run(loop, main()) != 0

    def test_reuse_port(self, loop):
        if not hasattr(socket, "SO_REUSEPORT"):
            pytest.skip("no SO_REUSEPORT here")

        async def main():
            s1 = await loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True)
            async with s1:
                port = s1.sockets[0].getsockname()[1]
                assert s1.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
                s2 = await loop.create_server(Echo, "127.0.0.1", port, reuse_port=True)
                async with s2:
                    assert s2.sockets[0].getsockname()[1] == port
                    data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"either")
                    return data

        assert run(loop, main()) == b"either"

    def test_address_in_use(self, loop):
        async def main():
            s1 = await loop.create_server(Echo, "127.0.0.1", 0)
            async with s1:
                port = s1.sockets[0].getsockname()[1]
                with pytest.raises(OSError):
                    await loop.create_server(Echo, "127.0.0.1", port)

        run(loop, main())

    def test_start_serving_false(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
            async with server:
                assert not server.is_serving()
                await server.start_serving()
                assert server.is_serving()
                await server.start_serving()  # twice is fine
                port = server.sockets[0].getsockname()[1]
                data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"started")
                return data

        assert run(loop, main()) == b"started"

    def test_close_and_wait_closed(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            server.close()
            assert not server.is_serving()
            await server.wait_closed()
            assert server.sockets == ()
            server.close()  # twice is fine
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)

        run(loop, main())

    def test_async_with(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server as s:
                assert s is server
                assert server.is_serving()
            assert not server.is_serving()
            assert server.sockets == ()

        run(loop, main())

    def test_serve_forever_cancelled_by_close(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
            task = loop.create_task(server.serve_forever())
            await asyncio.sleep(0.01)
            assert server.is_serving()
            port = server.sockets[0].getsockname()[1]
            data, _ = await echo_roundtrip(loop, "127.0.0.1", port, b"forever")
            with pytest.raises(RuntimeError):
                await server.serve_forever()  # already being awaited
            server.close()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.wait_closed()
            with pytest.raises(RuntimeError):
                await server.serve_forever()  # closed
            return data

        assert run(loop, main()) == b"forever"

    def test_serve_forever_cancelled_closes_the_server(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            task = loop.create_task(server.serve_forever())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
            await server.wait_closed()

        run(loop, main())


class TestConnectAcceptedSocket:
    def test_connect_accepted_socket(self, loop):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)

        async def main():
            c = socket.socket()
            c.setblocking(False)
            try:
                accept = loop.create_task(loop.sock_accept(lsock))
                await loop.sock_connect(c, lsock.getsockname())
                conn, _ = await accept
                sp = Recorder(loop)
                tr, pr = await loop.connect_accepted_socket(lambda: sp, conn)
                assert pr is sp and isinstance(tr, asyncio.Transport)
                await loop.sock_sendall(c, b"raw client")
                await sp.wait_data(10)
                tr.write(b"reply")
                got = await loop.sock_recv(c, 100)
                tr.close()
                await sp.lost
                assert await loop.sock_recv(c, 100) == b""
                return bytes(sp.data), got
            finally:
                c.close()

        try:
            assert run(loop, main()) == (b"raw client", b"reply")
        finally:
            lsock.close()
