"""gmpsim across hosts, for real: the coordinator and two host agents each in their own network
namespace (tests/netlab.py), talking CURVE over TCP on a lab-only /24. A scenario runs across both
hosts; a host cut off (its link down) for longer than the heartbeat timeout is fenced, its
goroutines requeued, and it rejoins as a fresh host once healed; a peer without the right key never
gets in. Also the other order of a cut: the agent gives up before the coordinator does. Needs root
and iproute2 (skipped otherwise). The whole file takes ~40 s."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from coordinator.shell.procfs import title
from protocol.titles import is_m_title
from tests.netlab import lab  # noqa: F401  (the fixture)

pytestmark = pytest.mark.multihost

PORT = 7070
GMPSIM = [sys.executable, "-m", "coordinator.cli"]


# --- helpers ------------------------------------------------------------------------------------------

def _start(lab, ns: str, argv: list[str], tmp_path, tag: str):
    """argv in namespace ns, its stdout and stderr in tmp_path/<tag>.stdout|.stderr."""
    with open(tmp_path / f"{tag}.stdout", "w") as out, open(tmp_path / f"{tag}.stderr", "w") as err:
        p = lab.run(ns, argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    p.tag = tag
    return p


def start_coordinator(lab, tmp_path, scenario: str, hosts: int, keys, *extra: str):
    out = tmp_path / "coord-out"
    argv = [*GMPSIM, "coordinator", "--listen", f"tcp://{lab.addr(lab.C)}:{PORT}", scenario,
            "--hosts", str(hosts), "--keys", str(keys), "--out", str(out), "--no-progress", *extra]
    p = _start(lab, lab.C, argv, tmp_path, "coord")
    p.out = out
    return p


def start_agent(lab, tmp_path, host: str, keys, name: str | None = None):
    name = name or host
    argv = [*GMPSIM, "agent", "--connect", f"tcp://{lab.addr(lab.C)}:{PORT}", "--name", name, "--keys", str(keys)]
    return _start(lab, lab.hosts[host], argv, tmp_path, f"agent-{name}")


def finish(p, tmp_path, timeout: float) -> int:
    """The process's exit code within timeout (else the test fails, showing what it said)."""
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{p.tag} still running after {timeout:g}s:\n{said(p, tmp_path)}")


def said(p, tmp_path) -> str:
    text = ""
    for stream in ("stdout", "stderr"):
        path = tmp_path / f"{p.tag}.{stream}"
        if path.exists():
            text += f"--- {p.tag} {stream}\n{path.read_text()[-3000:]}\n"
    return text


def report_of(p) -> dict:
    with open(p.out / "report.json") as f:
        return json.load(f)


def coord_log(p) -> str:
    path = p.out / "gmpsim.log"
    return path.read_text() if path.exists() else ""


