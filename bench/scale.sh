#!/usr/bin/env bash
# oneshotd at scale, against tokio (bench/src/bin/tokio_upper.rs) where
# tokio has an equivalent: many active connections, connection churn, many
# idle connections, and what a drain (SIGTERM to exit) and a handover
# (SIGUSR2 to the next instance's READY=1) cost as connections grow.
# Loopback only; the clients spread over source addresses 127.0.0.2 ...;
# every reply byte is verified and a run with errors fails the benchmark.
#
# Settings (environment):
#   WORKERS=2 SECS=5 WARMUP=0.5 ROUNDS=3 BYTES=64 SOURCES=16
#   ACTIVE="1000 5000 15000"   active connections, pipeline 1
#   CHURN="50 500"             connections at a time: connect, 1 request, close
#   IDLE=18000                 idle connections (server RSS per connection)
#   HANDOVER="1000 15000"      idle connections through a handover, then a drain
#                              (each of these four set empty, or IDLE=0: not run)
#   HANDOVER_TLS=1             each handover also with TLS connections (a TLS
#                              listener, TLS 1.3 sessions carried across;
#                              an ECDSA P-256 certificate made here with
#                              openssl); results say scenario=handover-tls:N
#   PROXY=1                    oneshotd trusts 127.0.0.0/8 for the PROXY protocol
#                              (proxy_protocol_from) and every connection of
#                              active, churn and idle begins with a v2 header
#                              (scale_load --proxy-v2); tokio and the handover,
#                              which take no header, are not run; result lines
#                              say proxy=v2
#   SERVERS="oneshotd tokio"   which servers active, churn and idle run on
#   RESULTS=FILE               keep the raw results (one line per run)
#   SVG=FILE                   draw the curves (bench/plot.py) into FILE
#   BACKLOG=4096               accept queue of both servers (oneshotd.socket's
#                              Backlog=; std's and tokio's bind give 128)
#   PORT_BASE=23000            each run gets its own port (see below)
#   PROCS=                     load-generating processes per run (default:
#                              as many as the descriptor limit needs)
# Usage: bash bench/scale.sh      SMOKE=1 bash bench/scale.sh (~10 s once built)
#
# One process holds at most ~19 900 descriptors here (hard RLIMIT_NOFILE
# 20 000): scale_load divides its connections among as many processes as
# that needs (PROCS overrides), and the handover's clients run apart from
# the manager that holds the fd store's copies.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/server.sh

WORKERS=${WORKERS:-2}
SECS=${SECS:-5}
WARMUP=${WARMUP:-0.5}
ROUNDS=${ROUNDS:-3}
BYTES=${BYTES:-64}
SOURCES=${SOURCES:-16}
# Unset: the default; set empty: none.
ACTIVE=${ACTIVE-"1000 5000 15000"}
CHURN=${CHURN-"50 500"}
IDLE=${IDLE-18000}
[ "$IDLE" = 0 ] && IDLE=
HANDOVER=${HANDOVER-"1000 15000"}
PORT_BASE=${PORT_BASE:-23000}
BACKLOG=${BACKLOG:-4096}
PROCS=${PROCS:-}
HANDOVER_TLS=${HANDOVER_TLS:-}
[ "$HANDOVER_TLS" = 0 ] && HANDOVER_TLS=
if [ -n "${SMOKE:-}" ]; then
    # Two load processes, so that the smoke run covers their merging too.
    SECS=1 WARMUP=0.3 ROUNDS=1 ACTIVE="200 1000" CHURN="20" IDLE=1000 HANDOVER="200" PROCS=2
fi
PROXY=${PROXY:-}
[ "$PROXY" = 0 ] && PROXY=
SERVERS=${SERVERS:-"oneshotd tokio"}
if [ -n "$PROXY" ]; then
    SERVERS=$(for s in $SERVERS; do [ "$s" = tokio ] || echo "$s"; done)
    HANDOVER=
fi

cargo build --release --locked -p oneshotd -p oneshotd-bench >/dev/null 2>&1 ||
    cargo build --release --locked -p oneshotd -p oneshotd-bench
ulimit -n "$(ulimit -Hn)"
BIN=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
results=${RESULTS:-$tmp/results.txt}
: >"$results"
if [ -n "$HANDOVER_TLS" ]; then
    # A CA and the server's certificate it signs (P-256), for localhost.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days 2 -subj /CN=oneshotd-bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tmp/key.pem" -out "$tmp/req.csr" -subj /CN=localhost 2>/dev/null
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' >"$tmp/ext.cnf"
    openssl x509 -req -in "$tmp/req.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
        -out "$tmp/cert.pem" -days 2 -extfile "$tmp/ext.cnf" 2>/dev/null
fi

# Every run listens on a port of its own: a server that closes first
# (stopping with connections open) leaves its side in TIME_WAIT, and a
# client that later picks the same source address and port for the same
# server port has its SYN answered by that TIME_WAIT socket with an ACK,
# then waits a second to retry (seen: 1 000 connects took 4 s).
next_port=$PORT_BASE
take_port() { port=$next_port; next_port=$((next_port + 1)); }

# start_server oneshotd|tokio -> sets $server (pid) and $port
start_server() {
    take_port
    case $1 in
    oneshotd)
        cat >"$tmp/oneshotd.toml" <<EOF
