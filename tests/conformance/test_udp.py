"""UDP and UNIX datagram endpoints: create_datagram_endpoint and the DatagramTransport (sendto, close,
abort, flow control, error_received), on 127.0.0.1 and UNIX sockets only."""
import asyncio
import os
import socket
import sys

import pytest

from .util import PY312, PY313, run, xfail_asyncio

# asyncio counts 8 bytes of header per queued datagram from 3.13 on.
HEADER = 8 if PY313 else 0


class Datagrams(asyncio.DatagramProtocol):
    """Records datagrams, errors and the connection's life, with futures to wait on."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.received = []
        self.errors = []
        self.events = []
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self._waiters = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        self.received.append((data, addr))
        self._wake()

    def error_received(self, exc):
        self.errors.append(exc)
        self._wake()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def _wake(self):
        for n, fut in list(self._waiters):
            if len(self.received) + len(self.errors) >= n and not fut.done():
                fut.set_result(None)
                self._waiters.remove((n, fut))

    def wait(self, n):
        """A future done once ``n`` datagrams and errors in all have arrived."""
        fut = self.loop.create_future()
        self._waiters.append((n, fut))
        self._wake()
        return fut


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def closed_udp_port():
    """A 127.0.0.1 UDP port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()


async def close_and_wait(*transports):
    for tr in transports:
        tr.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_echo(loop):
    async def main():
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        client, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=addr)
        payloads = [b"one", b"two" * 1000, bytearray(b"three"), memoryview(b"four"), b"x" * 60000]
        for p in payloads:
            client.sendto(p)
        await proto.wait(len(payloads))
        await close_and_wait(client, server)
        assert await proto.lost is None
        return proto

    proto = run(loop, main())
    assert [bytes(p) for p, _ in proto.received] == [b"one", b"two" * 1000, b"three", b"four", b"x" * 60000]
    assert {a for _, a in proto.received} == {proto.transport.get_extra_info("peername")}
    assert proto.events == ["made", "lost"]


def test_transport_type_and_extra_info(loop, request):
    xfail_asyncio(request, not PY312, "its datagram transport is an asyncio.DatagramTransport from 3.12")

    async def main():
        server, sproto = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                             local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        client, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=addr)
        try:
            info = {
                "server_peer": server.get_extra_info("peername"),
                "client_peer": client.get_extra_info("peername"),
                "client_sock_name": client.get_extra_info("socket").getsockname(),
                "client_name": client.get_extra_info("sockname"),
                "sock_type": client.get_extra_info("socket").type,
                "missing": client.get_extra_info("nothing", 42),
                "is_reading": client.is_reading(),
                "limits": client.get_write_buffer_limits(),
                "protocol_is": sproto is server.get_protocol(),
            }
            return addr, info, server
        finally:
            await close_and_wait(client, server)

    addr, info, server = run(loop, main())
    assert info["server_peer"] is None
    assert info["client_peer"] == addr
    assert info["client_sock_name"] == info["client_name"]
    assert info["sock_type"] == socket.SOCK_DGRAM
    assert info["missing"] == 42
    assert info["is_reading"] is True
    assert info["limits"] == (16 * 1024, 64 * 1024)
    assert info["protocol_is"]
    assert isinstance(server, asyncio.DatagramTransport)


def test_existing_sock(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        name = sock.getsockname()
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), sock=sock)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            peer.bind(("127.0.0.1", 0))
            peer.sendto(b"hello", sock.getsockname())
            await proto.wait(1)
            tr.sendto(b"back", peer.getsockname())
            peer.settimeout(5)
            back = peer.recvfrom(100)
        finally:
            peer.close()
            await close_and_wait(tr)
        return proto.received, back, name, sock

    received, back, name, sock = run(loop, main())
    assert received[0][0] == b"hello"
    assert back == (b"back", name)
    assert sock.fileno() == -1       # the transport closed it


def test_allow_broadcast_sets_so_broadcast(loop):
    async def main():
        on, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0),
                                                    allow_broadcast=True)
        off, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        try:
            return [tr.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
                    for tr in (on, off)]
        finally:
            await close_and_wait(on, off)

    assert run(loop, main()) == [1, 0]


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT on this platform")
def test_reuse_port(loop):
    async def main():
        a, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0),
                                                   reuse_port=True)
        addr = a.get_extra_info("sockname")
        # A second socket on the same port: only possible because both set SO_REUSEPORT.
        b, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=addr, reuse_port=True)
        try:
            return (a.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                    b.get_extra_info("sockname") == addr)
        finally:
            await close_and_wait(a, b)

    assert run(loop, main()) == (1, True)


