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
from tests.steps import of, warm
from tests.world import World
from tests.world_procs import RUNNING

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)



def busy(w: World, n: int) -> list[int]:
    """Make Ms M(1..n-1) run G2..Gn beside m0 (G1): each new spinning M steals one goroutine."""
    w.newproc(0, "w", n - 1)
    ms = [0]
    while len(ms) < n:
        (m,) = w.forked()
        w.hello(m)
        assert w.procs[m].state == RUNNING, w.procs[m]
        ms.append(m)
    return ms


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

def tick_at(w: World, t: int) -> list:
    """One sysmon pass at exactly Go time t (World.sysmon would add sysmon's 20µs delay)."""
    assert t >= w.now
    w.now = t
    return [e for e in w.deliver({"t": "sysmon"}) if not isinstance(e, fx.SysmonSleep)]


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


# --- sysmon's loop (proc.go sysmon): the deep sleep, idle/delay, lastpoll, schedtrace -------------

def usleep_us(w: World) -> int:
    """The usleep (µs) sysmon's last pass ended with (its SysmonSleep, not a deep sleep)."""
    (sl,) = of(w.history[-1][2], fx.SysmonSleep)
    assert not sl.note, sl
    return (sl.until - w.now) // 1000


def test_sysmon_no_deep_sleep_when_the_next_timer_is_due_now():
    """sysmon: `if next > now` { notetsleep }: a timer due exactly now is no reason to sleep; the
    pass goes on (retake, the usleep). m0 sleeps 1.5ms in netpoll, every P idle; sysmon at 1.5ms."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 1500)
    assert w.sched.npidle == 1
    assert w.sysmon(at=1_500_000) == []  # not None: no deep sleep
    assert not w.sysmon_asleep and usleep_us(w) == 20


def test_sysmon_deep_sleep_lasts_at_most_forcegcperiod_over_2():
    """sysmon: sleep := forcegcperiod / 2 (int64 ns: 60s), cut to next-now when a timer is due
    sooner. m0 sleeps 200s: sysmon's notetsleep lasts 60s exactly."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 200_000_000)
    assert w.sysmon() is None and w.sysmon_asleep
    (sl,) = of(w.history[-1][2], fx.SysmonSleep)
    assert sl == fx.SysmonSleep(w.now + 60_000_000_000, True) and type(sl.until) is int


def _backed_off(w: World, passes: int = 70) -> None:
    """sysmon passes with nothing to retake until its delay is 10ms (idle > 50: doubling)."""
    for _ in range(passes):
        w.sysmon()
    assert w.sched.sysmon_delay == 10_000 and w.sched.sysmon_idle >= passes


def test_sysmon_woken_by_a_syscall_bets_on_20us_again():
    """sysmon: `if syscallWake { idle = 0; delay = 20 }` after notetsleep(&sched.sysmonnote) returns
    because exitsyscallfast_pidle woke it; then `idle++` (nothing retaken) and the backoff starts again
    only once idle > 50: 50 usleeps of 20µs, then 40. (m0 backs sysmon off to 10ms, then
    entersyscallblock hands P0 off; the spinning M finds nothing: every P idle, the deep sleep.
    exitsyscallfast_pidle takes the idle P and wakes sysmon: Cont, not exitsyscall0's Execute.)"""
    w = started(gomaxprocs=1)
    _backed_off(w)
    w.entersyscallblock(0)
    (m2,) = w.forked()
    assert w.hello(m2) == [fx.Park(m2)]
    assert w.sysmon() is None and w.sched.sysmonwait == 1  # every P idle: the deep sleep
    assert w.exitsyscall(0) == [fx.WakeSysmon(), fx.Cont(0)]
    sleeps = []
    for _ in range(51):
        assert w.sysmon() is not None  # (G1's slice is old: Preempts, which retake does not count)
        sleeps.append(usleep_us(w))
    assert sleeps == [20] * 50 + [40]


def test_sysmon_retake_resets_its_delay():
    """sysmon: `if retake(now) != 0 { idle = 0 }`, so the next loop head sets delay = 20 (idle == 0):
    after backing off to 10ms, a P retaken from a syscall brings the 20µs usleeps back."""
    w = started(gomaxprocs=1)
    warm(w, 0)
    _backed_off(w)
    w.gosched(0)  # a new slice: retake waits for a second look at the syscall
    w.entersyscall(0)
    assert w.sysmon() == [] and usleep_us(w) == 10_000  # records the syscalltick
    out = w.sysmon()
    assert of(out, fx.Fork) and w.sched.stats["retake"] == 1
    assert usleep_us(w) == 20


