"""Go time and wall time: the clock that converts them, and the loop's two timers (sysmon, netpoll).

Go time is the wall clock since the start divided by the scenario's timescale (wall µs per Go µs).
"""
from __future__ import annotations

import time


class Clock:
    """Go time <-> wall time (time.monotonic), from t0, the run's start."""

    def __init__(self, timescale: float):
        self.timescale = timescale
        self.t0 = 0.0

    def start(self) -> float:
        self.t0 = time.monotonic()
        return self.t0

    def go_now(self) -> int:
        """Go nanoseconds since the start."""
        return int((time.monotonic() - self.t0) * 1e9 / self.timescale)

    def go_ms(self) -> float:
        return round(self.go_now() / 1e6, 3)

    def wall_after(self, go_us: float) -> float:
        return time.monotonic() + go_us * self.timescale / 1e6

    def wall_at_go_ms(self, ms: float) -> float:
        return self.t0 + ms * 1000 * self.timescale / 1e6

    def wall_at_go_ns(self, ns: int) -> float:
        return self.t0 + ns * self.timescale / 1e9


class Timers:
    """When sysmon's sleep ends and when the M blocked in netpoll wakes (wall times, None: no timer)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.sysmon_at: float | None = None  # when sysmon's sleep (SysmonSleep) ends
        self.sysmon_note = False  # that sleep is the deep one (notetsleep): "sysmon_wake" ends it
        self.poll: tuple[int, float] | None = None  # (M, wall time) the M blocked in netpoll wakes

    def sysmon_sleep(self, until_ns: int, note: bool) -> None:
        """sysmon sleeps until (Go ns): a usleep, or the deep sleep a WakeSysmon ends early."""
        self.sysmon_at = self.clock.wall_at_go_ns(until_ns)
        self.sysmon_note = note

    def wake_sysmon(self, now: float) -> None:
        if self.sysmon_note:  # notewakeup(&sched.sysmonnote): its notetsleep returns now
            self.sysmon_at = now

    def netpoll_sleep(self, mid: int, until_ns: int) -> None:
        self.poll = (mid, self.clock.wall_at_go_ns(until_ns))

    def netpoll_break(self, mid: int, now: float) -> None:
        if self.poll is not None and self.poll[0] == mid:
            self.poll = (mid, now)

    def forget_m(self, mid: int) -> None:
        if self.poll is not None and self.poll[0] == mid:
            self.poll = None  # it was the M blocked in netpoll

    def next_at(self) -> list[float]:
        return [x for x in (self.sysmon_at, self.poll and self.poll[1]) if x is not None]

    def netpoll_due(self, now: float) -> int | None:
        """The M whose netpoll wait is over (timeout or break), if any: its timer is cleared."""
        if self.poll is not None and now >= self.poll[1]:
            mid, self.poll = self.poll[0], None
            return mid
        return None

    def sysmon_due(self, now: float) -> dict | None:
        """sysmon's event, when its sleep is over (the event's effects hold its next sleep)."""
        if self.sysmon_at is not None and now >= self.sysmon_at:
            self.sysmon_at = None
            return {"t": "sysmon_wake" if self.sysmon_note else "sysmon"}
        return None
