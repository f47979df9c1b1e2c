"""Reading /proc: whether a process is alive (a zombie is not), whose child it is, which process
group it is in, what lies below it, how much memory it uses. For leak counts, the bench and tests."""
from __future__ import annotations

import os


def stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name: [state, ppid, pgrp, ...], or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].decode().split()


def alive(pid: int) -> bool:
    """Is pid a live process (not gone, not a zombie)?"""
    fields = stat(pid) if pid else None
    return fields is not None and fields[0] != "Z"


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
