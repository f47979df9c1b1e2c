"""deploy/ validated offline, its Dockerfile, .dockerignore and Compose file: no container engine is
needed (or available).

- the Compose file against the Compose Specification's schema, as vendored by check-jsonschema
  (`check-jsonschema --builtin-schema vendor.compose-spec`);
- and in Python what a schema cannot see: the Dockerfile and .dockerignore agree with pyproject's
  packages; --hosts matches the number of agents; the agents connect to the coordinator's port;
  keys, /dev/shm; Compose's `$` interpolation of the commands; deploy/README.md gives the commands.

The Kubernetes manifests, and every command line the deploy files run against gmpsim's own parser:
test_deploy_k8s.py. The validator tests skip (with the reason) only when the validators are not
installed; they are in the [test] extra, which `make test` installs.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    COMPOSE,
    COORDINATOR_PORT,
    DEPLOY,
    DOCKERIGNORE,
    K8S_FILES,
    ROOT,
    _args,
    _command,
    _compose,
    _dockerfile_stages,
    _flag,
    _image_uid,
    _need,
    _run,
    _tool,
)

# ---- Dockerfile ------------------------------------------------------------------------------------

def test_dockerfile_slim_base_nonroot_user_pip_install():
    stages = _dockerfile_stages()
    for stage in stages:
        base = stage[0][1].split()[0]
        assert base == "python:3.11-slim", f"FROM {base}: expected python:3.11-slim"
    final = stages[-1]
    assert _image_uid() != 0
    assert any("pip install" in r for r in _args(final, "RUN")), "the final stage does not pip install gmpsim"
    assert any(re.search(r"\bpip (install|wheel)\b.* \.(\s|$)", r) for s in stages for r in _args(s, "RUN")), \
        "the package is not built/installed from the build context (pip ... .)"
    env = " ".join(_args(final, "ENV"))
    assert re.search(r"PYTHONDONTWRITEBYTECODE=1", env) and re.search(r"PYTHONUNBUFFERED=1", env)
    assert _args(final, "ENTRYPOINT") == ['["gmpsim"]']
    assert _args(final, "CMD"), "no default CMD"
    # the USER comes after every root-needing step and before the entrypoint
    words = [w for w, _ in final]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")


def test_dockerfile_bakes_in_no_secret():
    for stage in _dockerfile_stages():
        for word, rest in stage:
            if word in ("COPY", "ADD"):
                assert "key" not in rest.lower(), f"{word} {rest}: keys are mounted at run time, never copied in"
            if word in ("ARG", "ENV"):
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|_KEY\b|CURVE)", rest, re.I), f"{word} {rest}"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _copied_sources() -> set[str]:
    """Context paths the build copies (COPY without --from), normalised without a trailing '/'."""
    out = set()
    for stage in _dockerfile_stages():
        for rest in _args(stage, "COPY"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            if "--from" in rest:
                continue
            out.update(p.rstrip("/") for p in parts[:-1])
    return out


def test_dockerfile_copies_what_the_package_needs():
    meta = _pyproject()
    needed = {"pyproject.toml", meta["project"]["readme"]}
    needed |= {pat.split(".")[0].rstrip("*") for pat in meta["tool"]["setuptools"]["packages"]["find"]["include"]}
    missing = needed - _copied_sources()
    assert not missing, f"deploy/Dockerfile does not COPY {sorted(missing)}, which `pip install .` needs"


def _dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore semantics: a pattern matches a path or one of its parent directories,
    `!` re-includes, the last matching pattern wins."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").lstrip("/"))
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i:j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(re.fullmatch(rx, p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_secret_free():
    assert DOCKERIGNORE.is_file(), "the build context is the repository root: .dockerignore belongs there"
    for path in (".venv/bin/python", "runs/syscall-storm-1/report.json", ".git/HEAD", "deploy/keys/agent.key_secret",
                 "deploy/keys/coordinator.key", "tests/deploy/test_deploy.py", "coordinator/__pycache__/cli.cpython-311.pyc",
                 ".pytest_cache/v/cache/lastfailed", ".hypothesis/x", "gmpsim.egg-info/PKG-INFO"):
        assert _dockerignore_excludes(path), f"{path} would be sent to the Docker daemon"
    for src in _copied_sources():
        probe = src if "." in Path(src).name else f"{src}/__init__.py"
        assert not _dockerignore_excludes(probe), f"{probe} is copied by the Dockerfile but excluded by .dockerignore"
    assert not _dockerignore_excludes("coordinator/scenarios/syscall-storm.toml"), "scenario files must reach the image"


# ---- Docker Compose --------------------------------------------------------------------------------

def test_compose_file_validates_against_the_compose_spec():
    _need("check_jsonschema", "check-jsonschema")
    r = _run(_tool("check-jsonschema", "check_jsonschema") + ["--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path, yaml):
    """The schema check is live: a misspelt service key fails it."""
    _need("check_jsonschema", "check-jsonschema")
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["agent"]["shm_sise"] = doc["services"]["agent"].pop("shm_size")
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    r = _run(_tool("check-jsonschema", "check_jsonschema") + ["--builtin-schema", "vendor.compose-spec", str(bad)])
    assert r.returncode != 0, r.stdout + r.stderr


def test_compose_structure(yaml):
    doc, _ = _compose(yaml)
    services = doc["services"]
    coord, agent, keys = services["coordinator"], services["agent"], services["keys"]
    assert len({s["image"] for s in services.values()}) == 1, "every service runs the same image"

    # the coordinator: one run, its outputs on a volume, reachable on the project's network
    args = _command(coord)
    assert args[0] == "coordinator" and _flag(args, "--listen") == f"tcp://0.0.0.0:{COORDINATOR_PORT}"
    assert _flag(args, "--keys") == "/keys" and _flag(args, "--out").startswith("/runs/")
    assert "--insecure" not in args
    assert any(v.split(":")[1] == "/runs" and v.split(":")[0] in doc["volumes"] for v in coord["volumes"])
    assert coord.get("restart", "no") == "no"

    # the agents: scalable, a distinct name per replica, a large /dev/shm, restarted on failure
    assert "container_name" not in agent and "ports" not in agent and "hostname" not in agent
    assert agent["shm_size"] == "256m"
    assert agent["restart"].startswith("on-failure")
    assert agent["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = _command(agent) if isinstance(agent["command"], list) else [agent["command"]]
    assert script.startswith("exec gmpsim agent "), "exec: the agent, not sh, must get the stop signal"
    sh = script.split()
    assert _flag(sh, "--connect") == f"tcp://coordinator:{COORDINATOR_PORT}"
    assert _flag(sh, "--name") == '"$HOSTNAME"', "each replica names itself after its container"
    assert _flag(sh, "--keys") == "/keys" and "--insecure" not in sh

    # keys: made once by the `keys` service into a volume, mounted read-only by both sides
    assert _command(keys) == ["keys", "/keys"] and keys.get("profiles") == ["setup"]
    assert "keys:/keys" in keys["volumes"]
    for svc in (coord, agent):
        assert "keys:/keys:ro" in svc["volumes"], "the keys are mounted read-only"
        assert svc["networks"] == ["gmpsim"] and "gmpsim" in doc["networks"]
        assert "ALL" in svc.get("cap_drop", [])
    assert "keys" in doc["volumes"]


@pytest.mark.parametrize("hosts", [None, "3"])
def test_compose_hosts_and_agent_count_agree(yaml, hosts):
    env = {"GMPSIM_HOSTS": hosts} if hosts else {}
    doc, used = _compose(yaml, env)
    assert used <= {"GMPSIM_IMAGE", "GMPSIM_SCENARIO", "GMPSIM_HOSTS", "GMPSIM_METRICS_PORT"}, \
        f"Compose would substitute {sorted(used)} from the host's environment"
    n = _flag(_command(doc["services"]["coordinator"]), "--hosts")
    assert n == str(doc["services"]["agent"]["scale"]) == (hosts or "2")
    assert doc["services"]["coordinator"]["image"] == "gmpsim:latest"


# ---- README ----------------------------------------------------------------------------------------

def test_readme_gives_the_commands():
    text = (DEPLOY / "README.md").read_text()
    for cmd in ("docker build -f deploy/Dockerfile -t gmpsim .",
                "`docker compose -f deploy/docker-compose.yml`",  # $C: the same commands for both
                "`podman-compose -f deploy/docker-compose.yml`",
                "$C --profile setup run --rm keys",
                "$C up -d --scale agent=3",
                "podman kube play --network gmpsim pods.yaml",
                "python3 deploy/k8s_pods.py --secret deploy/keys",
                "gmpsim keys deploy/keys",
                "kubectl -n gmpsim create secret generic gmpsim-keys --from-file=deploy/keys/",
                "kubectl -n gmpsim logs -f job/gmpsim-coordinator",
                "kubectl -n gmpsim cp gmpsim-runs-reader:/runs",
                "check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml",
                "kubernetes-validate --strict"):
        assert cmd in text, f"deploy/README.md lacks `{cmd}`"
    for path in K8S_FILES:
        assert str(path.relative_to(ROOT)) in text or path.name in text, f"deploy/README.md never mentions {path.name}"
