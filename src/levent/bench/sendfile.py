"""The sendfile suite: one file (100 MiB by default, in the page cache) sent over TCP on 127.0.0.1 to a C
receiver (benchmarks/c/sink.c) that reads it to EOF and answers with the byte count.

Contenders: ``loop.sendfile(transport, file)`` and ``loop.sock_sendfile(sock, file)`` on levent's loop
and asyncio's, and the read + ``transport.write()`` loop an application writes where there is no
sendfile: uvloop has neither method (both are AbstractEventLoop's NotImplementedError), so that is
its row, with levent's for comparison. Each sender is a fresh process pinned to one CPU, the receiver
to the other; a transfer is timed from the first byte handed over to the receiver's answer.

``python -m levent.bench.sendfile LOOP METHOD PORT PATH TRANSFERS`` is the sender (one JSON line).
"""
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from . import echo, procs, registry

WRITE_CHUNK = 256 * 1024        # what the read + write contenders read per write()
WORKER_TIMEOUT = 120.0          # seconds one sender process may run
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Contender:
    name: str
    loop: str       # a registry.LOOPS name
    method: str     # "sendfile", "sock_sendfile" or "write"
    label: str


CONTENDERS = [
    Contender("levent-sendfile", "levent-asyncio", "sendfile", "levent loop.sendfile()"),
    Contender("levent-sock_sendfile", "levent-asyncio", "sock_sendfile", "levent loop.sock_sendfile()"),
    Contender("asyncio-sendfile", "asyncio", "sendfile", "asyncio loop.sendfile()"),
    Contender("asyncio-sock_sendfile", "asyncio", "sock_sendfile", "asyncio loop.sock_sendfile()"),
    Contender("uvloop-write", "uvloop", "write", "uvloop read + write() (no sendfile in uvloop)"),
    Contender("levent-write", "levent-asyncio", "write", "levent read + write()"),
]
REFERENCE = "asyncio-sock_sendfile"


def contender(name):
    return next(c for c in CONTENDERS if c.name == name)


# -- the sender (a worker process) ----------------------------------------------------------------

class _Client(asyncio.Protocol):
    """Flow control for the write contender, and the receiver's 8-byte answer."""

    def __init__(self, loop):
        self.answer = bytearray()
        self.done = loop.create_future()
        self.writable = None
        self.loop = loop

    def data_received(self, data):
        self.answer += data
        if len(self.answer) >= 8 and not self.done.done():
            self.done.set_result(int.from_bytes(self.answer[:8], "little"))

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the receiver closed before answering"))

    def pause_writing(self):
        self.writable = self.loop.create_future()

    def resume_writing(self):
        if self.writable is not None:
            self.writable.set_result(None)
            self.writable = None


async def _one_transfer(loop, method, port, f):
    if method == "sock_sendfile":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            sent = await loop.sock_sendfile(sock, f, 0)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while len(answer) < 8:
                chunk = await loop.sock_recv(sock, 8 - len(answer))
                if not chunk:
                    raise ConnectionError("the receiver closed before answering")
                answer += chunk
            received = int.from_bytes(answer, "little")
        finally:
            sock.close()
    else:
        tr, proto = await loop.create_connection(lambda: _Client(loop), "127.0.0.1", port)
        try:
            t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            if method == "sendfile":
                sent = await loop.sendfile(tr, f, 0)
            else:
                f.seek(0)
                sent = 0
                while True:
                    data = f.read(WRITE_CHUNK)
                    if not data:
                        break
                    tr.write(data)
                    sent += len(data)
                    if proto.writable is not None:
                        await proto.writable
            tr.write_eof()
            received = await proto.done
        finally:
            tr.close()
    t1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if received != sent:
        raise RuntimeError(f"sent {sent} bytes but the receiver got {received}")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"bytes": sent, "wall": t1 - t0, "cpu": cpu,
            "cpu_user": ru1.ru_utime - ru0.ru_utime, "cpu_sys": ru1.ru_stime - ru0.ru_stime}


async def _transfers(loop, method, port, path, transfers):
    results = []
    with open(path, "rb") as f:
        for _ in range(transfers):
            results.append(await _one_transfer(loop, method, port, f))
    return results


def worker(loop_name, method, port, path, transfers):
    loop = registry.new_loop(loop_name)
    try:
        results = loop.run_until_complete(_transfers(loop, method, port, path, transfers))
    finally:
        loop.close()
    print(json.dumps({"transfers": results}), flush=True)


# -- the parent: receiver, file, workers ----------------------------------------------------------

def make_file(size, folder):
    """A file of ``size`` pseudo-random bytes, read once so that it is in the page cache."""
    path = os.path.join(folder, "sendfile-bench.bin")
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass
    return path


def start_sink(toolchain, pinned):
    """(process, port) of the C receiver; raises echo.Skip or echo.RunError."""
    binary = toolchain.build("sink")
    proc = procs.spawn([binary, "0"], stderr=subprocess.DEVNULL)
    if pinned:
        procs.pin(proc.pid, procs.CLIENT_CPU)
    line = procs.LineReader(proc.stdout).readline(time.monotonic() + READY_TIMEOUT)
    if not line or not line.startswith("ready "):
        procs.stop(proc)
        raise echo.RunError(f"the receiver did not start ({line!r})")
    return proc, int(line.split()[1])


