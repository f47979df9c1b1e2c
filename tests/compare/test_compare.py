"""`gmpsim compare`: the scenario on the real Go toolchain beside gmpsim. Real `go`, real builds,
real Go processes sampled through /proc; skipped (with the reason) only where no `go` can be found."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from coordinator.compare import gobuild, table
from coordinator.compare.gorun import parse_stderr, run_go
from coordinator.scenario import loads
from tests.gmpsim_cli import gmpsim

needs_go = pytest.mark.skipif(shutil.which("go") is None,
                              reason="no `go` on PATH (apt-get install golang-go); .ci/run installs it")


def scenario(programs: str, **knobs) -> object:
    head = "".join(f"{k} = {v}\n" for k, v in {"gomaxprocs": 2, "schedtrace_ms": 0, **knobs}.items())
    return loads(head + programs, "test.toml")


@pytest.fixture(scope="module")
def binary():
    if shutil.which("go") is None:
        pytest.skip("no `go` on PATH (apt-get install golang-go)")
    return gobuild.ensure_built(cgo=False)


def go_run(binary, sc, tmp_path, name="go.stderr"):
    return run_go(str(binary.path), sc, 30.0, str(tmp_path / name))


# --- the build and its cache ------------------------------------------------------------------------

@needs_go
def test_build_is_cached_and_keyed_by_source_and_go_version(tmp_path):
    first = gobuild.ensure_built(binaries=tmp_path)
    assert first.built and first.path.is_file() and os.access(first.path, os.X_OK)
    again = gobuild.ensure_built(binaries=tmp_path)
    assert not again.built and again.path == first.path and again.key == first.key
    files = gobuild.source_files()
    files["main.go"] += b"\n// a changed source\n"
    changed = gobuild.ensure_built(binaries=tmp_path, files=files)
    assert changed.built and changed.key != first.key
    other_go = gobuild.ensure_built(binaries=tmp_path, version=first.go_version + " (another build)")
    assert other_go.built and other_go.key not in (first.key, changed.key)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({first.key, changed.key, other_go.key})


def test_schedt_offsets_follow_the_struct_text():
    text = ("type schedt struct {\n\tgoidgen uint64\n\tlock mutex\n\n\t// idle\n\tnmidle, nmx int32 // two\n"
            "\tmnext int64\n\tmaxmcount int32\n\tnmfreed int64\n\tpidle puintptr\n}\n")
    assert gobuild.schedt_offsets(text) == {"mnext": 24, "nmfreed": 40}
    with pytest.raises(gobuild.GoError, match="unknown layout"):
        gobuild.schedt_offsets("type schedt struct {\n\tq gQueue\n\tmnext int64\n\tnmfreed int64\n}\n")


@needs_go
def test_schedt_offsets_of_this_machines_runtime():
    go = gobuild.find_go()
    runtime2 = gobuild.goroot(go, gobuild.cache_dir()) / "src" / "runtime" / "runtime2.go"
    offsets = gobuild.schedt_offsets(runtime2.read_text())
    if "go1.19" in gobuild.go_version(go):
        assert offsets == {"mnext": 48, "nmfreed": 64}  # Go 1.19's schedt on 64-bit
    assert offsets["nmfreed"] > offsets["mnext"]


# --- the Go program's figures ---------------------------------------------------------------------

def test_go_counts_agree_with_proc_on_a_bare_program(binary, tmp_path):
    run = go_run(binary, scenario('[programs.main]\nops = [["run", 1000]]\n'), tmp_path)
    assert run["outcome"] == "ok" and run["counts"] == "exact"  # mnext - nmfreed == /proc Threads
    # FACTS.md: m0, sysmon and two Ms woken when runtime.main starts its own goroutines; once, at
    # a load average of 38, real Go made a fifth.
    assert run["mnext"] in (4, 5) and run["nmfreed"] == 0, run
    assert run["threads_end"] == run["threadcreate"] == run["mnext"]
    assert run["peak_threads"] >= run["threads_end"]  # the outside sampler saw them too


def test_a_locked_goroutine_that_exits_frees_its_m(binary, tmp_path):
    sc = scenario('[programs.main]\nops = [["go", "le", 3], ["wait"]]\n'
                  '[programs.le]\nops = [["lock"], ["run", 200], ["exit"]]\n')
    run = go_run(binary, sc, tmp_path)
    assert run["outcome"] == "ok" and run["counts"] == "exact"
    # One per locked goroutine that exits (a wedged m0 included, as in Go); the last one's Done comes
    # before its Goexit, so main may return and read the counts while that M is still on its way
    # out (seen under load): 2 or 3, never more.
    assert run["nmfreed"] in (2, 3), run
    wedged = 1 if run["m0_wedged"] else 0
    # Go's mexit counts the M in nmfreed before exitThread ends it, so /proc may still list the
    # thread of the last M on its way out (seen once under load: 6 threads where the counts say 5).
    expected = run["mnext"] - run["nmfreed"] + wedged
    assert expected <= run["threads_end"] <= expected + 1, run


def test_goroutines_in_syscalls_make_threads(binary, tmp_path):
    """`syscall` goes through syscall.Syscall (entersyscall): sysmon retakes the P, so more Ms."""
    sc = scenario('[programs.main]\nops = [["go", "b", 8], ["wait"]]\n[programs.b]\nops = [["syscall", 200000]]\n',
                  gomaxprocs=1)
    run = go_run(binary, sc, tmp_path)
    assert run["outcome"] == "ok" and run["counts"] == "exact"
    assert run["peak_threads"] >= 8 and run["mnext"] >= 9, run


def test_go_fatal_lines_are_kept_verbatim():
    parsed = parse_stderr("GMPSIM-GO-SCHED {}\nSCHED 0ms: gomaxprocs=2 idleprocs=1\nruntime: program exceeds "
                          "10-thread limit\nfatal error: thread exhaustion\n\nruntime stack:\n")
    assert parsed["fatal_message"] == "thread exhaustion"
    assert parsed["fatal_lines"] == ["runtime: program exceeds 10-thread limit", "fatal error: thread exhaustion"]
    assert parsed["schedtrace"] == ["SCHED 0ms: gomaxprocs=2 idleprocs=1"] and parsed["result"] is None


def test_the_programs_marker_inside_a_sched_line_leaves_it_whole():
    """The runtime writes a SCHED line in small writes; the program's marker line can land inside."""
    parsed = parse_stderr('SCHED 0ms: gomaxprocs=2 idleprocs=0 threads=5 spinningthreads=1 idlethreads='
                          'GMPSIM-GO-SCHED {"sched":6122432,"mnext":48,"nmfreed":64,"cgo":false}\n'
                          '0 runqueue=0 [0 0]\nSCHED 2ms: gomaxprocs=2\n')
    assert parsed["schedtrace"] == ["SCHED 0ms: gomaxprocs=2 idleprocs=0 threads=5 spinningthreads=1 "
                                    "idlethreads=0 runqueue=0 [0 0]", "SCHED 2ms: gomaxprocs=2"]


