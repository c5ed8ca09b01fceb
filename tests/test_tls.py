"""TLS on BufferEvents: TLSContext and TLSBufferEvent against Python's ssl module and against
themselves, on 127.0.0.1 and socketpairs.

Certificates are made once per session with the openssl command: a CA, a server certificate for
localhost / 127.0.0.1 signed by it, and an untrusted self-signed one. Python ssl peers run in
threads with blocking sockets and 10 s timeouts; every loop is bounded by run_loop."""
import gc
import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

import levent
from levent import READ, BufferEvent, Listener, TLSBufferEvent, TLSContext, TLSError

PEER_TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def server_context(certs, self_signed=False):
    ctx = TLSContext(server_side=True)
    if self_signed:
        ctx.load_cert_chain(certs.self_cert, certs.self_key)
    else:
        ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


def client_context(certs):
    ctx = TLSContext()
    ctx.load_verify_locations(cafile=certs.ca)
    return ctx


class Peer(threading.Thread):
    """Runs ``fn()`` in a thread; ``outcome()`` is its result, or the exception it raised."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = self.exc = None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.exc = exc

    def outcome(self):
        self.join(PEER_TIMEOUT + 5)
        assert not self.is_alive(), "the Python ssl peer is stuck"
        return self.exc if self.exc is not None else self.result


def python_server(certs, script, alpn=None, self_signed=False):
    """A listening socket on 127.0.0.1 and a Peer that accepts one TLS connection with Python's ssl
    and returns script(sslsock)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if self_signed:
        ctx.load_cert_chain(certs.self_cert, certs.self_key)
    else:
        ctx.load_cert_chain(certs.server_cert, certs.server_key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(PEER_TIMEOUT)

    def serve():
        try:
            conn, _ = lsock.accept()
        finally:
            lsock.close()
        conn.settimeout(PEER_TIMEOUT)
        with conn:
            with ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
                return script(tls)

    return lsock.getsockname(), Peer(serve)


def python_client(certs, address, script, alpn=None, server_hostname="localhost"):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)

    def connect():
        with socket.create_connection(address, timeout=PEER_TIMEOUT) as s:
            with ctx.wrap_socket(s, server_hostname=server_hostname, suppress_ragged_eofs=False) as tls:
                return script(tls)

    return Peer(connect)


def recv_until_eof(tls):
    chunks = []
    while True:
        data = tls.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class Client:
    """A levent TLS client: connects, writes ``send`` once CONNECTED, records what it reads and
    every event, closes on EOF/ERROR (graceful close unless ``abort``)."""

    def __init__(self, base, ctx, address, send=b"", server_hostname="localhost", abort=False, **kwargs):
        self.data = b""
        self.events = []
        self.abort = abort
        self.send = send
        self.info = {}
        self.bev = TLSBufferEvent(base, ctx, server_hostname=server_hostname, on_read=self.on_read,
                                  on_event=self.on_event, **kwargs)
        self.bev.enable(READ)
        self.bev.connect(address)

    def on_read(self, bev):
        self.data += bev.read()

    def on_event(self, bev, what, error):
        self.events.append((what, error))
        if what & BufferEvent.CONNECTED:
            self.info = dict(version=bev.tls_version, cipher=bev.cipher, alpn=bev.alpn_protocol,
                             cert=bev.peer_certificate)
            if self.send:
                bev.write(self.send)
        if what & (BufferEvent.EOF | BufferEvent.ERROR):
            bev.abort() if self.abort else bev.close()

    @property
    def error(self):
        errors = [e for w, e in self.events if e is not None]
        return errors[0] if errors else None


# -- levent client <-> Python ssl server --------------------------------------------------------------


