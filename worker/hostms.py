"""The Ms of one host as its agent keeps them: each M's pid and g0 slot, a pidfd on each (all in
one epoll, which is in the agent's poller), and the exit statuses the subreaper reaped before a
pidfd fired."""
from __future__ import annotations

import os
import select

import zmq

from protocol.timing import KILL_WAIT_PER_M_S, KILL_WAIT_S

from .reaper import PidWatch, kill_and_wait, reap

NOT_OUR_CHILD = -256  # mexited.status when the exit status is not ours to read


class HostMs:
    """Every M of this host still alive, watched through `poller` (the agent's: its socket, and one
    epoll holding a pidfd per M watched). Not a pidfd per M in the poller itself: zmq.Poller walks
    every registered fd on each poll (~40 ns each: 100 µs a poll at 2,500 Ms), and the agent polls
    for every message, so its cost per M made would grow with the Ms; the epoll's is flat."""

    def __init__(self, poller: zmq.Poller):
        self.epoll = select.epoll()
        poller.register(self.epoll.fileno(), zmq.POLLIN)
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
            self.epoll.register(fd, select.EPOLLIN)

    def collect_orphans(self) -> None:
        """Reap our children and the orphans re-parented to us (subreaper)."""
        for pid, status in reap():
            self.exits[pid] = status

    def exited(self) -> list[tuple[int, int]]:
        """After a poll: reap the orphans, take the pidfds that fired out of the epoll, and return
        the Ms whose process is gone, (M id, pid) each."""
        self.collect_orphans()
        fds = [fd for fd, _ in self.epoll.poll(0)]
        for fd in fds:
            self.epoll.unregister(fd)
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
                self.epoll.unregister(fd)
            self.watch.remove(mid)
        for slot in self.slots.values():
            arena.stackfree(slot)
        self.pids.clear()
        self.slots.clear()

    def close(self) -> None:
        """The pidfds and the epoll (at the agent's end)."""
        self.watch.close()
        self.epoll.close()
