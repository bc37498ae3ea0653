#!/usr/bin/env bash
# The benchmark harness (BENCHMARKS.md): every stage, one command, one Markdown results file
# (also printed).
#
#   tests/bench/run.sh [--smoke] [--only STAGE,...] [--seconds S] [--rounds R]
#                      [--connections C] [--out FILE]
#
# Stages, in order: cache-hit, tls, assertion, cache-miss, h2, forward-auth, flood, logins,
# revocation, memory, micro.
# Full run (default): release binaries, 10 s per measurement, 2 interleaved rounds, 1 and 2
# workers; results in target/bench/results.md. About 12 minutes on 2 cores plus the build
# (a minute of it minting 20,000 sessions on the memory store, whose session creation
# slows as sessions accumulate; another the revocation stage's 100 node processes).
# --smoke: debug binaries (the test suite's build), 1 s per measurement, 1 round, 1 worker;
# results in target/bench/smoke.md. It checks only that every stage runs and produces
# numbers; test.sh runs it. No speed is ever asserted.
#
# Exits non-zero when a stage produced no numbers (no requests, errors above 1%, no table).
# Needs nginx, wrk, h2load (nghttp2-client), haproxy, redis-server, curl and python3. Servers listen
# on ephemeral loopback ports; everything started is stopped on exit.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
bench_dir=tests/bench
# shellcheck source=tests/bench/lib.sh
source "$bench_dir/lib.sh"

usage() { sed -n '5,6p' "$0" | sed 's/^#  *//'; }

all_stages="cache-hit tls assertion cache-miss h2 forward-auth flood logins revocation memory micro"
smoke=false
only=""
seconds=""
rounds=""
connections=50
results=""
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=true ;;
        --only) only=${2:?--only needs stage names}; shift ;;
        --seconds) seconds=${2:?--seconds needs a number}; shift ;;
        --rounds) rounds=${2:?--rounds needs a number}; shift ;;
        --connections) connections=${2:?--connections needs a number}; shift ;;
        --out) results=${2:?--out needs a file}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
    shift
done
stages=${only//,/ }
for stage in $stages; do
    case " $all_stages " in
        *" $stage "*) ;;
        *) echo "run.sh: unknown stage $stage (stages: $all_stages)" >&2; exit 64 ;;
    esac
done
stages=${stages:-$all_stages}

# h2load: few connections, many streams each, as browsers and HTTP/2 load balancers do.
h2_clients=10
h2_streams=10
if $smoke; then
    profile=debug
    seconds=${seconds:-1}
    rounds=${rounds:-1}
    worker_counts="1"
    sessions=2000
    cache_size=200
    results=${results:-target/bench/smoke.md}
else
    profile=release
    seconds=${seconds:-10}
    rounds=${rounds:-2}
    worker_counts="1 2"
    sessions=20000
    cache_size=2000
    results=${results:-target/bench/results.md}
fi
bin_dir=target/$profile

for tool in nginx wrk h2load redis-server curl python3 haproxy; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "run.sh: $tool is missing (Debian: apt-get install -y nginx wrk nghttp2-client redis-server haproxy)" >&2
        exit 1
    fi
done

