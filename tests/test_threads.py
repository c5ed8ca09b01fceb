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


def test_gil_taken_back_in_waiting_passes_with_mixed_callbacks(backend, add_guard, run_loop):
    # A waiting pass gives up the GIL; levent's Event callbacks take it back and keep it for the
    # pass, while BufferEvent callbacks take and release it their own way. Mix both in one pass,
    # with a waiting loop of another base run from the BufferEvent callback (which must leave the
    # outer pass as it found it), while another thread runs Python code the whole time: a callback
    # running without the GIL, or a pass that never gives it back, would crash or hang here.
    rounds = 60
    expected = b"".join(b"%d," % i for i in range(rounds))
    stop = threading.Event()
    churn = [0]

    def churner():
        while not stop.is_set():
            churn[0] += len([str(i) for i in range(50)])

    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with EventBase(method=backend, priorities=2) as base, EventBase(method=backend) as inner:
        by_bev, by_event, inner_ran = [], [], []

        def done():
            if b"".join(by_bev) == expected and b"".join(by_event) == expected:
                base.loopbreak()

        def bev_read(bev):
            Timer(inner, inner_ran.append, True).add(0.001)
            assert run_loop(inner) is True      # waits with the GIL released, inside the outer pass
            by_bev.append(bev.read())
            done()

        def ev_read(fd, what):
            by_event.append(c.recv(4096))
            done()

        bev = levent.BufferEvent(base, a, options=0, on_read=bev_read)
        bev.priority = 0
        bev.enable(levent.READ)
        ev = Event(base, c, levent.READ | levent.PERSIST, ev_read)
        ev.priority = 1
        ev.add()

        def writer():
            for i in range(rounds):
                if stop.is_set():
                    return
                time.sleep(0.002)              # the loop is waiting when both become readable
                b.send(b"%d," % i)
                d.send(b"%d," % i)

        threads = [threading.Thread(target=churner), threading.Thread(target=writer)]
        for th in threads:
            th.start()
        try:
            add_guard(base, 20)
            run_loop(base)
        finally:
            stop.set()
            for th in threads:
                th.join(10)
            ev.close()
            bev.close()
            for s in (a, b, c, d):
                s.close()
    assert churn[0] > 0
    assert b"".join(by_bev) == expected and b"".join(by_event) == expected
    assert len(inner_ran) == len(by_bev)