workers = $WORKERS
listen = ["127.0.0.1:$port"]
max_connections = 100000
log_level = "warn"
EOF
        if [ -n "$PROXY" ]; then
            echo 'proxy_protocol_from = ["127.0.0.0/8"]' >>"$tmp/oneshotd.toml"
        fi
        # Socket-activated, as under systemd: the listener comes bound, with
        # oneshotd.socket's backlog, in LISTEN_FDS (scale_listen execs it).
        "$BIN/scale_listen" --addr "127.0.0.1:$port" --backlog "$BACKLOG" -- \
            "$BIN/oneshotd" --config "$tmp/oneshotd.toml" 2>"$tmp/server.log" &
        ;;
    tokio)
        "$BIN/tokio_upper" --addr "127.0.0.1:$port" --workers "$WORKERS" --backlog "$BACKLOG" 2>"$tmp/server.log" &
        ;;
    esac
    server=$!
    server_started "$1" "$port" scale
}

# run_load scenario server round mode conns
run_load() {
    local scenario=$1 kind=$2 round=$3 mode=$4 conns=$5 out before proxy=
    # Only oneshotd runs get here with PROXY set (tokio is not run).
    if [ -n "$PROXY" ] && [ "$kind" = oneshotd ]; then proxy=v2; fi
    start_server "$kind"
    before=$(overflows)
    if ! out=$("$BIN/scale_load" "$mode" --addr "127.0.0.1:$port" --conns "$conns" \
        --secs "$SECS" --warmup "$WARMUP" --bytes "$BYTES" --sources "$SOURCES" \
        --server-pid "$server" ${PROCS:+--procs "$PROCS"} ${proxy:+--proxy-v2} </dev/null); then
        echo "scale: $kind $scenario round $round failed: $out" >&2
        exit 1
    fi
    local dropped=$(($(overflows) - before))
    stop_server
    echo "scenario=$scenario server=$kind round=$round ${proxy:+proxy=$proxy }${out#idle_ready } listen_overflows=$dropped" | tee -a "$results"
}

# The kernel's counters of connection attempts a full accept queue dropped
# (each costs its client a 1 s SYN retry): machine-wide, so another
# engineer's benchmark running at the same time would show here too.
overflows() {
    awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) name[i] = $i; h = 1 }
        else for (i = 2; i <= NF; i++) if (name[i] == "ListenOverflows") print $i }' /proc/net/netstat
}

# The servers of SERVERS, the first of them first in odd rounds and last
# in even ones.
order() {
    if [ $(($1 % 2)) = 1 ]; then echo $SERVERS; else printf '%s\n' $SERVERS | tac | xargs; fi
}

echo "oneshotd vs tokio at scale: workers=$WORKERS, ${BYTES}-byte lines, ${SECS} s runs, rounds=$ROUNDS, $SOURCES source addresses, backlog $BACKLOG${PROXY:+, PROXY v2 headers from 127.0.0.0/8 (oneshotd only)}"
echo "note: this machine has $(nproc) cores, shared by the servers, the load generator and whatever else runs"
for round in $(seq "$ROUNDS"); do
    for conns in $ACTIVE; do
        for kind in $(order "$round"); do run_load "active:$conns" "$kind" "$round" active "$conns"; done
    done
    for conns in $CHURN; do
        for kind in $(order "$round"); do run_load "churn:$conns" "$kind" "$round" churn "$conns"; done
    done
    if [ -n "$IDLE" ]; then
        for kind in $(order "$round"); do run_load "idle:$IDLE" "$kind" "$round" idle "$IDLE"; done
    fi
    for conns in $HANDOVER; do
        # Plain and TLS in turn, the first of them turning with the round.
        kinds=handover
        if [ -n "$HANDOVER_TLS" ]; then
            if [ $((round % 2)) = 1 ]; then kinds="handover handover-tls"; else kinds="handover-tls handover"; fi
        fi
        for kind in $kinds; do
            tls_args=()
            [ "$kind" = handover ] || tls_args=(--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --ca "$tmp/ca.pem")
            take_port
            mkdir -p "$tmp/handover"
            if ! out=$("$BIN/scale_handover" --oneshotd "$BIN/oneshotd" --load "$BIN/scale_load" \
                --conns "$conns" --port "$port" --workers "$WORKERS" --sources "$SOURCES" \
                ${PROCS:+--procs "$PROCS"} --dir "$tmp/handover" "${tls_args[@]}"); then
                cat "$tmp/handover/"*.log >&2 || true
                echo "scale: $kind of $conns failed" >&2
                exit 1
            fi
            echo "scenario=$kind:$conns server=oneshotd round=$round $out" | tee -a "$results"
        done
    done
done
echo
python3 bench/plot.py "$results" ${SVG:+"$SVG"}
if [ -n "$HANDOVER_TLS" ]; then
    # The handover pause (SIGUSR2 to the next instance's READY=1) and its
    # CPU, plain against TLS: medians over the rounds.
    echo
    echo "handover, plain vs TLS (medians of $ROUNDS rounds): pause s, CPU µs per connection (both instances)"
    for conns in $HANDOVER; do
        for kind in handover handover-tls; do
            awk -v s="$kind:$conns" '
                function field(k,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] } }
                field("scenario") == s { n++; h[n] = field("handover_s"); c[n] = field("handover_cpu_us_per_conn") }
                function med(a,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
                END { if (n) printf "%-20s pause %.4f s   cpu %.1f µs/conn   (%d rounds)\n", s, med(h), med(c), n }' "$results"
        done
    done
fi
