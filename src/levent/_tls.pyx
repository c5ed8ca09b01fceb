"""TLS for levent: TLSContext (an OpenSSL SSL_CTX); TLSBufferEvent (libevent's bufferevent_openssl),
over a socket or as a filter over another BufferEvent; TLSSession, TLS over memory for callers that
move the bytes themselves (levent.proxy's events engine).

Ownership (libevent 2.1.12, bufferevent_openssl.c):

* A TLSBufferEvent is always made with CLOSE_ON_FREE: only then does libevent free the SSL when it
  frees the bufferevent (without it the SSL would leak, and a filter's underlying bufferevent would be
  left with no callbacks). libevent then also closes the fd (socket) or frees the underlying
  bufferevent (filter); the Python side mirrors that as BufferEvent.filter() does.
* levent takes a second reference on the SSL (SSL_up_ref), dropped when the TLSBufferEvent is
  deallocated: the negotiated version, cipher and peer certificate stay readable after close, and
  nothing levent does touches an SSL that libevent has freed. levent only calls SSL_shutdown while
  the bufferevent is open (its BIO points at the fd or the underlying bufferevent).
* The TLSBufferEvent holds its TLSContext, whose ALPN select callback refers to it (borrowed): a
  handshake only runs while the bufferevent is open.

Why TLSSession: libevent 2.1's evbuffer reads 4 KiB per recv (EVBUFFER_MAX_READ), and
bufferevent_openssl adds its own work per read; a TLSSession reads as much as the caller asks with one
recv straight into its buffer, and sends from it with one send. Ownership: the session owns its SSL,
which owns the session's BIO; the BIO's data points into the session object, so the SSL is freed
first (__dealloc__). Its queues are freed whenever they empty.

Closing: libevent 2.1.12 never sends close_notify, and with OpenSSL 3 it reports every unexpected EOF
as an opaque error (allow-dirty-shutdown or not). levent sends close_notify itself when a graceful
close() has drained the output, and classifies EOFs: see TLSBufferEvent.
"""

cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport PyObject
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memmove
from libc.time cimport tm
from posix.time cimport timeval
from libevent_pxd.buffer cimport evbuffer, evbuffer_drain, evbuffer_get_length

from libevent_pxd.openssl cimport *
from libevent_pxd.event cimport EV_READ, EV_WRITE
from libevent_pxd.util cimport evutil_make_socket_nonblocking
from libevent_pxd.bufferevent cimport (
    bufferevent, bufferevent_lock, bufferevent_unlock, bufferevent_enable, bufferevent_get_input,
    bufferevent_set_timeouts, bufferevent_trigger, BEV_OPT_CLOSE_ON_FREE, BEV_OPT_THREADSAFE,
    BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_TRIG_IGNORE_WATERMARKS, BEV_TRIG_DEFER_CALLBACKS,
)
from libevent_pxd.bufferevent_ssl cimport *
from levent._core cimport EventBase, _fd_to_hand_over, _fileno, _hand_over, _library_path, _to_timeval
from levent._bufferevent cimport BufferEvent, _checked_options, _finish_filter_close

import ipaddress as _ipaddress
import os
import ssl as _ssl

# Seconds a closed TLS socket waits for the peer to close after close_notify (see _linger).
_LINGER = 5.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _openssl_version():
    """The OpenSSL levent's TLS runs on, for ``python -m levent info``: (its OpenSSL_version() string,
    the file of its libssl, the file of its libcrypto). Not necessarily the ssl module's OpenSSL."""
    return (OpenSSL_version(OPENSSL_VERSION).decode(), _library_path(<const void *>SSL_CTX_new),
            _library_path(<const void *>OpenSSL_version))


class TLSError(OSError):
    """A TLS failure, with OpenSSL's reason as the message; ``errors`` holds every OpenSSL error
    string (oldest first), ``truncated`` is True when the peer closed without close_notify."""

    def __init__(self, message, errors=(), truncated=False):
        super().__init__(message)
        self.errors = tuple(errors)
        self.truncated = truncated


cdef str _error_string(unsigned long code):
    cdef char buf[256]
    ERR_error_string_n(code, buf, sizeof(buf))
    return buf.decode("utf-8", "replace")


cdef str _reason(unsigned long code):
    cdef const char *r = ERR_reason_error_string(code)
    return r.decode("utf-8", "replace") if r != NULL else _error_string(code)


cdef object _tls_error(list codes, SSL *ssl=NULL, str prefix=None):
    """A TLSError from OpenSSL error codes (oldest first); a verification failure says why."""
    reasons = []
    for code in codes:
        text = _reason(code)
        if (ssl != NULL and ERR_GET_LIB(code) == ERR_LIB_SSL
                and ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED):
            result = SSL_get_verify_result(ssl)
            if result != X509_V_OK:
                text += f" ({X509_verify_cert_error_string(result).decode('utf-8', 'replace')})"
        if text not in reasons:
            reasons.append(text)
    message = "; ".join(reasons) or "unknown OpenSSL error"
    if prefix:
        message = f"{prefix}: {message}"
    return TLSError(message, [_error_string(c) for c in codes])


cdef object _queued_error(str prefix):
    """A TLSError from this thread's OpenSSL error queue, which it empties."""
    cdef unsigned long code
    codes = []
    while True:
        code = ERR_get_error()
        if code == 0:
            break
        codes.append(code)
    return _tls_error(codes, NULL, prefix)


cdef int _no_password(char *buf, int size, int rwflag, void *userdata) noexcept nogil:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's password.
    cdef const char *password = <const char *>userdata
    cdef int n = 0
    if password == NULL:
        return -1
    while password[n] != 0 and n < size:
        buf[n] = password[n]
        n += 1
    return n


cdef int _alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *inp,
                      unsigned int inlen, void *arg) noexcept with gil:
    # The server's choice: its first protocol the client also offers. *out points into the
    # client's list (inp), which outlives this call, unlike our bytes object.
    cdef bytes ours = (<TLSContext>arg)._alpn
    cdef const unsigned char *p
    cdef Py_ssize_t i = 0, n
    cdef unsigned int j, m
    if not ours:
        return SSL_TLSEXT_ERR_NOACK
    p = <const unsigned char *><char *>ours
    n = len(ours)
    while i < n:
        j = 0
        while j < inlen:
            m = inp[j]
            if j + 1 + m > inlen:
                break
            if m == p[i] and memcmp(p + i + 1, inp + j + 1, m) == 0:
                out[0] = inp + j + 1
                outlen[0] = <unsigned char>m
                return SSL_TLSEXT_ERR_OK
            j += 1 + m
        i += 1 + p[i]
    return SSL_TLSEXT_ERR_NOACK


