"""The core's front door: schedinit, and `step(sched, event, now) -> effects`.

An event is an M's message (already decoded by protocol/), the agent's report that an M's process
is gone, the end of one of sysmon's sleeps, or the end of the wait of the M blocked in netpoll.
`step` checks that the event makes sense for the state (an M that exists, in the right epoch,
doing what its message says) before changing anything: a bad
event raises BadEvent and leaves the state as it was. A Go throw becomes a Fatal effect.
No I/O, no clock (now is passed in, in Go nanoseconds), no randomness but sched.rng (seeded).
"""
from __future__ import annotations

import random

from coordinator.runtime import effects as fx
from coordinator.runtime.chan import chanrecv, chansend
from coordinator.runtime.lockosthread import LockOSThread, UnlockOSThread, goexit0, lockOSThread, unlockOSThread
from coordinator.runtime.mdead import mdead, reforkm
from coordinator.runtime.netpoll import netpollready
from coordinator.runtime.newm import (
    addhost,
    allocm,
    drophost,
    mstartm0,
    newosproc_failed,
    newsysm,
    stackfree,
    startTemplateThread,
)
from coordinator.runtime.newproc import newproc, newproc1
from coordinator.runtime.runq import runqput
from coordinator.runtime.runtime_main import RUNTIME_CHANS, with_runtime
from coordinator.runtime.sched import (
    G,
    M,
    P,
    Parked,
    Sched,
    _Gdead,
    _Grunning,
    _Gsyscall,
    _Prunning,
    hchan,
    waitReasonForceGCIdle,
    waitReasonGCScavengeWait,
    waitReasonGCSweepWait,
    waitReasonSelectNoCases,
    waitReasonSemacquire,
    waitReasonSleep,
)
from coordinator.runtime.schedule import goschedImpl, mstart1, park_m, resetForSleep, woken
from coordinator.runtime.syscall import entersyscall, entersyscallblock, exitsyscall
from coordinator.runtime.sysmon import sysmon_tick, sysmon_wake
from protocol.ops import RUNTIME_OPS, is_cgo
from protocol.throw import Throw


class BadEvent(ValueError):
    """An event that does not fit the state (unknown M, stale epoch, wrong goroutine...). One line."""


GOPARK_REASONS = {"sleep": waitReasonSleep, "park": waitReasonSelectNoCases, "wait": waitReasonSemacquire}
#: wait reasons of the runtime's own gopark op (coordinator/runtime/runtime_main.py)
RUNTIME_PARK_REASONS = frozenset({waitReasonForceGCIdle, waitReasonGCSweepWait, waitReasonGCScavengeWait})


