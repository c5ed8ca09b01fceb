"""Pipes: connect_read_pipe / connect_write_pipe over pipes, FIFOs, ptys and sockets; EOF, write_eof,
pause/resume reading, flow control, and the reader or writer closing its end first."""
import asyncio
import errno
import hashlib
import os
import socket
import sys

import pytest

from .util import PY311, Recorder, run, xfail_asyncio

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="UNIX pipes")


@pytest.fixture
def pipe_files():
    """An os.pipe() as two unbuffered file objects (read end, write end); closed after the test."""
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    try:
        yield rf, wf
    finally:
        rf.close()
        wf.close()


def record_errors(loop):
    """Collect the contexts the loop's exception handler gets."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


def is_reading(tr):
    """tr.is_reading(); None where stdlib asyncio's read pipes lack it (before 3.11)."""
    if not PY311 and type(tr).is_reading is asyncio.ReadTransport.is_reading:
        return None
    return tr.is_reading()


async def read_all(fd, n):
    """Read ``n`` bytes from the blocking fd ``fd`` in a thread."""
    loop = asyncio.get_running_loop()

    def reader():
        chunks, got = [], 0
        while got < n:
            chunk = os.read(fd, min(1 << 16, n - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    return await loop.run_in_executor(None, reader)


class TestReadPipe:
    def test_data_then_eof(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, p = await loop.connect_read_pipe(lambda: proto, rf)
            assert p is proto
            assert isinstance(tr, asyncio.ReadTransport)
            assert not isinstance(tr, asyncio.WriteTransport)
            assert tr.get_extra_info("pipe") is rf
            assert tr.get_protocol() is proto
            assert is_reading(tr) in (True, None) and not tr.is_closing()
            wf.write(b"hello ")
            await proto.wait_data(6)
            wf.write(b"pipe")
            await proto.wait_data(10)
            wf.close()
            exc = await proto.lost
            return exc, proto.events, bytes(proto.data), tr

        exc, events, data, tr = run(loop, main())
        assert exc is None
        assert data == b"hello pipe"
        assert events == ["made", "data", "eof", "lost"]
        assert tr.is_closing()
        assert rf.closed   # the transport closed the pipe

    def test_close(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_read_pipe(lambda: proto, rf)
            tr.close()
            assert tr.is_closing() and is_reading(tr) in (False, None)
            tr.close()  # again: nothing more
            exc = await proto.lost
            await asyncio.sleep(0)
            return exc, proto.events

        exc, events = run(loop, main())
        assert exc is None
        assert events == ["made", "lost"]
        assert rf.closed

    def test_pause_and_resume_reading(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_read_pipe(lambda: proto, rf)
            tr.pause_reading()
            assert is_reading(tr) in (False, None)
            tr.pause_reading()  # again: nothing more
            wf.write(b"x" * 1000)
            # The loop polls for I/O while the timer runs: the pipe is readable, yet nothing comes.
            await asyncio.sleep(0.05)
            assert proto.data == b""
            tr.resume_reading()
            assert is_reading(tr) in (True, None)
            await proto.wait_data(1000)
            tr.close()
            await proto.lost

        run(loop, main())

    def test_paused_in_connection_made(self, loop, pipe_files, request):
        xfail_asyncio(request, not PY311, "before 3.11 a read pipe starts reading after connection_made() "
                                          "even if it paused reading")
        rf, wf = pipe_files

        class Paused(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        async def main():
            proto = Paused(loop)
            tr, _ = await loop.connect_read_pipe(lambda: proto, rf)
            try:
                wf.write(b"early")
                await asyncio.sleep(0.05)
                assert proto.data == b""
                tr.resume_reading()
                await proto.wait_data(5)
            finally:
                tr.close()
                await proto.lost

        run(loop, main())

    def test_large_transfer(self, loop, pipe_files):
        rf, wf = pipe_files
        payload = os.urandom(1 << 20) * 4

        async def main():
            proto = Recorder(loop)
            await loop.connect_read_pipe(lambda: proto, rf)
            writer = loop.run_in_executor(None, lambda: (wf.write(payload), wf.close()))
            await proto.lost
            await writer
            return bytes(proto.data)

        assert hashlib.sha256(run(loop, main())).digest() == hashlib.sha256(payload).digest()

    def test_data_received_error_is_reported_and_reading_goes_on(self, loop, pipe_files):
        rf, wf = pipe_files
        errors = record_errors(loop)

        class Failing(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if data.startswith(b"boom"):
                    raise ZeroDivisionError("boom")

        async def main():
            proto = Failing(loop)
            tr, _ = await loop.connect_read_pipe(lambda: proto, rf)
            wf.write(b"boom")
            await proto.wait_data(4)
            await asyncio.sleep(0)
            wf.write(b"more")
            await proto.wait_data(8)
            assert not tr.is_closing()
            tr.close()
            await proto.lost

        run(loop, main())
        assert len(errors) == 1
        assert isinstance(errors[0]["exception"], ZeroDivisionError)

    def test_regular_file_refused(self, loop, tmp_path):
        path = tmp_path / "regular"
        path.write_bytes(b"data")

        async def main():
            with open(path, "rb") as f:
                with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only"):
                    await loop.connect_read_pipe(asyncio.Protocol, f)
                with open(path, "wb") as g:
                    with pytest.raises(ValueError, match="Pipe transport is only for pipes, sockets "
                                                         "and character devices"):
                        await loop.connect_write_pipe(asyncio.Protocol, g)

        run(loop, main())

    def test_fifo(self, loop, tmp_path):
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

        async def main():
            reader = Recorder(loop)
            writer = Recorder(loop)
            rtr, _ = await loop.connect_read_pipe(lambda: reader, rf)
            wtr, _ = await loop.connect_write_pipe(lambda: writer, wf)
            payload = b"through a fifo" * 10000
            wtr.write(payload)
            wtr.write_eof()
            assert wtr.is_closing()
            assert await writer.lost is None
            assert await reader.lost is None
            return bytes(reader.data), reader.events

        try:
            data, events = run(loop, main())
        finally:
            rf.close()
            wf.close()
        assert data == b"through a fifo" * 10000
        assert events == ["made", "data", "eof", "lost"]

    def test_pty(self, loop):
        pty = pytest.importorskip("pty")
        tty = pytest.importorskip("tty")
        master, slave = pty.openpty()
        tty.setraw(slave)
        mf = os.fdopen(master, "rb", 0)
        wf = os.fdopen(os.dup(master), "wb", 0)
        errors = record_errors(loop)

        async def main():
            reader = Recorder(loop)
            writer = Recorder(loop)
            rtr, _ = await loop.connect_read_pipe(lambda: reader, mf)
            wtr, _ = await loop.connect_write_pipe(lambda: writer, wf)
            os.write(slave, b"from the slave")
            await reader.wait_data(14)
            wtr.write(b"to the slave")
            got = await read_all(slave, 12)
            wtr.close()
            assert await writer.lost is None
            # The slave side closes: reading the master fails with EIO on Linux, which ends the
            # transport (connection_lost(EIO)) without bothering the exception handler.
            os.close(slave)
            exc = await reader.lost
            return got, exc, reader.events

        try:
            got, exc, events = run(loop, main())
        finally:
            mf.close()
            wf.close()
            try:
                os.close(slave)
            except OSError:
                pass
        assert got == b"to the slave"
        if sys.platform.startswith("linux"):
            assert isinstance(exc, OSError) and exc.errno == errno.EIO
            assert events == ["made", "data", "lost"]
        assert errors == []


class TestWritePipe:
    def test_write_and_write_eof(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            assert isinstance(tr, asyncio.WriteTransport)
            assert tr.get_extra_info("pipe") is wf
            assert tr.can_write_eof()
            tr.write(b"bytes ")
            tr.write(bytearray(b"bytearray "))
            tr.write(memoryview(b"memoryview"))
            tr.write(b"")
            assert tr.get_write_buffer_size() == 0
            tr.write_eof()
            assert tr.is_closing()
            assert await proto.lost is None
            tr.write(b"dropped")  # after write_eof: silently dropped, as asyncio does
            return await read_all(rf.fileno(), 100)

        assert run(loop, main()) == b"bytes bytearray memoryview"
        assert wf.closed

    def test_flow_control(self, loop, pipe_files):
        rf, wf = pipe_files
        chunk = os.urandom(1 << 16)
        total = 64

        class Writer(Recorder):
            def __init__(self, loop):
                super().__init__(loop)
                self.can_write = asyncio.Event()
                self.can_write.set()

            def pause_writing(self):
                super().pause_writing()
                self.can_write.clear()

            def resume_writing(self):
                super().resume_writing()
                self.can_write.set()

        async def main():
            proto = Writer(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            tr.set_write_buffer_limits(high=4 * 65536, low=65536)
            assert tr.get_write_buffer_limits() == (65536, 4 * 65536)
            reader = asyncio.ensure_future(read_all(rf.fileno(), len(chunk) * total))
            digest = hashlib.sha256()
            for _ in range(total):
                await proto.can_write.wait()
                tr.write(chunk)
                digest.update(chunk)
                assert tr.get_write_buffer_size() <= 4 * 65536 + len(chunk)
            tr.close()
            await proto.lost
            data = await reader
            return digest.digest(), hashlib.sha256(data).digest(), proto

        want, got, proto = run(loop, main())
        assert want == got
        assert proto.paused >= 1 and proto.resumed >= 1
        assert proto.size_at_pause > 4 * 65536
        assert proto.size_at_resume <= 65536

    def test_buffer_limits_defaults_and_checks(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            tr, _ = await loop.connect_write_pipe(asyncio.Protocol, wf)
            assert tr.get_write_buffer_limits() == (16384, 65536)
            tr.set_write_buffer_limits(low=1000)
            assert tr.get_write_buffer_limits() == (1000, 4000)
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=10, low=20)
            tr.close()

        run(loop, main())

    def test_reader_closes_idle_pipe(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            rf.close()
            # Nothing queued: the closed read end shows as readability of the write end.
            exc = await proto.lost
            return exc, tr

        exc, tr = run(loop, main())
        assert exc is None
        assert tr.is_closing()
        assert wf.closed

    def test_reader_closes_with_data_queued(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            tr.write(b"x" * (1 << 20))   # more than the pipe holds: some stays queued
            assert tr.get_write_buffer_size() > 0
            rf.close()
            exc = await proto.lost
            return exc, tr.get_write_buffer_size()

        exc, left = run(loop, main())
        assert isinstance(exc, BrokenPipeError)
        assert left == 0

    def test_write_to_a_closed_reader_is_broken_pipe(self, loop, pipe_files):
        rf, wf = pipe_files
        errors = record_errors(loop)

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            rf.close()
            # Before the loop polls again: the write itself fails (EPIPE), which ends the transport.
            tr.write(b"nobody reads this")
            assert tr.is_closing()
            tr.write(b"counted and dropped")
            exc = await proto.lost
            return exc

        exc = run(loop, main())
        assert isinstance(exc, BrokenPipeError)
        assert errors == []   # a broken pipe is the peer's doing: debug log only

    def test_abort_drops_queued_data(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            tr.write(b"y" * (1 << 20))
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            exc = await proto.lost
            await asyncio.sleep(0)
            return exc, proto.events

        exc, events = run(loop, main())
        assert exc is None
        assert events == ["made", "pause", "lost"]

    def test_abort_after_close(self, loop, pipe_files, request):
        xfail_asyncio(request, True, "abort() after close() schedules connection_lost() a second time, "
                                     "which fails on the pipe the first one cleared (AttributeError)")
        rf, wf = pipe_files
        errors = record_errors(loop)

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            tr.close()
            tr.abort()
            exc = await proto.lost
            await asyncio.sleep(0.01)
            return exc, proto.events

        exc, events = run(loop, main())
        assert exc is None
        assert events == ["made", "lost"]
        assert errors == []

    def test_close_waits_for_the_queue(self, loop, pipe_files):
        rf, wf = pipe_files
        payload = os.urandom(1 << 20)

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, wf)
            tr.write(payload)
            tr.close()
            assert tr.is_closing()
            data = await read_all(rf.fileno(), len(payload) + 1)
            assert await proto.lost is None
            return data

        assert run(loop, main()) == payload

    def test_socket_as_write_pipe(self, loop):
        a, b = socket.socketpair()

        async def main():
            proto = Recorder(loop)
            tr, _ = await loop.connect_write_pipe(lambda: proto, a)
            tr.write(b"over a socket")
            await asyncio.sleep(0)
            got = b.recv(100)
            b.close()
            # The other socket closed: EOF makes the write end readable.
            exc = await proto.lost
            return got, exc

        try:
            got, exc = run(loop, main())
        finally:
            a.close()
            b.close()
        assert got == b"over a socket"
        assert exc is None


class TestStreamsOverPipes:
    def test_stream_reader_and_writer(self, loop, pipe_files):
        rf, wf = pipe_files

        async def main():
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), rf)
            wtr, wproto = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wf)
            writer = asyncio.StreamWriter(wtr, wproto, None, loop)
            lines = [f"line {i}\n".encode() for i in range(2000)]
            for line in lines:
                writer.write(line)
                await writer.drain()
            writer.close()
            got = [await reader.readline() for _ in lines]
            assert await reader.read() == b""
            return got == lines

        assert run(loop, main())
