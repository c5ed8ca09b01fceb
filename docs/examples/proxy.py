"""levent.proxy: the encrypting proxy of the notes, with its transform step, in front of an echo server."""
import socket
from typing import Any, Optional

import levent
from levent import BufferEvent, Listener
from levent.proxy import Proxy


def encrypt(data: bytes) -> bytes:      # the seed's "encrypt/frame" step; here a byte-wise XOR
    return bytes(byte ^ 0x5A for byte in data)


with levent.EventBase() as base:
    # The upstream: an echo server that decrypts what it gets and encrypts its answer.
    def on_accept(listener: Listener, bev: BufferEvent, address: Any) -> None:
        def echo(bev: BufferEvent) -> None:
            bev.write(encrypt(encrypt(bev.read()).upper()))

        def on_event(bev: BufferEvent, what: int, error: Optional[OSError]) -> None:
            bev.close()                 # EOF or an error

        bev.on_read = echo
        bev.on_event = on_event
        bev.enable(levent.READ)

    upstream = Listener(base, on_accept, ("127.0.0.1", 0), accept="bufferevent")
    proxy = Proxy(base, ("127.0.0.1", 0), upstream.address, transform_up=encrypt, transform_down=encrypt)
    proxy.start()

    client = socket.create_connection(proxy.address[:2])
    client.sendall(b"plain text")
    client.shutdown(socket.SHUT_WR)     # EOF: the proxy half-closes toward the upstream
    client.setblocking(False)
    reply = bytearray()

    def on_reply(fd: int, what: int) -> None:
        data = client.recv(4096)
        reply.extend(data)
        if not data:                    # the proxy closed once both directions ended
            reader.close()
            proxy.shutdown(on_finished=base.loopexit)

    reader = levent.Event(base, client, levent.READ | levent.PERSIST, on_reply)
    reader.add()
    base.call_later(5.0, base.loopbreak)
    base.dispatch()
    client.close()
    upstream.close()
    print(bytes(reply), proxy.counters)
    assert reply == b"PLAIN TEXT"
