"""The benchmark's tables, built once from a results dict and rendered as text or Markdown."""
import statistics

from . import echo, loops
from .sendfile import tables as sendfile_tables

LOOP_REFERENCE = "asyncio"


class Table:
    def __init__(self, title, headers, notes=()):
        self.title = title
        self.headers = headers
        self.rows = []
        self.notes = list(notes)

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_us(x):
    if abs(x) >= 10_000:
        return f"{x / 1e3:.1f} ms"
    return f"{x:.0f} us"


def fmt_size(n):
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def cell_title(size, conns):
    return f"{fmt_size(size)} x {conns} conn{'s' if conns != 1 else ''}"


def fmt_ratio(x):
    return f"{x:.2f}x" if x else "n/a"


def echo_ratios(report, name, summaries, section="echo"):
    """(asyncio CPU / this CPU, this CPU / C ceiling CPU); None where the reference did not run."""
    s = summaries[name]
    style = report[section]["contenders"][name]["style"]
    ref = summaries.get(echo.REFERENCE[style])
    ceiling = summaries.get(echo.CEILING[style]) if echo.CEILING[style] else None
    return (ref["cpu_us_per_echo"] / s["cpu_us_per_echo"] if ref else None,
            s["cpu_us_per_echo"] / ceiling["cpu_us_per_echo"] if ceiling else None)


def _running(contenders):
    return [(name, info) for name, info in contenders.items() if not info["skipped"]]


def echo_tables(report, section="echo"):
    """Per cell: every figure of every contender. Then, for plain echo, two overviews across cells.
    ``section``: "echo", or "tls" (the same over TLS: no C ceiling)."""
    part = report.get(section) or {"contenders": {}, "cells": []}
    contenders = part["contenders"]
    cells = part["cells"]
    tables = []
    saturated = noisy = False
    has_ceiling = section != "tls"     # no C TLS echo server to compare with
    for cell in cells:
        t = Table(f"{'TLS echo' if section == 'tls' else 'echo'}, {cell_title(cell['size'], cell['conns'])}",
                  ["contender", "req/s", "min-max", "MiB/s", "p50", "p99", "CPU us/echo", "user", "x asyncio"]
                  + ["x C"] * has_ceiling + ["other"])
        for name, info in _running(contenders):
            s = cell["summaries"].get(name)
            if s is None:
                t.add(info["label"], f"FAILED: {cell['errors'].get(name, 'not run')}", *[""] * (len(t.headers) - 2))
                continue
            vs_asyncio, vs_c = echo_ratios(report, name, cell["summaries"], section)
            mark = "*" if s["loadgen_util"] >= 0.95 else ""
            noise = "!" if s["other_util_max"] >= echo.OTHER_LOAD_WARN else ""
            saturated, noisy = saturated or bool(mark), noisy or bool(noise)
            spread = f"{fmt_rate(s['req_s_min'])}-{fmt_rate(s['req_s_max'])}" if s["runs"] > 1 else ""
            t.add(info["label"], fmt_rate(s["req_s"]) + mark, spread, f"{s['mib_s']:.1f}", fmt_us(s["p50_us"]),
                  fmt_us(s["p99_us"]), f"{s['cpu_us_per_echo']:.2f}",
                  "" if s.get("user_us_per_echo") is None else f"{s['user_us_per_echo']:.2f}",
                  fmt_ratio(vs_asyncio),
                  *[fmt_ratio(vs_c)] * has_ceiling, f"{s['other_util_max']:.0%}{noise}")
        tables.append(t)
    if len(cells) > 1 and section == "echo":
        # One row per cell, one column per contender: narrow enough for a terminal.
        running = _running(contenders)
        cpu = Table("overview: server CPU us per echo (lower is better)", ["cell"] + [n for n, _ in running])
        rate = Table("overview: req/s (higher is better)", ["cell"] + [n for n, _ in running])
        for cell in cells:
            found = [cell["summaries"].get(name) for name, _ in running]
            title = cell_title(cell["size"], cell["conns"])
            cpu.add(title, *(f"{s['cpu_us_per_echo']:.2f}" if s else "failed" for s in found))
            rate.add(title, *(fmt_rate(s["req_s"]) if s else "failed" for s in found))
        tables += [cpu, rate]
    rivals = rival_table(part, cells, section)
    if rivals:
        tables.append(rivals)
    user = (" user: the part of it spent in user space, outside system calls, over all the repeats together"
            " (the kernel's share, the socket work, is about the same for every server that makes the same"
            " calls).")
    notes = ["CPU us/echo: the server's own CPU time per echo, median of the repeats." + user
             + " x asyncio: how many times less CPU than asyncio of the same style (Protocol or streams). x C:"
             " CPU relative to the C ceiling (1.00x = as cheap as C). req/s, MiB/s and latency are the client's"
             " view."]
    if section == "tls":
        notes = ["CPU us/echo: the server's own CPU time per echo (TLS included: decrypting and encrypting"
                 " SIZE bytes), median of the repeats." + user
                 + " x asyncio: how many times less CPU than asyncio's TLS."
                 " The load generator is C with OpenSSL."]
    if saturated:
        notes.append("* the load generator's core was >= 95% busy: req/s is its limit there, not the server's;"
                     " CPU us/echo is unaffected.")
    if noisy:
        notes.append(f"! other processes used >= {echo.OTHER_LOAD_WARN:.0%} of a core during some run (column"
                     " 'other', worst run): req/s and latency of that row are unreliable.")
    notes += [f"skipped {info['label']}: {info['skipped']}" for info in contenders.values() if info["skipped"]]
    if tables:
        tables[-1].notes += notes
    return tables


