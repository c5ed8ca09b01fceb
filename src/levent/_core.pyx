# cython: freethreading_compatible = False
"""EventBase and Event: libevent's event_base and event, bound directly.

Ownership rules, which everything else in levent relies on:

* Each EventBase owns its event_base; each Event embeds its struct event (event_assign) and owns it.
* An Event holds a strong reference to its EventBase, so a base is never freed under its events.
* While an Event is pending or active, libevent holds a pointer to it; the base then holds a strong
  reference to the Event (Event._held), dropped once the event is neither pending nor active.
* EventBase.close() closes every Event on it first, so no Event ever points into a freed base.
* C callbacks take the GIL only to run Python code; the loop waits with the GIL released.
"""

cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF

cdef extern from "Python.h":
    # The GC slots, declared noexcept (cpython/object.pxd declares them "except -1").
    ctypedef int (*visitproc)(PyObject *, void *) noexcept
    ctypedef int (*traverseproc)(PyObject *, visitproc, void *) noexcept
    ctypedef int (*inquiry)(PyObject *) noexcept
    ctypedef struct PyTypeObject:
        traverseproc tp_traverse
        inquiry tp_clear
    PyTypeObject *Py_TYPE(PyObject *)
    void PyObject_GC_Track(void *)
    void PyObject_GC_UnTrack(void *)
    int PyObject_GC_IsTracked(PyObject *)
from cpython.exc cimport PyErr_CheckSignals
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.errno cimport errno, EBADF, EAGAIN, EINTR
from libc.math cimport ceil, isfinite
from libc.stdio cimport FILE, fclose, fflush
from libc.stdlib cimport free
from posix.fcntl cimport fcntl, F_GETFD
from posix.time cimport timeval, timespec, clock_gettime, CLOCK_MONOTONIC
from posix.unistd cimport read, write, close as close_fd
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from libc.math cimport INFINITY

from libevent_pxd.util cimport evutil_socket_t
from libevent_pxd.event_struct cimport (
    event, EVLIST_TIMEOUT, EVLIST_INSERTED, EVLIST_ACTIVE, EVLIST_ACTIVE_LATER, EVLIST_INTERNAL,
)
from libevent_pxd.event cimport *
from libevent_pxd.thread cimport evthread_use_pthreads

import enum
import errno as _errno
import os
import signal as _signal
import socket as _socket
import threading as _threading
from collections import namedtuple

cdef extern from "stdio.h" nogil:
    FILE *open_memstream(char **ptr, size_t *sizeloc)

cdef extern from "sys/select.h":
    enum: FD_SETSIZE

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil

# dladdr: which shared library a function came from, for `python -m levent info` (Python.h has
# defined _GNU_SOURCE, which glibc wants for Dl_info).
cdef extern from "dlfcn.h" nogil:
    ctypedef struct Dl_info:
        const char *dli_fname
    int dladdr(const void *addr, Dl_info *info)

# libevent's log messages: kept per thread so that a failing call can put the message in its
# exception; outside such a call, warnings and errors go to stderr as libevent itself would print them.
# The callback must not take the GIL: libevent may log while holding its base lock.
cdef extern from *:
    """
    #include <stdio.h>
    static __thread char levent_log_message[512];
    static __thread int levent_log_capturing;
    static void levent_log_callback(int severity, const char *msg) {
        if (levent_log_capturing) {
            snprintf(levent_log_message, sizeof levent_log_message, "%s", msg);
        } else if (severity >= EVENT_LOG_WARN) {
            fprintf(stderr, "[levent] libevent %s: %s\\n",
                    severity >= EVENT_LOG_ERR ? "error" : "warning", msg);
        }
    }
    static void levent_log_capture(void) { levent_log_capturing = 1; levent_log_message[0] = 0; }
    static void levent_log_release(void) { levent_log_capturing = 0; }
    """
    char levent_log_message[512]
    void levent_log_callback(int severity, const char *msg) noexcept nogil
    void levent_log_capture() noexcept nogil
    void levent_log_release() noexcept nogil


# call_later's wake-up: a timerfd armed at an absolute CLOCK_MONOTONIC deadline (precise, and one
# syscall per change of the earliest deadline rather than one per loop iteration). Elsewhere levent
# falls back to a libevent timer.
cdef extern from *:
    """
    #include <errno.h>
    #include <math.h>
    #ifdef __linux__
    #include <sys/timerfd.h>
    static int levent_timerfd_create(void) {
        return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    }
    static int levent_timerfd_arm(int fd, double when) {
        struct itimerspec its = {{0, 0}, {0, 0}};
        double sec = floor(when);
        its.it_value.tv_sec = (time_t)sec;
        its.it_value.tv_nsec = (long)ceil((when - sec) * 1e9);
        if (its.it_value.tv_nsec >= 1000000000L) { its.it_value.tv_sec += 1; its.it_value.tv_nsec -= 1000000000L; }
        if (its.it_value.tv_sec <= 0 && its.it_value.tv_nsec <= 0) its.it_value.tv_nsec = 1;  /* 0 disarms */
        return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
    }
    #else
    static int levent_timerfd_create(void) { errno = ENOSYS; return -1; }
    static int levent_timerfd_arm(int fd, double when) { (void)fd; (void)when; errno = ENOSYS; return -1; }
    #endif
    """
    int levent_timerfd_create() nogil
    int levent_timerfd_arm(int fd, double when) nogil


# The GIL in _core's C callbacks, without PyGILState_Ensure/Release (about 40 instructions a
# callback). A non-blocking pass runs with the GIL held, and callbacks find it theirs. A waiting
# pass releases it (levent_loop_released) into its base's _gil_released; the first callback to run
# takes it back from there (levent_take_gil) and keeps it for the rest of the pass. The state is per
# base, and a base's callbacks run only from its own event_base_loop, so a loop of another base run
# from a callback, or another module's `with gil` callback in between, leaves it consistent.
# Callbacks libevent may also run outside that dispatch (bufferevents, evbuffers) keep `with gil`.
cdef extern from *:
    """
    static CYTHON_INLINE void levent_take_gil(PyThreadState **released) {
        PyThreadState *tstate = *released;
        if (tstate != NULL) {
            *released = NULL;
            PyEval_RestoreThread(tstate);
        }
    }
    static int levent_loop_released(struct event_base *base, PyThreadState **released, int flags) {
        int rc;
        *released = PyEval_SaveThread();
        rc = event_base_loop(base, flags);
        levent_take_gil(released);
        return rc;
    }
    /* libevent calls these callbacks without the GIL; the first thing each does is take it. */
    #define levent_gil_callback(fn) ((event_callback_fn)(fn))
    """
    ctypedef void (*gil_taking_callback)(evutil_socket_t, short, void *) noexcept
    event_callback_fn levent_gil_callback(gil_taking_callback fn) noexcept nogil
    void levent_take_gil(PyThreadState **released) noexcept nogil
    int levent_loop_released(event_base *base, PyThreadState **released, int flags) noexcept


# ---------------------------------------------------------------------------------------------------
# Constants: libevent's values, re-exported by levent/__init__.py.

TIMEOUT = EV_TIMEOUT
READ = EV_READ
WRITE = EV_WRITE
SIGNAL = EV_SIGNAL
PERSIST = EV_PERSIST
ET = EV_ET
CLOSED = EV_CLOSED
# event_base_priority_init() takes fewer than EVENT_MAX_PRIORITIES (256) levels.
MAX_PRIORITIES = EVENT_MAX_PRIORITIES - 1

cdef short _ALL_KINDS = EV_TIMEOUT | EV_READ | EV_WRITE | EV_SIGNAL | EV_CLOSED
cdef short _ALL_FLAGS = _ALL_KINDS | EV_PERSIST | EV_ET
cdef short _FD_KINDS = EV_READ | EV_WRITE | EV_CLOSED
# evcb_flags bits that mean libevent still references the event.
cdef short _LIVE_FLAGS = EVLIST_INSERTED | EVLIST_ACTIVE | EVLIST_ACTIVE_LATER | EVLIST_TIMEOUT

class Feature(enum.IntFlag):
    """Backend features (event_method_feature): ask for them with ``EventBase(require=...)``."""
    ET = EV_FEATURE_ET
    O1 = EV_FEATURE_O1
    FDS = EV_FEATURE_FDS
    EARLY_CLOSE = EV_FEATURE_EARLY_CLOSE


LibeventVersion = namedtuple("LibeventVersion", ["string", "number"])
LibeventVersion.__doc__ = "The loaded libevent's version: its string and its number (0xMMmmpp00)."

_KIND_NAMES = ((EV_TIMEOUT, "TIMEOUT"), (EV_READ, "READ"), (EV_WRITE, "WRITE"), (EV_SIGNAL, "SIGNAL"),
               (EV_PERSIST, "PERSIST"), (EV_ET, "ET"), (EV_CLOSED, "CLOSED"))


def _kinds_repr(int bits):
    names = [name for value, name in _KIND_NAMES if bits & value]
    return "|".join(names) if names else "0"


# ---------------------------------------------------------------------------------------------------
# Process-wide setup, once, before any base exists.

if event_get_struct_event_size() != sizeof(event):
    raise ImportError(
        f"levent was compiled against a libevent whose struct event has {sizeof(event)} bytes, but the "
        f"loaded libevent {event_get_version().decode()} uses {event_get_struct_event_size()}: rebuild levent"
    )
if (event_get_version_number() >> 16) != (LIBEVENT_VERSION_NUMBER >> 16):
    raise ImportError(
        f"levent was compiled against libevent {LIBEVENT_VERSION_NUMBER:#x} but loaded "
        f"{event_get_version().decode()}: rebuild levent"
    )
# Without locking, a loopbreak() or active() from another thread is not noticed until the next event.
if evthread_use_pthreads() != 0:
    raise ImportError("libevent's evthread_use_pthreads() failed")
