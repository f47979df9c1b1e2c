"""proc.go's M lifecycle in the pure core (coordinator/runtime/proc.py), and checkdead, lockosthread
and runq, pinned where a one-token change survived the other tests (tests/MUTATION.md, "proc,
checkdead, lockosthread, mdead, netpoll, runq, note"). Each test names the Go 1.16 function (or
gmpsim's own rule, for the multi-host and fork-failure paths Go has not) whose line it pins.
Pure: schedinit's records, the core's functions and step(), no process.

Throws are called directly where Go throws on a state no correct scheduler reaches: the test pins
Go's check and its message (the text a report can be grepped against proc.go for)."""
from __future__ import annotations

import pytest

from coordinator.runtime import effects as fx
from coordinator.runtime.core import schedinit, step
from coordinator.runtime.newm import addhost, allocm, drophost, mReserveID, placehost, stackalloc, stackfree
from coordinator.runtime.proc import startm
from coordinator.runtime.sched import Sched
from protocol.ops import compile_programs
from protocol.throw import Throw
from tests import steps
from tests.steps import of
from tests.world import World

PROGS = {"main": [["run", 1]], "w": [["run", 1]]}


def started(**kw) -> World:
    return steps.started(PROGS, **kw)


def sched_on(hosts: dict, **kw) -> Sched:
    s, _ = schedinit(kw.pop("gomaxprocs", 2), compile_programs(PROGS), hosts, **kw)
    s.fx = []
    return s


def throw(fn, *args) -> Throw:
    with pytest.raises(Throw) as e:
        fn(*args)
    return e.value


# --- mReserveID, stackalloc, stackfree, allocm ------------------------------------------------------

def test_mreserveid_overflows_past_the_largest_int64():
    """mReserveID: `if sched.mnext+1 < sched.mnext { throw("runtime: thread ID overflow") }` (int64):
    the last ID that fits is 2**63-2 (mnext becomes 2**63-1); one more overflows."""
    s = sched_on({"local": 4}, maxmcount=2**64)
    s.mnext = 2**63 - 2
    assert mReserveID(s) == 2**63 - 2 and s.mnext == 2**63 - 1
    t = throw(mReserveID, s)
    assert t.message == "runtime: thread ID overflow" and s.mnext == 2**63 - 1


def test_stackalloc_with_no_slot_left_is_out_of_memory():
    """stackalloc (malg's g0 stack): a host's arena with no free slot is Go's "out of memory"."""
    s = sched_on({"local": 1})  # m0 took slot 0
    t = throw(stackalloc, s, "local")
    assert t.lines() == ["runtime: out of g0 stack slots on host local", "fatal error: out of memory"]


def test_slot_0_is_freed_like_any_other():
    """stackfree: slot 0 (m0's) is a slot: when m0's process dies, the next allocm frees it."""
    w = started(gomaxprocs=1)
    assert w.procs[0].slot == 0
    out = w.kill(0)  # G1 requeued, P0 handed off: newm's allocm frees m0's slot
    assert fx.StackFree("local", 0, 0) in out


def test_stackfree_of_a_cut_off_host_frees_nothing():
    """stackfree (not in Go): the slot of an M whose host was cut off goes with that host's arena:
    no StackFree, and slot 0 of a dropped host is no exception."""
    s = sched_on({"a": 4, "b": 4})
    mp = allocm(s, None, -1, "b")
    assert mp.slot == 0
    drophost(s, "b")
    stackfree(s, mp)
    assert mp.slot == -1 and s.fx == [] and s.stats["stacks_freed"] == 0


def test_allocm_puts_the_m_on_its_host():
    """allocm (multi-host, not in Go): the M's record and its g0 slot are on the host asked for."""
    s = sched_on({"a": 4, "b": 4})
    mp = allocm(s, None, -1, "b")
    assert mp.host == "b" and mp.slot == 0 and sorted(s.stackfree_slots["b"]) == [1, 2, 3]


# --- placehost, addhost, drophost (not in Go: several hosts) ------------------------------------------

def test_placehost_with_no_host_left_throws_newosproc():
    """placehost: no host left to create an M on is newosproc's throw, with gmpsim's line."""
    s = sched_on({"a": 4})
    drophost(s, "a")
    t = throw(placehost, s)
    assert t.lines() == ["gmpsim: no host left to create an M on", "fatal error: newosproc"]


