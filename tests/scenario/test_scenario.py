"""Scenario loading (coordinator/scenario.py) and the built-in scenario files."""

from __future__ import annotations

import dataclasses

import pytest

from coordinator.scenario import (
    DEFAULT_SCENARIO,
    Scenario,
    ScenarioError,
    builtin_names,
    describe_builtins,
    load,
    loads,
)
from protocol.ops import TIMED, advance

MINIMAL = 'name = "t"\n[programs.main]\nops = [["run", 5]]\n'

EXPECTED_BUILTINS = {"syscall-storm", "spawn-burst", "locked-threads", "cgo-calls",
                     "thread-exhaustion", "deadlock", "steady", "scale-out",
                     "kill-storm", "message-chaos", "template-crash", "fork-eagain", "stop-resume"}


def write(tmp_path, text, name="x.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(ref, overrides=()):
    with pytest.raises(ScenarioError) as caught:
        load(ref, overrides)
    text = str(caught.value)
    assert "\n" not in text
    return text


def go_time_us(code: list) -> int:
    """Total timed Go microseconds one goroutine of this program spends (children excluded)."""
    total = 0
    pc, loops = advance(code, 0, [])
    while pc < len(code):
        if code[pc][0] in TIMED:
            total += code[pc][1]
        pc, loops = advance(code, pc + 1, loops)
    return total


# --- built-ins -----------------------------------------------------------------------------

def test_the_builtins_are_all_there():
    assert set(builtin_names()) == EXPECTED_BUILTINS
    assert DEFAULT_SCENARIO in builtin_names()
    assert [name for name, _ in describe_builtins()] == builtin_names()


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILTINS))
def test_every_builtin_loads_and_compiles(name):
    scenario = load(name)
    assert scenario.name == name
    assert scenario.source == f"builtin:{name}"
    assert scenario.description and "\n" not in scenario.description
    assert "main" in scenario.programs
    assert 0 < scenario.time_limit_s <= 300.0
    assert 0 < scenario.timescale <= 100.0
    # main's own timed work stays small: seconds of wall time, never near its time limit
    assert go_time_us(scenario.programs["main"]) * scenario.timescale / 1e6 < min(10, scenario.time_limit_s / 4)


def test_builtin_expectations():
    assert load("thread-exhaustion").expect == "fatal: thread exhaustion"
    assert load("thread-exhaustion").maxmcount == 10
    assert load("deadlock").expect == "fatal: all goroutines are asleep - deadlock!"
    assert load("deadlock").expect_fatal == "all goroutines are asleep - deadlock!"
    assert load("syscall-storm").expect == "ok"
    assert load("syscall-storm").expect_fatal is None
    assert load("spawn-burst").gomaxprocs == 4


# --- defaults and values ---------------------------------------------------------------

