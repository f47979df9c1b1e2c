"""The op stepper: what a goroutine does next, as data, for everything that runs goroutine programs.

The real M (worker/run_ops.py: real time passes), the load generator (coordinator/bench/loadgen.py:
no time passes) and the test World (tests/world_dryrun.py: a virtual clock) all call `next_step` and
differ only in how time passes. Given a program's flat code and a goroutine's position
(pc, loops, left), it steps over control instructions to the next op (protocol/ops.py TABLE) and
says what that op asks of the scheduler: the request (message type and fields, in the order they
go on the wire), the position it goes on from, and what time must pass and where:

    run           computes `run_us` holding its P, no request; preempted, it sends `preempted(left)`:
                  gopreempt_m → goschedImpl, at its own pc with the µs left
    syscall, cgo  entersyscall, then (after its cont) blocks `block_us` in the call, then EXITSYSCALL
    syscallblock  entersyscallblock, the same
    others        their request (newproc, lockosthread, unlockosthread, gopark, runtime); then go on
    exit, the end goexit at the op's own position (goexit1 → goexit0): the goroutine does not go on

After a request whose reply is "cont" (and its forks carried out), the goroutine goes on from
(`next_pc`, `next_loops`) with no time left; any other reply goes back to the M's schedule loop.
"""
from __future__ import annotations

from typing import NamedTuple

from protocol.messages import position
from protocol.ops import TABLE, advance

_RUN, _EXIT = TABLE["run"], TABLE["exit"]


class Request(NamedTuple):
    """A message an M sends the core about its goroutine: its type, its fields after m and g (pos
    first), and the g0 systemstack frame the M sends it from (Go's function; "": none)."""
    t: str
    fields: dict
    frame: str


#: what a system call sends when it returns (after the request's cont and `block_us` in the call)
EXITSYSCALL = Request("exitsyscall", {}, "runtime.exitsyscall")

#: the requests after whose cont the goroutine is in a system call (_Gsyscall) until EXITSYSCALL
SYSCALL_ENTRIES: frozenset[str] = frozenset(row.request for row in TABLE.values() if row.blocks)


class Step(NamedTuple):
    """The next thing a goroutine does (see the module docstring)."""
    pc: int  # the op's own position (past control instructions): where a preempted run goes on
    loops: list
    request: Request | None  # None: a run op, which only computes (unless preempted)
    run_us: int  # Go µs a run op computes, holding its P (0 otherwise)
    block_us: int | None  # a system call: Go µs it blocks after the request's cont, then EXITSYSCALL
    next_pc: int  # where the goroutine goes on after it
    next_loops: list
    ends: bool  # goexit: the goroutine does not go on here; the reply goes to schedule, whatever it is

    def preempted(self, left: int) -> Request:
        """A run op preempted with `left` Go µs still to compute: gopreempt_m → goschedImpl, at its own pc."""
        return Request(_RUN.request, {"pos": position(self.pc, self.loops, left)}, _RUN.frame)


def next_step(code: list, pc: int, loops: list, left: int = 0) -> Step:
    """The goroutine at (pc, loops, left) of `code`: its next step. Pure. `left` is the Go µs left of
    a run op that was preempted (0: the op's whole duration). Raises ValueError on an op that cannot
    run (not in the table, or control flow that was not compiled)."""
    pc, loops = advance(code, pc, loops)
    if pc >= len(code):  # the goroutine's function returned: goexit1 → goexit0
        return Step(pc, loops, Request(_EXIT.request, {"pos": position(pc, loops, 0)}, _EXIT.frame),
                    0, None, pc, loops, True)
    op = code[pc]
    row = TABLE.get(op[0])
    if row is None or not row.request:
        raise ValueError(f"unknown op {op[0]!r}")
    next_pc, next_loops = advance(code, pc + 1, loops)
    if row.computes:
        return Step(pc, loops, None, left or op[1], None, next_pc, next_loops, False)
    at = position(pc, loops, 0) if row.ends else position(next_pc, next_loops, 0)
    request = Request(row.request, {"pos": at, **row.fields(op)}, row.frame)
    return Step(pc, loops, request, 0, op[1] if row.blocks else None, next_pc, next_loops, row.ends)
