"""BufferEvent: libevent's bufferevent over real sockets (TCP on 127.0.0.1, AF_UNIX pairs), pairs and
Python filters.

Every loop is bounded: run_loop() (a watchdog thread) or a guard Timer. Tests that move a lot of
data or use many fds run on epoll and poll only (``stream_base``); the others on every backend."""
import errno
import gc
import hashlib
import os
import random
import socket
import struct
import threading
import time
import weakref
import zlib

import pytest

import levent
from levent import READ, WRITE, Buffer, BufferEvent, EventBase, Listener, Timer

KiB = 1024
MiB = 1024 * KiB


class Boom(Exception):
    """Raised by test callbacks; must come out of loop()."""


class Source:
    """Deterministic pseudo-random data, produced in chunks, hashed as it is handed out."""

    def __init__(self, total, chunk, seed):
        rnd = random.Random(seed)
        # A prime number of distinct random blocks, each stamped with its chunk number: no period.
        self._pool = [rnd.randbytes(chunk) for _ in range(7)]
        self.total = total
        self.chunk = chunk
        self.produced = 0
        self._n = 0
        self.sha = hashlib.sha256()

    def next(self):
        n = min(self.chunk, self.total - self.produced)
        if n <= 0:
            return b""
        data = (struct.pack("<Q", self._n) + self._pool[self._n % 7][8:])[:n]
        self._n += 1
        self.produced += n
        self.sha.update(data)
        return data

    @property
    def done(self):
        return self.produced >= self.total


class Sink:
    """Counts and hashes what a BufferEvent reads."""

    def __init__(self):
        self.received = 0
        self.sha = hashlib.sha256()
        self.eof_at = None    # bytes received when EOF was reported
        self.events = []

    def on_read(self, bev):
        data = bev.read()
        self.received += len(data)
        self.sha.update(data)

    def on_event(self, bev, what, error):
        self.events.append((what, error))
        if what & BufferEvent.EOF and self.eof_at is None:
            self.eof_at = self.received


def tcp_bufferevent_pair(base, run_loop, **client_kwargs):
    """(client, server): two connected BufferEvents over 127.0.0.1 made with a Listener."""
    accepted = []

    def on_accept(listener, bev, addr):
        accepted.append(bev)
        listener.close()
        base.loopbreak()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    client = BufferEvent(base, **client_kwargs)
    client.connect(listener.address)
    run_loop(base, timeout=5)
    assert len(accepted) == 1
    return client, accepted[0]


def socketpair_bufferevents(base, options=BufferEvent.CLOSE_ON_FREE):
    a, b = socket.socketpair()
    return BufferEvent(base, a, options=options), BufferEvent(base, b, options=options)


# -- echo and bulk transfer ---------------------------------------------------------------------------


def test_echo_over_tcp(base, echo_server, run_loop):
    listener, accepted = echo_server(base)
    replies = []
    events = []

    def on_event(bev, what, error):
        events.append(what)
        if what & BufferEvent.CONNECTED:
            bev.write(b"hello, ")
            bev.write(memoryview(b"world"))
            bev.write(bytearray(b"!"))

    def on_read(bev):
        replies.append(bev.read())
        if b"".join(replies) == b"hello, world!":
            bev.close()
            listener.close()

    client = BufferEvent(base, on_read=on_read, on_event=on_event)
    client.enable(READ)
    client.connect(listener.address)
    assert run_loop(base, timeout=5) is True   # nothing left once both sides closed
    assert b"".join(replies) == b"hello, world!"
    assert events == [BufferEvent.CONNECTED]
    assert len(accepted) == 1 and accepted[0].closed and client.closed


def test_100_mib_each_way_with_sha256(stream_base, run_loop):
    """100 MiB in each direction at once over TCP loopback; writers top their output up from
    on_write, so that neither side ever buffers more than LOW + 2 * CHUNK."""
    base = stream_base
    total, chunk, low = 100 * MiB, 256 * KiB, 512 * KiB
    client, server = tcp_bufferevent_pair(base, run_loop)
    ends = {}
    for name, bev, seed in (("client", client, 1), ("server", server, 2)):
        ends[name] = end = {"src": Source(total, chunk, seed), "sink": Sink(), "peak": 0}

        def on_write(bev, end=end):
            for _ in range(2):
                data = end["src"].next()
                if data:
                    bev.write(data)
            end["peak"] = max(end["peak"], len(bev.output))

        def on_read(bev, end=end):
            end["sink"].on_read(bev)
            if all(e["sink"].received >= total for e in ends.values()):
                base.loopbreak()

        bev.on_read = on_read
        bev.on_write = on_write
        bev.on_event = end["sink"].on_event
        bev.set_watermark(WRITE, low)
        bev.enable(READ | WRITE)
        on_write(bev)
    t0 = time.monotonic()
    run_loop(base, timeout=40)
    elapsed = time.monotonic() - t0
    for name, other in (("client", "server"), ("server", "client")):
        src, sink = ends[name]["src"], ends[other]["sink"]
        assert src.done, f"{name} did not write everything"
        assert sink.received == total, f"{name} -> {other}: {sink.received} of {total} bytes"
        assert sink.sha.hexdigest() == src.sha.hexdigest(), f"{name} -> {other}: data differs"
        assert ends[name]["peak"] <= low + 2 * chunk, f"{name} buffered {ends[name]['peak']} bytes"
        # Nothing but the client's CONNECTED (reported once the loop ran): no EOF, no ERROR.
        assert [w for w, e in ends[name]["sink"].events if w != BufferEvent.CONNECTED] == []
    print(f"200 MiB in {elapsed:.2f} s on {base.method}")


@pytest.fixture
def fds_for_1000_connections():
    """Both ends of 1000 connections live in this process: make room when the soft RLIMIT_NOFILE is
    the common 1024 (raising it within the hard limit, and putting it back afterwards)."""
    import resource

    need = 2400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} fds needed for 1000 connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1000_concurrent_connections(stream_base, echo_server, run_loop, fds_for_1000_connections):
    base = stream_base
    n = 1000
    listener, accepted = echo_server(base, backlog=1024)
    messages = [(b"connection %04d:" % i) * (1 + i % 13) for i in range(n)]
    replies = [bytearray() for _ in range(n)]
    done = []
    problems = []

    def make_client(i):
        def on_read(bev):
            replies[i] += bev.read()
            if len(replies[i]) >= len(messages[i]):
                if bytes(replies[i]) != messages[i]:
                    problems.append(i)
                done.append(i)
                if len(done) == n:
                    base.loopbreak()

        def on_event(bev, what, error):
            if not what & BufferEvent.CONNECTED:
                problems.append((i, what, error))
                base.loopbreak()

        bev = BufferEvent(base, on_read=on_read, on_event=on_event)
        bev.enable(READ)
        bev.write(messages[i])     # queued until the connection is up
        bev.connect(listener.address)
        return bev

    clients = [make_client(i) for i in range(n)]
    run_loop(base, timeout=30)
    assert problems == []
    assert len(done) == n
    # Every client is still connected: the server held 1000 connections at once.
    assert len(accepted) == n
    assert not any(b.closed for b in accepted)
    assert not any(c.closed for c in clients)
    for c in clients:
        c.abort()