work=$(mktemp -d)
cleanup() {
    stop_spawned
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
: > "$work/pids"

# --- build --------------------------------------------------------------------------------


export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
build_started=$SECONDS
if $smoke; then
    log "building debug binaries"
    cargo build --bins --locked
else
    log "building release binaries"
    cargo build --release --locked --bin control-plane --bin data-plane --bin gatehouse-bench
fi
build_seconds=$((SECONDS - build_started))
driver=$bin_dir/gatehouse-bench

# --- stage 1: cache-hit path ------------------------------------------------------------------

# record_wrk_round TARGET "RPS P50 P99": adds one wrk round to the calling stage's sum,
# p50s and p99s (its local arrays).
record_wrk_round() {
    local target=$1 rps p50 p99
    read -r rps p50 p99 <<< "$2"
    sum[$target]=$(add "${sum[$target]:-0}" "$rps")
    p50s[$target]+="${p50s[$target]:+, }$(fmt_latency "$p50")"
    p99s[$target]+="${p99s[$target]:+, }$(fmt_latency "$p99")"
}

stage_cache_hit() {
    emit "## Cache-hit path (HTTP/1.1, wrk)" ""
    emit "The same upstream (nginx \`return 200\`) reached (a) directly, (b) through nginx" \
        "\`proxy_pass\` with upstream keep-alive, (c) through nginx \`auth_request\` to an internal" \
        "location answering 204, (d) through a Gatehouse node with a cached session cookie (the" \
        "node's own HTTP/1.1 engine, \`fast_http1\`, the default), (e) through HAProxy without" \
        "authentication (\`http-reuse always\`), (f) through a second node with \`fast_http1 = false\`" \
        "(hyper's path), same session. \`wrk -t1 -c$connections -d${seconds}s --latency\`, $rounds" \
        "interleaved round(s); p50 and p99 per round; workers = nginx \`worker_processes\`, HAProxy" \
        "\`nbthread\` and the nodes' \`TOKIO_WORKER_THREADS\`." ""
    emit "| workers | target | req/s | p50 | p99 | req/s vs (b) |" "|---|---|---|---|---|---|"
    local workers round target result rps p50 p99 cookie url mean hyper_port
    for workers in $worker_counts; do
        start_upstream "$workers"
        start_nginx_proxy proxy "$workers"
        start_nginx_auth "$workers"
        start_haproxy "$workers"
        start_control_plane memory
        start_node "$workers" "" "" "" "fast_http1 = false"
        hyper_port=$node_port
        start_node "$workers"
        cookie=$(anonymous_cookie)
        local -A sum=() p50s=() p99s=()
        for round in $(seq "$rounds"); do
            for target in a b c d e f; do
                log "cache-hit: $workers worker(s), round $round, ($target)"
                case $target in
                    a) url=http://127.0.0.1:$upstream_port/ ;;
                    b) url=http://127.0.0.1:$proxy_port/ ;;
                    c) url=http://127.0.0.1:$auth_port/ ;;
                    d) url=http://127.0.0.1:$node_port/ ;;
                    e) url=http://127.0.0.1:$haproxy_port/ ;;
                    f) url=http://127.0.0.1:$hyper_port/ ;;
                esac
                if [ "$target" = d ] || [ "$target" = f ]; then
                    result=$(measure_wrk "cache-hit ($target)" -H "Cookie: $cookie" "$url")
                else
                    result=$(measure_wrk "cache-hit ($target)" "$url")
                fi
                record_wrk_round "$target" "$result"
            done
        done
        for target in a b c d e f; do
            mean=$(awk -v s="${sum[$target]}" -v n="$rounds" 'BEGIN { printf "%d\n", s / n + 0.5 }')
            emit "| $workers | $(cache_hit_label "$target") | $mean | ${p50s[$target]} | ${p99s[$target]} | $(ratio "${sum[$target]}" "${sum[b]}") |"
        done
        emit "| $workers | (d) vs (c) nginx auth_request | | | | $(ratio "${sum[d]}" "${sum[c]}") |"
        unset sum p50s p99s
        stop_spawned
    done
}

cache_hit_label() {
    case $1 in
        a) echo "(a) upstream directly" ;;
        b) echo "(b) nginx proxy_pass" ;;
        c) echo "(c) nginx auth_request" ;;
        d) echo "(d) Gatehouse, cached session" ;;
        e) echo "(e) HAProxy, no authentication" ;;
        f) echo "(f) Gatehouse, fast_http1 = false" ;;
    esac
}

# --- stage 1a: cache-hit path over TLS ------------------------------------------------------

