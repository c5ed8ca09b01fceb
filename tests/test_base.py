"""EventBase: module info, configuration, loop control, time, counters, iteration, closing."""
import gc
import re
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import levent
from levent import Event, EventBase, Feature, Timer

# Float rounding, and libevent's microsecond timevals (a deadline may be truncated by < 1 us).
EPS = 2e-6


# ---------------------------------------------------------------------------------------------------
# Module-level information


def test_libevent_version():
    v = levent.libevent_version()
    assert isinstance(v, levent.LibeventVersion)
    assert isinstance(v, tuple) and len(v) == 2
    assert v == (v.string, v.number)
    assert isinstance(v.string, str) and isinstance(v.number, int)
    major, minor, patch = v.number >> 24, (v.number >> 16) & 0xFF, (v.number >> 8) & 0xFF
    assert major == 2
    assert minor >= 1
    # The string and the number describe the same release.
    assert v.string.startswith(f"{major}.{minor}.{patch}"), (v.string, hex(v.number))


def test_supported_methods():
    methods = levent.supported_methods()
    assert isinstance(methods, list)
    assert methods, "libevent reports no backend"
    assert all(isinstance(m, str) and m for m in methods)
    assert len(set(methods)) == len(methods)
    # select and poll exist on every Linux/BSD libevent build.
    assert "select" in methods or "poll" in methods
    # Calling it twice gives the same answer (and a new list each time).
    again = levent.supported_methods()
    assert again == methods
    again.append("bogus")
    assert "bogus" not in levent.supported_methods()


def test_version_attribute():
    from levent import _version

    assert isinstance(levent.__version__, str)
    assert levent.__version__ == _version.__version__
    assert re.match(r"^\d+\.\d+(\.\d+)?([ab]|rc|\.dev|\.post)?\d*", levent.__version__)


def test_constants():
    # libevent's EV_* values (event2/event.h); they are part of its ABI.
    assert levent.TIMEOUT == 0x01
    assert levent.READ == 0x02
    assert levent.WRITE == 0x04
    assert levent.SIGNAL == 0x08
    assert levent.PERSIST == 0x10
    assert levent.ET == 0x20
    assert levent.CLOSED == 0x80
    assert levent.MAX_PRIORITIES == 255  # event_base_priority_init takes < EVENT_MAX_PRIORITIES (256)
    for name in ("TIMEOUT", "READ", "WRITE", "SIGNAL", "PERSIST", "ET", "CLOSED", "MAX_PRIORITIES"):
        assert type(getattr(levent, name)) is int, name


def test_feature_flags():
    assert issubclass(Feature, int)
    assert {f.name for f in Feature} >= {"ET", "O1", "FDS", "EARLY_CLOSE"}
    assert (Feature.ET, Feature.O1, Feature.FDS, Feature.EARLY_CLOSE) == (1, 2, 4, 8)
    assert isinstance(Feature.ET | Feature.O1, Feature)


def test_all_exports():
    for name in levent.__all__:
        assert hasattr(levent, name), name
    for name in ("EventBase", "Event", "Timer", "Signal", "Feature", "libevent_version",
                 "supported_methods"):
        assert name in levent.__all__
    assert issubclass(levent.Timer, levent.Event)
    assert issubclass(levent.Signal, levent.Event)


# ---------------------------------------------------------------------------------------------------
# Configuration


def test_method_and_features(base, backend):
    assert base.method == backend
    feats = base.features
    assert isinstance(feats, Feature)
    # libevent 2.1's backend tables (epoll.c, poll.c, select.c).
    expected = {
        "epoll": Feature.ET | Feature.O1 | Feature.EARLY_CLOSE,
        "poll": Feature.FDS | Feature.EARLY_CLOSE,
        "select": Feature.FDS,
    }[backend]
    assert feats == expected
    assert base.priorities == 1
    assert not base.closed
    assert not base.running