# -- EOF, errors and timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100_000, 5 * MiB])
def test_eof_comes_after_all_data(base, size, run_loop):
    data = random.Random(size).randbytes(size)
    with socket.create_server(("127.0.0.1", 0)) as srv:
        peer = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
    sink = Sink()

    def on_event(bev, what, error):
        sink.on_event(bev, what, error)
        bev.close()

    reader = BufferEvent(base, conn, on_read=sink.on_read, on_event=on_event)
    reader.enable(READ)

    def writer():
        with peer:
            peer.sendall(data)

    th = threading.Thread(target=writer)
    th.start()
    try:
        run_loop(base, timeout=10)
    finally:
        th.join(10)
    assert sink.events == [(BufferEvent.EOF | BufferEvent.READING, None)]
    assert sink.eof_at == size
    assert sink.sha.digest() == hashlib.sha256(data).digest()


def test_connection_refused_tcp(base, run_loop, refused_address):
    events = []
    bev = BufferEvent(base, on_event=lambda bev, what, error: events.append((what, error)))
    bev.connect(refused_address)
    run_loop(base, timeout=5)
    assert len(events) == 1
    what, error = events[0]
    assert what & BufferEvent.ERROR and not what & BufferEvent.CONNECTED
    assert isinstance(error, OSError)
    assert error.errno == errno.ECONNREFUSED


def test_connection_refused_unix(base, unix_path, run_loop):
    """A bound but not listening AF_UNIX socket refuses at once, inside connect()."""
    events = []
    with socket.socket(socket.AF_UNIX) as not_listening:
        not_listening.bind(unix_path)
        # Leave a stale errno behind in this thread: the refusal must not pick it up.
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(1)
            bev = BufferEvent(base, on_event=lambda bev, what, error: events.append((what, error)))
            bev.connect(unix_path)
            run_loop(base, timeout=5)
    assert len(events) == 1
    what, error = events[0]
    assert what & BufferEvent.ERROR
    assert isinstance(error, OSError) and error.errno == errno.ECONNREFUSED


def test_connect_to_missing_unix_path_raises(base, tmp_path):
    bev = BufferEvent(base)
    with pytest.raises(FileNotFoundError):
        bev.connect(str(tmp_path / "nothing-here"))


def test_read_timeout_on_idle_peer(base, socketpair, run_loop):
    a, idle = socketpair
    events = []

    def on_event(bev, what, error):
        events.append((what, error, time.monotonic(), bev.enabled))

    bev = BufferEvent(base, a, options=0, on_event=on_event)
    bev.set_timeouts(read=0.3)
    bev.enable(READ)
    t0 = time.monotonic()
    run_loop(base, timeout=5)
    assert len(events) == 1
    what, error, when, enabled = events[0]
    assert what == BufferEvent.TIMEOUT | BufferEvent.READING
    assert error is None
    assert 0.25 <= when - t0 < 2.0
    assert not enabled & READ       # libevent disables reading on a read timeout
    bev.abort()


def test_set_timeouts_none_removes_timeout(base, socketpair, run_loop):
    a, b = socketpair
    events = []
    bev = BufferEvent(base, a, options=0, on_event=lambda *args: events.append(args[1]))
    bev.set_timeouts(read=0.1)
    bev.set_timeouts(read=None)
    bev.enable(READ)
    stop = Timer(base, base.loopbreak)
    stop.add(0.4)
    run_loop(base, timeout=5)
    assert events == []
    bev.abort()


# -- flow control -------------------------------------------------------------------------------------


def test_slow_reader_bounds_writer_output(stream_base, run_loop):
    """The reader (a thread on a blocking socket) reads slowly; the writer only tops up its output
    from on_write at the write low watermark, so it never buffers more than LOW + CHUNK."""
    base = stream_base
    total, chunk, low = 24 * MiB, 64 * KiB, 128 * KiB
    with socket.create_server(("127.0.0.1", 0)) as srv:
        reader_sock = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
    reader_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * KiB)
    src = Source(total, chunk, seed=3)
    peak = [0]
    pauses = [0]     # on_write calls: each one means the writer waited for the output to drain
    got = {"n": 0, "sha": hashlib.sha256()}

    def on_write(bev):
        pauses[0] += 1
        if src.done:
            if len(bev.output) == 0:
                bev.close()
            return
        bev.write(src.next())
        peak[0] = max(peak[0], len(bev.output))

    writer = BufferEvent(base, conn, on_write=on_write)
    writer.set_watermark(WRITE, low)
    assert writer.get_watermark(WRITE) == (low, 0)

    def slow_reader():
        with reader_sock:
            while True:
                data = reader_sock.recv(64 * KiB)
                if not data:
                    return
                got["n"] += len(data)
                got["sha"].update(data)
                time.sleep(0.002)

    th = threading.Thread(target=slow_reader)
    th.start()
    t0 = time.monotonic()
    try:
        on_write(writer)
        run_loop(base, timeout=30)
    finally:
        th.join(30)
    elapsed = time.monotonic() - t0
    assert not th.is_alive()
    assert got["n"] == total
    assert got["sha"].digest() == src.sha.digest()
    assert peak[0] <= low + chunk, f"the writer buffered {peak[0]} bytes"
    assert pauses[0] >= total // chunk
    print(f"slow reader: {elapsed:.2f} s, peak output {peak[0]}")


