"""TCP echo on 127.0.0.1: the contenders, the C programs, and one measured run.

A run starts a fresh server on a free port, waits for it to print a line starting with "ready",
then runs the C load generator (``loadgen.c``) against it: CONNS connections, each keeping one
SIZE-byte message in flight and checking every echoed byte. The loadgen prints "start" and "end"
around its measured window; the harness samples the server's CPU time (/proc/PID/stat) at both,
which gives the figure that separates servers on a 2-core machine: server CPU time per echo.

The TLS suite is the same over TLS: the servers take ``ssl=`` and the load generator is loadgen.c
built with OpenSSL (``loadgen_tls``).
"""
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import procs, registry

READY_TIMEOUT = 15.0  # seconds for a server to print "ready"
LOADGEN_SLACK = 30.0  # seconds a loadgen run may exceed warm-up + duration
OTHER_LOAD_WARN = 0.10  # a run where other work took this much of a core is flagged

# Per style: the asyncio contender a contender is compared with, and the native ceiling.
REFERENCE = {"protocol": "asyncio-protocol", "streams": "asyncio-streams", "proxy": "asyncio-proxy",
             "proxy-tls": "asyncio-proxy-tls", "tls": "asyncio-tls"}
CEILING = {"protocol": "c-raw", "streams": "c-raw", "proxy": "c-forward", "proxy-tls": None, "tls": None}
# levent's asyncio loop is also compared with uvloop, the fastest other asyncio loop, per round.
RIVAL_OF = {f"levent-asyncio-{style}": f"uvloop-{style}" for style in REFERENCE}
# The C ceiling plus the one Python call a Protocol server makes per read (echo_pycall.c): the least
# user-space work any asyncio loop's Protocol server does, on the ceiling's kernel work. It is compared
# with uvloop as levent is, to show how far below uvloop a loop can go at all.
PYCALL_FLOOR = ("c-pycall", "uvloop-protocol")
# An echo server answers the load itself; a proxy forwards it to one; a tls server is an echo server
# spoken to over TLS.
KINDS = ("echo", "proxy", "tls")


class Skip(Exception):
    """A contender that cannot run here; the message says why."""


class RunError(Exception):
    """A run that failed; the message says how."""


@dataclass
class Contender:
    """A server under load: ``command(toolchain)`` returns its argv (see :func:`server_argv`), or
    raises :class:`Skip`. ``style`` picks the asyncio contender and the ceiling it is compared with;
    a "proxy" forwards to an upstream echo server ("{upstream}" in its argv)."""

    name: str
    label: str
    style: str
    command: Callable[["Toolchain"], List[str]]

    @property
    def kind(self):
        if self.style.startswith("proxy"):
            return "proxy"
        return "tls" if self.style == "tls" else "echo"


CONTENDERS: List[Contender] = []


def register(name, label, style, command):
    """Adds a contender (later issues add theirs: levent's asyncio loop, HTTP)."""
    if style not in REFERENCE:
        raise ValueError(f"style must be one of {sorted(REFERENCE)}, not {style!r}")
    if any(c.name == name for c in CONTENDERS):
        raise ValueError(f"a contender named {name!r} is already registered")
    CONTENDERS.append(Contender(name, label, style, command))


