"""The message catalogue: every message gmpsim peers exchange, and the type of each field.

Why one declarative table (``MESSAGES``): the coordinator, the Ms and the host agents must
agree on it exactly, and the codec derives its validators from it, so adding a message type
is one line here (its fields, who sends it, what answers it) and its handler. The coordinator's
lists of what an M or an agent may send, and the M's list of replies, are derived from it.
Every message also carries the envelope ``v`` (protocol version), ``t`` (type), ``seq``
(sender's sequence number) and ``epoch`` (the sending M's incarnation; 0 from the coordinator
or an agent); the codec checks those.

A field's type is a ``Kind``: a description for error messages plus a check that returns the
value (normalised: an int where a float is expected becomes a float) or raises
``FieldError``. Checks are strict — ``bool`` is not an int, ints must fit in 64 bits, sizes
are bounded — because every byte a peer sends reaches the coordinator's scheduler state.
Checks never modify their input: a value that needs normalising is copied.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from protocol.ops import MAX_DURATION_US, MAX_GO

VERSION = 1

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
MAX_STR_CHARS = 256
#: the largest g0 arena a host agent may announce (agent_hello.slots): the coordinator builds one
#: free-slot entry per slot, so a peer's number must be bounded (scenario maxmcount is at most this)
MAX_SLOTS = 100_000
#: the largest g0 stack slot an agent may announce (Go 1.16's g0 is 8 KiB; 1 MiB is far above)
MAX_SLOT_SIZE = 1 << 20


class FieldError(Exception):
    """A value does not fit its Kind.

    ``path`` is relative to the value that was checked (``""``, ``".pc"``, ``"[3].slot"``) and
    grows as the error leaves nested containers; the codec names the field and the message type.
    """

    def __init__(self, problem: str, path: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.path = path


class Kind:
    """A field type: ``expected`` (text for errors) and ``check(value) -> value``."""

    __slots__ = ("expected", "check")

    def __init__(self, expected: str, check: Callable[[Any], Any]):
        self.expected = expected
        self.check = check

    def __repr__(self) -> str:
        return f"Kind({self.expected})"


# --- describing a bad value, in one short line --------------------------------------------

_TYPE_NAMES = {type(None): "nil", bool: "bool", int: "int", float: "float", str: "str",
               bytes: "bin", list: "list", tuple: "list", dict: "map"}


def show(value: Any, limit: int = 48) -> str:
    """repr(value), cut to ``limit`` characters: safe to put in a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """The msgpack-ish type of a value, with the value itself for numbers: ``int -1``, ``str``."""
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return f"int {show(value, 24)} (beyond 64 bits)"
    if type(value) is int or type(value) is float:
        return f"{_TYPE_NAMES[type(value)]} {show(value, 24)}"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _mismatch(expected: str, got: str) -> FieldError:
    return FieldError(f"expected {expected}, got {got}")


# --- kinds -----------------------------------------------------------------------------------

def integer(lo: int = INT64_MIN, hi: int = INT64_MAX) -> Kind:
    """An int (not a bool) in lo..hi."""
    if (lo, hi) == (INT64_MIN, INT64_MAX):
        expected = "int"
    elif hi == INT64_MAX:
        expected = f"int >= {lo}"
    else:
        expected = f"int in {lo}..{hi}"

    def check(value):
        if type(value) is int and lo <= value <= hi:
            return value
        raise _mismatch(expected, describe(value))

    return Kind(expected, check)


def _check_float(value):
    if type(value) is float:
        if math.isfinite(value):
            return value
    elif type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return float(value)
    raise _mismatch("finite float", describe(value))


def _check_bool(value):
    if type(value) is bool:
        return value
    raise _mismatch("bool", describe(value))


def string(max_chars: int = MAX_STR_CHARS) -> Kind:
    """A str of at most ``max_chars`` characters."""
    expected = f"str of <= {max_chars} chars"

    def check(value):
        if type(value) is str and len(value) <= max_chars:
            return value
        got = f"str of {len(value)} chars" if type(value) is str else describe(value)
        raise _mismatch(expected, got)

    return Kind(expected, check)


def _check_list_shape(value, expected: str, max_items: int) -> None:
    if type(value) is not list and type(value) is not tuple:  # tuples: only ever from encode()
        raise _mismatch(expected, describe(value))
    if len(value) > max_items:
        raise _mismatch(expected, f"list of {len(value)} items")


def list_of(item: Kind, max_items: int) -> Kind:
    """A list of at most ``max_items`` values, each of Kind ``item``."""
    expected = f"list of <= {max_items} {item.expected}"
    check_item = item.check

    def check(value):
        _check_list_shape(value, expected, max_items)
        out = value
        for index, element in enumerate(value):
            try:
                new = check_item(element)
            except FieldError as err:
                err.path = f"[{index}]{err.path}"
                raise
            if new is not element:
                if out is value:
                    out = list(value)
                out[index] = new
        return out

    return Kind(expected, check)


def any_list(max_items: int) -> Kind:
    """A list of at most ``max_items`` values of any msgpack type (contents not checked)."""
    expected = f"list of <= {max_items} items"

    def check(value):
        _check_list_shape(value, expected, max_items)
        return value

    return Kind(expected, check)


