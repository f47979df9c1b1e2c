"""`gmpsim bench`: this machine's floors and gmpsim's figures, measured in one run, as ratios.

These machines are noisy (FACTS.md: the same benchmark moves by up to 2× between runs), so every
figure is set against a floor measured in the same run, interleaved: floors, the real scenario,
floors again.

- fork floor: a bare fork of a small process (one holding a ZeroMQ context, as every M does)
  whose child makes its own context and says hello over ZeroMQ; decide → hello received.
- burst fork floor: a pre-forked small process (no ZeroMQ context) forking on request, one at a
  time and a burst at once (Ms per second).
- wake floor: a bare ZeroMQ one-way message to a process blocked in recv; send → received, 2 ms
  apart, and again with the receiver blocked as long as the run's woken Ms were (p50).
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
import subprocess
import sys
import tempfile

from coordinator.bench import burst_cpu
from coordinator.bench.floors import (
    _rm,
    fork_floor,
    memory_floor,
    mp_floor,
    router_floor,
    summarize,
    template_floor,
    wake_floor,
)
from coordinator.bench.loadgen import serve
from coordinator.bench.scale import LimitError, raise_limits, restore_limits, scale
from coordinator.scenario import loads
from coordinator.shell.run import run_scenario
from protocol.transport import make_rundir

THROUGHPUT = """
name = "bench-throughput"
description = "64 Ms doing zero-length syscalls back to back: the coordinator's events per second"
gomaxprocs = 64
timescale = 100.0
time_limit_s = 120.0
check_invariants = {check}
trace = {trace}
[programs.main]
ops = [["go", "worker", 64], ["wait"]]
[programs.worker]
ops = [["repeat", {n}, [["syscall", 0]]]]
"""


def coordinator_throughput(n_per_m: int, check: bool, trace: bool | None = None) -> dict:
    """(c) Scheduling events per second through the coordinator's loop with 64 Ms, with or without
    the invariant checker (and the trace: by default with the checker). The Ms are the load
    generator's (loadgen.py: the real protocol over real sockets, no fork, no waiting), so the
    figure is the coordinator's alone."""
    trace = check if trace is None else trace
    sc = loads(THROUGHPUT.format(n=n_per_m, check=str(check).lower(), trace=str(trace).lower()), source="bench")
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
            "invariant_checks": check, "trace": trace}


PACE_TIMESCALE = 10.0
# The same run slowed down: Ms come at the same pace in wall time (the machine's), so this many more
# of them by 100 ms of Go time, if the pace is the machine's and not gmpsim's Go-time logic.
SLOW_PACE_TIMESCALE = 20.0
PACE = ["--set", "gomaxprocs=2", "--set", "schedtrace_ms=10", "--set", "time_limit_s=120"]


def go_pace(check: bool, n: int = 1000, syscall_us: int = 2_000_000, timescale: float = PACE_TIMESCALE,
            cpu: bool = False) -> dict:
    """Ms made in Go time: 1000 goroutines blocked in a 2 s syscall at timescale 10, GOMAXPROCS 2 (real
    Go 1.19 makes 300-400 threads by 100 ms): threads at 100 ms of Go time, from schedtrace, and the
    creation pace in wall time over those 100 ms (1 s of wall time at timescale 10). With `cpu`, also
    where the CPU went per M made (burst_cpu.py)."""
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "scale-out", "--out", d, "--no-progress",
                              "--set", f'programs.main.ops=[["go","blocker",{n}],["wait"]]',
                              "--set", f'programs.blocker.ops=[["syscall",{syscall_us}]]',
                              "--set", f"timescale={timescale}", *PACE,
                              "--set", f"check_invariants={str(check).lower()}", "--set", "trace=false"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            spent = burst_cpu.measure(p, n) if cpu else None
        finally:
            p.wait()
        threads = {}
        with open(os.path.join(d, "schedtrace.log")) as f:
            for line in f:
                m = re.match(r"SCHED (\d+)ms: .* threads=(\d+)", line)
                if m:
                    threads.setdefault(int(m[1]), int(m[2]))
        with open(os.path.join(d, "report.json")) as f:
            report = json.load(f)
    at = lambda ms: max((v for k, v in threads.items() if k <= ms), default=0)  # noqa: E731
    return {"outcome": report["outcome"], "goroutines": n, "invariant_checks": check, "timescale": timescale,
            "threads_at_100ms": at(100),
            "threads_at_0ms": at(0), "ms_per_wall_s": round((at(100) - at(0)) / (0.1 * timescale)),
            "peak_threads": report["ms"]["peak"],
            "newm_to_mstart_p50_us": report["latency_us"]["newm_to_mstart"]["p50"],  # fork + the child's start
            "newm_to_child_p50_us": report["latency_us"]["newm_to_child"]["p50"],  # the order's way, the clone
            "child_to_hello_p50_us": report["latency_us"]["child_to_hello"]["p50"],  # connect, hello
            **({"cpu": spent} if cpu else {})}