def test_default_base_uses_a_supported_method():
    with EventBase() as b:
        assert b.method in levent.supported_methods()
        assert isinstance(b.features, Feature)


@pytest.mark.parametrize("method", ["epoll", "poll", "select"])
def test_every_supported_method_can_be_chosen(method):
    if method not in levent.supported_methods():
        pytest.skip(f"{method} is not supported by this libevent")
    with EventBase(method=method) as b:
        assert b.method == method


def test_avoid():
    methods = levent.supported_methods()
    first = methods[0]
    if len(methods) < 2:
        pytest.skip("only one backend available; nothing to avoid")
    with EventBase(avoid=(first,)) as b:
        assert b.method != first
        assert b.method in methods
    with EventBase(avoid=list(methods[:-1])) as b:
        assert b.method == methods[-1]


def test_avoid_everything_is_value_error():
    with pytest.raises(ValueError):
        EventBase(avoid=tuple(levent.supported_methods()))


def test_require_et_gives_epoll():
    if "epoll" not in levent.supported_methods():
        pytest.skip("epoll is not supported by this libevent")
    with EventBase(require=Feature.ET) as b:
        assert b.method == "epoll"
        assert b.features & Feature.ET
    with EventBase(require=Feature.EARLY_CLOSE) as b:
        assert b.features & Feature.EARLY_CLOSE
    with EventBase(method="epoll", require=Feature.ET | Feature.O1) as b:
        assert b.method == "epoll"
    # An int works as well as a Feature.
    with EventBase(require=int(Feature.ET)) as b:
        assert b.method == "epoll"


@pytest.mark.parametrize("method", ["poll", "select"])
def test_unsatisfiable_config_is_value_error(method):
    if method not in levent.supported_methods():
        pytest.skip(f"{method} is not supported by this libevent")
    with pytest.raises(ValueError):
        EventBase(method=method, require=Feature.ET)
    with pytest.raises(ValueError):
        EventBase(method=method, require=Feature.O1)
    if method == "select":  # select has no POLLRDHUP; libevent's poll backend does
        with pytest.raises(ValueError):
            EventBase(method=method, require=Feature.EARLY_CLOSE)


def test_unsatisfiable_require_with_avoid():
    with pytest.raises(ValueError):
        EventBase(avoid=("epoll",), require=Feature.ET | Feature.FDS)


@pytest.mark.parametrize("name", ["nonexistent-backend", "kqueue-typo", "", "EPOLL "])
def test_unknown_method_is_value_error(name):
    with pytest.raises(ValueError):
        EventBase(method=name)


def test_method_not_available_here_is_value_error():
    for name in ("kqueue", "devpoll", "evport", "win32"):
        if name not in levent.supported_methods():
            with pytest.raises(ValueError):
                EventBase(method=name)
            return
    pytest.skip("every exotic backend is available here")


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        EventBase("select")


@pytest.mark.parametrize("n", [1, 2, 3, 16, 255])
def test_priorities(n, backend):
    with EventBase(method=backend, priorities=n) as b:
        assert b.priorities == n
        ev = Timer(b, lambda: None)
        ev.priority = n - 1
        assert ev.priority == n - 1
        ev.priority = 0
        assert ev.priority == 0


@pytest.mark.parametrize("n", [0, -1, levent.MAX_PRIORITIES + 1, 10**6])
def test_bad_priorities(n):
    with pytest.raises(ValueError):
        EventBase(priorities=n)


def test_priorities_wrong_type():
    with pytest.raises(TypeError):
        EventBase(priorities="3")


def test_priorities_only_in_constructor(base):
    with pytest.raises(AttributeError):
        base.priorities = 4


