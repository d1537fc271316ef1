#!/usr/bin/env bash
# examples/resp.rs (a Redis-protocol server on the oneshotd library) side
# by side with redis-server, all driven by Redis's own redis-benchmark, in
# interleaved rounds on loopback with the same client settings: PING (the
# RESP form), SET and GET with 50 clients, without and with pipelining.
# Two redis-servers: its default single thread, and `io-threads 2` with
# threaded reads (its main thread plus one I/O thread). Every server
# shares the machine's cores with the load generator; redis-server runs
# with persistence off (no RDB, no AOF), an in-memory store like resp.
#
# For each server and run: requests per second, the server's CPU per
# request (user + system, from /proc), and redis-benchmark's own CPU in
# cores (it is single-threaded: 1.00 means it was the bottleneck).
#
# Settings (environment): ROUNDS=3 REQUESTS=200000 (at pipeline 1; a run
#   with pipeline P sends P/2 times as many, so that it lasts about as
#   long) CLIENTS=50 PIPELINES="1 16" TESTS="ping_mbulk set get"
#   WORKERS=2 (resp's workers)
#   BASELINE=path/to/an/older/resp: runs it too, for a before/after
# Needs redis-tools and redis-server (Debian's). Usage: bash bench/resp.sh
set -euo pipefail
# `times` and awk read and write numbers with a decimal point.
export LC_ALL=C
# A relative BASELINE is where the caller stands, before the cd below.
[ -z "${BASELINE:-}" ] || BASELINE=$(realpath "$BASELINE")
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"ping_mbulk set get"}
WORKERS=${WORKERS:-2}
BASELINE=${BASELINE:-}
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

# The servers, in column order: names, short names, ports, pids.
names=() shorts=() ports=()
resp() { # resp NAME SHORT PORT BINARY
    printf 'workers = %s\nlisten = ["127.0.0.1:%s"]\nlog_level = "warn"\n' "$WORKERS" "$3" >"$tmp/$3.toml"
    "$4" --config "$tmp/$3.toml" 2>"$tmp/$3.log" &
    pids+=($!) names+=("$1") shorts+=("$2") ports+=("$3")
}
redis() { # redis NAME SHORT PORT [OPTION...]
    local name=$1 short=$2 port=$3
    shift 3
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$tmp" "$@" >"$tmp/$port.log" 2>&1 &
    pids+=($!) names+=("$name") shorts+=("$short") ports+=("$port")
}
resp resp resp 16380 "${CARGO_TARGET_DIR:-target}/release/examples/resp"
redis "redis (1 thread)" redis 16379
redis "redis (io-threads 2)" io2 16381 --io-threads 2 --io-threads-do-reads yes
[ -z "$BASELINE" ] || resp "resp (baseline)" base 16382 "$BASELINE"
for port in "${ports[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p "$port" ping >/dev/null || { echo "server on $port did not start" >&2; exit 1; }
done

# run PORT PID TEST PIPELINE REQUESTS: "req/s server-µs/request load-generator-cores"
run() {
    local ticks_before ticks_after start end out
    ticks_before=$(awk '{ print $14 + $15 }' "/proc/$2/stat")
    start=$(date +%s.%N)
    # `times` after the benchmark: its second line is the children's
    # (redis-benchmark's) user and system CPU.
    out=$( (redis-benchmark -p "$1" -t "$3" -n "$5" -c "$CLIENTS" -P "$4" -q 2>/dev/null; times) | tr '\r' '\n')
    end=$(date +%s.%N)
    ticks_after=$(awk '{ print $14 + $15 }' "/proc/$2/stat")
    awk -v out="$out" -v ticks="$((ticks_after - ticks_before))" -v hz="$(getconf CLK_TCK)" \
        -v start="$start" -v end="$end" -v n="$5" '
        function seconds(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
        BEGIN {
            lines = split(out, line, "\n")
            for (i = 1; i <= lines; i++) {
                if (line[i] ~ /requests per second/ && rps == "") {
                    fields = split(line[i], f, /[: ]+/)
                    for (j = 1; j <= fields; j++) if (f[j] ~ /^[0-9.]+$/) { rps = f[j]; break }
                }
            }
            split(line[lines], cpu, " ")
            if (rps == "") exit 1
            printf "%.0f %.2f %.2f\n", rps, ticks / hz / n * 1e6, (seconds(cpu[1]) + seconds(cpu[2])) / (end - start)
        }'
}

count=${#ports[@]}
echo "resp (oneshotd library, $WORKERS workers) vs redis-server $(redis-server --version | awk '{print $3}'),"
echo "$CLIENTS clients, $REQUESTS requests per run (times pipeline/2 when pipelined), $(nproc) cores shared with redis-benchmark."
echo "Each server: requests per second, server CPU µs per request, redis-benchmark's CPU in cores; then resp's ratio to each."
printf '%-10s %-3s %-2s' test -P "#"
for name in "${names[@]}"; do printf ' | %-26s' "$name"; done
for short in "${shorts[@]:1}"; do printf ' | %-6s' "/$short"; done
echo
for pipeline in $PIPELINES; do
    requests=$((REQUESTS * (pipeline > 1 ? pipeline / 2 : 1)))
    for test in $TESTS; do
        for round in $(seq "$ROUNDS"); do
            # Who goes first turns with the round, so that no server always
            # follows the same one.
            results=()
            for turn in $(seq 0 $((count - 1))); do
                i=$(((round + turn) % count))
                results[i]=$(run "${ports[i]}" "${pids[i]}" "$test" "$pipeline" "$requests") ||
                    { echo "resp bench: redis-benchmark gave no figure from ${names[i]} ($test, -P $pipeline)" >&2; exit 1; }
            done
            printf '%-10s %-3s %-2s' "$test" "$pipeline" "$round"
            for result in "${results[@]}"; do
                read -r rps us load <<<"$result"
                printf ' | %9s %5s µs %5s  ' "$rps" "$us" "$load"
            done
            ours=${results[0]%% *}
            for result in "${results[@]:1}"; do
                printf ' | %6s' "$(awk -v a="$ours" -v b="${result%% *}" 'BEGIN { printf "%.2f", a / b }')"
            done
            echo
        done
    done
done
