"""The seeded fault planner: specs + seed -> when timed faults strike, which forks and messages are hit.  Pure code.

Three families of kinds (``coordinator/faults/kinds.py``):

* timed (``kill-m``, ``stop-m``, ``exit-m``, ``kill-template``): something happens to an M or to
  the host agent at a Go time -- once (``at``) or like a Go ticker (``every``: at
  start+every, start+2*every, ... while before ``until``), each occurrence kept with
  ``probability``, at most ``count`` kept;
* fork (``fork-fail``, ``slow-fork``): each ``newosproc`` in the window [start, until) is hit
  with ``probability`` (at most ``count`` times);
* message (``drop``, ``delay``, ``duplicate``, ``reorder``): each message of the listed types in
  the window is hit with ``probability`` (at most ``count`` times).

``FaultPlan(specs, seed)`` turns specs into decisions.  Every random number comes from a stream
of its own, derived from (seed, the fault's index, what the stream is for), so a decision depends
only on the seed and on the sequence of calls the injector makes -- a run can be replayed, and
adding a message fault does not move the times of a timed one.  All times are Go milliseconds.
The language (FaultSpec, parse_fault, ...) lives in ``coordinator/faults/language.py``; its
names stay importable from here.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any, Iterator

from coordinator.faults.kinds import ALL_TYPES, KINDS, TIMED_KINDS
from coordinator.faults.language import (
    FaultError,
    FaultSpec,
    fault_from_table,
    fault_to_table,
    format_fault,
    parse_fault,
)
from protocol.messages import TYPES
from protocol.timing import RETRY_ON_EAGAIN_TRIES

__all__ = ["ALL_TYPES", "KINDS", "TIMED_KINDS", "RETRY_ON_EAGAIN_TRIES", "FaultError", "FaultSpec",
           "fault_from_table", "fault_to_table", "format_fault", "parse_fault", "FaultPlan", "Planned",
           "ForkFault", "MessageFault", "MAX_DUE_PER_CALL"]

#: the most occurrences the planner hands out per call (the rest wait for the next tick)
MAX_DUE_PER_CALL = 100_000


@dataclass(frozen=True)
class Planned:
    """A timed fault's occurrence.  ``draw`` in [0, 1) picks the victim: the candidate Ms sorted
    by id, ``candidates[int(draw * len(candidates))]``."""

    index: int                  # the fault's index in the plan's specs
    time_ms: float              # Go ms
    kind: str
    target: str
    draw: float
    duration_ms: float | None   # stop-m: how long the M stays stopped
    spec: FaultSpec

    def pick(self, candidates: list[int]) -> int | None:
        """The chosen M among ``candidates`` (ids), or None if there is none."""
        if not candidates:
            return None
        ordered = sorted(candidates)
        return ordered[min(int(self.draw * len(ordered)), len(ordered) - 1)]


@dataclass(frozen=True)
class ForkFault:
    """What happens to one newosproc.

    fork-fail: the clone fails with EAGAIN.  Without ``retry`` (Go 1.16) that is fatal
    (``throw("newosproc")``); with ``retry`` (newer Go's retryOnEAGAIN) ``failures`` tries fail,
    sleeping ``sleeps_ms[i]`` after each, and the fork then succeeds unless ``gives_up``.
    slow-fork: the child waits ``delay_ms`` between fork and mstart."""

    index: int
    kind: str                    # "fork-fail" | "slow-fork"
    time_ms: float
    retry: bool = False
    failures: int = 0            # fork-fail: how many tries fail (>= 1)
    delay_ms: float = 0.0        # slow-fork
    spec: FaultSpec | None = None

    @property
    def gives_up(self) -> bool:
        """Does newosproc fail for good (EAGAIN returned: Go throws)?"""
        return self.kind == "fork-fail" and (not self.retry or self.failures >= RETRY_ON_EAGAIN_TRIES)

    @property
    def sleeps_ms(self) -> tuple[float, ...]:
        """retryOnEAGAIN's sleeps: (try+1) ms after each failed try."""
        return tuple(float(t + 1) for t in range(self.failures)) if self.retry else ()


@dataclass(frozen=True)
class MessageFault:
    """What happens to one message: action "drop" | "delay" (by ``delay_ms``) | "duplicate" |
    "reorder" (hold it back and send it after the next one to the same peer)."""

    index: int
    action: str
    msg_type: str
    time_ms: float
    delay_ms: float = 0.0
    spec: FaultSpec | None = None


def _stream(seed: int, index: int, purpose: str) -> random.Random:
    # str seeds go through SHA-512: the same on every run and platform, independent of PYTHONHASHSEED
    return random.Random(f"gmpsim-faults/{seed}/{index}/{purpose}")


_SKIP = None  # a rejected occurrence (by probability) in a timed fault's stream


def _occurrences(index: int, spec: FaultSpec, seed: int) -> Iterator[tuple[float, Planned | None]]:
    """(time, Planned or None when skipped by probability), in time order, until count/until."""
    rng = _stream(seed, index, "timed")
    kept = 0
    k = 0
    while True:
        if spec.at_ms is not None:
            if k:
                return
            time_ms = spec.at_ms
        else:  # a Go ticker started at start_ms: start + every, start + 2*every, ...
            time_ms = spec.start_ms + (k + 1) * spec.every_ms
            if spec.until_ms is not None and time_ms >= spec.until_ms:
                return
        k += 1
        keep, draw = rng.random(), rng.random()  # two draws per occurrence, kept or not
        if keep < spec.probability:
            kept += 1
            yield time_ms, Planned(index, time_ms, spec.kind, spec.target, draw, spec.duration_ms, spec)
            if spec.count is not None and kept >= spec.count:
                return
        else:
            yield time_ms, _SKIP


class _Timeline:
    """The merge of every timed fault's occurrences, consumed in time order."""

    def __init__(self, timed: list[tuple[int, FaultSpec]], seed: int) -> None:
        self._heap: list[tuple[float, int, Planned | None, Iterator]] = []
        for index, spec in timed:
            if spec.probability > 0:
                self._advance(index, _occurrences(index, spec, seed))

    def _advance(self, index: int, stream: Iterator) -> None:
        for time_ms, planned in stream:
            heapq.heappush(self._heap, (time_ms, index, planned, stream))
            return

    def _drop_skips(self, limit: int = 10_000) -> None:
        while self._heap and self._heap[0][2] is _SKIP and limit > 0:
            _, index, _, stream = heapq.heappop(self._heap)
            self._advance(index, stream)
            limit -= 1

    def take(self, now_ms: float, limit: int | None = None) -> list[Planned]:
        out = []
        steps = 0
        while self._heap and self._heap[0][0] <= now_ms and (limit is None or steps < limit):
            steps += 1
            _, index, planned, stream = heapq.heappop(self._heap)
            if planned is not _SKIP:
                out.append(planned)
            self._advance(index, stream)
        return out

    def next_ms(self) -> float | None:
        self._drop_skips()
        return self._heap[0][0] if self._heap else None


class _Hits:
    """Per fault state for fork and message kinds: its stream and how many times it hit."""

    __slots__ = ("index", "spec", "rng", "hits", "start", "until", "p")

    def __init__(self, index: int, spec: FaultSpec, seed: int) -> None:
        self.index, self.spec, self.hits = index, spec, 0
        self.rng = _stream(seed, index, spec.family)
        self.start = spec.start_ms
        self.until = spec.until_ms if spec.until_ms is not None else math.inf
        self.p = spec.probability

    def roll(self, now_ms: float) -> bool:
        """One draw if the fault is live at ``now_ms``: does it hit?"""
        if not (self.start <= now_ms < self.until) or (self.spec.count is not None and self.hits >= self.spec.count):
            return False
        return self.rng.random() < self.p


def _first_hit(streams, now_ms: float):
    """Every live stream draws (so that each stays independent of the others); the first that
    hits, in spec order, applies and counts the hit. None when none hits."""
    chosen = None
    for hits in streams:
        if hits.roll(now_ms) and chosen is None:
            chosen = hits
    if chosen is not None:
        chosen.hits += 1
    return chosen


class FaultPlan:
    """The seeded plan of a run's faults (see the module doc).  Not thread-safe: the loop's."""

    def __init__(self, specs: Any = (), seed: int = 1) -> None:
        self.specs: tuple[FaultSpec, ...] = tuple(specs)
        self.seed = seed
        self._timed = [(i, s) for i, s in enumerate(self.specs) if s.family == "timed"]
        self._timeline = _Timeline(self._timed, seed)
        self._forks = [_Hits(i, s, seed) for i, s in enumerate(self.specs) if s.family == "fork"]
        by_type: dict[str, list[_Hits]] = {}
        for i, s in enumerate(self.specs):
            if s.family == "message":
                hits = _Hits(i, s, seed)
                for t in (sorted(TYPES) if ALL_TYPES in s.types else s.types):
                    by_type.setdefault(t, []).append(hits)
        self._by_type: dict[str, tuple[_Hits, ...]] = {t: tuple(h) for t, h in by_type.items()}
        #: for the loop: skip the calls altogether when there is nothing to decide
        self.has_timed = bool(self._timed)
        self.has_fork_faults = bool(self._forks)
        self.has_message_faults = bool(self._by_type)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def schedule(self, until_ms: float) -> list[Planned]:
        """Every timed fault kept up to ``until_ms`` (inclusive), in time order (ties: by index).
        Independent of ``due()``: it replays the streams from the start."""
        return _Timeline(self._timed, self.seed).take(until_ms)

    def due(self, now_ms: float) -> list[Planned]:
        """The timed faults whose time (<= now_ms) has come and that were not returned yet, in
        time order (``now_ms`` must be finite: a recurring fault without an end never ends); at
        most MAX_DUE_PER_CALL of them per call, so that a caller stays responsive (signals)."""
        return self._timeline.take(now_ms, MAX_DUE_PER_CALL)

    def next_due_ms(self) -> float | None:
        """When ``due()`` next has something (or may have: after a long run of occurrences skipped
        by probability, the next candidate's time), None when no timed fault is left."""
        return self._timeline.next_ms()

    def on_fork(self, now_ms: float) -> ForkFault | None:
        """Decide the fate of a newosproc at ``now_ms``.  Every live fork fault draws (so their
        streams stay independent); the first that hits, in spec order, applies."""
        chosen = _first_hit(self._forks, now_ms)
        if chosen is None:
            return None
        spec = chosen.spec
        if spec.kind == "slow-fork":
            return ForkFault(chosen.index, spec.kind, now_ms, delay_ms=spec.duration_ms, spec=spec)
        failures = 1
        if spec.retry:  # each further try fails with the same probability
            while failures < RETRY_ON_EAGAIN_TRIES and chosen.rng.random() < spec.probability:
                failures += 1
        return ForkFault(chosen.index, spec.kind, now_ms, retry=bool(spec.retry), failures=failures, spec=spec)

    def on_message(self, msg_type: str, now_ms: float) -> MessageFault | None:
        """Decide the fate of one message of type ``msg_type`` at ``now_ms`` (None: deliver it)."""
        specs = self._by_type.get(msg_type)
        if specs is None:
            return None
        chosen = _first_hit(specs, now_ms)
        if chosen is None:
            return None
        spec = chosen.spec
        delay = chosen.rng.random() * spec.duration_ms if spec.kind == "delay" else 0.0
        return MessageFault(chosen.index, spec.kind, msg_type, now_ms, delay, spec)

    @staticmethod
    def describe(event: Planned | ForkFault | MessageFault) -> dict[str, Any]:
        """A JSON-able record of a fault for report.json's ``faults`` list (a fresh dict: the
        injector adds what it did, e.g. the M it chose)."""
        if isinstance(event, Planned):
            record: dict[str, Any] = {"time_ms": event.time_ms, "kind": event.kind, "target": event.target,
                                      "fault": format_fault(event.spec), "index": event.index,
                                      "draw": event.draw}
            if event.duration_ms is not None:
                record["duration_ms"] = event.duration_ms
            if event.kind == "kill-template":
                record["restart"] = bool(event.spec.restart)
            return record
        if isinstance(event, ForkFault):
            record = {"time_ms": event.time_ms, "kind": event.kind, "target": "newosproc",
                      "fault": format_fault(event.spec) if event.spec else event.kind, "index": event.index}
            if event.kind == "fork-fail":
                record.update(retry=event.retry, failures=event.failures, gives_up=event.gives_up)
            else:
                record["delay_ms"] = event.delay_ms
            return record
        if isinstance(event, MessageFault):
            record = {"time_ms": event.time_ms, "kind": event.action, "target": event.msg_type,
                      "fault": format_fault(event.spec) if event.spec else event.action, "index": event.index}
            if event.action == "delay":
                record["delay_ms"] = event.delay_ms
            return record
        raise TypeError(f"not a planned fault: {event!r}")