def test_sysmon_moves_lastpoll_when_not_polled_for_more_than_10ms():
    """sysmon: `if netpollinited() && lastpoll != 0 && lastpoll+10*1000*1000 < now` { Cas64(&lastpoll,
    lastpoll, now); netpoll(0) }: strictly more than 10ms after the last poll."""
    from coordinator.runtime.sysmon import NETPOLL_EVERY_NS
    from coordinator.runtime.timers import netpollGenericInit
    w = started(gomaxprocs=1)
    s = w.sched
    netpollGenericInit(s)
    last = s.lastpoll
    tick_at(w, w.now + 1000)
    tick_at(w, last + NETPOLL_EVERY_NS)
    assert s.lastpoll == last
    tick_at(w, last + NETPOLL_EVERY_NS + 1)
    assert s.lastpoll == last + NETPOLL_EVERY_NS + 1
    tick_at(w, last + 2 * NETPOLL_EVERY_NS + 2)
    assert s.lastpoll == last + 2 * NETPOLL_EVERY_NS + 2


def test_schedtrace_when_its_period_is_over_exactly():
    """sysmon: `if debug.schedtrace > 0 && lasttrace+int64(debug.schedtrace)*1000000 <= now`."""
    w = started(gomaxprocs=1, schedtrace_ms=1)
    s = w.sched
    assert of(tick_at(w, w.now + 1000), fx.Trace)
    last = s.lasttrace
    assert not of(tick_at(w, last + 999_999), fx.Trace)
    assert of(tick_at(w, last + 1_000_000), fx.Trace) and s.lasttrace == last + 1_000_000


# --- retake and preemptone -------------------------------------------------------------------------

def test_preempt_is_counted_per_preemptone():
    """retake: preemptone(_p_) on every pass while the G runs on past forcePreemptNS (its
    schedtick unchanged); the report's preempt count is one per request."""
    w = started(gomaxprocs=1)
    t0 = w.now + 1000
    tick_at(w, t0)
    assert tick_at(w, t0 + forcePreemptNS) == [fx.Preempt(0, 1)]
    assert tick_at(w, t0 + forcePreemptNS + 20_000) == [fx.Preempt(0, 1)]
    assert w.sched.stats["preempt"] == 2


def test_retake_does_not_look_at_an_idle_p():
    """retake looks only at `s == _Prunning || s == _Psyscall`: a P handed to a starting M
    (entersyscallblock → handoffp → startm, _Pidle meanwhile) keeps its old sysmontick, so the G that
    inherits the time slice there (runnext: schedtick unchanged) gets 10ms from when sysmon first sees
    it run, not from when it saw the idle P."""
    w = started(gomaxprocs=1)
    t0 = w.now + 1000
    tick_at(w, t0)  # pd.schedtick = P0's schedtick
    w.gosched(0)  # G1 again from the global runq: schedtick++
    w.newproc(0, "w", 1)  # G2 in P0's runnext
    w.entersyscallblock(0)  # P0 to a new M, _Pidle until it starts
    p0 = w.sched.allp[0]
    (m2,) = w.forked()
    t1 = t0 + 1000
    assert tick_at(w, t1) == [] and p0.sysmontick.schedtick != p0.schedtick
    assert w.hello(m2) == [fx.Execute(m2, 2)]  # runnext: inheritTime, no schedtick++
    t2 = t1 + 1000
    tick_at(w, t2)
    assert tick_at(w, t1 + forcePreemptNS) == []
    assert tick_at(w, t2 + forcePreemptNS) == [fx.Preempt(m2, 2)]


def test_retake_of_a_syscall_p_preemptone_could_not_stop():
    """retake: a P in _Psyscall whose schedtick is 10ms old gets preemptone (which cannot work: no M
    wired) and `sysretake = true`, so it is retaken on this pass even though its syscalltick is new
    to sysmon (no waiting for a second look)."""
    w = started(gomaxprocs=1)
    warm(w, 0)  # p.syscalltick 1; sysmon never saw it
    t0 = w.now + 1000
    tick_at(w, t0)
    assert tick_at(w, t0 + forcePreemptNS) == [fx.Preempt(0, 1)]
    w.entersyscall(0)
    out = tick_at(w, t0 + forcePreemptNS + 20_000)
    assert of(out, fx.Fork) and w.sched.stats["retake"] == 1
    assert w.sched.allp[0].status != _Psyscall


