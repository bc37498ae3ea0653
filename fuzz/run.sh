#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and records the outcome in fuzz/RESULTS.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz builds with sanitizer flags that
# stable Rust accepts only with RUSTC_BOOTSTRAP=1, which this script sets for its own build.
# A crash is saved by libFuzzer under fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ so the test suite runs it from then on.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^gatehouse-fuzz$')

cargo fuzz build --release 2>&1 | tail -n 3
# Run what was just built: a source change during the run must not rebuild under it.
bin_dir=target/$(rustc -vV | sed -n 's/^host: //p')/release
{
    echo "# Fuzzing results"
    echo
    echo "Run by \`fuzz/run.sh $seconds\` on $(date -u +%Y-%m-%d), $(nproc) cores, ${seconds}s per target."
    echo
    echo "| target | runs | corpus | outcome |"
    echo "|---|---|---|---|"
} > RESULTS.md.new
status=0
for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    if "$bin_dir/$target" "corpus/$target" "seeds/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        outcome="no crash"
    else
        outcome="CRASH: see fuzz/artifacts/$target ($(tail -n 1 "$log"))"
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    echo "| $target | ${runs:-?} | $corpus | $outcome |" >> RESULTS.md.new
    echo "$target: ${runs:-?} runs, $outcome"
    rm -f "$log"
done
mv RESULTS.md.new RESULTS.md
exit $status
