"""The core's front door: schedinit, and `step(sched, event, now) -> effects`.

An event is an M's message (already decoded by protocol/), the agent's report that an M's process
is gone, the end of one of sysmon's sleeps, or the end of the wait of the M blocked in netpoll.
`step` checks that the event makes sense for the state (an M that exists, in the right epoch,
doing what its message says; prepare.py) before changing anything: a bad
event raises BadEvent and leaves the state as it was (BadEvent is defined with those checks; the
shell and the tests import it from here, the front door). Then the event's handler (handlers.py)
runs the Go function it enters. A Go throw becomes a Fatal effect.
No I/O, no clock (now is passed in, in Go nanoseconds), no randomness but sched.rng (seeded).
"""
from __future__ import annotations

import random

from coordinator.runtime import effects as fx
from coordinator.runtime.handlers import HANDLERS
from coordinator.runtime.newm import allocm, mstartm0, newsysm
from coordinator.runtime.newproc import newproc1
from coordinator.runtime.prepare import BadEvent, prepare
from coordinator.runtime.runq import runqput
from coordinator.runtime.runtime_main import RUNTIME_CHANS, with_runtime
from coordinator.runtime.sched import P, Sched, _Prunning, hchan
from protocol.ops import is_cgo
from protocol.throw import Throw


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
    handler = HANDLERS.get(ev.get("t"))
    if handler is None:
        raise BadEvent(f"core: no handler for event type {ev.get('t')!r}")
    ctx = prepare(sched, ev)
    sched.now = max(sched.now, now)
    sched.fx = []
    try:
        handler(sched, ev, *ctx)
    except Throw as t:
        sched.fx.append(fx.Fatal(t.message, tuple(t.lines())))
    out, sched.fx = sched.fx, []
    return out
