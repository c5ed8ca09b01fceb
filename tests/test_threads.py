"""Threads: waking a waiting loop from another thread, the GIL while waiting, cross-thread delete.

The loops here are bounded by a guard Timer (an event inside the loop that raises), not only by the
conftest watchdog thread, because these tests are about cross-thread wakeups themselves."""
import socket
import threading
import time

import pytest

import levent
from levent import Event, EventBase, Timer


def _idle(base, sock):
    ev = Event(base, sock, levent.READ, lambda fd, what: None)
    ev.add()
    return ev


def test_loopbreak_from_another_thread_wakes_idle_loop(base, socketpair, add_guard, run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    sent = []

    def breaker():
        sent.append(time.monotonic())
        base.loopbreak()

    th = threading.Timer(0.2, breaker)
    th.start()
    try:
        result = run_loop(base, timeout=15)
    finally:
        th.join(5)
    returned = time.monotonic()
    assert result is False
    assert base.got_break
    assert sent, "the breaker thread never ran"
    assert returned - sent[0] < 1.0, f"loopbreak() from a thread took {returned - sent[0]:.3f} s"
    guard.delete()
    idle.delete()


def test_loopexit_from_another_thread(base, socketpair, add_guard, run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    sent = []
    th = threading.Timer(0.1, lambda: (sent.append(time.monotonic()), base.loopexit()))
    th.start()
    try:
        assert run_loop(base, timeout=15) is False
    finally:
        th.join(5)
    assert base.got_exit
    assert time.monotonic() - sent[0] < 1.0
    guard.delete()
    idle.delete()


def test_active_from_another_thread_runs_callback_in_loop_thread(base, socketpair, add_guard,
                                                                  run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    ran = []

    def cb():
        ran.append((threading.get_ident(), time.monotonic()))
        idle.delete()
        guard.delete()

    ev = Timer(base, cb)
    sent = []

    def activate():
        sent.append(time.monotonic())
        ev.active()

    th = threading.Timer(0.2, activate)
    th.start()
    try:
        assert run_loop(base, timeout=15) is True
    finally:
        th.join(5)
    assert len(ran) == 1
    assert ran[0][0] == threading.get_ident(), "the callback must run in the loop's thread"
    assert ran[0][1] - sent[0] < 1.0, f"active() from a thread took {ran[0][1] - sent[0]:.3f} s"


def test_add_from_another_thread_wakes_loop(base, socketpair, add_guard, run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    ran = []

    def cb():
        ran.append(time.monotonic())
        idle.delete()
        guard.delete()

    t = Timer(base, cb)
    sent = []
    th = threading.Timer(0.2, lambda: (sent.append(time.monotonic()), t.add(0)))
    th.start()
    try:
        assert run_loop(base, timeout=15) is True
    finally:
        th.join(5)
    assert ran and ran[0] - sent[0] < 1.0


def test_gil_released_while_waiting(base):
    stop = threading.Event()
    count = [0]

    def counter():
        n = 0
        while not stop.is_set():
            n += 1
            if n % 1000 == 0:
                count[0] = n
        count[0] = n

    th = threading.Thread(target=counter, daemon=True)
    th.start()
    try:
        # The counter's rate with the main thread asleep (GIL released) for 0.1 s.
        c0 = count[0]
        time.sleep(0.1)
        rate = count[0] - c0
        assert rate > 0
        seen = {}

        def cb():
            seen["count"] = count[0]

        t = Timer(base, cb)
        t.add(0.3)
        watchdog = threading.Timer(10, base.loopbreak)
        watchdog.start()
        start = count[0]
        try:
            base.loop()
        finally:
            watchdog.cancel()
        progress = seen["count"] - start
    finally:
        stop.set()
        th.join(5)
    # 0.3 s of waiting with the GIL released lets the counter do about 3x its 0.1 s rate; with the
    # GIL held it would barely move. Require a third of that.
    assert progress >= rate, f"counter advanced {progress} during the wait vs {rate} per 0.1 s asleep"


def test_delete_from_another_thread_while_loop_runs(base, add_guard, run_loop):
    ticks = []
    t = Timer(base, lambda: ticks.append(threading.get_ident()), persist=True)
    t.add(0.001)
    deleted = []

    def deleter():
        t.delete()
        deleted.append(len(ticks))

    th = threading.Timer(0.1, deleter)
    th.start()
    try:
        assert run_loop(base, timeout=10) is True
    finally:
        th.join(5)
    assert deleted
    assert not t.is_pending()
    # No callback after delete() returned (at most the one running at that moment).
    assert len(ticks) <= deleted[0] + 1
    assert set(ticks) == {threading.get_ident()}


def test_delete_and_readd_stress_from_another_thread(base, socketpair, run_loop):
    # A persistent READ on an always-readable fd fires on every iteration while another thread
    # deletes and re-adds it for 0.5 s. Then the thread deletes it for good and the loop ends.
    a, b = socketpair
    b.send(b"x")  # never read: always readable
    ran_in = set()
    calls = [0]

    def cb(fd, what):
        calls[0] += 1
        ran_in.add(threading.get_ident())

    ev = Event(base, a, levent.READ | levent.PERSIST, cb)
    ev.add()
    errors = []

    def churn():
        try:
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                ev.delete()
                ev.add()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            # The timer first: libevent does not wake the loop for a deleted timeout, but it does
            # when the last I/O event goes.
            keep.delete()
            ev.delete()

    keep = Timer(base, lambda: None)
    keep.add(10)  # keeps the loop running while ev is briefly deleted; the thread deletes it
    th = threading.Thread(target=churn)
    th.start()
    try:
        result = run_loop(base, timeout=10)
    finally:
        th.join(10)
    assert not errors, errors
    assert result is True
    assert calls[0] > 0
    assert ran_in == {threading.get_ident()}
    assert not ev.is_pending()


def test_close_from_another_thread_while_loop_runs(base, run_loop):
    ticks = []
    t = Timer(base, lambda: ticks.append(1), persist=True)
    t.add(0.001)
    th = threading.Timer(0.1, t.close)
    th.start()
    try:
        assert run_loop(base, timeout=10) is True
    finally:
        th.join(5)
    assert t.closed
    assert ticks


def test_loop_from_another_thread_while_running_is_runtime_error(base, socketpair, add_guard,
                                                                 run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    results = []

    def other():
        try:
            base.loop()
        except RuntimeError as exc:
            results.append(exc)
        except BaseException as exc:
            results.append(exc)
        finally:
            base.loopbreak()

    th = threading.Timer(0.1, other)
    th.start()
    try:
        run_loop(base, timeout=15)
    finally:
        th.join(5)
    assert len(results) == 1 and isinstance(results[0], RuntimeError), results
    assert base.running is False
    guard.delete()
    idle.delete()


def test_running_seen_from_another_thread(base, socketpair, add_guard, run_loop):
    a, b = socketpair
    idle = _idle(base, a)
    guard = add_guard(base, 10)
    seen = []

    def look():
        seen.append(base.running)
        base.loopbreak()

    th = threading.Timer(0.1, look)
    th.start()
    try:
        run_loop(base, timeout=15)
    finally:
        th.join(5)
    assert seen == [True]
    assert not base.running
    guard.delete()
    idle.delete()


def test_loop_in_a_worker_thread(backend):
    # A base created and run in a non-main thread; the main thread stops it.
    result = {}
    ready = threading.Event()

    def worker():
        with EventBase(method=backend) as eb:
            result["base"] = eb
            a, b = socket.socketpair()
            try:
                ev = Event(eb, a, levent.READ, lambda fd, what: None)
                ev.add()
                guard = Timer(eb, lambda: result.setdefault("timeout", True))
                guard.add(10)
                ready.set()
                result["ret"] = eb.loop()
                result["got_break"] = eb.got_break
            finally:
                a.close()
                b.close()

    th = threading.Thread(target=worker)
    th.start()
    assert ready.wait(10)
    time.sleep(0.1)
    t0 = time.monotonic()
    result["base"].loopbreak()
    th.join(15)
    assert not th.is_alive()
    assert "timeout" not in result
    assert result["ret"] is False and result["got_break"]
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("n_threads", [4])
def test_many_threads_activating(base, n_threads, run_loop):
    # Several threads activate events at once; every activation is seen, all in the loop thread.
    per_thread = 200
    got = []
    done = threading.Event()

    def cb(i):
        got.append((i, threading.get_ident()))
        if len(got) == n_threads * per_thread:
            done.set()
            keep.delete()

    keep = Timer(base, lambda: None)
    keep.add(10)
    timers = [Timer(base, cb, i) for i in range(n_threads * per_thread)]

    def activator(k):
        for t in timers[k * per_thread:(k + 1) * per_thread]:
            t.active()

    threads = [threading.Thread(target=activator, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    try:
        run_loop(base, timeout=15)
    finally:
        for th in threads:
            th.join(10)
    assert sorted(i for i, _ in got) == list(range(n_threads * per_thread))
    assert {tid for _, tid in got} == {threading.get_ident()}
