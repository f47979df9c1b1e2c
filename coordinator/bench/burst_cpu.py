"""Where the CPU goes while Ms are made in a burst (issue 11: what paces M creation): the CPU time
per M made, by process kind (the forker's forks, the Ms' own start, the coordinator, the agent)
and the machine's, between two snapshots taken while a run scales out (when a tenth and when half
of its Ms are up, told by the machine's task count: the schedtrace is written in blocks). Two
snapshots only: a walk of /proc over a thousand processes costs tens of ms, which a sampler running
all along would take from the run it measures."""
from __future__ import annotations

import os
import subprocess
import time

from coordinator.shell.procfs import TASKS_PER_M, cpu_s, descendants, machine_cpu_ticks, tasks_in_use, title
from protocol import titles

POLL_S = 0.05  # how often the machine's task count is read (O(1): /proc/loadavg)
KINDS = ("M", "coordinator", *titles.HOST_KINDS, "other")


def _snapshot(root: int) -> dict:
    cpu = dict.fromkeys(KINDS, 0.0)
    ms = 0
    for pid in [root, *descendants(root)]:
        kind = titles.kind(title(pid))
        cpu[kind] += cpu_s(pid)
        ms += kind == "M"
    busy, total = machine_cpu_ticks()
    return {"at": time.monotonic(), "cpu": cpu, "ms": ms, "busy": busy, "total": total}


def measure(p: subprocess.Popen, n: int) -> dict | None:
    """While `p` (a `gmpsim run` making ~n Ms, just started) runs: CPU ms per M made between a tenth
    and half of them, by kind, and the machine's busy share over that window; None if it ended first."""
    base = tasks_in_use()
    snaps, marks = [], [max(3, n // 10), n // 2]
    while p.poll() is None and marks:
        if (tasks_in_use() - base) // TASKS_PER_M >= marks[0]:
            snaps.append(_snapshot(p.pid))
            marks.pop(0)
        time.sleep(POLL_S)
    if len(snaps) < 2:
        return None
    a, b = snaps
    made = max(1, b["ms"] - a["ms"])
    per_m = {kind: round((b["cpu"][kind] - a["cpu"][kind]) * 1e3 / made, 2) for kind in a["cpu"]}
    busy_ticks, all_ticks = b["busy"] - a["busy"], b["total"] - a["total"]
    tick_s = os.sysconf("SC_CLK_TCK")
    return {"ms_made": made, "wall_s": round(b["at"] - a["at"], 3), "cpu_ms_per_m": per_m,
            "machine_cpu_ms_per_m": round(busy_ticks / tick_s * 1e3 / made, 2),
            "machine_busy": round(busy_ticks / max(1, all_ticks), 2), "cpus": os.cpu_count()}
