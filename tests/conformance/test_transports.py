"""Stream transports and protocols, over TCP and UNIX sockets: write/writelines, write_eof and
half-close, extra info, reading pause/resume, write buffer limits and flow control, abort/close,
set_protocol, BufferedProtocol, connection_lost arguments, eof_received keeping the transport open."""
import asyncio
import os
import socket
import struct
import tempfile

import pytest

from .util import Recorder, run


@pytest.fixture(params=["tcp", "unix"])
def family(request):
    return request.param


@pytest.fixture
def sock_dir():
    d = tempfile.mkdtemp(prefix="lvc")  # short: AF_UNIX paths hold 107 bytes
    try:
        yield d
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


class Pair:
    """A connected client/server pair of transports with Recorder (or given) protocols."""

    def __init__(self, loop, family, sock_dir):
        self.loop = loop
        self.family = family
        self.sock_dir = sock_dir
        self.server = None

    async def open(self, client_proto=None, server_proto=None):
        loop = self.loop
        self.cp = client_proto or Recorder(loop)
        self.sp = server_proto or Recorder(loop)
        accepted = loop.create_future()

        def factory():
            accepted.set_result(self.sp)
            return self.sp

        if self.family == "tcp":
            self.server = await loop.create_server(factory, "127.0.0.1", 0)
            addr = self.server.sockets[0].getsockname()
            self.ct, _ = await loop.create_connection(lambda: self.cp, *addr)
        else:
            path = os.path.join(self.sock_dir, "s")
            self.server = await loop.create_unix_server(factory, path)
            self.ct, _ = await loop.create_unix_connection(lambda: self.cp, path)
        await accepted
        self.st = await self.sp.made if isinstance(self.sp, Recorder) else self.sp.transport
        self.server.close()  # no more connections; the accepted one stays open
        return self

    async def aclose(self):
        for tr in (self.ct, self.st):
            if not tr.is_closing():
                tr.abort()
        await self.server.wait_closed()


@pytest.fixture
def pair(loop, family, sock_dir):
    return Pair(loop, family, sock_dir)


