"""Timer and callback workloads, each measured in a fresh worker process.

    python -m levent.bench.loops WORKLOAD LOOP N SEED     # prints one JSON line

Workloads (N operations each; wall time from the first call scheduled to the last one run):

  call_soon_batch    N callbacks scheduled with call_soon, then the loop runs them all
  call_soon_chain    one callback at a time: each schedules the next with call_soon, N in all
  call_later         N timers with seeded random delays in [0, 50 ms): CPU per timer is the figure,
                     since the wall time cannot be under 50 ms whatever the loop
  call_later_cancel  N timers as above, every other one cancelled right away; CPU per timer scheduled
  timer_lateness     N timers with seeded random delays in [10, 110 ms) (the 10 ms let scheduling
                     finish first), each recording how late it ran: (time it ran) - (time just
                     before call_later + delay). A negative value means the loop ran a timer
                     EARLY, which is a bug.
  pingpong           a socketpair, one 64-byte message bounced between its ends N times by two
                     reader callbacks (recv/send), in one loop: the cost of an I/O wakeup

Loops: those of ``levent.bench.registry``: ``levent`` (the raw API: EventBase.call_soon /
call_later, :class:`LeventLoop`), ``asyncio`` (its default loop), ``uvloop`` (when installed),
``selectors`` (:class:`SelectorsLoop`, a minimal pure-Python loop).
"""
import heapq
import itertools
import json
import random
import selectors
import socket
import sys
import time
from collections import deque

from . import registry

WORKLOADS = {
    # name -> (title, unit of one operation)
    "call_soon_batch": ("call_soon, a batch of N then run", "callback"),
    "call_soon_chain": ("call_soon chain (each callback schedules the next)", "callback"),
    "call_later": ("call_later, random delays in [0, 50 ms)", "timer"),
    "call_later_cancel": ("call_later + cancel of every other timer", "timer"),
    "timer_lateness": ("timer lateness, random delays in [10, 110 ms)", "timer"),
    "pingpong": ("socketpair ping-pong, 64 B, reader callbacks", "round trip"),
}
MESSAGE = b"x" * 64
DELAYS = {"call_later": (0.0, 0.050), "call_later_cancel": (0.0, 0.050), "timer_lateness": (0.010, 0.110)}


