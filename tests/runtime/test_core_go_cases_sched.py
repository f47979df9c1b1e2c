"""Go's own cases for sysmon and the run queues (proc_test.go, the issues the 1.16 code fixed), and
step() as a whole (the built-in scenarios, determinism), played through step() by the in-memory
world (tests/world.py), which checks every invariant after every step. Ms: test_core_go_cases.py."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.core import step
from coordinator.runtime.runq import globrunqget, globrunqput, runqput
from coordinator.runtime.sched import _LOCAL_RUNQ_SIZE, G, _Grunnable, _Prunning, _Psyscall, forcePreemptNS
from tests.steps import WORKER, of, started, warm
from tests.world import World

# --- sysmon ----------------------------------------------------------------------------------------

def test_sysmon_delay_schedule():
    """20µs; doubling once more than 50 consecutive ticks retook nothing; capped at 10ms."""
    w = started(gomaxprocs=1)  # m0 runs main: P0 busy, so sysmon does not deep-sleep
    delays = []
    for _ in range(65):
        before = w.now
        w.sysmon()
        delays.append((w.now - before) // 1000)
    assert delays[:51] == [20] * 51
    assert delays[51:61] == [40, 80, 160, 320, 640, 1280, 2560, 5120, 10_000, 10_000]
    assert set(delays[61:]) == {10_000}


def test_sysmon_usleep_lasts_the_delay_plus_the_os_slack():
    """usleep(20) returns late by the OS's timer slack (usleep_slack_us): sysmon's busy passes come
    every 20 + slack µs, and its retake of a P in a syscall that much later."""
    w = World(WORKER, gomaxprocs=1, usleep_slack_us=70)
    assert w.hello(0) == [fx.Execute(0, 1)]
    before = w.now
    w.sysmon()
    assert w.now - before == 90_000


def test_sysmon_deep_sleeps_when_every_p_is_idle():
    """Go 1.16: with every P idle sysmon sleeps on sysmonnote until the next timer (at most
    forcegcperiod/2); entersyscall wakes it through the note (entersyscall_sysmon)."""
    w = World(WORKER, gomaxprocs=2)
    w.hello(0)
    w.gopark(0, "sleep", 1_000_000)  # wakeNetPoller → wakep: M2 spins on P1; m0 blocks in netpoll
    w.hello(2)  # nothing to do: stopm
    assert w.sysmon() is None and w.sysmon_asleep and w.sched.sysmonwait == 1  # npidle == gomaxprocs
    assert w._sysmon[0] == 1_000_000_000  # notetsleep until main's timer
    out = w.netpoll()  # m0's netpoll times out
    assert out == [fx.Wake(0, -1)]
    w.woken(0)  # netpollreturn: P1, findrunnable's top steals P0's due timer: main runs
    assert w.procs[0].g == 1
    w.woken(2)
    out = w.entersyscall(0)  # entersyscall wakes sysmon (entersyscall_sysmon)
    assert fx.WakeSysmon() in out and w.sched.sysmonwait == 0
    # Woken at once: P1's first syscall is retaken; handoffp's last-P rule (nobody in netpoll now)
    # starts the idle M2 for it.
    assert w.sysmon() == [fx.Wake(2, 1)]


def test_retake_needs_the_same_syscalltick_on_two_ticks():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)  # local work on P0: no lazy window
    warm(w, 0)
    w.entersyscall(0)
    p0 = w.sched.allp[0]
    assert w.sysmon() == [] and p0.status == _Psyscall  # tick 1: records syscalltick
    out = w.sysmon()  # tick 2: same tick → retake
    assert p0.status != _Psyscall and w.sched.stats["retake"] == 1 and of(out, fx.Fork)


def test_retake_misses_a_p_whose_syscalltick_moved():
    """golang/go#28701's shape: a new syscall between two ticks resets the count."""
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    p0 = w.sched.allp[0]
    warm(w, 0)
    for _ in range(5):
        w.entersyscall(0)
        assert w.sysmon() == []
        w.exitsyscall(0)  # syscalltick++ on the way out
    assert w.sched.stats["retake"] == 0 and p0.status == _Prunning


def test_retake_lazy_window_of_10ms():
    """No local work and an idle P: the P in a syscall is left alone until 10ms after sysmon saw it."""
    w = started(gomaxprocs=2)
    warm(w, 0)
    w.entersyscall(0)
    p0 = w.sched.allp[0]
    w.sysmon()
    seen = w.now
    for t in (seen + 20_000, seen + 5_000_000, seen + 10_000_000 - 1):
        assert w.sysmon(at=t) == [] and p0.status == _Psyscall
    out = w.sysmon(at=seen + 10_000_000)
    assert p0.status != _Psyscall and w.sched.stats["retake"] == 1
    assert of(out, fx.Fork)  # handoffp: the last running P gets an M (npidle == gomaxprocs-1)


def test_retake_at_once_when_no_p_is_idle():
    """Nobody spinning and no idle P: no lazy window, retake on the second tick."""
    w = started(gomaxprocs=1)
    warm(w, 0)
    w.entersyscall(0)
    assert w.sysmon() == []
    w.sysmon()
    assert w.sched.stats["retake"] == 1


def test_first_syscall_on_a_p_is_retaken_on_the_first_tick():
    """sysmontick starts zeroed, like Go's pd: syscalltick 0 == 0 on the first look."""
    w = started(gomaxprocs=1)
    w.entersyscall(0)
    w.sysmon()
    assert w.sched.stats["retake"] == 1


