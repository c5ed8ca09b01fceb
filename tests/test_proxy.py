"""levent.proxy: real sockets on 127.0.0.1, both engines, every wait bounded.

In-process tests run the proxy's loop in a thread (stopped with loopbreak()) and talk to it with
blocking sockets that time out; upstream servers are threads too. The memory and signal tests run
``python -m levent proxy`` in a subprocess.
"""
import hashlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import levent
from levent.proxy import Counters, Proxy
from levent.proxy import main as proxy_main

from conftest import sigint_default, ssl_exchange, wait_until

TIMEOUT = 10.0
MODES = ["events", "bufferevent"]


class Upstream:
    """A listening socket on 127.0.0.1 whose connections each run ``handler(sock)`` in a thread."""

    def __init__(self, handler, backlog=16):
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.sock.settimeout(TIMEOUT)
        self.address = self.sock.getsockname()
        self.errors = []
        self.threads = []
        # close() may run while _accept has just accepted: the lock makes it either see the handler
        # thread started (and join it) or make _accept drop the connection.
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                t.start()
                self.threads.append(t)

    def _serve(self, conn):
        with conn:
            try:
                self.handler(conn)
            except BaseException as exc:
                self.errors.append(exc)

    def close(self):
        with self._lock:
            self._closed = True
        self.sock.close()
        for t in self.threads:
            t.join(TIMEOUT)
        if self.errors:
            raise self.errors[0]


def echo(conn):
    while data := conn.recv(65536):
        conn.sendall(data)


class RunningProxy:
    """A Proxy whose loop runs in a thread; stop() breaks it and re-raises what the loop raised."""

    def __init__(self, upstream, **kwargs):
        self.base = levent.EventBase()
        self.proxy = Proxy(self.base, upstream=upstream, **kwargs).start()
        self.address = self.proxy.address[:2]
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.base.loop()
        except BaseException as exc:
            self.error = exc

    def connect(self):
        sock = socket.create_connection(self.address, timeout=TIMEOUT)
        return sock

    def stop(self):
        """Stop the loop and close everything; raises (once) what the loop raised."""
        if self.base.closed:
            return
        self.base.loopbreak()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the proxy's loop did not stop"
        self.proxy.close()
        self.base.close()
        error, self.error = self.error, None
        if error is not None:
            raise error


@pytest.fixture
def servers():
    """Make Upstreams and RunningProxies; all are stopped after the test."""
    made = []

    def upstream(handler=echo, **kwargs):
        made.append(Upstream(handler, **kwargs))
        return made[-1]

    def proxy(upstream_address, **kwargs):
        made.append(RunningProxy(upstream_address, **kwargs))
        return made[-1]

    servers.upstream, servers.proxy = upstream, proxy
    try:
        yield servers
    finally:
        errors = []
        for s in reversed(made):
            try:
                s.close() if isinstance(s, Upstream) else s.stop()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def recv_all(sock):
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("mode", MODES)
def test_plain_round_trip_and_half_close(servers, mode):
    up = servers.upstream()
    px = servers.proxy(up.address, mode=mode)
    assert px.proxy.mode == mode
    with px.connect() as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"hello"
        c.sendall(b" world")
        c.shutdown(socket.SHUT_WR)      # the echo sees EOF only if the proxy passes it on
        assert recv_all(c) == b" world"
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    counters = px.proxy.counters
    assert counters == Counters(accepted=1, active=0, failed=0, idle_closed=0, bytes_up=11, bytes_down=11)


def test_auto_mode_picks_events_unless_bytes_are_transformed(certs):
    with levent.EventBase() as base:
        upstream = ("127.0.0.1", 1)
        assert Proxy(base, upstream=upstream).mode == "events"
        assert Proxy(base, upstream=upstream, upstream_tls=upstream_context(certs),
                     client_tls=proxy_server_context(certs)).mode == "events"
        assert Proxy(base, upstream=upstream, transform_up=xor).mode == "bufferevent"
        assert Proxy(base, upstream=upstream, client_stream=lambda b, s: None).mode == "bufferevent"
        with pytest.raises(ValueError, match="transforms and custom streams need mode='bufferevent'"):
            Proxy(base, upstream=upstream, transform_up=xor, mode="events")


