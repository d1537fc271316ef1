#!/usr/bin/env bash
# End-to-end test of the Debian package under a real systemd (PID 1).
#
# For each Debian suite asked for (by default bookworm and trixie: Debian
# 12 with systemd 252 and Debian 13 with systemd 257), boots a
# debootstrapped rootfs of that suite in systemd-nspawn (the rootfs is
# cached outside the repo, in $ONESHOTD_E2E_CACHE, default
# /var/cache/oneshotd-e2e, keyed by suite, package list and mirror; each run
# gets a fresh overlay), installs the freshly built .deb (built once, on the
# host, for every suite) with dpkg -i and checks what an operator
# relies on: socket activation, STATUS, reload (good and broken), restart
# and upgrade without a refused connection, a crash (SIGKILL) that loses
# only the connections the killed process held, a fault at each step of a
# restart's handover (tests/e2e/faults.sh: a build with test hooks kills
# either instance between two of its messages to systemd or damages the
# state record; a configuration refused; a store too small), the journal,
# stop, three
# instances of the templates behind a real HAProxy (PROXY v2, agent-check:
# rolling restarts and an upgrade that drop nothing, an instance taken out
# of service and back), TLS (tests/e2e/tls.sh: oneshotd-tls.socket with a
# certificate set up as docs/tls.md says, a renewal and reload, 200 busy TLS
# connections through restarts and an upgrade, and through HAProxy passing
# TLS to the instances in a rolling restart), a daemon of one's own built on the library
# (examples/resp.rs) whose client keeps its session through `systemctl
# restart`, remove, reinstall and purge. The suites run one after the
# other, never at once: each binds the host's 127.0.0.1:7878 and :7443.
#
# The container shares the host's network namespace, so the clients
# (tests/e2e/client.py) run on the host against 127.0.0.1:7878.
#
# Needs root, debootstrap, systemd-container, python3, iproute2 (ss), openssl,
# redis-tools (redis-cli, for the resp example) and a
# reachable Debian mirror (the one apt is configured with); see
# tests/install-deps.sh. The host's debian-archive-keyring (Debian 12's
# too) holds the keys of both suites.
# Usage: tests/e2e/run.sh [SUITE...]   (default: bookworm trixie)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${ONESHOTD_E2E_CACHE:-/var/cache/oneshotd-e2e}
INCLUDE=systemd,systemd-sysv,dbus,procps,haproxy
CLIENT="python3 $HERE/client.py"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "E2E FAILED: $*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || fail "needs root"
    for tool in debootstrap systemd-nspawn unshare nsenter python3 ss cargo-deb redis-cli openssl; do
        command -v "$tool" >/dev/null || fail "missing $tool"
    done
    suites=("$@")
    [ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
    for suite in "${suites[@]}"; do
        case "$suite" in [a-z]*) ;; *) fail "usage: $0 [SUITE...] (a Debian suite such as bookworm or trixie)" ;; esac
    done
    # Either of the ports the container's units bind on the host.
    listening() {
        python3 -c 'import socket,sys; sys.exit(all(socket.socket().connect_ex(("127.0.0.1",p)) for p in (7878,7443)))'
    }
    if listening; then fail "something already listens on 127.0.0.1:7878 or :7443"; fi

    step "building the package, and the same rebuilt as a newer version (once, for every suite)"
    mkdir -p "$ROOT/target/e2e"
    (cd "$ROOT" && cargo deb --locked -p oneshotd -o target/e2e/oneshotd_1.deb >/dev/null &&
        cargo deb --locked -p oneshotd --no-build --deb-revision 2 -o target/e2e/oneshotd_2.deb >/dev/null &&
        cargo deb --locked -p oneshotd --no-build --deb-revision 3 -o target/e2e/oneshotd_3.deb >/dev/null &&
        cargo deb --locked -p oneshotd --no-build --deb-revision 4 -o target/e2e/oneshotd_4.deb >/dev/null &&
        cargo deb --locked -p oneshotd --no-build --deb-revision 5 -o target/e2e/oneshotd_5.deb >/dev/null &&
        { cargo build --locked --release --example resp >/dev/null 2>&1 ||
            cargo build --locked --release --example resp; } &&
        cp "${CARGO_TARGET_DIR:-target}/release/examples/resp" target/e2e/resp)
    # The hooked build for the fault cases (tests/e2e/faults.sh), then the
    # plain one back in place; the packages must not hold the hooks.
    (cd "$ROOT" && { cargo build --locked --release --features fault-injection --bin oneshotd >/dev/null 2>&1 ||
        cargo build --locked --release --features fault-injection --bin oneshotd; } &&
        cp "${CARGO_TARGET_DIR:-target}/release/oneshotd" target/e2e/oneshotd-fault &&
        cargo build --locked --release --bin oneshotd >/dev/null 2>&1)
    for deb in "$ROOT"/target/e2e/oneshotd_[1-5].deb; do
        if dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/sbin/oneshotd | grep -q ONESHOTD_FAULT; then
            fail "$deb holds the fault-injection hooks"
        fi
    done
    grep -q ONESHOTD_FAULT "$ROOT/target/e2e/oneshotd-fault" || fail "the hooked build has no hooks"

    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    times=()
    for suite in "${suites[@]}"; do
        started=$EPOCHREALTIME
        key=$(printf '%s %s %s' "$suite" "$INCLUDE" "$mirror" | sha256sum | cut -c1-12)
        rootfs=$CACHE/rootfs-$key
        if [ ! -e "$rootfs/.complete" ]; then
            step "debootstrap $suite from $mirror into $rootfs (cached for later runs)"
            mkdir -p "$CACHE"
            rm -rf "$rootfs.tmp"
            log=$CACHE/debootstrap-$suite.log
            debootstrap --variant=minbase --include="$INCLUDE" "$suite" "$rootfs.tmp" "$mirror" >"$log" 2>&1 ||
                { tail -20 "$log"; fail "debootstrap $suite"; }
            touch "$rootfs.tmp/.complete"
            mv "$rootfs.tmp" "$rootfs"
        fi
        # The previous suite's container has let go of the port.
        for _ in $(seq 100); do listening || break; sleep 0.1; done
        if listening; then fail "something still listens on 127.0.0.1:7878 or :7443"; fi
        # A private mount namespace: tmpfs on /run and /tmp (nspawn refuses
        # to clean the host's on-disk /run), overlay mounts that vanish with
        # it.
        unshare --mount --propagation private "$0" --inside "$suite" "$rootfs" "$ROOT/target/e2e" ||
            fail "on $suite (the first failure above says what)"
        times+=("$suite: passed in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s")
    done
    step "end-to-end checks passed on every suite"
    printf '%s\n' "${times[@]}"
    exit 0
