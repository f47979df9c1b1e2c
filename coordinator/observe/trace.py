"""trace.json: a run as a Chrome Trace Event Format file, to open in Perfetto (ui.perfetto.dev) or
chrome://tracing.

Clock: every `ts` (and `dur`) is in µs of **Go time** (go_ns / 1000), the clock the core and
schedtrace.log use; one Go µs lasted `timescale` wall µs (in otherData, with the scenario).

Layout (pid/tid are labels of the file, not OS ids; the M's real pid is in its track's name):

- process "sched" (pid 1): the counters, one "sched" counter event whenever a value changes, with
  every value as an arg (Perfetto shows tracks "sched threads", "sched idlethreads"...):
  `threads` (mcount(), as Go's threads=), `idlethreads` (nmidle), `spinningthreads` (nmspinning),
  `runqueue` (runqsize), `idleprocs` (npidle), `syscallprocs` (Ps in _Psyscall). Global instants
  (s "g") are filed here too: retake, startm (<caller>), fatal, exit, end, fault: <kind> <target>.
- process "Ps" (pid 2): a track per P ("P<i>"): a slice "M<id>" while an M owns it, "syscall"
  while it is in _Psyscall (args: the M that left it there); idle Ps have no slice.
- process "host <name>" (pid 3, 4, ... per host): a track per M process, named
  "M<id> pid <pid> host <host>": slices "newosproc" (from newm's decision to the M's hello),
  "running G<n>", "syscall G<n>" (or "cgo G<n>" when m.incgo), "parked" (m.blocked: notesleep),
  "spinning"; and instants (s "t") newm (Fork), notewakeup (Wake), mexit (Exit), mexited (the
  host agent saw the process gone). Sysmon and the template thread have no process, hence no track.

Slices are complete events (ph "X"); one track never has two overlapping slices. A zero-length
slice (a state that began and ended at the same Go ns) is dropped.

Cost: `after_step` is O(touched Ms + gomaxprocs) and appends tuples to a list; the JSON is written
once, at `finished`. The number of events is capped (`max_events`); past it, events are counted,
not kept, and otherData says so (`truncated`). The events' buffer and the writing of the file are
tracefile.py's; this module says what goes in it.
"""
from __future__ import annotations

from coordinator.observe.observer import Observer
from coordinator.observe.tracefile import TraceEvents, us
from coordinator.runtime import effects as fx
from coordinator.runtime.sched import _Grunning, _Gsyscall, _Psyscall

SCHEMA = "gmpsim.trace/1"
MAX_EVENTS = 2_000_000

SCHED_PID, PS_PID, HOST_PID0 = 1, 2, 3  # trace pids: counters and globals, Ps, then one per host
SCHED_TID = 1
P_TID0 = 100  # P i is tid 100+i (gomaxprocs <= 256)
M_TID0 = 1000  # M id is tid 1000+id; tids are unique across the file, as Perfetto expects

COUNTERS = ("threads", "idlethreads", "spinningthreads", "runqueue", "idleprocs", "syscallprocs")

_P_SYSCALL = -2  # a P's state key: -2 in a syscall, -1 idle, else its M's id
# Events that move Ps no touched M asked for (retake, injectglist, a recovery): every P is rechecked.
_ALL_PS_EVENTS = frozenset({"sysmon", "sysmon_wake", "mdead", "mexited", "hostlost", "hostjoin",
                            "refork", "forkfail"})


