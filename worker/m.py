"""The worker process that is an M: mstart → mstart1 → the schedule loop, goroutine ops, notesleep
on m.park, and newosproc as a fork of this very process.

The scheduling decisions are the coordinator's (the core); this process asks for them at each point
where Go's M would enter the scheduler (entersyscall, gopark, goexit, ...), and carries out the
answer: execute a goroutine, go on, park, or exit. Every such call runs on the M's g0 stack in
shared memory (`systemstack`), so a dead M's last frames can be read from the arena.
"""
from __future__ import annotations

import gc
import logging
import os
import select
import signal
import time
from dataclasses import dataclass

import zmq

from protocol.codec import ProtocolError, decode, encode
from protocol.messages import position
from protocol.ops import advance
from protocol.throw import Throw
from protocol.transport import dealer, m_identity

from .g0 import Arena, G0Stack
from .run_ops import TAINT_ENV, OpRunner

log = logging.getLogger("gmpsim.m")

AGENT_CHECK_MS = 500  # how often a blocked M looks whether its agent died

REPLIES = frozenset({"execute", "cont", "park", "exit"})




@dataclass
class HostConfig:
    """What every M of a host shares, inherited through fork from the agent."""
    endpoint: str
    host: str
    agent_pid: int
    arena: Arena
    programs: dict
    timescale: float  # wall µs per Go µs
    slice_us: float = 2000.0  # wall µs between preemption checks while computing


