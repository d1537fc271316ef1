# Sourced by bench/run.sh and bench/scale.sh: waiting for a server started
# in the background (its pid in $server, its stderr in $tmp/server.log)
# and stopping it.

# server_started NAME PORT WHO: returns once 127.0.0.1:PORT accepts a
# connection (10 s at most); otherwise prints the server's log and exits,
# the message prefixed with WHO.
server_started() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    cat "$tmp/server.log"
    echo "$3: $1 did not start" >&2
    exit 1
}

stop_server() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
}
