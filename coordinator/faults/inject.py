"""Carrying out the fault plan (faults.py) in a running coordinator.

Timed faults pick their victim when they fire (candidates sorted by M id, chosen by the planned
draw, so a replay with the same seed plans the same list); fork faults mark the fork order (the
forker then fails or waits, as told); message faults act on frames as they leave or arrive. Every
injected fault is recorded, and is marked detected and recovered when the core reports the
victim's recovery (a Recovered effect).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import signal
from typing import Protocol

from coordinator.faults.plan import FaultPlan, Planned
from coordinator.runtime.sched import Parked, _Grunning, _Gsyscall

log = logging.getLogger("gmpsim.faults")


def candidates(sched, target: str) -> list[int]:
    """The live, started Ms a target names (sysmon's and the template's virtual Ms never)."""
    ms = [mp for mp in sched.allm.values() if not mp.virtual and mp.started and not mp.exited]
    if target.startswith("m:"):
        want = int(target[2:])
        return [mp.id for mp in ms if mp.id == want]
    kind = target.partition(":")[2]
    if kind == "running":
        ms = [mp for mp in ms if mp.curg is not None and mp.curg.status == _Grunning]
    elif kind == "idle":
        ms = [mp for mp in ms if mp.blocked and mp.parked == Parked.STOPM]
    elif kind == "spinning":
        ms = [mp for mp in ms if mp.spinning]
    elif kind == "syscall":
        ms = [mp for mp in ms if mp.curg is not None and mp.curg.status == _Gsyscall]
    return [mp.id for mp in ms]


class GoClock(Protocol):
    """The run's clock, as faults need it."""
    timescale: float  # wall µs per Go µs

    def go_now(self) -> int: ...  # Go ns since the start

    def go_ms(self) -> float: ...

    def wall_at_go_ms(self, ms: float) -> float: ...

    def wall_after(self, go_us: float) -> float: ...


class FaultTarget(Protocol):
    """All the Injector may see of a running coordinator, and all it may do to it."""
    clock: GoClock

    @property
    def sched(self): ...  # the core's state: the victims are chosen from it, never changed

    def signal_m(self, mp, sig: int) -> None: ...  # through its host agent, resent until acknowledged

    def kill_agent(self, host: str, rec: dict) -> None: ...  # SIGKILL the host agent (rec: the fault's record)

    def tell_m(self, mid: int, t: str) -> None: ...  # a message (shutdown) to M mid

    def send_frame(self, identity: bytes, frame: bytes) -> None: ...  # out now, past the faults

    def take_in(self, msg: dict) -> None: ...  # handle an arrived message now (one held back)

    def noted(self, kind: str, target: str, go_ns: int) -> None: ...  # tell the observers


