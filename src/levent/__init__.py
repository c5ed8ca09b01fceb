"""levent: Python bindings to libevent 2.x.

The raw API mirrors libevent: an :class:`EventBase` (event_base) runs the loop; an :class:`Event`
(event) watches an fd, a signal or a timeout; :class:`Timer` and :class:`Signal` are the evtimer and
evsignal conveniences. A :class:`Buffer` is libevent's evbuffer.

The asyncio event loop: ``levent.run(main())`` runs a coroutine as ``asyncio.run`` does, on an
:class:`EventLoop` built on libevent (see :mod:`levent.loop`).
"""
from levent._version import __version__
from levent._core import (
    CLOSED,
    ET,
    MAX_PRIORITIES,
    PERSIST,
    READ,
    SIGNAL,
    TIMEOUT,
    WRITE,
    Call,
    Event,
    EventBase,
    Feature,
    LibeventVersion,
    Signal,
    Timer,
    libevent_version,
    recv_into,
    send,
    supported_methods,
)
from levent._buffer import (
    EOL_ANY,
    EOL_CRLF,
    EOL_CRLF_STRICT,
    EOL_LF,
    EOL_NUL,
    Buffer,
    BufferCallback,
    Reservation,
)
from levent._bufferevent import BufferEvent, RateLimitGroup
from levent._listener import Listener
from levent._tls import TLSBufferEvent, TLSContext, TLSError, TLSSession
from levent.loop import EventLoop, EventLoopPolicy, install, new_event_loop, run

__all__ = [
    "__version__",
    "BufferEvent",
    "Listener",
    "RateLimitGroup",
    "TLSBufferEvent",
    "TLSContext",
    "TLSError",
    "TLSSession",
    "CLOSED",
    "EOL_ANY",
    "EOL_CRLF",
    "EOL_CRLF_STRICT",
    "EOL_LF",
    "EOL_NUL",
    "ET",
    "MAX_PRIORITIES",
    "PERSIST",
    "READ",
    "SIGNAL",
    "TIMEOUT",
    "WRITE",
    "Buffer",
    "BufferCallback",
    "Call",
    "Event",
    "EventBase",
    "EventLoop",
    "EventLoopPolicy",
    "Feature",
    "LibeventVersion",
    "Reservation",
    "Signal",
    "Timer",
    "install",
    "libevent_version",
    "new_event_loop",
    "recv_into",
    "run",
    "send",
    "supported_methods",
]
