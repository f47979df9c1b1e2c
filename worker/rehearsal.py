"""The forker's rehearsal: one M's start, run once in the forker before it forks any M.

Go has nothing like it and needs nothing like it: a new thread shares its process's memory. A
forked M copies every page it writes, and the first run of Python code writes what later runs do
not: CPython 3.11 counts a function's first calls and then quickens its bytecode, which the
specialising interpreter goes on rewriting; caches fill (the g0 stack's encoded names, the codec's
and pyzmq's lookups); libzmq and libsodium do their one-time set-up in a process's first context.
Done in each M, each of these is a private copy in each M. Done once here, before the forks, it
sits in pages the Ms share: ~15% fewer page faults in an M's start, and ~170 kB less of the
machine's memory per live M (1,000 blocked Ms: 2,408-2,422 kB against 2,575-2,623; issue 11).

The rehearsal is a real M's life in short (`WorkerM.mstart`: its own ZeroMQ context and DEALER,
hello; a goroutine that computes, blocks in a system call and returns; then Go's mexit) against a
stand-in coordinator: a child forked first (one thread still), whose ROUTER, on an abstract ipc
address (no file), answers as the core would. The stand-in is the rehearsed M's guardian, so a
rehearsal whose answer never comes ends when the stand-in does (after STAND_IN_WAIT_MS). The M
keeps the forker's name in ps, and its g0 stack is a private scratch slot, not one of the host's
arena. Once it is over, the forker has one thread again (the
M's context ended in its mexit), so it still forks bare (protocol/bare_fork.py).
"""
from __future__ import annotations

import mmap
import os

import zmq
from setproctitle import getproctitle

from protocol.bare_fork import fork
from protocol.codec import decode, encode
from protocol.messages import fork_spec, position
from protocol.ops import compile_program

from .g0 import G0_STACK_SIZE, Arena
from .m import HostConfig, WorkerM, child_after_fork, run_child

STAND_IN_WAIT_MS = 5000  # the stand-in's wait for the hello (it comes in a few ms)
LINGER_MS = 1000  # for its answer to leave before it ends
PROGRAM = "rehearsal"
CODE = compile_program(PROGRAM, [["run", 1], ["syscall", 1]])  # what the run's goroutines do most
G = 1


def rehearse() -> None:
    """Run one M's start and exit in this process, against a stand-in coordinator (see above).
    Raises what went wrong; the forker logs it and goes on without (the Ms then cost more)."""
    endpoint = f"ipc://@gmpsim-rehearsal-{os.getpid()}"  # abstract: nothing is left in the file system
    ready_r, ready_w = os.pipe()
    stand_in = fork()
    if stand_in == 0:
        os.close(ready_r)
        run_child("the rehearsal's stand-in coordinator", lambda: _stand_in(endpoint, ready_w))
    os.close(ready_w)
    scratch = Arena("rehearsal", mmap.mmap(-1, G0_STACK_SIZE), 1, G0_STACK_SIZE, readonly=False, creator=False)
    m = None
    try:
        os.read(ready_r, 1)  # bound (or gone): the M's hello may go
        stage = HostConfig(endpoint=endpoint, host="rehearsal", guardian_pid=stand_in, arena=scratch,
                           programs={PROGRAM: CODE}, timescale=1.0)
        m = WorkerM(stage, fork_spec(m=0, nextp=-1, slot=0, epoch=0, ts=0.0))
        m.title = getproctitle()  # the forker's: no `gmpsim M0` in ps but the run's own
        try:
            m.mstart()
        except SystemExit as e:
            if e.code != 0:  # 3: the stand-in ended with no answer
                raise RuntimeError(f"the rehearsed M ended with {e.code}") from None
    finally:
        os.close(ready_r)
        if m is not None and m.ctx is not None and not m.ctx.closed:  # it ended before its mexit
            if m.sock is not None:
                m.sock.close(0)
            m.ctx.term()  # and its threads with it
        if m is not None and m.guard_fd >= 0:
            os.close(m.guard_fd)
        scratch.close()
        os.waitpid(stand_in, 0)


def _stand_in(endpoint: str, ready_w: int) -> None:
    """The coordinator's part, in a child: the hello gets goroutine G to execute, its system call
    goes on (cont), and anything else (its goexit) ends the M (exit)."""
    child_after_fork(keep={ready_w})  # not the agent's socket: the forker's end of file is its own
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    try:
        router.bind(endpoint)
        os.close(ready_w)
        seq, t = 0, ""
        while t != "exit" and router.poll(STAND_IN_WAIT_MS):
            ident, frame = router.recv_multipart()
            msg = decode(frame)
            t, fields = _answer(msg["t"])
            seq += 1
            router.send_multipart([ident, encode(t, seq, msg["epoch"], re=msg["seq"], **fields)])
    finally:
        router.close(LINGER_MS)
        ctx.term()


def _answer(request: str) -> tuple[str, dict]:
    """The core's answer to the rehearsed M's request, as (type, fields)."""
    if request == "hello":
        return "execute", {"g": G, "prog": PROGRAM, "pos": position(), "forks": []}
    if request in ("entersyscall", "exitsyscall"):
        return "cont", {"forks": []}
    return "exit", {}
