"""The real `gmpsim run` that test_robustness*.py start: in the background, its endpoint and run id
found in its gmpsim.log, and stopped and reaped after a failure too."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from coordinator.shell.procfs import descendants, title
from protocol.titles import is_m_title

ROOT = Path(__file__).resolve().parents[2]
RUN_LINE = re.compile(r"run (\w+): scenario .* endpoint (ipc://\S+)")


def start_run(out: Path, *args: str) -> tuple[subprocess.Popen, object]:
    """`gmpsim run steady ARGS --out OUT` in the background; its stdout/stderr go to a file."""
    out.mkdir(parents=True, exist_ok=True)
    console = open(out.parent / f"{out.name}.console", "w+")
    cmd = [sys.executable, "-m", "coordinator.cli", "run", "steady", "--no-progress", *args, "--out", str(out)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=console, stderr=subprocess.STDOUT), console


def wait_for(what: str, predicate, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g}s")
        time.sleep(every)


def run_line(out: Path) -> tuple[str, str] | None:
    """(run id, endpoint) from the run's gmpsim.log, once it is there."""
    try:
        text = (out / "gmpsim.log").read_text(errors="replace")
    except FileNotFoundError:
        return None
    m = RUN_LINE.search(text)
    return (m[1], m[2]) if m else None


def stop(proc: subprocess.Popen) -> None:
    """Make sure the run is over and reaped (after a failure too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)



def ms_under(root: int) -> list[int]:
    """The Ms (`gmpsim M<id>`) among root's descendants: not the agent, its forker, the spares, nor
    the forker's rehearsal stand-in (a count of processes is reached before the run is under way)."""
    return [p for p in descendants(root) if is_m_title(title(p))]
