"""Listener: libevent's evconnlistener over IPv4, IPv6 and AF_UNIX sockets, in its three accept modes
(socket, fd, bufferevent), wrapping existing sockets, and its out-of-fds (EMFILE) pause.

Every loop is bounded: run_loop() (a watchdog thread) or a guard Timer."""
import errno
import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from levent import READ, BufferEvent, EventBase, Listener, Timer, supported_methods


class Boom(Exception):
    """Raised by test callbacks; must come out of loop()."""


def echo_roundtrip(base, address, run_loop, message=b"ping over the wire"):
    """Connect a client BufferEvent to ``address``, send ``message``, return what came back."""
    got = bytearray()
    events = []

    def on_read(bev):
        got.extend(bev.read())
        if len(got) >= len(message):
            base.loopbreak()

    def on_event(bev, what, error):
        events.append((what, error))
        if not what & BufferEvent.CONNECTED:
            base.loopbreak()

    client = BufferEvent(base, on_read=on_read, on_event=on_event)
    client.enable(READ)
    client.write(message)
    client.connect(address)
    run_loop(base, timeout=5)
    assert events == [(BufferEvent.CONNECTED, None)]
    client.close()
    return bytes(got)


# -- echo over each address family, each accept mode ------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "unix"])
def test_echo_accept_bufferevent(base, family, echo_server, unix_path, request, run_loop):
    if family == "ipv4":
        address = ("127.0.0.1", 0)
    elif family == "ipv6":
        address = (request.getfixturevalue("ipv6_loopback"), 0)     # skips if ::1 cannot be bound
    else:
        address = unix_path
    listener, accepted = echo_server(base, address)
    bound = listener.address
    if family == "unix":
        assert bound == unix_path and os.path.exists(unix_path)
    else:
        assert bound[0] == address[0] and bound[1] != 0
    message = b"%s echo " % family.encode() * 100
    assert echo_roundtrip(base, bound, run_loop, message) == message
    assert len(accepted) == 1 and isinstance(accepted[0], BufferEvent)
    listener.close()


def test_accept_socket_mode(base, run_loop):
    conns = []

    def on_accept(listener, conn, address):
        conns.append((conn, address))
        assert isinstance(conn, socket.socket)
        assert conn.family == socket.AF_INET and conn.type == socket.SOCK_STREAM
        # Wrap it: the echo side is a BufferEvent that owns (detaches) the socket.
        bev = BufferEvent(base, conn, on_read=lambda b: b.write(b.read()))
        bev.enable(READ)

    listener = Listener(base, on_accept, ("127.0.0.1", 0))     # accept="socket" is the default
    assert echo_roundtrip(base, listener.address, run_loop) == b"ping over the wire"
    assert len(conns) == 1
    conn, address = conns[0]
    assert conn.fileno() == -1       # detached by the BufferEvent
    assert address[0] == "127.0.0.1" and address[1] > 0
    listener.close()


def test_accept_socket_mode_plain_socket_io(base, run_loop):
    """The accepted socket.socket is an ordinary socket: use it with blocking calls."""
    peers = []

    def on_accept(listener, conn, address):
        peers.append(address)
        with conn:
            conn.setblocking(True)
            conn.sendall(b"greetings from " + repr(address).encode())
        listener.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0))
    with socket.create_connection(listener.address, timeout=5) as client:
        run_loop(base, timeout=5)
        data = b""
        while True:
            chunk = client.recv(4096)
            if not chunk:
                break
            data += chunk
        assert peers == [client.getsockname()]
        assert data == b"greetings from " + repr(client.getsockname()).encode()


def test_accept_fd_mode(base, run_loop):
    fds = []

    def on_accept(listener, fd, address):
        assert type(fd) is int
        os.fstat(fd)
        fds.append(fd)
        bev = BufferEvent(base, fd, on_read=lambda b: b.write(b.read()))   # owns the fd now
        bev.enable(READ)

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="fd")
    assert echo_roundtrip(base, listener.address, run_loop) == b"ping over the wire"
    assert len(fds) == 1
    listener.close()