def str_map(value_kind: Kind | None, max_keys: int) -> Kind:
    """A map of at most ``max_keys`` str keys to values of ``value_kind`` (None: anything)."""
    expected = f"map of <= {max_keys} str keys"
    key_kind = string()
    check_value = value_kind.check if value_kind is not None else None

    def check(value):
        if type(value) is not dict:
            raise _mismatch(expected, describe(value))
        if len(value) > max_keys:
            raise _mismatch(expected, f"map of {len(value)} keys")
        out = value
        for key, element in value.items():
            try:
                key_kind.check(key)
                new = element if check_value is None else check_value(element)
            except FieldError as err:
                err.path = f"[{show(key, 32)}]{err.path}"
                raise
            if new is not element:
                if out is value:
                    out = dict(value)
                out[key] = new
        return out

    return Kind(expected, check)


def record(label: str, fields: dict[str, Kind], preset: tuple[str, ...] = ()) -> Kind:
    """A map with exactly these fields, each of its Kind; no others.

    ``preset`` names keys that are allowed but checked elsewhere (the codec's ``v`` and ``t``).
    """
    expected = f"{label} map"
    checks = tuple((name, kind.check) for name, kind in fields.items())
    allowed = frozenset(fields) | frozenset(preset)
    size = len(allowed)

    def check(value):
        if type(value) is not dict:
            raise _mismatch(expected, describe(value))
        out = value
        for name, check_field in checks:
            try:
                element = value[name]
            except KeyError:
                raise FieldError("missing", f".{name}") from None
            try:
                new = check_field(element)
            except FieldError as err:
                err.path = f".{name}{err.path}"
                raise
            if new is not element:
                if out is value:
                    out = dict(value)
                out[name] = new
        if len(value) != size:
            unknown = next(key for key in value if key not in allowed)
            name = unknown if type(unknown) is str and unknown.isidentifier() else show(unknown, 32)
            raise FieldError("unknown field", f".{name}")
        return out

    return Kind(expected, check)


INT = integer()
NAT = integer(0)  # int >= 0
FLOAT = Kind("finite float", _check_float)
STR = string()
BOOL = Kind("bool", _check_bool)
LIST_INT = list_of(INT, 1024)
ANY = None  # for str_map: values of any msgpack type

POS = record("pos", {"pc": NAT, "loops": list_of(NAT, 64), "left": NAT})  # a goroutine's place in its program
# fail: how many times the fork fails with EAGAIN before it works (fork-fail fault); retry: newer
# Go's retryOnEAGAIN; delay_us: wall µs the child waits between fork and mstart (slow-fork fault).
FORK = record("fork spec", {"m": NAT, "nextp": integer(-1), "spinning": BOOL, "slot": NAT,
                            "epoch": NAT, "ts": FLOAT, "template": BOOL, "fail": NAT, "retry": BOOL,
                            "delay_us": NAT})
FRAME = record("g0 frame", {"depth": NAT, "goid": INT, "fn": STR, "time": FLOAT, "live": BOOL, "sp": NAT})
# The g0 frame of a forked M making its ZeroMQ threads, before its mstart: an M's OS thread is a
# process and those two threads, so until they exist its clone is not done. An M that dies of
# SIGABRT in it (libzmq aborts when pthread_create fails: a task limit) failed its clone, and the
# coordinator says so as Go's newosproc does (fatal), instead of making another M that dies alike.
CLONE_FRAME = "runtime.clone"
FORKS = list_of(FORK, 1024)
PROGRAMS = str_map(any_list(100_000), 10_000)  # compiled goroutine programs, by name
CONFIG = str_map(ANY, 64)

# --- the catalogue ---------------------------------------------------------------------------

class Message(NamedTuple):
    """One row of the catalogue: its fields, who sends it, and the types that answer it."""
    fields: dict[str, Kind]
    by: frozenset[str]  # "m", "agent", "coordinator"
    answer: frozenset[str]  # empty: nothing answers it


def _row(by: str, answer: str, **fields: Kind) -> Message:
    return Message(fields, frozenset(by.split()), frozenset(answer.split()))


#: what answers an M's request (its process waits for one of them)
REPLY = "execute cont park exit"
REPLIES: frozenset[str] = frozenset(REPLY.split())

