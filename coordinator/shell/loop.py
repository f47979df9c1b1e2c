"""The coordinator's event loop: the shell around the pure core, composed of small pieces.

The loop is sched.lock: one thread takes one event at a time (an M's or agent's message, the end of
one of sysmon's sleeps, the end of the wait of the M blocked in netpoll, an agent's death), hands it
to core.step with the Go clock, and has the effects carried out. The pieces, one file each:
wire.py (the ROUTER socket), intake.py (frames in, routed by sender kind), hosts.py (the host
agents: hello, heartbeats, cut-off, rejoin), restarts.py (a local agent's death and restart),
actuator.py (effects out: forks, replies, wakes, preemptions, stack frees, timers), overdue.py
(unanswered orders: resent, fenced, reforked), clock.py (Go time <-> wall time; sysmon's and
netpoll's timers), delivery.py (the bookkeeping of resends and cached replies), faultport.py (what
the fault Injector may do), result.py (Outcome, Recorder, RunResult: what a run hands back). The
core's invariants are checked after every step.
"""
from __future__ import annotations

import logging
import math
import os
import time

import zmq

from coordinator.faults.inject import Injector
from coordinator.faults.plan import FaultPlan
from coordinator.observe.observer import Observer, touched_ms
from coordinator.runtime import effects as fx
from coordinator.runtime.checker import Checker
from coordinator.runtime.core import BadEvent, schedinit, step
from coordinator.runtime.sysmon import sysmon_usleep
from coordinator.shell.actuator import Actuator
from coordinator.shell.clock import Clock, Timers
from coordinator.shell.delivery import Delivery
from coordinator.shell.faultport import FaultPort
from coordinator.shell.hosts import AGENT_HELLO_TIMEOUT_S, AgentControl, Hosts
from coordinator.shell.intake import Intake
from coordinator.shell.overdue import Overdue
from coordinator.shell.restarts import AgentRestarts
from coordinator.shell.result import Outcome, Recorder, RunResult
from coordinator.shell.wire import Wire
from protocol.timing import RESEND_S
from protocol.transport import router

log = logging.getLogger("gmpsim.coordinator")

SOCKET_CHECK_S = 1.0  # how often a local run checks that its ipc socket file is still there

__all__ = ["AgentControl", "Coordinator", "Observer", "Outcome", "RunResult", "touched_ms"]


