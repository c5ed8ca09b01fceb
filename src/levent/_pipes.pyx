# cython: language_level=3
"""Pipe transports of levent's asyncio loop: ``connect_read_pipe`` / ``connect_write_pipe`` and the
pipes of subprocesses (:class:`ReadPipeTransport`, :class:`WritePipeTransport`).

The work happens in :class:`PipeCore`, a native object on two raw libevent events of the loop's
EventBase, as the socket transports' TransportCore: a read pipe read()s into one static buffer and
calls the protocol directly; a write pipe write()s at once when nothing is queued and queues the rest
without copying immutable data (writev() of up to 64 buffers when the pipe is writable again), and
watches its own fd for readability, which on a pipe's or socket's write end means the reader is gone.

Semantics follow asyncio's ``_UnixReadPipeTransport`` / ``_UnixWritePipeTransport`` (3.9-3.13),
including their error messages: EIO on a read (a pty whose other side closed, on Linux) ends the
transport quietly, a write pipe closed by its reader loses the connection with BrokenPipeError when
data was still queued, ``write_eof()`` closes the pipe once the queue is out.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, EIO, errno
from posix.uio cimport iovec, writev
from posix.unistd cimport read, write

from levent._core cimport EventBase, EventPair
from levent._slots cimport checked_core, core_or_none

import os
import stat
import warnings
from asyncio import constants, futures, transports
from asyncio.log import logger


cdef enum:
    READ_SIZE = 262144      # what asyncio's pipe transports read per event (max_size)
    MAX_IOV = 64            # queued buffers handed to one writev()

# The read buffer of every read pipe: data_received() gets a bytes copy, and the GIL is held from
# read() to that copy, so no two callbacks use it at once.
cdef char _read_buf[READ_SIZE]

# As asyncio: after this many writes to a lost pipe, each further write() logs a warning.
cdef Py_ssize_t _LOG_THRESHOLD_FOR_CONNLOST_WRITES = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


cdef inline bint _would_block(int err) noexcept nogil:
    # EWOULDBLOCK is EAGAIN on Linux and macOS.
    return err == EAGAIN or err == EINTR


cdef object _os_error(int err):
    # OSError(errno, ...) builds the matching subclass (BrokenPipeError...).
    return OSError(err, os.strerror(err))


cdef int _pipe_fileno(pipe) except -1:
    try:
        fileno = pipe.fileno
    except AttributeError:
        raise TypeError(f"pipe must be a file-like object with a fileno() method (e.g. from "
                        f"os.fdopen() or open()), not {type(pipe).__name__!r}") from None
    return fileno()


@cython.no_gc_clear     # EventPair's __dealloc__ needs _base alive to delete the events
@cython.final
cdef class PipeCore(EventPair):
    """The native half of a :class:`ReadPipeTransport` or :class:`WritePipeTransport`; not used on
    its own."""

    cdef object _loop
    cdef object _transport      # the transport the protocol sees (it holds us in a slot)
    cdef object _pipe           # None once connection_lost() ran (the pipe is closed then)
    cdef bint _writer           # a write pipe: _rev only tells that the reader went away
    cdef object _protocol
    cdef object _data_received  # looked up once per set_protocol()
    cdef bint _paused           # pause_reading()
    cdef bint _closing          # close(), write_eof(), EOF or an error
    cdef bint _lost_called      # connection_lost() is scheduled or ran
    cdef Py_ssize_t _conn_lost
    # The write queue, as the socket transports': bytes and read-only byte memoryviews, from
    # _queue[_qhead]; _qoffset bytes of the first are written. _buffer_size counts the unwritten bytes.
    cdef list _queue
    cdef Py_ssize_t _qhead
    cdef Py_ssize_t _qoffset
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef bint _protocol_paused

    def __cinit__(self):
        self._queue = []
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024

    cdef int _setup(self, loop, EventBase base, transport, pipe, protocol, bint writer) except -1:
        cdef int fd
        base._ensure_open()
        fd = _pipe_fileno(pipe)
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            if writer:
                raise ValueError("Pipe transport is only for pipes, sockets and character devices")
            raise ValueError("Pipe transport is for pipes/sockets only.")
        base._check_watchable(fd)
        self._writer = writer
        self._set_protocol(protocol)
        os.set_blocking(fd, False)
        self._assign(base, fd)
        self._loop = loop
        self._transport = transport
        self._pipe = pipe
        return 0

    def _start_watching(self):
        # Scheduled after protocol.connection_made(): a read pipe reads from then on (unless paused
        # or closed meanwhile); a write pipe watches for its reader going away.
        if not self._paused and not self._closing:
            self._start_reading()

    # -- read pipe ----------------------------------------------------------------------------------

    cdef int _read_ready(self) except -1:
        cdef ssize_t n
        cdef int err
        if self._writer:
            return self._peer_closed()  # a write pipe's read event: its reader went away
        if self._closing:
            return 0
        n = read(self._fd, _read_buf, READ_SIZE)
        if n > 0:
            data = PyBytes_FromStringAndSize(_read_buf, n)
            try:
                self._data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # asyncio reports it (as an exception in the reader callback) and goes on reading.
                self._loop.call_exception_handler({
                    'message': 'protocol.data_received() call failed',
                    'exception': exc,
                    'transport': self._transport,
                    'protocol': self._protocol,
                })
        elif n == 0:
            if self._loop.get_debug():
                logger.info("%r was closed by peer", self._transport)
            self._closing = True
            self._stop_reading()
            self._lost_called = True
            self._loop.call_soon(self._protocol.eof_received)
            self._loop.call_soon(self._call_connection_lost, None)
        else:
            err = errno
            if not _would_block(err):
                self._fatal_error(_os_error(err), 'Fatal read error on pipe transport')
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

    # -- write pipe ---------------------------------------------------------------------------------

    cdef int _peer_closed(self) except -1:
        # The write end became readable: its reader closed (pipes report an error, sockets EOF).
        if self._lost_called:
            return 0
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self._transport)
        self._close(BrokenPipeError() if self._buffer_size else None)
        return 0

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
            if size == 0:
                return 0
            if self._conn_lost or self._closing:
                if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                    logger.warning('pipe closed by peer or os.write(pipe, data) raised exception.')
                self._conn_lost += 1
                return 0
            if self._buffer_size == 0:
                # Nothing queued: try to write now, and only queue (and watch) what is left.
                n = write(self._fd, ptr, size)
                if n < 0:
                    err = errno
                    if not _would_block(err):
                        self._conn_lost += 1
                        self._fatal_error(_os_error(err), 'Fatal write error on pipe transport')
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
        # bytes (and read-only memoryviews) are queued without a copy; mutable data is copied, as
        # asyncio does, so that the caller may reuse its buffer at once.
        if not is_bytes:
            if isinstance(data, memoryview) and (<memoryview>data).readonly and (<memoryview>data).c_contiguous:
                data = (<memoryview>data).cast('B')[sent:]
            else:
                data = PyBytes_FromStringAndSize(ptr + sent, size - sent)
            sent = 0
        if self._qhead == len(self._queue):
            self._qoffset = sent    # only the first queued item is ever partly written
        self._queue.append(data)
        self._buffer_size += size - sent
        return 0

    cdef int _write_ready(self) except -1:
        if self._buffer_size == 0 or self._lost_called:
            self._stop_writing()
            return 0
        if self._flush() < 0:
            return 0
        if self._buffer_size == 0:
            self._stop_writing()
            self._maybe_resume_protocol()   # may queue more
            if self._closing and self._buffer_size == 0:
                # write_eof() or close() waited for the queue: the pipe closes now, as asyncio's.
                self._stop_reading()
                self._lost_called = True
                self._call_connection_lost(None)
        else:
            self._maybe_resume_protocol()
        return 0

    cdef int _flush(self) except -2:
        # One writev() of the queued buffers; -1 when it failed (fatal to the transport).
        cdef iovec iov[MAX_IOV]
        cdef Py_buffer views[MAX_IOV]
        cdef int nviews = 0
        cdef int niov = 0
        cdef ssize_t n
        cdef int err = 0, i
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
            n = writev(self._fd, iov, niov)
            err = errno
        finally:
            for i in range(nviews):
                PyBuffer_Release(&views[i])
        if n < 0:
            if _would_block(err):
                return 0
            self._clear_queue()
            self._conn_lost += 1
            self._stop_writing()
            self._fatal_error(_os_error(err), 'Fatal write error on pipe transport')
            return -1
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

    cdef int _write_eof(self) except -1:
        # A pipe cannot be half-closed: write_eof() closes it once the queue is written.
        if self._closing:
            return 0
        self._closing = True
        if self._buffer_size == 0:
            self._stop_reading()
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

    cdef int _close(self, exc) except -1:
        # Ends the transport now: nothing queued is written; connection_lost(exc) follows.
        self._closing = True
        self._clear_queue()
        self._stop_writing()
        self._stop_reading()
        self._schedule_connection_lost(exc)
        return 0

    cdef int _fatal_error(self, exc, str message) except -1:
        # As asyncio's pipe transports: EIO on a read pipe (a pty whose other side closed) and any
        # OSError on a write pipe (a broken pipe) are the peer's doing, logged in debug mode only;
        # anything else goes to the exception handler.
        if isinstance(exc, OSError) and (self._writer or (<OSError>exc).errno == EIO):
            if self._loop.get_debug():
                logger.debug("%r: %s", self._transport, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self._transport,
                'protocol': self._protocol,
            })
        self._close(exc)
        return 0

    cdef int _schedule_connection_lost(self, exc) except -1:
        # Once only, whatever mix of close(), abort(), EOF and errors leads here.
        if self._lost_called:
            return 0
        self._lost_called = True
        if self._loop.is_closed():
            # Nothing runs on a closed loop: the pipe closes now, without connection_lost(). (asyncio
            # raises RuntimeError here, which also stops a subprocess transport's close() before it
            # kills the child.)
            self._drop()
        else:
            self._loop.call_soon(self._call_connection_lost, exc)
        return 0

    def _call_connection_lost(self, exc):
        # Closes the pipe whatever the protocol does; the events go first, so that a new fd with the
        # same number is not watched by them.
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._stop_writing()
            self._pipe.close()
            self._pipe = None
            self._protocol = self._data_received = None

    cdef int _drop(self) except -1:
        # The transport is collected unclosed, or closed after its loop: stop watching, close the pipe.
        if self._pipe is None:
            return 0
        self._stop_reading()
        self._stop_writing()
        self._pipe.close()
        self._pipe = None
        return 0

    # -- protocol -----------------------------------------------------------------------------------

    cdef int _set_protocol(self, protocol) except -1:
        if not self._writer:
            data_received = getattr(protocol, 'data_received', None)
            if data_received is None:
                raise TypeError(f"a read pipe's protocol needs a data_received() method, which "
                                f"{type(protocol).__name__} has not (asyncio.BufferedProtocol is not "
                                f"supported on pipes, as in asyncio)")
            self._data_received = data_received
        self._protocol = protocol
        return 0

    cdef str _repr(self):
        info = [type(self._transport).__name__]
        if self._pipe is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._fd}')
        if self._pipe is not None:
            if self._writer:
                info.append('polling' if self._writing else 'idle')
                info.append(f'bufsize={self._buffer_size}')
            else:
                info.append('polling' if self._reading else 'idle')
        return '<{}>'.format(' '.join(info))


cdef inline PipeCore _core(transport):
    return <PipeCore>checked_core(transport, PipeCore)


cdef inline PipeCore _core_or_none(transport):
    return <PipeCore>core_or_none(transport, PipeCore)


cdef PipeCore _new_core(loop, transport, pipe, protocol, waiter, bint writer):
    cdef PipeCore core = PipeCore.__new__(PipeCore)
    core._setup(loop, loop.base, transport, pipe, protocol, writer)
    transport._extra['pipe'] = pipe
    loop._transports[core._fd] = transport
    loop.call_soon(protocol.connection_made, transport)
    # A write end is watched for its reader going away where that shows as readability: pipes and
    # sockets (not a pty's character device, as asyncio).
    mode = os.fstat(core._fd).st_mode
    if not writer or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        loop.call_soon(core._start_watching)
    if waiter is not None:
        loop.call_soon(futures._set_result_unless_cancelled, waiter, None)
    return core


class ReadPipeTransport(transports.ReadTransport):
    """The read end of a pipe, FIFO, socket or character device (a pty) for levent's asyncio loop:
    an ``asyncio.ReadTransport`` made by ``loop.connect_read_pipe()`` and for subprocess pipes; not
    instantiated directly. Extra info: ``pipe``."""

    __slots__ = ('_core', '__weakref__')

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._core = _new_core(loop, self, pipe, protocol, waiter, False)

    def pause_reading(self):
        """Stop calling the protocol's data_received() until resume_reading()."""
        _core(self)._pause_reading()

    def resume_reading(self):
        """Resume reading after pause_reading()."""
        _core(self)._resume_reading()

    def is_reading(self):
        """True unless reading is paused or the transport is closing."""
        cdef PipeCore core = _core(self)
        return not core._paused and not core._closing

    def is_closing(self):
        """True once close() was called, or the pipe reached EOF or failed."""
        return _core(self)._closing

    def close(self):
        """Stop reading and close the pipe; connection_lost(None) follows from the loop."""
        cdef PipeCore core = _core(self)
        if not core._closing:
            core._close(None)

    def get_protocol(self):
        """The protocol receiving the data."""
        return _core(self)._protocol

    def set_protocol(self, protocol):
        """Hand the pipe to another protocol."""
        _core(self)._set_protocol(protocol)

    def __repr__(self):
        cdef PipeCore core = _core_or_none(self)
        return f'<{type(self).__name__} uninitialized>' if core is None else core._repr()

    def __del__(self, _warn=warnings.warn):
        cdef PipeCore core = _core_or_none(self)
        if core is not None and core._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._drop()


