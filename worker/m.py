"""The worker process that is an M: mstart → mstart1 → the schedule loop, goroutine ops, notesleep
on m.park, and newosproc as a fork of this very process.

The scheduling decisions are the coordinator's (the core); this process asks for them at each point
where Go's M would enter the scheduler (entersyscall, gopark, goexit, ...), and carries out the
answer: execute a goroutine, go on, park, or exit. Every such call runs on the M's g0 stack in
shared memory (`systemstack`), so a dead M's last frames can be read from the arena.

Delivery: a request is resent (same seq) until a reply naming it (`re`) arrives, so a dropped
request or reply costs a retry, not a lost M; the coordinator answers a duplicate from its cache.
A WAKE is kept until the sleep (lock_futex.go's note) and a duplicate of it (same seq) is ignored.
"""
from __future__ import annotations

import gc
import logging
import os
import resource
import select
import signal
import time
from dataclasses import dataclass, fields
from errno import EAGAIN

import zmq
from setproctitle import setproctitle

from protocol import titles
from protocol.bare_fork import fork
from protocol.codec import ProtocolError, decode, encode
from protocol.messages import CLONE_FRAME, REPLIES
from protocol.throw import Throw
from protocol.timing import RETRY_ON_EAGAIN_TRIES
from protocol.transport import Curve, dealer_connect, dealer_unconnected, m_identity

from . import machine_limits
from .g0 import Arena, G0Stack
from .run_ops import TAINT_ENV, OpRunner

log = logging.getLogger("gmpsim.m")

RETRY_FIRST_MS, RETRY_MAX_MS = 50, 800  # resending an unanswered request (a round trip is ~0.2 ms)



@dataclass
class HostConfig:
    """What every M of a host shares, inherited through fork from the agent."""
    endpoint: str
    host: str
    guardian_pid: int  # the process whose death ends this M (the local coordinator)
    arena: Arena
    programs: dict
    timescale: float  # wall µs per Go µs
    slice_us: float = 2000.0  # wall µs between preemption checks while computing
    curve: object = None  # CURVE client keys across hosts (protocol.transport.Curve)
    agent_pid: int = 0  # the host agent (its pidfds, one per M, count against its open files)
    spares: int = 0  # Ms the forker keeps forked ahead (the scenario's spare_ms; worker/spare.py)

    def fd_pids(self) -> tuple[int, ...]:
        """The processes whose open files grow with the Ms (machine_limits.check's fd_pids)."""
        return tuple(p for p in (self.guardian_pid, self.agent_pid) if p)

    def to_wire(self) -> dict:
        """This config as msgpack carries it to the exec'd forker: the arena by name, the keys as bytes."""
        c = {f.name: getattr(self, f.name) for f in fields(self)}
        c["arena"] = [self.arena.name, self.arena.slot_size]
        c["curve"] = None if self.curve is None else [self.curve.public, self.curve.secret, self.curve.server_public]
        return c

    @classmethod
    def from_wire(cls, c: dict) -> "HostConfig":
        """The config `to_wire` wrote, with the arena mapped again (it is the agent's: not unlinked here)."""
        name, slot_size = c["arena"]
        curve = None if c["curve"] is None else Curve(*c["curve"])
        return cls(**{**c, "arena": Arena.attach(name, readonly=False, slot_size=slot_size), "curve": curve})


