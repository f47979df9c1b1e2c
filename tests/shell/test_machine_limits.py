"""Real resource limits end a run as Go's do (issue 12 item 3, issue 13 item 5), without containers:
a clone that really fails (a pids cgroup), the machine-limit guard (margins set through its
environment knobs so it trips at a small N), and an agent restarted after its arena is gone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from coordinator.shell.procfs import title
from protocol.titles import is_m_title
from tests.pids_cgroup import in_cgroup, pids_cgroup, pids_root

pytestmark = pytest.mark.processes
needs_pids_cgroup = pytest.mark.skipif(pids_root() is None, reason="needs root and a pids cgroup controller")

# 60 goroutines blocked in syscalls at once: sysmon's retake wants ~60 Ms (~180 tasks).
SCENARIO = """
name = "limit-probe"
gomaxprocs = 2
timescale = 100.0
seed = 1
time_limit_s = 60.0
expect = "ok"

[programs.main]
ops = [["go", "blocker", 60], ["wait"]]

[programs.blocker]
ops = [["run", 20], ["syscall", %d], ["run", 20]]
"""


def _scenario(tmp_path, syscall_us: int = 300_000) -> str:
    path = tmp_path / "limit-probe.toml"
    path.write_text(SCENARIO % syscall_us)
    return str(path)


def _run(argv_prefix, args, env, out, timeout=90):
    t0 = time.monotonic()
    p = subprocess.run([*argv_prefix, sys.executable, "-m", "coordinator.cli", *args, "--out", str(out)],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)
    with open(out / "report.json") as f:
        return p, json.load(f), time.monotonic() - t0


def _assert_newosproc_fatal(p, rep, errno: int, cause: str, extra: str | None):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1, p.stdout + p.stderr  # expected ok, ended fatal
    assert lines[-1] == "fatal error: newosproc", p.stderr
    i = -2
    if extra is not None:
        assert lines[i].startswith("gmpsim: the machine's limit: ") and extra in lines[i], p.stderr
        i -= 1
    if errno == 11:
        assert lines[i] == "runtime: may need to increase max user processes (ulimit -u)", p.stderr
        i -= 1
    assert lines[i].startswith("runtime: failed to create new OS thread (have "), p.stderr
    assert lines[i].endswith(f" already; errno={errno})"), p.stderr
    assert rep["outcome"] == "fatal" and rep["fatal"]["message"] == "newosproc"
    assert rep["ms"]["newosproc_failed"]["total"] == 1 and rep["ms"]["newosproc_failed"][cause] == 1
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}


def test_fork_m_returns_eagain_when_the_pids_cgroup_is_full():
    """The fork itself (os.fork → clone) fails with EAGAIN: fork_m says so, it does not raise."""
    if pids_root() is None:
        pytest.skip("needs root and a pids cgroup controller")
    code = "from worker.m import fork_m; print(fork_m(None, {}))"
    with pids_cgroup(1) as cg:
        p = subprocess.run(in_cgroup(cg, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "-11", p.stdout + p.stderr


@needs_pids_cgroup
def test_a_real_clone_failure_is_gos_newosproc_fatal(tmp_path):
    """A pids cgroup of 60 tasks, the guard off: the real fork fails (in the agent or an M) and the
    run ends promptly with Go 1.16's lines, counted, nothing left behind."""
    with pids_cgroup(60) as cg:
        p, rep, wall = _run(in_cgroup(cg, []), ["run", _scenario(tmp_path)], {"GMPSIM_MACHINE_GUARD": "off"},
                            tmp_path / "run")
    _assert_newosproc_fatal(p, rep, 11, "clone", None)
    assert rep["ms"]["created"] < 25 and wall < 60, (rep["ms"], wall)


@needs_pids_cgroup
def test_the_guard_stops_at_the_pids_cgroups_limit(tmp_path):
    """pids.max 2,000 with a task margin of 1,940: the guard refuses the fork at ~60 tasks, long
    before the cgroup is full, with Go's EAGAIN lines and one line naming the limit."""
    with pids_cgroup(2000) as cg:
        p, rep, _ = _run(in_cgroup(cg, []), ["run", _scenario(tmp_path)], {"GMPSIM_TASK_MARGIN": "1940"},
                         tmp_path / "run")
    _assert_newosproc_fatal(p, rep, 11, "machine", "pids cgroup's pids.max 2000")
    assert rep["ms"]["created"] < 25, rep["ms"]


def test_the_guard_stops_under_the_memory_margin(tmp_path):
    """A memory margin larger than the machine: the first newosproc fails as clone does without
    memory (errno=12), one extra line names MemAvailable."""
    p, rep, _ = _run([], ["run", _scenario(tmp_path)], {"GMPSIM_MEM_MARGIN_MB": str(1 << 30)}, tmp_path / "run")
    _assert_newosproc_fatal(p, rep, 12, "machine", "MemAvailable")


def test_the_guard_stops_at_the_open_files_limit(tmp_path):
    """An open-files margin larger than the coordinator's limit (ulimit -n): errno=12 and the line."""
    p, rep, _ = _run([], ["run", _scenario(tmp_path)], {"GMPSIM_FD_MARGIN": str(10 ** 7)}, tmp_path / "run")
    _assert_newosproc_fatal(p, rep, 12, "machine", "(ulimit -n)")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _arena_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.split()[-1]
                if path.startswith("/dev/shm/gmpsim-"):
                    return path
    except OSError:
        pass
    return None


def test_an_agent_restarted_after_its_arena_is_gone_ends_the_run_fatal(tmp_path):
    """Mid-run the arena is unlinked and the agent SIGKILLed: the restarted agent cannot adopt it,
    says so in one line, and the run ends fatal at once (not at its time limit), nothing left."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", _scenario(tmp_path, 3_000_000),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, agent, arena = time.monotonic() + 30, None, None
        while time.monotonic() < deadline and arena is None:
            for c in _children(proc.pid):
                # the agent: it maps the arena, and its forker (spawned as it starts) has forked Ms
                # (by title: its first child is its rehearsal's stand-in, before the agent's hello)
                if any(is_m_title(title(m)) for f in _children(c) for m in _children(f)) and _arena_of(c):
                    agent, arena = c, _arena_of(c)
            time.sleep(0.1)
        assert arena, "no agent with an arena and Ms"
        os.unlink(arena)
        t0 = time.monotonic()
        os.kill(agent, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
        ended = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    adopt = [ln for ln in stderr.splitlines() if "cannot adopt the arena" in ln]
    assert len(adopt) == 1 and os.path.basename(arena) in adopt[0] and "it is gone" in adopt[0], stderr
    assert stderr.strip().splitlines()[-1] == "fatal error: host agent local died", stderr
    with open(out / "report.json") as f:
        rep = json.load(f)
    assert rep["outcome"] == "fatal" and ended < 20, (rep["outcome"], ended)
    assert rep["leaks"]["processes"] == 0
