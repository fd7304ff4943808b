#!/usr/bin/env bash
# The whole test suite: set up, then every unit, doc and broker-backed test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo test --workspace "$@"