def test_defaults(tmp_path):
    scenario = load(write(tmp_path, '[programs.main]\nops = [["run", 5]]\n', "my-run.toml"))
    assert scenario == Scenario(
        name="my-run", description="", gomaxprocs=2, timescale=100.0, seed=1, maxmcount=10_000,
        schedtrace_ms=10, scheddetail=False, time_limit_s=60.0, expect="ok",
        programs={"main": [["run", 5]]}, source=str(tmp_path / "my-run.toml"),
    )
    assert isinstance(scenario.timescale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.gomaxprocs = 3


def test_all_keys(tmp_path):
    text = """
name = "all"
description = "every key"
gomaxprocs = 256
timescale = 0.5
seed = -3
maxmcount = 100000
schedtrace_ms = 0
scheddetail = true
time_limit_s = 5
expect = "fatal: boom"
[programs.main]
ops = [["go", "w", 2], ["wait"]]
[programs.w]
ops = [["repeat", 2, [["syscall", 10]]]]
"""
    scenario = load(write(tmp_path, text))
    assert (scenario.gomaxprocs, scenario.timescale, scenario.seed, scenario.maxmcount) == (256, 0.5, -3, 100000)
    assert (scenario.schedtrace_ms, scenario.scheddetail, scenario.time_limit_s) == (0, True, 5.0)
    assert scenario.expect_fatal == "boom"
    assert scenario.programs["w"] == [["rep", 2, 3], ["syscall", 10], ["endrep", 1]]


def test_loads_from_text():
    scenario = loads(MINIMAL, "inline")
    assert scenario.name == "t" and scenario.source == "inline"


# --- overrides -------------------------------------------------------------------------

def test_overrides_int_bool_float_and_strings():
    scenario = load("syscall-storm", ["gomaxprocs=4", "scheddetail=true", "timescale=20",
                                      'expect="fatal: x"', "name=foo", "description = two words "])
    assert scenario.gomaxprocs == 4
    assert scenario.scheddetail is True
    assert scenario.timescale == 20.0
    assert scenario.expect == "fatal: x"
    assert scenario.name == "foo"
    assert scenario.description == "two words"
    assert load("deadlock", ["expect=ok"]).expect == "ok"


def test_override_of_a_program_by_dotted_key():
    scenario = load("syscall-storm", ['programs.main.ops=[["run", 5]]'])
    assert scenario.programs["main"] == [["run", 5]]
    scenario = load("deadlock", ['programs.extra.ops=[["run", 1]]', 'programs.main.ops=[["go", "extra", 2]]'])
    assert scenario.programs == {"main": [["go", "extra", 2]], "extra": [["run", 1]]}


def test_later_overrides_win():
    assert load("syscall-storm", ["seed=5", "seed=6"]).seed == 6


def test_bad_override_value_is_blamed_on_the_override():
    assert error_of("syscall-storm", ["gomaxprocs=abc"]) == (
        '--set gomaxprocs=abc: gomaxprocs: expected an integer from 1 to 256, got "abc"')
    assert error_of("syscall-storm", ["scheddetail=yes"]) == (
        '--set scheddetail=yes: scheddetail: expected true or false, got "yes"')
    assert error_of("syscall-storm", ['programs.main.ops=[["run", -1]]']).startswith(
        '--set programs.main.ops=[["run", -1]]: programs.main.ops[0][1]: expected a whole number')


def test_bad_override_syntax_and_keys():
    assert error_of("syscall-storm", ["gomaxprocs"]).startswith("--set gomaxprocs: expected key=value")
    assert error_of("syscall-storm", ["=4"]).startswith("--set =4: expected key=value")
    assert error_of("syscall-storm", ["gomaxproc=4"]) == (
        "--set gomaxproc=4: gomaxproc: unknown key; did you mean 'gomaxprocs'? (known keys: name, "
        "description, gomaxprocs, timescale, seed, maxmcount, schedtrace_ms, scheddetail, time_limit_s, "
        "expect, lost_after_ms, check_invariants, trace, usleep_slack_us, spare_ms, programs, faults)")
    assert error_of("syscall-storm", ["gomaxprocs.x=4"]) == (
        "--set gomaxprocs.x=4: gomaxprocs: is not a table, so it has no keys to set")
    assert error_of("syscall-storm", ["programs.main.opz=[]"]).startswith(
        "--set programs.main.opz=[]: programs.main.opz: unknown key; did you mean 'ops'?")


def test_errors_in_the_file_are_still_blamed_on_the_file(tmp_path):
    path = write(tmp_path, MINIMAL + "gomaxprocs = 0\n")
    # the [programs.main] table swallowed the key above, so it is an unknown program key
    assert error_of(path, ["seed=2"]) == (
        f"{path}: programs.main.gomaxprocs: unknown key (known keys: ops)")


# --- errors: one line naming the file and the key --------------------------------------

@pytest.mark.parametrize(
    "line, message",
    [
        ('gomaxprocs = "two"', 'gomaxprocs: expected an integer from 1 to 256, got "two"'),
        ("gomaxprocs = 0", "gomaxprocs: expected an integer from 1 to 256, got 0"),
        ("gomaxprocs = 257", "gomaxprocs: expected an integer from 1 to 256, got 257"),
        ("gomaxprocs = 2.0", "gomaxprocs: expected an integer from 1 to 256, got 2.0"),
        ("gomaxprocs = true", "gomaxprocs: expected an integer from 1 to 256, got true"),
        ("timescale = 0", "timescale: expected a number > 0, got 0"),
        ("timescale = nan", "timescale: expected a number > 0, got NaN"),
        ("timescale = inf", "timescale: expected a number > 0, got Infinity"),
        ("time_limit_s = -1.5", "time_limit_s: expected a number > 0, got -1.5"),
        ("seed = 1.5", "seed: expected a 64-bit integer, got 1.5"),
        ("seed = 9223372036854775808", "seed: expected a 64-bit integer, got 9223372036854775808"),
        ("maxmcount = 0", "maxmcount: expected an integer from 1 to 100000, got 0"),
        ("maxmcount = 100001", "maxmcount: expected an integer from 1 to 100000, got 100001"),
        ("schedtrace_ms = -1", "schedtrace_ms: expected a whole number of Go milliseconds >= 0, got -1"),
        ('scheddetail = "true"', 'scheddetail: expected true or false, got "true"'),
        ('expect = "fatal"', 'expect: expected "ok" or "fatal: <message>", got "fatal"'),
        ('expect = "fatal: "', 'expect: expected "ok" or "fatal: <message>", got "fatal: "'),
        ("name = 3", "name: expected a one-line name of 1 to 200 characters, got 3"),
        ('name = ""', 'name: expected a one-line name of 1 to 200 characters, got ""'),
        ("description = []", "description: expected a string, got []"),
        ("gomaxproc = 4", "gomaxproc: unknown key; did you mean 'gomaxprocs'?"),
        ("[faults]", "faults: expected an array of [[faults]] tables, got {}"),
        ("lost_after_ms = 0", "lost_after_ms: expected a number > 0, got 0"),
        ('lost_after_ms = "2s"', 'lost_after_ms: expected a number > 0, got "2s"'),
        ("check_invariants = 1", "check_invariants: expected true or false, got 1"),
        ("faults = 3", "faults: expected an array of [[faults]] tables, got 3"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, line, message):
    path = write(tmp_path, line + "\n" + MINIMAL.replace('name = "t"\n', ""))
    assert error_of(path).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[programs.w]\nops = [["run", 1]]\n', 'programs: a "main" program is required'),
        ('name = "x"\n', "programs: missing: a [programs.main] table with an ops list is required"),
        ("programs = 3\n", "programs: expected a table of [programs.<name>] tables, got 3"),
        ("[programs]\nmain = 3\n", "programs.main: expected a table with an ops list, got 3"),
        ("[programs.main]\n", "programs.main.ops: missing: every program needs an ops list"),
        ('[programs.main]\nops = [["run", 1]]\nopz = 1\n', "programs.main.opz: unknown key; did you mean 'ops'?"),
        ('[programs.main]\nops = [["run", 1], ["jump"]]\n', "programs.main.ops[1]: unknown op 'jump' (expected one of run, "),
        ('[programs.main]\nops = [["go", "nope", 1]]\n', "programs.main.ops[0]: \"go\" names program 'nope', which is not defined"),
        ('[programs.main]\nops = [["run", 1]]\n[programs."a b"]\nops = []\n', "programs: expected a program name of 1 to 64"),
    ],
)
def test_program_errors_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}: {message}")


