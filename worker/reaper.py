"""Watching and reaping M processes (Linux only: prctl, pidfd).

Why this is needed: Ms are forked by other Ms (a direct newm forks from the
calling M), so most Ms are *not* children of the host agent, and waitpid
cannot tell the agent they died. Two Linux mechanisms fill the gap:

- ``pidfd_open(pid)`` gives a file descriptor that becomes readable when that
  process exits, whoever its parent is: PidWatch puts these in the agent's
  poller next to its sockets.
- ``PR_SET_CHILD_SUBREAPER`` on the agent: when an M dies, its children
  re-parent to the agent instead of to init, so the agent can reap them and
  nothing is left as a zombie or an orphan outside the run.

Ms set SIGCHLD to SIG_IGN, so the children an M forks are reaped by the
kernel while that M lives; only orphans reach the agent, which reaps them
with ``reap()``.

PID reuse: a pid names a process only while it is alive or an unreaped
zombie. Call ``PidWatch.add`` while that holds (e.g. when the M says hello, or
for our own unreaped child); from then on the pidfd, not the number, is the
reference, and kill_and_wait signals through it (``pidfd_send_signal``).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time
from collections.abc import Hashable, Iterable

__all__ = [
    "PR_SET_CHILD_SUBREAPER",
    "PR_GET_CHILD_SUBREAPER",
    "set_child_subreaper",
    "set_pdeathsig",
    "is_child_subreaper",
    "PidWatch",
    "reap",
    "kill_and_wait",
]

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_PDEATHSIG = 1

_prctl = None


def _libc_prctl():
    global _prctl
    if _prctl is None:
        fn = ctypes.CDLL(None, use_errno=True).prctl
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _prctl = fn
    return _prctl


def _check(rc: int) -> None:
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_child_subreaper(on: bool = True) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our descendants re-parent to us (process-wide)."""
    _check(_libc_prctl()(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0))


def set_pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): `sig` comes to us when our parent dies."""
    _check(_libc_prctl()(PR_SET_PDEATHSIG, sig, 0, 0, 0))


def is_child_subreaper() -> bool:
    """prctl(PR_GET_CHILD_SUBREAPER)."""
    flag = ctypes.c_int(0)
    _check(_libc_prctl()(PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag), 0, 0, 0))
    return bool(flag.value)


class PidWatch:
    """Exit notification for processes that need not be our children, via pidfds.

    ``add(key, pid)``; put ``fds()`` in a zmq.Poller or select; when one is
    readable, ``ready(fds)`` returns the ``(key, pid)`` of the exited ones and
    stops watching them (closing their fds). A pid already gone at ``add`` is
    reported by the next ``ready`` call, whatever fds it is given.
    """

    def __init__(self) -> None:
        self._watched: dict[Hashable, tuple[int, int]] = {}  # key -> (pid, fd)
        self._keys_by_fd: dict[int, Hashable] = {}
        self._gone: list[tuple[Hashable, int]] = []  # exited before add()

    def add(self, key: Hashable, pid: int, fd: int | None = None) -> None:
        """Watch `pid` under `key`, through `fd` if given (a pidfd on it, which is ours to close
        from then on: e.g. one the process's parent opened before it could reap it)."""
        if key in self._watched or any(k == key for k, _ in self._gone):
            if fd is not None:
                os.close(fd)
            raise ValueError(f"already watching {key!r}")
        if fd is None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._gone.append((key, pid))
                return
        self._watched[key] = (pid, fd)
        self._keys_by_fd[fd] = key

    def remove(self, key: Hashable) -> None:
        """Stop watching key (no report)."""
        entry = self._watched.pop(key, None)
        if entry is not None:
            del self._keys_by_fd[entry[1]]
            os.close(entry[1])
        self._gone = [(k, p) for k, p in self._gone if k != key]

    def fds(self) -> list[int]:
        return list(self._keys_by_fd)

    def fd_of(self, key: Hashable) -> int | None:
        entry = self._watched.get(key)
        return None if entry is None else entry[1]

    def watching(self) -> dict[Hashable, int]:
        """key -> pid of every process not yet reported as exited."""
        out = {key: pid for key, (pid, _) in self._watched.items()}
        out.update(self._gone)
        return out

    def ready(self, fds: int | Iterable[int] | None = None) -> list[tuple[Hashable, int]]:
        """(key, pid) of the watched processes that have exited, among ``fds``
        (e.g. what the poller returned) or among all of them when None. Never blocks."""
        exited, self._gone = self._gone, []
        if fds is None:
            candidates = list(self._keys_by_fd)
        else:
            if isinstance(fds, int):
                fds = (fds,)
            candidates = [fd for fd in dict.fromkeys(fds) if fd in self._keys_by_fd]
        if candidates:
            exited.extend(self._collect(_readable(candidates, 0)))
        return exited

    def wait(self, timeout: float | None = None) -> list[tuple[Hashable, int]]:
        """Block up to timeout seconds (None: forever) until one exits; returns ready()."""
        if self._gone or not self._keys_by_fd:
            return self.ready([])
        return self._collect(_readable(list(self._keys_by_fd), timeout))

    def _collect(self, fds: Iterable[int]) -> list[tuple[Hashable, int]]:
        out = []
        for fd in fds:
            key = self._keys_by_fd.pop(fd)
            pid, _ = self._watched.pop(key)
            os.close(fd)
            out.append((key, pid))
        return out

    def close(self) -> None:
        for _, fd in self._watched.values():
            os.close(fd)
        self._watched.clear()
        self._keys_by_fd.clear()
        self._gone.clear()

    def __len__(self) -> int:
        return len(self._watched) + len(self._gone)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._watched or any(k == key for k, _ in self._gone)

    def __enter__(self) -> "PidWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _readable(fds: list[int], timeout: float | None) -> list[int]:
    """The fds of ``fds`` readable within timeout seconds (0: just look)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, events in poller.poll(ms) if events & (select.POLLIN | select.POLLHUP)]


def reap(pids: Iterable[int] | None = None) -> list[tuple[int, int]]:
    """Collect exited children without blocking: ``[(pid, exitcode)]``, exitcode as
    os.waitstatus_to_exitcode gives it (-N: killed by signal N).

    With no pids: every exited child, ``waitpid(-1, WNOHANG)`` -- including
    orphans re-parented to us as subreaper. Only for a process where nothing
    else waits for children (the agent): it would steal subprocess.Popen's
    statuses. With pids: only those, the rest untouched.
    """
    out = []
    if pids is None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.append((pid, os.waitstatus_to_exitcode(status)))
        return out
    for pid in pids:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # not ours, or already reaped
        if got:
            out.append((got, os.waitstatus_to_exitcode(status)))
    return out


def kill_and_wait(pids: Iterable[int], timeout: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL after timeout seconds, waiting up to timeout again; reaps
    those that are our children. Returns the pids still alive (should be none).

    Signals go through pidfds, so a pid reused after its process died is never hit.
    """
    pids = list(dict.fromkeys(pids))
    if os.getpid() in pids:
        raise ValueError("kill_and_wait: refusing to kill ourselves")
    with PidWatch() as watch:
        for pid in pids:
            watch.add(pid, pid)
        reap(pid for _, pid in watch.ready([]))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in watch.watching():
                try:
                    signal.pidfd_send_signal(watch.fd_of(pid), sig)
                except ProcessLookupError:
                    pass  # exited meanwhile; its pidfd is readable
            deadline = time.monotonic() + timeout
            while len(watch):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reap(pid for _, pid in watch.wait(remaining))
            if not len(watch):
                break
        return sorted(watch.watching().values())
