"""The op stepper (protocol/stepper.py): the request each op makes, in wire order, and where it goes on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from protocol.messages import CATALOGUE, position
from protocol.ops import RUNTIME_OPS, TABLE, compile_program
from protocol.stepper import EXITSYSCALL, SYSCALL_ENTRIES, next_step
from tests.protocol.test_ops import _programs, expand


def fields(step) -> list:
    """The request's fields after g, in the order an M sends them."""
    return list(step.request.fields.items())


@pytest.mark.parametrize("op, t, extra, frame, block_us", [
    (["syscall", 7], "entersyscall", [("cgo", False)], "runtime.entersyscall", 7),
    (["cgo", 7], "entersyscall", [("cgo", True)], "runtime.entersyscall", 7),
    (["syscallblock", 7], "entersyscallblock", [], "runtime.entersyscallblock", 7),
    (["go", "w", 3], "newproc", [("prog", "w"), ("n", 3)], "runtime.newproc", None),
    (["lock"], "lockosthread", [], "", None),
    (["unlock"], "unlockosthread", [], "", None),
    (["sleep", 9], "gopark", [("reason", "sleep"), ("us", 9)], "runtime.park_m", None),
    (["park"], "gopark", [("reason", "park"), ("us", 0)], "runtime.park_m", None),
    (["wait"], "gopark", [("reason", "wait"), ("us", 0)], "runtime.park_m", None),
])
def test_each_op_makes_its_request_and_goes_on_after_it(op, t, extra, frame, block_us):
    code = [["run", 1], op, ["run", 2]]
    step = next_step(code, 1, [])
    assert step.request.t == t and step.request.frame == frame
    assert fields(step) == [("pos", position(2, [], 0))] + extra
    assert (step.run_us, step.block_us, step.ends) == (0, block_us, False)
    assert (step.pc, step.next_pc) == (1, 2)


def test_run_computes_and_yields_at_its_own_pc_when_preempted():
    code = compile_program("main", [["repeat", 2, [["run", 50]]]])
    step = next_step(code, 0, [])
    assert (step.request, step.run_us, step.pc, step.loops, step.next_pc, step.next_loops) == (None, 50, 1, [2], 1, [1])
    assert next_step(code, 1, [2], left=8).run_us == 8  # the µs left of a preempted run
    gosched = step.preempted(8)
    assert (gosched.t, gosched.frame, gosched.fields) == ("gosched", "runtime.gopreempt_m", {"pos": position(1, [2], 8)})


def test_exit_and_the_end_are_goexit_at_their_own_position():
    code = [["exit"], ["run", 1]]
    for step, at in ((next_step(code, 0, []), 0), (next_step(code, 2, []), 2)):
        assert (step.request.t, step.request.frame, step.ends) == ("goexit", "runtime.goexit0", True)
        assert step.request.fields == {"pos": position(at, [], 0)}


def test_runtime_ops_send_runtime_op_arg():
    step = next_step([["chansend", "gcenable.c"], ["lockOSThread"]], 0, [])
    assert (step.request.t, step.request.frame) == ("runtime", "runtime.chansend")
    assert fields(step) == [("pos", position(1, [], 0)), ("op", "chansend"), ("arg", "gcenable.c")]
    step = next_step([["lockOSThread"]], 0, [])
    assert fields(step)[1:] == [("op", "lockOSThread"), ("arg", "")]
    assert step.request.frame == "runtime.lockOSThread"


def test_uncompiled_or_unknown_ops_do_not_run():
    for code in ([["repeat", 1, []]], [["jump"]]):
        with pytest.raises(ValueError, match="unknown op"):
            next_step(code, 0, [])


def test_every_request_is_an_m_request_of_the_catalogue_with_its_fields():
    for name, row in TABLE.items():
        if not row.request:
            continue
        sent = {"m", "g", "pos"} | set(row.fields([name, "x", 1]))
        assert CATALOGUE[row.request].by == {"m"} and set(CATALOGUE[row.request].fields) == sent, name
    assert set(CATALOGUE[EXITSYSCALL.t].fields) == {"m", "g"}
    assert SYSCALL_ENTRIES == {"entersyscall", "entersyscallblock"}
    assert set(RUNTIME_OPS) == {name for name, row in TABLE.items() if row.request == "runtime"}


@settings(max_examples=200, deadline=None)
@given(_programs)
def test_stepping_with_every_reply_cont_visits_the_naive_expansion(ops):
    code = compile_program("main", ops)
    seen, pc, loops = [], 0, []
    while True:
        step = next_step(code, pc, loops)
        if step.ends:
            break
        seen.append(code[step.pc])
        pc, loops = step.next_pc, step.next_loops
    want = expand(ops)
    cut = next((i for i, op in enumerate(want) if op == ["exit"]), len(want))  # Goexit ends the goroutine
    assert seen == want[:cut]
    assert step.request.t == "goexit"
