"""UNIX sockets: create_unix_server, create_unix_connection, Server over a path."""
import asyncio
import os
import socket
import tempfile

import pytest

from .util import PY313, Echo, Recorder, run


@pytest.fixture
def path():
    d = tempfile.mkdtemp(prefix="lvc")  # short: AF_UNIX paths hold 107 bytes
    p = os.path.join(d, "srv.sock")
    try:
        yield p
    finally:
        if os.path.exists(p):
            os.unlink(p)
        os.rmdir(d)


async def roundtrip(loop, path, payload, **kwargs):
    proto = Recorder(loop)
    tr, _ = await loop.create_unix_connection(lambda: proto, path, **kwargs)
    tr.write(payload)
    tr.write_eof()
    await proto.lost
    return bytes(proto.data)


class TestUnix:
    def test_server_and_connection(self, loop, path):
        async def main():
            server = await loop.create_unix_server(Echo, path)
            async with server:
                assert server.is_serving()
                assert len(server.sockets) == 1
                s = server.sockets[0]
                assert s.family == socket.AF_UNIX
                assert s.getsockname() == path
                return await roundtrip(loop, path, b"over unix")

        assert run(loop, main()) == b"over unix"

    def test_path_removed_on_close_since_313(self, loop, path):
        async def main():
            server = await loop.create_unix_server(Echo, path)
            async with server:
                assert os.path.exists(path)
            return os.path.exists(path)

        exists = run(loop, main())
        if PY313:
            assert not exists  # cleanup_socket=True by default since 3.13
        else:
            assert exists

    def test_stale_socket_file_replaced(self, loop, path):
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        assert os.path.exists(path)

        async def main():
            server = await loop.create_unix_server(Echo, path)
            async with server:
                return await roundtrip(loop, path, b"fresh")

        assert run(loop, main()) == b"fresh"

    def test_path_in_use_by_a_regular_file(self, loop, path):
        with open(path, "w") as f:
            f.write("not a socket")

        async def main():
            with pytest.raises(OSError):
                await loop.create_unix_server(Echo, path)

        run(loop, main())
        with open(path) as f:
            assert f.read() == "not a socket"  # not removed

    def test_server_sock(self, loop, path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)

        async def main():
            server = await loop.create_unix_server(Echo, sock=s)
            async with server:
                return await roundtrip(loop, path, b"given sock")

        try:
            assert run(loop, main()) == b"given sock"
        finally:
            s.close()

    def test_connection_sock(self, loop, path):
        async def main():
            server = await loop.create_unix_server(Echo, path)
            async with server:
                c = socket.socket(socket.AF_UNIX)
                c.setblocking(False)
                await loop.sock_connect(c, path)
                proto = Recorder(loop)
                tr, _ = await loop.create_unix_connection(lambda: proto, sock=c)
                tr.write(b"sock=")
                tr.write_eof()
                await proto.lost
                return bytes(proto.data)

        assert run(loop, main()) == b"sock="

    def test_pathlike(self, loop, path):
        import pathlib

        async def main():
            server = await loop.create_unix_server(Echo, pathlib.Path(path))
            async with server:
                return await roundtrip(loop, pathlib.Path(path), b"pathlib")

        assert run(loop, main()) == b"pathlib"

    def test_connect_to_missing_path(self, loop, path):
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            run(loop, loop.create_unix_connection(asyncio.Protocol, path))

    def test_connect_refused_on_a_dead_socket_file(self, loop, path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)  # bound, never listening
        try:
            with pytest.raises(ConnectionRefusedError):
                run(loop, loop.create_unix_connection(asyncio.Protocol, path))
        finally:
            s.close()

    def test_start_serving_false_and_serve_forever(self, loop, path):
        async def main():
            server = await loop.create_unix_server(Echo, path, start_serving=False)
            assert not server.is_serving()
            task = loop.create_task(server.serve_forever())
            await asyncio.sleep(0.01)
            assert server.is_serving()
            data = await roundtrip(loop, path, b"forever")
            server.close()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.wait_closed()
            return data

        assert run(loop, main()) == b"forever"

    def test_many_clients(self, loop, path):
        async def main():
            server = await loop.create_unix_server(Echo, path)
            async with server:
                return await asyncio.gather(*[roundtrip(loop, path, b"%d" % i) for i in range(20)])

        assert run(loop, main()) == [b"%d" % i for i in range(20)]
