#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/gatehouse offline, with no helm binary: for the default
# values and every value set in gatehouse/ci/, `helm lint --strict`, a render (release
# gatehouse, namespace gatehouse), strict Kubernetes schema validation, the NetworkPolicy
# check the overlays pass (deploy/kubernetes/check-network-policies.py), and check_render.py
# (the ConfigMaps' TOML parses, images are pinned, the memory store runs one control plane,
# the podman set holds only what podman kube play runs). Then renders that must fail do,
# with their message.
#
#   deploy/helm/check.sh [--podman-renders DIR] [--podman-set KEY=VALUE]... [--binaries DIR]
#
#   --podman-renders DIR   also write the podman sets' renders (ci/podman*.yaml) to
#                          DIR/<set>.yaml, for `podman kube play`
#   --podman-set KEY=VALUE override a value of those renders (e.g. image.tag=dev); repeatable
#   --binaries DIR         also run DIR/control-plane and DIR/data-plane --check-config on
#                          every render's configuration files
#
# Needs python3 (3.11, for tomllib) with helm-python-sdk, PyYAML and kubernetes-validate:
#   python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate
# Exits 1 with a line naming the value set and the step on the first failure.
set -euo pipefail

usage() { sed -n '/^#   deploy/,/^#   --binaries/p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "deploy/helm/check.sh: $*" >&2; exit 1; }

podman_renders=""
podman_sets=()
binaries=""
while [ $# -gt 0 ]; do
    case $1 in
        --podman-renders) podman_renders=${2:?--podman-renders needs a directory}; shift 2 ;;
        --podman-set) podman_sets+=(--set "${2:?--podman-set needs KEY=VALUE}"); shift 2 ;;
        --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$here/gatehouse
helm=(python3 "$here/helm.py")

python3 -c 'import helm_python, yaml, tomllib' 2>/dev/null \
    || fail "python3 needs helm-python-sdk and PyYAML: python3 -m pip install helm-python-sdk==0.2.2 pyyaml"
command -v kubernetes-validate >/dev/null \
    || fail "kubernetes-validate is missing: python3 -m pip install kubernetes-validate"
if [ -n "$binaries" ]; then
    [ -x "$binaries/control-plane" ] && [ -x "$binaries/data-plane" ] \
        || fail "--binaries $binaries: no control-plane and data-plane executables there"
    binaries=$(cd "$binaries" && pwd)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# check NAME [helm.py options...]: every step on one value set.
check() {
    local name=$1; shift
    local render=$work/$name.yaml
    local extra=()
    [[ $name == podman* ]] && extra+=(--podman)
    [ -n "$binaries" ] && extra+=(--binaries "$binaries")
    "${helm[@]}" lint "$chart" --namespace gatehouse "$@" || fail "$name: helm lint failed"
    "${helm[@]}" template "$chart" --name gatehouse --namespace gatehouse --notes "$work/$name.notes" "$@" \
        > "$render" || fail "$name: the chart does not render"
    [ -s "$work/$name.notes" ] || fail "$name: NOTES.txt renders empty"
    kubernetes-validate --strict --quiet "$render" || fail "$name: the render fails schema validation"
    if grep -q '^kind: NetworkPolicy$' "$render"; then
        python3 "$repo/deploy/kubernetes/check-network-policies.py" < "$render" \
            || fail "$name: the NetworkPolicies admit too much"
    fi
    python3 "$here/check_render.py" "$render" "${extra[@]}" || fail "$name: check_render.py found problems"
    echo "helm chart: $name: lint, render, schema, policies and configuration ok"
}

