"""What the pure core asks the shell to do. The core decides; the shell (loop.py) carries out.

Each effect is a small frozen record. Replies (Execute, Cont, Park, Exit) answer the M whose
message is being handled; Fork effects whose `forker` is that M travel inside the reply, the
others go to the host agent (the template).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fork:
    """newosproc: create M `m`. forker = the calling M's id (its process forks), or None: the host
    agent forks it (the template thread, or sysmon's newm, which has no process here)."""
    m: int
    forker: int | None
    host: str
    nextp: int  # -1: none
    spinning: bool
    slot: int
    epoch: int
    template: bool  # came through newmHandoff

    @classmethod
    def of(cls, mp, forker=None, template: bool = False) -> Fork:
        """The one builder: the order to fork M mp (its host, slot, nextp, incarnation and whether it
        starts spinning, read from the M), from `forker`'s process (an M, or None: the agent's)."""
        return cls(m=mp.id, forker=forker.id if forker is not None else None, host=mp.host,
                   nextp=mp.nextp.id if mp.nextp is not None else -1, spinning=mp.mstartfn == "mspinning",
                   slot=mp.slot, epoch=mp.epoch, template=template)


@dataclass(frozen=True)
class Execute:
    """Reply: run goroutine g (Go's execute)."""
    m: int
    g: int


@dataclass(frozen=True)
class Cont:
    """Reply: go on running the current goroutine."""
    m: int


@dataclass(frozen=True)
class Park:
    """Reply: sleep on m.park until a Wake (notesleep)."""
    m: int


@dataclass(frozen=True)
class Exit:
    """Reply: the M exits (mexit: its locked goroutine exited)."""
    m: int


@dataclass(frozen=True)
class Wake:
    """notewakeup(&m.park), carrying the P the M is to acquire."""
    m: int
    nextp: int


@dataclass(frozen=True)
class Preempt:
    """preemptone: ask M's running goroutine g to yield."""
    m: int
    g: int


@dataclass(frozen=True)
class StackFree:
    """stackfree of an exited M's g0 stack slot (allocm's freem sweep)."""
    host: str
    slot: int
    m: int


@dataclass(frozen=True)
class WakeSysmon:
    """notewakeup(&sched.sysmonnote): sysmon leaves its deep sleep."""


@dataclass(frozen=True)
class SysmonSleep:
    """sysmon sleeps until Go time `until` (ns), then the shell sends the event "sysmon" (usleep,
    note=False) or "sysmon_wake" (note=True: notetsleep(&sched.sysmonnote), which a WakeSysmon
    ends early)."""
    until: int
    note: bool


@dataclass(frozen=True)
class NetpollSleep:
    """M `m` blocks in netpoll(delay) until Go time `until` (ns): its process sleeps (it got a Park
    reply). At `until`, or at once after a NetpollBreak, the shell sends the event "netpoll"."""
    m: int
    until: int


@dataclass(frozen=True)
class NetpollBreak:
    """netpollBreak: the M blocked in netpoll returns now (the shell sends "netpoll" at once)."""
    m: int


@dataclass(frozen=True)
class Trace:
    """schedtrace output (one or more lines, newline-terminated)."""
    text: str


@dataclass(frozen=True)
class ProgramExit:
    """Go's exit(code): main returned."""
    code: int


@dataclass(frozen=True)
class Fatal:
    """A throw: the lines Go prints on stderr, and the message."""
    message: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Recovered:
    """An M died or was fenced (mdead): what it was doing, what was put back (for the report)."""
    m: int
    why: str
    doing: str
    requeued: tuple[int, ...]
    ps: tuple[int, ...]


REPLIES = (Execute, Cont, Park, Exit)
