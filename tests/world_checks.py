"""What the world (tests/world.py) checks after every step: the core's invariants, its processes and
the core's records agree, a Fatal is a legitimate Go outcome; and the core's state as plain values."""
from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.runtime import invariants
from coordinator.runtime.sched import _Gdead, _Grunning, _Gsyscall, isSystemGoroutine
from tests.world_procs import EXITED, FORKED, GONE, PARKED, RUNNING, SYSCALL, WorldError

#: Fatal messages that are legitimate Go outcomes (each still checked by `legit_fatal`)
LEGIT_FATALS = ("all goroutines are asleep - deadlock!", "no goroutines (main called runtime.Goexit) - deadlock!",
                "thread exhaustion")

if TYPE_CHECKING:
    from tests.world import World


class Checks:
    """World's checks of itself against the core."""

    def _check(self) -> None:
        if not self.check:
            return
        if self.fatal is not None:
            why = legit_fatal(self)
            if why:
                raise WorldError(f"world: fatal {self.fatal.message!r} is not legitimate here: {why}")
            return
        if self.exit_code is not None:
            return
        errs = invariants.check(self.sched) + self.agreement()
        if errs:
            raise WorldError("invariants broken after " + repr(self.history[-1][1]) + ":\n  " + "\n  ".join(errs))

    def agreement(self) -> list[str]:
        """Where the world's view of the M processes and the core's records differ."""
        errs = []
        s = self.sched
        freem = {x.id: x for x in (*s.freem, *s.osstackm)}
        freed = {e.m for e in self.stackfrees}
        for m, p in self.procs.items():
            mp = s.allm.get(m)
            if p.state in (EXITED, GONE):
                if mp is not None:
                    errs.append(f"world: M{m} exited but is in allm")
                if m not in freem and m not in freed:
                    errs.append(f"world: M{m} left freem but its g0 stack (slot {p.slot}) was never freed")
                fm = freem.get(m)
                if fm is not None and fm in s.osstackm:
                    if p.state == GONE:
                        errs.append(f"world: M{m} (cgo, its own stack) is gone but still waits for it")
                elif fm is not None and (fm.freeWait == 0) != (p.state == GONE):
                    errs.append(f"world: M{m} is {p.state} but its freeWait={fm.freeWait}")
                continue
            if mp is None:
                errs.append(f"world: M{m} is {p.state} but not in allm")
                continue
            if p.state == FORKED:
                if mp.started:
                    errs.append(f"world: M{m} has not said hello but the core has it started")
            elif p.state in (RUNNING, SYSCALL):
                gp = mp.curg
                want = _Grunning if p.state == RUNNING else _Gsyscall
                if mp.blocked or gp is None or gp.goid != p.g or gp.status != want:
                    errs.append(f"world: M{m} runs G{p.g} ({p.state}) but the core has curg="
                                f"{gp and gp.goid} status={gp and gp.status} blocked={mp.blocked}")
            elif p.state == PARKED:
                if not mp.blocked:
                    errs.append(f"world: M{m} sleeps but the core has it not blocked")
                if (p.wake is not None) != (mp.park.key != 0):
                    errs.append(f"world: M{m} has wake={p.wake} but park.key={mp.park.key}")
                if p.wake is not None and mp.parked == "netpoll":
                    if p.wake != -1 or mp.nextp is not None:
                        errs.append(f"world: M{m} in netpoll woken with P{p.wake}, nextp={mp.nextp and mp.nextp.id}")
                elif p.wake is not None and (mp.nextp is None or mp.nextp.id != p.wake) and mp.parked != "m0":
                    errs.append(f"world: M{m} woken with P{p.wake} but nextp={mp.nextp and mp.nextp.id}")
        for m, mp in s.allm.items():
            if not mp.virtual and m not in self.procs:
                errs.append(f"world: M{m} in allm but never forked")
        return errs


