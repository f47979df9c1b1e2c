"""Go's own cases (crash_test.go, proc_test.go, the issues the 1.16 code fixed), played through step()
by the in-memory world (tests/world.py), which checks every invariant after every step."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.core import step
from coordinator.runtime.note import notewakeup
from coordinator.runtime.proc import mPark, pidleput
from coordinator.runtime.runq import globrunqget, globrunqput, runqput
from coordinator.runtime.sched import _LOCAL_RUNQ_SIZE, G, _Grunnable, _Prunning, _Psyscall, forcePreemptNS
from protocol.throw import Throw
from tests.steps import WORKER, of, started, warm
from tests.world import World
from tests.world_procs import PARKED


def fatal_of(w: World) -> fx.Fatal:
    assert w.fatal is not None, f"no fatal; outcome {w.outcome()}"
    return w.fatal


# --- TestThreadExhaustion ------------------------------------------------------------------------

@pytest.mark.parametrize("gomaxprocs", [1, 2, 4])
def test_thread_exhaustion(gomaxprocs):
    """debug.SetMaxThreads(10); 100x go { LockOSThread(); c <- 0; select{} }: each locked, parked
    goroutine pins an M (stoplockedm → handoffp → startm → mReserveID → checkmcount)."""
    w = World({"main": [["repeat", 100, [["go", "locker", 1], ["run", 10]]], ["wait"]],
               "locker": [["lock"], ["park"]]}, gomaxprocs=gomaxprocs, maxmcount=10).run()
    f = fatal_of(w)
    assert f.message == "thread exhaustion"
    assert list(f.lines) == ["runtime: program exceeds 10-thread limit", "fatal error: thread exhaustion"]
    s = w.sched
    assert s.mcount() == 11 and s.nmidlelocked >= 10 - 3 - gomaxprocs
    assert s.newmHandoff.haveTemplateThread == 1


def test_thread_exhaustion_counts_the_reserved_id():
    """checkmcount runs in mReserveID: the limit trips before the thread exists (no Fork for it)."""
    w = World({"main": [["repeat", 100, [["go", "locker", 1], ["run", 10]]], ["wait"]],
               "locker": [["lock"], ["park"]]}, gomaxprocs=1, maxmcount=10).run()
    assert fatal_of(w).message == "thread exhaustion"
    assert w.sched.mnext == 11 and len(w.sched.allm) == 10
    assert not of(w.history[-1][2], fx.Fork)


# --- checkdead -----------------------------------------------------------------------------------

def test_simple_deadlock():
    """TestSimpleDeadlock: select{} in main."""
    w = World({"main": [["park"]]}).run()
    assert fatal_of(w).lines == ("fatal error: all goroutines are asleep - deadlock!",)


def test_locked_deadlock():
    """TestLockedDeadlock: LockOSThread in main, then select{} (checkdead through nmidlelocked)."""
    w = World({"main": [["lock"], ["park"]]}).run()
    assert fatal_of(w).message == "all goroutines are asleep - deadlock!"
    assert w.sched.nmidlelocked == 1


def test_locked_deadlock2():
    """TestLockedDeadlock2: a goroutine locks and blocks; main does select{}."""
    w = World({"main": [["go", "l", 1], ["run", 5], ["park"]], "l": [["lock"], ["park"]]}, gomaxprocs=2).run()
    assert fatal_of(w).message == "all goroutines are asleep - deadlock!"


def test_goexit_deadlock():
    """TestGoexitDeadlock: main calls runtime.Goexit and no other goroutine is left."""
    w = World({"main": [["exit"]]}).run()
    f = fatal_of(w)
    assert f.message == "no goroutines (main called runtime.Goexit) - deadlock!"
    assert f.lines == ("fatal error: no goroutines (main called runtime.Goexit) - deadlock!",)


def test_goexit_deadlock_after_the_others_finish():
    """TestGoexitCrash's shape: main Goexits while other goroutines run; when they are done."""
    w = World({"main": [["go", "w", 3], ["exit"]], "w": [["run", 100], ["syscall", 50]]}, gomaxprocs=2).run()
    assert fatal_of(w).message == "no goroutines (main called runtime.Goexit) - deadlock!"
    assert w.sched.stats["goroutines_completed"] == 4


