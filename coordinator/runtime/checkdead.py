"""Go's checkdead (proc.go): the deadlock detector, run with sched.lock held."""
from __future__ import annotations

from coordinator.runtime.sched import Sched, _Grunnable, _Grunning, _Gsyscall, _Gwaiting, isSystemGoroutine
from protocol.throw import Throw


def checkdead(sched: Sched) -> None:
    """Go's checkdead: throw when no M is running and no goroutine can ever run again.
    An M whose ID is reserved but whose process has not started yet counts as running (#40368);
    sysmon and the template thread (nmsys) never do. The extra M of a cgo binary counts as running
    (Go discounts it, run0, only when !iscgo), so a cgo binary never reports a deadlock. System
    goroutines (isSystemGoroutine) are skipped."""
    run0 = 0
    if not sched.iscgo and sched.cgoHasExtraM and sched.extraMCount > 0:
        run0 = 1  # Windows' syscall.NewCallback extra M in Go; unreachable here (no extra M without cgo)
    run = sched.mcount() - sched.nmidle - sched.nmidlelocked - sched.nmsys
    if run > run0:
        return
    if run < 0:
        raise Throw("checkdead: inconsistent counts", prints=(
            f"runtime: checkdead: nmidle={sched.nmidle} nmidlelocked={sched.nmidlelocked} "
            f"mcount={sched.mcount()} nmsys={sched.nmsys}",))
    grunning = 0
    for gp in sched.allgs:
        if isSystemGoroutine(gp):
            continue
        if gp.status == _Gwaiting:
            grunning += 1
        elif gp.status in (_Grunnable, _Grunning, _Gsyscall):
            raise Throw("checkdead: runnable g",
                        prints=(f"runtime: checkdead: find g {gp.goid} in status {gp.status}",))
    if grunning == 0:
        raise Throw("no goroutines (main called runtime.Goexit) - deadlock!")
    # There are no goroutines running, so we can look at the P's.
    for p in sched.allp:
        if p.timers:
            return
    raise Throw("all goroutines are asleep - deadlock!", prints=())