@pytest.mark.parametrize("kwargs", [
    dict(precise_timer=False),
    dict(precise_timer=True),
    dict(nolock=True),
    dict(ignore_env=True),
    dict(no_cache_time=True),
    dict(epoll_use_changelist=True),
    dict(max_dispatch_interval=0.01),
    dict(max_dispatch_callbacks=5),
    dict(priorities=3, min_priority=1, max_dispatch_callbacks=2),
    dict(max_dispatch_interval=0, max_dispatch_callbacks=1),
])
def test_config_options_make_a_working_base(kwargs, backend, run_loop):
    with EventBase(method=backend, **kwargs) as b:
        # libevent names epoll with a changelist "epoll (with changelist)".
        assert b.method.split()[0] == backend
        calls = []
        timers = [Timer(b, calls.append, i) for i in range(10)]
        for i, t in enumerate(timers):
            t.add(0.001 * (i % 3))
        for i in range(10, 20):
            b.call_later(0, calls.append, i)
        assert run_loop(b) is True
        assert sorted(calls) == list(range(20))


def test_max_dispatch_callbacks_bad_values():
    with pytest.raises(ValueError):
        EventBase(max_dispatch_callbacks=0)
    with pytest.raises(ValueError):
        EventBase(max_dispatch_interval=-1)


# ---------------------------------------------------------------------------------------------------
# loop() and its flags


def test_loop_on_empty_base_returns_true(base, run_loop, bounded):
    t0 = time.monotonic()
    assert run_loop(base) is True
    with bounded(base):
        assert base.dispatch() is True
    assert run_loop(base, once=True) is True
    assert run_loop(base, nonblock=True) is True
    assert time.monotonic() - t0 < 1.0
    assert not base.got_exit
    assert not base.got_break


def test_loop_returns_true_once_events_are_done(base, run_loop):
    calls = []
    Timer(base, calls.append, 1).add(0.01)
    base.call_later(0.02, calls.append, 2)
    assert run_loop(base) is True
    assert calls == [1, 2]
    assert base.num_events() == 0


def test_dispatch_runs_events(base, add_guard):
    calls = []
    Timer(base, calls.append, "t").add(0.01)
    guard = add_guard(base)
    # dispatch() is loop(): it runs until the guard is deleted, then returns True (nothing left).
    Timer(base, guard.delete).add(0.05)
    assert base.dispatch() is True
    assert calls == ["t"]


def test_loop_once(base, run_loop):
    calls = []
    Timer(base, calls.append, "first").add(0.01)
    later = Timer(base, calls.append, "later")
    later.add(5)
    t0 = time.monotonic()
    # once: wait for the first event, run what is active, return.
    assert run_loop(base, once=True) is False
    assert time.monotonic() - t0 < 2.0
    assert calls == ["first"]
    assert later.is_pending()
    later.delete()
    assert run_loop(base, once=True) is True


def test_loop_once_runs_all_active(base, run_loop):
    calls = []
    for i in range(5):
        Timer(base, calls.append, i).active()
    keep = Timer(base, lambda: None)
    keep.add(10)
    assert run_loop(base, once=True) is False
    assert sorted(calls) == [0, 1, 2, 3, 4]
    keep.delete()


def test_loop_nonblock(base, run_loop):
    calls = []
    t = Timer(base, calls.append, "late")
    t.add(1.0)
    t0 = time.monotonic()
    assert run_loop(base, nonblock=True) is False
    assert time.monotonic() - t0 < 0.5
    assert calls == []
    assert t.is_pending()
    # What is ready does run.
    Timer(base, calls.append, "now").active()
    assert run_loop(base, nonblock=True) is False
    assert calls == ["now"]
    t.delete()
    assert run_loop(base, nonblock=True) is True


def test_loop_nonblock_runs_ready_io(base, socketpair, run_loop):
    a, b = socketpair
    got = []
    ev = Event(base, a, levent.READ, lambda fd, what: got.append(what))
    ev.add()
    b.send(b"x")
    time.sleep(0.01)
    run_loop(base, nonblock=True)
    assert got == [levent.READ]


