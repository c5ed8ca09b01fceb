"""TLS: TLSContext, TLSBufferEvent and TLSSession against Python's ssl module and against
themselves, on 127.0.0.1 and socketpairs.

Certificates are made once per session with the openssl command: a CA, a server certificate for
localhost / 127.0.0.1 signed by it, and an untrusted self-signed one. Python ssl peers run in
threads with blocking sockets and 10 s timeouts; every loop is bounded by run_loop."""
import gc
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

import levent
from levent import READ, BufferEvent, Listener, TLSBufferEvent, TLSContext, TLSError, TLSSession

from conftest import ssl_exchange

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


# -- TLSSession: TLS over memory, driven here with select() on real sockets -----------------------------


class Driven:
    """A TLSSession over a non-blocking socket, driven with select(); every wait is bounded."""

    def __init__(self, session, sock):
        self.session = session
        self.sock = sock
        sock.setblocking(False)
        self.buffer = bytearray(256 * 1024)

    def _wait(self, readable):
        r, w, _ = select.select([self.sock] if readable else [], [] if readable else [self.sock], [], PEER_TIMEOUT)
        assert r or w, "the peer is stuck"

    def flush(self):
        while self.session.pending_out:
            if not self.session.send_to(self.sock):
                self._wait(readable=False)

    def receive(self):
        self.flush()
        self._wait(readable=True)
        try:
            return self.session.recv_from(self.sock)
        except BlockingIOError:
            return None

    def handshake(self):
        while not self.session.do_handshake():
            self.receive()
        self.flush()

    def read(self):
        """The next plaintext (bytes), or b"" once close_notify came."""
        while True:
            n = self.session.read_into(self.buffer)
            if n is not None:
                self.flush()
                return bytes(self.buffer[:n])
            self.receive()

    def read_until_close(self):
        chunks = []
        while chunk := self.read():
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data):
        assert self.session.write(data) == len(data)
        self.flush()


def session_to_python_server(certs, script, server_hostname="localhost", client_alpn=None, **kwargs):
    address, peer = python_server(certs, script, **kwargs)
    ctx = client_context(certs)
    if client_alpn:
        ctx.set_alpn_protocols(client_alpn)
    sock = socket.create_connection(address, timeout=PEER_TIMEOUT)
    return Driven(TLSSession(ctx, server_hostname=server_hostname), sock), peer


