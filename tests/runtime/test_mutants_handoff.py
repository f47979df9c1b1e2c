"""Tests that kill proc's P-handoff mutants and those of checkdead, lockosthread, runq and netpoll
(tests/MUTATION.md): handoffp and wakeNetPoller, injectglist, acquirep/releasep, stoplockedm and
startlockedm, checkdead's run0 rule, LockOSThread's nesting, runqsteal's runnext, netpoll's waits.
"""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.lockosthread import UnlockOSThread, goexit0, lockOSThread, mexit, unlockOSThread
from coordinator.runtime.netpoll import netpoll, netpollreturn
from coordinator.runtime.proc import (
    acquirep,
    handoffp,
    injectglist,
    netpollBreak,
    pidleget,
    releasep,
    startlockedm,
    stoplockedm,
    wakeNetPoller,
)
from coordinator.runtime.runq import runqsteal
from coordinator.runtime.sched import G, M, P, Sched, _Grunnable, _Gwaiting, _Pidle, _Prunning
from coordinator.runtime.timers import doaddtimer
from tests.runtime.test_mutants_proc import sched_on, started, throw  # the shared steps of both halves
from tests.steps import of
from tests.world import World

# --- handoffp, wakeNetPoller, netpollBreak ------------------------------------------------------

def test_handoffp_last_running_p_starts_an_m_from_the_caller():
    """handoffp: "If this is the last running P and nobody is polling network, need to wakeup
    another M to poll network": startm(p, false), the new M forked from the caller (m0)."""
    w = started(gomaxprocs=2)
    out = w.entersyscallblock(0)
    (fork,) = of(out, fx.Fork)
    assert fork.forker == 0 and fork.nextp == 0 and not fork.spinning
    assert w.sched.stats["startm.entersyscallblock"] == 1


def test_handoffp_of_a_p_with_timers_breaks_a_later_poll():
    """handoffp: pidleput, then wakeNetPoller(the P's first timer): the M in netpoll until later
    is broken out (netpollBreak)."""
    w = started(gomaxprocs=3)
    w.gopark(0, "sleep", 50_000)  # m0 polls until 50 ms; M2 forked spinning for P1
    s = w.sched
    assert s.pollm is s.m0 and s.pollUntil == 50_000_000
    p = pidleget(s)
    doaddtimer(s, p, G(goid=99, prog="w", status=_Gwaiting, waitreason="sleep"), 2_000_000)
    s.fx = []
    handoffp(s, p, s.sysmonm)
    assert s.fx == [fx.NetpollBreak(0)] and p in s.pidle


def test_handoffp_of_a_p_with_timers_wakes_from_the_caller():
    """handoffp → wakeNetPoller(when) with nobody polling → wakep(caller): the spinning M is
    forked from the caller's process."""
    w = started(gomaxprocs=3)
    s = w.sched
    p = pidleget(s)
    doaddtimer(s, p, G(goid=99, prog="w", status=_Gwaiting, waitreason="sleep"), 5_000_000)
    s.fx = []
    handoffp(s, p, s.m0)
    (fork,) = s.fx
    assert fork.forker == 0 and fork.spinning


def test_wakenetpoller_breaks_only_a_poll_that_would_sleep_past_when():
    """wakeNetPoller: with an M in netpoll (lastpoll 0), netpollBreak if pollUntil == 0 or
    pollUntil > when; else (nobody polling) wakep."""
    def polling(until):
        s = sched_on({"local": 4})
        mp = s.m0
        mp.parked, mp.blocked = "netpoll", True
        s.pollm, s.lastpoll, s.pollUntil = mp, 0, until
        return s
    for until, when, broken in ((5_000_000, 2_000_000, True), (5_000_000, 5_000_000, False),
                                (5_000_000, 8_000_000, False), (0, 8_000_000, True)):
        s = polling(until)
        wakeNetPoller(s, when, s.sysmonm)
        assert (s.fx == [fx.NetpollBreak(0)]) == broken and s.netpollWakeSig == int(broken), (until, when)


def test_netpollbreak_writes_the_byte_once_even_with_nobody_polling():
    """netpollBreak (netpoll_epoll.go): CAS(&netpollWakeSig, 0, 1), then write the pipe; the byte
    is kept for the next netpoll even when nobody is blocked in it now (no effect then)."""
    s = sched_on({"local": 4})
    assert s.pollm is None
    netpollBreak(s)
    assert s.netpollWakeSig == 1 and s.fx == []
    netpollBreak(s)
    assert s.netpollWakeSig == 1


