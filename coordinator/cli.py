"""The `gmpsim` command.

Exit codes: 0 the outcome is what the scenario expects · 1 it is not · 2 bad input · 3 aborted
(time limit or Ctrl-C).
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import ipaddress
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
import time

import zmq
import zmq.auth
from setproctitle import setproctitle

from coordinator.bench.bench import main as bench_main
from coordinator.compare.compare import main as compare_main
from coordinator.faults.plan import FaultError, parse_fault
from coordinator.observe.metrics import MetricsExporter
from coordinator.observe.plot import PlotError, plot_run
from coordinator.observe.progress import LiveProgress
from coordinator.observe.report import summary, write_report
from coordinator.scenario import DEFAULT_SCENARIO, ScenarioError, describe_builtins, load, safe_name
from coordinator.shell.run import run_scenario
from protocol.owner import clean
from protocol.transport import make_keys

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 (only for --version: importing it costs ~10 ms at every start)
    try:
        return version("gmpsim")
    except PackageNotFoundError:
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # bad usage is bad input: exit 2 with one line
        self.exit(EXIT_BAD_INPUT, f"gmpsim: {message}\n")


def _scale_n(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a number of goroutines from 1 to 100000, got {text!r}")
    return n


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return port


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="gmpsim", description="Re-enact the Go runtime's M machinery with real processes.")
    ap.add_argument("--version", action="version", version=f"gmpsim {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a scenario (default: %s)" % DEFAULT_SCENARIO)
    _run_options(run)
    coord = sub.add_parser("coordinator", help="run a scenario across hosts: wait for --hosts agents")
    _run_options(coord)
    coord.add_argument("--listen", required=True, metavar="tcp://ADDR:PORT",
                       help="where agents and their Ms connect, e.g. tcp://0.0.0.0:7070")
    coord.add_argument("--hosts", type=int, default=1, metavar="N", help="wait for N agents (default 1)")
    _security_options(coord)
    coord.add_argument("--placement", choices=("least-loaded", "round-robin"), default="least-loaded",
                       help="where Ms that no M forks go (sysmon's, the template's); default least-loaded")
    agent = sub.add_parser("agent", help="join a coordinator as a host: fork and reap its Ms here")
    agent.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="the coordinator")
    agent.add_argument("--name", default=os.environ.get("GMPSIM_AGENT_NAME") or None,
                       help="this host's name (unique per host; 1 to 64 of A-Z a-z 0-9 _ . -; "
                            "default: $GMPSIM_AGENT_NAME, e.g. a pod's name)")
    agent.add_argument("--wait", type=float, default=60.0, metavar="S",
                       help="give up (exit 2) when no coordinator answers within S seconds (default 60)")
    _security_options(agent)
    bench = sub.add_parser("bench", help="measure this machine: M creation, wake, coordinator throughput, scale")
    bench.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.add_argument("--scale", metavar="N", type=_scale_n, default=None,
                       help="goroutines blocked at once in the scale run (default 2000; 100 with --quick)")
    keys = sub.add_parser("keys", help="write CURVE key pairs for the coordinator and the agents into DIR")
    keys.add_argument("dir", metavar="DIR")
    compare = sub.add_parser("compare", help="run a scenario on real Go and on gmpsim, side by side")
    compare.add_argument("scenario", metavar="SCENARIO|FILE", help="a built-in name or a TOML file")
    compare.add_argument("--runs", type=int, default=3, metavar="N", help="runs on each side (default 3)")
    compare.add_argument("--tolerance", type=float, default=10.0, metavar="PCT",
                         help="how far gmpsim's medians may be from Go's, in %% (default 10; ±1 M below 10)")
    compare.add_argument("--json", metavar="FILE", help="also write every figure and run as JSON")
    compare.add_argument("--markdown", action="store_true", help="also print the README reference table's row")
    compare.add_argument("--out", metavar="DIR",
                         help="where the runs go (default runs/compare-<scenario>-<timestamp>/)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a scenario key on both sides (repeatable)")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    sub.add_parser("clean", help="remove the shared memory and run directories of gmpsim processes that are dead")
    plot = sub.add_parser("plot", help="draw RUN_DIR/trace.json into RUN_DIR/threads.png (needs matplotlib)")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")
    plot.add_argument("--out", help="the PNG to write (default RUN_DIR/threads.png)")
    return ap


def _security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="DIR", help="CURVE keys made by `gmpsim keys DIR` (required over TCP)")
    p.add_argument("--insecure", action="store_true", help="plain TCP without CURVE: anyone who can connect can act")
    p.add_argument("--insecure-anywhere", action="store_true",
                   help="allow --insecure on an address that is not loopback (anyone on the network can act)")


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, help="a built-in name or a TOML file")
    run.add_argument("--out", help="output directory (default runs/<scenario>-<timestamp>/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (repeatable)")
    run.add_argument("--seed", type=int, help="same as --set seed=N")
    run.add_argument("--fault", dest="faults", action="append", default=[], metavar="SPEC",
                     help="inject a fault, KIND[:key=value,...], e.g. kill-m:every=100ms (repeatable)")
    run.add_argument("--metrics-port", type=_port, metavar="PORT",
                     help="serve Prometheus metrics on http://ADDR:PORT/metrics while the run lasts")
    run.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                     help="the address --metrics-port binds (default 127.0.0.1)")
    run.add_argument("--no-progress", action="store_true", help="no live progress line on a terminal")


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
    out_dir = args.out or os.path.join("runs", f"{safe_name(sc.name)}-{time.strftime('%Y%m%d-%H%M%S')}")
    lock, err = claim_out_dir(out_dir)
    if err:
        print(f"gmpsim: --out {out_dir[:120]}: {err}", file=sys.stderr)
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
        err = _check_security(args, args.listen)
        if err:
            print(f"gmpsim: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.hosts < 1:
            print(f"gmpsim: --hosts: expected a number of agents >= 1, got {args.hosts}", file=sys.stderr)
            return EXIT_BAD_INPUT
        remote = dict(listen=args.listen, hosts=args.hosts, keys=None if args.insecure else args.keys,
                      placement=args.placement)
        _warn_insecure(args)
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    setproctitle("gmpsim coordinator")  # ps and top; the agent and each M name themselves too
    try:
        report, out = run_scenario(sc, out_dir, make_observers, restore_signals=False, **remote)
    except zmq_error() as e:  # the listen address cannot be bound (in use, not ours, no such host)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        print(f"gmpsim: --listen {getattr(args, 'listen', '?')}: {e}", file=sys.stderr)
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


def cmd_clean(args) -> int:
    """`gmpsim clean`: remove what dead gmpsim processes left (their owner is named in each name)."""
    out = clean()
    for path in out["removed"]:
        print(f"removed {path}")
    print(f"gmpsim clean: removed {len(out['removed'])}; left {len(out['alive'])} of live runs and "
          f"{len(out['unknown'])} whose owner is unknown")
    return EXIT_OK


def cmd_scenarios(args) -> int:
    items = describe_builtins()
    width = max(len(n) for n, _ in items)
    for name, desc in items:
        mark = " (default)" if name == DEFAULT_SCENARIO else ""
        print(f"{name.ljust(width)}  {desc}{mark}")
    return EXIT_OK


_TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/\s]+):(?P<port>[0-9]{1,5})")
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _tcp_endpoint(endpoint: str) -> tuple[str, int] | str:
    """(host, port) of tcp://HOST:PORT, or the one-line problem with it."""
    found = _TCP.fullmatch(endpoint)
    if not found:
        return f"{endpoint[:80]!r}: expected tcp://ADDR:PORT (e.g. tcp://127.0.0.1:7070)"
    port = int(found["port"])
    if not 1 <= port <= 65535:
        return f"{endpoint[:80]!r}: expected a port from 1 to 65535, got {port}"
    return found["host"].strip("[]"), port


