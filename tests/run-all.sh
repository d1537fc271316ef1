#!/usr/bin/env bash
# The whole test suite, in order: what it needs installed first (Debian 12,
# as root; quick when already there), the documentation's links, unit and
# integration tests (the real binary over real sockets), static checks of
# the .deb and the units, the end-to-end test under a real systemd in
# systemd-nspawn (root) on Debian 12 (systemd 252) and Debian 13 (systemd
# 257), the package built once for both, then the smoke runs of both
# benchmarks (every reply verified; no figure judged).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
python3 tests/docs/links.py
cargo test --locked
bash tests/packaging/check.sh
bash tests/e2e/run.sh bookworm trixie
SMOKE=1 bash bench/run.sh
SMOKE=1 bash bench/scale.sh
SMOKE=1 bash bench/tls.sh
