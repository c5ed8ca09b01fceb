"""levent's own subprocess and pipe machinery (no asyncio counterpart): children reaped through a pidfd
Event on the loop's base, the waitpid-thread fallback, the loop closing with children still running,
children reaped behind the loop's back, and pipe fds guarded like socket transports' fds."""
import asyncio
import gc
import logging
import os
import signal
import sys
import threading
import warnings

import pytest

import levent
from levent import _subprocess

PY = sys.executable
PIPE = asyncio.subprocess.PIPE
TIMEOUT = 30


@pytest.fixture
def loop():
    lp = levent.new_event_loop()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.close()


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


def is_gone(pid):
    """True once ``pid`` is neither running nor a zombie (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "X"
    except (FileNotFoundError, ProcessLookupError):
        # The entry vanishes when the child is reaped: between open() and read() that is ESRCH.
        return True


def wait_zombie(pid, wait_until):
    """Block (the loop does not run) until ``pid`` has exited and waits to be reaped."""
    def zombie():
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    assert wait_until(zombie, 10), f"pid {pid} did not exit"


needs_pidfd = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3+)")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.fixture(params=["pidfd", "thread"])
def reaping(request, monkeypatch):
    """Each way the loop reaps its children: a pidfd Event (where the kernel has pidfds) and the
    waitpid thread (forced by hiding os.pidfd_open from levent)."""
    if request.param == "pidfd":
        if not hasattr(os, "pidfd_open"):
            pytest.skip("needs os.pidfd_open (Linux 5.3+)")
    else:
        monkeypatch.setattr(_subprocess, "_HAS_PIDFD", False)
    return request.param


def test_reaping_both_ways(loop, reaping):
    async def main():
        # Each child waits for EOF on its stdin: all five run while the reapers are counted.
        procs = [await asyncio.create_subprocess_exec(
                     PY, "-c", f"import sys; sys.stdin.read(); sys.exit({i})", stdin=PIPE)
                 for i in range(5)]
        watched = len(loop._child_reapers)
        for p in procs:
            p.stdin.close()
        sleeper = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")
        sleeper.terminate()
        codes = [await p.wait() for p in procs] + [await sleeper.wait()]
        return watched, codes

    threads_before = {t.ident for t in threading.enumerate()}
    watched, codes = run(loop, main())
    assert codes == [0, 1, 2, 3, 4, -signal.SIGTERM]
    assert watched == 5
    if reaping == "pidfd":              # one pidfd Event each, no thread
        assert {t.ident for t in threading.enumerate()} <= threads_before
    assert not loop._child_reapers


@needs_proc
def test_loop_closed_with_a_child_running(reaping, wait_until, count_open_fds):
    gc.collect()    # garbage of earlier tests must not close fds during the test
    fds_before = count_open_fds()
    loop = levent.new_event_loop()

    async def main():
        return await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")

    try:
        proc = run(loop, main())
    finally:
        loop.close()
    # The pidfd is closed with the loop; the child is reaped by a thread once it ends, not left a
    # zombie.
    gc.collect()
    assert count_open_fds() == fds_before
    pid = proc.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: is_gone(pid), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del proc
        gc.collect()


@needs_pidfd
@needs_proc
def test_close_reaps_first_without_a_warning(loop, wait_until, caplog):
    # transport.close() polls the Popen, which may reap an exited child before the loop's pidfd
    # Event runs: the status still comes from the Popen, with nothing logged.
    async def main():
        tr, _ = await loop.subprocess_exec(asyncio.SubprocessProtocol, PY, "-c", "import sys; sys.exit(3)",
                                           stdin=None, stdout=None, stderr=None)
        wait_zombie(tr.get_pid(), wait_until)
        tr.close()
        return await tr._wait()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert run(loop, main()) == 3
    assert "Unknown child process" not in caplog.text


@needs_proc
def test_child_reaped_behind_the_loop(loop, reaping, wait_until, caplog):
    # Other code waited for the loop's child: its status is lost; asyncio's watchers report 255 and
    # a warning then, and so does levent.
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(3)")
        if reaping == "pidfd":
            wait_zombie(proc.pid, wait_until)
            os.waitpid(proc.pid, 0)
        else:
            await asyncio.sleep(0)
        return await proc.wait()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        code = run(loop, main())
    if reaping == "pidfd":
        assert code == 255
        assert "Unknown child process pid" in caplog.text
    else:
        assert code == 3    # the thread was already waiting


@needs_pidfd
@needs_proc
def test_signal_to_an_exited_child_not_yet_reaped(loop, wait_until):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(2)")
        wait_zombie(proc.pid, wait_until)
        proc.send_signal(signal.SIGTERM)  # through the pidfd: a zombie takes it silently
        proc.kill()
        return await proc.wait()

    assert run(loop, main()) == 2


def test_pipe_fd_is_the_transports(loop):
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

    async def main():
        rtr, _ = await loop.connect_read_pipe(asyncio.Protocol, rf)
        wtr, _ = await loop.connect_write_pipe(asyncio.Protocol, wf)
        for fd in (r, w):
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(fd, lambda: None)
        assert "fd=%d" % r in repr(rtr) and "polling" in repr(rtr)
        assert "fd=%d" % w in repr(wtr) and "bufsize=0" in repr(wtr)
        rtr.close()
        wtr.close()
        await asyncio.sleep(0.01)
        assert "closed" in repr(rtr) and "closed" in repr(wtr)

    try:
        run(loop, main())
    finally:
        rf.close()
        wf.close()


def test_pipe_misuse(loop):
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

    async def main():
        with pytest.raises(TypeError, match="file-like object with a fileno"):
            await loop.connect_read_pipe(asyncio.Protocol, 5)
        # asyncio's pipes call data_received() only: a BufferedProtocol is refused up front.
        with pytest.raises(TypeError, match="needs a data_received"):
            await loop.connect_read_pipe(asyncio.BufferedProtocol, rf)
        tr, _ = await loop.connect_write_pipe(asyncio.Protocol, wf)
        with pytest.raises(TypeError, match="bytes-like"):
            tr.write("text")
        tr.close()

    try:
        run(loop, main())
    finally:
        rf.close()
        wf.close()


def test_loop_closed_with_pipes_open(count_open_fds):
    gc.collect()    # garbage of earlier tests must not close fds during the test
    fds_before = count_open_fds()
    loop = levent.new_event_loop()
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

    async def main():
        rtr, _ = await loop.connect_read_pipe(asyncio.Protocol, rf)
        wtr, _ = await loop.connect_write_pipe(asyncio.Protocol, wf)
        wtr.write(b"x" * (1 << 20))     # queued, the write event pending
        return rtr, wtr

    rtr, wtr = run(loop, main())
    loop.close()
    # The transports outlive the loop: using them raises or does nothing, never crashes; dropping
    # them warns and closes the pipes.
    rtr.pause_reading()
    rtr.resume_reading()
    wtr.write(b"more")
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del rtr, wtr
        gc.collect()
    assert rf.closed and wf.closed
    assert count_open_fds() == fds_before


@needs_proc
def test_subprocess_closed_after_its_loop(reaping, wait_until):
    # close() after the loop closed: the pipes close at once (no connection_lost(), nothing runs on a
    # closed loop), the child is killed and a thread reaps it.
    loop = levent.new_event_loop()

    async def main():
        return await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.stdin.read()",
                                                    stdin=PIPE, stdout=PIPE)

    try:
        proc = run(loop, main())
    finally:
        loop.close()
    transport = proc._transport
    stdin = transport.get_pipe_transport(0)
    transport.close()
    assert stdin.is_closing()
    assert proc.stdin.transport.get_extra_info("pipe").closed
    assert wait_until(lambda: is_gone(proc.pid), 10)


@pytest.mark.skipif(not hasattr(asyncio, "SafeChildWatcher"), reason="asyncio has no child watchers (3.14+)")
def test_inactive_child_watcher_is_not_needed(loop):
    # A policy whose child watcher is not attached to any loop makes asyncio's own loop refuse
    # subprocesses (3.9-3.13); levent's loop does not ask it.
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        saved = policy._watcher
        watcher = asyncio.SafeChildWatcher()
        policy._watcher = watcher
    try:
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(6)")
            return await proc.wait()

        reference = asyncio.new_event_loop()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                with pytest.raises(RuntimeError, match="not activated"):
                    run(reference, main())
        finally:
            reference.close()
        assert run(loop, main()) == 6
    finally:
        policy._watcher = saved


def test_subprocess_in_another_thread():
    # No main-thread-only machinery (signal handlers, child watchers): a loop in any thread reaps.
    results = []

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print('from a thread')",
                                                    stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    thread = threading.Thread(target=lambda: results.append(levent.run(asyncio.wait_for(main(), TIMEOUT))))
    thread.start()
    thread.join(TIMEOUT + 5)
    assert results == [(b"from a thread\n", 0)]
