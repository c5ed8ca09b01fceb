# Declarations of levent._core's classes, so that later modules (buffers, bufferevents, listeners)
# can cimport EventBase and reach its event_base pointer and error plumbing.
from cpython.ref cimport PyObject
from cpython.pystate cimport PyThreadState
from posix.time cimport timeval
from libevent_pxd.event cimport event_base
from libevent_pxd.event_struct cimport event


# One scheduled call in an EventBase's heap: ordered by (when, seq); holds a reference to its Call.
cdef struct CallEntry:
    double when
    unsigned long long seq
    PyObject *call


cdef class EventBase:
    cdef event_base *_base
    # Handles libevent may call back (pending Events, open BufferEvents and Listeners) are kept alive
    # by a reference the base holds (Handle._held), the way libevent's base references them;
    # tp_traverse/tp_clear (set up in _core.pyx) show these references to the cycle GC, so that a
    # dropped base with pending events is still collected.
    # Signal events held (pending or active) on this base: libevent delivers signals to one base only.
    cdef Py_ssize_t _nsignals
    # Every open Handle (Event, BufferEvent, Listener) levent created on this base, as a borrowed
    # intrusive list (Handle._prev/_next): close() must free them before event_base_free(), or they
    # would point into a freed base.
    cdef PyObject *_handles
    # libevent's select backend aborts the process on an fd >= FD_SETSIZE (glibc's fortified FD_SET):
    # such fds are refused on a select base.
    cdef bint _select_backend
    # Thread ident of the thread running loop(), 0 when no loop runs.
    cdef unsigned long _loop_thread
    # The exception a callback raised, re-raised from loop().
    cdef object _exc
    # Internal wakeup socketpair: Python's signal.set_wakeup_fd target while loop() waits in the main
    # thread, so that Ctrl-C and Python signal handlers run promptly.
    # Raw fds, not socket objects: the GC could finalize those before a collected base's dealloc.
    cdef int _wakeup_rfd
    cdef int _wakeup_wfd
    cdef event _wakeup_ev
    cdef bint _wakeup_added
    # Fallback when the wakeup socket is not usable (another owner holds Python's wakeup fd, or no fd
    # could be had): check signals and loopbreak() every 100 ms. Assigned once, with the base.
    cdef event _sigcheck_ev
    # call_later's heap: a binary min-heap of CallEntry in one C array, run in batches by _calls_ev,
    # which watches a timerfd armed for the earliest deadline (a libevent timer where there is none).
    cdef CallEntry *_calls
    cdef Py_ssize_t _ncalls
    cdef Py_ssize_t _calls_capacity
    cdef Py_ssize_t _ncancelled
    cdef unsigned long long _calls_seq
    cdef event _calls_ev
    cdef int _timerfd
    cdef bint _calls_ev_ready
    cdef bint _calls_ev_added
    cdef double _armed_when
    # When the calls last ran (the clock _run_calls read): the next wakeup for calls not yet due then
    # waits until CALLS_SLACK after it.
    cdef double _calls_ran_at
    # call_soon's FIFO, run a batch (the whole list, swapped for an empty one) per loop iteration by
    # _soon_ev. _soon_armed: _soon_ev is pending or active, or its callback runs (and re-arms it if
    # calls are left), so a new call need not wake it.
    cdef list _soon
    cdef event _soon_ev
    cdef bint _soon_ev_ready
    cdef bint _soon_armed
    # How many batches may run back to back before the loop polls for I/O again (within 100 µs). 1
    # for the raw API, whose call_soon promises a poll between batches; the asyncio loop, which
    # promises no such thing, runs more and saves a poll system call per batch (Tokio polls its I/O
    # driver every 61 tasks for the same reason).
    cdef int _soon_batches
    # Set by loopbreak(), cleared when loop() starts: stops a batch of calls.
    cdef bint _break_requested
    # Set by loopexit() without a delay, cleared when loop() starts: ends a run of call_soon batches.
    cdef bint _exit_requested
    # Counts the callbacks levent ran: tells loop() whether a non-blocking pass found work.
    cdef unsigned long long _dispatched
    # While a waiting pass runs: the thread state it released the GIL from, until the first of
    # _core's callbacks takes the GIL back (levent_take_gil). NULL while the loop thread holds it.
    cdef PyThreadState *_gil_released
    cdef object __weakref__

    cdef int _ensure_open(self) except -1
    cdef bint _can_watch(self, int fd)
    cdef int _check_watchable(self, int fd) except -1
    cdef int _stop_with(self, exc) except -1
    cdef int _run(self, int flags) except -1
    cdef int _drive(self, int flags) except -2
    cdef bint _stopping(self)
    cdef object _arm_signals(self)
    cdef int _disarm_signals(self, object old) except -1
    cdef int _open_wakeup(self) except -1
    cdef int _close_wakeup(self) except -1
    cdef int _close_sigcheck(self) except -1
    cdef int _close_handles(self) except -1
    cdef Call _new_call(self, double when, callback, tuple args)
    cdef int _push_call(self, Call call) except -1
    cdef int _arm_calls(self) except -1
    cdef int _run_calls(self) except -1
    cdef int _clear_calls(self) except -1
    cdef int _compact_calls(self) except -1
    cdef int _open_calls_event(self) except -1
    cdef int _close_calls_event(self) except -1
    cdef int _arm_soon(self, bint next_iteration) except -1
    cdef int _run_soon(self) except -1
    cdef int _clear_soon(self) except -1
    cdef int _close_soon_event(self) except -1


