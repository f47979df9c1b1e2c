"""The host agents the run knows: their hello and welcome, heartbeats and cut-off, rejoin, and their
goodbyes at shutdown (a local agent's death and restart are restarts.py's)."""
from __future__ import annotations

import logging
import time

from protocol.codec import ProtocolError, decode
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
    clock, wire, rec, delivery, actuator and restarts."""

    def __init__(self, loop, control: AgentControl | None):
        self.loop = loop
        self.control = control
        self.agents: dict[str, dict] = {}  # host -> its agent_hello
        self.agent_ident: dict[str, bytes] = {}  # host -> its current agent's identity
        self.agent_up: dict[str, bool] = {}
        self.agent_seen: dict[str, float] = {}  # host -> when its agent was last heard
        self.agent_spoke: dict[str, bool] = {}  # host -> its agent has sent us something since our welcome
        self.byes: dict[str, dict] = {}  # host -> what its agent left behind at shutdown
        self.host_lost: list[dict] = []
        self.next_beat = 0.0

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
        restarts = self.loop.restarts
        if self.control is not None and host not in restarts.agent_fds.values():  # not watched since its restart
            restarts.watch_agent(host, msg["pid"])
        log.info("host agent %s (pid %d) joined: arena %s, %d slots of %d bytes",
                 host, msg["pid"], msg["arena"], msg["slots"], msg["slot_size"])

    def welcome(self, host: str) -> None:
        self.agent_spoke[host] = False
        self.loop.wire.send_direct(self.agent_ident[host], "welcome", programs=self.loop.sched.programs,
                                   timescale=float(self.loop.clock.timescale),
                                   config={"spares": self.loop.sc.spare_ms})

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
        rec = c.restarts.kill_rec
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
