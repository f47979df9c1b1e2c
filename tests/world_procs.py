"""The world's record of the M processes (tests/world.py): their states, `Proc`, `pos`, `WorldError`."""
from __future__ import annotations

from dataclasses import dataclass

from protocol.messages import G_REQUESTS, M_REQUESTS
from protocol.stepper import Step

FORKED, RUNNING, SYSCALL, PARKED, EXITED, GONE = "forked", "running", "syscall", "parked", "exited", "gone"

#: events an M process sends about its current goroutine (they get exactly one reply)
G_EVENTS = G_REQUESTS
M_EVENTS = M_REQUESTS  # G_EVENTS, hello, woken

class WorldError(AssertionError):
    """The core did something no process shell could carry out, or the world was misused."""


@dataclass
class Proc:
    """One M process as the shell sees it."""
    m: int
    epoch: int
    state: str
    host: str
    slot: int
    forker: int | None
    template: bool
    nextp: int
    spinning: bool
    g: int | None = None  # the goroutine it runs (running / syscall)
    wake: int | None = None  # nextp of a Wake not yet delivered
    preempt: int | None = None  # goroutine a Preempt was sent for
    pid: int = 0
    # dry run: the position the running goroutine goes on from, and the plan
    pos: tuple = (0, (), 0)
    token: int = 0
    run_end: int | None = None  # end (ns) of the "run" op being computed
    run_at: Step | None = None  # that op's step (where it yields if preempted)
    locks: int = 0  # LockOSThread calls not undone on this thread (Go's m.lockedExt, kept on exit)


def pos(pc: int = 0, loops=(), left: int = 0) -> dict:
    return {"pc": pc, "loops": list(loops), "left": left}
