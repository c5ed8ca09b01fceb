"""loop.sendfile() and loop.sock_sendfile(): a 100 MiB file checked by sha256, offset and count, the
file position afterwards, the fallbacks (TLS transports, files with no fd), and errors."""
import asyncio
import hashlib
import io
import os
import socket
import ssl

import pytest

from .util import run, xfail_asyncio

BIG = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """(path, sha256 hex) of a 100 MiB file of random bytes."""
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    return str(path), digest.hexdigest()


@pytest.fixture
def small_file(tmp_path):
    """(path, content) of a 1 MiB file."""
    data = os.urandom(1 << 20)
    path = tmp_path / "small.bin"
    path.write_bytes(data)
    return str(path), data


class Sink(asyncio.Protocol):
    """Hashes (and keeps, if asked) what it receives; ``done`` has the byte count at EOF."""

    def __init__(self, loop, keep=False):
        self.digest = hashlib.sha256()
        self.keep = bytearray() if keep else None
        self.size = 0
        self.transport = None
        self.made = loop.create_future()
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data):
        self.digest.update(data)
        self.size += len(data)
        if self.keep is not None:
            self.keep += data

    def eof_received(self):
        self.done.set_result(self.size)

    def connection_lost(self, exc):
        # A TLS close without EOF first (3.9/3.10's sslproto) ends the stream cleanly too.
        if not self.done.done():
            if exc is None:
                self.done.set_result(self.size)
            else:
                self.done.set_exception(exc)


class AbortingSink(Sink):
    """A Sink that resets the connection once it got more than 1 MiB."""

    def data_received(self, data):
        super().data_received(data)
        if self.size > (1 << 20) and not self.transport.is_closing():
            self.transport.abort()


class Client(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()
        self.got_data = loop.create_future()

    def data_received(self, data):
        self.data += data
        if not self.got_data.done():
            self.got_data.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def connected(loop, keep=False, server_ssl=None, client_ssl=None, sink=Sink):
    """(server, client transport, client protocol, sink): a client connected to a Sink server."""
    sinks = []

    def factory():
        sinks.append(sink(loop, keep))
        return sinks[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    tr, proto = await loop.create_connection(lambda: Client(loop), "127.0.0.1", port, ssl=client_ssl,
                                             server_hostname="localhost" if client_ssl else None)
    while not sinks:
        await asyncio.sleep(0.001)
    await sinks[0].made
    return server, tr, proto, sinks[0]


async def finish(server, tr):
    tr.close()
    server.close()
    await server.wait_closed()


def test_sendfile_100_mib(loop, big_file):
    path, digest = big_file

    async def main():
        server, tr, _, sink = await connected(loop)
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f)
            position = f.tell()
        tr.write_eof()
        size = await sink.done
        await finish(server, tr)
        return sent, position, size, sink.digest.hexdigest()

    assert run(loop, main(), timeout=60) == (BIG, BIG, BIG, digest)


def test_sendfile_offset_and_count(loop, small_file):
    path, data = small_file

    async def main():
        server, tr, _, sink = await connected(loop, keep=True)
        with open(path, "rb") as f:
            first = await loop.sendfile(tr, f, offset=1000, count=5000)
            pos1 = f.tell()
            # To the end of the file from an offset; count past the end sends what there is.
            second = await loop.sendfile(tr, f, offset=len(data) - 300)
            third = await loop.sendfile(tr, f, offset=len(data) - 10, count=1000)
            pos3 = f.tell()
        tr.write_eof()
        await sink.done
        await finish(server, tr)
        return first, pos1, second, third, pos3, bytes(sink.keep)

    first, pos1, second, third, pos3, received = run(loop, main())
    assert (first, pos1, second, third, pos3) == (5000, 6000, 300, 10, len(data))
    assert received == data[1000:6000] + data[-300:] + data[-10:]


def test_sendfile_flushes_queued_data_first_and_refuses_writes(loop, small_file):
    path, data = small_file
    head = os.urandom(8 << 20)      # more than the socket takes at once: part of it is queued

    async def main():
        server, tr, _, sink = await connected(loop, keep=True)
        tr.write(head)
        queued = tr.get_write_buffer_size()
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(tr, f))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                tr.write(b"in the middle")
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                tr.writelines([b"in the middle"])
            sent = await task
        tr.write(b"tail")                   # writable again
        tr.write_eof()
        await sink.done
        await finish(server, tr)
        return queued, sent, bytes(sink.keep)

    queued, sent, received = run(loop, main())
    assert queued > 0 and sent == len(data)
    assert received == head + data + b"tail"


def test_reading_goes_on_after_sendfile(loop, small_file):
    path, data = small_file

    async def main():
        server, tr, proto, sink = await connected(loop)
        was_reading = tr.is_reading()
        with open(path, "rb") as f:
            await loop.sendfile(tr, f)
        sink.transport.write(b"reply")
        await proto.got_data
        reading = tr.is_reading()
        await finish(server, tr)
        return was_reading, reading, bytes(proto.data)

    assert run(loop, main()) == (True, True, b"reply")


