"""The Injector's hands on a running loop: the few things a fault may do (faults.inject.FaultTarget)."""
from __future__ import annotations


class FaultPort:
    """faults.inject.FaultTarget over the Coordinator's pieces: the sched to choose victims, the
    clock, signals to Ms, killing an agent, a shutdown to an M, frames out and messages in."""

    def __init__(self, loop):
        self._loop = loop
        self.clock = loop.clock

    @property
    def sched(self):
        return self._loop.sched

    def signal_m(self, mp, sig: int) -> None:
        self._loop.act.signal_m(mp, sig)

    def kill_agent(self, host: str, rec: dict) -> None:
        self._loop.restarts.kill_agent(host, rec)

    def tell_m(self, mid: int, t: str) -> None:
        self._loop.act.send_m(mid, t)

    def send_frame(self, identity: bytes, frame: bytes) -> None:
        self._loop.wire.raw_send(identity, frame)

    def take_in(self, msg: dict) -> None:
        self._loop.intake.handle_msg(msg)

    def noted(self, kind: str, target: str, go_ns: int) -> None:
        for o in self._loop.observers:
            o.fault(kind, target, go_ns)
