"""The scheduler's invariants, checked between steps: `check(sched) -> list[str]` (empty when fine).

Pure and cheap (one pass over the Ms, the Ps, the Gs and the run queues), so a real run can call
it after every step. Each problem is one line naming the records involved, e.g.
"P1: owned by M3 but M3.p is P0".

Between two steps every record is in one well-defined state:

- a P is idle (on sched.pidle, _Pidle, no M), owned by exactly one M (_Prunning, p.m == M and
  M.p == p), in transit through exactly one M's nextp (_Pidle, off pidle: startm / startlockedm
  chose that M, which has not yet said hello or woken), or _Psyscall (no M; the M whose goroutine
  entered the syscall on it still has it as oldp with the same syscalltick);
- a (non-virtual) M in allm is unstarted (a Fork is on its way; nextp set, m0 excepted: it holds P0
  from procresize), running a goroutine (curg _Grunning with a P, or _Gsyscall without one), idle
  on sched.midle (parked in stopm, no P, no nextp; it resumes in findrunnable or schedule), woken
  from stopm (parked, key set, nextp set), blocked in netpoll (findrunnable's poll until the next
  timer: no P, no nextp, not on midle so not idle, not spinning; at most one, and sched.lastpoll is
  0 exactly while it is there; key set once its wait is over, still with no P),
  parked in stoplockedm with its locked goroutine (key set and nextp set once startlockedm handed it
  a P), or m0 wedged by mexit (it stays in allm, counted in nmfreed). Exited Ms (mexit, or mdead
  for a process that died) are on sched.freem until allocm frees their g0 stack;
- a goroutine is runnable (in exactly one run queue, or handed to its locked M with the P), running
  (exactly one M's curg, with a P), in a syscall (exactly one M's curg, no P), waiting, or dead.

Counters follow from that: npidle, nmidle, runqsize are list lengths; nmidlelocked counts the Ms
parked in stoplockedm and not yet handed a P; nmspinning counts the spinning Ms plus the Ms not yet
started whose mstartfn is mspinning (the waker counts them, mspinning adopts the count);
mcount() == mnext - nmfreed == len(allm) - (1 if m0 is wedged), allm holding sysmon's and the
template thread's virtual Ms (nmsys) too; nmfreed counts the Ms that exited or died, plus a wedged m0.

check() runs the checks of each subject in turn: invariants_m.py (the Ms and their counters),
invariants_p.py (the Ps), invariants_g.py (the goroutines).

Not meaningful right after a Fatal (a throw leaves the step half done); after main returned
(ProgramExit) goroutine 1 is dead on m0's curg, which is allowed. Cost: ~0.3 µs per live M, P or G
record (about 1 ms for 750 Ms and 2000 live goroutines); dead goroutines are nearly free.
"""
from __future__ import annotations

from coordinator.runtime.invariants_g import check_gs
from coordinator.runtime.invariants_m import check_m_counters, check_ms
from coordinator.runtime.invariants_p import check_ps
from coordinator.runtime.sched import Sched


def list_counters(sched: Sched, e) -> None:
    """The counters that are list lengths (or bounded), O(1): part of check() and check_touched()."""
    if sched.npidle != len(sched.pidle):
        e(f"sched: npidle={sched.npidle} but {len(sched.pidle)} Ps on pidle")
    if sched.nmidle != len(sched.midle):
        e(f"sched: nmidle={sched.nmidle} but {len(sched.midle)} Ms on midle")
    if sched.runqsize != len(sched.runq):
        e(f"sched: runqsize={sched.runqsize} but {len(sched.runq)} Gs on the global runq")
    if sched.nmspinning < 0:
        e(f"sched: nmspinning={sched.nmspinning} is negative")
    if sched.nmidlelocked < 0:
        e(f"sched: nmidlelocked={sched.nmidlelocked} is negative")
    if sched.sysmonwait not in (0, 1):
        e(f"sched: sysmonwait={sched.sysmonwait}")


def check(sched: Sched, shares: dict | None = None) -> list[str]:
    """Every broken invariant of `sched`, one line each; [] when the state is consistent. `shares`,
    when given, is filled with each M's share of nmspinning and nmidlelocked (see check_ms)."""
    errs: list[str] = []
    e = errs.append
    exited = sched.exit_code is not None  # main returned: goroutine 1 is dead on m0's curg

    list_counters(sched, e)
    extra = {id(mp) for mp in sched.extram}
    acc = check_ms(sched, e, exited, extra, shares)
    check_m_counters(sched, e, acc)
    check_ps(sched, e, acc)
    check_gs(sched, e, acc.curgs, exited, extra)
    return errs
