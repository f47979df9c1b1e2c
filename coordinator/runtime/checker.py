"""The incremental invariant checker: after each step, check what that step touched (the O(1)
counters, the touched Ms, their Ps and goroutines, and nmspinning and nmidlelocked against a Tally
kept from the touched Ms); the full check (invariants.check) once every max(256, records) steps and
at the end, so that its cost per step does not grow with the Ms."""
from __future__ import annotations

from coordinator.runtime.invariants import check, list_counters
from coordinator.runtime.invariants_m import _Acc, _check_m, check_cross_counts
from coordinator.runtime.invariants_names import _STATUS_G, _STATUS_P, _gn, _mn, _pn
from coordinator.runtime.sched import M, Parked, Sched, _Gdead, _Grunnable, _Grunning, _Gsyscall, _Pidle, _Prunning


def _counters(sched: Sched, e) -> None:
    """The O(1) checks of the global counters (the same lines as check())."""
    list_counters(sched, e)
    m0 = sched.m0
    wedged = 1 if m0 is not None and m0.parked == Parked.M0 and sched.allm.get(m0.id) is m0 else 0
    if sched.mcount() != len(sched.allm) - wedged:
        e(f"sched: mcount()={sched.mcount()} (mnext={sched.mnext} nmfreed={sched.nmfreed}) but "
          f"{len(sched.allm)} Ms in allm{' with m0 wedged' if wedged else ''}")
    gone = sched.stats["ms_exited"] + sched.stats["ms_died"]
    if sched.nmfreed != gone + wedged:
        e(f"sched: nmfreed={sched.nmfreed} but {gone} Ms exited or died"
          f"{' and m0 wedged' if wedged else ''}")
    nsys = (sched.sysmonm is not None) + (sched.templatem is not None)
    if sched.nmsys != nsys:
        e(f"sched: nmsys={sched.nmsys} but sysmon/template: {nsys}")
    if len(sched.extram) != sched.extraMCount:
        e(f"sched: extraMCount={sched.extraMCount} but {len(sched.extram)} Ms on extram")
    pollm = sched.pollm
    if pollm is not None and (sched.allm.get(pollm.id) is not pollm or pollm.parked != Parked.NETPOLL):
        e(f"sched: pollm={_mn(pollm)} is not an M of allm blocked in netpoll")
    if (sched.lastpoll == 0) != (pollm is not None and pollm.parked == Parked.NETPOLL):
        e(f"sched: lastpoll={sched.lastpoll} with pollm={_mn(pollm)}")
    if pollm is None and sched.pollUntil != 0:
        e(f"sched: nobody in netpoll but pollUntil={sched.pollUntil}")
    run = sched.mcount() - sched.nmidle - sched.nmidlelocked - sched.nmsys
    if run < 0:
        e(f"sched: checkdead's run={run} < 0")


def _on_midle(sched: Sched, mp: M) -> bool:
    """Is mp on sched.midle? Only an M parked in stopm can be (check() finds any other there); mput
    appends, so a just-parked M is found at the end."""
    if mp.parked != Parked.STOPM:
        return False
    return any(x is mp for x in reversed(sched.midle))


class Tally:
    """Each M's share of the cross-record counts (nmspinning: spinning or starting as spinning;
    nmidlelocked: idle in stoplockedm) and their sums, as of the last step that touched it. A full
    check fills it from every M (`full_check`); check_touched then updates the touched Ms' shares, so the
    sums stay exact as long as every M whose share changes is touched, which the state machine tests
    hold the loop's touched_ms to."""

    def __init__(self) -> None:
        self.shares: dict[int, tuple[int, int]] = {}
        self.spinning = self.idlelocked = 0
        self.synced = False

    def full_check(self, sched: Sched) -> list[str]:
        """invariants.check, filling the shares from the same pass."""
        self.shares = {}
        errs = check(sched, self.shares)
        self.spinning = sum(s for s, _ in self.shares.values())
        self.idlelocked = sum(i for _, i in self.shares.values())
        self.synced = True
        return errs

    def set(self, mid: int, share: tuple[int, int]) -> None:
        old = self.shares.pop(mid, (0, 0))
        if share != (0, 0):
            self.shares[mid] = share
        self.spinning += share[0] - old[0]
        self.idlelocked += share[1] - old[1]


