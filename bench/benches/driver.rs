//! The test driver on word count: 2,000 lines of 10 words through
//! `flat_map → key_by → count` (in-memory shuffle, real RocksDB stores).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rocketmq_streams::prelude::*;

const LINES: usize = 2_000;
const WORDS: usize = 10;

fn driver_wordcount(c: &mut Criterion) {
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements((LINES * WORDS) as u64));
    group.sample_size(10);
    let lines: Vec<String> = (0..LINES)
        .map(|l| {
            (0..WORDS)
                .map(|w| format!("w{}", (l * 7 + w * 13) % 500))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    group.bench_function("wordcount_20k_words", |b| {
        b.iter_batched(
            || {
                let builder = StreamBuilder::new("bench-wc");
                builder
                    .source("lines", Utf8)
                    .flat_map(|line: String| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
                    .key_by(|w: &String| w.clone())
                    .count()
                    .sink("counts", Json::<(String, u64)>::new());
                TopologyTestDriver::new(builder.build().expect("topology"))
            },
            |mut driver| {
                for (i, line) in lines.iter().enumerate() {
                    driver.pipe_input("lines", line.clone(), i as i64).expect("pipe");
                }
                driver.read_values("counts", &Json::<(String, u64)>::new()).len()
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, driver_wordcount);
criterion_main!(benches);
