#!/usr/bin/env python3
"""levent foundation micro benchmark: levent's raw API vs asyncio's default loop vs a pure-Python loop.

    python benchmarks/foundation.py [--quick] [--repeats N] [--timers N] [--roundtrips N] [--json FILE]

Two workloads, every contender in ONE run:

  timers     N one-shot timers with seeded random delays in [0, 50 ms) (the same delays for every
             contender) are scheduled, then the loop runs until all have fired.
             callbacks/s = N / (wall time from the first schedule to the last callback), so the
             scheduling cost is included.
  pingpong   socket.socketpair(), both ends non-blocking, one 64-byte message bounced back and forth
             in one loop of one process. round trips/s = N / (wall time from the first send to the
             last receive).

Contenders: levent (EventBase.call_later / two persistent READ Events), asyncio's default event loop
(call_later; ping-pong both with add_reader and with Protocols via connect_accepted_socket /
create_connection(sock=...), the faster of the two being the asyncio baseline), and `selectors-loop`,
a minimal pure-Python loop defined below (heapq timers + selectors.DefaultSelector).

Every single measurement runs in a fresh subprocess of this file (`--worker ...`), so one contender
neither warms nor pollutes another; repeats are interleaved across contenders so that drift of the
machine hits all alike. Reported: the median and min-max of the rate, the process CPU time
(time.process_time) per callback / round trip at the median, and the ratios levent/asyncio and
levent/selectors-loop of the medians. A worker that runs past --timeout seconds (default 60) is
killed and reported; the benchmark then exits non-zero.

Only socketpairs; no network. Every loop is bounded in count, every subprocess in time.
"""
import argparse
import heapq
import itertools
import json
import os
import platform
import random
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections import deque

MAX_DELAY = 0.050  # timers: delays are uniform in [0, MAX_DELAY)
MESSAGE = b"x" * 64  # pingpong: the message bounced back and forth
SEED = 20240601

TARGETS = {"timers": 3.0, "pingpong": 1.5}  # levent / asyncio, printed, not asserted

CONTENDERS = {
    # workload -> [(contender name, printed label)]
    "timers": [
        ("levent", "levent (call_later)"),
        ("asyncio", "asyncio (call_later)"),
        ("selectors", "selectors-loop (heapq)"),
    ],
    "pingpong": [
        ("levent", "levent (2 READ|PERSIST Events)"),
        ("asyncio-reader", "asyncio (add_reader)"),
        ("asyncio-protocol", "asyncio (Protocol)"),
        ("selectors", "selectors-loop (register)"),
    ],
}
WORKLOAD_TITLE = {
    "timers": "timer callbacks per second",
    "pingpong": "socketpair ping-pong round trips per second",
}
UNIT = {"timers": "callbacks/s", "pingpong": "round trips/s"}
PER = {"timers": "callback", "pingpong": "round trip"}


# --------------------------------------------------------------------------------------------------
# The minimal pure-Python loop: heapq timers + selectors.DefaultSelector.