cdef class TLSContext:
    """TLS settings shared by connections: an OpenSSL SSL_CTX. Names follow ``ssl.SSLContext``.

    ``TLSContext(server_side=False)``. A client context verifies by default: ``verify_mode`` is
    ``ssl.CERT_REQUIRED``, ``check_hostname`` is True and the system CA store is loaded (add others
    with :meth:`load_verify_locations`); turning verification off takes ``check_hostname = False``
    then ``verify_mode = ssl.CERT_NONE``. A server context needs :meth:`load_cert_chain`; it does
    not ask for client certificates unless ``verify_mode`` says so. TLS 1.2 is the minimum version.
    """

    cdef SSL_CTX *_ctx
    cdef bint _server_side
    cdef bint _check_hostname
    cdef bint _has_cert
    cdef bytes _alpn        # the server's ALPN protocols, in wire format

    def __cinit__(self, bint server_side=False):
        self._ctx = SSL_CTX_new(TLS_server_method() if server_side else TLS_client_method())
        if self._ctx == NULL:
            raise _queued_error("cannot create an SSL_CTX")
        self._server_side = server_side
        SSL_CTX_set_options(self._ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION)
        # libevent may retry an SSL_write from an evbuffer whose memory moved.
        SSL_CTX_set_mode(self._ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        SSL_CTX_set_min_proto_version(self._ctx, TLS1_2_VERSION)
        SSL_CTX_set_default_passwd_cb(self._ctx, _no_password)
        if not server_side:
            SSL_CTX_set_verify(self._ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL)
            self._check_hostname = True
            if SSL_CTX_set_default_verify_paths(self._ctx) != 1:
                raise _queued_error("cannot load the system CA certificates")

    def __dealloc__(self):
        if self._ctx != NULL:
            SSL_CTX_set_alpn_select_cb(self._ctx, NULL, NULL)
            SSL_CTX_free(self._ctx)

    # -- verification ---------------------------------------------------------------------------

    @property
    def verify_mode(self):
        """``ssl.CERT_NONE``, ``CERT_OPTIONAL`` or ``CERT_REQUIRED``: whether the peer's certificate
        is asked for and must verify."""
        cdef int mode = SSL_CTX_get_verify_mode(self._ctx)
        if not mode & SSL_VERIFY_PEER:
            return _ssl.CERT_NONE
        if mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT:
            return _ssl.CERT_REQUIRED
        return _ssl.CERT_OPTIONAL

    @verify_mode.setter
    def verify_mode(self, value):
        mode = _ssl.VerifyMode(value)
        if mode == _ssl.CERT_NONE and self._check_hostname:
            raise ValueError("verify_mode cannot be CERT_NONE while check_hostname is on: "
                             "set check_hostname = False first")
        flags = {_ssl.CERT_NONE: SSL_VERIFY_NONE, _ssl.CERT_OPTIONAL: SSL_VERIFY_PEER,
                 _ssl.CERT_REQUIRED: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT}[mode]
        SSL_CTX_set_verify(self._ctx, flags, NULL)

    @property
    def check_hostname(self):
        """Whether a client checks that the certificate is for ``server_hostname`` (turning it on
        also sets ``verify_mode`` to CERT_REQUIRED if it was CERT_NONE)."""
        return self._check_hostname

    @check_hostname.setter
    def check_hostname(self, bint value):
        if value and self.verify_mode == _ssl.CERT_NONE:
            self.verify_mode = _ssl.CERT_REQUIRED
        self._check_hostname = value

    @property
    def server_side(self):
        """True for a server context (``TLSContext(server_side=True)``), False for a client one."""
        return self._server_side

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        """Trust the CA certificates in ``cafile`` (PEM), the directory ``capath`` (hashed names, as
        ``openssl rehash`` makes them) and/or ``cadata`` (str: PEM certificates; bytes: DER)."""
        if cafile is None and capath is None and cadata is None:
            raise TypeError("give cafile, capath or cadata")
        if cafile is not None or capath is not None:
            f = os.fsencode(cafile) if cafile is not None else None
            p = os.fsencode(capath) if capath is not None else None
            ERR_clear_error()
            if SSL_CTX_load_verify_locations(self._ctx, <char *>f if f is not None else NULL,
                                             <char *>p if p is not None else NULL) != 1:
                raise _queued_error(f"cannot load CA certificates from {cafile or capath!r}")
        if cadata is not None:
            self._load_cadata(cadata)

    cdef int _load_cadata(self, cadata) except -1:
        cdef X509 *cert
        cdef BIO *bio
        cdef const unsigned char *p
        cdef const unsigned char *end
        cdef bytes data
        cdef int count = 0
        cdef X509_STORE *store = SSL_CTX_get_cert_store(self._ctx)
        ERR_clear_error()
        if isinstance(cadata, str):
            data = cadata.encode("ascii")
            bio = BIO_new_mem_buf(<char *>data, len(data))
            if bio == NULL:
                raise MemoryError()
            try:
                while True:
                    cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)
                    if cert == NULL:
                        break
                    count += 1
                    X509_STORE_add_cert(store, cert)    # takes its own reference
                    X509_free(cert)
            finally:
                BIO_free(bio)
            if count and ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE:
                ERR_clear_error()   # the end of the data
        else:
            data = bytes(memoryview(cadata))
            p = <const unsigned char *><char *>data
            end = p + len(data)
            while p < end:
                cert = d2i_X509(NULL, &p, end - p)
                if cert == NULL:
                    break
                count += 1
                X509_STORE_add_cert(store, cert)
                X509_free(cert)
        if ERR_peek_last_error() != 0 or count == 0:
            err = _queued_error("cannot load the CA certificates in cadata")
            if count == 0 and not err.errors:
                raise TLSError("cadata holds no certificate")
            raise err
        return 0

    # -- own certificate ------------------------------------------------------------------------

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        """Use the PEM certificate chain in ``certfile`` (this certificate first) and the private
        key in ``keyfile`` (default: ``certfile``); ``password`` (str, bytes, or a callable
        returning one, called once) decrypts an encrypted key."""
        cdef bytes secret = None
        if callable(password):
            password = password()
        if isinstance(password, str):
            secret = password.encode("utf-8")
        elif password is not None:
            secret = bytes(password)
        if secret is not None and b"\0" in secret:
            raise ValueError("the password contains a NUL byte")
        cert = os.fsencode(certfile)
        key = os.fsencode(keyfile if keyfile is not None else certfile)
        ERR_clear_error()
        if SSL_CTX_use_certificate_chain_file(self._ctx, cert) != 1:
            raise _queued_error(f"cannot load the certificate chain from {certfile!r}")
        SSL_CTX_set_default_passwd_cb_userdata(self._ctx, <char *>secret if secret is not None else NULL)
        try:
            if SSL_CTX_use_PrivateKey_file(self._ctx, key, SSL_FILETYPE_PEM) != 1:
                raise _queued_error(f"cannot load the private key from {keyfile or certfile!r}")
        finally:
            SSL_CTX_set_default_passwd_cb_userdata(self._ctx, NULL)
        if SSL_CTX_check_private_key(self._ctx) != 1:
            raise _queued_error("the private key does not match the certificate")
        self._has_cert = True

    # -- protocol -------------------------------------------------------------------------------

    def set_ciphers(self, str ciphers not None):
        """OpenSSL's cipher list for TLS 1.2 and below (TLS 1.3 suites are not affected)."""
        ERR_clear_error()
        if SSL_CTX_set_cipher_list(self._ctx, ciphers.encode("ascii")) != 1:
            raise _queued_error(f"no cipher can be selected with {ciphers!r}")

    def set_alpn_protocols(self, protocols):
        """The ALPN protocols, most preferred first (e.g. ``["h2", "http/1.1"]``): a client offers
        them, a server picks its first one the client offers."""
        wire = bytearray()
        for proto in protocols:
            b = proto.encode("ascii") if isinstance(proto, str) else bytes(proto)
            if not 0 < len(b) < 256:
                raise ValueError(f"an ALPN protocol must be 1 to 255 bytes long, not {proto!r}")
            wire.append(len(b))
            wire += b
        cdef bytes data = bytes(wire)
        if self._server_side:
            self._alpn = data
            SSL_CTX_set_alpn_select_cb(self._ctx, _alpn_select, <void *>self)
        elif SSL_CTX_set_alpn_protos(self._ctx, data, len(data)) != 0:    # 0 is success here
            raise _queued_error("cannot set the ALPN protocols")

    @property
    def minimum_version(self):
        """The lowest ``ssl.TLSVersion`` allowed (TLSv1_2 by default)."""
        return _version_out(SSL_CTX_get_min_proto_version(self._ctx), _ssl.TLSVersion.MINIMUM_SUPPORTED)

    @minimum_version.setter
    def minimum_version(self, value):
        if SSL_CTX_set_min_proto_version(self._ctx, _version_in(value)) != 1:
            raise ValueError(f"unsupported minimum version {value!r}")

    @property
    def maximum_version(self):
        """The highest ``ssl.TLSVersion`` allowed (MAXIMUM_SUPPORTED by default)."""
        return _version_out(SSL_CTX_get_max_proto_version(self._ctx), _ssl.TLSVersion.MAXIMUM_SUPPORTED)

    @maximum_version.setter
    def maximum_version(self, value):
        if SSL_CTX_set_max_proto_version(self._ctx, _version_in(value)) != 1:
            raise ValueError(f"unsupported maximum version {value!r}")

    def __repr__(self):
        side = "server" if self._server_side else "client"
        return f"<TLSContext {side} verify_mode={self.verify_mode.name} check_hostname={self._check_hostname}>"


