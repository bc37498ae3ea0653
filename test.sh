#!/usr/bin/env bash
# The whole test suite: the manifests and the Helm chart, formatting, lints, unit tests, the
# store conformance suite against a real redis-server and the memory store, the end-to-end
# tests, the deployment test in containers, and the benchmark harness's smoke run.
# Tests start their own servers (redis-server standalone, a Sentinel group, a Cluster;
# nginx; an OpenID provider; containers) on ephemeral ports or a network of their own;
# tests/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")"

# What the tests need, installed when missing (Debian packages, pinned PyPI and npm packages).
tests/setup.sh
python_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$python_scripts:$PATH"

# The Kubernetes manifests: every overlay renders, passes schema validation, and has a
# NetworkPolicy for each plane that admits only selected sources to its admin ports; the
# optional component renders and validates too. kubectl (for kustomize) is not a Debian
# package: CI machines have it; elsewhere the step runs when it is there.
if command -v kubectl >/dev/null 2>&1 && command -v kubernetes-validate >/dev/null 2>&1; then
    rendered=$(mktemp)
    for overlay in deploy/kubernetes/overlays/*/; do
        kubectl kustomize "$overlay" > "$rendered"
        kubernetes-validate --strict --quiet "$rendered"
        python3 deploy/kubernetes/check-network-policies.py < "$rendered"
        # What the schemas cannot see (the chart's renders pass the same): images pinned and
        # pulled IfNotPresent, the ConfigMaps' TOML parses, the nodes dial a Service here.
        python3 deploy/helm/check_render.py "$rendered"
        echo "manifests valid: $overlay"
    done
    for component in deploy/kubernetes/components/*/; do
        component=$(basename "$component")
        with_component=$(mktemp -d deploy/kubernetes/.check-XXXXXX)
        printf 'resources:\n  - ../base\ncomponents:\n  - ../components/%s\n' "$component" \
            > "$with_component/kustomization.yaml"
        kubectl kustomize "$with_component" > "$rendered"
        rm -rf "$with_component"
        kubernetes-validate --strict --quiet "$rendered"
        python3 deploy/kubernetes/check-network-policies.py < "$rendered"
        echo "manifests valid: base with components/$component"
    done
    rm -f "$rendered"
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs kubectl and kubernetes-validate to check the manifests" >&2
    exit 1
else
    echo "test.sh: kubectl or kubernetes-validate missing; manifest validation skipped" >&2
fi

# The shape the code keeps: no file compiled into two crates with #[path] (fuzz/ is its own
# workspace), and a README a newcomer reads to the end.
if grep -rn --include='*.rs' --exclude-dir=target --exclude-dir=fuzz '#\[path' .; then
    echo "test.sh: #[path] shares a file between crates; use a workspace crate instead" >&2
    exit 1
fi
readme_chars=$(wc -m < README.md)
if [ "$readme_chars" -gt 12000 ]; then
    echo "test.sh: README.md is $readme_chars characters; at most 12000 (move detail to the other documents)" >&2
    exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The proxy's requests again with the node's own HTTP/1 engine off, on hyper's path alone:
# both paths must pass every browser-facing test (the whole suite passes both ways).
GATEHOUSE_TEST_FAST_HTTP1=off cargo test -p gatehouse-tests --locked -- browser::

# The Helm chart: linted and rendered offline (helm-python-sdk) for every value set, each
# render schema-validated and policy-checked, its configuration files accepted by the
# binaries just built (--check-config); the podman value sets' renders are kept for the
# deployment test below.
helm_renders=$(mktemp -d)
trap 'rm -rf "$helm_renders"' EXIT
deploy/helm/check.sh --podman-renders "$helm_renders" --binaries target/debug

# The deployment test: the image built from the binaries just built, --check-config inside
# it on every overlay and Helm render, then the dev and ha overlays and the Helm renders
# (memory store; Sentinel) run with podman kube play, with a ticket login, a logout refused
# by another node and a SIGTERM drain through the containerised nodes. Needs root (podman with runc and its
# bridge network); elsewhere it is skipped, except in CI.
if [ "$(id -u)" -eq 0 ] && command -v kubectl >/dev/null 2>&1; then
    tests/deploy/run.py --helm-renders "$helm_renders"
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI runs the deployment test (tests/deploy/run.py) as root, with kubectl" >&2
    exit 1
else
    echo "test.sh: not root or no kubectl; deployment test skipped (sudo tests/deploy/run.py runs it)" >&2
fi

# The benchmark harness's smoke run: every stage for about a second on the debug build, only
# checking that each produced numbers, so the harness cannot rot unnoticed. No speed is
# asserted. tests/setup.sh installs the tools; without them the step is skipped, except in
# CI.
missing_bench_tools=()
for tool in nginx wrk h2load; do
    command -v "$tool" >/dev/null 2>&1 || missing_bench_tools+=("$tool")
done
if [ "${#missing_bench_tools[@]}" -eq 0 ]; then
    tests/bench/run.sh --smoke
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs ${missing_bench_tools[*]} for the benchmark smoke (Debian: apt-get install -y nginx wrk nghttp2-client)" >&2
    exit 1
else
    echo "test.sh: ${missing_bench_tools[*]} missing; benchmark smoke skipped (Debian: apt-get install -y nginx wrk nghttp2-client)" >&2
fi
