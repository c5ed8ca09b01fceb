"""Running and stopping the loop: run_until_complete, run_forever, stop, close, is_running,
is_closed, time(), shutdown_asyncgens, shutdown_default_executor, use after close."""
import asyncio
import gc
import socket
import sys
import threading
import time

import pytest

from .util import TEST_TIMEOUT, run, run_forever, xfail_asyncio


class Boom(Exception):
    pass


class TestRunUntilComplete:
    def test_returns_the_coroutine_result(self, loop):
        async def main():
            await asyncio.sleep(0)
            assert asyncio.get_running_loop() is loop
            return 42

        assert loop.run_until_complete(main()) == 42
        assert not loop.is_running()

    def test_returns_a_future_result(self, loop):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "x")
        assert run(loop, fut) == "x"

    def test_raises_the_exception(self, loop):
        async def main():
            await asyncio.sleep(0)
            raise Boom("from main")

        with pytest.raises(Boom, match="from main"):
            run(loop, main())
        # the loop is usable afterwards
        assert run(loop, asyncio.sleep(0, "again")) == "again"
        assert not loop.is_running()

    def test_refuses_a_future_of_another_loop(self, loop, new_loop):
        other = new_loop()
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
        assert not loop.is_running()

    def test_stopped_before_the_future_is_done(self, loop):
        fut = loop.create_future()
        loop.call_soon(loop.stop)
        with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
            loop.run_until_complete(fut)
        assert not fut.done()

    def test_refuses_to_run_inside_itself(self, request, loop):
        xfail_asyncio(request, sys.version_info[:2] == (3, 13),
                      "3.13's run_forever() runs its cleanup even when its setup refused to run, "
                      "so a refused nested call clears _thread_id and the running loop "
                      "(is_running() is False inside the loop)", strict=False)

        async def main():
            coro = asyncio.sleep(0)
            try:
                with pytest.raises(RuntimeError, match="already running"):
                    loop.run_until_complete(coro)
            finally:
                coro.close()
            assert loop.is_running() and asyncio.get_running_loop() is loop
            with pytest.raises(RuntimeError, match="already running"):
                loop.run_forever()
            # the refused calls left the running loop as it was
            assert loop.is_running(), "is_running() is False inside the running loop"
            assert asyncio._get_running_loop() is loop
            return "ok"

        assert run(loop, main()) == "ok"

    def test_refuses_to_run_inside_another_running_loop(self, loop, new_loop):
        other = new_loop()

        async def main():
            coro = asyncio.sleep(0)
            try:
                with pytest.raises(RuntimeError, match="another loop is running"):
                    other.run_until_complete(coro)
            finally:
                coro.close()
            return "ok"

        assert run(loop, main()) == "ok"
        assert not other.is_running()


class TestStop:
    def test_stop_inside_a_callback_finishes_the_current_batch(self, loop):
        order = []

        def a():
            order.append("a")
            loop.stop()
            loop.call_soon(c)

        loop.call_soon(a)
        loop.call_soon(order.append, "b")

        def c():
            order.append("c")

        run_forever(loop)
        assert order == ["a", "b"]
        # c was scheduled during the last batch: the next run runs it
        loop.stop()
        run_forever(loop)
        assert order == ["a", "b", "c"]

    def test_stop_before_run_forever_runs_one_iteration(self, loop):
        order = []

        def a():
            order.append("a")
            loop.call_soon(order.append, "later")

        loop.call_soon(a)
        loop.stop()
        run_forever(loop)
        assert order == ["a"]
        assert not loop.is_running()
        run(loop, asyncio.sleep(0))
        assert order == ["a", "later"]

    def test_stop_before_run_forever_polls_io_once(self, loop):
        r, w = socket.socketpair()
        try:
            r.setblocking(False)
            w.send(b"x")
            got = []
            loop.add_reader(r, lambda: got.append(r.recv(10)))
            loop.stop()
            run_forever(loop)
            assert got == [b"x"]
            assert loop.remove_reader(r)
        finally:
            r.close()
            w.close()

    def test_stop_twice_then_run_again(self, loop):
        loop.stop()
        loop.stop()
        run_forever(loop)
        # the stop request was consumed: run_until_complete runs to completion
        assert run(loop, asyncio.sleep(0.01, "done")) == "done"


