"""Subreaper, pidfd watches, reaping and killing, with real processes."""

import json
import os
import signal
import time

import pytest
import zmq

from coordinator.shell.procfs import children
from tests.forking import fork_child, read_answer, wait_exit
from worker.reaper import (
    PidWatch,
    is_child_subreaper,
    kill_and_wait,
    reap,
    set_child_subreaper,
)


def _children() -> list[int]:
    return children(os.getpid())


@pytest.fixture(autouse=True)
def no_children_left():
    yield
    children = _children()
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert children == [], f"child processes left behind: {children}"


def _m_with_child(child_body):
    """Fork an "M" (SIGCHLD ignored, as Ms do) that forks a child running child_body and
    reports that grandchild's pid; the M then waits for a byte and exits.
    Returns (m_pid, grandchild_pid, fd to release the M)."""
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()

    def m_process():
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        gc = fork_child(child_body)
        os.write(report_w, str(gc).encode())
        os.read(release_r, 1)

    m_pid = fork_child(m_process)
    os.close(report_w)
    os.close(release_r)
    gc_pid = int(read_answer(report_r))
    os.close(report_r)
    return m_pid, gc_pid, release_w


def _release(m_pid: int, release_w: int) -> None:
    os.write(release_w, b"x")
    os.close(release_w)
    assert wait_exit(m_pid) == 0


# --------------------------------------------------------------------------- subreaper


def test_subreaper_adopts_and_reaps_an_orphaned_grandchild():
    """In a helper process (the subreaper flag is process-wide): the helper's child forks a
    grandchild and exits at once; the grandchild re-parents to the helper, which reaps it."""
    out_r, out_w = os.pipe()

    def agent():
        set_child_subreaper()
        agent_pid = os.getpid()
        note_r, note_w = os.pipe()

        def grandchild():
            deadline = time.monotonic() + 3
            while os.getppid() != agent_pid and time.monotonic() < deadline:
                time.sleep(0.001)
            os.write(note_w, str(os.getppid()).encode())
            return 5

        def m_process():
            fork_child(grandchild)
            return 0  # dies right away, orphaning the grandchild

        m_pid = fork_child(m_process)
        m_status = os.waitstatus_to_exitcode(os.waitpid(m_pid, 0)[1])
        adopted_by = int(read_answer(note_r))
        with PidWatch() as watch:
            gc_pid = [p for p in _children() if p != m_pid]
            if gc_pid:  # it may already be a zombie; a pidfd is readable then too
                watch.add("gc", gc_pid[0])
                watch.wait(3)
        reaped = reap()
        os.write(out_w, json.dumps({
            "subreaper": is_child_subreaper(), "agent": agent_pid, "m_status": m_status,
            "adopted_by": adopted_by, "reaped": reaped, "left": reap(),
        }).encode())

    helper = fork_child(agent)
    os.close(out_w)
    result = json.loads(read_answer(out_r))
    os.close(out_r)
    assert wait_exit(helper) == 0
    assert result["subreaper"] is True
    assert result["m_status"] == 0
    assert result["adopted_by"] == result["agent"]
    assert [status for _, status in result["reaped"]] == [5]
    assert result["left"] == []
    assert is_child_subreaper() is False  # the test process itself was never changed


# --------------------------------------------------------------------------- PidWatch


def test_pidwatch_notices_the_exit_of_a_non_child_through_a_zmq_poller():
    go_r, go_w = os.pipe()

    def blocked_m():
        os.read(go_r, 1)
        return 0

    m_pid, gc_pid, release_w = _m_with_child(blocked_m)
    try:
        with pytest.raises(ChildProcessError):
            os.waitpid(gc_pid, os.WNOHANG)  # not our child: waitpid cannot see it
        with PidWatch() as watch:
            watch.add("m7", gc_pid)
            assert "m7" in watch and len(watch) == 1
            poller = zmq.Poller()
            for fd in watch.fds():
                poller.register(fd, zmq.POLLIN)
            assert poller.poll(20) == []
            assert watch.ready() == []
            os.write(go_w, b"x")
            events = poller.poll(5000)
            assert watch.ready([fd for fd, _ in events]) == [("m7", gc_pid)]
            assert len(watch) == 0 and watch.fds() == []
    finally:
        os.close(go_r)
        os.close(go_w)
        _release(m_pid, release_w)


def test_pidwatch_reports_a_process_gone_before_add_at_once():
    pid = fork_child(lambda: 0)
    assert wait_exit(pid) == 0
    with PidWatch() as watch:
        watch.add("gone", pid)
        assert watch.fds() == []
        with pytest.raises(ValueError):
            watch.add("gone", pid)
        assert watch.ready([]) == [("gone", pid)]
        assert watch.ready() == []
        watch.add("again", pid)
        assert watch.wait(10) == [("again", pid)]  # does not block


def test_pidwatch_remove_and_close_release_fds():
    r, w = os.pipe()
    pid = fork_child(lambda: os.read(r, 1) and 0)
    try:
        watch = PidWatch()
        watch.add("a", pid)
        fd = watch.fd_of("a")
        watch.remove("a")
        with pytest.raises(OSError):
            os.fstat(fd)
        watch.add("b", pid)
        fd = watch.fds()[0]
        watch.close()
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        os.write(w, b"x")
        os.close(r)
        os.close(w)
        assert wait_exit(pid) == 0


# --------------------------------------------------------------------------- reap, kill_and_wait


def test_reap_returns_exit_codes_and_signals():
    r, w = os.pipe()
    exits = fork_child(lambda: 7)
    killed = fork_child(lambda: os.read(r, 1) and 0)
    try:
        os.kill(killed, signal.SIGKILL)
        with PidWatch() as watch:
            watch.add(exits, exits)
            watch.add(killed, killed)
            deadline = time.monotonic() + 5
            while len(watch) and time.monotonic() < deadline:
                watch.wait(deadline - time.monotonic())
        assert sorted(reap([exits, killed, 1])) == sorted([(exits, 7), (killed, -signal.SIGKILL)])
        assert reap([exits, killed]) == []  # already reaped
    finally:
        os.close(r)
        os.close(w)


def test_kill_and_wait_terms_then_kills_children_and_non_children():
    ready_r, ready_w = os.pipe()

    def stubborn():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(ready_w, b"s")
        while True:
            time.sleep(1)

    def polite():
        os.write(ready_w, b"p")
        while True:
            time.sleep(1)

    stubborn_pid = fork_child(stubborn)
    polite_pid = fork_child(polite)
    m_pid, gc_pid, release_w = _m_with_child(stubborn)
    try:
        got = b""
        while len(got) < 3:
            got += read_answer(ready_r)
        start = time.monotonic()
        assert kill_and_wait([stubborn_pid, polite_pid, gc_pid, polite_pid], timeout=0.2) == []
        assert 0.15 < time.monotonic() - start < 2.0  # SIGKILL came after the SIGTERM timeout
        for pid in (stubborn_pid, polite_pid):  # ours were reaped
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    finally:
        os.close(ready_r)
        os.close(ready_w)
        _release(m_pid, release_w)


def test_kill_and_wait_of_nothing_and_of_the_dead():
    pid = fork_child(lambda: 0)
    assert wait_exit(pid) == 0
    assert kill_and_wait([], timeout=0.1) == []
    assert kill_and_wait([pid], timeout=0.1) == []
    with pytest.raises(ValueError):
        kill_and_wait([os.getpid()])
