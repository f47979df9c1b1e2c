"""Helpers for tests that fork bare children (the g0 arena and reaper tests): run a body in a child
that always leaves through os._exit, read its answer from a pipe, wait for it with a deadline."""
from __future__ import annotations

import os
import select
import signal
import time

import pytest


def fork_child(body) -> int:
    """Run body() in a forked child that always leaves through os._exit (its return value, or 70)."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = body() or 0
        finally:
            os._exit(code)
    return pid


def read_answer(fd: int, timeout: float = 5.0, size: int = 65536) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "the child did not answer in time"
    return os.read(fd, size)


def wait_exit(pid: int, timeout: float = 5.0) -> int:
    """The child's exit code (-N for signal N); SIGKILL and fail if it does not exit in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"process {pid} did not exit")
