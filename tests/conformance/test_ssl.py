"""TLS wherever asyncio takes ``ssl=``: create_connection, create_server, the UNIX variants,
connect_accepted_socket and start_tls, with the stdlib ``ssl.SSLContext`` users pass.

Peers are a blocking Python ``ssl`` socket in a thread (a TLS stack that is not asyncio's) or the
same loop. Certificates come from tests/conftest.py's ``certs`` fixture (made at test time).
"""
import asyncio
import concurrent.futures
import hashlib
import os
import socket
import ssl
import sys
import tempfile
import threading

import pytest

from .util import Echo, Recorder, run, xfail_asyncio

PEER_TIMEOUT = 10.0     # seconds a thread peer's blocking calls may wait
PY311 = sys.version_info >= (3, 11)


@pytest.fixture
def server_ctx(certs):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


@pytest.fixture
def client_ctx(certs):
    return ssl.create_default_context(cafile=certs.ca)


@pytest.fixture
def path():
    d = tempfile.mkdtemp(prefix="lvs")     # short: AF_UNIX paths hold 107 bytes
    p = os.path.join(d, "tls.sock")
    try:
        yield p
    finally:
        if os.path.exists(p):
            os.unlink(p)
        os.rmdir(d)


def in_thread(fn, *args):
    """Run ``fn(*args)`` in a new daemon thread; an awaitable future of its result."""
    fut = concurrent.futures.Future()

    def target():
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=target, daemon=True, name="tls-peer").start()
    return asyncio.wrap_future(fut)


def listening_socket():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(PEER_TIMEOUT)
    return srv


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)}/{n} bytes")
        data += chunk
    return bytes(data)


def unwrap(tls):
    """Send close_notify and wait for the peer's: True if it came, False if the peer closed the
    socket instead (3.9/3.10's sslproto closes without answering)."""
    try:
        tls.unwrap()
        return True
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        return False


def payload(n):
    return hashlib.sha256(b"seed").digest() * (n // 32) + b"!" * (n % 32)


class TestEcho:
    def test_server_with_blocking_ssl_client(self, loop, server_ctx, client_ctx):
        data = payload(300_000)

        def client(port):
            with socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(data)
                    got = recv_exactly(tls, len(data))
                    unwrap(tls)
                    return got

        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                return await in_thread(client, server.sockets[0].getsockname()[1])

        assert run(loop, main()) == data

    def test_client_with_blocking_ssl_server(self, loop, server_ctx, client_ctx):
        data = payload(200_000)
        srv = listening_socket()

        def server():
            conn, _ = srv.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(PEER_TIMEOUT)
                tls.sendall(recv_exactly(tls, len(data)))
                return tls.recv(1)      # b"": the client's close_notify

        async def main():
            peer = in_thread(server)
            proto = Recorder(loop)
            tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname(), ssl=client_ctx,
                                                 server_hostname="localhost")
            tr.write(data)
            got = await proto.wait_data(len(data))
            tr.close()
            assert await proto.lost is None
            return got, await peer

        try:
            assert run(loop, main()) == (data, b"")
        finally:
            srv.close()

    def test_both_ends_on_the_loop_with_flow_control(self, loop, server_ctx, client_ctx):
        # 16 MiB in 64 KiB writes, more than loopback's socket buffers hold while the loop does not
        # run (the writes until a pause happen back to back): pause/resume_writing must work.
        chunks = [os.urandom(65536) for _ in range(256)]
        total = sum(map(len, chunks))

        class Sender(Recorder):
            def __init__(self, loop):
                super().__init__(loop)
                self.can_write = loop.create_future()
                self.can_write.set_result(None)

            def pause_writing(self):
                super().pause_writing()
                self.can_write = self.loop.create_future()

            def resume_writing(self):
                super().resume_writing()
                self.can_write.set_result(None)

        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                proto = Sender(loop)
                tr, _ = await loop.create_connection(lambda: proto, *server.sockets[0].getsockname(),
                                                     ssl=client_ctx, server_hostname="localhost")
                tr.set_write_buffer_limits(high=128 * 1024)
                for chunk in chunks:
                    await proto.can_write
                    tr.write(chunk)
                got = await proto.wait_data(total)
                tr.close()
                await proto.lost
                return got, proto.paused

        got, paused = run(loop, main(), timeout=60)
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(chunks)).digest()
        assert paused >= 1

    def test_streams(self, loop, server_ctx, client_ctx):
        async def handle(reader, writer):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                reader, writer = await asyncio.open_connection(
                    *server.sockets[0].getsockname(), ssl=client_ctx, server_hostname="localhost")
                lines = []
                for i in range(50):
                    writer.write(b"line %d\n" % i)
                    lines.append(await reader.readline())
                writer.close()
                await writer.wait_closed()
                return lines

        assert run(loop, main()) == [b"LINE %d\n" % i for i in range(50)]


