"""The loop's pieces (coordinator/shell/) with a fake ROUTER socket: frames fed in, frames sent captured."""
from __future__ import annotations

import io
import time

import pytest
import zmq

from coordinator.runtime import effects as fx
from coordinator.scenario import load
from coordinator.shell.loop import Coordinator
from protocol.codec import decode, encode
from protocol.transport import m_identity


class FakeRouter:
    """Stands in for the coordinator's ROUTER socket: what is sent is kept in `sent`."""

    def __init__(self):
        self.sent: list[tuple[bytes, dict]] = []
        self._ident = None

    def send(self, data: bytes, flags: int = 0) -> None:
        if flags:
            self._ident = data
        else:
            self.sent.append((self._ident, decode(data)))

    def close(self, linger=None) -> None:
        pass

    def types_to(self, ident: bytes) -> list[str]:
        return [m["t"] for i, m in self.sent if i == ident]


def _hello(host: str, pid: int) -> dict:
    return {"t": "agent_hello", "host": host, "pid": pid, "arena": f"gmpsim-test-{host}", "slot_size": 8192,
            "slots": 64}


@pytest.fixture
def coord():
    ctx = zmq.Context()
    c = Coordinator(load("cgo-calls"), "inproc://shell-pieces", ctx, io.StringIO())
    real = c.wire.sock
    c.wire.sock = FakeRouter()
    for host, pid in (("h1", 101), ("h2", 202)):
        c.hosts.agent_joined(_hello(host, pid), f"agent:{host}/{pid}".encode())
    c.start()
    yield c
    real.close(linger=0)
    ctx.term()


def test_intake_drops_garbage_with_a_count(coord):
    coord.intake.on_frame(b"m:1.1", b"\x00not msgpack")
    coord.intake.on_frame(b"nobody", encode("heartbeat", 1, 0, m=-1))
    assert coord.rec.bad_frames == 2
    assert coord.wire.sock.sent == [] or all(m["t"] != "shutdown" for _, m in coord.wire.sock.sent)


def test_intake_routes_by_sender_kind(coord):
    sent = coord.wire.sock
    before = coord.rec.bad_frames
    # An agent may not send an M's message; an M may not send an agent's.
    coord.intake.on_frame(b"agent:h1/101", encode("gosched", 5, 0, m=0, g=1, pos={"pc": 0, "loops": [], "left": 0}))
    coord.intake.on_frame(m_identity(9999, 1), encode("mexited", 5, 1, m=9999, pid=1, status=0, frames=[]))
    assert coord.rec.bad_frames == before + 2
    # An M that does not exist: refused, told to go.
    ident = m_identity(9999, 1)
    coord.intake.on_frame(ident, encode("heartbeat", 6, 1, m=9999))
    assert coord.rec.refused == 1 and sent.types_to(ident) == ["shutdown"]
    # The current agent of h2 is heard.
    coord.hosts.agent_seen["h2"] = 0.0
    coord.intake.on_frame(b"agent:h2/202", encode("heartbeat", 7, 0, m=-1))
    assert coord.hosts.agent_seen["h2"] > 0.0


def test_actuator_orders_a_fork_from_the_agent_of_the_slot_s_host(coord):
    sent = coord.wire.sock
    sent.sent.clear()
    mid = max(coord.sched.allm) + 100
    for host in ("h2", "h1"):
        coord.act.apply([fx.Fork(m=mid, forker=None, host=host, nextp=-1, spinning=False, slot=3, epoch=1,
                                 template=False)], None, 0)
        (ident, msg), = sent.sent
        assert ident == coord.hosts.agent_ident[host] and msg["t"] == "newosproc"
        assert msg["fork"]["m"] == mid and msg["fork"]["slot"] == 3
        sent.sent.clear()
        mid += 1


def test_overdue_resends_an_unanswered_order(coord):
    sent = coord.wire.sock
    ident = coord.hosts.agent_ident["h1"]
    frame = encode("stackfree", 1, 0, slot=1, m=1)
    coord.delivery.expect(("watch", 12345), ident, frame, time.monotonic() - 1.0, 12345)
    sent.sent.clear()
    coord.overdue.check(time.monotonic())
    assert (ident, decode(frame)) in sent.sent
    assert coord.delivery.resent >= 1


