"""Type stubs for levent.proxy: the TCP proxy (``python -m levent proxy``)."""
import argparse
import logging
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, Tuple, Type, Union

from levent._bufferevent import BufferEvent
from levent._core import EventBase
from levent._tls import TLSContext

__all__ = ["Counters", "Proxy", "main"]

DEFAULT_HIGH_WATER: int
CHUNK: int
CLOSE_LINGER: float

class _StreamTransform(Protocol):
    """A transform class's instance: one per connection and direction."""
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...

# A callable bytes -> bytes shared by all connections, or a class made once per connection and direction.
_Transform = Union[Callable[[bytes], bytes], Type[_StreamTransform]]
# An address as socket.socket.bind()/connect() take it: (host, port[, ...]) or a UNIX path.
_Address = Union[Tuple[Any, ...], str, bytes]

@dataclass
class Counters:
    accepted: int = 0
    active: int = 0
    failed: int = 0
    idle_closed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

class Proxy:
    base: EventBase
    listen: _Address
    upstream: _Address
    high_water: int
    low_water: int
    idle_timeout: Optional[float]
    connect_timeout: Optional[float]
    max_connections: Optional[int]
    client_stream: Callable[[EventBase, socket.socket], BufferEvent]
    upstream_stream: Callable[[EventBase, _Address], BufferEvent]
    client_tls: Optional[TLSContext]
    upstream_tls: Optional[TLSContext]
    upstream_server_name: Optional[str]
    mode: str
    log: logging.Logger
    counters: Counters
    def __init__(
        self,
        base: EventBase,
        listen: _Address = ("127.0.0.1", 0),
        upstream: Optional[_Address] = None,
        *,
        high_water: int = 524288,  # DEFAULT_HIGH_WATER
        low_water: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        connect_timeout: Optional[float] = 10.0,
        max_connections: Optional[int] = None,
        transform_up: Optional[_Transform] = None,
        transform_down: Optional[_Transform] = None,
        client_stream: Optional[Callable[[EventBase, socket.socket], BufferEvent]] = None,
        upstream_stream: Optional[Callable[[EventBase, _Address], BufferEvent]] = None,
        client_tls: Optional[TLSContext] = None,
        upstream_tls: Optional[TLSContext] = None,
        upstream_server_name: Optional[str] = None,
        mode: str = "auto",
        log: Optional[logging.Logger] = None,
    ) -> None: ...
    def start(self) -> Proxy: ...
    @property
    def address(self) -> Any: ...
    @property
    def connections(self) -> int: ...
    def shutdown(self, deadline: Optional[float] = None, on_finished: Optional[Callable[[], object]] = None) -> None: ...
    def close(self) -> None: ...

def parser() -> argparse.ArgumentParser: ...
def main(argv: Optional[Sequence[str]] = None) -> int: ...
