"""Type stubs for levent._bufferevent: BufferEvent over libevent's bufferevent."""
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

from typing_extensions import Buffer as _BytesLike  # PEP 688; collections.abc.Buffer on 3.12+
from typing_extensions import disjoint_base

from levent._buffer import Buffer
from levent._core import EventBase, Handle, _HasFileno

_BE = TypeVar("_BE", bound="BufferEvent")
_Filter = Callable[[Buffer, Buffer, int, int], Optional[int]]

@disjoint_base
class BufferEvent(Handle):
    READING: int
    WRITING: int
    EOF: int
    ERROR: int
    TIMEOUT: int
    CONNECTED: int
    CLOSE_ON_FREE: int
    THREADSAFE: int
    DEFER_CALLBACKS: int
    UNLOCK_CALLBACKS: int
    NORMAL: int
    FLUSH: int
    FINISHED: int
    FILTER_OK: int
    FILTER_NEED_MORE: int
    FILTER_ERROR: int
    def __init__(
        self,
        base: EventBase,
        sock: Union[None, int, _HasFileno] = None,
        *,
        options: int = ...,
        on_read: Optional[Callable[[BufferEvent], Any]] = None,
        on_write: Optional[Callable[[BufferEvent], Any]] = None,
        on_event: Optional[Callable[[BufferEvent, int, Optional[OSError]], Any]] = None,
    ) -> None: ...
    on_read: Optional[Callable[[BufferEvent], Any]]
    on_write: Optional[Callable[[BufferEvent], Any]]
    on_event: Optional[Callable[[BufferEvent, int, Optional[OSError]], Any]]
    def connect(self, address: Union[Tuple[Any, ...], str, bytes]) -> None: ...
    def enable(self, events: int) -> None: ...
    def disable(self, events: int) -> None: ...
    @property
    def enabled(self) -> int: ...
    def write(self, data: _BytesLike) -> None: ...
    def write_buffer(self, buf: Buffer) -> None: ...
    def read(self, n: int = -1) -> bytes: ...
    @property
    def input(self) -> Buffer: ...
    @property
    def output(self) -> Buffer: ...
    def set_timeouts(self, read: Optional[float] = None, write: Optional[float] = None) -> None: ...
    def set_watermark(self, events: int, low: int = 0, high: int = 0) -> None: ...
    def get_watermark(self, events: int) -> Tuple[int, int]: ...
    def flush(self, iotype: int = ..., mode: int = ...) -> int: ...
    def fileno(self) -> int: ...
    priority: int
    @property
    def options(self) -> int: ...
    def set_rate_limit(
        self,
        read_rate: Optional[int] = None,
        read_burst: Optional[int] = None,
        write_rate: Optional[int] = None,
        write_burst: Optional[int] = None,
        tick: float = 1.0,
    ) -> None: ...
    @staticmethod
    def pair(base: EventBase, options: int = 0) -> Tuple[BufferEvent, BufferEvent]: ...
    @staticmethod
    def filter(
        underlying: BufferEvent,
        input_filter: Optional[_Filter] = None,
        output_filter: Optional[_Filter] = None,
        *,
        options: int = ...,
    ) -> BufferEvent: ...
    @property
    def underlying(self) -> Optional[BufferEvent]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self: _BE) -> _BE: ...
    def __exit__(self, *exc_info: object) -> None: ...

@disjoint_base
class RateLimitGroup(Handle):
    def __init__(
        self,
        base: EventBase,
        read_rate: Optional[int] = None,
        read_burst: Optional[int] = None,
        write_rate: Optional[int] = None,
        write_burst: Optional[int] = None,
        tick: float = 1.0,
    ) -> None: ...
    def add(self, bev: BufferEvent) -> None: ...
    def remove(self, bev: BufferEvent) -> None: ...
    def configure(
        self,
        read_rate: Optional[int] = None,
        read_burst: Optional[int] = None,
        write_rate: Optional[int] = None,
        write_burst: Optional[int] = None,
        tick: float = 1.0,
    ) -> None: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
