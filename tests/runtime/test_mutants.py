"""Tests that kill the mutants of the pure core that survived the other tests (issue 9, item 4;
tests/MUTATION.md). Each pins one rule of Go 1.16's proc.go at the exact point where a one-token
change of it would show, played through step() by the in-memory world (tests/world.py).

Where Go's rule only matters while another thread acts concurrently (the window of golang/go#40368,
findrunnable's "delicate dance" after dropping spinning), a step of the core is atomic, so the test
runs the other thread's action at that point of the step, through the core's own functions: the
place is named after Go's code (startm → newm, findrunnable's stop: releasep).
"""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime import findrunnable as findrunnable_mod
from coordinator.runtime import proc as proc_mod
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.newproc import newproc
from coordinator.runtime.sched import G, _Grunnable, _Gwaiting, _Prunning, _Psyscall, forcePreemptNS, syscallLazyNS
from tests import steps
from tests.steps import busy, of, tick_at, warm
from tests.world import World

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)





# --- golang/go#40368: the reserved ID counts for checkdead before newm runs -----------------------

def test_the_id_is_reserved_before_startm_lets_go_of_sched_lock(monkeypatch):
    """Go's startm calls mReserveID under sched.lock and only then, unlocked, newm. Another M may run
    checkdead in between (#40368: m0 leaves its syscall, finds no P and goes idle): the M being made
    must already count as running. Here that M is m0: at newm's entry it runs checkdead as if idle."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)  # G2 on P0: sysmon will retake P0 from the syscall and start an M for it
    warm(w, 0)
    w.entersyscall(0)
    assert w.sysmon() == []
    s = w.sched
    seen = []
    real_newm = proc_mod.newm

    def newm(sched, fn, p, mid, caller):
        # The window: sched.lock is free. m0 exits its syscall, finds no P, mput → checkdead.
        seen.append(sched.mcount() - len(sched.allm))  # Ms counted by mcount, not yet in allm
        sched.nmidle += 1
        try:
            checkdead(sched)  # raises Throw "checkdead: runnable g" if the new M does not count
        finally:
            sched.nmidle -= 1
        return real_newm(sched, fn, p, mid, caller)

    monkeypatch.setattr(proc_mod, "newm", newm)
    out = w.sysmon()  # retake → handoffp → startm → newm
    assert not of(out, fx.Fatal), out
    assert seen == [1]  # the one M whose process does not exist yet
    (fork,) = of(out, fx.Fork)
    assert s.mcount() == len(s.allm)


# --- findrunnable: the spinning rule 2*nmspinning < gomaxprocs-npidle --------------------------------

def test_no_spinning_when_spinning_ms_are_half_the_busy_ps():
    """P0 (m0) and P1 (handed to a new spinning M, not yet started) are busy, nmspinning=1: 2*1 is not
    < 2, so m0, out of work, does not spin: it draws no steal order and stops at once."""
    w = started(gomaxprocs=2)
    (m2,) = busy(w, 2)[1:]
    w.entersyscallblock(m2)  # handoffp(P1): nobody spinning, no idle P → startm(P1, spinning)
    s = w.sched
    assert s.nmspinning == 1 and s.npidle == 0 and len(w.forked()) == 1
    rng = s.rng.getstate()
    out = w.gopark(0, "park")
    assert out == [fx.Park(0)]
    assert s.rng.getstate() == rng, "m0 went stealing (it drew a steal order)"


def test_spinning_when_spinning_ms_are_fewer_than_half_the_busy_ps():
    """Three busy Ps (P0 m0, P1 M2, P2 handed to a spinning M not yet started), nmspinning=1: 2 < 3,
    so m0 spins and steals G4 from P1's runnext."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)  # steals G2; resetspinning → wakep: P2 to a new spinning M
    assert len(w.forked()) == 1 and w.sched.nmspinning == 1 and w.sched.npidle == 0
    w.newproc(m2, "w", 1)  # G4 on P1's runnext (goids: G3 is not made; goidgen counts)
    g = w.sched.allp[1].runnext
    out = w.gopark(0, "park")
    assert out == [fx.Execute(0, g.goid)]