def test_placehost_round_robin_goes_round_the_hosts():
    """placehost "round-robin": each agent-forked M on the next host, from the first."""
    s = sched_on({"a": 4, "b": 4, "c": 4}, placement="round-robin")
    assert [placehost(s) for _ in range(4)] == ["a", "b", "c", "a"]


def test_placehost_least_loaded_counts_real_ms_per_host():
    """placehost "least-loaded": fewest (non-virtual) Ms, ties to the earlier host; Ms of a host
    cut off are not counted; sysmon (virtual, on the first host) is not a load."""
    s = sched_on({"z": 8, "a": 8, "m": 8})  # m0 on z (and sysmon, virtual)
    assert placehost(s) == "a"  # a and m tie at 0: the earlier one in hosts, not the smaller name
    allocm(s, None, -1, "a")
    assert placehost(s) == "m"
    allocm(s, None, -1, "m")
    allocm(s, None, -1, "m")
    assert placehost(s) == "z"  # z: m0 only (sysmon virtual); a: 1; m: 2 → tie z/a → z
    allocm(s, None, -1, "z")
    assert placehost(s) == "a"  # z 2, a 1, m 2
    drophost(s, "m")
    addhost(s, "q", 4)
    assert placehost(s) == "q"
    for _ in range(3):
        allocm(s, None, -1, "q")
    assert placehost(s) == "a"  # the Ms of the dropped host m are not counted (nor a KeyError)


def test_addhost_a_rejoining_host_gets_all_its_slots_and_forgets_old_ms():
    """addhost: a host that (re)joins has all its slots free; its Ms of the earlier incarnation
    still on freem will never free their slot there (slot -1, freeWait 0); other hosts' untouched."""
    s = sched_on({"a": 4, "b": 4})
    ma = allocm(s, None, -1, "a")
    mb = allocm(s, None, -1, "b")
    for mp in (ma, mb):
        s.allm.pop(mp.id)
        mp.exited, mp.freeWait = True, 1
        s.freem.append(mp)
    drophost(s, "b")
    addhost(s, "b", 3)
    assert s.hosts == ["a", "b"] and s.stackfree_slots["b"] == [0, 1, 2]
    assert (mb.slot, mb.freeWait) == (-1, 0) and (ma.slot, ma.freeWait) == (1, 1)
    addhost(s, "a", 2)
    assert s.hosts == ["a", "b"] and s.stackfree_slots["a"] == [0, 1]


def test_drophost_returns_the_real_ms_of_the_host():
    """drophost: no new M goes to the host; its Ms (not the virtual ones) are returned, to fence."""
    s = sched_on({"a": 4, "b": 4})
    mb = allocm(s, None, -1, "b")
    allocm(s, None, -1, "a")
    assert drophost(s, "b") == [mb] and s.hosts == ["a"] and "b" not in s.stackfree_slots
    assert drophost(s, "a") == [s.m0, s.allm[3]]  # not sysmon (virtual, on a)
    assert drophost(s, "nowhere") == []


def test_a_direct_newm_stays_on_its_callers_host():
    """newm → newm1 → newosproc: a direct newm is a fork of the caller, so on the caller's host,
    whatever placehost would choose (here the emptier host b)."""
    w = World(PROGS, gomaxprocs=2, hosts={"a": 8, "b": 8})
    w.hello(0)
    (fork,) = of(w.newproc(0, "w"), fx.Fork)
    assert fork.forker == 0 and fork.host == "a"


# --- newm, newosproc, newosproc_failed -------------------------------------------------------------

def test_newm_counts_in_stats():
    """newm/newosproc: stats.newm and stats.ms_created count each M made (the report's ms.created)."""
    w = started(gomaxprocs=2)
    s = w.sched
    before = s.stats["newm"], s.stats["ms_created"]
    assert of(w.newproc(0, "w"), fx.Fork)
    assert (s.stats["newm"], s.stats["ms_created"]) == (before[0] + 1, before[1] + 1)
    w.hello(2)
    w.kill(2)  # G2 requeued: handoffp → newm again
    assert (s.stats["newm"], s.stats["ms_created"]) == (before[0] + 2, before[1] + 2)


def test_forks_through_the_template_are_counted():
    """newosproc: stats.via_template counts each M the template thread forked (newmHandoff): here
    the Ms that stoplockedm's handoffp starts from a locked M (golang/go#28979)."""
    w = started(gomaxprocs=1)
    w.lock(0)
    w.newproc(0, "w")
    w.entersyscallblock(0)  # handoffp(P0): G2 → startm(P0, false) → newm through the template
    (m2,) = w.forked()
    assert w.hello(m2) == [fx.Execute(m2, 2)]
    w.lock(m2)
    w.entersyscallblock(m2)  # handoffp(P0): nobody spinning → startm(P0, true): the template again
    s = w.sched
    assert s.stats["via_template"] == sum(f.template for f in w.forks) == 2


