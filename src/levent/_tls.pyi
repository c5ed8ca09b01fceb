"""Type stubs for levent._tls: TLSContext and TLSBufferEvent over libevent's bufferevent_openssl."""
import ssl
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

from levent._bufferevent import BufferEvent
from levent._core import EventBase, _HasFileno

class TLSError(OSError):
    errors: tuple[str, ...]
    truncated: bool
    def __init__(self, message: str, errors: Iterable[str] = ..., truncated: bool = ...) -> None: ...

class TLSContext:
    server_side: bool
    verify_mode: ssl.VerifyMode
    check_hostname: bool
    minimum_version: ssl.TLSVersion
    maximum_version: ssl.TLSVersion
    def __init__(self, server_side: bool = False) -> None: ...
    def load_verify_locations(self, cafile: Any = None, capath: Any = None, cadata: Union[None, str, bytes] = None) -> None: ...
    def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None: ...
    def set_ciphers(self, ciphers: str) -> None: ...
    def set_alpn_protocols(self, protocols: Sequence[Union[str, bytes]]) -> None: ...

class TLSBufferEvent(BufferEvent):
    def __init__(  # type: ignore[override]
        self,
        base: EventBase,
        ctx: TLSContext,
        sock: Union[None, int, _HasFileno] = None,
        *,
        server_side: bool = False,
        server_hostname: Optional[str] = None,
        options: int = ...,
        allow_dirty_shutdown: bool = False,
        on_read: Optional[Callable[[BufferEvent], Any]] = None,
        on_write: Optional[Callable[[BufferEvent], Any]] = None,
        on_event: Optional[Callable[[BufferEvent, int, Optional[OSError]], Any]] = None,
    ) -> None: ...
    @staticmethod
    def wrap(
        underlying: BufferEvent,
        ctx: TLSContext,
        *,
        server_side: bool = False,
        server_hostname: Optional[str] = None,
        options: int = ...,
        allow_dirty_shutdown: bool = False,
    ) -> TLSBufferEvent: ...
    @property
    def context(self) -> TLSContext: ...
    @property
    def server_side(self) -> bool: ...
    @property
    def server_hostname(self) -> Optional[str]: ...
    @property
    def tls_version(self) -> Optional[str]: ...
    @property
    def cipher(self) -> Optional[str]: ...
    @property
    def alpn_protocol(self) -> Optional[str]: ...
    @property
    def tls_truncated(self) -> bool: ...
    @property
    def peer_certificate_der(self) -> Optional[bytes]: ...
    @property
    def peer_certificate(self) -> Optional[Dict[str, Any]]: ...
