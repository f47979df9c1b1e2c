"""A Hypothesis state machine over the pure core: random sequences of what M processes, sysmon and
the netpoll wait can do, through step(), with every invariant (coordinator/runtime/invariants.py) and the world's
agreement with the core checked after every step (tests/world.py does both on each delivery).

A Fatal ends the run only if it is a legitimate Go outcome (world_checks.legit_fatal: a true deadlock, or
thread exhaustion past maxmcount); any other Fatal, a BadEvent for an event the world believed valid,
a reply to the wrong M, a lost P/M/G or a broken counter fails the test. The machine also sends
events that do not fit the state (step must refuse them with BadEvent and change nothing) and, when
the core has them, the shell's fault paths (an M process killed or fenced, a fork redone: mdead.py).

test_random_programs_never_get_stuck plays random goroutine programs through the world's dry run:
every run must end with main returning or a legitimate Fatal, never with nothing left to do.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.runtime.core import BadEvent, step
from coordinator.runtime.sched import _Gdead, _Grunnable, _Grunning, _Gsyscall, _Gwaiting
from tests.world import World
from tests.world_checks import cgo_hang, snapshot
from tests.world_procs import PARKED, pos

PROGRAMS = {"main": [["run", 1]], "worker": [["run", 1]]}
PICK = st.integers(0, 63)


def _pick(ms: list[int], i: int) -> int:
    return sorted(ms)[i % len(ms)]


class CoreMachine(RuleBasedStateMachine):
    """Each rule is one thing that can happen next in a real run (see World.actions)."""

    @initialize(gomaxprocs=st.integers(1, 4),
                maxmcount=st.one_of(st.just(10000), st.integers(4, 12)),
                seed=st.integers(0, 2**16))
    def start(self, gomaxprocs, maxmcount, seed):
        self.w = World(PROGRAMS, gomaxprocs=gomaxprocs, maxmcount=maxmcount, seed=seed, slots=512)

    def _live(self) -> bool:
        return not self.w.finished

    # --- the processes ---------------------------------------------------------------------------

    @precondition(lambda self: self._live() and self.w.forked())
    @rule(i=PICK)
    def hello(self, i):
        self.w.hello(_pick(self.w.forked(), i))

    @precondition(lambda self: self._live() and self.w.wakeable())
    @rule(i=PICK)
    def woken(self, i):
        self.w.woken(_pick(self.w.wakeable(), i))

    @precondition(lambda self: self._live() and self.w.exited())
    @rule(i=PICK)
    def mexited(self, i):
        self.w.mexited(_pick(self.w.exited(), i))

    # --- a running goroutine ---------------------------------------------------------------------

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK, n=st.integers(1, 5))
    def newproc(self, i, n):
        self.w.newproc(_pick(self.w.running(), i), "worker", n)

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK, cgo=st.booleans())
    def entersyscall(self, i, cgo):
        self.w.entersyscall(_pick(self.w.running(), i), cgo=cgo)

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK)
    def entersyscallblock(self, i):
        self.w.entersyscallblock(_pick(self.w.running(), i))

    @precondition(lambda self: self._live() and self.w.in_syscall())
    @rule(i=PICK)
    def exitsyscall(self, i):
        self.w.exitsyscall(_pick(self.w.in_syscall(), i))

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK)
    def lock(self, i):
        self.w.lock(_pick(self.w.running(), i))

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK)
    def unlock(self, i):
        self.w.unlock(_pick(self.w.running(), i))

    @precondition(lambda self: self._live() and self.w.running())
    @rule(i=PICK, reason=st.sampled_from(["sleep", "park", "wait"]), us=st.sampled_from([0, 10, 5000, 30000]))
    def gopark(self, i, reason, us):
        self.w.gopark(_pick(self.w.running(), i), reason, us)

    @precondition(lambda self: self._live() and self.w.preempted())
    @rule(i=PICK)
    def gosched_after_preempt(self, i):
        self.w.gosched(_pick(self.w.preempted(), i))

    def _running(self, main: bool | None = None, locked: bool | None = None) -> list[int]:
        out = []
        for m in self.w.running():
            gp = self.w.g(self.w.procs[m].g)
            if main is not None and (gp.goid == 1) != main:
                continue
            if locked is not None and (gp.lockedm is not None) != locked:
                continue
            out.append(m)
        return out

    @precondition(lambda self: self._live() and self._running(main=False))
    @rule(i=PICK)
    def goexit(self, i):
        self.w.goexit(_pick(self._running(main=False), i))

    @precondition(lambda self: self._live() and self._running(main=False, locked=True))
    @rule(i=PICK)
    def goexit_locked(self, i):
        """golang/go#20395: a goroutine that exits while locked takes its M with it (m0 is wedged)."""
        m = _pick(self._running(main=False, locked=True), i)
        self.w.goexit(m)
        if not self.w.finished:
            if m == self.w.sched.m0.id:
                assert self.w.procs[m].state == "parked" and self.w.sched.m0.parked == "m0"
            else:
                assert self.w.procs[m].state == "exited"

    @precondition(lambda self: self._live() and len(self.w.history) > 20 and self._running(main=True))
    @rule()
    def main_goexit(self):
        """runtime.Goexit in main (locked: m0 is wedged, never exited)."""
        self.w.goexit(self._running(main=True)[0])

    @precondition(lambda self: self._live() and len(self.w.history) > 30 and self._running(main=True))
    @rule()
    def main_returns(self):
        self.w.goexit(self._running(main=True)[0], main_returns=True)
        assert self.w.exit_code == 0

    # --- faults (not Go): an M process dies, is fenced, or its fork is redone (coordinator/runtime/mdead.py) ----

    def _killable(self) -> list[int]:
        return list(self.w.live())

    @precondition(lambda self: self._live() and self._killable())
    @rule(i=PICK, how=st.sampled_from(["kill", "fence"]))
    def m_dies(self, i, how):
        m = _pick(self._killable(), i)
        getattr(self.w, how)(m)
        if not self.w.finished:
            assert self.w.recovered[-1].m == m and m not in self.w.sched.allm

    @precondition(lambda self: self._live() and self.w.forked())
    @rule(i=PICK)
    def refork(self, i):
        m = _pick(self.w.forked(), i)
        (fork,) = [e for e in self.w.refork(m) if type(e).__name__ == "Fork"]
        assert fork.m == m and fork.epoch == self.w.procs[m].epoch

    # --- sysmon and the netpoll wait ------------------------------------------------------------

    @rule(jump=st.sampled_from([0, 0, 0, 3_000_000, 11_000_000, 25_000_000]))
    def sysmon(self, jump):
        if self._live():  # always enabled, so that a finished run can idle out its steps
            self.w.sysmon(extra_ns=jump)

    @precondition(lambda self: self._live() and self.w.polling() is not None)
    @rule(early=st.booleans())
    def netpoll(self, early):
        """The M blocked in netpoll wakes: its timeout, or (early) before it, as after a signal."""
        if early:
            self.w.deliver({"t": "netpoll", "m": self.w.polling()})
        else:
            self.w.netpoll()

    # --- events that do not fit the state ---------------------------------------------------------

    @precondition(lambda self: self._live())
    @rule(kind=st.integers(0, 13), i=PICK)
    def bad_event(self, kind, i):
        """step() refuses an event that does not fit the state with BadEvent, touching nothing."""
        w = self.w
        procs = w.procs
        live = sorted(m for m, p in procs.items() if p.state not in ("exited", "gone"))
        m = live[i % len(live)] if live else 0
        p = procs.get(m)
        ep = p.epoch if p else 1
        g = p.g if p and p.g is not None else 1
        running = w.running()
        r = _pick(running, i) if running else None
        rg = procs[r].g if r is not None else 1
        ev = [
            {"t": "hello", "m": m, "epoch": ep, "pid": 1} if p and p.state != "forked" else {"t": "nosuch"},
            {"t": "woken", "m": m, "epoch": ep, "lat": 0.0, "slept": 0.0} if p and p.state != PARKED or p and p.wake is None
            else {"t": "woken", "m": 999, "epoch": 1},
            {"t": "exitsyscall", "m": m, "epoch": ep, "g": g} if p and p.state != "syscall"
            else {"t": "entersyscall", "m": m, "epoch": ep, "g": g, "pos": pos(), "cgo": False},
            {"t": "newproc", "m": r if r is not None else m, "epoch": ep, "g": rg, "pos": pos(),
             "prog": "nosuch", "n": 1},
            {"t": "gopark", "m": r if r is not None else m, "epoch": ep, "g": rg, "pos": pos(), "reason": "chan"},
            {"t": "gosched", "m": m, "epoch": ep + 1, "g": g, "pos": pos()},  # a stale/future epoch
            {"t": "newproc", "m": 999, "epoch": 1, "g": 1, "pos": pos(), "prog": "worker", "n": 1},
            {"t": "goexit", "m": r if r is not None else m, "epoch": ep, "g": rg + 1000, "pos": pos()},
            {"t": "mexited", "m": 999, "pid": 1, "status": 0},
            {"t": "lockosthread", "m": self.w.sched.sysmonm.id, "epoch": 1, "g": 1, "pos": pos()},
            {"t": "unlockosthread", "m": m, "epoch": ep, "g": g, "pos": pos()} if p and p.state != "running"
            else {"t": "exitsyscall", "m": m, "epoch": ep, "g": g},
            {"t": "sysmon_tick"},
            {"t": "netpoll", "m": m, "epoch": ep} if w.polling() != m else {"t": "netpoll", "m": 999},
            {"t": "sysmon_wake"} if w.sched.sysmonwait == 0 and w.sched.sysmonnote.key == 0 else {"t": "nosuch"},
        ][kind]
        before = snapshot(w.sched)
        with pytest.raises(BadEvent):
            step(w.sched, ev, w.now + 1000)
        assert snapshot(w.sched) == before, ev

    # --- after every step --------------------------------------------------------------------------

    @invariant()
    def every_goroutine_is_accounted_for(self):
        if self.w.finished:  # a Fatal may have interrupted a newproc of n goroutines
            return
        s = self.w.sched
        assert s.stats["goroutines_created"] == self.w.created
        # gfget reuses dead Gs (allgs grows only without one); every G has its own goid, from the
        # per-P goidcache batches, and sched.goids finds each
        assert len(s.allgs) <= self.w.created
        assert {g.goid: g for g in s.allgs} == s.goids
        for gp in s.allgs:
            assert gp.status in (_Grunnable, _Grunning, _Gwaiting, _Gsyscall, _Gdead), (gp.goid, gp.status)

    @invariant()
    def counters_are_sane(self):
        s = self.w.sched
        assert s.nmspinning >= 0 and s.npidle <= s.gomaxprocs and s.mcount() >= 1


