"""Robustness with real processes: a coordinator that is SIGKILLed leaves nothing behind (no process
of its run, no shared-memory segment, no run directory).

The test starts the real `gmpsim run` as a subprocess (tests/shell/robust_run.py) and finds its
endpoint and run id in its gmpsim.log. Flooded with garbage and forgeries: test_robustness.py.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from coordinator.shell.procfs import descendants, processes, stat
from tests.shell.robust_run import run_line, start_run, wait_for

pytestmark = pytest.mark.processes


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, None once it is gone."""
    fields = stat(pid)
    return None if fields is None else (fields[0], int(fields[1]), int(fields[2]))


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
    except OSError:
        cmd = wchan = "?"
    return f"{pid} {_stat(pid)} {wchan} {cmd}"


def _group_processes() -> set[int]:
    """Live processes of pytest's process group other than pytest (as conftest counts them)."""
    me, pgid = os.getpid(), os.getpgid(0)
    return {p for p, (state, _, pgrp) in processes().items() if pgrp == pgid and state != "Z" and p != me}


def _descendants(root: int) -> set[int]:
    return set(descendants(root))


def test_coordinator_killed_leaves_nothing_behind(tmp_path):
    before = _group_processes()
    out = tmp_path / "run"
    proc, console = start_run(out)
    try:
        wait_for("schedtrace.log content", lambda: (out / "schedtrace.log").exists()
                 and (out / "schedtrace.log").stat().st_size > 0, 30, proc)
        run_id, endpoint = run_line(out)
        rundir = os.path.dirname(endpoint[len("ipc://"):])
        shm = f"/dev/shm/gmpsim-{run_id}-local"
        # The run is under way: its agent and a few Ms exist.
        wait_for("an agent and 3 Ms", lambda: len(_descendants(proc.pid)) >= 4, 20, proc)
        run_procs = _descendants(proc.pid) | (_group_processes() - before - {proc.pid})
        assert os.path.exists(shm) and os.path.isdir(rundir)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(5)  # the coordinator itself (a zombie until reaped)

        def left():
            procs = {p for p in run_procs | (_group_processes() - before) if (st := _stat(p)) and st[0] != "Z"}
            return procs, os.path.exists(shm), os.path.exists(rundir)

        deadline = killed + 5.0
        while any(left()) and time.monotonic() < deadline:
            time.sleep(0.02)
        gone_after = time.monotonic() - killed
        procs, shm_left, rundir_left = left()
        print(f"\nSIGKILL: {len(run_procs)} processes of the run; all gone after {gone_after:.2f}s")
        assert not procs, (f"still alive {gone_after:.1f}s after the coordinator's SIGKILL: "
                           f"{[_describe(p) for p in sorted(procs)]}")
        assert not shm_left, f"{shm} still there"
        assert not rundir_left, f"the run directory {rundir} still there"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        console.close()