def test_sleeping_goroutines_are_no_deadlock():
    """checkdead returns while timers are pending; the timer wakes main, which returns."""
    w = World({"main": [["sleep", 20000], ["go", "w", 1], ["wait"]], "w": [["sleep", 500]]}, gomaxprocs=2).run()
    assert w.outcome() == "ok"


def test_checkdead_inconsistent_counts():
    """run < 0 throws with Go's print line."""
    w = started()
    w.sched.nmidle += 5  # corrupt: more idle Ms than Ms
    w.check = False
    w.gopark(0, "park")
    f = fatal_of(w)
    assert f.message == "checkdead: inconsistent counts"
    assert f.lines[0].startswith("runtime: checkdead: nmidle=6 nmidlelocked=0 mcount=2 nmsys=1")


# --- golang/go#40368: no false checkdead between mReserveID and mstart ---------------------------

def test_no_false_deadlock_while_a_new_m_starts():
    """sysmon retakes P0 from m0's syscall and startm → newm reserves M2's ID; m0 leaves the syscall,
    finds no P and goes idle (mput → checkdead) before M2 said hello. M2's reserved ID counts as
    running, so checkdead sees run=1, not a runnable G with no M (the bug of golang/go#40368)."""
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)  # G2 in P0's runnext; no idle P, so no wakep
    warm(w, 0)
    w.entersyscall(0)  # P0 → _Psyscall with work on it
    assert w.sysmon() == []  # first sight of the syscall tick
    out = w.sysmon()  # same syscalltick, local work: retake → handoffp → startm → newm
    (fork,) = of(out, fx.Fork)
    assert fork.forker is None and fork.nextp == 0 and not fork.template  # sysmon has no process
    s = w.sched
    assert s.stats["startm.retake"] == 1 and not s.allm[fork.m].started
    out = w.exitsyscall(0)  # exitsyscall0: G1 to the global runq, stopm → mput → checkdead
    assert out == [fx.Park(0)] and not w.finished
    assert s.mcount() - s.nmidle - s.nmidlelocked - s.nmsys == 1  # only the unborn M runs
    out = w.hello(fork.m)  # P0.schedtick is 0: the 61st-tick check takes G1 from the global runq first
    assert out == [fx.Execute(fork.m, 1)] and not w.finished


def test_no_false_deadlock_while_a_new_m_starts_locked():
    """The same with the other M locked and parked (nmidlelocked): still no Fatal before the hello."""
    w = started({"main": [["run", 1]], "worker": [["run", 1]], "locker": [["run", 1]]}, gomaxprocs=1)
    w.newproc(0, "locker", 1)
    w.gopark(0, "sleep", 100_000)  # main sleeps; m0 runs the locker, G2
    assert w.procs[0].g == 2
    w.lock(0)
    w.newproc(0, "worker", 1)  # G3 in runnext
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    out = w.sysmon()
    (fork,) = of(out, fx.Fork)
    assert not fork.template and fork.forker is None  # the caller is sysmon (not locked): the agent forks
    w.exitsyscall(0)  # no P: G2 to the global runq, and m0 parks with it (stoplockedm)
    s = w.sched
    assert w.procs[0].state == PARKED and s.nmidlelocked == 1 and not w.finished
    out = w.hello(fork.m)  # schedtick%61 == 0: G2 from the global runq, locked to m0 → startlockedm
    assert out == [fx.Wake(0, 0), fx.Park(fork.m)] and not w.finished
    assert w.woken(0) == [fx.Execute(0, 2)] and s.nmidlelocked == 0


# --- golang/go#28979: the M replacing a killed locked M comes from the template ---------------------