def test_retake_goes_on_to_the_next_p_after_skipping_one():
    """retake's two `continue`s (a syscall seen for the first time; a lazy syscall P with no work while
    others idle) go on with the next P: P1's long-running G2 is preempted on those same passes."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)  # steals G2; wakep: P2 to a spinning M3
    (m3,) = w.forked()
    assert w.hello(m3) == [fx.Park(m3)]  # P2 idle
    warm(w, 0)
    t0 = w.now + 1000
    tick_at(w, t0)
    w.now = t0 + forcePreemptNS
    w.gosched(0)  # P0's schedtick moves: no preemption for G1
    w.entersyscall(0)
    assert tick_at(w, w.now) == [fx.Preempt(m2, 2)]  # P0's new syscall recorded; P1 still looked at
    assert tick_at(w, w.now + 20_000) == [fx.Preempt(m2, 2)]  # P0 lazy (P2 idle); P1 again
    assert w.sched.allp[0].status == _Psyscall


def test_retake_is_counted_per_p():
    """retake: each P taken from its syscall (CAS _Psyscall → _Pidle, n++, handoffp) counts in the
    report's retake: P0 on the second look, P1 10ms later (lazily: a spinning M exists)."""
    w = started(gomaxprocs=2)
    ms = busy(w, 2)
    for m in ms:
        warm(w, m)
    for m in ms:
        w.entersyscall(m)
    t = w.now + 1000
    tick_at(w, t)
    tick_at(w, t + 20_000)
    assert w.sched.stats["retake"] == 1
    tick_at(w, t + 20_000 + syscallLazyNS)
    assert w.sched.stats["retake"] == 2


# --- entersyscall / entersyscallblock -----------------------------------------------------------

def test_a_cgo_call_marks_the_m_incgo():
    """cgocall: mp.incgo = true around the call (entersyscall); the M's post-mortem says so."""
    from coordinator.runtime.mdead import describe_m
    w = started(gomaxprocs=1)
    w.entersyscall(0, cgo=True)
    assert w.sched.m0.incgo is True
    assert describe_m(w.sched.m0) == "in a cgo call (G1)"
    w.exitsyscall(0)
    w.entersyscall(0)
    assert describe_m(w.sched.m0) == "in a syscall (G1)"


def test_entersyscallblock_bumps_syscalltick_and_hands_off_at_once():
    """entersyscallblock: `_g_.m.p.ptr().syscalltick++`, then entersyscallblock_handoff →
    handoffp(releasep()): the startm is counted as entersyscallblock's; scheddetail shows the tick."""
    w = started(gomaxprocs=1, schedtrace_ms=1, scheddetail=True)
    warm(w, 0)
    p0 = w.sched.allp[0]
    assert p0.syscalltick == 1
    out = w.entersyscallblock(0)
    assert of(out, fx.Fork) and p0.syscalltick == 2
    assert w.sched.stats["startm.entersyscallblock"] == 1
    w.advance(2_000_000)
    (trace,) = of(w.sysmon(), fx.Trace)
    assert f"P0: status={p0.status} schedtick={p0.schedtick} syscalltick=2 " in trace.text


# --- schedule / findrunnable -----------------------------------------------------------------------

def steal_draws(state, n: int, k: int):
    """The rng state after k of findrunnable's steal orders (one stealOrder.start(fastrand()) per
    pass) drawn from `state` with gomaxprocs n."""
    import random
    from math import gcd
    r = random.Random()
    r.setstate(state)
    coprimes = [i for i in range(1, n + 1) if gcd(i, n) == 1]
    for _ in range(k):
        r.randrange(n)
        r.randrange(len(coprimes))
    return r.getstate()


