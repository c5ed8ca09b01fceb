"""Runnable examples of levent's raw API: ``python -m levent hello`` and ``python -m levent echo``.

hello is libevent's hello-world sample (sample/hello-world.c): listen on a port, write
"Hello, World!" to each connection, close it once flushed, exit cleanly on SIGINT.
echo is an echo server. Its default mode is the fastest the raw API allows: a persistent READ Event
per connection whose callback levent.recv_into()s one reused buffer and levent.send()s it back, as a
C server using libevent only as the poller does; libevent 2.1's bufferevents read at most 4 KiB per call,
which makes them several times dearer for large messages. ``mode="bufferevent"`` is libevent's
classic bufferevent echo: the input's chains are moved to the output without a copy.
"""
from __future__ import annotations

import signal
import socket
from typing import Any, Callable, Optional

from levent import (PERSIST, READ, WRITE, BufferEvent, Event, EventBase, Listener, Signal, recv_into,
                    send)

# Called with the listening address once the server accepts connections (tests wait on it).
Ready = Optional[Callable[[Any], object]]

MESSAGE = b"Hello, World!\n"


def hello(host: str = "127.0.0.1", port: int = 9995, *, ready: Ready = None) -> None:
    """libevent's hello-world: greet each connection, then close it once the greeting is flushed."""
    with EventBase() as base:

        def on_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
            bev.write(MESSAGE)
            bev.close()         # graceful: freed once MESSAGE is flushed

        def on_signal(signum: int) -> None:
            print("Caught an interrupt signal; exiting cleanly.", flush=True)
            base.loopexit()

        listener = Listener(base, on_accept, (host, port), accept="bufferevent")
        Signal(base, signal.SIGINT, on_signal).add()
        _announce(listener, ready)
        base.dispatch()


def echo(host: str = "127.0.0.1", port: int = 9996, *, mode: str = "events", ready: Ready = None) -> None:
    """An echo server: every byte read from a connection is written back to it."""
    if mode not in ("events", "bufferevent"):
        raise ValueError(f"mode must be 'events' or 'bufferevent', not {mode!r}")
    with EventBase() as base:
        on_accept: Callable[[Listener, Any, Any], None]
        if mode == "events":
            on_accept, accept = _EventEcho(base).accept, "socket"
        else:
            on_accept, accept = _bufferevent_echo_accept, "bufferevent"

        def on_signal(signum: int) -> None:
            base.loopexit()

        listener = Listener(base, on_accept, (host, port), accept=accept, backlog=1024)
        for signum in (signal.SIGINT, signal.SIGTERM):
            Signal(base, signum, on_signal).add()
        _announce(listener, ready)
        base.dispatch()


class _EventEcho:
    """Echo with a READ|PERSIST Event per connection and one receive buffer shared by all of them.

    The per-connection callbacks are closures over bound methods: the hot path does no attribute
    lookups."""

    def __init__(self, base: EventBase, size: int = 256 * 1024) -> None:
        self.base = base
        self.buffer = bytearray(size)

    def accept(self, listener: Listener, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = self.buffer
        pending = b""

        def readable(fd: int, what: int) -> None:
            nonlocal pending
            try:
                n = recv_into(fd, buffer)
                if not n:
                    close()
                    return
                sent = send(fd, buffer, 0, n)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                close()
                return
            if sent < n:
                # The peer reads slowly: stop reading until the rest is out, so nothing piles up.
                pending = bytes(buffer[sent:n])
                reader.delete()
                writer.add()

        def writable(fd: int, what: int) -> None:
            nonlocal pending
            try:
                pending = pending[send(fd, pending):]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                close()
                return
            if not pending:
                writer.delete()
                reader.add()

        def close() -> None:
            reader.close()
            writer.close()
            sock.close()

        reader = Event(self.base, sock, READ | PERSIST, readable)
        writer = Event(self.base, sock, WRITE | PERSIST, writable)
        reader.add()


def _bufferevent_echo_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
    bev.on_read = _bufferevent_echo_read
    bev.on_event = _bufferevent_echo_event
    bev.enable(READ)


def _bufferevent_echo_read(bev: BufferEvent) -> None:
    bev.write_buffer(bev.input)     # moves the input's chains to the output


def _bufferevent_echo_event(bev: BufferEvent, what: int, error: Optional[OSError]) -> None:
    bev.close()                     # EOF or error: flush what is left, then free


def _announce(listener: Listener, ready: Ready) -> None:
    host, port = listener.address[:2]
    print(f"ready: listening on {host}:{port}", flush=True)
    if ready is not None:
        ready(listener.address)


__all__ = ["hello", "echo"]
