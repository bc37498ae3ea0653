"""Adapts rendered Kubernetes objects to what `podman kube play` (4.3) runs, and no more.

What changes, and why (everything else runs as rendered: commands, args, env, security
contexts, resources, replicas unless overridden):
- kinds kube play does not run (Service, NetworkPolicy, PodDisruptionBudget, HPA, Ingress,
  Namespace, ServiceAccount) are set aside and reported;
- Deployments are renamed with a prefix (so their pods are known as the test's, and a run
  killed half-way is cleaned up by the next) and images point at the locally built ones,
  never pulled;
- Services become host aliases: kube play has no Service objects, so each pod gets the
  Service names as /etc/hosts entries for fixed pod addresses;
- Secret and ConfigMap volumes become directories holding their files, as the kubelet mounts
  them (kube play 4.3 mounts a Secret's values still base64-encoded, refuses a missing
  optional Secret, and may hand a replica an empty ConfigMap volume while another replica is
  filling it); a missing optional Secret is an empty directory, as in Kubernetes;
- container ports are dropped (kube play 4.3 publishes every containerPort on all of the
  machine's addresses, so two replicas collide) and probes are lifted out (kube play would run
  them inside the container with curl, which the image does not have): the test runs the
  probes itself, from outside, as the kubelet does; `probes` lists them.
"""

import copy

RUN_KINDS = {"Deployment", "ConfigMap"}  # ConfigMaps become directories
PROBE_KINDS = ("readinessProbe", "livenessProbe", "startupProbe")


class Plays:
    """Per role (the pods' app.kubernetes.io/name: redis, control-plane, data-plane): the
    Deployment's own name (the overlays' bare names, the chart's release-named ones), what to
    play, and its probes."""

    def __init__(self):
        self.names = {}
        self.deployments = {}
        self.probes = {}
        self.dropped = []


def image_key(image):
    """`registry.example.com/gatehouse:0.1.0` -> `gatehouse`."""
    return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def adapt(documents, images, host_aliases, replicas, secret_directories, workdir, prefix):
    plays = Plays()
    config_map_directories = {}
    for document in documents:
        if document.get("kind") == "ConfigMap":
            directory = workdir / "configmaps" / document["metadata"]["name"]
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
            for key, text in (document.get("data") or {}).items():
                (directory / key).write_text(text)
                (directory / key).chmod(0o644)
            config_map_directories[document["metadata"]["name"]] = directory
    for document in documents:
        kind = document.get("kind")
        name = document.get("metadata", {}).get("name")
        if kind not in RUN_KINDS:
            plays.dropped.append(f"{kind}/{name}")
            continue
        if kind != "Deployment":
            continue
        deployment = copy.deepcopy(document)
        deployment["metadata"].pop("namespace", None)
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        role = labels.get("app.kubernetes.io/name", name)
        deployment["metadata"]["name"] = f"{prefix}-{name}"
        plays.names[role] = deployment["metadata"]["name"]
        if role in replicas:
            deployment["spec"]["replicas"] = replicas[role]
        pod = deployment["spec"]["template"]["spec"]
        pod["hostAliases"] = [
            {"ip": address, "hostnames": [hostname]} for hostname, address in host_aliases.items()
        ]
        for container in pod.get("containers", []):
            key = image_key(container["image"])
            if key not in images:
                raise ValueError(f"{name}: no local image for {container['image']}")
            container["image"] = images[key]
            container["imagePullPolicy"] = "Never"
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                config_map = volume.pop("configMap")
                volume["hostPath"] = {"path": str(config_map_directories[config_map["name"]]), "type": "Directory"}
                continue
            if "secret" not in volume:
                continue
            secret = volume.pop("secret")
            directory = secret_directories.get(secret["secretName"])
            if directory is not None:
                volume["hostPath"] = {"path": str(directory), "type": "Directory"}
            elif secret.get("optional"):
                volume["emptyDir"] = {}
            else:
                raise ValueError(f"{name}: the Secret {secret['secretName']} is not provided")
        plays.probes[role] = probes([document])
        for container in pod.get("containers", []):
            container.pop("ports", None)
            for kind in PROBE_KINDS:
                container.pop(kind, None)
        plays.deployments[role] = [deployment]
    return plays


def probes(documents):
    """Every readiness and liveness probe of a Deployment, with named ports resolved."""
    found = []
    for document in documents:
        if document.get("kind") != "Deployment":
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
            for kind in PROBE_KINDS:
                probe = copy.deepcopy(container.get(kind))
                if not probe:
                    continue
                for action in ("httpGet", "grpc", "tcpSocket"):
                    if action in probe and isinstance(probe[action].get("port"), str):
                        probe[action]["port"] = ports[probe[action]["port"]]
                found.append((kind, probe))
    return found
