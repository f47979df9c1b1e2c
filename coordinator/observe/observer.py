"""The hooks an observer of a run has (trace.json, live progress, metrics...), all of them declared."""
from __future__ import annotations


class Observer:
    """Something that watches a run step by step. Each hook runs on the loop's thread, so it must be
    cheap: `touched` names the Ms an event involved. A hook not overridden does nothing."""

    def started(self, sched, go_ns: int, wall: float) -> None: ...

    def after_step(self, sched, ev: dict | None, effects: list, touched: set[int], go_ns: int,
                   wall: float) -> None: ...

    def fault(self, kind: str, target: str | None, go_ns: int) -> None:
        """A fault was injected (kind of the plan's, what it hit)."""

    def finished(self, sched, outcome, go_ns: int, wall: float) -> None: ...


def touched_ms(ev: dict | None, effects: list) -> set[int]:
    """The Ms an event and its effects involve (their state may have changed)."""
    out = set()
    if ev is not None and isinstance(ev.get("m"), int) and ev["m"] >= 0:
        out.add(ev["m"])
    for e in effects:
        m = getattr(e, "m", None)
        if isinstance(m, int):
            out.add(m)
        forker = getattr(e, "forker", None)
        if isinstance(forker, int):
            out.add(forker)
    return out
