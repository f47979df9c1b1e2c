"""The M lifecycle of proc.go: create (startm → newm → allocm → newm1 → newosproc), park (stopm,
mput/mget, notewakeup), hand off Ps (handoffp, wakep, pidleput/pidleget), wake the netpoller
(wakeNetPoller, netpollBreak), and the template thread.

Every function is named as in Go 1.16 and says where it differs. `mp` arguments that Go gets from
`getg().m` are passed explicitly: `caller` is the M whose event is being handled (sysmon's M for
sysmon's events and for the shell's recovery of dead Ms). Effects go to `sched.fx`; nothing here does I/O.
"""
from __future__ import annotations

import heapq
from errno import EAGAIN

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.note import noteclear, notesleep, notewakeup
from coordinator.runtime.runq import globrunqput
from coordinator.runtime.sched import M, P, Parked, Resume, Sched, _Grunnable, _Pidle, _Prunning, runqempty
from coordinator.runtime.timers import nobarrierWakeTime
from protocol.throw import Throw


def mReserveID(sched: Sched) -> int:
    """Go's mReserveID: the new M counts in mcount() (and so as running for checkdead) at once."""
    if sched.mnext + 1 > 2**63 - 1:
        raise Throw("runtime: thread ID overflow")
    mid = sched.mnext
    sched.mnext += 1
    checkmcount(sched)
    return mid


def checkmcount(sched: Sched) -> None:
    """Go's checkmcount: more Ms than maxmcount is fatal ("thread exhaustion")."""
    if sched.mcount() > sched.maxmcount:
        raise Throw("thread exhaustion",
                    prints=(f"runtime: program exceeds {sched.maxmcount}-thread limit",))


def mcommoninit(sched: Sched, mp: M, mid: int) -> None:
    """Go's mcommoninit: give mp its ID (reserving one if mid < 0) and publish it on allm."""
    mp.id = mid if mid >= 0 else mReserveID(sched)
    sched.allm[mp.id] = mp


def stackalloc(sched: Sched, host: str) -> int:
    """The g0 stack: the lowest free slot of the host's arena (Go's malg(8192*StackGuardMultiplier))."""
    free = sched.stackfree_slots.get(host)
    if not free:
        raise Throw("out of memory", prints=(f"runtime: out of g0 stack slots on host {host}",))
    return heapq.heappop(free)


def stackfree(sched: Sched, mp: M) -> None:
    """Go's stackfree(freem.g0.stack): the slot goes back to its host's arena."""
    if mp.slot >= 0 and mp.host not in sched.stackfree_slots:
        mp.slot = -1  # its host was cut off: the slot goes with the host's arena (addhost)
    if mp.slot >= 0:
        heapq.heappush(sched.stackfree_slots[mp.host], mp.slot)
        sched.fx.append(fx.StackFree(mp.host, mp.slot, mp.id))
        sched.stats["stacks_freed"] += 1
        mp.slot = -1


def allocm(sched: Sched, fn: str | None, mid: int, host: str, virtual: bool = False) -> M:
    """Go's allocm: first free the g0 stacks of exited Ms whose process is gone (freeWait == 0),
    then make the new m and its g0 stack slot. (Go borrows a P for mallocs; nothing to borrow here.)"""
    if sched.freem:
        keep = []
        for mp in sched.freem:
            if mp.freeWait != 0:
                keep.append(mp)
            else:
                stackfree(sched, mp)
        sched.freem = keep
    mp = M(id=-1, host=host, mstartfn=fn, virtual=virtual)
    mcommoninit(sched, mp, mid)
    if not virtual:
        mp.slot = stackalloc(sched, host)
    return mp


def placehost(sched: Sched) -> str:
    """Where an M that no M's process forks goes (sysmon's newm, the template's): a host chosen by
    the placement policy, "least-loaded" (fewest Ms; the default) or "round-robin". Not in Go: one
    machine there. A direct newm stays on its caller's host: it is a fork of the caller."""
    if not sched.hosts:
        raise Throw("newosproc", prints=("gmpsim: no host left to create an M on",))
    if sched.placement == "round-robin":
        sched.rr = (sched.rr + 1) % len(sched.hosts)
        return sched.hosts[sched.rr]
    load = {h: 0 for h in sched.hosts}
    for mp in sched.allm.values():
        if not mp.virtual and mp.host in load:
            load[mp.host] += 1
    return min(sched.hosts, key=lambda h: (load[h], sched.hosts.index(h)))


def addhost(sched: Sched, host: str, nslots: int) -> None:
    """Not in Go (one machine there): a host (agent) joins, or rejoins after it was cut off: all of
    its g0 slots are free. Ms of an earlier incarnation of it that still wait on freem will never
    free their slots there."""
    for mp in (*sched.freem, *sched.osstackm):
        if mp.host == host:
            mp.slot = -1
            mp.freeWait = 0
    sched.stackfree_slots[host] = list(range(nslots))
    if host not in sched.hosts:
        sched.hosts.append(host)


