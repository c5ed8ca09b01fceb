"""A TCP proxy on levent: ``python -m levent proxy --listen HOST:PORT --upstream HOST:PORT``.

Each accepted client gets its own connection to the upstream, and bytes move both ways until both
sides are done. This is the encrypting proxy of the notes levent grew from, with the "encrypt/frame"
step left to the user: a transform per direction.

Two engines move the bytes:

* ``"events"`` (plain TCP, no transform): a READ Event per socket whose callback ``recv_into``\\ s one
  buffer shared by every connection and ``send``\\ s it on, as a C forwarder using libevent only as
  the poller does. Nothing is copied in Python unless the destination takes only part of a chunk.
* ``"bufferevent"``: a :class:`~levent.BufferEvent` per side. Without a transform, the source's input
  chains move to the destination's output in C (``write_buffer``: no copy); with one, the bytes go
  through Python. Custom streams (TLS BufferEvents) use this engine.

``mode="auto"`` picks ``"events"`` whenever it can: it is the faster one for plain TCP (libevent
2.1's bufferevents read 4 KiB per system call; see the measurement in the README).

Backpressure: a direction stops reading from its source while its destination is behind, so a slow
peer never makes the proxy's memory grow without bound. With bufferevents, reading stops when the
destination's output reaches ``high_water`` and resumes once it drained to ``low_water``; the events
engine keeps at most one read (at most ``high_water`` bytes) per direction and reads again once that
is sent.

EOF: when one side sends EOF, what it sent is forwarded and the write side toward the other is shut
down (half-close), so a request/response over a half-closed connection works; once both directions
saw EOF, both sockets close. An error on either side closes both at once; an upstream that cannot be
reached (or does not answer within ``connect_timeout``) closes the client, and the log says why.

TLS (``client_tls`` / ``upstream_tls``, or stream hooks making :class:`~levent.TLSBufferEvent`\\ s):
TLS has no half-close that a TLSBufferEvent can do (a raw ``shutdown(SHUT_WR)`` under it would skip
close_notify, and its ``close()`` stops reading), so on a connection with TLS on either side the first
EOF (a close_notify, or a plain side's FIN) ends the connection gracefully: what was read is forwarded,
then both sides are closed once their output is out, TLS sides with close_notify. Bytes the other side
sends after that are dropped. A truncated TLS stream (no close_notify) is an error and aborts both
sides, so the truncation reaches the other side too. A failed handshake or certificate verification
toward the upstream closes the client; a client that fails its handshake is closed; both are logged
with OpenSSL's reason.
"""
import argparse
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, fields

from levent import (PERSIST, READ, WRITE, BufferEvent, Event, EventBase, Listener, Signal, TLSBufferEvent,
                    TLSContext, TLSError, recv_into, send)

__all__ = ["Counters", "Proxy", "main"]

DEFAULT_HIGH_WATER = 512 * 1024
CHUNK = 256 * 1024      # the events engine's largest read (high_water permitting)

_log = logging.getLogger("levent.proxy")


@dataclass
class Counters:
    """What a :class:`Proxy` did so far. Bytes are counted as read from each side (before a
    transform)."""

    accepted: int = 0       # client connections accepted
    active: int = 0         # connections open now
    failed: int = 0         # upstream connects that failed or timed out
    idle_closed: int = 0    # connections closed by the idle timeout
    bytes_up: int = 0       # client -> upstream
    bytes_down: int = 0     # upstream -> client

    def __str__(self):
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


