"""levent's asyncio loop: what is levent's own (the EventBase underneath, the batching of call_soon,
ownership corner cases). Behaviour shared with asyncio is checked in tests/conformance/, against both
loops."""
import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

import levent
from levent import READ, Event, EventBase, Timer

from conftest import sigint_default


@pytest.fixture
def loop():
    loop = levent.new_event_loop()
    yield loop
    loop.close()


def run_briefly(loop, seconds=0.05):
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


def test_is_an_asyncio_loop_with_an_event_base(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop.base, EventBase)
    assert "EventLoop" in repr(loop)


def test_raw_levent_objects_run_on_the_loop_base_beside_asyncio_code(loop):
    a, b = socket.socketpair()
    got = []

    def readable(fd, what):
        got.append(os.read(fd, 100))
        ev.delete()

    ev = Event(loop.base, a.fileno(), READ, readable)
    ev.add()
    Timer(loop.base, b.send, b"raw").add(0.01)

    async def main():
        await asyncio.sleep(0.05)
        return "asyncio"

    assert loop.run_until_complete(main()) == "asyncio"
    assert got == [b"raw"]
    a.close()
    b.close()


def test_an_exception_in_a_raw_callback_goes_to_the_exception_handler(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    Timer(loop.base, lambda: 1 / 0).add(0)
    run_briefly(loop)
    assert len(seen) == 1 and isinstance(seen[0]["exception"], ZeroDivisionError)
    assert "levent callback" in seen[0]["message"]


def test_stop_ends_a_run_of_batches_after_the_current_one(loop):
    # The loop runs several call_soon batches per I/O poll; stop() still ends at the batch it was
    # called in, as asyncio's does.
    order = []

    def first():
        order.append("first")
        loop.call_soon(second)

    def second():
        order.append("second")
        loop.stop()
        loop.call_soon(order.append, "next run")

    loop.call_soon(first)
    loop.run_forever()
    assert order == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "next run"]


def test_a_call_soon_chain_does_not_starve_io(loop):
    # Batches run back to back for at most 16 batches / 100 µs before an I/O poll: a reader becomes
    # ready while a chain of callbacks never ends, and still runs.
    a, b = socket.socketpair()
    spins = 0
    read = []

    def spin():
        nonlocal spins
        spins += 1
        if not read and spins < 1_000_000:
            loop.call_soon(spin)
        else:
            loop.stop()

    loop.add_reader(a.fileno(), lambda: read.append(a.recv(10)))
    b.send(b"x")
    loop.call_soon(spin)
    loop.run_forever()
    loop.remove_reader(a.fileno())
    assert read == [b"x"]
    assert spins < 1_000_000
    a.close()
    b.close()


def test_a_reader_removing_itself_in_its_callback(loop):
    a, b = socket.socketpair()
    calls = []

    def readable():
        calls.append(a.recv(10))
        assert loop.remove_reader(a) is True     # drops the watcher's handle while it runs
        loop.stop()

    loop.add_reader(a, readable)
    b.send(b"once")
    loop.run_forever()
    b.send(b"twice")
    run_briefly(loop, 0.02)
    assert calls == [b"once"]
    a.close()
    b.close()


def test_a_writer_replaced_in_its_callback(loop):
    a, b = socket.socketpair()
    calls = []

    def second():
        calls.append("second")
        loop.remove_writer(a)
        loop.stop()

    def first():
        calls.append("first")
        loop.add_writer(a, second)

    loop.add_writer(a, first)
    loop.run_forever()
    assert calls == ["first", "second"]
    a.close()
    b.close()


def test_a_cancelled_timer_handle_and_a_closed_loop_free_what_they_held(loop):
    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    handle = loop.call_later(60, print, payload)
    del payload
    handle.cancel()
    gc.collect()
    assert ref() is None

    payload = Payload()
    ref = weakref.ref(payload)
    loop.call_later(60, print, payload)
    loop.call_soon(print, payload)
    del payload
    loop.close()
    gc.collect()
    assert ref() is None


def test_a_dropped_loop_is_collected():
    loop = levent.new_event_loop()
    loop.call_later(60, print)
    loop.call_soon(print)
    ref = weakref.ref(loop)
    with pytest.warns(ResourceWarning):
        del loop
        gc.collect()
    assert ref() is None


def test_create_future_after_close_and_the_closed_loop_freed_without_gc():
    # create_future() keeps {'loop': loop} for the Future constructor, a cycle with the loop:
    # close() breaks it, so a closed loop goes with its last reference, as asyncio's does.
    loop = levent.new_event_loop()
    fut = loop.create_future()
    assert type(fut) is asyncio.Future and fut.get_loop() is loop
    loop.close()
    after = loop.create_future()        # asyncio allows it on a closed loop
    assert after.get_loop() is loop and not after.done()
    del fut, after
    ref = weakref.ref(loop)
    gc.disable()
    try:
        del loop
        assert ref() is None
    finally:
        gc.enable()


def test_call_soon_threadsafe_wakes_a_waiting_loop(loop):
    woke = threading.Event()

    def from_thread():
        loop.call_soon_threadsafe(loop.stop)
        woke.set()

    loop.call_later(0.05, threading.Thread(target=from_thread).start)
    loop.call_later(30, loop.stop)   # the bound: a lost wakeup fails below instead of hanging
    started = loop.time()
    loop.run_forever()
    assert woke.is_set()
    assert loop.time() - started < 20


def test_the_gil_is_released_while_the_loop_waits(loop):
    counted = 0
    stop = threading.Event()

    def count():
        nonlocal counted
        while not stop.is_set():
            counted += 1

    thread = threading.Thread(target=count)
    thread.start()
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    stop.set()
    thread.join()
    assert counted > 1000


@pytest.mark.parametrize("body", ["await asyncio.sleep(30)", "while True:\n        await asyncio.sleep(0)"])
def test_ctrl_c_interrupts_levent_run(body):
    code = textwrap.dedent("""
        import asyncio, sys, levent
        async def main():
            print("ready", flush=True)
            {body}
        try:
            levent.run(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
    """).format(body=body)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert out.strip() == "KeyboardInterrupt"


def test_debug_mode_logs_a_slow_callback(loop, caplog):
    import time
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.02)
    with caplog.at_level("WARNING", logger="asyncio"):
        run_briefly(loop, 0.03)
    assert any("took" in r.getMessage() and "sleep" in r.getMessage() for r in caplog.records)


def test_infinite_and_nan_deadlines(loop):
    import math
    ran = []
    never = loop.call_at(math.inf, ran.append, "inf")
    assert never.when() == math.inf
    loop.call_later(-math.inf, ran.append, "-inf")
    with pytest.raises(ValueError, match="NaN"):
        loop.call_at(math.nan, ran.append, "nan")
    run_briefly(loop, 0.02)
    assert ran == ["-inf"]
    never.cancel()
    assert never.cancelled()
