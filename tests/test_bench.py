"""The benchmark harness (levent.bench) is itself tested: its load generator catches a corrupted
echo, a contender that fails to start is reported rather than waited on forever, and no process it
started outlives a run or a Ctrl-C. Real servers and real sockets on 127.0.0.1."""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from levent.bench import cli, echo, loops, procs, registry, tables
from levent.bench import sendfile as sendfile_suite

from conftest import sigint_default, wait_until


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory):
    return echo.Toolchain(str(tmp_path_factory.mktemp("bench-bin")))


@pytest.fixture(scope="module")
def loadgen(toolchain):
    try:
        return toolchain.build("loadgen", ["-lm"])
    except echo.Skip as exc:
        pytest.skip(f"the load generator cannot be built here: {exc}")


@pytest.fixture(scope="module")
def c_echo_server(toolchain):
    """The C libevent echo server (c-raw, and the proxy suite's upstream), built against the system
    libevent: absent without libevent-dev, or where ci/wheel.sh hides it to test a wheel."""
    try:
        return toolchain.build("echo_raw", toolchain.pkg_config("libevent_core"))
    except echo.Skip as exc:
        pytest.skip(f"the C libevent echo server cannot be built here: {exc}")


@pytest.fixture(autouse=True)
def no_process_left():
    yield
    assert not procs.LIVE, f"processes left running: {list(procs.LIVE)}"


class ThreadedEcho:
    """An echo server in this process; ``corrupt_at`` flips the byte at that stream offset; with
    ``tls`` (a server SSLContext) it speaks TLS, and corrupts the plaintext."""

    def __init__(self, corrupt_at=None, tls=None):
        self.corrupt_at = corrupt_at
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        if self.tls is not None:
            conn.settimeout(5)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        conn.settimeout(0.1)
        offset = 0
        with conn:
            while not self.stopping:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                if self.corrupt_at is not None and offset <= self.corrupt_at < offset + len(data):
                    i = self.corrupt_at - offset
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                offset += len(data)
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self):
        self.stopping = True
        self.listener.close()
        for t in self.threads:
            t.join(5)


def run_against(loadgen, server, conns=2, size=1000):
    try:
        return echo.run_loadgen(loadgen, server.port, size, conns, 0.3, 0.1, pinned=False)
    finally:
        server.close()


def test_loadgen_counts_an_honest_echo(loadgen):
    report = run_against(loadgen, ThreadedEcho())
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * 1000


@pytest.mark.parametrize("corrupt_at", [0, 999, 12345])
def test_loadgen_detects_a_corrupted_echo(loadgen, corrupt_at):
    with pytest.raises(echo.RunError, match="loadgen exit 3"):
        run_against(loadgen, ThreadedEcho(corrupt_at=corrupt_at), conns=1)


@pytest.fixture(scope="module")
def loadgen_tls(toolchain):
    try:
        return toolchain.loadgen("tls")
    except echo.Skip as exc:
        pytest.skip(f"the TLS load generator cannot be built here: {exc}")


@pytest.fixture
def server_tls(certs):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


def test_tls_loadgen_counts_an_honest_echo(loadgen_tls, server_tls):
    report = run_against(loadgen_tls, ThreadedEcho(tls=server_tls), size=20000)
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * 20000


@pytest.mark.parametrize("corrupt_at", [0, 12345])
def test_tls_loadgen_detects_a_corrupted_echo(loadgen_tls, server_tls, corrupt_at):
    with pytest.raises(echo.RunError, match="loadgen exit 3"):
        run_against(loadgen_tls, ThreadedEcho(corrupt_at=corrupt_at, tls=server_tls), conns=1)


def test_tls_loadgen_reports_a_server_that_does_not_speak_tls(loadgen_tls):
    with pytest.raises(echo.RunError, match="loadgen exit 2.*SSL_connect"):
        run_against(loadgen_tls, ThreadedEcho(), conns=1)


def test_loadgen_reports_a_server_that_closes(loadgen):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def close_each():
        listener.settimeout(5)
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    t = threading.Thread(target=close_each, daemon=True)
    t.start()
    try:
        with pytest.raises(echo.RunError, match="loadgen exit 2"):
            echo.run_loadgen(loadgen, port, 100, 2, 0.3, 0.1, pinned=False)
    finally:
        listener.close()
        t.join(10)


