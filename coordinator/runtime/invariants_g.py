"""The invariants of the goroutines: each G in one state (runnable in exactly one run queue, running
or in a syscall as exactly one M's curg, waiting with a reason, dead), the free lists, ngsys and
the goid index."""
from __future__ import annotations

from coordinator.runtime.invariants_names import _STATUS_G, _gn, _mn
from coordinator.runtime.sched import (
    M,
    Parked,
    Sched,
    _Gdead,
    _Grunnable,
    _Grunning,
    _Gsyscall,
    _Gwaiting,
    waitReasonSleep,
)


def check_gs(sched: Sched, e, curgs: dict[int, list[M]], exited: bool, extra: set[int]) -> None:
    """Every G of allgs and of the run queues and free lists. `curgs`: goid -> the Ms whose curg it
    is; `exited`: main returned; `extra`: the ids of the Ms on sched.extram."""
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
