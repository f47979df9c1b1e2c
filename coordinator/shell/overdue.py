"""Orders left unanswered: resent when due; once lost, the M fenced or a new incarnation forked."""
from __future__ import annotations

import logging
import signal

from protocol.transport import m_identity

log = logging.getLogger("gmpsim.coordinator")


class Overdue:
    """`loop` is the Coordinator: its sched, event(), wire, delivery, actuator, rec, sc."""

    def __init__(self, loop):
        self.loop = loop

    def check(self, now: float) -> None:
        c = self.loop
        resend, lost = c.delivery.due(now)
        for identity, frame in resend:
            c.wire.raw_send(identity, frame)
        for key, _p in lost:
            if key[0] == "wake":
                self.fence(key[1], f"lost: no answer to WAKE within {c.sc.lost_after_ms:g} ms")
            elif key[0] == "fork":
                mp = c.sched.allm.get(key[1])
                if mp is not None and not mp.started and mp.epoch == key[2]:
                    c.event({"t": "refork", "m": key[1], "cepoch": key[2]}, None)
            elif key[0] == "hello":
                self.hello_missing(*key[1:])
        limit = c.delivery.lost_after_s
        preempt_sent = c.act.preempt_sent
        for mid, since in list(preempt_sent.items()):
            if now - since >= limit:
                del preempt_sent[mid]
                self.fence(mid, f"lost: no answer to preemption within {c.sc.lost_after_ms:g} ms")

    def hello_missing(self, mid: int, epoch: int) -> None:
        """A forked M never said hello: its connection may have been refused because another peer
        took its identity first (the ROUTER hands no identity over). Said, its process ended, and a
        new incarnation (a new identity) forked in its place."""
        c = self.loop
        mp = c.sched.allm.get(mid)
        if mp is None or mp.started or mp.epoch != epoch:
            return
        log.warning("M%d (pid %d) forked but never said hello within %.1fs: its identity %r may be held "
                    "by another peer; forking a new incarnation", mid, mp.pid, c.delivery.lost_after_s,
                    m_identity(mid, epoch))
        c.rec.hello_missing += 1
        c.act.signal_m(mp, signal.SIGKILL)
        c.event({"t": "refork", "m": mid, "cepoch": epoch}, None)

    def fence(self, mid: int, why: str) -> None:
        """Declare M mid lost: the core takes back what it held; its incarnation is refused from now
        on, and told to exit (it does when it resumes)."""
        if self.loop.sched.allm.get(mid) is None:
            return
        self.loop.event({"t": "mdead", "m": mid, "why": why, "gone": False}, None)
