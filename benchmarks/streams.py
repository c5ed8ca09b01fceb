#!/usr/bin/env python3
"""levent stream benchmark: TCP echo servers under a closed-loop C load generator.

    python benchmarks/streams.py [--sizes 1024,102400] [--conns 100] [--duration 5] [--repeats 3]
                                 [--warmup 0.5] [--contender NAME]... [--no-pin] [--json FILE]

Contenders, each a separate server process on 127.0.0.1:
  c-raw     benchmarks/c/echo_raw.c: libevent only as the poller, recv()/send() by hand (the floor)
  c-bev     benchmarks/c/echo_bev.c: libevent's classic bufferevent echo (evbuffer_add_buffer)
  asyncio   benchmarks/echo_asyncio.py: asyncio Protocol, data_received -> transport.write
  levent    python -m levent echo --port PORT (skipped, with the reason, while it does not exist)

Load: benchmarks/c/loadgen.c, one thread on epoll. Each of CONNS connections keeps exactly one message
of SIZE bytes in flight and checks every echoed byte (the pattern changes with every message); after
--warmup seconds unmeasured it measures for --duration seconds. A cell is one (size, conns) pair;
every contender runs --repeats times per cell, repeats interleaved across contenders, each run
against a fresh server process.

The C files are compiled with `cc -O2` ($CC overrides cc) into benchmarks/bin/ at every start; a C
contender whose compile or `pkg-config libevent_core` fails is skipped with the reason (without a
compiler there is no load generator, and nothing runs).

When os.sched_setaffinity works and CPUs 0 and 1 are both allowed, the server is pinned to CPU 0 and
the load generator to CPU 1, so they do not compete for a core (--no-pin: the scheduler decides).

Reported per contender (median over the repeats, min-max where shown):
  req/s         echoes completed in the window / window length (the loadgen's clock)
  MiB/s         SIZE * req/s (one direction)
  p50/p99       latency of one echo, from the first send() of a message to its last byte back
  CPU us/echo   the SERVER's utime+stime (/proc/PID/stat) over the window / echoes; the harness
                samples it when the loadgen prints "start" and "end" (the whole loadgen run, connects
                and warm-up included, is in the JSON as server_cpu_run_s)
  x C raw       CPU us/echo relative to c-raw's in the same cell
  srv CPU       server CPU time / window (100% = one core busy)
  gen CPU       the loadgen's own CPU time / window; near 100% means req/s is the load generator's
                limit rather than the server's (CPU per echo is still the server's own)
  kthr          CPU time of kernel threads in the window, as a share of one core: kworkers and
                ksoftirqd doing work the traffic causes (large messages: freeing socket memory) that is
                charged to neither process
  other         CPU time the machine spent on anything else in the window (/proc/stat busy time
                minus server, loadgen and kernel threads), worst run, as a share of one core: other
                processes, stolen time. Flagged from 10%: something competed, req/s and latency of
                that row are unreliable.

/proc/PID/stat counts in clock ticks (10 ms at USER_HZ=100): over a multi-second window that is a
fraction of a percent.

Every server is stopped by PID (SIGTERM, then SIGKILL after 5 s), also on Ctrl-C, SIGTERM and
errors; on Linux the children also get SIGTERM if the harness dies regardless (PR_SET_PDEATHSIG).
Every loadgen run is bounded (it also alarm()s itself). Exit status 1 if any run failed.
"""
import argparse
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CDIR = os.path.join(HERE, "c")
BINDIR = os.path.join(HERE, "bin")

CONTENDERS = [
    # (name, label)
    ("c-raw", "C raw (echo_raw)"),
    ("c-bev", "C bufferevent (echo_bev)"),
    ("asyncio", "asyncio Protocol"),
    ("levent", "levent (python -m levent echo)"),
]
BASELINE = "c-raw"
SERVER_CPU, LOADGEN_CPU = 0, 1

READY_TIMEOUT = 15.0  # seconds for a server to print "ready"
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
LOADGEN_SLACK = 30.0  # seconds a loadgen run may exceed warmup + duration
OTHER_LOAD_WARN = 0.10  # flag a result when other work took this much of a core during a window

