"""The runtime's buffered channels (chan.go, Go 1.16): chansend and chanrecv as gcenable uses them
(`c := make(chan int, 2)`; bgsweep and bgscavenge send, runtime.main receives twice). Values are
not modelled: a channel is its count and its queues of parked goroutines."""
from __future__ import annotations

from coordinator.runtime import effects as fx
from coordinator.runtime.newproc import ready
from coordinator.runtime.sched import G, M, Sched, hchan, waitReasonChanReceive, waitReasonChanSend
from coordinator.runtime.schedule import park_m


def chansend(sched: Sched, mp: M, gp: G, c: hchan) -> None:
    """Go's chansend: hand the value to a waiting receiver (send → goready), else into the buffer,
    else park (waitReasonChanSend)."""
    if c.recvq:
        ready(sched, mp, c.recvq.popleft())  # send(): goready(gp) readies the receiver next
        sched.fx.append(fx.Cont(mp.id))
        return
    if c.qcount < c.dataqsiz:
        c.qcount += 1
        sched.fx.append(fx.Cont(mp.id))
        return
    c.sendq.append(gp)
    park_m(sched, mp, gp, waitReasonChanSend)


def chanrecv(sched: Sched, mp: M, gp: G, c: hchan) -> None:
    """Go's chanrecv: take from a waiting sender (recv: the buffer's head, the sender's value to its
    tail, goready the sender), else from the buffer, else park (waitReasonChanReceive)."""
    if c.sendq:
        ready(sched, mp, c.sendq.popleft())
        sched.fx.append(fx.Cont(mp.id))
        return
    if c.qcount > 0:
        c.qcount -= 1
        sched.fx.append(fx.Cont(mp.id))
        return
    c.recvq.append(gp)
    park_m(sched, mp, gp, waitReasonChanReceive)
