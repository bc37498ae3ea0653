#!/usr/bin/env bash
# Makes a Debian bookworm base image from the apt mirror with mmdebstrap and imports it into
# podman, for machines that reach no container registry (CI does not). It stands in for
# debian:bookworm-slim under a name of its own (deploy/image/build.sh passes it as the
# Dockerfile's BASE), with the packages Gatehouse needs at run time already in it, so
# building the Gatehouse image needs no network.
#
#   deploy/image/base.sh [--name NAME] [--include PKG,PKG...] [--change INSTRUCTION]...
#                        [--mirror URL] [--force]
#
# --name     the image to create (default localhost/gatehouse-base:bookworm)
# --include  packages besides the minimal base (default: ca-certificates,libgssapi-krb5-2,
#            libxmlsec1-openssl)
# --change   a Dockerfile instruction applied on import (ENTRYPOINT, WORKDIR, ...); repeatable
# --force    rebuild even if the image exists (it is rebuilt anyway once a week old, for
#            Debian's security updates)
#
# Needs root (or a user namespace), mmdebstrap and podman. About 40 s and 86 MB.
set -euo pipefail
name=localhost/gatehouse-base:bookworm
include=ca-certificates,libgssapi-krb5-2,libxmlsec1-openssl
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
force=false
changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["/bin/bash"]')
while [ $# -gt 0 ]; do
    case $1 in
        --name) name=$2; shift 2 ;;
        --include) include=$2; shift 2 ;;
        --mirror) mirror=$2; shift 2 ;;
        --change) changes+=(--change "$2"); shift 2 ;;
        --force) force=true; shift ;;
        *) echo "base.sh: unknown option $1" >&2; exit 64 ;;
    esac
done

if [ "$force" = false ] && podman image exists "$name"; then
    created=$(podman image inspect --format '{{.Created.Unix}}' "$name")
    if [ $(( $(date +%s) - created )) -lt $(( 7 * 24 * 3600 )) ]; then
        echo "base image $name exists (--force rebuilds it)"
        exit 0
    fi
    echo "base image $name is over a week old: rebuilding it"
fi

tarball=$(mktemp --suffix=.tar)
trap 'rm -f "$tarball"' EXIT
# minbase with merged /usr made by mmdebstrap's hook (without it bookworm pulls in usrmerge and
# perl, 50 MB); no documentation, manuals or translations; no apt lists, as a slim image has.
mmdebstrap --quiet --variant=minbase --include="$include" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tarball" "$mirror" >/dev/null
podman import --quiet "${changes[@]}" "$tarball" "$name" >/dev/null
echo "base image $name: $(podman image inspect --format '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}')"
