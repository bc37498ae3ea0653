#!/usr/bin/env bash
# Installs what the test suite needs, when it is missing: Debian packages with apt-get (as
# root, or through sudo), pinned PyPI packages with pip, and the test OpenID provider's npm
# packages from their lock file. ./test.sh runs it first; it does nothing on a machine that
# has everything. Set GATEHOUSE_NO_INSTALL=1 to only report what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing_packages=()
need_package() { missing_packages+=("$@"); }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# redis-server, redis-sentinel and redis-cli (for Cluster): the store conformance suite and
# the end-to-end tests start their own.
have redis-server || need_package redis-server
have redis-sentinel || need_package redis-sentinel
have redis-cli || need_package redis-tools
# nginx, wrk, h2load and haproxy: the benchmark smoke; caddy: the forward-auth tests.
have nginx || need_package nginx
have wrk || need_package wrk
have h2load || need_package nghttp2-client
have haproxy || need_package haproxy
have caddy || need_package caddy
# The MIT Kerberos KDC, admin tools and client for the Windows-authentication tests (a
# throw-away realm); libkrb5-dev for the GSSAPI binding and libclang-dev for its bindgen.
have krb5kdc || need_package krb5-kdc
have kadmin.local || need_package krb5-admin-server
have kinit || need_package krb5-user
have krb5-config || need_package libkrb5-dev
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || need_package libclang-dev
# SAML: the control plane's signature checks link libxmlsec1 (its headers, libxml2's and
# pkg-config to find them); the test identity provider (pysaml2) signs with xmlsec1 and
# makes its keys with openssl.
pkg-config --exists xmlsec1 libxml-2.0 2>/dev/null || need_package libxmlsec1-dev libxml2-dev pkg-config
have xmlsec1 || need_package xmlsec1
have openssl || need_package openssl
# The deployment test (tests/deploy/run.py): podman with runc, a Debian base image made
# from the apt mirror with mmdebstrap, and objcopy to strip the binaries. `podman kube play`
# builds its pause image around catatonit, which podman only recommends.
have podman || need_package podman
have runc || need_package runc
have catatonit || [ -x /usr/libexec/podman/catatonit ] || need_package catatonit
have mmdebstrap || need_package mmdebstrap
have slirp4netns || need_package slirp4netns
have objcopy || need_package binutils
# Node.js and npm for the OpenID provider; a machine with NodeSource's nodejs has npm inside
# it, and Debian's npm would conflict with it. The provider needs Node.js 20.19 or later,
# which Debian 12 does not package (it has 18): there, install NodeSource's nodejs 20 or 22;
# without it the OpenID tests print SKIPPED, and fail in CI.
have npm || need_package nodejs npm
# Python 3 with pip, for the manifest checks, the Helm render and the deployment test.
have python3 || need_package python3
python3 -m pip --version >/dev/null 2>&1 || need_package python3-pip

if [ "${#missing_packages[@]}" -gt 0 ]; then
    if [ -n "${GATEHOUSE_NO_INSTALL:-}" ]; then
        echo "setup: missing Debian packages: ${missing_packages[*]}" >&2
    else
        echo "setup: installing ${missing_packages[*]}"
        as_root=(env DEBIAN_FRONTEND=noninteractive)
        [ "$(id -u)" -eq 0 ] || as_root=(sudo "${as_root[@]}")
        # The tests start their own nginx, Redis and KDC on loopback; the packages' own services
        # (nginx and caddy on port 80, redis-server on 6379, the KDC) must not start: a
        # policy-rc.d answering 101 tells the packages' scripts so, for this install only.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
            "${as_root[@]}" chmod 755 "$policy"
            trap '"${as_root[@]}" rm -f "$policy"' EXIT
        fi
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
    fi
fi

# Python packages, pinned: kubernetes-validate (the manifests' schemas; brings PyYAML),
# helm-python-sdk (Helm's own library: lints and renders the chart offline), grpcio and
# grpcio-tools (the Python example and the example authentication module), pysaml2 (the
# SAML tests' identity provider).
python_packages=(kubernetes-validate==1.37.0 helm-python-sdk==0.2.2 grpcio==1.85.1 grpcio-tools==1.85.1
    pysaml2==7.5.5)
missing_python=()
for requirement in "${python_packages[@]}"; do
    name=${requirement%%==*}
    wanted=${requirement##*==}
    installed=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    [ "$installed" = "$wanted" ] || missing_python+=("$requirement")
done
if [ "${#missing_python[@]}" -gt 0 ]; then
    if [ -n "${GATEHOUSE_NO_INSTALL:-}" ]; then
        echo "setup: missing Python packages: ${missing_python[*]}" >&2
    else
        echo "setup: installing ${missing_python[*]}"
        # Debian's own python3 refuses pip installs outside a virtual environment (PEP 668);
        # these pinned packages are for the tests alone.
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
            "${missing_python[@]}"
    fi
fi

# oidc-provider (panva's certified OpenID provider) at the versions of its lock file, on
# Node.js 20.19 or later.
node_version=$(node --version 2>/dev/null || true)
if ! printf '%s\n' v20.19 "$node_version" | sort -V -C; then
    echo "setup: Node.js ${node_version:-missing} is older than 20.19: the OpenID Connect tests will be" \
        "SKIPPED (a failure in CI); install Node.js 20 or 22 from NodeSource" >&2
elif [ ! -d tests/oidc-provider/node_modules/oidc-provider ] && [ -z "${GATEHOUSE_NO_INSTALL:-}" ]; then
    npm ci --prefix tests/oidc-provider --no-audit --no-fund --loglevel=error
fi
