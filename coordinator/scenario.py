"""Scenario files: what a run simulates, read from TOML and checked before anything starts.

A scenario sets the scheduler's knobs (gomaxprocs, maxmcount, timescale, ...) and the
goroutine programs (see ``protocol.ops``).  Built-in scenarios ship as
``coordinator/scenarios/<name>.toml``; a user's file is loaded the same way.

Every problem is a ``ScenarioError`` whose message is ONE line naming where the bad value
came from (the file, or the ``--set`` override), the key, and what was expected -- because
that line is all a user sees before exit code 2.  Unknown keys are errors: a misspelt
``gomaxproc = 8`` must not silently run with the default.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from coordinator.faults.language import FaultError, FaultSpec, fault_from_table
from coordinator.runtime.sysmon import USLEEP_SLACK_US
from protocol.messages import MAX_SLOTS
from protocol.ops import OpError, compile_programs, format_value

# Spare Ms per host by default: enough that a burst of newm (sysmon's retakes, two Ps) finds one
# ready while the forker forks the next (the 1000-goroutine run: 4 found one for 995 of 999 newm,
# and made 192-270 threads by 100 ms of Go time against 148-218 with none; 8 and 16 did no better).
SPARE_MS = 4

DEFAULT_SCENARIO = "syscall-storm"
MAX_SCENARIO_BYTES = 1 << 20  # far above any real scenario; a bigger file is read no further
_BUILTIN_PACKAGE = "coordinator.scenarios"
_KEY_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class ScenarioError(ValueError):
    """A scenario cannot be used; ``str()`` is one line: ``<where>: <key>: <expected>``."""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario.  ``programs`` maps program name -> compiled code
    (``protocol.ops.compile_program``); ``source`` is the file path or ``builtin:<name>``."""

    name: str
    description: str
    gomaxprocs: int
    timescale: float
    seed: int
    maxmcount: int
    schedtrace_ms: int
    scheddetail: bool
    time_limit_s: float
    expect: str
    programs: dict[str, list]
    source: str
    faults: tuple[FaultSpec, ...] = ()   # [[faults]] tables, then --fault options
    lost_after_ms: float = 2000.0        # wall ms after which an M that does not answer is lost
    check_invariants: bool = True
    usleep_slack_us: float = USLEEP_SLACK_US  # the OS's lateness of sysmon's usleep (sysmon.py)
    trace: bool = True  # record trace.json (and so threads.png)
    spare_ms: int = SPARE_MS  # processes each forker keeps forked ahead for newosproc (worker/spare.py)

    @property
    def expect_fatal(self) -> str | None:
        """The fatal message the scenario expects (``None`` when it expects "ok")."""
        return self.expect[len("fatal: "):] if self.expect.startswith("fatal: ") else None