def child_after_fork() -> None:
    """In a freshly forked M: Ms reap their own children (SIGCHLD ignored; orphans go to the agent,
    the subreaper); Ctrl-C is the coordinator's to handle; multiprocessing's after-fork hooks reset
    the inherited log queue (the mp logging handler), as multiprocessing does for its own children."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for h in logging.getLogger().handlers:  # handler filters see records of every logger
        h.addFilter(_reset_log_queue_once)


def _reset_log_queue_once(record) -> bool:
    """Before an M's first log record, run multiprocessing's after-fork hooks, which reset the
    inherited log queue (the multiprocessing-logging handler), as multiprocessing does for its own
    children. Deferred to the first record because most Ms never log and the hooks cost ~0.3 ms."""
    import multiprocessing.util
    for h in logging.getLogger().handlers:
        h.removeFilter(_reset_log_queue_once)
    multiprocessing.util._run_after_forkers()
    return True


def fork_m(cfg: HostConfig, spec: dict, decided: float) -> int:
    """newosproc: fork this process into the new M described by `spec` (a fork spec). The child never
    touches this process's ZeroMQ context: it makes its own in mstart. Returns the child's pid."""
    gc.freeze()  # the child's collections must not dirty the inherited heap (FACTS.md)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_after_fork()
            WorkerM(cfg, spec).mstart()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
        except BaseException:  # noqa: BLE001 - a dying M must not fall back into its parent's code
            log.exception("M%d died", spec["m"])
            code = 70
        finally:
            os._exit(code)
    return pid


class WorkerM:
    """One M process (Go's m, seen from its own thread)."""

    def __init__(self, cfg: HostConfig, spec: dict):
        self.cfg = cfg
        self.id = spec["m"]
        self.epoch = spec["epoch"]
        self.spec = spec
        self.seq = 0
        self.park_key = 0  # m.park's note key: a WAKE kept until the sleep (lock_futex.go semantics)
        self.wake_sent = 0.0
        self.preempt_g = -1  # gp.preempt for the goroutine this M runs
        self.g0 = G0Stack(cfg.arena, spec["slot"])
        self.ctx = None
        self.sock = None
        self.agent_fd = -1

    # --- wire -------------------------------------------------------------------------------------

    def send(self, t: str, **fields) -> None:
        self.seq += 1
        self.sock.send(encode(t, self.seq, self.epoch, m=self.id, **fields))

    def recv(self, timeout_ms: float | None) -> dict | None:
        """One message, or None on timeout. A blocking wait is a plain recv (the fastest wake), which
        every AGENT_CHECK_MS looks whether the host agent is still there: an M outlives no agent."""
        if timeout_ms is None:
            while True:
                try:
                    frame = self.sock.recv()
                    break
                except zmq.Again:
                    self.check_agent()
        else:
            if not self.sock.poll(timeout_ms):
                self.check_agent()
                return None
            frame = self.sock.recv()
        try:
            msg = decode(frame)
        except ProtocolError as e:
            log.warning("M%d: dropped a bad frame: %s", self.id, e)
            return None
        return self._note(msg)

    def check_agent(self) -> None:
        if select.select([self.agent_fd], [], [], 0)[0]:
            log.warning("M%d: host agent is gone; exiting", self.id)
            raise SystemExit(3)

    def _note(self, msg: dict) -> dict | None:
        """Messages that may come at any time: wake (kept until the sleep), preempt, shutdown."""
        t = msg["t"]
        if t == "wake":
            if self.park_key != 0:
                raise Throw("notewakeup - double wakeup", prints=(f"notewakeup - double wakeup ({self.park_key})",))
            self.park_key = 1
            self.wake_sent = msg["sent"]
            self.woke_at = time.monotonic()
            return None
        if t == "preempt":
            self.preempt_g = msg["g"]
            return None
        if t == "shutdown":
            raise SystemExit(0)
        return msg

    def call(self, t: str, **fields) -> dict:
        """Send a request and wait for the core's answer (execute, cont, park or exit)."""
        self.send(t, **fields)
        return self.await_reply()

    def await_reply(self) -> dict:
        while True:
            msg = self.recv(None)
            if msg is not None and msg["t"] in REPLIES:
                return msg
            if msg is not None:
                log.warning("M%d: unexpected %s while waiting for a reply", self.id, msg["t"])

    # --- Go's M -----------------------------------------------------------------------------------

    def mstart(self) -> None:
        """Go's mstart: set up the thread (its own ZeroMQ context and socket), say hello (mstart1),
        then loop in schedule. Never returns but by SystemExit."""
        started = time.monotonic()
        self.ctx = zmq.Context()
        self.sock = dealer(self.ctx, self.cfg.endpoint, m_identity(self.id, self.epoch))
        self.sock.setsockopt(zmq.RCVTIMEO, AGENT_CHECK_MS)
        self.agent_fd = os.pidfd_open(self.cfg.agent_pid)
        with self.g0.mstart_frame():
            with self.g0.systemstack("runtime.mstart1"):
                reply = self.call("hello", pid=os.getpid(), host=self.cfg.host, started=started,
                                  taint=os.environ.get(TAINT_ENV, ""))
            self.schedule(reply)

    def schedule(self, reply: dict) -> None:
        """The loop of Go's schedule(): carry out the core's answer, forever."""
        runner = OpRunner(self)
        while True:
            self.newosprocs(reply.get("forks", ()))
            t = reply["t"]
            if t == "execute":
                reply = runner.execute(reply["g"], reply["prog"], reply["pos"])
            elif t == "park":
                reply = self.mPark()
            elif t == "exit":
                self.mexit()
            else:
                raise Throw(f"schedule: unexpected {t} with no goroutine")

    def newosprocs(self, forks) -> None:
        """newm1 → newosproc for each M the core asked this M to create: a fork of this process."""
        for spec in forks:
            with self.g0.systemstack("runtime.newosproc"):
                pid = fork_m(self.cfg, spec, time.monotonic())
            self.send("forked", child=spec["m"], pid=pid)

    def mPark(self) -> dict:
        """Go's mPark: notesleep(&m.park); noteclear; then tell the core (acquirep(nextp) is its)."""
        with self.g0.systemstack("runtime.mPark"):
            while self.park_key == 0:  # notesleep
                msg = self.recv(None)
                if msg is not None:
                    log.warning("M%d: unexpected %s while parked", self.id, msg["t"])
            self.park_key = 0  # noteclear
            lat = self.woke_at - self.wake_sent
            return self.call("woken", lat=lat)

    def mexit(self) -> None:
        """Go's mexit → exitThread: the process ends; the agent sees it go and reports it."""
        self.sock.close(0)
        self.ctx.term()
        raise SystemExit(0)


__all__ = ["HostConfig", "WorkerM", "fork_m", "child_after_fork", "position", "advance"]
