"""A program that uses levent's public API with full type annotations.

tests/test_typing.py checks it with ``mypy --strict`` (against the stubs in src/levent) and runs it:
it must type-check and work. Everything stays on 127.0.0.1 and socketpairs; each loop is bounded by
a timer. Run it by hand with ``PYTHONPATH=src python tests/typing/api_usage.py``.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, List, Optional, Tuple

import levent
from levent import (EOL_LF, PERSIST, READ, WRITE, Buffer, BufferEvent, Call, Event, EventBase, Listener,
                    RateLimitGroup, Signal, Timer, TLSContext, TLSError, TLSSession)
from levent.loop import EventLoop, TimerHandle
from levent.proxy import Counters, Proxy

LIMIT = 5.0     # seconds: no loop below runs longer


def guard(base: EventBase) -> Call:
    """Stop ``base``'s loop after LIMIT seconds, whatever happens."""
    return base.call_later(LIMIT, base.loopbreak)


def raw_events() -> List[bytes]:
    """EventBase, Event, Timer, Call: read what a socketpair's other end sends."""
    got: List[bytes] = []
    a, b = socket.socketpair()
    a.setblocking(False)
    with EventBase(method=levent.supported_methods()[0]) as base:
        def on_readable(fd: int, what: int, sock: socket.socket) -> None:
            assert what & READ
            data = sock.recv(4096)
            got.append(data)
            if data == b"bye":
                reader.delete()
                stop.cancel()

        def send_now(data: bytes) -> None:
            b.send(data)

        reader = Event(base, a, READ | PERSIST, on_readable, a)
        reader.add()
        timer = Timer(base, send_now, b"hello")
        timer.add(0.01)
        later: Call = base.call_later(0.05, send_now, b"bye")
        stop = guard(base)
        assert not later.cancelled() and later.when > 0
        emptied: bool = base.loop()
        assert emptied and base.method in levent.supported_methods()
    a.close()
    b.close()
    return got


def buffers() -> Tuple[Optional[bytes], int]:
    """Buffer: add, readln, search, zero-copy views, reservations."""
    buf = Buffer(b"line one\nline two\n")
    first = buf.readln(EOL_LF)
    found = buf.search(b"two")
    with memoryview(buf) as view:
        assert bytes(view) == b"line two\n"
    space: levent.Reservation
    with buf.reserve(16) as space:
        memoryview(space)[:3] = b"abc"
        space.commit(3)
    assert buf.read() == b"line two\nabc"
    sizes: List[int] = []
    watcher: levent.BufferCallback = buf.add_callback(lambda b, added, deleted, orig_size: sizes.append(added))
    buf.add(b"xyz")
    watcher.remove()
    buf.add(b"more")
    assert sizes == [3], sizes
    return first, found


def bufferevents() -> bytes:
    """BufferEvent pair: write on one end, read on the other; rate limits in a group."""
    received = bytearray()
    with EventBase() as base:
        left, right = BufferEvent.pair(base)

        def on_read(bev: BufferEvent) -> None:
            received.extend(bev.read())
            base.loopexit()

        def on_event(bev: BufferEvent, what: int, error: Optional[OSError]) -> None:
            raise AssertionError(f"unexpected event {what:#x}: {error!r}")

        right.on_read = on_read
        right.on_event = on_event
        right.enable(READ)
        group = RateLimitGroup(base, read_rate=1 << 20, read_burst=1 << 20)
        group.add(right)
        left.write(b"through the pair")
        guard(base)
        base.dispatch()
        group.close()
        left.close()
        right.abort()
    return bytes(received)