class _Invalid(Exception):
    """Internal: a bad value at ``key``; the loader adds where it came from."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


# --- field checkers: each returns the value to keep or raises _Invalid -----------------

def _integer(low: int, high: int | None, what: str = "an integer") -> Callable[[str, Any], int]:
    wanted = f"{what} from {low} to {high}" if high is not None else f"{what} >= {low}"

    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, f"expected {wanted}, got {format_value(value)}")
        if value < low or (high is not None and value > high):
            raise _Invalid(key, f"expected {wanted}, got {value}")
        return value

    return check


MIN_TIMESCALE, MAX_TIMESCALE = 0.001, 1e6  # wall µs per Go µs: beyond these, Go time is meaningless


def _timescale(key: str, value: Any) -> float:
    value = _positive_number(key, value)
    if not MIN_TIMESCALE <= value <= MAX_TIMESCALE:
        raise _Invalid(key, f"expected wall µs per Go µs from {MIN_TIMESCALE:g} to {MAX_TIMESCALE:g}, got {value:g}")
    return value


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _Invalid(key, f"expected a number > 0, got {format_value(value)}")
    return float(value)


def _slack(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10_000:
        raise _Invalid(key, f"expected Go µs from 0 to 10000, got {format_value(value)}")
    return float(value)


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(key, f"expected true or false, got {format_value(value)}")
    return value


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 200:
        raise _Invalid(key, f"expected a one-line name of 1 to 200 characters, got {format_value(value)}")
    if not value.isprintable():  # NUL, tab or another control character
        raise _Invalid(key, f"expected printable characters only, got {format_value(value)}")
    return value


_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SAFE_NAME = 64


def safe_name(name: str) -> str:
    """A scenario name reduced to what may reach the file system (runs/<safe>-<time>/): letters,
    digits, '_', '.', '-', at most 64 characters, never '.', '..' or a leading '.' (so
    ``/tmp/abs`` and ``../../x`` stay inside runs/)."""
    safe = _UNSAFE_IN_PATH.sub("_", name).lstrip(".")[:MAX_SAFE_NAME]
    return safe or "scenario"


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {format_value(value)}")
    return value


def _expect(key: str, value: Any) -> str:
    if isinstance(value, str) and (value == "ok" or (value.startswith("fatal: ") and value[7:].strip())):
        return value
    raise _Invalid(key, f'expected "ok" or "fatal: <message>", got {format_value(value)}')


_INT64 = 2**63 - 1


def _seed(key: str, value: Any) -> int:
    # Any integer msgpack can carry as a signed 64-bit value.
    if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 - 1 <= value <= _INT64:
        raise _Invalid(key, f"expected a 64-bit integer, got {format_value(value)}")
    return value

#: top-level key -> (checker, default).  ``name`` defaults to the file's stem.
_FIELDS: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "name": (_name, None),
    "description": (_text, ""),
    "gomaxprocs": (_integer(1, 256), 2),
    "timescale": (_timescale, 100.0),
    "seed": (_seed, 1),
    "maxmcount": (_integer(1, MAX_SLOTS), 10_000),  # every M needs a g0 slot
    "schedtrace_ms": (_integer(0, None, "a whole number of Go milliseconds"), 10),
    "scheddetail": (_boolean, False),
    "time_limit_s": (_positive_number, 60.0),
    "expect": (_expect, "ok"),
    "lost_after_ms": (_positive_number, 2000.0),
    "check_invariants": (_boolean, True),
    "trace": (_boolean, True),
    "usleep_slack_us": (_slack, USLEEP_SLACK_US),
    "spare_ms": (_integer(0, 64), SPARE_MS),
}
_KNOWN_KEYS = (*_FIELDS, "programs", "faults")


def _unknown_key(key: str, known: Iterable[str]) -> _Invalid:
    """``key`` may be dotted (``programs.main.opz``): the hint compares its last part."""
    known = list(known)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return _Invalid(key, f"unknown key{hint} (known keys: {', '.join(known)})")


def _program_sources(value: Any) -> dict[str, Any]:
    """``[programs.<name>]`` tables -> name -> raw ops, checking the table shape."""
    if not isinstance(value, dict):
        raise _Invalid("programs", f"expected a table of [programs.<name>] tables, got {format_value(value)}")
    sources = {}
    for name, table in value.items():
        key = f"programs.{name}"
        if not isinstance(table, dict):
            raise _Invalid(key, f"expected a table with an ops list, got {format_value(table)}")
        for extra in table:
            if extra != "ops":
                raise _unknown_key(f"{key}.{extra}", ["ops"])
        if "ops" not in table:
            raise _Invalid(f"{key}.ops", "missing: every program needs an ops list")
        sources[name] = table["ops"]
    return sources


def _faults(value: Any) -> tuple[FaultSpec, ...]:
    """``[[faults]]`` tables -> FaultSpecs (``coordinator.faults.language``), each error naming ``faults[i].key``."""
    if not isinstance(value, list):
        raise _Invalid("faults", f"expected an array of [[faults]] tables, got {format_value(value)}")
    specs = []
    for i, table in enumerate(value):
        try:
            specs.append(fault_from_table(table, f"faults[{i}]"))
        except FaultError as error:
            raise _Invalid(error.key, error.problem) from None
    return tuple(specs)


def _validate(doc: dict[str, Any], source: str, default_name: str) -> Scenario:
    for key in doc:
        if key not in _KNOWN_KEYS:
            raise _unknown_key(key, _KNOWN_KEYS)
    values = {}
    for key, (check, default) in _FIELDS.items():
        if key in doc:
            values[key] = check(key, doc[key])
        else:
            values[key] = default_name if key == "name" else default
    if "programs" not in doc:
        raise _Invalid("programs", 'missing: a [programs.main] table with an ops list is required')
    try:
        programs = compile_programs(_program_sources(doc["programs"]))
    except OpError as error:
        raise _Invalid(error.path, error.problem) from None
    faults = _faults(doc["faults"]) if "faults" in doc else ()
    return Scenario(programs=programs, source=source, faults=faults, **values)


# --- overrides (--set key=value) -------------------------------------------------------

def _parse_value(text: str) -> Any:
    """A TOML value if ``text`` is one (``4``, ``true``, ``"ok"``, ``[["run", 5]]``),
    else the bare string, so ``--set expect=ok`` works without shell-quoting."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ScenarioError(f"--set {_one_line(text)[:60]}: arrays or tables nested too deeply") from None
    if set(parsed) != {"value"}:
        return text
    return parsed["value"]


