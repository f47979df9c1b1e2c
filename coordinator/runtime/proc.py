"""The M's life around a P of proc.go: start an M for a P (startm, handoffp, wakep, injectglist),
the idle lists (mput/mget, pidleput/pidleget), acquirep/releasep, parking (mPark, stopm,
stoplockedm/startlockedm), and waking the netpoller (wakeNetPoller, netpollBreak). Making a new M
(newm, allocm, the template thread) is newm.py.

Every function is named as in Go 1.16 and says where it differs. `mp` arguments that Go gets from
`getg().m` are passed explicitly: `caller` is the M whose event is being handled (sysmon's M for
sysmon's events and for the shell's recovery of dead Ms). Effects go to `sched.fx`; nothing here does I/O.
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.newm import mReserveID, newm
from coordinator.runtime.note import noteclear, notesleep, notewakeup
from coordinator.runtime.runq import globrunqput
from coordinator.runtime.sched import M, P, Parked, Resume, Sched, _Grunnable, _Pidle, _Prunning, runqempty
from coordinator.runtime.timers import nobarrierWakeTime
from protocol.throw import Throw


def startm(sched: Sched, p: P | None, spinning: bool, caller: M | None, why: str) -> None:
    """Go's startm: run p on an idle M (woken from midle) or a new one. `why` names the caller
    (handoffp, wakep, retake, mexit, injectglist...) for the report; Go has no such argument.
    Go 1.16: a spinning startm with no idle P undoes the caller's nmspinning increment (tip moved
    that to wakep and requires a P for spinning=true)."""
    sched.stats["startm"] += 1
    sched.stats["startm." + why] += 1
    if p is None:
        p = pidleget(sched)
        if p is None:
            if spinning:
                sched.nmspinning -= 1
                if sched.nmspinning < 0:
                    raise Throw("startm: negative nmspinning")
            return
    nmp = mget(sched)
    if nmp is None:
        mid = mReserveID(sched)
        newm(sched, "mspinning" if spinning else None, p, mid, caller)
        return
    if nmp.spinning:
        raise Throw("startm: m is spinning")
    if nmp.nextp is not None:
        raise Throw("startm: m has p")
    if spinning and not runqempty(p):
        raise Throw("startm: p has runnable gs")
    sched.stats["mget"] += 1
    nmp.spinning = spinning
    nmp.nextp = p
    notewakeup(nmp.park)
    sched.fx.append(fx.Wake(nmp.id, p.id))


def handoffp(sched: Sched, p: P, caller: M | None, why: str = "handoffp") -> None:
    """Go 1.16's handoffp: start an M for p wherever findrunnable would find work for it; otherwise
    put p on the idle list and, if it has timers, wakeNetPoller(its first timer). No GC and no
    safe-point functions here, so conditions 2, 4 and 5 of Go 1.16 never hold."""
    if not runqempty(p) or sched.runqsize != 0:
        startm(sched, p, False, caller, why)
        return
    if sched.nmspinning + sched.npidle == 0 and sched.nmspinning == 0:  # CAS(&nmspinning, 0, 1)
        sched.nmspinning = 1
        startm(sched, p, True, caller, why)
        return
    if sched.runqsize != 0:
        startm(sched, p, False, caller, why)
        return
    # If this is the last running P and nobody is polling network, need to wakeup another M to poll network.
    if sched.npidle == sched.gomaxprocs - 1 and sched.lastpoll != 0:
        startm(sched, p, False, caller, why)
        return
    when = nobarrierWakeTime(p)
    pidleput(sched, p)
    if when != 0:
        wakeNetPoller(sched, when, caller)


def wakeNetPoller(sched: Sched, when: int, caller: M | None) -> None:
    """Go's wakeNetPoller: wake the M blocked in netpoll if it would sleep past `when`; with nobody
    in netpoll, wakep so that an M gets there to handle the new timer."""
    if sched.lastpoll == 0:
        if sched.pollUntil == 0 or sched.pollUntil > when:
            netpollBreak(sched)
    else:
        wakep(sched, caller)


def netpollBreak(sched: Sched) -> None:
    """Go's netpollBreak (netpoll_epoll.go): one byte in the break pipe (CAS netpollWakeSig 0 → 1);
    a blocked netpoll returns at once (the effect), a later one finds the byte and does not block."""
    if sched.netpollWakeSig != 0:
        return
    sched.netpollWakeSig = 1
    mp = sched.pollm
    if mp is not None and mp.park.key == 0:
        sched.fx.append(fx.NetpollBreak(mp.id))


def wakep(sched: Sched, caller: M | None) -> None:
    """Go's wakep (1.16): one more spinning M, if a P is idle and nobody is spinning."""
    if sched.npidle == 0:
        return
    if sched.nmspinning != 0:  # !CAS(&nmspinning, 0, 1)
        return
    sched.nmspinning = 1
    startm(sched, None, True, caller, "wakep")


