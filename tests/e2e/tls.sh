# shellcheck shell=bash
# TLS under the container's real systemd: sourced by run.sh inside the
# booted container (it uses run.sh's inside, unit_prop, stored, start_busy,
# wait_busy, start_loopers, the HAProxy helpers, ... and $w, $stage,
# $CLIENT), which calls tls_service (steps 1 to 3) after the faults and
# tls_balancer (step 4) once the three template instances serve behind
# HAProxy. One figure line per step:
#
#  1. a certificate set up as docs/tls.md recommends (a static oneshotd
#     user, certbot-like live/ symlinks into archive/, the deploy hook that
#     copies them to /etc/oneshotd/tls/ readable by that user alone), the
#     keys in /etc/oneshotd.toml, `systemctl enable --now
#     oneshotd-tls.socket` and a restart: `openssl s_client` exchanges a
#     line on 127.0.0.1:7443, verifying the server against the CA;
#  2. a renewal (new archive files, the symlinks swapped, the hook: copy,
#     then `systemctl try-reload-or-restart`, a reload here): a new
#     s_client sees the new certificate, a TLS connection opened before
#     goes on talking;
#  3. 200 busy TLS connections (client.py --tls busy: Python's ssl, half
#     TLS 1.3, half TLS 1.2) through restart, try-restart, daemon-reload +
#     restart and dpkg -i of a newer build, with no reset-failed between
#     them (the units' start limit allows it): 0 dropped, the fd store back
#     to 0 after each;
#  4. HAProxy in mode tcp passing TLS through (send-proxy-v2, no TLS in
#     HAProxy) to the three instances' oneshotd-tls@NAME.socket (Unix
#     sockets), and a rolling restart under 200 busy TLS connections and a
#     client making new TLS connections: 0 dropped, 0 failed.
#
# The CA and the keys are made here, at run time, on the host (in $w, a
# tmpfs that goes with the run); none is committed.

