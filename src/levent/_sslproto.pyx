# cython: language_level=3
"""TLS for levent's asyncio loop (Python 3.11+): what ``ssl=`` and ``start_tls()`` run on.

The TLS itself is the stdlib's: an ``ssl.SSLObject`` over two ``ssl.MemoryBIO``s, made from the
``ssl.SSLContext`` the user passed. :class:`TLSCore` moves the bytes between the socket transport
below (it is the transport's ``asyncio.BufferedProtocol``), that SSLObject, and the application's
protocol above, which sees a :class:`TLSTransport` (an ``asyncio.Transport``). The behaviour is that
of asyncio's own sslproto of 3.11+ (states, flow control both ways, handshake and shutdown timeouts,
close_notify both ways, EOF handling, error messages); 3.9/3.10's sslproto differs, and the loop
uses the stdlib's there.

Where the time goes in asyncio's, besides the interpreter: every read ends with an
``SSLWantReadError`` raised by OpenSSL's empty buffer, and each ``SSLObject.read(256 KiB)`` allocates
a 256 KiB bytes object (above glibc's mmap threshold: an mmap and a munmap per message) that is then
shrunk. Here a read is only tried while the incoming BIO or the session holds bytes (OpenSSL does
not read ahead from a memory BIO, so nothing else can be waiting), and decrypts into the
connection's receive buffer (free once its bytes are in the incoming BIO), from which
data_received() gets an exact-size copy.
"""
cimport cython
from levent._slots cimport checked_core

import ssl
import sys
import warnings
from asyncio import constants, exceptions, protocols, transports
from asyncio.log import logger

cdef enum:
    READ_SIZE = 262144      # bytes the socket transport reads per recv() (asyncio's max_size)

# The TLS layer's states, as asyncio's SSLProtocolState.
cdef enum State:
    UNWRAPPED
    DO_HANDSHAKE
    WRAPPED
    FLUSHING
    SHUTDOWN

# Where the application protocol is: INIT -> MADE [-> EOF] -> LOST, as asyncio's AppProtocolState.
cdef enum AppState:
    APP_INIT
    APP_MADE
    APP_EOF
    APP_LOST

cdef tuple _STATE_NAMES = ("UNWRAPPED", "DO_HANDSHAKE", "WRAPPED", "FLUSHING", "SHUTDOWN")
# OpenSSL wants more input (SSLSyscallError: as asyncio, a retry, not a failure)
cdef tuple _AGAIN = (ssl.SSLWantReadError, ssl.SSLSyscallError)
cdef object _SSLError = ssl.SSLError
cdef object _CertificateError = ssl.CertificateError
cdef object _CancelledError = exceptions.CancelledError
cdef Py_ssize_t _LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


cdef tuple _flow_limits(high, low, Py_ssize_t kib):
    # asyncio's defaults: high = kib KiB (or 4 x low), low = high / 4.
    if high is None:
        high = kib * 1024 if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
    return high, low


cdef object _default_context(bint server_side, server_hostname):
    # ssl=True on a client: a default context (no hostname check without a hostname to check).
    if server_side:
        raise ValueError('Server side SSL needs a valid SSLContext')
    context = ssl.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


cdef object _positive_timeout(value, default, str name):
    if value is None:
        return default
    if value <= 0:
        raise ValueError(f"{name} should be a positive number, got {value}")
    return value


