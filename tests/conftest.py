"""Nothing left behind: every test ends with no process of its own still alive (besides pytest), no
gmpsim shared-memory segment, no network namespace and no run directory in the checkout's runs/
that was not there before it. The fixture fails the test otherwise.
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
NETNS_DIR = "/run/netns"  # where `ip netns add` names a namespace
TESTS = pathlib.Path(__file__).resolve().parent
RUNS_DIR = TESTS.parent / "runs"  # the default --out of a run started in the checkout


def _entries(path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


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
    netns_before, runs_before = _entries(NETNS_DIR), _entries(RUNS_DIR)
    yield
    deadline = time.monotonic() + 5.0
    while True:
        procs = _our_processes() - procs_before
        shm = _our_segments() - shm_before
        netns = _entries(NETNS_DIR) - netns_before
        if (not procs and not shm and not netns) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    runs = _entries(RUNS_DIR) - runs_before
    if runs:
        pytest.fail(f"left behind: run directories {sorted(runs)} in {RUNS_DIR} (give the run an --out "
                    "under tmp_path)")
    if netns:
        pytest.fail(f"left behind: network namespaces {sorted(netns)}")
    if procs or shm:
        details = []
        for pid in sorted(procs):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    details.append(f"{pid}: {f.read().replace(bytes(1), b' ').decode(errors='replace')[:80]}")
            except OSError:
                details.append(str(pid))
        pytest.fail(f"left behind: processes {details}, shared memory {sorted(shm)}")
