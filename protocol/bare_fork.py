"""fork(2) without Python's at-fork work, for a process with one thread: the host's forker, and
the bench's floor templates that stand for it (here, in protocol/, because both use it).

os.fork runs the interpreter's before/after hooks and every `os.register_at_fork` callback:
logging takes and releases its module lock, and in the child threading rebuilds its bookkeeping,
random reseeds itself and logging re-makes the lock of every handler. That is Python code touching
objects on pages the child inherited, so each child copies them: measured 280-320 kB more private
memory per M (of ~2.6 MB) and ~1 ms of CPU. Go's clone does none of this.

What the hooks are for is other threads: a lock one of them held at the fork, the thread states
of threads the child does not have. A process with one thread has neither, so `bare_fork` is only
taken there (`one_thread`); an M (ZeroMQ's two threads) forks with os.fork. What the child gives
up: `random` is not reseeded (no M uses it; os.urandom is unaffected).
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
_libc.fork.restype = ctypes.c_int
_libc.fork.argtypes = ()


def one_thread() -> bool:
    """This process has one thread (the kernel's count, ZeroMQ's and the log feeder's included)."""
    return len(os.listdir("/proc/self/task")) == 1


def bare_fork() -> int:
    """fork(2): the child's pid, or 0 in the child; OSError as os.fork raises it."""
    pid = _libc.fork()
    if pid < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return pid


def fork() -> int:
    """The fork a forking process should use: bare with one thread, os.fork otherwise."""
    return bare_fork() if one_thread() else os.fork()


__all__ = ["bare_fork", "fork", "one_thread"]
