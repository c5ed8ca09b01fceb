"""Errors: exception handlers, exceptions in callbacks and protocol callbacks, debug-mode
warnings (slow callbacks) and ResourceWarnings for an unclosed loop or transport."""
import asyncio
import gc
import logging
import socket
import time
import warnings

import pytest

from .util import Recorder, run, run_forever


class Boom(Exception):
    pass


def boom(msg="boom"):
    raise Boom(msg)


class TestExceptionHandler:
    def test_set_and_get(self, loop):
        assert loop.get_exception_handler() is None

        def handler(lp, ctx):
            pass

        loop.set_exception_handler(handler)
        assert loop.get_exception_handler() is handler
        loop.set_exception_handler(None)
        assert loop.get_exception_handler() is None
        with pytest.raises(TypeError):
            loop.set_exception_handler(1)

    def test_call_exception_handler(self, loop):
        calls = []
        loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
        ctx = {"message": "custom", "extra": 1}
        loop.call_exception_handler(ctx)
        assert calls == [(loop, ctx)]

    def test_default_exception_handler_logs(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")
        try:
            boom("logged")
        except Boom as exc:
            err = exc
        loop.call_exception_handler({"message": "something failed", "exception": err})
        records = [r for r in caplog.records if r.name == "asyncio"]
        assert len(records) == 1
        r = records[0]
        assert r.levelno == logging.ERROR
        assert "something failed" in r.getMessage()
        assert r.exc_info and r.exc_info[1] is err

    def test_default_exception_handler_method(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")
        loop.set_exception_handler(lambda lp, ctx: None)
        loop.default_exception_handler({"message": "direct call", "future": None})
        assert [r.getMessage().splitlines()[0] for r in caplog.records if r.name == "asyncio"] == ["direct call"]

    def test_custom_handler_can_call_the_default(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")
        seen = []

        def handler(lp, ctx):
            seen.append(ctx["message"])
            lp.default_exception_handler(ctx)

        loop.set_exception_handler(handler)
        loop.call_exception_handler({"message": "chained"})
        assert seen == ["chained"]
        assert any("chained" in r.getMessage() for r in caplog.records if r.name == "asyncio")

    def test_handler_that_raises_is_logged(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")

        def bad_handler(lp, ctx):
            raise Boom("in the handler")

        loop.set_exception_handler(bad_handler)
        loop.call_soon(boom)
        got = []
        loop.call_soon(got.append, "after")
        run(loop, asyncio.sleep(0.01))
        assert got == ["after"]
        msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert any("Unhandled error in exception handler" in m for m in msgs), msgs


class TestCallbackExceptions:
    def test_callback_exception_goes_to_the_handler(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        got = []
        h = loop.call_soon(boom, "in call_soon")
        loop.call_soon(got.append, "next callback still runs")
        loop.call_later(0.001, boom, "in call_later")
        loop.call_later(0.002, got.append, "timer after")
        run(loop, asyncio.sleep(0.05))
        assert got == ["next callback still runs", "timer after"]
        assert [str(c["exception"]) for c in contexts] == ["in call_soon", "in call_later"]
        assert all(isinstance(c["exception"], Boom) for c in contexts)
        assert all(isinstance(c.get("message"), str) and c["message"] for c in contexts)
        assert contexts[0]["handle"] is h

    def test_run_forever_keeps_running(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        run_forever(loop)
        assert len(contexts) == 1

    def test_reader_exception_goes_to_the_handler(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)

            def reader():
                a.recv(10)
                loop.remove_reader(a)
                boom("in a reader")

            loop.add_reader(a, reader)
            b.send(b"x")
            run(loop, asyncio.sleep(0.05))
        assert [str(c["exception"]) for c in contexts] == ["in a reader"]

    @pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
    def test_system_exit_and_keyboard_interrupt_propagate(self, loop, exc_type):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        def raiser():
            raise exc_type("out")

        loop.call_soon(raiser)
        with pytest.raises(exc_type):
            run_forever(loop)
        assert contexts == []
        assert not loop.is_running()
        # the loop can run again
        assert run(loop, asyncio.sleep(0, "again")) == "again"

    def test_never_retrieved_task_exception(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        async def fails():
            boom("never retrieved")

        async def main():
            t = loop.create_task(fails())
            await asyncio.sleep(0.01)
            assert t.done()

        run(loop, main())
        gc.collect()
        assert len(contexts) == 1
        assert str(contexts[0]["exception"]) == "never retrieved"
        assert "never retrieved" in contexts[0]["message"]


class TestProtocolExceptions:
    def test_data_received_exception(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        class Bad(Recorder):
            def data_received(self, data):
                boom("in data_received")

        async def main():
            lsock = socket.socket()
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            lsock.setblocking(False)
            try:
                proto = Bad(loop)
                accept = loop.create_task(loop.sock_accept(lsock))
                tr, _ = await loop.create_connection(lambda: proto, *lsock.getsockname())
                conn, _ = await accept
                with conn:
                    await loop.sock_sendall(conn, b"trigger")
                    exc = await proto.lost
                    # the transport was closed: the peer sees EOF
                    assert await loop.sock_recv(conn, 10) == b""
                return exc, tr, proto
            finally:
                lsock.close()

        exc, tr, proto = run(loop, main())
        assert isinstance(exc, Boom)
        assert len(contexts) == 1
        ctx = contexts[0]
        assert ctx["exception"] is exc
        assert ctx.get("transport") is tr
        assert ctx.get("protocol") is proto
        assert tr.is_closing()


class TestDebugMode:
    def test_slow_callback_warning(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        assert loop.slow_callback_duration == 0.05

        def slow():
            time.sleep(0.1)

        loop.call_soon(slow)
        run(loop, asyncio.sleep(0.01))
        warnings_ = [r for r in caplog.records
                     if r.name == "asyncio" and r.levelno == logging.WARNING and "took" in r.getMessage()]
        # asyncio's wording: "Executing <Handle slow() ...> took 0.100 seconds"
        assert len(warnings_) == 1, [r.getMessage() for r in caplog.records]
        assert "slow" in warnings_[0].getMessage()

    def test_no_slow_callback_warning_outside_debug_mode(self, loop, caplog):
        caplog.set_level(logging.DEBUG, logger="asyncio")
        loop.slow_callback_duration = 0.01
        loop.call_soon(time.sleep, 0.05)
        run(loop, asyncio.sleep(0.01))
        assert [r for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()] == []


class TestResourceWarnings:
    def test_unclosed_loop(self, loop_factory):
        lp = loop_factory()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del lp
            gc.collect()
        resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert resource, "no ResourceWarning for an event loop dropped without close()"
        assert any("unclosed" in str(w.message) for w in resource)

    def test_closed_loop_does_not_warn(self, loop_factory):
        lp = loop_factory()
        lp.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del lp
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []

    def test_unclosed_transport(self, loop):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)

        async def main():
            proto = asyncio.Protocol()
            accept = loop.create_task(loop.sock_accept(lsock))
            tr, _ = await loop.create_connection(lambda: proto, *lsock.getsockname())
            conn, _ = await accept
            tr.pause_reading()  # nothing in the loop waits for it now
            await asyncio.sleep(0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                del tr, proto
                gc.collect()
            # the socket was closed with the transport: the peer sees EOF
            eof = await loop.sock_recv(conn, 10)
            conn.close()
            return caught, eof

        try:
            caught, eof = run(loop, main())
        finally:
            lsock.close()
        resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert resource, "no ResourceWarning for a transport dropped without close()"
        assert any("unclosed transport" in str(w.message) for w in resource)
        assert eof == b""