def python_server(code):
    return [sys.executable, "-c", code, "--port"]


def live_children():
    """PIDs of this process's children (from /proc), zombies excluded."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.mark.parametrize("code, why", [
    ("import time; time.sleep(60)", r"no 'ready' within 1 s"),
    ("import sys; sys.exit(3)", r"exited with status 3"),
    ("print('listening maybe', flush=True); import time; time.sleep(60)", r"printed 'listening maybe'"),
    ("import sys; sys.stderr.write('cannot bind\\n'); sys.exit(1)", r"exited with status 1\): cannot bind"),
])
def test_a_server_that_does_not_start_is_reported_and_stopped(code, why):
    before = set(live_children())
    t0 = time.monotonic()
    with pytest.raises(echo.RunError, match="server did not start .*" + why):
        echo.start_server(python_server(code), pinned=False, ready_timeout=1.0)
    assert time.monotonic() - t0 < 10, "the harness waited on a server that never started"
    assert set(live_children()) <= before


@pytest.fixture
def broken_contender():
    echo.register("broken", "a server that never starts", "protocol",
                  lambda _tc: python_server("import time; time.sleep(60)"))
    yield "broken"
    echo.CONTENDERS[:] = [c for c in echo.CONTENDERS if c.name != "broken"]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_run_reports_a_failed_contender_and_leaves_no_process(broken_contender, loadgen, c_echo_server, tmp_path,
                                                               capsys):
    out_json = tmp_path / "r.json"
    args = cli.build_parser().parse_args([
        "--only", f"{broken_contender},c-raw,levent", "--sizes", "64", "--conns", "2", "--duration", "0.3",
        "--warmup", "0.1", "--repeats", "2", "--ready-timeout", "1", "--no-pin",
        "--json", str(out_json), "--plot", str(tmp_path / "r.svg")])
    assert cli.run(args) == 1  # a failed contender fails the run
    out = capsys.readouterr().out
    assert "a server that never starts" in out and "FAILED: server did not start" in out
    report = json.loads(out_json.read_text())
    cell = report["echo"]["cells"][0]
    assert cell["errors"] == {broken_contender: cell["errors"][broken_contender]}
    assert len(cell["runs"][broken_contender]) == 0
    pids = [r["server_pid"] for name in ("c-raw", "levent") for r in cell["runs"][name]]
    assert len(pids) == 4, "both working contenders ran twice"
    assert [r["round"] for r in cell["runs"]["c-raw"]] == [0, 1]
    for name in ("c-raw", "levent"):
        s = cell["summaries"][name]
        assert s["req_s"] > 0 and s["cpu_us_per_echo"] > 0 and s["p99_us"] >= s["p50_us"] > 0
        # (a 0.3 s run may see no clock tick in user space)
        assert 0 <= s["user_us_per_echo"] <= s["cpu_us_per_echo_max"]
    assert not any(pid_alive(pid) for pid in pids)
    assert not live_children()
    assert (tmp_path / "r.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    for key in ("machine", "versions", "settings", "load_before", "date"):
        assert report[key]

    # The saved results render again, without running anything: the README's tables come from there.
    md = tmp_path / "r.md"
    args = cli.build_parser().parse_args(["--render", str(out_json), "--markdown", str(md),
                                          "--plot", str(tmp_path / "again.svg")])
    assert cli.run(args) == 0
    assert "| C libevent, recv/send (ceiling) |" in md.read_text()
    assert "FAILED: server did not start" in capsys.readouterr().out
    assert (tmp_path / "again.svg").exists()


def test_each_round_starts_one_contender_later():
    names = ["a", "b", "c"]
    assert [cli.rotated(names, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                         ["a", "b", "c"]]
    assert cli.rotated([], 3) == []


def test_levent_against_uvloop_pairs_the_runs_of_one_round():
    def run(rnd, cpu_s):
        return {"round": rnd, "server_cpu_s": cpu_s, "server_user_s": cpu_s / 4, "messages": 1000}

    mine = [run(0, 1.0), run(1, 2.0), run(2, 3.0)]
    rival = [run(0, 2.0), run(2, 4.0)]      # the rival's round 1 failed
    assert echo.paired_ratios(mine, rival) == [0.5, 0.75]
    assert echo.user_us_per_echo(mine) == 500 and echo.user_us_per_echo(rival) == 750
    assert echo.user_us_per_echo([{"server_cpu_s": 1.0, "messages": 1000}]) is None   # saved before it was
    part = {"contenders": {n: {"label": n, "skipped": None}
                           for n in ("levent-asyncio-protocol", "uvloop-protocol", "levent-asyncio-streams")}}
    cells = [{"size": 64, "conns": 10, "runs": {"levent-asyncio-protocol": mine, "uvloop-protocol": rival,
                                                 "levent-asyncio-streams": mine}}]
    t = tables.rival_table(part, cells)
    assert t.headers == ["cell", "protocol", "protocol user"]    # no uvloop streams ran: no streams column
    assert t.rows == [["64 B x 10 conns", "0.625 (0.50-0.75)", "0.667"]]
    # From 6 rounds on, the median's 95% confidence interval replaces the range.
    mine = [run(r, 1.0 + r) for r in range(10)]
    rival = [run(r, 2.0 + 2 * r) for r in range(10)]
    mine[3] = run(3, 40.0)     # one disturbed round: outside the interval
    cells[0]["runs"].update({"levent-asyncio-protocol": mine, "uvloop-protocol": rival})
    ratios = sorted(echo.paired_ratios(mine, rival))
    assert echo.median_interval(ratios) == (ratios[1], ratios[8]) == (0.5, 0.5)
    assert tables.rival_table(part, cells).rows[0][1] == "0.500 [0.50-0.50]"
    del part["contenders"]["uvloop-protocol"]
    assert tables.rival_table(part, cells) is None


def test_the_overview_shows_the_python_call_floor_against_uvloop_where_it_ran():
    def run(rnd, cpu_s):
        return {"round": rnd, "server_cpu_s": cpu_s, "server_user_s": cpu_s / 4, "messages": 1000}

    names = ("levent-asyncio-protocol", "uvloop-protocol", "c-pycall")
    part = {"contenders": {n: {"label": n, "skipped": None} for n in names}}
    runs = {"levent-asyncio-protocol": [run(0, 0.9), run(1, 1.8)], "uvloop-protocol": [run(0, 1.0), run(1, 2.0)],
            "c-pycall": [run(0, 0.8), run(1, 1.8)]}
    cells = [{"size": 64, "conns": 10, "runs": runs}]
    t = tables.rival_table(part, cells)
    assert t.headers == ["cell", "protocol", "protocol user", "protocol floor"]
    assert t.rows == [["64 B x 10 conns", "0.900 (0.90-0.90)", "0.900", "0.850 (0.80-0.90)"]]
    assert any(note.startswith("protocol floor: ") for note in t.notes)
    part["contenders"]["c-pycall"]["skipped"] = "no python3-dev"
    assert tables.rival_table(part, cells).headers == ["cell", "protocol", "protocol user"]


@pytest.mark.parametrize("size", [64, 102400])
def test_the_python_call_floor_server_echoes_through_the_benchmark_protocol(toolchain, loadgen, size):
    try:
        cmd = echo.contender("c-pycall").command(toolchain)
    except echo.Skip as exc:
        pytest.skip(f"the C server that embeds Python cannot be built here: {exc}")
    report = echo.run_one(cmd, loadgen, size, 4, 0.3, 0.1, pinned=False)
    assert report["messages"] > 0 and report["bytes"] == report["messages"] * size    # loadgen checked each byte
    assert report["server_exit"] == 0, report.get("server_stderr")


@pytest.mark.parametrize("n, ranks", [(6, (1, 6)), (10, (2, 9)), (30, (10, 21)), (100, (40, 61))])
def test_the_median_interval_is_the_order_statistics_of_the_binomial_table(n, ranks):
    # The ranks of the distribution-free 95% interval of a median, as statistics tables give them.
    values = [float(v) for v in range(n, 0, -1)]     # unsorted on purpose: value == rank
    assert echo.median_interval(values) == (float(ranks[0]), float(ranks[1]))


@pytest.mark.parametrize("n", [0, 1, 5])
def test_too_few_values_have_no_median_interval(n):
    assert echo.median_interval([1.0] * n) is None


def test_loop_workloads_run_and_levent_never_fires_a_timer_early(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    args = cli.build_parser().parse_args([
        "--only", "call_soon_chain,timer_lateness,pingpong", "--repeats", "1", "--no-pin",
        "--json", str(out_json)])
    assert cli.run(args) == 0
    report = json.loads(out_json.read_text())
    assert not report["echo"]["cells"] and not report["echo"]["contenders"]
    workloads = {w["name"]: w for w in report["loops"]["workloads"]}
    assert set(workloads) == {"call_soon_chain", "timer_lateness", "pingpong"}
    for name in ("levent", "asyncio", "selectors"):
        assert workloads["pingpong"]["summaries"][name]["rate"] > 0
        assert workloads["call_soon_chain"]["summaries"][name]["cpu_us_per_op"] > 0
    lateness = workloads["timer_lateness"]["summaries"]["levent"]
    assert lateness["early"] == 0 and lateness["lateness_min_us"] >= 0
    assert "timer lateness" in capsys.readouterr().out


def test_run_workload_counts_every_callback():
    loop = loops.SelectorsLoop()
    try:
        result = loops.run_workload("call_later_cancel", loop, 1001, 1)
    finally:
        loop.close()
    assert result["count"] == 1001 and result["wall"] > 0


def test_only_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--only", "nginx"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown name 'nginx'" in err and "c-raw" in err and "call_soon_chain" in err


def test_only_prefix_selects_every_style():
    wanted = cli.parse_only("asyncio")
    assert wanted["servers"] == {"asyncio-protocol", "asyncio-streams", "asyncio-proxy", "asyncio-proxy-tls",
                                 "asyncio-tls"}
    assert wanted["loops"] == {"asyncio"}


def descendants(root):
    """PIDs below ``root`` (children, grandchildren), live ones only."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent_of[int(entry)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier} - found
        found |= frontier
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("when", ["compiling", "serving"])
def test_ctrl_c_stops_every_process_the_benchmark_started(child_env, tmp_path, when):
    # compiling: SIGINT while cc (and its own children) build the C programs; serving: while a
    # server and the load generator run.
    cmd = [sys.executable, "-m", "levent", "bench", "--only", "c-raw,levent", "--sizes", "64", "--conns", "2",
           "--duration", "5", "--repeats", "5", "--no-pin", "--json", str(tmp_path / "r.json")]
    bench = subprocess.Popen(cmd, env=child_env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_default)
    seen = set()
    try:
        def ready():
            found = descendants(bench.pid)
            seen.update(found)
            if bench.poll() is not None:
                return True
            if when == "compiling":
                return any(" -O2 " in cmdline(pid) for pid in found)
            return any("loadgen" in cmdline(pid) for pid in found)

        assert wait_until(ready, 60, 0.002) and bench.poll() is None, bench.stderr.read()
        seen.update(descendants(bench.pid))
        bench.send_signal(signal.SIGINT)
        out, err = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert seen and not any(pid_alive(pid) for pid in seen), \
        f"left running: {[(p, cmdline(p)) for p in seen if pid_alive(p)]}"