class TestStartTLS:
    def test_client_side_upgrade(self, loop, server_ctx, client_ctx):
        srv = listening_socket()

        def server():
            conn, _ = srv.accept()
            conn.settimeout(PEER_TIMEOUT)
            assert recv_exactly(conn, 9) == b"STARTTLS\n"
            conn.sendall(b"GO\n")
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                line = recv_exactly(tls, 7)
                tls.sendall(line.upper())
                unwrap(tls)
                return line

        async def main():
            peer = in_thread(server)
            proto = Recorder(loop)
            tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname())
            tr.write(b"STARTTLS\n")
            assert await proto.wait_data(3) == b"GO\n"
            tls_tr = await loop.start_tls(tr, proto, client_ctx, server_hostname="localhost")
            assert tls_tr.get_extra_info("ssl_object") is not None
            proto.data.clear()
            tls_tr.write(b"secret\n")
            got = await proto.wait_data(7)
            assert await peer == b"secret\n"
            tls_tr.close()
            await proto.lost
            return got

        try:
            assert run(loop, main()) == b"SECRET\n"
        finally:
            srv.close()

    def test_server_side_upgrade(self, loop, server_ctx, client_ctx):
        class Upgrading(asyncio.Protocol):
            def __init__(self):
                self.upgraded = loop.create_future()

            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                if data == b"STARTTLS\n" and not self.upgraded.done():
                    self.transport.write(b"GO\n")
                    self.upgraded.set_result(loop.create_task(self.upgrade()))
                else:
                    self.transport.write(data.upper())

            async def upgrade(self):
                self.transport = await loop.start_tls(self.transport, self, server_ctx, server_side=True)
                return self.transport.get_extra_info("peercert")

        def client(port):
            with socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT) as raw:
                raw.sendall(b"STARTTLS\n")
                assert recv_exactly(raw, 3) == b"GO\n"
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"inside tls\n")
                    got = recv_exactly(tls, 11)
                    unwrap(tls)
                    return got

        async def main():
            proto = Upgrading()
            server = await loop.create_server(lambda: proto, "127.0.0.1", 0)
            async with server:
                got = await in_thread(client, server.sockets[0].getsockname()[1])
                task = await proto.upgraded
                assert await task is None      # the client sent no certificate
                proto.transport.close()
                return got

        assert run(loop, main()) == b"INSIDE TLS\n"

    def test_start_tls_needs_an_ssl_context(self, loop):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            async with server:
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, *server.sockets[0].getsockname())
                try:
                    with pytest.raises(TypeError):
                        await loop.start_tls(tr, proto, object())
                finally:
                    tr.close()
                    await proto.lost

        run(loop, main())


