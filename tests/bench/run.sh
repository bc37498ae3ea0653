#!/usr/bin/env bash
# Data-plane cache-hit benchmark (BENCHMARKS.md): the same upstream reached (a) directly,
# (b) through nginx proxy_pass, (c) through nginx auth_request, (d) through a Gatehouse node
# with a valid session cookie and identity headers injected. wrk, same connections and
# duration, interleaved rounds, for 1 and 2 worker threads / processes.
#
#   tests/bench/run.sh [SECONDS] [ROUNDS] [CONNECTIONS]     (defaults 10 2 50)
#
# Needs nginx and wrk (apt-get install -y nginx wrk). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
rounds=${2:-2}
connections=${3:-50}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin control-plane --bin data-plane
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_nginx() { # name workers conf-body
    local name=$1 workers=$2 body=$3
    mkdir -p "$work/$name"
    cat > "$work/$name/nginx.conf" <<CONF
worker_processes $workers;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/$name/body;
    proxy_temp_path $work/$name/proxy;
    fastcgi_temp_path $work/$name/fastcgi;
    uwsgi_temp_path $work/$name/uwsgi;
    scgi_temp_path $work/$name/scgi;
    upstream engine { server 127.0.0.1:$upstream_port; keepalive 64; }
    $body
}
CONF
    nginx -c "$work/$name/nginx.conf" -g 'daemon off;' &
    pids+=($!)
}

measure() { # url [header]
    local out
    out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency ${2:+-H "$2"} "$1")
    local rps p50 p99
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    echo "$rps $p50 $p99"
}

echo "| workers | target | req/s | p50 | p99 | req/s vs (b) |"
echo "|---|---|---|---|---|---|"
for workers in 1 2; do
    upstream_port=$(free_port); proxy_port=$(free_port); auth_port=$(free_port)
    grpc_port=$(free_port); node_port=$(free_port); admin_port=$(free_port); cp_admin=$(free_port)
    pids=()
    start_nginx upstream "$workers" "server { listen 127.0.0.1:$upstream_port; location / { return 200 'ok'; } }"
    start_nginx proxy "$workers" "server { listen 127.0.0.1:$proxy_port; location / { proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
    start_nginx auth "$workers" "server { listen 127.0.0.1:$auth_port; location = /_auth { internal; return 204; } location / { auth_request /_auth; proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"

    secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat > "$work/control-plane.toml" <<TOML
listen = "127.0.0.1:$grpc_port"
admin_listen = "127.0.0.1:$cp_admin"
[node_api]
shared_secret = "$secret"
[[virtual_proxies]]
prefix = ""
anonymous = "always"
[virtual_proxies.upstream]
nodes = ["127.0.0.1:$upstream_port"]
TOML
    GATEHOUSE_LOG=warn ./target/release/control-plane --config "$work/control-plane.toml" >/dev/null 2>&1 &
    pids+=($!)
    TOKIO_WORKER_THREADS=$workers GATEHOUSE_LOG=warn GATEHOUSE_NODE_SECRET=$secret ./target/release/data-plane \
        --listen "127.0.0.1:$node_port" --admin-listen "127.0.0.1:$admin_port" \
        --control-plane "http://127.0.0.1:$grpc_port" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$admin_port/ready" >/dev/null && break
        sleep 0.1
    done
    # An anonymous session: the first request sets the cookie, the rest are cache hits.
    cookie=$(curl -s -D - -o /dev/null "http://127.0.0.1:$node_port/" | sed -n 's/^set-cookie: \([^;]*\).*/\1/Ip' | tr -d '\r')

    declare -A total_rps=() p50s=() p99s=()
    for round in $(seq "$rounds"); do
        for target in a b c d; do
            case $target in
                a) result=$(measure "http://127.0.0.1:$upstream_port/") ;;
                b) result=$(measure "http://127.0.0.1:$proxy_port/") ;;
                c) result=$(measure "http://127.0.0.1:$auth_port/") ;;
                d) result=$(measure "http://127.0.0.1:$node_port/" "Cookie: $cookie") ;;
            esac
            read -r rps p50 p99 <<< "$result"
            total_rps[$target]=$(python3 -c "print(${total_rps[$target]:-0} + $rps)")
            p50s[$target]="${p50s[$target]:-}$p50 "
            p99s[$target]="${p99s[$target]:-}$p99 "
        done
    done
    baseline=$(python3 -c "print(${total_rps[b]} / $rounds)")
    for target in a b c d; do
        case $target in
            a) label="(a) upstream directly" ;;
            b) label="(b) nginx proxy_pass" ;;
            c) label="(c) nginx auth_request" ;;
            d) label="(d) Gatehouse, cached session" ;;
        esac
        mean=$(python3 -c "print(round(${total_rps[$target]} / $rounds))")
        ratio=$(python3 -c "print(round(${total_rps[$target]} / $rounds / $baseline, 2))")
        echo "| $workers | $label | $mean | ${p50s[$target]% } | ${p99s[$target]% } | $ratio |"
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    unset total_rps p50s p99s
done
