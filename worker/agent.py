"""The host agent: the host's template thread, its g0 stack arena, and the reaper of its Ms.

A pristine process that never runs goroutines. It maps the arena before forking anything (Ms
inherit the mapping), forks the Ms that no M's process forks (m0, sysmon's, the template's),
watches every M of its host with a pidfd and, as the child subreaper, reaps the orphans; each exit
it reports to the coordinator (that report is exitThread clearing m.freeWait). At shutdown it
ends its Ms and unlinks the arena. Run as `python -m worker.agent --endpoint E --host H --run-id R`.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import signal
import sys
import time

import zmq

from protocol.codec import ProtocolError, decode, encode
from protocol.transport import agent_identity, dealer

from .g0 import G0_STACK_SIZE, Arena, arena_name
from .m import HostConfig, fork_m
from .reaper import PidWatch, kill_and_wait, reap, set_child_subreaper

log = logging.getLogger("gmpsim.agent")

PR_SET_PDEATHSIG = 1
REAP_EVERY_S = 0.2


def _die_with_parent() -> None:
    """The coordinator's death is ours too (SIGTERM, then our orderly cleanup)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Agent:
    def __init__(self, endpoint: str, host: str, run_id: str, slots: int, slot_size: int):
        self.endpoint, self.host, self.run_id = endpoint, host, run_id
        self.arena = Arena.create(arena_name(run_id, host), slots, slot_size)
        self.watch = PidWatch()
        self.pids: dict[int, int] = {}  # M id -> pid, every M of this host still alive
        self.exits: dict[int, int] = {}  # pid -> exit status, reaped before its pidfd fired
        self.seq = 0
        self.cfg: HostConfig | None = None
        self.ctx = zmq.Context()
        self.sock = dealer(self.ctx, endpoint, agent_identity(host))

    def send(self, t: str, **fields) -> None:
        self.seq += 1
        self.sock.send(encode(t, self.seq, 0, **fields))

    def run(self) -> None:
        self.send("agent_hello", host=self.host, pid=os.getpid(), arena=self.arena.name,
                  slot_size=self.arena.slot_size, slots=self.arena.slots)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        registered: set[int] = set()
        next_reap = time.monotonic() + REAP_EVERY_S
        while True:
            for fd in self.watch.fds():
                if fd not in registered:
                    poller.register(fd, zmq.POLLIN)
                    registered.add(fd)
            events = dict(poller.poll(REAP_EVERY_S * 1000))
            if self.sock in events:
                while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    if self.handle(self.sock.recv()) == "shutdown":
                        return
            fds = [fd for fd in events if isinstance(fd, int)]
            if fds or time.monotonic() >= next_reap:
                self.collect_orphans()
                next_reap = time.monotonic() + REAP_EVERY_S
            for fd in fds:
                poller.unregister(fd)
                registered.discard(fd)
            for mid, pid in self.watch.ready(fds) if fds else ():
                self.report_exit(mid, pid)

    def collect_orphans(self) -> None:
        """Reap our children and the orphans re-parented to us (subreaper)."""
        for pid, status in reap():
            self.exits[pid] = status

    def report_exit(self, mid: int, pid: int) -> None:
        self.collect_orphans()
        status = self.exits.pop(pid, 0)  # not our child: its forker reaped it (SIGCHLD ignored)
        self.pids.pop(mid, None)
        self.send("mexited", m=mid, pid=pid, status=status)

    def handle(self, frame: bytes) -> str | None:
        try:
            msg = decode(frame)
        except ProtocolError as e:
            log.warning("agent %s: dropped a bad frame: %s", self.host, e)
            return None
        t = msg["t"]
        if t == "welcome":
            self.cfg = HostConfig(endpoint=self.endpoint, host=self.host, agent_pid=os.getpid(),
                                  arena=self.arena, programs=msg["programs"],
                                  timescale=msg["timescale"], **msg["config"])
            gc.freeze()
        elif t == "newosproc":  # newm1 from the template thread (or for sysmon's newm)
            spec = msg["fork"]
            pid = fork_m(self.cfg, spec, time.monotonic())
            self.watch_m(spec["m"], pid)
            self.send("forked", m=-1, child=spec["m"], pid=pid)
        elif t == "watch":
            self.watch_m(msg["m"], msg["pid"])
        elif t == "stackfree":
            if msg["m"] in self.pids:  # freeWait must have been 0: the owner's process is gone
                log.error("agent %s: stackfree of slot %d while M%d (pid %d) still runs",
                          self.host, msg["slot"], msg["m"], self.pids[msg["m"]])
            self.arena.stackfree(msg["slot"])
        elif t == "shutdown":
            return "shutdown"
        else:
            log.warning("agent %s: unexpected %s", self.host, t)
        return None

    def watch_m(self, mid: int, pid: int) -> None:
        if mid in self.watch:
            return
        self.pids[mid] = pid
        self.watch.add(mid, pid)

    def shutdown(self) -> None:
        """End every M of this host, reap them, unlink the arena, say goodbye."""
        left = kill_and_wait(list(self.pids.values()), timeout=1.0)
        self.collect_orphans()
        if left:
            log.error("agent %s: Ms still alive after SIGKILL: %s", self.host, left)
        self.watch.close()
        self.arena.unlink()
        self.arena.close()
        try:
            self.send("mexited", m=-1, pid=os.getpid(), status=0)  # the agent itself is done
        except zmq.ZMQError:
            pass
        self.sock.close(linger=200)
        self.ctx.term()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m worker.agent")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--host", default="local")
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--slots", type=int, default=12000)
    ap.add_argument("--slot-size", type=int, default=G0_STACK_SIZE)
    args = ap.parse_args(argv)
    set_child_subreaper()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    agent = Agent(args.endpoint, args.host, args.run_id, args.slots, args.slot_size)
    try:
        agent.run()
    except SystemExit:
        pass
    finally:
        agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