@pytest.mark.parametrize("direction", ["write", "read"])
def test_rate_limit(direction, run_loop):
    """200 KiB at 100 KiB/s (10 KiB per 0.1 s tick): about 1.9 s."""
    total = 200 * KiB
    with EventBase(method="epoll" if "epoll" in levent.supported_methods() else None) as base:
        writer, reader = socketpair_bufferevents(base)
        limited = writer if direction == "write" else reader
        if direction == "write":
            limited.set_rate_limit(write_rate=10 * KiB, tick=0.1)
        else:
            limited.set_rate_limit(read_rate=10 * KiB, tick=0.1)
        done = []

        def on_read(bev):
            sink.on_read(bev)
            if sink.received >= total:
                done.append(time.monotonic())
                base.loopbreak()

        sink = Sink()
        reader.on_read = on_read
        reader.enable(READ)
        data = os.urandom(total)
        t0 = time.monotonic()
        writer.write(data)
        run_loop(base, timeout=15)
        assert done, f"received {sink.received} of {total}"
        elapsed = done[0] - t0
        assert sink.sha.digest() == hashlib.sha256(data).digest()
        assert 1.0 < elapsed < 6.0, f"{direction} rate limit: 200 KiB took {elapsed:.2f} s"
        limited.set_rate_limit()     # removing the limit


# -- close() and abort() ------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["connecting", "connected"])
def test_close_is_graceful(stream_base, when, run_loop):
    """A large write followed at once by close(): the peer still gets all of it, then EOF."""
    base = stream_base
    total = 8 * MiB
    data = random.Random(7).randbytes(total)
    sink = Sink()
    listener = None

    def on_event(bev, what, error):
        sink.on_event(bev, what, error)
        bev.close()
        base.loopbreak()

    def on_accept(lst, bev, addr):
        bev.on_read = sink.on_read
        bev.on_event = on_event
        bev.enable(READ)
        lst.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    client_events = []

    def client_event(bev, what, error):
        client_events.append(what)
        bev.write(data)
        bev.close()
        assert bev.closed

    client = BufferEvent(base, on_event=client_event)
    client.connect(listener.address)
    if when == "connecting":
        client.write(data)
        client.close()
        assert client.closed
        with pytest.raises(ValueError):
            client.write(b"more")
    run_loop(base, timeout=20)
    assert sink.events == [(BufferEvent.EOF | BufferEvent.READING, None)]
    assert sink.eof_at == total
    assert sink.sha.digest() == hashlib.sha256(data).digest()
    assert client_events == ([] if when == "connecting" else [BufferEvent.CONNECTED])


def test_close_with_empty_output_frees_at_once(base, socketpair):
    a, b = socketpair
    bev = BufferEvent(base, a, options=0)
    bev.close()
    assert bev.closed
    assert repr(bev) == "<BufferEvent closed>"
    bev.close()      # twice: nothing
    bev.abort()


@pytest.mark.parametrize("where", ["call_later", "connected_callback"])
def test_abort_drops_unsent_output(stream_base, where, run_loop):
    """8 MiB written then abort() at once, from a call_later callback once connected or inside the
    CONNECTED event callback itself: none of it may reach the peer, which sees EOF."""
    base = stream_base
    total = 8 * MiB
    sink = Sink()

    def on_event(bev, what, error):
        sink.on_event(bev, what, error)
        bev.close()
        base.loopbreak()

    def on_accept(lst, bev, addr):
        bev.on_read = sink.on_read
        bev.on_event = on_event
        bev.enable(READ)
        lst.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")

    def write_and_abort(bev):
        bev.write(os.urandom(total))
        bev.abort()
        assert bev.closed

    def client_event(bev, what, error):
        assert what == BufferEvent.CONNECTED
        if where == "connected_callback":
            write_and_abort(bev)
        else:
            base.call_later(0.01, write_and_abort, bev)

    client = BufferEvent(base, on_event=client_event)
    client.connect(listener.address)
    run_loop(base, timeout=10)
    assert len(sink.events) == 1
    assert sink.events[0][0] & (BufferEvent.EOF | BufferEvent.ERROR)
    assert sink.received == 0, f"abort() dropped the output, yet the peer got {sink.received} bytes"


@pytest.mark.parametrize("op", ["abort", "close"])
def test_free_inside_own_read_callback(base, op, run_loop):
    """The server frees its BufferEvent inside its on_read, after queueing a reply."""
    calls = []

    def server_read(bev):
        calls.append(bev.read())
        bev.write(b"bye")
        getattr(bev, op)()
        assert bev.closed
        with pytest.raises(ValueError):
            bev.read()

    def on_accept(lst, bev, addr):
        bev.on_read = server_read
        bev.on_event = lambda *args: calls.append(("event", args[1]))
        bev.enable(READ)
        lst.close()

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    sink = Sink()

    def client_event(bev, what, error):
        sink.on_event(bev, what, error)
        if what & BufferEvent.CONNECTED:
            bev.write(b"one")
            # More data after the server freed itself must not reach its callbacks.
            base.call_later(0.05, lambda: bev.write(b"two") if not bev.closed else None)
        else:
            bev.close()

    client = BufferEvent(base, on_read=sink.on_read, on_event=client_event)
    client.enable(READ)
    client.connect(listener.address)
    run_loop(base, timeout=5)
    assert calls == [b"one"]
    assert sink.events[0] == (BufferEvent.CONNECTED, None)
    assert len(sink.events) == 2 and sink.events[1][0] & (BufferEvent.EOF | BufferEvent.ERROR)
    if op == "close":
        assert sink.eof_at == 3      # close() still sent the reply
    else:
        assert sink.eof_at == 0      # abort() dropped it


@pytest.mark.parametrize("op", ["abort", "close"])
@pytest.mark.parametrize("event", ["connected", "eof", "error"])
def test_free_inside_own_event_callback(base, echo_server, op, event, run_loop, refused_address):
    listener, accepted = echo_server(base)
    seen = []

    def on_event(bev, what, error):
        seen.append(what)
        getattr(bev, op)()
        assert bev.closed
        with pytest.raises(ValueError):
            bev.enable(READ)
        getattr(bev, op)()    # again: nothing

    bev = BufferEvent(base, on_event=on_event)
    bev.enable(READ)
    if event == "error":
        bev.connect(refused_address)
    else:
        bev.connect(listener.address)
        if event == "eof":
            # The server side closes as soon as it is accepted.
            listener.on_accept = lambda lst, conn, addr: conn.close()
            bev.on_event = lambda b, what, error: (
                None if what & BufferEvent.CONNECTED else on_event(b, what, error))
    stop = Timer(base, base.loopbreak)
    stop.add(0.3)
    run_loop(base, timeout=5)
    expected = {"connected": BufferEvent.CONNECTED, "eof": BufferEvent.EOF | BufferEvent.READING,
                "error": BufferEvent.ERROR}[event]
    assert len(seen) == 1 and seen[0] & expected == expected
    assert bev.closed


