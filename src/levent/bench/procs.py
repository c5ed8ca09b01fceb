"""Child processes and CPU accounting for the benchmark harness.

Every process the harness starts goes through :func:`spawn` and is stopped by PID through
:func:`stop` (SIGTERM, then SIGKILL): at the end of its run, on errors, and on Ctrl-C, where
:func:`stop_all` takes whatever is left. On Linux a child also gets SIGTERM if the harness dies
without cleaning up, even by SIGKILL (PR_SET_PDEATHSIG).

CPU time comes from /proc/PID/stat, in clock ticks (10 ms at USER_HZ=100): over a window of a second
or more that is under 1%. (``schedstat`` would count nanoseconds, but kernels built without
schedstats report zeros there, as this project's machines do.)
"""
import os
import select
import signal
import socket
import subprocess
import sys
import time

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

LIVE: "dict[int, subprocess.Popen[bytes]]" = {}  # pid -> Popen: every process started and not yet reaped

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PF_KTHREAD = 0x00200000


def _child_setup():
    """In the child before exec: SIGINT unblocked again (see spawn), and SIGTERM if the harness dies
    without cleaning up, even by SIGKILL (Linux: PR_SET_PDEATHSIG)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def python_env():
    """The environment for Python children: no asyncio debug mode, which would slow every loop."""
    env = dict(os.environ)
    for name in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC"):
        env.pop(name, None)
    return env


def spawn(cmd, **kwargs):
    """Popen with stdout piped, stdin closed, tracked in LIVE until :func:`stop`.

    SIGINT is blocked while Popen forks and waits for the exec: a Ctrl-C there would raise out of
    Popen with the child running and unknown to LIVE. It arrives once the child is tracked."""
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=_child_setup,
                                **kwargs)
        LIVE[proc.pid] = proc
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return proc


def stop(proc, timeout=STOP_TIMEOUT):
    """SIGTERM to proc's PID, SIGKILL after ``timeout`` s; reaps it. Returns its exit status.
    Interrupted (Ctrl-C), the process stays in LIVE for :func:`stop_all`."""
    try:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        if proc.returncode is not None:
            LIVE.pop(proc.pid, None)
            if proc.stdout:
                proc.stdout.close()
    return proc.returncode


def stop_all():
    """Stops every process still in LIVE; a second Ctrl-C meanwhile SIGKILLs the rest at once."""
    try:
        for proc in list(LIVE.values()):
            stop(proc)
    except KeyboardInterrupt:
        for proc in list(LIVE.values()):
            proc.kill()
            proc.wait()
            LIVE.pop(proc.pid, None)
        raise


def run_to_end(cmd, timeout):
    """Runs a helper command (the compiler) to its end: (exit status, stdout, stderr) as text.

    It runs in a process group of its own, killed whole on timeout or Ctrl-C: cc's own children
    (cc1, as, ld) must not outlive the harness. Raises subprocess.TimeoutExpired after ``timeout``."""
    proc = spawn(cmd, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        _wait_group_gone(proc.pid)
        raise
    finally:
        if proc.returncode is not None:
            LIVE.pop(proc.pid, None)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _wait_group_gone(pgid, timeout=2.0):
    # SIGKILLed members (cc1, as) die when next scheduled, and orphans are reaped by init: on a busy
    # machine that outlasts the wait for cc itself, so wait (bounded) for the group to be empty.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.005)


class LineReader:
    """Lines from a pipe with a deadline (select + os.read: no buffering surprises)."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, deadline):
        """A line without its newline; None at EOF or once the deadline passed."""
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
    """The last lines a child wrote to a temporary file, joined for one line of output."""
    fileobj.seek(0)
    lines = fileobj.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-n:]) if lines else "no output on stderr"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(path):
    with open(path) as f:
        return f.read().rpartition(")")[2].split()  # after "(comm)", which may hold spaces


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), in seconds."""
    return sum(cpu_split_seconds(pid))


def cpu_split_seconds(pid):
    """(user, system) CPU time of a process (all its threads), in seconds."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime: fields 14 and 15 of proc(5)


def system_busy_seconds():
    """CPU time all CPUs spent not idle (/proc/stat: user nice system irq softirq steal), in seconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def kthreads_seconds():
    """CPU time of the kernel threads (kworkers, ksoftirqd: work the traffic causes), in seconds."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{entry}/stat")
        except OSError:  # gone meanwhile
            continue
        if int(fields[6]) & PF_KTHREAD:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def process_table():
    """{pid: (name, cpu seconds)} of every process, from /proc/PID/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text.rpartition(")")[2].split()
        table[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def busy_processes(seconds=0.5, exclude=()):
    """What else keeps the machine busy: ([(name, pid, share of one core)], total share), measured
    over ``seconds``; the harness and ``exclude`` PIDs left out."""
    mine = {os.getpid(), *exclude}
    before, busy0, t0 = process_table(), system_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    after, busy1, t1 = process_table(), system_busy_seconds(), time.monotonic()
    window = t1 - t0
    own = sum(after[p][1] - before.get(p, (None, 0.0))[1] for p in mine if p in after)
    top = sorted(((after[p][1] - before[p][1]) / window, after[p][0], p)
                 for p in after if p in before and p not in mine)
    heavy = [(name, pid, share) for share, name, pid in reversed(top) if share >= 0.05]
    return heavy, max(0.0, (busy1 - busy0 - own) / window)


SERVER_CPU, CLIENT_CPU = 0, 1


def affinity_ok():
    """(True, "") when server and client can be pinned to CPUs 0 and 1, else (False, why not)."""
    if not hasattr(os, "sched_setaffinity"):
        return False, "os.sched_setaffinity does not exist here"
    try:
        allowed = os.sched_getaffinity(0)
        if not {SERVER_CPU, CLIENT_CPU} <= allowed:
            return False, f"CPUs {SERVER_CPU} and {CLIENT_CPU} are not both allowed (allowed: {sorted(allowed)})"
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