class TestHandshake:
    def test_client_handshake_timeout(self, loop, client_ctx):
        srv = listening_socket()
        accepted = []

        def silent_server():
            conn, _ = srv.accept()      # never answers the ClientHello
            accepted.append(conn)
            conn.settimeout(PEER_TIMEOUT)
            return conn.recv(65536) != b""

        async def main():
            peer = in_thread(silent_server)
            with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
                await loop.create_connection(asyncio.Protocol, *srv.getsockname(), ssl=client_ctx,
                                             server_hostname="localhost", ssl_handshake_timeout=0.3)
            return await peer

        try:
            assert run(loop, main()) is True    # it got the ClientHello
        finally:
            srv.close()
            for conn in accepted:
                conn.close()

    def test_server_handshake_timeout_closes_the_connection(self, loop, server_ctx):
        def silent_client(port):
            with socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT) as raw:
                return raw.recv(1)      # nothing sent: the server gives up and closes

        async def main():
            made = []
            server = await loop.create_server(lambda: made.append(1) or Echo(), "127.0.0.1", 0,
                                              ssl=server_ctx, ssl_handshake_timeout=0.3)
            async with server:
                got = await in_thread(silent_client, server.sockets[0].getsockname()[1])
                await asyncio.sleep(0)
            return got, made

        got, made = run(loop, main())
        assert got == b""
        assert len(made) == 1   # the protocol was made, but never connected

    def test_handshake_timeout_without_ssl_is_refused(self, loop):
        async def main():
            with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, ssl_handshake_timeout=1)
            with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
                await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1)

        run(loop, main())

    def test_ssl_shutdown_timeout_since_311(self, loop, server_ctx, client_ctx):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                addr = server.sockets[0].getsockname()
                if not PY311:
                    # 3.9/3.10's create_connection has no such parameter
                    with pytest.raises(TypeError):
                        await loop.create_connection(asyncio.Protocol, *addr, ssl=client_ctx,
                                                     server_hostname="localhost", ssl_shutdown_timeout=1)
                    return None
                with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"):
                    await loop.create_connection(asyncio.Protocol, *addr, ssl_shutdown_timeout=1)
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, *addr, ssl=client_ctx,
                                                     server_hostname="localhost", ssl_shutdown_timeout=1)
                tr.write(b"x")
                got = await proto.wait_data(1)
                tr.close()
                await proto.lost
                return got

        assert run(loop, main()) == (b"x" if PY311 else None)

    @pytest.mark.skipif(not PY311, reason="ssl_shutdown_timeout is new in 3.11")
    def test_shutdown_timeout_when_the_peer_never_answers(self, loop, server_ctx, client_ctx):
        # Our close_notify goes out, the peer reads it but never answers nor closes: after
        # ssl_shutdown_timeout the connection is dropped and the protocol hears of the timeout.
        srv = listening_socket()
        release = threading.Event()

        def server():
            conn, _ = srv.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(PEER_TIMEOUT)
                first = recv_exactly(tls, 5)
                notify = tls.recv(10)   # b"": the close_notify (OpenSSL does not answer it itself)
                release.wait(PEER_TIMEOUT)
                return first, notify

        async def main():
            peer = in_thread(server)
            proto = Recorder(loop)
            tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname(), ssl=client_ctx,
                                                 server_hostname="localhost", ssl_shutdown_timeout=0.3)
            tr.write(b"hello")
            started = loop.time()
            tr.close()
            exc = await proto.lost
            waited = loop.time() - started
            release.set()
            return exc, waited, await peer

        try:
            exc, waited, peer = run(loop, main())
        finally:
            release.set()
            srv.close()
        assert isinstance(exc, TimeoutError) and str(exc) == "SSL shutdown timed out"
        assert waited >= 0.25
        assert peer == (b"hello", b"")

    def test_untrusted_certificate(self, loop, certs, client_ctx):
        self_signed = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self_signed.load_cert_chain(certs.self_cert, certs.self_key)

        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=self_signed)
            async with server:
                with pytest.raises(ssl.SSLCertVerificationError) as info:
                    await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(),
                                                 ssl=client_ctx, server_hostname="localhost")
                return info.value.verify_message

        assert "self" in run(loop, main()).lower()     # "self-signed" / "self signed certificate"

    def test_wrong_hostname(self, loop, server_ctx, client_ctx):
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                with pytest.raises(ssl.SSLCertVerificationError) as info:
                    await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(),
                                                 ssl=client_ctx, server_hostname="wrong.invalid")
                return info.value.verify_message

        assert "mismatch" in run(loop, main()).lower()

    def test_server_hostname_needs_ssl(self, loop):
        async def main():
            with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, server_hostname="x")

        run(loop, main())


