"""The scheduling loop of proc.go: mstart1, schedule, findrunnable, execute, and the goroutine
transitions that end in schedule() (gopark's park_m, goschedImpl, ready, newproc).

In Go these run on the M itself; here the coordinator runs them on the M's behalf when its
message arrives, and the M learns the outcome from the reply (Execute or Park).
"""
from __future__ import annotations

from math import gcd

from coordinator.runtime import effects as fx
from coordinator.runtime.netpoll import netpoll, netpollreturn
from coordinator.runtime.newm import mspinning
from coordinator.runtime.proc import (
    acquirep,
    netpollBreak,
    pidleget,
    pidleput,
    releasep,
    startlockedm,
    stoplockedm,
    stopm,
    stopm_return,
    unpark,
    wakeNetPoller,
    wakep,
)
from coordinator.runtime.runq import globrunqget, globrunqput, runqget, runqput, runqsteal
from coordinator.runtime.sched import (
    G,
    M,
    P,
    Parked,
    Resume,
    Sched,
    _GoidCacheBatch,
    _Grunnable,
    _Grunning,
    _Gwaiting,
    isSystemGoroutine,
    runqempty,
)
from coordinator.runtime.timers import doaddtimer, nobarrierWakeTime, runtimer
from protocol.throw import Throw

_STEAL_TRIES = 4  # findrunnable's stealTries


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


def checkTimers(sched: Sched, mp: M, pp: P, now: int) -> tuple[int, int, bool]:
    """Go's checkTimers: run pp's due timers on mp (their goroutines become ready on mp's P, as
    goroutineReady → goready does). Returns (now, when pp's next timer is due or 0, ran any)."""
    nxt = nobarrierWakeTime(pp)
    if nxt == 0:
        return now, 0, False
    if now == 0:
        now = sched.now
    if now < nxt:
        return now, nxt, False
    pollUntil, ran = 0, False
    while pp.timers:
        tw, gp = runtimer(pp, now)
        if tw != 0:
            if tw > 0:
                pollUntil = tw
            break
        if gp.status == _Gwaiting:  # runOneTimer → goroutineReady
            ready(sched, mp, gp)
        ran = True
    return now, pollUntil, ran


def _steal_order(sched: Sched) -> list:
    """Go's stealOrder: every P once, from a random start with a random stride coprime to gomaxprocs."""
    n = len(sched.allp)
    coprimes = [i for i in range(1, n + 1) if gcd(i, n) == 1]
    pos, inc = sched.rng.randrange(n), coprimes[sched.rng.randrange(len(coprimes))]
    order = []
    for _ in range(n):
        order.append(sched.allp[pos])
        pos = (pos + inc) % n
    return order


def findrunnable(sched: Sched, mp: M) -> tuple[G | None, bool]:
    """Go 1.16's findrunnable: timers, local runq, global runq, steal (spinning, within the
    2*nmspinning limit; timers too on the last pass), then give up the P and block in netpoll until
    the next timer (one M at a time: lastpoll) or stopm. Returns (None, False) when the M sleeps.
    No network (netpollWaiters is 0: netpoll only waits for timers), no GC workers. Go spins for a
    while; here one pass of stealing is one step."""
    while True:  # top:
        p = mp.p
        now, pollUntil, _ = checkTimers(sched, mp, p, 0)
        gp, inherit = runqget(p)
        if gp is not None:
            return gp, inherit
        if sched.runqsize != 0:
            return globrunqget(sched, p, 0), False
        procs = sched.gomaxprocs
        ranTimer = False
        # If number of spinning M's >= number of busy P's, block.
        if mp.spinning or 2 * sched.nmspinning < procs - sched.npidle:
            if not mp.spinning:
                mp.spinning = True
                sched.nmspinning += 1
            for i in range(_STEAL_TRIES):
                stealTimersOrRunNextG = i == _STEAL_TRIES - 1
                for p2 in _steal_order(sched):
                    if p2 is p:
                        continue
                    if stealTimersOrRunNextG and p2.timers:
                        now, w, ran = checkTimers(sched, mp, p2, now)
                        if w != 0 and (pollUntil == 0 or w < pollUntil):
                            pollUntil = w
                        if ran:
                            gp, inherit = runqget(p)
                            if gp is not None:
                                return gp, inherit
                            ranTimer = True
                    gp = runqsteal(p, p2, stealTimersOrRunNextG)
                    if gp is not None:
                        return gp, False
            if ranTimer:
                continue  # running a timer may have made some goroutine ready
        # stop:
        if sched.runqsize != 0:
            return globrunqget(sched, p, 0), False
        if releasep(sched, mp) is not p:
            raise Throw("findrunnable: wrong p")
        pidleput(sched, p)
        wasSpinning = mp.spinning
        if mp.spinning:
            mp.spinning = False
            sched.nmspinning -= 1
            if sched.nmspinning < 0:
                raise Throw("findrunnable: negative nmspinning")
        # Check all runqueues once again.
        retry = False
        for p2 in sched.allp:
            if not runqempty(p2):
                pp = pidleget(sched)
                if pp is not None:
                    acquirep(sched, mp, pp)
                    if wasSpinning:
                        mp.spinning = True
                        sched.nmspinning += 1
                    retry = True
                break
        if retry:
            continue
        # Check for timer creation or expiry concurrently with transitioning from spinning to non-spinning.
        for p2 in sched.allp:
            w = nobarrierWakeTime(p2)
            if w != 0 and (pollUntil == 0 or w < pollUntil):
                pollUntil = w
        delta = -1
        if pollUntil != 0:
            if now == 0:
                now = sched.now
            delta = max(pollUntil - now, 0)
        # poll network (netpollWaiters > 0 never holds here: no network)
        if sched.netpollInited and pollUntil != 0 and sched.lastpoll != 0:  # Xchg64(&sched.lastpoll, 0) != 0
            sched.lastpoll = 0
            sched.pollUntil = pollUntil
            if mp.p is not None:
                raise Throw("findrunnable: netpoll with p")
            if mp.spinning:
                raise Throw("findrunnable: netpoll with spinning")
            mp.wasSpinning = wasSpinning
            if netpoll(sched, mp, delta):
                return None, False  # blocked; netpollreturn runs when its process is woken
            if netpollreturn(sched, mp):
                continue
        elif pollUntil != 0 and sched.netpollInited:
            if sched.pollUntil == 0 or sched.pollUntil > pollUntil:
                netpollBreak(sched)
        if stopm(sched, mp, Resume.FINDRUNNABLE):
            return None, False
        stopm_return(sched, mp)


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


