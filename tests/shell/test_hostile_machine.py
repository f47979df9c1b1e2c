"""A hostile machine (issue 13): run directories, sockets and /dev/shm taken away, ports raced for,
signals at any moment, leftovers of killed runs; every promise holds.

The tests use real forks, real ZeroMQ sockets and real shared memory; the conftest fixture checks
that nothing is left behind. Hostile input: test_hostile.py; hostile peers: test_hostile_peers.py.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from protocol.owner import arena_name, clean, new_run_id, owner_alive
from protocol.transport import make_rundir
from tests.gmpsim_cli import gmpsim
from tests.shell.hostile_cli import GMPSIM, TINY, _free_port


def test_run_dir_gone_mid_run_writes_the_report_elsewhere(tmp_path):
    """The run directory replaced by a file mid-run (unwritable, even for root): the results go to a
    fresh directory, and the run says where (exit 2, one line)."""
    out = tmp_path / "run"
    p = subprocess.Popen([*GMPSIM, "run", "steady", *TINY, "--set", 'programs.main.ops=[["sleep", 200000]]',
                          "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while "joined" not in ((out / "gmpsim.log").read_text() if (out / "gmpsim.log").exists() else "") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.rename(out, tmp_path / "moved")
    out.write_text("in the way")
    stdout, stderr = p.communicate(timeout=90)
    assert p.returncode == 2 and "Traceback" not in stderr, stderr
    line = next(ln for ln in stderr.splitlines() if "instead" in ln)
    elsewhere = line.split("wrote ")[1].split("/report.json")[0]
    try:
        assert json.load(open(os.path.join(elsewhere, "report.json")))["outcome"] == "ok"
    finally:
        import shutil
        shutil.rmtree(elsewhere)


def test_same_out_for_two_concurrent_runs_is_refused(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([*GMPSIM, "run", "steady", "--out", str(out), "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (out / ".gmpsim.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = gmpsim("run", "steady", out_dir=out)
        assert r.code == 2 and "another gmpsim run is writing there" in r.stderr, r.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(30)


def test_metrics_port_taken_after_the_check_is_one_line(tmp_path):
    """Two runs racing for one --metrics-port: the loser says so (exit 2), nothing left behind."""
    port = _free_port()
    holder = subprocess.Popen([*GMPSIM, "run", "steady", "--metrics-port", str(port), "--out",
                               str(tmp_path / "a"), "--no-progress"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        r = gmpsim("run", "steady", "--metrics-port", str(port), out_dir=tmp_path / "b")
        assert r.code == 2 and "Traceback" not in r.stderr and "metrics-port" in r.stderr, r.stderr
    finally:
        holder.send_signal(signal.SIGINT)
        holder.wait(30)


def test_livelock_on_short_compute_is_gone(tmp_path):
    """Ops shorter than a poll's 1 ms: the goroutines still answer sysmon's preemption (3 on 2 Ps,
    each 4 s of 0.5 ms ops, lost_after 2 s): none is declared lost, the run ends ok."""
    r = gmpsim("run", "steady", "--set", 'programs.main.ops=[["go", "w", 2], ["repeat", 8000, [["run", 5]]], ["wait"]]',
               "--set", 'programs.w.ops=[["repeat", 8000, [["run", 5]]]]', "--set", "time_limit_s=30",
               "--set", "gomaxprocs=2", out_dir=tmp_path / "run")
    assert r.code == 0, r.stderr + r.stdout
    assert r.report["goroutines"]["lost"] == 0 and r.report["ms"]["died"] == 0
    assert "lost: no answer to preemption" not in (tmp_path / "run" / "gmpsim.log").read_text()


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.45, 0.6])
def test_sigterm_at_start_up_leaves_nothing(tmp_path, delay):
    """SIGTERM while the agent is being forked or before its hello is handled: exit 3 quickly, no
    segment left, and the report says so truly."""
    out = tmp_path / "run"
    before = {n for n in os.listdir("/dev/shm") if n.startswith("gmpsim-")}
    p = subprocess.Popen([*GMPSIM, "run", "steady", "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert time.monotonic() - t0 < 8, "start-up SIGTERM waited for the agent's 10 s"
    # -15: the signal came before the coordinator's handler (nothing made yet); 3: interrupted
    assert p.returncode in (3, -signal.SIGTERM), p.returncode
    left = {n for n in os.listdir("/dev/shm") if n.startswith("gmpsim-")} - before
    left = {n for n in left if owner_alive(n) is False or n.split("-")[1].startswith(str(p.pid) + "_")}
    assert not left
    if (out / "report.json").exists():
        assert json.load(open(out / "report.json"))["leaks"]["shm_segments"] == 0


def test_gmpsim_clean_removes_what_dead_owners_left(tmp_path):
    """Names carry their owner (pid.start): a dead owner's segment and run dir go, a live one's stay,
    a name that does not say is left and counted as unknown."""
    dead = subprocess.Popen([sys.executable, "-c", "from protocol.owner import new_run_id; print(new_run_id())"],
                            stdout=subprocess.PIPE, text=True)
    dead_run = dead.communicate()[0].strip()
    dead_shm = os.path.join("/dev/shm", arena_name(dead_run, "local"))
    open(dead_shm, "w").close()
    dead_dir = f"/tmp/gmpsim-{dead_run}_x"
    os.makedirs(dead_dir)
    live_shm = os.path.join("/dev/shm", arena_name(new_run_id(), "local"))
    open(live_shm, "w").close()
    live_dir = make_rundir()
    try:
        r = gmpsim("clean")
        assert r.code == 0, r.stderr
        assert f"removed {dead_shm}" in r.stdout and f"removed {dead_dir}" in r.stdout
        assert not os.path.exists(dead_shm) and not os.path.exists(dead_dir)
        assert os.path.exists(live_shm) and os.path.exists(live_dir)
        assert "whose owner is unknown" in r.stdout
    finally:
        for path in (dead_shm, live_shm):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(live_dir)
        if os.path.exists(dead_dir):
            os.rmdir(dead_dir)


def test_a_run_removes_what_a_sigkilled_run_left(tmp_path):
    """timeout -s KILL on the whole group leaves the arena and the run dir: the next run removes them."""
    p = subprocess.Popen([*GMPSIM, "run", "steady", "--out", str(tmp_path / "a"), "--no-progress"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    def mine():
        return [n for n in os.listdir("/dev/shm") if n.startswith(f"gmpsim-{p.pid}_")]
    while not mine() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    time.sleep(0.3)
    left = mine()
    assert left, "the killed run left no arena to clean (the test could not fail)"
    r = gmpsim("run", "steady", *TINY, out_dir=tmp_path / "b")
    assert r.code == 0, r.stderr
    assert not mine()
    assert not [d for d in os.listdir("/tmp") if d.startswith(f"gmpsim-{p.pid}_")]


def test_owner_names_round_trip():
    run = new_run_id()
    assert owner_alive(arena_name(run, "h")) is True
    assert owner_alive("gmpsim-abc-local") is None
    assert owner_alive("gmpsim-1_1_x-local") is False
    assert clean(shm_dir="/nonexistent", tmp_dir="/nonexistent") == {"removed": [], "alive": [], "unknown": []}


def test_deleted_ipc_socket_stops_the_run_with_a_message(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([*GMPSIM, "run", "steady", "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        socks = []
        while not socks and time.monotonic() < deadline:
            socks = [os.path.join("/tmp", d, "sched.sock") for d in os.listdir("/tmp")
                     if d.startswith(f"gmpsim-{p.pid}_") and os.path.exists(os.path.join("/tmp", d, "sched.sock"))]
            time.sleep(0.05)
        assert socks
        time.sleep(0.5)
        os.unlink(socks[0])
        stdout, stderr = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 3, stderr[-2000:]
    assert "was removed: new Ms cannot connect" in stdout
    rep = json.load(open(out / "report.json"))
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}


def test_kill_m_at_the_moment_of_an_agent_restart_is_carried_out(tmp_path):
    """kill-template and kill-m at the same Go time: the kill order sent to the dying agent reaches
    its successor; the fault is detected on its own victim, and the restart is in the report."""
    r = gmpsim("run", "steady", "--fault", "kill-template:at=20ms", "--fault", "kill-m:at=20ms,target=random:running",
               out_dir=tmp_path / "run")
    assert r.code == 0, r.stderr[-2000:] + r.stdout
    rep = r.report
    (kill,) = [f for f in rep["faults"] if f["kind"] == "kill-m"]
    assert kill["victim"] is not None and kill["detected_ms"] is not None, kill
    assert any(d["m"] == kill["victim"] for d in rep["deaths"])
    assert len(rep["agent_restarts"]) == 1 and rep["agent_restarts"][0]["hello"]


def test_ctrl_c_storm_never_loses_the_report(tmp_path):
    """Ctrl-C again and again, through the run's end and the drawing of threads.png: exit 3, no
    traceback, report.json written."""
    out = tmp_path / "run"
    p = subprocess.Popen([*GMPSIM, "run", "steady", *TINY, "--set", 'programs.main.ops=[["sleep", 100000]]',
                          "--out", str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while "joined" not in ((out / "gmpsim.log").read_text() if (out / "gmpsim.log").exists() else "") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = 0
    while p.poll() is None and time.monotonic() < deadline + 30:
        p.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.02)
    stdout, stderr = p.communicate(timeout=30)
    assert sent >= 2
    assert p.returncode == 3 and "Traceback" not in stderr, stderr[-2000:]
    assert json.load(open(out / "report.json"))["outcome"] == "aborted"


def test_shm_room_says_when_dev_shm_is_full(tmp_path):
    """/dev/shm full at start: one line before anything is forked (a 64 KiB tmpfs stands in for it)."""
    from coordinator.commands.run import shm_room
    mnt = tmp_path / "shm"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert shm_room(str(mnt)).endswith("is full (65536 bytes free): no room for the g0 stack arena")
        assert shm_room("/dev/shm") is None
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_sigterm_works_with_the_busiest_fault_plan_allowed(tmp_path):
    """The shortest period allowed with a tiny probability keeps the planner busiest: SIGTERM still
    ends the run at once (exit 3, report written)."""
    out = tmp_path / "run"
    p = subprocess.Popen([*GMPSIM, "run", "steady", "--fault", "kill-m:every=1us,p=0.0000001", "--out", str(out),
                          "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while "joined" not in ((out / "gmpsim.log").read_text() if (out / "gmpsim.log").exists() else "") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 3 and time.monotonic() - t0 < 10, stderr[-2000:]
    assert json.load(open(out / "report.json"))["outcome"] == "aborted"