def test_tolerance_rule():
    assert table.allowed(9, 10) == 1 and table.allowed(100, 10) == 10 and table.allowed(100, 0) == 0
    rows = table.figures([{"mnext": 4, "nmfreed": 0, "peak_threads": 4, "threads_end": 4, "outcome": "ok"}] * 3,
                         [{"mnext": 6, "nmfreed": 0, "peak_threads": 5, "threads_end": 5, "outcome": "ok"}], 10)
    within = {r["figure"]: r["within"] for r in rows}
    assert within == {"mnext": False, "nmfreed": True, "peak_threads": True, "threads_end": True, "outcome": True}


# --- the command ----------------------------------------------------------------------------------

@needs_go
@pytest.mark.processes
def test_compare_spawn_burst(binary, tmp_path):
    out = tmp_path / "cmp.json"
    r = gmpsim("compare", "spawn-burst", "--runs", "1", "--json", str(out), "--out", str(tmp_path / "runs"),
               "--markdown", timeout=120)
    assert r.code in (0, 1), r.stderr
    result = json.loads(out.read_text())
    assert r.code == (0 if result["within"] else 1)
    assert "Ms created (sched.mnext)" in r.stdout and "| spawn-burst | 100 |" in r.stdout
    go_run_, sim_run = result["go"]["runs"][0], result["gmpsim"]["runs"][0]
    assert go_run_["outcome"] == sim_run["outcome"] == "ok"
    assert go_run_["counts"] == "exact" and go_run_["mnext"] >= 4
    assert isinstance(sim_run["mnext"], int) and sim_run["mnext"] >= 2  # report.json's ms.mnext
    assert sim_run["threads_end"] <= sim_run["mnext"] - sim_run["nmfreed"] + 1


@needs_go
@pytest.mark.processes
def test_compare_thread_exhaustion_keeps_both_fatal_lines(binary, tmp_path):
    out = tmp_path / "cmp.json"
    r = gmpsim("compare", "thread-exhaustion", "--runs", "1", "--json", str(out), "--out", str(tmp_path / "runs"),
               timeout=120)
    assert r.code in (0, 1), r.stderr
    result = json.loads(out.read_text())
    lines = ["runtime: program exceeds 10-thread limit", "fatal error: thread exhaustion"]
    assert result["go"]["fatal_lines"] == lines and result["gmpsim"]["fatal_lines"] == lines
    outcome = next(f for f in result["figures"] if f["figure"] == "outcome")
    assert outcome["go"] == outcome["gmpsim"] == "fatal: thread exhaustion" and outcome["within"]
    assert result["go"]["runs"][0]["mnext"] == 11  # mReserveID's checkmcount throws at mcount() 11 > 10


@pytest.mark.parametrize("args, words", [
    (["no-such-scenario"], "no-such-scenario: no such scenario file"),
    (["spawn-burst", "--runs", "0"], "--runs: expected a number of runs from 1"),
    (["spawn-burst", "--tolerance", "-1"], "--tolerance: expected a percentage >= 0"),
    (["spawn-burst", "--set", "gomaxprocs=0"], "gomaxprocs"),
    (["spawn-burst", "--runs", "x"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    r = gmpsim("compare", *args, "--out", str(tmp_path / "runs"), timeout=60)
    assert r.code == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr


def test_no_go_on_path_is_one_line_saying_how_to_install(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # nothing there: no `go`
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "compare", "spawn-burst", "--out",
                        str(tmp_path / "runs")], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1
    assert "no `go` on PATH" in p.stderr and "apt-get install golang-go" in p.stderr


@needs_go
def test_an_unusable_cache_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = dict(os.environ, GMPSIM_GO_CACHE=str(blocker / "cache"))
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "compare", "spawn-burst", "--out",
                        str(tmp_path / "runs")], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "GMPSIM_GO_CACHE" in p.stderr


def test_schedtrace_lines_pair_at_the_nearest_go_time():
    go = ["SCHED 0ms: a", "SCHED 103ms: b", "SCHED 209ms: c", "SCHED 400ms: d"]
    sim = ["SCHED 0ms: A", "SCHED 100ms: B", "SCHED 201ms: C", "SCHED 300ms: D"]
    pairs = table.pair_schedtrace(go, sim, 100)
    assert [(p["ms"], p["gmpsim_ms"], p["go"], p["gmpsim"]) for p in pairs] == [
        (0, 0, "a", "A"), (103, 100, "b", "B"), (209, 201, "c", "C")]
