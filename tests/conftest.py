"""Shared fixtures and helpers for levent's tests.

* ``backend``: every backend among epoll, poll and select that this machine's libevent supports;
  ``base`` is an ``EventBase(method=backend)`` closed after the test.
* No test may hang the suite: loops run through ``run_loop`` (a watchdog thread calls loopbreak()
  and fails the test) or carry a ``guard`` Timer that raises from inside the loop; as a last resort
  every test runs under ``faulthandler.dump_traceback_later`` (a C watchdog thread, no signals)
  that dumps every thread's stack and exits the process if a test takes longer than
  ``HARD_TIMEOUT`` seconds. pytest-timeout is not needed.
* ``certs``: a test CA, a server certificate it signed and an untrusted self-signed one, made once per
  session with the openssl command (test_tls.py, test_proxy.py).
"""
import contextlib
import faulthandler
import hashlib
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types

import pytest

import levent

WANTED_BACKENDS = ("epoll", "poll", "select")
BACKENDS = [m for m in levent.supported_methods() if m in WANTED_BACKENDS]

# Seconds after which a stuck test kills the whole run (with every thread's traceback on stderr).
HARD_TIMEOUT = 90.0
# Default bound for one loop() call in a test.
LOOP_TIMEOUT = 10.0

_hang_report_file = None


def pytest_report_header(config):
    v = levent.libevent_version()
    return (f"levent {levent.__version__} from {os.path.dirname(levent.__file__)}; "
            f"libevent {v.string}; backends under test: {', '.join(BACKENDS) or 'none'}")


def pytest_configure(config):
    # faulthandler needs a real fd for its report: pytest's capture replaces fd 2 during tests, and a
    # process killed by the watchdog never gets to print captured output. Keep a dup of the real one.
    global _hang_report_file
    capman = config.pluginmanager.getplugin("capturemanager")
    fd = None
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                fd = os.dup(2)
        else:
            fd = os.dup(2)
    except Exception:
        fd = os.dup(2)
    _hang_report_file = os.fdopen(fd, "w", buffering=1)


def pytest_unconfigure(config):
    global _hang_report_file
    if _hang_report_file is not None:
        _hang_report_file.close()
        _hang_report_file = None


def _arm_hang_guard():
    out = _hang_report_file if _hang_report_file is not None else sys.__stderr__
    out.write("")  # fail early if the file is unusable
    faulthandler.dump_traceback_later(HARD_TIMEOUT, exit=True, file=out)


@pytest.fixture(autouse=True)
def _hang_guard(request):
    """Last-resort watchdog: dump tracebacks and exit if this test runs longer than HARD_TIMEOUT."""
    _arm_hang_guard()
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def hang_guard_paused():
    """``with hang_guard_paused(): pid = os.fork()``: the hang guard's watchdog is a thread, and a
    process forked while another thread runs may inherit a lock that thread held (3.12+ warn about
    it). Cancelling it ends the thread; it is started again afterwards, in the parent and the child,
    with a full HARD_TIMEOUT."""
    faulthandler.cancel_dump_traceback_later()
    try:
        yield
    finally:
        _arm_hang_guard()


@pytest.fixture(params=BACKENDS or [pytest.param(None, marks=pytest.mark.skip(
    reason="libevent offers none of epoll, poll, select here"))])
def backend(request):
    """The name of one backend (epoll, poll or select) this libevent supports here."""
    return request.param


@pytest.fixture
def base(backend):
    """An EventBase on ``backend``, closed after the test."""
    b = levent.EventBase(method=backend)
    assert b.method == backend
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def socketpair():
    """A connected AF_UNIX stream socketpair (non-blocking); both ends closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def refused_address():
    """A 127.0.0.1 address that refuses connections: a socket bound there but never listening. It
    stays bound for the test, so nothing else (a listener the test makes, on port 0) can take the
    port: a proxy handed a freed port may get it as its own listening port and connect to itself
    until it runs out of fds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()


