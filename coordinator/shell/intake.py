"""Frames coming in: decoded, checked against the sender's kind (an M, a host agent), deduplicated,
and routed to what handles them (the core, the hosts, delivery's bookkeeping)."""
from __future__ import annotations

import signal
import time
from errno import EAGAIN

import zmq

from coordinator.observe.report import FORKFAIL_CAUSES
from protocol.codec import ProtocolError, decode
from protocol.messages import AGENT_SENDS, CLONE_FRAME, M_SENDS
from protocol.transport import parse_identity


class Intake:
    """Takes each frame the loop reads. `loop` is the Coordinator: its sched, event(), done, wire,
    hosts, delivery, actuator, rec, clock and injector."""

    def __init__(self, loop):
        self.loop = loop
        self.told_to_go: dict[bytes, float] = {}  # identity -> when it may be told to go again

    def drain(self) -> None:
        """Every message waiting on the socket, one event each."""
        wire = self.loop.wire
        while not self.loop.done and wire.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            ident, frame = wire.recv()
            if frame is not None:
                self.on_frame(ident, frame)

    def on_frame(self, ident: bytes, frame: bytes) -> None:
        c = self.loop
        try:
            who = parse_identity(ident)
            msg = decode(frame)
        except ProtocolError as e:
            c.wire.bad_frame(ident, e)
            return
        t = msg["t"]
        if who[0] == "spare":  # a spare M's connection, made before it knew which M it would be
            who = self.adopted(ident, who, msg)
            if who is None:
                return
        if who[0] == "m":
            if t not in M_SENDS or msg["m"] != who[1] or msg["epoch"] != who[2]:
                c.wire.bad_frame(ident, f"{t} does not fit sender m{who[1]}.{who[2]}")
                return
        elif t not in AGENT_SENDS or (t == "agent_hello" and not c.hosts.genuine_agent(msg, ident)):
            c.wire.bad_frame(ident, f"{t} is not an agent's message")
            return
        msg["_from"] = ident
        msg["_who"] = who
        if c.inject.plan.has_message_faults:
            for m in c.inject.inbound(msg):
                self.handle_msg(m)
        else:
            self.handle_msg(msg)

    def adopted(self, ident: bytes, who: tuple, msg: dict) -> tuple | None:
        """The M a spare's connection (worker/spare.py) carries, as ("m", m, epoch): named by its
        hello, which binds the connection to an M forked on the spare's host and not yet heard
        (not to one already started: a peer must not take over a live M), and known by it from
        then on. None, a bad frame, for anything else."""
        c = self.loop
        bound = c.wire.spare_bound.get(ident)
        if bound is not None:
            return ("m", *bound)
        if msg["t"] != "hello":
            c.wire.bad_frame(ident, f"{msg['t']} from a spare M before its hello")
            return None
        mid, epoch = msg["m"], msg["epoch"]
        mp = c.sched.allm.get(mid)
        if mp is not None and mp.epoch == epoch and not mp.virtual:
            if mp.host != who[1] or mp.started:
                c.wire.bad_frame(ident, f"hello for M{mid} from a spare on {who[1]}: "
                                        + ("that M has started" if mp.started else f"it is an M of {mp.host}"))
                return None
            c.wire.spare_bound[ident] = (mid, epoch)
        return ("m", mid, epoch)  # a stale or dead incarnation's: refused as any (from_m)

    def handle_msg(self, msg: dict) -> None:
        c = self.loop
        if c.done:
            return
        ident = msg["_from"]
        who = msg["_who"]
        peer = who if who[0] == "m" else ("agent", who[1])
        if who[0] == "m" and c.wire.m_ident.get(who[1]) == ident:
            c.act.preempt_sent.pop(who[1], None)  # any sign of life, duplicates too (not a stale/forged epoch's)
        if not c.delivery.fresh(peer, msg["seq"]):
            if who[0] == "m":
                cached = c.delivery.cached_reply(who[1], msg["seq"])
                if cached is not None and cached[0] == ident:
                    c.wire.raw_send(*cached)  # the M lost our reply: the same answer again
            return
        if who[0] == "m":
            self.from_m(msg, who[1], ident)
            return
        host = who[1].split("/")[0]
        hosts = c.hosts
        if hosts.agent_ident.get(host) == ident:
            self.from_agent(msg, host)
        elif msg["t"] == "agent_hello" and msg["host"] == host:  # not a dead predecessor's message
            if hosts.agent_up.get(host) and hosts.control is None:
                # Across hosts: the host's agent is alive and heard; another peer claiming the host
                # (forged, or a second agent with the same --name) is refused until that agent
                # is cut off (silent for HEARTBEAT_TIMEOUT_S); a restarted agent then rejoins.
                c.rec.refused += 1
                c.wire.bad_frame(ident, f"agent_hello for host {host}, whose agent is up as "
                                        f"{hosts.agent_ident[host]!r}")
                return
            self.from_agent(msg, host)

    def from_m(self, msg: dict, mid: int, ident: bytes) -> None:
        c = self.loop
        t = msg["t"]
        mp = c.sched.allm.get(mid)
        if mp is None or mp.virtual or mp.epoch != msg["epoch"]:
            # A dead, fenced or stale incarnation: refuse it and tell it to go.
            c.rec.refused += 1
            now = time.monotonic()
            if self.told_to_go.get(ident, 0.0) <= now:  # at most once a second per identity: a peer
                if len(self.told_to_go) > 10_000:        # that never reads must not fill our queue
                    self.told_to_go.clear()
                self.told_to_go[ident] = now + 1.0
                c.wire.send_direct(ident, "shutdown")
            return
        c.wire.m_ident[mid] = ident
        c.act.preempt_sent.pop(mid, None)
        if t == "forked":
            self.forked(msg)
            return
        if t == "forkfail":
            self.forkfail(msg)
            return
        if t == "heartbeat":
            return
        if t == "hello":
            c.delivery.done(("fork", mid, msg["epoch"]))
            c.delivery.done(("hello", mid, msg["epoch"]))
            decided = c.rec.fork_decided.pop(mid, None)
            if decided is not None:
                now = time.monotonic()
                c.rec.newm_to_mstart.record(mp.host, now - decided)
                if decided <= msg["started"] <= now:  # its clock is this machine's (not another's)
                    c.rec.newm_to_child.record(mp.host, msg["started"] - decided)
                    c.rec.child_to_hello.record(mp.host, now - msg["started"])
            c.rec.pids[mid] = msg["pid"]
            c.rec.thread(mid).update(pid=msg["pid"], taint=msg["taint"], started_ms=c.clock.go_ms())
            if mp.pid == 0:
                c.act.watch(mp, msg["pid"])
        elif t == "woken":
            c.delivery.done(("wake", mid))
            c.rec.notewakeup_to_running.record(mp.host, msg["lat"])
            c.rec.notesleep_to_wake.record(mp.host, msg["slept"])
        c.event(msg, mid, msg["seq"])

    def from_agent(self, msg: dict, host: str) -> None:
        c = self.loop
        t = msg["t"]
        c.hosts.heard(host, t)
        if t == "heartbeat":
            return
        if t == "bye":
            if msg["host"] == host:  # an agent speaks for its own host only
                c.hosts.bye(host, msg)
            return
        if t == "agent_hello":
            c.hosts.agent_rejoined(msg)
        elif t == "forked":
            self.forked(msg)
        elif t == "forkfail":
            self.forkfail(msg)
        elif t == "ack":
            key = c.act.watch_seq.pop(msg["re"], None)
            if key is not None:
                c.delivery.done(key)
        elif t == "mexited":
            c.wire.send_direct(c.hosts.agent_ident[host], "ack", re=msg["seq"])
            if msg["m"] == -1:
                return  # the agent itself is done (shutdown)
            c.rec.thread(msg["m"]).update(gone_ms=c.clock.go_ms(), status=msg["status"])
            self.postmortem(msg)
            unborn = self.died_in_its_clone(msg)
            if unborn is not None:
                self.forkfail({"child": unborn.id, "cepoch": unborn.epoch, "errno": EAGAIN, "cause": "clone",
                               "limit": ""})
                return
            c.event(msg, None)

    def forked(self, msg: dict) -> None:
        """newosproc done: the pid of the new M. Its host agent watches every M of the host."""
        c = self.loop
        mid, pid = msg["child"], msg["pid"]
        c.delivery.done(("fork", mid, msg["cepoch"]))
        mp = c.sched.allm.get(mid)
        if mp is None or mp.epoch != msg["cepoch"]:
            return
        c.rec.pids[mid] = pid
        if not mp.started:  # its hello must follow: a peer holding its identity must not stall us silently
            grace = c.act.hello_grace.pop((mid, mp.epoch), 0.0) + c.delivery.lost_after_s
            c.delivery.expect(("hello", mid, mp.epoch), b"", b"", time.monotonic(), mid, grace)
        if mp.pid == 0:
            mp.pid = pid
            if msg["m"] != -1:
                c.act.watch(mp, pid)

    def forkfail(self, msg: dict) -> None:
        """newosproc failed (from an M or the agent): the core says what Go does (throw)."""
        self.loop.delivery.done(("fork", msg["child"], msg["cepoch"]))
        # A peer names the cause; only the report's three become counters (ms.newosproc_failed).
        cause = msg["cause"] if msg["cause"] in FORKFAIL_CAUSES else "fault"
        self.loop.event({"t": "forkfail", "m": msg["child"], "child": msg["child"], "cepoch": msg["cepoch"],
                         "errno": msg["errno"], "cause": cause, "limit": msg["limit"]}, None)

    def died_in_its_clone(self, msg: dict):
        """The M whose process died of SIGABRT in its clone (protocol.messages.CLONE_FRAME), before
        its mstart: its ZeroMQ threads could not be made (EAGAIN at a task limit); else None."""
        mp = self.loop.sched.allm.get(msg["m"])
        frames = msg["frames"]
        if (mp is not None and not mp.started and not mp.virtual and msg["status"] == -signal.SIGABRT
                and frames and frames[-1]["live"] and frames[-1]["fn"] == CLONE_FRAME):
            return mp
        return None

    def postmortem(self, msg: dict) -> None:
        """The crash dump of a thread: its last g0 frames, read from the arena by its agent."""
        c = self.loop
        mid = msg["m"]
        mp = c.sched.allm.get(mid)
        if mp is None or mp.exited:
            return  # an M that exited as Go's do (mexit), or one already recovered
        c.rec.deaths.append({"m": mid, "pid": msg["pid"], "status": msg["status"],
                             "time_ms": c.clock.go_ms(), "frames": msg["frames"]})
