"""BufferEvent: libevent's bufferevent, a socket (or pair, or filter) with an input and output Buffer.

Ownership rules:

* A BufferEvent owns its bufferevent and, with CLOSE_ON_FREE (the default), its fd; a socket object
  handed in with CLOSE_ON_FREE is detached, so that the fd has one owner.
* From creation until it is freed the base holds a reference to it (libevent may call back any time),
  so dropping every reference to an open BufferEvent leaves it working; close() or the base's close()
  frees it. Its input/output Buffers refer to it and stop working once it is freed.
* close() is graceful (like asyncio's Transport.close): reading stops and the bufferevent is freed
  once its output has drained, or on an error; abort() frees it at once, dropping unsent output.
* Without THREADSAFE, a BufferEvent may only be used in the thread running its base's loop (or with
  no loop running): libevent's buffers are not locked then. With THREADSAFE every libevent call is
  made with the GIL released, and callbacks run deferred, without the bufferevent's lock held.
"""

cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.ref cimport PyObject
from libc.errno cimport errno
from posix.time cimport timeval

from libevent_pxd.util cimport evutil_socket_t, evutil_make_socket_nonblocking, sockaddr, sockaddr_storage, socklen_t, ev_ssize_t
from libevent_pxd.event cimport EV_READ, EV_WRITE
from libevent_pxd.buffer cimport evbuffer, evbuffer_get_length, evbuffer_drain, evbuffer_unfreeze
from libevent_pxd.bufferevent cimport *
from levent._core cimport (
    EventBase, Handle, _check_select_headroom, _fd_to_hand_over, _hand_over, _seconds, _to_timeval,
)
from levent._buffer cimport Buffer, release_pending_references
from levent._sockaddr cimport sockaddr_from, sockaddr_to

import errno as errno_module
import os
import weakref as _weakref
import socket as _socket

cdef extern from "sys/socket.h" nogil:
    enum:
        AF_UNSPEC
        SOL_SOCKET
        SO_DOMAIN
    int getsockopt(int fd, int level, int name, void *value, socklen_t *length)

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil

cdef int _ALL_OPTIONS = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE | BEV_OPT_DEFER_CALLBACKS | BEV_OPT_UNLOCK_CALLBACKS


cdef int _checked_options(int options) except -1:
    if options & ~_ALL_OPTIONS:
        raise ValueError(f"unknown BufferEvent options {options & ~_ALL_OPTIONS:#x}")
    if options & BEV_OPT_THREADSAFE:
        # Callbacks take the GIL: they must not run holding the bufferevent's lock, which a thread
        # holding the GIL may be waiting for. UNLOCK_CALLBACKS needs DEFER_CALLBACKS.
        options |= BEV_OPT_DEFER_CALLBACKS | BEV_OPT_UNLOCK_CALLBACKS
    return options


cdef int _positive_timeval(object seconds, timeval *tv) except -1:
    # libevent reads a zero timeval as "no timeout": ask for None instead.
    if _seconds(seconds) == 0:
        raise ValueError("a timeout must be > 0 seconds (None for no timeout)")
    return _to_timeval(seconds, tv)


# ---------------------------------------------------------------------------------------------------
# C callbacks. arg is the BufferEvent: the base holds it until _forget(), which a foreign thread
# defers to the loop thread, so an in-flight callback never sees it freed.

cdef inline BufferEvent _live(void *arg):
    cdef BufferEvent self = <BufferEvent>arg
    self._base._dispatched += 1
    return self if self._bev != NULL else None


cdef void _read_callback(bufferevent *bev, void *arg) noexcept with gil:
    release_pending_references()
    cdef BufferEvent self = _live(arg)
    if self is None or self._on_read is None:
        return
    try:
        self._on_read(self)
    except BaseException as exc:
        self._base._stop_with(exc)


cdef void _write_callback(bufferevent *bev, void *arg) noexcept with gil:
    release_pending_references()
    cdef BufferEvent self = _live(arg)
    if self is None:
        return
    if self._closing:
        # close() was waiting for the output to drain (write low watermark 0).
        try:
            if evbuffer_get_length(bufferevent_get_output(bev)) == 0:
                self._drained()
        except BaseException as exc:
            self._base._stop_with(exc)
        return
    if self._on_write is None:
        return
    try:
        self._on_write(self)
    except BaseException as exc:
        self._base._stop_with(exc)


