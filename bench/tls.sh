#!/usr/bin/env bash
# oneshotd's TLS listener against what a user would do instead: HAProxy
# terminating TLS (`mode tcp`, `bind ... ssl crt`) in front of oneshotd's
# plain listener; and against plain oneshotd (what TLS costs). Same ECDSA
# P-256 certificate for both TLS servers (made here with openssl, signed by
# a CA made here; no key is kept), TLS 1.3, TLS13_AES_256_GCM_SHA384 with
# X25519 (the load generator offers only those; what OpenSSL's and rustls's
# clients pick by default), no session resumption: every handshake is full.
#
# Scenarios, each in interleaved rounds (who goes first turns with the
# round):
#   handshakes  HS_CONNS connections at a time, each: connect, handshake,
#               one request, verified reply, close (close_notify); per second
#   CONNSxP     CONNS established connections, P requests in flight on each
#               (PIPELINES="1 16"); requests per second
# For every run: the rate, p99 latency, the servers' CPU per request (user
# + system from /proc/PID/stat over the run; for HAProxy its CPU plus that
# of the oneshotd behind it) and the load generator's own CPU in cores
# (one thread: near 1.00, or the machine's cores all busy, means it, not
# the server, may be the limit).
#
# Settings (environment): ROUNDS=3 SECS=5 WARMUP=0.5 WORKERS=2 (oneshotd's)
#   CONNS=50 PIPELINES="1 16" HS_CONNS=16 BYTES=64 PORT_BASE=17950
#   HAPROXY=haproxy (Debian's; its default threads: one per core)
#   SCENARIOS="handshakes 50x1 50x16" (overrides CONNS and PIPELINES)
# Usage: bash bench/tls.sh        SMOKE=1 bash bench/tls.sh (a few seconds)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-0.5}
WORKERS=${WORKERS:-2}
CONNS=${CONNS:-50}
PIPELINES=${PIPELINES:-"1 16"}
HS_CONNS=${HS_CONNS:-16}
BYTES=${BYTES:-64}
PORT_BASE=${PORT_BASE:-17950}
HAPROXY=${HAPROXY:-haproxy}
if [ -n "${SMOKE:-}" ]; then
    ROUNDS=1 SECS=1 WARMUP=0.2 CONNS=10 PIPELINES="1 16" HS_CONNS=4
fi
SCENARIOS=${SCENARIOS:-"handshakes $(for p in $PIPELINES; do printf '%sx%s ' "$CONNS" "$p"; done)"}
for tool in openssl "$HAPROXY"; do
    command -v "$tool" >/dev/null || { echo "tls bench: $tool missing (bash tests/install-deps.sh)" >&2; exit 2; }
done

cargo build --release --locked -p oneshotd -p oneshotd-bench >/dev/null 2>&1 ||
    cargo build --release --locked -p oneshotd -p oneshotd-bench
BIN=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A CA and a server certificate it signs, both ECDSA P-256, for localhost
# and 127.0.0.1; the clients trust the CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days 2 -subj /CN=oneshotd-bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/req.csr" -subj /CN=localhost 2>/dev/null
printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
    'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >"$tmp/ext.cnf"
openssl x509 -req -in "$tmp/req.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -out "$tmp/cert.pem" -days 2 -extfile "$tmp/ext.cnf" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

port_tls=$PORT_BASE port_behind=$((PORT_BASE + 1)) port_haproxy=$((PORT_BASE + 2)) port_plain=$((PORT_BASE + 3))
oneshotd() { # oneshotd NAME PLAIN_PORT [TLS_PORT]
    {
        echo "workers = $WORKERS"
        echo "listen = [\"127.0.0.1:$2\"]"
        echo "max_connections = 100000"
        echo "log_level = \"warn\""
        if [ -n "${3:-}" ]; then
            echo "tls_listen = [\"127.0.0.1:$3\"]"
            echo "tls_certificate = \"$tmp/cert.pem\""
            echo "tls_private_key = \"$tmp/key.pem\""
        fi
    } >"$tmp/$1.toml"
    "$BIN/oneshotd" --config "$tmp/$1.toml" 2>"$tmp/$1.log" &
    pids+=($!)
}
# The TLS one's plain listener is not used (a config needs one).
oneshotd tls $((PORT_BASE + 4)) "$port_tls"
pid_tls=${pids[-1]}
oneshotd behind "$port_behind"
pid_behind=${pids[-1]}
oneshotd plain "$port_plain"
pid_plain=${pids[-1]}
cat >"$tmp/haproxy.cfg" <<EOF
global
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tls
    bind 127.0.0.1:$port_haproxy ssl crt $tmp/haproxy.pem ssl-min-ver TLSv1.3
    default_backend oneshotd
backend oneshotd
    server s 127.0.0.1:$port_behind