def test_locked_exit_kills_m_and_its_replacement_comes_from_the_template():
    w = started(gomaxprocs=2)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)  # wakep → startm → newm from m0's process
    assert fork.forker == 0 and not fork.template
    m2 = fork.m
    assert w.hello(m2) == [fx.Execute(m2, 2)]  # spinning M2 steals G2
    w.lock(m2)
    out = w.goexit(m2)  # exits while locked: goexit0 → mexit → handoffp → startm → newm
    assert fx.Exit(m2) in out
    (fork2,) = of(out, fx.Fork)
    assert fork2.template and fork2.forker is None  # not cloned from the tainted thread
    s = w.sched
    assert m2 not in s.allm and s.freem[-1].id == m2 and s.freem[-1].freeWait == 1
    assert s.stats["via_template"] == 1 and s.stats["startm.mexit"] == 1
    assert s.freem[-1].lockedExt == 1  # kept on purpose (the fix of #28979)
    w.mexited(m2)
    assert s.freem[-1].freeWait == 0
    w.hello(fork2.m)
    assert not w.finished


def test_locked_exit_on_m0_wedges_it():
    """golang/go#34031 / TestLockOSThreadExit: m0 is never exited; mexit parks it for good."""
    w = started(gomaxprocs=1)
    w.lock(0)
    out = w.goexit(0)  # goroutine 1 Goexits while locked (main keeps nothing else running)
    assert fx.Park(0) in out and not of(out, fx.Exit)
    s = w.sched
    assert s.m0.parked == "m0" and 0 in s.allm and s.nmfreed == 1
    assert s.mcount() == len(s.allm) - 1 and not w.finished
    # mexit's handoffp: nobody spinning, no idle P → startm(P0, spinning) via the template (m0 is
    # still lockedExt); that M finds nothing, stopm → mput → checkdead: now the program is dead.
    (fork,) = of(out, fx.Fork)
    assert fork.template and fork.spinning
    w.hello(fork.m)
    assert fatal_of(w).message == "no goroutines (main called runtime.Goexit) - deadlock!"


# --- the template thread ---------------------------------------------------------------------------

def test_first_lockosthread_starts_the_template_thread():
    w = started(schedtrace_ms=1)
    s = w.sched
    threads, nmsys = s.mcount(), s.nmsys
    assert s.newmHandoff.haveTemplateThread == 0
    assert w.lock(0) == [fx.Cont(0)]  # no Fork: the host agent is the template process
    assert s.newmHandoff.haveTemplateThread == 1
    assert s.mcount() == threads + 1 and s.nmsys == nmsys + 1
    assert s.templatem.virtual and s.templatem.mstartfn == "templateThread"
    w.advance(2_000_000)
    (trace,) = of(w.sysmon(), fx.Trace)
    assert f"threads={threads + 1} " in trace.text
    w.unlock(0)
    w.lock(0)  # a second LockOSThread starts nothing
    assert s.mcount() == threads + 1 and s.nmsys == nmsys + 1


def test_newm_from_a_locked_thread_without_template_throws():
    w = started(gomaxprocs=2)
    w.sched.m0.lockedExt = 1  # corrupt: locked, but LockOSThread never started the template thread
    w.check = False
    out = w.newproc(0, "worker", 1)  # wakep → startm → newm from a locked M
    assert out[-1] == fx.Fatal("on a locked thread with no template thread",
                               ("fatal error: on a locked thread with no template thread",))


def test_newm_from_a_locked_thread_goes_through_the_template():
    w = started(gomaxprocs=2)
    w.lock(0)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    assert fork.template and fork.forker is None and fork.spinning and fork.nextp == 1


# --- notes ---------------------------------------------------------------------------------------

def test_a_wake_before_the_sleep_is_not_lost():
    """notewakeup before notesleep: mPark returns at once, no Park effect."""
    w = started(gomaxprocs=1)
    s = w.sched
    mp = s.m0
    notewakeup(mp.park)
    s.fx = []
    assert mPark(s, mp, "stopm") is False
    assert s.fx == [] and not mp.blocked


