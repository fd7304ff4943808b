//! Operator chain cost per record: `map → filter → flat_map → sink`, run
//! through the `TopologyTestDriver` (single-threaded, no broker), so the
//! figure is the chain plus the driver's per-record bookkeeping.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rocketmq_streams::prelude::*;

const RECORDS: usize = 10_000;

fn chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("operator_chain");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("map_filter_flat_map_10k", |b| {
        b.iter_batched(
            || {
                let builder = StreamBuilder::new("bench-chain");
                builder
                    .source("in", Utf8)
                    .map(|s: String| s.to_uppercase())
                    .filter(|s: &String| !s.ends_with('7'))
                    .flat_map(|s: String| vec![s.clone(), s])
                    .sink("out", Utf8);
                TopologyTestDriver::new(builder.build().expect("topology"))
            },
            |mut driver| {
                for i in 0..RECORDS {
                    driver.pipe_input("in", format!("record-{i}"), i as i64).expect("pipe");
                }
                driver.read_values("out", &Utf8).len()
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
