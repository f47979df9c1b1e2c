"""The fault language: ``--fault KIND:key=val`` and ``[[faults]]`` tables -> a checked FaultSpec.  Pure code.

A fault is a ``FaultSpec``.  It comes from the command line (``parse_fault``) or from a
scenario's ``[[faults]]`` table (``fault_from_table``); both end in the same checks, so a fault
means the same thing whichever way it was written.  Every problem is a ``FaultError`` whose text
is ONE line naming the field and what was expected.  Which kinds exist, and which keys each
takes, is the table of ``coordinator/faults/kinds.py``.  All times are Go milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from coordinator.faults.kinds import (
    ALL_TYPES,
    BY_NAME,
    KINDS,
    M_TARGETS,
    MAX_COUNT,
    MAX_TIME_MS,
    MIN_EVERY_MS,
    TEMPLATE_TARGET,
)
from protocol.messages import TYPES
from protocol.ops import format_value

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
        return BY_NAME[self.kind].family


# --- field names and checks ------------------------------------------------------------------

_FIELD_ORDER = ("kind", "target", "types", "at_ms", "every_ms", "start_ms", "until_ms", "probability",
                "duration_ms", "count", "retry", "restart")

#: field -> its key on the command line
CLI_KEYS = {"at_ms": "at", "every_ms": "every", "start_ms": "start", "until_ms": "until", "probability": "p",
            "duration_ms": "duration", "count": "count", "target": "target", "types": "type",
            "retry": "retry", "restart": "restart", "kind": "kind"}
_CLI_FIELDS = {key: name for name, key in CLI_KEYS.items() if name != "kind"}

#: the dataclass defaults: a field at its default counts as "not given"
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FaultSpec) if f.name != "kind"}


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
    if not isinstance(kind, str) or kind not in BY_NAME:
        close = difflib.get_close_matches(kind, KINDS, n=1) if isinstance(kind, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        got = repr(kind) if style.cli else _toml_text(kind)
        raise FaultError("kind", f"unknown fault kind {got}{hint} (expected one of {', '.join(KINDS)})")
    row = BY_NAME[kind]
    family, allowed = row.family, row.params
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
    if family == "message":
        out["types"] = _dedupe(out["types"]) or (ALL_TYPES,)
    if row.duration and out["duration_ms"] is None:
        raise FaultError(style.key("duration_ms"), f"missing: {kind} needs {style.key('duration_ms')} "
                                                   f"({row.duration})")
    if out["until_ms"] is not None and out["until_ms"] <= out["start_ms"]:
        start, until = ((_format_ms(out["start_ms"]), _format_ms(out["until_ms"])) if style.cli
                        else (_toml_text(out["start_ms"]), _toml_text(out["until_ms"])))
        raise FaultError(style.key("until_ms"), f"expected a time after {style.key('start_ms')} ({start}), "
                                                f"got {until}")
    for name, default in row.defaults.items():
        if out[name] is None:
            out[name] = default
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
        if BY_NAME[kind].defaults.get("target") == TEMPLATE_TARGET:
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
        if kind not in BY_NAME:
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
            if name not in BY_NAME[kind].params:
                keys = ", ".join(CLI_KEYS[n] for n in BY_NAME[kind].params)
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
        if name in BY_NAME[spec.kind].defaults and value == BY_NAME[spec.kind].defaults[name]:
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
