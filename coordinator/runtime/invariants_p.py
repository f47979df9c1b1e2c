"""The invariants of the Ps: each P idle on pidle, owned by exactly one M, in transit through exactly
one M's nextp, or in a syscall with the M that left it there; its local run queue within its bound."""
from __future__ import annotations

from coordinator.runtime.invariants_m import _Acc
from coordinator.runtime.invariants_names import _STATUS_P, _mn, _pn
from coordinator.runtime.sched import _LOCAL_RUNQ_SIZE, Sched, _Pidle, _Prunning, _Psyscall


def check_ps(sched: Sched, e, acc: _Acc) -> None:
    """Every P of allp against the Ms that hold it (acc: what the pass over the Ms gathered)."""
    owners, transit, sysholders = acc.owners, acc.transit, acc.sysholders
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
