"""Running a goroutine's program on an M (the ops of protocol/ops.py).

`execute` runs ops from the goroutine's saved position until one needs the scheduler and the core
answers something other than "go on" (cont): then that answer goes back to the M's schedule loop.
Durations are Go µs; on the wall they last `timescale` times longer. A compute op holds its P by
sleeping in short slices, answering preemption between them (it does not burn the shared CPUs).
"""
from __future__ import annotations

import os
import time

from protocol.messages import position
from protocol.ops import RUNTIME_OPS, advance

# A locked thread may change its own state (Go programs unshare namespaces or chdir after
# LockOSThread). gmpsim's lock op marks its process so in this variable; a child forked from that
# process inherits the mark, one forked by the pristine template does not (TestLockOSThreadAvoidsStatePropagation).
TAINT_ENV = "GMPSIM_TAINT"


def taint_process(mid: int) -> None:
    """What a locked goroutine does to its thread: this process's state now differs from the template's."""
    mark = f"M{mid}"
    marks = os.environ.get(TAINT_ENV, "").split()
    if mark not in marks:
        os.environ[TAINT_ENV] = " ".join(marks + [mark])


class OpRunner:
    def __init__(self, m):
        self.m = m
        self.heard_at = time.monotonic()  # when messages were last read while computing

    def execute(self, g: int, prog: str, pos: dict) -> dict:
        """Go's execute → the goroutine runs until it blocks, yields or exits."""
        m = self.m
        code = m.cfg.programs[prog]
        pc, loops = advance(code, pos["pc"], list(pos["loops"]))
        left = pos["left"]
        if m.preempt_g != g:
            m.preempt_g = -1
        while True:
            if pc >= len(code):  # the goroutine's function returned: goexit1 → goexit0
                with m.g0.systemstack("runtime.goexit0", g):
                    return m.call("goexit", g=g, pos=position(pc, loops, 0))
            op = code[pc]
            name = op[0]
            npc, nloops = advance(code, pc + 1, loops)
            after = position(npc, nloops, 0)
            if name == "run":
                if time.monotonic() - self.heard_at >= m.cfg.slice_us / 1e6:
                    self.listen(g, 0)  # a run of ops too short to listen themselves
                remaining = self.compute(g, left or op[1])
                if remaining > 0:  # preempted: gopreempt_m → goschedImpl
                    with m.g0.systemstack("runtime.gopreempt_m", g):
                        return m.call("gosched", g=g, pos=position(pc, loops, remaining))
                reply = None
            elif name in ("syscall", "cgo"):
                reply = self.syscall(g, op[1], after, cgo=name == "cgo")
            elif name == "syscallblock":
                with m.g0.systemstack("runtime.entersyscallblock", g):
                    reply = m.call("entersyscallblock", g=g, pos=after)
                m.newosprocs(reply.get("forks", ()))
                self.block(op[1], g)
                with m.g0.systemstack("runtime.exitsyscall", g):
                    reply = m.call("exitsyscall", g=g)
            elif name == "go":
                with m.g0.systemstack("runtime.newproc", g):
                    reply = m.call("newproc", g=g, pos=after, prog=op[1], n=op[2])
            elif name == "lock":
                reply = m.call("lockosthread", g=g, pos=after)
                taint_process(m.id)
            elif name == "unlock":
                reply = m.call("unlockosthread", g=g, pos=after)
            elif name in ("sleep", "park", "wait"):
                with m.g0.systemstack("runtime.park_m", g):
                    reply = m.call("gopark", g=g, pos=after, reason=name, us=op[1] if name == "sleep" else 0)
            elif name in RUNTIME_OPS:  # the runtime's own programs (runtime.main, bgsweep...)
                with m.g0.systemstack("runtime." + name, g):
                    reply = m.call("runtime", g=g, pos=after, op=name, arg=op[1] if len(op) > 1 else "")
            elif name == "exit":  # runtime.Goexit
                with m.g0.systemstack("runtime.goexit0", g):
                    return m.call("goexit", g=g, pos=position(pc, loops, 0))
            else:
                raise ValueError(f"unknown op {name!r}")
            left = 0
            pc, loops = npc, nloops
            if reply is not None:
                if reply["t"] != "cont":
                    return reply
                m.newosprocs(reply.get("forks", ()))

    def syscall(self, g: int, us: int, after: dict, cgo: bool) -> dict:
        """entersyscall (cgocall sets incgo), a real blocking call, exitsyscall."""
        m = self.m
        with m.g0.systemstack("runtime.entersyscall", g):
            reply = m.call("entersyscall", g=g, pos=after, cgo=cgo)
        if reply["t"] != "cont":
            return reply
        self.block(us, g)
        with m.g0.systemstack("runtime.exitsyscall", g):
            return m.call("exitsyscall", g=g)

    def block(self, us: int, g: int = -1) -> None:
        """The system call itself: a real blocking sleep (clock_nanosleep) for us Go µs, in pieces of
        at most half a second so that a run whose coordinator died does not keep this M."""
        end = time.monotonic() + us * self.m.cfg.timescale / 1e6
        # Not a g0 frame in Go (the call runs on the goroutine's stack): a marker for the post-mortem.
        with self.m.g0.systemstack("syscall.Syscall", g):
            self._sleep_until(end)

    def _sleep_until(self, end: float) -> None:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))
            self.m.check_guardian()

    def compute(self, g: int, us: int) -> int:
        """Hold the P for us Go µs, checking for preemption between slices. Returns the Go µs left
        when preempted, else 0."""
        m = self.m
        wall = us * m.cfg.timescale / 1e6
        start = time.monotonic()
        end = start + wall
        slice_s = m.cfg.slice_us / 1e6
        while True:
            now = time.monotonic()
            if m.preempt_g == g:  # before the end check: a preemption heard is always answered
                m.preempt_g = -1
                done_us = (now - start) * 1e6 / m.cfg.timescale
                return max(1, int(us - done_us))
            if now >= end:
                return 0
            wait = min(end - now, slice_s)
            if wait < 0.001:  # zmq_poll counts whole ms: sleep the rest instead of spinning
                self.listen(g, 0)  # but first hear what came (a preemption), or short ops never do
                time.sleep(wait)
                continue
            self.listen(g, wait * 1000)

    def listen(self, g: int, timeout_ms: float) -> None:
        """Hear one message while computing (a preemption sets m.preempt_g); late duplicate replies
        are ignored. Short ops call it with 0: a goroutine making progress in ops shorter than a
        poll's 1 ms must still answer sysmon, or it is declared lost and restarted from the top."""
        m = self.m
        self.heard_at = time.monotonic()
        msg = m.recv(timeout_ms)
        if msg is not None and msg["t"] not in ("execute", "cont", "park", "exit"):
            raise RuntimeError(f"M{m.id}: unexpected {msg['t']} while running goroutine {g}")
