#!/usr/bin/env python3
"""The deployment test: Gatehouse as users deploy it, in containers.

Builds the Debian base image from the apt mirror (deploy/image/base.sh), the Gatehouse image
from the binaries the test suite already built (deploy/image/build.sh --profile debug), runs
`--check-config` inside the image on every overlay's rendered ConfigMaps, then runs the dev
and ha overlays' own Deployments with `podman kube play` and, through the containerised
nodes: the manifests' probes answer, a ticket login works, a logout on one node is refused
by another, and a SIGTERM drains a node without failing an in-flight request.

    tests/deploy/run.py [--skip-build] [--helm-renders DIR]

Needs root, podman, runc, mmdebstrap, kubectl (for kustomize) and python3-yaml. Containers
live on a network this test creates (10.x.y.0/24, a bridge in the machine), named
gatehouse-deploy-test-*; everything is removed at the end, pass or fail.
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import yaml

import kube_play

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/gatehouse:deploy-test"
REDIS_IMAGE = "localhost/gatehouse-deploy-test/redis:7"
PREFIX = "gatehouse-deploy-test"
UPSTREAM_PORT = 4747
REDIS_PASSWORD = "deploy-test-" + base64.b32encode(os.urandom(10)).decode().lower()


class Failure(Exception):
    """A check that did not hold; the message says which and what was seen."""


def log(message):
    print(f"deploy test: {message}", flush=True)


def run(command, *, check=True, capture=True, timeout=300, input_text=None):
    result = subprocess.run(
        command,
        check=False,
        capture_output=capture,
        text=True,
        timeout=timeout,
        input=input_text,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "") + (result.stdout or "") if capture else ""
        raise Failure(f"`{' '.join(command)}` exited {result.returncode}: {detail.strip()[-2000:]}")
    return result


class Steps:
    """Times each step, so the note and OPERATIONS.md can say what each costs."""

    def __init__(self):
        self.durations = []

    def __call__(self, name):
        steps = self

        class Step:
            def __enter__(self):
                self.start = time.monotonic()
                log(f"{name} ...")

            def __exit__(self, kind, value, traceback):
                elapsed = time.monotonic() - self.start
                steps.durations.append((name, elapsed))
                if kind is None:
                    log(f"{name}: {elapsed:.1f} s")

        return Step()

    def summary(self):
        return ", ".join(f"{name} {elapsed:.0f} s" for name, elapsed in self.durations)


# ---------------------------------------------------------------------------------------------
# The upstream: on the network's gateway address, answers with the identity it received.


class EchoUpstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Requests being answered now, so the drain check knows when they are all in flight.
    in_flight = 0
    in_flight_lock = threading.Lock()

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        delay_ms = int(query.get("delay_ms", ["0"])[0])
        if delay_ms:
            with EchoUpstream.in_flight_lock:
                EchoUpstream.in_flight += 1
            try:
                time.sleep(delay_ms / 1000)
            finally:
                with EchoUpstream.in_flight_lock:
                    EchoUpstream.in_flight -= 1
        body = json.dumps(
            {
                "path": self.path,
                "user": self.headers.get("X-Qlik-User"),
                "cookie": self.headers.get("Cookie"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_upstream(address):
    server = http.server.ThreadingHTTPServer((address, UPSTREAM_PORT), EchoUpstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------
# HTTPS to a node by address, with the name its certificate carries.


class Node:
    """A data-plane pod reached at its address; TLS is checked against the dev CA."""

    def __init__(self, name, address, ca_file, host):
        self.name = name
        self.address = address
        self.host = host
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def request(self, method, path, headers=None, timeout=30):
        connection = http.client.HTTPSConnection(
            self.host, 8443, context=self.context, timeout=timeout
        )
        raw = socket.create_connection((self.address, 8443), timeout=timeout)
        connection.sock = self.context.wrap_socket(raw, server_hostname="localhost")
        try:
            connection.request(method, path, headers={"Host": self.host, **(headers or {})})
            response = connection.getresponse()
            body = response.read()
            return response.status, response.headers, body
        finally:
            connection.close()

    def whoami(self, cookie):
        status, _, body = self.request("GET", "/qps/user", {"Cookie": cookie})
        if status != 200:
            raise Failure(f"{self.name}: GET /qps/user answered {status}: {body[:200]!r}")
        return json.loads(body)


def http_get(address, port, path, timeout=3):
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def grpc_health(address, port, service="", timeout=3):
    """grpc.health.v1.Health/Check of `service` ("": the server): True when SERVING."""
    import grpc

    with grpc.insecure_channel(f"{address}:{port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda message: message,
            response_deserializer=lambda message: message,
        )
        try:
            # HealthCheckRequest { service = 1 }: field 1, length-delimited.
            name = service.encode()
            request = b"\x0a" + bytes([len(name)]) + name if name else b""
            answer = check(request, timeout=timeout)
        except grpc.RpcError:
            return False
        # HealthCheckResponse { status = 1 (SERVING) }: field 1, varint 1.
        return answer == b"\x08\x01"


# ---------------------------------------------------------------------------------------------
# podman


def podman(*arguments, **options):
    return run(["podman", *arguments], **options)


def remove_leftovers():
    """What a run killed half-way left: its pods (names carry PREFIX) and idle networks."""
    pods = [name for name in podman("pod", "ps", "--format", "{{.Name}}").stdout.split() if name.startswith(PREFIX)]
    if pods:
        log(f"removing pods left by an earlier run: {', '.join(pods)}")
        podman("pod", "rm", "-f", "-t", "0", *pods, check=False)
    for name in podman("network", "ls", "--format", "{{.Name}}").stdout.split():
        if name.startswith(PREFIX):
            # Without -f: a network still in use (another run right now) stays.
            podman("network", "rm", name, check=False)


def pick_network():
    for _ in range(20):
        third = random.randint(100, 250)
        subnet = f"10.{random.randint(100, 250)}.{third}.0/24"
        name = f"{PREFIX}-{third}"
        created = podman("network", "create", "--subnet", subnet, name, check=False)
        if created.returncode == 0:
            return name, subnet.rsplit(".", 1)[0]
    raise Failure("no free subnet for the test network")


def container_of(pod, container):
    return f"{pod}-{container}"


def pod_names(deployment):
    """kube play names a Deployment's pods <name>-pod, or <name>-pod-<i> for replicas."""
    listed = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    pattern = re.compile(rf"^{re.escape(deployment)}-pod(-\d+)?$")
    return sorted(name for name in listed if pattern.match(name))


