"""The scheduling loop of proc.go: mstart1, schedule, findrunnable, execute, and the goroutine
transitions that end in schedule() (gopark's park_m, goschedImpl, ready, newproc).

In Go these run on the M itself; here the coordinator runs them on the M's behalf when its
message arrives, and the M learns the outcome from the reply (Execute or Park).
"""
from __future__ import annotations

from math import gcd

from protocol.throw import Throw

from . import effects as fx
from .note import noteclear
from .proc import (acquirep, mspinning, pidleget, pidleput, releasep, startlockedm, stoplockedm,
                   stopm, wakep)
from .runq import globrunqget, globrunqput, runqget, runqput, runqsteal
from .sched import (_GoidCacheBatch, _Gdead, _Grunnable, _Grunning, _Gwaiting, G, M, P, Sched,
                    isSystemGoroutine, runqempty)

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
    """What follows mPark in Go once notesleep(&m.park) returns: noteclear, then the rest of
    stopm (acquirep(nextp), back to schedule) or of stoplockedm (acquirep, execute(lockedg))."""
    noteclear(mp.park)
    mp.blocked = False
    why, mp.parked = mp.parked, ""
    if why == "m0":
        raise Throw("locked m0 woke up")
    acquirep(sched, mp, mp.nextp)
    mp.nextp = None
    if why == "stoplockedm":
        gp = mp.lockedg
        if gp.status != _Grunnable:
            raise Throw("stoplockedm: not runnable", prints=(
                f"runtime:stoplockedm: lockedg (atomicstatus={gp.status}) is not Grunnable or Gscanrunnable",))
        execute(sched, mp, gp, False)
        return
    schedule(sched, mp)


def schedule(sched: Sched, mp: M) -> None:
    """Go's schedule: find a runnable goroutine and execute it, or park the M."""
    if mp.lockedg is not None:
        if stoplockedm(sched, mp):
            return
        woken(sched, mp)  # the wakeup had already come
        return
    if mp.incgo:
        raise Throw("schedule: in cgo")
    while True:  # top:
        p = mp.p
        if mp.spinning and not runqempty(p):
            raise Throw("schedule: spinning with local work")
        gp, inherit = None, False
        # Check the global runnable queue once in a while to ensure fairness.
        if p.schedtick % 61 == 0 and sched.runqsize > 0:
            gp = globrunqget(sched, p, 1)
        if gp is None:
            gp, inherit = runqget(p)
        if gp is None:
            gp, inherit = findrunnable(sched, mp)
            if gp is None:
                return  # parked in stopm; the woken event goes on from schedule()
        if mp.spinning:
            resetspinning(sched, mp)
        if gp.lockedm is not None:
            # Hands off own p to the locked m, then blocks waiting for a new p.
            if startlockedm(sched, mp, gp):
                return
            _after_stopm(sched, mp)
            continue
        execute(sched, mp, gp, inherit)
        return


def _after_stopm(sched: Sched, mp: M) -> None:
    """The tail of Go's stopm once mPark returns: acquirep(m.nextp); m.nextp = 0."""
    noteclear(mp.park)
    mp.blocked = False
    mp.parked = ""
    acquirep(sched, mp, mp.nextp)
    mp.nextp = None


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
    """Go 1.16's findrunnable: local runq, global runq, steal (spinning, within the 2*nmspinning
    limit), then give up the P and stopm. Returns (None, False) when the M parks. (No netpoll, no GC
    workers; timers are the coordinator's, see sysmon.timers_fire.) Go spins for a while; here one
    pass of stealing is one step."""
    while True:  # top:
        p = mp.p
        gp, inherit = runqget(p)
        if gp is not None:
            return gp, inherit
        if sched.runqsize != 0:
            return globrunqget(sched, p, 0), False
        procs = sched.gomaxprocs
        # If number of spinning M's >= number of busy P's, block.
        if mp.spinning or 2 * sched.nmspinning < procs - sched.npidle:
            if not mp.spinning:
                mp.spinning = True
                sched.nmspinning += 1
            for i in range(_STEAL_TRIES):
                stealRunNextG = i > 2
                for p2 in _steal_order(sched):
                    if p2 is p:
                        continue
                    gp = runqsteal(p, p2, stealRunNextG)
                    if gp is not None:
                        return gp, False
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
        if stopm(sched, mp):
            return None, False
        _after_stopm(sched, mp)


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
    sched.fx.append(fx.Execute(mp.id, gp.goid))


def dropg(mp: M) -> None:
    """Go's dropg."""
    if mp.curg is not None:
        mp.curg.m = None
        mp.curg = None


def park_m(sched: Sched, mp: M, gp: G, reason: str) -> None:
    """Go's gopark → park_m: gp waits; the M schedules something else."""
    gp.status = _Gwaiting
    gp.waitreason = reason
    dropg(mp)
    schedule(sched, mp)


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


def mstartm0(sched: Sched) -> None:
    """Go's mstartm0 (mstart1 on m0): a cgo binary makes its extra M (newextram). Here it runs in
    schedinit, before runtime.main's newm(sysmon), as m0's mstart does in Go."""
    if sched.iscgo and not sched.cgoHasExtraM:
        sched.cgoHasExtraM = True
        newextram(sched)


def newextram(sched: Sched) -> None:
    """Go's newextram → oneNewExtraM: an M for C threads calling into Go; it has no thread until one
    does (never, here), so it is virtual and has no g0 slot (allocm in a cgo binary: malg(-1)). Its
    dead G is locked to it, takes its goid straight from sched.goidgen, and counts in ngsys."""
    from .proc import allocm
    mp = allocm(sched, None, -1, sched.hosts[0], virtual=True)
    mp.started = True
    gp = G(goid=0, prog="runtime.goexit", status=_Gdead)  # gp.sched.pc = goexit
    gp.m = mp
    mp.curg = gp
    mp.lockedInt += 1
    mp.lockedg = gp
    gp.lockedm = mp
    sched.goidgen += 1
    gp.goid = sched.goidgen
    sched.allgs.append(gp)  # allgadd
    sched.goids[gp.goid] = gp
    sched.ngsys += 1
    sched.stats["goroutines_system"] += 1
    sched.extram.append(mp)
    sched.extraMCount += 1
