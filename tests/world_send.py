"""The messages a test sends the core on behalf of the world's processes (tests/world.py), by hand or
from the dry run: an M's hello, woken and goroutine requests, the agent's mexited, faults, sysmon's
and netpoll's ends."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from protocol.stepper import EXITSYSCALL, SYSCALL_ENTRIES, Request
from tests.world_procs import EXITED, FORKED, GONE, PARKED, RUNNING, SYSCALL, Proc, WorldError, pos


class Sending:
    """World's senders: each marks the process as waiting for its reply and delivers the event."""

    def hello(self, m: int) -> list:
        p = self._proc(m, FORKED)
        p.state = "starting"
        p.pid = 10_000 + m
        return self.deliver({"t": "hello", "m": m, "epoch": p.epoch, "pid": p.pid})

    def woken(self, m: int) -> list:
        p = self._proc(m, PARKED)
        if p.wake is None:
            raise WorldError(f"world: M{m} has no wake to deliver")
        p.wake = None
        p.state = "waking"
        return self.deliver({"t": "woken", "m": m, "epoch": p.epoch, "lat": 0.0, "slept": 0.0})

    def mexited(self, m: int) -> list:
        p = self._proc(m, EXITED)
        p.state = GONE
        return self.deliver({"t": "mexited", "m": m, "pid": p.pid, "status": 0})

    def send(self, m: int, t: str, at=None, **fields) -> list:
        """An M's message about its goroutine: m, epoch, g (and pos when `at` is given). A Cont
        leaves it in a syscall after entersyscall*, else running."""
        p = self._proc(m, SYSCALL if t == EXITSYSCALL.t else RUNNING)
        ev = {"t": t, "m": m, "epoch": p.epoch, "g": p.g, **fields}
        if at is not None:
            ev["pos"] = at
        p.state = "sending"
        p.preempt = None if t == "gosched" else p.preempt
        if t == "lockosthread":  # the thread's own count of LockOSThread calls (_check_fork)
            p.locks += 1
        elif t == "unlockosthread":
            p.locks = max(0, p.locks - 1)
        out = self.deliver(ev, SYSCALL if t in SYSCALL_ENTRIES else RUNNING)
        if t == "newproc" and not fields["prog"].startswith("runtime."):  # isSystemGoroutine: not counted
            self.created += fields["n"]
        return out

    def request(self, m: int, req: Request) -> list:
        """An M's request about its goroutine as the op stepper makes it (protocol/stepper.py)."""
        fields = dict(req.fields)
        return self.send(m, req.t, at=fields.pop("pos", None), **fields)

    def newproc(self, m: int, prog: str, n: int = 1, at=None) -> list:
        return self.send(m, "newproc", at=at or pos(), prog=prog, n=n)

    def entersyscall(self, m: int, cgo: bool = False, at=None) -> list:
        return self.send(m, "entersyscall", at=at or pos(), cgo=cgo)

    def entersyscallblock(self, m: int, at=None) -> list:
        return self.send(m, "entersyscallblock", at=at or pos())

    def exitsyscall(self, m: int) -> list:
        return self.send(m, EXITSYSCALL.t)

    def lock(self, m: int, at=None) -> list:
        return self.send(m, "lockosthread", at=at or pos())

    def unlock(self, m: int, at=None) -> list:
        return self.send(m, "unlockosthread", at=at or pos())

    def gopark(self, m: int, reason: str, us: int = 0, at=None) -> list:
        return self.send(m, "gopark", at=at or pos(), reason=reason, us=us)

    def runtime(self, m: int, op: str, arg: str = "", at=None) -> list:
        """A runtime op (protocol/ops.py RUNTIME_OPS) of a runtime program (runtime.main...)."""
        return self.send(m, "runtime", at=at or pos(), op=op, arg=arg)

    def gosched(self, m: int, at=None) -> list:
        return self.send(m, "gosched", at=at or pos())

    def goexit(self, m: int, main_returns: bool = False, at=None) -> list:
        """The goroutine ends: Goexit (or, with main_returns, goroutine 1 returns from main)."""
        if at is None:
            at = pos(len(self.programs[self.g(self.procs[m].g).prog]) if main_returns else 0)
        return self.send(m, "goexit", at=at)

    # --- faults (not Go: an M process dies; see coordinator/runtime/mdead.py) --------------------------

    def live(self) -> list[int]:
        return [m for m, p in self.procs.items() if p.state in (FORKED, RUNNING, SYSCALL, PARKED)]

    def kill(self, m: int, status: int = -9) -> list:
        """M m's process dies unexpectedly: the agent reports it gone (mexited of a live M)."""
        p = self.procs[m]
        if p.state not in (FORKED, RUNNING, SYSCALL, PARKED):
            raise WorldError(f"world: M{m} is {p.state}, not alive")
        p.state, p.g, p.wake, p.preempt = GONE, None, None, None
        p.token += 1
        return self.deliver({"t": "mexited", "m": m, "pid": p.pid, "status": status})

    def fence(self, m: int, why: str = "lost") -> list:
        """The shell declares M m lost: fenced (it may still run; it is told to exit)."""
        p = self.procs[m]
        if p.state not in (FORKED, RUNNING, SYSCALL, PARKED):
            raise WorldError(f"world: M{m} is {p.state}, not alive")
        p.state, p.g, p.wake, p.preempt = EXITED, None, None, None
        p.token += 1
        return self.deliver({"t": "mdead", "m": m, "why": why, "gone": False})

    def refork(self, m: int) -> list:
        """A fork order that never became a process: fork again (a new incarnation)."""
        p = self._proc(m, FORKED)
        self._reforked = {m}
        return self.deliver({"t": "refork", "m": m, "cepoch": p.epoch})

    def sysmon(self, extra_ns: int = 0, at: int | None = None) -> list | None:
        """One sysmon pass: the end of its current sleep (+ extra_ns; or `at` if that is later), then
        its event. The deep sleep ends at once if a WakeSysmon came ("sysmon_wake", then the
        pass), else after its timeout. Returns the pass's effects without its next SysmonSleep, or
        None when the pass went into the deep sleep."""
        until, deep, _ = self._sysmon
        if not (deep and self.sysmon_wakeup):
            self.now = max(max(self.now, until) + extra_ns, at if at is not None else 0)
        self.sysmon_wakeup = False
        out = self.deliver({"t": "sysmon_wake" if deep else "sysmon"})
        if self.finished:
            return None
        if self.sysmon_asleep:
            return None
        return [e for e in out if not isinstance(e, fx.SysmonSleep)]

    def netpoll(self) -> list | None:
        """The wait of the M blocked in netpoll is over: advance the clock to its deadline (if later)
        and deliver "netpoll" (its process gets a Wake; `woken` then goes on in findrunnable)."""
        m = self.polling()
        if m is None:
            return None
        self.now = max(self.now, self._poll_until)
        return self.deliver({"t": "netpoll", "m": m})

    def advance(self, ns: int) -> None:
        self.now += ns

    def _proc(self, m: int, state: str) -> Proc:
        p = self.procs.get(m)
        if p is None or p.state != state:
            raise WorldError(f"world: M{m} is {p.state if p else 'unknown'}, not {state}")
        return p