def test_a_loop_that_cannot_import_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setitem(registry.LOOPS, "nosuchloop", registry.Loop(
        "nosuchloop", "a loop not installed", "nosuchloop:new_event_loop", "nosuchloop", install="; pip install it"))
    why = registry.missing("nosuchloop")
    assert why.startswith("nosuchloop is not importable (ModuleNotFoundError") and why.endswith("; pip install it")
    assert registry.missing("asyncio") is None


def test_every_asyncio_loop_has_protocol_and_streams_servers():
    names = {c.name for c in echo.CONTENDERS}
    for name, loop in registry.LOOPS.items():
        assert ({f"{name}-protocol", f"{name}-streams"} <= names) == loop.asyncio


def test_proxy_suite_runs_each_proxy_in_front_of_an_echo_server(c_echo_server, tmp_path, capsys, certs):
    # certs: only for its skip when the openssl command is missing; the harness makes its own.
    out_json = tmp_path / "r.json"
    args = cli.build_parser().parse_args([
        "--only", "c-forward,levent-proxy,asyncio-proxy,levent-proxy-tls,asyncio-proxy-tls", "--duration", "0.3",
        "--warmup", "0.1", "--repeats", "1",
        "--no-pin", "--json", str(out_json)])
    assert cli.run(args) == 0
    report = json.loads(out_json.read_text())
    assert not report["echo"]["cells"] and not report["loops"]["workloads"]
    (cell,) = report["proxy"]["cells"]
    assert (cell["size"], cell["conns"]) == (65536, 10)
    for name in ("c-forward", "levent-proxy", "asyncio-proxy", "levent-proxy-tls", "asyncio-proxy-tls"):
        (run,) = cell["runs"][name]
        assert run["messages"] > 0 and run["server_cpu_s"] > 0 and run["upstream_cpu_s"] >= 0
        assert not pid_alive(run["server_pid"]) and not pid_alive(run["upstream_pid"])
    assert "proxy, 64 KiB x 10 conns" in capsys.readouterr().out
    assert not live_children()


