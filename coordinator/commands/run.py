"""`gmpsim run` and `gmpsim coordinator`: load the scenario, claim the output directory, run,
write the report (somewhere else, saying where, when the run directory is gone), exit code."""
from __future__ import annotations

import dataclasses
import fcntl
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time

import zmq
import zmq.auth
from setproctitle import setproctitle

from coordinator.commands import EXIT_ABORTED, EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED
from coordinator.commands.network import check_security, warn_insecure
from coordinator.faults.language import FaultError, parse_fault
from coordinator.observe.metrics import MetricsExporter
from coordinator.observe.progress import LiveProgress
from coordinator.observe.report import summary, write_report
from coordinator.scenario import ScenarioError, load, safe_name
from coordinator.shell.run import run_scenario
from protocol import titles


def expected(report: dict) -> bool:
    """Is the outcome the one the scenario expects? ("ok", or "fatal: <message>")."""
    exp = report["expect"]
    leaked = report["leaks"]["processes"] or report["leaks"]["shm_segments"]
    if report["invariants"]["violations"]:
        return False
    if report["outcome"] == "ok":
        return exp == "ok" and report["goroutines"]["lost"] == 0 and not leaked
    if report["outcome"] == "fatal":
        return exp == f"fatal: {report['fatal']['message']}" and not leaked
    return False


