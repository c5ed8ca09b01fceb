"""Type stubs for levent._listener: Listener over libevent's evconnlistener."""
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

from typing_extensions import disjoint_base

from levent._core import EventBase, Handle, _HasFileno

_L = TypeVar("_L", bound="Listener")

@disjoint_base
class Listener(Handle):
    REUSEABLE: int
    REUSEABLE_PORT: int
    CLOSE_ON_FREE: int
    CLOSE_ON_EXEC: int
    DEFERRED_ACCEPT: int
    BIND_IPV6ONLY: int
    DISABLED: int
    THREADSAFE: int
    def __init__(
        self,
        base: EventBase,
        on_accept: Callable[[Listener, Any, Any], Any],
        address: Union[None, Tuple[Any, ...], str, bytes] = None,
        *,
        sock: Union[None, int, _HasFileno] = None,
        backlog: int = -1,
        flags: int = ...,
        accept: str = "socket",
        bufferevent_options: int = ...,
        on_error: Optional[Callable[[Listener, OSError], Any]] = None,
        pause: float = 0.1,
    ) -> None: ...
    @property
    def address(self) -> Any: ...
    def fileno(self) -> int: ...
    def enable(self) -> None: ...
    def disable(self) -> None: ...
    on_accept: Callable[[Listener, Any, Any], Any]
    on_error: Optional[Callable[[Listener, OSError], Any]]
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self: _L) -> _L: ...
    def __exit__(self, *exc_info: object) -> None: ...