def gmpsim_run(scenario: str, *args: str) -> dict:
    """`gmpsim run SCENARIO` in a process of its own; its report."""
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        subprocess.run([sys.executable, "-m", "coordinator.cli", "run", scenario, "--out", d, "--no-progress", *args],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(d, "report.json")) as f:
            return json.load(f)


MATCHED_FLOOR_S = 6.0  # the matched wake floor's time budget: fewer wakes when the gap is long
MATCHED_GAP_S = (0.002, 0.1)  # its gap: the run's p50 blocked time, within these bounds


def matched_gap(slept_p50_us: float | None) -> float:
    """The wake floor's gap that matches how long the run's woken Ms were blocked (p50): a process
    blocked longer wakes slower on these VMs (145 µs after 2 ms, 324 µs after 20 ms, 372 µs after 50 ms)."""
    lo, hi = MATCHED_GAP_S
    return min(hi, max(lo, (slept_p50_us or 0) / 1e6))


def _cpu_line(cpu: dict | None) -> str:
    if not cpu:
        return "  CPU per M made: not measured (the run ended before half its Ms were up)"
    per = cpu["cpu_ms_per_m"]
    return (f"  CPU per M made in the burst: the forker's fork {per['forker']} ms, the M's own start {per['M']}, "
            f"coordinator {per['coordinator']}, agent {per['agent']}; the machine's {cpu['machine_cpu_ms_per_m']} ms "
            f"({cpu['machine_busy']:.0%} of {cpu['cpus']} CPUs busy)")


