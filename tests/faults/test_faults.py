"""The fault language (coordinator/faults/plan.py): its grammar, its TOML form and the --fault option;
pure, no processes. The seeded planner: test_faults_planner.py."""

from __future__ import annotations

import dataclasses

import pytest

from coordinator import cli
from coordinator.faults.plan import (
    KINDS,
    FaultError,
    FaultSpec,
    fault_from_table,
    fault_to_table,
    format_fault,
    parse_fault,
)

# --- the grammar ------------------------------------------------------------------------------

ROUND_TRIPS = [
    "kill-m:every=100ms",
    "kill-m:at=2.5ms",
    "kill-m:every=1ms,start=5ms,until=50ms,p=0.5,count=3,target=m:3",
    "stop-m:at=3ms,duration=20ms,target=random:idle",
    "stop-m:every=10ms,duration=1s,target=random:running",
    "exit-m:at=4ms,target=random:spinning",
    "exit-m:every=250us,p=0.25,target=random:syscall",
    "kill-template:at=5ms,restart=true",
    "kill-template:every=1s,restart=false,count=2",
    "fork-fail:p=1,start=2ms",
    "fork-fail:retry=true,p=0.5,until=9ms,count=4",
    "slow-fork:duration=3ms",
    "slow-fork:duration=0.5ms,p=0.1,start=1ms,until=2ms",
    "drop:p=0.1,type=*",
    "drop:type=wake+park",
    "delay:duration=2ms,type=execute,count=10",
    "duplicate:type=hello,p=0.5",
    "reorder:type=wake+cont+park,start=1ms",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_round_trip(text):
    spec = parse_fault(text)
    assert isinstance(spec, FaultSpec)
    assert parse_fault(format_fault(spec)) == spec
    assert format_fault(parse_fault(format_fault(spec))) == format_fault(spec)
    table = fault_to_table(spec)
    assert fault_from_table(table) == spec
    assert FaultSpec(**dataclasses.asdict(spec)) == spec  # constructing checks, and keeps a good spec


def test_every_kind_round_trips():
    assert {parse_fault(t).kind for t in ROUND_TRIPS} == set(KINDS)


def test_the_documented_examples():
    assert parse_fault("kill-m:every=100ms") == FaultSpec(kind="kill-m", target="random", every_ms=100.0)
    stop = parse_fault("stop-m:at=3ms,duration=20ms,target=random:idle")
    assert (stop.at_ms, stop.duration_ms, stop.target, stop.every_ms) == (3.0, 20.0, "random:idle", None)
    drop = parse_fault("drop:p=0.1,type=*")
    assert (drop.types, drop.probability, drop.target) == (("*",), 0.1, None)
    fork = parse_fault("fork-fail:p=1,start=2ms")
    assert (fork.probability, fork.start_ms, fork.retry, fork.until_ms) == (1.0, 2.0, False, None)
    tmpl = parse_fault("kill-template:at=5ms,restart=true")
    assert (tmpl.target, tmpl.at_ms, tmpl.restart) == ("template", 5.0, True)


def test_defaults():
    assert parse_fault("kill-template:at=1ms").restart is True
    assert parse_fault("kill-template:at=1ms").target == "template"
    assert parse_fault("kill-m:at=1ms").target == "random"
    assert parse_fault("fork-fail").retry is False
    assert parse_fault("fork-fail").probability == 1.0
    assert parse_fault("drop").types == ("*",)
    spec = parse_fault("duplicate:type=wake")
    assert (spec.start_ms, spec.until_ms, spec.count, spec.retry, spec.restart, spec.at_ms) == (
        0.0, None, None, None, None, None)
    assert parse_fault("drop:type=wake+park+wake").types == ("wake", "park")


@pytest.mark.parametrize("text, ms", [
    ("100ms", 100.0), ("2.5ms", 2.5), ("250us", 0.25), ("250µs", 0.25), ("1s", 1000.0), ("1.5s", 1500.0),
    (".5ms", 0.5), ("3.ms", 3.0), ("0", 0.0), ("0ms", 0.0),
])
def test_durations(text, ms):
    assert parse_fault(f"kill-m:at={text}").at_ms == ms


def test_whitespace_around_keys_and_values():
    assert parse_fault(" kill-m: every = 100ms , p = 0.5 ") == parse_fault("kill-m:every=100ms,p=0.5")


def cli_error(text: str) -> str:
    with pytest.raises(FaultError) as caught:
        parse_fault(text)
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)
    return message