def test_steal_order_is_gos_random_order():
    """Go's randomOrder: coprimes are the i in 1..count with gcd(i, count) == 1; start(fastrand())
    gives pos = i % count, inc = coprimes[i % len(coprimes)]; next is pos = (pos + inc) % count. Here
    fastrand is sched.rng's two draws."""
    import random
    from math import gcd
    for n in range(1, 7):
        s = World(PROGS, gomaxprocs=n).sched
        r = random.Random()
        r.setstate(s.rng.getstate())
        coprimes = [i for i in range(1, n + 1) if gcd(i, n) == 1]
        strides = set()
        for _ in range(60):
            pos, inc = r.randrange(n), coprimes[r.randrange(len(coprimes))]
            strides.add(inc)
            want = [s.allp[(pos + k * inc) % n] for k in range(n)]
            assert schedule_mod._steal_order(s) == want
        assert strides == set(coprimes)


def test_runnext_is_stolen_on_the_last_of_four_passes_only():
    """findrunnable: `for i := 0; i < stealTries; i++ { stealTimersOrRunNextG := i == stealTries-1;
    for enum := stealOrder.start(fastrand()); ...` : a P's runnext is taken only on the 4th pass, so
    the spinning M draws 4 steal orders before it gets G2 out of P0's runnext."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)  # G2 in P0's runnext; wakep: a spinning M2 for P1
    (m2,) = w.forked()
    before = w.sched.rng.getstate()
    assert w.hello(m2) == [fx.Execute(m2, 2)]
    assert w.sched.rng.getstate() == steal_draws(before, 2, 4)


def test_other_ps_timers_are_run_on_the_last_pass_only():
    """findrunnable: `if stealTimersOrRunNextG && timerpMask.read(enum.position())` { checkTimers(p2) }:
    another P's due timer runs on the 4th pass only (its G readied on the thief's P). P0 (m0 runs G1)
    has G1's due timer; the spinning M2 finds nothing else: 4 steal orders, then G1."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)  # G2 in runnext; M2 forked, spinning, for P1
    (m2,) = w.forked()
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    w.advance(2_000_000)
    before = w.sched.rng.getstate()
    assert w.hello(m2) == [fx.Execute(m2, 1)]
    assert w.sched.rng.getstate() == steal_draws(before, 2, 4)
    assert not w.sched.allp[0].timers


def test_no_spinning_when_spinning_ms_are_half_the_busy_ps_with_an_idle_p():
    """findrunnable: `2*nmspinning >= procs - npidle` → goto stop: busy Ps are gomaxprocs minus the
    idle ones. GOMAXPROCS=3, P2 idle, P1 handed to a spinning M not started yet: 2*1 >= 3-1, so m0,
    out of work, does not steal (no steal order drawn) and stops."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    assert len(w.forked()) == 1 and w.sched.npidle == 1 and w.sched.nmspinning == 1
    assert w.gopark(0, "park") == [fx.Execute(0, 2)]
    rng = w.sched.rng.getstate()
    assert w.gopark(0, "park") == [fx.Park(0)]
    assert w.sched.rng.getstate() == rng, "m0 went stealing (it drew a steal order)"


def test_schedule_runs_due_timers_before_the_local_runq():
    """schedule: checkTimers(pp, 0) before runqget; the timer's goroutine is readied with
    goready → ready(gp, next=true), into runnext, ahead of the G that was there (kicked to the runq)."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    w.advance(2_000_000)
    w.newproc(0, "w", 1)  # G3 in runnext
    g3 = w.sched.allp[0].runnext.goid
    assert w.goexit(0) == [fx.Execute(0, 1)]  # the due timer first, G1 in runnext
    assert [g.goid for g in w.sched.allp[0].runq] == [g3]


