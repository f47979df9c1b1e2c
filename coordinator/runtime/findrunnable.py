"""findrunnable of proc.go and what it calls to find work: checkTimers (a P's due timers), the steal
order and the stealing from other Ps, then giving up the P for netpoll or stopm.

Run on the M's behalf by schedule (schedule.py); an M that parks here goes on at findrunnable's
`top:` when it is woken (schedule.woken).
"""
from __future__ import annotations

from math import gcd

from coordinator.runtime.netpoll import netpoll, netpollreturn
from coordinator.runtime.newproc import ready
from coordinator.runtime.proc import acquirep, netpollBreak, pidleget, pidleput, releasep, stopm, stopm_return
from coordinator.runtime.runq import globrunqget, runqget, runqsteal
from coordinator.runtime.sched import G, M, P, Resume, Sched, _Gwaiting, runqempty
from coordinator.runtime.timers import nobarrierWakeTime, runtimer
from protocol.throw import Throw

_STEAL_TRIES = 4  # findrunnable's stealTries


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
