"""Events, after libevent's regress groups: timeouts, I/O, priorities, manipulation from callbacks,
lifetimes. Every test runs on each backend (the ``base`` fixture)."""
import gc
import random
import socket
import threading
import time
import weakref

import pytest

import levent
from levent import Event, EventBase, Timer

# Float rounding, and libevent's microsecond timevals: libevent truncates the clock to whole
# microseconds when it computes a deadline, so a deadline may lie < 1 us before what
# time.monotonic() said just before add(). Nothing else is tolerated: timers must never fire early.
EPS = 1.1e-6


def drain(sock):
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


# ---------------------------------------------------------------------------------------------------
# Timeouts


def test_one_shot_timer(base, run_loop):
    fired = []
    t = Timer(base, lambda: fired.append(time.monotonic()))
    t0 = time.monotonic()
    t.add(0.05)
    assert t.is_pending()
    assert run_loop(base) is True
    assert len(fired) == 1
    assert fired[0] >= t0 + 0.05 - EPS
    assert not t.is_pending()
    # Added again, it fires again.
    t.add(0)
    assert run_loop(base) is True
    assert len(fired) == 2


def test_timeout_only_event(base, run_loop):
    got = []
    ev = Event(base, -1, 0, lambda fd, what: got.append((fd, what)))
    with pytest.raises(ValueError):
        ev.add()
    ev.add(0.01)
    assert run_loop(base) is True
    assert got == [(-1, levent.TIMEOUT)]


def test_persistent_timer(base, run_loop):
    fires = []

    def cb():
        fires.append(time.monotonic())
        if len(fires) == 5:
            t.delete()

    t = Timer(base, cb, persist=True)
    interval = 0.02
    t0 = time.monotonic()
    t.add(interval)
    assert run_loop(base) is True
    assert len(fires) == 5
    # The k-th run is due k intervals after add(); none may come early.
    for k, when in enumerate(fires, 1):
        assert when >= t0 + k * interval - EPS, f"run {k} came {t0 + k * interval - when:.6f} s early"
    assert not t.is_pending()


def test_persistent_timer_with_args(base, run_loop):
    seen = []
    t = Timer(base, lambda a, b: seen.append((a, b)) or (len(seen) == 3 and t.delete()), "x", 2,
              persist=True)
    t.add(0.001)
    run_loop(base)
    assert seen == [("x", 2)] * 3


def test_one_shot_timeouts_fire_in_deadline_order(base, run_loop):
    order = []
    delays = [0.05, 0.01, 0.03, 0.02, 0.04, 0.0, 0.06]
    for d in delays:
        Timer(base, order.append, d).add(d)
    assert run_loop(base) is True
    assert order == sorted(delays)


def test_persistent_and_one_shot_timeouts_interleave(base, run_loop):
    log = []
    p = Timer(base, lambda: log.append(("p", time.monotonic())), persist=True)
    t0 = time.monotonic()
    p.add(0.04)
    for name, d in (("a", 0.02), ("b", 0.06), ("c", 0.10)):
        Timer(base, lambda n=name: log.append((n, time.monotonic()))).add(d)
    Timer(base, p.delete).add(0.30)
    assert run_loop(base) is True
    names = [n for n, _ in log]
    # p is due at 0.04, 0.08, 0.12, ... (or later if the machine stalls); a/b/c at their deadlines.
    assert [n for n in names if n != "p"] == ["a", "b", "c"]
    assert names[0] == "a"
    assert names.index("p") < names.index("b")
    assert 2 <= names.count("p") <= 7
    due = {"a": 0.02, "b": 0.06, "c": 0.10}
    k = 0
    for n, when in log:
        if n == "p":
            k += 1
            assert when >= t0 + 0.04 * k - EPS
        else:
            assert when >= t0 + due[n] - EPS


@pytest.mark.parametrize("config", [{}, {"precise_timer": True}], ids=["default", "precise_timer"])
def test_10000_timers_fire_in_deadline_order_never_early(backend, config, run_loop):
    """10 000 timers with random deadlines: none fires early, and they fire in deadline order.

    A timer's deadline is the moment of add() plus its delay; add() takes a little time, so for each
    timer we know its deadline lies in [time before add() + delay, time after add() + delay], widened
    at the top by the add() duration once more (an implementation may read the clock twice) and
    at the bottom by libevent's microsecond truncation (EPS).
    """
    rng = random.Random(1234)
    n = 10_000
    fired = []
    lo = [0.0] * n
    hi = [0.0] * n
    now = time.monotonic

    def record(i):
        fired.append((i, now()))

    with EventBase(method=backend, **config) as eb:
        timers = []
        for i in range(n):
            d = rng.uniform(0.0, 0.5)
            t = Timer(eb, record, i)
            before = now()
            t.add(d)
            after = now()
            lo[i] = before + d
            hi[i] = after + d + (after - before)
            timers.append(t)
        t0 = now()
        assert run_loop(eb, timeout=30) is True
        assert now() - t0 < 20
    assert len(fired) == n
    assert sorted(i for i, _ in fired) == list(range(n))
    early = [(i, lo[i] - when) for i, when in fired if when < lo[i] - EPS]
    assert not early, f"{len(early)} timers fired early, worst by {max(e for _, e in early):.6f} s"
    # Deadline order: if i ran before j, i's deadline was not later than j's.
    out_of_order = [(fired[k][0], fired[k + 1][0], lo[fired[k][0]] - hi[fired[k + 1][0]])
                    for k in range(n - 1) if lo[fired[k][0]] > hi[fired[k + 1][0]] + EPS]
    assert not out_of_order, (
        f"{len(out_of_order)} pairs ran out of deadline order, (earlier, later, seconds): "
        f"{out_of_order[:5]}; worst {max(x[2] for x in out_of_order):.6f} s")


