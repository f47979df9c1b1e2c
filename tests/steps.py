"""The small steps the core's unit tests share: a started World, effects of one kind, a warm P, busy Ms, a sysmon pass at an exact time."""
from __future__ import annotations

from coordinator.runtime import effects as fx

from .world import World
from .world_procs import RUNNING

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


def busy(w: World, n: int) -> list[int]:
    """Make Ms M(1..n-1) run G2..Gn beside m0 (G1): each new spinning M steals one goroutine."""
    w.newproc(0, "w", n - 1)
    ms = [0]
    while len(ms) < n:
        (m,) = w.forked()
        w.hello(m)
        assert w.procs[m].state == RUNNING, w.procs[m]
        ms.append(m)
    return ms


def tick_at(w: World, t: int) -> list:
    """One sysmon pass at exactly Go time t (World.sysmon would add sysmon's 20µs delay)."""
    assert t >= w.now
    w.now = t
    return [e for e in w.deliver({"t": "sysmon"}) if not isinstance(e, fx.SysmonSleep)]
