"""The Python echo servers of the benchmark, one per contender.

    python -m levent.bench.servers LOOP-{protocol,streams} --port PORT     # LOOP: asyncio, uvloop, ...
    python -m levent.bench.servers selectors --port PORT

Each listens on 127.0.0.1:PORT, prints "ready" on stdout once listening, echoes every byte back,
and exits with status 0 on SIGTERM or SIGINT. They are the shortest idiomatic echo each style has:

  protocol   data_received() hands the bytes straight to transport.write()
  streams    one coroutine per connection: reader.read() -> writer.write() -> await writer.drain(),
             as uvloop's own benchmark server does
  selectors  a pure-Python loop: selectors.DefaultSelector, non-blocking recv()/send(), the unsent
             rest kept and written when the socket is writable again
"""
import argparse
import asyncio
import selectors
import signal
import socket
import sys

from . import registry

READ_SIZE = 256 * 1024  # what asyncio's transports read per recv(); every server here uses it


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_streams(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_asyncio(style, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if style == "protocol":
        server = await loop.create_server(EchoProtocol, "127.0.0.1", port, backlog=1024, reuse_address=True)
    else:
        server = await asyncio.start_server(echo_streams, "127.0.0.1", port, backlog=1024, reuse_address=True)
    print("ready", flush=True)
    try:
        await stop
    finally:
        server.close()


class _Stop(Exception):
    pass


def _stop_selectors(_signum, _frame):
    raise _Stop  # out of select(), which PEP 475 would otherwise retry


def serve_selectors(port):
    """Echo on a pure-Python selectors loop."""
    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    signal.signal(signal.SIGTERM, _stop_selectors)
    signal.signal(signal.SIGINT, _stop_selectors)
    pending = {}  # sock -> bytes not yet sent

    def close(sock):
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    def on_accept(_sock, _mask):
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(conn, selectors.EVENT_READ, on_conn)

    def on_conn(sock, mask):
        try:
            if mask & selectors.EVENT_WRITE:
                rest = pending[sock]
                sent = sock.send(rest)
                if sent < len(rest):
                    pending[sock] = rest[sent:]
                    return
                del pending[sock]
                sel.modify(sock, selectors.EVENT_READ, on_conn)
            if mask & selectors.EVENT_READ:
                data = sock.recv(READ_SIZE)
                if not data:
                    close(sock)
                    return
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    pending[sock] = data[sent:]
                    sel.modify(sock, selectors.EVENT_WRITE, on_conn)  # no reading until it is out
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            close(sock)

    sel.register(listener, selectors.EVENT_READ, on_accept)
    print("ready", flush=True)
    try:
        while True:
            for key, mask in sel.select():
                key.data(key.fileobj, mask)
    except _Stop:
        pass
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()


SERVERS = ["selectors"] + [f"{name}-{style}" for name, loop in registry.LOOPS.items() if loop.asyncio
                           for style in ("protocol", "streams")]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m levent.bench.servers", description=__doc__.split("\n\n")[0])
    ap.add_argument("server", choices=SERVERS)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    if args.server == "selectors":
        serve_selectors(args.port)
        return 0
    loop_name, _, style = args.server.rpartition("-")
    loop = registry.new_loop(loop_name)
    try:
        loop.run_until_complete(serve_asyncio(style, args.port))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
