"""The goroutine-op compiler and the flat-code walker (protocol/ops.py)."""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ops import (
    MAX_DEPTH,
    MAX_INSTRUCTIONS,
    OPS,
    TABLE,
    TIMED,
    OpError,
    advance,
    compile_program,
    compile_programs,
)


def walk(code: list) -> list:
    """Every real op an interpreter would run, in order, using only ``advance``."""
    seen = []
    pc, loops = advance(code, 0, [])
    while pc < len(code):
        seen.append(code[pc])
        pc, loops = advance(code, pc + 1, loops)
    assert loops == []
    return seen


def expand(ops: list) -> list:
    """Naive recursive expansion of a source program: the reference semantics."""
    out = []
    for op in ops:
        if op[0] == "repeat":
            for _ in range(op[1]):
                out.extend(expand(op[2]))
        else:
            out.append(list(op))
    return out


# --- compiling -----------------------------------------------------------------------------

def test_flat_ops_are_copied_as_lists():
    ops = [["run", 100], ["go", "blocker", 3], ["lock"], ["syscall", 0], ["unlock"],
           ["sleep", 5], ["cgo", 7], ["syscallblock", 9], ["wait"], ["park"], ["exit"]]
    code = compile_program("main", ops)
    assert code == ops
    assert code[0] is not ops[0]


def test_repeat_compiles_to_rep_body_endrep():
    code = compile_program("main", [["run", 1], ["repeat", 3, [["run", 2], ["sleep", 3]]], ["exit"]])
    assert code == [["run", 1], ["rep", 3, 5], ["run", 2], ["sleep", 3], ["endrep", 2], ["exit"]]


def test_nested_repeats_point_at_the_right_places():
    code = compile_program("main", [["repeat", 2, [["run", 1], ["repeat", 3, [["run", 2]]]]]])
    assert code == [["rep", 2, 6], ["run", 1], ["rep", 3, 5], ["run", 2], ["endrep", 3], ["endrep", 1]]
    assert walk(code) == [["run", 1]] + [["run", 2]] * 3 + [["run", 1]] + [["run", 2]] * 3


def test_repeats_that_run_nothing_compile_to_nothing():
    code = compile_program("main", [["repeat", 0, [["run", 1]]], ["repeat", 10**7, []],
                                    ["repeat", 10**7, [["repeat", 0, [["run", 1]]]]], ["run", 2]])
    assert code == [["run", 2]]


def test_empty_program_is_allowed():
    assert compile_program("main", []) == []
    assert advance([], 0, []) == (0, [])


def test_vocabulary_tables():
    assert TIMED <= set(OPS)
    assert OPS["go"] == 2 and OPS["repeat"] == 2 and OPS["lock"] == 0 and OPS["run"] == 1


# --- advance ---------------------------------------------------------------------------

def test_advance_stops_on_real_ops_and_is_pure():
    code = compile_program("main", [["repeat", 2, [["run", 1]]], ["exit"]])
    loops = []
    assert advance(code, 0, loops) == (1, [2])
    assert loops == []
    assert advance(code, 2, [2]) == (1, [1])
    assert advance(code, 2, [1]) == (3, [])
    assert advance(code, 3, []) == (3, [])


def test_advance_handles_a_zero_count_rep():
    # The compiler drops these, but hand-made code with rep 0 must still be skipped.
    code = [["rep", 0, 3], ["run", 1], ["endrep", 1], ["exit"]]
    assert advance(code, 0, []) == (3, [])
    assert walk(code) == [["exit"]]


def test_advance_at_end_of_nested_loops_pops_everything():
    code = compile_program("main", [["repeat", 2, [["repeat", 2, [["run", 1]]]]]])
    assert walk(code) == [["run", 1]] * 4


def test_advance_rejects_stray_endrep():
    with pytest.raises(ValueError, match="endrep"):
        advance([["endrep", 0]], 0, [])


# --- validation: every message is one line naming the path -----------------------------