# --- random programs, played by the world's dry run -------------------------------------------------

_US = st.sampled_from([0, 10, 100, 3000, 15000])


def _ops(callees: list[str], depth: int = 0):
    leaf = st.one_of(
        st.tuples(st.sampled_from(["run", "syscall", "syscallblock", "cgo", "sleep"]), _US).map(list),
        st.sampled_from([["lock"], ["unlock"], ["wait"], ["park"], ["exit"]]),
        *([st.tuples(st.just("go"), st.sampled_from(callees), st.integers(1, 3)).map(list)] if callees else []),
    )
    if depth < 1:
        leaf = st.one_of(leaf, st.tuples(st.just("repeat"), st.integers(1, 3), _ops(callees, depth + 1)).map(list))
    return st.lists(leaf, min_size=1, max_size=5)


PROGRAM_SETS = st.fixed_dictionaries({"main": _ops(["a", "b"]), "a": _ops(["b"]), "b": _ops([])})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=PROGRAM_SETS, gomaxprocs=st.integers(1, 4), seed=st.integers(0, 1000))
def test_random_programs_never_get_stuck(programs, gomaxprocs, seed):
    """Every run ends with main returning or a legitimate Fatal (the world checks that, and every
    invariant after every step); never with nothing left to do: that would be a lost wakeup, unless
    it is a cgo binary's deadlock, which Go does not report either (checkdead's extra M)."""
    w = World(programs, gomaxprocs=gomaxprocs, seed=seed).run(max_steps=20_000)
    assert w.outcome() != "stuck" or cgo_hang(w) == "", (cgo_hang(w), w.history[-5:])


CoreMachine.TestCase.settings = settings(max_examples=800, stateful_step_count=50, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestCoreMachine = CoreMachine.TestCase


def test_mdead_of_wedged_m0():
    """m0 wedged by mexit (counted in nmfreed then) and its process then killed: mdead must not count
    it again, or mcount() drops below the Ms that exist and checkdead fires while M3 has not started."""
    w = World(PROGRAMS, gomaxprocs=1)
    w.hello(0)
    w.lock(0)
    w.goexit(0)  # goroutine 1 exits locked on m0: wedged; a spinning M3 is forked for P0
    assert w.sched.m0.parked == "m0" and w.procs[3].state == "forked"
    w.kill(0)
    assert not w.finished  # M3 has not even said hello
