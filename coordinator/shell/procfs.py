"""Reading /proc: whether a process is alive (a zombie is not), whose child it is, which process
group it is in, what lies below it, how much memory it uses. For leak counts, the bench and tests."""
from __future__ import annotations

import os
import resource


def stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name: [state, ppid, pgrp, ...], or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].decode().split()


def processes() -> dict[int, tuple[str, int, int]]:
    """Every process: pid -> (state, ppid, pgrp)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat(int(name))
            if fields is not None:
                out[int(name)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def children(pid: int) -> list[int]:
    """The live children of pid."""
    return [p for p, (state, ppid, _) in processes().items() if ppid == pid and state != "Z"]


def descendants(root: int) -> list[int]:
    """The live processes below root (by ppid links)."""
    kids: dict[int, list[int]] = {}
    for p, (state, ppid, _) in processes().items():
        if state != "Z":
            kids.setdefault(ppid, []).append(p)
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def title(pid: int) -> str:
    """What ps shows as the process's name (the first word run of its title, `gmpsim M7`), or ""."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def thread_count(pid: int) -> int | None:
    """How many threads (tasks) the process has now, or None if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def cpu_s(pid: int) -> float:
    """CPU time the process's live threads have had (s, /proc/PID/task/*/schedstat: nanoseconds,
    exact; /proc/PID/stat's ticks round a short-lived M's few ms down to 0); 0 if it is gone."""
    ns = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return ns / 1e9


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat (idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - ticks[3] - ticks[4], total


def pss_kb(pid: int) -> int | None:
    """The process's proportional set size (kB), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- the machine's limits on the number of Ms (FACTS.md: three tasks per M) ------------------------

PID_MAX = "/proc/sys/kernel/pid_max"
THREADS_MAX = "/proc/sys/kernel/threads-max"
TASKS_PER_M = 3  # a Python M with a ZeroMQ context: main, ZeroMQ I/O, reaper


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def tasks_in_use() -> int:
    """Every task (thread) on the machine now: /proc/loadavg's 4th field is running/total."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[1])


def meminfo_kb(field: str) -> int:
    """A /proc/meminfo figure in kB (MemAvailable, MemTotal, ...)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit (children inherit it); the
    coordinator holds a connection per M and the agent a pidfd per M. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def status_kb(pid: int, field: str) -> int | None:
    """A /proc/PID/status figure in kB (VmRSS, VmPTE, ...), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def private_dirty_by_kind(pid: int) -> dict[str, int] | None:
    """Where a process's own (private dirty) memory is, in kB: the C heap, anonymous mappings
    (Python's object arenas, thread stacks), libpython's data, everything else."""
    out = {"heap": 0, "anon": 0, "libpython": 0, "stack": 0, "other": 0}
    kind = "other"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(maxsplit=6)
                if "-" in head[0] and not head[0].endswith(":"):
                    name = head[5].strip() if len(head) > 5 else ""
                    kind = ("heap" if name == "[heap]" else "anon" if not name else "stack" if name == "[stack]"
                            else "libpython" if "libpython" in name else "other")
                elif head[0] == "Private_Dirty:":
                    out[kind] += int(head[1])
    except OSError:
        return None
    return out
