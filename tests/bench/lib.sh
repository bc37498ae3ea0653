# Helpers for tests/bench/run.sh (sourced, not run). They expect $work (a private temporary
# directory), $bin_dir (where control-plane and data-plane are) and $results (the results
# file) to be set.
# shellcheck shell=bash disable=SC2154 # the variables above are set by run.sh

log() { printf 'bench: %s\n' "$*" >&2; }

# A stage that cannot produce its numbers says why; run.sh puts the reason in the results.
fail() {
    printf '%s\n' "$*" >> "$work/failure"
    printf 'bench: FAILED: %s\n' "$*" >&2
    exit 1
}

# Markdown for the results file, echoed to stdout.
emit() { printf '%s\n' "$@" | tee -a "$results"; }

# --- processes ------------------------------------------------------------------------------

# Starts a command in the background and lists its pid in $work/pids, so that whichever ends
# first, the stage or the whole script, stops it.
# The pid is also left in $spawned_pid.
spawn() {
    "$@" &
    spawned_pid=$!
    echo "$spawned_pid" >> "$work/pids"
}

# Stops one process that spawn started.
stop_pid() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    grep -vx "$1" "$work/pids" > "$work/pids.new" || true
    mv "$work/pids.new" "$work/pids"
}

# Stops every process spawn started, and waits for them to go so that the next measurement
# has the CPU and the ports to itself.
stop_spawned() {
    [ -s "$work/pids" ] || return 0
    local pid deadline
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$work/pids"
    deadline=$((SECONDS + 5))
    while read -r pid; do
        wait "$pid" 2>/dev/null || true # our own children: reaped here
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.05
        done
    done < "$work/pids"
    : > "$work/pids"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port name
    local _
    for _ in $(seq 100); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "$2 did not listen on 127.0.0.1:$1 within 10 s"
}

wait_ready() { # url name
    local _
    for _ in $(seq 150); do
        if curl -sf -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    fail "$2 was not ready within 15 s ($1)"
}

# --- servers --------------------------------------------------------------------------------

# An nginx with its own directory under $work. The body goes in the http block, next to an
# upstream `engine` (the test upstream, keep-alive) when $upstream_port is set.
start_nginx() { # name workers port body
    local name=$1 workers=$2 port=$3 body=$4 dir="$work/nginx-$1" engine=""
    mkdir -p "$dir"
    if [ -n "${upstream_port:-}" ]; then
        engine="upstream engine { server 127.0.0.1:$upstream_port; keepalive 64; }"
    fi
    cat > "$dir/nginx.conf" <<CONF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $engine
    $body
}
CONF
    spawn nginx -c "$dir/nginx.conf" -g 'daemon off;' 2>> "$dir/error.log"
    wait_port "$port" "nginx $name"
}

# The upstream every target reaches: nginx answering 200 "ok". Sets $upstream_port.
start_upstream() { # workers
    local port
    port=$(free_port)
    upstream_port="" # no `engine` block in the upstream itself
    start_nginx upstream "$1" "$port" \
        "server { listen 127.0.0.1:$port; location / { return 200 'ok'; } }"
    upstream_port=$port
}

# nginx proxy_pass to the upstream (HTTP/1.1, pooled). Extra listen parameters (http2) in $3,
# extra server directives in $4.
start_nginx_proxy() { # name workers [listen-parameters] [directives]; sets $proxy_port
    proxy_port=$(free_port)
    start_nginx "$1" "$2" "$proxy_port" "server { listen 127.0.0.1:$proxy_port ${3:-}; ${4:-} location / { proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
}

# HAProxy in front of the upstream, no authentication, connections to it kept alive and
# shared (`http-reuse always`), as nginx's `keepalive` pool does. Sets $haproxy_port.
start_haproxy() { # workers
    haproxy_port=$(free_port)
    local dir="$work/haproxy" binary
    binary=$(command -v haproxy || echo /usr/sbin/haproxy)
    mkdir -p "$dir"
    cat > "$dir/haproxy.cfg" <<CONF
global
    nbthread $1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:$haproxy_port
    default_backend engine
backend engine
    server engine 127.0.0.1:$upstream_port
CONF
    spawn "$binary" -db -f "$dir/haproxy.cfg" 2>> "$dir/error.log"
    wait_port "$haproxy_port" haproxy
}

# nginx auth_request to an internal location answering 204, then proxy_pass.
start_nginx_auth() { # workers; sets $auth_port
    auth_port=$(free_port)
    start_nginx auth "$1" "$auth_port" "server { listen 127.0.0.1:$auth_port; location = /_auth { internal; return 204; } location / { auth_request /_auth; proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
}

# An authorizer that costs nothing: nginx answering 200 with an identity header. Sets
# $trivial_port.
start_trivial_authorizer() { # workers
    trivial_port=$(free_port)
    start_nginx trivial "$1" "$trivial_port" "server { listen 127.0.0.1:$trivial_port; location / { add_header X-Qlik-User 'UserDirectory=BENCH; UserId=user'; return 200; } }"
}

