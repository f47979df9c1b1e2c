"""Timers of sleeping goroutines (time.go, Go 1.16): a heap per P, as Go keeps them.

time.Sleep puts its timer on the heap of the P its goroutine ran on (doaddtimer); the timers of a
P run only when an M holding a P looks at them: checkTimers (schedule.py) at the top of schedule
and findrunnable, and on other Ps' heaps in findrunnable's last stealing pass. Nobody fires timers
from outside: an M blocked in netpoll until the next timer (findrunnable) wakes up, takes a P and
runs them. Only sleep timers exist here (no deltimer/modtimer, so no timerDeleted/timerModified
states: timerModifiedEarliest is always 0).
"""
from __future__ import annotations

import heapq

from coordinator.runtime.sched import G, P, Sched

maxWhen = (1 << 63) - 1  # time.go


def netpollGenericInit(sched: Sched) -> None:
    """Go's netpollGenericInit (netpoll.go): the first timer starts the poller (epoll, no thread)."""
    if sched.netpollInited == 0:
        sched.netpollInited = 1


def doaddtimer(sched: Sched, pp: P, gp: G, when: int) -> None:
    """Go's doaddtimer: timers rely on the network poller, so make sure it has started; then push
    the timer on pp's heap (timer0When is the heap's head)."""
    if sched.netpollInited == 0:
        netpollGenericInit(sched)
    sched.timerseq += 1
    heapq.heappush(pp.timers, (when, sched.timerseq, gp))


def nobarrierWakeTime(pp: P) -> int:
    """Go's nobarrierWakeTime: when pp's first timer is due, 0 if it has none."""
    return pp.timers[0][0] if pp.timers else 0


def runtimer(pp: P, now: int) -> tuple[int, G | None]:
    """Go's runtimer for a sleep timer: (0, the G to ready) when the first timer is due and was
    removed; else (when it is due, None), or (-1, None) when pp has no timers."""
    if not pp.timers:
        return -1, None
    when = pp.timers[0][0]
    if when > now:
        return when, None
    _, _, gp = heapq.heappop(pp.timers)
    return 0, gp


def timeSleepUntil(sched: Sched) -> int:
    """Go's timeSleepUntil: when the next timer of any P is due (maxWhen when none); sysmon's."""
    nxt = maxWhen
    for pp in sched.allp:
        w = nobarrierWakeTime(pp)
        if w != 0 and w < nxt:
            nxt = w
    return nxt


def timerslen(pp: P) -> int:
    """len(pp.timers), scheddetail's timerslen= column."""
    return len(pp.timers)
