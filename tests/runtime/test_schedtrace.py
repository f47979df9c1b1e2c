"""GODEBUG=schedtrace=X[,scheddetail=1] output (Go 1.16's schedtrace), character for character, from a
small state built through step() by the in-memory world."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from tests.world import World

PROGRAMS = {"main": [["run", 1]], "worker": [["run", 1]]}

FIRST_PLAIN = "SCHED 0ms: gomaxprocs=3 idleprocs=2 threads=2 spinningthreads=0 idlethreads=0 runqueue=0 [0 0 0]\n"

FIRST_DETAIL = (
    "SCHED 0ms: gomaxprocs=3 idleprocs=2 threads=2 spinningthreads=0 idlethreads=0 runqueue=0"
    " gcwaiting=0 nmidlelocked=0 stopwait=0 sysmonwait=0\n"
    "  P0: status=1 schedtick=0 syscalltick=0 m=0 runqsize=0 gfreecnt=0 timerslen=0\n"
    "  P1: status=0 schedtick=0 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=0\n"
    "  P2: status=0 schedtick=0 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=0\n"
    "  M1: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=2 dying=0 spinning=false blocked=false lockedg=-1\n"
    "  M0: p=0 curg=1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=false lockedg=-1\n"
    "  G1: status=2() m=0 lockedm=-1\n"
)

SECOND_PLAIN = "SCHED 4ms: gomaxprocs=3 idleprocs=1 threads=5 spinningthreads=1 idlethreads=0 runqueue=1 [1 0 0]\n"

# P0 in a syscall (status 2, no M) with G5 on its runq and G6 on the global one; P1 idle; P2 in transit
# to M3, which has not started yet (counted in threads= and, as mspinning, in spinningthreads=);
# M4 is the template thread (asleep in notesleep: blocked=true); M2 sleeps in stoplockedm with its
# locked G2; M1 is sysmon (locks=2: it prints holding sched.sysmonlock and sched.lock). G4 is dead;
# G1 sleeps (its timer is on P0's heap: timerslen=1); G2 waits in select{}. (By hand: runtime.main's
# own goroutines are not started here.)
SECOND_DETAIL = (
    "SCHED 4ms: gomaxprocs=3 idleprocs=1 threads=5 spinningthreads=1 idlethreads=0 runqueue=1"
    " gcwaiting=0 nmidlelocked=1 stopwait=0 sysmonwait=0\n"
    "  P0: status=2 schedtick=2 syscalltick=1 m=-1 runqsize=1 gfreecnt=1 timerslen=1\n"
    "  P1: status=0 schedtick=1 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=0\n"
    "  P2: status=0 schedtick=0 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=0\n"
    "  M4: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=true lockedg=-1\n"
    "  M3: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=false lockedg=-1\n"
    "  M2: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=true lockedg=2\n"
    "  M1: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=2 dying=0 spinning=false blocked=false lockedg=-1\n"
    "  M0: p=-1 curg=3 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=false lockedg=-1\n"
    "  G1: status=4(sleep) m=-1 lockedm=-1\n"
    "  G2: status=4(select (no cases)) m=-1 lockedm=2\n"
    "  G3: status=3() m=0 lockedm=-1\n"
    "  G4: status=6() m=-1 lockedm=-1\n"
    "  G5: status=1() m=-1 lockedm=-1\n"
    "  G6: status=1() m=-1 lockedm=-1\n"
)


def traces(effects) -> list[str]:
    return [e.text for e in effects if isinstance(e, fx.Trace)]


def build(detail: bool) -> tuple[str, str]:
    """Returns the first and second traces; asserts every reply on the way."""
    w = World(PROGRAMS, gomaxprocs=3, schedtrace_ms=3, scheddetail=detail)
    assert w.hello(0) == [fx.Execute(0, 1)]
    (first,) = traces(w.sysmon(at=3_000_000))  # lasttrace + 3ms <= now: starttime is now
    assert w.newproc(0, "worker", 3) == [
        fx.Fork(m=2, forker=0, host="local", nextp=1, spinning=True, slot=1, epoch=1, template=False), fx.Cont(0)]
    assert w.hello(2) == [  # M2 spins, steals G2; resetspinning → wakep → M3 for P2
        fx.Fork(m=3, forker=2, host="local", nextp=2, spinning=True, slot=2, epoch=1, template=False),
        fx.Execute(2, 2)]
    assert w.lock(2) == [fx.Cont(2)]  # the first LockOSThread: the template thread is M4
    assert w.gopark(2, "park") == [fx.Park(2)]  # stoplockedm: P1 goes idle, M2 sleeps with G2
    assert w.gopark(0, "sleep", 50_000) == [fx.Execute(0, 4)]  # runnext G4 (inheritTime)
    assert w.newproc(0, "worker", 2) == [fx.Cont(0)]  # G5, G6: runnext G6, runq [G3 G5]
    assert w.goexit(0) == [fx.Execute(0, 6)]  # G4 dead (gfput: gfreecnt=1)
    assert w.gosched(0) == [fx.Execute(0, 6)]  # schedtick 0 % 61 == 0: back from the global runq
    assert w.gosched(0) == [fx.Execute(0, 3)]  # G6 stays on the global runq; schedtick=2
    assert w.entersyscall(0) == [fx.Cont(0)]
    assert w.exitsyscall(0) == [fx.Cont(0)]  # syscalltick=1
    assert w.entersyscall(0) == [fx.Cont(0)]
    out = w.sysmon(at=7_500_000)  # 4.5ms after the first trace; sees P0's syscall for the first time
    assert [e for e in out if not isinstance(e, fx.Trace)] == []
    (second,) = traces(out)
    return first, second


def test_plain_schedtrace():
    first, second = build(False)
    assert first == FIRST_PLAIN
    assert second == SECOND_PLAIN


def test_scheddetail():
    first, second = build(True)
    assert first == FIRST_DETAIL
    assert second == SECOND_DETAIL


def test_schedtrace_every_x_ms_only():
    """The first sysmon tick traces (Go: lasttrace 0 against a large nanotime), then every X ms."""
    w = World(PROGRAMS, gomaxprocs=1, schedtrace_ms=2)
    w.hello(0)
    assert traces(w.sysmon(at=1_000_000)) == [
        "SCHED 0ms: gomaxprocs=1 idleprocs=0 threads=2 spinningthreads=0 idlethreads=0 runqueue=0 [0]\n"]
    assert traces(w.sysmon(at=2_999_999)) == []
    assert traces(w.sysmon(at=3_000_000)) == [
        "SCHED 2ms: gomaxprocs=1 idleprocs=0 threads=2 spinningthreads=0 idlethreads=0 runqueue=0 [0]\n"]
    assert traces(w.sysmon(at=4_999_999)) == []
    assert traces(w.sysmon(at=5_500_000)) == [
        "SCHED 4ms: gomaxprocs=1 idleprocs=0 threads=2 spinningthreads=0 idlethreads=0 runqueue=0 [0]\n"]


def test_schedtrace_keeps_sysmon_out_of_deep_sleep():
    """With schedtrace set, sysmon never deep-sleeps, even with every P idle. m0 waits for main's
    timer blocked in netpoll: not an idle thread (idlethreads=0), as in Go."""
    w = World({"main": [["sleep", 1]]}, gomaxprocs=1, schedtrace_ms=1)
    w.hello(0)
    w.gopark(0, "sleep", 100_000)
    assert w.sched.npidle == 1 and w.sched.pollm is w.sched.m0 and w.sched.lastpoll == 0
    out = w.sysmon(at=1_000_000)
    assert out is not None and not w.sysmon_asleep
    assert traces(out) == [
        "SCHED 0ms: gomaxprocs=1 idleprocs=1 threads=2 spinningthreads=0 idlethreads=0 runqueue=0 [0]\n"]


@pytest.mark.parametrize("detail", [False, True])
def test_exited_and_wedged_ms(detail):
    """An exited M leaves allm (and threads=); a wedged m0 stays listed but no longer counts."""
    w = World(PROGRAMS, gomaxprocs=2, schedtrace_ms=1, scheddetail=detail)
    w.hello(0)
    w.newproc(0, "worker", 1)
    w.hello(2)
    w.lock(2)
    out = w.goexit(2)  # M2 exits; its P goes to a new spinning M (M4) made by the template
    assert fx.Exit(2) in out
    w.lock(0)
    w.goexit(0)  # goroutine 1 exits locked on m0: wedged
    (text,) = traces(w.sysmon(at=1_000_000))
    head = "SCHED 0ms: gomaxprocs=2 idleprocs=1 threads=3 spinningthreads=1 idlethreads=0 runqueue=0"
    if not detail:
        assert text == head + " [0 0]\n"
        return
    assert text == (
        head + " gcwaiting=0 nmidlelocked=0 stopwait=0 sysmonwait=0\n"
        "  P0: status=0 schedtick=0 syscalltick=0 m=-1 runqsize=0 gfreecnt=1 timerslen=0\n"
        "  P1: status=0 schedtick=1 syscalltick=0 m=-1 runqsize=0 gfreecnt=1 timerslen=0\n"
        "  M4: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=false lockedg=-1\n"
        "  M3: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=true lockedg=-1\n"
        "  M1: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=2 dying=0 spinning=false blocked=false lockedg=-1\n"
        "  M0: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false blocked=true lockedg=-1\n"
        "  G1: status=6() m=-1 lockedm=-1\n"
        "  G2: status=6() m=-1 lockedm=-1\n"
    )
