#!/usr/bin/env bash
# oneshotd against a baseline (tokio by default), one after the other in the same run,
# with the same settings: req/s, latency percentiles, syscalls per reply
# (perf stat, if available) and memory per idle connection. Loopback only;
# every loadgen run verifies every reply byte and a run with errors fails.
#
# Settings (environment): WORKERS=2 SECS=5 BYTES=64 ROUNDS=1 IDLE=10000
#   SYSCALL_SECS=2  (length of the separate run that counts system calls)
#   SCENARIOS="50x1 50x16 2000x1"  (connections x pipeline)
#   BASELINE=tokio  (the default baseline: tokio_upper, idiomatic tokio)
#   BASELINE=et     (et_upper: one thread, edge-triggered, no re-arm; the
#                    practical ceiling on a 2-core machine, for reference)
#   BASELINE=rev    (oneshotd itself as built from git revision BASELINE_REV,
#                    default: the merge-base with main; the oneshotd under
#                    test then also serves its metrics endpoint. The cost of
#                    a change, e.g. of counting metrics: metrics on vs off)
#   BASELINE=PATH   (a oneshotd binary already built, e.g. an earlier
#                    commit's: BASELINE=/work/wt-base/target/release/oneshotd;
#                    same configuration as the one under test, no metrics
#                    for either; reported like rev)
# Usage: bench/run.sh            SMOKE=1 bench/run.sh (a few seconds, for CI)
set -euo pipefail
# A BASELINE path is relative to where the caller stands, before the cd.
base_bin=
case ${BASELINE:-} in */*) base_bin=$(realpath "$BASELINE") BASELINE=bin ;; esac
cd "$(dirname "$0")/.."
. bench/server.sh

WORKERS=${WORKERS:-2}
SECS=${SECS:-5}
BYTES=${BYTES:-64}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-10000}
SYSCALL_SECS=${SYSCALL_SECS:-2}
SCENARIOS=${SCENARIOS:-"50x1 50x16 2000x1"}
BASELINE=${BASELINE:-tokio}
case $BASELINE in
tokio | et | rev) ;;
bin) [ -x "$base_bin" ] || { echo "bench: $base_bin is not an executable" >&2; exit 2; } ;;
*) echo "bench: BASELINE must be tokio, et, rev or a path to a oneshotd binary" >&2; exit 2 ;;
esac
if [ -n "${SMOKE:-}" ]; then
    SECS=1 SYSCALL_SECS=1 IDLE=200 SCENARIOS="10x1 10x8"
fi
PORT_ONESHOTD=${PORT_ONESHOTD:-17878}
PORT_BASELINE=${PORT_BASELINE:-17879}
PORT_METRICS=${PORT_METRICS:-17880}

cargo build --release --locked -p oneshotd -p oneshotd-bench >/dev/null 2>&1 ||
    cargo build --release --locked -p oneshotd -p oneshotd-bench
# Enough descriptors for the idle scenario (each process needs IDLE + a few).
ulimit -n "$(ulimit -Hn)"
BIN=target/release
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/oneshotd.toml" <<EOF
workers = $WORKERS
listen = ["127.0.0.1:$PORT_ONESHOTD"]
max_connections = 100000
log_level = "warn"
EOF

if [ "$BASELINE" = rev ]; then
    # The revision's own sources, built in a target directory of their own
    # (kept between runs); its config has no key it may not know.
    BASELINE_REV=$(git rev-parse --short "${BASELINE_REV:-$(git merge-base HEAD main)}")
    mkdir -p "$tmp/rev"
    git archive "$BASELINE_REV" | tar -x -C "$tmp/rev"
    CARGO_TARGET_DIR=$PWD/target/bench-rev cargo build --release --locked -p oneshotd \
        --manifest-path "$tmp/rev/Cargo.toml" >/dev/null 2>&1 ||
        { echo "bench: cannot build $BASELINE_REV" >&2; exit 1; }
    rev_bin=$PWD/target/bench-rev/release/oneshotd
    sed "s/:$PORT_ONESHOTD/:$PORT_BASELINE/" "$tmp/oneshotd.toml" >"$tmp/rev.toml"
    echo "metrics_listen = [\"127.0.0.1:$PORT_METRICS\"]" >>"$tmp/oneshotd.toml"
fi
if [ "$BASELINE" = bin ]; then
    rev_bin=$base_bin
    sed "s/:$PORT_ONESHOTD/:$PORT_BASELINE/" "$tmp/oneshotd.toml" >"$tmp/rev.toml"
fi

have_perf=
if perf stat -e raw_syscalls:sys_enter -x, -o /dev/null -- true 2>/dev/null; then have_perf=1; fi
# System calls by kind, for the breakdown table. Counting a syscall
# tracepoint puts every thread on the machine (the load generator too) on
# the kernel's slower traced syscall path, ~0.13 us per call here
# (`perf bench syscall basic`: 0.17 -> 0.31 us), which would charge the
# server that makes more calls; so they are counted in a separate, shorter
# run, and the timed run counts only CPU time and context switches.
declare -A syscall_kind=(
    [recvfrom]=read [read]=read [readv]=read [recvmsg]=read
    [sendto]=write [write]=write [writev]=write [sendmsg]=write
    [epoll_ctl]=ctl [epoll_wait]=wait [epoll_pwait]=wait [epoll_pwait2]=wait
)
# The events to count, and "name=kind ..." for the awk that sorts them.
syscall_events=raw_syscalls:sys_enter
syscall_kinds=
if [ -n "$have_perf" ]; then
    for name in "${!syscall_kind[@]}"; do
        if perf stat -e "syscalls:sys_enter_$name" -x, -o /dev/null -- true 2>/dev/null; then
            syscall_events+=",syscalls:sys_enter_$name"
            syscall_kinds+="$name=${syscall_kind[$name]} "
        fi
    done
fi

# start_server oneshotd|tokio|et -> sets $server (pid) and $port
start_server() {
    case $1 in
    oneshotd)
        port=$PORT_ONESHOTD
        "$BIN/oneshotd" --config "$tmp/oneshotd.toml" 2>"$tmp/server.log" &
        ;;
    rev | bin)
        port=$PORT_BASELINE
        "$rev_bin" --config "$tmp/rev.toml" 2>"$tmp/server.log" &
        ;;
    tokio | et)
        port=$PORT_BASELINE
        "$BIN/$1_upper" --addr "127.0.0.1:$port" --workers "$WORKERS" 2>"$tmp/server.log" &
        ;;
    esac
    server=$!
    server_started "$1" "$port" bench
}

field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# load kind conns pipeline -> prints
#   "req_per_s p50 p99 p999 cpu_us_per_reply switches_per_reply
#    syscalls_per_reply read write ctl wait other"
# (all the server's threads together; per-reply figures "n/a" without
# perf; syscalls from a second run of SYSCALL_SECS against the same server,
# by kind: read/recv*, write/send*, epoll_ctl, epoll_wait/pwait, other).
load() {
    local kind=$1 conns=$2 pipeline=$3 out total
    start_server "$kind"
    local cmd=("$BIN/loadgen" --addr "127.0.0.1:$port" --conns "$conns" --pipeline "$pipeline" --bytes "$BYTES")
    if [ -z "$have_perf" ]; then
        out=$("${cmd[@]}" --secs "$SECS") || { stop_server; return 1; }
        stop_server
        echo "$(field req_per_s "$out") $(field p50_us "$out") $(field p99_us "$out") $(field p999_us "$out") n/a n/a n/a n/a n/a n/a n/a n/a"
        return 0
    fi
    out=$(perf stat -e task-clock,context-switches -x, -o "$tmp/perf.txt" -p "$server" -- "${cmd[@]}" --secs "$SECS") || { stop_server; return 1; }
    total=$(field total "$out")
    # task-clock is in milliseconds.
    local cpu
    cpu=$(awk -F, -v t="$total" '/task-clock/ {c = $1} /context-switches/ {w = $1}
        END { printf "%.2f %.3f", c * 1000 / t, w / t }' "$tmp/perf.txt")
    local counted
    counted=$(perf stat -e "$syscall_events" -x, -o "$tmp/syscalls.txt" -p "$server" -- "${cmd[@]}" --secs "$SYSCALL_SECS") || { stop_server; return 1; }
    stop_server
    local syscalls
    syscalls=$(awk -F, -v t="$(field total "$counted")" -v kinds="$syscall_kinds" '
        BEGIN { n = split(kinds, pairs, " "); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); kind[kv[1]] = kv[2] } }
        $3 == "raw_syscalls:sys_enter" { all = $1; next }
        $3 ~ /^syscalls:sys_enter_/ { name = substr($3, 20); by[kind[name]] += $1 }
        END { printf "%.3f %.3f %.3f %.3f %.3f %.3f", all / t, by["read"] / t, by["write"] / t, by["ctl"] / t, by["wait"] / t,
              (all - by["read"] - by["write"] - by["ctl"] - by["wait"]) / t }' "$tmp/syscalls.txt")
    echo "$(field req_per_s "$out") $(field p50_us "$out") $(field p99_us "$out") $(field p999_us "$out") $cpu $syscalls"
}

# median of the numbers on stdin (n/a if none)
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# idle kind -> prints bytes of server RSS per idle connection
idle() {
    local kind=$1 before after
    start_server "$kind"
    before=$(rss_kib "$server")
    "$BIN/loadgen" --addr "127.0.0.1:$port" --idle "$IDLE" --secs 30 >"$tmp/idle.out" &
    local holder=$!
    for _ in $(seq 600); do grep -q idle_ready "$tmp/idle.out" && break; sleep 0.05; done
    grep -q idle_ready "$tmp/idle.out" || { echo "bench: idle connections not ready" >&2; exit 1; }
    sleep 0.5
    after=$(rss_kib "$server")
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    stop_server
    awk -v b="$before" -v a="$after" -v n="$IDLE" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }'
}

[ "$BASELINE" = rev ] && echo "rev = oneshotd built from $BASELINE_REV; oneshotd under test serves metrics on 127.0.0.1:$PORT_METRICS"
[ "$BASELINE" = bin ] && echo "bin = $base_bin (same configuration, no metrics for either)"
echo "oneshotd vs $BASELINE: workers=$WORKERS, ${BYTES}-byte lines, ${SECS} s per run, rounds=$ROUNDS"
echo "note: this machine has $(nproc) cores, shared by the server and the load generator"
[ -n "$have_perf" ] || echo "note: perf stat unavailable: syscalls per reply not measured (apt-get install linux-perf)"
printf '\n%-8s %5s | %12s %12s %6s | %9s %9s | %9s %9s | %9s %9s | %8s %8s | %8s %8s | %7s %7s\n' \
    scenario round "oneshotd r/s" "$BASELINE r/s" ratio "p50 o" "p50 b" "p99 o" "p99 b" "p99.9 o" "p99.9 b" "sys/r o" "sys/r b" "cpu/r o" "cpu/r b" "cs/r o" "cs/r b"
: >"$tmp/rounds.txt"
for scenario in $SCENARIOS; do
    conns=${scenario%x*}
    pipeline=${scenario#*x}
    for round in $(seq "$ROUNDS"); do
        # A loadgen run with errors fails the whole benchmark. Who goes
        # first alternates, so that a machine slowing down or speeding up
        # during a round does not always favour the same server.
        if [ $((round % 2)) = 1 ]; then order="oneshotd $BASELINE"; else order="$BASELINE oneshotd"; fi
        for kind in $order; do
            out_file="$tmp/t.txt"
            [ "$kind" = oneshotd ] && out_file="$tmp/o.txt"
            load "$kind" "$conns" "$pipeline" >"$out_file" || { echo "bench: $kind run failed" >&2; exit 1; }
        done
        read -r o_rps o_p50 o_p99 o_p999 o_cpu o_cs o_sys o_by <"$tmp/o.txt"
        read -r t_rps t_p50 t_p99 t_p999 t_cpu t_cs t_sys t_by <"$tmp/t.txt"
        ratio=$(awk -v o="$o_rps" -v t="$t_rps" 'BEGIN { printf "%.2f", o / t }')
        printf '%-8s %5s | %12s %12s %6s | %9s %9s | %9s %9s | %9s %9s | %8s %8s | %8s %8s | %7s %7s\n' \
            "$scenario" "$round" "$o_rps" "$t_rps" "$ratio" "$o_p50" "$t_p50" "$o_p99" "$t_p99" "$o_p999" "$t_p999" "$o_sys" "$t_sys" "$o_cpu" "$t_cpu" "$o_cs" "$t_cs"
        echo "$scenario $ratio $o_p99 $t_p99 $o_sys $t_sys $o_cpu $t_cpu $o_cs $t_cs $o_by $t_by" >>"$tmp/rounds.txt"
    done
done
# The per-round figures of a scenario in column $2 of rounds.txt, and their median.
values() { awk -v s="$1" -v c="$2" '$1 == s && $c != "n/a" { print $c }' "$tmp/rounds.txt"; }
col() { values "$1" "$2" | median; }
if [ "$ROUNDS" -gt 1 ]; then
    # Runs on a shared machine differ by tens of percent: the median of
    # the per-round figures is the one to compare.
    printf '\nmedian of %d rounds:\n' "$ROUNDS"
    printf '%-8s | %6s %11s | %9s %9s | %8s %8s | %8s %8s | %7s %7s\n' scenario ratio "(range)" "p99 o" "p99 b" "sys/r o" "sys/r b" "cpu/r o" "cpu/r b" "cs/r o" "cs/r b"
    for scenario in $SCENARIOS; do
        range=$(values "$scenario" 2 | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "(%s-%s)", lo, hi }')
        printf '%-8s | %6s %11s | %9s %9s | %8s %8s | %8s %8s | %7s %7s\n' "$scenario" "$(col "$scenario" 2)" "$range" \
            "$(col "$scenario" 3)" "$(col "$scenario" 4)" "$(col "$scenario" 5)" "$(col "$scenario" 6)" \
            "$(col "$scenario" 7)" "$(col "$scenario" 8)" "$(col "$scenario" 9)" "$(col "$scenario" 10)"
    done
fi
if [ "$BASELINE" = rev ] || [ "$BASELINE" = bin ]; then
    # The figure a change is judged by: how much slower (negative) or
    # faster the oneshotd under test is than the revision, in req/s, and
    # the system calls per reply of each.
    printf '\noneshotd%s vs %s (before): req/s difference, median of %d rounds (range)\n' \
        "$([ "$BASELINE" = rev ] && echo ' (metrics on)')" "${BASELINE_REV:-$base_bin}" "$ROUNDS"
    for scenario in $SCENARIOS; do
        diff=$(col "$scenario" 2 | awk '{ printf "%+.1f%%", ($1 - 1) * 100 }')
        range=$(values "$scenario" 2 | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%+.1f%% to %+.1f%%", (lo - 1) * 100, (hi - 1) * 100 }')
        printf '%-8s %8s (%s)   syscalls/reply: on %s, before %s\n' "$scenario" "$diff" "$range" "$(col "$scenario" 5)" "$(col "$scenario" 6)"
    done
fi
if [ -n "$have_perf" ]; then
    # Where the calls go: the design floor of a oneshot server is one read,
    # one write and one epoll_ctl(MOD) per event, plus epoll_wait shared by
    # the events it returns.
    printf '\nsystem calls per reply by kind (server process, %s s runs%s):\n' "$SYSCALL_SECS" "$([ "$ROUNDS" -gt 1 ] && echo ", median of $ROUNDS rounds")"
    printf '%-8s %-8s | %6s | %6s %6s %6s %6s %6s\n' scenario server total read write ctl wait other
    for scenario in $SCENARIOS; do
        for server_kind in oneshotd "$BASELINE"; do
            first=11 sys_col=5
            [ "$server_kind" = oneshotd ] || first=16 sys_col=6
            printf '%-8s %-8s | %6.3f |' "$scenario" "$server_kind" "$(col "$scenario" $sys_col)"
            for c in $(seq $first $((first + 4))); do printf ' %6.3f' "$(col "$scenario" "$c")"; done
            printf '\n'
        done
    done
fi
idle oneshotd >"$tmp/o.txt" || exit 1
idle "$BASELINE" >"$tmp/t.txt" || exit 1
o_idle=$(cat "$tmp/o.txt")
t_idle=$(cat "$tmp/t.txt")
printf '\nidle connections: %d; server RSS per connection: oneshotd %s B, %s %s B\n' "$IDLE" "$o_idle" "$BASELINE" "$t_idle"
echo "(o = oneshotd, b = $BASELINE; latencies in microseconds; per reply, server process only: sys/r system calls, cpu/r CPU microseconds, cs/r context switches)"
