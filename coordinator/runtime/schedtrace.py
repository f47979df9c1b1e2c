"""Go 1.16's schedtrace(detailed) (proc.go): GODEBUG=schedtrace=X[,scheddetail=1] output, character
for character, so a gmpsim run can be set beside a real Go program's. (Tip adds needspinning=, pads
the brackets, appends schedticks=, and prints nil where 1.16 prints -1.)"""
from __future__ import annotations

from coordinator.runtime.sched import Parked, Sched


def _b(v: bool) -> str:
    return "true" if v else "false"


def schedtrace(sched: Sched, detailed: bool) -> str:
    """Go's schedtrace: the SCHED line, and with scheddetail a line per P, M (allm, newest first) and G."""
    now = sched.now
    if sched.starttime == 0:
        sched.starttime = now or 1
    out = [f"SCHED {(now - sched.starttime) // 1_000_000}ms: gomaxprocs={sched.gomaxprocs} "
           f"idleprocs={sched.npidle} threads={sched.mcount()} spinningthreads={sched.nmspinning} "
           f"idlethreads={sched.nmidle} runqueue={sched.runqsize}"]
    if detailed:
        out.append(f" gcwaiting={sched.gcwaiting} nmidlelocked={sched.nmidlelocked} "
                   f"stopwait={sched.stopwait} sysmonwait={sched.sysmonwait}\n")
        for i, p in enumerate(sched.allp):
            mid = p.m.id if p.m is not None else -1
            out.append(f"  P{i}: status={p.status} schedtick={p.schedtick} syscalltick={p.syscalltick} "
                       f"m={mid} runqsize={len(p.runq)} gfreecnt={p.gfreecnt} timerslen={len(p.timers)}\n")
        for mp in sorted(sched.allm.values(), key=lambda m: -m.id):
            pid = mp.p.id if mp.p is not None else -1
            curg = mp.curg.goid if mp.curg is not None else -1
            lockedg = mp.lockedg.goid if mp.lockedg is not None else -1
            # sysmon prints holding sched.sysmonlock and sched.lock: its m.locks is 2.
            locks = 2 if mp is sched.sysmonm else 0
            out.append(f"  M{mp.id}: p={pid} curg={curg} mallocing=0 throwing=0 preemptoff= locks={locks} "
                       f"dying=0 spinning={_b(mp.spinning)} blocked={_b(_in_notesleep(mp))} lockedg={lockedg}\n")
        for gp in sched.allgs:
            mid = gp.m.id if gp.m is not None else -1
            lockedm = gp.lockedm.id if gp.lockedm is not None else -1
            out.append(f"  G{gp.goid}: status={gp.status}({gp.waitreason}) m={mid} lockedm={lockedm}\n")
        out.append(hosts_line(sched))
        return "".join(out)
    out.append(" [" + " ".join(str(len(p.runq)) for p in sched.allp) + "]\n")
    out.append(hosts_line(sched))
    return "".join(out)


def _in_notesleep(mp) -> bool:
    """Go's m.blocked: set in notesleep only, so false for the M blocked in netpoll (epoll_wait)."""
    return mp.blocked and mp.parked != Parked.NETPOLL


def hosts_line(sched: Sched) -> str:
    """Across hosts only (not in Go, so a one-host trace stays exactly Go's): live Ms per host."""
    if len(sched.hosts) < 2:
        return ""
    count = {h: 0 for h in sched.hosts}
    for mp in sched.allm.values():
        if not mp.virtual and mp.host in count:
            count[mp.host] += 1
    return "HOSTS " + " ".join(f"{h}={n}" for h, n in count.items()) + "\n"