def c_sources():
    """The folder holding the C sources: in the installed package, else the checkout's benchmarks/c."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, "c"), os.path.join(here, "..", "..", "..", "benchmarks", "c")):
        if os.path.isfile(os.path.join(folder, "loadgen.c")):
            return os.path.normpath(folder)
    return None


class Toolchain:
    """Compiles the C programs at run time with the system compiler ($CC, else cc)."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.cc = shutil.which(os.environ.get("CC") or "cc")
        self.src = c_sources()
        self._built = {}

    def version(self):
        if not self.cc:
            return None
        try:
            out = subprocess.run([self.cc, "--version"], capture_output=True, text=True, timeout=30)
            return out.stdout.splitlines()[0] if out.stdout else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    def pkg_config(self, package):
        if not shutil.which("pkg-config"):
            raise Skip("pkg-config is not on PATH (Debian/Ubuntu: apt-get install pkg-config)")
        proc = subprocess.run(["pkg-config", "--cflags", "--libs", package], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise Skip(f"pkg-config {package} failed: {proc.stderr.strip() or 'exit ' + str(proc.returncode)}"
                       f" (Debian/Ubuntu: apt-get install {'libssl-dev' if package == 'openssl' else 'libevent-dev'})")
        return shlex.split(proc.stdout)

    def build(self, name, flags=(), source=None):
        """Compiles SOURCE.c (default NAME.c) into NAME once; returns the binary's path or raises Skip
        with the reason."""
        if name not in self._built:
            try:
                self._built[name] = (self._compile(name, flags, source or name), None)
            except Skip as exc:
                self._built[name] = (None, str(exc))
        path, why = self._built[name]
        if why:
            raise Skip(why)
        return path

    def python_embed(self):
        """Compiler and linker flags that embed the running Python (its headers and libpython), as
        ``python3-config --embed`` gives them. Raises Skip."""
        include = sysconfig.get_paths()["include"]
        if not os.path.isfile(os.path.join(include, "Python.h")):
            raise Skip(f"Python's C headers are not in {include} (Debian/Ubuntu: apt-get install python3-dev)")
        var = sysconfig.get_config_var
        libdir = var("LIBDIR")
        flags = [f"-I{include}", f"-L{libdir}", f"-lpython{var('LDVERSION')}", f"-Wl,-rpath,{libdir}"]
        if not var("Py_ENABLE_SHARED"):
            # A static libpython: extension modules find the C API in the program itself.
            flags += [f"-L{var('LIBPL')}", *shlex.split(var("LINKFORSHARED") or "")]
        return flags + shlex.split(var("LIBS") or "") + shlex.split(var("SYSLIBS") or "")

    def certs(self):
        """(certificate, key) of a self-signed certificate for 127.0.0.1, made once with the openssl
        command; the certificate is also the CA a TLS client verifies it with. Raises Skip."""
        if "certs" not in self._built:
            cert, key = os.path.join(self.bindir, "cert.pem"), os.path.join(self.bindir, "key.pem")
            cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                   "-addext", "subjectAltName=IP:127.0.0.1"]
            why = None
            if not shutil.which("openssl"):
                why = "the openssl command is not on PATH (Debian/Ubuntu: apt-get install openssl)"
            else:
                status, _, err = procs.run_to_end(cmd, 60)
                if status != 0:
                    why = f"openssl req failed: {(err.strip() or 'no output').splitlines()[-1]}"
            self._built["certs"] = ((cert, key), why)
        paths, why = self._built["certs"]
        if why:
            raise Skip(why)
        return paths

    def loadgen(self, kind):
        """The load generator of a suite (``KINDS``): loadgen, or loadgen_tls for "tls". Raises Skip."""
        if kind == "tls":
            return self.build("loadgen_tls", ["-DLOADGEN_TLS", *self.pkg_config("openssl"), "-lm"], "loadgen")
        return self.build("loadgen", ["-lm"])

    def _compile(self, name, flags, source):
        if not self.cc:
            raise Skip("no C compiler on PATH (cc, or $CC; Debian/Ubuntu: apt-get install gcc)")
        if not self.src:
            raise Skip("the C sources (benchmarks/c) are not in this installation")
        out = os.path.join(self.bindir, name)
        cmd = [self.cc, "-O2", "-Wall", "-o", out, os.path.join(self.src, source + ".c"), *flags]
        try:
            status, _, err = procs.run_to_end(cmd, 120)
        except subprocess.TimeoutExpired:
            raise Skip(f"{shlex.join(cmd)} ran for more than 120 s")
        if status != 0:
            raise Skip(f"{shlex.join(cmd)} failed: {(err.strip() or 'no output').splitlines()[-1]}")
        return out


def _c_server(source, *args):
    def command(tc):
        return [tc.build(source, tc.pkg_config("libevent_core")), *args]

    return command


def _c_pycall(tc):
    # The protocol class is imported from this interpreter's levent, through its sys.path.
    binary = tc.build("echo_pycall", [*tc.python_embed(), *tc.pkg_config("libevent_core")])
    return [binary, "{port}", os.pathsep.join(p for p in sys.path if p)]


