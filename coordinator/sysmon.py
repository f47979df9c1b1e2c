"""sysmon (proc.go): the delay schedule, retake, preemptone, and the timers of sleeping goroutines.

sysmon is an M in Go (newm(sysmon, nil, -1), counted in nmsys); here it is a timer of the
coordinator's loop with an M record of its own (`sched.sysmonm`, virtual). The shell asks
`sysmon_delay` how long to sleep, then calls `sysmon_tick` with the clock.
"""
from __future__ import annotations

import heapq

from . import effects as fx
from .proc import handoffp, incidlelocked, injectglist
from .sched import _Prunning, _Psyscall, _Pidle, _Gwaiting, G, P, Sched, forcePreemptNS, runqempty, syscallLazyNS
from .schedtrace import schedtrace

SYSMON_MIN_DELAY_US = 20
SYSMON_MAX_DELAY_US = 10_000
SYSMON_IDLE_BEFORE_BACKOFF = 50


def sysmon_delay(sched: Sched) -> int | None:
    """Go's sysmon loop head: 20µs while busy, doubling after 50 idle cycles, capped at 10ms.
    None: deep sleep (no schedtrace and every P idle) until woken or the next timer."""
    if sched.sysmon_idle == 0:
        sched.sysmon_delay = SYSMON_MIN_DELAY_US
    elif sched.sysmon_idle > SYSMON_IDLE_BEFORE_BACKOFF:
        sched.sysmon_delay *= 2
    if sched.sysmon_delay > SYSMON_MAX_DELAY_US:
        sched.sysmon_delay = SYSMON_MAX_DELAY_US
    if sched.schedtrace_ms <= 0 and (sched.gcwaiting != 0 or sched.npidle == sched.gomaxprocs):
        sched.sysmonwait = 1
        sched.sysmon_idle = 0
        return None
    return sched.sysmon_delay


def sysmon_wake(sched: Sched) -> None:
    """sysmon leaves its deep sleep (Go: notetsleep(&sched.sysmonnote) returns; idle = 0, delay = 20)."""
    sched.sysmonwait = 0
    sched.sysmon_idle = 0
    sched.sysmon_delay = SYSMON_MIN_DELAY_US


def sysmon_tick(sched: Sched) -> None:
    """One pass of Go's sysmon loop after its usleep: retake, then schedtrace when it is due."""
    if retake(sched, sched.now) != 0:
        sched.sysmon_idle = 0
    else:
        sched.sysmon_idle += 1
    if sched.schedtrace_ms > 0 and sched.lasttrace + sched.schedtrace_ms * 1_000_000 <= sched.now:
        sched.lasttrace = sched.now
        sched.fx.append(fx.Trace(schedtrace(sched, sched.scheddetail)))


def preemptone(sched: Sched, p: P) -> bool:
    """Go's preemptone: ask the goroutine running on p to stop (gp.preempt; the M yields at its next
    slice of compute)."""
    mp = p.m
    if mp is None or mp is sched.sysmonm:
        return False
    gp = mp.curg
    if gp is None:
        return False
    gp.preempt = True
    sched.fx.append(fx.Preempt(mp.id, gp.goid))
    return True


def retake(sched: Sched, now: int) -> int:
    """Go 1.16's retake: preempt a G running over forcePreemptNS; retake a P seen in the same
    syscall on two consecutive sysmon ticks (lazily, up to 10ms, when it has no work and others idle)."""
    n = 0
    for p in sched.allp:
        pd = p.sysmontick
        s = p.status
        sysretake = False
        if s == _Prunning or s == _Psyscall:
            t = p.schedtick
            if pd.schedtick != t:
                pd.schedtick = t
                pd.schedwhen = now
            elif pd.schedwhen + forcePreemptNS <= now:
                preemptone(sched, p)
                sysretake = True  # preemptone cannot work on a P in a syscall
        if s == _Psyscall:
            t = p.syscalltick
            if not sysretake and pd.syscalltick != t:
                pd.syscalltick = t
                pd.syscallwhen = now
                continue
            if runqempty(p) and sched.nmspinning + sched.npidle > 0 and pd.syscallwhen + syscallLazyNS > now:
                continue
            incidlelocked(sched, -1)  # so checkdead does not see a false deadlock meanwhile
            if p.status == _Psyscall:  # CAS(_Psyscall → _Pidle)
                p.status = _Pidle
                n += 1
                p.syscalltick += 1
                sched.stats["retake"] += 1
                handoffp(sched, p, sched.sysmonm, "retake")
            incidlelocked(sched, 1)
    return n


def addtimer(sched: Sched, gp: G, when: int) -> None:
    """A sleeping goroutine's timer. Go keeps a heap per P; here one heap, fired by the coordinator."""
    sched.timerseq += 1
    heapq.heappush(sched.timers, (when, sched.timerseq, gp))


def next_timer(sched: Sched) -> int | None:
    """When the earliest timer is due (Go ns), or None."""
    return sched.timers[0][0] if sched.timers else None


def timers_fire(sched: Sched) -> None:
    """Run due timers: their goroutines become runnable through injectglist, as Go's netpoll
    results and sysmon do (caller: sysmon's M, with no P)."""
    glist = []
    while sched.timers and sched.timers[0][0] <= sched.now:
        _, _, gp = heapq.heappop(sched.timers)
        if gp.status == _Gwaiting:
            glist.append(gp)
    injectglist(sched, glist, sched.sysmonm)