cdef void _event_callback(bufferevent *bev, short what, void *arg) noexcept with gil:
    cdef int err = errno     # libevent leaves the socket error in errno for ERROR events
    release_pending_references()
    cdef BufferEvent self = _live(arg)
    if self is None:
        return
    try:
        what, error = self._describe_event(what, err)
        if what & (BEV_EVENT_CONNECTED | BEV_EVENT_ERROR):
            self._connecting = False
        if self._closing:
            if what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT):
                self._free()    # the output cannot drain any more
            return
        if self._on_event is not None:
            self._on_event(self, what, error)
    except BaseException as exc:
        self._base._stop_with(exc)


cdef bufferevent_filter_result _input_filter_callback(
        evbuffer *src, evbuffer *dst, ev_ssize_t limit, bufferevent_flush_mode mode, void *arg) noexcept with gil:
    return _run_filter(<BufferEvent>arg, True, src, dst, limit, mode)


cdef bufferevent_filter_result _output_filter_callback(
        evbuffer *src, evbuffer *dst, ev_ssize_t limit, bufferevent_flush_mode mode, void *arg) noexcept with gil:
    return _run_filter(<BufferEvent>arg, False, src, dst, limit, mode)


cdef bufferevent_filter_result _run_filter(BufferEvent self, bint incoming, evbuffer *src, evbuffer *dst,
                                           ev_ssize_t limit, bufferevent_flush_mode mode) noexcept:
    fn = self._input_filter if incoming else self._output_filter
    if fn is None:
        return BEV_ERROR
    cdef Buffer source = Buffer.borrow(src, self, self._base._stop_with)
    cdef Buffer target = Buffer.borrow(dst, self, self._base._stop_with)
    cdef int result = BEV_ERROR
    try:
        r = fn(source, target, limit, mode)
        if r is None:
            r = BEV_OK
        if not isinstance(r, int) or r not in (BEV_OK, BEV_NEED_MORE, BEV_ERROR):
            raise ValueError(f"a filter must return FILTER_OK, FILTER_NEED_MORE or FILTER_ERROR, not {r!r}")
        result = r
    except BaseException as exc:
        self._base._stop_with(exc)
        result = BEV_ERROR
    finally:
        # The filter's Buffers only live for this call: libevent may free these evbuffers later.
        source.invalidate()
        target.invalidate()
    return <bufferevent_filter_result>result


# ---------------------------------------------------------------------------------------------------

