"""Carrying out the core's effects over the wire: forks, replies, wakes, preemptions, stack frees,
watch and signal orders, sysmon's and netpoll's timers, the trace, the end of the run."""
from __future__ import annotations

import logging
import signal
import time

from coordinator.runtime import effects as fx
from coordinator.shell.result import Outcome
from protocol.messages import fork_spec, position

log = logging.getLogger("gmpsim.coordinator")


class Actuator:
    """What each effect does. `loop` is the Coordinator: its sched, end(), clock, timers, wire,
    hosts, delivery, rec, injector, invariants and trace file."""

    def __init__(self, loop):
        self.loop = loop
        self.peak_mcount = 0  # the highest mcount(), counted as Go counts threads
        self.watch_seq: dict[int, tuple] = {}  # seq of a watch or signal order -> its pending key
        self.preempt_sent: dict[int, float] = {}  # M id -> when a preemption went unanswered since
        self.hello_grace: dict[tuple[int, int], float] = {}  # (M, epoch) forked -> extra wait for its hello

    def apply(self, effects: list, requester: int | None, req_seq: int) -> None:
        c = self.loop
        self.peak_mcount = max(self.peak_mcount, c.sched.mcount())
        forks_for_reply = []
        reply = None
        now = time.monotonic()
        for e in effects:
            if isinstance(e, fx.Fork):
                spec = self.fork(e, now)
                if e.forker is not None and e.forker == requester:
                    if c.check:
                        self.check_routing(e, requester)
                    forks_for_reply.append((e.host, spec))
                    c.delivery.expect(("fork", e.m, e.epoch), b"", b"", now, e.m, self.fork_grace(spec))
                else:
                    self.order_fork(e.host, spec)
            elif isinstance(e, fx.REPLIES):
                reply = e
            elif isinstance(e, fx.Wake):
                ident = self.m_identity(e.m)
                frame = c.wire.send(ident, "wake", nextp=e.nextp, sent=time.monotonic())
                c.delivery.expect(("wake", e.m), ident, frame, now, e.m)
            elif isinstance(e, fx.Preempt):
                self.send_m(e.m, "preempt", g=e.g)
                self.preempt_sent.setdefault(e.m, now)
            elif isinstance(e, fx.StackFree):
                c.rec.thread(e.m)["stack_freed_ms"] = c.clock.go_ms()
                c.hosts.send_agent(e.host, "stackfree", slot=e.slot, m=e.m)
            elif isinstance(e, fx.Recovered):
                self.recovered(e)
            elif isinstance(e, fx.SysmonSleep):
                c.timers.sysmon_sleep(e.until, e.note)
            elif isinstance(e, fx.WakeSysmon):
                c.timers.wake_sysmon(now)
            elif isinstance(e, fx.NetpollSleep):
                c.timers.netpoll_sleep(e.m, e.until)
            elif isinstance(e, fx.NetpollBreak):
                c.timers.netpoll_break(e.m, now)
            elif isinstance(e, fx.Trace):
                c.trace_file.write(e.text)
                c.trace_file.flush()
            elif isinstance(e, fx.ProgramExit):
                c.end(Outcome("ok", reason="main returned"))
            elif isinstance(e, fx.Fatal):
                c.end(Outcome("fatal", e.message, list(e.lines), reason="fatal error"))
        if reply is not None:
            self.send_reply(reply, forks_for_reply, req_seq)
        elif forks_for_reply:  # no reply to carry them: the agent of each M's host forks it instead
            for host, spec in forks_for_reply:
                self.order_fork(host, spec)

    # --- forks --------------------------------------------------------------------------------------

    def fork(self, e: fx.Fork, now: float) -> dict:
        """newm decided: recorded, and its fork order made (through the fork faults)."""
        c = self.loop
        c.rec.fork_decided[e.m] = now
        c.rec.thread(e.m).update(host=e.host, slot=e.slot, forker=e.forker, template=e.template,
                                 spinning=e.spinning, allocated_ms=c.clock.go_ms(), epoch=e.epoch)
        spec = fork_spec(m=e.m, nextp=e.nextp, slot=e.slot, epoch=e.epoch, ts=now,
                         spinning=e.spinning, template=e.template)
        if c.inject.plan.has_fork_faults:
            spec = c.inject.on_fork(spec)
        self.hello_grace[(e.m, e.epoch)] = self.fork_grace(spec)
        return spec

    def check_routing(self, e: fx.Fork, requester: int) -> None:
        """The routing contract, checked with the invariants: a fork carried by a reply is the
        requester's own (its process forks), so it must be on the requester's host: that is where
        the new M's g0 slot was allocated."""
        forker = self.loop.sched.allm.get(requester)
        if forker is None or forker.host != e.host:
            where = forker.host if forker is not None else "nowhere"
            self.loop.invariants["violations"].append(
                f"routing: M{e.m}'s fork (slot on {e.host}) carried by the reply to M{requester} on {where}")

    def order_fork(self, host: str, spec: dict) -> None:
        """newosproc through the host agent, resent until it answers (forked / forkfail)."""
        c = self.loop
        ident = c.hosts.agent_ident[host]
        frame = c.wire.send(ident, "newosproc", fork=spec)
        c.delivery.expect(("fork", spec["m"], spec["epoch"]), ident, frame, time.monotonic(), spec["m"],
                          self.fork_grace(spec))

    def fork_grace(self, spec: dict) -> float:
        """Wall seconds a fork may legitimately take on top of lost_after: retryOnEAGAIN's sleeps
        (1+2+...+20 ms of Go time at most) and a slow-fork delay."""
        retry_ms = sum(range(1, min(spec["fail"], 20) + 1)) if spec["retry"] else 0
        return retry_ms * 1000 * self.loop.clock.timescale / 1e6 + spec["delay_us"] / 1e6

    # --- to Ms --------------------------------------------------------------------------------------

    def m_identity(self, mid: int) -> bytes:
        return self.loop.wire.m_identity_of(self.loop.sched, mid)

    def send_m(self, mid: int, t: str, **fields) -> bytes:
        return self.loop.wire.send(self.m_identity(mid), t, **fields)

    def send_reply(self, r, host_forks: list, req_seq: int) -> None:
        """The reply to M r.m, carrying the forks its own process makes (host_forks: (host, spec))."""
        c = self.loop
        ident = self.m_identity(r.m)
        forks = [spec for _, spec in host_forks]
        if isinstance(r, fx.Execute):
            gp = c.sched.goids[r.g]
            t, fields = "execute", dict(g=r.g, prog=gp.prog, pos=position(gp.pc, gp.loops, gp.left), forks=forks)
        elif isinstance(r, fx.Cont):
            t, fields = "cont", dict(forks=forks)
        elif isinstance(r, fx.Park):
            t, fields = "park", dict(forks=forks)
        else:  # Exit: an exiting M forks nothing; its Ms go through the agent of their host
            c.rec.thread(r.m)["exited_ms"] = c.clock.go_ms()
            for host, spec in host_forks:
                self.order_fork(host, spec)
            t, fields = "exit", {}
        frame = c.wire.send(ident, t, re=req_seq, **fields)
        c.delivery.remember_reply(r.m, req_seq, ident, frame)

    def recovered(self, e: fx.Recovered) -> None:
        c = self.loop
        c.timers.forget_m(e.m)
        if e.why.startswith("lost"):  # fenced, maybe alive: told to exit (it does when it resumes)
            c.wire.send_direct(self.m_identity(e.m), "shutdown")
        c.inject.recovered(e)
        c.delivery.forget(e.m)
        self.preempt_sent.pop(e.m, None)
        c.rec.thread(e.m).update(died_ms=c.clock.go_ms(), died=e.why)
        death = next((d for d in reversed(c.rec.deaths) if d["m"] == e.m and "doing" not in d), None)
        if death is None:
            death = {"m": e.m, "pid": c.rec.pids.get(e.m), "time_ms": c.clock.go_ms(), "frames": []}
            c.rec.deaths.append(death)
        death.update(why=e.why, doing=e.doing, requeued=list(e.requeued), ps=list(e.ps))
        log.warning("M%d %s while %s: requeued %s, handed off %s", e.m, e.why, e.doing,
                    list(e.requeued), list(e.ps))

    # --- to the agents ------------------------------------------------------------------------------

    def watch(self, mp, pid: int) -> None:
        """The M's host agent watches its process (its death comes back as mexited)."""
        c = self.loop
        mp.pid = pid
        key = ("watch", mp.id)
        frame = c.hosts.send_agent(mp.host, "watch", m=mp.id, pid=pid, slot=mp.slot)
        self.watch_seq[c.wire.seq] = key
        c.delivery.expect(key, c.hosts.agent_ident[mp.host], frame, time.monotonic(), mp.id)

    def signal_m(self, mp, sig: int) -> None:
        """A signal order to the M's host agent, resent until acknowledged: an order sent while the
        agent is being restarted reaches its successor (Hosts.agent_rejoined re-addresses it)."""
        c = self.loop
        if mp.pid:
            if sig == signal.SIGCONT:  # a SIGSTOP still being resent must not come after its SIGCONT
                for key in [k for k in c.delivery.pending if k[0] == "signal" and k[2:] == (mp.id, signal.SIGSTOP)]:
                    c.delivery.done(key)
            frame = c.hosts.send_agent(mp.host, "signal", m=mp.id, pid=mp.pid, sig=int(sig))
            key = ("signal", c.wire.seq, mp.id, int(sig))
            self.watch_seq[c.wire.seq] = key
            c.delivery.expect(key, c.hosts.agent_ident[mp.host], frame, time.monotonic(), mp.id)
