# cython: language_level=3
"""Zero-copy file sending for levent's asyncio loop: ``loop.sock_sendfile()`` and ``loop.sendfile()``
on a plain socket, with sendfile(2) driven by a raw libevent write event.

asyncio's selector loop calls ``os.sendfile()`` once per loop iteration (one add_writer/remove_writer
pair and a poll between chunks). Here a :class:`SendfileOp` calls sendfile(2) in C, with the GIL
released, until the socket would block, then waits on a write event of the loop's EventBase: the
Python code runs once per transfer. Results, errors and the file position afterwards are asyncio's:
an error before the first byte is SendfileNotAvailableError (the caller falls back to read + send), a
connection lost in the middle is ConnectionError, and the file position is ``offset + bytes sent``.
"""
cimport cython
from libc.errno cimport EAGAIN, EINTR, ENOTCONN, errno
from posix.types cimport off_t
from posix.unistd cimport SEEK_SET, lseek

from libevent_pxd.event cimport EV_PERSIST, EV_WRITE, event_add, event_assign, event_del
from libevent_pxd.event_struct cimport event
from libevent_pxd.util cimport evutil_socket_t
from levent._core cimport EventBase, Handle

import os
from asyncio import exceptions


cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/sendfile.h>
    #define LEVENT_HAVE_SENDFILE 1
    static ssize_t levent_sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
        return sendfile(out_fd, in_fd, offset, count);
    }
    #else
    /* Other systems' sendfile() differ: the loop uses asyncio's os.sendfile() path there. */
    #include <errno.h>
    #define LEVENT_HAVE_SENDFILE 0
    static ssize_t levent_sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
        errno = ENOSYS;
        return -1;
    }
    #endif
    """
    bint LEVENT_HAVE_SENDFILE
    ssize_t levent_sendfile(int out_fd, int in_fd, off_t *offset, size_t count) nogil


#: True where levent drives sendfile(2) itself (Linux).
NATIVE = LEVENT_HAVE_SENDFILE

cdef enum:
    # sendfile() calls per writable event at most: a fast reader could otherwise keep the loop here
    # for a whole large file.
    CALLS_PER_EVENT = 16

# Linux sends at most 0x7ffff000 bytes per call.
cdef size_t MAX_CHUNK = 0x7ffff000


cdef void _on_writable(evutil_socket_t fd, short what, void *arg) noexcept with gil:
    # arg is alive: the base holds the op (_hold) while its event is pending.
    cdef SendfileOp op = <SendfileOp>arg
    op._base._dispatched += 1
    try:
        op._waited = True
        op._step()
    except BaseException as exc:
        op._base._stop_with(exc)


@cython.no_gc_clear     # __dealloc__ needs _base alive to delete the event
@cython.final
cdef class SendfileOp(Handle):
    """One sendfile transfer from a file to a socket; made by :func:`sendfile`, not directly."""

    cdef object _future
    cdef int _sock_fd
    cdef int _file_fd
    cdef off_t _offset
    cdef Py_ssize_t _count          # 0: until the end of the file
    cdef Py_ssize_t _blocksize
    cdef Py_ssize_t _total
    cdef event _ev
    cdef bint _assigned
    cdef bint _pending
    cdef bint _waited               # the socket was waited on once (asyncio's "not a first call")
    cdef bint _finished

    def __dealloc__(self):
        if self._assigned:
            if self._pending:
                event_del(&self._ev)
            self._assigned = False
            self._unlink()

    cdef int _close_from_base(self) except -1:
        # The loop is closing under a transfer: its future is left as it is (cancelled with the
        # task awaiting it), only libevent's state goes.
        self._stop()
        return 0

    cdef int _stop(self) except -1:
        if self._assigned:
            if self._pending:
                event_del(&self._ev)
                self._pending = False
                self._release()
            self._assigned = False
            self._unlink()
        return 0

    cdef int _step(self) except -1:
        cdef ssize_t n
        cdef size_t size
        cdef int err, i
        if self._finished:
            return 0
        if self._future.done():     # cancelled
            self._finish()
            return 0
        for i in range(CALLS_PER_EVENT):
            if self._count:
                if self._total >= self._count:
                    self._finish()
                    self._future.set_result(self._total)
                    return 0
                size = <size_t>(self._count - self._total)
            else:
                size = <size_t>self._blocksize
            if size > MAX_CHUNK:
                size = MAX_CHUNK
            with nogil:
                n = levent_sendfile(self._sock_fd, self._file_fd, &self._offset, size)
            if n > 0:
                self._total += n
                if <size_t>n < size:
                    break   # the socket's buffer is full: the next call would only say EAGAIN
                continue
            if n == 0:      # end of the file
                self._finish()
                self._future.set_result(self._total)
                return 0
            err = errno
            if err == EAGAIN or err == EINTR:
                break
            self._fail(err)
            return 0
        if not self._pending:
            if event_add(&self._ev, NULL) != 0:
                self._finish()
                self._future.set_exception(OSError(errno, "event_add failed for sendfile's socket"))
                return 0
            self._pending = True
            self._hold()
        return 0

    cdef int _fail(self, int err) except -1:
        exc = OSError(err, os.strerror(err))
        if self._waited and err == ENOTCONN and type(exc) is not ConnectionError:
            # Disconnected in the middle: ConnectionError, as asyncio normalizes it.
            new_exc = ConnectionError("socket is not connected", ENOTCONN)
            new_exc.__cause__ = exc
            exc = new_exc
        self._finish()
        if self._total == 0:
            # Before the first byte (not a regular file, say): the caller may fall back.
            self._future.set_exception(exceptions.SendfileNotAvailableError("os.sendfile call failed"))
        else:
            self._future.set_exception(exc)
        return 0

    cdef int _finish(self) except -1:
        # Done (or given up): the event goes, and the file position is left after what was sent.
        if self._finished:
            return 0
        self._finished = True
        self._stop()
        if self._total > 0:
            lseek(self._file_fd, self._offset, SEEK_SET)
        return 0

    def abort(self):
        """Stop now (the socket is about to close): the transfer ends with ConnectionError."""
        self._finish()
        if not self._future.done():
            self._future.set_exception(ConnectionError("Connection is closed by peer"))

    def _done(self, fut):
        # The future's done callback: a cancelled transfer stops at once.
        self._finish()


def sendfile(loop, int sock_fd, int file_fd, Py_ssize_t offset, count, Py_ssize_t blocksize):
    """Start sending ``file_fd`` from ``offset`` (``count`` bytes, or to the end of the file in
    chunks of up to ``blocksize``) to non-blocking socket ``sock_fd``; returns ``(future, op)``: the
    future's result is the number of bytes sent, and ``op.abort()`` stops the transfer."""
    cdef EventBase base = loop.base
    cdef SendfileOp op = SendfileOp.__new__(SendfileOp)
    base._ensure_open()
    base._check_watchable(sock_fd)
    if event_assign(&op._ev, base._base, sock_fd, EV_WRITE | EV_PERSIST, _on_writable, <void *>op) != 0:
        raise RuntimeError("event_assign failed for sendfile's socket")
    op._assigned = True
    op._link(base)
    op._future = loop.create_future()
    op._sock_fd = sock_fd
    op._file_fd = file_fd
    op._offset = offset
    op._count = count or 0
    op._blocksize = blocksize
    op._future.add_done_callback(op._done)
    op._step()
    return op._future, op