fi

suite=$2
rootfs=$3
debs=$4
# Everything needed from the host goes to the new /run before /tmp is
# covered: the checkout itself may live under /tmp.
mount -t tmpfs tmpfs /run
stage=/run/oneshotd-e2e
mkdir "$stage"
cp "$debs"/oneshotd_[1-5].deb "$debs/resp" "$debs/oneshotd-fault" "$HERE/client.py" "$HERE/faults.sh" "$HERE/tls.sh" "$stage/"
CLIENT="python3 $stage/client.py"
mount -t tmpfs tmpfs /tmp
cd /
w=$(mktemp -d /tmp/oneshotd-e2e.XXXXXX)
mkdir "$w/upper" "$w/work" "$w/root"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$w/upper,workdir=$w/work" "$w/root"
cp "$stage"/oneshotd_[1-5].deb "$w/root/root/"
cp "$stage/resp" "$w/root/usr/local/sbin/resp"

# A cgroup of our own for the container (nspawn --keep-unit uses ours).
cgroup=oneshotd-e2e-$$
hierarchies=()
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ -e "$h/cgroup.procs" ] && mkdir "$h/$cgroup" 2>/dev/null; then
        echo $$ >"$h/$cgroup/cgroup.procs"
        hierarchies+=("$h")
        [ "$h" = /sys/fs/cgroup ] && break
    fi
done

systemd-nspawn -b --register=no --keep-unit -D "$w/root" -M oneshotd-e2e >"$w/boot.log" 2>&1 &
nspawn=$!
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && [ -n "${pid1:-}" ]; then journal 2>/dev/null || true; fi
    if [ -n "${pid1:-}" ] && kill -0 "$pid1" 2>/dev/null; then
        nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1 || true
    fi
    for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$nspawn" 2>/dev/null || true
    wait "$nspawn" 2>/dev/null || true
    if [ $rc -ne 0 ]; then
        echo "--- container journal (oneshotd):"
        cat "$w/journal.txt" 2>/dev/null | tail -40 || true
        echo "--- boot log:"
        tail -20 "$w/boot.log" || true
    fi
    for h in "${hierarchies[@]}"; do
        echo $$ >"$h/cgroup.procs" 2>/dev/null || true
        find "$h/$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    umount "$w/root" 2>/dev/null || true
    exit $rc
}
trap cleanup EXIT

for _ in $(seq 100); do
    pid1=$(pgrep -P "$nspawn" -x systemd || true)
    [ -n "$pid1" ] && break
    sleep 0.1
done
[ -n "${pid1:-}" ] || { cat "$w/boot.log"; fail "the container did not start"; }
inside() { nsenter -t "$pid1" -a "$@"; }
# Until PID 1 answers on its bus, systemctl fails at once; then --wait
# blocks until boot is finished.
state=
for _ in $(seq 600); do
    state=$(inside systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.1
done
case "$state" in running | degraded) ;; *) cat "$w/boot.log"; fail "boot did not finish: '$state'" ;; esac
step "container booted: $suite, $state (systemd $(inside systemctl --version | head -n1 | cut -d' ' -f2))"
journal() { inside journalctl -u oneshotd --no-pager "$@" >"$w/journal.txt" 2>&1 || true; }
status_text() { inside systemctl show -p StatusText --value oneshotd.service; }
wait_status() {
    local want=$1
    for _ in $(seq 200); do
        case "$(status_text)" in *"$want"*) return 0 ;; esac
        sleep 0.05
    done
    fail "STATUS never showed '$want' (it is '$(status_text)')"
}
expect() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }
set_workers() { inside sed -i "s/^#\?workers = .*/workers = $1/" /etc/oneshotd.toml; }

