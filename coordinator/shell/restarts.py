"""A local host agent's life and death: a pidfd on each agent, the kill-template fault, and what
follows an agent's death: its restart (an agent that adopts the arena, and the fork orders redone),
or, with no restart, the end of the run with the agent's Ms killed."""
from __future__ import annotations

import logging
import os
import signal
import time

import zmq

from coordinator.shell.hosts import AgentControl
from coordinator.shell.result import Outcome
from protocol.owner import alive

log = logging.getLogger("gmpsim.coordinator")


class AgentRestarts:
    """The local agents' pidfds in the loop's poller, and the restart policy. `loop` is the
    Coordinator (its hosts, sched, event(), end(), clock, rec and delivery); `control` reaches the
    agents' processes (run.py owns them; None across hosts: no pidfd, no restart)."""

    def __init__(self, loop, control: AgentControl | None, poller: zmq.Poller):
        self.loop = loop
        self.control = control
        self.poller = poller
        self.agent_fds: dict[int, str] = {}  # pidfd -> host
        self.restart_agents = True
        self.kill_rec: dict | None = None  # the kill-template fault's record, once it fired

    def watch_agent(self, host: str, pid: int) -> None:
        """A pidfd on a local host agent: its death comes to agent_died."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        self.agent_fds[fd] = host
        self.poller.register(fd, zmq.POLLIN)

    def kill_agent(self, host: str, rec: dict) -> None:
        """kill-template: SIGKILL the host agent (the template thread, the reaper)."""
        self.restart_agents = bool(rec.get("restart", True))
        self.kill_rec = rec
        pid = self.loop.hosts.agents[host]["pid"]
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
        was_up = c.hosts.agent_up.get(host, False)
        c.hosts.agent_up[host] = False
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

    def close(self) -> None:
        for fd in list(self.agent_fds):
            os.close(fd)
        self.agent_fds.clear()
