"""Live progress of a run on a terminal: one line, redrawn in place at most ~8 times a second.

    steady  goroutines 212/307 done  threads 14  idle 3  spinning 1  Ps in syscall 2/4  faults 0  Go 1.62 s  wall 1.73 s

`LiveProgress` is a loop.Observer drawing with rich.live on its own Console (stderr by default). It
has no refresh thread: `after_step` compares the step's wall time with the next refresh time and
returns, which keeps it cheap on the loop's hot path; only every 1/8 s does it build and draw the
line. (So when the loop sleeps, e.g. a long timer with nothing else to do, the line waits too.)
`finished()` draws the last state with the outcome and stops the display, leaving that line above
whatever the CLI prints next (the summary). The CLI uses it only when `wanted(sys.stderr)`: on a
terminal, not on a pipe or a file, and not with --no-progress.
"""
from __future__ import annotations

from coordinator.observe.observer import Observer
from coordinator.runtime.sched import _Psyscall

REFRESH_S = 0.125  # at most 8 redraws a second


class LiveProgress(Observer):
    """See the module docstring. `console`: a rich Console (default: one on stderr); `label`: shown
    first (the scenario's name)."""

    def __init__(self, console=None, label: str = "", refresh_s: float = REFRESH_S):
        self.console = console
        self.label = label
        self.refresh_s = refresh_s
        self.faults = 0
        self.live = None
        self.wall0 = 0.0
        self.redraws = 0
        self._next = float("inf")  # wall time of the next redraw; inf until started

    @staticmethod
    def wanted(stream) -> bool:
        """Draw progress on `stream`? Only if it is a terminal."""
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
            return False

    def fault(self, kind: str, target=None, go_ns: int = 0) -> None:
        """A fault was injected (called by the fault injector)."""
        self.faults += 1

    # --- Observer -----------------------------------------------------------------------------------

    def started(self, sched, go_ns: int, wall: float) -> None:
        from rich.console import Console  # noqa: PLC0415 (only on a terminal, and heavy)
        from rich.live import Live  # noqa: PLC0415 (only on a terminal, and heavy)
        if self.console is None:
            self.console = Console(stderr=True)
        self.wall0 = wall
        self.live = Live(self.line(sched, go_ns, wall), console=self.console, auto_refresh=False,
                         transient=False, redirect_stdout=False, redirect_stderr=False)
        self.live.start(refresh=True)
        self.redraws += 1
        self._next = wall + self.refresh_s

    def after_step(self, sched, ev, effects, touched, go_ns: int, wall: float) -> None:
        if wall < self._next:
            return
        self._next = wall + self.refresh_s
        if self.live is not None:
            self.live.update(self.line(sched, go_ns, wall), refresh=True)
            self.redraws += 1

    def finished(self, sched, outcome, go_ns: int, wall: float) -> None:
        if self.live is not None:
            self.live.update(self.line(sched, go_ns, wall, getattr(outcome, "outcome", None)), refresh=True)
            self.redraws += 1
        self.close()

    def close(self) -> None:
        """Stop drawing and give the terminal back (cursor shown); idempotent."""
        live, self.live = self.live, None
        self._next = float("inf")
        if live is not None:
            live.stop()

    # --- the line -----------------------------------------------------------------------------------

    def line(self, sched, go_ns: int, wall: float, outcome: str | None = None):
        """The line to draw: items of "name value", two spaces apart, broken between items (never
        inside one) where the console is too narrow for all of them."""
        from rich.text import Text  # noqa: PLC0415 (only on a terminal, and heavy)
        stats = sched.stats
        psyscall = sum(1 for p in sched.allp if p.status == _Psyscall)
        done = f"{stats.get('goroutines_completed', 0)}/{stats.get('goroutines_created', 0)}"
        items = [Text.assemble((self.label, "bold"))] if self.label else []
        items += [
            Text.assemble("goroutines ", (done, "bold"), " done"),
            Text.assemble("threads ", (str(sched.mcount()), "bold cyan")),
            Text.assemble("idle ", (str(sched.nmidle), "cyan")),
            Text.assemble("spinning ", (str(sched.nmspinning), "cyan")),
            Text.assemble("Ps in syscall ", (f"{psyscall}/{len(sched.allp)}", "magenta")),
            Text.assemble("faults ", (str(self.faults), "red" if self.faults else "dim")),
            Text("Go " + _seconds(go_ns / 1e9)),
            Text("wall " + _seconds(max(0.0, wall - self.wall0))),
        ]
        if outcome is not None:
            items.append(Text(outcome, "bold green" if outcome == "ok" else "bold red"))
        width = self.console.width if self.console is not None else 80
        out, used = Text(no_wrap=True, overflow="ellipsis"), 0
        for item in items:
            n = item.cell_len
            if used and used + 2 + n > width:
                out.append("\n")
                used = 0
            elif used:
                out.append("  ")
                used += 2
            out.append_text(item)
            used += n
        return out


def _seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
