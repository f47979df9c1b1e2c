"""trace.json (coordinator/observe/trace.py): the recorder on the pure core, driven by the in-memory world
(tests/world.py), and on one real run through the `gmpsim` command. Every trace must be a well-formed
Chrome Trace Event file that Perfetto reads: named processes and tracks, no overlapping slices."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest

from coordinator.observe.trace import COUNTERS, SCHEMA, TraceRecorder
from coordinator.observe.tracefile import us
from coordinator.runtime import effects as fx
from coordinator.scenario import load
from coordinator.shell.loop import touched_ms
from tests.gmpsim_cli import gmpsim
from tests.world import World
from tests.world_procs import RUNNING

M_NAME = re.compile(r"M(\d+) pid (\d+) host (\S+)")


def perfetto_ns(v) -> int:
    """Perfetto's reading of a µs value: int(v * 1000), truncated."""
    return int(v * 1000.0) if isinstance(v, float) else int(v) * 1000


def check_trace(doc: dict) -> dict:
    """The structure every trace.json must have; returns its events by kind for further checks."""
    assert set(doc) >= {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["displayTimeUnit"] == "ms"
    assert doc["otherData"]["schema"] == SCHEMA
    evs = doc["traceEvents"]
    assert evs
    procs, threads = {}, {}
    for e in evs:
        for k in ("ph", "ts", "pid", "tid", "name"):
            assert k in e, f"{k} missing in {e}"
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        if e["ph"] == "M" and e["name"] == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        elif e["ph"] == "M" and e["name"] == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    slices = defaultdict(list)
    out = {"procs": procs, "threads": threads, "slices": slices, "counters": [], "instants": []}
    for e in evs:
        if e["ph"] == "M":
            continue
        assert e["pid"] in procs, f"no process_name for pid {e['pid']}: {e}"
        assert (e["pid"], e["tid"]) in threads, f"no thread_name for {e['pid']}/{e['tid']}: {e}"
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
            slices[(e["pid"], e["tid"])].append(e)
        elif e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values()), e
            out["counters"].append(e)
        elif e["ph"] == "i":
            assert e["s"] in ("t", "g"), e
            out["instants"].append(e)
        else:
            raise AssertionError(f"unexpected phase {e['ph']}: {e}")
    for track, ss in slices.items():
        ss.sort(key=lambda e: e["ts"])
        for a, b in zip(ss, ss[1:]):
            # exactly, and as Perfetto will read it (ns = int(µs * 1000))
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-9, f"overlap on {threads[track]}: {a} then {b}"
            assert perfetto_ns(a["ts"]) + perfetto_ns(a["dur"]) <= perfetto_ns(b["ts"]), (a, b)
    return out


def m_tracks(t: dict) -> dict[int, tuple[int, tuple[int, int]]]:
    """M id -> (its OS pid, its track) from the thread names."""
    out = {}
    for track, name in t["threads"].items():
        mt = M_NAME.fullmatch(name)
        if mt:
            out[int(mt[1])] = (int(mt[2]), track)
    return out


class TracedWorld(World):
    """The in-memory world with a TraceRecorder watching each step, as the loop's observers do."""
    rec: TraceRecorder | None = None

    def attach(self, rec: TraceRecorder) -> "TracedWorld":
        self.rec = rec
        rec.started(self.sched, 0, 0.0)
        first = self.history[0][2]  # schedinit's effects
        rec.after_step(self.sched, None, first, touched_ms(None, first), 0, 0.0)
        return self

    def deliver(self, ev, reply_state=RUNNING):
        effects = super().deliver(ev, reply_state)
        if self.rec is not None:
            self.rec.after_step(self.sched, ev, effects, touched_ms(ev, effects), self.now, 0.0)
        return effects

    def finish(self) -> dict:
        self.rec.finished(self.sched, self.outcome(), self.now, 0.0)
        with open(self.rec.path) as f:
            return json.load(f)


def slice_names(t: dict, track) -> list[str]:
    return [e["name"] for e in t["slices"][track]]


def test_us_reads_back_exactly_as_perfetto_truncates():
    for ns in [0, 1, 999, 1000, 4_350_000, 123_456_789, 10**11 + 7, *range(10**9, 10**9 + 3000)]:
        assert perfetto_ns(us(ns)) == ns


def test_hand_driven_syscall_gives_exact_slices(tmp_path):
    w = TracedWorld({"main": [["syscall", 100], ["run", 10]]})
    w.attach(TraceRecorder(str(tmp_path / "trace.json"), meta={"scenario": "hand"}))
    w.advance(50_000)
    w.hello(0)  # M0 starts: runs G1 on P0
    w.advance(10_000)
    w.entersyscall(0)
    w.advance(100_000)
    w.exitsyscall(0)  # P0 still in _Psyscall: the fast path takes it back
    w.advance(20_000)
    w.goexit(0, main_returns=True)
    w.advance(5_000)
    doc = w.finish()
    t = check_trace(doc)
    ms = m_tracks(t)
    assert set(ms) == {0}
    pid0, m0 = ms[0]
    assert pid0 == 10_000 and t["threads"][m0] == "M0 pid 10000 host local"
    assert t["procs"][m0[0]] == "host local"
    assert slice_names(t, m0) == ["newosproc", "running G1", "syscall G1", "running G1"]
    got = [(e["ts"], e["dur"]) for e in t["slices"][m0]]
    assert got == [(0, 50), (50, 10), (60, 100), (160, 20)]  # µs of Go time; main returned at 180
    p0 = next(tr for tr, n in t["threads"].items() if n == "P0")
    assert slice_names(t, p0) == ["M0", "syscall", "M0"]
    assert t["slices"][p0][1]["args"] == {"m": 0}
    assert t["procs"][p0[0]] == "Ps"
    names = [e["name"] for e in t["instants"]]
    assert names.count("newm") == 1 and "exit" in names and "end: ok" in names
    # the counters: threads = m0 + sysmon; one P in a syscall while G1 was in it
    last = t["counters"][-1]["args"]
    assert set(last) == set(COUNTERS)
    assert last["threads"] == w.sched.mcount() == 2
    assert max(c["args"]["syscallprocs"] for c in t["counters"]) == 1
    assert doc["otherData"]["scenario"] == "hand" and doc["otherData"]["end_us"] == 185