cdef int _version_in(value) except? -1:
    v = _ssl.TLSVersion(value)
    if v in (_ssl.TLSVersion.MINIMUM_SUPPORTED, _ssl.TLSVersion.MAXIMUM_SUPPORTED):
        return 0    # OpenSSL's "no limit"
    return int(v)


cdef object _version_out(int version, unlimited):
    return unlimited if version == 0 else _ssl.TLSVersion(version)


cdef SSL *_new_ssl(ctx, bint server_side, server_hostname) except NULL:
    """An SSL for one connection, checked against its context."""
    if not isinstance(ctx, TLSContext):
        raise TypeError(f"ctx must be a levent.TLSContext, not {type(ctx).__name__} "
                        "(an ssl.SSLContext cannot be used: make a levent.TLSContext)")
    cdef TLSContext context = <TLSContext>ctx
    if server_side != context._server_side:
        raise ValueError("server_side=True needs a TLSContext(server_side=True)" if server_side else
                         "a TLSContext(server_side=True) is for server_side=True connections")
    if server_side:
        if server_hostname is not None:
            raise ValueError("server_hostname is for the client side only")
        if not context._has_cert:
            raise ValueError("a server TLSContext needs a certificate: call load_cert_chain() first")
    elif server_hostname is None and context._check_hostname:
        raise ValueError("check_hostname needs server_hostname (or set ctx.check_hostname = False)")
    cdef bytes host = None
    cdef bint is_ip = False
    if server_hostname is not None:
        if not isinstance(server_hostname, str) or not server_hostname:
            raise TypeError(f"server_hostname must be a non-empty str, not {server_hostname!r}")
        try:
            _ipaddress.ip_address(server_hostname)
            is_ip = True
            host = server_hostname.encode("ascii")
        except ValueError:
            host = server_hostname.encode("idna")
    ERR_clear_error()
    cdef SSL *ssl = SSL_new(context._ctx)
    if ssl == NULL:
        raise _queued_error("SSL_new failed")
    cdef X509_VERIFY_PARAM *param = SSL_get0_param(ssl)
    if host is not None:
        ok = True
        if not is_ip:
            ok = SSL_set_tlsext_host_name(ssl, host) == 1     # SNI names no IP addresses
        if ok and context._check_hostname:
            if is_ip:
                ok = X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1
            else:
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)
                ok = SSL_set1_host(ssl, host) == 1
        if not ok:
            SSL_free(ssl)
            raise _queued_error(f"cannot use server_hostname {server_hostname!r}")
    return ssl


cdef int _require_close_on_free(int options) except -1:
    if not options & BEV_OPT_CLOSE_ON_FREE:
        raise ValueError("a TLSBufferEvent needs CLOSE_ON_FREE (libevent frees the SSL only then); "
                         "to keep a socket of yours open, hand over a socket.dup() of it")
    return 0


