"""Spare Ms: processes the forker forks ahead, each waiting with its ZeroMQ context made and its
DEALER connected to the coordinator (as `spare:<host>/<pid>`), until newosproc hands one the spec of
a new M (its clone, then, is a message: ~0.05 ms instead of a fork and the child's set-up, 3-15 ms
in a burst on two cores).

Go's clone costs ~10-50 µs; a forked M's start costs a hundred times that, so at timescale 10 newm
took 1-2 ms of Go time and Ms came at half Go's pace (issue 11). A spare does the slow part (fork,
child_after_fork, ZeroMQ's context and its threads, the socket and its connection's handshake)
before newm asks; what is left on newm's path is what Go has too: the new thread's first run (here:
its hello to the core, which binds the connection to the M it names: coordinator/shell/intake.py).
A spare is a real forked process, and once handed its spec an M like any other. Go has no spares;
`spare_ms = 0` in a scenario forks every M on newosproc, as before.

A spare is not an M: not in allm, named `gmpsim spare <host>` in ps. One nobody adopted dies with
its forker (PDEATHSIG) or when the forker closes its socket; adopted, it outlives the forker as
any M does. The forker forks a spare only when the machine-limit guard allows one more M.
"""
from __future__ import annotations

import gc
import os
import signal
import socket

import msgpack
import zmq
from setproctitle import setproctitle

from protocol import titles
from protocol.bare_fork import fork
from protocol.transport import dealer_connect, dealer_unconnected, spare_identity

from . import machine_limits
from .m import HostConfig, child_after_fork, fork_m, run_child, start_m
from .reaper import kill_and_wait, set_pdeathsig

MAX_SPEC = 1 << 16  # a fork spec (or the forker's answer) is a few hundred bytes


class Spares:
    """The forker's spare Ms: forked ahead (`fill`), handed out by `clone` (newosproc's clone)."""

    def __init__(self, cfg: HostConfig):
        self.cfg = cfg
        self.ready: list[tuple[int, socket.socket]] = []  # oldest first: (pid, our end of its socket)
        self.pids: set[int] = set()  # spares forked and not handed out (alive or not yet reaped)

    def wanted(self) -> bool:
        return len(self.ready) < self.cfg.spares

    def fill(self) -> bool:
        """Fork the spares wanted, back to back (what the forker writes between two forks is a private
        copy in the child forked before), if the machine has room; False when it had none."""
        if machine_limits.check(self.cfg.fd_pids()) is not None:  # one look for a few (≤ 64) spares
            return False
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                 for _ in range(self.cfg.spares - len(self.ready))]
        gc.freeze()  # as fork_m: the spare's collections must not dirty the inherited heap
        pids = []
        for mine, theirs in pairs:
            try:
                pid = fork()  # the forker's: without Python's at-fork work (protocol/bare_fork.py)
            except OSError:
                break  # the machine had no room: the rest are tried again later
            if pid == 0:
                mine.close()
                run_child("a spare M", lambda: _spare(self.cfg, theirs))  # noqa: B023 - called at once
            pids.append(pid)
        for i, (mine, theirs) in enumerate(pairs):
            theirs.close()
            if i < len(pids):
                self.ready.append((pids[i], mine))
                self.pids.add(pids[i])
            else:
                mine.close()
        return len(pids) == len(pairs)

    def clone(self, cfg: HostConfig, spec: dict) -> int:
        """newosproc's clone: hand the spec to the oldest spare alive, or fork the M (fork_m)."""
        while self.ready:
            pid, sock = self.ready.pop(0)
            try:
                sock.sendall(msgpack.packb(spec))
            except OSError:  # it died (killed by someone): the next one
                continue
            finally:
                sock.close()
            self.pids.discard(pid)
            return pid
        return fork_m(cfg, spec)

    def reaped(self, pid: int) -> bool:
        """A child of the forker is gone: True if it was a spare (nobody else needs to know)."""
        if pid not in self.pids:
            return False
        self.pids.discard(pid)
        for i, (p, sock) in enumerate(self.ready):
            if p == pid:
                sock.close()
                del self.ready[i]
                break
        return True

    def close(self) -> None:
        """The spares not handed out end (and are reaped)."""
        for _, sock in self.ready:
            sock.close()  # each sees end of file and exits
        self.ready.clear()
        kill_and_wait(sorted(self.pids), timeout=0.5)
        self.pids.clear()


def _spare(cfg: HostConfig, sock: socket.socket) -> None:
    """A spare's life: set up as an M does before its hello, wait for a spec, then be that M."""
    child_after_fork(keep={sock.fileno()})
    set_pdeathsig(signal.SIGKILL)  # not yet an M: it goes with its forker (dead already: end of file below)
    setproctitle(titles.spare_title(cfg.host))
    ctx = zmq.Context()
    # ZeroMQ's I/O and reaper threads start here. Connected now, under a spare's name: the connection
    # is made, and its handshake done, before the M it will be is asked for (its hello names the M).
    pre = (ctx, dealer_connect(dealer_unconnected(ctx, cfg.curve), cfg.endpoint,
                               spare_identity(cfg.host, os.getpid())))
    spec = sock.recv(MAX_SPEC)
    if not spec:  # the forker closed it: never adopted
        raise SystemExit(0)
    set_pdeathsig(0)  # an M outlives its forker
    sock.close()
    start_m(cfg, msgpack.unpackb(spec), pre)


__all__ = ["Spares"]
