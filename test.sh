#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the store conformance suite against a
# real redis-server and the memory store, and the end-to-end gRPC tests.
# Tests start their own redis-server on ephemeral ports; it only has to be installed.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "test.sh: redis-server is not installed (Debian: apt-get install -y redis-server)" >&2
    exit 1
fi

# The Kubernetes manifests: every overlay renders and passes schema validation. CI has the
# tools (.ci/run installs kubernetes-validate); elsewhere the step runs when they are there.
if command -v kubectl >/dev/null 2>&1 && command -v kubernetes-validate >/dev/null 2>&1; then
    rendered=$(mktemp)
    for overlay in deploy/kubernetes/overlays/*/; do
        kubectl kustomize "$overlay" > "$rendered"
        kubernetes-validate --strict --quiet "$rendered"
        echo "manifests valid: $overlay"
    done
    rm -f "$rendered"
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI needs kubectl and kubernetes-validate to check the manifests" >&2
    exit 1
else
    echo "test.sh: kubectl or kubernetes-validate missing; manifest validation skipped" >&2
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