def test_loop_no_exit_on_empty(base, run_loop):
    calls = []
    Timer(base, calls.append, 1).add(0.01)
    stopper = threading.Timer(0.4, base.loopbreak)
    t0 = time.monotonic()
    stopper.start()
    try:
        result = run_loop(base, no_exit_on_empty=True)
    finally:
        stopper.cancel()
    elapsed = time.monotonic() - t0
    assert calls == [1]
    # The timer was done after ~10 ms; without no_exit_on_empty loop() would have returned then.
    assert elapsed >= 0.35, elapsed
    assert result is False
    assert base.got_break


def test_loopexit_without_delay(base, run_loop):
    calls = []

    def cb():
        calls.append(len(calls))
        base.loopexit()

    t = Timer(base, cb, persist=True)
    t.add(0.01)
    assert run_loop(base) is False
    assert calls == [0]
    assert base.got_exit
    assert not base.got_break
    assert t.is_pending()
    t.delete()


def test_loopexit_runs_the_rest_of_the_iteration(base, run_loop):
    calls = []

    def first():
        calls.append("first")
        base.loopexit()

    a = Timer(base, first)
    b = Timer(base, calls.append, "second")
    a.active()
    b.active()
    keep = Timer(base, lambda: None)
    keep.add(10)
    assert run_loop(base) is False
    # loopexit() without delay lets the current iteration finish: both ran.
    assert calls == ["first", "second"]
    assert base.got_exit
    keep.delete()


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_loopexit_with_delay(base, run_loop, delay):
    ticks = []
    t = Timer(base, lambda: ticks.append(time.monotonic()), persist=True)
    t.add(0.01)
    t0 = time.monotonic()
    base.loopexit(delay)
    assert run_loop(base) is False
    elapsed = time.monotonic() - t0
    assert elapsed >= delay - EPS, f"loop exited {delay - elapsed:.6f} s early"
    assert elapsed < delay + 3.0
    assert base.got_exit
    assert not base.got_break
    assert len(ticks) >= 2
    t.delete()


def test_loopexit_delay_zero_and_int(base, run_loop):
    keep = Timer(base, lambda: None)
    keep.add(10)
    base.loopexit(0)
    assert run_loop(base) is False
    assert base.got_exit
    base.loopexit(1)  # int seconds
    t0 = time.monotonic()
    assert run_loop(base) is False
    assert 1.0 - EPS <= time.monotonic() - t0 < 4.0
    keep.delete()


def test_loopbreak_stops_before_other_active_callbacks(base, run_loop):
    calls = []

    def first():
        calls.append("first")
        base.loopbreak()

    a = Timer(base, first)
    b = Timer(base, calls.append, "second")
    a.active()
    b.active()
    assert run_loop(base) is False
    assert calls == ["first"]
    assert base.got_break
    assert not base.got_exit
    assert b.is_pending()
    # The next loop() runs what was left.
    assert run_loop(base) is True
    assert calls == ["first", "second"]
    assert not base.got_break


def test_loopbreak_from_a_timer(base, run_loop):
    n = []

    def cb():
        n.append(1)
        if len(n) == 3:
            base.loopbreak()

    t = Timer(base, cb, persist=True)
    t.add(0.005)
    assert run_loop(base) is False
    assert len(n) == 3
    assert base.got_break
    t.delete()


def test_got_flags_reset_when_loop_starts(base, run_loop):
    keep = Timer(base, lambda: None)
    keep.add(10)
    base.loopexit()
    run_loop(base)
    assert base.got_exit and not base.got_break
    Timer(base, base.loopbreak).active()
    run_loop(base)
    assert base.got_break and not base.got_exit
    keep.delete()
    assert run_loop(base) is True
    assert not base.got_break and not base.got_exit