def test_sendfile_on_closing_transport(loop, small_file):
    path, _ = small_file

    async def main():
        server, tr, _, _ = await connected(loop)
        tr.close()
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError, match="Transport is closing"):
                await loop.sendfile(tr, f)
        await finish(server, tr)

    run(loop, main())


def test_sendfile_of_a_file_without_fd_falls_back(loop, small_file):
    _, data = small_file

    async def main():
        server, tr, _, sink = await connected(loop, keep=True)
        buf = io.BytesIO(data)
        sent = await loop.sendfile(tr, buf, offset=10)
        position = buf.tell()
        with pytest.raises(asyncio.SendfileNotAvailableError, match="not a regular file"):
            await loop.sendfile(tr, io.BytesIO(data), fallback=False)
        tr.write_eof()
        await sink.done
        await finish(server, tr)
        return sent, position, bytes(sink.keep)

    sent, position, received = run(loop, main())
    assert sent == len(data) - 10 and position == len(data)
    assert received == data[10:]


def test_sendfile_empty_file(loop, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    async def main():
        server, tr, _, _ = await connected(loop)
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f)
        await finish(server, tr)
        return sent

    assert run(loop, main()) == 0


def test_sendfile_when_the_peer_goes_away(loop, big_file):
    path, _ = big_file

    async def main():
        server, tr, _, _ = await connected(loop, sink=AbortingSink)
        with open(path, "rb") as f:
            with pytest.raises(ConnectionError):
                await loop.sendfile(tr, f)
            position = f.tell()
        await finish(server, tr)
        return position

    position = run(loop, main())
    assert 0 < position < BIG


def test_sendfile_over_tls_falls_back(loop, big_file, certs):
    path, digest = big_file
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    client_ctx = ssl.create_default_context(cafile=certs.ca)
    count = 16 << 20

    async def main():
        server, tr, _, sink = await connected(loop, server_ssl=server_ctx, client_ssl=client_ctx)
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f, count=count)
            position = f.tell()
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await loop.sendfile(tr, f, fallback=False)
        tr.close()
        await sink.done
        await finish(server, tr)
        return sent, position, sink.size, sink.digest.hexdigest()

    with open(path, "rb") as f:
        want = hashlib.sha256(f.read(count)).hexdigest()
    assert run(loop, main(), timeout=60) == (count, count, count, want)


# -- sock_sendfile --------------------------------------------------------------------------------

@pytest.fixture
def stream_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def read_all(loop, sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_sock_sendfile(loop, stream_pair, big_file):
    path, digest = big_file
    a, b = stream_pair

    async def main():
        reader = asyncio.ensure_future(read_all(loop, b, BIG))
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f)
            position = f.tell()
        data = await reader
        return sent, position, len(data), hashlib.sha256(data).hexdigest()

    assert run(loop, main(), timeout=60) == (BIG, BIG, BIG, digest)


def test_sock_sendfile_offset_count(loop, stream_pair, small_file):
    path, data = small_file
    a, b = stream_pair

    async def main():
        reader = asyncio.ensure_future(read_all(loop, b, 70000))
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f, 12345, 70000)
            position = f.tell()
        return sent, position, await reader

    assert run(loop, main()) == (70000, 12345 + 70000, data[12345:12345 + 70000])


def test_sock_sendfile_fallback(loop, stream_pair, small_file):
    _, data = small_file
    a, b = stream_pair

    async def main():
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, io.BytesIO(data), fallback=False)
        reader = asyncio.ensure_future(read_all(loop, b, 1000))
        sent = await loop.sock_sendfile(a, io.BytesIO(data), 5, 1000)
        return sent, await reader

    assert run(loop, main()) == (1000, data[5:1005])


def test_sock_sendfile_argument_errors(loop, stream_pair, small_file, tmp_path):
    path, _ = small_file
    a, _ = stream_pair

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="count must be a positive integer"):
                await loop.sock_sendfile(a, f, 0, 0)
            with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                await loop.sock_sendfile(a, f, -1)
            with pytest.raises(TypeError, match="offset must be a non-negative integer"):
                await loop.sock_sendfile(a, f, 1.5)
        with open(path, "r") as text:
            with pytest.raises(ValueError, match="binary mode"):
                await loop.sock_sendfile(a, text)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            with open(path, "rb") as f:
                with pytest.raises(ValueError, match="only SOCK_STREAM"):
                    await loop.sock_sendfile(udp, f)

    run(loop, main())


def test_transport_aborted_during_sendfile(loop, request, big_file):
    xfail_asyncio(request, True, "abort() closes the socket whose writer the transfer waits on: the "
                  "selector never reports it again and sendfile() never returns")
    path, _ = big_file

    async def main():
        server, tr, _, sink = await connected(loop)
        sink.transport.pause_reading()      # the transfer stalls once the socket buffers are full
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(tr, f))
            await asyncio.sleep(0.1)
            tr.abort()
            with pytest.raises(OSError) as info:
                await task
            position = f.tell()
        sink.transport.abort()      # paused, it would not see the reset; 3.12+ wait_closed() waits for it
        await finish(server, tr)
        return info.value, position

    exc, position = run(loop, main(), timeout=3)
    assert isinstance(exc, ConnectionError)
    assert 0 < position < BIG       # what was sent
