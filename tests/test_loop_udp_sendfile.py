"""levent's datagram transports (levent._udp) and native sendfile (levent._sendfile) beyond the shared
conformance suite: closing from inside every protocol callback, the loop closing under them, dropped
transports, and protocol errors. Real sockets on 127.0.0.1 and socketpairs; every run is bounded."""
import asyncio
import gc
import os
import socket
import warnings

import pytest

import levent
from levent._udp import DatagramTransport

TIMEOUT = 20


@pytest.fixture
def loop():
    loop = levent.new_event_loop()
    yield loop
    loop.close()


def run(loop, aw, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(aw, timeout))


class Recorder(asyncio.DatagramProtocol):
    def __init__(self, loop, on_datagram=None):
        self.received = []
        self.errors = []
        self.lost = loop.create_future()
        self.got = loop.create_future()
        self.on_datagram = on_datagram

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append(data)
        if not self.got.done():
            self.got.set_result(None)
        if self.on_datagram:
            self.on_datagram(self.transport)

    def error_received(self, exc):
        self.errors.append(exc)
        if not self.got.done():
            self.got.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_inside_datagram_received_stops_the_batch(loop, how):
    # Several datagrams wait in the socket; the first callback closes: no further datagram_received().
    async def main():
        server, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, on_datagram=lambda tr: getattr(tr, how)()), local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(5):
                s.sendto(b"%d" % i, server.get_extra_info("sockname"))
            exc = await proto.lost
        return exc, proto.received

    assert run(loop, main()) == (None, [b"0"])


def test_pause_reading_inside_datagram_received_stops_the_batch(loop):
    async def main():
        server, proto = await loop.create_datagram_endpoint(
            lambda: Recorder(loop, on_datagram=lambda tr: tr.pause_reading()), local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3):
                s.sendto(b"%d" % i, server.get_extra_info("sockname"))
            await proto.got
            for _ in range(5):
                await asyncio.sleep(0.01)
            first = list(proto.received)
            proto.on_datagram = None
            server.resume_reading()
            while len(proto.received) < 3:
                await asyncio.sleep(0.01)
        server.close()
        await proto.lost
        return first, proto.received

    assert run(loop, main()) == ([b"0"], [b"0", b"1", b"2"])


def test_error_received_exception_goes_to_the_handler(loop):
    class Failing(Recorder):
        def error_received(self, exc):
            super().error_received(exc)
            raise ValueError("from error_received")

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            addr = s.getsockname()
        tr, proto = await loop.create_datagram_endpoint(lambda: Failing(loop), remote_addr=addr)
        tr.sendto(b"refused")           # the ICMP error comes back on the next read
        await proto.got
        await asyncio.sleep(0)
        closing = tr.is_closing()
        tr.close()
        await proto.lost
        return errors, closing

    errors, closing = run(loop, main())
    assert not closing
    assert [type(ctx["exception"]) for ctx in errors] == [ValueError]
    assert "error_received" in errors[0]["message"]


def test_error_received_exception_from_sendto_reaches_the_caller(loop):
    # As asyncio: sendto()'s OSError goes to error_received(), whose exception the caller gets.
    class Failing(Recorder):
        def error_received(self, exc):
            raise ValueError("from error_received")

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Failing(loop), local_addr=("127.0.0.1", 0))
        with pytest.raises(ValueError, match="from error_received"):
            tr.sendto(b"x" * 70000, ("127.0.0.1", 9))     # EMSGSIZE
        tr.close()
        await proto.lost

    run(loop, main())


