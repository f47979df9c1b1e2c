"""The scale run of `gmpsim bench`: N goroutines blocked at once, the most live Ms, and the
machine's memory per live M part by part; the kernel limits (pid_max, threads-max) it raises as
root and puts back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

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
    thread_count,
    title,
)
from protocol.titles import is_m_title

MEM_FLOOR_KB = 3 * 1024 * 1024  # a scale run is stopped before the machine has less than this available
SCALE_TIMESCALE = 10.0  # Go's own pace of M creation (issue 11)
PARTS_SAMPLE = 10  # Ms whose smaps the part-by-part figures average
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
                if len(procs) - 1 <= best["live_ms"]:  # the Ms are all but the agent, its forker and spares
                    continue
                agent = min(procs, default=None)  # the agent is the run's first child
                ms = [q for q in procs if is_m_title(title(q))]
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
            "stopped": stopped, "wall_s": report["wall_s"], "mem_available_before_kb": base_avail}


def parts(coordinator: int, agent: int | None, ms: list[int]) -> dict:
    """Where a live M's memory goes, part by part (kB): its own private pages by kind and its page
    tables (the mean of PARTS_SAMPLE Ms spread over the pids: early and late Ms differ; Ms still
    starting left out), its threads, and its share of the coordinator's and the agent's resident
    memory."""
    n = max(1, len(ms))
    spread = sorted(ms)[::max(1, len(ms) // PARTS_SAMPLE)][:PARTS_SAMPLE]
    threads = {m: thread_count(m) for m in spread}
    # A child an M forks (a direct newm) bears its parent's title, with one thread, until its mstart.
    sample = [m for m in spread if threads[m] == TASKS_PER_M] or spread
    kinds = [k for k in (private_dirty_by_kind(m) for m in sample) if k is not None]
    ptes = [x for x in (status_kb(m, "VmPTE") for m in sample) if x is not None]
    counts = [t for t in threads.values() if t is not None]
    return {"m_private_dirty": {k: round(sum(d[k] for d in kinds) / len(kinds)) for k in kinds[0]} if kinds else None,
            "m_page_tables": round(sum(ptes) / len(ptes)) if ptes else None, "m_sampled": len(kinds),
            "m_threads": max(set(counts), key=counts.count) if counts else None,  # the most common
            "coordinator_rss_per_m": round((status_kb(coordinator, "VmRSS") or 0) / n, 1),
            "agent_rss_per_m": round((status_kb(agent, "VmRSS") or 0) / n, 1) if agent else None}
