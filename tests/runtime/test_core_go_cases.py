"""Go's own cases for Ms (crash_test.go, proc_test.go, the issues the 1.16 code fixed): thread
exhaustion, checkdead, locked Ms and the template thread, notes, stopm/startm throws and freem,
played through step() by the in-memory world (tests/world.py), which checks every invariant after
every step. Sysmon and the run queues: test_core_go_cases_sched.py."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.note import notewakeup
from coordinator.runtime.proc import mPark, pidleput
from coordinator.runtime.sched import G
from protocol.throw import Throw
from tests.steps import of, started, warm
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
