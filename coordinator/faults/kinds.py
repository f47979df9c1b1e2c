"""The fault kinds: one row each (name, family, parameters, defaults, doc); the language and the planner derive from it.

Adding a fault kind: a row in ``ROWS`` (and, for a new family, its handling in
``coordinator/faults/plan.py``), plus what it does in ``coordinator/faults/inject.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.ops import MAX_DURATION_US

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

#: the parameters of each family (FaultSpec field names), in the order errors list them
_TIMED = ("target", "at_ms", "every_ms", "start_ms", "until_ms", "probability", "count")
_WINDOW = ("start_ms", "until_ms", "probability", "count")
_MESSAGE = ("types",) + _WINDOW


@dataclass(frozen=True)
class Kind:
    """One fault kind.  ``params``: the FaultSpec fields it takes; ``duration``: why it needs
    ``duration_ms`` (required then), or None; ``defaults``: fields filled in when not given."""

    name: str
    family: str                  # "timed" | "fork" | "message"
    params: tuple[str, ...]
    doc: str
    duration: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Kind("kill-m", "timed", _TIMED, "an M's process gets SIGKILL", defaults={"target": "random"}),
    Kind("stop-m", "timed", _TIMED + ("duration_ms",), "an M's process gets SIGSTOP, then SIGCONT after duration",
         duration="how long the M stays stopped", defaults={"target": "random"}),
    Kind("exit-m", "timed", _TIMED, "an M exits cleanly mid-run", defaults={"target": "random"}),
    Kind("kill-template", "timed", _TIMED + ("restart",), "the host agent (the template thread) dies",
         defaults={"target": TEMPLATE_TARGET, "restart": True}),
    Kind("fork-fail", "fork", _WINDOW + ("retry",), "newosproc fails with EAGAIN", defaults={"retry": False}),
    Kind("slow-fork", "fork", _WINDOW + ("duration_ms",), "the new M waits duration between fork and mstart",
         duration="the delay between fork and mstart"),
    Kind("drop", "message", _MESSAGE, "a message is lost"),
    Kind("delay", "message", _MESSAGE + ("duration_ms",), "a message is held back up to duration",
         duration="the longest delay a message gets"),
    Kind("duplicate", "message", _MESSAGE, "a message is delivered twice"),
    Kind("reorder", "message", _MESSAGE, "a message is held back and sent after the next one to the same peer"),
)

BY_NAME = {row.name: row for row in ROWS}
KINDS = tuple(BY_NAME)
TIMED_KINDS = tuple(row.name for row in ROWS if row.family == "timed")
FORK_KINDS = tuple(row.name for row in ROWS if row.family == "fork")
MESSAGE_KINDS = tuple(row.name for row in ROWS if row.family == "message")
