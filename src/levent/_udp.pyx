# cython: language_level=3
"""Datagram transports of levent's asyncio loop (:class:`DatagramTransport`): UDP, and UNIX datagram
sockets passed with ``sock=``.

As the stream transports of ``levent._transport``: a native core on two raw libevent events of the
loop's EventBase. On readable it recvfrom()s into a buffer shared by all transports (the GIL is held
from recvfrom() to the bytes copy) and calls ``datagram_received()`` directly, several datagrams per
event; sendto() sends at once when nothing is queued (send() on a connected socket, sendto() with the
last destination's sockaddr cached otherwise) and queues a copy when the socket would block, the write
event registered only while something is queued.

Semantics follow asyncio's ``_SelectorDatagramTransport`` of the running Python (3.9-3.13): OSErrors
of recvfrom()/sendto() (an ICMP "port unreachable" on a connected socket comes back as
ConnectionRefusedError) go to the protocol's ``error_received()`` and the transport goes on; an empty
datagram is sent on 3.13+ and ignored before; the write buffer size counts 8 bytes of header per
queued datagram on 3.13+.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EBADF, EINTR, errno
from libc.string cimport memcpy

from libevent_pxd.util cimport sockaddr, sockaddr_storage, socklen_t
from levent._core cimport EventBase, EventPair
from levent._slots cimport checked_core, core_or_none
from levent._sockaddr cimport sockaddr_from, sockaddr_to
from levent._sysio cimport MSG_DONTWAIT, MSG_NOSIGNAL, c_recvfrom, c_send, c_sendto

import collections
import os
import socket
import sys
import warnings
from asyncio import constants, futures, transports, trsock
from asyncio.log import logger


cdef enum:
    READ_SIZE = 262144      # asyncio's max_size: what one recvfrom() may take
    # Datagrams read per readable event at most (libuv reads 32): fewer polls under load, and other
    # callbacks still get their turn.
    READS_PER_EVENT = 32

# The read buffer of every datagram transport; the GIL is held from recvfrom() to the bytes copy.
cdef char _read_buf[READ_SIZE]
cdef sockaddr_storage _read_addr

cdef int _SEND_FLAGS = MSG_DONTWAIT | MSG_NOSIGNAL
cdef Py_ssize_t _LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
# 3.13 sends empty datagrams (before: ignored) and counts a header per queued datagram.
cdef bint _SEND_EMPTY = sys.version_info >= (3, 13)
cdef Py_ssize_t _HEADER_SIZE = 8 if sys.version_info >= (3, 13) else 0
cdef int _AF_INET = socket.AF_INET


cdef inline bint _would_block(int err) noexcept nogil:
    return err == EAGAIN or err == EINTR


cdef object _os_error(int err):
    return OSError(err, os.strerror(err))


@cython.no_gc_clear     # EventPair's __dealloc__ needs _base alive to delete the events
@cython.final
cdef class DatagramCore(EventPair):
    """The native half of a :class:`DatagramTransport`; not used on its own."""

    cdef object _loop
    cdef object _transport
    cdef object _sock           # None once connection_lost() ran (the socket is closed then)
    cdef int _family
    cdef object _protocol
    cdef object _datagram_received
    cdef object _address        # the remote address given at creation, or None
    cdef bint _connected        # the socket has a peer: send(), not sendto()
    cdef bint _paused
    cdef bint _closing
    cdef bint _lost_called
    cdef Py_ssize_t _conn_lost
    # Queued (bytes, address) pairs, and their size as asyncio counts it.
    cdef object _queue
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef bint _protocol_paused
    # The sockaddr of the last destination address: replies usually go to the same peer.
    cdef object _cached_addr
    cdef sockaddr_storage _cached_sa
    cdef socklen_t _cached_len

    def __cinit__(self):
        self._queue = collections.deque()
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024

    cdef int _setup(self, loop, EventBase base, transport, sock, protocol, address,
                    bint connected) except -1:
        base._ensure_open()
        self._fd = sock.fileno()
        if self._fd < 0:
            raise ValueError(f"the socket {sock!r} is closed")
        base._check_watchable(self._fd)
        self._assign(base, self._fd)
        self._loop = loop
        self._transport = transport
        self._sock = sock
        self._family = sock.family
        self._address = address
        self._connected = connected
        self._set_protocol(protocol)
        return 0

    cdef int _set_protocol(self, protocol) except -1:
        self._protocol = protocol
        self._datagram_received = protocol.datagram_received
        return 0

    # -- reading ------------------------------------------------------------------------------------

    cdef int _read_ready(self) except -1:
        cdef ssize_t n
        cdef socklen_t addrlen
        cdef int err, i
        for i in range(READS_PER_EVENT):
            # pause_reading(), close() or a fatal error in a protocol callback end the batch.
            if self._conn_lost or not self._reading:
                return 0
            addrlen = sizeof(_read_addr)
            n = c_recvfrom(self._fd, _read_buf, READ_SIZE, MSG_DONTWAIT, <sockaddr *>&_read_addr, &addrlen)
            if n < 0:
                err = errno
                if _would_block(err):
                    return 0
                self._error_received(_os_error(err))
                continue
            data = PyBytes_FromStringAndSize(_read_buf, n)
            addr = sockaddr_to(<sockaddr *>&_read_addr, addrlen)
            try:
                self._datagram_received(data, addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # As asyncio: reported, and the transport goes on.
                self._report(exc, 'Exception in protocol.datagram_received()')
        return 0

    cdef int _error_received(self, exc) except -1:
        try:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as error:
            self._report(error, 'Exception in protocol.error_received()')
        return 0

    cdef int _report(self, exc, str message) except -1:
        self._loop.call_exception_handler({
            'message': message,
            'exception': exc,
            'transport': self._transport,
            'protocol': self._protocol,
        })
        return 0

    cdef int _pause_reading(self) except -1:
        if self._closing or self._paused:
            return 0
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self._transport)
        return 0

    cdef int _resume_reading(self) except -1:
        if self._closing or not self._paused:
            return 0
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self._transport)
        return 0

    # -- writing ------------------------------------------------------------------------------------

    cdef int _sendto(self, data, addr) except -1:
        cdef Py_buffer view
        cdef bint is_bytes = PyBytes_CheckExact(data)
        cdef Py_ssize_t size
        cdef bint ok
        if not is_bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, not {type(data).__name__!r}')
        size = PyBytes_GET_SIZE(data) if is_bytes else memoryview(data).nbytes
        if size == 0 and not _SEND_EMPTY:
            return 0
        if self._address:
            if addr is not None and addr != self._address:
                raise ValueError(f'Invalid address: must be None or {self._address}')
            addr = self._address
        if self._conn_lost:
            # asyncio would still try an unconnected socket's send here, and fail once the socket is
            # closed: dropped (and counted) whatever the address.
            if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            return 0
        if not self._queue:
            # Nothing queued: send now, and only queue (and watch) if the socket would block.
            if is_bytes:
                ok = self._try_send(PyBytes_AS_STRING(data), size, addr)
            else:
                PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
                try:
                    ok = self._try_send(<const char *>view.buf, view.len, addr)
                finally:
                    PyBuffer_Release(&view)
            if ok:
                return 0
            self._start_writing()
        # Queued as an immutable copy, as asyncio does.
        if not is_bytes:
            data = bytes(data)
        self._queue.append((data, addr))
        self._buffer_size += size + _HEADER_SIZE
        self._maybe_pause_protocol()
        return 0

    cdef int _try_send(self, const char *ptr, Py_ssize_t size, addr) except -1:
        # One datagram, as asyncio's sendto() tries it: 1 when done with it (sent, or its OSError
        # handed to error_received(), whose own exception reaches the caller), 0 if it would block.
        cdef ssize_t n
        cdef int err
        if self._connected:
            n = c_send(self._fd, ptr, size, _SEND_FLAGS)
        elif addr is not None and (addr is self._cached_addr or addr == self._cached_addr
                                   or self._cache_address(addr)):
            n = c_sendto(self._fd, ptr, size, _SEND_FLAGS, <sockaddr *>&self._cached_sa, self._cached_len)
        else:
            # Not an address levent parses itself: the socket module sends it, and raises exactly
            # what asyncio's transport would get.
            try:
                self._sock.sendto(PyBytes_FromStringAndSize(ptr, size), addr)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:
                self._protocol.error_received(exc)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal write error on datagram transport')
            return 1
        if n >= 0:
            return 1
        err = errno
        if _would_block(err):
            return 0
        self._protocol.error_received(_os_error(err))
        return 1

    cdef bint _cache_address(self, addr) except -1:
        cdef sockaddr_storage sa
        cdef socklen_t length
        if addr is None or (self._family == _AF_INET and not (type(addr) is tuple and len(addr) == 2)):
            return False    # the socket module's own error for a wrong AF_INET address
        try:
            length = sockaddr_from(addr, &sa, self._family)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            return False
        if (<sockaddr *>&sa).sa_family != self._family:
            return False
        memcpy(&self._cached_sa, &sa, length)
        self._cached_len = length
        self._cached_addr = addr
        return True

    cdef int _write_ready(self) except -1:
        cdef Py_ssize_t size
        cdef bytes data
        if self._conn_lost:
            return 0
        while self._queue:
            data, addr = self._queue.popleft()
            size = PyBytes_GET_SIZE(data)
            self._buffer_size -= size + _HEADER_SIZE
            try:
                sent = self._try_send(PyBytes_AS_STRING(data), size, addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # error_received() raised: reported, and the rest waits for the next event, as
                # asyncio's handle would do.
                self._report(exc, 'Exception in protocol.error_received()')
                return 0
            if self._conn_lost:
                return 0    # a fatal error closed the transport
            if not sent:
                self._queue.appendleft((data, addr))
                self._buffer_size += size + _HEADER_SIZE
                break
        self._maybe_resume_protocol()     # may queue more
        if not self._queue:
            self._stop_writing()
            if self._closing:
                self._schedule_connection_lost(None)
        return 0

    # -- flow control -------------------------------------------------------------------------------

    cdef int _set_write_buffer_limits(self, high, low) except -1:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()
        return 0

    cdef int _maybe_pause_protocol(self) except -1:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return 0
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, 'protocol.pause_writing() failed')
        return 0

    cdef int _maybe_resume_protocol(self) except -1:
        if not self._protocol_paused or self._buffer_size > self._low_water:
            return 0
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, 'protocol.resume_writing() failed')
        return 0

    # -- closing ------------------------------------------------------------------------------------

    cdef int _close(self) except -1:
        if self._closing:
            return 0
        self._closing = True
        self._stop_reading()
        if not self._queue:
            self._stop_writing()
            self._schedule_connection_lost(None)
        return 0

    cdef int _force_close(self, exc) except -1:
        if self._conn_lost:
            return 0
        self._queue.clear()
        self._buffer_size = 0
        self._stop_writing()
        self._closing = True
        self._stop_reading()
        self._schedule_connection_lost(exc)
        return 0

    cdef int _fatal_error(self, exc, str message) except -1:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self._transport, message, exc_info=True)
        else:
            self._report(exc, message)
        self._force_close(exc)
        return 0

    cdef int _schedule_connection_lost(self, exc) except -1:
        self._conn_lost += 1
        if not self._lost_called:
            self._lost_called = True
            self._loop.call_soon(self._call_connection_lost, exc)
        return 0

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._stop_writing()
            self._sock.close()
            self._sock = None
            self._protocol = self._datagram_received = None

    def _connection_made(self):
        # Scheduled after protocol.connection_made(): reading starts then, unless paused meanwhile.
        if not self._paused and not self._closing:
            self._start_reading()


cdef inline DatagramCore _core(transport):
    return <DatagramCore>checked_core(transport, DatagramCore)


cdef inline DatagramCore _core_or_none(transport):
    return <DatagramCore>core_or_none(transport, DatagramCore)


class DatagramTransport(transports.DatagramTransport):
    """A datagram (UDP or UNIX datagram) socket transport of levent's asyncio loop: an
    ``asyncio.DatagramTransport`` with the semantics of asyncio's (flow control with 64 KiB / 16 KiB
    default limits, ``error_received()`` for OSErrors, extra info ``socket``, ``sockname``,
    ``peername``), made by ``loop.create_datagram_endpoint()``; not instantiated directly."""

    __slots__ = ('_core', '__weakref__')

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        cdef DatagramCore core = DatagramCore.__new__(DatagramCore)
        super().__init__(extra)
        self._core = core
        self._extra['socket'] = trsock.TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except OSError:
                self._extra['peername'] = None
        # asyncio sends with send() when the socket has a (non-empty) peer name.
        core._setup(loop, loop.base, self, sock, protocol, address, bool(self._extra['peername']))
        loop._transports[core._fd] = self
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(core._connection_made)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def sendto(self, data, addr=None):
        """Send datagram ``data`` (bytes-like) to ``addr``, or to the remote address the endpoint was
        made with (``addr`` must then be None or that address). Sent at once if possible, else queued
        (a copy) and sent when the socket is writable; an OSError goes to the protocol's
        error_received()."""
        _core(self)._sendto(data, addr)

    def abort(self):
        """Close at once, dropping queued datagrams; connection_lost(None) follows from the loop."""
        _core(self)._force_close(None)

    def close(self):
        """Stop receiving, send what is queued, then close the socket; connection_lost(None) is
        called (once) from the loop afterwards."""
        _core(self)._close()

    def is_closing(self):
        """True once close() or abort() was called."""
        return _core(self)._closing

    def pause_reading(self):
        """Stop calling the protocol's datagram_received() until resume_reading()."""
        _core(self)._pause_reading()

    def resume_reading(self):
        """Resume receiving after pause_reading()."""
        _core(self)._resume_reading()

    def is_reading(self):
        """True unless receiving is paused or the transport is closing."""
        cdef DatagramCore core = _core(self)
        return not core._paused and not core._closing

    def get_write_buffer_size(self):
        """Bytes of the queued datagrams (plus 8 per datagram on Python 3.13+, as asyncio counts)."""
        return _core(self)._buffer_size

    def get_write_buffer_limits(self):
        """``(low, high)``: the flow control marks."""
        cdef DatagramCore core = _core(self)
        return (core._low_water, core._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow control marks: pause_writing() above ``high`` (default 64 KiB, or 4 x low),
        resume_writing() at or below ``low`` (default high / 4)."""
        _core(self)._set_write_buffer_limits(high, low)

    def get_protocol(self):
        """The protocol receiving the datagrams."""
        return _core(self)._protocol

    def set_protocol(self, protocol):
        """Hand the endpoint to another DatagramProtocol."""
        _core(self)._set_protocol(protocol)

    def __repr__(self):
        cdef DatagramCore core = _core_or_none(self)
        if core is None:
            return f'<{type(self).__name__} uninitialized>'
        info = [type(self).__name__]
        if core._sock is None:
            info.append('closed')
        elif core._closing:
            info.append('closing')
        info.append(f'fd={core._fd}')
        if core._sock is not None and core._assigned:
            info.append(f"read={'polling' if core._reading else 'idle'}")
            info.append(f"write=<{'polling' if core._writing else 'idle'}, bufsize={core._buffer_size}>")
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=warnings.warn):
        cdef DatagramCore core = _core_or_none(self)
        if core is not None and core._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._stop_reading()
            core._stop_writing()
            core._sock.close()
            core._sock = None