# --- findrunnable: after dropping spinning, check every run queue again --------------------------

def _race_at_stop(monkeypatch, action, limit: int = 3) -> list:
    """Run `action` the first time findrunnable reaches stop: (its releasep), as another M would
    then; fail if findrunnable gives its P up more than `limit` times in one step (a livelock)."""
    real = findrunnable_mod.releasep
    calls: list = []

    def releasep(sched, mp):
        calls.append(mp.id)
        if len(calls) == 1:
            action()
        assert len(calls) <= limit, "findrunnable keeps giving up its P without spinning (livelock)"
        return real(sched, mp)

    monkeypatch.setattr(findrunnable_mod, "releasep", releasep)
    return calls


def test_work_submitted_while_the_spinning_m_gives_up_is_found(monkeypatch):
    """A new spinning M (M3 on P2) steals nothing; just then m0's goroutine does `go` (runqput, and
    wakep sees no idle P). M3 drops spinning, checks every runq again, takes P2 back and steals it."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    (m3,) = w.forked()
    s = w.sched
    _race_at_stop(monkeypatch, lambda: newproc(s, s.allm[0], "w", 1))
    out = w.hello(m3)
    g = s.allgs[-1]
    assert out == [fx.Execute(m3, g.goid)]
    assert s.nmspinning == 0 and not s.allm[m3].spinning


def test_the_m_that_found_work_again_spins_again(monkeypatch):
    """The same with two more Ms spinning at that moment (nmspinning=2 of 4 busy Ps): M4 took P3 back
    as a spinning M (wasSpinning), so it may steal although 2*nmspinning is not < busy Ps."""
    w = started(gomaxprocs=4)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    (m3,) = w.forked()
    w.newproc(m2, "w", 1)  # work for M3 to steal
    w.hello(m3)
    (m4,) = w.forked()
    s = w.sched
    others = [s.allm[m2], s.allm[m3]]

    def race():
        for mp in others:  # their goroutines blocked meanwhile: they spin in their own findrunnable
            mp.spinning = True
            s.nmspinning += 1
        newproc(s, s.allm[0], "w", 1)

    _race_at_stop(monkeypatch, race)
    w.check = False  # M2 and M3 are mid-findrunnable on their own threads: not a between-steps state
    out = w.hello(m4)
    g = s.allgs[-1]
    assert out == [fx.Execute(m4, g.goid)]
    assert s.nmspinning == 2  # M4 stopped spinning (resetspinning); M2 and M3 still spin
    for mp in others:
        mp.spinning = False
        s.nmspinning -= 1


# --- exitsyscallfast_reacquired --------------------------------------------------------------------

def test_exitsyscallfast_reacquired_bumps_the_syscalltick():
    """m0's P0 is retaken and another M enters a syscall on it; m0 leaving its syscall takes P0 back
    (CAS _Psyscall → _Pidle) with m.syscalltick != p.syscalltick: exitsyscallfast_reacquired does
    p.syscalltick++, then exitsyscall's own p.syscalltick++."""
    w = started(gomaxprocs=1, schedtrace_ms=1, scheddetail=True)
    w.newproc(0, "w", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)  # retake: p.syscalltick++
    w.hello(fork.m)  # M2 runs G2 on P0
    w.entersyscall(fork.m)  # P0 in _Psyscall again, for M2's syscall
    s, p0 = w.sched, w.sched.allp[0]
    t = p0.syscalltick
    assert s.allm[0].syscalltick == t - 1 and s.allm[fork.m].syscalltick == t
    assert w.exitsyscall(0) == [fx.Cont(0)]
    assert p0.status == _Prunning and p0.m is s.allm[0]
    assert p0.syscalltick == t + 2
    w.advance(2_000_000)
    (trace,) = of(w.sysmon(), fx.Trace)
    assert f"P0: status=1 schedtick={p0.schedtick} syscalltick={t + 2} " in trace.text


# --- mexit: handoffp, then nmfreed++ and checkdead ------------------------------------------------