def _one_line(text: str) -> str:
    return text.replace("\n", "\\n")


def _apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> dict[str, str]:
    """Apply ``key=value`` overrides to ``doc`` in place; return key path -> the override's
    own text, so that a bad value is blamed on the ``--set`` rather than the file."""
    origins: dict[str, str] = {}
    for override in overrides:
        where = f"--set {_one_line(override)}"
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not _KEY_PATH.fullmatch(key):
            raise ScenarioError(f"{where}: expected key=value, where key is a name such as gomaxprocs "
                                "or a dotted path such as programs.main.ops")
        parts = key.split(".")
        if parts[0] not in _KNOWN_KEYS:
            invalid = _unknown_key(parts[0], _KNOWN_KEYS)
            raise ScenarioError(f"{where}: {invalid.key}: {invalid.problem}")
        table = doc
        for depth, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ScenarioError(f"{where}: {'.'.join(parts[:depth + 1])}: is not a table, "
                                    "so it has no keys to set")
            table = child
        table[parts[-1]] = _parse_value(raw.strip())
        origins[key] = where
    return origins


def _blame(key: str, origins: dict[str, str], source: str) -> str:
    """The override whose key path is the longest prefix of ``key``, else the file."""
    best = None
    for path in origins:
        # also a key above the override's (``--set faults.kind=1`` makes ``faults`` a table)
        if (key == path or key.startswith(path + ".") or key.startswith(path + "[")
                or path.startswith(key + ".")):
            if best is None or len(path) > len(best):
                best = path
    return origins[best] if best is not None else source


# --- loading ----------------------------------------------------------------------------

def _builtin_files() -> dict[str, Any]:
    root = importlib.resources.files(_BUILTIN_PACKAGE)
    return {entry.name[: -len(".toml")]: entry for entry in root.iterdir()
            if entry.name.endswith(".toml") and entry.is_file()}


def builtin_names() -> list[str]:
    """Names of the built-in scenarios, sorted."""
    return sorted(_builtin_files())


def describe_builtins() -> list[tuple[str, str]]:
    """(name, description) of each built-in scenario, sorted by name, for ``gmpsim scenarios``."""
    return [(name, load(name).description) for name in builtin_names()]


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ScenarioError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError as error:
        message = _one_line(str(error))
        found = _TOML_POSITION.search(message)
        if found:
            line, column = found.groups()
            message = message[: found.start()]
            raise ScenarioError(f"{source}: line {line}: invalid TOML: {message} (column {column})") from None
        raise ScenarioError(f"{source}: invalid TOML: {message}") from None


def loads(text: str, source: str = "<string>", overrides: Iterable[str] = (),
          default_name: str = "scenario") -> Scenario:
    """Validate scenario TOML ``text``; ``source`` names it in errors and in ``Scenario.source``."""
    doc = _parse_toml(text, source)
    origins = _apply_overrides(doc, overrides)
    try:
        return _validate(doc, source, default_name)
    except RecursionError:
        raise ScenarioError(f"{source}: values nested too deeply") from None
    except _Invalid as invalid:
        raise ScenarioError(f"{_blame(invalid.key, origins, source)}: {invalid.key}: {invalid.problem}") from None


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith(".toml") or ref.startswith(".")


def load(ref: str | Path, overrides: Iterable[str] = ()) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path, applying ``--set``
    overrides (``"key=value"``) before validation."""
    ref_text = str(ref)
    builtins = _builtin_files()
    if not isinstance(ref, Path) and not _looks_like_path(ref_text) and ref_text in builtins:
        text = builtins[ref_text].read_text(encoding="utf-8")
        return loads(text, f"builtin:{ref_text}", overrides, default_name=ref_text)
    path = Path(ref_text)
    if path.is_dir():
        raise ScenarioError(f"{ref_text}: is a directory, expected a scenario file (.toml)")
    if not path.exists():
        raise ScenarioError(f"{ref_text}: no such scenario file or built-in scenario "
                            f"(built-ins: {', '.join(sorted(builtins))})")
    if not path.is_file():  # a FIFO would block forever, a device never end
        raise ScenarioError(f"{ref_text}: not a regular file, expected a scenario file (.toml)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as error:
        raise ScenarioError(f"{ref_text}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{ref_text}: larger than {MAX_SCENARIO_BYTES // (1 << 20)} MiB, "
                            "too large for a scenario file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{ref_text}: invalid TOML: not UTF-8 text (byte {error.start})") from None
    return loads(text, ref_text, overrides, default_name=path.stem)
