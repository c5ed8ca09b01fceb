"""The raw API, step 3: a Listener accepts connections, here handed over as BufferEvents."""
from typing import Any, Optional

import levent
from levent import BufferEvent, Listener

with levent.EventBase() as base:
    def on_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
        bev.write(b"Hello, World!\n")
        bev.close()                     # sent, then closed

    listener = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    greeting = bytearray()

    def on_read(client: BufferEvent) -> None:
        greeting.extend(client.read())

    def on_event(client: BufferEvent, what: int, error: Optional[OSError]) -> None:
        if what & BufferEvent.EOF:      # the server closed: done
            client.close()
            base.loopexit()
        elif what & BufferEvent.ERROR:
            raise OSError(error)

    client = BufferEvent(base, on_read=on_read, on_event=on_event)
    client.enable(levent.READ)
    client.connect(listener.address)    # CONNECTED (or ERROR) arrives through on_event
    base.call_later(5.0, base.loopbreak)
    base.dispatch()
    listener.close()
    print(bytes(greeting))
    assert greeting == b"Hello, World!\n"