event_set_log_callback(levent_log_callback)

# The fds of every levent wakeup socket: a nested loop may borrow the wakeup fd from an outer one.
cdef set _levent_wakeup_fds = set()

# The base that has Signal events pending, if any (borrowed: its pending Signals keep it alive).
# libevent delivers signals to one base only and lets a second base silently take them over.
cdef PyObject *_signal_base = NULL

cdef after_loop_hook _after_loop = NULL


cdef int set_after_loop_hook(after_loop_hook hook) except -1:
    global _after_loop
    _after_loop = hook
    return 0


def libevent_version():
    """Return the loaded libevent's version as ``LibeventVersion(string, number)``."""
    return LibeventVersion(event_get_version().decode(), event_get_version_number())


cdef object _library_path(const void *address):
    """The real path of the shared library that holds ``address`` (a C function), or None if dladdr
    cannot tell (a static build)."""
    cdef Dl_info info
    if dladdr(address, &info) == 0 or info.dli_fname == NULL or info.dli_fname[0] == 0:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def _libevent_path():
    """The file of the libevent library levent's calls resolve to (for ``python -m levent info``)."""
    return _library_path(<const void *>event_get_version)


def supported_methods():
    """Return the backends this libevent supports on this machine, best first (e.g. epoll, poll, select)."""
    cdef const char **methods = event_get_supported_methods()
    cdef list names = []
    cdef int i = 0
    while methods[i] != NULL:
        names.append(methods[i].decode())
        i += 1
    return names


# ---------------------------------------------------------------------------------------------------
# Helpers

cdef int _to_timeval(object seconds, timeval *tv) except -1:
    """Seconds (int or float) to a timeval, rounding up."""
    cdef double t = _seconds(seconds)
    tv.tv_sec = <long>t
    tv.tv_usec = <long>ceil((t - <double>tv.tv_sec) * 1e6)
    if tv.tv_usec >= 1000000:
        tv.tv_sec += 1
        tv.tv_usec -= 1000000
    return 0


cdef inline double _precise_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef double _seconds(object seconds) except -1.0:
    """A timeout in seconds, checked: a finite number >= 0."""
    cdef double t
    try:
        t = seconds
    except TypeError:
        raise TypeError(f"a timeout must be a number of seconds, not {type(seconds).__name__}") from None
    if not isfinite(t) or t < 0:
        raise ValueError(f"a timeout must be a finite number of seconds >= 0, not {seconds!r}")
    return t


cdef long long _timeout_until(EventBase base, double deadline, timeval *tv) except -1:
    """The relative timeout that makes libevent fire no earlier than ``deadline`` (precise clock).

    libevent adds a relative timeout to its own "now": the coarse monotonic clock unless the base is
    precise (it lags the real time by up to a tick, 4 ms here), or, inside the loop, the time cached
    when the iteration started. Measuring the timeout from a reading of libevent's clock taken *before*
    event_add (which reads the same clock later, or the cache refreshed after our reading) makes
    libevent's deadline >= ours, so no timer fires early and no precise-timer syscall is needed.

    Returns the deadline libevent should compute, in its clock's microseconds (see Event._add).
    """
    cdef timeval now
    cdef double rel
    event_gettime_monotonic(base._base, &now)
    if base._loop_thread != 0:
        event_base_update_cache_time(base._base)
    if deadline <= _precise_now():
        rel = 0     # already due (add(0)): due at libevent's next look, whatever its clock says
    else:
        rel = deadline - _from_timeval(&now)
        if rel < 0:
            rel = 0
    cdef long long rel_us = <long long>ceil(rel * 1e6)
    tv.tv_sec = rel_us // 1000000
    tv.tv_usec = rel_us % 1000000
    return <long long>now.tv_sec * 1000000 + now.tv_usec + rel_us


cdef inline double _from_timeval(const timeval *tv) noexcept nogil:
    return <double>tv.tv_sec + <double>tv.tv_usec * 1e-6


cdef int _fileno(object fd) except? -2:
    """An int fd, or the fileno() of an object that has one."""
    if isinstance(fd, int):
        return fd
    fileno = getattr(fd, "fileno", None)
    if fileno is None:
        raise TypeError(f"fd must be an int or have a fileno() method, not {type(fd).__name__}")
    result = fileno()
    if not isinstance(result, int):
        raise TypeError(f"{type(fd).__name__}.fileno() returned {type(result).__name__}, not int")
    return result


cdef int _fd_to_hand_over(object sock, bint take) except -1:
    cdef int fd = _fileno(sock)
    if fd < 0:
        raise ValueError(f"fd must be >= 0, not {fd} (is the socket closed?)")
    if take and not isinstance(sock, int) and not hasattr(sock, "detach"):
        # Both the object and libevent would close the fd (maybe after it was reused elsewhere).
        raise TypeError(f"a {type(sock).__name__} cannot hand its fd over (it has no detach()): pass a "
                        "socket or an int fd, or leave out CLOSE_ON_FREE")
    return fd


cdef object _hand_over(object sock, bint take):
    if isinstance(sock, int):
        return None
    if take:
        sock.detach()       # the fd is the libevent object's now: one owner
        return None
    return sock


cdef object _libevent_error(str what, int err=-1):
    """The exception for a libevent call that failed: OSError when errno (or ``err``) says why."""
    if err == -1:
        err = errno
    msg = levent_log_message.decode("utf-8", "replace")
    detail = f"{what} failed" + (f": {msg}" if msg else "")
    if err and err != EAGAIN:
        return OSError(err, f"{detail} ({os.strerror(err)})")
    return RuntimeError(detail)


cdef inline bint _is_main_thread():
    return PyThread_get_thread_ident() == <unsigned long>_threading.main_thread().ident


# ---------------------------------------------------------------------------------------------------
# C callbacks: each runs with the GIL, hands exceptions to the base, never lets one escape into C.

cdef void _event_callback(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<Event>arg)._base._gil_released)
    # arg is the Event: alive, because the base holds every pending or active Event (_hold), and a
    # cross-thread delete()/close() waits (GIL released) for a running callback before dropping it.
    cdef Event ev = <Event>arg
    cdef EventBase base = ev._base
    cdef unsigned int serial = ev._add_serial
    cdef double deadline
    base._dispatched += 1
    what &= _ALL_KINDS    # epoll ORs EV_ET into what; callbacks get the kinds that happened
    # Own references: Cython would pass ev._callback and ev._args borrowed, and a callback that closes
    # its Event drops them (and whatever only they kept alive) while it runs.
    cdef object callback = ev._callback
    cdef tuple args = ev._args
    try:
        if ev._style == STYLE_FD:
            if args:
                callback(ev._fd_obj, what, *args)
            else:
                callback(ev._fd_obj, what)
        elif ev._style == STYLE_ARGS:
            if args:
                callback(*args)
            else:
                callback()
        else:
            callback(ev._fd_obj, *args)
    except BaseException as exc:
        base._stop_with(exc)
    if (ev._timeout >= 0 and ev._add_serial == serial and ev._assigned
            and ev._ev.ev_events & EV_PERSIST and ev._ev.ev_evcallback.evcb_flags & EVLIST_TIMEOUT):
        # libevent re-scheduled this persistent timeout from its own clock: re-arm it from ours, one
        # period after the last deadline if the timeout fired, else one period from now.
        deadline = _precise_now()
        if what & EV_TIMEOUT and ev._deadline + ev._timeout >= deadline:
            deadline = ev._deadline + ev._timeout
        else:
            deadline += ev._timeout
        try:
            ev._add(deadline, ev._timeout)
        except BaseException as exc:
            base._stop_with(exc)
    if ev._held and (not ev._assigned or not (ev._ev.ev_evcallback.evcb_flags & _LIVE_FLAGS)):
        try:
            ev._release()
        except BaseException as exc:
            base._stop_with(exc)


cdef void _wakeup_callback(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<EventBase>arg)._gil_released)
    # The base owns this internal event and deletes it before it dies, so arg is alive.
    cdef EventBase base = <EventBase>arg
    cdef char buf[256]
    cdef ssize_t n
    if what & EV_READ:
        while True:
            with nogil:
                n = read(fd, buf, sizeof(buf))
            if n <= 0 and not (n < 0 and errno == EINTR):
                break
    if base._break_requested:
        # loopbreak() from another thread: libevent may have reset its own flag when this
        # event_base_loop call began, so break again from inside the loop.
        event_base_loopbreak(base._base)
    try:
        # Runs Python signal handlers (in the main thread); KeyboardInterrupt comes out of here.
        PyErr_CheckSignals()
    except BaseException as exc:
        base._stop_with(exc)


# How long consecutive call_soon batches may run without polling for I/O (see _soon_batches).
cdef double SOON_BATCHES_SECONDS = 100e-6

# The loop wakes for calls at most once per CALLS_SLACK: calls that come due sooner after the last
# run wait for the next one, so they run up to this late (never early). A wakeup from idle costs
# 20-35 us of CPU on a VM (a bare time.sleep() too), so timers denser than this would otherwise
# keep the loop busy doing nothing but waking; sparser ones still run on time.
cdef double CALLS_SLACK = 100e-6


# call_later's heap, ordered by (when, seq): FIFO among equal deadlines.

cdef inline void _track_unqueued(PyObject *call) noexcept:
    """Back under the cycle GC once off the heap (see _push_call); before the heap's reference goes."""
    if not PyObject_GC_IsTracked(call):
        PyObject_GC_Track(call)


cdef inline bint _entry_before(const CallEntry *a, const CallEntry *b) noexcept nogil:
    return a.when < b.when or (a.when == b.when and a.seq < b.seq)


