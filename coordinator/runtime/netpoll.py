"""The netpoller of proc.go and netpoll_epoll.go as far as gmpsim has one: no descriptors, only the
break pipe and the timers, so an M blocks in netpoll(delay) only until the next timer (findrunnable's
poll), and the kernel's part (epoll_wait returning) is netpollready. wakeNetPoller and netpollBreak,
called from handoffp and the timers, are in proc.py."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.note import notewakeup
from coordinator.runtime.proc import acquirep, pidleget
from coordinator.runtime.sched import M, Parked, Sched


def netpoll(sched: Sched, mp: M, delay: int) -> bool:
    """Go's netpoll(delay) (netpoll_epoll.go) called by findrunnable, with no descriptor but the
    break pipe: True when the M blocks in epoll_wait (a Park reply; the shell wakes its process when
    the wait times out or a netpollBreak comes, and netpollreturn goes on). epoll_wait counts whole
    ms: a delay under 1ms waits 1ms, longer ones are cut to whole ms. False when a break byte is
    already in the pipe: it returns at once (and reads it). Difference: with delay 0 (a timer due on
    a P it may not steal from) Go's epoll_wait returns at once while the other Ms run on; here the M
    blocks until now, so that the others get their turn instead of this step looping."""
    if sched.netpollWakeSig != 0:
        sched.netpollWakeSig = 0
        return False
    if delay == 0:
        waitms = 0
    else:
        waitms = 1 if delay < 1_000_000 else min(delay // 1_000_000, 1_000_000_000)
    mp.parked = Parked.NETPOLL
    mp.blocked = True
    sched.pollm = mp
    sched.fx.append(fx.Park(mp.id))
    sched.fx.append(fx.NetpollSleep(mp.id, sched.now + waitms * 1_000_000))
    return True


def netpollready(sched: Sched, mp: M) -> None:
    """Not in Go (the kernel's part): epoll_wait returns in the M blocked in netpoll (its timeout or a
    break): its process is woken (a Wake with no P), then the woken event runs netpollreturn."""
    notewakeup(mp.park)
    sched.fx.append(fx.Wake(mp.id, -1))


def netpollreturn(sched: Sched, mp: M) -> bool:
    """The rest of findrunnable's poll once netpoll returns (an empty list: no network): lastpoll is
    now, then with an idle P acquirep, restore spinning if it was, and `goto top` (True); with none,
    injectglist of nothing and stopm (False)."""
    if sched.pollm is mp:
        sched.pollm = None
        sched.netpollWakeSig = 0  # a blocking netpoll reads the break byte
    sched.pollUntil = 0
    sched.lastpoll = sched.now or 1  # nanotime(), never 0
    wasSpinning, mp.wasSpinning = mp.wasSpinning, False
    p = pidleget(sched)
    if p is None:
        return False
    acquirep(sched, mp, p)
    if wasSpinning:
        mp.spinning = True
        sched.nmspinning += 1
    return True
