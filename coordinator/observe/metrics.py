"""A Prometheus endpoint for a run in progress: `gmpsim run --metrics-port PORT`.

`MetricsExporter` is a loop.Observer with its own CollectorRegistry (never prometheus_client's global
one), served over HTTP on 127.0.0.1:PORT (`--metrics-addr` to bind elsewhere) from `started()` to
`finished()`. The server starts only in `started()`, i.e. after the host agent has been forked, so
no agent or M process inherits its listening socket (Ms are forked from the agent and from each other,
never from the coordinator).

All names carry the prefix gmpsim_:

    gauges    threads (mcount(), as schedtrace's threads=), idlethreads (nmidle), spinningthreads
              (nmspinning), npidle, psyscall (Ps in _Psyscall), runqueue (global run queue),
              goroutines_live (created - completed)
    counters  startm_total{caller}, newm_total, mget_total, retake_total, faults_total{kind},
              goroutines_created_total, goroutines_completed_total
    histogram m_creation_seconds: wall seconds from the step whose effects fork M m (newm) to the step
              that handles m's hello (mstart)

Per step the exporter compares a few integers with what it saw last and touches only the metrics
that changed; counters follow sched.stats by deltas.
"""
from __future__ import annotations

import socket
import threading
from operator import attrgetter
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from coordinator.observe.observer import Observer
from coordinator.runtime import effects as fx
from coordinator.runtime.sched import _Psyscall

# newm -> mstart of a forked Python process: a few ms on an idle machine, far more under load.
M_CREATION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

# sched.stats key -> counter name (without gmpsim_ and _total); update() wants these two last
_STAT_COUNTERS = (
    ("newm", "newm", "newm calls: Ms created (m0 not included)"),
    ("mget", "mget", "idle Ms taken from sched.midle by startm (reused instead of created)"),
    ("retake", "retake", "Ps retaken by sysmon (in a syscall or running too long)"),
    ("goroutines_created", "goroutines_created", "goroutines created (goroutine 1 included)"),
    ("goroutines_completed", "goroutines_completed", "goroutines that exited"),
)
_sched_gauges = attrgetter("nmidle", "nmspinning", "npidle", "runqsize")

SERVER_POLL_S = 0.05  # serve_forever's poll: finished()'s shutdown waits at most this long (0.5 s would show in wall_s)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no access log on the run's stderr
        pass


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"):
    """prometheus_client.start_http_server(port, addr, registry), but with a short serve_forever poll:
    start_http_server's thread polls every 0.5 s, so its shutdown() would add up to 0.5 s to the
    run's wall time. Returns (server, thread); server.server_port is the port bound (port 0: any)."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):  # daemon request threads, as prometheus_client's
        address_family = family

    httpd = make_server(addr, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": SERVER_POLL_S},
                         name="gmpsim-metrics", daemon=True)
    t.start()
    return httpd, t


class MetricsExporter(Observer):
    """See the module docstring. `port` 0 binds any free port (see `.port` once started); `announce`,
    a stream, gets one line with the URL when the server starts."""

    def __init__(self, port: int = 0, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None,
                 announce=None):
        self.addr, self.requested_port, self.announce = addr, port, announce
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        def gauge(name, doc):
            return Gauge("gmpsim_" + name, doc, registry=r)

        self.g_threads = gauge("threads", "Ms in existence as Go counts threads= (mcount(), sysmon included)")
        self.g_idle = gauge("idlethreads", "Ms parked on sched.midle (nmidle)")
        self.g_spinning = gauge("spinningthreads", "spinning Ms looking for work (nmspinning)")
        self.g_npidle = gauge("npidle", "idle Ps (npidle)")
        self.g_psyscall = gauge("psyscall", "Ps in _Psyscall (their M is in a syscall)")
        self.g_runqueue = gauge("runqueue", "goroutines on the global run queue (runqsize)")
        self.g_live = gauge("goroutines_live", "goroutines created and not yet exited")
        self.c_startm = Counter("gmpsim_startm", "startm calls, by the function that called startm",
                                ["caller"], registry=r)
        self.c_faults = Counter("gmpsim_faults", "faults injected, by kind", ["kind"], registry=r)
        self._stat_keys = [key for key, _, _ in _STAT_COUNTERS]
        self._counters = [Counter("gmpsim_" + name, doc, registry=r) for _, name, doc in _STAT_COUNTERS]
        self._gauges = (self.g_threads, self.g_idle, self.g_spinning, self.g_npidle, self.g_runqueue,
                        self.g_psyscall, self.g_live)  # in the order of update()'s values
        self.h_m_creation = Histogram("gmpsim_m_creation_seconds",
                                      "wall seconds from newm's decision to the new M's mstart (hello)",
                                      buckets=M_CREATION_BUCKETS, registry=r)
        self._last_counts = (0,) * len(self._counters)
        self._last_startm = 0
        self._startm_seen: dict[str, int] = {}  # caller -> count already added
        self._startm_children: dict[str, object] = {}
        self._last_gauges: tuple = (None,) * len(self._gauges)
        self._forked_at: dict[int, float] = {}  # M id -> wall time of the step that forked it
        self.server = self.thread = None
        self.port: int | None = None

    # --- the server ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Start serving (idempotent); returns the port."""
        if self.server is None:
            self.server, self.thread = serve(self.registry, self.requested_port, self.addr)
            self.port = self.server.server_port
            if self.announce is not None:
                print(f"gmpsim: metrics on {self.url}", file=self.announce, flush=True)
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.thread.join(5)

    # --- what others report -------------------------------------------------------------------------

    def fault(self, kind: str, target=None, go_ns: int = 0) -> None:
        """A fault was injected (called by the fault injector)."""
        self.c_faults.labels(kind).inc()

    # --- Observer -----------------------------------------------------------------------------------

    def started(self, sched, go_ns: int, wall: float) -> None:
        self.start()
        self.update(sched)

    def after_step(self, sched, ev, effects, touched, go_ns, wall) -> None:
        for e in effects:
            if type(e) is fx.Fork:
                self._forked_at[e.m] = wall
        if ev is not None and ev.get("t") == "hello":
            at = self._forked_at.pop(ev.get("m"), None)
            if at is not None:
                self.h_m_creation.observe(wall - at)
        self.update(sched)

    def finished(self, sched, outcome, go_ns: int, wall: float) -> None:
        self.update(sched)
        self.close()

    def update(self, sched) -> None:
        """Bring every metric to sched's state: gauges that changed, counters by their stats delta."""
        psyscall = 0
        for p in sched.allp:
            if p.status == _Psyscall:
                psyscall += 1
        stats = sched.stats
        counts = tuple([stats.get(k, 0) for k in self._stat_keys])
        values = (sched.mcount(), *_sched_gauges(sched), psyscall, counts[-2] - counts[-1])
        if values != self._last_gauges:
            for g, v, old in zip(self._gauges, values, self._last_gauges):
                if v != old:
                    g.set(v)
            self._last_gauges = values
        if counts != self._last_counts:
            for c, v, old in zip(self._counters, counts, self._last_counts):
                if v > old:
                    c.inc(v - old)
            self._last_counts = counts
        startm = stats.get("startm", 0)
        if startm != self._last_startm:
            self._last_startm = startm
            for key, v in stats.items():
                if key.startswith("startm."):
                    caller = key[7:]
                    seen = self._startm_seen.get(caller, 0)
                    if v > seen:
                        child = self._startm_children.get(caller)
                        if child is None:
                            child = self._startm_children[caller] = self.c_startm.labels(caller)
                        child.inc(v - seen)
                        self._startm_seen[caller] = v
