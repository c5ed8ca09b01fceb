"""Listener: libevent's evconnlistener, a listening socket that accepts connections for you.

The base holds an open Listener (libevent may call back any time) until close() or the base's
close(). On EMFILE/ENFILE/ENOBUFS/ENOMEM (out of fds or memory) libevent's accept loop would retry
at once, forever, logging each time; levent pauses accepting for ``pause`` seconds instead, tells
``on_error`` (or logs a warning, once per pause), and resumes.
"""

cimport cython
from libc.errno cimport errno

from libevent_pxd.util cimport evutil_socket_t, evutil_make_socket_nonblocking, sockaddr, sockaddr_storage, socklen_t
from libevent_pxd.listener cimport *
from levent._core cimport EventBase, Handle, _check_select_headroom, _fd_to_hand_over, _hand_over
from levent._bufferevent cimport BufferEvent, _checked_options
from levent._sockaddr cimport sockaddr_from, sockaddr_to

import errno as _errno
import logging
import os
import socket as _socket

from libevent_pxd.bufferevent cimport BEV_OPT_CLOSE_ON_FREE

cdef extern from "sys/socket.h" nogil:
    enum:
        AF_UNSPEC
    int getsockname(int fd, sockaddr *addr, socklen_t *length)

cdef extern from "unistd.h" nogil:
    int close(int fd)

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil

_log = logging.getLogger("levent")

cdef unsigned _ALL_FLAGS = (LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE
                            | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DEFERRED_ACCEPT | LEV_OPT_BIND_IPV6ONLY
                            | LEV_OPT_DISABLED | LEV_OPT_THREADSAFE)
# Errors that mean "out of resources now": pausing beats libevent's immediate retry.
_RESOURCE_ERRORS = frozenset({_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM})

# How the accept callback gets each connection.
cdef enum:
    ACCEPT_SOCKET = 0
    ACCEPT_FD = 1
    ACCEPT_BUFFEREVENT = 2

_ACCEPT_MODES = {"socket": ACCEPT_SOCKET, "fd": ACCEPT_FD, "bufferevent": ACCEPT_BUFFEREVENT}


cdef void _accept_callback(evconnlistener *lev, evutil_socket_t fd, sockaddr *addr, int length,
                           void *arg) noexcept with gil:
    # arg is the Listener: the base holds it while the evconnlistener exists.
    cdef Listener self = <Listener>arg
    cdef BufferEvent bev
    cdef bint handed_over = False     # once something else closes the fd
    self._base._dispatched += 1
    if self._lev == NULL or self._on_accept is None:
        close(fd)
        return
    try:
        address = sockaddr_to(addr, length)
        if self._mode == ACCEPT_BUFFEREVENT:
            bev = BufferEvent.from_fd(self._base, fd, self._bev_options)
            handed_over = True
            self._on_accept(self, bev, address)
        elif self._mode == ACCEPT_SOCKET:
            sock = _socket.socket(fileno=fd)
            handed_over = True
            self._on_accept(self, sock, address)
        else:
            handed_over = True      # the callback's to close
            self._on_accept(self, fd, address)
    except BaseException as exc:
        if not handed_over:
            close(fd)
        self._base._stop_with(exc)


cdef void _error_callback(evconnlistener *lev, void *arg) noexcept with gil:
    cdef int err = errno
    cdef Listener self = <Listener>arg
    if self._lev == NULL:
        return
    error = OSError(err, f"accept() failed: {os.strerror(err)}")
    try:
        if err in _RESOURCE_ERRORS:
            evconnlistener_disable(lev)
            self._paused = True
            self._base.call_later(self._pause, _resume, self)
            if self._on_error is not None:
                self._on_error(self, error)
            else:
                _log.warning("levent Listener: %s; accepting again in %.3g s", error, self._pause)
        elif self._on_error is not None:
            self._on_error(self, error)
        else:
            raise error
    except BaseException as exc:
        self._base._stop_with(exc)


def _resume(Listener listener):
    if listener._lev != NULL and listener._paused:
        listener._paused = False
        if listener._enabled:
            evconnlistener_enable(listener._lev)


