"""Subprocesses: asyncio.create_subprocess_exec / _shell and loop.subprocess_exec with pipes, return
codes, signals, communicate, pass_fds / cwd / env, many children at once, 64 MiB through a pipe, and
children reaped without disturbing other code's waitpid()."""
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import warnings

import pytest

from .util import run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="UNIX processes")

PY = sys.executable
PIPE = asyncio.subprocess.PIPE
# A child that copies stdin to stdout in chunks, uppercased, and exits with the code in argv[1].
UPPER = ("import sys\n"
         "while True:\n"
         "    data = sys.stdin.buffer.read1(65536)\n"
         "    if not data: break\n"
         "    sys.stdout.buffer.write(data.upper()); sys.stdout.buffer.flush()\n"
         "sys.exit(int(sys.argv[1]))\n")
# Writes argv[1] MiB of a fixed pattern to stdout.
PRODUCE = ("import sys\n"
           "block = bytes(range(256)) * 4096\n"
           "for _ in range(int(sys.argv[1])): sys.stdout.buffer.write(block)\n")


class TestSubprocess:
    def test_echo_through_pipes(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", UPPER, "0", stdin=PIPE, stdout=PIPE)
            assert proc.pid > 0
            assert proc.returncode is None
            proc.stdin.write(b"hello\n")
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            proc.stdin.write(b"again\n")
            proc.stdin.close()
            rest = await proc.stdout.read()
            return line, rest, await proc.wait(), await proc.wait()

        line, rest, code, code_again = run(loop, main())
        assert line == b"HELLO\n"
        assert rest == b"AGAIN\n"
        assert code == code_again == 0

    def test_exit_code(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(7)")
            code = await proc.wait()
            return code, proc.returncode

        assert run(loop, main()) == (7, 7)

    def test_communicate_with_input(self, loop):
        payload = os.urandom(1 << 20).hex().encode()  # 2 MiB, more than a pipe holds both ways

        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", UPPER, "3", stdin=PIPE, stdout=PIPE,
                                                        stderr=PIPE)
            out, err = await proc.communicate(payload)
            return out, err, proc.returncode

        out, err, code = run(loop, main())
        assert out == payload.upper()
        assert err == b""
        assert code == 3

    def test_shell_stderr_to_stdout(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_shell(
                "echo out; echo err 1>&2; exit 4", stdout=PIPE, stderr=subprocess.STDOUT)
            out, err = await proc.communicate()
            return out, err, proc.returncode

        out, err, code = run(loop, main())
        assert sorted(out.split()) == [b"err", b"out"]
        assert err is None
        assert code == 4

    @pytest.mark.parametrize("how, sig", [("terminate", signal.SIGTERM), ("kill", signal.SIGKILL),
                                          ("send_signal", signal.SIGUSR1)])
    def test_killed_by_signal(self, loop, how, sig):
        async def main():
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", "import sys, time; print('up', flush=True); time.sleep(60)", stdout=PIPE)
            assert await proc.stdout.readline() == b"up\n"
            if how == "send_signal":
                proc.send_signal(sig)
            else:
                getattr(proc, how)()
            code = await proc.wait()
            await proc.stdout.read()
            return code

        assert run(loop, main()) == -sig

    def test_many_short_children(self, loop):
        count = 100

        async def child(i):
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", 'echo "$0"; exit "$1"', str(i), str(i % 7), stdout=PIPE)
            out = await proc.stdout.read()
            return int(out), await proc.wait()

        async def main():
            return await asyncio.gather(*(child(i) for i in range(count)))

        results = run(loop, main(), timeout=60)
        assert results == [(i, i % 7) for i in range(count)]

    def test_large_output(self, loop):
        mib = 64

        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", PRODUCE, str(mib), stdout=PIPE)
            digest = hashlib.sha256()
            size = 0
            while True:
                chunk = await proc.stdout.read(1 << 18)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
            return size, digest.hexdigest(), await proc.wait()

        size, digest, code = run(loop, main(), timeout=60)
        want = hashlib.sha256()
        block = bytes(range(256)) * 4096
        for _ in range(mib):
            want.update(block)
        assert (size, digest, code) == (mib << 20, want.hexdigest(), 0)

    def test_cwd_env_and_pass_fds(self, loop, tmp_path):
        r, w = os.pipe()
        script = ("import os, sys\n"
                  "fd = int(sys.argv[1])\n"
                  "os.write(fd, b'via passed fd'); os.close(fd)\n"
                  "print(os.getcwd()); print(os.environ.get('LEVENT_TEST_VAR'))\n")

        async def main():
            env = dict(os.environ, LEVENT_TEST_VAR="from the parent")
            proc = await asyncio.create_subprocess_exec(PY, "-c", script, str(w), stdout=PIPE,
                                                        cwd=str(tmp_path), env=env, pass_fds=(w,))
            os.close(w)
            out, _ = await proc.communicate()
            return out.decode().splitlines(), os.read(r, 100), proc.returncode

        try:
            lines, via_fd, code = run(loop, main())
        finally:
            os.close(r)
        assert code == 0
        assert lines == [os.path.realpath(str(tmp_path)), "from the parent"]
        assert via_fd == b"via passed fd"

    def test_fds_not_inherited_without_pass_fds(self, loop):
        r, w = os.pipe()
        os.set_inheritable(w, True)
        script = "import os, sys\ntry:\n    os.fstat(int(sys.argv[1]))\nexcept OSError:\n    sys.exit(9)\n"

        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", script, str(w))
            return await proc.wait()

        try:
            assert run(loop, main()) == 9
        finally:
            os.close(r)
            os.close(w)

    def test_missing_program(self, loop):
        async def main():
            with pytest.raises(FileNotFoundError):
                await asyncio.create_subprocess_exec("/nonexistent/levent-test-program", stdout=PIPE)

        run(loop, main())

    def test_subprocess_protocol(self, loop):
        class Proto(asyncio.SubprocessProtocol):
            def __init__(self):
                self.events = []
                self.data = {1: bytearray(), 2: bytearray()}
                self.done = loop.create_future()

            def connection_made(self, transport):
                self.events.append("made")

            def pipe_data_received(self, fd, data):
                self.data[fd] += data

            def pipe_connection_lost(self, fd, exc):
                self.events.append(("pipe lost", fd, exc))

            def process_exited(self):
                self.events.append("exited")

            def connection_lost(self, exc):
                self.events.append("lost")
                self.done.set_result(exc)

        async def main():
            tr, proto = await loop.subprocess_exec(
                Proto, PY, "-c", "import sys; sys.stdout.write('o'); sys.stderr.write('e')",
                stdin=None)
            assert isinstance(tr, asyncio.SubprocessTransport)
            assert tr.get_pipe_transport(0) is None
            assert isinstance(tr.get_pipe_transport(1), asyncio.ReadTransport)
            assert isinstance(tr.get_extra_info("subprocess"), subprocess.Popen)
            assert tr.get_pid() > 0
            exc = await proto.done
            code = tr.get_returncode()
            tr.close()
            return exc, code, proto

        exc, code, proto = run(loop, main())
        assert exc is None and code == 0
        assert proto.data == {1: bytearray(b"o"), 2: bytearray(b"e")}
        assert proto.events[0] == "made" and proto.events[-1] == "lost"
        assert sorted(e for e in proto.events if isinstance(e, tuple)) == [
            ("pipe lost", 1, None), ("pipe lost", 2, None)]
        assert "exited" in proto.events

    def test_close_kills_a_running_child(self, loop):
        async def main():
            tr, _ = await loop.subprocess_exec(asyncio.SubprocessProtocol, PY, "-c",
                                               "import time; time.sleep(60)",
                                               stdin=None, stdout=None, stderr=None)
            tr.close()
            assert tr.is_closing()
            return await tr._wait()

        assert run(loop, main()) == -signal.SIGKILL

    def test_other_code_waitpid_unaffected(self, loop):
        # A child started outside asyncio is still reaped by its own Popen.wait(), while the loop
        # reaps its children: the loop never waits for pids it did not start.
        async def main():
            outsider = subprocess.Popen([PY, "-c", "import sys, time; time.sleep(0.2); sys.exit(5)"])
            procs = [await asyncio.create_subprocess_exec(PY, "-c", f"import sys; sys.exit({i})")
                     for i in range(3)]
            codes = [await p.wait() for p in procs]
            outsider_code = await loop.run_in_executor(None, outsider.wait)
            return codes, outsider_code

        assert run(loop, main()) == ([0, 1, 2], 5)

    def test_no_deprecation_warning(self, loop):
        # Child watchers are deprecated (3.12) and gone (3.14): no warning may come from starting one.
        async def main():
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                proc = await asyncio.create_subprocess_exec(PY, "-c", "pass")
                return await proc.wait()

        assert run(loop, main()) == 0
