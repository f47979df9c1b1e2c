"""mdead's policy for an M that dies parked (stoplockedm, m0 wedged, netpoll), for checkdead after it,
for several at once (hostlost), and reforkm and lost_goroutines (the second half of test_core_mdead.py).
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.mdead import lost_goroutines
from coordinator.runtime.sched import G, Parked, _Grunnable, _Grunning, _Gsyscall, _Gwaiting
from tests.runtime.test_core_mdead import (  # the shared steps of both halves
    PROGS,
    recovered,
    started,
    with_m2_running_g2,
)
from tests.steps import of
from tests.world import World

# --- parked in stoplockedm --------------------------------------------------------------------

def test_a_locked_m_parked_in_stoplockedm_unlocks_its_goroutine():
    """mdead: parked in stoplockedm (no P yet): undo stoplockedm's incidlelocked(1); its locked
    goroutine, waiting, is unlocked (lockedm nil) and stays waiting: nothing to requeue."""
    w = with_m2_running_g2()
    s = w.sched
    w.lock(2)
    w.gopark(2, "sleep", us=1000)
    assert s.nmidlelocked == 1 and s.allm[2].parked == Parked.STOPLOCKEDM
    g2 = w.g(2)
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)",
                                          "parked with locked G2 (stoplockedm)", (), ())
    assert s.nmidlelocked == 0 and g2.lockedm is None and g2.status == _Gwaiting and g2.lostInt == 0


def test_a_locked_m_handed_its_goroutine_requeues_it():
    """mdead: parked in stoplockedm and handed a P by startlockedm (nextp set, key set; startlockedm
    did the incidlelocked(-1)): the locked goroutine, runnable in no queue, is requeued unlocked and
    the P handed off."""
    w = with_m2_running_g2()
    s = w.sched
    w.lock(2)
    w.gosched(2)  # G2 to the global runq; M2 stoplockedm → handoffp → M4 (template)
    (m4,) = w.forked()
    assert w.hello(m4) == [fx.Wake(2, 1), fx.Park(m4)]  # M4 takes G2 → startlockedm hands P1 to M2
    assert s.nmidlelocked == 0 and s.allm[2].nextp is s.allp[1]
    g2 = w.g(2)
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)",
                                          "parked with locked G2 (stoplockedm, handed P1)", (2,), (1,))
    assert s.nmidlelocked == 0 and g2.lockedm is None and list(s.runq) == [g2]
    assert fx.Wake(m4, 1) in out  # handoffp: global work → startm(P1) → M4 from midle


def test_runtime_mains_lost_lock_is_counted_once_per_death():
    """mdead: lg.lostInt += the M's lockedInt (runtime.main's lockOSThread went with m0)."""
    w = World({"main": [["run", 1]]}, gomaxprocs=2)
    w.hello(0)
    w.runtime(0, "lockOSThread")
    w.runtime(0, "chanrecv", "gcenable.c")
    w.kill(0)
    assert w.g(1).lostInt == 1 and w.g(1).lockedm is None


# --- m0 wedged, netpoll -------------------------------------------------------------------------

def test_a_wedged_m0_is_not_counted_twice():
    """mdead: a wedged m0 was counted in nmfreed by mexit already (Go keeps it on allm): no
    second nmfreed++; it is named "wedged"."""
    w = World({"main": [["lock"], ["exit"]], "w": [["run", 1]]}, gomaxprocs=1)
    w.hello(0)
    w.lock(0)
    w.goexit(0)
    s = w.sched
    assert s.m0.parked == Parked.M0
    nmfreed = s.nmfreed
    out = w.kill(0)
    assert recovered(out).doing == "wedged (m0 after its locked goroutine exited)"
    assert s.nmfreed == nmfreed and 0 not in s.allm


def test_the_m_in_netpoll_is_replaced_for_the_timers():
    """mdead: the M blocked in netpoll dies: nobody polls (pollm nil, pollUntil 0, lastpoll =
    nanotime(), never 0), and, as when a timer is added, wakeNetPoller(the next timer): wakep."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 1500)
    s = w.sched
    assert s.pollm is s.m0 and s.lastpoll == 0 and w.now == 0
    out = w.kill(0)
    assert recovered(out) == fx.Recovered(0, "process died (status -9)",
                                          "blocked in netpoll (findrunnable, until the next timer)", (), ())
    assert s.pollm is None and s.pollUntil == 0 and s.lastpoll == 1  # now is 0: nanotime() is never 0
    (fork,) = of(out, fx.Fork)
    assert fork.spinning and fork.nextp == 0 and s.nmspinning == 1
    assert not s.m0.wasSpinning


def test_the_m_in_netpoll_dies_later_lastpoll_is_now():
    """mdead: lastpoll = nanotime() when the M blocked in netpoll dies."""
    w = started(gomaxprocs=1)
    w.advance(5_000)
    w.gopark(0, "sleep", 1500)
    out = w.kill(0)
    assert w.sched.lastpoll == 5_000 and of(out, fx.Fork)


def test_an_idle_m_that_is_not_polling_does_not_touch_the_poller():
    """mdead: only the M blocked in netpoll resets the poller's state (pollm, pollUntil, lastpoll)."""
    w = started(gomaxprocs=2)
    w.gopark(0, "sleep", 5000)  # m0 blocks in netpoll; the spinner M2 finds nothing: midle
    assert w.hello(2) == [fx.Park(2)]
    s = w.sched
    assert s.pollm is s.m0 and s.nmidle == 1
    out = w.kill(2)
    assert s.pollm is s.m0 and s.lastpoll == 0 and s.pollUntil == 5_000_000
    assert out == [recovered(out)]