@cython.no_gc_clear   # __dealloc__ needs _base alive to free the bufferevent
cdef class TLSBufferEvent(BufferEvent):
    """A BufferEvent speaking TLS (libevent's bufferevent_openssl): what you write is encrypted,
    what you read was decrypted.

    ``TLSBufferEvent(base, ctx, sock=None, *, server_side=False, server_hostname=None,
    options=CLOSE_ON_FREE, allow_dirty_shutdown=False, on_read=None, on_write=None, on_event=None)``
    runs TLS on a socket: an accepted one (``server_side=True``), a connected one, or None to
    :meth:`~BufferEvent.connect` later. :meth:`wrap` runs TLS as a filter over another BufferEvent.

    CONNECTED is reported when the handshake is done. A handshake or protocol failure arrives as
    ERROR with a :class:`TLSError` carrying OpenSSL's reason (``certificate verify failed
    (Hostname mismatch)``, ...). EOF alone means the peer closed cleanly (close_notify). A
    truncation (the connection ended without close_notify) arrives as EOF|ERROR with a TLSError
    whose ``truncated`` is True, or as EOF alone with ``allow_dirty_shutdown=True``;
    ``tls_truncated`` tells it afterwards. :meth:`~BufferEvent.close` sends close_notify once the
    output has drained; :meth:`~BufferEvent.abort` does not.
    """

    cdef SSL *_ssl
    cdef TLSContext _ctx
    cdef bint _server_side
    cdef object _server_hostname
    cdef bint _allow_dirty
    cdef bint _truncated
    cdef bint _shutdown_sent
    cdef bint _lingering        # close_notify sent: waiting for the peer to close (bounded)

    def __cinit__(self):
        self._ssl = NULL

    def __init__(self, EventBase base not None, ctx, sock=None, *, bint server_side=False,
                 server_hostname=None, int options=BEV_OPT_CLOSE_ON_FREE, bint allow_dirty_shutdown=False,
                 on_read=None, on_write=None, on_event=None):
        cdef int fd = -1
        if self._bev != NULL:
            raise RuntimeError("TLSBufferEvent.__init__() called twice")
        options = _checked_options(options)
        _require_close_on_free(options)
        for callback in (on_read, on_write, on_event):
            if callback is not None and not callable(callback):
                raise TypeError(f"a callback must be callable or None, not {type(callback).__name__}")
        base._ensure_open()
        if server_side and sock is None:
            raise ValueError("a server-side TLSBufferEvent needs the accepted socket")
        if sock is not None:
            fd = _fd_to_hand_over(sock, True)
            base._check_watchable(fd)
            if evutil_make_socket_nonblocking(fd) != 0:
                raise OSError(errno, f"cannot make fd {fd} non-blocking: {os.strerror(errno)}")
        cdef SSL *ssl = _new_ssl(ctx, server_side, server_hostname)
        cdef bufferevent *bev = bufferevent_openssl_socket_new(
            base._base, fd, <ssl_st *>ssl,
            BUFFEREVENT_SSL_ACCEPTING if server_side else BUFFEREVENT_SSL_CONNECTING, options)
        if bev == NULL:
            SSL_free(ssl)
            raise OSError(errno, "bufferevent_openssl_socket_new failed")
        if sock is not None:
            _hand_over(sock, True)
        self._setup(<TLSContext>ctx, ssl, bev, server_side, server_hostname, allow_dirty_shutdown)
        self._init(base, bev, options)
        self._on_read = on_read
        self._on_write = on_write
        self._on_event = on_event

    @staticmethod
    def wrap(BufferEvent underlying not None, ctx, *, bint server_side=False, server_hostname=None,
             int options=BEV_OPT_CLOSE_ON_FREE, bint allow_dirty_shutdown=False):
        """A TLSBufferEvent running TLS over ``underlying`` (bufferevent_openssl_filter_new): the
        handshake and the encrypted records go through ``underlying``, which belongs to the
        TLSBufferEvent from now on (its callbacks no longer run; closing the TLSBufferEvent closes
        it)."""
        underlying._ensure_open()
        if underlying._filter_above != NULL:
            raise ValueError("this BufferEvent already has a filter on top of it")
        options = _checked_options(options)
        _require_close_on_free(options)
        cdef SSL *ssl = _new_ssl(ctx, server_side, server_hostname)
        cdef bufferevent *bev = bufferevent_openssl_filter_new(
            underlying._base._base, underlying._bev, <ssl_st *>ssl,
            BUFFEREVENT_SSL_ACCEPTING if server_side else BUFFEREVENT_SSL_CONNECTING, options)
        if bev == NULL:
            SSL_free(ssl)
            raise OSError(errno, "bufferevent_openssl_filter_new failed")
        cdef TLSBufferEvent self = TLSBufferEvent.__new__(TLSBufferEvent)
        self._setup(<TLSContext>ctx, ssl, bev, server_side, server_hostname, allow_dirty_shutdown)
        self._init(underlying._base, bev, options)
        self._underlying = underlying
        underlying._filter_above = <PyObject *>self
        if not server_side:
            # libevent starts a filter's handshake from the write callback of the one below, which
            # an empty output never runs (and it ignores that one's CONNECTED): run it once, from
            # the loop, so that the ClientHello is sent without waiting for a read or write.
            bufferevent_trigger(underlying._bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS)
        return self

    cdef int _setup(self, TLSContext ctx, SSL *ssl, bufferevent *bev, bint server_side, server_hostname,
                    bint allow_dirty) except -1:
        SSL_up_ref(ssl)     # ours, besides libevent's (see the module docstring)
        self._ssl = ssl
        self._ctx = ctx
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._allow_dirty = allow_dirty
        # levent tells truncations apart itself (_describe_event): with this, libevent reports a
        # filter's underlying EOF as EOF rather than an opaque ERROR.
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1)
        return 0

    def __dealloc__(self):
        if self._ssl != NULL:
            SSL_free(self._ssl)
            self._ssl = NULL

    cdef tuple _describe_event(self, short what, int err):
        cdef unsigned long code
        codes = []
        while True:
            code = bufferevent_get_openssl_error(self._bev)
            if code == 0:
                break
            codes.append(code)
        codes.reverse()     # libevent hands them back newest first
        # libevent also stores the SSL_ERROR_* kind (a small number, no library) among the codes.
        codes = [c for c in codes if ERR_GET_LIB(c) != 0]
        truncated = False
        if what & BEV_EVENT_EOF:
            truncated = not SSL_get_shutdown(self._ssl) & SSL_RECEIVED_SHUTDOWN
        elif what & BEV_EVENT_ERROR:
            truncated = any(ERR_GET_LIB(c) == ERR_LIB_SSL and ERR_GET_REASON(c) == SSL_R_UNEXPECTED_EOF_WHILE_READING
                            for c in codes)
        if truncated:
            self._truncated = True
            what = (what & ~BEV_EVENT_ERROR) | BEV_EVENT_EOF
            if self._allow_dirty:
                return what, None
            return what | BEV_EVENT_ERROR, TLSError(
                "TLS connection truncated: the peer closed it without close_notify",
                [_error_string(c) for c in codes], True)
        if what & BEV_EVENT_ERROR and codes:
            return what, _tls_error(codes, self._ssl)
        return BufferEvent._describe_event(self, what, err)

    cdef int _drained(self) except -1:
        # A graceful close is done sending: send close_notify (once), then free.
        if self._lingering:
            return 0
        if (self._bev == NULL or self._shutdown_sent or not SSL_is_init_finished(self._ssl)
                or SSL_get_shutdown(self._ssl) & SSL_SENT_SHUTDOWN):
            return self._free()
        self._shutdown_sent = True
        return self._shutdown_step()

    cdef int _shutdown_step(self) except -1:
        cdef bufferevent *bev = self._bev
        cdef bint pending
        if bev == NULL:
            return 0
        if self._options & BEV_OPT_THREADSAFE:
            with nogil:
                bufferevent_lock(bev)
                pending = _send_close_notify(self._ssl)
                bufferevent_unlock(bev)
        else:
            pending = _send_close_notify(self._ssl)
        if pending:
            # The socket's send buffer is full (libevent's output drained into it): try again.
            self._closing = True
            self._on_read = self._on_write = self._on_event = None
            self._base.call_later(0.01, _shutdown_again, self)
            return 0
        if self._underlying is None or self._underlying._bev == NULL:
            return self._linger()
        # Over a filter the record sits in the output of the BufferEvent below: free once it left.
        bufferevent_enable(self._underlying._bev, EV_WRITE)
        _finish_filter_close(self)
        return 0

    cdef int _linger(self) except -1:
        # Freeing now, with data of the peer's unread (a TLS 1.3 session ticket, say), would make the
        # kernel reset the connection and drop what it has not sent yet: wait, discarding input,
        # until the peer closes (EOF or ERROR frees it) or _LINGER seconds pass (TIMEOUT does).
        cdef timeval tv
        if SSL_get_shutdown(self._ssl) & SSL_RECEIVED_SHUTDOWN:
            return self._free()
        self._lingering = self._closing = True
        self._on_write = self._on_event = None
        self._on_read = _discard_input
        _to_timeval(_LINGER, &tv)
        bufferevent_set_timeouts(self._bev, &tv, NULL)
        bufferevent_enable(self._bev, EV_READ)
        return 0

    # -- what was negotiated --------------------------------------------------------------------

    @property
    def context(self):
        """The TLSContext."""
        return self._ctx

    @property
    def server_side(self):
        """True for the accepting side."""
        return self._server_side

    @property
    def server_hostname(self):
        """The name the client asked for (SNI) and checks the certificate against."""
        return self._server_hostname

    @property
    def tls_version(self):
        """The negotiated protocol (``"TLSv1.3"``, ...), None before the handshake is done."""
        return _tls_version(self._ssl, self._ssl != NULL and SSL_is_init_finished(self._ssl))

    @property
    def cipher(self):
        """The negotiated cipher's OpenSSL name, None before the handshake is done."""
        return _cipher(self._ssl, self._ssl != NULL and SSL_is_init_finished(self._ssl))

    @property
    def alpn_protocol(self):
        """The protocol ALPN agreed on, or None."""
        return _alpn_protocol(self._ssl)

    @property
    def tls_truncated(self):
        """True once the connection ended without the peer's close_notify."""
        return self._truncated

    @property
    def peer_certificate_der(self):
        """The peer's certificate (DER bytes), or None."""
        return _peer_certificate_der(self._ssl)

    @property
    def peer_certificate(self):
        """The peer's certificate as a dict shaped like ``ssl.SSLSocket.getpeercert()`` (subject,
        issuer, version, serialNumber, notBefore, notAfter, subjectAltName), or None. Given even when
        verification was off: check ``ctx.verify_mode`` before trusting it."""
        return _peer_certificate(self._ssl)


