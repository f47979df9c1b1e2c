"""The coordinator's event loop: the shell around the pure core. The loop is sched.lock: one thread
takes one event at a time (an M's or agent's message, sysmon's timer, a sleeping goroutine's timer),
hands it to core.step with the Go clock, and carries out the effects over ZeroMQ.

Go time: the wall clock since the start divided by the scenario's timescale (wall µs per Go µs).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import zmq

from protocol.codec import ProtocolError, decode, encode
from protocol.messages import fork_spec, position
from protocol.transport import agent_identity, m_identity, parse_identity, router

from . import effects as fx
from .core import BadEvent, schedinit, step
from .sysmon import next_timer, sysmon_delay

log = logging.getLogger("gmpsim.coordinator")

AGENT_HELLO_TIMEOUT_S = 10.0


@dataclass
class Outcome:
    """How the run ended."""
    outcome: str = "aborted"  # "ok" | "fatal" | "aborted"
    fatal_message: str | None = None
    fatal_lines: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class Recorder:
    """What the loop measures for the report (latencies in wall seconds)."""
    newm_to_mstart: list[float] = field(default_factory=list)
    notewakeup_to_running: list[float] = field(default_factory=list)
    bad_frames: int = 0
    bad_events: int = 0
    events: int = 0
    pids: dict[int, int] = field(default_factory=dict)  # M id -> pid
    fork_decided: dict[int, float] = field(default_factory=dict)  # M id -> wall time of newm
    threads: dict[int, dict] = field(default_factory=dict)  # M id -> its life, for the report

    def thread(self, mid: int) -> dict:
        return self.threads.setdefault(mid, {"m": mid})


class Coordinator:
    def __init__(self, scenario, endpoint: str, ctx: zmq.Context, trace_file, stop_flag=None):
        self.sc = scenario
        self.endpoint = endpoint
        self.ctx = ctx
        self.sock = router(ctx, endpoint)
        self.trace_file = trace_file
        self.stop_flag = stop_flag or (lambda: False)
        self.rec = Recorder()
        self.out = Outcome()
        self.seq = 0
        self.sched = None
        self.agents: dict[str, dict] = {}  # host -> agent_hello
        self.t0 = 0.0
        self.sysmon_at: float | None = None
        self.done = False
        self.peak_mcount = 0  # the highest mcount(), counted as Go counts threads

    # --- clocks -------------------------------------------------------------------------------------

    def go_now(self) -> int:
        """Go nanoseconds since the start."""
        return int((time.monotonic() - self.t0) * 1e9 / self.sc.timescale)

    def go_ms(self) -> float:
        return round(self.go_now() / 1e6, 3)

    def wall_after(self, go_us: float) -> float:
        return time.monotonic() + go_us * self.sc.timescale / 1e6

    # --- wire ---------------------------------------------------------------------------------------

    def send(self, identity: bytes, t: str, **fields) -> None:
        self.seq += 1
        self.sock.send_multipart([identity, encode(t, self.seq, 0, **fields)])

    def send_m(self, mid: int, t: str, **fields) -> None:
        mp = self.sched.allm.get(mid) or next((m for m in self.sched.freem if m.id == mid), None)
        epoch = mp.epoch if mp is not None else 1
        self.send(m_identity(mid, epoch), t, **fields)

    def send_agent(self, host: str, t: str, **fields) -> None:
        self.send(agent_identity(host), t, **fields)

    # --- start --------------------------------------------------------------------------------------

    def wait_agents(self, hosts: int = 1) -> None:
        deadline = time.monotonic() + AGENT_HELLO_TIMEOUT_S
        while len(self.agents) < hosts:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop_flag():
                raise RuntimeError("gmpsim: no host agent said hello within "
                                   f"{AGENT_HELLO_TIMEOUT_S:.0f}s")
            if self.sock.poll(left * 1000):
                ident, frame = self._recv()
                if frame is None:
                    continue
                try:
                    msg = decode(frame)
                except ProtocolError as e:
                    self.rec.bad_frames += 1
                    log.warning("dropped a bad frame from %r: %s", ident, e)
                    continue
                if msg["t"] == "agent_hello":
                    self.agents[msg["host"]] = msg
                    log.info("host agent %s (pid %d) joined: arena %s, %d slots of %d bytes",
                             msg["host"], msg["pid"], msg["arena"], msg["slots"], msg["slot_size"])

    def start(self) -> None:
        sc = self.sc
        self.sched, effects = schedinit(
            sc.gomaxprocs, sc.programs, {h: a["slots"] for h, a in self.agents.items()},
            maxmcount=sc.maxmcount, seed=sc.seed, schedtrace_ms=sc.schedtrace_ms,
            scheddetail=sc.scheddetail)
        for host in self.agents:
            self.send_agent(host, "welcome", programs=sc.programs, timescale=float(sc.timescale),
                            config={})
        self.t0 = time.monotonic()
        self.apply(effects, None)
        self.arm_sysmon()

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, time_limit_s: float) -> Outcome:
        deadline = self.t0 + time_limit_s
        while not self.done:
            now = time.monotonic()
            if now >= deadline:
                self.out = Outcome("aborted", reason=f"time limit of {time_limit_s:g}s reached")
                break
            if self.stop_flag():
                self.out = Outcome("aborted", reason="interrupted")
                break
            wake = min(x for x in (deadline, self.sysmon_at, self.timer_at()) if x is not None)
            timeout_ms = max(0.0, (wake - now) * 1000)
            if self.sock.poll(timeout_ms if timeout_ms >= 1 else 0):
                # Drain what is there: each message is one event.
                while not self.done and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    ident, frame = self._recv()
                    if frame is not None:
                        self.on_frame(ident, frame)
            now = time.monotonic()
            if not self.done and self.timer_at() is not None and now >= self.timer_at():
                self.event({"t": "timers"}, None)
            if not self.done and self.sysmon_at is not None and now >= self.sysmon_at:
                self.event({"t": "sysmon"}, None)
                self.arm_sysmon()
        return self.out

    def _recv(self) -> tuple[bytes, bytes | None]:
        parts = self.sock.recv_multipart()
        if len(parts) != 2:
            self.rec.bad_frames += 1
            return (parts[0] if parts else b""), None
        return parts[0], parts[1]

    def timer_at(self) -> float | None:
        when = next_timer(self.sched)
        if when is None:
            return None
        return self.t0 + when * self.sc.timescale / 1e9

    def arm_sysmon(self) -> None:
        delay = sysmon_delay(self.sched)
        self.sysmon_at = None if delay is None else self.wall_after(delay)

    def on_frame(self, ident: bytes, frame: bytes) -> None:
        try:
            who = parse_identity(ident)
            msg = decode(frame)
        except ProtocolError as e:
            self.rec.bad_frames += 1
            log.warning("dropped a bad frame from %r: %s", ident[:32], e)
            return
        t = msg["t"]
        if who[0] == "m":
            if msg.get("m") != who[1] or msg["epoch"] != who[2]:
                self.rec.bad_frames += 1
                log.warning("dropped %s: sender %r does not match m=%s epoch=%s", t, ident, msg.get("m"), msg["epoch"])
                return
        elif t not in ("mexited", "forked", "agent_hello"):
            self.rec.bad_frames += 1
            log.warning("dropped %s from agent %s", t, who[1])
            return
        if t == "forked":
            self.on_forked(msg)
            return
        if t == "mexited" and msg["m"] == -1:
            return  # the agent itself is done (shutdown)
        if t == "agent_hello":
            return
        if t == "hello":
            decided = self.rec.fork_decided.pop(msg["m"], None)
            if decided is not None:
                self.rec.newm_to_mstart.append(time.monotonic() - decided)
            self.rec.pids[msg["m"]] = msg["pid"]
            self.rec.thread(msg["m"]).update(pid=msg["pid"], taint=msg["taint"], started_ms=self.go_ms())
        elif t == "woken":
            self.rec.notewakeup_to_running.append(msg["lat"])
        if t == "mexited":
            self.rec.thread(msg["m"]).update(gone_ms=self.go_ms(), status=msg["status"])
        self.event(msg, msg["m"] if who[0] == "m" else None)

    def on_forked(self, msg: dict) -> None:
        """newosproc done: the pid of the new M. Its host agent watches every M of the host."""
        mid, pid = msg["child"], msg["pid"]
        self.rec.pids[mid] = pid
        mp = self.sched.allm.get(mid)
        if mp is not None:
            mp.pid = pid
            if msg["m"] != -1:
                self.send_agent(mp.host, "watch", m=mid, pid=pid)

    def event(self, ev: dict, requester: int | None) -> None:
        self.rec.events += 1
        try:
            effects = step(self.sched, ev, self.go_now())
        except BadEvent as e:
            self.rec.bad_events += 1
            log.warning("%s", e)
            return
        self.apply(effects, requester)

    # --- effects ------------------------------------------------------------------------------------

    def apply(self, effects: list, requester: int | None) -> None:
        self.peak_mcount = max(self.peak_mcount, self.sched.mcount())
        forks_for_reply = []
        reply = None
        for e in effects:
            if isinstance(e, fx.Fork):
                self.rec.fork_decided[e.m] = time.monotonic()
                self.rec.thread(e.m).update(host=e.host, slot=e.slot, forker=e.forker, template=e.template,
                                            spinning=e.spinning, allocated_ms=self.go_ms())
                spec = fork_spec(m=e.m, nextp=e.nextp, slot=e.slot, epoch=e.epoch, ts=time.monotonic(),
                                 spinning=e.spinning, template=e.template)
                if e.forker is not None and e.forker == requester:
                    forks_for_reply.append(spec)
                else:
                    self.send_agent(e.host, "newosproc", fork=spec)
            elif isinstance(e, fx.REPLIES):
                reply = e
            elif isinstance(e, fx.Wake):
                self.send_m(e.m, "wake", nextp=e.nextp, sent=time.monotonic())
            elif isinstance(e, fx.Preempt):
                self.send_m(e.m, "preempt", g=e.g)
            elif isinstance(e, fx.StackFree):
                self.rec.thread(e.m)["stack_freed_ms"] = self.go_ms()
                self.send_agent(e.host, "stackfree", slot=e.slot, m=e.m)
            elif isinstance(e, fx.WakeSysmon):
                self.arm_sysmon()
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
            self.send_reply(reply, forks_for_reply)
        elif forks_for_reply:  # no reply to carry them: the agent forks them instead
            for spec in forks_for_reply:
                self.send_agent(self.sched.hosts[0], "newosproc", fork=spec)

    def send_reply(self, r, forks: list) -> None:
        if isinstance(r, fx.Execute):
            gp = self._g(r.g)
            self.send_m(r.m, "execute", g=r.g, prog=gp.prog, pos=position(gp.pc, gp.loops, gp.left),
                        forks=forks)
        elif isinstance(r, fx.Cont):
            self.send_m(r.m, "cont", forks=forks)
        elif isinstance(r, fx.Park):
            self.send_m(r.m, "park", forks=forks)
        elif isinstance(r, fx.Exit):
            self.rec.thread(r.m)["exited_ms"] = self.go_ms()
            for spec in forks:  # an exiting M forks nothing: its Ms go through its agent
                self.send_agent(self.sched.hosts[0], "newosproc", fork=spec)
            self.send_m(r.m, "exit")

    def _g(self, goid: int):
        # allgs is in goid order from 1: goid N is allgs[N-1].
        gp = self.sched.allgs[goid - 1]
        assert gp.goid == goid
        return gp

    # --- end ----------------------------------------------------------------------------------------

    def shutdown_agents(self) -> None:
        for host in self.agents:
            try:
                self.send_agent(host, "shutdown")
            except zmq.ZMQError:
                pass

    def close(self) -> None:
        self.sock.close(linger=0)
