"""What test_deploy*.py share: where the deploy files are, what they must agree on, and reading them
(the Dockerfile's image user, Compose's `$` interpolation and commands) or running a validator."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
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


def _tool(script: str, module: str) -> list[str]:
    """The validator's console script next to this interpreter (the venv's bin), else `python -m`."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


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