CATALOGUE: dict[str, Message] = {
    # M -> coordinator
    "hello": _row("m", REPLY, m=INT, pid=INT, host=STR, started=FLOAT, taint=STR),  # mstart: the new M runs
    # notesleep returned; lat = s from the wake's send, slept = s the M was blocked before it came
    "woken": _row("m", REPLY, m=INT, lat=FLOAT, slept=FLOAT),
    "entersyscall": _row("m", REPLY, m=INT, g=INT, pos=POS, cgo=BOOL),
    "exitsyscall": _row("m", REPLY, m=INT, g=INT),
    "entersyscallblock": _row("m", REPLY, m=INT, g=INT, pos=POS),
    "newproc": _row("m", REPLY, m=INT, g=INT, pos=POS, prog=STR, n=integer(1, MAX_GO)),
    "lockosthread": _row("m", REPLY, m=INT, g=INT, pos=POS),
    "unlockosthread": _row("m", REPLY, m=INT, g=INT, pos=POS),
    "gopark": _row("m", REPLY, m=INT, g=INT, pos=POS, reason=STR, us=integer(0, MAX_DURATION_US)),
    "gosched": _row("m", REPLY, m=INT, g=INT, pos=POS),
    "runtime": _row("m", REPLY, m=INT, g=INT, pos=POS, op=STR, arg=STR),  # an op of ops.RUNTIME_OPS
    "goexit": _row("m", REPLY, m=INT, g=INT, pos=POS),  # pos.pc == len(code): the goroutine returned
    # M or agent -> coordinator: m is the forker, -1 for the agent
    "forked": _row("m agent", "", m=INT, child=INT, cepoch=NAT, pid=INT),
    # cause: "fault" (injected), "clone" (the real fork failed), "machine" (the machine-limit guard,
    # worker/machine_limits.py; limit: its line naming the limit, "" otherwise)
    "forkfail": _row("m agent", "", m=INT, child=INT, cepoch=NAT, errno=INT, tries=NAT, cause=STR, limit=STR),
    "heartbeat": _row("m agent coordinator", "", m=INT),  # the coordinator beats to agents (m -1)
    # coordinator -> M
    # replies name the request they answer (re = its seq): a late duplicate is never taken for the
    # answer to the next request
    "execute": _row("coordinator", "", re=NAT, g=INT, prog=STR, pos=POS, forks=FORKS),
    "cont": _row("coordinator", "", re=NAT, forks=FORKS),
    "park": _row("coordinator", "", re=NAT, forks=FORKS),
    "wake": _row("coordinator", "woken", nextp=INT, sent=FLOAT),
    "preempt": _row("coordinator", "", g=INT),  # answered by any sign of life of the M
    "exit": _row("coordinator", "", re=NAT),
    "shutdown": _row("coordinator", ""),  # to an M or an agent (the agent: mexited m=-1, then bye)
    # agent -> coordinator
    "agent_hello": _row("agent", "welcome", host=STR, pid=integer(1), arena=STR,
                        slot_size=integer(1, MAX_SLOT_SIZE), slots=integer(1, MAX_SLOTS)),
    # status: exit code, -N for signal N, None-like -256 when not our child; frames: its g0 stack
    "mexited": _row("agent", "ack", m=INT, pid=INT, status=INT, frames=list_of(FRAME, 256)),
    "bye": _row("agent", "", host=STR, processes=NAT, shm_segments=NAT),  # shutdown done: what it left
    # coordinator -> agent
    "welcome": _row("coordinator", "", programs=PROGRAMS, timescale=FLOAT, config=CONFIG),
    "newosproc": _row("coordinator", "forked forkfail", fork=FORK),
    "stackfree": _row("coordinator", "", slot=INT, m=INT),
    "watch": _row("coordinator", "ack", m=INT, pid=INT, slot=INT),
    "signal": _row("coordinator", "ack", m=INT, pid=INT, sig=integer(1, 64)),  # fault injection: kill/stop/cont an M
    # any direction
    "ack": _row("agent coordinator", "", re=INT),
}

#: the fields of each message type (what the codec checks)
MESSAGES: dict[str, dict[str, Kind]] = {t: row.fields for t, row in CATALOGUE.items()}


def sent_by(who: str) -> frozenset[str]:
    """The message types `who` ("m", "agent", "coordinator") sends."""
    return frozenset(t for t, row in CATALOGUE.items() if who in row.by)


M_SENDS: frozenset[str] = sent_by("m")
AGENT_SENDS: frozenset[str] = sent_by("agent")
#: an M's requests: each gets exactly one reply (REPLIES)
M_REQUESTS: frozenset[str] = frozenset(t for t in M_SENDS if CATALOGUE[t].answer == REPLIES)
#: the requests about the M's current goroutine
G_REQUESTS: frozenset[str] = frozenset(t for t in M_REQUESTS if "g" in CATALOGUE[t].fields)
TYPES: frozenset[str] = frozenset(MESSAGES)


def fork_spec(*, m: int, nextp: int, slot: int, epoch: int, ts: float,
              spinning: bool = False, template: bool = False, fail: int = 0, retry: bool = False,
              delay_us: int = 0) -> dict:
    """One fork order (``newosproc``'s ``fork``, an item of ``forks``): start M ``m`` in stack
    slot ``slot`` as incarnation ``epoch``, handing it P ``nextp`` (-1: none); ``ts`` is when
    the coordinator decided it; ``template``: forked by the agent, not by an M."""
    return {"m": m, "nextp": nextp, "spinning": spinning, "slot": slot,
            "epoch": epoch, "ts": float(ts), "template": template, "fail": fail, "retry": retry,
            "delay_us": delay_us}


def position(pc: int = 0, loops: list[int] | tuple[int, ...] = (), left: int = 0) -> dict:
    """A goroutine's ``pos``: instruction index, loop counters, µs left of a timed op."""
    return {"pc": pc, "loops": list(loops), "left": left}
