#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and records the outcome in fuzz/RESULTS.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz builds with sanitizer flags that
# stable Rust accepts only with RUSTC_BOOTSTRAP=1, which this script sets for its own build.
# A crash is saved by libFuzzer under fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ so the test suite runs it from then on.
#
# RESULTS.md names the commit that was fuzzed and, per target, the parser it covers (the
# `// Parser:` line of fuzz_targets/<target>.rs), the runs, the coverage libFuzzer reached
# (`cov`, edges, and `ft`, features, from its last status line), the corpus kept and the
# outcome.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^gatehouse-fuzz$')

cargo fuzz build --release 2>&1 | tail -n 3
# Run what was just built: a source change during the run must not rebuild under it.
bin_dir=target/$(rustc -vV | sed -n 's/^host: //p')/release
repo=$(cd .. && pwd)
commit=$(git rev-parse --short HEAD)
# Results of a tree that differs from the commit do not describe the commit.
if ! git diff --quiet HEAD -- .. ':(exclude)RESULTS.md'; then
    commit="$commit (with uncommitted changes)"
fi
{
    echo "# Fuzzing results"
    echo
    echo "Run by \`fuzz/run.sh $seconds\` on $(date -u +%Y-%m-%d) at commit $commit, $(nproc) cores,"
    echo "${seconds}s per target. \`cov\` and \`ft\` are libFuzzer's edge and feature coverage at the"
    echo "end of the run; \`corpus\` counts the inputs kept in fuzz/corpus/<target>/ (it grows over runs)."
    echo
    echo "| target | parser | runs | cov | ft | corpus | outcome |"
    echo "|---|---|---|---|---|---|---|"
} > RESULTS.md.new
status=0
for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    if "$bin_dir/$target" "corpus/$target" "seeds/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        outcome="no crash"
    else
        # Where it panicked (relative to the repository), else libFuzzer's summary.
        reason=$(sed -n -e "s|.*panicked at $repo/\(.*\):\$|panic at \1|p" \
            -e 's/^SUMMARY: libFuzzer: /libFuzzer: /p' "$log" | head -n 1)
        outcome="CRASH: see fuzz/artifacts/$target (${reason:-$(tail -n 1 "$log")})"
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    parser=$(sed -n 's|^// Parser: *||p' "fuzz_targets/$target.rs" | head -n 1)
    echo "| $target | ${parser:-?} | ${runs:-?} | ${cov:-?} | ${ft:-?} | $corpus | ${outcome//|/\\|} |" >> RESULTS.md.new
    echo "$target: ${runs:-?} runs, cov ${cov:-?}, $outcome"
    rm -f "$log"
done
mv RESULTS.md.new RESULTS.md
exit $status