class TestState:
    def test_is_running(self, loop):
        assert not loop.is_running()
        seen = []

        async def main():
            seen.append(loop.is_running())
            loop.call_soon(lambda: seen.append(loop.is_running()))
            await asyncio.sleep(0)

        run(loop, main())
        assert seen == [True, True]
        assert not loop.is_running()

        loop.call_soon(lambda: seen.append(loop.is_running()))
        loop.call_soon(loop.stop)
        run_forever(loop)
        assert seen == [True, True, True]
        assert not loop.is_running()

    def test_close_twice(self, loop):
        assert not loop.is_closed()
        loop.close()
        assert loop.is_closed()
        loop.close()
        assert loop.is_closed()

    def test_close_while_running_raises(self, loop):
        async def main():
            with pytest.raises(RuntimeError):
                loop.close()
            return loop.is_closed()

        assert run(loop, main()) is False
        assert not loop.is_closed()

    def test_get_debug_set_debug(self, loop):
        loop.set_debug(True)
        assert loop.get_debug() is True
        loop.set_debug(False)
        assert loop.get_debug() is False

    def test_get_running_loop_outside(self, loop):
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        run(loop, asyncio.sleep(0))
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()


class TestUseAfterClose:
    def test_scheduling_refused(self, loop):
        loop.close()
        cb = lambda: None  # noqa: E731
        for what, call in [
            ("call_soon", lambda: loop.call_soon(cb)),
            ("call_later", lambda: loop.call_later(0.01, cb)),
            ("call_at", lambda: loop.call_at(loop.time() + 0.01, cb)),
            ("call_soon_threadsafe", lambda: loop.call_soon_threadsafe(cb)),
            ("run_in_executor", lambda: loop.run_in_executor(None, cb)),
            ("run_forever", lambda: loop.run_forever()),
        ]:
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                call()
                pytest.fail(f"{what} on a closed loop did not raise")

    def test_create_task_refused(self, loop):
        loop.close()

        async def coro():
            pass

        c = coro()
        try:
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                loop.create_task(c)
        finally:
            c.close()

    def test_run_until_complete_refused(self, loop):
        loop.close()

        async def coro():
            pass

        c = coro()
        try:
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                loop.run_until_complete(c)
        finally:
            c.close()

    def test_add_reader_refused(self, loop):
        loop.close()
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                loop.add_reader(a, lambda: None)
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                loop.add_writer(a, lambda: None)


class TestTime:
    def test_monotonic(self, loop):
        last = loop.time()
        for _ in range(1000):
            now = loop.time()
            assert now >= last
            last = now
        assert isinstance(last, float)

    def test_advances_with_real_time(self, loop):
        t0 = loop.time()
        time.sleep(0.05)
        assert loop.time() - t0 >= 0.05 - 0.001

    def test_consistent_with_call_at(self, loop):
        seen = []
        when = loop.time() + 0.05
        fut = loop.create_future()

        def cb():
            seen.append(loop.time())
            fut.set_result(None)

        loop.call_at(when, cb)
        run(loop, fut)
        assert seen[0] >= when


class TestShutdown:
    def test_shutdown_asyncgens_closes_suspended_generators(self, loop):
        closed = []
        keep = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                closed.append("closed")

        async def main():
            g = agen()
            keep.append(g)
            assert await g.__anext__() == 1

        run(loop, main())
        assert closed == []
        run(loop, loop.shutdown_asyncgens())
        assert closed == ["closed"]

    def test_asyncgen_finalizer_runs_on_the_loop(self, loop):
        closed = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                closed.append(asyncio.get_running_loop())

        async def main():
            g = agen()
            assert await g.__anext__() == 1
            del g
            gc.collect()
            for _ in range(10):
                if closed:
                    break
                await asyncio.sleep(0)

        run(loop, main())
        assert closed == [loop]

    def test_shutdown_default_executor(self, loop):
        threads = []

        def work():
            threads.append(threading.current_thread())
            return 7

        assert run(loop, loop.run_in_executor(None, work)) == 7
        assert threads[0] is not threading.current_thread()
        run(loop, loop.shutdown_default_executor())
        threads[0].join(TEST_TIMEOUT)
        assert not threads[0].is_alive()
        with pytest.raises(RuntimeError, match="shutdown"):
            loop.run_in_executor(None, work)

    def test_shutdown_default_executor_unused(self, loop):
        assert run(loop, loop.shutdown_default_executor()) is None