LIVE = {}  # pid -> Popen: every process started and not yet reaped


# --------------------------------------------------------------------------------------------------
# Processes


def _die_with_parent():
    """In the child before exec: SIGTERM it if the harness dies without cleaning up (even SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(cmd, **kwargs):
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=preexec, **kwargs)
    LIVE[proc.pid] = proc
    return proc


def stop(proc, timeout=STOP_TIMEOUT):
    """SIGTERM to proc's PID, SIGKILL after timeout. Returns its exit status."""
    try:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        LIVE.pop(proc.pid, None)
        if proc.stdout:
            proc.stdout.close()
    return proc.returncode


def stop_all():
    for proc in list(LIVE.values()):
        stop(proc)


class LineReader:
    """Reads lines from a pipe with a deadline (select + os.read: no buffering surprises)."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, deadline):
        """A line without its newline; None at EOF or when the deadline passed."""
        while b"\n" not in self.buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                continue
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").strip()


def tail(fileobj, n=3):
    fileobj.seek(0)
    lines = fileobj.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-n:]) if lines else "no output on stderr"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def system_busy_seconds():
    """CPU time all CPUs spent not idle (/proc/stat: user nice system irq softirq steal), in seconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # "cpu user nice system idle iowait irq softirq steal ..."
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


PF_KTHREAD = 0x00200000