def _median_with_interval(ratios):
    """"median [95% interval]", or "median (min-max)" under 6 ratios; "n/a" without any."""
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:.3f}"
    interval = echo.median_interval(ratios)
    if interval is None:
        return f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
    return f"{statistics.median(ratios):.3f} [{interval[0]:.2f}-{interval[1]:.2f}]"


def rival_table(part, cells, section="echo"):
    """levent's asyncio loop against uvloop, cell by cell: the median of the per-round CPU ratios with
    that median's confidence interval (their range under 6 rounds), then the ratio of their
    user-space CPU; and, where c-pycall ran, the same ratio for it (echo.PYCALL_FLOOR). None unless
    levent's loop and uvloop both ran in some cell."""
    running = dict(_running(part["contenders"]))
    pairs = [(mine, rival) for mine, rival in echo.RIVAL_OF.items() if mine in running and rival in running]
    if not pairs:
        return None
    floor = echo.PYCALL_FLOOR if all(name in running for name in echo.PYCALL_FLOOR) else None
    styles = [mine[len("levent-asyncio-"):] for mine, _ in pairs]
    t = Table(f"{'TLS echo' if section == 'tls' else 'overview'}: levent's asyncio loop against uvloop, server CPU"
              " per echo (median of the per-round ratios [its 95% confidence interval], or (min-max) under"
              " 6 rounds; lower is better)",
              ["cell"] + styles + [f"{style} user" for style in styles] + (["protocol floor"] if floor else []))
    for cell in cells:
        runs = cell["runs"]
        row = [_median_with_interval(echo.paired_ratios(runs.get(mine, []), runs.get(rival, [])))
               for mine, rival in pairs]
        for mine, rival in pairs:
            user, rival_user = (echo.user_us_per_echo(runs.get(name, [])) for name in (mine, rival))
            row.append(f"{user / rival_user:.3f}" if user and rival_user else "n/a")
        if floor:
            row.append(_median_with_interval(echo.paired_ratios(runs.get(floor[0], []), runs.get(floor[1], []))))
        t.add(cell_title(cell["size"], cell["conns"]), *row)
    t.notes.append("Each round runs every contender once, in an order that rotates from round to round; a ratio"
                   " compares two runs of one round. 0.90 = levent's server used 10% less CPU per echo. The"
                   " interval is the one of the median (order statistics, no assumed distribution): a"
                   " threshold inside it is neither met nor missed by that many rounds. user:"
                   " the same for the user-space part alone (all rounds together), the part the loop's own code"
                   " decides; the rest is the kernel's socket work.")
    if floor:
        t.notes.append("protocol floor: the C server that makes only the Python call of a Protocol server"
                       " (c-pycall: the C ceiling's events and recv/send, and data_received() once per read)"
                       " against uvloop's Protocol server, the same way. An asyncio loop's Protocol server"
                       " does that server's user-space work and its own; it can differ in kernel work only by"
                       " reading and writing in other sizes.")
    return t


