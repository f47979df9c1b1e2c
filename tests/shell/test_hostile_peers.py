"""Hostile peers (issue 13): forged frames, squatted identities, a coordinator nobody answers and a
remote agent SIGKILLed change nothing they should not, and say what happened.

The tests use real forks, real ZeroMQ sockets on loopback and real shared memory; the conftest
fixture checks that nothing is left behind. Hostile input: test_hostile.py; a hostile machine:
test_hostile_machine.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import zmq

from protocol.codec import decode, encode
from tests.gmpsim_cli import gmpsim
from tests.shell.hostile_cli import GMPSIM, _free_port


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
        # a forged spare: a message before any hello (a bad frame, always), then a hello for M1,
        # which has started by now or is not its to take (a bad frame, or refused as stale)
        _, spare = _forger(port, b"spare:a/999999", curve)
        spare.send(encode("heartbeat", 1, 1, m=1))
        spare.send(encode("hello", 2, 1, m=1, pid=999999, host="a", started=time.monotonic(), taint=""))
        # forged goodbyes all along, through the coordinator's shutdown (collect_byes)
        deadline = time.monotonic() + 90
        while coord.poll() is None and time.monotonic() < deadline:
            seq += 1
            s.send(_raw("bye", seq, 424242, host="a", processes=999, shm_segments=999))
            time.sleep(0.02)
        stdout, stderr = coord.communicate(timeout=30)
        agent.wait(30)
        m.close(0)
        spare.close(0)
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
    assert rep["protocol"]["bad_frames"] >= 3  # the two oversized hellos, the spare's word before its hello
    assert ("warning: --insecure" in stderr) == (mode == "insecure")


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
    the run ends ok. No spares: a spare connects under its own name (spare:<host>/<pid>), which a
    squatter would have to guess; the rule for a hello that never comes is the same."""
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
                              "--out", str(out), "--no-progress", "--set", "timescale=50", "--set", "spare_ms=0"],
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
