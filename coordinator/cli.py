"""The `gmpsim` command.

Exit codes: 0 the outcome is what the scenario expects · 1 it is not · 2 bad input · 3 aborted
(time limit or Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from coordinator.bench.bench import main as bench_main
from coordinator.commands import EXIT_ABORTED, EXIT_BAD_INPUT
from coordinator.commands.local import cmd_clean, cmd_plot, cmd_scenarios
from coordinator.commands.network import cmd_agent, cmd_keys
from coordinator.commands.run import cmd_run
from coordinator.compare.compare import main as compare_main
from coordinator.scenario import DEFAULT_SCENARIO


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
