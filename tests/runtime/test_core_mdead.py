"""mdead (coordinator/runtime/mdead.py), gmpsim's own policy for an M whose process dies or that the
shell fences: no Go twin, so each test names the line of mdead's module docstring it pins, in each
state describe_m names. Played through step() by the in-memory world (tests/world.py), which checks
every invariant (invariants.py: counters, P ownership, run queues, freem) after every step.

The rules (mdead.py's docstring):
- the goroutine it ran (or was handed to run) goes back on the global run queue, unlocked;
- its P (held, in transit through nextp, or left in _Psyscall) is handed off with handoffp;
- its records leave allm for sched.freem (freeWait 0 once its process is gone), nmfreed++, and
  checkdead runs, as in mexit.
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.sched import _Grunnable
from tests import steps
from tests.steps import of, warm
from tests.world import World

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)


def recovered(out) -> fx.Recovered:
    (rec,) = of(out, fx.Recovered)
    return rec


def with_m2_running_g2() -> World:
    """GOMAXPROCS=2: m0 runs G1 on P0, the spinning M2 stole G2 and runs it on P1."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w")
    assert w.hello(2) == [fx.Execute(2, 2)]
    return w


def with_m2_idle() -> World:
    """M2 ran G2, which exited; M2 found nothing and sleeps on midle (stopm)."""
    w = with_m2_running_g2()
    assert w.goexit(2) == [fx.Park(2)]
    s = w.sched
    assert s.midle == [s.allm[2]] and s.nmidle == 1 and s.allm[2].mstartfn == "mspinning"
    return w


def died(w: World, m: int, out) -> None:
    """The records rule: M m left allm for freem, counted in nmfreed and stats.ms_died."""
    s = w.sched
    assert m not in s.allm and s.stats["ms_died"] == 1
    assert any(x.id == m for x in s.freem) or fx.StackFree(w.procs[m].host, w.procs[m].slot, m) in out


# --- starting: forked, no mstart yet -------------------------------------------------------------

def test_a_spinning_m_that_dies_before_mstart_gives_back_its_count_and_its_p():
    """mdead: an unstarted M whose mstartfn is mspinning was counted in nmspinning by its waker;
    nmspinning-- and its nextp P handed off (handoffp's CAS(nmspinning, 0, 1): a new spinning M).
    Its process is gone (freeWait 0): the next allocm frees its g0 stack first."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w")
    s = w.sched
    assert s.nmspinning == 1 and not s.allm[2].started
    nmfreed = s.nmfreed
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)", "starting (forked, no mstart yet)", (), (1,))
    assert out[:2] == [fx.StackFree("local", 1, 2),
                       fx.Fork(3, None, "local", 1, True, 1, 1, False)]  # the agent forks (caller sysmon)
    died(w, 2, out)
    assert s.nmfreed == nmfreed + 1 and s.nmspinning == 1 and s.stats["goroutines_requeued"] == 0
    assert s.stats["startm.mdead"] == 1


def test_a_non_spinning_m_that_dies_before_mstart_leaves_nmspinning():
    """mdead: only an unstarted M whose mstartfn is mspinning is in nmspinning; one started by
    handoffp for a P with work (startm(p, false): mstartfn nil) is not. Its P (in transit through
    nextp, with G2 on it) goes to a new M, non-spinning."""
    w = started(gomaxprocs=1)
    w.newproc(0, "w", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    out = w.sysmon()  # retake P0 → handoffp → startm(P0, false) → newm M2
    (fork,) = of(out, fx.Fork)
    assert fork.m == 2 and not fork.spinning and fork.nextp == 0
    s = w.sched
    out = w.kill(2)
    assert recovered(out).ps == (0,) and recovered(out).doing == "starting (forked, no mstart yet)"
    (fork,) = of(out, fx.Fork)
    assert fork.m == 3 and not fork.spinning and fork.nextp == 0
    assert s.nmspinning == 0


def test_a_fenced_m_waits_on_freem_until_its_process_is_gone():
    """mdead: fenced (gone=False) its process may still run: freeWait 1, so allocm keeps its g0
    stack; the agent's mexited (freeWait 0) lets the next allocm free it."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w")
    s = w.sched
    out = w.fence(2)
    assert recovered(out) == fx.Recovered(2, "lost", "starting (forked, no mstart yet)", (), (1,))
    assert not of(out, fx.StackFree)  # M3's allocm left the slot: M2's process may still use it
    (fork,) = of(out, fx.Fork)
    assert fork.m == 3 and fork.slot == 2
    (m2,) = [x for x in s.freem if x.id == 2]
    assert m2.freeWait == 1
    w.mexited(2)
    assert m2.freeWait == 0


