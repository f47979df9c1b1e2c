"""runtime.main's start as Go 1.16 does it (proc.go main, gcenable), cgo binaries (newextram,
startTemplateThread, checkdead's run0, no freem for Ms with their own stack), gfput/gfget and the
per-P goidcache: in the pure core, through the in-memory world."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.checkdead import checkdead
from coordinator.runtime.newproc import gfget, gfput
from coordinator.runtime.sched import G, P, Sched, _Grunnable, _Gwaiting
from tests.world import World
from tests.world_checks import cgo_hang
from tests.world_procs import pos

BARE = {"main": [["run", 1000]]}


def fork(m, forker, nextp, spinning, slot):
    return fx.Fork(m=m, forker=forker, host="local", nextp=nextp, spinning=spinning, slot=slot, epoch=1,
                   template=False)


def test_runtime_main_makes_go_s_four_ms_step_by_step():
    """GOMAXPROCS=2, a bare program: m0, sysmon (schedinit: runtime.main's newm(sysmon)), a spinning M
    from wakep at `go forcegchelper`, and a 4th from stoplockedm → handoffp when main, still locked
    to m0 by lockOSThread, blocks in gcenable's `<-c`."""
    w = World(BARE, gomaxprocs=2)
    s = w.sched
    assert s.mnext == 2 and s.sysmonm.id == 1 and s.mainStarted
    assert w.g(1).prog == "runtime.main"
    assert w.hello(0) == [fx.Execute(0, 1)]
    assert w.runtime(0, "lockOSThread") == [fx.Cont(0)]
    assert s.m0.lockedInt == 1 and s.m0.lockedg is w.g(1) and w.g(1).lockedm is s.m0
    # proc.go init: go forcegchelper() → newproc → wakep → startm(nil, spinning) → newm
    assert w.newproc(0, "runtime.forcegchelper") == [fork(2, 0, 1, True, 1), fx.Cont(0)]
    assert w.newproc(0, "runtime.bgsweep") == [fx.Cont(0)]  # nmspinning == 1: no second wakep
    assert w.newproc(0, "runtime.bgscavenge") == [fx.Cont(0)]
    assert [g.goid for g in s.allgs] == [1, 2, 3, 4]
    # <-c: gopark(chan receive) → schedule → m0 is locked → stoplockedm → handoffp(P0 has work) → newm
    assert w.runtime(0, "chanrecv", "gcenable.c") == [fork(3, 0, 0, False, 2), fx.Park(0)]
    assert w.g(1).status == _Gwaiting and w.g(1).waitreason == "chan receive"
    assert s.m0.parked == "stoplockedm" and s.nmidlelocked == 1
    assert s.mnext == 4
    assert s.stats["startm.wakep"] == 1 and s.stats["startm.handoffp"] == 1


def test_bare_program_ends_with_the_runtime_goroutines_parked():
    w = World(BARE, gomaxprocs=2).run()
    s = w.sched
    assert w.outcome() == "ok"
    assert s.mnext == 4 and s.nmfreed == 0
    assert s.m0.lockedInt == 0 and s.m0.lockedg is None  # unlockOSThread before main.main
    got = {g.goid: (g.prog, g.status, g.waitreason) for g in s.allgs if g.goid != 1}
    assert got == {2: ("runtime.forcegchelper", _Gwaiting, "force gc (idle)"),
                   3: ("runtime.bgsweep", _Gwaiting, "GC sweep wait"),
                   4: ("runtime.bgscavenge", _Gwaiting, "GC scavenge wait")}
    assert s.ngsys == 3 and s.stats["goroutines_system"] == 3
    assert s.stats["goroutines_created"] == 1 == s.stats["goroutines_completed"]
    assert s.chans["gcenable.c"].qcount == 0 and not s.chans["gcenable.c"].recvq


def test_scheddetail_shows_the_runtime_goroutines():
    w = World({"main": [["run", 3000]]}, gomaxprocs=2, schedtrace_ms=1, scheddetail=True).run()
    assert w.outcome() == "ok"
    last = w.traces[-1].splitlines()
    assert last[-3:] == ["  G2: status=4(force gc (idle)) m=-1 lockedm=-1",
                         "  G3: status=4(GC sweep wait) m=-1 lockedm=-1",
                         "  G4: status=4(GC scavenge wait) m=-1 lockedm=-1"]
    assert "  G1: status=2() m=0 lockedm=-1" in last  # main.main runs unlocked on m0
    sysmon = [ln for ln in last if ln.startswith(f"  M{w.sched.sysmonm.id}: ")]
    assert sysmon and " locks=2 " in sysmon[0]


def test_checkdead_skips_system_goroutines():
    """main parks forever: Go's deadlock, though forcegchelper, bgsweep and bgscavenge wait too; and a
    runnable system goroutine is skipped, not "checkdead: runnable g"."""
    w = World({"main": [["park"]]}, gomaxprocs=2).run()
    assert w.outcome() == "fatal: all goroutines are asleep - deadlock!"
    assert sum(1 for g in w.sched.allgs if g.status == _Gwaiting) == 4
    s = w.sched
    s.goids[3].status = _Grunnable  # as if bgsweep had been readied
    try:
        checkdead(s)
    except Exception as t:  # noqa: BLE001 - the Throw's message is the point
        assert str(getattr(t, "message", t)) == "all goroutines are asleep - deadlock!"
    else:
        raise AssertionError("checkdead returned")


def test_goexit_of_main_is_still_no_goroutines():
    w = World({"main": [["exit"]]}, gomaxprocs=2).run()
    assert w.outcome() == "fatal: no goroutines (main called runtime.Goexit) - deadlock!"


def test_main_waits_only_for_its_own_goroutines():
    """The runtime's goroutines are not main's children: a `wait` in main does not wait for them."""
    w = World({"main": [["go", "w", 2], ["wait"]], "w": [["run", 10]]}, gomaxprocs=2).run()
    assert w.outcome() == "ok"


# --- cgo binaries ----------------------------------------------------------------------------------

def test_cgo_binary_extra_m_and_template_thread_at_start():
    """A cgo op makes it a cgo binary: m0's mstart makes the extra M (M1, its dead G17 from
    sched.goidgen after G1's batch), sysmon is M2, runtime.main starts the template thread and makes
    one cgo call before main.main."""
    w = World({"main": [["cgo", 10]]}, gomaxprocs=2)
    s = w.sched
    assert s.iscgo and s.cgoHasExtraM and s.extraMCount == 1
    (extra,) = s.extram
    assert extra.id == 1 and s.sysmonm.id == 2 and extra.virtual and extra.slot == -1
    assert extra.curg.goid == 17 and extra.lockedg is extra.curg and extra.lockedInt == 1
    assert s.ngsys == 1 and s.templatem is None
    w.run()
    assert w.outcome() == "ok"
    assert s.templatem is not None and s.templatem.id == 5  # m0, extra, sysmon, wakep's, handoffp's
    assert s.mnext == 6
    assert s.ngsys == 4 and s.stats["goroutines_system"] == 4
    first_user_op = next(i for i, (_, ev, _) in enumerate(w.history) if ev.get("cgo") and ev.get("g") == 1
                         and ev["pos"]["pc"] > 9)
    tt = next(i for i, (_, ev, _) in enumerate(w.history) if ev.get("op") == "startTemplateThread")
    assert tt < first_user_op


def test_no_cgo_no_extra_m():
    s = World(BARE, gomaxprocs=2).sched
    assert not s.iscgo and s.extraMCount == 0 and not s.extram and s.sysmonm.id == 1


def test_cgo_binary_reports_no_deadlock():
    """Go's checkdead: the extra M counts as running (run0 is 0 when iscgo), so a cgo binary whose
    goroutines all block forever just hangs; the same program without cgo reports the deadlock."""
    w = World({"main": [["cgo", 10], ["park"]]}, gomaxprocs=2).run()
    assert w.outcome() == "stuck" and cgo_hang(w) == ""
    s = w.sched
    assert s.mcount() - s.nmidle - s.nmidlelocked - s.nmsys == 1  # checkdead's run: the extra M
    w2 = World({"main": [["syscall", 10], ["park"]]}, gomaxprocs=2).run()
    assert w2.outcome() == "fatal: all goroutines are asleep - deadlock!"


def test_cgo_binary_exited_ms_are_not_put_on_freem():
    """mexit(osStack): a cgo binary's Ms have the thread's own stack; they leave allm but not for
    freem, and their g0 slot is freed when the process is gone. Without cgo they wait on freem."""
    progs = {"main": [["go", "t", 2], ["run", 2000], ["wait"]], "t": [["lock"], ["cgo", 10]]}
    w = World(progs, gomaxprocs=2).run()
    s = w.sched
    assert w.outcome() == "ok"
    assert s.stats["ms_exited"] == 2 and not s.freem and not s.osstackm
    assert s.stats["stacks_freed"] == 2 and len(w.stackfrees) == 2
    progs = {"main": [["go", "t", 2], ["run", 2000], ["wait"]], "t": [["lock"], ["syscall", 10]]}
    w = World(progs, gomaxprocs=2).run()
    assert w.outcome() == "ok" and w.sched.stats["ms_exited"] == 2
    assert len(w.sched.freem) + w.sched.stats["stacks_freed"] == 2 and w.sched.freem


# --- gfput / gfget ---------------------------------------------------------------------------------

def test_gfput_trims_to_31_and_gfget_refills_from_the_global_list():
    s, p = Sched(gomaxprocs=1), P(id=0)
    for i in range(63):
        gfput(s, p, G(goid=i, prog="w"))
    assert p.gfreecnt == 63 and not s.gFree
    gfput(s, p, G(goid=63, prog="w"))  # n >= 64: move to the global list until n < 32
    assert p.gfreecnt == 31 and len(s.gFree) == 33
    while p.gFree:
        gfget(s, p)
    assert gfget(s, p) is not None  # empty: a batch of 32 comes from sched.gFree, one is taken
    assert p.gfreecnt == 31 and len(s.gFree) == 1


def test_dead_gs_are_reused():
    """64 goroutines exit on one P (local list trimmed to 31, 33 go global), then 40 more reuse the
    dead Gs (31 local, then a batch from the global list): allgs never grows past 64 + main + 3."""
    progs = {"main": [["go", "w", 64], ["wait"], ["go", "w", 40], ["wait"]], "w": [["run", 10]]}
    w = World(progs, gomaxprocs=1).run()
    s = w.sched
    assert w.outcome() == "ok"
    assert len(s.allgs) == 1 + 3 + 64
    assert s.allp[0].gfreecnt == 63 and len(s.gFree) == 1
    assert s.stats["goroutines_created"] == 105 == s.stats["goroutines_completed"]
    assert len({g.goid for g in s.allgs}) == len(s.allgs)


# --- goidcache -------------------------------------------------------------------------------------

def test_goids_come_in_batches_of_16_per_p():
    """P0's first batch is 1..16 (goroutine 1 takes the first); a goroutine created on P1 starts P1's
    batch at 17 (sched.goidgen += 16); P0 goes on from its own batch."""
    w = World({"main": [["run", 1]], "w": [["run", 1]]}, gomaxprocs=2)
    w.hello(0)
    w.newproc(0, "w")  # G2 on P0; wakep forks M2 for P1
    assert w.hello(2) == [fx.Execute(2, 2)]  # M2 steals G2 and runs it on P1
    w.newproc(2, "w")  # on P1: a new batch
    w.newproc(0, "w", 14)
    w.newproc(0, "w")  # P0's batch is used up (1..16): the next batch after P1's
    assert sorted(w.sched.goids) == [1, *range(2, 17), 17, 33]
    assert w.sched.allp[1].goidcache == 18 and w.sched.allp[1].goidcacheend == 33
    assert w.sched.goidgen == 48


def test_main_whose_m0_died_during_init_still_unlocks():
    """Not in Go (an M never dies there): m0 killed while parked in stoplockedm with runtime.main's
    internal lock; mdead unlocks G1, and its later unlockOSThread must not be badunlockosthread."""
    w = World(BARE, gomaxprocs=2)
    w.hello(0)
    w.runtime(0, "lockOSThread", at=pos(1))  # at: where runtime.main goes on from
    for pc, prog in enumerate(("runtime.forcegchelper", "runtime.bgsweep", "runtime.bgscavenge"), 2):
        w.newproc(0, prog, at=pos(pc))
    w.runtime(0, "chanrecv", "gcenable.c", at=pos(5))
    w.kill(0)
    assert w.g(1).lockedm is None and w.g(1).lostInt == 1
    w.run()
    assert w.outcome() == "ok", w.fatal