def kthreads_seconds():
    """utime + stime summed over the kernel threads (kworkers, ksoftirqd, ...), in seconds."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[6]) & PF_KTHREAD:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def affinity_ok():
    """(True, "") when the server and loadgen can be pinned to CPUs 0 and 1, else (False, reason)."""
    if not hasattr(os, "sched_setaffinity"):
        return False, "os.sched_setaffinity does not exist here"
    try:
        allowed = os.sched_getaffinity(0)
        if not {SERVER_CPU, LOADGEN_CPU} <= allowed:
            return False, f"CPUs {SERVER_CPU} and {LOADGEN_CPU} are not both allowed (allowed: {sorted(allowed)})"
        os.sched_setaffinity(0, allowed)
    except OSError as exc:
        return False, f"sched_setaffinity failed: {exc}"
    return True, ""


def pin(pid, cpu):
    try:
        os.sched_setaffinity(pid, {cpu})
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Building and finding the contenders


def build(cc, name, libs):
    """Compiles c/NAME.c into bin/NAME. Returns (path, None) or (None, reason)."""
    src = os.path.join(CDIR, name + ".c")
    out = os.path.join(BINDIR, name)
    cmd = [cc, "-O2", "-Wall", "-o", out, src] + libs
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{shlex.join(cmd)} ran for more than 120 s"
    if proc.returncode != 0:
        return None, f"{shlex.join(cmd)} failed: {(proc.stderr.strip() or 'no output').splitlines()[-1]}"
    return out, None


def pkg_config(pkg):
    """(flags list, None) or (None, reason)."""
    if not shutil.which("pkg-config"):
        return None, "pkg-config is not on PATH"
    proc = subprocess.run(["pkg-config", "--cflags", "--libs", pkg], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None, f"pkg-config {pkg} failed: {proc.stderr.strip() or 'exit ' + str(proc.returncode)}"
    return shlex.split(proc.stdout), None


def python_env():
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    return env


def levent_main_missing():
    """None when `python -m levent` can run, else why not (levent not importable, no __main__)."""
    probe = (
        "import importlib.util, sys\n"
        "try:\n"
        "    import levent\n"
        "except Exception as exc:\n"
        "    sys.exit(f'levent is not importable by {sys.executable}: {type(exc).__name__}: {exc}')\n"
        "if importlib.util.find_spec('levent.__main__') is None:\n"
        "    sys.exit(f'levent at {levent.__file__} has no __main__ module yet')\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                              env=python_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "probing `import levent` took more than 30 s"
    if proc.returncode != 0:
        return (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()[-1]
    return None


def prepare(cc):
    """{name: (command template without the port, None) or (None, skip reason)}, loadgen path or None."""
    os.makedirs(BINDIR, exist_ok=True)
    found = {}
    loadgen = None
    if not cc:
        reason = "no C compiler (cc, or $CC) on PATH"
        found["c-raw"] = found["c-bev"] = (None, reason)
        print(f"no load generator: {reason}")
    else:
        loadgen, err = build(cc, "loadgen", ["-lm"])
        if err:
            print(f"no load generator: {err}")
        flags, err = pkg_config("libevent_core")
        for name, exe in (("c-raw", "echo_raw"), ("c-bev", "echo_bev")):
            if err:
                found[name] = (None, err)
                continue
            path, build_err = build(cc, exe, flags)
            found[name] = ([path], None) if path else (None, build_err)
    found["asyncio"] = ([sys.executable, os.path.join(HERE, "echo_asyncio.py"), "--port"], None)
    why = levent_main_missing()
    found["levent"] = (None, why) if why else ([sys.executable, "-m", "levent", "echo", "--port"], None)
    return found, loadgen


# --------------------------------------------------------------------------------------------------
# One measurement


class RunError(Exception):
    pass


def start_server(cmd, pinned):
    """Starts a server on a fresh port and waits for a line starting with "ready". Returns
    (proc, port, errfile)."""
    port = free_port()
    err = tempfile.TemporaryFile()
    try:
        proc = spawn(cmd + [str(port)], stderr=err, env=python_env())
    except OSError as exc:
        err.close()
        raise RunError(f"cannot start {shlex.join(cmd)}: {exc}")
    if pinned:
        pin(proc.pid, SERVER_CPU)
    line = LineReader(proc.stdout).readline(time.monotonic() + READY_TIMEOUT)
    if line is None or not line.startswith("ready"):
        exited = proc.poll() is not None
        status = stop(proc)
        if line is not None:
            why = f"printed {line!r} instead of 'ready'"
        elif exited:
            why = f"exited with status {status}"
        else:
            why = f"no 'ready' within {READY_TIMEOUT:g} s"
        msg = f"server did not start ({why}): {tail(err)}"
        err.close()
        raise RunError(msg)
    return proc, port, err


def run_one(cmd, loadgen, size, conns, duration, warmup, pinned):
    """One fresh server, one loadgen run. Returns the result dict; raises RunError."""
    server, port, server_err = start_server(cmd, pinned)
    gen = None
    gen_err = tempfile.TemporaryFile()
    try:
        cpu_run0 = cpu_seconds(server.pid)
        gen = spawn([loadgen, str(port), str(conns), str(size), repr(duration), repr(warmup)], stderr=gen_err)
        if pinned:
            pin(gen.pid, LOADGEN_CPU)
        reader = LineReader(gen.stdout)
        deadline = time.monotonic() + warmup + duration + LOADGEN_SLACK
        cpu_start = cpu_end = busy_start = busy_end = kthreads_start = kthreads_end = report = None
        while report is None:
            line = reader.readline(deadline)
            if line is None:
                break
            if line == "start":
                cpu_start = cpu_seconds(server.pid)
                busy_start = system_busy_seconds()
                kthreads_start = kthreads_seconds()
            elif line == "end":
                cpu_end = cpu_seconds(server.pid)
                busy_end = system_busy_seconds()
                kthreads_end = kthreads_seconds()
            elif line.startswith("{"):
                report = json.loads(line)
        try:
            status = gen.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            stop(gen)
            raise RunError(f"loadgen ran past {warmup + duration + LOADGEN_SLACK:g} s and was stopped")
        stop(gen)
        if status != 0:
            raise RunError(f"loadgen exit {status}: {tail(gen_err)}")
        if report is None or cpu_start is None or cpu_end is None:
            raise RunError(f"loadgen output incomplete (start/end/JSON); stderr: {tail(gen_err)}")
        if server.poll() is not None:
            raise RunError(f"server exited during the run (status {server.returncode}): {tail(server_err)}")
        cpu_run1 = cpu_seconds(server.pid)
    except OSError as exc:  # /proc/PID/stat of a server that vanished, a pipe error, ...
        raise RunError(f"{type(exc).__name__}: {exc}")
    finally:
        if gen is not None:
            stop(gen)
        gen_err.close()
        server_status = stop(server)
        server_log = tail(server_err)
        server_err.close()
    # What else the CPUs did in the window: kernel threads (kworkers freeing the traffic's memory,
    # ksoftirqd: work the echo itself causes), and everything else (other processes, stolen time, this
    # harness, which only waits) = /proc/stat busy time - server - loadgen - kernel threads.
    kthreads = kthreads_end - kthreads_start
    report.update(
        server_cpu_s=cpu_end - cpu_start,
        kthreads_cpu_s=kthreads,
        other_cpu_s=max(0.0, busy_end - busy_start - (cpu_end - cpu_start) - report["loadgen_cpu_s"] - kthreads),
        server_cpu_run_s=cpu_run1 - cpu_run0,
        server_exit=server_status,
        pinned=pinned,
    )
    if server_status not in (0, -signal.SIGTERM):
        report["server_stderr"] = server_log
    return report


# --------------------------------------------------------------------------------------------------
# Summaries and tables


def summarize(runs):
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
        "server_util": med(lambda r: r["server_cpu_s"] / r["seconds"]),
        "loadgen_util": med(lambda r: r["loadgen_cpu_s"] / r["seconds"]),
        "kthreads_util": med(lambda r: r["kthreads_cpu_s"] / r["seconds"]),
        "other_util_max": max(r["other_cpu_s"] / r["seconds"] for r in runs),
        "runs": len(runs),
    }


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_us(x):
    return f"{x / 1e3:.2f} ms" if x >= 10_000 else f"{x:.0f} us"


def print_cell(size, conns, summaries, errors, skipped):
    title = f"echo, {size:,} B messages, {conns} connections"
    print()
    print(title)
    print("-" * len(title))
    print(f"{'contender':<32} {'req/s':>8} {'min-max':>15} {'MiB/s':>8} {'p50':>9} {'p99':>9}"
          f" {'CPU us/echo':>12} {'x C raw':>8} {'srv CPU':>8} {'gen CPU':>8} {'kthr':>5} {'other':>6}")
    base = summaries.get(BASELINE)
    saturated = noisy = False
    for name, label in CONTENDERS:
        if name in skipped:
            print(f"{label:<32} skipped: {skipped[name]}")
            continue
        s = summaries.get(name)
        if s is None:
            print(f"{label:<32} FAILED: {errors.get(name, 'not run')}")
            continue
        ratio = f"{s['cpu_us_per_echo'] / base['cpu_us_per_echo']:.2f}x" if base else "n/a"
        mark = "*" if s["loadgen_util"] >= 0.95 else ""
        saturated = saturated or bool(mark)
        noise = "!" if s["other_util_max"] >= OTHER_LOAD_WARN else ""
        noisy = noisy or bool(noise)
        spread = f"{fmt_rate(s['req_s_min'])}-{fmt_rate(s['req_s_max'])}"
        print(f"{label:<32} {fmt_rate(s['req_s']):>8} {spread:>15} {s['mib_s']:>8.1f} {fmt_us(s['p50_us']):>9}"
              f" {fmt_us(s['p99_us']):>9} {s['cpu_us_per_echo']:>12.2f} {ratio:>8}"
              f" {s['server_util'] * 100:>7.0f}% {s['loadgen_util'] * 100:>7.0f}%{mark:1}"
              f" {s['kthreads_util'] * 100:>4.0f}% {s['other_util_max'] * 100:>4.0f}%{noise}")
    if saturated:
        print("* the load generator's core was >= 95% busy: req/s is (also) its limit; CPU us/echo is unaffected")
    if noisy:
        print(f"! other work used >= {OTHER_LOAD_WARN:.0%} of a core in some run (column 'other', worst run):"
              " another process competed for the CPUs, so req/s and latency are unreliable there")


# --------------------------------------------------------------------------------------------------


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int_list, default=[1024, 102400], help="message sizes in bytes (default 1024,102400)")
    ap.add_argument("--conns", type=int_list, default=[100], help="connection counts (default 100)")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each window (default 0.5)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per contender and cell (default 3)")
    ap.add_argument("--contender", choices=[n for n, _ in CONTENDERS], action="append", help="run only this one (repeatable)")
    ap.add_argument("--no-pin", action="store_true", help="let the scheduler place server and loadgen")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.repeats < 1:
        ap.error("--duration must be > 0, --warmup >= 0, --repeats >= 1")

    t_start = time.monotonic()
    cc = shutil.which(os.environ.get("CC") or "cc")
    print("levent stream benchmark (TCP echo on 127.0.0.1)")
    print(f"python {platform.python_version()} ({platform.python_implementation()}) at {sys.executable}")
    print(f"platform {platform.platform()}, {os.cpu_count()} CPUs")
    found, loadgen = prepare(cc)
    try:
        libevent = subprocess.run(["pkg-config", "--modversion", "libevent_core"], capture_output=True,
                                  text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        libevent = ""
    print(f"compiler {cc or 'none'}; libevent {libevent or 'unknown'} (pkg-config libevent_core)")
    pinned, why = (False, "--no-pin") if args.no_pin else affinity_ok()
    print(f"server pinned to CPU {SERVER_CPU}, loadgen to CPU {LOADGEN_CPU}" if pinned else f"not pinned: {why}")
    wanted = args.contender or [n for n, _ in CONTENDERS]
    skipped = {}
    for name, label in CONTENDERS:
        cmd, reason = found[name]
        if name not in wanted:
            skipped[name] = "not selected (--contender)"
        elif cmd is None:
            skipped[name] = reason
            print(f"skipping {label}: {reason}")
    if loadgen is None:
        print("nothing can run without the load generator", file=sys.stderr)
        return 1
    active = [n for n, _ in CONTENDERS if n not in skipped]
    cells = [(size, conns) for size in args.sizes for conns in args.conns]
    per_run = args.warmup + args.duration
    print(f"{len(cells)} cells x {len(active)} contenders x {args.repeats} repeats, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured each "
          f"(about {len(cells) * len(active) * args.repeats * (per_run + 0.5) / 60:.1f} min)")

    report = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "libevent": libevent,
        "pinned": pinned,
        "duration": args.duration,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "contenders": {name: {"cmd": found[name][0], "skipped": skipped.get(name)} for name, _ in CONTENDERS},
        "cells": [],
    }
    failed = False
    for size, conns in cells:
        runs = {name: [] for name in active}
        errors = {}
        for rep in range(args.repeats):
            for name in active:
                if name in errors:
                    continue  # a contender that failed in this cell is not run again in it
                cmd = found[name][0]
                try:
                    runs[name].append(run_one(cmd, loadgen, size, conns, args.duration, args.warmup, pinned))
                except RunError as exc:
                    errors[name] = str(exc)
                    failed = True
                    print(f"  {size} B x {conns} / {name} run {rep + 1}: {exc}", file=sys.stderr)
        summaries = {name: summarize(rs) for name, rs in runs.items() if rs and name not in errors}
        print_cell(size, conns, summaries, errors, skipped)
        report["cells"].append({
            "size": size,
            "conns": conns,
            "runs": runs,
            "summaries": summaries,
            "errors": errors,
            "cpu_ratio_to_c_raw": {
                name: s["cpu_us_per_echo"] / summaries[BASELINE]["cpu_us_per_echo"]
                for name, s in summaries.items() if BASELINE in summaries
            },
        })
        sys.stdout.flush()

    elapsed = time.monotonic() - t_start
    report["elapsed_s"] = elapsed
    print(f"\ntotal wall time {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"raw results written to {args.json}")
    if failed:
        print("some runs FAILED (see above)", file=sys.stderr)
        return 1
    return 0


def _terminated(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the finally below, which stops every child


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    finally:
        stop_all()
    sys.exit(code)
