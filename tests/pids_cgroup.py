"""A pids cgroup of its own for a child test process: a real task limit without containers.

This machine has a hybrid cgroup layout (v1 controllers, a v2 hierarchy under unified/): the v1
pids hierarchy at /sys/fs/cgroup/pids is used where it is mounted, else the v2 root when it offers
the pids controller. Needs root. RLIMIT_NPROC would not do: it never binds root (the kernel exempts
the initial user namespace's root), and the suite runs as root.
"""
from __future__ import annotations

import itertools
import os
import signal
import time
from contextlib import contextmanager

_count = itertools.count()


def pids_root() -> str | None:
    """Where a pids cgroup can be made here, or None (not root, or no pids controller)."""
    if os.geteuid() != 0:
        return None
    v1 = "/sys/fs/cgroup/pids"
    if os.path.exists(os.path.join(v1, "cgroup.procs")) and os.access(v1, os.W_OK):
        return v1
    for v2 in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            with open(os.path.join(v2, "cgroup.subtree_control")) as f:
                if "pids" in f.read().split():
                    return v2
        except OSError:
            pass
    return None


@contextmanager
def pids_cgroup(max_tasks: int):
    """A fresh pids cgroup limited to `max_tasks`; yields its directory. Start a process in it with
    `in_cgroup(path, argv)`. At the end every task left in it is killed and the cgroup removed."""
    root = pids_root()
    assert root is not None, "no pids cgroup here"
    path = os.path.join(root, f"gmpsim-test-{os.getpid()}-{next(_count)}")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(max_tasks))
        yield path
    finally:
        deadline = time.monotonic() + 5
        while True:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
            if not pids or time.monotonic() > deadline:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        os.rmdir(path)


def in_cgroup(path: str, argv: list[str]) -> list[str]:
    """argv run inside the cgroup: a shell moves itself in, then execs argv."""
    return ["/bin/sh", "-c", f'echo $$ > {path}/cgroup.procs && exec "$@"', "sh", *argv]