def test_force_preempt_after_10ms():
    w = started(gomaxprocs=1)
    assert w.gosched(0) == [fx.Execute(0, 1)]  # now P0.schedtick == 1 (pd starts at 0, as in Go)
    assert w.sysmon() == []  # records schedtick and schedwhen
    t0 = w.now
    assert w.sysmon(at=t0 + forcePreemptNS - 1) == []
    out = w.sysmon(at=t0 + forcePreemptNS)
    assert out == [fx.Preempt(0, 1)] and w.sched.allgs[0].preempt
    assert w.preempted() == [0]
    assert w.sysmon() == [fx.Preempt(0, 1)]  # asked again on every tick until it yields
    out = w.gosched(0)  # G1 yields: through the global runq, and runs again
    assert out == [fx.Execute(0, 1)] and not w.sched.allgs[0].preempt
    assert w.sysmon(at=w.now + forcePreemptNS - 1) == []


def test_no_preempt_while_the_schedtick_moves():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    for _ in range(4):
        out = w.sysmon(extra_ns=6_000_000)
        assert not of(out, fx.Preempt)
        w.gosched(0)  # a new schedtick each time


# --- run queues ------------------------------------------------------------------------------------

def test_local_runq_overflow_moves_half_plus_one_to_the_global_queue():
    w = started(gomaxprocs=1, schedtrace_ms=1)
    w.newproc(0, "worker", 300)  # G2..G301, each into runnext, kicking the previous one to the tail
    s, p0 = w.sched, w.sched.allp[0]
    assert p0.runnext.goid == 301
    assert [g.goid for g in s.runq] == list(range(2, 130)) + [258]  # half of 256 + the kicked G
    assert s.runqsize == 129
    assert [g.goid for g in p0.runq] == list(range(130, 258)) + list(range(259, 301))
    assert len(p0.runq) == 170 <= _LOCAL_RUNQ_SIZE
    w.advance(2_000_000)
    (trace,) = of(w.sysmon(), fx.Trace)
    assert trace.text.endswith(" runqueue=129 [170]\n")


def test_schedule_checks_the_global_queue_every_61st_schedtick():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 300)
    s, p0 = w.sched, w.sched.allp[0]
    assert p0.schedtick == 0  # G1 came from runnext (inheritTime)
    out = w.gopark(0, "park")  # schedtick % 61 == 0 and runqsize > 0: globrunqget(p, 1)
    assert out == [fx.Execute(0, 2)] and s.runqsize == 128 and len(p0.runq) == 170
    out = w.goexit(0)
    assert out == [fx.Execute(0, 301)]  # then the local runq, runnext first


@pytest.mark.parametrize("gomaxprocs,size,maxn,want", [
    (1, 10, 0, 10), (4, 10, 0, 3), (4, 10, 1, 1), (2, 7, 0, 4), (1, 300, 0, 128), (3, 1, 0, 1), (8, 100, 5, 5),
])
def test_globrunqget_fairness(gomaxprocs, size, maxn, want):
    """n = min(runqsize, runqsize/gomaxprocs + 1), then max, then len(p.runq)/2: one G to run and
    n-1 onto the local runq, in queue order."""
    w = World(WORKER, gomaxprocs=gomaxprocs, check=False)
    s = w.sched
    p = s.allp[0]
    p.runnext = None
    gs = [G(goid=100 + i, prog="worker") for i in range(size)]
    for g in gs:
        globrunqput(s, g)
    got = globrunqget(s, p, maxn)
    assert got is gs[0]
    assert [g.goid for g in p.runq] == [g.goid for g in gs[1:want]]
    assert s.runqsize == size - want == len(s.runq)


def test_runqput_next_kicks_the_old_runnext_to_the_tail():
    w = World(WORKER, check=False)
    s, p = w.sched, w.sched.allp[0]
    a, b, c = (G(goid=i, prog="worker") for i in (10, 11, 12))
    p.runnext = None
    runqput(s, p, a, True)
    runqput(s, p, b, True)
    runqput(s, p, c, False)
    assert p.runnext is b and list(p.runq) == [a, c]
    assert all(g.status == _Grunnable for g in (a, b, c))


@pytest.mark.parametrize("name", ["syscall-storm", "spawn-burst", "locked-threads", "cgo-calls", "deadlock",
                                  "thread-exhaustion", "steady"])
def test_dry_run_of_the_built_in_scenarios(name):
    """Every built-in scenario, played in memory: the expected outcome, invariants after every step."""
    from coordinator.scenario import load
    sc = load(name)
    w = World(sc.programs, gomaxprocs=sc.gomaxprocs, maxmcount=sc.maxmcount, seed=sc.seed, compiled=True)
    w.run(max_steps=50_000)
    assert w.outcome() == sc.expect


def test_step_is_deterministic():
    def play():
        w = World({"main": [["go", "w", 20], ["wait"]], "w": [["run", 300], ["syscall", 700], ["sleep", 50]]},
                  gomaxprocs=3, seed=7).run()
        return [(t, ev["t"], ev.get("m"), tuple(out)) for t, ev, out in w.history]
    assert play() == play()


def test_events_of_an_exited_m_are_refused():
    from coordinator.runtime.core import BadEvent
    w = started(gomaxprocs=2)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    w.hello(fork.m)
    w.lock(fork.m)
    w.goexit(fork.m)
    with pytest.raises(BadEvent):
        step(w.sched, {"t": "gosched", "m": fork.m, "epoch": 1, "g": 2, "pos": {"pc": 0, "loops": [], "left": 0}},
             w.now)