@cython.no_gc_clear   # __dealloc__ needs _base alive to free the bufferevent
cdef class BufferEvent(Handle):
    """A bufferevent: a socket with an input and an output :class:`Buffer`, read and written by libevent.

    ``BufferEvent(base, sock=None, *, options=CLOSE_ON_FREE, on_read=None, on_write=None, on_event=None)``:
    ``sock`` is a connected socket (an object with ``fileno()``, or an int fd), or None to
    :meth:`connect` later. Callbacks: ``on_read(bev)`` when input passed the read low watermark,
    ``on_write(bev)`` when output drained to the write low watermark, ``on_event(bev, what, error)``
    with ``what`` made of READING/WRITING and CONNECTED, EOF, ERROR, TIMEOUT, and ``error`` an OSError
    for ERROR (else None). As in libevent, reading starts when you ``enable(READ)``.

    With CLOSE_ON_FREE (the default) the BufferEvent owns the fd: a socket object passed in is
    detached. It stays open, its callbacks running, until :meth:`close` (graceful: once the output
    has drained), :meth:`abort` or its base's close() — even if you drop every reference to it.
    """

    READING = BEV_EVENT_READING
    WRITING = BEV_EVENT_WRITING
    EOF = BEV_EVENT_EOF
    ERROR = BEV_EVENT_ERROR
    TIMEOUT = BEV_EVENT_TIMEOUT
    CONNECTED = BEV_EVENT_CONNECTED
    CLOSE_ON_FREE = BEV_OPT_CLOSE_ON_FREE
    THREADSAFE = BEV_OPT_THREADSAFE
    DEFER_CALLBACKS = BEV_OPT_DEFER_CALLBACKS
    UNLOCK_CALLBACKS = BEV_OPT_UNLOCK_CALLBACKS
    NORMAL = BEV_NORMAL
    FLUSH = BEV_FLUSH
    FINISHED = BEV_FINISHED
    FILTER_OK = BEV_OK
    FILTER_NEED_MORE = BEV_NEED_MORE
    FILTER_ERROR = BEV_ERROR

    def __cinit__(self):
        self._bev = NULL
        self._filter_above = NULL

    def __init__(self, EventBase base not None, sock=None, *, int options=BEV_OPT_CLOSE_ON_FREE,
                 on_read=None, on_write=None, on_event=None):
        cdef int fd = -1
        if self._bev != NULL:
            raise RuntimeError("BufferEvent.__init__() called twice")
        options = _checked_options(options)
        for callback in (on_read, on_write, on_event):
            _callable_or_none(callback)
        base._ensure_open()
        if sock is not None:
            fd = _fd_to_hand_over(sock, options & BEV_OPT_CLOSE_ON_FREE)
            base._check_watchable(fd)
            if evutil_make_socket_nonblocking(fd) != 0:
                raise OSError(errno, f"cannot make fd {fd} non-blocking: {os.strerror(errno)}")
        cdef bufferevent *bev = bufferevent_socket_new(base._base, fd, options)
        if bev == NULL:
            raise OSError(errno, "bufferevent_socket_new failed")
        if sock is not None:
            self._sock = _hand_over(sock, options & BEV_OPT_CLOSE_ON_FREE)
        self._init(base, bev, options)
        self._on_read = on_read
        self._on_write = on_write
        self._on_event = on_event

    @staticmethod
    cdef BufferEvent from_fd(EventBase base, int fd, int options):
        """The Listener's fast path: a BufferEvent straight on an accepted (non-blocking) fd."""
        base._check_watchable(fd)
        cdef bufferevent *bev = bufferevent_socket_new(base._base, fd, options)
        if bev == NULL:
            raise OSError(errno, "bufferevent_socket_new failed")
        cdef BufferEvent self = BufferEvent.__new__(BufferEvent)
        self._init(base, bev, options)
        return self

    cdef int _init(self, EventBase base, bufferevent *bev, int options) except -1:
        self._bev = bev
        self._options = options
        bufferevent_setcb(bev, _read_callback, _write_callback, _event_callback, <void *>self)
        self._link(base)
        self._hold()
        return 0

    def __dealloc__(self):
        # Only reached once freed (the base holds an open one), or when the GC tears down a dropped
        # base together with its handles. A filter goes before the BufferEvent below it (it holds
        # that one), and a BufferEvent in a group has left it (the group only refers to it weakly).
        cdef BufferEvent below
        if self._bev == NULL:
            return
        below = self._underlying if self._options & BEV_OPT_CLOSE_ON_FREE else None
        try:
            self._release_c(True)
            if below is not None:
                below._release_c(False)
        except BaseException:
            pass    # a Buffer busy in another thread: nothing else to do in a dealloc
        bufferevent_free(self._bev)
        self._bev = NULL
        self._unlink()
        if self._underlying is not None:
            self._underlying._filter_above = NULL
            if below is not None:
                below._bev = NULL       # libevent freed it with this filter
                below._unlink()

    cdef int _ensure_open(self) except -1:
        if self._bev == NULL or self._closing:
            if self._base is None:
                raise ValueError("this BufferEvent was not initialized")
            if self._base._base == NULL:
                raise ValueError("the EventBase of this BufferEvent is closed")
            raise ValueError("this BufferEvent is closed")
        cdef unsigned long loop_thread = self._base._loop_thread
        if (loop_thread != 0 and loop_thread != PyThread_get_thread_ident()
                and not self._options & BEV_OPT_THREADSAFE):
            raise RuntimeError("this BufferEvent's loop runs in another thread: use it from that thread "
                               "(base.call_later(0, ...)), or create it with options=THREADSAFE")
        return 0

    cdef int _free(self) except -1:
        """Free the bufferevent now (libevent defers the actual free past running callbacks)."""
        cdef bufferevent *bev = self._bev
        if bev == NULL:
            return 0
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                _stop_io(bev)
        else:
            _stop_io(bev)
        if self._filter_above != NULL:
            # A filter on top of this one points at it: it goes first, and with CLOSE_ON_FREE
            # libevent frees this one with it (a second bufferevent_free would underflow its refcount).
            (<BufferEvent>self._filter_above)._free()
            if self._bev == NULL:
                return 0
        cdef BufferEvent below = self._underlying if self._options & BEV_OPT_CLOSE_ON_FREE else None
        self._release_c(False)
        if below is not None:
            below._release_c(False)     # libevent frees it with this filter
        self._bev = NULL
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                bufferevent_free(bev)
        else:
            bufferevent_free(bev)
        if self._underlying is not None:
            self._underlying._filter_above = NULL
            if below is not None:
                below._forget()
        self._forget()
        return 0

    cdef tuple _describe_event(self, short what, int err):
        """``(what, error)`` for on_event: the OSError of an ERROR event, from the errno libevent
        left (a subclass may also change ``what``)."""
        if not what & BEV_EVENT_ERROR:
            return what, None
        if err == 0 and self._connecting:
            # libevent reports a connect() refused at once without setting errno again.
            err = errno_module.ECONNREFUSED
        return what, (OSError(err, os.strerror(err)) if err else OSError("bufferevent error"))

    cdef int _drained(self) except -1:
        """close() is done waiting: everything written was sent. Free the bufferevent."""
        return self._free()

    cdef int _release_c(self, bint dying) except -1:
        """What must happen before libevent frees this bufferevent: it leaves its rate-limit group
        (libevent frees later and asserts that a group being freed has no members), and its Buffers
        stop pointing at its evbuffers. ``dying``: called from __dealloc__, where the weak
        references are already gone (and no new one may be made)."""
        if self._rate_group is not None:
            if not dying:
                (<RateLimitGroup>self._rate_group)._members.discard(self)
            self._rate_group = None
            bufferevent_remove_from_rate_limit_group(self._bev)
        if self._input is not None:
            self._input.invalidate()
        if self._output is not None:
            self._output.invalidate()
        return 0

    cdef int _forget(self) except -1:
        """The bufferevent is gone: drop the Python side's links and the base's hold."""
        self._bev = NULL
        self._closing = False
        self._on_read = self._on_write = self._on_event = None
        self._input_filter = self._output_filter = None
        self._sock = None
        self._unlink()
        cdef unsigned long loop_thread = self._base._loop_thread
        if loop_thread != 0 and loop_thread != PyThread_get_thread_ident():
            # A callback may be on its way in the loop thread: release there, after it.
            self._base.call_later(0, _release_hold, self)
        else:
            self._release()
        return 0

    cdef int _close_from_base(self) except -1:
        self._free()
        return 0

    # -- connecting -------------------------------------------------------------------------------

    def connect(self, address):
        """Connect to ``address`` (as the socket module takes it); the outcome arrives as an
        ``on_event`` with CONNECTED, or ERROR with the OSError (ECONNREFUSED, ...)."""
        cdef sockaddr_storage ss
        cdef socklen_t length
        cdef int family = AF_UNSPEC
        cdef socklen_t optlen = sizeof(int)
        cdef int rc
        self._ensure_open()
        fd = bufferevent_getfd(self._bev)
        if fd >= 0:
            getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &optlen)
        elif self._base._select_backend:
            _check_select_headroom()    # libevent makes the socket
        length = sockaddr_from(address, &ss, family)
        self._connecting = True
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_socket_connect(self._bev, <sockaddr *>&ss, length)
        else:
            rc = bufferevent_socket_connect(self._bev, <sockaddr *>&ss, length)
        if rc != 0:
            self._connecting = False
            raise OSError(errno, f"connect to {address!r} failed: {os.strerror(errno)}")

    # -- callbacks --------------------------------------------------------------------------------

    @property
    def on_read(self):
        """``on_read(bev)``: input reached the read low watermark."""
        return self._on_read

    @on_read.setter
    def on_read(self, value):
        self._on_read = _callable_or_none(value)

    @property
    def on_write(self):
        """``on_write(bev)``: output drained to the write low watermark."""
        return self._on_write

    @on_write.setter
    def on_write(self, value):
        self._on_write = _callable_or_none(value)

    @property
    def on_event(self):
        """``on_event(bev, what, error)``: CONNECTED, EOF, ERROR (error is the OSError), TIMEOUT."""
        return self._on_event

    @on_event.setter
    def on_event(self, value):
        self._on_event = _callable_or_none(value)

    # -- I/O --------------------------------------------------------------------------------------

    def enable(self, short events):
        """Start reading (READ) and/or writing (WRITE)."""
        cdef int rc
        self._ensure_open()
        _check_rw(events)
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_enable(self._bev, events)
        else:
            rc = bufferevent_enable(self._bev, events)
        if rc != 0:
            raise OSError(errno, f"bufferevent_enable failed: {os.strerror(errno)}")

    def disable(self, short events):
        """Stop reading (READ) and/or writing (WRITE)."""
        cdef int rc
        self._ensure_open()
        _check_rw(events)
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_disable(self._bev, events)
        else:
            rc = bufferevent_disable(self._bev, events)
        if rc != 0:
            raise OSError(errno, f"bufferevent_disable failed: {os.strerror(errno)}")

    @property
    def enabled(self):
        """The enabled directions (READ, WRITE)."""
        self._ensure_open()
        return bufferevent_get_enabled(self._bev)

    def write(self, data):
        """Queue ``data`` (any bytes-like object; copied) on the output."""
        cdef Py_buffer view
        cdef int rc
        self._ensure_open()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._options & BEV_OPT_THREADSAFE:
                with nogil:
                    rc = bufferevent_write(self._bev, view.buf, view.len)
            else:
                rc = bufferevent_write(self._bev, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if rc != 0:
            raise OSError(errno, f"bufferevent_write failed: {os.strerror(errno)}")

    def write_buffer(self, Buffer buf not None):
        """Move everything in ``buf`` to the output (evbuffer chains move; no copy)."""
        cdef int rc
        self._ensure_open()
        buf.ensure_open()
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_write_buffer(self._bev, buf._buf)
        else:
            rc = bufferevent_write_buffer(self._bev, buf._buf)
        if rc != 0:
            raise BufferError("bufferevent_write_buffer failed: the source buffer is frozen or exported")

    def read(self, Py_ssize_t n=-1):
        """Remove and return up to ``n`` bytes of input (all of it by default)."""
        cdef size_t got
        self._ensure_open()
        cdef size_t available = evbuffer_get_length(bufferevent_get_input(self._bev))
        if n < 0 or <size_t>n > available:
            n = available
        data = PyBytes_FromStringAndSize(NULL, n)
        cdef char *p = PyBytes_AS_STRING(data)
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                got = bufferevent_read(self._bev, p, n)
        else:
            got = bufferevent_read(self._bev, p, n)
        return data if got == <size_t>n else data[:got]

    @property
    def input(self):
        """The input :class:`Buffer` (valid while this BufferEvent is open)."""
        self._ensure_open()
        if self._input is None:
            self._input = Buffer.borrow(bufferevent_get_input(self._bev), self, self._base._stop_with)
        return self._input

    @property
    def output(self):
        """The output :class:`Buffer` (valid while this BufferEvent is open)."""
        self._ensure_open()
        if self._output is None:
            self._output = Buffer.borrow(bufferevent_get_output(self._bev), self, self._base._stop_with)
        return self._output

    def set_timeouts(self, read=None, write=None):
        """Report TIMEOUT (with READING or WRITING) when no data could be read/written for that many
        seconds while enabled; None: no timeout. libevent disables that direction on a timeout."""
        cdef timeval rtv, wtv
        cdef timeval *rp = NULL
        cdef timeval *wp = NULL
        cdef int rc
        self._ensure_open()
        if read is not None:
            _positive_timeval(read, &rtv)
            rp = &rtv
        if write is not None:
            _positive_timeval(write, &wtv)
            wp = &wtv
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_set_timeouts(self._bev, rp, wp)
        else:
            rc = bufferevent_set_timeouts(self._bev, rp, wp)
        if rc != 0:
            raise OSError(errno, "bufferevent_set_timeouts failed")

    def set_watermark(self, short events, size_t low=0, size_t high=0):
        """Watermarks for READ and/or WRITE. Read: on_read runs once ``low`` bytes are in; reading
        pauses while ``high`` (if not 0) are. Write: on_write runs once output is down to ``low``."""
        self._ensure_open()
        _check_rw(events)
        if high and low > high:
            raise ValueError(f"the low watermark ({low}) is above the high one ({high})")
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                bufferevent_setwatermark(self._bev, events, low, high)
        else:
            bufferevent_setwatermark(self._bev, events, low, high)

    def get_watermark(self, short events):
        """``(low, high)`` for READ or WRITE."""
        cdef size_t low = 0, high = 0
        self._ensure_open()
        if events not in (EV_READ, EV_WRITE):
            raise ValueError("get_watermark takes READ or WRITE")
        bufferevent_getwatermark(self._bev, events, &low, &high)
        return (low, high)

    def flush(self, short iotype=EV_WRITE, int mode=BEV_FLUSH):
        """Push data through (filters act on it; a socket bufferevent has nothing to flush).
        Returns -1 on failure, 0 if nothing was flushed, 1 if something was."""
        cdef int rc
        self._ensure_open()
        _check_rw(iotype)
        if mode not in (BEV_NORMAL, BEV_FLUSH, BEV_FINISHED):
            raise ValueError("mode must be NORMAL, FLUSH or FINISHED")
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                rc = bufferevent_flush(self._bev, iotype, <bufferevent_flush_mode>mode)
        else:
            rc = bufferevent_flush(self._bev, iotype, <bufferevent_flush_mode>mode)
        return rc

    def fileno(self):
        """The socket's fd (-1 if none yet)."""
        self._ensure_open()
        return bufferevent_getfd(self._bev)

    @property
    def priority(self):
        """The priority of its events, like Event.priority."""
        self._ensure_open()
        return bufferevent_get_priority(self._bev)

    @priority.setter
    def priority(self, int value):
        self._ensure_open()
        if not 0 <= value < self._base.priorities:
            raise ValueError(f"priority must be in range({self._base.priorities}), not {value}")
        if bufferevent_priority_set(self._bev, value) != 0:
            raise RuntimeError("bufferevent_priority_set failed")

    @property
    def options(self):
        """The options it was created with (THREADSAFE implies DEFER_CALLBACKS|UNLOCK_CALLBACKS)."""
        return self._options

    # -- rate limiting ----------------------------------------------------------------------------

    def set_rate_limit(self, read_rate=None, read_burst=None, write_rate=None, write_burst=None,
                       tick=1.0):
        """Token-bucket rate limits in bytes per ``tick`` seconds; all None removes the limit."""
        self._ensure_open()
        if read_rate is None and write_rate is None:
            bufferevent_set_rate_limit(self._bev, NULL)
            self._rate_limit = None
            return
        cfg = _TokenBucket(read_rate, read_burst, write_rate, write_burst, tick)
        if bufferevent_set_rate_limit(self._bev, (<_TokenBucket>cfg)._cfg) != 0:
            raise OSError(errno, "bufferevent_set_rate_limit failed")
        self._rate_limit = cfg     # libevent keeps a pointer to the configuration

    # -- pairs and filters ------------------------------------------------------------------------

    @staticmethod
    def pair(EventBase base not None, int options=0):
        """Two BufferEvents connected to each other (bufferevent_pair_new): what one writes, the
        other reads."""
        cdef bufferevent *bevs[2]
        base._ensure_open()
        options = _checked_options(options)
        if bufferevent_pair_new(base._base, options, bevs) != 0:
            raise OSError(errno, "bufferevent_pair_new failed")
        cdef BufferEvent a = BufferEvent.__new__(BufferEvent)
        cdef BufferEvent b = BufferEvent.__new__(BufferEvent)
        a._init(base, bevs[0], options)
        b._init(base, bevs[1], options)
        return a, b

    @staticmethod
    def filter(BufferEvent underlying not None, input_filter=None, output_filter=None, *,
               int options=BEV_OPT_CLOSE_ON_FREE):
        """A BufferEvent on top of ``underlying`` whose data passes through Python filters:
        ``filter(src: Buffer, dst: Buffer, limit: int, mode: int) -> FILTER_OK | FILTER_NEED_MORE |
        FILTER_ERROR`` moves (transformed) data from ``src`` to ``dst``; ``input_filter`` for data read
        from ``underlying``, ``output_filter`` for data written to it. With CLOSE_ON_FREE, closing the
        filter closes ``underlying`` too."""
        underlying._ensure_open()
        if underlying._filter_above != NULL:
            raise ValueError("this BufferEvent already has a filter on top of it")
        options = _checked_options(options)
        cdef BufferEvent self = BufferEvent.__new__(BufferEvent)
        self._input_filter = _callable_or_none(input_filter)
        self._output_filter = _callable_or_none(output_filter)
        cdef bufferevent_filter_cb incoming = NULL
        cdef bufferevent_filter_cb outgoing = NULL
        if input_filter is not None:
            incoming = _input_filter_callback
        if output_filter is not None:
            outgoing = _output_filter_callback
        cdef bufferevent *bev = bufferevent_filter_new(underlying._bev, incoming, outgoing, options, NULL,
                                                       <void *>self)
        if bev == NULL:
            raise OSError(errno, "bufferevent_filter_new failed")
        self._init(underlying._base, bev, options)
        self._underlying = underlying
        underlying._filter_above = <PyObject *>self
        return self

    @property
    def underlying(self):
        """The BufferEvent under a filter (None for others)."""
        return self._underlying

    # -- closing ----------------------------------------------------------------------------------

    @property
    def closed(self):
        """True once close() or abort() was called (or its base closed)."""
        return self._bev == NULL or self._closing

    def close(self):
        """Stop reading and free the bufferevent once its output has drained (or at once if it is
        empty); the peer gets everything written so far, as with asyncio's Transport.close().
        Closing twice does nothing. Below a CLOSE_ON_FREE filter, this closes the filter (which
        frees this one once its output has drained)."""
        cdef bufferevent *bev = self._bev
        cdef BufferEvent above
        if bev == NULL or self._closing:
            return
        self._ensure_open()
        if self._filter_above != NULL:
            # libevent gave this one's callbacks to the filter: it cannot see its own output drain.
            above = <BufferEvent>self._filter_above
            if not above._options & BEV_OPT_CLOSE_ON_FREE:
                raise ValueError("a filter without CLOSE_ON_FREE is on top of this BufferEvent: "
                                 "close the filter first")
            self._closing = True
            self._on_read = self._on_write = self._on_event = None
            above.close()
            return
        if self._underlying is not None:
            # A filter: push what it holds through the output filter into the BufferEvent below,
            # then free it once that one's output has drained too (freeing a CLOSE_ON_FREE filter
            # frees the one below, unsent output and all).
            bufferevent_flush(bev, EV_WRITE, BEV_FINISHED)
            bufferevent_disable(bev, EV_READ)
            self._closing = True
            self._on_read = self._on_write = self._on_event = None
            _finish_filter_close(self)
            return
        if evbuffer_get_length(bufferevent_get_output(bev)) == 0:
            self._drained()
            return
        self._closing = True
        self._on_read = self._on_write = self._on_event = None
        bufferevent_disable(bev, EV_READ)
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0)
        bufferevent_enable(bev, EV_WRITE)

    def abort(self):
        """Free the bufferevent now, dropping any unsent output (bufferevent_free)."""
        if self._bev == NULL:
            return
        if not self._closing:
            self._ensure_open()
        self._free()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._bev == NULL:
            return "<BufferEvent closed>"
        state = " closing" if self._closing else ""
        return (f"<BufferEvent fd={bufferevent_getfd(self._bev)} enabled={bufferevent_get_enabled(self._bev)}"
                f" input={evbuffer_get_length(bufferevent_get_input(self._bev))}"
                f" output={evbuffer_get_length(bufferevent_get_output(self._bev))}{state}>")


