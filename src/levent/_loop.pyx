# cython: language_level=3
"""The native half of levent's asyncio event loop (:class:`levent.loop.EventLoop`).

call_soon and call_later put Handles straight on the EventBase's own queues (its call_soon FIFO and
its call_later heap in C), so scheduling costs no libevent event per call; a Handle overrides how the
base runs a call, to enter its contextvars context and to send exceptions to the loop's exception
handler instead of stopping the loop. add_reader/add_writer are levent Events calling the Handle.
"""
cimport cython
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.object cimport PyObject_Call
from libc.math cimport INFINITY, isnan
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from libevent_pxd.event cimport EV_PERSIST, EV_READ, EV_WRITE
from levent._core cimport STYLE_ARGS, Call, Event, EventBase, _fileno

import sys

from asyncio import coroutines, format_helpers, futures
from asyncio.log import logger

# The Future class create_future() makes, looked up once (as uvloop does).
cdef object _Future = futures.Future

# asyncio's own test for coroutine functions (renamed in 3.12).
_iscoroutinefunction = getattr(coroutines, '_iscoroutinefunction', coroutines.iscoroutinefunction)


# Batches of call_soon callbacks run back to back before polling for I/O (EventBase._soon_batches).
cdef int SOON_BATCHES = 16


cdef inline double _now() noexcept nogil:
    # The clock of time.monotonic() and of the EventBase's call_later heap.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef class Handle(Call):
    """A callback scheduled by the loop (``call_soon``), as asyncio's ``Handle``: ``cancel()`` it before
    it runs. It runs in the context it was scheduled with; an exception it raises goes to the loop's
    exception handler (SystemExit and KeyboardInterrupt stop the loop, as in asyncio)."""

    cdef LoopCore _loop
    cdef object _context
    cdef object _source_traceback    # a traceback.StackSummary, in debug mode

    def get_context(self):
        """The contextvars.Context the callback runs in."""
        return self._context

    def _run_watcher(self):
        # An fd watcher's Event calls this each time the fd is ready: the same handle runs again.
        # ``handle`` is a strong reference: the callback may remove the watcher, which drops the
        # Event's reference to this handle while it runs.
        cdef Handle handle = self
        if handle._cancelled:
            handle._loop._drop_watcher(handle)
        else:
            handle._run()

    cdef int _run(self) except -1:
        cdef LoopCore loop = self._loop
        cdef double started
        if loop._debug:
            return self._run_debug()
        # Local references: the callback may cancel this handle, which drops its callback and args.
        callback, args, context = self._callback, self._args, self._context
        try:
            PyContext_Enter(context)
            try:
                callback(*args)
            finally:
                PyContext_Exit(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, callback, args)
        return 0

    cdef int _run_debug(self) except -1:
        # asyncio's debug mode: remember the running handle, and log slow callbacks.
        loop = self._loop
        loop._current_handle = self
        started = _now()
        callback, args, context = self._callback, self._args, self._context
        try:
            try:
                PyContext_Enter(context)
                try:
                    callback(*args)
                finally:
                    PyContext_Exit(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._report(exc, callback, args)
            took = _now() - started
            if took >= loop.slow_callback_duration:
                logger.warning('Executing %s took %.3f seconds', _format_handle(self), took)
        finally:
            loop._current_handle = None
        return 0

    cdef int _report(self, exc, callback, tuple args) except -1:
        context = {
            'message': f'Exception in callback {format_helpers._format_callback_source(callback, args)}',
            'exception': exc,
            'handle': self,
        }
        if self._source_traceback:
            context['source_traceback'] = self._source_traceback
        self._loop.call_exception_handler(context)
        return 0

    cdef list _repr_info(self):
        info = [type(self).__name__]
        if self._cancelled:
            info.append('cancelled')
        if self._callback is not None:
            info.append(format_helpers._format_callback_source(self._callback, self._args))
        if self._source_traceback:
            frame = self._source_traceback[len(self._source_traceback) - 1]
            info.append(f'created at {frame[0]}:{frame[1]}')
        return info

    def __repr__(self):
        return '<{}>'.format(' '.join(self._repr_info()))


cdef class TimerHandle(Handle):
    """A callback scheduled with ``call_later``/``call_at``, as asyncio's ``TimerHandle``."""

    def when(self):
        """When the callback is due, on the loop's ``time()`` clock."""
        return self._when

    cdef list _repr_info(self):
        info = Handle._repr_info(self)
        info.insert(2 if self._cancelled else 1, f'when={self._when}')
        return info

    def __hash__(self):
        return hash(self._when)

    def __lt__(self, other):
        return self._when < other.when() if isinstance(other, TimerHandle) else NotImplemented

    def __le__(self, other):
        return self._when <= other.when() if isinstance(other, TimerHandle) else NotImplemented

    def __gt__(self, other):
        return self._when > other.when() if isinstance(other, TimerHandle) else NotImplemented

    def __ge__(self, other):
        return self._when >= other.when() if isinstance(other, TimerHandle) else NotImplemented

    def __eq__(self, other):
        if isinstance(other, TimerHandle):
            return (self._when == other.when() and self._callback == other._callback
                    and self._args == other._args and self._cancelled == other.cancelled())
        return NotImplemented


cdef str _format_handle(Handle handle):
    # As asyncio's base_events._format_handle: a task's step shows as the task.
    cb = handle._callback
    if isinstance(getattr(cb, '__self__', None), __import__('asyncio').Task):
        return repr(cb.__self__)
    return str(handle)


cdef class LoopCore:
    """The scheduling core of :class:`levent.loop.EventLoop`; not used on its own.

    ``_closed``, ``_debug`` and ``_stopping`` are the attributes asyncio's BaseEventLoop keeps, here
    as C fields so that every call_soon reads them without a dict lookup.
    """

    cdef EventBase _base
    cdef public bint _closed
    cdef public bint _debug
    cdef public bint _stopping
    # fd -> Event watching it, one dict per direction (add_reader / add_writer).
    cdef dict _readers
    cdef dict _writers
    # {'loop': self}, what create_future() passes to Future; None until then and once closed.
    cdef dict _future_kwargs

    def __cinit__(self, *args, **kwargs):
        self._base = EventBase()
        self._base._soon_batches = SOON_BATCHES
        self._readers = {}
        self._writers = {}

    # -- scheduling ---------------------------------------------------------------------------------

    # BaseEventLoop's versions of these two are Python functions, and a streams read calls both: the
    # reader's create_future(), and get_debug() from the C Future's constructor.
    @property
    def base(self):
        """The loop's :class:`~levent.EventBase`: raw levent objects made on it run on this loop."""
        return self._base

    def create_future(self):
        """Create a Future attached to the loop."""
        # Future takes its loop by keyword only, and a call with loop=self builds that dict every
        # time (a third of the call, one per streams read). The loop keeps one instead: a cycle
        # with itself that close() breaks.
        if self._future_kwargs is None:
            if self._closed:
                return _Future(loop=self)
            self._future_kwargs = {'loop': self}
        return PyObject_Call(_Future, (), self._future_kwargs)

    def get_debug(self):
        """True in asyncio's debug mode (set_debug())."""
        return self._debug

    cdef inline int _check_closed(self) except -1:
        if self._closed:
            raise RuntimeError('Event loop is closed')
        return 0

    cdef int _check_callback(self, callback, str method) except -1:
        if not callable(callback):
            if self._debug or coroutines.iscoroutine(callback):
                self._check_callback_debug(callback, method)
            raise TypeError(f'a callable object was expected by {method}(), got {callback!r}')
        if self._debug:
            self._check_callback_debug(callback, method)
        return 0

    cdef int _check_callback_debug(self, callback, str method) except -1:
        if coroutines.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        return 0

    cdef Handle _handle(self, type cls, callback, tuple args, context):
        # No Python frame is pushed for call_soon() or this function: frame 0 is the caller's.
        cdef Handle handle = cls.__new__(cls)
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._context = PyContext_CopyCurrent() if context is None else context
        if self._debug:
            handle._source_traceback = format_helpers.extract_stack(sys._getframe(0))
        return handle

    def call_soon(self, callback, *args, context=None):
        """Arrange for ``callback(*args)`` to be called soon, in FIFO order; returns a Handle."""
        self._check_closed()
        if self._debug:
            self._check_thread()
        self._check_callback(callback, 'call_soon')
        cdef Handle handle = self._handle(Handle, callback, args, context)
        self._push_soon(handle)
        return handle

    cdef inline int _push_soon(self, Handle handle) except -1:
        cdef EventBase base = self._base
        base._soon.append(handle)
        if not base._soon_armed:
            base._arm_soon(False)
        return 0

    def call_soon_threadsafe(self, callback, *args, context=None):
        """Like call_soon(), from any thread: wakes the loop at once."""
        self._check_closed()
        self._check_callback(callback, 'call_soon_threadsafe')
        cdef Handle handle = self._handle(Handle, callback, args, context)
        # The base's queue is safe from other threads: appends hold the GIL, and arming it is an
        # event_active(), which wakes a waiting loop through libevent's notify fd.
        self._push_soon(handle)
        return handle

    def call_later(self, delay, callback, *args, context=None):
        """Arrange for ``callback(*args)`` to be called ``delay`` seconds from now; returns a
        TimerHandle. Callbacks run in deadline order, FIFO among equal deadlines, never early."""
        if PyFloat_CheckExact(delay):   # the common case, without a float object for the sum
            return self._call_at(_now() + PyFloat_AS_DOUBLE(delay), callback, args, context, 'call_later')
        if delay is None:
            raise TypeError('delay must not be None')
        return self._call_at(_now() + delay, callback, args, context, 'call_later')

    def call_at(self, when, callback, *args, context=None):
        """Like call_later(), at ``when`` on the loop's ``time()`` clock."""
        if when is None:
            raise TypeError('when cannot be None')
        return self._call_at(when, callback, args, context, 'call_at')

    cdef TimerHandle _call_at(self, double when, callback, tuple args, context, str method):
        self._check_closed()
        if self._debug:
            self._check_thread()
        self._check_callback(callback, method)
        if isnan(when):
            raise ValueError(f'{method}(): the deadline is NaN')
        cdef TimerHandle handle = <TimerHandle>self._handle(TimerHandle, callback, args, context)
        handle._when = when
        if when == INFINITY:
            return handle       # never due: it stays off the heap (cancel() works all the same)
        if when == -INFINITY:
            handle._when = 0.0  # long past: due at once, and a finite deadline for the timerfd
        handle._base = self._base
        self._base._push_call(handle)
        return handle

    def _run_one_iteration(self):
        # stop() before run_forever(): one iteration that polls without waiting and runs one batch of
        # callbacks, as asyncio's, so what they schedule waits for the next run.
        cdef EventBase base = self._base
        cdef int batches = base._soon_batches
        base._soon_batches = 1
        try:
            base.loop(once=True, nonblock=True)
        finally:
            base._soon_batches = batches

    def time(self):
        """The loop's clock: ``time.monotonic()``."""
        return _now()

    # -- fd watchers --------------------------------------------------------------------------------

    cdef Handle _add_watcher(self, dict watchers, short kind, fd, callback, tuple args):
        cdef int fdnum = _fileno(fd)
        if fdnum < 0:
            raise ValueError(f"Invalid file descriptor: {fdnum}")
        self._check_closed()
        self._check_callback(callback, 'add_reader' if kind == EV_READ else 'add_writer')
        cdef Handle handle = self._handle(Handle, callback, args, None)
        cdef Event ev = watchers.get(fdnum)
        if ev is not None:
            # Replace the callback, as asyncio does: the Event stays registered.
            (<Handle>ev._args[0])._cancelled = True
            ev._callback = Handle._run_watcher
            ev._args = (handle,)
            return handle
        ev = Event.__new__(Event)
        ev._setup(self._base, fdnum, kind | EV_PERSIST, Handle._run_watcher, (handle,), STYLE_ARGS)
        if not isinstance(fd, int):
            ev._fileobj = fd        # keep the file object open while it is watched
        ev.add()
        watchers[fdnum] = ev
        return handle

    cdef bint _remove_watcher(self, dict watchers, fd) except -1:
        cdef int fdnum = _fileno(fd)
        if self._closed:
            return False
        cdef Event ev = watchers.pop(fdnum, None)
        if ev is None:
            return False
        (<Handle>ev._args[0])._cancelled = True
        ev.close()
        return True

    cdef int _drop_watcher(self, Handle handle) except -1:
        # A watcher's handle was cancelled by its owner: stop watching, as asyncio's selector loop does.
        for watchers in (self._readers, self._writers):
            for fdnum, ev in list((<dict>watchers).items()):
                if (<Event>ev)._args[0] is handle:
                    del (<dict>watchers)[fdnum]
                    (<Event>ev).close()
        return 0

    def _add_reader(self, fd, callback, *args):
        # Returns the Handle, as asyncio's selector loop (3.12+) does: its owner can tell whether it
        # was replaced since.
        return self._add_watcher(self._readers, EV_READ, fd, callback, args)

    def _remove_reader(self, fd):
        return self._remove_watcher(self._readers, fd)

    def _add_writer(self, fd, callback, *args):
        return self._add_watcher(self._writers, EV_WRITE, fd, callback, args)

    def _remove_writer(self, fd):
        return self._remove_watcher(self._writers, fd)

    cdef int _close_watchers(self) except -1:
        for watchers in (self._readers, self._writers):
            for ev in (<dict>watchers).values():
                (<Event>ev).close()
            (<dict>watchers).clear()
        return 0

    def _close_core(self):
        """Free the base and everything on it (the loop's close())."""
        self._future_kwargs = None
        self._close_watchers()
        self._base.close()