def _discard_input(TLSBufferEvent bev):
    cdef evbuffer *data = bufferevent_get_input(bev._bev)
    evbuffer_drain(data, evbuffer_get_length(data))


def _shutdown_again(TLSBufferEvent bev):
    if bev._bev != NULL and bev._closing:
        bev._shutdown_step()


cdef bint _send_close_notify(SSL *ssl) noexcept nogil:
    # One SSL_shutdown sends close_notify; the peer's answer is not waited for (the connection is
    # freed next). True: the socket could not take it now (OpenSSL keeps the record to retry).
    # Other failures leave nothing to do; the thread's error queue is left clean.
    cdef int r
    cdef bint again = False
    ERR_clear_error()
    r = SSL_shutdown(ssl)
    if r < 0:
        again = SSL_get_error(ssl, r) == SSL_ERROR_WANT_WRITE
    ERR_clear_error()
    return again


# -- TLSSession: TLS over memory, for sockets the caller reads and writes ----------------------------

from levent._sysio cimport MSG_DONTWAIT, MSG_NOSIGNAL, c_recv, c_send

cdef enum:
    _MIN_ALLOCATION = 16384     # a queue's smallest buffer: one TLS record
    _MAX_RECORD = 16384         # plaintext bytes in a TLS record, at most
    _RECORD_OVERHEAD = 128      # ciphertext bytes a record adds to its plaintext, at most

# recv_from()'s default read: as levent.proxy's, a quarter MiB per system call.
DEFAULT_RECV = 256 * 1024


cdef struct _Queue:
    # Bytes data[start:end] of a malloc'd buffer of ``size`` bytes. Freed once empty, so an idle
    # session holds no buffer; room is reserved before a write into it, so bytes are copied in once.
    char *data
    size_t start
    size_t end
    size_t size


cdef struct _SessionIO:
    # What a TLSSession's BIO reads from and writes to (BIO_get_data points here, inside the session).
    _Queue incoming        # ciphertext from the peer that OpenSSL has not read yet
    _Queue outgoing        # ciphertext for the peer not sent yet
    bint eof               # the peer's data ended: ``incoming`` is all there will be
    bint nomem             # a BIO write could not grow ``outgoing``


cdef char *_queue_room(_Queue *q, size_t n) noexcept nogil:
    # Room for n more bytes at q.data + q.end: moves the bytes to the front, or grows the buffer.
    # NULL when out of memory (the queue is left as it was).
    cdef size_t used = q.end - q.start
    cdef size_t size
    cdef char *data
    if q.size - q.end >= n:
        return q.data + q.end
    if q.start:
        memmove(q.data, q.data + q.start, used)
        q.start = 0
        q.end = used
        if q.size - used >= n:
            return q.data + used
    size = max(used + n, 2 * q.size, <size_t>_MIN_ALLOCATION)
    data = <char *>realloc(q.data, size)
    if data == NULL:
        return NULL
    q.data = data
    q.size = size
    return data + used


cdef void _queue_consume(_Queue *q, size_t n) noexcept nogil:
    q.start += n
    if q.start == q.end:
        _queue_free(q)


cdef void _queue_free(_Queue *q) noexcept nogil:
    free(q.data)
    q.data = NULL
    q.start = q.end = q.size = 0


cdef int _bio_read(BIO *bio, char *buf, size_t size, size_t *readbytes) noexcept nogil:
    cdef _SessionIO *io = <_SessionIO *>BIO_get_data(bio)
    cdef size_t n = io.incoming.end - io.incoming.start
    BIO_clear_retry_flags(bio)
    readbytes[0] = 0
    if n == 0:
        if not io.eof:
            BIO_set_retry_read(bio)     # SSL_ERROR_WANT_READ; without it, OpenSSL sees the EOF
        return 0
    if n > size:
        n = size
    memcpy(buf, io.incoming.data + io.incoming.start, n)
    _queue_consume(&io.incoming, n)
    readbytes[0] = n
    return 1


cdef int _bio_write(BIO *bio, const char *data, size_t size, size_t *written) noexcept nogil:
    cdef _SessionIO *io = <_SessionIO *>BIO_get_data(bio)
    cdef char *room = _queue_room(&io.outgoing, size)
    BIO_clear_retry_flags(bio)
    if room == NULL:
        io.nomem = True     # OpenSSL sees a failed write; the session turns it into MemoryError
        written[0] = 0
        return 0
    memcpy(room, data, size)
    io.outgoing.end += size
    written[0] = size
    return 1


cdef long _bio_ctrl(BIO *bio, int cmd, long num, void *ptr) noexcept nogil:
    cdef _SessionIO *io = <_SessionIO *>BIO_get_data(bio)
    if cmd == BIO_CTRL_FLUSH:
        return 1    # nothing is buffered below OpenSSL: the caller sends ``outgoing``
    if cmd == BIO_CTRL_PENDING:
        return <long>(io.incoming.end - io.incoming.start)
    if cmd == BIO_CTRL_WPENDING:
        return <long>(io.outgoing.end - io.outgoing.start)
    if cmd == BIO_CTRL_EOF:
        return io.eof and io.incoming.end == io.incoming.start
    return 0


cdef BIO_METHOD *_session_bio_method = NULL


cdef BIO_METHOD *_bio_method() except NULL:
    # One BIO_METHOD for every session, made on first use and never freed (as OpenSSL's own).
    global _session_bio_method
    cdef BIO_METHOD *method
    cdef int index
    if _session_bio_method == NULL:
        ERR_clear_error()
        index = BIO_get_new_index()
        method = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, b"levent TLSSession") if index != -1 else NULL
        if method == NULL:
            raise _queued_error("cannot create the TLSSession BIO method")
        BIO_meth_set_read_ex(method, _bio_read)
        BIO_meth_set_write_ex(method, _bio_write)
        BIO_meth_set_ctrl(method, _bio_ctrl)
        _session_bio_method = method
    return _session_bio_method


