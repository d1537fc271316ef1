#!/usr/bin/env bash
# Static checks of the Debian package and the systemd units:
#  - systemd-analyze verify on every unit is clean (the templates as an
#    instance), oneshotd-tls.socket included, and the package neither
#    enables nor starts that one;
#  - systemd-analyze security exposure of the service and of an instance
#    of the template is at most 1.0, and both carry the same hardening;
#  - the .deb builds with cargo-deb, lintian reports no error, its contents
#    list every expected path, /etc/oneshotd.toml is a conffile, its
#    binary holds no fault-injection hook (src/fault.rs), and its
#    Depends come from the binary's real shared-library dependencies;
#  - the crate could be published: `cargo package` builds it from what it
#    would upload, with the metadata publishing requires (description,
#    license), and that holds the library, the examples, the docs, units
#    and man pages, and nothing of CI, the tests or recorded output.
# Usage: tests/packaging/check.sh   (prints the .deb path on success)
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the package"
cargo deb --locked -p oneshotd >"$work/deb.log" 2>&1 || { cat "$work/deb.log"; fail "cargo deb"; }
deb=$(ls -t target/debian/oneshotd_*_amd64.deb | head -n1)

echo "== systemd-analyze verify"
# Verify the units as installed, with ExecStart pointing at the built binary
# (verify checks that it exists and is executable).
mkdir -p "$work/units"
units=(oneshotd.socket oneshotd-metrics.socket oneshotd-tls.socket oneshotd.service
    oneshotd@.service oneshotd@.socket oneshotd-metrics@.socket oneshotd-agent@.socket
    oneshotd-tls@.socket)
for unit in "${units[@]}"; do
    sed "s|/usr/sbin/oneshotd|$PWD/target/release/oneshotd|g" "packaging/systemd/$unit" >"$work/units/$unit"
done
if ! out=$(cd "$work/units" && systemd-analyze verify --man=no oneshotd.socket oneshotd-metrics.socket oneshotd-tls.socket \
    oneshotd.service oneshotd@check.service oneshotd@check.socket oneshotd-metrics@check.socket \
    oneshotd-agent@check.socket oneshotd-tls@check.socket 2>&1) || [ -n "$out" ]; then
    echo "$out"
    fail "systemd-analyze verify is not clean"
fi
# One hardening for both: the template's must not drift from the service's.
hardening() { sed -n '/^# Hardening\./,/^\[Install\]/p' "$1"; }
diff <(hardening packaging/systemd/oneshotd.service) <(hardening packaging/systemd/oneshotd@.service) \
    || fail "oneshotd@.service's hardening differs from oneshotd.service's"

echo "== systemd-analyze security"
for unit in oneshotd.service oneshotd@check.service; do
    exposure=$(cd "$work/units" && systemd-analyze security --offline=true --man=no "$unit" 2>&1 \
        | sed -n "s/.*Overall exposure level for $unit: \([0-9.]*\).*/\1/p")
    [ -n "$exposure" ] || fail "no exposure figure for $unit"
    echo "$unit: exposure $exposure"
    awk -v e="$exposure" 'BEGIN { exit !(e <= 1.0) }' || fail "$unit: exposure $exposure > 1.0"
done

echo "== lintian"
# One warning is expected and accepted: initial-upload-closes-no-bugs (this
# package is not uploaded to Debian, so there is no ITP bug to close).
lintian --allow-root "$deb" >"$work/lintian.txt" 2>&1 || true
cat "$work/lintian.txt"
if grep -q '^E:' "$work/lintian.txt"; then fail "lintian reports errors"; fi
if grep -v 'initial-upload-closes-no-bugs' "$work/lintian.txt" | grep '^W:' >/dev/null; then
    fail "lintian reports unexpected warnings"
fi

echo "== contents"
dpkg-deb --contents "$deb" | awk '{print $6}' >"$work/contents"
for path in ./usr/sbin/oneshotd ./etc/oneshotd.toml \
    ./lib/systemd/system/oneshotd.socket ./lib/systemd/system/oneshotd-metrics.socket \
    ./lib/systemd/system/oneshotd.service ./lib/systemd/system/oneshotd@.service \
    ./lib/systemd/system/oneshotd@.socket ./lib/systemd/system/oneshotd-metrics@.socket \
    ./lib/systemd/system/oneshotd-agent@.socket \
    ./lib/systemd/system/oneshotd-tls.socket ./lib/systemd/system/oneshotd-tls@.socket \
    ./usr/share/man/man8/oneshotd.8.gz ./usr/share/man/man5/oneshotd.toml.5.gz \
    ./usr/share/doc/oneshotd/copyright ./usr/share/doc/oneshotd/changelog.Debian.gz; do
    grep -qx "$path" "$work/contents" || fail "missing $path"
