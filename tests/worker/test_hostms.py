"""The host agent's Ms: how it learns that one died (its pidfd, in one epoll in the agent's poller),
and how long it waits for them after SIGKILL at the end of a run."""
from __future__ import annotations

import os
import signal

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
        ms.close()
    assert waits == [(0, KILL_WAIT_S), (6000, KILL_WAIT_S + 6000 * KILL_WAIT_PER_M_S)]
    assert waits[1][1] >= 6.0  # room for ~1 ms per exit, measured at 5,870 Ms


def _child() -> int:
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    return pid


def test_a_dead_m_wakes_the_agents_poll_through_one_epoll():
    """Real processes: three watched Ms are one fd in the agent's poller; SIGKILL one, and the poll
    wakes and exited() names it (and only it), its pidfd gone from the epoll."""
    poller = zmq.Poller()
    ms = hostms.HostMs(poller)
    pids = [_child() for _ in range(3)]
    try:
        for mid, pid in enumerate(pids):
            ms.watch_m(mid, pid, slot=mid)
        assert len(poller.sockets) == 1  # the epoll, however many Ms
        assert dict(poller.poll(50)) == {} and ms.exited() == []
        os.kill(pids[1], signal.SIGKILL)
        assert dict(poller.poll(5000)) == {ms.epoll.fileno(): zmq.POLLIN}
        assert ms.exited() == [(1, pids[1])]
        assert dict(poller.poll(50)) == {} and ms.exited() == []  # reported once
        assert ms.gone(1, pids[1])[1] == 1  # its g0 slot
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        ms.close()