cdef void _stop_io(bufferevent *bev) noexcept nogil:
    # libevent may still write once more after bufferevent_free (e.g. in the write callback that
    # reported CONNECTED): whatever is left in the output now is dropped, as abort() promises.
    bufferevent_disable(bev, EV_READ | EV_WRITE)
    if bufferevent_pair_get_partner(bev) != NULL:
        # A pair only tells its partner EOF when flushed with FINISHED.
        evbuffer_unfreeze(bufferevent_get_output(bev), 1)
        evbuffer_drain(bufferevent_get_output(bev), evbuffer_get_length(bufferevent_get_output(bev)))
        bufferevent_flush(bev, EV_WRITE, BEV_FINISHED)


def _release_hold(BufferEvent bev):
    bev._release()


cpdef _finish_filter_close(BufferEvent bev):
    """Free a closing filter once nothing is left to send below it; else look again in 10 ms."""
    cdef BufferEvent below = bev._underlying
    if bev._bev == NULL or not bev._closing:
        return
    if (below is None or below._bev == NULL
            or (evbuffer_get_length(bufferevent_get_output(bev._bev)) == 0
                and evbuffer_get_length(bufferevent_get_output(below._bev)) == 0)):
        bev._drained()
    else:
        bev._base.call_later(0.01, _finish_filter_close, bev)