@cython.final
cdef class TLSSession:
    """TLS for a connection whose bytes you move yourself (``ssl.SSLObject`` and its two
    ``ssl.MemoryBIO``\\ s in one): ciphertext goes in with :meth:`recv_from` (one ``recv`` from a
    socket, straight into the session's buffer) or :meth:`feed`, and out with :meth:`send_to` (one
    ``send``, unsent bytes are kept) or :meth:`read_out`; plaintext comes out with :meth:`read_into`
    and goes in with :meth:`write`.

    ``TLSSession(ctx, *, server_side=False, server_hostname=None)``: ``ctx`` is a :class:`TLSContext`
    of the same side; a client checks the certificate against ``server_hostname`` (and sends it as
    SNI unless it is an IP address) as far as ``ctx`` verifies.

    A connection goes: :meth:`do_handshake` until it returns True (sending :attr:`pending_out` after
    every call, receiving whenever it returns False); then :meth:`read_into` and :meth:`write`;
    :meth:`shutdown` sends close_notify. After any call, send what :attr:`pending_out` says: reading
    may also produce bytes for the peer (a TLS 1.3 key update, an alert).

    Failures raise :class:`TLSError` with OpenSSL's reason; the session can then only send what is
    pending (the alert) and be closed. A peer that closes its socket without close_notify is a
    truncation: TLSError with ``truncated`` True. No call waits for the socket, and every call holds
    the GIL: two threads never run one session at once (the order of their calls is theirs to keep).
    """

    cdef SSL *_ssl
    cdef _SessionIO _io
    cdef TLSContext _ctx
    cdef bint _server_side
    cdef object _server_hostname
    cdef bint _closed
    cdef bint _established      # do_handshake() returned True (OpenSSL's own flag is reset by a failure)
    cdef bint _truncated
    cdef object _error          # the TLSError that ended the session
    cdef object _deferred       # a TLSError met after read_into() had data to return: the next call raises it

    def __cinit__(self, ctx, *, bint server_side=False, server_hostname=None):
        cdef BIO *bio
        self._ssl = _new_ssl(ctx, server_side, server_hostname)
        bio = BIO_new(_bio_method())
        if bio == NULL:
            raise _queued_error("cannot create the TLSSession's BIO")
        BIO_set_data(bio, &self._io)    # inside this object, which frees the SSL (and the BIO) first
        BIO_set_init(bio, 1)
        SSL_set_bio(self._ssl, bio, bio)    # the SSL owns the BIO: one reference serves both ways
        # write() hands OpenSSL slices of caller buffers and loops over the records itself.
        # SSL_MODE_RELEASE_BUFFERS stays off: a busy session keeps OpenSSL's record buffers rather
        # than allocating them again for every batch of records.
        SSL_set_mode(self._ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        SSL_set_read_ahead(self._ssl, 1)    # one BIO read per ~16 KiB rather than two per record
        if server_side:
            SSL_set_accept_state(self._ssl)
        else:
            SSL_set_connect_state(self._ssl)
        self._ctx = <TLSContext>ctx
        self._server_side = server_side
        self._server_hostname = server_hostname

    def __dealloc__(self):
        if self._ssl != NULL:
            SSL_free(self._ssl)     # frees the BIO, which points into _io: before the queues go
            self._ssl = NULL
        _queue_free(&self._io.incoming)
        _queue_free(&self._io.outgoing)

    cdef int _check_open(self) except -1:
        if self._closed:
            raise ValueError("this TLSSession is closed: a new connection needs a new TLSSession")
        return 0

    cdef int _check_usable(self) except -1:
        # Before an SSL operation: OpenSSL must not be called again after a fatal error.
        self._check_open()
        if self._deferred is not None:
            self._error, self._deferred = self._deferred, None
            raise self._error
        if self._error is not None:
            raise ValueError(f"this TLSSession failed earlier ({self._error}): send what is pending "
                             "and close it") from self._error
        return 0

    cdef int _check_handshake_done(self, str what) except -1:
        if not self._established:
            raise ValueError(f"{what} before the handshake is done: call do_handshake() until it "
                             "returns True first")
        return 0

    cdef object _failure(self, int err):
        """The exception for a failed SSL call (``err`` from SSL_get_error); empties the thread's
        error queue. The caller raises it (or defers it) and sets _error."""
        cdef unsigned long code
        codes = []
        while True:
            code = ERR_get_error()
            if code == 0:
                break
            codes.append(code)
        if self._io.nomem:
            self._io.nomem = False
            return MemoryError("no memory for the TLS session's output")
        if any(ERR_GET_LIB(c) == ERR_LIB_SSL and ERR_GET_REASON(c) == SSL_R_UNEXPECTED_EOF_WHILE_READING
               for c in codes):
            self._truncated = True
            message = ("TLS connection truncated: the peer closed it without close_notify"
                       if self._established else "the peer closed the connection during the TLS handshake")
            return TLSError(message, [_error_string(c) for c in codes], True)
        if codes:
            return _tls_error(codes, self._ssl)
        if err == SSL_ERROR_ZERO_RETURN:
            return TLSError("the peer sent close_notify during the TLS handshake")
        return TLSError(f"TLS failure without an OpenSSL reason (SSL_get_error {err})")

    cdef object _fail(self, int err):
        self._error = self._failure(err)
        return self._error

    # -- the handshake ------------------------------------------------------------------------------

    def do_handshake(self):
        """Run the handshake as far as the received bytes allow: True once it is done (and on every
        call after), False while it waits for the peer. Raises TLSError when it fails (a certificate
        that does not verify, no common protocol, ...): the alert for the peer is in
        :attr:`pending_out`."""
        cdef int r
        self._check_usable()
        if self._established:
            return True
        ERR_clear_error()
        r = SSL_do_handshake(self._ssl)
        if r == 1:
            self._established = True
            return True
        r = SSL_get_error(self._ssl, r)
        if r == SSL_ERROR_WANT_READ and not self._io.nomem:
            return False
        raise self._fail(r)

    @property
    def handshake_done(self):
        """True once :meth:`do_handshake` returned True."""
        return self._established

    # -- ciphertext in --------------------------------------------------------------------------------

    def recv_from(self, fd, Py_ssize_t nbytes=DEFAULT_RECV):
        """Receive up to ``nbytes`` of ciphertext from socket ``fd`` (an int or an object with
        ``fileno()``) with one non-blocking ``recv``, straight into the session's buffer. Returns the
        byte count; 0 means the peer closed its side (EOF: what follows a missing close_notify is a
        truncation). Raises BlockingIOError when nothing is there, OSError on errors."""
        cdef int fileno = _fileno(fd)
        cdef char *room
        cdef ssize_t n
        cdef int err
        self._check_open()
        if nbytes <= 0:
            raise ValueError(f"nbytes must be > 0, not {nbytes}")
        room = _queue_room(&self._io.incoming, nbytes)
        if room == NULL:
            raise MemoryError(f"no memory to receive {nbytes} bytes")
        while True:
            n = c_recv(fileno, room, nbytes, MSG_DONTWAIT)
            if n >= 0 or errno != EINTR:
                break
        err = errno
        if n > 0:
            self._io.incoming.end += n
            return n
        if self._io.incoming.start == self._io.incoming.end:
            _queue_free(&self._io.incoming)     # the room reserved for nothing
        if n < 0:
            raise OSError(err, os.strerror(err))    # BlockingIOError, ConnectionResetError, ...
        self._io.eof = True
        return 0

    def feed(self, data):
        """Add ciphertext received from the peer (bytes-like); returns its length."""
        cdef Py_buffer view
        cdef char *room
        self._check_open()
        if self._io.eof:
            raise ValueError("feed() after the peer's EOF (feed_eof() or recv_from() returning 0): "
                             "nothing can follow it")
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except TypeError:
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None
        try:
            if view.len == 0:
                return 0
            room = _queue_room(&self._io.incoming, view.len)
            if room == NULL:
                raise MemoryError(f"no memory for {view.len} bytes of ciphertext")
            memcpy(room, view.buf, view.len)
            self._io.incoming.end += view.len
            return view.len
        finally:
            PyBuffer_Release(&view)

    def feed_eof(self):
        """The peer closed its side: no ciphertext follows (as :meth:`recv_from` returning 0)."""
        self._check_open()
        self._io.eof = True

    # -- plaintext ------------------------------------------------------------------------------------

    def read_into(self, buffer, Py_ssize_t nbytes=-1):
        """Decrypt into ``buffer`` (writable bytes-like; at most ``nbytes`` bytes if given) as much as
        the received ciphertext holds. Returns the byte count; None when more ciphertext is needed
        (receive, then call again); 0 once the peer's close_notify came (a clean end). Raises
        TLSError on a protocol failure, with ``truncated`` True when the peer's data ended without
        close_notify."""
        cdef Py_buffer view
        cdef size_t got, total = 0
        cdef int r, err = SSL_ERROR_NONE
        self._check_usable()
        self._check_handshake_done("read_into()")
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except (TypeError, BufferError):
            raise TypeError(f"buffer must be a writable bytes-like object, not {type(buffer).__name__}") from None
        try:
            if nbytes < 0 or nbytes > view.len:
                nbytes = view.len
            if nbytes == 0:
                raise ValueError("read_into() needs room for at least one byte")
            ERR_clear_error()
            # OpenSSL returns at most one record per call: loop here rather than in Python.
            while total < <size_t>nbytes:
                r = SSL_read_ex(self._ssl, <char *>view.buf + total, nbytes - total, &got)
                if r != 1:
                    err = SSL_get_error(self._ssl, r)
                    break
                total += got
        finally:
            PyBuffer_Release(&view)
        if err == SSL_ERROR_WANT_READ and not self._io.nomem:
            return total or None
        if err == SSL_ERROR_ZERO_RETURN or err == SSL_ERROR_NONE:
            return total
        if total:
            self._deferred = self._failure(err)     # hand over the plaintext first
            return total
        raise self._fail(err)

    def write(self, data):
        """Encrypt ``data`` (bytes-like) into :attr:`pending_out`; returns the byte count consumed
        (all of it: the ciphertext waits in the session until sent, so send it before writing more)."""
        cdef Py_buffer view
        cdef size_t written, total = 0
        cdef Py_ssize_t records
        cdef int r, err = SSL_ERROR_NONE
        self._check_usable()
        self._check_handshake_done("write()")
        if SSL_get_shutdown(self._ssl) & SSL_SENT_SHUTDOWN:
            raise ValueError("write() after shutdown(): nothing can follow close_notify")
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except TypeError:
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None
        try:
            if view.len == 0:
                return 0
            # Room for all the records now: OpenSSL's writes then never move the buffer.
            records = (view.len + _MAX_RECORD - 1) // _MAX_RECORD
            if _queue_room(&self._io.outgoing, view.len + records * _RECORD_OVERHEAD) == NULL:
                raise MemoryError(f"no memory to encrypt {view.len} bytes")
            ERR_clear_error()
            while total < <size_t>view.len:
                r = SSL_write_ex(self._ssl, <char *>view.buf + total, view.len - total, &written)
                if r != 1:
                    err = SSL_get_error(self._ssl, r)
                    break
                total += written
        finally:
            PyBuffer_Release(&view)
        if err != SSL_ERROR_NONE:
            raise self._fail(err)
        return total

    # -- ciphertext out -------------------------------------------------------------------------------

    @property
    def pending_out(self):
        """Bytes of ciphertext waiting to be sent to the peer."""
        return self._io.outgoing.end - self._io.outgoing.start

    def send_to(self, fd):
        """Send pending ciphertext to socket ``fd`` with one non-blocking ``send`` (MSG_NOSIGNAL: a
        closed peer is EPIPE, not SIGPIPE); what the socket does not take stays pending. Returns the
        byte count sent, 0 when the socket's buffer is full (wait until it is writable) or nothing is
        pending. Raises OSError on errors."""
        cdef int fileno = _fileno(fd)
        cdef size_t n = self._io.outgoing.end - self._io.outgoing.start
        cdef ssize_t sent
        cdef int err
        self._check_open()
        if n == 0:
            return 0
        while True:
            sent = c_send(fileno, self._io.outgoing.data + self._io.outgoing.start, n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent >= 0 or errno != EINTR:
                break
        if sent < 0:
            err = errno
            if err == EAGAIN:   # EWOULDBLOCK is the same on Linux, macOS and the BSDs
                return 0
            raise OSError(err, os.strerror(err))
        _queue_consume(&self._io.outgoing, sent)
        return sent

    def read_out(self, Py_ssize_t nbytes=-1):
        """Take up to ``nbytes`` (all if negative) of the pending ciphertext, as bytes."""
        cdef size_t n = self._io.outgoing.end - self._io.outgoing.start
        self._check_open()
        if 0 <= nbytes < <Py_ssize_t>n:
            n = nbytes
        out = PyBytes_FromStringAndSize(self._io.outgoing.data + self._io.outgoing.start, n)
        if n:
            _queue_consume(&self._io.outgoing, n)
        return out

    # -- the end --------------------------------------------------------------------------------------

    def shutdown(self):
        """Queue close_notify in :attr:`pending_out` (once; later calls do nothing): nothing can be
        written after it. The peer's own close_notify shows as :meth:`read_into` returning 0."""
        cdef int r
        self._check_usable()
        if not self._established:
            raise ValueError("shutdown() before the handshake is done: there is no TLS connection to "
                             "end yet; close the socket instead")
        if SSL_get_shutdown(self._ssl) & SSL_SENT_SHUTDOWN:
            return
        ERR_clear_error()
        r = SSL_shutdown(self._ssl)     # 0: sent, the peer's not seen yet; 1: both seen
        if r < 0:
            raise self._fail(SSL_get_error(self._ssl, r))

    @property
    def close_notify_received(self):
        """True once the peer's close_notify was read."""
        return bool(SSL_get_shutdown(self._ssl) & SSL_RECEIVED_SHUTDOWN)

    @property
    def tls_truncated(self):
        """True once the peer's data ended without close_notify."""
        return self._truncated

    def close(self):
        """Free the session's buffers (pending ciphertext is dropped); what was negotiated stays
        readable. Every other method then raises ValueError. Closing twice does nothing."""
        self._closed = True
        _queue_free(&self._io.incoming)
        _queue_free(&self._io.outgoing)

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self._closed

    # -- what was negotiated --------------------------------------------------------------------------

    @property
    def context(self):
        """The TLSContext."""
        return self._ctx

    @property
    def server_side(self):
        """True for the accepting side."""
        return self._server_side

    @property
    def server_hostname(self):
        """The name the client asked for (SNI) and checks the certificate against."""
        return self._server_hostname

    @property
    def tls_version(self):
        """The negotiated protocol (``"TLSv1.3"``, ...), None before the handshake is done."""
        return _tls_version(self._ssl, self._established)

    @property
    def cipher(self):
        """The negotiated cipher's OpenSSL name, None before the handshake is done."""
        return _cipher(self._ssl, self._established)

    @property
    def alpn_protocol(self):
        """The protocol ALPN agreed on, or None."""
        return _alpn_protocol(self._ssl)

    @property
    def peer_certificate_der(self):
        """The peer's certificate (DER bytes), or None."""
        return _peer_certificate_der(self._ssl)

    @property
    def peer_certificate(self):
        """The peer's certificate as a dict shaped like ``ssl.SSLSocket.getpeercert()``, or None
        (see TLSBufferEvent.peer_certificate)."""
        return _peer_certificate(self._ssl)

    def __repr__(self):
        side = "server" if self._server_side else "client"
        if self._closed:
            state = "closed"
        elif self._error is not None:
            state = "failed"
        elif self._established:
            state = _tls_version(self._ssl, True)
        else:
            state = "handshaking"
        return f"<TLSSession {side} {state} pending_out={self.pending_out}>"


# -- what was negotiated: shared by TLSBufferEvent and TLSSession ------------------------------------
# ``established``: the handshake finished (a TLSSession remembers it: a later failure resets OpenSSL's
# SSL_is_init_finished, and the version and cipher are still worth reading then).

cdef object _tls_version(SSL *ssl, bint established):
    if ssl == NULL or not established:
        return None
    return SSL_get_version(ssl).decode("ascii")


cdef object _cipher(SSL *ssl, bint established):
    cdef const SSL_CIPHER *c
    if ssl == NULL or not established:
        return None
    c = SSL_get_current_cipher(ssl)
    return SSL_CIPHER_get_name(c).decode("ascii") if c != NULL else None


cdef object _alpn_protocol(SSL *ssl):
    cdef const unsigned char *data = NULL
    cdef unsigned int length = 0
    if ssl == NULL:
        return None
    SSL_get0_alpn_selected(ssl, &data, &length)
    return (<const char *>data)[:length].decode("ascii", "replace") if data != NULL and length else None


cdef object _peer_certificate_der(SSL *ssl):
    cdef X509 *cert
    cdef unsigned char *out = NULL
    if ssl == NULL:
        return None
    cert = SSL_get1_peer_certificate(ssl)
    if cert == NULL:
        return None
    try:
        n = i2d_X509(cert, &out)
        if n < 0:
            raise _queued_error("cannot encode the peer certificate")
        try:
            return PyBytes_FromStringAndSize(<char *>out, n)
        finally:
            OPENSSL_free(out)
    finally:
        X509_free(cert)


cdef object _peer_certificate(SSL *ssl):
    cdef X509 *cert
    if ssl == NULL:
        return None
    cert = SSL_get1_peer_certificate(ssl)
    if cert == NULL:
        return None
    try:
        return _decode_cert(cert)
    finally:
        X509_free(cert)


cdef object _decode_cert(X509 *cert):
    cdef BIGNUM *bn
    cdef char *hex_serial
    result = {
        "subject": _decode_name(X509_get_subject_name(cert)),
        "issuer": _decode_name(X509_get_issuer_name(cert)),
        "version": X509_get_version(cert) + 1,
        "notBefore": _decode_time(X509_get0_notBefore(cert)),
        "notAfter": _decode_time(X509_get0_notAfter(cert)),
    }
    bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL)
    if bn != NULL:
        hex_serial = BN_bn2hex(bn)
        BN_free(bn)
        if hex_serial != NULL:
            result["serialNumber"] = hex_serial.decode("ascii")
            OPENSSL_free(hex_serial)
    san = _decode_san(cert)
    if san:
        result["subjectAltName"] = san
    return result


cdef tuple _decode_name(X509_NAME *name):
    # Like ssl: a tuple of RDNs, each a tuple of (long attribute name, value) pairs.
    cdef X509_NAME_ENTRY *entry
    cdef unsigned char *utf8
    cdef char buf[80]
    cdef int nid, n, i, last_set = -1
    rdns = []
    for i in range(X509_NAME_entry_count(name)):
        entry = X509_NAME_get_entry(name, i)
        nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry))
        if nid != 0 and OBJ_nid2ln(nid) != NULL:
            key = OBJ_nid2ln(nid).decode("ascii")
        else:
            OBJ_obj2txt(buf, sizeof(buf), X509_NAME_ENTRY_get_object(entry), 1)
            key = buf.decode("ascii")
        n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry))
        if n < 0:
            value = None
        else:
            value = (<char *>utf8)[:n].decode("utf-8", "replace")
            OPENSSL_free(utf8)
        if X509_NAME_ENTRY_set(entry) != last_set:
            rdn = []
            rdns.append(rdn)
            last_set = X509_NAME_ENTRY_set(entry)
        rdn.append((key, value))
    return tuple(tuple(rdn) for rdn in rdns)