def test_error_received_on_port_unreachable(loop):
    # ICMP port unreachable comes back on a connected socket as ECONNREFUSED; the transport goes on.
    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=closed_udp_port())
        try:
            tr.sendto(b"anyone?")
            await proto.wait(1)
            return list(proto.errors), tr.is_closing(), list(proto.events)
        finally:
            await close_and_wait(tr)

    errors, closing, events = run(loop, main())
    assert isinstance(errors[0], ConnectionRefusedError)
    assert not closing and events == ["made"]


def test_sendto_argument_errors(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=closed_udp_port())
        try:
            with pytest.raises(TypeError, match="bytes-like"):
                tr.sendto("text")
            with pytest.raises(ValueError, match="Invalid address"):
                tr.sendto(b"x", ("127.0.0.1", 1))
            tr.sendto(b"x", tr.get_extra_info("peername"))      # its own remote address is fine
        finally:
            await close_and_wait(tr)

    run(loop, main())


def test_sendto_without_address_on_unconnected_is_fatal(loop):
    # asyncio: socket.sendto(data, None) raises TypeError, which is fatal to the transport.
    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        tr.sendto(b"nowhere")
        exc = await proto.lost
        return errors, exc, tr.is_closing()

    errors, exc, closing = run(loop, main())
    assert isinstance(exc, TypeError) and closing
    assert errors and errors[0]["exception"] is exc


def test_empty_datagram(loop):
    # 3.13 sends a zero-length datagram; before, sendto(b"") did nothing.
    async def main():
        server, sproto = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                             local_addr=("127.0.0.1", 0))
        client, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                        remote_addr=server.get_extra_info("sockname"))
        client.sendto(b"")
        client.sendto(b"end")
        await sproto.wait(2 if PY313 else 1)
        await close_and_wait(client, server)
        return [d for d, _ in sproto.received]

    assert run(loop, main()) == ([b"", b"end"] if PY313 else [b"end"])


def test_close_semantics(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=closed_udp_port())
        await proto.made
        tr.close()
        tr.close()                          # twice is fine
        closing = tr.is_closing()
        tr.sendto(b"after close")           # dropped, no error
        exc = await proto.lost
        tr.sendto(b"after lost")            # still no error
        await asyncio.sleep(0)
        return closing, exc, proto.events, proto.errors, tr.get_extra_info("socket").fileno()

    closing, exc, events, errors, fileno = run(loop, main())
    assert closing and exc is None
    assert events == ["made", "lost"] and errors == []
    assert fileno == -1


def test_abort(loop):
    async def main():
        server, sproto = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                             local_addr=("127.0.0.1", 0))
        server.abort()
        server.abort()
        exc = await sproto.lost
        return exc, server.is_closing(), sproto.events

    assert run(loop, main()) == (None, True, ["made", "lost"])


def test_pause_and_resume_reading(loop, request):
    xfail_asyncio(request, sys.version_info < (3, 11), "its datagram transport has pause_reading() from "
                  "3.11 (before, NotImplementedError)")
    async def main():
        server, sproto = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                             local_addr=("127.0.0.1", 0))
        client, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                        remote_addr=server.get_extra_info("sockname"))
        await sproto.made
        server.pause_reading()
        paused = server.is_reading()
        client.sendto(b"held")
        for _ in range(5):
            await asyncio.sleep(0.01)
        while_paused = list(sproto.received)
        server.resume_reading()
        await sproto.wait(1)
        await close_and_wait(client, server)
        return paused, while_paused, [d for d, _ in sproto.received]

    assert run(loop, main()) == (False, [], [b"held"])


def test_fd_taken_by_transport(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        fd = tr.get_extra_info("socket").fileno()
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(fd, lambda: None)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_writer(fd, lambda: None)
        finally:
            await close_and_wait(tr)

    run(loop, main())


def test_datagram_received_exception_goes_to_handler(loop):
    class Failing(Datagrams):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise ZeroDivisionError("boom")

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server, sproto = await loop.create_datagram_endpoint(lambda: Failing(loop),
                                                             local_addr=("127.0.0.1", 0))
        client, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop),
                                                        remote_addr=server.get_extra_info("sockname"))
        client.sendto(b"boom")
        client.sendto(b"after")
        await sproto.wait(2)
        closing = server.is_closing()
        await close_and_wait(client, server)
        return errors, closing, [d for d, _ in sproto.received]

    errors, closing, received = run(loop, main())
    assert received == [b"boom", b"after"] and not closing
    assert len(errors) == 1 and isinstance(errors[0]["exception"], ZeroDivisionError)


# -- queued datagrams: a UNIX datagram socket blocks once its peer's queue is full (UDP on loopback
# drops instead), so these fill one whose peer does not read.