# tls_service: steps 1 to 3, on oneshotd.service. Run while no instance of
# the templates has run since the last stop of the service: the static
# oneshotd user is created here, and systemd keeps a dynamic user of that
# name (the units' DynamicUser=) for as long as any unit using it runs.
tls_service() {
    step "TLS: a certificate for the static oneshotd user (docs/tls.md), oneshotd-tls.socket enabled, s_client on 127.0.0.1:7443"
    tls_started=$EPOCHREALTIME
    tls=$w/tls
    mkdir -p "$tls"
    plain_client=$CLIENT
    tls_client="$CLIENT --tls $tls/ca.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=oneshotd e2e CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>"$tls/openssl.log" ||
        { cat "$tls/openssl.log"; fail "openssl: the CA"; }
    # new_cert N CN: server certificate N (for localhost and 127.0.0.1) and its
    # key, signed by the CA.
    new_cert() {
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
            -keyout "$tls/key$1.pem" -out "$tls/cert$1.csr" 2>"$tls/openssl.log" &&
            openssl x509 -req -in "$tls/cert$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
                -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$tls/server.ext" \
                -out "$tls/cert$1.pem" 2>"$tls/openssl.log" ||
            { cat "$tls/openssl.log"; fail "openssl: certificate $1"; }
    }
    fingerprint() { openssl x509 -noout -fingerprint -sha256 | cut -d= -f2; }
    new_cert 1 localhost
    new_cert 2 "localhost, renewed"
    # renew N: what certbot does on a renewal (archive files N, the live/
    # symlinks swapped, as root only), then its deploy hook.
    lineage=/etc/letsencrypt/live/example.org
    renew() {
        local archive=$w/root/etc/letsencrypt/archive/example.org live=$w/root$lineage
        mkdir -p "$archive" "$live" "$w/root/etc/letsencrypt/renewal-hooks/deploy"
        chmod 0700 "$w/root/etc/letsencrypt/archive" "$w/root/etc/letsencrypt/live"
        install -m 0644 "$tls/cert$1.pem" "$archive/fullchain$1.pem"
        install -m 0600 "$tls/key$1.pem" "$archive/privkey$1.pem"
        ln -sfn "../../archive/example.org/fullchain$1.pem" "$live/fullchain.pem.new"
        ln -sfn "../../archive/example.org/privkey$1.pem" "$live/privkey.pem.new"
        mv -T "$live/fullchain.pem.new" "$live/fullchain.pem"
        mv -T "$live/privkey.pem.new" "$live/privkey.pem"
        inside env RENEWED_LINEAGE=$lineage /etc/letsencrypt/renewal-hooks/deploy/oneshotd ||
            fail "the deploy hook failed on renewal $1"
    }
    # The deploy hook of docs/tls.md, word for word but for the lineage.
    cat >"$w/root/etc/letsencrypt-hook" <<EOF
#!/bin/sh
# Give oneshotd its own copy of the renewed certificate and key, then have
# it load them (a reload: no connection is closed).
set -e
[ "\$RENEWED_LINEAGE" = $lineage ] || exit 0
umask 077
install -d -m 0750 -g oneshotd /etc/oneshotd/tls
install -m 0640 -g oneshotd "\$RENEWED_LINEAGE/fullchain.pem" /etc/oneshotd/tls/fullchain.pem.new
install -m 0640 -g oneshotd "\$RENEWED_LINEAGE/privkey.pem" /etc/oneshotd/tls/privkey.pem.new
mv /etc/oneshotd/tls/fullchain.pem.new /etc/oneshotd/tls/fullchain.pem
mv /etc/oneshotd/tls/privkey.pem.new /etc/oneshotd/tls/privkey.pem
systemctl try-reload-or-restart oneshotd
EOF
    mkdir -p "$w/root/etc/letsencrypt/renewal-hooks/deploy"
    install -m 0755 "$w/root/etc/letsencrypt-hook" "$w/root/etc/letsencrypt/renewal-hooks/deploy/oneshotd"
    rm "$w/root/etc/letsencrypt-hook"

    # The service serves plain clients when TLS is set up, as it would.
    expect "reply" "$($plain_client once "before tls")" "BEFORE TLS"
    inside adduser --system --group --no-create-home --home /nonexistent oneshotd >"$w/adduser.log" 2>&1 ||
        { cat "$w/adduser.log"; fail "adduser"; }
    renew 1
    expect "the key's mode" "$(inside stat -c '%a %U:%G' /etc/oneshotd/tls/privkey.pem)" "640 root:oneshotd"
    inside sed -i -e 's|^#tls_certificate = .*|tls_certificate = "/etc/oneshotd/tls/fullchain.pem"|' \
        -e 's|^#tls_private_key = .*|tls_private_key = "/etc/oneshotd/tls/privkey.pem"|' \
        -e 's/^idle_timeout_ms = .*/idle_timeout_ms = 300000/' /etc/oneshotd.toml
    inside grep -q '^tls_private_key = ' /etc/oneshotd.toml || fail "no tls_private_key in /etc/oneshotd.toml"
    # systemd refuses to start a socket while its service runs ("Socket
    # service oneshotd.service already active, refusing."), so `enable
    # --now` fails here; restarting the two in one command raced (the socket
    # refused once in two runs). What works every time: enable, stop the
    # service (a drain: its connections are closed, once), start both.
    if inside systemctl start oneshotd-tls.socket 2>/dev/null; then
        refused="started"
    else
        refused="refused ($(inside journalctl -u oneshotd-tls.socket -n 20 --no-pager | grep -o 'already active, refusing' | head -n1))"
    fi
    inside systemctl enable oneshotd-tls.socket 2>/dev/null
    old_pid=$(unit_prop MainPID)
    inside systemctl stop oneshotd.service 2>/dev/null
    inside systemctl start oneshotd-tls.socket oneshotd.service >"$w/enable.log" 2>&1 ||
        { cat "$w/enable.log"; inside journalctl -u oneshotd-tls.socket --no-pager | tail -5; fail "start oneshotd-tls.socket oneshotd.service"; }
    expect "TLS socket" "$(inside systemctl is-active oneshotd-tls.socket)" active
    [ "$(unit_prop MainPID)" != "$old_pid" ] || fail "the service was not restarted"
    expect "the service's user" "$(inside ps -o user= -p "$(unit_prop MainPID)")" oneshotd
    # s_client TEXT: one line exchanged with openssl s_client on 127.0.0.1:7443,
    # the server verified against the CA; its output in $w/s_client.out (stdin
    # stays open until the reply is in: at the end of its input s_client closes).
    s_client() {
        local want
        want=$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')
        rm -f "$w/s_client.out"
        {
            printf '%s\n' "$1"
            for _ in $(seq 200); do grep -qx "$want" "$w/s_client.out" 2>/dev/null && break; sleep 0.05; done
        } | timeout 20 openssl s_client -connect 127.0.0.1:7443 -CAfile "$tls/ca.pem" -verify_return_error \
            >"$w/s_client.out" 2>&1 || { cat "$w/s_client.out"; fail "openssl s_client"; }
        grep -qx "$want" "$w/s_client.out" || { cat "$w/s_client.out"; fail "s_client: no '$want'"; }
        grep -q 'Verify return code: 0 (ok)' "$w/s_client.out" || { cat "$w/s_client.out"; fail "s_client: not verified"; }
    }
    s_client "hello over tls"
    served=$(fingerprint <"$w/s_client.out")
    expect "the certificate served" "$served" "$(fingerprint <"$tls/cert1.pem")"
    echo "s_client: $(grep -m1 -o 'TLSv1\.[23]' "$w/s_client.out"), $(sed -n 's/^subject=//p' "$w/s_client.out" | head -n1)," \
        "verified against the CA; HELLO OVER TLS; the service runs as oneshotd, the key 640 root:oneshotd;" \
        "start of the socket while the service ran: $refused"

    step "TLS: a certbot-style renewal and systemctl reload: new handshakes get the new certificate, an open connection keeps talking"
    rm -f "$w/tls-go" "$w/tls-held"
    E2E_ADDR=127.0.0.1:7443 $tls_client hold "$w/tls-go" "$w/tls-held" >"$w/tls-hold.out" 2>&1 &
    holder=$!
    for _ in $(seq 200); do [ -e "$w/tls-held" ] && break; sleep 0.05; done
    [ -e "$w/tls-held" ] || { cat "$w/tls-hold.out"; fail "the held TLS connection did not start"; }
    renew 2
    new=$(fingerprint <"$tls/cert2.pem")
    # The reload job ends when SIGHUP is sent; the daemon applies it just after.
    for _ in $(seq 20); do
        s_client "after the renewal"
        served=$(fingerprint <"$w/s_client.out")
        [ "$served" = "$new" ] && break
        sleep 0.1
    done
    expect "the certificate served after the renewal" "$served" "$new"
    touch "$w/tls-go"
    wait "$holder" || { cat "$w/tls-hold.out"; fail "the TLS connection held across the reload broke"; }
    expect "held reply" "$(cat "$w/tls-hold.out")" "HELD AFTER"
    echo "renewal: new handshakes get $(sed -n 's/^subject=//p' "$w/s_client.out" | head -n1) (sha256 ${new:0:11}..., was" \
        "$(fingerprint <"$tls/cert1.pem" | cut -c1-11)...); the connection opened before the reload: HELD AFTER"

    step "TLS: restart, try-restart, daemon-reload + restart, dpkg -i with 200 busy TLS connections: none dropped"
    export E2E_ADDR=127.0.0.1:7443
    CLIENT=$tls_client
    start_busy
    restart_four_ways 4 "TLS "
    touch "$w/busy.stop"
    wait "$busy" || { cat "$w/busy.out" "$w/busy.err"; fail "busy TLS connections broke across the restarts"; }
    [ ! -s "$w/busy.err" ] || { cat "$w/busy.err"; fail "the busy TLS client wrote errors"; }
    echo "TLS restarts: $(cat "$w/busy.out")"
    expect "service" "$(unit_prop ActiveState)" active
    expect "TLS socket" "$(inside systemctl is-active oneshotd-tls.socket)" active
    CLIENT=$plain_client
    unset E2E_ADDR
    echo "TLS steps 1 to 3: $(awk -v a="$tls_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
}

