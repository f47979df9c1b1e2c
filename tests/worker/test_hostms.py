"""The host agent's Ms at the end of a run: how long it waits for them after SIGKILL."""
from __future__ import annotations

import zmq

from protocol.timing import KILL_WAIT_PER_M_S, KILL_WAIT_S
from worker import hostms


def test_the_kill_wait_grows_with_the_ms(monkeypatch):
    """A fixed second left 58 of 5,870 SIGKILLed Ms alive (gmpsim bench --scale 10000, an aborted
    run): each M's exit costs the kernel its page tables and pages, so the wait has a share per M."""
    waits = []
    monkeypatch.setattr(hostms, "kill_and_wait", lambda pids, timeout: waits.append((len(pids), timeout)) or [])
    monkeypatch.setattr(hostms, "reap", lambda: [])
    for n in (0, 6000):
        ms = hostms.HostMs(zmq.Poller())
        ms.pids = {m: 10_000 + m for m in range(n)}
        assert ms.kill_all() == []
    assert waits == [(0, KILL_WAIT_S), (6000, KILL_WAIT_S + 6000 * KILL_WAIT_PER_M_S)]
    assert waits[1][1] >= 6.0  # room for ~1 ms per exit, measured at 5,870 Ms