stage_tls() {
    emit "## Cache-hit path over TLS (HTTP/1.1, wrk)" ""
    emit "The same upstream, the clients' connections over TLS (the dev CA's certificate," \
        "\`deploy/dev-ca.sh\`; wrk offers no ALPN, so HTTP/1.1): (b) nginx \`proxy_pass\` with" \
        "\`ssl\`, (d) a Gatehouse node with a cached session cookie (its own HTTP/1.1 engine)," \
        "(f) a second node with \`fast_http1 = false\` (hyper's path). Connections are kept" \
        "alive, so the handshakes are few. \`wrk -t1 -c$connections -d${seconds}s --latency\`," \
        "$rounds interleaved round(s)." ""
    emit "| workers | target | req/s | p50 | p99 | req/s vs (b) |" "|---|---|---|---|---|---|"
    local workers round target result cookie url mean hyper_port tls_toml tls_proxy_port
    local certs=$work/certs
    bash deploy/dev-ca.sh "$certs" > /dev/null 2>&1 || fail "tls: deploy/dev-ca.sh failed"
    tls_toml="[tls]
[[tls.certificates]]
cert_file = \"$certs/data-plane.pem\"
key_file = \"$certs/data-plane-key.pem\""
    for workers in $worker_counts; do
        start_upstream "$workers"
        tls_proxy_port=$(free_port)
        start_nginx tls-proxy "$workers" "$tls_proxy_port" "server { listen 127.0.0.1:$tls_proxy_port ssl;
            ssl_certificate $certs/data-plane.pem; ssl_certificate_key $certs/data-plane-key.pem;
            location / { proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
        start_control_plane memory
        start_node "$workers" "" "" "$tls_toml" "fast_http1 = false"
        hyper_port=$node_port
        start_node "$workers" "" "" "$tls_toml"
        cookie=$(curl -sk -D - -o /dev/null "https://127.0.0.1:$node_port/" |
            sed -n 's/^set-cookie: \([^;]*\).*/\1/Ip' | tr -d '\r' | head -n 1)
        [ -n "$cookie" ] || fail "tls: the node set no session cookie over TLS"
        local -A sum=() p50s=() p99s=()
        for round in $(seq "$rounds"); do
            for target in b d f; do
                log "tls: $workers worker(s), round $round, ($target)"
                case $target in
                    b) url=https://127.0.0.1:$tls_proxy_port/ ;;
                    d) url=https://127.0.0.1:$node_port/ ;;
                    f) url=https://127.0.0.1:$hyper_port/ ;;
                esac
                result=$(measure_wrk "tls ($target)" -H "Cookie: $cookie" "$url")
                record_wrk_round "$target" "$result"
            done
        done
        for target in b d f; do
            mean=$(awk -v s="${sum[$target]}" -v n="$rounds" 'BEGIN { printf "%d\n", s / n + 0.5 }')
            emit "| $workers | $(cache_hit_label "$target") over TLS | $mean | ${p50s[$target]} | ${p99s[$target]} | $(ratio "${sum[$target]}" "${sum[b]}") |"
        done
        unset sum p50s p99s
        stop_spawned
    done
}

# --- stage 1b: cache-hit path with a signed identity assertion -------------------------------