def test_double_wakeup_through_startm():
    """An idle M whose note is already set: startm's notewakeup throws."""
    w = started(gomaxprocs=2)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    w.hello(fork.m)
    w.gopark(fork.m, "park")  # M2 finds nothing: stopm, on midle
    m2 = w.sched.allm[fork.m]
    assert m2 in w.sched.midle
    m2.park.key = 1  # corrupt
    w.check = False
    out = w.newproc(0, "worker", 1)
    assert out[-1] == fx.Fatal("notewakeup - double wakeup",
                               ("notewakeup - double wakeup (1)", "fatal error: notewakeup - double wakeup"))


# --- stopm / startm / pidleput throws, reached by corrupting the state -----------------------------

def _idle_m2() -> tuple[World, int]:
    w = started(gomaxprocs=2)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    w.hello(fork.m)
    w.goexit(fork.m)  # G2 done; M2 finds nothing: stopm
    assert w.sched.allm[fork.m] in w.sched.midle
    w.check = False
    return w, fork.m


def test_startm_m_has_p():
    w, m2 = _idle_m2()
    w.sched.allm[m2].nextp = w.sched.allp[1]
    out = w.newproc(0, "worker", 1)
    assert out[-1].message == "startm: m has p"


def test_startm_m_is_spinning():
    w, m2 = _idle_m2()
    w.sched.allm[m2].spinning = True
    out = w.newproc(0, "worker", 1)
    assert out[-1] == fx.Fatal("startm: m is spinning", ("fatal error: startm: m is spinning",))


def test_startm_p_has_runnable_gs():
    w, m2 = _idle_m2()
    w.sched.pidle[-1].runq.append(G(goid=99, prog="worker"))  # corrupt: an idle P with work
    out = w.newproc(0, "worker", 1)  # wakep → startm(nil, spinning) → pidleget → mget M2
    assert out[-1].message == "startm: p has runnable gs"


def _m0_back_from_a_retaken_syscall() -> World:
    """m0 in a syscall whose P0 sysmon retook and handed to a new M: exitsyscall will find no P."""
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    warm(w, 0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)
    w.hello(fork.m)
    w.check = False
    return w


def test_stopm_holding_p():
    """exitsyscall0 → stopm on an M that (corruptly) still holds a P."""
    w = _m0_back_from_a_retaken_syscall()
    w.sched.m0.p = w.sched.allp[0]
    out = w.exitsyscall(0)  # P0 is busy, no idle P: exitsyscall0 → stopm
    assert out[-1] == fx.Fatal("stopm holding p", ("fatal error: stopm holding p",))


def test_stopm_spinning():
    w = _m0_back_from_a_retaken_syscall()
    w.sched.m0.spinning = True
    out = w.exitsyscall(0)
    assert out[-1] == fx.Fatal("stopm spinning", ("fatal error: stopm spinning",))


def test_without_corruption_the_same_path_parks():
    w = _m0_back_from_a_retaken_syscall()
    w.check = True
    assert w.exitsyscall(0) == [fx.Park(0)]
    assert w.sched.m0 in w.sched.midle and w.sched.runq[0].goid == 1


def test_pidleput_non_empty_run_queue():
    w = started(gomaxprocs=2)
    s = w.sched
    p = s.pidle.pop()
    s.npidle -= 1
    p.runnext = G(goid=99, prog="worker")
    with pytest.raises(Throw) as t:
        pidleput(s, p)
    assert t.value.message == "pidleput: P has non-empty run queue"


# --- freem: a g0 stack is freed only once the process is gone ---------------------------------------

