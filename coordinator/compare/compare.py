"""The `gmpsim compare` command: run a scenario N times on real Go and N times on gmpsim (faults
removed: they are gmpsim's own), print one table side by side, and exit 0 when every figure is
within the tolerance, 1 when not, 2 on bad input (one line, as the rest of the CLI)."""
from __future__ import annotations

import json
import math
import os
import sys
import time

from coordinator.compare import table
from coordinator.compare.gobuild import GoError, ensure_built, find_go, have_gcc
from coordinator.compare.gorun import HUNG_AFTER_FATAL_S, run_go
from coordinator.compare.simrun import SimError, run_sim
from coordinator.scenario import ScenarioError, load

EXIT_OK, EXIT_DIFFERENT, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3
MAX_RUNS = 100


class BadInput(ValueError):
    """One line naming what was wrong."""


def uses_cgo(sc) -> bool:
    return any(ins[0] == "cgo" for code in sc.programs.values() for ins in code)


def measure_usleep_slack_us(n: int = 400) -> float:
    """What this machine adds to a 20 µs sleep (the median of n; Linux's timer slack and wake-up):
    real Go's sysmon sleeps usleep(20) while busy, so its passes come that much later (sysmon.py)."""
    lateness = []
    for _ in range(n):
        t = time.perf_counter_ns()
        time.sleep(20e-6)
        lateness.append((time.perf_counter_ns() - t) / 1000 - 20)
    lateness.sort()
    return round(max(0.0, lateness[n // 2]), 1)


def check_args(runs: int, tolerance: float) -> None:
    if not 1 <= runs <= MAX_RUNS:
        raise BadInput(f"--runs: expected a number of runs from 1 to {MAX_RUNS}, got {runs}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise BadInput(f"--tolerance: expected a percentage >= 0, got {tolerance:g}")


def compare(ref: str, runs: int = 3, tolerance: float = 10.0, overrides: tuple = (), out_dir: str | None = None,
            json_path: str | None = None, log=sys.stderr) -> dict:
    """Run both sides and return the result (what --json writes). Raises BadInput, ScenarioError,
    GoError or SimError with a one-line message."""
    check_args(runs, tolerance)
    if json_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise BadInput(f"--json {json_path}: no such directory")
    overrides = list(overrides)
    notes = []
    if not any(o.split("=", 1)[0].strip() == "usleep_slack_us" for o in overrides):
        slack = measure_usleep_slack_us()
        overrides.append(f"usleep_slack_us={slack}")
        notes.append(f"usleep(20) on this machine returns {slack:g} µs late (median): gmpsim's sysmon sleeps "
                     f"as long (usleep_slack_us={slack:g})")
    original = load(ref, overrides)
    sc = load(ref, [*overrides, "faults=[]"])
    go = find_go()
    if original.faults:
        kinds = ", ".join(sorted({f.kind for f in original.faults}))
        notes.append(f"faults removed: the scenario's {len(original.faults)} fault(s) ({kinds}) are gmpsim's own; "
                     "both sides run without them")
    cgo = uses_cgo(sc)
    if cgo and not have_gcc():
        notes.append("no gcc: cgo ops run as blocking syscalls and the Go binary is not a cgo binary "
                     "(no template thread, no extra M); `apt-get install gcc` makes it one")
        cgo = False
    elif cgo:
        notes.append("cgo ops: the Go binary is a real cgo binary (C usleep through cgocall)")
    binary = ensure_built(cgo=cgo, go=go)
    out_dir = out_dir or os.path.join("runs", f"compare-{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out_dir, exist_ok=True)
    go_runs, sim_runs = [], []
    for i in range(runs):  # interleaved: a noisy machine disturbs both sides alike
        print(f"compare: run {i + 1}/{runs} on real Go", file=log, flush=True)
        go_runs.append(run_go(str(binary.path), sc, sc.time_limit_s, os.path.join(out_dir, f"go-{i + 1}.stderr")))
        print(f"compare: run {i + 1}/{runs} on gmpsim", file=log, flush=True)
        sim_runs.append(run_sim(ref, overrides, os.path.join(out_dir, f"gmpsim-{i + 1}"), sc.time_limit_s))
    if any(r["hung_after_fatal"] for r in go_runs):
        notes.append(f"real Go hung after its fatal error (schedtrace(true) in dopanic_m waits for sched.lock); "
                     f"killed {HUNG_AFTER_FATAL_S:g} s after the fatal line")
    if any(r["counts"] == "unverified" for r in go_runs):
        notes.append("Go's mnext/nmfreed did not match /proc's thread count in some run: marked unverified")
    figures = table.figures(go_runs, sim_runs, tolerance)

    def first_fatal(rs):
        return next((r["fatal_lines"] for r in rs if r["fatal_lines"]), [])
    result = {
        "schema": "gmpsim.compare/1",
        "scenario": sc.name, "source": sc.source, "gomaxprocs": sc.gomaxprocs, "maxmcount": sc.maxmcount,
        "timescale": sc.timescale, "schedtrace_ms": sc.schedtrace_ms, "runs": runs, "tolerance_pct": tolerance,
        "overrides": overrides, "faults_removed": len(original.faults), "notes": notes,
        "go": {"version": binary.go_version, "version_short": binary.go_version.split()[2]
               if len(binary.go_version.split()) > 2 else binary.go_version,
               "cgo": binary.cgo, "binary": str(binary.path), "key": binary.key,
               "runs": [{k: v for k, v in r.items() if k != "schedtrace"} for r in go_runs],
               "fatal_lines": first_fatal(go_runs)},
        "gmpsim": {"runs": [{k: v for k, v in r.items() if k != "schedtrace"} for r in sim_runs],
                   "fatal_lines": first_fatal(sim_runs)},
        "figures": figures,
        "schedtrace": table.pair_schedtrace(go_runs[0]["schedtrace"], sim_runs[0]["schedtrace"],
                                           sc.schedtrace_ms),
        "out_dir": out_dir,
    }
    result["within"] = all(f["within"] is not False for f in figures)
    result["markdown_row"] = table.markdown_row(result)
    return result


def main(ref: str, runs: int, tolerance: float, overrides: list, json_path: str | None, out_dir: str | None,
         markdown: bool) -> int:
    try:
        result = compare(ref, runs, tolerance, tuple(overrides), out_dir, json_path)
    except (BadInput, ScenarioError, GoError, SimError) as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gmpsim: compare interrupted", file=sys.stderr)
        return EXIT_ABORTED
    print(table.render(result))
    if markdown:
        print(table.MARKDOWN_HEADER)
        print(result["markdown_row"])
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return EXIT_OK if result["within"] else EXIT_DIFFERENT
