#!/usr/bin/env python3
"""Checks one render of the gatehouse chart (a file, as helm.py template prints it) for what
the schema validation cannot see:

- every ConfigMap's *.toml parses, and the nodes dial a Service of the render (except for
  podman kube play, which has none);
- every ConfigMap a Deployment mounts is in the render;
- an edit of the virtual proxies rolls no pod, an edit of data-plane.toml rolls the nodes: the
  ConfigMap holding control-plane.toml (whose virtual proxies the control plane rereads when
  the kubelet updates the mounted file) has a stable name, with no content-hash suffix of
  kustomize's configMapGenerator; the one holding data-plane.toml (read only at start) has
  one, or the nodes' pod template has the chart's checksum/config annotation;
- every image is pinned (a tag that is not latest, or a digest) and pulled IfNotPresent;
- with the memory store, the control plane runs exactly one replica, recreated on rollout;
- with --podman, only kinds `podman kube play` runs, one replica each, local images;
- with --binaries DIR, DIR/control-plane and DIR/data-plane accept their files
  (`--check-config`), with the files they name made from deploy/dev-ca.sh's certificates.

Exits 1 with one line per problem."""

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from urllib.parse import urlsplit

import yaml

MOUNTED = "/etc/gatehouse/"
DEV_CA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev-ca.sh")

PODMAN_KINDS = {"Deployment", "Service", "ConfigMap"}

# The suffix kustomize's configMapGenerator appends unless told not to: "-" and the first ten
# hex digits of a SHA-256 of the content, with 0, 1, 3, a and e spelt g, h, k, m and t.
HASH_SUFFIX = re.compile(r"-[2456789bcdfghkmt]{10}$")


def containers(deployment):
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def image_problems(deployment):
    name = deployment["metadata"]["name"]
    for container in containers(deployment):
        image = container["image"]
        if "@sha256:" not in image:
            repository, _, tag = image.rpartition(":")
            if not repository or "/" in tag or tag in ("", "latest"):
                yield f"{name}: image {image} is not pinned to a release tag"
        if container.get("imagePullPolicy") != "IfNotPresent":
            yield f"{name}: image {image} is pulled {container.get('imagePullPolicy')}, not IfNotPresent"


def problems(documents, podman):
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    services = {s["metadata"]["name"] for s in by_kind.get("Service", [])}
    deployments = by_kind.get("Deployment", [])

    tomls = {}
    seen = set()
    for name, config_map in config_maps.items():
        for key, text in (config_map.get("data") or {}).items():
            if key.endswith(".toml"):
                seen.add(key)
                try:
                    tomls[key] = tomllib.loads(text)
                except tomllib.TOMLDecodeError as error:
                    yield f"ConfigMap {name}: {key} is not valid TOML: {error}"
    for plane in ("control-plane.toml", "data-plane.toml"):
        if plane not in seen:
            yield f"no ConfigMap holds {plane}"

    node = tomls.get("data-plane.toml", {})
    for endpoint in node.get("control_plane", {}).get("endpoints", []):
        host = urlsplit(endpoint).hostname
        # kube play runs no Services: there the names come from host aliases.
        if host not in services and not podman:
            yield f"data-plane.toml dials {endpoint}, but the render has no Service {host}"

    for deployment in deployments:
        name = deployment["metadata"]["name"]
        yield from image_problems(deployment)
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            config_map = (volume.get("configMap") or {}).get("name")
            if config_map and config_map not in config_maps:
                yield f"{name}: mounts ConfigMap {config_map}, which the render does not hold"

    yield from rollout_problems(config_maps, deployments)

    control_plane = [d for d in deployments if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "control-plane"]
    if tomls.get("control-plane.toml", {}).get("store", {}).get("backend") == "memory":
        for deployment in control_plane:
            if deployment["spec"].get("replicas") != 1:
                yield "memory store: the control plane must run exactly one replica"
            if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
                yield "memory store: the control plane must be recreated, not rolled, on updates"

    if podman:
        for kind in sorted(set(by_kind) - PODMAN_KINDS):
            yield f"podman: the render holds {kind}, which podman kube play does not run"
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            if deployment["spec"].get("replicas") != 1:
                yield f"podman: {name} must run one replica"
            for container in containers(deployment):
                if not container["image"].startswith("localhost/"):
                    yield f"podman: {name} runs {container['image']}, not a localhost/ image"