def test_exited_m_slot_is_reused_only_after_mexited():
    w = started(gomaxprocs=2, slots=64)
    s = w.sched
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    m2, slot2 = fork.m, fork.slot
    w.hello(m2)
    w.lock(m2)  # starts the template thread (virtual: no g0 slot)
    out = w.goexit(m2)  # M2 exits: mexit → handoffp(P1) → startm → newm → allocm
    assert fx.Exit(m2) in out
    (fork4,) = of(out, fx.Fork)
    assert fork4.slot != slot2 and not of(out, fx.StackFree)  # freeWait=1: M2's stack may still be in use
    assert [(m.id, m.freeWait) for m in s.freem] == [(m2, 1)]
    w.hello(fork4.m)  # spinning, finds nothing: stopm
    assert w.procs[fork4.m].state == PARKED
    w.mexited(m2)  # the host agent saw the process end: freeWait=0, but nothing freed yet
    assert [(m.id, m.freeWait) for m in s.freem] == [(m2, 0)] and not w.stackfrees
    w.newproc(0, "worker", 1)  # wakep → startm → mget: the idle M4 (no allocm)
    w.woken(fork4.m)
    assert not w.stackfrees
    w.newproc(0, "worker", 1)
    warm(w, 0)
    w.entersyscall(0)
    assert w.sysmon() == []
    out = w.sysmon()  # retake → handoffp → startm → no idle M → newm → allocm sweeps freem
    assert of(out, fx.StackFree) == [fx.StackFree("local", slot2, m2)]
    (fork5,) = of(out, fx.Fork)
    assert fork5.slot == slot2 and s.freem == []


# --- sysmon ----------------------------------------------------------------------------------------

def test_sysmon_delay_schedule():
    """20µs; doubling once more than 50 consecutive ticks retook nothing; capped at 10ms."""
    w = started(gomaxprocs=1)  # m0 runs main: P0 busy, so sysmon does not deep-sleep
    delays = []
    for _ in range(65):
        before = w.now
        w.sysmon()
        delays.append((w.now - before) // 1000)
    assert delays[:51] == [20] * 51
    assert delays[51:61] == [40, 80, 160, 320, 640, 1280, 2560, 5120, 10_000, 10_000]
    assert set(delays[61:]) == {10_000}


def test_sysmon_usleep_lasts_the_delay_plus_the_os_slack():
    """usleep(20) returns late by the OS's timer slack (usleep_slack_us): sysmon's busy passes come
    every 20 + slack µs, and its retake of a P in a syscall that much later."""
    w = World(WORKER, gomaxprocs=1, usleep_slack_us=70)
    assert w.hello(0) == [fx.Execute(0, 1)]
    before = w.now
    w.sysmon()
    assert w.now - before == 90_000


def test_sysmon_deep_sleeps_when_every_p_is_idle():
    """Go 1.16: with every P idle sysmon sleeps on sysmonnote until the next timer (at most
    forcegcperiod/2); entersyscall wakes it through the note (entersyscall_sysmon)."""
    w = World(WORKER, gomaxprocs=2)
    w.hello(0)
    w.gopark(0, "sleep", 1_000_000)  # wakeNetPoller → wakep: M2 spins on P1; m0 blocks in netpoll
    w.hello(2)  # nothing to do: stopm
    assert w.sysmon() is None and w.sysmon_asleep and w.sched.sysmonwait == 1  # npidle == gomaxprocs
    assert w._sysmon[0] == 1_000_000_000  # notetsleep until main's timer
    out = w.netpoll()  # m0's netpoll times out
    assert out == [fx.Wake(0, -1)]
    w.woken(0)  # netpollreturn: P1, findrunnable's top steals P0's due timer: main runs
    assert w.procs[0].g == 1
    w.woken(2)
    out = w.entersyscall(0)  # entersyscall wakes sysmon (entersyscall_sysmon)
    assert fx.WakeSysmon() in out and w.sched.sysmonwait == 0
    # Woken at once: P1's first syscall is retaken; handoffp's last-P rule (nobody in netpoll now)
    # starts the idle M2 for it.
    assert w.sysmon() == [fx.Wake(2, 1)]


def test_retake_needs_the_same_syscalltick_on_two_ticks():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)  # local work on P0: no lazy window
    warm(w, 0)
    w.entersyscall(0)
    p0 = w.sched.allp[0]
    assert w.sysmon() == [] and p0.status == _Psyscall  # tick 1: records syscalltick
    out = w.sysmon()  # tick 2: same tick → retake
    assert p0.status != _Psyscall and w.sched.stats["retake"] == 1 and of(out, fx.Fork)


