#!/usr/bin/env bash
# How much memory hostile clients make oneshotd hold: N clients that send
# request lines as fast as the server reads them and never read a reply.
# For each N and each server (the base binary, without a memory budget; the
# new one with its default max_buffered_bytes; the new one with a small
# budget) it starts the server (workers = 2, log_level = "warn",
# max_connections = 10000), takes its VmRSS at rest, then the load generator
# (bench/src/bin/hostile_load.rs) opens N loopback clients, each with a
# small SO_RCVBUF set before connecting (so the kernel holds few replies on
# the client's side), and has each pipeline LINE_BYTES-byte lines without
# reading, at most MAX_BYTES per client, until the server stops reading:
# its oneshotd_received_bytes_total{service="upper"} unchanged for QUIET_MS.
# Then it records the server's VmRSS, VmHWM (its peak since start) and
# gauges, and what the kernel holds. Every run is bounded (MAX_SECS of
# pumping, RSS_CAP_MIB of server RSS, a timeout on the whole) and the server
# and the clients are stopped at its end, whatever happens.
#
# Mind the kernel: the server's socket send buffers autotune up to
# net.ipv4.tcp_wmem's maximum (4 MiB here) and its receive buffers up to
# tcp_rmem's, so with few clients most bytes sit in the kernel, not in the
# server; with thousands, net.ipv4.tcp_mem (machine-wide, so other work on
# the machine counts too) limits every socket, and the server holds more.
# The kernel columns of the raw results (ss_*, tcp_mem_pages_*, TCP*
# counters) say where the bytes were.
#
# Usage: bash bench/hostile.sh [BASE_BIN [NEW_BIN]]
#   BASE_BIN (or BASE=): a build without the memory budget, e.g. from the
#     commit before it:  git archive 1b0ca79 | tar -x -C /tmp/base &&
#     (cd /tmp/base && cargo build --release) -> /tmp/base/target/release/oneshotd
#     Default: /tmp/oneshotd-base if it exists; otherwise the base runs are
#     skipped.
#   NEW_BIN (or NEW=): default: this tree's, built by the script
#     ($CARGO_TARGET_DIR or target/, release).
# Settings (environment):
#   CLIENTS="100 1000 5000" LINE_BYTES=1024 MAX_BYTES=8388608 RCVBUF=16384
#   QUIET_MS=1000 MAX_SECS=60 RSS_CAP_MIB=12288 SMALL_BUDGET=33554432
#   PORT_BASE=24100 (two ports per run, below the ephemeral range)
#   RESULTS=FILE (keep the raw key=value lines)
#   SMOKE=1 (CLIENTS=100, MAX_BYTES=6 MiB: a quick check of the script)
#
# STARVE=1: instead, whether a client that reads is served while others
# hold the budget (issue 35). For each N of STARVE_CLIENTS ("0 600 1000
# 2000"; 0 is the idle daemon) and each binary (base and new, in turn
# first), a server with max_buffered_bytes = STARVE_BUDGET (32 MiB) and 2
# workers; N non-readers each pipeline STARVE_BYTES (2 MiB) of 100-byte
# lines with a 4 KiB receive buffer and never read, until the server stops
# reading; then READERS (6) readers, one after another, each a new client
# with a 4 KiB receive buffer that sends 2 MiB of 100-byte lines while
# reading and verifying every reply (hostile_load --readers). Reported: the
# slowest reader's throughput, the median's, the longest stall, and the
# deltas of `nstat -az TcpExtTCPMemoryPressures TcpExtTCPRcvQDrop` over the
# run (machine-wide: other work on the machine counts too). Each reader
# gives up after READER_MAX_SECS (20). Settings: STARVE_ROUNDS=1,
# STARVE_SNDBUF= (the non-readers' SO_SNDBUF; by default the kernel's:
# on loopback their own unsent requests, MiBs each, count against the
# machine's tcp_mem as much as the server's sockets do; a remote client's
# would not).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-"100 1000 5000"}
LINE_BYTES=${LINE_BYTES:-1024}
MAX_BYTES=${MAX_BYTES:-8388608}
RCVBUF=${RCVBUF:-16384}
QUIET_MS=${QUIET_MS:-1000}
MAX_SECS=${MAX_SECS:-60}
RSS_CAP_MIB=${RSS_CAP_MIB:-12288}
SMALL_BUDGET=${SMALL_BUDGET:-33554432}
PORT_BASE=${PORT_BASE:-24100}
if [ -n "${SMOKE:-}" ]; then
    CLIENTS=100 MAX_BYTES=$((6 << 20))
