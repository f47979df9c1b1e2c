"""The coordinator's event loop: the shell around the pure core. The loop is sched.lock: one thread
takes one event at a time (an M's or agent's message, the end of one of sysmon's sleeps, the end of
the wait of the M blocked in netpoll, an agent's death), hands it to core.step with the Go clock,
and carries out the effects over ZeroMQ: replies to the M that asked, forks, wakes, preemptions,
stack frees; it keeps the time of sysmon's sleeps and of the netpoll wait.

Go time: the wall clock since the start divided by the scenario's timescale (wall µs per Go µs).
Delivery (delivery.py): replies are cached and resent for duplicate requests; WAKE, newosproc and
watch orders are resent until answered; an M that does not answer within lost_after is fenced.
Faults (inject.py) act on the way in and out. The core's invariants are checked after every step.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field

import zmq

from coordinator.faults.inject import Injector
from coordinator.faults.plan import FaultPlan
from coordinator.observe.latency import Latency
from coordinator.observe.report import FORKFAIL_CAUSES
from coordinator.runtime import effects as fx
from coordinator.runtime.checker import Checker
from coordinator.runtime.core import BadEvent, schedinit, step
from coordinator.runtime.sysmon import sysmon_usleep
from coordinator.shell.delivery import Delivery
from protocol.codec import ProtocolError, decode, encode, encode_trusted
from protocol.messages import fork_spec, position
from protocol.owner import alive
from protocol.timing import HEARTBEAT_S, HEARTBEAT_TIMEOUT_S, RESEND_S
from protocol.transport import m_identity, parse_identity, router

log = logging.getLogger("gmpsim.coordinator")

AGENT_HELLO_TIMEOUT_S = 10.0
LOG_FIRST_BAD, LOG_EVERY_BAD = 20, 1000  # a flood of bad frames is logged sparsely
_SNDMORE = int(zmq.SNDMORE)  # a plain int: pyzmq's enum arithmetic costs µs per send
TRUSTED_ENCODE = os.environ.get("GMPSIM_CHECK_OUTGOING", "") == ""  # tests set it: every frame checked

M_TYPES = frozenset({"hello", "woken", "entersyscall", "exitsyscall", "entersyscallblock", "newproc",
                     "lockosthread", "unlockosthread", "gopark", "gosched", "goexit", "runtime",
                     "forked", "forkfail", "heartbeat"})
AGENT_TYPES = frozenset({"agent_hello", "mexited", "forked", "forkfail", "ack", "heartbeat", "bye"})
SOCKET_CHECK_S = 1.0  # how often a local run checks that its ipc socket file is still there


@dataclass
class Outcome:
    """How the run ended."""
    outcome: str = "aborted"  # "ok" | "fatal" | "aborted"
    fatal_message: str | None = None
    fatal_lines: list[str] = field(default_factory=list)
    reason: str = ""
    bad_input: str | None = None  # the run could not be set up as asked (a port taken, ...): exit 2


@dataclass
class Recorder:
    """What the loop measures for the report (latencies in wall seconds)."""
    newm_to_mstart: Latency = field(default_factory=Latency)
    notewakeup_to_running: Latency = field(default_factory=Latency)
    bad_frames: int = 0
    bad_events: int = 0
    refused: int = 0  # messages of dead, fenced or stale Ms
    hello_missing: int = 0  # forked Ms that never said hello (reforked)
    agent_restarts: list[dict] = field(default_factory=list)  # every host agent restarted mid-run
    events: int = 0
    pids: dict[int, int] = field(default_factory=dict)  # M id -> pid
    fork_decided: dict[int, float] = field(default_factory=dict)  # M id -> wall time of newm
    threads: dict[int, dict] = field(default_factory=dict)  # M id -> its life, for the report
    deaths: list[dict] = field(default_factory=list)  # post-mortems

    def thread(self, mid: int) -> dict:
        return self.threads.setdefault(mid, {"m": mid})


class Observer:
    """Something that watches a run step by step (trace.json, live progress, metrics...). Each hook
    runs on the loop's thread, so it must be cheap: `touched` names the Ms an event involved."""

    def started(self, sched, go_ns: int, wall: float) -> None: ...

    def after_step(self, sched, ev: dict | None, effects: list, touched: set[int], go_ns: int,
                   wall: float) -> None: ...

    def finished(self, sched, outcome, go_ns: int, wall: float) -> None: ...


def touched_ms(ev: dict | None, effects: list) -> set[int]:
    """The Ms an event and its effects involve (their state may have changed)."""
    out = set()
    if ev is not None and isinstance(ev.get("m"), int) and ev["m"] >= 0:
        out.add(ev["m"])
    for e in effects:
        m = getattr(e, "m", None)
        if isinstance(m, int):
            out.add(m)
        forker = getattr(e, "forker", None)
        if isinstance(forker, int):
            out.add(forker)
    return out


class AgentControl:
    """How the loop reaches the host agents' processes (run.py owns them)."""

    def pid(self, host: str) -> int: ...

    def restart(self, host: str) -> int: ...