cdef void _sift_up(CallEntry *heap, Py_ssize_t i) noexcept nogil:
    cdef CallEntry item = heap[i]
    cdef Py_ssize_t parent
    while i > 0:
        parent = (i - 1) >> 1
        if not _entry_before(&item, &heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


cdef void _sift_down(CallEntry *heap, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef CallEntry item = heap[i]
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _entry_before(&heap[child + 1], &heap[child]):
            child += 1
        if not _entry_before(&heap[child], &item):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = item


cdef void _calls_callback(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<EventBase>arg)._gil_released)
    # The base owns this event and deletes it before it dies, so arg is alive.
    cdef EventBase base = <EventBase>arg
    cdef unsigned long long expirations
    base._dispatched += 1
    if base._timerfd >= 0:
        with nogil:
            read(base._timerfd, &expirations, sizeof(expirations))
    else:
        base._calls_ev_added = False    # the one-shot libevent timer fired
    base._armed_when = INFINITY
    try:
        base._run_calls()
    except BaseException as exc:
        base._stop_with(exc)
    try:
        base._arm_calls()
    except BaseException as exc:
        base._stop_with(exc)


cdef void _soon_callback(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<EventBase>arg)._gil_released)
    # The base owns this event and deletes it before it dies, so arg is alive.
    cdef EventBase base = <EventBase>arg
    cdef int batches = 0
    cdef double started = 0
    base._dispatched += 1
    while True:
        try:
            base._run_soon()
        except BaseException as exc:
            base._stop_with(exc)
        batches += 1
        # Up to _soon_batches batches, within SOON_BATCHES_SECONDS, before polling for I/O again.
        if not base._soon or batches >= base._soon_batches or base._stopping():
            break
        if batches == 1:
            started = _precise_now()
        elif _precise_now() - started > SOON_BATCHES_SECONDS:
            break
    base._soon_armed = False
    if base._soon:
        try:
            base._arm_soon(True)
        except BaseException as exc:
            base._stop_with(exc)


# ---------------------------------------------------------------------------------------------------

