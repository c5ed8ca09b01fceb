# Declarations of levent._buffer, so that other modules (bufferevents) can cimport Buffer, wrap the
# evbuffers libevent owns (Buffer.borrow) and release the Python objects libevent stopped referencing.
from libevent_pxd.buffer cimport evbuffer, evbuffer_cb_entry


cdef class Buffer:
    cdef evbuffer *_buf
    cdef bint _owned          # True: Buffer() created _buf and frees it
    cdef object _owner        # borrowed: the object that owns _buf (kept alive by this reference)
    cdef object _error_sink   # borrowed: callable(exc) for exceptions raised in change callbacks
    # True once invalidate() ran: every use raises ValueError.
    cdef bint _invalidated
    # Owned only. Live buffer-protocol exports (memoryview(buf)) and the contiguous memory they
    # show: while _exports > 0 both ends are frozen and every method that changes the buffer raises.
    cdef Py_ssize_t _exports
    cdef const char *_export_ptr
    # Owned only. A reserve() is open: libevent's reserved space must not move until commit/cancel.
    cdef bint _reserved
    # Owned only. The ends frozen by freeze() (exports freeze both ends on top of these).
    cdef bint _frozen_front
    cdef bint _frozen_back
    # Change callbacks: the BufferCallback handles, called in order by one libevent registration
    # (_cb_entry, added on first use and never removed before the evbuffer is freed, only disabled:
    # libevent must not see an entry removed while it walks its list). A borrowed Buffer holds a
    # reference to itself while the entry is enabled, as libevent may call it from the loop.
    cdef list _callbacks
    cdef evbuffer_cb_entry *_cb_entry
    cdef bint _cb_enabled
    # An exception raised by a change callback, re-raised when the method that caused the change
    # returns.
    cdef object _cb_exc
    # Borrowed only: thread ident -> depth of the Buffer methods running in that thread. Such a
    # method may hold the evbuffer's lock, or wait for it with the GIL released.
    cdef dict _busy
    cdef object __weakref__

    @staticmethod
    cdef Buffer borrow(evbuffer *buf, object owner, object error_sink)
    cdef int invalidate(self) except -1   # the owner is about to free _buf: afterwards every use raises ValueError("this BufferEvent is closed; its buffers are gone") (free any change-callback registrations first)
    cdef int ensure_open(self) except -1

    cdef evbuffer *_enter(self) except NULL
    cdef int _leave(self, evbuffer *buf) except -1
    cdef int _check_mutable(self, str op, bint front, bint back) except -1
    cdef int _refused(self, str op, bint front, bint back) except -1
    cdef Py_ssize_t _copy_out(self, evbuffer *buf, char *dst, Py_ssize_t n, Py_ssize_t offset) except -1
    cdef int _enable_callbacks(self, bint enable) except -1
    cdef void _callback_failed(self, object exc) noexcept
    cdef bytes _take(self, Py_ssize_t n, str op)
    cdef int _move_from(self, Buffer other, bint front) except -1
    cdef int _check_freezable(self) except -1


cdef void release_pending_references() noexcept   # call with the GIL held