def pod_address(pod, network):
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
    networks = json.loads(
        podman("inspect", infra, "--format", "{{json .NetworkSettings.Networks}}").stdout
    )
    return networks[network]["IPAddress"]


def wait_until(description, predicate, timeout=90, interval=0.5):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, http.client.HTTPException, Failure) as error:
            last_error = error
        time.sleep(interval)
    raise Failure(f"timed out after {timeout} s waiting for {description} (last error: {last_error})")


def logs_of(pods, tail=40):
    text = []
    for pod in pods:
        for name in podman(
            "ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}"
        ).stdout.split():
            if name.endswith("-infra"):
                continue
            output = podman("logs", "--tail", str(tail), name, check=False)
            text.append(f"--- {name}\n{output.stdout}{output.stderr}")
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------
# The scenario


class Deployment:
    """One overlay (or Helm render) run with kube play on the test network."""

    def __init__(self, label, rendered, network, base_address, certificates, workdir):
        self.label = label
        self.rendered = rendered
        self.network = network
        self.base_address = base_address
        self.certificates = certificates
        self.workdir = workdir
        self.gateway = f"{base_address}.1"
        self.addresses = {
            "redis": f"{base_address}.10",
            "redis-sentinel": f"{base_address}.12",
            "control-plane": f"{base_address}.11",
            "data-plane": f"{base_address}.20",
        }
        self.pods = []
        self.names = {}

    def play(self, extra_documents, replicas):
        aliases = {
            "redis": self.addresses["redis"],
            "redis-sentinel": self.addresses["redis-sentinel"],
            "control-plane": self.addresses["control-plane"],
            "engine": self.gateway,
        }
        plays = kube_play.adapt(
            self.rendered + extra_documents,
            images={"gatehouse": IMAGE, "redis": REDIS_IMAGE},
            host_aliases=aliases,
            replicas=replicas,
            secret_directories={
                path.name: path for path in self.certificates.iterdir() if path.is_dir()
            },
            workdir=self.workdir / self.label,
            prefix=PREFIX,
        )
        self.names = plays.names
        log(f"{self.label}: not run by kube play: {', '.join(plays.dropped)}")
        for deployment in ["redis", "redis-sentinel", "control-plane", "data-plane"]:
            if deployment not in plays.deployments:
                continue
            play_file = self.workdir / f"{self.label}-{deployment}.yaml"
            play_file.write_text(yaml.safe_dump_all(plays.deployments[deployment]))
            played = podman(
                "kube", "play", "--network", self.network,
                "--ip", self.addresses[deployment], str(play_file),
                check=False,
            )
            # Recorded before checking, so that a pod a failed play left is removed too.
            self.pods.extend(pod_names(plays.names[deployment]))
            if played.returncode != 0:
                raise Failure(f"kube play of {deployment} exited {played.returncode}: {played.stderr.strip()[-2000:]}")
            if deployment == "redis":
                wait_until("redis", lambda: self.redis_answers(), timeout=30)
        return plays

    def redis_answers(self):
        with socket.create_connection((self.addresses["redis"], 6379), timeout=2):
            return True

    def remove(self):
        if self.pods:
            podman("pod", "rm", "-f", "-t", "0", *self.pods, check=False)
        self.pods = []

    def wait_ready(self, plays):
        """Every probe of every container, as the manifests declare it, until it answers."""
        for role, probes in plays.probes.items():
            kinds = {kind for kind, _ in probes}
            if role in ("control-plane", "data-plane") and not {"readinessProbe", "livenessProbe"} <= kinds:
                raise Failure(f"{self.label}: the {role} Deployment lacks a readiness or liveness probe ({sorted(kinds)})")
            for pod in pod_names(plays.names[role]):
                address = pod_address(pod, self.network)
                for probe_kind, probe in probes:
                    wait_until(
                        f"{pod} {probe_kind} {probe}",
                        lambda address=address, probe=probe: probe_answers(address, probe),
                    )
                log(f"{self.label}: {pod} ({address}) passes its probes")

    def nodes(self, host):
        names = pod_names(self.names["data-plane"])
        return [
            Node(name, pod_address(name, self.network), self.certificates / "ca.pem", host)
            for name in names
        ]

    def control_plane_replicas(self):
        return [pod_address(pod, self.network) for pod in pod_names(self.names["control-plane"])]

    def gatehousectl(self, replica_address, *arguments):
        """A call as the admin (mTLS) to one control-plane replica, by address."""
        files = self.certificates
        return run([
            str(REPO / "target" / "debug" / "gatehousectl"),
            "--endpoint", f"https://{replica_address}:4243", "--tls-server-name", "control-plane",
            "--ca", str(files / "ca.pem"), "--cert", str(files / "admin.pem"), "--key", str(files / "admin-key.pem"),
            *arguments,
        ]).stdout

    def request_ticket(self, user, replica_address=None):
        output = self.gatehousectl(
            replica_address or self.addresses["control-plane"],
            "request-ticket", "--directory", "DEPLOY", "--user", user, "--attribute", "group=testers",
        )
        match = re.search(r"[A-Za-z0-9_-]{20,}", output)
        if not match:
            raise Failure(f"no ticket in gatehousectl's output: {output!r}")
        return match.group(0)


