"""Hostile input (issue 13): every bad command line, file and name gets one line and exit 2.

The table is input -> exit code and the one line it must print (a regex searched in stderr); each
row runs the real `gmpsim` command. A hostile machine: test_hostile_machine.py; hostile peers:
test_hostile_peers.py.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.gmpsim_cli import gmpsim
from tests.shell.hostile_cli import GMPSIM, TINY


@pytest.fixture
def files(tmp_path):
    """Hostile files for the table: built once per test in tmp_path."""
    (tmp_path / "plain").write_text("x")
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "big.toml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    (tmp_path / "nested.toml").write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "nul.toml").write_text('name = "a\\u0000b"\n[programs.main]\nops = [["run", 1]]\n')
    (tmp_path / "abs.toml").write_text('name = "/tmp/abs"\n[programs.main]\nops = [["run", 1]]\n')
    (tmp_path / "go.toml").write_text('[programs.main]\nops = [["go", "w", 200000]]\n[programs.w]\nops = [["run", 1]]\n')
    keys = tmp_path / "garbage-keys"
    keys.mkdir()
    for name in ("coordinator.key", "coordinator.key_secret", "agent.key", "agent.key_secret"):
        (keys / name).write_bytes(os.urandom(300))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "report.json").mkdir()  # (a read-only file would not stop root)
    return tmp_path


# (argv, exit code, the line stderr must contain); {t} is the test's tmp_path
CASES = [
    # --out
    (["run", "steady", "--out", "{t}/plain"], 2, r"--out .*plain: not a directory"),
    (["run", "steady", "--out", "{t}/plain/sub"], 2, r"--out .*plain/sub: Not a directory"),
    (["run", "steady", "--out", "/proc/gmpsim"], 2, r"--out /proc/gmpsim: "),
    (["run", "steady", "--out", "/sys/gmpsim"], 2, r"--out /sys/gmpsim: "),
    (["run", "steady", "--out", "/dev/null"], 2, r"--out /dev/null: not a directory"),
    (["run", "steady", "--out", "{t}/" + "x" * 300], 2, r"File name too long"),
    (["run", "steady", "--out", ""], 2, r"--out '': expected a directory"),
    (["run", "steady", "--out", "{t}/ro"], 2, r"report.json there cannot be overwritten"),
    # scenarios
    (["run", "{t}/fifo.toml"], 2, r"fifo.toml: not a regular file"),
    (["run", "{t}/big.toml"], 2, r"big.toml: larger than 1 MiB"),
    (["run", "{t}/nested.toml"], 2, r"nested.toml: invalid TOML: .*nested too deeply"),
    (["run", "steady", "--set", "programs.main.ops=" + "[" * 3000 + "]" * 3000], 2, r"--set .*nested too deeply"),
    (["run", "{t}/nul.toml"], 2, r"nul.toml: name: expected printable characters only"),
    (["run", "{t}/go.toml"], 2, r"expected a whole number of goroutines from 1 to 100000, got 200000"),
    (["run", "steady", "--set", "timescale=1e-300"], 2, r"--set timescale=1e-300: timescale: expected wall µs per Go µs"),
    (["run", "steady", "--set", "timescale=1e300"], 2, r"timescale: expected wall µs per Go µs"),
    (["run", "steady", "--set", "faults.kind=1"], 2, r"^gmpsim: --set faults.kind=1: faults: "),
    (["run", "steady", "--set", "maxmcount=100000000"], 2, r"maxmcount: expected an integer from 1 to 100000"),
    (["run", "steady", "--set", "name=a\tb"], 2, r"name: expected printable characters only"),
    # faults
    (["run", "steady", "--fault", "kill-m:every=0.000001us"], 2, r"every: expected a period of at least 0.001ms"),
    (["run", "steady", "--fault", "kill-m:every=1ms,count=99999999"], 2, r"count: expected at most 1000000"),
    (["run", "steady", "--fault", "kill-m:at=99999999999999s"], 2, r"at: expected at most"),
    (["run", "steady", "--fault", "stop-m:every=1ms,duration=99999999999s"], 2, r"duration: expected at most"),
    # --listen / --connect / keys / names
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:99999", "--insecure"], 2, r"expected a port from 1 to 65535, got 99999"),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1", "--insecure"], 2, r"--listen 'tcp://127.0.0.1': expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "tcp://no such:7", "--insecure"], 2, r"expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "udp://1.2.3.4:5", "--insecure"], 2, r"expected tcp://ADDR:PORT"),
    (["coordinator", "steady", "--listen", "tcp://0.0.0.0:7070", "--insecure"], 2, r"not a loopback address.*--insecure-anywhere"),
    (["coordinator", "steady", "--listen", "tcp://*:7070", "--insecure"], 2, r"not a loopback address"),
    (["coordinator", "steady", "--listen", "tcp://nosuch.invalid:7070", "--insecure", "--insecure-anywhere"], 2,
     r"^gmpsim: --listen tcp://nosuch.invalid:7070: "),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:7070", "--insecure-anywhere", "--keys", "{t}"], 2, r"--insecure-anywhere goes with --insecure"),
    (["coordinator", "steady", "--listen", "tcp://127.0.0.1:7070", "--keys", "{t}/garbage-keys"], 2, r"is not a key file made by `gmpsim keys`"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a", "--keys", "{t}/garbage-keys"], 2, r"is not a key file made by `gmpsim keys`"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "x" * 300, "--insecure"], 2, r"--name 'x+': expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "", "--insecure"], 2, r"--name '': expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a/b", "--insecure"], 2, r"expected 1 to 64"),
    (["agent", "--connect", "tcp://127.0.0.1:0", "--name", "a", "--insecure"], 2, r"expected a port from 1 to 65535"),
    (["agent", "--connect", "tcp://127.0.0.1:7070", "--name", "a", "--insecure", "--wait", "-1"], 2, r"--wait -1: expected seconds"),
    # plot
    (["plot", "{t}", "--out", "/proc/x.png"], 2, r"no trace.json"),
    (["run", "steady", "--metrics-port", "99999"], 2, r"expected a port from 0 to 65535"),
]


@pytest.mark.parametrize("argv,code,line", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_hostile_input_gets_one_line_and_exit_2(files, tmp_path, argv, code, line):
    import re
    args = [a.replace("{t}", str(files)) for a in argv]
    r = gmpsim(*args, timeout=60)
    assert r.code == code, (r.code, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert re.search(line, r.stderr, re.M), r.stderr[-2000:]
    assert len([ln for ln in r.stderr.splitlines()
                if ln.startswith("gmpsim:") and not ln.startswith("gmpsim: warning:")]) == 1, r.stderr


def test_scenario_name_cannot_escape_runs(tmp_path):
    """name = "/tmp/abs" or "../../x": the default output directory stays inside runs/."""
    (tmp_path / "esc.toml").write_text('name = "../../x/" \n[programs.main]\nops = [["run", 1]]\n')
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([*GMPSIM, "run", str(tmp_path / "esc.toml"), *TINY], cwd=work, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode == 0, p.stderr
    (run,) = os.listdir(work / "runs")
    assert run.startswith("_.._x_-") and (work / "runs" / run / "report.json").exists()
    assert sorted(os.listdir(work)) == ["runs"] and not (tmp_path / "x").exists()


def test_plot_out_under_proc_is_one_line(tmp_path):
    out = tmp_path / "run"
    r = gmpsim("run", "steady", *TINY, out_dir=out)
    assert r.code == 0, r.stderr
    p = gmpsim("plot", str(out), "--out", "/proc/gmpsim.png")
    assert p.code == 2 and "Traceback" not in p.stderr and p.stderr.startswith("gmpsim: "), p.stderr


def test_tiny_fault_period_is_refused_before_anything_starts(tmp_path):
    r = gmpsim("run", "steady", "--fault", "kill-m:every=0.000001us", out_dir=tmp_path / "run")
    assert r.code == 2 and "every:" in r.stderr


def test_safe_name_keeps_the_file_system_safe():
    from coordinator.scenario import safe_name
    assert safe_name("/tmp/abs") == "_tmp_abs"
    assert safe_name("../../x") == "_.._x"
    assert safe_name("é" * 200) == "_"
    assert safe_name("...") == "scenario" and safe_name("steady") == "steady"
    assert len(safe_name("a" * 300)) == 64
