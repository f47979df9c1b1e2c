"""Carrying out the core's effects on the world's processes (tests/world.py), checking that a process
shell could: each reply to the sender, forks from the right process, wakes of parked Ms."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from tests.world_procs import EXITED, FORKED, GONE, PARKED, RUNNING, Proc, WorldError


class Routing:
    """World's effect router: each effect carried out on its processes, its agenda (the dry run) and its records."""

    def _route(self, effects: list, sender: int | None) -> None:
        replies = [e for e in effects if isinstance(e, fx.REPLIES)]
        ends = [e for e in effects if isinstance(e, (fx.Fatal, fx.ProgramExit))]
        for e in replies:
            if e.m != sender:
                raise WorldError(f"world: reply {e} goes to M{e.m}, not to the sender M{sender}")
        if sender is not None and len(replies) != 1 and not ends:
            raise WorldError(f"world: M{sender}'s message got {len(replies)} replies: {effects}")
        if sender is None and replies:
            raise WorldError(f"world: replies to no M's message: {effects}")
        for e in effects:
            if isinstance(e, fx.Fork):
                old = self.procs.get(e.m)
                if old is not None and not (old.state == FORKED and e.epoch > old.epoch):  # refork: epoch+1
                    raise WorldError(f"world: Fork of M{e.m}, which already exists ({old.state}, epoch {old.epoch})")
                if e.forker is not None and e.forker != sender:
                    raise WorldError(f"world: M{e.m} forked from M{e.forker} while M{sender}'s message is handled")
                if e.forker is not None and e.template:
                    raise WorldError(f"world: M{e.m} both forked from M{e.forker} and through the template")
                if old is None:
                    self._check_fork(e, sender)
                self.procs[e.m] = Proc(m=e.m, epoch=e.epoch, state=FORKED, host=e.host, slot=e.slot,
                                       forker=e.forker, template=e.template, nextp=e.nextp, spinning=e.spinning)
                self.forks.append(e)
                self._plan(e.m, "hello", self.now + self.fork_ns)
            elif isinstance(e, fx.Execute):
                p = self.procs[e.m]
                p.state, p.g, p.preempt = RUNNING, e.g, None
                gp = self.g(e.g)
                p.pos = (gp.pc, tuple(gp.loops), gp.left)
                self._plan(e.m, "op", self.now)
            elif isinstance(e, fx.Cont):
                p = self.procs[e.m]
                p.state = self._reply_state
                if p.state == RUNNING:
                    self._plan(e.m, "op", self.now)
            elif isinstance(e, fx.Park):
                p = self.procs[e.m]
                p.state, p.g, p.preempt = PARKED, None, None
                p.token += 1
                if p.wake is not None:
                    self._plan(e.m, "woken", self.now + self.wake_ns)
            elif isinstance(e, fx.Wake):
                p = self.procs.get(e.m)
                if p is None or p.wake is not None or p.state not in (PARKED,):
                    raise WorldError(f"world: Wake for M{e.m}, which is "
                                     f"{'unknown' if p is None else p.state} (pending wake {p and p.wake})")
                p.wake = e.nextp
                self._plan(e.m, "woken", self.now + self.wake_ns)
            elif isinstance(e, fx.Exit):
                p = self.procs[e.m]
                p.state, p.g = EXITED, None
                self._plan(e.m, "mexited", self.now + self.exit_ns)
            elif isinstance(e, fx.Preempt):
                p = self.procs.get(e.m)
                if p is not None and p.state in (RUNNING, "sending") and p.g == e.g:
                    p.preempt = e.g
                    if p.run_end is not None and p.run_end > self.now:
                        self._plan(e.m, "gosched", self.now)
            elif isinstance(e, fx.StackFree):
                p = self.procs.get(e.m)
                if p is None or p.state != GONE:
                    raise WorldError(f"world: StackFree of M{e.m}'s slot while its process is "
                                     f"{'unknown' if p is None else p.state}")
                if (p.host, p.slot) != (e.host, e.slot):
                    raise WorldError(f"world: StackFree {e} but M{e.m} had slot {p.host}/{p.slot}")
                self.stackfrees.append(e)
            elif isinstance(e, fx.Trace):
                self.traces.append(e.text)
            elif isinstance(e, fx.SysmonSleep):
                self._sysmon = (e.until, e.note, self.now)
                self.sysmon_asleep = e.note
                if self._agenda_started:
                    self._sysmon_gen += 1
                    self._plan(None, "sysmon_wake" if e.note else "sysmon", e.until)
            elif isinstance(e, fx.WakeSysmon):
                if self.sysmon_asleep:
                    self.sysmon_wakeup = True
                    if self._agenda_started:
                        self._sysmon_gen += 1
                        self._plan(None, "sysmon_wake", self.now)
            elif isinstance(e, fx.NetpollSleep):
                p = self.procs.get(e.m)
                if p is None or p.state != PARKED:
                    raise WorldError(f"world: M{e.m} blocks in netpoll but is {p and p.state}")
                self._poll_until = e.until
                self._plan(e.m, "netpoll", e.until)
            elif isinstance(e, fx.NetpollBreak):
                if self.polling() != e.m:
                    raise WorldError(f"world: NetpollBreak for M{e.m}, which is not blocked in netpoll")
                self._poll_until = self.now
                self._plan(e.m, "netpoll", self.now)
            elif isinstance(e, fx.ProgramExit):
                self.exit_code = e.code
            elif isinstance(e, fx.Fatal):
                self.fatal = e
            elif isinstance(e, fx.Recovered):
                self.recovered.append(e)
        for m, p in self.procs.items():
            if p.state in ("starting", "waking", "sending") and not self.finished:
                raise WorldError(f"world: M{m} got no reply")
        if not self.finished and any(isinstance(e, fx.Fork) and e.m not in self._reforked for e in effects):
            # allocm ran: it freed the g0 stack of every exited M whose process is gone
            left = [m.id for m in self.sched.freem if m.freeWait == 0]
            if left:
                raise WorldError(f"world: allocm ran but left the stacks of gone Ms {left} on freem")
        self._reforked = set()

    def _check_fork(self, e: fx.Fork, sender: int | None) -> None:
        """newm: from a locked (or cgo) M through the template thread (golang/go#28979), else cloned
        from the calling M's process; sysmon and the shell's recovery have no process (the agent forks)."""
        s = self.sched
        caller = None
        if sender is not None:
            caller = s.allm.get(sender) or next((m for m in (*s.freem, *s.osstackm) if m.id == sender), None)
        # The world's own count of the thread's LockOSThread calls (not the core's lockedExt).
        tainted = caller is not None and (self.procs[sender].locks > 0 or caller.incgo)
        if e.template != tainted:
            raise WorldError(f"world: M{e.m} forked {'through' if e.template else 'without'} the template, "
                             f"but its caller {'M' + str(sender) if sender is not None else '(no M)'} "
                             f"{'is' if tainted else 'is not'} locked/in cgo")
        want = None if (e.template or caller is None) else sender
        if e.forker != want:
            raise WorldError(f"world: M{e.m} forked by {e.forker}, expected {want}")