def probe_answers(address, probe):
    if "httpGet" in probe:
        status, _ = http_get(address, probe["httpGet"]["port"], probe["httpGet"]["path"])
        return status == 200
    if "grpc" in probe:
        return grpc_health(address, probe["grpc"]["port"], probe["grpc"].get("service", ""))
    if "tcpSocket" in probe:
        with socket.create_connection((address, probe["tcpSocket"]["port"]), timeout=2):
            return True
    raise Failure(f"a probe this test does not know: {probe}")


def session_cookie(headers):
    for value in headers.get_all("Set-Cookie") or []:
        name_value = value.split(";", 1)[0]
        if name_value.startswith("X-Qlik-Session") and "=" in name_value and not name_value.endswith("="):
            return name_value
    return None


def check_login_logout(deployment, host, origin):
    """A ticket login on one node, the session seen by the others, a logout refused by another."""
    nodes = deployment.nodes(host)
    if len(nodes) < 2:
        raise Failure(f"{deployment.label}: expected at least two data-plane pods, found {len(nodes)}")
    first, second = nodes[0], nodes[-1]
    # The nodes follow the replica behind the alias control-plane; the ticket comes from
    # another replica where there are several, so it crosses the shared store.
    replicas = deployment.control_plane_replicas()
    ticket = deployment.request_ticket("alice", replicas[-1])
    status, headers, body = first.request("GET", f"/hub/?qlikTicket={ticket}")
    cookie = session_cookie(headers)
    if status not in (302, 303) or cookie is None:
        raise Failure(f"{deployment.label}: ticket redemption on {first.name} answered {status} without a session cookie: {body[:200]!r}")
    status, _, body = first.request("GET", "/hub/", {"Cookie": cookie})
    seen = json.loads(body) if status == 200 else {}
    if status != 200 or seen.get("user") is None or "alice" not in seen["user"]:
        raise Failure(f"{deployment.label}: the upstream did not see alice through {first.name}: {status} {body[:200]!r}")
    if seen.get("cookie") and "X-Qlik-Session" in seen["cookie"]:
        raise Failure(f"{deployment.label}: the session cookie reached the upstream")
    for node in nodes:
        identity = node.whoami(cookie)
        if identity.get("userId") != "alice":
            raise Failure(f"{deployment.label}: {node.name} does not know alice's session: {identity}")
    log(f"{deployment.label}: ticket login on {first.name}, the session valid on {len(nodes)} nodes")

    status, _, body = first.request("DELETE", "/qps/user", {"Cookie": cookie, "Origin": origin})
    if status not in (200, 204):
        raise Failure(f"{deployment.label}: logout on {first.name} answered {status}: {body[:200]!r}")
    # The revocation reaches the other nodes through the control plane's Watch stream.
    wait_until(
        f"{second.name} to refuse the ended session",
        lambda: second.whoami(cookie).get("userId") != "alice",
        timeout=10,
        interval=0.05,
    )
    log(f"{deployment.label}: logout on {first.name}, refused by {second.name}")

    if len(replicas) > 1:
        # A logout through the admin API of a replica no node follows reaches every node
        # through the store's revocation stream.
        ticket = deployment.request_ticket("carol", replicas[0])
        status, headers, _ = second.request("GET", f"/hub/?qlikTicket={ticket}")
        cookie = session_cookie(headers)
        if cookie is None or first.whoami(cookie).get("userId") != "carol":
            raise Failure(f"{deployment.label}: carol's login through {second.name} failed ({status})")
        deployment.gatehousectl(replicas[1], "delete-user-sessions", "--directory", "DEPLOY", "--user", "carol")
        for node in nodes:
            wait_until(
                f"{node.name} to refuse carol's session ended at another replica",
                lambda node=node: node.whoami(cookie).get("userId") != "carol",
                timeout=10,
                interval=0.05,
            )
        log(f"{deployment.label}: DeleteUserSessions at replica {replicas[1]}, refused by all {len(nodes)} nodes")