cdef int _check_rw(short events) except -1:
    if events & ~(EV_READ | EV_WRITE) or not events:
        raise ValueError(f"events must be READ and/or WRITE, not {events!r}")
    return 0


cdef object _callable_or_none(value):
    if value is not None and not callable(value):
        raise TypeError(f"a callback must be callable or None, not {type(value).__name__}")
    return value


cdef class _TokenBucket:
    """An ev_token_bucket_cfg, kept alive by the BufferEvent (or group) that uses it."""
    cdef ev_token_bucket_cfg *_cfg

    def __cinit__(self, read_rate, read_burst, write_rate, write_burst, tick):
        cdef timeval tv
        cdef size_t unlimited = <size_t>0x7fffffff   # EV_RATE_LIMIT_MAX
        rr = unlimited if read_rate is None else read_rate
        rb = rr if read_burst is None else read_burst
        wr = unlimited if write_rate is None else write_rate
        wb = wr if write_burst is None else write_burst
        for name, v in (("read_rate", rr), ("read_burst", rb), ("write_rate", wr), ("write_burst", wb)):
            if not isinstance(v, int):
                raise TypeError(f"{name} must be an int (bytes per tick), not {type(v).__name__}")
            if not 0 < v <= unlimited:
                raise ValueError(f"{name} must be an int in 1..{unlimited}, not {v!r}")
        if rb < rr or wb < wr:
            raise ValueError("a burst must be at least its rate")
        _positive_timeval(tick, &tv)
        self._cfg = ev_token_bucket_cfg_new(rr, rb, wr, wb, &tv)
        if self._cfg == NULL:
            raise ValueError("libevent rejected the rate limit")

    def __dealloc__(self):
        if self._cfg != NULL:
            ev_token_bucket_cfg_free(self._cfg)


