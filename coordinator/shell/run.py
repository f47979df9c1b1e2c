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

import multiprocessing_logging
import zmq
from zmq.auth.thread import ThreadAuthenticator

from coordinator.observe.plot import have_matplotlib, plot_run
from coordinator.observe.report import build_report
from coordinator.observe.trace import TraceRecorder
from coordinator.shell.loop import Coordinator, Outcome
from coordinator.shell.procfs import open_files_limit
from protocol.logformat import LOG_FORMAT
from protocol.owner import alive, arena_name, clean, new_run_id
from protocol.timing import KILL_WAIT_PER_M_S
from protocol.transport import curve_server_keys, make_rundir, rundir_endpoint

log = logging.getLogger("gmpsim.run")

AGENT_MODULE = "worker.agent"  # run by name, as `python -m worker.agent`: coordinator never imports worker
SHUTDOWN_WAIT_S = 10.0  # an agent ends its Ms (SIGKILL, then protocol.timing's kill wait) and unlinks its arena;
# the run adds KILL_WAIT_PER_M_S per M to it


class _SetupError(Exception):
    """The run could not be set up as asked (bad input: exit 2)."""


def _agent_main(argv: list[str]) -> None:
    """The agent process's entry: `python -m worker.agent ARGV`, in a fork of this process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the coordinator's handler (the agent sets its own)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.argv = [AGENT_MODULE, *argv]
    runpy.run_module(AGENT_MODULE, run_name="__main__", alter_sys=True)


class LocalAgents:
    """The host agent processes of a local run: forked from this process (so they inherit the log
    queue) as `python -m worker.agent`; a restarted one adopts its predecessor's arena."""

    def __init__(self, endpoint: str, run_id: str):
        self.endpoint, self.run_id = endpoint, run_id
        self.procs: dict[str, list] = {}

    def start(self, host: str, adopt: bool = False) -> int:
        argv = ["--endpoint", self.endpoint, "--host", host, "--run-id", self.run_id,
                "--guardian-pid", str(os.getpid())] + (["--adopt"] if adopt else [])
        p = multiprocessing.get_context("fork").Process(target=_agent_main, name=f"gmpsim-agent-{host}",
                                                        args=(argv,))
        p.start()
        self.procs.setdefault(host, []).append(p)
        return p.pid

    def pid(self, host: str) -> int:
        return self.procs[host][-1].pid

    def restart(self, host: str) -> int:
        for p in self.procs[host]:
            p.join(0)  # reap the dead one
        return self.start(host, adopt=True)

    def all_pids(self) -> list[int]:
        return [p.pid for ps in self.procs.values() for p in ps]

    def died(self) -> list[str]:
        """The hosts whose last agent ended without its orderly cleanup (killed, crashed): nobody
        else is left to unlink their arenas (the Ms were told to shut down by the coordinator)."""
        return [host for host, ps in self.procs.items() if ps and ps[-1].exitcode not in (0, None)]

    def stop(self, wait_s: float, told: set[str] = frozenset()) -> None:
        """Wait for each agent to end (up to wait_s for those told to shut down; the others, e.g.
        forked but not yet welcomed when a signal came, get a SIGTERM: their orderly cleanup)."""
        for host, ps in self.procs.items():
            for p in ps:
                if host not in told and p.is_alive():
                    try:
                        os.kill(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                p.join(wait_s)
                if p.is_alive():
                    log.error("host agent (pid %d) did not stop in %.0fs; killing it", p.pid, wait_s)
                    p.kill()
                    p.join(1)


def _setup_logging(path: str):
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(fh)
    root.setLevel(logging.INFO)
    multiprocessing_logging.install_mp_handler(root)
    return root


def _teardown_logging(root) -> None:
    for h in list(root.handlers):
        q = getattr(h, "queue", None)
        if q is not None and hasattr(q, "cancel_join_thread"):
            # If a child died holding the queue's shared write lock, our feeder can never write
            # again; exiting must not wait for it (the rest of the log is lost, not the run).
            q.cancel_join_thread()
        root.removeHandler(h)
        h.close()


def _ours(name: str) -> bool:
    """A shared-memory name a run of ours may own (what an agent reports is not trusted blindly)."""
    return name.startswith("gmpsim-") and "/" not in name and name not in (".", "..")


def sweep(pids, shm_names) -> int:
    """The last line of "nothing left behind": an agent that could not clean up (killed, or stuck)
    leaves Ms and its arena; end those processes and unlink the segment. Returns what it swept."""
    n = 0
    for pid in pids:
        if pid and alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
    n += sum(_unlink(name) for name in filter(_ours, shm_names))
    deadline = time.monotonic() + 2.0
    while any(p and alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return n


def _unlink(name: str) -> bool:
    """Unlink the shared-memory segment `name`; False when it was already gone."""
    try:
        os.unlink(os.path.join("/dev/shm", name))
        return True
    except FileNotFoundError:
        return False


def unlink_arena(name: str) -> None:
    """Unlink a local agent's g0 arena that the agent, dead, could not unlink itself."""
    if _unlink(name):
        log.info("host agent died: its arena %s unlinked by the coordinator", name)


def count_leaks(pids, shm_names) -> dict:
    """What a run left behind: live processes of it, and shared-memory segments of it."""
    procs = [p for p in pids if p and alive(p)]
    shm = [n for n in shm_names if _ours(n) and os.path.exists(os.path.join("/dev/shm", n))]
    return {"processes": len(procs), "shm_segments": len(shm), "pids": procs, "segments": shm}


def remote_leaks(res) -> dict:
    """Across hosts each agent counts what it left behind and says so in its goodbye; an agent that
    never said goodbye counts as one process left. res: the run's RunResult (None: no run)."""
    if res is None:
        return {"processes": 0, "shm_segments": 0, "pids": [], "segments": [], "unknown_hosts": []}
    procs = sum(b["processes"] for b in res.byes.values())
    shm = sum(b["shm_segments"] for b in res.byes.values())
    silent = [h for h, up in res.agent_up.items() if up and h not in res.byes]
    # A host cut off (or whose agent was killed) and never back cannot say what it left: unknown.
    unknown = sorted(h for h in res.agent_up if h not in res.byes)
    return {"processes": procs + len(silent), "shm_segments": shm, "pids": [], "segments": [],
            "silent_hosts": silent, "unknown_hosts": unknown}


def run_scenario(sc, out_dir: str, observers=(), listen: str | None = None, hosts: int = 1,
                 keys: str | None = None, placement: str = "least-loaded",
                 restore_signals: bool = True) -> tuple[dict, object]:
    """Run scenario `sc`, writing report.json, schedtrace.log, gmpsim.log and trace.json into out_dir;
    returns the report and the loop's Outcome
    (and threads.png when matplotlib is installed). `observers` (loop.Observer) watch every step:
    live progress, metrics... (trace.json's recorder is one of them).

    Locally (listen None) it starts its own host agent on an ipc:// socket in a private directory.
    With `listen` (tcp://ADDR:PORT; `gmpsim coordinator`) it waits for `hosts` agents started
    elsewhere (`gmpsim agent`), CURVE-authenticated with the key pairs in `keys` unless keys is None
    (--insecure)."""
    os.makedirs(out_dir, exist_ok=True)
    open_files_limit()  # a connection per M here, a pidfd per M in the agent (inherited)
    root = _setup_logging(os.path.join(out_dir, "gmpsim.log"))
    run_id = new_run_id()  # names this process as the owner of the run's segments
    for path in clean()["removed"]:  # what runs killed outright (SIGKILL) left: their owners are dead
        log.warning("removed %s, left by a dead run", path)
    rundir = None if listen else make_rundir()
    endpoint = listen or rundir_endpoint(rundir)
    wall0 = time.monotonic()
    interrupted = []
    old_int = signal.signal(signal.SIGINT, lambda s, f: interrupted.append(s))
    old_term = signal.signal(signal.SIGTERM, lambda s, f: interrupted.append(s))
    log.info("run %s: scenario %s (%s), seed %d, gomaxprocs %d, timescale %g, endpoint %s", run_id, sc.name,
             sc.source, sc.seed, sc.gomaxprocs, sc.timescale, endpoint)
    agents = LocalAgents(endpoint, run_id)
    if listen is None:
        agents.start("local")
    # Imported (and observers made) only now: the agent, forked above, stays small, and so do the
    # Ms it forks (a smaller parent forks faster, and its children fault in fewer pages).
    if callable(observers):
        observers = observers()
    tracer = TraceRecorder(os.path.join(out_dir, "trace.json"),
                           meta={"scenario": sc.name, "source": sc.source, "seed": sc.seed,
                                 "gomaxprocs": sc.gomaxprocs, "timescale": float(sc.timescale)})
    ctx = zmq.Context()
    auth = curve = None
    if listen and keys:

        curve = curve_server_keys(keys)
        auth = ThreadAuthenticator(ctx)  # ZAP: only clients whose public key is in `keys` get in
        auth.start()
        # Accepted: the public keys (*.key) in `keys`; a Kubernetes Secret mount's ..data folder and
        # symlinks are fine.
        auth.configure_curve(domain="*", location=keys)
    coord = res = None
    out = Outcome("aborted", reason="did not start")
    try:
        try:
            trace = open(os.path.join(out_dir, "schedtrace.log"), "w")
        except OSError as e:
            raise _SetupError(f"{out_dir}: {e.strerror}") from e
        with trace:
            coord = Coordinator(sc, endpoint, ctx, trace, stop_flag=lambda: bool(interrupted),
                                observers=[*observers, *([tracer] if sc.trace else [])],
                                agents=agents if listen is None else None,
                                curve=curve, placement=placement)
            if listen:
                log.info("listening on %s (%s); waiting for %d host agent(s)", listen,
                         "CURVE" if curve else "insecure: plain TCP", hosts)
            coord.wait_agents(hosts, timeout_s=None if listen else 10.0)
            try:
                coord.start()
            except OSError as e:  # what the machine refused while setting up (a metrics port taken, ...)
                raise _SetupError(getattr(e, "strerror", None) or str(e)) from e
            out = coord.run(sc.time_limit_s)
            try:
                coord.finish()
            except OSError as e:  # trace.json unwritable (the directory changed mid-run): the run stands
                log.error("could not finish the run's files: %s", e)
    except RuntimeError as e:
        out = Outcome("aborted", reason=str(e))
        log.error("%s", e)
    except _SetupError as e:
        out = Outcome("aborted", reason=str(e), bad_input=str(e))
        log.error("run could not be set up: %s", e)
    finally:
        try:
            told = set()
            wait_s = SHUTDOWN_WAIT_S
            if coord is not None:
                wait_s += KILL_WAIT_PER_M_S * len(coord.rec.pids)  # the agents' kill waits grow with their Ms
                told = coord.shutdown_agents()
                if listen:
                    coord.collect_byes(wait_s)
            agents.stop(wait_s, told)
            for host in agents.died():  # the dead agent's part of the orderly end is its parent's
                unlink_arena(arena_name(run_id, host))
        finally:
            # Whatever happened above, nothing of the run stays: count what its own shutdown left
            # (the report says so), then end it.
            res = coord.result() if coord is not None else None
            pids = list(res.rec.pids.values()) if res is not None else []
            pids += agents.all_pids()
            shm = set(res.arenas) if res is not None else set()
            shm |= {arena_name(run_id, host) for host in agents.procs}  # said hello or not
            leaks = count_leaks(pids, shm) if listen is None else remote_leaks(res)
            if listen is None and (leaks["processes"] or leaks["shm_segments"]):
                log.error("left behind after shutdown: pids %s, segments %s; sweeping them",
                          leaks["pids"], leaks["segments"])
                sweep(pids, shm)
            if coord is not None:
                coord.close()
            if auth is not None:
                auth.stop()
            ctx.term()
            if rundir:
                shutil.rmtree(rundir, ignore_errors=True)
    if interrupted and out.outcome != "ok":
        out = Outcome("aborted", reason="interrupted")
    wall_s = time.monotonic() - wall0
    report = build_report(sc, res, out, leaks, wall_s)
    if tracer.written and interrupted:  # Ctrl-C / SIGTERM: out quickly (matplotlib takes seconds)
        log.info("threads.png not drawn (interrupted); `gmpsim plot %s` draws it", out_dir)
    elif tracer.written:
        if have_matplotlib():
            try:
                plot_run(out_dir)
            except Exception as e:  # a picture is a bonus: never fail the run for it
                log.warning("threads.png not written: %s", e)
    log.info("run %s ended: %s%s", run_id, out.outcome, f" ({out.fatal_message})" if out.fatal_message else "")
    _teardown_logging(root)
    # Restored only now (or by the caller, once it has written the report: restore_signals False):
    # a second Ctrl-C while the picture is drawn must not lose the report.
    if restore_signals:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    return report, out
