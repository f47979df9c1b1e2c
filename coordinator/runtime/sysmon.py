"""sysmon (proc.go): its loop (delay schedule, deep sleep), retake and preemptone.

sysmon is an M in Go (newm(sysmon, nil, -1), counted in nmsys); here it is a timer of the
coordinator's loop with an M record of its own (`sched.sysmonm`, virtual). The core runs the loop
and ends each pass with the sleep it takes (a SysmonSleep effect: usleep(delay), or the deep
sleep notetsleep(&sched.sysmonnote, ...)); the shell keeps the time and sends "sysmon" when a
usleep is over, "sysmon_wake" when the deep sleep ends (its timeout, or a WakeSysmon).
"""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.note import noteclear
from coordinator.runtime.proc import handoffp, incidlelocked
from coordinator.runtime.sched import P, Sched, _Pidle, _Prunning, _Psyscall, forcePreemptNS, runqempty, syscallLazyNS
from coordinator.runtime.schedtrace import schedtrace
from coordinator.runtime.timers import timeSleepUntil

SYSMON_MIN_DELAY_US = 20
# Not in Go, the OS's part: Linux returns from usleep(20) ~90 µs later on these machines (timer
# slack 50 µs, /proc/self/timerslack_ns, plus the wake-up), so real Go's busy sysmon passes come
# every ~90 µs, not 20. A scenario's usleep_slack_us (default this) adds it to every usleep.
USLEEP_SLACK_US = 70
SYSMON_MAX_DELAY_US = 10_000
SYSMON_IDLE_BEFORE_BACKOFF = 50
forcegcperiod = 2 * 60 * 1_000_000_000  # proc.go: 2 minutes; the deep sleep lasts at most half of it
NETPOLL_EVERY_NS = 10 * 1000 * 1000  # sysmon polls the network if not polled for more than 10ms


def sysmon_delay(sched: Sched) -> int:
    """Go's sysmon loop head: 20µs while busy, doubling after 50 idle cycles, capped at 10ms."""
    if sched.sysmon_idle == 0:
        sched.sysmon_delay = SYSMON_MIN_DELAY_US
    elif sched.sysmon_idle > SYSMON_IDLE_BEFORE_BACKOFF:
        sched.sysmon_delay *= 2
    if sched.sysmon_delay > SYSMON_MAX_DELAY_US:
        sched.sysmon_delay = SYSMON_MAX_DELAY_US
    return sched.sysmon_delay


def sysmon_usleep(sched: Sched) -> fx.SysmonSleep:
    """The loop head's usleep(delay), as an effect: the shell sends "sysmon" at its end. It lasts
    delay + the OS's slack (sched.usleep_slack_ns; see USLEEP_SLACK_US)."""
    return fx.SysmonSleep(sched.now + sysmon_delay(sched) * 1000 + sched.usleep_slack_ns, False)


def sysmon_tick(sched: Sched) -> None:
    """One pass of Go's sysmon loop after its usleep: the deep sleep when there is nothing to watch
    (no schedtrace, every P idle): notetsleep(&sched.sysmonnote, min(next timer - now,
    forcegcperiod/2)), unless a timer is already due; else the rest of the pass (tick)."""
    now = sched.now
    if sched.schedtrace_ms <= 0 and (sched.gcwaiting != 0 or sched.npidle == sched.gomaxprocs):
        nxt = timeSleepUntil(sched)
        if nxt > now:
            sched.sysmonwait = 1
            sleep = min(forcegcperiod // 2, nxt - now)
            sched.fx.append(fx.SysmonSleep(now + sleep, True))
            return
    _tick(sched)


def sysmon_wake(sched: Sched) -> None:
    """sysmon's notetsleep(&sched.sysmonnote) returns (the shell's "sysmon_wake"): woken through
    the note (a syscall: entersyscall, exitsyscall) it resets idle = 0, delay = 20 "as a bet that it
    may need to retake a P again shortly"; on its timeout (a timer) it keeps its backed-off delay.
    Then the rest of the pass (tick)."""
    syscallWake = sched.sysmonnote.key != 0
    sched.sysmonwait = 0
    noteclear(sched.sysmonnote)
    if syscallWake:
        sched.sysmon_idle = 0
        sched.sysmon_delay = SYSMON_MIN_DELAY_US
    _tick(sched)


def _tick(sched: Sched) -> None:
    """The rest of Go 1.16's sysmon pass: poll the network if not polled for 10ms (nothing to find
    here: it only moves lastpoll), retake, schedtrace when it is due; then the next usleep. Overdue
    timers are not sysmon's in 1.16 on Linux (1.14/1.15 did startm when timeSleepUntil() < now; 1.16
    kept that for netbsd only): the M in netpoll or a spinning M's timer stealing runs them. No GC:
    no forcegc."""
    now = sched.now
    lastpoll = sched.lastpoll
    if sched.netpollInited and lastpoll != 0 and lastpoll + NETPOLL_EVERY_NS < now:
        sched.lastpoll = now  # Cas64(&sched.lastpoll, lastpoll, now); netpoll(0) is empty
    if retake(sched, now) != 0:
        sched.sysmon_idle = 0
    else:
        sched.sysmon_idle += 1
    if sched.schedtrace_ms > 0 and sched.lasttrace + sched.schedtrace_ms * 1_000_000 <= now:
        sched.lasttrace = now
        sched.fx.append(fx.Trace(schedtrace(sched, sched.scheddetail)))
    sched.fx.append(sysmon_usleep(sched))


def preemptone(sched: Sched, p: P) -> bool:
    """Go's preemptone: ask the goroutine running on p to stop (gp.preempt; the M yields at its next
    slice of compute)."""
    mp = p.m
    if mp is None or mp is sched.sysmonm:
        return False
    gp = mp.curg
    if gp is None:
        return False
    gp.preempt = True
    sched.stats["preempt"] += 1
    sched.fx.append(fx.Preempt(mp.id, gp.goid))
    return True


def retake(sched: Sched, now: int) -> int:
    """Go 1.16's retake: preempt a G running over forcePreemptNS; retake a P seen in the same
    syscall on two consecutive sysmon ticks (lazily, up to 10ms, when it has no work and others idle)."""
    n = 0
    for p in sched.allp:
        pd = p.sysmontick
        s = p.status
        sysretake = False
        if s == _Prunning or s == _Psyscall:
            t = p.schedtick
            if pd.schedtick != t:
                pd.schedtick = t
                pd.schedwhen = now
            elif pd.schedwhen + forcePreemptNS <= now:
                preemptone(sched, p)
                sysretake = True  # preemptone cannot work on a P in a syscall
        if s == _Psyscall:
            t = p.syscalltick
            if not sysretake and pd.syscalltick != t:
                pd.syscalltick = t
                pd.syscallwhen = now
                continue
            if runqempty(p) and sched.nmspinning + sched.npidle > 0 and pd.syscallwhen + syscallLazyNS > now:
                continue
            incidlelocked(sched, -1)  # so checkdead does not see a false deadlock meanwhile
            if p.status == _Psyscall:  # CAS(_Psyscall → _Pidle)
                p.status = _Pidle
                n += 1
                p.syscalltick += 1
                sched.stats["retake"] += 1
                handoffp(sched, p, sched.sysmonm, "retake")
            incidlelocked(sched, 1)
    return n
