"""The loop's incremental invariant checker (coordinator/runtime/invariants.py: check_touched, Checker) against
the full check(): on random programs it raises no false alarm where check() finds nothing, and a
record of a touched M (or a global counter) corrupted on purpose is found by both; what check_touched
cannot see (an untouched record) the Checker's periodic full check and its final check find."""
from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coordinator.runtime import checker as incremental
from coordinator.runtime import invariants
from coordinator.runtime.sched import _Gwaiting, _Psyscall
from coordinator.shell.loop import touched_ms
from tests.world import World

from .test_core_machine import PROGRAM_SETS

CORRUPTIONS = ("spinning", "blocked", "slot", "p", "curg.m", "park.key", "nmidle", "npidle", "runqsize",
               "nmfreed", "nmidlelocked")


def corrupt(sched, mp, how: str) -> bool:
    """Break one fact of mp (a touched M) or a global counter; False when it does not apply to mp."""
    if how == "spinning":
        mp.spinning = not mp.spinning
    elif how == "blocked":
        mp.blocked = not mp.blocked
    elif how == "slot":
        mp.slot = -1
    elif how == "p":
        if mp.p is None:
            return False
        mp.p = None
    elif how == "curg.m":
        if mp.curg is None:
            return False
        mp.curg.m = None
    elif how == "park.key":
        if mp.blocked or not mp.started:
            return False
        mp.park.key = 1
    elif how == "nmidlelocked":
        sched.nmidlelocked -= 1 + sched.nmidlelocked  # negative
    else:
        setattr(sched, how, getattr(sched, how) + 1)
    return True


class Corrupted(Exception):
    """Ends the run at once: the core must not go on from a state broken on purpose."""


class Incremental(World):
    """A world that, after every step the full check passes, also runs check_touched on the Ms the
    step touched (as the loop computes them), with a Tally synced once at the first step and kept
    from the touched Ms alone, and, at step `corrupt_at`, corrupts one of them."""
    corrupt_at: int = 10**9  # set after construction
    how: str = ""
    steps: int = 0
    found: tuple | None = None  # (full, incremental) after the corruption
    tally: incremental.Tally | None = None

    def _check(self) -> None:
        super()._check()  # the full check (and the world's agreement): must pass
        if self.finished or self.found is not None:
            return
        if self.tally is None:
            self.tally = incremental.Tally()
            assert self.tally.full_check(self.sched) == []
        _, ev, effects = self.history[-1]
        touched = touched_ms(ev, effects)
        assert incremental.check_touched(self.sched, touched, self.tally) == [], "false alarm of check_touched"
        self.steps += 1
        if self.steps < self.corrupt_at:
            return
        ms = [self.sched.allm[m] for m in sorted(touched) if m in self.sched.allm and not self.sched.allm[m].virtual]
        for mp in ms:
            if corrupt(self.sched, mp, self.how):
                self.found = (invariants.check(self.sched), incremental.check_touched(self.sched, touched, self.tally))
                raise Corrupted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=PROGRAM_SETS, gomaxprocs=st.integers(1, 4), seed=st.integers(0, 1000),
       corrupt_at=st.integers(1, 40), how=st.sampled_from(CORRUPTIONS))
# Found by Hypothesis: an M woken spinning from stopm, its flag flipped, is a legal M on its own;
# only the count of spinning Ms (the Tally against nmspinning) shows it.
@example(programs={"main": [["cgo", 100]], "a": [["lock"]], "b": [["lock"]]}, gomaxprocs=1, seed=0,
         corrupt_at=28, how="spinning")
def test_incremental_and_full_find_the_same_corruption(programs, gomaxprocs, seed, corrupt_at, how):
    w = Incremental(programs, gomaxprocs=gomaxprocs, seed=seed)
    w.corrupt_at, w.how = corrupt_at, how
    try:
        w.run(max_steps=300)
    except Corrupted:
        pass
    if w.found is None:
        return  # the run ended first, or no touched M to which this corruption applies
    full, incr = w.found
    assert full, f"check() missed {how}"
    assert incr, f"check_touched missed {how} (full check: {full})"
    assert set(incr) & set(full), (incr, full)


def _busy_world() -> World:
    w = World({"main": [["go", "w", 3], ["run", 5000]], "w": [["syscall", 5000]]}, gomaxprocs=2)
    w.run(max_steps=40)
    assert not w.finished
    return w


def test_an_untouched_record_is_found_by_the_periodic_full_check():
    """A P corrupted where no step looks (no M of the step holds it): check_touched cannot see it, the
    Checker's next full check does, within its period, and so does its final check."""
    w = _busy_world()
    s = w.sched
    checker = incremental.Checker(min_period=8)
    assert checker.after_step(s, set()) == []  # step 1 runs the full check
    idle = next(p for p in s.allp if p in s.pidle) if s.pidle else s.allp[-1]
    idle.status = _Psyscall  # corrupt: nobody's syscall
    assert incremental.check_touched(s, set()) == []
    period = checker.full_at - checker.steps
    found = [checker.after_step(s, set()) for _ in range(period)]
    assert not any(found[:-1]) and any(f"P{idle.id}: " in x for x in found[-1]), found[-1]
    assert checker.final(s)


def test_a_goroutine_corrupted_off_every_m_is_found_at_the_end():
    w = _busy_world()
    s = w.sched
    checker = incremental.Checker()
    assert checker.after_step(s, set()) == []
    gp = s.allgs[-1]
    gp.status, gp.waitreason = _Gwaiting, ""  # corrupt: waiting for nothing
    assert all(checker.after_step(s, set()) == [] for _ in range(10))
    assert any(f"G{gp.goid}:" in line for line in checker.final(s))


def test_the_period_grows_with_the_records():
    """So that a full check's cost per step stays flat as Ms and goroutines are made."""
    w = _busy_world()
    s = w.sched
    checker = incremental.Checker(min_period=4)
    checker.final(s)
    assert checker.full_at - checker.steps == len(s.allm) + len(s.allp) + len(s.allgs) // 4 > 4
    assert incremental.Checker(min_period=1000).final(s) is not None