def proxy_tables(report):
    """Per cell: throughput through each proxy (load -> proxy -> C echo server) and its CPU per MiB."""
    section = report.get("proxy") or {"contenders": {}, "cells": []}
    tables = []
    for cell in section["cells"]:
        moved = 2 * cell["size"] / 2**20  # MiB through the proxy per echo: up and back
        t = Table(f"proxy, {cell_title(cell['size'], cell['conns'])} (load generator -> proxy -> echo server: C;"
                  " with a TLS upstream, levent's TLS echo)",
                  ["proxy", "MiB/s", "min-max", "p50", "p99", "CPU ms/MiB", "x asyncio", "x C", "other"])
        for name, info in _running(section["contenders"]):
            s = cell["summaries"].get(name)
            if s is None:
                t.add(info["label"], f"FAILED: {cell['errors'].get(name, 'not run')}", *[""] * 7)
                continue
            vs_asyncio, vs_c = echo_ratios(report, name, cell["summaries"], "proxy")
            mib = cell["size"] / 2**20
            spread = f"{s['req_s_min'] * mib:.0f}-{s['req_s_max'] * mib:.0f}" if s["runs"] > 1 else ""
            noise = "!" if s["other_util_max"] >= echo.OTHER_LOAD_WARN else ""
            t.add(info["label"], f"{s['mib_s']:.0f}", spread, fmt_us(s["p50_us"]), fmt_us(s["p99_us"]),
                  f"{s['cpu_us_per_echo'] / moved / 1e3:.3f}", fmt_ratio(vs_asyncio), fmt_ratio(vs_c),
                  f"{s['other_util_max']:.0%}{noise}")
        t.notes.append("MiB/s: echoed through the proxy (each byte crosses it twice). CPU ms/MiB: the proxy's own"
                       " CPU time per MiB it moved. x asyncio: how many times less CPU than the asyncio proxy;"
                       " x C: CPU relative to the C forwarder (1.00x = as cheap as C).")
        tables.append(t)
    tables and tables[-1].notes.extend(
        f"skipped {i['label']}: {i['skipped']}" for i in section["contenders"].values() if i["skipped"])
    return tables


def loop_tables(report):
    section = report["loops"]
    contenders = section["contenders"]
    tables = []
    for wl in section["workloads"]:
        title, unit = loops.WORKLOADS[wl["name"]]
        lateness = wl["name"] == "timer_lateness"
        if lateness:
            t = Table(f"{title} (N = {wl['n']:,})", ["loop", "p50 late", "p99 late", "min", "max", "early"])
        else:
            t = Table(f"{title} (N = {wl['n']:,})", ["loop", f"{unit}s/s", f"CPU us/{unit}", "x asyncio"])
        ref = wl["summaries"].get(LOOP_REFERENCE)
        for name, info in _running(contenders):
            s = wl["summaries"].get(name)
            if s is None:
                t.add(info["label"], f"FAILED: {wl['errors'].get(name, 'not run')}", *[""] * (len(t.headers) - 2))
            elif lateness:
                t.add(info["label"], fmt_us(s["lateness_p50_us"]), fmt_us(s["lateness_p99_us"]),
                      fmt_us(s["lateness_min_us"]), fmt_us(s["lateness_max_us"]),
                      f"{s['early']} EARLY" if s["early"] else "0")
            else:
                t.add(info["label"], fmt_rate(s["rate"]), f"{s['cpu_us_per_op']:.3f}",
                      fmt_ratio(ref and ref["cpu_us_per_op"] / s["cpu_us_per_op"]))
        if wl.get("other_util", 0) >= echo.OTHER_LOAD_WARN:
            t.notes.append(f"! other processes used {wl['other_util']:.0%} of a core during these runs: unreliable")
        tables.append(t)
    if tables:
        tables[-1].notes += [
            "x asyncio: how many times less CPU per operation than asyncio. Lateness: how long after its deadline"
            " a timer ran; EARLY counts timers that ran before their deadline, which is a bug."]
        tables[-1].notes += [f"skipped {i['label']}: {i['skipped']}" for i in contenders.values() if i["skipped"]]
    return tables


def all_tables(report):
    return (echo_tables(report) + proxy_tables(report) + echo_tables(report, "tls") + loop_tables(report)
            + sendfile_tables(report, Table))


def render_text(tables):
    out = []
    for t in tables:
        measured = [t.headers] + [r for r in t.rows if not (len(r) > 1 and r[1].startswith("FAILED"))]
        widths = [max(len(r[0]) for r in [t.headers] + t.rows)] + [
            max(len(r[i]) for r in measured) for i in range(1, len(t.headers))]
        out.append("")
        out.append(t.title)
        for row in [t.headers] + t.rows:
            if len(row) > 1 and row[1].startswith("FAILED"):
                out.append(f"{row[0]:<{widths[0]}}  {row[1]}")
                continue
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if t.notes:
            out += [""] + t.notes
    return "\n".join(out) + "\n"


def _md_cell(text):
    return text.replace("|", "\\|").replace("*", "\\*")


def render_markdown(tables):
    out = []
    for t in tables:
        out += ["", f"**{t.title}**", ""]
        out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
        out.append("| " + " | ".join(["---"] + ["---:"] * (len(t.headers) - 1)) + " |")
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        for note in t.notes:
            out += ["", _md_cell(note)]
    return "\n".join(out).lstrip("\n") + "\n"