@cython.no_gc_clear   # __dealloc__ needs the wakeup sockets; _base_clear breaks cycles with events
cdef class EventBase:
    """An event loop: libevent's ``event_base``, configured through ``event_config``.

    ``EventBase(method="poll")`` uses exactly that backend; ``avoid`` skips backends; ``require`` asks for
    :class:`Feature` flags. ``priorities`` sets the number of priority levels (Event.priority 0 runs first).

    Timers never fire early, whatever the flags: levent measures every timeout on the precise monotonic
    clock and gives libevent a timeout that cannot end before it. By default libevent's own clock is
    the coarse one (one tick, 4 ms on Linux here), so a timer fires up to one tick late.
    ``precise_timer=True`` (EVENT_BASE_FLAG_PRECISE_TIMER) makes timers accurate to ~0.1 ms, but with
    epoll libevent then re-arms a timerfd on every loop iteration: one syscall more per iteration,
    measured at 14% of a socketpair ping-pong's round trips per second. :meth:`call_later` is precise
    either way.

    Close it with :meth:`close` or a ``with`` block; closing closes every Event created on it.
    """

    def __cinit__(self):
        self._base = NULL
        self._nsignals = 0
        self._handles = NULL
        self._loop_thread = 0
        self._exc = None
        self._wakeup_rfd = self._wakeup_wfd = -1
        self._wakeup_added = False
        self._calls = NULL
        self._ncalls = self._calls_capacity = self._ncancelled = 0
        self._calls_seq = 0
        self._timerfd = -1
        self._calls_ev_ready = self._calls_ev_added = False
        self._armed_when = INFINITY
        self._calls_ran_at = -INFINITY
        self._soon = []
        self._soon_ev_ready = self._soon_armed = False
        self._soon_batches = 1
        self._break_requested = self._exit_requested = False
        self._dispatched = 0
        self._gil_released = NULL

    def __init__(self, *, method=None, avoid=(), require=0, int priorities=1, bint precise_timer=False,
                 bint nolock=False, bint ignore_env=False, bint no_cache_time=False,
                 bint epoll_use_changelist=False, max_dispatch_interval=None,
                 max_dispatch_callbacks=None, int min_priority=0):
        if self._base != NULL:
            raise RuntimeError("EventBase.__init__() called twice")
        known = supported_methods()
        if isinstance(avoid, str):
            avoid = (avoid,)
        avoid = list(avoid)
        for name in avoid:
            if not isinstance(name, str):
                raise TypeError(f"avoid must be backend names (str), not {type(name).__name__}")
        if method is not None:
            if not isinstance(method, str):
                raise TypeError(f"method must be a str, not {type(method).__name__}")
            if method not in known:
                raise ValueError(f"backend {method!r} is not available here; choose one of {known}")
            avoid += [name for name in known if name != method]
        if not 1 <= priorities < EVENT_MAX_PRIORITIES:
            raise ValueError(f"priorities must be between 1 and {EVENT_MAX_PRIORITIES - 1}, not {priorities}")
        cdef int features = int(require)
        if features & ~(EV_FEATURE_ET | EV_FEATURE_O1 | EV_FEATURE_FDS | EV_FEATURE_EARLY_CLOSE):
            raise ValueError(f"require takes Feature flags, not {require!r}")
        cdef int flags = 0
        if precise_timer:
            flags |= EVENT_BASE_FLAG_PRECISE_TIMER
        if nolock:
            flags |= EVENT_BASE_FLAG_NOLOCK
        if ignore_env:
            flags |= EVENT_BASE_FLAG_IGNORE_ENV
        if no_cache_time:
            flags |= EVENT_BASE_FLAG_NO_CACHE_TIME
        if epoll_use_changelist:
            flags |= EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST
        cdef timeval interval
        cdef int max_callbacks = -1
        if max_dispatch_interval is not None:
            _to_timeval(max_dispatch_interval, &interval)
        if max_dispatch_callbacks is not None:
            max_callbacks = max_dispatch_callbacks
            if max_callbacks < 1:
                raise ValueError("max_dispatch_callbacks must be >= 1")
        if not 0 <= min_priority < priorities and min_priority != 0:
            raise ValueError(f"min_priority must be between 0 and priorities - 1, not {min_priority}")

        if "select" in known and all(name in avoid for name in known if name != "select"):
            _check_select_headroom()
        cdef event_config *cfg = event_config_new()
        if cfg == NULL:
            raise MemoryError()
        try:
            for name in avoid:
                if event_config_avoid_method(cfg, name.encode()) != 0:
                    raise MemoryError()
            if features and event_config_require_features(cfg, features) != 0:
                raise MemoryError()
            if flags and event_config_set_flag(cfg, flags) != 0:
                raise ValueError(f"libevent rejected the flags {flags:#x}")
            if max_dispatch_interval is not None or max_dispatch_callbacks is not None or min_priority:
                if event_config_set_max_dispatch_interval(
                        cfg, &interval if max_dispatch_interval is not None else NULL,
                        max_callbacks, min_priority) != 0:
                    raise ValueError("libevent rejected the dispatch interval settings")
            levent_log_capture()
            self._base = event_base_new_with_config(cfg)
            levent_log_release()
        finally:
            event_config_free(cfg)
        if self._base == NULL:
            wanted = [f"require={Feature(features)!r}"] if features else []
            wanted += [f"avoid={avoid}"] if avoid else []
            msg = levent_log_message.decode("utf-8", "replace")
            raise ValueError(
                "no event backend satisfies this configuration "
                f"({', '.join(wanted) or 'defaults'}; available: {known})" + (f": {msg}" if msg else ""))
        # Internal, as libevent marks its own notification events: it does not keep loop() from
        # returning when no user events are left, and priority 0 is valid whatever the priorities.
        event_assign(&self._sigcheck_ev, self._base, -1, EV_PERSIST,
                     levent_gil_callback(_wakeup_callback), <void *>self)
        self._sigcheck_ev.ev_evcallback.evcb_flags |= EVLIST_INTERNAL
        event_priority_set(&self._sigcheck_ev, 0)
        if priorities != 1 and event_base_priority_init(self._base, priorities) != 0:
            raise ValueError(f"libevent rejected priorities={priorities}")
        self._select_backend = event_base_get_method(self._base) == b"select"

    def __dealloc__(self):
        # No loop can be running (loop() holds a reference) and no Event can be left (each holds one),
        # unless the cycle GC is tearing both down; close whatever remains before freeing the base.
        if self._base != NULL:
            self._clear_calls()
            self._close_calls_event()
            self._close_handles()
            self._clear_soon()
            self._close_soon_event()
            self._close_wakeup()
            self._close_sigcheck()
            event_base_free(self._base)
            self._base = NULL

    cdef int _close_sigcheck(self) except -1:
        event_del(&self._sigcheck_ev)
        event_debug_unassign(&self._sigcheck_ev)
        return 0

    cdef int _ensure_open(self) except -1:
        if self._base == NULL:
            raise ValueError("this EventBase is closed; create a new EventBase")
        return 0

    cdef bint _can_watch(self, int fd):
        return not self._select_backend or fd < FD_SETSIZE

    cdef int _check_watchable(self, int fd) except -1:
        if not self._can_watch(fd):
            raise ValueError(f"the select backend cannot watch fd {fd} (select() takes fds below "
                             f"{FD_SETSIZE}); use EventBase(method='epoll') or 'poll'")
        return 0

    cdef int _stop_with(self, exc) except -1:
        """A callback raised: keep the exception for loop() to re-raise and stop the loop."""
        if self._exc is None:
            self._exc = exc
        elif exc is not self._exc:
            # A second error before loop() returned: chain it, so that neither is lost.
            if exc.__context__ is None:
                exc.__context__ = self._exc
            self._exc = exc
        if self._base != NULL:
            event_base_loopbreak(self._base)
        return 0

    # -- properties ---------------------------------------------------------------------------------

    @property
    def method(self):
        """The backend in use: ``"epoll"``, ``"poll"``, ``"select"``, ..."""
        self._ensure_open()
        return event_base_get_method(self._base).decode()

    @property
    def features(self):
        """The backend's :class:`Feature` flags."""
        self._ensure_open()
        return Feature(event_base_get_features(self._base))

    @property
    def priorities(self):
        """The number of priority levels (set with ``EventBase(priorities=N)``)."""
        self._ensure_open()
        return event_base_get_npriorities(self._base)

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self._base == NULL

    @property
    def running(self):
        """True while :meth:`loop` runs, in any thread."""
        return self._loop_thread != 0

    @property
    def got_exit(self):
        """True if the last loop() ended because of :meth:`loopexit` (reset when loop() starts)."""
        self._ensure_open()
        return bool(event_base_got_exit(self._base))

    @property
    def got_break(self):
        """True if the last loop() ended because of :meth:`loopbreak` (reset when loop() starts)."""
        self._ensure_open()
        return bool(event_base_got_break(self._base))

    # -- the loop -----------------------------------------------------------------------------------

    def loop(self, *, bint once=False, bint nonblock=False, bint no_exit_on_empty=False):
        """Run the loop (``event_base_loop``) until no events are left, or loopexit()/loopbreak().

        ``once``: wait for events, run the active ones, return. ``nonblock``: do not wait; run what is
        ready. ``no_exit_on_empty``: keep running with no events, until loopexit()/loopbreak().

        Returns True if the loop returned because no events were pending or active.
        An exception raised by a callback stops the loop and is re-raised here; callbacks that were
        also due run on the next call. The GIL is released while the loop waits.
        """
        cdef int flags = 0
        if once:
            flags |= EVLOOP_ONCE
        if nonblock:
            flags |= EVLOOP_NONBLOCK
        if no_exit_on_empty:
            flags |= EVLOOP_NO_EXIT_ON_EMPTY
        return self._run(flags) == 1

    def dispatch(self):
        """Run the loop until no events are left or loopexit()/loopbreak(): ``loop()`` with no flags."""
        return self._run(0) == 1

    cdef int _run(self, int flags) except -1:
        cdef int rc
        self._ensure_open()
        if self._loop_thread != 0:
            raise RuntimeError(
                "this EventBase's loop is already running"
                + (" (loop() called from one of its callbacks)"
                   if self._loop_thread == PyThread_get_thread_ident() else " in another thread"))
        self._loop_thread = PyThread_get_thread_ident()
        self._break_requested = self._exit_requested = False
        try:
            old_wakeup = self._arm_signals()
            try:
                # A signal that arrived before the wakeup fd was set would wait for the next event.
                PyErr_CheckSignals()
                rc = self._drive(flags)
            finally:
                self._disarm_signals(old_wakeup)
        finally:
            self._loop_thread = 0
            if _after_loop != NULL:
                _after_loop()
        if self._exc is not None:
            exc = self._exc
            self._exc = None
            try:
                raise exc
            finally:
                exc = None
        if rc < 0:
            raise _libevent_error("event_base_loop")
        return rc

    cdef int _drive(self, int flags) except -2:
        """event_base_loop() in two steps, so that a busy loop does not pass the GIL back and forth.

        First a non-blocking pass with the GIL held: it runs whatever is ready (and whatever that
        makes ready) without ever waiting. Only when it found nothing does the loop wait, in one
        blocking pass with the GIL released; the first callback that pass runs takes the GIL back
        and keeps it for the rest of the pass (levent_take_gil).
        """
        cdef int rc
        cdef unsigned long long seen
        cdef int keep = flags & (EVLOOP_NO_EXIT_ON_EMPTY | EVLOOP_ONCE)
        if flags & EVLOOP_NONBLOCK:
            return event_base_loop(self._base, flags)
        while True:
            seen = self._dispatched
            rc = event_base_loop(self._base, EVLOOP_NONBLOCK | keep)
            if rc != 0 or self._stopping():
                return rc
            if self._dispatched == seen:
                rc = levent_loop_released(self._base, &self._gil_released,
                                          EVLOOP_ONCE | (keep & EVLOOP_NO_EXIT_ON_EMPTY))
                if rc != 0 or self._stopping():
                    return rc
            if flags & EVLOOP_ONCE:
                return 0
            PyErr_CheckSignals()

    cdef bint _stopping(self):
        # libevent resets its exit/break flags when each event_base_loop call begins: look at them
        # between the calls, along with levent's own.
        return (self._exc is not None or self._break_requested or self._exit_requested
                or event_base_got_break(self._base) or event_base_got_exit(self._base))

    cdef object _arm_signals(self):
        """In the main thread, point Python's signal wakeup fd at this base while it waits.

        Returns what _disarm_signals needs to restore: None (nothing done), or the previous fd.
        """
        cdef timeval tv
        # Any thread: a loopbreak() from another thread writes to the wakeup socket.
        self._open_wakeup()
        if self._wakeup_added and not _is_main_thread():
            return None
        if self._wakeup_added:
            old = _signal.set_wakeup_fd(self._wakeup_wfd, warn_on_full_buffer=False)
            if old == -1 or old in _levent_wakeup_fds:
                return old
            # Someone else (an asyncio loop) owns the wakeup fd and reads signal numbers from it:
            # give it back and poll instead.
            _signal.set_wakeup_fd(old)
        tv.tv_sec = 0
        tv.tv_usec = 100000
        event_add(&self._sigcheck_ev, &tv)
        return False

    cdef int _disarm_signals(self, object old) except -1:
        if old is None:
            return 0
        if old is False:
            event_del(&self._sigcheck_ev)
            return 0
        _signal.set_wakeup_fd(old)
        return 0

    cdef int _open_wakeup(self) except -1:
        if self._wakeup_added:
            return 0
        try:
            reader, writer = _socket.socketpair()
        except OSError:
            return 0    # out of fds: _arm_signals falls back to checking every 100 ms
        rfd, wfd = reader.detach(), writer.detach()
        if not self._can_watch(rfd):
            # _arm_signals falls back to checking for signals every 100 ms.
            os.close(rfd)
            os.close(wfd)
            return 0
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        event_assign(&self._wakeup_ev, self._base, rfd, EV_READ | EV_PERSIST,
                     levent_gil_callback(_wakeup_callback), <void *>self)
        self._wakeup_ev.ev_evcallback.evcb_flags |= EVLIST_INTERNAL    # as _sigcheck_ev
        event_priority_set(&self._wakeup_ev, 0)
        if event_add(&self._wakeup_ev, NULL) != 0:
            err = errno
            os.close(rfd)
            os.close(wfd)
            raise _libevent_error("event_add(wakeup)", err)
        self._wakeup_rfd, self._wakeup_wfd = rfd, wfd
        _levent_wakeup_fds.add(wfd)
        self._wakeup_added = True
        return 0

    cdef int _close_wakeup(self) except -1:
        if not self._wakeup_added:
            return 0
        event_del(&self._wakeup_ev)
        event_debug_unassign(&self._wakeup_ev)
        _levent_wakeup_fds.discard(self._wakeup_wfd)
        close_fd(self._wakeup_rfd)
        close_fd(self._wakeup_wfd)
        self._wakeup_rfd = self._wakeup_wfd = -1
        self._wakeup_added = False
        return 0

    def loopexit(self, delay=None):
        """Make the loop exit after ``delay`` seconds (None: once the current iteration is done)."""
        cdef timeval tv
        cdef int rc
        self._ensure_open()
        if delay is None:
            # libevent sets its flag from a callback activated for later in this iteration; levent's
            # own flag ends a run of call_soon batches at once.
            self._exit_requested = True
            rc = event_base_loopexit(self._base, NULL)
        else:
            _timeout_until(self, _precise_now() + _seconds(delay), &tv)
            rc = event_base_loopexit(self._base, &tv)
        if rc != 0:
            raise _libevent_error("event_base_loopexit")

    def loopbreak(self):
        """Make the loop return right after the callback that is running; safe from any thread."""
        cdef char byte = 0
        self._ensure_open()
        self._break_requested = True
        if event_base_loopbreak(self._base) != 0:
            raise _libevent_error("event_base_loopbreak")
        if (self._loop_thread != 0 and self._loop_thread != PyThread_get_thread_ident()
                and self._wakeup_added):
            # The loop may be between two event_base_loop calls, the next of which would reset
            # libevent's flag: the byte wakes it, and the wakeup callback breaks it again.
            write(self._wakeup_wfd, &byte, 1)

    def loopcontinue(self):
        """From a callback: skip the rest of this iteration's active events and poll again."""
        self._ensure_open()
        if event_base_loopcontinue(self._base) != 0:
            raise _libevent_error("event_base_loopcontinue")

    def reinit(self):
        """Re-create the backend after ``os.fork()``; call it in the child before using the base."""
        self._ensure_open()
        if self._select_backend:
            _check_select_headroom()
        levent_log_capture()
        cdef int rc = event_reinit(self._base)
        levent_log_release()
        if rc != 0:
            raise _libevent_error("event_reinit")
        if self._wakeup_added:
            # The wakeup socketpair is shared with the parent: make the child its own.
            set_by_us = False
            if self._loop_thread != 0 and _is_main_thread():
                old = _signal.set_wakeup_fd(-1)
                set_by_us = old == self._wakeup_wfd
                if not set_by_us:
                    _signal.set_wakeup_fd(old)
            self._close_wakeup()
            self._open_wakeup()
            if set_by_us:
                _signal.set_wakeup_fd(self._wakeup_wfd, warn_on_full_buffer=False)
        if self._calls_ev_ready:
            # So is the timerfd.
            self._close_calls_event()
            self._open_calls_event()
            self._arm_calls()

    # -- call_later ---------------------------------------------------------------------------------

    def call_later(self, delay, callback, *args):
        """Call ``callback(*args)`` once, ``delay`` seconds from now; returns a :class:`Call`, whose
        ``cancel()`` cancels it.

        Calls run in deadline order (first scheduled first among equal deadlines), never early. They
        live on levent's own timer heap in C, not as libevent events, which makes them several times
        cheaper than a Timer per call; the heap wakes the loop through one timerfd (Linux), so they
        are accurate to well under a millisecond. The loop wakes for calls at most once per 100 µs:
        when they come due closer together than that, they run together, up to 100 µs late.
        """
        return self._new_call(_precise_now() + _seconds(delay), callback, args)

    def call_at(self, when, callback, *args):
        """Like :meth:`call_later`, at ``when`` on the ``time.monotonic()`` clock."""
        cdef double w
        try:
            w = when
        except TypeError:
            raise TypeError(f"when must be a number (time.monotonic() seconds), not {type(when).__name__}") from None
        if not isfinite(w):
            raise ValueError(f"when must be finite, not {when!r}")
        return self._new_call(w, callback, args)

    cdef Call _new_call(self, double when, callback, tuple args):
        self._ensure_open()
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        cdef Call call = Call.__new__(Call)
        call._base = self
        call._callback = callback
        call._args = args
        call._when = when
        self._push_call(call)
        return call

    cdef int _push_call(self, Call call) except -1:
        cdef Py_ssize_t capacity
        cdef CallEntry *grown
        if not self._calls_ev_ready:
            self._open_calls_event()
        if self._ncalls == self._calls_capacity:
            capacity = self._calls_capacity * 2 if self._calls_capacity else 64
            grown = <CallEntry *>PyMem_Realloc(self._calls, capacity * sizeof(CallEntry))
            if grown == NULL:
                raise MemoryError()
            self._calls = grown
            self._calls_capacity = capacity
        cdef CallEntry *entry = &self._calls[self._ncalls]
        entry.when = call._when
        entry.seq = self._calls_seq
        entry.call = <PyObject *>call
        Py_INCREF(call)
        # A call on the heap is kept out of the cycle GC's generations: the base's tp_traverse reports
        # its references instead (_base_traverse). Thousands of pending timers would otherwise be
        # scanned by every young collection, a third of call_later's cost.
        PyObject_GC_UnTrack(<PyObject *>call)
        self._calls_seq += 1
        self._ncalls += 1
        _sift_up(self._calls, self._ncalls - 1)
        if self._calls[0].when < self._armed_when:
            self._arm_calls()
        return 0

    cdef int _arm_calls(self) except -1:
        """Make the loop wake for the earliest call, or stop waiting when there is none."""
        cdef timeval tv
        cdef double when
        if self._ncalls and self._ncancelled == self._ncalls:
            # Only cancelled calls are left: drop them, so that loop() can return when nothing else
            # waits rather than sleep until their deadlines.
            self._clear_calls()
        if self._ncalls == 0:
            if self._calls_ev_added:
                event_del(&self._calls_ev)
                self._calls_ev_added = False
            self._armed_when = INFINITY
            return 0
        when = self._calls[0].when
        if self._calls_ran_at < when < self._calls_ran_at + CALLS_SLACK:
            when = self._calls_ran_at + CALLS_SLACK     # calls left due by a break still run at once
        if self._timerfd >= 0:
            if not self._calls_ev_added:
                if event_add(&self._calls_ev, NULL) != 0:
                    raise _libevent_error("event_add(call_later)")
                self._calls_ev_added = True
            if when != self._armed_when:
                if levent_timerfd_arm(self._timerfd, when) != 0:
                    raise OSError(errno, f"timerfd_settime failed: {os.strerror(errno)}")
                self._armed_when = when
        elif when != self._armed_when or not self._calls_ev_added:
            _timeout_until(self, when, &tv)
            if event_add(&self._calls_ev, &tv) != 0:
                raise _libevent_error("event_add(call_later)")
            self._calls_ev_added = True
            self._armed_when = when
        return 0

    cdef int _run_calls(self) except -1:
        """Run the calls that are due, in order; stop at loopbreak() or an exception (the rest stay
        due and run at the next loop())."""
        cdef double now = _precise_now()
        cdef Call call
        cdef PyObject *p
        self._calls_ran_at = now
        while self._ncalls and self._calls[0].when <= now:
            if self._break_requested or self._exc is not None:
                break
            p = self._calls[0].call
            self._ncalls -= 1
            if self._ncalls:
                self._calls[0] = self._calls[self._ncalls]
                _sift_down(self._calls, self._ncalls, 0)
            call = <Call>p
            _track_unqueued(p)
            Py_DECREF(call)     # the heap's reference; ``call`` holds one
            if call._cancelled:
                self._ncancelled -= 1
                continue
            call._done = True
            try:
                call._run()
            except BaseException as exc:
                self._stop_with(exc)
        return 0

    cdef int _clear_calls(self) except -1:
        """Drop every scheduled call (closing the base): they count as cancelled."""
        cdef CallEntry *calls = self._calls
        cdef Py_ssize_t i, n = self._ncalls
        cdef Call call
        self._calls = NULL
        self._ncalls = self._calls_capacity = self._ncancelled = 0
        try:
            for i in range(n):
                call = <Call>calls[i].call
                _track_unqueued(calls[i].call)
                Py_DECREF(call)
                call._cancelled = True
                call._callback = None
                call._args = ()
        finally:
            PyMem_Free(calls)
        return 0

    cdef int _compact_calls(self) except -1:
        """Drop the cancelled calls from the heap (they would otherwise stay until their deadline)."""
        cdef Py_ssize_t i, kept = 0
        cdef list dropped = []
        for i in range(self._ncalls):
            if (<Call>self._calls[i].call)._cancelled:
                _track_unqueued(self._calls[i].call)
                dropped.append(<Call>self._calls[i].call)
                Py_DECREF(<Call>self._calls[i].call)     # the heap's; ``dropped`` holds one
            else:
                self._calls[kept] = self._calls[i]
                kept += 1
        self._ncalls = kept
        self._ncancelled = 0
        for i in range(kept // 2 - 1, -1, -1):
            _sift_down(self._calls, kept, i)
        self._arm_calls()
        return 0    # ``dropped`` goes last, once the heap is whole: a finalizer may schedule calls

    cdef int _open_calls_event(self) except -1:
        self._timerfd = levent_timerfd_create()
        if self._timerfd >= 0 and not self._can_watch(self._timerfd):
            close_fd(self._timerfd)
            self._timerfd = -1
        if self._timerfd >= 0:
            event_assign(&self._calls_ev, self._base, self._timerfd, EV_READ | EV_PERSIST,
                         levent_gil_callback(_calls_callback), <void *>self)
        else:
            event_assign(&self._calls_ev, self._base, -1, 0, levent_gil_callback(_calls_callback),
                         <void *>self)
        self._calls_ev_ready = True
        self._calls_ev_added = False
        self._armed_when = INFINITY
        return 0

    cdef int _close_calls_event(self) except -1:
        if not self._calls_ev_ready:
            return 0
        event_del(&self._calls_ev)
        event_debug_unassign(&self._calls_ev)
        if self._timerfd >= 0:
            close_fd(self._timerfd)
            self._timerfd = -1
        self._calls_ev_ready = self._calls_ev_added = False
        self._armed_when = INFINITY
        return 0

    # -- call_soon ----------------------------------------------------------------------------------

    def call_soon(self, callback, *args):
        """Call ``callback(*args)`` once, as soon as possible; returns a :class:`Call`, whose ``cancel()``
        cancels it. Like asyncio's ``loop.call_soon``, without a contextvars context.

        Calls run in the order they were scheduled, in batches, one batch per loop iteration: what a
        call schedules waits for the next batch, which runs after the loop has polled for I/O again,
        so a callback that keeps rescheduling itself does not starve I/O. Calls scheduled elsewhere
        (an Event callback, before loop(), another thread) join the next batch to start, in this loop
        iteration or the next. An exception or loopbreak() in a call stops the batch; the rest of it
        runs, in order, at the next loop(). ``loop(once=True)`` runs one iteration, so it leaves what a
        batch schedules for the next. Closing the base cancels the calls still queued.

        Safe from another thread, as call_later() is: it wakes the loop.
        """
        self._ensure_open()
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        cdef Call call = Call.__new__(Call)     # _base None: not on the heap
        call._callback = callback
        call._args = args
        call._when = _precise_now()
        self._soon.append(call)
        if not self._soon_armed:
            self._arm_soon(False)
        return call

    cdef int _arm_soon(self, bint next_iteration) except -1:
        """Make _soon_ev run the queue: at once (event_active), or, for what a batch left, in the next
        loop iteration, once libevent has polled for I/O. event_active() from its own callback would
        run it again in the same pass over the active events (libevent takes them until none is left),
        starving I/O; a zero timeout is activated in the next iteration, and costs no system call."""
        cdef timeval zero
        if not self._soon_ev_ready:
            event_assign(&self._soon_ev, self._base, -1, 0, levent_gil_callback(_soon_callback),
                         <void *>self)
            self._soon_ev_ready = True
        if next_iteration:
            zero.tv_sec = zero.tv_usec = 0
            if event_add(&self._soon_ev, &zero) != 0:
                raise _libevent_error("event_add(call_soon)")
        else:
            event_active(&self._soon_ev, EV_TIMEOUT, 1)
        self._soon_armed = True
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _run_soon(self) except -1:
        """Run the queued calls, while a new queue takes what they schedule; stop at loopbreak() or an
        exception (the rest go back to the front of the queue)."""
        cdef list batch = self._soon
        cdef Py_ssize_t i, n = len(batch)
        cdef Call call
        self._soon = []
        for i in range(n):
            if self._break_requested or self._exc is not None:
                self._soon = batch[i:] + self._soon
                break
            call = <Call>batch[i]
            if call._cancelled:
                continue
            call._done = True
            try:
                call._run()
            except BaseException as exc:
                self._stop_with(exc)
        return 0

    cdef int _clear_soon(self) except -1:
        """Cancel every queued call (closing the base), and any a finalizer queues meanwhile."""
        cdef list queue
        while self._soon:
            queue = self._soon
            self._soon = []
            for call in queue:
                (<Call>call)._cancelled = True
                (<Call>call)._callback = None
                (<Call>call)._args = ()
        return 0

    cdef int _close_soon_event(self) except -1:
        if self._soon_ev_ready:
            event_del(&self._soon_ev)
            event_debug_unassign(&self._soon_ev)
        self._soon_ev_ready = self._soon_armed = False
        return 0

    # -- time ---------------------------------------------------------------------------------------

    def cached_time(self):
        """The wall-clock time cached at the start of this loop iteration (gettimeofday), in seconds."""
        cdef timeval tv
        self._ensure_open()
        event_base_gettimeofday_cached(self._base, &tv)
        return _from_timeval(&tv)

    def update_cache_time(self):
        """Refresh the cached time now (useful in a long callback)."""
        self._ensure_open()
        event_base_update_cache_time(self._base)

    def monotonic(self):
        """The base's monotonic clock, in seconds: the clock its timers use."""
        cdef timeval tv
        self._ensure_open()
        if event_gettime_monotonic(self._base, &tv) != 0:
            raise _libevent_error("event_gettime_monotonic")
        return _from_timeval(&tv)

    # -- introspection ------------------------------------------------------------------------------

    def num_events(self, *, bint active=True, bint virtual=True, bint added=True):
        """How many events are active / virtual / added (internal events not counted)."""
        self._ensure_open()
        return event_base_get_num_events(self._base, _count_flags(active, virtual, added))

    def max_events(self, *, bint active=True, bint virtual=True, bint added=True, bint clear=False):
        """The most events there were at once; ``clear=True`` resets the maximum."""
        self._ensure_open()
        return event_base_get_max_events(self._base, _count_flags(active, virtual, added), clear)

    def dump_events(self):
        """libevent's own listing of the inserted and active events, as text."""
        cdef char *text = NULL
        cdef size_t size = 0
        self._ensure_open()
        cdef FILE *out = open_memstream(&text, &size)
        if out == NULL:
            raise OSError(errno, "open_memstream failed")
        event_base_dump_events(self._base, out)
        fclose(out)
        try:
            return text[:size].decode("utf-8", "replace")
        finally:
            free(text)

    def active_by_fd(self, fd, short events):
        """Make every event on ``fd`` active with ``events``, as if the backend had reported them."""
        self._ensure_open()
        event_base_active_by_fd(self._base, _fileno(fd), events)

    def active_by_signal(self, int signum):
        """Make every Signal event for ``signum`` active, as if the signal had arrived."""
        self._ensure_open()
        event_base_active_by_signal(self._base, signum)

    def running_event(self):
        """The levent Event whose callback is running now in this thread, or None."""
        self._ensure_open()
        # libevent 2.1 dereferences its current event unchecked when called from the thread that ran
        # the loop last: only ask while the loop runs here (so we are inside one of its callbacks).
        if self._loop_thread != PyThread_get_thread_ident():
            return None
        cdef event *ev = event_base_get_running_event(self._base)
        cdef PyObject *p = self._handles
        while p != NULL:
            if isinstance(<object>p, Event) and &(<Event>p)._ev == ev:
                return <Event>p
            p = (<Handle>p)._next
        return None

    def __iter__(self):
        """Iterate over the open Events levent created on this base (a snapshot)."""
        cdef list events = []
        cdef PyObject *p = self._handles
        while p != NULL:
            if isinstance(<object>p, Event):
                events.append(<Event>p)
            p = (<Handle>p)._next
        return iter(events)

    cdef int _close_handles(self) except -1:
        cdef Handle handle
        while self._handles != NULL:
            handle = <Handle>self._handles
            handle._close_from_base()
            if self._handles == <PyObject *>handle:
                handle._unlink()    # a subclass that failed to unlink: never loop forever
        return 0

    def close(self):
        """Close every Event, BufferEvent and Listener on this base, then free the base. Closing twice
        does nothing.

        Not allowed while its loop runs: call loopbreak() and close after loop() returns.
        """
        if self._base == NULL:
            return
        if self._loop_thread != 0:
            raise RuntimeError("cannot close an EventBase while its loop is running; "
                               "call loopbreak() and close it after loop() returns")
        self._clear_calls()
        self._close_calls_event()
        self._close_handles()
        self._clear_soon()
        self._close_soon_event()
        self._close_wakeup()
        self._close_sigcheck()
        event_base_free(self._base)
        self._base = NULL

    def __enter__(self):
        self._ensure_open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._base == NULL:
            return "<EventBase closed>"
        state = " running" if self._loop_thread else ""
        return (f"<EventBase method={self.method} events={self.num_events()}"
                f" priorities={self.priorities}{state}>")


# The references an EventBase holds to its pending Events, shown to the cycle GC. Cython generates a
# tp_traverse for the object attributes; these wrap it. tp_clear only drops the held references (the
# Events then free their C events while the base is still alive).
cdef traverseproc _base_traverse_attributes = (<PyTypeObject *>EventBase).tp_traverse


cdef int _base_traverse(PyObject *o, visitproc visit, void *arg) noexcept:
    cdef int r = _base_traverse_attributes(o, visit, arg)
    if r:
        return r
    cdef PyObject *p = (<EventBase>o)._handles
    while p != NULL:
        if (<Handle>p)._held:
            r = visit(p, arg)
            if r:
                return r
        p = (<Handle>p)._next
    # The calls on the heap are untracked (_push_call). A call only the heap references is reachable
    # exactly when the base is, so the base reports the call's references as its own, and a dropped
    # base whose calls lead back to it is still collected. A call something else also references
    # reports nothing: what it references then counts as referenced from outside (a dropped,
    # unclosed base stays alive while such a call is pending), for claiming references the GC cannot
    # see the other holder of would let it clear objects still in use.
    cdef Py_ssize_t i
    cdef PyObject *call
    for i in range((<EventBase>o)._ncalls):
        call = (<EventBase>o)._calls[i].call
        if PyObject_GC_IsTracked(call):
            r = visit(call, arg)
        elif call.ob_refcnt == 1:
            r = Py_TYPE(call).tp_traverse(call, visit, arg)
        else:
            r = 0
        if r:
            return r
    return 0


cdef int _base_clear(PyObject *o) noexcept:
    # Collect the held Events first: dropping a reference may free Events and relink the list.
    cdef list held = []
    cdef PyObject *p = (<EventBase>o)._handles
    while p != NULL:
        if (<Handle>p)._held:
            held.append(<Handle>p)
        p = (<Handle>p)._next
    for handle in held:
        (<Handle>handle)._release()
    try:
        (<EventBase>o)._clear_calls()
        (<EventBase>o)._clear_soon()
    except BaseException:
        pass    # tp_clear cannot fail; these only raise on a broken invariant
    return 0


(<PyTypeObject *>EventBase).tp_traverse = _base_traverse
(<PyTypeObject *>EventBase).tp_clear = _base_clear


cdef unsigned int _count_flags(bint active, bint virtual, bint added):
    return ((EVENT_BASE_COUNT_ACTIVE if active else 0) | (EVENT_BASE_COUNT_VIRTUAL if virtual else 0)
            | (EVENT_BASE_COUNT_ADDED if added else 0))


# ---------------------------------------------------------------------------------------------------

@cython.no_gc_clear   # subclasses' __dealloc__ need _base alive to free their C objects
cdef class Handle:
    """Base of everything levent creates on an EventBase (Event, BufferEvent, Listener)."""

    def __cinit__(self):
        self._held = False
        self._prev = NULL
        self._next = NULL

    cdef int _link(self, EventBase base) except -1:
        self._base = base
        self._next = base._handles
        if base._handles != NULL:
            (<Handle>base._handles)._prev = <PyObject *>self
        base._handles = <PyObject *>self
        return 0

    cdef int _unlink(self) except -1:
        cdef EventBase base = self._base
        if self._prev != NULL:
            (<Handle>self._prev)._next = self._next
        elif base is not None and base._handles == <PyObject *>self:
            base._handles = self._next
        if self._next != NULL:
            (<Handle>self._next)._prev = self._prev
        self._prev = self._next = NULL
        return 0

    cdef int _hold(self) except -1:
        if not self._held:
            Py_INCREF(self)
            self._held = True
        return 0

    cdef int _release(self) except -1:
        # Callers hold their own reference, so self survives the DECREF.
        if self._held:
            self._held = False
            Py_DECREF(self)
        return 0

    cdef int _close_from_base(self) except -1:
        raise NotImplementedError


# An EventPair's events. arg is the EventPair: alive, because the base holds it (_hold) while either
# event is pending, and libevent only calls pending events. SystemExit and KeyboardInterrupt from a
# protocol stop the loop (as in asyncio); the subclass handles everything else.

cdef void _pair_readable(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<EventPair>arg)._base._gil_released)
    cdef EventPair pair = <EventPair>arg
    pair._base._dispatched += 1
    try:
        pair._read_ready()
    except BaseException as exc:
        pair._base._stop_with(exc)