step "install: dpkg -i enables and starts the socket"
inside dpkg -i /root/oneshotd_1.deb >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "dpkg -i"; }
expect "socket enabled" "$(inside systemctl is-enabled oneshotd.socket)" enabled
expect "socket active" "$(inside systemctl is-active oneshotd.socket)" active
expect "service before the first connection" "$(inside systemctl is-active oneshotd.service || true)" inactive

step "the first connection starts the service"
expect "reply" "$($CLIENT once hello)" HELLO
expect "service active" "$(inside systemctl is-active oneshotd.service)" active
wait_status "workers="
inside systemctl status --no-pager oneshotd.service | grep 'Status: "serving: workers=[0-9]* connections=[0-9]*"' >/dev/null ||
    fail "systemctl status shows no STATUS line"
echo "STATUS: $(status_text)"

step "reload with workers = 3 and debug logs; a connection held across it keeps working"
$CLIENT hold "$w/go" "$w/held" >"$w/hold.out" 2>&1 &
holder=$!
for _ in $(seq 100); do [ -e "$w/held" ] && break; sleep 0.05; done
[ -e "$w/held" ] || fail "the held connection did not start"
set_workers 3
inside sed -i 's/^log_level = .*/log_level = "debug"/' /etc/oneshotd.toml
inside systemctl reload oneshotd
wait_status "workers=3 "
touch "$w/go"
wait "$holder" || { cat "$w/hold.out"; fail "the held connection broke across the reload"; }
expect "held reply" "$(cat "$w/hold.out")" "HELD AFTER"

step "a broken config is refused by reload; the old figures stay"
inside sed -i 's/^workers = .*/workers = 0/' /etc/oneshotd.toml
if inside systemctl reload oneshotd 2>"$w/reload.err"; then fail "a broken reload was accepted"; fi
expect "service after the refused reload" "$(inside systemctl is-active oneshotd.service)" active
case "$(status_text)" in *"workers=3 "*) ;; *) fail "figures changed: $(status_text)" ;; esac
# journald may store the check's line a moment after the reload returns.
explained() { inside journalctl -u oneshotd --no-pager | grep "workers = 0 is out of range" >/dev/null; }
for _ in $(seq 50); do explained && break; sleep 0.1; done
explained || fail "the refusal is not explained in the journal"
expect "reply" "$($CLIENT once "still serving")" "STILL SERVING"
set_workers 3

step "metrics: curl reads the metrics socket; the counters carry on across a reload"
expect "metrics socket active" "$(inside systemctl is-active oneshotd-metrics.socket)" active
requests() {
    curl -fsS --max-time 10 http://127.0.0.1:9787/metrics >"$w/metrics.txt" || fail "curl of the metrics socket failed"
    awk '$1 == "oneshotd_requests_total{service=\"upper\"}" { print $2 }' "$w/metrics.txt"
}
before=$(requests)
[ -n "$before" ] && [ "$before" -gt 0 ] || { cat "$w/metrics.txt"; fail "no line requests counted: '$before'"; }
grep -q '^oneshotd_build_info{' "$w/metrics.txt" || fail "no build info in the metrics"
expect "reply" "$($CLIENT once "counted")" COUNTED
inside systemctl reload oneshotd
wait_status "serving"
after=$(requests)
[ "$after" -gt "$before" ] || fail "requests went from $before to $after across a reload"
grep -q '^oneshotd_reloads_total{result="ok"} [1-9]' "$w/metrics.txt" || fail "the reload is not counted"
echo "metrics: requests $before -> $after across a reload"

