"""Fault-injection experiments with real processes: the built-in chaos scenarios end as expected,
with no goroutine lost, no invariant broken and nothing left behind; Go's fork failure prints Go's
lines; the same seed plans the same faults."""
from __future__ import annotations

import pytest

from tests.gmpsim_cli import gmpsim

pytestmark = pytest.mark.processes

CHAOS = ["message-chaos", "template-crash", "stop-resume"]  # kill-storm: its own test below


def _sound(rep: dict) -> None:
    assert rep["goroutines"]["lost"] == 0
    assert rep["invariants"]["violations"] == [] and rep["invariants"]["checked"] > 0
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}


@pytest.mark.parametrize("name", CHAOS)
def test_chaos_scenario_ends_ok_with_nothing_lost(tmp_path, name):
    r = gmpsim("run", name, out_dir=tmp_path / "run", timeout=180)
    rep = r.report
    assert r.code == 0, r.stdout + r.stderr
    assert rep["outcome"] == "ok"
    assert rep["goroutines"]["completed"] == rep["goroutines"]["created"]
    _sound(rep)
    assert rep["faults_summary"]["by_kind"], rep["faults_summary"]
    assert "replay: gmpsim run " + name in r.stdout


def test_kill_storm_recovers_every_killed_m(tmp_path):
    r = gmpsim("run", "kill-storm", out_dir=tmp_path / "run", timeout=180)
    assert r.code == 0, r.stdout + r.stderr
    rep = r.report
    _sound(rep)
    assert rep["outcome"] == "ok" and rep["goroutines"]["completed"] == rep["goroutines"]["created"]
    kills = [f for f in rep["faults"] if f["kind"] == "kill-m" and f["victim"] is not None]
    assert rep["goroutines"]["created"] >= 2000 and len(kills) >= 3
    for f in kills:
        assert f["detected_ms"] is not None and f["detected_ms"] >= f["time_ms"]
        # -9 when the agent reaped it; -256 when its forker M did (its exit status is not ours)
        assert "process died (status " in f["recovery"] and "g0 stack to freem" in f["recovery"]
    deaths = {d["m"]: d for d in rep["deaths"]}
    for f in kills:  # the post-mortem: the M's last g0 frames, read from the arena
        d = deaths[f["victim"]]
        assert d["frames"] and d["frames"][0]["fn"] == "runtime.mstart"
        assert d["doing"]
    assert rep["ms"]["died"] == len(kills)


def test_stopped_m_is_fenced_and_exits_when_resumed(tmp_path):
    rep = gmpsim("run", "stop-resume", out_dir=tmp_path / "run").report
    _sound(rep)
    fenced = [d for d in rep["deaths"] if d.get("why", "").startswith("lost:")]
    assert fenced, rep["deaths"]
    threads = {t["m"]: t for t in rep["threads"]}
    for d in fenced:  # resumed by SIGCONT, told to exit: its process ends before the run does
        assert "gone_ms" in threads[d["m"]], threads[d["m"]]


def test_fork_eagain_prints_go_116s_lines(tmp_path):
    r = gmpsim("run", "fork-eagain", out_dir=tmp_path / "run")
    assert r.code == 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "fatal error: newosproc"
    assert lines[-2] == "runtime: may need to increase max user processes (ulimit -u)"
    assert lines[-3].startswith("runtime: failed to create new OS thread (have ")
    assert lines[-3].endswith(" already; errno=11)")
    assert r.report["outcome"] == "fatal" and r.report["leaks"] == {"processes": 0, "shm_segments": 0}


def test_fork_eagain_with_retry_survives_a_transient_failure(tmp_path):
    r = gmpsim("run", "syscall-storm", "--fault", "fork-fail:p=0.5,start=1ms,count=3,retry=true",
               out_dir=tmp_path / "run")
    assert r.code == 0, r.stdout + r.stderr
    rec = [f for f in r.report["faults"] if f["kind"] == "fork-fail"]
    assert rec and all(f["retry"] for f in rec)


def test_same_seed_plans_the_same_faults(tmp_path):
    def plan(seed, d):
        rep = gmpsim("run", "template-crash", "--seed", str(seed), "--fault", "exit-m:every=4ms,count=3",
                     out_dir=tmp_path / d).report
        _sound(rep)
        return [(f["planned_ms"], f["kind"], f["target"]) for f in rep["faults"] if "planned_ms" in f]
    a, b = plan(7, "a"), plan(7, "b")
    assert a == b and len(a) == 5


def test_bad_fault_spec_is_one_line_and_exit_2():
    r = gmpsim("run", "syscall-storm", "--fault", "kill-m:every=fast")
    assert r.code == 2
    assert r.stderr.strip().count("\n") == 0 and "every" in r.stderr


def test_an_agent_killed_for_good_leaves_nothing_the_report_counts(tmp_path):
    """kill-template with restart=false: the run ends fatal (the host's template thread is gone),
    and the dead agent's arena is unlinked by the coordinator, its parent, as part of the orderly
    end: the report's leaks are 0, not the arena counted (twice) and left to the last-resort sweep."""
    r = gmpsim("run", "steady", "--fault", "kill-template:at=20ms,restart=false", out_dir=tmp_path / "run")
    rep = r.report
    assert rep["outcome"] == "fatal" and "host agent local died" in rep["fatal"]["message"], rep["outcome"]
    assert rep["goroutines"]["lost"] == 0
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}
    log = (tmp_path / "run" / "gmpsim.log").read_text()
    assert "its arena" in log and "unlinked by the coordinator" in log
    assert "left behind after shutdown" not in log