def test_loopcontinue(backend, socketpair, run_loop):
    # priorities: rd at 0; ev1 and ev2 at 1. ev1 writes to the socket and calls loopcontinue():
    # the rest of the active queue waits for the next iteration, whose poll makes rd active, and
    # rd (priority 0) runs before ev2. Without loopcontinue() ev2 would run right after ev1.
    a, b = socketpair
    for use_continue, expected in ((True, ["ev1", "rd", "ev2"]), (False, ["ev1", "ev2", "rd"])):
        with EventBase(method=backend, priorities=2) as eb:
            order = []

            def on_read(fd, what):
                a.recv(100)
                order.append("rd")

            def ev1_cb(use_continue=use_continue):
                order.append("ev1")
                b.send(b"x")
                if use_continue:
                    eb.loopcontinue()

            rd = Event(eb, a, levent.READ, on_read)
            rd.priority = 0
            rd.add()
            ev1 = Timer(eb, ev1_cb)
            ev2 = Timer(eb, order.append, "ev2")
            ev1.priority = 1
            ev2.priority = 1
            ev1.active()
            ev2.active()
            assert run_loop(eb) is True
            assert order == expected, (use_continue, order)


# ---------------------------------------------------------------------------------------------------
# Time


def test_cached_time(base, run_loop):
    now = time.time()
    assert abs(base.cached_time() - now) < 1.0
    seen = {}

    def cb():
        c1 = base.cached_time()
        time.sleep(0.05)
        c2 = base.cached_time()
        base.update_cache_time()
        c3 = base.cached_time()
        seen.update(c1=c1, c2=c2, c3=c3, wall=time.time())

    Timer(base, cb).add(0.001)
    run_loop(base)
    assert seen["c1"] == seen["c2"], "cached_time() changed inside one callback"
    assert seen["c3"] - seen["c1"] >= 0.04
    assert abs(seen["c3"] - seen["wall"]) < 1.0


def test_no_cache_time(backend, run_loop):
    with EventBase(method=backend, no_cache_time=True) as b:
        seen = {}

        def cb():
            c1 = b.cached_time()
            time.sleep(0.05)
            seen["d"] = b.cached_time() - c1

        Timer(b, cb).add(0)
        run_loop(b)
        assert seen["d"] >= 0.04


def test_monotonic(base, run_loop):
    m1 = base.monotonic()
    assert isinstance(m1, float)
    time.sleep(0.05)
    m2 = base.monotonic()
    assert 0.04 <= m2 - m1 < 2.0
    seen = []
    Timer(base, lambda: seen.append(base.monotonic())).add(0.01)
    run_loop(base)
    assert seen and seen[0] >= m2


# ---------------------------------------------------------------------------------------------------
# Counters, dump, running_event, iteration


def test_num_events(base, run_loop):
    assert base.num_events() == 0
    timers = [Timer(base, lambda: None) for _ in range(3)]
    for t in timers:
        t.add(10)
    assert base.num_events(active=False, virtual=False, added=True) == 3
    assert base.num_events(active=True, virtual=False, added=False) == 0
    assert base.num_events(active=False, virtual=True, added=False) == 0
    assert base.num_events() == 3
    extra = Timer(base, lambda: None)
    extra.active()
    assert base.num_events(active=True, virtual=False, added=False) == 1
    # (libevent's "added" count includes active events too.)
    assert base.num_events() >= 4
    for t in timers:
        t.delete()
    run_loop(base)
    assert base.num_events() == 0
    # The loop's own machinery is not counted.
    assert base.num_events(active=True, virtual=True, added=True) == 0


def test_max_events(base):
    assert base.max_events() == 0
    timers = [Timer(base, lambda: None) for _ in range(5)]
    for t in timers:
        t.add(10)
    assert base.max_events(active=False, virtual=False, added=True) == 5
    for t in timers:
        t.delete()
    assert base.num_events() == 0
    assert base.max_events(active=False, virtual=False, added=True) == 5
    assert base.max_events(active=False, virtual=False, added=True, clear=True) == 5
    assert base.max_events(active=False, virtual=False, added=True) == 0


