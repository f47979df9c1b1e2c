"""The small steps the core's unit tests share: a started World, effects of one kind, a warm P."""
from __future__ import annotations

from coordinator.runtime import effects as fx

from .world import World

WORKER = {"main": [["run", 1]], "worker": [["run", 1]]}


def started(programs=WORKER, **kw) -> World:
    """A world whose m0 has said hello and runs goroutine 1."""
    w = World(programs, **kw)
    assert w.hello(0) == [fx.Execute(0, 1)]
    return w


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def warm(w: World, m: int) -> None:
    """One syscall round trip, so that the P's syscalltick is no longer 0. (On a P's first syscall,
    p.syscalltick and sysmontick.syscalltick are both 0, so sysmon's first look already counts as
    "the same tick": Go 1.16 retakes such a P on its first tick too, its pd being zeroed.)"""
    w.entersyscall(m)
    w.exitsyscall(m)
