"""A TCP proxy on levent: ``python -m levent proxy --listen HOST:PORT --upstream HOST:PORT``.

Each accepted client gets its own connection to the upstream, and bytes move both ways until both
sides are done. This is the encrypting proxy of the notes levent grew from, with the "encrypt/frame"
step left to the user: a transform per direction.

Two engines move the bytes:

* ``"events"`` (no transform): a READ Event per socket whose callback reads into one buffer shared by
  every connection and sends it on, as a C forwarder using libevent only as the poller does. A plain
  side ``recv_into``\\ s and ``send``\\ s; a TLS side is a :class:`~levent.TLSSession`: one ``recv`` of up
  to a chunk straight into the session, decrypted into the shared buffer; what goes to it is encrypted
  into the session and sent from there. Nothing is copied in Python unless a plain destination takes
  only part of a chunk.
* ``"bufferevent"``: a :class:`~levent.BufferEvent` per side. Without a transform, the source's input
  chains move to the destination's output in C (``write_buffer``: no copy); with one, the bytes go
  through Python. TLS sides are :class:`~levent.TLSBufferEvent`\\ s; custom streams need this engine.

``mode="auto"`` picks ``"events"`` unless there is a transform or a custom stream: it is the faster
one, plain or TLS (libevent 2.1's bufferevents read 4 KiB per system call; see the measurements in the
README).

Backpressure: a direction stops reading from its source while its destination is behind, so a slow
peer never makes the proxy's memory grow without bound. With bufferevents, reading stops when the
destination's output reaches ``high_water`` and resumes once it drained to ``low_water``; the events
engine keeps at most one read (at most ``high_water`` bytes) per direction and reads again once that
is sent (a TLS source first decrypts what its session already holds).

EOF: when one side sends EOF, what it sent is forwarded and the write side toward the other is shut
down (half-close), so a request/response over a half-closed connection works; once both directions
saw EOF, both sockets close. An error on either side closes both at once; an upstream that cannot be
reached (or does not answer within ``connect_timeout``) closes the client, and the log says why.

TLS (``client_tls`` / ``upstream_tls``, or stream hooks making :class:`~levent.TLSBufferEvent`\\ s):
TLS has no half-close here (a raw ``shutdown(SHUT_WR)`` would skip close_notify, and a
TLSBufferEvent's ``close()`` stops reading), so on a connection with TLS on either side the first EOF
(a close_notify, or a plain side's FIN) ends the connection gracefully: what was read is forwarded,
then both sides are closed once their output is out, TLS sides with close_notify. Bytes the other side
sends after that are dropped. The events engine then waits for each peer's EOF before closing its
socket (closing with unread bytes would reset the connection), and gives up, aborting, after
``CLOSE_LINGER`` seconds in which nothing more could be sent; the bufferevent engine's graceful close
(plain or TLS) gives up after the same time without progress. A truncated TLS stream (no close_notify)
is an error and aborts both sides, so the truncation reaches the other side too. A failed handshake
or certificate verification toward the upstream closes the client (the upstream's handshake counts as
its connect, within ``connect_timeout``); a client that fails its handshake is closed; both are logged
with OpenSSL's reason.
"""
import argparse
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, fields

from levent import (PERSIST, READ, WRITE, BufferEvent, Event, EventBase, Listener, Signal, TLSBufferEvent,
                    TLSContext, TLSError, TLSSession, recv_into, send)

__all__ = ["Counters", "Proxy", "main"]