cdef void _pair_writable(evutil_socket_t fd, short what, void *arg) noexcept:
    levent_take_gil(&(<EventPair>arg)._base._gil_released)
    cdef EventPair pair = <EventPair>arg
    pair._base._dispatched += 1
    try:
        pair._write_ready()
    except BaseException as exc:
        pair._base._stop_with(exc)


@cython.no_gc_clear   # __dealloc__ needs _base alive to delete the events
cdef class EventPair(Handle):
    """Base of the asyncio loop's native transport cores: a read and a write event on one fd."""

    # Lifetime: the base holds the object (_hold) while either event is pending, so libevent only ever
    # calls back into a live object, and the C callbacks find it through the void* they are given.

    def __cinit__(self):
        self._fd = -1

    def __dealloc__(self):
        # Not pending here (the base would hold us), unless the GC tears down a dropped base.
        self._drop_events()

    cdef int _assign(self, EventBase base, int fd) except -1:
        if (event_assign(&self._rev, base._base, fd, EV_READ | EV_PERSIST,
                         levent_gil_callback(_pair_readable), <void *>self) != 0
                or event_assign(&self._wev, base._base, fd, EV_WRITE | EV_PERSIST,
                                levent_gil_callback(_pair_writable), <void *>self) != 0):
            raise RuntimeError(f"event_assign failed for fd {fd}")
        self._fd = fd
        self._assigned = True
        self._link(base)
        return 0

    cdef int _drop_events(self) except -1:
        if self._assigned:
            if self._reading:
                event_del(&self._rev)
            if self._writing:
                event_del(&self._wev)
            self._reading = self._writing = False
            self._assigned = False
            self._unlink()
        return 0

    cdef int _close_from_base(self) except -1:
        # The loop is closing: its base frees libevent's state, so the events go now. The fd stays
        # open, as with asyncio's loops; the transport warns when collected unclosed.
        self._drop_events()
        self._release()
        return 0

    cdef int _read_ready(self) except -1:
        raise NotImplementedError

    cdef int _write_ready(self) except -1:
        raise NotImplementedError

    cdef int _start_reading(self) except -1:
        if self._reading or not self._assigned:
            return 0
        if event_add(&self._rev, NULL) != 0:
            _raise_errno()
        self._reading = True
        self._hold()
        return 0

    cdef int _stop_reading(self) except -1:
        if self._reading:
            event_del(&self._rev)
            self._reading = False
            if not self._writing:
                self._release()     # callers hold their own reference
        return 0

    cdef int _start_writing(self) except -1:
        if self._writing or not self._assigned:
            return 0
        if event_add(&self._wev, NULL) != 0:
            _raise_errno()
        self._writing = True
        self._hold()
        return 0

    cdef int _stop_writing(self) except -1:
        if self._writing:
            event_del(&self._wev)
            self._writing = False
            if not self._reading:
                self._release()
        return 0


