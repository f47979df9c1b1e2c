"""The seeded fault planner (coordinator/faults/plan.py): timed faults, forks, messages and what it
describes; pure, no processes. The fault language: test_faults.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.faults.plan import (
    RETRY_ON_EAGAIN_TRIES,
    FaultPlan,
    FaultSpec,
    ForkFault,
    MessageFault,
    parse_fault,
)
from protocol.messages import TYPES

# --- the schedule: timed faults -------------------------------------------------------------

def plan(*texts: str, seed: int = 1) -> FaultPlan:
    return FaultPlan([parse_fault(t) for t in texts], seed)


def test_recurring_is_a_ticker_from_start():
    times = [p.time_ms for p in plan("kill-m:every=10ms").schedule(45)]
    assert times == [10.0, 20.0, 30.0, 40.0]
    times = [p.time_ms for p in plan("kill-m:every=10ms,start=5ms,until=35ms").schedule(1000)]
    assert times == [15.0, 25.0]  # until is exclusive
    times = [p.time_ms for p in plan("kill-m:every=10ms,until=30ms").schedule(1000)]
    assert times == [10.0, 20.0]
    assert [p.time_ms for p in plan("kill-m:every=10ms,count=3").schedule(1e6)] == [10.0, 20.0, 30.0]
    assert [p.time_ms for p in plan("kill-m:every=0.1ms").schedule(1)][-1] == pytest.approx(1.0)


def test_schedule_includes_until_and_merges_in_time_order():
    p = plan("kill-m:every=10ms,count=3", "stop-m:at=15ms,duration=5ms,target=m:2",
             "kill-template:at=10ms,restart=false", "exit-m:at=0")
    got = [(x.time_ms, x.kind, x.index) for x in p.schedule(30)]
    assert got == [(0.0, "exit-m", 3), (10.0, "kill-m", 0), (10.0, "kill-template", 2),
                   (15.0, "stop-m", 1), (20.0, "kill-m", 0), (30.0, "kill-m", 0)]
    stop = p.schedule(30)[3]
    assert (stop.target, stop.duration_ms, stop.spec.kind) == ("m:2", 5.0, "stop-m")
    assert all(0 <= x.draw < 1 for x in p.schedule(30))
    assert p.schedule(29.9)[-1].time_ms == 20.0


def test_due_in_order_with_recurring_and_one_shot_count_and_until():
    p = plan("kill-m:every=10ms,count=3", "stop-m:at=15ms,duration=5ms", "exit-m:every=7ms,until=22ms")
    assert p.next_due_ms() == 7.0
    assert p.due(6.9) == []
    assert [(x.time_ms, x.kind) for x in p.due(15)] == [(7.0, "exit-m"), (10.0, "kill-m"),
                                                        (14.0, "exit-m"), (15.0, "stop-m")]
    assert p.due(15) == []  # never twice
    assert p.next_due_ms() == 20.0
    assert [(x.time_ms, x.kind) for x in p.due(1000)] == [(20.0, "kill-m"), (21.0, "exit-m"), (30.0, "kill-m")]
    assert p.next_due_ms() is None
    assert p.due(1e9) == []


def test_due_recurring_without_an_end():
    p = plan("kill-m:every=1s")
    assert [x.time_ms for x in p.due(3500)] == [1000.0, 2000.0, 3000.0]
    assert p.next_due_ms() == 4000.0
    assert [x.time_ms for x in p.due(1e7)][-1] == 1e7
    assert p.schedule(2500)[-1].time_ms == 2000.0  # schedule is independent of due's progress


def test_probability_zero_and_one():
    assert plan("kill-m:every=1ms,p=0").schedule(1000) == []
    p0 = plan("kill-m:every=1ms,p=0", "drop:p=0", "fork-fail:p=0")
    assert p0.next_due_ms() is None and p0.due(1e6) == []
    assert all(p0.on_message("wake", t) is None for t in range(1000))
    assert all(p0.on_fork(t) is None for t in range(1000))
    p1 = plan("kill-m:every=1ms", "drop", "fork-fail")
    assert len(p1.schedule(1000)) == 1000
    assert all(p1.on_message(t, 1.0).action == "drop" for t in sorted(TYPES))
    assert all(p1.on_fork(t).kind == "fork-fail" for t in range(100))
    half = plan("kill-m:every=1ms,p=0.5").schedule(10_000)
    assert 4500 < len(half) < 5500


def test_probability_with_count_counts_kept_occurrences():
    kept = plan("kill-m:every=1ms,p=0.3,count=5").schedule(1e6)
    assert len(kept) == 5
    unlimited = plan("kill-m:every=1ms,p=0.3").schedule(kept[-1].time_ms)
    assert [(x.time_ms, x.draw) for x in kept] == [(x.time_ms, x.draw) for x in unlimited]


def test_next_due_skips_occurrences_dropped_by_probability():
    p = plan("kill-m:every=1ms,p=0.2")
    first = p.schedule(1000)[0].time_ms
    assert p.next_due_ms() == first
    assert [x.time_ms for x in p.due(first)] == [first]


def test_next_due_with_a_tiny_probability_still_returns():
    p = plan("kill-m:every=1us,p=0.00000001")
    nxt = p.next_due_ms()
    assert nxt is not None and nxt > 0


def test_determinism_of_the_schedule():
    texts = ("kill-m:every=1ms,p=0.5", "stop-m:every=3ms,duration=1ms,target=random:idle", "exit-m:at=7ms")
    assert plan(*texts, seed=7).schedule(100) == plan(*texts, seed=7).schedule(100)
    assert plan(*texts, seed=7).schedule(100) != plan(*texts, seed=8).schedule(100)
    draws7 = [x.draw for x in plan("kill-m:every=1ms", seed=7).schedule(20)]
    draws8 = [x.draw for x in plan("kill-m:every=1ms", seed=8).schedule(20)]
    assert draws7 != draws8
    assert plan("kill-m:every=1ms", seed=-3).schedule(5) == plan("kill-m:every=1ms", seed=-3).schedule(5)


def test_other_faults_do_not_move_a_timed_fault():
    alone = plan("kill-m:every=1ms,p=0.5").schedule(100)
    with_more = plan("kill-m:every=1ms,p=0.5", "drop:p=0.5", "fork-fail:p=0.5", "exit-m:every=2ms,p=0.5")
    for t in range(50):
        with_more.on_message("wake", t)
        with_more.on_fork(t)
    assert [x for x in with_more.schedule(100) if x.index == 0] == alone


def test_pick():
    planned = plan("kill-m:at=1ms").schedule(1)[0]
    assert planned.pick([]) is None
    assert planned.pick([5, 3, 9]) == sorted([5, 3, 9])[int(planned.draw * 3)]
    edge = dataclasses.replace(planned, draw=0.9999999999999999)
    assert edge.pick([1, 2, 3]) == 3


# --- forks ------------------------------------------------------------------------------------

def test_fork_fail_without_retry_gives_up():
    ff = plan("fork-fail").on_fork(3.0)
    assert isinstance(ff, ForkFault)
    assert (ff.kind, ff.retry, ff.failures, ff.gives_up, ff.sleeps_ms, ff.time_ms) == (
        "fork-fail", False, 1, True, (), 3.0)


def test_fork_fail_with_retry_is_retry_on_eagain():
    always = plan("fork-fail:retry=true").on_fork(0)
    assert (always.retry, always.failures, always.gives_up) == (True, RETRY_ON_EAGAIN_TRIES, True)
    assert always.sleeps_ms == tuple(float(t + 1) for t in range(20))
    assert sum(always.sleeps_ms) == 210.0
    p = plan("fork-fail:retry=true,p=0.3")
    outcomes = [p.on_fork(t) for t in range(3000)]
    hits = [o for o in outcomes if o is not None]
    assert 700 < len(hits) < 1100
    assert all(1 <= o.failures < RETRY_ON_EAGAIN_TRIES and not o.gives_up for o in hits)
    assert any(o.failures > 1 for o in hits)
    assert hits[0].sleeps_ms == tuple(float(t + 1) for t in range(hits[0].failures))


def test_slow_fork_window_and_count():
    p = plan("slow-fork:duration=3ms,start=2ms,until=5ms,count=2")
    got = [p.on_fork(t) for t in (0, 1, 2, 3, 4, 5)]
    assert [g and (g.kind, g.delay_ms, g.time_ms) for g in got] == [
        None, None, ("slow-fork", 3.0, 2), ("slow-fork", 3.0, 3), None, None]
    assert not got[2].gives_up


def test_first_matching_fork_fault_applies():
    p = plan("slow-fork:duration=1ms,until=2ms", "fork-fail")
    assert p.on_fork(1).kind == "slow-fork"
    assert p.on_fork(2).kind == "fork-fail"
    assert plan().on_fork(1) is None and not plan().has_fork_faults


def sequence(p: FaultPlan, calls: list) -> list:
    out = []
    for call in calls:
        if call[0] == "fork":
            out.append(p.on_fork(call[1]))
        else:
            out.append(p.on_message(call[1], call[2]))
    return out


CALLS = [("msg", t, float(i)) for i, t in enumerate(["wake", "park", "hello", "execute", "cont"] * 40)] + [
    ("fork", float(i)) for i in range(100)]
MIXED = ("fork-fail:p=0.3,retry=true", "slow-fork:p=0.3,duration=2ms", "drop:p=0.2,type=wake+park",
         "delay:p=0.3,duration=5ms", "duplicate:p=0.1,type=hello", "reorder:p=0.2,type=execute,count=3")


def test_decisions_are_deterministic():
    a = sequence(plan(*MIXED, seed=11), CALLS)
    b = sequence(plan(*MIXED, seed=11), CALLS)
    assert a == b
    assert any(a) and not all(a)
    assert a != sequence(plan(*MIXED, seed=12), CALLS)


# --- messages ---------------------------------------------------------------------------------

def test_message_types_window_and_count():
    p = plan("drop:type=wake+park,start=1ms,until=3ms,count=3")
    assert p.has_message_faults
    assert p.on_message("wake", 0.5) is None
    assert p.on_message("execute", 1) is None
    got = p.on_message("wake", 1)
    assert got == MessageFault(0, "drop", "wake", 1, 0.0, p.specs[0])
    assert p.on_message("park", 2).action == "drop"
    assert p.on_message("wake", 3) is None  # until is exclusive
    assert p.on_message("park", 2.5).action == "drop"
    assert p.on_message("park", 2.6) is None  # count reached
    assert plan("drop:type=*").on_message("not-a-type", 1) is None


def test_every_type_for_star():
    p = plan("duplicate:type=*")
    assert {p.on_message(t, 0).msg_type for t in TYPES} == set(TYPES)


def test_delay_is_uniform_up_to_duration():
    p = plan("delay:duration=4ms")
    delays = [p.on_message("wake", t).delay_ms for t in range(2000)]
    assert all(0 <= d < 4 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 3.9
    assert 1.8 < sum(delays) / len(delays) < 2.2


def test_first_matching_message_fault_applies_and_reorder():
    p = plan("reorder:type=execute,count=1", "duplicate:type=execute")
    assert [p.on_message("execute", t).action for t in range(3)] == ["reorder", "duplicate", "duplicate"]


def test_no_faults_costs_nothing():
    p = FaultPlan((), seed=1)
    assert not p and not p.has_message_faults and not p.has_fork_faults and not p.has_timed
    assert p.on_message("wake", 1.0) is None
    assert p.on_fork(1.0) is None
    assert p.next_due_ms() is None and p.due(1e9) == [] and p.schedule(1e9) == []
    timed_only = plan("kill-m:every=1ms")
    assert timed_only.on_message("wake", 1.0) is None and not timed_only.has_message_faults


# --- describe ---------------------------------------------------------------------------------

def test_describe_is_json_able():
    p = plan("stop-m:at=1ms,duration=2ms,target=m:3", "kill-template:at=2ms,restart=false",
             "fork-fail:retry=true,p=0.5", "delay:duration=1ms,type=wake")
    stop, tmpl = p.schedule(10)
    record = p.describe(stop)
    assert record == {"time_ms": 1.0, "kind": "stop-m", "target": "m:3", "duration_ms": 2.0, "index": 0,
                      "draw": stop.draw, "fault": "stop-m:at=1ms,duration=2ms,target=m:3"}
    assert p.describe(tmpl)["restart"] is False and p.describe(tmpl)["target"] == "template"
    fork = next(f for f in (p.on_fork(t) for t in range(100)) if f is not None)
    assert p.describe(fork)["kind"] == "fork-fail" and p.describe(fork)["retry"] is True
    msg = p.on_message("wake", 4.0)
    assert p.describe(msg) == {"time_ms": 4.0, "kind": "delay", "target": "wake", "delay_ms": msg.delay_ms,
                               "index": 3, "fault": "delay:type=wake,duration=1ms"}
    for event in (stop, tmpl, fork, msg):
        assert json.loads(json.dumps(p.describe(event))) == p.describe(event)
    assert p.describe(stop) is not p.describe(stop)


# --- property: due() at increasing times is schedule(until) ---------------------------------

durations = st.sampled_from([0.5, 1.0, 2.5, 3.0, 7.0, 10.0])
timed_specs = st.builds(
    lambda kind, once, at, every, start, until, p, count, target: FaultSpec(
        kind=kind, at_ms=at if once else None, every_ms=None if once else every,
        start_ms=0.0 if once else start, until_ms=None if once or until is None else start + until,
        probability=p, count=None if once else count, target=target if kind != "kill-template" else None,
        duration_ms=2.0 if kind == "stop-m" else None),
    kind=st.sampled_from(["kill-m", "stop-m", "exit-m", "kill-template"]),
    once=st.booleans(),
    at=st.sampled_from([0.0, 1.0, 2.5, 10.0, 33.3, 99.0]),
    every=durations,
    start=st.sampled_from([0.0, 1.0, 5.0]),
    until=st.one_of(st.none(), st.sampled_from([1.0, 20.0, 50.0])),
    p=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    count=st.one_of(st.none(), st.integers(1, 5)),
    target=st.sampled_from(["random", "random:idle", "m:1"]),
)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(timed_specs, max_size=5), seed=st.integers(-2**63, 2**63 - 1),
       steps=st.lists(st.floats(0, 20, allow_nan=False), max_size=15), until=st.floats(0, 100, allow_nan=False))
def test_due_at_increasing_times_is_the_schedule(specs, seed, steps, until):
    p = FaultPlan(specs, seed)
    expected = p.schedule(until)
    got, now = [], 0.0
    for step in steps:
        now = min(now + step, until)
        nxt = p.next_due_ms()
        batch = p.due(now)
        assert all(x.time_ms <= now for x in batch)
        if batch:
            assert nxt is not None and nxt <= batch[0].time_ms
        got += batch
    got += p.due(until)
    assert got == expected
    assert [x.time_ms for x in got] == sorted(x.time_ms for x in got)
    assert FaultPlan(specs, seed).schedule(until) == expected
    nxt = p.next_due_ms()
    assert nxt is None or nxt > until