DEFAULT_HIGH_WATER = 512 * 1024
CHUNK = 256 * 1024      # the events engine's largest read (high_water permitting)
# A graceful close gives up (aborts) when this many seconds passed without a byte more sent (and, for
# the events engine's TLS connections, once all is sent, without the peer closing).
CLOSE_LINGER = 5.0

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
      takes the place of the matching stream hook, so it cannot be combined with that hook. Both
      engines speak TLS.
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
            TLSSession(client_tls, server_side=True)    # a context without a certificate fails here, not per client
        if upstream_tls is not None:
            if not isinstance(upstream_tls, TLSContext) or upstream_tls.server_side:
                raise TypeError("upstream_tls must be a client-side TLSContext()")
            if upstream_stream is not None:
                raise ValueError("upstream_tls builds the upstream stream: pass upstream_tls or "
                                 "upstream_stream, not both")
            upstream_server_name = upstream_server_name or upstream[0]
            TLSSession(upstream_tls, server_hostname=upstream_server_name)      # checks the name too
        elif upstream_server_name is not None:
            raise ValueError("upstream_server_name applies to upstream_tls only")
        raw = transform_up is None and transform_down is None and client_stream is None \
            and upstream_stream is None
        if mode == "events" and not raw:
            raise ValueError("mode='events' moves the bytes as they are: transforms and custom streams "
                             "need mode='bufferevent' (or 'auto')")
        mode = ("events" if raw else "bufferevent") if mode == "auto" else mode
        if mode == "bufferevent":
            if client_tls is not None:
                client_stream = _tls_client_stream(client_tls)
            if upstream_tls is not None:
                upstream_stream = _tls_upstream_stream(upstream_tls, upstream_server_name)
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
        self.client_tls = client_tls
        self.upstream_tls = upstream_tls
        self.upstream_server_name = upstream_server_name
        self.mode = mode
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
        if _is_own_address(self._listener.address, address):
            # Each connection would be accepted again as a new client, which connects again: a
            # storm of connections until the process runs out of fds.
            listening, self._listener = self._listener, None
            own = listening.address
            listening.close()
            raise ValueError(f"the upstream {_format(self.upstream)} is the proxy's own listening address "
                             f"{_format(own)}: it would connect to itself; pick another port")
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
        self.open = True            # False once closing (gracefully or not) started
        self.done = False           # both sides closed: the proxy no longer counts it
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

    def failed(self, error, side=None):
        """An error on either side (``side``: which, if known): close both."""
        where = f"{side}: " if side else ""
        self.proxy.log.info("client %s: %s%s; closing both sides", _format(self.peer), where, _reason(error))
        self.abort()

    def abort(self):
        """Close both sides now, dropping anything unsent (also ends a graceful close under way)."""
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
        elif graceful or self.done:
            return
        if self.release(graceful):
            self.released()

    def released(self):
        """Both sides are closed (release() said so, or a graceful close that took time ended)."""
        if not self.done:
            self.done = True
            self.proxy._closed(self)


# -- the events engine --------------------------------------------------------------------------------