@cython.no_gc_clear   # __dealloc__ needs _base alive to delete the C event
cdef class Event(Handle):
    """An event: libevent's ``event`` on an fd, a signal or a timeout.

    ``Event(base, fd, events, callback, *args)`` calls ``callback(fd, what, *args)`` when any of
    ``events`` (READ, WRITE, CLOSED, SIGNAL; with PERSIST and ET) happens, or with TIMEOUT when the
    timeout given to :meth:`add` passes. ``fd`` is an int or an object with ``fileno()`` (kept alive).

    While pending or active, an Event is kept alive by its base even if you drop every reference to
    it, as libevent keeps it; once it is neither, only your references keep it.
    """

    def __cinit__(self):
        self._assigned = False
        self._args = ()
        self._timeout = -1

    def __init__(self, EventBase base not None, fd, int events, callback, *args):
        cdef int fdnum = _fileno(fd)
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if events & ~_ALL_FLAGS:
            raise ValueError(f"unknown event bits {events & ~_ALL_FLAGS:#x}; use READ, WRITE, SIGNAL, "
                             "CLOSED, TIMEOUT, PERSIST, ET")
        if events & EV_SIGNAL:
            if events & _FD_KINDS:
                raise ValueError("SIGNAL cannot be combined with READ, WRITE or CLOSED")
            _check_signum(fdnum)
        elif events & _FD_KINDS:
            _check_fd(fdnum)
        elif fdnum != -1 and events & EV_ET:
            raise ValueError("ET needs READ, WRITE or CLOSED")
        self._setup(base, fdnum, events, callback, args, STYLE_FD)
        if not isinstance(fd, int):
            self._fileobj = fd

    cdef int _setup(self, EventBase base, int fd, short events, callback, tuple args, int style) except -1:
        if self._assigned:
            raise RuntimeError("Event.__init__() called twice")
        base._ensure_open()
        if event_assign(&self._ev, base._base, fd, events, levent_gil_callback(_event_callback),
                        <void *>self) != 0:
            raise _libevent_error("event_assign")
        self._callback = callback
        self._args = args
        self._fd_obj = fd
        self._style = style
        self._assigned = True
        self._link(base)
        return 0

    def __dealloc__(self):
        cdef unsigned long loop_thread
        if self._assigned:
            # Not pending (the base would hold us) unless the GC is tearing down a dropped base. A
            # loop in another thread may still have us as its "current event" while it returns from
            # our callback: event_del waits for that, without needing the GIL, so no deadlock.
            # Otherwise libevent no longer knows the event and event_del (a lock round-trip) is moot.
            loop_thread = self._base._loop_thread
            if (self._ev.ev_evcallback.evcb_flags & _LIVE_FLAGS
                    or (loop_thread != 0 and loop_thread != PyThread_get_thread_ident())):
                event_del(&self._ev)
            event_debug_unassign(&self._ev)
            self._assigned = False
            self._unlink()

    cdef int _close_from_base(self) except -1:
        self.close()
        return 0

    cdef int _ensure_ready(self) except -1:
        if not self._assigned:
            if self._base is None:
                raise ValueError("this Event was not initialized; call Event.__init__()")
            if self._base._base == NULL:
                raise ValueError("the EventBase of this Event is closed; create a new base and event")
            raise ValueError("this Event is closed; create a new Event")
        return 0

    cdef int _hold(self) except -1:
        global _signal_base
        if not self._held:
            Handle._hold(self)
            if self._ev.ev_events & EV_SIGNAL:
                self._base._nsignals += 1
                _signal_base = <PyObject *>self._base
        return 0

    cdef int _release(self) except -1:
        global _signal_base
        if self._held:
            if self._ev.ev_events & EV_SIGNAL:
                self._base._nsignals -= 1
                if self._base._nsignals == 0 and _signal_base == <PyObject *>self._base:
                    _signal_base = NULL
            Handle._release(self)
        return 0

    cdef int _del(self) except -1:
        cdef int rc
        cdef unsigned long loop_thread = self._base._loop_thread
        if loop_thread != 0 and loop_thread != PyThread_get_thread_ident():
            # The loop runs in another thread and may be about to run our callback, which needs the
            # GIL: release it while event_del waits for that callback to finish.
            with nogil:
                rc = event_del(&self._ev)
        else:
            rc = event_del(&self._ev)
        if rc != 0:
            raise _libevent_error("event_del")
        self._release()
        return 0

    # -- properties ---------------------------------------------------------------------------------

    @property
    def base(self):
        """The EventBase this event belongs to."""
        return self._base

    @property
    def events(self):
        """The event bits it was created with (READ, WRITE, SIGNAL, CLOSED, PERSIST, ET)."""
        self._ensure_ready()
        return event_get_events(&self._ev)

    @property
    def callback(self):
        """The callback (None once closed)."""
        return self._callback

    @property
    def args(self):
        """The extra arguments passed to the callback."""
        return self._args

    @property
    def closed(self):
        """True once closed, directly or by closing its base."""
        return not self._assigned

    @property
    def priority(self):
        """The priority: 0 runs first; valid values are ``range(base.priorities)``."""
        self._ensure_ready()
        return event_get_priority(&self._ev)

    @priority.setter
    def priority(self, int value):
        self._ensure_ready()
        cdef int n = event_base_get_npriorities(self._base._base)
        if not 0 <= value < n:
            raise ValueError(f"priority must be in range({n}) for this base, not {value}; "
                             "create the base with EventBase(priorities=N) for more levels")
        if event_priority_set(&self._ev, value) != 0:
            raise RuntimeError("cannot change the priority of an active event")

    def fileno(self):
        """The fd (or signal number) this event watches; -1 for a timer."""
        self._ensure_ready()
        return event_get_fd(&self._ev)

    # -- operations ---------------------------------------------------------------------------------

    def add(self, timeout=None):
        """Make the event pending, with an optional timeout in seconds (re-adding resets the timeout).

        An event with only a timeout (a Timer) needs ``timeout``. A timeout never fires early.
        """
        self._ensure_ready()
        if timeout is not None:
            t = _seconds(timeout)
            self._add(_precise_now() + t, t)
        elif self._ev.ev_events & (_FD_KINDS | EV_SIGNAL):
            self._add(0, -1)
        else:
            raise ValueError("an event without READ, WRITE, CLOSED or SIGNAL only fires on a "
                             "timeout: pass add(timeout=seconds)")

    cdef int _add(self, double deadline, double timeout) except -1:
        """event_add, with a timeout ending at ``deadline`` (precise clock), or none if ``timeout`` < 0."""
        cdef timeval tv
        cdef timeval *tvp = NULL
        cdef int rc, err
        cdef long long expected = 0
        cdef long long late
        if self._ev.ev_events & _FD_KINDS:
            self._base._check_watchable(self._ev.ev_fd)
        _check_signal_base(self)
        if timeout >= 0:
            expected = _timeout_until(self._base, deadline, &tv)
            tvp = &tv
        levent_log_capture()
        rc = event_add(&self._ev, tvp)
        err = errno
        if rc == 0 and tvp != NULL:
            # If libevent's clock moved between our reading and its own (a coarse tick is 4 ms), its
            # deadline is that much later than meant: take the difference off and add again.
            late = (<long long>self._ev.ev_timeout.tv_sec * 1000000 + self._ev.ev_timeout.tv_usec
                    - expected)
            if late > 0:
                late = <long long>tv.tv_sec * 1000000 + tv.tv_usec - late
                if late < 0:
                    late = 0
                tv.tv_sec = late // 1000000
                tv.tv_usec = late % 1000000
                rc = event_add(&self._ev, &tv)
                err = errno
        levent_log_release()
        if rc != 0:
            raise _libevent_error("event_add", err)
        _warn_logged()
        self._timeout = timeout
        self._deadline = deadline
        self._add_serial += 1
        self._hold()
        return 0

    def delete(self):
        """Make the event non-pending and non-active. Deleting a closed event does nothing.

        From another thread, waits for the event's callback if it is running.
        """
        if self._assigned:
            self._del()

    def remove_timer(self):
        """Remove the timeout of a pending event, keeping its fd or signal pending."""
        self._ensure_ready()
        if event_remove_timer(&self._ev) != 0:
            raise _libevent_error("event_remove_timer")
        self._timeout = -1
        if not (self._ev.ev_evcallback.evcb_flags & _LIVE_FLAGS):
            self._release()

    def pending(self, short events=_ALL_KINDS):
        """The bits of ``events`` for which the event is pending or active (0 if none)."""
        if not self._assigned:
            return 0
        return event_pending(&self._ev, events, NULL)

    def is_pending(self):
        """True while the event is pending or active."""
        return self._assigned and bool(self._ev.ev_evcallback.evcb_flags & _LIVE_FLAGS)

    def active(self, what=None, short ncalls=1):
        """Make the event active as if ``what`` happened (default: its own kinds, or TIMEOUT); its
        callback runs in the next loop iteration. Safe from another thread: wakes the loop.
        ``ncalls`` only matters for SIGNAL events (the callback runs that many times)."""
        self._ensure_ready()
        cdef int res
        if what is None:
            res = self._ev.ev_events & _ALL_KINDS or EV_TIMEOUT
        else:
            res = what
            if res & ~_ALL_KINDS or res == 0:
                raise ValueError(f"what must be READ, WRITE, CLOSED, SIGNAL or TIMEOUT bits, not {what!r}")
        _check_signal_base(self)
        event_active(&self._ev, res, ncalls)
        self._hold()

    def close(self):
        """Delete the event and free it; later use raises ValueError. Safe inside its own callback."""
        if not self._assigned:
            return
        self._del()
        event_debug_unassign(&self._ev)
        self._assigned = False
        self._unlink()
        # Break reference cycles through the callback now rather than at the next GC.
        self._callback = None
        self._args = ()
        self._fileobj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        name = type(self).__name__
        if not self._assigned:
            return f"<{name} closed>"
        pending = event_pending(&self._ev, _ALL_KINDS, NULL)
        return (f"<{name} fd={self._ev.ev_fd} events={_kinds_repr(self._ev.ev_events)}"
                f" pending={_kinds_repr(pending)} callback={self._callback!r}>")


