"""Signals: Signal events, Python signal handlers and Ctrl-C while the loop waits."""
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import levent
from levent import Event, EventBase, Signal, Timer

from conftest import sigint_default

pytestmark = pytest.mark.usefixtures("restore_signals")

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


class Boom(Exception):
    pass


def test_several_signals(base, run_loop):
    got = []
    sigs = []

    def cb(signum, tag):
        got.append((signum, tag))
        if {s for s, _ in got} == set(SIGNALS):
            for s in sigs:
                s.delete()

    for signum in SIGNALS:
        s = Signal(base, signum, cb, f"tag{int(signum)}")
        assert s.signum == signum
        assert s.fileno() == signum
        s.add()
        sigs.append(s)

    def send():
        for signum in SIGNALS:
            os.kill(os.getpid(), signum)

    Timer(base, send).add(0.01)
    assert run_loop(base) is True
    assert {s for s, _ in got} == set(SIGNALS)
    assert all(tag == f"tag{int(s)}" for s, tag in got)
    for s in sigs:
        assert not s.is_pending()


def test_signal_sent_before_loop_is_delivered(base, run_loop):
    got = []
    s = Signal(base, signal.SIGUSR2, lambda signum: (got.append(signum), s.delete()))
    s.add()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert run_loop(base) is True
    assert got == [signal.SIGUSR2]


def test_signal_repeats_while_persistent(base, run_loop):
    got = []

    def cb(signum):
        got.append(signum)
        if len(got) < 3:
            Timer(base, os.kill, os.getpid(), signal.SIGUSR1).add(0.005)
        else:
            s.delete()

    s = Signal(base, signal.SIGUSR1, cb)
    s.add()
    Timer(base, os.kill, os.getpid(), signal.SIGUSR1).add(0.005)
    assert run_loop(base) is True
    assert got == [signal.SIGUSR1] * 3


def test_non_persistent_signal(base, run_loop, wait_until):
    got = []
    s = Signal(base, signal.SIGUSR1, got.append, persist=False)
    assert not s.events & levent.PERSIST
    s.add()
    Timer(base, os.kill, os.getpid(), signal.SIGUSR1).add(0.005)
    assert run_loop(base) is True
    assert got == [signal.SIGUSR1]
    assert not s.is_pending()


def test_signal_event_via_event_class(base, run_loop):
    got = []
    ev = Event(base, signal.SIGUSR2, levent.SIGNAL, lambda signum, what: (got.append((signum, what)),
                                                                           ev.delete()))
    ev.add()
    Timer(base, os.kill, os.getpid(), signal.SIGUSR2).add(0.005)
    assert run_loop(base) is True
    assert got == [(signal.SIGUSR2, levent.SIGNAL)]


def test_active_by_signal(base, run_loop):
    got = []
    s = Signal(base, signal.SIGUSR2, lambda signum: (got.append(signum), s.delete()))
    s.add()
    base.active_by_signal(signal.SIGUSR2)
    assert run_loop(base) is True
    assert got == [signal.SIGUSR2]


def test_active_by_fd(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ | levent.PERSIST, lambda fd, what: (got.append((fd, what)),
                                                                         ev.delete()))
    ev.add()
    base.active_by_fd(a, levent.READ)
    assert run_loop(base) is True
    assert got == [(a.fileno(), levent.READ)]


def test_signal_active_ncalls(base, run_loop):
    got = []
    s = Signal(base, signal.SIGUSR1, got.append)
    s.active(ncalls=3)
    run_loop(base)
    assert got == [signal.SIGUSR1] * 3


@pytest.mark.parametrize("how", ["delete", "close", "base_close"])
def test_previous_python_handler_restored(backend, how, run_loop, wait_until):
    python_calls = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: python_calls.append(signum))
    eb = EventBase(method=backend)
    try:
        got = []
        s = Signal(eb, signal.SIGUSR1, lambda signum: (got.append(signum), eb.loopbreak()))
        s.add()
        keep = Timer(eb, lambda: None)
        keep.add(10)
        Timer(eb, os.kill, os.getpid(), signal.SIGUSR1).add(0.005)
        run_loop(eb)
        # While the Signal is pending, libevent's handler replaces Python's.
        assert got == [signal.SIGUSR1]
        time.sleep(0.01)
        assert python_calls == []
        if how == "delete":
            s.delete()
        elif how == "close":
            s.close()
        else:
            eb.close()
    finally:
        eb.close()
    assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
    os.kill(os.getpid(), signal.SIGUSR1)
    assert wait_until(lambda: python_calls, 2.0), "the previous Python handler was not restored"
    assert python_calls == [signal.SIGUSR1]


RESTORE_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import levent
    base = levent.EventBase(method=sys.argv[1])
    if sys.argv[2] == "ign":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signum = signal.SIGHUP
    else:
        signum = signal.SIGINT
    got = []
    def on_signal(n):
        got.append(n)
        s.delete()
        guard.delete()
    s = levent.Signal(base, signum, on_signal)
    s.add()
    guard = levent.Timer(base, lambda: sys.exit("signal never delivered"))
    guard.add(5)
    levent.Timer(base, os.kill, os.getpid(), signum).add(0.005)
    assert base.loop() is True
    assert got == [signum], got
    try:
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    else:
        print("survived", flush=True)
