"""The host agents: their hello and welcome, heartbeats and cut-off, death, restart and rejoin,
and their goodbyes at shutdown."""
from __future__ import annotations

import logging
import os
import signal
import time

import zmq

from coordinator.shell.result import Outcome
from protocol.codec import ProtocolError, decode
from protocol.owner import alive
from protocol.timing import HEARTBEAT_S, HEARTBEAT_TIMEOUT_S
from protocol.transport import parse_identity

log = logging.getLogger("gmpsim.coordinator")

AGENT_HELLO_TIMEOUT_S = 10.0


class AgentControl:
    """How the loop reaches the host agents' processes (run.py owns them)."""

    def pid(self, host: str) -> int: ...

    def restart(self, host: str) -> int: ...


class Hosts:
    """Every host agent the run knows, by host name. `loop` is the Coordinator: its sched, event(),
    end(), clock, wire, rec, delivery and actuator."""

    def __init__(self, loop, control: AgentControl | None, poller: zmq.Poller):
        self.loop = loop
        self.control = control
        self.poller = poller
        self.agents: dict[str, dict] = {}  # host -> its agent_hello
        self.agent_ident: dict[str, bytes] = {}  # host -> its current agent's identity
        self.agent_up: dict[str, bool] = {}
        self.agent_seen: dict[str, float] = {}  # host -> when its agent was last heard
        self.agent_spoke: dict[str, bool] = {}  # host -> its agent has sent us something since our welcome
        self.agent_fds: dict[int, str] = {}  # pidfd -> host
        self.byes: dict[str, dict] = {}  # host -> what its agent left behind at shutdown
        self.host_lost: list[dict] = []
        self.next_beat = 0.0
        self.restart_agents = True
        self.kill_rec: dict | None = None  # the kill-template fault's record, once it fired

    # --- joining ------------------------------------------------------------------------------------

    def wait_agents(self, hosts: int = 1, timeout_s: float | None = AGENT_HELLO_TIMEOUT_S) -> None:
        """Until `hosts` host agents have said hello (None: wait as long as it takes, or Ctrl-C)."""
        wire, stop = self.loop.wire, self.loop.stop_flag
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(self.agents) < hosts:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0 or stop():
                raise RuntimeError(f"gmpsim: {len(self.agents)} of {hosts} host agent(s) said hello"
                                   + ("" if stop() else f" within {timeout_s:.0f}s"))
            if wire.sock.poll(min(left, 1.0) * 1000):
                ident, frame = wire.recv()
                if frame is None:
                    continue
                try:
                    msg = decode(frame)
                except ProtocolError as e:
                    wire.bad_frame(ident, e)
                    continue
                if msg["t"] == "agent_hello" and self.genuine_agent(msg, ident):
                    self.agent_joined(msg, ident)
                else:
                    wire.bad_frame(ident, f"{msg['t']} before the host agent's hello")

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

    def registered_agent(self, ident: bytes, host: str) -> bool:
        """Is ident the current agent of host (welcomed)? Anything else changes nothing."""
        return self.agent_ident.get(host) == ident and ident.startswith(b"agent:" + host.encode() + b"/")

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

    def welcome(self, host: str) -> None:
        self.agent_spoke[host] = False
        self.loop.wire.send_direct(self.agent_ident[host], "welcome", programs=self.loop.sched.programs,
                                   timescale=float(self.loop.clock.timescale), config={})

    def heard(self, host: str, t: str) -> None:
        """Any message of the host's current agent."""
        self.agent_seen[host] = time.monotonic()
        if t != "agent_hello":
            self.agent_spoke[host] = True

    def send_agent(self, host: str, t: str, **fields) -> bytes:
        return self.loop.wire.send(self.agent_ident[host], t, **fields)

    def agent_rejoined(self, msg: dict) -> None:
        """A restarted agent: welcome it, and have it watch every live M of its host. An agent of a
        host that was cut off rejoins as a fresh host (its Ms were fenced; its arena is empty)."""
        c = self.loop
        host = msg["host"]
        old_ident = self.agent_ident.get(host)
        if old_ident == msg["_from"] and self.agent_up.get(host):
            if not self.agent_spoke.get(host):
                return  # a hello resent before our welcome reached it
            # Welcomed, and it has spoken since: it heard nothing from us for its timeout, ended its
            # Ms and starts afresh before we cut it off (a partition just under our timeout). Its
            # Ms are gone without a report: cut it off now, then take it back as a fresh host.
            self.cut_off(host, "said hello again (it had cut itself off)")
        fresh = host not in c.sched.hosts
        for r in c.rec.agent_restarts:
            if r["host"] == host and r["pid"] == msg["pid"]:
                r["hello"] = True
        self.agent_joined(msg, msg["_from"])
        self.welcome(host)
        if fresh:
            log.warning("host %s rejoined as a fresh host", host)
            c.event({"t": "hostjoin", "host": host, "slots": msg["slots"]}, None)
            return
        n = 0
        for mp in list(c.sched.allm.values()):
            if not mp.virtual and mp.host == host and mp.pid:
                c.act.watch(mp, mp.pid)
                n += 1
        # Signal orders its predecessor may never have carried out go to it (after the watches:
        # an agent signals only Ms it watches).
        for key, p in c.delivery.pending.items():
            if key[0] == "signal" and p.identity == old_ident:
                p.identity = msg["_from"]
                p.resend_at = 0.0
        rec = self.kill_rec
        if rec is not None and rec.get("recovery"):
            rec["recovery"] += f", {n} Ms watched again"

    # --- across hosts: heartbeats -------------------------------------------------------------------

    def heartbeats(self, now: float) -> None:
        """Across hosts: beat to every live agent; a host silent for the timeout is cut off."""
        if now >= self.next_beat:
            for host, up in self.agent_up.items():
                if up:
                    self.loop.wire.send_direct(self.agent_ident[host], "heartbeat", m=-1)
            self.next_beat = now + HEARTBEAT_S
        for host, up in list(self.agent_up.items()):
            if up and now - self.agent_seen.get(host, now) > HEARTBEAT_TIMEOUT_S:
                self.cut_off(host, f"silent for {now - self.agent_seen[host]:.1f}s")

    def cut_off(self, host: str, why: str) -> None:
        """No new M goes to the host; its Ms are fenced (their goroutines requeued, Ps handed off)."""
        self.agent_up[host] = False
        log.warning("host %s %s: cut off, its Ms fenced", host, why)
        self.host_lost.append({"host": host, "time_ms": self.loop.clock.go_ms()})
        self.loop.event({"t": "hostlost", "host": host}, None)

    # --- death and restart --------------------------------------------------------------------------

    def kill_agent(self, host: str, rec: dict) -> None:
        """kill-template: SIGKILL the host agent (the template thread, the reaper)."""
        self.restart_agents = bool(rec.get("restart", True))
        self.kill_rec = rec
        pid = self.agents[host]["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def died(self, events: dict) -> None:
        """The agents whose pidfd the poll says readable (each is dead)."""
        for fd, host in list(self.agent_fds.items()):
            if fd in events and not self.loop.done:
                self.agent_died(fd, host)

    def agent_died(self, fd: int, host: str) -> None:
        c = self.loop
        self.poller.unregister(fd)
        os.close(fd)
        del self.agent_fds[fd]
        was_up = self.agent_up.get(host, False)
        self.agent_up[host] = False
        rec = self.kill_rec
        if rec is not None:
            rec["detected_ms"] = c.clock.go_ms()
        if not self.restart_agents or self.control is None:
            self.end_orphaned_ms(host)
            msg = f"host agent {host} died"
            c.end(Outcome("fatal", msg, [f"gmpsim: host agent {host} (the template thread) died",
                                         f"fatal error: {msg}"], reason="fatal error"))
            return
        if not was_up:  # its restarted incarnation died before it rejoined (e.g. its arena was gone)
            restarts = sum(r["host"] == host for r in c.rec.agent_restarts)
            log.error("host agent %s died before its hello after %d restart(s) (its arena gone? /dev/shm full?)",
                      host, restarts)
            self.end_orphaned_ms(host)
            msg = f"host agent {host} died"
            c.end(Outcome("fatal", msg, [f"gmpsim: host agent {host} (the template thread) died again "
                                         "before it rejoined", f"fatal error: {msg}"], reason="fatal error"))
            return
        pid = self.control.restart(host)
        c.rec.agent_restarts.append({"host": host, "time_ms": c.clock.go_ms(), "pid": pid, "hello": False,
                                     "why": "killed by a fault" if rec is not None else "died"})
        log.warning("host agent %s died; restarted it (pid %d)", host, pid)
        self.watch_agent(host, pid)  # from now: one that dies before its hello must not go unseen
        if rec is not None:
            rec["recovery"] = f"agent restarted (pid {pid}), arena adopted"
        # Fork orders the dead agent may or may not have carried out: a new incarnation of each.
        for key in [k for k in c.delivery.pending if k[0] == "fork"]:
            c.delivery.done(key)
            mp = c.sched.allm.get(key[1])
            if mp is not None and not mp.started and mp.epoch == key[2]:
                c.event({"t": "refork", "m": key[1], "cepoch": key[2]}, None)

    def end_orphaned_ms(self, host: str) -> None:
        """A local host agent gone for good: no one else will end its Ms (same machine: we can).
        SIGKILL each, and give them a moment to be gone before the run counts what is left."""
        sched = self.loop.sched
        pids = [pid for mid, pid in self.loop.rec.pids.items()
                if pid and sched is not None and getattr(sched.allm.get(mid), "host", None) == host]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)

    # --- the end ------------------------------------------------------------------------------------

    def bye(self, host: str, msg: dict) -> None:
        self.byes[host] = {"processes": msg["processes"], "shm_segments": msg["shm_segments"]}

    def shutdown_agents(self) -> set[str]:
        """Tell every agent that said hello to end its Ms and go; returns their hosts."""
        for host in self.agents:
            self.loop.wire.send_direct(self.agent_ident[host], "shutdown")
        return set(self.agents)

    def collect_byes(self, timeout_s: float) -> None:
        """Across hosts: wait for each agent's goodbye, which says what it left behind."""
        wire = self.loop.wire
        deadline = time.monotonic() + timeout_s
        while len(self.byes) < sum(1 for up in self.agent_up.values() if up) and time.monotonic() < deadline:
            if wire.sock.poll(50):
                ident, frame = wire.recv()
                try:
                    who, msg = parse_identity(ident), decode(frame)
                except ProtocolError:
                    continue
                if who[0] == "agent" and msg["t"] == "bye" and self.registered_agent(ident, msg["host"]):
                    self.bye(msg["host"], msg)

    def close(self) -> None:
        for fd in list(self.agent_fds):
            os.close(fd)
        self.agent_fds.clear()
