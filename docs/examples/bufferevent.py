"""The raw API, step 2: a BufferEvent is a socket with an input and an output Buffer."""
import socket
from typing import Optional

import levent
from levent import BufferEvent

with levent.EventBase() as base:
    mine, theirs = socket.socketpair()
    bev = BufferEvent(base, mine)       # takes the socket over (closed when the BufferEvent frees)
    lines: list[bytes] = []

    def on_read(bev: BufferEvent) -> None:
        while (line := bev.input.readln()) is not None:     # readln: up to an end of line
            lines.append(line)
        if lines[-1:] == [b"bye"]:
            bev.close()                 # graceful: freed once the output is sent
            base.loopexit()

    def on_event(bev: BufferEvent, what: int, error: Optional[OSError]) -> None:
        raise RuntimeError(f"unexpected: {what:#x} {error}")

    bev.on_read = on_read
    bev.on_event = on_event
    bev.enable(levent.READ)
    bev.write(b"greetings\n")
    theirs.sendall(b"one\ntwo\nbye\n")
    base.call_later(5.0, base.loopbreak)    # a bound on the loop, whatever happens
    base.dispatch()
    print(theirs.recv(100), lines)
    assert lines == [b"one", b"two", b"bye"]
    theirs.close()