@pytest.mark.parametrize(
    "ops, message",
    [
        ([["run", 1], ["jump", 3]], "programs.main.ops[1]: unknown op 'jump' (expected one of run, syscall, "),
        ([["run", -5]], "programs.main.ops[0][1]: expected a whole number of microseconds >= 0, got -5"),
        ([["run", 1.5]], "programs.main.ops[0][1]: expected a whole number of microseconds >= 0, got 1.5"),
        ([["sleep", True]], "programs.main.ops[0][1]: expected a whole number of microseconds >= 0, got true"),
        ([["sleep", "5"]], 'programs.main.ops[0][1]: expected a whole number of microseconds >= 0, got "5"'),
        ([["cgo", 10**13]], "programs.main.ops[0][1]: expected at most "),
        ([["run"]], "programs.main.ops[0]: 'run' is written [\"run\", us], got [\"run\"]"),
        ([["lock", 1]], "programs.main.ops[0]: 'lock' is written [\"lock\"], got [\"lock\", 1]"),
        ([5], 'programs.main.ops[0]: expected an op such as ["run", 100], got 5'),
        ([[]], 'programs.main.ops[0]: expected an op such as ["run", 100], got []'),
        ([[7, 1]], "programs.main.ops[0][0]: expected an op name (one of run, "),
        ("run", 'programs.main.ops: expected a list of ops, got "run"'),
        ([["go", "main", 0]], "programs.main.ops[0][2]: expected a whole number of goroutines from 1 to "),
        ([["go", "a b", 1]], "programs.main.ops[0][1]: expected a program name of 1 to 64 letters"),
        ([["repeat", -1, []]], "programs.main.ops[0][1]: expected a repeat count from 0 to 10000000, got -1"),
        ([["repeat", 10**7 + 1, []]], "programs.main.ops[0][1]: expected a repeat count from 0 to 10000000"),
        ([["repeat", 2, "x"]], 'programs.main.ops[0][2]: expected a list of ops, got "x"'),
        ([["repeat", 2, [["run", 1], ["run", -1]]]], "programs.main.ops[0][2][1][1]: expected a whole number"),
        ([["repeat", 0, [["bad"]]]], "programs.main.ops[0][2][0]: unknown op 'bad'"),
    ],
)
def test_validation_messages_name_the_path(ops, message):
    with pytest.raises(OpError) as caught:
        compile_program("main", ops)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    assert text == f"{caught.value.path}: {caught.value.problem}"


def test_repeat_depth_limit():
    def nest(depth):
        ops = [["run", 1]]
        for _ in range(depth):
            ops = [["repeat", 1, ops]]
        return ops

    assert walk(compile_program("main", nest(MAX_DEPTH))) == [["run", 1]]
    with pytest.raises(OpError, match=r"^programs\.main\.ops(\[0\]\[2\]){16}\[0\]: repeats are nested more than 16 deep$"):
        compile_program("main", nest(MAX_DEPTH + 1))


def test_instruction_limit():
    compile_program("main", [["run", 1]] * MAX_INSTRUCTIONS)
    with pytest.raises(OpError, match=r"^programs\.main\.ops: program compiles to more than 100000 instructions$"):
        compile_program("main", [["run", 1]] * (MAX_INSTRUCTIONS + 1))


def test_compile_programs_cross_checks_go_targets():
    compiled = compile_programs({"main": [["go", "w", 2], ["wait"]], "w": [["run", 1]]})
    assert compiled == {"main": [["go", "w", 2], ["wait"]], "w": [["run", 1]]}
    with pytest.raises(OpError) as caught:
        compile_programs({"main": [["run", 1], ["go", "nope", 1]]})
    assert str(caught.value) == "programs.main.ops[1]: \"go\" names program 'nope', which is not defined"
    # A go inside a repeat that runs nothing is still checked.
    with pytest.raises(OpError, match=r"^programs\.main\.ops\[0\]\[2\]\[0\]: \"go\" names program 'x'"):
        compile_programs({"main": [["repeat", 0, [["go", "x", 1]]]]})


def test_compile_programs_requires_main():
    with pytest.raises(OpError) as caught:
        compile_programs({"w": [["run", 1]]})
    assert str(caught.value) == 'programs: a "main" program is required'


def test_compile_programs_rejects_bad_shapes():
    with pytest.raises(OpError, match=r"^programs: expected a table of programs, got \[\]$"):
        compile_programs([])
    with pytest.raises(OpError, match=r'^programs: expected a program name .*got "has space"$'):
        compile_programs({"main": [], "has space": []})


# --- property: advance walks exactly the naive expansion -------------------------------

_plain_ops = st.one_of(
    st.tuples(st.sampled_from(sorted(TIMED)), st.integers(0, 1000)).map(list),
    st.sampled_from([["lock"], ["unlock"], ["park"], ["wait"], ["exit"]]),
    st.integers(1, 5).map(lambda n: ["go", "main", n]),
)
_programs = st.recursive(
    st.lists(_plain_ops, max_size=4),
    lambda body: st.lists(
        st.one_of(_plain_ops, st.tuples(st.just("repeat"), st.integers(0, 3), body).map(list)),
        max_size=4,
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_programs)
def test_advance_visits_exactly_the_naive_expansion(ops):
    code = compile_program("main", ops)
    assert walk(code) == expand(ops)
    assert all(instruction[0] not in ("repeat",) for instruction in code)


def test_every_op_is_documented_and_has_a_go_twin():
    """The op table (protocol/ops.py TABLE) is the one source: a new row without its README line or
    its case in the compare program (coordinator/compare/gosrc/main.go, the Go interpreter of the
    same vocabulary) fails here, not on a user's run."""
    root = pathlib.Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    main_go = (root / "coordinator/compare/gosrc/main.go").read_text()
    for name in OPS:
        assert f'`["{name}"' in readme, f"README's op table lacks {name}"
        twin = name if TABLE[name].request else "rep"  # control flow: repeat compiles to rep/endrep
        assert re.search(rf'case [^\n]*"{twin}"', main_go), f"main.go has no case for {name}"
