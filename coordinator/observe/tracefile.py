"""trace.json's events and file: a capped buffer of Chrome Trace events (instants, slices, counters)
with the slice open on each track, and the file written from it once (trace.py says what they mean).
"""
from __future__ import annotations

import json
import math
import os


def us(ns: int) -> float | int:
    """Go ns as the file's µs: a float that Perfetto, which truncates ts*1000 to ns, reads back as
    exactly `ns` (so a slice that ends when the next begins never overlaps it by 1 ns)."""
    if ns % 1000 == 0:
        return ns // 1000
    v = ns / 1000
    while int(v * 1000.0) < ns:
        v = math.nextafter(v, math.inf)
    return v


class TraceEvents:
    """The events of one trace, in Go ns, never back in time. Past `max_events`, events are counted
    (`dropped`), not kept; closing the open slices at the end is never capped."""

    def __init__(self, max_events: int):
        self.max_events = max_events
        # Each event is a tuple (ph, name, ts, pid, tid, dur, scope, args); dicts are built when written.
        self.events: list[tuple] = []
        self.dropped = 0
        self.last_ts = 0  # Go ns
        self.open: dict[tuple[int, int], tuple[str, int, dict | None]] = {}  # track -> open slice

    def add(self, ev: tuple) -> None:
        if len(self.events) < self.max_events:
            self.events.append(ev)
        else:
            self.dropped += 1

    def ts(self, go_ns: int) -> int:
        """The event's time in Go ns (events are kept in ns; written in µs)."""
        ts = int(go_ns)
        if ts < self.last_ts:  # never back in time, so slices of a track cannot overlap
            ts = self.last_ts
        self.last_ts = ts
        return ts

    def set_slice(self, track: tuple[int, int], name: str | None, ts: int, args: dict | None = None) -> None:
        """Close the track's open slice (if any) and open `name` (unless None)."""
        cur = self.open.get(track)
        if cur is not None:
            cname, start, cargs = cur
            if ts > start:
                self.add(("X", cname, start, track[0], track[1], ts - start, None, cargs))
        if name is None:
            self.open.pop(track, None)
        else:
            self.open[track] = (name, ts, args)

    def close_all(self, ts: int) -> None:
        """Close every open slice at `ts`, the end of the run."""
        for track in list(self.open):  # closing is never capped: the file stays well formed
            cname, start, cargs = self.open.pop(track)
            if ts > start:
                self.events.append(("X", cname, start, track[0], track[1], ts - start, None, cargs))

    @staticmethod
    def _dict(e: tuple) -> dict:
        ph, name, ts, pid_, tid, dur, scope, args = e
        d = {"ph": ph, "name": name, "ts": us(ts), "pid": pid_, "tid": tid}
        if dur is not None:
            d["dur"] = us(dur)
        if scope is not None:
            d["s"] = scope
        if args is not None:
            d["args"] = args
        return d

    def write(self, path: str, other: dict, metadata: list[dict]) -> None:
        """Write the file, one event a line: otherData `other`, then the `metadata` events (names of
        processes and tracks), then the events (through a .tmp file, replaced at once)."""
        tmp = path + ".tmp"
        dumps, conv = json.dumps, self._dict
        with open(tmp, "w") as f:
            f.write('{"displayTimeUnit": "ms",\n"otherData": ')
            json.dump(other, f)
            f.write(',\n"traceEvents": [\n')
            f.write(",\n".join(dumps(d) for d in metadata))
            for i in range(0, len(self.events), 10_000):
                f.write(",\n")
                f.write(",\n".join(dumps(conv(e)) for e in self.events[i:i + 10_000]))
            f.write("\n]}\n")
        os.replace(tmp, path)
