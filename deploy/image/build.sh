#!/usr/bin/env bash
# Builds the Gatehouse image from binaries built outside the image: stages control-plane and
# data-plane in target/image/ stripped of debug information, then builds deploy/Dockerfile's
# `prebuilt` variant with podman (or docker: set ENGINE=docker). The binaries link the build
# machine's glibc: build on Debian 12 (or older), or the image's Debian 12 cannot run them
# (the build checks); elsewhere build inside the image (`docker build -f deploy/Dockerfile .`).
#
#   deploy/image/build.sh [--profile release|debug] [--tag NAME:TAG] [--no-cargo]
#
# --profile   which build's binaries (default release; the deployment test uses debug, the
#             binaries the test suite already built)
# --tag       the image name (default localhost/gatehouse:<workspace version>)
# --no-cargo  do not run cargo build first (the binaries must exist)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=release
tag=
run_cargo=true
while [ $# -gt 0 ]; do
    case $1 in
        --profile) profile=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --no-cargo) run_cargo=false; shift ;;
        *) echo "build.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
case $profile in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) echo "build.sh: --profile is release or debug" >&2; exit 64 ;;
esac
if [ -z "$tag" ]; then
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    tag=localhost/gatehouse:$version
fi
engine=${ENGINE:-podman}
target_dir=${CARGO_TARGET_DIR:-target}

if [ "$run_cargo" = true ]; then
    cargo build "${cargo_profile[@]}" --locked --bin control-plane --bin data-plane
fi
staged=target/image
mkdir -p "$staged"
for binary in control-plane data-plane; do
    built="$target_dir/$profile/$binary"
    if [ ! -x "$built" ]; then
        echo "build.sh: $built is missing (build it, or drop --no-cargo)" >&2
        exit 1
    fi
    objcopy --strip-debug "$built" "$staged/$binary"
done

base=()
if [ "$engine" = podman ] && podman image exists localhost/gatehouse-base:bookworm; then
    # The base made from the apt mirror (deploy/image/base.sh), where no registry is reachable.
    base=(--pull=never --build-arg BASE=localhost/gatehouse-base:bookworm)
fi
"$engine" build "${base[@]}" --quiet --build-arg BINARIES=prebuilt -f deploy/Dockerfile -t "$tag" . >/dev/null
"$engine" image prune --force --filter label=io.gatehouse.stage=prebuilt >/dev/null
# Both binaries start in the image: a glibc newer than Debian 12's fails here, not in a pod.
for binary in control-plane data-plane; do
    if ! "$engine" run --rm --entrypoint "/usr/local/bin/$binary" "$tag" --help >/dev/null; then
        echo "build.sh: $binary does not run in the image (built against a newer glibc?)" >&2
        exit 1
    fi
done
echo "image $tag: $("$engine" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