class SelectorsLoop:
    """Just enough of an event loop: call_later, add_reader/remove_reader, stop, run."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._timers = []  # heap of (when, seq, callback, args)
        self._seq = itertools.count()
        self._stopping = False

    def close(self):
        self._selector.close()

    def call_later(self, delay, callback, *args):
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback, args))

    def add_reader(self, fd, callback, *args):
        self._selector.register(fd, selectors.EVENT_READ, (callback, args))

    def remove_reader(self, fd):
        self._selector.unregister(fd)

    def stop(self):
        self._stopping = True

    def run(self):
        """Runs until stop() is called or nothing is left to wait for."""
        self._stopping = False
        timers = self._timers
        selector = self._selector
        monotonic = time.monotonic
        heappop = heapq.heappop
        while not self._stopping and (timers or selector.get_map()):
            if timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            else:
                timeout = None
            for key, _mask in selector.select(timeout):
                callback, args = key.data
                callback(*args)
            now = monotonic()
            while timers and timers[0][0] <= now:
                _when, _seq, callback, args = heappop(timers)
                callback(*args)


# --------------------------------------------------------------------------------------------------
# Workers: each runs one measurement and returns {"count", "wall", "cpu", "info"}.


def make_delays(n, seed):
    rng = random.Random(seed)
    return [rng.random() * MAX_DELAY for _ in range(n)]


def make_socketpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _result(count, wall, cpu, **info):
    return {"count": count, "wall": wall, "cpu": cpu, "info": info}


def timers_levent(n, seed):
    import levent

    delays = make_delays(n, seed)
    base = levent.EventBase()
    remaining = n
    end = None

    def callback():
        nonlocal remaining, end
        remaining -= 1
        if not remaining:
            end = time.perf_counter()

    call_later = base.call_later
    c0 = time.process_time()
    t0 = time.perf_counter()
    for delay in delays:
        call_later(delay, callback)
    base.loop()
    t1 = time.perf_counter() if end is None else end
    c1 = time.process_time()
    if remaining:
        raise RuntimeError(f"levent: loop() returned with {remaining} timers not fired")
    info = {"method": base.method, "libevent": levent.libevent_version().string}
    base.close()
    return _result(n, t1 - t0, c1 - c0, **info)


def _timers_on_loop(loop, run, n, seed, name):
    """The timer workload on any loop with call_later() and stop() (asyncio, SelectorsLoop)."""
    delays = make_delays(n, seed)
    remaining = n
    end = None

    def callback():
        nonlocal remaining, end
        remaining -= 1
        if not remaining:
            end = time.perf_counter()
            loop.stop()

    call_later = loop.call_later
    c0 = time.process_time()
    t0 = time.perf_counter()
    for delay in delays:
        call_later(delay, callback)
    run()
    t1 = time.perf_counter() if end is None else end
    c1 = time.process_time()
    if remaining:
        raise RuntimeError(f"{name}: the loop returned with {remaining} timers not fired")
    return t1 - t0, c1 - c0


def timers_asyncio(n, seed):
    import asyncio

    loop = asyncio.new_event_loop()
    loop.set_debug(False)
    wall, cpu = _timers_on_loop(loop, loop.run_forever, n, seed, "asyncio")
    info = {"loop": type(loop).__name__, "selector": type(getattr(loop, "_selector", None)).__name__}
    loop.close()
    return _result(n, wall, cpu, **info)


def timers_selectors(n, seed):
    loop = SelectorsLoop()
    wall, cpu = _timers_on_loop(loop, loop.run, n, seed, "selectors-loop")
    info = {"selector": type(loop._selector).__name__}
    loop.close()
    return _result(n, wall, cpu, **info)


# Ping-pong: side A sends MESSAGE and counts a round trip each time all 64 bytes came back; side B
# echoes whatever it receives. Both read with sock.recv and write with sock.send for every contender
# but asyncio's Protocol variant, where the transports do the I/O.


def pingpong_levent(n, _seed):
    import levent

    a, b = make_socketpair()
    base = levent.EventBase()
    remaining = n
    got = 0
    end = None
    size = len(MESSAGE)

    def on_a(fd, what):
        nonlocal remaining, got, end
        got += len(a.recv(65536))
        if got >= size:
            got -= size
            remaining -= 1
            if remaining:
                a.send(MESSAGE)
            else:
                end = time.perf_counter()
                ev_a.delete()
                ev_b.delete()

    def on_b(fd, what):
        b.send(b.recv(65536))

    ev_a = levent.Event(base, a, levent.READ | levent.PERSIST, on_a)
    ev_b = levent.Event(base, b, levent.READ | levent.PERSIST, on_b)
    ev_a.add()
    ev_b.add()
    c0 = time.process_time()
    t0 = time.perf_counter()
    a.send(MESSAGE)
    base.loop()
    t1 = time.perf_counter() if end is None else end
    c1 = time.process_time()
    if remaining:
        raise RuntimeError(f"levent: loop() returned with {remaining} round trips to go")
    info = {"method": base.method, "libevent": levent.libevent_version().string}
    base.close()
    a.close()
    b.close()
    return _result(n, t1 - t0, c1 - c0, **info)


def _pingpong_reader_loop(loop, run, n, name):
    """Ping-pong on any loop with add_reader/remove_reader/stop (asyncio, SelectorsLoop)."""
    a, b = make_socketpair()
    remaining = n
    got = 0
    end = None
    size = len(MESSAGE)

    def on_a():
        nonlocal remaining, got, end
        got += len(a.recv(65536))
        if got >= size:
            got -= size
            remaining -= 1
            if remaining:
                a.send(MESSAGE)
            else:
                end = time.perf_counter()
                loop.remove_reader(a.fileno())
                loop.remove_reader(b.fileno())
                loop.stop()

    def on_b():
        b.send(b.recv(65536))

    loop.add_reader(a.fileno(), on_a)
    loop.add_reader(b.fileno(), on_b)
    c0 = time.process_time()
    t0 = time.perf_counter()
    a.send(MESSAGE)
    run()
    t1 = time.perf_counter() if end is None else end
    c1 = time.process_time()
    if remaining:
        raise RuntimeError(f"{name}: loop returned with {remaining} round trips to go")
    a.close()
    b.close()
    return t1 - t0, c1 - c0


def pingpong_asyncio_reader(n, _seed):
    import asyncio

    loop = asyncio.new_event_loop()
    loop.set_debug(False)
    wall, cpu = _pingpong_reader_loop(loop, loop.run_forever, n, "asyncio (add_reader)")
    info = {"loop": type(loop).__name__, "selector": type(getattr(loop, "_selector", None)).__name__}
    loop.close()
    return _result(n, wall, cpu, **info)


def pingpong_asyncio_protocol(n, _seed):
    import asyncio

    size = len(MESSAGE)

    class Pinger(asyncio.Protocol):
        def __init__(self, done):
            self.done = done
            self.remaining = n
            self.got = 0
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.got += len(data)
            if self.got >= size:
                self.got -= size
                self.remaining -= 1
                if self.remaining:
                    self.transport.write(MESSAGE)
                else:
                    self.done.set_result(time.perf_counter())

    class Echoer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = make_socketpair()
        done = loop.create_future()
        ta, pinger = await loop.connect_accepted_socket(lambda: Pinger(done), sock=a)
        tb, _echoer = await loop.create_connection(Echoer, sock=b)
        c0 = time.process_time()
        t0 = time.perf_counter()
        ta.write(MESSAGE)
        end = await done
        c1 = time.process_time()
        if pinger.remaining:
            raise RuntimeError(f"asyncio (Protocol): {pinger.remaining} round trips to go")
        ta.close()
        tb.close()
        await asyncio.sleep(0)
        return end - t0, c1 - c0

    loop = asyncio.new_event_loop()
    loop.set_debug(False)
    try:
        wall, cpu = loop.run_until_complete(main())
        info = {"loop": type(loop).__name__, "selector": type(getattr(loop, "_selector", None)).__name__}
    finally:
        loop.close()
    return _result(n, wall, cpu, **info)


def pingpong_selectors(n, _seed):
    loop = SelectorsLoop()
    wall, cpu = _pingpong_reader_loop(loop, loop.run, n, "selectors-loop")
    info = {"selector": type(loop._selector).__name__}
    loop.close()
    return _result(n, wall, cpu, **info)


WORKERS = {
    ("timers", "levent"): timers_levent,
    ("timers", "asyncio"): timers_asyncio,
    ("timers", "selectors"): timers_selectors,
    ("pingpong", "levent"): pingpong_levent,
    ("pingpong", "asyncio-reader"): pingpong_asyncio_reader,
    ("pingpong", "asyncio-protocol"): pingpong_asyncio_protocol,
    ("pingpong", "selectors"): pingpong_selectors,
}


def worker_main(workload, contender, n, seed):
    result = WORKERS[workload, contender](n, seed)
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------------------------------
# Driver: fresh subprocesses, repeats, table.


def run_worker(workload, contender, n, seed, timeout):
    """One measurement in a fresh interpreter. Returns (result dict or None, error string or None)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", workload, contender, str(n), str(seed)]
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"killed after {timeout:g} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        return None, f"exit {proc.returncode}: {tail}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, f"unreadable output: {proc.stdout[-200:]!r}"


