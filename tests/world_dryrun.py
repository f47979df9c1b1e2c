"""The world's dry run (tests/world.py `run()`): an agenda on a virtual clock that plays the goroutine
programs through the op stepper (protocol/stepper.py), with fork, wake and exit latencies, op
durations, sysmon's sleeps and the netpoll wait."""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from protocol.stepper import EXITSYSCALL, next_step
from tests.world_procs import EXITED, FORKED, PARKED, RUNNING, SYSCALL, WorldError

if TYPE_CHECKING:
    from tests.world import World


class DryRun:
    """World's agenda: (when, seq, kind, m, token) entries; a stale token (the process or sysmon
    moved on) makes an entry moot."""

    def _plan(self, m: int | None, kind: str, when: int) -> None:
        token = self._sysmon_gen
        if m is not None:
            p = self.procs[m]
            p.token += 1
            token = p.token
        self._seq += 1
        heapq.heappush(self._agenda, (when, self._seq, kind, m, token))

    def run(self, max_steps: int = 100_000, until_ns: int | None = None) -> World:
        """Play the programs until the run ends (ProgramExit or Fatal), nothing is left to do,
        `until_ns` of Go time, or `max_steps` events."""
        if not self._agenda_started:
            self._agenda_started = True
            self._sysmon_gen += 1
            until, deep, _ = self._sysmon
            self._plan(None, "sysmon_wake" if deep else "sysmon", until)
        steps = 0
        while not self.finished and steps < max_steps:
            if not self._agenda:
                break
            when, seq, kind, m, token = self._agenda[0]
            if until_ns is not None and when > until_ns:
                break
            heapq.heappop(self._agenda)
            if m is not None and self.procs[m].token != token:
                continue
            if m is None and token != self._sysmon_gen:
                continue
            if m is None and self._only_sysmon_left():
                break
            self.now = max(self.now, when)
            steps += 1
            self._dry_step(kind, m)
        self.unfinished = not self.finished and steps >= max_steps
        return self

    def _only_sysmon_left(self) -> bool:
        """Nothing but sysmon would ever happen again (no process will act, no netpoll wait will end)."""
        if self.polling() is not None:
            return False
        return not any(p.state in (FORKED, RUNNING, SYSCALL, EXITED) or (p.state == PARKED and p.wake is not None)
                       for p in self.procs.values())

    def _dry_step(self, kind: str, m: int | None) -> None:
        if kind == "hello":
            self.hello(m)
        elif kind == "woken":
            if self.procs[m].state == PARKED and self.procs[m].wake is not None:
                self.woken(m)
        elif kind == "mexited":
            self.mexited(m)
        elif kind == "netpoll":
            if self.polling() == m:
                self.deliver({"t": "netpoll", "m": m})
        elif kind == "sysmon_wake":
            if self.sysmon_asleep:
                self.sysmon_wakeup = False
                self.deliver({"t": "sysmon_wake"})
        elif kind == "sysmon":
            self.deliver({"t": "sysmon"})
        elif kind == "op":
            self._dry_op(m)
        elif kind == "gosched":
            p = self.procs[m]
            if p.state == RUNNING and p.run_end is not None and p.run_end > self.now:
                left = -(-(p.run_end - self.now) // 1000)
                step = p.run_at
                p.run_end = p.run_at = None
                self.request(m, step.preempted(left))
        elif kind == "exitsyscall":
            if self.procs[m].state == SYSCALL:
                self.request(m, EXITSYSCALL)
        else:
            raise WorldError(f"world: unknown agenda entry {kind}")

    def _dry_op(self, m: int) -> None:
        """The goroutine running on M m goes on from p.pos: the op stepper's next step
        (protocol/stepper.py), with its time passing on the virtual clock."""
        p = self.procs[m]
        if p.state != RUNNING:
            return
        if p.run_end is not None:  # the "run" op in progress has ended
            p.run_end = p.run_at = None
        step = next_step(self.programs[self.g(p.g).prog], *p.pos)
        if not step.ends:
            p.pos = (step.next_pc, tuple(step.next_loops), 0)
        if step.request is None:  # a run op: it holds the P for run_us, unless preempted
            if step.run_us == 0:
                self._plan(m, "op", self.now)
                return
            p.run_end, p.run_at = self.now + step.run_us * 1000, step
            self._plan(m, "op", p.run_end)
            if p.preempt == p.g:  # a preemption request already pending: yield at once
                self._plan(m, "gosched", self.now)
            return
        self.request(m, step.request)
        if step.block_us is not None and self.procs[m].state == SYSCALL:  # the call blocks, then exitsyscall
            self._plan(m, "exitsyscall", self.now + step.block_us * 1000)

    def outcome(self) -> str:
        """"ok", "fatal: <message>", "unfinished" (run() spent its steps), or "stuck" (nothing left
        to do, no verdict: a lost wakeup)."""
        if self.exit_code is not None:
            return "ok"
        if self.fatal is not None:
            return "fatal: " + self.fatal.message
        return "unfinished" if self.unfinished else "stuck"
