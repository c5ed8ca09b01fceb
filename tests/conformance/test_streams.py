"""Streams on the loop: asyncio.open_connection / start_server, open_unix_connection /
start_unix_server, readline / readexactly / readuntil, 20 MiB each way, drain and backpressure."""
import asyncio
import hashlib
import os
import tempfile

import pytest

from .util import run

MiB = 1024 * 1024


@pytest.fixture
def unix_path():
    d = tempfile.mkdtemp(prefix="lvc")
    p = os.path.join(d, "st.sock")
    try:
        yield p
    finally:
        if os.path.exists(p):
            os.unlink(p)
        os.rmdir(d)


async def echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def start(kind, handler, unix_path, **kwargs):
    """(server, open) where open() opens a client stream pair to it."""
    if kind == "tcp":
        server = await asyncio.start_server(handler, "127.0.0.1", 0, **kwargs)
        addr = server.sockets[0].getsockname()
        return server, lambda **kw: asyncio.open_connection(*addr, **kw)
    server = await asyncio.start_unix_server(handler, unix_path, **kwargs)
    return server, lambda **kw: asyncio.open_unix_connection(unix_path, **kw)


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


class TestStreams:
    def test_echo(self, loop, kind, unix_path):
        async def main():
            server, connect = await start(kind, echo_handler, unix_path)
            async with server:
                reader, writer = await connect()
                assert writer.transport.get_extra_info("peername") is not None
                writer.write(b"hello\n")
                await writer.drain()
                line = await reader.readline()
                writer.write_eof()
                rest = await reader.read()
                writer.close()
                await writer.wait_closed()
                return line, rest

        assert run(loop, main()) == (b"hello\n", b"")

    def test_readline_readexactly_readuntil(self, loop, kind, unix_path):
        async def handler(reader, writer):
            writer.write(b"line one\nline two\nEXACTLYabc--SEP--tail")
            await writer.drain()
            writer.close()

        async def main():
            server, connect = await start(kind, handler, unix_path)
            async with server:
                reader, writer = await connect()
                try:
                    got = [await reader.readline(), await reader.readline(),
                           await reader.readexactly(7), await reader.readuntil(b"--SEP--")]
                    with pytest.raises(asyncio.IncompleteReadError) as info:
                        await reader.readexactly(100)
                    got.append(info.value.partial)
                    got.append(await reader.readline())  # at EOF
                    assert reader.at_eof()
                    return got
                finally:
                    writer.close()
                    await writer.wait_closed()

        assert run(loop, main()) == [b"line one\n", b"line two\n", b"EXACTLY", b"abc--SEP--",
                                     b"tail", b""]

    def test_readuntil_limit(self, loop, kind, unix_path):
        async def handler(reader, writer):
            writer.write(b"x" * 200 + b"\n")
            await writer.drain()
            writer.close()

        async def main():
            server, connect = await start(kind, handler, unix_path)
            async with server:
                reader, writer = await connect(limit=64)
                try:
                    with pytest.raises(asyncio.LimitOverrunError):
                        await reader.readuntil(b"\n")
                finally:
                    writer.close()
                    await writer.wait_closed()

        run(loop, main())

    def test_large_transfer_both_ways(self, loop, kind, unix_path):
        size = 20 * MiB
        up = os.urandom(size)
        down = os.urandom(size)
        server_saw = []
        server_done = None

        async def handler(reader, writer):
            async def send():
                view = memoryview(down)
                for i in range(0, size, 256 * 1024):
                    writer.write(view[i:i + 256 * 1024])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            h = hashlib.sha256()
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                h.update(data)
                n += len(data)
            server_saw.append((n, h.hexdigest()))
            await sender
            writer.close()
            server_done.set()

        async def main():
            nonlocal server_done
            server_done = asyncio.Event()
            server, connect = await start(kind, handler, unix_path)
            async with server:
                reader, writer = await connect()

                async def send():
                    view = memoryview(up)
                    for i in range(0, size, 1 << 20):
                        writer.write(view[i:i + (1 << 20)])
                        await writer.drain()
                    writer.write_eof()

                sender = asyncio.ensure_future(send())
                h = hashlib.sha256()
                n = 0
                while True:
                    data = await reader.read(1 << 20)
                    if not data:
                        break
                    h.update(data)
                    n += len(data)
                await sender
                writer.close()
                await writer.wait_closed()
                # The server may still be reading the end of what was sent (3.11's wait_closed() does
                # not wait for handlers).
                await server_done.wait()
                return n, h.hexdigest()

        n, digest = run(loop, main(), timeout=60)
        assert (n, digest) == (size, hashlib.sha256(down).hexdigest())
        assert server_saw == [(size, hashlib.sha256(up).hexdigest())]

    def test_drain_waits_for_the_peer(self, loop, kind, unix_path):
        size = 32 * MiB
        may_read = None
        received = []

        async def handler(reader, writer):
            await may_read
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n += len(data)
            received.append(n)
            writer.close()

        async def main():
            nonlocal may_read
            may_read = loop.create_future()
            server, connect = await start(kind, handler, unix_path)
            async with server:
                reader, writer = await connect()
                writer.write(b"z" * size)
                drain = asyncio.ensure_future(writer.drain())
                await asyncio.sleep(0.1)
                # 32 MiB do not fit in the kernel's buffers: the transport holds the rest
                assert writer.transport.get_write_buffer_size() > 0
                assert not drain.done(), "drain() returned while the peer was not reading"
                may_read.set_result(None)
                await drain
                writer.write_eof()
                assert await reader.read() == b""
                writer.close()
                await writer.wait_closed()

        run(loop, main(), timeout=30)
        assert received == [size]

    def test_server_close_with_client_streams(self, loop, kind, unix_path):
        async def handler(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        async def main():
            server, connect = await start(kind, handler, unix_path)
            reader, writer = await connect()
            writer.write(b"one line\n")
            line = await reader.readline()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return line

        assert run(loop, main()) == b"one line\n"


class TestStreamReaderProtocol:
    """What StreamReaderProtocol.data_received() does, however the loop delivers it (levent's
    transports feed an unpatched StreamReader natively): pausing above 2 * limit, a subclass's own
    data_received(), a reader that is gone."""

    def test_reader_pauses_the_transport_above_twice_its_limit(self, loop):
        size = 4 * MiB
        data = os.urandom(size)

        async def handler(reader, writer):
            writer.write(data)
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            async with server:
                reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2],
                                                               limit=4096)
                try:
                    for _ in range(200):        # the peer's 4 MiB fill the reader until it pauses
                        if not writer.transport.is_reading():
                            break
                        await asyncio.sleep(0.01)
                    assert not writer.transport.is_reading()
                    # Paused above 2 * limit after one read: never far above it.
                    assert 2 * 4096 < len(reader._buffer) <= 2 * 4096 + 256 * 1024
                    got = bytearray()
                    while True:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        got += chunk
                    return hashlib.sha256(got).hexdigest()
                finally:
                    writer.close()
                    await writer.wait_closed()

        assert run(loop, main()) == hashlib.sha256(data).hexdigest()

    def test_reads_of_every_size_arrive_whole_and_in_order(self, loop):
        # levent copies small reads into the reader natively and receives large ones into its
        # bytearray; the switch between the two follows the size of the previous read.
        sizes = [1, 100, 5000, 9000, 20000, 70000, 300000, 16, 40000, 8192, 65536, 65537, 3]
        messages = [os.urandom(n) for n in sizes]

        async def main():
            server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
            async with server:
                reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
                try:
                    got = []
                    for m in messages:
                        writer.write(m)
                        got.append(await reader.readexactly(len(m)))
                    return got
                finally:
                    writer.close()
                    await writer.wait_closed()

        assert run(loop, main()) == messages

    @pytest.mark.parametrize("first", [100, 40000])
    def test_data_for_an_exported_reader_buffer_is_a_fatal_error(self, loop, kind, unix_path, first):
        # feed_data()'s extend() raises BufferError while the reader's bytearray is exported. levent
        # feeds natively, copying after a small read (100) and receiving into the bytearray after a
        # large one (40000): the error, the exception handler and the closed transport are the same.
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        go = None

        async def handler(reader, writer):
            try:
                writer.write(b"a" * first)
                await go.wait()
                writer.write(b"b" * 50000)
                await writer.drain()
                await reader.read()
            except ConnectionError:
                pass        # the client's transport aborts
            finally:
                writer.close()

        async def main():
            nonlocal go
            go = asyncio.Event()
            server, connect = await start(kind, handler, unix_path)
            async with server:
                reader, writer = await connect()
                try:
                    for _ in range(200):
                        if len(reader._buffer) == first:
                            break
                        await asyncio.sleep(0.005)
                    view = memoryview(reader._buffer)
                    try:
                        go.set()
                        for _ in range(200):
                            if writer.transport.is_closing():
                                break
                            await asyncio.sleep(0.005)
                    finally:
                        view.release()
                    closing = writer.transport.is_closing()
                    await asyncio.sleep(0)      # connection_lost() hands the error to the reader
                    with pytest.raises(BufferError):
                        await reader.read()
                    return closing, len(reader._buffer)
                finally:
                    writer.close()

        closing, buffered = run(loop, main())
        assert closing and buffered == first
        assert [c["message"] for c in errors] == ["Fatal error: protocol.data_received() call failed."]
        assert isinstance(errors[0]["exception"], BufferError)

    @pytest.mark.parametrize("state", ["cancelled", "done"])
    def test_data_for_a_waiter_that_is_no_longer_pending(self, loop, state):
        # feed_data() wakes the reader's waiter unless it was cancelled; a waiter that is done
        # otherwise makes its set_result() raise InvalidStateError, a fatal error of the transport.
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))

        handled = None

        async def handler(reader, writer):
            try:
                writer.write(b"x" * 100)
                await reader.read()
            finally:
                writer.close()
                handled.set()

        async def main():
            nonlocal handled
            handled = asyncio.Event()
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            async with server:
                reader = asyncio.StreamReader()
                protocol = asyncio.StreamReaderProtocol(reader)
                waiter = asyncio.get_running_loop().create_future()
                waiter.cancel() if state == "cancelled" else waiter.set_result(None)
                reader._waiter = waiter
                transport, _ = await asyncio.get_running_loop().create_connection(
                    lambda: protocol, *server.sockets[0].getsockname()[:2])
                try:
                    for _ in range(200):
                        if reader._buffer or transport.is_closing():
                            break
                        await asyncio.sleep(0.005)
                    return reader._waiter, bytes(reader._buffer), transport.is_closing()
                finally:
                    transport.close()
                    await handled.wait()

        if state == "cancelled":
            assert run(loop, main()) == (None, b"x" * 100, False)
            assert errors == []
        else:
            assert run(loop, main()) == (None, b"x" * 100, True)
            assert [c["message"] for c in errors] == ["Fatal error: protocol.data_received() call failed."]
            assert isinstance(errors[0]["exception"], asyncio.InvalidStateError)

    def test_a_subclass_data_received_is_called(self, loop):
        seen = []

        class Counting(asyncio.StreamReaderProtocol):
            def data_received(self, data):
                seen.append(len(data))
                super().data_received(data)

        async def main():
            server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
            async with server:
                reader = asyncio.StreamReader()
                transport, _ = await asyncio.get_running_loop().create_connection(
                    lambda: Counting(reader), *server.sockets[0].getsockname()[:2])
                try:
                    transport.write(b"ping" * 1000)
                    return await reader.readexactly(4000)
                finally:
                    transport.close()

        assert run(loop, main()) == b"ping" * 1000
        assert sum(seen) == 4000

    def test_data_for_a_collected_reader_is_dropped(self, loop):
        import gc

        async def main():
            server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
            async with server:
                reader = asyncio.StreamReader()
                protocol = asyncio.StreamReaderProtocol(reader)
                transport, _ = await asyncio.get_running_loop().create_connection(
                    lambda: protocol, *server.sockets[0].getsockname()[:2])
                try:
                    del reader
                    gc.collect()        # the protocol holds its reader through a weak reference
                    assert protocol._stream_reader is None
                    transport.write(b"x" * 10000)
                    for _ in range(100):
                        await asyncio.sleep(0.005)
                    return transport.is_closing()
                finally:
                    transport.close()

        assert run(loop, main()) is False