def test_mexit_checks_dead_after_handoffp_m0():
    """m0's locked goroutine exits with G2 on P0: handoffp starts an M for it first (its ID reserved),
    so checkdead does not see a runnable G with no M."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    w.lock(0)
    out = w.goexit(0)
    assert not of(out, fx.Fatal), out
    (fork,) = of(out, fx.Fork)
    assert w.hello(fork.m) == [fx.Execute(fork.m, 2)]


def test_mexit_checks_dead_after_handoffp():
    """M2's locked goroutine exits while G1 waits on the global runq and m0 is idle: handoffp wakes m0
    for P0 first, so checkdead sees a running M."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)
    m2 = fork.m
    w.hello(m2)  # runs G2
    assert w.exitsyscall(0) == [fx.Park(0)]  # no P: G1 to the global runq, m0 idle
    w.lock(m2)
    out = w.goexit(m2)
    assert not of(out, fx.Fatal), out
    assert fx.Wake(0, 0) in out and fx.Exit(m2) in out
    assert w.woken(0) == [fx.Execute(0, 1)]


# --- schedule: the global runq once every 61 schedticks ------------------------------------------

def test_schedule_takes_from_the_global_queue_at_schedtick_61_not_60():
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 300)  # 129 Gs on the global runq, 170 on P0's, 1 in runnext
    s, p0 = w.sched, w.sched.allp[0]
    global_gs = {g.goid for g in s.runq}
    while p0.schedtick < 60:
        w.goexit(0)
    size = s.runqsize
    w.goexit(0)  # schedule at schedtick 60: the local runq
    assert s.runqsize == size and w.procs[0].g not in global_gs and p0.schedtick == 61
    w.goexit(0)  # schedtick 61: globrunqget(p, 1)
    assert s.runqsize == size - 1 and w.procs[0].g in global_gs


# --- injectglist: one M per G while Ps are idle ---------------------------------------------------

def test_injectglist_starts_an_m_per_goroutine():
    """Go's injectglist with no P (sysmon's context; here mdead's, in Go netpoll's list): every G goes
    on the global runq and startm runs once per G while Ps are idle (startIdle(n)), not once.
    (Timers no longer reach it: since per-P timers, a due timer's goroutine is readied by the M that
    runs the timer; so it is tested as the function it is.)"""
    w = started(gomaxprocs=4)
    s = w.sched
    gs = [G(goid=100 + i, prog="w", status=_Gwaiting) for i in range(4)]
    s.fx = []
    proc_mod.injectglist(s, gs, s.sysmonm)
    assert s.runqsize == 4 and all(g.status == _Grunnable for g in gs)
    assert len(of(s.fx, fx.Fork)) + len(of(s.fx, fx.Wake)) == 3 and s.npidle == 0  # 3 idle Ps: 3 Ms


# --- retake: the 10ms boundaries, exactly -----------------------------------------------------------



@pytest.mark.parametrize("delta,retaken", [(-1, False), (0, True), (1, True)])
def test_retake_lazy_window_boundary(delta, retaken):
    """No local work, a P idle: `pd.syscallwhen + 10ms > now` leaves the P; at 10ms it is retaken."""
    w = started(gomaxprocs=2)
    warm(w, 0)
    w.entersyscall(0)
    p0 = w.sched.allp[0]
    seen = w.now + 1000
    assert tick_at(w, seen) == []  # records syscalltick and syscallwhen
    tick_at(w, seen + syscallLazyNS + delta)
    assert (p0.status != _Psyscall) == retaken
    assert w.sched.stats["retake"] == int(retaken)


@pytest.mark.parametrize("delta,preempted", [(-1, False), (0, True), (1, True)])
def test_force_preempt_boundary(delta, preempted):
    """`pd.schedwhen + forcePreemptNS <= now`: the G running since schedwhen is preempted at 10ms."""
    w = started(gomaxprocs=1)
    w.gosched(0)  # P0.schedtick 1
    t0 = w.now + 1000
    assert tick_at(w, t0) == []  # records schedtick and schedwhen
    out = tick_at(w, t0 + forcePreemptNS + delta)
    assert (out == [fx.Preempt(0, 1)]) == preempted, out
