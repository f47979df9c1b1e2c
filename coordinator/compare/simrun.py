"""One run of a scenario on gmpsim, as `gmpsim run REF --out DIR --set faults=[]` in a child process
(a run of its own: its agent, its Ms, its leak accounting), read back from report.json and
schedtrace.log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


class SimError(RuntimeError):
    """gmpsim refused the scenario (exit 2) or wrote no report; ``str()`` is one line."""


def _stop(child: subprocess.Popen) -> None:
    """SIGINT (the run's own clean shutdown), then SIGKILL if it does not end."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()


def run_sim(ref: str, overrides: list[str], out_dir: str, limit_s: float) -> dict:
    argv = [sys.executable, "-m", "coordinator.cli", "run", ref, "--out", out_dir, "--no-progress",
            "--set", "faults=[]"]
    for o in overrides:
        argv += ["--set", o]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = child.communicate(timeout=limit_s + 120)
    except subprocess.TimeoutExpired:
        _stop(child)
        raise SimError(f"gmpsim run {ref} did not end within {limit_s + 120:.0f} s") from None
    except BaseException:  # Ctrl-C: let the run clean up its Ms and shared memory, as `gmpsim run` does
        _stop(child)
        raise
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        raise SimError(lines[-1] if lines else "gmpsim run: bad input")
    try:
        with open(os.path.join(out_dir, "report.json")) as f:
            report = json.load(f)
    except (OSError, ValueError):
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise SimError(f"gmpsim run {ref} wrote no report.json (exit {proc.returncode}"
                       f"{': ' + lines[-1] if lines else ''})") from None
    try:
        with open(os.path.join(out_dir, "schedtrace.log"), errors="replace") as f:
            sched_lines = [ln.rstrip("\n") for ln in f if ln.startswith("SCHED ")]
    except OSError:
        sched_lines = []
    ms = report["ms"]
    fatal = report.get("fatal") or {}
    return {"outcome": report["outcome"], "fatal_message": fatal.get("message"),
            "fatal_lines": fatal.get("lines", []), "mnext": ms.get("mnext"), "nmfreed": ms.get("nmfreed"),
            "peak_threads": ms.get("peak"), "threads_end": ms.get("allm"), "counts": "exact",
            "wall_s": report.get("wall_s"), "schedtrace": sched_lines, "out_dir": out_dir,
            "invariant_violations": len(report["invariants"]["violations"]),
            "lost": report["goroutines"]["lost"]}