def summarize(results):
    """results: list of worker dicts -> summary dict (rates in ops/s, cpu in seconds per op)."""
    rates = [r["count"] / r["wall"] for r in results]
    cpus = [r["cpu"] / r["count"] for r in results]
    walls = [r["wall"] / r["count"] for r in results]
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "cpu_per_op": statistics.median(cpus),
        "wall_per_op": statistics.median(walls),
        "runs": len(rates),
        "rates": rates,
        "info": results[-1]["info"],
    }


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f} "


def fmt_ratio(num, den):
    if num is None or den is None:
        return "n/a"
    return f"{num / den:.2f}x"


def print_table(workload, n, summaries, errors):
    title = f"{WORKLOAD_TITLE[workload]} (N = {n:,})"
    print()
    print(title)
    print("-" * len(title))
    header = f"{'contender':<32} {'median ' + UNIT[workload]:>22} {'min - max':>21} {'CPU us/' + PER[workload]:>20} {'wall us/' + PER[workload]:>20}"
    print(header)
    for name, label in CONTENDERS[workload]:
        s = summaries.get(name)
        if s is None:
            print(f"{label:<32} {'FAILED: ' + errors.get(name, 'not run')}")
            continue
        spread = f"{fmt_rate(s['min'])}- {fmt_rate(s['max'])}"
        print(
            f"{label:<32} {fmt_rate(s['median']):>22} {spread:>21}"
            f" {s['cpu_per_op'] * 1e6:>20.3f} {s['wall_per_op'] * 1e6:>20.3f}"
        )


