#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the store conformance suite against a
# real redis-server and the memory store, the end-to-end gRPC tests, and the benchmark
# harness's smoke run.
# Tests start their own redis-server (standalone, a Sentinel group, a Cluster) on ephemeral
# ports; it only has to be installed.
set -euo pipefail
cd "$(dirname "$0")"

for tool in redis-server redis-sentinel redis-cli; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test.sh: $tool is not installed (Debian: apt-get install -y redis-server redis-sentinel redis-tools)" >&2
        exit 1
    fi
done

# The Kubernetes manifests: every overlay renders, passes schema validation, and has a
# NetworkPolicy for each plane that admits only selected sources to its admin ports; the
# optional component renders and validates too. CI has the tools (.ci/run installs
# kubernetes-validate, which brings python3's yaml); elsewhere the step runs when they are
# there.
if command -v kubectl >/dev/null 2>&1 && command -v kubernetes-validate >/dev/null 2>&1; then
    rendered=$(mktemp)
    for overlay in deploy/kubernetes/overlays/*/; do
        kubectl kustomize "$overlay" > "$rendered"
        kubernetes-validate --strict --quiet "$rendered"
        python3 deploy/kubernetes/check-network-policies.py < "$rendered"
        echo "manifests valid: $overlay"
    done
    with_component=$(mktemp -d deploy/kubernetes/.check-XXXXXX)
    printf 'resources:\n  - ../base\ncomponents:\n  - ../components/probes-from-node-network\n' \
        > "$with_component/kustomization.yaml"
    kubectl kustomize "$with_component" > "$rendered"
    rm -rf "$with_component"
    kubernetes-validate --strict --quiet "$rendered"
    python3 deploy/kubernetes/check-network-policies.py < "$rendered"
    echo "manifests valid: base with components/probes-from-node-network"
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

# The benchmark harness's smoke run: every stage for about a second on the debug build, only
# checking that each produced numbers, so the harness cannot rot unnoticed. No speed is
# asserted. CI has the tools (.ci/run installs them); elsewhere the step runs when they are
# there.
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
