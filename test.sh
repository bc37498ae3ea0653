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

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