fi
STARVE=${STARVE:-}
STARVE_CLIENTS=${STARVE_CLIENTS:-"0 600 1000 2000"}
STARVE_BUDGET=${STARVE_BUDGET:-33554432}
STARVE_BYTES=${STARVE_BYTES:-2097152}
STARVE_ROUNDS=${STARVE_ROUNDS:-1}
STARVE_SNDBUF=${STARVE_SNDBUF:-}
READERS=${READERS:-6}
READER_MAX_SECS=${READER_MAX_SECS:-20}
if [ -n "$STARVE" ] && [ -n "${SMOKE:-}" ]; then
    STARVE_CLIENTS="0 100" READERS=2
fi

BASE=${1:-${BASE:-}}
NEW=${2:-${NEW:-}}
if [ -z "$BASE" ] && [ -x /tmp/oneshotd-base ]; then BASE=/tmp/oneshotd-base; fi
TARGET=${CARGO_TARGET_DIR:-target}
build=(-p oneshotd-bench --bin hostile_load)
[ -n "$NEW" ] || build+=(-p oneshotd --bin oneshotd)
cargo build --release "${build[@]}" >/dev/null 2>&1 || cargo build --release "${build[@]}"
NEW=${NEW:-$TARGET/release/oneshotd}
LOAD=$TARGET/release/hostile_load
for bin in ${BASE:+"$BASE"} "$NEW" "$LOAD"; do
    [ -x "$bin" ] || { echo "hostile: $bin is not an executable" >&2; exit 2; }
