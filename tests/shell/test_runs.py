"""Integration: the built-in scenarios and the M machinery with real processes, sockets and shared
memory, through the real `gmpsim` command. Sizes are small; the leak fixture (conftest) checks that
every run leaves no process and no shared-memory segment."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.gmpsim_cli import gmpsim

pytestmark = pytest.mark.processes

# Each built-in scenario at a small size: (name, overrides, expected exit code, expected outcome).
BUILTINS = [
    ("syscall-storm", [], 0, "ok"),
    ("spawn-burst", [], 0, "ok"),
    ("locked-threads", [], 0, "ok"),
    ("cgo-calls", [], 0, "ok"),
    ("thread-exhaustion", [], 0, "fatal"),
    ("deadlock", [], 0, "fatal"),
    ("steady", ["--set", "timescale=25"], 0, "ok"),
]


@pytest.mark.parametrize("name,overrides,code,outcome", BUILTINS, ids=[b[0] for b in BUILTINS])
def test_builtin_scenario_reaches_its_expected_outcome(tmp_path, name, overrides, code, outcome):
    r = gmpsim("run", name, *overrides, out_dir=tmp_path / "run")
    assert r.code == code, r.stdout + r.stderr
    rep = r.report
    assert rep["schema"] == "gmpsim.report/1"
    assert rep["outcome"] == outcome
    assert rep["goroutines"]["lost"] == 0
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}
    if outcome == "ok":
        assert rep["goroutines"]["completed"] == rep["goroutines"]["created"]
    else:
        assert r.stderr.strip().splitlines()[-1] == f"fatal error: {rep['fatal']['message']}"
    for f in ("report.json", "schedtrace.log", "gmpsim.log"):
        assert (tmp_path / "run" / f).exists()


def test_syscall_storm_scales_out_through_sysmon(tmp_path):
    rep = gmpsim("run", "syscall-storm", out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok"
    assert rep["ms"]["created"] > rep["gomaxprocs"]
    assert rep["startm"]["by_caller"].get("retake", 0) > 0  # sysmon retake → handoffp → startm
    lat = rep["latency_us"]
    assert lat["newm_to_mstart"]["n"] == rep["ms"]["created"]
    # ... in its two parts, for each M (one machine, one clock): to the child's mstart, then to its hello
    assert lat["newm_to_child"]["n"] == lat["child_to_hello"]["n"] == rep["ms"]["created"]
    assert 0 < lat["newm_to_child"]["p50"] < lat["newm_to_mstart"]["max"]
    assert 0 < lat["child_to_hello"]["p50"] < lat["newm_to_mstart"]["max"]
    # Ms parked by exitsyscall are woken by later startm calls, each after some time blocked (its M says how long)
    assert lat["notesleep_to_wake"]["n"] == lat["notewakeup_to_running"]["n"] > 0
    assert lat["notesleep_to_wake"]["p50"] >= 1000
    trace = (tmp_path / "run" / "schedtrace.log").read_text().splitlines()
    assert trace and trace[0].startswith("SCHED 0ms: gomaxprocs=2 idleprocs=")


def test_thread_exhaustion_prints_gos_lines(tmp_path):
    r = gmpsim("run", "thread-exhaustion", out_dir=tmp_path / "run")
    assert r.code == 0
    assert r.stderr.splitlines()[-2:] == ["runtime: program exceeds 10-thread limit",
                                          "fatal error: thread exhaustion"]
    assert r.report["fatal"]["lines"] == r.stderr.splitlines()[-2:]


TAINT = """
name = "taint"
gomaxprocs = 1
timescale = 50
[programs.main]
# GOMAXPROCS=1. runtime.main's start forks M2 straight from m0 (gcenable's <-c while init holds main
# locked). "hold" locks and unlocks its M (taints its process: the first lock also starts the
# template thread) and blocks; its handoffp, with no idle or spinning M, starts a spinning M that
# its own process forks, and so on down the chain: each child inherits the taint.
ops = [["go", "hold", 1], ["syscallblock", 300], ["lock"], ["go", "hold2", 2], ["syscallblock", 300],
       ["unlock"], ["syscallblock", 300]]