def test_dump_events(base, socketpair):
    a, b = socketpair
    ev = Event(base, a, levent.READ | levent.PERSIST, lambda fd, what: None)
    ev.add()
    t = Timer(base, lambda: None)
    t.add(30)
    text = base.dump_events()
    assert isinstance(text, str)
    assert re.search(rf"\[fd\s*{a.fileno()}\]", text), text
    assert "Read" in text, text
    assert "Timeout" in text, text
    ev.delete()
    t.delete()
    assert not re.search(rf"\[fd\s*{a.fileno()}\]", base.dump_events())


def test_running_and_running_event(base, run_loop):
    seen = []

    def cb():
        seen.append((base.running, base.running_event()))

    t = Timer(base, cb)
    t.add(0)
    assert base.running_event() is None
    run_loop(base)
    assert seen == [(True, t)]
    assert not base.running


def test_running_event_after_loop_is_none(backend, child_env):
    # Run in a child: this once crashed the interpreter (libevent's event_base_get_running_event
    # dereferences a NULL current event when called outside the loop in the loop's thread).
    script = textwrap.dedent(f"""
        import levent
        b = levent.EventBase(method={backend!r})
        t = levent.Timer(b, lambda: None)
        t.add(0)
        b.loop()
        assert b.running_event() is None, b.running_event()
        t.add(0)
        b.loop()
        print("ok", b.running_event())
    """)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], env=child_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{proc.stderr}"
    assert proc.stdout.strip() == "ok None"


def test_iteration_lists_open_events(base, socketpair):
    a, b = socketpair
    e1 = Event(base, a, levent.READ, lambda fd, what: None)
    e2 = Timer(base, lambda: None)
    e2.add(10)
    e3 = Timer(base, lambda: None, persist=True)
    e3.active()
    events = list(base)
    assert set(map(id, events)) == {id(e1), id(e2), id(e3)}
    assert all(isinstance(e, Event) for e in events)
    e1.close()
    assert set(map(id, base)) == {id(e2), id(e3)}
    # A snapshot: closing events while iterating is fine.
    for e in base:
        e.close()
    assert list(base) == []
    assert base.num_events() == 0


def test_iteration_excludes_calls(base):
    # call_later() schedules onto levent's own heap, not as libevent events.
    call = base.call_later(10, lambda: None)
    assert isinstance(call, levent.Call)
    assert list(base) == []
    call.cancel()


def test_iteration_sees_dropped_pending_events(base):
    Timer(base, lambda: None).add(10)
    gc.collect()
    (ev,) = list(base)
    assert isinstance(ev, Timer)
    assert ev.is_pending()
    ev.close()


def test_repr_does_not_crash(base):
    assert isinstance(repr(base), str)
    t = Timer(base, lambda: None)
    assert isinstance(repr(t), str)
    t.close()
    base.close()
    assert isinstance(repr(base), str)
    assert isinstance(repr(t), str)


# ---------------------------------------------------------------------------------------------------
# Closing


def test_close_with_pending_events(backend, socketpair):
    a, b = socketpair
    eb = EventBase(method=backend)
    ev = Event(eb, a, levent.READ | levent.PERSIST, lambda fd, what: None)
    ev.add()
    t = Timer(eb, lambda: None)
    t.add(10)
    idle = Timer(eb, lambda: None)  # created, never added
    eb.close()
    assert eb.closed
    for e in (ev, t, idle):
        assert e.closed
        assert not e.is_pending()
        assert e.pending() == 0
        with pytest.raises(ValueError, match="closed"):
            e.add(1)
        with pytest.raises(ValueError, match="closed"):
            e.active()
        with pytest.raises(ValueError):
            e.priority = 0
        # delete() and close() on a closed Event are no-ops.
        e.delete()
        e.close()
    with pytest.raises(ValueError, match="closed"):
        eb.loop()
    with pytest.raises(ValueError, match="closed"):
        eb.loopexit()
    with pytest.raises(ValueError, match="closed"):
        eb.loopbreak()
    with pytest.raises(ValueError, match="closed"):
        Timer(eb, lambda: None)
    with pytest.raises(ValueError, match="closed"):
        Event(eb, a, levent.READ, lambda fd, what: None)
    with pytest.raises(ValueError, match="closed"):
        eb.call_later(1, lambda: None)
    with pytest.raises(ValueError):
        eb.method
    eb.close()  # twice: no-op
    # The fd itself was left alone.
    b.send(b"still open")
    time.sleep(0.01)
    assert a.recv(100) == b"still open"