class _EventConnection(_Connection):
    """Raw Events, each side plain or TLS (a TLSSession): both directions read into the proxy's
    shared buffer."""

    def __init__(self, proxy, sock, address):
        super().__init__(proxy, address)
        sock.setblocking(False)
        _nodelay(sock)
        session = None if proxy.client_tls is None else TLSSession(proxy.client_tls, server_side=True)
        self.client = _End(self, sock, session, "client")
        self.upstream = None
        self.connecting = None
        self.pumps = ()
        self.tls = proxy.client_tls is not None or proxy.upstream_tls is not None
        self.closing = False        # a graceful close of a TLS connection is under way (see release)
        self._linger_call = None
        self._linger_unsent = 0

    def start(self):
        super().start()
        if not self.open:
            return
        if self.client.session is None:
            self.ready(self.client)
        else:
            self.client.handshake()     # meanwhile the upstream connects

    def connect(self, target):
        family, address = target
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        proxy = self.proxy
        session = None
        if proxy.upstream_tls is not None:
            try:
                session = TLSSession(proxy.upstream_tls, server_hostname=proxy.upstream_server_name)
            except BaseException:
                sock.close()
                raise
        self.upstream = _End(self, sock, session, "upstream")
        _nodelay(sock)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        self.connecting = Event(proxy.base, sock, WRITE, self._connect_done)
        self.connecting.add()

    def _connect_done(self, fd, what):
        self.connecting.close()
        self.connecting = None
        err = self.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.connect_failed(OSError(err, os.strerror(err)))
        elif self.upstream.session is None:
            self.ready(self.upstream)
        else:
            self.upstream.handshake()

    def ready(self, end):
        """``end`` is plain, or its handshake is done; the upstream's completes the connect. Once both
        sides are ready, bytes move."""
        end.ready = True
        if end is self.upstream:
            self.connected()
        if self.client.ready and self.upstream is not None and self.upstream.ready:
            self.pumps = (_Pump(self, self.client, self.upstream, True),
                          _Pump(self, self.upstream, self.client, False))
            for pump in self.pumps:
                pump.resume()
                if not self.open:
                    return

    def handshake_failed(self, end, error):
        if end is self.upstream:
            self.connect_failed(error)
        else:
            self.proxy.log.info("client %s: TLS handshake failed: %s; closing it", _format(self.peer), _reason(error))
            self.abort()

    def pump_done(self):
        if all(pump.eof for pump in self.pumps):
            self.finish()

    def release(self, graceful):
        if self.connecting is not None:
            self.connecting.close()
            self.connecting = None
        for pump in self.pumps:
            pump.reader.close()
        ends = [end for end in (self.client, self.upstream) if end is not None]
        if graceful and self.tls:
            # No half-close over TLS: send what is pending, close_notify, FIN; then wait for the peer's
            # EOF before closing (closing with its bytes unread would reset the connection and could
            # drop what it has not read yet). Bounded: see _linger_check.
            self.closing = True
            for end in ends:
                end.close_gracefully()
            if not all(end.closed for end in ends):
                self._linger_unsent = self._unsent()
                self._linger_call = self.proxy.base.call_later(CLOSE_LINGER, self._linger_check)
                return False
            return True
        if self._linger_call is not None:
            self._linger_call.cancel()
            self._linger_call = None
        for end in ends:
            end.close()
        return True

    def end_closed(self):
        """One side finished its graceful close."""
        if all(end.closed for end in (self.client, self.upstream) if end is not None):
            if self._linger_call is not None:
                self._linger_call.cancel()
                self._linger_call = None
            self.released()

    def _unsent(self):
        return sum(end.unsent() for end in (self.client, self.upstream) if end is not None and not end.closed)

    def _linger_check(self):
        # Every CLOSE_LINGER seconds the close must have sent something more, else the peers that do
        # not read (or do not close) are given up on.
        self._linger_call = None
        unsent = self._unsent()
        if unsent < self._linger_unsent:
            self._linger_unsent = unsent
            self._linger_call = self.proxy.base.call_later(CLOSE_LINGER, self._linger_check)
            return
        self.proxy.log.info("client %s: closing took over %g s without progress (%d bytes unsent); aborting",
                            _format(self.peer), CLOSE_LINGER, unsent)
        self.abort()


