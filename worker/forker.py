"""The host's forker: a quiet process, spawned by the agent as it starts and configured once it is
welcomed, that forks the Ms the agent is asked for (m0, sysmon's newm and the template thread's).

Like Go's templateThread (proc.go), "a thread in a known-good state that exists solely to start new
threads in known-good states". The state that matters here is the forker's own. The agent has
ZeroMQ's threads, a pidfd per M and a loop that never rests. Its clone took 2-3 ms in a burst (an
idle process of the same size: 0.7 ms), and every page it wrote between two forks stayed a private
copy of the child forked before. The forker has one socket and no thread, and it sleeps between
orders, so the Ms share more of its pages.

It is a fresh interpreter (`python -c FORKER_MAIN`, spawned), not a fork of the agent: it holds
only what an M needs (no coordinator, no asyncio, no TLS or compression libraries the coordinator
imported), so every M inherits half the memory (11.5 MB of anonymous pages against 23), a third
fewer mappings (210 against 308) and smaller page tables (104 kB against 140), and a fork of it
costs half the CPU (2.3-2.4 ms per M in a burst, against 4.0-4.3). With one thread, it forks
without Python's at-fork work (protocol/bare_fork.py). It is spawned before the agent's hello, and
the agent says hello once it is up, so that its interpreter's start (0.1-0.3 s) is not on m0's
path: Go's m0 exists when the run begins, and the run's Go time starts at the welcome. Its config
comes down a pipe (HostConfig.to_wire), and its log records, and its Ms', go straight to the
agent's log file (appended, a record per write) or to stderr.

It keeps the scenario's spare_ms Ms forked ahead (spare.py): a new M is then a spare handed its
spec, and the forker forks the next spare while no order waits.

The pipe is a SOCK_SEQPACKET socketpair: one message per send, msgpack.
- agent → forker: the fork spec of one M (the newosproc order).
- forker → agent: `["forked", m, epoch, pid, tries, cause, limit]` (pid < 0: -errno, as
  newosproc returns it). A forked M's pidfd travels with it (SCM_RIGHTS), so the agent watches
  that very process, whoever reaps it.
- forker → agent: `["exited", pid, status]` for each child the forker reaped, because the forker
  is its parent and the only one that can read its exit status.
- forker → agent: `["ready"]` once, when its interpreter is up (before its config).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time

import msgpack
from setproctitle import setproctitle

from protocol import titles
from protocol.logformat import LOG_FORMAT
from protocol.transport import one_malloc_arena

from .m import HostConfig, child_after_fork, newosproc
from .reaper import kill_and_wait, reap, set_pdeathsig
from .rehearsal import rehearse
from .spare import MAX_SPEC, Spares

log = logging.getLogger("gmpsim.forker")

SPARE_RETRY_MS = 100  # a spare the machine had no room for is tried again this much later
SOCK_FD, CONF_FD = 3, 4  # where the spawned forker finds its socket to the agent, and its config
FORKER_MAIN = "from worker.forker import main; main()"
CLOSE_WAIT_S = 2.0  # for the forker to finish its order (retryOnEAGAIN sleeps ~0.5 s in Go time at most)


class Forker:
    """The agent's handle on its forker process."""

    def __init__(self):
        """Spawn the forker: its interpreter starts (~0.1-0.3 s of imports) while the agent waits
        for its welcome, and then waits for its config (`configure`)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conf_r, conf_w = os.pipe()
        try:
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-c", FORKER_MAIN], os.environ,
                                      file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), SOCK_FD),
                                                    (os.POSIX_SPAWN_DUP2, conf_r, CONF_FD)])
        except BaseException:
            mine.close()
            os.close(conf_w)
            raise
        finally:
            theirs.close()
            os.close(conf_r)
        self.conf_w = conf_w  # -1 once the config is sent (or, unsent, the forker told to go)
        self.sock = mine
        self.children: set[int] = set()  # pids it forked and has not reported reaped
        self.answered = False  # it carried out an order (a forker that never does cannot start)
        self.ready = False  # its interpreter is up (it said so), waiting for its config

    def wait_ready(self, timeout: float) -> None:
        """Wait up to `timeout` s for the spawned interpreter to be up (or gone)."""
        deadline = time.monotonic() + timeout
        while not self.ready and (left := deadline - time.monotonic()) > 0:
            if self.answers(left) is None:
                return  # it died: the agent sees it at the welcome

    def configure(self, cfg: HostConfig) -> None:
        """The host's config, once welcomed; the forker then forks spares and takes orders."""
        fd, self.conf_w = self.conf_w, -1
        try:
            with os.fdopen(fd, "wb") as f:  # a pipe: the config may outgrow a socket message
                f.write(msgpack.packb({"cfg": cfg.to_wire(), "log": _log_target()}))
        except BrokenPipeError:  # it died already (the write may come at the close): `answers` sees it
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def order(self, spec: dict) -> None:
        """Send one fork order; a forker already dead is seen by `answers` (end of file), and the
        agent orders again what it had not carried out."""
        try:
            self.sock.sendall(msgpack.packb(spec))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def answers(self, timeout: float = 0.0) -> list[tuple[list, int | None]] | None:
        """The forker's messages waiting (waiting up to `timeout` s for the first), each with the
        pidfd it carried, or None when the forker is gone (end of file)."""
        out, got = [], False
        while select.select([self.sock], [], [], 0 if got else timeout)[0]:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_SPEC, 1)
            if not data:
                return None
            got = True
            msg = msgpack.unpackb(data)
            if msg[0] == "ready":  # for wait_ready: nothing the agent acts on
                self.ready = True
                continue
            if msg[0] == "forked":
                self.answered = True
                if msg[3] > 0:
                    self.children.add(msg[3])
            elif msg[0] == "exited":
                self.children.discard(msg[1])
            out.append((msg, fds[0] if fds else None))
        return out

    def close(self, timeout: float = CLOSE_WAIT_S) -> list[tuple[list, int | None]]:
        """End the forker: it sees our end of file once the order it is at is done, and what it said
        until it ended is returned (a fork it finished must be watched, or that M would be left
        behind). After `timeout` s it is killed. The Ms it forked re-parent to the agent. One never
        configured ends at the end of file of its config, quietly."""
        if self.conf_w >= 0:
            os.close(self.conf_w)
            self.conf_w = -1
        self.sock.shutdown(socket.SHUT_WR)
        out: list[tuple[list, int | None]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.answers(left)
            if got is None:
                break
            out.extend(got)
        self.sock.close()
        kill_and_wait([self.pid], timeout=0.5)  # and reaped
        return out


def serve(cfg: HostConfig, sock: socket.socket) -> None:
    """The forker's loop: a fork per order, a report per child reaped; ends at the agent's end of
    file (or with the agent: PDEATHSIG)."""
    setproctitle(titles.forker_title(cfg.host))
    set_pdeathsig(signal.SIGKILL)
    chld_r, chld_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    child_after_fork(keep={sock.fileno(), chld_r, chld_w})  # the signals as an M's
    signal.set_wakeup_fd(chld_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the poll below
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    poll.register(chld_r, select.POLLIN)
    spares = Spares(cfg)
    try:
        while True:
            ready = {fd for fd, _ in poll.poll(0 if spares.wanted() else None)}
            if not ready:  # nothing to do but fork a spare (orders and exits come first)
                if spares.fill():
                    continue
                ready = {fd for fd, _ in poll.poll(SPARE_RETRY_MS if spares.wanted() else None)}
            if chld_r in ready:  # a SIGCHLD came: report who is gone
                while True:
                    try:
                        os.read(chld_r, 4096)
                    except BlockingIOError:
                        break
                for pid, status in reap():
                    if not spares.reaped(pid):
                        sock.sendall(msgpack.packb(["exited", pid, status]))
            if sock.fileno() in ready:
                data = sock.recv(MAX_SPEC)
                if not data:
                    return
                spec = msgpack.unpackb(data)
                pid, tries, cause, limit = newosproc(cfg, spec, sleep=time.sleep, clone=spares.clone)
                answer = msgpack.packb(["forked", spec["m"], spec["epoch"], pid, tries, cause, limit])
                if pid > 0:
                    fd = _pidfd(pid)
                    socket.send_fds(sock, [answer], [fd] if fd >= 0 else [])
                    if fd >= 0:
                        os.close(fd)
                else:
                    sock.sendall(answer)
    finally:
        spares.close()


def _log_target() -> dict:
    """Where this process's log records go, for the forker to write its own there: the run's log
    file (under multiprocessing-logging's handler, its sub_handler), else stderr (path None)."""
    root = logging.getLogger()
    for h in root.handlers:
        h = getattr(h, "sub_handler", h)
        if isinstance(h, logging.FileHandler):
            return {"path": h.baseFilename, "level": root.level}
    return {"path": None, "level": root.level}


def main() -> None:
    """The spawned forker's life: its config from the agent, its log handler, then serve; never
    returns."""
    code = 0
    try:
        one_malloc_arena()  # inherited by every M it forks (their ZeroMQ threads share one arena)
        rehearsal = _rehearse()  # before "ready": off m0's path, as the interpreter's start is
        sock = socket.socket(fileno=SOCK_FD)
        try:
            sock.sendall(msgpack.packb(["ready"]))  # imports done: the agent may say hello
        except (BrokenPipeError, ConnectionResetError):
            raise SystemExit(0) from None  # the agent is gone already: nothing to fork for
        with os.fdopen(CONF_FD, "rb") as f:
            data = f.read()
        if not data:  # never configured: the agent ended, or did not need it
            raise SystemExit(0)
        c = msgpack.unpackb(data)
        logging.basicConfig(filename=c["log"]["path"], level=c["log"]["level"], format=LOG_FORMAT)  # or stderr
        log.log(*rehearsal)
        cfg = HostConfig.from_wire(c["cfg"])
        serve(cfg, sock)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:  # noqa: BLE001 - it exits with a code the agent can see, and says why
        log.exception("the forker died")
        code = 70
    finally:
        os._exit(code)


def _rehearse() -> tuple[int, str]:
    """rehearsal.rehearse, and the log record (level, line) that says how it went (written once
    the log is set up)."""
    started = time.monotonic()
    try:
        rehearse()
    except Exception as e:  # noqa: BLE001 - the forker works without it: its Ms only cost more
        return logging.WARNING, (f"the rehearsal of an M's start failed ({type(e).__name__}: {e}): "
                                 "each M copies more of the forker's pages")
    return logging.INFO, f"rehearsed an M's start in {(time.monotonic() - started) * 1e3:.1f} ms"


def _pidfd(pid: int) -> int:
    """A pidfd on our unreaped child (it cannot be gone: we have not waited for it yet)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


__all__ = ["Forker", "serve"]
