"""Timers and the netpoller in the pure core, as Go 1.16 has them (time.go, proc.go, netpoll.go):
a timer heap per P, wakeNetPoller when a timer is added or handoffp idles a P with timers, one M
blocked in netpoll until the next timer (not idle, lastpoll 0 meanwhile), sysmon's deep sleep
bounded by the next timer; and where an M goes on after its stopm (findrunnable's top, not
schedule's) and exitsyscall's syscalltick++ after exitsyscall0. Each test says what it pins."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.proc import handoffp, pidleget
from coordinator.runtime.sched import G, _Gwaiting, _Pidle
from coordinator.runtime.timers import doaddtimer
from tests.steps import WORKER, of, started
from tests.world import World


def test_one_p_sleep_blocks_m0_in_netpoll_until_the_timer():
    """GOMAXPROCS=1, main sleeps 1.5ms: the timer goes on P0 (timerslen), wakeNetPoller finds no idle
    P; m0's findrunnable gives P0 up and blocks in netpoll(delay), epoll_wait's whole ms (1ms, not
    1.5): it is not idle (not on midle, not in idlethreads) and lastpoll is 0 meanwhile."""
    w = started(gomaxprocs=1)
    out = w.gopark(0, "sleep", 1500)
    assert out == [fx.Park(0), fx.NetpollSleep(0, 1_000_000)]
    s = w.sched
    assert s.pollm is s.m0 and s.lastpoll == 0 and s.pollUntil == 1_500_000 and s.nmidle == 0
    assert len(s.allp[0].timers) == 1 and s.allp[0].status == _Pidle and s.netpollInited
    assert w.netpoll() == [fx.Wake(0, -1)]  # epoll_wait timed out after 1ms
    assert w.woken(0) == [fx.Park(0), fx.NetpollSleep(0, 2_000_000)]  # not due yet: polls again
    assert w.now == 1_000_000 and s.lastpoll == 0
    w.netpoll()
    assert w.woken(0) == [fx.Execute(0, 1)]  # P0 again; findrunnable's top runs the timer
    assert s.lastpoll == 2_000_000 and s.pollm is None and not s.allp[0].timers
    assert s.mnext == 2  # m0 and sysmon: no M was started for the timer


def test_sleep_with_an_idle_p_starts_a_spinner_and_blocks_in_netpoll():
    """GOMAXPROCS=2: the new timer's wakeNetPoller (nobody polling) wakep's a spinning M for P1; m0,
    not spinning with one spinner for one busy P, stops and blocks in netpoll. The spinner finds
    nothing, sees m0 polling until the same time (no netpollBreak) and stops on midle."""
    w = started(gomaxprocs=2)
    out = w.gopark(0, "sleep", 5000)
    (fork,) = of(out, fx.Fork)
    assert fork.m == 2 and fork.spinning and fork.nextp == 1 and fork.forker == 0
    assert out[1:] == [fx.Park(0), fx.NetpollSleep(0, 5_000_000)]
    assert w.hello(2) == [fx.Park(2)]
    s = w.sched
    assert s.nmidle == 1 and s.midle == [s.allm[2]] and s.pollm is s.m0 and s.npidle == 2
    w.netpoll()
    assert w.woken(0) == [fx.Wake(2, 0), fx.Execute(0, 1)]  # stole P0's timer; resetspinning → wakep


def test_an_earlier_timer_breaks_the_poll():
    """wakeNetPoller(when) with an M in netpoll until later: netpollBreak; the M returns at once."""
    w = started(gomaxprocs=2)
    w.newproc(0, "worker", 1)  # M2 spins on P1 and steals G2
    assert w.hello(2) == [fx.Execute(2, 2)]
    w.gopark(0, "sleep", 50_000)  # P0 idle with a timer; m0 polls until 50ms
    assert w.sched.pollm is w.sched.m0 and w.sched.pollUntil == 50_000_000
    out = w.gopark(2, "sleep", 2000)  # due before m0's poll ends
    assert out[0] == fx.NetpollBreak(0) and w.sched.netpollWakeSig == 1
    assert w.netpoll() == [fx.Wake(0, -1)] and w.now == 0  # at once, not at 50ms
    w.woken(0)
    assert w.sched.netpollWakeSig == 0  # the blocking netpoll read the break byte


def test_handoffp_leaves_the_last_p_idle_while_an_m_polls():
    """handoffp's "last running P and nobody is polling network" rule: with m0 in netpoll
    (lastpoll 0) an entersyscallblock on the last running P starts no M (before: it always did)."""
    w = started(gomaxprocs=2)
    w.newproc(0, "worker", 1)
    w.hello(2)
    w.gopark(0, "sleep", 50_000)  # m0 in netpoll, P0 idle
    assert w.sched.npidle == 1 and w.sched.lastpoll == 0
    out = w.entersyscallblock(2)
    assert out == [fx.Cont(2)]  # P1 goes idle; its (empty) timer heap asks no wakeNetPoller
    assert w.sched.npidle == 2 and w.sched.mnext == 3


def test_handoffp_of_a_p_with_timers_wakes_the_netpoller():
    """handoffp ends with wakeNetPoller(nobarrierWakeTime(p)) when it idles a P with timers: with
    nobody in netpoll that is wakep, a spinning M that will wait for the timer. (handoffp called on
    a P as retake leaves it: off pidle, no M; GOMAXPROCS=3 so that no earlier rule starts an M.)"""
    for with_timer in (False, True):
        w = started(gomaxprocs=3)
        s = w.sched
        p = pidleget(s)
        if with_timer:
            gp = G(goid=99, prog="worker", status=_Gwaiting, waitreason="sleep")
            doaddtimer(s, p, gp, 5_000_000)
        s.fx = []
        handoffp(s, p, s.sysmonm)
        if not with_timer:
            assert s.fx == [] and p in s.pidle
            continue
        (fork,) = s.fx  # wakep → startm(nil, true) → no idle M → newm
        assert isinstance(fork, fx.Fork) and fork.spinning and fork.nextp == p.id and s.nmspinning == 1


def test_woken_after_findrunnable_stopm_goes_back_to_its_top():
    """Go's stopm in findrunnable returns to findrunnable's `top:`: runqget, then globrunqget(p, 0),
    which moves a batch to the local runq; not to schedule(), whose schedtick%61 takes just one."""
    w = started(gomaxprocs=2)
    w.newproc(0, "worker", 1)
    w.hello(2)
    assert w.goexit(2) == [fx.Park(2)]  # nothing to do: stopm in findrunnable
    assert w.sched.allm[2].resume == "findrunnable"
    out = w.newproc(0, "worker", 300)  # runnext, runq of 256, overflow to the global runq
    assert fx.Wake(2, 1) in out
    n = w.sched.runqsize
    assert n > 100
    assert w.woken(2) == [fx.Execute(2, w.procs[2].g)]
    p1 = w.sched.allp[1]
    want = min(n, n // 2 + 1)  # globrunqget(p, 0): a fair share, one run at once
    assert len(p1.runq) == want - 1 and w.sched.runqsize == n - want


def test_exitsyscall_slow_path_bumps_syscalltick_when_the_goroutine_runs_again():
    """exitsyscall: after mcall(exitsyscall0) returns (the goroutine runs again), Go does
    _g_.m.p.ptr().syscalltick++ on the P it now runs on."""
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    w.entersyscall(0)
    w.exitsyscall(0)
    w.entersyscall(0)
    w.sysmon()
    (fork,) = of(w.sysmon(), fx.Fork)  # retake: P0's syscalltick 1 → 2, handed to a new M
    p0 = w.sched.allp[0]
    assert p0.syscalltick == 2
    assert w.exitsyscall(0) == [fx.Park(0)]  # no P: G1 on the global runq, m0 stops
    assert w.hello(fork.m) == [fx.Execute(fork.m, 1)]  # schedtick 0: G1 from the global runq first
    assert p0.syscalltick == 3  # G1 is back in exitsyscall on P0


def _deep_asleep(w: World) -> None:
    s = w.sched
    s.sysmon_idle, s.sysmon_delay = 60, 640  # backed off: 60 idle passes, 640µs
    assert w.sysmon() is None and w.sysmon_asleep


def test_sysmon_deep_sleep_timeout_keeps_the_backed_off_delay():
    """Go: `if syscallWake { idle = 0; delay = 20 }` only: woken by its timeout (the next timer) sysmon
    keeps idle and delay, so the pass after doubles it (idle > 50)."""
    w = started(gomaxprocs=1)
    w.gopark(0, "sleep", 3000)
    _deep_asleep(w)
    assert w._sysmon[0] == 3_000_000  # notetsleep until the next timer, not 60s
    w.sysmon()  # the timeout
    assert w.sched.sysmon_idle == 61 and w._sysmon == (3_000_000 + 1_280_000, False, 3_000_000)


def test_sysmon_woken_through_the_note_starts_again_at_20us():
    w = started(gomaxprocs=1)
    w.newproc(0, "worker", 1)
    w.gopark(0, "sleep", 3000)  # G2 runs
    w.gopark(0, "sleep", 3000)
    _deep_asleep(w)
    w.netpoll()
    w.woken(0)  # G1 or G2 back on P0
    w.entersyscall(0)  # entersyscall_sysmon: notewakeup(&sched.sysmonnote)
    w.sysmon()
    assert w.sched.sysmon_idle in (0, 1) and w._sysmon[0] - w._sysmon[2] == 20_000


def test_scheddetail_shows_timers_and_the_polling_m_not_blocked():
    """timerslen= counts P's timers; the M in netpoll shows blocked=false (m.blocked is notesleep's)."""
    w = World(WORKER, gomaxprocs=1, schedtrace_ms=1, scheddetail=True)
    w.hello(0)
    w.gopark(0, "sleep", 100_000)
    (trace,) = [e.text for e in w.sysmon(at=1_000_000) if isinstance(e, fx.Trace)]
    assert "  P0: status=0 schedtick=0 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=1\n" in trace
    assert "  M0: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 spinning=false " \
           "blocked=false lockedg=-1\n" in trace


def test_dry_run_sleepers_end_ok():
    """A dry run of sleepers and compute: timers fire through netpoll Ms only, and every run ends."""
    for procs in (1, 2, 4):
        w = World({"main": [["go", "s", 6], ["sleep", 3000], ["wait"]],
                   "s": [["sleep", 700], ["run", 200], ["sleep", 1200]]}, gomaxprocs=procs).run()
        assert w.outcome() == "ok", (procs, w.outcome())