@cython.no_gc_clear   # __dealloc__ needs _base alive to free the listener
cdef class Listener(Handle):
    """A listening socket that accepts connections (libevent's evconnlistener).

    ``Listener(base, on_accept, address=None, *, sock=None, backlog=-1, flags=REUSEABLE|CLOSE_ON_FREE,
    accept="socket", bufferevent_options=CLOSE_ON_FREE, on_error=None, pause=0.1)``

    Binds to ``address`` (IPv4/IPv6 tuple or AF_UNIX path, as the socket module takes them), or
    wraps ``sock``, an existing socket (listening or not). ``on_accept(listener, conn, address)``
    runs for each connection; ``conn`` is a ``socket.socket`` (``accept="socket"``), the fd
    (``"fd"``: yours to close) or, the fast path, a :class:`BufferEvent` made on the fd in C
    (``"bufferevent"``, with ``bufferevent_options``). ``on_error(listener, OSError)`` hears about
    accept() failures; without it an error stops the loop, except running out of fds or memory,
    which pauses accepting for ``pause`` seconds and logs a warning.
    """

    cdef evconnlistener *_lev
    cdef object _on_accept
    cdef object _on_error
    cdef object _sock
    cdef int _mode
    cdef int _bev_options
    cdef double _pause
    cdef bint _paused
    cdef bint _enabled

    REUSEABLE = LEV_OPT_REUSEABLE
    REUSEABLE_PORT = LEV_OPT_REUSEABLE_PORT
    CLOSE_ON_FREE = LEV_OPT_CLOSE_ON_FREE
    CLOSE_ON_EXEC = LEV_OPT_CLOSE_ON_EXEC
    DEFERRED_ACCEPT = LEV_OPT_DEFERRED_ACCEPT
    BIND_IPV6ONLY = LEV_OPT_BIND_IPV6ONLY
    DISABLED = LEV_OPT_DISABLED
    THREADSAFE = LEV_OPT_THREADSAFE

    def __cinit__(self):
        self._lev = NULL

    def __init__(self, EventBase base not None, on_accept, address=None, *, sock=None, int backlog=-1,
                 unsigned flags=LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, accept="socket",
                 int bufferevent_options=BEV_OPT_CLOSE_ON_FREE, on_error=None, double pause=0.1):
        cdef sockaddr_storage ss
        cdef socklen_t length
        cdef int fd
        cdef evconnlistener *lev
        if self._lev != NULL:
            raise RuntimeError("Listener.__init__() called twice")
        base._ensure_open()
        if not callable(on_accept):
            raise TypeError(f"on_accept must be callable, not {type(on_accept).__name__}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable or None, not {type(on_error).__name__}")
        if accept not in _ACCEPT_MODES:
            raise ValueError(f"accept must be one of {sorted(_ACCEPT_MODES)}, not {accept!r}")
        if flags & ~_ALL_FLAGS:
            raise ValueError(f"unknown Listener flags {flags & ~_ALL_FLAGS:#x}")
        if not pause > 0:
            raise ValueError(f"pause must be > 0 seconds, not {pause}")
        if (address is None) == (sock is None):
            raise TypeError("give exactly one of address and sock")
        bufferevent_options = _checked_options(bufferevent_options)
        if base._select_backend:
            _check_select_headroom()
        if address is not None:
            length = sockaddr_from(address, &ss, AF_UNSPEC)
            lev = evconnlistener_new_bind(base._base, _accept_callback, <void *>self, flags, backlog,
                                          <sockaddr *>&ss, length)
            if lev == NULL:
                raise OSError(errno, f"cannot listen on {address!r}: {os.strerror(errno)}")
        else:
            fd = _fd_to_hand_over(sock, flags & LEV_OPT_CLOSE_ON_FREE)
            base._check_watchable(fd)
            evutil_make_socket_nonblocking(fd)
            lev = evconnlistener_new(base._base, _accept_callback, <void *>self, flags, backlog, fd)
            if lev == NULL:
                raise OSError(errno, f"evconnlistener_new failed: {os.strerror(errno)}")
            self._sock = _hand_over(sock, flags & LEV_OPT_CLOSE_ON_FREE)
        self._lev = lev
        self._on_accept = on_accept
        self._on_error = on_error
        self._mode = _ACCEPT_MODES[accept]
        self._bev_options = bufferevent_options
        self._pause = pause
        self._enabled = not flags & LEV_OPT_DISABLED
        evconnlistener_set_error_cb(lev, _error_callback)
        self._link(base)
        self._hold()

    def __dealloc__(self):
        if self._lev != NULL:
            evconnlistener_free(self._lev)
            self._lev = NULL
            self._unlink()

    cdef int _ensure(self) except -1:
        if self._lev == NULL:
            raise ValueError("this Listener is closed")
        cdef unsigned long loop_thread = self._base._loop_thread
        if loop_thread != 0 and loop_thread != PyThread_get_thread_ident():
            raise RuntimeError("this Listener's loop runs in another thread: use it from that thread "
                               "(base.call_later(0, ...))")
        return 0

    cdef int _close_from_base(self) except -1:
        self.close()
        return 0

    @property
    def address(self):
        """The address it listens on (the socket module's form), e.g. to learn a port chosen by the OS."""
        cdef sockaddr_storage ss
        cdef socklen_t length = sizeof(ss)
        self._ensure()
        if getsockname(evconnlistener_get_fd(self._lev), <sockaddr *>&ss, &length) != 0:
            raise OSError(errno, os.strerror(errno))
        return sockaddr_to(<sockaddr *>&ss, length)

    def fileno(self):
        """The listening socket's fd."""
        self._ensure()
        return evconnlistener_get_fd(self._lev)

    def enable(self):
        """Accept connections again after disable()."""
        self._ensure()
        self._enabled = True
        if not self._paused and evconnlistener_enable(self._lev) != 0:
            raise OSError(errno, "evconnlistener_enable failed")

    def disable(self):
        """Stop accepting (connections wait in the backlog)."""
        self._ensure()
        self._enabled = False
        if evconnlistener_disable(self._lev) != 0:
            raise OSError(errno, "evconnlistener_disable failed")

    @property
    def on_accept(self):
        """``on_accept(listener, conn, address)``."""
        return self._on_accept

    @on_accept.setter
    def on_accept(self, value):
        if not callable(value):
            raise TypeError(f"on_accept must be callable, not {type(value).__name__}")
        self._on_accept = value

    @property
    def on_error(self):
        """``on_error(listener, OSError)``, or None."""
        return self._on_error

    @on_error.setter
    def on_error(self, value):
        if value is not None and not callable(value):
            raise TypeError(f"on_error must be callable or None, not {type(value).__name__}")
        self._on_error = value

    @property
    def closed(self):
        """True once closed."""
        return self._lev == NULL

    def close(self):
        """Stop listening and free the listener (closing its socket with CLOSE_ON_FREE)."""
        if self._lev == NULL:
            return
        self._ensure()
        evconnlistener_free(self._lev)
        self._lev = NULL
        self._on_accept = self._on_error = None
        self._sock = None
        self._unlink()
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._lev == NULL:
            return "<Listener closed>"
        return f"<Listener fd={evconnlistener_get_fd(self._lev)} address={self.address!r}>"
