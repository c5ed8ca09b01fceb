"""Type stubs for levent._sendfile: native sendfile(2) transfers for levent's asyncio loop."""
import asyncio
from typing import Optional, Tuple, final

from levent._core import Handle

NATIVE: bool

@final
class SendfileOp(Handle):
    """One sendfile transfer from a file to a socket; made by sendfile(), not directly."""
    def abort(self) -> None: ...

def sendfile(loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int, offset: int,
             count: Optional[int], blocksize: int) -> Tuple[asyncio.Future[int], SendfileOp]: ...