@pytest.mark.parametrize("text, key, problem", [
    ("kill-m:every=fast", "every", "expected a duration like 100ms, got 'fast'"),
    ("kill-m:every=5", "every", "expected a duration like 100ms (units: us, ms, s), got '5'"),
    ("kill-m:every=5h", "every", "expected a duration like 100ms"),
    ("kill-m:every=-5ms", "every", "expected a duration like 100ms"),
    ("kill-m:every=0ms", "every", "expected a duration > 0 like 100ms, got '0ms'"),
    ("kill-m:at=1ms,every=2ms", "every", "expected at or every, not both"),
    ("kill-m", "at", "missing: kill-m needs at (once) or every (recurring)"),
    ("kill-template:restart=false", "at", "missing: kill-template needs at"),
    ("kill-m:at=1ms,count=2", "count", "only for a recurring fault (every), not with at"),
    ("kill-m:at=1ms,start=2ms", "start", "only for a recurring fault"),
    ("kill-m:at=1ms,until=2ms", "until", "only for a recurring fault"),
    ("kill-m:every=2ms,start=3ms,until=1ms", "until", "expected a time after start (3ms), got 1ms"),
    ("kill-m:every=2ms,until=0", "until", "expected a time after start (0ms), got 0ms"),
    ("kill-m:every=1ms,p=2", "p", "expected a probability from 0 to 1, got '2'"),
    ("kill-m:every=1ms,p=lots", "p", "expected a probability from 0 to 1 (like 0.1), got 'lots'"),
    ("kill-m:every=1ms,count=0", "count", "expected a whole number >= 1, got '0'"),
    ("kill-m:every=1ms,count=1.5", "count", "expected a whole number >= 1, got '1.5'"),
    ("kill-m:every=1ms,target=m:x", "target", "expected one of random, random:running, random:idle, "
                                              "random:spinning, random:syscall or m:<id>, got 'm:x'"),
    ("kill-m:every=1ms,target=m:-1", "target", "expected one of random"),
    ("kill-m:every=1ms,target=random:sleepy", "target", "expected one of random"),
    ("kill-m:every=1ms,target=template", "target", "expected one of random"),
    ("kill-template:at=1ms,target=m:1", "target", "expected 'template' (the host agent), got 'm:1'"),
    ("kill-m:duration=5ms", "duration", "not used by kill-m (its keys: target, at, every, start, until, p, count)"),
    ("kill-m:every=1ms,type=wake", "type", "not used by kill-m"),
    ("kill-m:every=1ms,retry=true", "retry", "not used by kill-m"),
    ("kill-m:every=1ms,restart=true", "restart", "not used by kill-m"),
    ("drop:target=m:1", "target", "not used by drop (its keys: type, start, until, p, count)"),
    ("drop:at=1ms", "at", "not used by drop"),
    ("drop:duration=1ms", "duration", "not used by drop"),
    ("fork-fail:every=1ms", "every", "not used by fork-fail (its keys: start, until, p, count, retry)"),
    ("slow-fork:retry=true,duration=1ms", "retry", "not used by slow-fork"),
    ("stop-m:at=1ms", "duration", "missing: stop-m needs duration (how long the M stays stopped)"),
    ("slow-fork", "duration", "missing: slow-fork needs duration (the delay between fork and mstart)"),
    ("delay:type=wake", "duration", "missing: delay needs duration (the longest delay a message gets)"),
    ("stop-m:at=1ms,duration=0ms", "duration", "expected a duration > 0 like 100ms, got '0ms'"),
    ("drop:type=wak", "type", "unknown message type 'wak'; did you mean 'wake'? (expected * or one of "),
    ("drop:type=wake+", "type", "unknown message type ''"),
    ("drop:type=*+wake", "type", "expected '*' alone (it means every type), got '*+wake'"),
    ("fork-fail:retry=yes", "retry", "expected true or false, got 'yes'"),
    ("kill-template:at=1ms,restart=1", "restart", "expected true or false, got '1'"),
    ("kil-m:at=1ms", "kind", "unknown fault kind 'kil-m'; did you mean 'kill-m'? (expected one of kill-m, "),
    (":at=1ms", "kind", "unknown fault kind ''"),
    ("kill-m:every=1ms,every=2ms", "every", "given twice"),
    ("kill-m:evry=1ms", "evry", "unknown key; did you mean 'every'? (keys: at, every, start, until, p, "
                               "duration, count, target, type, retry, restart)"),
    ("kill-m:every_ms=1", "every_ms", "unknown key; did you mean 'every'?"),
    ("kill-m:every", "every", "expected key=value, got 'every'"),
    ("kill-m:every=", "every", "expected a value after '='"),
    ("kill-m:every=1ms,,p=1", "options", "expected key=value, got ''"),
    ("kill-m:", "options", "expected key=value[,key=value...] after ':'"),
])
def test_errors_are_one_line_naming_the_field(text, key, problem):
    message = cli_error(text)
    assert message.startswith(f"--fault {text}: {key}: {problem}"), message


