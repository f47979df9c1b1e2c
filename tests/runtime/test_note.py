"""Go's note (lock_futex.go), coordinator/runtime/note.py: a one-shot, level-triggered wakeup latch."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.note import Note, noteclear, notesleep, notewakeup
from coordinator.runtime.proc import mPark
from protocol.throw import Throw
from tests.world import World


def test_a_wakeup_before_the_sleep_is_not_lost():
    n = Note()
    notewakeup(n)
    assert notesleep(n) is True  # returns at once: the key is already set
    assert notesleep(n) is True  # level-triggered: still set until noteclear


def test_sleep_without_a_wakeup_blocks():
    n = Note()
    assert notesleep(n) is False


def test_noteclear_makes_it_ready_for_the_next_sleep():
    n = Note()
    notewakeup(n)
    noteclear(n)
    assert notesleep(n) is False
    notewakeup(n)  # one wakeup per clear: no throw
    assert notesleep(n) is True


def test_double_wakeup_throws():
    n = Note()
    notewakeup(n)
    with pytest.raises(Throw) as t:
        notewakeup(n)
    assert t.value.message == "notewakeup - double wakeup"
    assert t.value.lines() == ["notewakeup - double wakeup (1)", "fatal error: notewakeup - double wakeup"]
    assert n.key == 1


def test_mpark_after_the_wakeup_does_not_sleep():
    """mPark (notesleep(&m.park)) with the wakeup already there: no Park reply, the M goes on."""
    w = World({"main": [["run", 1]]})
    w.hello(0)
    s, mp = w.sched, w.sched.m0
    s.fx = []
    notewakeup(mp.park)
    assert mPark(s, mp, "stopm") is False
    assert s.fx == [] and mp.blocked is False


def test_mpark_without_a_wakeup_sleeps():
    w = World({"main": [["run", 1]]})
    w.hello(0)
    s, mp = w.sched, w.sched.m0
    s.fx = []
    assert mPark(s, mp, "stopm") is True
    assert s.fx == [fx.Park(mp.id)] and mp.blocked is True and mp.parked == "stopm"


def test_a_wake_that_overtakes_the_park_reply_is_kept():
    """In a real system the Wake may reach the M process before it acts on its Park reply; the core
    has already recorded the wakeup in m.park (key 1), so the woken event is accepted whenever it
    comes, once, and the note is cleared for the next sleep."""
    w = World({"main": [["go", "w", 1], ["run", 1]], "w": [["run", 1]]}, gomaxprocs=2)
    w.hello(0)
    (fork,) = [e for e in w.newproc(0, "w", 1) if isinstance(e, fx.Fork)]
    w.hello(fork.m)  # spinning M steals G2
    w.goexit(fork.m)  # nothing left: stopm, Park
    mp = w.sched.allm[fork.m]
    assert mp.park.key == 0 and mp in w.sched.midle
    out = w.newproc(0, "w", 1)  # wakep → startm → mget → notewakeup(&mp.park)
    assert fx.Wake(fork.m, 1) in out and mp.park.key == 1
    assert w.woken(fork.m) == [fx.Execute(fork.m, 3)]
    assert mp.park.key == 0  # noteclear after the sleep