def check_port(port: int, addr: str) -> None:
    """Raise OSError now if addr:port cannot be bound (bad address, port in use), so that the CLI
    says so before the run rather than in the middle of it."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))


def cmd_run(args) -> int:
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    try:
        sc = load(args.scenario, overrides)
    except ScenarioError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        extra_faults = tuple(parse_fault(spec) for spec in args.faults)
    except FaultError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if extra_faults:
        sc = dataclasses.replace(sc, faults=sc.faults + extra_faults)
    if args.out == "":
        print("gmpsim: --out '': expected a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.cmd == "run":
        err = shm_room()
        if err:
            print(f"gmpsim: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.metrics_port is not None:
        try:
            check_port(args.metrics_port, args.metrics_addr)
        except (OSError, OverflowError) as e:
            print(f"gmpsim: --metrics-port {args.metrics_port} on {args.metrics_addr}: "
                  f"{getattr(e, 'strerror', None) or e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    observers = []

    def make_observers() -> list:
        """Built after the host agent is forked: rich and prometheus_client stay out of every M."""
        if args.metrics_port is not None:
            observers.append(MetricsExporter(args.metrics_port, args.metrics_addr, announce=sys.stderr))
        if not args.no_progress and sys.stderr.isatty():
            if LiveProgress.wanted(sys.stderr):
                observers.append(LiveProgress(label=sc.name))
        return observers
    remote = {}
    if args.cmd == "coordinator":
        err = check_security(args, args.listen)
        if err:
            print(f"gmpsim: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.hosts < 1:
            print(f"gmpsim: --hosts: expected a number of agents >= 1, got {args.hosts}", file=sys.stderr)
            return EXIT_BAD_INPUT
        remote = dict(listen=args.listen, hosts=args.hosts, keys=None if args.insecure else args.keys,
                      placement=args.placement)
    # The output directory is made last, once the input is known good: bad input leaves nothing behind.
    out_dir = args.out or os.path.join("runs", f"{safe_name(sc.name)}-{time.strftime('%Y%m%d-%H%M%S')}")
    fresh = not os.path.lexists(out_dir)
    lock, err = claim_out_dir(out_dir)
    if err:
        print(f"gmpsim: --out {out_dir[:120]}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if remote:
        warn_insecure(args)
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    setproctitle(titles.COORDINATOR)  # ps and top; the agent and each M name themselves too
    try:
        report, out = run_scenario(sc, out_dir, make_observers, restore_signals=False, **remote)
    except zmq_error() as e:  # the listen address cannot be bound (in use, not ours, no such host)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        print(f"gmpsim: --listen {getattr(args, 'listen', '?')}: {e}", file=sys.stderr)
        if fresh:  # nothing ran: the directory made for it goes too
            lock.close()
            shutil.rmtree(out_dir, ignore_errors=True)
        return EXIT_BAD_INPUT
    finally:  # finished() closes them; this is for a run that ended before it could
        for o in observers:
            o.close()
        lock.close()
    written_to = write_results(report, out_dir)
    # The run is over and its report safe: what is left (the summary, the interpreter's exit) is
    # quick. Ignored rather than restored, or a Ctrl-C during the interpreter's shutdown (which
    # resets Python-level handlers to the default) ends the process by SIGINT, not with our code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if written_to != out_dir:  # the output directory went away mid-run: said where instead
        if written_to is not None:
            print(summary(report, written_to))
        return EXIT_BAD_INPUT
    if out.bad_input:
        print(f"gmpsim: could not set up the run: {out.bad_input}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if out.outcome == "fatal":
        print("\n".join(out.fatal_lines), file=sys.stderr)
    print(summary(report, written_to))
    replay = (f"gmpsim {args.cmd} {args.scenario} --seed {sc.seed}"
              + "".join(f" --set {shlex.quote(o)}" for o in args.overrides))
    if args.cmd == "coordinator":
        replay += f" --listen {args.listen} --hosts {args.hosts} --placement {args.placement}"
        replay += " --insecure" if args.insecure else f" --keys {shlex.quote(args.keys)}"
    replay += "".join(f" --fault {shlex.quote(f)}" for f in args.faults)
    print(f"replay: {replay}")
    if out.outcome == "aborted":
        return EXIT_ABORTED
    return EXIT_OK if expected(report) else EXIT_UNEXPECTED


def zmq_error():
    return zmq.ZMQError


def claim_out_dir(out_dir: str):
    """Create the output directory and lock it for this run (two runs must not mix their files):
    (the open lock file, None) or (None, the one-line problem)."""
    try:
        if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
            return None, "not a directory"
        os.makedirs(out_dir, exist_ok=True)
        if not os.path.isdir(out_dir):
            return None, "not a directory"
        lock = open(os.path.join(out_dir, ".gmpsim.lock"), "w")
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        return None, getattr(e, "strerror", None) or str(e)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None, "another gmpsim run is writing there"
    for name in ("report.json", "gmpsim.log", "schedtrace.log", "trace.json"):
        path = os.path.join(out_dir, name)
        if os.path.lexists(path) and not (os.path.isfile(path) and os.access(path, os.W_OK)):
            lock.close()
            return None, f"{name} there cannot be overwritten"
    return lock, None


def shm_room(shm_dir: str = "/dev/shm", need: int = 1 << 20) -> str | None:
    """Is there room in /dev/shm for the g0 arena? (A full one would only show as an agent that
    never says hello.)"""
    try:
        st = os.statvfs(shm_dir)
    except OSError as e:
        return f"{shm_dir}: {e.strerror}"
    free = st.f_bavail * st.f_frsize
    if free < need:
        return f"{shm_dir} is full ({free} bytes free): no room for the g0 stack arena"
    return None


def write_results(report: dict, out_dir: str) -> str | None:
    """report.json into out_dir; if that fails (the directory went read-only mid-run), into a
    fresh directory under the temporary directory, saying where. Returns where it went."""

    try:
        write_report(report, os.path.join(out_dir, "report.json"))
        return out_dir
    except OSError as e:
        why = e.strerror or str(e)
    try:
        elsewhere = tempfile.mkdtemp(prefix="gmpsim-results-")
        write_report(report, os.path.join(elsewhere, "report.json"))
    except OSError as e2:
        print(f"gmpsim: cannot write {out_dir}/report.json ({why}) nor anywhere else ({e2.strerror})",
              file=sys.stderr)
        return None
    print(f"gmpsim: cannot write {out_dir}/report.json ({why}); wrote {elsewhere}/report.json instead",
          file=sys.stderr)
    return elsewhere