def test_retake_misses_a_p_whose_syscalltick_moved():
    """golang/go#28701's shape: a new syscall between two ticks resets the count."""
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    p0 = w.sched.allp[0]
    warm(w, 0)
    for _ in range(5):
        w.entersyscall(0)
        assert w.sysmon() == []
        w.exitsyscall(0)  # syscalltick++ on the way out
    assert w.sched.stats["retake"] == 0 and p0.status == _Prunning


def test_retake_lazy_window_of_10ms():
    """No local work and an idle P: the P in a syscall is left alone until 10ms after sysmon saw it."""
    w = started(gomaxprocs=2)
    warm(w, 0)
    w.entersyscall(0)
    p0 = w.sched.allp[0]
    w.sysmon()
    seen = w.now
    for t in (seen + 20_000, seen + 5_000_000, seen + 10_000_000 - 1):
        assert w.sysmon(at=t) == [] and p0.status == _Psyscall
    out = w.sysmon(at=seen + 10_000_000)
    assert p0.status != _Psyscall and w.sched.stats["retake"] == 1
    assert of(out, fx.Fork)  # handoffp: the last running P gets an M (npidle == gomaxprocs-1)


def test_retake_at_once_when_no_p_is_idle():
    """Nobody spinning and no idle P: no lazy window, retake on the second tick."""
    w = started(gomaxprocs=1)
    warm(w, 0)
    w.entersyscall(0)
    assert w.sysmon() == []
    w.sysmon()
    assert w.sched.stats["retake"] == 1


def test_first_syscall_on_a_p_is_retaken_on_the_first_tick():
    """sysmontick starts zeroed, like Go's pd: syscalltick 0 == 0 on the first look."""
    w = started(gomaxprocs=1)
    w.entersyscall(0)
    w.sysmon()
    assert w.sched.stats["retake"] == 1


def test_force_preempt_after_10ms():
    w = started(gomaxprocs=1)
    assert w.gosched(0) == [fx.Execute(0, 1)]  # now P0.schedtick == 1 (pd starts at 0, as in Go)
    assert w.sysmon() == []  # records schedtick and schedwhen
    t0 = w.now
    assert w.sysmon(at=t0 + forcePreemptNS - 1) == []
    out = w.sysmon(at=t0 + forcePreemptNS)
    assert out == [fx.Preempt(0, 1)] and w.sched.allgs[0].preempt
    assert w.preempted() == [0]
    assert w.sysmon() == [fx.Preempt(0, 1)]  # asked again on every tick until it yields
    out = w.gosched(0)  # G1 yields: through the global runq, and runs again
    assert out == [fx.Execute(0, 1)] and not w.sched.allgs[0].preempt
    assert w.sysmon(at=w.now + forcePreemptNS - 1) == []


def test_no_preempt_while_the_schedtick_moves():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    for _ in range(4):
        out = w.sysmon(extra_ns=6_000_000)
        assert not of(out, fx.Preempt)
        w.gosched(0)  # a new schedtick each time


# --- run queues ------------------------------------------------------------------------------------

def test_local_runq_overflow_moves_half_plus_one_to_the_global_queue():
    w = started(gomaxprocs=1, schedtrace_ms=1)
    w.newproc(0, "worker", 300)  # G2..G301, each into runnext, kicking the previous one to the tail
    s, p0 = w.sched, w.sched.allp[0]
    assert p0.runnext.goid == 301
    assert [g.goid for g in s.runq] == list(range(2, 130)) + [258]  # half of 256 + the kicked G
    assert s.runqsize == 129
    assert [g.goid for g in p0.runq] == list(range(130, 258)) + list(range(259, 301))
    assert len(p0.runq) == 170 <= _LOCAL_RUNQ_SIZE
    w.advance(2_000_000)
    (trace,) = of(w.sysmon(), fx.Trace)
    assert trace.text.endswith(" runqueue=129 [170]\n")