class TraceRecorder(Observer):
    """Records a run as trace.json at `path` (written by `finished`). `meta` goes into otherData
    (scenario, seed, gomaxprocs, timescale...). `fault(kind, target, go_ns)` marks an injected fault."""

    def __init__(self, path: str, meta: dict | None = None, max_events: int = MAX_EVENTS):
        self.path = path
        self.meta = dict(meta or {})
        self.trace = TraceEvents(max_events)
        self.host_pid: dict[str, int] = {}
        self.ms: dict = {}  # M id -> its record (kept after it leaves allm)
        self.pids: dict[int, int] = {}  # M id -> last known OS pid
        self.pkey: list[int] = []  # per P: _P_SYSCALL, -1 (idle) or the owner's M id
        self.powner: list[int] = []  # per P: its last owner (for "syscall" args)
        self.counters: tuple | None = None
        self.startm_total = 0
        self.startm_by: dict[str, int] = {}
        self.retakes = 0
        self.steps = 0
        self.written = False

    # --- events ------------------------------------------------------------------------------------

    def instant(self, name: str, ts: int, track: tuple[int, int] | None = None, args: dict | None = None) -> None:
        """An instant on a track (s "t"), or global (s "g") when track is None."""
        if track is None:
            self.trace.add(("i", name, ts, SCHED_PID, SCHED_TID, None, "g", args))
        else:
            self.trace.add(("i", name, ts, track[0], track[1], None, "t", args))

    def fault(self, kind: str, target, go_ns: int | None = None) -> None:
        """An injected fault (called by the fault injector): a global instant "fault: <kind> <target>"."""
        ts = self.trace.ts(go_ns) if go_ns is not None else self.trace.last_ts
        self.instant(f"fault: {kind} {target}", ts, None, {"kind": kind, "target": str(target)})

    # --- state ---------------------------------------------------------------------------------------

    def _m_track(self, mp) -> tuple[int, int]:
        pid_ = self.host_pid.get(mp.host)
        if pid_ is None:
            pid_ = self.host_pid[mp.host] = HOST_PID0 + len(self.host_pid)
        return pid_, M_TID0 + mp.id

    @staticmethod
    def m_state(mp) -> tuple[str | None, dict | None]:
        """What an M is doing, as the name of its slice (None: nothing worth a slice)."""
        if mp.exited:
            return None, None
        if not mp.started:
            return "newosproc", None
        if mp.blocked:
            return "parked", {"why": mp.parked, "lockedg": mp.lockedg.goid if mp.lockedg is not None else -1}
        gp = mp.curg
        if gp is not None:
            if gp.status == _Grunning:
                return f"running G{gp.goid}", {"g": gp.goid, "p": mp.p.id if mp.p is not None else -1}
            if gp.status == _Gsyscall:
                return (f"cgo G{gp.goid}" if mp.incgo else f"syscall G{gp.goid}"), {"g": gp.goid}
        if mp.spinning:
            return "spinning", None
        return None, None

    def _update_m(self, sched, mid: int, ts: int) -> None:
        mp = sched.allm.get(mid)
        if mp is None:
            mp = self.ms.get(mid)
            if mp is None:
                return
        elif mp.virtual:
            return
        else:
            self.ms[mid] = mp
        if mp.pid:
            self.pids[mid] = mp.pid
        track = self._m_track(mp)
        name, args = self.m_state(mp)
        cur = self.trace.open.get(track)
        if (cur[0] if cur is not None else None) != name:
            self.trace.set_slice(track, name, ts, args)

    def _ps_to_check(self, sched, ev, touched: set[int]):
        """The Ps whose slice may have changed in this step: after an M's own message, only the Ps
        that M holds, is handed or left in a syscall, and those it held before; after sysmon, a
        timer or a recovery (which move Ps no M asked for), all of them."""
        if ev is None or ev.get("t") in _ALL_PS_EVENTS:
            return sched.allp
        ids = set()
        for mid in touched:
            ids.update(self.held.get(mid, ()))
            mp = sched.allm.get(mid)
            if mp is not None:
                for p in (mp.p, mp.nextp, mp.oldp):
                    if p is not None:
                        ids.add(p.id)
        allp = sched.allp
        return [allp[i] for i in ids if i < len(allp)]

    def _update_ps(self, sched, ts: int, touched: set[int], ps=None) -> int:
        """Recompute the Ps' slices (all, or `ps`); keeps the count of Ps in syscalls. An M that a
        P has just moved to is added to `touched` (its state may have changed with the P)."""
        pkey, powner = self.pkey, self.powner
        for p in (sched.allp if ps is None else ps):
            i = p.id
            if p.status == _Psyscall:
                key = _P_SYSCALL
            elif p.m is not None:
                key = p.m.id
            else:
                key = -1
            if key != pkey[i]:
                old = pkey[i]
                if old >= 0:
                    self.held.get(old, set()).discard(i)
                if old == _P_SYSCALL:
                    self.nsys -= 1
                if key >= 0:
                    touched.add(key)
                    self.held.setdefault(key, set()).add(i)
                elif key == _P_SYSCALL:
                    self.nsys += 1
                track = (PS_PID, P_TID0 + i)
                if key == _P_SYSCALL:
                    self.trace.set_slice(track, "syscall", ts, {"m": powner[i]})
                elif key >= 0:
                    powner[i] = key
                    self.trace.set_slice(track, f"M{key}", ts, {"m": key})
                else:
                    self.trace.set_slice(track, None, ts)
                pkey[i] = key
        return self.nsys

    # --- Observer ------------------------------------------------------------------------------------

    def started(self, sched, go_ns: int, wall: float) -> None:
        for h in sched.hosts:
            self.host_pid.setdefault(h, HOST_PID0 + len(self.host_pid))
        self.pkey = [-1] * len(sched.allp)
        self.held: dict[int, set[int]] = {}  # M id -> the Ps it held when last seen
        self.nsys = 0
        self.powner = [-1] * len(sched.allp)
        self.meta.setdefault("gomaxprocs", sched.gomaxprocs)
        self.trace.ts(go_ns)

    def after_step(self, sched, ev, effects, touched, go_ns, wall) -> None:
        self.steps += 1
        ts = self.trace.ts(go_ns)
        for e in effects:
            t = type(e)
            if t is fx.Fork:
                mp = sched.allm.get(e.m)
                if mp is not None:
                    self.ms[e.m] = mp
                    self.instant("newm", ts, self._m_track(mp),
                                 {"forker": -1 if e.forker is None else e.forker, "template": e.template,
                                  "nextp": e.nextp, "spinning": e.spinning})
            elif t is fx.Wake:
                mp = sched.allm.get(e.m)
                if mp is not None:
                    self.instant("notewakeup", ts, self._m_track(mp), {"nextp": e.nextp})
            elif t is fx.Exit:
                mp = self.ms.get(e.m)
                if mp is not None:
                    self.instant("mexit", ts, self._m_track(mp))
            elif t is fx.Fatal:
                self.instant("fatal", ts, None, {"message": e.message})
            elif t is fx.ProgramExit:
                self.instant("exit", ts, None, {"code": e.code})
        if ev is not None and ev.get("t") == "mexited":
            mp = self.ms.get(ev.get("m"))
            if mp is not None:
                self.instant("mexited", ts, self._m_track(mp), {"status": ev.get("status")})
        st = sched.stats
        n = st["retake"]
        if n != self.retakes:
            self.instant("retake", ts, None, {"n": n - self.retakes})
            self.retakes = n
        n = st["startm"]
        if n != self.startm_total:
            self.startm_total = n
            for k, v in st.items():
                if k.startswith("startm.") and v != self.startm_by.get(k, 0):
                    self.instant(f"startm ({k[7:]})", ts, None, {"n": v - self.startm_by.get(k, 0)})
                    self.startm_by[k] = v
        touched = set(touched)
        nsys = self._update_ps(sched, ts, touched, self._ps_to_check(sched, ev, touched))
        for mid in touched:
            self._update_m(sched, mid, ts)
        c = (sched.mcount(), sched.nmidle, sched.nmspinning, sched.runqsize, sched.npidle, nsys)
        if c != self.counters:
            self.counters = c
            self.trace.add(("C", "sched", ts, SCHED_PID, SCHED_TID, None, None, dict(zip(COUNTERS, c))))

    def finished(self, sched, outcome, go_ns: int, wall: float) -> None:
        ts = self.trace.ts(go_ns)
        for mid, mp in self.ms.items():
            if mp.pid:
                self.pids[mid] = mp.pid
        out = getattr(outcome, "outcome", outcome)
        self.instant(f"end: {out}", ts, None, {"reason": getattr(outcome, "reason", "")})
        if self.counters is not None:  # the last values, at the end: counter tracks reach the end
            self.trace.add(("C", "sched", ts, SCHED_PID, SCHED_TID, None, None, dict(zip(COUNTERS, self.counters))))
        self.trace.close_all(ts)
        self.meta.update(outcome=out, end_us=us(ts), steps=self.steps)
        self.write(self.path)

    def close(self) -> None:
        """Nothing to release (the file is written by `finished`)."""

    # --- output --------------------------------------------------------------------------------------

    def metadata(self) -> list[dict]:
        """Names (and sort order) of every process and track, with the final values (M pids)."""
        out = []

        def m(name, pid_, tid, args):
            out.append({"ph": "M", "name": name, "ts": 0, "pid": pid_, "tid": tid, "args": args})

        m("process_name", SCHED_PID, SCHED_TID, {"name": "sched"})
        m("process_sort_index", SCHED_PID, SCHED_TID, {"sort_index": 0})
        m("thread_name", SCHED_PID, SCHED_TID, {"name": "sched"})
        m("process_name", PS_PID, P_TID0, {"name": "Ps"})
        m("process_sort_index", PS_PID, P_TID0, {"sort_index": 1})
        for i in range(len(self.pkey)):
            m("thread_name", PS_PID, P_TID0 + i, {"name": f"P{i}"})
            m("thread_sort_index", PS_PID, P_TID0 + i, {"sort_index": i})
        for host, hpid in self.host_pid.items():
            m("process_name", hpid, hpid, {"name": f"host {host}"})
            m("process_sort_index", hpid, hpid, {"sort_index": hpid})
        for mid in sorted(self.ms):
            mp = self.ms[mid]
            pid_, tid = self._m_track(mp)
            osp = self.pids.get(mid)
            m("thread_name", pid_, tid, {"name": f"M{mid} pid {osp if osp else '?'} host {mp.host}"})
            m("thread_sort_index", pid_, tid, {"sort_index": mid})
        return out

    def write(self, path: str) -> None:
        """Write the file, one event a line (written once, at the end of the run)."""
        t = self.trace
        other = {"schema": SCHEMA,
                 "clock": "ts and dur in µs of Go time (go_ns / 1000); one Go µs lasted `timescale` wall µs",
                 "counters": list(COUNTERS), "events": len(t.events), "max_events": t.max_events,
                 "truncated": t.dropped > 0, "dropped_events": t.dropped, **self.meta}
        t.write(path, other, self.metadata())
        self.written = True
