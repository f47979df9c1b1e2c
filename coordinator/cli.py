"""The `gmpsim` command.

Exit codes: 0 the outcome is what the scenario expects · 1 it is not · 2 bad input · 3 aborted
(time limit or Ctrl-C).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time

from .faults import FaultError, parse_fault
from .scenario import DEFAULT_SCENARIO, ScenarioError, describe_builtins, load

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # only for --version: it is heavy
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
    agent.add_argument("--name", required=True, help="this host's name (unique per host)")
    _security_options(agent)
    bench = sub.add_parser("bench", help="measure this machine: M creation, wake, coordinator throughput, scale")
    bench.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.add_argument("--scale", metavar="N", type=_scale_n, default=None,
                       help="goroutines blocked at once in the scale run (default 2000; 100 with --quick)")
    keys = sub.add_parser("keys", help="write CURVE key pairs for the coordinator and the agents into DIR")
    keys.add_argument("dir", metavar="DIR")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    plot = sub.add_parser("plot", help="draw RUN_DIR/trace.json into RUN_DIR/threads.png (needs matplotlib)")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")
    plot.add_argument("--out", help="the PNG to write (default RUN_DIR/threads.png)")
    return ap


def _security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="DIR", help="CURVE keys made by `gmpsim keys DIR` (required over TCP)")
    p.add_argument("--insecure", action="store_true", help="plain TCP without CURVE: anyone who can connect can act")


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
    if report["invariants"]["violations"]:
        return False
    if report["outcome"] == "ok":
        return exp == "ok" and report["goroutines"]["lost"] == 0 and not any(report["leaks"].values())
    if report["outcome"] == "fatal":
        return exp == f"fatal: {report['fatal']['message']}" and not any(report["leaks"].values())
    return False


def check_port(port: int, addr: str) -> None:
    """Raise OSError now if addr:port cannot be bound (bad address, port in use), so that the CLI
    says so before the run rather than in the middle of it."""
    import socket
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))


def cmd_run(args) -> int:
    from .report import summary, write_report
    from .run import run_scenario
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
    out_dir = args.out or os.path.join("runs", f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
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
            from .metrics import MetricsExporter
            observers.append(MetricsExporter(args.metrics_port, args.metrics_addr, announce=sys.stderr))
        if not args.no_progress and sys.stderr.isatty():
            from .progress import LiveProgress
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
    from setproctitle import setproctitle
    setproctitle("gmpsim coordinator")  # ps and top; the agent and each M name themselves too
    try:
        report, out = run_scenario(sc, out_dir, make_observers, **remote)
    finally:  # finished() closes them; this is for a run that ended before it could
        for o in observers:
            o.close()
    write_report(report, os.path.join(out_dir, "report.json"))
    if out.outcome == "fatal":
        print("\n".join(out.fatal_lines), file=sys.stderr)
    print(summary(report, out_dir))
    replay = f"gmpsim {args.cmd} {args.scenario} --seed {sc.seed}" + "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    if args.cmd == "coordinator":
        replay += f" --listen {args.listen} --hosts {args.hosts} --placement {args.placement}"
        replay += " --insecure" if args.insecure else f" --keys {shlex.quote(args.keys)}"
    replay += "".join(f" --fault {shlex.quote(f)}" for f in args.faults)
    print(f"replay: {replay}")
    if out.outcome == "aborted":
        return EXIT_ABORTED
    return EXIT_OK if expected(report) else EXIT_UNEXPECTED


def cmd_scenarios(args) -> int:
    items = describe_builtins()
    width = max(len(n) for n, _ in items)
    for name, desc in items:
        mark = " (default)" if name == DEFAULT_SCENARIO else ""
        print(f"{name.ljust(width)}  {desc}{mark}")
    return EXIT_OK


def _check_security(args, endpoint: str) -> str | None:
    """Over TCP, CURVE is on unless --insecure says otherwise: a keys directory is required."""
    if not endpoint.startswith("tcp://"):
        return f"{endpoint}: expected tcp://ADDR:PORT"
    if args.insecure:
        return None
    if not args.keys:
        return "--keys DIR is required over TCP (CURVE; make them with `gmpsim keys DIR`), or say --insecure"
    for name in ("coordinator.key", "agent.key", "coordinator.key_secret" if args.cmd == "coordinator" else "agent.key_secret"):
        if not os.path.exists(os.path.join(args.keys, name)):
            return f"--keys {args.keys}: no {name} there (make the keys with `gmpsim keys {args.keys}`)"
    return None


def cmd_agent(args) -> int:
    """`gmpsim agent`: the host agent is its own program (python -m worker.agent); this becomes it."""
    err = _check_security(args, args.connect)
    if err:
        print(f"gmpsim: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    argv = [sys.executable, "-m", "worker.agent", "--connect", args.connect, "--name", args.name]
    argv += ["--insecure"] if args.insecure else ["--keys", args.keys]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def cmd_keys(args) -> int:
    from protocol.transport import make_keys
    try:
        written = make_keys(args.dir)
    except OSError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return EXIT_OK


def cmd_plot(args) -> int:
    from .plot import PlotError, plot_run
    try:
        path = plot_run(args.run_dir, args.out)
    except PlotError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd in ("run", "coordinator"):
        return cmd_run(args)
    if args.cmd == "agent":
        return cmd_agent(args)
    if args.cmd == "keys":
        return cmd_keys(args)
    if args.cmd == "bench":
        from .bench import main as bench_main
        return bench_main(args.quick, args.json, args.scale)
    if args.cmd == "plot":
        return cmd_plot(args)
    return cmd_scenarios(args)


if __name__ == "__main__":
    sys.exit(main())