def test_loop_closed_under_an_open_datagram_transport(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        return tr

    tr = run(loop, main())
    sock = tr.get_extra_info("socket")
    loop.close()
    assert not tr.is_closing()
    with pytest.raises(RuntimeError, match="closed"):
        tr.close()                      # connection_lost cannot be scheduled on a closed loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del tr
        gc.collect()
    assert sock.fileno() == -1          # the dropped transport closed its socket


def test_dropped_paused_datagram_transport_warns_and_closes_its_socket(loop):
    # A reading transport is kept alive by its pending event (as asyncio's selector keeps it); a paused
    # one that nothing references is collected.
    async def main():
        tr, _ = await loop.create_datagram_endpoint(lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        await asyncio.sleep(0)
        tr.pause_reading()
        return tr

    tr = run(loop, main())
    sock = tr.get_extra_info("socket")
    tr.get_protocol().transport = None
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del tr
        gc.collect()
    assert sock.fileno() == -1


def test_datagram_transport_is_the_native_one(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
        tr.close()
        return tr

    tr = run(loop, main())
    assert type(tr) is DatagramTransport and "fd=" in repr(tr)


# -- sendfile -------------------------------------------------------------------------------------

@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(32 << 20))
    return str(path)


def test_loop_closed_during_a_transfer(loop, data_file):
    # The receiver never reads: the transfer waits on its write event when the loop closes.
    a, b = socket.socketpair()
    a.setblocking(False)
    f = open(data_file, "rb")
    try:
        task = loop.create_task(loop.sock_sendfile(a, f))
        loop.run_until_complete(asyncio.sleep(0.05))
        assert not task.done()
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        assert task.cancelled()
        sent = f.tell()                 # the file position says what was sent
        assert 0 < sent < 32 << 20
        task2 = loop.create_task(loop.sock_sendfile(a, f, sent))
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()                    # with task2 still waiting: no crash, the event is gone
        del task2
        gc.collect()
    finally:
        f.close()
        a.close()
        b.close()


def test_sendfile_to_a_reset_socket_fails_with_an_oserror(loop, data_file):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.close()
        with open(data_file, "rb") as f:
            try:
                # Before the first byte: asyncio's answer is SendfileNotAvailableError, so that
                # sock_sendfile() falls back, and the fallback's send() raises BrokenPipeError.
                with pytest.raises(BrokenPipeError):
                    await loop.sock_sendfile(a, f)
                with pytest.raises(asyncio.SendfileNotAvailableError):
                    await loop.sock_sendfile(a, f, fallback=False)
            finally:
                a.close()

    run(loop, main())


# -- nothing left behind --------------------------------------------------------------------------

def counts():
    gc.collect()
    return len(gc.get_objects()), len(os.listdir("/proc/self/fd"))


def test_endpoint_and_sendfile_cycles_leave_no_objects_or_fds(loop, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(100_000))

    async def endpoints(n):
        for _ in range(n):
            a, pa = await loop.create_datagram_endpoint(lambda: Recorder(loop), local_addr=("127.0.0.1", 0))
            b, pb = await loop.create_datagram_endpoint(lambda: Recorder(loop),
                                                        remote_addr=a.get_extra_info("sockname"))
            b.sendto(b"ping")
            await pa.got
            a.close()
            b.abort()
            await pa.lost
            await pb.lost

    async def sendfiles(n):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            with open(path, "rb") as f:
                for _ in range(n):
                    reader = loop.create_task(drain(b, 100_000))
                    assert await loop.sock_sendfile(a, f, 0) == 100_000
                    assert await reader == 100_000
        finally:
            a.close()
            b.close()

    async def drain(sock, n):
        got = 0
        while got < n:
            got += len(await loop.sock_recv(sock, 1 << 20))
        return got

    async def main():
        await endpoints(20)         # warm-up: caches, free lists
        await sendfiles(20)
        before = counts()
        await endpoints(200)
        await sendfiles(200)
        return before, counts()

    (objects0, fds0), (objects1, fds1) = run(loop, main(), timeout=60)
    assert fds1 == fds0
    assert objects1 - objects0 < 100, f"{objects1 - objects0} more GC-tracked objects after 400 cycles"


def test_sendfile_where_levent_does_not_drive_sendfile_itself(loop, tmp_path, monkeypatch):
    # Off Linux, loop.sendfile() runs asyncio's os.sendfile() loop: exercised here by turning the
    # native path off.
    from levent import _sendfile
    monkeypatch.setattr(_sendfile, "NATIVE", False)
    data = os.urandom(3 << 20)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    class Sink(asyncio.Protocol):
        def __init__(self):
            self.buf = bytearray()
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, chunk):
            self.buf += chunk

        def eof_received(self):
            self.done.set_result(bytes(self.buf))

    async def main():
        sinks = []
        server = await loop.create_server(lambda: sinks.append(Sink()) or sinks[-1], "127.0.0.1", 0)
        tr, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        while not sinks:
            await asyncio.sleep(0.001)
        with open(path, "rb") as f:
            sent = await loop.sendfile(tr, f, 100)
            position = f.tell()
        tr.write_eof()
        received = await sinks[0].done
        tr.close()
        sinks[0].transport.close()
        server.close()
        await asyncio.sleep(0)
        return sent, position, received

    sent, position, received = run(loop, main())
    assert (sent, position) == (len(data) - 100, len(data))
    assert received == data[100:]
