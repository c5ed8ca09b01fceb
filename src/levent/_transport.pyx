# cython: language_level=3
"""Stream transports of levent's asyncio loop: TCP and UNIX sockets (:class:`SocketTransport`).

The work happens in :class:`TransportCore`, a native object on two raw libevent events of the loop's
EventBase (no bufferevent: libevent 2.1 reads 4 KiB per evbuffer_read). On readable it recv()s into a
buffer shared by all transports (the GIL is held from recv() to the bytes copy, so one static buffer
serves every loop and thread) and calls the protocol directly; write() sends at once when nothing is
queued and queues the rest without copying immutable data, the write event registered only while
something is queued.

The object the protocol sees is a :class:`SocketTransport`, a real ``asyncio.Transport`` (a cdef class
cannot inherit it: its ``__slots__`` layout conflicts), whose methods are compiled forwarders to the
core. Semantics follow asyncio's ``_SelectorSocketTransport`` (3.9-3.13), including its error messages.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.weakref cimport PyWeakref_GetObject
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy, memset
from cpython.object cimport PyObject
from posix.uio cimport iovec

from levent._core cimport EventBase, EventPair
from levent._slots cimport checked_core, core_or_none
from levent._sysio cimport (FIONREAD, MSG_DONTWAIT, MSG_NOSIGNAL, SHUT_WR, c_ioctl_int, c_recv, c_send, c_sendmsg,
                           c_shutdown, msghdr)

import asyncio
import os
import socket
import sys
import warnings
from asyncio import base_events, constants, futures, protocols, transports, trsock
from asyncio.log import logger




cdef extern from "Python.h":
    # A C function as a method of a Python class: the form built-in types' methods have.
    ctypedef PyObject *(*PyCFunction)(PyObject *, PyObject *)
    ctypedef struct PyMethodDef:
        const char *ml_name
        PyCFunction ml_meth
        int ml_flags
        const char *ml_doc
    enum: METH_FASTCALL, METH_KEYWORDS
    object PyDescr_NewMethod(type cls, PyMethodDef *method)

cdef extern from "Python.h":
    # Owned references as plain pointers: _PyBytes_Resize() replaces the object it is given.
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o)
    int _bytes_resize "_PyBytes_Resize"(PyObject **o, Py_ssize_t n) except -1
    void Py_SET_SIZE(object o, Py_ssize_t size)


cdef enum:
    READ_SIZE = 262144      # what asyncio's transports read per recv() (max_size)
    MAX_IOV = 64            # queued buffers handed to one sendmsg()
    # After a read of DIRECT_MIN bytes or more, the next recv() goes straight into a bytes object,
    # the one an earlier read left (see levent_spare_bytes) or a new one of DIRECT_SIZE bytes,
    # shrunk in place to what came: no copy of the data (below DIRECT_MIN the copy from the static
    # buffer costs less than a recv() into a possibly oversized object). DIRECT_SIZE keeps the object under
    # glibc's default mmap threshold (128 KiB): heap memory, shrunk without a syscall.
    DIRECT_MIN = 8192
    DIRECT_SIZE = 126976
    # A stream transport feeds its StreamReader natively (_read_stream): after a read of
    # STREAM_DIRECT_MIN bytes or more, the next recv() goes into the reader's bytearray itself;
    # smaller ones are copied there from the static buffer (one ioctl() costs more than that copy).
    STREAM_DIRECT_MIN = 32768

# The read buffer of every transport: data_received() gets a bytes copy, and the GIL is held from
# recv() to that copy, so no two callbacks use it at once.
cdef char _read_buf[READ_SIZE]

cdef extern from *:
    """
    /* The bytes object of the last read, kept when data_received() did not keep it: the next read
       reuses it when it fits, with no allocation (a 1 KiB bytes object costs glibc's malloc and free
       some 480 instructions, a 16 KiB one read in place some 800 with the shrinking realloc). Its
       allocation may exceed its data by a quarter at most, so a protocol that keeps what it gets
       holds at most 25% more than the data. Only a reference count of 1 lets an object in: nothing
       else can see it, and it is set up as a new one before it goes out again. One for all
       transports, used with the GIL held (free-threaded builds do without). */
    #ifndef Py_GIL_DISABLED
    static PyObject *levent_spare_bytes = NULL;
    static Py_ssize_t levent_spare_size = 0;   /* its allocation: ob_size may be less */
    #endif

    /* b's data is now its first n bytes (n no more than its allocation), as in a new object. */
    static void levent_bytes_set_size(PyObject *b, Py_ssize_t n) {
        Py_SET_SIZE(b, n);
        PyBytes_AS_STRING(b)[n] = 0;
    #if defined(__GNUC__)
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
        ((PyBytesObject *)b)->ob_shash = -1;    /* the hash of what it held before */
    #if defined(__GNUC__)
    #pragma GCC diagnostic pop
    #endif
    }

    static int levent_spare_fits(Py_ssize_t size, Py_ssize_t n) {
        return n <= size && size - n <= n / 4;
    }

    #ifndef Py_GIL_DISABLED
    /* The kept object, now the caller's reference; *size receives its allocation. */
    static PyObject *levent_take_spare(Py_ssize_t *size) {
        PyObject *b = levent_spare_bytes;
        levent_spare_bytes = NULL;
        *size = levent_spare_size;
        return b;
    }
    #endif

    /* A new reference to a bytes object holding buf[:n], n > 0; *size receives its allocation. */
    static PyObject *levent_read_bytes(const char *buf, Py_ssize_t n, Py_ssize_t *size) {
    #ifndef Py_GIL_DISABLED
        if (levent_spare_bytes != NULL && levent_spare_fits(levent_spare_size, n)) {
            PyObject *b = levent_take_spare(size);
            memcpy(PyBytes_AS_STRING(b), buf, (size_t)n);
            levent_bytes_set_size(b, n);
            return b;
        }
    #endif
        *size = n;
        return PyBytes_FromStringAndSize(buf, n);
    }

    /* A new reference to a bytes object to recv() into: a kept one of at least min_size bytes,
       else a new one of new_size; *size receives its allocation, which is also its ob_size until
       set (so that _PyBytes_Resize(), which does nothing when ob_size is already the size asked
       for, resizes the allocation). */
    static PyObject *levent_recv_bytes(Py_ssize_t min_size, Py_ssize_t new_size, Py_ssize_t *size) {
    #ifndef Py_GIL_DISABLED
        if (levent_spare_bytes != NULL && levent_spare_size >= min_size) {
            PyObject *b = levent_take_spare(size);
            Py_SET_SIZE(b, *size);
            return b;
        }
    #endif
        *size = new_size;
        return PyBytes_FromStringAndSize(NULL, new_size);
    }

    /* Drop the reference levent_read_bytes() or levent_recv_bytes() gave, keeping the object if
       nothing else holds it. (Objects of size 1 are interpreter-wide singletons: never kept.) */
    static void levent_read_bytes_done(PyObject *b, Py_ssize_t size) {
    #ifndef Py_GIL_DISABLED
        if (Py_REFCNT(b) == 1 && size > 1) {
            PyObject *old = levent_spare_bytes;
            levent_spare_bytes = b;
            levent_spare_size = size;
            Py_XDECREF(old);
            return;
        }
    #endif
        Py_DECREF(b);
    }
    """
    PyObject *_read_bytes "levent_read_bytes"(const char *buf, Py_ssize_t n, Py_ssize_t *size) except NULL
    PyObject *_recv_bytes "levent_recv_bytes"(Py_ssize_t min_size, Py_ssize_t new_size, Py_ssize_t *size) except NULL
    void _read_bytes_done "levent_read_bytes_done"(PyObject *b, Py_ssize_t size) noexcept
    void _bytes_set_size "levent_bytes_set_size"(PyObject *b, Py_ssize_t n) noexcept
    bint _spare_fits "levent_spare_fits"(Py_ssize_t size, Py_ssize_t n) noexcept

cdef int _SEND_FLAGS = MSG_DONTWAIT | MSG_NOSIGNAL
# As asyncio: after this many writes to a lost connection, each further write() logs a warning.
cdef Py_ssize_t _LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES

# asyncio streams (open_connection, start_server): their protocol's data_received() is two Python
# calls that append the bytes to the StreamReader's bytearray and wake its reader. For exactly these
# classes, unpatched, the transport does the same natively (no bytes object, no Python frames; large
# reads land in the bytearray with no copy of ours at all). Only on the versions whose attributes it
# was checked against.
cdef bint _STREAMS_NATIVE = sys.version_info < (3, 14)
cdef object _StreamReaderProtocol = asyncio.StreamReaderProtocol
cdef object _StreamReader = asyncio.StreamReader
cdef object _stream_data_received = asyncio.StreamReaderProtocol.data_received
cdef object _stream_feed_data = asyncio.StreamReader.feed_data
cdef object _Future = asyncio.Future
cdef object _InvalidStateError = asyncio.InvalidStateError
cdef bint _SERVER_ATTACH_TAKES_TRANSPORT = sys.version_info >= (3, 13)


cdef inline void _truncate(bytearray buf, Py_ssize_t size) noexcept:
    # Shorten a bytearray keeping its block, as PyByteArray_Resize() does for a small cut, but never
    # failing (a larger cut reallocates, which could raise after the bytes were written).
    Py_SET_SIZE(buf, size)
    PyByteArray_AS_STRING(buf)[size] = 0


cdef inline bint _would_block(int err) noexcept nogil:
    # EWOULDBLOCK is EAGAIN on Linux and macOS.
    return err == EAGAIN or err == EINTR


cdef object _os_error(int err):
    # OSError(errno, ...) builds the matching subclass (ConnectionResetError, BrokenPipeError...).
    return OSError(err, os.strerror(err))


@cython.no_gc_clear     # EventPair's __dealloc__ needs _base alive to delete the events
@cython.final
cdef class TransportCore(EventPair):
    """The native half of a :class:`SocketTransport`; not used on its own."""

    cdef object _loop
    cdef object _transport      # the SocketTransport the protocol sees (it holds us in a slot)
    cdef object _sock           # None once connection_lost() ran (the socket is closed then)
    cdef object _server
    cdef object _protocol
    # The protocol's methods called per read, looked up once per set_protocol() (as uvloop does).
    cdef object _data_received
    cdef object _get_buffer
    cdef object _buffer_updated
    cdef bint _buffered
    cdef bint _stream           # the protocol is asyncio's StreamReaderProtocol: see _read_stream()
    cdef bint _paused           # pause_reading()
    cdef bint _closing
    cdef bint _eof              # write_eof() was called
    cdef bint _lost_called      # connection_lost() ran, or is about to
    cdef Py_ssize_t _conn_lost
    # The write queue: bytes and read-only byte memoryviews, from _queue[_qhead]; _qoffset bytes of
    # the first one are already sent. _buffer_size counts the unsent bytes.
    cdef list _queue
    cdef Py_ssize_t _qhead
    cdef Py_ssize_t _qoffset
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef bint _protocol_paused
    cdef Py_ssize_t _last_read  # bytes the last recv() got: picks the read strategy (DIRECT_MIN)
    # While loop.sendfile() runs: the future done once the queue is empty (writes are refused until
    # it is reset), and the native sendfile operation on the socket, stopped before the socket closes.
    cdef object _empty_waiter
    cdef object _sendfile_op

    def __cinit__(self):
        self._queue = []
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024

    cdef int _setup(self, loop, EventBase base, transport, sock, protocol, server) except -1:
        base._ensure_open()
        self._fd = sock.fileno()
        if self._fd < 0:
            raise ValueError(f"the socket {sock!r} is closed")
        base._check_watchable(self._fd)
        self._assign(base, self._fd)
        self._loop = loop
        self._transport = transport
        self._sock = sock
        self._server = server
        self._set_protocol(protocol)
        return 0

    # -- reading ------------------------------------------------------------------------------------

    cdef int _read_ready(self) except -1:
        cdef ssize_t n
        cdef int err
        cdef PyObject *data
        cdef Py_ssize_t size
        if self._conn_lost:
            return 0
        if self._buffered:
            return self._read_into_buffer()
        if self._stream:
            return self._read_stream()
        if self._last_read >= DIRECT_MIN:
            return self._read_direct()
        n = c_recv(self._fd, _read_buf, READ_SIZE, MSG_DONTWAIT)
        if n > 0:
            self._last_read = n
            data = _read_bytes(_read_buf, n, &size)
            try:
                self._deliver(<object>data)
            finally:
                _read_bytes_done(data, size)
        elif n == 0:
            self._read_eof()
        else:
            err = errno
            if not _would_block(err):
                self._fatal_error(_os_error(err), 'Fatal read error on socket transport')
        return 0

    cdef int _read_direct(self) except -1:
        # recv() into the bytes object data_received() gets: the one kept from an earlier read if it
        # has room for a quarter more than the last read, else a new one of DIRECT_SIZE. A full one
        # may have more behind it: that comes through the static buffer, so one event still reads up
        # to READ_SIZE, as asyncio does. (An object only as large as the last read would be filled by
        # a read of the same size, and that second recv() would find nothing, at every read.)
        cdef Py_ssize_t size
        cdef PyObject *raw = _recv_bytes(self._last_read + self._last_read // 4, DIRECT_SIZE, &size)
        cdef ssize_t n, more
        cdef int err
        n = c_recv(self._fd, _bytes_data(raw), size, MSG_DONTWAIT)
        err = errno
        if n <= 0:
            _read_bytes_done(raw, size)
            if n == 0:
                self._last_read = 0
                self._read_eof()
            elif not _would_block(err):
                self._fatal_error(_os_error(err), 'Fatal read error on socket transport')
            return 0
        if n == size:
            more = c_recv(self._fd, _read_buf, READ_SIZE - n, MSG_DONTWAIT)
            if more > 0:    # an error or EOF shows again at the next event
                if _bytes_resize(&raw, n + more) < 0:
                    return -1   # raw is freed and NULL
                memcpy(_bytes_data(raw) + n, _read_buf, more)
                n += more
                size = n
        elif not _spare_fits(size, n):
            # Shrunk (in place, for glibc) to what came plus the slack reuse allows.
            size = n + n // 4
            if _bytes_resize(&raw, size) < 0:
                return -1
        _bytes_set_size(raw, n)
        self._last_read = n
        try:
            self._deliver(<object>raw)
        finally:
            _read_bytes_done(raw, size)
        return 0

    cdef int _read_stream(self) except -1:
        # StreamReaderProtocol.data_received() -> StreamReader.feed_data(), natively (see _stream).
        cdef ssize_t n = -1
        cdef Py_ssize_t old, want
        cdef int err = 0, avail = 0
        cdef bytearray buf
        wr = self._protocol._stream_reader_wr
        reader = None if wr is None else <object>PyWeakref_GetObject(wr)
        if (type(reader) is not _StreamReader or reader._eof
                or not PyByteArray_CheckExact(reader._buffer)):
            # No reader (data_received() drops the data), or one feed_data() must see.
            self._stream = False
            return self._read_ready()
        buf = reader._buffer
        old = PyByteArray_GET_SIZE(buf)
        try:
            if (self._last_read >= STREAM_DIRECT_MIN and c_ioctl_int(self._fd, FIONREAD, &avail) == 0
                    and avail > 0):
                # Into the reader's bytearray, grown by exactly what is queued, as extend() would grow
                # it: growing it by READ_SIZE instead changed glibc's reuse of the block, and page
                # faults at every read cost more than the copy saved.
                want = avail if avail < READ_SIZE else READ_SIZE
                # (raises BufferError while the bytearray is exported, as feed_data's extend() does)
                PyByteArray_Resize(buf, old + want)
                n = c_recv(self._fd, PyByteArray_AS_STRING(buf) + old, want, MSG_DONTWAIT)
                err = errno
                if n != want:
                    _truncate(buf, old + (n if n > 0 else 0))
            else:
                n = c_recv(self._fd, _read_buf, READ_SIZE, MSG_DONTWAIT)
                err = errno
                if n > 0:
                    PyByteArray_Resize(buf, old + n)
                    memcpy(PyByteArray_AS_STRING(buf) + old, _read_buf, n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
            return 0
        if n == 0:
            self._last_read = 0
            return self._read_eof()
        if n < 0:
            if not _would_block(err):
                self._fatal_error(_os_error(err), 'Fatal read error on socket transport')
            return 0
        self._last_read = n
        try:
            waiter = reader._waiter
            if waiter is not None:
                reader._waiter = None
                if type(waiter) is _Future:
                    # asyncio asks cancelled() first; the one set_result() a cancelled future
                    # refuses tells the same with one method call instead of two.
                    try:
                        waiter.set_result(None)
                    except _InvalidStateError:
                        if not waiter.cancelled():
                            raise
                elif not waiter.cancelled():
                    waiter.set_result(None)
            limit = reader._limit
            if type(limit) is int:
                # The size first, with no side effect to reorder: one attribute read per feed
                # while the reader keeps up, instead of three.
                if (PyByteArray_GET_SIZE(buf) > 2 * limit and reader._transport is not None
                        and not reader._paused):
                    self._pause_stream_reader(reader)
            elif (reader._transport is not None and not reader._paused
                    and PyByteArray_GET_SIZE(buf) > 2 * limit):
                self._pause_stream_reader(reader)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
        return 0

    cdef int _pause_stream_reader(self, reader) except -1:
        # The end of StreamReader.feed_data(): its buffer is above twice its limit.
        try:
            reader._transport.pause_reading()
        except NotImplementedError:
            reader._transport = None
        else:
            reader._paused = True
        return 0

    cdef inline int _deliver(self, data) except -1:
        try:
            self._data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
        return 0

    cdef int _read_into_buffer(self) except -1:
        # asyncio.BufferedProtocol: the protocol's own buffer, no copy.
        cdef Py_buffer view
        cdef ssize_t n
        cdef int err
        try:
            buf = self._get_buffer(-1)
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            if view.len == 0:
                PyBuffer_Release(&view)
                raise RuntimeError('get_buffer() returned an empty buffer')
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
            return 0
        n = c_recv(self._fd, view.buf, view.len, MSG_DONTWAIT)
        err = errno
        PyBuffer_Release(&view)
        if n > 0:
            try:
                self._buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
        elif n == 0:
            self._read_eof()
        elif not _would_block(err):
            self._fatal_error(_os_error(err), 'Fatal read error on socket transport')
        return 0

    cdef int _read_eof(self) except -1:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self._transport)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return 0
        if keep_open:
            # Half-closed: no more reading, writing goes on until close().
            self._stop_reading()
        else:
            self._close()
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

    cdef int _write(self, data) except -1:
        cdef Py_buffer view
        cdef const char *ptr
        cdef Py_ssize_t size
        cdef ssize_t n = 0
        cdef int err
        cdef bint is_bytes = PyBytes_CheckExact(data)
        if is_bytes:
            ptr = PyBytes_AS_STRING(data)
            size = PyBytes_GET_SIZE(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            ptr = <const char *>view.buf
            size = view.len
        else:
            raise TypeError(f'data argument must be a bytes-like object, not {type(data).__name__!r}')
        try:
            if self._eof:
                raise RuntimeError('Cannot call write() after write_eof()')
            if self._empty_waiter is not None:
                raise RuntimeError('unable to write; sendfile is in progress')
            if size == 0:
                return 0
            if self._conn_lost:
                if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                    logger.warning('socket.send() raised exception.')
                self._conn_lost += 1
                return 0
            if self._buffer_size == 0:
                # Nothing queued: try to send now, and only queue (and watch) what is left.
                n = c_send(self._fd, ptr, size, _SEND_FLAGS)
                if n < 0:
                    err = errno
                    if not _would_block(err):
                        self._fatal_error(_os_error(err), 'Fatal write error on socket transport')
                        return 0
                    n = 0
                if n == size:
                    return 0
                self._start_writing()
            self._enqueue(data, is_bytes, ptr, size, n)
        finally:
            if not is_bytes:
                PyBuffer_Release(&view)
        self._maybe_pause_protocol()
        return 0

    cdef int _enqueue(self, data, bint is_bytes, const char *ptr, Py_ssize_t size, Py_ssize_t sent) except -1:
        # bytes (and the read-only memoryviews it is cut into) are queued without a copy; mutable data
        # is copied, as asyncio up to 3.11 did, so that the caller may reuse its buffer at once.
        if not is_bytes:
            if isinstance(data, memoryview) and (<memoryview>data).readonly and (<memoryview>data).c_contiguous:
                data = (<memoryview>data).cast('B')[sent:]
            else:
                data = PyBytes_FromStringAndSize(ptr + sent, size - sent)
            sent = 0
        if self._qhead == len(self._queue):
            self._qoffset = sent    # only the first queued item is ever partly sent
        self._queue.append(data)
        self._buffer_size += size - sent
        return 0

    cdef int _writelines(self, list_of_data) except -1:
        if self._eof:
            raise RuntimeError('Cannot call writelines() after write_eof()')
        if self._empty_waiter is not None:
            raise RuntimeError('unable to writelines; sendfile is in progress')
        if self._conn_lost:
            for data in list_of_data:
                self._write(data)       # counts and warns as write() does
            return 0
        cdef bint was_empty = self._buffer_size == 0
        for data in list_of_data:
            if PyBytes_CheckExact(data):
                if PyBytes_GET_SIZE(data):
                    self._enqueue(data, True, NULL, PyBytes_GET_SIZE(data), 0)
            elif isinstance(data, (bytearray, memoryview)):
                self._enqueue_buffer(data)
            else:
                raise TypeError(f'data argument must be a bytes-like object, not {type(data).__name__!r}')
        if was_empty and self._buffer_size:
            # One sendmsg() for all of them, as asyncio 3.12's writelines().
            self._flush()
            if self._buffer_size and not self._conn_lost:
                self._start_writing()
        self._maybe_pause_protocol()
        return 0

    cdef int _enqueue_buffer(self, data) except -1:
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len:
                self._enqueue(data, False, <const char *>view.buf, view.len, 0)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _write_ready(self) except -1:
        if self._conn_lost:
            return 0
        self._flush()
        if self._conn_lost:
            return 0
        self._maybe_resume_protocol()
        if self._buffer_size == 0:
            self._stop_writing()
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._closing:
                self._schedule_connection_lost(None)
            elif self._eof:
                self._shutdown_write()
        return 0

    cdef int _flush(self) except -1:
        # One sendmsg() of the queued buffers; a failed send is fatal to the transport.
        cdef iovec iov[MAX_IOV]
        cdef Py_buffer views[MAX_IOV]
        cdef int nviews = 0
        cdef int niov = 0
        cdef msghdr msg
        cdef ssize_t n
        cdef int err, i
        cdef Py_ssize_t end = len(self._queue)
        cdef Py_ssize_t idx = self._qhead
        cdef Py_ssize_t size
        cdef list queue = self._queue
        try:
            while idx < end and niov < MAX_IOV:
                item = queue[idx]
                if PyBytes_CheckExact(item):
                    iov[niov].iov_base = PyBytes_AS_STRING(item)
                    iov[niov].iov_len = PyBytes_GET_SIZE(item)
                else:
                    PyObject_GetBuffer(item, &views[nviews], PyBUF_SIMPLE)
                    iov[niov].iov_base = views[nviews].buf
                    iov[niov].iov_len = views[nviews].len
                    nviews += 1
                niov += 1
                idx += 1
            iov[0].iov_base = <char *>iov[0].iov_base + self._qoffset
            iov[0].iov_len -= self._qoffset
            memset(&msg, 0, sizeof(msg))
            msg.msg_iov = iov
            msg.msg_iovlen = niov
            n = c_sendmsg(self._fd, &msg, _SEND_FLAGS)
            err = errno
        finally:
            for i in range(nviews):
                PyBuffer_Release(&views[i])
        if n < 0:
            if _would_block(err):
                return 0
            self._clear_queue()
            self._stop_writing()
            self._fatal_error(_os_error(err), 'Fatal write error on socket transport')
            return 0
        self._buffer_size -= n
        n += self._qoffset
        idx = self._qhead
        while idx < end:
            item = queue[idx]
            size = PyBytes_GET_SIZE(item) if PyBytes_CheckExact(item) else len(item)
            if n < size:
                break
            n -= size
            queue[idx] = None
            idx += 1
        self._qoffset = n
        if idx == end:
            self._clear_queue()
        else:
            self._qhead = idx
            if idx >= 64 and idx * 2 >= end:
                del queue[:idx]
                self._qhead = 0
        return 0

    cdef int _clear_queue(self) except -1:
        del self._queue[:]
        self._qhead = 0
        self._qoffset = 0
        self._buffer_size = 0
        return 0

    cdef int _shutdown_write(self) except -1:
        if c_shutdown(self._fd, SHUT_WR) != 0:
            self._fatal_error(_os_error(errno), 'Fatal write error on socket transport')
        return 0

    cdef int _write_eof(self) except -1:
        if self._closing or self._eof:
            return 0
        self._eof = True
        if self._buffer_size == 0:
            self._shutdown_write()
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
            self._loop.call_exception_handler({
                'message': 'protocol.pause_writing() failed',
                'exception': exc,
                'transport': self._transport,
                'protocol': self._protocol,
            })
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
            self._loop.call_exception_handler({
                'message': 'protocol.resume_writing() failed',
                'exception': exc,
                'transport': self._transport,
                'protocol': self._protocol,
            })
        return 0

    # -- closing ------------------------------------------------------------------------------------

    cdef int _close(self) except -1:
        if self._closing:
            return 0
        self._closing = True
        self._stop_reading()
        if self._buffer_size == 0:
            self._stop_writing()
            self._schedule_connection_lost(None)
        return 0

    cdef int _force_close(self, exc) except -1:
        if self._conn_lost:
            return 0
        if self._buffer_size:
            self._clear_queue()
        self._stop_writing()
        self._closing = True
        self._stop_reading()
        self._schedule_connection_lost(exc)
        return 0

    cdef int _fatal_error(self, exc, str message) except -1:
        # As asyncio's _SelectorTransport._fatal_error: OSErrors (resets, broken pipes) are the peer's
        # doing and only logged in debug mode; anything else is a bug worth the exception handler.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self._transport, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self._transport,
                'protocol': self._protocol,
            })
        self._force_close(exc)
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(exc)
        return 0

    cdef int _schedule_connection_lost(self, exc) except -1:
        self._conn_lost += 1
        if not self._lost_called:
            self._lost_called = True
            self._loop.call_soon(self._call_connection_lost, exc)
        return 0

    def _call_connection_lost(self, exc):
        # Scheduled once (_lost_called); closes the socket whatever the protocol does.
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._stop_writing()
            if self._sendfile_op is not None:
                # Its event watches the socket: gone before the fd is closed (and maybe reused).
                self._sendfile_op.abort()
                self._sendfile_op = None
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
            self._sock.close()
            self._sock = None
            self._protocol = self._data_received = self._get_buffer = self._buffer_updated = None
            server = self._server
            if server is not None:
                self._server = None
                if _SERVER_ATTACH_TAKES_TRANSPORT:
                    server._detach(self._transport)
                else:
                    server._detach()

    # -- protocol -----------------------------------------------------------------------------------

    cdef int _set_protocol(self, protocol) except -1:
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        if self._buffered:
            self._get_buffer = protocol.get_buffer
            self._buffer_updated = protocol.buffer_updated
            self._data_received = None
        else:
            self._data_received = protocol.data_received
            self._get_buffer = self._buffer_updated = None
        self._stream = (_STREAMS_NATIVE and type(protocol) is _StreamReaderProtocol
                        and _StreamReaderProtocol.data_received is _stream_data_received
                        and _StreamReader.feed_data is _stream_feed_data)
        self._protocol = protocol
        return 0

    def _connection_made(self):
        # Scheduled after protocol.connection_made(): reading starts then, unless paused meanwhile.
        if not self._paused and not self._closing:
            self._start_reading()


cdef inline TransportCore _core(transport):
    return <TransportCore>checked_core(transport, TransportCore)


cdef inline TransportCore _core_or_none(transport):
    return <TransportCore>core_or_none(transport, TransportCore)


class SocketTransport(transports._FlowControlMixin, transports.Transport):
    """A TCP or UNIX stream socket transport of levent's asyncio loop: an ``asyncio.Transport`` with
    asyncio's semantics (flow control with 64 KiB / 16 KiB default limits, ``write_eof``, extra info
    ``socket``, ``sockname``, ``peername``), made by the loop; not instantiated directly.

    ``write()`` queues ``bytes`` and read-only memoryviews without copying them and copies mutable
    data (bytearray, writable memoryviews), so the caller may reuse such a buffer at once.
    """

    # _FlowControlMixin, whose methods the core replaces, for asyncio's sendfile fallback: it takes
    # only such transports (and reads their _loop slot).
    __slots__ = ('_core', '__weakref__')

    # What asyncio's BaseEventLoop checks before start_tls() and sendfile(): loop.sendfile() tries
    # the loop's native os.sendfile() first.
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        cdef TransportCore core = TransportCore.__new__(TransportCore)
        transports.Transport.__init__(self, extra)
        self._loop = loop
        self._core = core
        core._setup(loop, loop.base, self, sock, protocol, server)
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
        if server is not None:
            if _SERVER_ATTACH_TAKES_TRANSPORT:
                server._attach(self)
            else:
                server._attach()
        loop._transports[core._fd] = self
        base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(core._connection_made)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # write(): a method descriptor installed after the class (see _write_method).

    def writelines(self, list_of_data):
        """Write each bytes-like item of ``list_of_data``, with one sendmsg() where possible."""
        _core(self)._writelines(list_of_data)

    def write_eof(self):
        """Shut the socket down for writing once the queued data is sent; reading goes on."""
        _core(self)._write_eof()

    def can_write_eof(self):
        """True: sockets can be half-closed."""
        return True

    def is_closing(self):
        """True once close() or abort() was called, or the connection was lost."""
        return _core(self)._closing

    def close(self):
        """Stop reading, send what is queued, then close the socket; the protocol's
        connection_lost(None) is called (once) from the loop afterwards."""
        _core(self)._close()

    def abort(self):
        """Close at once, dropping queued data; connection_lost(None) follows from the loop."""
        _core(self)._force_close(None)

    def pause_reading(self):
        """Stop calling the protocol's data_received() until resume_reading()."""
        _core(self)._pause_reading()

    def resume_reading(self):
        """Resume reading after pause_reading()."""
        _core(self)._resume_reading()

    def is_reading(self):
        """True unless reading is paused or the transport is closing."""
        cdef TransportCore core = _core(self)
        return not core._paused and not core._closing

    def get_write_buffer_size(self):
        """Bytes queued and not sent yet."""
        return _core(self)._buffer_size

    def get_write_buffer_limits(self):
        """``(low, high)``: the flow control marks."""
        cdef TransportCore core = _core(self)
        return (core._low_water, core._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow control marks: pause_writing() above ``high`` (default 64 KiB, or 4 x low),
        resume_writing() at or below ``low`` (default high / 4)."""
        _core(self)._set_write_buffer_limits(high, low)

    def get_protocol(self):
        """The protocol receiving the data."""
        return _core(self)._protocol

    def set_protocol(self, protocol):
        """Hand the connection to another protocol (a BufferedProtocol too)."""
        _core(self)._set_protocol(protocol)

    @property
    def _protocol_paused(self):
        # Read by asyncio's sendfile fallback.
        return _core(self)._protocol_paused

    def _force_close(self, exc):
        # Called by asyncio's sslproto on a fatal TLS error.
        _core(self)._force_close(exc)

    # -- for the loop's sendfile() -------------------------------------------------------------------

    @property
    def _sock(self):
        # The socket, None once the connection is lost.
        return _core(self)._sock

    def _make_empty_waiter(self):
        # A future done once the write queue is empty; write() refuses data until the reset.
        cdef TransportCore core = _core(self)
        if core._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        core._empty_waiter = core._loop.create_future()
        if core._buffer_size == 0:
            core._empty_waiter.set_result(None)
        return core._empty_waiter

    def _reset_empty_waiter(self):
        _core(self)._empty_waiter = None

    def _set_sendfile_op(self, op):
        # The native sendfile on this socket (or None once done): its abort() runs before the
        # socket is closed.
        _core(self)._sendfile_op = op

    def __repr__(self):
        cdef TransportCore core = _core_or_none(self)
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
        cdef TransportCore core = _core_or_none(self)
        if core is not None and core._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._stop_reading()
            core._stop_writing()
            core._sock.close()
            core._sock = None
            server = core._server
            if server is not None:
                core._server = None
                if _SERVER_ATTACH_TAKES_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()


# write() is the method protocols call most. As a method descriptor of SocketTransport (a C function
# with METH_FASTCALL, as built-in types' methods are), CPython calls it straight from the caller's
# bytecode, and 3.11+ specialize that call for an exact SocketTransport; a Python-level def would
# go through a function object's call and argument parsing first.
cdef object _write_method(object transport, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    if kwnames is NULL and nargs == 1:
        data = <object>args[0]
    elif nargs == 0 and kwnames is not NULL and (<tuple>kwnames) == ('data',):
        data = <object>args[0]      # write(data=...): keyword values follow the positional ones
    else:
        raise TypeError("SocketTransport.write() takes exactly one argument, data")
    _core(transport)._write(data)
    return None


cdef PyMethodDef _write_def
_write_def.ml_name = "write"
_write_def.ml_meth = <PyCFunction>_write_method
_write_def.ml_flags = METH_FASTCALL | METH_KEYWORDS
# With a text signature first, for inspect.signature() and help().
_write_def.ml_doc = (
    "write($self, /, data)\n--\n\n"
    "Send ``data`` (bytes-like): at once if possible, else queued and sent when the socket is\n"
    "writable; the protocol's pause_writing() is called above the high-water mark.")
SocketTransport.write = PyDescr_NewMethod(SocketTransport, &_write_def)