def rollout_problems(config_maps, deployments):
    """What an edit of each plane's ConfigMap rolls (see the module's docstring)."""
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations") or {}
        for volume in template["spec"].get("volumes", []):
            mounted = (volume.get("configMap") or {}).get("name")
            data = (config_maps.get(mounted) or {}).get("data") or {}
            hashed = HASH_SUFFIX.search(mounted or "") is not None
            if "control-plane.toml" in data and hashed:
                yield (
                    f"{name}: ConfigMap {mounted} holds control-plane.toml under a content-hash "
                    "name, so a virtual-proxy edit rolls the pods (disableNameSuffixHash)"
                )
            if "data-plane.toml" in data and not hashed and "checksum/config" not in annotations:
                yield (
                    f"{name}: ConfigMap {mounted} holds data-plane.toml, but an edit of it "
                    "rolls no node (no content-hash name, no checksum/config annotation)"
                )


def certificate_for(plane, table):
    """The dev-ca.sh certificate that fits a cert_file in this table of this plane's file."""
    if table[:1] == ("tls",):
        return plane  # the gRPC server's (control plane) or the public one (data plane)
    if table[:1] == ("control_plane",):
        return "node"
    return "admin"  # any client certificate: Redis mutual TLS, upstreams


def fixtures(config, plane, ca, root, table=()):
    """Writes, under root, a file for every mounted path the configuration names."""
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        here = table + (key,)
        if isinstance(value, dict) or (
            isinstance(value, list) and not all(isinstance(v, str) for v in value)
        ):
            fixtures(value, plane, ca, root, here)
            continue
        paths = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for path in paths:
            if not path.startswith(MOUNTED):
                continue
            target = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            name = str(key)
            if name.endswith("ca_file"):
                shutil.copy(os.path.join(ca, "ca.pem"), target)
            elif name.endswith("cert_file"):
                shutil.copy(os.path.join(ca, certificate_for(plane, table) + ".pem"), target)
            elif name.endswith("key_file"):
                shutil.copy(os.path.join(ca, certificate_for(plane, table) + "-key.pem"), target)
            else:  # passwords, client secrets, tokens
                with open(target, "w", encoding="utf-8") as file:
                    file.write(secrets.token_hex(24))


def check_config_problems(documents, binaries):
    with tempfile.TemporaryDirectory() as work:
        ca = os.path.join(work, "ca")
        subprocess.run(["bash", DEV_CA, ca], check=True, capture_output=True)
        for document in documents:
            if document["kind"] != "ConfigMap":
                continue
            for key, text in (document.get("data") or {}).items():
                plane = key.removesuffix(".toml")
                if plane not in ("control-plane", "data-plane"):
                    continue
                root = os.path.join(work, plane)
                try:
                    fixtures(tomllib.loads(text), plane, ca, root)
                except tomllib.TOMLDecodeError:
                    continue  # reported above
                path = os.path.join(work, key)
                with open(path, "w", encoding="utf-8") as file:
                    file.write(text.replace(MOUNTED, os.path.join(root, MOUNTED.lstrip("/"))))
                result = subprocess.run(
                    [os.path.join(binaries, plane), "--config", path, "--check-config"],
                    capture_output=True, text=True,
                )
                if result.returncode != 0:
                    yield f"{plane} --check-config refuses {key}: {(result.stderr or result.stdout).strip()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("render")
    parser.add_argument("--podman", action="store_true", help="the render is for podman kube play")
    parser.add_argument("--binaries", help="directory of the built control-plane and data-plane")
    args = parser.parse_args()
    with open(args.render, encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d]
    found = list(problems(documents, args.podman))
    if args.binaries:
        found += check_config_problems(documents, args.binaries)
    for problem in found:
        print(f"{args.render}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