@cython.final
cdef class TLSCore:
    """The native half of a :class:`TLSProtocol`; not used on its own."""

    cdef object _loop
    cdef object _protocol           # the TLSProtocol (named in error reports)
    cdef object _transport          # the socket transport below; None once the connection is lost
    cdef object _app_protocol
    cdef bint _app_buffered
    cdef object _app_data_received
    cdef object _app_get_buffer
    cdef object _app_buffer_updated
    cdef object _app_transport      # the TLSTransport; None once the connection is lost
    cdef bint _app_closed           # the TLSTransport's is_closing()
    cdef bint _app_released         # close() called twice: abort() then does nothing (as asyncio)
    cdef object _sslobj
    cdef object _incoming           # MemoryBIO: bytes from the socket, not yet decrypted
    cdef object _outgoing           # MemoryBIO: encrypted bytes not yet handed to the socket
    cdef dict _extra
    cdef list _backlog              # application data not yet encrypted
    cdef Py_ssize_t _backlog_size
    cdef object _waiter
    cdef object _handshake_timeout
    cdef object _shutdown_timeout
    cdef object _handshake_timer
    cdef object _shutdown_timer
    cdef object _handshake_start
    cdef State _state
    cdef AppState _app_state
    cdef Py_ssize_t _conn_lost
    cdef bint _eof_received
    cdef bint _ssl_writing_paused   # the socket transport asked us to stop writing
    cdef bint _app_reading_paused   # the application asked not to get data
    cdef bint _ssl_reading_paused   # we asked the socket transport to stop reading
    cdef bint _app_writing_paused   # we asked the application to stop writing
    cdef Py_ssize_t _in_high, _in_low, _out_high, _out_low
    cdef object _buffer             # what the socket transport recv()s into
    cdef object _view

    cdef int _setup(self, protocol, loop, app_protocol, sslcontext, waiter, bint server_side,
                    server_hostname, bint call_connection_made, handshake_timeout,
                    shutdown_timeout) except -1:
        self._protocol = protocol
        self._handshake_timeout = _positive_timeout(handshake_timeout, constants.SSL_HANDSHAKE_TIMEOUT,
                                                    "ssl_handshake_timeout")
        self._shutdown_timeout = _positive_timeout(shutdown_timeout, constants.SSL_SHUTDOWN_TIMEOUT,
                                                   "ssl_shutdown_timeout")
        if not sslcontext:
            sslcontext = _default_context(server_side, server_hostname)
        if not server_hostname or server_side:
            server_hostname = None
        self._extra = {'sslcontext': sslcontext}
        self._backlog = []
        self._waiter = waiter
        self._loop = loop
        self._set_app_protocol(app_protocol)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._state = UNWRAPPED
        self._app_state = APP_INIT if call_connection_made else APP_MADE
        self._sslobj = sslcontext.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                           server_hostname=server_hostname)
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._set_read_buffer_limits(None, None)
        self._set_write_buffer_limits(None, None)
        self._app_transport = TLSTransport.__new__(TLSTransport)
        self._app_transport._core = self
        self._app_transport._loop = loop
        return 0

    cdef int _set_app_protocol(self, app_protocol) except -1:
        self._app_protocol = app_protocol
        self._app_buffered = isinstance(app_protocol, protocols.BufferedProtocol)
        if self._app_buffered:
            self._app_get_buffer = app_protocol.get_buffer
            self._app_buffer_updated = app_protocol.buffer_updated
            self._app_data_received = None
        else:
            self._app_data_received = app_protocol.data_received
            self._app_get_buffer = self._app_buffer_updated = None
        return 0

    cdef object _get_app_transport(self):
        if self._app_transport is None:
            raise RuntimeError('the TLS connection is already lost: it has no transport to hand over')
        return self._app_transport

    cdef int _set_state(self, State new) except -1:
        cdef State old = self._state
        if (new == UNWRAPPED
                or (old == UNWRAPPED and new == DO_HANDSHAKE)
                or (old == DO_HANDSHAKE and new == WRAPPED)
                or (old == WRAPPED and new == FLUSHING)
                or (old == FLUSHING and new == SHUTDOWN)):
            self._state = new
            return 0
        raise RuntimeError(f'cannot switch state from SSLProtocolState.{_STATE_NAMES[old]} to '
                           f'SSLProtocolState.{_STATE_NAMES[new]}')

    cdef int _wakeup_waiter(self, exc) except -1:
        waiter = self._waiter
        if waiter is None:
            return 0
        self._waiter = None
        if not waiter.cancelled():
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(None)
        return 0

    cdef object _get_extra_info(self, name, default):
        if name in self._extra:
            return self._extra[name]
        if self._transport is not None:
            return self._transport.get_extra_info(name, default)
        return default

    # -- the socket transport's protocol ------------------------------------------------------------

    cdef int _connection_made(self, transport) except -1:
        self._transport = transport
        self._start_handshake()
        return 0

    cdef int _connection_lost(self, exc) except -1:
        del self._backlog[:]
        self._backlog_size = 0
        self._outgoing.read()
        self._conn_lost += 1
        if self._app_transport is not None:
            self._app_closed = True     # no unclosed-transport warning when it is collected
        if self._state != DO_HANDSHAKE and (self._app_state == APP_MADE or self._app_state == APP_EOF):
            self._app_state = APP_LOST
            self._loop.call_soon(self._app_protocol.connection_lost, exc)
        self._set_state(UNWRAPPED)
        self._transport = None
        self._app_transport = None
        self._app_protocol = self._app_data_received = self._app_get_buffer = self._app_buffer_updated = None
        self._wakeup_waiter(exc)
        self._cancel_timers()
        return 0

    cdef int _cancel_timers(self) except -1:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        return 0

    cdef object _get_buffer(self, Py_ssize_t n):
        if n <= 0 or n > READ_SIZE:
            n = READ_SIZE
        if len(self._buffer) < n:
            self._buffer = bytearray(n)
            self._view = memoryview(self._buffer)
        return self._view

    cdef int _buffer_updated(self, Py_ssize_t n) except -1:
        self._incoming.write(self._view[:n])
        if self._state == WRAPPED:
            self._do_read()
        elif self._state == DO_HANDSHAKE:
            self._do_handshake()
        elif self._state == FLUSHING:
            self._do_flush()
        elif self._state == SHUTDOWN:
            self._do_shutdown()
        return 0

    cdef object _eof_received_from_transport(self):
        # Returns None: the socket transport then closes itself once its output is out.
        self._eof_received = True
        try:
            if self._loop.get_debug():
                logger.debug("%r received EOF", self._protocol)
            if self._state == DO_HANDSHAKE:
                self._on_handshake_complete(ConnectionResetError())
            elif self._state == WRAPPED:
                self._set_state(FLUSHING)
                if self._app_reading_paused:
                    return True     # the rest is read once the application resumes reading
                self._do_flush()
            elif self._state == FLUSHING:
                self._do_write()
                self._set_state(SHUTDOWN)
                self._do_shutdown()
            elif self._state == SHUTDOWN:
                self._do_shutdown()
        except Exception:
            self._transport.close()
            raise
        return None

    # -- handshake ----------------------------------------------------------------------------------

    cdef int _start_handshake(self) except -1:
        if self._loop.get_debug():
            logger.debug("%r starts SSL handshake", self._protocol)
            self._handshake_start = self._loop.time()
        else:
            self._handshake_start = None
        self._set_state(DO_HANDSHAKE)
        self._handshake_timer = self._loop.call_later(self._handshake_timeout, self._check_handshake_timeout)
        self._do_handshake()
        return 0

    def _check_handshake_timeout(self):
        if self._state == DO_HANDSHAKE:
            self._fatal_error(ConnectionAbortedError(
                f"SSL handshake is taking longer than {self._handshake_timeout} seconds: "
                f"aborting the connection"), 'Fatal error on transport')

    cdef int _do_handshake(self) except -1:
        try:
            self._sslobj.do_handshake()
        except _AGAIN:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)
        return 0

    cdef int _on_handshake_complete(self, handshake_exc) except -1:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        sslobj = self._sslobj
        try:
            if handshake_exc is not None:
                raise handshake_exc
            self._set_state(WRAPPED)
            peercert = sslobj.getpeercert()
        except Exception as exc:
            handshake_exc = None    # the traceback would hold a cycle through this frame
            self._set_state(UNWRAPPED)
            if isinstance(exc, _CertificateError):
                message = 'SSL handshake failed on verifying the certificate'
            else:
                message = 'SSL handshake failed'
            self._fatal_error(exc, message)
            self._wakeup_waiter(exc)
            return 0
        if self._loop.get_debug() and self._handshake_start is not None:
            logger.debug("%r: SSL handshake took %.1f ms", self._protocol,
                         (self._loop.time() - self._handshake_start) * 1e3)
        self._extra.update(peercert=peercert, cipher=sslobj.cipher(), compression=sslobj.compression(),
                           ssl_object=sslobj)
        if self._app_state == APP_INIT:
            self._app_state = APP_MADE
            self._app_protocol.connection_made(self._get_app_transport())
        self._wakeup_waiter(None)
        self._do_read()
        return 0

    # -- shutdown -----------------------------------------------------------------------------------

    cdef int _start_shutdown(self) except -1:
        if self._state == FLUSHING or self._state == SHUTDOWN or self._state == UNWRAPPED:
            return 0
        if self._app_transport is not None:
            self._app_closed = True
        if self._state == DO_HANDSHAKE:
            self._abort(None)
        else:
            self._set_state(FLUSHING)
            self._shutdown_timer = self._loop.call_later(self._shutdown_timeout, self._check_shutdown_timeout)
            self._do_flush()
        return 0

    def _check_shutdown_timeout(self):
        if self._state == FLUSHING or self._state == SHUTDOWN:
            self._transport._force_close(exceptions.TimeoutError('SSL shutdown timed out'))

    cdef int _do_flush(self) except -1:
        self._do_read()
        self._set_state(SHUTDOWN)
        self._do_shutdown()
        return 0

    cdef int _do_shutdown(self) except -1:
        try:
            if not self._eof_received:
                self._sslobj.unwrap()   # sends our close_notify; done once the peer's arrived
        except _AGAIN:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_shutdown_complete(exc)
        else:
            self._process_outgoing()
            self._call_eof_received()
            self._on_shutdown_complete(None)
        return 0

    cdef int _on_shutdown_complete(self, shutdown_exc) except -1:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None
        if shutdown_exc is not None:
            self._fatal_error(shutdown_exc, 'Fatal error on transport')
        else:
            self._loop.call_soon(self._transport.close)
        return 0

    cdef int _abort(self, exc) except -1:
        self._set_state(UNWRAPPED)
        if self._transport is not None:
            self._transport._force_close(exc)
        return 0

    # -- writing ------------------------------------------------------------------------------------

    cdef int _write_appdata(self, list_of_data) except -1:
        if self._state == FLUSHING or self._state == SHUTDOWN or self._state == UNWRAPPED:
            if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning('SSL connection is closed')
            self._conn_lost += 1
            return 0
        for data in list_of_data:
            self._backlog.append(data)
            self._backlog_size += len(data)
        try:
            if self._state == WRAPPED:
                self._do_write()
        except Exception as exc:
            self._fatal_error(exc, 'Fatal error on SSL protocol')
        return 0

    cdef int _do_write(self) except -1:
        cdef list backlog = self._backlog
        cdef Py_ssize_t count, size
        try:
            while backlog:
                data = backlog[0]
                count = self._sslobj.write(data)
                size = len(data)
                if count < size:
                    backlog[0] = data[count:]
                    self._backlog_size -= count
                else:
                    del backlog[0]
                    self._backlog_size -= size
        except _AGAIN:
            pass
        self._process_outgoing()
        return 0

    cdef int _process_outgoing(self) except -1:
        if not self._ssl_writing_paused and self._outgoing.pending:
            self._transport.write(self._outgoing.read())
        self._control_app_writing()
        return 0

    # -- reading ------------------------------------------------------------------------------------

    cdef inline bint _readable(self) except -1:
        # Bytes to decrypt, or decrypted bytes left in the session: else read() would only raise
        # SSLWantReadError (no read-ahead from a memory BIO: nothing else can be waiting).
        return self._incoming.pending > 0 or self._sslobj.pending() > 0

    cdef int _do_read(self) except -1:
        if self._state != WRAPPED and self._state != FLUSHING:
            return 0
        try:
            if not self._app_reading_paused:
                if self._app_buffered:
                    self._read_into_app_buffer()
                else:
                    self._read_copied()
                if self._backlog:
                    self._do_write()
                else:
                    self._process_outgoing()
            self._control_ssl_reading()
        except Exception as exc:
            self._fatal_error(exc, 'Fatal error on SSL protocol')
        return 0

    cdef int _read_into_app_buffer(self) except -1:
        cdef Py_ssize_t offset = 0, wants, count = 1
        buf = memoryview(self._app_get_buffer(self._incoming.pending)).cast('B')
        wants = len(buf)
        if wants == 0:
            raise RuntimeError('get_buffer() returned an empty buffer')
        try:
            while offset < wants and self._readable():
                count = self._sslobj.read(wants - offset, buf[offset:])
                if count <= 0:
                    break   # close_notify
                offset += count
            if offset == wants and self._readable():
                # the application's buffer is full and more is there: the rest on the next turn
                self._loop.call_soon(self._resume_read)
        except _AGAIN:
            pass
        if offset > 0:
            self._app_buffer_updated(offset)
        if count == 0:
            self._call_eof_received()
            self._start_shutdown()
        return 0

    cdef int _read_copied(self) except -1:
        # Decrypts into the receive buffer: its bytes are already in the incoming BIO, and the socket
        # transport fills it again only from the loop, after data_received() got its copy. (Not one
        # buffer for all connections: SSLObject.read() releases the GIL, and loops run in threads.)
        # Up to a buffer's worth per data_received() call; the rest on the next turn.
        cdef Py_ssize_t offset = 0, count = 1, size = len(self._buffer)
        view = self._view
        try:
            while offset < size and self._readable():
                count = self._sslobj.read(size - offset, view[offset:])
                if count <= 0:
                    break   # close_notify
                offset += count
            if offset == size and self._readable():
                self._loop.call_soon(self._resume_read)
        except _AGAIN:
            pass
        if offset > 0:
            self._app_data_received(bytes(view[:offset]))
        if count == 0:
            self._call_eof_received()
            self._start_shutdown()
        return 0

    def _resume_read(self):
        self._do_read()

    cdef int _call_eof_received(self) except -1:
        try:
            if self._app_state == APP_MADE:
                self._app_state = APP_EOF
                if self._app_protocol.eof_received():
                    logger.warning('returning true from eof_received() has no effect when using ssl')
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Error calling eof_received()')
        return 0

    # -- flow control -------------------------------------------------------------------------------

    cdef Py_ssize_t _write_buffer_size(self) except -1:
        return self._outgoing.pending + self._backlog_size

    cdef int _control_app_writing(self) except -1:
        cdef Py_ssize_t size = self._write_buffer_size()
        if size >= self._out_high and not self._app_writing_paused:
            self._app_writing_paused = True
            self._call_flow_control(self._app_protocol.pause_writing, 'protocol.pause_writing() failed')
        elif size <= self._out_low and self._app_writing_paused:
            self._app_writing_paused = False
            self._call_flow_control(self._app_protocol.resume_writing, 'protocol.resume_writing() failed')
        return 0

    cdef int _call_flow_control(self, method, str message) except -1:
        try:
            method()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self._app_transport,
                'protocol': self._protocol,
            })
        return 0

    cdef int _set_write_buffer_limits(self, high, low) except -1:
        self._out_high, self._out_low = _flow_limits(high, low, constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE)
        return 0

    cdef int _pause_reading(self) except -1:
        self._app_reading_paused = True
        return 0

    cdef int _resume_reading(self) except -1:
        if self._app_reading_paused:
            self._app_reading_paused = False
            self._loop.call_soon(self._continue_after_resume)
        return 0

    def _continue_after_resume(self):
        if self._state == WRAPPED:
            self._do_read()
        elif self._state == FLUSHING:
            self._do_flush()
        elif self._state == SHUTDOWN:
            self._do_shutdown()

    cdef int _control_ssl_reading(self) except -1:
        cdef Py_ssize_t size = self._incoming.pending
        if size >= self._in_high and not self._ssl_reading_paused:
            self._ssl_reading_paused = True
            self._transport.pause_reading()
        elif size <= self._in_low and self._ssl_reading_paused:
            self._ssl_reading_paused = False
            self._transport.resume_reading()
        return 0

    cdef int _set_read_buffer_limits(self, high, low) except -1:
        self._in_high, self._in_low = _flow_limits(high, low, constants.FLOW_CONTROL_HIGH_WATER_SSL_READ)
        return 0

    cdef int _pause_writing(self) except -1:
        # The socket transport's buffer is above its high-water mark.
        if self._ssl_writing_paused:
            raise AssertionError('pause_writing() called twice')
        self._ssl_writing_paused = True
        return 0

    cdef int _resume_writing(self) except -1:
        if not self._ssl_writing_paused:
            raise AssertionError('resume_writing() without pause_writing()')
        self._ssl_writing_paused = False
        self._process_outgoing()
        return 0

    # -- errors -------------------------------------------------------------------------------------

    cdef int _fatal_error(self, exc, str message) except -1:
        # As asyncio's: OSErrors are the peer's doing, only logged in debug mode.
        if self._transport is not None:
            self._transport._force_close(exc)
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self._protocol, message, exc_info=True)
        elif not isinstance(exc, _CancelledError):
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self._transport,
                'protocol': self._protocol,
            })
        return 0


