"""A load generator for `gmpsim bench`: one process that speaks the real protocol over real ZeroMQ
sockets as a host agent and as every M that agent is asked to fork, with no fork and no waiting
(every op takes no time). It measures the coordinator alone: how many scheduling events a second
its loop carries when nothing else is slow. Not a simulation of Ms: the real ones are worker/.
"""
from __future__ import annotations

import os
import time

import msgpack
import zmq

from protocol.codec import encode, encode_trusted
from protocol.messages import REPLIES
from protocol.stepper import EXITSYSCALL, next_step
from protocol.transport import agent_identity, dealer, m_identity


def decode(frame: bytes) -> dict:
    """The load generator trusts the coordinator's frames: plain msgpack, no field checks (it must
    not be the slow side of the measurement)."""
    return msgpack.unpackb(frame, raw=False)



class FakeM:
    def __init__(self, ctx, endpoint: str, spec: dict, programs: dict):
        self.id, self.epoch = spec["m"], spec["epoch"]
        self.sock = dealer(ctx, endpoint, m_identity(self.id, self.epoch))
        self.programs = programs
        self.seq = 0
        self.g = None  # [goid, code, pc, loops]: where its goroutine goes on
        self.in_syscall = False  # its request was a system call's: the cont is answered by exitsyscall
        self.send("hello", pid=os.getpid(), host="bench", started=time.monotonic(), taint="")

    def send(self, t: str, **f) -> None:
        self.seq += 1
        if t not in ("forked", "forkfail"):  # a request: its reply will name this seq
            self.req = self.seq
        f["m"] = self.id
        self.sock.send(encode_trusted(t, self.seq, self.epoch, f))

    def on(self, msg: dict) -> list[dict]:
        """React to one message; returns fork specs to carry out (the agent 'forks' them)."""
        t = msg["t"]
        if t == "wake":
            self.send("woken", lat=time.monotonic() - msg["sent"], slept=0.0)
            return []
        if t not in REPLIES or msg["re"] != self.req:
            return []
        if t == "execute":
            pos = msg["pos"]
            self.g = [msg["g"], self.programs[msg["prog"]], pos["pc"], pos["loops"]]
            self.step(pos["left"])
        elif t == "cont":
            if self.in_syscall:  # the syscall itself takes no time
                self.in_syscall = False
                self.send(EXITSYSCALL.t, g=self.g[0], **EXITSYSCALL.fields)
            else:
                self.step()
        elif t == "exit":
            self.sock.close(0)
        return msg.get("forks", [])

    def step(self, left: int = 0) -> None:
        """Run ops from the goroutine's position until one needs the scheduler (protocol/stepper.py;
        no op takes time: a run op computes nothing and is never preempted)."""
        g, code, pc, loops = self.g
        while True:
            step = next_step(code, pc, loops, left)
            pc, loops, left = step.next_pc, step.next_loops, 0
            self.g[2:] = [pc, loops]
            if step.request is not None:
                self.in_syscall = step.block_us is not None
                self.send(step.request.t, g=g, **step.request.fields)
                return


def serve(endpoint: str, stop_after_s: float = 120.0) -> None:
    """The fake agent's loop (run in its own process)."""
    ctx = zmq.Context()
    agent = dealer(ctx, endpoint, agent_identity(f"bench/{os.getpid()}"))
    poller = zmq.Poller()
    poller.register(agent, zmq.POLLIN)
    agent.send(encode("agent_hello", 1, os.getpid(), host="bench", pid=os.getpid(), arena="none",
                      slot_size=8192, slots=100_000))
    seq = 1
    ms: dict[zmq.Socket, FakeM] = {}
    programs = {}
    deadline = time.monotonic() + stop_after_s

    def fork(spec):
        m = FakeM(ctx, endpoint, spec, programs)
        ms[m.sock] = m
        poller.register(m.sock, zmq.POLLIN)
    try:
        while time.monotonic() < deadline:
            for sock, _ in poller.poll(1000):
                frame = sock.recv()
                msg = decode(frame)
                if sock is agent:
                    if msg["t"] == "welcome":
                        programs.update(msg["programs"])
                    elif msg["t"] == "newosproc":
                        fork(msg["fork"])
                        seq += 1
                        agent.send(encode("forked", seq, os.getpid(), m=-1, child=msg["fork"]["m"],
                                          cepoch=msg["fork"]["epoch"], pid=os.getpid()))
                    elif msg["t"] == "watch":
                        seq += 1
                        agent.send(encode("ack", seq, os.getpid(), re=msg["seq"]))
                    elif msg["t"] == "shutdown":
                        seq += 1
                        agent.send(encode("bye", seq, os.getpid(), host="bench", processes=0, shm_segments=0))
                        return
                    continue
                m = ms[sock]
                if msg["t"] == "shutdown":
                    continue
                for spec in m.on(msg):
                    fork(spec)
                    m.send("forked", child=spec["m"], cepoch=spec["epoch"], pid=os.getpid())
    finally:
        for sock in list(ms):
            sock.close(0)
        agent.close(0)
        ctx.term()
