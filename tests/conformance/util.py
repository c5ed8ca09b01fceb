"""Helpers shared by the conformance tests (imported as ``from .util import ...``).

Every way a test runs a loop is bounded twice: ``run`` wraps the awaitable in ``asyncio.wait_for``
(a hang fails the test with TimeoutError from inside the loop), and a watchdog thread calls
``loop.stop()`` through ``call_soon_threadsafe`` a few seconds later in case the loop's own timers
are what is broken. The session-wide faulthandler guard of tests/conftest.py is the last resort.
"""
import asyncio
import contextlib
import os
import socket
import sys
import threading

import pytest

# Seconds one test may spend inside its loop.
TEST_TIMEOUT = 15.0
# Extra seconds before the watchdog thread stops a loop that its own timeout did not end.
WATCHDOG_GRACE = 5.0

PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


class LoopHang(AssertionError):
    """The watchdog thread had to stop a loop that did not return in time."""


@contextlib.contextmanager
def watchdog(loop, timeout):
    """Stop ``loop`` from another thread (repeatedly) if the block lasts longer than ``timeout``."""
    done = threading.Event()
    fired = []

    def guard():
        if done.wait(timeout):
            return
        fired.append(True)
        while not done.is_set():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except Exception:
                pass
            # levent's loop waits in libevent: if its stop() is what is broken, break the
            # EventBase's loop directly so that the test fails instead of hanging the run
            base = getattr(loop, "base", None)
            if base is not None and hasattr(base, "loopbreak"):
                try:
                    base.loopbreak()
                except Exception:
                    pass
            done.wait(0.5)

    t = threading.Thread(target=guard, name="conformance-watchdog", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(5)
        if fired:
            raise LoopHang(f"the loop was still running after {timeout} s and had to be stopped "
                           f"from another thread")


def run(loop, aw, timeout=TEST_TIMEOUT):
    """loop.run_until_complete(aw), failing (not hanging) if it takes longer than ``timeout``."""
    with watchdog(loop, timeout + WATCHDOG_GRACE):
        return loop.run_until_complete(asyncio.wait_for(aw, timeout))


def run_forever(loop, timeout=TEST_TIMEOUT):
    """loop.run_forever() for a test whose callbacks call loop.stop(); fails if they never do."""
    with watchdog(loop, timeout):
        loop.run_forever()


def open_fds():
    """{fd: what it points to} for this process (Linux /proc)."""
    fds = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        pytest.skip("no /proc/self/fd")
    for name in names:
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd listdir itself used, already closed
    return fds


def refused_port():
    """A socket bound to 127.0.0.1 but not listening (connecting to it is refused) and its port.
    Keep the socket open while using the port, then close it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def ipv6_loopback_works():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as c:
                c.settimeout(5)
                c.connect(s.getsockname()[:2])
        return True
    except OSError:
        return False


def xfail_asyncio(request, condition, reason, strict=True):
    """Mark the running test xfail when it runs on stdlib asyncio and ``condition`` holds: stdlib
    asyncio itself does not behave as the test (and levent) expect on this Python."""
    if condition and request.node.callspec.params.get("loop_kind") == "asyncio":
        request.applymarker(pytest.mark.xfail(reason=f"stdlib asyncio: {reason}", strict=strict))


class Recorder(asyncio.Protocol):
    """A stream Protocol that records everything: events (in order), data, and futures for the
    moments a test waits for (connection made / lost, eof)."""

    def __init__(self, loop, eof_result=None):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.eof_result = eof_result
        self.paused = 0
        self.resumed = 0
        self.size_at_pause = None
        self.size_at_resume = None
        self._data_waiters = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        for n, fut in list(self._data_waiters):
            if len(self.data) >= n and not fut.done():
                fut.set_result(bytes(self.data))
                self._data_waiters.remove((n, fut))

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")
        self.paused += 1
        self.size_at_pause = self.transport.get_write_buffer_size()

    def resume_writing(self):
        self.events.append("resume")
        self.resumed += 1
        self.size_at_resume = self.transport.get_write_buffer_size()

    def wait_data(self, n):
        """A future done (with all data so far) once at least ``n`` bytes were received."""
        fut = self.loop.create_future()
        if len(self.data) >= n:
            fut.set_result(bytes(self.data))
        else:
            self._data_waiters.append((n, fut))
        return fut


class Echo(asyncio.Protocol):
    """Echoes what it reads; closes on EOF (after echoing everything)."""

    def __init__(self):
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return None  # close
