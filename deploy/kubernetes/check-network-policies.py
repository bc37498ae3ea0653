#!/usr/bin/env python3
"""Checks rendered manifests (stdin, as `kubectl kustomize` prints them): each plane has a
NetworkPolicy, and its admin ports admit only selected sources, never everyone. Exit 1 with
one line per problem otherwise. Run by test.sh on every overlay."""

import sys

import yaml

# Ports that must not be open to every pod: the admin port (metrics, /log-level) and the
# control plane's plaintext health port.
ADMIN_PORTS = {
    "control-plane": {9902, 9903},
    "data-plane": {9901},
}
# The admin port a metrics scraper must be able to reach.
SCRAPED_PORT = {"control-plane": 9902, "data-plane": 9901}


def selects(policy, plane):
    selector = policy.get("spec", {}).get("podSelector") or {}
    labels = selector.get("matchLabels") or {}
    if not labels and not selector.get("matchExpressions"):
        return True  # an empty podSelector selects every pod of the namespace
    return labels.get("app.kubernetes.io/name") == plane


def rule_ports(rule):
    """The port numbers a rule admits, or None for every port."""
    ports = rule.get("ports")
    if not ports:
        return None
    return {port.get("port") for port in ports}


def open_peer(peer):
    """Whether one `from` entry admits (nearly) anyone."""
    if not peer:
        return True
    block = peer.get("ipBlock")
    if block is not None:
        return block.get("cidr") in ("0.0.0.0/0", "::/0")
    for key in ("namespaceSelector", "podSelector"):
        if key in peer:
            selector = peer[key] or {}
            if not selector.get("matchLabels") and not selector.get("matchExpressions"):
                # {} selects every namespace (or every pod of this one) ...
                if key == "namespaceSelector" or "namespaceSelector" not in peer:
                    return True
    return False


def problems(documents):
    policies = [d for d in documents if d and d.get("kind") == "NetworkPolicy"]
    for plane, admin_ports in ADMIN_PORTS.items():
        mine = [
            p
            for p in policies
            if selects(p, plane) and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
        ]
        if not mine:
            yield f"{plane}: no NetworkPolicy selects its pods: every source reaches its admin ports"
            continue
        scraped = False
        for policy in mine:
            name = policy["metadata"]["name"]
            for rule in policy["spec"].get("ingress") or []:
                ports = rule_ports(rule)
                admitted = admin_ports if ports is None else admin_ports & ports
                if not admitted:
                    continue
                peers = rule.get("from") or []
                if not peers or any(open_peer(peer) for peer in peers):
                    yield f"{plane}: policy {name} admits every source to port(s) {sorted(admitted)}"
                if SCRAPED_PORT[plane] in admitted and any(
                    (peer.get("namespaceSelector") or {}).get("matchLabels") for peer in peers
                ):
                    scraped = True
        if not scraped:
            yield f"{plane}: no policy admits the metrics scraper's namespace to port {SCRAPED_PORT[plane]}"


def main():
    found = list(problems(list(yaml.safe_load_all(sys.stdin))))
    for problem in found:
        print(f"network policies: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
