"""coordinator/observe/progress.py: the live progress line, drawn by rich into a StringIO console that says it is
a terminal, fed by a scripted run of the pure core; and the real CLI on a pseudo-terminal."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from rich.console import Console

from coordinator.observe.progress import REFRESH_S, LiveProgress

from .test_metrics import WALL0, observed_world

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=200, color_system=None), buf


def frames(text: str) -> list[str]:
    """The lines drawn, one per redraw (rich redraws a line in place: \\r, erase line)."""
    return [f.strip() for f in re.split(r"[\r\n]", ANSI.sub("", text)) if f.strip()]


def test_draws_the_counts_as_the_run_goes():
    con, buf = console()
    lp = LiveProgress(con, label="syscall-storm")
    w = observed_world("syscall-storm", [lp])
    assert frames(buf.getvalue())[-1].startswith("syscall-storm  goroutines 0/1 done  threads 2  idle 0  spinning 0  "
                                                 "Ps in syscall 0/2  faults 0  Go 0.0 ms  wall 0.0 ms")
    w.run(until_ns=3_000_000)
    lp.after_step(w.sched, None, [], set(), w.now, w.wall() + REFRESH_S)  # the next redraw is due
    sched = w.sched
    mid = frames(buf.getvalue())[-1]
    assert (f"goroutines {sched.stats['goroutines_completed']}/{sched.stats['goroutines_created']} done  "
            f"threads {sched.mcount()}  idle {sched.nmidle}  spinning {sched.nmspinning}  "
            f"Ps in syscall {sum(p.status == 2 for p in sched.allp)}/2") in mid
    assert sched.mcount() > 2
    lp.fault("kill", 3, w.now)
    w.run()
    lp.finished(w.sched, type("Outcome", (), {"outcome": "ok"})(), w.now, w.wall())
    out = buf.getvalue()
    last = frames(out)[-1]
    assert last.startswith("syscall-storm  goroutines 41/41 done  threads ")
    assert "faults 1" in last and last.endswith("ok")
    assert f"Go {w.now / 1e6:.1f} ms" in last
    # throttled: one redraw per 1/8 s of (fake) wall at most, not one per step
    span = w.wall() + REFRESH_S - WALL0
    assert 3 <= lp.redraws <= span / REFRESH_S + 3 < w.steps
    # the cursor, hidden while drawing, is shown again, and the display has stopped
    assert out.rfind("\x1b[?25h") > out.rfind("\x1b[?25l") >= 0
    assert lp.live is None
    lp.close()  # idempotent


def test_breaks_between_items_on_a_narrow_terminal():
    buf = io.StringIO()
    lp = LiveProgress(Console(file=buf, force_terminal=True, width=80, color_system=None), label="syscall-storm")
    w = observed_world("syscall-storm", [lp])
    w.run()
    lp.finished(w.sched, type("Outcome", (), {"outcome": "ok"})(), w.now, w.wall())
    a, b = frames(buf.getvalue())[-2:]
    assert a.startswith("syscall-storm  goroutines 41/41 done  threads ") and len(a) <= 80
    assert b.startswith("Ps in syscall 0/2  faults 0  Go ") and b.endswith("  ok")


def test_after_step_is_cheap_between_redraws():
    con, buf = console()
    lp = LiveProgress(con)
    w = observed_world("syscall-storm", [lp])
    n0, size = lp.redraws, len(buf.getvalue())
    t = time.perf_counter()
    for _ in range(10_000):
        lp.after_step(w.sched, None, [], set(), 0, WALL0)  # same wall time: no redraw due
    per_step = (time.perf_counter() - t) / 10_000
    assert lp.redraws == n0 and len(buf.getvalue()) == size
    assert per_step < 20e-6  # ~0.1 µs here; generous for loaded machines
    lp.close()


def test_wanted_only_on_a_terminal():
    assert LiveProgress.wanted(io.StringIO()) is False
    closed = io.StringIO()
    closed.close()
    assert LiveProgress.wanted(closed) is False
    assert LiveProgress.wanted(object()) is False
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert LiveProgress.wanted(tty) is True
    finally:
        os.close(master)
        os.close(slave)


def _run_on_pty(*args: str, tmp_path) -> tuple[int, str, str]:
    """gmpsim run with stderr on a pseudo-terminal (stdout a pipe): (code, stdout, terminal output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    got = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not data:
                return
            got.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # pytest sets 80x24
    p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", *args, "--out", str(tmp_path / "out")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    try:
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        reader.join(10)
        os.close(master)
    return p.returncode, out.decode(), got.decode(errors="replace")


@pytest.mark.processes
def test_cli_draws_progress_on_a_terminal_and_keeps_the_summary_clean(tmp_path):
    code, out, tty = _run_on_pty("syscall-storm", tmp_path=tmp_path)
    assert code == 0
    assert out.startswith("scenario         syscall-storm") and "\x1b" not in out
    drawn = frames(tty)
    assert drawn and drawn[-1].startswith("syscall-storm  goroutines 41/41 done  threads ")
    assert drawn[-1].endswith("ok")
    assert tty.rfind("\x1b[?25h") > tty.rfind("\x1b[?25l") >= 0  # the cursor is back


@pytest.mark.processes
def test_cli_no_progress(tmp_path):
    code, out, tty = _run_on_pty("syscall-storm", "--no-progress", tmp_path=tmp_path)
    assert code == 0 and out.startswith("scenario ") and tty == ""
