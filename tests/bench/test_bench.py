"""`gmpsim bench --quick --json` as a smoke test: it runs end to end and writes every floor, figure
and ratio. No threshold is asserted (these machines are noisy; the figures are ratios for a person to
read). Plus the bench's bad input and limits, which fail at once with one line."""
from __future__ import annotations

import json

import pytest

from coordinator.shell.procfs import PID_MAX, processes, read_int, title
from tests.gmpsim_cli import gmpsim

pytestmark = pytest.mark.processes


def test_bench_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    r = gmpsim("bench", "--quick", "--json", str(out), timeout=400)
    assert r.code == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    fl = res["floors"]
    for name in ("fork_hello", "template_fork", "zmq_one_way", "zmq_one_way_matched", "mp_forkserver", "mp_spawn"):
        assert fl[name]["n"] > 0 and fl[name]["p50_us"] > 0
    assert fl["template_fork"]["burst_per_s"] > 0 and fl["router_loop"]["events_per_s"] > 0
    assert res["gmpsim"]["outcome"] == "ok" and res["gmpsim"]["newm_to_mstart"]["n"] > 0
    assert res["gmpsim"]["newm_to_child"]["n"] == res["gmpsim"]["child_to_hello"]["n"] == res["gmpsim"]["newm_to_mstart"]["n"]
    assert res["pace"]["newm_to_child_p50_us"] > 0 and res["pace"]["child_to_hello_p50_us"] > 0
    assert res["throughput"]["outcome"] == "ok" and res["throughput"]["events_per_s"] > 0
    assert res["throughput_checked"]["invariant_checks"] is True and res["throughput_checked"]["trace"] is True
    assert res["throughput_checker"]["invariant_checks"] is True and res["throughput_checker"]["trace"] is False
    assert res["pace"]["outcome"] == "ok" and res["pace"]["threads_at_100ms"] > 2
    assert res["pace_slow"]["outcome"] == "ok" and res["pace_slow"]["timescale"] == 20
    cpu = res["pace_slow"]["cpu"]  # where the CPU went per M made: each kind of process had some
    assert cpu["ms_made"] > 10 and all(cpu["cpu_ms_per_m"][k] > 0 for k in ("forker", "M", "coordinator", "agent"))
    sc = res["scale"]
    assert sc["outcome"] == "ok" and sc["lost"] == 0 and sc["leaks"] == 0 and sc["live_ms_sampled"] > 50
    # The machine's used memory per M is a difference of MemAvailable: another process freeing
    # memory meanwhile can make it negative, so only its presence is asserted; an M's own pages can't lie.
    assert isinstance(sc["used_kb_per_m"], int) and sum(sc["parts"]["m_private_dirty"].values()) > 0
    assert sc["parts"]["m_threads"] == 3  # main, ZeroMQ I/O, reaper
    # Ms only (`gmpsim M<id>`), never more than the run's peak M count: not the forker or its spares
    assert 50 < sc["live_ms_sampled"] <= sc["peak_threads"] and sc["parts"]["m_sampled"] > 1
    mem = fl["memory"]  # the memory floor: forked children with their own ZeroMQ context, all alive at once
    assert mem["children"] == 20 and mem["private_dirty_kb"] > 0 and mem["pss_kb"] > 0
    assert res["ratios"]["m_private_over_memory_floor"] > 0 and "an M's private pages / memory floor" in r.stdout
    for k in ("newm_p50_over_fork_floor", "wake_p50_over_zmq_one_way", "wake_p50_over_zmq_one_way_matched",
              "events_over_router_loop",
              "pace_over_burst_fork_floor"):
        assert res["ratios"][k] is not None and res["ratios"][k] > 0, k
    assert "M creation p50 / fork floor p50" in r.stdout


def test_bench_scale_beyond_the_open_files_limit_fails_at_once():
    """30,000 Ms need more open files than this machine's hard limit (20,000): one line naming the
    limit and the fix, exit 2, before anything runs; pid_max, raised for the check as root, is back."""
    before = read_int(PID_MAX)
    r = gmpsim("bench", "--scale", "30000", timeout=30)
    assert r.code == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "ulimit -n" in r.stderr and "--scale" in r.stderr
    assert read_int(PID_MAX) == before


@pytest.mark.parametrize("bad", ["0", "ten", "-5"])
def test_bench_bad_scale_is_bad_input(bad):
    r = gmpsim("bench", "--scale", bad, timeout=30)
    assert r.code == 2 and "--scale" in r.stderr and "Traceback" not in r.stderr


OURS = {"gmpsim coordinator", "gmpsim agent local", "gmpsim forker local", "gmpsim spare local"}


def test_processes_are_named_for_what_they_are(tmp_path):
    """ps shows `gmpsim coordinator`, `gmpsim agent local`, `gmpsim forker local`, `gmpsim spare local`
    and `gmpsim M<id>` while a run goes on."""
    import subprocess
    import sys
    import time
    p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "syscall-storm", "--out", str(tmp_path),
                          "--no-progress", "--set", "time_limit_s=60"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            names.update(title(pid) for pid in processes())
            if OURS <= names and any(n.startswith("gmpsim M") for n in names):
                break
            time.sleep(0.1)
    finally:
        p.wait(timeout=90)
    assert OURS <= names, names
    assert any(n.startswith("gmpsim M") and n[len("gmpsim M"):].isdigit() for n in names), names