@pytest.mark.parametrize("mode", MODES)
def test_50_mib_each_way_concurrently(servers, mode):
    size = 50 << 20
    up_data, down_data = os.urandom(size), os.urandom(size)
    received_up = {}

    def sink_and_source(conn):
        sender = threading.Thread(target=lambda: (conn.sendall(down_data), conn.shutdown(socket.SHUT_WR)))
        sender.start()
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
        received_up["sha256"] = digest.hexdigest()
        sender.join(TIMEOUT)

    up = servers.upstream(sink_and_source)
    px = servers.proxy(up.address, mode=mode)
    with px.connect() as c:
        c.settimeout(30)
        sender = threading.Thread(target=lambda: (c.sendall(up_data), c.shutdown(socket.SHUT_WR)))
        sender.start()
        got = hashlib.sha256()
        while chunk := c.recv(1 << 20):
            got.update(chunk)
        sender.join(30)
    assert got.hexdigest() == hashlib.sha256(down_data).hexdigest()
    assert wait_until(lambda: "sha256" in received_up, TIMEOUT)
    assert received_up["sha256"] == hashlib.sha256(up_data).hexdigest()
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    assert (px.proxy.counters.bytes_up, px.proxy.counters.bytes_down) == (size, size)


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_upstream_closes_the_client_and_logs_why(servers, mode, caplog, refused_address):
    px = servers.proxy(refused_address, mode=mode)
    with caplog.at_level(logging.WARNING, logger="levent.proxy"), px.connect() as c:
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
    assert wait_until(lambda: px.proxy.counters.failed == 1 and px.proxy.connections == 0, TIMEOUT)
    assert any("cannot reach upstream" in r.getMessage() and "refused" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_upstream_at_the_proxys_own_address_is_refused():
    # Pointed at itself, a proxy would accept each of its own connects as a new client and connect
    # again, until out of fds: start() refuses, and frees the port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with levent.EventBase() as base:
        for listen in (("127.0.0.1", port), ("0.0.0.0", port)):
            proxy = Proxy(base, listen=listen, upstream=("127.0.0.1", port))
            with pytest.raises(ValueError, match="own listening address .* connect to itself"):
                proxy.start()
        with socket.create_server(("127.0.0.1", port)):     # the port was let go
            pass


def _full_backlog_server():
    """A listening socket whose accept queue is full: a further connect() to it hangs (Linux drops the
    SYN), which is how a connect timeout can be provoked on loopback. Returns (server, fillers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(server.getsockname())
        fillers.append(f)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(server.getsockname())
    except (TimeoutError, socket.timeout):
        return server, fillers
    except OSError:
        pass
    finally:
        probe.close()
    server.close()
    for f in fillers:
        f.close()
    pytest.skip("a full accept queue does not make connect() hang here")


@pytest.mark.parametrize("mode", MODES)
def test_connect_timeout(servers, mode, caplog):
    server, fillers = _full_backlog_server()
    try:
        px = servers.proxy(server.getsockname(), mode=mode, connect_timeout=0.3)
        with caplog.at_level(logging.WARNING, logger="levent.proxy"), px.connect() as c:
            started = time.monotonic()
            try:
                assert c.recv(100) == b""
            except ConnectionResetError:
                pass
            assert 0.25 < time.monotonic() - started < 5
        assert wait_until(lambda: px.proxy.counters.failed == 1, TIMEOUT)
        assert any("no answer within 0.3 s" in r.getMessage() for r in caplog.records)
    finally:
        server.close()
        for f in fillers:
            f.close()


@pytest.mark.parametrize("mode", MODES)
def test_idle_timeout_closes(servers, mode):
    up = servers.upstream()
    px = servers.proxy(up.address, mode=mode, idle_timeout=0.4)
    with px.connect() as c:
        for _ in range(4):      # busy for longer than the timeout: not idle
            time.sleep(0.15)
            c.sendall(b"ping")
            assert c.recv(100) == b"ping"
        last_activity = time.monotonic()
        assert c.recv(100) == b""
        assert 0.38 < time.monotonic() - last_activity < 3
    assert px.proxy.counters.idle_closed == 1


@pytest.mark.parametrize("mode", MODES)
def test_max_connections_pauses_accepting(servers, mode):
    up = servers.upstream()
    px = servers.proxy(up.address, mode=mode, max_connections=1)
    first = px.connect()
    first.sendall(b"one")
    assert first.recv(100) == b"one"
    with px.connect() as second:        # lands in the listen backlog
        second.sendall(b"two")
        second.settimeout(0.3)
        with pytest.raises((TimeoutError, socket.timeout)):
            second.recv(100)
        second.settimeout(TIMEOUT)
        first.close()
        assert second.recv(100) == b"two"
    assert px.proxy.counters.accepted == 2


def xor(data):
    return bytes(b ^ 0x5A for b in data)


class Framer:
    """A stateful transform: counts the bytes and appends a trailer at EOF."""

    def __init__(self):
        self.total = 0

    def feed(self, data):
        self.total += len(data)
        return data

    def flush(self):
        return b"<%d>" % self.total


def test_transforms_both_ways(servers):
    seen = []

    def recording_echo(conn):
        while data := conn.recv(65536):
            seen.append(data)
            conn.sendall(data)

    up = servers.upstream(recording_echo)
    px = servers.proxy(up.address, transform_up=xor, transform_down=xor)
    message = b"attack at dawn" * 1000
    with px.connect() as c:
        c.sendall(message)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == message
    assert b"".join(seen) == xor(message)


def test_transform_class_flushes_at_eof(servers):
    up = servers.upstream()
    px = servers.proxy(up.address, transform_up=Framer)
    with px.connect() as c:
        c.sendall(b"abc")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b"abc<3>"


def test_transform_error_comes_out_of_loop(servers):
    def broken(data):
        raise ZeroDivisionError("transform failed")

    up = servers.upstream()
    px = servers.proxy(up.address, transform_up=broken)
    with px.connect() as c:
        c.sendall(b"x")
        assert wait_until(lambda: not px.thread.is_alive(), TIMEOUT)
    with pytest.raises(ZeroDivisionError, match="transform failed"):
        px.stop()


# -- subprocess tests: python -m levent proxy --------------------------------------------------------

def start_cli(child_env, upstream, *args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "levent", "proxy", "--listen", "127.0.0.1:0",
         "--upstream", f"{upstream[0]}:{upstream[1]}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env, preexec_fn=sigint_default)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {proc.stderr.read()}")
    port = int(line.split()[3].rstrip(",").rsplit(":", 1)[1])
    return proc, ("127.0.0.1", port)


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-upstream"])
@pytest.mark.parametrize("mode", MODES)
def test_slow_consumer_keeps_rss_bounded(servers, child_env, certs, mode, tls):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc")
    sent = [0]
    stop = threading.Event()

    def firehose(conn):
        chunk = b"x" * (256 * 1024)
        if tls:
            conn = tls_server_context(certs).wrap_socket(conn, server_side=True)
        conn.settimeout(0.2)
        while not stop.is_set():
            try:
                sent[0] += conn.send(chunk)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return

    up = servers.upstream(firehose)
    tls_args = ("--tls-upstream", "--cafile", certs.ca) if tls else ()
    proc, address = start_cli(child_env, up.address, "--mode", mode, "--high-water", "256k", *tls_args)
    try:
        baseline = peak = rss(proc.pid)
        with socket.create_connection(address, timeout=TIMEOUT) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            received = 0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:      # read 64 KiB every 20 ms: ~3 MiB/s
                received += len(c.recv(65536))
                peak = max(peak, rss(proc.pid))
                time.sleep(0.02)
            stalled_at = sent[0]
            time.sleep(0.3)
            assert sent[0] - stalled_at < 4 << 20, "the upstream was never made to wait"
            stop.set()
        growth = peak - baseline
        # The proxy holds at most about high_water per direction; the sockets' kernel buffers hold more.
        assert growth < 8 << 20, f"RSS grew by {growth} bytes while the upstream sent {sent[0]}"
        assert sent[0] > received + (2 << 20)
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)


def test_sigterm_drains_then_prints_counters(servers, child_env):
    payload = os.urandom(1 << 20)

    def slow_reply(conn):
        assert conn.recv(100) == b"go"
        for i in range(0, len(payload), len(payload) // 10):
            conn.sendall(payload[i:i + len(payload) // 10])
            time.sleep(0.1)

    up = servers.upstream(slow_reply)
    proc, address = start_cli(child_env, up.address, "--drain-timeout", "10")
    try:
        with socket.create_connection(address, timeout=TIMEOUT) as c:
            c.sendall(b"go")
            first = c.recv(65536)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            with pytest.raises(ConnectionRefusedError):     # no longer accepting
                socket.create_connection(address, timeout=TIMEOUT).close()
            rest = recv_all(c)
        assert first + rest == payload
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGTERM: no longer accepting" in out
    assert f"bytes_up 2, bytes_down {len(payload)}" in out
    assert "accepted 1, active 0" in out


def test_sigterm_aborts_after_the_deadline(servers, child_env):
    up = servers.upstream()
    proc, address = start_cli(child_env, up.address, "--drain-timeout", "0.3")
    try:
        with socket.create_connection(address, timeout=TIMEOUT) as c:
            c.sendall(b"hi")
            assert c.recv(10) == b"hi"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=TIMEOUT)
            assert time.monotonic() - started < 5
            assert c.recv(10) == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "aborting 1 connection(s) still open" in err
    assert "counters: accepted 1" in out


# -- TLS: wrap, unwrap, re-encrypt -------------------------------------------------------------------

TLS_SIZE = 8 << 20
TLS_CHUNK = 256 * 1024


def tls_server_context(certs, self_signed=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if self_signed:
        ctx.load_cert_chain(certs.self_cert, certs.self_key)
    else:
        ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


class Answerer:
    """An upstream handler (plain, or TLS with ``ssl_ctx``): for every byte received it sends one of
    its own random bytes back, hashing both, until EOF; handshake failures are kept in ``refused``."""

    def __init__(self, ssl_ctx=None, size=TLS_SIZE):
        self.ssl_ctx = ssl_ctx
        self.data = os.urandom(size)
        self.received = hashlib.sha256()
        self.sent = 0
        self.refused = []
        self.done = threading.Event()

    def __call__(self, conn):
        if self.ssl_ctx is not None:
            try:
                conn = self.ssl_ctx.wrap_socket(conn, server_side=True)
            except ssl.SSLError as exc:
                self.refused.append(exc)
                return
        with conn:
            while chunk := conn.recv(TLS_CHUNK):
                self.received.update(chunk)
                conn.sendall(self.data[self.sent:self.sent + len(chunk)])
                self.sent += len(chunk)
        self.done.set()


def lockstep(sock, data):
    """Send data a chunk at a time, reading as many bytes back after each (so neither side ever has
    more than a chunk in flight); returns the sha256 of what came back."""
    got = hashlib.sha256()
    for i in range(0, len(data), TLS_CHUNK):
        chunk = data[i:i + TLS_CHUNK]
        sock.sendall(chunk)
        want = len(chunk)
        while want:
            part = sock.recv(want)
            assert part, "the proxy closed the connection mid-transfer"
            got.update(part)
            want -= len(part)
    return got.hexdigest()


def tls_client(certs, address, server_hostname="localhost"):
    ctx = ssl.create_default_context(cafile=certs.ca)
    sock = socket.create_connection(address, timeout=TIMEOUT)
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


def check_answered(answerer, sent, echoed):
    assert echoed == hashlib.sha256(answerer.data[:len(sent)]).hexdigest()
    assert answerer.done.wait(TIMEOUT)
    assert answerer.received.hexdigest() == hashlib.sha256(sent).hexdigest()


def upstream_context(certs):
    ctx = levent.TLSContext()
    ctx.load_verify_locations(cafile=certs.ca)
    return ctx


def proxy_server_context(certs):
    ctx = levent.TLSContext(server_side=True)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


@pytest.mark.parametrize("mode", MODES)
def test_tls_upstream_wraps_plain_clients(servers, certs, mode):
    answerer = Answerer(tls_server_context(certs))
    up = servers.upstream(answerer)
    # The server name defaults to the upstream host, 127.0.0.1: checked against the IP SAN.
    px = servers.proxy(up.address, upstream_tls=upstream_context(certs), mode=mode)
    assert px.proxy.mode == mode
    data = os.urandom(TLS_SIZE)
    with px.connect() as c:
        echoed = lockstep(c, data)
        c.shutdown(socket.SHUT_WR)      # over TLS, the first EOF closes both sides gracefully
        assert recv_all(c) == b""
    check_answered(answerer, data, echoed)
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    assert (px.proxy.counters.bytes_up, px.proxy.counters.bytes_down) == (TLS_SIZE, TLS_SIZE)


@pytest.mark.parametrize("mode", MODES)
def test_tls_clients_unwrapped_to_plain_upstream(servers, certs, mode):
    answerer = Answerer()
    up = servers.upstream(answerer)
    px = servers.proxy(up.address, client_tls=proxy_server_context(certs), mode=mode)
    data = os.urandom(TLS_SIZE)
    with tls_client(certs, px.address) as c:
        echoed = lockstep(c, data)
        c.unwrap()      # sends close_notify and returns once the proxy answered with its own
    check_answered(answerer, data, echoed)
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)


@pytest.mark.parametrize("mode", MODES)
def test_tls_both_ways_on_the_command_line(servers, certs, child_env, mode):
    answerer = Answerer(tls_server_context(certs))
    up = servers.upstream(answerer)
    proc, address = start_cli(child_env, ("localhost", up.address[1]), "--cert", certs.server_cert,
                              "--key", certs.server_key, "--tls-upstream", "--cafile", certs.ca, "--mode", mode)
    try:
        data = os.urandom(TLS_SIZE)
        with tls_client(certs, address) as c:
            echoed = lockstep(c, data)
            c.unwrap()
        check_answered(answerer, data, echoed)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert f"bytes_up {TLS_SIZE}, bytes_down {TLS_SIZE}" in out, err


@pytest.mark.parametrize("mode", MODES)
def test_wrong_upstream_name_closes_the_client_and_logs_why(servers, certs, caplog, mode):
    answerer = Answerer(tls_server_context(certs))
    up = servers.upstream(answerer)
    px = servers.proxy(up.address, upstream_tls=upstream_context(certs), upstream_server_name="example.com",
                       mode=mode)
    with caplog.at_level(logging.WARNING, logger="levent.proxy"), px.connect() as c:
        c.sendall(b"hello")
        try:
            assert recv_all(c) == b""
        except ConnectionResetError:    # the abort found "hello" unread
            pass
    assert wait_until(lambda: px.proxy.counters.failed == 1 and px.proxy.connections == 0, TIMEOUT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("TLS handshake with upstream" in m and "certificate verify failed" in m
               and "hostname mismatch" in m.lower() for m in messages), messages
    assert wait_until(lambda: answerer.refused, TIMEOUT)     # the proxy's alert reached the upstream


@pytest.mark.parametrize("mode", MODES)
def test_insecure_accepts_an_untrusted_upstream(servers, certs, child_env, mode):
    answerer = Answerer(tls_server_context(certs, self_signed=True), size=1 << 20)
    up = servers.upstream(answerer)
    proc, address = start_cli(child_env, up.address, "--tls-upstream", "--insecure", "--mode", mode)
    try:
        data = os.urandom(1 << 20)
        with socket.create_connection(address, timeout=TIMEOUT) as c:
            echoed = lockstep(c, data)
        check_answered(answerer, data, echoed)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert "the upstream's certificate is not verified" in err


@pytest.mark.parametrize("mode", MODES)
def test_client_failing_the_handshake_is_closed_and_logged(servers, certs, caplog, mode):
    up = servers.upstream()
    px = servers.proxy(up.address, client_tls=proxy_server_context(certs), mode=mode)
    with caplog.at_level(logging.INFO, logger="levent.proxy"), px.connect() as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")    # plain text to a TLS port
        try:
            recv_all(c)     # the alert, then EOF
        except ConnectionResetError:
            pass
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("client 127.0.0.1" in m and "http request" in m.lower() for m in messages), messages


@pytest.mark.parametrize("mode", MODES)
def test_tls_both_sides_16_mib_each_way_concurrently(servers, certs, mode):
    size = 16 << 20
    up_data, down_data = os.urandom(size), os.urandom(size)
    received_up = {}

    def upstream(conn):
        with tls_server_context(certs).wrap_socket(conn, server_side=True) as tls:
            received_up["sha256"] = ssl_exchange(tls, down_data, size)
            assert tls.recv(100) == b""     # the proxy passed the client's close_notify on
            tls.unwrap()

    up = servers.upstream(upstream)
    px = servers.proxy(up.address, client_tls=proxy_server_context(certs), upstream_tls=upstream_context(certs),
                       mode=mode)
    with tls_client(certs, px.address) as c:
        got = ssl_exchange(c, up_data, size)
        c.unwrap()
    assert got == hashlib.sha256(down_data).hexdigest()
    assert wait_until(lambda: "sha256" in received_up, TIMEOUT)
    assert received_up["sha256"] == hashlib.sha256(up_data).hexdigest()
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    assert (px.proxy.counters.bytes_up, px.proxy.counters.bytes_down) == (size, size)


@pytest.mark.parametrize("mode", MODES)
def test_tls_truncation_aborts_both_sides_and_is_logged(servers, certs, caplog, mode):
    answered = threading.Event()

    def truncating(conn):
        tls = tls_server_context(certs).wrap_socket(conn, server_side=True)
        tls.sendall(tls.recv(100).upper())
        answered.wait(TIMEOUT)      # (an abort may drop what is not sent yet)
        # the socket closes without close_notify

    up = servers.upstream(truncating)
    px = servers.proxy(up.address, client_tls=proxy_server_context(certs), upstream_tls=upstream_context(certs),
                       mode=mode)
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)     # on by default in some Pythons (3.9.18)
    with caplog.at_level(logging.INFO, logger="levent.proxy"), \
            ctx.wrap_socket(px.connect(), server_hostname="localhost", suppress_ragged_eofs=False) as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"HELLO"
        answered.set()
        # The client sees the truncation too: no close_notify (or a reset, if the abort found bytes unread).
        # Python 3.9 reports it as a plain SSLError (UNEXPECTED_EOF_WHILE_READING), later ones as SSLEOFError.
        with pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
            c.recv(100)
        assert isinstance(info.value, ConnectionResetError) or "eof" in str(info.value).lower()
    assert wait_until(lambda: px.proxy.connections == 0, TIMEOUT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("client 127.0.0.1" in m and "truncated" in m for m in messages), messages


def _socket_inode(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return None


def _fd_connected_to(address):
    """The fd of this process whose socket's peer is ``address``."""
    for name in os.listdir("/proc/self/fd"):
        if not (_socket_inode(int(name)) or "").startswith("socket:"):
            continue
        s = socket.socket(fileno=int(name))
        try:
            if s.family == socket.AF_INET and s.getpeername() == address:
                return int(name)
        except OSError:
            pass
        finally:
            s.detach()
    raise AssertionError(f"no socket of this process is connected to {address}")


@pytest.mark.parametrize("mode", MODES)
def test_tls_close_is_bounded_when_the_client_never_reads(servers, certs, caplog, monkeypatch, mode):
    monkeypatch.setattr(levent.proxy, "CLOSE_LINGER", 0.3)
    stop = threading.Event()

    def firehose(conn):
        with tls_server_context(certs).wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(0.1)
            chunk = b"x" * 65536
            while not stop.is_set():
                try:
                    tls.send(chunk)
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    return

    up = servers.upstream(firehose)
    px = servers.proxy(up.address, upstream_tls=upstream_context(certs), mode=mode)
    try:
        with caplog.at_level(logging.INFO, logger="levent.proxy"), px.connect() as c:
            assert c.recv(1)        # the upstream's bytes flow ...
            time.sleep(0.3)         # ... until every buffer toward this client is full
            # The proxy's socket toward this client (the proxy runs in this process): it must close.
            fd = _fd_connected_to(c.getsockname())
            inode = _socket_inode(fd)
            assert inode.startswith("socket:")
            started = time.monotonic()
            c.shutdown(socket.SHUT_WR)      # EOF: the proxy closes, but can never send the rest
            assert wait_until(lambda: px.proxy.connections == 0 and _socket_inode(fd) != inode, TIMEOUT)
            assert 0.25 < time.monotonic() - started < 3
    finally:
        stop.set()
    if mode == "events":
        messages = [r.getMessage() for r in caplog.records]
        assert any("without progress" in m for m in messages), messages


@pytest.mark.parametrize("args, says", [
    (["--key", "k.pem"], "--key needs --cert"),
    (["--insecure"], "add --tls-upstream"),
    (["--cafile", "ca.pem"], "add --tls-upstream"),
    (["--server-name", "example.com"], "add --tls-upstream"),
    (["--tls-upstream", "--insecure", "--cafile", "ca.pem"], "drop one of them"),
    (["--cert", "/nonexistent.pem"], "--cert/--key: cannot load"),
])
def test_tls_flag_misuse_is_a_usage_error(args, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        proxy_main(["--upstream", "127.0.0.1:1", *args])
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_tls_arguments_misuse_is_refused(certs):
    with levent.EventBase() as base:
        upstream = ("127.0.0.1", 1)
        with pytest.raises(TypeError, match="server_side=True"):
            Proxy(base, upstream=upstream, client_tls=levent.TLSContext())
        with pytest.raises(TypeError, match="client-side"):
            Proxy(base, upstream=upstream, upstream_tls=proxy_server_context(certs))
        with pytest.raises(ValueError, match="not both"):
            Proxy(base, upstream=upstream, upstream_tls=upstream_context(certs), upstream_stream=lambda b, a: None)
        with pytest.raises(ValueError, match="upstream_tls only"):
            Proxy(base, upstream=upstream, upstream_server_name="example.com")
        with pytest.raises(ValueError, match="load_cert_chain"):
            Proxy(base, upstream=upstream, client_tls=levent.TLSContext(server_side=True))
        with pytest.raises(ValueError, match="transforms and custom streams"):
            Proxy(base, upstream=upstream, upstream_tls=upstream_context(certs), transform_up=xor, mode="events")
