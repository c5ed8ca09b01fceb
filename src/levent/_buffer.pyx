# cython: freethreading_compatible = False
"""Buffer: libevent's evbuffer, bound directly.

Memory rules, which everything here relies on:

* A Buffer made with ``Buffer()`` owns its evbuffer; a borrowed Buffer (Buffer.borrow, for a
  bufferevent's input and output) never frees it, and its owner calls invalidate() before freeing it.
* No pointer into an evbuffer is kept across a call that can run Python code: a callback, a finalizer
  or another thread could change the buffer under it. The only long-lived pointers are those of a
  buffer-protocol export (both ends frozen, every change refused until it is released), of an open
  reservation (every change refused until commit/cancel) and of read_view()'s private evbuffers,
  which nothing else can reach.
* Python objects are touched only with the GIL held. Memory libevent references for add_reference()
  is released through a list drained with the GIL (release_pending_references), never from inside
  libevent, which may call the cleanup without the GIL, holding its locks, or halfway through
  freeing a chain list.
* A borrowed evbuffer may have a lock, which libevent holds while it runs change callbacks (which
  need the GIL): levent takes that lock only with the GIL released, so the order is always lock
  first, then GIL.
"""

cimport cython
from cpython.buffer cimport (
    PyObject_GetBuffer, PyBuffer_Release, PyBuffer_FillInfo, PyBUF_SIMPLE, PyBUF_WRITABLE,
)
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.ref cimport Py_INCREF, Py_DECREF
from libc.errno cimport errno
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from posix.stat cimport struct_stat, fstat, S_ISREG
from posix.unistd cimport close as close_fd

from libevent_pxd.util cimport ev_ssize_t
from libevent_pxd.buffer cimport *
from levent._core cimport _fileno

import os

cdef extern from "fcntl.h" nogil:
    int fcntl(int fd, int cmd, ...)
    enum: F_DUPFD_CLOEXEC

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil

# add_reference()'s bookkeeping, in C because libevent may drop a referenced chain in any thread,
# with or without the GIL (the loop thread writing a bufferevent out, holding libevent's locks).
# The cleanup only pushes the export onto a lock-free stack: it never blocks, never needs the GIL
# and never runs Python code inside libevent (a finalizer that touched the same evbuffer while
# libevent walks its chains would read freed memory). release_pending_references() pops the whole
# stack with one atomic exchange and releases the exports with the GIL held.
cdef extern from *:
    """
    #include <Python.h>
    typedef struct levent_buffer_ref {
        Py_buffer view;
        struct levent_buffer_ref *next;
    } levent_buffer_ref;

    static levent_buffer_ref *levent_pending_refs = NULL;

    static void levent_ref_cleanup(const void *data, size_t datalen, void *extra) {
        levent_buffer_ref *ref = (levent_buffer_ref *)extra;
        levent_buffer_ref *head = __atomic_load_n(&levent_pending_refs, __ATOMIC_RELAXED);
        (void)data;
        (void)datalen;
        do {
            ref->next = head;
        } while (!__atomic_compare_exchange_n(&levent_pending_refs, &head, ref, 1,
                                              __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    }

    static levent_buffer_ref *levent_take_pending_refs(void) {
        if (__atomic_load_n(&levent_pending_refs, __ATOMIC_RELAXED) == NULL)
            return NULL;
        return __atomic_exchange_n(&levent_pending_refs, NULL, __ATOMIC_ACQUIRE);
    }

    /* The address a zero-length export points at. */
    static const char levent_empty_bytes[1] = {0};
    """
    ctypedef struct levent_buffer_ref:
        Py_buffer view
        levent_buffer_ref *next
    void levent_ref_cleanup(const void *data, size_t datalen, void *extra) noexcept nogil
    levent_buffer_ref *levent_take_pending_refs() noexcept nogil
    const char levent_empty_bytes[1]


# ---------------------------------------------------------------------------------------------------
# Constants: libevent's end-of-line styles for Buffer.readln(), re-exported by levent/__init__.py.

EOL_ANY = EVBUFFER_EOL_ANY
EOL_CRLF = EVBUFFER_EOL_CRLF
EOL_CRLF_STRICT = EVBUFFER_EOL_CRLF_STRICT
EOL_LF = EVBUFFER_EOL_LF
EOL_NUL = EVBUFFER_EOL_NUL

# Reservation states.
cdef enum:
    _RES_OPEN = 0
    _RES_CLOSING = 1      # cancel() asked while views were alive: cancelled when the last goes
    _RES_COMMITTED = 2
    _RES_CANCELLED = 3


cdef unsigned int _FILE_FLAGS = EVBUF_FS_CLOSE_ON_FREE | EVBUF_FS_DISABLE_SENDFILE


cdef void release_pending_references() noexcept:
    """Release the exports of add_reference() objects whose chains libevent dropped (GIL held).

    Releasing may run finalizers; the stack is detached first, so a finalizer that uses a Buffer
    (which calls this again) sees only newer entries.
    """
    cdef levent_buffer_ref *ref = levent_take_pending_refs()
    cdef levent_buffer_ref *nxt
    while ref != NULL:
        nxt = ref.next
        PyBuffer_Release(&ref.view)
        free(ref)
        ref = nxt


# ---------------------------------------------------------------------------------------------------
# Helpers