[programs.hold]
ops = [["lock"], ["unlock"], ["syscallblock", 20000]]
[programs.hold2]
ops = [["syscallblock", 20000]]
"""


def test_newm_forks_from_the_caller_and_the_child_inherits_its_taint(tmp_path):
    """A locked M taints its own process; newm forks straight from the caller's process (when it is
    not locked: then the template forks, clean), so a child inherits every taint of its forker, and
    every M named in a taint is one of its ancestors."""
    f = tmp_path / "taint.toml"
    f.write_text(TAINT)
    rep = gmpsim("run", str(f), out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok", rep
    threads = {t["m"]: t for t in rep["threads"]}
    assert threads[0]["taint"] == "" and threads[2]["forker"] == 0  # runtime.main's start

    def ancestors(t):
        while t["forker"] is not None and not t["template"]:
            t = threads[t["forker"]]
            yield t["m"]

    tainted = [t for t in threads.values() if t["taint"]]
    assert tainted, threads
    for t in threads.values():
        if t["template"]:
            assert t["taint"] == "", t
        elif t["forker"] is not None:
            assert set(threads[t["forker"]]["taint"].split()) <= set(t["taint"].split()), (t, threads)
        assert {f"M{m}" for m in ancestors(t)} >= set(t["taint"].split()), (t, threads)
    assert any(f"M{t['forker']}" in t["taint"].split() for t in tainted)  # forked by the locker itself


TIMER_HOG = """
name = "timer-hog"
gomaxprocs = 1
timescale = 20
time_limit_s = 60
schedtrace_ms = 0  # with schedtrace set sysmon never deep-sleeps
[programs.main]
ops = [["go", "hog", 1], ["sleep", 5000], ["wait"]]
[programs.hog]
# Woken by its timer while every P was idle (sysmon deep asleep), then computes 60 ms.
ops = [["sleep", 2000], ["run", 60000]]
"""


def test_compute_woken_by_a_timer_is_preempted(tmp_path):
    """sysmon's deep sleep ends at the next timer (Go: notetsleep(&sched.sysmonnote, next - now)), so
    the goroutine the timer wakes, computing with no syscall, is preempted after forcePreemptNS."""
    f = tmp_path / "hog.toml"
    f.write_text(TIMER_HOG)
    rep = gmpsim("run", str(f), out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok", rep
    assert rep["sysmon"]["preempt"] >= 1, rep["sysmon"]
    # As real Go 1.19 here (gmpsim compare): mnext 3, m0, sysmon and the M that gcenable's <-c starts
    # while main is locked in init (stoplockedm → handoffp); no M is started for the timers: the
    # one P's M waits for them in netpoll.
    assert rep["ms"]["mnext"] == 3 and rep["ms"]["created"] == 2, rep["ms"]


def test_exited_ms_stack_slot_is_reused_only_after_its_process_is_gone(tmp_path):
    rep = gmpsim("run", "locked-threads", out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok"
    assert rep["ms"]["exited"] > 0 and rep["ms"]["stacks_freed"] > 0
    threads = sorted(rep["threads"], key=lambda t: t["allocated_ms"])
    reuses = 0
    for i, t in enumerate(threads):
        for earlier in threads[:i]:
            if earlier["slot"] == t["slot"] and "exited_ms" in earlier:
                reuses += 1
                assert "gone_ms" in earlier and earlier["gone_ms"] <= t["allocated_ms"], (earlier, t)
                assert earlier["stack_freed_ms"] <= t["allocated_ms"]
    assert reuses > 0
    log = (tmp_path / "run" / "gmpsim.log").read_text()
    assert "still runs" not in log  # the agent's own check at stackfree


def test_bad_scenario_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('gomaxprocs = "two"\n[programs.main]\nops = [["run", 1]]\n')
    r = gmpsim("run", str(f))
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "gomaxprocs" in lines[0]
    r = gmpsim("run", "syscall-storm", "--set", "gomaxprocs=0")
    assert r.code == 2 and "gomaxprocs" in r.stderr


def test_time_limit_aborts_with_exit_3(tmp_path):
    r = gmpsim("run", "steady", "--set", "time_limit_s=0.5", out_dir=tmp_path / "run")
    assert r.code == 3, r.stdout + r.stderr
    assert r.report["outcome"] == "aborted"
    assert r.report["leaks"] == {"processes": 0, "shm_segments": 0}


def test_ctrl_c_is_an_orderly_abort(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "steady", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (out / "schedtrace.log").exists() or (out / "schedtrace.log").stat().st_size == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 3, stdout + stderr
    import json
    rep = json.loads((out / "report.json").read_text())
    assert rep["outcome"] == "aborted" and rep["leaks"] == {"processes": 0, "shm_segments": 0}


def test_scenarios_lists_every_builtin():
    r = gmpsim("scenarios")
    assert r.code == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    chaos = ["fork-eagain", "kill-storm", "message-chaos", "stop-resume", "template-crash"]
    assert names == sorted([b[0] for b in BUILTINS] + chaos + ["scale-out"])


def test_version():
    r = gmpsim("--version")
    assert r.code == 0 and r.stdout.startswith("gmpsim ")


BARE = """
name = "bare"
gomaxprocs = 2
timescale = 50
schedtrace_ms = 1
scheddetail = true
[programs.main]
ops = [["run", 3000]]
"""


def test_bare_program_makes_go_s_four_ms(tmp_path):
    """runtime.main's start with real processes: m0, sysmon (virtual), the spinning M of wakep at
    `go forcegchelper` and the M of stoplockedm's handoffp at gcenable's <-c (mnext 4, 3 forked);
    scheddetail shows the runtime's goroutines parked with Go's wait reasons."""
    f = tmp_path / "bare.toml"
    f.write_text(BARE)
    # Forked on newosproc (no spares): a spare M starts fast enough (~40 µs of Go time here) that
    # wakep's spinning M may have parked on midle before gcenable's handoffp, which then takes it
    # (mget) instead of a new one. That is of creation timing, not of a rule (as in the cgo test).
    rep = gmpsim("run", str(f), "--set", "spare_ms=0", out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok", rep
    assert rep["ms"]["created"] == 3 and sorted(t["m"] for t in rep["threads"]) == [0, 2, 3]
    assert all(t["forker"] == 0 and not t["template"] for t in rep["threads"] if t["m"] != 0)
    assert rep["goroutines"]["system"] == 3
    assert rep["goroutines"]["created"] == 1 == rep["goroutines"]["completed"]
    trace = (tmp_path / "run" / "schedtrace.log").read_text()
    assert "  G2: status=4(force gc (idle)) m=-1 lockedm=-1\n" in trace
    assert "  G3: status=4(GC sweep wait) m=-1 lockedm=-1\n" in trace
    assert "  G4: status=4(GC scavenge wait) m=-1 lockedm=-1\n" in trace
    assert "  M1: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=2 " in trace  # sysmon


def test_cgo_binary_counts_its_extra_m(tmp_path):
    """A cgo binary: the extra M (M1, no thread) and the template thread count in threads=, and the
    extra M's G in the system goroutines."""
    f = tmp_path / "cgo.toml"
    f.write_text(BARE.replace('[["run", 3000]]', '[["cgo", 10], ["run", 3000]]'))
    # Forked on newosproc (no spares): with spares, one loaded CI run saw only 5 at once (an M made
    # faster finds work before the next is needed); the count is of creation timing, not of a rule.
    rep = gmpsim("run", str(f), "--set", "spare_ms=0", out_dir=tmp_path / "run").report
    assert rep["outcome"] == "ok", rep
    assert rep["goroutines"]["system"] == 4
    trace = (tmp_path / "run" / "schedtrace.log").read_text()
    assert "  M1: p=-1 curg=17 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false " \
           "blocked=false lockedg=17\n" in trace
    # m0, the extra M, sysmon, wakep's M, handoffp's M and the template thread, all at once (under
    # load a spinning M more may come: at least six)
    threads = [int(ln.split(" threads=")[1].split()[0]) for ln in trace.splitlines() if ln.startswith("SCHED")]
    assert max(threads) >= 6, threads