def test_bad_toml_reports_the_line(tmp_path):
    path = write(tmp_path, 'name = "x"\n\ngomaxprocs = = 3\n')
    text = error_of(path)
    assert text.startswith(f"{path}: line 3: invalid TOML: ")
    assert "column" in text


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"name = \"\xff\"\n")
    assert error_of(str(path)).startswith(f"{path}: invalid TOML: not UTF-8 text")


def test_unknown_reference_lists_the_builtins():
    assert error_of("bogus") == (
        "bogus: no such scenario file or built-in scenario (built-ins: " + ", ".join(builtin_names()) + ")")
    assert error_of("nope/x.toml").startswith("nope/x.toml: no such scenario file")


def test_directory_is_not_a_scenario(tmp_path):
    assert error_of(str(tmp_path)) == f"{tmp_path}: is a directory, expected a scenario file (.toml)"


def test_a_path_that_looks_like_a_builtin_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deadlock.toml").write_text(MINIMAL, encoding="utf-8")
    assert load("deadlock.toml").name == "t"
    assert load("./deadlock.toml").source == "./deadlock.toml"
    assert load("deadlock").source == "builtin:deadlock"


# --- faults and the fault-related keys ----------------------------------------------------

def test_fault_keys_defaults():
    scenario = loads(MINIMAL)
    assert scenario.faults == ()
    assert scenario.lost_after_ms == 2000.0
    assert scenario.check_invariants is True


def test_fault_keys_values(tmp_path):
    from coordinator.faults.plan import FaultSpec, parse_fault
    # top-level keys come before the tables
    text = 'lost_after_ms = 500\ncheck_invariants = false\n' + MINIMAL + """
[[faults]]
kind = "kill-m"
every_ms = 100
target = "random:running"
count = 3

[[faults]]
kind = "stop-m"
at_ms = 2.5
duration_ms = 20

[[faults]]
kind = "drop"
types = ["wake", "park"]
probability = 0.1
until_ms = 50

[[faults]]
kind = "fork-fail"
retry = true
start_ms = 2

[[faults]]
kind = "kill-template"
at_ms = 5
restart = false
"""
    scenario = load(write(tmp_path, text))
    assert scenario.lost_after_ms == 500.0 and isinstance(scenario.lost_after_ms, float)
    assert scenario.check_invariants is False
    assert scenario.faults == (
        parse_fault("kill-m:every=100ms,target=random:running,count=3"),
        parse_fault("stop-m:at=2.5ms,duration=20ms"),
        parse_fault("drop:type=wake+park,p=0.1,until=50ms"),
        parse_fault("fork-fail:retry=true,start=2ms"),
        parse_fault("kill-template:at=5ms,restart=false"),
    )
    assert all(isinstance(f, FaultSpec) for f in scenario.faults)
    assert scenario.faults[1].duration_ms == 20.0


