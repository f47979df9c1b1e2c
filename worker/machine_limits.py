"""The machine-limit guard: before a newosproc, is the machine about to run out?

Go has no such guard: its clone simply fails when the kernel cannot give it a task or memory, and
newosproc throws. A gmpsim M is a whole process (~1.7 MB, 3 tasks), so a scenario that asks for
tens of thousands of them would take the machine down long before clone fails (issue 13: 5,617
processes and 17 GB in 46 s). So the forker (an M or the host agent) looks first, and when the
headroom is under a margin it treats the fork as failed, the way clone fails at that limit:

- memory (MemAvailable, and the cgroup's memory limit where one is set) under the margin: errno=12
  (ENOMEM, as clone when it cannot get memory);
- tasks (pid_max, threads-max, the cgroup's pids.max) short of an M's tasks plus the margin:
  errno=11 (EAGAIN: what clone returns at those limits; Go then also prints its ulimit -u hint);
- open files of the process holding a connection per M (the coordinator locally; the agent,
  whose pidfds are one per M, too) short of the margin: errno=12 (clone has no errno for it).

Each refusal comes with ONE extra line naming the limit. The margins (environment, inherited by
the agent and every M; documented in the README):

- GMPSIM_MEM_MARGIN_MB: default 5% of MemTotal, at least 256 (24 GiB machine: 1,228 MiB);
- GMPSIM_TASK_MARGIN: default 256 tasks;
- GMPSIM_FD_MARGIN: default 64 descriptors;
- GMPSIM_MACHINE_GUARD=off: no guard (clone's own failures still end the run the same way).

Cost: a handful of small /proc and cgroup reads (~0.1 ms) against a fork's ~4 ms.
"""
from __future__ import annotations

import os
from errno import EAGAIN, ENOMEM

TASKS_PER_M = 3  # a Python M with a ZeroMQ context: main, ZeroMQ I/O, reaper (FACTS.md)
CGROUP_ROOT = "/sys/fs/cgroup"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def _read(path: str, size: int = 65536) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, size).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo() -> dict[str, int]:
    out = {}
    for line in (_read("/proc/meminfo", 256) or "").splitlines()[:3]:  # MemTotal, MemFree, MemAvailable
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * 1024
    return out


def cgroup_dirs(controller: str) -> list[str]:
    """This process's cgroup directories for `controller`: the v1 hierarchy naming it, and the
    v2 (unified) one; both exist on a hybrid layout like this machine's. In a container without
    its own cgroup namespace /proc/self/cgroup names the host's path, while the hierarchy mounted
    at /sys/fs/cgroup/<controller> is the container's own cgroup: then that mount is the one."""
    dirs = [d if os.path.isdir(d) else os.path.join(CGROUP_ROOT, controller)
            for d in _cgroup_paths(controller)]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _cgroup_paths(controller: str) -> list[str]:
    dirs = []
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        num, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if num == "0" and names == "":
            for base in (os.path.join(CGROUP_ROOT, "unified"), CGROUP_ROOT):
                if os.path.exists(os.path.join(base, "cgroup.controllers")):
                    dirs.append(base + path)
                    break
        elif controller in names.split(","):
            dirs.append(os.path.join(CGROUP_ROOT, controller) + path)
    return dirs


_limited: dict[str, list[tuple[str, int]]] = {}  # per process (looked up once): (usage file, limit)


def _limited_cgroups(controller: str, files: tuple[tuple[str, str], ...]) -> list[tuple[str, int]]:
    """The (usage file, limit) pairs of this process's `controller` cgroups that set a limit. Looked
    up at the first check only (a process does not change cgroups mid-run; an M inherits it)."""
    if controller not in _limited:
        found = []
        for d in cgroup_dirs(controller):
            for cur, lim in files:
                mx = _read_int(os.path.join(d, lim))
                if mx is not None and mx < (1 << 60) and os.path.exists(os.path.join(d, cur)):
                    found.append((os.path.join(d, cur), mx))
        _limited[controller] = found
    return _limited[controller]


def _cgroup_pids() -> tuple[int, int] | None:
    """(current, max) of the tightest pids cgroup this process is in, if any is limited."""
    best = None
    for cur_path, mx in _limited_cgroups("pids", (("pids.current", "pids.max"),)):
        cur = _read_int(cur_path)
        if cur is not None and (best is None or mx - cur < best[1] - best[0]):
            best = (cur, mx)
    return best


