"""Tests that kill schedule's, findrunnable's and netpoll's surviving mutants (tests/MUTATION.md):
the steal order and passes, timers at schedule's top and in findrunnable, ready, the M back from
stopm or netpoll, each pinning one rule of Go 1.16's proc.go through step() (tests/world.py).
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime import findrunnable as findrunnable_mod
from tests import steps
from tests.steps import of, warm
from tests.world import World

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)


# --- schedule / findrunnable -----------------------------------------------------------------------

def steal_draws(state, n: int, k: int):
    """The rng state after k of findrunnable's steal orders (one stealOrder.start(fastrand()) per
    pass) drawn from `state` with gomaxprocs n."""
    import random
    from math import gcd
    r = random.Random()
    r.setstate(state)
    coprimes = [i for i in range(1, n + 1) if gcd(i, n) == 1]
    for _ in range(k):
        r.randrange(n)
        r.randrange(len(coprimes))
    return r.getstate()


def test_steal_order_is_gos_random_order():
    """Go's randomOrder: coprimes are the i in 1..count with gcd(i, count) == 1; start(fastrand())
    gives pos = i % count, inc = coprimes[i % len(coprimes)]; next is pos = (pos + inc) % count. Here
    fastrand is sched.rng's two draws."""
    import random
    from math import gcd
    for n in range(1, 7):
        s = World(PROGS, gomaxprocs=n).sched
        r = random.Random()
        r.setstate(s.rng.getstate())
        coprimes = [i for i in range(1, n + 1) if gcd(i, n) == 1]
        strides = set()
        for _ in range(60):
            pos, inc = r.randrange(n), coprimes[r.randrange(len(coprimes))]
            strides.add(inc)
            want = [s.allp[(pos + k * inc) % n] for k in range(n)]
            assert findrunnable_mod._steal_order(s) == want
        assert strides == set(coprimes)


def test_runnext_is_stolen_on_the_last_of_four_passes_only():
    """findrunnable: `for i := 0; i < stealTries; i++ { stealTimersOrRunNextG := i == stealTries-1;
    for enum := stealOrder.start(fastrand()); ...` : a P's runnext is taken only on the 4th pass, so
    the spinning M draws 4 steal orders before it gets G2 out of P0's runnext."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)  # G2 in P0's runnext; wakep: a spinning M2 for P1
    (m2,) = w.forked()
    before = w.sched.rng.getstate()
    assert w.hello(m2) == [fx.Execute(m2, 2)]
    assert w.sched.rng.getstate() == steal_draws(before, 2, 4)


def test_other_ps_timers_are_run_on_the_last_pass_only():
    """findrunnable: `if stealTimersOrRunNextG && timerpMask.read(enum.position())` { checkTimers(p2) }:
    another P's due timer runs on the 4th pass only (its G readied on the thief's P). P0 (m0 runs G1)
    has G1's due timer; the spinning M2 finds nothing else: 4 steal orders, then G1."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)  # G2 in runnext; M2 forked, spinning, for P1
    (m2,) = w.forked()
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    w.advance(2_000_000)
    before = w.sched.rng.getstate()
    assert w.hello(m2) == [fx.Execute(m2, 1)]
    assert w.sched.rng.getstate() == steal_draws(before, 2, 4)
    assert not w.sched.allp[0].timers


def test_no_spinning_when_spinning_ms_are_half_the_busy_ps_with_an_idle_p():
    """findrunnable: `2*nmspinning >= procs - npidle` → goto stop: busy Ps are gomaxprocs minus the
    idle ones. GOMAXPROCS=3, P2 idle, P1 handed to a spinning M not started yet: 2*1 >= 3-1, so m0,
    out of work, does not steal (no steal order drawn) and stops."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    assert len(w.forked()) == 1 and w.sched.npidle == 1 and w.sched.nmspinning == 1
    assert w.gopark(0, "park") == [fx.Execute(0, 2)]
    rng = w.sched.rng.getstate()
    assert w.gopark(0, "park") == [fx.Park(0)]
    assert w.sched.rng.getstate() == rng, "m0 went stealing (it drew a steal order)"


def test_schedule_runs_due_timers_before_the_local_runq():
    """schedule: checkTimers(pp, 0) before runqget; the timer's goroutine is readied with
    goready → ready(gp, next=true), into runnext, ahead of the G that was there (kicked to the runq)."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    w.advance(2_000_000)
    w.newproc(0, "w", 1)  # G3 in runnext
    g3 = w.sched.allp[0].runnext.goid
    assert w.goexit(0) == [fx.Execute(0, 1)]  # the due timer first, G1 in runnext
    assert [g.goid for g in w.sched.allp[0].runq] == [g3]