def _python_server(name, loop=None):
    def command(tc):
        why = loop and registry.missing(loop)
        if why:
            raise Skip(why)
        cmd = [sys.executable, "-m", "levent.bench.servers", name, "--port", "{port}"]
        if "-proxy" in name:
            cmd += ["--upstream", "{upstream}"]
        if name.endswith("-proxy-tls"):
            cmd += ["--cafile", tc.certs()[0]]
        elif name.endswith("-tls"):
            cert, key = tc.certs()
            cmd += ["--cert", cert, "--key", key]
        return cmd

    return command


def _levent_proxy(tls):
    def command(tc):
        cmd = [sys.executable, "-m", "levent", "proxy", "--listen", "127.0.0.1:{port}", "--upstream", "127.0.0.1:{upstream}"]
        return cmd + ["--tls-upstream", "--cafile", tc.certs()[0]] if tls else cmd

    return command


def _tls_echo(tc):
    cert, key = tc.certs()
    return [sys.executable, "-m", "levent.bench.servers", "tls-echo", "--port", "{port}", "--cert", cert, "--key", key]


def _levent_raw(_tc):
    return [sys.executable, "-m", "levent", "echo", "--mode", "events", "--port"]


register("c-raw", "C libevent, recv/send (ceiling)", "protocol", _c_server("echo_raw"))
register("c-bev", "C libevent bufferevent", "protocol", _c_server("echo_bev"))
register("c-pycall", "C libevent + one Python data_received per read", "protocol", _c_pycall)
register("levent", "levent raw API (Events)", "protocol", _levent_raw)
for _loop in registry.LOOPS.values():
    if _loop.asyncio:
        for _style in ("protocol", "streams"):
            register(f"{_loop.name}-{_style}", f"{_loop.label} {'Protocol' if _style == 'protocol' else 'streams'}",
                     _style, _python_server(f"{_loop.name}-{_style}", _loop.name))
register("selectors", "pure-Python selectors loop", "protocol", _python_server("selectors"))

# TLS echo: the protocol server with ssl=, under the TLS load generator.
for _loop in registry.LOOPS.values():
    if _loop.asyncio:
        register(f"{_loop.name}-tls", f"{_loop.label} Protocol, TLS", "tls", _python_server(f"{_loop.name}-tls", _loop.name))

# Proxies, in front of the C echo server (c-raw).
register("c-forward", "C libevent forwarder, recv/send (ceiling)", "proxy", _c_server("forward_raw", "{port}", "{upstream}"))
register("levent-proxy", "levent proxy (python -m levent proxy)", "proxy", _levent_proxy(tls=False))
for _loop in registry.LOOPS.values():
    if _loop.asyncio:
        register(f"{_loop.name}-proxy", f"{_loop.label} proxy (Protocols)", "proxy",
                 _python_server(f"{_loop.name}-proxy", _loop.name))
# The same with TLS toward the upstream, a TLS echo server on levent (no C ceiling here).
register("levent-proxy-tls", "levent proxy, TLS upstream", "proxy-tls", _levent_proxy(tls=True))
for _loop in registry.LOOPS.values():
    if _loop.asyncio:
        register(f"{_loop.name}-proxy-tls", f"{_loop.label} proxy, TLS upstream", "proxy-tls",
                 _python_server(f"{_loop.name}-proxy-tls", _loop.name))

# The echo server behind the proxies of each style.
def _c_echo(tc):
    c_raw = contender("c-raw")
    assert c_raw is not None    # registered above
    return c_raw.command(tc)


UPSTREAMS = {"proxy": _c_echo, "proxy-tls": _tls_echo}


# --------------------------------------------------------------------------------------------------
# One run


def server_argv(cmd, port, upstream=None):
    """``cmd`` with "{port}" (and "{upstream}") replaced in its arguments; without "{port}" in any,
    the port is appended."""
    if not any("{port}" in a for a in cmd):
        cmd = cmd + ["{port}"]
    return [a.replace("{port}", str(port)).replace("{upstream}", str(upstream)) for a in cmd]