def injectglist(sched: Sched, glist: list, caller: M | None, why: str = "injectglist") -> None:
    """Go's injectglist: make glist runnable. With no P (sysmon's context, the only one that calls it
    here) every G goes on the global runq and an M is started per G while Ps are idle."""
    if not glist:
        return
    for gp in glist:
        gp.status = _Grunnable
        gp.waitreason = ""
        globrunqput(sched, gp)
    n = len(glist)
    while n != 0 and sched.npidle != 0:
        startm(sched, None, False, caller, why)
        n -= 1


def mput(sched: Sched, mp: M) -> None:
    """Go's mput: put mp on the idle list, then checkdead."""
    sched.midle.append(mp)
    sched.nmidle += 1
    checkdead(sched)


def mget(sched: Sched) -> M | None:
    """Go's mget: take an idle M."""
    if not sched.midle:
        return None
    sched.nmidle -= 1
    return sched.midle.pop()


def pidleput(sched: Sched, p: P) -> None:
    """Go's pidleput."""
    if not runqempty(p):
        raise Throw("pidleput: P has non-empty run queue")
    sched.pidle.append(p)
    sched.npidle += 1


def pidleget(sched: Sched) -> P | None:
    """Go's pidleget."""
    if not sched.pidle:
        return None
    sched.npidle -= 1
    return sched.pidle.pop()


def acquirep(sched: Sched, mp: M, p: P) -> None:
    """Go's acquirep/wirep: associate p with mp."""
    if mp.p is not None:
        raise Throw("wirep: already in go")
    if p.m is not None or p.status != _Pidle:
        raise Throw("wirep: invalid p state", prints=(
            f"wirep: p->m={p.m.id if p.m else 0}(0) p->status={p.status}",))
    mp.p = p
    p.m = mp
    p.status = _Prunning


def releasep(sched: Sched, mp: M) -> P:
    """Go's releasep: disassociate mp from its P."""
    p = mp.p
    if p is None:
        raise Throw("releasep: invalid arg")
    if p.m is not mp or p.status != _Prunning:
        raise Throw("releasep: invalid p state", prints=(
            f"releasep: m={mp.id} m->p={p.id} p->m={p.m.id if p.m else 0} p->status={p.status}",))
    mp.p = None
    p.m = None
    p.status = _Pidle
    return p


def mPark(sched: Sched, mp: M, why: Parked, resume: Resume = Resume.NO) -> bool:
    """Go's mPark: notesleep(&m.park). Returns True when the M must really sleep (a Park reply);
    False when its wakeup already came (the key is set), so it goes on at once. `resume` is where
    a stopm returns to (its caller: findrunnable goes back to its top, the others to schedule)."""
    mp.parked = why
    mp.resume = resume
    if notesleep(mp.park):
        return False
    mp.blocked = True
    sched.fx.append(fx.Park(mp.id))
    return True


def unpark(mp: M) -> tuple[Parked, Resume]:
    """Not a Go function: the one way out of mPark's notesleep (the M's process was woken, or its
    wakeup had already come): noteclear(&m.park), and what it slept in and where it goes on."""
    noteclear(mp.park)
    mp.blocked = False
    why, resume = mp.parked, mp.resume
    mp.parked, mp.resume = Parked.NO, Resume.NO
    return why, resume


def stopm_return(sched: Sched, mp: M) -> None:
    """The tail of Go's stopm once mPark returns: acquirep(m.nextp); m.nextp = 0."""
    unpark(mp)
    acquirep(sched, mp, mp.nextp)
    mp.nextp = None


def stopm(sched: Sched, mp: M, resume: Resume) -> bool:
    """Go's stopm: put mp on midle and park it. Returns whether it sleeps (see mPark). `resume`:
    Resume.FINDRUNNABLE (its stopm's `goto top`) or Resume.SCHEDULE (exitsyscall0's, startlockedm's)."""
    if mp.p is not None:
        raise Throw("stopm holding p")
    if mp.spinning:
        raise Throw("stopm spinning")
    mput(sched, mp)
    return mPark(sched, mp, Parked.STOPM, resume)


def incidlelocked(sched: Sched, v: int) -> None:
    """Go's incidlelocked."""
    sched.nmidlelocked += v
    if v > 0:
        checkdead(sched)


def stoplockedm(sched: Sched, mp: M) -> bool:
    """Go's stoplockedm: the locked goroutine blocked; its M gives away its P and sleeps with it."""
    if mp.lockedg is None or mp.lockedg.lockedm is not mp:
        raise Throw("stoplockedm: inconsistent locking")
    if mp.p is not None:
        handoffp(sched, releasep(sched, mp), mp)
    incidlelocked(sched, 1)
    return mPark(sched, mp, Parked.STOPLOCKEDM)


def startlockedm(sched: Sched, mp: M, gp) -> bool:
    """Go's startlockedm: gp is locked to another M; give that M our P and stop ourselves."""
    lm = gp.lockedm
    if lm is mp:
        raise Throw("startlockedm: locked to me")
    if lm.nextp is not None:
        raise Throw("startlockedm: m has p")
    incidlelocked(sched, -1)
    p = releasep(sched, mp)
    lm.nextp = p
    notewakeup(lm.park)
    sched.fx.append(fx.Wake(lm.id, p.id))
    return stopm(sched, mp, Resume.SCHEDULE)  # back in schedule's `goto top`