def check_touched(sched: Sched, touched, tally: Tally | None = None) -> list[str]:
    """The invariants of what one step touched: the global counters (O(1)), every touched M (as in
    check()), the P each of them holds, has in transit or left in a syscall, and its goroutines;
    with a synced `tally`, nmspinning and nmidlelocked against the Ms' shares. Cross-record facts
    that need every record (each P owned once, each G queued once, slot uniqueness) are left to the
    periodic check()."""
    errs: list[str] = []
    e = errs.append
    exited = sched.exit_code is not None
    _counters(sched, e)
    counting = tally is not None and tally.synced
    freem = None
    for mid in touched:
        mp = sched.allm.get(mid)
        if mp is None:
            if counting:
                tally.set(mid, (0, 0))
            if freem is None:
                freem = {m.id: m for m in sched.freem}
            mp = freem.get(mid)
            if mp is not None:
                if not mp.exited:
                    e(f"M{mp.id}: on freem but not exited")
                if mp.p is not None or mp.nextp is not None or mp.curg is not None or mp.spinning:
                    e(f"M{mp.id}: exited with p={_pn(mp.p)} nextp={_pn(mp.nextp)} curg={_gn(mp.curg)} "
                      f"spinning={mp.spinning}")
            continue
        acc = _Acc()
        _check_m(sched, mp, e, _on_midle(sched, mp), exited, acc, any(x is mp for x in sched.extram))
        if counting:
            tally.set(mid, (acc.spinning, acc.idlelocked))
        name = f"M{mp.id}"
        p = mp.p
        if p is not None:
            if p.status != _Prunning or p.m is not mp:
                e(f"P{p.id}: {name}.p is P{p.id} but P{p.id} has status={_STATUS_P.get(p.status, p.status)} "
                  f"m={_mn(p.m)}")
            if p.runnext is not None and p.runnext.status != _Grunnable:
                e(f"G{p.runnext.goid}: on P{p.id}.runnext in status "
                  f"{_STATUS_G.get(p.runnext.status, p.runnext.status)}")
        if mp.nextp is not None and (mp.nextp.status != _Pidle or mp.nextp.m is not None):
            np = mp.nextp
            e(f"P{np.id}: in transit to {name} with status={_STATUS_P.get(np.status, np.status)} m={_mn(np.m)}")
        gp = mp.curg
        if gp is not None and gp.status in (_Grunning, _Gsyscall) and gp.m is not mp:
            e(f"G{gp.goid}: {_STATUS_G[gp.status]} on {name} but G.m is {_mn(gp.m)}")
        lg = mp.lockedg
        if lg is not None and lg.status == _Gdead:
            e(f"G{lg.goid}: dead but locked to {name}")
    if counting:
        check_cross_counts(sched, e, tally.spinning, tally.idlelocked)
    return errs


class Checker:
    """The loop's checker: check_touched after every step, and the full check() once every `period`
    steps, the period growing with the number of records so that its cost per step stays flat
    (a full pass costs ~0.3 µs per record), and once more at the end of the run (`final`)."""

    def __init__(self, min_period: int = 256) -> None:
        self.min_period = min_period
        self.steps = 0
        self.full_at = 0  # the step at which the next full check runs
        self.full_checks = 0
        self.tally = Tally()

    def after_step(self, sched: Sched, touched) -> list[str]:
        self.steps += 1
        if self.steps >= self.full_at:
            return self.final(sched)
        return check_touched(sched, touched, self.tally)

    def final(self, sched: Sched) -> list[str]:
        self.full_checks += 1
        records = len(sched.allm) + len(sched.allp) + len(sched.allgs) // 4
        self.full_at = self.steps + max(self.min_period, records)
        return self.tally.full_check(sched)