class Injector:
    def __init__(self, plan: FaultPlan, target: FaultTarget):
        self.plan = plan
        self.target = target
        self.clock = target.clock
        self.records: list[dict] = []
        self.open: dict[int, list[dict]] = {}  # victim M -> its records not yet detected
        self.timers: list = []  # (wall, n, fn)
        self.n = itertools.count()
        self.held: dict[bytes, list] = {}  # reorder: identity -> frames held back
        self.held_in: list = []
        self.counts: dict[str, int] = {}

    # --- timed faults -------------------------------------------------------------------------------

    def next_at(self) -> float | None:
        """Wall time of the next thing to do (a planned fault, or a stop to undo)."""
        times = []
        ms = self.plan.next_due_ms()
        if ms is not None:
            times.append(self.clock.wall_at_go_ms(ms))
        if self.timers:
            times.append(self.timers[0][0])
        return min(times) if times else None

    def tick(self, wall: float) -> None:
        while self.timers and self.timers[0][0] <= wall:
            _, _, fn = heapq.heappop(self.timers)
            fn()
        for planned in self.plan.due(self.clock.go_ms()):
            self.fire(planned)

    def later(self, wall: float, fn) -> None:
        heapq.heappush(self.timers, (wall, next(self.n), fn))

    def record(self, kind: str, target: str, victim=None, **more) -> dict:
        rec = {"time_ms": self.clock.go_ms(), "kind": kind, "target": target, "victim": victim,
               "detected_ms": None, "recovery": None, **more}
        self.records.append(rec)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if isinstance(victim, int):
            self.open.setdefault(victim, []).append(rec)
        self.target.noted(kind, f"{target} → M{victim}" if isinstance(victim, int) else target,
                          self.clock.go_now())
        return rec

    def fire(self, p: Planned) -> None:
        c = self.target
        if p.kind == "kill-template":
            host = c.sched.hosts[0]
            rec = self.record(p.kind, p.target, victim=f"agent {host}", planned_ms=p.time_ms,
                              restart=p.spec.restart)
            c.kill_agent(host, rec)
            return
        mid = p.pick(candidates(c.sched, p.target))
        if mid is None:
            self.record(p.kind, p.target, victim=None, planned_ms=p.time_ms, recovery="no candidate M")
            return
        mp = c.sched.allm[mid]
        rec = self.record(p.kind, p.target, victim=mid, planned_ms=p.time_ms, pid=mp.pid)
        if p.kind == "kill-m":
            c.signal_m(mp, signal.SIGKILL)
        elif p.kind == "stop-m":
            c.signal_m(mp, signal.SIGSTOP)
            rec["duration_ms"] = p.duration_ms
            self.later(self.clock.wall_after(p.duration_ms * 1000), lambda: c.signal_m(mp, signal.SIGCONT))
        elif p.kind == "exit-m":
            c.tell_m(mid, "shutdown")  # the M exits cleanly, mid-run

    def recovered(self, e) -> None:
        """The core recovered M e.m: the faults aimed at it are detected."""
        for rec in self.open.pop(e.m, []):
            rec["detected_ms"] = self.clock.go_ms()
            parts = [e.why, f"was {e.doing}"]
            if e.requeued:
                parts.append("requeued " + ", ".join(f"G{g}" for g in e.requeued))
            if e.ps:
                parts.append("handed off " + ", ".join(f"P{p}" for p in e.ps))
            parts.append("g0 stack to freem")
            rec["recovery"] = "; ".join(parts)

    # --- fork faults --------------------------------------------------------------------------------

    def on_fork(self, spec: dict) -> dict:
        f = self.plan.on_fork(self.clock.go_ms())
        if f is None:
            return spec
        if f.kind == "fork-fail":
            spec["fail"] = f.failures
            spec["retry"] = f.retry
            self.record("fork-fail", f"M{spec['m']}", victim=None, failures=f.failures, retry=f.retry,
                        recovery="retryOnEAGAIN" if f.retry and not f.gives_up else None)
        else:
            spec["delay_us"] = int(f.delay_ms * 1000 * self.clock.timescale)
            self.record("slow-fork", f"M{spec['m']}", victim=None, delay_ms=f.delay_ms)
        return spec

    # --- message faults -----------------------------------------------------------------------------

    def outbound(self, t: str, identity: bytes, frame: bytes) -> None:
        """Send a frame through the message faults."""
        send, clock = self.target.send_frame, self.clock
        f = self.plan.on_message(t, clock.go_ms()) if self.plan.has_message_faults else None
        held = self.held.pop(identity, None)
        if f is None:
            send(identity, frame)
        else:
            self.counts[f.action] = self.counts.get(f.action, 0) + 1
            if f.action == "duplicate":
                send(identity, frame)
                send(identity, frame)
            elif f.action == "delay":
                self.later(clock.wall_after(f.delay_ms * 1000), lambda: send(identity, frame))
            elif f.action == "reorder":
                self.held.setdefault(identity, []).append(frame)
                self.later(clock.wall_after(1000), lambda: self._flush_held(identity))
            # drop: nothing
        for old in held or ():
            send(identity, old)

    def _flush_held(self, identity: bytes) -> None:
        for frame in self.held.pop(identity, None) or ():
            self.target.send_frame(identity, frame)

    def inbound(self, msg: dict) -> list[dict]:
        """The messages to handle now, for one that arrived (message faults on the way in)."""
        clock = self.clock
        f = self.plan.on_message(msg["t"], clock.go_ms()) if self.plan.has_message_faults else None
        out = []
        if f is None:
            out.append(msg)
        else:
            self.counts[f.action] = self.counts.get(f.action, 0) + 1
            if f.action == "duplicate":
                out += [msg, msg]
            elif f.action == "delay":
                self.later(clock.wall_after(f.delay_ms * 1000), lambda: self.target.take_in(msg))
            elif f.action == "reorder":
                self.held_in.append(msg)
                self.later(clock.wall_after(1000), self._flush_held_in)
                return out
        if self.held_in and (f is None or f.action != "reorder"):
            out += self.held_in
            self.held_in = []
        return out

    def _flush_held_in(self) -> None:
        held, self.held_in = self.held_in, []
        for msg in held:
            self.target.take_in(msg)

    def summary(self) -> dict:
        # Message faults are counted, not listed (a chaos run has thousands): injected counts both.
        return {"injected": sum(self.counts.values()), "listed": len(self.records),
                "by_kind": dict(sorted(self.counts.items())),
                "detected": sum(1 for r in self.records if r["detected_ms"] is not None)}


__all__ = ["FaultTarget", "GoClock", "Injector", "candidates"]