def _unborn(w: World) -> int:
    (m,) = w.forked()
    return m


@pytest.mark.parametrize("errno,cause,limit,lines", [
    (11, "fault", "", ["runtime: failed to create new OS thread (have 3 already; errno=11)",
                       "runtime: may need to increase max user processes (ulimit -u)"]),
    (12, "clone", "", ["runtime: failed to create new OS thread (have 3 already; errno=12)"]),
    (11, "machine", "gmpsim: 3 Ms is the machine limit",
     ["runtime: failed to create new OS thread (have 3 already; errno=11)",
      "runtime: may need to increase max user processes (ulimit -u)", "gmpsim: 3 Ms is the machine limit"]),
])
def test_newosproc_failed_prints_as_go_1_16_and_throws(errno, cause, limit, lines):
    """newosproc (Go 1.16, clone failed): print "failed to create new OS thread (have N already;
    errno=E)", for EAGAIN the ulimit hint, then throw("newosproc"); counted per cause."""
    w = started(gomaxprocs=2)
    w.newproc(0, "w")
    m = _unborn(w)
    s = w.sched
    out = step(s, {"t": "forkfail", "m": m, "errno": errno, "cause": cause, "limit": limit}, w.now)
    assert out == [fx.Fatal("newosproc", (*lines, "fatal error: newosproc"))]
    assert s.stats["newosproc_failed"] == 1 and s.stats[f"newosproc_failed.{cause}"] == 1
    step(s, {"t": "forkfail", "m": m, "errno": errno, "cause": cause, "limit": limit}, w.now)
    assert s.stats["newosproc_failed"] == 2 and s.stats[f"newosproc_failed.{cause}"] == 2


# --- startm ---------------------------------------------------------------------------------------

def test_startm_counts_each_call_and_its_caller_and_each_idle_m_it_took():
    """startm: stats.startm, stats["startm." + why] and stats.mget (the report's figures)."""
    w = started(gomaxprocs=2)
    s = w.sched
    w.newproc(0, "w")  # wakep → startm → newm
    assert (s.stats["startm"], s.stats["startm.wakep"], s.stats["mget"]) == (1, 1, 0)
    w.hello(2)
    w.goexit(2)  # M2 idle
    w.newproc(0, "w")  # wakep → startm → mget M2
    assert (s.stats["startm"], s.stats["startm.wakep"], s.stats["mget"]) == (2, 2, 1)
    w.woken(2)
    w.goexit(2)
    w.newproc(0, "w")
    assert (s.stats["startm"], s.stats["startm.wakep"], s.stats["mget"]) == (3, 3, 2)


def test_a_spinning_startm_with_no_idle_p_undoes_the_callers_count():
    """startm (1.16): spinning and no idle P: "The caller incremented nmspinning, so decrement it"
    (and throw "startm: negative nmspinning" if that goes below 0)."""
    s = sched_on({"local": 4}, gomaxprocs=1)
    s.nmspinning = 2
    startm(s, None, True, s.sysmonm, "test")
    assert s.nmspinning == 1 and s.fx == []
    startm(s, None, True, s.sysmonm, "test")
    assert s.nmspinning == 0
    t = throw(startm, s, None, True, s.sysmonm, "test")
    assert t.message == "startm: negative nmspinning"
    startm(s, None, False, s.sysmonm, "test")  # not spinning: nothing to undo
    assert s.nmspinning == -1 and s.fx == []


def test_placehost_with_one_host_is_that_host_and_round_robin_starts_over():
    """placehost on one host: that host, without counting allm (newm's cost must not grow with the
    Ms); round-robin's turn is left at 0, so a host that joins is next after the first, as before."""
    s = sched_on({"a": 4, "b": 4}, placement="round-robin")
    assert [placehost(s), placehost(s)] == ["a", "b"] and s.rr == 1
    drophost(s, "b")
    assert placehost(s) == "a" and s.rr == 0
    addhost(s, "c", 4)
    assert [placehost(s) for _ in range(3)] == ["c", "a", "c"]

    class Uncounted(dict):
        def values(self):
            raise AssertionError("placehost counted allm with one host")

    one = sched_on({"a": 4})
    one.allm = Uncounted(one.allm)
    assert placehost(one) == "a"