class Proxy:
    """Forward every connection accepted on ``listen`` to ``upstream``.

    ``Proxy(base, listen=("127.0.0.1", 0), upstream=(host, port), *, high_water=512 KiB,
    low_water=high_water // 4, idle_timeout=None, connect_timeout=10.0, max_connections=None,
    transform_up=None, transform_down=None, client_stream=None, upstream_stream=None, client_tls=None,
    upstream_tls=None, upstream_server_name=None, mode="auto", log=logging.getLogger("levent.proxy"))``

    * ``transform_up`` / ``transform_down``: applied to the bytes going to the upstream / to the client.
      Either a callable ``bytes -> bytes`` (shared by all connections), or a class whose instances have
      ``feed(data) -> bytes`` and ``flush() -> bytes``: one instance per connection and direction, and
      ``flush()``'s bytes are sent when the source sends EOF.
    * ``client_stream(base, sock) -> BufferEvent`` makes the client side of an accepted socket;
      ``upstream_stream(base, address) -> BufferEvent`` makes the upstream side and starts its connect
      (``on_event`` CONNECTED or ERROR follows). The defaults are plain TCP; a TLS BufferEvent plugs
      in here. Half-close shuts down the write side of the stream's socket, unless either side is a
      TLSBufferEvent (see the module's documentation).
    * ``client_tls``: a server-side :class:`~levent.TLSContext` (with its certificate loaded): clients
      speak TLS to the proxy. ``upstream_tls``: a client-side TLSContext: the proxy speaks TLS to the
      upstream, checking its certificate against ``upstream_server_name`` (default: the upstream's
      host; also sent as SNI unless it is an IP address) as far as the context verifies. Either one
      builds the matching stream hook, so it cannot be combined with that hook; both force the
      bufferevent engine.
    * ``idle_timeout``: close a connection after that many seconds without a byte either way (checked
      every quarter of it). ``max_connections``: stop accepting while that many are open; the extra
      clients wait in the listen backlog.
    * ``mode``: ``"auto"``, ``"events"`` or ``"bufferevent"`` (see the module's documentation).

    :meth:`start` binds and starts accepting; :attr:`address` is the bound address; :attr:`counters`
    counts; :meth:`shutdown` stops accepting and lets the transfers in flight finish. Errors raised by
    a transform come out of the base's ``loop()``, as any callback's.
    """

    def __init__(self, base, listen=("127.0.0.1", 0), upstream=None, *, high_water=DEFAULT_HIGH_WATER,
                 low_water=None, idle_timeout=None, connect_timeout=10.0, max_connections=None,
                 transform_up=None, transform_down=None, client_stream=None, upstream_stream=None,
                 client_tls=None, upstream_tls=None, upstream_server_name=None, mode="auto", log=None):
        if upstream is None:
            raise TypeError("Proxy() needs an upstream address (host, port)")
        if high_water <= 0:
            raise ValueError(f"high_water must be > 0, not {high_water}")
        low_water = high_water // 4 if low_water is None else low_water
        if not 0 <= low_water <= high_water:
            raise ValueError(f"low_water must be within 0..high_water ({high_water}), not {low_water}")
        for name, value in (("idle_timeout", idle_timeout), ("connect_timeout", connect_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 seconds (None: none), not {value}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 (None: no limit), not {max_connections}")
        if mode not in ("auto", "events", "bufferevent"):
            raise ValueError(f"mode must be 'auto', 'events' or 'bufferevent', not {mode!r}")
        if client_tls is not None:
            if not isinstance(client_tls, TLSContext) or not client_tls.server_side:
                raise TypeError("client_tls must be a TLSContext(server_side=True) with its certificate loaded")
            if client_stream is not None:
                raise ValueError("client_tls builds the client stream: pass client_tls or client_stream, not both")
            client_stream = _tls_client_stream(client_tls)
        if upstream_tls is not None:
            if not isinstance(upstream_tls, TLSContext) or upstream_tls.server_side:
                raise TypeError("upstream_tls must be a client-side TLSContext()")
            if upstream_stream is not None:
                raise ValueError("upstream_tls builds the upstream stream: pass upstream_tls or "
                                 "upstream_stream, not both")
            upstream_stream = _tls_upstream_stream(upstream_tls, upstream_server_name or upstream[0])
        elif upstream_server_name is not None:
            raise ValueError("upstream_server_name applies to upstream_tls only")
        plain = transform_up is None and transform_down is None and client_stream is None \
            and upstream_stream is None
        if mode == "events" and not plain:
            raise ValueError("mode='events' moves plain TCP only: transforms and custom streams need "
                             "mode='bufferevent' (or 'auto')")
        self.base = base
        self.listen = listen
        self.upstream = upstream
        self.high_water = high_water
        self.low_water = low_water
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.transform_up = _transform(transform_up, "transform_up")
        self.transform_down = _transform(transform_down, "transform_down")
        self.client_stream = client_stream or _plain_client_stream
        self.upstream_stream = upstream_stream or _plain_upstream_stream
        self.mode = ("events" if plain else "bufferevent") if mode == "auto" else mode
        self.log = log or _log
        self.counters = Counters()
        self._listener = None
        self._upstream_address = None
        self._connections = set()
        self._buffer = None
        self._stopping = False
        self._deadline_call = None
        self._on_finished = None

    # -- lifetime ---------------------------------------------------------------------------------

    def start(self):
        """Resolve the upstream, bind ``listen`` and start accepting."""
        if self._listener is not None:
            raise RuntimeError("this Proxy was already started")
        host, port = self.upstream[:2]
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._upstream_address = (family, address)
        if self.mode == "events":
            self._buffer = bytearray(min(CHUNK, self.high_water))
        self._listener = Listener(self.base, self._accept, self.listen, backlog=1024)
        return self

    @property
    def address(self):
        """The address the proxy listens on (with the port picked when ``listen`` asked for 0)."""
        if self._listener is None:
            raise RuntimeError("start() the Proxy first")
        return self._listener.address

    @property
    def connections(self):
        """The number of connections open now."""
        return len(self._connections)

    def shutdown(self, deadline=None, on_finished=None):
        """Stop accepting; let the connections in flight finish, and abort those still open
        ``deadline`` seconds from now (None: wait for them). ``on_finished()`` runs once none is left."""
        self._stopping = True
        self._on_finished = on_finished
        if self._listener is not None:
            self._listener.close()
        if self._deadline_call is not None:
            self._deadline_call.cancel()
            self._deadline_call = None
        if deadline is not None and self._connections:
            self._deadline_call = self.base.call_later(deadline, self._abort_all)
        self._check_finished()

    def close(self):
        """Stop accepting and abort every connection now."""
        self.shutdown()
        self._abort_all()

    def _abort_all(self):
        if self._connections:
            self.log.warning("aborting %d connection(s) still open", len(self._connections))
        for conn in list(self._connections):
            conn.abort()

    def _check_finished(self):
        if not self._stopping or self._connections:
            return
        if self._deadline_call is not None:
            self._deadline_call.cancel()
            self._deadline_call = None
        on_finished, self._on_finished = self._on_finished, None
        if on_finished is not None:
            on_finished()

    # -- connections ------------------------------------------------------------------------------

    def _accept(self, listener, sock, address):
        counters = self.counters
        counters.accepted += 1
        counters.active += 1
        if self.max_connections is not None and counters.active >= self.max_connections:
            listener.disable()
        if self.mode == "events":
            conn = _EventConnection(self, sock, address)
        else:
            conn = _StreamConnection(self, sock, address)
        self._connections.add(conn)
        conn.start()

    def _closed(self, conn):
        self._connections.discard(conn)
        self.counters.active -= 1
        if (self.max_connections is not None and not self._stopping
                and self.counters.active == self.max_connections - 1):
            self._listener.enable()
        self._check_finished()


class _Connection:
    """What both engines share: the upstream connect's timeout, the idle timeout, closing once."""

    def __init__(self, proxy, address):
        self.proxy = proxy
        self.peer = address
        self.moved = 0              # bytes read either way, for the idle check
        self.open = True
        self._timer = None
        self._idle_seen = 0
        self._idle_since = 0.0

    def start(self):
        proxy = self.proxy
        if proxy.connect_timeout is not None:
            self._timer = proxy.base.call_later(proxy.connect_timeout, self._connect_timed_out)
        try:
            self.connect(proxy._upstream_address)
        except OSError as exc:
            self.connect_failed(exc)

    def _connect_timed_out(self):
        self._timer = None
        self.connect_failed(TimeoutError(errno.ETIMEDOUT, f"no answer within {self.proxy.connect_timeout} s"))

    def connected(self):
        """The upstream is connected: start moving bytes and the idle clock."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.proxy.idle_timeout is not None:
            self._idle_since = time.monotonic()
            self._timer = self.proxy.base.call_later(self.proxy.idle_timeout / 4, self._idle_check)

    def connect_failed(self, error):
        proxy = self.proxy
        proxy.counters.failed += 1
        what = "TLS handshake with upstream %s failed" if isinstance(error, TLSError) else "cannot reach upstream %s"
        proxy.log.warning("client %s: " + what + ": %s; closing the client",
                          _format(self.peer), _format(proxy.upstream), _reason(error))
        self.abort()

    def _idle_check(self):
        now = time.monotonic()
        if self.moved != self._idle_seen:
            self._idle_seen = self.moved
            self._idle_since = now
        elif now - self._idle_since >= self.proxy.idle_timeout:
            self._timer = None
            self.proxy.counters.idle_closed += 1
            self.proxy.log.info("client %s: idle for %.3g s; closing", _format(self.peer), now - self._idle_since)
            self.abort()
            return
        self._timer = self.proxy.base.call_later(self.proxy.idle_timeout / 4, self._idle_check)

    def failed(self, error):
        """A socket error on either side: close both."""
        self.proxy.log.info("client %s: %s; closing both sides", _format(self.peer), _reason(error))
        self.abort()

    def abort(self):
        """Close both sides now, dropping anything unsent."""
        self._close(graceful=False)

    def finish(self):
        """Both directions saw EOF and forwarded everything: close both sides."""
        self._close(graceful=True)

    def _close(self, graceful):
        if self.open:
            self.open = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.release(graceful)
            self.proxy._closed(self)


# -- the events engine --------------------------------------------------------------------------------

class _EventConnection(_Connection):
    """Plain TCP on raw Events: both directions read into the proxy's shared buffer."""

    def __init__(self, proxy, sock, address):
        super().__init__(proxy, address)
        sock.setblocking(False)
        _nodelay(sock)
        self.client = sock
        self.upstream = None
        self.connecting = None
        self.pumps = ()

    def connect(self, target):
        family, address = target
        self.upstream = socket.socket(family, socket.SOCK_STREAM)
        self.upstream.setblocking(False)
        _nodelay(self.upstream)
        err = self.upstream.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        self.connecting = Event(self.proxy.base, self.upstream, WRITE, self._connect_done)
        self.connecting.add()

    def _connect_done(self, fd, what):
        self.connecting.close()
        self.connecting = None
        err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.connect_failed(OSError(err, os.strerror(err)))
            return
        self.pumps = (_Pump(self, self.client, self.upstream, True),
                      _Pump(self, self.upstream, self.client, False))
        self.connected()
        for pump in self.pumps:
            pump.reader.add()

    def pump_done(self):
        if all(pump.eof for pump in self.pumps):
            self.finish()

    def release(self, graceful):
        if self.connecting is not None:
            self.connecting.close()
        for pump in self.pumps:
            pump.close()
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class _Pump:
    """One direction of an events connection: recv into the shared buffer, send it on; when the
    destination takes only part of it, keep the rest and stop reading until it is out."""

    __slots__ = ("conn", "src", "dst", "up", "counters", "buffer", "pending", "reader", "writer", "eof")

    def __init__(self, conn, src, dst, up):
        base = conn.proxy.base
        self.conn = conn
        self.src = src.fileno()
        self.dst = dst.fileno()
        self.up = up
        self.counters = conn.proxy.counters
        self.buffer = conn.proxy._buffer
        self.pending = b""
        self.eof = False
        self.reader = Event(base, src, READ | PERSIST, self.readable)
        self.writer = Event(base, dst, WRITE | PERSIST, self.writable)

    def readable(self, fd, what):
        buffer = self.buffer
        try:
            n = recv_into(fd, buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.failed(exc)
            return
        if not n:
            self.end()
            return
        self.conn.moved += n
        if self.up:
            self.counters.bytes_up += n
        else:
            self.counters.bytes_down += n
        try:
            sent = send(self.dst, buffer, 0, n)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.conn.failed(exc)
            return
        if sent < n:
            self.pending = buffer[sent:n]   # the one copy: the shared buffer is reused by the next read
            self.reader.delete()
            self.writer.add()

    def writable(self, fd, what):
        try:
            sent = send(fd, self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.failed(exc)
            return
        self.pending = self.pending[sent:]
        if not self.pending:
            self.writer.delete()
            self.reader.add()

    def end(self):
        """The source sent EOF (nothing is pending while reading): pass it on."""
        self.eof = True
        self.reader.delete()
        try:
            _shutdown_write(self.dst)
        except OSError as exc:
            self.conn.failed(exc)
            return
        self.conn.pump_done()

    def close(self):
        self.reader.close()
        self.writer.close()


# -- the bufferevent engine ---------------------------------------------------------------------------

class _StreamConnection(_Connection):
    """A BufferEvent per side (plain, or whatever the stream hooks make)."""

    def __init__(self, proxy, sock, address):
        super().__init__(proxy, address)
        self.client = proxy.client_stream(proxy.base, sock)
        self.client.on_event = self._client_event
        self.upstream = None
        self.sides = ()
        self.tls = False        # TLS on either side: no half-close (see the module's documentation)

    def connect(self, target):
        proxy = self.proxy
        self.upstream = proxy.upstream_stream(proxy.base, target[1])
        self.upstream.on_event = self._connect_event

    def _client_event(self, bev, what, error):
        """The client's events until the upstream is connected (then its _Side takes them): a TLS
        client's handshake ends here, or fails."""
        if what & BufferEvent.CONNECTED and not what & BufferEvent.ERROR:
            return
        self.proxy.log.info("client %s: %s before the upstream was connected; closing it",
                            _format(self.peer), _reason(error) if error else "EOF")
        self.abort()

    def _connect_event(self, bev, what, error):
        if what & BufferEvent.CONNECTED:
            proxy = self.proxy
            self.tls = isinstance(self.client, TLSBufferEvent) or isinstance(self.upstream, TLSBufferEvent)
            self.sides = (_Side(self, self.client, self.upstream, True, proxy.transform_up),
                          _Side(self, self.upstream, self.client, False, proxy.transform_down))
            self.connected()
            for side in self.sides:
                side.src.enable(READ)
        else:
            self.connect_failed(error or OSError(f"bufferevent event {what:#x} while connecting"))

    def side_done(self):
        if all(side.shut for side in self.sides):
            self.finish()

    def release(self, graceful):
        for bev in (self.client, self.upstream):
            if bev is not None:
                bev.close() if graceful else bev.abort()


class _Side:
    """One direction of a stream connection: src's input goes to dst's output."""

    def __init__(self, conn, src, dst, up, transform):
        self.conn = conn
        self.src = src
        self.dst = dst
        self.up = up
        self.counters = conn.proxy.counters
        self.high = conn.proxy.high_water
        self.feed, self.flush = transform() if transform is not None else (None, None)
        self.eof = False        # src sent EOF
        self.shut = False       # ... and dst's write side was shut down after the rest went out
        src.on_read = self.readable
        src.on_event = self.event
        dst.set_watermark(WRITE, conn.proxy.low_water)

    def readable(self, bev):
        data = bev.input
        n = len(data)
        self.conn.moved += n
        if self.up:
            self.counters.bytes_up += n
        else:
            self.counters.bytes_down += n
        dst = self.dst
        if self.feed is None:
            dst.write_buffer(data)      # moves the chains: no copy
        else:
            out = self.feed(data.read())
            if out:
                dst.write(out)
        if len(dst.output) >= self.high:
            # dst is behind: stop reading until it drained to the low watermark.
            bev.disable(READ)
            dst.on_write = self.drained

    def drained(self, bev):
        bev.on_write = None
        if self.eof:
            self.shutdown()
        else:
            self.src.enable(READ)

    def event(self, bev, what, error):
        if what & BufferEvent.CONNECTED and not what & BufferEvent.ERROR:
            return      # a TLS client's handshake finished after the upstream connected
        if what & BufferEvent.EOF and not what & BufferEvent.ERROR:     # EOF|ERROR: a TLS truncation
            self.eof = True
            if len(bev.input):
                self.readable(bev)
            if self.flush is not None:
                out = self.flush()
                if out:
                    self.dst.write(out)
            if self.conn.tls:
                # No half-close over TLS: close both sides once their output is out (close_notify).
                self.conn.finish()
            elif len(self.dst.output):
                # Shut down once everything is out.
                self.dst.set_watermark(WRITE, 0)
                self.dst.on_write = self.drained
            else:
                self.shutdown()
        else:
            self.conn.failed(error or OSError(f"bufferevent event {what:#x}"))

    def shutdown(self):
        try:
            _shutdown_write(self.dst.fileno())
        except OSError as exc:
            self.conn.failed(exc)
            return
        self.shut = True
        self.conn.side_done()


def _plain_client_stream(base, sock):
    _nodelay(sock)
    return BufferEvent(base, sock)


def _plain_upstream_stream(base, address):
    bev = BufferEvent(base)
    bev.connect(address)
    return bev


def _tls_client_stream(ctx):
    """The client_stream hook of Proxy(client_tls=ctx): the proxy is the TLS server."""
    def client_stream(base, sock):
        _nodelay(sock)
        return TLSBufferEvent(base, ctx, sock, server_side=True)

    return client_stream


def _tls_upstream_stream(ctx, server_name):
    """The upstream_stream hook of Proxy(upstream_tls=ctx): CONNECTED once the handshake is done."""
    def upstream_stream(base, address):
        bev = TLSBufferEvent(base, ctx, server_hostname=server_name)
        bev.connect(address)
        return bev

    return upstream_stream


def _transform(value, name):
    """A factory of (feed, flush) for one direction of one connection, or None."""
    if value is None:
        return None
    if isinstance(value, type):
        if not (callable(getattr(value, "feed", None)) and callable(getattr(value, "flush", None))):
            raise TypeError(f"{name}: a transform class needs feed(data) and flush() methods")

        def per_connection():
            instance = value()
            return instance.feed, instance.flush

        return per_connection
    if not callable(value):
        raise TypeError(f"{name} must be a callable bytes -> bytes or a class with feed()/flush(), "
                        f"not {type(value).__name__}")
    return lambda: (value, None)


def _nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _shutdown_write(fd):
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    finally:
        sock.detach()


def _format(address):
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _reason(error):
    return error.strerror or str(error) if isinstance(error, OSError) else str(error)


# -- python -m levent proxy ---------------------------------------------------------------------------

def _host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _size(text):
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    scale = units.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in bytes (e.g. 512k), not {text!r}") from None


def parser():
    """The argument parser of ``python -m levent proxy``."""
    p = argparse.ArgumentParser(
        prog="python -m levent proxy",
        description="A TCP proxy: forwards every connection accepted on --listen to --upstream. "
                    "SIGINT/SIGTERM stop accepting, let transfers finish (up to --drain-timeout) and "
                    "print the counters.")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8888), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8888; port 0: any free port)")
    p.add_argument("--upstream", type=_host_port, required=True, metavar="HOST:PORT",
                   help="where to forward connections")
    p.add_argument("--high-water", type=_size, default=DEFAULT_HIGH_WATER, metavar="SIZE",
                   help="stop reading a side while the other side has this much unsent (default 512k)")
    p.add_argument("--low-water", type=_size, default=None, metavar="SIZE",
                   help="resume reading below this (default high-water / 4)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="close connections silent this long (default: never)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up connecting to the upstream after this long (default 10)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="stop accepting while N connections are open (default: no limit)")
    p.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, abort the transfers still running after this long (default 10)")
    p.add_argument("--mode", choices=("auto", "events", "bufferevent"), default="auto",
                   help="the engine: events (raw Events with recv_into/send, the fastest for plain TCP), "
                        "bufferevent (BufferEvents, zero-copy between them); auto: events")
    tls = p.add_argument_group(
        "TLS", "any combination: --tls-upstream alone wraps plain clients into TLS, --cert alone unwraps "
               "TLS clients, both re-encrypt. With TLS on a side there is no half-close: the first EOF "
               "closes both sides gracefully (close_notify).")
    tls.add_argument("--tls-upstream", action="store_true",
                     help="speak TLS to the upstream, verifying its certificate (the system CAs, plus --cafile)")
    tls.add_argument("--cafile", metavar="PATH", help="also trust the CA certificates in PATH (PEM) for the upstream")
    tls.add_argument("--server-name", metavar="NAME",
                     help="the name the upstream's certificate must carry, also sent as SNI "
                          "(default: the --upstream host)")
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify the upstream's certificate (anyone in between can read the traffic)")
    tls.add_argument("--cert", metavar="PATH",
                     help="speak TLS to clients with this certificate chain (PEM; may hold the key too)")
    tls.add_argument("--key", metavar="PATH", help="the private key of --cert (PEM)")
    return p


def _tls_contexts(p, args):
    """(client_tls, upstream_tls) from the TLS flags; misuse is a usage error saying what to do."""
    for flag in ("cafile", "server_name", "insecure"):
        if getattr(args, flag) and not args.tls_upstream:
            p.error(f"--{flag.replace('_', '-')} applies to TLS toward the upstream: add --tls-upstream")
    if args.insecure and args.cafile:
        p.error("--insecure turns verification off, so --cafile would not be used: drop one of them")
    if args.key and not args.cert:
        p.error("--key needs --cert PATH (the certificate chain the key belongs to)")
    if (args.tls_upstream or args.cert) and args.mode == "events":
        p.error("TLS runs on the bufferevent engine: drop --mode events (auto picks bufferevent)")
    client_tls = upstream_tls = None
    if args.cert:
        client_tls = TLSContext(server_side=True)
        try:
            client_tls.load_cert_chain(args.cert, args.key)
        except OSError as exc:      # TLSError too: a missing file, a key that does not match, ...
            p.error(f"--cert/--key: {exc}")
    if args.tls_upstream:
        upstream_tls = TLSContext()
        if args.insecure:
            upstream_tls.check_hostname = False     # before verify_mode: TLSContext insists
            upstream_tls.verify_mode = ssl.CERT_NONE
        elif args.cafile:
            try:
                upstream_tls.load_verify_locations(cafile=args.cafile)
            except OSError as exc:
                p.error(f"--cafile: {exc}")
    return client_tls, upstream_tls


def main(argv=None):
    """``python -m levent proxy``: run a proxy until SIGINT or SIGTERM; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    client_tls, upstream_tls = _tls_contexts(p, args)
    logging.basicConfig(level=logging.INFO, format="levent.proxy: %(message)s", stream=sys.stderr)
    with EventBase() as base:
        proxy = Proxy(base, args.listen, args.upstream, high_water=args.high_water, low_water=args.low_water,
                      idle_timeout=args.idle_timeout, connect_timeout=args.connect_timeout,
                      max_connections=args.max_connections, mode=args.mode, client_tls=client_tls,
                      upstream_tls=upstream_tls, upstream_server_name=args.server_name)
        if args.insecure:
            proxy.log.warning("--insecure: the upstream's certificate is not verified")

        def on_signal(signum):
            for sig in signals:
                sig.close()
            print(f"{signal.Signals(signum).name}: no longer accepting; {proxy.connections} connection(s) "
                  f"open, waiting up to {args.drain_timeout} s", flush=True)
            proxy.shutdown(args.drain_timeout, on_finished=base.loopexit)

        signals = [Signal(base, signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)]
        for sig in signals:
            sig.add()
        proxy.start()
        host, port = proxy.address[:2]
        tls = "".join(text for on, text in ((client_tls, ", TLS from clients"), (upstream_tls, ", TLS to upstream"))
                      if on is not None)
        print(f"ready: listening on {_format((host, port))}, forwarding to {_format(args.upstream)} "
              f"({proxy.mode}{tls})", flush=True)
        base.dispatch()
        print(f"counters: {proxy.counters}", flush=True)
    return 0