@cython.no_gc_clear   # __dealloc__ needs _base alive to free the group
cdef class RateLimitGroup(Handle):
    """A token bucket shared by several BufferEvents (bufferevent_rate_limit_group): together they
    read and write at most ``read_rate``/``write_rate`` bytes per ``tick`` seconds.

    ``RateLimitGroup(base, read_rate=None, read_burst=None, write_rate=None, write_burst=None, tick=1.0)``;
    ``add(bev)``/``remove(bev)``; ``close()`` (or the base's close()) frees it, after detaching its
    members, as libevent requires."""

    cdef bufferevent_rate_limit_group *_group
    cdef _TokenBucket _cfg
    cdef object _members     # a WeakSet: members refer to the group, not the other way round

    def __cinit__(self):
        self._group = NULL

    def __init__(self, EventBase base not None, read_rate=None, read_burst=None, write_rate=None,
                 write_burst=None, tick=1.0):
        if self._group != NULL:
            raise RuntimeError("RateLimitGroup.__init__() called twice")
        base._ensure_open()
        self._cfg = _TokenBucket(read_rate, read_burst, write_rate, write_burst, tick)
        self._group = bufferevent_rate_limit_group_new(base._base, self._cfg._cfg)
        if self._group == NULL:
            raise OSError(errno, "bufferevent_rate_limit_group_new failed")
        self._members = _weakref.WeakSet()
        self._link(base)
        self._hold()

    def __dealloc__(self):
        # The base holds an open group, so this only runs once it is closed, or when the GC tears
        # down a dropped base with its handles; its members are gone or detached by then.
        if self._group != NULL:
            bufferevent_rate_limit_group_free(self._group)
            self._group = NULL
            self._unlink()

    cdef int _ensure(self) except -1:
        if self._group == NULL:
            raise ValueError("this RateLimitGroup is closed")
        return 0

    def add(self, BufferEvent bev not None):
        """Make ``bev`` share this group's bucket."""
        self._ensure()
        bev._ensure_open()
        if bev._base is not self._base:
            raise ValueError("the BufferEvent belongs to another EventBase")
        if bev._rate_group is not None and bev._rate_group is not self:
            (<RateLimitGroup>bev._rate_group).remove(bev)
        if bufferevent_add_to_rate_limit_group(bev._bev, self._group) != 0:
            raise OSError(errno, "bufferevent_add_to_rate_limit_group failed")
        if bev._rate_group is None:
            self._members.add(bev)
            bev._rate_group = self

    def remove(self, BufferEvent bev not None):
        """Take ``bev`` out of the group."""
        self._ensure()
        if bev._rate_group is self:
            self._members.discard(bev)
            bev._rate_group = None
            bufferevent_remove_from_rate_limit_group(bev._bev)

    def configure(self, read_rate=None, read_burst=None, write_rate=None, write_burst=None, tick=1.0):
        """Change the group's limits."""
        self._ensure()
        cfg = _TokenBucket(read_rate, read_burst, write_rate, write_burst, tick)
        if bufferevent_rate_limit_group_set_cfg(self._group, (<_TokenBucket>cfg)._cfg) != 0:
            raise OSError(errno, "bufferevent_rate_limit_group_set_cfg failed")
        self._cfg = cfg

    cdef int _close_from_base(self) except -1:
        self.close()
        return 0

    @property
    def closed(self):
        """True once closed."""
        return self._group == NULL

    def close(self):
        """Detach the members and free the group."""
        if self._group == NULL:
            return
        for bev in list(self._members):
            (<BufferEvent>bev)._rate_group = None
            bufferevent_remove_from_rate_limit_group((<BufferEvent>bev)._bev)
        self._members.clear()
        bufferevent_rate_limit_group_free(self._group)
        self._group = NULL
        self._unlink()
        self._release()
