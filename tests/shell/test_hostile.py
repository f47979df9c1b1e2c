"""Hostile input, hostile peers, hostile machine (issue 13): every promise holds.

The table is input -> exit code and the one line it must print (a regex searched in stderr); each
row runs the real `gmpsim` command. The process tests below use real forks, real ZeroMQ sockets on
loopback and real shared memory; the conftest fixture checks that nothing is left behind.
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
import zmq

from protocol.codec import decode, encode
from protocol.owner import arena_name, clean, new_run_id, owner_alive
from protocol.transport import make_rundir
from tests.gmpsim_cli import gmpsim

GMPSIM = [sys.executable, "-m", "coordinator.cli"]
TINY = ["--set", 'programs.main.ops=[["run", 10]]', "--set", "timescale=10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files(tmp_path):
    """Hostile files for the table: built once per test in tmp_path."""
    (tmp_path / "plain").write_text("x")
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "big.toml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    (tmp_path / "nested.toml").write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "nul.toml").write_text('name = "a\\u0000b"\n[programs.main]\nops = [["run", 1]]\n')
    (tmp_path / "abs.toml").write_text('name = "/tmp/abs"\n[programs.main]\nops = [["run", 1]]\n')
    (tmp_path / "go.toml").write_text('[programs.main]\nops = [["go", "w", 200000]]\n[programs.w]\nops = [["run", 1]]\n')
    keys = tmp_path / "garbage-keys"
    keys.mkdir()
    for name in ("coordinator.key", "coordinator.key_secret", "agent.key", "agent.key_secret"):
        (keys / name).write_bytes(os.urandom(300))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "report.json").mkdir()  # (a read-only file would not stop root)
    return tmp_path


# (argv, exit code, the line stderr must contain); {t} is the test's tmp_path
CASES = [
    # --out
    (["run", "steady", "--out", "{t}/plain"], 2, r"--out .*plain: not a directory"),
    (["run", "steady", "--out", "{t}/plain/sub"], 2, r"--out .*plain/sub: Not a directory"),
    (["run", "steady", "--out", "/proc/gmpsim"], 2, r"--out /proc/gmpsim: "),
    (["run", "steady", "--out", "/sys/gmpsim"], 2, r"--out /sys/gmpsim: "),
    (["run", "steady", "--out", "/dev/null"], 2, r"--out /dev/null: not a directory"),
    (["run", "steady", "--out", "{t}/" + "x" * 300], 2, r"File name too long"),
    (["run", "steady", "--out", ""], 2, r"--out '': expected a directory"),
    (["run", "steady", "--out", "{t}/ro"], 2, r"report.json there cannot be overwritten"),
    # scenarios
    (["run", "{t}/fifo.toml"], 2, r"fifo.toml: not a regular file"),
    (["run", "{t}/big.toml"], 2, r"big.toml: larger than 1 MiB"),
    (["run", "{t}/nested.toml"], 2, r"nested.toml: invalid TOML: .*nested too deeply"),
    (["run", "steady", "--set", "programs.main.ops=" + "[" * 3000 + "]" * 3000], 2, r"--set .*nested too deeply"),
    (["run", "{t}/nul.toml"], 2, r"nul.toml: name: expected printable characters only"),
    (["run", "{t}/go.toml"], 2, r"expected a whole number of goroutines from 1 to 100000, got 200000"),
    (["run", "steady", "--set", "timescale=1e-300"], 2, r"--set timescale=1e-300: timescale: expected wall µs per Go µs"),
    (["run", "steady", "--set", "timescale=1e300"], 2, r"timescale: expected wall µs per Go µs"),
    (["run", "steady", "--set", "faults.kind=1"], 2, r"^gmpsim: --set faults.kind=1: faults: "),
    (["run", "steady", "--set", "maxmcount=100000000"], 2, r"maxmcount: expected an integer from 1 to 100000"),
    (["run", "steady", "--set", "name=a\tb"], 2, r"name: expected printable characters only"),
    # faults
    (["run", "steady", "--fault", "kill-m:every=0.000001us"], 2, r"every: expected a period of at least 0.001ms"),
    (["run", "steady", "--fault", "kill-m:every=1ms,count=99999999"], 2, r"count: expected at most 1000000"),
    (["run", "steady", "--fault", "kill-m:at=99999999999999s"], 2, r"at: expected at most"),
    (["run", "steady", "--fault", "stop-m:every=1ms,duration=99999999999s"], 2, r"duration: expected at most"),
    # --listen / --connect / keys / names
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:99999", "--insecure"], 2, r"expected a port from 1 to 65535, got 99999"),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1", "--insecure"], 2, r"--listen 'tcp://127.0.0.1': expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "tcp://no such:7", "--insecure"], 2, r"expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "udp://1.2.3.4:5", "--insecure"], 2, r"expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "tcp://0.0.0.0:7070", "--insecure"], 2, r"not a loopback address.*--insecure-anywhere"),
    (["coordinator", "steady", "--listen", "tcp://*:7070", "--insecure"], 2, r"not a loopback address"),
    (["coordinator", "steady", "--listen", "tcp://nosuch.invalid:7070", "--insecure", "--insecure-anywhere"], 2,
     r"^gmpsim: --listen tcp://nosuch.invalid:7070: "),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:7070", "--insecure-anywhere", "--keys", "{t}"], 2, r"--insecure-anywhere goes with --insecure"),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:7070", "--keys", "{t}/garbage-keys"], 2, r"is not a key file made by `gmpsim keys`"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a", "--keys", "{t}/garbage-keys"], 2, r"is not a key file made by `gmpsim keys`"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "x" * 300, "--insecure"], 2, r"--name 'x+': expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "", "--insecure"], 2, r"--name '': expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a/b", "--insecure"], 2, r"expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:0", "--name", "a", "--insecure"], 2, r"expected a port from 1 to 65535"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a", "--insecure", "--wait", "-1"], 2, r"--wait -1: expected seconds"),
    # plot
    (["plot", "{t}", "--out", "/proc/x.png"], 2, r"no trace.json"),
    (["run", "steady", "--metrics-port", "99999"], 2, r"expected a port from 0 to 65535"),
]


@pytest.mark.parametrize("argv,code,line", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_hostile_input_gets_one_line_and_exit_2(files, tmp_path, argv, code, line):
    import re
    args = [a.replace("{t}", str(files)) for a in argv]
    r = gmpsim(*args, timeout=60)
    assert r.code == code, (r.code, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert re.search(line, r.stderr, re.M), r.stderr[-2000:]
    assert len([ln for ln in r.stderr.splitlines()
                if ln.startswith("gmpsim:") and not ln.startswith("gmpsim: warning:")]) == 1, r.stderr


def test_scenario_name_cannot_escape_runs(tmp_path):
    """name = "/tmp/abs" or "../../x": the default output directory stays inside runs/."""
    (tmp_path / "esc.toml").write_text('name = "../../x/" \n[programs.main]\nops = [["run", 1]]\n')
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([*GMPSIM, "run", str(tmp_path / "esc.toml"), *TINY], cwd=work, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode == 0, p.stderr
    (run,) = os.listdir(work / "runs")
    assert run.startswith("_.._x_-") and (work / "runs" / run / "report.json").exists()
    assert sorted(os.listdir(work)) == ["runs"] and not (tmp_path / "x").exists()


def test_plot_out_under_proc_is_one_line(tmp_path):
    out = tmp_path / "run"
    r = gmpsim("run", "steady", *TINY, out_dir=out)
    assert r.code == 0, r.stderr
    p = gmpsim("plot", str(out), "--out", "/proc/gmpsim.png")
    assert p.code == 2 and "Traceback" not in p.stderr and p.stderr.startswith("gmpsim: "), p.stderr


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


def test_tiny_fault_period_is_refused_before_anything_starts(tmp_path):
    r = gmpsim("run", "steady", "--fault", "kill-m:every=0.000001us", out_dir=tmp_path / "run")
    assert r.code == 2 and "every:" in r.stderr


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


def test_agent_with_unreachable_coordinator_exits_2(tmp_path):
    port = _free_port()
    t0 = time.monotonic()
    r = gmpsim("agent", "--connect", f"tcp://127.0.0.1:{port}", "--name", "lonely", "--insecure", "--wait", "1.5")
    assert r.code == 2, r.stderr
    assert time.monotonic() - t0 < 20
    assert "no coordinator answered at" in r.stderr and "warning: --insecure" in r.stderr


# --- hostile peers ---------------------------------------------------------------------------------

def _raw(t: str, seq: int, epoch: int, **fields) -> bytes:
    """A frame as a hostile peer packs it: no check of ours on the way out."""
    import msgpack
    return msgpack.packb({"v": 1, "t": t, "seq": seq, "epoch": epoch, **fields})


def _forger(port: int, identity: bytes, curve=None):
    from protocol.transport import dealer
    ctx = zmq.Context()
    return ctx, dealer(ctx, f"tcp://127.0.0.1:{port}", identity, curve=curve)


def _run_forged(tmp_path, keys=None):
    """A coordinator and a real agent on loopback; a forger in this process (with the agent's key
    when keys is given) sends what an insecure network peer could."""
    port = _free_port()
    sec = ["--keys", str(keys)] if keys else ["--insecure"]
    out = tmp_path / "run"
    coord = subprocess.Popen([*GMPSIM, "coordinator", "steady", "--listen", f"tcp://127.0.0.1:{port}",
                              "--out", str(out), "--no-progress", "--set", "timescale=50", *sec],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = subprocess.Popen([*GMPSIM, "agent", "--connect", f"tcp://127.0.0.1:{port}", "--name", "a", *sec],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curve = None
    if keys:
        from protocol.transport import curve_client_keys
        curve = curve_client_keys(str(keys))
    ctx, s = _forger(port, b"agent:a/424242", curve)
    seq = 0
    try:
        deadline = time.monotonic() + 20
        while not (out / "gmpsim.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        while "joined" not in (out / "gmpsim.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # mid-run: huge sizes, then a forged hello for the live host, a forged bye, forged Ms
        for hello in (dict(slots=300_000_000, slot_size=8192), dict(slots=5, slot_size=1 << 40),
                      dict(slots=5, slot_size=8192)):
            seq += 1
            s.send(_raw("agent_hello", seq, 424242, host="a", pid=424242, arena="gmpsim-x", **hello))
        _, m = _forger(port, b"m1.1", curve)
        m.send(encode("goexit", 1, 1, m=1, g=1, pos={"pc": 99, "loops": [], "left": 0}))
        # forged goodbyes all along, through the coordinator's shutdown (collect_byes)
        deadline = time.monotonic() + 90
        while coord.poll() is None and time.monotonic() < deadline:
            seq += 1
            s.send(_raw("bye", seq, 424242, host="a", processes=999, shm_segments=999))
            time.sleep(0.02)
        stdout, stderr = coord.communicate(timeout=30)
        agent.wait(30)
        m.close(0)
    finally:
        for p in (coord, agent):
            if p.poll() is None:
                p.kill()
                p.wait()
        s.close(0)
        ctx.term()
    return coord.returncode, stdout, stderr, json.load(open(out / "report.json"))


@pytest.mark.parametrize("mode", ["insecure", "curve"])
def test_forged_peer_changes_nothing(tmp_path, mode):
    keys = None
    if mode == "curve":
        keys = tmp_path / "keys"
        assert gmpsim("keys", str(keys)).code == 0
    code, stdout, stderr, rep = _run_forged(tmp_path, keys)
    assert code == 0, stderr[-3000:]
    assert rep["outcome"] == "ok" and rep["goroutines"]["lost"] == 0 and rep["ms"]["died"] == 0
    assert rep["leaks"]["processes"] == 0 and rep["leaks"]["shm_segments"] == 0
    assert rep["ms"]["per_host"].keys() == {"a"}
    assert rep["protocol"]["bad_frames"] >= 2  # the two oversized hellos
    assert ("warning: --insecure" in stderr) == (mode == "insecure")


def test_owner_names_round_trip():
    run = new_run_id()
    assert owner_alive(arena_name(run, "h")) is True
    assert owner_alive("gmpsim-abc-local") is None
    assert owner_alive("gmpsim-1_1_x-local") is False
    assert clean(shm_dir="/nonexistent", tmp_dir="/nonexistent") == {"removed": [], "alive": [], "unknown": []}


def test_wire_refuses_sizes_beyond_the_run():
    from protocol.codec import ProtocolError
    from protocol.messages import MAX_SLOTS
    from protocol.ops import MAX_GO
    big = encode("agent_hello", 1, 1, host="a", pid=1, arena="x", slot_size=8192, slots=1)
    assert decode(big)["slots"] == 1
    import msgpack
    for field, value in (("slots", MAX_SLOTS + 1), ("slots", 300_000_000), ("slot_size", 1 << 40), ("pid", 0)):
        msg = msgpack.unpackb(big)
        msg[field] = value
        with pytest.raises(ProtocolError):
            decode(msgpack.packb(msg))
    with pytest.raises(ProtocolError):
        encode("newproc", 1, 1, m=1, g=1, pos={"pc": 0, "loops": [], "left": 0}, prog="w", n=MAX_GO + 1)


def test_squatted_m_identities_do_not_stall_silently(tmp_path):
    """--insecure: a peer takes the identities of Ms before they connect (the ROUTER refuses the
    real M then). Each such M is killed and forked again under a new incarnation, said in the log;
    the run ends ok."""
    port = _free_port()
    out = tmp_path / "run"
    ctx = zmq.Context()
    squatters, monitors = [], []
    for mid in range(2, 8):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, b"m%d.1" % mid)
        s.setsockopt(zmq.RECONNECT_IVL, 10)
        monitors.append(s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))
        s.connect(f"tcp://127.0.0.1:{port}")
        squatters.append(s)
    coord = subprocess.Popen([*GMPSIM, "coordinator", "steady", "--listen", f"tcp://127.0.0.1:{port}", "--insecure",
                              "--out", str(out), "--no-progress", "--set", "timescale=50"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        for mon in monitors:  # connected (and so holding the identity) before any M exists
            assert mon.poll(30_000), "a squatter never connected"
            mon.recv_multipart()
        for s in squatters:
            s.send(b"")
        agent = subprocess.Popen([*GMPSIM, "agent", "--connect", f"tcp://127.0.0.1:{port}", "--name", "a",
                                  "--insecure"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stdout, stderr = coord.communicate(timeout=120)
        agent.wait(30)
    finally:
        for p in (coord, agent):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for s in squatters:
            s.disable_monitor()
            s.close(0)
        for mon in monitors:
            mon.close(0)
        ctx.term()
    rep = json.load(open(out / "report.json"))
    assert coord.returncode == 0, stderr[-3000:]
    assert rep["goroutines"]["lost"] == 0
    assert rep["protocol"]["hello_missing"] >= 1, "no identity was squatted: the test could not fail"
    assert "never said hello" in (out / "gmpsim.log").read_text()


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


def test_sigkilled_remote_agent_leaks_are_unknown_then_cleaned(tmp_path):
    """A remote agent SIGKILLed: the report says its host's leftovers are unknown (not 0); the next
    agent started on that host removes the arena it left (its owner is dead)."""
    port = _free_port()
    out = tmp_path / "run"
    coord = subprocess.Popen([*GMPSIM, "coordinator", "steady", "--listen", f"tcp://127.0.0.1:{port}", "--insecure",
                              "--out", str(out), "--no-progress", "--set", "time_limit_s=8"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = subprocess.Popen([*GMPSIM, "agent", "--connect", f"tcp://127.0.0.1:{port}", "--name", "a", "--insecure"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        arena = []
        while not arena and time.monotonic() < deadline:
            arena = [n for n in os.listdir("/dev/shm") if n.startswith(f"gmpsim-{agent.pid}_")]
            time.sleep(0.05)
        assert arena
        time.sleep(1.0)
        agent.kill()
        agent.wait(10)
        try:
            stdout, stderr = coord.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("coordinator still running:\n" + (out / "gmpsim.log").read_text()[-3000:])
    finally:
        for p in (coord, agent):
            if p.poll() is None:
                p.kill()
                p.wait()
    rep = json.load(open(out / "report.json"))
    assert rep["leaks"]["unknown_hosts"] == ["a"], rep["leaks"]
    assert "unknown on a" in stdout
    # (Any gmpsim start may remove it first, a parallel suite's too: its owner is dead.)
    r = gmpsim("agent", "--connect", f"tcp://127.0.0.1:{_free_port()}", "--name", "a", "--insecure", "--wait", "0.5")
    assert r.code == 2
    assert not os.path.exists(os.path.join("/dev/shm", arena[0]))


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


def test_safe_name_keeps_the_file_system_safe():
    from coordinator.scenario import safe_name
    assert safe_name("/tmp/abs") == "_tmp_abs"
    assert safe_name("../../x") == "_.._x"
    assert safe_name("é" * 200) == "_"
    assert safe_name("...") == "scenario" and safe_name("steady") == "steady"
    assert len(safe_name("a" * 300)) == 64