def test_session_client_with_python_server_closes_cleanly(certs):
    def script(tls):
        got = tls.recv(100)
        tls.sendall(got.upper())
        return got, tls.selected_alpn_protocol(), tls.unwrap()

    driven, peer = session_to_python_server(certs, script, client_alpn=["x/1", "h2"], alpn=["h2", "http/1.1"])
    with driven.sock:
        session = driven.session
        assert not session.handshake_done and session.tls_version is None
        driven.handshake()
        assert session.handshake_done and not session.server_side
        assert session.tls_version == "TLSv1.3" and session.cipher
        assert session.alpn_protocol == "h2" and session.server_hostname == "localhost"
        assert session.peer_certificate["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
        assert ssl.DER_cert_to_PEM_cert(session.peer_certificate_der).strip() == open(certs.server_cert).read().strip()
        driven.write(b"hello")
        assert driven.read() == b"HELLO"
        assert driven.read() == b""     # the peer's unwrap(): close_notify
        assert session.close_notify_received and not session.tls_truncated
        assert session.read_into(driven.buffer) == 0    # and again
        session.shutdown()
        session.shutdown()      # once only
        driven.flush()
        got = peer.outcome()
        assert not isinstance(got, BaseException), got
        assert got[:2] == (b"hello", "h2")
        with pytest.raises(ValueError, match="after shutdown"):
            session.write(b"more")


def test_session_server_with_python_client(certs):
    ctx = server_context(certs)
    ctx.set_alpn_protocols(["echo"])
    lsock = socket.create_server(("127.0.0.1", 0))

    def script(tls):
        tls.sendall(b"ping" * 1000)
        reply = recv_until_eof(tls)     # suppress_ragged_eofs=False: raises unless close_notify came
        return reply, tls.selected_alpn_protocol(), tls.version()

    with lsock:
        peer = python_client(certs, lsock.getsockname(), script, alpn=["echo"])
        lsock.settimeout(PEER_TIMEOUT)
        sock, _ = lsock.accept()
    with sock:
        driven = Driven(TLSSession(ctx, server_side=True), sock)
        driven.handshake()
        got = b""
        while len(got) < 4000:
            got += driven.read()
        driven.write(got)
        driven.session.shutdown()
        driven.flush()
        assert peer.outcome() == (b"ping" * 1000, "echo", "TLSv1.3")
        session = driven.session
        assert session.server_side and session.peer_certificate is None and session.alpn_protocol == "echo"


@pytest.mark.parametrize("hostname, says", [("example.com", "hostname mismatch"), ("10.0.0.1", "ip address mismatch")])
def test_session_refuses_a_wrong_name_and_sends_the_alert(certs, hostname, says):
    driven, peer = session_to_python_server(certs, lambda tls: None, server_hostname=hostname)
    with driven.sock:
        with pytest.raises(TLSError) as info:
            driven.handshake()
        assert "certificate verify failed" in str(info.value) and says in str(info.value).lower()
        assert not info.value.truncated and info.value.errors
        assert driven.session.pending_out     # the alert
        driven.flush()
        outcome = peer.outcome()
    assert isinstance(outcome, ssl.SSLError) and "alert" in str(outcome)
    with pytest.raises(ValueError, match="failed earlier"):
        driven.session.do_handshake()


def test_session_refuses_an_untrusted_certificate(certs):
    driven, peer = session_to_python_server(certs, lambda tls: None, self_signed=True)
    with driven.sock:
        with pytest.raises(TLSError, match="certificate verify failed") as info:
            driven.handshake()
        assert "self-signed" in str(info.value) or "self signed" in str(info.value)
        driven.flush()
    assert isinstance(peer.outcome(), ssl.SSLError)


def test_session_truncation_is_told_from_a_clean_close(certs):
    def script(tls):
        tls.sendall(b"partial")
        # closing the socket without unwrap(): no close_notify

    driven, peer = session_to_python_server(certs, script)
    with driven.sock:
        driven.handshake()
        assert driven.read() == b"partial"
        with pytest.raises(TLSError, match="truncated") as info:
            while True:
                if driven.session.read_into(driven.buffer) is None:
                    driven.receive()
        assert info.value.truncated and driven.session.tls_truncated
        assert not driven.session.close_notify_received
        assert driven.session.tls_version == "TLSv1.3"     # still readable after the failure
        assert driven.session.recv_from(driven.sock) == 0     # the EOF the truncation was found by
        with pytest.raises(ValueError, match="failed earlier"):
            driven.session.read_into(driven.buffer)
    assert peer.outcome() is None


def test_session_eof_during_the_handshake(certs):
    lsock = socket.create_server(("127.0.0.1", 0))
    with lsock:
        sock = socket.create_connection(lsock.getsockname(), timeout=PEER_TIMEOUT)
        conn, _ = lsock.accept()
    with sock:
        driven = Driven(TLSSession(client_context(certs), server_hostname="localhost"), sock)
        assert driven.session.do_handshake() is False
        driven.flush()
        with conn:          # a plain server that reads the ClientHello and hangs up
            conn.settimeout(PEER_TIMEOUT)
            assert conn.recv(65536)
        assert driven.receive() == 0
        with pytest.raises(TLSError, match="during the TLS handshake") as info:
            driven.session.do_handshake()
        assert info.value.truncated


def test_session_large_transfer_both_ways_with_python_peer(certs):
    size = 16 << 20
    up, down = os.urandom(size), os.urandom(size)

    def script(tls):
        digest = ssl_exchange(tls, up, size)     # both ways at once
        tls.unwrap()
        return digest

    driven, peer = session_to_python_server(certs, script)
    with driven.sock:
        session, sock = driven.session, driven.sock
        driven.handshake()
        received, sent, out = hashlib.sha256(), 0, memoryview(down)
        got = 0
        while got < size or sent < size or session.pending_out:
            want_write = sent < size or session.pending_out
            r, w, _ = select.select([sock], [sock] if want_write else [], [], PEER_TIMEOUT)
            assert r or w, "stuck"
            if r:
                session.recv_from(sock)
                while n := session.read_into(driven.buffer):
                    received.update(driven.buffer[:n])
                    got += n
                if n == 0:
                    assert got == size, "close_notify before all the data came"
            if w:
                if not session.pending_out and sent < size:
                    sent += session.write(out[sent:sent + 256 * 1024])
                session.send_to(sock)
        assert driven.read() == b""
        session.shutdown()
        driven.flush()
    assert received.hexdigest() == hashlib.sha256(up).hexdigest()
    assert peer.outcome() == hashlib.sha256(down).hexdigest()


def session_pair(certs, server_ctx=None, client_ctx=None):
    """A client and a server TLSSession with the handshake done in memory (feed/read_out)."""
    client = TLSSession(client_ctx or client_context(certs), server_hostname="localhost")
    server = TLSSession(server_ctx or server_context(certs), server_side=True)
    for _ in range(5):
        client_done = client.do_handshake()
        server.feed(client.read_out())
        server_done = server.do_handshake()
        client.feed(server.read_out())
        if client_done and server_done:
            return client, server
    raise AssertionError("the in-memory handshake did not finish")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_to_session_in_memory(certs, version):
    sctx = server_context(certs)
    sctx.maximum_version = version
    client, server = session_pair(certs, sctx)
    assert client.tls_version == server.tls_version == version.name.replace("_", ".")
    buffer = bytearray(100)
    assert server.read_into(buffer) is None
    data = os.urandom(1 << 20)
    assert client.write(data) == len(data)
    assert client.pending_out > len(data)
    server.feed(client.read_out(1000))
    server.feed(client.read_out())
    assert client.pending_out == 0
    got, big = bytearray(), bytearray(300 * 1024)
    while (n := server.read_into(big, 200 * 1024)) is not None:
        assert 0 < n <= 200 * 1024
        got += big[:n]
    assert got == data
    assert server.read_into(buffer) is None
    client.shutdown()
    server.feed(client.read_out())
    assert server.read_into(buffer) == 0 and server.close_notify_received


def test_session_hands_over_data_before_a_corrupt_record(certs):
    client, server = session_pair(certs)
    client.write(b"good")
    good = client.read_out()
    client.write(b"evil")
    bad = bytearray(client.read_out())
    bad[-1] ^= 1        # the record's authentication tag no longer matches
    server.feed(good + bytes(bad))
    buffer = bytearray(100)
    assert server.read_into(buffer) == 4 and buffer[:4] == b"good"
    with pytest.raises(TLSError) as info:
        server.read_into(buffer)
    assert not info.value.truncated and "bad record mac" in str(info.value).lower()
    assert server.pending_out       # the alert for the peer
    with pytest.raises(ValueError, match="failed earlier"):
        server.write(b"x")


def test_session_misuse_is_refused_with_a_message(certs):
    with pytest.raises(TypeError, match="levent.TLSContext"):
        TLSSession(ssl.create_default_context(), server_hostname="localhost")
    with pytest.raises(ValueError, match="server_side=True"):
        TLSSession(client_context(certs), server_side=True)
    with pytest.raises(ValueError, match="load_cert_chain"):
        TLSSession(TLSContext(server_side=True), server_side=True)
    with pytest.raises(ValueError, match="server_hostname"):
        TLSSession(client_context(certs))
    with pytest.raises(TypeError):
        TLSSession()
    session = TLSSession(client_context(certs), server_hostname="localhost")
    buffer = bytearray(10)
    with pytest.raises(ValueError, match="before the handshake is done"):
        session.write(b"early")
    with pytest.raises(ValueError, match="before the handshake is done"):
        session.read_into(buffer)
    with pytest.raises(ValueError, match="before the handshake is done"):
        session.shutdown()
    assert session.send_to(0) == 0 and session.read_out() == b""     # nothing pending: no system call
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            session.recv_from(a)
        with pytest.raises(ValueError, match="nbytes"):
            session.recv_from(a, 0)
        with pytest.raises(TypeError, match="fileno"):
            session.recv_from("socket")
    assert session.do_handshake() is False and session.pending_out
    with pytest.raises(OSError):
        session.send_to(-1)
    client, server = session_pair(certs)
    with pytest.raises(TypeError, match="writable"):
        server.read_into(b"read-only")
    with pytest.raises(ValueError, match="at least one byte"):
        server.read_into(bytearray(0))
    with pytest.raises(TypeError, match="bytes-like"):
        client.write("text")
    with pytest.raises(TypeError, match="bytes-like"):
        client.feed(42)
    assert client.write(b"") == 0
    client.feed_eof()
    with pytest.raises(ValueError, match="feed_eof"):
        client.feed(b"more")
    client.close()
    client.close()
    assert client.closed and "closed" in repr(client)
    assert client.tls_version == "TLSv1.3"      # still readable
    for call in (client.do_handshake, lambda: client.read_into(buffer), lambda: client.write(b"x"),
                 client.shutdown, lambda: client.send_to(0), client.read_out, lambda: client.feed(b"x"),
                 client.feed_eof, lambda: client.recv_from(0)):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert client.pending_out == 0


def test_sessions_dropped_at_any_point_free_everything(certs):
    for step in range(4):
        client = TLSSession(client_context(certs), server_hostname="localhost")
        server = TLSSession(server_context(certs), server_side=True)
        if step >= 1:
            client.do_handshake()
            server.feed(client.read_out())
        if step >= 2:
            server.do_handshake()
            client.feed(server.read_out())
        if step >= 3:
            client.do_handshake()
            client.write(b"x" * 100000)     # pending, never sent
        del client, server
        gc.collect()
