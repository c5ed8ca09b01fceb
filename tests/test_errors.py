"""Errors: exceptions raised by callbacks, and misuse of the API. None of it may crash."""
import errno
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import traceback

import pytest

import levent
from levent import Event, EventBase, Signal, Timer


class Boom(Exception):
    pass


def _frame_names(exc):
    return [fs.name for fs in traceback.extract_tb(exc.__traceback__)]


def _still_works(base, run_loop):
    got = []
    Timer(base, got.append, "ok").add(0)
    assert run_loop(base) is True
    assert got == ["ok"]


# ---------------------------------------------------------------------------------------------------
# Exceptions from callbacks


def test_exception_propagates_with_traceback_and_others_run_next_time(base, run_loop):
    ran = []

    def raising_callback_for_test():
        ran.append("boom")
        raise Boom("from the callback")

    t1 = Timer(base, raising_callback_for_test)
    t2 = Timer(base, ran.append, "other")
    t1.active()
    t2.active()
    with pytest.raises(Boom, match="from the callback") as excinfo:
        run_loop(base)
    assert "raising_callback_for_test" in _frame_names(excinfo.value)
    assert ran == ["boom"], "an exception must stop the loop before the other due callbacks"
    # The other due callback runs on the next loop() call.
    assert run_loop(base) is True
    assert ran == ["boom", "other"]
    _still_works(base, run_loop)


def test_exception_from_timer(base, run_loop):
    def timer_callback_that_raises():
        raise Boom("timer")

    Timer(base, timer_callback_that_raises).add(0.01)
    with pytest.raises(Boom) as excinfo:
        run_loop(base)
    assert "timer_callback_that_raises" in _frame_names(excinfo.value)
    _still_works(base, run_loop)


def test_exception_from_call_later(base, run_loop):
    def later_callback_that_raises(x):
        raise Boom(x)

    base.call_later(0, later_callback_that_raises, "arg")
    with pytest.raises(Boom, match="arg") as excinfo:
        run_loop(base)
    assert "later_callback_that_raises" in _frame_names(excinfo.value)


def test_exception_from_read_event(base, socketpair, run_loop):
    a, b = socketpair

    def read_callback_that_raises(fd, what):
        assert what == levent.READ
        raise Boom("read")

    ev = Event(base, a, levent.READ | levent.PERSIST, read_callback_that_raises)
    ev.add()
    b.send(b"x")
    with pytest.raises(Boom) as excinfo:
        run_loop(base)
    assert "read_callback_that_raises" in _frame_names(excinfo.value)
    # The persistent event is still pending and raises again next time.
    assert ev.is_pending()
    with pytest.raises(Boom):
        run_loop(base)
    ev.delete()
    _still_works(base, run_loop)


def test_exception_from_signal_event(base, run_loop, restore_signals):
    def signal_callback_that_raises(signum):
        raise Boom(signum)

    s = Signal(base, signal.SIGUSR1, signal_callback_that_raises)
    s.add()
    try:
        Timer(base, os.kill, os.getpid(), signal.SIGUSR1).add(0.01)
        with pytest.raises(Boom) as excinfo:
            run_loop(base)
        assert excinfo.value.args == (signal.SIGUSR1,)
        assert "signal_callback_that_raises" in _frame_names(excinfo.value)
    finally:
        s.close()
    _still_works(base, run_loop)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_base_exceptions_propagate(base, run_loop, exc_type):
    def cb():
        raise exc_type("x")

    Timer(base, cb).add(0)
    with pytest.raises(exc_type):
        run_loop(base)
    _still_works(base, run_loop)


def test_two_exceptions_in_one_iteration_are_not_lost(base, run_loop):
    # With loopbreak after the first, the second callback runs on the next call.
    def first():
        raise Boom("first")

    def second():
        raise KeyError("second")

    Timer(base, first).active()
    Timer(base, second).active()
    with pytest.raises(Boom):
        run_loop(base)
    with pytest.raises(KeyError):
        run_loop(base)
    assert run_loop(base) is True


def test_exception_in_persistent_callback_every_time(base, run_loop):
    n = []

    def cb():
        n.append(1)
        raise Boom(len(n))

    t = Timer(base, cb, persist=True)
    t.add(0.001)
    for i in range(1, 4):
        with pytest.raises(Boom) as excinfo:
            run_loop(base)
        assert excinfo.value.args == (i,)
    t.delete()
    assert run_loop(base) is True


def test_exception_does_not_leak_into_next_loop(base, run_loop):
    Timer(base, lambda: 1 / 0).add(0)
    with pytest.raises(ZeroDivisionError):
        run_loop(base)
    # A later, clean loop does not re-raise.
    assert run_loop(base) is True
    assert run_loop(base) is True


# ---------------------------------------------------------------------------------------------------
# Misuse