stage_assertion() {
    emit "## Cache-hit path with a signed identity assertion (HTTP/1.1, wrk)" ""
    emit "One node, two anonymous virtual proxies in front of the same nginx upstream: (e) the default" \
        "proxy without an assertion, (f) proxy \`signed\` sending an ES256 assertion (signed once per" \
        "session and kept on its cache entry), each with its own cached session cookie." \
        "\`wrk -t1 -c$connections -d${seconds}s --latency\`, $rounds interleaved round(s). Target: (f) at" \
        "least 0.95 of (e)." ""
    emit "| workers | target | req/s | p50 | p99 | req/s vs (e) |" "|---|---|---|---|---|---|"
    local workers round target result cookie_e cookie_f mean label
    for workers in $worker_counts; do
        start_upstream "$workers"
        start_control_plane memory "[[virtual_proxies]]
prefix = \"signed\"
anonymous = \"always\"
[virtual_proxies.upstream]
nodes = [\"127.0.0.1:$upstream_port\"]
[virtual_proxies.assertion]"
        start_node "$workers"
        cookie_e=$(anonymous_cookie /)
        cookie_f=$(anonymous_cookie /signed/)
        # The signed proxy passes a cached session before it is measured.
        curl -sf -o /dev/null -H "Cookie: $cookie_f" "http://127.0.0.1:$node_port/signed/" ||
            fail "assertion: the signed proxy did not pass a cached session"
        local -A sum=() p50s=() p99s=()
        for round in $(seq "$rounds"); do
            for target in e f; do
                log "assertion: $workers worker(s), round $round, ($target)"
                if [ "$target" = e ]; then
                    result=$(measure_wrk "assertion (e)" -H "Cookie: $cookie_e" "http://127.0.0.1:$node_port/")
                else
                    result=$(measure_wrk "assertion (f)" -H "Cookie: $cookie_f" "http://127.0.0.1:$node_port/signed/")
                fi
                record_wrk_round "$target" "$result"
            done
        done
        for target in e f; do
            mean=$(awk -v s="${sum[$target]}" -v n="$rounds" 'BEGIN { printf "%d\n", s / n + 0.5 }')
            if [ "$target" = e ]; then label="(e) cached session, no assertion"; else label="(f) cached session, signed assertion"; fi
            emit "| $workers | $label | $mean | ${p50s[$target]} | ${p99s[$target]} | $(ratio "${sum[$target]}" "${sum[e]}") |"
        done
        unset sum p50s p99s
        stop_spawned
    done
}

# --- stage 2: cache-miss path -----------------------------------------------------------------

stage_cache_miss() {
    emit "## Cache-miss path (HTTP/1.1, wrk)" ""
    emit "$sessions anonymous sessions, minted beforehand through another node, cycle through a node" \
        "whose cache holds $cache_size (\`[cache] max_sessions\`): each request carries the next" \
        "cookie (\`$bench_dir/rotate_cookies.lua\`), so it misses the cache and costs one" \
        "\`ValidateSession\` call. (d) is the same node with one cached cookie. One node worker" \
        "thread, control plane on the store named. \`wrk -t1 -c$connections -d${seconds}s --latency\`." \
        "\"validated / request\" is the node's \`validations_total{outcome=\"valid\"}\` over its" \
        "\`requests_total\` during the run (1.00: every request missed; the cache evicts by" \
        "sampling, so some sessions survive a full cycle)." ""
    emit "| store | target | req/s | p50 | p99 | validated / request | req/s vs (d) |" \
        "|---|---|---|---|---|---|---|"
    local store url result hit_rps hit_p50 hit_p99 rps p50 p99 valid0 valid1 logins0 logins1
    local requests0 requests1 requests per_request
    for store in memory redis; do
        start_upstream 1
        url=memory
        if [ "$store" = redis ]; then
            start_redis
            url=redis://127.0.0.1:$redis_port/
        fi
        start_control_plane "$url"
        start_node 1 "$cache_size"
        log "cache-miss ($store): minting $sessions sessions"
        python3 "$bench_dir/mint_sessions.py" "$node_port" "$sessions" "$work/cookies.txt" ||
            fail "cache-miss ($store): could not mint $sessions sessions"
        # The measured node starts with an empty cache: the one that minted the sessions
        # holds some of them, validated at various times.
        stop_pid "$node_pid"
        start_node 1 "$cache_size"

        log "cache-miss ($store): (d) one cached session"
        result=$(measure_wrk "cache-miss ($store), (d)" \
            -H "Cookie: $(head -n 1 "$work/cookies.txt")" "http://127.0.0.1:$node_port/")
        read -r hit_rps hit_p50 hit_p99 <<< "$result"

        log "cache-miss ($store): rotating $sessions sessions"
        valid0=$(node_metric gatehouse_validations_total 'outcome="valid"')
        logins0=$(node_metric gatehouse_logins_total)
        requests0=$(node_metric gatehouse_requests_total)
        result=$(measure_wrk "cache-miss ($store)" -s "$bench_dir/rotate_cookies.lua" \
            "http://127.0.0.1:$node_port/" -- "$work/cookies.txt")
        read -r rps p50 p99 <<< "$result"
        valid1=$(node_metric gatehouse_validations_total 'outcome="valid"')
        logins1=$(node_metric gatehouse_logins_total)
        requests1=$(node_metric gatehouse_requests_total)
        requests=$((requests1 - requests0))
        [ "$requests" -gt 0 ] || fail "cache-miss ($store): the node counted no requests"
        # A cookie the node did not accept would have become a new anonymous session.
        [ $(((logins1 - logins0) * 100)) -le "$requests" ] ||
            fail "cache-miss ($store): $((logins1 - logins0)) of $requests requests logged in anew: cookies refused"
        per_request=$(ratio "$((valid1 - valid0))" "$requests")
        awk -v r="$per_request" 'BEGIN { exit !(r >= 0.5) }' ||
            fail "cache-miss ($store): only $per_request validations per request: the cache was not missed"

        emit "| $store | (d) cached session | $(printf '%.0f' "$hit_rps") | $(fmt_latency "$hit_p50") | $(fmt_latency "$hit_p99") | | 1.00 |"
        emit "| $store | cache miss, $sessions sessions | $(printf '%.0f' "$rps") | $(fmt_latency "$p50") | $(fmt_latency "$p99") | $per_request | $(ratio "$rps" "$hit_rps") |"
        stop_spawned
    done
}

# --- stage 3: HTTP/2 clients ------------------------------------------------------------------

stage_h2() {
    emit "## HTTP/2 clients (h2c, h2load)" ""
    emit "h2load with prior knowledge (h2c) against (e) nginx \`proxy_pass\` on an \`http2\` listener" \
        "and (f) a Gatehouse node with a cached session cookie, both to the same nginx upstream" \
        "over pooled HTTP/1.1. \`h2load -t1 -c$h2_clients -m$h2_streams -D$seconds\`, $rounds interleaved" \
        "round(s); the time of one request (mean, standard deviation, max) per round." ""
    emit "| workers | target | req/s | mean | sd | max | req/s vs (e) |" "|---|---|---|---|---|---|---|"
    local workers round target result rps mean sd max cookie url
    for workers in $worker_counts; do
        start_upstream "$workers"
        # nginx ends a connection after 1000 requests (keepalive_requests); h2load does not
        # reconnect, so its clients would stop after a fraction of a second.
        start_nginx_proxy h2proxy "$workers" http2 "keepalive_requests 100000000;"
        start_control_plane memory
        start_node "$workers"
        cookie=$(anonymous_cookie)
        local -A sum=() means=() sds=() maxes=()
        for round in $(seq "$rounds"); do
            for target in e f; do
                log "h2: $workers worker(s), round $round, ($target)"
                if [ "$target" = e ]; then
                    result=$(measure_h2load "h2 (e)" "http://127.0.0.1:$proxy_port/")
                else
                    result=$(measure_h2load "h2 (f)" -H "cookie: $cookie" "http://127.0.0.1:$node_port/")
                fi
                read -r rps mean sd max <<< "$result"
                sum[$target]=$(add "${sum[$target]:-0}" "$rps")
                means[$target]+="${means[$target]:+, }$(fmt_latency "$mean")"
                sds[$target]+="${sds[$target]:+, }$(fmt_latency "$sd")"
                maxes[$target]+="${maxes[$target]:+, }$(fmt_latency "$max")"
            done
        done
        for target in e f; do
            if [ "$target" = e ]; then url="(e) nginx proxy_pass, http2"; else url="(f) Gatehouse, cached session"; fi
            emit "| $workers | $url | $(awk -v s="${sum[$target]}" -v n="$rounds" 'BEGIN { printf "%d\n", s / n + 0.5 }') | ${means[$target]} | ${sds[$target]} | ${maxes[$target]} | $(ratio "${sum[$target]}" "${sum[e]}") |"
        done
        unset sum means sds maxes
        stop_spawned
    done
}

# --- stage 3b: forward authentication -----------------------------------------------------------

stage_forward_auth() {
    emit "## Forward authentication (nginx auth_request, wrk)" ""
    emit "nginx \`auth_request\` in front of the same nginx upstream, asking (g) a trivial authorizer" \
        "(another nginx answering 200 with an identity header: the authorizer that costs nothing) and" \
        "(h) a Gatehouse node's forward-auth listener with a cached session cookie, over kept-alive" \
        "connections; the identity header is copied into the upstream request in both." \
        "\`wrk -t1 -c$connections -d${seconds}s --latency\`, $rounds interleaved round(s); p50 and p99 per" \
        "round; workers = each nginx's \`worker_processes\` and the node's \`TOKIO_WORKER_THREADS\`." ""
    emit "| workers | authorizer | req/s | p50 | p99 | req/s vs (g) |" "|---|---|---|---|---|---|"
    local workers round target result rps p50 p99 cookie mean label fa_port trivial_front gatehouse_front
    for workers in $worker_counts; do
        start_upstream "$workers"
        start_trivial_authorizer "$workers"
        start_nginx_forward_auth front-trivial "$workers" "$trivial_port"
        trivial_front=$forward_port
        start_control_plane memory
        fa_port=$(free_port)
        start_node "$workers" "" "$fa_port"
        wait_port "$fa_port" "the node's forward-auth listener"
        cookie=$(anonymous_cookie)
        start_nginx_forward_auth front-gatehouse "$workers" "$fa_port"
        gatehouse_front=$forward_port
        # The check must pass before it is measured: a refusal would be fast and wrong.
        curl -sf -o /dev/null -H "Cookie: $cookie" "http://127.0.0.1:$gatehouse_front/" ||
            fail "forward-auth: nginx did not pass a request Gatehouse should allow"
        local -A sum=() p50s=() p99s=()
        for round in $(seq "$rounds"); do
            for target in g h; do
                log "forward-auth: $workers worker(s), round $round, ($target)"
                if [ "$target" = g ]; then
                    result=$(measure_wrk "forward-auth (g)" -H "Cookie: $cookie" "http://127.0.0.1:$trivial_front/")
                else
                    result=$(measure_wrk "forward-auth (h)" -H "Cookie: $cookie" "http://127.0.0.1:$gatehouse_front/")
                fi
                record_wrk_round "$target" "$result"
            done
        done
        for target in g h; do
            mean=$(awk -v s="${sum[$target]}" -v n="$rounds" 'BEGIN { printf "%d\n", s / n + 0.5 }')
            if [ "$target" = g ]; then label="(g) trivial nginx endpoint"; else label="(h) Gatehouse, cached session"; fi
            emit "| $workers | $label | $mean | ${p50s[$target]} | ${p99s[$target]} | $(ratio "${sum[$target]}" "${sum[g]}") |"
        done
        unset sum p50s p99s
        stop_spawned
    done
}

# --- stage 3c: a flood of made-up cookies ------------------------------------------------------

# The node's default flood limits (`[flood]`, CONFIGURATION.md) per client address: unknown
# tokens and login starts, each 20 a second after a burst of 200.
flood_rate=20
flood_burst=200

# flood_round LABEL NODE-TOML: normal traffic (cached session) measured while one client floods
# "app" with made-up cookies, on a node started anew; writes "RPS P50 P99 FLOOD_REQUESTS CALLS
# LIMITED" to $work/flood-round. Not run in a subshell: the node it starts is the stage's.
flood_round() {
    local label=$1 flood_out calls0 calls1 watch0 watch1 limited0 limited1 result
    stop_pid "$node_pid"
    start_node 1 "" "" "$2"
    calls0=$(control_plane_metric gatehouse_control_plane_rpcs_total)
    watch0=$(control_plane_metric gatehouse_control_plane_rpcs_total '/Watch"')
    limited0=$(node_metric gatehouse_limited_requests_total)
    wrk -t1 -c20 -d"${seconds}s" -s "$bench_dir/random_cookies.lua" \
        "http://127.0.0.1:$node_port/app/hub" -- X-Qlik-Session-app > "$work/flood.txt" 2>&1 &
    local flood_pid=$!
    result=$(measure_wrk "flood, $label" -H "Cookie: $flood_cookie" "http://127.0.0.1:$node_port/")
    wait "$flood_pid" || fail "flood, $label: the flooding wrk failed: $(tail -n 1 "$work/flood.txt")"
    calls1=$(control_plane_metric gatehouse_control_plane_rpcs_total)
    watch1=$(control_plane_metric gatehouse_control_plane_rpcs_total '/Watch"')
    limited1=$(node_metric gatehouse_limited_requests_total)
    flood_out=$(awk '/ requests in / { print $1 }' "$work/flood.txt")
    [ -n "$flood_out" ] && [ "$flood_out" -gt 0 ] || fail "flood, $label: the flood sent no requests"
    printf '%s %s %s %s\n' "$result" "$flood_out" \
        "$(((calls1 - calls0) - (watch1 - watch0)))" "$((limited1 - limited0))" > "$work/flood-round"
}

stage_flood() {
    emit "## A flood of made-up cookies (wrk)" ""
    emit "Normal traffic (\`wrk -t1 -c$connections -d${seconds}s\`, one cached anonymous session," \
        "virtual proxy \"\") through one node (one worker), while one client floods virtual proxy" \
        "\"app\" (an authentication module, no anonymous access) from the same address with a new" \
        "random cookie on every GET (\`wrk -t1 -c20\`, \`$bench_dir/random_cookies.lua\`, each connection" \
        "waiting 8 ms before each request: at most about 2,500 a second): each is a" \
        "session-cache miss and, past it, a login start. Control plane on Redis. \"control-plane" \
        "calls\" are every call the control plane answered during the run but the node's \`Watch\`." \
        "Bound with the default limits, for one address: 2 × ($flood_burst + $flood_rate/s × (run + 1 s) + 20)" \
        "calls (both kinds of event: a burst, the refill over the run and its edges, and one more" \
        "per flood connection in flight when a bucket empties); the run fails past it. (a) is the same traffic without" \
        "the flood; (b) the flood with the limits off (\`per_second = 0\`), as before Gatehouse had" \
        "them." ""
    emit "| run | normal req/s | p50 | p99 | p99 vs (a) | flood requests | control-plane calls / s | 429s |" \
        "|---|---|---|---|---|---|---|---|"
    start_upstream 1
    start_redis
    start_control_plane "redis://127.0.0.1:$redis_port/" '
[[virtual_proxies]]
prefix = "app"
authentication_module_uri = "http://login.invalid/auth"
[virtual_proxies.upstream]
nodes = ["127.0.0.1:'"$upstream_port"'"]'
    start_node 1
    flood_cookie=$(anonymous_cookie)
    local idle rps p50 p99 requests calls limited row off bound
    log "flood: (a) normal traffic alone"
    idle=$(measure_wrk "flood, (a) idle" -H "Cookie: $flood_cookie" "http://127.0.0.1:$node_port/")
    read -r rps p50 p99 <<< "$idle"
    local idle_p99=$p99
    emit "| (a) no flood | $(printf '%.0f' "$rps") | $(fmt_latency "$p50") | $(fmt_latency "$p99") | 1.00 | 0 | | |"
    off='[flood.unknown_tokens]
address_per_second = 0
virtual_proxy_per_second = 0
[flood.login_starts]
address_per_second = 0
virtual_proxy_per_second = 0'
    for row in "(b) flood, limits off" "(c) flood, default limits"; do
        log "flood: $row"
        local toml=""
        [ "${row:1:1}" = b ] && toml=$off
        flood_round "$row" "$toml"
        read -r rps p50 p99 requests calls limited < "$work/flood-round"
        emit "| $row | $(printf '%.0f' "$rps") | $(fmt_latency "$p50") | $(fmt_latency "$p99") | $(ratio "$(latency_us "$p99")" "$(latency_us "$idle_p99")") | $requests | $(ratio "$calls" "$seconds") | $limited |"
        if [ "${row:1:1}" = c ]; then
            bound=$((2 * (flood_burst + flood_rate * (seconds + 1) + 20)))
            [ "$calls" -le "$bound" ] ||
                fail "flood: $calls control-plane calls with the default limits, more than the bound $bound"
        fi
    done
    stop_spawned
}

# --- stage 4: logins, revocation, memory (the gatehouse-bench driver) --------------------------

# The driver starts its own servers from --bin-dir and prints one Markdown table.
run_driver() { # subcommand title
    emit "## $2 (gatehouse-bench $1)" ""
    local args=("$1" --bin-dir "$bin_dir") out
    if $smoke; then args+=(--smoke); fi
    out=$("$driver" "${args[@]}") || fail "gatehouse-bench $1 failed (exit code $?)"
    local rows
    rows=$(grep -E '^[[:space:]]*\|' <<< "$out" || true)
    grep -qE '^[[:space:]]*\|[ :|-]+\|[[:space:]]*$' <<< "$rows" ||
        fail "gatehouse-bench $1 printed no Markdown table"
    grep -vE '^[[:space:]]*\|[ :|-]+\|[[:space:]]*$' <<< "$rows" | tail -n +2 | grep -q '[0-9]' ||
        fail "gatehouse-bench $1 printed a table without numbers"
    emit "$out"
}

stage_logins() { run_driver logins "Logins"; }
stage_revocation() { run_driver revocation "Revocation propagation"; }
stage_memory() { run_driver memory "Memory"; }

# --- stage 5: Criterion micro-benchmarks --------------------------------------------------------

stage_micro() {
    emit "## Micro-benchmarks (Criterion, data-plane hot path)" ""
    # The smoke runs each benchmark once in Criterion's test mode, built with the test
    # suite's debug profile: `cargo bench -- --test` would add an optimised build.
    if $smoke; then
        cargo test -p gatehouse-data-plane --bench hot_path --locked > "$work/criterion.txt" ||
            fail "cargo test --bench hot_path failed"
        emit "\`cargo test -p gatehouse-data-plane --bench hot_path\` (test mode: each benchmark runs once)." ""
    else
        cargo bench -p gatehouse-data-plane --bench hot_path --locked -- \
            --warm-up-time 1 --measurement-time 3 > "$work/criterion.txt" ||
            fail "cargo bench --bench hot_path failed"
        emit "\`cargo bench -p gatehouse-data-plane --bench hot_path\` (1 s warm-up, 3 s of" \
            "samples per benchmark): lower bound, estimate and upper bound of the time per" \
            "iteration." ""
    fi
    local table
    table=$(python3 "$bench_dir/criterion_table.py" < "$work/criterion.txt") ||
        fail "no Criterion benchmark result in the output of the hot_path bench"
    emit "$table"
}

# --- run ----------------------------------------------------------------------------------------

mkdir -p "$(dirname "$results")"
: > "$results"
mode=full
if $smoke; then mode="smoke (debug build, figures meaningless)"; fi
emit "# Gatehouse benchmarks" ""
emit "$(date -u '+%Y-%m-%d %H:%M UTC'), $mode, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
    "$(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))," \
    "$(nginx -v 2>&1 | sed 's/.*: //'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')," \
    "h2load $(h2load --version | awk '{ print $2 }'), redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')." \
    "Load generator, servers and upstream share the machine. Build: ${build_seconds} s."

failed=()
run_stage() { # name
    local name=$1 started=$SECONDS rc
    log "stage $name"
    rm -f "$work/failure"
    emit ""
    set +e
    (
        set -e
        trap stop_spawned EXIT
        "stage_${name//-/_}"
    )
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        failed+=("$name")
        emit "" "**Stage failed:** $(cat "$work/failure" 2>/dev/null || echo "exit code $rc")"
    fi
    emit "" "_Stage $name: $((SECONDS - started)) s._"
}

for stage in $stages; do run_stage "$stage"; done

if [ "${#failed[@]}" -gt 0 ]; then
    log "stages without numbers: ${failed[*]} (details in $results)"
    exit 1
fi
log "every stage produced numbers; results in $results"
