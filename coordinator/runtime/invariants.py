"""The scheduler's invariants, checked between steps: `check(sched) -> list[str]` (empty when fine).

Pure and cheap (one pass over the Ms, the Ps, the Gs and the run queues), so a real run can call
it after every step. Each problem is one line naming the records involved, e.g.
"P1: owned by M3 but M3.p is P0".

Between two steps every record is in one well-defined state:

- a P is idle (on sched.pidle, _Pidle, no M), owned by exactly one M (_Prunning, p.m == M and
  M.p == p), in transit through exactly one M's nextp (_Pidle, off pidle: startm / startlockedm
  chose that M, which has not yet said hello or woken), or _Psyscall (no M; the M whose goroutine
  entered the syscall on it still has it as oldp with the same syscalltick);
- a (non-virtual) M in allm is unstarted (a Fork is on its way; nextp set, m0 excepted: it holds P0
  from procresize), running a goroutine (curg _Grunning with a P, or _Gsyscall without one), idle
  on sched.midle (parked in stopm, no P, no nextp; it resumes in findrunnable or schedule), woken
  from stopm (parked, key set, nextp set), blocked in netpoll (findrunnable's poll until the next
  timer: no P, no nextp, not on midle so not idle, not spinning; at most one, and sched.lastpoll is
  0 exactly while it is there; key set once its wait is over, still with no P),
  parked in stoplockedm with its locked goroutine (key set and nextp set once startlockedm handed it
  a P), or m0 wedged by mexit (it stays in allm, counted in nmfreed). Exited Ms (mexit, or mdead
  for a process that died) are on sched.freem until allocm frees their g0 stack;
- a goroutine is runnable (in exactly one run queue, or handed to its locked M with the P), running
  (exactly one M's curg, with a P), in a syscall (exactly one M's curg, no P), waiting, or dead.

Counters follow from that: npidle, nmidle, runqsize are list lengths; nmidlelocked counts the Ms
parked in stoplockedm and not yet handed a P; nmspinning counts the spinning Ms plus the Ms not yet
started whose mstartfn is mspinning (the waker counts them, mspinning adopts the count);
mcount() == mnext - nmfreed == len(allm) - (1 if m0 is wedged), allm holding sysmon's and the
template thread's virtual Ms (nmsys) too; nmfreed counts the Ms that exited or died, plus a wedged m0.

Not meaningful right after a Fatal (a throw leaves the step half done); after main returned
(ProgramExit) goroutine 1 is dead on m0's curg, which is allowed. Cost: ~0.3 µs per live M, P or G
record (about 1 ms for 750 Ms and 2000 live goroutines); dead goroutines are nearly free.
"""
from __future__ import annotations

from coordinator.runtime.sched import (
    _LOCAL_RUNQ_SIZE,
    M,
    Parked,
    Resume,
    Sched,
    _Gdead,
    _Grunnable,
    _Grunning,
    _Gsyscall,
    _Gwaiting,
    _Pidle,
    _Prunning,
    _Psyscall,
    waitReasonSleep,
)

_STATUS_G = {0: "_Gidle", 1: "_Grunnable", 2: "_Grunning", 3: "_Gsyscall", 4: "_Gwaiting", 6: "_Gdead"}
_STATUS_P = {0: "_Pidle", 1: "_Prunning", 2: "_Psyscall", 3: "_Pgcstop", 4: "_Pdead"}


def _pn(p) -> str:
    return "nil" if p is None else f"P{p.id}"


def _mn(mp) -> str:
    return "nil" if mp is None else f"M{mp.id}"


def _gn(gp) -> str:
    return "nil" if gp is None else f"G{gp.goid}"


