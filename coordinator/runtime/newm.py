"""M creation of proc.go: startm's new M (mReserveID, allocm and its g0 stack, newm → newm1 →
newosproc), the template thread, sysmon's and the extra M of a cgo binary, and the hosts an M is
placed on.

Every function is named as in Go 1.16 and says where it differs. Effects go to `sched.fx`; nothing
here does I/O.
"""
from __future__ import annotations

import heapq
from errno import EAGAIN

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.note import notewakeup
from coordinator.runtime.sched import G, M, P, Sched, _Gdead
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
    if len(sched.hosts) == 1:  # no choice to make, and no pass over allm (it is O(Ms) per newm below)
        sched.rr = 0  # as round-robin's (rr + 1) % 1 leaves it
        return sched.hosts[0]
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