# tls_balancer: step 4, once the instances serve behind HAProxy.
tls_balancer() {
    local started=$EPOCHREALTIME
    step "TLS through HAProxy (mode tcp, send-proxy-v2, TLS passed through) to oneshotd-tls@a, b, c: a rolling restart drops nothing"
    # The instances' TLS sockets were started with their others (run.sh:
    # systemd refuses to start a socket while its service runs), as Unix
    # sockets (/run/oneshotd/NAME.tls.sock): HAProxy connects to them, so
    # the PROXY header comes from a Unix peer ("unix" in
    # proxy_protocol_from). The instances run as the same static oneshotd
    # user (DynamicUser= names the user after the unit's prefix) and read
    # the same copies.
    for i in "${instances[@]}"; do
        expect "oneshotd-tls@$i.socket" "$(inside systemctl is-active "oneshotd-tls@$i.socket")" active
        expect "oneshotd@$i's user" "$(inside ps -o user= -p "$(instance_pid "$i")")" oneshotd
    done
    {
        printf 'frontend tls_clients\n    bind 127.0.0.1:7444\n    default_backend oneshotd_tls\n'
        printf 'backend oneshotd_tls\n    balance leastconn\n'
        for i in "${instances[@]}"; do
            # Up and down with the same instance's line server (its agent says
            # drain for both).
            printf '    server %s /run/oneshotd/%s.tls.sock send-proxy-v2 track oneshotd/%s\n' "$i" "$i" "$i"
        done
    } | inside sh -c 'cat >>/etc/haproxy/haproxy.cfg'
    inside systemctl reload haproxy
    for i in "${instances[@]}"; do wait_server "$i" UP; done
    export E2E_ADDR=127.0.0.1:7444 E2E_SOURCES="127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.7 127.0.0.8 127.0.0.9"
    # Every client of this step speaks TLS (through HAProxy, which passes
    # it through).
    CLIENT=$tls_client
    $CLIENT once "tls via haproxy" >"$w/tls-once.out" 2>&1 || {
        cat "$w/tls-once.out"
        inside journalctl -u 'oneshotd@*' -n 4 -o verbose --no-pager | grep -E '^ +(MESSAGE|REASON|ERROR|PEER|SERVICE|CONN)='
        fail "no TLS reply through HAProxy"
    }
    expect "TLS reply through HAProxy" "$(cat "$w/tls-once.out")" "TLS VIA HAPROXY"
    start_busy
    start_loopers 1
    wait_loopers_serve 10
    for i in "${instances[@]}"; do
        old_pid=$(instance_pid "$i")
        inside systemctl restart "oneshotd@$i.service"
        [ "$(instance_pid "$i")" != "$old_pid" ] || fail "oneshotd@$i was not restarted"
        wait_busy 20
        wait_loopers_serve 10
        echo "TLS: restart oneshotd@$i: pid $old_pid -> $(instance_pid "$i")"
    done
    stop_loopers
    touch "$w/busy.stop"
    wait "$busy" || { cat "$w/busy.out" "$w/busy.err"; fail "busy TLS connections broke across the rolling restart"; }
    # A new TLS connection still in its handshake when its instance is
    # restarted has no session to carry: it is closed, by design, and its
    # client connects again. So at most one per restart may fail, and only
    # by being closed, never refused.
    local failed
    failed=$(sed -n 's/.* \([0-9]*\) failed$/\1/p' "$w/loop.1.out")
    if [ -z "$failed" ] || [ "$failed" -gt "${#instances[@]}" ] ||
        grep -v -q -e 'closed before the reply' -e 'EOF' -e 'Reset' "$w/loop.1.err" 2>/dev/null; then
        cat "$w/loop.1.out" "$w/loop.1.err"
        fail "new TLS connections failed during the rolling restart other than in their handshake"
    fi
    echo "TLS rolling restart through HAProxy: $(cat "$w/busy.out"); new TLS connections: $(cat "$w/loop.1.out")"
    unset E2E_ADDR E2E_SOURCES
    CLIENT=$plain_client
    echo "TLS step 4: $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
}
