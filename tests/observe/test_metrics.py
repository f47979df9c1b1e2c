"""coordinator/observe/metrics.py: the Prometheus endpoint, fed by a scripted run of the pure core (tests/world.py
plays the processes) and scraped over real HTTP on 127.0.0.1; then a real `gmpsim run --metrics-port`
scraped while it runs."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from coordinator.commands.run import check_port
from coordinator.observe.metrics import MetricsExporter
from coordinator.runtime import effects as fx
from coordinator.runtime.sched import _Psyscall
from coordinator.scenario import load
from coordinator.shell.loop import touched_ms
from tests.world import World
from tests.world_procs import RUNNING

WALL0 = 1000.0
TIMESCALE = 100  # wall µs per Go µs, for the fake wall clock of a scripted run


def observed_world(name: str, observers, **overrides) -> World:
    """A built-in scenario's world whose every step is shown to `observers`, as loop.py shows it:
    started() after schedinit, after_step(None, schedinit's effects), then after_step per event.
    The wall clock is fake: WALL0 + Go time x TIMESCALE (so the world's 50 µs fork is 5 ms)."""
    sc = load(name, [f"{k}={v}" for k, v in overrides.items()])
    w = World(sc.programs, compiled=True, gomaxprocs=sc.gomaxprocs, seed=sc.seed, check=False)
    w.steps = 0

    def wall() -> float:
        return WALL0 + w.now * TIMESCALE / 1e9

    deliver = w.deliver

    def observed(ev, reply_state=RUNNING):
        effects = deliver(ev, reply_state)
        w.steps += 1
        touched = touched_ms(ev, effects)
        for o in observers:
            o.after_step(w.sched, ev, effects, touched, w.now, wall())
        return effects

    w.deliver = observed
    w.wall = wall
    for o in observers:
        o.started(w.sched, 0, wall())
    for o in observers:
        o.after_step(w.sched, None, w.history[0][2], touched_ms(None, w.history[0][2]), 0, wall())
    return w


def scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of every sample at url."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_scripted_run_scraped_over_http():
    ex = MetricsExporter(port=0)  # any free port: no race with another test
    try:
        w = observed_world("syscall-storm", [ex])
        assert ex.port and ex.url == f"http://127.0.0.1:{ex.port}/metrics"
        first = scrape(ex.url)
        assert value(first, "gmpsim_threads") == 2  # m0 and sysmon, as Go's threads=
        assert value(first, "gmpsim_goroutines_live") == 1
        # the run, stopped midway while the syscalls hold the Ps: the gauges are the state now
        w.run(until_ns=3_000_000)
        s, sched = scrape(ex.url), w.sched
        assert value(s, "gmpsim_threads") == sched.mcount() > 2
        assert value(s, "gmpsim_idlethreads") == sched.nmidle
        assert value(s, "gmpsim_spinningthreads") == sched.nmspinning
        assert value(s, "gmpsim_npidle") == sched.npidle
        assert value(s, "gmpsim_psyscall") == sum(p.status == _Psyscall for p in sched.allp)
        assert value(s, "gmpsim_runqueue") == sched.runqsize
        w.run()
        assert w.outcome() == "ok"
        ex.fault("kill", 3, w.now)
        ex.fault("kill", 5, w.now)
        ex.fault("drop", 2, w.now)
        s, stats = scrape(ex.url), w.sched.stats
        assert value(s, "gmpsim_goroutines_created_total") == stats["goroutines_created"] == 41
        assert value(s, "gmpsim_goroutines_completed_total") == 41
        assert value(s, "gmpsim_goroutines_live") == 0
        assert value(s, "gmpsim_newm_total") == stats["newm"] > 0
        assert value(s, "gmpsim_mget_total") == stats["mget"]
        assert value(s, "gmpsim_retake_total") == stats["retake"] > 0
        callers = {k[7:]: v for k, v in stats.items() if k.startswith("startm.")}
        assert callers and "retake" in callers
        for caller, n in callers.items():
            assert value(s, "gmpsim_startm_total", caller=caller) == n
        assert sum(callers.values()) == stats["startm"]
        assert value(s, "gmpsim_faults_total", kind="kill") == 2
        assert value(s, "gmpsim_faults_total", kind="drop") == 1
        # every forked M said hello: one observation each, the world's 50 µs fork = 5 ms of fake wall
        hellos = sum(1 for ev, _ in ((h[1], h[2]) for h in w.history) if ev.get("t") == "hello")
        forks = sum(isinstance(e, fx.Fork) for h in w.history for e in h[2])
        assert hellos == forks == stats["ms_created"]
        assert value(s, "gmpsim_m_creation_seconds_count") == hellos
        assert value(s, "gmpsim_m_creation_seconds_bucket", le="0.002") == 0
        assert value(s, "gmpsim_m_creation_seconds_bucket", le="0.01") == hellos
        assert value(s, "gmpsim_m_creation_seconds_sum") == pytest.approx(0.005 * hellos)
        ex.finished(w.sched, None, w.now, w.wall())
        assert ex.server is None and refused(ex.port)
    finally:
        ex.close()


def test_own_registry_not_the_global_one():
    a, b = MetricsExporter(), MetricsExporter()  # two at once: no "Duplicated timeseries"
    assert a.registry is not REGISTRY and a.registry is not b.registry
    assert "gmpsim_threads" not in REGISTRY._names_to_collectors
    a.h_m_creation.observe(0.003)
    assert a.registry.get_sample_value("gmpsim_m_creation_seconds_count") == 1
    assert b.registry.get_sample_value("gmpsim_m_creation_seconds_count") == 0
    a.close()  # never started: nothing to close, no error


def test_close_is_quick_and_idempotent():
    ex = MetricsExporter(port=0)
    ex.start()
    port = ex.port
    assert scrape(ex.url)  # answers
    t = time.monotonic()
    ex.close()
    assert time.monotonic() - t < 0.4  # start_http_server's thread would take up to 0.5 s
    ex.close()
    assert refused(port)


def test_check_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            check_port(s.getsockname()[1], "127.0.0.1")
    check_port(0, "127.0.0.1")


def test_cli_rejects_a_bad_port():
    bad = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "--metrics-port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "65535" in bad.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "--metrics-port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2
    assert busy.stderr.startswith(f"gmpsim: --metrics-port {port} on 127.0.0.1: ")


@pytest.mark.processes
def test_cli_run_scraped_while_running(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    cmd = [sys.executable, "-m", "coordinator.cli", "run", "steady", "--set", "timescale=50",
           "--metrics-port", str(port), "--out", str(tmp_path / "out")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = [], time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            try:
                seen.append(scrape(url))
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert f"gmpsim: metrics on {url}" in err
    assert "outcome          ok" in out
    assert seen, "the endpoint never answered during the run"
    threads = [value(s, "gmpsim_threads") for s in seen]
    assert max(threads) > 2  # the run scaled out while we watched
    done = [value(s, "gmpsim_goroutines_completed_total") for s in seen]
    assert done == sorted(done)  # a counter never goes back
    assert refused(port)  # the server is gone with the run