@pytest.fixture
def make_socketpair():
    """A factory of socketpairs (non-blocking); every one is closed after the test."""
    made = []

    def make():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made.append(a)
        made.append(b)
        return a, b

    try:
        yield make
    finally:
        for s in made:
            s.close()


@pytest.fixture
def restore_signals():
    """Put back the Python handlers of the signals the signal tests use."""
    signums = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT]
    saved = {s: signal.getsignal(s) for s in signums}
    try:
        yield
    finally:
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)


class LoopTimeout(AssertionError):
    """A loop() in a test did not return in time."""


class _Watchdog:
    """A thread that calls base.loopbreak() (repeatedly) once ``timeout`` seconds have passed."""

    def __init__(self, base, timeout):
        self.base = base
        self.timeout = timeout
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="levent-test-watchdog", daemon=True)

    def _run(self):
        if self._stop.wait(self.timeout):
            return
        self.fired = True
        while not self._stop.is_set():
            try:
                self.base.loopbreak()
            except Exception:
                return
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)


def run_loop(base, timeout=LOOP_TIMEOUT, **flags):
    """base.loop(**flags), bounded: if it has not returned after ``timeout`` seconds, a watchdog
    thread breaks it and the test fails. Adds no event to the base, so loop() can still return
    True when no events are left."""
    with _Watchdog(base, timeout) as dog:
        result = base.loop(**flags)
    if dog.fired:
        raise LoopTimeout(f"loop({flags or ''}) did not return within {timeout} s")
    return result


def add_guard(base, timeout=LOOP_TIMEOUT):
    """A Timer on ``base`` that raises LoopTimeout from inside the loop after ``timeout`` seconds.

    It is an event, so a loop with a guard never returns "no events left" while it is pending:
    delete it (guard.delete()) once the test's events are done."""

    def expired():
        raise LoopTimeout(f"the loop was still running after {timeout} s")

    guard = levent.Timer(base, expired)
    guard.add(timeout)
    return guard


@contextlib.contextmanager
def bounded(base, timeout=LOOP_TIMEOUT):
    """``with bounded(base): base.dispatch()``: like run_loop, for any loop-running code."""
    with _Watchdog(base, timeout) as dog:
        yield dog
    if dog.fired:
        raise LoopTimeout(f"the loop did not return within {timeout} s")


@pytest.fixture(name="bounded")
def bounded_fixture():
    return bounded


@pytest.fixture(name="run_loop")
def run_loop_fixture():
    return run_loop


@pytest.fixture(name="add_guard")
def add_guard_fixture():
    return add_guard


class _Env(dict):
    def __repr__(self):  # keep the environment out of failure reports
        return f"<environment: {len(self)} variables, PYTHONPATH={self.get('PYTHONPATH')!r}>"


