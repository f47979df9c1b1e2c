"""`gmpsim bench --quick --json` as a smoke test: it runs end to end and writes every figure. No
threshold is asserted (these machines are noisy; the figures are ratios for a person to read)."""
from __future__ import annotations

import json

import pytest

from tests.gmpsim_cli import gmpsim

pytestmark = pytest.mark.processes


def test_bench_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    r = gmpsim("bench", "--quick", "--json", str(out), timeout=300)
    assert r.code == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    fl = res["floors"]
    for name in ("fork_hello", "zmq_one_way", "mp_forkserver", "mp_spawn"):
        assert fl[name]["n"] > 0 and fl[name]["p50_us"] > 0
    assert res["gmpsim"]["outcome"] == "ok" and res["gmpsim"]["newm_to_mstart"]["n"] > 0
    assert res["throughput"]["outcome"] == "ok" and res["throughput"]["events_per_s"] > 0
    assert res["throughput_checked"]["invariant_checks"] is True
    assert res["scale"]["outcome"] == "ok" and res["scale"]["live_ms_sampled"] > 50
    assert res["scale"]["leaks"] == {"processes": 0, "shm_segments": 0}
    for k, v in res["ratios"].items():
        assert v is None or v > 0, k
    assert "M creation p50 / fork floor p50" in r.stdout