class TestTransportBasics:
    def test_is_a_transport(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                for tr in (p.ct, p.st):
                    assert isinstance(tr, asyncio.Transport)
                    assert isinstance(tr, asyncio.ReadTransport)
                    assert isinstance(tr, asyncio.WriteTransport)
                    assert not tr.is_closing()
                    assert tr.is_reading()
                    assert tr.can_write_eof() is True
                assert p.ct.get_protocol() is p.cp
                assert p.st.get_protocol() is p.sp
                assert p.cp.events == ["made"]
            finally:
                await p.aclose()

        run(loop, main())

    def test_write_and_writelines(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.write(b"one ")
                p.ct.write(bytearray(b"two "))
                p.ct.write(memoryview(b"three "))
                p.ct.writelines([b"four ", bytearray(b"five "), memoryview(b"six")])
                p.ct.write(b"")  # nothing
                return await p.sp.wait_data(len(b"one two three four five six"))
            finally:
                await p.aclose()

        assert run(loop, main()) == b"one two three four five six"

    def test_write_refuses_str(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                with pytest.raises(TypeError):
                    p.ct.write("text")
            finally:
                await p.aclose()

        run(loop, main())

    def test_extra_info(self, loop, pair, family):
        async def main():
            p = await pair.open()
            try:
                info = {}
                for side, tr in (("client", p.ct), ("server", p.st)):
                    sock = tr.get_extra_info("socket")
                    assert sock is not None
                    assert sock.fileno() >= 0
                    assert sock.family == (socket.AF_INET if family == "tcp" else socket.AF_UNIX)
                    assert sock.type == socket.SOCK_STREAM
                    assert tr.get_extra_info("sockname") == sock.getsockname()
                    assert tr.get_extra_info("peername") == sock.getpeername()
                    assert tr.get_extra_info("no such key") is None
                    assert tr.get_extra_info("no such key", "dflt") == "dflt"
                    info[side] = (tr.get_extra_info("sockname"), tr.get_extra_info("peername"))
                if family == "tcp":
                    assert info["client"][0] == info["server"][1]
                    assert info["client"][1] == info["server"][0]
                    # TCP_NODELAY is on for TCP transports (asyncio sets it since 3.6)
                    sock = p.ct.get_extra_info("socket")
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                else:
                    assert info["client"][1] == os.path.join(pair.sock_dir, "s")
                    assert info["server"][0] == os.path.join(pair.sock_dir, "s")
            finally:
                await p.aclose()

        run(loop, main())

    def test_write_eof_half_close(self, loop, pair):
        async def main():
            p = await pair.open(server_proto=Recorder(loop, eof_result=True))
            try:
                p.ct.write(b"request")
                p.ct.write_eof()
                assert not p.ct.is_closing()
                await p.sp.eof
                assert bytes(p.sp.data) == b"request"
                # the other direction still works
                p.st.write(b"response")
                await p.cp.wait_data(8)
                with pytest.raises(RuntimeError):
                    p.ct.write(b"after eof")
                p.st.close()
                await p.cp.lost
                await p.sp.lost
                return bytes(p.cp.data), p.cp.events, p.sp.events
            finally:
                await p.aclose()

        data, cevents, sevents = run(loop, main())
        assert data == b"response"
        assert cevents == ["made", "data", "eof", "lost"]
        assert sevents == ["made", "data", "eof", "lost"]

    def test_write_eof_twice(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.write_eof()
                p.ct.write_eof()  # no error
                await p.sp.eof
            finally:
                await p.aclose()

        run(loop, main())

    def test_eof_received_returning_true_keeps_the_transport_open(self, loop, pair):
        async def main():
            sp = Recorder(loop, eof_result=True)
            p = await pair.open(server_proto=sp)
            try:
                p.ct.write(b"q")
                p.ct.write_eof()
                await sp.eof
                await asyncio.sleep(0.02)
                assert not sp.lost.done()
                assert not p.st.is_closing()
                p.st.write(b"answer after eof")
                await p.cp.wait_data(16)
                p.st.close()
                await p.cp.lost
                return bytes(p.cp.data)
            finally:
                await p.aclose()

        assert run(loop, main()) == b"answer after eof"

    def test_eof_received_returning_false_closes(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.write_eof()
                await p.sp.eof
                exc = await p.sp.lost
                assert exc is None
                assert p.st.is_closing()
                await p.cp.eof
                return await p.cp.lost
            finally:
                await p.aclose()

        assert run(loop, main()) is None


class TestCloseAndAbort:
    def test_close_flushes_and_connection_lost_none(self, loop, pair):
        payload = os.urandom(1024 * 1024)

        async def main():
            p = await pair.open()
            try:
                p.st.write(payload)
                p.st.close()
                assert p.st.is_closing()
                p.st.close()  # twice is fine
                await p.cp.eof
                exc_c = await p.cp.lost
                exc_s = await p.sp.lost
                return bytes(p.cp.data), exc_c, exc_s
            finally:
                await p.aclose()

        data, exc_c, exc_s = run(loop, main())
        assert data == payload
        assert exc_c is None and exc_s is None

    def test_connection_lost_is_called_once_and_last(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.write(b"x")
                p.ct.close()
                await p.cp.lost
                await p.sp.lost
                await asyncio.sleep(0.01)
                return p.cp.events, p.sp.events
            finally:
                await p.aclose()

        cevents, sevents = run(loop, main())
        assert cevents == ["made", "lost"]
        assert sevents == ["made", "data", "eof", "lost"]

    def test_connection_lost_is_not_called_in_place(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.close()
                assert "lost" not in p.cp.events  # scheduled, not called from close()
                await p.cp.lost
                p.st.abort()
                assert "lost" not in p.sp.events
                await p.sp.lost
            finally:
                await p.aclose()

        run(loop, main())

    def test_abort(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.pause_reading()
                p.ct.write(b"x" * (8 * 1024 * 1024))  # some of it stays buffered
                p.ct.abort()
                assert p.ct.is_closing()
                exc = await p.cp.lost
                assert p.ct.get_write_buffer_size() == 0
                # the peer sees the connection end (EOF or reset)
                peer_exc = await p.sp.lost
                return exc, peer_exc
            finally:
                await p.aclose()

        exc, peer_exc = run(loop, main())
        assert exc is None
        assert peer_exc is None or isinstance(peer_exc, ConnectionError)

    def test_tcp_connection_lost_with_an_error_on_reset(self, loop):
        handler_calls = []
        loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))

        async def main():
            lsock = socket.socket()
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            lsock.setblocking(False)
            try:
                cp = Recorder(loop)
                accept = loop.create_task(loop.sock_accept(lsock))
                ct, _ = await loop.create_connection(lambda: cp, *lsock.getsockname())
                conn, _ = await accept
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # sends RST
                return await cp.lost, cp.events
            finally:
                lsock.close()

        exc, events = run(loop, main())
        assert isinstance(exc, ConnectionResetError)
        assert events == ["made", "lost"]
        # OSErrors of a transport are not reported to the exception handler (outside debug mode)
        assert handler_calls == []

    def test_close_while_reading_paused(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.pause_reading()
                p.ct.close()
                assert await p.cp.lost is None
                assert await p.sp.lost is None
            finally:
                await p.aclose()

        run(loop, main())


class TestReading:
    def test_pause_and_resume_reading(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.pause_reading()
                assert not p.ct.is_reading()
                p.ct.pause_reading()  # twice is fine
                p.st.write(b"while paused")
                await asyncio.sleep(0.05)
                assert bytes(p.cp.data) == b""
                p.ct.resume_reading()
                assert p.ct.is_reading()
                p.ct.resume_reading()  # twice is fine
                return await p.cp.wait_data(12)
            finally:
                await p.aclose()

        assert run(loop, main()) == b"while paused"

    def test_eof_not_delivered_while_paused(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.pause_reading()
                p.st.write(b"last words")
                p.st.write_eof()
                await asyncio.sleep(0.05)
                assert p.cp.events == ["made"]
                p.ct.resume_reading()
                await p.cp.eof
                return bytes(p.cp.data), p.cp.events[:3]
            finally:
                await p.aclose()

        assert run(loop, main()) == (b"last words", ["made", "data", "eof"])

    def test_is_reading_false_after_close(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.ct.close()
                assert not p.ct.is_reading()
                await p.cp.lost
                p.ct.pause_reading()  # no error on a closed transport
                p.ct.resume_reading()
                assert not p.ct.is_reading()
            finally:
                await p.aclose()

        run(loop, main())


class TestWriteFlowControl:
    def test_write_buffer_limits(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                low, high = p.ct.get_write_buffer_limits()
                assert 0 <= low <= high
                p.ct.set_write_buffer_limits(high=1000, low=100)
                assert p.ct.get_write_buffer_limits() == (100, 1000)
                p.ct.set_write_buffer_limits(high=4000)
                low, high = p.ct.get_write_buffer_limits()
                assert high == 4000 and 0 <= low <= 4000
                p.ct.set_write_buffer_limits(low=10)
                low, high = p.ct.get_write_buffer_limits()
                assert low == 10 and high >= 10
                with pytest.raises(ValueError):
                    p.ct.set_write_buffer_limits(high=10, low=100)
                with pytest.raises(ValueError):
                    p.ct.set_write_buffer_limits(high=-1, low=-2)
                assert p.ct.get_write_buffer_size() == 0
            finally:
                await p.aclose()

        run(loop, main())

    def test_pause_and_resume_writing_at_the_limits(self, loop, pair):
        high, low = 64 * 1024, 16 * 1024
        chunk = b"x" * 16 * 1024

        async def main():
            p = await pair.open()
            try:
                p.sp.transport.pause_reading()  # the peer does not read
                p.ct.set_write_buffer_limits(high=high, low=low)
                written = 0
                while not p.cp.paused and written < 256 * 1024 * 1024:
                    p.ct.write(chunk)
                    written += len(chunk)
                    if p.ct.get_write_buffer_size() == 0:
                        await asyncio.sleep(0)  # let the loop push to the kernel
                assert p.cp.paused == 1, "pause_writing never called"
                assert p.cp.size_at_pause > high
                assert p.ct.get_write_buffer_size() > high
                assert p.cp.resumed == 0
                # more writes while paused: still one pause_writing call
                p.ct.write(chunk)
                assert p.cp.paused == 1
                written += len(chunk)
                await asyncio.sleep(0.02)
                assert p.cp.resumed == 0  # nothing drains while the peer does not read
                p.sp.transport.resume_reading()
                await p.sp.wait_data(written)
                for _ in range(100):
                    if p.cp.resumed:
                        break
                    await asyncio.sleep(0.01)
                return p.cp.paused, p.cp.resumed, p.cp.size_at_resume, len(p.sp.data), written
            finally:
                await p.aclose()

        paused, resumed, size_at_resume, received, written = run(loop, main())
        assert (paused, resumed) == (1, 1)
        assert size_at_resume <= low
        assert received == written

    def test_lowering_the_limit_pauses(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                p.sp.transport.pause_reading()
                p.ct.set_write_buffer_limits(high=1 << 30, low=1 << 20)
                for _ in range(2000):
                    if p.ct.get_write_buffer_size() > 100000:
                        break
                    p.ct.write(b"y" * 65536)
                    await asyncio.sleep(0)
                assert p.ct.get_write_buffer_size() > 100000
                assert p.cp.paused == 0
                p.ct.set_write_buffer_limits(high=1000, low=100)
                assert p.cp.paused == 1
            finally:
                await p.aclose()

        run(loop, main())


class TestSetProtocol:
    def test_set_protocol(self, loop, pair):
        async def main():
            p = await pair.open()
            try:
                other = Recorder(loop)
                p.ct.set_protocol(other)
                assert p.ct.get_protocol() is other
                p.st.write(b"for the new protocol")
                await other.wait_data(20)
                p.st.close()
                await other.lost
                return bytes(p.cp.data), bytes(other.data), other.events
            finally:
                await p.aclose()

        old, new, events = run(loop, main())
        assert old == b""
        assert new == b"for the new protocol"
        assert events == ["data", "eof", "lost"]


class BufProto(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.loop = loop
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizehints = []
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.transport = None
        self.data_received_calls = 0

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]

    def data_received(self, data):  # never called for a BufferedProtocol
        self.data_received_calls += 1

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class TestBufferedProtocol:
    @pytest.mark.parametrize("size", [7, 65536])
    def test_get_buffer_and_buffer_updated(self, loop, pair, size):
        payload = os.urandom(300 * 1024)

        async def main():
            bp = BufProto(loop, size)
            p = await pair.open(client_proto=bp)
            try:
                p.st.write(payload)
                p.st.close()
                await bp.eof
                exc = await bp.lost
                return bytes(bp.data), exc, bp.sizehints, bp.data_received_calls
            finally:
                await p.aclose()

        data, exc, hints, dr_calls = run(loop, main())
        assert data == payload
        assert exc is None
        assert dr_calls == 0
        assert hints and all(isinstance(h, int) for h in hints)

    def test_memoryview_buffer(self, loop, pair):
        async def main():
            bp = BufProto(loop, 100)
            full = bytearray(64)
            bp.buf = memoryview(full)[8:24]  # 16 bytes, a view
            p = await pair.open(client_proto=bp)
            try:
                p.st.write(b"0123456789" * 10)
                p.st.close()
                await bp.lost
                return bytes(bp.data)
            finally:
                await p.aclose()

        assert run(loop, main()) == b"0123456789" * 10
