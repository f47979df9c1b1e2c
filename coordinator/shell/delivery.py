"""Reliable delivery for the coordinator: what matters is acknowledged and resent, duplicates are
recognised by seq, and a peer that never answers is reported lost.

- Requests from an M are answered once; a duplicate of the last one (the M resent it because the
  reply was lost) gets the cached reply again; older duplicates are dropped.
- WAKE (notewakeup), newosproc orders to an agent and watch orders are resent until their answer
  comes (woken; forked/forkfail; ack). The first to go unanswered for `lost_after` is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

SEQ_WINDOW = 512  # how far back a peer's seqs are remembered for duplicate detection


class SeqWindow:
    """The seqs seen from one peer (one M incarnation, or one agent)."""
    __slots__ = ("top", "seen")

    def __init__(self):
        self.top = -1
        self.seen: set[int] = set()

    def fresh(self, seq: int) -> bool:
        """True the first time seq is seen (within the window)."""
        if seq <= self.top - SEQ_WINDOW or seq in self.seen:
            return False
        self.seen.add(seq)
        if seq > self.top:
            self.top = seq
            if len(self.seen) > 2 * SEQ_WINDOW:
                self.seen = {s for s in self.seen if s > self.top - SEQ_WINDOW}
        return True


@dataclass
class Pending:
    identity: bytes
    frame: bytes
    first: float
    resend_at: float
    m: int  # the M concerned (the woken M, the child to fork, the M to watch)
    grace: float = 0.0  # more time before it counts as lost (a fork that retries EAGAIN)


class Delivery:
    def __init__(self, resend_s: float, lost_after_s: float):
        self.resend_s = resend_s
        self.lost_after_s = lost_after_s
        self.windows: dict[tuple, SeqWindow] = {}
        self.replies: dict[int, tuple[int, bytes, bytes]] = {}  # M id -> (request seq, identity, frame)
        self.pending: dict[tuple, Pending] = {}
        self.resent = 0
        self.duplicates = 0

    # --- inbound ------------------------------------------------------------------------------------

    def fresh(self, peer: tuple, seq: int) -> bool:
        w = self.windows.get(peer)
        if w is None:
            w = self.windows[peer] = SeqWindow()
        ok = w.fresh(seq)
        if not ok:
            self.duplicates += 1
        return ok

    def cached_reply(self, m: int, seq: int) -> tuple[bytes, bytes] | None:
        """The reply already sent to M m's request seq, if that was its last request."""
        r = self.replies.get(m)
        if r is not None and r[0] == seq:
            return r[1], r[2]
        return None

    def remember_reply(self, m: int, seq: int, identity: bytes, frame: bytes) -> None:
        self.replies[m] = (seq, identity, frame)

    def forget(self, m: int) -> None:
        self.replies.pop(m, None)
        for key in [k for k, p in self.pending.items() if p.m == m]:
            del self.pending[key]

    # --- outbound that must arrive ------------------------------------------------------------------

    def expect(self, key: tuple, identity: bytes, frame: bytes, now: float, m: int, grace: float = 0.0) -> None:
        self.pending[key] = Pending(identity, frame, now, now + self.resend_s, m, grace)

    def done(self, key: tuple) -> Pending | None:
        return self.pending.pop(key, None)

    def due(self, now: float) -> tuple[list[tuple[bytes, bytes]], list[tuple[tuple, Pending]]]:
        """What to resend now, and what has gone unanswered for lost_after (removed)."""
        resend, lost = [], []
        for key, p in list(self.pending.items()):
            if now - p.first >= self.lost_after_s + p.grace:
                lost.append((key, p))
                del self.pending[key]
            elif now >= p.resend_at and p.frame:  # no frame: only watched for an answer
                resend.append((p.identity, p.frame))
                p.resend_at = now + self.resend_s
                self.resent += 1
        return resend, lost

    def next_at(self) -> float | None:
        if not self.pending:
            return None
        return min(min(p.resend_at if p.frame else p.first + self.lost_after_s + p.grace,
                       p.first + self.lost_after_s + p.grace) for p in self.pending.values())
