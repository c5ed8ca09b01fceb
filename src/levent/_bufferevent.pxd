# Declarations of levent._bufferevent, so that the Listener can wrap accepted fds straight into
# BufferEvents (its fast path) without going through Python.
from cpython.ref cimport PyObject
from libevent_pxd.bufferevent cimport bufferevent
from levent._core cimport EventBase, Handle
from levent._buffer cimport Buffer


cdef class BufferEvent(Handle):
    cdef bufferevent *_bev
    cdef int _options
    cdef object _on_read
    cdef object _on_write
    cdef object _on_event
    # Created on first use of .input/.output; invalidated when the bufferevent is freed.
    cdef Buffer _input
    cdef Buffer _output
    # The socket object passed in when the BufferEvent does not own its fd (no CLOSE_ON_FREE): kept
    # so that it is not closed under the bufferevent.
    cdef object _sock
    # connect() was called and neither CONNECTED nor ERROR has been reported yet.
    cdef bint _connecting
    # close() was called: the bufferevent is freed once its output has drained.
    cdef bint _closing
    # Filters: the BufferEvent below this one (kept alive: libevent points at it), the filter above
    # this one (borrowed, so the pair is no reference cycle; the filter clears it when it goes), and
    # the Python filter functions.
    cdef BufferEvent _underlying
    cdef PyObject *_filter_above
    cdef object _input_filter
    cdef object _output_filter
    cdef object _rate_limit
    # The RateLimitGroup it is in: left before the bufferevent is freed, because libevent frees it
    # later (a finalizer) and asserts that a group being freed has no members.
    cdef object _rate_group

    @staticmethod
    cdef BufferEvent from_fd(EventBase base, int fd, int options)
    cdef int _init(self, EventBase base, bufferevent *bev, int options) except -1
    cdef int _ensure_open(self) except -1
    cdef int _free(self) except -1
    # Hooks for TLSBufferEvent: how an event is reported, and what a graceful close does last.
    cdef tuple _describe_event(self, short what, int err)
    cdef int _drained(self) except -1
    cdef int _release_c(self, bint dying) except -1
    cdef int _forget(self) except -1


# Checks BufferEvent options; THREADSAFE implies DEFER_CALLBACKS | UNLOCK_CALLBACKS (see the module).
cdef int _checked_options(int options) except -1


# Frees a closing filter once nothing is left to send below it (polls every 10 ms).
cpdef _finish_filter_close(BufferEvent bev)
