"""`gmpsim bench`: this machine's floors and gmpsim's figures, measured in one run, as ratios.

These machines are noisy (FACTS.md: the same benchmark moves by up to 2× between runs), so every
figure is set against a floor measured in the same run, interleaved: floors, the real scenario,
floors again.

- fork floor: a bare fork of a small process (one holding a ZeroMQ context, as every M does)
  whose child makes its own context and says hello over ZeroMQ; decide → hello received.
- burst fork floor: a pre-forked small process (no ZeroMQ context) forking on request, one at a
  time and a burst at once (Ms per second).
- wake floor: a bare ZeroMQ one-way message to a process blocked in recv; send → received.
- coordinator floor: a bare ROUTER loop doing the coordinator's socket and codec work per event.
- gmpsim: newm → mstart and notewakeup → running from a real syscall-storm run; events/s of the real
  loop; Ms made in Go time (threads at 100 ms of Go time); live Ms and memory per M at scale.
- multiprocessing forkserver and spawn, for scale (the Process's start → its hello).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

from coordinator.bench.loadgen import serve
from coordinator.scenario import loads
from coordinator.shell.procfs import (
    PID_MAX,
    TASKS_PER_M,
    THREADS_MAX,
    descendants,
    meminfo_kb,
    open_files_limit,
    private_dirty_by_kind,
    pss_kb,
    read_int,
    status_kb,
    tasks_in_use,
)
from coordinator.shell.run import run_scenario
from protocol.codec import decode, encode_trusted
from protocol.messages import position
from protocol.transport import make_rundir

HELLO = b"hello"


def _child_hello(endpoint: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    s.send(HELLO)
    s.close(linger=1000)
    ctx.term()


def fork_floor(n: int) -> list[float]:
    """Seconds from the decision to fork to the child's hello over ZeroMQ, n times."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/floor.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                try:
                    _child_hello(endpoint)
                finally:
                    os._exit(0)
            r.recv_multipart()
            out.append(time.monotonic() - t0)
            os.waitpid(pid, 0)
    finally:
        r.close(0)
        ctx.term()
        _rm(rundir)
    return out


def _mp_hello(endpoint: str) -> None:
    _child_hello(endpoint)


def mp_floor(method: str, n: int) -> list[float]:
    """The same hello, from a multiprocessing Process started with `method`."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/mp.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    mp = multiprocessing.get_context(method)
    out = []
    try:
        if method == "forkserver":  # warm the server up first, as FACTS.md measured it
            p = mp.Process(target=_mp_hello, args=(endpoint,))
            p.start()
            r.recv_multipart()
            p.join()
        for _ in range(n):
            t0 = time.monotonic()
            p = mp.Process(target=_mp_hello, args=(endpoint,))
            p.start()
            r.recv_multipart()
            out.append(time.monotonic() - t0)
            p.join()
    finally:
        r.close(0)
        ctx.term()
        _rm(rundir)
    return out


def _template(req_fd: int, endpoint: str) -> None:
    """The pre-forked small process: no ZeroMQ context of its own, forks one child per byte read;
    each child makes its own context and says hello (what a template thread does for newm)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children reap themselves
    while True:
        got = os.read(req_fd, 4096)
        if not got:
            return
        for _ in got:
            if os.fork() == 0:
                try:
                    _child_hello(endpoint)
                finally:
                    os._exit(0)