def _gb(kb_per_m: int | None) -> str:
    return f"{kb_per_m * 10_000 / 1e6:.1f}" if kb_per_m else "?"


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
    slept_s = matched_gap(report["latency_us"]["notesleep_to_wake"]["p50"])
    wake_matched = wake_floor(max(20, min(n_wake // 2, int(MATCHED_FLOOR_S / slept_s))), slept_s)
    forkserver = mp_floor("forkserver", n_mp)
    spawn = mp_floor("spawn", max(2, n_mp // 4))
    lat = report["latency_us"]
    res = {
        "floors": {"fork_hello": summarize(fork), "template_fork": template, "zmq_one_way": summarize(wake),
                   "zmq_one_way_matched": {**summarize(wake_matched), "blocked_ms": round(slept_s * 1e3, 1)},
                   "mp_forkserver": summarize(forkserver), "mp_spawn": summarize(spawn)},
        "gmpsim": {"scenario": report["scenario"], "outcome": report["outcome"],
                   "ms_created": report["ms"]["created"],
                   "newm_to_mstart": lat["newm_to_mstart"], "notewakeup_to_running": lat["notewakeup_to_running"],
                   "notesleep_to_wake": lat["notesleep_to_wake"],
                   "newm_to_child": lat["newm_to_child"], "child_to_hello": lat["child_to_hello"]},
    }
    per_m = 100 if quick else 1000
    res["floors"]["router_loop"] = router_floor(64, per_m)
    res["throughput"] = coordinator_throughput(per_m, check=False)
    res["floors"]["router_loop_after"] = router_floor(64, per_m)
    res["throughput_checked"] = coordinator_throughput(per_m // 2 if quick else 300, check=True)
    res["throughput_checker"] = coordinator_throughput(per_m // 2 if quick else 300, check=True, trace=False)
    pace = (200, 500_000) if quick else (1000, 2_000_000)
    res["pace"] = go_pace(False, *pace)
    res["pace_checked"] = go_pace(True, *pace)
    # 0.5 s of Go time outlasts the creation; where the CPU goes per M is measured in this run
    res["pace_slow"] = go_pace(False, pace[0], pace[1] // 4, SLOW_PACE_TIMESCALE, cpu=True)
    res["floors"]["template_fork_after"] = template_floor(0, 50 if quick else 200)
    res["floors"]["memory"] = memory_floor(20 if quick else 300)
    res["scale"] = scale(scale_n)
    fl, sc, mem = res["floors"], res["scale"], res["floors"]["memory"]
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
        # against the same message to a process blocked as long as the run's woken Ms were (p50)
        "wake_p50_over_zmq_one_way_matched": _ratio(k50, fl["zmq_one_way_matched"]["p50_us"]),
        "wake_p99_over_zmq_one_way_p99": _ratio(lat["notewakeup_to_running"]["p99"], fl["zmq_one_way"]["p99_us"]),
        "events_over_router_loop": _ratio(res["throughput"]["events_per_s"], router),
        "events_checked_over_router_loop": _ratio(res["throughput_checked"]["events_per_s"], router),
        "events_checked_over_unchecked": _ratio(res["throughput_checked"]["events_per_s"],
                                                res["throughput"]["events_per_s"]),
        # the invariant checker's own cost, without the trace (target ≥ 0.8)
        "events_checker_over_unchecked": _ratio(res["throughput_checker"]["events_per_s"],
                                                res["throughput"]["events_per_s"]),
        "pace_over_burst_fork_floor": _ratio(res["pace"]["ms_per_wall_s"], burst),
        "pace_checked_over_burst_fork_floor": _ratio(res["pace_checked"]["ms_per_wall_s"], burst),
        "pace_slow_over_burst_fork_floor": _ratio(res["pace_slow"]["ms_per_wall_s"], burst),
        # the invariant checker's cost: Ms made by 100 ms of Go time with it over without (target ≥ 0.8)
        "ms_checker_on_over_off": _ratio(res["pace_checked"]["threads_at_100ms"], res["pace"]["threads_at_100ms"]),
        # an M's memory against the least a forked child talking ZeroMQ costs here (floors.memory_floor)
        "m_private_over_memory_floor": _ratio(sum(((sc["parts"] or {}).get("m_private_dirty") or {}).values()),
                                              mem["private_dirty_kb"]),
    }
    return res


def format_bench(res: dict) -> str:
    fl, g, r, sc = res["floors"], res["gmpsim"], res["ratios"], res["scale"]
    mem = fl["memory"]
    row = lambda name, d, p50="p50_us", p99="p99_us": f"{name:34} {d[p50] or 0:9.0f} {d[p99] or 0:9.0f} {d['n']:5}"  # noqa: E731
    lines = [
        f"{'what':34} {'p50 µs':>9} {'p99 µs':>9} {'n':>5}",
        row("floor: fork + ZeroMQ hello", fl["fork_hello"]),
        row("floor: template forks on request", fl["template_fork"]),
        row("gmpsim: newm → mstart", g["newm_to_mstart"], "p50", "p99"),
        row("  newm → the child's mstart", g["newm_to_child"], "p50", "p99"),
        row("  the child's mstart → its hello", g["child_to_hello"], "p50", "p99"),
        row("multiprocessing forkserver", fl["mp_forkserver"]),
        row("multiprocessing spawn", fl["mp_spawn"]),
        row("floor: ZeroMQ one-way wake", fl["zmq_one_way"]),
        row(f"floor: same, blocked {fl['zmq_one_way_matched']['blocked_ms']} ms", fl["zmq_one_way_matched"]),
        row("gmpsim: notewakeup → running", g["notewakeup_to_running"], "p50", "p99"),
        "",
        f"M creation p50 / fork floor p50:       {r['newm_p50_over_fork_floor']}×   (target ≤ 1.5)",
        f"wake p50 / ZeroMQ one-way p50:         {r['wake_p50_over_zmq_one_way']}×   (target ≤ 1.3)",
        f"  / the same, blocked as long as the Ms: {r['wake_p50_over_zmq_one_way_matched']}×   "
        f"(the Ms were blocked {g['notesleep_to_wake']['p50'] or 0:.0f} µs, p50)",
        f"forkserver p50 / M creation p50:       {r['forkserver_p50_over_newm_p50']}×",
        f"coordinator events/s / bare ROUTER loop: {r['events_over_router_loop']}×   (target ≥ 0.5; "
        f"{res['throughput']['events_per_s']}/s against "
        f"{max(fl['router_loop']['events_per_s'], fl['router_loop_after']['events_per_s'])}/s, 64 Ms)",
        f"  with the invariant checker and trace:  {r['events_checked_over_router_loop']}× "
        f"({r['events_checked_over_unchecked']}× of unchecked)",
        f"  with the invariant checker alone:      {r['events_checker_over_unchecked']}× of unchecked   (target ≥ 0.8)",
        f"Ms made in Go time ({res['pace']['goroutines']} goroutines in a syscall, timescale 10): "
        f"{res['pace']['threads_at_100ms']} threads "
        f"at 100 ms ({res['pace_checked']['threads_at_100ms']} with the checker; real Go 300-400)",
        f"  creation pace / burst fork floor:      {r['pace_over_burst_fork_floor']}×   (target ≥ 0.8; "
        f"{res['pace']['ms_per_wall_s']}/s against "
        f"{max(fl['template_fork']['burst_per_s'], fl['template_fork_after']['burst_per_s'])}/s)",
        f"  newm → mstart p50 {res['pace']['newm_to_mstart_p50_us'] or 0:.0f} µs: "
        f"{res['pace']['newm_to_child_p50_us'] or 0:.0f} to the child's mstart, "
        f"{res['pace']['child_to_hello_p50_us'] or 0:.0f} from there to its hello",
        f"  at timescale {res['pace_slow']['timescale']:g}: {res['pace_slow']['threads_at_100ms']} threads at 100 ms "
        f"({res['pace_slow']['ms_per_wall_s']}/s: the pace is the machine's, in wall time)",
        _cpu_line(res["pace_slow"].get("cpu")),
        f"scale: {sc['live_ms_sampled']} live Ms sampled of {sc['goroutines']} (peak threads {sc['peak_threads']}), "
        f"outcome {sc['outcome']}, lost {sc['lost']}, leaks {sc['leaks']}; {sc['used_kb_per_m']} kB of the machine's "
        f"memory per live M (PSS {sc['pss_kb_per_m']} kB)" + (f"; stopped: {sc['stopped']}" if sc["stopped"] else ""),
        f"  an M's private pages / memory floor:  {r['m_private_over_memory_floor']}×   "
        f"({sum(((sc['parts'] or {}).get('m_private_dirty') or {}).values())} kB against {mem['private_dirty_kb']} kB "
        f"for a forked child with its ZeroMQ context and socket, hello answered)",
        f"  10,000 Ms at that: {_gb(sc['used_kb_per_m'])} GB; 10,000 such children: {_gb(mem['anon_kb_per_child'])} "
        f"GB of anonymous pages; MemAvailable before the run: {sc['mem_available_before_kb'] / 1e6:.1f} GB",
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
