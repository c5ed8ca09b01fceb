"""I/O watchers: add_reader, remove_reader, add_writer, remove_writer on socketpairs."""
import asyncio

import pytest

from .util import run


class TestReaders:
    def test_reader_called_with_args(self, loop, socketpair):
        a, b = socketpair
        fut = loop.create_future()

        def on_readable(tag, extra):
            fut.set_result((tag, extra, a.recv(100)))
            loop.remove_reader(a.fileno())

        loop.add_reader(a.fileno(), on_readable, "tag", 2)
        b.send(b"hello")
        assert run(loop, fut) == ("tag", 2, b"hello")

    def test_fd_as_object_with_fileno(self, loop, socketpair):
        a, b = socketpair
        fut = loop.create_future()
        loop.add_reader(a, lambda: fut.done() or fut.set_result(a.recv(10)))
        b.send(b"x")
        assert run(loop, fut) == b"x"
        # the same fd, given as an int, is the same registration
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(a) is False

    def test_remove_returns_true_then_false(self, loop, socketpair):
        a, _ = socketpair
        assert loop.remove_reader(a) is False
        loop.add_reader(a, lambda: None)
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False

    def test_level_triggered(self, loop, socketpair):
        a, b = socketpair
        calls = []
        done = loop.create_future()

        def on_readable():
            calls.append(1)  # does not read: must be called again
            if len(calls) == 3:
                loop.remove_reader(a)
                done.set_result(None)

        loop.add_reader(a, on_readable)
        b.send(b"x")
        run(loop, done)
        assert len(calls) == 3

    def test_replacing_a_reader(self, loop, socketpair):
        a, b = socketpair
        got = []
        fut = loop.create_future()
        loop.add_reader(a, lambda: got.append("first"))
        loop.add_reader(a, lambda: (got.append("second"), a.recv(10), fut.done() or fut.set_result(None)))
        b.send(b"x")
        run(loop, fut)
        assert "first" not in got and got[0] == "second"
        assert loop.remove_reader(a) is True

    def test_removed_reader_is_not_called(self, loop, socketpair):
        a, b = socketpair
        got = []
        loop.add_reader(a, lambda: got.append("called"))
        assert loop.remove_reader(a)
        b.send(b"x")
        run(loop, asyncio.sleep(0.05))
        assert got == []

    def test_reader_sees_eof(self, loop, socketpair):
        a, b = socketpair
        fut = loop.create_future()
        loop.add_reader(a, lambda: fut.done() or fut.set_result(a.recv(10)))
        b.close()
        assert run(loop, fut) == b""
        loop.remove_reader(a)

    def test_invalid_fd(self, loop):
        with pytest.raises(ValueError):
            loop.add_reader(-1, lambda: None)
        with pytest.raises((ValueError, TypeError)):
            loop.add_reader("not a file", lambda: None)


class TestWriters:
    def test_writer(self, loop, socketpair):
        a, b = socketpair
        fut = loop.create_future()

        def on_writable(arg):
            a.send(b"w")
            loop.remove_writer(a)
            fut.set_result(arg)

        loop.add_writer(a, on_writable, "arg")
        assert run(loop, fut) == "arg"
        assert b.recv(10) == b"w"

    def test_remove_returns_true_then_false(self, loop, socketpair):
        a, _ = socketpair
        assert loop.remove_writer(a) is False
        loop.add_writer(a.fileno(), lambda: None)
        assert loop.remove_writer(a) is True
        assert loop.remove_writer(a.fileno()) is False

    def test_writer_waits_for_room(self, loop, socketpair):
        a, b = socketpair
        # fill the socket buffer
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass
        got = []
        fut = loop.create_future()
        loop.add_writer(a, lambda: (got.append("writable"), loop.remove_writer(a), fut.set_result(None)))
        run(loop, asyncio.sleep(0.05))
        assert got == []  # no room yet

        def drain():
            try:
                while b.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

        loop.add_reader(b, drain)
        run(loop, fut)
        assert got == ["writable"]
        loop.remove_reader(b)

    def test_reader_and_writer_on_the_same_fd(self, loop, socketpair):
        a, b = socketpair
        got = []
        readable = loop.create_future()
        loop.add_writer(a, lambda: got.append("w"))
        loop.add_reader(a, lambda: readable.done() or readable.set_result(a.recv(10)))
        b.send(b"r")
        assert run(loop, readable) == b"r"
        assert got  # the writer was called too
        # removing the writer keeps the reader
        assert loop.remove_writer(a) is True
        readable2 = loop.create_future()
        loop.add_reader(a, lambda: readable2.done() or readable2.set_result(a.recv(10)))
        n = len(got)
        b.send(b"again")
        assert run(loop, readable2) == b"again"
        assert len(got) == n
        assert loop.remove_reader(a) is True
        assert loop.remove_writer(a) is False