# start_loopers N: N clients (tests/e2e/client.py loop) that each make new
# connections one after the other until $w/stop exists (60 s at most);
# client i writes its counts to $w/loop.i.out, its failures to
# $w/loop.i.err and one byte per connection served to $w/loop.i.progress.
# Sets the array $loopers to their pids.
start_loopers() {
    local i
    rm -f "$w/stop" "$w"/loop.*
    loopers=()
    for i in $(seq "$1"); do
        : >"$w/loop.$i.progress"
        $CLIENT loop 60 "$w/stop" "$w/loop.$i.progress" >"$w/loop.$i.out" 2>"$w/loop.$i.err" &
        loopers+=($!)
    done
}
served_by() { stat -c %s "$w/loop.$1.progress"; }
# wait_loopers_serve N: until every looper has served N more connections
# than when this was called (30 s at most, and at once if one of them has
# exited): proof that new connections are being served at this point.
wait_loopers_serve() {
    local i more=$1 want=()
    for i in "${!loopers[@]}"; do want+=($(($(served_by $((i + 1))) + more))); done
    for _ in $(seq 600); do
        local behind=0
        for i in "${!loopers[@]}"; do
            [ "$(served_by $((i + 1)))" -ge "${want[i]}" ] && continue
            behind=1
            kill -0 "${loopers[i]}" 2>/dev/null ||
                { cat "$w/loop.$((i + 1)).out" "$w/loop.$((i + 1)).err"; fail "client $((i + 1)) exited"; }
        done
        [ $behind = 0 ] && return 0
        sleep 0.05
    done
    for i in "${!loopers[@]}"; do cat "$w/loop.$((i + 1)).out" "$w/loop.$((i + 1)).err"; done
    fail "clients were not served $more more connections within 30 s"
}
# stop_loopers: stops them and waits for their counts.
stop_loopers() {
    touch "$w/stop"
    for pid in "${loopers[@]}"; do wait "$pid" || true; done
}
# expect_loop_clean WHAT: the one looper had no connection fail.
expect_loop_clean() {
    if [ -s "$w/loop.1.err" ] || ! grep -q ' 0 failed$' "$w/loop.1.out"; then
        cat "$w/loop.1.out" "$w/loop.1.err"
        fail "connections failed during the $1"
    fi
}

# while_connecting WHAT COMMAND...: runs COMMAND while a client makes new
# connections continuously (served before and after it); fails if a single
# one is refused or loses its reply.
while_connecting() {
    local what=$1
    shift
    start_loopers 1
    wait_loopers_serve 20
    "$@"
    wait_loopers_serve 20
    stop_loopers
    expect_loop_clean "$what"
    echo "$what: $(cat "$w/loop.1.out")"
}

step "restart while a client connects continuously: nothing refused or lost"
old_pid=$(inside systemctl show -p MainPID --value oneshotd.service)
while_connecting restart inside systemctl restart oneshotd.service
new_pid=$(inside systemctl show -p MainPID --value oneshotd.service)
[ "$old_pid" != "$new_pid" ] || fail "the service was not restarted"

step "journal: start, reload and drain lines with structured fields"
journal -o verbose
for needle in "MESSAGE=starting" "MESSAGE=reload applied" "MESSAGE=handed over to the next instance; stopped" \
    "MESSAGE=connection accepted" "CONN=" "PEER=127.0.0.1:" "WORKERS=2 -> 3"; do
    grep -q "$needle" "$w/journal.txt" || fail "journal lacks '$needle'"
done
grep -q "SYSLOG_IDENTIFIER=oneshotd" "$w/journal.txt" || fail "journal lacks the identifier"

step "upgrade with dpkg -i while a client connects continuously: nothing refused"
old_pid=$(inside systemctl show -p MainPID --value oneshotd.service)
upgrade() {
    inside dpkg -i --force-confold /root/oneshotd_2.deb >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "upgrade"; }
}
while_connecting upgrade upgrade
expect "version" "$(inside dpkg-query -W -f '${Version}' oneshotd)" 0.1.0-2
new_pid=$(inside systemctl show -p MainPID --value oneshotd.service)
[ "$old_pid" != "$new_pid" ] || fail "the upgrade did not restart the service"
expect "socket after upgrade" "$(inside systemctl is-active oneshotd.socket)" active

step "crash: SIGKILL of the main process while clients connect continuously: every new attempt served"
# What the killed process held is lost by nature; every other attempt must
# wait in the backlog of the socket systemd holds and be served once
# Restart=on-failure has brought up the next instance. To tell the two
# apart exactly, the process is frozen (SIGSTOP: it accepts nothing more)
# while the connections it holds are listed, then killed.
unit_prop() { inside systemctl show -p "$1" --value oneshotd.service; }
expect "Restart=" "$(unit_prop Restart)" on-failure
old_pid=$(unit_prop MainPID)
restarts=$(unit_prop NRestarts)
# The process's pid as the host (and so ss -p) sees it.
pidns=$(readlink "/proc/$pid1/ns/pid")
host_pid=
for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$pidns" ] || continue
    host_pid=$(awk -v p="$old_pid" '$1 == "NSpid:" && $NF == p { print $2 }' "$p/status" 2>/dev/null)
    [ -n "$host_pid" ] && break