def test_client_talks_to_python_server_and_closes_cleanly(stream_base, certs, run_loop):
    def script(tls):
        got = tls.recv(100)
        tls.sendall(got.upper())
        return got, tls.unwrap()        # close_notify both ways

    address, peer = python_server(certs, script)
    client = Client(stream_base, client_context(certs), address, send=b"hello")
    run_loop(stream_base)
    got = peer.outcome()
    assert not isinstance(got, BaseException), got
    assert got[0] == b"hello"
    assert client.data == b"HELLO"
    assert client.events[0] == (BufferEvent.CONNECTED, None)
    what, error = client.events[-1]
    assert what & BufferEvent.EOF and not what & BufferEvent.ERROR and error is None
    assert client.bev.tls_truncated is False
    assert client.info["version"] == "TLSv1.3"
    assert client.info["cipher"]
    cert = client.bev.peer_certificate     # still readable after close
    assert cert == client.info["cert"]
    assert ((("organizationName", "levent"),), (("commonName", "localhost"),)) == cert["subject"]
    assert cert["issuer"] == ((("commonName", "levent test CA"),),)
    assert cert["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
    assert cert["version"] == 3 and cert["notAfter"].endswith(" GMT")
    der = client.bev.peer_certificate_der
    assert ssl.DER_cert_to_PEM_cert(der).strip() == open(certs.server_cert).read().strip()


def test_graceful_close_sends_close_notify(stream_base, certs, run_loop):
    # suppress_ragged_eofs=False: the Python peer raises SSLEOFError unless close_notify came.
    address, peer = python_server(certs, recv_until_eof)

    def on_event(bev, what, error):
        if what & BufferEvent.CONNECTED:
            bev.write(b"x" * 100000)
            bev.close()     # sent, then close_notify

    bev = TLSBufferEvent(stream_base, client_context(certs), server_hostname="localhost", on_event=on_event)
    bev.connect(address)
    run_loop(stream_base)
    assert peer.outcome() == b"x" * 100000


def test_close_during_the_handshake_sends_once_it_is_done(stream_base, certs, run_loop):
    address, peer = python_server(certs, recv_until_eof)
    bev = TLSBufferEvent(stream_base, client_context(certs), server_hostname="localhost")
    bev.connect(address)
    bev.write(b"written before the handshake")
    bev.close()
    assert bev.closed
    run_loop(stream_base)
    assert peer.outcome() == b"written before the handshake"


def test_server_closes_during_the_handshake(stream_base, certs, run_loop):
    def on_accept(listener, sock, address):
        listener.close()
        bev = TLSBufferEvent(stream_base, server_context(certs), sock, server_side=True)
        bev.write(b"hello from the server")
        bev.close()

    listener = Listener(stream_base, on_accept, ("127.0.0.1", 0))
    peer = python_client(certs, listener.address, recv_until_eof)
    run_loop(stream_base)
    assert peer.outcome() == b"hello from the server"


def test_abort_sends_no_close_notify(stream_base, certs, run_loop):
    address, peer = python_server(certs, recv_until_eof)

    def on_event(bev, what, error):
        if what & BufferEvent.CONNECTED:
            bev.write(b"data")
            stream_base.call_later(0.05, bev.abort)

    bev = TLSBufferEvent(stream_base, client_context(certs), server_hostname="localhost", on_event=on_event)
    bev.connect(address)
    run_loop(stream_base)
    # No close_notify: the peer sees the EOF as a truncation, or a reset when the abort dropped bytes
    # the client had not read yet (the server's session tickets); never a clean close.
    assert isinstance(peer.outcome(), (ssl.SSLEOFError, ConnectionResetError))


@pytest.mark.parametrize("allow_dirty", [False, True])
def test_truncation_is_told_from_a_clean_close(stream_base, certs, run_loop, allow_dirty):
    def script(tls):
        tls.sendall(b"partial")
        # closing the socket without unwrap(): no close_notify

    address, peer = python_server(certs, script)
    client = Client(stream_base, client_context(certs), address, allow_dirty_shutdown=allow_dirty)
    run_loop(stream_base)
    assert peer.outcome() is None
    assert client.data == b"partial"
    what, error = client.events[-1]
    assert what & BufferEvent.EOF
    assert client.bev.tls_truncated is True
    if allow_dirty:
        assert not what & BufferEvent.ERROR and error is None
    else:
        assert what & BufferEvent.ERROR
        assert isinstance(error, TLSError) and error.truncated
        assert "truncated" in str(error)


def test_wrong_hostname_is_refused(stream_base, certs, run_loop):
    address, peer = python_server(certs, lambda tls: None)
    client = Client(stream_base, client_context(certs), address, server_hostname="example.com")
    run_loop(stream_base)
    assert isinstance(peer.outcome(), ssl.SSLError)
    what, error = client.events[-1]
    assert what & BufferEvent.ERROR and not what & BufferEvent.CONNECTED
    assert isinstance(error, TLSError) and isinstance(error, OSError)
    assert "certificate verify failed" in str(error) and "hostname mismatch" in str(error).lower()
    assert error.errors and all(e.startswith("error:") for e in error.errors)


def test_ip_address_hostname_is_checked_against_the_ip_san(stream_base, certs, run_loop):
    address, peer = python_server(certs, lambda tls: tls.unwrap())
    client = Client(stream_base, client_context(certs), address, server_hostname="127.0.0.1")
    run_loop(stream_base)
    peer.outcome()
    assert client.events[0] == (BufferEvent.CONNECTED, None)
    assert client.bev.server_hostname == "127.0.0.1"


def test_untrusted_certificate_is_refused(stream_base, certs, run_loop):
    address, peer = python_server(certs, lambda tls: None, self_signed=True)
    client = Client(stream_base, client_context(certs), address)
    run_loop(stream_base)
    peer.outcome()
    what, error = client.events[-1]
    assert what & BufferEvent.ERROR
    assert isinstance(error, TLSError) and "certificate verify failed" in str(error)
    assert "self-signed" in str(error) or "self signed" in str(error)


def test_system_store_does_not_trust_the_test_ca(stream_base, certs, run_loop):
    address, peer = python_server(certs, lambda tls: None)
    client = Client(stream_base, TLSContext(), address)
    run_loop(stream_base)
    peer.outcome()
    assert isinstance(client.error, TLSError) and "certificate verify failed" in str(client.error)


def test_verification_off_must_be_explicit_and_then_accepts(stream_base, certs, run_loop):
    ctx = TLSContext()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ValueError, match="check_hostname"):
        ctx.verify_mode = ssl.CERT_NONE
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    address, peer = python_server(certs, lambda tls: tls.unwrap(), self_signed=True)
    client = Client(stream_base, ctx, address, server_hostname=None)
    run_loop(stream_base)
    peer.outcome()
    assert client.events[0] == (BufferEvent.CONNECTED, None)
    assert client.info["cert"]["subject"] == ((("commonName", "localhost"),),)
    ctx.check_hostname = True       # turns verification back on
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_alpn_negotiated_with_python_server(stream_base, certs, run_loop):
    address, peer = python_server(certs, lambda tls: (tls.selected_alpn_protocol(), tls.unwrap())[0],
                                  alpn=["h2", "http/1.1"])
    ctx = client_context(certs)
    ctx.set_alpn_protocols(["http/1.1", "spdy/1"])
    client = Client(stream_base, ctx, address)
    run_loop(stream_base)
    assert peer.outcome() == "http/1.1"
    assert client.info["alpn"] == "http/1.1"