# --- parked (stopm), woken --------------------------------------------------------------------

def test_an_idle_m_leaves_midle():
    """mdead: an M parked in stopm leaves midle (nmidle--); it held no P and no goroutine. Its
    mstartfn is still mspinning, but it started long ago: nmspinning is not touched."""
    w = with_m2_idle()
    s = w.sched
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)", "parked (stopm)", (), ())
    assert s.midle == [] and s.nmidle == 0 and s.nmspinning == 0
    assert out == [recovered(out)]  # nothing to hand off, nobody to start; checkdead: G1 runs
    died(w, 2, out)


def test_a_woken_spinning_m_gives_back_its_count_and_its_p():
    """mdead: woken by startm (notewakeup, nextp set, spinning) but not yet running: the count its
    waker took goes back (nmspinning--), and the P in transit is handed off like the others."""
    w = with_m2_idle()
    s = w.sched
    out = w.newproc(0, "w")
    assert fx.Wake(2, 1) in out and s.allm[2].spinning and s.nmspinning == 1
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)",
                                          "woken with P1 (spinning), not yet running", (), (1,))
    (fork,) = of(out, fx.Fork)
    assert fork.m == 3 and fork.spinning and fork.nextp == 1
    assert s.nmspinning == 1 and s.nmidle == 0


def test_a_woken_non_spinning_m_is_described_without_spinning():
    """describe_m: an M woken with a P by a non-spinning startm (handoffp of a P with work: G2)."""
    w = started(gomaxprocs=1)
    w.entersyscallblock(0)  # handoffp(P0): no work, nobody spinning → startm(P0, true): M2
    assert w.hello(2) == [fx.Park(2)]  # finds nothing: midle
    w.exitsyscall(0)  # exitsyscallfast: P0 is idle, m0 takes it back
    w.newproc(0, "w")  # G2 on P0; no idle P: no wakep
    out = w.entersyscallblock(0)  # handoffp(P0): work → startm(P0, false) → mget M2
    assert fx.Wake(2, 0) in out and not w.sched.allm[2].spinning
    rec = recovered(w.kill(2))
    assert rec.doing == "woken with P0, not yet running" and rec.ps == (0,)


# --- running, in a syscall, in cgo ----------------------------------------------------------------

def test_the_goroutine_of_a_running_m_is_requeued_and_its_p_handed_off():
    """mdead: the goroutine it ran goes back on the global run queue (runnable, G.m nil), and its
    P (held: _Pidle now, no M) goes to handoffp, which starts an M for the global work."""
    w = with_m2_running_g2()
    s = w.sched
    g2 = w.g(2)
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)", "running G2", (2,), (1,))
    assert g2.status == _Grunnable and g2.m is None and list(s.runq) == [g2]
    (fork,) = of(out, fx.Fork)
    assert fork.nextp == 1 and fork.spinning  # handoffp: runqsize != 0 → startm(P1, false)… or CAS
    assert s.stats["goroutines_requeued"] == 1
    assert w.hello(fork.m) == [fx.Execute(fork.m, 2)]


def test_the_goroutines_requeued_are_counted():
    """mdead: stats.goroutines_requeued adds each M's requeued goroutines (the report's figure)."""
    w = with_m2_running_g2()
    s = w.sched
    w.kill(2)
    (fork,) = of(w.history[-1][2], fx.Fork)
    w.hello(fork.m)
    w.kill(fork.m)
    assert s.stats["goroutines_requeued"] == 2 and s.stats["ms_died"] == 2


