"""The core's check of an event before anything changes: the records its handler needs (the M, in
the right epoch, and the goroutine it runs, ...), or BadEvent, one line, leaving the state as it was.
"""
from __future__ import annotations

from coordinator.runtime.sched import (
    G,
    M,
    Parked,
    Sched,
    _Grunning,
    _Gsyscall,
    waitReasonForceGCIdle,
    waitReasonGCScavengeWait,
    waitReasonGCSweepWait,
    waitReasonSelectNoCases,
    waitReasonSemacquire,
    waitReasonSleep,
)
from protocol.ops import RUNTIME_OPS


class BadEvent(ValueError):
    """An event that does not fit the state (unknown M, stale epoch, wrong goroutine...). One line."""


GOPARK_REASONS = {"sleep": waitReasonSleep, "park": waitReasonSelectNoCases, "wait": waitReasonSemacquire}
#: wait reasons of the runtime's own gopark op (coordinator/runtime/runtime_main.py)
RUNTIME_PARK_REASONS = frozenset({waitReasonForceGCIdle, waitReasonGCSweepWait, waitReasonGCScavengeWait})


def _m(sched: Sched, ev: dict) -> M:
    mid = ev.get("m")
    mp = sched.allm.get(mid) if isinstance(mid, int) else None
    if mp is None or mp.virtual:
        raise BadEvent(f"core: {ev['t']}: no M {mid!r}")
    if ev.get("epoch", mp.epoch) != mp.epoch:
        raise BadEvent(f"core: {ev['t']}: M{mid} epoch {ev.get('epoch')} is stale (current {mp.epoch})")
    if not mp.started and ev["t"] != "hello":
        raise BadEvent(f"core: {ev['t']}: M{mid} has not started")
    return mp


def _m_running_g(sched: Sched, ev: dict, status: int = _Grunning) -> tuple[M, G]:
    mp = _m(sched, ev)
    gp = mp.curg
    if mp.blocked or gp is None or gp.goid != ev.get("g") or gp.status != status:
        raise BadEvent(f"core: {ev['t']}: M{mp.id} is not running goroutine {ev.get('g')!r}")
    if status == _Grunning and mp.p is None:
        raise BadEvent(f"core: {ev['t']}: M{mp.id} has no P")
    return mp, gp


def _prep_hello(sched: Sched, ev: dict) -> tuple[M]:
    mp = _m(sched, ev)
    if mp.started:
        raise BadEvent(f"core: hello: M{mp.id} has already started")
    return (mp,)


def _prep_woken(sched: Sched, ev: dict) -> tuple[M]:
    mp = _m(sched, ev)
    if not mp.blocked or mp.park.key == 0 or mp.nextp is None and mp.parked not in (Parked.M0, Parked.NETPOLL):
        raise BadEvent(f"core: woken: M{mp.id} was not woken")
    return (mp,)


def _prep_netpoll(sched: Sched, ev: dict) -> tuple[M]:
    """The shell's "netpoll": the wait of the M blocked in netpoll is over (its timeout or a break)."""
    mp = _m(sched, ev)
    if mp.parked != Parked.NETPOLL or mp.park.key != 0:
        raise BadEvent(f"core: netpoll: M{mp.id} is not blocked in netpoll")
    return (mp,)


def _prep_exitsyscall(sched: Sched, ev: dict) -> tuple[M, G]:
    return _m_running_g(sched, ev, _Gsyscall)


def _prep_newproc(sched: Sched, ev: dict) -> tuple[M, G]:
    prog = ev.get("prog")
    if prog not in sched.programs or prog == "runtime.main":
        raise BadEvent(f"core: newproc: no program {prog!r}")
    mp, gp = _m_running_g(sched, ev)
    if prog.startswith("runtime.") and not gp.prog.startswith("runtime."):
        raise BadEvent(f"core: newproc: {prog!r} is the runtime's; goroutine {gp.goid} runs {gp.prog!r}")
    return mp, gp


