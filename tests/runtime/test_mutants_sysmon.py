"""Tests that kill sysmon's and the system calls' surviving mutants (tests/MUTATION.md): sysmon's
loop (the deep sleep, idle/delay, lastpoll, schedtrace), retake and preemptone, entersyscall and
entersyscallblock, each pinning one rule of Go 1.16's proc.go through step() (tests/world.py).
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.sched import _Psyscall, forcePreemptNS, syscallLazyNS
from tests import steps
from tests.steps import busy, of, tick_at, warm
from tests.world import World

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)


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
