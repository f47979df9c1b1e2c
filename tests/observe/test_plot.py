"""threads.png (coordinator/observe/plot.py) and `gmpsim plot RUN_DIR`. matplotlib is optional: the tests
that draw skip without it; the errors (no trace.json, no matplotlib) are checked either way."""
from __future__ import annotations

import json
import struct

import pytest

from coordinator import cli
from coordinator.observe import plot
from tests.gmpsim_cli import gmpsim

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """A valid PNG's (width, height), from its IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real run (syscall-storm), shared by the tests that plot it. (Module-scoped, it starts before
    the leak fixture looks: the run's own count of what it left behind is checked instead.)"""
    out = tmp_path_factory.mktemp("plot") / "run"
    r = gmpsim("run", "syscall-storm", out_dir=out)
    assert r.code == 0, r.stdout + r.stderr
    assert r.report["leaks"] == {"processes": 0, "shm_segments": 0}
    return out


def fault_trace(tmp_path):
    """A small hand-made trace.json with a fault and a fatal error, for the marks."""
    c = lambda ts, th, idle, sys: {"ph": "C", "name": "sched", "ts": ts, "pid": 1, "tid": 1,  # noqa: E731
                                   "args": {"threads": th, "idlethreads": idle, "spinningthreads": 0,
                                            "runqueue": 0, "idleprocs": 0, "syscallprocs": sys}}
    doc = {"displayTimeUnit": "ms",
           "otherData": {"scenario": "handmade", "gomaxprocs": 2, "seed": 1, "timescale": 100.0,
                         "counters": ["threads", "idlethreads", "spinningthreads", "runqueue", "idleprocs",
                                      "syscallprocs"], "end_us": 3000, "outcome": "fatal"},
           "traceEvents": [{"ph": "M", "name": "process_name", "ts": 0, "pid": 1, "tid": 1, "args": {"name": "sched"}},
                           c(0, 2, 0, 0), c(1000, 5, 1, 2), c(2000, 3, 2, 1),
                           {"ph": "i", "name": "fault: kill-m M3", "ts": 1500, "pid": 1, "tid": 1, "s": "g"},
                           {"ph": "i", "name": "fatal", "ts": 2500, "pid": 1, "tid": 1, "s": "g",
                            "args": {"message": "M3 died unexpectedly"}}]}
    (tmp_path / "trace.json").write_text(json.dumps(doc))
    return tmp_path


@pytest.mark.processes
def test_a_real_run_writes_threads_png(matplotlib, real_run):
    png = real_run / "threads.png"
    assert png.exists(), "run_scenario writes threads.png when matplotlib is installed"
    w, h = png_size(png)
    assert (w, h) == (1100, 715)
    assert 20_000 < png.stat().st_size < 2_000_000


@pytest.mark.processes
def test_plot_run_redraws_a_real_run(matplotlib, real_run, tmp_path):
    out = plot.plot_run(str(real_run), str(tmp_path / "again.png"))
    assert out == str(tmp_path / "again.png")
    assert png_size(tmp_path / "again.png") == (1100, 715)
    t, vals = plot.series(plot.load_trace(str(real_run)))
    assert t == sorted(t) and max(vals["threads"]) > 2 and max(vals["syscallprocs"]) > 0


@pytest.mark.processes
def test_cli_plot(matplotlib, real_run, tmp_path, capsys):
    assert cli.main(["plot", str(real_run), "--out", str(tmp_path / "cli.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli.png")
    png_size(tmp_path / "cli.png")


def test_marks_faults_and_fatal(matplotlib, tmp_path):
    d = fault_trace(tmp_path)
    doc = plot.load_trace(str(d))
    assert plot.marks(doc) == [(1.5, "fault: kill-m M3"), (2.5, "fatal: M3 died unexpectedly")]
    path = plot.plot_run(str(d))
    assert path == str(d / "threads.png")
    png_size(d / "threads.png")


def test_cli_plot_without_trace_is_bad_input(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"gmpsim: {tmp_path}: no trace.json\n"


def test_cli_plot_without_matplotlib_is_bad_input(tmp_path, capsys, monkeypatch):
    d = fault_trace(tmp_path)
    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    assert cli.main(["plot", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib is not installed" in err
    assert not (d / "threads.png").exists()


def test_bad_trace_is_bad_input(tmp_path, capsys):
    (tmp_path / "trace.json").write_text("{not json")
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"gmpsim: {tmp_path / 'trace.json'}: not a trace")