def _cgroup_memory_left() -> int | None:
    """Bytes the memory cgroup still allows (v2 memory.max, v1 memory.limit_in_bytes), if limited."""
    for cur_path, mx in _limited_cgroups("memory", (("memory.current", "memory.max"),
                                                    ("memory.usage_in_bytes", "memory.limit_in_bytes"))):
        used = _read_int(cur_path)
        if used is not None:
            return mx - used
    return None


def _open_files(pid: int) -> tuple[int, int] | None:
    """(open descriptors, soft RLIMIT_NOFILE) of `pid`. On Linux 6.2+ the size of /proc/PID/fd is
    the count; older kernels report 0 and the directory is listed."""
    try:
        n = os.stat(f"/proc/{pid}/fd").st_size or len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if pid not in _nofile:
        _nofile[pid] = None
        for line in (_read(f"/proc/{pid}/limits") or "").splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                _nofile[pid] = int(soft) if soft.isdigit() else None
    return None if _nofile[pid] is None else (n, _nofile[pid])


_nofile: dict[int, int | None] = {}  # pid -> its soft RLIMIT_NOFILE, read once


def _tasks() -> int | None:
    """Tasks (threads) on the machine: /proc/loadavg's 'running/total'."""
    text = _read("/proc/loadavg")
    try:
        return int(text.split()[3].split("/")[1])
    except (AttributeError, IndexError, ValueError):
        return None


_kernel: list[tuple[str, int]] = []


def _kernel_limits() -> list[tuple[str, int]]:
    """kernel.pid_max and kernel.threads-max (read once per process)."""
    if not _kernel:
        for name in ("pid_max", "threads-max"):
            limit = _read_int(f"/proc/sys/kernel/{name}")
            if limit is not None:
                _kernel.append((name, limit))
    return _kernel


def check(fd_pids: tuple[int, ...] = ()) -> tuple[int, str] | None:
    """None when the machine has room for one more M; else (errno, the one line naming the limit).
    `fd_pids`: the processes whose open files grow with the Ms (the coordinator, the agent)."""
    if os.environ.get("GMPSIM_MACHINE_GUARD", "").lower() in ("off", "0", "no", "false"):
        return None
    mem = _meminfo()
    margin_mb = _env_int("GMPSIM_MEM_MARGIN_MB", max(256, mem.get("MemTotal", 0) // (20 << 20)))
    avail = mem.get("MemAvailable")
    if avail is not None and avail < margin_mb << 20:
        return ENOMEM, (f"gmpsim: the machine's limit: MemAvailable {avail >> 20} MiB is under the margin of "
                        f"{margin_mb} MiB (GMPSIM_MEM_MARGIN_MB)")
    left = _cgroup_memory_left()
    if left is not None and left < margin_mb << 20:
        return ENOMEM, (f"gmpsim: the machine's limit: the memory cgroup allows {max(left, 0) >> 20} MiB more, "
                        f"under the margin of {margin_mb} MiB (GMPSIM_MEM_MARGIN_MB)")
    task_margin = _env_int("GMPSIM_TASK_MARGIN", 256)
    need = TASKS_PER_M + task_margin
    tasks = _tasks()
    if tasks is not None:
        for name, limit in _kernel_limits():
            if limit is not None and limit - tasks < need:
                return EAGAIN, (f"gmpsim: the machine's limit: {tasks} tasks of kernel.{name} {limit}: "
                                f"{limit - tasks} left, under {need} "
                                f"(an M's {TASKS_PER_M} + GMPSIM_TASK_MARGIN {task_margin})")
    pids = _cgroup_pids()
    if pids is not None and pids[1] - pids[0] < need:
        return EAGAIN, (f"gmpsim: the machine's limit: {pids[0]} tasks of the pids cgroup's pids.max {pids[1]}: "
                        f"{pids[1] - pids[0]} left, under {need} "
                        f"(an M's {TASKS_PER_M} + GMPSIM_TASK_MARGIN {task_margin})")
    fd_margin = _env_int("GMPSIM_FD_MARGIN", 64)
    for pid in dict.fromkeys(fd_pids):
        files = _open_files(pid)
        if files is not None and files[1] - files[0] < fd_margin:
            return ENOMEM, (f"gmpsim: the machine's limit: process {pid} has {files[0]} open files of its "
                            f"{files[1]} (ulimit -n): {files[1] - files[0]} left, under GMPSIM_FD_MARGIN {fd_margin}")
    return None


__all__ = ["check", "cgroup_dirs", "TASKS_PER_M", "ENOMEM", "EAGAIN"]