def test_ready_wakes_a_spinning_m_cloned_from_the_caller():
    """ready → wakep() → startm → newm: the new thread is cloned from the M that readied the G (the
    one that ran the timer in schedule's checkTimers), not from the agent."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    assert w.gopark(0, "sleep", 1000) == [fx.Execute(0, 2)]  # G1's timer on P0
    assert of(w.hello(m2), fx.NetpollSleep)  # M2 steals nothing (not due) and polls
    w.advance(2_000_000)
    out = w.goexit(0)  # schedule: checkTimers readies G1; wakep: P1 idle, nobody spinning
    (fork,) = of(out, fx.Fork)
    assert fork.forker == 0 and fork.spinning and fork.nextp == 1
    assert out[-1] == fx.Execute(0, 1)


def test_woken_after_findrunnable_stopm_takes_a_batch_on_a_fresh_p():
    """stopm in findrunnable returns to findrunnable's top (globrunqget(p, 0): a fair share), not to
    schedule's, where a P at schedtick%61 == 0 (here 0: the P never ran a G) takes just one."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    (m3,) = w.forked()
    assert w.hello(m3) == [fx.Park(m3)]  # P2 idle, schedtick 0
    p2 = w.sched.allp[2]
    assert p2.schedtick == 0
    out = w.newproc(0, "w", 300)
    assert fx.Wake(m3, 2) in out
    n = w.sched.runqsize
    assert w.woken(m3) == [fx.Execute(m3, w.procs[m3].g)]
    want = min(n, n // 3 + 1, 128)
    assert len(p2.runq) == want - 1 and w.sched.runqsize == n - want


def test_a_non_spinning_m_polls_for_another_ps_due_timer():
    """findrunnable's stop: "Check for timer creation or expiry concurrently with transitioning from
    spinning to non-spinning": pollUntil is the earliest timer of every P (not only its own), and
    delay = pollUntil - nanotime() (now read when it is still 0), at least 0: m0, not spinning (a
    spinning M is on its way to P1), blocks in netpoll(0) for P1's due timer."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(m2, "sleep", 5000)[-1] == fx.NetpollSleep(m2, 5_000_000)  # G2's timer on P1
    w.newproc(0, "w", 1)  # G3; wakep: P1 to a new spinning M3
    assert len(w.forked()) == 1 and w.sched.nmspinning == 1
    w.netpoll()
    assert w.woken(m2) == [fx.Park(m2)]  # no idle P: stopm; lastpoll != 0 again
    assert w.gopark(0, "park") == [fx.Execute(0, w.procs[0].g)]
    assert w.sched.now == 5_000_000
    assert w.gopark(0, "park") == [fx.Park(0), fx.NetpollSleep(0, 5_000_000)]
    assert w.sched.pollm is w.sched.m0 and w.sched.pollUntil == 5_000_000


def test_an_m_with_no_timer_to_wait_for_does_not_break_the_poll():
    """findrunnable: `else if pollUntil != 0 && netpollinited()` { if pollerPollUntil == 0 ||
    pollerPollUntil > pollUntil { netpollBreak() } }: with no timer left anywhere nothing is sent to
    the M still polling for a timer another M has run meanwhile."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(0, "sleep", 5000)[-1] == fx.NetpollSleep(0, 5_000_000)
    w.advance(6_000_000)
    out = w.gopark(m2, "park")  # M2 steals the due timer of P0: G1 runs on P1
    assert out[-1] == fx.Execute(m2, 1) and of(out, fx.Fork)  # resetspinning → wakep: P0
    assert not any(p.timers for p in w.sched.allp) and w.sched.pollUntil == 5_000_000
    assert w.gopark(m2, "park") == [fx.Park(m2)]


def test_stoplockedm_wakeup_executes_with_a_new_time_slice():
    """schedule: `if _g_.m.lockedg != 0 { stoplockedm(); execute(_g_.m.lockedg.ptr(), false) }`: the
    locked G starts a new slice (schedtick++), though startlockedm's M had it from its runnext."""
    w = started(gomaxprocs=1)
    w.lock(0)
    w.newproc(0, "w", 1)
    out = w.gopark(0, "sleep", 1000)  # locked: stoplockedm, P0 to a new M for G2
    (fork,) = of(out, fx.Fork)
    assert w.hello(fork.m) == [fx.Execute(fork.m, 2)]
    w.advance(2_000_000)
    assert w.goexit(fork.m) == [fx.Wake(0, 0), fx.Park(fork.m)]  # G1 readied: startlockedm
    p0 = w.sched.allp[0]
    t = p0.schedtick
    assert w.woken(0) == [fx.Execute(0, 1)]
    assert p0.schedtick == t + 1


def test_exitsyscall0s_syscalltick_bump_happens_once():
    """exitsyscall after mcall(exitsyscall0): one `_g_.m.p.ptr().syscalltick++` when gp runs again;
    the G's later runs (here after a gosched) do not bump it again."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)  # retake
    assert w.exitsyscall(0) == [fx.Park(0)]  # exitsyscall0: G1 on the global runq
    p0 = w.sched.allp[0]
    assert w.hello(fork.m) == [fx.Execute(fork.m, 1)]
    t = p0.syscalltick
    w.gosched(fork.m)
    w.gosched(fork.m)
    assert p0.syscalltick == t


def test_ready_into_a_full_local_runq_moves_half_to_the_global_queue():
    """ready → runqput(pp, gp, next=true): the G in runnext is kicked to the tail; with the local runq
    full (256) runqputslow moves half of it and the kicked G (129) to the global queue."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 257)  # runnext + a full runq of 256
    p0, s = w.sched.allp[0], w.sched
    assert len(p0.runq) == 256 and s.runqsize == 0
    w.gopark(0, "sleep", 1000)  # G1's timer; the runnext G runs (runq still full)
    w.advance(2_000_000)
    w.newproc(0, "w", 1)  # runnext again
    assert p0.schedtick == 0  # (every G so far came from runnext: inheritTime)
    assert w.goexit(0) == [fx.Execute(0, 2)]  # checkTimers → ready(G1): kick, runqputslow of 129;
    assert p0.runnext is w.g(1) and len(p0.runq) == 128  # then schedtick%61 == 0: one from the global
    assert s.runqsize == 128


def test_netpoll_returns_at_once_on_a_break_left_by_a_dead_poller():
    """findrunnable: when netpoll(delay) returns at once (a netpollBreak byte is in the pipe: here left
    by the polling M, which died before reading it: mdead), `goto top` with a P again, and the next
    poll blocks. (M2 polls; m0's earlier timer breaks the poll; M2 dies; m0, woken for the timers in
    its place, reads the byte and then blocks in netpoll until its timer.)"""
    w = started(gomaxprocs=2)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)
    assert w.gopark(m2, "sleep", 5000)[-1] == fx.NetpollSleep(m2, 5_000_000)
    out = w.gopark(0, "sleep", 1000)
    assert out[0] == fx.NetpollBreak(m2) and out[-1] == fx.Park(0)
    s = w.sched
    assert s.netpollWakeSig == 1
    out = w.kill(m2)
    assert fx.Wake(0, 1) in out or fx.Wake(0, 0) in out, out
    assert w.woken(0) == [fx.Park(0), fx.NetpollSleep(0, 1_000_000)]
    assert s.netpollWakeSig == 0 and s.pollm is s.m0