check default
for values in "$chart"/ci/*.yaml; do
    name=$(basename "$values" .yaml)
    if [[ $name == podman* ]]; then
        check "$name" -f "$values" "${podman_sets[@]}"
    else
        check "$name" -f "$values"
    fi
done

# refused MESSAGE --set ...: the render fails, saying MESSAGE.
refused() {
    local message=$1; shift
    local said
    if said=$("${helm[@]}" template "$chart" --namespace gatehouse "$@" 2>&1 >/dev/null); then
        fail "rendered with $*, which must be refused ($message)"
    fi
    grep -qF -- "$message" <<< "$said" || fail "refused $* without saying \"$message\": $said"
}
refused "store.cluster.urls must name at least one Redis server" --set store.topology=cluster
refused "store.sentinel.urls must name at least one Redis server" --set store.topology=sentinel
refused "developmentRedis.enabled needs store.topology standalone" \
    --set 'store.topology=sentinel,store.sentinel.urls={rediss://sentinel:26379},developmentRedis.enabled=true'
refused "need rediss:// URLs" --set store.standalone.url=redis://redis:6379/
refused "all rediss:// or all redis://" \
    --set 'store.topology=cluster,store.cluster.urls={rediss://a:6379,redis://b:6379}'
refused "certKey and store.secret.keyKey go together" --set store.secret.certKey=tls.crt
refused "value must be one of 'memory', 'standalone', 'sentinel', 'cluster'" --set store.topology=redis
refused "latest is refused" --set image.tag=latest
refused "ingress.host" --set ingress.enabled=true
refused "ingress.backendCASecret" --set ingress.enabled=true,ingress.host=sense.example.com
refused "forwardAuth.trustedNetworks" --set forwardAuth.enabled=true
refused "must be shorter than dataPlane.terminationGracePeriodSeconds" --set dataPlane.shutdownGrace=35s
refused "must start with a [[virtual_proxies]] table" --set controlPlane.virtualProxies=prefix
refused "/dataPlane/controlPlaneEndpoints/0': 'http://control-plane:4243' does not match" --set 'dataPlane.controlPlaneEndpoints={http://control-plane:4243}'
refused "minReplicas is above maxReplicas" --set dataPlane.autoscaling.minReplicas=30
echo "helm chart: 15 bad value sets refused with their message"

# What a change rolls (values.yaml, controlPlane.rollOnVirtualProxyChange): the pods'
# checksum/config annotations, "<control plane> <data plane>", for some values.
checksums() {
    "${helm[@]}" template "$chart" "$@" | python3 -c '
import sys, yaml
sums = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Deployment"}
print(sums["gatehouse-control-plane"], sums["gatehouse-data-plane"])'
}
printf 'controlPlane:\n  virtualProxies: |\n    [[virtual_proxies]]\n    prefix = "hub"\n' > "$work/proxy.yaml"
# Assignments, so that a failed render stops the script (set -e) instead of comparing blanks.
base=$(checksums)
proxy=$(checksums -f "$work/proxy.yaml")
roll=$(checksums --set controlPlane.rollOnVirtualProxyChange=true)
roll_proxy=$(checksums --set controlPlane.rollOnVirtualProxyChange=true -f "$work/proxy.yaml")
store=$(checksums --set store.keyPrefix=other)
node=$(checksums --set dataPlane.shutdownGrace=20s)
[ "$proxy" = "$base" ] || fail "a virtual-proxy change rolls pods (the control plane reloads it)"
[ "${roll% *}" != "${roll_proxy% *}" ] \
    || fail "rollOnVirtualProxyChange=true: a virtual-proxy change does not roll the control plane"
[ "${store% *}" != "${base% *}" ] && [ "${store#* }" = "${base#* }" ] \
    || fail "a store change must roll the control plane alone"
[ "${node% *}" = "${base% *}" ] && [ "${node#* }" != "${base#* }" ] \
    || fail "a data-plane.toml change must roll the nodes alone"
echo "helm chart: virtual proxies reload in place; store and node settings roll their pods"

if [ -n "$podman_renders" ]; then
    mkdir -p "$podman_renders"
    cp "$work"/podman*.yaml "$podman_renders"/
    echo "helm chart: the podman renders are in $podman_renders"
fi
