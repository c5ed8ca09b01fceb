"""The raw API, step 1: an EventBase runs the loop; Events watch fds and timeouts."""
import socket

import levent

base = levent.EventBase()
print("backend:", base.method)
a, b = socket.socketpair()
a.setblocking(False)
received: list[bytes] = []


def on_readable(fd: int, what: int, sock: socket.socket) -> None:
    data = sock.recv(4096)          # fd is the int fd; what the bits that fired (levent.READ)
    received.append(data)
    if data == b"bye":
        reader.delete()             # nothing pending any more: loop() returns


def send(message: bytes) -> None:
    b.send(message)


reader = levent.Event(base, a, levent.READ | levent.PERSIST, on_readable, a)
reader.add()
timer = levent.Timer(base, send, b"hello")
timer.add(0.05)                     # seconds
base.call_later(0.1, send, b"bye")  # a one-shot call on levent's timer heap
base.loop()
base.close()
a.close()
b.close()
print(received)
assert received == [b"hello", b"bye"]