class Coordinator:
    def __init__(self, scenario, endpoint: str, ctx: zmq.Context, trace_file, stop_flag=None,
                 observers: list[Observer] | None = None, agents: AgentControl | None = None,
                 curve=None, placement: str = "least-loaded"):
        self.sc = scenario
        self.endpoint = endpoint
        self.ctx = ctx
        self.sock = router(ctx, endpoint, curve=curve)
        self.remote = endpoint.startswith("tcp://")  # agents on other hosts: heartbeats
        self.placement = placement
        self.agent_seen: dict[str, float] = {}  # host -> when its agent was last heard
        self.next_beat = 0.0
        self.byes: dict[str, dict] = {}  # host -> what its agent left behind at shutdown
        self.host_lost: list[dict] = []
        self.agent_spoke: dict[str, bool] = {}  # host -> its agent has sent us something since our welcome
        self.run_s = 0.0
        self.idle_s = 0.0
        self.trusted = TRUSTED_ENCODE
        self.told_to_go: dict[bytes, float] = {}  # identity -> when it may be told to go again
        self.trace_file = trace_file
        self.stop_flag = stop_flag or (lambda: False)
        self.control = agents
        self.rec = Recorder()
        self.out = Outcome()
        self.seq = 0
        self.sched = None
        self.agents: dict[str, dict] = {}  # host -> its agent_hello
        self.agent_ident: dict[str, bytes] = {}  # host -> its current agent's identity
        self.agent_up: dict[str, bool] = {}
        self.agent_fds: dict[int, str] = {}  # pidfd -> host
        self.restart_agents = True
        self.t0 = 0.0
        self.sysmon_at: float | None = None  # when sysmon's sleep (SysmonSleep) ends, wall time
        self.sysmon_note = False  # that sleep is the deep one (notetsleep): "sysmon_wake" ends it
        self.poll: tuple[int, float] | None = None  # (M, wall time) the M blocked in netpoll wakes
        self.done = False
        self.peak_mcount = 0  # the highest mcount(), counted as Go counts threads
        self.observers = list(observers or [])
        self.delivery = Delivery(RESEND_S, getattr(scenario, "lost_after_ms", 2000.0) / 1000)
        self.inject = Injector(FaultPlan(getattr(scenario, "faults", ()), scenario.seed), self)
        self.check = getattr(scenario, "check_invariants", True)
        self.invariants = {"checked": 0, "violations": []}
        self.checker = Checker()
        self.m_ident: dict[int, bytes] = {}  # M id -> the identity of its last message
        self.watch_seq: dict[int, tuple] = {}  # seq of a watch order -> its pending key
        self.preempt_sent: dict[int, float] = {}  # M id -> when a preemption went unanswered since
        self.next_socket_check = 0.0
        self.hello_grace: dict[tuple[int, int], float] = {}  # (M, epoch) forked -> extra wait for its hello
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)

    # --- clocks -------------------------------------------------------------------------------------

    def go_now(self) -> int:
        """Go nanoseconds since the start."""
        return int((time.monotonic() - self.t0) * 1e9 / self.sc.timescale)

    def go_ms(self) -> float:
        return round(self.go_now() / 1e6, 3)

    def wall_after(self, go_us: float) -> float:
        return time.monotonic() + go_us * self.sc.timescale / 1e6

    def wall_at_go_ms(self, ms: float) -> float:
        return self.t0 + ms * 1000 * self.sc.timescale / 1e6

    # --- wire ---------------------------------------------------------------------------------------

    def raw_send(self, identity: bytes, frame: bytes) -> None:
        try:
            self.sock.send(identity, _SNDMORE)
            self.sock.send(frame)
        except zmq.ZMQError as e:
            log.warning("send to %r failed: %s", identity, e)

    def send(self, identity: bytes, t: str, **fields) -> bytes:
        """Encode and send through the message faults; returns the frame (for resends). Our own
        messages are packed unchecked here (the hot path); the test suite validates every kind."""
        self.seq += 1
        frame = encode_trusted(t, self.seq, 0, fields) if self.trusted else encode(t, self.seq, 0, **fields)
        if self.inject.plan.has_message_faults:
            self.inject.outbound(t, identity, frame)
        else:
            self.raw_send(identity, frame)
        return frame

    def m_identity_of(self, mid: int) -> bytes:
        if mid in self.m_ident:
            return self.m_ident[mid]
        gone = (*self.sched.freem, *self.sched.osstackm)
        mp = self.sched.allm.get(mid) or next((m for m in gone if m.id == mid), None)
        return m_identity(mid, mp.epoch if mp is not None else 1)

    def send_m(self, mid: int, t: str, **fields) -> bytes:
        return self.send(self.m_identity_of(mid), t, **fields)

    def send_agent(self, host: str, t: str, **fields) -> bytes:
        return self.send(self.agent_ident[host], t, **fields)

    # --- start --------------------------------------------------------------------------------------

    def wait_agents(self, hosts: int = 1, timeout_s: float | None = AGENT_HELLO_TIMEOUT_S) -> None:
        """Until `hosts` host agents have said hello (None: wait as long as it takes, or Ctrl-C)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(self.agents) < hosts:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0 or self.stop_flag():
                raise RuntimeError(f"gmpsim: {len(self.agents)} of {hosts} host agent(s) said hello"
                                   + ("" if self.stop_flag() else f" within {timeout_s:.0f}s"))
            if self.sock.poll(min(left, 1.0) * 1000):
                ident, frame = self._recv()
                if frame is None:
                    continue
                try:
                    msg = decode(frame)
                except ProtocolError as e:
                    self.bad_frame(ident, e)
                    continue
                if msg["t"] == "agent_hello" and self.genuine_agent(msg, ident):
                    self.agent_joined(msg, ident)
                else:
                    self.bad_frame(ident, f"{msg['t']} before the host agent's hello")

    def genuine_agent(self, msg: dict, ident: bytes) -> bool:
        """Is this agent_hello from a host agent we started? Its identity is agent:<host>/<pid> with
        the pid it says, and (local runs) that pid is the agent process run.py started for the host:
        any peer that can reach the socket could otherwise take the agent's place (its arena, its
        pid watched with a pidfd, every fork order)."""
        try:
            who = parse_identity(ident)
        except ProtocolError:
            return False
        if who[0] != "agent" or who[1] != f"{msg['host']}/{msg['pid']}":
            return False
        if self.control is None:
            return True
        try:
            return self.control.pid(msg["host"]) == msg["pid"]
        except LookupError:  # a host we have no agent for
            return False

    def agent_joined(self, msg: dict, ident: bytes) -> None:
        host = msg["host"]
        self.agents[host] = msg
        self.agent_ident[host] = ident
        self.agent_seen[host] = time.monotonic()
        self.agent_up[host] = True
        if self.control is not None and host not in self.agent_fds.values():  # not watched since its restart
            self.watch_agent(host, msg["pid"])
        log.info("host agent %s (pid %d) joined: arena %s, %d slots of %d bytes",
                 host, msg["pid"], msg["arena"], msg["slots"], msg["slot_size"])

    def watch_agent(self, host: str, pid: int) -> None:
        """A pidfd on a local host agent: its death comes to agent_died."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        self.agent_fds[fd] = host
        self.poller.register(fd, zmq.POLLIN)

    def start(self) -> None:
        sc = self.sc
        self.sched, effects = schedinit(
            sc.gomaxprocs, sc.programs, {h: a["slots"] for h, a in self.agents.items()},
            maxmcount=sc.maxmcount, seed=sc.seed, schedtrace_ms=sc.schedtrace_ms,
            scheddetail=sc.scheddetail, placement=self.placement, usleep_slack_us=sc.usleep_slack_us)
        for host in self.agents:
            self.welcome(host)
        self.t0 = time.monotonic()
        for o in self.observers:
            o.started(self.sched, 0, self.t0)
        self.apply(effects, None, 0)
        self.observe(None, effects)
        self.sysmon_sleep(sysmon_usleep(self.sched))  # sysmon's first usleep(20)

    def welcome(self, host: str) -> None:
        self.agent_spoke[host] = False
        self.raw_send(self.agent_ident[host], encode("welcome", self._seq(), 0, programs=self.sched.programs,
                                                   timescale=float(self.sc.timescale), config={}))

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, time_limit_s: float) -> Outcome:
        try:
            return self._run(time_limit_s)
        finally:
            self.run_s = time.monotonic() - self.t0  # the run itself, without start-up and shutdown

    def _run(self, time_limit_s: float) -> Outcome:
        self.idle_s = 0.0  # time spent waiting in poll: the rest of run_s is the loop's own work
        deadline = self.t0 + time_limit_s
        while not self.done:
            now = time.monotonic()
            if now >= deadline:
                self.out = Outcome("aborted", reason=f"time limit of {time_limit_s:g}s reached")
                break
            if self.stop_flag():
                self.out = Outcome("aborted", reason="interrupted")
                break
            wake = min(x for x in (deadline, self.sysmon_at, self.poll and self.poll[1], self.delivery.next_at(),
                                   self.inject.next_at()) if x is not None)
            # zmq_poll counts whole ms: round up rather than spin (a busy coordinator steals the
            # CPU the Ms need); a timer may fire up to 1 ms late, as sysmon's usleep may.
            timeout_ms = math.ceil(max(0.0, (wake - now) * 1000))
            events = dict(self.poller.poll(timeout_ms))
            self.idle_s += time.monotonic() - now
            if self.sock in events:
                # Drain what is there: each message is one event.
                while not self.done and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    ident, frame = self._recv()
                    if frame is not None:
                        self.on_frame(ident, frame)
            for fd, host in list(self.agent_fds.items()):
                if fd in events and not self.done:
                    self.agent_died(fd, host)
            if self.done:
                break
            now = time.monotonic()
            if now >= self.next_socket_check:
                self.check_socket(now)
                if self.done:
                    break
            self.inject.tick(now)
            self.deliveries(now)
            if self.remote:
                self.heartbeats(now)
            if not self.done and self.poll is not None and now >= self.poll[1]:
                mid, self.poll = self.poll[0], None  # the netpoll wait is over (timeout or break)
                self.event({"t": "netpoll", "m": mid}, None)
            if not self.done and self.sysmon_at is not None and now >= self.sysmon_at:
                self.sysmon_at = None  # the event's effects hold sysmon's next sleep
                self.event({"t": "sysmon_wake" if self.sysmon_note else "sysmon"}, None)
        return self.out

    def check_socket(self, now: float) -> None:
        """A local run's ipc socket file removed (by hand, a tmp cleaner): no new M could ever
        connect; say so and stop instead of stalling."""
        self.next_socket_check = now + SOCKET_CHECK_S
        path = self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else ""
        if path and not path.startswith("@") and not os.path.exists(path):
            msg = f"the run's socket {path} was removed: new Ms cannot connect"
            log.error("%s", msg)
            self.out = Outcome("aborted", reason=msg)
            self.done = True

    def _recv(self) -> tuple[bytes, bytes | None]:
        parts = self.sock.recv_multipart()
        if len(parts) != 2:
            self.bad_frame(parts[0] if parts else b"", "not a [identity, frame] message")
            return (parts[0] if parts else b""), None
        return parts[0], parts[1]

    def wall_at_go_ns(self, ns: int) -> float:
        return self.t0 + ns * self.sc.timescale / 1e9

    def sysmon_sleep(self, e: fx.SysmonSleep) -> None:
        """sysmon sleeps until e.until (Go ns): a usleep, or the deep sleep a WakeSysmon ends early."""
        self.sysmon_at = self.wall_at_go_ns(e.until)
        self.sysmon_note = e.note

    def bad_frame(self, ident: bytes, why) -> None:
        self.rec.bad_frames += 1
        n = self.rec.bad_frames
        if n <= LOG_FIRST_BAD or n % LOG_EVERY_BAD == 0:
            log.warning("dropped a bad frame from %r (%d so far): %s", ident[:32], n, why)

    def on_frame(self, ident: bytes, frame: bytes) -> None:
        try:
            who = parse_identity(ident)
            msg = decode(frame)
        except ProtocolError as e:
            self.bad_frame(ident, e)
            return
        t = msg["t"]
        if who[0] == "m":
            if t not in M_TYPES or msg["m"] != who[1] or msg["epoch"] != who[2]:
                self.bad_frame(ident, f"{t} does not fit sender m{who[1]}.{who[2]}")
                return
        elif t not in AGENT_TYPES or (t == "agent_hello" and not self.genuine_agent(msg, ident)):
            self.bad_frame(ident, f"{t} is not an agent's message")
            return
        msg["_from"] = ident
        msg["_who"] = who
        if self.inject.plan.has_message_faults:
            for m in self.inject.inbound(msg):
                self.handle_msg(m)
        else:
            self.handle_msg(msg)

    def handle_msg(self, msg: dict) -> None:
        if self.done:
            return
        ident = msg["_from"]
        who = msg["_who"]
        peer = who if who[0] == "m" else ("agent", who[1])
        if who[0] == "m" and self.m_ident.get(who[1]) == ident:
            self.preempt_sent.pop(who[1], None)  # any sign of life, duplicates too (not a stale/forged epoch's)
        if not self.delivery.fresh(peer, msg["seq"]):
            if who[0] == "m":
                cached = self.delivery.cached_reply(who[1], msg["seq"])
                if cached is not None and cached[0] == ident:
                    self.raw_send(*cached)  # the M lost our reply: the same answer again
            return
        if who[0] == "m":
            self.from_m(msg, who[1], ident)
        else:
            host = who[1].split("/")[0]
            if self.agent_ident.get(host) == ident:
                self.from_agent(msg, host)
            elif msg["t"] == "agent_hello" and msg["host"] == host:  # not a dead predecessor's message
                if self.agent_up.get(host) and self.control is None:
                    # Across hosts: the host's agent is alive and heard; another peer claiming the host
                    # (forged, or a second agent with the same --name) is refused until that agent
                    # is cut off (silent for HEARTBEAT_TIMEOUT_S); a restarted agent then rejoins.
                    self.rec.refused += 1
                    self.bad_frame(ident, f"agent_hello for host {host}, whose agent is up as "
                                          f"{self.agent_ident[host]!r}")
                    return
                self.from_agent(msg, host)

    def from_m(self, msg: dict, mid: int, ident: bytes) -> None:
        t = msg["t"]
        mp = self.sched.allm.get(mid)
        if mp is None or mp.virtual or mp.epoch != msg["epoch"]:
            # A dead, fenced or stale incarnation: refuse it and tell it to go.
            self.rec.refused += 1
            now = time.monotonic()
            if self.told_to_go.get(ident, 0.0) <= now:  # at most once a second per identity: a peer
                if len(self.told_to_go) > 10_000:        # that never reads must not fill our queue
                    self.told_to_go.clear()
                self.told_to_go[ident] = now + 1.0
                self.raw_send(ident, encode("shutdown", self._seq(), 0))
            return
        self.m_ident[mid] = ident
        self.preempt_sent.pop(mid, None)
        if t == "forked":
            self.forked(msg)
            return
        if t == "forkfail":
            self.forkfail(msg)
            return
        if t == "heartbeat":
            return
        if t == "hello":
            self.delivery.done(("fork", mid, msg["epoch"]))
            self.delivery.done(("hello", mid, msg["epoch"]))
            decided = self.rec.fork_decided.pop(mid, None)
            if decided is not None:
                self.rec.newm_to_mstart.record(mp.host, time.monotonic() - decided)
            self.rec.pids[mid] = msg["pid"]
            self.rec.thread(mid).update(pid=msg["pid"], taint=msg["taint"], started_ms=self.go_ms())
            if mp.pid == 0:
                self.watch(mp, msg["pid"])
        elif t == "woken":
            self.delivery.done(("wake", mid))
            self.rec.notewakeup_to_running.record(mp.host, msg["lat"])
        self.event(msg, mid, msg["seq"])

    def from_agent(self, msg: dict, host: str) -> None:
        t = msg["t"]
        self.agent_seen[host] = time.monotonic()
        if t != "agent_hello":
            self.agent_spoke[host] = True
        if t == "heartbeat":
            return
        if t == "bye":
            if msg["host"] == host:  # an agent speaks for its own host only
                self.byes[host] = {"processes": msg["processes"], "shm_segments": msg["shm_segments"]}
            return
        if t == "agent_hello":
            self.agent_rejoined(msg)
        elif t == "forked":
            self.forked(msg)
        elif t == "forkfail":
            self.forkfail(msg)
        elif t == "ack":
            key = self.watch_seq.pop(msg["re"], None)
            if key is not None:
                self.delivery.done(key)
        elif t == "mexited":
            self.raw_send(self.agent_ident[host], encode("ack", self._seq(), 0, re=msg["seq"]))
            if msg["m"] == -1:
                return  # the agent itself is done (shutdown)
            self.rec.thread(msg["m"]).update(gone_ms=self.go_ms(), status=msg["status"])
            self.postmortem(msg)
            self.event(msg, None)

    def forked(self, msg: dict) -> None:
        """newosproc done: the pid of the new M. Its host agent watches every M of the host."""
        mid, pid = msg["child"], msg["pid"]
        self.delivery.done(("fork", mid, msg["cepoch"]))
        mp = self.sched.allm.get(mid)
        if mp is None or mp.epoch != msg["cepoch"]:
            return
        self.rec.pids[mid] = pid
        if not mp.started:  # its hello must follow: a peer holding its identity must not stall us silently
            grace = self.hello_grace.pop((mid, mp.epoch), 0.0) + self.delivery.lost_after_s
            self.delivery.expect(("hello", mid, mp.epoch), b"", b"", time.monotonic(), mid, grace)
        if mp.pid == 0:
            mp.pid = pid
            if msg["m"] != -1:
                self.watch(mp, pid)

    def forkfail(self, msg: dict) -> None:
        """newosproc failed (from an M or the agent): the core says what Go does (throw)."""
        self.delivery.done(("fork", msg["child"], msg["cepoch"]))
        # A peer names the cause; only the report's three become counters (ms.newosproc_failed).
        cause = msg["cause"] if msg["cause"] in FORKFAIL_CAUSES else "fault"
        self.event({"t": "forkfail", "m": msg["child"], "child": msg["child"], "cepoch": msg["cepoch"],
                    "errno": msg["errno"], "cause": cause, "limit": msg["limit"]}, None)

    def watch(self, mp, pid: int) -> None:
        mp.pid = pid
        key = ("watch", mp.id)
        frame = self.send_agent(mp.host, "watch", m=mp.id, pid=pid, slot=mp.slot)
        self.watch_seq[self.seq] = key
        self.delivery.expect(key, self.agent_ident[mp.host], frame, time.monotonic(), mp.id)

    def postmortem(self, msg: dict) -> None:
        """The crash dump of a thread: its last g0 frames, read from the arena by its agent."""
        mid = msg["m"]
        mp = self.sched.allm.get(mid)
        if mp is None or mp.exited:
            return  # an M that exited as Go's do (mexit), or one already recovered
        self.rec.deaths.append({"m": mid, "pid": msg["pid"], "status": msg["status"],
                                "time_ms": self.go_ms(), "frames": msg["frames"]})

    # --- agents -------------------------------------------------------------------------------------

    def kill_agent(self, host: str, rec: dict) -> None:
        """kill-template: SIGKILL the host agent (the template thread, the reaper)."""
        self.restart_agents = bool(rec.get("restart", True))
        self.kill_rec = rec
        pid = self.agents[host]["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def agent_died(self, fd: int, host: str) -> None:
        self.poller.unregister(fd)
        os.close(fd)
        del self.agent_fds[fd]
        was_up = self.agent_up.get(host, False)
        self.agent_up[host] = False
        rec = getattr(self, "kill_rec", None)
        if rec is not None:
            rec["detected_ms"] = self.go_ms()
        if not self.restart_agents or self.control is None:
            self.end_orphaned_ms(host)
            msg = f"host agent {host} died"
            self.out = Outcome("fatal", msg, [f"gmpsim: host agent {host} (the template thread) died",
                                              f"fatal error: {msg}"], reason="fatal error")
            self.done = True
            return
        if not was_up:  # its restarted incarnation died before it rejoined (e.g. its arena was gone)
            restarts = sum(r["host"] == host for r in self.rec.agent_restarts)
            log.error("host agent %s died before its hello after %d restart(s) (its arena gone? /dev/shm full?)",
                      host, restarts)
            self.end_orphaned_ms(host)
            msg = f"host agent {host} died"
            self.out = Outcome("fatal", msg, [f"gmpsim: host agent {host} (the template thread) died again "
                                              "before it rejoined", f"fatal error: {msg}"], reason="fatal error")
            self.done = True
            return
        pid = self.control.restart(host)
        self.rec.agent_restarts.append({"host": host, "time_ms": self.go_ms(), "pid": pid, "hello": False,
                                        "why": "killed by a fault" if rec is not None else "died"})
        log.warning("host agent %s died; restarted it (pid %d)", host, pid)
        self.watch_agent(host, pid)  # from now: one that dies before its hello must not go unseen
        if rec is not None:
            rec["recovery"] = f"agent restarted (pid {pid}), arena adopted"
        # Fork orders the dead agent may or may not have carried out: a new incarnation of each.
        for key in [k for k in self.delivery.pending if k[0] == "fork"]:
            self.delivery.done(key)
            mp = self.sched.allm.get(key[1])
            if mp is not None and not mp.started and mp.epoch == key[2]:
                self.event({"t": "refork", "m": key[1], "cepoch": key[2]}, None)

    def end_orphaned_ms(self, host: str) -> None:
        """A local host agent gone for good: no one else will end its Ms (same machine: we can).
        SIGKILL each, and give them a moment to be gone before the run counts what is left."""
        pids = [pid for mid, pid in self.rec.pids.items()
                if pid and self.sched is not None and getattr(self.sched.allm.get(mid), "host", None) == host]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)

    def agent_rejoined(self, msg: dict) -> None:
        """A restarted agent: welcome it, and have it watch every live M of its host. An agent of a
        host that was cut off rejoins as a fresh host (its Ms were fenced; its arena is empty)."""
        host = msg["host"]
        old_ident = self.agent_ident.get(host)
        if old_ident == msg["_from"] and self.agent_up.get(host):
            if not self.agent_spoke.get(host):
                return  # a hello resent before our welcome reached it
            # Welcomed, and it has spoken since: it heard nothing from us for its timeout, ended its
            # Ms and starts afresh before we cut it off (a partition just under our timeout). Its
            # Ms are gone without a report: cut it off now, then take it back as a fresh host.
            self.cut_off(host, "said hello again (it had cut itself off)")
        fresh = host not in self.sched.hosts
        for r in self.rec.agent_restarts:
            if r["host"] == host and r["pid"] == msg["pid"]:
                r["hello"] = True
        self.agent_joined(msg, msg["_from"])
        self.welcome(host)
        if fresh:
            log.warning("host %s rejoined as a fresh host", host)
            self.event({"t": "hostjoin", "host": host, "slots": msg["slots"]}, None)
            return
        n = 0
        for mp in list(self.sched.allm.values()):
            if not mp.virtual and mp.host == host and mp.pid:
                self.watch(mp, mp.pid)
                n += 1
        # Signal orders its predecessor may never have carried out go to it (after the watches:
        # an agent signals only Ms it watches).
        for key, p in self.delivery.pending.items():
            if key[0] == "signal" and p.identity == old_ident:
                p.identity = msg["_from"]
                p.resend_at = 0.0
        rec = getattr(self, "kill_rec", None)
        if rec is not None and rec.get("recovery"):
            rec["recovery"] += f", {n} Ms watched again"

    def heartbeats(self, now: float) -> None:
        """Across hosts: beat to every live agent; a host silent for the timeout is cut off."""
        if now >= self.next_beat:
            for host, up in self.agent_up.items():
                if up:
                    self.raw_send(self.agent_ident[host], encode("heartbeat", self._seq(), 0, m=-1))
            self.next_beat = now + HEARTBEAT_S
        for host, up in list(self.agent_up.items()):
            if up and now - self.agent_seen.get(host, now) > HEARTBEAT_TIMEOUT_S:
                self.cut_off(host, f"silent for {now - self.agent_seen[host]:.1f}s")

    def cut_off(self, host: str, why: str) -> None:
        """No new M goes to the host; its Ms are fenced (their goroutines requeued, Ps handed off)."""
        self.agent_up[host] = False
        log.warning("host %s %s: cut off, its Ms fenced", host, why)
        self.host_lost.append({"host": host, "time_ms": self.go_ms()})
        self.event({"t": "hostlost", "host": host}, None)

    def signal_m(self, mp, sig: int) -> None:
        """A signal order to the M's host agent, resent until acknowledged: an order sent while the
        agent is being restarted reaches its successor (agent_rejoined re-addresses it)."""
        if mp.pid:
            if sig == signal.SIGCONT:  # a SIGSTOP still being resent must not come after its SIGCONT
                for key in [k for k in self.delivery.pending if k[0] == "signal" and k[2:] == (mp.id, signal.SIGSTOP)]:
                    self.delivery.done(key)
            frame = self.send_agent(mp.host, "signal", m=mp.id, pid=mp.pid, sig=int(sig))
            key = ("signal", self.seq, mp.id, int(sig))
            self.watch_seq[self.seq] = key
            self.delivery.expect(key, self.agent_ident[mp.host], frame, time.monotonic(), mp.id)

    # --- delivery -----------------------------------------------------------------------------------

    def deliveries(self, now: float) -> None:
        resend, lost = self.delivery.due(now)
        for identity, frame in resend:
            self.raw_send(identity, frame)
        for key, _p in lost:
            if key[0] == "wake":
                self.fence(key[1], f"lost: no answer to WAKE within {self.sc.lost_after_ms:g} ms")
            elif key[0] == "fork":
                mp = self.sched.allm.get(key[1])
                if mp is not None and not mp.started and mp.epoch == key[2]:
                    self.event({"t": "refork", "m": key[1], "cepoch": key[2]}, None)
            elif key[0] == "hello":
                self.hello_missing(*key[1:])
        limit = self.delivery.lost_after_s
        for mid, since in list(self.preempt_sent.items()):
            if now - since >= limit:
                del self.preempt_sent[mid]
                self.fence(mid, f"lost: no answer to preemption within {self.sc.lost_after_ms:g} ms")

    def hello_missing(self, mid: int, epoch: int) -> None:
        """A forked M never said hello: its connection may have been refused because another peer
        took its identity first (the ROUTER hands no identity over). Said, its process ended, and a
        new incarnation (a new identity) forked in its place."""
        mp = self.sched.allm.get(mid)
        if mp is None or mp.started or mp.epoch != epoch:
            return
        log.warning("M%d (pid %d) forked but never said hello within %.1fs: its identity %r may be held "
                    "by another peer; forking a new incarnation", mid, mp.pid, self.delivery.lost_after_s,
                    m_identity(mid, epoch))
        self.rec.hello_missing += 1
        self.signal_m(mp, signal.SIGKILL)
        self.event({"t": "refork", "m": mid, "cepoch": epoch}, None)

    def fence(self, mid: int, why: str) -> None:
        """Declare M mid lost: the core takes back what it held; its incarnation is refused from now
        on, and told to exit (it does when it resumes)."""
        mp = self.sched.allm.get(mid)
        if mp is None:
            return
        self.event({"t": "mdead", "m": mid, "why": why, "gone": False}, None)

    # --- events and effects ---------------------------------------------------------------------------

    def event(self, ev: dict, requester: int | None, req_seq: int = 0) -> None:
        self.rec.events += 1
        try:
            effects = step(self.sched, ev, self.go_now())
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
        self.apply(effects, requester, req_seq)
        self.observe(ev, effects, touched)

    def observe(self, ev: dict | None, effects: list, touched: set[int] | None = None) -> None:
        if self.observers:
            touched = touched_ms(ev, effects) if touched is None else touched
            go_ns, wall = self.go_now(), time.monotonic()
            for o in self.observers:
                o.after_step(self.sched, ev, effects, touched, go_ns, wall)

    def finish(self) -> None:
        if self.check and self.out.outcome != "fatal":  # a throw leaves its step half done
            self.invariants["violations"].extend("at the end: " + b for b in self.checker.final(self.sched))
        go_ns, wall = self.go_now(), time.monotonic()
        for o in self.observers:
            o.finished(self.sched, self.out, go_ns, wall)

    def apply(self, effects: list, requester: int | None, req_seq: int) -> None:
        self.peak_mcount = max(self.peak_mcount, self.sched.mcount())
        forks_for_reply = []
        reply = None
        now = time.monotonic()
        for e in effects:
            if isinstance(e, fx.Fork):
                self.rec.fork_decided[e.m] = now
                self.rec.thread(e.m).update(host=e.host, slot=e.slot, forker=e.forker, template=e.template,
                                            spinning=e.spinning, allocated_ms=self.go_ms(), epoch=e.epoch)
                spec = fork_spec(m=e.m, nextp=e.nextp, slot=e.slot, epoch=e.epoch, ts=now,
                                 spinning=e.spinning, template=e.template)
                if self.inject.plan.has_fork_faults:
                    spec = self.inject.on_fork(spec)
                self.hello_grace[(e.m, e.epoch)] = self.fork_grace(spec)
                if e.forker is not None and e.forker == requester:
                    if self.check:
                        self.check_routing(e, requester)
                    forks_for_reply.append((e.host, spec))
                    self.delivery.expect(("fork", e.m, e.epoch), b"", b"", now, e.m, self.fork_grace(spec))
                else:
                    self.order_fork(e.host, spec)
            elif isinstance(e, fx.REPLIES):
                reply = e
            elif isinstance(e, fx.Wake):
                ident = self.m_identity_of(e.m)
                frame = self.send(ident, "wake", nextp=e.nextp, sent=time.monotonic())
                self.delivery.expect(("wake", e.m), ident, frame, now, e.m)
            elif isinstance(e, fx.Preempt):
                self.send_m(e.m, "preempt", g=e.g)
                self.preempt_sent.setdefault(e.m, now)
            elif isinstance(e, fx.StackFree):
                self.rec.thread(e.m)["stack_freed_ms"] = self.go_ms()
                self.send_agent(e.host, "stackfree", slot=e.slot, m=e.m)
            elif isinstance(e, fx.Recovered):
                self.recovered(e)
            elif isinstance(e, fx.SysmonSleep):
                self.sysmon_sleep(e)
            elif isinstance(e, fx.WakeSysmon):
                if self.sysmon_note:  # notewakeup(&sched.sysmonnote): its notetsleep returns now
                    self.sysmon_at = now
            elif isinstance(e, fx.NetpollSleep):
                self.poll = (e.m, self.wall_at_go_ns(e.until))
            elif isinstance(e, fx.NetpollBreak):
                if self.poll is not None and self.poll[0] == e.m:
                    self.poll = (e.m, now)
            elif isinstance(e, fx.Trace):
                self.trace_file.write(e.text)
                self.trace_file.flush()
            elif isinstance(e, fx.ProgramExit):
                self.out = Outcome("ok", reason="main returned")
                self.done = True
            elif isinstance(e, fx.Fatal):
                self.out = Outcome("fatal", e.message, list(e.lines), reason="fatal error")
                self.done = True
        if reply is not None:
            self.send_reply(reply, forks_for_reply, req_seq)
        elif forks_for_reply:  # no reply to carry them: the agent of each M's host forks it instead
            for host, spec in forks_for_reply:
                self.order_fork(host, spec)

    def check_routing(self, e: fx.Fork, requester: int) -> None:
        """The routing contract, checked with the invariants: a fork carried by a reply is the
        requester's own (its process forks), so it must be on the requester's host: that is where
        the new M's g0 slot was allocated."""
        forker = self.sched.allm.get(requester)
        if forker is None or forker.host != e.host:
            where = forker.host if forker is not None else "nowhere"
            self.invariants["violations"].append(
                f"routing: M{e.m}'s fork (slot on {e.host}) carried by the reply to M{requester} on {where}")

    def order_fork(self, host: str, spec: dict) -> None:
        """newosproc through the host agent, resent until it answers (forked / forkfail)."""
        ident = self.agent_ident[host]
        frame = self.send(ident, "newosproc", fork=spec)
        self.delivery.expect(("fork", spec["m"], spec["epoch"]), ident, frame, time.monotonic(), spec["m"],
                             self.fork_grace(spec))

    def fork_grace(self, spec: dict) -> float:
        """Wall seconds a fork may legitimately take on top of lost_after: retryOnEAGAIN's sleeps
        (1+2+...+20 ms of Go time at most) and a slow-fork delay."""
        retry_ms = sum(range(1, min(spec["fail"], 20) + 1)) if spec["retry"] else 0
        return retry_ms * 1000 * self.sc.timescale / 1e6 + spec["delay_us"] / 1e6

    def recovered(self, e: fx.Recovered) -> None:
        if self.poll is not None and self.poll[0] == e.m:
            self.poll = None  # it was the M blocked in netpoll
        if e.why.startswith("lost"):  # fenced, maybe alive: told to exit (it does when it resumes)
            self.raw_send(self.m_identity_of(e.m), encode("shutdown", self._seq(), 0))
        self.inject.recovered(e)
        self.delivery.forget(e.m)
        self.preempt_sent.pop(e.m, None)
        self.rec.thread(e.m).update(died_ms=self.go_ms(), died=e.why)
        death = next((d for d in reversed(self.rec.deaths) if d["m"] == e.m and "doing" not in d), None)
        if death is None:
            death = {"m": e.m, "pid": self.rec.pids.get(e.m), "time_ms": self.go_ms(), "frames": []}
            self.rec.deaths.append(death)
        death.update(why=e.why, doing=e.doing, requeued=list(e.requeued), ps=list(e.ps))
        log.warning("M%d %s while %s: requeued %s, handed off %s", e.m, e.why, e.doing,
                    list(e.requeued), list(e.ps))

    def send_reply(self, r, host_forks: list, req_seq: int) -> None:
        """The reply to M r.m, carrying the forks its own process makes (host_forks: (host, spec))."""
        ident = self.m_identity_of(r.m)
        forks = [spec for _, spec in host_forks]
        if isinstance(r, fx.Execute):
            gp = self._g(r.g)
            t, fields = "execute", dict(g=r.g, prog=gp.prog, pos=position(gp.pc, gp.loops, gp.left), forks=forks)
        elif isinstance(r, fx.Cont):
            t, fields = "cont", dict(forks=forks)
        elif isinstance(r, fx.Park):
            t, fields = "park", dict(forks=forks)
        else:  # Exit: an exiting M forks nothing; its Ms go through the agent of their host
            self.rec.thread(r.m)["exited_ms"] = self.go_ms()
            for host, spec in host_forks:
                self.order_fork(host, spec)
            t, fields = "exit", {}
        frame = self.send(ident, t, re=req_seq, **fields)
        self.delivery.remember_reply(r.m, req_seq, ident, frame)

    def _g(self, goid: int):
        return self.sched.goids[goid]

    # --- end ----------------------------------------------------------------------------------------

    def shutdown_agents(self) -> set[str]:
        """Tell every agent that said hello to end its Ms and go; returns their hosts."""
        for host in self.agents:
            self.raw_send(self.agent_ident[host], encode("shutdown", self._seq(), 0))
        return set(self.agents)

    def collect_byes(self, timeout_s: float) -> None:
        """Across hosts: wait for each agent's goodbye, which says what it left behind."""
        deadline = time.monotonic() + timeout_s
        while len(self.byes) < sum(1 for up in self.agent_up.values() if up) and time.monotonic() < deadline:
            if self.sock.poll(50):
                ident, frame = self._recv()
                try:
                    who, msg = parse_identity(ident), decode(frame)
                except ProtocolError:
                    continue
                if who[0] == "agent" and msg["t"] == "bye" and self.registered_agent(ident, msg["host"]):
                    self.byes[msg["host"]] = {"processes": msg["processes"], "shm_segments": msg["shm_segments"]}

    def registered_agent(self, ident: bytes, host: str) -> bool:
        """Is ident the current agent of host (welcomed)? Anything else changes nothing."""
        return self.agent_ident.get(host) == ident and ident.startswith(b"agent:" + host.encode() + b"/")

    def close(self) -> None:
        for fd in list(self.agent_fds):
            os.close(fd)
        self.agent_fds.clear()
        self.sock.close(linger=0)
