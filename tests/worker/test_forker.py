"""The host's forker (worker/forker.py), in real runs: it forks the agent's Ms, their exit statuses
reach the report through it, and one killed mid-run is replaced with no M lost or left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from coordinator.shell.procfs import descendants, processes
from coordinator.shell.procfs import title as _name
from tests.shell.robust_run import ROOT, ms_under, start_run, stop, wait_for

pytestmark = __import__("pytest").mark.processes


def _forkers(root: int) -> list[tuple[int, int]]:
    """(pid, ppid) of every live `gmpsim forker local` under `root` whose parent is the agent (an M
    just forked by the forker bears its name until its own setproctitle)."""
    table = processes()
    return [(p, table[p][1]) for p in descendants(root)
            if p in table and table[p][0] != "Z" and _name(p) == "gmpsim forker local"
            and _name(table[p][1]) == "gmpsim agent local"]


def test_the_forker_is_the_agents_child_and_the_parent_of_the_ms_it_forks(tmp_path):
    """m0 and sysmon's Ms are forked by `gmpsim forker local`, a child of `gmpsim agent local`,
    which rehearsed an M's start first (worker/rehearsal.py) and logged it."""
    out = tmp_path / "run"
    proc, console = start_run(out)
    try:
        forkers = wait_for("a forker", lambda: _forkers(proc.pid), 30, proc)
        (forker, agent), = forkers
        assert _name(agent) == "gmpsim agent local"
        ms = wait_for("an M forked by the forker", lambda: [
            p for p, (state, ppid, _) in processes().items()
            if ppid == forker and state != "Z" and _name(p).startswith("gmpsim M")], 30, proc)
        assert ms
    finally:
        stop(proc)
        console.close()
    assert "gmpsim.forker INFO rehearsed an M's start in" in (out / "gmpsim.log").read_text()


def test_a_killed_forker_is_replaced_and_the_run_ends_ok(tmp_path):
    """SIGKILL the forker mid-run: the agent starts another, which forks the orders the dead one had
    not carried out; the run ends ok, no goroutine lost, nothing left behind (the conftest fixture)."""
    out = tmp_path / "run"
    proc, console = start_run(out, "--set", "time_limit_s=60")
    try:
        (first, _), = wait_for("a forker", lambda: _forkers(proc.pid), 30, proc)
        wait_for("Ms", lambda: len(ms_under(proc.pid)) >= 3, 30, proc)
        os.kill(first, signal.SIGKILL)
        wait_for("another forker", lambda: [p for p, _ in _forkers(proc.pid) if p != first], 10, proc)
        assert proc.wait(90) == 0
    finally:
        stop(proc)
        console.close()
    rep = json.loads((out / "report.json").read_text())
    assert rep["outcome"] == "ok" and rep["goroutines"]["lost"] == 0, rep["reason"]
    assert rep["leaks"]["processes"] == 0 and rep["leaks"]["shm_segments"] == 0
    assert "its forker" in (out / "gmpsim.log").read_text() and "died; starting another" in (
        out / "gmpsim.log").read_text()


def test_exit_statuses_of_ms_the_forker_forked_reach_the_report(tmp_path):
    """kill-storm SIGKILLs Ms; the forker is the parent of m0's and sysmon's Ms, reaps them and
    passes their status on, so the post-mortems say -9 (not 'not ours to read', -256) for them."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "kill-storm", "--no-progress",
                        "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    deaths = json.loads((out / "report.json").read_text())["deaths"]
    statuses = {d["status"] for d in deaths}
    assert -9 in statuses, deaths[:5]


def _mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[5] for line in f if len(line.split()) > 5 and line.split()[5].startswith("/")}


def test_the_forker_is_a_fresh_interpreter_so_its_ms_map_less_than_the_agent(tmp_path):
    """The forker is spawned (python -c FORKER_MAIN), not forked from the agent: the libraries the
    coordinator and the agent loaded and an M never needs are not mapped in the forker or its Ms."""
    out = tmp_path / "run"
    proc, console = start_run(out)
    try:
        (forker, agent), = wait_for("a forker", lambda: _forkers(proc.pid), 30, proc)
        m = wait_for("an M of the forker's", lambda: [
            p for p, (state, ppid, _) in processes().items()
            if ppid == forker and state != "Z" and _name(p).startswith("gmpsim M")], 30, proc)[0]
        agents, forkers, ms = _mapped_files(agent), _mapped_files(forker), _mapped_files(m)
        assert ms <= forkers < agents, (sorted(ms - forkers), sorted(forkers - agents))
        assert any("_ssl" in f for f in agents) and not any("_ssl" in f for f in ms)
        with open(f"/proc/{forker}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0].decode().startswith("gmpsim forker local")
    finally:
        stop(proc)
        console.close()


def test_a_forker_that_cannot_start_says_why_in_the_agents_log(tmp_path):
    """Its config names an arena that is gone: the spawned forker writes one record, with the
    cause, to the log file of the process that started it, and exits 70 (the agent sees it die)."""
    import logging

    from worker.forker import Forker
    from worker.g0 import Arena
    from worker.m import HostConfig

    arena = Arena.create(f"gmpsim-test-forker-{os.getpid()}", slots=2)
    cfg = HostConfig(endpoint="ipc:///nonexistent", host="local", guardian_pid=os.getpid(), arena=arena,
                     programs={}, timescale=10.0)
    arena.unlink()
    arena.close()
    handler, root = logging.FileHandler(tmp_path / "gmpsim.log"), logging.getLogger()
    saved, root.handlers = root.handlers, [handler]  # as in a run (pytest's own handlers have a file: /dev/null)
    try:
        forker = Forker()
        forker.configure(cfg)
    finally:
        root.handlers = saved
        handler.close()
    try:
        forker.wait_ready(30)  # its interpreter came up, then its config failed it
        assert forker.ready and forker.answers(30) is None  # its end of file: it is gone
        _, status = os.waitpid(forker.pid, 0)
        forker.order({"m": 1})  # to a dead forker: no error (the agent orders it again of the next one)
        assert not forker.answered  # it never carried out an order: the agent counts it against the host
    finally:
        forker.sock.close()
    assert os.waitstatus_to_exitcode(status) == 70
    text = (tmp_path / "gmpsim.log").read_text()
    assert f" {forker.pid} gmpsim.forker ERROR the forker died" in text and "FileNotFoundError" in text, text


def test_the_forkers_start_is_not_on_m0s_path(tmp_path):
    """The agent says hello once its spawned forker is up (wait_ready: its imports are done, its
    libzmq mapped), so at the welcome, when Go time starts, m0 is forked at once: m0 starts within a
    third of the wall time a forker's interpreter takes to come up, measured here too (~0.1 against
    ~0.1-0.3 s; with the interpreter's start on its path, m0 started after 0.12-0.15 s)."""
    import time

    from worker.forker import Forker

    t0 = time.monotonic()
    forker = Forker()
    try:
        forker.wait_ready(30)
        interpreter_s = time.monotonic() - t0
        assert forker.ready and any("libzmq" in f for f in _mapped_files(forker.pid))
    finally:
        forker.close()
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "syscall-storm", "--no-progress",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    m0 = next(t for t in rep["threads"] if t["m"] == 0)
    m0_wall_s = m0["started_ms"] * rep["timescale"] / 1000
    assert m0_wall_s < interpreter_s / 3, (m0_wall_s, interpreter_s)