cdef object _decode_time(const ASN1_TIME *t):
    cdef tm when
    if t == NULL or ASN1_TIME_to_tm(t, &when) != 1:
        return None
    return (f"{_MONTHS[when.tm_mon]} {when.tm_mday:2d} {when.tm_hour:02d}:{when.tm_min:02d}:"
            f"{when.tm_sec:02d} {when.tm_year + 1900} GMT")


cdef tuple _decode_san(X509 *cert):
    cdef GENERAL_NAMES *names = <GENERAL_NAMES *>X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL)
    cdef GENERAL_NAME *gn
    cdef const unsigned char *p
    cdef int i, n
    if names == NULL:
        return ()
    out = []
    try:
        for i in range(OPENSSL_sk_num(<OPENSSL_STACK *>names)):
            gn = <GENERAL_NAME *>OPENSSL_sk_value(<OPENSSL_STACK *>names, i)
            p = ASN1_STRING_get0_data(gn.d.ia5)
            n = ASN1_STRING_length(gn.d.ia5)
            raw = (<const char *>p)[:n]
            if gn.type == GEN_DNS:
                out.append(("DNS", raw.decode("ascii", "replace")))
            elif gn.type == GEN_EMAIL:
                out.append(("email", raw.decode("ascii", "replace")))
            elif gn.type == GEN_URI:
                out.append(("URI", raw.decode("ascii", "replace")))
            elif gn.type == GEN_IPADD:
                if n == 4:
                    out.append(("IP Address", str(_ipaddress.IPv4Address(raw))))
                elif n == 16:
                    # ssl writes every group in full, upper case
                    out.append(("IP Address", ":".join(f"{raw[j] << 8 | raw[j + 1]:X}" for j in range(0, 16, 2))))
    finally:
        GENERAL_NAMES_free(names)
    return tuple(out)
