"""The `gmpsim` command.

Exit codes: 0 the outcome is what the scenario expects · 1 it is not · 2 bad input · 3 aborted
(time limit or Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from .scenario import DEFAULT_SCENARIO, ScenarioError, describe_builtins, load

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3


def _version() -> str:
    try:
        return version("gmpsim")
    except PackageNotFoundError:
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # bad usage is bad input: exit 2 with one line
        self.exit(EXIT_BAD_INPUT, f"gmpsim: {message}\n")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="gmpsim", description="Re-enact the Go runtime's M machinery with real processes.")
    ap.add_argument("--version", action="version", version=f"gmpsim {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a scenario (default: %s)" % DEFAULT_SCENARIO)
    run.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, help="a built-in name or a TOML file")
    run.add_argument("--out", help="output directory (default runs/<scenario>-<timestamp>/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (repeatable)")
    run.add_argument("--seed", type=int, help="same as --set seed=N")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    return ap


def expected(report: dict) -> bool:
    """Is the outcome the one the scenario expects? ("ok", or "fatal: <message>")."""
    exp = report["expect"]
    if report["outcome"] == "ok":
        return exp == "ok" and report["goroutines"]["lost"] == 0 and not any(report["leaks"].values())
    if report["outcome"] == "fatal":
        return exp == f"fatal: {report['fatal']['message']}" and not any(report["leaks"].values())
    return False


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
    out_dir = args.out or os.path.join("runs", f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    report, out = run_scenario(sc, out_dir)
    write_report(report, os.path.join(out_dir, "report.json"))
    if out.outcome == "fatal":
        print("\n".join(out.fatal_lines), file=sys.stderr)
    print(summary(report, out_dir))
    replay = f"gmpsim run {args.scenario} --seed {sc.seed}" + "".join(f" --set {o}" for o in args.overrides)
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    return cmd_scenarios(args)


if __name__ == "__main__":
    sys.exit(main())