def test_heartbeats_cut_off_a_silent_host(coord):
    now = time.monotonic()
    coord.hosts.agent_seen["h1"] = now - 3600
    coord.hosts.heartbeats(now)
    assert coord.hosts.agent_up == {"h1": False, "h2": True}
    assert [h["host"] for h in coord.hosts.host_lost] == ["h1"]
    assert coord.wire.sock.types_to(coord.hosts.agent_ident["h2"]).count("heartbeat") == 1


def test_result_is_what_the_report_reads(coord):
    res = coord.result()
    assert res.sched is coord.sched and res.arenas == ["gmpsim-test-h1", "gmpsim-test-h2"]
    assert res.agent_up == {"h1": True, "h2": True}


def test_a_spares_connection_is_bound_to_the_m_its_hello_names(coord):
    """A spare M connects as spare:<host>/<pid> before it knows which M it will be (worker/spare.py):
    its hello binds the connection to that M, if the M was forked on the spare's host and has not
    started; before its hello it may say nothing else, and no second peer takes a started M over."""
    from protocol.transport import spare_identity
    mp = coord.sched.allm[0]
    other = "h2" if mp.host == "h1" else "h1"
    hello = dict(m=0, pid=555, host=mp.host, started=time.monotonic(), taint="")
    before = coord.rec.bad_frames
    coord.intake.on_frame(spare_identity(mp.host, 554), encode("heartbeat", 1, mp.epoch, m=0))  # not first
    coord.intake.on_frame(spare_identity(other, 555), encode("hello", 1, mp.epoch, **hello))  # another host's
    assert coord.rec.bad_frames == before + 2 and not mp.started
    ident = spare_identity(mp.host, 555)
    coord.intake.on_frame(ident, encode("hello", 1, mp.epoch, **hello))
    assert mp.started and coord.wire.spare_bound[ident] == (0, mp.epoch) and coord.wire.m_ident[0] == ident
    assert coord.wire.sock.types_to(ident)  # answered, at the spare's connection
    coord.intake.on_frame(spare_identity(mp.host, 556), encode("hello", 1, mp.epoch, **hello))  # a squatter
    assert coord.rec.bad_frames == before + 3 and coord.wire.m_ident[0] == ident


def _mexited(mp, status: int, fn: str) -> bytes:
    frame = {"depth": 0, "goid": -1, "fn": fn, "time": time.monotonic(), "live": True, "sp": 8128}
    return encode("mexited", 9, 0, m=mp.id, pid=4242, status=status, frames=[frame])


def test_an_m_that_dies_of_sigabrt_in_its_clone_is_gos_newosproc_fatal(coord):
    """An M whose process aborts while its ZeroMQ threads are made (CLONE_FRAME live, SIGABRT: libzmq's
    pthread_create failed at a task limit) failed its clone: fatal newosproc with Go's lines, as a
    failed fork is, not an M death that another M would follow into the same wall."""
    from protocol.messages import CLONE_FRAME
    mp = coord.sched.allm[0]
    assert not mp.started
    coord.intake.on_frame(f"agent:{mp.host}/{101 if mp.host == 'h1' else 202}".encode(),
                          _mexited(mp, -6, CLONE_FRAME))
    assert coord.done and coord.out.outcome == "fatal" and coord.out.fatal_message == "newosproc"
    assert coord.sched.stats.get("newosproc_failed.clone") == 1


def test_an_m_killed_in_its_clone_is_an_ordinary_death(coord):
    """The same frame, but SIGKILL (a fault, an operator): an M death like any (no fatal)."""
    from protocol.messages import CLONE_FRAME
    mp = coord.sched.allm[0]
    coord.intake.on_frame(f"agent:{mp.host}/{101 if mp.host == 'h1' else 202}".encode(),
                          _mexited(mp, -9, CLONE_FRAME))
    assert not (coord.done and coord.out.outcome == "fatal")
    assert coord.rec.deaths and coord.rec.deaths[-1]["status"] == -9
