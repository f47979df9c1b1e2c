"""The scheduler's state: Go's `schedt`, `m`, `p` and `g` (runtime2.go), as plain records.

Everything here is data. The functions that change it live in the other modules of the core
(proc.py, runq.py, schedule.py, syscall.py, lockosthread.py, sysmon.py); none of them touches
a socket, a clock or a process. The coordinator's single event loop is `sched.lock`.
"""
from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum

from coordinator.runtime.note import Note

# P status codes (runtime2.go).
_Pidle, _Prunning, _Psyscall, _Pgcstop, _Pdead = 0, 1, 2, 3, 4

# G status codes (runtime2.go); 5 (_Gmoribund_unused) and 7 (_Genqueue_unused) are unused in Go too.
_Gidle, _Grunnable, _Grunning, _Gsyscall, _Gwaiting, _Gdead = 0, 1, 2, 3, 4, 6

# Wait reasons (runtime2.go waitReasonStrings) for the ops that park a goroutine.
waitReasonZero = ""
waitReasonSelectNoCases = "select (no cases)"
waitReasonSleep = "sleep"
waitReasonSemacquire = "semacquire"  # sync.WaitGroup.Wait: the "wait" op
waitReasonChanReceive = "chan receive"  # runtime.main's <-c in gcenable
waitReasonChanSend = "chan send"
waitReasonForceGCIdle = "force gc (idle)"  # forcegchelper
waitReasonGCSweepWait = "GC sweep wait"  # bgsweep
waitReasonGCScavengeWait = "GC scavenge wait"  # bgscavenge

_GoidCacheBatch = 16  # proc.go: goids are handed to each P in batches of 16

_LOCAL_RUNQ_SIZE = 256  # len(p.runq) in runtime2.go
forcePreemptNS = 10_000_000  # proc.go: a G runs at most 10ms before sysmon preempts it
syscallLazyNS = 10_000_000  # retake: "syscallwhen+10*1000*1000 > now"


@dataclass(eq=False)
class SysmonTick:
    """Go's `sysmontick`: what sysmon saw of a P on its last pass."""
    schedtick: int = 0
    schedwhen: int = 0
    syscalltick: int = 0
    syscallwhen: int = 0


class Parked(StrEnum):
    """The blocking Go call an M sleeps in (m.parked; see the package doc on how one is re-enacted).
    Values are the names the trace and post-mortems print."""
    NO = ""  # not asleep
    STOPM = "stopm"  # notesleep(&m.park) in stopm: idle on sched.midle, or woken with nextp
    STOPLOCKEDM = "stoplockedm"  # notesleep(&m.park) in stoplockedm, with its locked goroutine
    M0 = "m0"  # m0 wedged by mexit (its locked goroutine exited): never woken
    NETPOLL = "netpoll"  # in findrunnable's netpoll(delay), until the next timer or a netpollBreak


class Resume(StrEnum):
    """Where a stopm returns to once its M is woken: the caller's next line in Go."""
    NO = ""  # not in stopm
    FINDRUNNABLE = "findrunnable"  # findrunnable's stopm; goto top
    SCHEDULE = "schedule"  # exitsyscall0's and startlockedm's stopm; then schedule()


@dataclass(eq=False)
class G:
    """Go's `g`, reduced to what the M machinery needs plus the goroutine's place in its program."""
    goid: int
    prog: str
    status: int = _Grunnable
    waitreason: str = waitReasonZero
    m: M | None = None  # the M running it (gp.m)
    lockedm: M | None = None
    # Position in the program (protocol/ops.py): instruction index, loop counters, µs left of a timed op.
    pc: int = 0
    loops: list[int] = field(default_factory=list)
    left: int = 0
    parent: G | None = None
    live_children: int = 0  # goroutines it started that have not exited ("wait" op)
    preempt: bool = False  # gp.preempt: sysmon asked it to yield
    lostInt: int = 0  # not in Go: lockOSThread calls whose M died (mdead); its unlockOSThread owes none
    sysexit0: bool = False  # left a syscall through exitsyscall0: resumes in exitsyscall (execute)


@dataclass(eq=False)
class P:
    """Go's `p`: the right to run Go code."""
    id: int
    status: int = _Pidle
    m: M | None = None
    runq: deque = field(default_factory=deque)  # bounded at _LOCAL_RUNQ_SIZE; overflow goes global
    runnext: G | None = None
    schedtick: int = 0
    syscalltick: int = 0
    sysmontick: SysmonTick = field(default_factory=SysmonTick)
    gFree: list = field(default_factory=list)  # dead Gs for gfget to reuse (Go's p.gFree, n = len)
    goidcache: int = 0  # the next goid of this P's batch (newproc1)
    goidcacheend: int = 0
    # Go's p.timers: a heap of (when_ns, seq, G) of the goroutines that slept on this P (timers.py).
    timers: list = field(default_factory=list)

    @property
    def gfreecnt(self) -> int:
        """Go's p.gFree.n (scheddetail's gfreecnt=)."""
        return len(self.gFree)


@dataclass(eq=False)
class M:
    """Go's `m`: one OS thread, here one worker process (or, for sysmon and the template thread,
    a part of the coordinator / the host agent: `virtual`)."""
    id: int
    host: str = "local"
    epoch: int = 1
    p: P | None = None
    nextp: P | None = None
    oldp: P | None = None
    spinning: bool = False
    blocked: bool = False  # inside notesleep (scheddetail's blocked=)
    lockedg: G | None = None
    lockedExt: int = 0
    lockedInt: int = 0
    incgo: bool = False
    curg: G | None = None
    park: Note = field(default_factory=Note)
    freeWait: int = 0
    mstartfn: str | None = None  # "mspinning", "sysmon", "templateThread" or None
    syscalltick: int = 0
    slot: int = -1  # its g0 stack's slot in the host's arena (-1: no stack of ours)
    virtual: bool = False  # no worker process of its own (sysmon, template thread, cgo's extra M)
    started: bool = False  # mstart has run (it said hello)
    parked: Parked = Parked.NO  # how it sleeps (the blocking Go call it is in), NO while it runs
    resume: Resume = Resume.NO  # where a parked stopm returns to
    wasSpinning: bool = False  # findrunnable's wasSpinning, kept while the M blocks in netpoll
    exited: bool = False
    pid: int = 0