cdef int _check_signal_base(Event ev) except -1:
    if (ev._ev.ev_events & EV_SIGNAL and _signal_base != NULL
            and _signal_base != <PyObject *>ev._base and not ev._held):
        raise RuntimeError("another EventBase has Signal events pending; libevent delivers signals to "
                           "one base at a time: delete that base's Signals (or close it) first")
    return 0


cdef int _warn_logged() except -1:
    """Surface a libevent warning logged by a call that still succeeded."""
    if levent_log_message[0] != 0:
        import warnings
        warnings.warn(f"libevent: {levent_log_message.decode('utf-8', 'replace')}", RuntimeWarning,
                      stacklevel=3)
    return 0


cdef int _check_select_headroom() except -1:
    """libevent opens its own fds for a select base (notification, signals) and aborts the process if
    one is >= FD_SETSIZE: refuse to create or reinit one when the lowest free fd leaves no room."""
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    if fd + 4 >= FD_SETSIZE:
        raise ValueError(f"the select backend needs fds below {FD_SETSIZE}, but the lowest free fd is "
                         f"{fd}; close some files or use EventBase(method='epoll') or 'poll'")
    return 0


cdef int _check_fd(int fd) except -1:
    if fd < 0:
        raise ValueError(f"fd must be >= 0 for READ, WRITE or CLOSED events, not {fd}")
    if fcntl(fd, F_GETFD) == -1 and errno == EBADF:
        raise OSError(EBADF, f"fd {fd} is not an open file descriptor")
    return 0


