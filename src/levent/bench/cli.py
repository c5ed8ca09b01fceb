"""``python -m levent bench`` (alias ``levent-bench``): levent against the loops people compare it with.

Two suites, every contender measured side by side in one run:

  echo    TCP echo servers on 127.0.0.1 under a C load generator that checks every echoed byte.
          Cells: message size x concurrent connections. Reported per contender: req/s, MiB/s,
          p50/p99 latency and the server's CPU time per echo, the figure that separates servers on
          a small machine, where req/s of small messages is bound by the client and the kernel.
  proxy   TCP proxies between that load generator and an echo server (plain or TLS upstream).
  tls     TLS echo servers (ssl= on create_server) under the same load generator speaking TLS
          (OpenSSL): 1 KiB and 100 KiB x 10 connections, server CPU time per echo.
  loops   timers and callbacks: call_soon batch and chain, call_later, call_later + cancel, timer
          lateness (a loop that runs timers early is wrong, and it shows).
  sendfile  a 100 MiB file to a C receiver on 127.0.0.1: loop.sendfile() and loop.sock_sendfile()
          of levent and asyncio, and the read + write() loop of a loop without sendfile (uvloop).

Every server and worker is a fresh process, stopped by PID at the end of its run and on Ctrl-C;
every run is bounded in time. Runs during which other processes used the CPUs are flagged.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from . import echo, loops, procs, registry, tables
from . import sendfile as sendfile_suite

PROFILES = {
    # --quick: under a minute, the README's main job. --full: every cell, for the README's table.
    "quick": dict(sizes=[1024, 102400], conns=[10], proxy_sizes=[65536], proxy_conns=[10],
                  tls_sizes=[1024, 102400], tls_conns=[10],
                  duration=1.0, warmup=0.3, repeats=1, sendfile_size=100 << 20, sendfile_transfers=3,
                  loop_repeats=1, loop_n={"call_soon_batch": 100_000, "call_soon_chain": 100_000,
                                          "call_later": 50_000, "call_later_cancel": 50_000,
                                          "timer_lateness": 1000, "pingpong": 30_000}),
    "full": dict(sizes=[64, 1024, 16384, 102400], conns=[1, 10, 100], proxy_sizes=[65536], proxy_conns=[10],
                 tls_sizes=[1024, 102400], tls_conns=[10],
                 duration=1.5, warmup=0.3, repeats=3, sendfile_size=100 << 20, sendfile_transfers=5,
                 loop_repeats=3, loop_n={"call_soon_batch": 300_000, "call_soon_chain": 300_000,
                                         "call_later": 200_000, "call_later_cancel": 200_000,
                                         "timer_lateness": 2000, "pingpong": 100_000}),
}
WORKER_TIMEOUT = 60.0  # seconds a timer/callback worker may run
SEED = 20240601
SUITES = ("echo", "proxy", "tls", "loops", "sendfile")


# --------------------------------------------------------------------------------------------------
# Progress


class Progress:
    """A progress bar on stderr, weighted by each step's expected seconds; plain lines when stderr is
    not a terminal."""

    def __init__(self, weights, stream=None):
        stream = stream or sys.stderr
        self.total = sum(weights) or 1.0
        self.done = 0.0
        self.count = len(weights)
        self.index = 0
        self.stream = stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self.last_pct = -1

    def step(self, weight, label):
        self.index += 1
        fraction = self.done / self.total
        elapsed = time.monotonic() - self.t0
        eta = f"{elapsed / fraction * (1 - fraction):.0f} s left" if fraction > 0.02 else "..."
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.index}/{self.count} "
                              f"{eta:>11}  {label[:60]:<60}")
            self.stream.flush()
        elif int(fraction * 10) > self.last_pct:
            self.last_pct = int(fraction * 10)
            self.stream.write(f"{fraction:4.0%} ({self.index}/{self.count}, {eta}) {label}\n")
            self.stream.flush()
        self.done += weight

    def note(self, text):
        """A line that stays (an error), without breaking the bar."""
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# --------------------------------------------------------------------------------------------------
# Selection


def parse_only(text):
    """--only: names of suites, contenders (echo servers, proxies), loops and loop workloads; a name
    also matches the contenders it prefixes before a dash ("asyncio" -> asyncio-protocol, ...)."""
    wanted = {"suites": set(), "servers": set(), "loops": set(), "workloads": set(), "sendfile": set()}
    server_names = [c.name for c in echo.CONTENDERS]
    sendfile_names = [c.name for c in sendfile_suite.CONTENDERS]
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        hit = False
        if token in SUITES:
            wanted["suites"].add(token)
            hit = True
        if token in loops.WORKLOADS:
            wanted["workloads"].add(token)
            hit = True
        for name in server_names:
            if name == token or name.startswith(token + "-"):
                wanted["servers"].add(name)
                hit = True
        for name in sendfile_names:
            if name == token or name.startswith(token + "-"):
                wanted["sendfile"].add(name)
                hit = True
        if token in registry.LOOPS:
            wanted["loops"].add(token)
            hit = True
        if not hit:
            raise argparse.ArgumentTypeError(
                f"--only: unknown name {token!r}; choose from suites {', '.join(SUITES)}; servers "
                f"{', '.join(server_names)}; loops {', '.join(registry.LOOPS)}; workloads {', '.join(loops.WORKLOADS)};"
                f" sendfile senders {', '.join(sendfile_names)}")
    return wanted


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m levent bench",
                                 description="levent's benchmark suite (also the levent-bench command): levent"
                                             " against the loops people compare it with.",
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    profile = ap.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="the default: 1 KiB and 100 KiB x 10 connections, 1 repeat, small loop workloads (under a minute)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="64 B, 1 KiB, 16 KiB, 100 KiB x 1, 10, 100 connections, 3 repeats (about 10 minutes on 2 cores)")
    ap.add_argument("--only", type=parse_only, metavar="NAMES",
                    help="comma-separated suites (echo, loops), contenders, loops or workloads to run")
    ap.add_argument("--sizes", type=int_list, metavar="BYTES,...",
                    help="echo message sizes (the proxy suite: 64 KiB; tls: 1 KiB and 100 KiB)")
    ap.add_argument("--conns", type=int_list, metavar="N,...", help="echo concurrent connections (proxy and tls: 10)")
    ap.add_argument("--duration", type=float, metavar="S", help="measured seconds per echo run")
    ap.add_argument("--warmup", type=float, metavar="S", help="unmeasured seconds before each echo window")
    ap.add_argument("--repeats", type=int, metavar="N", help="runs per contender and cell (and per loop workload)")
    ap.add_argument("--json", metavar="PATH", default="levent-bench.json", help="results file (default %(default)s)")
    ap.add_argument("--plot", metavar="PATH",
                    help="plot file: .png needs matplotlib (pip install levent[plot]), else .svg "
                         "(default levent-bench.png with matplotlib, else levent-bench.svg)")
    ap.add_argument("--render", metavar="RESULTS",
                    help="run nothing: print the tables of a saved results file (and write --markdown, --plot)")
    ap.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown (for a README)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate CPUs")
    ap.add_argument("--ready-timeout", type=float, default=echo.READY_TIMEOUT, metavar="S",
                    help="seconds a server may take to print 'ready' (default %(default)g)")
    return ap


def settings(args):
    s = dict(PROFILES[args.profile or "quick"])
    s["loop_n"] = dict(s["loop_n"])
    for key in ("sizes", "conns", "duration", "warmup"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.repeats is not None:
        s["repeats"] = s["loop_repeats"] = args.repeats
    return s


# --------------------------------------------------------------------------------------------------
# Facts about the machine and versions


def machine_facts():
    facts = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            facts["cpu_model"] = models[0]
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            facts["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        facts["cpus_allowed"] = sorted(os.sched_getaffinity(0))
    return facts


def versions(toolchain):
    v = {"python": f"{platform.python_implementation()} {platform.python_version()}", "executable": sys.executable}
    try:
        import levent

        v["levent"] = levent.__version__
        v["libevent"] = levent.libevent_version().string
        v["levent_backends"] = levent.supported_methods()
    except Exception as exc:  # reported; the other contenders still run
        v["levent"] = f"not importable: {type(exc).__name__}: {exc}"
    try:
        import uvloop

        v["uvloop"] = uvloop.__version__
    except ImportError:
        v["uvloop"] = None
    v["compiler"] = toolchain.version()
    return v


# --------------------------------------------------------------------------------------------------
# The loop workloads' runner


def run_loop_worker(workload, loop, n, seed, pinned, timeout=WORKER_TIMEOUT):
    """One workload in a fresh interpreter. Returns the result dict; raises echo.RunError."""
    err = tempfile.TemporaryFile()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = procs.system_busy_seconds()
    proc = procs.spawn([sys.executable, "-m", "levent.bench.loops", workload, loop, str(n), str(seed)],
                       stderr=err, env=procs.python_env())
    try:
        if pinned:
            procs.pin(proc.pid, procs.SERVER_CPU)
        line = procs.LineReader(proc.stdout).readline(time.monotonic() + timeout)
        try:
            status = proc.wait(timeout=5 if line else 0.1)
        except subprocess.TimeoutExpired:
            status = None
        if line is None or not line.startswith("{"):
            if status is None:
                raise echo.RunError(f"no result within {timeout:g} s; stopped")
            raise echo.RunError(f"exit {status}: {procs.tail(err)}")
        result = json.loads(line)
    finally:
        procs.stop(proc)
        err.close()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    result["process_cpu_s"] = worker_cpu
    result["busy_cpu_s"] = procs.system_busy_seconds() - busy0
    return result


def summarize_loop(runs):
    rates = [r["count"] / r["wall"] for r in runs]
    cpus = [r["cpu"] / r["count"] * 1e6 for r in runs]
    out = {
        "rate": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "cpu_us_per_op": statistics.median(cpus),
        "cpu_us_per_op_min": min(cpus),
        "cpu_us_per_op_max": max(cpus),
        "runs": len(runs),
    }
    if all("lateness_us" in r for r in runs):
        for key in ("p50", "p99"):
            out[f"lateness_{key}_us"] = statistics.median(r["lateness_us"][key] for r in runs)
        out["lateness_min_us"] = min(r["lateness_us"]["min"] for r in runs)
        out["lateness_max_us"] = max(r["lateness_us"]["max"] for r in runs)
        out["early"] = sum(r["lateness_us"]["early"] for r in runs)
    return out


# --------------------------------------------------------------------------------------------------
# The run


def plan(args, toolchain):
    """What runs: ({server contender: (command, None) or (None, why not)} for echo servers and proxies,
    {loop: likewise}, [workloads], {suite: its load generator's path} for the suites that have one,
    {sendfile sender: why not or None})."""
    only = args.only or {"suites": set(), "servers": set(), "loops": set(), "workloads": set(), "sendfile": set()}
    # A suite runs when named, or when one of its contenders or workloads is; nothing named: all.
    suites = set(only["suites"])
    suites.update(echo.contender(name).kind for name in only["servers"])
    if only["loops"] or only["workloads"]:
        suites.add("loops")
    if only.get("sendfile"):
        suites.add("sendfile")
    suites = suites or set(SUITES)
    sendfile_plan = {}
    if "sendfile" in suites:
        sendfile_plan = {name: why for name, why in sendfile_suite.plan().items()
                         if not only.get("sendfile") or "sendfile" in only["suites"] or name in only["sendfile"]}
    server_plan, loop_plan, loadgens, loadgen_errors = {}, {}, {}, {}
    for kind in suites & set(echo.KINDS):
        try:
            loadgens[kind] = toolchain.loadgen(kind)
        except echo.Skip as exc:
            loadgen_errors[kind] = str(exc)
    if suites & set(echo.KINDS):
        for c in echo.CONTENDERS:
            if c.kind not in suites or (only["servers"] and c.name not in only["servers"]):
                continue
            why = f"no load generator: {loadgen_errors[c.kind]}" if c.kind in loadgen_errors else None
            if not why and c.style in echo.UPSTREAMS:
                try:
                    echo.UPSTREAMS[c.style](toolchain)
                except echo.Skip as exc:
                    why = f"no upstream echo server: {exc}"
            if why:
                server_plan[c.name] = (None, why)
                continue
            try:
                server_plan[c.name] = (c.command(toolchain), None)
            except echo.Skip as exc:
                server_plan[c.name] = (None, str(exc))
    if "loops" in suites:
        for name in registry.LOOPS:
            if only["loops"] and name not in only["loops"]:
                continue
            why = registry.missing(name)
            loop_plan[name] = (None, why) if why else (name, None)
    workloads = [w for w in loops.WORKLOADS if not only["workloads"] or w in only["workloads"]]
    return server_plan, loop_plan, workloads, loadgens, sendfile_plan


def upstream_command(name, toolchain):
    """The echo server a proxy contender forwards to; None for an echo contender."""
    style = echo.contender(name).style
    return echo.UPSTREAMS[style](toolchain) if style in echo.UPSTREAMS else None


def run(args, out=None):
    """Runs the benchmark ``args`` describe, printing to ``out`` (stdout); returns the exit status."""
    out = out or sys.stdout
    if args.render:
        with open(args.render) as f:
            render(json.load(f), args, out)
        return 0
    cfg = settings(args)
    if cfg["duration"] <= 0 or cfg["warmup"] < 0 or cfg["repeats"] < 1:
        raise SystemExit("--duration must be > 0, --warmup >= 0, --repeats >= 1")
    started = time.monotonic()
    bindir = tempfile.mkdtemp(prefix="levent-bench-")
    try:
        return _run(args, cfg, bindir, started, out)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def _run(args, cfg, bindir, started, out):
    toolchain = echo.Toolchain(bindir)
    server_plan, loop_plan, workloads, loadgens, sendfile_plan = plan(args, toolchain)
    pinned, pin_why = (False, "--no-pin") if args.no_pin else procs.affinity_ok()
    heavy, other_share = procs.busy_processes(0.5)

    report = {
        "format": "levent-bench/1",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "profile": args.profile or "quick",
        "settings": cfg,
        "machine": machine_facts(),
        "versions": versions(toolchain),
        "pinned": pinned,
        "pinned_why_not": pin_why or None,
        "load_before": {"other_cores": other_share,
                        "processes": [{"name": n, "pid": p, "cores": s} for n, p, s in heavy]},
        "echo": {"contenders": {}, "cells": []},
        "proxy": {"contenders": {}, "cells": []},
        "tls": {"contenders": {}, "cells": []},
        "loops": {"contenders": {}, "workloads": []},
        "sendfile": {"contenders": {}, "cells": []},
    }
    for c in echo.CONTENDERS:
        if c.name in server_plan:
            cmd, why = server_plan[c.name]
            report[c.kind]["contenders"][c.name] = {"label": c.label, "style": c.style, "command": cmd, "skipped": why}
    for name, (_, why) in loop_plan.items():
        report["loops"]["contenders"][name] = {"label": registry.LOOPS[name].label, "skipped": why}
    for name, why in sendfile_plan.items():
        report["sendfile"]["contenders"][name] = {"label": sendfile_suite.contender(name).label, "skipped": why}

    v = report["versions"]
    print(f"levent bench ({report['profile']}): levent {v.get('levent')}, libevent {v.get('libevent')},"
          f" {v['python']}, uvloop {v['uvloop'] or 'not installed'}", file=out)
    m = report["machine"]
    print(f"{m['platform']}, {m['cpus']} CPUs ({m.get('cpu_model', 'unknown model')});"
          f" {'server on CPU 0, client on CPU 1' if pinned else 'not pinned: ' + pin_why}", file=out)
    if other_share >= echo.OTHER_LOAD_WARN:
        names = ", ".join(f"{n} (pid {p}, {s:.0%})" for n, p, s in heavy[:5]) or "unattributed (kernel, steal)"
        print(f"WARNING: the machine is busy before the start: {other_share:.0%} of a core used by {names}."
              " Results will be flagged where it competes.", file=out)
    out.flush()

    active = {kind: [n for n, (cmd, _) in server_plan.items() if cmd and echo.contender(n).kind == kind]
              for kind in echo.KINDS}
    loop_active = [n for n, (cmd, _) in loop_plan.items() if cmd]
    cells = {"echo": [(size, conns) for size in cfg["sizes"] for conns in cfg["conns"]] if active["echo"] else [],
             "proxy": [(size, conns) for size in cfg["proxy_sizes"] for conns in cfg["proxy_conns"]]
             if active["proxy"] else [],
             "tls": [(size, conns) for size in cfg["tls_sizes"] for conns in cfg["tls_conns"]] if active["tls"] else []}
    server_weight = cfg["warmup"] + cfg["duration"] + 0.5
    if not loop_active:
        workloads = []
    senders = [n for n, why in sendfile_plan.items() if not why]
    sendfile_weight = 0.3 * (cfg["sendfile_transfers"] + 1) + 0.5
    progress = Progress([server_weight] * sum(len(cells[k]) * len(active[k]) for k in echo.KINDS) * cfg["repeats"]
                        + [1.0] * (len(workloads) * len(loop_active) * cfg["loop_repeats"])
                        + [sendfile_weight] * (len(senders) * cfg["repeats"]))
    failed = False
    try:
        for kind in echo.KINDS:
            for size, conns in cells[kind]:
                runs = {name: [] for name in active[kind]}
                errors = {}
                title = f"{kind} {tables.cell_title(size, conns)}"
                for rep in range(cfg["repeats"]):
                    for name in rotated(active[kind], rep):
                        progress.step(server_weight, f"{title}: {name} ({rep + 1}/{cfg['repeats']})")
                        if name in errors:
                            continue  # a contender that failed in this cell is not run again in it
                        try:
                            run = echo.run_one(
                                server_plan[name][0], loadgens[kind], size, conns, cfg["duration"], cfg["warmup"], pinned,
                                args.ready_timeout, upstream_command(name, toolchain))
                            run["round"] = rep
                            runs[name].append(run)
                        except echo.RunError as exc:
                            errors[name] = str(exc)
                            failed = True
                            progress.note(f"{title}, {name}: {exc}")
                report[kind]["cells"].append({
                    "size": size, "conns": conns, "runs": runs, "errors": errors,
                    "summaries": {n: echo.summarize(rs) for n, rs in runs.items() if rs and n not in errors},
                })
        for workload in workloads:
            runs = {name: [] for name in loop_active}
            errors = {}
            n = cfg["loop_n"][workload]
            for rep in range(cfg["loop_repeats"]):
                for name in rotated(loop_active, rep):
                    progress.step(1.0, f"{workload}: {name} ({rep + 1}/{cfg['loop_repeats']})")
                    if name in errors:
                        continue
                    try:
                        runs[name].append(run_loop_worker(workload, name, n, SEED + rep, pinned))
                    except echo.RunError as exc:
                        errors[name] = str(exc)
                        failed = True
                        progress.note(f"{workload}, {name}: {exc}")
            all_runs = [r for rs in runs.values() for r in rs]
            wall = sum(r["wall"] for r in all_runs)
            other = sum(max(0.0, r["busy_cpu_s"] - r["process_cpu_s"]) for r in all_runs)
            report["loops"]["workloads"].append({
                "name": workload, "n": n, "runs": runs, "errors": errors,
                "summaries": {k: summarize_loop(rs) for k, rs in runs.items() if rs and k not in errors},
                # /proc/stat counts 10 ms ticks: over short runs, only a sizeable share means anything
                "other_util": other / wall if wall > 0.5 else 0.0,
            })
        if senders:
            try:
                cell = sendfile_suite.run_suite(toolchain, senders, cfg["sendfile_size"], cfg["sendfile_transfers"],
                                                cfg["repeats"], pinned, progress, sendfile_weight)
                failed = failed or bool(cell["errors"])
                report["sendfile"]["cells"].append(cell)
            except (echo.Skip, echo.RunError) as exc:
                failed = True
                progress.note(f"sendfile: {exc}")
    finally:
        progress.close()
    report["elapsed_s"] = time.monotonic() - started

    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    render(report, args, out)
    print(f"results: {args.json}\ntotal {report['elapsed_s']:.0f} s", file=out)
    if failed:
        print("some runs FAILED (see above)", file=out)
    return 1 if failed else 0


def rotated(names, rep):
    """The run order of round ``rep``: each round starts one contender later, so that none always runs
    first or right after the same other one (what a run leaves behind, in the kernel's socket and page
    caches, would otherwise always favour or burden the same contender)."""
    k = rep % len(names) if names else 0
    return names[k:] + names[:k]


def render(report, args, out):
    """The tables on ``out``, and the Markdown and plot files ``args`` ask for."""
    results = tables.all_tables(report)
    out.write(tables.render_text(results))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(tables.render_markdown(results))
        print(f"tables as Markdown: {args.markdown}", file=out)
    if report["echo"]["cells"]:
        from .plot import write_plot

        path, note = write_plot(args.plot or default_plot_path(), plot_data(report))
        print(f"plot: {path}" + (f" ({note})" if note else ""), file=out)


def default_plot_path():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "levent-bench.svg"
    return "levent-bench.png"


def plot_data(report):
    m, v = report["machine"], report["versions"]
    repeats = report["settings"]["repeats"]
    contenders = [{"name": n, "label": i["label"]} for n, i in report["echo"]["contenders"].items() if not i["skipped"]]
    return {
        "title": "levent bench: TCP echo on 127.0.0.1",
        "subtitle": (f"{m['platform']}, {m['cpus']} CPUs, {v['python']}, libevent {v.get('libevent')},"
                     f" {report['date'][:10]} (--{report['profile']}, {repeats} repeat{'s' if repeats != 1 else ''})"),
        "contenders": contenders,
        "cells": [{"size": c["size"], "conns": c["conns"], "results": c["summaries"]} for c in report["echo"]["cells"]],
    }


def _terminated(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through main's finally, which stops every child


def main(argv=None):
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started is stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
