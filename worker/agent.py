"""The host agent: the host's template thread, its g0 stack arena, and the reaper of its Ms.

A pristine process that never runs goroutines. It maps the arena before forking anything (Ms inherit
the mapping); once welcomed it starts its forker (forker.py), a quiet child that forks the Ms that no
M's process forks (m0, sysmon's, the template's) and passes their exit statuses on; it watches every M
of its host with a pidfd and, as the child subreaper, reaps the orphans (hostms.py keeps those Ms).
Each exit it reports to the coordinator with the dead M's last g0 frames read from the arena (that
report is exitThread clearing m.freeWait, and the post-mortem). At shutdown it ends its Ms and
unlinks the arena. A restarted agent (`--adopt`) maps the arena its predecessor left and watches the
Ms it is told about. Run as `python -m worker.agent --endpoint E --host H --run-id R --guardian-pid P`.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import signal
import sys
import time

import zmq
from setproctitle import setproctitle

from protocol import titles
from protocol.codec import ProtocolError, decode, encode
from protocol.logformat import LOG_FORMAT
from protocol.owner import alive, clean, new_run_id
from protocol.timing import HEARTBEAT_S, HEARTBEAT_TIMEOUT_S, RESEND_S
from protocol.transport import agent_identity, curve_client_keys, dealer, one_malloc_arena

from .forker import Forker
from .g0 import G0_STACK_SIZE, Arena, arena_name, read_frames
from .hostms import HostMs
from .m import HostConfig
from .reaper import set_child_subreaper, set_pdeathsig

log = logging.getLogger("gmpsim.agent")

POLL_S = 0.1  # reap orphans and resend unacknowledged reports this often
FORKER_READY_WAIT_S = 10.0  # for a spawned forker's interpreter to be up before the agent's hello
FORKER_STARTS = 3  # forkers in a row that die before carrying out an order: the host cannot fork
EXIT_STATUS_WAIT_S = 0.2  # for the forker's report of an M it forked, once that M is gone
HELLO_AGAIN_S = 1.0  # until welcomed
GIVE_UP_S = 60.0  # a remote agent with no coordinator this long exits: 2 if it never got one, else 3
NAME_ENV = "GMPSIM_AGENT_NAME"


class Agent:
    def __init__(self, endpoint: str, host: str, run_id: str, slots: int, slot_size: int,
                 guardian_pid: int, adopt: bool, curve=None, remote: bool = False,
                 give_up_s: float = GIVE_UP_S):
        self.endpoint, self.host, self.run_id = endpoint, host, run_id
        self.guardian_pid = guardian_pid
        self.curve = curve  # CURVE client keys (TCP), shared by the Ms this agent forks
        self.remote = remote  # across hosts: heartbeats; a long partition means rejoining afresh
        self.last_heard = time.monotonic()
        self.next_beat = 0.0
        self.welcomed = False
        self.next_guard_check = 0.0
        self.ever_welcomed = False  # never: the coordinator is unreachable (bad input, exit 2)
        self.give_up_s = give_up_s
        name = arena_name(run_id, host)
        self.arena = (Arena.attach(name, readonly=False, slot_size=slot_size) if adopt
                      else Arena.create(name, slots, slot_size))
        self.poller = zmq.Poller()  # the socket, the forker's, and HostMs' epoll of the Ms' pidfds
        self.ms = HostMs(self.poller)
        self.forked: dict[tuple[int, int], tuple[str, dict]] = {}  # (m, epoch) -> the answer sent
        self.ordered: dict[tuple[int, int], dict] = {}  # (m, epoch) -> the spec the forker is forking
        self.forker: Forker | None = None  # configured at the welcome (it is given the host's config)
        self.next_forker: Forker | None = Forker()  # spawned now: its imports while we are welcomed
        self.forker_deaths = 0  # forkers in a row that died before carrying out an order
        self.unacked: dict[int, list] = {}  # seq -> [frame, resend at]
        self.seq = 0
        self.cfg: HostConfig | None = None
        self.ctx = zmq.Context()
        # Its own identity per incarnation: a dead predecessor's connection may linger (the Ms it
        # forked inherited the socket), and the coordinator's ROUTER never hands an identity over.
        self.sock = dealer(self.ctx, endpoint, agent_identity(f"{host}/{os.getpid()}"), curve=curve)

    def send(self, t: str, reliable: bool = False, **fields) -> None:
        self.seq += 1
        # The envelope's epoch is this agent's incarnation (its pid): a restarted agent's seqs start
        # again at 1 and must not look like duplicates of its predecessor's.
        frame = encode(t, self.seq, os.getpid(), **fields)
        if reliable:
            self.unacked[self.seq] = [frame, time.monotonic() + RESEND_S]
        self.put(frame)

    def put(self, frame: bytes) -> None:
        """Never block on a send: a DEALER with no pipe to the coordinator (e.g. after the
        coordinator's ZAP handler refused our key) blocks send forever, which would hang this
        agent (no give-up, no SIGTERM shutdown). Such a frame is dropped; reliable ones are resent."""
        try:
            self.sock.send(frame, zmq.DONTWAIT)
        except zmq.Again:
            pass

    def hello(self) -> None:
        """agent_hello, once the next forker is up (its interpreter's start must not come after the
        welcome, when Go time runs and m0 is to be forked)."""
        if self.next_forker is not None:
            self.next_forker.wait_ready(FORKER_READY_WAIT_S)
        self.send("agent_hello", host=self.host, pid=os.getpid(), arena=self.arena.name,
                  slot_size=self.arena.slot_size, slots=self.arena.slots)
        self.next_hello = time.monotonic() + HELLO_AGAIN_S

    def run(self) -> None:
        self.hello()
        poller = self.poller
        poller.register(self.sock, zmq.POLLIN)
        while True:
            events = dict(poller.poll(POLL_S * 1000))
            if self.forker is not None and events.pop(self.forker.fileno(), None):
                self.from_forker()
            if self.sock in events:
                while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    if self.handle(self.sock.recv()) == "shutdown":
                        return
            for mid, pid in self.ms.exited():
                self.report_exit(mid, pid)
            self.resend()
            if self.beat() == "gone":
                if not self.ever_welcomed:
                    print(f"gmpsim agent: no coordinator answered at {self.endpoint} within "
                          f"{self.give_up_s:g}s", file=sys.stderr)
                    raise SystemExit(2)
                raise SystemExit(3)

    def beat(self) -> str | None:
        """Heartbeats, across hosts only (locally the coordinator's death is our parent's, PDEATHSIG).
        Not yet welcomed: say hello again (the coordinator may not be listening yet). Cut off for
        longer than the timeout: our Ms have been fenced; end them and rejoin as a fresh host."""
        now = time.monotonic()
        if not self.remote and now >= self.next_guard_check:
            # PDEATHSIG misses a coordinator that died before the prctl: look for ourselves too.
            self.next_guard_check = now + 0.5
            if not alive(self.guardian_pid):
                raise SystemExit(0)
        if not self.welcomed:
            if now >= self.next_hello:
                self.hello()
            if self.remote and now - self.last_heard > self.give_up_s:
                log.error("agent %s: no coordinator for %.0fs; giving up", self.host, self.give_up_s)
                return "gone"
            return None
        if not self.remote:
            return None
        if now >= self.next_beat:
            self.send("heartbeat", m=-1)
            self.next_beat = now + HEARTBEAT_S
        if now - self.last_heard > HEARTBEAT_TIMEOUT_S:
            log.warning("agent %s: cut off from the coordinator for %.1fs: ending my Ms, rejoining",
                        self.host, now - self.last_heard)
            self.reset()
        return None

    def reset(self) -> None:
        """Back to a fresh host: no Ms, every g0 slot free, not welcomed (the next welcome starts
        a forker again)."""
        if self.forker is not None:
            self.stop_forker()
            self.next_forker = self.next_forker or Forker()  # for the next welcome
        self.ms.kill_all()
        self.ms.forget_all(self.arena)
        self.forked.clear()
        self.ordered.clear()
        self.unacked.clear()
        self.welcomed = False
        self.last_heard = time.monotonic()
        self.hello()

    def resend(self) -> None:
        now = time.monotonic()
        for entry in self.unacked.values():
            if entry[1] <= now:
                self.put(entry[0])
                entry[1] = now + RESEND_S

    def report_exit(self, mid: int, pid: int) -> None:
        """An M's process is gone: report it, with its last g0 frames (the crash dump of the thread)."""
        deadline = time.monotonic() + EXIT_STATUS_WAIT_S  # its parent, the forker, has its status
        while (self.forker is not None and pid in self.forker.children and pid not in self.ms.exits
               and (left := deadline - time.monotonic()) > 0):
            self.from_forker(timeout=left)
        status, slot = self.ms.gone(mid, pid)
        frames = read_frames(self.arena, slot) if slot is not None else []
        self.send("mexited", reliable=True, m=mid, pid=pid, status=status, frames=frames[:256])

    def handle(self, frame: bytes) -> str | None:
        try:
            msg = decode(frame)
        except ProtocolError as e:
            log.warning("agent %s: dropped a bad frame: %s", self.host, e)
            return None
        t = msg["t"]
        self.last_heard = time.monotonic()
        if t == "heartbeat":
            return None
        if t == "welcome":
            self.cfg = HostConfig(endpoint=self.endpoint, host=self.host, guardian_pid=self.guardian_pid,
                                  arena=self.arena, programs=msg["programs"],
                                  timescale=msg["timescale"], curve=self.curve, agent_pid=os.getpid(),
                                  **msg["config"])
            self.welcomed = self.ever_welcomed = True
            gc.freeze()
            self.start_forker()
        elif t == "newosproc":  # newm1 from the template thread (or for sysmon's newm)
            self.on_newosproc(msg["fork"])
        elif t == "watch":
            self.ms.watch_m(msg["m"], msg["pid"], msg["slot"])
            self.send("ack", re=msg["seq"])
        elif t == "signal":
            self.ms.signal(msg["m"], msg["pid"], msg["sig"])
            self.send("ack", re=msg["seq"])  # carried out (or moot): the coordinator stops resending
        elif t == "stackfree":
            if msg["m"] in self.ms.pids:  # freeWait must have been 0: the owner's process is gone
                log.error("agent %s: stackfree of slot %d while M%d (pid %d) still runs",
                          self.host, msg["slot"], msg["m"], self.ms.pids[msg["m"]])
            self.arena.stackfree(msg["slot"])
        elif t == "ack":
            self.unacked.pop(msg["re"], None)
        elif t == "shutdown":
            return "shutdown"
        else:
            log.warning("agent %s: unexpected %s", self.host, t)
        return None

    def start_forker(self) -> None:
        """Start the forker with the host's config (welcomed: it is set), and give it the orders it had
        not carried out if it is a new one."""
        if self.forker is not None:
            self.stop_forker()
        self.forker, self.next_forker = self.next_forker or Forker(), None
        self.forker.configure(self.cfg)
        self.poller.register(self.forker.fileno(), zmq.POLLIN)
        for spec in self.ordered.values():
            self.forker.order(spec)

    def stop_forker(self) -> None:
        """The forker ends after the order it is carrying out; its answers are taken in first."""
        self.poller.unregister(self.forker.fileno())
        for msg, fd in self.forker.close():
            self.on_forker(msg, fd)
        self.forker = None

    def from_forker(self, timeout: float = 0.0) -> None:
        """Take in what the forker said (waiting up to `timeout` s for it); a forker that died is
        replaced, and the new one forks what the dead one had not."""
        answers = self.forker.answers(timeout)
        if answers is None:
            self.forker_deaths = 0 if self.forker.answered else self.forker_deaths + 1
            if self.forker_deaths >= FORKER_STARTS:  # what killed them is in their own log records
                log.error("agent %s: %d forkers in a row died before forking an M; the host cannot fork",
                          self.host, self.forker_deaths)
                raise SystemExit(70)
            log.warning("agent %s: its forker (pid %d) died; starting another", self.host, self.forker.pid)
            self.start_forker()
            return
        for msg, fd in answers:
            self.on_forker(msg, fd)

    def on_forker(self, msg: list, pidfd: int | None) -> None:
        if msg[0] == "exited":
            self.ms.exits[msg[1]] = msg[2]
            return
        _, mid, epoch, pid, tries, cause, limit = msg
        spec = self.ordered.pop((mid, epoch), None)
        if spec is None:  # not ordered by this incarnation of the host (a reset came between)
            if pidfd is not None:
                os.close(pidfd)
            return
        if pid < 0:
            self.forked[(mid, epoch)] = ("forkfail", dict(child=mid, cepoch=epoch, errno=-pid, tries=tries,
                                                          cause=cause, limit=limit))
        else:
            self.ms.watch_m(mid, pid, spec["slot"], pidfd)
            self.forked[(mid, epoch)] = ("forked", dict(child=mid, cepoch=epoch, pid=pid))
        t, fields = self.forked[(mid, epoch)]
        self.send(t, m=-1, **fields)

    def on_newosproc(self, spec: dict) -> None:
        """newosproc, by the forker (once per incarnation: a resent order gets the same answer again,
        or none yet while the forker is at it)."""
        key = (spec["m"], spec["epoch"])
        if key in self.forked:
            t, fields = self.forked[key]
            self.send(t, m=-1, **fields)
        elif self.forker is None:
            log.warning("agent %s: newosproc of M%d before the welcome", self.host, spec["m"])
        elif key not in self.ordered:
            self.ordered[key] = spec
            self.forker.order(spec)

    def shutdown(self) -> None:
        """End every M of this host, reap them, unlink the arena, say goodbye."""
        if self.forker is not None:
            self.stop_forker()  # first: no M may come after the kill
        if self.next_forker is not None:
            self.next_forker.close()
        left = self.ms.kill_all()
        if left:
            log.error("agent %s: Ms still alive after SIGKILL: %s", self.host, left)
        self.ms.close()
        self.arena.unlink()
        self.arena.close()
        leaked_shm = int(os.path.exists(os.path.join("/dev/shm", self.arena.name)))
        try:
            # What this host leaves behind (the report's leaks, across hosts), then goodbye.
            self.send("bye", host=self.host, processes=len(left), shm_segments=leaked_shm)
            self.send("mexited", m=-1, pid=os.getpid(), status=0, frames=[])  # the agent itself is done
        except zmq.ZMQError:
            pass
        self.sock.close(linger=200)
        self.ctx.term()
        if not alive(self.guardian_pid):
            # The coordinator died without cleaning up: its private run directory goes too.
            path = self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else ""
            rundir = os.path.dirname(path)
            if os.path.basename(rundir).startswith("gmpsim-"):
                shutil.rmtree(rundir, ignore_errors=True)




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gmpsim agent")
    ap.add_argument("--endpoint", "--connect", dest="endpoint", required=True,
                    help="the coordinator: ipc://... (local) or tcp://HOST:PORT")
    ap.add_argument("--host", "--name", dest="host", default=os.environ.get(NAME_ENV) or "local",
                    help=f"this host's name (default: ${NAME_ENV}, e.g. a pod's name from the downward API, "
                         "else local)")
    ap.add_argument("--run-id", default=None, help="names the arena (default: a fresh id)")
    ap.add_argument("--keys", default=None, help="CURVE keys directory (gmpsim keys DIR)")
    ap.add_argument("--insecure", action="store_true", help="plain TCP, no CURVE")
    ap.add_argument("--slots", type=int, default=12000)
    ap.add_argument("--slot-size", type=int, default=G0_STACK_SIZE)
    ap.add_argument("--guardian-pid", type=int, default=os.getppid(),
                    help="the process whose death ends every M of this host (the coordinator)")
    ap.add_argument("--adopt", action="store_true", help="take over the arena of an agent that died")
    ap.add_argument("--give-up", type=float, default=GIVE_UP_S, help="seconds without a coordinator before exiting")
    args = ap.parse_args(argv)
    remote = args.endpoint.startswith("tcp://")
    curve = None
    if remote and not args.insecure:
        if not args.keys:
            print("gmpsim agent: --keys DIR is required over TCP (CURVE), or say --insecure", file=sys.stderr)
            return 2
        try:
            curve = curve_client_keys(args.keys)
        except (OSError, ValueError) as e:
            print(f"gmpsim agent: {e}", file=sys.stderr)
            return 2
    if not logging.getLogger().handlers:  # on its own (not forked by `gmpsim run`): log to stderr
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if remote:
        args.guardian_pid = os.getpid()  # no coordinator process here: our Ms die with us
        # What earlier agents on this host left when they were killed (their owner is dead) goes now.
        for path in clean()["removed"]:
            log.warning("agent %s: removed %s, left by a dead process", args.host, path)
    run_id = args.run_id or new_run_id()  # a remote agent owns its arena
    setproctitle(titles.agent_title(args.host))  # what ps and top show (every M is `gmpsim M<id>`)
    one_malloc_arena()  # before any thread: ZeroMQ's threads here and in every M share one
    set_child_subreaper()
    if not remote:
        set_pdeathsig(signal.SIGTERM)  # the coordinator's death is ours too (then our orderly cleanup)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Once only: PDEATHSIG comes again each time the dying coordinator's next thread (zmq, logging)
    # exits and we are re-parented to it; a second SystemExit would cut the cleanup short (arena left).
    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    try:
        agent = Agent(args.endpoint, args.host, run_id, args.slots, args.slot_size,
                      args.guardian_pid, args.adopt, curve=curve, remote=remote, give_up_s=args.give_up)
    except (FileNotFoundError, ValueError) as e:
        if not args.adopt:
            raise
        # Its predecessor's Ms cannot be watched nor their stacks read: the coordinator ends the run.
        print(f"gmpsim agent: host {args.host}: cannot adopt the arena /dev/shm/{arena_name(run_id, args.host)} "
              f"of the agent that died ({'it is gone' if isinstance(e, FileNotFoundError) else e}); exiting",
              file=sys.stderr, flush=True)
        return 3
    code = 0
    try:
        agent.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs to its end
        agent.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
