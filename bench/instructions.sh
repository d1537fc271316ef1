#!/usr/bin/env bash
# User-space instructions per request of each oneshotd binary given, counted
# by callgrind: repeatable where wall-clock figures on a shared 2-core
# machine are not (it counts the same whatever else the machine does). The
# kernel's share (send, recv, epoll_ctl: most of a request's cost) is not
# in these figures; compare binaries with it, not with other servers.
#
# Each binary serves 10 connections x N requests (one in flight per
# connection), for N = 200 and N = 1200, with one worker and no spin; the
# difference of the two totals over the 10 000 extra requests is the cost
# per request, free of start-up and shutdown.
#
# That figure moves by a few percent from run to run of the same binary,
# all of it in how many epoll_wait calls the requests took: the client
# sends on its 10 connections, then reads, and one wait may find all 10
# requests or only some. Everything else a request costs is the same to
# the instruction. So the script also counts the waits (from callgrind's
# call counts) and prints the cost per request with each wait's share
# taken out (WAIT_COST instructions each, 380 by default: the slope of
# total against waits over 120 runs of three builds on this machine):
# that figure repeats to within one instruction, and is the one to
# compare builds by.
# Usage: bench/instructions.sh BIN [BIN...]     (needs valgrind, python3)
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/client.py" <<'PY'
import socket, sys, time
port, conns, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 60
while True:
    try:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(conns)]
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
for i in range(per):
    for j, s in enumerate(socks):
        s.sendall(f"conn {j} request {i} abcdefghijklmnopqrstuvwxyz\n".encode())
    for j, s in enumerate(socks):
        want = f"CONN {j} REQUEST {i} ABCDEFGHIJKLMNOPQRSTUVWXYZ\n".encode()
        got = b""
        while len(got) < len(want):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("closed early")
            got += chunk
        if got != want:
            sys.exit(f"wrong reply {got!r}")
for s in socks:
    s.close()
PY

# instructions BIN N: the daemon's total for 10 x N requests.
instructions() {
    # Below the ephemeral range (32768 and up), where a client of this very
    # run could hold the port already.
    local port=$((20000 + RANDOM % 12000))
    printf 'workers = 1\nlisten = ["127.0.0.1:%s"]\nlog_level = "warn"\nspin_before_sleep_us = 0\n' "$port" >"$tmp/conf.toml"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$1" --config "$tmp/conf.toml" 2>"$tmp/valgrind.log" &
    local pid=$!
    python3 "$tmp/client.py" "$port" 10 "$2" || { kill "$pid" 2>/dev/null || true; cat "$tmp/valgrind.log"; exit 1; }
    kill -TERM "$pid"
    wait "$pid"
    # "TOTAL WAITS": the summary line, and the calls to epoll_wait.
    python3 - "$tmp/out" <<'PY'
import re, sys
names, callee, total, waits = {}, None, 0, 0
for line in open(sys.argv[1]):
    if line.startswith("summary:"):
        total = int(line.split()[1])
    elif line.startswith(("fn=", "cfn=")):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
        if m and m[2]:
            names[m[1]] = m[2]
        if line.startswith("cfn="):
            callee = names.get(m[1]) if m else None
    elif line.startswith("calls=") and callee == "epoll_wait":
        waits += int(line[6:].split()[0])
print(total, waits)
PY
}

WAIT_COST=${WAIT_COST:-380}
for bin in "$@"; do
    read -r small small_waits < <(instructions "$bin" 200)
    read -r large large_waits < <(instructions "$bin" 1200)
    raw=$(( (large - small) / 10000 ))
    corrected=$(( ((large - WAIT_COST * large_waits) - (small - WAIT_COST * small_waits)) / 10000 ))
    waits=$(python3 -c "print(f'{($large_waits - $small_waits) / 10000:.2f}')")
    echo "$bin: $raw instructions per request ($waits epoll_wait per request; $corrected without the waits)"
done
