"""What a run hands back: how it ended (Outcome), what the loop measured (Recorder), and RunResult.

RunResult is all that the report (observe/report.py) and run.py read of a run: the loop fills it at
the end (Coordinator.result()), nothing reads the loop's own attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.observe.latency import Latency


@dataclass
class Outcome:
    """How the run ended."""
    outcome: str = "aborted"  # "ok" | "fatal" | "aborted"
    fatal_message: str | None = None
    fatal_lines: list[str] = field(default_factory=list)
    reason: str = ""
    bad_input: str | None = None  # the run could not be set up as asked (a port taken, ...): exit 2


@dataclass
class Recorder:
    """What the loop measures for the report (latencies in wall seconds)."""
    newm_to_mstart: Latency = field(default_factory=Latency)
    # newm_to_mstart in two, where the M's clock is ours (its hello's `started`, CLOCK_MONOTONIC):
    newm_to_child: Latency = field(default_factory=Latency)  # the order's way to the child, its clone or wake
    child_to_hello: Latency = field(default_factory=Latency)  # its mstart to its hello heard: connect, hello
    notewakeup_to_running: Latency = field(default_factory=Latency)
    notesleep_to_wake: Latency = field(default_factory=Latency)  # how long a woken M was blocked
    bad_frames: int = 0
    bad_events: int = 0
    refused: int = 0  # messages of dead, fenced or stale Ms
    hello_missing: int = 0  # forked Ms that never said hello (reforked)
    agent_restarts: list[dict] = field(default_factory=list)  # every host agent restarted mid-run
    events: int = 0
    pids: dict[int, int] = field(default_factory=dict)  # M id -> pid
    fork_decided: dict[int, float] = field(default_factory=dict)  # M id -> wall time of newm
    threads: dict[int, dict] = field(default_factory=dict)  # M id -> its life, for the report
    deaths: list[dict] = field(default_factory=list)  # post-mortems

    def thread(self, mid: int) -> dict:
        return self.threads.setdefault(mid, {"m": mid})


@dataclass
class RunResult:
    """A run, as the report and run.py see it."""
    sched: object  # the core's state at the end (None: it never started)
    rec: Recorder
    peak_mcount: int = 0  # the highest mcount(), counted as Go counts threads
    resent: int = 0  # frames resent by delivery
    duplicates: int = 0  # duplicate requests answered from the reply cache
    faults: list[dict] = field(default_factory=list)  # every injected fault listed
    faults_summary: dict = field(default_factory=dict)
    invariants: dict = field(default_factory=lambda: {"checked": 0, "violations": []})
    run_s: float = 0.0  # the run itself, without start-up and shutdown
    idle_s: float = 0.0  # of which waiting in poll
    byes: dict[str, dict] = field(default_factory=dict)  # host -> what its agent left behind at shutdown
    agent_up: dict[str, bool] = field(default_factory=dict)  # host -> its agent is up (not cut off)
    arenas: list[str] = field(default_factory=list)  # the shared-memory arenas of the agents that said hello