@pytest.fixture
def unix_dgram_pair(tmp_path):
    """(sender, receiver): bound UNIX datagram sockets, the sender connected to the receiver, whose
    receive queue is small."""
    rpath, spath = str(tmp_path / "r.sock"), str(tmp_path / "s.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(rpath)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.bind(spath)
    sender.connect(rpath)
    sender.setblocking(False)
    yield sender, receiver
    receiver.close()
    sender.close()


def drain(sock, limit=100000):
    """Read every datagram waiting on blocking-free ``sock``; their count."""
    sock.setblocking(False)
    n = 0
    for _ in range(limit):
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1
    return n


def test_write_buffer_size_and_flow_control(loop, request, unix_dgram_pair):
    xfail_asyncio(request, PY313, "3.13 adds 8 bytes per queued datagram but takes only its length "
                  "off once it is sent, so the size never gets back to 0")
    sender, receiver = unix_dgram_pair

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), sock=sender)
        await proto.made
        tr.set_write_buffer_limits(high=3000, low=1000)
        payload = b"d" * 500
        sent = 0
        # Until the socket would block: then sendto() queues.
        while tr.get_write_buffer_size() == 0 and sent < 100000:
            tr.sendto(payload)
            sent += 1
        queued = 1
        while "pause" not in proto.events and queued < 100:
            tr.sendto(payload)
            queued += 1
        size_at_pause = tr.get_write_buffer_size()
        received = 0
        for _ in range(500):
            received += drain(receiver)
            if tr.get_write_buffer_size() == 0 and received >= sent + queued:
                break
            await asyncio.sleep(0.01)
        final = tr.get_write_buffer_size()
        events = list(proto.events)
        await close_and_wait(tr)
        return queued, size_at_pause, final, events, received, sent

    queued, size_at_pause, final, events, received, sent = run(loop, main())
    assert queued == 3000 // (500 + HEADER) + 1         # the first above the high-water mark pauses
    assert size_at_pause == queued * (500 + HEADER)
    assert events == ["made", "pause", "resume"]
    assert received == sent + queued - 1        # the last of the sent ones was the first queued
    assert final == 0


def test_close_sends_queued_datagrams_first(loop, unix_dgram_pair):
    sender, receiver = unix_dgram_pair

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), sock=sender)
        await proto.made
        sent = 0
        while tr.get_write_buffer_size() == 0 and sent < 100000:
            tr.sendto(b"q" * 100)
            sent += 1
        tr.sendto(b"last")
        tr.close()
        closing_lost = proto.lost.done()
        received = []
        receiver.setblocking(False)
        for _ in range(500):
            try:
                while True:
                    received.append(receiver.recv(65536))
            except BlockingIOError:
                pass
            if proto.lost.done() and received and received[-1] == b"last":
                break
            await asyncio.sleep(0.01)
        return closing_lost, await proto.lost, len(received), received[-1], sent

    closing_lost, exc, n, last, sent = run(loop, main())
    assert not closing_lost and exc is None
    assert n == sent + 1 and last == b"last"


def test_abort_drops_queued_datagrams(loop, request, unix_dgram_pair):
    xfail_asyncio(request, sys.version_info >= (3, 11), "abort() clears the queue but not the size it "
                  "counted (3.11+: 3.10 sums the queue), so get_write_buffer_size() stays above 0")
    sender, receiver = unix_dgram_pair

    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), sock=sender)
        await proto.made
        sent = 0
        while tr.get_write_buffer_size() == 0 and sent < 100000:
            tr.sendto(b"q" * 100)
            sent += 1
        tr.abort()
        exc = await proto.lost
        return exc, tr.get_write_buffer_size(), drain(receiver), sent

    exc, size, received, sent = run(loop, main())
    assert exc is None and size == 0
    assert received == sent - 1                 # the one that would have blocked was queued, then dropped


def test_sendto_bad_address_on_unconnected_is_fatal(loop):
    # The socket module refuses a 4-tuple on an AF_INET socket: TypeError, fatal to the transport.
    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, proto = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", ("127.0.0.1", 9, 0, 0))
        exc = await proto.lost
        return errors, exc

    errors, exc = run(loop, main())
    assert isinstance(exc, TypeError) and errors[0]["exception"] is exc


def test_sendto_many_destinations(loop):
    # Unconnected: each datagram goes where its address says (levent caches the last sockaddr).
    async def main():
        a, pa = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        b, pb = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        s, _ = await loop.create_datagram_endpoint(lambda: Datagrams(loop), local_addr=("127.0.0.1", 0))
        addr_a, addr_b = a.get_extra_info("sockname"), b.get_extra_info("sockname")
        for i in range(10):
            s.sendto(b"%d" % i, addr_a if i % 3 else addr_b)
        s.sendto(b"by name", ("localhost", addr_a[1]))
        await pa.wait(7)
        await pb.wait(4)
        await close_and_wait(a, b, s)
        return [d for d, _ in pa.received], [d for d, _ in pb.received]

    got_a, got_b = run(loop, main())
    assert got_b == [b"0", b"3", b"6", b"9"]
    assert sorted(got_a) == sorted([b"1", b"2", b"4", b"5", b"7", b"8", b"by name"])
