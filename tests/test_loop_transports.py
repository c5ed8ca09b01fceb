"""levent's socket transports (levent._transport) beyond the shared conformance suite: big transfers,
flow control against a peer that does not read, closing from inside every protocol callback, errors
reaching the exception handler, TLS (levent's TLSProtocol on 3.11+, asyncio's sslproto before) and
its transport closed and misused in every order, and that nothing leaks or crashes
when transports are dropped or the loop closes under them. Real sockets on 127.0.0.1, socketpairs
and UNIX sockets; every run is bounded by a timeout."""
import asyncio
import ctypes
import errno
import gc
import hashlib
import inspect
import os
import random
import socket
import ssl
import subprocess
import sys
import warnings

import pytest

import levent
from levent._transport import SocketTransport

TIMEOUT = 20


@pytest.fixture
def loop():
    loop = levent.new_event_loop()
    yield loop
    loop.close()


def run(loop, aw, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(aw, timeout))


async def assert_peer_closed(loop, peer):
    # The transport closed its socket: EOF, or a reset when it left unread data behind.
    try:
        assert await loop.sock_recv(peer, 10) == b""
    except ConnectionResetError:
        pass


def open_fds():
    return set(os.listdir("/proc/self/fd"))


class Recorder(asyncio.Protocol):
    """Keeps what it is told; ``lost`` resolves with connection_lost's argument."""

    def __init__(self, loop):
        self.transport = None
        self.data = bytearray()
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def transport_pair(loop, proto, family=socket.AF_UNIX):
    """(transport, the raw peer socket) over a socketpair."""
    a, b = socket.socketpair(family) if family == socket.AF_UNIX else _tcp_pair()
    a.setblocking(False)
    b.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
    return transport, b


def _tcp_pair():
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
    return s, c


def test_transports_are_asyncio_transports(loop):
    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto, socket.AF_INET)
        with peer:
            assert isinstance(t, asyncio.Transport) and type(t) is SocketTransport
            assert isinstance(t.get_extra_info("socket"), asyncio.trsock.TransportSocket)
            assert t.get_extra_info("peername") == peer.getsockname()
            with pytest.raises(RuntimeError, match="used by transport"):
                loop.add_reader(t.get_extra_info("socket").fileno(), lambda: None)
            t.close()
            assert await proto.lost is None
    run(loop, main())


def test_write_takes_every_call_form_of_a_python_method(loop):
    # write() is a C method descriptor of SocketTransport, not a def: it still takes what
    # asyncio's write(self, data) takes, from subclasses too, and refuses the rest with TypeError.
    class Sub(SocketTransport):
        __slots__ = ()

    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            t.write(b"a")
            t.write(data=b"b")
            SocketTransport.write(t, b"c")
            SocketTransport.write(t, data=b"d")
            for args, kwargs in [((), {}), ((b"x", b"y"), {}), ((b"x",), {"data": b"y"}), ((), {"buf": b"x"})]:
                with pytest.raises(TypeError, match="takes exactly one argument, data"):
                    t.write(*args, **kwargs)
            with pytest.raises(TypeError, match="doesn't apply"):
                SocketTransport.write(object(), b"x")
            with pytest.raises(TypeError, match="bytes-like"):
                t.write("text")
            sub = Sub.__new__(Sub)
            SocketTransport.__dict__["_core"].__set__(sub, t._core)
            sub.write(b"e")
            assert inspect.signature(SocketTransport.write) == inspect.signature(lambda self, /, data: None)
            got = b""
            for _ in range(500):
                if len(got) >= 5:
                    break
                await asyncio.sleep(0.01)
                try:
                    got += peer.recv(100)
                except BlockingIOError:
                    pass
            assert got == b"abcde"
            t.close()
            await proto.lost
    run(loop, main())