def test_accept_fd_mode_fd_is_yours_to_close(base, count_open_fds, run_loop):
    base.loop(nonblock=True)     # the first loop() opens the base's signal wakeup socketpair
    gc.collect()
    before = count_open_fds()
    fds = []

    def on_accept(listener, fd, address):
        fds.append(fd)
        if len(fds) == 3:
            base.loopbreak()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="fd")
    clients = [socket.create_connection(listener.address) for _ in range(3)]
    run_loop(base, timeout=5)
    for fd in fds:
        os.fstat(fd)          # still open: nothing closed it for us
        os.close(fd)
    for c in clients:
        c.close()
    listener.close()
    assert count_open_fds() == before


def test_accept_bufferevent_options(base, run_loop):
    got = []

    def on_accept(listener, bev, address):
        got.append(bev.options)
        listener.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent",
                        bufferevent_options=BufferEvent.CLOSE_ON_FREE | BufferEvent.DEFER_CALLBACKS)
    with socket.create_connection(listener.address):
        run_loop(base, timeout=5)
    assert got == [BufferEvent.CLOSE_ON_FREE | BufferEvent.DEFER_CALLBACKS]


def test_accept_threadsafe_bufferevent_gets_deferred_unlocked_callbacks(base, run_loop):
    """A THREADSAFE BufferEvent must run its callbacks deferred and unlocked (they take the GIL):
    BufferEvent(options=THREADSAFE) adds DEFER_CALLBACKS|UNLOCK_CALLBACKS; the Listener's
    bufferevent_options must get the same treatment."""
    got = []

    def on_accept(listener, bev, address):
        got.append(bev.options)
        listener.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent",
                        bufferevent_options=BufferEvent.CLOSE_ON_FREE | BufferEvent.THREADSAFE)
    with socket.create_connection(listener.address):
        run_loop(base, timeout=5)
    assert len(got) == 1
    expected = (BufferEvent.CLOSE_ON_FREE | BufferEvent.THREADSAFE | BufferEvent.DEFER_CALLBACKS
                | BufferEvent.UNLOCK_CALLBACKS)
    assert got[0] == expected


# -- addresses and existing sockets -------------------------------------------------------------------


def test_address_for_port_zero_ipv4(base):
    listener = Listener(base, lambda *a: None, ("127.0.0.1", 0))
    host, port = listener.address
    assert host == "127.0.0.1" and 0 < port < 65536
    with socket.socket() as probe:
        probe.settimeout(5)
        probe.connect((host, port))           # the kernel accepts it into the backlog
    assert listener.fileno() >= 0
    assert repr(listener) == f"<Listener fd={listener.fileno()} address={listener.address!r}>"
    listener.close()
    assert listener.closed and repr(listener) == "<Listener closed>"


def test_address_for_port_zero_ipv6(base, ipv6_loopback):
    listener = Listener(base, lambda *a: None, (ipv6_loopback, 0))
    address = listener.address
    assert len(address) == 4
    assert address[0] == "::1" and address[1] > 0
    listener.close()


def test_address_unix(base, unix_path):
    listener = Listener(base, lambda *a: None, unix_path)
    assert listener.address == unix_path
    listener.close()