# --- injectglist ---------------------------------------------------------------------------------

def test_injectglist_starts_one_m_per_g_while_ps_are_idle():
    """injectglist (no P): all on the global runq, `for ; n != 0 && sched.npidle != 0; n-- {
    startm(nil, false) }`: one M per G, no more than there are idle Ps."""
    for ngs, nms in ((1, 1), (2, 2), (3, 3), (5, 3)):
        s = sched_on({"local": 16}, gomaxprocs=4)  # P1..P3 idle
        gs = [G(goid=100 + i, prog="w", status=_Gwaiting, waitreason="sleep") for i in range(ngs)]
        injectglist(s, gs, s.sysmonm, "test")
        forks = of(s.fx, fx.Fork)
        assert len(forks) == nms and not any(f.spinning for f in forks), (ngs, forks)
        assert all(g.status == _Grunnable and g.waitreason == "" for g in gs)
        assert list(s.runq) == gs and s.nmspinning == 0 and s.stats["startm.test"] == nms


# --- acquirep, releasep, stoplockedm, startlockedm ----------------------------------------------

def test_acquirep_throws_on_a_bad_p_or_an_m_with_a_p():
    """acquirep/wirep: "wirep: already in go" if the M has a P; "wirep: invalid p state" (printing
    p->m and p->status) if the P has an M or is not _Pidle."""
    s = sched_on({"local": 4})
    m0, p0, p1 = s.m0, s.allp[0], s.allp[1]
    assert throw(acquirep, s, m0, p1).message == "wirep: already in go"
    mp = M(id=7)
    t = throw(acquirep, s, mp, p0)
    assert t.lines() == ["wirep: p->m=0(0) p->status=1", "fatal error: wirep: invalid p state"]
    p1.status = _Prunning  # no M, but not idle
    t = throw(acquirep, s, mp, p1)
    assert t.lines() == ["wirep: p->m=0(0) p->status=1", "fatal error: wirep: invalid p state"]
    p1.status, p1.m = _Pidle, M(id=3)
    t = throw(acquirep, s, mp, p1)
    assert t.lines() == ["wirep: p->m=3(0) p->status=0", "fatal error: wirep: invalid p state"]


def test_releasep_throws_on_no_p_or_a_p_not_its_own():
    """releasep: "releasep: invalid arg" with no P; "releasep: invalid p state" (printing m, m->p,
    p->m, p->status) if the P is another M's or not _Prunning."""
    s = sched_on({"local": 4})
    mp = M(id=7)
    assert throw(releasep, s, mp).message == "releasep: invalid arg"
    p = P(id=1, status=_Prunning)
    mp.p = p
    t = throw(releasep, s, mp)
    assert t.lines() == ["releasep: m=7 m->p=1 p->m=0 p->status=1", "fatal error: releasep: invalid p state"]
    p.m, p.status = mp, _Pidle
    t = throw(releasep, s, mp)
    assert t.lines() == ["releasep: m=7 m->p=1 p->m=7 p->status=0", "fatal error: releasep: invalid p state"]
    p.m = M(id=4)
    p.status = _Prunning
    t = throw(releasep, s, mp)
    assert t.lines() == ["releasep: m=7 m->p=1 p->m=4 p->status=1", "fatal error: releasep: invalid p state"]


def test_stoplockedm_and_startlockedm_check_the_locking():
    """stoplockedm: "stoplockedm: inconsistent locking" without a locked G locked back to it;
    startlockedm: "startlockedm: locked to me", "startlockedm: m has p"."""
    s = sched_on({"local": 4})
    m0 = s.m0
    assert throw(stoplockedm, s, m0).message == "stoplockedm: inconsistent locking"
    gp = G(goid=50, prog="w")
    m0.lockedg = gp
    assert throw(stoplockedm, s, m0).message == "stoplockedm: inconsistent locking"
    gp.lockedm = m0
    assert throw(startlockedm, s, m0, gp).message == "startlockedm: locked to me"
    other = M(id=9, nextp=s.allp[1])
    gp.lockedm = other
    assert throw(startlockedm, s, m0, gp).message == "startlockedm: m has p"


# --- checkdead --------------------------------------------------------------------------------------

def dead_sched(run: int) -> Sched:
    """A state with `run` Ms counted as running and one user goroutine waiting, no timers."""
    s = Sched(gomaxprocs=1)
    s.allp = [P(id=0)]
    s.mnext = run
    s.allgs = [G(goid=1, prog="main", status=_Gwaiting, waitreason="select (no cases)")]
    return s