def template_floor(n_one: int, burst: int) -> dict:
    """The burst fork floor: a pre-forked small process forking on request. One at a time (request →
    hello), then `burst` requests at once (the first request → the last hello: Ms per second)."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/template.sock"
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w_fd)
            _template(r_fd, endpoint)
        finally:
            os._exit(0)
    os.close(r_fd)
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    try:
        one = []
        for _ in range(n_one):
            t0 = time.monotonic()
            os.write(w_fd, b"f")
            r.recv_multipart()
            one.append(time.monotonic() - t0)
        t0 = time.monotonic()
        os.write(w_fd, b"f" * burst)
        for _ in range(burst):
            r.recv_multipart()
        burst_s = time.monotonic() - t0
    finally:
        os.close(w_fd)
        os.waitpid(pid, 0)
        r.close(0)
        ctx.term()
        _rm(rundir)
    return {**(summarize(one) if one else {"n": 0, "p50_us": None, "p99_us": None}),
            "burst": burst, "burst_s": round(burst_s, 3),
            "burst_per_s": round(burst / burst_s)}


def _router_clients(endpoint: str, n_socks: int, per_sock: int) -> None:
    """The bare loop's peers: n_socks DEALERs, each a request answered before the next (as an M)."""
    ctx = zmq.Context()
    socks = []
    for i in range(n_socks):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"m{i}.0".encode())
        s.connect(endpoint)
        socks.append(s)
    poller = zmq.Poller()
    left = {}
    for i, s in enumerate(socks):
        poller.register(s, zmq.POLLIN)
        left[s] = per_sock
        s.send(encode_trusted("entersyscall", 1, 0, {"m": i, "g": i, "pos": position(1, [], 0), "cgo": False}))
    while left:
        for s, _ in poller.poll(5000):
            msg = msgpack.unpackb(s.recv(), raw=False)
            left[s] -= 1
            if left[s] <= 0:
                poller.unregister(s)
                del left[s]
                continue
            s.send(encode_trusted("exitsyscall", msg["seq"] + 1, 0, {"m": msg["m"], "g": msg["m"]}))
    for s in socks:
        s.close(0)
    ctx.term()


def router_floor(n_socks: int, per_sock: int) -> dict:
    """The coordinator's floor: a bare ROUTER loop doing the same socket and codec work per event —
    receive, unpack (with the coordinator's checks), pack a reply, send — and nothing else."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/router.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    gen = multiprocessing.get_context("fork").Process(target=_router_clients, args=(endpoint, n_socks, per_sock),
                                                      daemon=True)
    gen.start()
    total = n_socks * per_sock
    try:
        ident, frame = r.recv_multipart()
        t0 = time.monotonic()
        n = 0
        while True:
            msg = decode(frame)
            r.send_multipart([ident, encode_trusted("cont", n, 0, {"re": msg["seq"], "m": msg["m"], "forks": []})])
            n += 1
            if n >= total:
                break
            ident, frame = r.recv_multipart()
        elapsed = time.monotonic() - t0
    finally:
        gen.join(10)
        if gen.is_alive():
            gen.kill()
            gen.join()
        r.close(0)
        ctx.term()
        _rm(rundir)
    return {"sockets": n_socks, "events": total, "s": round(elapsed, 3), "events_per_s": round(total / elapsed)}


def wake_floor(n: int, gap_s: float = 0.002) -> list[float]:
    """Seconds a one-way ZeroMQ message takes to wake a process blocked in recv."""
    rundir = make_rundir()
    down, up = f"ipc://{rundir}/down.sock", f"ipc://{rundir}/up.sock"
    pid = os.fork()
    if pid == 0:
        try:
            ctx = zmq.Context()
            d = ctx.socket(zmq.PULL)
            d.connect(down)
            u = ctx.socket(zmq.PUSH)
            u.connect(up)
            u.send(b"ready")
            lat = []
            for _ in range(n):
                sent = float(d.recv())
                lat.append(time.monotonic() - sent)
            u.send(json.dumps(lat).encode())
            u.close(linger=1000)
            d.close(0)
            ctx.term()
        finally:
            os._exit(0)
    ctx = zmq.Context()
    d = ctx.socket(zmq.PUSH)
    d.bind(down)
    u = ctx.socket(zmq.PULL)
    u.bind(up)
    try:
        u.recv()
        for _ in range(n):
            time.sleep(gap_s)  # let the receiver block again
            d.send(repr(time.monotonic()).encode())
        return json.loads(u.recv())
    finally:
        os.waitpid(pid, 0)
        d.close(0)
        u.close(0)
        ctx.term()
        _rm(rundir)


def _rm(rundir: str) -> None:
    shutil.rmtree(rundir, ignore_errors=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(q * len(xs) + 0.5)) - 1))]


def summarize(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_us": round(statistics.median(xs) * 1e6, 1),
            "p99_us": round(pct(xs, 0.99) * 1e6, 1)}


THROUGHPUT = """
name = "bench-throughput"
description = "64 Ms doing zero-length syscalls back to back: the coordinator's events per second"
gomaxprocs = 64
timescale = 100.0
time_limit_s = 120.0
check_invariants = {check}
trace = {check}
[programs.main]
ops = [["go", "worker", 64], ["wait"]]
[programs.worker]
ops = [["repeat", {n}, [["syscall", 0]]]]
"""


def coordinator_throughput(n_per_m: int, check: bool) -> dict:
    """(c) Scheduling events per second through the coordinator's loop with 64 Ms. The Ms are the
    load generator's (loadgen.py: the real protocol over real sockets, no fork, no waiting), so the
    figure is the coordinator's alone."""
    sc = loads(THROUGHPUT.format(n=n_per_m, check=str(check).lower()), source="bench")
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/bench.sock"
    gen = multiprocessing.get_context("fork").Process(target=serve, args=(endpoint,), daemon=True)
    gen.start()
    try:
        with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
            report, out = run_scenario(sc, d, listen=endpoint, hosts=1)
    finally:
        gen.join(5)
        if gen.is_alive():
            gen.kill()
            gen.join()
        _rm(rundir)
    events = report["protocol"]["events"]
    return {"outcome": out.outcome, "events": events, "run_s": report["run_s"], "busy_s": report["busy_s"],
            "events_per_s": round(events / report["run_s"]),
            "events_per_busy_s": round(events / max(report["busy_s"], 1e-9)),  # the loop's capacity
            "invariant_checks": check}


