"""levent's asyncio event loop: ``levent.run(main())``, or ``levent.new_event_loop()``.

:class:`EventLoop` is asyncio's ``BaseEventLoop`` (so create_connection, create_server, the Server
object, executors, getaddrinfo, task and async-generator handling are asyncio's own code for the
running Python version) over levent's native core: callbacks and timers sit on the EventBase's C
queues, fd watchers and transports are libevent events, and the loop waits in libevent with the GIL
released. ``loop.base`` is that EventBase: raw levent objects (Event, BufferEvent, Listener) run on the
same loop as asyncio code.
"""
import asyncio
import contextvars
import errno
import signal
import sys
import threading
import warnings
import weakref
from asyncio import base_events, coroutines, events
from asyncio.log import logger

from levent._loop import Handle, LoopCore, TimerHandle
from levent._sockets import SocketsMixin
from levent._subprocess import PipesMixin

__all__ = ["EventLoop", "EventLoopPolicy", "Handle", "TimerHandle", "install", "new_event_loop", "run"]


class EventLoop(LoopCore, SocketsMixin, PipesMixin, base_events.BaseEventLoop):
    """An asyncio event loop on libevent. Use it wherever asyncio takes a loop: ``levent.run(main())``,
    ``asyncio.run(main(), loop_factory=levent.new_event_loop)`` (3.12+), or
    ``asyncio.set_event_loop_policy(levent.EventLoopPolicy())``."""

    def __init__(self):
        super().__init__()
        self._signal_handlers = {}
        # fd -> the transport using it: add_reader() and friends must not take a transport's fd.
        self._transports = weakref.WeakValueDictionary()
        # UNIX server socket -> inode of its path, removed by _stop_serving (3.13's cleanup_socket).
        self._unix_server_sockets = {}
        # Children not reaped yet (levent._subprocess): on close(), threads reap them.
        self._child_reapers = set()

    def __repr__(self):
        return (f'<{type(self).__name__} running={self.is_running()} closed={self.is_closed()} '
                f'debug={self.get_debug()} base={self.base!r}>')

    # -- running ------------------------------------------------------------------------------------

    def _run_once(self):
        # asyncio's run_forever() calls this until stop() was called: here one call runs libevent's
        # loop until stop() asks it to exit (loopexit: after the current iteration), so the version's
        # own run_forever() does the setup and cleanup around it.
        try:
            if self._stopping:
                self._run_one_iteration()
            else:
                self.base.loop(no_exit_on_empty=True)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # Raised by a raw levent callback (Event, BufferEvent...) on loop.base: asyncio code
            # expects the loop to go on and the handler to hear of it.
            self.call_exception_handler({
                'message': 'Unhandled exception in a levent callback',
                'exception': exc,
            })

    if hasattr(base_events.BaseEventLoop, '_run_forever_setup'):
        def run_forever(self):
            """Run until stop() is called."""
            # As asyncio's (3.12+), with the setup outside the try: 3.13.0 runs the cleanup even when
            # the setup refused a nested run, which left the running loop looking stopped.
            self._run_forever_setup()
            try:
                while True:
                    self._run_once()
                    if self._stopping:
                        break
            finally:
                self._run_forever_cleanup()

    def stop(self):
        """Stop the loop once the callbacks of the current iteration have run."""
        self._stopping = True
        if self.base.running:
            # Not _thread_id: 3.13's run_forever() clears it when it refuses a nested run, while the
            # outer run goes on.
            self.base.loopexit()

    def close(self):
        """Close the loop: cancel what is scheduled, stop watching fds, free the EventBase. The loop
        must not be running; closing twice does nothing."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(f"Closing the loop {self!r} on interpreter shutdown stage, skipping signal "
                          "handlers removal", ResourceWarning, source=self)
            self._signal_handlers.clear()
        self._close_child_reapers()
        super().close()
        self._close_core()

    # -- I/O watchers -------------------------------------------------------------------------------

    def add_reader(self, fd, callback, *args):
        """Call ``callback(*args)`` whenever ``fd`` is readable (replacing an earlier reader)."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd):
        """Stop watching ``fd`` for reading; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def add_writer(self, fd, callback, *args):
        """Call ``callback(*args)`` whenever ``fd`` is writable (replacing an earlier writer)."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd):
        """Stop watching ``fd`` for writing; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    def _ensure_fd_no_transport(self, fd):
        # As asyncio's selector loop: an fd a transport reads or writes is not the user's to watch.
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f'File descriptor {fd!r} is used by transport {transport!r}')

    # -- signals ------------------------------------------------------------------------------------

    def add_signal_handler(self, sig, callback, *args):
        """Call ``callback(*args)`` from the loop when signal ``sig`` arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")
        # The Python-level handler runs in the main thread as soon as the loop wakes: while it waits,
        # Python's signal wakeup fd points at the EventBase.
        self._signal_handlers[sig] = (callback, args, contextvars.copy_context())
        try:
            signal.signal(sig, self._handle_signal)
            signal.siginterrupt(sig, False)     # SA_RESTART: fewer EINTRs elsewhere
        except OSError as exc:
            del self._signal_handlers[sig]
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig} cannot be caught')
            raise

    def _handle_signal(self, sig, frame):
        entry = self._signal_handlers.get(sig)
        if entry is None or self._closed:
            return
        callback, args, context = entry
        self.call_soon(callback, *args, context=context)

    def remove_signal_handler(self, sig):
        """Remove the handler of ``sig``; True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f'sig {sig} cannot be caught')
            raise
        return True

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f'sig must be an int, not {sig!r}')
        if sig not in signal.valid_signals():
            raise ValueError(f'invalid signal number {sig}')

    # -- debug --------------------------------------------------------------------------------------

    def _check_thread(self):
        # As asyncio's, for debug mode: call_soon from another thread than the loop's.
        if self._thread_id is None:
            return
        if threading.get_ident() != self._thread_id:
            raise RuntimeError("Non-thread-safe operation invoked on an event loop other than the "
                               "current one")


def new_event_loop():
    """A new :class:`EventLoop`."""
    return EventLoop()


class EventLoopPolicy(events.BaseDefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are levent's: ``asyncio.set_event_loop_policy(
    levent.EventLoopPolicy())``, for code that still uses policies."""

    def _loop_factory(self):
        return new_event_loop()


def install():
    """Make levent's loop asyncio's default: sets :class:`EventLoopPolicy` as the policy."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run coroutine ``main`` on a new levent loop and return its result: ``asyncio.run`` semantics
    (the loop is closed at the end, left-over tasks are cancelled, async generators and the default
    executor are shut down)."""
    if events._get_running_loop() is not None:
        # Before a Runner exists: its cleanup would hide this error under another.
        raise RuntimeError("levent.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_before_311(main, debug)


def _run_before_311(main, debug):
    # asyncio.run() of 3.9/3.10, with a levent loop.
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop):
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                'message': 'unhandled exception during asyncio.run() shutdown',
                'exception': task.exception(),
                'task': task,
            })
