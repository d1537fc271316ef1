# Faults during the handover, under the container's real systemd: sourced
# by run.sh inside the booted container (it uses run.sh's inside, unit_prop,
# stored, start_loopers, ... and $w, $stage, $CLIENT), after the restarts
# that hand 200 busy connections over cleanly.
#
# Each case holds 200 busy connections (client.py faults: every one sends a
# numbered request every 10 ms and checks each reply, exactly once, in
# order) and one client making new connections one after the other, breaks
# one step of a restart, and prints one figure line:
#   carried=N closed=N duplicated=N hung=N wrong=N refused=N
# A connection is carried if it is still served afterwards, closed if it
# saw EOF or a reset, hung if it is open and its request went unanswered
# for 1.5 s. Whatever the case, duplicated, hung, wrong and refused must be
# 0; carried must be what docs/handover.md ("What a crash at each step
# does") says.
#
# The kills at an exact step come from the hooked build (src/fault.rs,
# cargo feature fault-injection), copied over /usr/sbin/oneshotd for these
# cases only, and armed through an EnvironmentFile= that systemd reads at
# each start (ONESHOTD_FAULT=POINT). A hook fires only with connections to
# hand over or restore, so the restarts that arm and disarm one (with no
# client connected) are plain ones. The packaged binary is put back at the
# end, and must not contain the hooks.

step "faults during a handover (the hooked build, src/fault.rs): 200 busy connections per case"
faults_started=$EPOCHREALTIME
# At debug level, 200 connections a case log enough for journald's rate
# limit to drop the lines each case reports; info is plenty here.
inside sed -i 's/^log_level = .*/log_level = "info"/' /etc/oneshotd.toml
inside systemctl reload oneshotd
if grep -q ONESHOTD_FAULT "$w/root/usr/sbin/oneshotd"; then fail "the packaged binary contains the fault hooks"; fi
cp "$w/root/usr/sbin/oneshotd" "$w/oneshotd.packaged"
# A rename, not a write: the running instance executes the old file.
put_binary() { cp "$1" "$w/root/usr/sbin/oneshotd.new" && mv "$w/root/usr/sbin/oneshotd.new" "$w/root/usr/sbin/oneshotd"; }
dropins=$w/root/etc/systemd/system/oneshotd.service.d
mkdir -p "$dropins"
printf '[Service]\nEnvironmentFile=-/run/oneshotd-fault.env\n' >"$dropins/fault.conf"
arm() { printf 'ONESHOTD_FAULT=%s\n' "$1" | inside sh -c 'cat >/run/oneshotd-fault.env'; }
disarm() { inside rm -f /run/oneshotd-fault.env; }
disarm
inside systemctl daemon-reload
put_binary "$stage/oneshotd-fault"

# clean_restart: a plain restart with no client connected, then until the
# next instance serves with an empty fd store. (The start rate limit: a
# case starts the service up to four times within seconds; see run.sh's
# restarts.)
clean_restart() {
    local before
    before=$(unit_prop MainPID)
    inside systemctl reset-failed oneshotd.service
    inside systemctl restart oneshotd.service
    settled "$before" || fail "no clean instance after a restart ($(unit_prop ActiveState)/$(unit_prop SubState))"
}
# settled OLD_PID: within 30 s, an instance other than OLD_PID serves
# (active, running) and the fd store is empty.
settled() {
    for _ in $(seq 600); do
        local pid
        pid=$(unit_prop MainPID)
        if [ "$pid" != 0 ] && [ "$pid" != "$1" ] && [ "$(unit_prop SubState)" = running ] && [ "$(stored)" = 0 ]; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}
# wait_substate PATTERN: within 30 s, the service's SubState matches
# PATTERN (a case pattern).
wait_substate() {
    local now
    for _ in $(seq 1500); do
        now=$(unit_prop SubState)
        # shellcheck disable=SC2254
        case "$now" in $1) return 0 ;; esac
        sleep 0.02
    done
    fail "the service's SubState is '$now', never $1"
}
fault_figures=()

