"""The Ms of one host as its agent keeps them: each M's pid and g0 slot, a pidfd on each in the
agent's poller, and the exit statuses the subreaper reaped before a pidfd fired."""
from __future__ import annotations

import os

import zmq

from protocol.timing import KILL_WAIT_PER_M_S, KILL_WAIT_S

from .reaper import PidWatch, kill_and_wait, reap

NOT_OUR_CHILD = -256  # mexited.status when the exit status is not ours to read


class HostMs:
    """Every M of this host still alive, watched through `poller` (the agent's: its socket and one
    pidfd per M watched)."""

    def __init__(self, poller: zmq.Poller):
        self.poller = poller
        self.watch = PidWatch()
        self.pids: dict[int, int] = {}  # M id -> pid, every M of this host still alive
        self.slots: dict[int, int] = {}  # M id -> its g0 slot (for the post-mortem)
        self.exits: dict[int, int] = {}  # pid -> exit status, reaped before its pidfd fired

    def watch_m(self, mid: int, pid: int, slot: int, pidfd: int | None = None) -> None:
        """Watch M `mid`'s process (through `pidfd` if given: ours from now on)."""
        if mid in self.watch:
            if pidfd is not None:
                os.close(pidfd)
            return
        self.pids[mid] = pid
        if slot >= 0:
            self.slots[mid] = slot
        self.watch.add(mid, pid, pidfd)
        fd = self.watch.fd_of(mid)
        if fd is not None:  # None: already gone; watch.ready reports it on the next pass
            self.poller.register(fd, zmq.POLLIN)

    def collect_orphans(self) -> None:
        """Reap our children and the orphans re-parented to us (subreaper)."""
        for pid, status in reap():
            self.exits[pid] = status

    def exited(self, fds: list[int]) -> list[tuple[int, int]]:
        """After a poll whose readable pidfds are `fds`: reap the orphans, take those fds out of the
        poller, and return the Ms whose process is gone, (M id, pid) each."""
        self.collect_orphans()
        for fd in fds:
            self.poller.unregister(fd)
        # Always asked: an M already gone when its watch came has no fd, only a report waiting.
        return self.watch.ready(fds)

    def gone(self, mid: int, pid: int) -> tuple[int, int | None]:
        """Forget an M whose process is gone: its exit status and its g0 slot (None if it had none)."""
        self.collect_orphans()
        status = self.exits.pop(pid, NOT_OUR_CHILD)  # not ours: its forker reaped it (SIGCHLD ignored)
        self.pids.pop(mid, None)
        slot = self.slots.pop(mid, None)
        return status, slot

    def signal(self, mid: int, pid: int, sig: int) -> None:
        """Signal the M, if `pid` is still its process (otherwise the order is moot)."""
        if self.pids.get(mid) == pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill_all(self) -> list[int]:
        """SIGKILL every M and wait for them (protocol.timing: a base and a share per M), then reap;
        returns the pids still alive."""
        pids = list(self.pids.values())
        left = kill_and_wait(pids, timeout=KILL_WAIT_S + KILL_WAIT_PER_M_S * len(pids))
        self.collect_orphans()
        return left

    def forget_all(self, arena) -> None:
        """After kill_all, back to a host with no M: no pidfd watched, every g0 slot of `arena` free."""
        for mid in list(self.pids):
            fd = self.watch.fd_of(mid)
            if fd is not None:
                self.poller.unregister(fd)
            self.watch.remove(mid)
        for slot in self.slots.values():
            arena.stackfree(slot)
        self.pids.clear()
        self.slots.clear()