def test_data_received_bytes_are_whole_objects_whether_kept_or_not(loop):
    # Reads reuse the bytes object of the previous read when data_received() did not keep it: what
    # the protocol keeps never changes, and each object is a proper bytes (its own hash, its NUL).
    header = sys.getsizeof(b"") - 1      # where ob_sval starts
    # Copied reads (below 8 KiB after a small one), then reads into the object itself: one that
    # fits, one that fills it (the rest is appended), one far smaller (shrunk), and back.
    sizes = [100, 60, 99, 1000, 700, 1000, 2000, 1100, 64, 64, 5000, 4000, 3,
             20000, 16384, 16000, 30000, 9000, 100000, 50000, 8192, 8192, 100, 3]
    chunks = [os.urandom(n) for n in sizes]

    class Checker(asyncio.Protocol):
        def __init__(self):
            self.kept = []
            self.got = []

        def data_received(self, data):
            assert type(data) is bytes
            assert hash(data) == hash(bytes(bytearray(data)))   # no hash cached from other content
            assert {data: 1}[bytes(bytearray(data))] == 1
            assert ctypes.string_at(id(data) + header, len(data) + 1)[-1] == 0
            self.got.append(bytes(bytearray(data)))
            if len(self.got) % 3 == 0:
                self.kept.append((data, bytes(bytearray(data))))

    async def main():
        proto = Checker()
        t, peer = await transport_pair(loop, proto)
        with peer:
            sent = 0
            for chunk in chunks:
                peer.sendall(chunk)
                sent += len(chunk)
                for _ in range(1000):       # each chunk a read of its own: wait for it
                    if sum(map(len, proto.got)) >= sent:
                        break
                    await asyncio.sleep(0.001)
            assert b"".join(proto.got) == b"".join(chunks)
            assert proto.kept and all(kept == copy for kept, copy in proto.kept)
            t.close()
    run(loop, main())


def test_interleaved_reads_of_several_transports_never_share_a_bytes_object(loop):
    # The kept read object is one for all transports. Reads of four connections, in random order and
    # sizes (copied and direct reads), whose protocols keep some chunks, write() some to a transport
    # whose peer does not read yet (so its queue holds the object itself) and drop the rest: each
    # gets its own data, and nothing a protocol or a write queue holds changes afterwards.
    rng = random.Random(6)
    sizes = [1, 2, 50, 700, 1000, 5000, 8192, 9000, 16384, 30000, 70000, 100000]
    written = []    # copies of what the protocols wrote to the sink, in order

    class Keeper(asyncio.Protocol):
        def __init__(self, sink):
            self.sink = sink
            self.got = []
            self.held = []

        def data_received(self, data):
            copy = bytes(bytearray(data))
            self.got.append(copy)
            if len(self.got) % 3 == 0:
                self.held.append((data, copy))
            elif len(self.got) % 3 == 1:
                self.sink.write(data)
                written.append(copy)

    async def main():
        sink_proto = Recorder(loop)
        sink, sink_peer = await transport_pair(loop, sink_proto, socket.AF_INET)
        # Small socket buffers, so that the sink's writes queue soon.
        sink.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sink_peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conns = []
        for _ in range(4):
            proto = Keeper(sink)
            t, peer = await transport_pair(loop, proto, socket.AF_INET)
            conns.append((proto, t, peer, []))
        try:
            for _ in range(120):
                proto, _, peer, sent = rng.choice(conns)
                chunk = os.urandom(rng.choice(sizes))
                peer.sendall(chunk)
                sent.append(chunk)
                total = sum(map(len, sent))
                for _ in range(2000):
                    if sum(map(len, proto.got)) >= total:
                        break
                    await asyncio.sleep(0.001)
                for other, _, _, _ in conns:
                    assert all(kept == copy for kept, copy in other.held)
            assert sink.get_write_buffer_size() > 0      # the sink's queue held objects meanwhile
            for proto, _, _, sent in conns:
                assert b"".join(proto.got) == b"".join(sent)
            expected = b"".join(written)
            received = bytearray()
            for _ in range(5000):
                if len(received) >= len(expected):
                    break
                received += await loop.sock_recv(sink_peer, 1 << 20)
            assert received == expected
        finally:
            for _, t, peer, _ in conns:
                t.close()
                peer.close()
            sink.close()
            sink_peer.close()

    run(loop, main())


def test_20_mib_both_ways_over_tcp(loop):
    payload = os.urandom(20 * 1024 * 1024)

    async def handle(reader, writer):
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())

        async def send():
            for i in range(0, len(payload), 3 * 1024 * 1024 + 17):
                writer.write(payload[i:i + 3 * 1024 * 1024 + 17])
                await writer.drain()
            writer.write_eof()
        sender = asyncio.ensure_future(send())
        echoed = await reader.read()
        await sender
        writer.close()
        server.close()
        await server.wait_closed()
        assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    run(loop, main(), timeout=60)