class TestClose:
    def test_clean_close_from_the_peer(self, loop, server_ctx):
        # The peer sends close_notify (unwrap) and then closes: the protocol gets eof_received()
        # and connection_lost(None).
        def client(port):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT) as raw:
                tls = ctx.wrap_socket(raw, server_hostname="localhost")
                tls.sendall(b"bye")
                assert recv_exactly(tls, 3) == b"bye"
                try:
                    plain = tls.unwrap()
                except (ssl.SSLEOFError, ConnectionResetError):
                    return False, b""   # 3.9/3.10: closed without answering close_notify
                return True, plain.recv(1)  # the server closes after its close_notify

        async def main():
            protos = []

            def factory():
                p = Recorder(loop)
                p.data_received = lambda data, p=p: (Recorder.data_received(p, data), p.transport.write(data))
                protos.append(p)
                return p

            server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                got = await in_thread(client, server.sockets[0].getsockname()[1])
                exc = await protos[0].lost
                return got, exc, protos[0].events

        (answered, got), exc, events = run(loop, main())
        assert got == b""
        assert exc is None
        if PY311:
            assert answered     # 3.11+ answers close_notify with its own
        # 3.9/3.10's sslproto does not pass the close_notify on as eof_received()
        assert events == (["made", "data", "eof", "lost"] if PY311 else ["made", "data", "lost"])

    def test_truncated_by_the_peer(self, loop, server_ctx):
        # The peer closes TCP without close_notify: reported as asyncio reports it.
        def client(port):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT) as raw:
                tls = ctx.wrap_socket(raw, server_hostname="localhost")
                tls.sendall(b"half")
                assert recv_exactly(tls, 4) == b"half"
                os.close(tls.detach())      # TCP closes without a close_notify
            return True

        async def main():
            protos = []

            def factory():
                p = Recorder(loop)
                p.data_received = lambda data, p=p: (Recorder.data_received(p, data), p.transport.write(data))
                protos.append(p)
                return p

            server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                await in_thread(client, server.sockets[0].getsockname()[1])
                exc = await protos[0].lost
                return exc, protos[0].events, bytes(protos[0].data)

        exc, events, data = run(loop, main())
        assert data == b"half"
        assert events[:2] == ["made", "data"]
        if PY311:
            # 3.11+'s sslproto treats a bare TCP EOF as the end of the stream
            assert exc is None
            assert events[2:] == ["eof", "lost"]
        else:
            assert events[-1] == "lost"

    @pytest.mark.skipif(sys.version_info < (3, 10), reason="the blocking peer's ssl module of 3.9 reads a "
                        "TCP EOF without close_notify as a clean end (b''), so it cannot tell the two apart")
    def test_close_sends_close_notify(self, loop, server_ctx, client_ctx):
        srv = listening_socket()

        def server():
            conn, _ = srv.accept()
            # suppress_ragged_eofs=False: a TCP EOF without close_notify raises SSLEOFError
            with server_ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
                tls.settimeout(PEER_TIMEOUT)
                first = recv_exactly(tls, 5)
                try:
                    rest = tls.recv(100)    # b"" only on a close_notify
                except ssl.SSLEOFError:
                    rest = "truncated"
                return first, rest

        async def main():
            peer = in_thread(server)
            proto = Recorder(loop)
            tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname(), ssl=client_ctx,
                                                 server_hostname="localhost")
            tr.write(b"hello")
            tr.close()
            assert tr.is_closing()
            await proto.lost
            return await peer

        try:
            assert run(loop, main()) == (b"hello", b"")
        finally:
            srv.close()

    @pytest.mark.skipif(sys.version_info < (3, 10), reason="the blocking peer's ssl module of 3.9 reads a "
                        "TCP EOF without close_notify as a clean end (b''), so it cannot tell the two apart")
    def test_abort_sends_no_close_notify(self, loop, server_ctx, client_ctx):
        srv = listening_socket()

        def server():
            conn, _ = srv.accept()
            with server_ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
                tls.settimeout(PEER_TIMEOUT)
                tls.sendall(b"ready")
                try:
                    return tls.recv(100)
                except (ssl.SSLEOFError, ConnectionResetError):
                    return "truncated"

        async def main():
            peer = in_thread(server)
            proto = Recorder(loop)
            tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname(), ssl=client_ctx,
                                                 server_hostname="localhost")
            await proto.wait_data(5)
            tr.abort()
            await proto.lost
            return await peer

        try:
            assert run(loop, main()) == "truncated"
        finally:
            srv.close()