done

ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
server= load=
stop() { # stop PID: SIGTERM, then SIGKILL after 15 s
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    [ -n "$load" ] && stop "$load"
    [ -n "$server" ] && stop "$server"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. bench/server.sh
results=${RESULTS:-$tmp/results.txt}
: >"$results"
next_port=$PORT_BASE

# run N LABEL BIN [max_buffered_bytes [hostile_load flags...]]: one
# server, N hostile clients.
run() {
    local conns=$1 label=$2 bin=$3 budget=${4:-} out status
    shift $(($# < 4 ? $# : 4))
    port=$next_port mport=$((next_port + 1))
    next_port=$((next_port + 2))
    {
        echo "workers = 2"
        echo "listen = [\"127.0.0.1:$port\"]"
        echo "metrics_listen = [\"127.0.0.1:$mport\"]"
        echo "max_connections = 10000"
        echo "log_level = \"warn\""
        [ -z "$budget" ] || echo "max_buffered_bytes = $budget"
    } >"$tmp/oneshotd.toml"
    "$bin" --config "$tmp/oneshotd.toml" 2>"$tmp/server.log" &
    server=$!
    server_started oneshotd "$port" hostile
    sleep 0.5 # let the probe connection's close settle before RSS at rest
    status=0
    timeout --kill-after=5 $((MAX_SECS + 120)) "$LOAD" --addr "127.0.0.1:$port" \
        --metrics "127.0.0.1:$mport" --conns "$conns" --server-pid "$server" \
        --line-bytes "$LINE_BYTES" --max-bytes "$MAX_BYTES" --rcvbuf "$RCVBUF" \
        --quiet-ms "$QUIET_MS" --max-secs "$MAX_SECS" --rss-cap-mib "$RSS_CAP_MIB" "$@" \
        >"$tmp/load.out" 2>"$tmp/load.err" </dev/null &
    load=$!
    wait "$load" || status=$?
    load=
    out=$(cat "$tmp/load.out")
    stop "$server"
    server=
    if [ "$status" != 0 ] || [ -z "$out" ]; then
        cat "$tmp/load.err" "$tmp/server.log" >&2
        echo "hostile: $label with $conns clients failed (status $status)" >&2
        exit 1
    fi
    local warnings
    warnings=$(grep -c . "$tmp/server.log" || true)
    echo "clients=$conns server=$label $out server_log_lines=$warnings" | tee -a "$results"
}

# nstat_now: "pressures rcvqdrops", the machine's counters now.
nstat_now() {
    nstat -azs TcpExtTCPMemoryPressures TcpExtTCPRcvQDrop |
        awk '$1 == "TcpExtTCPMemoryPressures" { p = $2 } $1 == "TcpExtTCPRcvQDrop" { d = $2 } END { print p + 0, d + 0 }'
}

if [ -n "$STARVE" ]; then
    [ -n "$BASE" ] || echo "hostile: no base binary: only the new one runs" >&2
    echo "starvation: budget $STARVE_BUDGET B, 2 workers; non-readers: $STARVE_BYTES B of 100-byte lines each," \
        "4 KiB SO_RCVBUF, never read; then $READERS readers one after another (4 KiB SO_RCVBUF, $STARVE_BYTES B" \
        "each, sent while reading; every reply byte verified); non-readers' SO_SNDBUF: ${STARVE_SNDBUF:-kernel default};" \
        "$(nproc) cores, shared with other work"
    echo "kernel $(uname -r): tcp_mem=($(sysctl -n net.ipv4.tcp_mem)) pages, tcp_wmem=($(sysctl -n net.ipv4.tcp_wmem))"
    echo "base: ${BASE:-(none: skipped)}   new: $NEW"
    turn=0
    for round in $(seq "$STARVE_ROUNDS"); do
        for conns in $STARVE_CLIENTS; do
            if [ -z "$BASE" ]; then order="new"; elif [ $((turn % 2)) = 0 ]; then order="new base"; else order="base new"; fi
            turn=$((turn + 1))
            for which in $order; do
                bin=$NEW
                [ "$which" = new ] || bin=$BASE
                read -r p0 d0 < <(nstat_now)
                LINE_BYTES=100 MAX_BYTES=$STARVE_BYTES RCVBUF=4096 \
                    run "$conns" "$which" "$bin" "$STARVE_BUDGET" --readers "$READERS" \
                    --reader-bytes "$STARVE_BYTES" --reader-rcvbuf 4096 --reader-line-bytes 100 \
                    --reader-max-secs "$READER_MAX_SECS" ${STARVE_SNDBUF:+--sndbuf "$STARVE_SNDBUF"} >/dev/null
                read -r p1 d1 < <(nstat_now)
                # The line run appended, with the nstat deltas and the round.
                sed -i "\$s/\$/ round=$round nstat_pressures=$((p1 - p0)) nstat_rcvqdrop=$((d1 - d0))/" "$results"
                tail -n 1 "$results"
            done
        done
    done
    echo
    awk '
    function field(k,   i, kv) {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
        return ""
    }
    BEGIN {
        printf "%5s %8s %-5s | %12s %12s %10s %10s | %9s %9s | %9s %9s %9s %9s %9s %10s\n", "round", "non-rdrs", "build",
            "slowest KiB/s", "median KiB/s", "max stall", "unfinished", "pressures", "rcvqdrop",
            "srv sendq", "srv recvq", "cli sendq", "tcp pages", "buffered", "end"
    }
    {
        printf "%5s %8s %-5s | %12.0f %12.0f %8s ms %10s | %9s %9s | %9.1f %9.1f %9.1f %9s %9.1f %10s\n", field("round"), field("clients"),
            field("server"), field("reader_min_bps") / 1024, field("reader_median_bps") / 1024,
            field("reader_max_stall_ms"), field("readers_unfinished"), field("nstat_pressures"),
            field("nstat_rcvqdrop"), field("ss_server_sendq") / 1048576, field("ss_server_recvq") / 1048576,
            field("ss_client_sendq") / 1048576, field("tcp_mem_pages_stalled"), field("buffered_bytes") / 1048576, field("end")
    }' "$results"
    echo "(slowest/median: reader throughput; pressures, rcvqdrop: nstat deltas over the run; at the stall, in MiB: the" \
        "server sockets' Send-Q and Recv-Q sums and the non-readers' Send-Q sum (ss), oneshotd_buffered_bytes;" \
        "tcp pages: all TCP sockets' pages (/proc/net/sockstat; tcp_mem above))"
    exit 0
fi

echo "hostile clients: ${LINE_BYTES}-byte lines, at most $MAX_BYTES bytes per client, SO_RCVBUF $RCVBUF," \
    "stall = no bytes read for ${QUIET_MS} ms; $(nproc) cores"
echo "kernel: tcp_wmem=($(sysctl -n net.ipv4.tcp_wmem)) tcp_rmem=($(sysctl -n net.ipv4.tcp_rmem))" \
    "tcp_mem=($(sysctl -n net.ipv4.tcp_mem)) pages"
echo "base: ${BASE:-(none: skipped)}   new: $NEW"
for conns in $CLIENTS; do
    [ -z "$BASE" ] || run "$conns" "base:none" "$BASE"
    run "$conns" "new:256MiB" "$NEW"
    run "$conns" "new:$((SMALL_BUDGET >> 20))MiB" "$NEW" "$SMALL_BUDGET"
done

echo
awk '
function field(k,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
    return ""
}
function mib(v) { return v == "n/a" || v == "" ? "n/a" : sprintf("%.1f", v / 1048576) }
BEGIN {
    printf "%7s  %-12s %9s %9s %9s %9s %11s %10s %9s  %s\n", "clients", "binary/budget",
        "rest MiB", "stall MiB", "growth", "peak MiB", "read MiB", "buffered", "throttled", "end"
}
{
    rest = field("rss_rest"); stalled = field("rss_stalled")
    printf "%7s  %-12s %9s %9s %9s %9s %11s %10s %9s  %s\n", field("clients"), field("server"),
        mib(rest), mib(stalled), mib(stalled - rest), mib(field("vm_hwm")), mib(field("received")),
        mib(field("buffered_bytes")), field("throttled"), field("end")
}' "$results"
echo "(MiB columns: VmRSS at rest and when stalled, their difference, VmHWM, bytes the server read," \
    "oneshotd_buffered_bytes; throttled: oneshotd_connections_throttled; n/a: the base has no budget)"