cdef int _get_buffer(object obj, Py_buffer *view, bint writable, str what) except -1:
    """Export obj's memory into view (contiguous), or raise TypeError saying what is needed."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    except (TypeError, BufferError) as exc:
        kind = "a writable bytes-like object (bytearray, memoryview, ...)" if writable else \
            "a bytes-like object (bytes, bytearray, memoryview, ...)"
        raise TypeError(f"{what} needs {kind}, not {type(obj).__name__}: {exc}") from None
    return 0


cdef int _open_fd(object fileobj) except -1:
    cdef int fd = _fileno(fileobj)
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    return fd


# The change callback libevent calls: one registration per Buffer, which calls every BufferCallback.
# It runs at the end of a libevent operation, which allows changes to the buffer from the callback.
cdef void _on_change(evbuffer *b, const evbuffer_cb_info *info, void *arg) noexcept with gil:
    # arg is alive: an owned Buffer's callbacks only run inside its own methods (or while its owner
    # moves data out of it), and a borrowed Buffer holds a reference to itself while enabled.
    cdef Buffer self = <Buffer>arg
    cdef size_t added = info.n_added
    cdef size_t deleted = info.n_deleted
    cdef size_t orig = info.orig_size
    cdef BufferCallback handle
    try:
        callbacks = self._callbacks
        if not callbacks:
            return
        # A callback may add or remove callbacks: walk a snapshot; a removed one has no _fn.
        for handle in tuple(callbacks):
            fn = handle._fn
            if fn is None:
                continue
            try:
                fn(self, added, deleted, orig)
            except BaseException as exc:
                self._callback_failed(exc)
    except BaseException as exc:
        self._callback_failed(exc)


# ---------------------------------------------------------------------------------------------------

cdef class Buffer:
    """A byte buffer: libevent's ``evbuffer``, a chain of memory blocks that moves data between
    buffers without copying.

    ``Buffer()`` makes an empty buffer; ``Buffer(data)`` one holding a copy of ``data``. ``len()``,
    ``bool()`` and ``bytes()`` work as for bytes. Read with :meth:`read`, :meth:`remove`,
    :meth:`readinto`, :meth:`readln`, :meth:`copyout` (non-destructive), :meth:`read_view`
    (zero-copy); write with :meth:`add`, :meth:`prepend`, :meth:`add_buffer` (moves blocks, no
    copy), :meth:`add_reference` (zero-copy), :meth:`add_file`, :meth:`reserve` (write in place).

    ``memoryview(buf)`` gives a read-only view of the whole contents, made contiguous first; while
    any such view is alive the buffer cannot change, and every method that would change it raises
    BufferError until the view is released.

    A buffer obtained from a BufferEvent belongs to it: it cannot be exported or reserved (libevent
    fills and drains it from the loop) and is unusable once the BufferEvent is closed.
    """

    def __cinit__(self):
        self._buf = NULL
        self._owned = False
        self._invalidated = False
        self._exports = 0
        self._export_ptr = NULL
        self._reserved = False
        self._frozen_front = self._frozen_back = False
        self._cb_entry = NULL
        self._cb_enabled = False

    def __init__(self, data=None):
        if self._buf != NULL or self._invalidated:
            raise RuntimeError("Buffer.__init__() called twice")
        self._buf = evbuffer_new()
        if self._buf == NULL:
            raise MemoryError("evbuffer_new failed")
        self._owned = True
        if data is not None:
            self.add(data)

    def __dealloc__(self):
        # An owned Buffer cannot die while exported or reserved: the memoryview or the reservation
        # holds a reference. evbuffer_free drops every chain and the callback registration.
        if self._owned and self._buf != NULL:
            evbuffer_free(self._buf)
            self._buf = NULL
            release_pending_references()

    # -- the cdef API (bufferevents) ------------------------------------------------------------------

    @staticmethod
    cdef Buffer borrow(evbuffer *buf, object owner, object error_sink):
        """Wrap an evbuffer that ``owner`` owns and frees; it calls invalidate() before freeing it."""
        cdef Buffer self = Buffer.__new__(Buffer)
        self._buf = buf
        self._owned = False
        self._owner = owner
        self._error_sink = error_sink
        self._busy = {}
        return self

    cdef int invalidate(self) except -1:
        """The owner is about to free the evbuffer: detach from it, for good.

        Raises RuntimeError if a Buffer method is running in another thread (it may hold or wait
        for the evbuffer's lock): try again once it returned. Allowed from this thread's own
        change callbacks; the method that triggered them then still uses the evbuffer until it
        returns, holding its lock, so the free must be deferred past that (bufferevent_free()
        finalizes in the loop, under the bufferevent's lock, which does that).
        """
        cdef evbuffer *buf = self._buf
        cdef unsigned long me
        if buf == NULL:
            return 0
        if self._owned:
            raise RuntimeError("invalidate() is for borrowed Buffers; a Buffer() frees its own evbuffer")
        me = PyThread_get_thread_ident()
        for tid in self._busy:
            if tid != me:
                raise RuntimeError("this Buffer is in use in another thread; close again once that "
                                   "call has returned")
        self._buf = NULL
        self._invalidated = True
        if self._cb_entry != NULL:
            if self._cb_enabled:
                # Disabled, not removed: libevent may be walking its callback list (this may run
                # from one of them) and frees the entry with the evbuffer; a disabled entry is
                # never called, so its pointer to us is never used again.
                with nogil:
                    evbuffer_cb_clear_flags(buf, self._cb_entry, EVBUFFER_CB_ENABLED)
                self._cb_enabled = False
                Py_DECREF(self)     # the registration's reference; the caller holds another
            self._cb_entry = NULL
        callbacks = self._callbacks
        self._callbacks = None
        if callbacks:
            for handle in callbacks:
                (<BufferCallback>handle)._buffer = None
                (<BufferCallback>handle)._fn = None
        self._owner = None
        self._error_sink = None
        return 0

    cdef int ensure_open(self) except -1:
        if self._buf == NULL:
            if self._invalidated:
                raise ValueError("this BufferEvent is closed; its buffers are gone")
            raise ValueError("this Buffer was not initialized; create it with Buffer()")
        return 0

    # -- internals ------------------------------------------------------------------------------------

    cdef evbuffer *_enter(self) except NULL:
        """Start a method: release dropped references, check the buffer is usable and, if borrowed,
        take its lock (GIL released while waiting). Every _enter is paired with _leave."""
        cdef evbuffer *buf
        cdef unsigned long tid
        release_pending_references()
        buf = self._buf
        if buf == NULL:
            self.ensure_open()
        if not self._owned:
            tid = PyThread_get_thread_ident()
            self._busy[tid] = self._busy.get(tid, 0) + 1
            with nogil:
                evbuffer_lock(buf)
        return buf

    cdef int _leave(self, evbuffer *buf) except -1:
        """End a method: unlock, release dropped references, re-raise a callback's exception."""
        cdef unsigned long tid
        if not self._owned:
            evbuffer_unlock(buf)
            tid = PyThread_get_thread_ident()
            depth = self._busy[tid] - 1
            if depth:
                self._busy[tid] = depth
            else:
                del self._busy[tid]
        release_pending_references()
        if self._cb_exc is not None:
            exc = self._cb_exc
            self._cb_exc = None
            try:
                raise exc
            finally:
                exc = None
        return 0

    cdef int _check_mutable(self, str op, bint front, bint back) except -1:
        """Refuse a change that an export, a reservation or freeze() forbids (front: the change
        drains or prepends; back: it appends)."""
        if self._exports:
            raise BufferError(f"cannot {op}: this Buffer is exported (a memoryview of it is alive); "
                              "release the memoryview first")
        if self._reserved:
            raise BufferError(f"cannot {op}: a reservation from reserve() is open; commit() or "
                              "cancel() it first")
        if front and self._frozen_front:
            raise BufferError(f"cannot {op}: the front of this Buffer is frozen; call "
                              "unfreeze(front=True) first")
        if back and self._frozen_back:
            raise BufferError(f"cannot {op}: the back of this Buffer is frozen; call "
                              "unfreeze(front=False) first")
        return 0

    cdef int _refused(self, str op, bint front, bint back) except -1:
        """libevent returned -1 after _check_mutable passed."""
        if self._owned:
            # Nothing else can refuse a change to an owned buffer.
            raise MemoryError(f"libevent could not {op} (out of memory)")
        end = "front" if front and not back else "back" if back and not front else "front or back"
        raise BufferError(f"cannot {op}: libevent refused, as the {end} of this BufferEvent buffer "
                          "is frozen (you read from an input buffer and write to an output buffer; "
                          "libevent does the rest)")

    cdef Py_ssize_t _copy_out(self, evbuffer *buf, char *dst, Py_ssize_t n, Py_ssize_t offset) except -1:
        """Copy up to n bytes starting at offset into dst; returns how many were copied.

        Reads the chains through evbuffer_peek: unlike evbuffer_copyout it also works while the
        front is frozen (an export, freeze(), a BufferEvent's output buffer).
        """
        cdef evbuffer_iovec small[8]
        cdef evbuffer_iovec *vecs = small
        cdef evbuffer_ptr start
        cdef int nvec, i
        cdef Py_ssize_t done = 0, take
        if n <= 0:
            return 0
        if evbuffer_ptr_set(buf, &start, <size_t>offset, EVBUFFER_PTR_SET) != 0:
            return 0
        nvec = evbuffer_peek(buf, n, &start, vecs, 8)
        if nvec > 8:
            vecs = <evbuffer_iovec *>PyMem_Malloc(nvec * sizeof(evbuffer_iovec))
            if vecs == NULL:
                raise MemoryError()
            nvec = evbuffer_peek(buf, n, &start, vecs, nvec)
        try:
            for i in range(nvec):
                take = <Py_ssize_t>vecs[i].iov_len
                if take > n - done:
                    take = n - done
                memcpy(dst + done, vecs[i].iov_base, take)
                done += take
                if done == n:
                    break
        finally:
            if vecs != small:
                PyMem_Free(vecs)
        return done

    cdef int _enable_callbacks(self, bint enable) except -1:
        """Switch the libevent registration on or off (inside _enter/_leave)."""
        if enable == self._cb_enabled:
            return 0
        if enable:
            evbuffer_cb_set_flags(self._buf, self._cb_entry, EVBUFFER_CB_ENABLED)
            if not self._owned:
                Py_INCREF(self)
        else:
            evbuffer_cb_clear_flags(self._buf, self._cb_entry, EVBUFFER_CB_ENABLED)
        self._cb_enabled = enable
        if not enable and not self._owned:
            Py_DECREF(self)     # callers hold their own reference
        return 0

    cdef void _callback_failed(self, object exc) noexcept:
        """A change callback raised: hand exc to the error sink (borrowed), else keep it for _leave."""
        sink = self._error_sink
        if sink is not None:
            try:
                sink(exc)
                return
            except BaseException as sink_exc:
                exc = sink_exc
        if self._cb_exc is None:
            self._cb_exc = exc
        elif exc is not self._cb_exc:
            # A second error before the method returned: chain it, so that neither is lost.
            if exc.__context__ is None:
                exc.__context__ = self._cb_exc
            self._cb_exc = exc

    # -- size and contents ------------------------------------------------------------------------

    def __len__(self):
        cdef evbuffer *buf = self._enter()
        try:
            return <Py_ssize_t>evbuffer_get_length(buf)
        finally:
            self._leave(buf)

    def __bool__(self):
        return len(self) != 0

    def __bytes__(self):
        return self.copyout()

    def __repr__(self):
        if self._buf == NULL:
            return "<Buffer closed>" if self._invalidated else "<Buffer uninitialized>"
        cdef evbuffer *buf = self._enter()
        try:
            n = evbuffer_get_length(buf)
            chains = evbuffer_peek(buf, -1, NULL, NULL, 0)
        finally:
            self._leave(buf)
        extra = "" if self._owned else " borrowed"
        if self._exports:
            extra += f" exported={self._exports}"
        if self._reserved:
            extra += " reserved"
        if self._frozen_front or self._frozen_back:
            extra += " frozen=" + "|".join(
                [e for e, f in (("front", self._frozen_front), ("back", self._frozen_back)) if f])
        if self._callbacks:
            extra += f" callbacks={len(self._callbacks)}"
        return f"<Buffer len={n} chains={chains}{extra}>"

    # -- adding -----------------------------------------------------------------------------------

    def add(self, data):
        """Append a copy of ``data`` (any bytes-like object)."""
        cdef Py_buffer view
        _get_buffer(data, &view, False, "add()")
        cdef evbuffer *buf
        try:
            buf = self._enter()
            try:
                # Checked after taking data's buffer: exporting data may have been exporting us.
                self._check_mutable("add", False, True)
                if view.len and evbuffer_add(buf, view.buf, view.len) != 0:
                    self._refused("add", False, True)
            finally:
                self._leave(buf)
        finally:
            PyBuffer_Release(&view)

    def prepend(self, data):
        """Insert a copy of ``data`` (any bytes-like object) at the front."""
        cdef Py_buffer view
        _get_buffer(data, &view, False, "prepend()")
        cdef evbuffer *buf
        try:
            buf = self._enter()
            try:
                self._check_mutable("prepend", True, False)
                if view.len and evbuffer_prepend(buf, view.buf, view.len) != 0:
                    self._refused("prepend", True, False)
            finally:
                self._leave(buf)
        finally:
            PyBuffer_Release(&view)

    def add_buffer(self, Buffer other not None):
        """Move all of ``other``'s data to the end of this buffer, without copying (``other`` is
        left empty)."""
        self._move_from(other, False)

    def prepend_buffer(self, Buffer other not None):
        """Move all of ``other``'s data to the front of this buffer, without copying (``other``
        is left empty)."""
        self._move_from(other, True)

    cdef int _move_from(self, Buffer other, bint front) except -1:
        if other is self:
            raise ValueError("cannot move a Buffer's data into itself")
        op = "prepend_buffer" if front else "add_buffer"
        cdef evbuffer *first_buf
        cdef evbuffer *second_buf
        cdef Buffer first = self, second = other
        cdef int rc
        # Borrowed buffers are locked in address order, as libevent's EVBUFFER_LOCK2 does.
        if not self._owned and not other._owned and <size_t>other._buf < <size_t>self._buf:
            first, second = other, self
        first_buf = first._enter()
        try:
            second_buf = second._enter()
            try:
                self._check_mutable(op, front, not front)
                other._check_mutable(f"{op} from this Buffer", True, False)
                if front:
                    rc = evbuffer_prepend_buffer(self._buf, other._buf)
                else:
                    rc = evbuffer_add_buffer(self._buf, other._buf)
                if rc != 0:
                    if not other._owned:
                        other._refused(f"{op} from this buffer", True, False)
                    self._refused(op, front, not front)
            finally:
                second._leave(second_buf)
        finally:
            first._leave(first_buf)
        return 0

    def add_reference(self, data):
        """Append ``data`` (any contiguous bytes-like object) without copying it.

        The buffer keeps ``data`` exported (a bytearray cannot be resized meanwhile) until libevent
        drops that memory: once it was drained, read out, moved to a buffer that was drained, or the
        buffer was freed. Changes made to a mutable ``data`` in place show in the buffer.
        """
        cdef levent_buffer_ref *ref = <levent_buffer_ref *>malloc(sizeof(levent_buffer_ref))
        if ref == NULL:
            raise MemoryError()
        try:
            _get_buffer(data, &ref.view, False, "add_reference()")
        except BaseException:
            free(ref)
            raise
        cdef evbuffer *buf
        try:
            buf = self._enter()
            try:
                self._check_mutable("add_reference", False, True)
                if ref.view.len:
                    if evbuffer_add_reference(buf, ref.view.buf, ref.view.len,
                                              levent_ref_cleanup, ref) != 0:
                        # libevent did not take it (and will not call the cleanup).
                        self._refused("add_reference", False, True)
                    ref = NULL      # libevent's now: the cleanup may already have run
            finally:
                self._leave(buf)
        finally:
            if ref != NULL:
                PyBuffer_Release(&ref.view)
                free(ref)

    def add_file(self, file, Py_ssize_t offset=0, Py_ssize_t length=-1):
        """Append ``length`` bytes (-1: up to the end) of a regular file from ``offset``.

        ``file`` is an fd or an object with ``fileno()``; levent duplicates the fd (libevent closes
        its copy once the data is gone), so you may close yours at once. The data is memory-mapped
        (read in if mapping fails), not copied; if the file is truncated while its data is still in
        a buffer, reading that data kills the process with SIGBUS, as with the mmap module.
        """
        cdef int fd = _open_fd(file)
        cdef struct_stat st
        cdef int newfd
        cdef evbuffer_file_segment *seg
        cdef evbuffer *buf
        cdef int rc
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        if length < -1:
            raise ValueError(f"length must be >= 0, or -1 for the rest of the file, not {length}")
        newfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        if newfd < 0:
            raise OSError(errno, f"cannot duplicate fd {fd}: {os.strerror(errno)}")
        try:
            if fstat(newfd, &st) != 0:
                raise OSError(errno, f"fstat({fd}) failed: {os.strerror(errno)}")
            if not S_ISREG(st.st_mode):
                raise ValueError(f"add_file() needs a regular file; fd {fd} is not one "
                                 "(read it and add() the data)")
            if offset > st.st_size:
                raise ValueError(f"offset {offset} is past the end of the file ({st.st_size} bytes)")
            if length == -1:
                length = st.st_size - offset
            elif offset + length > st.st_size:
                raise ValueError(f"offset {offset} + length {length} is past the end of the file "
                                 f"({st.st_size} bytes)")
            buf = self._enter()
            try:
                self._check_mutable("add_file", False, True)
                if length == 0:
                    return
                # Never sendfile: a sendfile chain holds no memory, and reading it (copyout,
                # pullup, read_view of a BufferEvent's output) would read from a NULL pointer.
                seg = evbuffer_file_segment_new(newfd, offset, length, _FILE_FLAGS)
                if seg == NULL:
                    raise OSError(errno, f"libevent could not map or read fd {fd}: {os.strerror(errno)}")
                newfd = -1      # the segment's: closed when the segment is freed
                rc = evbuffer_add_file_segment(buf, seg, 0, length)
                # Our reference: on success the chain holds another; on failure this frees the
                # segment and closes the fd.
                evbuffer_file_segment_free(seg)
                if rc != 0:
                    self._refused("add_file", False, True)
            finally:
                self._leave(buf)
        finally:
            if newfd >= 0:
                close_fd(newfd)

    def expand(self, Py_ssize_t n):
        """Make room so that appending ``n`` more bytes needs no allocation."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        cdef evbuffer *buf = self._enter()
        try:
            self._check_mutable("expand", False, True)
            if evbuffer_expand(buf, <size_t>n) != 0:
                self._refused("expand", False, True)
        finally:
            self._leave(buf)

    # -- reading ----------------------------------------------------------------------------------

    def remove(self, Py_ssize_t n):
        """Remove and return the first ``n`` bytes (fewer if the buffer holds fewer)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        return self._take(n, "remove")

    def read(self, Py_ssize_t n=-1):
        """Remove and return up to ``n`` bytes from the front; all of them if ``n`` is -1."""
        if n < -1:
            raise ValueError(f"n must be >= 0, or -1 for everything, not {n}")
        return self._take(n, "read")

    cdef bytes _take(self, Py_ssize_t n, str op):
        cdef evbuffer *buf = self._enter()
        cdef Py_ssize_t length, got
        cdef bytes out
        try:
            self._check_mutable(op, True, False)
            length = <Py_ssize_t>evbuffer_get_length(buf)
            if n < 0 or n > length:
                n = length
            if n == 0:
                return b""
            out = PyBytes_FromStringAndSize(NULL, n)
            got = self._copy_out(buf, PyBytes_AS_STRING(out), n, 0)
            if evbuffer_drain(buf, <size_t>got) != 0:
                self._refused(op, True, False)
            return out if got == n else out[:got]
        finally:
            self._leave(buf)

    def readinto(self, b):
        """Move bytes from the front into the writable bytes-like ``b``; returns how many."""
        cdef Py_buffer view
        _get_buffer(b, &view, True, "readinto()")
        cdef evbuffer *buf
        cdef Py_ssize_t n, got
        try:
            buf = self._enter()
            try:
                self._check_mutable("readinto", True, False)
                n = <Py_ssize_t>evbuffer_get_length(buf)
                if n > view.len:
                    n = view.len
                got = self._copy_out(buf, <char *>view.buf, n, 0)
                if got and evbuffer_drain(buf, <size_t>got) != 0:
                    self._refused("readinto", True, False)
                return got
            finally:
                self._leave(buf)
        finally:
            PyBuffer_Release(&view)

    def drain(self, Py_ssize_t n):
        """Discard the first ``n`` bytes (all if fewer); returns how many were discarded."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        cdef evbuffer *buf = self._enter()
        cdef Py_ssize_t length
        try:
            self._check_mutable("drain", True, False)
            length = <Py_ssize_t>evbuffer_get_length(buf)
            if n > length:
                n = length
            if n and evbuffer_drain(buf, <size_t>n) != 0:
                self._refused("drain", True, False)
            return n
        finally:
            self._leave(buf)

    def copyout(self, Py_ssize_t n=-1, Py_ssize_t offset=0):
        """Return a copy of up to ``n`` bytes (all if -1) starting at ``offset``, leaving the buffer
        as it is. An ``offset`` at or past the end gives ``b""``, as slicing does."""
        if n < -1:
            raise ValueError(f"n must be >= 0, or -1 for everything, not {n}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        cdef evbuffer *buf = self._enter()
        cdef Py_ssize_t length, got
        cdef bytes out
        try:
            length = <Py_ssize_t>evbuffer_get_length(buf)
            if offset >= length:
                return b""
            if n < 0 or n > length - offset:
                n = length - offset
            if n == 0:
                return b""
            out = PyBytes_FromStringAndSize(NULL, n)
            got = self._copy_out(buf, PyBytes_AS_STRING(out), n, offset)
            return out if got == n else out[:got]
        finally:
            self._leave(buf)

    def pullup(self, Py_ssize_t n=-1):
        """Make the first ``n`` bytes (all if -1) contiguous in the buffer and return a copy of
        them, or None if the buffer holds fewer than ``n`` bytes. The buffer keeps its data.

        For the contents without a copy, use ``memoryview(buf)`` (the whole buffer, frozen while
        the view lives) or :meth:`read_view` (moves the bytes out).
        """
        if n < -1:
            raise ValueError(f"n must be >= 0, or -1 for everything, not {n}")
        cdef evbuffer *buf = self._enter()
        cdef Py_ssize_t length
        cdef unsigned char *p
        cdef bytes out
        try:
            if self._reserved:
                raise BufferError("cannot pullup: a reservation from reserve() is open; commit() or "
                                  "cancel() it first")
            # While exported, the whole buffer is already one block: evbuffer_pullup moves nothing.
            length = <Py_ssize_t>evbuffer_get_length(buf)
            if n < 0:
                n = length
            if n > length:
                return None
            if n == 0:
                return b""
            out = PyBytes_FromStringAndSize(NULL, n)
            p = evbuffer_pullup(buf, n)
            if p == NULL:
                raise MemoryError("evbuffer_pullup failed")
            memcpy(PyBytes_AS_STRING(out), p, n)
            return out
        finally:
            self._leave(buf)

    def readln(self, int eol=EVBUFFER_EOL_CRLF):
        """Remove and return one line without its end-of-line, or None if no full line is buffered.

        ``eol``: EOL_CRLF (the default: LF, optionally preceded by CR), EOL_CRLF_STRICT (CR LF),
        EOL_LF, EOL_NUL (a zero byte) or EOL_ANY (any run of CR and LF characters; a CR LF split
        across two reads counts as two line ends).
        """
        if eol not in (EVBUFFER_EOL_ANY, EVBUFFER_EOL_CRLF, EVBUFFER_EOL_CRLF_STRICT,
                       EVBUFFER_EOL_LF, EVBUFFER_EOL_NUL):
            raise ValueError(f"eol must be EOL_ANY, EOL_CRLF, EOL_CRLF_STRICT, EOL_LF or EOL_NUL, "
                             f"not {eol!r}")
        cdef evbuffer *buf = self._enter()
        cdef evbuffer_ptr pos
        cdef size_t eol_len = 0
        cdef Py_ssize_t n, got
        cdef bytes line
        try:
            self._check_mutable("readln", True, False)
            pos = evbuffer_search_eol(buf, NULL, &eol_len, <evbuffer_eol_style>eol)
            if pos.pos < 0:
                return None
            n = pos.pos
            line = PyBytes_FromStringAndSize(NULL, n)
            got = self._copy_out(buf, PyBytes_AS_STRING(line), n, 0)
            if evbuffer_drain(buf, <size_t>n + eol_len) != 0:
                self._refused("readln", True, False)
            return line if got == n else line[:got]
        finally:
            self._leave(buf)

    def search(self, pattern, start=0, end=None):
        """The index of the first ``pattern`` (bytes-like) found entirely within ``[start:end]``,
        or -1: as ``bytes.find``, negative indices included."""
        cdef Py_ssize_t s = 0 if start is None else start
        cdef Py_ssize_t e = -1 if end is None else end
        cdef Py_buffer view
        _get_buffer(pattern, &view, False, "search()")
        cdef evbuffer *buf
        cdef Py_ssize_t length
        cdef evbuffer_ptr sp, ep, found
        try:
            buf = self._enter()
            try:
                length = <Py_ssize_t>evbuffer_get_length(buf)
                # bytes.find's rules: negative indices count from the end, then clamp; a start
                # past the end finds nothing, not even b"".
                if end is None:
                    e = length
                elif e < 0:
                    e = max(e + length, 0)
                elif e > length:
                    e = length
                if s < 0:
                    s = max(s + length, 0)
                if s > length or s > e:
                    return -1
                if view.len == 0:
                    return s
                if e - s < view.len:
                    return -1
                if (evbuffer_ptr_set(buf, &sp, <size_t>s, EVBUFFER_PTR_SET) != 0
                        or evbuffer_ptr_set(buf, &ep, <size_t>e, EVBUFFER_PTR_SET) != 0):
                    return -1
                found = evbuffer_search_range(buf, <const char *>view.buf, view.len, &sp, &ep)
                return found.pos
            finally:
                self._leave(buf)
        finally:
            PyBuffer_Release(&view)

    def read_view(self, Py_ssize_t n=-1):
        """Remove up to ``n`` bytes (all if -1) from the front and return them as a read-only
        memoryview, without copying where libevent can move whole blocks.

        The bytes move into memory of their own that the view keeps alive, so the view stays
        valid whatever happens to this buffer afterwards (drained, freed, closed).
        """
        if n < -1:
            raise ValueError(f"n must be >= 0, or -1 for everything, not {n}")
        cdef _ViewData data = _ViewData.__new__(_ViewData)
        data._buf = evbuffer_new()
        if data._buf == NULL:
            raise MemoryError("evbuffer_new failed")
        cdef evbuffer *buf = self._enter()
        cdef Py_ssize_t length
        try:
            self._check_mutable("read_view", True, False)
            length = <Py_ssize_t>evbuffer_get_length(buf)
            if n < 0 or n > length:
                n = length
            if n and evbuffer_remove_buffer(buf, data._buf, <size_t>n) < 0:
                self._refused("read_view", True, False)
        finally:
            self._leave(buf)
        data._seal()
        return memoryview(data)

    # -- writing in place -------------------------------------------------------------------------

    def reserve(self, Py_ssize_t n):
        """Reserve ``n`` bytes at the end to write into in place; returns a :class:`Reservation`.

        The reservation is a writable bytes-like object of exactly ``n`` bytes (contents undefined
        until written): pass it to ``sock.recv_into()``, ``file.readinto()``, or slice a
        ``memoryview()`` of it. Then ``commit(k)`` appends the first ``k`` bytes. Until it is
        committed or cancelled, every method that changes this buffer raises BufferError; commit
        raises BufferError while a memoryview of the reservation is still alive, so that nothing
        can write into committed memory::

            with buf.reserve(4096) as r:
                k = sock.recv_into(r)
                r.commit(k)          # leaving the block without commit() cancels

        Not available on a BufferEvent's buffers, which libevent changes from the loop.
        """
        if n < 1:
            raise ValueError(f"reserve() needs n >= 1, not {n}")
        cdef Reservation res = Reservation.__new__(Reservation)
        cdef evbuffer *buf = self._enter()
        try:
            if not self._owned:
                raise BufferError("a BufferEvent's buffer cannot be reserved: libevent changes it "
                                  "from the loop; write into a bytearray and add() it")
            self._check_mutable("reserve", False, True)
            if evbuffer_reserve_space(buf, n, &res._vec, 1) != 1:
                self._refused("reserve space", False, True)
            # Nothing may run between reserving and raising the guard.
            self._reserved = True
            res._buffer = self
            res._size = n
            res._state = _RES_OPEN
        finally:
            self._leave(buf)
        return res

    # -- freezing ---------------------------------------------------------------------------------

    def freeze(self, bint front):
        """Forbid changes at the front (draining, prepending; ``front=True``) or at the back
        (appending; ``front=False``) until :meth:`unfreeze`. Reading a copy stays possible."""
        cdef evbuffer *buf = self._enter()
        try:
            self._check_freezable()
            if front:
                self._frozen_front = True
            else:
                self._frozen_back = True
            evbuffer_freeze(buf, front)
        finally:
            self._leave(buf)

    def unfreeze(self, bint front):
        """Allow changes at the front (``front=True``) or at the back again."""
        cdef evbuffer *buf = self._enter()
        try:
            self._check_freezable()
            if front:
                self._frozen_front = False
            else:
                self._frozen_back = False
            # A live export keeps both ends frozen; its release unfreezes what freeze() did not.
            if not self._exports:
                evbuffer_unfreeze(buf, front)
        finally:
            self._leave(buf)

    cdef int _check_freezable(self) except -1:
        if not self._owned:
            raise BufferError("a BufferEvent's buffers are frozen and unfrozen by libevent itself")
        return 0

    # -- callbacks --------------------------------------------------------------------------------

    def add_callback(self, callback):
        """Call ``callback(buffer, n_added, n_deleted, orig_size)`` after every change to the buffer;
        returns a :class:`BufferCallback` whose ``remove()`` stops it.

        Callbacks run right after the change, in the order they were added; they may change the
        buffer (which calls them again, nested). An exception a callback raises is re-raised from the
        method whose change called it, once the change is done (for a BufferEvent's buffer, it goes
        to the BufferEvent's error handling).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        cdef BufferCallback handle = BufferCallback.__new__(BufferCallback)
        handle._buffer = self
        handle._fn = callback
        cdef evbuffer *buf = self._enter()
        try:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(handle)
            if self._cb_entry == NULL:
                self._cb_entry = evbuffer_add_cb(buf, _on_change, <void *>self)
                if self._cb_entry == NULL:
                    self._callbacks.remove(handle)
                    raise MemoryError("evbuffer_add_cb failed")
                # libevent adds it enabled; a borrowed Buffer is now referenced from the loop.
                self._cb_enabled = True
                if not self._owned:
                    Py_INCREF(self)
            else:
                self._enable_callbacks(True)
        finally:
            self._leave(buf)
        return handle

    # -- the buffer protocol ----------------------------------------------------------------------

    def __getbuffer__(self, Py_buffer *view, int flags):
        cdef const char *p
        cdef Py_ssize_t length
        release_pending_references()
        self.ensure_open()
        if not self._owned:
            raise BufferError("a BufferEvent's buffer cannot be exported: libevent writes into it from "
                              "the loop and uses its freeze flags itself; use read_view(), which moves "
                              "the bytes into memory of their own")
        if flags & PyBUF_WRITABLE:
            raise BufferError("a Buffer's memoryview is read-only; use reserve() to write into a "
                              "Buffer in place")
        if self._reserved:
            raise BufferError("cannot export: a reservation from reserve() is open; commit() or "
                              "cancel() it first")
        length = <Py_ssize_t>evbuffer_get_length(self._buf)
        if self._exports:
            p = self._export_ptr
        elif length:
            p = <const char *>evbuffer_pullup(self._buf, -1)
            if p == NULL:
                raise MemoryError("evbuffer_pullup failed")
        else:
            p = levent_empty_bytes
        PyBuffer_FillInfo(view, self, <void *>p, length, 1, flags)
        if self._exports == 0:
            # libevent's own refusal backs up _check_mutable, and covers raw evbuffer calls.
            evbuffer_freeze(self._buf, 1)
            evbuffer_freeze(self._buf, 0)
            self._export_ptr = p
        self._exports += 1
        # pullup may have copied referenced memory and dropped its chains.
        release_pending_references()

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1
        if self._exports == 0:
            self._export_ptr = NULL
            if self._buf != NULL:
                if not self._frozen_front:
                    evbuffer_unfreeze(self._buf, 1)
                if not self._frozen_back:
                    evbuffer_unfreeze(self._buf, 0)


# ---------------------------------------------------------------------------------------------------

@cython.final
cdef class _ViewData:
    """The memory behind a read_view(): a private evbuffer, pulled up into one block. Nothing but
    the memoryview can reach it, so the block never moves until the last view is released."""
    cdef evbuffer *_buf
    cdef const char *_ptr
    cdef Py_ssize_t _len

    def __cinit__(self):
        self._buf = NULL
        self._ptr = levent_empty_bytes
        self._len = 0

    def __init__(self):
        raise TypeError("_ViewData objects are made by Buffer.read_view()")

    cdef int _seal(self) except -1:
        cdef unsigned char *p
        self._len = <Py_ssize_t>evbuffer_get_length(self._buf)
        if self._len:
            p = evbuffer_pullup(self._buf, -1)
            if p == NULL:
                raise MemoryError("evbuffer_pullup failed")
            self._ptr = <const char *>p
            release_pending_references()
        return 0

    def __dealloc__(self):
        if self._buf != NULL:
            evbuffer_free(self._buf)
            self._buf = NULL
            release_pending_references()

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void *>self._ptr, self._len, 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass


@cython.final
@cython.no_gc_clear   # must reach its Buffer in __dealloc__ to end the reservation
cdef class Reservation:
    """Space reserved at the end of a :class:`Buffer` by :meth:`Buffer.reserve`: a writable
    bytes-like object of ``len(r)`` bytes. ``commit(k)`` appends its first ``k`` bytes to the buffer;
    ``cancel()`` (or leaving its ``with`` block without committing) gives the space back."""
    cdef Buffer _buffer
    cdef evbuffer_iovec _vec
    cdef Py_ssize_t _size
    cdef Py_ssize_t _exports
    cdef int _state

    def __cinit__(self):
        self._exports = 0
        self._size = 0
        self._state = _RES_CANCELLED

    def __init__(self):
        raise TypeError("Reservation objects are made by Buffer.reserve()")

    def __dealloc__(self):
        # No view can be alive (a view holds a reference); end the reservation if still open.
        if self._buffer is not None and self._state in (_RES_OPEN, _RES_CLOSING):
            self._buffer._reserved = False

    def __len__(self):
        return self._size

    @property
    def size(self):
        """The number of bytes reserved."""
        return self._size

    @property
    def committed(self):
        """True once :meth:`commit` succeeded."""
        return self._state == _RES_COMMITTED

    @property
    def done(self):
        """True once committed or cancelled (a cancel waits for the views to be released)."""
        return self._state in (_RES_COMMITTED, _RES_CANCELLED)

    def commit(self, Py_ssize_t nbytes):
        """Append the first ``nbytes`` bytes written into the reservation to the buffer.

        Raises BufferError while a memoryview of the reservation is alive (release it first:
        ``view.release()``), so that nothing writes into memory the buffer now owns.
        """
        if self._state != _RES_OPEN:
            raise ValueError("this reservation was already committed or cancelled; reserve() again")
        if nbytes < 0 or nbytes > self._size:
            raise ValueError(f"commit() takes 0 to {self._size} bytes (the size reserved), not {nbytes}")
        if self._exports:
            raise BufferError(f"cannot commit while {self._exports} view(s) of the reservation are "
                              "alive; release the memoryview first (memoryview.release())")
        cdef Buffer owner = self._buffer
        if owner._frozen_back:
            raise BufferError("cannot commit: the back of the Buffer is frozen; call "
                              "unfreeze(front=False) first")
        cdef evbuffer *buf = owner._enter()
        cdef int rc = 0
        try:
            self._state = _RES_COMMITTED
            owner._reserved = False
            if nbytes:
                self._vec.iov_len = <size_t>nbytes
                rc = evbuffer_commit_space(buf, &self._vec, 1)
            if rc != 0:
                raise RuntimeError("libevent rejected the commit; the reserved space was given back")
        finally:
            owner._leave(buf)

    def cancel(self):
        """Give the space back without adding anything; does nothing once committed or cancelled.

        If a memoryview of the reservation is still alive, the buffer stays blocked until the last
        one is released."""
        if self._state != _RES_OPEN:
            return
        if self._exports:
            self._state = _RES_CLOSING
        else:
            self._end()

    cdef void _end(self) noexcept:
        self._state = _RES_CANCELLED
        self._buffer._reserved = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cancel()

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self._state != _RES_OPEN:
            raise BufferError("this reservation was committed or cancelled; its memory belongs to "
                              "the Buffer again")
        PyBuffer_FillInfo(view, self, self._vec.iov_base, self._size, 0, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1
        if self._exports == 0 and self._state == _RES_CLOSING:
            self._end()

    def __repr__(self):
        state = ("open", "cancelling", "committed", "cancelled")[self._state]
        return f"<Reservation size={self._size} {state}>"


@cython.final
cdef class BufferCallback:
    """A change callback added with :meth:`Buffer.add_callback`; ``remove()`` stops it."""
    cdef Buffer _buffer
    cdef object _fn

    def __init__(self):
        raise TypeError("BufferCallback objects are made by Buffer.add_callback()")

    @property
    def callback(self):
        """The callback (None once removed)."""
        return self._fn

    @property
    def active(self):
        """True until removed (or the buffer's BufferEvent closed)."""
        return self._fn is not None

    def remove(self):
        """Stop calling the callback; removing twice does nothing. Safe from inside a callback."""
        cdef Buffer buffer = self._buffer
        cdef evbuffer *buf
        if buffer is None:
            return
        self._buffer = None
        self._fn = None
        if buffer._buf == NULL:
            return
        buf = buffer._enter()
        try:
            callbacks = buffer._callbacks
            if callbacks is not None:
                try:
                    callbacks.remove(self)
                except ValueError:
                    pass
                if not callbacks:
                    buffer._enable_callbacks(False)
        finally:
            buffer._leave(buf)

    def __repr__(self):
        state = "active" if self._fn is not None else "removed"
        return f"<BufferCallback {state} callback={self._fn!r}>"


# Release what the loop thread let go of each time loop() returns, not only at the next Buffer call.
from levent._core cimport set_after_loop_hook
set_after_loop_hook(release_pending_references)
