"""The floors of `gmpsim bench`: what this machine does with no gmpsim in the way (a bare fork and
ZeroMQ hello, a pre-forked template forking on request, a ZeroMQ one-way wake, a bare ROUTER loop,
multiprocessing's forkserver and spawn, the memory of a forked child talking ZeroMQ), and the
percentile helpers every figure uses."""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import time

import msgpack
import zmq

from coordinator.shell.procfs import meminfo_kb, private_dirty_by_kind, processes, pss_kb
from protocol.bare_fork import fork
from protocol.codec import decode, encode_trusted
from protocol.messages import position
from protocol.transport import make_rundir, one_malloc_arena

HELLO = b"hello"


def _child_hello(endpoint: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    s.send(HELLO)
    s.close(linger=1000)
    ctx.term()


def fork_floor(n: int) -> list[float]:
    """Seconds from the decision to fork to the child's hello over ZeroMQ, n times."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/floor.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                try:
                    _child_hello(endpoint)
                finally:
                    os._exit(0)
            r.recv_multipart()
            out.append(time.monotonic() - t0)
            os.waitpid(pid, 0)
    finally:
        r.close(0)
        ctx.term()
        _rm(rundir)
    return out


def _mp_hello(endpoint: str) -> None:
    _child_hello(endpoint)


def mp_floor(method: str, n: int) -> list[float]:
    """The same hello, from a multiprocessing Process started with `method`."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/mp.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    mp = multiprocessing.get_context(method)
    out = []
    try:
        if method == "forkserver":  # warm the server up first, as FACTS.md measured it
            p = mp.Process(target=_mp_hello, args=(endpoint,))
            p.start()
            r.recv_multipart()
            p.join()
        for _ in range(n):
            t0 = time.monotonic()
            p = mp.Process(target=_mp_hello, args=(endpoint,))
            p.start()
            r.recv_multipart()
            out.append(time.monotonic() - t0)
            p.join()
    finally:
        r.close(0)
        ctx.term()
        _rm(rundir)
    return out


def _template(req_fd: int, endpoint: str) -> None:
    """The pre-forked small process: no ZeroMQ context of its own, forks one child per byte read;
    each child makes its own context and says hello (what a template thread does for newm)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children reap themselves
    while True:
        got = os.read(req_fd, 4096)
        if not got:
            return
        for _ in got:
            if fork() == 0:  # as the host's forker forks: one thread, so without Python's at-fork work
                try:
                    _child_hello(endpoint)
                finally:
                    os._exit(0)


def _fork_template(body, endpoint: str) -> tuple[int, int]:
    """Fork a template process running body(request_fd, endpoint); returns its pid and the fd to
    write its requests to (closing it ends the template)."""
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w_fd)
            body(r_fd, endpoint)
        finally:
            os._exit(0)
    os.close(r_fd)
    return pid, w_fd


def template_floor(n_one: int, burst: int) -> dict:
    """The burst fork floor: a pre-forked small process forking on request. One at a time (request →
    hello), then `burst` requests at once (the first request → the last hello: Ms per second)."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/template.sock"
    pid, w_fd = _fork_template(_template, endpoint)
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    try:
        one = []
        for _ in range(n_one):
            t0 = time.monotonic()
            os.write(w_fd, b"f")
            r.recv_multipart()
            one.append(time.monotonic() - t0)
        t0 = time.monotonic()
        os.write(w_fd, b"f" * burst)
        for _ in range(burst):
            r.recv_multipart()
        burst_s = time.monotonic() - t0
    finally:
        os.close(w_fd)
        os.waitpid(pid, 0)
        r.close(0)
        ctx.term()
        _rm(rundir)
    return {**(summarize(one) if one else {"n": 0, "p50_us": None, "p99_us": None}),
            "burst": burst, "burst_s": round(burst_s, 3),
            "burst_per_s": round(burst / burst_s)}


def _blocked_child(endpoint: str) -> None:
    """The least an M is: its own ZeroMQ context and DEALER, a hello answered, then blocked in recv
    until told to go."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    s.send(HELLO)
    s.recv()  # the answer to the hello
    s.recv()  # go: the measurement is done
    s.close(0)
    ctx.term()


def _memory_template(req_fd: int, endpoint: str) -> None:
    """Forks a blocked child per byte read, as a host's forker forks its Ms: one malloc arena for
    ZeroMQ's threads, gc.freeze before each fork, no at-fork work."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children reap themselves
    one_malloc_arena()
    while got := os.read(req_fd, 4096):
        for _ in got:
            gc.freeze()
            if fork() == 0:  # as the host's forker forks
                try:
                    _blocked_child(endpoint)
                finally:
                    os._exit(0)


def memory_floor(k: int) -> dict:
    """The memory floor: k children forked from a template forked from this process (so with the
    modules a run's agent has), each with its own ZeroMQ context and DEALER and its hello answered,
    all alive at once and blocked in recv: their mean private pages and PSS, one child's private pages
    by kind, the rise of the machine's anonymous pages per child, and MemAvailable's fall per child
    (the scale run's measure, but at this size on these VMs it moves by hundreds of MB for other
    reasons: read it with care)."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/memory.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    template, w_fd = _fork_template(_memory_template, endpoint)
    children: list[bytes] = []
    try:
        base, base_anon = _settled_available(), meminfo_kb("AnonPages")  # after the template's own pages

        os.write(w_fd, b"f" * k)
        while len(children) < k and r.poll(10_000):
            ident, _ = r.recv_multipart()
            r.send_multipart([ident, b"ok"])
            children.append(ident)
        n = max(1, len(children))
        used = (base - _settled_available()) / n
        anon = (meminfo_kb("AnonPages") - base_anon) / n
        pids = _children_of(template)
        private = [sum(d.values()) for d in (private_dirty_by_kind(p) for p in pids[:20]) if d]
        pss = [x for x in (pss_kb(p) for p in pids[:20]) if x is not None]
        newest = private_dirty_by_kind(max(pids)) if pids else None
    finally:
        for ident in children:
            r.send_multipart([ident, b"go"])
        _end_children(template)
        os.close(w_fd)  # the template's read ends: it exits
        os.waitpid(template, 0)
        r.close(0)
        ctx.term()
        _rm(rundir)
    return {"children": len(children), "used_kb_per_child": round(used), "anon_kb_per_child": round(anon),
            "private_dirty_kb": round(statistics.mean(private)) if private else None,
            "pss_kb": round(statistics.mean(pss)) if pss else None, "private_dirty_by_kind": newest}


def _settled_available(max_s: float = 5.0) -> int:
    """MemAvailable (kB) once it holds still (two readings 0.2 s apart within 1 MiB): memory that
    exited processes free, or pages still being faulted in, would otherwise count."""
    end = time.monotonic() + max_s
    last = meminfo_kb("MemAvailable")
    while time.monotonic() < end:
        time.sleep(0.2)
        now = meminfo_kb("MemAvailable")
        if abs(now - last) < 1024:
            return now
        last = now
    return last


def _end_children(template: int, wait_s: float = 5.0) -> None:
    """Wait for the template's children to go (told to), SIGKILL those that did not in time."""
    end = time.monotonic() + wait_s
    while (left := _children_of(template)) and time.monotonic() < end:
        time.sleep(0.05)
    for p in left:
        os.kill(p, signal.SIGKILL)
    while _children_of(template) and time.monotonic() < end + wait_s:
        time.sleep(0.05)


def _children_of(ppid: int) -> list[int]:
    return sorted(p for p, (state, parent, _) in processes().items() if parent == ppid and state != "Z")


def _router_clients(endpoint: str, n_socks: int, per_sock: int) -> None:
    """The bare loop's peers: n_socks DEALERs, each a request answered before the next (as an M)."""
    ctx = zmq.Context()
    socks = []
    for i in range(n_socks):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"m{i}.0".encode())
        s.connect(endpoint)
        socks.append(s)
    poller = zmq.Poller()
    left = {}
    for i, s in enumerate(socks):
        poller.register(s, zmq.POLLIN)
        left[s] = per_sock
        s.send(encode_trusted("entersyscall", 1, 0, {"m": i, "g": i, "pos": position(1, [], 0), "cgo": False}))
    while left:
        for s, _ in poller.poll(5000):
            msg = msgpack.unpackb(s.recv(), raw=False)
            left[s] -= 1
            if left[s] <= 0:
                poller.unregister(s)
                del left[s]
                continue
            s.send(encode_trusted("exitsyscall", msg["seq"] + 1, 0, {"m": msg["m"], "g": msg["m"]}))
    for s in socks:
        s.close(0)
    ctx.term()