def test_ready_wakes_a_spinning_m_cloned_from_the_caller():
    """ready → wakep() → startm → newm: the new thread is cloned from the M that readied the G (the
    one that ran the timer in schedule's checkTimers), not from the agent."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    assert of(w.hello(m2), fx.NetpollSleep)  # M2 steals nothing (not due) and polls
    w.advance(2_000_000)
    out = w.goexit(0)  # schedule: checkTimers readies G1; wakep: P1 idle, nobody spinning
    (fork,) = of(out, fx.Fork)
    assert fork.forker == 0 and fork.spinning and fork.nextp == 1
    assert out[-1] == fx.Execute(0, 1)


def test_woken_after_findrunnable_stopm_takes_a_batch_on_a_fresh_p():
    """stopm in findrunnable returns to findrunnable's top (globrunqget(p, 0): a fair share), not to
    schedule's, where a P at schedtick%61 == 0 (here 0: the P never ran a G) takes just one."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    (m3,) = w.forked()
    assert w.hello(m3) == [fx.Park(m3)]  # P2 idle, schedtick 0
    p2 = w.sched.allp[2]
    assert p2.schedtick == 0
    out = w.newproc(0, "w", 300)
    assert fx.Wake(m3, 2) in out
    n = w.sched.runqsize
    assert w.woken(m3) == [fx.Execute(m3, w.procs[m3].g)]
    want = min(n, n // 3 + 1, 128)
    assert len(p2.runq) == want - 1 and w.sched.runqsize == n - want


def test_a_non_spinning_m_polls_for_another_ps_due_timer():
    """findrunnable's stop: "Check for timer creation or expiry concurrently with transitioning from
    spinning to non-spinning": pollUntil is the earliest timer of every P (not only its own), and
    delay = pollUntil - nanotime() (now read when it is still 0), at least 0: m0, not spinning (a
    spinning M is on its way to P1), blocks in netpoll(0) for P1's due timer."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(m2, "sleep", 5000)[-1] == fx.NetpollSleep(m2, 5_000_000)  # G2's timer on P1
    w.newproc(0, "w", 1)  # G3; wakep: P1 to a new spinning M3
    assert len(w.forked()) == 1 and w.sched.nmspinning == 1
    w.netpoll()
    assert w.woken(m2) == [fx.Park(m2)]  # no idle P: stopm; lastpoll != 0 again
    assert w.gopark(0, "park") == [fx.Execute(0, w.procs[0].g)]
    assert w.sched.now == 5_000_000
    assert w.gopark(0, "park") == [fx.Park(0), fx.NetpollSleep(0, 5_000_000)]
    assert w.sched.pollm is w.sched.m0 and w.sched.pollUntil == 5_000_000


def test_an_m_with_no_timer_to_wait_for_does_not_break_the_poll():
    """findrunnable: `else if pollUntil != 0 && netpollinited()` { if pollerPollUntil == 0 ||
    pollerPollUntil > pollUntil { netpollBreak() } }: with no timer left anywhere nothing is sent to
    the M still polling for a timer another M has run meanwhile."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(0, "sleep", 5000)[-1] == fx.NetpollSleep(0, 5_000_000)
    w.advance(6_000_000)
    out = w.gopark(m2, "park")  # M2 steals the due timer of P0: G1 runs on P1
    assert out[-1] == fx.Execute(m2, 1) and of(out, fx.Fork)  # resetspinning → wakep: P0
    assert not any(p.timers for p in w.sched.allp) and w.sched.pollUntil == 5_000_000
    assert w.gopark(m2, "park") == [fx.Park(m2)]


def test_stoplockedm_wakeup_executes_with_a_new_time_slice():
    """schedule: `if _g_.m.lockedg != 0 { stoplockedm(); execute(_g_.m.lockedg.ptr(), false) }`: the
    locked G starts a new slice (schedtick++), though startlockedm's M had it from its runnext."""
    w = started(gomaxprocs=1)
    w.lock(0)
    w.newproc(0, "w", 1)
    out = w.gopark(0, "sleep", 1000)  # locked: stoplockedm, P0 to a new M for G2
    (fork,) = of(out, fx.Fork)
    assert w.hello(fork.m) == [fx.Execute(fork.m, 2)]
    w.advance(2_000_000)
    assert w.goexit(fork.m) == [fx.Wake(0, 0), fx.Park(fork.m)]  # G1 readied: startlockedm
    p0 = w.sched.allp[0]
    t = p0.schedtick
    assert w.woken(0) == [fx.Execute(0, 1)]
    assert p0.schedtick == t + 1


def test_exitsyscall0s_syscalltick_bump_happens_once():
    """exitsyscall after mcall(exitsyscall0): one `_g_.m.p.ptr().syscalltick++` when gp runs again;
    the G's later runs (here after a gosched) do not bump it again."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)  # retake
    assert w.exitsyscall(0) == [fx.Park(0)]  # exitsyscall0: G1 on the global runq
    p0 = w.sched.allp[0]
    assert w.hello(fork.m) == [fx.Execute(fork.m, 1)]
    t = p0.syscalltick
    w.gosched(fork.m)
    w.gosched(fork.m)
    assert p0.syscalltick == t


def test_ready_into_a_full_local_runq_moves_half_to_the_global_queue():
    """ready → runqput(pp, gp, next=true): the G in runnext is kicked to the tail; with the local runq
    full (256) runqputslow moves half of it and the kicked G (129) to the global queue."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 257)  # runnext + a full runq of 256
    p0, s = w.sched.allp[0], w.sched
    assert len(p0.runq) == 256 and s.runqsize == 0
    w.gopark(0, "sleep", 1000)  # G1's timer; the runnext G runs (runq still full)
    w.advance(2_000_000)
    w.newproc(0, "w", 1)  # runnext again
    assert p0.schedtick == 0  # (every G so far came from runnext: inheritTime)
    assert w.goexit(0) == [fx.Execute(0, 2)]  # checkTimers → ready(G1): kick, runqputslow of 129;
    assert p0.runnext is w.g(1) and len(p0.runq) == 128  # then schedtick%61 == 0: one from the global
    assert s.runqsize == 128


def test_netpoll_returns_at_once_on_a_break_left_by_a_dead_poller():
    """findrunnable: when netpoll(delay) returns at once (a netpollBreak byte is in the pipe: here left
    by the polling M, which died before reading it: mdead), `goto top` with a P again, and the next
    poll blocks. (M2 polls; m0's earlier timer breaks the poll; M2 dies; m0, woken for the timers in
    its place, reads the byte and then blocks in netpoll until its timer.)"""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(m2, "sleep", 5000)[-1] == fx.NetpollSleep(m2, 5_000_000)
    out = w.gopark(0, "sleep", 1000)
    assert out[0] == fx.NetpollBreak(m2) and out[-1] == fx.Park(0)
    s = w.sched
    assert s.netpollWakeSig == 1
    out = w.kill(m2)
    assert fx.Wake(0, 1) in out or fx.Wake(0, 0) in out, out
    assert w.woken(0) == [fx.Park(0), fx.NetpollSleep(0, 1_000_000)]
    assert s.netpollWakeSig == 0 and s.pollm is s.m0


def test_the_m_back_from_netpoll_goes_on_at_findrunnables_top():
    """findrunnable after netpoll(delay) returns: pidleget, acquirep, (spinning again,) `goto top`: its
    own P's due timer readies G1 (runnext), which it runs; not schedule's top, where a P at
    schedtick%61 == 0 (P0: 0) would first take one G from the global queue."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)  # steals G2; wakep: P2 to a spinning M3, not started (so no more wakep)
    assert len(w.forked()) == 1
    assert w.gopark(0, "sleep", 5000)[-1] == fx.NetpollSleep(0, 5_000_000)  # P0 idle, schedtick 0
    p0 = w.sched.allp[0]
    assert p0.schedtick == 0 and w.sched.npidle == 1
    w.newproc(m2, "w", 300)  # P1's runq overflows to the global queue
    n = w.sched.runqsize
    assert n > 0
    w.netpoll()
    assert w.woken(0) == [fx.Execute(0, 1)]
    assert w.sched.runqsize == n


# --- netpoll / netpollreturn -------------------------------------------------------------------

def test_netpoll_waits_at_most_1e9_ms():
    """netpoll (netpoll_epoll.go): `else if delay < 1e15 { waitms = int32(delay / 1e6) } else { waitms =
    1e9 }`: ~11.5 days at most for a timer (main sleeps 20 days)."""
    w = started(gomaxprocs=1)
    out = w.gopark(0, "sleep", 20 * 86_400 * 1_000_000)
    assert out == [fx.Park(0), fx.NetpollSleep(0, 1_000_000_000 * 1_000_000)]


def test_a_poll_that_timed_out_leaves_no_break_byte():
    """A netpoll that returns (here by its timeout) has read any netpollBreak byte
    (netpollWakeSig = 0): going on at findrunnable's top, the M steals once more (4 steal orders) and
    its next netpoll blocks at once; it does not return again for a stale byte (another round)."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 1500)
    w.netpoll()
    before = w.sched.rng.getstate()
    assert w.woken(0) == [fx.Park(0), fx.NetpollSleep(0, 2_000_000)]
    assert w.sched.rng.getstate() == steal_draws(before, 1, 4)
    assert w.sched.netpollWakeSig == 0