def test_close_base_while_connecting(backend, echo_server):
    base = EventBase(method=backend)
    listener, accepted = echo_server(base)
    bev = BufferEvent(base, on_event=lambda *args: None)
    bev.connect(listener.address)
    bev.write(b"queued")
    inp, out = bev.input, bev.output
    base.close()
    assert bev.closed and listener.closed
    for call in (lambda: bev.write(b"x"), lambda: bev.connect(("127.0.0.1", 1)),
                 lambda: bev.enable(READ), bev.read, bev.fileno, lambda: bev.input,
                 lambda: bev.set_timeouts(read=1), inp.read, lambda: len(out), lambda: out.add(b"x")):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="EventBase"):
        bev.write(b"x")
    bev.close()
    bev.abort()
    assert repr(bev) == "<BufferEvent closed>"
    del bev, inp, out
    gc.collect()


def test_dropped_bufferevent_keeps_working_until_base_close(base, echo_server, run_loop):
    """Neither the client nor the server BufferEvent has a reference but the base's: both keep
    echoing; base.close() frees them and the GC then collects them."""
    listener, accepted = echo_server(base)
    replies = []

    def on_read(bev):
        replies.append(bev.read())
        if b"".join(replies) == b"first":
            bev.write(b"second")      # still alive with no reference but the base's
        elif b"".join(replies).endswith((b"second", b"third")):
            base.loopbreak()

    def connect():
        bev = BufferEvent(base, on_read=on_read)
        bev.enable(READ)
        bev.write(b"first")
        bev.connect(listener.address)
        return weakref.ref(bev)

    ref = connect()
    gc.collect()
    assert ref() is not None
    run_loop(base, timeout=5)
    assert b"".join(replies) == b"firstsecond"
    # Drop the server side's last reference too, and the listener's.
    server_refs = [weakref.ref(b) for b in accepted]
    listener_ref = weakref.ref(listener)
    accepted.clear()
    del listener
    gc.collect()
    assert ref() is not None and listener_ref() is not None
    assert len(server_refs) == 1 and server_refs[0]() is not None
    ref().write(b"third")
    run_loop(base, timeout=5)
    assert b"".join(replies) == b"firstsecondthird"
    base.close()
    gc.collect()
    assert ref() is None
    assert server_refs[0]() is None
    assert listener_ref() is None


def test_dropped_base_with_open_bufferevents_is_collected(backend, count_open_fds, run_loop):
    gc.collect()
    before = count_open_fds()

    def scenario():
        base = EventBase(method=backend)
        replies = []

        def on_read(bev):
            replies.append(bev.read())
            base.loopbreak()      # a closure on the base: base -> bev -> on_read -> base

        def on_accept(lst, bev, addr):
            bev.on_read = lambda b: b.write(b.read())
            bev.enable(READ)

        listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
        client = BufferEvent(base, on_read=on_read)
        client.enable(READ)
        client.write(b"ping")
        client.connect(listener.address)
        run_loop(base, timeout=5)
        assert replies == [b"ping"]
        pair = BufferEvent.pair(base)
        a, b = socket.socketpair()
        raw = BufferEvent(base, a)
        raw2 = BufferEvent(base, b.detach())
        assert count_open_fds() > before
        return [weakref.ref(x) for x in (base, listener, client, raw, raw2) + pair]

    refs = scenario()
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert count_open_fds() == before


# -- input/output Buffers -----------------------------------------------------------------------------


def test_input_output_buffers(base, run_loop):
    a, b = socketpair_bufferevents(base)
    out = a.output
    assert a.output is out and isinstance(out, Buffer)
    out.add(b"via the output buffer;")
    src = Buffer(b"moved;")
    a.write_buffer(src)
    assert len(src) == 0                  # write_buffer moved the data
    a.write(b"written")
    expected = b"via the output buffer;moved;written"
    b.enable(READ)
    b.set_watermark(READ, len(expected))
    b.on_read = lambda bev: base.loopbreak()
    run_loop(base, timeout=5)
    inp = b.input
    assert len(inp) == len(expected)
    assert inp.copyout(3) == b"via"
    assert b.read(4) == b"via "           # read(n)
    assert len(inp) == len(expected) - 4
    assert b.read(0) == b""
    assert inp.read(7) == b"the out"
    assert b.read(10_000) == expected[11:]
    assert b.read() == b""
    assert len(a.output) == 0             # everything was sent
    a.close()
    for call in (lambda: a.input, lambda: a.output, lambda: len(out), lambda: out.add(b"x"), out.read,
                 lambda: a.write_buffer(Buffer(b"x")), lambda: a.read(1)):
        with pytest.raises(ValueError):
            call()
    b.abort()
    with pytest.raises(ValueError):
        inp.read()


def test_write_buffer_from_own_input_echoes(base, run_loop):
    """write_buffer(bev.input): chains move from input to output without a copy."""
    def on_accept(lst, bev, addr):
        bev.on_read = lambda b: b.write_buffer(b.input)
        bev.enable(READ)

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    data = os.urandom(1 * MiB)
    got = bytearray()

    def on_read(bev):
        got.extend(bev.read())
        if len(got) >= len(data):
            base.loopbreak()

    client = BufferEvent(base, on_read=on_read)
    client.enable(READ)
    client.write(data)
    client.connect(listener.address)
    run_loop(base, timeout=10)
    assert bytes(got) == data


# -- pairs --------------------------------------------------------------------------------------------


def test_pair_both_ways(base, run_loop):
    a, b = BufferEvent.pair(base)
    got = {"a": bytearray(), "b": bytearray()}

    def reader(name, want):
        def on_read(bev):
            got[name].extend(bev.read())
            if len(got["a"]) == 5 and len(got["b"]) == 3:
                base.loopbreak()
        return on_read

    a.on_read = reader("a", 5)
    b.on_read = reader("b", 3)
    a.enable(READ)
    b.enable(READ)
    a.write(b"abc")
    b.write(b"hello")
    run_loop(base, timeout=5)
    assert bytes(got["b"]) == b"abc" and bytes(got["a"]) == b"hello"
    a.abort()
    b.abort()


def test_pair_close_gives_peer_eof(base, run_loop):
    a, b = BufferEvent.pair(base)
    events = []
    b.on_read = lambda bev: events.append(bev.read())
    b.on_event = lambda bev, what, error: (events.append(what), base.loopbreak())
    b.enable(READ)
    a.write(b"last words")
    a.close()
    stop = Timer(base, base.loopbreak)
    stop.add(0.3)
    run_loop(base, timeout=5)
    assert events == [b"last words", BufferEvent.EOF | BufferEvent.READING]


