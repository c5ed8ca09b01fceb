"""Runnable examples of levent's raw API: ``python -m levent hello`` and ``python -m levent echo``.

hello is libevent's hello-world sample (sample/hello-world.c): listen on a port, write
"Hello, World!" to each connection, close it once flushed, exit cleanly on SIGINT.
echo is an echo server on a Listener whose connections arrive as BufferEvents made in C: each read
moves the input's chains to the output (no copy), as libevent's own bufferevent echo does.
"""
import signal

from levent import READ, EventBase, Listener, Signal

MESSAGE = b"Hello, World!\n"


def hello(host="127.0.0.1", port=9995, *, ready=None):
    """libevent's hello-world: greet each connection, then close it once the greeting is flushed."""
    with EventBase() as base:

        def on_accept(listener, bev, address):
            bev.write(MESSAGE)
            bev.close()         # graceful: freed once MESSAGE is flushed

        def on_signal(signum):
            print("Caught an interrupt signal; exiting cleanly.", flush=True)
            base.loopexit()

        listener = Listener(base, on_accept, (host, port), accept="bufferevent")
        Signal(base, signal.SIGINT, on_signal).add()
        _announce(listener, ready)
        base.dispatch()


def echo(host="127.0.0.1", port=9996, *, ready=None):
    """An echo server: every byte read from a connection is written back to it."""
    with EventBase() as base:

        def on_read(bev):
            bev.write_buffer(bev.input)     # moves the input's chains to the output

        def on_event(bev, what, error):
            bev.close()                     # EOF or error: flush what is left, then free

        def on_accept(listener, bev, address):
            bev.on_read = on_read
            bev.on_event = on_event
            bev.enable(READ)

        def on_signal(signum):
            base.loopexit()

        listener = Listener(base, on_accept, (host, port), accept="bufferevent", backlog=1024)
        for signum in (signal.SIGINT, signal.SIGTERM):
            Signal(base, signum, on_signal).add()
        _announce(listener, ready)
        base.dispatch()


def _announce(listener, ready):
    host, port = listener.address[:2]
    print(f"ready: listening on {host}:{port}", flush=True)
    if ready is not None:
        ready(listener.address)


__all__ = ["hello", "echo"]