""")


@pytest.mark.parametrize("previous", ["default_int_handler", "ign"])
def test_previous_disposition_restored(backend, child_env, previous):
    # In a child: if the old disposition were not restored, SIGINT/SIGHUP would kill the process.
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", RESTORE_CHILD, backend,
                           previous], env=child_env, capture_output=True, text=True, timeout=60,
                          preexec_fn=sigint_default)
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{proc.stderr}"
    expected = "KeyboardInterrupt" if previous == "default_int_handler" else "survived"
    assert proc.stdout.strip() == expected, (proc.stdout, proc.stderr)


def test_signals_on_second_base_is_runtime_error(backend, run_loop):
    with EventBase(method=backend) as b1, EventBase(method=backend) as b2:
        s1 = Signal(b1, signal.SIGUSR1, lambda signum: None)
        s1.add()
        s2 = Signal(b2, signal.SIGUSR2, lambda signum: None)
        try:
            with pytest.raises(RuntimeError):
                s2.add()
            assert not s2.is_pending()
        finally:
            s2.delete()
            s1.delete()
        # Once the first base has no Signal left, the second may have some.
        got = []
        s3 = Signal(b2, signal.SIGUSR2, lambda signum: (got.append(signum), s3.delete()))
        s3.add()
        Timer(b2, os.kill, os.getpid(), signal.SIGUSR2).add(0.005)
        assert run_loop(b2) is True
        assert got == [signal.SIGUSR2]


# ---------------------------------------------------------------------------------------------------
# Python signal handlers and Ctrl-C while the loop waits


def _idle_read_event(base, sock):
    ev = Event(base, sock, levent.READ, lambda fd, what: None)
    ev.add()
    return ev


@pytest.mark.parametrize("sender", ["thread", "subprocess"])
def test_python_handler_runs_while_loop_waits(base, socketpair, sender, run_loop):
    a, b = socketpair
    ev = _idle_read_event(base, a)
    handled = []

    def handler(signum, frame):
        handled.append((signum, time.monotonic(), threading.current_thread() is threading.main_thread()))
        base.loopbreak()

    signal.signal(signal.SIGUSR1, handler)
    proc = None
    sent = []
    if sender == "thread":
        def send():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGUSR1)

        th = threading.Timer(0.2, send)
        th.start()
    else:
        proc = subprocess.Popen([sys.executable, "-c",
                                 "import os, sys, time; time.sleep(0.2); "
                                 "os.kill(int(sys.argv[1]), int(sys.argv[2]))",
                                 str(os.getpid()), str(int(signal.SIGUSR1))])
    t0 = time.monotonic()
    try:
        result = run_loop(base, timeout=10)
    finally:
        if proc is not None:
            proc.wait(10)
        else:
            th.join(5)
    returned = time.monotonic()
    assert result is False
    assert base.got_break
    assert len(handled) == 1
    assert handled[0][0] == signal.SIGUSR1
    assert handled[0][2], "Python signal handlers run in the main thread"
    if sent:
        assert handled[0][1] - sent[0] < 1.0, "the handler ran late"
        assert returned - sent[0] < 1.0
    else:
        assert returned - t0 < 8.0
    ev.delete()


def test_python_handler_exception_comes_out_of_loop(base, socketpair, run_loop):
    a, b = socketpair
    ev = _idle_read_event(base, a)

    def raising_signal_handler(signum, frame):
        raise Boom("from the handler")

    signal.signal(signal.SIGUSR2, raising_signal_handler)
    th = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2))
    th.start()
    try:
        with pytest.raises(Boom, match="from the handler"):
            run_loop(base, timeout=10)
    finally:
        th.join(5)
    assert ev.is_pending()
    ev.delete()


def test_python_handler_runs_during_timer_wait(base, run_loop):
    # The loop waits on a 0.5 s timer; the handler's loopbreak() ends it early.
    handled = []
    signal.signal(signal.SIGUSR1, lambda s, f: (handled.append(s), base.loopbreak()))
    t = Timer(base, lambda: None)
    t.add(5)
    th = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    t0 = time.monotonic()
    th.start()
    try:
        run_loop(base)
    finally:
        th.join(5)
    assert handled == [signal.SIGUSR1]
    assert time.monotonic() - t0 < 3.0
    t.delete()


CTRL_C_CHILD = textwrap.dedent("""
    import socket, sys
    import levent
    base = levent.EventBase(method=sys.argv[1])
    a, b = socket.socketpair()
    ev = levent.Event(base, a, levent.READ, lambda fd, what: None)
    ev.add()
    print("ready", flush=True)
    base.loop()
    print("loop returned", flush=True)
""")


def _read_line(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    return proc.stdout.readline()


@pytest.mark.parametrize("child_backend", [m for m in ("epoll", "poll", "select")])
def test_ctrl_c_interrupts_waiting_loop(child_backend, child_env):
    if child_backend not in levent.supported_methods():
        pytest.skip(f"{child_backend} is not supported by this libevent")
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, child_backend], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        line = _read_line(proc, 30)
        assert line == "ready\n", f"child did not start: {line!r}"
        time.sleep(0.3)  # let it reach the wait in loop()
        assert proc.poll() is None, "the child's loop returned on its own"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGINT did not interrupt loop() within 2 s")
        elapsed = time.monotonic() - t0
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err, err
    assert "loop" in err, err  # raised from base.loop()
    assert "loop returned" not in out
    assert elapsed < 1.0, f"SIGINT took {elapsed:.3f} s to end the loop"
