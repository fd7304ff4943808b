//! Deserialize and serialize paths: UTF-8, raw bytes and serde JSON.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rocketmq_streams::prelude::*;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount: u32,
}

fn serde_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("serde");
    group.throughput(Throughput::Elements(1));
    let order = Order {
        id: 42,
        customer: "customer-17".into(),
        amount: 950,
    };
    let json = Json::<Order>::new();
    let body = json.serialize(&order).expect("json");
    group.bench_function("json_deserialize_order", |b| {
        b.iter(|| json.deserialize(black_box(&body)))
    });
    group.bench_function("json_serialize_order", |b| b.iter(|| json.serialize(black_box(&order))));
    let text = Bytes::from_static(b"it was the best of times, it was the worst of times");
    group.bench_function("utf8_deserialize_51b", |b| {
        b.iter(|| Utf8.deserialize(black_box(&text)))
    });
    let raw = Bytes::from(vec![7u8; 1024]);
    group.bench_function("raw_deserialize_1kib", |b| b.iter(|| Raw.deserialize(black_box(&raw))));
    group.finish();
}

criterion_group!(benches, serde_paths);
criterion_main!(benches);
