#!/usr/bin/env python3
"""Render deploy/k8s's Job and StatefulSet into the Pods a cluster would make of them, for
`podman kube play` (podman 4.3 refuses Job, StatefulSet, Service and Namespace, but runs Pods,
PersistentVolumeClaims and ConfigMaps):

    python3 deploy/k8s_pods.py deploy/k8s/runs-pvc.yaml deploy/k8s/coordinator.yaml deploy/k8s/agents.yaml > pods.yaml
    gmpsim keys deploy/keys && python3 deploy/k8s_pods.py --secret deploy/keys > keys-secret.yaml
    podman secret create gmpsim-keys keys-secret.yaml && rm keys-secret.yaml
    podman network create gmpsim && podman kube play --network gmpsim pods.yaml

What a cluster does and this does in its place:
- Job → one Pod named after the Job (a cluster adds a random suffix); StatefulSet → `replicas`
  Pods NAME-0 … NAME-(N-1), each with `hostname` = its name, as a StatefulSet's pods have.
- A Service → nothing: the Pod it selects takes the Service's name (the coordinator's Pod is named
  `gmpsim-coordinator`), so that the agents' `tcp://gmpsim-coordinator:7070` resolves on a podman
  network (aardvark-dns answers pod names). A Pod named after its Job has the same effect.
- The downward API (`fieldRef: metadata.name`) → the value itself, as the kubelet would set it.
- `emptyDir: {medium: Memory}` at /dev/shm → dropped: podman makes it a root-owned 0755 volume
  that uid 10001 cannot write, and its own /dev/shm (64 MiB, mode 1777) holds ~8,000 live Ms.
- A Secret volume gets `optional: false` spelled out (podman 4.3 crashes on a Secret volume
  without `optional`). The Secret itself: `--secret DIR` writes the one podman reads (see
  podman_secret: podman 4.3 mounts `data` without decoding it and ignores `stringData`); podman
  then mounts the same files (0644) at /keys that a cluster mounts from `kubectl create secret`.
  Podman keeps the Secret's files in a named volume called after the Secret: remove it after.
- `--prefix P` puts P before every name (Pods, the claim, the Secret, the Service address in the
  agents' --connect) so that runs side by side do not collide; `--image` replaces the image.
Everything else of the pod templates (command, args, env, securityContext, resources, mounts) is
kept as it is. Needs PyYAML.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import yaml

SHM = "/dev/shm"


def load(paths: list[str]) -> list[dict]:
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def _renamer(prefix: str, names: set[str]):
    """A function renaming every string that is one of `names`, or an endpoint naming one."""
    def rename(value):
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, str) and prefix:
            if value in names:
                return prefix + value
            for n in names:
                value = value.replace(f"//{n}:", f"//{prefix}{n}:")
        return value
    return rename


def pod(name: str, template: dict, hostname: str | None = None) -> dict:
    """The Pod a controller makes of its pod template, named `name`."""
    meta = copy.deepcopy(template.get("metadata", {}))
    meta["name"] = name
    spec = copy.deepcopy(template["spec"])
    if hostname:
        spec["hostname"] = hostname
    dropped = {v["name"] for v in spec.get("volumes", [])
               if v.get("emptyDir", {}).get("medium") == "Memory"
               and any(m["name"] == v["name"] and m["mountPath"] == SHM
                       for c in spec["containers"] for m in c.get("volumeMounts", []))}
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in dropped]
    for v in spec["volumes"]:
        if "secret" in v:
            v["secret"].setdefault("optional", False)
    for c in spec["containers"]:
        c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] not in dropped]
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if ref == "metadata.name":
                del e["valueFrom"]
                e["value"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def render(docs: list[dict], prefix: str = "", image: str | None = None) -> list[dict]:
    """The Pods (and PersistentVolumeClaims) of `docs`, renamed with `prefix`."""
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    names = {d["metadata"]["name"] for d in docs} | {
        v["secret"]["secretName"] for d in docs if d["kind"] in ("Job", "StatefulSet")
        for v in d["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    out = []
    for d in docs:
        kind = d["kind"]
        if kind == "PersistentVolumeClaim":
            out.append(copy.deepcopy(d))
        elif kind == "Job":
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            # the Service selecting these pods lends them its name (what the agents connect to)
            svc = next((n for n, s in services.items() if s["spec"].get("selector")
                        and s["spec"].get("clusterIP") != "None"
                        and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())),
                       d["metadata"]["name"])
            out.append(pod(svc, d["spec"]["template"]))
        elif kind == "StatefulSet":
            base = d["metadata"]["name"]
            for i in range(d["spec"].get("replicas", 1)):
                name = f"{prefix}{base}-{i}"
                out.append(pod(name, d["spec"]["template"], hostname=name))
    for d in out:
        d["metadata"].pop("namespace", None)
        if d["kind"] == "Pod" and image:
            for c in d["spec"]["containers"]:
                c["image"] = image
    return [_renamer(prefix, names)(d) for d in out]


def podman_secret(keys_dir: str, name: str = "gmpsim-keys") -> dict:
    """The keys Secret for `podman secret create NAME FILE` (podman 4.3): each file's text as it is
    under `data`. Podman mounts `data` byte for byte (it does not base64-decode it, and it ignores
    `stringData`), so this is NOT a Secret for a cluster: there, `kubectl create secret generic
    gmpsim-keys --from-file=DIR/` (base64, as Kubernetes requires). Both mount the same files."""
    data = {}
    for fn in sorted(os.listdir(keys_dir)):
        path = os.path.join(keys_dir, fn)
        if os.path.isfile(path):
            with open(path) as f:
                data[fn] = f.read()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gmpsim"}}, "data": data}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="k8s_pods.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("manifests", nargs="*", help="deploy/k8s/*.yaml files")
    ap.add_argument("--prefix", default="", help="put before every name (e.g. run1-)")
    ap.add_argument("--image", default=None, help="the image of every container")
    ap.add_argument("--secret", metavar="KEYS_DIR", help="write the keys Secret for `podman secret create` instead")
    args = ap.parse_args(argv)
    if args.secret:
        yaml.safe_dump(podman_secret(args.secret, args.prefix + "gmpsim-keys"), sys.stdout, sort_keys=False)
        return 0
    if not args.manifests:
        ap.error("no manifests")
    yaml.safe_dump_all(render(load(args.manifests), args.prefix, args.image), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