def legit_fatal(w: World) -> str:
    """Why the world's Fatal is NOT a legitimate Go outcome ("" when it is one)."""
    f, s = w.fatal, w.sched
    if f.message not in LEGIT_FATALS:
        return "not a Go outcome of a correct scheduler"
    if f.message == "thread exhaustion":
        if s.mcount() <= s.maxmcount:
            return f"mcount()={s.mcount()} is within maxmcount={s.maxmcount}"
        if f.lines != (f"runtime: program exceeds {s.maxmcount}-thread limit", "fatal error: thread exhaustion"):
            return f"lines {f.lines}"
        return ""
    # A deadlock: no goroutine can run again, and no M is running or about to.
    if any(p.timers for p in s.allp) and f.message.startswith("all goroutines"):
        return "timers are pending"
    users = [gp for gp in s.allgs if not isSystemGoroutine(gp)]  # checkdead skips the runtime's
    for gp in users:
        if gp.status not in (_Gdead, 4):
            return f"G{gp.goid} has status {gp.status}"
    waiting = sum(gp.status == 4 for gp in users)
    if f.message.startswith("no goroutines") and waiting:
        return f"{waiting} goroutines are waiting"
    if f.message.startswith("all goroutines") and not waiting:
        return "no goroutine is waiting"
    busy = [m for m, p in w.procs.items() if p.state in (FORKED, RUNNING, SYSCALL) or p.wake is not None]
    if busy:
        return f"Ms {busy} are still running or about to"
    return ""


def cgo_hang(w: World) -> str:
    """Why the world, stuck with nothing left to do, is NOT the deadlock of a cgo binary that Go's
    checkdead does not report (its extra M counts as running); "" when it is exactly that."""
    s = w.sched
    if not s.iscgo or s.extraMCount == 0:
        return "not a cgo binary with an extra M"
    if any(p.timers for p in s.allp):
        return "timers are pending"
    for gp in s.allgs:
        if not isSystemGoroutine(gp) and gp.status not in (_Gdead, 4):
            return f"G{gp.goid} has status {gp.status}"
    busy = [m for m, p in w.procs.items() if p.state in (FORKED, RUNNING, SYSCALL) or p.wake is not None]
    if busy:
        return f"Ms {busy} are still running or about to"
    if s.mcount() - s.nmidle - s.nmidlelocked - s.nmsys != s.extraMCount:
        return "checkdead's run counts more than the extra M"
    return ""


def snapshot(s) -> tuple:
    """Everything step() may change, as plain values: equal snapshots mean an untouched state."""
    def gid(g):
        return None if g is None else g.goid

    def pid_(p):
        return None if p is None else p.id

    def mid(m):
        return None if m is None else m.id
    ms = tuple((m.id, pid_(m.p), pid_(m.nextp), pid_(m.oldp), m.spinning, m.blocked, gid(m.lockedg), m.lockedExt,
                m.lockedInt, m.incgo, gid(m.curg), m.park.key, m.freeWait, m.syscalltick, m.slot, m.started,
                m.parked, m.resume, m.wasSpinning, m.exited, m.pid, m.epoch) for m in (*s.allm.values(), *s.freem))
    ps = tuple((p.id, p.status, mid(p.m), tuple(g.goid for g in p.runq), gid(p.runnext), p.schedtick,
                p.syscalltick, tuple(g.goid for g in p.gFree), p.goidcache, p.goidcacheend,
                tuple(vars(p.sysmontick).values())) for p in s.allp)
    gs = tuple((g.goid, g.prog, g.status, g.waitreason, mid(g.m), mid(g.lockedm), g.pc, tuple(g.loops), g.left,
                g.live_children, g.preempt, g.sysexit0) for g in s.allgs)
    counters = (s.mnext, s.nmfreed, s.nmsys, s.nmidlelocked, s.nmidle, s.npidle, s.nmspinning, s.runqsize,
                tuple(m.id for m in s.midle), tuple(p.id for p in s.pidle), tuple(g.goid for g in s.runq),
                s.sysmonwait, s.sysmon_idle, s.sysmon_delay, s.lasttrace, s.starttime, s.now, s.goidgen,
                tuple((p.id, w, q, g.goid) for p in s.allp for w, q, g in p.timers), s.newmHandoff.haveTemplateThread,
                s.lastpoll, s.pollUntil, s.netpollInited, s.netpollWakeSig, mid(s.pollm), s.sysmonnote.key,
                s.newmHandoff.waiting, s.newmHandoff.wake.key, tuple(sorted(s.stats.items())),
                tuple((h, tuple(sorted(v))) for h, v in s.stackfree_slots.items()), s.exit_code,
                s.rng.getstate(), s.ngsys, tuple(g.goid for g in s.gFree), tuple(s.goids),
                tuple((n, c.qcount, tuple(g.goid for g in c.recvq), tuple(g.goid for g in c.sendq))
                      for n, c in s.chans.items()), tuple(m.id for m in s.osstackm))
    return ms, ps, gs, counters