def test_sendfile_suite_delivers_every_byte_and_reports_each_sender(toolchain):
    try:
        toolchain.build("sink")
    except echo.Skip as exc:
        pytest.skip(f"the receiver cannot be built here: {exc}")
    plan = sendfile_suite.plan()
    names = [name for name, why in plan.items() if not why]
    progress = cli.Progress([1.0] * len(names), stream=open(os.devnull, "w"))
    size = 3 << 20
    cell = sendfile_suite.run_suite(toolchain, names, size, 2, 1, False, progress, 1.0)
    progress.stream.close()
    assert not cell["errors"]
    for name in names:
        assert len(cell["runs"][name]) == 2       # the warm-up transfer is not among them
        for transfer in cell["runs"][name]:
            assert transfer["bytes"] == size and transfer["wall"] > 0
    report = {"sendfile": {"cells": [cell], "contenders": {
        name: {"label": sendfile_suite.contender(name).label, "skipped": why} for name, why in plan.items()}}}
    (table,) = sendfile_suite.tables(report, tables.Table)
    assert [row[0] for row in table.rows] == [sendfile_suite.contender(n).label for n in names]
    assert "uvloop has no sendfile()" in " ".join(table.notes)


def test_sendfile_sender_refuses_a_short_transfer(tmp_path):
    # A receiver that answers with a wrong count: the sender reports it instead of a rate.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100000)

    def liar():
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall((5).to_bytes(8, "little"))

    t = threading.Thread(target=liar, daemon=True)
    t.start()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="sent 100000 bytes but the receiver got 5"):
            loop.run_until_complete(sendfile_suite._transfers(loop, "sock_sendfile", listener.getsockname()[1],
                                                              str(path), 1))
    finally:
        loop.close()
        t.join(5)
        listener.close()


def test_tls_suite_runs_each_loops_tls_echo_server(tmp_path, capsys, certs):
    # certs: only for its skip when the openssl command is missing; the harness makes its own.
    out_json = tmp_path / "r.json"
    args = cli.build_parser().parse_args([
        "--only", "levent-asyncio-tls,asyncio-tls", "--duration", "0.3", "--warmup", "0.1", "--repeats", "1",
        "--no-pin", "--json", str(out_json)])
    assert cli.run(args) == 0
    report = json.loads(out_json.read_text())
    assert not report["echo"]["cells"] and not report["proxy"]["cells"] and not report["loops"]["workloads"]
    assert [(c["size"], c["conns"]) for c in report["tls"]["cells"]] == [(1024, 10), (102400, 10)]
    for cell in report["tls"]["cells"]:
        for name in ("levent-asyncio-tls", "asyncio-tls"):
            (run,) = cell["runs"][name]
            assert run["messages"] > 0 and run["server_cpu_s"] > 0
            assert not pid_alive(run["server_pid"])
    out = capsys.readouterr().out
    assert "TLS echo, 1 KiB x 10 conns" in out and "TLS echo, 100 KiB x 10 conns" in out
    assert not live_children()
