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
- `run()`: a deterministic discrete-event dry run that plays the goroutine programs through the op
  stepper (protocol/stepper.py, as the real M does) with a virtual clock: fork, wake and exit
  latencies, op durations, sysmon's sleeps, the netpoll wait. Handy to check a scenario's outcome
  without forking anything.

`World` (its state and `deliver`) is composed of one piece a file: world_procs.py (the record of
the processes, `Proc`, `pos`, `WorldError`), world_send.py (the events it sends: `Sending`),
world_route.py (the effects carried out: `Routing`), world_checks.py (`agreement`, `legit_fatal`,
`cgo_hang`, `snapshot`: `Checks`) and world_dryrun.py (`run()`: `DryRun`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.runtime import effects as fx
from coordinator.runtime.core import schedinit, step
from coordinator.runtime.sched import G
from coordinator.runtime.sysmon import sysmon_usleep
from protocol.ops import compile_programs
from tests.world_checks import Checks
from tests.world_dryrun import DryRun
from tests.world_procs import EXITED, FORKED, M_EVENTS, PARKED, RUNNING, SYSCALL, WorldError
from tests.world_route import Routing
from tests.world_send import Sending


@dataclass
class World(Sending, Routing, Checks, DryRun):
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
