"""`gmpsim bench`'s cost of the invariant checker: the same many-M run with check_invariants on and off.

The run is issue 9's: N goroutines block in a 2 s syscall at timescale 10, so sysmon retakes each P
and newm makes about one M per goroutine. The figure is how many Ms had been decided (Fork) by
100 ms of Go time, and by the end (the syscalls of the first goroutines end after 2 s of Go time,
and their Ms are then reused), with the checker and without; the ratio on/off must be ≥ 0.8.
Each run is `gmpsim run scale-out` in a process of its own, off then on then off again (interleaved,
as this machine is noisy: FACTS.md), the two "off" runs averaged.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

AT_MS = 100.0  # the Go time at which the Ms are counted (the figure)


def _run(n: int, check: bool, syscall_us: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gmpsim-bench-") as d:
        subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "scale-out", "--out", d, "--no-progress",
                        "--set", "timescale=10", "--set", "schedtrace_ms=0",
                        "--set", f'programs.main.ops=[["go","blocker",{n}],["wait"]]',
                        "--set", f'programs.blocker.ops=[["syscall",{syscall_us}]]',
                        "--set", f"check_invariants={'true' if check else 'false'}", "--set", "trace=false"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(d, "report.json")) as f:
            report = json.load(f)
    forks = [t["allocated_ms"] for t in report["threads"] if t.get("allocated_ms") is not None]
    return {"outcome": report["outcome"], "ms_created": report["ms"]["created"],
            "ms_by_100ms": sum(1 for t in forks if t <= AT_MS),
            "invariant_checks": report["invariants"]["checked"],
            "violations": len(report["invariants"]["violations"]), "wall_s": report["wall_s"]}


def checker_cost(n: int, syscall_us: int = 2_000_000) -> dict:
    """Ms made by 100 ms of Go time with the checker on, against off (the mean of two off runs).
    (`--quick` makes it a smoke test: few goroutines, a short syscall.)"""
    off1 = _run(n, False, syscall_us)
    on = _run(n, True, syscall_us)
    off2 = _run(n, False, syscall_us)
    off_100 = (off1["ms_by_100ms"] + off2["ms_by_100ms"]) / 2
    off_all = (off1["ms_created"] + off2["ms_created"]) / 2
    return {"goroutines": n, "syscall_us": syscall_us, "off": [off1, off2], "on": on,
            "ratio_on_over_off_at_100ms": round(on["ms_by_100ms"] / off_100, 2) if off_100 else None,
            "ratio_on_over_off_created": round(on["ms_created"] / off_all, 2) if off_all else None}
