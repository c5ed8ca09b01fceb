"""The Python echo servers of the benchmark, one per contender.

    python -m levent.bench.servers LOOP-{protocol,streams} --port PORT     # LOOP: asyncio, uvloop, ...
    python -m levent.bench.servers selectors --port PORT
    python -m levent.bench.servers LOOP-tls --port PORT --cert CERT --key KEY
    python -m levent.bench.servers LOOP-proxy --port PORT --upstream UPSTREAM_PORT
    python -m levent.bench.servers LOOP-proxy-tls --port PORT --upstream UPSTREAM_PORT --cafile CA
    python -m levent.bench.servers tls-echo --port PORT --cert CERT --key KEY

Each listens on 127.0.0.1:PORT, prints "ready" on stdout once listening, echoes every byte back,
and exits with status 0 on SIGTERM or SIGINT. They are the shortest idiomatic echo each style has:

  protocol   data_received() hands the bytes straight to transport.write()
  streams    one coroutine per connection: reader.read() -> writer.write() -> await writer.drain(),
             as uvloop's own benchmark server does
  tls        the protocol server with ssl= (an ssl.SSLContext with CERT and KEY): the loop's TLS layer
  selectors  a pure-Python loop: selectors.DefaultSelector, non-blocking recv()/send(), the unsent
             rest kept and written when the socket is writable again
  proxy      a TCP proxy to 127.0.0.1:UPSTREAM_PORT with the behaviour of levent's: Protocols moving
             bytes both ways, reading paused while the other side's write buffer is above 512 KiB
             (asyncio's flow control), EOF passed on as write_eof(), both closed once both ended;
             proxy-tls speaks TLS to the upstream (verified against CA, name 127.0.0.1)
  tls-echo   an echo server on levent's TLSSessions, the upstream of the TLS proxies
"""
import argparse
import asyncio
import selectors
import signal
import socket
import ssl
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


PROXY_HIGH_WATER = 512 * 1024  # as levent.proxy's default


class ProxySide(asyncio.Protocol):
    """One side of a proxied connection: what it reads goes to its peer's transport."""

    def __init__(self):
        self.transport = None
        self.peer = None
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=PROXY_HIGH_WATER)

    def data_received(self, data):
        self.peer.transport.write(data)

    def eof_received(self):
        self.eof = True
        if self.peer.eof:
            self.transport.close()
            self.peer.transport.close()
            return False
        self.peer.transport.write_eof()
        return True  # keep our write side open for the peer's remaining bytes

    def pause_writing(self):  # our output is behind: stop reading the peer
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class ProxyClient(ProxySide):
    """The accepted side: reading pauses until the upstream connection is made (uvloop may still
    deliver what arrived with the connection: that is kept and sent once connected)."""

    def __init__(self, upstream_port, upstream_tls=None):
        super().__init__()
        self.upstream_port = upstream_port
        self.upstream_tls = upstream_tls
        self.early = []

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self.connect())

    def data_received(self, data):
        if self.peer is None:
            self.early.append(data)
        else:
            super().data_received(data)

    def eof_received(self):
        if self.peer is None:
            self.early.append(None)
            return True
        return super().eof_received()

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                ProxySide, "127.0.0.1", self.upstream_port, ssl=self.upstream_tls,
                server_hostname="127.0.0.1" if self.upstream_tls else None)
        except OSError as exc:
            print(f"cannot reach upstream: {exc}", file=sys.stderr)
            self.transport.close()
            return
        if self.transport.is_closing():
            upstream.transport.close()
            return
        self.peer, upstream.peer = upstream, self
        for data in self.early:
            if data is None:
                super().eof_received()
            else:
                upstream.transport.write(data)
        self.early.clear()
        self.transport.resume_reading()


async def serve_asyncio(style, port, upstream_port=None, cafile=None, cert=None, key=None):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if style == "protocol":
        server = await loop.create_server(EchoProtocol, "127.0.0.1", port, backlog=1024, reuse_address=True)
    elif style == "tls":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        server = await loop.create_server(EchoProtocol, "127.0.0.1", port, backlog=1024, reuse_address=True,
                                          ssl=tls)
    elif style in ("proxy", "proxy-tls"):
        tls = ssl.create_default_context(cafile=cafile) if style == "proxy-tls" else None
        server = await loop.create_server(lambda: ProxyClient(upstream_port, tls), "127.0.0.1", port,
                                          backlog=1024, reuse_address=True)
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


