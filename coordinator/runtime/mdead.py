"""When an M dies unexpectedly (SIGKILL, a clean exit mid-run, declared lost and fenced).

Go has no such path: a Go thread never dies while holding scheduler state. gmpsim's policy, so that
no goroutine and no P is lost, is what retake and mexit would do for the pieces the M held:
- the goroutine it ran (or was handed to run) goes back on the global run queue, unlocked
  ("requeued": the report names it);
- its P (held, in transit through nextp, or left in _Psyscall) is handed off with handoffp, as
  retake does;
- its own records leave allm for sched.freem (freeWait 0 once its process is gone, so the next
  allocm frees its g0 stack), nmfreed++, and checkdead runs, as in mexit.
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.proc import handoffp, injectglist, wakeNetPoller
from coordinator.runtime.sched import M, Parked, Sched, _Grunnable, _Grunning, _Gsyscall, _Pidle, _Psyscall
from coordinator.runtime.timers import maxWhen, timeSleepUntil


def describe_m(mp: M) -> str:
    """What the M was doing, for the post-mortem (like the state a Go crash dump shows per thread).
    One line per state an M of allm can be in between two steps (invariants.py); a started M that
    is not parked runs a goroutine."""
    if not mp.started:
        return "starting (forked, no mstart yet)"
    if mp.blocked:
        if mp.parked == Parked.STOPM and mp.nextp is not None:
            return f"woken with P{mp.nextp.id}{' (spinning)' if mp.spinning else ''}, not yet running"
        if mp.parked == Parked.STOPLOCKEDM:
            handed = f", handed P{mp.nextp.id}" if mp.nextp is not None else ""
            return f"parked with locked G{mp.lockedg.goid} (stoplockedm{handed})"
        return _PARKED[mp.parked]
    gp = mp.curg
    if gp.status == _Gsyscall:
        return f"in a {'cgo call' if mp.incgo else 'syscall'} (G{gp.goid})"
    return f"running G{gp.goid}"


_PARKED = {Parked.STOPM: "parked (stopm)",
           Parked.M0: "wedged (m0 after its locked goroutine exited)",
           Parked.NETPOLL: "blocked in netpoll (findrunnable, until the next timer)"}


def mdead(sched: Sched, mp: M, gone: bool) -> dict:
    """Not in Go (see the module doc): the M is dead (gone=True: its process is gone) or fenced
    (gone=False: it may still run; it is told to exit and its messages are refused). Returns what
    was recovered, for the report."""
    doing = describe_m(mp)
    # Its own records first: it no longer counts in mcount(), so an M started for its P below is
    # not refused by checkmcount, and checkdead sees the truth.
    if sched.allm.pop(mp.id, None) is not None and mp.parked != Parked.M0:
        sched.nmfreed += 1  # (a wedged m0 was counted by mexit already: Go keeps it on allm)
    if mp in sched.midle:
        sched.midle.remove(mp)
        sched.nmidle -= 1
    if mp.spinning or (not mp.started and mp.mstartfn == "mspinning"):
        sched.nmspinning -= 1  # the waker counted it; nobody will resetspinning it now
        mp.spinning = False
    was_polling = sched.pollm is mp
    if was_polling:  # it was the M in netpoll: nobody polls now (as after netpoll returns)
        sched.pollm = None
        sched.pollUntil = 0
        sched.lastpoll = sched.now or 1
        mp.wasSpinning = False
    if mp.parked == Parked.STOPLOCKEDM and mp.park.key == 0:
        sched.nmidlelocked -= 1  # undo stoplockedm's incidlelocked(1) (startlockedm's wake already did)
    # The goroutine it ran, or the locked one it was handed (startlockedm), goes back (below).
    glist = []
    gp = mp.curg
    if gp is not None and gp.status in (_Grunning, _Gsyscall):
        gp.m = None
        mp.curg = None
        glist.append(gp)
    lg = mp.lockedg
    if lg is not None:
        lg.lostInt += mp.lockedInt  # the runtime's own lock (runtime.main's) went with the M
        lg.lockedm = None
        mp.lockedg = None
        if mp.parked == Parked.STOPLOCKEDM and mp.nextp is not None and lg.status == _Grunnable and lg not in glist:
            glist.append(lg)  # handed over by startlockedm, in no queue now
    requeued = [g.goid for g in glist]
    mp.incgo = False
    # Its P, wherever it was.
    ps = []
    if mp.p is not None:
        p, mp.p = mp.p, None
        p.m = None
        p.status = _Pidle
        ps.append(p)
    if mp.nextp is not None:
        ps.append(mp.nextp)
        mp.nextp = None
    if mp.oldp is not None:
        p, mp.oldp = mp.oldp, None
        if p.status == _Psyscall and p.m is None and p.syscalltick == mp.syscalltick:  # still its syscall
            p.status = _Pidle
            p.syscalltick += 1
            ps.append(p)
    mp.blocked = False
    mp.parked = Parked.NO
    mp.exited = True
    mp.freeWait = 0 if gone else 1
    sched.freem.append(mp)
    sched.stats["ms_died"] += 1
    sched.stats["goroutines_requeued"] += len(requeued)
    for p in ps:
        handoffp(sched, p, sched.sysmonm, "mdead")
    # As netpoll's results come back: on the global queue, with an M started per G while Ps idle.
    injectglist(sched, glist, sched.sysmonm, "mdead")
    if was_polling:  # somebody must wait for the timers in its place: as when a timer is added
        nxt = timeSleepUntil(sched)
        if nxt != maxWhen:
            wakeNetPoller(sched, nxt, sched.sysmonm)
    checkdead(sched)
    return {"doing": doing, "requeued": requeued, "ps": [p.id for p in ps]}


def reforkm(sched: Sched, mp: M) -> None:
    """A fork order that never became a process (its forker died first, or its host agent did):
    newosproc again from the host agent, as a new incarnation (epoch + 1) so that a late child of
    the old order is refused. Not in Go: a clone there either happens or throws."""
    mp.epoch += 1
    sched.stats["reforked"] += 1
    sched.fx.append(fx.Fork.of(mp))


def lost_goroutines(sched: Sched) -> list[int]:
    """Goroutines that can no longer run and that nothing explains: running or in a syscall on an M
    that is gone, or runnable but in no run queue and handed to no live M."""
    queued = {id(g) for g in sched.runq}
    handed = set()
    for p in sched.allp:
        queued.update(id(g) for g in p.runq)
        if p.runnext is not None:
            queued.add(id(p.runnext))
    for mp in sched.allm.values():
        if mp.lockedg is not None:
            handed.add(id(mp.lockedg))
    lost = []
    for gp in sched.allgs:
        if gp.status in (_Grunning, _Gsyscall):
            if gp.m is None or gp.m.exited or gp.m.id not in sched.allm:
                lost.append(gp.goid)
        elif gp.status == _Grunnable and id(gp) not in queued and id(gp) not in handed:
            lost.append(gp.goid)
    return lost