def test_a_syscall_p_is_taken_back_from_psyscall():
    """mdead: its P left in _Psyscall (oldp, same syscalltick) becomes _Pidle, syscalltick++ (as
    retake's CAS does) and is handed off; the goroutine in the syscall is requeued."""
    w = with_m2_running_g2()
    s = w.sched
    p1 = s.allp[1]
    warm(w, 2)
    w.entersyscall(2)
    tick = p1.syscalltick
    assert p1.status == 2 and p1.m is None
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)", "in a syscall (G2)", (2,), (1,))
    assert p1.syscalltick == tick + 1
    assert w.g(2).status == _Grunnable and w.g(2) in s.runq


def test_a_cgo_call_is_named_and_requeued():
    """describe_m: in a cgo call (incgo); mdead requeues the goroutine as for a syscall."""
    w = with_m2_running_g2()
    warm(w, 2)
    w.entersyscall(2, cgo=True)
    out = w.kill(2)
    assert recovered(out) == fx.Recovered(2, "process died (status -9)", "in a cgo call (G2)", (2,), (1,))


def test_a_retaken_syscall_p_is_not_handed_off_again():
    """mdead: a P that sysmon already retook from the syscall (no longer _Psyscall at the M's
    syscalltick) is someone else's now: only the goroutine is requeued."""
    w = with_m2_running_g2()
    s = w.sched
    w.newproc(2, "w")  # work on P1, so that retake hands it to an M
    warm(w, 2)
    w.entersyscall(2)
    w.sysmon()
    w.sysmon()  # retake P1
    p1 = s.allp[1]
    assert p1.status != 2 and s.allm[2].oldp is p1
    tick = p1.syscalltick
    out = w.kill(2)
    assert recovered(out).ps == () and recovered(out).requeued == (2,)
    assert p1.syscalltick == tick


def test_a_retaken_syscall_p_in_another_ms_syscall_is_left_to_it():
    """mdead: the P that sysmon retook from the dead M's syscall may be in _Psyscall again, for
    another M's syscall (syscalltick moved on): it is that M's, not handed off."""
    w = with_m2_running_g2()
    s = w.sched
    w.newproc(2, "w")  # a goroutine on P1 (its goid from P1's batch)
    warm(w, 2)
    w.entersyscall(2)
    w.sysmon()
    out = w.sysmon()  # retake P1 → handoffp → startm(P1, false): M3
    (fork,) = of(out, fx.Fork)
    assert of(w.hello(fork.m), fx.Execute)
    w.entersyscall(fork.m)  # P1 in _Psyscall again, for M3
    p1 = s.allp[1]
    assert p1.status == 2 and s.allm[2].oldp is p1 and s.allm[fork.m].oldp is p1
    out = w.kill(2)
    assert recovered(out).ps == () and p1.status == 2


def test_the_requeued_goroutine_starts_an_m_for_an_idle_p():
    """mdead: the goroutines go back "as netpoll's results come back" (injectglist, caller sysmon):
    with a P idle, an M is started for each (startm(nil, false), counted as mdead's)."""
    w = with_m2_running_g2()
    s = w.sched
    warm(w, 2)
    w.entersyscall(2)
    w.sysmon()
    out = w.sysmon()  # retake P1: nothing on it, nobody spinning → a spinning M3
    (fork,) = of(out, fx.Fork)
    assert w.hello(fork.m) == [fx.Park(fork.m)]  # finds nothing: P1 idle, M3 on midle
    w.kill(fork.m)  # M3 dies idle: no M left on midle
    assert s.npidle == 1 and s.nmidle == 0
    n = s.stats["startm.mdead"]
    out = w.kill(2)
    assert recovered(out).requeued == (2,) and recovered(out).ps == ()
    (fork,) = of(out, fx.Fork)
    assert fork.forker is None and fork.nextp == 1 and not fork.spinning
    assert s.stats["startm.mdead"] == n + 1


def test_a_locked_goroutine_waiting_in_a_run_queue_is_not_requeued_twice():
    """mdead: a locked goroutine is requeued only if startlockedm handed it over (in no queue);
    one already in a run queue (gosched'd, its M in stoplockedm with no P yet) stays there, once."""
    w = with_m2_running_g2()
    s = w.sched
    w.lock(2)
    w.gosched(2)  # G2 on the global runq; M2 in stoplockedm, not handed a P
    g2 = w.g(2)
    assert list(s.runq) == [g2] and s.allm[2].nextp is None
    out = w.kill(2)
    assert recovered(out).requeued == () and list(s.runq) == [g2] and g2.lockedm is None