EOF
"$HAPROXY" -c -q -f "$tmp/haproxy.cfg"
"$HAPROXY" -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
pid_haproxy=${pids[-1]}
for port in "$port_tls" "$port_behind" "$port_haproxy" "$port_plain"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
        cat "$tmp"/*.log >&2
        echo "tls bench: nothing listens on $port" >&2
        exit 1
    }
done

# The servers, in column order: name, port, TLS or not, the pids whose CPU counts.
servers=(oneshotd-tls haproxy+oneshotd plain)
declare -A port_of=([oneshotd-tls]=$port_tls [haproxy+oneshotd]=$port_haproxy [plain]=$port_plain)
declare -A tls_of=([oneshotd-tls]=1 [haproxy+oneshotd]=1 [plain]="")
declare -A pids_of=([oneshotd-tls]=$pid_tls [haproxy+oneshotd]="$pid_haproxy $pid_behind" [plain]=$pid_plain)

ticks() { # ticks PID...: their utime + stime, all threads, in clock ticks
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"))); done
    echo "$total"
}
# The machine's count of SYNs sent again (a connect whose SYN went
# unanswered, e.g. a full accept queue: a 1 s wait for its client);
# machine-wide, so other work's shows too.
syn_retrans() {
    awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) name[i] = $i; h = 1 }
        else for (i = 2; i <= NF; i++) if (name[i] == "TCPSynRetrans") print $i }' /proc/net/netstat
}
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# run SERVER SCENARIO: "rate p99_us server_cpu_us_per_request client_cores syn_retransmits"
run() {
    local server=$1 scenario=$2 args before after out syn
    args=(--addr "127.0.0.1:${port_of[$server]}" --bytes "$BYTES" --secs "$SECS" --warmup "$WARMUP")
    [ -z "${tls_of[$server]}" ] || args+=(--tls --ca "$tmp/ca.pem" --server-name localhost)
    if [ "$scenario" = handshakes ]; then
        args+=(--handshakes --conns "$HS_CONNS")
    else
        args+=(--conns "${scenario%x*}" --pipeline "${scenario#*x}")
    fi
    # shellcheck disable=SC2086
    before=$(ticks ${pids_of[$server]})
    syn=$(syn_retrans)
    out=$("$BIN/loadgen" "${args[@]}") || { echo "tls bench: $server $scenario failed: $out" >&2; return 1; }
    # shellcheck disable=SC2086
    after=$(ticks ${pids_of[$server]})
    syn=$(($(syn_retrans) - syn))
    local rate
    rate=$(field req_per_s "$out")
    [ -n "$rate" ] || rate=$(field conns_per_s "$out")
    awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v n="$(field total "$out")" \
        -v rate="$rate" -v p99="$(field p99_us "$out")" -v cores="$(field client_cores "$out")" -v syn="$syn" \
        'BEGIN { printf "%s %s %.2f %s %s\n", rate, p99, t / hz / n * 1e6, cores, syn }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "oneshotd TLS vs HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }') (mode tcp, ssl crt) + oneshotd vs plain oneshotd;" \
    "oneshotd workers=$WORKERS, ${BYTES}-byte lines, ${SECS} s runs (${WARMUP} s warm-up), rounds=$ROUNDS"
echo "TLS 1.3, TLS13_AES_256_GCM_SHA384, X25519, ECDSA P-256 certificate, no resumption;" \
    "handshakes: $HS_CONNS at a time; $(nproc) cores shared by the servers, the load generator and whatever else runs"
echo "kernel $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n%-10s %-2s | %-16s | %9s %9s %9s %7s %7s\n' scenario "#" server "rate/s" "p99 us" "cpu us/r" "lg cores" "syn rtx"
results=$tmp/results.txt
: >"$results"
count=${#servers[@]}
for scenario in $SCENARIOS; do
    for round in $(seq "$ROUNDS"); do
        for turn in $(seq 0 $((count - 1))); do
            server=${servers[$(((round - 1 + turn) % count))]}
            result=$(run "$server" "$scenario") || exit 1
            read -r rate p99 cpu cores syn <<<"$result"
            printf '%-10s %-2s | %-16s | %9s %9s %9s %7s %7s\n' "$scenario" "$round" "$server" "$rate" "$p99" "$cpu" "$cores" "$syn"
            echo "$scenario $server $rate $p99 $cpu $cores" >>"$results"
        done
    done
done
col() { awk -v s="$1" -v k="$2" -v c="$3" '$1 == s && $2 == k { print $c }' "$results" | median; }
printf '\nmedians of %d rounds (rate: connections/s for handshakes, requests/s otherwise; cpu: server CPU µs per connection or request;\nlg cores: the load generator CPU in cores; syn rtx: SYNs retransmitted on the machine during the run):\n' "$ROUNDS"
printf '%-10s | %-16s | %9s %9s %9s %7s\n' scenario server "rate/s" "p99 us" "cpu us/r" "lg cores"
for scenario in $SCENARIOS; do
    for server in "${servers[@]}"; do
        printf '%-10s | %-16s | %9s %9s %9s %7s\n' "$scenario" "$server" \
            "$(col "$scenario" "$server" 3)" "$(col "$scenario" "$server" 4)" "$(col "$scenario" "$server" 5)" "$(col "$scenario" "$server" 6)"
    done
done
printf '\noneshotd-tls against haproxy+oneshotd (rate: higher is better; CPU: lower) and against plain:\n'
for scenario in $SCENARIOS; do
    awk -v s="$scenario" -v rt="$(col "$scenario" oneshotd-tls 3)" -v rh="$(col "$scenario" haproxy+oneshotd 3)" \
        -v ct="$(col "$scenario" oneshotd-tls 5)" -v ch="$(col "$scenario" haproxy+oneshotd 5)" \
        -v rp="$(col "$scenario" plain 3)" -v cp="$(col "$scenario" plain 5)" 'BEGIN {
        printf "%-10s rate x%.2f of haproxy, CPU/r x%.2f of haproxy; rate x%.2f of plain, CPU/r x%.2f of plain\n",
            s, rt / rh, ct / ch, rt / rp, ct / cp }'
done