class _SelectorsHandle:
    __slots__ = ("callback", "args", "cancelled")

    def __init__(self, callback, args):
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class SelectorsLoop:
    """Just enough of an event loop in pure Python: call_soon, call_later (heapq), add_reader, stop,
    run_forever."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._ready = deque()
        self._timers = []  # heap of (when, seq, handle)
        self._seq = itertools.count()
        self._stopping = False

    def close(self):
        self._selector.close()

    def call_soon(self, callback, *args):
        handle = _SelectorsHandle(callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay, callback, *args):
        handle = _SelectorsHandle(callback, args)
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), handle))
        return handle

    def add_reader(self, fd, callback, *args):
        self._selector.register(fd, selectors.EVENT_READ, (callback, args))

    def remove_reader(self, fd):
        self._selector.unregister(fd)

    def stop(self):
        self._stopping = True

    def run_forever(self):
        """Runs until stop(); one batch of ready callbacks per iteration, as asyncio does."""
        self._stopping = False
        ready, timers, selector = self._ready, self._timers, self._selector
        monotonic, heappop = time.monotonic, heapq.heappop
        while not self._stopping:
            if ready:
                timeout = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            else:
                timeout = None
            for key, _mask in selector.select(timeout):
                callback, args = key.data
                callback(*args)
            now = monotonic()
            while timers and timers[0][0] <= now:
                ready.append(heappop(timers)[2])
            for _ in range(len(ready)):
                handle = ready.popleft()
                if not handle.cancelled:
                    handle.callback(*handle.args)


class LeventLoop:
    """The raw API behind the interface the workloads use (asyncio's names)."""

    def __init__(self):
        import levent

        self._event = levent.Event
        self._read_flags = levent.READ | levent.PERSIST
        self.base = levent.EventBase()
        self.call_soon = self.base.call_soon
        self.call_later = self.base.call_later
        self._readers = {}

    def add_reader(self, fd, callback, *args):
        # libevent's callbacks get (fd, what, *args): the workloads' reader callbacks take *_ for that
        event = self._event(self.base, fd, self._read_flags, callback, *args)
        event.add()
        self._readers[fd] = event

    def remove_reader(self, fd):
        self._readers.pop(fd).close()

    def stop(self):
        self.base.loopbreak()

    def run_forever(self):
        self.base.loop()

    def close(self):
        self.base.close()


def _delays(n, seed, workload):
    low, high = DELAYS[workload]
    rng = random.Random(seed)
    return [low + rng.random() * (high - low) for _ in range(n)]


def run_workload(workload, loop, n, seed):
    """Runs one workload on ``loop``; returns {"count", "wall", "cpu"[, "lateness_us"]}."""
    remaining = n
    end = None
    lateness = []

    def done_one():
        nonlocal remaining, end
        remaining -= 1
        if not remaining:
            end = time.perf_counter()
            loop.stop()

    count = n
    sockets = ()
    c0 = time.process_time()
    t0 = time.perf_counter()
    if workload == "call_soon_batch":
        call_soon = loop.call_soon
        for _ in range(n):
            call_soon(done_one)
    elif workload == "call_soon_chain":
        def step():
            done_one()
            if remaining:
                loop.call_soon(step)

        loop.call_soon(step)
    elif workload == "call_later":
        call_later = loop.call_later
        for delay in _delays(n, seed, workload):
            call_later(delay, done_one)
    elif workload == "call_later_cancel":
        call_later = loop.call_later
        remaining = n - n // 2
        for i, delay in enumerate(_delays(n, seed, workload)):
            handle = call_later(delay, done_one)
            if i % 2:
                handle.cancel()
    elif workload == "timer_lateness":
        monotonic = time.monotonic

        def fired(deadline):
            lateness.append(monotonic() - deadline)
            done_one()

        call_later = loop.call_later
        for delay in _delays(n, seed, workload):
            call_later(delay, fired, monotonic() + delay)
    elif workload == "pingpong":
        a, b = sockets = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = 0

        def on_a(*_):
            nonlocal got
            got += len(a.recv(65536))
            if got >= len(MESSAGE):
                got -= len(MESSAGE)
                if remaining > 1:
                    a.send(MESSAGE)
                else:
                    loop.remove_reader(a.fileno())
                    loop.remove_reader(b.fileno())
                done_one()

        def on_b(*_):
            b.send(b.recv(65536))

        loop.add_reader(a.fileno(), on_a)
        loop.add_reader(b.fileno(), on_b)
        a.send(MESSAGE)
    else:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    loop.run_forever()
    t1 = time.perf_counter() if end is None else end
    c1 = time.process_time()
    for sock in sockets:
        sock.close()
    if remaining:
        raise RuntimeError(f"the loop returned with {remaining} callbacks not run")
    result = {"count": count, "wall": t1 - t0, "cpu": c1 - c0}
    if lateness:
        lateness.sort()
        result["lateness_us"] = {
            "min": lateness[0] * 1e6,
            "p50": lateness[len(lateness) // 2] * 1e6,
            "p99": lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] * 1e6,
            "max": lateness[-1] * 1e6,
            "early": sum(1 for x in lateness if x < 0),
        }
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print("usage: python -m levent.bench.loops WORKLOAD LOOP N SEED", file=sys.stderr)
        return 2
    workload, name, n, seed = argv[0], argv[1], int(argv[2]), int(argv[3])
    loop = registry.new_loop(name)
    try:
        result = run_workload(workload, loop, n, seed)
    finally:
        loop.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