def listener_round_trip() -> bytes:
    """Listener accepting BufferEvents; a client BufferEvent connects, sends, reads the echo."""
    reply = bytearray()
    with EventBase() as base:
        def on_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
            def echo(server_side: BufferEvent) -> None:
                server_side.write_buffer(server_side.input)

            bev.on_read = echo
            bev.enable(READ)

        def on_client_event(bev: BufferEvent, what: int, error: Optional[OSError]) -> None:
            if what & BufferEvent.CONNECTED:
                bev.write(b"ping")
            elif what & (BufferEvent.ERROR | BufferEvent.EOF):
                raise OSError(f"client: {error}")

        def on_client_read(bev: BufferEvent) -> None:
            reply.extend(bev.read())
            if len(reply) >= 4:
                bev.close()
                base.loopexit()

        listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
        client = BufferEvent(base, on_read=on_client_read, on_event=on_client_event)
        client.enable(READ | WRITE)
        client.connect(listener.address)
        guard(base)
        base.dispatch()
        listener.close()
    return bytes(reply)


def tls_client_hello() -> int:
    """TLSContext and TLSSession over memory: a client's first flight, without any network."""
    ctx = TLSContext()
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    session = TLSSession(ctx, server_hostname="localhost")
    done: bool = session.do_handshake()
    assert not done
    hello = session.read_out()
    session.close()
    try:
        TLSSession(ctx, server_side=True)
    except (TLSError, ValueError) as exc:   # a client context cannot serve
        assert str(exc)
    return len(hello)


def proxied() -> Tuple[bytes, Counters]:
    """levent.proxy.Proxy in front of an echo Listener, with a client on raw Events."""
    with EventBase() as base:
        def on_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
            def echo(server_side: BufferEvent) -> None:
                server_side.write_buffer(server_side.input)

            def on_event(server_side: BufferEvent, what: int, error: Optional[OSError]) -> None:
                server_side.close()     # EOF (the proxy forwards the client's) or an error

            bev.on_read = echo
            bev.on_event = on_event
            bev.enable(READ)

        upstream = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
        proxy = Proxy(base, ("127.0.0.1", 0), upstream.address, idle_timeout=LIMIT).start()
        client = socket.create_connection(proxy.address[:2])
        client.sendall(b"via the proxy")
        client.setblocking(False)
        reply = bytearray()

        def on_reply(fd: int, what: int) -> None:
            reply.extend(client.recv(4096))
            if reply.endswith(b"proxy"):
                reader.close()
                client.close()
                proxy.shutdown(1.0, on_finished=base.loopexit)

        reader = Event(base, client, READ | PERSIST, on_reply)
        reader.add()
        guard(base)
        base.dispatch()
        assert proxy.connections == 0, "the proxy finished before its drain deadline"
        upstream.close()
        return bytes(reply), proxy.counters


async def asyncio_app() -> Tuple[bytes, float]:
    """levent's asyncio loop: a server and a client with streams, and a levent TimerHandle."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, EventLoop)
    fired = loop.create_future()
    handle: TimerHandle = loop.call_later(0.01, fired.set_result, None)
    when = handle.when()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"over asyncio\n")
    line = await asyncio.wait_for(reader.readline(), LIMIT)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    await asyncio.wait_for(fired, LIMIT)
    return line, when


def signal_event_type() -> int:
    """Signal is an Event; its signum is typed."""
    import signal as signals
    with EventBase() as base:
        sig = Signal(base, signals.SIGUSR1, lambda signum: None)
        return sig.signum


def main() -> None:
    assert raw_events() == [b"hello", b"bye"]
    assert buffers() == (b"line one", 5)
    assert bufferevents() == b"through the pair"
    assert listener_round_trip() == b"ping"
    assert tls_client_hello() > 0
    reply, counters = proxied()
    assert reply == b"via the proxy" and counters.accepted == 1, (reply, counters)
    line, when = levent.run(asyncio_app())
    assert line == b"over asyncio\n" and when > 0
    assert signal_event_type() > 0
    version: levent.LibeventVersion = levent.libevent_version()
    print(f"api_usage: ok (libevent {version.string}, levent {levent.__version__})")


if __name__ == "__main__":
    main()
