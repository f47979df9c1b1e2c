"""Soak: the chaos scenarios again and again for a few minutes (`pytest -m soak tests/faults/test_soak.py`;
not in `make test`). Every run must end as its scenario expects, with nothing left behind and a
report that agrees with itself."""
from __future__ import annotations

import os
import time

import pytest

from tests.gmpsim_cli import gmpsim

CHAOS = ("message-chaos", "kill-storm", "stop-resume", "template-crash", "fork-eagain")
SOAK_S = float(os.environ.get("GMPSIM_SOAK_S", "240"))


@pytest.mark.soak
@pytest.mark.timeout(int(SOAK_S) + 600)
def test_chaos_scenarios_soak(tmp_path):
    deadline = time.monotonic() + SOAK_S
    runs = 0
    while time.monotonic() < deadline:
        name = CHAOS[runs % len(CHAOS)]
        r = gmpsim("run", name, "--seed", str(runs + 1), out_dir=tmp_path / f"{runs}-{name}", timeout=300)
        assert r.code == 0, f"{name} seed {runs + 1}: exit {r.code}\n{r.stderr[-2000:]}"
        rep = r.report
        assert rep["leaks"]["processes"] == 0 and rep["leaks"]["shm_segments"] == 0
        fs = rep["faults_summary"]
        assert fs["injected"] == sum(fs["by_kind"].values()) and fs["listed"] == len(rep["faults"])
        runs += 1
    assert runs >= len(CHAOS)