done
[ -n "$host_pid" ] || fail "cannot find the host pid of MainPID $old_pid"
start_loopers 4
wait_loopers_serve 20
inside systemctl kill --kill-whom=main -s STOP oneshotd.service
# kill(2) returns before every thread has stopped; wait until they all
# have (the state follows the ")" that ends the thread's name in stat).
running_threads() { sed 's/.*) //' "/proc/$host_pid"/task/*/stat | grep -vc '^T'; }
for _ in $(seq 200); do
    [ "$(running_threads)" = 0 ] && break
    sleep 0.01
done
[ "$(running_threads)" = 0 ] || fail "pid $host_pid did not stop"
# Connected sockets on 7878 in the frozen process's fd table: the clients'
# ports. (Those still in the accept queue belong to no process.)
ss -Htnp state established '( sport = :7878 )' |
    awk -v pid="pid=$host_pid," 'index($0, pid) { n = split($4, a, ":"); print a[n] }' | sort -u >"$w/held"
inside systemctl kill --kill-whom=main -s KILL oneshotd.service
killed_at=$EPOCHREALTIME
new_pid=
for _ in $(seq 600); do
    new_pid=$(unit_prop MainPID)
    [ "$new_pid" != 0 ] && [ "$new_pid" != "$old_pid" ] && [ "$(unit_prop ActiveState)" = active ] && break
    new_pid=
    sleep 0.05
done
[ -n "$new_pid" ] || fail "no new instance active within 30 s of the kill ($(unit_prop ActiveState))"
back_in=$(awk -v a="$killed_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
expect "restarts" "$(unit_prop NRestarts)" $((restarts + 1))
wait_loopers_serve 20
stop_loopers
served=0 failed=0 lost=0 other=0
for i in "${!loopers[@]}"; do
    n=$((i + 1))
    read -r _ s _ f _ <"$w/loop.$n.out" || { cat "$w/loop.$n.err"; fail "client $n gave no counts"; }
    served=$((served + s)) failed=$((failed + f))
    while read -r where port _; do
        if [ "$where" = port ] && grep -qx "${port%:}" "$w/held"; then
            lost=$((lost + 1))
        else
            other=$((other + 1))
            echo "not held by the killed process: $where $port"
        fi
    done < <(grep -E '^(port|no connection)' "$w/loop.$n.err")
done
[ "$lost" -le "$(wc -l <"$w/held")" ] || fail "more lost than held"
echo "crash: $served served, $failed failed: $lost held by the killed process" \
    "(it held $(wc -l <"$w/held")), $other others; pid $old_pid -> $new_pid active ${back_in} s after the kill"
[ "$failed" = $((lost + other)) ] || { cat "$w"/loop.*.err; fail "unclassified failures"; }
[ "$other" = 0 ] || { cat "$w"/loop.*.err; fail "$other connection attempts failed across the crash"; }

step "restart, try-restart, daemon-reload + restart, dpkg -i with 200 busy connections: none dropped"
# 200 established connections, each sending a request every 10 ms and
# checking every reply, stay open across all four: the connections travel
# through systemd's fd store (SIGUSR2, RestartKillSignal=).
expect "RestartKillSignal=" "$(unit_prop RestartKillSignal)" 12
expect "StartLimitBurst=" "$(unit_prop StartLimitBurst)" 20
stored() { unit_prop NFileDescriptorStore; }
busy_progress() { stat -c %s "$w/busy.progress"; }
# start_busy: 200 busy connections (client.py busy), once they are served.
start_busy() {
    rm -f "$w/busy.stop"
    : >"$w/busy.progress"
    $CLIENT busy 200 "$w/busy.stop" "$w/busy.progress" >"$w/busy.out" 2>"$w/busy.err" &
    busy=$!
    wait_busy 20
}
# wait_busy N: until N*100 more replies have been verified (30 s at most).
wait_busy() {
    local want=$(($(busy_progress) + $1))
    for _ in $(seq 600); do
        [ "$(busy_progress)" -ge "$want" ] && return 0
        kill -0 "$busy" 2>/dev/null || { cat "$w/busy.out" "$w/busy.err"; fail "the busy client exited"; }
        sleep 0.05
    done
    cat "$w/busy.out" "$w/busy.err"
    fail "the busy connections were not served"
}
# restart_four_ways REVISION [LABEL]: systemctl restart, try-restart,
# daemon-reload + restart, then dpkg -i of oneshotd_REVISION.deb, each
# starting a new instance that leaves the fd store empty and serves the
# busy connections on.
restart_four_ways() {
    local revision=$1 label=${2:-} how old_pid new_pid
    for how in restart try-restart daemon-reload+restart dpkg-i; do
        # No reset-failed: every start counts against the start rate limit,
        # a manual restart's too. By the first call the service has been
        # started 4 times in a few seconds (first connection, restart,
        # upgrade, the crash's automatic restart), and these four restarts
        # and the idle step's follow. With systemd's default (5 starts in
        # 10 s), systemd 257 refused the sixth (start-limit-hit) and failed
        # the sockets with it (252 let all nine through in 7 s); the units
        # allow 20 in 30 s.
        old_pid=$(unit_prop MainPID)
        case $how in
            restart) inside systemctl restart oneshotd.service ;;
            try-restart) inside systemctl try-restart oneshotd.service ;;
            daemon-reload+restart) inside systemctl daemon-reload && inside systemctl restart oneshotd.service ;;
            dpkg-i)
                inside dpkg -i --force-confold "/root/oneshotd_$revision.deb" >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "upgrade"; }
                expect "version" "$(inside dpkg-query -W -f '${Version}' oneshotd)" "0.1.0-$revision"
                ;;
        esac
        new_pid=$(unit_prop MainPID)
        [ "$new_pid" != "$old_pid" ] || fail "$label$how did not start a new instance"
        for _ in $(seq 200); do [ "$(stored)" = 0 ] && break; sleep 0.05; done
        expect "NFileDescriptorStore after $label$how" "$(stored)" 0
        wait_busy 20
        echo "$label$how: pid $old_pid -> $new_pid; fd store back to 0; $(status_text)"
    done
}
start_busy
restart_four_ways 3
touch "$w/busy.stop"
wait "$busy" || { cat "$w/busy.out" "$w/busy.err"; fail "busy connections broke across the restarts"; }
cat "$w/busy.out"
journal
grep -q "handed over to the next instance" "$w/journal.txt" || fail "the journal does not say connections were handed over"
grep -q "connections restored from the previous instance" "$w/journal.txt" || fail "the journal does not say connections were restored"

# (a) to (f): a step of the handover broken, one figure line each.
# shellcheck source=tests/e2e/faults.sh
. "$stage/faults.sh"

# TLS: oneshotd-tls.socket with a certificate, a renewal, 200 busy TLS
# connections through restarts and an upgrade (oneshotd_4.deb). Before any
# instance of the templates runs (see tls.sh).
# shellcheck source=tests/e2e/tls.sh
. "$stage/tls.sh"
tls_service

step "after a handover, a connection the daemon closes (idle timeout) gets EOF promptly"
inside sed -i 's/^idle_timeout_ms = .*/idle_timeout_ms = 2000/' /etc/oneshotd.toml
inside systemctl reload oneshotd
rm -f "$w/idle.ready"
$CLIENT idle 5 "$w/idle.ready" >"$w/idle.out" 2>&1 &
idler=$!
for _ in $(seq 100); do [ -e "$w/idle.ready" ] && break; sleep 0.05; done
[ -e "$w/idle.ready" ] || fail "the idle client did not start"
inside systemctl restart oneshotd.service
wait "$idler" || { cat "$w/idle.out"; fail "no prompt EOF for a handed-over connection closed as idle"; }
cat "$w/idle.out"

step "stop drains (nothing handed over), closes every connection and exits 0"
# idle_timeout_ms is 2000 here: an EOF within 1.5 s is the drain's.
rm -f "$w/idle.ready"
$CLIENT idle 1.5 "$w/idle.ready" >"$w/idle.out" 2>&1 &
idler=$!
for _ in $(seq 100); do [ -e "$w/idle.ready" ] && break; sleep 0.05; done
[ -e "$w/idle.ready" ] || fail "the idle client did not start"
inside systemctl stop oneshotd.service oneshotd.socket
wait "$idler" || { cat "$w/idle.out"; fail "stop did not close an idle connection at once"; }
echo "stop: $(cat "$w/idle.out")"
expect "NFileDescriptorStore after stop" "$(inside systemctl show -p NFileDescriptorStore --value oneshotd.service)" 0
expect "service result" "$(inside systemctl show -p Result --value oneshotd.service)" success
expect "exit status" "$(inside systemctl show -p ExecMainStatus --value oneshotd.service)" 0

step "three instances behind HAProxy $(inside haproxy -v | head -n1 | cut -d' ' -f3): PROXY v2, agent-check"
# oneshotd@a, b and c on TCP loopback ports through drop-ins (the empty
# ListenStream= clears the template's Unix socket): line 710N, agent 720N,
# metrics 730N. HAProxy listens on 7000 and sends PROXY v2 headers; the
# clients connect to it from 127.0.0.2 to .9, as from eight hosts.
instances=(a b c)
number() { case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
inside mkdir -p /etc/oneshotd /etc/haproxy
for i in "${instances[@]}"; do
    n=$(number "$i")
    # With the certificate tls_service set up: oneshotd-tls@NAME.socket
    # stays a Unix socket, which tls_balancer's HAProxy backend reaches
    # (hence "unix" among the PROXY sources).
    printf 'workers = 2\nproxy_protocol_from = ["127.0.0.1/32", "unix"]\ndrain_grace_ms = 3000\nlog_level = "debug"\n%s\n%s\n' \
        'tls_certificate = "/etc/oneshotd/tls/fullchain.pem"' 'tls_private_key = "/etc/oneshotd/tls/privkey.pem"' |
        inside sh -c "cat >/etc/oneshotd/$i.toml"
    for unit in "oneshotd@$i.socket 710$n" "oneshotd-agent@$i.socket 720$n" "oneshotd-metrics@$i.socket 730$n"; do
        set -- $unit
        inside mkdir -p "/etc/systemd/system/$1.d"
        printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$2" | inside sh -c "cat >/etc/systemd/system/$1.d/tcp.conf"
    done
done
inside systemctl daemon-reload
for i in "${instances[@]}"; do
    inside systemctl start "oneshotd@$i.socket" "oneshotd-agent@$i.socket" "oneshotd-metrics@$i.socket" "oneshotd-tls@$i.socket"
done
{
    printf 'global\n    maxconn 4000\n    stats socket ipv4@127.0.0.1:7099 level admin\n'
    printf 'defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n'
    printf 'frontend clients\n    bind 127.0.0.1:7000\n    default_backend oneshotd\n'
    printf 'backend oneshotd\n    balance leastconn\n'
    for i in "${instances[@]}"; do
        n=$(number "$i")
        # The health check connects to the agent's port (the line port
        # expects a PROXY header first); the agent says ready or drain.
        printf '    server %s 127.0.0.1:710%s send-proxy-v2 check port 720%s inter 1s agent-check agent-port 720%s agent-inter 300ms\n' "$i" "$n" "$n" "$n"
    done
} | inside sh -c 'cat >/etc/haproxy/haproxy.cfg'
inside systemctl restart haproxy
# server_status NAME: HAProxy's view of a server (UP, DRAIN, DOWN, ...).
server_status() {
    python3 - "$1" <<'PY'
import socket, sys
with socket.create_connection(("127.0.0.1", 7099), timeout=5) as s:
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
for row in data.decode().splitlines():
    f = row.split(",")
    if len(f) > 17 and f[0] == "oneshotd" and f[1] == sys.argv[1]:
        print(f[17])
PY
}
wait_server() { # wait_server NAME STATUS: within 10 s
    local got=
    for _ in $(seq 200); do
        got=$(server_status "$1" 2>/dev/null || true)
        case "$got" in "$2"*) return 0 ;; esac
        sleep 0.05
    done
    fail "HAProxy shows $1 as '$got', not $2"
}
for i in "${instances[@]}"; do wait_server "$i" UP; done
accepted() { # accepted NAME: connections b's line service accepted so far
    curl -fsS --max-time 10 --haproxy-protocol "http://127.0.0.1:730$(number "$1")/metrics" |
        awk '$1 == "oneshotd_connections_accepted_total{service=\"upper\"}" { print $2 }'
}
export E2E_ADDR=127.0.0.1:7000 E2E_SOURCES="127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.7 127.0.0.8 127.0.0.9"
expect "reply through HAProxy" "$($CLIENT once "via haproxy")" "VIA HAPROXY"

step "rolling restart of a, b, c, then dpkg -i, with 200 busy connections through HAProxy: nothing dropped"
instance_pid() { inside systemctl show -p MainPID --value "oneshotd@$1.service"; }
start_busy
start_loopers 1
wait_loopers_serve 20
for i in "${instances[@]}"; do
    old_pid=$(instance_pid "$i")
    inside systemctl restart "oneshotd@$i.service"
    [ "$(instance_pid "$i")" != "$old_pid" ] || fail "oneshotd@$i was not restarted"
    wait_busy 20
    wait_loopers_serve 20
    echo "restart oneshotd@$i: pid $old_pid -> $(instance_pid "$i")"
done
declare -A before_upgrade
for i in "${instances[@]}"; do before_upgrade[$i]=$(instance_pid "$i"); done
inside dpkg -i --force-confold /root/oneshotd_5.deb >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "upgrade"; }
for i in "${instances[@]}"; do
    [ "$(instance_pid "$i")" != "${before_upgrade[$i]}" ] || fail "the upgrade did not restart oneshotd@$i"
