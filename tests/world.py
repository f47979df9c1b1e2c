"""An in-memory world for the pure core: it plays the M processes, the host agent and sysmon's timer.

The world does what the process shell does (coordinator/shell/loop.py, worker/m.py, worker/agent.py), with
no process and no socket: it calls `schedinit` and `step`, and carries each effect out on its own
record of the M processes (`Proc`):

    Fork    -> a process will start: state "forked" until its hello is delivered
    Execute -> the process runs goroutine g ("running")
    Cont    -> it goes on with its goroutine ("running", or "syscall" after entersyscall*)
    Park    -> it sleeps on m.park ("parked"); a Wake that arrived is delivered as "woken" only then
    Wake    -> remembered on the process until it is parked, then "woken" can be delivered
    Exit    -> the process exits ("exited"); "mexited" is delivered later ("gone")
    Preempt -> remembered on the process if it still runs that goroutine (it may then gosched)
    NetpollSleep -> the M's wait in netpoll ends at `until` ("netpoll" is delivered; NetpollBreak: now)
    SysmonSleep -> sysmon's next event ("sysmon" after a usleep, "sysmon_wake" after the deep sleep,
                   at once when a WakeSysmon comes)
    StackFree, Trace -> recorded; ProgramExit / Fatal end the run

The world keeps its own view of the processes, independently of the core's records, and checks that
the two agree after every step (`agreement`), as well as `coordinator.runtime.invariants.check`. Each reply
must go to the M whose message is being handled, exactly one per M message.

Two ways to drive it:
- by hand (tests, the Hypothesis state machine): `hello(m)`, `woken(m)`, `mexited(m)`, the goroutine
  operations of a running M (`newproc`, `entersyscall`, `exitsyscall`, `gopark`, `goexit`, ...),
  `sysmon()` and `netpoll()`; `actions()` lists what can happen next;
- `run()`: a deterministic discrete-event dry run that interprets the goroutine programs
  (protocol/ops.py) with a virtual clock: fork, wake and exit latencies, op durations, sysmon's
  sleeps, the netpoll wait. Handy to check a scenario's outcome without forking anything.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from coordinator.runtime import effects as fx
from coordinator.runtime import invariants
from coordinator.runtime.core import schedinit, step
from coordinator.runtime.sched import G, _Gdead, _Grunning, _Gsyscall, isSystemGoroutine
from coordinator.runtime.sysmon import sysmon_usleep
from protocol.messages import G_REQUESTS, M_REQUESTS
from protocol.ops import compile_programs
from protocol.stepper import EXITSYSCALL, SYSCALL_ENTRIES, Request, Step, next_step

FORKED, RUNNING, SYSCALL, PARKED, EXITED, GONE = "forked", "running", "syscall", "parked", "exited", "gone"

#: events an M process sends about its current goroutine (they get exactly one reply)
G_EVENTS = G_REQUESTS
M_EVENTS = M_REQUESTS  # G_EVENTS, hello, woken

#: Fatal messages that are legitimate Go outcomes (each still checked by `legit_fatal`)
LEGIT_FATALS = ("all goroutines are asleep - deadlock!", "no goroutines (main called runtime.Goexit) - deadlock!",
                "thread exhaustion")


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


@dataclass
class World:
    """See the module docstring. `programs` is source (compiled here) unless `compiled`."""
    programs: dict
    gomaxprocs: int = 2
    slots: int = 4096
    maxmcount: int = 10000
    seed: int = 1
    schedtrace_ms: int = 0
    scheddetail: bool = False
    usleep_slack_us: float = 0  # sysmon's usleeps as long as asked (the scenario's default is the OS's)
    check: bool = True
    compiled: bool = False
    hosts: dict | None = None
    # dry-run latencies (ns of Go time)
    fork_ns: int = 50_000
    wake_ns: int = 5_000
    exit_ns: int = 10_000

    now: int = 0
    procs: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # (now, event, effects)
    fatal: fx.Fatal | None = None
    exit_code: int | None = None
    traces: list = field(default_factory=list)
    stackfrees: list = field(default_factory=list)
    forks: list = field(default_factory=list)
    sysmon_asleep: bool = False  # in its deep sleep (SysmonSleep with note)
    sysmon_wakeup: bool = False  # a WakeSysmon came while asleep
    created: int = 1  # goroutines created (goroutine 1 by schedinit), system goroutines not counted
    recovered: list = field(default_factory=list)  # Recovered effects (an M died or was fenced)
    unfinished: bool = False  # run() stopped on max_steps

    def __post_init__(self) -> None:
        if not self.compiled:
            self.programs = compile_programs(self.programs)
        self.sched, effects = schedinit(self.gomaxprocs, self.programs, self.hosts or {"local": self.slots},
                                        maxmcount=self.maxmcount, seed=self.seed,
                                        schedtrace_ms=self.schedtrace_ms, scheddetail=self.scheddetail,
                                        usleep_slack_us=self.usleep_slack_us)
        self.programs = self.sched.programs  # the scenario's and the runtime's (runtime.main...)
        self._agenda: list = []
        self._agenda_started = False
        self._sysmon = (0, False, 0)  # sysmon's sleep: (until, deep, when it began)
        self._poll_until = 0  # when the wait of the M blocked in netpoll ends
        self._reforked: set = set()
        self._sysmon_gen = 0
        self._seq = 0
        self._reply_state = RUNNING
        self.history.append((self.now, {"t": "schedinit"}, effects))
        self._route(effects + [sysmon_usleep(self.sched)], None)  # and sysmon's first usleep(20)
        self._check()

    # --- state ---------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.fatal is not None or self.exit_code is not None

    def g(self, goid: int) -> G:
        """The core's record of goroutine goid (sched.goids: goids come from per-P batches)."""
        gp = self.sched.goids[goid]
        assert gp.goid == goid
        return gp

    def in_state(self, state: str) -> list[int]:
        return [m for m, p in self.procs.items() if p.state == state]

    def running(self) -> list[int]:
        return self.in_state(RUNNING)

    def in_syscall(self) -> list[int]:
        return self.in_state(SYSCALL)

    def forked(self) -> list[int]:
        return self.in_state(FORKED)

    def wakeable(self) -> list[int]:
        return [m for m, p in self.procs.items() if p.state == PARKED and p.wake is not None]

    def exited(self) -> list[int]:
        return self.in_state(EXITED)

    def preempted(self) -> list[int]:
        return [m for m, p in self.procs.items() if p.state == RUNNING and p.preempt == p.g]

    def actions(self) -> list[tuple[str, int | None]]:
        """What can happen next: (kind, m)."""
        if self.finished:
            return []
        out: list = [("hello", m) for m in self.forked()]
        out += [("woken", m) for m in self.wakeable()]
        out += [("mexited", m) for m in self.exited()]
        out += [("op", m) for m in self.running()]
        out += [("exitsyscall", m) for m in self.in_syscall()]
        out.append(("sysmon", None))
        if self.polling() is not None:
            out.append(("netpoll", self.polling()))
        return out

    def polling(self) -> int | None:
        """The M blocked in netpoll whose wait is not over yet, if any."""
        mp = self.sched.pollm
        return mp.id if mp is not None and mp.parked == "netpoll" and mp.park.key == 0 else None

    # --- delivering events ---------------------------------------------------------------------

    def deliver(self, ev: dict, reply_state: str = RUNNING) -> list:
        """step() one event, route its effects, check the state. `reply_state` is where a Cont
        leaves the sender (SYSCALL after entersyscall*)."""
        if self.finished:
            raise WorldError(f"world: the run has ended ({self.fatal or self.exit_code}); cannot deliver {ev}")
        effects = step(self.sched, ev, self.now)
        self.history.append((self.now, ev, effects))
        sender = ev["m"] if ev["t"] in M_EVENTS else None
        self._reply_state = reply_state
        self._route(effects, sender)
        self._check()
        return effects

    def hello(self, m: int) -> list:
        p = self._proc(m, FORKED)
        p.state = "starting"
        p.pid = 10_000 + m
        return self.deliver({"t": "hello", "m": m, "epoch": p.epoch, "pid": p.pid})

    def woken(self, m: int) -> list:
        p = self._proc(m, PARKED)
        if p.wake is None:
            raise WorldError(f"world: M{m} has no wake to deliver")
        p.wake = None
        p.state = "waking"
        return self.deliver({"t": "woken", "m": m, "epoch": p.epoch, "lat": 0.0})

    def mexited(self, m: int) -> list:
        p = self._proc(m, EXITED)
        p.state = GONE
        return self.deliver({"t": "mexited", "m": m, "pid": p.pid, "status": 0})

    def send(self, m: int, t: str, at=None, **fields) -> list:
        """An M's message about its goroutine: m, epoch, g (and pos when `at` is given). A Cont
        leaves it in a syscall after entersyscall*, else running."""
        p = self._proc(m, SYSCALL if t == EXITSYSCALL.t else RUNNING)
        ev = {"t": t, "m": m, "epoch": p.epoch, "g": p.g, **fields}
        if at is not None:
            ev["pos"] = at
        p.state = "sending"
        p.preempt = None if t == "gosched" else p.preempt
        if t == "lockosthread":  # the thread's own count of LockOSThread calls (_check_fork)
            p.locks += 1
        elif t == "unlockosthread":
            p.locks = max(0, p.locks - 1)
        out = self.deliver(ev, SYSCALL if t in SYSCALL_ENTRIES else RUNNING)
        if t == "newproc" and not fields["prog"].startswith("runtime."):  # isSystemGoroutine: not counted
            self.created += fields["n"]
        return out

    def request(self, m: int, req: Request) -> list:
        """An M's request about its goroutine as the op stepper makes it (protocol/stepper.py)."""
        fields = dict(req.fields)
        return self.send(m, req.t, at=fields.pop("pos", None), **fields)

    def newproc(self, m: int, prog: str, n: int = 1, at=None) -> list:
        return self.send(m, "newproc", at=at or pos(), prog=prog, n=n)

    def entersyscall(self, m: int, cgo: bool = False, at=None) -> list:
        return self.send(m, "entersyscall", at=at or pos(), cgo=cgo)

    def entersyscallblock(self, m: int, at=None) -> list:
        return self.send(m, "entersyscallblock", at=at or pos())

    def exitsyscall(self, m: int) -> list:
        return self.send(m, EXITSYSCALL.t)

    def lock(self, m: int, at=None) -> list:
        return self.send(m, "lockosthread", at=at or pos())

    def unlock(self, m: int, at=None) -> list:
        return self.send(m, "unlockosthread", at=at or pos())

    def gopark(self, m: int, reason: str, us: int = 0, at=None) -> list:
        return self.send(m, "gopark", at=at or pos(), reason=reason, us=us)

    def runtime(self, m: int, op: str, arg: str = "", at=None) -> list:
        """A runtime op (protocol/ops.py RUNTIME_OPS) of a runtime program (runtime.main...)."""
        return self.send(m, "runtime", at=at or pos(), op=op, arg=arg)

    def gosched(self, m: int, at=None) -> list:
        return self.send(m, "gosched", at=at or pos())

    def goexit(self, m: int, main_returns: bool = False, at=None) -> list:
        """The goroutine ends: Goexit (or, with main_returns, goroutine 1 returns from main)."""
        if at is None:
            at = pos(len(self.programs[self.g(self.procs[m].g).prog]) if main_returns else 0)
        return self.send(m, "goexit", at=at)

    # --- faults (not Go: an M process dies; see coordinator/runtime/mdead.py) --------------------------

    def live(self) -> list[int]:
        return [m for m, p in self.procs.items() if p.state in (FORKED, RUNNING, SYSCALL, PARKED)]

    def kill(self, m: int, status: int = -9) -> list:
        """M m's process dies unexpectedly: the agent reports it gone (mexited of a live M)."""
        p = self.procs[m]
        if p.state not in (FORKED, RUNNING, SYSCALL, PARKED):
            raise WorldError(f"world: M{m} is {p.state}, not alive")
        p.state, p.g, p.wake, p.preempt = GONE, None, None, None
        p.token += 1
        return self.deliver({"t": "mexited", "m": m, "pid": p.pid, "status": status})

    def fence(self, m: int, why: str = "lost") -> list:
        """The shell declares M m lost: fenced (it may still run; it is told to exit)."""
        p = self.procs[m]
        if p.state not in (FORKED, RUNNING, SYSCALL, PARKED):
            raise WorldError(f"world: M{m} is {p.state}, not alive")
        p.state, p.g, p.wake, p.preempt = EXITED, None, None, None
        p.token += 1
        return self.deliver({"t": "mdead", "m": m, "why": why, "gone": False})

    def refork(self, m: int) -> list:
        """A fork order that never became a process: fork again (a new incarnation)."""
        p = self._proc(m, FORKED)
        self._reforked = {m}
        return self.deliver({"t": "refork", "m": m, "cepoch": p.epoch})

    def sysmon(self, extra_ns: int = 0, at: int | None = None) -> list | None:
        """One sysmon pass: the end of its current sleep (+ extra_ns; or `at` if that is later), then
        its event. The deep sleep ends at once if a WakeSysmon came ("sysmon_wake", then the
        pass), else after its timeout. Returns the pass's effects without its next SysmonSleep, or
        None when the pass went into the deep sleep."""
        until, deep, _ = self._sysmon
        if not (deep and self.sysmon_wakeup):
            self.now = max(max(self.now, until) + extra_ns, at if at is not None else 0)
        self.sysmon_wakeup = False
        out = self.deliver({"t": "sysmon_wake" if deep else "sysmon"})
        if self.finished:
            return None
        if self.sysmon_asleep:
            return None
        return [e for e in out if not isinstance(e, fx.SysmonSleep)]

    def netpoll(self) -> list | None:
        """The wait of the M blocked in netpoll is over: advance the clock to its deadline (if later)
        and deliver "netpoll" (its process gets a Wake; `woken` then goes on in findrunnable)."""
        m = self.polling()
        if m is None:
            return None
        self.now = max(self.now, self._poll_until)
        return self.deliver({"t": "netpoll", "m": m})

    def advance(self, ns: int) -> None:
        self.now += ns

    # --- carrying effects out ----------------------------------------------------------------

    def _proc(self, m: int, state: str) -> Proc:
        p = self.procs.get(m)
        if p is None or p.state != state:
            raise WorldError(f"world: M{m} is {p.state if p else 'unknown'}, not {state}")
        return p

    def _route(self, effects: list, sender: int | None) -> None:
        replies = [e for e in effects if isinstance(e, fx.REPLIES)]
        ends = [e for e in effects if isinstance(e, (fx.Fatal, fx.ProgramExit))]
        for e in replies:
            if e.m != sender:
                raise WorldError(f"world: reply {e} goes to M{e.m}, not to the sender M{sender}")
        if sender is not None and len(replies) != 1 and not ends:
            raise WorldError(f"world: M{sender}'s message got {len(replies)} replies: {effects}")
        if sender is None and replies:
            raise WorldError(f"world: replies to no M's message: {effects}")
        for e in effects:
            if isinstance(e, fx.Fork):
                old = self.procs.get(e.m)
                if old is not None and not (old.state == FORKED and e.epoch > old.epoch):  # refork: epoch+1
                    raise WorldError(f"world: Fork of M{e.m}, which already exists ({old.state}, epoch {old.epoch})")
                if e.forker is not None and e.forker != sender:
                    raise WorldError(f"world: M{e.m} forked from M{e.forker} while M{sender}'s message is handled")
                if e.forker is not None and e.template:
                    raise WorldError(f"world: M{e.m} both forked from M{e.forker} and through the template")
                if old is None:
                    self._check_fork(e, sender)
                self.procs[e.m] = Proc(m=e.m, epoch=e.epoch, state=FORKED, host=e.host, slot=e.slot,
                                       forker=e.forker, template=e.template, nextp=e.nextp, spinning=e.spinning)
                self.forks.append(e)
                self._plan(e.m, "hello", self.now + self.fork_ns)
            elif isinstance(e, fx.Execute):
                p = self.procs[e.m]
                p.state, p.g, p.preempt = RUNNING, e.g, None
                gp = self.g(e.g)
                p.pos = (gp.pc, tuple(gp.loops), gp.left)
                self._plan(e.m, "op", self.now)
            elif isinstance(e, fx.Cont):
                p = self.procs[e.m]
                p.state = self._reply_state
                if p.state == RUNNING:
                    self._plan(e.m, "op", self.now)
            elif isinstance(e, fx.Park):
                p = self.procs[e.m]
                p.state, p.g, p.preempt = PARKED, None, None
                p.token += 1
                if p.wake is not None:
                    self._plan(e.m, "woken", self.now + self.wake_ns)
            elif isinstance(e, fx.Wake):
                p = self.procs.get(e.m)
                if p is None or p.wake is not None or p.state not in (PARKED,):
                    raise WorldError(f"world: Wake for M{e.m}, which is "
                                     f"{'unknown' if p is None else p.state} (pending wake {p and p.wake})")
                p.wake = e.nextp
                self._plan(e.m, "woken", self.now + self.wake_ns)
            elif isinstance(e, fx.Exit):
                p = self.procs[e.m]
                p.state, p.g = EXITED, None
                self._plan(e.m, "mexited", self.now + self.exit_ns)
            elif isinstance(e, fx.Preempt):
                p = self.procs.get(e.m)
                if p is not None and p.state in (RUNNING, "sending") and p.g == e.g:
                    p.preempt = e.g
                    if p.run_end is not None and p.run_end > self.now:
                        self._plan(e.m, "gosched", self.now)
            elif isinstance(e, fx.StackFree):
                p = self.procs.get(e.m)
                if p is None or p.state != GONE:
                    raise WorldError(f"world: StackFree of M{e.m}'s slot while its process is "
                                     f"{'unknown' if p is None else p.state}")
                if (p.host, p.slot) != (e.host, e.slot):
                    raise WorldError(f"world: StackFree {e} but M{e.m} had slot {p.host}/{p.slot}")
                self.stackfrees.append(e)
            elif isinstance(e, fx.Trace):
                self.traces.append(e.text)
            elif isinstance(e, fx.SysmonSleep):
                self._sysmon = (e.until, e.note, self.now)
                self.sysmon_asleep = e.note
                if self._agenda_started:
                    self._sysmon_gen += 1
                    self._plan(None, "sysmon_wake" if e.note else "sysmon", e.until)
            elif isinstance(e, fx.WakeSysmon):
                if self.sysmon_asleep:
                    self.sysmon_wakeup = True
                    if self._agenda_started:
                        self._sysmon_gen += 1
                        self._plan(None, "sysmon_wake", self.now)
            elif isinstance(e, fx.NetpollSleep):
                p = self.procs.get(e.m)
                if p is None or p.state != PARKED:
                    raise WorldError(f"world: M{e.m} blocks in netpoll but is {p and p.state}")
                self._poll_until = e.until
                self._plan(e.m, "netpoll", e.until)
            elif isinstance(e, fx.NetpollBreak):
                if self.polling() != e.m:
                    raise WorldError(f"world: NetpollBreak for M{e.m}, which is not blocked in netpoll")
                self._poll_until = self.now
                self._plan(e.m, "netpoll", self.now)
            elif isinstance(e, fx.ProgramExit):
                self.exit_code = e.code
            elif isinstance(e, fx.Fatal):
                self.fatal = e
            elif isinstance(e, fx.Recovered):
                self.recovered.append(e)
        for m, p in self.procs.items():
            if p.state in ("starting", "waking", "sending") and not self.finished:
                raise WorldError(f"world: M{m} got no reply")
        if not self.finished and any(isinstance(e, fx.Fork) and e.m not in self._reforked for e in effects):
            # allocm ran: it freed the g0 stack of every exited M whose process is gone
            left = [m.id for m in self.sched.freem if m.freeWait == 0]
            if left:
                raise WorldError(f"world: allocm ran but left the stacks of gone Ms {left} on freem")
        self._reforked = set()

    def _check_fork(self, e: fx.Fork, sender: int | None) -> None:
        """newm: from a locked (or cgo) M through the template thread (golang/go#28979), else cloned
        from the calling M's process; sysmon and the shell's recovery have no process (the agent forks)."""
        s = self.sched
        caller = None
        if sender is not None:
            caller = s.allm.get(sender) or next((m for m in (*s.freem, *s.osstackm) if m.id == sender), None)
        # The world's own count of the thread's LockOSThread calls (not the core's lockedExt).
        tainted = caller is not None and (self.procs[sender].locks > 0 or caller.incgo)
        if e.template != tainted:
            raise WorldError(f"world: M{e.m} forked {'through' if e.template else 'without'} the template, "
                             f"but its caller {'M' + str(sender) if sender is not None else '(no M)'} "
                             f"{'is' if tainted else 'is not'} locked/in cgo")
        want = None if (e.template or caller is None) else sender
        if e.forker != want:
            raise WorldError(f"world: M{e.m} forked by {e.forker}, expected {want}")
    def _check(self) -> None:
        if not self.check:
            return
        if self.fatal is not None:
            why = legit_fatal(self)
            if why:
                raise WorldError(f"world: fatal {self.fatal.message!r} is not legitimate here: {why}")
            return
        if self.exit_code is not None:
            return
        errs = invariants.check(self.sched) + self.agreement()
        if errs:
            raise WorldError("invariants broken after " + repr(self.history[-1][1]) + ":\n  " + "\n  ".join(errs))

    def agreement(self) -> list[str]:
        """Where the world's view of the M processes and the core's records differ."""
        errs = []
        s = self.sched
        freem = {x.id: x for x in (*s.freem, *s.osstackm)}
        freed = {e.m for e in self.stackfrees}
        for m, p in self.procs.items():
            mp = s.allm.get(m)
            if p.state in (EXITED, GONE):
                if mp is not None:
                    errs.append(f"world: M{m} exited but is in allm")
                if m not in freem and m not in freed:
                    errs.append(f"world: M{m} left freem but its g0 stack (slot {p.slot}) was never freed")
                fm = freem.get(m)
                if fm is not None and fm in s.osstackm:
                    if p.state == GONE:
                        errs.append(f"world: M{m} (cgo, its own stack) is gone but still waits for it")
                elif fm is not None and (fm.freeWait == 0) != (p.state == GONE):
                    errs.append(f"world: M{m} is {p.state} but its freeWait={fm.freeWait}")
                continue
            if mp is None:
                errs.append(f"world: M{m} is {p.state} but not in allm")
                continue
            if p.state == FORKED:
                if mp.started:
                    errs.append(f"world: M{m} has not said hello but the core has it started")
            elif p.state in (RUNNING, SYSCALL):
                gp = mp.curg
                want = _Grunning if p.state == RUNNING else _Gsyscall
                if mp.blocked or gp is None or gp.goid != p.g or gp.status != want:
                    errs.append(f"world: M{m} runs G{p.g} ({p.state}) but the core has curg="
                                f"{gp and gp.goid} status={gp and gp.status} blocked={mp.blocked}")
            elif p.state == PARKED:
                if not mp.blocked:
                    errs.append(f"world: M{m} sleeps but the core has it not blocked")
                if (p.wake is not None) != (mp.park.key != 0):
                    errs.append(f"world: M{m} has wake={p.wake} but park.key={mp.park.key}")
                if p.wake is not None and mp.parked == "netpoll":
                    if p.wake != -1 or mp.nextp is not None:
                        errs.append(f"world: M{m} in netpoll woken with P{p.wake}, nextp={mp.nextp and mp.nextp.id}")
                elif p.wake is not None and (mp.nextp is None or mp.nextp.id != p.wake) and mp.parked != "m0":
                    errs.append(f"world: M{m} woken with P{p.wake} but nextp={mp.nextp and mp.nextp.id}")
        for m, mp in s.allm.items():
            if not mp.virtual and m not in self.procs:
                errs.append(f"world: M{m} in allm but never forked")
        return errs

    # --- the dry run ---------------------------------------------------------------------------

    def _plan(self, m: int | None, kind: str, when: int) -> None:
        token = self._sysmon_gen
        if m is not None:
            p = self.procs[m]
            p.token += 1
            token = p.token
        self._seq += 1
        heapq.heappush(self._agenda, (when, self._seq, kind, m, token))

    def run(self, max_steps: int = 100_000, until_ns: int | None = None) -> "World":
        """Play the programs until the run ends (ProgramExit or Fatal), nothing is left to do,
        `until_ns` of Go time, or `max_steps` events."""
        if not self._agenda_started:
            self._agenda_started = True
            self._sysmon_gen += 1
            until, deep, _ = self._sysmon
            self._plan(None, "sysmon_wake" if deep else "sysmon", until)
        steps = 0
        while not self.finished and steps < max_steps:
            if not self._agenda:
                break
            when, seq, kind, m, token = self._agenda[0]
            if until_ns is not None and when > until_ns:
                break
            heapq.heappop(self._agenda)
            if m is not None and self.procs[m].token != token:
                continue
            if m is None and token != self._sysmon_gen:
                continue
            if m is None and self._only_sysmon_left():
                break
            self.now = max(self.now, when)
            steps += 1
            self._dry_step(kind, m)
        self.unfinished = not self.finished and steps >= max_steps
        return self

    def _only_sysmon_left(self) -> bool:
        """Nothing but sysmon would ever happen again (no process will act, no netpoll wait will end)."""
        if self.polling() is not None:
            return False
        return not any(p.state in (FORKED, RUNNING, SYSCALL, EXITED) or (p.state == PARKED and p.wake is not None)
                       for p in self.procs.values())

    def _dry_step(self, kind: str, m: int | None) -> None:
        if kind == "hello":
            self.hello(m)
        elif kind == "woken":
            if self.procs[m].state == PARKED and self.procs[m].wake is not None:
                self.woken(m)
        elif kind == "mexited":
            self.mexited(m)
        elif kind == "netpoll":
            if self.polling() == m:
                self.deliver({"t": "netpoll", "m": m})
        elif kind == "sysmon_wake":
            if self.sysmon_asleep:
                self.sysmon_wakeup = False
                self.deliver({"t": "sysmon_wake"})
        elif kind == "sysmon":
            self.deliver({"t": "sysmon"})
        elif kind == "op":
            self._dry_op(m)
        elif kind == "gosched":
            p = self.procs[m]
            if p.state == RUNNING and p.run_end is not None and p.run_end > self.now:
                left = -(-(p.run_end - self.now) // 1000)
                step = p.run_at
                p.run_end = p.run_at = None
                self.request(m, step.preempted(left))
        elif kind == "exitsyscall":
            if self.procs[m].state == SYSCALL:
                self.request(m, EXITSYSCALL)
        else:
            raise WorldError(f"world: unknown agenda entry {kind}")

    def _dry_op(self, m: int) -> None:
        """The goroutine running on M m goes on from p.pos: the op stepper's next step
        (protocol/stepper.py), with its time passing on the virtual clock."""
        p = self.procs[m]
        if p.state != RUNNING:
            return
        if p.run_end is not None:  # the "run" op in progress has ended
            p.run_end = p.run_at = None
        step = next_step(self.programs[self.g(p.g).prog], *p.pos)
        if not step.ends:
            p.pos = (step.next_pc, tuple(step.next_loops), 0)
        if step.request is None:  # a run op: it holds the P for run_us, unless preempted
            if step.run_us == 0:
                self._plan(m, "op", self.now)
                return
            p.run_end, p.run_at = self.now + step.run_us * 1000, step
            self._plan(m, "op", p.run_end)
            if p.preempt == p.g:  # a preemption request already pending: yield at once
                self._plan(m, "gosched", self.now)
            return
        self.request(m, step.request)
        if step.block_us is not None and self.procs[m].state == SYSCALL:  # the call blocks, then exitsyscall
            self._plan(m, "exitsyscall", self.now + step.block_us * 1000)

    def outcome(self) -> str:
        """"ok", "fatal: <message>", "unfinished" (run() spent its steps), or "stuck" (nothing left
        to do, no verdict: a lost wakeup)."""
        if self.exit_code is not None:
            return "ok"
        if self.fatal is not None:
            return "fatal: " + self.fatal.message
        return "unfinished" if self.unfinished else "stuck"


def legit_fatal(w: World) -> str:
    """Why the world's Fatal is NOT a legitimate Go outcome ("" when it is one)."""
    f, s = w.fatal, w.sched
    if f.message not in LEGIT_FATALS:
        return "not a Go outcome of a correct scheduler"
    if f.message == "thread exhaustion":
        if s.mcount() <= s.maxmcount:
            return f"mcount()={s.mcount()} is within maxmcount={s.maxmcount}"
        if f.lines != (f"runtime: program exceeds {s.maxmcount}-thread limit", "fatal error: thread exhaustion"):
            return f"lines {f.lines}"
        return ""
    # A deadlock: no goroutine can run again, and no M is running or about to.
    if any(p.timers for p in s.allp) and f.message.startswith("all goroutines"):
        return "timers are pending"
    users = [gp for gp in s.allgs if not isSystemGoroutine(gp)]  # checkdead skips the runtime's
    for gp in users:
        if gp.status not in (_Gdead, 4):
            return f"G{gp.goid} has status {gp.status}"
    waiting = sum(gp.status == 4 for gp in users)
    if f.message.startswith("no goroutines") and waiting:
        return f"{waiting} goroutines are waiting"
    if f.message.startswith("all goroutines") and not waiting:
        return "no goroutine is waiting"
    busy = [m for m, p in w.procs.items() if p.state in (FORKED, RUNNING, SYSCALL) or p.wake is not None]
    if busy:
        return f"Ms {busy} are still running or about to"
    return ""


def cgo_hang(w: World) -> str:
    """Why the world, stuck with nothing left to do, is NOT the deadlock of a cgo binary that Go's
    checkdead does not report (its extra M counts as running); "" when it is exactly that."""
    s = w.sched
    if not s.iscgo or s.extraMCount == 0:
        return "not a cgo binary with an extra M"
    if any(p.timers for p in s.allp):
        return "timers are pending"
    for gp in s.allgs:
        if not isSystemGoroutine(gp) and gp.status not in (_Gdead, 4):
            return f"G{gp.goid} has status {gp.status}"
    busy = [m for m, p in w.procs.items() if p.state in (FORKED, RUNNING, SYSCALL) or p.wake is not None]
    if busy:
        return f"Ms {busy} are still running or about to"
    if s.mcount() - s.nmidle - s.nmidlelocked - s.nmsys != s.extraMCount:
        return "checkdead's run counts more than the extra M"
    return ""


def snapshot(s) -> tuple:
    """Everything step() may change, as plain values: equal snapshots mean an untouched state."""
    def gid(g):
        return None if g is None else g.goid

    def pid_(p):
        return None if p is None else p.id

    def mid(m):
        return None if m is None else m.id
    ms = tuple((m.id, pid_(m.p), pid_(m.nextp), pid_(m.oldp), m.spinning, m.blocked, gid(m.lockedg), m.lockedExt,
                m.lockedInt, m.incgo, gid(m.curg), m.park.key, m.freeWait, m.syscalltick, m.slot, m.started,
                m.parked, m.resume, m.wasSpinning, m.exited, m.pid, m.epoch) for m in (*s.allm.values(), *s.freem))
    ps = tuple((p.id, p.status, mid(p.m), tuple(g.goid for g in p.runq), gid(p.runnext), p.schedtick,
                p.syscalltick, tuple(g.goid for g in p.gFree), p.goidcache, p.goidcacheend,
                tuple(vars(p.sysmontick).values())) for p in s.allp)
    gs = tuple((g.goid, g.prog, g.status, g.waitreason, mid(g.m), mid(g.lockedm), g.pc, tuple(g.loops), g.left,
                g.live_children, g.preempt, g.sysexit0) for g in s.allgs)
    counters = (s.mnext, s.nmfreed, s.nmsys, s.nmidlelocked, s.nmidle, s.npidle, s.nmspinning, s.runqsize,
                tuple(m.id for m in s.midle), tuple(p.id for p in s.pidle), tuple(g.goid for g in s.runq),
                s.sysmonwait, s.sysmon_idle, s.sysmon_delay, s.lasttrace, s.starttime, s.now, s.goidgen,
                tuple((p.id, w, q, g.goid) for p in s.allp for w, q, g in p.timers), s.newmHandoff.haveTemplateThread,
                s.lastpoll, s.pollUntil, s.netpollInited, s.netpollWakeSig, mid(s.pollm), s.sysmonnote.key,
                s.newmHandoff.waiting, s.newmHandoff.wake.key, tuple(sorted(s.stats.items())),
                tuple((h, tuple(sorted(v))) for h, v in s.stackfree_slots.items()), s.exit_code,
                s.rng.getstate(), s.ngsys, tuple(g.goid for g in s.gFree), tuple(s.goids),
                tuple((n, c.qcount, tuple(g.goid for g in c.recvq), tuple(g.goid for g in c.sendq))
                      for n, c in s.chans.items()), tuple(m.id for m in s.osstackm))
    return ms, ps, gs, counters