cdef class Call:
    # The base whose heap holds the call, for cancel()'s accounting; None for a call_soon call, which
    # the heap's counts must not see.
    cdef EventBase _base
    cdef object _callback
    cdef tuple _args
    cdef double _when
    cdef bint _cancelled
    cdef bint _done
    cdef object __weakref__

    # Runs the callback once the base has taken the call off its queue and marked it done. An
    # exception it raises stops the base's loop; subclasses (the asyncio loop's handles) override it
    # to route exceptions elsewhere.
    cdef int _run(self) except -1


cdef class Handle:
    # Something of libevent's that lives on an EventBase: linked into the base's list while open, and
    # held by the base (_hold) while libevent may call back into it.
    cdef EventBase _base
    cdef bint _held
    cdef PyObject *_prev
    cdef PyObject *_next
    cdef object __weakref__

    cdef int _link(self, EventBase base) except -1
    cdef int _unlink(self) except -1
    cdef int _hold(self) except -1
    cdef int _release(self) except -1
    # Called by EventBase.close(): free the C object now.
    cdef int _close_from_base(self) except -1


# How an Event calls its callback (Event._setup's ``style``).
cdef enum:
    STYLE_FD = 0        # callback(fd, what, *args): Event
    STYLE_ARGS = 1      # callback(*args): Timer, the asyncio loop's fd watchers
    STYLE_SIGNAL = 2    # callback(signum, *args): Signal


cdef class Event(Handle):
    cdef event _ev
    cdef object _callback
    cdef tuple _args
    # What the user passed as fd: kept so that a socket object is not closed under a pending event.
    cdef object _fileobj
    # The int handed to the callback (fd, or signal number).
    cdef object _fd_obj
    cdef int _style
    # The timeout given to add() (-1: none) and the deadline it set, on the precise monotonic clock:
    # levent, not libevent's possibly coarse and cached clock, decides when a timeout is due.
    cdef double _timeout
    cdef double _deadline
    cdef unsigned int _add_serial
    cdef bint _assigned

    cdef int _setup(self, EventBase base, int fd, short events, callback, tuple args, int style) except -1
    cdef int _add(self, double deadline, double timeout) except -1
    cdef int _ensure_ready(self) except -1
    cdef int _del(self) except -1


cdef class EventPair(Handle):
    # The native cores of the asyncio loop's transports (socket, pipe, datagram): a read and a write
    # event on one fd, each pending only while wanted.
    cdef int _fd
    cdef event _rev
    cdef event _wev
    # The events are assigned to the base until it closes (_close_from_base): then they are gone.
    cdef bint _assigned
    cdef bint _reading          # _rev is pending
    cdef bint _writing          # _wev is pending

    cdef int _assign(self, EventBase base, int fd) except -1
    cdef int _drop_events(self) except -1
    # What the subclass does when the fd is readable / writable (the events call these).
    cdef int _read_ready(self) except -1
    cdef int _write_ready(self) except -1
    cdef int _start_reading(self) except -1
    cdef int _stop_reading(self) except -1
    cdef int _start_writing(self) except -1
    cdef int _stop_writing(self) except -1


# For other levent modules: raise ValueError unless a select base has room for libevent's new fds.
cdef int _check_select_headroom() except -1

# Shared argument handling. _fileno: an int fd, or obj.fileno(). _seconds: a checked timeout;
# _to_timeval: the same as a timeval, rounded up.
cdef int _fileno(object fd) except? -2
cdef double _seconds(object seconds) except -1.0
cdef int _to_timeval(object seconds, timeval *tv) except -1

# Handing an fd to a libevent object that may own it (``take``: it closes the fd when freed).
# _fd_to_hand_over: the fd, checked, before the libevent object is made; _hand_over: after it exists,
# detaches a socket it now owns, or returns the object to keep alive while it only watches the fd.
cdef int _fd_to_hand_over(object sock, bint take) except -1
cdef object _hand_over(object sock, bint take)
cdef object _library_path(const void *address)


# levent._buffer registers a function to run (with the GIL) each time loop() returns: it releases the
# objects whose buffer chains libevent dropped in the loop thread without the GIL.
ctypedef void (*after_loop_hook)() noexcept
cdef int set_after_loop_hook(after_loop_hook hook) except -1
