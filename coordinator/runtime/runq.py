"""Run queues (proc.go): the per-P bounded local runq with runnext, and the global runq."""
from __future__ import annotations

from coordinator.runtime.sched import _LOCAL_RUNQ_SIZE, G, P, Sched, runqempty


def runqput(sched: Sched, p: P, gp: G, next: bool) -> None:
    """Go's runqput: next=True puts gp in runnext, kicking the old runnext to the tail."""
    if next:
        old, p.runnext = p.runnext, gp
        if old is None:
            return
        gp = old
    if len(p.runq) < _LOCAL_RUNQ_SIZE:
        p.runq.append(gp)
    else:
        runqputslow(sched, p, gp)


def runqputslow(sched: Sched, p: P, gp: G) -> None:
    """Go's runqputslow: the local runq is full; move half of it and gp to the global queue."""
    batch = [p.runq.popleft() for _ in range(len(p.runq) // 2)]
    batch.append(gp)
    for g in batch:
        globrunqput(sched, g)


def runqget(p: P) -> tuple[G | None, bool]:
    """Go's runqget: runnext first (inheritTime=True), then the head of the local runq."""
    if p.runnext is not None:
        gp, p.runnext = p.runnext, None
        return gp, True
    if p.runq:
        return p.runq.popleft(), False
    return None, False


def globrunqput(sched: Sched, gp: G) -> None:
    """Go's globrunqput (sched.lock held)."""
    sched.runq.append(gp)
    sched.runqsize += 1


def globrunqget(sched: Sched, p: P, max: int) -> G | None:
    """Go's globrunqget: take a fair share of the global queue, run one, put the rest on p's runq."""
    if sched.runqsize == 0:
        return None
    n = min(sched.runqsize, sched.runqsize // sched.gomaxprocs + 1)
    if max > 0 and n > max:
        n = max
    n = min(n, _LOCAL_RUNQ_SIZE // 2)
    sched.runqsize -= n
    gp = sched.runq.popleft()
    for _ in range(n - 1):
        runqput(sched, p, sched.runq.popleft(), False)
    return gp


def runqsteal(p: P, victim: P, stealRunNextG: bool) -> G | None:
    """Go's runqsteal/runqgrab: take half of victim's runq (runnext too, on the last pass).
    Go sleeps 3µs before stealing runnext; here the steal is one step of the coordinator."""
    n = len(victim.runq) - len(victim.runq) // 2
    if n == 0:
        if stealRunNextG and victim.runnext is not None:
            gp, victim.runnext = victim.runnext, None
            return gp
        return None
    batch = [victim.runq.popleft() for _ in range(n)]
    gp = batch.pop()
    p.runq.extend(batch)
    return gp


__all__ = ["runqput", "runqputslow", "runqget", "globrunqput", "globrunqget", "runqsteal", "runqempty"]