def test_add_after_base_close(backend, socketpair):
    a, b = socketpair
    eb = EventBase(method=backend)
    t = Timer(eb, lambda: None)
    ev = Event(eb, a, levent.READ, lambda fd, what: None)
    eb.close()
    for e in (t, ev):
        with pytest.raises(ValueError, match="closed"):
            e.add(1)
        with pytest.raises(ValueError, match="closed"):
            e.active()
    with pytest.raises(ValueError, match="closed"):
        ev.add()
    with pytest.raises(ValueError, match="closed"):
        eb.loop()
    with pytest.raises(ValueError, match="closed"):
        eb.dispatch()


def test_add_after_event_close(base, socketpair, run_loop):
    a, b = socketpair
    ev = Event(base, a, levent.READ, lambda fd, what: None)
    ev.close()
    assert ev.closed
    with pytest.raises(ValueError, match="closed"):
        ev.add()
    with pytest.raises(ValueError, match="closed"):
        ev.add(1)
    with pytest.raises(ValueError, match="closed"):
        ev.active()
    with pytest.raises(ValueError, match="closed"):
        ev.priority = 0
    with pytest.raises(ValueError):
        ev.remove_timer()
    ev.delete()
    ev.close()
    assert ev.pending() == 0
    _still_works(base, run_loop)


def _closed_fd():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = s.fileno()
    s.close()
    # Make sure it stays unused for the duration: nothing else in this thread opens fds meanwhile.
    with pytest.raises(OSError):
        os.fstat(fd)
    return fd


@pytest.mark.parametrize("kind", [levent.READ, levent.WRITE, levent.READ | levent.PERSIST])
def test_bad_fd_is_ebadf(base, run_loop, kind):
    fd = _closed_fd()
    with pytest.raises(OSError) as excinfo:
        ev = Event(base, fd, kind, lambda fd, what: None)
        ev.add()
    assert excinfo.value.errno == errno.EBADF
    _still_works(base, run_loop)


@pytest.mark.parametrize("fd", [-1, -2, -1000])
def test_negative_fd_is_value_error(base, fd):
    for kind in (levent.READ, levent.WRITE, levent.READ | levent.WRITE, levent.CLOSED):
        with pytest.raises(ValueError):
            Event(base, fd, kind, lambda fd, what: None)


def test_negative_fd_from_fileno_is_value_error(base):
    class Neg:
        def fileno(self):
            return -3

    with pytest.raises(ValueError):
        Event(base, Neg(), levent.READ, lambda fd, what: None)


@pytest.mark.parametrize("timeout", [-1, -0.001, -1e-9, float("nan"), float("inf"), float("-inf")])
def test_bad_timeout_is_value_error(base, socketpair, timeout, run_loop):
    a, b = socketpair
    t = Timer(base, lambda: None)
    with pytest.raises(ValueError):
        t.add(timeout)
    ev = Event(base, a, levent.READ, lambda fd, what: None)
    with pytest.raises(ValueError):
        ev.add(timeout)
    with pytest.raises(ValueError):
        base.call_later(timeout, lambda: None)
    assert not t.is_pending() and not ev.is_pending()
    assert base.num_events() == 0
    _still_works(base, run_loop)


def test_bad_loopexit_delay(base):
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError):
            base.loopexit(bad)
    with pytest.raises(TypeError):
        base.loopexit("1")


@pytest.mark.parametrize("timeout", ["1", b"1", [1], object(), 1j])
def test_non_number_timeout_is_type_error(base, timeout):
    t = Timer(base, lambda: None)
    with pytest.raises(TypeError):
        t.add(timeout)
    with pytest.raises(TypeError):
        base.call_later(timeout, lambda: None)
    assert not t.is_pending()


def test_wrong_types_are_type_errors(base, socketpair):
    a, b = socketpair
    cb = lambda *args: None  # noqa: E731
    with pytest.raises(TypeError):
        Event("not a base", a, levent.READ, cb)
    with pytest.raises(TypeError):
        Event(None, a, levent.READ, cb)
    with pytest.raises(TypeError):
        Event(base, "not an fd", levent.READ, cb)
    with pytest.raises(TypeError):
        Event(base, 3.0, levent.READ, cb)
    with pytest.raises(TypeError):
        Event(base, None, levent.READ, cb)
    with pytest.raises(TypeError):
        Event(base, a, "READ", cb)
    with pytest.raises(TypeError):
        Event(base, a, None, cb)
    with pytest.raises(TypeError):
        Event(base, a, levent.READ, "not callable")
    with pytest.raises(TypeError):
        Event(base, a, levent.READ, None)
    with pytest.raises(TypeError):
        Timer(base, 42)
    with pytest.raises(TypeError):
        Timer("not a base", cb)
    with pytest.raises(TypeError):
        Signal(base, "SIGUSR1", cb)
    with pytest.raises(TypeError):
        Signal(base, signal.SIGUSR1, None)
    with pytest.raises(TypeError):
        base.call_later(0, "not callable")
    with pytest.raises(TypeError):
        EventBase(method=5)
    with pytest.raises(TypeError):
        EventBase(avoid=(1, 2))
    with pytest.raises(TypeError):
        EventBase(bogus_option=True)
    assert base.num_events() == 0
    assert list(base) == []