def test_faults_by_override():
    scenario = load("syscall-storm", ['faults=[{kind = "kill-m", at_ms = 3}]', "lost_after_ms=100",
                                      "check_invariants=false"])
    assert [f.kind for f in scenario.faults] == ["kill-m"]
    assert scenario.faults[0].at_ms == 3.0
    assert (scenario.lost_after_ms, scenario.check_invariants) == (100.0, False)
    assert error_of("syscall-storm", ['faults=[{kind = "kill-m", every_ms = "fast"}]']) == (
        '--set faults=[{kind = "kill-m", every_ms = "fast"}]: faults[0].every_ms: '
        'expected a number of Go ms > 0, got "fast"')


@pytest.mark.parametrize(
    "table, message",
    [
        ('kind = "kil-m"\nat_ms = 1', "faults[0].kind: unknown fault kind \"kil-m\"; did you mean 'kill-m'?"),
        ("at_ms = 1", "faults[0].kind: missing: every fault needs a kind"),
        ('kind = "kill-m"', "faults[0].at_ms: missing: kill-m needs at_ms (once) or every_ms (recurring)"),
        ('kind = "kill-m"\nat_ms = 1\nevery_ms = 2', "faults[0].every_ms: expected at_ms or every_ms, not both"),
        ('kind = "kill-m"\nevery = 2', "faults[0].every: unknown key; did you mean 'every_ms'?"),
        ('kind = "kill-m"\nat_ms = -1', "faults[0].at_ms: expected a number of Go ms >= 0, got -1"),
        ('kind = "kill-m"\nat_ms = true', "faults[0].at_ms: expected a number of Go ms >= 0, got true"),
        ('kind = "kill-m"\nat_ms = 1\nduration_ms = 3', "faults[0].duration_ms: not used by kill-m"),
        ('kind = "stop-m"\nat_ms = 1', "faults[0].duration_ms: missing: stop-m needs duration_ms"),
        ('kind = "drop"\ntypes = "wake"', 'faults[0].types: expected a list such as ["wake", "park"], or ["*"], got "wake"'),
        ('kind = "drop"\ntypes = []', 'faults[0].types: expected a list such as ["wake", "park"], or ["*"], got []'),
        ('kind = "drop"\ntypes = ["wak"]', "faults[0].types: unknown message type 'wak'; did you mean 'wake'?"),
        ('kind = "drop"\nprobability = 1.5', "faults[0].probability: expected a probability from 0 to 1, got 1.5"),
        ('kind = "drop"\ncount = 0', "faults[0].count: expected a whole number >= 1, got 0"),
        ('kind = "fork-fail"\nretry = "yes"', 'faults[0].retry: expected true or false, got "yes"'),
        ('kind = "kill-m"\nevery_ms = 1\ntarget = "m:x"', "faults[0].target: expected one of random, "),
    ],
)
def test_bad_fault_tables_name_file_and_key(tmp_path, table, message):
    path = write(tmp_path, MINIMAL + "[[faults]]\n" + table + "\n")
    assert error_of(path).startswith(f"{path}: {message}")


def test_bad_second_fault_names_its_index(tmp_path):
    path = write(tmp_path, MINIMAL + '[[faults]]\nkind = "drop"\n[[faults]]\nkind = "delay"\n')
    assert error_of(path) == (f"{path}: faults[1].duration_ms: missing: delay needs duration_ms "
                              "(the longest delay a message gets)")
    path = write(tmp_path, 'faults = [3]\n' + MINIMAL, "z.toml")
    assert error_of(path) == f"{path}: faults[0]: expected a table with a kind (a [[faults]] table), got 3"


def test_usleep_slack_defaults_to_this_machines_and_is_bounded():
    from coordinator.runtime.sysmon import USLEEP_SLACK_US
    assert load("steady").usleep_slack_us == USLEEP_SLACK_US
    assert load("steady", ["usleep_slack_us=0"]).usleep_slack_us == 0
    with pytest.raises(ScenarioError, match=r"usleep_slack_us: expected Go µs from 0 to 10000, got -1"):
        load("steady", ["usleep_slack_us=-1"])
