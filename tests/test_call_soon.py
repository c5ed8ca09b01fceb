"""EventBase.call_soon: asyncio's call_soon on levent's raw API. FIFO batches, one per loop iteration;
cancel; exceptions and loopbreak() mid-batch; close; the cycle GC. Every test runs on each backend."""
import gc
import threading
import time
import weakref

import pytest

import levent
from levent import Event, EventBase


def test_fifo_order_and_the_call(base, run_loop):
    got = []
    t0 = time.monotonic()
    calls = [base.call_soon(got.append, i) for i in range(100)]
    base.call_soon(lambda *a: got.append(a), 1, "two")
    t1 = time.monotonic()
    assert all(isinstance(c, levent.Call) for c in calls)
    assert not calls[0].done() and not calls[0].cancelled()
    assert calls[0].callback == got.append and calls[0].args == (0,)
    assert t0 <= calls[0].when <= calls[-1].when <= t1  # when it was scheduled
    assert run_loop(base) is True
    assert got == list(range(100)) + [(1, "two")]
    assert calls[0].done() and not calls[0].cancelled()
    assert calls[0].callback is None and calls[0].args == ()  # references dropped once it ran


def test_call_scheduled_by_a_call_runs_after_the_ready_io(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    Event(base, a, levent.READ, lambda fd, what: got.append("read")).add()
    b.send(b"x")

    def first():
        got.append("first")
        base.call_soon(got.append, "second")

    base.call_soon(first)
    assert run_loop(base) is True
    assert got == ["first", "read", "second"]


def test_rescheduling_call_does_not_starve_io(base, socketpair, run_loop):
    # A call that keeps rescheduling itself: the loop still polls between batches, so a READ that
    # becomes ready during step 0 runs within a step or two, not after the chain.
    a, b = socketpair
    steps = []
    read_at = []
    Event(base, a, levent.READ, lambda fd, what: read_at.append(len(steps))).add()

    def step(n):
        steps.append(n)
        if n == 0:
            b.send(b"x")
        if n < 1000 and not read_at:
            base.call_soon(step, n + 1)

    base.call_soon(step, 0)
    assert run_loop(base) is True
    assert read_at and read_at[0] <= 2


def test_one_batch_per_loop_iteration(base, run_loop):
    got = []

    def first():
        got.append("first")
        base.call_soon(got.append, "next batch")

    base.call_soon(first)
    base.call_soon(got.append, "same batch")
    run_loop(base, once=True)
    assert got == ["first", "same batch"]
    assert run_loop(base) is True
    assert got == ["first", "same batch", "next batch"]


def test_cancel(base, run_loop):
    got = []
    base.call_soon(got.append, 1)
    call = base.call_soon(got.append, "cancelled")
    base.call_soon(got.append, 2)
    call.cancel()
    assert call.cancelled() and not call.done()
    assert call.callback is None
    call.cancel()  # twice: no-op
    assert run_loop(base) is True
    assert got == [1, 2]
    assert call.cancelled() and not call.done()


def test_cancel_later_call_of_the_same_batch(base, run_loop):
    got = []
    victim = None

    def first():
        got.append("first")
        victim.cancel()

    base.call_soon(first)
    victim = base.call_soon(got.append, "victim")
    assert run_loop(base) is True
    assert got == ["first"]
    assert victim.cancelled()


def test_cancel_after_it_ran_does_nothing(base, run_loop):
    call = base.call_soon(lambda: None)
    run_loop(base)
    call.cancel()
    assert call.done() and not call.cancelled()


def test_cancelling_soon_calls_leaves_call_later_heap_alone(base, run_loop):
    # The heap drops its calls once all are cancelled: a cancelled call_soon call must not count.
    got = []
    base.call_later(0.01, got.append, "later")
    for i in range(3):
        base.call_soon(got.append, i).cancel()
    assert run_loop(base) is True
    assert got == ["later"]


def test_loop_returns_when_only_cancelled_calls_are_left(base, run_loop):
    calls = [base.call_soon(lambda: None) for _ in range(5)]
    for call in calls:
        call.cancel()
    assert run_loop(base) is True
    assert base.num_events() == 0
    assert run_loop(base, nonblock=True) is True


def test_loop_does_not_return_empty_with_calls_queued(base, run_loop):
    got = []
    base.call_soon(got.append, 1)
    assert base.num_events() > 0
    run_loop(base, nonblock=True)
    assert got == [1]
    assert base.num_events() == 0


def test_exception_stops_the_batch_and_the_rest_runs_at_next_loop(base, run_loop):
    got = []

    class Boom(Exception):
        pass

    def boom():
        got.append("boom")
        raise Boom()

    def first():
        got.append(1)
        base.call_soon(got.append, "scheduled by 1")

    base.call_soon(first)
    base.call_soon(boom)
    base.call_soon(got.append, 2)
    base.call_soon(got.append, 3)
    with pytest.raises(Boom):
        run_loop(base)
    assert got == [1, "boom"]
    assert run_loop(base) is True
    assert got == [1, "boom", 2, 3, "scheduled by 1"]


def test_loopbreak_inside_a_call(base, run_loop):
    got = []

    def breaker():
        got.append("break")
        base.loopbreak()

    base.call_soon(got.append, 1)
    base.call_soon(breaker)
    base.call_soon(got.append, 2)
    assert run_loop(base) is False
    assert base.got_break
    assert got == [1, "break"]
    assert run_loop(base) is True
    assert got == [1, "break", 2]


def test_call_soon_and_call_later_both_run(base, run_loop):
    got = []
    base.call_later(0, got.append, "later")
    base.call_soon(got.append, "soon")
    assert run_loop(base) is True
    assert sorted(got) == ["later", "soon"]


def test_call_soon_from_an_event_callback(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    Event(base, a, levent.READ, lambda fd, what: base.call_soon(got.append, "soon")).add()
    b.send(b"x")
    assert run_loop(base) is True
    assert got == ["soon"]


def test_call_soon_from_another_thread_wakes_the_loop(base, socketpair, add_guard, run_loop):
    # The loop waits on an idle fd; a call scheduled from another thread must run.
    a, b = socketpair
    idle = Event(base, a, levent.READ, lambda fd, what: None)
    idle.add()
    guard = add_guard(base)
    ran = []

    def stop():
        ran.append(threading.get_ident())
        idle.delete()
        guard.delete()

    def schedule():
        time.sleep(0.1)  # let the loop start waiting; the test passes either way
        base.call_soon(stop)

    thread = threading.Thread(target=schedule)
    thread.start()
    try:
        assert run_loop(base) is True
    finally:
        thread.join()
    assert ran == [threading.get_ident()]  # run in the loop's thread


def test_close_cancels_queued_calls(backend):
    eb = EventBase(method=backend)
    arg = type("Arg", (), {})()
    w = weakref.ref(arg)
    call = eb.call_soon(lambda a: None, arg)
    del arg
    eb.close()
    assert call.cancelled() and not call.done()
    assert call.callback is None and call.args == ()
    assert w() is None
    with pytest.raises(ValueError):
        eb.call_soon(lambda: None)


def test_bad_callback(base):
    with pytest.raises(TypeError):
        base.call_soon("not callable")
    with pytest.raises(TypeError):
        base.call_soon()
    assert base.num_events() == 0


def test_dropped_base_with_pending_call_soon_is_collected(backend):
    def make():
        eb = EventBase(method=backend)
        eb.call_soon(lambda: eb)  # a cycle through the callback
        return weakref.ref(eb)

    w = make()
    gc.collect()
    assert w() is None