MEM_FLOOR_KB = 3 * 1024 * 1024  # a scale run is stopped before the machine has less than this available
SCALE_TIMESCALE = 10.0  # Go's own pace of M creation (issue 11)
SCALE_MS_PER_S = 50  # the slowest creation pace a scale run's syscalls are sized for


class LimitError(Exception):
    """A machine limit a run of this size would exceed: one line naming the limit and the fix."""


def tasks_needed(n: int) -> int:
    return tasks_in_use() + TASKS_PER_M * (n + 8) + 64  # + m0, sysmon's and the template's Ms, the agent


def raise_limits(n: int) -> list[tuple[str, int]]:
    """Make room for n live Ms: pid_max and threads-max (as root, for this run only: returns what to
    restore), the open-files limit (a connection per M in the coordinator, a pidfd per M in the agent).
    Raises LimitError at once when a limit would be met and cannot be raised."""
    restore = []
    need = tasks_needed(n)
    for path, what in ((PID_MAX, "kernel.pid_max"), (THREADS_MAX, "kernel.threads-max")):
        have = read_int(path)
        if need <= have:
            continue
        try:
            with open(path, "w") as f:
                f.write(str(need))
            restore.append((path, have))
        except OSError:
            restore_limits(restore)
            raise LimitError(f"{n:,} Ms need about {need:,} tasks (3 per M) but {what} is {have:,}: "
                             f"run as root, or `sysctl -w {what}={need}`, or a smaller --scale") from None
    files = open_files_limit()
    if files < n + 256:
        restore_limits(restore)
        raise LimitError(f"{n:,} Ms need about {n + 256:,} open files (a connection per M) but `ulimit -n` "
                         f"is {files:,}: raise the hard limit (ulimit -Hn) or use a smaller --scale")
    return restore


def restore_limits(restore: list[tuple[str, int]]) -> None:
    for path, value in reversed(restore):
        with open(path, "w") as f:
            f.write(str(value))