def test_handshake_with_a_plain_text_server_reports_openssl_error(stream_base, run_loop):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(PEER_TIMEOUT)

    def serve():
        conn, _ = lsock.accept()
        with conn:
            conn.recv(1000)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10)
        lsock.close()

    peer = Peer(serve)
    ctx = TLSContext()
    client = Client(stream_base, ctx, lsock.getsockname())
    run_loop(stream_base)
    peer.outcome()
    assert isinstance(client.error, TLSError)
    assert "wrong version number" in str(client.error) or "packet length" in str(client.error)


def test_connection_refused_is_an_oserror(stream_base, certs, run_loop):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    client = Client(stream_base, client_context(certs), address)
    run_loop(stream_base)
    what, error = client.events[-1]
    assert what & BufferEvent.ERROR and isinstance(error, OSError)


# -- levent server <-> Python ssl client --------------------------------------------------------------


def tls_echo_server(base, ctx, conns):
    """conns gets (bev, events) for the accepted connection."""
    def on_read(bev):
        bev.write(bev.read())

    def on_accept(listener, sock, address):
        listener.close()
        seen = []

        def on_event(bev, what, error):
            seen.append((what, error))
            if what & (BufferEvent.EOF | BufferEvent.ERROR):
                bev.close()

        bev = TLSBufferEvent(base, ctx, sock, server_side=True, on_read=on_read, on_event=on_event)
        bev.enable(READ)
        conns.append((bev, seen))

    return Listener(base, on_accept, ("127.0.0.1", 0))


