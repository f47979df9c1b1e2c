"""The goroutine-op vocabulary: what a goroutine "program" may do, and its compiled form.

Both sides need this module: the scenario loader validates and compiles programs, and the
M process interprets them.  A source program is a nested list of ops (``repeat`` holds a
body); the compiled form is FLAT, so that where a goroutine stands is just
``(pc, loops, left)`` -- a program counter, the remaining counts of the enclosing repeats
(innermost last) and the time left in the current timed op.  That triple is small, msgpack
friendly, and lets a goroutine be descheduled on one M and resumed on another.

Every op is one row of ``TABLE``: how it is written (its arguments, checked by the compiler) and
what it asks of the scheduler (the request an M sends, its fields, the Go function the M sends
it from); the names, arities and usages below, the compiler and the op stepper
(protocol/stepper.py, which the M, the load generator and the test World all run) derive from it.
Durations are microseconds of Go time, whole numbers >= 0.

Compiled form: plain ops are copied as lists; ``["repeat", n, body]`` becomes
``["rep", n, end_pc]``, the compiled body, ``["endrep", body_start_pc]``.  A repeat that can
run no op at all (``n == 0`` or a body that itself compiles to nothing) compiles to nothing:
that keeps ``advance`` from ever spinning through empty loops (``repeat 10**7`` of an empty
body would otherwise cost 10**7 steps with nothing to show), and changes nothing observable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple


def _no_fields(op: list) -> dict:
    return {}


class Op(NamedTuple):
    """One row of the vocabulary: its arguments, and the request an M sends for it (the message
    ``request`` with ``pos``, where the goroutine goes on, then ``fields(op)``)."""
    args: tuple[str, ...]  # the arguments after the name, by kind (ARGS: how each is checked and written)
    request: str = ""  # the message it sends; "" for repeat, which is control flow (rep/endrep)
    frame: str = ""  # the g0 systemstack frame the M sends it from: Go's function ("": the goroutine's stack)
    fields: Callable[[list], dict] = _no_fields  # the request's own fields, from the compiled op
    computes: bool = False  # holds the P for its µs first; it sends its request only when preempted
    blocks: bool = False  # a system call: after the request's cont the M blocks its µs, then exitsyscall
    ends: bool = False  # the goroutine ends: the request's pos is the op's own, its reply goes to schedule
    runtime: bool = False  # the runtime's own (see RUNTIME_OPS)


def _runtime_fields(op: list) -> dict:
    return {"op": op[0], "arg": op[1] if len(op) > 1 else ""}


#: op name -> its row. The frame names are the worker's g0 frames (seen in post-mortems and tests).
TABLE: dict[str, Op] = {
    # ["run", us]: compute while holding the P; preempted (sysmon's retake → preemptone), the
    # goroutine yields at its own pc with the µs left: gopreempt_m → goschedImpl
    "run": Op(("us",), "gosched", "runtime.gopreempt_m", computes=True),
    # ["syscall", us]: a blocking syscall, entersyscall ... exitsyscall
    "syscall": Op(("us",), "entersyscall", "runtime.entersyscall", lambda op: {"cgo": False}, blocks=True),
    # ["syscallblock", us]: entersyscallblock: the P is handed off at once
    "syscallblock": Op(("us",), "entersyscallblock", "runtime.entersyscallblock", blocks=True),
    # ["cgo", us]: a cgo call: cgocall sets m.incgo, then entersyscall
    "cgo": Op(("us",), "entersyscall", "runtime.entersyscall", lambda op: {"cgo": True}, blocks=True),
    # ["go", "program", n]: start n >= 1 goroutines running that program (newproc)
    "go": Op(("program", "goroutines"), "newproc", "runtime.newproc", lambda op: {"prog": op[1], "n": op[2]}),
    # ["lock"] / ["unlock"]: LockOSThread / UnlockOSThread
    "lock": Op((), "lockosthread"),
    "unlock": Op((), "unlockosthread"),
    # ["sleep", us]: gopark with a timer (park_m)
    "sleep": Op(("us",), "gopark", "runtime.park_m", lambda op: {"reason": "sleep", "us": op[1]}),
    # ["park"]: gopark forever
    "park": Op((), "gopark", "runtime.park_m", lambda op: {"reason": "park", "us": 0}),
    # ["wait"]: park until every goroutine this one started has exited
    "wait": Op((), "gopark", "runtime.park_m", lambda op: {"reason": "wait", "us": 0}),
    # ["exit"]: runtime.Goexit: goexit1 → goexit0
    "exit": Op((), "goexit", "runtime.goexit0", ends=True),
    # ["repeat", n, [ops]]: run the body n >= 0 times (nested at most 16 deep)
    "repeat": Op(("times", "body")),
}
# The runtime's own ops (name -> argument kinds): only the runtime's programs use them
# (coordinator/runtime/runtime_main.py; their names hold a dot, which no scenario program name can):
# a scenario that writes one gets "unknown op". An M sends each as a "runtime" message (op, arg)
# from the g0 frame "runtime." + its name.
_RUNTIME_ARGS: dict[str, tuple[str, ...]] = {
    "lockOSThread": (),  # proc.go lockOSThread: m.lockedInt++ (runtime.main during init)
    "unlockOSThread": (),  # proc.go unlockOSThread
    "chansend": ("chan",),  # c <- v on a runtime channel (arg: its name); a buffered channel of chan.go
    "chanrecv": ("chan",),  # <-c
    "gopark": ("reason",),  # gopark(..., reason) with Go's wait reason string (arg)
    "startTemplateThread": (),  # proc.go startTemplateThread (runtime.main of a cgo binary)
}
TABLE.update({name: Op(args, "runtime", "runtime." + name, _runtime_fields, runtime=True)
              for name, args in _RUNTIME_ARGS.items()})

#: op name -> number of arguments after the name, in the source form (the ops a scenario may write).
OPS: dict[str, int] = {name: len(row.args) for name, row in TABLE.items() if not row.runtime}

#: ops whose single argument is a duration in Go microseconds.
TIMED: frozenset[str] = frozenset(name for name, row in TABLE.items() if row.args == ("us",))

#: the runtime's own ops (op name -> number of arguments).
RUNTIME_OPS: dict[str, int] = {name: len(row.args) for name, row in TABLE.items() if row.runtime}

MAX_INSTRUCTIONS = 100_000
MAX_REPEAT = 10**7
MAX_DEPTH = 16
#: about 11.5 days of Go time: far beyond any run, and well inside msgpack's integers.
MAX_DURATION_US = 10**12
#: goroutines one ``go`` op starts: the scenario check and the wire's ``newproc.n`` both use it
MAX_GO = 100_000
MAX_PROGRAM_NAME = 64

_PROGRAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_PROGRAM_NAME)
_OP_NAMES = ", ".join(OPS)


class OpError(ValueError):
    """A program is not valid.  ``path`` locates the problem (``programs.main.ops[2][1]``),
    ``problem`` says what was expected; ``str()`` is one line joining the two."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def format_value(value: object, limit: int = 60) -> str:
    """Show a value from a scenario file the way it was written (TOML/JSON-like, one line),
    cut to ``limit`` characters so one error stays one short line."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: object) -> bool:
    # bool is an int in Python, but `true` is not a number of microseconds.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_duration(value: object, path: str) -> None:
    if not _is_int(value) or value < 0:
        raise OpError(path, f"expected a whole number of microseconds >= 0, got {format_value(value)}")
    if value > MAX_DURATION_US:
        raise OpError(path, f"expected at most {MAX_DURATION_US} microseconds, got {value}")


def check_program_name(name: object, path: str) -> None:
    """Program names are TOML bare keys: they also travel in messages and show in reports."""
    if not isinstance(name, str) or not _PROGRAM_NAME.fullmatch(name):
        raise OpError(
            path,
            f"expected a program name of 1 to {MAX_PROGRAM_NAME} letters, digits, '_' or '-', "
            f"got {format_value(name)}",
        )


def _check_goroutines(value: object, path: str) -> None:
    if not _is_int(value) or not 1 <= value <= MAX_GO:
        raise OpError(path, f"expected a whole number of goroutines from 1 to {MAX_GO}, got {format_value(value)}")


def _check_times(value: object, path: str) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_REPEAT:
        raise OpError(path, f"expected a repeat count from 0 to {MAX_REPEAT}, got {format_value(value)}")


class Arg(NamedTuple):
    """A kind of argument: how USAGE writes it and how the compiler checks it (raising OpError)."""
    written: str
    check: Callable[[object, str], None] | None  # None: checked where it is used (a repeat's body)


ARGS: dict[str, Arg] = {
    "us": Arg("us", _check_duration),
    "program": Arg('"program"', check_program_name),  # a "go" target: compile_programs checks it exists
    "goroutines": Arg("n", _check_goroutines),
    "times": Arg("n", _check_times),
    "body": Arg("[ops...]", None),
}

#: how each op is written, for error messages.
USAGE: dict[str, str] = {name: "[" + ", ".join([f'"{name}"'] + [ARGS[kind].written for kind in TABLE[name].args]) + "]"
                         for name in OPS}


def _compile_into(code: list, ops: object, path: str, depth: int, refs: list) -> None:
    """Append the compiled form of ``ops`` to ``code``; record ``go`` targets in ``refs``."""
    if not isinstance(ops, list):
        raise OpError(path, f"expected a list of ops, got {format_value(ops)}")
    for index, op in enumerate(ops):
        here = f"{path}[{index}]"
        if not isinstance(op, list) or not op:
            raise OpError(here, f'expected an op such as ["run", 100], got {format_value(op)}')
        name = op[0]
        if not isinstance(name, str):
            raise OpError(f"{here}[0]", f"expected an op name (one of {_OP_NAMES}), got {format_value(name)}")
        if name not in OPS:
            raise OpError(here, f"unknown op {name!r} (expected one of {_OP_NAMES})")
        if len(op) != 1 + OPS[name]:
            raise OpError(here, f"{name!r} is written {USAGE[name]}, got {format_value(op)}")
        kinds = TABLE[name].args
        for number, kind in enumerate(kinds, 1):
            check = ARGS[kind].check
            if check is not None:
                check(op[number], f"{here}[{number}]")
        if name == "repeat":
            count, body = op[1], op[2]
            if depth >= MAX_DEPTH:
                raise OpError(here, f"repeats are nested more than {MAX_DEPTH} deep")
            rep_pc = len(code)
            code.append(["rep", count, None])
            _compile_into(code, body, f"{here}[2]", depth + 1, refs)
            if count == 0 or len(code) == rep_pc + 1:
                # Validated, but it can run nothing: leave no trace (see the module docstring).
                del code[rep_pc:]
            else:
                code.append(["endrep", rep_pc + 1])
                code[rep_pc][2] = len(code)
        else:
            if "program" in kinds:
                refs.append((here, op[1 + kinds.index("program")]))
            code.append(list(op))
        if len(code) > MAX_INSTRUCTIONS:
            raise OpError(path, f"program compiles to more than {MAX_INSTRUCTIONS} instructions")


def _compile(name: str, ops: object) -> tuple[list, list]:
    path = f"programs.{name}.ops"
    code: list = []
    refs: list = []
    _compile_into(code, ops, path, 0, refs)
    if len(code) > MAX_INSTRUCTIONS:
        raise OpError(path, f"program compiles to more than {MAX_INSTRUCTIONS} instructions")
    return code, refs


def compile_program(name: str, ops: object) -> list:
    """Validate one program and return its flat code.  ``go`` targets are not checked here
    (the other programs are unknown); ``compile_programs`` does that."""
    check_program_name(name, "programs")
    return _compile(name, ops)[0]


def compile_programs(programs: object) -> dict[str, list]:
    """Validate and compile every program; every ``go`` must name one of them, and a
    ``main`` program (goroutine 1) is required."""
    if not isinstance(programs, dict):
        raise OpError("programs", f"expected a table of programs, got {format_value(programs)}")
    compiled: dict[str, list] = {}
    all_refs: list = []
    for name, ops in programs.items():
        check_program_name(name, "programs")
        code, refs = _compile(name, ops)
        compiled[name] = code
        all_refs.extend(refs)
    for path, target in all_refs:
        if target not in programs:
            raise OpError(path, f'"go" names program {target!r}, which is not defined')
    if "main" not in programs:
        raise OpError("programs", 'a "main" program is required')
    return compiled


def is_cgo(programs: dict[str, list]) -> bool:
    """A scenario with any cgo op is a cgo binary (Go's iscgo): it links runtime/cgo."""
    return any(op[0] == "cgo" for code in programs.values() for op in code)


def relocate(code: list, offset: int) -> list:
    """``code`` placed ``offset`` instructions further into a program: its jump targets move too."""
    out = []
    for op in code:
        if op[0] == "rep":
            out.append(["rep", op[1], op[2] + offset])
        elif op[0] == "endrep":
            out.append(["endrep", op[1] + offset])
        else:
            out.append(list(op))
    return out


def advance(code: list, pc: int, loops: list) -> tuple[int, list]:
    """Step over control instructions from ``pc`` until it points at a real op or is
    ``len(code)`` (the program has ended).  Pure: returns a new ``loops`` list.

    ``rep n end`` pushes n (or, for n == 0, jumps to end); ``endrep start`` decrements the
    innermost count and jumps back to start while it is > 0, else pops it and falls through.
    The interpreter runs ``code[pc]`` and then calls ``advance(code, pc + 1, loops)``.
    """
    loops = list(loops)
    end = len(code)
    while pc < end:
        instruction = code[pc]
        kind = instruction[0]
        if kind == "rep":
            if instruction[1] == 0:
                pc = instruction[2]
            else:
                loops.append(instruction[1])
                pc += 1
        elif kind == "endrep":
            if not loops:
                raise ValueError(f"malformed code: endrep at {pc} with no enclosing rep")
            loops[-1] -= 1
            if loops[-1] > 0:
                pc = instruction[1]
            else:
                loops.pop()
                pc += 1
        else:
            break
    return pc, loops
