#!/usr/bin/env bash
# The whole test suite, in order: unit and integration tests (the real
# binary over real sockets), static checks of the .deb and the units, then
# the end-to-end test under a real systemd in systemd-nspawn (root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
bash tests/packaging/check.sh
bash tests/e2e/run.sh
SMOKE=1 bash bench/run.sh