def test_zero_delay_timer_fires_without_waiting(base, bounded):
    # add(0) means "as soon as possible": the loop must not sit out a clock tick for it. (Plain
    # libevent runs such a timer at the next timeout check, a few microseconds.)
    n = 200
    got = []
    t0 = time.monotonic()
    with bounded(base, 10):
        for i in range(n):
            Timer(base, got.append, i).add(0)
            base.loop()
    per_call = (time.monotonic() - t0) / n
    assert got == list(range(n))
    assert per_call < 0.001, f"Timer.add(0) + loop() took {per_call * 1e3:.2f} ms per round"


def test_readd_resets_timeout(base, run_loop):
    fired = []
    t = Timer(base, lambda: fired.append(time.monotonic()))
    t.add(0.01)
    t0 = time.monotonic()
    t.add(0.08)  # replaces the 10 ms timeout
    run_loop(base)
    assert len(fired) == 1
    assert fired[0] >= t0 + 0.08 - EPS


def test_int_and_float_timeouts(base, run_loop):
    fired = []
    Timer(base, fired.append, "int").add(0)
    Timer(base, fired.append, "float").add(0.0)
    Timer(base, fired.append, "small").add(1e-7)
    run_loop(base)
    assert sorted(fired) == ["float", "int", "small"]


# ---------------------------------------------------------------------------------------------------
# active()


def test_active(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append((fd, what)))
    ev.active(levent.READ)
    assert ev.is_pending()
    assert run_loop(base) is True
    assert got == [(a.fileno(), levent.READ)]
    assert not ev.is_pending()
    ev.active(levent.WRITE)
    ev.active(levent.WRITE)  # already active: still one call
    run_loop(base)
    assert got[1:] == [(a.fileno(), levent.WRITE)]
    ev.active(levent.READ | levent.TIMEOUT)
    run_loop(base)
    assert got[2:] == [(a.fileno(), levent.READ | levent.TIMEOUT)]


def test_active_timer(base, run_loop):
    got = []
    t = Timer(base, got.append, "t")
    t.active()
    assert run_loop(base) is True
    assert got == ["t"]


def test_active_on_pending_event_keeps_it_pending(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ | levent.PERSIST, lambda fd, what: got.append(what))
    ev.add()
    ev.active(levent.WRITE)
    run_loop(base, nonblock=True)
    assert got == [levent.WRITE]
    assert ev.pending(levent.READ) == levent.READ
    ev.delete()


# ---------------------------------------------------------------------------------------------------
# Priorities


def test_priorities_order(backend, run_loop):
    with EventBase(method=backend, priorities=3) as eb:
        order = []
        low = Timer(eb, order.append, "low")
        mid = Timer(eb, order.append, "mid")
        high = Timer(eb, order.append, "high")
        low.priority = 2
        mid.priority = 1
        high.priority = 0
        for ev in (low, mid, high):
            ev.active()
        assert run_loop(eb) is True
        assert order == ["high", "mid", "low"]


def test_priorities_with_io(backend, make_socketpair, run_loop):
    with EventBase(method=backend, priorities=2) as eb:
        order = []
        evs = []
        for name, prio in (("low1", 1), ("high1", 0), ("low2", 1), ("high2", 0)):
            a, b = make_socketpair()
            b.send(b"x")
            ev = Event(eb, a, levent.READ, lambda fd, what, n=name: order.append(n))
            ev.priority = prio
            ev.add()
            evs.append(ev)
        assert run_loop(eb) is True
        assert sorted(order[:2]) == ["high1", "high2"]
        assert sorted(order[2:]) == ["low1", "low2"]


def test_priority_starves_lower(backend, run_loop):
    with EventBase(method=backend, priorities=2) as eb:
        order = []

        def hog():
            order.append("hog")
            if order.count("hog") < 5:
                h.active()

        h = Timer(eb, hog)
        h.priority = 0
        lo = Timer(eb, order.append, "low")
        lo.priority = 1
        lo.active()
        h.active()
        run_loop(eb)
        assert order == ["hog"] * 5 + ["low"]