def start_server(cmd, pinned, ready_timeout=READY_TIMEOUT, upstream=None, cpu=procs.SERVER_CPU):
    """Starts ``cmd`` (see :func:`server_argv`) on a free port and waits for its "ready" line.
    Returns (proc, port, stderr file); raises RunError (with the server stopped) when it does not
    start: it exited, printed something else, or stayed silent for ``ready_timeout`` seconds."""
    port = procs.free_port()
    err = tempfile.TemporaryFile()
    try:
        proc = procs.spawn(server_argv(cmd, port, upstream), stderr=err, env=procs.python_env())
    except OSError as exc:
        err.close()
        raise RunError(f"cannot start {shlex.join(cmd)}: {exc}")
    if pinned:
        procs.pin(proc.pid, cpu)
    reader = procs.LineReader(proc.stdout)
    line = reader.readline(time.monotonic() + ready_timeout)
    if line is None or not line.startswith("ready"):
        if reader.eof:  # its stdout closed: it is exiting, so wait for its status
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        exited = proc.poll() is not None
        status = procs.stop(proc)
        if line is not None:
            why = f"printed {line!r} instead of 'ready'"
        elif exited:
            why = f"exited with status {status}"
        elif reader.eof:
            why = "closed its stdout without printing 'ready'"
        else:
            why = f"no 'ready' within {ready_timeout:g} s"
        msg = f"server did not start ({why}): {procs.tail(err)}"
        err.close()
        raise RunError(msg)
    return proc, port, err


def run_loadgen(loadgen, port, size, conns, duration, warmup, pinned, on_line=None):
    """Runs the load generator; ``on_line("start"|"end")`` is called as it crosses its window.
    Returns its JSON report; raises RunError if it failed (exit status and stderr in the message)."""
    err = tempfile.TemporaryFile()
    gen = procs.spawn([loadgen, str(port), str(conns), str(size), repr(duration), repr(warmup)], stderr=err)
    try:
        if pinned:
            procs.pin(gen.pid, procs.CLIENT_CPU)
        reader = procs.LineReader(gen.stdout)
        limit = warmup + duration + LOADGEN_SLACK
        deadline = time.monotonic() + limit
        report = None
        while report is None:
            line = reader.readline(deadline)
            if line is None:
                break
            if line.startswith("{"):
                report = json.loads(line)
            elif on_line:
                on_line(line)
        try:
            status = gen.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RunError(f"loadgen ran past {limit:g} s and was stopped")
        if status != 0:
            raise RunError(f"loadgen exit {status}: {procs.tail(err)}")
        if report is None:
            raise RunError(f"loadgen printed no report; stderr: {procs.tail(err)}")
        return report
    finally:
        procs.stop(gen)
        err.close()


def run_one(cmd, loadgen, size, conns, duration, warmup, pinned, ready_timeout=READY_TIMEOUT, upstream_cmd=None):
    """One fresh server, one loadgen run. Returns the run's dict; raises RunError.

    With ``upstream_cmd``, the server is a proxy: that echo server starts first (on the client's
    CPU), the proxy gets its port as "{upstream}", and the load goes through the proxy."""
    upstream = upstream_port = upstream_err = None
    if upstream_cmd:
        upstream, upstream_port, upstream_err = start_server(upstream_cmd, pinned, ready_timeout,
                                                             cpu=procs.CLIENT_CPU)
    server = server_err = None
    marks = {}

    def on_line(line):
        if line in ("start", "end"):
            marks[line] = (procs.cpu_split_seconds(server.pid), procs.system_busy_seconds(),
                           procs.kthreads_seconds(), procs.cpu_seconds(upstream.pid) if upstream else 0.0)

    try:
        server, port, server_err = start_server(cmd, pinned, ready_timeout, upstream=upstream_port)
        cpu_run0 = procs.cpu_seconds(server.pid)
        report = run_loadgen(loadgen, port, size, conns, duration, warmup, pinned, on_line)
        if "start" not in marks or "end" not in marks:
            raise RunError("loadgen output lacks its start/end lines")
        for proc, errfile, what in ((server, server_err, "server"), (upstream, upstream_err, "upstream echo server")):
            if proc is not None and proc.poll() is not None:
                raise RunError(f"{what} exited during the run (status {proc.returncode}): {procs.tail(errfile)}")
        cpu_run1 = procs.cpu_seconds(server.pid)
    except OSError as exc:  # /proc/PID/stat of a server that vanished, a pipe error, ...
        raise RunError(f"{type(exc).__name__}: {exc}")
    finally:
        server_status = procs.stop(server) if server else None
        server_log = procs.tail(server_err) if server_err else ""
        for proc, errfile in ((server, server_err), (upstream, upstream_err)):
            if proc is not None:
                procs.stop(proc)
            if errfile is not None:
                errfile.close()
    ((user0, sys0), busy0, kthr0, up0), ((user1, sys1), busy1, kthr1, up1) = marks["start"], marks["end"]
    cpu0, cpu1 = user0 + sys0, user1 + sys1
    # What else the CPUs did in the window: kernel threads (work the traffic itself causes), and
    # everything else (other processes, stolen time) = busy time - server - loadgen - kernel threads
    # (- the upstream echo server behind a proxy).
    report.update(
        server_pid=server.pid,
        server_cpu_s=cpu1 - cpu0,
        server_user_s=user1 - user0,    # the part in user space: the server's own code, no syscalls
        kthreads_cpu_s=kthr1 - kthr0,
        other_cpu_s=max(0.0, busy1 - busy0 - (cpu1 - cpu0) - report["loadgen_cpu_s"] - (kthr1 - kthr0)
                        - (up1 - up0)),
        server_cpu_run_s=cpu_run1 - cpu_run0,
        server_exit=server_status,
        pinned=pinned,
    )
    if upstream is not None:
        report.update(upstream_pid=upstream.pid, upstream_cpu_s=up1 - up0)
    if server_status not in (0, -signal.SIGTERM):
        report["server_stderr"] = server_log
    return report


