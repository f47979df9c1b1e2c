"""deploy/k8s validated offline, and every command line the deploy files run against gmpsim's own
parser: no cluster is needed (or available).

Every Kubernetes manifest is checked with kubernetes-validate in strict mode (unknown fields
rejected), against an older and the newest Kubernetes version it ships; in Python, what a schema
cannot see: the image's user is the pods' user, the agents connect to the coordinator's Service and
port, keys, /dev/shm, resources. The Dockerfile and Compose: test_deploy.py.

The validator tests skip (with the reason) only when the validators are not installed; they are in
the [test] extra, which `make test` installs.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    COORDINATOR_PORT,
    K8S,
    K8S_FILES,
    K8S_VERSIONS,
    KEY_FILES,
    SHM_BYTES,
    _command,
    _compose,
    _flag,
    _image_uid,
    _need,
    _run,
    _tool,
)

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
