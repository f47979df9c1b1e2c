"""LockOSThread and the end of an M (proc.go): LockOSThread/UnlockOSThread, goexit0 (a goroutine
that exits while locked kills its M) and mexit (the M leaves allm for sched.freem)."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.newm import startTemplateThread
from coordinator.runtime.newproc import gfput, ready
from coordinator.runtime.proc import handoffp, mPark, releasep
from coordinator.runtime.sched import G, M, Parked, Sched, _Gdead
from coordinator.runtime.schedule import dropg, schedule
from protocol.throw import Throw


def LockOSThread(sched: Sched, mp: M, gp: G) -> None:
    """Go's LockOSThread: start the template thread on first use, while in a known-good state."""
    if sched.newmHandoff.haveTemplateThread == 0:
        startTemplateThread(sched)
    mp.lockedExt += 1
    if mp.lockedExt == 0:
        raise Throw("LockOSThread nesting overflow")  # Go panics; unreachable with Python ints
    mp.lockedg = gp  # dolockOSThread
    gp.lockedm = mp
    sched.fx.append(fx.Cont(mp.id))


def UnlockOSThread(sched: Sched, mp: M, gp: G) -> None:
    """Go's UnlockOSThread: the links go only when both lock counts are zero."""
    if mp.lockedExt != 0:
        mp.lockedExt -= 1
        if mp.lockedInt == 0 and mp.lockedExt == 0:  # dounlockOSThread
            mp.lockedg = None
            gp.lockedm = None
    sched.fx.append(fx.Cont(mp.id))


def lockOSThread(sched: Sched, mp: M, gp: G) -> None:
    """Go's lockOSThread (the runtime's internal lock: runtime.main during init)."""
    mp.lockedInt += 1
    mp.lockedg = gp  # dolockOSThread
    gp.lockedm = mp
    sched.fx.append(fx.Cont(mp.id))


def unlockOSThread(sched: Sched, mp: M, gp: G) -> None:
    """Go's unlockOSThread. (Not in Go: a goroutine whose locked M died, see mdead, was unlocked
    then; it owes no unlock for that lock.)"""
    if mp.lockedInt == 0 and gp.lostInt > 0:
        gp.lostInt -= 1
        sched.fx.append(fx.Cont(mp.id))
        return
    if mp.lockedInt == 0:
        raise Throw("runtime: internal error: misuse of lockOSThread/unlockOSThread")  # badunlockosthread
    mp.lockedInt -= 1
    if mp.lockedInt == 0 and mp.lockedExt == 0:  # dounlockOSThread
        mp.lockedg = None
        gp.lockedm = None
    sched.fx.append(fx.Cont(mp.id))


def goexit0(sched: Sched, mp: M, gp: G) -> None:
    """Go's goexit0: gp is dead. If it was locked, its thread is killed rather than reused: m.lockedExt
    is kept so that the M which replaces it is made by the template thread (golang/go#28979)."""
    gp.status = _Gdead
    gp.m = None
    locked = gp.lockedm is not None
    gp.lockedm = None
    mp.lockedg = None
    dropg(mp)
    if mp.lockedInt != 0:
        raise Throw("internal lockOSThread error", prints=(f"invalid m->lockedInt = {mp.lockedInt}",))
    sched.stats["goroutines_completed"] += 1
    gfput(sched, mp.p, gp)
    parent = gp.parent
    if parent is not None:
        parent.live_children -= 1
        if parent.live_children == 0 and parent.waitreason == "semacquire":
            ready(sched, mp, parent)  # the "wait" op's WaitGroup reached zero
    if locked:
        mexit(sched, mp)
        return
    schedule(sched, mp)


def mexit(sched: Sched, mp: M) -> None:
    """Go's mexit: m0 is wedged, never exited; any other M leaves allm, waits on sched.freem with
    freeWait=1 (cleared when the host agent reports its process gone), hands off its P, and
    nmfreed++ then checkdead (after handoffp, which may have started an M for the P's work).
    In a cgo binary the g0 stack is the thread's own (osStack: allocm's malg(-1)), so the M is not
    put on freem: it returns from mstart and the thread frees it; here its g0 slot is freed when
    its process is gone (sched.osstackm until then)."""
    if mp is sched.m0:
        handoffp(sched, releasep(sched, mp), mp, "mexit")
        sched.nmfreed += 1
        checkdead(sched)
        mPark(sched, mp, Parked.M0)
        return
    if sched.allm.pop(mp.id, None) is None:
        raise Throw("m not found in allm")
    osStack = sched.iscgo
    if not osStack:
        mp.freeWait = 1
        sched.freem.append(mp)
    else:
        sched.osstackm.append(mp)
    handoffp(sched, releasep(sched, mp), mp, "mexit")
    sched.nmfreed += 1
    mp.exited = True
    sched.stats["ms_exited"] += 1
    checkdead(sched)
    sched.fx.append(fx.Exit(mp.id))
