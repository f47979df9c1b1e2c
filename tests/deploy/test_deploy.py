"""deploy/ validated offline: no container engine or cluster is needed (or available).

- the Compose file against the Compose Specification's schema, as vendored by check-jsonschema
  (`check-jsonschema --builtin-schema vendor.compose-spec`);
- every Kubernetes manifest with kubernetes-validate in strict mode (unknown fields rejected), against
  an older and the newest Kubernetes version it ships;
- and in Python what a schema cannot see: the Dockerfile and .dockerignore agree with pyproject's
  packages; the image's user is the pods' user; --hosts matches the number of agents; the agents
  connect to the coordinator's Service and port; keys, /dev/shm, resources; Compose's `$`
  interpolation of the commands; and gmpsim's own argument parser accepting every command line the
  files run (skipped for a subcommand the CLI does not have yet).

The validator tests skip (with the reason) only when the validators are not installed; they are in
the [test] extra, which `make test` installs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"  # the build context is the repository root
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
K8S_FILES = sorted(K8S.rglob("*.yaml"))
K8S_VERSIONS = ["1.30.0", "latest"]  # "latest": the newest version kubernetes-validate ships

KEY_FILES = {"coordinator.key", "coordinator.key_secret", "agent.key", "agent.key_secret"}
COORDINATOR_PORT = 7070
SHM_BYTES = 256 * 2**20


def _need(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{package} is not installed (it is in gmpsim's [test] extra: pip install -e '.[test]')")


@pytest.fixture(scope="module")
def yaml():
    _need("yaml", "PyYAML (installed with kubernetes-validate)")
    import yaml as mod
    return mod


def _tool(script: str, module: str) -> list[str]:
    """The validator's console script next to this interpreter (the venv's bin), else `python -m`."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---- Dockerfile ------------------------------------------------------------------------------------

def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    logical, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
            for name, default in _global_args(logical).items():  # FROM ${BASE}: its default
                rest = rest.replace("${%s}" % name, default)
        if not stages and word == "ARG":
            continue
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((word, rest.strip()))
    return stages


def _global_args(logical: list[str]) -> dict[str, str]:
    """The ARGs before the first FROM (the only ones a FROM line may use), with their defaults."""
    out = {}
    for line in logical:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            break
        name, _, default = rest.strip().partition("=")
        out[name] = default
    return out


def _args(stage, word) -> list[str]:
    return [rest for w, rest in stage if w == word]


def _image_uid() -> int:
    user = _args(_dockerfile_stages()[-1], "USER")
    assert user, "the final stage sets no USER"
    uid = user[-1].split(":")[0]
    assert uid.isdigit(), f"USER {user[-1]!r}: use a numeric uid (Kubernetes runAsNonRoot can only verify those)"
    return int(uid)


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


_TEMPLATE = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)"
                       r"|\{(?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}|(?P<invalid>))")