def test_server_talks_to_python_client(stream_base, certs, run_loop):
    conns = []
    ctx = server_context(certs)
    ctx.set_alpn_protocols(["h2", "echo"])
    listener = tls_echo_server(stream_base, ctx, conns)

    def script(tls):
        tls.sendall(b"ping")
        reply = tls.recv(100)
        alpn, version = tls.selected_alpn_protocol(), tls.version()
        tls.unwrap()        # waits for the server's close_notify
        return reply, alpn, version

    peer = python_client(certs, listener.address, script, alpn=["echo", "h2"])
    run_loop(stream_base)
    result = peer.outcome()
    assert not isinstance(result, BaseException), result
    assert result == (b"ping", "h2", "TLSv1.3")
    ((bev, seen),) = conns
    assert seen[0] == (BufferEvent.CONNECTED, None)
    what, error = seen[-1]
    assert what & BufferEvent.EOF and error is None and not bev.tls_truncated
    assert bev.alpn_protocol == "h2" and bev.server_side and bev.peer_certificate is None


def test_server_reports_a_client_that_rejects_its_certificate(stream_base, certs, run_loop):
    conns = []
    listener = tls_echo_server(stream_base, server_context(certs, self_signed=True), conns)
    peer = python_client(certs, listener.address, lambda tls: None)
    run_loop(stream_base)
    assert isinstance(peer.outcome(), ssl.SSLCertVerificationError)
    ((bev, seen),) = conns
    what, error = seen[-1]
    assert what & BufferEvent.ERROR and isinstance(error, TLSError)
    assert "alert" in str(error)        # the client's alert: "tlsv1 alert unknown ca" or similar


# -- levent <-> levent: socketpairs, filters, pairs ---------------------------------------------------


def levent_pair(base, certs, filter_client=False, **client_kwargs):
    a, b = socket.socketpair()
    server = TLSBufferEvent(base, server_context(certs), a, server_side=True)
    if filter_client:
        client = TLSBufferEvent.wrap(BufferEvent(base, b), client_context(certs), server_hostname="localhost",
                                     **client_kwargs)
    else:
        client = TLSBufferEvent(base, client_context(certs), b, server_hostname="localhost", **client_kwargs)
    return client, server


def exchange(base, run_loop, client, server, payload, close_with="close"):
    """client sends payload; server reads it all and closes (close or abort); returns
    (what server read, client events)."""
    got = bytearray()
    events = []

    def server_read(bev):
        got.extend(bev.read())
        if len(got) >= len(payload):
            getattr(bev, close_with)()

    def client_event(bev, what, error):
        events.append((what, error))
        if what & BufferEvent.CONNECTED:
            bev.write(payload)
        if what & (BufferEvent.EOF | BufferEvent.ERROR):
            bev.close()

    server.on_read = server_read
    server.enable(READ)
    client.on_event = client_event
    client.enable(READ)
    run_loop(base)
    return bytes(got), events



@pytest.mark.parametrize("filter_client", [False, True], ids=["socket", "filter"])
def test_levent_to_levent_clean_close(base, certs, run_loop, count_open_fds, filter_client):
    # The first loop() opens the base's signal wakeup socketpair, the first call_later() its timerfd.
    base.call_later(0, lambda: None)
    base.loop(nonblock=True)
    gc.collect()
    before = count_open_fds()
    client, server = levent_pair(base, certs, filter_client)
    payload = os.urandom(300000)
    got, events = exchange(base, run_loop, client, server, payload)
    assert got == payload
    assert events[0] == (BufferEvent.CONNECTED, None)
    assert events[-1] == (BufferEvent.EOF | BufferEvent.READING, None)
    assert client.closed and server.closed and not client.tls_truncated
    if filter_client:
        assert client.underlying.closed
    gc.collect()
    assert count_open_fds() == before



