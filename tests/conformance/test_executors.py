"""Executors and the resolver: run_in_executor, set_default_executor, getaddrinfo, getnameinfo
(127.0.0.1 and localhost only: no DNS query leaves the machine)."""
import asyncio
import concurrent.futures
import socket
import threading

import pytest

from .util import PY311, run


class Boom(Exception):
    pass


class TestRunInExecutor:
    def test_default_executor(self, loop):
        def work(a, b):
            return a + b, threading.current_thread()

        result, thread = run(loop, loop.run_in_executor(None, work, 2, 3))
        assert result == 5
        assert thread is not threading.current_thread()

    def test_returns_a_future(self, loop):
        fut = loop.run_in_executor(None, lambda: 1)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        assert run(loop, fut) == 1

    def test_exception(self, loop):
        def fail():
            raise Boom("in a thread")

        with pytest.raises(Boom, match="in a thread"):
            run(loop, loop.run_in_executor(None, fail))

    def test_custom_executor(self, loop):
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-pool") as ex:
            name = run(loop, loop.run_in_executor(ex, lambda: threading.current_thread().name))
        assert name.startswith("custom-pool")

    def test_set_default_executor(self, loop):
        ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="my-default")
        try:
            loop.set_default_executor(ex)
            name = run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
            assert name.startswith("my-default")
        finally:
            run(loop, loop.shutdown_default_executor())
        # shutdown_default_executor shut down the executor we set
        with pytest.raises(RuntimeError):
            ex.submit(lambda: None)

    @pytest.mark.skipif(not PY311, reason="before 3.11 asyncio only warns (DeprecationWarning)")
    def test_set_default_executor_refuses_other_executors(self, loop):
        with concurrent.futures.ProcessPoolExecutor(1) as ex:
            with pytest.raises(TypeError):
                loop.set_default_executor(ex)

    def test_many_calls_concurrently(self, loop):
        async def main():
            return await asyncio.gather(*[loop.run_in_executor(None, pow, i, 2) for i in range(50)])

        assert run(loop, main()) == [i * i for i in range(50)]


class TestResolver:
    def test_getaddrinfo_numeric(self, loop):
        got = run(loop, loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
        assert got == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        assert got[0][4] == ("127.0.0.1", 80)

    def test_getaddrinfo_localhost(self, loop):
        got = run(loop, loop.getaddrinfo("localhost", 8080, family=socket.AF_INET,
                                         type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP))
        expected = socket.getaddrinfo("localhost", 8080, socket.AF_INET, socket.SOCK_STREAM,
                                      socket.IPPROTO_TCP)
        assert sorted(got) == sorted(expected)

    def test_getaddrinfo_flags(self, loop):
        got = run(loop, loop.getaddrinfo("127.0.0.1", "80", type=socket.SOCK_DGRAM,
                                         flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        assert got == socket.getaddrinfo("127.0.0.1", "80", type=socket.SOCK_DGRAM,
                                         flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)

    def test_getaddrinfo_error(self, loop):
        with pytest.raises(socket.gaierror):
            run(loop, loop.getaddrinfo("127.0.0.1", "no-such-service-levent",
                                       flags=socket.AI_NUMERICHOST))

    def test_getnameinfo(self, loop):
        got = run(loop, loop.getnameinfo(("127.0.0.1", 80),
                                         socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
        assert got == ("127.0.0.1", "80")
        got = run(loop, loop.getnameinfo(("127.0.0.1", 8080)))
        assert got == socket.getnameinfo(("127.0.0.1", 8080), 0)