def test_dry_run_of_syscall_storm_matches_the_core(tmp_path):
    sc = load("syscall-storm")
    w = TracedWorld(sc.programs, gomaxprocs=sc.gomaxprocs, compiled=True, seed=sc.seed)
    w.attach(TraceRecorder(str(tmp_path / "trace.json"), meta={"scenario": sc.name}))
    w.run()
    assert w.outcome() == "ok"
    doc = w.finish()
    t = check_trace(doc)
    s = w.sched
    ms = m_tracks(t)
    assert set(ms) == {f.m for f in w.forks}  # one track per forked M, none for sysmon
    assert all(pid == 10_000 + m for m, (pid, _) in ms.items())
    inst = Counter(e["name"] for e in t["instants"])
    assert inst["newm"] == len(w.forks)
    wakes = sum(isinstance(e, fx.Wake) for _, _, effs in w.history for e in effs)
    assert inst["notewakeup"] == wakes > 0
    n = lambda name: sum(e["args"]["n"] for e in t["instants"] if e["name"] == name)  # noqa: E731
    assert n("retake") == s.stats["retake"] > 0
    for k, v in s.stats.items():
        if k.startswith("startm."):
            assert n(f"startm ({k[7:]})") == v
    every = Counter(e["name"].split(" G")[0] for ss in t["slices"].values() for e in ss)
    assert every["running"] and every["syscall"] and every["parked"] and every["M0"]
    # the threads counter follows mcount() up to its peak
    peak = max(c["args"]["threads"] for c in t["counters"])
    assert peak == s.mcount() == len(w.forks) + 1  # + sysmon
    assert t["counters"][-1]["args"]["threads"] == s.mcount()
    assert doc["otherData"]["truncated"] is False


def test_locked_threads_dry_run_has_mexit_and_template_newm(tmp_path):
    sc = load("locked-threads")
    w = TracedWorld(sc.programs, gomaxprocs=sc.gomaxprocs, compiled=True, seed=sc.seed)
    w.attach(TraceRecorder(str(tmp_path / "trace.json")))
    w.run()
    t = check_trace(w.finish())
    inst = [e for e in t["instants"] if e["s"] == "t"]
    assert any(e["name"] == "mexit" for e in inst)
    assert any(e["name"] == "mexited" for e in inst)
    assert any(e["name"] == "newm" and e["args"]["template"] for e in inst)
    # an exited M's track ends: nothing on it after its mexit
    for e in inst:
        if e["name"] == "mexit":
            later = [s for s in t["slices"][(e["pid"], e["tid"])] if s["ts"] + s["dur"] > e["ts"]]
            assert later == []


def test_cap_truncates_but_the_file_stays_well_formed(tmp_path):
    sc = load("syscall-storm")
    w = TracedWorld(sc.programs, gomaxprocs=sc.gomaxprocs, compiled=True, seed=sc.seed)
    w.attach(TraceRecorder(str(tmp_path / "trace.json"), max_events=60))
    w.run()
    doc = w.finish()
    check_trace(doc)
    od = doc["otherData"]
    assert od["truncated"] is True and od["dropped_events"] > 0 and od["max_events"] == 60


def test_fault_is_a_global_instant(tmp_path):
    w = TracedWorld({"main": [["run", 10]]})
    rec = TraceRecorder(str(tmp_path / "trace.json"))
    w.attach(rec)
    w.advance(30_000)
    w.hello(0)
    rec.fault("kill-m", "M0", 25_000)
    w.goexit(0, main_returns=True)
    t = check_trace(w.finish())
    f = [e for e in t["instants"] if e["name"].startswith("fault:")]
    assert f == [{"ph": "i", "name": "fault: kill-m M0", "ts": 30, "pid": 1, "tid": 1, "s": "g",
                  "args": {"kind": "kill-m", "target": "M0"}}]  # never back in time: at 30, not 25


@pytest.mark.processes
def test_real_run_writes_a_well_formed_trace(tmp_path):
    out = tmp_path / "run"
    r = gmpsim("run", "locked-threads", out_dir=out)
    assert r.code == 0, r.stdout + r.stderr
    doc = json.loads((out / "trace.json").read_text())
    t = check_trace(doc)
    od = doc["otherData"]
    assert od["scenario"] == "locked-threads" and od["outcome"] == "ok" and od["timescale"] == 100.0
    ms = m_tracks(t)
    threads = {th["m"]: th for th in r.report["threads"]}
    assert set(ms) == set(threads)
    for m, (pid, track) in ms.items():
        assert pid > 0 and pid == threads[m]["pid"]
        assert t["threads"][track] == f"M{m} pid {pid} host local"
        assert t["procs"][track[0]] == "host local"
    names = Counter(e["name"] for e in t["instants"])
    assert names["newm"] == r.report["ms"]["created"]
    assert names["mexit"] == r.report["ms"]["exited"] > 0
    assert t["counters"] and set(t["counters"][0]["args"]) == set(COUNTERS)
    assert max(c["args"]["threads"] for c in t["counters"]) == r.report["ms"]["peak"]
    running = [e for ss in t["slices"].values() for e in ss if e["name"].startswith("running G")]
    assert running