def _interpolate(value, env: dict[str, str], used: set[str]):
    """What Compose makes of a value: `$$` is a literal `$`, `$VAR` / `${VAR}` / `${VAR:-default}` are
    replaced from the environment (empty when unset), anything else after `$` is an error."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group("escaped"):
            return "$"
        if m.group("invalid") is not None:
            raise AssertionError(f"Compose rejects {value!r}: invalid interpolation (write $$ for a literal $)")
        name = m.group("named") or m.group("braced")
        used.add(name)
        op, arg, val = m.group("op"), m.group("arg"), env.get(name)
        if op in (":-", "-"):
            return val if (val if op == ":-" else val is not None) else arg
        assert op is None, f"unexpected interpolation {m.group(0)}"
        return val or ""

    return _TEMPLATE.sub(sub, value)


def _compose(yaml, env: dict[str, str] | None = None) -> tuple[dict, set[str]]:
    used: set[str] = set()
    return _interpolate(yaml.safe_load(COMPOSE.read_text()), env or {}, used), used


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _flag(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


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


# ---- Kubernetes ------------------------------------------------------------------------------------

def _k8s_docs(yaml) -> list[tuple[Path, dict]]:
    return [(f, d) for f in K8S_FILES for d in yaml.safe_load_all(f.read_text()) if d]


def _version(v: str) -> str:
    import kubernetes_validate
    return kubernetes_validate.latest_version() if v == "latest" else v


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_k8s_manifest_validates_strictly(yaml, path, version):
    """The Python API, which, unlike the CLI, fails on a kind or apiVersion it has no schema for."""
    _need("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, _version(version), strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(e.message)


def test_k8s_cli_validates_every_manifest():
    """The command deploy/README.md gives, as a user runs it."""
    _need("kubernetes_validate", "kubernetes-validate")
    r = _run(_tool("kubernetes-validate", "kubernetes_validate") + ["--strict", "-k", "1.30.0", *map(str, K8S_FILES)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARN" not in r.stdout and "ERROR" not in r.stdout, r.stdout


def test_k8s_validator_rejects_an_unknown_field(yaml):
    _need("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate
    (sts,) = [d for _, d in _k8s_docs(yaml) if d["kind"] == "StatefulSet"]
    sts["spec"]["template"]["spec"]["containers"][0]["shmSize"] = "256Mi"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, _version("latest"), strict=True)


def _one(docs, kind, name=None) -> dict:
    found = [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _quantity(q) -> float:
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(q))
    assert m, f"quantity {q!r}"
    mult = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9,
            "T": 1e12, "m": 1e-3}[m.group(2)]
    return float(m.group(1)) * mult


def _pod_spec(doc) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def _argv(container) -> list[str]:
    return [str(a) for a in container.get("command", []) + container.get("args", [])]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_k8s_structure(yaml):
    docs = _k8s_docs(yaml)
    ns = _one(docs, "Namespace")["metadata"]["name"]
    assert ns == "gmpsim"
    for path, d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == ns, f"{path.name}: {d['kind']} outside namespace {ns}"

    job, svc = _one(docs, "Job"), _one(docs, "Service", "gmpsim-coordinator")
    sts = _one(docs, "StatefulSet")
    headless = _one(docs, "Service", sts["spec"]["serviceName"])
    secret = _one(docs, "Secret")

    # the coordinator: a one-shot Job behind a ClusterIP Service on 7070
    assert job["spec"]["backoffLimit"] == 0 and _pod_spec(job)["restartPolicy"] == "Never"
    (coord,) = _pod_spec(job)["containers"]
    argv = _argv(coord)
    assert argv[:2] == ["gmpsim", "coordinator"] and _flag(argv, "--listen") == f"tcp://0.0.0.0:{COORDINATOR_PORT}"
    assert "--insecure" not in argv
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert _selects(svc["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])
    assert not _selects(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    (zmq,) = [p for p in svc["spec"]["ports"] if p["port"] == COORDINATOR_PORT]
    assert zmq["targetPort"] in (COORDINATOR_PORT, *[p["name"] for p in coord["ports"] if p["containerPort"] == COORDINATOR_PORT])

    # the agents: a StatefulSet governed by a headless Service, one per --hosts
    assert headless["spec"]["clusterIP"] == "None"
    assert _selects(sts["spec"]["selector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])
    assert sts["spec"]["replicas"] == int(_flag(argv, "--hosts")), "the coordinator waits for --hosts agents"
    (agent,) = _pod_spec(sts)["containers"]
    aargv = _argv(agent)
    assert aargv[:2] == ["gmpsim", "agent"] and "--insecure" not in aargv
    assert _flag(aargv, "--connect") == f"tcp://{svc['metadata']['name']}:{COORDINATOR_PORT}"
    assert "--name" not in aargv and not any("$(" in a for a in aargv), "podman kube play expands no $(VAR)"
    (pod_name,) = [e for e in agent["env"] if e["name"] == "GMPSIM_AGENT_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # /dev/shm: memory-backed, large enough for the g0 stack arena, within the memory limit
    vols = {v["name"]: v for v in _pod_spec(sts)["volumes"]}
    (shm,) = [m for m in agent["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    empty = vols[shm["name"]]["emptyDir"]
    assert empty["medium"] == "Memory" and _quantity(empty["sizeLimit"]) >= SHM_BYTES
    assert _quantity(agent["resources"]["limits"]["memory"]) > _quantity(empty["sizeLimit"])

    # keys: the same Secret, read-only, on both sides, at the path given to --keys
    assert set(secret["stringData"]) == KEY_FILES and all("gmpsim keys" in v for v in secret["stringData"].values())
    for doc, c in ((job, coord), (sts, agent)):
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == _flag(_argv(c), "--keys")]
        assert mount.get("readOnly") is True
        vol = {v["name"]: v for v in _pod_spec(doc)["volumes"]}[mount["name"]]
        assert vol["secret"]["secretName"] == secret["metadata"]["name"]

    # the outputs: --out is on the PersistentVolumeClaim
    pvc = _one(docs, "PersistentVolumeClaim")
    (runs,) = [m for m in coord["volumeMounts"] if _flag(argv, "--out").startswith(m["mountPath"] + "/")]
    jvols = {v["name"]: v for v in _pod_spec(job)["volumes"]}
    assert jvols[runs["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_k8s_pods_run_as_the_image_user_with_requests_and_limits(yaml):
    uid, images = _image_uid(), set()
    for path, d in _k8s_docs(yaml):
        if d["kind"] not in ("Pod", "Job", "StatefulSet", "Deployment", "DaemonSet"):
            continue
        spec = _pod_spec(d)
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, f"{path.name}: run as the image's uid {uid}"
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        for c in spec["containers"]:
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{path.name}/{c['name']}: no {kind}"
            for r in ("cpu", "memory"):
                assert _quantity(res["requests"][r]) <= _quantity(res["limits"][r]), f"{path.name}/{c['name']}: {r}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            images.add(c["image"])
    assert len(images) == 1, f"one image everywhere, found {images}"


# ---- the command lines against gmpsim's own parser -------------------------------------------------

def _deployed_command_lines(yaml) -> list[tuple[str, list[str]]]:
    """Every gmpsim argv the deploy files run (without the leading `gmpsim`), as the process gets it."""
    doc, _ = _compose(yaml)
    svc = doc["services"]
    script = _command(svc["agent"])[0].replace("$HOSTNAME", "0123456789ab")
    lines = [("compose coordinator", _command(svc["coordinator"])),
             ("compose agent", shlex.split(script)[2:]),  # drop `exec gmpsim`
             ("compose keys", _command(svc["keys"]))]
    for path, d in _k8s_docs(yaml):
        if d["kind"] in ("Job", "StatefulSet"):
            for c in _pod_spec(d)["containers"]:
                argv = _argv(c)
                assert argv[0] == "gmpsim"
                lines.append((f"{path.name} {c['name']}", argv[1:]))
    return lines


def test_deployed_command_lines_parse(yaml):
    """Each command line the deploy files run is accepted by `gmpsim`'s argument parser (skipped for a
    subcommand the CLI does not have yet), and names a built-in scenario."""
    from coordinator.cli import parser
    from coordinator.scenario import load
    ap = parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for where, argv in _deployed_command_lines(yaml):
        if argv[0] not in sub.choices:
            missing.append(argv[0])
            continue
        try:
            ns = ap.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{where}: gmpsim rejects {argv} (exit {e.code})")
        if getattr(ns, "scenario", None):
            load(ns.scenario)  # a built-in scenario name; ScenarioError otherwise
    if missing:
        pytest.skip(f"gmpsim has no {sorted(set(missing))} subcommand yet")


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