cdef int _check_signum(int signum) except -1:
    if not 0 < signum < _signal.NSIG:
        raise ValueError(f"signal number must be between 1 and {_signal.NSIG - 1}, not {signum}")
    if signum in (_signal.SIGKILL, _signal.SIGSTOP):
        raise ValueError(f"signal {signum} cannot be caught")
    return 0


cdef class Timer(Event):
    """A timeout-only event (libevent's evtimer): ``callback(*args)`` runs ``timeout`` seconds after
    :meth:`~Event.add`. With ``persist=True`` it repeats every ``timeout`` until deleted."""

    def __init__(self, EventBase base not None, callback, *args, bint persist=False):
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._setup(base, -1, EV_PERSIST if persist else 0, callback, args, STYLE_ARGS)


cdef class Signal(Event):
    """A signal event (libevent's evsignal): ``callback(signum, *args)`` runs in the loop, outside the
    signal handler, each time ``signum`` arrives.

    While pending, libevent's handler replaces Python's for that signal; the previous handler comes
    back when the Signal is deleted or closed. Only one EventBase at a time can have Signals pending
    (libevent delivers signals to one base): adding one on a second base raises RuntimeError.
    """

    def __init__(self, EventBase base not None, int signum, callback, *args, bint persist=True):
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        _check_signum(signum)
        self._setup(base, signum, EV_SIGNAL | (EV_PERSIST if persist else 0), callback, args, STYLE_SIGNAL)

    @property
    def signum(self):
        """The signal number."""
        return self._fd_obj


@cython.freelist(256)
cdef class Call:
    """A call scheduled with :meth:`EventBase.call_soon`, :meth:`EventBase.call_later` or
    :meth:`EventBase.call_at`, like asyncio's Handle and TimerHandle: ``cancel()`` it before it runs.
    The base keeps it until it has run or was cancelled."""

    def __init__(self):
        raise TypeError("Call objects are made by EventBase.call_soon(), call_later() and call_at()")

    cdef int _run(self) except -1:
        callback, args = self._callback, self._args
        self._callback = None   # drop what the call holds as soon as it ran
        self._args = ()
        callback(*args)
        return 0

    @property
    def when(self):
        """When it is due, in seconds on the ``time.monotonic()`` clock; for a call_soon call, when it
        was scheduled (it is due at once)."""
        return self._when

    @property
    def callback(self):
        """The callback (None once it ran or was cancelled)."""
        return self._callback

    @property
    def args(self):
        """The callback's arguments."""
        return self._args

    def cancel(self):
        """Cancel the call if it has not run yet; cancelling twice, or after it ran, does nothing."""
        if self._done or self._cancelled:
            return
        self._cancelled = True
        self._callback = None
        self._args = ()
        cdef EventBase base = self._base
        if base is None or base._ncalls == 0:
            return      # a call_soon call (its batch skips it), or a closed base
        base._ncancelled += 1
        if base._ncancelled > 64 and 2 * base._ncancelled > base._ncalls:
            # Mostly cancelled (long timeouts that did not fire): compact, as asyncio does.
            base._compact_calls()
        elif base._ncancelled == base._ncalls:
            base._arm_calls()       # drops them all

    def cancelled(self):
        """True if cancelled (also when its base was closed before it ran)."""
        return self._cancelled

    def done(self):
        """True once it ran."""
        return self._done

    def __repr__(self):
        state = "cancelled" if self._cancelled else "done" if self._done else f"when={self._when:.6f}"
        return f"<Call {state} callback={self._callback!r}>"


# ---------------------------------------------------------------------------------------------------
# Non-blocking socket I/O for callbacks: MSG_DONTWAIT makes these never block, so they keep the GIL
# (a socket method releases and re-takes it around every call) and parse arguments the fast way.

from levent._sysio cimport MSG_DONTWAIT, MSG_NOSIGNAL, c_recv, c_send


def recv_into(int fd, buffer, Py_ssize_t nbytes=-1):
    """Receive into ``buffer`` (writable bytes-like) from socket ``fd`` without blocking; return the
    byte count (0: the peer closed). Raises BlockingIOError when nothing is there, OSError on errors."""
    cdef Py_buffer view
    cdef ssize_t n
    try:
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    except BufferError:
        raise TypeError(f"buffer must be a writable bytes-like object, not {type(buffer).__name__}") from None
    try:
        if nbytes < 0 or nbytes > view.len:
            nbytes = view.len
        n = c_recv(fd, view.buf, nbytes, MSG_DONTWAIT)
        if n < 0:
            _raise_errno()
        return n
    finally:
        PyBuffer_Release(&view)


def send(int fd, data, Py_ssize_t offset=0, Py_ssize_t nbytes=-1):
    """Send ``data[offset:offset + nbytes]`` (bytes-like) on socket ``fd`` without blocking; return the
    byte count sent. Raises BlockingIOError when the socket's buffer is full, OSError on errors
    (EPIPE rather than SIGPIPE)."""
    cdef Py_buffer view
    cdef ssize_t n
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or offset > view.len:
            raise ValueError(f"offset must be within the data (0..{view.len}), not {offset}")
        if nbytes < 0 or nbytes > view.len - offset:
            nbytes = view.len - offset
        n = c_send(fd, <char *>view.buf + offset, nbytes, MSG_DONTWAIT | MSG_NOSIGNAL)
        if n < 0:
            _raise_errno()
        return n
    finally:
        PyBuffer_Release(&view)


cdef int _raise_errno() except -1:
    cdef int err = errno
    raise OSError(err, os.strerror(err))   # the OSError constructor picks BlockingIOError etc.
