"""Fault injection: the fault language and the seeded planner.  Pure code: no I/O, no clock.

A fault is a ``FaultSpec``.  It comes from the command line (``--fault KIND[:key=value,...]``,
``parse_fault``) or from a scenario's ``[[faults]]`` table (``fault_from_table``); both end in
the same checks, so a fault means the same thing whichever way it was written.  Every problem
is a ``FaultError`` whose text is ONE line naming the field and what was expected.

Three families of kinds:

* timed (``kill-m``, ``stop-m``, ``exit-m``, ``kill-template``): something happens to an M or to
  the host agent at a Go time -- once (``at``) or like a Go ticker (``every``: at
  start+every, start+2*every, ... while before ``until``), each occurrence kept with
  ``probability``, at most ``count`` kept;
* fork (``fork-fail``, ``slow-fork``): each ``newosproc`` in the window [start, until) is hit
  with ``probability`` (at most ``count`` times);
* message (``drop``, ``delay``, ``duplicate``, ``reorder``): each message of the listed types in
  the window is hit with ``probability`` (at most ``count`` times).

``FaultPlan(specs, seed)`` turns specs into decisions.  Every random number comes from a stream
of its own, derived from (seed, the fault's index, what the stream is for), so a decision depends
only on the seed and on the sequence of calls the injector makes -- a run can be replayed, and
adding a message fault does not move the times of a timed one.  All times are Go milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from protocol.messages import TYPES
from protocol.ops import MAX_DURATION_US, format_value
from protocol.timing import RETRY_ON_EAGAIN_TRIES

TIMED_KINDS = ("kill-m", "stop-m", "exit-m", "kill-template")
FORK_KINDS = ("fork-fail", "slow-fork")
MESSAGE_KINDS = ("drop", "delay", "duplicate", "reorder")
KINDS = TIMED_KINDS + FORK_KINDS + MESSAGE_KINDS

#: targets of the M kinds besides ``m:<id>``; ``random:<state>`` picks among the Ms in that state
M_TARGETS = ("random", "random:running", "random:idle", "random:spinning", "random:syscall")
TEMPLATE_TARGET = "template"
ALL_TYPES = "*"


#: bounds checked at parse time, so that the planner's work per Go ms stays bounded: a period below
#: 1 Go µs (or a count above a million) only floods the run, and times beyond a scenario's longest
#: op (protocol.ops.MAX_DURATION_US) never come
MIN_EVERY_MS = 0.001
MAX_COUNT = 1_000_000
MAX_TIME_MS = MAX_DURATION_US / 1000
#: the most occurrences the planner hands out per call (the rest wait for the next tick)
MAX_DUE_PER_CALL = 100_000

_M_TARGET = re.compile(r"m:(0|[1-9][0-9]{0,17})")
_DURATION = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>us|µs|ms|s)")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_UNIT_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}


class FaultError(ValueError):
    """A fault cannot be used.  ``str()`` is one line, ``<where>: <key>: <problem>`` (``where``
    may be empty); ``key`` is the field as the user spelt it (``every`` or ``every_ms``)."""

    def __init__(self, key: str, problem: str, where: str = "") -> None:
        self.key, self.problem, self.where = key, problem, where
        text = f"{key}: {problem}"
        super().__init__(f"{where}: {text}" if where else text)


@dataclass(frozen=True)
class FaultSpec:
    """One fault, checked and with its defaults filled in (constructing one checks it too).

    Fields that do not apply to ``kind`` are ``None`` (``()`` for ``types``).  Times are Go ms.
    """

    kind: str
    target: str | None = None             # timed kinds: "random", "random:<state>", "m:<id>", "template"
    types: tuple[str, ...] = ()           # message kinds: message type names, or ("*",)
    at_ms: float | None = None            # timed, one-shot
    every_ms: float | None = None         # timed, recurring (ticker from start_ms)
    start_ms: float = 0.0                 # window start (recurring, fork and message kinds)
    until_ms: float | None = None         # window end, exclusive
    probability: float = 1.0              # per occurrence / per fork / per message
    duration_ms: float | None = None      # stop-m, slow-fork: how long; delay: the maximum delay
    count: int | None = None              # at most this many times
    retry: bool | None = None             # fork-fail: retryOnEAGAIN (default false)
    restart: bool | None = None           # kill-template: start a new agent (default true)

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in _normalize(values, _TOML_STYLE).items():
            object.__setattr__(self, name, value)

    @property
    def family(self) -> str:
        """"timed", "fork" or "message"."""
        return _FAMILY[self.kind]


# --- field names, applicability and checks ----------------------------------------------------

_FAMILY = {**{k: "timed" for k in TIMED_KINDS}, **{k: "fork" for k in FORK_KINDS},
           **{k: "message" for k in MESSAGE_KINDS}}

_FIELD_ORDER = ("kind", "target", "types", "at_ms", "every_ms", "start_ms", "until_ms", "probability",
                "duration_ms", "count", "retry", "restart")

#: field -> its key on the command line
CLI_KEYS = {"at_ms": "at", "every_ms": "every", "start_ms": "start", "until_ms": "until", "probability": "p",
            "duration_ms": "duration", "count": "count", "target": "target", "types": "type",
            "retry": "retry", "restart": "restart", "kind": "kind"}
_CLI_FIELDS = {key: name for name, key in CLI_KEYS.items() if name != "kind"}

_ALLOWED: dict[str, tuple[str, ...]] = {
    "kill-m": ("target", "at_ms", "every_ms", "start_ms", "until_ms", "probability", "count"),
    "exit-m": ("target", "at_ms", "every_ms", "start_ms", "until_ms", "probability", "count"),
    "stop-m": ("target", "at_ms", "every_ms", "start_ms", "until_ms", "probability", "count", "duration_ms"),
    "kill-template": ("target", "at_ms", "every_ms", "start_ms", "until_ms", "probability", "count", "restart"),
    "fork-fail": ("start_ms", "until_ms", "probability", "count", "retry"),
    "slow-fork": ("start_ms", "until_ms", "probability", "count", "duration_ms"),
    "drop": ("types", "start_ms", "until_ms", "probability", "count"),
    "delay": ("types", "start_ms", "until_ms", "probability", "count", "duration_ms"),
    "duplicate": ("types", "start_ms", "until_ms", "probability", "count"),
    "reorder": ("types", "start_ms", "until_ms", "probability", "count"),
}
#: the dataclass defaults: a field at its default counts as "not given"
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FaultSpec) if f.name != "kind"}

_DURATION_PURPOSE = {"stop-m": "how long the M stays stopped",
                     "slow-fork": "the delay between fork and mstart",
                     "delay": "the longest delay a message gets"}


@dataclass(frozen=True)
class _Style:
    """How errors spell fields and show values: the command line's way or the TOML table's."""
    cli: bool

    def key(self, name: str) -> str:
        return CLI_KEYS[name] if self.cli else name

    def show(self, name: str, value: Any) -> str:
        if self.cli:
            return repr(_cli_text(name, value)) if _cli_showable(name, value) else repr(value)
        return _toml_text(value)

    def ms(self, what: str) -> str:
        return f"a duration{what} like 100ms" if self.cli else f"a number of Go ms{what}"


_CLI_STYLE, _TOML_STYLE = _Style(cli=True), _Style(cli=False)


def _toml_text(value: Any) -> str:
    """A value as a scenario file has it, in one short line (as the scenario's own errors)."""
    return format_value(list(value) if isinstance(value, tuple) else value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cli_showable(name: str, value: Any) -> bool:
    if name in ("at_ms", "every_ms", "start_ms", "until_ms", "duration_ms", "probability"):
        return _is_number(value) and math.isfinite(value)
    if name == "types":
        return isinstance(value, tuple) and all(isinstance(t, str) for t in value)
    return isinstance(value, (str, bool, int))


def _normalize(values: Mapping[str, Any], style: _Style) -> dict[str, Any]:
    """Check a fault's fields (python values, all times in ms) and fill in the defaults; raise
    ``FaultError(key, problem)`` naming the first bad field.  Returns every field."""
    kind = values.get("kind")
    if not isinstance(kind, str) or kind not in _ALLOWED:
        close = difflib.get_close_matches(kind, KINDS, n=1) if isinstance(kind, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        got = repr(kind) if style.cli else _toml_text(kind)
        raise FaultError("kind", f"unknown fault kind {got}{hint} (expected one of {', '.join(KINDS)})")
    family, allowed = _FAMILY[kind], _ALLOWED[kind]
    if isinstance(values.get("types"), list):
        values = {**values, "types": tuple(values["types"])}
    given = {name: values[name] for name in _FIELD_ORDER[1:]
             if name in values and values[name] is not None and not _is_default(name, values[name])}
    for name, value in given.items():
        if name not in allowed:
            keys = ", ".join(style.key(n) for n in allowed)
            raise FaultError(style.key(name), f"not used by {kind} (its keys: {keys})")
        _check_field(kind, name, value, style)
    out = dict(_DEFAULTS, kind=kind)
    out.update(given)
    out["start_ms"] = float(out["start_ms"])
    out["probability"] = float(out["probability"])
    for name in ("at_ms", "every_ms", "until_ms", "duration_ms"):
        if out[name] is not None:
            out[name] = float(out[name])
    if family == "timed":
        if out["at_ms"] is None and out["every_ms"] is None:
            raise FaultError(style.key("at_ms"), f"missing: {kind} needs {style.key('at_ms')} (once) "
                                                 f"or {style.key('every_ms')} (recurring)")
        if out["at_ms"] is not None and out["every_ms"] is not None:
            raise FaultError(style.key("every_ms"), f"expected {style.key('at_ms')} or "
                                                    f"{style.key('every_ms')}, not both")
        if out["at_ms"] is not None:
            for name in ("start_ms", "until_ms", "count"):
                if name in given:
                    raise FaultError(style.key(name), f"only for a recurring fault ({style.key('every_ms')}), "
                                                      f"not with {style.key('at_ms')}")
        out["target"] = out["target"] or (TEMPLATE_TARGET if kind == "kill-template" else "random")
    if family == "message":
        out["types"] = _dedupe(out["types"]) or (ALL_TYPES,)
    if kind in _DURATION_PURPOSE and out["duration_ms"] is None:
        raise FaultError(style.key("duration_ms"), f"missing: {kind} needs {style.key('duration_ms')} "
                                                   f"({_DURATION_PURPOSE[kind]})")
    if out["until_ms"] is not None and out["until_ms"] <= out["start_ms"]:
        start, until = ((_format_ms(out["start_ms"]), _format_ms(out["until_ms"])) if style.cli
                        else (_toml_text(out["start_ms"]), _toml_text(out["until_ms"])))
        raise FaultError(style.key("until_ms"), f"expected a time after {style.key('start_ms')} ({start}), "
                                                f"got {until}")
    if kind == "fork-fail" and out["retry"] is None:
        out["retry"] = False
    if kind == "kill-template" and out["restart"] is None:
        out["restart"] = True
    return out


def _is_default(name: str, value: Any) -> bool:
    default = _DEFAULTS[name]
    if default is None:
        return False
    return type(value) is type(default) and value == default or (
        _is_number(value) and _is_number(default) and value == default)


def _dedupe(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _check_field(kind: str, name: str, value: Any, style: _Style) -> None:
    key, got = style.key(name), style.show(name, value)
    if name in ("at_ms", "start_ms", "every_ms", "until_ms", "duration_ms"):
        low_ok = (lambda v: v > 0) if name in ("every_ms", "duration_ms") else (lambda v: v >= 0)
        bound = " > 0" if name in ("every_ms", "duration_ms") else " >= 0"
        if not _is_number(value) or not math.isfinite(value) or not low_ok(value):
            raise FaultError(key, f"expected {style.ms(bound)}, got {got}")
        if value > MAX_TIME_MS:
            raise FaultError(key, f"expected at most {_bound_text(MAX_TIME_MS, style)}, got {got}")
        if name == "every_ms" and value < MIN_EVERY_MS:
            raise FaultError(key, f"expected a period of at least {_bound_text(MIN_EVERY_MS, style)} "
                                  f"(a shorter one only floods the planner), got {got}")
    elif name == "probability":
        if not _is_number(value) or not 0 <= value <= 1:
            raise FaultError(key, f"expected a probability from 0 to 1, got {got}")
    elif name == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FaultError(key, f"expected a whole number >= 1, got {got}")
        if value > MAX_COUNT:
            raise FaultError(key, f"expected at most {MAX_COUNT}, got {got}")
    elif name in ("retry", "restart"):
        if not isinstance(value, bool):
            raise FaultError(key, f"expected true or false, got {got}")
    elif name == "target":
        if kind == "kill-template":
            if value != TEMPLATE_TARGET:
                raise FaultError(key, f"expected {TEMPLATE_TARGET!r} (the host agent), got {got}")
        elif not isinstance(value, str) or not (value in M_TARGETS or _M_TARGET.fullmatch(value)):
            raise FaultError(key, f"expected one of {', '.join(M_TARGETS)} or m:<id>, got {got}")
    elif name == "types":
        example = "type=wake+park or type=*" if style.cli else 'a list such as ["wake", "park"], or ["*"]'
        if not isinstance(value, tuple) or not value or not all(isinstance(t, str) for t in value):
            raise FaultError(key, f"expected message types, {example}, got {got}")
        for item in value:
            if item == ALL_TYPES:
                if len(value) > 1:
                    raise FaultError(key, f"expected {ALL_TYPES!r} alone (it means every type), got {got}")
            elif item not in TYPES:
                close = difflib.get_close_matches(item, sorted(TYPES), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise FaultError(key, f"unknown message type {item!r}{hint} (expected {ALL_TYPES} or one of "
                                      f"{', '.join(sorted(TYPES))})")


# --- the command-line form --------------------------------------------------------------------

def _format_ms(ms: float) -> str:
    """A Go duration in the grammar's units, exactly re-parseable (``100ms``, ``2.5ms``)."""
    if ms == int(ms) and abs(ms) < 1e15:
        whole = int(ms)
        if whole and whole % 1000 == 0:
            return f"{whole // 1000}s"
        return f"{whole}ms"
    return f"{ms!r}ms"


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(float(value))


def _cli_text(name: str, value: Any) -> str:
    if name in ("at_ms", "every_ms", "start_ms", "until_ms", "duration_ms"):
        return _format_ms(value)
    if name == "probability":
        return _format_number(value)
    if name == "types":
        return "+".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bound_text(ms: float, style: "_Style") -> str:
    return _format_ms(ms) if style.cli else f"{ms:g} Go ms"


def _parse_duration(key: str, text: str) -> float:
    found = _DURATION.fullmatch(text)
    if found:
        return float(found["num"]) * _UNIT_MS[found["unit"]]
    if text == "0":  # as Go's time.ParseDuration: a bare 0 needs no unit
        return 0.0
    hint = " (units: us, ms, s)" if _NUMBER.fullmatch(text) else ""
    raise FaultError(key, f"expected a duration like 100ms{hint}, got {text!r}")


def _parse_cli_value(name: str, key: str, text: str) -> Any:
    if name in ("at_ms", "every_ms", "start_ms", "until_ms", "duration_ms"):
        return _parse_duration(key, text)
    if name == "probability":
        if not _NUMBER.fullmatch(text):
            raise FaultError(key, f"expected a probability from 0 to 1 (like 0.1), got {text!r}")
        return float(text)
    if name == "count":
        if not text.isascii() or not text.isdigit():
            raise FaultError(key, f"expected a whole number >= 1, got {text!r}")
        return int(text)
    if name in ("retry", "restart"):
        if text not in ("true", "false"):
            raise FaultError(key, f"expected true or false, got {text!r}")
        return text == "true"
    if name == "types":
        return tuple(text.split("+"))
    return text  # target


def _one_line(text: str) -> str:
    return text.replace("\n", "\\n")


def parse_fault(text: str, where: str | None = None) -> FaultSpec:
    """``KIND[:key=value[,key=value...]]`` -> a FaultSpec (see the module doc and README).

    ``where`` names the source in errors (default ``--fault <text>``)."""
    where = where if where is not None else f"--fault {_one_line(text)}"
    kind, sep, rest = text.strip().partition(":")
    kind = kind.strip()
    values: dict[str, Any] = {"kind": kind}
    try:
        if kind not in _ALLOWED:
            _normalize(values, _CLI_STYLE)  # raises the unknown-kind error
        if sep and not rest.strip():
            raise FaultError("options", "expected key=value[,key=value...] after ':'")
        seen: set[str] = set()
        for item in rest.split(",") if sep else ():
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key:
                raise FaultError(key or "options", f"expected key=value, got {item.strip()!r}")
            if key not in _CLI_FIELDS:
                close = difflib.get_close_matches(key, list(_CLI_FIELDS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise FaultError(key, f"unknown key{hint} (keys: {', '.join(_CLI_FIELDS)})")
            if key in seen:
                raise FaultError(key, "given twice")
            seen.add(key)
            name = _CLI_FIELDS[key]
            if name not in _ALLOWED[kind]:
                keys = ", ".join(CLI_KEYS[n] for n in _ALLOWED[kind])
                raise FaultError(key, f"not used by {kind} (its keys: {keys})")
            if not value:
                raise FaultError(key, "expected a value after '='")
            values[name] = _parse_cli_value(name, key, value)
        return FaultSpec(**_normalize(values, _CLI_STYLE))
    except FaultError as error:
        raise FaultError(error.key, error.problem, where) from None


_CLI_ORDER = ("types", "at_ms", "every_ms", "start_ms", "until_ms", "duration_ms", "probability", "count",
              "target", "retry", "restart")


def format_fault(spec: FaultSpec) -> str:
    """The canonical command-line text of ``spec``: ``parse_fault(format_fault(s)) == s``."""
    parts = []
    for name in _CLI_ORDER:
        value = getattr(spec, name)
        if value is None or value == () or (name in ("start_ms", "probability") and value == _DEFAULTS[name]):
            continue
        if (name, value) in (("target", "random"), ("target", TEMPLATE_TARGET), ("retry", False),
                             ("restart", True)):
            continue
        parts.append(f"{CLI_KEYS[name]}={_cli_text(name, value)}")
    return spec.kind + (":" + ",".join(parts) if parts else "")


# --- the TOML form ----------------------------------------------------------------------------

def fault_from_table(table: Any, where: str = "faults[0]") -> FaultSpec:
    """A ``[[faults]]`` table (keys spelt as the FaultSpec fields: ``at_ms = 2.5``,
    ``types = ["wake"]``) -> a FaultSpec.  Errors: ``FaultError`` with ``key`` =
    ``<where>.<field>`` (or ``where`` itself when the table is not a table), no ``where``."""
    if not isinstance(table, dict):
        raise FaultError(where, f"expected a table with a kind (a [[faults]] table), got {_toml_text(table)}")
    names = _FIELD_ORDER
    for key in table:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FaultError(f"{where}.{key}", f"unknown key{hint} (keys: {', '.join(names)})")
    if "kind" not in table:
        raise FaultError(f"{where}.kind", f"missing: every fault needs a kind (one of {', '.join(KINDS)})")
    values = dict(table)
    if "types" in values:
        if not isinstance(values["types"], list) or not values["types"]:
            raise FaultError(f"{where}.types",
                             f'expected a list such as ["wake", "park"], or ["*"], got {_toml_text(values["types"])}')
        values["types"] = tuple(values["types"])
    try:
        return FaultSpec(**_normalize(values, _TOML_STYLE))
    except FaultError as error:
        raise FaultError(f"{where}.{error.key}", error.problem) from None


def fault_to_table(spec: FaultSpec) -> dict[str, Any]:
    """The TOML table form of ``spec`` (only what differs from the defaults)."""
    table: dict[str, Any] = {"kind": spec.kind}
    for name in _FIELD_ORDER[1:]:
        value = getattr(spec, name)
        if value is None or value == () or (name in ("start_ms", "probability") and value == _DEFAULTS[name]):
            continue
        table[name] = list(value) if isinstance(value, tuple) else value
    return table


# --- the planner ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """A timed fault's occurrence.  ``draw`` in [0, 1) picks the victim: the candidate Ms sorted
    by id, ``candidates[int(draw * len(candidates))]``."""

    index: int                  # the fault's index in the plan's specs
    time_ms: float              # Go ms
    kind: str
    target: str
    draw: float
    duration_ms: float | None   # stop-m: how long the M stays stopped
    spec: FaultSpec

    def pick(self, candidates: list[int]) -> int | None:
        """The chosen M among ``candidates`` (ids), or None if there is none."""
        if not candidates:
            return None
        ordered = sorted(candidates)
        return ordered[min(int(self.draw * len(ordered)), len(ordered) - 1)]


@dataclass(frozen=True)
class ForkFault:
    """What happens to one newosproc.

    fork-fail: the clone fails with EAGAIN.  Without ``retry`` (Go 1.16) that is fatal
    (``throw("newosproc")``); with ``retry`` (newer Go's retryOnEAGAIN) ``failures`` tries fail,
    sleeping ``sleeps_ms[i]`` after each, and the fork then succeeds unless ``gives_up``.
    slow-fork: the child waits ``delay_ms`` between fork and mstart."""

    index: int
    kind: str                    # "fork-fail" | "slow-fork"
    time_ms: float
    retry: bool = False
    failures: int = 0            # fork-fail: how many tries fail (>= 1)
    delay_ms: float = 0.0        # slow-fork
    spec: FaultSpec | None = None

    @property
    def gives_up(self) -> bool:
        """Does newosproc fail for good (EAGAIN returned: Go throws)?"""
        return self.kind == "fork-fail" and (not self.retry or self.failures >= RETRY_ON_EAGAIN_TRIES)

    @property
    def sleeps_ms(self) -> tuple[float, ...]:
        """retryOnEAGAIN's sleeps: (try+1) ms after each failed try."""
        return tuple(float(t + 1) for t in range(self.failures)) if self.retry else ()


@dataclass(frozen=True)
class MessageFault:
    """What happens to one message: action "drop" | "delay" (by ``delay_ms``) | "duplicate" |
    "reorder" (hold it back and send it after the next one to the same peer)."""

    index: int
    action: str
    msg_type: str
    time_ms: float
    delay_ms: float = 0.0
    spec: FaultSpec | None = None


def _stream(seed: int, index: int, purpose: str) -> random.Random:
    # str seeds go through SHA-512: the same on every run and platform, independent of PYTHONHASHSEED
    return random.Random(f"gmpsim-faults/{seed}/{index}/{purpose}")


_SKIP = None  # a rejected occurrence (by probability) in a timed fault's stream


def _occurrences(index: int, spec: FaultSpec, seed: int) -> Iterator[tuple[float, Planned | None]]:
    """(time, Planned or None when skipped by probability), in time order, until count/until."""
    rng = _stream(seed, index, "timed")
    kept = 0
    k = 0
    while True:
        if spec.at_ms is not None:
            if k:
                return
            time_ms = spec.at_ms
        else:  # a Go ticker started at start_ms: start + every, start + 2*every, ...
            time_ms = spec.start_ms + (k + 1) * spec.every_ms
            if spec.until_ms is not None and time_ms >= spec.until_ms:
                return
        k += 1
        keep, draw = rng.random(), rng.random()  # two draws per occurrence, kept or not
        if keep < spec.probability:
            kept += 1
            yield time_ms, Planned(index, time_ms, spec.kind, spec.target, draw, spec.duration_ms, spec)
            if spec.count is not None and kept >= spec.count:
                return
        else:
            yield time_ms, _SKIP


class _Timeline:
    """The merge of every timed fault's occurrences, consumed in time order."""

    def __init__(self, timed: list[tuple[int, FaultSpec]], seed: int) -> None:
        self._heap: list[tuple[float, int, Planned | None, Iterator]] = []
        for index, spec in timed:
            if spec.probability > 0:
                self._advance(index, _occurrences(index, spec, seed))

    def _advance(self, index: int, stream: Iterator) -> None:
        for time_ms, planned in stream:
            heapq.heappush(self._heap, (time_ms, index, planned, stream))
            return

    def _drop_skips(self, limit: int = 10_000) -> None:
        while self._heap and self._heap[0][2] is _SKIP and limit > 0:
            _, index, _, stream = heapq.heappop(self._heap)
            self._advance(index, stream)
            limit -= 1

    def take(self, now_ms: float, limit: int | None = None) -> list[Planned]:
        out = []
        steps = 0
        while self._heap and self._heap[0][0] <= now_ms and (limit is None or steps < limit):
            steps += 1
            _, index, planned, stream = heapq.heappop(self._heap)
            if planned is not _SKIP:
                out.append(planned)
            self._advance(index, stream)
        return out

    def next_ms(self) -> float | None:
        self._drop_skips()
        return self._heap[0][0] if self._heap else None


class _Hits:
    """Per fault state for fork and message kinds: its stream and how many times it hit."""

    __slots__ = ("index", "spec", "rng", "hits", "start", "until", "p")

    def __init__(self, index: int, spec: FaultSpec, seed: int) -> None:
        self.index, self.spec, self.hits = index, spec, 0
        self.rng = _stream(seed, index, spec.family)
        self.start = spec.start_ms
        self.until = spec.until_ms if spec.until_ms is not None else math.inf
        self.p = spec.probability

    def roll(self, now_ms: float) -> bool:
        """One draw if the fault is live at ``now_ms``: does it hit?"""
        if not (self.start <= now_ms < self.until) or (self.spec.count is not None and self.hits >= self.spec.count):
            return False
        return self.rng.random() < self.p


def _first_hit(streams, now_ms: float):
    """Every live stream draws (so that each stays independent of the others); the first that
    hits, in spec order, applies and counts the hit. None when none hits."""
    chosen = None
    for hits in streams:
        if hits.roll(now_ms) and chosen is None:
            chosen = hits
    if chosen is not None:
        chosen.hits += 1
    return chosen


class FaultPlan:
    """The seeded plan of a run's faults (see the module doc).  Not thread-safe: the loop's."""

    def __init__(self, specs: Any = (), seed: int = 1) -> None:
        self.specs: tuple[FaultSpec, ...] = tuple(specs)
        self.seed = seed
        self._timed = [(i, s) for i, s in enumerate(self.specs) if s.family == "timed"]
        self._timeline = _Timeline(self._timed, seed)
        self._forks = [_Hits(i, s, seed) for i, s in enumerate(self.specs) if s.family == "fork"]
        by_type: dict[str, list[_Hits]] = {}
        for i, s in enumerate(self.specs):
            if s.family == "message":
                hits = _Hits(i, s, seed)
                for t in (sorted(TYPES) if ALL_TYPES in s.types else s.types):
                    by_type.setdefault(t, []).append(hits)
        self._by_type: dict[str, tuple[_Hits, ...]] = {t: tuple(h) for t, h in by_type.items()}
        #: for the loop: skip the calls altogether when there is nothing to decide
        self.has_timed = bool(self._timed)
        self.has_fork_faults = bool(self._forks)
        self.has_message_faults = bool(self._by_type)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def schedule(self, until_ms: float) -> list[Planned]:
        """Every timed fault kept up to ``until_ms`` (inclusive), in time order (ties: by index).
        Independent of ``due()``: it replays the streams from the start."""
        return _Timeline(self._timed, self.seed).take(until_ms)

    def due(self, now_ms: float) -> list[Planned]:
        """The timed faults whose time (<= now_ms) has come and that were not returned yet, in
        time order (``now_ms`` must be finite: a recurring fault without an end never ends); at
        most MAX_DUE_PER_CALL of them per call, so that a caller stays responsive (signals)."""
        return self._timeline.take(now_ms, MAX_DUE_PER_CALL)

    def next_due_ms(self) -> float | None:
        """When ``due()`` next has something (or may have: after a long run of occurrences skipped
        by probability, the next candidate's time), None when no timed fault is left."""
        return self._timeline.next_ms()

    def on_fork(self, now_ms: float) -> ForkFault | None:
        """Decide the fate of a newosproc at ``now_ms``.  Every live fork fault draws (so their
        streams stay independent); the first that hits, in spec order, applies."""
        chosen = _first_hit(self._forks, now_ms)
        if chosen is None:
            return None
        spec = chosen.spec
        if spec.kind == "slow-fork":
            return ForkFault(chosen.index, spec.kind, now_ms, delay_ms=spec.duration_ms, spec=spec)
        failures = 1
        if spec.retry:  # each further try fails with the same probability
            while failures < RETRY_ON_EAGAIN_TRIES and chosen.rng.random() < spec.probability:
                failures += 1
        return ForkFault(chosen.index, spec.kind, now_ms, retry=bool(spec.retry), failures=failures, spec=spec)

    def on_message(self, msg_type: str, now_ms: float) -> MessageFault | None:
        """Decide the fate of one message of type ``msg_type`` at ``now_ms`` (None: deliver it)."""
        specs = self._by_type.get(msg_type)
        if specs is None:
            return None
        chosen = _first_hit(specs, now_ms)
        if chosen is None:
            return None
        spec = chosen.spec
        delay = chosen.rng.random() * spec.duration_ms if spec.kind == "delay" else 0.0
        return MessageFault(chosen.index, spec.kind, msg_type, now_ms, delay, spec)

    @staticmethod
    def describe(event: Planned | ForkFault | MessageFault) -> dict[str, Any]:
        """A JSON-able record of a fault for report.json's ``faults`` list (a fresh dict: the
        injector adds what it did, e.g. the M it chose)."""
        if isinstance(event, Planned):
            record: dict[str, Any] = {"time_ms": event.time_ms, "kind": event.kind, "target": event.target,
                                      "fault": format_fault(event.spec), "index": event.index,
                                      "draw": event.draw}
            if event.duration_ms is not None:
                record["duration_ms"] = event.duration_ms
            if event.kind == "kill-template":
                record["restart"] = bool(event.spec.restart)
            return record
        if isinstance(event, ForkFault):
            record = {"time_ms": event.time_ms, "kind": event.kind, "target": "newosproc",
                      "fault": format_fault(event.spec) if event.spec else event.kind, "index": event.index}
            if event.kind == "fork-fail":
                record.update(retry=event.retry, failures=event.failures, gives_up=event.gives_up)
            else:
                record["delay_ms"] = event.delay_ms
            return record
        if isinstance(event, MessageFault):
            record = {"time_ms": event.time_ms, "kind": event.action, "target": event.msg_type,
                      "fault": format_fault(event.spec) if event.spec else event.action, "index": event.index}
            if event.action == "delay":
                record["delay_ms"] = event.delay_ms
            return record
        raise TypeError(f"not a planned fault: {event!r}")
