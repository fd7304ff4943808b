#!/usr/bin/env bash
# The quick-start: set up, start an embedded RocketMQ, write a sample text,
# count its words with a keyed job (shuffle topic, RocksDB state, changelog)
# on two shards, and print the top words. Extra arguments go to the example
# (see core/examples/wordcount.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -p rocketmq-streams --example wordcount -- "$@"
