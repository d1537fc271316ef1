#!/usr/bin/env bash
# Installs what the test suite (tests/run-all.sh) needs on Debian 12, and
# nothing else; the one list of the suite's dependencies. Idempotent: when
# every command is already there it only checks and returns, with no apt
# call. Installing needs root; without root it only reports what is missing.
# Usage: tests/install-deps.sh
set -euo pipefail

# A command each package provides, the package, and who needs it. A
# command rather than the package name is checked, so a tool that is
# already on the PATH (another way) is not installed again.
deps=(
    systemd-socket-activate systemd         # tests/activation.rs and others
    systemd-analyze systemd                 # tests/packaging/check.sh
    systemd-nspawn systemd-container        # tests/e2e/run.sh
    debootstrap debootstrap                 # tests/e2e/run.sh (rootfs)
    lintian lintian                         # tests/packaging/check.sh
    dpkg-shlibdeps dpkg-dev                 # cargo-deb's $auto Depends
    objdump binutils                        # tests/packaging/check.sh
    prlimit util-linux                      # tests/limits.rs
    unshare util-linux                      # tests/e2e/run.sh
    nsenter util-linux                      # tests/e2e/run.sh
    python3 python3                         # tests/e2e/client.py, tests/tls/client.py
    openssl openssl                         # tests/tls (certificates, s_client)
    gnutls-cli gnutls-bin                   # tests/tls.rs (a second TLS stack)
    ss iproute2                             # tests/e2e/run.sh (crash step)
    tc iproute2                             # network fault tests
    nc netcat-openbsd                       # the README's examples
    curl curl                               # tests/e2e/run.sh (metrics)
    promtool prometheus                     # tests/metrics.rs (promtool check metrics)
    redis-cli redis-tools                   # tests/resp.rs and the e2e (Redis's own client)
    redis-benchmark redis-tools             # tests/resp.rs (Redis's own load generator)
    haproxy haproxy                         # bench/tls.sh (TLS terminated by HAProxy, to compare)
)

need=()
for ((i = 0; i < ${#deps[@]}; i += 2)); do
    command -v "${deps[i]}" >/dev/null && continue
    case " ${need[*]} " in *" ${deps[i + 1]} "*) ;; *) need+=("${deps[i + 1]}") ;; esac
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing ${need[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "install-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# Not packaged in Debian 12; built once into ~/.cargo/bin. The version is
# pinned so that a fresh machine builds the .deb with the same tool as the
# one the checks were written against.
if ! command -v cargo-deb >/dev/null; then
    echo "install-deps: installing cargo-deb"
    cargo install cargo-deb --version 3.8.0 --locked
fi
