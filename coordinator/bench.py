"""`gmpsim bench`: this machine's floors and gmpsim's figures, measured in one run, as ratios.

These machines are noisy (FACTS.md: the same benchmark moves by up to 2× between runs), so every
figure is set against a floor measured in the same run, interleaved: floors, the real scenario,
floors again.

- fork floor: a bare fork of a small process (one holding a ZeroMQ context, as every M does)
  whose child makes its own context and says hello over ZeroMQ; decide → hello received.
- wake floor: a bare ZeroMQ one-way message to a process blocked in recv; send → received.
- gmpsim: newm → mstart and notewakeup → running from a real syscall-storm run.
- multiprocessing forkserver and spawn, for scale (the Process's start → its hello).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import zmq

from protocol.transport import make_rundir

from .procfs import descendants, pss_kb

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
    import shutil
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
    from .loadgen import serve
    from .run import run_scenario
    from .scenario import loads
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


def scale(n: int) -> dict:
    """(d) The most live Ms a scale-out run (`gmpsim run scale-out`, its own process) holds, and the
    PSS per M at that point, sampled from outside every second (the agent is not counted)."""
    import subprocess
    syscall_us = 300_000 if n > 500 else 60_000
    best = {"live_ms": 0, "pss_kb_per_m": None}
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "scale-out", "--out", d, "--no-progress",
                              "--set", f'programs.main.ops=[["go","blocker",{n}],["wait"]]',
                              "--set", f'programs.blocker.ops=[["run",20],["syscall",{syscall_us}],["run",20]]',
                              "--set", f"check_invariants={'false' if n > 500 else 'true'}",
                              "--set", f"trace={'false' if n > 500 else 'true'}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None:
            time.sleep(1.0)
            procs = descendants(p.pid)
            if len(procs) - 1 <= best["live_ms"]:
                continue
            agent = min(procs, default=None)  # the agent is the run's first child
            pss = [x for x in (pss_kb(q) for q in procs if q != agent) if x is not None]
            if len(pss) > best["live_ms"]:
                best = {"live_ms": len(pss), "pss_kb_per_m": round(sum(pss) / len(pss))}
        with open(os.path.join(d, "report.json")) as f:
            report = json.load(f)
    return {"goroutines": n, "outcome": report["outcome"], "ms_created": report["ms"]["created"],
            "peak_threads": report["ms"]["peak"], "live_ms_sampled": best["live_ms"],
            "pss_kb_per_m": best["pss_kb_per_m"], "leaks": report["leaks"], "wall_s": report["wall_s"]}


def gmpsim_run(scenario: str, *args: str) -> dict:
    """`gmpsim run SCENARIO` in a process of its own; its report."""
    import subprocess
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        subprocess.run([sys.executable, "-m", "coordinator.cli", "run", scenario, "--out", d, "--no-progress", *args],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(d, "report.json")) as f:
            return json.load(f)


def run_bench(quick: bool) -> dict:
    """Floors, a real syscall-storm run, floors again; then the ratios."""
    n_fork, n_wake, n_mp = (40, 200, 5) if quick else (200, 1000, 20)
    fork, wake = fork_floor(n_fork // 2), wake_floor(n_wake // 2)
    report = gmpsim_run("syscall-storm")  # as a user runs it: its own process, its own agent
    fork += fork_floor(n_fork // 2)
    wake += wake_floor(n_wake // 2)
    forkserver = mp_floor("forkserver", n_mp)
    spawn = mp_floor("spawn", max(2, n_mp // 4))
    lat = report["latency_us"]
    res = {
        "floors": {"fork_hello": summarize(fork), "zmq_one_way": summarize(wake),
                   "mp_forkserver": summarize(forkserver), "mp_spawn": summarize(spawn)},
        "gmpsim": {"scenario": report["scenario"], "outcome": report["outcome"],
                   "ms_created": report["ms"]["created"],
                   "newm_to_mstart": lat["newm_to_mstart"], "notewakeup_to_running": lat["notewakeup_to_running"]},
    }
    f50 = res["floors"]["fork_hello"]["p50_us"]
    w50 = res["floors"]["zmq_one_way"]["p50_us"]
    n50 = lat["newm_to_mstart"]["p50"]
    k50 = lat["notewakeup_to_running"]["p50"]
    res["throughput"] = coordinator_throughput(100 if quick else 1000, check=False)
    res["throughput_checked"] = coordinator_throughput(50 if quick else 300, check=True)
    res["scale"] = scale(100 if quick else 2000)
    from .bench_invariants import checker_cost
    res["invariant_checker"] = checker_cost(30, 100_000) if quick else checker_cost(1000)
    res["ratios"] = {
        "newm_p50_over_fork_floor": round(n50 / f50, 2) if n50 else None,
        "newm_p99_over_fork_floor_p99": round(lat["newm_to_mstart"]["p99"] / res["floors"]["fork_hello"]["p99_us"], 2) if n50 else None,
        "forkserver_p50_over_newm_p50": round(res["floors"]["mp_forkserver"]["p50_us"] / n50, 2) if n50 else None,
        "spawn_p50_over_newm_p50": round(res["floors"]["mp_spawn"]["p50_us"] / n50, 2) if n50 else None,
        "wake_p50_over_zmq_one_way": round(k50 / w50, 2) if k50 else None,
        "wake_p99_over_zmq_one_way_p99": round(lat["notewakeup_to_running"]["p99"] / res["floors"]["zmq_one_way"]["p99_us"], 2) if k50 else None,
        "ms_checker_on_over_off": res["invariant_checker"]["ratio_on_over_off_at_100ms"],
    }
    return res


def format_bench(res: dict) -> str:
    fl, g, r = res["floors"], res["gmpsim"], res["ratios"]
    lines = [
        f"{'what':34} {'p50 µs':>9} {'p99 µs':>9} {'n':>5}",
        f"{'floor: fork + ZeroMQ hello':34} {fl['fork_hello']['p50_us']:9.0f} {fl['fork_hello']['p99_us']:9.0f} {fl['fork_hello']['n']:5}",
        f"{'gmpsim: newm → mstart':34} {g['newm_to_mstart']['p50'] or 0:9.0f} {g['newm_to_mstart']['p99'] or 0:9.0f} {g['newm_to_mstart']['n']:5}",
        f"{'multiprocessing forkserver':34} {fl['mp_forkserver']['p50_us']:9.0f} {fl['mp_forkserver']['p99_us']:9.0f} {fl['mp_forkserver']['n']:5}",
        f"{'multiprocessing spawn':34} {fl['mp_spawn']['p50_us']:9.0f} {fl['mp_spawn']['p99_us']:9.0f} {fl['mp_spawn']['n']:5}",
        f"{'floor: ZeroMQ one-way wake':34} {fl['zmq_one_way']['p50_us']:9.0f} {fl['zmq_one_way']['p99_us']:9.0f} {fl['zmq_one_way']['n']:5}",
        f"{'gmpsim: notewakeup → running':34} {g['notewakeup_to_running']['p50'] or 0:9.0f} {g['notewakeup_to_running']['p99'] or 0:9.0f} {g['notewakeup_to_running']['n']:5}",
        "",
        f"M creation p50 / fork floor p50: {r['newm_p50_over_fork_floor']}×   (target ≤ 1.3)",
        f"forkserver p50 / M creation p50: {r['forkserver_p50_over_newm_p50']}×   (target ≥ 2.5)",
        f"wake p50 / ZeroMQ one-way p50:   {r['wake_p50_over_zmq_one_way']}×   (target ≤ 1.5)",
        "",
        f"coordinator: {res['throughput']['events_per_s']} scheduling events/s with 64 Ms, "
        f"{res['throughput']['events_per_busy_s']}/s of its own busy time "
        f"({res['throughput_checked']['events_per_s']}/s with the invariant checker and trace on)   (target ≥ 50,000)",
        f"scale: {res['scale']['live_ms_sampled']} live Ms sampled (peak threads {res['scale']['peak_threads']}), "
        f"PSS {res['scale']['pss_kb_per_m']} kB per M   (target ≤ 2,500 kB)",
        f"invariant checker: Ms made by 100 ms of Go time, on / off: {r['ms_checker_on_over_off']}×   (target ≥ 0.8)",
    ]
    return "\n".join(lines)


def main(quick: bool = False, json_path: str | None = None) -> int:
    res = run_bench(quick)
    print(format_bench(res))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv, None))
