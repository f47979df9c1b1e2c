"""The scheduling loop of proc.go: mstart1, schedule, execute, and the goroutine transitions that end
in schedule() (gopark's park_m, goschedImpl); woken, where an M goes on after its sleep. Finding
work is findrunnable.py, making goroutines runnable (newproc, ready) newproc.py.

In Go these run on the M itself; here the coordinator runs them on the M's behalf when its
message arrives, and the M learns the outcome from the reply (Execute or Park).
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.findrunnable import checkTimers, findrunnable
from coordinator.runtime.netpoll import netpollreturn
from coordinator.runtime.newm import mspinning
from coordinator.runtime.proc import (
    acquirep,
    startlockedm,
    stoplockedm,
    stopm,
    stopm_return,
    unpark,
    wakeNetPoller,
    wakep,
)
from coordinator.runtime.runq import globrunqget, globrunqput, runqget
from coordinator.runtime.sched import G, M, Parked, Resume, Sched, _Grunnable, _Grunning, _Gwaiting, runqempty
from coordinator.runtime.timers import doaddtimer
from protocol.throw import Throw


def mstart1(sched: Sched, mp: M) -> None:
    """Go's mstart/mstart1: the new M runs its mstartfn (mspinning), takes nextp, and schedules."""
    mp.started = True
    if mp.mstartfn == "mspinning":
        mspinning(mp)
    if mp is not sched.m0:
        acquirep(sched, mp, mp.nextp)
        mp.nextp = None
    schedule(sched, mp)


def woken(sched: Sched, mp: M) -> None:
    """What follows the M's sleep once its process is woken. On m.park (mPark): noteclear, then the
    rest of stopm (acquirep(nextp)) and back where that stopm was called: findrunnable's `goto top`,
    or schedule() for exitsyscall0's and startlockedm's; or the rest of stoplockedm (acquirep,
    execute(lockedg)). In netpoll: the rest of findrunnable after netpoll(delay) returns."""
    why, resume = unpark(mp)
    if why == Parked.M0:
        raise Throw("locked m0 woke up")
    if why == Parked.NETPOLL:
        if not netpollreturn(sched, mp) and stopm(sched, mp, Resume.FINDRUNNABLE):
            return
        if mp.p is None:  # stopm's wakeup had already come
            stopm_return(sched, mp)
        _schedule_top(sched, mp, True)
        return
    acquirep(sched, mp, mp.nextp)
    mp.nextp = None
    if why == Parked.STOPLOCKEDM:
        gp = mp.lockedg
        if gp.status != _Grunnable:
            raise Throw("stoplockedm: not runnable", prints=(
                f"runtime:stoplockedm: lockedg (atomicstatus={gp.status}) is not Grunnable or Gscanrunnable",))
        execute(sched, mp, gp, False)
        return
    _schedule_top(sched, mp, resume == Resume.FINDRUNNABLE)


def schedule(sched: Sched, mp: M) -> None:
    """Go's schedule: find a runnable goroutine and execute it, or park the M."""
    if mp.lockedg is not None:
        if stoplockedm(sched, mp):
            return
        woken(sched, mp)  # the wakeup had already come
        return
    if mp.incgo:
        raise Throw("schedule: in cgo")
    _schedule_top(sched, mp, False)


def _schedule_top(sched: Sched, mp: M, in_findrunnable: bool) -> None:
    """Go's schedule from `top:`; with in_findrunnable, from inside findrunnable (an M whose stopm
    or netpoll there returned goes on at findrunnable's `top:`), then the rest of schedule."""
    while True:  # top:
        if in_findrunnable:
            in_findrunnable = False
            gp, inherit = findrunnable(sched, mp)
            if gp is None:
                return  # parked (stopm or netpoll); the woken event goes on from there
        else:
            p = mp.p
            if mp.spinning and not runqempty(p):
                raise Throw("schedule: spinning with local work")
            checkTimers(sched, mp, p, 0)
            gp, inherit = None, False
            # Check the global runnable queue once in a while to ensure fairness.
            if p.schedtick % 61 == 0 and sched.runqsize > 0:
                gp = globrunqget(sched, p, 1)
            if gp is None:
                gp, inherit = runqget(p)
            if gp is None:
                gp, inherit = findrunnable(sched, mp)
                if gp is None:
                    return
        if mp.spinning:
            resetspinning(sched, mp)
        if gp.lockedm is not None:
            # Hands off own p to the locked m, then blocks waiting for a new p.
            if startlockedm(sched, mp, gp):
                return
            stopm_return(sched, mp)
            continue
        execute(sched, mp, gp, inherit)
        return


def resetspinning(sched: Sched, mp: M) -> None:
    """Go's resetspinning: the spinning M found work; maybe another should spin (wakep)."""
    if not mp.spinning:
        raise Throw("resetspinning: not a spinning m")
    mp.spinning = False
    sched.nmspinning -= 1
    if sched.nmspinning < 0:
        raise Throw("findrunnable: negative nmspinning")
    wakep(sched, mp)


def execute(sched: Sched, mp: M, gp: G, inheritTime: bool) -> None:
    """Go's execute: run gp on mp (the Execute reply carries it to the M's process)."""
    mp.curg = gp
    gp.m = mp
    gp.status = _Grunning
    gp.waitreason = ""
    gp.preempt = False
    if not inheritTime:
        mp.p.schedtick += 1
    if gp.sysexit0:
        # It left a syscall through exitsyscall0: back in exitsyscall after mcall(exitsyscall0),
        # on whatever M and P run it now, Go does _g_.m.p.ptr().syscalltick++.
        gp.sysexit0 = False
        mp.p.syscalltick += 1
    sched.fx.append(fx.Execute(mp.id, gp.goid))


def dropg(mp: M) -> None:
    """Go's dropg."""
    if mp.curg is not None:
        mp.curg.m = None
        mp.curg = None


def park_m(sched: Sched, mp: M, gp: G, reason: str, unlockf=None) -> None:
    """Go's gopark → park_m: gp waits (then gopark's unlockf runs, e.g. time.Sleep's resetForSleep);
    the M schedules something else."""
    gp.status = _Gwaiting
    gp.waitreason = reason
    dropg(mp)
    if unlockf is not None:
        unlockf()
    schedule(sched, mp)


def resetForSleep(sched: Sched, mp: M, gp: G, when: int) -> None:
    """Go's resetForSleep (time.Sleep's unlockf) → resettimer → modtimer of a new timer: doaddtimer on
    the current P, then wakeNetPoller(when)."""
    doaddtimer(sched, mp.p, gp, when)
    wakeNetPoller(sched, when, mp)


def goschedImpl(sched: Sched, mp: M, gp: G) -> None:
    """Go's goschedImpl (via gopreempt_m): gp goes to the global runq; the M schedules."""
    gp.status = _Grunnable
    dropg(mp)
    globrunqput(sched, gp)
    schedule(sched, mp)


