"""Goroutines made runnable, as in proc.go: newproc → newproc1 (a new G or a dead one from
gfget's free lists, its goid from the P's goidcache), gfput (a dead G back on the free list), and
ready (goready: a waiting G runnable next on the current P).
"""
from __future__ import annotations

from coordinator.runtime.proc import wakep
from coordinator.runtime.runq import runqput
from coordinator.runtime.sched import G, M, P, Sched, _GoidCacheBatch, _Grunnable, isSystemGoroutine


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