# fault_case LABEL CARRIED HOW [POINT]: one case. HOW says what breaks:
#   old:    POINT armed in the running instance, then a restart;
#   new:    POINT armed for the next instance, then a restart; disarmed
#           once it died (auto-restart), so the one after it is clean;
#   config: a configuration the check refuses (ExecStartPre= exits 78),
#           then a restart; fixed after two failed starts;
#   store:  FileDescriptorStoreMax=50 (a drop-in), then a restart.
fault_case() {
    local label=$1 want=$2 how=$3 point=${4:-} started=$EPOCHREALTIME old_pid restarts figures
    case $how in
        old) arm "$point" && clean_restart ;;
        store)
            printf '[Service]\nFileDescriptorStoreMax=50\n' >"$dropins/store-max.conf"
            inside systemctl daemon-reload
            clean_restart
            expect "FileDescriptorStoreMax" "$(unit_prop FileDescriptorStoreMax)" 50
            ;;
        *) clean_restart ;;
    esac
    local cursor
    cursor=$(inside journalctl -u oneshotd -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
    rm -f "$w/faults.stop"
    : >"$w/faults.progress"
    $CLIENT faults 200 "$w/faults.stop" "$w/faults.progress" >"$w/faults.out" 2>"$w/faults.err" &
    local client=$!
    for _ in $(seq 600); do
        [ "$(stat -c %s "$w/faults.progress")" -ge 20 ] && break
        kill -0 "$client" 2>/dev/null || { cat "$w/faults.out" "$w/faults.err"; fail "$label: the client exited"; }
        sleep 0.05
    done
    start_loopers 1
    wait_loopers_serve 20
    old_pid=$(unit_prop MainPID)
    restarts=$(unit_prop NRestarts)
    inside systemctl reset-failed oneshotd.service
    case $how in
        new) arm "$point" ;;
        config) set_workers 0 ;;
    esac
    inside systemctl restart --no-block oneshotd.service
    case $how in
        new)
            wait_substate 'auto-restart*'
            disarm
            ;;
        config)
            wait_substate 'auto-restart*'
            for _ in $(seq 600); do [ "$(unit_prop NRestarts)" -ge $((restarts + 1)) ] && break; sleep 0.02; done
            wait_substate 'auto-restart*'
            set_workers 3
            ;;
    esac
    settled "$old_pid" || fail "$label: no instance serving with an empty fd store within 30 s ($(unit_prop ActiveState)/$(unit_prop SubState), $(stored) stored)"
    local back_in
    back_in=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    wait_loopers_serve 20
    # Longer than the client's 1.5 s: a connection nobody serves is hung by then.
    sleep 2
    touch "$w/faults.stop"
    wait "$client" || { cat "$w/faults.out" "$w/faults.err"; fail "$label: the client failed"; }
    stop_loopers
    local refused lost
    refused=$(grep -c '^no connection' "$w/loop.1.err" || true)
    lost=$(grep -c '^port' "$w/loop.1.err" || true)
    figures=$(cat "$w/faults.out")
    case $how in
        new) disarm ;;
        store) rm "$dropins/store-max.conf" && inside systemctl daemon-reload ;;
        old) disarm ;;
    esac
    local line
    line="$label: ${figures%% replies=*} refused=$refused"
    fault_figures+=("$line")
    echo "$line"
    echo "    replies=${figures#* replies=}; new connections: $(cat "$w/loop.1.out") ($lost accepted before the fault, and closed with it);" \
        "case ${back_in} s to an instance serving with an empty store, $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s in all"
    # What the journal says: the hook, systemd, each next instance's restore.
    inside journalctl -u oneshotd --after-cursor="$cursor" -o json --no-pager | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    m = e.get("MESSAGE", "")
    if isinstance(m, list):
        continue
    if m.startswith("ONESHOTD_FAULT") or "FileDescriptorStoreMax" in m or "status=78" in m:
        print("    journal:", m)
    elif m.startswith("connections restored"):
        print("    journal: pid", e.get("_PID"), "restored", e.get("RESTORED"), "closed", e.get("CLOSED"))
    elif m.startswith("unreadable handover state"):
        print("    journal:", m, e.get("ERROR", ""))
'
    # With a store too small, a connection of the new-connection loop held
    # at the restart can take one of the slots: one busy connection fewer.
    local fewer=$want
    [ "$how" = store ] && fewer=$((want - 1))
    case $figures in
        "carried=$want closed=$((200 - want)) duplicated=0 hung=0 wrong=0 "*) ;;
        "carried=$fewer closed=$((200 - fewer)) duplicated=0 hung=0 wrong=0 "*) ;;
        *) cat "$w/faults.err"; fail "$label: expected carried=$want closed=$((200 - want)) duplicated=0 hung=0 wrong=0" ;;
    esac
    [ "$refused" = 0 ] || { cat "$w/loop.1.err"; fail "$label: $refused new connection attempts refused"; }
}

fault_case "(a) old killed after its first FDSTORE datagram of connections" 50 old store-after-first-batch
fault_case "(b) old killed after the state file, before the connections" 0 old store-after-state
fault_case "(c1) new killed before the removal" 200 new restore-before-removal
fault_case "(c2) new killed after the removal" 0 new restore-after-removal
fault_case "(d) new refuses its configuration (exit 78)" 200 config
fault_case "(e1) state record corrupt" 0 old state-corrupt
fault_case "(e2) state record truncated" 0 old state-truncated
fault_case "(f) FileDescriptorStoreMax=50" 49 store

disarm
rm "$dropins/fault.conf"
inside systemctl daemon-reload
put_binary "$w/oneshotd.packaged"
clean_restart
if grep -q ONESHOTD_FAULT "$w/root/usr/sbin/oneshotd"; then fail "the packaged binary is not back"; fi
inside sed -i 's/^log_level = .*/log_level = "debug"/' /etc/oneshotd.toml
inside systemctl reload oneshotd
echo "fault figures ($suite, systemd $(inside systemctl --version | head -n1 | cut -d' ' -f2)), in $(awk -v a="$faults_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s:"
printf '  %s\n' "${fault_figures[@]}"