def check_drain(deployment, host):
    """SIGTERM to a node with requests in flight: every one of them completes with 200."""
    nodes = deployment.nodes(host)
    node = nodes[-1]
    ticket = deployment.request_ticket("bob")
    status, headers, _ = node.request("GET", f"/hub/?qlikTicket={ticket}")
    cookie = session_cookie(headers)
    if cookie is None:
        raise Failure(f"{deployment.label}: no session for the drain check ({status})")

    outcomes = []

    def slow_request(index):
        try:
            status, _, body = node.request("GET", f"/hub/slow?delay_ms=2500&n={index}", {"Cookie": cookie})
            outcomes.append((status, body[:120]))
        except (OSError, http.client.HTTPException) as error:
            outcomes.append((None, repr(error)))

    threads = [threading.Thread(target=slow_request, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    wait_until(
        "every slow request to reach the upstream",
        lambda: EchoUpstream.in_flight >= len(threads),
        timeout=10,
        interval=0.02,
    )
    container = container_of(node.name, "data-plane")
    started = time.monotonic()
    # What the kubelet does: SIGTERM, then SIGKILL after terminationGracePeriodSeconds.
    podman("stop", "-t", "35", container, timeout=60)
    stopped_after = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=30)
    failed = [outcome for outcome in outcomes if outcome[0] != 200]
    if len(outcomes) != len(threads) or failed:
        raise Failure(f"{deployment.label}: in-flight requests failed during the drain: {failed or outcomes}")
    exit_code = podman("inspect", container, "--format", "{{.State.ExitCode}}").stdout.strip()
    if exit_code != "0":
        raise Failure(f"{deployment.label}: the drained node exited {exit_code}, not 0")
    log(f"{deployment.label}: SIGTERM on {node.name} with {len(threads)} requests in flight: all 200, exited 0 after {stopped_after:.1f} s")


# ---------------------------------------------------------------------------------------------
# --check-config on every overlay's ConfigMaps


def kustomize(overlay):
    output = run(["kubectl", "kustomize", str(overlay)]).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def check_configs(label, documents, certificates, workdir):
    configs = workdir / f"config-{label}"
    checked = 0
    for document in documents:
        if document.get("kind") != "ConfigMap":
            continue
        for key, text in (document.get("data") or {}).items():
            binary = {"control-plane.toml": "control-plane", "data-plane.toml": "data-plane"}.get(key)
            if binary is None:
                continue
            configs.mkdir(parents=True, exist_ok=True)
            (configs / key).write_text(text)
            mounts = [
                "-v", f"{configs}:/etc/gatehouse/config:ro",
                "-v", f"{certificates / 'control-plane-tls'}:/etc/gatehouse/tls:ro" if binary == "control-plane"
                else f"{certificates / 'data-plane-tls'}:/etc/gatehouse/tls:ro",
                "-v", f"{certificates / 'control-plane-redis'}:/etc/gatehouse/redis:ro",
                "-v", f"{certificates / 'data-plane-node-certificate'}:/etc/gatehouse/control-plane:ro",
            ]
            result = podman(
                "run", "--rm", "--read-only", *mounts,
                "--entrypoint", f"/usr/local/bin/{binary}", IMAGE,
                "--config", f"/etc/gatehouse/config/{key}", "--check-config",
                check=False,
            )
            if result.returncode != 0:
                raise Failure(f"{label}: {key} fails --check-config in the image: {(result.stderr + result.stdout).strip()}")
            checked += 1
    if checked == 0:
        raise Failure(f"{label}: no configuration found in its ConfigMaps")
    log(f"{label}: {checked} configuration files pass --check-config inside the image")


def check_image():
    """What the Dockerfile promises, read from the built image."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout)
    if config.get("User") != "65532:65532":
        raise Failure(f"the image runs as {config.get('User')!r}, not 65532:65532")
    exposed = sorted(int(port.split("/")[0]) for port in (config.get("ExposedPorts") or {}))
    if exposed != [4243, 8443, 9901, 9902, 9903]:
        raise Failure(f"the image exposes {exposed}, not every port of both planes")
    log("the image runs as 65532:65532 and exposes 4243, 8443, 9901, 9902, 9903")


def secret_directories(certificates):
    """The Secrets' files laid out as Kubernetes mounts them, for --check-config."""
    layout = {
        "control-plane-tls": {"tls.crt": "control-plane.pem", "tls.key": "control-plane-key.pem", "ca.crt": "ca.pem"},
        "data-plane-tls": {"tls.crt": "data-plane.pem", "tls.key": "data-plane-key.pem"},
        "data-plane-node-certificate": {"tls.crt": "node.pem", "tls.key": "node-key.pem", "ca.crt": "ca.pem"},
        "control-plane-redis": {"ca.pem": "ca.pem", "password": "redis-password"},
        "redis-tls": {"tls.crt": "redis.pem", "tls.key": "redis-key.pem", "password": "redis-password"},
    }
    (certificates / "redis-password").write_text(REDIS_PASSWORD)
    # Owned by the user that reads them, owner-only, as the kubelet's fsGroup-less mounts of
    # a Secret are to the pod: the Gatehouse image's 65532, the Redis image's 999.
    owners = {"redis-tls": 999}
    for directory, entries in layout.items():
        owner = owners.get(directory, 65532)
        (certificates / directory).mkdir(mode=0o700, exist_ok=True)
        os.chown(certificates / directory, owner, owner)
        for name, source in entries.items():
            target = certificates / directory / name
            shutil.copyfile(certificates / source, target)
            target.chmod(0o600)
            os.chown(target, owner, owner)


# ---------------------------------------------------------------------------------------------


def documents_of(name):
    """Objects the test runs beside a render: redis-tls.yaml (the external Redis the ha
    overlay expects: TLS on 6379 with a password), redis-sentinel.yaml (a master and three
    sentinels, for the chart's Sentinel render)."""
    return list(yaml.safe_load_all((Path(__file__).parent / name).read_text()))


def build_images(steps):
    with steps("base image (mmdebstrap)"):
        run([str(REPO / "deploy/image/base.sh")], capture=False, timeout=600)
    with steps("Redis image (mmdebstrap)"):
        run(
            [
                str(REPO / "deploy/image/base.sh"), "--name", REDIS_IMAGE,
                "--include", "redis-server",
                "--change", 'ENTRYPOINT ["redis-server", "--protected-mode", "no"]',
                "--change", "CMD []",
                "--change", "WORKDIR /data",
            ],
            capture=False,
            timeout=600,
        )
    with steps("Gatehouse image (debug binaries)"):
        run(
            [str(REPO / "deploy/image/build.sh"), "--profile", "debug", "--no-cargo", "--tag", IMAGE],
            capture=False,
            timeout=600,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="reuse the images already built")
    parser.add_argument(
        "--helm-renders", type=Path,
        help="the Helm chart's podman renders (deploy/helm/check.sh --podman-renders DIR)",
    )
    options = parser.parse_args()

    os.environ.setdefault("CONTAINERS_CONF", str(Path(__file__).parent / "containers.conf"))
    steps = Steps()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    network = None
    upstream = None
    deployments = []
    # A SIGTERM (a CI timeout, Ctrl-C's cousin) still runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        remove_leftovers()
        if not options.skip_build:
            build_images(steps)
        check_image()
        certificates = workdir / "certificates"
        run([str(REPO / "deploy/dev-ca.sh"), str(certificates)])
        secret_directories(certificates)

        overlays = REPO / "deploy/kubernetes/overlays"
        rendered = {overlay.name: kustomize(overlay) for overlay in sorted(overlays.iterdir())}
        helm_renders = {}
        if options.helm_renders:
            for name in ("podman", "podman-sentinel"):
                path = options.helm_renders / f"{name}.yaml"
                if not path.exists():
                    raise Failure(f"no Helm render {path}")
                rendered[f"helm-{name}"] = [d for d in yaml.safe_load_all(path.read_text()) if d]
                helm_renders[name] = f"helm-{name}"
        with steps("--check-config in the image"):
            for label, documents in rendered.items():
                check_configs(label, documents, certificates, workdir)

        network, base_address = pick_network()

        def scenario(label, extra, replicas, host, origin, drain):
            nonlocal upstream
            deployment = Deployment(label, rendered[label], network, base_address, certificates, workdir)
            deployments.append(deployment)
            with steps(f"{label}: kube play to ready"):
                plays = deployment.play(extra, replicas)
                if upstream is None:
                    upstream = start_upstream(deployment.gateway)
                deployment.wait_ready(plays)
            with steps(f"{label}: login and logout"):
                check_login_logout(deployment, host, origin)
            if drain:
                with steps(f"{label}: SIGTERM drain"):
                    check_drain(deployment, host)
            deployment.remove()
            deployments.remove(deployment)

        # dev: its own Redis, one control plane, the data plane scaled to two (as its HPA may).
        scenario("dev", [], {"data-plane": 2}, "localhost:8443", "https://localhost:8443", drain=True)
        # ha: three control-plane replicas on an external Redis with TLS and a password, three
        # nodes (the HPA's minimum).
        scenario("ha", documents_of("redis-tls.yaml"), {}, "sense.example.com", "https://sense.example.com", drain=False)
        if helm_renders:
            # The chart on the memory store (one control plane), and on Sentinel with two
            # control-plane replicas.
            scenario(helm_renders["podman"], [], {"data-plane": 2}, "localhost:8443", "https://localhost:8443", drain=False)
            scenario(
                helm_renders["podman-sentinel"], documents_of("redis-sentinel.yaml"),
                {"control-plane": 2, "data-plane": 2}, "localhost:8443", "https://localhost:8443", drain=False,
            )
    except Failure as failure:
        pods = [pod for deployment in deployments for pod in deployment.pods]
        print(logs_of(pods), file=sys.stderr)
        log(f"FAILED: {failure}")
        return 1
    finally:
        for deployment in deployments:
            deployment.remove()
        if upstream is not None:
            upstream.shutdown()
        if network is not None:
            podman("network", "rm", "-f", network, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"passed in {time.monotonic() - started:.0f} s ({steps.summary()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