class TestExtraInfo:
    def test_keys(self, loop, server_ctx, client_ctx):
        async def main():
            server_side = []

            def factory():
                p = Echo()
                server_side.append(p)
                return p

            server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, *server.sockets[0].getsockname(),
                                                     ssl=client_ctx, server_hostname="localhost")
                tr.write(b"x")
                await proto.wait_data(1)
                info = {key: tr.get_extra_info(key) for key in
                        ("sslcontext", "ssl_object", "cipher", "peercert", "compression", "socket",
                         "peername", "sockname")}
                srv_tr = server_side[0].transport
                srv_info = {key: srv_tr.get_extra_info(key) for key in ("sslcontext", "peercert")}
                missing = tr.get_extra_info("no such key", "default")
                tr.close()
                await proto.lost
                return info, srv_info, missing, server.sockets[0].getsockname()

        info, srv_info, missing, addr = run(loop, main())
        assert info["sslcontext"] is client_ctx
        assert isinstance(info["ssl_object"], ssl.SSLObject)
        assert info["ssl_object"].server_hostname == "localhost"
        name, version, bits = info["cipher"]
        assert version.startswith("TLS") and bits >= 128
        assert dict(x[0] for x in info["peercert"]["subject"])["commonName"] == "localhost"
        assert info["compression"] is None
        assert info["socket"].family == socket.AF_INET
        assert info["peername"] == addr
        assert info["sockname"][0] == "127.0.0.1"
        assert srv_info["sslcontext"] is server_ctx
        assert srv_info["peercert"] is None
        assert missing == "default"


class TestUnixAndAccepted:
    def test_unix_server_and_connection(self, loop, path, server_ctx, client_ctx):
        async def main():
            server = await loop.create_unix_server(Echo, path, ssl=server_ctx)
            async with server:
                proto = Recorder(loop)
                tr, _ = await loop.create_unix_connection(lambda: proto, path, ssl=client_ctx,
                                                          server_hostname="localhost")
                tr.write(b"over unix and tls")
                got = await proto.wait_data(17)
                ssl_object = tr.get_extra_info("ssl_object")
                tr.close()
                await proto.lost
                return got, ssl_object is not None

        assert run(loop, main()) == (b"over unix and tls", True)

    def test_unix_connection_needs_server_hostname(self, loop, path, server_ctx, client_ctx):
        async def main():
            server = await loop.create_unix_server(Echo, path, ssl=server_ctx)
            async with server:
                with pytest.raises(ValueError, match="server_hostname"):
                    await loop.create_unix_connection(asyncio.Protocol, path, ssl=client_ctx)

        run(loop, main())

    def test_connect_accepted_socket(self, loop, server_ctx, client_ctx):
        srv = listening_socket()

        def client():
            with socket.create_connection(srv.getsockname(), timeout=PEER_TIMEOUT) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"accepted")
                    got = recv_exactly(tls, 8)
                    unwrap(tls)
                    return got

        async def main():
            peer = in_thread(client)
            conn, _ = await loop.run_in_executor(None, srv.accept)
            conn.setblocking(False)
            tr, proto = await loop.connect_accepted_socket(Echo, conn, ssl=server_ctx)
            assert tr.get_extra_info("sslcontext") is server_ctx
            got = await peer
            tr.close()
            return got

        try:
            assert run(loop, main()) == b"accepted"
        finally:
            srv.close()


async def tls_pair(loop, server_ctx, client_ctx, server_protocol, client_protocol):
    """A TLS connection on ``loop`` between two protocol instances; returns (server, both
    transports). Close the server (async with) and the transports after use."""
    made = loop.create_future()

    def factory():
        made.set_result(None)
        return server_protocol

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
    tr, _ = await loop.create_connection(lambda: client_protocol, *server.sockets[0].getsockname(),
                                         ssl=client_ctx, server_hostname="localhost")
    await made
    while server_protocol.transport is None:
        await asyncio.sleep(0.01)
    return server, server_protocol.transport, tr


