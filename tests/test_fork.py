"""fork(): the child calls base.reinit() and its events keep working; so do the parent's.

The child never returns into pytest: it reports through its exit status (os._exit)."""
import os
import signal
import sys
import threading
import time
import traceback

import pytest

import levent
from levent import Event, EventBase, Signal, Timer

from conftest import hang_guard_paused

if not hasattr(os, "fork"):
    pytest.skip("os.fork() is not available here", allow_module_level=True)

# Exit statuses of the child.
OK, WRONG, TIMEOUT, EXCEPTION = 0, 2, 3, 4


def _wait_child(pid, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the child did not finish within {timeout} s")


def _run_child(body):
    """Fork; the child runs body() -> bool and exits with OK/WRONG/EXCEPTION. Returns the status."""
    sys.stdout.flush()
    sys.stderr.flush()
    assert threading.active_count() == 1, f"threads would be forked mid-run: {threading.enumerate()}"
    with hang_guard_paused():
        pid = os.fork()
    if pid == 0:  # child
        code = EXCEPTION
        try:
            code = OK if body() else WRONG
        except BaseException:
            try:
                traceback.print_exc()
                sys.stderr.flush()
            except BaseException:
                pass
            code = EXCEPTION
        finally:
            os._exit(code)
    return _wait_child(pid)


def _describe(status):
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    return {OK: "ok", WRONG: "events misbehaved", TIMEOUT: "the loop timed out",
            EXCEPTION: "raised an exception (traceback on stderr)"}.get(code, f"exit status {code}")


def test_fork_reinit_child_and_parent_keep_working(backend, socketpair, run_loop):
    a, b = socketpair
    with EventBase(method=backend) as base:
        # Run the loop once before forking, so everything the loop sets up exists already.
        Timer(base, lambda: None).add(0)
        run_loop(base)

        got = []
        done = []

        def on_read(fd, what):
            got.append(("read", a.recv(100)))
            check_done()

        def on_timer():
            got.append(("timer",))
            check_done()

        def check_done():
            if len(got) == 2:
                for g in done:
                    g.delete()

        rd = Event(base, a, levent.READ, on_read)
        rd.add()
        tm = Timer(base, on_timer)

        def child():
            base.reinit()
            guard = Timer(base, os._exit, TIMEOUT)
            guard.add(5)
            done.append(guard)
            tm.add(0.02)
            b.send(b"child")
            base.loop()
            return sorted(got) == [("read", b"child"), ("timer",)]

        status = _run_child(child)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == OK, _describe(status)

        # The parent's base is untouched: its pending READ event and a timer still work.
        assert got == []
        assert rd.is_pending()
        tm.add(0.02)
        b.send(b"parent")
        assert run_loop(base) is True
        assert sorted(got) == [("read", b"parent"), ("timer",)]


def test_fork_reinit_persistent_events(backend, make_socketpair, run_loop):
    pairs = [make_socketpair() for _ in range(3)]
    with EventBase(method=backend) as base:
        got = []
        evs = []
        for i, (a, b) in enumerate(pairs):
            def cb(fd, what, i=i, a=a):
                got.append((i, a.recv(100)))
                if len(got) == len(pairs):
                    for e in evs:
                        e.delete()
            ev = Event(base, a, levent.READ | levent.PERSIST, cb)
            ev.add()
            evs.append(ev)

        def child():
            base.reinit()
            guard = Timer(base, os._exit, TIMEOUT)
            guard.add(5)
            evs.append(guard)
            for i, (a, b) in enumerate(pairs):
                b.send(b"c%d" % i)
            base.loop()
            return sorted(got) == [(i, b"c%d" % i) for i in range(len(pairs))]

        status = _run_child(child)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == OK, _describe(status)
        for i, (a, b) in enumerate(pairs):
            b.send(b"p%d" % i)
        assert run_loop(base) is True
        assert sorted(got) == [(i, b"p%d" % i) for i in range(len(pairs))]


def test_fork_reinit_signal_event(backend, restore_signals, run_loop):
    with EventBase(method=backend) as base:
        got = []
        sig = Signal(base, signal.SIGUSR1, lambda signum: (got.append(signum), sig.delete()))
        sig.add()

        def child():
            base.reinit()
            guard = Timer(base, os._exit, TIMEOUT)
            guard.add(5)
            sig2 = Signal(base, signal.SIGUSR2, lambda signum: (got.append(signum), sig2.delete(),
                                                                guard.delete()))
            sig2.add()
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
            base.loop()
            return sorted(got) == sorted([signal.SIGUSR1, signal.SIGUSR2])

        status = _run_child(child)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == OK, _describe(status)
        # The parent's Signal still works, and got nothing from the child's signals.
        assert got == []
        Timer(base, os.kill, os.getpid(), signal.SIGUSR1).add(0.01)
        assert run_loop(base) is True
        assert got == [signal.SIGUSR1]


def test_reinit_without_fork_is_harmless(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append(a.recv(10)))
    ev.add()
    base.reinit()
    b.send(b"x")
    assert run_loop(base) is True
    assert got == [b"x"]
