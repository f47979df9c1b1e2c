"""`gmpsim clean`, `gmpsim scenarios` and `gmpsim plot`: the small local commands."""
from __future__ import annotations

import sys

from coordinator.commands import EXIT_BAD_INPUT, EXIT_OK
from coordinator.observe.plot import PlotError, plot_run
from coordinator.scenario import DEFAULT_SCENARIO, describe_builtins
from protocol.owner import clean


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