done
# Into files first: `grep -q` exits at its first match, and under pipefail
# the SIGPIPE that gives the writer would fail the check at random.
dpkg-deb --ctrl-tarfile "$deb" >"$work/control.tar"
tar -xOf "$work/control.tar" ./conffiles >"$work/conffiles"
grep -qx /etc/oneshotd.toml "$work/conffiles" || fail "/etc/oneshotd.toml is not a conffile"
tar -tf "$work/control.tar" >"$work/control.list"
for script in postinst prerm postrm; do
    grep -qx "./$script" "$work/control.list" || fail "no $script"
done
# The TLS socket is shipped but never enabled or started by the package:
# it needs a certificate first. postinst only keeps its state (for purge).
tar -xOf "$work/control.tar" ./postinst >"$work/postinst"
grep -E '^[[:space:]]*(for socket in|deb-systemd-invoke start)' "$work/postinst" >"$work/starts"
[ -s "$work/starts" ] || fail "postinst: no enable loop or start line found"
if grep -q tls "$work/starts"; then fail "postinst enables or starts oneshotd-tls.socket"; fi
grep -q 'update-state oneshotd-tls.socket' "$work/postinst" || fail "postinst keeps no state for oneshotd-tls.socket"
for script in prerm postrm; do
    tar -xOf "$work/control.tar" "./$script" | grep -q 'oneshotd-tls.socket' \
        || fail "$script leaves oneshotd-tls.socket out"
done

echo "== no test hooks"
# The fault-injection hooks (src/fault.rs, cargo feature fault-injection)
# never ship: the packaged binary does not even hold their variable's name.
dpkg-deb --fsys-tarfile "$deb" >"$work/data.tar"
tar -xOf "$work/data.tar" ./usr/sbin/oneshotd >"$work/oneshotd"
if grep -q ONESHOTD_FAULT "$work/oneshotd"; then fail "the packaged binary holds the fault-injection hooks"; fi

echo "== depends"
depends=$(dpkg-deb --field "$deb" Depends)
echo "Depends: $depends"
for lib in $(objdump -p target/release/oneshotd | awk '/NEEDED/ {print $2}'); do
    pkg=$(dpkg -S "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" 2>/dev/null | cut -d: -f1 | head -n1)
    [ -n "$pkg" ] || fail "cannot find the package of $lib"
    # cargo-deb leaves out libgcc-s1 on purpose: it is Protected/required in
    # Debian and guaranteed by the LSB, like dh_shlibdeps' own practice.
    case "$pkg" in libgcc-s1) continue;; esac
    case "$depends" in *"$pkg"*) ;; *) fail "Depends lacks $pkg (for $lib)";; esac
done
case "$depends" in *procps*) ;; *) fail "Depends lacks procps (/bin/kill in ExecReload)";; esac

echo "== the crate as it would be published"
# --allow-dirty: a developer runs this with uncommitted work; CI's clone is
# clean either way.
cargo package --locked --allow-dirty -p oneshotd >"$work/package.log" 2>&1 \
    || { cat "$work/package.log"; fail "cargo package"; }
# Two warnings are expected: the integration tests stay out on purpose,
# and the manifest names no URL (see Cargo.toml). Any other is a defect of
# the manifest.
grep '^warning' "$work/package.log" \
    | grep -v -e 'warning: ignoring test' -e 'warning: manifest has no documentation, homepage or repository' \
    | grep -q . && { cat "$work/package.log"; fail "cargo package warns"; }
listed=$(cargo package --locked --allow-dirty -p oneshotd --list 2>/dev/null)
for wanted in src/lib.rs src/main.rs examples/resp.rs README.md LICENSE docs/library.md \
    config/oneshotd.toml packaging/man/oneshotd.8 packaging/systemd/oneshotd.service; do
    grep -qx "$wanted" <<<"$listed" || fail "the crate package lacks $wanted"
done
if unwanted=$(grep -E '^(\.ci/|tests/|bench/|target/|proptest-regressions/|docs/scale/)' <<<"$listed"); then
    fail "the crate package holds what is not the crate's: $unwanted"
fi

echo "packaging checks passed: $deb"