def ready(sched: Sched, mp: M, gp: G) -> None:
    """Go's ready (goready): gp becomes runnable next on the current P, and maybe an M wakes."""
    gp.status = _Grunnable
    gp.waitreason = ""
    runqput(sched, mp.p, gp, True)
    wakep(sched, mp)


def newproc(sched: Sched, mp: M, prog: str, n: int) -> None:
    """Go's newproc, once per `go` statement (n times): newproc1, runqput in runnext, then wakep once
    main has started."""
    parent = mp.curg
    for _ in range(n):
        p = mp.p
        newg = newproc1(sched, p, prog, parent)
        runqput(sched, p, newg, True)
        if sched.mainStarted:
            wakep(sched, mp)


def newproc1(sched: Sched, p: P, prog: str, parent: G | None) -> G:
    """Go's newproc1: a dead G from gfget, else a new one (allgadd); its goid from p's goidcache,
    refilled from sched.goidgen in batches of _GoidCacheBatch; system goroutines count in ngsys."""
    newg = gfget(sched, p)
    if newg is None:
        newg = G(goid=0, prog=prog)
        sched.allgs.append(newg)  # allgadd
    else:
        sched.goids.pop(newg.goid, None)
        newg.__init__(goid=0, prog=prog)  # a fresh start on the reused descriptor
    newg.parent = parent
    if p.goidcache == p.goidcacheend:
        # Sched.goidgen is the last allocated id, this batch must be
        # [sched.goidgen+1, sched.goidgen+GoidCacheBatch]; at startup main receives goid=1.
        sched.goidgen += _GoidCacheBatch
        p.goidcache = sched.goidgen - (_GoidCacheBatch - 1)
        p.goidcacheend = p.goidcache + _GoidCacheBatch
    newg.goid = p.goidcache
    p.goidcache += 1
    sched.goids[newg.goid] = newg
    if isSystemGoroutine(newg):
        sched.ngsys += 1
        sched.stats["goroutines_system"] += 1
    else:
        sched.stats["goroutines_created"] += 1
        if parent is not None:
            parent.live_children += 1
    return newg


def gfget(sched: Sched, p: P) -> G | None:
    """Go's gfget: a dead G from p's free list; when that is empty, first move a batch (up to 32)
    from the global free list (sched.gFree)."""
    if not p.gFree and sched.gFree:
        while len(p.gFree) < 32 and sched.gFree:
            p.gFree.append(sched.gFree.pop())
    if not p.gFree:
        return None
    return p.gFree.pop()


def gfput(sched: Sched, p: P, gp: G) -> None:
    """Go's gfput: gp goes on p's free list; at 64, move Gs to the global list until fewer than 32
    are left (31)."""
    p.gFree.append(gp)
    if len(p.gFree) >= 64:
        while len(p.gFree) >= 32:
            sched.gFree.append(p.gFree.pop())