def child_after_fork(keep: set[int] = frozenset()) -> None:
    """In a freshly forked M (or forker): Ms reap their own children (SIGCHLD ignored; orphans go to
    the agent, the subreaper); Ctrl-C is the coordinator's to handle; the inherited descriptors but
    `keep` are closed."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # the forker's SIGCHLD pipe is not ours
    _close_inherited_fds(keep)


def newosproc(cfg: HostConfig, spec: dict, sleep=time.sleep, clone=None) -> tuple[int, int, str, str]:
    """Go's newosproc (with newer Go's retryOnEAGAIN when spec["retry"]): returns (pid, tries, "", ""),
    or (-errno, tries, cause, limit) when the fork failed. cause: "fault" (a fork-fail fault makes the
    first spec["fail"] tries fail with EAGAIN, as a loaded host's clone does, golang/go#49438),
    "clone" (the real fork failed: EAGAIN at a task limit, ENOMEM), or "machine" (the machine-limit
    guard refused it; `limit` is its line naming the limit). Go 1.16 gives up at once. `clone(cfg,
    spec) -> pid or -errno` is the clone itself: fork_m, or the forker's (a spare M first)."""
    tries = 0
    while True:
        if tries < spec["fail"]:
            err, cause, limit = EAGAIN, "fault", ""
        else:
            refused = machine_limits.check(cfg.fd_pids())
            if refused is not None:
                return -refused[0], tries + 1, "machine", refused[1]
            pid = (clone or fork_m)(cfg, spec)
            if pid > 0:
                return pid, tries, "", ""
            err, cause, limit = -pid, "clone", ""
        tries += 1
        if err != EAGAIN or not spec["retry"] or tries >= RETRY_ON_EAGAIN_TRIES:
            return -err, tries, cause, limit
        sleep(tries * 1000 * cfg.timescale / 1e6)  # usleep_no_g((tries+1) * 1000), Go time


def fork_m(cfg: HostConfig, spec: dict) -> int:
    """clone: fork this process into the new M described by `spec`. The child never touches this
    process's ZeroMQ context: it makes its own in mstart. Returns the child's pid, or -errno when
    the fork failed (EAGAIN at pid_max, threads-max, a pids cgroup or RLIMIT_NPROC; ENOMEM)."""
    gc.freeze()  # the child's collections must not dirty the inherited heap (FACTS.md)
    try:
        pid = fork()  # from the forker: without Python's at-fork work (protocol/bare_fork.py)
    except OSError as e:
        return -(e.errno or EAGAIN)
    if pid == 0:
        run_child(f"M{spec['m']}", lambda: (child_after_fork(), start_m(cfg, spec)))
    return pid


def start_m(cfg: HostConfig, spec: dict, pre: tuple | None = None) -> None:
    """The new M's side of newosproc, in the child: mstart (after a slow-fork fault's delay)."""
    if spec["delay_us"]:
        time.sleep(spec["delay_us"] / 1e6)  # slow-fork fault: between fork and mstart
    WorkerM(cfg, spec, pre).mstart()


def run_child(name: str, main) -> None:
    """The whole life of a forked child: main(), then os._exit with its code; it never returns into
    its parent's code."""
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:  # noqa: BLE001 - a dying M must not fall back into its parent's code
        log.exception("%s died", name)
        code = 70
    finally:
        os._exit(code)  # each log record was written (and flushed) as it came: nothing is buffered


def _close_inherited_fds(keep: set[int] = frozenset()) -> None:
    """An M inherits every descriptor of its forker: an M's guard pidfd and ZeroMQ sockets (whose
    connections would then outlive it), the forker's socket to its agent. Keep stdin/out/err, the
    log file and `keep`; the g0 arena is a mapping, not a descriptor."""
    keep = {0, 1, 2} | _log_fds() | set(keep)
    low = 3
    for fd in sorted(keep | {1 << 20}):
        if fd >= low:
            os.closerange(low, min(fd, _max_fd()))
            low = fd + 1


def _log_fds() -> set[int]:
    """The descriptors this process's log records are written to (the run's gmpsim.log)."""
    out = set()
    for h in logging.getLogger().handlers:
        stream = getattr(h, "stream", None)
        try:
            out.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    return out


def _max_fd() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class WorkerM:
    """One M process (Go's m, seen from its own thread)."""

    def __init__(self, cfg: HostConfig, spec: dict, pre: tuple | None = None):
        self.cfg = cfg
        self.pre = pre  # (context, connected DEALER): made by a spare before it became this M
        self.id = spec["m"]
        self.epoch = spec["epoch"]
        self.spec = spec
        self.seq = 0
        self.park_key = 0  # m.park's note key: a WAKE kept until the sleep (lock_futex.go semantics)
        self.last_wake_seq = -1
        self.wake_sent = 0.0
        self.woke_at = 0.0
        self.preempt_g = -1  # gp.preempt for the goroutine this M runs
        self.g0 = G0Stack(cfg.arena, spec["slot"])
        self.guard_fd = -1
        self.ctx = None
        self.sock = None
        self.title = titles.m_title(self.id)  # in ps and top (the forker's rehearsal keeps its own)

    # --- wire -------------------------------------------------------------------------------------

    def send(self, t: str, **fields) -> bytes:
        self.seq += 1
        frame = encode(t, self.seq, self.epoch, m=self.id, **fields)
        self.sock.send(frame)
        return frame

    def recv(self, timeout_ms: float | None) -> dict | None:
        """One message, or None on timeout. A blocking wait polls the socket and the guardian's
        pidfd together, so a blocked M takes no CPU until a message comes or the coordinator is gone
        (an M outlives no run). It used to wake every 500 ms to look: with thousands of Ms blocked,
        that was a CPU's worth of wake-ups taken from the Ms being made."""
        if timeout_ms is None:
            while True:
                if any(fd == self.guard_fd for fd, _ in zmq.zmq_poll(self.blocked, -1)):
                    raise SystemExit(3)  # the coordinator is gone: nobody will ever wake or need us
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                    break
                except zmq.Again:
                    continue
        else:
            if not zmq.zmq_poll(self.readable, int(timeout_ms)):  # whole ms, as zmq.Poller rounds
                self.check_guardian()
                return None
            frame = self.sock.recv()
        try:
            msg = decode(frame)
        except ProtocolError as e:
            log.warning("M%d: dropped a bad frame: %s", self.id, e)
            return None
        return self._note(msg)

    def check_guardian(self, timeout_ms: float = 0) -> None:
        """SystemExit(3) if the coordinator is gone, looking for up to timeout_ms (its pidfd turns
        readable when it ends; poll, not select: the pidfd may be numbered above FD_SETSIZE)."""
        if self.guard_poll.poll(timeout_ms):
            raise SystemExit(3)  # the coordinator is gone: nobody will ever wake or need us

    def _note(self, msg: dict) -> dict | None:
        """Messages that may come at any time: wake (kept until the sleep), preempt, shutdown."""
        t = msg["t"]
        if t == "wake":
            if msg["seq"] <= self.last_wake_seq:
                return None  # a resent WAKE we already have
            if self.park_key != 0:
                raise Throw("notewakeup - double wakeup", prints=(f"notewakeup - double wakeup ({self.park_key})",))
            self.last_wake_seq = msg["seq"]
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
        """Send a request and wait for the core's answer to it (execute, cont, park or exit),
        resending it while none comes."""
        frame = self.send(t, **fields)
        seq = self.seq
        wait_ms = RETRY_FIRST_MS
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            msg = self.recv(max(0.0, (deadline - time.monotonic()) * 1000))
            if msg is not None and msg["t"] in REPLIES and msg["re"] == seq:
                return msg
            if time.monotonic() >= deadline:
                self.sock.send(frame)  # same seq: the coordinator answers a duplicate from its cache
                wait_ms = min(wait_ms * 2, RETRY_MAX_MS)
                deadline = time.monotonic() + wait_ms / 1000

    # --- Go's M -----------------------------------------------------------------------------------

    def mstart(self) -> None:
        """Go's mstart: set up the thread (its own ZeroMQ context and socket), say hello (mstart1),
        then loop in schedule. Never returns but by SystemExit."""
        started = time.monotonic()
        if self.pre is not None:  # a spare's: connected already, as the spare (its hello names this M)
            self.ctx, self.sock = self.pre
        else:
            with self.g0.systemstack(CLONE_FRAME):  # ZeroMQ's two threads start here: the clone's end
                self.ctx = zmq.Context()
                self.sock = dealer_connect(dealer_unconnected(self.ctx, self.cfg.curve), self.cfg.endpoint,
                                           m_identity(self.id, self.epoch))
        setproctitle(self.title)  # ps and top; while ZeroMQ's I/O thread connects
        self.guard_fd = os.pidfd_open(self.cfg.guardian_pid)
        self.guard_poll = select.poll()
        self.guard_poll.register(self.guard_fd, select.POLLIN)
        # zmq_poll's items, made once (Socket.poll makes a zmq.Poller on each call: 2.5 µs against 1.4)
        self.readable = [(self.sock, zmq.POLLIN)]  # a wait for a message
        self.blocked = [(self.sock, zmq.POLLIN), (self.guard_fd, zmq.POLLIN)]  # ... or the guardian's end
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
                # Go's g0 stack while a goroutine runs: mstart → schedule → execute (→ gogo).
                with self.g0.systemstack("runtime.schedule"), self.g0.systemstack("runtime.execute", reply["g"]):
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
                pid, tries, cause, limit = newosproc(self.cfg, spec)
            if pid < 0:
                self.send("forkfail", child=spec["m"], cepoch=spec["epoch"], errno=-pid, tries=tries,
                          cause=cause, limit=limit)
            else:
                self.send("forked", child=spec["m"], cepoch=spec["epoch"], pid=pid)

    def mPark(self) -> dict:
        """Go's mPark: notesleep(&m.park); noteclear; then tell the core (acquirep(nextp) is its)."""
        parked = time.monotonic()
        with self.g0.systemstack("runtime.mPark"):
            while self.park_key == 0:  # notesleep
                msg = self.recv(None)
                if msg is not None and msg["t"] not in REPLIES:
                    log.warning("M%d: unexpected %s while parked", self.id, msg["t"])
            self.park_key = 0  # noteclear
            # slept 0: the wake came before the sleep (it is kept, Go's note is already set)
            return self.call("woken", lat=self.woke_at - self.wake_sent, slept=max(0.0, self.woke_at - parked))

    def mexit(self) -> None:
        """Go's mexit → exitThread: the process ends; the agent sees it go and reports it."""
        self.sock.close(0)
        self.ctx.term()
        raise SystemExit(0)


__all__ = ["HostConfig", "WorkerM", "fork_m", "newosproc", "child_after_fork"]