def serve_tls_echo(port, cert, key):
    """A TLS echo server on levent's TLSSessions over raw Events: the upstream of the TLS proxy cell.
    (On TLSBufferEvents it read 4 KiB per recv and took most of a core at 300 MiB/s, which made it,
    not the proxies, the cell's limit.) A connection reads while its answer is out, and closes on
    close_notify, EOF or error."""
    import levent

    ctx = levent.TLSContext(server_side=True)
    ctx.load_cert_chain(cert, key)
    buffer = bytearray(READ_SIZE)

    with levent.EventBase() as base:
        def serve(sock):
            session = levent.TLSSession(ctx, server_side=True)

            def close():
                reader.close()
                writer.close()
                session.close()
                sock.close()

            def readable(fd, _what):
                try:
                    session.recv_from(fd, READ_SIZE)     # an EOF shows as a TLSError below
                    if session.handshake_done or session.do_handshake():
                        while n := session.read_into(buffer):
                            session.write(memoryview(buffer)[:n])
                        if n == 0:      # close_notify
                            close()
                            return
                    session.send_to(fd)
                except BlockingIOError:
                    return
                except OSError:         # TLSError too
                    close()
                    return
                if session.pending_out:     # the answer waits: stop reading until it is out
                    reader.delete()
                    writer.add()

            def writable(fd, _what):
                try:
                    session.send_to(fd)
                except OSError:
                    close()
                    return
                if not session.pending_out:
                    writer.delete()
                    reader.add()

            reader = levent.Event(base, sock, levent.READ | levent.PERSIST, readable)
            writer = levent.Event(base, sock, levent.WRITE | levent.PERSIST, writable)
            reader.add()

        def on_accept(_listener, sock, _address):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
            serve(sock)

        def on_signal(_signum):
            base.loopbreak()

        listener = levent.Listener(base, on_accept, ("127.0.0.1", port), backlog=1024)
        signals = [levent.Signal(base, sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)]
        for sig in signals:
            sig.add()
        print("ready", flush=True)
        base.loop()
        listener.close()


SERVERS = ["selectors", "tls-echo"] + [f"{name}-{style}" for name, loop in registry.LOOPS.items() if loop.asyncio
                           for style in ("protocol", "streams", "tls", "proxy", "proxy-tls")]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m levent.bench.servers", description=__doc__.split("\n\n")[0])
    ap.add_argument("server", choices=SERVERS)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int, metavar="PORT", help="the proxy's upstream port on 127.0.0.1")
    ap.add_argument("--cafile", help="proxy-tls: the CA to verify the upstream with")
    ap.add_argument("--cert", help="tls-echo, LOOP-tls: the certificate chain (PEM)")
    ap.add_argument("--key", help="tls-echo, LOOP-tls: the private key (PEM)")
    args = ap.parse_args(argv)
    if "-proxy" in args.server and args.upstream is None:
        ap.error("a proxy needs --upstream PORT")
    if args.server.endswith("-tls") and "-proxy" not in args.server and not (args.cert and args.key):
        ap.error("a TLS echo server needs --cert and --key")
    if args.server == "selectors":
        serve_selectors(args.port)
        return 0
    if args.server == "tls-echo":
        serve_tls_echo(args.port, args.cert, args.key)
        return 0
    # LOOP-STYLE, where both may hold dashes (levent-asyncio, proxy-tls): the longest asyncio loop
    # name that prefixes it.
    loop_name = max((name for name, lp in registry.LOOPS.items()
                     if lp.asyncio and args.server.startswith(name + "-")), key=len, default=None)
    if loop_name is None:
        ap.error(f"unknown server {args.server!r}: expected LOOP-STYLE with LOOP one of "
                 f"{', '.join(n for n, lp in registry.LOOPS.items() if lp.asyncio)}")
    style = args.server[len(loop_name) + 1:]
    loop = registry.new_loop(loop_name)
    try:
        loop.run_until_complete(serve_asyncio(style, args.port, args.upstream, args.cafile, args.cert, args.key))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
