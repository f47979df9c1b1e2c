"""`gmpsim run`: one run on this machine, start to finish.

Order matters. Logging first (every process's log is gathered into gmpsim.log by
multiprocessing-logging, whose queue the agent and every M inherit through fork); then the host
agent, forked before this process has a ZeroMQ context (a child must never inherit one); then the
coordinator's socket in a private run directory; the run; an orderly shutdown; and a count of
what is left behind (processes, shared-memory segments), which the report shows.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import runpy
import shutil
import signal
import sys
import time
import uuid

import zmq

from protocol.transport import make_rundir, rundir_endpoint


log = logging.getLogger("gmpsim.run")

AGENT_MODULE = "worker.agent"  # run by name, as `python -m worker.agent`: coordinator never imports worker
SHUTDOWN_WAIT_S = 5.0


def _agent_main(argv: list[str]) -> None:
    """The agent process's entry: `python -m worker.agent ARGV`, in a fork of this process."""
    sys.argv = [AGENT_MODULE, *argv]
    runpy.run_module(AGENT_MODULE, run_name="__main__", alter_sys=True)


def _setup_logging(path: str):
    import multiprocessing_logging
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root.addHandler(fh)
    root.setLevel(logging.INFO)
    multiprocessing_logging.install_mp_handler(root)
    return root


def _teardown_logging(root) -> None:
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()


def _alive(pid: int) -> bool:
    """Is pid a live process (not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def count_leaks(pids, shm_names) -> dict:
    """What a run left behind: live processes of it, and shared-memory segments of it."""
    procs = [p for p in pids if p and _alive(p)]
    shm = [n for n in shm_names if os.path.exists(os.path.join("/dev/shm", n))]
    return {"processes": len(procs), "shm_segments": len(shm), "pids": procs, "segments": shm}


def run_scenario(sc, out_dir: str) -> tuple[dict, "Outcome"]:
    """Run scenario `sc`, writing report.json, schedtrace.log and gmpsim.log into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    root = _setup_logging(os.path.join(out_dir, "gmpsim.log"))
    run_id = uuid.uuid4().hex[:12]
    rundir = make_rundir()
    endpoint = rundir_endpoint(rundir)
    wall0 = time.monotonic()
    interrupted = []
    old_int = signal.signal(signal.SIGINT, lambda s, f: interrupted.append(s))
    old_term = signal.signal(signal.SIGTERM, lambda s, f: interrupted.append(s))
    log.info("run %s: scenario %s (%s), seed %d, gomaxprocs %d, timescale %g", run_id, sc.name, sc.source,
             sc.seed, sc.gomaxprocs, sc.timescale)
    agent = multiprocessing.get_context("fork").Process(
        target=_agent_main, name="gmpsim-agent",
        args=(["--endpoint", endpoint, "--host", "local", "--run-id", run_id],))
    agent.start()
    # Imported only now: the agent, forked above, stays small (a smaller parent forks Ms faster).
    from .loop import Coordinator, Outcome
    from .report import build_report
    ctx = zmq.Context()
    coord = None
    out = Outcome("aborted", reason="did not start")
    try:
        with open(os.path.join(out_dir, "schedtrace.log"), "w") as trace:
            coord = Coordinator(sc, endpoint, ctx, trace, stop_flag=lambda: bool(interrupted))
            coord.wait_agents(1)
            coord.start()
            out = coord.run(sc.time_limit_s)
    except RuntimeError as e:
        out = Outcome("aborted", reason=str(e))
        log.error("%s", e)
    finally:
        if coord is not None:
            coord.shutdown_agents()
        agent.join(SHUTDOWN_WAIT_S)
        if agent.is_alive():
            log.error("host agent did not stop in %.0fs; killing it", SHUTDOWN_WAIT_S)
            agent.kill()
            agent.join(1)
        if coord is not None:
            coord.close()
        ctx.term()
        shutil.rmtree(rundir, ignore_errors=True)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    if interrupted and out.outcome != "ok":
        out = Outcome("aborted", reason="interrupted")
    wall_s = time.monotonic() - wall0
    pids = list(coord.rec.pids.values()) if coord is not None else []
    pids.append(agent.pid)
    shm = [a["arena"] for a in coord.agents.values()] if coord is not None else []
    leaks = count_leaks(pids, shm)
    report = build_report(sc, coord, out, leaks, wall_s)
    log.info("run %s ended: %s%s", run_id, out.outcome, f" ({out.fatal_message})" if out.fatal_message else "")
    _teardown_logging(root)
    return report, out