def test_checkdead_discounts_the_extra_m_only_without_cgo():
    """checkdead: `if !iscgo && cgoHasExtraM && extraMCount > 0 { run0 = 1 }`; `if run > run0
    { return }` (Windows' NewCallback extra M; not reachable from a scenario)."""
    s = dead_sched(1)
    checkdead(s)  # one M runs
    s.cgoHasExtraM, s.extraMCount = True, 1
    assert throw(checkdead, s).message == "all goroutines are asleep - deadlock!"
    s.mnext = 2
    checkdead(s)  # the extra M and one more
    s.mnext, s.extraMCount = 1, 0
    checkdead(s)
    s.iscgo, s.extraMCount = True, 1
    checkdead(s)


def test_checkdead_names_a_runnable_g_after_skipping_system_goroutines():
    """checkdead: system goroutines are skipped (`continue`, not the end of the scan); a runnable
    one is "checkdead: runnable g", printing its goid and status; waiting ones are counted."""
    s = dead_sched(0)
    s.allgs.insert(0, G(goid=2, prog="runtime.bgsweep", status=_Gwaiting, waitreason="GC sweep wait"))
    s.allgs.append(G(goid=3, prog="w", status=_Grunnable))
    t = throw(checkdead, s)
    assert t.lines() == ["runtime: checkdead: find g 3 in status 1", "fatal error: checkdead: runnable g"]
    s.allgs.pop()
    assert throw(checkdead, s).lines() == ["fatal error: all goroutines are asleep - deadlock!"]
    s.allgs[1].status = 6
    assert throw(checkdead, s).message == "no goroutines (main called runtime.Goexit) - deadlock!"


# --- lockosthread ---------------------------------------------------------------------------------

def test_locks_nest_and_unlock_only_at_zero():
    """LockOSThread/UnlockOSThread: lockedExt counts the calls; the links go when both counts are
    zero; an unlock when not locked is a no-op."""
    w = started(gomaxprocs=1)
    m0, g1 = w.sched.m0, w.g(1)
    lockedInt = m0.lockedInt
    w.unlock(0)
    assert m0.lockedExt == 0
    w.lock(0)
    w.lock(0)
    assert m0.lockedExt == 2 and m0.lockedg is g1
    w.unlock(0)
    assert m0.lockedExt == 1 and m0.lockedg is g1 and g1.lockedm is m0
    w.unlock(0)
    assert m0.lockedExt == 0 and (m0.lockedg is None) == (lockedInt == 0)


def test_unlock_keeps_the_link_while_the_internal_lock_holds():
    """UnlockOSThread/unlockOSThread: dounlockOSThread only when lockedInt == 0 and lockedExt == 0."""
    s = sched_on({"local": 4})
    m0 = s.m0
    gp = G(goid=50, prog="w")
    lockOSThread(s, m0, gp)
    lockOSThread(s, m0, gp)
    assert m0.lockedInt == 2
    m0.lockedExt = 1
    UnlockOSThread(s, m0, gp)
    assert m0.lockedg is gp and gp.lockedm is m0  # lockedInt still 2
    unlockOSThread(s, m0, gp)
    m0.lockedExt = 1
    unlockOSThread(s, m0, gp)
    assert m0.lockedInt == 0 and m0.lockedg is gp  # lockedExt still 1
    UnlockOSThread(s, m0, gp)
    assert m0.lockedg is None and gp.lockedm is None


def test_unlockosthread_owes_one_unlock_per_lost_lock_then_is_misuse():
    """unlockOSThread: with lockedInt 0, each lock lost with a dead M (lostInt) is one unlock owed;
    past them it is badunlockosthread: "runtime: internal error: misuse of lockOSThread/unlockOSThread"."""
    s = sched_on({"local": 4})
    m0 = s.m0
    gp = G(goid=50, prog="w", lostInt=2)
    unlockOSThread(s, m0, gp)
    assert gp.lostInt == 1
    unlockOSThread(s, m0, gp)
    assert gp.lostInt == 0
    t = throw(unlockOSThread, s, m0, gp)
    assert t.message == "runtime: internal error: misuse of lockOSThread/unlockOSThread"