@pytest.mark.parametrize("filter_client", [False, True], ids=["socket", "filter"])
def test_levent_to_levent_abort_is_a_truncation(base, certs, run_loop, filter_client):
    client, server = levent_pair(base, certs, filter_client)
    got, events = exchange(base, run_loop, client, server, b"abc", close_with="abort")
    assert got == b"abc"
    what, error = events[-1]
    assert what & BufferEvent.EOF and what & BufferEvent.ERROR
    assert isinstance(error, TLSError) and error.truncated and client.tls_truncated



@pytest.mark.parametrize("filter_client", [False, True], ids=["socket", "filter"])
def test_both_sides_closing_at_once_do_not_wait_for_each_other(base, certs, run_loop, filter_client):
    # Each sends close_notify and then gets the other's: neither waits out the linger (5 s).
    client, server = levent_pair(base, certs, filter_client)
    connected = []

    def on_event(bev, what, error):
        assert what == BufferEvent.CONNECTED, (what, error)
        connected.append(bev)
        if len(connected) == 2:
            client.close()
            server.close()

    for bev in (client, server):
        bev.on_event = on_event
        bev.enable(READ)
    run_loop(base, timeout=3)      # a lingering side would keep its 5 s timeout pending
    assert len(connected) == 2 and client.closed and server.closed


def test_closing_the_bufferevent_below_a_filter_closes_it_gracefully(base, certs, run_loop):
    client, server = levent_pair(base, certs, filter_client=True)
    payload = os.urandom(1000000)
    got = bytearray()
    server_events = []

    def client_event(bev, what, error):
        assert what == BufferEvent.CONNECTED, (what, error)
        bev.write(payload)
        bev.underlying.close()
        assert bev.closed

    def server_event(bev, what, error):
        server_events.append((what, error))
        if what & (BufferEvent.EOF | BufferEvent.ERROR):
            bev.close()

    client.on_event = client_event
    server.on_read = lambda bev: got.extend(bev.read())
    server.on_event = server_event
    server.enable(READ)
    run_loop(base)
    assert got == payload
    assert server_events[-1] == (BufferEvent.EOF | BufferEvent.READING, None)     # close_notify came


def test_filter_over_a_pair(base, certs, run_loop):
    a, b = BufferEvent.pair(base)
    client = TLSBufferEvent.wrap(a, client_context(certs), server_hostname="localhost")
    server = TLSBufferEvent.wrap(b, server_context(certs), server_side=True)
    assert client.underlying is a
    got, events = exchange(base, run_loop, client, server, b"over a pair" * 1000)
    assert got == b"over a pair" * 1000
    assert events[-1][0] & BufferEvent.EOF and events[-1][1] is None
    assert a.closed and b.closed



def test_filter_over_a_plain_tcp_bufferevent_to_python_server(stream_base, certs, run_loop):
    def script(tls):
        data = recv_until_eof(tls)
        return data

    address, peer = python_server(certs, script)
    plain = BufferEvent(stream_base)
    plain.connect(address)
    client = TLSBufferEvent.wrap(plain, client_context(certs), server_hostname="localhost")
    client.write(b"through the filter")
    client.close()
    run_loop(stream_base)
    assert peer.outcome() == b"through the filter"
    assert plain.closed



def test_base_close_frees_open_tls_bufferevents(certs):
    base = levent.EventBase()
    client, server = levent_pair(base, certs, filter_client=True)
    a, b = BufferEvent.pair(base)
    TLSBufferEvent.wrap(a, client_context(certs), server_hostname="localhost")
    base.loop(nonblock=True)
    base.close()
    assert client.closed and server.closed and a.closed
    assert client.tls_version is None or client.tls_version.startswith("TLS")



def test_close_and_abort_in_any_order(base, certs, run_loop):
    client, server = levent_pair(base, certs, filter_client=True)
    under = client.underlying
    under.abort()           # frees the filter on top first
    assert client.closed
    client.close()
    client.abort()
    server.close()
    server.abort()
    with pytest.raises(ValueError, match="closed"):
        client.write(b"x")
    run_loop(base)
    del client, server, under
    gc.collect()



