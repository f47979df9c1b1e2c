"""proc.go's M lifecycle in the pure core (coordinator/runtime/proc.py), pinned where a one-token
change survived the other tests (tests/MUTATION.md, "proc, checkdead, lockosthread, mdead, netpoll,
runq, note"). Each test names the Go 1.16 function (or gmpsim's own rule, for the multi-host and
fork-failure paths Go has not) whose line it pins. Pure: schedinit's records and step(), no process."""
from __future__ import annotations

from coordinator.runtime import effects as fx

from . import steps

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def test_newm_counts_in_stats():
    """newm/newosproc: stats.newm and stats.ms_created count each M made (the report's ms.created)."""
    w = steps.started(PROGS, gomaxprocs=2)
    s = w.sched
    before = s.stats["newm"], s.stats["ms_created"]
    assert steps.of(w.newproc(0, "w"), fx.Fork)
    assert (s.stats["newm"], s.stats["ms_created"]) == (before[0] + 1, before[1] + 1)
