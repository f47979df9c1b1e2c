"""System calls (proc.go, Go 1.16): entersyscall, entersyscallblock, exitsyscall, exitsyscallfast,
exitsyscall0. In 1.16 a goroutine entering a syscall detaches its P (status _Psyscall) so that
sysmon can retake it; tip keeps the P wired and is removing _Psyscall.
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.note import notewakeup
from coordinator.runtime.proc import acquirep, handoffp, pidleget, releasep, stoplockedm, stopm, stopm_return
from coordinator.runtime.runq import globrunqput
from coordinator.runtime.sched import M, P, Resume, Sched, _Grunnable, _Grunning, _Gsyscall, _Pidle, _Psyscall
from coordinator.runtime.schedule import dropg, execute, schedule, woken


def _wake_sysmon(sched: Sched) -> None:
    """entersyscall_sysmon / exitsyscallfast_pidle / exitsyscall0: if sysmon is in its deep sleep,
    sysmonwait = 0 and notewakeup(&sched.sysmonnote) (the effect carries it to the shell)."""
    if sched.sysmonwait != 0:
        sched.sysmonwait = 0
        notewakeup(sched.sysmonnote)
        sched.fx.append(fx.WakeSysmon())


def entersyscall(sched: Sched, mp: M, cgo: bool) -> None:
    """Go's entersyscall/reentersyscall (cgocall sets m.incgo first): the P stays behind in
    _Psyscall, owned by no M, for exitsyscall to take back or sysmon to retake."""
    gp = mp.curg
    if cgo:
        mp.incgo = True
    gp.status = _Gsyscall
    _wake_sysmon(sched)
    p = mp.p
    mp.syscalltick = p.syscalltick
    p.m = None
    mp.oldp = p
    mp.p = None
    p.status = _Psyscall
    sched.fx.append(fx.Cont(mp.id))


def entersyscallblock(sched: Sched, mp: M) -> None:
    """Go's entersyscallblock: a call known to block hands its P off at once (no wait for sysmon)."""
    gp = mp.curg
    p = mp.p
    mp.syscalltick = p.syscalltick
    p.syscalltick += 1
    gp.status = _Gsyscall
    handoffp(sched, releasep(sched, mp), mp, "entersyscallblock")  # entersyscallblock_handoff
    sched.fx.append(fx.Cont(mp.id))


def exitsyscall(sched: Sched, mp: M) -> None:
    """Go's exitsyscall: take the old P back or an idle one (exitsyscallfast), else exitsyscall0."""
    gp = mp.curg
    oldp, mp.oldp = mp.oldp, None
    if exitsyscallfast(sched, mp, oldp):
        mp.p.syscalltick += 1
        gp.status = _Grunning
        mp.incgo = False
        sched.fx.append(fx.Cont(mp.id))
        return
    mp.incgo = False
    exitsyscall0(sched, mp, gp)


def exitsyscallfast(sched: Sched, mp: M, oldp: P | None) -> bool:
    """Go's exitsyscallfast: CAS the old P from _Psyscall back to us, else try an idle P."""
    if oldp is not None and oldp.status == _Psyscall:
        oldp.status = _Pidle  # CAS(_Psyscall → _Pidle), then wirep
        acquirep(sched, mp, oldp)
        # exitsyscallfast_reacquired: the P was retaken and given back meanwhile.
        if mp.syscalltick != oldp.syscalltick:
            oldp.syscalltick += 1
        return True
    if sched.pidle:  # exitsyscallfast_pidle
        p = pidleget(sched)
        if p is not None:
            _wake_sysmon(sched)
            acquirep(sched, mp, p)
            return True
    return False


def exitsyscall0(sched: Sched, mp: M, gp) -> None:
    """Go's exitsyscall0: no P; gp goes to the global runq and the M stops (or, locked, waits for gp).
    When gp runs again it is back in exitsyscall after mcall(exitsyscall0), whose
    `_g_.m.p.ptr().syscalltick++` execute does (gp.sysexit0)."""
    gp.status = _Grunnable
    gp.sysexit0 = True
    dropg(mp)
    p = pidleget(sched)
    locked = False
    if p is None:
        globrunqput(sched, gp)
        locked = gp.lockedm is not None
    else:
        _wake_sysmon(sched)
        acquirep(sched, mp, p)
        execute(sched, mp, gp, False)
        return
    if locked:
        # Wait until another thread schedules gp and so m again.
        if stoplockedm(sched, mp):
            return
        woken(sched, mp)
        return
    if stopm(sched, mp, Resume.SCHEDULE):
        return
    stopm_return(sched, mp)
    schedule(sched, mp)
