"""A small network lab of Linux network namespaces, for running gmpsim across "hosts" on one machine.

    bridge ns  gm<pid>-br   br0 with ports v-c, v-h1, v-h2           (no address)
    coordinator gm<pid>-c   eth0 10.203.<x>.1/24    ─┐
    host        gm<pid>-h1  eth0 10.203.<x>.11/24   ─┼─ veth pairs into the bridge ns
    host        gm<pid>-h2  eth0 10.203.<x>.12/24   ─┘

Every veth pair is created with both ends directly inside lab namespaces (nothing is made in, or
moved through, the root namespace); loopback is up in each namespace; there is no default route,
so nothing in the lab can reach anything outside it. `x` comes from the owner pid. Names carry the
owner pid: a lab left behind by a killed run is deleted by the next one (its owner is dead).

`lab.run(ns, argv, **popen_kwargs)` starts `ip netns exec NS argv...` (which execs argv: the Popen's
pid is the command's, and it stays in pytest's process group). `lab.partition(ns)` / `lab.heal(ns)`
take the namespace's eth0 down / up (the kernel here has no netem).

Teardown (always): SIGTERM to every process the lab started (an agent then ends its Ms and unlinks
its arena), SIGKILL to whatever is still alive after a grace period and to every process still
inside a lab namespace (`ip netns pids`; the gmpsim segments a killed process mapped are unlinked),
then `ip netns del`. Skips (pytest.skip) when not root,
when `ip` is missing, or when `ip netns add` fails.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from protocol.owner import alive

HOSTS = ("h1", "h2")
IFACE = "eth0"  # the lab end of each veth, in every non-bridge namespace
_NAME = re.compile(r"^gm(\d+)-(br|c|h\d+)$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def list_namespaces() -> list[str]:
    p = _ip("netns", "list", check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    p = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _shm_of(pid: int) -> set[str]:
    """The gmpsim shared-memory segments a process maps (a host agent's g0 arena)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return {line.split("/dev/shm/", 1)[1].split()[0] for line in f if "/dev/shm/gmpsim-" in line}
    except (OSError, IndexError):
        return set()


def _unlink_shm(names: set[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join("/dev/shm", name))


def _kill(pid: int, shm: set[str]) -> None:
    """SIGKILL pid, noting the segments it maps first: a killed agent cannot unlink its arena."""
    shm |= _shm_of(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _empty_and_delete(names: list[str]) -> list[str]:
    """SIGKILL every process inside the namespaces, wait for them, unlink the segments they mapped,
    delete the namespaces. Returns the names that could not be deleted."""
    deadline = time.monotonic() + 3.0
    shm: set[str] = set()
    while True:
        pids = [pid for ns in names for pid in ns_pids(ns) if alive(pid)]
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            _kill(pid, shm)
        time.sleep(0.05)
    _unlink_shm(shm)
    failed = []
    for ns in names:
        if _ip("netns", "del", ns, check=False).returncode != 0 and ns in list_namespaces():
            failed.append(ns)
    return failed


def clean_stale() -> list[str]:
    """Delete gm<pid>-* namespaces whose owner pid is dead (or is us: a lab of ours that is not
    running now is a leftover). Returns what it deleted."""
    me = os.getpid()
    stale = [ns for ns in list_namespaces()
             if (m := _NAME.match(ns)) and (int(m[1]) == me or not alive(int(m[1])))]
    if stale:
        _empty_and_delete(stale)
    return stale


class NetLab:
    def __init__(self, owner: int | None = None):
        self.owner = owner or os.getpid()
        self.prefix = f"gm{self.owner}-"
        self.BR, self.C = self.prefix + "br", self.prefix + "c"
        self.hosts = {h: self.prefix + h for h in HOSTS}
        self.subnet = f"10.203.{self.owner % 250 + 1}"
        self.addrs = {self.C: f"{self.subnet}.1"}
        self.addrs.update({ns: f"{self.subnet}.{11 + i}" for i, ns in enumerate(self.hosts.values())})
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.BR, self.C, *self.hosts.values()]

    def addr(self, ns: str) -> str:
        return self.addrs[ns]

    # --- build --------------------------------------------------------------------------------------

    def build(self) -> "NetLab":
        clean_stale()
        try:
            _ip("netns", "add", self.BR)
        except RuntimeError as e:
            pytest.skip(f"network namespaces unavailable: {e}")
        self.made.append(self.BR)
        try:
            _ip("-n", self.BR, "link", "set", "lo", "up")
            _ip("-n", self.BR, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.BR, "link", "set", "br0", "up")
            for ns in (self.C, *self.hosts.values()):
                _ip("netns", "add", ns)
                self.made.append(ns)
                port = "v-" + ns[len(self.prefix):]
                # Both ends made directly inside the lab: nothing appears in the root namespace.
                _ip("link", "add", IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.BR)
                _ip("-n", self.BR, "link", "set", port, "master", "br0")
                _ip("-n", self.BR, "link", "set", port, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.addrs[ns]}/24", "dev", IFACE)
                _ip("-n", ns, "link", "set", IFACE, "up")
        except BaseException:
            self.teardown()
            raise
        return self

    # --- use ----------------------------------------------------------------------------------------

    def run(self, ns: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start argv inside namespace ns (`ip netns exec` execs it: same pid, same process group)."""
        if ns not in self.namespaces:
            raise ValueError(f"{ns} is not a namespace of this lab")
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen_kwargs)
        self.procs.append(p)
        return p

    def partition(self, ns: str) -> None:
        """Cut ns off: its end of the veth goes down (the bridge's port loses carrier too)."""
        _ip("-n", ns, "link", "set", IFACE, "down")

    def heal(self, ns: str) -> None:
        _ip("-n", ns, "link", "set", IFACE, "up")

    def pids(self, ns: str) -> list[int]:
        """Live processes inside ns."""
        return [p for p in ns_pids(ns) if alive(p)]

    # --- teardown -----------------------------------------------------------------------------------

    def stop(self, grace_s: float = 3.0) -> None:
        """End what the lab started: SIGTERM (an agent's orderly shutdown ends its Ms and unlinks its
        arena), then SIGKILL after grace_s; then anything else still inside a lab namespace."""
        running = [p for p in self.procs if p.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        shm: set[str] = set()
        for p in running:
            try:
                p.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(p.pid, shm)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)
        _unlink_shm(shm)

    def teardown(self) -> None:
        try:
            self.stop()
        finally:
            made, self.made = self.made, []
            failed = _empty_and_delete(made)
            if failed:
                raise RuntimeError(f"netlab: namespaces not deleted: {failed}")


@contextlib.contextmanager
def netlab():
    """A NetLab built for the duration of the block (pytest.skip when it cannot be built)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")
    lab = NetLab()
    lab.build()
    try:
        yield lab
    finally:
        lab.teardown()


@pytest.fixture
def lab():
    with netlab() as built:
        yield built