class TestTransportAPI:
    def test_flow_control_across_the_connection(self, loop, server_ctx, client_ctx):
        # The server stops reading: its socket stops being read once its TLS layer holds enough, so
        # the client's writes pile up and pause it; resuming delivers everything, in order.
        data = os.urandom(32 * 1024 * 1024)    # more than loopback's socket buffers hold

        async def main():
            srv_proto, cli_proto = Recorder(loop), Recorder(loop)
            server, srv_tr, cli_tr = await tls_pair(loop, server_ctx, client_ctx, srv_proto, cli_proto)
            async with server:
                srv_tr.pause_reading()
                assert not srv_tr.is_reading()
                for i in range(0, len(data), 65536):   # past the socket's buffer, then the TLS layer's
                    cli_tr.write(data[i:i + 65536])
                for _ in range(200):
                    if cli_proto.paused:
                        break
                    await asyncio.sleep(0.01)
                stalled = len(srv_proto.data)
                pending = cli_tr.get_write_buffer_size()
                srv_tr.resume_reading()
                assert srv_tr.is_reading()
                got = await srv_proto.wait_data(len(data))
                await asyncio.sleep(0.05)
                result = cli_proto.paused, cli_proto.resumed, stalled, pending, got
                cli_tr.close()
                await cli_proto.lost
                await srv_proto.lost
                return result

        paused, resumed, stalled, pending, got = run(loop, main(), timeout=60)
        assert paused == 1 and resumed == 1
        assert stalled < len(data) and pending > 0
        assert got == data

    def test_buffered_protocol_with_a_small_buffer(self, request, loop, server_ctx, client_ctx):
        xfail_asyncio(request, PY311, "3.11+'s sslproto reads into buf[offset:] after the first record, "
                      "a copy when get_buffer() returns a bytearray: those bytes never reach the protocol",
                      strict=False)
        data = os.urandom(300_000)

        class Small(asyncio.BufferedProtocol):
            def __init__(self):
                self.transport = None
                self.buf = bytearray(1000)
                self.data = bytearray()
                self.done = loop.create_future()
                self.eof = False

            def connection_made(self, transport):
                self.transport = transport

            def get_buffer(self, sizehint):
                return self.buf

            def buffer_updated(self, nbytes):
                assert 0 < nbytes <= len(self.buf)
                self.data += self.buf[:nbytes]
                if len(self.data) == len(data):
                    self.done.set_result(bytes(self.data))

            def eof_received(self):
                self.eof = True

            def connection_lost(self, exc):
                pass

        async def main():
            proto = Small()
            cli_proto = Recorder(loop)
            server, srv_tr, cli_tr = await tls_pair(loop, server_ctx, client_ctx, proto, cli_proto)
            async with server:
                cli_tr.writelines([data[:100_000], memoryview(data)[100_000:200_000], bytearray(data[200_000:])])
                got = await proto.done
                cli_tr.close()
                await cli_proto.lost
                for _ in range(100):
                    if proto.eof:
                        break
                    await asyncio.sleep(0.01)
                return got, proto.eof

        got, eof = run(loop, main())
        assert got == data
        assert eof is PY311     # the client's close_notify; 3.9/3.10 do not call eof_received()

    def test_write_eof_and_buffer_limits(self, loop, server_ctx, client_ctx):
        async def main():
            srv_proto, cli_proto = Echo(), Recorder(loop)
            srv_proto.transport = None
            server, srv_tr, tr = await tls_pair(loop, server_ctx, client_ctx, srv_proto, cli_proto)
            async with server:
                result = {"can_write_eof": tr.can_write_eof()}
                with pytest.raises(NotImplementedError):
                    tr.write_eof()
                result["default_limits"] = tr.get_write_buffer_limits()
                tr.set_write_buffer_limits(high=1000)
                result["limits"] = tr.get_write_buffer_limits()
                with pytest.raises(ValueError):
                    tr.set_write_buffer_limits(high=1, low=2)
                with pytest.raises(TypeError):
                    tr.write("text")
                tr.write(b"")
                result["size_empty"] = tr.get_write_buffer_size()
                if hasattr(tr, "get_read_buffer_limits"):
                    tr.set_read_buffer_limits(high=2000)
                    result["read_limits"] = tr.get_read_buffer_limits()
                tr.write(b"ok")
                result["echo"] = await cli_proto.wait_data(2)
                result["protocol"] = tr.get_protocol() is cli_proto
                tr.close()
                result["closing"] = tr.is_closing()
                tr.write(b"after close")    # dropped, as on any closed transport
                await cli_proto.lost
                return result

        result = run(loop, main())
        assert result["can_write_eof"] is False
        # the defaults of the running version's asyncio
        assert result["default_limits"] == ((128 * 1024, 512 * 1024) if PY311 else (16 * 1024, 64 * 1024))
        assert result["limits"] == (250, 1000)
        assert result["size_empty"] == 0
        if "read_limits" in result:
            assert result["read_limits"] == (500, 2000)
        assert result["echo"] == b"ok" and result["protocol"] and result["closing"]

    def test_set_protocol_mid_stream(self, loop, server_ctx, client_ctx):
        async def main():
            srv_proto, first, second = Echo(), Recorder(loop), Recorder(loop)
            server, _, tr = await tls_pair(loop, server_ctx, client_ctx, srv_proto, first)
            async with server:
                tr.write(b"one")
                await first.wait_data(3)
                tr.set_protocol(second)
                assert tr.get_protocol() is second
                tr.write(b"two")
                got = await second.wait_data(3)
                tr.close()
                exc = await second.lost
                return bytes(first.data), got, exc, first.lost.done()

        assert run(loop, main()) == (b"one", b"two", None, False)

    def test_exception_in_data_received_reaches_the_handler(self, loop, server_ctx, client_ctx):
        class Failing(Recorder):
            def data_received(self, data):
                raise ZeroDivisionError("from data_received")

        async def main():
            contexts = []
            loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
            srv_proto, cli_proto = Failing(loop), Recorder(loop)
            server, _, tr = await tls_pair(loop, server_ctx, client_ctx, srv_proto, cli_proto)
            async with server:
                tr.write(b"boom")
                srv_exc = await srv_proto.lost
                await cli_proto.lost
                tr.close()
                return contexts, srv_exc

        contexts, srv_exc = run(loop, main())
        assert [c["message"] for c in contexts] == [
            "Fatal error on SSL protocol" if PY311 else "application protocol failed to receive SSL data"]
        assert isinstance(contexts[0]["exception"], ZeroDivisionError)
        assert isinstance(srv_exc, ZeroDivisionError)

    def test_cancelled_during_the_handshake(self, loop, client_ctx):
        srv = listening_socket()
        accepted = []

        def silent_server():
            conn, _ = srv.accept()
            accepted.append(conn)
            conn.settimeout(PEER_TIMEOUT)
            return conn.recv(65536) != b"" and conn.recv(1) == b""     # ClientHello, then EOF

        async def main():
            peer = in_thread(silent_server)
            task = loop.create_task(loop.create_connection(
                asyncio.Protocol, *srv.getsockname(), ssl=client_ctx, server_hostname="localhost"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await peer

        try:
            assert run(loop, main()) is True
        finally:
            srv.close()
            for conn in accepted:
                conn.close()

    def test_default_context_for_ssl_true(self, loop, server_ctx):
        # ssl=True: a default context, which does not trust the test CA.
        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(),
                                                 ssl=True, server_hostname="localhost")

        run(loop, main())


class TestThreadsAndLifetime:
    def test_loops_in_two_threads_at_once(self, new_loop, server_ctx, client_ctx):
        # Each loop in its own thread echoes 2 MiB over TLS; SSLObject releases the GIL while it
        # decrypts, so any buffer shared between connections would mix their bytes.
        data = [os.urandom(2 * 1024 * 1024), os.urandom(2 * 1024 * 1024)]

        async def echo_over_tls(loop, payload):
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
            async with server:
                proto = Recorder(loop)
                tr, _ = await loop.create_connection(lambda: proto, *server.sockets[0].getsockname(),
                                                     ssl=client_ctx, server_hostname="localhost")
                for i in range(0, len(payload), 65536):
                    tr.write(payload[i:i + 65536])
                got = await proto.wait_data(len(payload))
                tr.close()
                await proto.lost
                return hashlib.sha256(got).digest()

        loops = [new_loop(), new_loop()]
        results = [None, None]

        def worker(i):
            results[i] = run(loops[i], echo_over_tls(loops[i], data[i]), timeout=60)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert results == [hashlib.sha256(d).digest() for d in data]

    def test_sendfile_over_tls(self, loop, server_ctx, client_ctx, tmp_path):
        # loop.sendfile() on a TLS transport: asyncio's fallback (read + write with flow control).
        data = os.urandom(3 * 1024 * 1024 + 17)
        path = tmp_path / "blob"
        path.write_bytes(data)

        async def main():
            srv_proto, cli_proto = Recorder(loop), Recorder(loop)
            server, _, tr = await tls_pair(loop, server_ctx, client_ctx, srv_proto, cli_proto)
            async with server:
                with open(path, "rb") as f:
                    sent = await loop.sendfile(tr, f)
                got = await srv_proto.wait_data(len(data))
                tr.write(b"after")      # the transport is the protocol's again
                more = await srv_proto.wait_data(len(data) + 5)
                tr.close()
                await cli_proto.lost
                return sent, hashlib.sha256(got).digest(), more[-5:], tr.get_protocol()

        sent, digest, tail, protocol = run(loop, main(), timeout=60)
        assert sent == len(data)
        assert digest == hashlib.sha256(data).digest()
        assert tail == b"after"