cdef inline TLSCore _core(obj):
    return <TLSCore>checked_core(obj, TLSCore)


class TLSProtocol(protocols.BufferedProtocol):
    """The protocol levent's socket transport feeds when a connection speaks TLS: made by the loop for
    ``ssl=`` and ``start_tls()``, with asyncio's SSLProtocol signature; the application's protocol
    sees :attr:`_app_transport`."""

    __slots__ = ('_core', '__weakref__')

    def __init__(self, loop, app_protocol, sslcontext, waiter, server_side=False, server_hostname=None,
                 call_connection_made=True, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        cdef TLSCore core = TLSCore.__new__(TLSCore)
        self._core = core
        core._setup(self, loop, app_protocol, sslcontext, waiter, server_side, server_hostname,
                    call_connection_made, ssl_handshake_timeout, ssl_shutdown_timeout)

    @property
    def _app_transport(self):
        return _core(self)._app_transport

    def connection_made(self, transport):
        """The socket is connected: the handshake starts."""
        _core(self)._connection_made(transport)

    def connection_lost(self, exc):
        """The socket is closed: the application's connection_lost() follows (if it was connected)."""
        _core(self)._connection_lost(exc)

    def get_buffer(self, sizehint):
        """The buffer the socket transport reads into."""
        return _core(self)._get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        """``nbytes`` arrived in the buffer: decrypt and pass them on."""
        _core(self)._buffer_updated(nbytes)

    def eof_received(self):
        """The peer closed its side of the socket."""
        return _core(self)._eof_received_from_transport()

    def pause_writing(self):
        """The socket transport's buffer is full."""
        _core(self)._pause_writing()

    def resume_writing(self):
        """The socket transport's buffer drained."""
        _core(self)._resume_writing()


class TLSTransport(transports._FlowControlMixin, transports.Transport):
    """The transport an application protocol gets over TLS: an ``asyncio.Transport`` with asyncio's
    TLS semantics (``close()`` sends close_notify once the buffered data is out, no ``write_eof``,
    extra info ``sslcontext``, ``ssl_object``, ``peercert``, ``cipher``, ``compression`` and the
    socket's own), made by the loop; not instantiated directly. A ``_FlowControlMixin``, as asyncio's
    (its sendfile fallback requires one), with flow control of its own."""

    __slots__ = ('_core', '__dict__', '__weakref__')

    # What asyncio's BaseEventLoop checks before start_tls() and sendfile().
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, *args, **kwargs):
        raise TypeError("TLSTransport is made by the loop: use ssl= (create_connection, create_server, "
                        "...) or loop.start_tls()")

    def get_extra_info(self, name, default=None):
        """TLS details (see the class) or the socket transport's extra info."""
        return _core(self)._get_extra_info(name, default)

    def set_protocol(self, protocol):
        """Hand the decrypted stream to another protocol."""
        _core(self)._set_app_protocol(protocol)

    def get_protocol(self):
        """The protocol receiving the decrypted data."""
        return _core(self)._app_protocol

    def is_closing(self):
        """True once close() or abort() was called, or the connection was lost."""
        return _core(self)._app_closed

    def close(self):
        """Send what is buffered, then close_notify, then close the socket; the protocol's
        connection_lost(None) follows."""
        cdef TLSCore core = _core(self)
        if not core._app_closed:
            core._app_closed = True
            core._start_shutdown()
        else:
            core._app_released = True

    def __del__(self, _warn=warnings.warn):
        core = getattr(self, '_core', None)
        if isinstance(core, TLSCore) and not (<TLSCore>core)._app_closed:
            (<TLSCore>core)._app_closed = True
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    def is_reading(self):
        """True unless the application paused reading."""
        return not _core(self)._app_reading_paused

    def pause_reading(self):
        """Stop calling the protocol's data_received() until resume_reading()."""
        _core(self)._pause_reading()

    def resume_reading(self):
        """Resume reading after pause_reading()."""
        _core(self)._resume_reading()

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow control marks of the data not yet sent (default 512 KiB, or 4 x low; low
        defaults to high / 4)."""
        cdef TLSCore core = _core(self)
        core._set_write_buffer_limits(high, low)
        core._control_app_writing()

    def get_write_buffer_limits(self):
        """``(low, high)``."""
        cdef TLSCore core = _core(self)
        return (core._out_low, core._out_high)

    def get_write_buffer_size(self):
        """Bytes written and not yet handed to the socket transport (plaintext and encrypted)."""
        return _core(self)._write_buffer_size()

    def set_read_buffer_limits(self, high=None, low=None):
        """Set the marks at which reading from the socket pauses and resumes (bytes received and
        not yet decrypted)."""
        cdef TLSCore core = _core(self)
        core._set_read_buffer_limits(high, low)
        core._control_ssl_reading()

    def get_read_buffer_limits(self):
        """``(low, high)``."""
        cdef TLSCore core = _core(self)
        return (core._in_low, core._in_high)

    def get_read_buffer_size(self):
        """Bytes received and not yet decrypted."""
        return _core(self)._incoming.pending

    @property
    def _protocol_paused(self):
        # Read by asyncio's sendfile fallback.
        return _core(self)._app_writing_paused

    def write(self, data):
        """Encrypt and send ``data`` (bytes-like)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if data:
            _core(self)._write_appdata((data,))

    def writelines(self, list_of_data):
        """Write each bytes-like item of ``list_of_data``."""
        _core(self)._write_appdata(list_of_data)

    def write_eof(self):
        """Not supported over TLS (as asyncio's): raises NotImplementedError."""
        raise NotImplementedError

    def can_write_eof(self):
        """False: TLS has no half-close here."""
        return False

    def abort(self):
        """Close at once, without close_notify, dropping buffered data; connection_lost(None)
        follows."""
        self._force_close(None)

    def _force_close(self, exc):
        cdef TLSCore core = _core(self)
        core._app_closed = True
        if not core._app_released:
            core._abort(exc)

    def __repr__(self):
        core = getattr(self, '_core', None)
        state = 'closed' if not isinstance(core, TLSCore) or (<TLSCore>core)._app_closed else 'open'
        return f'<{type(self).__name__} {state}>'