def drophost(sched: Sched, host: str) -> list[M]:
    """Not in Go: a host is cut off; no new M goes there. Returns its Ms (the shell fences them)."""
    if host in sched.hosts:
        sched.hosts.remove(host)
    sched.stackfree_slots.pop(host, None)
    return [mp for mp in sched.allm.values() if mp.host == host and not mp.virtual]


def newm(sched: Sched, fn: str | None, p: P | None, mid: int, caller: M | None) -> M:
    """Go's newm: a locked or cgo caller hands the request to the template thread (newmHandoff);
    otherwise newm1 clones the caller. Here a clone is a fork of the caller's process; callers with
    no process (sysmon) have the host agent fork instead."""
    handoff = caller is not None and (caller.lockedExt != 0 or caller.incgo)
    direct_from = caller if (caller is not None and not caller.virtual and not handoff) else None
    host = direct_from.host if direct_from is not None else placehost(sched)
    mp = allocm(sched, fn, mid, host)
    mp.nextp = p
    sched.stats["newm"] += 1
    if handoff:
        nh = sched.newmHandoff
        if nh.haveTemplateThread == 0:
            raise Throw("on a locked thread with no template thread")
        nh.newm.append(mp)
        if nh.waiting:
            nh.waiting = False
            notewakeup(nh.wake)
            templateThread(sched)
        return mp
    newm1(sched, mp, direct_from)
    return mp


def newm1(sched: Sched, mp: M, forker: M | None, template: bool = False) -> None:
    """Go's newm1 (no cgo: straight to newosproc)."""
    newosproc(sched, mp, forker, template)


def newosproc(sched: Sched, mp: M, forker: M | None, template: bool) -> None:
    """Go's newosproc (clone): here the effect "fork M from forker's process" (or the agent's)."""
    sched.stats["ms_created"] += 1
    if template:
        sched.stats["via_template"] += 1
    sched.fx.append(fx.Fork.of(mp, forker, template))




def newosproc_failed(sched: Sched, mp: M, errno: int, cause: str, limit: str) -> None:
    """Go 1.16's newosproc when clone fails: print, then throw("newosproc"). (Go 1.20+ first retries
    EAGAIN 20 times, sleeping try+1 ms: the forker does that when the fault asks for it.) cause:
    "fault" (injected), "clone" (the real fork failed), "machine" (gmpsim's machine-limit guard, which
    Go has not: `limit` is its one extra line, naming the limit). Counted in the report's ms.newosproc_failed."""
    sched.stats["newosproc_failed"] += 1
    sched.stats[f"newosproc_failed.{cause}"] += 1
    prints = [f"runtime: failed to create new OS thread (have {sched.mcount()} already; errno={errno})"]
    if errno == EAGAIN:
        prints.append("runtime: may need to increase max user processes (ulimit -u)")
    if limit:
        prints.append(limit)
    raise Throw("newosproc", prints=tuple(prints))


def mspinning(mp: M) -> None:
    """Go's mspinning: the caller of startm already counted this M in nmspinning."""
    mp.spinning = True


def startTemplateThread(sched: Sched) -> None:
    """Go's startTemplateThread. The template thread of gmpsim is the host agent, a pristine process
    that exists from the start; so newm(templateThread) only registers its M (counted in threads=
    and nmsys, as in Go) and no process is forked."""
    nh = sched.newmHandoff
    if nh.haveTemplateThread != 0:
        return
    nh.haveTemplateThread = 1
    mp = newsysm(sched, "templateThread")
    sched.templatem = mp
    nh.waiting = True
    mp.blocked = True  # it waits in notesleep(&newmHandoff.wake): scheddetail shows blocked=true


def newsysm(sched: Sched, fn: str) -> M:
    """Go's newm(fn, nil, -1) for sysmon and the template thread, and their first lines (lock;
    sched.nmsys++; checkdead(); unlock). Here both Ms are virtual: the coordinator's timer and the
    host agent are their threads, so nothing is forked and they count as started at once."""
    mp = allocm(sched, fn, -1, sched.hosts[0], virtual=True)
    mp.started = True
    sched.nmsys += 1
    checkdead(sched)
    return mp


def templateThread(sched: Sched) -> None:
    """Go's templateThread loop body: take the whole newmHandoff.newm list and newm1 each from the
    clean template (the host agent forks them), then wait again."""
    nh = sched.newmHandoff
    while nh.newm:
        batch, nh.newm = nh.newm, []
        for mp in batch:
            newm1(sched, mp, None, template=True)
    nh.waiting = True
    nh.wake.key = 0  # noteclear(&newmHandoff.wake) before the next notesleep


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