def test_abort_inside_the_handshake_callback(base, certs, run_loop):
    client, server = levent_pair(base, certs)
    seen = []

    def on_event(bev, what, error):
        seen.append(what)
        bev.abort()
        bev.abort()

    client.on_event = on_event
    server.on_event = lambda bev, what, error: bev.close()
    run_loop(base)
    assert seen == [BufferEvent.CONNECTED]


# -- misuse ---------------------------------------------------------------------------------------------


def test_misuse_is_refused_with_a_message(base, certs):
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TypeError, match="levent.TLSContext"):
            TLSBufferEvent(base, ssl.create_default_context(), a, server_hostname="localhost")
        with pytest.raises(ValueError, match="server_side=True"):
            TLSBufferEvent(base, client_context(certs), a, server_side=True)
        with pytest.raises(ValueError, match="server_side=True"):
            TLSBufferEvent(base, server_context(certs), a)
        with pytest.raises(ValueError, match="load_cert_chain"):
            TLSBufferEvent(base, TLSContext(server_side=True), a, server_side=True)
        with pytest.raises(ValueError, match="server_hostname"):
            TLSBufferEvent(base, client_context(certs), a)
        with pytest.raises(ValueError, match="CLOSE_ON_FREE"):
            TLSBufferEvent(base, client_context(certs), a, server_hostname="localhost", options=0)
        with pytest.raises(ValueError, match="accepted socket"):
            TLSBufferEvent(base, server_context(certs), None, server_side=True)
        assert a.fileno() >= 0      # refused: the socket was not taken
    ctx = TLSContext()
    with pytest.raises(TLSError):
        ctx.load_cert_chain(certs.ca, certs.server_key)     # key does not match
    with pytest.raises(TLSError):
        ctx.set_ciphers("NO-SUCH-CIPHER")
    with pytest.raises(TLSError):
        ctx.load_verify_locations(cafile=os.devnull)
    with pytest.raises(TypeError):
        ctx.load_verify_locations()
    with pytest.raises(ValueError):
        ctx.set_alpn_protocols([""])


def test_context_settings(certs):
    ctx = TLSContext()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 == ctx.maximum_version
    ctx.verify_mode = ssl.CERT_OPTIONAL
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=open(certs.ca).read())
    ctx.load_verify_locations(cadata=ssl.PEM_cert_to_DER_cert(open(certs.ca).read()))
    with pytest.raises(TLSError):
        ctx.load_verify_locations(cadata="no certificate here")
    ctx.set_ciphers("ECDHE+AESGCM")
    assert not TLSContext(server_side=True).check_hostname
    assert TLSContext(server_side=True).verify_mode == ssl.CERT_NONE
    assert "client" in repr(ctx)



def test_version_limits_apply(base, certs, run_loop):
    a, b = socket.socketpair()
    sctx = server_context(certs)
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    cctx = client_context(certs)
    server = TLSBufferEvent(base, sctx, a, server_side=True)
    client = TLSBufferEvent(base, cctx, b, server_hostname="localhost")
    got, events = exchange(base, run_loop, client, server, b"v")
    assert events[0] == (BufferEvent.CONNECTED, None)
    assert got == b"v"
    assert client.tls_version == "TLSv1.2"
    a, b = socket.socketpair()
    cctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server = TLSBufferEvent(base, sctx, a, server_side=True, on_event=lambda bev, w, e: bev.close())
    client = TLSBufferEvent(base, cctx, b, server_hostname="localhost")
    _, events = exchange(base, run_loop, client, server, b"v")
    assert isinstance(events[-1][1], TLSError)
    assert "version" in str(events[-1][1])


def test_encrypted_key_with_password(certs, tmp_path):
    key = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", certs.server_key, "-aes256", "-passout", "pass:s3cret",
                    "-out", str(key)], check=True, capture_output=True, timeout=60)
    ctx = TLSContext(server_side=True)
    with pytest.raises(TLSError):
        ctx.load_cert_chain(certs.server_cert, str(key))      # no password: no terminal prompt
    with pytest.raises(TLSError):
        ctx.load_cert_chain(certs.server_cert, str(key), password="wrong")
    ctx.load_cert_chain(certs.server_cert, str(key), password=lambda: b"s3cret")