def schedinit(gomaxprocs: int, programs: dict, hosts: dict[str, int], maxmcount: int = 10000,
              seed: int = 1, schedtrace_ms: int = 0, scheddetail: bool = False,
              placement: str = "least-loaded", usleep_slack_us: float = 0) -> tuple[Sched, list]:
    """Go's schedinit + procresize + newproc(runtime.main), m0's mstart (mstartm0) and runtime.main's
    first lines (mainStarted, newm(sysmon)). `hosts` maps each host to the number of g0 stack slots
    in its arena. m0 gets P0 (procresize); goroutine 1 runs "runtime.main" (runtime_main.py), which
    ends in the scenario's "main"; sysmon is a virtual M (nmsys). A scenario with a cgo op is a cgo
    binary (iscgo). `usleep_slack_us`: what the OS adds to each of sysmon's usleeps (sysmon.py).
    Effect: fork m0 on the first host."""
    if "main" not in programs:
        raise ValueError('programs: a "main" program is required')
    sched = Sched(gomaxprocs=gomaxprocs, maxmcount=maxmcount, seed=seed,
                  schedtrace_ms=schedtrace_ms, scheddetail=scheddetail, rng=random.Random(seed),
                  placement=placement, usleep_slack_ns=round(usleep_slack_us * 1000))
    sched.iscgo = is_cgo(programs)
    sched.programs = with_runtime(programs, sched.iscgo)
    sched.chans = {name: hchan(dataqsiz=n) for name, n in RUNTIME_CHANS.items()}
    sched.hosts = list(hosts)
    sched.stackfree_slots = {h: list(range(n)) for h, n in hosts.items()}
    sched.allp = [P(id=i) for i in range(gomaxprocs)]
    m0 = allocm(sched, None, -1, sched.hosts[0])
    sched.m0 = m0
    p0 = sched.allp[0]
    m0.p, p0.m, p0.status = p0, m0, _Prunning
    for p in reversed(sched.allp[1:]):  # procresize: pidleput from the last P down
        sched.pidle.append(p)
        sched.npidle += 1
    main = newproc1(sched, p0, "runtime.main", None)  # rt0_go: newproc(runtime.main): goid 1
    runqput(sched, p0, main, True)
    mstartm0(sched)
    sched.mainStarted = True
    sched.sysmonm = newsysm(sched, "sysmon")  # runtime.main: newm(sysmon, nil, -1)
    sched.lasttrace = -schedtrace_ms * 1_000_000  # Go's lasttrace starts at 0 against a large nanotime
    sched.stats["ms_created"] += 1
    effects = [fx.Fork.of(m0)]  # m0 holds P0 itself (procresize), no nextp
    return sched, effects


def step(sched: Sched, ev: dict, now: int) -> list:
    """Handle one event at Go time `now` (ns); return the effects. Raises BadEvent, touching nothing,
    when the event does not fit the state."""
    handler = _HANDLERS.get(ev.get("t"))
    if handler is None:
        raise BadEvent(f"core: no handler for event type {ev.get('t')!r}")
    prepare = _PREPARE.get(ev["t"], _m_running_g)
    ctx = prepare(sched, ev)
    sched.now = max(sched.now, now)
    sched.fx = []
    try:
        handler(sched, ev, *ctx)
    except Throw as t:
        sched.fx.append(fx.Fatal(t.message, tuple(t.lines())))
    out, sched.fx = sched.fx, []
    return out


# --- checks: each returns the records the handler needs, or raises BadEvent -------------------------

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


# --- handlers ---------------------------------------------------------------------------------------

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


def _on_sysmon(sched: Sched, ev: dict) -> None:
    sysmon_tick(sched)


def _on_sysmon_wake(sched: Sched, ev: dict) -> None:
    sysmon_wake(sched)


def _on_netpoll(sched: Sched, ev: dict, mp: M) -> None:
    netpollready(sched, mp)


_HANDLERS = {
    "hello": _on_hello, "woken": _on_woken, "entersyscall": _on_entersyscall,
    "exitsyscall": _on_exitsyscall, "entersyscallblock": _on_entersyscallblock, "newproc": _on_newproc,
    "lockosthread": _on_lock, "unlockosthread": _on_unlock, "gopark": _on_gopark, "gosched": _on_gosched,
    "runtime": _on_runtime,
    "goexit": _on_goexit, "mexited": _on_mexited, "sysmon": _on_sysmon, "sysmon_wake": _on_sysmon_wake,
    "netpoll": _on_netpoll, "mdead": _on_mdead, "forkfail": _on_forkfail, "refork": _on_refork,
    "hostlost": _on_hostlost, "hostjoin": _on_hostjoin,
}
_PREPARE = {
    "hello": _prep_hello, "woken": _prep_woken, "exitsyscall": _prep_exitsyscall,
    "newproc": _prep_newproc, "gopark": _prep_gopark, "mexited": _prep_mexited, "runtime": _prep_runtime,
    "sysmon": _prep_none, "sysmon_wake": _prep_sysmon_wake, "netpoll": _prep_netpoll,
    "mdead": _prep_any_m, "forkfail": _prep_unborn, "refork": _prep_unborn,
    "hostlost": _prep_none, "hostjoin": _prep_none,
}