def scale(n: int) -> dict:
    """(d) n goroutines block in syscalls at once (`gmpsim run scale-out` in its own process, at
    timescale 10, Go's pace): how many live Ms it holds, and the machine's used memory per live M
    (MemTotal - MemAvailable, its rise since before the run) and PSS per M at that point, sampled
    from outside. Stopped early (Ctrl-C, its orderly end) if the machine would run out of memory."""
    syscall_us = int((n / SCALE_MS_PER_S + 20) * 1e6 / SCALE_TIMESCALE)  # outlasts the creation
    restore = raise_limits(n)
    base_avail = meminfo_kb("MemAvailable")
    best = {"live_ms": 0, "pss_kb_per_m": None, "used_kb_per_m": None, "at_s": None}
    stopped = None
    sampled = 0
    try:
        with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
            t0 = time.monotonic()
            p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "scale-out", "--out", d,
                                  "--no-progress",
                                  "--set", f'programs.main.ops=[["go","blocker",{n}],["wait"]]',
                                  "--set", f'programs.blocker.ops=[["run",20],["syscall",{syscall_us}],["run",20]]',
                                  "--set", f"timescale={SCALE_TIMESCALE}", "--set", "schedtrace_ms=1000",
                                  "--set", f"time_limit_s={syscall_us * SCALE_TIMESCALE / 1e6 * 3 + 120:.0f}",
                                  "--set", f"check_invariants={'false' if n > 500 else 'true'}",
                                  "--set", f"trace={'false' if n > 500 else 'true'}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while p.poll() is None:
                time.sleep(0.5)
                avail = meminfo_kb("MemAvailable")
                if avail < MEM_FLOOR_KB and stopped is None:
                    stopped = f"MemAvailable {avail // 1024} MiB < {MEM_FLOOR_KB // 1024} MiB"
                    p.send_signal(signal.SIGINT)
                procs = descendants(p.pid)
                if len(procs) - 1 <= best["live_ms"]:
                    continue
                agent = min(procs, default=None)  # the agent is the run's first child
                ms = [q for q in procs if q != agent]
                best.update({"live_ms": len(ms), "used_kb_per_m": round((base_avail - avail) / max(1, len(ms))),
                             "at_s": round(time.monotonic() - t0, 1)})
                if len(ms) >= min(n, 1.05 * sampled):  # PSS reads are slow: each 5% more Ms
                    sampled = len(ms)
                    pss = [x for x in (pss_kb(q) for q in ms[:200]) if x is not None]
                    best["pss_kb_per_m"] = round(sum(pss) / len(pss)) if pss else None
                    best["parts"] = parts(p.pid, agent, ms)
            with open(os.path.join(d, "report.json")) as f:
                report = json.load(f)
    finally:
        restore_limits(restore)
    return {"goroutines": n, "outcome": report["outcome"], "lost": report["goroutines"]["lost"],
            "ms_created": report["ms"]["created"], "peak_threads": report["ms"]["peak"],
            "live_ms_sampled": best["live_ms"], "at_s": best["at_s"],
            "used_kb_per_m": best["used_kb_per_m"], "pss_kb_per_m": best["pss_kb_per_m"],
            "leaks": report["leaks"]["processes"] + report["leaks"]["shm_segments"], "parts": best.get("parts"),
            "stopped": stopped, "wall_s": report["wall_s"]}


def parts(coordinator: int, agent: int | None, ms: list[int]) -> dict:
    """Where a live M's memory goes, part by part (kB): its own private pages by kind (one M, the
    newest), its page tables, and its share of the coordinator's and the agent's resident memory."""
    m = max(ms)
    n = max(1, len(ms))
    return {"m_private_dirty": private_dirty_by_kind(m), "m_page_tables": status_kb(m, "VmPTE"),
            "m_threads": len(os.listdir(f"/proc/{m}/task")) if os.path.isdir(f"/proc/{m}/task") else None,
            "coordinator_rss_per_m": round((status_kb(coordinator, "VmRSS") or 0) / n, 1),
            "agent_rss_per_m": round((status_kb(agent, "VmRSS") or 0) / n, 1) if agent else None}


PACE_TIMESCALE = 10.0
PACE = ["--set", f"timescale={PACE_TIMESCALE}", "--set", "gomaxprocs=2", "--set", "schedtrace_ms=10",
        "--set", "time_limit_s=120"]


def go_pace(check: bool, n: int = 1000, syscall_us: int = 2_000_000) -> dict:
    """Ms made in Go time: 1000 goroutines blocked in a 2 s syscall at timescale 10, GOMAXPROCS 2 (real
    Go 1.19 makes 300-400 threads by 100 ms): threads at 100 ms of Go time, from schedtrace, and the
    creation pace in wall time over those 100 ms (1 s of wall time at timescale 10)."""
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "scale-out", "--out", d, "--no-progress",
                        "--set", f'programs.main.ops=[["go","blocker",{n}],["wait"]]',
                        "--set", f'programs.blocker.ops=[["syscall",{syscall_us}]]',
                        *PACE, "--set", f"check_invariants={str(check).lower()}", "--set", "trace=false"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threads = {}
        with open(os.path.join(d, "schedtrace.log")) as f:
            for line in f:
                m = re.match(r"SCHED (\d+)ms: .* threads=(\d+)", line)
                if m:
                    threads.setdefault(int(m[1]), int(m[2]))
        with open(os.path.join(d, "report.json")) as f:
            report = json.load(f)
    at = lambda ms: max((v for k, v in threads.items() if k <= ms), default=0)  # noqa: E731
    return {"outcome": report["outcome"], "goroutines": n, "invariant_checks": check, "threads_at_100ms": at(100),
            "threads_at_0ms": at(0), "ms_per_wall_s": round((at(100) - at(0)) / (0.1 * PACE_TIMESCALE)),
            "peak_threads": report["ms"]["peak"],
            "newm_to_mstart_p50_us": report["latency_us"]["newm_to_mstart"]["p50"]}  # fork + the child's start


