"""The core's handlers: what each event does, through the Go function it enters (hello → mstart1,
gopark → park_m, exitsyscall, sysmon's tick, an M's death → mdead, ...), once prepare.py has
checked it.
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.chan import chanrecv, chansend
from coordinator.runtime.lockosthread import LockOSThread, UnlockOSThread, goexit0, lockOSThread, unlockOSThread
from coordinator.runtime.mdead import mdead, reforkm
from coordinator.runtime.netpoll import netpollready
from coordinator.runtime.newm import addhost, drophost, newosproc_failed, stackfree, startTemplateThread
from coordinator.runtime.newproc import newproc
from coordinator.runtime.prepare import GOPARK_REASONS
from coordinator.runtime.sched import G, M, Sched, _Gdead, waitReasonSleep
from coordinator.runtime.schedule import goschedImpl, mstart1, park_m, resetForSleep, woken
from coordinator.runtime.syscall import entersyscall, entersyscallblock, exitsyscall
from coordinator.runtime.sysmon import sysmon_tick, sysmon_wake


def _save_pos(gp: G, ev: dict) -> None:
    pos = ev.get("pos")
    if pos is not None:
        gp.pc, gp.loops, gp.left = pos["pc"], list(pos["loops"]), pos["left"]


def _on_hello(sched: Sched, ev: dict, mp: M) -> None:
    mp.pid = ev.get("pid", 0)
    mstart1(sched, mp)


def _on_woken(sched: Sched, ev: dict, mp: M) -> None:
    woken(sched, mp)


def _on_entersyscall(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    entersyscall(sched, mp, bool(ev.get("cgo")))


def _on_exitsyscall(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    exitsyscall(sched, mp)


def _on_entersyscallblock(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    entersyscallblock(sched, mp)


def _on_newproc(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    newproc(sched, mp, ev["prog"], ev["n"])
    sched.fx.append(fx.Cont(mp.id))


def _on_lock(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    LockOSThread(sched, mp, gp)


def _on_unlock(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    UnlockOSThread(sched, mp, gp)


def _on_gopark(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    reason = ev["reason"]
    if reason == "wait" and gp.live_children == 0:
        sched.fx.append(fx.Cont(mp.id))  # WaitGroup already at zero: no park
        return
    if reason == "sleep":
        ns = ev.get("us", 0) * 1000
        if ns <= 0:  # time.Sleep: "if ns <= 0 { return }"
            sched.fx.append(fx.Cont(mp.id))
            return
        park_m(sched, mp, gp, waitReasonSleep, lambda: resetForSleep(sched, mp, gp, sched.now + ns))
        return
    park_m(sched, mp, gp, GOPARK_REASONS[reason])


def _on_runtime(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    op, arg = ev["op"], ev.get("arg")
    if op == "lockOSThread":
        lockOSThread(sched, mp, gp)
    elif op == "unlockOSThread":
        unlockOSThread(sched, mp, gp)
    elif op == "chansend":
        chansend(sched, mp, gp, sched.chans[arg])
    elif op == "chanrecv":
        chanrecv(sched, mp, gp, sched.chans[arg])
    elif op == "gopark":
        park_m(sched, mp, gp, arg)
    elif op == "startTemplateThread":
        startTemplateThread(sched)
        sched.fx.append(fx.Cont(mp.id))


def _on_gosched(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    goschedImpl(sched, mp, gp)


def _on_goexit(sched: Sched, ev: dict, mp: M, gp: G) -> None:
    _save_pos(gp, ev)
    if gp.goid == 1 and gp.pc >= len(sched.programs[gp.prog]):
        # main returned: Go's runtime.main calls exit(0), whatever else is running.
        gp.status = _Gdead
        sched.stats["goroutines_completed"] += 1
        sched.exit_code = 0
        sched.fx.append(fx.ProgramExit(0))
        return
    goexit0(sched, mp, gp)


def _on_mexited(sched: Sched, ev: dict, mp: M) -> None:
    """The host agent saw the M's process end: exitThread's store of 0 into m.freeWait."""
    mp.pid = 0
    if mp.exited:
        mp.freeWait = 0
        if mp in sched.osstackm:  # a cgo binary's thread is gone, and its stack with it
            sched.osstackm.remove(mp)
            stackfree(sched, mp)
        return
    _recover(sched, mp, f"process died (status {ev.get('status')})", gone=True)


def _recover(sched: Sched, mp: M, why: str, gone: bool) -> None:
    rec = mdead(sched, mp, gone)
    sched.fx.append(fx.Recovered(mp.id, why, rec["doing"], tuple(rec["requeued"]), tuple(rec["ps"])))


def _on_mdead(sched: Sched, ev: dict, mp: M) -> None:
    """The shell declared the M lost (no answer within lost_after) or killed it: fence it."""
    _recover(sched, mp, ev.get("why", "lost"), gone=bool(ev.get("gone")))


def _on_hostlost(sched: Sched, ev: dict) -> None:
    """A host cut off for longer than the heartbeat timeout: its Ms are fenced like killed ones."""
    for mp in drophost(sched, ev["host"]):
        if mp.id in sched.allm:
            _recover(sched, mp, f"lost: host {ev['host']} cut off", gone=False)


def _on_hostjoin(sched: Sched, ev: dict) -> None:
    addhost(sched, ev["host"], ev["slots"])


def _on_forkfail(sched: Sched, ev: dict, mp: M) -> None:
    newosproc_failed(sched, mp, ev["errno"], ev.get("cause", "fault"), ev.get("limit", ""))


def _on_refork(sched: Sched, ev: dict, mp: M) -> None:
    reforkm(sched, mp)


def _on_sysmon(sched: Sched, ev: dict) -> None:
    sysmon_tick(sched)


def _on_sysmon_wake(sched: Sched, ev: dict) -> None:
    sysmon_wake(sched)


def _on_netpoll(sched: Sched, ev: dict, mp: M) -> None:
    netpollready(sched, mp)


HANDLERS = {
    "hello": _on_hello, "woken": _on_woken, "entersyscall": _on_entersyscall,
    "exitsyscall": _on_exitsyscall, "entersyscallblock": _on_entersyscallblock, "newproc": _on_newproc,
    "lockosthread": _on_lock, "unlockosthread": _on_unlock, "gopark": _on_gopark, "gosched": _on_gosched,
    "runtime": _on_runtime,
    "goexit": _on_goexit, "mexited": _on_mexited, "sysmon": _on_sysmon, "sysmon_wake": _on_sysmon_wake,
    "netpoll": _on_netpoll, "mdead": _on_mdead, "forkfail": _on_forkfail, "refork": _on_refork,
    "hostlost": _on_hostlost, "hostjoin": _on_hostjoin,
}