class _Acc:
    """What the pass over the Ms gathers for the checks of the Ps, the Gs and the counters."""

    def __init__(self) -> None:
        self.owners: dict[int, list[M]] = {}  # P id -> Ms with mp.p is P
        self.transit: dict[int, list[M]] = {}  # P id -> Ms with mp.nextp is P
        self.sysholders: dict[int, list[M]] = {}  # P id -> Ms in a syscall entered on that P (same tick)
        self.curgs: dict[int, list[M]] = {}  # goid -> Ms with curg
        self.slots: dict[tuple[str, int], M] = {}
        self.spinning = self.idlelocked = self.nvirtual = self.wedged = 0
        self.polling = 0  # Ms blocked in netpoll


def _check_m(sched: Sched, mp: M, e, on_midle: bool, exited: bool, acc: _Acc, is_extra: bool) -> None:
    """The invariants of one M in allm (its own state, and what it says of its P and goroutine);
    `is_extra`: it is on sched.extram (a cgo binary's extra M)."""
    name = f"M{mp.id}"
    if mp.id >= sched.mnext or mp.id < 0:
        e(f"{name}: id outside [0, mnext={sched.mnext})")
    if mp.exited:
        e(f"{name}: exited but still in allm")
    if mp.p is not None:
        acc.owners.setdefault(mp.p.id, []).append(mp)
    if mp.nextp is not None:
        acc.transit.setdefault(mp.nextp.id, []).append(mp)
    if mp.curg is not None:
        acc.curgs.setdefault(mp.curg.goid, []).append(mp)
        if mp.curg.m is not mp and not (exited and mp.curg.status == _Gdead):
            e(f"{name}: curg G{mp.curg.goid} but G{mp.curg.goid}.m is {_mn(mp.curg.m)}")
    if mp.spinning:
        acc.spinning += 1
    elif not mp.started and mp.mstartfn == "mspinning":
        acc.spinning += 1  # counted by the waker, adopted by mspinning at mstart
    if mp.lockedg is not None and mp.lockedg.lockedm is not mp:
        e(f"{name}: lockedg G{mp.lockedg.goid} but G{mp.lockedg.goid}.lockedm is {_mn(mp.lockedg.lockedm)}")
    if mp.lockedg is not None and mp.lockedExt + mp.lockedInt == 0:
        e(f"{name}: lockedg G{mp.lockedg.goid} with lockedExt=0 lockedInt=0")
    if mp.virtual and is_extra:
        acc.nvirtual += 1
        gp = mp.curg
        if mp.p is not None or mp.nextp is not None or gp is None or gp is not mp.lockedg or \
                gp.status != _Gdead or mp.lockedInt != 1 or on_midle:
            e(f"{name}: extra M (newextram) with p={_pn(mp.p)} nextp={_pn(mp.nextp)} curg={_gn(gp)} "
              f"lockedg={_gn(mp.lockedg)} lockedInt={mp.lockedInt}")
        return
    if mp.virtual:
        acc.nvirtual += 1
        if mp.p is not None or mp.nextp is not None or mp.curg is not None or on_midle:
            e(f"{name}: virtual M (sysmon/template) with p={_pn(mp.p)} nextp={_pn(mp.nextp)} "
              f"curg={_gn(mp.curg)}")
        return
    if mp.blocked != (mp.parked != ""):
        e(f"{name}: blocked={mp.blocked} but parked={mp.parked!r}")
    if mp.slot < 0:
        e(f"{name}: no g0 stack slot")
    else:
        other = acc.slots.get((mp.host, mp.slot))
        if other is not None:
            e(f"{name}: g0 slot {mp.host}/{mp.slot} is also M{other.id}'s")
        acc.slots[(mp.host, mp.slot)] = mp

    # The M's own state: exactly one of these.
    if not mp.started:
        if mp.blocked or mp.curg is not None or on_midle:
            e(f"{name}: not started but blocked={mp.blocked} curg={_gn(mp.curg)}")
        if mp is sched.m0:
            if mp.p is None or mp.nextp is not None:
                e(f"{name}: m0 not started without its P (p={_pn(mp.p)} nextp={_pn(mp.nextp)})")
        elif mp.nextp is None or mp.p is not None:
            e(f"{name}: not started with p={_pn(mp.p)} nextp={_pn(mp.nextp)} (want nextp only)")
        if mp.spinning:
            e(f"{name}: spinning before mstart")
    elif mp.blocked:
        if mp.p is not None or mp.curg is not None:
            e(f"{name}: parked ({mp.parked}) with p={_pn(mp.p)} curg={_gn(mp.curg)}")
        key, nextp = mp.park.key, mp.nextp
        if mp.parked == Parked.NETPOLL:
            if nextp is not None or on_midle or mp.spinning or mp.lockedg is not None:
                e(f"{name}: blocked in netpoll with nextp={_pn(nextp)} spinning={mp.spinning} "
                  f"lockedg={_gn(mp.lockedg)}{' on midle' if on_midle else ''}")
            if sched.pollm is not mp:
                e(f"{name}: blocked in netpoll but sched.pollm is {_mn(sched.pollm)}")
            acc.polling += 1
        elif (key != 0) != (nextp is not None):
            e(f"{name}: parked ({mp.parked}) with park.key={key} but nextp={_pn(nextp)}")
        if mp.parked == Parked.STOPM:
            if mp.resume not in (Resume.FINDRUNNABLE, Resume.SCHEDULE):
                e(f"{name}: parked in stopm to resume in {mp.resume!r}")
            if on_midle:
                if key != 0 or nextp is not None or mp.spinning:
                    e(f"{name}: idle on midle with key={key} nextp={_pn(nextp)} spinning={mp.spinning}")
            elif nextp is None:
                e(f"{name}: parked in stopm, off midle, and not woken")
            if mp.lockedg is not None:
                e(f"{name}: parked in stopm with lockedg G{mp.lockedg.goid}")
        elif mp.parked == Parked.STOPLOCKEDM:
            if mp.lockedg is None:
                e(f"{name}: parked in stoplockedm without a locked goroutine")
            if on_midle:
                e(f"{name}: parked in stoplockedm but on midle")
            if nextp is None:
                acc.idlelocked += 1
            elif mp.lockedg is not None and mp.lockedg.status != _Grunnable:
                e(f"{name}: handed {_pn(nextp)} for G{mp.lockedg.goid} in status "
                  f"{_STATUS_G.get(mp.lockedg.status, mp.lockedg.status)}")
            if mp.spinning:
                e(f"{name}: spinning while parked in stoplockedm")
        elif mp.parked == Parked.NETPOLL:
            pass
        elif mp.parked == Parked.M0:
            if mp is not sched.m0:
                e(f"{name}: wedged like m0 but is not m0")
            if key != 0 or nextp is not None or on_midle:
                e(f"{name}: wedged m0 with key={key} nextp={_pn(nextp)}")
            acc.wedged += 1
        else:
            e(f"{name}: parked for an unknown reason {mp.parked!r}")
    else:  # started, not parked: it runs a goroutine
        if on_midle:
            e(f"{name}: on midle but not parked")
        if mp.nextp is not None:
            e(f"{name}: running with nextp={_pn(mp.nextp)}")
        if mp.spinning:
            e(f"{name}: spinning between steps")
        if mp.park.key != 0:
            e(f"{name}: running with park.key={mp.park.key}")
        gp = mp.curg
        if gp is None:
            e(f"{name}: started, not parked, and running no goroutine")
        elif gp.status == _Grunning:
            if mp.p is None:
                e(f"{name}: runs G{gp.goid} without a P")
            if mp.oldp is not None:
                e(f"{name}: runs G{gp.goid} with oldp={_pn(mp.oldp)}")
        elif gp.status == _Gsyscall:
            if mp.p is not None:
                e(f"{name}: G{gp.goid} in a syscall but the M holds {_pn(mp.p)}")
            op = mp.oldp
            if op is not None and op.status == _Psyscall and mp.syscalltick == op.syscalltick:
                acc.sysholders.setdefault(op.id, []).append(mp)
        elif not (exited and gp.status == _Gdead and gp.goid == 1):
            e(f"{name}: curg G{gp.goid} in status {_STATUS_G.get(gp.status, gp.status)}")
    if mp.incgo and (mp.curg is None or mp.curg.status != _Gsyscall):
        e(f"{name}: incgo outside a syscall")


