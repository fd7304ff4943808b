#!/usr/bin/env bash
# The whole test suite: set up, then every unit, doc and broker-backed test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A fresh clone gains nothing from incremental caches, which take gigabytes.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
# tests/runtime_quiet_logs.rs runs the bench binary (cargo test builds the
# examples, not other packages' binaries). Built with every test target, so
# dependencies resolve the same features as for the tests (built once).
cargo build --workspace --bins --examples --tests
exec cargo test --workspace "$@"