def is_loopback(host: str) -> bool:
    """Does this listen address take connections from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", a name or an interface: reachable from elsewhere


def _check_keys(keys: str, cmd: str) -> str | None:
    mine = "coordinator.key_secret" if cmd == "coordinator" else "agent.key_secret"
    for name in ("coordinator.key", "agent.key", mine):
        path = os.path.join(keys, name)
        if not os.path.exists(path):
            return f"--keys {keys}: no {name} there (make the keys with `gmpsim keys {keys}`)"
        try:
            if os.path.getsize(path) > 64 * 1024:
                raise ValueError("too large")
            public, secret = zmq.auth.load_certificate(path)
            if len(public or b"") != 40 or (name == mine and len(secret or b"") != 40):
                raise ValueError("no 40-character Z85 key in it")
        except Exception as e:  # pyzmq raises ValueError, OSError, UnicodeDecodeError, IndexError...
            return f"--keys {keys}: {name} is not a key file made by `gmpsim keys` ({type(e).__name__})"
    return None


def _check_security(args, endpoint: str) -> str | None:
    """Over TCP, CURVE is on unless --insecure says otherwise: a keys directory is required.
    --insecure listens on loopback only, unless --insecure-anywhere says otherwise."""
    where = _tcp_endpoint(endpoint)
    if isinstance(where, str):
        return f"{'--listen' if args.cmd == 'coordinator' else '--connect'} {where}"
    if args.insecure:
        if args.cmd == "coordinator" and not is_loopback(where[0]) and not args.insecure_anywhere:
            return (f"--insecure on {endpoint}, which is not a loopback address: anyone who can reach it "
                    "could steer the run; use --keys DIR, or say --insecure-anywhere")
        return None
    if args.insecure_anywhere:
        return "--insecure-anywhere goes with --insecure"
    if not args.keys:
        return "--keys DIR is required over TCP (CURVE; make them with `gmpsim keys DIR`), or say --insecure"
    return _check_keys(args.keys, args.cmd)


def _warn_insecure(args) -> None:
    if args.insecure:
        print("gmpsim: warning: --insecure: no CURVE; any peer that can connect can pose as an agent",
              file=sys.stderr)


def cmd_agent(args) -> int:
    """`gmpsim agent`: the host agent is its own program (python -m worker.agent); this becomes it."""
    err = _check_security(args, args.connect)
    if err is None and args.name is None:  # neither --name nor $GMPSIM_AGENT_NAME
        err = "agent: --name is required (or set GMPSIM_AGENT_NAME)"
    if err is None and not _HOST_NAME.fullmatch(args.name):
        err = f"--name {args.name[:40]!r}: expected 1 to 64 of the characters A-Z a-z 0-9 _ . -"
    if err is None and not (0 < args.wait <= 86400):
        err = f"--wait {args.wait:g}: expected seconds from 0 to 86400"
    if err:
        print(f"gmpsim: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _warn_insecure(args)
    argv = [sys.executable, "-m", "worker.agent", "--connect", args.connect, "--name", args.name,
            "--give-up", repr(args.wait)]
    argv += ["--insecure"] if args.insecure else ["--keys", args.keys]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def cmd_keys(args) -> int:
    try:
        written = make_keys(args.dir)
    except OSError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return EXIT_OK


def cmd_plot(args) -> int:
    try:
        path = plot_run(args.run_dir, args.out)
    except PlotError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as e:  # --out unwritable (under /proc, a directory, ...)
        print(f"gmpsim: --out {args.out}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """The command (argv None: sys.argv). Called in-process with argv, it leaves the caller's
    signal handlers as they were."""
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (loading, writing the report)
        print("gmpsim: interrupted", file=sys.stderr)
        return EXIT_ABORTED
    except BrokenPipeError:  # stdout closed (| head): nothing more to say
        return EXIT_ABORTED
    finally:
        if argv is not None:
            signal.signal(signal.SIGINT, saved[0])
            signal.signal(signal.SIGTERM, saved[1])


def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "clean":
        return cmd_clean(args)
    if args.cmd in ("run", "coordinator"):
        return cmd_run(args)
    if args.cmd == "agent":
        return cmd_agent(args)
    if args.cmd == "keys":
        return cmd_keys(args)
    if args.cmd == "bench":
        return bench_main(args.quick, args.json, args.scale)
    if args.cmd == "plot":
        return cmd_plot(args)
    if args.cmd == "compare":
        return compare_main(args.scenario, args.runs, args.tolerance, args.overrides, args.json, args.out,
                            args.markdown)
    return cmd_scenarios(args)


if __name__ == "__main__":
    sys.exit(main())