class WritePipeTransport(transports.WriteTransport):
    """The write end of a pipe, FIFO, socket or character device (a pty) for levent's asyncio loop:
    an ``asyncio.WriteTransport`` made by ``loop.connect_write_pipe()`` and for subprocess pipes;
    not instantiated directly. Flow control as asyncio's (64 KiB / 16 KiB default limits); extra
    info: ``pipe``.

    ``write()`` queues ``bytes`` and read-only memoryviews without copying them and copies mutable
    data. A pipe cannot be half-closed: ``write_eof()`` and ``close()`` close it once the queue is
    written; when the reader closes its end first, the transport is lost (with BrokenPipeError if
    data was still queued).
    """

    __slots__ = ('_core', '__weakref__')

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._core = _new_core(loop, self, pipe, protocol, waiter, True)

    def write(self, data):
        """Write ``data`` (bytes-like): at once if possible, else queued and written when the pipe is
        writable; the protocol's pause_writing() is called above the high-water mark."""
        _core(self)._write(data)

    def can_write_eof(self):
        """True: write_eof() closes the pipe once the queue is written."""
        return True

    def write_eof(self):
        """Close the pipe once the queued data is written (the reader then sees EOF)."""
        _core(self)._write_eof()

    def is_closing(self):
        """True once close(), write_eof() or abort() was called, or the pipe was lost."""
        return _core(self)._closing

    def close(self):
        """Close the pipe once the queued data is written; connection_lost(None) follows."""
        cdef PipeCore core = _core(self)
        if core._pipe is not None and not core._closing:
            core._write_eof()

    def abort(self):
        """Close at once, dropping queued data; connection_lost(None) follows from the loop."""
        _core(self)._close(None)

    def get_write_buffer_size(self):
        """Bytes queued and not written yet."""
        return _core(self)._buffer_size

    def get_write_buffer_limits(self):
        """``(low, high)``: the flow control marks."""
        cdef PipeCore core = _core(self)
        return (core._low_water, core._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow control marks: pause_writing() above ``high`` (default 64 KiB, or 4 x low),
        resume_writing() at or below ``low`` (default high / 4)."""
        _core(self)._set_write_buffer_limits(high, low)

    def get_protocol(self):
        """The protocol of this pipe."""
        return _core(self)._protocol

    def set_protocol(self, protocol):
        """Hand the pipe to another protocol."""
        _core(self)._set_protocol(protocol)

    @property
    def _protocol_paused(self):
        return _core(self)._protocol_paused

    def __repr__(self):
        cdef PipeCore core = _core_or_none(self)
        return f'<{type(self).__name__} uninitialized>' if core is None else core._repr()

    def __del__(self, _warn=warnings.warn):
        cdef PipeCore core = _core_or_none(self)
        if core is not None and core._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._drop()
