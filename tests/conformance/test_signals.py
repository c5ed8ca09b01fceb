"""Signals: add_signal_handler / remove_signal_handler (SIGUSR1 sent to this process), argument
checks, a handler that raises, and Ctrl-C (SIGINT) in a child process."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from .util import TEST_TIMEOUT, run


@pytest.fixture(autouse=True)
def _restore(restore_signals):
    """(tests/conftest.py's restore_signals puts back SIGUSR1/2, SIGHUP and SIGINT handlers)"""
    yield


class TestSignalHandlers:
    def test_handler_called_on_the_loop(self, loop):
        got = []

        async def main():
            fired = loop.create_future()

            def handler(arg):
                got.append((arg, asyncio.get_running_loop(), threading.current_thread()))
                fired.set_result(None)

            loop.add_signal_handler(signal.SIGUSR1, handler, "arg")
            os.kill(os.getpid(), signal.SIGUSR1)
            await fired

        run(loop, main())
        assert got == [("arg", loop, threading.main_thread())]

    def test_called_again_and_replaced(self, loop):
        got = []

        async def main():
            for i in range(3):
                fired = loop.create_future()
                loop.add_signal_handler(signal.SIGUSR1, lambda i=i, f=fired: (got.append(i), f.set_result(None)))
                os.kill(os.getpid(), signal.SIGUSR1)
                await fired

        run(loop, main())
        assert got == [0, 1, 2]

    def test_remove_signal_handler(self, loop):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert loop.remove_signal_handler(signal.SIGUSR1) is False
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL

    def test_remove_sigint_restores_the_default_int_handler(self, loop):
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        assert loop.remove_signal_handler(signal.SIGINT) is True
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_close_removes_handlers(self, loop):
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        assert signal.getsignal(signal.SIGUSR2) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        loop.close()
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL

    def test_invalid_signals(self, loop):
        with pytest.raises(ValueError):
            loop.add_signal_handler(0, lambda: None)
        with pytest.raises(ValueError):
            loop.add_signal_handler(signal.NSIG + 1, lambda: None)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(0)
        with pytest.raises(TypeError):
            loop.add_signal_handler("SIGUSR1", lambda: None)
        with pytest.raises(RuntimeError):
            loop.add_signal_handler(signal.SIGKILL, lambda: None)
        with pytest.raises(RuntimeError):
            loop.add_signal_handler(signal.SIGSTOP, lambda: None)

    def test_coroutine_refused(self, loop):
        async def coro_func():
            pass

        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, coro_func)

    def test_only_in_the_main_thread(self, loop):
        errors = []

        def other():
            try:
                loop.add_signal_handler(signal.SIGUSR1, lambda: None)
            except Exception as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(TEST_TIMEOUT)
        assert len(errors) == 1 and isinstance(errors[0], (RuntimeError, ValueError))
        assert loop.remove_signal_handler(signal.SIGUSR1) is False  # nothing was registered

    def test_handler_exception_goes_to_the_exception_handler(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        class SignalBoom(Exception):
            pass

        def handler():
            raise SignalBoom("from the handler")

        async def main():
            loop.add_signal_handler(signal.SIGUSR1, handler)
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(200):
                if contexts:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)  # the loop keeps running
            return "still running"

        assert run(loop, main()) == "still running"
        assert len(contexts) == 1
        assert isinstance(contexts[0]["exception"], SignalBoom)
        assert "message" in contexts[0]


CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    import levent

    kind, how = sys.argv[1], sys.argv[2]
    factory = asyncio.new_event_loop if kind == "asyncio" else levent.new_event_loop

    async def main():
        print("ready", flush=True)
        await asyncio.sleep(30)
        print("not interrupted", flush=True)

    try:
        if how == "run_until_complete":
            loop = factory()
            try:
                loop.run_until_complete(main())
            finally:
                assert not loop.is_running()
                loop.close()
        else:
            if kind == "asyncio":
                asyncio.run(main())
            else:
                levent.run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(0)
    sys.exit(3)
""")


def _sigint_default():
    # as tests/conftest.py's sigint_default: a child of a background job inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TestCtrlC:
    @pytest.mark.parametrize("how", ["run_until_complete", "run"])
    def test_sigint_raises_keyboard_interrupt(self, loop_kind, loop_factory, how, child_env):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, loop_kind, how], env=child_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_default)
        try:
            line = proc.stdout.readline()
            assert line == "ready\n", proc.stderr.read() if not line else line
            # the child is in (or about to enter) its loop's wait
            threading.Event().wait(0.2)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=TEST_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert out == "KeyboardInterrupt\n", f"stdout {out!r}, stderr {err[-2000:]}"
        assert proc.returncode == 0, err[-2000:]
