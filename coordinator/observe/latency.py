"""Latency histograms (HdrHistogram): one per host, where the measurements come from, merged for
the report. A wake's latency is measured by the woken M itself (send time to notesleep's return,
on CLOCK_MONOTONIC); an M's creation (newm to its hello) by the coordinator. Values are µs, kept
to 3 significant digits from 1 µs to 10 minutes."""
from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 600_000_000, 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


class Latency:
    """One kind of latency, by host."""

    def __init__(self):
        self.by_host: dict[str, HdrHistogram] = {}

    def record(self, host: str, seconds: float) -> None:
        h = self.by_host.get(host)
        if h is None:
            h = self.by_host[host] = _histogram()
        h.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6))))

    def merged(self) -> HdrHistogram:
        out = _histogram()
        for h in self.by_host.values():
            out.add(h)
        return out

    @property
    def n(self) -> int:
        return sum(h.get_total_count() for h in self.by_host.values())

    def summary(self) -> dict:
        """n, p50, p90, p99, p99.9, max (µs) of all hosts merged, and the same per host."""
        out = _summary(self.merged())
        if len(self.by_host) > 1:
            out["per_host"] = {host: _summary(h) for host, h in sorted(self.by_host.items())}
        return out


def _summary(h: HdrHistogram) -> dict:
    n = h.get_total_count()
    if n == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "p99_9": None, "max": None}
    out = {"n": n}
    for name, q in PERCENTILES:
        out[name] = float(h.get_value_at_percentile(q))
    out["max"] = float(h.get_max_value())
    return out