def list_counters(sched: Sched, e) -> None:
    """The counters that are list lengths (or bounded), O(1): part of check() and check_touched()."""
    if sched.npidle != len(sched.pidle):
        e(f"sched: npidle={sched.npidle} but {len(sched.pidle)} Ps on pidle")
    if sched.nmidle != len(sched.midle):
        e(f"sched: nmidle={sched.nmidle} but {len(sched.midle)} Ms on midle")
    if sched.runqsize != len(sched.runq):
        e(f"sched: runqsize={sched.runqsize} but {len(sched.runq)} Gs on the global runq")
    if sched.nmspinning < 0:
        e(f"sched: nmspinning={sched.nmspinning} is negative")
    if sched.nmidlelocked < 0:
        e(f"sched: nmidlelocked={sched.nmidlelocked} is negative")
    if sched.sysmonwait not in (0, 1):
        e(f"sched: sysmonwait={sched.sysmonwait}")


def check(sched: Sched) -> list[str]:
    """Every broken invariant of `sched`, one line each; [] when the state is consistent."""
    errs: list[str] = []
    e = errs.append
    exited = sched.exit_code is not None  # main returned: goroutine 1 is dead on m0's curg

    list_counters(sched, e)

    # --- Ms -------------------------------------------------------------------------------------
    acc = _Acc()
    in_midle: set[int] = set()
    extra = {id(mp) for mp in sched.extram}
    if len(sched.extram) != sched.extraMCount:
        e(f"sched: extraMCount={sched.extraMCount} but {len(sched.extram)} Ms on extram")
    for mp in sched.midle:
        if id(mp) in in_midle:
            e(f"M{mp.id}: on midle twice")
        in_midle.add(id(mp))

    for mid, mp in sched.allm.items():
        if mid != mp.id:
            e(f"M{mp.id}: filed in allm under id {mid}")
        _check_m(sched, mp, e, id(mp) in in_midle, exited, acc, id(mp) in extra)
    owners, transit, sysholders, curgs, slots = acc.owners, acc.transit, acc.sysholders, acc.curgs, acc.slots
    spinning, idlelocked, nvirtual, wedged = acc.spinning, acc.idlelocked, acc.nvirtual, acc.wedged
    polling = acc.polling

    for mp in sched.midle:
        if sched.allm.get(mp.id) is not mp:
            e(f"M{mp.id}: on midle but not in allm")
        elif not mp.blocked or mp.parked != Parked.STOPM:
            e(f"M{mp.id}: on midle but not parked in stopm")
        if mp.p is not None or mp.nextp is not None:
            e(f"M{mp.id}: idle on midle holding p={_pn(mp.p)} nextp={_pn(mp.nextp)}")

    for mp in sched.osstackm:  # a cgo binary's exited Ms, not on freem (mexit with osStack)
        if not mp.exited or mp.id in sched.allm or mp.p is not None or mp.curg is not None:
            e(f"M{mp.id}: exited with its own stack but exited={mp.exited} in allm={mp.id in sched.allm} "
              f"p={_pn(mp.p)} curg={_gn(mp.curg)}")
        if not sched.iscgo:
            e(f"M{mp.id}: exited with its own stack (osStack) in a binary without cgo")
        if mp.slot >= 0:
            other = slots.get((mp.host, mp.slot))
            if other is not None:
                e(f"M{mp.id}: g0 slot {mp.host}/{mp.slot} is also M{other.id}'s")
            slots[(mp.host, mp.slot)] = mp
    for mp in sched.freem:
        if not mp.exited:
            e(f"M{mp.id}: on freem but not exited")
        if mp.id in sched.allm:
            e(f"M{mp.id}: on freem and still in allm")
        if mp.freeWait not in (0, 1):
            e(f"M{mp.id}: freeWait={mp.freeWait}")
        if mp.p is not None or mp.nextp is not None or mp.curg is not None or mp.spinning:
            e(f"M{mp.id}: exited with p={_pn(mp.p)} nextp={_pn(mp.nextp)} curg={_gn(mp.curg)} "
              f"spinning={mp.spinning}")
        if mp.slot >= 0:
            other = slots.get((mp.host, mp.slot))
            if other is not None:
                e(f"M{mp.id}: g0 slot {mp.host}/{mp.slot} is also M{other.id}'s")
            slots[(mp.host, mp.slot)] = mp

    # --- M counters -----------------------------------------------------------------------------
    if spinning != sched.nmspinning:
        e(f"sched: nmspinning={sched.nmspinning} but {spinning} Ms spinning or starting as spinning")
    if idlelocked != sched.nmidlelocked:
        e(f"sched: nmidlelocked={sched.nmidlelocked} but {idlelocked} Ms parked in stoplockedm")
    nsys = (sched.sysmonm is not None) + (sched.templatem is not None)
    if sched.nmsys != nsys or nvirtual != nsys + len(sched.extram):
        e(f"sched: nmsys={sched.nmsys} but {nvirtual} virtual Ms in allm (sysmon/template: {nsys}, "
          f"extra: {len(sched.extram)})")
    if sched.mcount() != len(sched.allm) - wedged:
        e(f"sched: mcount()={sched.mcount()} (mnext={sched.mnext} nmfreed={sched.nmfreed}) but "
          f"{len(sched.allm)} Ms in allm{' with m0 wedged' if wedged else ''}")
    gone = sched.stats["ms_exited"] + sched.stats["ms_died"]  # mexit, and mdead (an M that died)
    if sched.nmfreed != gone + wedged:
        e(f"sched: nmfreed={sched.nmfreed} but {gone} Ms exited or died"
          f"{' and m0 wedged' if wedged else ''}")
    if (sched.lastpoll == 0) != (polling == 1) or polling > 1:
        e(f"sched: lastpoll={sched.lastpoll} with {polling} Ms blocked in netpoll")
    pollm = sched.pollm
    if pollm is not None and (sched.allm.get(pollm.id) is not pollm or pollm.parked != Parked.NETPOLL):
        e(f"sched: pollm={_mn(sched.pollm)} is not an M of allm blocked in netpoll")
    if sched.pollm is None and (sched.pollUntil != 0 or sched.lastpoll == 0):
        e(f"sched: nobody in netpoll but pollUntil={sched.pollUntil} lastpoll={sched.lastpoll}")
    run = sched.mcount() - sched.nmidle - sched.nmidlelocked - sched.nmsys
    if run < 0:
        e(f"sched: checkdead's run={run} < 0")

    # --- Ps -------------------------------------------------------------------------------------
    in_pidle: set[int] = set()
    for p in sched.pidle:
        if p.id in in_pidle:
            e(f"P{p.id}: on pidle twice")
        in_pidle.add(p.id)
    for i, p in enumerate(sched.allp):
        name = f"P{p.id}"
        if p.id != i:
            e(f"{name}: at allp[{i}]")
        own = owners.get(p.id, ())
        tr = transit.get(p.id, ())
        st = _STATUS_P.get(p.status, str(p.status))
        if len(p.runq) > _LOCAL_RUNQ_SIZE:
            e(f"{name}: {len(p.runq)} Gs on its local runq (bound {_LOCAL_RUNQ_SIZE})")
        if p.id in in_pidle:
            if p.status != _Pidle or p.m is not None:
                e(f"{name}: on pidle with status={st} m={_mn(p.m)}")
            if own or tr:
                e(f"{name}: on pidle but held by {', '.join(_mn(m) for m in (*own, *tr))}")
            if p.runnext is not None or p.runq:
                e(f"{name}: idle with a non-empty run queue")
        elif p.status == _Prunning:
            if len(own) != 1:
                e(f"{name}: _Prunning, owned by {len(own)} Ms ({', '.join(_mn(m) for m in own)}), p.m={_mn(p.m)}")
            elif p.m is not own[0]:
                e(f"{name}: owned by {_mn(p.m)} but {_mn(own[0])}.p is P{p.id}")
            if p.m is not None and p.m.p is not p:
                e(f"{name}: owned by {_mn(p.m)} but {_mn(p.m)}.p is {_pn(p.m.p)}")
            if tr:
                e(f"{name}: _Prunning and also in transit to {', '.join(_mn(m) for m in tr)}")
        elif p.status == _Pidle:
            if p.m is not None or own:
                e(f"{name}: _Pidle, off pidle, with m={_mn(p.m)} owners={[_mn(m) for m in own]}")
            if len(tr) != 1:
                e(f"{name}: _Pidle and off pidle but in transit to {len(tr)} Ms"
                  f"{' (' + ', '.join(_mn(m) for m in tr) + ')' if tr else ' (lost)'}")
            elif (tr[0].spinning or (not tr[0].started and tr[0].mstartfn == "mspinning")) and \
                    (p.runnext is not None or p.runq):
                e(f"{name}: handed to spinning {_mn(tr[0])} with a non-empty run queue")
        elif p.status == _Psyscall:
            if p.m is not None or own or tr:
                e(f"{name}: _Psyscall with m={_mn(p.m)} owners={[_mn(m) for m in own]} "
                  f"transit={[_mn(m) for m in tr]}")
            holders = sysholders.get(p.id, ())
            if len(holders) != 1:
                e(f"{name}: _Psyscall but {len(holders)} Ms in a syscall entered on it at syscalltick "
                  f"{p.syscalltick}")
        else:
            e(f"{name}: status={st}")
        if p.m is not None and p.status != _Prunning:
            e(f"{name}: p.m={_mn(p.m)} with status={st}")
    for pid in list(owners) + list(transit):
        if not 0 <= pid < len(sched.allp):
            e(f"P{pid}: held by an M but not in allp")

    # --- Gs -------------------------------------------------------------------------------------
    queued: dict[int, int] = {}

    def enq(gp, where: str) -> None:
        queued[gp.goid] = queued.get(gp.goid, 0) + 1
        if gp.status != _Grunnable:
            e(f"G{gp.goid}: on {where} in status {_STATUS_G.get(gp.status, gp.status)}")

    for p in sched.allp:
        if p.runnext is not None:
            enq(p.runnext, f"P{p.id}.runnext")
        for gp in p.runq:
            enq(gp, f"P{p.id}.runq")
    for gp in sched.runq:
        enq(gp, "the global runq")
    sleeping = {id(t[2]) for p in sched.allp for t in p.timers}
    if sleeping and not sched.netpollInited:
        e("sched: timers but the netpoller was never initialised (doaddtimer)")

    seen: set[int] = set()
    for gp in sched.allgs:
        goid = gp.goid
        if goid in seen:
            e(f"G{goid}: twice in allgs")
        seen.add(goid)
        if gp.status == _Gdead and goid not in queued and goid not in curgs and gp.lockedm is None:
            continue  # the common case in a long run: nothing else to check
        name = f"G{goid}"
        q = queued.get(gp.goid, 0)
        ms = curgs.get(gp.goid, ())
        s = gp.status
        if q > 1:
            e(f"{name}: in {q} run queue places")
        if len(ms) > 1:
            e(f"{name}: curg of {len(ms)} Ms ({', '.join(_mn(m) for m in ms)})")
        if gp.lockedm is not None and gp.lockedm.lockedg is not gp:
            e(f"{name}: lockedm {_mn(gp.lockedm)} but {_mn(gp.lockedm)}.lockedg is {_gn(gp.lockedm.lockedg)}")
        if s == _Grunnable:
            if ms:
                e(f"{name}: runnable and running on {_mn(ms[0])}")
            if q == 0:
                lm = gp.lockedm
                if lm is None or lm.parked != Parked.STOPLOCKEDM or lm.nextp is None:
                    e(f"{name}: runnable but in no run queue (and not handed to its locked M)")
            elif gp.lockedm is not None and gp.lockedm.nextp is not None and gp.lockedm.parked == Parked.STOPLOCKEDM:
                e(f"{name}: in a run queue and handed to its locked {_mn(gp.lockedm)}")
        elif s == _Grunning or s == _Gsyscall:
            if q:
                e(f"{name}: {_STATUS_G[s]} and in a run queue")
            if len(ms) != 1:
                e(f"{name}: {_STATUS_G[s]} but the curg of no M")
            elif gp.m is not ms[0]:
                e(f"{name}: {_STATUS_G[s]} on {_mn(ms[0])} but G.m is {_mn(gp.m)}")
        elif s == _Gwaiting:
            if q or ms:
                e(f"{name}: waiting but queued={q} running on {[_mn(m) for m in ms]}")
            if gp.waitreason == "":
                e(f"{name}: waiting with no wait reason")
            if gp.waitreason == waitReasonSleep and id(gp) not in sleeping:
                e(f"{name}: waiting in sleep with no timer")
            if gp.m is not None:
                e(f"{name}: waiting with G.m={_mn(gp.m)}")
        elif s == _Gdead and gp.lockedm is not None and id(gp.lockedm) in extra:
            if q or ms != [gp.lockedm]:  # an extra M's G (oneNewExtraM): dead, its curg and lockedg
                e(f"{name}: the extra {_mn(gp.lockedm)}'s G but queued={q} curg of {[_mn(m) for m in ms]}")
        elif s == _Gdead:
            if q or (ms and not (exited and gp.goid == 1)):
                e(f"{name}: dead but queued={q} running on {[_mn(m) for m in ms]}")
            if gp.lockedm is not None:
                e(f"{name}: dead but locked to {_mn(gp.lockedm)}")
        else:
            e(f"{name}: status={s}")
        if s != _Gwaiting and gp.waitreason != "" and s != _Gdead:
            e(f"{name}: {_STATUS_G.get(s, s)} with wait reason {gp.waitreason!r}")
    # --- the runtime's goroutines, free Gs, goids ------------------------------------------------
    nsysg = sum(1 for gp in sched.allgs if gp.prog.startswith("runtime.") and gp.prog != "runtime.main")
    if sched.ngsys != nsysg:
        e(f"sched: ngsys={sched.ngsys} but {nsysg} system goroutines in allgs")
    if len(sched.goids) != len(sched.allgs):
        e(f"sched: {len(sched.goids)} goids indexed but {len(sched.allgs)} Gs in allgs")
    free: set[int] = set()
    for where, lst in [(f"P{p.id}.gFree", p.gFree) for p in sched.allp] + [("sched.gFree", sched.gFree)]:
        if where != "sched.gFree" and len(lst) >= 64:
            e(f"{where}: {len(lst)} Gs (gfput moves them to sched.gFree at 64)")
        for gp in lst:
            if gp.status != _Gdead or gp.goid in queued or gp.goid in curgs or id(gp) in free:
                e(f"G{gp.goid}: on {where} in status {_STATUS_G.get(gp.status, gp.status)}, queued or twice free")
            free.add(id(gp))
    for goid in queued:
        if goid not in seen:
            e(f"G{goid}: in a run queue but not in allgs")
    for goid, ms in curgs.items():
        if goid not in seen:
            e(f"G{goid}: curg of {_mn(ms[0])} but not in allgs")
    return errs
