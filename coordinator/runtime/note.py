"""Go's `note` (lock_futex.go): a one-shot wakeup latch.

A wakeup that arrives before the sleep is kept (the key is already 1, so notesleep returns at once);
a second wakeup without a noteclear in between is a fatal "notewakeup - double wakeup".
The core uses it for m.park and newmHandoff.wake: notewakeup here is the decision; the WAKE
message that carries it to the sleeping process is an effect the shell sends.
"""
from __future__ import annotations

from dataclasses import dataclass

from protocol.throw import Throw


@dataclass(eq=False)
class Note:
    key: int = 0


def noteclear(n: Note) -> None:
    """Go's noteclear: make the note ready for its next sleep."""
    n.key = 0


def notewakeup(n: Note) -> None:
    """Go's notewakeup: set the key; a second wakeup without a clear throws."""
    old, n.key = n.key, 1
    if old != 0:
        raise Throw("notewakeup - double wakeup", prints=(f"notewakeup - double wakeup ({old})",))


def notesleep(n: Note) -> bool:
    """Go's notesleep, as a question: True when the wakeup already came, so the sleeper need not block."""
    return n.key != 0
