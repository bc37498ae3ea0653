#!/usr/bin/env python3
"""`helm lint` and `helm template` for machines without the helm binary, through the PyPI
package helm-python-sdk (Helm's own Go library; offline).

    helm.py lint CHART [-f VALUES]... [--set KEY=VALUE]... [--namespace NS]
    helm.py template CHART [-f VALUES]... [--set KEY=VALUE]... [--name RELEASE]
                           [--namespace NS] [--notes FILE]

`template` prints the manifests as `helm template` does (one `# Source:` document each, in
Helm's install order) and writes the rendered NOTES.txt to --notes. Both exit 1 with the
chart's message on a failure (a lint warning counts as one)."""

import argparse
import re
import sys

import helm_python as helm

# Helm's install order (pkg/release/util/kind_sorter.go), so that the output reads like
# `helm template`'s: namespaces and policies first, workloads after what they mount.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


def merge(base, override):
    """Helm's coalescing of two values maps: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def values_of(args):
    values = {}
    for path in args.values:
        with open(path, encoding="utf-8") as file:
            values = merge(values, helm.values_from_yaml(file.read()) or {})
    for expression in args.set:
        values = merge(values, helm.parse_set_string(expression))
    return values


def lint(args):
    report = helm.lint(args.chart, values_of(args), strict=True, namespace=args.namespace)
    problems = [
        f"{m['path']}: {m['error']}"
        for m in report.get("messages", [])
        if m.get("severity", 0) >= 2
    ] + list(report.get("errors") or [])
    for problem in dict.fromkeys(problems):  # Helm reports some twice
        print(f"helm lint: {problem.strip()}", file=sys.stderr)
    return 1 if problems else 0


def kind_rank(document):
    match = re.search(r"^kind:\s*(\S+)", document, re.MULTILINE)
    kind = match.group(1) if match else ""
    name = re.search(r"^  name:\s*(\S+)", document, re.MULTILINE)
    rank = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
    return (rank, kind, name.group(1) if name else "")


def template(args):
    with helm.Chart.load(args.chart) as chart:
        rendered = chart.render(
            values_of(args), name=args.name, namespace=args.namespace, is_install=True
        )
    documents = []
    notes = ""
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            notes = text
            continue
        for document in re.split(r"^---[ \t]*$", text, flags=re.MULTILINE):
            body = document.strip("\n")
            if any(not line.lstrip().startswith("#") for line in body.splitlines()):
                documents.append((kind_rank(body), source, body))
    documents.sort(key=lambda item: item[0])
    for _, source, body in documents:
        print(f"---\n# Source: {source}\n{body}")
    if args.notes:
        with open(args.notes, "w", encoding="utf-8") as file:
            file.write(notes)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["lint", "template"])
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--name", default="gatehouse")
    parser.add_argument("--namespace", default="gatehouse")
    parser.add_argument("--notes")
    args = parser.parse_args()
    try:
        return lint(args) if args.command == "lint" else template(args)
    except helm.HelmError as error:
        print(f"helm {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