def test_close_cancels_calls(backend):
    eb = EventBase(method=backend)
    got = []
    later = eb.call_later(5, got.append, 1)
    eb.close()
    assert later.cancelled()
    assert not later.done()
    assert later.callback is None
    later.cancel()  # no-op
    assert got == []


def test_close_inside_callback_is_runtime_error(base, run_loop):
    seen = []

    def cb():
        try:
            base.close()
        except RuntimeError as exc:
            seen.append(exc)
            raise

    Timer(base, cb).add(0)
    with pytest.raises(RuntimeError):
        run_loop(base)
    assert len(seen) == 1
    assert not base.closed
    # Still fully usable.
    calls = []
    Timer(base, calls.append, 1).add(0)
    assert run_loop(base) is True
    assert calls == [1]


def test_uncaught_close_in_callback_comes_out_of_loop(base, run_loop):
    # The RuntimeError from close() inside a callback, when not caught, comes out of loop().
    Timer(base, base.close).add(0)
    with pytest.raises(RuntimeError):
        run_loop(base)
    assert not base.closed


def test_context_manager(backend, run_loop):
    calls = []
    with EventBase(method=backend) as eb:
        assert isinstance(eb, EventBase)
        t = Timer(eb, calls.append, 1)
        t.add(0)
        pending = Timer(eb, calls.append, 2)
        pending.add(10)
        assert run_loop(eb, once=True) is False
    assert eb.closed
    assert t.closed and pending.closed
    assert calls == [1]


def test_context_manager_closes_on_exception(backend):
    with pytest.raises(KeyError):
        with EventBase(method=backend) as eb:
            Timer(eb, lambda: None).add(10)
            raise KeyError("x")
    assert eb.closed


def test_dropped_base_with_pending_events_is_collected(backend, socketpair):
    a, b = socketpair

    def make():
        eb = EventBase(method=backend)
        ev = Event(eb, a, levent.READ | levent.PERSIST, lambda fd, what: None)
        ev.add()
        t = Timer(eb, lambda: None, persist=True)
        t.add(10)
        eb.call_later(5, lambda: None)
        Timer(eb, lambda: None).active()
        # A cycle through a callback, too.
        t2 = Timer(eb, lambda: eb)
        t2.add(10)
        return weakref.ref(eb), weakref.ref(ev), weakref.ref(t)

    wb, wev, wt = make()
    gc.collect()
    gc.collect()
    assert wb() is None, "a dropped EventBase with pending events was never freed"
    assert wev() is None and wt() is None
    # The fd was not closed by levent.
    b.send(b"ok")
    time.sleep(0.01)
    assert a.recv(10) == b"ok"


def test_dropped_base_after_running_loop_is_collected(backend, run_loop):
    def make():
        eb = EventBase(method=backend)
        keep = Timer(eb, lambda: None)
        keep.add(10)
        Timer(eb, eb.loopbreak).add(0)
        run_loop(eb)
        return weakref.ref(eb)

    w = make()
    gc.collect()
    assert w() is None


def test_base_weakref_dies_without_gc_when_no_events(backend):
    eb = EventBase(method=backend)
    w = weakref.ref(eb)
    del eb
    assert w() is None