done
wait_busy 20
wait_loopers_serve 20
stop_loopers
touch "$w/busy.stop"
wait "$busy" || { cat "$w/busy.out" "$w/busy.err"; fail "busy connections broke across the rolling restart"; }
expect_loop_clean "rolling restart"
echo "rolling restart and upgrade: $(cat "$w/busy.out"); new connections: $(cat "$w/loop.1.out")"

step "take b out of service (stop with drain_grace_ms = 3000) and back: no new connection fails"
start_loopers 1
wait_loopers_serve 20
stopped_at=$EPOCHREALTIME
inside systemctl stop --no-block oneshotd@b.socket oneshotd-agent@b.socket oneshotd@b.service
wait_server b DRAIN
drained_in=$(awk -v a="$stopped_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
# In the grace: b still serves, but HAProxy sends it nothing new. (A
# connection HAProxy had sent b before it saw the drain is served before
# the looper's next five.)
wait_loopers_serve 5
b_then=$(accepted b)
wait_loopers_serve 20
b_now=$(accepted b)
expect "connections b accepted while draining" "$b_now" "$b_then"
for _ in $(seq 200); do
    [ "$(inside systemctl is-active oneshotd@b.service || true)" = inactive ] && break
    sleep 0.05
done
expect "b after the grace and the drain" "$(inside systemctl is-active oneshotd@b.service || true)" inactive
expect "b's exit" "$(inside systemctl show -p ExecMainStatus --value oneshotd@b.service)" 0
wait_loopers_serve 20
inside systemctl start oneshotd@b.socket oneshotd-agent@b.socket
wait_server b UP
b_back=$(accepted b)
wait_loopers_serve 40
for _ in $(seq 200); do [ "$(accepted b)" -gt "$b_back" ] && break; sleep 0.05; done
[ "$(accepted b)" -gt "$b_back" ] || fail "b takes no new connections after coming back"
stop_loopers
expect_loop_clean "take-out of b"
echo "take-out: HAProxy showed b DRAIN ${drained_in} s after the stop; b accepted nothing new in the grace; back UP and serving; new connections: $(cat "$w/loop.1.out")"

step "the instances' journals name the clients, never HAProxy"
inside journalctl -u 'oneshotd@*' -o verbose --no-pager >"$w/journal.txt" 2>&1 || true
# -o verbose: an entry starts with an unindented line, its fields follow
# indented. The PEER of every line-protocol connection closed, by address.
peers=$(awk 'function flush() { if (closed && service == "upper") print peer; closed = 0; service = peer = "" }
    /^[^ ]/ { flush() } /^ +MESSAGE=connection closed$/ { closed = 1 }
    /^ +SERVICE=/ { sub(/^ +SERVICE=/, ""); service = $0 } /^ +PEER=/ { sub(/^ +PEER=/, ""); peer = $0 }
    END { flush() }' "$w/journal.txt" | sed 's/:[0-9]*$//' | sort | uniq -c)
echo "$peers"
[ -n "$peers" ] || fail "no line connection closed in the instances' journals"
if echo "$peers" | grep -qw 127.0.0.1; then fail "a line connection is logged with HAProxy's address"; fi
echo "$peers" | grep -qw 127.0.0.2 || fail "the clients' addresses are not in the journal"
unset E2E_ADDR E2E_SOURCES

# TLS through HAProxy (passed through) to the instances' TLS sockets, in
# a rolling restart.
tls_balancer

step "a daemon of one's own on the library (examples/resp.rs): a client's session survives systemctl restart"
# What a user of the library writes for their daemon: a socket unit and a
# service that keeps connections in the fd store across restarts.
cat >"$w/root/etc/systemd/system/resp.socket" <<'EOF'
[Unit]
Description=resp socket
[Socket]
ListenStream=127.0.0.1:6390
EOF
cat >"$w/root/etc/systemd/system/resp.service" <<'EOF'
[Unit]
Description=resp, a Redis-protocol server on the oneshotd library
Requires=resp.socket
After=resp.socket
[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/local/sbin/resp
RestartKillSignal=SIGUSR2
FileDescriptorStoreMax=1024
DynamicUser=yes
EOF
printf 'workers = 2\n' >"$w/root/etc/resp.toml"
inside systemctl daemon-reload
inside systemctl start resp.socket
resp_cli() { redis-cli -h 127.0.0.1 -p 6390 "$@"; }
expect "resp's PING" "$(resp_cli PING)" PONG
resp_pid() { inside systemctl show -p MainPID --value resp.service; }
old_pid=$(resp_pid)
E2E_ADDR=127.0.0.1:6390 $CLIENT resp-hold "$w/resp-go" "$w/resp-held" >"$w/resp-hold.out" 2>&1 &
holder=$!
for _ in $(seq 100); do [ -e "$w/resp-held" ] && break; sleep 0.05; done
[ -e "$w/resp-held" ] || { cat "$w/resp-hold.out"; fail "the resp client did not start"; }
inside systemctl restart resp.service
[ "$(resp_pid)" != "$old_pid" ] || fail "resp was not restarted"
touch "$w/resp-go"
wait "$holder" || {
    cat "$w/resp-hold.out"
    inside journalctl -u resp --no-pager | tail -20
    fail "the resp client lost its connection or its session across the restart"
}
# What it wrote after the restart went to database 5, not 0.
expect "k in database 0" "$(resp_cli GET k)" ""
expect "k in database 5" "$(resp_cli -n 5 GET k)" five
inside journalctl -u resp --no-pager | grep "connections restored from the previous instance" >/dev/null ||
    fail "resp's journal does not show the restore"
echo "$(cat "$w/resp-hold.out"); resp pid $old_pid -> $(resp_pid), database 5 holds k"
inside systemctl stop resp.socket resp.service

step "remove, reinstall, purge"
inside dpkg -r oneshotd >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "dpkg -r"; }
if $CLIENT once gone >/dev/null 2>&1; then fail "still listening after dpkg -r"; fi
inside test -e /etc/oneshotd.toml || fail "dpkg -r removed the conffile"
inside dpkg -i /root/oneshotd_2.deb >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "reinstall"; }
expect "reply after reinstall" "$($CLIENT once again)" AGAIN
inside dpkg --purge oneshotd >"$w/dpkg.log" 2>&1 || { cat "$w/dpkg.log"; fail "dpkg --purge"; }
if inside test -e /etc/oneshotd.toml; then fail "purge left /etc/oneshotd.toml"; fi
if $CLIENT once gone >/dev/null 2>&1; then fail "still listening after purge"; fi

step "end-to-end checks passed on $suite"
