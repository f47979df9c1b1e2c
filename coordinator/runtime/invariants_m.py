"""The invariants of the Ms: each M's own state (_check_m, which the incremental checker runs too),
midle, the exited Ms (freem, osstackm) and their g0 slots, and the M counters (nmspinning,
nmidlelocked, nmsys, mcount, nmfreed, netpoll's lastpoll and pollm)."""
from __future__ import annotations

from coordinator.runtime.invariants_names import _STATUS_G, _gn, _mn, _pn
from coordinator.runtime.sched import M, Parked, Resume, Sched, _Gdead, _Grunnable, _Grunning, _Gsyscall, _Psyscall


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


def check_ms(sched: Sched, e, exited: bool, extra: set[int], shares: dict | None = None) -> _Acc:
    """Every M: on midle at most once, filed in allm under its id, its own state (_check_m), and the
    Ms on midle, osstackm and freem; returns what the pass gathered for the other checks.
    `extra`: the ids of the Ms on sched.extram. `shares`, when given, is filled with each M's share
    of the cross-record counts, M id -> (spinning, idlelocked), for the incremental checker's Tally."""
    acc = _Acc()
    in_midle: set[int] = set()
    if len(sched.extram) != sched.extraMCount:
        e(f"sched: extraMCount={sched.extraMCount} but {len(sched.extram)} Ms on extram")
    for mp in sched.midle:
        if id(mp) in in_midle:
            e(f"M{mp.id}: on midle twice")
        in_midle.add(id(mp))

    for mid, mp in sched.allm.items():
        if mid != mp.id:
            e(f"M{mp.id}: filed in allm under id {mid}")
        if shares is None:
            _check_m(sched, mp, e, id(mp) in in_midle, exited, acc, id(mp) in extra)
        else:
            spinning, idlelocked = acc.spinning, acc.idlelocked
            _check_m(sched, mp, e, id(mp) in in_midle, exited, acc, id(mp) in extra)
            shares[mid] = (acc.spinning - spinning, acc.idlelocked - idlelocked)
    slots = acc.slots

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
    return acc


def check_cross_counts(sched: Sched, e, spinning: int, idlelocked: int) -> None:
    """nmspinning and nmidlelocked against the Ms counted as spinning and as idle in stoplockedm
    (by the full pass, or by the incremental checker's Tally)."""
    if spinning != sched.nmspinning:
        e(f"sched: nmspinning={sched.nmspinning} but {spinning} Ms spinning or starting as spinning")
    if idlelocked != sched.nmidlelocked:
        e(f"sched: nmidlelocked={sched.nmidlelocked} but {idlelocked} Ms parked in stoplockedm")


def check_m_counters(sched: Sched, e, acc: _Acc) -> None:
    """The M counters against what the pass over the Ms counted."""
    spinning, idlelocked, nvirtual, wedged = acc.spinning, acc.idlelocked, acc.nvirtual, acc.wedged
    polling = acc.polling
    check_cross_counts(sched, e, spinning, idlelocked)
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