def log_time(log: str, pattern: str) -> float | None:
    """Wall time (epoch s) of the first log line matching pattern (the log's asctime, local time)."""
    for line in log.splitlines():
        if re.search(pattern, line):
            stamp = " ".join(line.split()[:2])
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def wait_until(cond, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    subprocess.run([*GMPSIM, "keys", str(d)], check=True, capture_output=True, timeout=30)
    return d


def assert_ok(rep: dict, coord) -> None:
    assert rep["outcome"] == "ok", rep["reason"]
    assert rep["goroutines"]["lost"] == 0, rep["goroutines"]
    assert rep["leaks"] == {"processes": 0, "shm_segments": 0}
    assert rep["invariants"]["violations"] == []
    # Each agent's g0 arena (named in the coordinator's log) is gone with it.
    arenas = set(re.findall(r"joined: arena (gmpsim-\S+),", coord_log(coord)))
    assert arenas and not [a for a in arenas if os.path.exists(os.path.join("/dev/shm", a))]


# --- a. a scenario across two hosts -------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("placement", ["least-loaded", "round-robin"])
def test_scenario_runs_across_two_hosts(lab, tmp_path, keys, placement):
    t0 = time.monotonic()
    coord = start_coordinator(lab, tmp_path, "syscall-storm", 2, keys, "--placement", placement)
    agents = [start_agent(lab, tmp_path, h, keys) for h in ("h1", "h2")]
    code = finish(coord, tmp_path, 30)
    for a in agents:  # the coordinator's shutdown ends them: exit 0, nothing left on their host
        assert finish(a, tmp_path, 10) == 0, said(a, tmp_path)
    assert code == 0, said(coord, tmp_path)
    rep = report_of(coord)
    assert_ok(rep, coord)
    hosts = {t["host"] for t in rep["threads"]}
    assert hosts == {"h1", "h2"}, rep["ms"]["per_host"]
    assert set(rep["ms"]["per_host"]) == {"h1", "h2"}
    assert all(v["created"] > 0 and v["died"] == 0 for v in rep["ms"]["per_host"].values())
    assert rep["deaths"] == []
    assert rep["protocol"]["bad_frames"] == 0
    assert "Ms per host" in open(tmp_path / "coord.stdout").read()
    for h in ("h1", "h2"):  # every M process of the host is gone with its agent
        assert lab.pids(lab.hosts[h]) == []
    print(f"\n{placement}: wall {rep['wall_s']:.2f} s (test {time.monotonic() - t0:.2f} s), "
          f"Ms per host {rep['ms']['per_host']}")


# --- b. a host cut off for longer than the heartbeat timeout, then healed -----------------------------

# Waves of goroutines that sleep, compute and block in syscalls: sysmon retakes their Ps, and the
# Ms its handoffp starts (sysmon has no process) go to the least-loaded host, so both hosts get Ms. Its
# length is paced by main's sleeps (40 ms of Go time, ~10 s at timescale 250), not by sysmon's
# retakes, which back off (as Go's do) while a cut-off host's Ms hold their Ps silently (steady
# stretches from ~60 to ~180 ms of Go time that way).
PARTITION_SCENARIO = """
name = "partition"
description = "waves of sleeping, computing and blocking goroutines on 4 Ps, ~10 s"
gomaxprocs = 4
timescale = 250.0
seed = 1
time_limit_s = 40.0
expect = "ok"

[programs.main]
ops = [["repeat", 40, [["go", "worker", 6], ["sleep", 1000]]], ["wait"]]

[programs.worker]
ops = [["sleep", 200], ["run", 100], ["syscall", 1500], ["run", 50]]
"""


def _ms_in(lab, ns: str) -> list[int]:
    """The Ms (`gmpsim M<id>`) alive in namespace ns: not its agent, forker, spares, nor the
    forker's rehearsal stand-in (counting processes counted those, and a test once went on before
    the host had joined)."""
    return [p for p in lab.pids(ns) if is_m_title(title(p))]


@pytest.mark.timeout(60)
def test_partitioned_host_is_fenced_and_rejoins_fresh(lab, tmp_path, keys):
    scenario = tmp_path / "partition.toml"
    scenario.write_text(PARTITION_SCENARIO)
    coord = start_coordinator(lab, tmp_path, str(scenario), 2, keys)
    agents = {h: start_agent(lab, tmp_path, h, keys) for h in ("h1", "h2")}
    h2 = lab.hosts["h2"]
    # Under way, with Ms on h2.
    wait_until(lambda: len(_ms_in(lab, h2)) >= 2, 20, "Ms on h2")
    ms_on_h2 = len(_ms_in(lab, h2))
    cut = time.time()
    lab.partition(h2)
    time.sleep(5.0)  # longer than the 3 s heartbeat timeout, on both sides
    healed = time.time()
    lab.heal(h2)
    code = finish(coord, tmp_path, 40)
    for a in agents.values():
        assert finish(a, tmp_path, 10) == 0, said(a, tmp_path)
    assert code == 0, said(coord, tmp_path) + said(agents["h2"], tmp_path)
    rep = report_of(coord)
    assert_ok(rep, coord)

    # The coordinator cut h2 off (3 s after it last heard from it, which was up to one 0.5 s
    # heartbeat before the link went down; before the heal) and fenced its Ms.
    log = coord_log(coord)
    detected = log_time(log, r"host h2 silent for [\d.]+s: cut off")
    assert detected is not None, log[-3000:]
    assert 2.4 <= detected - cut < healed - cut, (cut, detected, healed)
    # Every M h2 had is fenced: "lost: host h2 cut off", or already before that, if the coordinator
    # was waiting on it, "lost: no answer to WAKE / preemption within lost_after" (2 s). No M of h1
    # died; every death is one of h2's.
    threads = {t["m"]: t for t in rep["threads"]}
    deaths = rep["deaths"]
    whys = sorted({d["why"] for d in deaths})
    assert deaths and {threads[d["m"]]["host"] for d in deaths} == {"h2"}, deaths
    assert all(w == "lost: host h2 cut off" or w.startswith("lost: no answer to") for w in whys), whys
    fenced_at = max(d["time_ms"] for d in deaths)
    assert not [t for t in threads.values() if t["host"] == "h2" and "died" not in t
                and t["allocated_ms"] < fenced_at], "every M h2 had when cut off is fenced"
    assert rep["ms"]["per_host"]["h2"]["died"] == len(deaths)
    assert rep["ms"]["per_host"]["h1"]["died"] == 0

    # The agent noticed too (no heartbeat for 3 s), ended its Ms and rejoined as a fresh host.
    agent_said = (tmp_path / "agent-h2.stderr").read_text()
    agent_noticed = log_time(agent_said, r"cut off from the coordinator for")
    assert agent_noticed is not None and 2.4 <= agent_noticed - cut < healed - cut, agent_said[-2000:]
    rejoined = log_time(log, r"host h2 rejoined as a fresh host")
    assert rejoined is not None and rejoined > healed, log[-3000:]
    # h2 is a host again (schedtrace's HOSTS line lists the hosts new Ms may go to).
    hosts_lines = [ln for ln in (coord.out / "schedtrace.log").read_text().splitlines() if ln.startswith("HOSTS")]
    assert "h2=" in hosts_lines[-1], hosts_lines[-1]
    print(f"\nMs on h2 when cut: {ms_on_h2}; cut off by the coordinator {detected - cut:.2f} s and by the "
          f"agent {agent_noticed - cut:.2f} s after the link went down; rejoined {rejoined - healed:.2f} s "
          f"after the heal; fenced Ms {len(deaths)} ({'; '.join(whys)}), goroutines requeued "
          f"{rep['goroutines']['requeued']}; Ms per host {rep['ms']['per_host']}; wall {rep['wall_s']:.2f} s")


@pytest.mark.timeout(60)
def test_agent_that_gives_up_first_is_taken_back_fresh(lab, tmp_path, keys):
    """The other order: h2's agent stops hearing the coordinator for its 3 s while the coordinator
    still hears h2. The coordinator is stopped (SIGSTOP) for 2.2 s, so that h1's agent, whose last
    heartbeat may have come up to 0.5 s before, stays under its 3 s; h2's link goes down for the last
    0.4 s of the stop and 1.2 s after it, so the heartbeats the coordinator sends as it resumes cannot
    reach h2 (silent at least 3.4 s); h2's own heartbeats, sent before its link went down, wait in the
    coordinator's socket. The agent ends its
    Ms and says hello again; the coordinator, which has not cut h2 off, must cut it off then and take
    it back as a fresh host (not ignore the hello as a resend: h2 would stay unwelcomed, its Ms gone
    without a word)."""
    scenario = tmp_path / "partition.toml"
    scenario.write_text(PARTITION_SCENARIO)
    coord = start_coordinator(lab, tmp_path, str(scenario), 2, keys)
    agents = {h: start_agent(lab, tmp_path, h, keys) for h in ("h1", "h2")}
    h2 = lab.hosts["h2"]
    wait_until(lambda: len(_ms_in(lab, h2)) >= 2, 20, "Ms on h2")
    os.kill(coord.pid, signal.SIGSTOP)
    try:
        time.sleep(1.8)
        lab.partition(h2)
        time.sleep(0.4)
    finally:
        os.kill(coord.pid, signal.SIGCONT)
    time.sleep(1.2)
    lab.heal(h2)
    code = finish(coord, tmp_path, 40)
    for a in agents.values():
        assert finish(a, tmp_path, 10) == 0, said(a, tmp_path)
    assert code == 0, said(coord, tmp_path) + said(agents["h2"], tmp_path)
    rep = report_of(coord)
    assert_ok(rep, coord)
    assert "cut off from the coordinator" in (tmp_path / "agent-h2.stderr").read_text()
    log = coord_log(coord)
    cut = re.search(r"host h2 (said hello again|silent for [\d.]+s).*: cut off", log)
    assert cut, log[-3000:]
    assert "host h2 rejoined as a fresh host" in log, log[-3000:]
    threads = {t["m"]: t for t in rep["threads"]}
    assert rep["deaths"] and {threads[d["m"]]["host"] for d in rep["deaths"]} == {"h2"}
    assert all(d["why"].startswith("lost:") for d in rep["deaths"])
    print(f"\nh2 cut off by the coordinator: {cut[1]!r}; deaths {sorted({d['why'] for d in rep['deaths']})}; "
          f"wall {rep['wall_s']:.2f} s")


# --- c. peers without the right key never get in ------------------------------------------------------

PROBE = r"""
import json, os, socket, sys, time
import zmq
from protocol.codec import encode
addr, port = sys.argv[1], int(sys.argv[2])
out = {}
# 1. a plain ZeroMQ peer (NULL mechanism, no CURVE) posing as a host agent
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.ROUTING_ID, b"agent:intruder/%d" % os.getpid())
s.connect(f"tcp://{addr}:{port}")
for _ in range(3):
    s.send(encode("agent_hello", 1, os.getpid(), host="intruder", pid=os.getpid(), arena="x", slot_size=8192, slots=1))
out["zmq_replies"] = 1 if s.poll(1500) else 0
s.close()
ctx.term()
# 2. a raw TCP peer sending garbage
c = socket.create_connection((addr, port), timeout=2)
c.settimeout(1.5)
got = b""
try:
    c.sendall(os.urandom(4096))
    while True:
        chunk = c.recv(65536)
        if not chunk:
            out["closed"] = True
            break
        got += chunk
except (socket.timeout, ConnectionResetError, BrokenPipeError) as e:
    out["closed"] = not isinstance(e, socket.timeout)
out["raw_reply"] = got.hex()
# 3. a CURVE client that knows the server's key but has a key of its own the coordinator does not
#    accept: the handshake gets to the ZAP handler, which says no (an auth failure, not a timeout).
if len(sys.argv) > 3:
    from zmq.utils.monitor import recv_monitor_message
    from protocol.transport import curve_client_keys
    keys = curve_client_keys(sys.argv[3])
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_secretkey, s.curve_publickey, s.curve_serverkey = keys.secret, keys.public, keys.server_public
    mon = s.get_monitor_socket()
    s.connect(f"tcp://{addr}:{port}")
    events, deadline = [], time.monotonic() + 3
    while time.monotonic() < deadline and zmq.EVENT_HANDSHAKE_FAILED_AUTH not in events:
        if mon.poll(200):
            ev = recv_monitor_message(mon)
            events.append(ev["event"])
            if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                out["auth_status"] = ev["value"]
    out["auth_failed"] = zmq.EVENT_HANDSHAKE_FAILED_AUTH in events
    s.disable_monitor()
    mon.close()
    s.close()
    ctx.term()
print(json.dumps(out))
"""


def _other_keys(tmp_path, name: str, server_key_from=None):
    d = tmp_path / name
    subprocess.run([*GMPSIM, "keys", str(d)], check=True, capture_output=True, timeout=30)
    if server_key_from is not None:  # the right server key, a wrong client key: refused by ZAP
        shutil.copy(server_key_from / "coordinator.key", d / "coordinator.key")
    return d


@pytest.mark.timeout(60)
def test_agent_without_the_right_key_is_refused(lab, tmp_path, keys):
    other = _other_keys(tmp_path, "other-keys")  # a whole other key set
    wrong_client = _other_keys(tmp_path, "wrong-client", server_key_from=keys)
    coord = start_coordinator(lab, tmp_path, "syscall-storm", 1, keys)
    bad_started = time.monotonic()
    bad = [start_agent(lab, tmp_path, "h2", other, name="h2"),
           start_agent(lab, tmp_path, "h2", wrong_client, name="h2x")]
    probe = lab.run(lab.hosts["h2"], [sys.executable, "-c", PROBE, lab.addr(lab.C), str(PORT), str(wrong_client)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pout, perr = probe.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the probe hung")
    assert probe.returncode == 0, perr
    res = json.loads(pout)
    # The plain ZeroMQ peer gets nothing; the raw peer at most the ZMTP greeting (a CURVE server's),
    # and then the connection is closed.
    assert res["zmq_replies"] == 0
    raw = bytes.fromhex(res["raw_reply"])
    assert len(raw) <= 64 and (not raw or raw[0] == 0xFF), raw
    if len(raw) >= 32:
        assert raw[12:17] == b"CURVE", raw
    assert res["auth_failed"] and res["auth_status"] == 400, res  # ZAP's "no access"
    print(f"\nprobe: {res}")
    # Give the bad agents time to say hello a few times (every 1 s) before looking.
    time.sleep(max(0.0, bad_started + 3.0 - time.monotonic()))
    assert coord.poll() is None, "with --hosts 1 and no good agent the coordinator must keep waiting"
    assert all(b.poll() is None for b in bad), "a refused agent keeps trying (until its give-up time)"
    assert "joined" not in coord_log(coord)

    good = start_agent(lab, tmp_path, "h1", keys)
    code = finish(coord, tmp_path, 30)
    assert finish(good, tmp_path, 10) == 0, said(good, tmp_path)
    assert code == 0, said(coord, tmp_path)
    rep = report_of(coord)
    assert_ok(rep, coord)
    assert {t["host"] for t in rep["threads"]} == {"h1"}
    assert set(rep["ms"]["per_host"]) == {"h1"}
    assert rep["protocol"]["bad_frames"] == 0, "nothing unauthenticated reaches the protocol layer"
    log = coord_log(coord)
    assert re.findall(r"host agent (\S+) \(pid \d+\) joined", log) == ["h1"]
    assert not re.search(r"intruder|\bh2x?\b", log)
    assert not re.search(r"\bh2x?\b", open(tmp_path / "coord.stdout").read())
    # The refused agents were never welcomed: no M was forked on h2. They end on SIGTERM, cleanly.
    for b in bad:
        assert b.poll() is None
        b.terminate()
        assert finish(b, tmp_path, 10) == 0, said(b, tmp_path)
    assert lab.pids(lab.hosts["h2"]) == []
