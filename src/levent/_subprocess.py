"""The pipe and subprocess half of levent's asyncio loop: the hooks asyncio's ``BaseEventLoop`` leaves
to its subclasses for ``connect_read_pipe``, ``connect_write_pipe``, ``subprocess_exec`` and
``subprocess_shell`` (so ``asyncio.create_subprocess_exec`` and friends run on levent).

Children are started by ``subprocess.Popen`` (no Python code runs in the child unless the caller
passes ``preexec_fn``; fds not passed are closed) and reaped by the loop itself, never through
asyncio's child watchers (deprecated, process-global): each child has a pidfd (Linux 5.3+) watched by
a levent Event on the loop's EventBase, and once it is readable the loop ``waitpid()``s that one pid,
without blocking. Where ``os.pidfd_open`` is missing or
refused, a thread per child blocks in ``waitpid()`` for that pid and hands the status to the loop, as
asyncio's ThreadedChildWatcher does. Neither ever waits for another pid, so other code's ``waitpid``
and SIGCHLD handlers keep working.
"""
import os
import signal
import subprocess
import threading
import weakref
from asyncio import base_subprocess
from asyncio.log import logger

from levent._core import READ, Event
from levent._pipes import ReadPipeTransport, WritePipeTransport

# Looked up at each start, so that tests can take the thread path on a kernel with pidfds.
_HAS_PIDFD = hasattr(os, 'pidfd_open')
_HAS_PIDFD_SEND_SIGNAL = hasattr(signal, 'pidfd_send_signal')


class SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    """A child process of levent's asyncio loop, with pipes for its standard streams: asyncio's own
    ``BaseSubprocessTransport`` (as its Unix loop's) whose child is reaped by the loop; made by
    ``loop.subprocess_exec()`` / ``subprocess_shell()``, not instantiated directly."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize, **kwargs)
        self._reaper = _ChildReaper(self._loop, self)

    # As asyncio 3.13 on every version: os.kill() rather than Popen.send_signal(), whose poll() would
    # reap the child behind the loop's back (3.9-3.12). Once the loop reaped it, its pid may be
    # another process's: nothing is sent then.
    def send_signal(self, signal):
        """Send signal number ``signal`` to the child (nothing once it has been reaped)."""
        self._check_proc()
        if self._proc.returncode is not None:
            return
        try:
            self._reaper.send_signal(signal)
        except ProcessLookupError:
            pass

    def terminate(self):
        """Send SIGTERM to the child."""
        self.send_signal(signal.SIGTERM)

    def kill(self):
        """Send SIGKILL to the child."""
        self.send_signal(signal.SIGKILL)


class _ChildReaper:
    """Waits for one child of a loop and reports its exit status to its transport
    (``_process_exited``), from the loop: through a pidfd on the loop's EventBase, or else a thread.
    It holds the Popen weakly: the transport holds it (and its pipes)."""

    __slots__ = ('_loop', '_transport', '_pid', '_proc_ref', '_pidfd', '_event', '__weakref__')

    def __init__(self, loop, transport):
        self._loop = loop
        self._transport = transport
        self._pid = transport._proc.pid
        self._proc_ref = weakref.ref(transport._proc)
        self._pidfd = -1
        self._event = None
        if _HAS_PIDFD:
            try:
                self._pidfd = os.pidfd_open(self._pid)
            except OSError:
                pass    # ENOSYS (kernel < 5.3), EPERM (seccomp), EMFILE...: a thread waits instead
        if self._pidfd >= 0:
            try:
                self._event = Event(loop.base, self._pidfd, READ, self._on_exit)
                self._event.add()
            except BaseException:
                self._close_pidfd()
                raise
        else:
            self._start_thread(self)
        loop._child_reapers.add(self)

    def send_signal(self, sig):
        if self._pidfd >= 0 and _HAS_PIDFD_SEND_SIGNAL:
            # The pidfd names this child even if its pid were reused.
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self._pid, sig)

    def _on_exit(self, fd, what):
        # The pidfd is readable: the child has exited and waits to be reaped (only by us: a pidfd
        # turns readable once the child is a zombie).
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = None, None
        self._close_pidfd()
        self._report(None if pid is None else os.waitstatus_to_exitcode(status))

    def _report(self, returncode):
        # In the loop's thread. None: someone else reaped the child.
        self._loop._child_reapers.discard(self)
        proc = self._proc_ref()
        if returncode is None:
            if proc is not None and proc.returncode is not None:
                returncode = proc.returncode    # Popen.poll() got it first (transport.close())
            else:
                logger.warning("Unknown child process pid %d, will report returncode 255", self._pid)
                returncode = 255
        elif proc is not None and proc.returncode is None:
            proc.returncode = returncode    # Popen must not waitpid() this pid again
        self._loop.call_soon(self._transport._process_exited, returncode)

    def _start_thread(self, reaper):
        thread = threading.Thread(target=_wait_in_thread, args=(self._pid, self._proc_ref, reaper),
                                  daemon=True, name=f"levent-waitpid-{self._pid}")
        thread.start()

    def _detach(self):
        # The loop closes with the child still running. A thread reaps it once it ends, so that it
        # does not stay a zombie; that thread must hold neither the transport nor the Popen (whose
        # pipes the child may be waiting on), so that dropping them still closes those pipes.
        if self._pidfd >= 0:
            self._close_pidfd()
            self._start_thread(None)
        else:
            self._transport = None  # the thread's report fails on the closed loop and is dropped

    def _close_pidfd(self):
        if self._event is not None:
            self._event.delete()
            self._event = None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def _wait_in_thread(pid, proc_ref, reaper):
    # A thread per child where there is no pidfd (as asyncio's ThreadedChildWatcher), or once its loop
    # closed (reaper None). Only this pid is waited for.
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        returncode = None
    else:
        returncode = os.waitstatus_to_exitcode(status)
        proc = proc_ref()
        if proc is not None and proc.returncode is None:
            proc.returncode = returncode    # Popen must not waitpid() this pid again
    if reaper is not None:
        try:
            reaper._loop.call_soon_threadsafe(reaper._report, returncode)
        except RuntimeError:
            pass    # the loop is closed: nobody waits for the status any more


class PipesMixin:
    """Pipe and subprocess methods of :class:`levent.loop.EventLoop`; not used on its own."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        # asyncio's Unix loop, without its child watcher: the transport reaps its own child.
        waiter = self.create_future()
        transport = SubprocessTransport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                        waiter=waiter, extra=extra, **kwargs)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _close_child_reapers(self):
        for reaper in list(self._child_reapers):
            reaper._detach()
        self._child_reapers.clear()
