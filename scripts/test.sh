#!/usr/bin/env bash
# The whole test suite: set up, then every unit, doc and broker-backed test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A fresh clone gains nothing from incremental caches, which take gigabytes.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
# tests/runtime_quiet_logs.rs runs the bench binary (cargo test builds the
# examples, not other packages' binaries).
cargo build -p rocketmq-streams-bench --bin rocketmq-streams-bench
exec cargo test --workspace "$@"
