"""Nothing left behind: every test ends with no process of its own still alive (besides pytest) and
no gmpsim shared-memory segment that was not there before it. The fixture fails the test otherwise.
Each test also gets the marker of its directory (tests/runtime/ -> `runtime`, ...: pyproject's list)."""
from __future__ import annotations

import os
import pathlib
import time

import pytest

from coordinator.shell.procfs import processes
from protocol.owner import owner_alive, owner_of

# Every frame a coordinator of the tests sends is checked against the catalogue too (outside the
# tests its hot replies are packed unchecked, for speed).
os.environ.setdefault("GMPSIM_CHECK_OUTGOING", "1")

SHM_DIR = "/dev/shm"
TESTS = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(items) -> None:
    """The marker is the directory: `pytest -m runtime` runs the pure core's tests alone."""
    for item in items:
        parts = pathlib.Path(item.fspath).resolve().relative_to(TESTS).parts
        if len(parts) > 1:
            item.add_marker(parts[0])


def _our_processes() -> set[int]:
    """Live (non-zombie) processes of pytest's process group other than pytest itself: every agent
    and M a test starts is forked from pytest or from a CLI it runs, and none leaves the group."""
    me, pgid = os.getpid(), os.getpgid(0)
    return {p for p, (state, _, pgrp) in processes().items() if pgrp == pgid and state != "Z" and p != me}


def _mapped_elsewhere(names: set[str], ours: set[int]) -> set[str]:
    """Those of names that a live process outside this pytest has mapped (/proc/<pid>/maps)."""
    found: set[str] = set()
    paths = {os.path.join(SHM_DIR, n): n for n in names}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                text = f.read()
        except OSError:
            continue
        for path, name in paths.items():
            if path in text:
                found.add(name)
    return found


def _our_segments() -> set[str]:
    """gmpsim segments, but not another pytest's (a helper's suite on the same machine): not one
    whose name says its owner is a live process outside this pytest (protocol/owner.py), nor, for a
    name that does not say, one that such a process has mapped."""
    ours = _our_processes() | {os.getpid()}
    out = set()
    for n in os.listdir(SHM_DIR):
        if not n.startswith("gmpsim-"):
            continue
        owner = owner_of(n)
        if owner is not None and owner[0] not in ours and owner_alive(n):
            continue  # someone else's run, still going
        out.add(n)
    unnamed = {n for n in out if owner_of(n) is None}
    return out - _mapped_elsewhere(unnamed, ours) if unnamed else out


@pytest.fixture(autouse=True)
def nothing_left_behind():
    if "MUTANT_UNDER_TEST" in os.environ:  # `make mutate` runs pure tests only: another suite's segment
        yield  # appearing meanwhile must not count as killing a mutant
        return
    procs_before, shm_before = _our_processes(), _our_segments()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        procs = _our_processes() - procs_before
        shm = _our_segments() - shm_before
        if (not procs and not shm) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if procs or shm:
        details = []
        for pid in sorted(procs):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    details.append(f"{pid}: {f.read().replace(bytes(1), b' ').decode(errors='replace')[:80]}")
            except OSError:
                details.append(str(pid))
        pytest.fail(f"left behind: processes {details}, shared memory {sorted(shm)}")