# ---------------------------------------------------------------------------------------------------
# I/O on socketpairs


def test_simple_read(base, socketpair, run_loop):
    a, b = socketpair
    got = []

    def cb(fd, what, *args):
        got.append((fd, what, args, a.recv(100)))

    ev = Event(base, a, levent.READ, cb)
    ev.add()
    b.send(b"hello")
    assert run_loop(base) is True
    assert got == [(a.fileno(), levent.READ, (), b"hello")]
    assert not ev.is_pending()


def test_simple_write(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.WRITE, lambda fd, what: got.append((fd, what)))
    ev.add()
    assert run_loop(base) is True
    assert got == [(a.fileno(), levent.WRITE)]


def test_read_write_same_event(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    b.send(b"x")
    time.sleep(0.01)
    ev = Event(base, a, levent.READ | levent.WRITE, lambda fd, what: got.append(what))
    ev.add()
    run_loop(base)
    assert got == [levent.READ | levent.WRITE]


def test_separate_read_and_write_events_on_one_fd(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    b.send(b"x")
    rd = Event(base, a, levent.READ, lambda fd, what: got.append(("r", what)))
    wr = Event(base, a, levent.WRITE, lambda fd, what: got.append(("w", what)))
    rd.add()
    wr.add()
    assert run_loop(base) is True
    assert sorted(got) == [("r", levent.READ), ("w", levent.WRITE)]


def test_two_read_events_on_one_fd(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    e1 = Event(base, a, levent.READ, lambda fd, what: got.append(1))
    e2 = Event(base, a, levent.READ, lambda fd, what: got.append(2))
    e1.add()
    e2.add()
    b.send(b"x")
    assert run_loop(base) is True
    assert sorted(got) == [1, 2]


def test_persistent_read(base, socketpair, run_loop):
    a, b = socketpair
    received = []
    sent = []

    def on_read(fd, what):
        assert what == levent.READ
        received.append(a.recv(100))
        if len(received) == 3:
            rd.delete()

    def send():
        if len(sent) < 3:
            sent.append(b"%d" % len(sent))
            b.send(sent[-1])
        if len(sent) == 3:
            wr.delete()

    rd = Event(base, a, levent.READ | levent.PERSIST, on_read)
    rd.add()
    wr = Timer(base, send, persist=True)
    wr.add(0.01)
    assert run_loop(base) is True
    assert received == [b"0", b"1", b"2"]


def test_many_events(base, make_socketpair, run_loop):
    n = 100
    got = set()
    pairs = [make_socketpair() for _ in range(n)]
    events = []
    for i, (a, b) in enumerate(pairs):
        ev = Event(base, a, levent.READ, lambda fd, what, i=i: got.add(i))
        ev.add()
        events.append(ev)
        b.send(b"x")
    assert run_loop(base) is True
    assert got == set(range(n))


def test_closed_event(base, socketpair, run_loop):
    if not base.features & levent.Feature.EARLY_CLOSE:
        pytest.skip(f"{base.method} has no EARLY_CLOSE feature: CLOSED events are not reported")
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.CLOSED, lambda fd, what: got.append(what))
    ev.add(2.0)  # a bound: TIMEOUT would mean the close was never reported
    Timer(base, b.close).add(0.02)
    assert run_loop(base) is True
    assert len(got) == 1
    assert got[0] & levent.CLOSED, got
    assert not got[0] & levent.TIMEOUT, got


def test_closed_with_read_event(base, socketpair, run_loop):
    if not base.features & levent.Feature.EARLY_CLOSE:
        pytest.skip(f"{base.method} has no EARLY_CLOSE feature: CLOSED events are not reported")
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.CLOSED | levent.READ, lambda fd, what: got.append(what))
    ev.add(2.0)
    b.shutdown(socket.SHUT_WR)
    assert run_loop(base) is True
    assert len(got) == 1 and got[0] & levent.CLOSED, got


def test_edge_triggered_read(backend, socketpair, run_loop):
    if backend != "epoll":
        pytest.skip(f"{backend} has no ET feature; edge-triggered events need epoll")
    a, b = socketpair
    with EventBase(method=backend) as eb:
        calls = []
        # Never reads: level-triggered it would run again on every iteration.
        ev = Event(eb, a, levent.READ | levent.PERSIST | levent.ET, lambda fd, what: calls.append(what))
        ev.add()
        ticks = []
        snapshot = {}

        def tick():
            ticks.append(len(calls))
            if len(ticks) == 5:
                snapshot["before_new_data"] = len(calls)
                b.send(b"more")
            if len(ticks) == 10:
                ev.delete()
                tk.delete()

        tk = Timer(eb, tick, persist=True)
        b.send(b"first")
        tk.add(0.01)
        assert run_loop(eb) is True
        assert snapshot["before_new_data"] == 1, calls
        assert len(calls) == 2, calls
        assert all(w & levent.READ for w in calls), calls
        assert a.recv(100) == b"firstmore"


def test_edge_triggered_what_has_only_fired_kinds(backend, socketpair, run_loop):
    # The callback's ``what`` names what fired (READ/WRITE/TIMEOUT/CLOSED/SIGNAL), not the ET flag.
    if backend != "epoll":
        pytest.skip(f"{backend} has no ET feature; edge-triggered events need epoll")
    a, b = socketpair
    with EventBase(method=backend) as eb:
        calls = []
        ev = Event(eb, a, levent.READ | levent.ET, lambda fd, what: calls.append(what))
        ev.add()
        b.send(b"x")
        assert run_loop(eb) is True
        assert calls == [levent.READ]


def test_level_triggered_read_repeats(base, socketpair, run_loop):
    # The contrast to the ET test: without reading, a level-triggered READ keeps firing.
    a, b = socketpair
    calls = []

    def cb(fd, what):
        calls.append(what)
        if len(calls) == 20:
            ev.delete()

    ev = Event(base, a, levent.READ | levent.PERSIST, cb)
    ev.add()
    b.send(b"x")
    assert run_loop(base) is True
    assert len(calls) == 20


def test_fd_event_with_timeout(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append((what, time.monotonic())))
    t0 = time.monotonic()
    ev.add(0.05)
    assert ev.pending() == levent.READ | levent.TIMEOUT
    assert run_loop(base) is True
    assert [w for w, _ in got] == [levent.TIMEOUT]
    assert got[0][1] >= t0 + 0.05 - EPS


def test_fd_event_data_before_timeout(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append(what))
    ev.add(0.2)
    b.send(b"x")
    assert run_loop(base) is True
    assert got == [levent.READ]


def test_persistent_fd_event_timeout_repeats(base, socketpair, run_loop):
    a, b = socketpair
    got = []

    def cb(fd, what):
        got.append(what)
        if len(got) == 3:
            ev.delete()

    ev = Event(base, a, levent.READ | levent.PERSIST, cb)
    ev.add(0.01)
    assert run_loop(base) is True
    assert got == [levent.TIMEOUT] * 3


def test_remove_timer(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append(what))
    ev.add(0.02)
    ev.remove_timer()
    assert ev.pending() == levent.READ
    Timer(base, b.send, b"x").add(0.1)
    assert run_loop(base) is True
    assert got == [levent.READ]


def test_remove_timer_of_timer(base, run_loop):
    got = []
    t = Timer(base, got.append, 1)
    t.add(0.01)
    t.remove_timer()
    assert not t.is_pending()
    assert run_loop(base) is True
    assert got == []


# ---------------------------------------------------------------------------------------------------
# Manipulating events from callbacks


def test_delete_inside_own_callback(base, run_loop):
    calls = []

    def cb():
        calls.append(1)
        t.delete()
        assert not t.is_pending()

    t = Timer(base, cb, persist=True)
    t.add(0.001)
    assert run_loop(base) is True
    assert calls == [1]
    assert not t.closed


def test_delete_inside_own_callback_io(base, socketpair, run_loop):
    a, b = socketpair
    calls = []

    def cb(fd, what):
        calls.append(what)
        ev.delete()

    ev = Event(base, a, levent.READ | levent.PERSIST, cb)
    ev.add()
    b.send(b"x")  # never read: a persistent event would fire forever
    assert run_loop(base) is True
    assert calls == [levent.READ]


def test_close_inside_own_callback(base, socketpair, run_loop):
    a, b = socketpair
    calls = []

    def cb(fd, what):
        calls.append(what)
        ev.close()
        assert ev.closed

    ev = Event(base, a, levent.READ | levent.PERSIST, cb)
    ev.add()
    b.send(b"x")
    assert run_loop(base) is True
    assert calls == [levent.READ]
    assert ev.closed
    with pytest.raises(ValueError):
        ev.add()


def test_close_inside_own_callback_timer(base, run_loop):
    calls = []

    def cb():
        calls.append(1)
        t.close()

    t = Timer(base, cb, persist=True)
    t.add(0)
    assert run_loop(base) is True
    assert calls == [1]
    assert t.closed


def test_readd_inside_own_callback(base, run_loop):
    calls = []

    def cb():
        calls.append(time.monotonic())
        if len(calls) < 3:
            t.add(0.01)

    t = Timer(base, cb)
    t.add(0.01)
    assert run_loop(base) is True
    assert len(calls) == 3
    assert calls[2] - calls[0] >= 0.02 - EPS


def test_readd_nonpersistent_io_inside_callback(base, socketpair, run_loop):
    a, b = socketpair
    got = []

    def cb(fd, what):
        got.append(a.recv(10))
        if len(got) < 3:
            ev.add()
            b.send(b"%d" % len(got))

    ev = Event(base, a, levent.READ, cb)
    ev.add()
    b.send(b"0")
    assert run_loop(base) is True
    assert got == [b"0", b"1", b"2"]


@pytest.mark.parametrize("how", ["delete", "close"])
def test_removing_another_active_event_in_same_iteration(base, how, run_loop):
    ran = []
    evs = {}

    def cb(me, other):
        ran.append(me)
        getattr(evs[other], how)()

    evs["a"] = Timer(base, cb, "a", "b")
    evs["b"] = Timer(base, cb, "b", "a")
    evs["a"].active()
    evs["b"].active()
    assert run_loop(base) is True
    assert len(ran) == 1, ran


@pytest.mark.parametrize("how", ["delete", "close"])
def test_removing_another_ready_io_event_in_same_iteration(base, make_socketpair, how, run_loop):
    ran = []
    evs = {}

    def cb(fd, what, me, other):
        ran.append(me)
        getattr(evs[other], how)()

    for me, other in (("a", "b"), ("b", "a")):
        r, w = make_socketpair()
        w.send(b"x")
        evs[me] = Event(base, r, levent.READ | levent.PERSIST, cb, me, other)
    time.sleep(0.01)
    for ev in evs.values():
        ev.add()
    # Both are readable in the first poll; the first callback removes the other.
    keep = Timer(base, lambda: None)
    keep.add(0.05)
    run_loop(base, once=True)
    assert len(ran) == 1, ran
    # The one that ran is still pending (persistent, data unread): remove it and finish.
    evs[ran[0]].delete()
    run_loop(base)


def test_timers_removing_each_other(base, run_loop):
    ran = []
    t1 = Timer(base, lambda: (ran.append(1), t2.delete()))
    t2 = Timer(base, lambda: (ran.append(2), t1.delete()))
    t1.add(0)
    t2.add(0)
    assert run_loop(base) is True
    assert len(ran) == 1


def test_add_new_events_from_callback(base, run_loop):
    got = []

    def cb(n):
        got.append(n)
        if n < 50:
            Timer(base, cb, n + 1).add(0)

    Timer(base, cb, 0).add(0)
    assert run_loop(base) is True
    assert got == list(range(51))


# ---------------------------------------------------------------------------------------------------
# call_later


def test_call_later(base, run_loop):
    got = []
    t0 = time.monotonic()
    base.call_later(0.03, lambda *a: got.append((a, time.monotonic())), 1, "two")
    assert run_loop(base) is True
    assert [a for a, _ in got] == [(1, "two")]
    assert got[0][1] >= t0 + 0.03 - EPS


def test_call_later_order(base, run_loop):
    # Deadline order: by Call.when (a stalled machine may push a later call_later's deadline past an
    # earlier one's, so the delays alone do not fix the order).
    got = []
    calls = [base.call_later(d, got.append, i) for i, d in enumerate([0.04, 0.0, 0.02, 0.01, 0.03])]
    assert run_loop(base) is True
    assert got == sorted(range(len(calls)), key=lambda i: calls[i].when)


def test_call_at_runs_by_deadline_then_fifo_through_heap_pops(base, run_loop):
    # 5 000 calls all due at once, with many equal deadlines, some cancelled (which compacts the heap
    # at times): every pop must leave the heap ordered by (deadline, scheduling order).
    rng = random.Random(7)
    now = time.monotonic()
    whens = [now - rng.randrange(200) * 1e-4 for _ in range(5000)]
    got = []
    calls = [base.call_at(w, got.append, i) for i, w in enumerate(whens)]
    for i in rng.sample(range(len(calls)), 1500):
        calls[i].cancel()
    assert run_loop(base) is True
    expected = sorted((i for i, c in enumerate(calls) if not c.cancelled()), key=lambda i: (whens[i], i))
    assert got == expected


def test_calls_due_soon_after_a_run_wait_for_the_slack(base, run_loop):
    # A call that comes due less than 100 us after the calls last ran waits until then: dense timers
    # share wakeups (each costs tens of us of CPU on a VM). Never early.
    got = {}

    def first():
        got["first"] = time.monotonic()
        base.call_at(time.monotonic() + 10e-6, second)    # not due when this run began

    def second():
        got["second"] = time.monotonic()

    a = base.call_later(0.001, first)
    assert run_loop(base) is True
    assert got["first"] >= a.when
    assert got["second"] - a.when >= 100e-6, got["second"] - a.when


def test_call_later_returns_call(base, run_loop):
    t0 = time.monotonic()
    call = base.call_later(0.01, lambda: None)
    t1 = time.monotonic()
    assert isinstance(call, levent.Call)
    assert t0 + 0.01 <= call.when <= t1 + 0.01
    assert not call.done() and not call.cancelled()
    assert run_loop(base) is True
    assert call.done() and not call.cancelled()
    assert call.callback is None  # references dropped once it ran
    with pytest.raises(TypeError):
        levent.Call()


def test_call_later_cancel(base, run_loop):
    got = []
    call = base.call_later(0.01, got.append, "cancelled")
    base.call_later(0.02, got.append, "kept")
    call.cancel()
    assert call.cancelled()
    call.cancel()  # twice: no-op
    assert run_loop(base) is True
    assert got == ["kept"]


def test_call_later_cancel_from_callback(base, run_loop):
    got = []
    victim = base.call_later(0.05, got.append, "victim")
    base.call_later(0.01, victim.cancel)
    assert run_loop(base) is True
    assert got == []
    assert victim.cancelled()


def test_call_later_cancel_due_in_same_batch(base, run_loop):
    # Both due in one batch: the first cancels the second, which must not run.
    got = []
    second = base.call_later(0, got.append, "second")
    base.call_at(second.when - 1, lambda: (got.append("first"), second.cancel()))
    assert run_loop(base) is True
    assert got == ["first"]


def test_cancelling_every_call_lets_loop_return(base, run_loop):
    calls = [base.call_later(60, lambda: None) for _ in range(5)]
    for call in calls:
        call.cancel()
    assert base.num_events() == 0
    t0 = time.monotonic()
    assert run_loop(base) is True
    assert time.monotonic() - t0 < 5


def test_cancelled_calls_are_released_before_their_deadline(base, run_loop):
    # Many long timeouts that get cancelled must not pile up in the heap until they are due.
    got = []
    keep = base.call_later(0.01, got.append, "kept")
    refs = []
    for i in range(1000):
        call = base.call_later(60 + i, got.append, i)
        refs.append(weakref.ref(call))
        call.cancel()
        del call
    assert sum(r() is not None for r in refs) < 200
    assert run_loop(base) is True
    assert got == ["kept"]
    assert keep.done()


def test_loop_returns_when_only_cancelled_calls_are_left(base, run_loop):
    got = []
    base.call_later(0.01, got.append, "ran")
    for i in range(5):
        base.call_later(60, got.append, i).cancel()
    t0 = time.monotonic()
    assert run_loop(base) is True
    assert time.monotonic() - t0 < 5
    assert got == ["ran"]


def test_call_later_released_after_firing(base, run_loop):
    got = []
    w = weakref.ref(base.call_later(0.01, got.append, 1))
    gc.collect()
    assert w() is not None  # the base keeps a scheduled call
    run_loop(base)
    assert got == [1]
    gc.collect()
    assert w() is None


def test_call_at_and_fifo_for_equal_deadlines(base, run_loop):
    got = []
    when = time.monotonic() + 0.01
    for i in range(100):
        base.call_at(when, got.append, i)
    base.call_at(when - 0.005, got.append, "earlier")
    assert run_loop(base) is True
    assert got == ["earlier"] + list(range(100))


def test_call_at_in_the_past_runs_at_once(base, run_loop):
    got = []
    base.call_at(time.monotonic() - 100, got.append, 1)
    assert run_loop(base) is True
    assert got == [1]


def test_call_later_from_a_call_runs_in_a_later_batch(base, run_loop):
    got = []

    def first():
        got.append("first")
        base.call_later(0, got.append, "scheduled by first")
        base.loopbreak()  # ends the loop before anything scheduled now runs

    base.call_later(0, first)
    run_loop(base)
    assert got == ["first"]
    assert run_loop(base) is True
    assert got == ["first", "scheduled by first"]


def test_call_exception_keeps_the_other_due_calls(base, run_loop):
    got = []

    def boom():
        raise KeyError("boom")

    when = time.monotonic()
    base.call_at(when, got.append, 1)
    base.call_at(when, boom)
    base.call_at(when, got.append, 2)
    with pytest.raises(KeyError):
        run_loop(base)
    assert got == [1]
    assert run_loop(base) is True
    assert got == [1, 2]


def test_call_later_from_another_thread_wakes_the_loop(base, run_loop):
    # The loop waits on an idle fd; a call scheduled from another thread must run promptly.
    a, b = socket.socketpair()
    try:
        idle = Event(base, a, levent.READ | levent.PERSIST, lambda fd, what: None)
        idle.add()
        ran = []

        def stop():
            ran.append(time.monotonic())
            idle.delete()

        t0 = [0.0]

        def schedule():
            time.sleep(0.2)
            t0[0] = time.monotonic()
            base.call_later(0, stop)

        thread = threading.Thread(target=schedule)
        thread.start()
        run_loop(base, timeout=10)
        thread.join()
        assert ran and ran[0] - t0[0] < 1.0
    finally:
        a.close()
        b.close()


def test_call_later_bad_arguments(base):
    with pytest.raises(ValueError):
        base.call_later(-1, lambda: None)
    with pytest.raises(ValueError):
        base.call_later(float("nan"), lambda: None)
    with pytest.raises(TypeError):
        base.call_later("1", lambda: None)
    with pytest.raises(TypeError):
        base.call_later(1, "not callable")
    with pytest.raises(ValueError):
        base.call_at(float("inf"), lambda: None)
    with pytest.raises(TypeError):
        base.call_at(None, lambda: None)


def test_dropped_base_with_calls_is_collected(backend):
    def make():
        eb = EventBase(method=backend)
        eb.call_later(60, lambda: eb)  # a cycle through the callback, too
        return weakref.ref(eb)

    w = make()
    gc.collect()
    assert w() is None


def test_pending_calls_are_off_the_gc_lists_and_back_once_off_the_heap(base, run_loop):
    # Young collections would scan every pending timer; the base reports their references instead.
    ran, cancelled = base.call_later(0, lambda: None), base.call_later(60, lambda: None)
    assert not gc.is_tracked(ran) and not gc.is_tracked(cancelled)
    cancelled.cancel()
    run_loop(base)
    assert gc.is_tracked(ran)
    base.close()    # drops the cancelled call still on the heap
    assert gc.is_tracked(cancelled)


def test_gc_keeps_what_a_pending_call_held_elsewhere_references(backend):
    # The base reports a pending call's references only while the heap alone holds the call: here the
    # caller holds it too, so the dropped base stays alive (conservatively), and nothing the call
    # references is cleared under it.
    class Job:
        def run(self):
            pass

    def make():
        eb = EventBase(method=backend)
        job = Job()
        job.base = eb
        job.state = {"alive": True}
        return weakref.ref(eb), eb.call_later(60, job.run)

    wb, call = make()
    gc.collect()
    job = call.callback.__self__
    assert job.state == {"alive": True} and wb() is job.base
    job.base.close()
    assert call.cancelled() and wb() is job.base
    del job, call
    gc.collect()
    assert wb() is None


def test_dropped_unclosed_asyncio_loop_with_a_pending_timer_is_collected():
    # call_later(…, self.method) from an object the loop reaches: a cycle through a pending timer.
    class Keepalive:
        def __init__(self, loop):
            self.loop = loop
            self.handle = None

        def fire(self):
            pass

    def make():
        loop = levent.new_event_loop()
        k = Keepalive(loop)
        loop.call_later(60, k.fire)     # the heap alone holds the handle
        return weakref.ref(loop), weakref.ref(loop.base)

    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        wl, wb = make()
        gc.collect()
    assert wl() is None and wb() is None


# ---------------------------------------------------------------------------------------------------
# pending()


def test_pending(base, socketpair):
    a, b = socketpair
    ev = Event(base, a, levent.READ, lambda fd, what: None)
    assert ev.pending() == 0
    assert not ev.is_pending()
    ev.add()
    assert ev.is_pending()
    assert ev.pending() == levent.READ
    assert ev.pending(levent.READ) == levent.READ
    assert ev.pending(levent.WRITE) == 0
    assert ev.pending(levent.TIMEOUT) == 0
    ev.add(5)
    assert ev.pending() == levent.READ | levent.TIMEOUT
    assert ev.pending(levent.TIMEOUT) == levent.TIMEOUT
    ev.delete()
    assert ev.pending() == 0
    assert not ev.is_pending()
    t = Timer(base, lambda: None)
    t.add(5)
    assert t.pending() == levent.TIMEOUT
    assert t.is_pending()
    t.close()
    assert t.pending() == 0
    assert not t.is_pending()


def test_pending_signal_event(base, restore_signals):
    import signal

    s = levent.Signal(base, signal.SIGUSR2, lambda signum: None)
    assert s.pending() == 0
    s.add()
    assert s.pending() == levent.SIGNAL
    s.delete()
    assert s.pending() == 0


# ---------------------------------------------------------------------------------------------------
# Lifetimes


def test_dropped_pending_timer_fires_then_is_released(base, run_loop):
    got = []
    t = Timer(base, got.append, "fired")
    t.add(0.01)
    w = weakref.ref(t)
    del t
    gc.collect()
    assert w() is not None, "the base must keep a pending Event alive"
    assert run_loop(base) is True
    assert got == ["fired"]
    gc.collect()
    assert w() is None, "a fired one-shot Event with no references must be released"


def test_dropped_pending_io_event_fires_then_is_released(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append(a.recv(10)))
    ev.add()
    w = weakref.ref(ev)
    del ev
    gc.collect()
    assert w() is not None
    b.send(b"x")
    assert run_loop(base) is True
    assert got == [b"x"]
    gc.collect()
    assert w() is None


def test_dropped_active_event_runs_then_is_released(base, run_loop):
    got = []
    t = Timer(base, got.append, 1)
    t.active()
    w = weakref.ref(t)
    del t
    gc.collect()
    assert w() is not None
    run_loop(base)
    assert got == [1]
    gc.collect()
    assert w() is None


def test_deleted_event_is_released(base, socketpair):
    a, b = socketpair
    ev = Event(base, a, levent.READ | levent.PERSIST, lambda fd, what: None)
    ev.add()
    w = weakref.ref(ev)
    ev.delete()
    del ev
    gc.collect()
    assert w() is None


def test_dropped_persistent_event_keeps_firing(base, run_loop):
    got = []

    def cb():
        got.append(1)
        if len(got) == 3:
            for e in base:
                e.delete()

    Timer(base, cb, persist=True).add(0.001)
    gc.collect()
    assert run_loop(base) is True
    assert got == [1, 1, 1]


def test_callback_cycle_is_collected(base, run_loop):
    # The callback references the event (a cycle); once fired and dropped, the GC frees both.
    class Holder:
        pass

    h = Holder()

    def cb(h=h):
        return h

    h.ev = Timer(base, cb)
    h.ev.add(0)
    w = weakref.ref(h.ev)
    wh = weakref.ref(h)
    del h, cb
    run_loop(base)
    gc.collect()
    assert w() is None and wh() is None


# ---------------------------------------------------------------------------------------------------
# fd objects, callback arguments, attributes


def test_fd_as_socket_object(base, run_loop):
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        got = []
        ev = Event(base, a, levent.READ, lambda f, what: got.append((f, what)))
        assert ev.fileno() == fd
        wa = weakref.ref(a)
        del a
        gc.collect()
        assert wa() is not None, "the Event must keep its fd object alive"
        b.send(b"x")
        ev.add()
        assert run_loop(base) is True
        assert got == [(fd, levent.READ)]
        assert type(got[0][0]) is int
        ev.close()
    finally:
        b.close()
        if wa() is not None:
            wa().close()


def test_fd_as_object_with_fileno(base, socketpair, run_loop):
    a, b = socketpair

    class Wrapper:
        def fileno(self):
            return a.fileno()

    got = []
    ev = Event(base, Wrapper(), levent.WRITE, lambda f, what: got.append(f))
    ev.add()
    run_loop(base)
    assert got == [a.fileno()]
    assert ev.fileno() == a.fileno()


def test_callback_args_passed_through(base, socketpair, run_loop):
    a, b = socketpair
    marker = object()
    got = []

    def cb(*args):
        got.append(args)

    ev = Event(base, a, levent.WRITE, cb, 1, "two", marker)
    assert ev.args == (1, "two", marker)
    assert ev.callback is cb
    assert ev.events == levent.WRITE
    assert ev.base is base
    assert not ev.closed
    ev.add()
    t = Timer(base, cb, marker, None)
    t.add(0)
    assert t.args == (marker, None)
    assert t.fileno() == -1
    run_loop(base)
    assert sorted(got, key=len) == [(marker, None), (a.fileno(), levent.WRITE, 1, "two", marker)]
    assert got[0][-1] is marker or got[1][-1] is marker


def test_event_attributes_keep_kinds(base, socketpair):
    a, b = socketpair
    ev = Event(base, a, levent.READ | levent.WRITE | levent.PERSIST, lambda fd, what: None)
    assert ev.events == levent.READ | levent.WRITE | levent.PERSIST
    t = Timer(base, lambda: None, persist=True)
    assert t.events & levent.PERSIST
    t2 = Timer(base, lambda: None)
    assert not t2.events & levent.PERSIST


def test_event_context_manager(base, socketpair):
    a, b = socketpair
    with Event(base, a, levent.READ, lambda fd, what: None) as ev:
        ev.add()
        assert ev.is_pending()
    assert ev.closed
    assert not ev.is_pending()


def test_priority_setter_errors(backend):
    with EventBase(method=backend, priorities=3) as eb:
        ev = Timer(eb, lambda: None)
        for bad in (3, -1, 1000):
            with pytest.raises(ValueError):
                ev.priority = bad
        with pytest.raises(TypeError):
            ev.priority = "1"
        with pytest.raises(TypeError):
            ev.priority = None
        ev.priority = 2
        assert ev.priority == 2
        ev.add(10)
        ev.priority = 1  # pending but not active: allowed
        assert ev.priority == 1
        ev.delete()
        ev.active()
        with pytest.raises(RuntimeError):
            ev.priority = 0
        assert ev.priority == 1
        ev.close()
        with pytest.raises(ValueError):
            ev.priority = 0
        with pytest.raises(ValueError):
            ev.priority


def test_priority_default_base_has_one_level(base):
    ev = Timer(base, lambda: None)
    assert ev.priority == 0
    with pytest.raises(ValueError):
        ev.priority = 1