def test_goexit0_with_the_internal_lock_held_throws():
    """goexit0: `if locked && mp.lockedInt != 0 { print("invalid m->lockedInt = ", ...);
    throw("internal lockOSThread error") }`."""
    s = sched_on({"local": 4})
    m0 = s.m0
    gp = G(goid=50, prog="w")
    m0.curg, gp.m = gp, m0
    lockOSThread(s, m0, gp)
    t = throw(goexit0, s, m0, gp)
    assert t.lines() == ["invalid m->lockedInt = 1", "fatal error: internal lockOSThread error"]


def test_mexit_of_an_m_not_in_allm_throws():
    """mexit: `throw("m not found in allm")`."""
    s = sched_on({"local": 4})
    assert throw(mexit, s, M(id=42)).message == "m not found in allm"


def test_mexit_hands_off_the_p_as_mexit():
    """mexit: handoffp(releasep()) — the startm it causes is counted as mexit's."""
    w = World({"main": [["run", 1]], "w": [["lock"], ["exit"]]}, gomaxprocs=1)
    w.hello(0)
    w.newproc(0, "w")
    w.entersyscallblock(0)  # M2 runs G2
    (m2,) = w.forked()
    w.hello(m2)
    w.lock(m2)
    w.newproc(m2, "w")  # work on the P, so handoffp starts an M
    w.goexit(m2)  # G locked exits: mexit
    assert w.sched.stats["startm.mexit"] == 1


def test_m0s_mexit_hands_off_the_p_as_mexit():
    """mexit (m0, wedged): its handoffp is mexit's too."""
    w = World({"main": [["lock"], ["exit"]], "w": [["run", 1]]}, gomaxprocs=1)
    w.hello(0)
    w.lock(0)
    w.goexit(0)
    assert w.sched.stats["startm.mexit"] == 1


# --- runq -------------------------------------------------------------------------------------------

def test_runqsteal_takes_runnext_only_on_the_last_pass():
    """runqsteal/runqgrab: an empty runq gives runnext only when stealRunNextG."""
    p, victim = P(id=0), P(id=1)
    gp = G(goid=5, prog="w")
    victim.runnext = gp
    assert runqsteal(p, victim, False) is None and victim.runnext is gp
    assert runqsteal(p, victim, True) is gp and victim.runnext is None
    assert runqsteal(p, victim, True) is None


# --- netpoll (netpoll_epoll.go's netpoll, findrunnable's poll) ------------------------------------

def test_netpoll_reads_a_break_byte_and_returns_at_once():
    """netpoll: a netpollBreak byte already in the pipe: epoll_wait returns at once, the byte is read
    (netpollWakeSig 0), nothing blocks."""
    s = sched_on({"local": 4})
    s.netpollWakeSig = 1
    assert netpoll(s, s.m0, 5_000_000) is False
    assert s.netpollWakeSig == 0 and s.fx == [] and s.pollm is None


@pytest.mark.parametrize("delay,waitms", [(0, 0), (1, 1), (999_999, 1), (1_000_000, 1), (2_500_000, 2),
                                          (10**18, 1_000_000_000)])
def test_netpoll_waits_whole_ms_capped_at_1e9(delay, waitms):
    """netpoll(delay): `if delay < 0 {-1} else if delay == 0 {0} else if delay < 1e6 {1} else if
    delay < 1e15 {delay / 1e6} else {1e9}` ms (epoll_wait's int32 timeout)."""
    s = sched_on({"local": 4})
    s.now = 7
    assert netpoll(s, s.m0, delay) is True
    assert s.fx == [fx.Park(0), fx.NetpollSleep(0, 7 + waitms * 1_000_000)] and s.pollm is s.m0


def test_netpollreturn_reads_the_break_byte_sets_lastpoll_and_restores_spinning():
    """findrunnable after netpoll returns: the blocking netpoll read the break byte; lastpoll =
    nanotime() (never 0); with an idle P: acquirep, and `if wasSpinning { m.spinning = true;
    atomic.Xadd(&sched.nmspinning, 1) }` — added to the other spinners, wasSpinning cleared."""
    s = sched_on({"local": 4})
    mp = M(id=5, started=True, wasSpinning=True)
    s.pollm, s.netpollWakeSig, s.nmspinning, s.now = mp, 1, 1, 0
    assert netpollreturn(s, mp) is True
    assert s.netpollWakeSig == 0 and s.pollm is None and s.lastpoll == 1
    assert mp.p is s.allp[1] and mp.spinning and s.nmspinning == 2 and not mp.wasSpinning
    mp2 = M(id=6, started=True)
    s.now = 3
    assert netpollreturn(s, mp2) is False  # no idle P left
    assert s.lastpoll == 3 and not mp2.spinning and s.nmspinning == 2
