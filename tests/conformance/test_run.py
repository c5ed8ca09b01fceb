"""levent.run(main()) has asyncio.run's semantics (each test runs asyncio.run on the asyncio side);
loop_factory= of asyncio.run (3.12+) and asyncio.Runner (3.11+)."""
import asyncio
import concurrent.futures
import threading

import pytest

import levent

from .util import PY311, PY312, TEST_TIMEOUT, open_fds, watchdog


@pytest.fixture
def run_func(loop_kind):
    """asyncio.run or levent.run."""
    if loop_kind == "asyncio":
        return asyncio.run
    func = getattr(levent, "run", None)
    if func is None:
        pytest.fail("levent.run does not exist (yet)", pytrace=False)
    return func


def bounded(coro):
    return asyncio.wait_for(coro, TEST_TIMEOUT)


class Boom(Exception):
    pass


class TestRun:
    def test_returns_the_result_and_closes_the_loop(self, run_func):
        loops = []

        async def main():
            loops.append(asyncio.get_running_loop())
            await asyncio.sleep(0)
            return "result"

        assert run_func(bounded(main())) == "result"
        assert loops[0].is_closed()
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()

    def test_loop_kind(self, run_func, loop_factory):
        async def main():
            return type(asyncio.get_running_loop())

        assert run_func(bounded(main())) is type(loop_factory_loop(loop_factory))

    def test_raises_the_exception(self, run_func):
        async def main():
            raise Boom("from main")

        with pytest.raises(Boom, match="from main"):
            run_func(bounded(main()))

    def test_cancels_leftover_tasks(self, run_func):
        events = []

        async def leftover():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            finally:
                events.append("finally")

        async def main():
            asyncio.get_running_loop().create_task(leftover())
            await asyncio.sleep(0.01)
            return "done"

        assert run_func(bounded(main())) == "done"
        assert events == ["cancelled", "finally"]

    def test_leftover_task_exception_reported(self, run_func):
        contexts = []

        async def fails_on_cancel():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                raise Boom("while cancelled")

        async def main():
            asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: contexts.append(ctx))
            asyncio.get_running_loop().create_task(fails_on_cancel())
            await asyncio.sleep(0.01)

        run_func(bounded(main()))
        assert len(contexts) == 1
        assert isinstance(contexts[0]["exception"], Boom)

    def test_shuts_down_asyncgens(self, run_func):
        closed = []
        keep = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                closed.append(True)

        async def main():
            g = agen()
            keep.append(g)
            await g.__anext__()

        run_func(bounded(main()))
        assert closed == [True]

    def test_shuts_down_the_default_executor(self, run_func):
        threads = []

        async def main():
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: threads.append(threading.current_thread()))

        run_func(bounded(main()))
        threads[0].join(TEST_TIMEOUT)
        assert not threads[0].is_alive()

    def test_debug_flag(self, run_func):
        async def main():
            return asyncio.get_running_loop().get_debug()

        assert run_func(bounded(main()), debug=True) is True
        assert run_func(bounded(main()), debug=False) is False

    def test_refuses_a_non_coroutine(self, run_func):
        with pytest.raises((ValueError, TypeError)):
            run_func(lambda: None)

    def test_refused_inside_a_running_loop(self, run_func):
        async def inner():
            pass

        async def main():
            c = inner()
            try:
                with pytest.raises(RuntimeError, match="running event loop"):
                    run_func(c)
            finally:
                c.close()
            return "ok"

        assert run_func(bounded(main())) == "ok"

    def test_no_fd_leak(self, run_func):
        async def handler(reader, writer):
            writer.close()

        async def main():
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            async with server:
                r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
                assert await r.read() == b""
                w.close()
                await w.wait_closed()

        run_func(bounded(main()))  # warm-up: imports, executor machinery
        before = len(open_fds())
        for _ in range(5):
            run_func(bounded(main()))
        assert len(open_fds()) <= before


def loop_factory_loop(factory):
    lp = factory()
    lp.close()
    return lp


@pytest.mark.skipif(not PY312, reason="asyncio.run(loop_factory=) is new in Python 3.12")
class TestLoopFactory:
    def test_run_with_loop_factory(self, loop_factory):
        made = []

        def factory():
            lp = loop_factory()
            made.append(lp)
            return lp

        async def main():
            return asyncio.get_running_loop()

        assert asyncio.run(bounded(main()), loop_factory=factory) is made[0]
        assert made[0].is_closed()


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in Python 3.11")
class TestRunner:
    def test_runner_with_loop_factory(self, loop_factory):
        made = []

        def factory():
            lp = loop_factory()
            made.append(lp)
            return lp

        async def main(x):
            await asyncio.sleep(0)
            return x, asyncio.get_running_loop()

        with asyncio.Runner(loop_factory=factory, debug=True) as runner:
            lp = runner.get_loop()
            assert lp is made[0]
            assert lp.get_debug()
            assert runner.run(bounded(main(1))) == (1, lp)
            assert runner.run(bounded(main(2))) == (2, lp)  # the same loop, twice
        assert lp.is_closed()
        assert len(made) == 1