def asyncio_baseline(workload, summaries):
    """The asyncio contender to compare with: the faster (by median) of its variants."""
    names = [name for name, _ in CONTENDERS[workload] if name.startswith("asyncio") and name in summaries]
    if not names:
        return None
    return max(names, key=lambda name: summaries[name]["median"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer timers/round trips and 3 repeats")
    ap.add_argument("--repeats", type=int, help="subprocess runs per contender (default 5, quick 3)")
    ap.add_argument("--timers", type=int, help="timers per run (default 200000, quick 50000)")
    ap.add_argument("--roundtrips", type=int, help="round trips per run (default 100000, quick 30000)")
    ap.add_argument("--workload", choices=sorted(CONTENDERS), action="append", help="run only this workload (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a worker is killed (default 60)")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the timer delays")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results here")
    ap.add_argument("--worker", nargs=4, metavar=("WORKLOAD", "CONTENDER", "N", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        workload, contender, n, seed = args.worker
        worker_main(workload, contender, int(n), int(seed))
        return 0

    repeats = args.repeats or (3 if args.quick else 5)
    sizes = {
        "timers": args.timers or (50_000 if args.quick else 200_000),
        "pingpong": args.roundtrips or (30_000 if args.quick else 100_000),
    }
    if repeats < 1 or min(sizes.values()) < 1:
        ap.error("--repeats, --timers and --roundtrips must be positive")
    workloads = args.workload or ["timers", "pingpong"]

    print("levent foundation benchmark" + (" (--quick)" if args.quick else ""))
    print(f"python {platform.python_version()} ({platform.python_implementation()}) at {sys.executable}")
    print(f"platform {platform.platform()}, {os.cpu_count()} CPUs")
    try:
        import levent

        print(f"levent {levent.__version__} from {os.path.dirname(levent.__file__)}; "
              f"libevent {levent.libevent_version().string}; methods {levent.supported_methods()}")
    except Exception as exc:  # reported, the other contenders still run
        print(f"levent NOT importable: {type(exc).__name__}: {exc}")
    print(f"{repeats} repeats, each contender in a fresh subprocess; timeout {args.timeout:g} s per run")

    report = {"python": platform.python_version(), "quick": args.quick, "repeats": repeats, "workloads": {}}
    failed = False
    for workload in workloads:
        n = sizes[workload]
        results = {name: [] for name, _ in CONTENDERS[workload]}
        errors = {}
        for rep in range(repeats):
            for name, _label in CONTENDERS[workload]:
                if name in errors:
                    continue  # a contender that failed or was killed is not run again
                result, error = run_worker(workload, name, n, args.seed, args.timeout)
                if error:
                    errors[name] = error
                    failed = True
                    print(f"  {workload}/{name} run {rep + 1}: {error}", file=sys.stderr)
                else:
                    results[name].append(result)
        summaries = {name: summarize(rs) for name, rs in results.items() if rs and name not in errors}
        print_table(workload, n, summaries, errors)

        lev = summaries.get("levent")
        base_name = asyncio_baseline(workload, summaries)
        aio = summaries.get(base_name) if base_name else None
        sel = summaries.get("selectors")
        label = dict(CONTENDERS[workload]).get(base_name, "asyncio")
        target = TARGETS[workload]
        verdict = ""
        if lev and aio:
            verdict = ", met" if lev["median"] / aio["median"] >= target else ", NOT met"
        print(f"ratio levent/asyncio   = {fmt_ratio(lev and lev['median'], aio and aio['median'])}"
              f"   (baseline: {label}; target >= {target:g}x{verdict})")
        print(f"ratio levent/selectors = {fmt_ratio(lev and lev['median'], sel and sel['median'])}")
        if lev and aio:
            print(f"CPU per {PER[workload]}: levent/asyncio = {lev['cpu_per_op'] / aio['cpu_per_op']:.2f}x")
        if workload == "timers":
            print(f"(every run lasts at least the largest delay, {MAX_DELAY * 1e3:g} ms, whatever the loop: "
                  f"that floor caps the rate at {n / MAX_DELAY:,.0f}/s)")
        report["workloads"][workload] = {
            "n": n,
            "summaries": summaries,
            "errors": errors,
            "asyncio_baseline": base_name,
            "ratio_asyncio": lev["median"] / aio["median"] if lev and aio else None,
            "ratio_selectors": lev["median"] / sel["median"] if lev and sel else None,
        }

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nraw results written to {args.json}")
    if failed:
        print("\nsome runs FAILED (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
