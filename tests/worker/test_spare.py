"""Spare Ms (worker/spare.py), in real runs: the forker keeps spare_ms of them forked ahead, newosproc
hands one its spec and that very process becomes the M; a spare killed is replaced; spare_ms = 0
forks every M on newosproc as before; none is left behind (the conftest fixture)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from coordinator.shell.procfs import descendants, processes
from coordinator.shell.procfs import title as _name
from tests.shell.robust_run import ROOT, start_run, stop, wait_for

pytestmark = __import__("pytest").mark.processes

# Goroutines that block in syscalls one after the other: sysmon retakes their P and the forker is
# asked for a new M each time (the path spares serve), for ~2 s of wall time.
BLOCKERS = ("--set", 'programs.main.ops=[["repeat", 12, [["go", "b", 1], ["sleep", 1500]]], ["wait"]]',
            "--set", 'programs.b.ops=[["syscall", 20000]]', "--set", "gomaxprocs=1")


def _spares(root: int) -> set[int]:
    """The live spares under `root`: `gmpsim spare local`, children of the forker."""
    table = processes()
    return {p for p in descendants(root) if p in table and table[p][0] != "Z" and _name(p) == "gmpsim spare local"
            and _name(table[p][1]) == "gmpsim forker local"}


def _report(out) -> dict:
    rep = json.loads((out / "report.json").read_text())
    assert rep["outcome"] == "ok" and rep["goroutines"]["lost"] == 0, rep["reason"]
    assert rep["leaks"]["processes"] == 0 and rep["leaks"]["shm_segments"] == 0
    return rep


def test_spares_are_kept_ready_and_become_the_new_ms(tmp_path):
    """With spare_ms = 2 the forker holds two spares; as newm asks, the very processes seen as spares
    go on as `gmpsim M<id>` (a message, not a fork) and new spares take their place."""
    out = tmp_path / "run"
    proc, console = start_run(out, "--set", "spare_ms=2", *BLOCKERS)
    try:
        first = wait_for("two spares", lambda: s if len(s := _spares(proc.pid)) == 2 else None, 30, proc)
        became = wait_for("a spare become an M", lambda: [p for p in first if _name(p).startswith("gmpsim M")],
                          30, proc)
        assert became and all(_name(p)[len("gmpsim M"):].isdigit() for p in became)
        wait_for("a new spare", lambda: _spares(proc.pid) - first, 30, proc)
        assert len(_spares(proc.pid)) <= 2
        assert proc.wait(90) == 0
    finally:
        stop(proc)
        console.close()
    _report(out)


def test_no_spares_with_spare_ms_0(tmp_path):
    """spare_ms = 0: no spare is ever forked; each M is forked when newosproc asks; the run ends ok."""
    out = tmp_path / "run"
    proc, console = start_run(out, "--set", "spare_ms=0", *BLOCKERS)
    seen: set[int] = set()
    try:
        wait_for("Ms", lambda: len(descendants(proc.pid)) >= 5, 30, proc)
        while proc.poll() is None:
            seen |= _spares(proc.pid)
            try:
                proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
    finally:
        stop(proc)
        console.close()
    assert proc.returncode == 0 and not seen
    _report(out)


def test_a_killed_spare_is_replaced_and_the_run_ends_ok(tmp_path):
    """SIGKILL a spare: the forker reaps it (its exit is nobody's post-mortem) and forks another."""
    out = tmp_path / "run"
    proc, console = start_run(out, "--set", "spare_ms=1", *BLOCKERS)
    try:
        (spare,) = wait_for("a spare", lambda: _spares(proc.pid), 30, proc)
        os.kill(spare, signal.SIGKILL)
        wait_for("another spare", lambda: _spares(proc.pid) - {spare}, 30, proc)
        assert proc.wait(90) == 0
    finally:
        stop(proc)
        console.close()
    rep = _report(out)
    assert all(d.get("pid") != spare for d in rep["deaths"])


def test_a_bad_spare_ms_is_one_line():
    r = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "steady", "--set", "spare_ms=65"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "spare_ms: expected an integer from 0 to 64, got 65" in r.stderr