def test_fileno_returning_non_int_is_type_error(base):
    class Bad:
        def fileno(self):
            return "3"

    with pytest.raises(TypeError):
        Event(base, Bad(), levent.READ, lambda fd, what: None)


def test_fileno_raising_propagates(base):
    class Raising:
        def fileno(self):
            raise Boom("no fd")

    with pytest.raises(Boom):
        Event(base, Raising(), levent.READ, lambda fd, what: None)


@pytest.mark.parametrize("bits", [0x40, 0x100, 0x4000, 0x200 | levent.READ])
def test_unknown_event_bits_are_value_error(base, socketpair, bits):
    a, b = socketpair
    with pytest.raises(ValueError):
        Event(base, a, bits, lambda fd, what: None)


@pytest.mark.parametrize("what", [0x40, 0x100, 0x4000])
def test_active_with_bad_bits_is_value_error(base, socketpair, what):
    a, b = socketpair
    ev = Event(base, a, levent.READ, lambda fd, what: None)
    with pytest.raises(ValueError):
        ev.active(what)
    assert not ev.is_pending()


def test_signal_with_fd_kinds_is_value_error(base):
    with pytest.raises(ValueError):
        Event(base, signal.SIGUSR1, levent.SIGNAL | levent.READ, lambda fd, what: None)


@pytest.mark.parametrize("signum", [0, -1, 100000, signal.SIGKILL, signal.SIGSTOP])
def test_bad_signal_numbers(base, signum):
    with pytest.raises((ValueError, OSError)):
        Signal(base, signum, lambda s: None).add()


def test_reentrant_loop_is_runtime_error(base, run_loop):
    seen = []

    def cb():
        try:
            base.loop()
        except RuntimeError as exc:
            seen.append(exc)
            raise

    Timer(base, cb).add(0)
    with pytest.raises(RuntimeError):
        run_loop(base)
    assert len(seen) == 1
    _still_works(base, run_loop)


@pytest.mark.parametrize("call", ["loop", "dispatch", "loop_once", "loop_nonblock"])
def test_reentrant_loop_variants(base, run_loop, call):
    calls = {
        "loop": lambda: base.loop(),
        "dispatch": lambda: base.dispatch(),
        "loop_once": lambda: base.loop(once=True),
        "loop_nonblock": lambda: base.loop(nonblock=True),
    }
    Timer(base, calls[call]).add(0)
    with pytest.raises(RuntimeError):
        run_loop(base)
    assert not base.running
    _still_works(base, run_loop)


def test_loop_of_another_base_from_callback_is_fine(backend, run_loop):
    with EventBase(method=backend) as outer, EventBase(method=backend) as inner:
        got = []

        def cb():
            Timer(inner, got.append, "inner").add(0)
            got.append(run_loop(inner))

        Timer(outer, cb).add(0)
        assert run_loop(outer) is True
        assert got == ["inner", True]


def test_timer_without_timeout_is_value_error(base):
    t = Timer(base, lambda: None)
    with pytest.raises(ValueError):
        t.add()
    with pytest.raises(ValueError):
        t.add(None)
    assert not t.is_pending()


def test_events_from_one_base_cannot_be_used_with_closed_other(backend):
    eb1 = EventBase(method=backend)
    eb2 = EventBase(method=backend)
    t = Timer(eb1, lambda: None)
    eb2.close()
    t.add(0)  # unaffected by the other base
    assert t.is_pending()
    eb1.close()
    assert t.closed


def test_bad_ncalls(base):
    t = Timer(base, lambda: None)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        t.active(ncalls="3")
    assert math.isfinite(base.monotonic())


def test_select_backend_refuses_fds_beyond_fd_setsize(child_env):
    """libevent's select backend aborts the process (glibc's fortified FD_SET) on an fd >= 1024:
    levent refuses such fds with ValueError, and refuses to create a select base when libevent's own
    fds would land there. In a child, so that a regression cannot kill the test run."""
    if "select" not in levent.supported_methods():
        pytest.skip("no select backend here")
    script = textwrap.dedent("""
        import os, resource, socket, levent
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1100:
            print("skip: RLIMIT_NOFILE hard limit", hard)
            raise SystemExit(0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
        a, b = socket.socketpair()
        high = os.dup2(a.fileno(), 1050)
        base = levent.EventBase(method="select")
        ev = levent.Event(base, high, levent.READ, lambda fd, what: None)
        try:
            ev.add()
        except ValueError as exc:
            assert "select" in str(exc), exc
        else:
            raise AssertionError("add() of fd 1050 on a select base did not raise")
        base.close()
        # Use up every fd below 1024: a select base cannot be made, an epoll one can.
        while os.open("/dev/null", os.O_RDONLY) < 1030:
            pass
        try:
            levent.EventBase(method="select")
        except ValueError as exc:
            assert "select" in str(exc), exc
        else:
            raise AssertionError("a select base was made with no fds left below 1024")
        if "epoll" in levent.supported_methods():
            levent.EventBase(method="epoll").close()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=child_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{proc.stderr}"
    if proc.stdout.startswith("skip:"):
        pytest.skip(proc.stdout.strip())
    assert proc.stdout.strip() == "ok"