def test_pair_flush_finished_gives_peer_eof(base, run_loop):
    a, b = BufferEvent.pair(base)
    events = []
    b.on_read = lambda bev: events.append(bev.read())
    b.on_event = lambda bev, what, error: (events.append(what), base.loopbreak())
    b.enable(READ)
    a.write(b"data")
    a.flush(WRITE, BufferEvent.FINISHED)
    stop = Timer(base, base.loopbreak)
    stop.add(0.3)
    run_loop(base, timeout=5)
    assert events[0] == b"data"
    assert events[1] & BufferEvent.EOF


# -- filters ------------------------------------------------------------------------------------------


def xor_filter(key):
    table = bytes(i ^ key for i in range(256))

    def f(src, dst, limit, mode):
        dst.add(src.read().translate(table))
        return BufferEvent.FILTER_OK

    return f


def test_xor_filter_on_the_wire(base, run_loop):
    """One end filtered, the other raw: the wire carries XORed bytes both ways."""
    raw_a, raw_b = socketpair_bufferevents(base)
    fa = BufferEvent.filter(raw_a, xor_filter(0x5A), xor_filter(0x5A))
    assert fa.underlying is raw_a and raw_b.underlying is None
    message = bytes(range(256)) * 4
    table = bytes(i ^ 0x5A for i in range(256))
    got = {"raw": bytearray(), "filtered": bytearray()}

    def raw_read(bev):
        got["raw"].extend(bev.read())
        if len(got["raw"]) == len(message):
            bev.write(message.translate(table))

    def filtered_read(bev):
        got["filtered"].extend(bev.read())
        if len(got["filtered"]) == len(message):
            base.loopbreak()

    raw_b.on_read = raw_read
    raw_b.enable(READ)
    fa.on_read = filtered_read
    fa.enable(READ)
    fa.write(message)
    run_loop(base, timeout=5)
    assert bytes(got["raw"]) == message.translate(table)
    assert bytes(got["filtered"]) == message
    fa.close()
    assert fa.closed and raw_a.closed      # CLOSE_ON_FREE: closing the filter frees underlying
    raw_b.abort()


def test_xor_filters_both_ends_bulk(stream_base, run_loop):
    base = stream_base
    raw_a, raw_b = socketpair_bufferevents(base)
    fa = BufferEvent.filter(raw_a, xor_filter(0x33), xor_filter(0xC4))
    fb = BufferEvent.filter(raw_b, xor_filter(0xC4), xor_filter(0x33))
    data = random.Random(11).randbytes(4 * MiB)
    sink = Sink()

    def on_read(bev):
        sink.on_read(bev)
        if sink.received >= len(data):
            base.loopbreak()

    fb.on_read = on_read
    fb.enable(READ)
    for i in range(0, len(data), 256 * KiB):
        fa.write(data[i:i + 256 * KiB])
    run_loop(base, timeout=20)
    assert sink.received == len(data)
    assert sink.sha.digest() == hashlib.sha256(data).digest()


def test_zlib_filter_round_trip(base, run_loop):
    """Compress on the way out, decompress on the way in, over a real socket pair."""
    raw_a, raw_b = socketpair_bufferevents(base)
    comp = zlib.compressobj()
    decomp = zlib.decompressobj()
    wire = [0]
    modes = []

    def compress(src, dst, limit, mode):
        modes.append(mode)
        data = comp.compress(src.read())
        if mode == BufferEvent.FINISHED:
            data += comp.flush(zlib.Z_FINISH)
        else:
            data += comp.flush(zlib.Z_SYNC_FLUSH)
        dst.add(data)
        return BufferEvent.FILTER_OK

    def decompress(src, dst, limit, mode):
        data = src.read()
        wire[0] += len(data)
        out = decomp.decompress(data)
        if not out:
            return BufferEvent.FILTER_NEED_MORE
        dst.add(out)
        return BufferEvent.FILTER_OK

    fa = BufferEvent.filter(raw_a, output_filter=compress)
    fb = BufferEvent.filter(raw_b, input_filter=decompress)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(100_000))
    sink = Sink()

    def on_read(bev):
        sink.on_read(bev)
        if sink.received >= len(text):
            base.call_later(0.05, base.loopbreak)

    fb.on_read = on_read
    fb.enable(READ)
    for i in range(0, len(text), 100_000):
        fa.write(text[i:i + 100_000])
    assert fa.flush(WRITE, BufferEvent.FINISHED) == 1
    run_loop(base, timeout=10)
    assert sink.received == len(text)
    assert sink.sha.digest() == hashlib.sha256(text).digest()
    assert decomp.eof, "the compressed stream was not finished"
    assert wire[0] < len(text) // 5, f"{wire[0]} bytes on the wire for {len(text)}"
    assert BufferEvent.NORMAL in modes and BufferEvent.FINISHED in modes


