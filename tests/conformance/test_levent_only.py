"""levent's own promises on top of asyncio's (levent only, no asyncio counterpart): the loop is a
levent.EventLoop whose ``base`` is a levent.EventBase, and raw Events, Timers and BufferEvents on
that base run alongside asyncio code in the same loop; EventLoopPolicy, install() and run()."""
import asyncio
import socket

import pytest

import levent

from .util import run


@pytest.fixture
def lloop():
    factory = getattr(levent, "new_event_loop", None)
    if factory is None:
        pytest.fail("levent.new_event_loop does not exist (yet)", pytrace=False)
    lp = factory()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.close()


@pytest.fixture
def restore_policy():
    saved = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


class TestLeventLoop:
    def test_types(self, lloop):
        assert isinstance(lloop, levent.EventLoop)
        assert isinstance(lloop, asyncio.AbstractEventLoop)
        assert isinstance(lloop.base, levent.EventBase)
        assert not lloop.base.closed

    def test_each_loop_has_its_own_base(self, lloop):
        other = levent.new_event_loop()
        try:
            assert other.base is not lloop.base
        finally:
            other.close()

    def test_raw_timer_beside_coroutines(self, lloop):
        order = []

        async def main():
            fut = lloop.create_future()

            def fired():
                order.append("raw timer")
                fut.set_result(asyncio.get_running_loop())

            timer = levent.Timer(lloop.base, fired)
            timer.add(0.02)
            lloop.call_later(0.01, order.append, "asyncio timer")
            try:
                return await fut
            finally:
                timer.close()

        assert run(lloop, main()) is lloop
        assert order == ["asyncio timer", "raw timer"]

    def test_raw_event_on_a_socketpair(self, lloop, pair):
        a, b = pair

        async def main():
            fut = lloop.create_future()

            def readable(fd, what):
                fut.set_result((fd, bool(what & levent.READ), a.recv(100)))

            ev = levent.Event(lloop.base, a.fileno(), levent.READ, readable)
            ev.add()
            try:
                await lloop.sock_sendall(b, b"from asyncio")
                return await fut
            finally:
                ev.close()

        assert run(lloop, main()) == (a.fileno(), True, b"from asyncio")

    def test_buffer_event_echo_driven_by_sock_coroutines(self, lloop, pair):
        a, b = pair

        async def main():
            bev = levent.BufferEvent(lloop.base, a)
            bev.on_read = lambda be: be.write(be.read().upper())
            bev.enable(levent.READ)
            try:
                await lloop.sock_sendall(b, b"shout")
                got = b""
                while len(got) < 5:
                    got += await lloop.sock_recv(b, 100)
                return got
            finally:
                bev.abort()

        assert run(lloop, main()) == b"SHOUT"

    def test_base_closed_with_the_loop(self, lloop):
        base = lloop.base
        lloop.close()
        assert base.closed


class TestPolicyAndRun:
    def test_event_loop_policy(self, restore_policy):
        asyncio.set_event_loop_policy(levent.EventLoopPolicy())
        lp = asyncio.new_event_loop()
        try:
            assert isinstance(lp, levent.EventLoop)
        finally:
            lp.close()

    def test_install(self, restore_policy):
        levent.install()
        assert isinstance(asyncio.get_event_loop_policy(), levent.EventLoopPolicy)

        async def main():
            return type(asyncio.get_running_loop())

        assert asyncio.run(asyncio.wait_for(main(), 10)) is levent.EventLoop

    def test_run_uses_an_event_loop(self):
        async def main():
            return type(asyncio.get_running_loop())

        assert levent.run(asyncio.wait_for(main(), 10)) is levent.EventLoop