def gmpsim_run(scenario: str, *args: str) -> dict:
    """`gmpsim run SCENARIO` in a process of its own; its report."""
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        subprocess.run([sys.executable, "-m", "coordinator.cli", "run", scenario, "--out", d, "--no-progress", *args],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(d, "report.json")) as f:
            return json.load(f)


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def run_bench(quick: bool, scale_n: int | None = None) -> dict:
    """Floors, a real syscall-storm run, floors again; the coordinator against a bare ROUTER loop; Ms
    made in Go time against the burst fork floor; a scale run; then the ratios."""
    n_fork, n_wake, n_mp = (40, 200, 5) if quick else (200, 1000, 20)
    scale_n = scale_n or (100 if quick else 2000)
    restore = raise_limits(scale_n)  # fail at once, before any measurement, if the scale run cannot fit
    restore_limits(restore)
    fork, wake = fork_floor(n_fork // 2), wake_floor(n_wake // 2)
    template = template_floor(n_fork // 4, 50 if quick else 200)
    report = gmpsim_run("syscall-storm")  # as a user runs it: its own process, its own agent
    fork += fork_floor(n_fork // 2)
    wake += wake_floor(n_wake // 2)
    forkserver = mp_floor("forkserver", n_mp)
    spawn = mp_floor("spawn", max(2, n_mp // 4))
    lat = report["latency_us"]
    res = {
        "floors": {"fork_hello": summarize(fork), "template_fork": template, "zmq_one_way": summarize(wake),
                   "mp_forkserver": summarize(forkserver), "mp_spawn": summarize(spawn)},
        "gmpsim": {"scenario": report["scenario"], "outcome": report["outcome"],
                   "ms_created": report["ms"]["created"],
                   "newm_to_mstart": lat["newm_to_mstart"], "notewakeup_to_running": lat["notewakeup_to_running"]},
    }
    per_m = 100 if quick else 1000
    res["floors"]["router_loop"] = router_floor(64, per_m)
    res["throughput"] = coordinator_throughput(per_m, check=False)
    res["floors"]["router_loop_after"] = router_floor(64, per_m)
    res["throughput_checked"] = coordinator_throughput(per_m // 2 if quick else 300, check=True)
    pace = (200, 500_000) if quick else (1000, 2_000_000)
    res["pace"] = go_pace(False, *pace)
    res["pace_checked"] = go_pace(True, *pace)
    res["floors"]["template_fork_after"] = template_floor(0, 50 if quick else 200)
    res["scale"] = scale(scale_n)
    fl = res["floors"]
    f50, w50 = fl["fork_hello"]["p50_us"], fl["zmq_one_way"]["p50_us"]
    n50, k50 = lat["newm_to_mstart"]["p50"], lat["notewakeup_to_running"]["p50"]
    router = max(fl["router_loop"]["events_per_s"], fl["router_loop_after"]["events_per_s"])
    burst = max(fl["template_fork"]["burst_per_s"], fl["template_fork_after"]["burst_per_s"])
    res["ratios"] = {
        "newm_p50_over_fork_floor": _ratio(n50, f50),
        "newm_p50_over_template_fork": _ratio(n50, fl["template_fork"]["p50_us"]),
        "newm_p99_over_fork_floor_p99": _ratio(lat["newm_to_mstart"]["p99"], fl["fork_hello"]["p99_us"]),
        "forkserver_p50_over_newm_p50": _ratio(fl["mp_forkserver"]["p50_us"], n50),
        "spawn_p50_over_newm_p50": _ratio(fl["mp_spawn"]["p50_us"], n50),
        "wake_p50_over_zmq_one_way": _ratio(k50, w50),
        "wake_p99_over_zmq_one_way_p99": _ratio(lat["notewakeup_to_running"]["p99"], fl["zmq_one_way"]["p99_us"]),
        "events_over_router_loop": _ratio(res["throughput"]["events_per_s"], router),
        "events_checked_over_router_loop": _ratio(res["throughput_checked"]["events_per_s"], router),
        "events_checked_over_unchecked": _ratio(res["throughput_checked"]["events_per_s"],
                                                res["throughput"]["events_per_s"]),
        "pace_over_burst_fork_floor": _ratio(res["pace"]["ms_per_wall_s"], burst),
        "pace_checked_over_burst_fork_floor": _ratio(res["pace_checked"]["ms_per_wall_s"], burst),
        # the invariant checker's cost: Ms made by 100 ms of Go time with it over without (target ≥ 0.8)
        "ms_checker_on_over_off": _ratio(res["pace_checked"]["threads_at_100ms"], res["pace"]["threads_at_100ms"]),
    }
    return res


def format_bench(res: dict) -> str:
    fl, g, r, sc = res["floors"], res["gmpsim"], res["ratios"], res["scale"]
    row = lambda name, d, p50="p50_us", p99="p99_us": f"{name:34} {d[p50] or 0:9.0f} {d[p99] or 0:9.0f} {d['n']:5}"  # noqa: E731
    lines = [
        f"{'what':34} {'p50 µs':>9} {'p99 µs':>9} {'n':>5}",
        row("floor: fork + ZeroMQ hello", fl["fork_hello"]),
        row("floor: template forks on request", fl["template_fork"]),
        row("gmpsim: newm → mstart", g["newm_to_mstart"], "p50", "p99"),
        row("multiprocessing forkserver", fl["mp_forkserver"]),
        row("multiprocessing spawn", fl["mp_spawn"]),
        row("floor: ZeroMQ one-way wake", fl["zmq_one_way"]),
        row("gmpsim: notewakeup → running", g["notewakeup_to_running"], "p50", "p99"),
        "",
        f"M creation p50 / fork floor p50:       {r['newm_p50_over_fork_floor']}×   (target ≤ 1.5)",
        f"wake p50 / ZeroMQ one-way p50:         {r['wake_p50_over_zmq_one_way']}×   (target ≤ 1.3)",
        f"forkserver p50 / M creation p50:       {r['forkserver_p50_over_newm_p50']}×",
        f"coordinator events/s / bare ROUTER loop: {r['events_over_router_loop']}×   (target ≥ 0.5; "
        f"{res['throughput']['events_per_s']}/s against "
        f"{max(fl['router_loop']['events_per_s'], fl['router_loop_after']['events_per_s'])}/s, 64 Ms)",
        f"  with the invariant checker and trace:  {r['events_checked_over_router_loop']}× "
        f"({r['events_checked_over_unchecked']}× of unchecked)",
        f"Ms made in Go time ({res['pace']['goroutines']} goroutines in a syscall, timescale 10): "
        f"{res['pace']['threads_at_100ms']} threads "
        f"at 100 ms ({res['pace_checked']['threads_at_100ms']} with the checker; real Go 300-400)",
        f"  creation pace / burst fork floor:      {r['pace_over_burst_fork_floor']}×   (target ≥ 0.8; "
        f"{res['pace']['ms_per_wall_s']}/s against "
        f"{max(fl['template_fork']['burst_per_s'], fl['template_fork_after']['burst_per_s'])}/s)",
        f"scale: {sc['live_ms_sampled']} live Ms sampled of {sc['goroutines']} (peak threads {sc['peak_threads']}), "
        f"outcome {sc['outcome']}, lost {sc['lost']}, leaks {sc['leaks']}; {sc['used_kb_per_m']} kB of the machine's "
        f"memory per live M (PSS {sc['pss_kb_per_m']} kB)" + (f"; stopped: {sc['stopped']}" if sc["stopped"] else ""),
        f"invariant checker: Ms made by 100 ms of Go time, on / off: {r['ms_checker_on_over_off']}×   (target ≥ 0.8)",
    ]
    return "\n".join(lines)


def main(quick: bool = False, json_path: str | None = None, scale_n: int | None = None) -> int:
    try:
        res = run_bench(quick, scale_n)
    except LimitError as e:
        print(f"gmpsim bench: {e}", file=sys.stderr)
        return 2
    print(format_bench(res))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv, None))