def router_floor(n_socks: int, per_sock: int) -> dict:
    """The coordinator's floor: a bare ROUTER loop doing the same socket and codec work per event —
    receive, unpack (with the coordinator's checks), pack a reply, send — and nothing else."""
    rundir = make_rundir()
    endpoint = f"ipc://{rundir}/router.sock"
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.bind(endpoint)
    gen = multiprocessing.get_context("fork").Process(target=_router_clients, args=(endpoint, n_socks, per_sock),
                                                      daemon=True)
    gen.start()
    total = n_socks * per_sock
    try:
        ident, frame = r.recv_multipart()
        t0 = time.monotonic()
        n = 0
        while True:
            msg = decode(frame)
            r.send_multipart([ident, encode_trusted("cont", n, 0, {"re": msg["seq"], "m": msg["m"], "forks": []})])
            n += 1
            if n >= total:
                break
            ident, frame = r.recv_multipart()
        elapsed = time.monotonic() - t0
    finally:
        gen.join(10)
        if gen.is_alive():
            gen.kill()
            gen.join()
        r.close(0)
        ctx.term()
        _rm(rundir)
    return {"sockets": n_socks, "events": total, "s": round(elapsed, 3), "events_per_s": round(total / elapsed)}


def wake_floor(n: int, gap_s: float = 0.002) -> list[float]:
    """Seconds a one-way ZeroMQ message takes to wake a process blocked in recv."""
    rundir = make_rundir()
    down, up = f"ipc://{rundir}/down.sock", f"ipc://{rundir}/up.sock"
    pid = os.fork()
    if pid == 0:
        try:
            ctx = zmq.Context()
            d = ctx.socket(zmq.PULL)
            d.connect(down)
            u = ctx.socket(zmq.PUSH)
            u.connect(up)
            u.send(b"ready")
            lat = []
            for _ in range(n):
                sent = float(d.recv())
                lat.append(time.monotonic() - sent)
            u.send(json.dumps(lat).encode())
            u.close(linger=1000)
            d.close(0)
            ctx.term()
        finally:
            os._exit(0)
    ctx = zmq.Context()
    d = ctx.socket(zmq.PUSH)
    d.bind(down)
    u = ctx.socket(zmq.PULL)
    u.bind(up)
    try:
        u.recv()
        for _ in range(n):
            time.sleep(gap_s)  # let the receiver block again
            d.send(repr(time.monotonic()).encode())
        return json.loads(u.recv())
    finally:
        os.waitpid(pid, 0)
        d.close(0)
        u.close(0)
        ctx.term()
        _rm(rundir)


def _rm(rundir: str) -> None:
    shutil.rmtree(rundir, ignore_errors=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(q * len(xs) + 0.5)) - 1))]


def summarize(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_us": round(statistics.median(xs) * 1e6, 1),
            "p99_us": round(pct(xs, 0.99) * 1e6, 1)}
