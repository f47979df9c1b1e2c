"""Running a goroutine's program on an M (the ops of protocol/ops.py).

`execute` runs ops from the goroutine's saved position (protocol/stepper.py says what each one asks of
the scheduler) until the core answers something other than "go on" (cont): then that answer goes
back to the M's schedule loop.
Durations are Go µs; on the wall they last `timescale` times longer. A compute op holds its P by
sleeping in short slices, answering preemption between them (it does not burn the shared CPUs).
"""
from __future__ import annotations

import os
import time

from protocol.messages import REPLIES
from protocol.stepper import EXITSYSCALL, Request, next_step

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
        """Go's execute → the goroutine runs until it blocks, yields or exits (protocol/stepper.py says
        what each op asks; here real time passes: computing, answering preemption, blocking in calls)."""
        m = self.m
        code = m.cfg.programs[prog]
        pc, loops, left = pos["pc"], pos["loops"], pos["left"]
        if m.preempt_g != g:
            m.preempt_g = -1
        while True:
            step = next_step(code, pc, loops, left)
            if step.request is None:  # a run op: hold the P for its µs
                if time.monotonic() - self.heard_at >= m.cfg.slice_us / 1e6:
                    self.listen(g, 0)  # a run of ops too short to listen themselves
                remaining = self.compute(g, step.run_us)
                if remaining > 0:  # preempted: gopreempt_m → goschedImpl
                    return self.request(g, step.preempted(remaining))
            else:
                reply = self.request(g, step.request)
                if step.request.t == "lockosthread":
                    taint_process(m.id)
                if step.ends or reply["t"] != "cont":  # goexit1 → goexit0; or parked, rescheduled...
                    return reply
                m.newosprocs(reply.get("forks", ()))
                if step.block_us is not None:  # entersyscall ... the call itself ... exitsyscall
                    self.block(step.block_us, g)
                    reply = self.request(g, EXITSYSCALL)
                    if reply["t"] != "cont":
                        return reply
                    m.newosprocs(reply.get("forks", ()))
            pc, loops, left = step.next_pc, step.next_loops, 0

    def request(self, g: int, req: Request) -> dict:
        """Send a request about goroutine g from its g0 frame (if it has one) and wait for the answer."""
        m = self.m
        if not req.frame:  # LockOSThread / UnlockOSThread stay on the goroutine's stack
            return m.call(req.t, g=g, **req.fields)
        with m.g0.systemstack(req.frame, g):
            return m.call(req.t, g=g, **req.fields)

    def block(self, us: int, g: int = -1) -> None:
        """The system call itself: a real blocking wait for us Go µs, on the guardian's pidfd, so
        that a run whose coordinator died does not keep this M (and a blocked M takes no CPU)."""
        end = time.monotonic() + us * self.m.cfg.timescale / 1e6
        # Not a g0 frame in Go (the call runs on the goroutine's stack): a marker for the post-mortem.
        with self.m.g0.systemstack("syscall.Syscall", g):
            self._sleep_until(end)

    def _sleep_until(self, end: float) -> None:
        while (left := end - time.monotonic()) > 0:
            if left > 0.002:  # poll counts whole ms, rounded up: wait a ms short of the end...
                self.m.check_guardian((left - 0.001) * 1000)
            else:
                time.sleep(left)  # ...and the rest exactly (clock_nanosleep)

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
        if msg is not None and msg["t"] not in REPLIES:
            raise RuntimeError(f"M{m.id}: unexpected {msg['t']} while running goroutine {g}")