@dataclass(eq=False)
class hchan:
    """Go's hchan (chan.go) for the runtime's own buffered channels: only counts matter."""
    dataqsiz: int
    qcount: int = 0
    recvq: deque = field(default_factory=deque)  # Gs parked in chanrecv
    sendq: deque = field(default_factory=deque)  # Gs parked in chansend


@dataclass(eq=False)
class NewmHandoff:
    """Go's `newmHandoff`: Ms that a locked or cgo thread asked the template thread to create."""
    newm: list[M] = field(default_factory=list)
    waiting: bool = False
    wake: Note = field(default_factory=Note)
    haveTemplateThread: int = 0


@dataclass(eq=False)
class Sched:
    """Go's `schedt` plus the globals the M machinery reads (allm, allp, allgs, gomaxprocs)."""
    gomaxprocs: int
    maxmcount: int = 10000
    seed: int = 1
    schedtrace_ms: int = 0
    scheddetail: bool = False

    mnext: int = 0
    nmfreed: int = 0
    nmsys: int = 0
    nmidlelocked: int = 0
    midle: list[M] = field(default_factory=list)  # LIFO, as Go's schedlink list
    nmidle: int = 0
    pidle: list[P] = field(default_factory=list)  # LIFO, as Go's p.link list
    npidle: int = 0
    nmspinning: int = 0
    runq: deque = field(default_factory=deque)  # the global run queue
    runqsize: int = 0
    freem: list[M] = field(default_factory=list)
    newmHandoff: NewmHandoff = field(default_factory=NewmHandoff)
    gcwaiting: int = 0  # no GC here: always 0, printed by scheddetail
    stopwait: int = 0
    sysmonwait: int = 0
    sysmonnote: Note = field(default_factory=Note)
    # The netpoller (netpoll.go): no network here, so netpollWaiters is always 0 and only timers
    # make an M block in netpoll. lastpoll is 0 while an M blocks there (findrunnable's
    # Xchg64(&sched.lastpoll, 0)); otherwise the time of the last poll (schedinit: nanotime()).
    lastpoll: int = 1
    pollUntil: int = 0
    netpollInited: int = 0
    netpollWakeSig: int = 0  # netpollBreak's byte in the pipe, not yet read by a blocking netpoll
    pollm: M | None = None  # not in Go (epoll knows): the M blocked in netpoll, whose process a Wake wakes

    allm: dict[int, M] = field(default_factory=dict)
    allp: list[P] = field(default_factory=list)
    allgs: list[G] = field(default_factory=list)
    goids: dict[int, G] = field(default_factory=dict)  # goid -> G (goids are not allgs' order)
    goidgen: int = 0
    gFree: list = field(default_factory=list)  # Go's sched.gFree: dead Gs moved off a P (gfput)
    ngsys: int = 0  # Go's sched.ngsys: system goroutines (isSystemGoroutine) and extra Ms' Gs
    iscgo: bool = False  # a cgo binary: the scenario has a cgo op (Go's iscgo)
    cgoHasExtraM: bool = False
    extram: list[M] = field(default_factory=list)  # Go's extram list (newextram)
    extraMCount: int = 0
    # Not in Go: Ms of a cgo binary that returned from mstart (mexit with osStack): their process
    # (the thread) frees its own g0 slot; we free it when the agent reports the process gone.
    osstackm: list[M] = field(default_factory=list)
    chans: dict[str, hchan] = field(default_factory=dict)  # the runtime's channels, by name
    mainStarted: bool = False
    m0: M | None = None
    sysmonm: M | None = None
    templatem: M | None = None

    # sysmon's loop state (proc.go sysmon: idle, delay) and schedtrace's.
    sysmon_idle: int = 0
    sysmon_delay: int = 0
    usleep_slack_ns: int = 0  # not in Go: the OS's lateness of each of sysmon's usleeps (sysmon.py)
    lasttrace: int = 0
    starttime: int = 0

    timerseq: int = 0  # orders timers of the same `when` (Go's heap has no such tie-break)

    # g0 stack slots per host: the free slots of each host's arena (allocm / stackfree).
    stackfree_slots: dict[str, list[int]] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    placement: str = "least-loaded"  # or "round-robin": where agent-forked Ms go (placehost)
    rr: int = -1

    rng: random.Random = field(default_factory=random.Random)
    stats: Counter = field(default_factory=Counter)
    # The step being handled: its clock (Go ns, passed in) and the effects it has produced so far.
    now: int = 0
    fx: list = field(default_factory=list)
    exit_code: int | None = None  # set when main returns (Go's exit(0))

    def mcount(self) -> int:
        """Go's mcount(): Ms created (or reserved) minus those freed."""
        return self.mnext - self.nmfreed


def isSystemGoroutine(gp: G) -> bool:
    """Go's isSystemGoroutine (traceback.go, fixed=false): started in a runtime. function other
    than runtime.main. Program names of scenarios have no dot, so only the runtime's qualify."""
    return gp.prog.startswith("runtime.") and gp.prog != "runtime.main"


def runqempty(p: P) -> bool:
    """Go's runqempty."""
    return p.runnext is None and not p.runq