class _End:
    """One socket of an events connection, plain or TLS (``session``), and what waits to be sent to
    it: for a plain one a copy of what the socket did not take, for a TLS one the session's
    pending ciphertext (which the session's own reading may add to: alerts, key updates)."""

    __slots__ = ("conn", "sock", "fd", "session", "name", "ready", "pending", "writer", "reader", "source",
                 "shut", "peer_closed", "closed")

    def __init__(self, conn, sock, session, name):
        self.conn = conn
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.name = name            # "client" or "upstream", for the log
        self.ready = False          # plain, or the handshake is done
        self.pending = b""
        self.writer = Event(conn.proxy.base, sock, WRITE | PERSIST, self.writable)
        self.reader = None          # while handshaking or closing (a _Pump reads in between)
        self.source = None          # the _Pump writing here, paused while this end is behind
        self.shut = False           # closing: everything (and close_notify) sent, write side shut down
        self.peer_closed = False    # closing: the peer's EOF came
        self.closed = False

    # -- sending --

    def put(self, data, n):
        """Send ``data[:n]`` (plaintext: encrypted first on a TLS end); False when some of it waits
        (the writer then runs until it is out). Raises OSError."""
        session = self.session
        if session is None:
            try:
                sent = send(self.fd, data, 0, n)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent == n:
                return True
            self.pending = data[sent:n]     # the one copy: the shared buffer is reused by the next read
        else:
            session.write(memoryview(data)[:n])
            session.send_to(self.fd)
            if not session.pending_out:
                return True
        self.writer.add()
        return False

    def flush(self):
        """Send what waits; True once nothing does. Raises OSError."""
        session = self.session
        if session is None:
            if self.pending:
                try:
                    sent = send(self.fd, self.pending)
                except (BlockingIOError, InterruptedError):
                    return False
                self.pending = self.pending[sent:]
            return not self.pending
        if session.pending_out:
            session.send_to(self.fd)
        return not session.pending_out

    def send_pending(self):
        """Send what waits, leaving the rest to the writer. Raises OSError."""
        if not self.flush():
            self.writer.add()

    def unsent(self):
        return len(self.pending) if self.session is None else self.session.pending_out

    def writable(self, fd, what):
        try:
            done = self.flush()
        except OSError as exc:
            self._failed(exc)
            return
        if not done:
            return
        self.writer.delete()
        if self.conn.closing:
            self._shut_down()
        elif self.source is not None and self.source.paused:
            self.source.resume()

    def _failed(self, error):
        if self.conn.closing:
            self.close()        # the peer is gone: nothing more to send it
            self.conn.end_closed()
        else:
            self.conn.failed(error, self.name)

    # -- the TLS handshake --

    def handshake(self):
        """Run the handshake, reading whenever the socket is readable; then tell the connection."""
        self.reader = Event(self.conn.proxy.base, self.sock, READ | PERSIST, self._handshake_readable)
        self.reader.add()
        self._handshake_step()      # a client's ClientHello; a server waits for it

    def _handshake_readable(self, fd, what):
        try:
            self.session.recv_from(fd, len(self.conn.proxy._buffer))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.handshake_failed(self, exc)
            return
        self._handshake_step()

    def _handshake_step(self):
        try:
            done = self.session.do_handshake()
        except TLSError as exc:
            self.send_alert()
            self.conn.handshake_failed(self, exc)
            return
        try:
            self.send_pending()
        except OSError as exc:
            self.conn.handshake_failed(self, exc)
            return
        if done:
            self.reader.close()
            self.reader = None
            self.conn.ready(self)

    def send_alert(self):
        """After a TLS failure: try once to send the alert OpenSSL made, before the socket closes."""
        try:
            self.session.send_to(self.fd)
        except OSError:
            pass

    # -- closing --

    def close_gracefully(self):
        """Send what waits, then close_notify (TLS) and FIN; read and drop what comes until the peer's
        EOF, then close."""
        if self.closed:
            return
        if self.session is not None and self.session.handshake_done:
            try:
                self.session.shutdown()
            except OSError:     # the session failed (read ahead while dst was behind): no close_notify
                self.close()
                return
        if self.reader is not None:
            self.reader.close()
        self.reader = Event(self.conn.proxy.base, self.sock, READ | PERSIST, self._discard)
        self.reader.add()
        try:
            done = self.flush()
        except OSError:
            self.close()
            return
        if done:
            self._shut_down()
        else:
            self.writer.add()

    def _shut_down(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.peer_closed = True     # not connected any more: nothing to wait for
        self.shut = True
        if self.peer_closed:
            self.close()
            self.conn.end_closed()

    def _discard(self, fd, what):
        try:
            if recv_into(fd, self.conn.proxy._buffer):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.peer_closed = True
        self.reader.delete()
        if self.shut:
            self.close()
            self.conn.end_closed()

    def close(self):
        if not self.closed:
            self.closed = True
            self.writer.close()
            if self.reader is not None:
                self.reader.close()
            if self.session is not None:
                self.session.close()
            self.sock.close()


class _Pump:
    """One direction of an events connection: read from src (recv, or recv + decrypt for TLS) into
    the shared buffer and put it to dst; while dst is behind, stop reading until it caught up."""

    __slots__ = ("conn", "src", "dst", "up", "counters", "buffer", "reader", "paused", "eof")

    def __init__(self, conn, src, dst, up):
        self.conn = conn
        self.src = src
        self.dst = dst
        self.up = up
        self.counters = conn.proxy.counters
        self.buffer = conn.proxy._buffer
        self.paused = True      # until resume() starts it
        self.eof = False
        dst.source = self
        self.reader = Event(conn.proxy.base, src.sock, READ | PERSIST,
                            self.readable if src.session is None else self.readable_tls)

    def resume(self):
        """Start reading (again): dst is not behind. A TLS src may hold ciphertext read earlier
        (with its handshake, or before dst fell behind): that goes first."""
        self.paused = False
        if self.src.session is not None:
            self.decrypt()
            if self.paused or not self.conn.open:
                return
        self.reader.add()

    def pause(self):
        self.paused = True
        self.reader.delete()

    def count(self, n):
        self.conn.moved += n
        if self.up:
            self.counters.bytes_up += n
        else:
            self.counters.bytes_down += n

    def readable(self, fd, what):
        buffer = self.buffer
        try:
            n = recv_into(fd, buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.failed(exc, self.src.name)
            return
        if not n:
            self.end()
            return
        self.count(n)
        try:
            if not self.dst.put(buffer, n):
                self.pause()
        except OSError as exc:
            self.conn.failed(exc, self.dst.name)

    def readable_tls(self, fd, what):
        try:
            self.src.session.recv_from(fd, len(self.buffer))    # 0 (EOF): decrypt() tells how it ended
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.failed(exc, self.src.name)
            return
        self.decrypt()

    def decrypt(self):
        """Put what src's session can decrypt to dst, until it needs more ciphertext or dst is behind."""
        src = self.src
        session = src.session
        buffer = self.buffer
        dst = self.dst
        try:
            while n := session.read_into(buffer):
                self.count(n)
                if not dst.put(buffer, n):
                    self.pause()
                    break
            src.send_pending()      # what reading made for src's peer (a key update)
        except TLSError as exc:     # a truncation, a bad record, ... (dst's session never fails here)
            src.send_alert()
            self.conn.failed(exc, src.name)
            return
        except OSError as exc:
            self.conn.failed(exc)
            return
        if n == 0:
            self.end()      # close_notify

    def end(self):
        """src sent EOF or close_notify (nothing is pending while reading): pass it on."""
        self.eof = True
        self.reader.delete()
        if self.conn.tls:
            self.conn.finish()      # no half-close over TLS (see the module's documentation)
            return
        try:
            self.dst.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.conn.failed(exc, self.dst.name)
            return
        self.conn.pump_done()


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
            if bev is None:
                continue
            if graceful:
                # The BufferEvent finishes the close (and close_notify) by itself once its output
                # drained; toward a peer that stops reading, its write timeout (which libevent
                # re-arms at every write) ends the wait: a closing BufferEvent frees itself on it.
                bev.set_timeouts(write=CLOSE_LINGER)
                bev.close()
            else:
                bev.abort()
        return True


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


def _is_own_address(listening, upstream):
    """True when connecting to ``upstream`` reaches the socket listening on ``listening``."""
    if not isinstance(listening, tuple) or listening[1] != upstream[1]:
        return False
    host, target = listening[0], upstream[0]
    if host == target:
        return True
    if host not in ("0.0.0.0", "::"):
        return False
    ip = ipaddress.ip_address(target.split("%")[0])
    return ip.is_loopback and (host == "::" or ip.version == 4)     # "::" is dual-stack here


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
                   help="the engine: events (raw Events reading 256 KiB per recv, TLS through TLSSession: "
                        "the fastest, plain or TLS), bufferevent (BufferEvents, zero-copy between them, "
                        "TLS through libevent's bufferevent_openssl); auto: events")
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
