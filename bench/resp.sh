#!/usr/bin/env bash
# examples/resp.rs (a Redis-protocol server on the oneshotd library) side
# by side with redis-server, both driven by Redis's own redis-benchmark, in
# interleaved rounds on loopback: SET and GET with 50 clients, without and
# with pipelining. Both servers are given the same 2 cores as the load
# generator; redis-server runs with persistence off (no RDB, no AOF), as an
# in-memory store like resp, and with its single thread (its default).
#
# Settings (environment): ROUNDS=3 REQUESTS=200000 CLIENTS=50 PIPELINES="1 16"
#   WORKERS=2 (resp's workers)
# Needs redis-tools and redis-server (Debian's). Usage: bash bench/resp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PIPELINES=${PIPELINES:-"1 16"}
WORKERS=${WORKERS:-2}
for tool in redis-benchmark redis-server; do
    command -v "$tool" >/dev/null || { echo "resp bench: $tool missing (apt install redis-tools redis-server)" >&2; exit 2; }
done
cargo build --release --locked --example resp >/dev/null 2>&1 || cargo build --release --locked --example resp
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
RESP_PORT=16380 REDIS_PORT=16379
printf 'workers = %s\nlisten = ["127.0.0.1:%s"]\nlog_level = "warn"\n' "$WORKERS" "$RESP_PORT" >"$tmp/resp.toml"
"${CARGO_TARGET_DIR:-target}/release/examples/resp" --config "$tmp/resp.toml" 2>"$tmp/resp.log" &
pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
for port in $RESP_PORT $REDIS_PORT; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p "$port" ping >/dev/null || { echo "server on $port did not start" >&2; exit 1; }
done
echo "resp (oneshotd library, $WORKERS workers) vs redis-server $(redis-server --version | awk '{print $3}'), $CLIENTS clients, $REQUESTS requests per run, $(nproc) cores shared"
printf '%-10s %-6s %5s %14s %14s %7s\n' test pipeline round "resp req/s" "redis req/s" ratio
rps() { # rps PORT TEST PIPELINE
    redis-benchmark -p "$1" -t "$2" -n "$REQUESTS" -c "$CLIENTS" -P "$3" -q 2>/dev/null |
        tr '\r' '\n' | awk -F'[: ]+' '/requests per second/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { print $i; exit } }'
}
for pipeline in $PIPELINES; do
    for test in set get; do
        for round in $(seq "$ROUNDS"); do
            ours=$(rps $RESP_PORT $test "$pipeline")
            theirs=$(rps $REDIS_PORT $test "$pipeline")
            ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
            printf '%-10s %-6s %5s %14s %14s %7s\n' "$test" "$pipeline" "$round" "$ours" "$theirs" "$ratio"
        done
    done
done