def test_schedule_checks_the_global_queue_every_61st_schedtick():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 300)
    s, p0 = w.sched, w.sched.allp[0]
    assert p0.schedtick == 0  # G1 came from runnext (inheritTime)
    out = w.gopark(0, "park")  # schedtick % 61 == 0 and runqsize > 0: globrunqget(p, 1)
    assert out == [fx.Execute(0, 2)] and s.runqsize == 128 and len(p0.runq) == 170
    out = w.goexit(0)
    assert out == [fx.Execute(0, 301)]  # then the local runq, runnext first


@pytest.mark.parametrize("gomaxprocs,size,maxn,want", [
    (1, 10, 0, 10), (4, 10, 0, 3), (4, 10, 1, 1), (2, 7, 0, 4), (1, 300, 0, 128), (3, 1, 0, 1), (8, 100, 5, 5),
])
def test_globrunqget_fairness(gomaxprocs, size, maxn, want):
    """n = min(runqsize, runqsize/gomaxprocs + 1), then max, then len(p.runq)/2: one G to run and
    n-1 onto the local runq, in queue order."""
    w = World(WORKER, gomaxprocs=gomaxprocs, check=False)
    s = w.sched
    p = s.allp[0]
    p.runnext = None
    gs = [G(goid=100 + i, prog="worker") for i in range(size)]
    for g in gs:
        globrunqput(s, g)
    got = globrunqget(s, p, maxn)
    assert got is gs[0]
    assert [g.goid for g in p.runq] == [g.goid for g in gs[1:want]]
    assert s.runqsize == size - want == len(s.runq)


def test_runqput_next_kicks_the_old_runnext_to_the_tail():
    w = World(WORKER, check=False)
    s, p = w.sched, w.sched.allp[0]
    a, b, c = (G(goid=i, prog="worker") for i in (10, 11, 12))
    p.runnext = None
    runqput(s, p, a, True)
    runqput(s, p, b, True)
    runqput(s, p, c, False)
    assert p.runnext is b and list(p.runq) == [a, c]
    assert all(g.status == _Grunnable for g in (a, b, c))


@pytest.mark.parametrize("name", ["syscall-storm", "spawn-burst", "locked-threads", "cgo-calls", "deadlock",
                                  "thread-exhaustion", "steady"])
def test_dry_run_of_the_built_in_scenarios(name):
    """Every built-in scenario, played in memory: the expected outcome, invariants after every step."""
    from coordinator.scenario import load
    sc = load(name)
    w = World(sc.programs, gomaxprocs=sc.gomaxprocs, maxmcount=sc.maxmcount, seed=sc.seed, compiled=True)
    w.run(max_steps=50_000)
    assert w.outcome() == sc.expect


def test_step_is_deterministic():
    def play():
        w = World({"main": [["go", "w", 20], ["wait"]], "w": [["run", 300], ["syscall", 700], ["sleep", 50]]},
                  gomaxprocs=3, seed=7).run()
        return [(t, ev["t"], ev.get("m"), tuple(out)) for t, ev, out in w.history]
    assert play() == play()


def test_events_of_an_exited_m_are_refused():
    from coordinator.runtime.core import BadEvent
    w = started(gomaxprocs=2)
    (fork,) = of(w.newproc(0, "worker", 1), fx.Fork)
    w.hello(fork.m)
    w.lock(fork.m)
    w.goexit(fork.m)
    with pytest.raises(BadEvent):
        step(w.sched, {"t": "gosched", "m": fork.m, "epoch": 1, "g": 2, "pos": {"pc": 0, "loops": [], "left": 0}},
             w.now)