def _prep_gopark(sched: Sched, ev: dict) -> tuple[M, G]:
    if ev.get("reason") not in GOPARK_REASONS:
        raise BadEvent(f"core: gopark: reason {ev.get('reason')!r} is not one of {sorted(GOPARK_REASONS)}")
    return _m_running_g(sched, ev)


def _prep_runtime(sched: Sched, ev: dict) -> tuple[M, G]:
    """A runtime op (protocol/ops.py RUNTIME_OPS): only the runtime's own programs may send one."""
    op, arg = ev.get("op"), ev.get("arg")
    if op not in RUNTIME_OPS:
        raise BadEvent(f"core: runtime: op {op!r} is not one of {sorted(RUNTIME_OPS)}")
    if op in ("chansend", "chanrecv") and arg not in sched.chans:
        raise BadEvent(f"core: runtime: {op}: no runtime channel {arg!r}")
    if op == "gopark" and arg not in RUNTIME_PARK_REASONS:
        raise BadEvent(f"core: runtime: gopark: wait reason {arg!r} is not one of {sorted(RUNTIME_PARK_REASONS)}")
    mp, gp = _m_running_g(sched, ev)
    if not gp.prog.startswith("runtime."):
        raise BadEvent(f"core: runtime: goroutine {gp.goid} runs {gp.prog!r}, not a runtime program")
    return mp, gp


def _prep_mexited(sched: Sched, ev: dict) -> tuple[M]:
    mid = ev.get("m")
    for mp in (*sched.freem, *sched.osstackm):
        if mp.id == mid:
            return (mp,)
    mp = sched.allm.get(mid)
    if mp is None or mp.virtual:
        raise BadEvent(f"core: mexited: no M {mid!r}")
    return (mp,)


def _prep_none(sched: Sched, ev: dict) -> tuple:
    return ()


def _prep_sysmon_wake(sched: Sched, ev: dict) -> tuple:
    if sched.sysmonwait == 0 and sched.sysmonnote.key == 0:
        raise BadEvent("core: sysmon_wake: sysmon is not in its deep sleep")
    return ()


def _prep_unborn(sched: Sched, ev: dict) -> tuple[M]:
    """An M whose process has not said hello yet, in the incarnation the event names."""
    mid = ev.get("child", ev.get("m"))
    mp = sched.allm.get(mid) if isinstance(mid, int) else None
    if mp is None or mp.virtual or mp.started:
        raise BadEvent(f"core: {ev['t']}: M{mid} is not an M waiting to start")
    if ev.get("cepoch", mp.epoch) != mp.epoch:
        raise BadEvent(f"core: {ev['t']}: M{mid} incarnation {ev.get('cepoch')} is stale (current {mp.epoch})")
    return (mp,)


def _prep_any_m(sched: Sched, ev: dict) -> tuple[M]:
    mp = sched.allm.get(ev.get("m"))
    if mp is None or mp.virtual:
        raise BadEvent(f"core: {ev['t']}: no M {ev.get('m')!r}")
    return (mp,)


_PREPARE = {
    "hello": _prep_hello, "woken": _prep_woken, "exitsyscall": _prep_exitsyscall,
    "newproc": _prep_newproc, "gopark": _prep_gopark, "mexited": _prep_mexited, "runtime": _prep_runtime,
    "sysmon": _prep_none, "sysmon_wake": _prep_sysmon_wake, "netpoll": _prep_netpoll,
    "mdead": _prep_any_m, "forkfail": _prep_unborn, "refork": _prep_unborn,
    "hostlost": _prep_none, "hostjoin": _prep_none,
}


def prepare(sched: Sched, ev: dict) -> tuple:
    """The records the handler of `ev` needs (by default: its M and the goroutine that M runs), or
    BadEvent."""
    return _PREPARE.get(ev["t"], _m_running_g)(sched, ev)