def test_filter_need_more_waits_for_whole_frames(base, socketpair, run_loop):
    """An input filter that passes only whole length-prefixed frames returns FILTER_NEED_MORE
    (consuming nothing) while a frame is incomplete; the peer sends the frames in small pieces."""
    a, peer = socketpair
    payloads = [b"hello", b"x" * 300, b"frame three", b"!"]
    stream = b"".join(struct.pack("!I", len(p)) + p for p in payloads)
    results = []

    def deframe(src, dst, limit, mode):
        header = src.copyout(4)
        if len(header) < 4:
            results.append("more")
            return BufferEvent.FILTER_NEED_MORE
        (n,) = struct.unpack("!I", header)
        if len(src) < 4 + n:
            results.append("more")
            return BufferEvent.FILTER_NEED_MORE
        src.drain(4)
        dst.add(b"<" + src.read(n) + b">")
        results.append("ok")
        return BufferEvent.FILTER_OK

    raw = BufferEvent(base, a, options=0)
    framed = BufferEvent.filter(raw, input_filter=deframe, options=0)
    reads = []

    def on_read(bev):
        reads.append(bev.read())
        if b"".join(reads).count(b">") == len(payloads):
            base.loopbreak()

    framed.on_read = on_read
    framed.enable(READ)
    sizes = [1, 2, 3, 5, 7, 11, 13]
    pieces, i, k = [], 0, 0
    while i < len(stream):
        pieces.append(stream[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1

    def send_next():
        if pieces:
            peer.send(pieces.pop(0))
            sender.add(0.002)

    sender = Timer(base, send_next)
    sender.add(0)
    run_loop(base, timeout=10)
    joined = b"".join(reads)
    assert joined == b"".join(b"<" + p + b">" for p in payloads)
    for chunk in reads:      # each read is made of whole frames
        assert chunk.startswith(b"<") and chunk.endswith(b">")
    assert "more" in results
    framed.abort()
    raw.abort()


@pytest.mark.parametrize("side", ["input", "output"])
def test_exception_in_filter_comes_out_of_loop(base, socketpair, side, run_loop):
    a, b = socketpair

    def bad_filter(src, dst, limit, mode):
        raise Boom(side)

    raw = BufferEvent(base, a, options=0)
    kwargs = {f"{side}_filter": bad_filter}
    fbev = BufferEvent.filter(raw, options=0, **kwargs)
    fbev.enable(READ)
    if side == "input":
        b.send(b"incoming")
    else:
        # Written from a callback inside the loop.
        base.call_later(0, fbev.write, b"outgoing")
    with pytest.raises(Boom, match=side):
        run_loop(base, timeout=5)
    fbev.abort()
    raw.abort()


def test_exception_in_output_filter_during_write_outside_loop(base, socketpair, run_loop):
    """write() outside the loop runs the output filter at once: its exception must not be lost or
    wait for some later event; it comes out of write() or at the start of the next loop()."""
    a, b = socketpair

    def bad_filter(src, dst, limit, mode):
        raise Boom("output")

    raw = BufferEvent(base, a, options=0)
    fbev = BufferEvent.filter(raw, output_filter=bad_filter, options=0)
    fbev.enable(READ)      # a pending read keeps the loop busy
    t0 = time.monotonic()
    with pytest.raises(Boom):
        fbev.write(b"outgoing")
        run_loop(base, timeout=3)
    assert time.monotonic() - t0 < 1.0
    fbev.abort()
    raw.abort()


@pytest.mark.parametrize("result, exc_type", [(42, ValueError), ("yes", (TypeError, ValueError))])
def test_filter_returning_garbage_raises(base, socketpair, result, exc_type, run_loop):
    a, b = socketpair
    raw = BufferEvent(base, a, options=0)
    fbev = BufferEvent.filter(raw, input_filter=lambda src, dst, limit, mode: result, options=0)
    fbev.enable(READ)
    b.send(b"data")
    with pytest.raises(exc_type):
        run_loop(base, timeout=5)
    fbev.abort()
    raw.abort()


def test_filter_close_is_graceful(stream_base, run_loop):
    """close() on a filter with CLOSE_ON_FREE: the data written before close() still reaches the
    peer (through the filter and the underlying socket), then EOF."""
    base = stream_base
    a, b = socket.socketpair()
    raw = BufferEvent(base, a)
    fbev = BufferEvent.filter(raw, output_filter=xor_filter(0x42))
    data = random.Random(5).randbytes(8 * MiB)
    sink = Sink()
    peer = BufferEvent(base, b, on_read=sink.on_read,
                       on_event=lambda bev, what, err: (sink.on_event(bev, what, err), base.loopbreak()))
    peer.enable(READ)
    fbev.write(data)
    fbev.close()
    assert fbev.closed
    run_loop(base, timeout=10)
    assert sink.eof_at == len(data), f"the peer got {sink.eof_at} of {len(data)} bytes before EOF"
    assert sink.sha.digest() == hashlib.sha256(data.translate(bytes(i ^ 0x42 for i in range(256)))).digest()
    peer.abort()


def test_closing_the_bufferevent_below_a_filter_closes_the_filter(stream_base, run_loop):
    # Its callbacks belong to the filter, so it cannot see its output drain: the filter closes
    # gracefully instead, and frees it (CLOSE_ON_FREE) once everything was sent.
    base = stream_base
    a, b = socket.socketpair()
    raw = BufferEvent(base, a)
    fbev = BufferEvent.filter(raw, output_filter=xor_filter(0x42))
    data = random.Random(6).randbytes(4 * MiB)
    sink = Sink()
    peer = BufferEvent(base, b, on_read=sink.on_read,
                       on_event=lambda bev, what, err: (sink.on_event(bev, what, err), bev.abort()))
    peer.enable(READ)
    fbev.write(data)
    raw.close()
    assert raw.closed and fbev.closed
    with pytest.raises(ValueError, match="closed"):
        raw.write(b"x")
    run_loop(base, timeout=10)
    assert sink.eof_at == len(data), f"the peer got {sink.eof_at} of {len(data)} bytes before EOF"


def test_closing_the_bufferevent_below_a_filter_without_close_on_free_is_refused(base, socketpair):
    a, b = socketpair
    raw = BufferEvent(base, a, options=0)
    top = BufferEvent.filter(raw, xor_filter(1), options=0)
    with pytest.raises(ValueError, match="close the filter first"):
        raw.close()
    assert not raw.closed
    top.close()
    raw.close()
    assert raw.closed


def test_second_filter_on_same_underlying_refused(base, socketpair):
    a, b = socketpair
    raw = BufferEvent(base, a, options=0)
    f1 = BufferEvent.filter(raw, xor_filter(1), options=0)
    with pytest.raises(ValueError):
        BufferEvent.filter(raw, xor_filter(2))
    f1.abort()
    raw.abort()


# -- threads ------------------------------------------------------------------------------------------


def test_non_threadsafe_bufferevent_from_another_thread_raises(base, socketpair, add_guard, run_loop):
    a, b = socketpair
    bev = BufferEvent(base, a, options=0)
    bev.enable(READ)      # pending: keeps the loop running
    outcomes = []

    def worker():
        for name, call in (("write", lambda: bev.write(b"x")), ("input", lambda: bev.input),
                           ("enable", lambda: bev.enable(WRITE)), ("read", bev.read),
                           ("set_watermark", lambda: bev.set_watermark(READ, 1))):
            try:
                call()
            except RuntimeError as exc:
                outcomes.append((name, "RuntimeError", str(exc)))
            except BaseException as exc:   # anything else is a failure, reported below
                outcomes.append((name, type(exc).__name__, str(exc)))
            else:
                outcomes.append((name, "no error", ""))
        base.loopbreak()

    guard = add_guard(base, 5)
    th = threading.Timer(0.05, worker)
    th.start()
    try:
        run_loop(base, timeout=10)
    finally:
        th.join(5)
    guard.delete()
    assert [o[:2] for o in outcomes] == [(n, "RuntimeError") for n in
                                         ("write", "input", "enable", "read", "set_watermark")]
    # With no loop running, another thread may use it.
    errors = []
    t2 = threading.Thread(target=lambda: errors.append(bev.write(b"ok")))
    t2.start()
    t2.join(5)
    assert errors == [None]
    bev.abort()


def test_threadsafe_bufferevent_written_from_another_thread(stream_base, add_guard, run_loop):
    base = stream_base
    a, b = socket.socketpair()
    writer = BufferEvent(base, a, options=BufferEvent.THREADSAFE | BufferEvent.CLOSE_ON_FREE)
    assert writer.options & BufferEvent.DEFER_CALLBACKS and writer.options & BufferEvent.UNLOCK_CALLBACKS
    total = 4 * MiB
    src = Source(total, 64 * KiB, seed=9)
    chunks = []
    while not src.done:
        chunks.append(src.next())
    sink = Sink()

    def on_read(bev):
        sink.on_read(bev)
        if sink.received >= total:
            base.loopbreak()

    reader = BufferEvent(base, b, on_read=on_read)
    reader.enable(READ)
    errors = []

    def worker():
        try:
            for c in chunks:
                writer.write(c)
                time.sleep(0)
        except BaseException as exc:
            errors.append(exc)
            base.loopbreak()

    guard = add_guard(base, 20)
    th = threading.Thread(target=worker)
    base.call_later(0, th.start)
    try:
        run_loop(base, timeout=25)
    finally:
        if th.ident is not None:
            th.join(10)
    guard.delete()
    assert errors == []
    assert sink.received == total
    assert sink.sha.digest() == src.sha.digest()
    writer.abort()
    reader.abort()


# -- exceptions from callbacks ------------------------------------------------------------------------


@pytest.mark.parametrize("callback", ["on_read", "on_write", "on_event"])
def test_exception_in_callback_comes_out_of_loop(base, echo_server, callback, run_loop):
    listener, accepted = echo_server(base)

    def boom(*args):
        raise Boom(callback)

    bev = BufferEvent(base, **{callback: boom})
    bev.enable(READ)
    bev.write(b"ping")       # echoed back (on_read); drains (on_write); CONNECTED (on_event)
    bev.connect(listener.address)
    with pytest.raises(Boom, match=callback):
        run_loop(base, timeout=5)
    # The BufferEvent is still usable after the loop reported the error.
    assert not bev.closed
    bev.close()


def test_callbacks_can_be_replaced_and_cleared(base, socketpair, run_loop):
    a, b = socketpair
    bev = BufferEvent(base, a, options=0)
    first, second = [], []
    bev.on_read = lambda x: first.append(x.read())
    assert bev.on_read is not None
    bev.on_read = lambda x: (second.append(x.read()), base.loopbreak())
    bev.enable(READ)
    b.send(b"data")
    run_loop(base, timeout=5)
    assert first == [] and second == [b"data"]
    bev.on_read = None
    bev.on_write = None
    bev.on_event = None
    assert bev.on_read is None and bev.on_write is None and bev.on_event is None
    bev.abort()


# -- properties and ownership -------------------------------------------------------------------------


def test_socket_ownership(base):
    a, b = socket.socketpair()
    with b:
        fd = a.fileno()
        bev = BufferEvent(base, a)            # CLOSE_ON_FREE: the socket object is detached
        assert a.fileno() == -1
        assert bev.fileno() == fd
        bev.abort()
        # libevent closes the fd when it finalizes the bufferevent, in the loop's next iteration.
        base.loop(nonblock=True)
        with pytest.raises(OSError):
            os.fstat(fd)
        c, d = socket.socketpair()
        with c, d:
            bev = BufferEvent(base, c, options=0)   # not owned: the socket stays open
            assert c.fileno() >= 0
            bev.abort()
            os.fstat(c.fileno())


def test_properties(base, socketpair):
    a, b = socketpair
    bev = BufferEvent(base, a, options=0)
    assert bev.options == 0
    assert bev.enabled == WRITE        # libevent enables writing on a new bufferevent
    bev.enable(READ)
    assert bev.enabled == READ | WRITE
    bev.disable(WRITE)
    assert bev.enabled == READ
    assert bev.priority == 0
    bev.set_watermark(READ, 10, 100)
    assert bev.get_watermark(READ) == (10, 100)
    assert bev.flush() == 0
    assert "fd=" in repr(bev)
    assert bev.underlying is None
    bev.abort()
    assert bev.closed
    assert bev.options == 0


def test_context_manager_closes(base, socketpair):
    a, b = socketpair
    with BufferEvent(base, a, options=0) as bev:
        assert not bev.closed
    assert bev.closed


# -- misuse ---------------------------------------------------------------------------------------------
# Argument checking does not depend on the backend: these run once, on the default one.


@pytest.fixture
def any_base():
    with EventBase() as b:
        yield b


def test_wrong_types_raise_type_error(any_base, socketpair):
    a, b = socketpair
    with pytest.raises(TypeError):
        BufferEvent("not a base")
    with pytest.raises(TypeError):
        BufferEvent(None)
    with pytest.raises(TypeError):
        BufferEvent(any_base, "not a socket")
    with pytest.raises(TypeError):
        BufferEvent(any_base, 1.5)
    with pytest.raises(TypeError):
        BufferEvent(any_base, options="CLOSE_ON_FREE")
    bev = BufferEvent(any_base, a, options=0)
    for call in (lambda: bev.write(123), lambda: bev.write("text"), lambda: bev.write_buffer(b"x"),
                 lambda: bev.connect(123), lambda: bev.connect((1, 2)), lambda: bev.set_timeouts(read="1"),
                 lambda: setattr(bev, "on_read", 5), lambda: setattr(bev, "on_write", "x"),
                 lambda: setattr(bev, "on_event", object()), lambda: bev.read("1"),
                 lambda: BufferEvent.filter("raw"), lambda: BufferEvent.filter(bev, input_filter=5),
                 lambda: BufferEvent.pair("base"), lambda: bev.set_rate_limit(read_rate=10, tick="1")):
        with pytest.raises(TypeError):
            call()
    bev.abort()


@pytest.mark.parametrize("name", ["on_read", "on_write", "on_event"])
def test_constructor_rejects_non_callable_callbacks(any_base, name):
    """BufferEvent(..., on_read=5) must fail like bev.on_read = 5 does, not fail later in the loop."""
    with pytest.raises(TypeError):
        BufferEvent(any_base, **{name: 5})


def test_rate_limit_wrong_type_raises_type_error(any_base, socketpair):
    a, b = socketpair
    bev = BufferEvent(any_base, a, options=0)
    with pytest.raises(TypeError):
        bev.set_rate_limit(read_rate="fast")
    bev.abort()


def test_bad_values_raise_value_error(any_base, socketpair):
    a, b = socketpair
    with pytest.raises(ValueError):
        BufferEvent(any_base, options=0x10000)
    with pytest.raises(ValueError):
        BufferEvent.pair(any_base, options=0x10000)
    with pytest.raises(ValueError):
        BufferEvent(any_base, -1)
    closed_sock = socket.socket()
    closed_sock.close()
    with pytest.raises(ValueError):
        BufferEvent(any_base, closed_sock)
    bev = BufferEvent(any_base, a, options=0)
    for call in (lambda: bev.enable(0), lambda: bev.enable(levent.TIMEOUT), lambda: bev.disable(levent.SIGNAL),
                 lambda: bev.set_watermark(READ, 100, 10), lambda: bev.set_watermark(levent.TIMEOUT, 1),
                 lambda: bev.get_watermark(READ | WRITE), lambda: bev.set_timeouts(read=0),
                 lambda: bev.set_timeouts(write=-1), lambda: bev.set_timeouts(read=float("nan")),
                 lambda: bev.set_timeouts(read=float("inf")), lambda: bev.flush(WRITE, 99),
                 lambda: setattr(bev, "priority", 5), lambda: bev.set_rate_limit(read_rate=0),
                 lambda: bev.set_rate_limit(write_rate=100, write_burst=10),
                 lambda: bev.set_rate_limit(read_rate=100, tick=0),
                 lambda: bev.connect(("127.0.0.1", 70000))):
        with pytest.raises(ValueError):
            call()
    bev.abort()


def test_use_after_close_raises_value_error(any_base, socketpair):
    a, b = socketpair
    bev = BufferEvent(any_base, a, options=0)
    bev.close()
    for call in (lambda: bev.connect(("127.0.0.1", 1)), lambda: bev.write(b"x"), bev.read, bev.fileno,
                 lambda: bev.enable(READ), lambda: bev.disable(READ), lambda: bev.enabled,
                 lambda: bev.set_watermark(READ, 1), lambda: bev.set_timeouts(read=1), bev.flush,
                 lambda: bev.priority, lambda: bev.set_rate_limit(read_rate=10),
                 lambda: BufferEvent.filter(bev), lambda: bev.write_buffer(Buffer(b"x"))):
        with pytest.raises(ValueError):
            call()
    never_connected = BufferEvent(any_base)
    never_connected.abort()
    with pytest.raises(ValueError):
        never_connected.connect(("127.0.0.1", 1))


def test_closed_base_refuses_new_bufferevents():
    base = EventBase()
    base.close()
    with pytest.raises(ValueError):
        BufferEvent(base)
    with pytest.raises(ValueError):
        BufferEvent.pair(base)


def test_uninitialized_bufferevent(any_base):
    bev = BufferEvent.__new__(BufferEvent)
    with pytest.raises(ValueError, match="not initialized"):
        bev.write(b"x")
    assert bev.closed


class _FilenoOnly:
    """An object with an fd but no way to hand it over (no detach())."""

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()


def test_fd_without_detach_cannot_be_handed_over(base):
    # With CLOSE_ON_FREE both the object and libevent would own (and close) the fd.
    a, b = socket.socketpair()
    try:
        with pytest.raises(TypeError, match="detach"):
            BufferEvent(base, _FilenoOnly(a))
        with pytest.raises(TypeError, match="detach"):
            Listener(base, lambda *args: None, sock=_FilenoOnly(a))
        # Without CLOSE_ON_FREE the BufferEvent only watches the fd and keeps the object alive.
        holder = _FilenoOnly(a)
        bev = BufferEvent(base, holder, options=0)
        ref = weakref.ref(holder)
        del holder
        gc.collect()
        assert ref() is not None
        bev.abort()
        levent.send(a.fileno(), b"still open")
        assert b.recv(100) == b"still open"
    finally:
        a.close()
        b.close()


def test_dropped_base_with_filter_or_group_frees_everything(count_open_fds):
    # A filter and the BufferEvent below it, and a group and its members, must not form cycles the
    # GC cannot break: the base, the bufferevents and every fd go.
    def with_filter():
        eb = EventBase()
        a, b = socket.socketpair()
        below = BufferEvent(eb, a)
        BufferEvent.filter(below, lambda src, dst, limit, mode: dst.add_buffer(src))
        below.input, below.output
        b.close()

    def with_group():
        eb = EventBase()
        group = levent.RateLimitGroup(eb, read_rate=1000)
        for _ in range(3):
            a, b = socket.socketpair()
            group.add(BufferEvent(eb, a))
            b.close()

    for make in (with_filter, with_group, with_filter, with_group):
        gc.collect()
        before = count_open_fds()
        make()
        gc.collect()
        assert count_open_fds() == before, make.__name__


def test_buffers_below_a_freed_filter_stop_working(base):
    a, b = socket.socketpair()
    try:
        below = BufferEvent(base, a)
        below_input = below.input
        top = BufferEvent.filter(below, lambda src, dst, limit, mode: dst.add_buffer(src))
        top.abort()      # CLOSE_ON_FREE: libevent frees the one below too
        assert below.closed
        with pytest.raises(ValueError):
            len(below_input)
    finally:
        b.close()


@pytest.mark.parametrize("close_on_free", [True, False])
def test_aborting_the_bufferevent_below_a_filter_frees_both_once(base, run_loop, count_open_fds, close_on_free):
    # The filter goes first; with CLOSE_ON_FREE libevent frees the one below with it, which must not
    # be freed a second time (libevent would abort on a refcount underflow once the loop runs).
    base.loop(nonblock=True)     # the first loop() opens the base's signal wakeup socketpair
    gc.collect()
    before = count_open_fds()
    a, b = socket.socketpair()
    below = BufferEvent(base, a)
    top = BufferEvent.filter(below, lambda src, dst, limit, mode: dst.add_buffer(src),
                             options=BufferEvent.CLOSE_ON_FREE if close_on_free else 0)
    below.abort()
    assert top.closed and below.closed
    below.abort()
    top.abort()
    run_loop(base)
    b.close()
    del top, below
    gc.collect()
    assert count_open_fds() == before