def test_the_m_back_from_netpoll_goes_on_at_findrunnables_top():
    """findrunnable after netpoll(delay) returns: pidleget, acquirep, (spinning again,) `goto top`: its
    own P's due timer readies G1 (runnext), which it runs; not schedule's top, where a P at
    schedtick%61 == 0 (P0: 0) would first take one G from the global queue."""
    w = started(gomaxprocs=3)
    w.newproc(0, "w", 1)
    (m2,) = w.forked()
    w.hello(m2)  # steals G2; wakep: P2 to a spinning M3, not started (so no more wakep)
    assert len(w.forked()) == 1
    assert w.gopark(0, "sleep", 5000)[-1] == fx.NetpollSleep(0, 5_000_000)  # P0 idle, schedtick 0
    p0 = w.sched.allp[0]
    assert p0.schedtick == 0 and w.sched.npidle == 1
    w.newproc(m2, "w", 300)  # P1's runq overflows to the global queue
    n = w.sched.runqsize
    assert n > 0
    w.netpoll()
    assert w.woken(0) == [fx.Execute(0, 1)]
    assert w.sched.runqsize == n


# --- netpoll / netpollreturn -------------------------------------------------------------------

def test_netpoll_waits_at_most_1e9_ms():
    """netpoll (netpoll_epoll.go): `else if delay < 1e15 { waitms = int32(delay / 1e6) } else { waitms =
    1e9 }`: ~11.5 days at most for a timer (main sleeps 20 days)."""
    w = started(gomaxprocs=1)
    out = w.gopark(0, "sleep", 20 * 86_400 * 1_000_000)
    assert out == [fx.Park(0), fx.NetpollSleep(0, 1_000_000_000 * 1_000_000)]


def test_a_poll_that_timed_out_leaves_no_break_byte():
    """A netpoll that returns (here by its timeout) has read any netpollBreak byte
    (netpollWakeSig = 0): going on at findrunnable's top, the M steals once more (4 steal orders) and
    its next netpoll blocks at once; it does not return again for a stale byte (another round)."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 1500)
    w.netpoll()
    before = w.sched.rng.getstate()
    assert w.woken(0) == [fx.Park(0), fx.NetpollSleep(0, 2_000_000)]
    assert w.sched.rng.getstate() == steal_draws(before, 1, 4)
    assert w.sched.netpollWakeSig == 0
