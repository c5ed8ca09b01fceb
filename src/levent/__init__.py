"""levent: Python bindings to libevent 2.x.

The raw API mirrors libevent: an :class:`EventBase` (event_base) runs the loop; an :class:`Event`
(event) watches an fd, a signal or a timeout; :class:`Timer` and :class:`Signal` are the evtimer and
evsignal conveniences.
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
    supported_methods,
)

__all__ = [
    "__version__",
    "CLOSED",
    "ET",
    "MAX_PRIORITIES",
    "PERSIST",
    "READ",
    "SIGNAL",
    "TIMEOUT",
    "WRITE",
    "Call",
    "Event",
    "EventBase",
    "Feature",
    "LibeventVersion",
    "Signal",
    "Timer",
    "libevent_version",
    "supported_methods",
]
