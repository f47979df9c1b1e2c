"""Podman for the container tests (tests/deploy/test_containers.py): what this machine needs installed and
configured, the cached base image, the gmpsim image, and every podman call bounded by a timeout.

This machine's quirks (FACTS.md): crun refuses the hybrid cgroup layout, so runc; root cannot raise
its hard open-files limit, while podman raises every container's limits above it by default, so a
containers.conf (through CONTAINERS_CONF, nothing written under /etc) sets default_ulimits to the
hard limits this process has; no registry is reachable, so the base image is built from Debian's
packages (deploy/debian-base.sh) and deploy/Dockerfile is built with --pull=never on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT_PACKAGES = ("podman", "runc", "mmdebstrap", "netavark", "aardvark-dns", "catatonit", "iptables")
TOOLS = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}
IMAGE = "localhost/gmpsim:containers-test"  # the gmpsim image, rebuilt each run (layers cached)
LABEL = "gmpsim.test=containers"


class Failed(RuntimeError):
    pass


def why_not() -> str | None:
    """Why the container tests cannot run here, or None."""
    if sys.platform != "linux":
        return "containers: Linux only"
    if os.geteuid() != 0:
        return "containers: needs root (rootful podman; `make test` as root runs them)"
    if not all(shutil.which(t) for t in TOOLS.values()) and not shutil.which("apt-get"):
        return "containers: podman, runc and mmdebstrap are missing and there is no apt-get to install them"
    return None


def run(argv, timeout: float, env=None, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """One command, bounded: a command that outlives `timeout` is killed and fails the test."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired as e:
        raise Failed(f"timed out after {timeout:.0f}s: {' '.join(argv)}\n{e.stdout or ''}{e.stderr or ''}") from None
    if check and p.returncode != 0:
        raise Failed(f"exit {p.returncode}: {' '.join(argv)}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p


def install_missing() -> list[str]:
    """apt-get install what is missing (a fresh CI machine has none of it). Returns what it installed."""
    missing = [t for t in TOOLS.values() if not shutil.which(t)]
    # netavark's firewall driver runs iptables: without it every container with a network (a build's
    # RUN step too) fails with "netavark: No such file or directory"
    missing += [p for p in ("aardvark-dns", "netavark", "catatonit", "iptables")
                if run(["dpkg", "-s", p], 30, check=False).returncode != 0]
    if not missing:
        return []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
    if run(cmd, 300, env=env, check=False).returncode != 0:
        run(["apt-get", "update", "-q"], 180, env=env)
        run(cmd, 300, env=env)
    return missing


def compose_command() -> list[str]:
    """podman-compose >= 1.1 (profiles, pids_limit): the one of gmpsim's [test] extra, next to this
    Python, else one on PATH."""
    for cand in (os.path.join(os.path.dirname(sys.executable), "podman-compose"), shutil.which("podman-compose")):
        if cand and os.path.exists(cand):
            return [cand]
    raise Failed("podman-compose not found: `make install` installs it (gmpsim's [test] extra)")


class Podman:
    """podman with this machine's containers.conf, every call bounded."""

    def __init__(self, workdir: str, prefix: str):
        self.prefix = prefix
        self.conf = os.path.join(workdir, "containers.conf")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
        with open(self.conf, "w") as f:
            f.write("[containers]\n"
                    f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    "[engine]\n"
                    'runtime = "runc"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": self.conf}

    def __call__(self, *args, timeout: float = 60, check: bool = True, env=None) -> subprocess.CompletedProcess:
        return run(["podman", *args], timeout, env={**self.env, **(env or {})}, check=check)

    def compose(self, *args, timeout: float = 120, check: bool = True, env=None) -> subprocess.CompletedProcess:
        argv = [*compose_command(), "-p", self.prefix, "-f", os.path.join(REPO, "deploy", "docker-compose.yml"), *args]
        return run(argv, timeout, env={**self.env, **(env or {})}, check=check)

    # --- images -------------------------------------------------------------------------------------

    def base_image(self) -> tuple[str, bool]:
        """The base image from Debian's packages, kept in podman's image store and keyed by its recipe
        (deploy/debian-base.sh and the apt sources): built only when missing. (tag, built now)."""
        h = hashlib.sha256()
        for path in [os.path.join(REPO, "deploy", "debian-base.sh"), "/etc/apt/sources.list",
                     *sorted(os.path.join("/etc/apt/sources.list.d", f) for f in os.listdir("/etc/apt/sources.list.d"))]:
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    h.update(path.encode() + b"\0" + f.read())
        tag = f"localhost/gmpsim-base:{h.hexdigest()[:16]}"
        if self("image", "exists", tag, check=False).returncode == 0:
            return tag, False
        run(["bash", os.path.join(REPO, "deploy", "debian-base.sh"), tag], 480, env=self.env)
        return tag, True

    def build(self, base: str) -> None:
        """deploy/Dockerfile on `base`, never pulling. The image it replaces is removed, not its
        intermediate layers: they are the build cache (a prune would empty it)."""
        old = self("image", "inspect", "--format", "{{.Id}}", IMAGE, timeout=30, check=False).stdout.strip()
        self("build", "--pull=never", "--build-arg", f"BASE={base}", "--label", LABEL,
             "-f", os.path.join(REPO, "deploy", "Dockerfile"), "-t", IMAGE, REPO, timeout=420)
        new = self("image", "inspect", "--format", "{{.Id}}", IMAGE, timeout=30).stdout.strip()
        if old and old != new:
            self("rmi", old, timeout=60, check=False)

    # --- what a test leaves --------------------------------------------------------------------------

    def ours(self) -> dict[str, list[str]]:
        """Containers, pods, networks, volumes and secrets named with this run's prefix."""
        out = {}
        for kind, cmd in (("containers", ["ps", "-a", "--format", "{{.Names}}"]),
                          ("pods", ["pod", "ps", "--format", "{{.Name}}"]),
                          ("networks", ["network", "ls", "--format", "{{.Name}}"]),
                          ("volumes", ["volume", "ls", "--format", "{{.Name}}"]),
                          ("secrets", ["secret", "ls", "--format", "{{.Name}}"])):
            names = self(*cmd, timeout=30).stdout.split()
            found = [n for n in names if n.startswith(self.prefix)]
            if found:
                out[kind] = found
        return out

    def remove_ours(self) -> None:
        """Remove everything named with the prefix (containers first, then what they used)."""
        left = self.ours()
        for name in left.get("pods", []):
            self("pod", "rm", "-f", "-t", "2", name, timeout=60, check=False)
        for name in left.get("containers", []):
            self("rm", "-f", "-t", "2", name, timeout=60, check=False)
        for name in left.get("volumes", []):
            self("volume", "rm", "-f", name, timeout=30, check=False)
        for name in left.get("networks", []):
            self("network", "rm", "-f", name, timeout=30, check=False)
        for name in left.get("secrets", []):
            self("secret", "rm", name, timeout=30, check=False)

    def wait(self, container: str, timeout: float) -> int:
        """The container's exit code once it has exited (podman wait, bounded)."""
        p = self("wait", container, timeout=timeout)
        return int(p.stdout.strip().splitlines()[-1])

    def volume_file(self, volume: str, path: str) -> dict:
        """A JSON file inside a named volume (read on the host: rootful podman)."""
        mnt = self("volume", "inspect", "--format", "{{.Mountpoint}}", volume, timeout=30).stdout.strip()
        with open(os.path.join(mnt, path)) as f:
            return json.load(f)

    def wait_for_log(self, container: str, needle: str, count: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self("logs", container, timeout=30, check=False)
            if (p.stdout + p.stderr).count(needle) >= count:
                return p.stdout + p.stderr
            time.sleep(0.3)
        raise Failed(f"{container}: no {count}× {needle!r} in its log within {timeout:.0f}s")