def child_env():
    """The environment for a child Python that must import the same levent as this process."""
    env = _Env(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(levent.__file__)))
    paths = [pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def sigint_default():
    """preexec_fn for a child that must get KeyboardInterrupt on SIGINT: a job started in the
    background by a non-interactive shell (nohup, some CI runners) inherits SIGINT ignored, and
    Python installs its SIGINT handler only where SIGINT is not ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(name="child_env")
def child_env_fixture():
    return child_env()


def wait_until(predicate, timeout, interval=0.005):
    """Poll ``predicate`` until true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


# -- streams (BufferEvent and Listener tests) -------------------------------------------------------

# Backends for the stream tests that need many or high fds (select cannot watch fds >= FD_SETSIZE)
# or that are too heavy to run three times.
STREAM_BACKENDS = [m for m in levent.supported_methods() if m in ("epoll", "poll")]


@pytest.fixture(params=STREAM_BACKENDS or [pytest.param(None, marks=pytest.mark.skip(
    reason="libevent offers neither epoll nor poll here"))])
def stream_backend(request):
    """epoll or poll, whichever this libevent supports (the heavy stream tests run on these)."""
    return request.param


@pytest.fixture
def stream_base(stream_backend):
    """An EventBase on ``stream_backend``, closed after the test."""
    b = levent.EventBase(method=stream_backend)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def unix_path(tmp_path):
    """A path for an AF_UNIX socket (sun_path holds 107 bytes: fall back to a short temp dir)."""
    path = str(tmp_path / "s.sock")
    if len(os.fsencode(path)) < 100:
        yield path
        return
    import tempfile
    d = tempfile.mkdtemp(prefix="lev")
    try:
        yield os.path.join(d, "s.sock")
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def ipv6_loopback_or_skip():
    """Skip the test unless ::1 can be bound here."""
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")


@pytest.fixture(name="ipv6_loopback")
def ipv6_loopback_fixture():
    """'::1', or skip the test (with the reason) if it cannot be bound."""
    ipv6_loopback_or_skip()
    return "::1"


def count_open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        pytest.skip("no /proc/self/fd")


@pytest.fixture(name="count_open_fds")
def count_open_fds_fixture():
    return count_open_fds


def start_echo_server(base, address=("127.0.0.1", 0), **listener_kwargs):
    """A Listener (accept="bufferevent") whose connections echo what they read and close on EOF or
    error. Returns (listener, accepted): accepted lists every accepted BufferEvent."""
    accepted = []

    def on_read(bev):
        bev.write(bev.read())

    def on_event(bev, what, error):
        if what & (levent.BufferEvent.EOF | levent.BufferEvent.ERROR):
            bev.close()

    def on_accept(listener, bev, addr):
        accepted.append(bev)
        bev.on_read = on_read
        bev.on_event = on_event
        bev.enable(levent.READ)

    listener = levent.Listener(base, on_accept, address, accept="bufferevent", **listener_kwargs)
    return listener, accepted


@pytest.fixture(name="echo_server")
def echo_server_fixture():
    return start_echo_server


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """Paths: ca (PEM), server_cert/server_key (localhost + 127.0.0.1, signed by ca), self_cert/
    self_key (self-signed, same names, trusted by nobody)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=levent test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/O=levent/CN=localhost", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "self.key", "-out", "self.pem", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    return types.SimpleNamespace(ca=str(d / "ca.pem"), server_cert=str(d / "server.pem"),
                                 server_key=str(d / "server.key"), self_cert=str(d / "self.pem"),
                                 self_key=str(d / "self.key"))


def ssl_exchange(tls, data, size, timeout=30.0):
    """Send ``data`` and receive ``size`` bytes at the same time on a Python SSLSocket, from this one
    thread (an SSL object must not be used by two threads at once): non-blocking and select()-driven,
    at most ``timeout`` seconds. Returns the sha256 (hex) of what came; the socket is left blocking
    with ``timeout``."""
    tls.setblocking(False)
    view, sent = memoryview(data), 0
    digest, got = hashlib.sha256(), 0
    deadline = time.monotonic() + timeout
    while got < size or sent < len(data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"ssl_exchange: {sent}/{len(data)} bytes sent, {got}/{size} received")
        r, w, _ = select.select([tls] if got < size else [], [tls] if sent < len(data) else [], [], left)
        if w:
            try:
                # One record at a time: after a WANT_*, OpenSSL wants the same bytes again.
                sent += tls.send(view[sent:sent + 16384])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if r:
            try:
                while got < size:   # what OpenSSL holds decrypted does not make the socket readable
                    chunk = tls.recv(1 << 18)
                    if not chunk:
                        raise EOFError(f"ssl_exchange: EOF after {got}/{size} bytes")
                    digest.update(chunk)
                    got += len(chunk)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
    tls.settimeout(timeout)
    return digest.hexdigest()


@pytest.fixture(name="ssl_exchange")
def ssl_exchange_fixture():
    return ssl_exchange