def test_flow_control_against_a_peer_that_does_not_read(loop):
    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            t.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
            chunk = b"x" * 65536
            while "pause" not in proto.events:
                t.write(chunk)
                assert t.get_write_buffer_size() < 64 * 1024 * 1024, "pause_writing() never came"
            assert t.get_write_buffer_size() > 256 * 1024
            received = 0
            while "resume" not in proto.events:
                try:
                    received += len(peer.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert t.get_write_buffer_size() <= 64 * 1024
            assert proto.events == ["made", "pause", "resume"]
            t.close()
            while data := await loop.sock_recv(peer, 1 << 20):     # close() sends the rest first
                received += len(data)
            assert received % len(chunk) == 0
            assert await proto.lost is None
    run(loop, main())


def test_write_eof_after_the_queue_drains(loop):
    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            t.write(b"y" * (8 << 20))
            assert t.get_write_buffer_size() > 0
            t.write_eof()
            with pytest.raises(RuntimeError, match="after write_eof"):
                t.write(b"more")
            got = 0
            while data := await loop.sock_recv(peer, 1 << 20):
                got += len(data)
            assert got == 8 << 20
            await loop.sock_sendall(peer, b"still readable")    # half-close: reading goes on
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
            assert bytes(proto.data) == b"still readable"
    run(loop, main())


def test_mutable_data_may_be_reused_after_write(loop):
    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            t.write(b"z" * (4 << 20))      # fills the socket: what follows is queued
            buf = bytearray(b"first")
            t.write(buf)
            buf[:] = b"XXXXX"
            t.writelines([b"-", bytearray(b"second"), memoryview(b"-third")])
            t.close()
            got = bytearray()
            while data := await loop.sock_recv(peer, 1 << 20):
                got += data
            assert got.endswith(b"first-second-third")
    run(loop, main())


class SmallBuffers(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizes = set()
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.sizes.add(nbytes)
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_protocol_with_a_7_byte_buffer(loop):
    payload = os.urandom(100_000)

    async def main():
        proto = SmallBuffers(loop, 7)
        t, peer = await transport_pair(loop, proto)
        with peer:
            await loop.sock_sendall(peer, payload)
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
        assert proto.data == payload and max(proto.sizes) == 7
    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="levent's TLSProtocol runs on 3.11+; 3.9/3.10's "
                    "stdlib transport raises AttributeError when used after connection_lost()")
@pytest.mark.parametrize("where", ["connection_made", "data_received", "eof_received"])
@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_or_abort_inside_a_callback(loop, where, how):
    class Closer(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            if where == "connection_made":
                getattr(transport, how)()

        def data_received(self, data):
            super().data_received(data)
            if where == "data_received":
                getattr(self.transport, how)()
                getattr(self.transport, how)()     # twice: still one connection_lost()

        def eof_received(self):
            super().eof_received()
            if where == "eof_received":
                getattr(self.transport, how)()
            return True

    async def main():
        proto = Closer(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            try:
                peer.send(b"data")
                peer.shutdown(socket.SHUT_WR)
            except OSError:
                assert where == "connection_made"   # closed before the peer wrote
            assert await proto.lost is None
            await asyncio.sleep(0.01)
            assert proto.events.count("lost") == 1 and proto.events[-1] == "lost"
            assert t.is_closing()
            assert await loop.sock_recv(peer, 10) == b""
    run(loop, main())


@pytest.mark.parametrize("method, message", [
    ("data_received", "Fatal error: protocol.data_received() call failed."),
    ("eof_received", "Fatal error: protocol.eof_received() call failed."),
    ("get_buffer", "Fatal error: protocol.get_buffer() call failed."),
    ("buffer_updated", "Fatal error: protocol.buffer_updated() call failed."),
])
def test_protocol_exceptions_reach_the_handler_and_close(loop, method, message):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    base = SmallBuffers if method in ("get_buffer", "buffer_updated") else Recorder

    class Failing(base):
        def __init__(self):
            super().__init__(loop, 64) if base is SmallBuffers else super().__init__(loop)

    def boom(*args):
        raise ZeroDivisionError(method)
    setattr(Failing, method, boom)

    async def main():
        proto = Failing()
        t, peer = await transport_pair(loop, proto)
        with peer:
            peer.send(b"data")
            if method == "eof_received":
                peer.shutdown(socket.SHUT_WR)
            exc = await proto.lost
            assert isinstance(exc, ZeroDivisionError)
            await assert_peer_closed(loop, peer)
        [ctx] = contexts
        assert ctx["message"] == message and ctx["transport"] is t and ctx["protocol"] is proto
    run(loop, main())


def test_pause_writing_exception_goes_to_the_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Failing(Recorder):
        def pause_writing(self):
            raise ZeroDivisionError("pause")

    async def main():
        proto = Failing(loop)
        t, peer = await transport_pair(loop, proto)
        with peer:
            t.set_write_buffer_limits(high=0)
            t.write(b"p" * (4 << 20))
            assert [c["message"] for c in contexts] == ["protocol.pause_writing() failed"]
            t.abort()
            assert await proto.lost is None
    run(loop, main())


def test_peer_reset_gives_connection_lost_with_the_error(loop):
    async def main():
        proto = Recorder(loop)
        t, peer = await transport_pair(loop, proto, socket.AF_INET)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        peer.close()    # RST
        assert isinstance(await proto.lost, ConnectionResetError)
        for _ in range(10):
            t.write(b"after the loss")      # ignored, then logged, as asyncio
    run(loop, main())


def test_no_fd_leaks_over_many_connections(loop):
    async def main():
        server = await loop.create_server(lambda: Recorder(loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        for _ in range(50):
            t, p = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
            t.write(b"hi")
            t.close()
            await p.lost
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        return before
    before = run(loop, main())
    gc.collect()
    assert open_fds() <= before


def test_loop_close_with_open_transports_then_drop_them():
    # Reading, writing (a full socket) and paused transports when the loop closes: no crash, and
    # each one, collected, warns and closes its socket.
    code = """if 1:
        import asyncio, gc, os, socket, warnings, levent
        warnings.simplefilter("always")
        loop = levent.new_event_loop()
        async def main():
            keep = []
            for mode in ("reading", "writing", "paused"):
                a, b = socket.socketpair()
                keep.append(b)
                t, p = await loop.connect_accepted_socket(asyncio.Protocol, a)
                if mode == "writing":
                    t.write(b"w" * (8 << 20))
                elif mode == "paused":
                    t.pause_reading()
            return keep
        keep = loop.run_until_complete(main())
        loop.close()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            gc.collect()
        print(sum("unclosed transport" in str(x.message) for x in w))
        print(all(os.read(b.fileno(), 1) == b"" or True for b in keep[:1]))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "3", out.stdout + out.stderr


def test_dropped_paused_transport_warns_and_closes_its_socket(loop):
    async def main():
        proto = asyncio.Protocol()
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(lambda: proto, a)
        t.pause_reading()
        return b
    peer = run(loop, main())
    with peer:
        with pytest.warns(ResourceWarning, match="unclosed transport"):
            gc.collect()
        assert peer.recv(10) == b""


@pytest.fixture
def tls_contexts(certs):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return server_ctx, ssl.create_default_context(cafile=certs.ca)


def test_tls_runs_on_levents_protocol_from_311(loop, tls_contexts):
    # ssl= runs levent's TLSProtocol (3.11+) or asyncio's SSLProtocol (3.9/3.10) over a levent transport.
    server_ctx, client_ctx = tls_contexts

    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname(), ssl=client_ctx)
        writer.write(b"hello tls\n")
        assert await reader.readline() == b"HELLO TLS\n"
        assert writer.get_extra_info("ssl_object") is not None
        kind = type(writer.transport).__module__
        writer.close()
        server.close()
        await server.wait_closed()
        return kind
    assert run(loop, main()) == ("levent._sslproto" if sys.version_info >= (3, 11) else "asyncio.sslproto")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="levent's TLSProtocol runs on 3.11+")
def test_tls_transport_is_made_by_the_loop_only():
    from levent._sslproto import TLSTransport
    with pytest.raises(TypeError, match="ssl="):
        TLSTransport()
    tr = TLSTransport.__new__(TLSTransport)
    tr._core = 5    # a wrong object in its slot: an exception, not a crash
    with pytest.raises(TypeError):
        tr.write(b"x")


@pytest.mark.parametrize("kind", ["tcp", "udp", "read_pipe", "write_pipe", "tls"])
@pytest.mark.parametrize("wrong", [5, None])
def test_wrong_core_in_the_slot_raises_instead_of_crashing(loop, tls_contexts, kind, wrong):
    if kind == "tls" and sys.version_info < (3, 11):
        pytest.skip("levent's TLSProtocol runs on 3.11+")
    server_ctx, client_ctx = tls_contexts

    async def main():
        closers = []
        if kind == "udp":
            tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        elif kind in ("read_pipe", "write_pipe"):
            a, b = socket.socketpair()
            closers.append(b.close)
            connect = loop.connect_read_pipe if kind == "read_pipe" else loop.connect_write_pipe
            tr, _ = await connect(asyncio.Protocol, a)
        else:
            server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                              ssl=server_ctx if kind == "tls" else None)
            closers.append(server.close)
            tr, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(),
                                                 ssl=client_ctx if kind == "tls" else None)
        core = tr._core
        tr._core = wrong
        try:
            with pytest.raises(TypeError, match="_core must be"):
                tr.is_closing()
            repr(tr)
        finally:
            tr._core = core
            tr.close()
            for close in closers:
                close()
        await asyncio.sleep(0.01)
    run(loop, main())


def test_core_slot_read_falls_back_to_the_attribute(loop):
    # Transports read their _core slot directly when it is a plain __slots__ member; anything else
    # (an empty slot, a subclass's property, another class's object or core) takes the attribute
    # the usual way: an exception, or the property's value, never a crash.
    from levent._transport import SocketTransport

    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        tr, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        core = tr._core
        try:
            with pytest.raises(AttributeError):
                SocketTransport.is_closing(object())
            with pytest.raises(TypeError, match="_core must be"):
                SocketTransport.is_closing(udp)     # a DatagramCore in its slot

            class Impostor:                         # SocketTransport's slot descriptor, not its layout
                _core = SocketTransport.__dict__["_core"]
            with pytest.raises(TypeError, match="doesn't apply"):
                SocketTransport.is_closing(Impostor())

            class Viewed(SocketTransport):
                __slots__ = ()
                _core = property(lambda self: core)
            viewed = Viewed.__new__(Viewed)         # its own slot is shadowed, and empty
            assert viewed.is_closing() is False
            assert viewed.get_write_buffer_size() == 0

            class Changed(SocketTransport):         # a class changed after its slot was read directly
                __slots__ = ()
            changed = Changed.__new__(Changed)
            SocketTransport.__dict__["_core"].__set__(changed, core)
            assert changed.is_closing() is False and changed.is_closing() is False
            Changed._core = property(lambda self: udp._core)
            with pytest.raises(TypeError, match="_core must be"):
                changed.is_closing()
            del Changed._core
            assert changed.is_closing() is False

            del tr._core
            with pytest.raises(AttributeError):
                tr.is_closing()
        finally:
            tr._core = core
            tr.close()
            udp.close()
            server.close()
        await asyncio.sleep(0.01)
    run(loop, main())


CLOSE_ORDERS = [("close",), ("abort",), ("close", "abort"), ("abort", "close"), ("close", "close", "abort"),
                ("close", "write"), ("abort", "write"), ("pause_reading", "close", "resume_reading")]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="levent's TLSProtocol runs on 3.11+; 3.9/3.10's "
                    "stdlib transport raises AttributeError when used after connection_lost()")
@pytest.mark.parametrize("where", ["connection_made", "data_received", "eof_received"])
@pytest.mark.parametrize("order", CLOSE_ORDERS, ids="-".join)
def test_tls_transport_closed_in_any_order_inside_callbacks(loop, tls_contexts, where, order):
    # Inside the callback, then again after connection_lost(): no crash, connection_lost() once.
    server_ctx, client_ctx = tls_contexts

    def act(transport):
        for name in order:
            if name == "write":
                transport.write(b"late")
            else:
                getattr(transport, name)()

    class Server(asyncio.Protocol):
        def __init__(self):
            self.lost = loop.create_future()
            self.lost_calls = 0

        def connection_made(self, transport):
            self.transport = transport
            if where == "connection_made":
                act(transport)

        def data_received(self, data):
            if where == "data_received":
                act(self.transport)

        def eof_received(self):
            if where == "eof_received":
                act(self.transport)

        def connection_lost(self, exc):
            self.lost_calls += 1
            self.lost.set_result(exc)

    async def main():
        proto = Server()
        server = await loop.create_server(lambda: proto, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            _, writer = await asyncio.open_connection(*server.sockets[0].getsockname(), ssl=client_ctx)
            writer.write(b"hello")
            if where == "eof_received":
                writer.close()      # close_notify
            await proto.lost
            act(proto.transport)
            for method in ("get_write_buffer_size", "is_closing", "is_reading", "get_protocol"):
                getattr(proto.transport, method)()
            proto.transport.get_extra_info("peername")
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
            await asyncio.sleep(0.01)
            return proto.lost_calls

    assert run(loop, main()) == 1


def test_accept_pauses_on_emfile(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class NoFds(socket.socket):
        def accept(self):
            raise OSError(errno.EMFILE, "Too many open files")

    async def main():
        listener = NoFds(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        server = await loop.create_server(asyncio.Protocol, sock=listener)
        with socket.create_connection(listener.getsockname()):
            await asyncio.sleep(0.1)
        server.close()
        await server.wait_closed()
    run(loop, main())
    # One report, not one per loop iteration: the listener is not watched for a while.
    assert [c["message"] for c in contexts] == ["socket.accept() out of system resource"]


def test_sock_methods_refuse_blocking_sockets_in_debug_mode(loop):
    loop.set_debug(True)
    a, b = socket.socketpair()
    with a, b, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="non-blocking"):
            run(loop, loop.sock_recv(a, 1))