def summarize(runs):
    """The median (and min-max) over a contender's runs in one cell."""
    def med(key):
        return statistics.median(key(r) for r in runs)

    rates = [r["messages"] / r["seconds"] for r in runs]
    cpus = [r["server_cpu_s"] / r["messages"] * 1e6 for r in runs]
    return {
        "req_s": statistics.median(rates),
        "req_s_min": min(rates),
        "req_s_max": max(rates),
        "mib_s": med(lambda r: r["bytes"] / r["seconds"] / 2**20),
        "p50_us": med(lambda r: r["p50_us"]),
        "p99_us": med(lambda r: r["p99_us"]),
        "cpu_us_per_echo": statistics.median(cpus),
        "cpu_us_per_echo_min": min(cpus),
        "cpu_us_per_echo_max": max(cpus),
        "user_us_per_echo": user_us_per_echo(runs),
        "server_util": med(lambda r: r["server_cpu_s"] / r["seconds"]),
        "loadgen_util": med(lambda r: r["loadgen_cpu_s"] / r["seconds"]),
        "kthreads_util": med(lambda r: r["kthreads_cpu_s"] / r["seconds"]),
        "other_util_max": max(r["other_cpu_s"] / r["seconds"] for r in runs),
        "runs": len(runs),
    }


def user_us_per_echo(runs):
    """User-space CPU µs per echo over all the runs together: one run's user time is a few clock ticks
    (10 ms each), too coarse to compare alone. None for results saved before it was recorded."""
    if not runs or not all("server_user_s" in r for r in runs):
        return None
    return sum(r["server_user_s"] for r in runs) / sum(r["messages"] for r in runs) * 1e6


def paired_ratios(runs, rival_runs):
    """CPU per echo of ``runs`` over that of ``rival_runs``, one ratio per round both ran in: the two
    runs of a round are minutes apart at most, so a slow drift of the machine cancels out."""
    def by_round(rs):
        # (results saved before rounds were recorded list each contender's runs in round order)
        return {r.get("round", i): r["server_cpu_s"] / r["messages"] for i, r in enumerate(rs)}
    mine, theirs = by_round(runs), by_round(rival_runs)
    return [mine[k] / theirs[k] for k in sorted(mine) if k in theirs]


def median_interval(values, confidence=0.95):
    """The distribution-free confidence interval of the median of ``values``: (the k-th smallest,
    the k-th largest), k the largest rank with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2.
    None when there are too few values for that confidence (fewer than 6 at 95%).

    It assumes only that the values are independent draws of one distribution, not that it is normal:
    a disturbed round is one outlier, which moves the bounds by one rank at most.
    """
    n = len(values)
    tail, k = 0.0, 0
    while k < n:
        p = math.comb(n, k) / 2 ** n     # P(Binomial(n, 1/2) == k)
        if tail + p > (1 - confidence) / 2:
            break
        tail += p
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def contender(name) -> Optional[Contender]:
    return next((c for c in CONTENDERS if c.name == name), None)