class Coordinator:
    """The pieces, put together, and the loop that drives them."""

    def __init__(self, scenario, endpoint: str, ctx: zmq.Context, trace_file, stop_flag=None,
                 observers: list[Observer] | None = None, agents: AgentControl | None = None,
                 curve=None, placement: str = "least-loaded"):
        self.sc = scenario
        self.endpoint = endpoint
        self.remote = endpoint.startswith("tcp://")  # agents on other hosts: heartbeats
        self.placement = placement
        self.trace_file = trace_file
        self.stop_flag = stop_flag or (lambda: False)
        self.observers = list(observers or [])
        self.sched = None
        self.out = Outcome()
        self.done = False
        self.run_s = self.idle_s = 0.0
        self.next_socket_check = 0.0
        self.check = getattr(scenario, "check_invariants", True)
        self.invariants = {"checked": 0, "violations": []}
        self.checker = Checker()
        self.rec = Recorder()
        self.clock = Clock(scenario.timescale)
        self.timers = Timers(self.clock)
        self.wire = Wire(router(ctx, endpoint, curve=curve), self.rec)
        self.poller = zmq.Poller()
        self.poller.register(self.wire.sock, zmq.POLLIN)
        self.delivery = Delivery(RESEND_S, getattr(scenario, "lost_after_ms", 2000.0) / 1000)
        self.hosts = Hosts(self, agents)
        self.restarts = AgentRestarts(self, agents, self.poller)
        self.intake = Intake(self)
        self.act = Actuator(self)
        self.overdue = Overdue(self)
        self.inject = Injector(FaultPlan(getattr(scenario, "faults", ()), scenario.seed), FaultPort(self))
        self.wire.faults = self.inject

    # --- start --------------------------------------------------------------------------------------

    def wait_agents(self, hosts: int = 1, timeout_s: float | None = AGENT_HELLO_TIMEOUT_S) -> None:
        self.hosts.wait_agents(hosts, timeout_s)

    def start(self) -> None:
        sc = self.sc
        self.sched, effects = schedinit(
            sc.gomaxprocs, sc.programs, {h: a["slots"] for h, a in self.hosts.agents.items()},
            maxmcount=sc.maxmcount, seed=sc.seed, schedtrace_ms=sc.schedtrace_ms,
            scheddetail=sc.scheddetail, placement=self.placement, usleep_slack_us=sc.usleep_slack_us)
        for host in self.hosts.agents:
            self.hosts.welcome(host)
        t0 = self.clock.start()
        for o in self.observers:
            o.started(self.sched, 0, t0)
        self.act.apply(effects, None, 0)
        self.observe(None, effects)
        e = sysmon_usleep(self.sched)  # sysmon's first usleep(20)
        self.timers.sysmon_sleep(e.until, e.note)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, time_limit_s: float) -> Outcome:
        try:
            return self._run(time_limit_s)
        finally:
            self.run_s = time.monotonic() - self.clock.t0  # the run itself, without start-up and shutdown

    def _run(self, time_limit_s: float) -> Outcome:
        self.idle_s = 0.0  # time spent waiting in poll: the rest of run_s is the loop's own work
        deadline = self.clock.t0 + time_limit_s
        while not self.done:
            now = time.monotonic()
            if now >= deadline:
                self.out = Outcome("aborted", reason=f"time limit of {time_limit_s:g}s reached")
                break
            if self.stop_flag():
                self.out = Outcome("aborted", reason="interrupted")
                break
            wake = min(x for x in (deadline, *self.timers.next_at(), self.delivery.next_at(),
                                   self.inject.next_at()) if x is not None)
            # zmq_poll counts whole ms: round up rather than spin (a busy coordinator steals the
            # CPU the Ms need); a timer may fire up to 1 ms late, as sysmon's usleep may.
            timeout_ms = math.ceil(max(0.0, (wake - now) * 1000))
            events = dict(self.poller.poll(timeout_ms))
            self.idle_s += time.monotonic() - now
            if self.wire.sock in events:
                self.intake.drain()  # what is there: each message is one event
            self.restarts.died(events)
            if self.done:
                break
            now = time.monotonic()
            if now >= self.next_socket_check:
                self.check_socket(now)
                if self.done:
                    break
            self.inject.tick(now)
            self.overdue.check(now)
            if self.remote:
                self.hosts.heartbeats(now)
            if not self.done:
                mid = self.timers.netpoll_due(now)
                if mid is not None:
                    self.event({"t": "netpoll", "m": mid}, None)
            if not self.done:
                ev = self.timers.sysmon_due(now)
                if ev is not None:
                    self.event(ev, None)
        return self.out

    def end(self, out: Outcome) -> None:
        """The run is over (main returned, a throw, an agent gone for good...)."""
        self.out = out
        self.done = True

    def check_socket(self, now: float) -> None:
        """A local run's ipc socket file removed (by hand, a tmp cleaner): no new M could ever
        connect; say so and stop instead of stalling."""
        self.next_socket_check = now + SOCKET_CHECK_S
        path = self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else ""
        if path and not path.startswith("@") and not os.path.exists(path):
            msg = f"the run's socket {path} was removed: new Ms cannot connect"
            log.error("%s", msg)
            self.end(Outcome("aborted", reason=msg))

    # --- events -------------------------------------------------------------------------------------

    def event(self, ev: dict, requester: int | None, req_seq: int = 0) -> None:
        self.rec.events += 1
        try:
            effects = step(self.sched, ev, self.clock.go_now())
        except BadEvent as e:
            self.rec.bad_events += 1
            log.warning("%s", e)
            return
        touched = touched_ms(ev, effects)
        if self.check and not any(isinstance(e, fx.Fatal) for e in effects):
            self.invariants["checked"] += 1
            broken = self.checker.after_step(self.sched, touched)  # incremental; in full periodically
            if broken:
                self.invariants["violations"].extend(broken)
                effects.append(fx.Fatal(f"invariant violated: {broken[0]}",
                                        tuple(f"gmpsim: invariant violated: {b}" for b in broken)))
        self.act.apply(effects, requester, req_seq)
        self.observe(ev, effects, touched)

    def observe(self, ev: dict | None, effects: list, touched: set[int] | None = None) -> None:
        if self.observers:
            touched = touched_ms(ev, effects) if touched is None else touched
            go_ns, wall = self.clock.go_now(), time.monotonic()
            for o in self.observers:
                o.after_step(self.sched, ev, effects, touched, go_ns, wall)

    # --- end ----------------------------------------------------------------------------------------

    def finish(self) -> None:
        if self.check and self.out.outcome != "fatal":  # a throw leaves its step half done
            self.invariants["violations"].extend("at the end: " + b for b in self.checker.final(self.sched))
        go_ns, wall = self.clock.go_now(), time.monotonic()
        for o in self.observers:
            o.finished(self.sched, self.out, go_ns, wall)

    def shutdown_agents(self) -> set[str]:
        return self.hosts.shutdown_agents()

    def collect_byes(self, timeout_s: float) -> None:
        self.hosts.collect_byes(timeout_s)

    def result(self) -> RunResult:
        """The run as the report and run.py read it."""
        return RunResult(
            sched=self.sched, rec=self.rec, peak_mcount=self.act.peak_mcount,
            resent=self.delivery.resent, duplicates=self.delivery.duplicates,
            faults=self.inject.records, faults_summary=self.inject.summary(), invariants=self.invariants,
            run_s=self.run_s, idle_s=self.idle_s, byes=self.hosts.byes, agent_up=self.hosts.agent_up,
            arenas=[a["arena"] for a in self.hosts.agents.values()])

    def close(self) -> None:
        self.restarts.close()
        self.wire.sock.close(linger=0)