# nginx auth_request to an authorizer on another port (kept-alive connections), as
# deploy/forward-auth/nginx.conf asks Gatehouse, the identity copied into the upstream
# request. Sets $forward_port.
start_nginx_forward_auth() { # name workers authorizer-port
    forward_port=$(free_port)
    start_nginx "$1" "$2" "$forward_port" "upstream authorizer { server 127.0.0.1:$3; keepalive 64; }
    server { listen 127.0.0.1:$forward_port;
        location = /_gatehouse { internal; proxy_pass http://authorizer/auth; proxy_http_version 1.1; proxy_set_header Connection ''; proxy_pass_request_body off; proxy_set_header Content-Length ''; proxy_set_header X-Original-URI \$request_uri; proxy_set_header X-Original-Method \$request_method; proxy_set_header X-Forwarded-Host \$http_host; }
        location / { auth_request /_gatehouse; auth_request_set \$gatehouse_user \$upstream_http_x_qlik_user; proxy_set_header X-Qlik-User \$gatehouse_user; proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
}

# A redis-server on an ephemeral port, nothing persisted. Sets $redis_port.
start_redis() {
    redis_port=$(free_port)
    mkdir -p "$work/redis"
    spawn redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$work/redis" --logfile "$work/redis/redis.log"
    wait_port "$redis_port" redis-server
}

# A control plane with one default virtual proxy (anonymous sessions) in front of the
# upstream, and the TOML in $2 after it (more virtual proxies). Store: "memory" or a
# redis:// URL. Sets $grpc_port, $control_admin_port and $node_secret.
start_control_plane() { # store [more-toml]
    grpc_port=$(free_port)
    local admin_port store_toml more=${2:-}
    admin_port=$(free_port)
    control_admin_port=$admin_port
    node_secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    if [ "$1" = memory ]; then
        store_toml='backend = "memory"'
    else
        store_toml="backend = \"redis\"
redis_url = \"$1\"
key_prefix = \"bench$$\""
    fi
    cat > "$work/control-plane.toml" <<TOML
listen = "127.0.0.1:$grpc_port"
admin_listen = "127.0.0.1:$admin_port"
shutdown_grace = "1s"
[store]
$store_toml
[node_api]
shared_secret = "$node_secret"
[[virtual_proxies]]
prefix = ""
anonymous = "always"
[virtual_proxies.upstream]
nodes = ["127.0.0.1:$upstream_port"]
$more
TOML
    spawn env GATEHOUSE_LOG=warn "$bin_dir/control-plane" --config "$work/control-plane.toml" \
        >> "$work/control-plane.log" 2>&1
    wait_ready "http://127.0.0.1:$admin_port/ready" "control plane"
}

# A data-plane node with $1 tokio worker threads, access log off. An optional cache size
# caps its session cache; an optional port turns its forward-auth listener on there, trusting
# 127.0.0.1. Sets $node_port, $node_admin_port and $node_pid.
start_node() { # workers [max-cached-sessions] [forward-auth-port] [more-toml] [top-level-toml]
    node_port=$(free_port)
    node_admin_port=$(free_port)
    # Each node its own file: a second node must not rewrite the first one's.
    local config="$work/data-plane-$node_port.toml"
    local cache=""
    if [ -n "${2:-}" ]; then cache="[cache]
max_sessions = $2"; fi
    if [ -n "${3:-}" ]; then cache="$cache
[forward_auth]
listen = \"127.0.0.1:$3\"
trusted_networks = [\"127.0.0.1/32\"]"; fi
    cat > "$config" <<TOML
listen = "127.0.0.1:$node_port"
admin_listen = "127.0.0.1:$node_admin_port"
shutdown_grace = "1s"
${5:-}
[control_plane]
endpoints = ["http://127.0.0.1:$grpc_port"]
$cache
${4:-}
TOML
    spawn env TOKIO_WORKER_THREADS="$1" GATEHOUSE_LOG=warn GATEHOUSE_NODE_SECRET="$node_secret" \
        "$bin_dir/data-plane" --config "$config" >> "$work/data-plane.log" 2>&1
    node_pid=$spawned_pid
    wait_ready "http://127.0.0.1:$node_admin_port/ready" "data-plane node"
}

# An anonymous session through the node: the first request (to $1, default /) sets the
# cookie.
anonymous_cookie() { # [path]
    local cookie
    cookie=$(curl -s -D - -o /dev/null "http://127.0.0.1:$node_port${1:-/}" |
        sed -n 's/^set-cookie: \([^;]*\).*/\1/Ip' | tr -d '\r' | head -n 1)
    [ -n "$cookie" ] || fail "the node set no session cookie on an anonymous request"
    printf '%s\n' "$cookie"
}

# The sum of a node metric's samples whose labels contain $2 (e.g. outcome="valid").
node_metric() { # name [label-filter]
    curl -sf "http://127.0.0.1:$node_admin_port/metrics" |
        awk -v name="$1" -v filter="${2:-}" '
            index($1, name) == 1 && (substr($1, length(name) + 1, 1) == "{" || $1 == name) &&
                (filter == "" || index($1, filter)) { sum += $NF }
            END { printf "%d\n", sum }'
}

# --- arithmetic and formatting ---------------------------------------------------------------

control_plane_metric() { # name [label-filter]: as node_metric, of the control plane
    curl -sf "http://127.0.0.1:$control_admin_port/metrics" |
        awk -v name="$1" -v filter="${2:-}" '
            index($1, name) == 1 && (substr($1, length(name) + 1, 1) == "{" || $1 == name) &&
                (filter == "" || index($1, filter)) { sum += $NF }
            END { printf "%d\n", sum }'
}
add() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "n/a" }'; }

# wrk and h2load print durations as 255.00us, 1.01ms or 1.20s; the tables use µs, ms and s.
latency_us() { # a wrk latency (850.00us, 1.23ms, 2.00s) in microseconds
    awk -v t="$1" 'BEGIN {
        us = t + 0
        if (t ~ /us$/) {} else if (t ~ /ms$/) us *= 1000; else if (t ~ /m$/) us *= 60e6; else if (t ~ /s$/) us *= 1e6
        printf "%.0f\n", us
    }'
}
fmt_latency() {
    awk -v t="$1" 'BEGIN {
        us = t + 0
        if (t ~ /us$/) {} else if (t ~ /ms$/) us *= 1000; else if (t ~ /m$/) us *= 60e6; else if (t ~ /s$/) us *= 1e6
        if (us < 1000) printf "%d µs\n", us + 0.5
        else if (us < 1e6) printf "%.2f ms\n", us / 1000
        else printf "%.2f s\n", us / 1e6
    }'
}

# --- load generators ------------------------------------------------------------------------

# wrk, one thread, $connections connections, $seconds; the arguments end with the URL (and
# a script's own arguments after --). Prints "req/s p50 p99" (latencies as
# wrk prints them: 1.01ms); fails when wrk produced no numbers or when socket errors and
# non-2xx/3xx answers exceed 1% of the requests.
measure_wrk() { # label wrk-arguments...
    local label=$1 out verdict
    shift
    out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency "$@" 2>&1) ||
        fail "$label: wrk failed: $(tail -n 1 <<< "$out")"
    printf '%s\n' "$out" > "$work/wrk-last.txt"
    verdict=$(awk '
        /^Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        / requests in / { total = $1 }
        /Socket errors:/ { gsub(/,/, ""); errors = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        END {
            if (rps + 0 <= 0 || total + 0 <= 0 || p50 == "" || p99 == "")
                print "ERR wrk reported no requests"
            else if (errors + bad > total / 100)
                printf "ERR %d socket errors and %d non-2xx/3xx answers in %d requests\n", errors, bad, total
            else
                print "OK", rps, p50, p99
        }' <<< "$out")
    [ "${verdict%% *}" = OK ] || fail "$label: ${verdict#ERR }"
    printf '%s\n' "${verdict#OK }"
}

# h2load over h2c (HTTP/2 with prior knowledge), one thread, $h2_clients connections with
# up to $h2_streams concurrent streams each, $seconds. Prints "req/s mean sd max" (the time
# of one request, as h2load prints it); fails like measure_wrk.
measure_h2load() { # label h2load-arguments...
    local label=$1 out verdict
    shift
    out=$(h2load -t1 -c"$h2_clients" -m"$h2_streams" -D"$seconds" "$@" 2>&1) ||
        fail "$label: h2load failed: $(tail -n 1 <<< "$out")"
    printf '%s\n' "$out" > "$work/h2load-last.txt"
    verdict=$(awk '
        /^Application protocol:/ { proto = $3 }
        /^finished in/ { rps = $4 }
        /^requests:/ { done = $6; ok = $8; failed = $10 + $12 + $14 }
        /^status codes:/ { two = $3 }
        /^time for request:/ { max = $5; mean = $6; sd = $7 }
        END {
            if (proto != "h2c")
                print "ERR h2load did not speak h2c (" proto ")"
            else if (rps + 0 <= 0 || ok + 0 <= 0 || mean == "")
                print "ERR h2load reported no requests"
            else if (failed > done / 100 || two < done * 0.99)
                printf "ERR %d of %d requests failed, %d answered 2xx\n", failed, done, two
            else
                print "OK", rps, mean, sd, max
        }' <<< "$out")
    [ "${verdict%% *}" = OK ] || fail "$label: ${verdict#ERR }"
    printf '%s\n' "${verdict#OK }"
}
