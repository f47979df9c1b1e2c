"""Running the real `gmpsim` command (a subprocess: real forks, real sockets, real shared memory)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    report: dict | None


def gmpsim(*args: str, out_dir=None, timeout: float = 120) -> Result:
    cmd = [sys.executable, "-m", "coordinator.cli", *args]
    if out_dir is not None:
        cmd += ["--out", str(out_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    report = None
    if out_dir is not None and os.path.exists(os.path.join(out_dir, "report.json")):
        with open(os.path.join(out_dir, "report.json")) as f:
            report = json.load(f)
    return Result(p.returncode, p.stdout, p.stderr, report)