def test_wrap_listening_socket(base, run_loop):
    srv = socket.create_server(("127.0.0.1", 0))
    address = srv.getsockname()
    fd = srv.fileno()

    def on_accept(listener, bev, addr):
        bev.on_read = lambda b: b.write(b.read())
        bev.enable(READ)

    listener = Listener(base, on_accept, sock=srv, accept="bufferevent")
    assert srv.fileno() == -1            # CLOSE_ON_FREE (default): the listener owns the fd now
    assert listener.fileno() == fd
    assert listener.address == address
    assert echo_roundtrip(base, address, run_loop) == b"ping over the wire"
    listener.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_wrap_bound_socket_that_is_not_listening(base, run_loop):
    """libevent calls listen() on the socket it is given."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = s.getsockname()
    accepted = []

    def on_accept(listener, conn, addr):
        accepted.append(addr)
        conn.close()
        base.loopbreak()

    listener = Listener(base, on_accept, sock=s)
    with socket.create_connection(address, timeout=5) as c:
        run_loop(base, timeout=5)
        assert accepted == [c.getsockname()]
    listener.close()


@pytest.mark.parametrize("kind", ["socket", "fd"])
def test_wrap_without_close_on_free_leaves_socket_open(base, kind, run_loop):
    srv = socket.create_server(("127.0.0.1", 0))
    with srv:
        accepted = []

        def on_accept(listener, conn, addr):
            accepted.append(addr)
            conn.close()
            base.loopbreak()

        listener = Listener(base, on_accept, sock=srv if kind == "socket" else srv.fileno(),
                            flags=Listener.REUSEABLE)
        assert srv.fileno() >= 0
        with socket.create_connection(srv.getsockname(), timeout=5):
            run_loop(base, timeout=5)
        assert len(accepted) == 1
        listener.close()
        os.fstat(srv.fileno())
        # Still a working listening socket after the Listener is gone.
        with socket.create_connection(srv.getsockname(), timeout=5):
            srv.settimeout(5)
            conn, _ = srv.accept()
            conn.close()


# -- enable, disable, close ---------------------------------------------------------------------------


def test_disabled_listener_leaves_connections_in_backlog(base, run_loop):
    accepted = []

    def on_accept(listener, conn, addr):
        accepted.append(addr)
        conn.close()
        if len(accepted) == 2:
            base.loopbreak()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), flags=Listener.DISABLED | Listener.REUSEABLE
                        | Listener.CLOSE_ON_FREE)
    clients = [socket.create_connection(listener.address, timeout=5) for _ in range(2)]
    stop = Timer(base, base.loopbreak)
    stop.add(0.2)
    run_loop(base, timeout=5)
    assert accepted == []
    listener.enable()
    stop.delete()
    run_loop(base, timeout=5)
    assert sorted(accepted) == sorted(c.getsockname() for c in clients)
    listener.disable()
    third = socket.create_connection(listener.address, timeout=5)
    stop.add(0.2)
    run_loop(base, timeout=5)
    assert len(accepted) == 2
    for c in clients + [third]:
        c.close()
    listener.close()


def test_close_stops_listening(base):
    listener = Listener(base, lambda *a: None, ("127.0.0.1", 0))
    address = listener.address
    fd = listener.fileno()
    listener.close()
    listener.close()      # twice: nothing
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_close_inside_on_accept(base, run_loop):
    accepted = []

    def on_accept(listener, conn, addr):
        accepted.append(addr)
        conn.close()
        listener.close()
        assert listener.closed

    listener = Listener(base, on_accept, ("127.0.0.1", 0))
    c1 = socket.create_connection(listener.address, timeout=5)
    c2 = socket.create_connection(listener.address, timeout=5)
    assert run_loop(base, timeout=5) is True      # nothing left once the listener closed itself
    assert len(accepted) == 1
    c1.close()
    c2.close()


def test_context_manager(base):
    with Listener(base, lambda *a: None, ("127.0.0.1", 0)) as listener:
        assert not listener.closed
    assert listener.closed


def test_dropped_listener_keeps_accepting_until_base_close(backend, run_loop):
    base = EventBase(method=backend)
    accepted = []

    def on_accept(listener, conn, addr):
        accepted.append(addr)
        conn.close()
        base.loopbreak()

    def make():
        listener = Listener(base, on_accept, ("127.0.0.1", 0))
        return weakref.ref(listener), listener.address

    ref, address = make()
    gc.collect()
    assert ref() is not None
    with socket.create_connection(address, timeout=5):
        run_loop(base, timeout=5)
    assert len(accepted) == 1
    base.close()
    gc.collect()
    assert ref() is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_listener_from_another_thread_while_loop_runs_raises(base, add_guard, run_loop):
    listener = Listener(base, lambda *a: None, ("127.0.0.1", 0))
    outcomes = []

    def worker():
        for name, call in (("disable", listener.disable), ("close", listener.close),
                           ("address", lambda: listener.address)):
            try:
                call()
            except RuntimeError:
                outcomes.append((name, "RuntimeError"))
            except BaseException as exc:
                outcomes.append((name, type(exc).__name__))
            else:
                outcomes.append((name, "no error"))
        base.loopbreak()

    guard = add_guard(base, 5)
    th = threading.Timer(0.05, worker)
    th.start()
    try:
        run_loop(base, timeout=10)
    finally:
        th.join(5)
    guard.delete()
    assert outcomes == [("disable", "RuntimeError"), ("close", "RuntimeError"), ("address", "RuntimeError")]
    assert not listener.closed
    listener.close()


# -- exceptions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "fd", "bufferevent"])
def test_exception_in_on_accept_comes_out_of_loop(base, mode, run_loop):
    conns = []

    def on_accept(listener, conn, addr):
        conns.append(conn)
        raise Boom(mode)

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept=mode)
    with socket.create_connection(listener.address, timeout=5):
        with pytest.raises(Boom, match=mode):
            run_loop(base, timeout=5)
    assert len(conns) == 1
    if mode == "fd":
        os.close(conns[0])
    elif mode == "socket":
        conns[0].close()
    listener.close()


# -- out of fds: EMFILE -------------------------------------------------------------------------------

EMFILE_CHILD = textwrap.dedent(r'''
    import errno, json, os, resource, socket, sys, time
    from levent import EventBase, Listener, Timer

    backend, use_on_error = sys.argv[1], sys.argv[2] == "1"
    N = 5
    base = EventBase(method=backend)
    accepted, errors, result = [], [], {}

    def on_accept(listener, sock, addr):
        accepted.append(time.monotonic())
        sock.close()
        if len(accepted) == N:
            base.loopbreak()

    def on_error(listener, exc):
        errors.append((time.monotonic(), exc.errno, type(exc).__name__))

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="socket", backlog=64,
                        on_error=on_error if use_on_error else None, pause=0.1)
    clients = [socket.socket() for _ in range(N)]
    for c in clients:
        c.setblocking(False)

    def starve():
        # While the loop runs (as in a server that runs out of fds), use up every fd below a
        # lowered limit so that accept() fails with EMFILE, then let the clients connect.
        global cpu0
        nfds = len(os.listdir("/proc/self/fd"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nfds + 32, hard))
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc
                break
        for c in clients:
            rc = c.connect_ex(listener.address)
            assert rc in (0, errno.EINPROGRESS), rc
        result["fillers"] = len(fillers)
        cpu0 = time.process_time()
        Timer(base, starved).add(1.0)

    def starved():
        result["cpu_starved"] = time.process_time() - cpu0
        result["errors_starved"] = len(errors)
        result["accepted_starved"] = len(accepted)
        for fd in fillers:
            os.close(fd)
        result["freed_at"] = time.monotonic()

    def give_up():
        result["gave_up"] = True
        base.loopbreak()

    fillers = []
    cpu0 = None
    Timer(base, starve).add(0.01)
    Timer(base, give_up).add(6.0)
    base.loop()
    result["accepted"] = len(accepted)
    result["errnos"] = sorted({e[1] for e in errors})
    result["error_types"] = sorted({e[2] for e in errors})
    result["errors_total"] = len(errors)
    if accepted and "freed_at" in result:
        result["resumed_after"] = accepted[-1] - result["freed_at"]
    print(json.dumps(result))
''')


@pytest.mark.parametrize("use_on_error", [True, False], ids=["on_error", "log"])
def test_emfile_pauses_accepting_without_spinning(stream_backend, use_on_error, child_env):
    if not use_on_error and stream_backend != "epoll":
        pytest.skip("the logging variant runs on epoll only")
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd")
    proc = subprocess.run([sys.executable, "-c", EMFILE_CHILD, stream_backend, "1" if use_on_error else "0"],
                          env=child_env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "gave_up" not in result, f"the listener never resumed: {result}"
    # While out of fds: no connection accepted and no busy loop.
    assert result["accepted_starved"] == 0
    assert result["cpu_starved"] < 0.5, f"the listener spun: {result['cpu_starved']:.2f} s of CPU in 1 s"
    # It resumed once fds were free again.
    assert result["accepted"] == 5
    assert result["resumed_after"] < 1.0
    if use_on_error:
        assert result["errnos"] == [errno.EMFILE]
        assert result["error_types"] == ["OSError"]
        # Paused 0.1 s after each failure: about 10 errors in the starved second, not thousands.
        assert 1 <= result["errors_starved"] <= 30, result
    else:
        warnings = [line for line in proc.stderr.splitlines() if "Too many open files" in line]
        assert 1 <= len(warnings) <= 30, proc.stderr[-2000:]


# -- misuse ---------------------------------------------------------------------------------------------


@pytest.fixture
def any_base():
    with EventBase() as b:
        yield b


def noop(*args):
    pass


def test_address_and_sock_both_or_neither_raise_type_error(any_base):
    with pytest.raises(TypeError):
        Listener(any_base, noop)
    with socket.socket() as s:
        with pytest.raises(TypeError):
            Listener(any_base, noop, ("127.0.0.1", 0), sock=s)
        assert s.fileno() >= 0


def test_wrong_types_raise_type_error(any_base):
    for call in (lambda: Listener("base", noop, ("127.0.0.1", 0)),
                 lambda: Listener(any_base, "not callable", ("127.0.0.1", 0)),
                 lambda: Listener(any_base, noop, ("127.0.0.1", 0), on_error=5),
                 lambda: Listener(any_base, noop, 123),
                 lambda: Listener(any_base, noop, (1, 2)),
                 lambda: Listener(any_base, noop, ("127.0.0.1", 0), backlog="x"),
                 lambda: Listener(any_base, noop, ("127.0.0.1", 0), flags="x")):
        with pytest.raises(TypeError):
            call()
    listener = Listener(any_base, noop, ("127.0.0.1", 0))
    with pytest.raises(TypeError):
        listener.on_accept = None
    with pytest.raises(TypeError):
        listener.on_error = 3
    listener.on_error = None
    assert listener.on_error is None
    listener.on_accept = print
    assert listener.on_accept is print
    listener.close()


def test_sock_that_is_not_a_socket_raises_type_error(any_base):
    with pytest.raises(TypeError):
        Listener(any_base, noop, sock="not a socket")


def test_bad_values_raise_value_error(any_base):
    for kwargs in ({"accept": "bogus"}, {"flags": 1 << 20}, {"pause": 0}, {"pause": -1}):
        with pytest.raises(ValueError):
            Listener(any_base, noop, ("127.0.0.1", 0), **kwargs)
    with pytest.raises(ValueError):
        Listener(any_base, noop, ("127.0.0.1", 70000))
    with pytest.raises(ValueError):
        Listener(any_base, noop, "")
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError):
        Listener(any_base, noop, sock=closed)


def test_bad_bufferevent_options_raise_value_error(any_base):
    with pytest.raises(ValueError):
        Listener(any_base, noop, ("127.0.0.1", 0), accept="bufferevent", bufferevent_options=0x10000)


def test_address_in_use_raises_oserror(any_base):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(OSError) as info:
            Listener(any_base, noop, taken.getsockname(), flags=Listener.CLOSE_ON_FREE)
        assert info.value.errno == errno.EADDRINUSE


def test_closed_listener_and_closed_base(any_base):
    listener = Listener(any_base, noop, ("127.0.0.1", 0))
    listener.close()
    for call in (lambda: listener.address, listener.fileno, listener.enable, listener.disable):
        with pytest.raises(ValueError):
            call()
    base = EventBase()
    base.close()
    with pytest.raises(ValueError):
        Listener(base, noop, ("127.0.0.1", 0))
    base = EventBase()
    listener = Listener(base, noop, ("127.0.0.1", 0))
    base.close()
    assert listener.closed
    with pytest.raises(ValueError):
        listener.address


def test_bufferevent_fast_path_on_select_refuses_high_fd_and_closes_it(child_env):
    """A select base cannot watch fds >= 1024 (libevent would abort the process): an accepted fd up
    there is refused with ValueError out of loop() and closed, so the client sees EOF."""
    if "select" not in supported_methods():
        pytest.skip("no select backend here")
    script = textwrap.dedent("""
        import os, resource, socket, levent
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1100:
            print("skip: RLIMIT_NOFILE hard limit", hard)
            raise SystemExit(0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
        base = levent.EventBase(method="select")
        listener = levent.Listener(base, lambda *a: None, ("127.0.0.1", 0), accept="bufferevent")
        client = socket.socket()
        while os.open("/dev/null", os.O_RDONLY) < 1030:
            pass
        client.connect(listener.address)
        try:
            base.loop(once=True)
        except ValueError as exc:
            assert "select" in str(exc), exc
        else:
            raise AssertionError("loop() did not raise")
        client.settimeout(5)
        assert client.recv(10) == b"", "the accepted fd was not closed"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=child_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{proc.stderr}"
    if proc.stdout.startswith("skip:"):
        pytest.skip(proc.stdout.strip())
    assert proc.stdout.strip() == "ok"
