r"""Names whose owner can be checked: what a run leaves on the file system says who made it.

Shared-memory arenas (``/dev/shm/gmpsim-<run>-<host>``) and private run directories
(``/tmp/gmpsim-<owner>_<random>``) carry their owner's pid and start time (clock ticks since
boot, /proc/<pid>/stat field 22) at the front: ``gmpsim-<pid>_<start>_`` (a run id stays a
``\w+`` word). A pid alone is not
enough (pids are reused); pid and start time together name one process for the machine's uptime.
So a later start, or `gmpsim clean`, can tell a dead owner's leftovers (removed) from a live run's
(left alone), and says "unknown" for names it cannot read (an older gmpsim's, another tool's).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

PREFIX = "gmpsim-"
SHM_DIR = "/dev/shm"
_OWNED = re.compile(r"gmpsim-([1-9][0-9]{0,9})_([0-9]{1,20})_")


_RUN_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def arena_name(run_id: str, host: str) -> str:
    """The /dev/shm name of one host's arena in one run: ``gmpsim-<run_id>-<host>``.

    Characters outside ``[A-Za-z0-9_.]`` in run_id (including ``-``) and outside
    ``[A-Za-z0-9_.-]`` in host become ``_``: the first ``-`` after ``gmpsim-``
    then always ends the run id, so the segments of run "a" can never be
    confused with those of run "a-b". A run id made by ``new_run_id`` starts with its owner's
    tag, so the owner of the segment can be checked (``owner_alive``).
    """
    run = _RUN_UNSAFE.sub("_", str(run_id)) or "_"
    node = _HOST_UNSAFE.sub("_", str(host)) or "_"
    name = f"{PREFIX}{run}-{node}"
    if len(name) > 255:  # NAME_MAX of tmpfs
        raise ValueError(f"arena name too long ({len(name)} bytes): {name[:64]}...")
    return name


def new_run_id() -> str:
    """``<pid>_<start>_<random>``: a fresh run id that names this process as its owner."""
    return f"{owner_tag()}_{os.urandom(4).hex()}"


def start_time(pid: int) -> int | None:
    """The start time of process pid (clock ticks since boot), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == b"Z":
        return None
    try:
        return int(fields[19])  # field 22 of the whole line; fields here start at field 3
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Is pid a live process (not gone, not a zombie)? (The one such check, for both sides.)"""
    return bool(pid) and start_time(pid) is not None


def owner_tag(pid: int | None = None) -> str:
    """``<pid>_<start>`` of this process (or of pid): the front of every name it makes."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}_{start_time(pid) or 0}"


def owner_of(name: str) -> tuple[int, int] | None:
    """(pid, start) from a name made with owner_tag, None if the name does not say."""
    found = _OWNED.match(name)
    return (int(found[1]), int(found[2])) if found else None


def owner_alive(name: str) -> bool | None:
    """Is the owner of this name still running? None: the name does not say who owns it."""
    owner = owner_of(name)
    if owner is None:
        return None
    return start_time(owner[0]) == owner[1]


def clean(shm_dir: str = SHM_DIR, tmp_dir: str | None = None) -> dict[str, list[str]]:
    """Remove every gmpsim segment and run directory whose owner is dead. Returns the paths
    ``removed``, those of a live owner (``alive``) and those whose owner is ``unknown``."""
    out: dict[str, list[str]] = {"removed": [], "alive": [], "unknown": []}
    for base in (shm_dir, tmp_dir or tempfile.gettempdir()):
        try:
            names = sorted(n for n in os.listdir(base) if n.startswith(PREFIX))
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            state = owner_alive(name)
            if state is None:
                out["unknown"].append(path)
                continue
            if state:
                out["alive"].append(path)
                continue
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError:
                out["unknown"].append(path)
                continue
            out["removed"].append(path)
    return out