def test_netpoll_m_dies_with_no_timer_left_starts_nobody():
    """mdead: with no timer left (timeSleepUntil = maxWhen) no wakeNetPoller after the M in netpoll."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 1500)
    s = w.sched
    s.allp[0].timers.clear()
    s.allgs[0].status = _Gwaiting
    w.check = False
    out = w.kill(0)
    assert not of(out, fx.Fork)


# --- checkdead --------------------------------------------------------------------------------

def test_checkdead_after_the_death_of_the_one_running_m():
    """mdead: its records leave allm first (mcount() no longer counts it), then handoffp: main waits
    in select{}, m0 is idle and the spinning M2 (forked, counted as running) dies. handoffp's "last
    running P" rule wakes m0 for P1; it finds nothing, and its stopm's checkdead sees the deadlock."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w")  # G2 runnext on P0; M2 forked spinning with P1
    w.gopark(0, "park")  # G1 waits; m0 runs G2
    assert w.goexit(0) == [fx.Park(0)]  # nothing left: m0 idle, checkdead counts M2
    assert not w.finished
    out = w.kill(2)
    assert recovered(out).ps == (1,) and fx.Wake(0, 1) in out and not w.finished
    w.woken(0)
    assert w.fatal is not None and w.fatal.message == "all goroutines are asleep - deadlock!"


# --- hostlost: several Ms in one step ----------------------------------------------------------

def test_hostlost_fences_each_m_of_the_host_and_places_the_new_ones_elsewhere():
    """core._on_hostlost: drophost, then mdead (fenced) for each M of the host; the Ms handoffp
    starts for their Ps are the agent's (caller sysmon), placed on a host that is left (placehost)."""
    w = World(PROGS, gomaxprocs=2, hosts={"a": 8, "b": 8})
    w.hello(0)
    w.newproc(0, "w")
    w.hello(2)
    s = w.sched
    assert s.allm[2].host == "a" and s.m0.host == "a"
    for m in (0, 2):  # the world's view: both processes are fenced (told to exit)
        w.procs[m].state, w.procs[m].g = "exited", None
    out = w.deliver({"t": "hostlost", "host": "a"})
    recs = of(out, fx.Recovered)
    assert [r.m for r in recs] == [0, 2] and all(r.why == "lost: host a cut off" for r in recs)
    forks = of(out, fx.Fork)
    assert forks and all(f.host == "b" for f in forks)
    assert s.hosts == ["b"] and "a" not in s.stackfree_slots


# --- reforkm ------------------------------------------------------------------------------------

def test_reforkm_forks_the_same_m_again_in_a_new_incarnation():
    """reforkm: a fork order that never became a process is sent again, epoch + 1, from the agent
    (forker None), with the same slot, nextp and spinning; stats.reforked counts it."""
    w = started(gomaxprocs=2)
    (first,) = of(w.newproc(0, "w"), fx.Fork)
    out = w.refork(2)
    assert out == [fx.Fork(2, None, "local", 1, True, first.slot, 2, False)]
    assert w.sched.allm[2].epoch == 2 and w.sched.stats["reforked"] == 1
    out = w.refork(2)
    assert out[0].epoch == 3 and w.sched.stats["reforked"] == 2


# --- lost_goroutines ------------------------------------------------------------------------------

def test_lost_goroutines_is_empty_in_every_consistent_state():
    """lost_goroutines: queued (global, local runq, runnext), handed to a locked M, running on a live
    M: none is lost."""
    w = with_m2_running_g2()
    w.newproc(0, "w", 3)
    assert lost_goroutines(w.sched) == []
    w.lock(2)
    w.gosched(2)
    (m4,) = w.forked()
    w.hello(m4)
    assert lost_goroutines(w.sched) == []  # G2 handed to M2 by startlockedm


def test_lost_goroutines_names_the_unexplained():
    """lost_goroutines: running or in a syscall on an M that is gone (exited, or not in allm), or
    with no M; runnable but in no run queue and handed to no live M."""
    w = with_m2_running_g2()
    s = w.sched
    w.newproc(0, "w", 2)  # G3 in P0's runq, G4 runnext
    g2, g3 = w.g(2), w.g(4)
    s.allm[2].exited = True
    assert lost_goroutines(s) == [2]
    s.allm[2].exited = False
    m2 = s.allm.pop(2)
    assert lost_goroutines(s) == [2]
    s.allm[2] = m2
    g2.m = None
    assert lost_goroutines(s) == [2]
    g2.m = m2
    g2.status = _Gsyscall
    assert lost_goroutines(s) == []
    g2.status = _Grunning
    p0 = s.allp[0]
    assert p0.runnext is g3
    p0.runnext = None
    assert lost_goroutines(s) == [4]
    p0.runnext = g3
    g4 = p0.runq.popleft()
    assert lost_goroutines(s) == [g4.goid]
    p0.runq.appendleft(g4)
    s.runq.append(g4)
    p0.runq.clear()
    assert lost_goroutines(s) == []
    g5 = G(goid=99, prog="w", status=_Grunnable)
    s.allgs.append(g5)
    s.allm[0].lockedg = g5
    assert lost_goroutines(s) == []
    s.allm[0].lockedg = None
    assert lost_goroutines(s) == [99]
    g5.status = _Gwaiting
    assert lost_goroutines(s) == []