def test_error_attributes_and_where():
    with pytest.raises(FaultError) as caught:
        parse_fault("kill-m:every=fast", where="scenario x")
    assert (caught.value.where, caught.value.key) == ("scenario x", "every")
    assert str(caught.value) == "scenario x: every: expected a duration like 100ms, got 'fast'"
    assert cli_error("kill-m:every=a\nb").startswith("--fault kill-m:every=a\\nb: every: ")


def test_constructing_a_spec_checks_it():
    with pytest.raises(FaultError, match=r"^at_ms: missing: kill-m needs at_ms \(once\) or every_ms"):
        FaultSpec(kind="kill-m")
    with pytest.raises(FaultError, match=r"^kind: unknown fault kind \"nope\""):
        FaultSpec(kind="nope")
    with pytest.raises(FaultError, match=r"^probability: expected a probability from 0 to 1, got -0.5"):
        FaultSpec(kind="drop", probability=-0.5)
    with pytest.raises(FaultError, match=r"^every_ms: expected a number of Go ms > 0, got NaN"):
        FaultSpec(kind="kill-m", every_ms=float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_fault("drop").probability = 0.5
    assert FaultSpec(kind="kill-m", at_ms=3).at_ms == 3.0
    assert isinstance(FaultSpec(kind="kill-m", at_ms=3).at_ms, float)


# --- the TOML form ----------------------------------------------------------------------------

def test_tables():
    assert fault_from_table({"kind": "kill-m", "every_ms": 100}) == parse_fault("kill-m:every=100ms")
    assert fault_from_table({"kind": "stop-m", "at_ms": 2.5, "duration_ms": 20, "target": "random:idle"}) == (
        parse_fault("stop-m:at=2.5ms,duration=20ms,target=random:idle"))
    assert fault_from_table({"kind": "drop", "types": ["wake"], "probability": 0.1}) == (
        parse_fault("drop:type=wake,p=0.1"))
    assert fault_from_table({"kind": "fork-fail", "retry": True, "count": 2}) == (
        parse_fault("fork-fail:retry=true,count=2"))
    assert fault_to_table(parse_fault("delay:type=wake+park,duration=1ms,p=0.5")) == {
        "kind": "delay", "types": ["wake", "park"], "duration_ms": 1.0, "probability": 0.5}


@pytest.mark.parametrize("table, message", [
    ({"kind": "kill-m", "every_ms": "fast"}, 'faults[2].every_ms: expected a number of Go ms > 0, got "fast"'),
    ({"kind": "kill-m", "every": 1}, "faults[2].every: unknown key; did you mean 'every_ms'? (keys: kind, "),
    ({"every_ms": 1}, "faults[2].kind: missing: every fault needs a kind (one of kill-m, "),
    ({"kind": 3}, "faults[2].kind: unknown fault kind 3 (expected one of kill-m, "),
    ({"kind": "kill-m"}, "faults[2].at_ms: missing: kill-m needs at_ms (once) or every_ms (recurring)"),
    ({"kind": "drop", "types": "wake"}, 'faults[2].types: expected a list such as ["wake", "park"], or ["*"], got "wake"'),
    ({"kind": "drop", "types": [1]}, 'faults[2].types: expected message types, a list such as ["wake", "park"]'),
    ({"kind": "drop", "count": 2.0}, "faults[2].count: expected a whole number >= 1, got 2.0"),
    ({"kind": "drop", "count": True}, "faults[2].count: expected a whole number >= 1, got true"),
    ({"kind": "drop", "start_ms": 5, "until_ms": 5}, "faults[2].until_ms: expected a time after start_ms (5.0), got 5.0"),
    ({"kind": "kill-template", "at_ms": 1, "restart": "no"}, 'faults[2].restart: expected true or false, got "no"'),
    ([1, 2], "faults[2]: expected a table with a kind (a [[faults]] table), got [1, 2]"),
])
def test_table_errors(table, message):
    with pytest.raises(FaultError) as caught:
        fault_from_table(table, "faults[2]")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(message), str(caught.value)


# --- the command line ---------------------------------------------------------------------------

def test_cli_bad_fault_is_exit_2_with_one_line(capsys):
    assert cli.main(["run", "deadlock", "--fault", "kill-m:every=100ms", "--fault", "kill-m:every=fast"]) == 2
    err = capsys.readouterr().err
    assert err == "gmpsim: --fault kill-m:every=fast: every: expected a duration like 100ms, got 'fast'\n"


def test_cli_option_is_repeatable():
    args = cli.parser().parse_args(["run", "--fault", "kill-m:every=100ms", "--fault", "drop:p=0.1,type=*"])
    assert args.faults == ["kill-m:every=100ms", "drop:p=0.1,type=*"]
    assert cli.parser().parse_args(["run"]).faults == []
