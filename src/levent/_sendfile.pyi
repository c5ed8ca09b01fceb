"""Type stubs for levent._sendfile: native sendfile(2) transfers for levent's asyncio loop."""
import asyncio
from typing import Optional, Tuple

NATIVE: bool

class SendfileOp:
    def abort(self) -> None: ...

def sendfile(loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int, offset: int,
             count: Optional[int], blocksize: int) -> Tuple[asyncio.Future[int], SendfileOp]: ...