def run_sender(c, port, path, transfers, pinned, timeout=WORKER_TIMEOUT):
    """The measured transfers of one sender process (its first transfer is a warm-up, dropped)."""
    err = tempfile.TemporaryFile()
    proc = procs.spawn([sys.executable, "-m", "levent.bench.sendfile", c.loop, c.method, str(port), path,
                        str(transfers + 1)], stderr=err, env=procs.python_env())
    try:
        if pinned:
            procs.pin(proc.pid, procs.SERVER_CPU)
        line = procs.LineReader(proc.stdout).readline(time.monotonic() + timeout)
        if line is None or not line.startswith("{"):
            try:
                status = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                raise echo.RunError(f"no result within {timeout:g} s; stopped")
            raise echo.RunError(f"exit {status}: {procs.tail(err)}")
        return json.loads(line)["transfers"][1:]
    finally:
        procs.stop(proc)
        err.close()


def summarize(transfers):
    rates = [t["bytes"] / t["wall"] / 2**20 for t in transfers]
    cpu_ms = [t["cpu"] / (t["bytes"] / 2**20) * 1e3 * 100 for t in transfers]   # per 100 MiB
    return {
        "mib_s": statistics.median(rates), "mib_s_min": min(rates), "mib_s_max": max(rates),
        "cpu_ms_per_100mib": statistics.median(cpu_ms),
        "sys_share": statistics.median(t["cpu_sys"] / t["cpu"] for t in transfers if t["cpu"] > 0)
        if any(t["cpu"] > 0 for t in transfers) else 0.0,
        "transfers": len(transfers),
    }


def plan(only_loops=()):
    """{contender name: why it cannot run, or None}."""
    return {c.name: registry.missing(c.loop) for c in CONTENDERS if not only_loops or c.loop in only_loops}


def run_suite(toolchain, names, size, transfers, repeats, pinned, progress, weight):
    """Runs the named contenders side by side; returns the report's "sendfile" section body."""
    cell = {"size": size, "runs": {n: [] for n in names}, "errors": {}, "summaries": {}}
    folder = tempfile.mkdtemp(prefix="levent-sendfile-")
    sink = None
    try:
        path = make_file(size, folder)
        sink, port = start_sink(toolchain, pinned)
        for rep in range(repeats):
            for name in names:
                progress.step(weight, f"sendfile {size // 2**20} MiB: {name} ({rep + 1}/{repeats})")
                if name in cell["errors"]:
                    continue
                try:
                    cell["runs"][name] += run_sender(contender(name), port, path, transfers, pinned)
                except echo.RunError as exc:
                    cell["errors"][name] = str(exc)
                    progress.note(f"sendfile, {name}: {exc}")
    finally:
        if sink is not None:
            procs.stop(sink)
        for entry in os.listdir(folder):
            os.unlink(os.path.join(folder, entry))
        os.rmdir(folder)
    cell["summaries"] = {n: summarize(rs) for n, rs in cell["runs"].items() if rs and n not in cell["errors"]}
    return cell


def tables(report, Table):
    """The suite's table (``Table``: levent.bench.tables.Table)."""
    section = report.get("sendfile") or {"contenders": {}, "cells": []}
    out = []
    for cell in section["cells"]:
        t = Table(f"sendfile, {cell['size'] // 2**20} MiB file in the page cache -> C receiver on 127.0.0.1",
                  ["sender", "MiB/s", "min-max", "CPU ms/100 MiB", "sys", "x asyncio sock_sendfile"])
        ref = cell["summaries"].get(REFERENCE)
        for name, info in section["contenders"].items():
            if info["skipped"]:
                continue
            s = cell["summaries"].get(name)
            if s is None:
                t.add(info["label"], f"FAILED: {cell['errors'].get(name, 'not run')}", *[""] * 4)
                continue
            spread = f"{s['mib_s_min']:.0f}-{s['mib_s_max']:.0f}" if s["transfers"] > 1 else ""
            t.add(info["label"], f"{s['mib_s']:.0f}", spread, f"{s['cpu_ms_per_100mib']:.1f}",
                  f"{s['sys_share']:.0%}", f"{s['mib_s'] / ref['mib_s']:.2f}x" if ref else "n/a")
        t.notes.append("MiB/s: the file's size over the time from the first byte handed to the loop to the"
                       " receiver's answer that it read all of it (median of the transfers). CPU ms/100 MiB: the"
                       " sender process's CPU time (user + sys), sys: the kernel's share of it. uvloop has no"
                       " sendfile() or sock_sendfile() (both raise NotImplementedError): its row is the read +"
                       " transport.write() loop an application falls back to.")
        t.notes += [f"skipped {i['label']}: {i['skipped']}" for i in section["contenders"].values() if i["skipped"]]
        out.append(t)
    return out


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
