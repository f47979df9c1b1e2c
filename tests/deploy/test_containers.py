"""deploy/ for real (issue 12): the image built from deploy/Dockerfile on a base made from Debian's
packages, `gmpsim run` in one container, the Compose file with podman-compose (a coordinator and two
agents; one agent killed mid-run), and the Kubernetes Job and StatefulSet pod templates rendered
into Pods (deploy/k8s_pods.py) and run with `podman kube play`.

Marker `containers`: run by `make test` as root (installing podman, runc and mmdebstrap with apt
when missing), skipped with the reason elsewhere. The base image is cached in podman's image store,
keyed by its recipe; the gmpsim image is rebuilt each run from cached layers. Everything a test
makes is named with this run's prefix and removed after it; the module's fixture fails if any of it
is left. Every podman call is bounded by a timeout.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

from tests import podman as pm

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

_skip = pm.why_not()
if _skip:
    pytestmark.append(pytest.mark.skip(reason=_skip))

PREFIX = f"gmpsimt{os.getpid()}"


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Overrides conftest's: what these tests make lives in containers (their own /dev/shm), and
    over their minutes the host's /dev/shm sees other suites' gmpsim segments come and go. So the
    check here is podman's (the `podman` fixture: nothing named with this run's prefix) and the
    processes of pytest's group."""
    from tests.conftest import _our_processes
    before = _our_processes()
    yield
    deadline = time.monotonic() + 5.0
    while (left := _our_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: processes {sorted(left)}"


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """Tools installed, the images built; at the end, nothing of ours left (checked, then removed)."""
    t0 = time.monotonic()
    installed = pm.install_missing()
    engine = pm.Podman(str(tmp_path_factory.mktemp("podman")), PREFIX)
    engine.remove_ours()
    base, built = engine.base_image()
    t_base = time.monotonic()
    engine.build(base)
    sys.stderr.write(f"\ncontainers: installed {installed or 'nothing'}; base image {base} "
                     f"{'built' if built else 'cached'} ({t_base - t0:.0f}s); gmpsim image built "
                     f"({time.monotonic() - t_base:.0f}s)\n")
    yield engine
    left = engine.ours()
    engine.remove_ours()
    assert not left, f"left behind by the container tests: {left}"


@pytest.fixture
def clean(podman):
    """Per test: whatever it made (named with the prefix) is removed, and none is left."""
    yield podman
    podman.remove_ours()
    assert not podman.ours()


def test_gmpsim_run_in_one_container(clean):
    p = clean("run", "--rm", "--name", f"{PREFIX}-one", "--pids-limit", "32768", pm.IMAGE,
              "run", "syscall-storm", "--no-progress", timeout=180)
    assert "outcome          ok" in p.stdout and "lost 0" in p.stdout, p.stdout + p.stderr
    assert "leaks            processes 0  shm 0" in p.stdout, p.stdout


@pytest.mark.parametrize("guard", ["off", "on"])
def test_a_container_task_limit_ends_with_gos_newosproc_fatal(clean, guard):
    """Podman's task limit, as in issue 12 (there 2,048: scale-out crashed the agent, then hung):
    with 240 tasks a scale-out ends at once with Go's newosproc fatal, from the real clone failure
    (guard off) or from the machine-limit guard first (its line names the pids cgroup)."""
    p = clean("run", "--rm", "--name", f"{PREFIX}-limit-{guard}", "--pids-limit", "240",
              "-e", f"GMPSIM_MACHINE_GUARD={guard}", "-e", "GMPSIM_TASK_MARGIN=30", pm.IMAGE,
              "run", "scale-out", "--no-progress", timeout=180, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and lines[-1] == "fatal error: newosproc", p.stdout + p.stderr
    assert any(ln.startswith("runtime: failed to create new OS thread (have ") and ln.endswith("errno=11)")
               for ln in lines), p.stderr
    assert ("pids cgroup" in lines[-2]) == (guard == "on"), p.stderr
    assert "leaks            processes 0  shm 0" in p.stdout, p.stdout


def _compose_up(engine, scenario: str, env: dict) -> None:
    engine.compose("--profile", "setup", "run", "--rm", "keys", timeout=120, env=env)
    # `up` without -d never returns when a container cannot start (podman-compose): detached,
    # then podman wait with a bound.
    engine.compose("up", "-d", timeout=180, env=env)


def _compose_env(scenario: str) -> dict:
    return {"GMPSIM_IMAGE": pm.IMAGE, "GMPSIM_SCENARIO": scenario, "GMPSIM_METRICS_PORT": str(20000 + os.getpid() % 20000)}


def _processes(engine, container: str) -> int:
    p = engine("top", container, "pid", timeout=30, check=False)
    return max(0, len(p.stdout.split()) - 1) if p.returncode == 0 else 0


def test_compose_two_agents_one_killed_mid_run(clean):
    """One deployment for both promises (a Compose deployment is the slow part): a coordinator and
    two agents run `steady`, Ms on both hosts; agent 1's container is SIGKILLed mid-run; its host is
    cut off, its goroutines requeued on the other, and the run still ends ok with none lost."""
    env = _compose_env("steady")
    _compose_up(clean, "steady", env)
    try:
        victim = f"{PREFIX}_agent_1"
        deadline = time.monotonic() + 60
        while _processes(clean, victim) < 6 and time.monotonic() < deadline:  # init, agent, Ms: underway
            time.sleep(0.2)
        assert _processes(clean, victim) >= 6, "the run never got under way on agent 1"
        clean("kill", "-s", "KILL", victim, timeout=30)
        code = clean.wait(f"{PREFIX}_coordinator_1", timeout=180)
        logs = clean("logs", f"{PREFIX}_coordinator_1", timeout=30)
        rep = clean.volume_file(f"{PREFIX}_runs", "steady/report.json")
        assert rep["goroutines"]["lost"] == 0, logs.stdout + logs.stderr
        assert code == 0 and rep["outcome"] == "ok", (code, rep["outcome"], rep["reason"])
        hosts = rep["ms"]["per_host"]
        assert len(hosts) == 2 and all(h["created"] > 0 for h in hosts.values()), hosts
        assert any(h["died"] > 0 for h in hosts.values()), f"no M of the killed host died: {hosts}"
    finally:
        clean.compose("down", "-v", "-t", "2", timeout=120, env=env, check=False)


def test_kubernetes_pod_templates_with_kube_play(clean, tmp_path):
    k8s = os.path.join(pm.REPO, "deploy", "k8s")
    render = [sys.executable, os.path.join(pm.REPO, "deploy", "k8s_pods.py"), "--prefix", f"{PREFIX}-"]
    keys = tmp_path / "keys"
    pm.run([sys.executable, "-m", "coordinator.cli", "keys", str(keys)], 30)
    secret = tmp_path / "secret.yaml"
    secret.write_text(pm.run([*render, "--secret", str(keys)], 30).stdout)
    pods = tmp_path / "pods.yaml"
    pods.write_text(pm.run([*render, "--image", pm.IMAGE, *(os.path.join(k8s, f) for f in
                                                            ("runs-pvc.yaml", "coordinator.yaml", "agents.yaml"))], 30).stdout)
    clean("secret", "create", f"{PREFIX}-gmpsim-keys", str(secret), timeout=30)
    secret.unlink()
    clean("network", "create", f"{PREFIX}-net", timeout=30)
    clean("kube", "play", "--network", f"{PREFIX}-net", str(pods), timeout=180)
    coordinator = f"{PREFIX}-gmpsim-coordinator-coordinator"
    code = clean.wait(coordinator, timeout=180)
    logs = clean("logs", coordinator, timeout=30)
    assert code == 0, logs.stdout + logs.stderr
    rep = clean.volume_file(f"{PREFIX}-gmpsim-runs", "syscall-storm/report.json")
    assert rep["outcome"] == "ok" and rep["goroutines"]["lost"] == 0
    assert sorted(rep["ms"]["per_host"]) == [f"{PREFIX}-gmpsim-agent-0", f"{PREFIX}-gmpsim-agent-1"], rep["ms"]["per_host"]
    clean("kube", "down", str(pods), timeout=120, check=False)
