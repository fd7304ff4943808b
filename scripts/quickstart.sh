#!/usr/bin/env bash
# The quick-start: set up, start an embedded RocketMQ, pipe 100,000 records
# through an uppercase transform, and print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -p rocketmq-streams-io --example pipe -- "$@"
