#!/usr/bin/env bash
# The long variants of the reliability tests: outages of 30 s, the soak at full scale and the
# hostile-client runs at 5,000 connections. CI runs the fast variant of each (./test.sh).
# Needs redis-server, redis-sentinel and redis-cli (Debian: apt-get install -y redis-server
# redis-sentinel redis-tools). Takes about 19 minutes on 2 cores, the release build included.
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEHOUSE_LONG_TESTS=1
# The soak and hostile-client tests run the node and control-plane binaries as processes.
cargo build --release --locked -p gatehouse-data-plane -p gatehouse-control-plane
cargo test --release --locked -p gatehouse-tests -- --test-threads=1 reliability "$@"
